/* test_ops.c - the Winograd F(2x2,3x3) convolution path of conv2d_fwd against
 * a direct sum in double precision and against the im2col path, on sizes that
 * exercise partial tiles (odd heights and widths, 1x1 and 2x3 images), bands
 * of tile rows, batches with per-image biases, and the eligibility rules.
 * Then ADM's ops: 2x2 average pooling against a naive loop and its adjoint;
 * FiLM's J V against finite differences, J V and V J P by the adjoint
 * identity, the training backward against the V J P and, for the scale and
 * shift gradients, finite differences; and the timestep embedding against
 * guided-diffusion's float32 computation. */
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
    conv_geom g = {ci, co, H, W, 3, 1, 1, 1, H, W, 0, 0};
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
    conv_geom g = {ci, co, H, W, 3, 1, 1, 1, H, W, 1, 0};
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
    conv_geom g = {16, 16, 8, 8, 3, 1, 1, 1, 8, 8, 0, 0};
    assert_true(conv2d_wino_ok(&g));
    conv_geom s2 = {16, 16, 8, 8, 3, 2, 0, 0, 4, 4, 0, 0};
    assert_false(conv2d_wino_ok(&s2));
    conv_geom k1 = {16, 16, 8, 8, 1, 1, 0, 0, 8, 8, 0, 0};
    assert_false(conv2d_wino_ok(&k1));
    conv_geom thin = {3, 16, 8, 8, 3, 1, 1, 1, 8, 8, 0, 0};
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
    conv_geom big = {16, 16, 16, 16, 3, 1, 1, 1, 16, 16, 1, 0};
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
    /* both tile kernels: OpenBLAS (the default) and oneDNN (LOCO_GEMM=dnnl) */
    for (int kern = 0; kern < 2; kern++)
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
                ops_gemm_dnnl = kern;
                for (int th = 1; th <= 3; th++) {
                    assert_non_null(C[th - 1]);
                    for (size_t i = 0; i < (size_t)M * N; i++) C[th - 1][i] = 0.25f; /* beta = 0.5 keeps it */
                    loco_set_threads(th);
                    gemm_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.5f, C[th - 1], N);
                }
                for (int th = 2; th <= 3; th++)
                    if (memcmp(C[0], C[th - 1], sizeof(float) * (size_t)M * N) != 0)
                        fail_msg("gemm (%s) %dx%dx%d ta=%d tb=%d: %d threads differ from 1", kern ? "oneDNN" : "OpenBLAS",
                                 M, N, K, ta, tb, th);
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
                if (worst > 1e-4)
                    fail_msg("gemm (%s) %dx%dx%d ta=%d tb=%d: max diff %.3g vs double", kern ? "oneDNN" : "OpenBLAS", M, N,
                             K, ta, tb, worst);
                free(A);
                free(B);
                for (int i = 0; i < 3; i++) free(C[i]);
            }
    ops_gemm_dnnl = 0;
    loco_set_threads(saved);
}

/* ======================================================================== */
/* ADM ops: average pooling, FiLM, timestep embedding                       */
/* ======================================================================== */

static float *rand_buf(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = scale * urand();
    return p;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double dot_abs(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    return s;
}

/* <u, J v> = <J^T u, v> to rel_tol of sum |u J v| */
static void check_adjoint(const char *what, const float *u, const float *jv, size_t nu, const float *jtu,
                          const float *v, size_t nv, double rel_tol) {
    double a = dot(u, jv, nu), b = dot(jtu, v, nv), na = dot_abs(u, jv, nu);
    double rel = fabs(a - b) / (na > 0 ? na : 1);
    printf("  %-40s <u, Jv> %.9e  <J^T u, v> %.9e  rel %.2e (tol %.1e)\n", what, a, b, rel, rel_tol);
    if (!(rel <= rel_tol)) fail_msg("%s: adjoint identity %.9e vs %.9e, rel %.2e > %.1e", what, a, b, rel, rel_tol);
}

/* avgpool2x2_fwd against a naive loop (the same float sums in the same
 * order: equal bit for bit) and a double sum; avgpool2x2_vjp against a
 * naive scatter and by the adjoint identity. */
static void test_avgpool2x2(void **state) {
    (void)state;
    const int B = 3, C = 5, h = 6, w = 10, ho = h / 2, wo = w / 2;
    const size_t nx = (size_t)B * C * h * w, ny = (size_t)B * C * ho * wo;
    float *x = rand_buf(nx, 4), *y = rand_buf(ny, 1), *yn = rand_buf(ny, 1), *yd = rand_buf(ny, 1);
    float *u = rand_buf(ny, 1), *dx = rand_buf(nx, 1), *dxn = malloc(nx * sizeof(float));
    float *v0 = calloc(nx, sizeof(float));
    assert_true(dxn && v0);
    avgpool2x2_fwd(B, C, h, w, x, y);
    for (int bc = 0; bc < B * C; bc++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                const float *p = x + ((size_t)bc * h + 2 * i) * w + 2 * j;
                float s = 0.0f;
                s += p[0];
                s += p[1];
                s += p[w];
                s += p[w + 1];
                yn[((size_t)bc * ho + i) * wo + j] = s / 4;
                yd[((size_t)bc * ho + i) * wo + j] = (float)(((double)p[0] + p[1] + p[w] + p[w + 1]) / 4);
            }
    CHECK_CLOSE("avgpool2x2_fwd vs naive loop", y, yn, ny, 0.0);
    CHECK_CLOSE("avgpool2x2_fwd vs double sum", y, yd, ny, 1e-6);
    /* the VJP accumulates: start from a non-zero dx */
    memcpy(dxn, dx, nx * sizeof(float));
    avgpool2x2_vjp(B, C, h, w, u, dx);
    for (int bc = 0; bc < B * C; bc++)
        for (int iy = 0; iy < h; iy++)
            for (int ix = 0; ix < w; ix++)
                dxn[((size_t)bc * h + iy) * w + ix] += u[((size_t)bc * ho + iy / 2) * wo + ix / 2] / 4;
    CHECK_CLOSE("avgpool2x2_vjp vs naive scatter", dx, dxn, nx, 0.0);
    avgpool2x2_vjp(B, C, h, w, u, v0); /* J^T u alone */
    check_adjoint("avgpool2x2 adjoint", u, y, ny, v0, x, nx, 1e-6);
    free(x), free(y), free(yn), free(yd), free(u), free(dx), free(dxn), free(v0);
}

/* FiLM, with and without SiLU: J V against central differences of film_fwd,
 * the adjoint identity for J V / V J P over B tangents, film_fwd with silu
 * equal to film_fwd without followed by silu_fwd (and in place equal to out
 * of place), and the training backward: dx equal to film_vjp image by image,
 * dss against central differences of <dy, film_fwd(x, ss)>. */
static void check_film(int silu) {
    const int B = 3, C = 6, hw = 300; /* more than one run of 256 pixels */
    const size_t n = (size_t)C * hw, nb = (size_t)B * n, nss = (size_t)B * 2 * C;
    float *x = rand_buf(nb, 6), *ss = rand_buf(nss, 1.5f), *dx = rand_buf(nb, 1), *u = rand_buf(nb, 1);
    float *jv = malloc(nb * sizeof(float)), *fd = malloc(nb * sizeof(float)), *yp = malloc(n * sizeof(float));
    float *ym = malloc(n * sizeof(float)), *xp = malloc(n * sizeof(float)), *jtu = calloc(nb, sizeof(float));
    assert_true(jv && fd && yp && ym && xp && jtu);
    char what[120];
    /* linearised at image 0: x[0], ss[0] */
    film_jvp(B, C, hw, x, ss, silu, dx, jv);
    const float hstep = 1e-2f;
    for (int b = 0; b < B; b++) {
        for (size_t i = 0; i < n; i++) xp[i] = x[i] + hstep * dx[(size_t)b * n + i];
        film_fwd(1, C, hw, xp, ss, silu, yp);
        for (size_t i = 0; i < n; i++) xp[i] = x[i] - hstep * dx[(size_t)b * n + i];
        film_fwd(1, C, hw, xp, ss, silu, ym);
        for (size_t i = 0; i < n; i++) fd[(size_t)b * n + i] = (float)(((double)yp[i] - ym[i]) / (2.0 * hstep));
    }
    /* |J dx| up to ~1; float rounding of y (|y| up to ~6) over 2h: ~3e-5,
     * the third-order term h^2 |f'''| / 6: ~1e-5 */
    snprintf(what, sizeof what, "film_jvp silu=%d vs central differences", silu);
    CHECK_CLOSE(what, jv, fd, nb, 3e-4);
    film_vjp(B, C, hw, x, ss, silu, u, jtu);
    snprintf(what, sizeof what, "film silu=%d adjoint", silu);
    check_adjoint(what, u, jv, nb, jtu, dx, nb, 1e-6);

    /* with silu: the plain one, then silu_fwd; and in place */
    float *y0 = malloc(nb * sizeof(float)), *y1 = malloc(nb * sizeof(float)), *y2 = malloc(nb * sizeof(float));
    assert_true(y0 && y1 && y2);
    film_fwd(B, C, hw, x, ss, silu, y1);
    memcpy(y2, x, nb * sizeof(float));
    film_fwd(B, C, hw, y2, ss, silu, y2);
    snprintf(what, sizeof what, "film_fwd silu=%d in place vs not", silu);
    CHECK_CLOSE(what, y2, y1, nb, 0.0);
    if (silu) {
        film_fwd(B, C, hw, x, ss, 0, y0);
        silu_fwd(nb, y0, y0);
        CHECK_CLOSE("film_fwd silu=1 vs film_fwd + silu_fwd", y1, y0, nb, 0.0);
        /* J V: without SiLU, then silu_jvp at the pre-activation */
        film_fwd(1, C, hw, x, ss, 0, y0);
        film_jvp(B, C, hw, x, ss, 0, dx, y2);
        silu_jvp(B, n, y0, y2, y1);
        CHECK_CLOSE("film_jvp silu=1 vs film_jvp + silu_jvp", jv, y1, nb, 0.0);
    }

    /* training backward with per-image records: dx against film_vjp image
     * by image (the same arithmetic), both accumulating onto dx */
    float *dxb = rand_buf(nb, 1), *dxv = malloc(nb * sizeof(float)), *dss = rand_buf(nss, 1);
    float *dss0 = malloc(nss * sizeof(float)), *fdss = malloc(nss * sizeof(float));
    assert_true(dxv && dss0 && fdss);
    memcpy(dxv, dxb, nb * sizeof(float));
    memcpy(dss0, dss, nss * sizeof(float));
    film_bwd(B, C, hw, x, ss, silu, u, dxb, dss);
    for (int b = 0; b < B; b++)
        film_vjp(1, C, hw, x + (size_t)b * n, ss + (size_t)b * 2 * C, silu, u + (size_t)b * n, dxv + (size_t)b * n);
    snprintf(what, sizeof what, "film_bwd silu=%d dx vs film_vjp", silu);
    CHECK_CLOSE(what, dxb, dxv, nb, 0.0);
    /* dss: d/d ss[k] of L = <u, film_fwd(x, ss)> by central differences */
    float *ssp = malloc(nss * sizeof(float)), *yy = malloc(nb * sizeof(float));
    assert_true(ssp && yy);
    for (size_t k = 0; k < nss; k++) {
        double L[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            memcpy(ssp, ss, nss * sizeof(float));
            ssp[k] += sgn ? -hstep : hstep;
            film_fwd(B, C, hw, x, ssp, silu, yy);
            L[sgn] = dot(u, yy, nb);
        }
        fdss[k] = (float)((L[0] - L[1]) / (2.0 * hstep));
        dss[k] -= dss0[k]; /* what film_bwd added */
    }
    /* sums over 300 pixels, |dss| up to ~20: rounding of y over 2h ~1e-3 */
    snprintf(what, sizeof what, "film_bwd silu=%d dss vs central diff.", silu);
    CHECK_CLOSE(what, dss, fdss, nss, 2e-3);
    /* NULL gradients are skipped */
    memcpy(dxv, dxb, nb * sizeof(float));
    film_bwd(B, C, hw, x, ss, silu, u, NULL, NULL);
    film_bwd(B, C, hw, x, ss, silu, u, NULL, dss0);
    if (memcmp(dxv, dxb, nb * sizeof(float))) fail_msg("film_bwd with dx NULL changed dx");
    free(x), free(ss), free(dx), free(u), free(jv), free(fd), free(yp), free(ym), free(xp), free(jtu);
    free(y0), free(y1), free(y2), free(dxb), free(dxv), free(dss), free(dss0), free(fdss), free(ssp), free(yy);
}

static void test_film(void **state) {
    (void)state;
    check_film(0);
    check_film(1);
}

/* guided-diffusion's timestep_embedding (diffusers' with flip_sin_to_cos=1,
 * freq_shift=0) in float32 as torch computes it:
 *   freqs = exp(-ln(10000) * arange(half, float32) / half), args = t * freqs,
 *   emb = cat(cos(args), sin(args)),
 * each float32 operation rounded once (exp, cos and sin evaluated in double,
 * then rounded). Frequencies computed in double instead would be 1.9e-5 away
 * at t = 696.27; one frequency one ulp off moves the embedding by up to
 * 5.6e-5 there. */
static void test_timestep_embedding_f32(void **state) {
    (void)state;
    const float t[3] = {696.27271f, 999.0f, 1.0f};
    enum { dim = 128, half = dim / 2 };
    float y[3 * dim], ref[3 * dim];
    timestep_embedding_fwd(3, dim, 1, 0.0f, t, y);
    for (int b = 0; b < 3; b++)
        for (int i = 0; i < half; i++) {
            float e = (float)(-log(10000.0)) * (float)i; /* a python float times a float32 tensor */
            e = e / (float)half;
            float f = (float)exp((double)e), arg = t[b] * f;
            ref[b * dim + i] = (float)cos((double)arg);
            ref[b * dim + half + i] = (float)sin((double)arg);
        }
    CHECK_CLOSE("timestep embedding vs float32 reference", y, ref, 3 * (size_t)dim, 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_expf_total),
        cmocka_unit_test(test_gemm_thread_invariant),
        cmocka_unit_test(test_winograd_matches_direct),
        cmocka_unit_test(test_winograd_vjp),
        cmocka_unit_test(test_winograd_eligibility),
        cmocka_unit_test(test_avgpool2x2),
        cmocka_unit_test(test_film),
        cmocka_unit_test(test_timestep_embedding_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
