/* test_unet.c - the UNet2DModel forward pass against the reference fixtures
 * (eps, x0_hat and every block output), for both configuration branches. */
#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>
#include "model.h"
#include "graph/graph.h"

typedef struct tap_ctx {
    const char *vec_path;
    int checked;
    double worst;
} tap_ctx;

static void tap(void *user, const char *name, const float *data, int B, int c, int h, int w) {
    tap_ctx *t = user;
    char key[160];
    snprintf(key, sizeof key, "act.%s", name);
    size_t n;
    float *ref = load_tensor(t->vec_path, key, &n);
    if (n != (size_t)B * c * h * w) fail_msg("%s: reference has %zu elements, we have %d", key, n, B * c * h * w);
    CHECK_CLOSE(key, data, ref, n, 1e-4);
    double d = max_abs_diff(data, ref, n);
    if (d > t->worst) t->worst = d;
    t->checked++;
    loco_free(ref);
}

static void check_model(const char *name) {
    char mdir[512], vec[600];
    snprintf(mdir, sizeof mdir, "%s", fixture_path(name));
    snprintf(vec, sizeof vec, "%s/vectors.safetensors", mdir);
    printf("%s:\n", name);
    loco_model *m;
    CHECK_OK(loco_model_open(mdir, &m));
    size_t n;
    float *x = load_tensor(vec, "x", &n);
    float *t = load_tensor(vec, "t", NULL);
    float *alpha = load_tensor(vec, "alpha_t", NULL);
    float *eps_ref = load_tensor(vec, "eps", NULL);
    float *x0_ref = load_tensor(vec, "x0_hat", NULL);
    float *eps = malloc(n * sizeof(float)), *x0 = malloc(n * sizeof(float));
    tap_ctx tc = {vec, 0, 0};
    CHECK_OK(model_eps_tap(m, 1, x, t, NULL, eps, tap, &tc));
    assert_int_equal(tc.checked, 10); /* conv_in, time_embedding, 3 down, mid, 3 up, conv_norm_out */
    CHECK_CLOSE("eps", eps, eps_ref, n, 1e-4);
    printf("  abar(t) = %.9g, reference %.9g\n", loco_model_abar(m, t[0]), alpha[0]);
    assert_true(loco_model_abar(m, t[0]) == alpha[0]);
    CHECK_OK(loco_model_x0_hat(m, 1, x, t, x0, NULL));
    CHECK_CLOSE("x0_hat", x0, x0_ref, n, 1e-4);

    /* batch 3: every image equals the batch-1 result (different t per image) */
    float *xb = malloc(3 * n * sizeof(float)), *eb = malloc(3 * n * sizeof(float)), tb[3] = {t[0], 10.5f, t[0]};
    for (int b = 0; b < 3; b++) memcpy(xb + b * n, x, n * sizeof(float));
    CHECK_OK(loco_model_eps(m, 3, xb, tb, eb));
    CHECK_CLOSE("batch 3, image 0", eb, eps_ref, n, 1e-4);
    CHECK_CLOSE("batch 3, image 2", eb + 2 * n, eps_ref, n, 1e-4);
    assert_true(max_abs_diff(eb + n, eps_ref, n) > 1e-3); /* another t gives another eps */

    /* non-finite input is refused */
    x[5] = NAN;
    expect_error(loco_model_eps(m, 1, x, t, eps), LOCO_E_NUMERIC, "element 5", NULL);
    free(xb);
    free(eb);
    free(eps);
    free(x0);
    loco_free(x);
    loco_free(t);
    loco_free(alpha);
    loco_free(eps_ref);
    loco_free(x0_ref);
    loco_model_free(m);
}

static void test_unet_small(void **state) {
    (void)state;
    check_model("unet-small");
}

static void test_unet_small_mh(void **state) {
    (void)state;
    check_model("unet-small_mh");
}

static void test_info(void **state) {
    (void)state;
    loco_model *m;
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &m));
    loco_model_info inf;
    CHECK_OK(loco_model_get_info(m, &inf));
    assert_int_equal(inf.n_params, 1113955); /* as the fixture README says */
    assert_int_equal(inf.height, 32);
    assert_int_equal(inf.in_channels, 3);
    /* executed FLOPs. On the BLAS path (oneDNN off) the 3x3 stride-1
     * 'same' convolutions with >= 16 channels each way on >= 256 pixels run
     * by our Winograd F(2x2) at 4/9 the cost; with oneDNN (the default),
     * the shapes it takes by Winograd F(4x4) cost 1/4, its direct ones the
     * full cost, the rest (thin convolutions) stay on the BLAS path. */
    const int saved = ops_conv_dnnl;
    double wino = 0, dnnl_wino = 0, blas_wino = 0;
    int n_wino = 0, n_dnnl_wino = 0;
    for (int i = 0; i < model_graph(m)->n_nodes; i++) {
        const node *n = &model_graph(m)->nodes[i];
        if (n->kind != NODE_CONV) continue;
        const conv_geom *g = &n->g;
        const double direct = 2.0 * g->cout * g->cin * 9.0 * g->ho * g->wo;
        const int wino_shape = g->k == 3 && g->stride == 1 && g->pad_t == 1 && g->ho == g->h && g->wo == g->w &&
                               g->cin >= 16 && g->cout >= 16 && g->ho * g->wo >= 256;
        if (wino_shape) {
            wino += direct;
            n_wino++;
        }
        ops_conv_dnnl = 1;
        if (conv2d_dnnl_handles(g)) {
            if (conv2d_dnnl_uses_winograd(g)) {
                /* oneDNN's Winograd shapes: 3x3 'same', channels a
                 * multiple of 16, >= 32x32 (conv_dnnl.c) */
                assert_true(wino_shape && g->cin % 16 == 0 && g->cout % 16 == 0 && g->ho * g->wo >= 1024);
                dnnl_wino += direct;
                n_dnnl_wino++;
            }
        } else if (wino_shape) {
            blas_wino += direct;
        }
        ops_conv_dnnl = saved;
    }
    /* the model's information is taken when it is opened */
    loco_model *mb, *md;
    loco_model_info blas;
    ops_conv_dnnl = 0;
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &mb));
    CHECK_OK(loco_model_get_info(mb, &blas));
    ops_conv_dnnl = 1;
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &md));
    CHECK_OK(loco_model_get_info(md, &inf));
    ops_conv_dnnl = saved;
    loco_model_free(mb);
    loco_model_free(md);
    printf("  BLAS path: %d Winograd convolutions, %.4f of %.4f GFLOP; executed %.4f GFLOP\n", n_wino, wino / 1e9,
           blas.flops / 1e9, blas.flops_executed / 1e9);
    printf("  oneDNN: %d by its Winograd (%.4f GFLOP); executed %.4f GFLOP\n", n_dnnl_wino, dnnl_wino / 1e9,
           inf.flops_executed / 1e9);
    assert_true(n_wino > 0);
    assert_true(fabs(blas.flops - 5.0 / 9.0 * wino - blas.flops_executed) <= 1e-9 * blas.flops);
    assert_true(fabs(inf.flops - 3.0 / 4.0 * dnnl_wino - 5.0 / 9.0 * blas_wino - inf.flops_executed) <=
                1e-9 * inf.flops);
    char *text;
    CHECK_OK(loco_model_describe(m, &text));
    assert_non_null(strstr(text, "AttnDownBlock2D"));
    loco_free(text);
    loco_model_free(m);
}

/* eps, J V and U^T J are bit-identical with 1, 2 and 3 threads (the
 * automatic thread count may change with the machine's load between runs,
 * so a result must not depend on it), and on a model large enough for the
 * tiled GEMMs and Winograd paths. */
static void test_thread_invariance(void **state) {
    (void)state;
    loco_model *m;
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &m));
    loco_model_info inf;
    CHECK_OK(loco_model_get_info(m, &inf));
    const size_t n = (size_t)inf.in_channels * inf.height * inf.width;
    const int B = 2, k = 2;
    float *x = malloc(sizeof(float) * n * B), *out[3], *jv[3], *uj[3];
    float t[2] = {17.0f, 640.5f};
    assert_non_null(x);
    uint64_t r = 99;
    for (size_t i = 0; i < n * B; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((r >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
    const int saved = loco_get_threads();
    for (int th = 1; th <= 3; th++) {
        loco_set_threads(th);
        out[th - 1] = malloc(sizeof(float) * n * B);
        jv[th - 1] = malloc(sizeof(float) * n * k);
        uj[th - 1] = malloc(sizeof(float) * n * k);
        assert_non_null(out[th - 1]);
        assert_non_null(jv[th - 1]);
        assert_non_null(uj[th - 1]);
        CHECK_OK(loco_model_eps(m, B, x, t, out[th - 1]));
        loco_lin *L;
        CHECK_OK(loco_linearize(m, x, 300.0f, &L));
        CHECK_OK(loco_lin_jvp(L, LOCO_OUT_X0, NULL, k, x, jv[th - 1]));
        CHECK_OK(loco_lin_vjp(L, LOCO_OUT_X0, NULL, k, x, uj[th - 1]));
        loco_lin_free(L);
    }
    loco_set_threads(saved);
    for (int th = 2; th <= 3; th++) {
        if (memcmp(out[0], out[th - 1], sizeof(float) * n * B) != 0) fail_msg("eps: %d threads differ from 1", th);
        if (memcmp(jv[0], jv[th - 1], sizeof(float) * n * k) != 0) fail_msg("J V: %d threads differ from 1", th);
        if (memcmp(uj[0], uj[th - 1], sizeof(float) * n * k) != 0) fail_msg("U^T J: %d threads differ from 1", th);
    }
    for (int i = 0; i < 3; i++) {
        free(out[i]);
        free(jv[i]);
        free(uj[i]);
    }
    free(x);
    loco_model_free(m);
}

/* A folder of the unet-small weights whose scheduler_config.json says
 * prediction_type `pred`: dir/pred/ (links to the fixture's files). */
static void make_pred_model(const char *dir, const char *pred, char *out, size_t n) {
    snprintf(out, n, "%s/%s", dir, pred);
    assert_int_equal(mkdir(out, 0755), 0);
    char a[1024], b[1200];
    const char *files[2] = {"config.json", "diffusion_pytorch_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *src = realpath(fixture_path("unet-small"), NULL);
        assert_non_null(src);
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", out, files[i]);
        free(src);
        assert_int_equal(symlink(a, b), 0);
    }
    snprintf(b, sizeof b, "%s/scheduler", out);
    assert_int_equal(mkdir(b, 0755), 0);
    snprintf(b, sizeof b, "%s/scheduler/scheduler_config.json", out);
    FILE *f = fopen(b, "w");
    assert_non_null(f);
    fprintf(f, "{\"_class_name\": \"DDPMScheduler\", \"num_train_timesteps\": 1000, \"prediction_type\": \"%s\"}\n",
            pred);
    fclose(f);
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return d / (1.0 + m);
}

/* prediction_type from scheduler_config.json, as diffusers' DDIMScheduler
 * reads the network's output y: v_prediction gives eps = s1 x + sa y and
 * x0 = sa x - s1 y, sample gives x0 = y and eps = (x - sa y) / s1; the same
 * weights read as epsilon give y itself. The Jacobians follow the same
 * linear maps, and the adjoint identity holds for a v model. */
static void test_prediction_types(void **state) {
    (void)state;
    char dir[] = "/tmp/loco_pred_XXXXXX", pe[256], pv[256], ps[256], pf[256];
    assert_non_null(mkdtemp(dir));
    make_pred_model(dir, "epsilon", pe, sizeof pe);
    make_pred_model(dir, "v_prediction", pv, sizeof pv);
    make_pred_model(dir, "sample", ps, sizeof ps);
    make_pred_model(dir, "flow", pf, sizeof pf);
    loco_model *me, *mv, *ms, *mf = NULL;
    CHECK_OK(loco_model_open(pe, &me));
    CHECK_OK(loco_model_open(pv, &mv));
    CHECK_OK(loco_model_open(ps, &ms));
    assert_int_equal(loco_model_open(pf, &mf), LOCO_E_UNSUPPORTED);
    assert_non_null(strstr(loco_last_error(), "prediction_type"));
    assert_non_null(strstr(loco_last_error(), "flow"));
    assert_null(mf);
    loco_model_info inf;
    CHECK_OK(loco_model_get_info(me, &inf));
    const size_t n = (size_t)inf.in_channels * inf.height * inf.width;
    const int k = 2;
    float *x = calloc(n, sizeof(float)), *y = calloc(n, sizeof(float)), *e = calloc(n, sizeof(float)),
          *x0 = calloc(n, sizeof(float)), *ref = calloc(n * k, sizeof(float)), *V = calloc(n * k, sizeof(float)),
          *Jy = calloc(n * k, sizeof(float)), *J = calloc(n * k, sizeof(float));
    if (!x || !y || !e || !x0 || !ref || !V || !Jy || !J) fail_msg("out of memory");
    uint64_t r = 7;
    for (size_t i = 0; i < n * k; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        V[i] = (float)((r >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
        if (i < n) x[i] = V[i] * 1.5f;
    }
    const float t = 400.0f, ab = loco_model_abar(me, t), sa = sqrtf(ab), s1 = sqrtf(1.0f - ab);
    CHECK_OK(loco_model_eps(me, 1, x, &t, y)); /* the network's output */
    /* v_prediction */
    CHECK_OK(loco_model_x0_hat(mv, 1, x, &t, x0, e));
    for (size_t i = 0; i < n; i++) ref[i] = s1 * x[i] + sa * y[i];
    double d1 = max_rel_diff(e, ref, n);
    for (size_t i = 0; i < n; i++) ref[i] = sa * x[i] - s1 * y[i];
    double d2 = max_rel_diff(x0, ref, n);
    printf("  v_prediction: eps %.2e, x0_hat %.2e (relative to 1 + max|ref|)\n", d1, d2);
    assert_true(d1 < 1e-6 && d2 < 1e-6);
    /* sample */
    CHECK_OK(loco_model_x0_hat(ms, 1, x, &t, x0, e));
    assert_memory_equal(x0, y, sizeof(float) * n);
    for (size_t i = 0; i < n; i++) ref[i] = (x[i] - sa * y[i]) / s1;
    d1 = max_rel_diff(e, ref, n);
    printf("  sample: eps %.2e, x0_hat exact\n", d1);
    assert_true(d1 < 1e-6);
    /* Jacobians of a v model: J_x0 V = sa V - s1 J_y V, U^T J_x0 = sa U - s1 U^T J_y */
    loco_lin *Le, *Lv;
    CHECK_OK(loco_linearize(me, x, t, &Le));
    CHECK_OK(loco_linearize(mv, x, t, &Lv));
    CHECK_OK(loco_lin_jvp(Le, LOCO_OUT_EPS, NULL, k, V, Jy));
    CHECK_OK(loco_lin_jvp(Lv, LOCO_OUT_X0, NULL, k, V, J));
    for (size_t i = 0; i < n * k; i++) ref[i] = sa * V[i] - s1 * Jy[i];
    d1 = max_rel_diff(J, ref, n * k);
    CHECK_OK(loco_lin_vjp(Le, LOCO_OUT_EPS, NULL, k, V, Jy));
    CHECK_OK(loco_lin_vjp(Lv, LOCO_OUT_X0, NULL, k, V, J));
    for (size_t i = 0; i < n * k; i++) ref[i] = sa * V[i] - s1 * Jy[i];
    d2 = max_rel_diff(J, ref, n * k);
    printf("  v_prediction: J V %.2e, U^T J %.2e\n", d1, d2);
    assert_true(d1 < 1e-6 && d2 < 1e-6);
    /* adjoint identity on the v model: <u, J v> = <J^T u, v> */
    CHECK_OK(loco_lin_jvp(Lv, LOCO_OUT_X0, NULL, 1, V, J));
    CHECK_OK(loco_lin_vjp(Lv, LOCO_OUT_X0, NULL, 1, V + n, Jy));
    double lhs = 0, rhs = 0, nu = 0, nj = 0;
    for (size_t i = 0; i < n; i++) {
        lhs += (double)V[n + i] * J[i];
        rhs += (double)Jy[i] * V[i];
        nu += (double)V[n + i] * V[n + i];
        nj += (double)J[i] * J[i];
    }
    double rel = fabs(lhs - rhs) / sqrt(nu * nj);
    printf("  v_prediction adjoint: <u,Jv> %.9e <J^T u,v> %.9e rel %.2e\n", lhs, rhs, rel);
    assert_true(rel < 1e-6);
    loco_lin_free(Le);
    loco_lin_free(Lv);
    free(x);
    free(y);
    free(e);
    free(x0);
    free(ref);
    free(V);
    free(Jy);
    free(J);
    loco_model_free(me);
    loco_model_free(mv);
    loco_model_free(ms);
    assert_int_equal(loco_remove_tree(dir), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prediction_types),
        cmocka_unit_test(test_thread_invariance),
        cmocka_unit_test(test_unet_small),
        cmocka_unit_test(test_unet_small_mh),
        cmocka_unit_test(test_info),
    };
    return cmocka_run_group_tests_name("unet", tests, NULL, NULL);
}
