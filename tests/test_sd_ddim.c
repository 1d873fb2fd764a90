/* test_sd_ddim.c - diffusers' DDIM timesteps (LOCO_TIMESTEPS_LEADING and
 * _TRAILING) on the Stable Diffusion fixtures (tests/fixtures/sd-tiny/README.md):
 * the scheduler's timesteps, a 4-step guided DDIMScheduler trajectory
 * (ddim_t, ddim_z, ddim_eps, ddim_x0, ddim_image), DDIMInverseScheduler's
 * inversion of its result (inv_t, inv_z, inv_eps), the same schedule through
 * loco_sample_ts, loco_edit_encode and loco_edit_prepare, that the authors'
 * default is what it was, and the errors. Every comparison prints its max
 * abs diff; the tolerance is 1e-4 of the reference's max abs (images 1e-3). */
#include "testutil.h"

#include <stdio.h>

#define VEC "sd-tiny/vectors.safetensors"
#define NZ (4 * 16 * 16) /* one latent */

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

/* prompt 0 against prompt 2 ("") with guidance g (1: prompt 0 alone) */
static loco_cond *cond_new(loco_model *m, float g) {
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    cp.prompt = "a photo of a man";
    cp.guidance = g;
    loco_cond *c;
    CHECK_OK(loco_cond_new(m, &cp, &c));
    return c;
}

/* An I64 tensor of n entries as floats (loco_tensors_read_f32 takes no
 * integers). */
static void load_i64(const char *path, const char *name, float *out, size_t n) {
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(path, &f));
    loco_dtype dt;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    CHECK_OK(loco_tensors_info(f, name, &dt, &nd, sh));
    assert_int_equal(dt, LOCO_DTYPE_I64);
    const void *raw;
    size_t nb;
    CHECK_OK(loco_tensors_raw(f, name, &raw, &nb));
    assert_int_equal(nb, n * sizeof(int64_t));
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, (const char *)raw + i * sizeof v, sizeof v);
        out[i] = (float)v;
    }
    loco_tensors_close(f);
}

static void test_timesteps(void **state) {
    loco_model *m = open_tiny();
    float ref[4], t[5];
    load_i64(fixture_path(VEC), "ddim_t", ref, 4);
    assert_int_equal(loco_ddim_points(LOCO_TIMESTEPS_LEADING, 4), 5);
    assert_int_equal(loco_ddim_points(LOCO_TIMESTEPS_AUTHORS, 4), 4);
    CHECK_OK(loco_ddim_timesteps(m, LOCO_TIMESTEPS_LEADING, 4, t));
    printf("  leading, 4 steps: points %g %g %g %g %g; ddim_t %g %g %g %g\n", t[0], t[1], t[2], t[3], t[4], ref[0],
           ref[1], ref[2], ref[3]);
    for (int k = 0; k < 4; k++) assert_true(t[4 - k] == ref[k]); /* DDIMScheduler.timesteps, descending */
    assert_true(t[0] == 1 - 250);
    load_i64(fixture_path(VEC), "inv_t", ref, 4);
    for (int k = 0; k < 4; k++) assert_true(t[k + 1] == ref[k]); /* DDIMInverseScheduler.timesteps */
    /* trailing: round(arange(1000, 0, -250)) - 1 */
    CHECK_OK(loco_ddim_timesteps(m, LOCO_TIMESTEPS_TRAILING, 4, t));
    const float tr[5] = {-1, 249, 499, 749, 999};
    for (int k = 0; k < 5; k++) assert_true(t[k] == tr[k]);
    /* the authors' points are loco_ddim_grid's */
    float g[4];
    CHECK_OK(loco_ddim_timesteps(m, LOCO_TIMESTEPS_AUTHORS, 4, t));
    CHECK_OK(loco_ddim_grid(4, 1000, g));
    assert_memory_equal(t, g, sizeof g);
    /* the schedule tables */
    size_t na;
    float *ac = load_tensor(fixture_path(VEC), "alphas_cumprod", &na), *fin = load_tensor(fixture_path(VEC),
                                                                                          "final_alpha_cumprod", NULL);
    int n;
    const float *mine = loco_model_alphas_cumprod(m, &n);
    assert_int_equal(n, (int)na);
    rel("alphas_cumprod (float64 cumprod vs torch)", mine, ac, na, 1e-5);
    rel("final_alpha_cumprod = alphas_cumprod[0]", mine, fin, 1, 1e-6);
    loco_free(ac);
    loco_free(fin);
    loco_model_free(m);
}

/* DDIMScheduler, 4 steps, guidance 7.5: each step from the reference latent,
 * then the whole trajectory in one call, and the decoded result. */
static void test_ddim_sampling(void **state) {
    loco_model *m = open_tiny();
    loco_cond *c = cond_new(m, 7.5f);
    const char *vec = fixture_path(VEC);
    float *zr = load_tensor(vec, "ddim_z", NULL), *er = load_tensor(vec, "ddim_eps", NULL),
          *xr = load_tensor(vec, "ddim_x0", NULL), *ir = load_tensor(vec, "ddim_image", NULL);
    float tk[5], z[NZ], eps[NZ], x0[NZ], img[3 * 32 * 32];
    char what[96];
    CHECK_OK(loco_ddim_timesteps(m, LOCO_TIMESTEPS_LEADING, 4, tk));
    for (int k = 0; k < 4; k++) {
        const int pt = 4 - k; /* step k starts at point 4 - k */
        CHECK_OK(loco_model_x0_hat_cond(m, 1, zr + k * NZ, &tk[pt], c, x0, eps));
        snprintf(what, sizeof what, "ddim_eps[%d] (t %g)", k, tk[pt]);
        rel(what, eps, er + k * NZ, NZ, 1e-4);
        snprintf(what, sizeof what, "ddim_x0[%d]", k);
        rel(what, x0, xr + k * NZ, NZ, 1e-4);
        memcpy(z, zr + k * NZ, sizeof z);
        CHECK_OK(loco_ddim_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, pt, pt - 1, 0, 0, NULL, NULL));
        snprintf(what, sizeof what, "ddim_z[%d] (one step from ddim_z[%d])", k + 1, k);
        rel(what, z, zr + (k + 1) * NZ, NZ, 1e-4);
    }
    /* the whole trajectory from the start noise, and partial runs */
    memcpy(z, zr, sizeof z);
    CHECK_OK(loco_ddim_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, 4, 2, 0, 0, NULL, NULL));
    rel("ddim_z[2] (two steps from ddim_z[0])", z, zr + 2 * NZ, NZ, 1e-4);
    CHECK_OK(loco_ddim_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, 2, 0, 0, 0, NULL, NULL));
    rel("ddim_z[4] (then two more)", z, zr + 4 * NZ, NZ, 1e-4);
    float z2[NZ];
    memcpy(z2, zr, sizeof z2);
    CHECK_OK(loco_ddim_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z2, 4, 0, 0, 0, NULL, NULL));
    rel("ddim_z[4] (four steps in one call)", z2, zr + 4 * NZ, NZ, 1e-4);
    assert_memory_equal(z, z2, sizeof z); /* split or not, the same bytes */
    CHECK_OK(loco_model_decode(m, 1, z2, img));
    rel("ddim_image (decoded result)", img, ir, 3 * 32 * 32, 1e-3);

    /* loco_sample_ts: loco_randn's noise, then the same schedule */
    float zs[NZ], zn[NZ];
    CHECK_OK(loco_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 1, 4, 0, 5, 1, 0, zs, NULL, NULL));
    CHECK_OK(loco_randn(5 * 0x9E3779B97F4A7C15ull, NZ, zn));
    CHECK_OK(loco_ddim_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, zn, 4, 0, 0, 0, NULL, NULL));
    assert_memory_equal(zs, zn, sizeof zs);
    /* the default stays the authors' grid, bit for bit */
    float za[NZ], zb[NZ], grid[3];
    CHECK_OK(loco_sample_cond(m, c, 1, 3, 0, 5, 1, 0, za, NULL, NULL));
    CHECK_OK(loco_sample_ts(m, c, LOCO_TIMESTEPS_AUTHORS, 1, 3, 0, 5, 1, 0, zb, NULL, NULL));
    assert_memory_equal(za, zb, sizeof za);
    CHECK_OK(loco_randn(5 * 0x9E3779B97F4A7C15ull, NZ, zb));
    CHECK_OK(loco_ddim_grid(3, 1000, grid));
    CHECK_OK(loco_ddim_sample_cond(m, c, 1, zb, grid, 2, 0, 0, 0, NULL, NULL));
    assert_memory_equal(za, zb, sizeof za);
    assert_true(memcmp(za, zs, sizeof za) != 0); /* and the leading schedule is another one */

    loco_free(zr);
    loco_free(er);
    loco_free(xr);
    loco_free(ir);
    loco_cond_free(c);
    loco_model_free(m);
}

/* DDIMInverseScheduler, prompt 0 alone: from ddim_z[4] up 1, 251, 501, 751. */
static void test_ddim_inversion(void **state) {
    loco_model *m = open_tiny();
    loco_cond *c = cond_new(m, 1.0f);
    const char *vec = fixture_path(VEC);
    float *zr = load_tensor(vec, "inv_z", NULL), *er = load_tensor(vec, "inv_eps", NULL),
          *dz = load_tensor(vec, "ddim_z", NULL);
    float tk[5], z[NZ], eps[NZ];
    char what[96];
    assert_memory_equal(zr, dz + 4 * NZ, sizeof(float) * NZ); /* it inverts the sampled result */
    CHECK_OK(loco_ddim_timesteps(m, LOCO_TIMESTEPS_LEADING, 4, tk));
    for (int k = 0; k < 4; k++) {
        CHECK_OK(loco_model_eps_cond(m, 1, zr + k * NZ, &tk[k + 1], c, eps)); /* at the target timestep */
        snprintf(what, sizeof what, "inv_eps[%d] (t %g)", k, tk[k + 1]);
        rel(what, eps, er + k * NZ, NZ, 1e-4);
        memcpy(z, zr + k * NZ, sizeof z);
        CHECK_OK(loco_ddim_invert_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, k, k + 1, NULL, NULL));
        snprintf(what, sizeof what, "inv_z[%d] (one step from inv_z[%d])", k + 1, k);
        rel(what, z, zr + (k + 1) * NZ, NZ, 1e-4);
    }
    memcpy(z, zr, sizeof z);
    CHECK_OK(loco_ddim_invert_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, 0, 4, NULL, NULL));
    rel("inv_z[4] (four steps in one call)", z, zr + 4 * NZ, NZ, 1e-4);

    /* the edit's encoder on the same schedule: up to the edit point (t_edit
     * 0.5: timestep 501, point 3), and the whole inversion (x_T) */
    loco_edit_params ep;
    loco_edit_params_init(&ep);
    ep.timesteps = LOCO_TIMESTEPS_LEADING;
    ep.steps = ep.inv_steps = 4;
    ep.t_edit = 0.5f;
    ep.cond = c;
    ep.invert_full = 0;
    float tv, xT[NZ], xt[NZ];
    int gi, nfe;
    CHECK_OK(loco_edit_timestep(m, &ep, &tv, &gi));
    assert_int_equal(gi, 3);
    assert_true(tv == 501);
    CHECK_OK(loco_edit_encode_full(m, &ep, zr, xT, xt, &nfe));
    assert_int_equal(nfe, 3);
    rel("loco_edit_encode (to the edit point): inv_z[3]", xt, zr + 3 * NZ, NZ, 1e-4);
    ep.invert_full = 1;
    CHECK_OK(loco_edit_encode_full(m, &ep, zr, xT, xt, &nfe));
    assert_int_equal(nfe, 4 + 1);
    rel("loco_edit_encode (invert_full): x_T = inv_z[4]", xT, zr + 4 * NZ, NZ, 1e-4);
    memcpy(z, xT, sizeof z);
    CHECK_OK(loco_ddim_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, 4, 3, 0, 0, NULL, NULL));
    assert_memory_equal(z, xt, sizeof z); /* then one sampling step down to the edit point */

    loco_free(zr);
    loco_free(er);
    loco_free(dz);
    loco_cond_free(c);
    loco_model_free(m);
}

/* The whole edit on the leading schedule: from ddim_z[0] sampled down to
 * the edit point (one step: ddim_z[1]), directions found there. */
static void test_edit_prepare_leading(void **state) {
    loco_model *m = open_tiny();
    loco_cond *c = cond_new(m, 7.5f);
    float *zr = load_tensor(fixture_path(VEC), "ddim_z", NULL);
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit.timesteps = LOCO_TIMESTEPS_LEADING;
    rp.edit.steps = rp.edit.inv_steps = 4;
    rp.edit.t_edit = 0.5f;
    rp.edit.cond = c;
    rp.start_latent = zr;
    rp.rank = 1;
    rp.null_rank = 1;
    rp.min_iter = rp.max_iter = 2;
    rp.of = LOCO_OUT_IMAGE;
    uint8_t mask[32 * 32];
    CHECK_OK(loco_mask_rect(32, 32, 8, 16, 8, 24, mask));
    float img[3 * 32 * 32] = {0};
    loco_edit_directions *d;
    CHECK_OK(loco_edit_prepare(m, &rp, img, mask, &d));
    loco_edit_info ei;
    CHECK_OK(loco_edit_directions_info(d, &ei));
    printf("  edit point: t %g, point %d, %d network evaluations to reach it\n", ei.t_value, ei.grid_index,
           ei.nfe_inversion);
    assert_true(ei.t_value == 501);
    assert_int_equal(ei.grid_index, 3);
    assert_int_equal(ei.nfe_inversion, 1);
    rel("edit x_t = ddim_z[1]", loco_edit_directions_xt(d), zr + 1 * NZ, NZ, 1e-4);
    /* the edits: x_t + 0 v sampled back is the reference result */
    const loco_edit_move mv = {loco_edit_directions_vectors(d), 0.0f};
    float out[NZ];
    int nfe;
    CHECK_OK(loco_edit_render(m, &rp.edit, loco_edit_directions_xt(d), 1, NULL, &mv, 1, out, &nfe));
    assert_int_equal(nfe, 3);
    rel("rendered with strength 0 = ddim_z[4]", out, zr + 4 * NZ, NZ, 1e-4);
    loco_edit_directions_free(d);
    loco_free(zr);
    loco_cond_free(c);
    loco_model_free(m);
}

static void test_errors(void **state) {
    loco_model *m = open_tiny();
    loco_timesteps ts;
    CHECK_OK(loco_timesteps_parse("leading", &ts));
    assert_int_equal(ts, LOCO_TIMESTEPS_LEADING);
    CHECK_OK(loco_timesteps_parse("authors", &ts));
    assert_int_equal(ts, LOCO_TIMESTEPS_AUTHORS);
    expect_error(loco_timesteps_parse("linspace", &ts), LOCO_E_INVALID_ARGUMENT, "linspace", NULL);
    assert_string_equal(loco_timesteps_name(LOCO_TIMESTEPS_TRAILING), "trailing");
    assert_null(loco_timesteps_name((loco_timesteps)7));
    assert_int_equal(loco_ddim_points((loco_timesteps)7, 4), 0);
    float t[1002];
    expect_error(loco_ddim_timesteps(m, LOCO_TIMESTEPS_LEADING, 0, t), LOCO_E_INVALID_ARGUMENT, "steps = 0", NULL);
    expect_error(loco_ddim_timesteps(m, LOCO_TIMESTEPS_LEADING, 1001, t), LOCO_E_INVALID_ARGUMENT, "1000", NULL);
    /* 1000 leading steps with steps_offset 1 reach timestep 1000 */
    expect_error(loco_ddim_timesteps(m, LOCO_TIMESTEPS_LEADING, 1000, t), LOCO_E_INVALID_ARGUMENT, "timestep 1000",
                 NULL);
    /* numpy's arange(1000, 0, -1000/61) has 62 entries */
    expect_error(loco_ddim_timesteps(m, LOCO_TIMESTEPS_TRAILING, 61, t), LOCO_E_INVALID_ARGUMENT, "arange", NULL);
    expect_error(loco_ddim_timesteps(m, (loco_timesteps)7, 4, t), LOCO_E_INVALID_ARGUMENT, "timesteps", NULL);
    float z[NZ] = {0};
    loco_cond *c = cond_new(m, 1.0f);
    expect_error(loco_ddim_sample_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, 5, 0, 0, 0, NULL, NULL),
                 LOCO_E_INVALID_ARGUMENT, "points", NULL);
    expect_error(loco_ddim_invert_ts(m, c, LOCO_TIMESTEPS_LEADING, 4, 1, z, 2, 2, NULL, NULL), LOCO_E_INVALID_ARGUMENT,
                 "points", NULL);
    loco_edit_params ep;
    loco_edit_params_init(&ep);
    ep.timesteps = (loco_timesteps)7;
    expect_error(loco_edit_timestep(m, &ep, NULL, NULL), LOCO_E_INVALID_ARGUMENT, "timesteps", NULL);
    loco_cond_free(c);
    loco_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timesteps),      cmocka_unit_test(test_ddim_sampling),
        cmocka_unit_test(test_ddim_inversion), cmocka_unit_test(test_edit_prepare_leading),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
