/* test_linearize.c - J V and U^T J of eps and x0_hat: against the reference
 * fixtures (masked JV, UJ, one subspace-iteration step), against central
 * finite differences, and through the adjoint identity <u, J v> = <J^T u, v>;
 * plus the same checks per op on random shapes.
 *
 * The adjoint identity is measured as |<u,Jv> - <J^T u,v>| / (|u| |Jv|): both
 * sides are sums of many float products, and for random u, v the inner
 * products themselves are ~sqrt(n) smaller than |u||Jv| (cancellation), so
 * dividing by |<u,Jv>| would measure the cancellation, not the Jacobians. */
#include <unistd.h>

#include "testutil.h"
#include "linalg.h"
#include "model.h"
#include "ops.h"
#include "graph/lin.h"

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void randn(float *x, size_t n, uint64_t seed) {
    /* Box-Muller on a simple LCG: deterministic, no library state */
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = (s >> 11) / 9007199254740992.0;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

/* ======================================================================== */
/* Fixtures                                                                 */
/* ======================================================================== */

static void check_fixture(const char *name) {
    char mdir[512], vec[600];
    snprintf(mdir, sizeof mdir, "%s", fixture_path(name));
    snprintf(vec, sizeof vec, "%s/vectors.safetensors", mdir);
    printf("%s:\n", name);
    loco_model *m;
    CHECK_OK(loco_model_open(mdir, &m));
    size_t n, nm;
    float *x = load_tensor(vec, "x", &n);
    float *t = load_tensor(vec, "t", NULL);
    float *maskf = load_tensor(vec, "mask", &nm);
    float *V = load_tensor(vec, "V", NULL), *U = load_tensor(vec, "U", NULL);
    float *JVr = load_tensor(vec, "JV", NULL), *UJr = load_tensor(vec, "UJ", NULL);
    float *Wr = load_tensor(vec, "step_W", NULL), *sr = load_tensor(vec, "step_sqrt_s", NULL);
    float *Vr = load_tensor(vec, "step_V", NULL);
    float *x0r = load_tensor(vec, "x0_hat", NULL);
    assert_int_equal(nm, n);
    uint8_t *mask = malloc(n);
    for (size_t i = 0; i < n; i++) mask[i] = maskf[i] != 0;
    loco_lin *L;
    CHECK_OK(loco_linearize(m, x, t[0], &L));
    size_t l = loco_lin_mask_count(L, mask);
    assert_int_equal(l, 480);
    CHECK_CLOSE("x0_hat at the linearization point", loco_lin_value(L, LOCO_OUT_X0), x0r, n, 1e-4);
    const int k = 5;
    float *JV = malloc(sizeof(float) * k * l), *UJ = malloc(sizeof(float) * k * n), *W = malloc(sizeof(float) * k * n);
    CHECK_OK(loco_lin_jvp(L, LOCO_OUT_X0, mask, k, V, JV));
    CHECK_CLOSE("JV (masked, k=5)", JV, JVr, k * l, 1e-4 * max_abs(JVr, k * l));
    CHECK_OK(loco_lin_vjp(L, LOCO_OUT_X0, mask, k, U, UJ));
    CHECK_CLOSE("UJ (masked, k=5)", UJ, UJr, k * n, 1e-4 * max_abs(UJr, k * n));
    /* one subspace-iteration step: W = (J V)^T J, W = P S Q^T */
    CHECK_OK(loco_lin_vjp(L, LOCO_OUT_X0, mask, k, JV, W));
    CHECK_CLOSE("step W = (JV)^T J", W, Wr, k * n, 1e-4 * max_abs(Wr, k * n));
    double S[5];
    float *Qt = malloc(sizeof(float) * k * n), sq[5];
    assert_int_equal(linalg_svd_rows(k, n, W, S, Qt, NULL), 0);
    for (int i = 0; i < k; i++) sq[i] = (float)sqrt(S[i]);
    CHECK_CLOSE("step sqrt(S)", sq, sr, k, 1e-4 * max_abs(sr, k));
    for (int i = 0; i < k; i++) /* up to sign */
        if (dot(Qt + i * n, Vr + i * n, n) < 0)
            for (size_t e = 0; e < n; e++) Qt[i * n + e] = -Qt[i * n + e];
    CHECK_CLOSE("step V = Q^T (up to sign)", Qt, Vr, k * n, 1e-4 * max_abs(Vr, k * n));
    printf("  record %.1f MiB, work space for k=5: %.1f MiB\n", loco_lin_record_bytes(L) / 1048576.0,
           loco_lin_work_bytes(L, 5) / 1048576.0);
    loco_lin_free(L);
    free(mask);
    free(JV);
    free(UJ);
    free(W);
    free(Qt);
    float *all[] = {x, t, maskf, V, U, JVr, UJr, Wr, sr, Vr, x0r};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) loco_free(all[i]);
    loco_model_free(m);
}

static void test_fixture_small(void **s) {
    (void)s;
    check_fixture("unet-small");
}
static void test_fixture_small_mh(void **s) {
    (void)s;
    check_fixture("unet-small_mh");
}

/* ======================================================================== */
/* Whole network: adjoint identity and finite differences                   */
/* ======================================================================== */

static void check_network(const char *name) {
    loco_model *m;
    CHECK_OK(loco_model_open(fixture_path(name), &m));
    const size_t n = 3 * 32 * 32;
    float *x = malloc(sizeof(float) * n);
    randn(x, n, 11);
    uint8_t *mask = malloc(n);
    for (size_t i = 0; i < n; i++) mask[i] = ((i / 32) % 32) >= 10 && ((i / 32) % 32) < 20 && (i % 32) < 16;
    const float ts[3] = {30.0f, 400.5f, 900.0f};
    const int ks[3] = {1, 3, 2};
    printf("%s:\n", name);
    for (int ti = 0; ti < 3; ti++) {
        loco_lin *L;
        CHECK_OK(loco_linearize(m, x, ts[ti], &L));
        for (int of = 0; of < 2; of++)
            for (int use_mask = 0; use_mask < 2; use_mask++) {
                int k = ks[(ti + of + use_mask) % 3];
                const uint8_t *mk = use_mask ? mask : NULL;
                size_t l = loco_lin_mask_count(L, mk);
                float *v = malloc(sizeof(float) * k * n), *u = malloc(sizeof(float) * k * l);
                float *Jv = malloc(sizeof(float) * k * l), *uJ = malloc(sizeof(float) * k * n);
                randn(v, k * n, 100 + ti);
                randn(u, k * l, 200 + ti);
                CHECK_OK(loco_lin_jvp(L, (loco_output)of, mk, k, v, Jv));
                CHECK_OK(loco_lin_vjp(L, (loco_output)of, mk, k, u, uJ));
                for (int b = 0; b < k; b++) {
                    double lhs = dot(u + b * l, Jv + b * l, l), rhs = dot(uJ + b * n, v + b * n, n);
                    double scale = sqrt(dot(u + b * l, u + b * l, l) * dot(Jv + b * l, Jv + b * l, l));
                    double rel = fabs(lhs - rhs) / scale;
                    printf("  t=%6.1f %-3s %-6s k=%d #%d  <u,Jv>=% .6e  <J^Tu,v>=% .6e  err/(|u||Jv|) %.1e\n",
                           ts[ti], of ? "x0" : "eps", use_mask ? "masked" : "full", k, b, lhs, rhs, rel);
                    if (!(rel <= 1e-6)) fail_msg("adjoint identity off by %.2e relative to |u||Jv|", rel);
                }
                /* batching: vector 0 alone gives the same J v */
                float *Jv1 = malloc(sizeof(float) * l);
                CHECK_OK(loco_lin_jvp(L, (loco_output)of, mk, 1, v, Jv1));
                CHECK_CLOSE("  batched == single", Jv1, Jv, l, 1e-5 * max_abs(Jv, l));
                free(Jv1);
                free(v);
                free(u);
                free(Jv);
                free(uJ);
            }
        /* central finite differences of eps along a random direction */
        float *v = malloc(sizeof(float) * n), *Jv = malloc(sizeof(float) * n), *xp = malloc(sizeof(float) * n),
              *xm = malloc(sizeof(float) * n), *ep = malloc(sizeof(float) * n), *em = malloc(sizeof(float) * n),
              *fd = malloc(sizeof(float) * n);
        randn(v, n, 300 + ti);
        CHECK_OK(loco_lin_jvp(L, LOCO_OUT_EPS, NULL, 1, v, Jv));
        const float h = 1e-3f;
        for (size_t i = 0; i < n; i++) {
            xp[i] = x[i] + h * v[i];
            xm[i] = x[i] - h * v[i];
        }
        float tt = ts[ti];
        CHECK_OK(loco_model_eps(m, 1, xp, &tt, ep));
        CHECK_OK(loco_model_eps(m, 1, xm, &tt, em));
        for (size_t i = 0; i < n; i++) fd[i] = (ep[i] - em[i]) / (2 * h);
        char what[64];
        snprintf(what, sizeof what, "  J v vs central FD (t=%.1f, h=1e-3)", ts[ti]);
        CHECK_CLOSE(what, Jv, fd, n, 2e-3 * max_abs(fd, n));
        /* the recorded value equals a plain forward pass */
        CHECK_OK(loco_model_eps(m, 1, x, &tt, ep));
        CHECK_CLOSE("  recorded eps == forward eps", loco_lin_value(L, LOCO_OUT_EPS), ep, n, 0);
        free(v);
        free(Jv);
        free(xp);
        free(xm);
        free(ep);
        free(em);
        free(fd);
        loco_lin_free(L);
    }
    /* hostile arguments */
    loco_lin *L;
    x[3] = NAN;
    expect_error(loco_linearize(m, x, 100, &L), LOCO_E_NUMERIC, "element 3", NULL);
    x[3] = 0;
    CHECK_OK(loco_linearize(m, x, 100, &L));
    float v1[3072], o1[3072];
    expect_error(loco_lin_jvp(L, LOCO_OUT_X0, NULL, 0, v1, o1), LOCO_E_INVALID_ARGUMENT, "k = 0", NULL);
    memset(v1, 0, sizeof v1);
    v1[7] = INFINITY;
    expect_error(loco_lin_jvp(L, LOCO_OUT_X0, NULL, 1, v1, o1), LOCO_E_NUMERIC, "element 7", NULL);
    loco_lin_free(L);
    free(x);
    free(mask);
    loco_model_free(m);
}

/* k vectors through in groups of one (graph_lin_work_budget of 1 byte) give
 * the same products, bit for bit, as all k at once */
static void test_vector_groups(void **s) {
    (void)s;
    loco_model *m;
    CHECK_OK(loco_model_open(fixture_path("unet-small"), &m));
    const size_t n = 3 * 32 * 32;
    const int k = 3;
    float *x = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * k * n), *a = malloc(sizeof(float) * k * n),
          *b = malloc(sizeof(float) * k * n);
    randn(x, n, 21);
    randn(v, k * n, 22);
    loco_lin *L;
    CHECK_OK(loco_linearize(m, x, 500.0f, &L));
    const size_t budget = graph_lin_work_budget;
    for (int vjp = 0; vjp < 2; vjp++) {
        graph_lin_work_budget = budget;
        CHECK_OK(vjp ? loco_lin_vjp(L, LOCO_OUT_X0, NULL, k, v, a) : loco_lin_jvp(L, LOCO_OUT_X0, NULL, k, v, a));
        graph_lin_work_budget = 1;
        CHECK_OK(vjp ? loco_lin_vjp(L, LOCO_OUT_X0, NULL, k, v, b) : loco_lin_jvp(L, LOCO_OUT_X0, NULL, k, v, b));
        CHECK_CLOSE(vjp ? "U^T J, k = 3 in groups of one == at once" : "J V, k = 3 in groups of one == at once", b, a,
                    k * n, 0);
    }
    graph_lin_work_budget = budget;
    loco_lin_free(L);
    loco_model_free(m);
    free(x), free(v), free(a), free(b);
}

static void test_network_small(void **s) {
    (void)s;
    check_network("unet-small");
}
static void test_network_small_mh(void **s) {
    (void)s;
    check_network("unet-small_mh");
}

/* ======================================================================== */
/* Per op                                                                   */
/* ======================================================================== */

/* Checks one op given as jvp/vjp/fwd closures via a small vtable. */
typedef struct op_case {
    const char *name;
    size_t nin, nout;
    void *ctx;
    void (*fwd)(void *ctx, const float *x, float *y);             /* batch 1 */
    void (*jvp)(void *ctx, int B, const float *dx, float *dy);    /* at x0   */
    void (*vjp)(void *ctx, int B, const float *dy, float *dx);    /* +=      */
    float h, fd_tol;                                              /* FD step, tolerance relative to max |fd| */
} op_case;

static void check_op(const op_case *c, const float *x0) {
    const int B = 3;
    size_t ni = c->nin, no = c->nout;
    float *v = malloc(sizeof(float) * B * ni), *u = malloc(sizeof(float) * B * no);
    float *Jv = malloc(sizeof(float) * B * no), *uJ = calloc(B * ni, sizeof(float));
    randn(v, B * ni, 7);
    randn(u, B * no, 8);
    c->jvp(c->ctx, B, v, Jv);
    c->vjp(c->ctx, B, u, uJ);
    double worst = 0;
    for (int b = 0; b < B; b++) {
        double lhs = dot(u + b * no, Jv + b * no, no), rhs = dot(uJ + b * ni, v + b * ni, ni);
        double rel = fabs(lhs - rhs) / sqrt(dot(u + b * no, u + b * no, no) * dot(Jv + b * no, Jv + b * no, no));
        worst = fmax(worst, rel);
    }
    printf("  %-28s adjoint identity: worst |<u,Jv> - <J^T u,v>| / (|u||Jv|) = %.2e\n", c->name, worst);
    if (!(worst <= 1e-6)) fail_msg("%s: adjoint identity off by %.2e", c->name, worst);
    /* vjp accumulates: running it twice doubles the result */
    float *uJ2 = malloc(sizeof(float) * B * ni);
    memcpy(uJ2, uJ, sizeof(float) * B * ni);
    c->vjp(c->ctx, B, u, uJ2);
    for (size_t i = 0; i < B * ni; i++) uJ2[i] *= 0.5f;
    CHECK_CLOSE("    vjp accumulates (+=)", uJ2, uJ, B * ni, 1e-6 * max_abs(uJ, B * ni));
    /* finite differences for the first tangent */
    float *xp = malloc(sizeof(float) * ni), *xm = malloc(sizeof(float) * ni), *yp = malloc(sizeof(float) * no),
          *ym = malloc(sizeof(float) * no), *fd = malloc(sizeof(float) * no);
    for (size_t i = 0; i < ni; i++) {
        xp[i] = x0[i] + c->h * v[i];
        xm[i] = x0[i] - c->h * v[i];
    }
    c->fwd(c->ctx, xp, yp);
    c->fwd(c->ctx, xm, ym);
    for (size_t i = 0; i < no; i++) fd[i] = (yp[i] - ym[i]) / (2 * c->h);
    char what[80];
    snprintf(what, sizeof what, "    %s J v vs central FD", c->name);
    CHECK_CLOSE(what, Jv, fd, no, c->fd_tol * max_abs(fd, no));
    free(v);
    free(u);
    free(Jv);
    free(uJ);
    free(uJ2);
    free(xp);
    free(xm);
    free(yp);
    free(ym);
    free(fd);
}

/* ---- conv ---- */
typedef struct conv_ctx {
    conv_geom g;
    float *w, *b, *scratch;
} conv_ctx;
static void conv_f(void *p, const float *x, float *y) {
    conv_ctx *c = p;
    conv2d_fwd(&c->g, 1, x, c->w, c->b, NULL, y, c->scratch);
}
static void conv_j(void *p, int B, const float *dx, float *dy) {
    conv_ctx *c = p;
    conv2d_fwd(&c->g, B, dx, c->w, NULL, NULL, dy, c->scratch);
}
static void conv_v(void *p, int B, const float *dy, float *dx) {
    conv_ctx *c = p;
    conv2d_vjp(&c->g, B, dy, c->w, dx, c->scratch);
}

static void test_op_conv(void **s) {
    (void)s;
    const conv_geom gs[5] = {
        {5, 7, 9, 6, 3, 1, 1, 1, 9, 6, 0, 0},       /* 3x3 pad 1 */
        {4, 6, 8, 10, 3, 2, 0, 0, 4, 5, 0, 0},      /* stride 2, diffusers' (0,1,0,1) pad */
        {4, 6, 8, 8, 3, 2, 1, 1, 4, 4, 0, 0},       /* stride 2, pad 1 */
        {6, 3, 5, 7, 1, 1, 0, 0, 5, 7, 0, 0},       /* 1x1 */
        {16, 24, 16, 17, 3, 1, 1, 1, 16, 17, 1, 0}, /* 3x3 pad 1 by Winograd (forward and VJP) */
    };
    const char *names[5] = {"conv 3x3 s1 p1", "conv 3x3 s2 p(0,1)", "conv 3x3 s2 p1", "conv 1x1", "conv 3x3 Winograd"};
    for (int i = 0; i < 5; i++) {
        if (gs[i].wino) assert_true(conv2d_wino_use(&gs[i]));
        conv_ctx c = {gs[i], NULL, NULL, NULL};
        size_t nw = (size_t)c.g.cout * c.g.cin * c.g.k * c.g.k;
        c.w = malloc(sizeof(float) * nw);
        c.b = malloc(sizeof(float) * c.g.cout);
        c.scratch = malloc(sizeof(float) * (conv2d_scratch(&c.g) + 1));
        randn(c.w, nw, 30 + i);
        randn(c.b, c.g.cout, 40 + i);
        size_t ni = (size_t)c.g.cin * c.g.h * c.g.w;
        float *x0 = malloc(sizeof(float) * ni);
        randn(x0, ni, 50 + i);
        op_case oc = {names[i], ni, (size_t)c.g.cout * c.g.ho * c.g.wo, &c, conv_f, conv_j, conv_v, 1e-2f, 1e-3f};
        check_op(&oc, x0);
        free(c.w);
        free(c.b);
        free(c.scratch);
        free(x0);
    }
}

/* ---- group norm (+silu) ---- */
typedef struct gn_ctx {
    int C, hw, G, silu;
    float *gamma, *beta, *x, mean[8], rstd[8];
} gn_ctx;
static void gn_f(void *p, const float *x, float *y) {
    gn_ctx *c = p;
    group_norm_fwd(1, c->C, c->hw, c->G, 1e-5f, c->gamma, c->beta, c->silu, x, y, NULL, NULL);
}
static void gn_j(void *p, int B, const float *dx, float *dy) {
    gn_ctx *c = p;
    group_norm_jvp(B, c->C, c->hw, c->G, c->gamma, c->beta, c->silu, c->x, c->mean, c->rstd, dx, dy);
}
static void gn_v(void *p, int B, const float *dy, float *dx) {
    gn_ctx *c = p;
    group_norm_vjp(B, c->C, c->hw, c->G, c->gamma, c->beta, c->silu, c->x, c->mean, c->rstd, dy, dx);
}

static void test_op_group_norm(void **s) {
    (void)s;
    for (int silu = 0; silu < 2; silu++) {
        gn_ctx c = {8, 15, 4, silu, NULL, NULL, NULL, {0}, {0}};
        size_t n = (size_t)c.C * c.hw;
        c.gamma = malloc(sizeof(float) * c.C);
        c.beta = malloc(sizeof(float) * c.C);
        c.x = malloc(sizeof(float) * n);
        randn(c.gamma, c.C, 1);
        randn(c.beta, c.C, 2);
        randn(c.x, n, 3);
        float *y = malloc(sizeof(float) * n);
        group_norm_fwd(1, c.C, c.hw, c.G, 1e-5f, c.gamma, c.beta, silu, c.x, y, c.mean, c.rstd);
        op_case oc = {silu ? "group norm + silu" : "group norm", n, n, &c, gn_f, gn_j, gn_v, 1e-2f, 2e-3f};
        check_op(&oc, c.x);
        free(c.gamma);
        free(c.beta);
        free(c.x);
        free(y);
    }
}

/* ---- silu, upsample ---- */
typedef struct ew_ctx {
    size_t n;
    int C, h, w;
    float *x;
} ew_ctx;
static void silu_f(void *p, const float *x, float *y) { silu_fwd(((ew_ctx *)p)->n, x, y); }
static void silu_j(void *p, int B, const float *dx, float *dy) {
    ew_ctx *c = p;
    silu_jvp(B, c->n, c->x, dx, dy);
}
static void silu_v(void *p, int B, const float *dy, float *dx) {
    ew_ctx *c = p;
    silu_vjp(B, c->n, c->x, dy, dx);
}
static void up_f(void *p, const float *x, float *y) {
    ew_ctx *c = p;
    upsample2x_fwd(1, c->C, c->h, c->w, x, y);
}
static void up_j(void *p, int B, const float *dx, float *dy) {
    ew_ctx *c = p;
    upsample2x_fwd(B, c->C, c->h, c->w, dx, dy);
}
static void up_v(void *p, int B, const float *dy, float *dx) {
    ew_ctx *c = p;
    upsample2x_vjp(B, c->C, c->h, c->w, dy, dx);
}

static void test_op_elementwise(void **s) {
    (void)s;
    ew_ctx c = {60, 3, 4, 5, NULL};
    c.x = malloc(sizeof(float) * 60);
    randn(c.x, 60, 5);
    for (int i = 0; i < 60; i++) c.x[i] *= 3;
    op_case a = {"silu", 60, 60, &c, silu_f, silu_j, silu_v, 1e-2f, 1e-3f};
    check_op(&a, c.x);
    op_case b = {"upsample 2x", 60, 240, &c, up_f, up_j, up_v, 1e-2f, 1e-4f};
    check_op(&b, c.x);
    free(c.x);
}

/* ---- attention ---- */
typedef struct at_ctx {
    attn_params p;
    int C, hw;
    float *x, *scratch, *saved;
    attn_saved s;
} at_ctx;
static void at_f(void *q, const float *x, float *y) {
    at_ctx *c = q;
    attention_fwd(&c->p, 1, c->C, c->hw, x, y, c->scratch, NULL);
}
static void at_j(void *q, int B, const float *dx, float *dy) {
    at_ctx *c = q;
    attention_jvp(&c->p, c->C, c->hw, c->x, &c->s, B, dx, dy, c->scratch);
}
static void at_v(void *q, int B, const float *dy, float *dx) {
    at_ctx *c = q;
    attention_vjp(&c->p, c->C, c->hw, c->x, &c->s, B, dy, dx, c->scratch);
}

static void test_op_attention(void **s) {
    (void)s;
    for (int heads = 1; heads <= 4; heads += 3) {
        at_ctx c;
        memset(&c, 0, sizeof c);
        c.C = 8;
        c.hw = 12;
        const int C = c.C, hw = c.hw;
        float *w = malloc(sizeof(float) * (2 * C + 4 * (C * C + C)));
        randn(w, 2 * C + 4 * (C * C + C), 60 + heads);
        for (int i = 0; i < 4 * (C * C + C); i++) w[2 * C + i] *= 0.5f;
        c.p.gn_w = w;
        c.p.gn_b = w + C;
        float *q = w + 2 * C;
        c.p.wq = q;
        c.p.bq = q + C * C;
        q += C * C + C;
        c.p.wk = q;
        c.p.bk = q + C * C;
        q += C * C + C;
        c.p.wv = q;
        c.p.bv = q + C * C;
        q += C * C + C;
        c.p.wo = q;
        c.p.bo = q + C * C;
        c.p.groups = 2;
        c.p.eps = 1e-5f;
        c.p.heads = heads;
        c.p.rescale = heads == 1 ? 1.0f : 2.0f;
        c.x = malloc(sizeof(float) * C * hw);
        randn(c.x, C * hw, 70);
        c.scratch = malloc(sizeof(float) * attention_scratch(C, hw));
        c.saved = malloc(sizeof(float) * (4 + 3 * C * hw + heads * hw * hw));
        c.s = (attn_saved){c.saved, c.saved + 2, c.saved + 4, c.saved + 4 + C * hw, c.saved + 4 + 2 * C * hw,
                           c.saved + 4 + 3 * C * hw};
        float *y = malloc(sizeof(float) * C * hw), *y2 = malloc(sizeof(float) * C * hw);
        attention_fwd(&c.p, 1, C, hw, c.x, y, c.scratch, &c.s);
        attention_fwd(&c.p, 1, C, hw, c.x, y2, c.scratch, NULL);
        CHECK_CLOSE("  attention saving == not saving", y, y2, (size_t)C * hw, 0);
        op_case oc = {heads == 1 ? "attention, 1 head" : "attention, 4 heads, rescale 2", (size_t)C * hw,
                      (size_t)C * hw, &c, at_f, at_j, at_v, 1e-2f, 2e-3f};
        check_op(&oc, c.x);
        free(w);
        free(c.x);
        free(c.scratch);
        free(c.saved);
        free(y);
        free(y2);
    }
}

/* ======================================================================== */
/* Command line: loco jacobian reproduces the fixture                       */
/* ======================================================================== */

static void test_cli_jacobian(void **st) {
    (void)st;
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[2048], dir[] = "/tmp/loco_jacXXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *F = fixture_path("unet-small");
    char vec[600];
    snprintf(vec, sizeof vec, "%s/vectors.safetensors", F);
    const char *modes[2] = {"jvp", "vjp"}, *names[2] = {"JV", "UJ"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "%s/loco jacobian %s --x %s --t 595.36359 --mode %s --in %s --out %s/%s.st --rect 6,16,8,24 --quiet",
                 build, F, vec, modes[i], vec, dir, modes[i]);
        printf("  $ %s\n", cmd);
        assert_int_equal(system(cmd), 0);
        char out[700];
        snprintf(out, sizeof out, "%s/%s.st", dir, modes[i]);
        size_t n, nr;
        float *got = load_tensor(out, names[i], &n), *ref = load_tensor(vec, names[i], &nr);
        assert_int_equal(n, nr);
        CHECK_CLOSE(names[i], got, ref, n, 1e-4 * max_abs(ref, n));
        loco_free(got);
        loco_free(ref);
        remove(out);
    }
    /* a bad rectangle is refused and writes nothing */
    snprintf(cmd, sizeof cmd,
             "%s/loco jacobian %s --x %s --t 595 --mode jvp --in %s --out %s/bad.st --rect 6,6,8,24 2>/dev/null", build,
             F, vec, vec, dir);
    assert_int_not_equal(system(cmd), 0);
    char bad[700];
    snprintf(bad, sizeof bad, "%s/bad.st", dir);
    assert_null(fopen(bad, "rb"));
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_conv),          cmocka_unit_test(test_op_group_norm),
        cmocka_unit_test(test_op_elementwise),   cmocka_unit_test(test_op_attention),
        cmocka_unit_test(test_fixture_small),    cmocka_unit_test(test_fixture_small_mh),
        cmocka_unit_test(test_network_small),    cmocka_unit_test(test_network_small_mh),
        cmocka_unit_test(test_vector_groups),    cmocka_unit_test(test_cli_jacobian),
    };
    return cmocka_run_group_tests_name("linearize", tests, NULL, NULL);
}
