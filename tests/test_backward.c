/* test_backward.c - training backpropagation (src/backward.c): parameter
 * gradients and the x cotangent of L = sum(c * eps), on a tiny config written
 * here (two blocks, 4-head attention, centred input, mid-block scale 1.5,
 * every parameter perturbed so that GN gammas are not 1 nor biases 0) and on
 * the unet-small fixture; plus the new kernels against plain loops.
 *
 * 1. Finite differences (fd_check has the details). The loss is evaluated
 *    with loco_model_eps (the plain forward pass, not the training one) in
 *    float32 and summed in double; directions are scaled per tensor by the
 *    tensor's rms, so steps are relative. Central differences at six steps
 *    h0 2^-k, Richardson-extrapolated (error O(h^4)), at the step where
 *    three consecutive estimates agree best (curvature vs rounding; chosen
 *    from the differences alone), compared with <grad, d> for the steps
 *    actually applied in float32. Tolerance FD_TOL = 1e-3 relative; the
 *    observed errors are ~1e-5..3e-4, the differences' own spread must be
 *    below FD_TOL, and a gradient 1% off must fail (checked on every check).
 *    With the random c of L, float32 rounding of L limits the differences
 *    to ~1e-3 on unet-small, so most checks use c = J d (see fd_check):
 *    random c on all parameters and on x (tiny), on x (unet-small); c = J d
 *    on all parameters, every tensor of the tiny model, single entries.
 *    to_k.bias has an exact zero gradient (softmax ignores it): checked ~0.
 * 2. The x cotangent equals U^T J of a batch-1 linearization (src/linearize.c).
 * 3. A batch of 3 (different t per image) equals three batches of 1.
 * 4. Gradients accumulate (+=); the record is consumed by one backward;
 *    hostile arguments. */
#include <errno.h>
#include <unistd.h>

#include "testutil.h"
#include "graph/backward.h"
#include "model.h"
#include "families/unet2d.h"
#include "ops.h"

#define FD_TOL 1e-3

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void randn(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = (s >> 11) / 9007199254740992.0;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

/* ======================================================================== */
/* Models                                                                   */
/* ======================================================================== */

static char g_dir[64];

static const char *tiny_config =
    "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 8, \"in_channels\": 3, \"out_channels\": 3,\n"
    " \"center_input_sample\": true, \"flip_sin_to_cos\": false, \"freq_shift\": 1,\n"
    " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],\n"
    " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"],\n"
    " \"block_out_channels\": [8, 16], \"layers_per_block\": 1, \"norm_num_groups\": 4,\n"
    " \"attention_head_dim\": 4, \"mid_block_scale_factor\": 1.5, \"downsample_padding\": 0,\n"
    " \"norm_eps\": 1e-5}\n";

/* the (64, 128, 128) one-layer-per-block 32x32 config of the memory report */
static const char *mid_config =
    "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 32, \"in_channels\": 3, \"out_channels\": 3,\n"
    " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\"],\n"
    " \"up_block_types\": [\"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"],\n"
    " \"block_out_channels\": [64, 128, 128], \"layers_per_block\": 1, \"norm_num_groups\": 32,\n"
    " \"attention_head_dim\": null, \"downsample_padding\": 0, \"freq_shift\": 1, \"flip_sin_to_cos\": false,\n"
    " \"norm_eps\": 1e-6}\n";

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) fail_msg("%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static char *in_dir(const char *name) {
    static char buf[4][256];
    static int k = 0;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/loco_bwdXXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    write_text(in_dir("config.json"), tiny_config);
    write_text(in_dir("mid.json"), mid_config);
    if (loco_model_init_random(in_dir("config.json"), g_dir, 5, LOCO_DTYPE_F32) != LOCO_OK) return -1;
    return 0;
}

static int teardown(void **st) {
    (void)st;
    remove(in_dir("config.json"));
    remove(in_dir("mid.json"));
    remove(in_dir("diffusion_pytorch_model.safetensors"));
    rmdir(g_dir);
    return 0;
}

static const char *ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0 ? s + a - b : NULL;
}

/* The tiny model with every parameter perturbed: GN gammas 1 + 0.3 N(0,1),
 * biases (GN betas included) 0.2 N(0,1), weights + 0.5 rms N(0,1). */
static loco_model *open_tiny(void) {
    loco_model *m;
    CHECK_OK(loco_model_open(g_dir, &m));
    graph *u = model_graph(m);
    for (int p = 0; p < u->n_params; p++) {
        const param *pp = &u->params[p];
        float *w = u->pdata + pp->off;
        float *r = falloc(pp->numel);
        randn(r, pp->numel, 1000 + (uint64_t)p);
        double ss = dot(w, w, pp->numel), rms = sqrt(ss / (double)pp->numel);
        for (size_t i = 0; i < pp->numel; i++) {
            if (pp->is_gn_weight) w[i] = 1.0f + 0.3f * r[i];
            else if (ends_with(pp->name, ".bias")) w[i] = 0.2f * r[i];
            else w[i] += (float)(0.5 * rms) * r[i];
        }
        free(r);
    }
    return m;
}

static int param_id(const graph *u, const char *name) {
    for (int p = 0; p < u->n_params; p++)
        if (strcmp(u->params[p].name, name) == 0) return p;
    fail_msg("no parameter '%s'", name);
    return -1;
}

static size_t n_in(const graph *u) { return graph_value_size(u, u->x_in); }
static size_t n_out(const graph *u) { return graph_value_size(u, u->t_out); }

/* grad (accumulated into) and dx of L = sum(c * eps) at batch B */
static void train_grad(const graph *u, int B, const float *x, const float *t, const float *c, float *grad, float *dx,
                       float *eps) {
    graph_train *tr;
    CHECK_OK(graph_train_new(u, B, &tr));
    CHECK_OK(graph_train_forward(tr, x, t, eps));
    CHECK_OK(graph_train_backward(tr, c, grad, dx));
    graph_train_free(tr);
}

/* ======================================================================== */
/* Finite differences                                                       */
/* ======================================================================== */

#define FD_LEVELS 6

typedef struct fd_ctx {
    loco_model *m;
    graph_train *tr;
    int B;
    size_t no;            /* outputs of the batch                              */
    const float *x, *t;   /* the point (x is switched to xbuf for x steps)     */
    const float *x0;
    float *eps, *eps2, *theta0, *xbuf, *c, *g, *dxg;
    double *fdv;          /* [FD_LEVELS][no] central differences of eps        */
    double worst;         /* largest error seen                                */
    int n_checks;
} fd_ctx;

static void fd_setup(fd_ctx *f, loco_model *m, int B, const float *x, const float *t) {
    const graph *u = model_graph(m);
    memset(f, 0, sizeof *f);
    f->m = m;
    f->B = B;
    f->x = f->x0 = x;
    f->t = t;
    f->no = n_out(u) * (size_t)B;
    f->eps = falloc(f->no);
    f->eps2 = falloc(f->no);
    f->c = falloc(f->no);
    f->theta0 = falloc(u->total_params);
    f->g = falloc(u->total_params);
    f->xbuf = falloc(n_in(u) * (size_t)B);
    f->dxg = falloc(n_in(u) * (size_t)B);
    f->fdv = calloc((size_t)FD_LEVELS * f->no, sizeof(double));
    assert_non_null(f->fdv);
    memcpy(f->theta0, u->pdata, u->total_params * sizeof(float));
    CHECK_OK(graph_train_new(u, B, &f->tr));
}

static void fd_teardown(fd_ctx *f) {
    /* the parameters are back where they were */
    assert_memory_equal(model_graph(f->m)->pdata, f->theta0, model_graph(f->m)->total_params * sizeof(float));
    graph_train_free(f->tr);
    free(f->eps);
    free(f->eps2);
    free(f->c);
    free(f->theta0);
    free(f->g);
    free(f->xbuf);
    free(f->dxg);
    free(f->fdv);
}

/* the vector being stepped: n floats of the parameters at off, or x */
static float *fd_target(fd_ctx *f, size_t off, const float **t0) {
    if (off == SIZE_MAX) {
        *t0 = f->x0;
        return f->xbuf;
    }
    *t0 = f->theta0 + off;
    return model_graph(f->m)->pdata + off;
}

/* theta (or x) = t0 + sgn h d, rounded to float32 as the forward sees it */
static void fd_step(float *th, const float *t0, const float *d, size_t n, double h) {
    for (size_t i = 0; i < n; i++) th[i] = (float)(t0[i] + h * d[i]);
}

/* fdv[k] = (eps(+h_k d) - eps(-h_k d)) / 2 h_k, h_k = h0 2^-k */
static void fd_levels(fd_ctx *f, size_t off, size_t n, const float *d, double h0) {
    const float *t0;
    float *th = fd_target(f, off, &t0);
    if (off == SIZE_MAX) f->x = f->xbuf;
    for (int k = 0; k < FD_LEVELS; k++) {
        const double hk = h0 / (double)(1 << k);
        fd_step(th, t0, d, n, hk);
        CHECK_OK(loco_model_eps(f->m, f->B, f->x, f->t, f->eps));
        fd_step(th, t0, d, n, -hk);
        CHECK_OK(loco_model_eps(f->m, f->B, f->x, f->t, f->eps2));
        double *v = f->fdv + (size_t)k * f->no;
        for (size_t i = 0; i < f->no; i++) v[i] = ((double)f->eps[i] - (double)f->eps2[i]) / (2 * hk);
    }
    memcpy(th, t0, n * sizeof(float));
    f->x = f->x0;
}

/* <g, (step(+h) - step(-h)) / 2h>: the analytic derivative for the steps
 * actually taken */
static double fd_analytic(fd_ctx *f, size_t off, size_t n, const float *d, const float *g, double h) {
    const float *t0;
    fd_target(f, off, &t0);
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        float p = (float)(t0[i] + h * d[i]), m = (float)(t0[i] - h * d[i]);
        s += (double)g[i] * ((double)p - (double)m);
    }
    return s / (2 * h);
}

/* Checks the gradient along d (n floats at parameter offset off, already
 * scaled; off = SIZE_MAX: along x, checking dx) for L = sum(c * eps).
 *
 * c: the given cotangent with its gradient g (and dx), or, when c is NULL,
 * c = J d itself (from the differences), whose gradient is then computed
 * here. L's float32 rounding noise is ~ |c| sigma (sigma ~ 1e-7..1e-6 per
 * entry of eps) whatever c, but its change along d is <c, J d>, which for a
 * random c is only ~ |c| |J d| / sqrt(n): aligning c with J d gains sqrt(n)
 * (20x on the tiny batch, 55x on unet-small) in signal-to-noise.
 *
 * The estimate is Richardson's R_k = (4 D_{k+1} - D_k) / 3 (error O(h^4))
 * at the level where three consecutive R agree best: large steps suffer from
 * curvature, small ones from rounding (~ noise / h); the choice looks only at
 * the differences, never at the gradient. That spread must itself be below
 * FD_TOL (else the differences cannot judge), the gradient must agree
 * within FD_TOL, and a gradient 1% off must not. */
static void fd_check(fd_ctx *f, const char *what, size_t off, size_t n, const float *d, double h0, const float *c,
                     const float *g) {
    const graph *u = model_graph(f->m);
    fd_levels(f, off, n, d, h0);
    if (!c) {
        /* c = J d from the middle levels, scaled to max |c| = 1 */
        const double *a = f->fdv + 2 * f->no, *b = f->fdv + 3 * f->no;
        double mx = 0;
        for (size_t i = 0; i < f->no; i++) mx = fmax(mx, fabs((4 * b[i] - a[i]) / 3));
        if (!(mx > 0)) fail_msg("%s: eps does not change along the direction", what);
        for (size_t i = 0; i < f->no; i++) f->c[i] = (float)((4 * b[i] - a[i]) / 3 / mx);
        c = f->c;
        memset(f->g, 0, u->total_params * sizeof(float));
        CHECK_OK(graph_train_forward(f->tr, f->x0, f->t, NULL));
        CHECK_OK(graph_train_backward(f->tr, c, f->g, f->dxg));
        g = off == SIZE_MAX ? f->dxg : f->g + off;
    }
    double D[FD_LEVELS], R[FD_LEVELS - 1];
    for (int k = 0; k < FD_LEVELS; k++) {
        const double *v = f->fdv + (size_t)k * f->no;
        double s = 0;
        for (size_t i = 0; i < f->no; i++) s += (double)c[i] * v[i];
        D[k] = s;
    }
    for (int k = 0; k + 1 < FD_LEVELS; k++) R[k] = (4 * D[k + 1] - D[k]) / 3;
    int best = 1;
    double spread = INFINITY;
    for (int k = 0; k + 3 < FD_LEVELS; k++) {
        /* three consecutive estimates (a pair can agree by chance) */
        double e = fmax(fabs(R[k] - R[k + 1]), fabs(R[k + 1] - R[k + 2])) / fabs(R[k + 1]);
        if (e < spread) spread = e, best = k + 1;
    }
    const double h = h0 / (double)(1 << best);
    const double fd = R[best], an = (4 * fd_analytic(f, off, n, d, g, h / 2) - fd_analytic(f, off, n, d, g, h)) / 3;
    const double err = fabs(fd - an) / fabs(an), err_bad = fabs(fd - 1.01 * an) / fabs(1.01 * an);
    printf("  %-50s <g,d> % .6e FD % .6e (h %.4f, spread %.0e) rel err %.1e\n", what, an, fd, h / 2, spread, err);
    if (!(spread <= FD_TOL)) fail_msg("%s: finite differences too noisy to judge (spread %.2e)", what, spread);
    if (!(err <= FD_TOL)) fail_msg("%s: gradient vs finite differences: relative error %.2e > %.0e", what, err, FD_TOL);
    if (!(err_bad > FD_TOL)) fail_msg("%s: a gradient 1%% off would pass (%.2e)", what, err_bad);
    if (err > f->worst) f->worst = err;
    f->n_checks++;
}

static double tensor_rms(const float *w, size_t n) {
    double r = sqrt(dot(w, w, n) / (double)n);
    return r > 1e-3 ? r : 1e-3;
}

/* to_k.bias adds q^T b_k to every score of a query's row: softmax ignores
 * it, so its gradient is exactly 0 (FD would only measure noise) */
static int zero_grad_param(const param *p) { return ends_with(p->name, "to_k.bias") != NULL; }

/* Direction over all parameters, each tensor scaled by its rms; c random
 * (with its gradient g) or aligned (c NULL). */
static void fd_all(fd_ctx *f, uint64_t seed, double h0, const float *c, const float *g) {
    const graph *u = model_graph(f->m);
    float *d = falloc(u->total_params);
    randn(d, u->total_params, seed);
    for (int p = 0; p < u->n_params; p++) {
        const param *pp = &u->params[p];
        float s = (float)tensor_rms(f->theta0 + pp->off, pp->numel);
        for (size_t i = 0; i < pp->numel; i++) d[pp->off + i] *= s;
    }
    fd_check(f, c ? "all parameters, random direction, random c" : "all parameters, random direction, c = J d", 0,
             u->total_params, d, h0, c, g);
    free(d);
}

/* x: a random direction */
static void fd_x(fd_ctx *f, uint64_t seed, double h0, const float *c, const float *dx) {
    const size_t n = n_in(model_graph(f->m)) * (size_t)f->B;
    float *d = falloc(n);
    randn(d, n, seed);
    fd_check(f, c ? "x (dx), random direction, random c" : "x (dx), random direction, c = J d", SIZE_MAX, n, d, h0, c,
             dx);
    free(d);
}

/* one random direction per tensor (every tensor, or those named), c = J d */
static void fd_tensors(fd_ctx *f, const char *const *names, int n_names, uint64_t seed, double h0) {
    const graph *u = model_graph(f->m);
    for (int q = 0; q < (names ? n_names : u->n_params); q++) {
        int p = names ? param_id(u, names[q]) : q;
        const param *pp = &u->params[p];
        if (zero_grad_param(pp)) continue;
        float *d = falloc(pp->numel);
        randn(d, pp->numel, seed + (uint64_t)p);
        float s = (float)tensor_rms(f->theta0 + pp->off, pp->numel);
        for (size_t i = 0; i < pp->numel; i++) d[i] *= s;
        fd_check(f, pp->name, pp->off, pp->numel, d, h0, NULL, NULL);
        free(d);
    }
}

/* single entries, c = J e_i: the entry with the largest |gradient| under the
 * random c (g), and (both) a random entry among those with at least 10% of it */
static void fd_entries(fd_ctx *f, const char *const *names, int n_names, const float *gref, double h0, int both) {
    const graph *u = model_graph(f->m);
    for (int q = 0; q < n_names; q++) {
        int p = param_id(u, names[q]);
        const param *pp = &u->params[p];
        const float *g = gref + pp->off;
        size_t imax = 0;
        for (size_t i = 1; i < pp->numel; i++)
            if (fabsf(g[i]) > fabsf(g[imax])) imax = i;
        size_t pick = imax;
        uint64_t s = 77 + (uint64_t)p;
        for (int tries = 0; tries < 1000; tries++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t i = (size_t)((s >> 33) % pp->numel);
            if (i != imax && fabsf(g[i]) >= 0.1f * fabsf(g[imax])) {
                pick = i;
                break;
            }
        }
        const size_t idx[2] = {imax, pick};
        for (int k = 0; k < (both && pick != imax ? 2 : 1); k++) {
            float d = (float)tensor_rms(f->theta0 + pp->off, pp->numel);
            char what[160];
            snprintf(what, sizeof what, "%s[%zu]", pp->name, idx[k]);
            fd_check(f, what, pp->off + idx[k], 1, &d, h0, NULL, NULL);
        }
    }
}

/* the to_k biases: gradient 0 up to rounding, next to the largest */
static void check_zero_grads(const graph *u, const float *g) {
    double gmax = max_abs(g, u->total_params), worst = 0;
    int n = 0;
    for (int p = 0; p < u->n_params; p++)
        if (zero_grad_param(&u->params[p])) {
            worst = fmax(worst, max_abs(g + u->params[p].off, u->params[p].numel));
            n++;
        }
    printf("  %d to_k.bias tensors: max |grad| %.1e (max |grad| overall %.1e)\n", n, worst, gmax);
    if (!(worst <= 1e-6 * gmax)) fail_msg("to_k.bias gradient %.2e is not ~0", worst);
}

static const char *const tiny_entries[] = {
    "down_blocks.0.resnets.0.conv1.weight",          "down_blocks.1.resnets.0.conv1.bias",
    "up_blocks.1.resnets.1.norm2.weight",            "mid_block.attentions.0.to_q.weight",
    "time_embedding.linear_1.weight",                "up_blocks.0.resnets.0.time_emb_proj.bias",
    "down_blocks.1.resnets.0.conv_shortcut.weight",  "up_blocks.0.attentions.1.group_norm.bias",
    "conv_in.weight",                                "conv_out.bias",
};

static void test_tiny_finite_differences(void **st) {
    (void)st;
    loco_model *m = open_tiny();
    const graph *u = model_graph(m);
    const int B = 2;
    const size_t ni = n_in(u) * B, no = n_out(u) * B;
    float *x = falloc(ni), *c = falloc(no), *dx = falloc(ni), *eps = falloc(no), *eps_ref = falloc(no);
    float *grad = falloc(u->total_params);
    const float t[2] = {37.5f, 811.0f};
    randn(x, ni, 1);
    randn(c, no, 2);
    train_grad(u, B, x, t, c, grad, dx, eps);
    CHECK_OK(loco_model_eps(m, B, x, t, eps_ref));
    CHECK_CLOSE("training forward eps == loco_model_eps", eps, eps_ref, no, 1e-6 * max_abs(eps_ref, no));
    /* some 2000 forward passes of a network whose ops are too small to
     * share between threads (and a busy machine makes thread hand-offs slow) */
    const int threads = loco_get_threads();
    loco_set_threads(1);
    fd_ctx f;
    fd_setup(&f, m, B, x, t);
    printf("tiny config, B=2, t = {37.5, 811}, %zu parameters in %d tensors (steps h x rms):\n", u->total_params,
           u->n_params);
    fd_all(&f, 3, 0.2, c, grad);
    fd_x(&f, 4, 0.2, c, dx);
    fd_all(&f, 3, 0.2, NULL, NULL);
    fd_x(&f, 4, 0.2, NULL, NULL);
    fd_tensors(&f, NULL, 0, 5, 0.2);
    printf(" single entries:\n");
    fd_entries(&f, tiny_entries, (int)(sizeof tiny_entries / sizeof tiny_entries[0]), grad, 0.8, 1);
    check_zero_grads(u, grad);
    printf("  %d finite-difference checks, worst relative error %.2e (tol %.0e)\n", f.n_checks, f.worst, FD_TOL);
    fd_teardown(&f);
    loco_set_threads(threads);
    free(x);
    free(c);
    free(dx);
    free(eps);
    free(eps_ref);
    free(grad);
    loco_model_free(m);
}

static const char *const small_tensors[] = {
    "time_embedding.linear_1.weight",
    "down_blocks.1.resnets.0.conv_shortcut.weight",
    "mid_block.attentions.0.to_out.0.weight",
    "conv_out.weight",
};

static const char *const small_entries[] = {
    "down_blocks.0.resnets.0.conv1.weight",
    "mid_block.resnets.1.time_emb_proj.bias",
};

static void test_small_finite_differences(void **st) {
    (void)st;
    loco_model *m;
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &m));
    const graph *u = model_graph(m);
    const size_t ni = n_in(u), no = n_out(u);
    float *x = load_tensor(fixture_path("unet-small/vectors.safetensors"), "x", NULL);
    float *t = load_tensor(fixture_path("unet-small/vectors.safetensors"), "t", NULL);
    float *eps_ref = load_tensor(fixture_path("unet-small/vectors.safetensors"), "eps", NULL);
    float *c = falloc(no), *dx = falloc(ni), *eps = falloc(no), *grad = falloc(u->total_params);
    randn(c, no, 12);
    train_grad(u, 1, x, t, c, grad, dx, eps);
    CHECK_CLOSE("training forward eps vs the fixture's eps", eps, eps_ref, no, 1e-4);
    fd_ctx f;
    fd_setup(&f, m, 1, x, t);
    printf("unet-small, B=1, t = %.5f (steps h x rms):\n", t[0]);
    /* (with a random c, L's rounding noise here is as large as FD_TOL: see
     * fd_check; the all-parameter direction is checked with c = J d) */
    fd_x(&f, 14, 0.2, c, dx);
    fd_all(&f, 13, 0.2, NULL, NULL);
    fd_tensors(&f, small_tensors, (int)(sizeof small_tensors / sizeof small_tensors[0]), 15, 0.2);
    printf(" single entries:\n");
    fd_entries(&f, small_entries, (int)(sizeof small_entries / sizeof small_entries[0]), grad, 0.8, 0);
    check_zero_grads(u, grad);
    printf("  %d finite-difference checks, worst relative error %.2e (tol %.0e)\n", f.n_checks, f.worst, FD_TOL);
    fd_teardown(&f);
    loco_free(x);
    loco_free(t);
    loco_free(eps_ref);
    free(c);
    free(dx);
    free(eps);
    free(grad);
    loco_model_free(m);
}

/* ======================================================================== */
/* x cotangent == U^T J of a linearization                                  */
/* ======================================================================== */

static void check_vs_linearize(loco_model *m, const char *name, float t) {
    const graph *u = model_graph(m);
    const size_t ni = n_in(u), no = n_out(u);
    float *x = falloc(ni), *c = falloc(no), *dx = falloc(ni), *uj = falloc(ni), *eps = falloc(no);
    randn(x, ni, 21);
    randn(c, no, 22);
    float *grad = falloc(u->total_params);
    train_grad(u, 1, x, &t, c, grad, dx, eps);
    loco_lin *L;
    CHECK_OK(loco_linearize(m, x, t, &L));
    CHECK_OK(loco_lin_vjp(L, LOCO_OUT_EPS, NULL, 1, c, uj));
    char what[96];
    snprintf(what, sizeof what, "%s t=%g: dx vs loco_lin_vjp", name, t);
    CHECK_CLOSE(what, dx, uj, ni, 1e-5 * max_abs(uj, ni));
    snprintf(what, sizeof what, "%s t=%g: eps vs the linearization's", name, t);
    CHECK_CLOSE(what, eps, loco_lin_value(L, LOCO_OUT_EPS), no, 1e-6 * max_abs(eps, no));
    /* the comparison is sensitive: a 1e-3 change of the cotangent shows */
    for (size_t i = 0; i < no; i++) c[i] *= 1.001f;
    CHECK_OK(loco_lin_vjp(L, LOCO_OUT_EPS, NULL, 1, c, uj));
    double md = max_abs_diff(dx, uj, ni);
    printf("  (against U^T J of 1.001 c instead: max abs diff %.2e)\n", md);
    assert_true(md > 1e-5 * max_abs(uj, ni));
    loco_lin_free(L);
    free(x);
    free(c);
    free(dx);
    free(uj);
    free(eps);
    free(grad);
}

static void test_dx_vs_linearize(void **st) {
    (void)st;
    loco_model *m = open_tiny();
    check_vs_linearize(m, "tiny", 123.0f);
    check_vs_linearize(m, "tiny", 901.5f);
    loco_model_free(m);
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &m));
    check_vs_linearize(m, "unet-small", 595.36359f);
    loco_model_free(m);
    CHECK_OK(loco_model_open(fixture_path("unet-small_mh"), &m));
    check_vs_linearize(m, "unet-small_mh", 250.0f);
    loco_model_free(m);
}

/* ======================================================================== */
/* A batch of 3 == three batches of 1                                       */
/* ======================================================================== */

static void check_batch(loco_model *m, const char *name) {
    const graph *u = model_graph(m);
    const int B = 3;
    const size_t ni = n_in(u), no = n_out(u), np = u->total_params;
    const float t[3] = {3.0f, 480.5f, 999.0f};
    float *x = falloc(B * ni), *c = falloc(B * no), *dxB = falloc(B * ni), *dx1 = falloc(B * ni);
    float *epsB = falloc(B * no), *eps1 = falloc(B * no), *gB = falloc(np), *g1 = falloc(np);
    randn(x, B * ni, 31);
    randn(c, B * no, 32);
    train_grad(u, B, x, t, c, gB, dxB, epsB);
    for (int b = 0; b < B; b++)
        train_grad(u, 1, x + b * ni, t + b, c + b * no, g1, dx1 + b * ni, eps1 + b * no);
    printf("%s:\n", name);
    CHECK_CLOSE("eps, B=3 vs 3 x B=1", epsB, eps1, B * no, 1e-6 * max_abs(eps1, B * no));
    CHECK_CLOSE("dx,  B=3 vs 3 x B=1", dxB, dx1, B * ni, 1e-6 * max_abs(dx1, B * ni));
    double worst = 0;
    int wp = 0;
    for (int p = 0; p < u->n_params; p++) {
        const param *pp = &u->params[p];
        double ref = max_abs(g1 + pp->off, pp->numel), d = max_abs_diff(gB + pp->off, g1 + pp->off, pp->numel);
        if (!(ref > 0)) fail_msg("%s: gradient of %s is zero", name, pp->name);
        if (!(d / ref <= worst)) worst = d / ref, wp = p;
    }
    printf("  grad, B=3 vs sum of 3 x B=1: worst tensor %s, max abs diff / max |grad| = %.2e (tol 1e-5)\n",
           u->params[wp].name, worst);
    if (!(worst <= 1e-5)) fail_msg("batch gradient differs: %.2e in %s", worst, u->params[wp].name);
    /* the per-image timesteps matter: image 1 alone at image 0's t differs */
    memset(g1, 0, np * sizeof(float));
    train_grad(u, 1, x + ni, t, c + no, g1, dx1, eps1);
    double d = max_abs_diff(dx1, dxB + ni, ni) / max_abs(dxB + ni, ni);
    printf("  (image 1 at image 0's t instead: dx off by %.2e relative)\n", d);
    assert_true(d > 1e-3);
    free(x);
    free(c);
    free(dxB);
    free(dx1);
    free(epsB);
    free(eps1);
    free(gB);
    free(g1);
}

static void test_batch_consistency(void **st) {
    (void)st;
    loco_model *m = open_tiny();
    check_batch(m, "tiny");
    loco_model_free(m);
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &m));
    check_batch(m, "unet-small");
    loco_model_free(m);
}

/* ======================================================================== */
/* Accumulation, consumed records, hostile arguments                        */
/* ======================================================================== */

static void test_accumulate_and_errors(void **st) {
    (void)st;
    loco_model *m = open_tiny();
    const graph *u = model_graph(m);
    const int B = 2;
    const size_t ni = n_in(u) * B, no = n_out(u) * B, np = u->total_params;
    const float t[2] = {100.0f, 700.0f};
    float *x = falloc(ni), *c = falloc(no), *g0 = falloc(np), *gz = falloc(np), *g = falloc(np);
    randn(x, ni, 41);
    randn(c, no, 42);
    graph_train *tr;
    CHECK_OK(graph_train_new(u, B, &tr));
    CHECK_OK(graph_train_forward(tr, x, t, NULL));
    CHECK_OK(graph_train_backward(tr, c, gz, NULL)); /* from zero */
    /* from a random start: += */
    randn(g0, np, 43);
    for (size_t i = 0; i < np; i++) g0[i] *= 0.01f * (float)max_abs(gz, np);
    memcpy(g, g0, np * sizeof(float));
    CHECK_OK(graph_train_forward(tr, x, t, NULL));
    CHECK_OK(graph_train_backward(tr, c, g, NULL));
    for (size_t i = 0; i < np; i++) g[i] -= g0[i];
    CHECK_CLOSE("grad(start g0) - g0 == grad(start 0)", g, gz, np, 1e-6 * max_abs(gz, np));
    /* twice: 2 x */
    memset(g, 0, np * sizeof(float));
    for (int r = 0; r < 2; r++) {
        CHECK_OK(graph_train_forward(tr, x, t, NULL));
        CHECK_OK(graph_train_backward(tr, c, g, NULL));
    }
    for (size_t i = 0; i < np; i++) g[i] *= 0.5f;
    CHECK_CLOSE("two backwards == 2 x one", g, gz, np, 1e-6 * max_abs(gz, np));
    /* grad NULL: dx only, and the same dx */
    float *dx = falloc(ni), *dx2 = falloc(ni);
    CHECK_OK(graph_train_forward(tr, x, t, NULL));
    CHECK_OK(graph_train_backward(tr, c, NULL, dx));
    CHECK_OK(graph_train_forward(tr, x, t, NULL));
    memset(g, 0, np * sizeof(float));
    for (size_t i = 0; i < ni; i++) dx2[i] = 1e6f; /* overwritten, not accumulated */
    CHECK_OK(graph_train_backward(tr, c, g, dx2));
    CHECK_CLOSE("dx without grad == dx with grad", dx, dx2, ni, 0);
    CHECK_CLOSE("grad after a dx-only pass", g, gz, np, 0);
    /* the record is consumed */
    expect_error(graph_train_backward(tr, c, g, NULL), LOCO_E_INVALID_ARGUMENT, "no recorded forward", NULL);
    CHECK_OK(graph_train_forward(tr, x, t, NULL));
    c[5] = NAN;
    memcpy(g0, g, np * sizeof(float));
    expect_error(graph_train_backward(tr, c, g, NULL), LOCO_E_NUMERIC, "deps element 5", NULL);
    assert_memory_equal(g, g0, np * sizeof(float)); /* untouched */
    c[5] = 0;
    x[7] = INFINITY;
    expect_error(graph_train_forward(tr, x, t, NULL), LOCO_E_NUMERIC, "x element 7", NULL);
    x[7] = 0;
    float tb[2] = {1.0f, NAN};
    expect_error(graph_train_forward(tr, x, tb, NULL), LOCO_E_NUMERIC, "t[1]", NULL);
    /* a failed forward leaves no record */
    expect_error(graph_train_backward(tr, c, g, NULL), LOCO_E_INVALID_ARGUMENT, "no recorded forward", NULL);
    graph_train_free(tr);
    graph_train *t2 = (graph_train *)1;
    expect_error(graph_train_new(u, 0, &t2), LOCO_E_INVALID_ARGUMENT, "batch 0", NULL);
    assert_null(t2);
    graph_train_free(NULL);
    free(x);
    free(c);
    free(g0);
    free(gz);
    free(g);
    free(dx);
    free(dx2);
    loco_model_free(m);
}

/* ======================================================================== */
/* Kernels, against plain loops in double                                   */
/* ======================================================================== */

static void check_wgrad(const char *name, conv_geom g, int B) {
    const size_t K = (size_t)g.cin * g.k * g.k, np = (size_t)g.ho * g.wo, nin = (size_t)g.cin * g.h * g.w;
    float *x = falloc(B * nin), *dy = falloc(B * g.cout * np), *dw = falloc(g.cout * K), *db = falloc(g.cout),
          *db2 = falloc(B * g.cout), *sc = falloc(conv2d_wgrad_scratch(&g, B));
    float *rw = falloc(g.cout * K), *rb = falloc(g.cout), *rb2 = falloc(B * g.cout);
    randn(x, B * nin, 51);
    randn(dy, B * g.cout * np, 52);
    randn(dw, g.cout * K, 53); /* accumulates onto what is there */
    randn(db, g.cout, 54);
    randn(db2, B * g.cout, 55);
    memcpy(rw, dw, sizeof(float) * g.cout * K);
    memcpy(rb, db, sizeof(float) * g.cout);
    memcpy(rb2, db2, sizeof(float) * B * g.cout);
    conv2d_wgrad(&g, B, x, dy, dw, db, db2, sc);
    /* reference: padding after is whatever the output size implies */
    for (int co = 0; co < g.cout; co++) {
        double sb = 0;
        for (int b = 0; b < B; b++) {
            double s2 = 0;
            for (size_t p = 0; p < np; p++) s2 += dy[((size_t)b * g.cout + co) * np + p];
            rb2[b * g.cout + co] += (float)s2;
            sb += s2;
        }
        rb[co] += (float)sb;
        for (size_t r = 0; r < K; r++) {
            int ci = (int)(r / (g.k * g.k)), ky = (int)(r / g.k) % g.k, kx = (int)(r % g.k);
            double s = 0;
            for (int b = 0; b < B; b++)
                for (int oy = 0; oy < g.ho; oy++)
                    for (int ox = 0; ox < g.wo; ox++) {
                        int iy = oy * g.stride - g.pad_t + ky, ix = ox * g.stride - g.pad_l + kx;
                        if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                        s += (double)dy[((size_t)b * g.cout + co) * np + (size_t)oy * g.wo + ox] *
                             x[(size_t)b * nin + ((size_t)ci * g.h + iy) * g.w + ix];
                    }
            rw[co * K + r] += (float)s;
        }
    }
    char what[96];
    printf("%s (B=%d, %zu im2col columns per chunk of %zu):\n", name, B,
           conv2d_is_direct(&g) ? (size_t)0 : conv2d_wgrad_scratch(&g, B) / (K + g.cout), B * np);
    snprintf(what, sizeof what, "  dW += ");
    CHECK_CLOSE(what, dw, rw, g.cout * K, 1e-5 * max_abs(rw, g.cout * K));
    CHECK_CLOSE("  dbias += ", db, rb, g.cout, 1e-5 * max_abs(rb, g.cout));
    CHECK_CLOSE("  dbias2 += (per image)", db2, rb2, B * g.cout, 1e-5 * max_abs(rb2, B * g.cout));
    float *all[] = {x, dy, dw, db, db2, sc, rw, rb, rb2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void test_op_conv_wgrad(void **st) {
    (void)st;
    check_wgrad("conv 3x3 s1 p1", (conv_geom){5, 7, 9, 6, 3, 1, 1, 1, 9, 6, 0, 0}, 3);
    check_wgrad("conv 3x3 s2 p(0,1)", (conv_geom){4, 6, 8, 10, 3, 2, 0, 0, 4, 5, 0, 0}, 3);
    check_wgrad("conv 3x3 s2 p1", (conv_geom){4, 6, 8, 8, 3, 2, 1, 1, 4, 4, 0, 0}, 2);
    check_wgrad("conv 1x1", (conv_geom){6, 3, 5, 7, 1, 1, 0, 0, 5, 7, 0, 0}, 3);
    /* K = 1152: chunks of 3640 columns split the 4 x 1024 into pieces that
     * end inside images */
    check_wgrad("conv 3x3 s1 p1, 128 -> 4 channels", (conv_geom){128, 4, 32, 32, 3, 1, 1, 1, 32, 32, 0, 0}, 4);
}

static void test_op_group_norm_bwd(void **st) {
    (void)st;
    const int B = 3, C = 8, G = 4, hws[2] = {15, 37};
    for (int hi = 0; hi < 2; hi++)
        for (int silu = 0; silu < 2; silu++) {
            const int hw = hws[hi];
            const size_t n = (size_t)C * hw;
            float *x = falloc(B * n), *y = falloc(B * n), *dy = falloc(B * n), *dx = falloc(B * n), *rdx = falloc(B * n);
            float gamma[8], beta[8], mean[12], rstd[12], dg[8] = {0}, dbt[8] = {0}, rg[8] = {0}, rbt[8] = {0};
            randn(x, B * n, 61);
            randn(dy, B * n, 62);
            randn(dx, B * n, 63);
            memcpy(rdx, dx, sizeof(float) * B * n);
            randn(gamma, C, 64);
            randn(beta, C, 65);
            group_norm_fwd(B, C, hw, G, 1e-5f, gamma, beta, silu, x, y, mean, rstd);
            group_norm_bwd(B, C, hw, G, gamma, beta, silu, x, mean, rstd, dy, dx, dg, dbt);
            /* dx: the linearization's kernel, one image at a time */
            for (int b = 0; b < B; b++)
                group_norm_vjp(1, C, hw, G, gamma, beta, silu, x + b * n, mean + b * G, rstd + b * G, dy + b * n,
                               rdx + b * n);
            /* dgamma, dbeta in double */
            for (int c = 0; c < C; c++) {
                double sg = 0, sb = 0;
                for (int b = 0; b < B; b++)
                    for (int i = 0; i < hw; i++) {
                        int g = c / (C / G);
                        double xh = ((double)x[b * n + c * hw + i] - mean[b * G + g]) * rstd[b * G + g];
                        double yy = gamma[c] * xh + beta[c], s = 1 / (1 + exp(-yy));
                        double e = dy[b * n + c * hw + i] * (silu ? s * (1 + yy * (1 - s)) : 1.0);
                        sg += e * xh;
                        sb += e;
                    }
                rg[c] = (float)sg;
                rbt[c] = (float)sb;
            }
            printf("group norm%s, B=3, hw=%d:\n", silu ? " + silu" : "", hw);
            CHECK_CLOSE("  dx += (vs group_norm_vjp per image)", dx, rdx, B * n, 1e-5 * max_abs(rdx, B * n));
            CHECK_CLOSE("  dgamma", dg, rg, C, 1e-4 * max_abs(rg, C));
            CHECK_CLOSE("  dbeta", dbt, rbt, C, 1e-4 * max_abs(rbt, C));
            free(x);
            free(y);
            free(dy);
            free(dx);
            free(rdx);
        }
}

static void test_op_linear_bwd(void **st) {
    (void)st;
    const int B = 3, in = 5, out = 4;
    float x[15], W[20], dy[12], dx[15], dW[20], db[4], rdx[15], rdW[20], rdb[4];
    randn(x, 15, 71);
    randn(W, 20, 72);
    randn(dy, 12, 73);
    randn(dx, 15, 74);
    randn(dW, 20, 75);
    randn(db, 4, 76);
    memcpy(rdx, dx, sizeof dx);
    memcpy(rdW, dW, sizeof dW);
    memcpy(rdb, db, sizeof db);
    linear_bwd(B, in, out, x, W, dy, dx, dW, db);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < out; o++) {
            rdb[o] += dy[b * out + o];
            for (int i = 0; i < in; i++) {
                rdx[b * in + i] += dy[b * out + o] * W[o * in + i];
                rdW[o * in + i] += dy[b * out + o] * x[b * in + i];
            }
        }
    printf("linear, B=3, 5 -> 4:\n");
    CHECK_CLOSE("  dx +=", dx, rdx, 15, 1e-6 * max_abs(rdx, 15));
    CHECK_CLOSE("  dW +=", dW, rdW, 20, 1e-6 * max_abs(rdW, 20));
    CHECK_CLOSE("  db +=", db, rdb, 4, 1e-6 * max_abs(rdb, 4));
}

static void test_op_attention(void **st) {
    (void)st;
    const int C = 8, hw = 12, heads = 2;
    float *w = falloc(2 * C + 4 * (C * C + C));
    randn(w, 2 * C + 4 * (C * C + C), 81);
    attn_params p = {w, w + C, w + 2 * C, w + 2 * C + C * C, w + 3 * C + C * C, w + 3 * C + 2 * C * C,
                     w + 4 * C + 2 * C * C, w + 4 * C + 3 * C * C, w + 5 * C + 3 * C * C, w + 5 * C + 4 * C * C,
                     2, 1e-5f, heads, 1.5f};
    float *x = falloc(C * hw), *y = falloc(C * hw), *y2 = falloc(C * hw), *dy = falloc(C * hw);
    float *dx = falloc(C * hw), *dx2 = falloc(C * hw), *sc = falloc(attention_bwd_scratch(C, hw) + attention_scratch(C, hw));
    float *rec = falloc(attn_record_floats(C, hw, heads, 2)), *sv = falloc(4 + 3 * C * hw + heads * hw * hw);
    randn(x, C * hw, 82);
    randn(dy, C * hw, 83);
    attn_record r = attn_record_at(rec, C, hw, heads, 2);
    attention_fwd_record(&p, C, hw, x, y, &r);
    attn_saved s = {sv, sv + 2, sv + 4, sv + 4 + C * hw, sv + 4 + 2 * C * hw, sv + 4 + 3 * C * hw};
    attention_fwd(&p, 1, C, hw, x, y2, sc, &s);
    printf("attention, 2 heads, rescale 1.5:\n");
    CHECK_CLOSE("  attention_fwd_record y == attention_fwd y", y, y2, C * hw, 1e-6 * max_abs(y2, C * hw));
    CHECK_CLOSE("  recorded P == attention_fwd's P", r.P, s.P, heads * hw * hw, 1e-6);
    attention_bwd(&p, C, hw, x, &r, dy, dx, NULL, sc);
    attention_vjp(&p, C, hw, x, &s, 1, dy, dx2, sc);
    CHECK_CLOSE("  attention_bwd dx == attention_vjp dx", dx, dx2, C * hw, 1e-5 * max_abs(dx2, C * hw));
    free(w);
    free(x);
    free(y);
    free(y2);
    free(dy);
    free(dx);
    free(dx2);
    free(sc);
    free(rec);
    free(sv);
}

/* ======================================================================== */
/* Memory figures                                                           */
/* ======================================================================== */

static void report_memory(const char *label, const char *cfg_path, int B) {
    unet_config cfg;
    CHECK_OK(unet_config_read(cfg_path, &cfg));
    graph u;
    CHECK_OK(unet2d_build(&u, &cfg));
    graph_train_mem m1, mb;
    CHECK_OK(graph_train_plan(&u, 1, &m1));
    CHECK_OK(graph_train_plan(&u, B, &mb));
    const double MiB = 1048576.0;
    printf("  %-24s B=%-2d record %6.1f MiB (attention %5.1f)  forward peak %6.1f  arena %6.1f (unshared %6.1f)  "
           "scratch %4.1f  [inference arena %5.1f, weights %5.1f] MiB\n",
           label, B, mb.record / MiB, mb.attention / MiB, mb.forward_peak / MiB, mb.arena / MiB, mb.unshared / MiB,
           mb.scratch / MiB, u.arena_per_image * (double)B * 4 / MiB, u.total_params * 4 / MiB);
    assert_int_equal(mb.record, m1.record * (size_t)B);
    assert_int_equal(mb.arena, m1.arena * (size_t)B);
    assert_true(mb.attention < mb.record && mb.record <= mb.forward_peak && mb.forward_peak <= mb.arena);
    assert_true(mb.arena >= u.arena_per_image * (size_t)B * 4);
    graph_free(&u);
}

static void test_memory(void **st) {
    (void)st;
    report_memory("ddpm-cifar10-32.json", "configs/ddpm-cifar10-32.json", 32);
    report_memory("(64,128,128) x1 32x32", in_dir("mid.json"), 32);
    report_memory("unet-small", fixture_path("unet-small/config.json"), 32);
    report_memory("tiny", in_dir("config.json"), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_conv_wgrad),
        cmocka_unit_test(test_op_group_norm_bwd),
        cmocka_unit_test(test_op_linear_bwd),
        cmocka_unit_test(test_op_attention),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_tiny_finite_differences),
        cmocka_unit_test(test_small_finite_differences),
        cmocka_unit_test(test_dx_vs_linearize),
        cmocka_unit_test(test_batch_consistency),
        cmocka_unit_test(test_accumulate_and_errors),
    };
    return cmocka_run_group_tests_name("backward", tests, setup, teardown);
}
