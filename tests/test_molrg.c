/* test_molrg.c - the MoLRG closed-form model: Jacobian products against
 * finite differences and the adjoint identity, the numerical rank of the
 * posterior-mean Jacobian against theory, and recovery of the true subspace
 * by the same subspace iteration LOCO Edit uses. */
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "linalg.h"

static char g_path[] = "/tmp/loco_molrgXXXXXX";
static char g_file[600];

enum { C = 3, H = 8, W = 8, N = C * H * W, K = 2, D = 16 };

static int setup(void **s) {
    (void)s;
    if (!mkdtemp(g_path)) return -1;
    snprintf(g_file, sizeof g_file, "%s/m.safetensors", g_path);
    return loco_molrg_init(g_file, C, H, W, K, D, 0.0f, 5) == LOCO_OK ? 0 : -1;
}

static int teardown(void **s) {
    (void)s;
    remove(g_file);
    return rmdir(g_path);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void randn(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = (s >> 11) / 9007199254740992.0;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

/* x_t drawn from component 0: sqrt(a) U_0 z + sqrt(1-a) eps */
static void sample_xt(const float *U, float abar, uint64_t seed, float *x) {
    float z[D], e[N];
    randn(z, D, seed);
    randn(e, N, seed + 1000);
    for (int i = 0; i < N; i++) {
        double v = 0;
        for (int j = 0; j < D; j++) v += (double)U[(size_t)j * N + i] * z[j];
        x[i] = (float)(sqrtf(abar) * v + sqrtf(1 - abar) * e[i]);
    }
}

static void test_products(void **s) {
    (void)s;
    loco_model *m;
    CHECK_OK(loco_model_open(g_file, &m));
    float *U = load_tensor(g_file, "U", NULL);
    float x[N], v[N], u[N], Jv[N], uJ[N], xp[N], xm[N], ep[N], em[N], fd[N];
    const float ts[3] = {50, 300, 800};
    for (int ti = 0; ti < 3; ti++) {
        float t = ts[ti], ab = loco_model_abar(m, t);
        sample_xt(U, ab, 10 + ti, x);
        loco_lin *L;
        CHECK_OK(loco_linearize(m, x, t, &L));
        randn(v, N, 20 + ti);
        randn(u, N, 30 + ti);
        for (int of = 0; of < 2; of++) {
            CHECK_OK(loco_lin_jvp(L, (loco_output)of, NULL, 1, v, Jv));
            CHECK_OK(loco_lin_vjp(L, (loco_output)of, NULL, 1, u, uJ));
            double lhs = dot(u, Jv, N), rhs = dot(uJ, v, N), sc = sqrt(dot(u, u, N) * dot(Jv, Jv, N));
            printf("  t=%5.0f %-3s <u,Jv> %.6e <J^T u,v> %.6e  err/(|u||Jv|) %.1e\n", t, of ? "x0" : "eps", lhs, rhs,
                   fabs(lhs - rhs) / sc);
            /* J_eps = (I - sqrt(a) J_x0) / sqrt(1-a) cancels where J_x0 is a
             * near-projector and a ~ 1: float32 error grows as 1/sqrt(1-a) */
            double tol = 1e-6;
            if (!(fabs(lhs - rhs) / sc < tol)) fail_msg("adjoint identity fails at t=%g", t);
        }
        /* finite differences of eps */
        CHECK_OK(loco_lin_jvp(L, LOCO_OUT_EPS, NULL, 1, v, Jv));
        const float h = 1e-2f;
        for (int i = 0; i < N; i++) {
            xp[i] = x[i] + h * v[i];
            xm[i] = x[i] - h * v[i];
        }
        CHECK_OK(loco_model_eps(m, 1, xp, &t, ep));
        CHECK_OK(loco_model_eps(m, 1, xm, &t, em));
        for (int i = 0; i < N; i++) fd[i] = (ep[i] - em[i]) / (2 * h);
        char what[64];
        snprintf(what, sizeof what, "  J v vs central FD (t=%.0f)", t);
        CHECK_CLOSE(what, Jv, fd, N, 2e-3 * max_abs(fd, N));
        loco_lin_free(L);
    }
    loco_free(U);
    loco_model_free(m);
}

/* numerical rank of the full x0_hat Jacobian: singular values above 1e-3
 * of the largest (exact spectrum) */
static int numerical_rank(loco_model *m, const float *x, float t, double *ratio_out) {
    loco_lin *L;
    CHECK_OK(loco_linearize(m, x, t, &L));
    loco_spectrum sp;
    CHECK_OK(loco_jacobian_spectrum(L, LOCO_OUT_X0, 4096, 0, 0, 0, &sp));
    assert_int_equal(sp.exact, 1);
    assert_int_equal(sp.n_values, N);
    loco_lin_free(L);
    int r = 0;
    for (int i = 0; i < N; i++) r += sp.sv[i] > 1e-3 * sp.sv[0];
    if (ratio_out) *ratio_out = (double)r / N;
    loco_spectrum_free(&sp);
    return r;
}

static void test_randomized_spectrum(void **s) {
    (void)s;
    loco_model *m;
    CHECK_OK(loco_model_open(g_file, &m));
    float *U = load_tensor(g_file, "U", NULL);
    float x[N];
    const float ts[2] = {250, 700};
    for (int ti = 0; ti < 2; ti++) {
        sample_xt(U, loco_model_abar(m, ts[ti]), 123 + ti, x);
        loco_lin *L;
        CHECK_OK(loco_linearize(m, x, ts[ti], &L));
        loco_spectrum ex, ra;
        CHECK_OK(loco_jacobian_spectrum(L, LOCO_OUT_X0, 4096, 0, 0, 0, &ex));
        CHECK_OK(loco_jacobian_spectrum(L, LOCO_OUT_X0, 0, 40, 2, 9, &ra));
        assert_int_equal(ra.exact, 0);
        double worst_lo = 0, worst_hi = 0;
        for (int i = 0; i < 40; i++) {
            worst_lo = fmax(worst_lo, ra.sv[i] - ex.sv[i]);              /* estimate above truth? */
            worst_hi = fmax(worst_hi, ex.sv[i] - ra.sv[i] - ra.err_bound); /* truth beyond the bound? */
        }
        printf("  t=%.0f: randomised top-40 (2 power iterations, %d+%d products): sigma_1 %.6f vs exact %.6f; "
               "bound %.2e; max(est - exact) %.2e, max(exact - est - bound) %.2e\n",
               ts[ti], ra.jvp_vectors, ra.vjp_vectors, ra.sv[0], ex.sv[0], ra.err_bound, worst_lo, worst_hi);
        assert_true(worst_lo <= 1e-5 * ex.sv[0]);
        assert_true(worst_hi <= 0);
        loco_spectrum_free(&ex);
        loco_spectrum_free(&ra);
        loco_lin_free(L);
    }
    loco_free(U);
    loco_model_free(m);
}

static void test_rank(void **s) {
    (void)s;
    loco_model *m;
    CHECK_OK(loco_model_open(g_file, &m));
    float *U = load_tensor(g_file, "U", NULL);
    float x[N];
    /* Theory (molrg.h): J = sum_k w_k sqrt(a) M_k + weight-gradient terms of
     * size w_k (1 - w_k). With sigma0 = 0, M_k = U_k U_k^T / (a + c) has rank d,
     * and the posterior is confident (log-odds ~ a^2 d / (2 (1-a)) between
     * components) for small and middle t: there the rank is exactly d. As t
     * grows, the weights soften and the rank climbs towards K d. */
    int checked_low = 0, checked_high = 0;
    for (float t = 1; t < 1000; t += 50) {
        double ratio, a = loco_model_abar(m, t);
        double logodds = a * a * D / (2 * (1 - a)); /* expected, between components */
        sample_xt(U, (float)a, 40 + (uint64_t)t, x);
        int r = numerical_rank(m, x, t, &ratio);
        const char *verdict = logodds >= 20 ? "theory: d" : logodds <= 1 ? "theory: > d" : "transition";
        printf("  t = %4.0f: abar %.4f, log-odds %8.2f, numerical rank %3d (d = %d, K d = %d, ratio %.3f)  %s\n", t, a,
               logodds, r, D, K * D, ratio, verdict);
        if (logodds >= 20) {
            assert_int_equal(r, D);
            checked_low++;
        } else if (logodds <= 1) {
            assert_true(r > D);
            checked_high++;
        }
    }
    assert_true(checked_low >= 2 && checked_high >= 2);
    loco_free(U);
    loco_model_free(m);
}

static void test_subspace_recovery(void **s) {
    (void)s;
    loco_model *m;
    CHECK_OK(loco_model_open(g_file, &m));
    float *U = load_tensor(g_file, "U", NULL);
    float x[N];
    const float t = 100;
    sample_xt(U, loco_model_abar(m, t), 99, x);
    loco_lin *L;
    CHECK_OK(loco_linearize(m, x, t, &L));
    loco_subspace_params p;
    loco_subspace_params_init(&p);
    p.rank = D;
    p.min_iter = 2;
    p.max_iter = 30;
    p.tol = 1e-6;
    p.seed = 3;
    loco_subspace sub;
    CHECK_OK(loco_subspace_iteration(L, NULL, &p, &sub));
    /* sin of the largest principal angle between span(sub.vT) and span(U_0) */
    double R[D * N];
    for (int i = 0; i < D; i++)
        for (int e = 0; e < N; e++) {
            double vv = sub.vT[i * N + e];
            for (int j = 0; j < D; j++) vv -= dot(sub.vT + i * N, U + j * N, N) * U[j * N + e];
            R[i * N + e] = vv;
        }
    double G[D * D], w[D], V[D * D];
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double g = 0;
            for (int e = 0; e < N; e++) g += R[i * N + e] * R[j * N + e];
            G[i * D + j] = g;
        }
    linalg_sym_eig(D, G, w, V);
    double sin_max = sqrt(fmax(0, w[0]));
    printf("  recovered the true %d-dimensional subspace in %d iterations: sin(largest angle) = %.2e\n", D, sub.iters,
           sin_max);
    printf("  singular values: %.6f ... %.6f (theory sqrt(a)/(a+c) = %.6f)\n", sub.s[0], sub.s[D - 1],
           sqrtf(loco_model_abar(m, t)));
    assert_true(sin_max < 1e-3);
    loco_subspace_free(&sub);
    loco_lin_free(L);
    loco_free(U);
    loco_model_free(m);
}

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    if (!j) fail_msg("%s is not JSON", path);
    return j;
}

/* loco analyze rank / linearity on the closed form: the rank ratio is d/n
 * where the posterior is confident (small t) and K d / n at large t; the PMP
 * is exactly linear along a direction of the confident component's subspace
 * (norm ratio and cosine 1 for every lambda) */
static void test_cli_analyze(void **s) {
    (void)s;
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[2048], p[800];
    snprintf(cmd, sizeof cmd, "%s/loco analyze rank %s --t 0.05,0.1,0.5,0.9 --images 2 --out %s/rank --quiet", build,
             g_file, g_path);
    assert_int_equal(system(cmd), 0);
    snprintf(p, sizeof p, "%s/rank/rank.json", g_path);
    cJSON *j = read_json(p);
    const cJSON *arr = cJSON_GetObjectItem(j, "per_t");
    assert_int_equal(cJSON_GetArraySize(arr), 4);
    for (int i = 0; i < 4; i++) {
        const cJSON *o = cJSON_GetArrayItem(arr, i);
        double tf = cJSON_GetObjectItem(o, "t_fraction")->valuedouble;
        double lo = cJSON_GetObjectItem(o, "rank_ratio_min")->valuedouble, hi = cJSON_GetObjectItem(o, "rank_ratio_max")->valuedouble;
        printf("  analyze rank: t = %.2f T: rank ratio %.4f..%.4f (d/n = %.4f, Kd/n = %.4f)\n", tf, lo, hi, (double)D / N,
               (double)K * D / N);
        if (tf <= 0.1) assert_true(fabs(lo - (double)D / N) < 1e-9 && fabs(hi - (double)D / N) < 1e-9);
        if (tf >= 0.5) assert_true(fabs(lo - (double)K * D / N) < 1e-9);
    }
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "%s/loco analyze linearity %s --t 0.1 --lambda 1,5,20,40 --images 2 --out %s/lin --quiet",
             build, g_file, g_path);
    assert_int_equal(system(cmd), 0);
    snprintf(p, sizeof p, "%s/lin/linearity.json", g_path);
    j = read_json(p);
    arr = cJSON_GetObjectItem(j, "per_lambda");
    assert_int_equal(cJSON_GetArraySize(arr), 4);
    for (int i = 0; i < 4; i++) {
        const cJSON *o = cJSON_GetArrayItem(arr, i);
        double lam = cJSON_GetObjectItem(o, "lambda")->valuedouble;
        double r0 = cJSON_GetObjectItem(o, "norm_ratio_min")->valuedouble, r1 = cJSON_GetObjectItem(o, "norm_ratio_max")->valuedouble;
        double c0 = cJSON_GetObjectItem(o, "cosine_min")->valuedouble;
        printf("  analyze linearity: lambda %4.0f: norm ratio %.6f..%.6f, cosine >= %.6f\n", lam, r0, r1, c0);
        assert_true(fabs(r0 - 1) < 1e-3 && fabs(r1 - 1) < 1e-3 && c0 > 0.999);
    }
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "rm -rf %s/rank %s/lin", g_path, g_path);
    assert_int_equal(system(cmd), 0);
}

/* The metadata 'shape' ("CxHxW") is read strictly: a number past int (which
 * sscanf's %d made undefined behaviour: glibc wrapped 4294967297 to 1, and the
 * file loaded as 1x1x1), a sign, a fraction or trailing text is refused,
 * naming the file and the key. */
static void test_shape_metadata(void **s) {
    (void)s;
    char p[700];
    snprintf(p, sizeof p, "%s/shape.safetensors", g_path);
    static const float u[1] = {1.0f}, pi[1] = {1.0f};
    const loco_tensor_ref refs[2] = {{"U", LOCO_DTYPE_F32, 3, {1, 1, 1}, u}, {"pi", LOCO_DTYPE_F32, 1, {1}, pi}};
    static const char *const bad[] = {"4294967297x1x1", "1x4294967297x1", "1x1x4294967297", "99999999999999999999999x1x1",
                                      "1x1x-1", "-1x1x1", "+1x1x1", " 1x1x1", "1x1x1 ", "1.5x1x1", "1x1", "1x1x1x1",
                                      "0x1x1", "65x1x1", "1x4097x1", "x1x1", "1xx1", ""};
    loco_model *m;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *meta[] = {"loco_model", "molrg", "shape", bad[i]};
        CHECK_OK(loco_tensors_write(p, refs, 2, meta, 2));
        m = (loco_model *)(uintptr_t)1;
        loco_status st = loco_model_open(p, &m);
        printf("  shape '%s': %s\n", bad[i], st ? loco_last_error() : "loaded");
        expect_error(st, LOCO_E_FORMAT, p, "'shape'");
        assert_null(m);
    }
    const char *meta[] = {"loco_model", "molrg", "shape", "1x1x1"};
    CHECK_OK(loco_tensors_write(p, refs, 2, meta, 2));
    CHECK_OK(loco_model_open(p, &m));
    loco_model_info info;
    CHECK_OK(loco_model_get_info(m, &info));
    assert_int_equal(info.in_channels, 1);
    assert_int_equal(info.height, 1);
    assert_int_equal(info.width, 1);
    loco_model_free(m);
    remove(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_products),
        cmocka_unit_test(test_rank),
        cmocka_unit_test(test_subspace_recovery),
        cmocka_unit_test(test_randomized_spectrum),
        cmocka_unit_test(test_cli_analyze),
        cmocka_unit_test(test_shape_metadata),
    };
    return cmocka_run_group_tests_name("molrg", tests, setup, teardown);
}
