/* dataset_cmd.c - `loco dataset faces|fashion-mnist` (export training data as
 * PNGs, contact sheets) and `loco mask` (a part mask from a label map). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "loco_train.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* label colours for contact sheets of label maps */
static const uint8_t label_rgb[LOCO_FACES_N_LABELS][3] = {
    {0, 0, 0},       {230, 190, 160}, {120, 70, 30},  {255, 255, 255}, {200, 200, 255}, {0, 90, 255},
    {0, 200, 90},    {230, 20, 40},   {255, 140, 0},  {255, 110, 200}, {90, 60, 160},
};

static int make_dir(const char *d) {
    if (mkdir(d, 0755) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(d, &sb) == 0 && S_ISDIR(sb.st_mode)) return 1;
    }
    fprintf(stderr, "loco: error: cannot create folder %s: %s\n", d, errno ? strerror(errno) : "not a folder");
    return 0;
}

/* An 8-column contact sheet of `n` square `side` images with `ch` channels,
 * each pixel drawn as a zoom x zoom block, with a 1-pixel gap of 255s. */
typedef struct sheet {
    loco_image im;
    int side, zoom;
} sheet;

static int sheet_init(sheet *s, int n, int side, int ch, int zoom) {
    s->side = side;
    s->zoom = zoom;
    int cols = n < 8 ? n : 8, rows = (n + 7) / 8;
    s->im.width = cols * (side * zoom + 1) + 1;
    s->im.height = rows * (side * zoom + 1) + 1;
    s->im.channels = ch;
    s->im.data = malloc((size_t)s->im.width * s->im.height * ch);
    if (!s->im.data) return 0;
    memset(s->im.data, 255, (size_t)s->im.width * s->im.height * ch);
    return 1;
}

static void sheet_put(sheet *s, int i, const uint8_t *px) {
    int z = s->zoom, ch = s->im.channels;
    int ox = 1 + (i % 8) * (s->side * z + 1), oy = 1 + (i / 8) * (s->side * z + 1);
    for (int y = 0; y < s->side * z; y++)
        for (int x = 0; x < s->side * z; x++)
            memcpy(s->im.data + ((size_t)(oy + y) * s->im.width + ox + x) * ch,
                   px + ((size_t)(y / z) * s->side + x / z) * ch, (size_t)ch);
}

static int write_sheet(sheet *s, const char *path) {
    loco_status st = loco_png_write(path, &s->im);
    free(s->im.data);
    s->im.data = NULL;
    if (st) return fail(st);
    if (!g_quiet) fprintf(stderr, "loco: wrote %s\n", path);
    return 0;
}

static int faces(args *a) {
    const char *out = NULL, *grid = NULL, *lgrid = NULL, *v;
    long long count = -1, seed = 0, start = 0, zoom = 1, version = LOCO_FACES_VERSION;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--out"))) out = v;
        else if ((v = opt(a, "--version"))) {
            if (!parse_long(v, 1, 2, &version))
                return usage_error("dataset faces: bad --version '%s' (the generator's: 1 or 2)", v);
        }
        else if ((v = opt(a, "--grid"))) grid = v;
        else if ((v = opt(a, "--label-grid"))) lgrid = v;
        else if ((v = opt(a, "--grid-zoom"))) {
            if (!parse_long(v, 1, 16, &zoom)) return usage_error("dataset faces: bad --grid-zoom '%s' (1..16)", v);
        }
        else if ((v = opt(a, "--count"))) {
            if (!parse_long(v, 1, 10000000, &count)) return usage_error("dataset faces: bad --count '%s'", v);
        } else if ((v = opt(a, "--seed"))) {
            if (!parse_long(v, 0, INT64_MAX, &seed)) return usage_error("dataset faces: bad --seed '%s'", v);
        } else if ((v = opt(a, "--start"))) {
            if (!parse_long(v, 0, 1000000000, &start)) return usage_error("dataset faces: bad --start '%s'", v);
        } else if (s[0] == '-') return usage_error("dataset faces: unknown or incomplete option '%s'", s);
        else return usage_error("dataset faces: unexpected argument '%s'", s);
    }
    if (count < 0) return usage_error("dataset faces: %s", "missing --count N");
    if (!out && !grid && !lgrid) return usage_error("dataset faces: %s", "give --out DIR and/or --grid G.png");
    int rc0 = 0;
    if (grid) rc0 = check_out_file(grid, "--grid");
    if (!rc0 && lgrid) rc0 = check_out_file(lgrid, "--label-grid");
    if (rc0) return rc0;
    if ((grid || lgrid) && count > 4096) return usage_error("dataset faces: %s", "a --grid holds at most 4096 images");
    if (start + count > 2147483647LL) return usage_error("dataset faces: %s", "--start + --count must stay below 2^31");
    if (out && !make_dir(out)) return 1;
    const int S = LOCO_FACES_SIZE, NF = loco_faces_n_factors();
    sheet gs = {0}, ls = {0};
    FILE *csv = NULL;
    /* paths in --out: the folder, a slash and at most 24 more bytes */
    const size_t pl = out ? strlen(out) + 32 : 1;
    char *path = malloc(pl), *tmp = malloc(pl);
    int rc = 0;
    if (!path || !tmp) {
        free(path);
        free(tmp);
        return fail(LOCO_E_NOMEM);
    }
    if ((grid && !sheet_init(&gs, (int)count, S, 3, (int)zoom)) ||
        (lgrid && !sheet_init(&ls, (int)count, S, 3, (int)zoom))) {
        fprintf(stderr, "loco: error: out of memory\n");
        rc = 1;
        goto done;
    }
    if (out) {
        snprintf(tmp, pl, "%s/factors.csv.tmp", out);
        if (!(csv = fopen(tmp, "w"))) {
            fprintf(stderr, "loco: error: cannot write %s: %s\n", tmp, strerror(errno));
            rc = 1;
            goto done;
        }
        fprintf(csv, "index");
        for (int f = 0; f < NF; f++) fprintf(csv, ",%s", loco_faces_factor_name(f));
        fprintf(csv, "\n");
    }
    uint8_t rgb[LOCO_FACES_SIZE * LOCO_FACES_SIZE * 3], lab[LOCO_FACES_SIZE * LOCO_FACES_SIZE],
        lrgb[LOCO_FACES_SIZE * LOCO_FACES_SIZE * 3];
    float fac[LOCO_FACES_N_FACTORS];
    for (long long k = 0; k < count; k++) {
        int idx = (int)(start + k);
        loco_status st = loco_faces_generate_version((uint64_t)seed, idx, (int)version, rgb, lab, fac);
        if (st) {
            rc = fail(st);
            goto done;
        }
        if (out) {
            loco_image im = {S, S, 3, rgb}, lm = {S, S, 1, lab};
            snprintf(path, pl, "%s/%05d.png", out, idx);
            if ((st = loco_png_write(path, &im))) {
                rc = fail(st);
                goto done;
            }
            snprintf(path, pl, "%s/%05d_labels.png", out, idx);
            if ((st = loco_png_write(path, &lm))) {
                rc = fail(st);
                goto done;
            }
            fprintf(csv, "%d", idx);
            for (int f = 0; f < NF; f++) fprintf(csv, ",%.6f", (double)fac[f]);
            fprintf(csv, "\n");
        }
        if (grid) sheet_put(&gs, (int)k, rgb);
        if (lgrid) {
            for (int p = 0; p < S * S; p++) memcpy(lrgb + p * 3, label_rgb[lab[p]], 3);
            sheet_put(&ls, (int)k, lrgb);
        }
    }
    if (out) {
        int bad = ferror(csv);
        if (fclose(csv) != 0 || bad) {
            csv = NULL;
            fprintf(stderr, "loco: error: cannot write %s\n", tmp);
            rc = 1;
            goto done;
        }
        csv = NULL;
        snprintf(path, pl, "%s/factors.csv", out);
        if (rename(tmp, path) != 0) {
            fprintf(stderr, "loco: error: cannot rename %s: %s\n", tmp, strerror(errno));
            rc = 1;
            goto done;
        }
        snprintf(path, pl, "%s/parts.txt", out);
        FILE *pf = fopen(path, "w");
        if (!pf) {
            fprintf(stderr, "loco: error: cannot write %s: %s\n", path, strerror(errno));
            rc = 1;
            goto done;
        }
        fprintf(pf, "# label name (pixel values of the *_labels.png maps)\n");
        for (int l = 0; l < LOCO_FACES_N_LABELS; l++) fprintf(pf, "%d %s\n", l, loco_faces_label_name(l));
        fprintf(pf, "# part groups (names loco mask --part accepts besides the labels)\n");
        for (int i = LOCO_FACES_N_LABELS; i < loco_faces_n_parts(); i++) {
            uint32_t bits = 0;
            loco_faces_part_labels(loco_faces_part_name(i), &bits);
            fprintf(pf, "# %s =", loco_faces_part_name(i));
            for (int l = 0; l < LOCO_FACES_N_LABELS; l++)
                if (bits >> l & 1u) fprintf(pf, " %d", l);
            fprintf(pf, "\n");
        }
        fprintf(pf, "# factors (factors.csv columns, each in [0,1]) and the part each one is local to\n");
        for (int f = 0; f < NF; f++)
            fprintf(pf, "# factor %s: %s\n", loco_faces_factor_name(f),
                    loco_faces_factor_part(f) ? loco_faces_factor_part(f) : "global");
        if (fclose(pf) != 0) {
            fprintf(stderr, "loco: error: cannot write %s\n", path);
            rc = 1;
            goto done;
        }
        if (!g_quiet) fprintf(stderr, "loco: wrote %lld faces (seed %lld) to %s\n", count, seed, out);
    }
    if (grid && (rc = write_sheet(&gs, grid))) goto done;
    if (lgrid && (rc = write_sheet(&ls, lgrid))) goto done;
done:
    if (csv) {
        fclose(csv);
        remove(tmp);
    }
    free(gs.im.data);
    free(ls.im.data);
    free(path);
    free(tmp);
    return rc;
}

static int fashion(args *a) {
    const char *out = NULL, *grid = NULL, *dir = NULL, *split = "train", *v;
    long long count = -1, zoom = 1;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--out"))) out = v;
        else if ((v = opt(a, "--grid"))) grid = v;
        else if ((v = opt(a, "--dir"))) dir = v;
        else if ((v = opt(a, "--grid-zoom"))) {
            if (!parse_long(v, 1, 16, &zoom)) return usage_error("dataset fashion-mnist: bad --grid-zoom '%s' (1..16)", v);
        }
        else if ((v = opt(a, "--split"))) split = v;
        else if ((v = opt(a, "--count"))) {
            if (!parse_long(v, 1, 100000, &count)) return usage_error("dataset fashion-mnist: bad --count '%s'", v);
        } else if (s[0] == '-') return usage_error("dataset fashion-mnist: unknown or incomplete option '%s'", s);
        else return usage_error("dataset fashion-mnist: unexpected argument '%s'", s);
    }
    if (count < 0) return usage_error("dataset fashion-mnist: %s", "missing --count N");
    if (!out && !grid) return usage_error("dataset fashion-mnist: %s", "give --out DIR and/or --grid G.png");
    if (grid) {
        int rc0 = check_out_file(grid, "--grid");
        if (rc0) return rc0;
    }
    if (grid && count > 4096) return usage_error("dataset fashion-mnist: %s", "a --grid holds at most 4096 images");
    uint8_t *img = NULL, *lab = NULL;
    int n = 0, rc = 0;
    loco_status st = loco_fashion_mnist_read(dir, split, (int)count, &img, &lab, &n);
    if (st) return fail(st);
    if (out && !make_dir(out)) {
        rc = 1;
        goto done;
    }
    if (out) {
        const size_t pl = strlen(out) + 32; /* the folder, a slash and a short name */
        char *path = malloc(pl), *tmp = malloc(pl);
        FILE *csv = NULL;
        if (path && tmp) {
            snprintf(tmp, pl, "%s/labels.csv.tmp", out);
            if (!(csv = fopen(tmp, "w"))) fprintf(stderr, "loco: error: cannot write %s: %s\n", tmp, strerror(errno));
        } else {
            fprintf(stderr, "loco: error: out of memory\n");
        }
        for (int i = 0; csv && i < n && !rc; i++) {
            if (i == 0) fprintf(csv, "index,label,class\n");
            loco_image im = {32, 32, 1, img + (size_t)i * 1024};
            snprintf(path, pl, "%s/%05d.png", out, i);
            if ((st = loco_png_write(path, &im))) rc = fail(st);
            else fprintf(csv, "%d,%d,%s\n", i, lab[i], loco_fashion_mnist_class(lab[i]));
        }
        if (csv && !rc) {
            int bad = ferror(csv);
            snprintf(path, pl, "%s/labels.csv", out);
            if (fclose(csv) != 0 || bad || rename(tmp, path) != 0) {
                fprintf(stderr, "loco: error: cannot write %s\n", path);
                rc = 1;
            }
            csv = NULL;
        }
        if (!csv && !rc && (!path || !tmp)) rc = 1;
        if (csv) { /* failed half way */
            fclose(csv);
            rc = rc ? rc : 1;
        }
        if (rc && tmp) remove(tmp);
        free(path);
        free(tmp);
        if (rc) goto done;
        if (!g_quiet) fprintf(stderr, "loco: wrote %d Fashion-MNIST %s images (32x32) to %s\n", n, split, out);
    }
    if (grid) {
        sheet gs;
        if (!sheet_init(&gs, n, 32, 1, (int)zoom)) {
            fprintf(stderr, "loco: error: out of memory\n");
            rc = 1;
            goto done;
        }
        for (int i = 0; i < n; i++) sheet_put(&gs, i, img + (size_t)i * 1024);
        rc = write_sheet(&gs, grid);
    }
done:
    loco_free(img);
    loco_free(lab);
    return rc;
}

int cmd_dataset(args *a) {
    const char *u = "usage: loco dataset faces --count N (--out DIR | --grid G.png) [--seed S] [--start I] "
                    "[--label-grid L.png] [--grid-zoom Z] [--version 2]\n       loco dataset fashion-mnist --count N (--out DIR | --grid G.png) "
                    "[--split train|test] [--dir D] [--grid-zoom Z]";
    if (a->i >= a->argc) return usage_error("dataset: %s", u);
    const char *what = a->argv[a->i++];
    if (strcmp(what, "faces") == 0) return faces(a);
    if (strcmp(what, "fashion-mnist") == 0) return fashion(a);
    return usage_error("dataset: %s", u);
}

int cmd_mask(args *a) {
    const char *in = NULL, *part = NULL, *out = NULL, *v;
    long long dilate = 0;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--part"))) part = v;
        else if ((v = opt(a, "--out"))) out = v;
        else if ((v = opt(a, "--dilate"))) {
            if (!parse_long(v, 0, 64, &dilate)) return usage_error("mask: bad --dilate '%s' (0..64 pixels)", v);
        } else if (s[0] == '-') return usage_error("mask: unknown or incomplete option '%s'", s);
        else if (!in) in = s;
        else return usage_error("mask: unexpected argument '%s'", s);
    }
    if (!in || !part || !out) return usage_error("mask: %s", "usage: loco mask LABELS.png --part PART [--dilate N] --out M.png");
    int rc0 = check_out_file(out, "--out");
    if (rc0) return rc0;
    uint32_t bits;
    loco_status st = loco_faces_part_labels(part, &bits);
    if (st) return fail(st);
    loco_image lab;
    if ((st = loco_labels_read_png(in, &lab))) return fail(st);
    size_t n = (size_t)lab.width * lab.height, count = 0;
    uint8_t *m = malloc(n);
    if (!m) {
        loco_free(lab.data);
        fprintf(stderr, "loco: error: out of memory\n");
        return 1;
    }
    st = loco_part_mask(lab.data, lab.height, lab.width, part, (int)dilate, m);
    if (!st) {
        for (size_t i = 0; i < n; i++) {
            count += m[i] != 0;
            m[i] = m[i] ? 255 : 0;
        }
        loco_image mi = {lab.width, lab.height, 1, m};
        st = loco_png_write(out, &mi);
    }
    free(m);
    loco_free(lab.data);
    if (st) return fail(st);
    if (!g_quiet) fprintf(stderr, "loco: wrote %s (%s, dilated %lld px: %zu of %zu pixels)\n", out, part, dilate, count, n);
    return 0;
}
