/* test_sd.c - the Stable Diffusion family through the public API, against
 * the reference fixtures (tests/fixtures/sd-tiny/README.md): a pipeline
 * folder opens as a model; prompts become a conditioning (tokenizer + text
 * encoder); the guided eps and x0_hat at three timesteps; J V and U^T J of
 * the guided x0_hat on the latent mask; hostile folders. */
#include "testutil.h"

#include <stdio.h>
#include <sys/stat.h>

#define VEC "sd-tiny/vectors.safetensors"

static void rel(const char *what, const float *a, const float *ref, size_t n, double tol) {
    CHECK_CLOSE(what, a, ref, n, tol * max_abs(ref, n));
}

static loco_model *open_tiny(void) {
    loco_open_params p;
    loco_open_params_init(&p);
    p.image_size = 32; /* the fixtures' images: latents 16x16 */
    loco_model *m;
    CHECK_OK(loco_model_open_with(fixture_path("sd-tiny/pipeline"), &p, &m));
    return m;
}

static void test_open_and_info(void **state) {
    loco_model *m = open_tiny();
    loco_model_info inf;
    CHECK_OK(loco_model_get_info(m, &inf));
    assert_string_equal(inf.family, "StableDiffusion");
    assert_int_equal(inf.in_channels, 4);
    assert_int_equal(inf.height, 16);
    char *text;
    CHECK_OK(loco_model_describe(m, &text));
    printf("%s", text);
    loco_free(text);
    /* an unconditioned call is refused: the model needs a prompt */
    float x[4 * 16 * 16] = {0}, t = 500, eps[4 * 16 * 16];
    expect_error(loco_model_eps(m, 1, x, &t, eps), LOCO_E_INVALID_ARGUMENT, "prompt", NULL);
    loco_model_free(m);
}

static void test_guided_eps(void **state) {
    loco_model *m = open_tiny();
    const char *vec = fixture_path(VEC);
    size_t nz;
    float *z = load_tensor(vec, "z", &nz), *tl = load_tensor(vec, "t_list", NULL);
    const size_t n = nz / 2;
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    cp.prompt = "a photo of a man";
    loco_cond *c;
    CHECK_OK(loco_cond_new(m, &cp, &c));
    const int ti[3] = {0, 4, 5};
    float *eps = malloc(sizeof(float) * n), *x0 = malloc(sizeof(float) * n);
    for (int k = 0; k < 3; k++) {
        char key[32];
        const float t = tl[ti[k]];
        CHECK_OK(loco_model_eps_cond(m, 1, z, &t, c, eps));
        snprintf(key, sizeof key, "eps_cfg.t%d", ti[k]);
        float *ref = load_tensor(vec, key, NULL);
        rel(key, eps, ref, n, 1e-4);
        loco_free(ref);
        CHECK_OK(loco_model_x0_hat_cond(m, 1, z, &t, c, x0, NULL));
        snprintf(key, sizeof key, "x0_hat.t%d", ti[k]);
        ref = load_tensor(vec, key, NULL);
        rel(key, x0, ref, n, 1e-4);
        loco_free(ref);
    }
    /* J V and U^T J of the guided x0_hat on the latent mask */
    size_t nv, nm;
    float *jt = load_tensor(vec, "jac_t", NULL), *V = load_tensor(vec, "V", &nv), *JV_ref = load_tensor(vec, "JV", NULL),
          *U = load_tensor(vec, "U", NULL), *UJ_ref = load_tensor(vec, "UJ", NULL),
          *maskf = load_tensor(vec, "mask_latent", &nm);
    uint8_t *mask = malloc(nm);
    for (size_t i = 0; i < nm; i++) mask[i] = maskf[i] != 0;
    const int k = (int)(nv / n);
    loco_lin *L;
    CHECK_OK(loco_linearize_cond(m, z, jt[0], c, &L));
    const size_t l = loco_lin_mask_count(L, mask);
    float *JV = malloc(sizeof(float) * k * l), *UJ = malloc(sizeof(float) * k * n);
    CHECK_OK(loco_lin_jvp(L, LOCO_OUT_X0, mask, k, V, JV));
    CHECK_OK(loco_lin_vjp(L, LOCO_OUT_X0, mask, k, U, UJ));
    rel("J V (guided x0_hat, latent mask)", JV, JV_ref, (size_t)k * l, 1e-4);
    rel("U^T J (guided x0_hat, latent mask)", UJ, UJ_ref, (size_t)k * n, 1e-4);
    /* T-LOCO's function: the decoded x0_hat, on a mask of image pixels */
    size_t npm;
    float *mpf = load_tensor(vec, "mask_pixel", &npm), *JVp_ref = load_tensor(vec, "JV_px", NULL),
          *Up = load_tensor(vec, "U_px", NULL), *UJp_ref = load_tensor(vec, "UJ_px", NULL);
    assert_int_equal(npm, loco_lin_image_size(L));
    uint8_t *mp = malloc(npm);
    for (size_t i = 0; i < npm; i++) mp[i] = mpf[i] != 0;
    const size_t lp = loco_lin_image_mask_count(L, mp);
    assert_int_equal(lp, 384);
    float *JVp = malloc(sizeof(float) * k * lp), *UJp = malloc(sizeof(float) * k * n);
    CHECK_OK(loco_lin_jvp(L, LOCO_OUT_IMAGE, mp, k, V, JVp));
    CHECK_OK(loco_lin_vjp(L, LOCO_OUT_IMAGE, mp, k, Up, UJp));
    rel("J V (decoded x0_hat, pixel mask)", JVp, JVp_ref, (size_t)k * lp, 1e-4);
    rel("U^T J (decoded x0_hat, pixel mask)", UJp, UJp_ref, (size_t)k * n, 1e-4);
    for (int b = 0; b < k; b++) {
        double a1 = 0, a2 = 0;
        for (size_t j = 0; j < lp; j++) a1 += (double)Up[b * lp + j] * JVp[b * lp + j];
        for (size_t i = 0; i < n; i++) a2 += (double)UJp[b * n + i] * V[b * n + i];
        printf("  decoded: <u, J v> %.9g  <U^T J, v> %.9g\n", a1, a2);
        assert_true(fabs(a1 - a2) <= 1e-4 * (fabs(a1) + 1e-3));
    }
    /* the decoder's products in groups of one vector (what a 512x512 image
     * gets): the same numbers */
    extern size_t graph_lin_work_budget;
    const size_t budget = graph_lin_work_budget;
    graph_lin_work_budget = 1;
    float *JVg = malloc(sizeof(float) * k * lp), *UJg = malloc(sizeof(float) * k * n);
    CHECK_OK(loco_lin_jvp(L, LOCO_OUT_IMAGE, mp, k, V, JVg));
    CHECK_OK(loco_lin_vjp(L, LOCO_OUT_IMAGE, mp, k, Up, UJg));
    graph_lin_work_budget = budget;
    rel("J V (decoder one vector at a time)", JVg, JVp, (size_t)k * lp, 0.0);
    rel("U^T J (decoder one vector at a time)", UJg, UJp, (size_t)k * n, 0.0);
    free(JVg);
    free(UJg);
    assert_non_null(loco_lin_value(L, LOCO_OUT_IMAGE));
    free(mp);
    free(JVp);
    free(UJp);
    loco_free(mpf);
    loco_free(JVp_ref);
    loco_free(Up);
    loco_free(UJp_ref);
    loco_lin_free(L);
    free(JV);
    free(UJ);
    free(mask);
    loco_free(jt);
    loco_free(V);
    loco_free(JV_ref);
    loco_free(U);
    loco_free(UJ_ref);
    loco_free(maskf);
    free(eps);
    free(x0);
    loco_cond_free(c);
    loco_free(z);
    loco_free(tl);
    loco_model_free(m);
}

static void test_hostile(void **state) {
    loco_model *m = open_tiny();
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    loco_cond *c;
    expect_error(loco_cond_new(m, &cp, &c), LOCO_E_INVALID_ARGUMENT, "prompt", NULL); /* no prompt */
    cp.prompt = "x";
    cp.guidance = 1.0f / 0.0f;
    expect_error(loco_cond_new(m, &cp, &c), LOCO_E_INVALID_ARGUMENT, "guidance", NULL);
    loco_model_free(m);
    /* a conditioning for an unconditional model is refused */
    loco_model *u;
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &u));
    loco_cond_params_init(&cp);
    cp.prompt = "a face";
    expect_error(loco_cond_new(u, &cp, &c), LOCO_E_UNSUPPORTED, "prompt", NULL);
    loco_model_free(u);
    /* an image size the VAE and UNet cannot divide */
    loco_open_params p;
    loco_open_params_init(&p);
    p.image_size = 30;
    expect_error(loco_model_open_with(fixture_path("sd-tiny/pipeline"), &p, &m), LOCO_E_INVALID_ARGUMENT, "image size",
                 NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_and_info),
        cmocka_unit_test(test_guided_eps),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
