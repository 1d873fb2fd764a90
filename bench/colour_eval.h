/* colour_eval.h - do a faces model's samples have the data's colours?
 * Used by bench/eval_colour.c (64 samples, the measurement in docs);
 * header-only so that a test can check a few samples the same way. Uses
 * only loco.h and loco_train.h.
 *
 * Two regions, fixed pixel sets taken from the label maps of `n_ref` data
 * faces: "skin", the pixels that are skin (label 1) in every one of them,
 * and "background", the pixels that are background in every one of them.
 * The generator colours each region with one colour per image (skin: a
 * narrow line of tones; background: one of four pale colours), so an
 * image's colour there is the region's mean RGB, in 8-bit levels.
 *
 * The measure: the distance (Euclidean, RGB levels) from an image's region
 * colour to the nearest region colour among the n_ref data faces. Data
 * faces of another seed are at ~0 (background: the same four colours;
 * skin: a dense line); a colour cast (a greenish or pinkish face, a
 * background of a colour the data never has) is a distance of many levels.
 * Also the per-channel mean and spread (standard deviation over images) of
 * the region colours, as the issue asks, and how flat each region is within
 * one image (ce_flatness), which tells a background of two blotches (its
 * mean colour between two of the four, its pixels far from that mean) from
 * a flat background of an in-between colour. */
#ifndef LOCO_COLOUR_EVAL_H
#define LOCO_COLOUR_EVAL_H

#include "loco.h"
#include "loco_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CE_PIX (LOCO_FACES_SIZE * LOCO_FACES_SIZE)

typedef struct ce_regions {
    uint8_t in[2][CE_PIX]; /* [0] skin, [1] background */
    int count[2];
    int n_ref;
    float (*ref)[2][3]; /* [n_ref][region][channel]: the data faces' colours */
} ce_regions;

/* 8-bit RGB [H*W*3] -> the region colours [2][3] */
static inline void ce_colours(const ce_regions *r, const uint8_t *rgb, float out[2][3]) {
    for (int g = 0; g < 2; g++)
        for (int c = 0; c < 3; c++) {
            double s = 0;
            for (int p = 0; p < CE_PIX; p++)
                if (r->in[g][p]) s += rgb[p * 3 + c];
            out[g][c] = (float)(s / r->count[g]);
        }
}

static inline int ce_cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* how flat each region is in one image: the median over its pixels of their
 * distance (RGB levels) from its mean colour col. The median, not the mean:
 * the regions' edge pixels carry the antialiased blend of a neighbouring
 * part in the data too: on the data's flat backgrounds an RMS gives ~14
 * levels, the median ~3, the distance of the flat pixels from a mean that
 * the edge pixels pull a little) */
static inline void ce_flatness(const ce_regions *r, const uint8_t *rgb, const float col[2][3], float out[2]) {
    double d[CE_PIX];
    for (int g = 0; g < 2; g++) {
        int k = 0;
        for (int p = 0; p < CE_PIX; p++)
            if (r->in[g][p]) {
                double s = 0;
                for (int c = 0; c < 3; c++) s += ((double)rgb[p * 3 + c] - col[g][c]) * ((double)rgb[p * 3 + c] - col[g][c]);
                d[k++] = sqrt(s);
            }
        qsort(d, (size_t)k, sizeof *d, ce_cmp);
        out[g] = (float)(k % 2 ? d[k / 2] : 0.5 * (d[k / 2 - 1] + d[k / 2]));
    }
}

/* The regions and the reference colours from faces 0..n_ref-1 of (seed,
 * version). Returns 0 on success; free with ce_free. */
static inline int ce_init(ce_regions *r, uint64_t seed, int version, int n_ref) {
    memset(r, 0, sizeof *r);
    r->ref = malloc(sizeof *r->ref * (size_t)n_ref);
    uint8_t(*rgb)[CE_PIX * 3] = malloc(sizeof *rgb * (size_t)n_ref);
    uint8_t lab[CE_PIX];
    if (!r->ref || !rgb) {
        free(rgb);
        return 1;
    }
    memset(r->in, 1, sizeof r->in);
    for (int i = 0; i < n_ref; i++) {
        if (loco_faces_generate_version(seed, i, version, rgb[i], lab, NULL)) {
            free(rgb);
            return 1;
        }
        for (int p = 0; p < CE_PIX; p++) {
            r->in[0][p] &= lab[p] == LOCO_LABEL_SKIN;
            r->in[1][p] &= lab[p] == LOCO_LABEL_BACKGROUND;
        }
    }
    for (int g = 0; g < 2; g++)
        for (int p = 0; p < CE_PIX; p++) r->count[g] += r->in[g][p];
    if (!r->count[0] || !r->count[1]) {
        free(rgb);
        return 1;
    }
    for (int i = 0; i < n_ref; i++) ce_colours(r, rgb[i], r->ref[i]);
    r->n_ref = n_ref;
    free(rgb);
    return 0;
}

/* opens a 3x32x32 faces model for program prog; NULL (said on stderr) when
 * it cannot be opened or has another shape. The caller frees it. */
static inline loco_model *ce_open_model(const char *prog, const char *path) {
    loco_model *m = NULL;
    if (loco_model_open(path, &m)) {
        fprintf(stderr, "%s: %s\n", prog, loco_last_error());
        return NULL;
    }
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    if (inf.in_channels != 3 || inf.height != LOCO_FACES_SIZE || inf.width != LOCO_FACES_SIZE) {
        fprintf(stderr, "%s: %s is not a 3x32x32 faces model\n", prog, path);
        loco_model_free(m);
        return NULL;
    }
    return m;
}
static inline void ce_free(ce_regions *r) {
    free(r->ref);
    r->ref = NULL;
}

/* distance of colour col (region g) to the nearest reference colour */
static inline double ce_distance(const ce_regions *r, int g, const float col[3]) {
    double best = 1e30;
    for (int i = 0; i < r->n_ref; i++) {
        double d = 0;
        for (int c = 0; c < 3; c++) d += ((double)col[c] - r->ref[i][g][c]) * ((double)col[c] - r->ref[i][g][c]);
        if (d < best) best = d;
    }
    return sqrt(best);
}

/* an image [3, H, W] in [-1, 1] as 8-bit RGB, rounded and clamped as a PNG is written */
static inline void ce_to_rgb(const float *x, uint8_t *rgb) {
    for (int p = 0; p < CE_PIX; p++)
        for (int c = 0; c < 3; c++) {
            float v = (x[(size_t)c * CE_PIX + p] + 1.0f) * 127.5f + 0.5f;
            rgb[p * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
}

typedef struct ce_stats {
    double mean[2][3], spread[2][3]; /* over images, per region and channel */
    double dist_median[2], dist_p90[2], dist_max[2];
    double flat_median[2]; /* the median over images of ce_flatness */
} ce_stats;

/* statistics of n images' region colours cols [n][2][3] and flatness
 * flat [n][2] */
static inline void ce_summarise(const ce_regions *r, int n, const float (*cols)[2][3], const float (*flat)[2], ce_stats *s) {
    memset(s, 0, sizeof *s);
    double *d = malloc(sizeof(double) * (size_t)n);
    if (!d) return;
    for (int g = 0; g < 2; g++) {
        for (int c = 0; c < 3; c++) {
            double m = 0, v = 0;
            for (int i = 0; i < n; i++) m += cols[i][g][c];
            m /= n;
            for (int i = 0; i < n; i++) v += (cols[i][g][c] - m) * (cols[i][g][c] - m);
            s->mean[g][c] = m;
            s->spread[g][c] = n > 1 ? sqrt(v / (n - 1)) : 0;
        }
        for (int i = 0; i < n; i++) d[i] = ce_distance(r, g, cols[i][g]);
        qsort(d, (size_t)n, sizeof *d, ce_cmp);
        s->dist_median[g] = n % 2 ? d[n / 2] : 0.5 * (d[n / 2 - 1] + d[n / 2]);
        s->dist_p90[g] = d[(int)ceil(0.9 * n) - 1];
        s->dist_max[g] = d[n - 1];
        for (int i = 0; i < n; i++) d[i] = flat[i][g];
        qsort(d, (size_t)n, sizeof *d, ce_cmp);
        s->flat_median[g] = n % 2 ? d[n / 2] : 0.5 * (d[n / 2 - 1] + d[n / 2]);
    }
    free(d);
}

#endif
