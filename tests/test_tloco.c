/* test_tloco.c - T-LOCO on Stable Diffusion against the authors' code
 * (tests/fixtures/sd-tiny/tloco-*.safetensors, README there): the authors'
 * float-timestep DDIM sampler with classifier-free guidance from the start
 * noise to the edit step and on to the end, and the decoded result. */
#include "testutil.h"

#include <stdio.h>

static void rel(const char *what, const float *a, const float *ref, size_t n, double tol) {
    CHECK_CLOSE(what, a, ref, n, tol * max_abs(ref, n));
}

static void test_sampling(void **state) {
    const char *f = fixture_path("sd-tiny/tloco-semantic.safetensors");
    loco_open_params op;
    loco_open_params_init(&op);
    op.image_size = 32;
    loco_model *m;
    CHECK_OK(loco_model_open_with(fixture_path("sd-tiny/pipeline"), &op, &m));
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    cp.prompt = "a photo of a man";
    loco_cond *c;
    CHECK_OK(loco_cond_new(m, &cp, &c));
    /* the authors' grid: 999 k / 99, k = 99..1, then 0 */
    size_t nts;
    float *ts = load_tensor(f, "timesteps", &nts);
    assert_int_equal(nts, 99);
    float grid[100];
    CHECK_OK(loco_ddim_grid(100, 1000, grid));
    /* torch's vectorised linspace rounds some entries one ulp away from
     * the scalar algorithm we follow (docs/loco-edit.md) */
    int ulp = 0;
    for (int k = 0; k < 99; k++) {
        if (fabsf(grid[99 - k] - ts[k]) > 1.2e-4f)
            fail_msg("grid[%d] = %.9g, the authors' %.9g", 99 - k, grid[99 - k], ts[k]);
        ulp += grid[99 - k] != ts[k];
    }
    printf("  the 100-step grid equals the authors' timesteps (%d of 99 one float32 ulp apart)\n", ulp);
    size_t n;
    float *z = load_tensor(f, "zT", &n), *zt = load_tensor(f, "zt", NULL), *z0 = load_tensor(f, "z0", NULL);
    float *img_ref = load_tensor(f, "image0_raw", NULL);
    /* steps 0..29: from grid index 99 down to 69 (t = 696.27, the edit step) */
    CHECK_OK(loco_ddim_sample_cond(m, c, 1, z, grid, 99, 69, 0, 0, NULL, NULL));
    rel("z_t at the edit step (30 guided steps)", z, zt, n, 1e-4);
    CHECK_OK(loco_ddim_sample_cond(m, c, 1, z, grid, 69, 0, 0, 0, NULL, NULL));
    rel("z_0 (99 guided steps)", z, z0, n, 1e-4);
    int ic, ih, iw;
    loco_model_image_info(m, &ic, &ih, &iw);
    assert_int_equal(ic * ih * iw, 3 * 32 * 32);
    float *img = malloc(sizeof(float) * 3 * 32 * 32);
    CHECK_OK(loco_model_decode(m, 1, z, img));
    rel("decoded image (raw)", img, img_ref, 3 * 32 * 32, 1e-3);
    free(img);
    loco_free(ts);
    loco_free(z);
    loco_free(zt);
    loco_free(z0);
    loco_free(img_ref);
    loco_cond_free(c);
    loco_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
