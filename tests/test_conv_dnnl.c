/* test_conv_dnnl.c - the oneDNN convolutions (src/ops/conv_dnnl.c) against
 * the im2col + GEMM path (itself checked against a double-precision sum in
 * test_ops.c), forward with bias and per-image bias2 and the transposed
 * convolution accumulating into dx, on every kind of shape the models use:
 * Winograd F(4x4,3x3) (3x3 'same', channels a multiple of 16, images of at
 * least 32x32), direct 3x3 on small images and on channels not a multiple
 * of 16, stride-2 downsampling with diffusers' (0,1,0,1) padding and with
 * padding 1; batches of 1 and 3. Also: the adjoint identity
 * <u, conv(v)> = <conv^T(u), v>, an image's result independent of the batch
 * it is computed in, big images split into calls of one image, and that
 * LOCO_CONV=blas (ops_conv_dnnl = 0) turns it off, LOCO_CONV_WINO=0 its
 * Winograd; thin (conv_in, conv_out) and 1x1 convolutions stay on the BLAS
 * path. The opt-in bf16 convolutions stay within the rounding bound of
 * bf16 inputs and weights, element by element (test_bf16).
 *
 * Bound: max |dnnl - ref| <= 2e-5 * (1 + max |ref|) with inputs in
 * [-0.5, 0.5) and K = cin * 9 <= 2304 terms (Winograd F(4x4)'s transforms
 * amplify rounding more than F(2x2)'s; measured errors are printed). */
#include "testutil.h"
#include "ops.h"

#include <stdint.h>

static uint64_t g_rng = 777;
static float urand(void) { /* [-0.5, 0.5) */
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_rng >> 40) * (1.0 / 16777216.0)) - 0.5f;
}

static float *rand_buf(size_t n) {
    float *p = malloc(sizeof(float) * n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = urand();
    return p;
}


static double amax(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void check_close(const char *what, const float *got, const float *ref, size_t n) {
    const double d = max_diff(got, ref, n), r = amax(ref, n), tol = 2e-5 * (1 + r);
    printf("  %-58s max abs diff %.3e (tol %.1e, max |ref| %.3e)\n", what, d, tol, r);
    if (!(d <= tol)) fail_msg("%s: max abs diff %.3e > %.1e", what, d, tol);
}

typedef struct shape {
    const char *name;
    int cin, cout, h, w, stride, pad, B;
} shape;

/* the geometry build.c gives such a convolution: pad -1 is diffusers'
 * Downsample2D padding (0, 1, 0, 1) */
static conv_geom geom(const shape *s, int fast) {
    const int pad = s->pad < 0 ? 0 : s->pad, sum = s->pad < 0 ? 1 : 2 * s->pad;
    const int ho = (s->h + sum - 3) / s->stride + 1, wo = (s->w + sum - 3) / s->stride + 1;
    conv_geom g = {s->cin, s->cout, s->h, s->w, 3, s->stride, pad, pad, ho, wo, 0, fast};
    return g;
}

static const shape shapes[] = {
    {"3x3 32->48 at 32x32 (Winograd), batch 3", 32, 48, 32, 32, 1, 1, 3},
    {"3x3 64->32 at 40x36 (Winograd, partial tiles), batch 1", 64, 32, 40, 36, 1, 1, 1},
    {"3x3 32->32 at 16x16 (direct: small image), batch 3", 32, 32, 16, 16, 1, 1, 3},
    {"3x3 16->32 at 32x32 (Winograd, the thinnest taken), batch 2", 16, 32, 32, 32, 1, 1, 2},
    {"3x3 24->20 at 33x33 (channels not a multiple of 16)", 24, 20, 33, 33, 1, 1, 2},
    {"3x3 stride 2, pad (0,1,0,1) 32->32 at 32x32, batch 3", 32, 32, 32, 32, 2, -1, 3},
    {"3x3 stride 2, pad 1, 16->32 at 17x17, batch 2", 16, 32, 17, 17, 2, 1, 2},
};

/* forward (bias + bias2) and the VJP (accumulating) of one shape */
static void check_shape(const shape *s) {
    const conv_geom gd = geom(s, 1), gr = geom(s, 0);
    const size_t nin = (size_t)s->B * s->cin * s->h * s->w, nout = (size_t)s->B * s->cout * gd.ho * gd.wo;
    const size_t nw = (size_t)s->cout * s->cin * 9;
    float *x = rand_buf(nin), *w = rand_buf(nw), *bias = rand_buf((size_t)s->cout),
          *bias2 = rand_buf((size_t)s->B * s->cout), *dy = rand_buf(nout), *dx0 = rand_buf(nin);
    float *y = malloc(sizeof(float) * nout), *yr = malloc(sizeof(float) * nout);
    float *dx = malloc(sizeof(float) * nin), *dxr = malloc(sizeof(float) * nin);
    float *scratch = malloc(sizeof(float) * (conv2d_scratch(&gr) + 1));
    assert_true(y && yr && dx && dxr && scratch);
    char what[160];

    assert_int_equal(conv2d_dnnl_fwd(&gd, s->B, x, w, bias, bias2, y), 1);
    conv2d_fwd(&gr, s->B, x, w, bias, bias2, yr, scratch);
    snprintf(what, sizeof what, "%s: forward", s->name);
    check_close(what, y, yr, nout);
    /* without biases (J V) through the dispatcher */
    conv2d_fwd(&gd, s->B, x, w, NULL, NULL, y, scratch);
    conv2d_fwd(&gr, s->B, x, w, NULL, NULL, yr, scratch);
    snprintf(what, sizeof what, "%s: J V", s->name);
    check_close(what, y, yr, nout);

    memcpy(dx, dx0, sizeof(float) * nin);
    memcpy(dxr, dx0, sizeof(float) * nin);
    assert_int_equal(conv2d_dnnl_vjp(&gd, s->B, dy, w, dx), s->B);
    conv2d_vjp(&gr, s->B, dy, w, dxr, scratch);
    snprintf(what, sizeof what, "%s: dx += VJP", s->name);
    check_close(what, dx, dxr, nin);

    /* adjoint identity of the oneDNN pair: <dy, conv(x)> = <conv^T(dy), x> */
    conv2d_fwd(&gd, s->B, x, w, NULL, NULL, y, scratch);
    memset(dx, 0, sizeof(float) * nin);
    conv2d_vjp(&gd, s->B, dy, w, dx, scratch);
    double a = 0, b = 0, sa = 0;
    for (size_t i = 0; i < nout; i++) a += (double)dy[i] * y[i], sa += fabs((double)dy[i] * y[i]);
    for (size_t i = 0; i < nin; i++) b += (double)dx[i] * x[i];
    const double rel = fabs(a - b) / (sa + 1e-30);
    printf("  %-58s <dy, J x> %.6e, <J^T dy, x> %.6e, relative %.2e\n", "  adjoint identity", a, b, rel);
    if (!(rel <= 1e-6)) fail_msg("%s: adjoint identity off by %.2e (relative to sum |terms|)", s->name, rel);

    free(x), free(w), free(bias), free(bias2), free(dy), free(dx0), free(y), free(yr), free(dx), free(dxr), free(scratch);
}

static void test_matches_blas_path(void **state) {
    (void)state;
    ops_conv_dnnl = 1;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_shape(&shapes[i]);
}

/* image 1 of a batch of 3 equals that image alone, bit for bit (the
 * algorithm is chosen from one image's shape) */
static void test_batch_independent(void **state) {
    (void)state;
    ops_conv_dnnl = 1;
    const shape s[2] = {{"Winograd", 32, 32, 32, 32, 1, 1, 3}, {"direct", 32, 32, 16, 16, 1, 1, 3}};
    for (int k = 0; k < 2; k++) {
        const conv_geom g = geom(&s[k], 1);
        const size_t in1 = (size_t)s[k].cin * s[k].h * s[k].w, out1 = (size_t)s[k].cout * g.ho * g.wo;
        float *x = rand_buf(3 * in1), *w = rand_buf((size_t)s[k].cout * s[k].cin * 9), *y3 = malloc(sizeof(float) * 3 * out1),
              *y1 = malloc(sizeof(float) * out1);
        assert_true(y3 && y1);
        assert_int_equal(conv2d_dnnl_fwd(&g, 3, x, w, NULL, NULL, y3), 1);
        assert_int_equal(conv2d_dnnl_fwd(&g, 1, x + in1, w, NULL, NULL, y1), 1);
        const double d = max_diff(y1, y3 + out1, out1);
        printf("  %s: image 1 alone vs in a batch of 3: max abs diff %.3e (must be 0)\n", s[k].name, d);
        assert_true(d == 0);
        free(x), free(w), free(y3), free(y1);
    }
}

/* a batch of big images is computed in several calls (one image each);
 * the result is the same as image by image */
static void test_big_images_split(void **state) {
    (void)state;
    ops_conv_dnnl = 1;
    const shape s = {"16->16 at 512x512, batch 2", 16, 16, 512, 512, 1, 1, 2};
    const conv_geom gd = geom(&s, 1), gr = geom(&s, 0);
    const size_t nin = (size_t)2 * 16 * 512 * 512;
    float *x = rand_buf(nin), *w = rand_buf(16 * 16 * 9), *y = malloc(sizeof(float) * nin),
          *yr = malloc(sizeof(float) * nin), *scratch = malloc(sizeof(float) * (conv2d_scratch(&gr) + 1));
    assert_true(y && yr && scratch);
    assert_int_equal(conv2d_dnnl_fwd(&gd, 2, x, w, NULL, NULL, y), 1);
    conv2d_fwd(&gr, 2, x, w, NULL, NULL, yr, scratch);
    check_close("16->16 at 512x512, batch 2 (two calls)", y, yr, nin);
    free(x), free(w), free(y), free(yr), free(scratch);
}

/* off: the dispatcher leaves every shape to the BLAS path; 1x1 and the
 * trainer's geometries (fast = 0) never reach oneDNN */
static void test_switches(void **state) {
    (void)state;
    const shape s = {"off", 16, 16, 8, 8, 1, 1, 1};
    conv_geom g = geom(&s, 1);
    float *x = rand_buf(16 * 64), *w = rand_buf(16 * 16 * 9), *y = malloc(sizeof(float) * 16 * 64);
    ops_conv_dnnl = 0;
    assert_int_equal(conv2d_dnnl_fwd(&g, 1, x, w, NULL, NULL, y), 0);
    assert_int_equal(conv2d_dnnl_vjp(&g, 1, x, w, y), 0);
    ops_conv_dnnl = 1;
    g.fast = 0;
    assert_int_equal(conv2d_dnnl_fwd(&g, 1, x, w, NULL, NULL, y), 0);
    conv_geom k1 = {16, 16, 8, 8, 1, 1, 0, 0, 8, 8, 0, 1};
    assert_int_equal(conv2d_dnnl_fwd(&k1, 1, x, w, NULL, NULL, y), 0);
    conv_geom thin_in = {3, 16, 8, 8, 3, 1, 1, 1, 8, 8, 0, 1}, thin_out = {16, 3, 8, 8, 3, 1, 1, 1, 8, 8, 0, 1};
    assert_int_equal(conv2d_dnnl_fwd(&thin_in, 1, x, w, NULL, NULL, y), 0);
    assert_int_equal(conv2d_dnnl_vjp(&thin_out, 1, x, w, y), 0);
    g.fast = 1;
    assert_int_equal(conv2d_dnnl_fwd(&g, 1, x, w, NULL, NULL, y), 1);
    conv2d_dnnl_release();
    assert_int_equal(conv2d_dnnl_fwd(&g, 1, x, w, NULL, NULL, y), 1); /* rebuilt after a release */
    free(x), free(w), free(y);

    /* LOCO_CONV_WINO=0 (ops_conv_dnnl_wino = 0) takes effect on shapes already
     * computed with Winograd: other rounding, the same values */
    const shape ws = {"wino", 32, 32, 32, 32, 1, 1, 1};
    const conv_geom gw = geom(&ws, 1);
    const size_t n = 32 * 32 * 32;
    float *xw = rand_buf(n), *ww = rand_buf(32 * 32 * 9), *y1 = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    assert_true(y1 && y2);
    assert_int_equal(conv2d_dnnl_fwd(&gw, 1, xw, ww, NULL, NULL, y1), 1);
    ops_conv_dnnl_wino = 0;
    assert_int_equal(conv2d_dnnl_fwd(&gw, 1, xw, ww, NULL, NULL, y2), 1);
    ops_conv_dnnl_wino = 1;
    const double d = max_diff(y1, y2, n);
    const int wino = conv2d_dnnl_uses_winograd(&gw);
    printf("  Winograd %s on this CPU; vs direct on the same shape: max abs diff %.3e%s\n",
           wino ? "available" : "not available (no AVX-512)", d, wino ? " (> 0: the switch took effect)" : "");
    /* the answer of conv2d_dnnl_uses_winograd (shape and CPU probe) is what
     * the call computed: other rounding with Winograd, the same bits without */
    assert_true(d < 1e-4);
    assert_true(wino ? d > 0 : d == 0);
    free(xw), free(ww), free(y1), free(y2);

    /* the dispatch: a shape our own Winograd takes (g.wino, as build.c sets
     * it) goes to oneDNN only where oneDNN computes it by Winograd too
     * (AVX-512); elsewhere oneDNN's direct kernels were slower (AVX2) and the
     * BLAS path keeps it, unless oneDNN's Winograd is switched off (oneDNN
     * direct everywhere). Stride-2 shapes go to oneDNN either way. */
    conv_geom gb = geom(&ws, 1);
    gb.wino = conv2d_wino_ok(&gb);
    assert_true(conv2d_wino_use(&gb));
    printf("  a Winograd shape goes to %s\n", conv2d_dnnl_handles(&gb) ? "oneDNN" : "the BLAS path (F(2x2))");
    assert_int_equal(conv2d_dnnl_handles(&gb), wino);
    ops_conv_dnnl_wino = 0;
    assert_int_equal(conv2d_dnnl_handles(&gb), 1);
    ops_conv_dnnl_wino = 1;
    const shape s2 = {"down", 32, 32, 32, 32, 2, -1, 1};
    conv_geom g2 = geom(&s2, 1);
    g2.wino = conv2d_wino_ok(&g2);
    assert_false(conv2d_wino_use(&g2));
    assert_int_equal(conv2d_dnnl_handles(&g2), 1);
}

/* bf16 (ops_conv_dnnl_bf16 = 1): the input and the weights are rounded to
 * bf16 (unit roundoff u = 2^-8), products accumulate in f32. Per output
 * element, |bf16 - f32| <= ((1+u)^2 - 1 + K 2^-23) (|x| * |w|) + 1e-6, with
 * |x| * |w| the convolution of the absolute values (K = cin 9 terms): a
 * bound of the rounding, element by element, not a tolerance. */
static void check_bf16_bound(const char *what, const float *got, const float *ref, const float *absconv, size_t n,
                             int K) {
    const double u = 1.0 / 256, c = (1 + u) * (1 + u) - 1 + K * 0x1p-23;
    double worst = 0, dmax = 0; /* worst: max |diff| / bound */
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - ref[i]), b = c * absconv[i] + 1e-6;
        worst = fmax(worst, d / b);
        dmax = fmax(dmax, d);
    }
    printf("  %-58s max abs diff %.3e, max diff / bound %.3f\n", what, dmax, worst);
    if (!(worst <= 1)) fail_msg("%s: the bf16 error exceeds its bound (max diff / bound %.3f)", what, worst);
    if (!(dmax > 0)) fail_msg("%s: bf16 gave the f32 result exactly: the switch did not take effect", what);
}

static void test_bf16(void **state) {
    (void)state;
    ops_conv_dnnl = 1;
    const shape ss[] = {
        {"bf16: 3x3 32->48 at 32x32 (a Winograd shape: direct in bf16), batch 2", 32, 48, 32, 32, 1, 1, 2},
        {"bf16: 3x3 64->32 at 12x12, batch 1", 64, 32, 12, 12, 1, 1, 1},
        {"bf16: 3x3 stride 2, pad (0,1,0,1) 32->32 at 16x16", 32, 32, 16, 16, 2, -1, 1},
    };
    for (size_t k = 0; k < sizeof ss / sizeof ss[0]; k++) {
        const shape *s = &ss[k];
        const conv_geom gd = geom(s, 1), gr = geom(s, 0);
        const size_t nin = (size_t)s->B * s->cin * s->h * s->w, nout = (size_t)s->B * s->cout * gd.ho * gd.wo;
        const size_t nw = (size_t)s->cout * s->cin * 9;
        float *x = rand_buf(nin), *w = rand_buf(nw), *dy = rand_buf(nout), *y = malloc(sizeof(float) * nout),
              *yr = malloc(sizeof(float) * nout), *ya = malloc(sizeof(float) * nout), *dx = calloc(nin, sizeof(float)),
              *dxr = calloc(nin, sizeof(float)), *dxa = calloc(nin, sizeof(float)), *xa = malloc(sizeof(float) * nin),
              *wa = malloc(sizeof(float) * nw), *dya = malloc(sizeof(float) * nout),
              *scratch = malloc(sizeof(float) * (conv2d_scratch(&gr) + 1));
        assert_true(y && yr && ya && dx && dxr && dxa && xa && wa && dya && scratch);
        for (size_t i = 0; i < nin; i++) xa[i] = fabsf(x[i]);
        for (size_t i = 0; i < nw; i++) wa[i] = fabsf(w[i]);
        for (size_t i = 0; i < nout; i++) dya[i] = fabsf(dy[i]);
        conv2d_fwd(&gr, s->B, x, w, NULL, NULL, yr, scratch);
        conv2d_fwd(&gr, s->B, xa, wa, NULL, NULL, ya, scratch);
        conv2d_vjp(&gr, s->B, dy, w, dxr, scratch);
        conv2d_vjp(&gr, s->B, dya, wa, dxa, scratch);
        ops_conv_dnnl_bf16 = 1;
        const int fwd = conv2d_dnnl_fwd(&gd, s->B, x, w, NULL, NULL, y), vjp = conv2d_dnnl_vjp(&gd, s->B, dy, w, dx);
        ops_conv_dnnl_bf16 = 0;
        if (!fwd || vjp != s->B) {
            printf("  %s: oneDNN has no bf16 convolution on this CPU (the f32 path computes it)\n", s->name);
        } else {
            char what[160];
            snprintf(what, sizeof what, "%s: forward", s->name);
            check_bf16_bound(what, y, yr, ya, nout, s->cin * 9);
            snprintf(what, sizeof what, "%s: dx += VJP", s->name);
            check_bf16_bound(what, dx, dxr, dxa, nin, s->cout * 9);
        }
        free(x), free(w), free(dy), free(y), free(yr), free(ya), free(dx), free(dxr), free(dxa), free(xa), free(wa);
        free(dya), free(scratch);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_blas_path),
        cmocka_unit_test(test_batch_independent),
        cmocka_unit_test(test_big_images_split),
        cmocka_unit_test(test_switches),
        cmocka_unit_test(test_bf16),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    conv2d_dnnl_release();
    return r;
}
