/* test_ops.c - the Winograd F(2x2,3x3) convolution path of conv2d_fwd against
 * a direct sum in double precision and against the im2col path, on sizes that
 * exercise partial tiles (odd heights and widths, 1x1 and 2x3 images), bands
 * of tile rows, batches with per-image biases, and the eligibility rules. */
#include "testutil.h"
#include "ops.h"
#include "ops_math.h"

#include <omp.h>

#include <stdint.h>

static uint64_t g_rng = 12345;
static float urand(void) { /* [-0.5, 0.5) */
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_rng >> 40) * (1.0 / 16777216.0)) - 0.5f;
}

/* y = conv(x, w) + bias + bias2[b], 3x3, stride 1, pad 1, in double. */
static void conv_ref(int B, int ci, int co, int H, int W, const float *x, const float *w, const float *bias,
                     const float *bias2, double *y) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < co; o++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++) {
                    double s = bias[o] + bias2[(size_t)b * co + o];
                    for (int i = 0; i < ci; i++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = yy + ky - 1, ix = xx + kx - 1;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += (double)w[(((size_t)o * ci + i) * 3 + ky) * 3 + kx] *
                                     x[(((size_t)b * ci + i) * H + iy) * W + ix];
                            }
                    y[(((size_t)b * co + o) * H + yy) * W + xx] = s;
                }
}

static void check_geometry(int B, int ci, int co, int H, int W) {
    conv_geom g = {ci, co, H, W, 3, 1, 1, 1, H, W, 0};
    assert_true(conv2d_wino_ok(&g));
    const size_t nx = (size_t)B * ci * H * W, ny = (size_t)B * co * H * W, nw = (size_t)co * ci * 9;
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float)), *bias = malloc((size_t)co * sizeof(float));
    float *bias2 = malloc((size_t)B * co * sizeof(float)), *yw = malloc(ny * sizeof(float));
    float *yi = malloc(ny * sizeof(float)), *yr = malloc(ny * sizeof(float));
    float *sc = malloc((conv2d_scratch(&g) + 1) * sizeof(float));
    double *ref = malloc(ny * sizeof(double));
    assert_true(x && w && bias && bias2 && yw && yi && yr && sc && ref);
    for (size_t i = 0; i < nx; i++) x[i] = 2 * urand();
    for (size_t i = 0; i < nw; i++) w[i] = urand() / (float)(ci * 3);
    for (int i = 0; i < co; i++) bias[i] = urand();
    for (int i = 0; i < B * co; i++) bias2[i] = urand();
    conv_ref(B, ci, co, H, W, x, w, bias, bias2, ref);
    for (size_t i = 0; i < ny; i++) yr[i] = (float)ref[i];
    g.wino = 1;
    conv2d_fwd(&g, B, x, w, bias, bias2, yw, sc);
    g.wino = 0;
    conv2d_fwd(&g, B, x, w, bias, bias2, yi, sc);
    char what[120];
    /* float32 rounding of a sum of 9*ci terms of size <= 1/(3 ci): a few 1e-7
     * for im2col, Winograd's transforms add a few times that */
    snprintf(what, sizeof what, "B%d %dx%d %d->%d winograd vs direct", B, H, W, ci, co);
    CHECK_CLOSE(what, yw, yr, ny, 1e-5);
    snprintf(what, sizeof what, "B%d %dx%d %d->%d im2col vs direct", B, H, W, ci, co);
    CHECK_CLOSE(what, yi, yr, ny, 1e-5);
    /* the two paths round differently: identical outputs would mean the
     * Winograd path was not taken */
    size_t differ = 0;
    for (size_t i = 0; i < ny; i++) differ += yw[i] != yi[i];
    printf("  %zu of %zu outputs differ between the paths\n", differ, ny);
    if (!differ) fail_msg("Winograd and im2col outputs are identical: Winograd path not taken?");
    /* each image's result does not depend on the batch, bit for bit */
    if (B > 1) { /* yi is free now */
        g.wino = 1;
        const size_t ix = (size_t)ci * H * W, iy = (size_t)co * H * W;
        for (int b = 0; b < B; b++) {
            conv2d_fwd(&g, 1, x + b * ix, w, bias, bias2 + (size_t)b * co, yi, sc);
            if (memcmp(yi, yw + b * iy, iy * sizeof(float)))
                fail_msg("image %d of a batch of %d differs from the image alone", b, B);
        }
        printf("  batch of %d: each image equals the image alone, bit for bit\n", B);
    }
    free(x), free(w), free(bias), free(bias2), free(yw), free(yi), free(yr), free(sc), free(ref);
}

static void test_winograd_matches_direct(void **state) {
    (void)state;
    check_geometry(1, 16, 16, 16, 16); /* 256 pixels: the smallest that takes the Winograd path */
    check_geometry(1, 16, 24, 17, 19); /* odd height and width: partial tiles */
    check_geometry(3, 20, 16, 17, 16); /* batch with per-image biases */
    check_geometry(2, 32, 16, 15, 32);
    size_t keep = ops_wino_band_floats;
    ops_wino_band_floats = 16 * 40 * 33 * 3; /* bands of 3 tile rows: 12 bands */
    check_geometry(1, 24, 16, 70, 66);
    check_geometry(2, 16, 16, 21, 66); /* 11 tile rows: the last band is partial */
    ops_wino_band_floats = 1;          /* one tile row per band */
    check_geometry(1, 16, 16, 24, 24);
    check_geometry(3, 16, 16, 19, 17);
    ops_wino_band_floats = keep;
}

/* conv2d_vjp by Winograd (the transposed, rotated kernels) against the
 * im2col/col2im path, which accumulates into dx the same way; and the
 * adjoint identity <u, conv(v)> = <conv_vjp(u), v> with both Winograd. */
static void check_vjp(int B, int ci, int co, int H, int W) {
    conv_geom g = {ci, co, H, W, 3, 1, 1, 1, H, W, 1};
    assert_true(conv2d_wino_use(&g));
    const size_t nx = (size_t)B * ci * H * W, ny = (size_t)B * co * H * W, nw = (size_t)co * ci * 9;
    float *v = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float)), *u = malloc(ny * sizeof(float));
    float *jv = malloc(ny * sizeof(float)), *dxw = malloc(nx * sizeof(float)), *dxi = malloc(nx * sizeof(float));
    float *sc = malloc(conv2d_scratch(&g) * sizeof(float));
    assert_true(v && w && u && jv && dxw && dxi && sc);
    for (size_t i = 0; i < nx; i++) v[i] = urand();
    for (size_t i = 0; i < ny; i++) u[i] = urand();
    for (size_t i = 0; i < nw; i++) w[i] = urand() / (float)(ci * 3);
    for (size_t i = 0; i < nx; i++) dxw[i] = dxi[i] = 0.25f; /* both accumulate onto this */
    conv2d_vjp(&g, B, u, w, dxw, sc);
    g.wino = 0;
    conv2d_vjp(&g, B, u, w, dxi, sc);
    char what[120];
    snprintf(what, sizeof what, "vjp B%d %dx%d %d->%d winograd vs im2col", B, H, W, ci, co);
    CHECK_CLOSE(what, dxw, dxi, nx, 1e-5);
    size_t differ = 0;
    for (size_t i = 0; i < nx; i++) differ += dxw[i] != dxi[i];
    if (!differ) fail_msg("Winograd and im2col VJPs are identical: Winograd path not taken?");
    g.wino = 1;
    conv2d_fwd(&g, B, v, w, NULL, NULL, jv, sc);
    double a = 0, b = 0, na = 0;
    for (size_t i = 0; i < ny; i++) a += (double)u[i] * jv[i], na += fabs((double)u[i] * jv[i]);
    for (size_t i = 0; i < nx; i++) b += (double)(dxw[i] - 0.25f) * v[i];
    printf("  adjoint <u, Jv> %.9e  <J^T u, v> %.9e  rel %.2e\n", a, b, fabs(a - b) / na);
    if (!(fabs(a - b) <= 1e-5 * na)) fail_msg("adjoint identity: %.9e vs %.9e", a, b);
    free(v), free(w), free(u), free(jv), free(dxw), free(dxi), free(sc);
}

static void test_winograd_vjp(void **state) {
    (void)state;
    check_vjp(1, 16, 32, 16, 16);
    check_vjp(2, 40, 16, 23, 12);
    check_vjp(1, 32, 16, 31, 20);
}

/* Below the size threshold or without the flag, conv2d_fwd is the im2col
 * path bit for bit; and the eligibility rules. */
static void test_winograd_eligibility(void **state) {
    (void)state;
    conv_geom g = {16, 16, 8, 8, 3, 1, 1, 1, 8, 8, 0};
    assert_true(conv2d_wino_ok(&g));
    conv_geom s2 = {16, 16, 8, 8, 3, 2, 0, 0, 4, 4, 0};
    assert_false(conv2d_wino_ok(&s2));
    conv_geom k1 = {16, 16, 8, 8, 1, 1, 0, 0, 8, 8, 0};
    assert_false(conv2d_wino_ok(&k1));
    conv_geom thin = {3, 16, 8, 8, 3, 1, 1, 1, 8, 8, 0};
    assert_false(conv2d_wino_ok(&thin));
    /* 8x8 is 64 pixels: im2col even with the flag set */
    const size_t nx = 16 * 64, nw = 16 * 16 * 9;
    float x[16 * 64], w[16 * 16 * 9], y0[16 * 64], y1[16 * 64];
    float *sc = malloc(conv2d_scratch(&g) * sizeof(float));
    assert_non_null(sc);
    for (size_t i = 0; i < nx; i++) x[i] = urand();
    for (size_t i = 0; i < nw; i++) w[i] = urand();
    g.wino = 0;
    conv2d_fwd(&g, 1, x, w, NULL, NULL, y0, sc);
    g.wino = 1;
    conv2d_fwd(&g, 1, x, w, NULL, NULL, y1, sc);
    assert_memory_equal(y0, y1, sizeof y0);
    assert_false(conv2d_wino_use(&g)); /* the flag is set but 64 < 256 pixels */
    conv_geom big = {16, 16, 16, 16, 3, 1, 1, 1, 16, 16, 1};
    assert_true(conv2d_wino_use(&big));
    big.wino = 0;
    assert_false(conv2d_wino_use(&big));
    free(sc);
}

/* fast_expf is total: special values map as documented (UBSan would flag
 * the old NaN path: a left shift of a negative value), and finite inputs
 * agree with expf to a few ulp across the range. */
static void test_fast_expf_total(void **state) {
    (void)state;
    const float inf = INFINITY;
    assert_true(isnan(fast_expf(NAN)));
    assert_true(isnan(fast_expf(-NAN)));
    assert_true(fast_expf(inf) == inf);
    assert_true(fast_expf(1e30f) == inf);
    assert_true(fast_expf(3.4e38f) == inf);
    assert_true(fast_expf(89.0f) == inf);
    assert_true(fast_expf(-inf) == 0.0f);
    assert_true(fast_expf(-1e30f) == 0.0f);
    assert_true(fast_expf(-88.0f) == 0.0f);
    assert_true(fast_expf(0.0f) == 1.0f);
    /* silu of huge values: finite where the true value is */
    assert_true(silu1(1e30f) == 1e30f);
    assert_true(silu1(-1e30f) == 0.0f || silu1(-1e30f) == -0.0f);
    double worst = 0;
    for (int i = 0; i <= 200000; i++) {
        float x = -87.0f + 175.5f * (float)i / 200000.0f;
        double ref = exp((double)x), rel = fabs((double)fast_expf(x) - ref) / ref;
        if (rel > worst) worst = rel;
    }
    if (worst > 4e-7) fail_msg("fast_expf: worst relative error %.3g over [-87, 88.5] (bound 4e-7)", worst);
}

/* gemm_f32 gives the same bits with 1, 2 and 3 threads (its tiles depend on
 * the shape alone), for every transpose and for shapes split by columns, by
 * rows and not at all, and agrees with a double-precision product. */
static void test_gemm_thread_invariant(void **state) {
    (void)state;
    const int shapes[][3] = {{128, 1024, 1152}, {256, 64, 2304}, {64, 64, 64}, {3, 1024, 576}, {37, 515, 300}};
    const int saved = loco_get_threads();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
                float *C[3];
                for (int i = 0; i < 3; i++) C[i] = malloc(sizeof(float) * (size_t)M * N);
                assert_non_null(A);
                assert_non_null(B);
                for (size_t i = 0; i < (size_t)M * K; i++) A[i] = urand();
                for (size_t i = 0; i < (size_t)K * N; i++) B[i] = urand();
                const int lda = ta ? M : K, ldb = tb ? K : N;
                for (int th = 1; th <= 3; th++) {
                    assert_non_null(C[th - 1]);
                    for (size_t i = 0; i < (size_t)M * N; i++) C[th - 1][i] = 0.25f; /* beta = 0.5 keeps it */
                    loco_set_threads(th);
                    gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.5f, C[th - 1], N);
                }
                for (int th = 2; th <= 3; th++)
                    if (memcmp(C[0], C[th - 1], sizeof(float) * (size_t)M * N) != 0)
                        fail_msg("gemm %dx%dx%d ta=%d tb=%d: %d threads differ from 1", M, N, K, ta, tb, th);
                double worst = 0;
                for (int i = 0; i < M; i += 7)
                    for (int j = 0; j < N; j += 5) {
                        double r = 0.125;
                        for (int k = 0; k < K; k++)
                            r += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                                 (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                        double d = fabs(r - C[0][(size_t)i * N + j]);
                        if (d > worst) worst = d;
                    }
                if (worst > 1e-4) fail_msg("gemm %dx%dx%d ta=%d tb=%d: max diff %.3g vs double", M, N, K, ta, tb, worst);
                free(A);
                free(B);
                for (int i = 0; i < 3; i++) free(C[i]);
            }
    loco_set_threads(saved);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_expf_total),
        cmocka_unit_test(test_gemm_thread_invariant),
        cmocka_unit_test(test_winograd_matches_direct),
        cmocka_unit_test(test_winograd_vjp),
        cmocka_unit_test(test_winograd_eligibility),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
