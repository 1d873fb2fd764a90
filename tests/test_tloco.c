/* test_tloco.c - T-LOCO on Stable Diffusion against the authors' code
 * (tests/fixtures/sd-tiny/tloco-*.safetensors, README there): the authors'
 * float-timestep DDIM sampler with classifier-free guidance from the start
 * noise to the edit step and on to the end, and the decoded result. */
#include "testutil.h"

#include <stdio.h>

static void rel(const char *what, const float *a, const float *ref, size_t n, double tol) {
    CHECK_CLOSE(what, a, ref, n, tol * max_abs(ref, n));
}

/* the sd-tiny pipeline at the fixtures' 32x32 images, with the plain
 * guidance (prompt vs "", 7.5) and, when ce is given, the edit guidance
 * (+ 4.0 toward the glasses prompt) */
static void open_tiny(loco_model **m, loco_cond **c, loco_cond **ce) {
    loco_open_params op;
    loco_open_params_init(&op);
    op.image_size = 32;
    CHECK_OK(loco_model_open_with(fixture_path("sd-tiny/pipeline"), &op, m));
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    cp.prompt = "a photo of a man";
    CHECK_OK(loco_cond_new(*m, &cp, c));
    if (ce) {
        cp.edit_prompt = "a photo of a man wearing glasses";
        CHECK_OK(loco_cond_new(*m, &cp, ce));
    }
}

static void test_sampling(void **state) {
    const char *f = fixture_path("sd-tiny/tloco-semantic.safetensors");
    loco_model *m;
    loco_cond *c;
    open_tiny(&m, &c, NULL);
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

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The semantic T-LOCO direction at the fixture's z_t: the null space of the
 * decoded x0_hat outside the mask (subspace iteration from the authors'
 * starting rows, their 50 steps), the edit direction J_e^T delta (delta: the
 * decoded x0 under the edit guidance minus under the plain one, on the
 * mask), projected off the null space. */
static void test_semantic_direction(void **state) {
    const char *f = fixture_path("sd-tiny/tloco-semantic.safetensors");
    loco_model *m;
    loco_cond *c, *ce;
    open_tiny(&m, &c, &ce);
    size_t n, nm;
    float *zt = load_tensor(f, "zt", &n), *maskf = load_tensor(f, "mask", &nm), *v0n = load_tensor(f, "v0_null", NULL);
    float *vnull_ref = load_tensor(f, "vT_null", NULL), *snull_ref = load_tensor(f, "s_null", NULL);
    float *vmod_ref = load_tensor(f, "vT_modify", NULL), *vT_ref = load_tensor(f, "vT", NULL);
    uint8_t *mask = malloc(nm), *outside = malloc(nm);
    for (size_t i = 0; i < nm; i++) mask[i] = maskf[i] != 0, outside[i] = !mask[i];
    float grid[100];
    CHECK_OK(loco_ddim_grid(100, 1000, grid));
    const float t = grid[69];
    loco_lin *L, *Le;
    CHECK_OK(loco_linearize_cond(m, zt, t, c, &L));
    CHECK_OK(loco_linearize_cond(m, zt, t, ce, &Le));
    /* the edit direction */
    const float *x0 = loco_lin_value(L, LOCO_OUT_IMAGE), *x0e = loco_lin_value(Le, LOCO_OUT_IMAGE);
    assert_non_null(x0);
    assert_non_null(x0e);
    const size_t l = loco_lin_image_mask_count(L, mask);
    float *delta = malloc(sizeof(float) * l), *v = malloc(sizeof(float) * n);
    size_t j = 0;
    for (size_t i = 0; i < nm; i++)
        if (mask[i]) delta[j++] = x0e[i] - x0[i];
    CHECK_OK(loco_lin_vjp(Le, LOCO_OUT_IMAGE, mask, 1, delta, v));
    const double nv = sqrt(dotd(v, v, n));
    for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] / nv);
    CHECK_CLOSE("J_e^T delta / |.| (vT_modify)", v, vmod_ref, n, 1e-4);
    /* the null space: 5 directions, 50 iterations from v0_null */
    loco_subspace_params sp;
    loco_subspace_params_init(&sp);
    sp.rank = 5;
    sp.min_iter = sp.max_iter = 50;
    sp.tol = 0;
    sp.init = v0n;
    sp.of = LOCO_OUT_IMAGE;
    loco_subspace ns;
    CHECK_OK(loco_subspace_iteration(L, outside, &sp, &ns));
    float sq[5];
    for (int i = 0; i < 5; i++) sq[i] = ns.s[i];
    CHECK_CLOSE("null-space singular values (s_null)", sq, snull_ref, 5, 1e-3 * snull_ref[0]);
    /* the same subspace: |det| of the 5x5 overlap is 1 */
    double G[25];
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) G[a * 5 + b] = dotd(ns.vT + (size_t)a * n, vnull_ref + (size_t)b * n, n);
    /* Gram determinant by elimination */
    double det = 1;
    for (int k = 0; k < 5; k++) {
        int piv = k;
        for (int i = k + 1; i < 5; i++)
            if (fabs(G[i * 5 + k]) > fabs(G[piv * 5 + k])) piv = i;
        if (piv != k)
            for (int q = 0; q < 5; q++) {
                double tmp = G[k * 5 + q];
                G[k * 5 + q] = G[piv * 5 + q];
                G[piv * 5 + q] = tmp;
            }
        det *= G[k * 5 + k];
        for (int i = k + 1; i < 5; i++) {
            double fct = G[i * 5 + k] / G[k * 5 + k];
            for (int q = k; q < 5; q++) G[i * 5 + q] -= fct * G[k * 5 + q];
        }
    }
    printf("  |det(V_null V_null_ref^T)| = %.9f (1: the same subspace)\n", fabs(det));
    assert_true(fabs(fabs(det) - 1) < 1e-3);
    /* the direction projected off the null space */
    CHECK_OK(loco_project_directions(1, n, v, 5, ns.vT));
    if (dotd(v, vT_ref, n) < 0) fail_msg("the semantic direction points the other way");
    CHECK_CLOSE("the edit direction vT", v, vT_ref, n, 1e-4);
    /* the edits: z_t - 8 v, z_t, z_t + 8 v, sampled to the end with the
     * plain guidance, decoded */
    size_t ne;
    float *ez_ref = load_tensor(f, "edit_zt_pc0", &ne), *e0_ref = load_tensor(f, "edit_z0_pc0", NULL),
          *ei_ref = load_tensor(f, "edit_image_raw_pc0", NULL);
    assert_int_equal(ne, 3 * n);
    float *ez = malloc(sizeof(float) * 3 * n), *img = malloc(sizeof(float) * 3 * 3 * 32 * 32);
    const float s3[3] = {-8, 0, 8};
    for (int b = 0; b < 3; b++)
        for (size_t i = 0; i < n; i++) ez[b * n + i] = zt[i] + s3[b] * v[i];
    CHECK_CLOSE("edited latents at the edit step", ez, ez_ref, 3 * n, 1e-4 * max_abs(ez_ref, 3 * n));
    CHECK_OK(loco_ddim_sample_cond(m, c, 3, ez, grid, 69, 0, 0, 0, NULL, NULL));
    CHECK_CLOSE("edited latents at the end", ez, e0_ref, 3 * n, 1e-4 * max_abs(e0_ref, 3 * n));
    CHECK_OK(loco_model_decode(m, 3, ez, img));
    CHECK_CLOSE("edited images (raw)", img, ei_ref, 3 * 3 * 32 * 32, 1e-3 * max_abs(ei_ref, 3 * 3 * 32 * 32));
    free(ez);
    free(img);
    loco_free(ez_ref);
    loco_free(e0_ref);
    loco_free(ei_ref);
    loco_subspace_free(&ns);
    loco_lin_free(L);
    loco_lin_free(Le);
    free(delta);
    free(v);
    free(mask);
    free(outside);
    loco_free(zt);
    loco_free(maskf);
    loco_free(v0n);
    loco_free(vnull_ref);
    loco_free(snull_ref);
    loco_free(vmod_ref);
    loco_free(vT_ref);
    loco_cond_free(c);
    loco_cond_free(ce);
    loco_model_free(m);
}

/* The same edit through the library's recipe (loco_edit_prepare and
 * loco_edit_render), as `loco edit` runs it */
static void test_recipe(void **state) {
    const char *f = fixture_path("sd-tiny/tloco-semantic.safetensors");
    loco_model *m;
    loco_cond *c, *ce;
    open_tiny(&m, &c, &ce);
    size_t n, nm;
    float *zT = load_tensor(f, "zT", &n), *maskf = load_tensor(f, "mask", &nm), *v0n = load_tensor(f, "v0_null", NULL);
    float *zt_ref = load_tensor(f, "zt", NULL), *vT_ref = load_tensor(f, "vT", NULL),
          *e0_ref = load_tensor(f, "edit_z0_pc0", NULL);
    uint8_t mask[32 * 32];
    for (int i = 0; i < 32 * 32; i++) mask[i] = maskf[i] != 0; /* channel 0 of [3, 32, 32] */
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit.t_edit = 0.7f;
    rp.edit.cond = c;
    rp.edit_cond = ce;
    rp.start_latent = zT;
    rp.rank = 1;
    rp.null_rank = 5;
    rp.min_iter = rp.max_iter = 50;
    rp.tol = 0;
    rp.init_null = v0n;
    rp.init_null_rows = 5;
    loco_edit_directions *d;
    CHECK_OK(loco_edit_prepare(m, &rp, NULL, mask, &d));
    CHECK_CLOSE("recipe: z_t", loco_edit_directions_xt(d), zt_ref, n, 1e-4 * max_abs(zt_ref, n));
    CHECK_CLOSE("recipe: the edit direction", loco_edit_directions_vectors(d), vT_ref, n, 1e-4);
    loco_edit_move mv[3] = {{loco_edit_directions_vectors(d), -8}, {loco_edit_directions_vectors(d), 0},
                            {loco_edit_directions_vectors(d), 8}};
    float *ez = malloc(sizeof(float) * 3 * n);
    int nfe = 0;
    CHECK_OK(loco_edit_render(m, &rp.edit, loco_edit_directions_xt(d), 3, NULL, mv, 3, ez, &nfe));
    CHECK_CLOSE("recipe: edited latents at the end", ez, e0_ref, 3 * n, 1e-4 * max_abs(e0_ref, 3 * n));
    free(ez);
    loco_edit_directions_free(d);
    /* hostile: no prompt for a text-to-image model, rank 2 with an edit prompt */
    loco_edit_directions *bad = NULL;
    rp.edit.cond = NULL;
    expect_error(loco_edit_prepare(m, &rp, NULL, mask, &bad), LOCO_E_INVALID_ARGUMENT, "prompt", NULL);
    rp.edit.cond = c;
    rp.rank = 2;
    expect_error(loco_edit_prepare(m, &rp, NULL, mask, &bad), LOCO_E_INVALID_ARGUMENT, "one direction", NULL);
    assert_null(bad);
    loco_free(zT);
    loco_free(maskf);
    loco_free(v0n);
    loco_free(zt_ref);
    loco_free(vT_ref);
    loco_free(e0_ref);
    loco_cond_free(c);
    loco_cond_free(ce);
    loco_model_free(m);
}

/* |det| of the r x r overlap of two orthonormal row blocks (1: the same
 * subspace) */
static double overlap_det(int r, size_t n, const float *A, const float *B) {
    double G[64];
    for (int a = 0; a < r; a++)
        for (int b = 0; b < r; b++) G[a * r + b] = dotd(A + (size_t)a * n, B + (size_t)b * n, n);
    double det = 1;
    for (int k = 0; k < r; k++) {
        int piv = k;
        for (int i = k + 1; i < r; i++)
            if (fabs(G[i * r + k]) > fabs(G[piv * r + k])) piv = i;
        if (piv != k)
            for (int q = 0; q < r; q++) {
                double t = G[k * r + q];
                G[k * r + q] = G[piv * r + q];
                G[piv * r + q] = t;
            }
        det *= G[k * r + k];
        if (G[k * r + k] == 0) return 0;
        for (int i = k + 1; i < r; i++) {
            double f = G[i * r + k] / G[k * r + k];
            for (int q = k; q < r; q++) G[i * r + q] -= f * G[k * r + q];
        }
    }
    return fabs(det);
}

/* The unsupervised T-LOCO edit (the authors' nonsemantic case): 5
 * directions inside the mask, 5 null directions outside, 50 iterations from
 * their starting rows; compared as subspaces (the README: row signs are an
 * accident of rounding) */
static void test_nonsemantic(void **state) {
    const char *f = fixture_path("sd-tiny/tloco-nonsemantic.safetensors");
    loco_model *m;
    loco_cond *c;
    open_tiny(&m, &c, NULL);
    size_t n, nm;
    float *zT = load_tensor(f, "zT", &n), *maskf = load_tensor(f, "mask", &nm), *v0n = load_tensor(f, "v0_null", NULL),
          *v0m = load_tensor(f, "v0_modify", NULL), *vn_ref = load_tensor(f, "vT_null", NULL),
          *vm_ref = load_tensor(f, "vT_modify", NULL), *sm_ref = load_tensor(f, "s_modify", NULL),
          *vT_ref = load_tensor(f, "vT", NULL);
    uint8_t mask[32 * 32];
    for (int i = 0; i < 32 * 32; i++) mask[i] = maskf[i] != 0;
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit.t_edit = 0.7f;
    rp.edit.cond = c;
    rp.start_latent = zT;
    rp.rank = 5;
    rp.null_rank = 5;
    rp.min_iter = rp.max_iter = 50;
    rp.tol = 0;
    rp.init_roi = v0m;
    rp.init_roi_rows = 5;
    rp.init_null = v0n;
    rp.init_null_rows = 5;
    loco_edit_directions *d;
    CHECK_OK(loco_edit_prepare(m, &rp, NULL, mask, &d));
    const loco_subspace *roi = loco_edit_directions_subspace(d, LOCO_BASIS_ROI),
                        *nul = loco_edit_directions_subspace(d, LOCO_BASIS_NULL);
    float s5[5];
    for (int i = 0; i < 5; i++) s5[i] = roi->s[i];
    CHECK_CLOSE("ROI singular values (s_modify)", s5, sm_ref, 5, 1e-3 * sm_ref[0]);
    const double dr = overlap_det(5, n, roi->vT, vm_ref), dn = overlap_det(5, n, nul->vT, vn_ref),
                 dd = overlap_det(5, n, loco_edit_directions_vectors(d), vT_ref);
    printf("  |det| of the overlaps: ROI %.9f, null %.9f, directions %.9f (1: the same subspace)\n", dr, dn, dd);
    assert_true(fabs(dr - 1) < 1e-3 && fabs(dn - 1) < 1e-3 && fabs(dd - 1) < 1e-3);
    loco_edit_directions_free(d);
    loco_free(zT);
    loco_free(maskf);
    loco_free(v0n);
    loco_free(v0m);
    loco_free(vn_ref);
    loco_free(vm_ref);
    loco_free(sm_ref);
    loco_free(vT_ref);
    loco_cond_free(c);
    loco_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_semantic_direction),
        cmocka_unit_test(test_recipe),
        cmocka_unit_test(test_nonsemantic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
