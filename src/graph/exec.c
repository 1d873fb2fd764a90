/* exec.c - what each node kind does in every pass, in one dispatch table
 * (graph_node_ops) that the forward pass, the linearisation's J V and U^T J
 * (lin.c) and the trainer's backward (train.c) all use; and the forward pass.
 * Each kind's functions sit together: forward, J V (batched tangents against
 * a batch-1 record), V J P (batched cotangents, accumulating), training
 * forward/backward (per-image records, parameter gradients). */
#include "graph/graph.h"

#include <assert.h>
#include <string.h>

#define P(id) graph_param(io->g, id)
#define GRAD(id) (io->grad && (id) >= 0 ? io->grad + io->g->params[id].off : NULL)

static const value *OUT(const node_io *io) { return &io->g->values[io->n->out]; }
static const value *IN0(const node_io *io) { return &io->g->values[io->n->in0]; }
static const value *IN1(const node_io *io) { return &io->g->values[io->n->in1]; }
static size_t HW(const value *v) { return (size_t)v->h * v->w; }
static size_t NEL(const value *v) { return (size_t)v->c * v->h * v->w; }

/* ---- time embedding --------------------------------------------------------- */
static void temb_fwd(const node_io *io) {
    timestep_embedding_fwd(io->B, OUT(io)->c, io->n->flip_sin_to_cos, io->n->freq_shift, io->t, io->y);
}

/* ---- linear (time path only: never depends on x) ------------------------------- */
static void linear_fwd_n(const node_io *io) {
    linear_fwd(io->B, IN0(io)->c, OUT(io)->c, io->a, P(io->n->pw), P(io->n->pb), io->y);
}
static void linear_bwd_n(const node_io *io) {
    linear_bwd(io->B, IN0(io)->c, OUT(io)->c, io->a, P(io->n->pw), io->gy, io->ga, GRAD(io->n->pw), GRAD(io->n->pb));
}

/* ---- SiLU ------------------------------------------------------------------------ */
static void silu_fwd_n(const node_io *io) { silu_fwd(NEL(OUT(io)) * (size_t)io->B, io->a, io->y); }
static void silu_jvp_n(const node_io *io) { silu_jvp(io->B, NEL(OUT(io)), io->a, io->da, io->dy); }
static void silu_vjp_n(const node_io *io) { silu_vjp(io->B, NEL(OUT(io)), io->a, io->gy, io->ga); }
/* per-image records: one "vector" of all B images */
static void silu_bwd_n(const node_io *io) { silu_vjp(1, NEL(OUT(io)) * (size_t)io->B, io->a, io->gy, io->ga); }

/* ---- convolution ------------------------------------------------------------------ */
static void conv_fwd_n(const node_io *io) {
    conv2d_fwd(&io->n->g, io->B, io->a, P(io->n->pw), P(io->n->pb), io->c, io->y, io->scratch);
}
static void conv_jvp_n(const node_io *io) {
    conv2d_fwd(&io->n->g, io->B, io->da, P(io->n->pw), NULL, NULL, io->dy, io->scratch);
}
static void conv_vjp_n(const node_io *io) { conv2d_vjp(&io->n->g, io->B, io->gy, P(io->n->pw), io->ga, io->scratch); }
static void conv_bwd_n(const node_io *io) {
    conv2d_wgrad(&io->n->g, io->B, io->a, io->gy, GRAD(io->n->pw), GRAD(io->n->pb), io->gc, io->scratch);
    if (io->ga) conv2d_vjp(&io->n->g, io->B, io->gy, P(io->n->pw), io->ga, io->scratch);
}

/* ---- group norm (+ SiLU) ----------------------------------------------------------- */
static size_t gn_lin_save(const graph *g, const node *n) { return 2 * (size_t)n->groups; }
static void gn_fwd_n(const node_io *io) {
    const node *n = io->n;
    group_norm_fwd(io->B, OUT(io)->c, (int)HW(OUT(io)), n->groups, n->eps, P(n->pw), P(n->pb), n->silu, io->a, io->y,
                   io->save, io->save ? io->save + (size_t)io->B * n->groups : NULL);
}
static void gn_jvp_n(const node_io *io) {
    const node *n = io->n;
    group_norm_jvp(io->B, OUT(io)->c, (int)HW(OUT(io)), n->groups, P(n->pw), P(n->pb), n->silu, io->a, io->save,
                   io->save + n->groups, io->da, io->dy);
}
static void gn_vjp_n(const node_io *io) {
    const node *n = io->n;
    group_norm_vjp(io->B, OUT(io)->c, (int)HW(OUT(io)), n->groups, P(n->pw), P(n->pb), n->silu, io->a, io->save,
                   io->save + n->groups, io->gy, io->ga);
}
static void gn_bwd_n(const node_io *io) {
    const node *n = io->n;
    group_norm_bwd(io->B, OUT(io)->c, (int)HW(OUT(io)), n->groups, P(n->pw), P(n->pb), n->silu, io->a, io->save,
                   io->save + (size_t)io->B * n->groups, io->gy, io->ga, GRAD(n->pw), GRAD(n->pb));
}

/* ---- (a + b) / scale ----------------------------------------------------------------- */
static void add_fwd_n(const node_io *io) {
    add_scale_fwd(NEL(OUT(io)) * (size_t)io->B, io->a, io->c, io->n->scale, io->y);
}
static void add_jvp_n(const node_io *io) {
    const size_t tot = NEL(OUT(io)) * (size_t)io->B;
    if (io->da && io->dc) add_scale_fwd(tot, io->da, io->dc, io->n->scale, io->dy);
    else {
        const float *src = io->da ? io->da : io->dc;
        for (size_t j = 0; j < tot; j++) io->dy[j] = src[j] / io->n->scale;
    }
}
static void add_vjp_n(const node_io *io) {
    const size_t tot = NEL(OUT(io)) * (size_t)io->B;
    const float inv = 1.0f / io->n->scale;
    float *d[2] = {io->ga, io->gc};
    for (int j = 0; j < 2; j++) {
        if (!d[j]) continue;
        float *dx = d[j];
#pragma omp parallel for schedule(static)
        for (size_t e = 0; e < tot; e++) dx[e] += io->gy[e] * inv;
    }
}

/* ---- concatenation along channels ------------------------------------------------------ */
static void concat_fwd_n(const node_io *io) {
    concat_fwd(io->B, IN0(io)->c, IN1(io)->c, (int)HW(OUT(io)), io->a, io->c, io->y);
}
static void concat_jvp_n(const node_io *io) {
    const size_t hw = HW(OUT(io)), na = IN0(io)->c * hw, nb = IN1(io)->c * hw, nel = na + nb;
    for (int b = 0; b < io->B; b++) {
        float *yb = io->dy + (size_t)b * nel;
        if (io->da) memcpy(yb, io->da + (size_t)b * na, sizeof(float) * na);
        else memset(yb, 0, sizeof(float) * na);
        if (io->dc) memcpy(yb + na, io->dc + (size_t)b * nb, sizeof(float) * nb);
        else memset(yb + na, 0, sizeof(float) * nb);
    }
}
static void concat_vjp_n(const node_io *io) {
    const size_t hw = HW(OUT(io)), na = IN0(io)->c * hw, nb = IN1(io)->c * hw, nel = na + nb;
    for (int b = 0; b < io->B; b++) {
        const float *src = io->gy + (size_t)b * nel;
        if (io->ga) {
            float *d = io->ga + (size_t)b * na;
            for (size_t e = 0; e < na; e++) d[e] += src[e];
        }
        if (io->gc) {
            float *d = io->gc + (size_t)b * nb;
            for (size_t e = 0; e < nb; e++) d[e] += src[na + e];
        }
    }
}

/* ---- nearest 2x upsampling ----------------------------------------------------------------- */
static void up_fwd_n(const node_io *io) { upsample2x_fwd(io->B, OUT(io)->c, IN0(io)->h, IN0(io)->w, io->a, io->y); }
static void up_jvp_n(const node_io *io) { upsample2x_fwd(io->B, OUT(io)->c, IN0(io)->h, IN0(io)->w, io->da, io->dy); }
static void up_vjp_n(const node_io *io) { upsample2x_vjp(io->B, OUT(io)->c, IN0(io)->h, IN0(io)->w, io->gy, io->ga); }

/* ---- 2x2 average pooling ---------------------------------------------------------------------- */
static void pool_fwd_n(const node_io *io) { avgpool2x2_fwd(io->B, OUT(io)->c, IN0(io)->h, IN0(io)->w, io->a, io->y); }
static void pool_jvp_n(const node_io *io) { avgpool2x2_fwd(io->B, OUT(io)->c, IN0(io)->h, IN0(io)->w, io->da, io->dy); }
static void pool_vjp_n(const node_io *io) { avgpool2x2_vjp(io->B, OUT(io)->c, IN0(io)->h, IN0(io)->w, io->gy, io->ga); }

/* ---- the first c channels ------------------------------------------------------------------------ */
static void slice_copy(int B, size_t nin, size_t nout, const float *x, float *y) {
    for (int b = 0; b < B; b++) memcpy(y + (size_t)b * nout, x + (size_t)b * nin, sizeof(float) * nout);
}
static void slice_fwd_n(const node_io *io) { slice_copy(io->B, NEL(IN0(io)), NEL(OUT(io)), io->a, io->y); }
static void slice_jvp_n(const node_io *io) { slice_copy(io->B, NEL(IN0(io)), NEL(OUT(io)), io->da, io->dy); }
static void slice_vjp_n(const node_io *io) {
    const size_t nin = NEL(IN0(io)), nout = NEL(OUT(io));
    for (int b = 0; b < io->B; b++) {
        float *d = io->ga + (size_t)b * nin;
        const float *s = io->gy + (size_t)b * nout;
        for (size_t e = 0; e < nout; e++) d[e] += s[e];
    }
}

/* ---- y = scale x + shift ---------------------------------------------------------------------------- */
static void ss_fwd_n(const node_io *io) {
    const size_t tot = NEL(OUT(io)) * (size_t)io->B;
    for (size_t k = 0; k < tot; k++) io->y[k] = io->a[k] * io->n->scale + io->n->shift;
}
static void ss_jvp_n(const node_io *io) {
    const size_t tot = NEL(OUT(io)) * (size_t)io->B;
    for (size_t k = 0; k < tot; k++) io->dy[k] = io->da[k] * io->n->scale;
}
static void ss_vjp_n(const node_io *io) {
    const size_t tot = NEL(OUT(io)) * (size_t)io->B;
    for (size_t k = 0; k < tot; k++) io->ga[k] += io->gy[k] * io->n->scale;
}

/* ---- FiLM: silu?(x (1 + scale) + shift), (scale, shift) from the time path ---------------------------- */
static void film_fwd_n(const node_io *io) {
    film_fwd(io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->c, io->n->silu, io->y);
}
static void film_jvp_n(const node_io *io) {
    film_jvp(io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->c, io->n->silu, io->da, io->dy);
}
static void film_vjp_n(const node_io *io) {
    film_vjp(io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->c, io->n->silu, io->gy, io->ga);
}
static void film_bwd_n(const node_io *io) {
    film_bwd(io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->c, io->n->silu, io->gy, io->ga, io->gc);
}

/* ---- attention block ------------------------------------------------------------------------------------ */
static attn_params attn_of(const graph *g, const node *n) {
    const int C = g->values[n->out].c;
    const float *wq = graph_param(g, n->pattn[2]), *bq = graph_param(g, n->pattn[3]);
    attn_params ap = {graph_param(g, n->pattn[0]), graph_param(g, n->pattn[1]), wq, bq,
                      graph_param(g, n->pattn[4]), graph_param(g, n->pattn[5]), graph_param(g, n->pattn[6]),
                      graph_param(g, n->pattn[7]), graph_param(g, n->pattn[8]), graph_param(g, n->pattn[9]),
                      n->groups, n->eps, n->heads, n->scale};
    if (n->qkv_fused) { /* one [3C, C] weight, q k v rows in turn (params.c) */
        ap.wk = wq + (size_t)C * C;
        ap.wv = wq + 2 * (size_t)C * C;
        ap.bk = bq + C;
        ap.bv = bq + 2 * C;
    }
    return ap;
}
static size_t attn_lin_save(const graph *g, const node *n) {
    const value *x = &g->values[n->in0];
    const size_t hw = HW(x);
    return 2 * (size_t)n->groups + 3 * (size_t)x->c * hw + (size_t)n->heads * hw * hw;
}
static size_t attn_train_save(const graph *g, const node *n) {
    const value *x = &g->values[n->in0];
    return attn_record_floats(x->c, (int)HW(x), n->heads, n->groups);
}
static attn_saved attn_saved_at(const graph *g, const node *n, float *save) {
    const size_t cn = NEL(&g->values[n->in0]);
    attn_saved s;
    s.mean = save;
    s.rstd = save + n->groups;
    s.q = s.rstd + n->groups;
    s.k = s.q + cn;
    s.v = s.k + cn;
    s.P = s.v + cn;
    return s;
}
static void attn_fwd_n(const node_io *io) {
    attn_params ap = attn_of(io->g, io->n);
    attn_saved sv;
    if (io->save) sv = attn_saved_at(io->g, io->n, io->save);
    attention_fwd(&ap, io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->y, io->scratch, io->save ? &sv : NULL);
}
static void attn_jvp_n(const node_io *io) {
    attn_params ap = attn_of(io->g, io->n);
    attn_saved sv = attn_saved_at(io->g, io->n, io->save);
    attention_jvp(&ap, OUT(io)->c, (int)HW(OUT(io)), io->a, &sv, io->B, io->da, io->dy, io->scratch);
}
static void attn_vjp_n(const node_io *io) {
    attn_params ap = attn_of(io->g, io->n);
    attn_saved sv = attn_saved_at(io->g, io->n, io->save);
    attention_vjp(&ap, OUT(io)->c, (int)HW(OUT(io)), io->a, &sv, io->B, io->gy, io->ga, io->scratch);
}
static void attn_tfwd_n(const node_io *io) {
    attn_params ap = attn_of(io->g, io->n);
    const int C = OUT(io)->c, hw = (int)HW(OUT(io));
    const size_t nel = NEL(OUT(io)), rf = attn_train_save(io->g, io->n);
    for (int b = 0; b < io->B; b++) {
        attn_record r = attn_record_at(io->save + (size_t)b * rf, C, hw, io->n->heads, io->n->groups);
        attention_fwd_record(&ap, C, hw, io->a + b * nel, io->y + b * nel, &r);
    }
}
static void attn_bwd_n(const node_io *io) {
    const node *n = io->n;
    attn_params ap = attn_of(io->g, n);
    const int C = OUT(io)->c, hw = (int)HW(OUT(io));
    attn_grads ag = {GRAD(n->pattn[0]), GRAD(n->pattn[1]), GRAD(n->pattn[2]), GRAD(n->pattn[3]), GRAD(n->pattn[4]),
                     GRAD(n->pattn[5]), GRAD(n->pattn[6]), GRAD(n->pattn[7]), GRAD(n->pattn[8]), GRAD(n->pattn[9])};
    if (n->qkv_fused && ag.wq) {
        ag.wk = ag.wq + (size_t)C * C;
        ag.wv = ag.wq + 2 * (size_t)C * C;
        ag.bk = ag.bq + C;
        ag.bv = ag.bq + 2 * C;
    }
    const size_t nel = NEL(OUT(io)), rf = attn_train_save(io->g, n);
    for (int b = 0; b < io->B; b++) {
        attn_record r = attn_record_at(io->save + (size_t)b * rf, C, hw, n->heads, n->groups);
        attention_bwd(&ap, C, hw, io->a + b * nel, &r, io->gy + b * nel, io->ga ? io->ga + b * nel : NULL,
                      io->grad ? &ag : NULL, io->scratch);
    }
}

/* ---- LayerNorm over channels ----------------------------------------------------------------------------- */
static size_t ln_lin_save(const graph *g, const node *n) { return 2 * graph_value_size(g, n->out) / (size_t)g->values[n->out].c; }
static void ln_fwd_n(const node_io *io) {
    const node *n = io->n;
    const int T = (int)HW(OUT(io));
    layer_norm_fwd(io->B, OUT(io)->c, T, n->eps, P(n->pw), P(n->pb), io->a, io->y, io->save,
                   io->save ? io->save + (size_t)io->B * T : NULL);
}
static void ln_jvp_n(const node_io *io) {
    const int T = (int)HW(OUT(io));
    layer_norm_jvp(io->B, OUT(io)->c, T, P(io->n->pw), io->a, io->save, io->save + T, io->da, io->dy);
}
static void ln_vjp_n(const node_io *io) {
    const int T = (int)HW(OUT(io));
    layer_norm_vjp(io->B, OUT(io)->c, T, P(io->n->pw), io->a, io->save, io->save + T, io->gy, io->ga);
}

/* ---- GEGLU ------------------------------------------------------------------------------------------------- */
static void geglu_fwd_n(const node_io *io) { geglu_fwd(io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->y); }
static void geglu_jvp_n(const node_io *io) { geglu_jvp(io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->da, io->dy); }
static void geglu_vjp_n(const node_io *io) { geglu_vjp(io->B, OUT(io)->c, (int)HW(OUT(io)), io->a, io->gy, io->ga); }

/* ---- attention with projections (self or cross) -------------------------------------------------------------- */
/* images or vectors per mha call: its scratch grows with the batch */
#define MHA_CHUNK 4
static mha_params mha_of(const graph *g, const node *n) {
    mha_params p = {graph_param(g, n->pattn[2]), graph_param(g, n->pattn[3]), graph_param(g, n->pattn[4]),
                    graph_param(g, n->pattn[5]), graph_param(g, n->pattn[6]), graph_param(g, n->pattn[7]),
                    graph_param(g, n->pattn[8]), graph_param(g, n->pattn[9]), n->heads, 0};
    return p;
}
typedef struct mha_dims { int C, Tq, Dc, Tk; } mha_dims;
static mha_dims mha_dims_of(const graph *g, const node *n) {
    const value *x = &g->values[n->in0], *c = n->in1 >= 0 ? &g->values[n->in1] : x;
    mha_dims d = {x->c, x->h * x->w, c->c, c->h * c->w};
    return d;
}
static size_t mha_lin_save(const graph *g, const node *n) {
    mha_dims d = mha_dims_of(g, n);
    return mha_saved_floats(d.C, d.Tq, d.Tk, n->heads);
}
size_t graph_mha_scratch(const graph *g, const node *n) {
    mha_dims d = mha_dims_of(g, n);
    return mha_scratch(d.C, d.Dc, d.Tq, d.Tk, n->heads, MHA_CHUNK);
}
static void mha_fwd_n(const node_io *io) {
    mha_params p = mha_of(io->g, io->n);
    mha_dims d = mha_dims_of(io->g, io->n);
    const float *c = io->c ? io->c : io->a;
    if (io->save) { /* recording: batch 1 */
        mha_saved sv = mha_saved_at(io->save, d.C, d.Tq, d.Tk, io->n->heads);
        mha_fwd(&p, 1, d.C, d.Tq, d.Dc, d.Tk, io->a, c, io->y, io->scratch, &sv);
        return;
    }
    for (int b = 0; b < io->B; b += MHA_CHUNK) {
        const int nb = io->B - b < MHA_CHUNK ? io->B - b : MHA_CHUNK;
        mha_fwd(&p, nb, d.C, d.Tq, d.Dc, d.Tk, io->a + (size_t)b * d.C * d.Tq, c + (size_t)b * d.Dc * d.Tk,
                io->y + (size_t)b * d.C * d.Tq, io->scratch, NULL);
    }
}
static void mha_jvp_n(const node_io *io) {
    mha_params p = mha_of(io->g, io->n);
    mha_dims d = mha_dims_of(io->g, io->n);
    mha_saved sv = mha_saved_at(io->save, d.C, d.Tq, d.Tk, io->n->heads);
    const int self = io->n->in1 < 0;
    for (int b = 0; b < io->B; b += MHA_CHUNK) {
        const int nb = io->B - b < MHA_CHUNK ? io->B - b : MHA_CHUNK;
        const size_t o = (size_t)b * d.C * d.Tq;
        mha_jvp(&p, self, d.C, d.Tq, d.Dc, d.Tk, &sv, nb, io->da + o, io->dy + o, io->scratch);
    }
}
static void mha_vjp_n(const node_io *io) {
    mha_params p = mha_of(io->g, io->n);
    mha_dims d = mha_dims_of(io->g, io->n);
    mha_saved sv = mha_saved_at(io->save, d.C, d.Tq, d.Tk, io->n->heads);
    const int self = io->n->in1 < 0;
    for (int b = 0; b < io->B; b += MHA_CHUNK) {
        const int nb = io->B - b < MHA_CHUNK ? io->B - b : MHA_CHUNK;
        const size_t o = (size_t)b * d.C * d.Tq;
        mha_vjp(&p, self, d.C, d.Tq, d.Dc, d.Tk, &sv, nb, io->gy + o, io->ga + o, io->scratch);
    }
}

/* ---- the table ------------------------------------------------------------------------------------------ */
const node_ops graph_node_ops[NODE_KIND_COUNT] = {
    [NODE_TEMB] = {"temb", temb_fwd, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0},
    [NODE_LINEAR] = {"linear", linear_fwd_n, NULL, NULL, linear_bwd_n, NULL, NULL, NULL, 1, 1},
    [NODE_SILU] = {"silu", silu_fwd_n, silu_jvp_n, silu_vjp_n, silu_bwd_n, NULL, NULL, NULL, 1, 1},
    [NODE_CONV] = {"conv", conv_fwd_n, conv_jvp_n, conv_vjp_n, conv_bwd_n, NULL, NULL, NULL, 0, 1},
    [NODE_GN] = {"group_norm", gn_fwd_n, gn_jvp_n, gn_vjp_n, gn_bwd_n, gn_lin_save, gn_lin_save, NULL, 1, 1},
    [NODE_ADD] = {"add", add_fwd_n, add_jvp_n, add_vjp_n, add_vjp_n, NULL, NULL, NULL, 0, 0},
    [NODE_CONCAT] = {"concat", concat_fwd_n, concat_jvp_n, concat_vjp_n, concat_vjp_n, NULL, NULL, NULL, 0, 0},
    [NODE_UPSAMPLE] = {"upsample", up_fwd_n, up_jvp_n, up_vjp_n, up_vjp_n, NULL, NULL, NULL, 0, 0},
    [NODE_ATTN] = {"attention", attn_fwd_n, attn_jvp_n, attn_vjp_n, attn_bwd_n, attn_lin_save, attn_train_save,
                   attn_tfwd_n, 1, 1},
    [NODE_SCALE_SHIFT] = {"scale_shift", ss_fwd_n, ss_jvp_n, ss_vjp_n, ss_vjp_n, NULL, NULL, NULL, 0, 0},
    [NODE_FILM] = {"film", film_fwd_n, film_jvp_n, film_vjp_n, film_bwd_n, NULL, NULL, NULL, 3, 3},
    [NODE_AVGPOOL] = {"avgpool", pool_fwd_n, pool_jvp_n, pool_vjp_n, pool_vjp_n, NULL, NULL, NULL, 0, 0},
    [NODE_SLICE] = {"slice", slice_fwd_n, slice_jvp_n, slice_vjp_n, slice_vjp_n, NULL, NULL, NULL, 0, 0},
    /* no training backward yet for the text-to-image ops (the trainer
       builds UNet2DModels) */
    [NODE_LN] = {"layer_norm", ln_fwd_n, ln_jvp_n, ln_vjp_n, NULL, ln_lin_save, NULL, NULL, 1, 0},
    [NODE_GEGLU] = {"geglu", geglu_fwd_n, geglu_jvp_n, geglu_vjp_n, NULL, NULL, NULL, NULL, 1, 0},
    [NODE_MHA] = {"attention_proj", mha_fwd_n, mha_jvp_n, mha_vjp_n, NULL, mha_lin_save, NULL, NULL, 0, 0},
};
static_assert(NODE_KIND_COUNT == 16, "graph_node_ops needs an entry for every node kind");

/* ---- the forward pass ------------------------------------------------------------------------------------ */
void graph_forward(const graph *g, int B, const float *x, const float *t, const float *cond, float *y, float *arena,
                   float *scratch, act_tap_fn tapfn, void *tap_user) {
    const size_t *off = g->fwd_off;
#define PTR(id) (arena + off[id] * (size_t)B)
    memcpy(PTR(g->x_in), x, sizeof(float) * graph_value_size(g, g->x_in) * (size_t)B);
    if (g->cond_in >= 0) memcpy(PTR(g->cond_in), cond, sizeof(float) * graph_value_size(g, g->cond_in) * (size_t)B);
    for (int i = 0; i < g->n_nodes; i++) {
        const node *n = &g->nodes[i];
        node_io io = {.g = g, .i = i, .n = n, .B = B, .t = t, .scratch = scratch};
        io.a = n->in0 >= 0 ? PTR(n->in0) : NULL;
        io.c = n->in1 >= 0 ? PTR(n->in1) : NULL;
        io.y = PTR(n->out);
        graph_node_ops[n->kind].fwd(&io);
        const value *ov = &g->values[n->out];
        if (tapfn && ov->tap) tapfn(tap_user, ov->tap, io.y, B, ov->c, ov->h, ov->w);
    }
    memcpy(y, PTR(g->t_out), sizeof(float) * graph_value_size(g, g->t_out) * (size_t)B);
#undef PTR
}
