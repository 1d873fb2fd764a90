/* eval_edit.c - how local are LOCO edits on a faces model?
 *
 *   build/eval_edit MODEL [--count 20] [--parts eyes,mouth,hair]
 *       [--data-seed 99] [--faces-version 2] [--strength 4] [--t-edit 0.6] [--steps 100]
 *       [--inv-steps 100] [--invert-to full|edit] [--rank 5] [--null-rank 5]
 *       [--min-iter 10] [--max-iter 50] [--oversample 0] [--null-mode project|constrain] [--ring R] [--by-label 1] [--first K] [--strips DIR] [--json OUT.json]
 *
 * For each part and each of `count` faces (loco_faces_generate_version with
 * data-seed, by default a seed the shipped models were not trained on, and
 * the generator version the model was trained on), the
 * part mask (dilated by 1 pixel) is the region of interest. The first
 * direction is found with and without null-space projection and both are
 * applied at +-strength; locality = mean |edit - recon| inside the mask /
 * mean outside (edit_eval.h). Transfer: image 0's projected direction is
 * applied to images 1..count-1 (each at its own x_t) and judged with each
 * image's own mask. Prints a table; --json writes the numbers, --strips
 * writes one PNG per part (image 0: original, reconstruction, -s, +s with
 * projection, -s, +s without) and one of the transfer (recon over +s for
 * the first 8 other images). --ring R (a diagnostic) leaves the R pixels
 * around the mask out of "outside", so that a part that grows or shrinks
 * (a wider mouth) is not counted as leakage.
 *
 * Parts: "eyes" is both eyes, not one: the generator's eye factors (size,
 * iris colour, gaze) are shared by the two eyes, so a direction found in
 * one eye's mask rightly changes the other too. */
#include "edit_eval.h"
#include "loco_train.h"
#include "loco.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXP 8

typedef struct stats {
    int n, pass;
    double sum_ratio, min_ratio, sum_in, sum_out;
    double ratio[64]; /* the first 64 edits' ratios, in order (--by-label) */
} stats;

static void st_add(stats *s, double in, double out) {
    double r = out > 0 ? in / out : INFINITY;
    if (s->n == 0 || r < s->min_ratio) s->min_ratio = r;
    if (s->n < 64) s->ratio[s->n] = r;
    s->n++;
    s->sum_ratio += r;
    s->sum_in += in;
    s->sum_out += out;
    if (r >= 5) s->pass++;
}

#define ZOOM 4 /* strips: each pixel a 4x4 block */

static void to_rgb(const float *x, int C, int H, int W, uint8_t *dst, int stride, int ox, int oy) {
    for (int y = 0; y < H * ZOOM; y++)
        for (int xx = 0; xx < W * ZOOM; xx++)
            for (int c = 0; c < 3; c++) {
                float v = (x[((size_t)(C == 3 ? c : 0) * H + y / ZOOM) * W + xx / ZOOM] + 1.0f) * 127.5f;
                v = v < 0 ? 0 : v > 255 ? 255 : v;
                dst[((size_t)(oy + y) * stride + ox + xx) * 3 + c] = (uint8_t)lrintf(v);
            }
}

static int write_row(const char *dir, const char *name, const float *const *imgs, int n, int rows, int C, int H, int W) {
    int cols = (n + rows - 1) / rows;
    loco_image im = {W * cols * ZOOM, H * rows * ZOOM, 3, calloc((size_t)3 * W * cols * H * rows * ZOOM * ZOOM, 1)};
    if (!im.data) return 1;
    for (int i = 0; i < n; i++)
        if (imgs[i]) to_rgb(imgs[i], C, H, W, im.data, W * cols * ZOOM, (i % cols) * W * ZOOM, (i / cols) * H * ZOOM);
    size_t pl = strlen(dir) + strlen(name) + 2;
    char *path = malloc(pl);
    if (!path) {
        free(im.data);
        return 1;
    }
    snprintf(path, pl, "%s/%s", dir, name);
    loco_status st = loco_png_write(path, &im);
    free(path);
    free(im.data);
    if (st) fprintf(stderr, "eval_edit: %s\n", loco_last_error());
    return st != 0;
}

static void print_stats(FILE *f, const char *what, const stats *s) {
    fprintf(f, "  %-22s ratio mean %6.2f  min %6.2f  ratio of means %6.2f  >=5: %2d/%d  inside %5.1f  outside %5.2f (8-bit levels)\n",
            what, s->sum_ratio / s->n, s->min_ratio, s->sum_in / s->sum_out, s->pass, s->n, 127.5 * s->sum_in / s->n,
            127.5 * s->sum_out / s->n);
}

static void json_stats(FILE *f, const char *key, const stats *s, int last) {
    fprintf(f,
            "      \"%s\": {\"n\": %d, \"ratio_mean\": %.4f, \"ratio_min\": %.4f, \"ratio_of_means\": %.4f, "
            "\"pass_5x\": %d, \"inside_mean_levels\": %.3f, \"outside_mean_levels\": %.3f}%s\n",
            key, s->n, s->sum_ratio / s->n, s->min_ratio, s->sum_in / s->sum_out, s->pass, 127.5 * s->sum_in / s->n,
            127.5 * s->sum_out / s->n, last ? "" : ",");
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* short OpenMP waits unless chosen otherwise */
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: eval_edit MODEL [--count 20] [--parts eyes,mouth,hair] [--data-seed 99] "
                        "[--faces-version 2] [--strength 4] [--t-edit 0.6] [--steps 100] [--inv-steps 100] [--invert-to full|edit] "
                        "[--rank 5] [--null-rank 5] [--min-iter 10] [--max-iter 50] [--oversample 0] [--null-mode project|constrain] [--ring R] [--by-label 1] [--first K] [--strips DIR] [--json OUT]\n");
        return 2;
    }
    const char *model = argv[1], *strips = NULL, *json = NULL;
    char partbuf[256] = "eyes,mouth,hair";
    int count = 20;
    uint64_t data_seed = 99;
    int faces_version = LOCO_FACES_VERSION;
    double strength = 4;
    int ring = 0, by_label = 0, first = 0;
    loco_edit_recipe es;
    loco_edit_recipe_init(&es);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "eval_edit: option %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--count")) count = atoi(v);
        else if (!strcmp(a, "--parts")) snprintf(partbuf, sizeof partbuf, "%s", v);
        else if (!strcmp(a, "--data-seed")) data_seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--faces-version")) faces_version = atoi(v);
        else if (!strcmp(a, "--strength")) strength = atof(v);
        else if (!strcmp(a, "--t-edit")) es.edit.t_edit = (float)atof(v);
        else if (!strcmp(a, "--steps")) es.edit.steps = atoi(v);
        else if (!strcmp(a, "--inv-steps")) es.edit.inv_steps = atoi(v);
        else if (!strcmp(a, "--invert-to")) es.edit.invert_full = strcmp(v, "edit") != 0;
        else if (!strcmp(a, "--rank")) es.rank = atoi(v);
        else if (!strcmp(a, "--null-rank")) es.null_rank = atoi(v);
        else if (!strcmp(a, "--min-iter")) es.min_iter = atoi(v);
        else if (!strcmp(a, "--max-iter")) es.max_iter = atoi(v);
        else if (!strcmp(a, "--oversample")) es.oversample = atoi(v);
        else if (!strcmp(a, "--null-mode")) es.null_mode = !strcmp(v, "constrain") ? LOCO_NULL_CONSTRAIN : LOCO_NULL_PROJECT;
        else if (!strcmp(a, "--strips")) strips = v;
        else if (!strcmp(a, "--ring")) ring = atoi(v);
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--by-label")) by_label = atoi(v);
        else if (!strcmp(a, "--first")) first = atoi(v);
        else {
            fprintf(stderr, "eval_edit: unknown option %s\n", a);
            return 2;
        }
    }
    if (count < 2 || es.null_rank < 1) {
        fprintf(stderr, "eval_edit: need --count >= 2 and --null-rank >= 1\n");
        return 2;
    }
    const char *parts[MAXP];
    int np = 0;
    for (char *tok = strtok(partbuf, ","); tok && np < MAXP; tok = strtok(NULL, ",")) parts[np++] = tok;

    loco_model *m = NULL;
    if (loco_model_open(model, &m)) {
        fprintf(stderr, "eval_edit: %s\n", loco_last_error());
        return 1;
    }
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const int C = inf.in_channels, H = inf.height, W = inf.width;
    if (C != 3 || H != LOCO_FACES_SIZE || W != LOCO_FACES_SIZE) {
        fprintf(stderr, "eval_edit: %s is not a 3x32x32 model\n", model);
        return 1;
    }
    const size_t n = (size_t)C * H * W, hw = (size_t)H * W;
    float *x0 = malloc(sizeof(float) * n * count), *xt = malloc(sizeof(float) * n * count);
    float *recon = malloc(sizeof(float) * n * count), *dp0 = malloc(sizeof(float) * n);
    float *dproj = malloc(sizeof(float) * n), *batch = malloc(sizeof(float) * n * 5);
    uint8_t *masks = malloc(hw * count), rgb[32 * 32 * 3], labels[32 * 32];
    float *strip_imgs = malloc(sizeof(float) * n * 6);
    if (!x0 || !xt || !recon || !dp0 || !dproj || !batch || !masks || !strip_imgs) return 1;
    FILE *jf = NULL;
    if (json && !(jf = fopen(json, "w"))) {
        fprintf(stderr, "eval_edit: cannot write %s\n", json);
        return 1;
    }
    if (jf)
        fprintf(jf, "{\n  \"model\": \"%s\", \"count\": %d, \"data_seed\": %llu, \"strength\": %g, \"t_edit\": %g, "
                    "\"steps\": %d, \"inv_steps\": %d, \"invert_to\": \"%s\", \"rank\": %d, \"null_rank\": %d, \"ring\": %d,\n"
                    "  \"min_iter\": %d, \"max_iter\": %d, \"oversample\": %d, \"null_mode\": \"%s\",\n"
                    "  \"parts\": {\n",
                model, count, (unsigned long long)data_seed, strength, (double)es.edit.t_edit, es.edit.steps,
                es.edit.inv_steps, es.edit.invert_full ? "full" : "edit", es.rank, es.null_rank, ring, es.min_iter,
                es.max_iter, es.oversample, es.null_mode == LOCO_NULL_CONSTRAIN ? "constrain" : "project");
    printf("model %s: %d faces (seed %llu) x %d parts, strength %g, t_edit %g, rank %d, null rank %d, "
           "%d-%d iterations, oversample %d, null space: %s\n",
           model, count, (unsigned long long)data_seed, np, strength, (double)es.edit.t_edit, es.rank, es.null_rank,
           es.min_iter, es.max_iter, es.oversample, es.null_mode == LOCO_NULL_CONSTRAIN ? "constrained iteration" : "projection");
    int rc = 0;
    stats all_p = {0}, all_r = {0}, all_t = {0};
    for (int pi = 0; pi < np && !rc; pi++) {
        stats sp = {0}, sr = {0}, stt = {0};
        double lab_sum[LOCO_FACES_N_LABELS] = {0}, lab_n[LOCO_FACES_N_LABELS] = {0};
        for (int i = 0; i < count && !rc; i++) {
            float *x0i = x0 + n * i, *xti = xt + n * i;
            uint8_t *mi = masks + hw * i;
            loco_status st = loco_faces_generate_version(data_seed, first + i, faces_version, rgb, labels, NULL);
            if (!st) st = loco_part_mask(labels, H, W, parts[pi], 1, mi);
            if (!st && ring > 0) {
                /* a diagnostic: leave the ring of `ring` pixels around the
                 * mask out of "outside" (value 2: neither in nor out) */
                uint8_t wide[32 * 32];
                st = loco_part_mask(labels, H, W, parts[pi], 1 + ring, wide);
                for (size_t p = 0; !st && p < hw; p++)
                    if (wide[p] && !mi[p]) mi[p] = 2;
            }
            for (size_t p = 0; p < hw; p++)
                for (int c = 0; c < C; c++) x0i[c * hw + p] = rgb[p * 3 + c] / 127.5f - 1.0f;
            es.seed = (uint64_t)i;
            uint8_t roi[32 * 32];
            for (size_t p = 0; p < hw; p++) roi[p] = mi[p] == 1;
            /* recon, -/+ strength with and without the null space (edit_eval.h) */
            loco_edit_directions *ed = NULL;
            if (!st) st = ev_edit(m, &es, x0i, roi, (float)strength, batch, &ed);
            if (!st) {
                memcpy(xti, loco_edit_directions_xt(ed), sizeof(float) * n);
                memcpy(dproj, loco_edit_directions_vectors(ed), sizeof(float) * n);
            }
            loco_edit_directions_free(ed);
            if (st) {
                fprintf(stderr, "eval_edit: part %s image %d: %s\n", parts[pi], i, loco_last_error());
                rc = 1;
                break;
            }
            memcpy(recon + n * i, batch, sizeof(float) * n);
            double in1, out1, in2, out2;
            ev_change(batch + n, batch, mi, C, H, W, &in1, &out1);
            ev_change(batch + 2 * n, batch, mi, C, H, W, &in2, &out2);
            st_add(&sp, (in1 + in2) / 2, (out1 + out2) / 2);
            if (by_label)
                for (size_t p = 0; p < hw; p++) {
                    if (mi[p] != 0) continue;
                    for (int k = 1; k <= 2; k++)
                        for (int c = 0; c < C; c++)
                            lab_sum[labels[p]] += fabs(ev_clip(batch[k * n + c * hw + p]) - ev_clip(batch[c * hw + p]));
                    lab_n[labels[p]] += 2 * C;
                }
            ev_change(batch + 3 * n, batch, mi, C, H, W, &in1, &out1);
            ev_change(batch + 4 * n, batch, mi, C, H, W, &in2, &out2);
            st_add(&sr, (in1 + in2) / 2, (out1 + out2) / 2);
            if (i == 0) {
                memcpy(dp0, dproj, sizeof(float) * n);
                memcpy(strip_imgs, x0i, sizeof(float) * n);
                memcpy(strip_imgs + n, batch, sizeof(float) * n * 5);
            }
            fprintf(stderr, "\r%s %d/%d ", parts[pi], i + 1, count);
        }
        if (rc) break;
        /* transfer of image 0's direction */
        float *tr_imgs = malloc(sizeof(float) * n * 16);
        for (int i = 1; i < count && !rc; i++) {
            const loco_edit_move mv[2] = {{dp0, -(float)strength}, {dp0, (float)strength}};
            if (loco_edit_render(m, &es.edit, xt + n * i, 2, NULL, mv, 2, batch, NULL)) {
                fprintf(stderr, "eval_edit: transfer %d: %s\n", i, loco_last_error());
                rc = 1;
                break;
            }
            double in1, out1, in2, out2;
            ev_change(batch, recon + n * i, masks + hw * i, C, H, W, &in1, &out1);
            ev_change(batch + n, recon + n * i, masks + hw * i, C, H, W, &in2, &out2);
            st_add(&stt, (in1 + in2) / 2, (out1 + out2) / 2);
            if (tr_imgs && i <= 8) {
                memcpy(tr_imgs + n * (i - 1), recon + n * i, sizeof(float) * n);
                memcpy(tr_imgs + n * (8 + i - 1), batch + n, sizeof(float) * n);
            }
        }
        fprintf(stderr, "\r");
        printf("%s:\n", parts[pi]);
        print_stats(stdout, "with projection", &sp);
        print_stats(stdout, "without projection", &sr);
        print_stats(stdout, "transfer (image 0's)", &stt);
        if (by_label) {
            double tot = 0;
            for (int l = 0; l < LOCO_FACES_N_LABELS; l++) tot += lab_sum[l];
            printf("  ratio per face (with projection, without):");
            for (int f = 0; f < sp.n && f < 64; f++) printf(" %d: %.1f, %.1f;", f, sp.ratio[f], sr.ratio[f]);
            printf("\n");
            printf("  outside change by label (with projection): label, share of the outside total, mean (8-bit levels), pixels per image\n");
            for (int l = 0; l < LOCO_FACES_N_LABELS; l++)
                if (lab_n[l] > 0)
                    printf("    %-16s %5.1f%%  %6.2f  %6.1f\n", loco_faces_label_name(l), 100 * lab_sum[l] / tot,
                           127.5 * lab_sum[l] / lab_n[l], lab_n[l] / (2.0 * C * count));
        }
        if (jf) {
            fprintf(jf, "    \"%s\": {\n", parts[pi]);
            json_stats(jf, "projection", &sp, 0);
            json_stats(jf, "no_projection", &sr, 0);
            json_stats(jf, "transfer", &stt, 1);
            fprintf(jf, "    }%s\n", pi + 1 < np ? "," : "");
        }
        if (strips && !rc) {
            const float *row[6];
            for (int k = 0; k < 6; k++) row[k] = strip_imgs + n * k;
            char name[128];
            snprintf(name, sizeof name, "strip_%s.png", parts[pi]);
            rc |= write_row(strips, name, row, 6, 1, C, H, W);
            if (tr_imgs && count >= 9) {
                const float *tr[16];
                for (int k = 0; k < 16; k++) tr[k] = tr_imgs + n * k;
                snprintf(name, sizeof name, "transfer_%s.png", parts[pi]);
                rc |= write_row(strips, name, tr, 16, 2, C, H, W);
            }
        }
        free(tr_imgs);
        stats *acc[3] = {&all_p, &all_r, &all_t}, *src[3] = {&sp, &sr, &stt};
        for (int k = 0; k < 3; k++) {
            if (acc[k]->n == 0 || src[k]->min_ratio < acc[k]->min_ratio) acc[k]->min_ratio = src[k]->min_ratio;
            acc[k]->n += src[k]->n;
            acc[k]->pass += src[k]->pass;
            acc[k]->sum_ratio += src[k]->sum_ratio;
            acc[k]->sum_in += src[k]->sum_in;
            acc[k]->sum_out += src[k]->sum_out;
        }
    }
    if (!rc) {
        printf("all parts:\n");
        print_stats(stdout, "with projection", &all_p);
        print_stats(stdout, "without projection", &all_r);
        print_stats(stdout, "transfer", &all_t);
    }
    if (jf) {
        fprintf(jf, "  },\n  \"all\": {\n");
        json_stats(jf, "projection", &all_p, 0);
        json_stats(jf, "no_projection", &all_r, 0);
        json_stats(jf, "transfer", &all_t, 1);
        fprintf(jf, "  }\n}\n");
        fclose(jf);
    }
    free(x0), free(xt), free(recon), free(dp0), free(dproj), free(batch), free(masks), free(strip_imgs);
    loco_model_free(m);
    return rc;
}
