/* test_dataset.c - the synthetic part-labelled faces (determinism, label maps
 * consistent with the pixels, each local factor changing only its own part),
 * part masks, the idx reader on hand-made and hostile files (plain and gzip)
 * and, when Debian's dataset-fashion-mnist is installed, Fashion-MNIST. */
#include <errno.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"
#include "loco_train.h"

#include <png.h>

#define S LOCO_FACES_SIZE
#define NPIX (S * S)
#define NF LOCO_FACES_N_FACTORS

static char g_dir[] = "/tmp/loco_dsXXXXXX";

static const char *tp(const char *name) {
    static char buf[4][600];
    static int k = 0;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

static int setup(void **s) {
    (void)s;
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **s) {
    (void)s;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd);
}

/* ---- faces: tables and determinism ----------------------------------------- */

static void test_faces_tables(void **s) {
    (void)s;
    assert_int_equal(loco_faces_n_factors(), NF);
    int n_local = 0;
    for (int i = 0; i < NF; i++) {
        const char *n = loco_faces_factor_name(i);
        assert_non_null(n);
        for (int j = 0; j < i; j++) assert_string_not_equal(n, loco_faces_factor_name(j));
        const char *p = loco_faces_factor_part(i);
        if (p) {
            uint32_t bits = 0;
            CHECK_OK(loco_faces_part_labels(p, &bits));
            assert_true(bits != 0);
            n_local++;
        }
    }
    assert_null(loco_faces_factor_name(NF));
    assert_null(loco_faces_factor_name(-1));
    printf("  %d factors, %d of them local\n", NF, n_local);
    assert_true(n_local >= 8);
    for (int l = 0; l < LOCO_FACES_N_LABELS; l++) {
        uint32_t bits;
        CHECK_OK(loco_faces_part_labels(loco_faces_label_name(l), &bits));
        assert_int_equal(bits, 1u << l);
    }
    assert_null(loco_faces_label_name(LOCO_FACES_N_LABELS));
    assert_string_equal(loco_faces_label_name(LOCO_LABEL_MOUTH), "mouth");
    uint32_t bits;
    CHECK_OK(loco_faces_part_labels("left_eye", &bits));
    assert_int_equal(bits, (1u << LOCO_LABEL_LEFT_EYE_WHITE) | (1u << LOCO_LABEL_LEFT_IRIS));
    CHECK_OK(loco_faces_part_labels("eyes", &bits));
    assert_int_equal(bits, 0x78u);
    for (int i = 0; i < loco_faces_n_parts(); i++) {
        CHECK_OK(loco_faces_part_labels(loco_faces_part_name(i), &bits));
        for (int j = 0; j < i; j++) assert_string_not_equal(loco_faces_part_name(i), loco_faces_part_name(j));
    }
    assert_null(loco_faces_part_name(loco_faces_n_parts()));
    expect_error(loco_faces_part_labels("nostril", &bits), LOCO_E_INVALID_ARGUMENT, "nostril", "left_eye, right_eye");
}

static void test_faces_determinism(void **s) {
    (void)s;
    enum { N = 8 };
    static uint8_t a[N][NPIX * 3], la[N][NPIX], b[NPIX * 3], lb[NPIX];
    float fa[N][NF], fb[NF];
    for (int i = 0; i < N; i++) CHECK_OK(loco_faces_generate(7, i, a[i], la[i], fa[i]));
    /* same seed and index, any order: the same bytes */
    for (int i = N - 1; i >= 0; i--) {
        CHECK_OK(loco_faces_generate(7, i, b, lb, fb));
        assert_memory_equal(a[i], b, sizeof b);
        assert_memory_equal(la[i], lb, sizeof lb);
        assert_memory_equal(fa[i], fb, sizeof fb);
    }
    /* sample + render is generate; labels and factors are optional */
    CHECK_OK(loco_faces_sample(7, 3, fb));
    assert_memory_equal(fa[3], fb, sizeof fb);
    CHECK_OK(loco_faces_render(fb, b, NULL));
    assert_memory_equal(a[3], b, sizeof b);
    CHECK_OK(loco_faces_generate(7, 3, b, NULL, NULL));
    assert_memory_equal(a[3], b, sizeof b);
    /* another index or seed: another image */
    int min_diff = NPIX * 3;
    for (int i = 0; i + 1 < N; i++) {
        int d = 0;
        for (int k = 0; k < NPIX * 3; k++) d += a[i][k] != a[i + 1][k];
        if (d < min_diff) min_diff = d;
    }
    CHECK_OK(loco_faces_generate(8, 0, b, lb, fb));
    int dseed = 0;
    for (int k = 0; k < NPIX * 3; k++) dseed += a[0][k] != b[k];
    printf("  consecutive indices differ in >= %d of %d bytes; seed 7 vs 8 (index 0): %d bytes\n", min_diff, NPIX * 3,
           dseed);
    assert_true(min_diff > 100);
    assert_true(dseed > 100);
    /* factors in [0, 1); out-of-range factors and bad arguments are refused */
    for (int i = 0; i < N; i++)
        for (int f = 0; f < NF; f++) assert_true(fa[i][f] >= 0.0f && fa[i][f] < 1.0f);
    /* no geometric jitter: position and scale are drawn at 0.5, so the nose
     * (which no factor moves) covers the same pixels in every face */
    for (int i = 0; i < N; i++)
        for (int f = 0; f < NF; f++) {
            const char *name = loco_faces_factor_name(f);
            if (strcmp(name, "offset_x") == 0 || strcmp(name, "offset_y") == 0 || strcmp(name, "scale") == 0)
                if (fa[i][f] != 0.5f) fail_msg("face %d: factor %s is %g, not 0.5", i, name, (double)fa[i][f]);
        }
    for (int i = 1; i < N; i++)
        for (int k = 0; k < NPIX; k++)
            if ((la[i][k] == LOCO_LABEL_NOSE) != (la[0][k] == LOCO_LABEL_NOSE))
                fail_msg("face %d: the nose moved (pixel %d): geometric jitter is back", i, k);
    /* version 1 (the first generator) jitters them, from the same stream:
     * every other factor is the same, and its noses move */
    int nose_moved = 0;
    for (int i = 0; i < N; i++) {
        float f1[NF];
        uint8_t l1[NPIX];
        CHECK_OK(loco_faces_sample_version(7, i, 1, f1));
        int jittered = 0;
        for (int f = 0; f < NF; f++) {
            const char *name = loco_faces_factor_name(f);
            if (strcmp(name, "offset_x") == 0 || strcmp(name, "offset_y") == 0 || strcmp(name, "scale") == 0)
                jittered += f1[f] != 0.5f;
            else if (f1[f] != fa[i][f])
                fail_msg("face %d: version 1's %s is %g, version 2's %g", i, name, (double)f1[f], (double)fa[i][f]);
        }
        assert_int_equal(jittered, 3);
        CHECK_OK(loco_faces_generate_version(7, i, 1, b, l1, NULL));
        for (int k = 0; k < NPIX; k++) nose_moved += (l1[k] == LOCO_LABEL_NOSE) != (la[0][k] == LOCO_LABEL_NOSE);
    }
    printf("  version 1: nose pixels that differ from version 2's nose, over %d faces: %d\n", N, nose_moved);
    assert_true(nose_moved > 0);
    expect_error(loco_faces_sample_version(7, 0, 3, fb), LOCO_E_INVALID_ARGUMENT, "version 3", NULL);
    expect_error(loco_faces_generate_version(7, 0, 0, b, NULL, NULL), LOCO_E_INVALID_ARGUMENT, "version 0", NULL);
    fb[4] = 1.5f;
    expect_error(loco_faces_render(fb, b, lb), LOCO_E_INVALID_ARGUMENT, "mouth_width", "outside [0, 1]");
    fb[4] = NAN;
    expect_error(loco_faces_render(fb, b, lb), LOCO_E_INVALID_ARGUMENT, "mouth_width", NULL);
    expect_error(loco_faces_generate(7, -1, b, lb, NULL), LOCO_E_INVALID_ARGUMENT, "index", NULL);
    expect_error(loco_faces_render(NULL, b, lb), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
}

/* ---- faces: label maps agree with the pixels ------------------------------- */

static int count_label(const uint8_t *lab, int l) {
    int c = 0;
    for (int i = 0; i < NPIX; i++) c += lab[i] == l;
    return c;
}

static int interior(const uint8_t *lab, int x, int y) {
    if (x < 1 || y < 1 || x >= S - 1 || y >= S - 1) return 0;
    for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++)
            if (lab[(y + dy) * S + x + dx] != lab[y * S + x]) return 0;
    return 1;
}

static void test_faces_labels(void **s) {
    (void)s;
    enum { N = 300 };
    uint8_t rgb[NPIX * 3], lab[NPIX];
    int min_eye = NPIX, min_iris = NPIX, min_mouth = NPIX, min_hair = NPIX, min_skin = NPIX, min_cheeks = NPIX,
        min_nose = NPIX, min_clothes = NPIX, max_iris_bright = 0, min_mouth_rg = 255, max_dev = 0;
    double mean_eye = 0, mean_mouth = 0;
    for (int i = 0; i < N; i++) {
        CHECK_OK(loco_faces_generate(21, i, rgb, lab, NULL));
        for (int k = 0; k < NPIX; k++) assert_true(lab[k] < LOCO_FACES_N_LABELS);
        int le = count_label(lab, LOCO_LABEL_LEFT_EYE_WHITE) + count_label(lab, LOCO_LABEL_LEFT_IRIS);
        int re = count_label(lab, LOCO_LABEL_RIGHT_EYE_WHITE) + count_label(lab, LOCO_LABEL_RIGHT_IRIS);
        int li = count_label(lab, LOCO_LABEL_LEFT_IRIS), ri = count_label(lab, LOCO_LABEL_RIGHT_IRIS);
        int mo = count_label(lab, LOCO_LABEL_MOUTH);
        min_eye = le < min_eye ? le : min_eye;
        min_eye = re < min_eye ? re : min_eye;
        min_iris = li < min_iris ? li : min_iris;
        min_iris = ri < min_iris ? ri : min_iris;
        min_mouth = mo < min_mouth ? mo : min_mouth;
        mean_eye += (le + re) / 2.0 / N;
        mean_mouth += (double)mo / N;
        int c;
        if ((c = count_label(lab, LOCO_LABEL_HAIR)) < min_hair) min_hair = c;
        if ((c = count_label(lab, LOCO_LABEL_SKIN)) < min_skin) min_skin = c;
        if ((c = count_label(lab, LOCO_LABEL_CHEEKS)) < min_cheeks) min_cheeks = c;
        if ((c = count_label(lab, LOCO_LABEL_NOSE)) < min_nose) min_nose = c;
        if ((c = count_label(lab, LOCO_LABEL_CLOTHES)) < min_clothes) min_clothes = c;
        /* the left eye is left of the right eye */
        double lx = 0, rx = 0;
        int ln = 0, rn = 0;
        for (int k = 0; k < NPIX; k++) {
            if (lab[k] == LOCO_LABEL_LEFT_EYE_WHITE || lab[k] == LOCO_LABEL_LEFT_IRIS) lx += k % S, ln++;
            if (lab[k] == LOCO_LABEL_RIGHT_EYE_WHITE || lab[k] == LOCO_LABEL_RIGHT_IRIS) rx += k % S, rn++;
        }
        assert_true(ln > 0 && rn > 0 && lx / ln + 5 < rx / rn);
        /* uniform parts: interior pixels share one colour */
        static const int uniform[] = {LOCO_LABEL_BACKGROUND, LOCO_LABEL_SKIN, LOCO_LABEL_HAIR, LOCO_LABEL_CLOTHES};
        for (int u = 0; u < 4; u++) {
            int ref = -1;
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    int k = y * S + x;
                    if (lab[k] != uniform[u] || !interior(lab, x, y)) continue;
                    if (ref < 0) ref = k;
                    for (int ch = 0; ch < 3; ch++) {
                        int d = abs(rgb[k * 3 + ch] - rgb[ref * 3 + ch]);
                        if (d > max_dev) max_dev = d;
                    }
                }
        }
        /* iris pixels are dark or coloured, not eye-white; mouth pixels red */
        for (int k = 0; k < NPIX; k++) {
            const uint8_t *p = rgb + k * 3;
            if (lab[k] == LOCO_LABEL_LEFT_IRIS || lab[k] == LOCO_LABEL_RIGHT_IRIS) {
                int br = (p[0] + p[1] + p[2]) / 3;
                if (br > max_iris_bright) max_iris_bright = br;
            }
            if (lab[k] == LOCO_LABEL_MOUTH && p[0] - p[1] < min_mouth_rg) min_mouth_rg = p[0] - p[1];
        }
    }
    printf("  %d faces: pixels per eye >= %d (mean %.1f), per iris >= %d, mouth >= %d (mean %.1f)\n", N, min_eye,
           mean_eye, min_iris, min_mouth, mean_mouth);
    printf("  hair >= %d, skin >= %d, cheeks >= %d, nose >= %d, clothes >= %d pixels\n", min_hair, min_skin,
           min_cheeks, min_nose, min_clothes);
    printf("  interior pixels of background/skin/hair/clothes: max deviation %d; iris brightness <= %d; "
           "mouth R-G >= %d\n", max_dev, max_iris_bright, min_mouth_rg);
    assert_true(min_eye >= 20);
    assert_true(min_iris >= 4);
    assert_true(min_mouth >= 12);
    assert_true(min_hair >= 40);
    assert_true(min_skin >= 100);
    assert_true(min_cheeks >= 8);
    assert_true(min_nose >= 1);
    assert_true(min_clothes >= 20);
    assert_true(max_dev <= 1);
    assert_true(max_iris_bright <= 190);
    assert_true(min_mouth_rg >= 30);
}

/* ---- faces: local factors change their own part ---------------------------- */

/* mask of `part` in lab (or in lab2 too, when not NULL), dilated by 1 */
static void part_region(const uint8_t *lab, const uint8_t *lab2, const char *part, uint8_t *m) {
    uint8_t m2[NPIX];
    if (loco_part_mask(lab, S, S, part, 1, m) != LOCO_OK) memset(m, 0, NPIX);
    if (lab2 && loco_part_mask(lab2, S, S, part, 1, m2) == LOCO_OK)
        for (int k = 0; k < NPIX; k++) m[k] |= m2[k];
}

static int factor_index(const char *name) {
    for (int i = 0; i < NF; i++)
        if (strcmp(loco_faces_factor_name(i), name) == 0) return i;
    fail_msg("no factor '%s'", name);
    return -1;
}

static void test_faces_local_factors(void **s) {
    (void)s;
    const int F_OFFSET_X_INDEX = factor_index("offset_x");
    enum { N = 60 };
    uint8_t a[NPIX * 3], la[NPIX], b[NPIX * 3], lb[NPIX], m[NPIX];
    float f[NF];
    /* The region is the part in the image before or after the change,
     * dilated by 1 pixel (a growing part, e.g. longer hair, leaves its
     * original mask); the last column, for information, uses the original
     * image's map alone, as an edit of that image would. */
    printf("  factor          part      changed px   inside part+1: mean   min (both maps) | mean (original map)\n");
    for (int fi = 0; fi < NF; fi++) {
        const char *part = loco_faces_factor_part(fi);
        if (!part) continue;
        double sum_in = 0, min_in = 1, sum_in_orig = 0, sum_changed = 0;
        for (int i = 0; i < N; i++) {
            CHECK_OK(loco_faces_generate(33, i, a, la, f));
            f[fi] = f[fi] < 0.5f ? f[fi] + 0.5f : f[fi] - 0.5f; /* a change of 0.5 */
            CHECK_OK(loco_faces_render(f, b, lb));
            double tot = 0, in = 0, in_orig = 0;
            int changed = 0;
            part_region(la, lb, part, m);
            uint8_t mo[NPIX];
            part_region(la, NULL, part, mo);
            for (int k = 0; k < NPIX; k++) {
                double d = 0;
                for (int ch = 0; ch < 3; ch++) d += abs(a[k * 3 + ch] - b[k * 3 + ch]);
                tot += d;
                changed += d > 0;
                if (m[k]) in += d;
                if (mo[k]) in_orig += d;
            }
            if (!(tot > 0)) fail_msg("factor %s: image %d did not change", loco_faces_factor_name(fi), i);
            sum_in += in / tot;
            sum_in_orig += in_orig / tot;
            sum_changed += changed;
            if (in / tot < min_in) min_in = in / tot;
        }
        printf("  %-15s %-9s %8.1f   %17.4f %8.4f | %.4f\n", loco_faces_factor_name(fi), part, sum_changed / N,
               sum_in / N, min_in, sum_in_orig / N);
        if (!(min_in >= 0.90))
            fail_msg("factor %s: only %.3f of the change is inside part '%s' dilated by 1", loco_faces_factor_name(fi),
                     min_in, part);
    }
    /* control: the measure tells local from global. The position jitter
     * (offset_x) would fail the test above for every part but the face and
     * head groups: its mean share inside any one part + 1 stays < 0.9 */
    double worst = 0;
    const char *worst_part = "";
    for (int p = 0; p < loco_faces_n_parts(); p++) {
        const char *part = loco_faces_part_name(p);
        if (strcmp(part, "face") == 0 || strcmp(part, "head") == 0) continue;
        double sum = 0;
        for (int i = 0; i < N; i++) {
            CHECK_OK(loco_faces_generate(33, i, a, la, f));
            f[F_OFFSET_X_INDEX] = f[F_OFFSET_X_INDEX] < 0.5f ? f[F_OFFSET_X_INDEX] + 0.5f : f[F_OFFSET_X_INDEX] - 0.5f;
            CHECK_OK(loco_faces_render(f, b, lb));
            part_region(la, lb, part, m);
            double tot = 0, in = 0;
            for (int k = 0; k < NPIX; k++) {
                double d = 0;
                for (int ch = 0; ch < 3; ch++) d += abs(a[k * 3 + ch] - b[k * 3 + ch]);
                tot += d;
                if (m[k]) in += d;
            }
            sum += in / tot;
        }
        if (sum / N > worst) worst = sum / N, worst_part = part;
    }
    printf("  control: offset_x, largest mean share inside one part + 1: %.4f (%s)\n", worst, worst_part);
    assert_true(worst < 0.9);
}

/* ---- part masks ------------------------------------------------------------ */

static void test_part_mask(void **s) {
    (void)s;
    enum { H = 7, W = 9 };
    uint8_t lab[H * W] = {0}, m[H * W];
    lab[3 * W + 4] = LOCO_LABEL_MOUTH;
    lab[0 * W + 0] = LOCO_LABEL_LEFT_IRIS;
    lab[6 * W + 8] = LOCO_LABEL_RIGHT_EYE_WHITE;
    for (int d = 0; d <= 8; d++) {
        CHECK_OK(loco_part_mask(lab, H, W, "mouth", d, m));
        int n = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int want = abs(y - 3) <= d && abs(x - 4) <= d; /* Chebyshev ball */
                if (m[y * W + x] != want) fail_msg("mouth dilated by %d: pixel (%d,%d) is %d", d, x, y, m[y * W + x]);
                n += m[y * W + x];
            }
        if (d <= 2) printf("  one mouth pixel dilated by %d: %d pixels\n", d, n);
    }
    /* a group over two corners, clipped at the borders */
    CHECK_OK(loco_part_mask(lab, H, W, "eyes", 1, m));
    int n = 0;
    for (int i = 0; i < H * W; i++) n += m[i];
    assert_int_equal(n, 8);
    assert_true(m[0] && m[1] && m[W] && m[W + 1] && m[5 * W + 7] && m[6 * W + 8] && !m[2 * W + 2]);
    CHECK_OK(loco_part_mask(lab, H, W, "left_eye", 0, m));
    n = 0;
    for (int i = 0; i < H * W; i++) n += m[i];
    assert_int_equal(n, 1);
    /* errors */
    expect_error(loco_part_mask(lab, H, W, "moustache", 1, m), LOCO_E_INVALID_ARGUMENT, "moustache", "mouth");
    expect_error(loco_part_mask(lab, H, W, "hair", 1, m), LOCO_E_NOT_FOUND, "hair", "absent");
    expect_error(loco_part_mask(lab, H, W, "mouth", -1, m), LOCO_E_INVALID_ARGUMENT, "dilation", NULL);
    expect_error(loco_part_mask(lab, H, W, "mouth", 65, m), LOCO_E_INVALID_ARGUMENT, "dilation", NULL);
    lab[2 * W + 5] = 200;
    expect_error(loco_part_mask(lab, H, W, "mouth", 0, m), LOCO_E_FORMAT, "value 200 at (x 5, y 2)", NULL);
    lab[2 * W + 5] = 0;

    /* label map PNGs */
    loco_image li = {W, H, 1, lab}, back;
    CHECK_OK(loco_png_write(tp("lab.png"), &li));
    CHECK_OK(loco_labels_read_png(tp("lab.png"), &back));
    assert_memory_equal(back.data, lab, sizeof lab);
    loco_free(back.data);
    uint8_t rgb[H * W * 3] = {0};
    loco_image ri = {W, H, 3, rgb};
    CHECK_OK(loco_png_write(tp("rgb.png"), &ri));
    expect_error(loco_labels_read_png(tp("rgb.png"), &back), LOCO_E_FORMAT, "3 channels", "rgb.png");
    assert_null(back.data);
    lab[4] = 255;
    CHECK_OK(loco_png_write(tp("bad.png"), &li));
    expect_error(loco_labels_read_png(tp("bad.png"), &back), LOCO_E_FORMAT, "value 255 at (x 4, y 0)", NULL);
    expect_error(loco_labels_read_png(tp("none.png"), &back), LOCO_E_IO, "none.png", NULL);
    {
        /* a 16-bit gray label map: reading it as 8 bits would turn labels 1..
         * into background, so it is refused */
        FILE *f = fopen(tp("lab16.png"), "wb");
        assert_non_null(f);
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
        png_infop info = png_create_info_struct(png);
        assert_non_null(info);
        png_init_io(png, f);
        png_set_IHDR(png, info, W, H, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                     PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        uint8_t row[W * 2];
        for (int y = 0; y < H; y++) {
            for (int x = 0; x < W; x++) {
                row[2 * x] = 0; /* big-endian: value 1..3, small labels */
                row[2 * x + 1] = (uint8_t)(1 + (x + y) % 3);
            }
            png_write_row(png, row);
        }
        png_write_end(png, NULL);
        png_destroy_write_struct(&png, &info);
        fclose(f);
        expect_error(loco_labels_read_png(tp("lab16.png"), &back), LOCO_E_FORMAT, "16-bit", "lab16.png");
        assert_null(back.data);
    }

    /* on a face: the dilated mouth mask contains the mouth and its ring */
    uint8_t frgb[NPIX * 3], flab[NPIX], m0[NPIX], m1[NPIX];
    CHECK_OK(loco_faces_generate(0, 0, frgb, flab, NULL));
    CHECK_OK(loco_part_mask(flab, S, S, "mouth", 0, m0));
    CHECK_OK(loco_part_mask(flab, S, S, "mouth", 1, m1));
    int n0 = 0, n1 = 0;
    for (int i = 0; i < NPIX; i++) {
        assert_true(m0[i] == (flab[i] == LOCO_LABEL_MOUTH));
        assert_true(!m0[i] || m1[i]);
        n0 += m0[i];
        n1 += m1[i];
    }
    printf("  face 0: mouth %d pixels, dilated by 1: %d\n", n0, n1);
    assert_true(n1 > n0 + 10);
}

/* ---- idx files ------------------------------------------------------------- */

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void write_gz(const char *path, const void *p, size_t n) {
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, p, (unsigned)n), (int)n);
    assert_int_equal(gzclose(g), Z_OK);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* idx header: type 0x08, dims */
static size_t idx_header(uint8_t *h, int nd, const uint32_t *dims) {
    h[0] = h[1] = 0;
    h[2] = 0x08;
    h[3] = (uint8_t)nd;
    for (int i = 0; i < nd; i++) {
        h[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        h[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        h[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        h[7 + 4 * i] = (uint8_t)dims[i];
    }
    return 4 + 4 * (size_t)nd;
}

static void test_idx_valid(void **s) {
    (void)s;
    uint8_t f[64];
    const uint32_t dims[3] = {3, 2, 5};
    size_t h = idx_header(f, 3, dims);
    for (int i = 0; i < 30; i++) f[h + i] = (uint8_t)(i * 7 + 1);
    size_t n = h + 30;
    write_bytes(tp("a.idx"), f, n);
    write_gz(tp("a.idx.gz"), f, n);
    const char *files[2] = {tp("a.idx"), tp("a.idx.gz")};
    for (int k = 0; k < 2; k++) {
        loco_idx x;
        CHECK_OK(loco_idx_read(files[k], 0, &x));
        assert_int_equal(x.ndim, 3);
        assert_int_equal(x.dims[0], 3);
        assert_int_equal(x.dims[1], 2);
        assert_int_equal(x.dims[2], 5);
        assert_int_equal(x.file_items, 3);
        assert_memory_equal(x.data, f + h, 30);
        loco_free(x.data);
        CHECK_OK(loco_idx_read(files[k], 2, &x));
        assert_int_equal(x.dims[0], 2);
        assert_int_equal(x.file_items, 3);
        assert_memory_equal(x.data, f + h, 20);
        loco_free(x.data);
        CHECK_OK(loco_idx_read(files[k], 99, &x));
        assert_int_equal(x.dims[0], 3);
        loco_free(x.data);
    }
    /* 1-D (labels) */
    const uint32_t d1[1] = {4};
    h = idx_header(f, 1, d1);
    memcpy(f + h, "\x09\x00\x03\x07", 4);
    write_bytes(tp("l.idx"), f, h + 4);
    loco_idx x;
    CHECK_OK(loco_idx_read(tp("l.idx"), 0, &x));
    assert_int_equal(x.ndim, 1);
    assert_int_equal(x.dims[0], 4);
    assert_memory_equal(x.data, "\x09\x00\x03\x07", 4);
    loco_free(x.data);
    printf("  [3,2,5] plain and gzip, first 2 items, [4] labels: read back exactly\n");
}

static void test_idx_hostile(void **s) {
    (void)s;
    uint8_t f[64];
    loco_idx x;
    const uint32_t dims[3] = {3, 2, 5};
    size_t h = idx_header(f, 3, dims);
    for (int i = 0; i < 30; i++) f[h + i] = (uint8_t)i;
    size_t n = h + 30;
    /* truncated data, truncated header, empty file */
    for (size_t cut = 0; cut < n; cut++) {
        write_bytes(tp("t.idx"), f, cut);
        loco_status st = loco_idx_read(tp("t.idx"), 0, &x);
        if (st != LOCO_E_FORMAT) fail_msg("prefix of %zu bytes: status %s", cut, loco_strerror(st));
        assert_null(x.data);
    }
    write_bytes(tp("t.idx"), f, n - 1);
    expect_error(loco_idx_read(tp("t.idx"), 0, &x), LOCO_E_FORMAT, "truncated", "29 data bytes");
    /* the first 2 items of the truncated file are all there */
    CHECK_OK(loco_idx_read(tp("t.idx"), 2, &x));
    loco_free(x.data);
    /* trailing bytes */
    f[n] = 0x55;
    write_bytes(tp("t.idx"), f, n + 1);
    expect_error(loco_idx_read(tp("t.idx"), 0, &x), LOCO_E_FORMAT, "trailing", NULL);
    /* wrong magic, unsupported type and rank, zero dimension */
    uint8_t g[64];
    memcpy(g, f, n);
    g[0] = 0x1f;
    write_bytes(tp("m.idx"), g, n);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_FORMAT, "not an idx file", NULL);
    memcpy(g, f, n);
    g[2] = 0x0d;
    write_bytes(tp("m.idx"), g, n);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_UNSUPPORTED, "0x0d (float)", NULL);
    memcpy(g, f, n);
    g[3] = 0;
    write_bytes(tp("m.idx"), g, n);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_UNSUPPORTED, "0 dimensions", NULL);
    g[3] = 9;
    write_bytes(tp("m.idx"), g, n);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_UNSUPPORTED, "9 dimensions", NULL);
    memcpy(g, f, n);
    g[11] = 0;
    write_bytes(tp("m.idx"), g, n);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_FORMAT, "dimension 1 is 0", NULL);
    /* absurd dimensions: refused from the header alone */
    const uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu}, big_item[2] = {1, (1u << 24) + 1},
                   many[3] = {1u << 31, 28, 28};
    h = idx_header(g, 3, huge);
    write_bytes(tp("m.idx"), g, h + 8);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_FORMAT, "absurd", NULL);
    h = idx_header(g, 2, big_item);
    write_bytes(tp("m.idx"), g, h + 8);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_FORMAT, "absurd", NULL);
    h = idx_header(g, 3, many);
    write_bytes(tp("m.idx"), g, h + 8);
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_FORMAT, "absurd", NULL);
    /* a plausible but lying header (800 MB announced, 8 bytes present):
     * truncated, without allocating what the header announces */
    const uint32_t lie[3] = {1u << 20, 28, 28};
    h = idx_header(g, 3, lie);
    write_bytes(tp("m.idx"), g, h + 8);
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    expect_error(loco_idx_read(tp("m.idx"), 0, &x), LOCO_E_FORMAT, "truncated", "holds 8 data bytes");
    printf("  lying 800 MB header refused in %.3f s CPU\n", (double)clock() / CLOCKS_PER_SEC - t0);
    /* gzip: every prefix, and corrupted bytes, fail cleanly */
    write_gz(tp("z.gz"), f, n);
    size_t zn;
    uint8_t *z = slurp(tp("z.gz"), &zn);
    int prefix_fail = 0;
    for (size_t cut = 1; cut < zn; cut++) {
        write_bytes(tp("zc.gz"), z, cut);
        loco_status st = loco_idx_read(tp("zc.gz"), 0, &x);
        if (st == LOCO_OK) fail_msg("gzip prefix of %zu of %zu bytes was accepted", cut, zn);
        assert_null(x.data);
        prefix_fail++;
    }
    int flips = 0, flip_detected = 0;
    for (size_t pos = 10; pos + 8 < zn; pos++) {
        uint8_t *c = malloc(zn);
        memcpy(c, z, zn);
        c[pos] ^= 0x21;
        write_bytes(tp("zc.gz"), c, zn);
        free(c);
        loco_status st = loco_idx_read(tp("zc.gz"), 0, &x);
        flips++;
        if (st != LOCO_OK) flip_detected++;
        else { /* only a change zlib cannot see may pass: then the data must be intact */
            assert_memory_equal(x.data, f + 16, 30);
            loco_free(x.data);
        }
    }
    /* gzip's CRC-32 trailer: flipping a CRC byte is always detected */
    z[zn - 6] ^= 0x01;
    write_bytes(tp("zc.gz"), z, zn);
    expect_error(loco_idx_read(tp("zc.gz"), 0, &x), LOCO_E_FORMAT, "gzip", NULL);
    free(z);
    printf("  gzip (%zu bytes): %d prefixes refused; %d of %d single-byte corruptions refused\n", zn, prefix_fail,
           flip_detected, flips);
    assert_true(flip_detected * 10 >= flips * 9);
    /* not a file */
    expect_error(loco_idx_read(tp("missing.idx"), 0, &x), LOCO_E_IO, "missing.idx", NULL);
    expect_error(loco_idx_read(g_dir, 0, &x), LOCO_E_IO, g_dir, "is a folder, not a file");
}

/* ---- Fashion-MNIST --------------------------------------------------------- */

static void test_fashion_mnist_fake(void **s) {
    (void)s;
    /* a hand-made dataset folder: 2 images, plain files */
    char dir[700];
    snprintf(dir, sizeof dir, "%s/fm", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    static uint8_t f[16 + 2 * 784];
    const uint32_t d3[3] = {2, 28, 28}, d1[1] = {2}, bad3[3] = {2, 27, 28}, d1b[1] = {3};
    size_t h = idx_header(f, 3, d3);
    for (int i = 0; i < 2 * 784; i++) f[h + i] = (uint8_t)(1 + i % 250);
    char p[800];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    write_bytes(p, f, h + 2 * 784);
    uint8_t l[16];
    size_t hl = idx_header(l, 1, d1);
    l[hl] = 4;
    l[hl + 1] = 9;
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_gz(p, l, hl + 2);
    uint8_t *img, *lab;
    int n;
    CHECK_OK(loco_fashion_mnist_read(dir, "train", 0, &img, &lab, &n));
    assert_int_equal(n, 2);
    assert_int_equal(lab[0], 4);
    assert_int_equal(lab[1], 9);
    for (int i = 0; i < 2; i++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                int in = y >= 2 && y < 30 && x >= 2 && x < 30;
                uint8_t want = in ? f[16 + i * 784 + (y - 2) * 28 + x - 2] : 0;
                if (img[i * 1024 + y * 32 + x] != want) fail_msg("image %d pixel (%d,%d)", i, x, y);
            }
    loco_free(img);
    loco_free(lab);
    CHECK_OK(loco_fashion_mnist_read(dir, "train", 1, &img, &lab, &n));
    assert_int_equal(n, 1);
    loco_free(img);
    loco_free(lab);
    expect_error(loco_fashion_mnist_read(dir, "test", 0, &img, &lab, &n), LOCO_E_NOT_FOUND, "t10k-images-idx3-ubyte",
                 NULL);
    assert_null(img);
    expect_error(loco_fashion_mnist_read(dir, "valid", 0, &img, &lab, &n), LOCO_E_INVALID_ARGUMENT, "valid", NULL);
    /* a label out of range, a label count mismatch, 27x28 images */
    l[hl + 1] = 10;
    write_gz(p, l, hl + 2);
    expect_error(loco_fashion_mnist_read(dir, "train", 0, &img, &lab, &n), LOCO_E_FORMAT, "label 10", NULL);
    hl = idx_header(l, 1, d1b);
    l[hl] = l[hl + 1] = l[hl + 2] = 1;
    write_gz(p, l, hl + 3);
    expect_error(loco_fashion_mnist_read(dir, "train", 0, &img, &lab, &n), LOCO_E_FORMAT, "N = 2", NULL);
    hl = idx_header(l, 1, d1);
    write_gz(p, l, hl + 2);
    CHECK_OK(loco_fashion_mnist_read(dir, "train", 0, &img, &lab, &n));
    loco_free(img);
    loco_free(lab);
    idx_header(f, 3, bad3);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    write_bytes(p, f, h + 2 * 27 * 28);
    expect_error(loco_fashion_mnist_read(dir, "train", 0, &img, &lab, &n), LOCO_E_FORMAT, "[N, 28, 28]", NULL);
    assert_null(img);
    assert_null(lab);
    assert_string_equal(loco_fashion_mnist_class(9), "Ankle boot");
    assert_null(loco_fashion_mnist_class(10));
}

/* A dataset folder whose name has 3900 characters (the paths were built in
 * 4096-byte buffers, and folders past 3800 characters refused), and one
 * whose files' paths pass PATH_MAX: the system's error, naming the path. A
 * folder where the images file belongs is named as such. */
static void test_fashion_mnist_long_folder(void **s) {
    (void)s;
    char *dir = malloc(8192);
    assert_non_null(dir);
    size_t k = (size_t)snprintf(dir, 8192, "%s", g_dir);
    while (k < 3900) {
        size_t add = 3900 - k > 200 ? 200 : 3900 - k;
        if (add < 2) add = 2;
        dir[k++] = '/';
        memset(dir + k, 'd', add - 1);
        k += add - 1;
        dir[k] = 0;
        if (mkdir(dir, 0755) != 0) fail_msg("mkdir (%zu characters): %s", k, strerror(errno));
    }
    printf("  folder of %zu characters\n", strlen(dir));
    static uint8_t f[16 + 784];
    const uint32_t d3[3] = {1, 28, 28}, d1[1] = {1};
    size_t h = idx_header(f, 3, d3);
    memset(f + h, 7, 784);
    char *p = malloc(8300);
    assert_non_null(p);
    snprintf(p, 8300, "%s/train-images-idx3-ubyte", dir);
    write_bytes(p, f, h + 784);
    uint8_t l[16];
    size_t hl = idx_header(l, 1, d1);
    l[hl] = 3;
    snprintf(p, 8300, "%s/train-labels-idx1-ubyte", dir);
    write_bytes(p, l, hl + 1);
    uint8_t *img = NULL, *lab = NULL;
    int n;
    CHECK_OK(loco_fashion_mnist_read(dir, "train", 0, &img, &lab, &n));
    assert_int_equal(n, 1);
    assert_int_equal(lab[0], 3);
    assert_int_equal(img[2 * 32 + 2], 7);
    loco_free(img);
    loco_free(lab);
    /* a folder in place of the images file */
    snprintf(p, 8300, "%s/t10k-images-idx3-ubyte.gz", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    expect_error(loco_fashion_mnist_read(dir, "test", 0, &img, &lab, &n), LOCO_E_IO, "t10k-images-idx3-ubyte.gz",
                 "is a folder, not a file");
    /* past PATH_MAX (4096): the folder name is longer than open() takes */
    size_t L = strlen(dir);
    dir[L] = '/';
    memset(dir + L + 1, 'e', 300);
    dir[L + 301] = 0;
    expect_error(loco_fashion_mnist_read(dir, "train", 0, &img, &lab, &n), LOCO_E_IO, "train-images-idx3-ubyte",
                 "too long");
    assert_null(img);
    free(p);
    free(dir);
}

static void test_fashion_mnist_debian(void **s) {
    (void)s;
    struct stat sb;
    if (stat(LOCO_FASHION_MNIST_DIR, &sb) != 0) {
        printf("  NOTE: %s absent (apt-get install dataset-fashion-mnist); skipped\n", LOCO_FASHION_MNIST_DIR);
        skip();
    }
    uint8_t *img, *lab;
    int n;
    CHECK_OK(loco_fashion_mnist_read(NULL, "train", 10, &img, &lab, &n));
    assert_int_equal(n, 10);
    static const uint8_t want[10] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
    assert_memory_equal(lab, want, 10);
    long sum = 0, border = 0;
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            int v = img[y * 32 + x];
            if (y < 2 || y >= 30 || x < 2 || x >= 30) border += v;
            else sum += v;
        }
    printf("  train[0]: label %d (%s), pixel sum %ld, border sum %ld\n", lab[0], loco_fashion_mnist_class(lab[0]), sum,
           border);
    assert_int_equal(sum, 76247); /* the first training image, checked with Python's gzip */
    assert_int_equal(border, 0);
    loco_free(img);
    loco_free(lab);
    /* the whole test split: 10000 images, 1000 per class */
    CHECK_OK(loco_fashion_mnist_read(NULL, "test", 0, &img, &lab, &n));
    assert_int_equal(n, 10000);
    int hist[10] = {0};
    for (int i = 0; i < n; i++) hist[lab[i]]++;
    printf("  test split: %d images, class counts", n);
    for (int c = 0; c < 10; c++) printf(" %d", hist[c]);
    printf("\n");
    for (int c = 0; c < 10; c++) assert_int_equal(hist[c], 1000);
    static const uint8_t want_t[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    assert_memory_equal(lab, want_t, 10);
    loco_free(img);
    loco_free(lab);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faces_tables),       cmocka_unit_test(test_faces_determinism),
        cmocka_unit_test(test_faces_labels),       cmocka_unit_test(test_faces_local_factors),
        cmocka_unit_test(test_part_mask),          cmocka_unit_test(test_idx_valid),
        cmocka_unit_test(test_idx_hostile),        cmocka_unit_test(test_fashion_mnist_fake),
        cmocka_unit_test(test_fashion_mnist_long_folder),
        cmocka_unit_test(test_fashion_mnist_debian),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
