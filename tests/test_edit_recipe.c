/* test_edit_recipe.c - loco_edit_prepare / loco_edit_render (src/edit_recipe.c)
 * on the reference edit's model and settings (fixtures/edit-small: unet-small,
 * 20 + 20 steps, rank 3, null rank 3, 10..12 iterations, the fixture's
 * starting bases): orthonormal bases, unit directions orthogonal to the null
 * basis, agreement with the reference, determinism, the same bytes as
 * `loco edit`, the constrained variant, what loco_edit_render computes, and
 * hostile arguments refused before any network evaluation. */
#include "testutil.h"

#include <unistd.h>

/* a temporary folder for the CLI's outputs, removed at the end */
static char g_dir[64];
static const char *tpath(const char *name) {
    static char buf[4][256];
    static int k = 0;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

static const char *arrays(void) { return fixture_path("edit-small/arrays.safetensors"); }

enum { C = 3, H = 32, W = 32, N = C * H * W, RANK = 3, NULL_RANK = 3 };

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* max |V V^T - I| over the k rows of V [k, N] */
static double gram_error(const float *V, int k) {
    double worst = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) worst = fmax(worst, fabs(dotd(V + (size_t)i * N, V + (size_t)j * N, N) - (i == j)));
    return worst;
}

/* max |<a_i, b_j>| over the rows of A [ka, N] and B [kb, N] */
static double cross_error(const float *A, int ka, const float *B, int kb) {
    double worst = 0;
    for (int i = 0; i < ka; i++)
        for (int j = 0; j < kb; j++) worst = fmax(worst, fabs(dotd(A + (size_t)i * N, B + (size_t)j * N, N)));
    return worst;
}

static void check_bytes(const char *what, const void *a, const void *b, size_t bytes) {
    if (memcmp(a, b, bytes) != 0) fail_msg("%s: not the same bytes", what);
    printf("  %-44s identical (%zu bytes)\n", what, bytes);
}

/* ---- the fixture's edit, prepared once --------------------------------- */

static loco_model *g_m;
static float *g_x0, *g_v0m, *g_v0n;
static uint8_t g_mask[H * W];
static loco_edit_directions *g_d;

static void fixture_recipe(loco_edit_recipe *p) {
    loco_edit_recipe_init(p);
    p->edit.steps = 20;
    p->edit.inv_steps = 20;
    p->rank = RANK;
    p->null_rank = NULL_RANK;
    p->min_iter = 10;
    p->max_iter = 12;
    p->init_roi = g_v0m;
    p->init_roi_rows = RANK;
    p->init_null = g_v0n;
    p->init_null_rows = NULL_RANK;
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/loco-recipe-XXXXXX");
    if (!mkdtemp(g_dir)) fail_msg("mkdtemp failed");
    if (loco_model_open(fixture_path("unet-small"), &g_m)) fail_msg("unet-small: %s", loco_last_error());
    size_t n;
    g_x0 = load_tensor(arrays(), "x0", &n);
    assert_int_equal(n, N);
    g_v0m = load_tensor(arrays(), "v0_modify", NULL);
    g_v0n = load_tensor(arrays(), "v0_null", NULL);
    /* the fixture's mask: rows 6..15, columns 8..23 */
    if (loco_mask_rect(H, W, 6, 16, 8, 24, g_mask)) fail_msg("%s", loco_last_error());
    float *mf = load_tensor(arrays(), "mask", NULL);
    for (int i = 0; i < H * W; i++)
        for (int c = 0; c < C; c++)
            if ((mf[c * H * W + i] != 0) != (g_mask[i] != 0)) fail_msg("the fixture's mask is not rect 6,16,8,24");
    loco_free(mf);
    loco_edit_recipe p;
    fixture_recipe(&p);
    if (loco_edit_prepare(g_m, &p, g_x0, g_mask, &g_d)) fail_msg("loco_edit_prepare: %s", loco_last_error());
    return 0;
}

static int teardown(void **state) {
    loco_edit_directions_free(g_d);
    loco_free(g_x0);
    loco_free(g_v0m);
    loco_free(g_v0n);
    loco_model_free(g_m);
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) != 0;
}

/* What was computed, and its properties: orthonormal bases, unit directions
 * with their largest entry positive, orthogonal to the null basis, with the
 * mutual inner products of the projected ROI basis; close to the reference. */
static void test_properties(void **s) {
    (void)s;
    loco_edit_info inf;
    CHECK_OK(loco_edit_directions_info(g_d, &inf));
    float tv;
    int gi;
    loco_edit_params ep;
    loco_edit_params_init(&ep);
    ep.steps = ep.inv_steps = 20;
    CHECK_OK(loco_edit_timestep(g_m, &ep, &tv, &gi));
    printf("  t = %.4f (grid index %d), %zu mask pixels, %d network evaluations to invert, rank %d / %d\n",
           (double)inf.t_value, inf.grid_index, inf.mask_pixels, inf.nfe_inversion, inf.rank, inf.null_rank);
    assert_true(inf.t_value == tv && inf.grid_index == gi);
    assert_int_equal(inf.mask_pixels, 160);
    assert_int_equal(inf.nfe_inversion, 18 + 8); /* 18 inversion steps, 8 sampling steps down to t */
    assert_int_equal(inf.n, N);
    assert_true(inf.channels == C && inf.height == H && inf.width == W && inf.rank == RANK && inf.null_rank == NULL_RANK);

    const loco_subspace *roi = loco_edit_directions_subspace(g_d, LOCO_BASIS_ROI),
                        *nul = loco_edit_directions_subspace(g_d, LOCO_BASIS_NULL);
    assert_non_null(roi);
    assert_non_null(nul);
    assert_null(loco_edit_directions_subspace(g_d, LOCO_BASIS_CONSTRAINED));
    assert_int_equal(roi->iters, 12);
    assert_int_equal(roi->l, 480);
    assert_int_equal(nul->l, N - 480);
    const double eg_roi = gram_error(roi->vT, RANK), eg_nul = gram_error(nul->vT, NULL_RANK);
    printf("  ROI basis max |V V^T - I| = %.2e, null basis %.2e (bound 1e-5)\n", eg_roi, eg_nul);
    assert_true(eg_roi < 1e-5 && eg_nul < 1e-5);

    const float *v = loco_edit_directions_vectors(g_d);
    double worst_norm = 0;
    for (int i = 0; i < RANK; i++) {
        const float *r = v + (size_t)i * N;
        worst_norm = fmax(worst_norm, fabs(sqrt(dotd(r, r, N)) - 1));
        size_t big = 0;
        for (size_t e = 1; e < N; e++)
            if (fabsf(r[e]) > fabsf(r[big])) big = e;
        if (!(r[big] > 0)) fail_msg("direction %d: its largest-magnitude entry %g is not positive", i, (double)r[big]);
    }
    const double orth = cross_error(v, RANK, nul->vT, NULL_RANK);
    printf("  directions: max | |v| - 1 | = %.2e (bound 1e-6), max |<v, null basis>| = %.2e (bound 1e-6)\n",
           worst_norm, orth);
    assert_true(worst_norm < 1e-6);
    assert_true(orth < 1e-6);
    /* the projection of orthonormal rows is not orthonormal: the directions'
     * inner products are those of (I - N^T N) V^T, normalised (in double) */
    double *p = malloc(sizeof(double) * RANK * N), worst_g = 0;
    for (int i = 0; i < RANK; i++) {
        double *pi = p + (size_t)i * N;
        for (size_t e = 0; e < N; e++) pi[e] = roi->vT[(size_t)i * N + e];
        for (int j = 0; j < NULL_RANK; j++) {
            const float *nj = nul->vT + (size_t)j * N;
            double d = 0;
            for (size_t e = 0; e < N; e++) d += pi[e] * nj[e];
            for (size_t e = 0; e < N; e++) pi[e] -= d * nj[e];
        }
        double nn = 0;
        for (size_t e = 0; e < N; e++) nn += pi[e] * pi[e];
        for (size_t e = 0; e < N; e++) pi[e] /= sqrt(nn);
    }
    for (int i = 0; i < RANK; i++)
        for (int j = 0; j < RANK; j++) {
            double g = 0, want = 0;
            for (size_t e = 0; e < N; e++) {
                g += (double)v[(size_t)i * N + e] * v[(size_t)j * N + e];
                want += p[(size_t)i * N + e] * p[(size_t)j * N + e];
            }
            worst_g = fmax(worst_g, fabs(g - want));
        }
    free(p);
    printf("  directions' Gram matrix vs the projected ROI basis': max diff %.2e (bound 1e-5)\n", worst_g);
    assert_true(worst_g < 1e-5);

    /* the reference (as test_pipeline checks the pieces) */
    float *ve = load_tensor(arrays(), "vT_edit", NULL), *xt = load_tensor(arrays(), "xt", NULL);
    for (int i = 0; i < RANK; i++) {
        double c = dotd(v + (size_t)i * N, ve + (size_t)i * N, N) / sqrt(dotd(ve + (size_t)i * N, ve + (size_t)i * N, N));
        printf("  direction %d vs the reference vT_edit: |cos| = %.6f (need >= 0.999)\n", i, fabs(c));
        assert_true(fabs(c) >= 0.999);
    }
    CHECK_CLOSE("x_t vs the reference (end to end)", loco_edit_directions_xt(g_d), xt, N, 1e-3);
    loco_free(ve);
    loco_free(xt);
}

/* The same arguments give the same bytes. */
static void test_deterministic(void **s) {
    (void)s;
    loco_edit_recipe p;
    fixture_recipe(&p);
    loco_edit_directions *d;
    CHECK_OK(loco_edit_prepare(g_m, &p, g_x0, g_mask, &d));
    check_bytes("directions, second run", loco_edit_directions_vectors(d), loco_edit_directions_vectors(g_d),
                sizeof(float) * RANK * N);
    check_bytes("x_t, second run", loco_edit_directions_xt(d), loco_edit_directions_xt(g_d), sizeof(float) * N);
    check_bytes("x_T, second run", loco_edit_directions_xT(d), loco_edit_directions_xT(g_d), sizeof(float) * N);
    const loco_subspace *a = loco_edit_directions_subspace(d, LOCO_BASIS_NULL),
                        *b = loco_edit_directions_subspace(g_d, LOCO_BASIS_NULL);
    check_bytes("null basis, second run", a->vT, b->vT, sizeof(float) * NULL_RANK * N);
    check_bytes("null singular values, second run", a->s, b->s, sizeof(float) * NULL_RANK);
    loco_edit_directions_free(d);
}

/* `loco edit` with the same settings writes exactly these numbers. */
static void test_same_as_cli(void **s) {
    (void)s;
    const char *build = getenv("BUILD") && getenv("BUILD")[0] ? getenv("BUILD") : "build";
    const char *F = fixtures_dir();
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "%s/loco edit %s/unet-small --image %s/edit-small/original.png --out %s --steps 20 --inv-steps 20 "
             "--rank 3 --null-rank 3 --min-iter 10 --max-iter 12 --strengths -8,0,8 --rect 6,16,8,24 "
             "--init-basis %s/edit-small/arrays.safetensors --save-tensors --quiet",
             build, F, F, tpath("cli"), F);
    printf("  $ %s\n", cmd);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
    char dfile[300], tfile[300];
    snprintf(dfile, sizeof dfile, "%s", tpath("cli/directions.safetensors"));
    snprintf(tfile, sizeof tfile, "%s", tpath("cli/tensors.safetensors"));
    /* the image as the CLI read it is the fixture's x0 */
    float *x0 = load_tensor(tfile, "x0", NULL);
    check_bytes("x0 read by loco edit vs the fixture's", x0, g_x0, sizeof(float) * N);
    loco_free(x0);
    const loco_subspace *roi = loco_edit_directions_subspace(g_d, LOCO_BASIS_ROI),
                        *nul = loco_edit_directions_subspace(g_d, LOCO_BASIS_NULL);
    struct {
        const char *file, *name;
        const float *ours;
        size_t n;
    } cmp[] = {
        {dfile, "directions", loco_edit_directions_vectors(g_d), (size_t)RANK * N},
        {dfile, "roi_basis", roi->vT, (size_t)RANK * N},
        {dfile, "roi_singular_values", roi->s, RANK},
        {dfile, "null_basis", nul->vT, (size_t)NULL_RANK * N},
        {dfile, "null_singular_values", nul->s, NULL_RANK},
        {dfile, "xt", loco_edit_directions_xt(g_d), N},
        {tfile, "xT", loco_edit_directions_xT(g_d), N},
    };
    char what[128];
    for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
        size_t n;
        float *t = load_tensor(cmp[i].file, cmp[i].name, &n);
        assert_int_equal(n, cmp[i].n);
        snprintf(what, sizeof what, "'%s' of loco edit", cmp[i].name);
        check_bytes(what, t, cmp[i].ours, sizeof(float) * n);
        loco_free(t);
    }
    /* the denoised reconstruction and edits (direction 0 at -8, 0, +8) */
    loco_edit_params ep;
    loco_edit_params_init(&ep);
    ep.steps = ep.inv_steps = 20;
    const float *v = loco_edit_directions_vectors(g_d);
    const loco_edit_move mv[3] = {{v, -8}, {v, 0}, {v, 8}};
    const int per[4] = {0, 1, 1, 1};
    float *img = malloc(sizeof(float) * 4 * N);
    int nfe;
    CHECK_OK(loco_edit_render(g_m, &ep, loco_edit_directions_xt(g_d), 4, per, mv, 3, img, &nfe));
    assert_int_equal(nfe, 4 * 11); /* 11 sampling steps from t down to 0, per image */
    float *recon = load_tensor(tfile, "recon", NULL), *edits = load_tensor(tfile, "edits", NULL);
    check_bytes("'recon' of loco edit", recon, img, sizeof(float) * N);
    check_bytes("'edits' of loco edit", edits, img + N, sizeof(float) * 3 * N);
    loco_free(recon);
    loco_free(edits);
    free(img);
}

/* LOCO_NULL_CONSTRAIN: the same ROI and null bases, and orthonormal
 * directions orthogonal to the null basis from a third iteration. */
static void test_constrained(void **s) {
    (void)s;
    loco_edit_recipe p;
    fixture_recipe(&p);
    p.null_mode = LOCO_NULL_CONSTRAIN;
    loco_edit_directions *d;
    CHECK_OK(loco_edit_prepare(g_m, &p, g_x0, g_mask, &d));
    const loco_subspace *con = loco_edit_directions_subspace(d, LOCO_BASIS_CONSTRAINED),
                        *nul = loco_edit_directions_subspace(d, LOCO_BASIS_NULL);
    assert_non_null(con);
    check_bytes("ROI basis (same as with projection)", loco_edit_directions_subspace(d, LOCO_BASIS_ROI)->vT,
                loco_edit_directions_subspace(g_d, LOCO_BASIS_ROI)->vT, sizeof(float) * RANK * N);
    check_bytes("null basis (same as with projection)", nul->vT,
                loco_edit_directions_subspace(g_d, LOCO_BASIS_NULL)->vT, sizeof(float) * NULL_RANK * N);
    const float *v = loco_edit_directions_vectors(d);
    const double eg = gram_error(v, RANK), orth = cross_error(v, RANK, nul->vT, NULL_RANK);
    printf("  constrained directions: max |V V^T - I| = %.2e (bound 1e-5), max |<v, null basis>| = %.2e (bound "
           "1e-6), %d iterations\n", eg, orth, con->iters);
    assert_true(eg < 1e-5);
    assert_true(orth < 1e-6);
    loco_edit_info inf;
    CHECK_OK(loco_edit_directions_info(d, &inf));
    assert_int_equal(inf.null_mode, LOCO_NULL_CONSTRAIN);
    loco_edit_directions_free(d);
}

/* What loco_edit_render computes: x_t plus the moves in order, then
 * loco_edit_decode; moves_per_image NULL is one move each. */
static void test_render(void **s) {
    (void)s;
    loco_edit_params ep;
    loco_edit_params_init(&ep);
    ep.steps = ep.inv_steps = 20;
    const float *xt = loco_edit_directions_xt(g_d), *v = loco_edit_directions_vectors(g_d);
    const loco_edit_move two[3] = {{v, 3}, {v + N, -2}, {v + 2 * N, 5}};
    const int per[2] = {2, 1};
    float *got = malloc(sizeof(float) * 2 * N), *want = malloc(sizeof(float) * 2 * N);
    CHECK_OK(loco_edit_render(g_m, &ep, xt, 2, per, two, 3, got, NULL));
    for (size_t e = 0; e < N; e++) {
        want[e] = xt[e];
        want[e] += 3.0f * v[e];
        want[e] += -2.0f * v[N + e];
        want[N + e] = xt[e] + 5.0f * v[2 * N + e];
    }
    CHECK_OK(loco_edit_decode(g_m, &ep, 2, want, NULL));
    check_bytes("two moves, then one: as loco_edit_decode", got, want, sizeof(float) * 2 * N);
    CHECK_OK(loco_edit_render(g_m, &ep, xt, 2, NULL, two + 1, 2, got, NULL));
    for (size_t e = 0; e < N; e++) {
        want[e] = xt[e] + -2.0f * v[N + e];
        want[N + e] = xt[e] + 5.0f * v[2 * N + e];
    }
    CHECK_OK(loco_edit_decode(g_m, &ep, 2, want, NULL));
    check_bytes("one move each (moves_per_image NULL)", got, want, sizeof(float) * 2 * N);
    free(got);
    free(want);
}

/* ---- hostile arguments: refused with a message, before any work -------- */

static int g_calls;
static void count_progress(const char *phase, int done, int total, void *user) {
    (void)phase, (void)done, (void)total, (void)user;
    g_calls++;
}

/* prepare must fail with `want` and a message holding n1 (and n2), leave
 * *out NULL, and have evaluated nothing (no progress call); the check alone
 * must say the same when check is set */
static void refused(const loco_edit_recipe *p, const float *x0, const uint8_t *mask, loco_status want, const char *n1,
                    const char *n2, int check) {
    loco_edit_recipe q = *p;
    q.progress = count_progress;
    g_calls = 0;
    loco_edit_directions *d = (loco_edit_directions *)&q; /* not NULL: must be reset */
    loco_status st = loco_edit_prepare(g_m, &q, x0, mask, &d);
    printf("  refused (%s): %s\n", loco_strerror(st), loco_last_error());
    expect_error(st, want, n1, n2);
    assert_null(d);
    assert_int_equal(g_calls, 0);
    if (check) expect_error(loco_edit_recipe_check(g_m, &q, mask), want, n1, n2);
}

static void test_hostile(void **s) {
    (void)s;
    loco_edit_recipe p;
    fixture_recipe(&p);
    loco_edit_directions *d = NULL;
    uint8_t empty[H * W] = {0}, whole[H * W], one[H * W] = {0};
    memset(whole, 1, sizeof whole);
    one[5 * W + 5] = 7; /* any nonzero value is inside */

    /* NULL arguments */
    expect_error(loco_edit_prepare(NULL, &p, g_x0, g_mask, &d), LOCO_E_INVALID_ARGUMENT, "NULL model", NULL);
    expect_error(loco_edit_prepare(g_m, NULL, g_x0, g_mask, &d), LOCO_E_INVALID_ARGUMENT, "NULL recipe", NULL);
    expect_error(loco_edit_prepare(g_m, &p, g_x0, NULL, &d), LOCO_E_INVALID_ARGUMENT, "NULL mask", NULL);
    expect_error(loco_edit_prepare(g_m, &p, NULL, g_mask, &d), LOCO_E_INVALID_ARGUMENT, "NULL image", NULL);
    expect_error(loco_edit_prepare(g_m, &p, g_x0, g_mask, NULL), LOCO_E_INVALID_ARGUMENT, "NULL out", NULL);
    assert_null(d);
    expect_error(loco_edit_recipe_check(g_m, &p, NULL), LOCO_E_INVALID_ARGUMENT, "NULL mask", NULL);
    loco_edit_info inf;
    expect_error(loco_edit_directions_info(NULL, &inf), LOCO_E_INVALID_ARGUMENT, "NULL", NULL);
    assert_null(loco_edit_directions_vectors(NULL));
    assert_null(loco_edit_directions_subspace(NULL, LOCO_BASIS_ROI));
    assert_null(loco_edit_directions_subspace(g_d, (loco_edit_basis)7));
    loco_edit_directions_free(NULL);
    loco_edit_recipe_init(NULL);

    /* masks */
    refused(&p, g_x0, empty, LOCO_E_INVALID_ARGUMENT, "the mask is empty", NULL, 1);
    refused(&p, g_x0, whole, LOCO_E_INVALID_ARGUMENT, "covers the whole image", "null", 1);
    loco_edit_recipe q = p;
    q.null_rank = 0;
    CHECK_OK(loco_edit_recipe_check(g_m, &q, whole)); /* fine without a null space */
    q = p;
    q.rank = 4;
    refused(&q, g_x0, one, LOCO_E_INVALID_ARGUMENT, "rank 4 must be in [1, 3]", "1 pixels x 3 channels", 1);

    /* ranks */
    q = p;
    q.rank = 0;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "rank 0 must be in [1, 480]", NULL, 1);
    q.rank = -5;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "rank -5", NULL, 1);
    q.rank = 2147483647;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "rank 2147483647 must be in [1, 480]", NULL, 1);
    q = p;
    q.null_rank = -1;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "null rank -1", NULL, 1);
    q.null_rank = 1000000;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "null rank 1000000 must be in [0, 2592]", NULL, 1);
    q = p;
    q.null_mode = LOCO_NULL_CONSTRAIN;
    q.null_rank = 0;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "constrained iteration needs a null rank >= 1", NULL, 1);
    q = p;
    q.null_mode = (loco_null_mode)9;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "null_mode 9", NULL, 1);
    q = p;
    q.of = (loco_output)5;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "output 5", NULL, 1);

    /* starting bases too small for the ranks */
    q = p;
    q.init_roi_rows = 2;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "initial ROI basis has 2 rows", "rank 3", 1);
    q = p;
    q.init_null_rows = 0;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "initial null basis has 0 rows", NULL, 1);

    /* iterations, tolerance, oversampling */
    q = p;
    q.min_iter = 13;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "min_iter <= max_iter", "13, 12", 1);
    q = p;
    q.max_iter = 0;
    q.min_iter = 0;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "1 <= max_iter", NULL, 1);
    q = p;
    q.tol = NAN;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "tol", NULL, 1);
    q = p;
    q.oversample = 1001;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "oversample 1001", NULL, 1);

    /* the schedule (as loco_edit_timestep says it) */
    q = p;
    q.edit.t_edit = 1.5f;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "t_edit = 1.5", NULL, 1);
    q = p;
    q.edit.steps = 1;
    refused(&q, g_x0, g_mask, LOCO_E_INVALID_ARGUMENT, "steps (1)", NULL, 1);

    /* a non-finite image */
    float *bad = malloc(sizeof(float) * N);
    memcpy(bad, g_x0, sizeof(float) * N);
    bad[1234] = INFINITY;
    refused(&p, bad, g_mask, LOCO_E_NUMERIC, "element 1234 is not finite", NULL, 0);
    free(bad);

    /* loco_edit_render */
    loco_edit_params ep;
    loco_edit_params_init(&ep);
    ep.steps = ep.inv_steps = 20;
    const float *xt = loco_edit_directions_xt(g_d), *v = loco_edit_directions_vectors(g_d);
    float *out = malloc(sizeof(float) * 2 * N);
    loco_edit_move mv[2] = {{v, 1}, {v, 2}};
    int per[2] = {1, 1}, nfe = 99;
    expect_error(loco_edit_render(g_m, &ep, NULL, 2, per, mv, 2, out, &nfe), LOCO_E_INVALID_ARGUMENT, "NULL", NULL);
    assert_int_equal(nfe, 0);
    expect_error(loco_edit_render(g_m, &ep, xt, 0, per, mv, 2, out, NULL), LOCO_E_INVALID_ARGUMENT, "0 images", NULL);
    expect_error(loco_edit_render(g_m, &ep, xt, 2, per, mv, 1, out, NULL), LOCO_E_INVALID_ARGUMENT,
                 "use 2 moves but 1 are given", NULL);
    expect_error(loco_edit_render(g_m, &ep, xt, 2, NULL, mv, 3, out, NULL), LOCO_E_INVALID_ARGUMENT,
                 "use 2 moves but 3 are given", NULL);
    per[1] = -1;
    expect_error(loco_edit_render(g_m, &ep, xt, 2, per, mv, 0, out, NULL), LOCO_E_INVALID_ARGUMENT, "-1 moves", NULL);
    per[1] = 1;
    mv[1].strength = NAN;
    expect_error(loco_edit_render(g_m, &ep, xt, 2, per, mv, 2, out, NULL), LOCO_E_INVALID_ARGUMENT,
                 "move 1: strength is not finite", NULL);
    mv[1].strength = 2;
    mv[0].direction = NULL;
    expect_error(loco_edit_render(g_m, &ep, xt, 2, per, mv, 2, out, NULL), LOCO_E_INVALID_ARGUMENT,
                 "move 0: NULL direction", NULL);
    mv[0].direction = v;
    ep.t_edit = 0;
    expect_error(loco_edit_render(g_m, &ep, xt, 2, per, mv, 2, out, NULL), LOCO_E_INVALID_ARGUMENT, "t_edit", NULL);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_properties), cmocka_unit_test(test_deterministic), cmocka_unit_test(test_same_as_cli),
        cmocka_unit_test(test_constrained), cmocka_unit_test(test_render),        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
