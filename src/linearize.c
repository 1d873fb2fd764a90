/* linearize.c - one recorded forward pass, then batched Jacobian products.
 *
 * Record: the forward pass at (x, t) with batch 1, keeping only what the
 * derivative passes read: the inputs of the nonlinear nodes (group norm,
 * SiLU, attention) plus their statistics (group-norm mean/rstd; attention
 * q, k, v and probabilities). Linear nodes (conv, add, concat, upsample)
 * keep nothing, and the time-embedding path is a constant of x.
 *
 * J V: the nodes in order on k tangents at once (batch k), each through its
 * jvp; a tangent is released after its last reader (forward liveness plan).
 * U^T J: the nodes in reverse on k cotangents; a value's cotangent is created
 * (zeroed) at its last reader and released after its producer has run;
 * every vjp accumulates.
 *
 * The network predicts y (eps, v or x0: the model's prediction_type); eps
 * and x0_hat are linear in (x, y) (param.h), so J_out V = param_out(V, J_y V)
 * and U^T J_out = param_out(U, U^T J_y) with the same coefficients. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct loco_lin {
    loco_model *m;          /* borrowed                                        */
    float t, abar;
    size_t n_in, n_out;     /* C*H*W of input and output                       */
    float *rec;             /* record arena                                    */
    size_t *rec_off;        /* [n_values]                                      */
    size_t rec_floats;
    float *save;            /* per-node saved statistics                       */
    size_t *save_off;       /* [n_nodes], SIZE_MAX when none                   */
    size_t save_floats;
    float *x, *eps, *x0;    /* [n_in], [n_out], [n_out]                        */
    size_t *jvp_off;        /* [n_values] tangent plan (per vector)            */
    size_t jvp_peak;
    size_t *vjp_off;        /* [n_values] cotangent plan (per vector)          */
    size_t vjp_peak;
    unsigned char *vjp_zero;/* [n_nodes] bits 0/1: zero in0/in1 cotangent here; bit 2: node active */
    float *work;            /* k * max(jvp_peak, vjp_peak)                     */
    size_t work_floats;
    float *scratch;         /* [m->net.scratch_floats]                         */
    float *buf;             /* [k * max(n_in, n_out)] staging                  */
    size_t buf_floats;
    molrg_lin *mo;          /* MoLRG models: the closed-form state instead      */
};

static int dep(const unet *u, int v) { return v >= 0 && u->values[v].depends_on_x; }

/* ======================================================================== */
/* Plans                                                                    */
/* ======================================================================== */

static loco_status make_plans(loco_lin *L) {
    const unet *u = &L->m->net;
    const int nv = u->n_values, nn = u->n_nodes;
    L->rec_off = calloc((size_t)nv, sizeof(size_t));
    L->jvp_off = calloc((size_t)nv, sizeof(size_t));
    L->vjp_off = calloc((size_t)nv, sizeof(size_t));
    L->save_off = calloc((size_t)nn, sizeof(size_t));
    L->vjp_zero = calloc((size_t)nn, 1);
    char *keep = calloc((size_t)nv, 1);
    char *have = calloc((size_t)nv, 1);
    if (!L->rec_off || !L->jvp_off || !L->vjp_off || !L->save_off || !L->vjp_zero || !keep || !have) {
        free(keep);
        free(have);
        return loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
    }
    /* record: keep the inputs the derivative passes read */
    L->save_floats = 0;
    for (int i = 0; i < nn; i++) {
        const node *n = &u->nodes[i];
        L->save_off[i] = SIZE_MAX;
        if (!dep(u, n->out)) continue;
        if (n->kind == NODE_GN || n->kind == NODE_SILU || n->kind == NODE_ATTN) keep[n->in0] = 1;
        size_t sf = unet_node_save_floats(u, i);
        if (sf) {
            L->save_off[i] = L->save_floats;
            L->save_floats += (sf + 15) & ~(size_t)15;
        }
    }
    L->rec_floats = unet_plan_forward(u, keep, L->rec_off);

    /* J V: forward order over the x-dependent nodes */
    planner pl;
    planner_init(&pl);
    L->jvp_off[u->x_in] = planner_alloc(&pl, unet_value_size(u, u->x_in), u->x_in);
    for (int i = 0; i < nn; i++) {
        const node *n = &u->nodes[i];
        if (!dep(u, n->out)) continue;
        L->jvp_off[n->out] = planner_alloc(&pl, unet_value_size(u, n->out), n->out);
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (dep(u, in[j]) && u->values[in[j]].last_use == i && in[j] != u->t_out) planner_free(&pl, in[j]);
    }
    L->jvp_peak = pl.oom ? 0 : pl.peak;
    planner_release(&pl);

    /* U^T J: reverse order */
    planner_init(&pl);
    L->vjp_off[u->t_out] = planner_alloc(&pl, unet_value_size(u, u->t_out), u->t_out);
    have[u->t_out] = 1;
    for (int i = nn - 1; i >= 0; i--) {
        const node *n = &u->nodes[i];
        if (!dep(u, n->out) || !have[n->out]) continue;
        L->vjp_zero[i] |= 4; /* active: its output has a cotangent */
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (dep(u, in[j]) && !have[in[j]]) {
                L->vjp_off[in[j]] = planner_alloc(&pl, unet_value_size(u, in[j]), in[j]);
                have[in[j]] = 1;
                L->vjp_zero[i] |= (unsigned char)(1 << j);
            }
        planner_free(&pl, n->out);
    }
    L->vjp_peak = pl.oom ? 0 : pl.peak;
    planner_release(&pl);
    int ok = have[u->x_in];
    free(keep);
    free(have);
    if (!L->rec_floats || !L->jvp_peak || !L->vjp_peak) return loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
    if (!ok) return loco_fail(LOCO_E_UNSUPPORTED, "linearize: the output does not depend on the input");
    return LOCO_OK;
}

/* ======================================================================== */
/* Record                                                                   */
/* ======================================================================== */

void loco_lin_free(loco_lin *L) {
    if (!L) return;
    free(L->rec);
    free(L->rec_off);
    free(L->save);
    free(L->save_off);
    free(L->x);
    free(L->eps);
    free(L->x0);
    free(L->jvp_off);
    free(L->vjp_off);
    free(L->vjp_zero);
    free(L->work);
    free(L->scratch);
    free(L->buf);
    molrg_lin_free(L->mo);
    free(L);
}

loco_status loco_linearize(loco_model *m, const float *x, float t, loco_lin **out) {
    if (!m || !x || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_linearize: NULL argument");
    *out = NULL;
    if (!isfinite(t) || t < 0) return loco_fail(LOCO_E_NUMERIC, "loco_linearize: t = %g is not a finite timestep", t);
    if (t > (float)(m->sched.T - 1))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_linearize: t = %g is outside the model's timesteps [0, %d]",
                         (double)t, m->sched.T - 1);
    const unet *u = &m->net;
    loco_lin *L = calloc(1, sizeof *L);
    if (!L) return loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
    L->m = m;
    L->t = t;
    L->abar = schedule_abar(&m->sched, t);
    if (m->mo) {
        L->n_in = L->n_out = m->mo->n;
        for (size_t i = 0; i < L->n_in; i++)
            if (!isfinite(x[i])) {
                loco_lin_free(L);
                return loco_fail(LOCO_E_NUMERIC, "loco_linearize: x element %zu is not finite", i);
            }
        loco_status ms = molrg_lin_new(m->mo, x, L->abar, &L->mo);
        L->x0 = malloc(sizeof(float) * L->n_out);
        L->eps = malloc(sizeof(float) * L->n_out);
        if (ms || !L->x0 || !L->eps) {
            loco_lin_free(L);
            return ms ? ms : loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
        }
        memcpy(L->x0, molrg_lin_x0(L->mo), sizeof(float) * L->n_out);
        const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
        param_apply(m->sched.pred, LOCO_OUT_EPS, sa, s1, L->n_out, x, L->x0, L->eps);
        *out = L;
        return LOCO_OK;
    }
    L->n_in = unet_value_size(u, u->x_in);
    L->n_out = unet_value_size(u, u->t_out);
    for (size_t i = 0; i < L->n_in; i++)
        if (!isfinite(x[i])) {
            loco_lin_free(L);
            return loco_fail(LOCO_E_NUMERIC, "loco_linearize: x element %zu is not finite", i);
        }
    loco_status s = make_plans(L);
    if (s) {
        loco_lin_free(L);
        return s;
    }
    threads_for_work(u->flops);
    L->rec = loco_malloc(L->rec_floats * sizeof(float));
    L->save = loco_malloc((L->save_floats ? L->save_floats : 1) * sizeof(float));
    L->scratch = loco_malloc(u->scratch_floats * sizeof(float));
    L->x = malloc(L->n_in * sizeof(float));
    L->eps = malloc(L->n_out * sizeof(float));
    L->x0 = malloc(L->n_out * sizeof(float));
    if (!L->rec || !L->save || !L->scratch || !L->x || !L->eps || !L->x0) {
        loco_lin_free(L);
        return loco_fail(LOCO_E_NOMEM, "linearize: cannot allocate the record (%zu bytes)",
                         (L->rec_floats + L->save_floats) * sizeof(float));
    }
    memcpy(L->x, x, L->n_in * sizeof(float));
    memcpy(L->rec + L->rec_off[u->x_in], x, L->n_in * sizeof(float));
    for (int i = 0; i < u->n_nodes; i++)
        unet_exec_node(u, i, 1, L->rec, L->rec_off, &t, L->scratch,
                       L->save_off[i] == SIZE_MAX ? NULL : L->save + L->save_off[i]);
    /* the network's prediction, then eps and x0_hat from it (param.h) */
    const float *y = L->rec + L->rec_off[u->t_out];
    float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    for (size_t i = 0; i < L->n_out; i++) {
        L->eps[i] = i < L->n_in ? param_out(m->sched.pred, LOCO_OUT_EPS, sa, s1, x[i], y[i]) : y[i];
        L->x0[i] = i < L->n_in ? param_out(m->sched.pred, LOCO_OUT_X0, sa, s1, x[i], y[i]) : 0.0f;
    }
    if ((s = model_check_finite(L->eps, L->n_out, "linearize: the model output (eps)")) ||
        (s = model_check_finite(L->x0, L->n_out, "linearize: x0_hat"))) {
        loco_lin_free(L);
        return s;
    }
    *out = L;
    return LOCO_OK;
}

const float *loco_lin_value(const loco_lin *L, loco_output of) {
    if (!L) return NULL;
    return of == LOCO_OUT_X0 ? L->x0 : L->eps;
}

size_t loco_lin_input_size(const loco_lin *L) { return L ? L->n_in : 0; }
size_t loco_lin_output_size(const loco_lin *L) { return L ? L->n_out : 0; }

size_t loco_lin_mask_count(const loco_lin *L, const uint8_t *mask) {
    if (!L) return 0;
    if (!mask) return L->n_out;
    size_t c = 0;
    for (size_t i = 0; i < L->n_out; i++) c += mask[i] != 0;
    return c;
}

size_t loco_lin_record_bytes(const loco_lin *L) {
    if (!L) return 0;
    return (L->rec_floats + L->save_floats + L->n_in + 2 * L->n_out + L->m->net.scratch_floats) * sizeof(float);
}

size_t loco_lin_work_bytes(const loco_lin *L, int k) {
    if (!L || k < 1) return 0;
    size_t peak = L->jvp_peak > L->vjp_peak ? L->jvp_peak : L->vjp_peak;
    size_t nmax = L->n_in > L->n_out ? L->n_in : L->n_out;
    return ((size_t)k * peak + (size_t)k * nmax) * sizeof(float);
}

static loco_status reserve(loco_lin *L, int k) {
    size_t peak = L->jvp_peak > L->vjp_peak ? L->jvp_peak : L->vjp_peak;
    if (L->mo) peak = 0;
    size_t need, nbuf;
    size_t nmax = L->n_in > L->n_out ? L->n_in : L->n_out;
    if (!loco_mul_ok(peak, (size_t)k, &need) || !loco_mul_ok(nmax, (size_t)k, &nbuf))
        return loco_fail(LOCO_E_NOMEM, "k = %d vectors: work space overflows", k);
    if (need > L->work_floats && need > 0) {
        free(L->work);
        L->work_floats = 0;
        if (!(L->work = loco_malloc(need * sizeof(float))))
            return loco_fail(LOCO_E_NOMEM, "k = %d vectors: cannot allocate %zu bytes of work space", k,
                             need * sizeof(float));
        L->work_floats = need;
    }
    if (nbuf > L->buf_floats) {
        free(L->buf);
        L->buf_floats = 0;
        if (!(L->buf = loco_malloc(nbuf * sizeof(float))))
            return loco_fail(LOCO_E_NOMEM, "k = %d vectors: out of memory", k);
        L->buf_floats = nbuf;
    }
    return LOCO_OK;
}

static loco_status check_args(const loco_lin *L, loco_output of, int k, const void *a, const void *b) {
    if (!L || !a || !b) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    if (k < 1 || k > 65536) return loco_fail(LOCO_E_INVALID_ARGUMENT, "k = %d vectors is out of range [1, 65536]", k);
    if (of != LOCO_OUT_EPS && of != LOCO_OUT_X0) return loco_fail(LOCO_E_INVALID_ARGUMENT, "unknown output %d", of);
    if (of == LOCO_OUT_X0 && L->n_in != L->n_out)
        return loco_fail(LOCO_E_UNSUPPORTED, "x0_hat needs as many output as input channels");
    return LOCO_OK;
}

/* ======================================================================== */
/* MoLRG: exact products of the closed form (J of x0_hat; eps from it)       */
/* ======================================================================== */

static loco_status molrg_jvp(loco_lin *L, loco_output of, const uint8_t *mask, int k, const float *V, float *JV) {
    const size_t n = L->n_in, l = mask ? loco_lin_mask_count(L, mask) : n;
    for (size_t i = 0; i < n * (size_t)k; i++)
        if (!isfinite(V[i])) return loco_fail(LOCO_E_NUMERIC, "J V: tangent element %zu is not finite", i);
    molrg_lin_jvp(L->mo, k, V, L->buf);
    const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    for (int b = 0; b < k; b++) {
        const float *jx = L->buf + (size_t)b * n, *v = V + (size_t)b * n;
        float *o = JV + (size_t)b * l;
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            if (mask && !mask[i]) continue;
            o[j++] = param_out(PRED_SAMPLE, of, sa, s1, v[i], jx[i]);
        }
    }
    return LOCO_OK;
}

static loco_status molrg_vjp(loco_lin *L, loco_output of, const uint8_t *mask, int k, const float *U, float *UJ) {
    const size_t n = L->n_in, l = mask ? loco_lin_mask_count(L, mask) : n;
    for (size_t i = 0; i < l * (size_t)k; i++)
        if (!isfinite(U[i])) return loco_fail(LOCO_E_NUMERIC, "U^T J: cotangent element %zu is not finite", i);
    float *full = malloc(sizeof(float) * n * (size_t)k);
    if (!full) return loco_fail(LOCO_E_NOMEM, "out of memory");
    for (int b = 0; b < k; b++) {
        size_t j = 0;
        for (size_t i = 0; i < n; i++) full[(size_t)b * n + i] = (!mask || mask[i]) ? U[(size_t)b * l + j++] : 0.0f;
    }
    molrg_lin_vjp(L->mo, k, full, UJ);
    const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    param_apply(PRED_SAMPLE, of, sa, s1, n * (size_t)k, full, UJ, UJ);
    free(full);
    return LOCO_OK;
}

/* ======================================================================== */
/* J V                                                                      */
/* ======================================================================== */

static void jvp_pass(loco_lin *L, int k) {
    const unet *u = &L->m->net;
    float *W = L->work;
#define T(id) (W + L->jvp_off[id] * (size_t)k)
#define R(id) (L->rec + L->rec_off[id])
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        if (!dep(u, n->out)) continue;
        const value *ov = &u->values[n->out];
        const size_t nel = unet_value_size(u, n->out);
        float *y = T(n->out);
        const float *save = L->save_off[i] == SIZE_MAX ? NULL : L->save + L->save_off[i];
        switch (n->kind) {
        case NODE_CONV:
            conv2d_fwd(&n->g, k, T(n->in0), unet_param(u, n->pw), NULL, NULL, y, L->scratch);
            break;
        case NODE_GN:
            group_norm_jvp(k, ov->c, ov->h * ov->w, n->groups, unet_param(u, n->pw), unet_param(u, n->pb), n->silu,
                           R(n->in0), save, save + n->groups, T(n->in0), y);
            break;
        case NODE_SILU: silu_jvp(k, nel, R(n->in0), T(n->in0), y); break;
        case NODE_ADD: {
            int da = dep(u, n->in0), db = dep(u, n->in1);
            size_t tot = nel * (size_t)k;
            if (da && db) add_scale_fwd(tot, T(n->in0), T(n->in1), n->scale, y);
            else {
                const float *src = da ? T(n->in0) : T(n->in1);
                for (size_t j = 0; j < tot; j++) y[j] = src[j] / n->scale;
            }
            break;
        }
        case NODE_CONCAT: {
            const value *va = &u->values[n->in0], *vb = &u->values[n->in1];
            size_t hw = (size_t)ov->h * ov->w;
            for (int b = 0; b < k; b++) {
                float *yb = y + (size_t)b * nel;
                if (dep(u, n->in0)) memcpy(yb, T(n->in0) + (size_t)b * va->c * hw, sizeof(float) * va->c * hw);
                else memset(yb, 0, sizeof(float) * va->c * hw);
                if (dep(u, n->in1))
                    memcpy(yb + va->c * hw, T(n->in1) + (size_t)b * vb->c * hw, sizeof(float) * vb->c * hw);
                else memset(yb + va->c * hw, 0, sizeof(float) * vb->c * hw);
            }
            break;
        }
        case NODE_UPSAMPLE: upsample2x_fwd(k, ov->c, u->values[n->in0].h, u->values[n->in0].w, T(n->in0), y); break;
        case NODE_ATTN: {
            attn_params ap = unet_attn_params(u, i);
            attn_saved sv = unet_attn_saved(u, i, (float *)save);
            attention_jvp(&ap, ov->c, ov->h * ov->w, R(n->in0), &sv, k, T(n->in0), y, L->scratch);
            break;
        }
        case NODE_SCALE_SHIFT: {
            const float *src = T(n->in0);
            for (size_t j = 0; j < nel * (size_t)k; j++) y[j] = src[j] * n->scale;
            break;
        }
        case NODE_TEMB:
        case NODE_LINEAR:
        case NODE_KIND_COUNT: break; /* never depend on x */
        }
    }
#undef T
#undef R
}

loco_status loco_lin_jvp(loco_lin *L, loco_output of, const uint8_t *mask, int k, const float *V, float *JV) {
    loco_status s = check_args(L, of, k, V, JV);
    if (s || (s = reserve(L, k))) return s;
    if (L->mo) return molrg_jvp(L, of, mask, k, V, JV);
    const unet *u = &L->m->net;
    threads_for_work(u->flops);
    const size_t nin = L->n_in, nout = L->n_out;
    for (size_t i = 0; i < nin * (size_t)k; i++)
        if (!isfinite(V[i])) return loco_fail(LOCO_E_NUMERIC, "J V: tangent element %zu is not finite", i);
    memcpy(L->work + L->jvp_off[u->x_in] * (size_t)k, V, sizeof(float) * nin * (size_t)k);
    jvp_pass(L, k);
    const float *te = L->work + L->jvp_off[u->t_out] * (size_t)k; /* J_y V, [k, nout] */
    const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    for (int b = 0; b < k; b++) {
        const float *e = te + (size_t)b * nout;
        const float *v = V + (size_t)b * nin;
        size_t l = 0;
        float *o = JV + (size_t)b * (mask ? loco_lin_mask_count(L, mask) : nout);
        for (size_t i = 0; i < nout; i++) {
            if (mask && !mask[i]) continue;
            o[l++] = param_out(L->m->sched.pred, of, sa, s1, v[i], e[i]);
        }
    }
    return model_check_finite(JV, (size_t)k * (mask ? loco_lin_mask_count(L, mask) : nout), "J V");
}

/* ======================================================================== */
/* U^T J                                                                    */
/* ======================================================================== */

static void vjp_pass(loco_lin *L, int k) {
    const unet *u = &L->m->net;
    float *W = L->work;
#define C(id) (W + L->vjp_off[id] * (size_t)k)
#define R(id) (L->rec + L->rec_off[id])
    for (int i = u->n_nodes - 1; i >= 0; i--) {
        const node *n = &u->nodes[i];
        if (!(L->vjp_zero[i] & 4)) continue;
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (L->vjp_zero[i] & (1 << j)) memset(C(in[j]), 0, sizeof(float) * unet_value_size(u, in[j]) * (size_t)k);
        const value *ov = &u->values[n->out];
        const size_t nel = unet_value_size(u, n->out);
        const float *dy = C(n->out);
        const float *save = L->save_off[i] == SIZE_MAX ? NULL : L->save + L->save_off[i];
        switch (n->kind) {
        case NODE_CONV: conv2d_vjp(&n->g, k, dy, unet_param(u, n->pw), C(n->in0), L->scratch); break;
        case NODE_GN:
            group_norm_vjp(k, ov->c, ov->h * ov->w, n->groups, unet_param(u, n->pw), unet_param(u, n->pb), n->silu,
                           R(n->in0), save, save + n->groups, dy, C(n->in0));
            break;
        case NODE_SILU: silu_vjp(k, nel, R(n->in0), dy, C(n->in0)); break;
        case NODE_ADD:
            for (int j = 0; j < 2; j++)
                if (dep(u, in[j])) {
                    float *dx = C(in[j]);
                    const float inv = 1.0f / n->scale;
                    for (size_t e = 0; e < nel * (size_t)k; e++) dx[e] += dy[e] * inv;
                }
            break;
        case NODE_CONCAT: {
            const value *va = &u->values[n->in0], *vb = &u->values[n->in1];
            size_t hw = (size_t)ov->h * ov->w, na = va->c * hw, nb = vb->c * hw;
            for (int b = 0; b < k; b++) {
                const float *src = dy + (size_t)b * nel;
                if (dep(u, n->in0)) {
                    float *d = C(n->in0) + (size_t)b * na;
                    for (size_t e = 0; e < na; e++) d[e] += src[e];
                }
                if (dep(u, n->in1)) {
                    float *d = C(n->in1) + (size_t)b * nb;
                    for (size_t e = 0; e < nb; e++) d[e] += src[na + e];
                }
            }
            break;
        }
        case NODE_UPSAMPLE: upsample2x_vjp(k, ov->c, u->values[n->in0].h, u->values[n->in0].w, dy, C(n->in0)); break;
        case NODE_ATTN: {
            attn_params ap = unet_attn_params(u, i);
            attn_saved sv = unet_attn_saved(u, i, (float *)save);
            attention_vjp(&ap, ov->c, ov->h * ov->w, R(n->in0), &sv, k, dy, C(n->in0), L->scratch);
            break;
        }
        case NODE_SCALE_SHIFT: {
            float *dx = C(n->in0);
            for (size_t e = 0; e < nel * (size_t)k; e++) dx[e] += dy[e] * n->scale;
            break;
        }
        case NODE_TEMB:
        case NODE_LINEAR:
        case NODE_KIND_COUNT: break;
        }
    }
#undef C
#undef R
}

loco_status loco_lin_vjp(loco_lin *L, loco_output of, const uint8_t *mask, int k, const float *U, float *UJ) {
    loco_status s = check_args(L, of, k, U, UJ);
    if (s || (s = reserve(L, k))) return s;
    if (L->mo) return molrg_vjp(L, of, mask, k, U, UJ);
    const unet *u = &L->m->net;
    threads_for_work(u->flops);
    const size_t nin = L->n_in, nout = L->n_out;
    const size_t l = mask ? loco_lin_mask_count(L, mask) : nout;
    for (size_t i = 0; i < l * (size_t)k; i++)
        if (!isfinite(U[i])) return loco_fail(LOCO_E_NUMERIC, "U^T J: cotangent element %zu is not finite", i);
    /* embed U into the full output: buf [k, nout] */
    float *full = L->buf;
    for (int b = 0; b < k; b++) {
        const float *ub = U + (size_t)b * l;
        float *fb = full + (size_t)b * nout;
        size_t j = 0;
        for (size_t i = 0; i < nout; i++) fb[i] = (!mask || mask[i]) ? ub[j++] : 0.0f;
    }
    memcpy(L->work + L->vjp_off[u->t_out] * (size_t)k, full, sizeof(float) * nout * (size_t)k);
    vjp_pass(L, k);
    const float *g = L->work + L->vjp_off[u->x_in] * (size_t)k; /* U^T J_y, [k, nin] */
    const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    param_apply(L->m->sched.pred, of, sa, s1, nin * (size_t)k, full, g, UJ);
    return model_check_finite(UJ, nin * (size_t)k, "U^T J");
}
