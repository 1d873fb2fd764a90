/* test_sd_ops.c - the Stable Diffusion ops (LayerNorm, GELU / QuickGELU,
 * GEGLU, multi-head attention with projections), each through one generic
 * check (check_op):
 *   - the float forward against a naive double-precision reference;
 *   - J V (B = 3 tangents) against central differences of that reference;
 *   - the adjoint identity <u, J v> = <J^T u, v> for each tangent, with the
 *     V J P accumulating onto a non-zero buffer;
 *   - batch-B forwards, J V and V J P equal B batch-1 calls, bit for bit;
 *   - 1 and 2 threads give the same bits (forward, J V, V J P).
 * Shapes: odd sizes, positions across LayerNorm tiles, heads 1/2/8 (and of
 * width 1), Tq != Tk both ways, causal self- and cross-attention, NULL
 * biases; then larger cases, where the products are cut into several GEMM
 * tiles, for the thread-count invariance alone. Every check prints its
 * figure. */
#include "testutil.h"
#include "ops.h"

#include <omp.h>

#include <stdint.h>

static uint64_t g_rng = 424242;
static float urand(void) { /* [-0.5, 0.5) */
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_rng >> 40) * (1.0 / 16777216.0)) - 0.5f;
}

static float *rand_buf(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = scale * urand();
    return p;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double absdot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    return s;
}

/* ======================================================================== */
/* The generic check                                                        */
/* ======================================================================== */

/* An op as a map from nin to nout floats per image. */
typedef struct opcase {
    const char *name;
    size_t nin, nout;
    /* double reference at batch 1 (image 0's context, where one applies) */
    void (*ref)(const void *ctx, const double *x, double *y);
    /* float forward of B images, the first being image `first` (for a
     * per-image context) */
    void (*fwd)(const void *ctx, int B, int first, const float *x, float *y);
    /* records the linearisation point x (batch 1, image 0) */
    void (*record)(void *ctx, const float *x);
    void (*jvp)(const void *ctx, int B, const float *dx, float *dy);
    void (*vjp)(const void *ctx, int B, const float *dy, float *dx);
    void *ctx;
    float xscale;     /* inputs uniform in [-xscale/2, xscale/2) */
    /* (gelu's tolerance 3e-6: in its lower tail the rounding of x / sqrt 2
     * is amplified about 2 z^2 times by erfc, as in any float32 gelu) */
    double tol_fwd;   /* max |y - ref| / max |ref| */
    double tol_jvp;   /* max |J V - FD| / max |FD| */
} opcase;

#define NB 3 /* tangents per batch */

static double rel_diff_d(const float *a, const double *ref, size_t n, double *mref) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= m)) m = d;
        if (fabs(ref[i]) > r) r = fabs(ref[i]);
    }
    *mref = r;
    return m / (r > 0 ? r : 1);
}

/* fwd, jvp and vjp with 1 and 2 threads: identical bits. x, dx [NB, nin],
 * dy [NB, nout]; the op must have recorded x already. */
static void check_threads(const opcase *o, const float *x, const float *dx, const float *dy) {
    const size_t ni = o->nin * NB, no = o->nout * NB;
    float *y[2], *jv[2], *uj[2];
    const int saved = loco_get_threads();
    for (int t = 0; t < 2; t++) {
        y[t] = xmalloc(no * sizeof(float));
        jv[t] = xmalloc(no * sizeof(float));
        uj[t] = xmalloc(ni * sizeof(float));
        loco_set_threads(t + 1);
        o->fwd(o->ctx, NB, 0, x, y[t]);
        o->jvp(o->ctx, NB, dx, jv[t]);
        for (size_t i = 0; i < ni; i++) uj[t][i] = 0.125f;
        o->vjp(o->ctx, NB, dy, uj[t]);
    }
    loco_set_threads(saved);
    int same = !memcmp(y[0], y[1], no * sizeof(float)) && !memcmp(jv[0], jv[1], no * sizeof(float)) &&
               !memcmp(uj[0], uj[1], ni * sizeof(float));
    printf("  %-34s 1 vs 2 threads: fwd, J V, V J P %s\n", o->name, same ? "bit-identical" : "DIFFER");
    if (!same) fail_msg("%s: results differ between 1 and 2 threads", o->name);
    for (int t = 0; t < 2; t++) free(y[t]), free(jv[t]), free(uj[t]);
}

static void check_op(const opcase *o, int full) {
    const size_t ni = o->nin, no = o->nout;
    float *x = rand_buf(ni * NB, o->xscale), *y = xmalloc(no * NB * sizeof(float));
    float *v = rand_buf(ni * NB, 1), *u = rand_buf(no * NB, 1);
    float *jv = xmalloc(no * NB * sizeof(float)), *uj = xmalloc(ni * NB * sizeof(float));
    float *t1 = xmalloc((ni > no ? ni : no) * sizeof(float));
    double *xd = xmalloc(ni * sizeof(double)), *yd = xmalloc(no * sizeof(double));
    double *yp = xmalloc(no * sizeof(double)), *ym = xmalloc(no * sizeof(double));
    double *fd = xmalloc(no * NB * sizeof(double));
    printf("%s\n", o->name);
    o->record(o->ctx, x);
    if (full) {
        /* forward against the double reference */
        o->fwd(o->ctx, 1, 0, x, y);
        for (size_t i = 0; i < ni; i++) xd[i] = x[i];
        o->ref(o->ctx, xd, yd);
        double mref, r = rel_diff_d(y, yd, no, &mref);
        printf("  forward vs double reference: max rel diff %.3e (tol %.1e, max |ref| %.3e)\n", r, o->tol_fwd, mref);
        if (!(r <= o->tol_fwd)) fail_msg("%s: forward differs from the reference by %.3e", o->name, r);

        /* J V against central differences of the reference */
        o->jvp(o->ctx, NB, v, jv);
        const double h = 1e-5;
        for (int b = 0; b < NB; b++) {
            for (size_t i = 0; i < ni; i++) xd[i] = (double)x[i] + h * v[b * ni + i];
            o->ref(o->ctx, xd, yp);
            for (size_t i = 0; i < ni; i++) xd[i] = (double)x[i] - h * v[b * ni + i];
            o->ref(o->ctx, xd, ym);
            for (size_t i = 0; i < no; i++) fd[b * no + i] = (yp[i] - ym[i]) / (2 * h);
        }
        r = rel_diff_d(jv, fd, no * NB, &mref);
        printf("  J V vs central differences:  max rel diff %.3e (tol %.1e, max |FD| %.3e)\n", r, o->tol_jvp, mref);
        if (!(r <= o->tol_jvp)) fail_msg("%s: J V differs from finite differences by %.3e", o->name, r);

        /* adjoint identity */
        memset(uj, 0, ni * NB * sizeof(float));
        o->vjp(o->ctx, NB, u, uj);
        double worst = 0;
        for (int b = 0; b < NB; b++) {
            double a = dot(u + b * no, jv + b * no, no), c = dot(uj + b * ni, v + b * ni, ni);
            double scale = absdot(u + b * no, jv + b * no, no) + absdot(uj + b * ni, v + b * ni, ni);
            double e = fabs(a - c) / (scale > 0 ? scale : 1);
            if (!(e <= worst)) worst = e;
        }
        printf("  <u, J v> vs <J^T u, v>:      max rel diff %.3e (tol 1.0e-05)\n", worst);
        if (!(worst <= 1e-5)) fail_msg("%s: adjoint identity off by %.3e", o->name, worst);

        /* the V J P accumulates: onto 0.25 it gives 0.25 + the V J P onto 0
         * (up to the rounding of the additions) */
        float *acc = xmalloc(ni * NB * sizeof(float));
        for (size_t i = 0; i < ni * NB; i++) acc[i] = 0.25f;
        o->vjp(o->ctx, NB, u, acc);
        double wa = 0, mv = 0;
        for (size_t i = 0; i < ni * NB; i++) {
            double d = fabs((double)acc[i] - 0.25 - uj[i]);
            if (!(d <= wa)) wa = d;
            mv = fmax(mv, fabs(uj[i]));
        }
        printf("  V J P onto 0.25 - 0.25 vs onto 0: max abs diff %.3e (tol %.1e)\n", wa, 1e-6 * (0.25 + mv));
        if (!(wa <= 1e-6 * (0.25 + mv))) fail_msg("%s: the V J P does not accumulate (%.3e)", o->name, wa);
        free(acc);
    }

    /* batch B equals B calls at batch 1, bit for bit */
    o->fwd(o->ctx, NB, 0, x, y);
    o->jvp(o->ctx, NB, v, jv);
    for (size_t i = 0; i < ni * NB; i++) uj[i] = 0.25f;
    o->vjp(o->ctx, NB, u, uj);
    for (int b = 0; b < NB; b++) {
        o->fwd(o->ctx, 1, b, x + b * ni, t1);
        if (memcmp(t1, y + b * no, no * sizeof(float))) fail_msg("%s: forward image %d differs alone", o->name, b);
        o->jvp(o->ctx, 1, v + b * ni, t1);
        if (memcmp(t1, jv + b * no, no * sizeof(float))) fail_msg("%s: J V tangent %d differs alone", o->name, b);
        for (size_t i = 0; i < ni; i++) t1[i] = 0.25f;
        o->vjp(o->ctx, 1, u + b * no, t1);
        if (memcmp(t1, uj + b * ni, ni * sizeof(float))) fail_msg("%s: V J P cotangent %d differs alone", o->name, b);
    }
    printf("  batch of %d = %d calls at batch 1, bit for bit (fwd, J V, V J P)\n", NB, NB);

    check_threads(o, x, v, u);
    free(x), free(y), free(v), free(u), free(jv), free(uj), free(t1), free(xd), free(yd), free(yp), free(ym), free(fd);
}

/* ======================================================================== */
/* LayerNorm                                                                */
/* ======================================================================== */

typedef struct ln_ctx {
    int C, T;
    float eps;
    float *gamma, *beta, *x, *mean, *rstd;
} ln_ctx;

static void ln_ref(const void *vc, const double *x, double *y) {
    const ln_ctx *c = vc;
    for (int t = 0; t < c->T; t++) {
        double m = 0, v = 0;
        for (int i = 0; i < c->C; i++) m += x[(size_t)i * c->T + t];
        m /= c->C;
        for (int i = 0; i < c->C; i++) v += (x[(size_t)i * c->T + t] - m) * (x[(size_t)i * c->T + t] - m);
        v /= c->C;
        for (int i = 0; i < c->C; i++)
            y[(size_t)i * c->T + t] = (x[(size_t)i * c->T + t] - m) / sqrt(v + c->eps) * c->gamma[i] + c->beta[i];
    }
}
static void ln_fwd(const void *vc, int B, int first, const float *x, float *y) {
    const ln_ctx *c = vc;
    (void)first;
    layer_norm_fwd(B, c->C, c->T, c->eps, c->gamma, c->beta, x, y, NULL, NULL);
}
static void ln_record(void *vc, const float *x) {
    ln_ctx *c = vc;
    const size_t n = (size_t)c->C * c->T;
    float *y = xmalloc(n * sizeof(float));
    memcpy(c->x, x, n * sizeof(float));
    layer_norm_fwd(1, c->C, c->T, c->eps, c->gamma, c->beta, x, y, c->mean, c->rstd);
    free(y);
}
static void ln_jvp(const void *vc, int B, const float *dx, float *dy) {
    const ln_ctx *c = vc;
    layer_norm_jvp(B, c->C, c->T, c->gamma, c->x, c->mean, c->rstd, dx, dy);
}
static void ln_vjp(const void *vc, int B, const float *dy, float *dx) {
    const ln_ctx *c = vc;
    layer_norm_vjp(B, c->C, c->T, c->gamma, c->x, c->mean, c->rstd, dy, dx);
}

static void run_layer_norm(int C, int T, float eps, int full) {
    ln_ctx c = {C, T, eps, rand_buf(C, 2), rand_buf(C, 1), xmalloc((size_t)C * T * sizeof(float)),
                xmalloc((size_t)T * sizeof(float)), xmalloc((size_t)T * sizeof(float))};
    for (int i = 0; i < C; i++) c.gamma[i] += 1.0f;
    char name[96];
    snprintf(name, sizeof name, "layer_norm C %d T %d eps %g", C, T, eps);
    opcase o = {name, (size_t)C * T, (size_t)C * T, ln_ref, ln_fwd, ln_record, ln_jvp, ln_vjp, &c, 6, 1e-5, 1e-4};
    check_op(&o, full);
    if (full) {
        /* recorded statistics, and in place equals out of place */
        const size_t n = (size_t)C * T;
        float *x = rand_buf(2 * n, 4), *y = xmalloc(2 * n * sizeof(float)), *m = xmalloc(2 * (size_t)T * sizeof(float));
        float *r = xmalloc(2 * (size_t)T * sizeof(float));
        layer_norm_fwd(2, C, T, eps, c.gamma, c.beta, x, y, m, r);
        double wm = 0, wr = 0;
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < T; t++) {
                double s = 0, v = 0;
                for (int i = 0; i < C; i++) s += x[(size_t)b * n + (size_t)i * T + t];
                s /= C;
                for (int i = 0; i < C; i++) {
                    double d = x[(size_t)b * n + (size_t)i * T + t] - s;
                    v += d * d;
                }
                double rs = 1 / sqrt(v / C + eps);
                wm = fmax(wm, fabs(m[b * T + t] - s));
                wr = fmax(wr, fabs(r[b * T + t] - rs) / rs);
            }
        printf("  recorded mean: max abs diff %.3e, rstd: max rel diff %.3e\n", wm, wr);
        if (!(wm <= 1e-6 && wr <= 1e-6)) fail_msg("layer_norm statistics off: %.3e %.3e", wm, wr);
        layer_norm_fwd(2, C, T, eps, c.gamma, c.beta, x, x, NULL, NULL);
        if (memcmp(x, y, 2 * n * sizeof(float))) fail_msg("layer_norm in place differs");
        printf("  in place = out of place, bit for bit\n");
        free(x), free(y), free(m), free(r);
    }
    free(c.gamma), free(c.beta), free(c.x), free(c.mean), free(c.rstd);
}

static void test_layer_norm(void **state) {
    (void)state;
    run_layer_norm(7, 5, 1e-5f, 1);
    run_layer_norm(8, 77, 1e-5f, 1);   /* the fixture's text encoder */
    run_layer_norm(33, 130, 1e-6f, 1); /* three tiles of positions, the last of 2 */
    run_layer_norm(3, 1, 1e-5f, 1);
    run_layer_norm(5, 64, 0.5f, 1);
}

/* ======================================================================== */
/* GELU, QuickGELU, GEGLU                                                   */
/* ======================================================================== */

typedef struct act_ctx {
    act_kind k;
    size_t n;
    int F, T; /* GEGLU */
    float *x;
} act_ctx;

static double gelu_d(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double act_d(act_kind k, double x) { return k == ACT_GELU ? gelu_d(x) : x / (1 + exp(-1.702 * x)); }

static void act_ref(const void *vc, const double *x, double *y) {
    const act_ctx *c = vc;
    for (size_t i = 0; i < c->n; i++) y[i] = act_d(c->k, x[i]);
}
static void act_fwd_c(const void *vc, int B, int first, const float *x, float *y) {
    const act_ctx *c = vc;
    (void)first;
    act_fwd(c->k, (size_t)B * c->n, x, y);
}
static void act_record(void *vc, const float *x) {
    act_ctx *c = vc;
    memcpy(c->x, x, c->n * sizeof(float));
}
static void act_jvp_c(const void *vc, int B, const float *dx, float *dy) {
    const act_ctx *c = vc;
    act_jvp(c->k, B, c->n, c->x, dx, dy);
}
static void act_vjp_c(const void *vc, int B, const float *dy, float *dx) {
    const act_ctx *c = vc;
    act_vjp(c->k, B, c->n, c->x, dy, dx);
}

static void run_act(act_kind k, size_t n, int full) {
    act_ctx c = {k, n, 0, 0, xmalloc(n * sizeof(float))};
    char name[96];
    snprintf(name, sizeof name, "%s n %zu", k == ACT_GELU ? "gelu" : "quick_gelu", n);
    opcase o = {name, n, n, act_ref, act_fwd_c, act_record, act_jvp_c, act_vjp_c, &c, 12, 3e-6, 1e-5};
    check_op(&o, full);
    if (full) {
        /* in place, and a few exact values */
        float *x = rand_buf(n, 12), *y = xmalloc(n * sizeof(float));
        act_fwd(k, n, x, y);
        act_fwd(k, n, x, x);
        if (memcmp(x, y, n * sizeof(float))) fail_msg("%s in place differs", name);
        const float pts[] = {0.0f, -20.0f, 20.0f, -1e30f, 1e30f};
        float out[5];
        act_fwd(k, 5, pts, out);
        for (int i = 0; i < 5; i++)
            if (!(fabs(out[i] - act_d(k, pts[i])) <= 1e-6 * fmax(1, fabs(act_d(k, pts[i])))))
                fail_msg("%s(%g) = %g, expected %g", name, pts[i], out[i], act_d(k, pts[i]));
        printf("  in place = out of place; values at 0, +-20, +-1e30 exact\n");
        free(x), free(y);
    }
    free(c.x);
}

static void geglu_ref(const void *vc, const double *x, double *y) {
    const act_ctx *c = vc;
    const size_t n = (size_t)c->F * c->T;
    for (size_t i = 0; i < n; i++) y[i] = x[i] * gelu_d(x[n + i]);
}
static void geglu_fwd_c(const void *vc, int B, int first, const float *x, float *y) {
    const act_ctx *c = vc;
    (void)first;
    geglu_fwd(B, c->F, c->T, x, y);
}
static void geglu_record(void *vc, const float *x) {
    act_ctx *c = vc;
    memcpy(c->x, x, 2 * (size_t)c->F * c->T * sizeof(float));
}
static void geglu_jvp_c(const void *vc, int B, const float *dx, float *dy) {
    const act_ctx *c = vc;
    geglu_jvp(B, c->F, c->T, c->x, dx, dy);
}
static void geglu_vjp_c(const void *vc, int B, const float *dy, float *dx) {
    const act_ctx *c = vc;
    geglu_vjp(B, c->F, c->T, c->x, dy, dx);
}

static void run_geglu(int F, int T, int full) {
    const size_t n = (size_t)F * T;
    act_ctx c = {ACT_GELU, 0, F, T, xmalloc(2 * n * sizeof(float))};
    char name[96];
    snprintf(name, sizeof name, "geglu F %d T %d", F, T);
    opcase o = {name, 2 * n, n, geglu_ref, geglu_fwd_c, geglu_record, geglu_jvp_c, geglu_vjp_c, &c, 8, 3e-6, 1e-5};
    check_op(&o, full);
    free(c.x);
}

static void test_activations(void **state) {
    (void)state;
    run_act(ACT_GELU, 1001, 1);
    run_act(ACT_QUICK_GELU, 1001, 1);
    run_act(ACT_GELU, 1, 1);
    run_geglu(5, 7, 1);
    run_geglu(16, 77, 1);
    run_geglu(1, 1, 1);
}

/* ======================================================================== */
/* Multi-head attention                                                     */
/* ======================================================================== */

typedef struct mha_ctx {
    mha_params p;
    int self, C, Tq, Dc, Tk;
    float *w[8];  /* wq bq wk bk wv bv wo bo (biases may be NULL) */
    float *c;     /* cross: context [NB, Dc, Tk] */
    float *rec;   /* mha_saved_floats */
    mha_saved s;
    float *scratch;
} mha_ctx;

/* y = W x + b in double, W [M, K], x [K, N] */
static void proj_d(int M, int N, int K, const float *W, const float *b, const double *x, double *y) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = b ? b[m] : 0;
            for (int k = 0; k < K; k++) s += (double)W[(size_t)m * K + k] * x[(size_t)k * N + n];
            y[(size_t)m * N + n] = s;
        }
}

/* the reference; q, k, v, o, P: out (may be NULL) */
static void mha_ref_full(const mha_ctx *c, const double *x, double *y, double *Qo, double *Ko, double *Vo, double *Oo,
                         double *Po) {
    const int C = c->C, Tq = c->Tq, Tk = c->Tk, Dc = c->Dc, H = c->p.heads, d = C / H;
    double *cd = xmalloc((size_t)Dc * Tk * sizeof(double));
    if (c->self)
        memcpy(cd, x, (size_t)C * Tq * sizeof(double));
    else
        for (size_t i = 0; i < (size_t)Dc * Tk; i++) cd[i] = c->c[i];
    double *q = xmalloc((size_t)C * Tq * sizeof(double)), *k = xmalloc((size_t)C * Tk * sizeof(double));
    double *v = xmalloc((size_t)C * Tk * sizeof(double)), *o = xmalloc((size_t)C * Tq * sizeof(double));
    double *P = xmalloc((size_t)H * Tq * Tk * sizeof(double));
    proj_d(C, Tq, C, c->p.wq, c->p.bq, x, q);
    proj_d(C, Tk, Dc, c->p.wk, c->p.bk, cd, k);
    proj_d(C, Tk, Dc, c->p.wv, c->p.bv, cd, v);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Tq; i++) {
            double *row = P + ((size_t)h * Tq + i) * Tk, m = -INFINITY, sum = 0;
            for (int j = 0; j < Tk; j++) {
                double s = 0;
                for (int e = 0; e < d; e++) s += q[(size_t)(h * d + e) * Tq + i] * k[(size_t)(h * d + e) * Tk + j];
                row[j] = s / sqrt((double)d);
                if (!(c->p.causal && j > i) && row[j] > m) m = row[j];
            }
            for (int j = 0; j < Tk; j++) {
                row[j] = c->p.causal && j > i ? 0 : exp(row[j] - m);
                sum += row[j];
            }
            for (int j = 0; j < Tk; j++) row[j] /= sum;
            for (int e = 0; e < d; e++) {
                double s = 0;
                for (int j = 0; j < Tk; j++) s += v[(size_t)(h * d + e) * Tk + j] * row[j];
                o[(size_t)(h * d + e) * Tq + i] = s;
            }
        }
    proj_d(C, Tq, C, c->p.wo, c->p.bo, o, y);
    if (Qo) memcpy(Qo, q, (size_t)C * Tq * sizeof(double));
    if (Ko) memcpy(Ko, k, (size_t)C * Tk * sizeof(double));
    if (Vo) memcpy(Vo, v, (size_t)C * Tk * sizeof(double));
    if (Oo) memcpy(Oo, o, (size_t)C * Tq * sizeof(double));
    if (Po) memcpy(Po, P, (size_t)H * Tq * Tk * sizeof(double));
    free(cd), free(q), free(k), free(v), free(o), free(P);
}

static void mha_ref(const void *vc, const double *x, double *y) {
    mha_ref_full(vc, x, y, NULL, NULL, NULL, NULL, NULL);
}
static void mha_fwd_c(const void *vc, int B, int first, const float *x, float *y) {
    const mha_ctx *c = vc;
    const float *ctx = c->self ? x : c->c + (size_t)first * c->Dc * c->Tk;
    mha_fwd(&c->p, B, c->C, c->Tq, c->Dc, c->Tk, x, ctx, y, c->scratch, NULL);
}
static void mha_record(void *vc, const float *x) {
    mha_ctx *c = vc;
    float *y = xmalloc((size_t)c->C * c->Tq * sizeof(float));
    mha_fwd(&c->p, 1, c->C, c->Tq, c->Dc, c->Tk, x, c->self ? x : c->c, y, c->scratch, &c->s);
    free(y);
}
static void mha_jvp_c(const void *vc, int B, const float *dx, float *dy) {
    const mha_ctx *c = vc;
    mha_jvp(&c->p, c->self, c->C, c->Tq, c->Dc, c->Tk, &c->s, B, dx, dy, c->scratch);
}
static void mha_vjp_c(const void *vc, int B, const float *dy, float *dx) {
    const mha_ctx *c = vc;
    mha_vjp(&c->p, c->self, c->C, c->Tq, c->Dc, c->Tk, &c->s, B, dy, dx, c->scratch);
}

/* biases: bit i set = bias i (q, k, v, o) present */
static void run_mha(int self, int causal, int heads, int C, int Tq, int Dc, int Tk, unsigned biases, int full) {
    if (self) Dc = C, Tk = Tq;
    mha_ctx c;
    memset(&c, 0, sizeof c);
    c.self = self, c.C = C, c.Tq = Tq, c.Dc = Dc, c.Tk = Tk;
    const int K[4] = {C, Dc, Dc, C};
    for (int i = 0; i < 4; i++) {
        /* entries of size 3/sqrt(in): scores of order 1-3, softmax rows far from uniform */
        c.w[2 * i] = rand_buf((size_t)C * K[i], 6.0f / sqrtf((float)K[i]));
        c.w[2 * i + 1] = biases >> i & 1 ? rand_buf((size_t)C, 1) : NULL;
    }
    c.p = (mha_params){c.w[0], c.w[1], c.w[2], c.w[3], c.w[4], c.w[5], c.w[6], c.w[7], heads, causal};
    c.c = rand_buf((size_t)NB * Dc * Tk, 2);
    const size_t nrec = mha_saved_floats(C, Tq, Tk, heads);
    c.rec = xmalloc(nrec * sizeof(float));
    c.s = mha_saved_at(c.rec, C, Tq, Tk, heads);
    const size_t nsc = mha_scratch(C, Dc, Tq, Tk, heads, NB);
    c.scratch = xmalloc(nsc * sizeof(float));
    char name[128];
    snprintf(name, sizeof name, "mha %s%s heads %d C %d Tq %d Dc %d Tk %d bias %x", causal ? "causal " : "",
             self ? "self" : "cross", heads, C, Tq, Dc, Tk, biases);
    opcase o = {name, (size_t)C * Tq, (size_t)C * Tq, mha_ref, mha_fwd_c, mha_record, mha_jvp_c, mha_vjp_c, &c, 2,
                2e-5, 1e-4};
    check_op(&o, full);
    if (full) {
        /* the record against the reference's intermediate values */
        float *x = rand_buf((size_t)C * Tq, 2);
        double *xd = xmalloc((size_t)C * Tq * sizeof(double)), *y = xmalloc((size_t)C * Tq * sizeof(double));
        double *q = xmalloc((size_t)C * Tq * sizeof(double)), *k = xmalloc((size_t)C * Tk * sizeof(double));
        double *v = xmalloc((size_t)C * Tk * sizeof(double)), *ov = xmalloc((size_t)C * Tq * sizeof(double));
        double *P = xmalloc((size_t)heads * Tq * Tk * sizeof(double));
        for (size_t i = 0; i < (size_t)C * Tq; i++) xd[i] = x[i];
        mha_record(&c, x);
        mha_ref_full(&c, xd, y, q, k, v, ov, P);
        /* the record keeps q, k, v and per row the softmax maximum m and
         * 1 / sum inv; the probabilities it stands for, exp(S - m) inv on
         * the visible keys (0 beyond), must be the reference's P */
        const int dh = C / heads;
        double *Pr = calloc((size_t)heads * Tq * Tk, sizeof(double));
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < Tq; i++) {
                const int vis = causal && i + 1 < Tk ? i + 1 : Tk;
                for (int j = 0; j < vis; j++) {
                    double sc = 0;
                    for (int ch = 0; ch < dh; ch++)
                        sc += (double)c.s.q[(size_t)(h * dh + ch) * Tq + i] * c.s.k[(size_t)(h * dh + ch) * Tk + j];
                    sc /= sqrt((double)dh);
                    Pr[((size_t)h * Tq + i) * Tk + j] = exp(sc - c.s.m[(size_t)h * Tq + i]) * c.s.inv[(size_t)h * Tq + i];
                }
            }
        float *Prf = malloc(sizeof(float) * (size_t)heads * Tq * Tk);
        for (size_t i = 0; i < (size_t)heads * Tq * Tk; i++) Prf[i] = (float)Pr[i];
        double m, r[4] = {rel_diff_d(c.s.q, q, (size_t)C * Tq, &m), rel_diff_d(c.s.k, k, (size_t)C * Tk, &m),
                          rel_diff_d(c.s.v, v, (size_t)C * Tk, &m), rel_diff_d(Prf, P, (size_t)heads * Tq * Tk, &m)};
        printf("  record q %.2e k %.2e v %.2e P from (m, 1/sum) %.2e (max rel diffs, tol 2e-5)\n", r[0], r[1], r[2],
               r[3]);
        for (int i = 0; i < 4; i++)
            if (!(r[i] <= 2e-5)) fail_msg("%s: recorded value %d differs from the reference by %.3e", name, i, r[i]);
        if (causal)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < Tq; i++)
                    for (int j = i + 1; j < Tk; j++)
                        if (P[((size_t)h * Tq + i) * Tk + j] != 0.0)
                            fail_msg("%s: reference P[%d, %d, %d] is not 0 beyond the causal mask", name, h, i, j);
        free(Pr), free(Prf);
        free(x), free(xd), free(y), free(q), free(k), free(v), free(ov), free(P);
    }
    for (int i = 0; i < 8; i++) free(c.w[i]);
    free(c.c), free(c.rec), free(c.scratch);
}

static void test_mha(void **state) {
    (void)state;
    run_mha(1, 0, 1, 8, 5, 0, 0, 0xf, 1);
    run_mha(1, 1, 2, 8, 77, 0, 0, 0xf, 1);    /* the fixture's text encoder */
    run_mha(1, 0, 8, 8, 13, 0, 0, 0x0, 1);    /* heads of width 1, no biases */
    run_mha(1, 1, 8, 40, 33, 0, 0, 0x5, 1);
    run_mha(1, 0, 2, 14, 9, 0, 0, 0xa, 1);
    run_mha(0, 0, 8, 16, 9, 12, 7, 0xf, 1);   /* cross, Tq > Tk */
    run_mha(0, 0, 1, 6, 4, 5, 11, 0x3, 1);    /* cross, Tq < Tk */
    run_mha(0, 1, 2, 6, 11, 5, 4, 0xf, 1);    /* causal cross, Tq > Tk */
    run_mha(0, 1, 8, 24, 3, 10, 10, 0x0, 1);  /* causal cross, Tq < Tk */
    run_mha(0, 0, 2, 8, 16, 8, 77, 0x6, 1);   /* the fixture UNet's cross-attention shape */
}

/* ======================================================================== */
/* Thread-count invariance at sizes where the products are cut in tiles     */
/* ======================================================================== */

static void test_threads_large(void **state) {
    (void)state;
    run_layer_norm(320, 700, 1e-5f, 0);
    run_act(ACT_GELU, 300001, 0);
    run_act(ACT_QUICK_GELU, 300001, 0);
    run_geglu(160, 700, 0);
    /* projections 128 x 128 x 520 and scores 520 x 520 x 64: several tiles */
    run_mha(1, 1, 2, 128, 520, 0, 0, 0xf, 0);
    run_mha(1, 0, 2, 128, 520, 0, 0, 0xf, 0);
    run_mha(0, 0, 2, 128, 600, 96, 77, 0xf, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_norm),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_mha),
        cmocka_unit_test(test_threads_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
