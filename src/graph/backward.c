/* backward.c - training backpropagation through a graph: a
 * recorded forward pass at batch B, then one reverse pass that accumulates
 * the gradient of every parameter and the cotangent of x (see backward.h).
 *
 * Per node, with dy the cotangent of the node's output (all [B, ...]):
 *   LINEAR  dW += dy^T x, db += sum_b dy, dx += dy W
 *   SILU    dx += silu'(x) dy
 *   CONV    dW += dy (x) x (im2col), db += sums of dy, d(bias2)[b] += pixel
 *           sums of dy[b] (the time_emb_proj output), dx += conv^T dy
 *   GN      dgamma += sum e x_hat, dbeta += sum e (e = silu'(y) dy), dx
 *   ATTN    to_out, to_q/k/v and group norm gradients, dx
 *   FILM    dx, d(scale, shift) per image (the time path's cotangent)
 *   ADD, CONCAT, UPSAMPLE, AVGPOOL, SLICE, SCALE_SHIFT: as their linear maps
 * (each kind's bwd in the dispatch table, exec.c)
 *   TEMB    nothing (no parameters, t is not differentiated)
 *
 * The arena holds three kinds of blocks, planned on one timeline: records
 * (value v: id v), cotangents (id nv + v) and per-node saves (GN statistics,
 * attention records: id 2nv + i), plus a transient block per node for
 * recomputing a group norm's output (id 2nv + nn + i). Block id lives at
 * arena + off[id] * B (per-image offsets scaled by the batch, as in graph.c). */
#include "graph/backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ID_REC(v) (v)
#define ID_COT(v) (nv + (v))
#define ID_SAVE(i) (2 * nv + (i))
#define ID_TMP(i) (2 * nv + nn + (i))

enum { ZERO_IN0 = 1, ZERO_IN1 = 2, ACTIVE = 4, RECOMPUTE = 8 };

struct graph_train {
    const graph *u;      /* borrowed                                          */
    int B;
    size_t *off;         /* [2 nv + 2 nn] per-image offsets (floats)         */
    int *producer;       /* [nv] node writing value v; -1 for x             */
    unsigned char *flags;/* [nn] ZERO_IN0/1, ACTIVE, RECOMPUTE               */
    size_t peak;         /* floats per image, whole timeline                  */
    size_t fwd_peak;     /* floats per image, during the forward pass        */
    size_t record;       /* floats per image live after the forward          */
    size_t attention;    /* of which attention records                        */
    size_t unshared;     /* floats per image: forward peak + cotangent peak  */
    float *arena;        /* [B * peak]                                        */
    float *scratch;
    size_t scratch_floats;
    size_t n_in, n_out;  /* per image                                         */
    int recorded;        /* a forward pass is waiting for its backward        */
};

/* floats per image a node saves besides values (GN stats, attention record) */
static size_t save_floats(const graph *u, int i) {
    const node_ops *op = &graph_node_ops[u->nodes[i].kind];
    return op->train_save ? op->train_save(u, &u->nodes[i]) : 0;
}

/* Values with a cotangent: x and every output except the sinusoidal
 * embedding of t (which has neither parameters nor a differentiated input). */
static int has_cot(const graph *u, const int *producer, int v) {
    return v >= 0 && (producer[v] < 0 || u->nodes[producer[v]].kind != NODE_TEMB);
}

static loco_status make_plan(graph_train *tr) {
    const graph *u = tr->u;
    const int nv = u->n_values, nn = u->n_nodes;
    loco_status s = LOCO_OK;
    int *bwd_last = malloc(sizeof(int) * (size_t)nv);
    char *keep = calloc((size_t)nv, 1), *have = calloc((size_t)nv, 1);
    tr->off = calloc((size_t)(2 * nv + 2 * nn), sizeof(size_t));
    tr->producer = malloc(sizeof(int) * (size_t)nv);
    tr->flags = calloc((size_t)nn, 1);
    planner pl, pc;
    planner_init(&pl);
    planner_init(&pc);
    if (!bwd_last || !keep || !have || !tr->off || !tr->producer || !tr->flags) goto oom;
    for (int v = 0; v < nv; v++) tr->producer[v] = -1, bwd_last[v] = -1;
    for (int i = 0; i < nn; i++) tr->producer[u->nodes[i].out] = i;
    /* what the reverse pass reads, and the last (lowest) node that reads it */
    for (int i = 0; i < nn; i++) {
        const node *n = &u->nodes[i];
        const unsigned reads = graph_node_ops[n->kind].train_reads;
        if ((reads & 2) && n->in1 >= 0) {
            keep[n->in1] = 1;
            if (bwd_last[n->in1] < 0) bwd_last[n->in1] = i;
        }
        if (!(reads & 1) || n->in0 < 0) continue;
        int p = tr->producer[n->in0];
        if ((n->kind == NODE_CONV || n->kind == NODE_SILU) && p >= 0 && u->nodes[p].kind == NODE_GN) {
            tr->flags[i] |= RECOMPUTE; /* from the group norm's input, which lives longer */
            continue;
        }
        keep[n->in0] = 1;
        if (bwd_last[n->in0] < 0) bwd_last[n->in0] = i;
    }

    /* forward: as graph_plan_forward, keeping the records */
    tr->off[ID_REC(u->x_in)] = planner_alloc(&pl, graph_value_size(u, u->x_in), ID_REC(u->x_in));
    for (int i = 0; i < nn; i++) {
        const node *n = &u->nodes[i];
        tr->off[ID_REC(n->out)] = planner_alloc(&pl, graph_value_size(u, n->out), ID_REC(n->out));
        size_t sf = save_floats(u, i);
        if (sf) tr->off[ID_SAVE(i)] = planner_alloc(&pl, sf, ID_SAVE(i));
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (in[j] >= 0 && u->values[in[j]].last_use == i && !keep[in[j]]) planner_free(&pl, ID_REC(in[j]));
    }
    planner_free(&pl, ID_REC(u->t_out)); /* copied out before the reverse pass */
    tr->fwd_peak = pl.peak;
    tr->record = tr->attention = 0;
    for (int j = 0; j < pl.n; j++) {
        tr->record += pl.live[j].len;
        int id = pl.live[j].id;
        if (id >= 2 * nv && id < 2 * nv + nn && u->nodes[id - 2 * nv].kind == NODE_ATTN) tr->attention += pl.live[j].len;
    }

    /* reverse: cotangents created at their first use (their last reader),
     * released after their producer; records released after their last
     * reader; pc plans the cotangents alone, for comparison */
    tr->off[ID_COT(u->t_out)] = planner_alloc(&pl, graph_value_size(u, u->t_out), ID_COT(u->t_out));
    planner_alloc(&pc, graph_value_size(u, u->t_out), ID_COT(u->t_out));
    have[u->t_out] = 1;
    for (int i = nn - 1; i >= 0; i--) {
        const node *n = &u->nodes[i];
        if (!has_cot(u, tr->producer, n->out) || !have[n->out]) continue;
        tr->flags[i] |= ACTIVE;
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (has_cot(u, tr->producer, in[j]) && !have[in[j]]) {
                tr->off[ID_COT(in[j])] = planner_alloc(&pl, graph_value_size(u, in[j]), ID_COT(in[j]));
                planner_alloc(&pc, graph_value_size(u, in[j]), ID_COT(in[j]));
                have[in[j]] = 1;
                tr->flags[i] |= (unsigned char)(j ? ZERO_IN1 : ZERO_IN0);
            }
        if (tr->flags[i] & RECOMPUTE) {
            tr->off[ID_TMP(i)] = planner_alloc(&pl, graph_value_size(u, n->in0), ID_TMP(i));
            planner_alloc(&pc, graph_value_size(u, n->in0), ID_TMP(i));
            planner_free(&pl, ID_TMP(i));
            planner_free(&pc, ID_TMP(i));
        }
        planner_free(&pl, ID_COT(n->out));
        planner_free(&pc, ID_COT(n->out));
        if (save_floats(u, i)) planner_free(&pl, ID_SAVE(i));
        for (int j = 0; j < 2; j++)
            if (in[j] >= 0 && keep[in[j]] && bwd_last[in[j]] == i) planner_free(&pl, ID_REC(in[j]));
    }
    if (pl.oom || pc.oom) goto oom;
    if (!have[u->x_in]) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "training: the output does not depend on the input");
        goto done;
    }
    tr->peak = pl.peak;
    tr->unshared = tr->fwd_peak + pc.peak;
    goto done;
oom:
    s = loco_fail(LOCO_E_NOMEM, "training: out of memory planning the passes");
done:
    planner_release(&pl);
    planner_release(&pc);
    free(bwd_last);
    free(keep);
    free(have);
    return s;
}

void graph_train_free(graph_train *tr) {
    if (!tr) return;
    free(tr->off);
    free(tr->producer);
    free(tr->flags);
    free(tr->arena);
    free(tr->scratch);
    free(tr);
}

/* the plan and the scratch size; allocates nothing else */
static loco_status train_plan(const graph *u, int B, graph_train **out) {
    *out = NULL;
    if (!u || !u->nodes) return loco_fail(LOCO_E_INVALID_ARGUMENT, "training: no model");
    if (B < 1 || B > 4096) return loco_fail(LOCO_E_INVALID_ARGUMENT, "training: batch %d out of range [1, 4096]", B);
    graph_train *tr = calloc(1, sizeof *tr);
    if (!tr) return loco_fail(LOCO_E_NOMEM, "training: out of memory");
    for (int i = 0; i < u->n_nodes; i++)
        if (!graph_node_ops[u->nodes[i].kind].bwd && u->nodes[i].kind != NODE_TEMB) { /* TEMB: t is not differentiated */
            free(tr);
            return loco_fail(LOCO_E_UNSUPPORTED, "training: no backward pass for %s nodes yet",
                             graph_node_ops[u->nodes[i].kind].name);
        }
    tr->u = u;
    tr->B = B;
    tr->n_in = graph_value_size(u, u->x_in);
    tr->n_out = graph_value_size(u, u->t_out);
    loco_status s = make_plan(tr);
    if (s) {
        graph_train_free(tr);
        return s;
    }
    size_t sc = u->scratch_floats;
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        size_t need = 0;
        if (n->kind == NODE_CONV) {
            need = conv2d_wgrad_scratch(&n->g, B);
            if (conv2d_scratch(&n->g) > need) need = conv2d_scratch(&n->g);
        }
        if (n->kind == NODE_ATTN) {
            const value *x = &u->values[n->in0];
            need = attention_bwd_scratch(x->c, x->h * x->w);
        }
        if (need > sc) sc = need;
    }
    tr->scratch_floats = sc ? sc : 1;
    size_t bytes;
    if (!loco_mul_ok(tr->peak, (size_t)B, &bytes) || !loco_mul_ok(bytes, sizeof(float), &bytes)) {
        graph_train_free(tr);
        return loco_fail(LOCO_E_NOMEM, "training: batch %d: the arena size overflows", B);
    }
    *out = tr;
    return LOCO_OK;
}

loco_status graph_train_new(const graph *u, int B, graph_train **out) {
    if (!out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "graph_train_new: NULL argument");
    *out = NULL;
    if (!u || !u->pdata) return loco_fail(LOCO_E_INVALID_ARGUMENT, "graph_train_new: no model (or no weights)");
    graph_train *tr;
    loco_status s = train_plan(u, B, &tr);
    if (s) return s;
    const size_t bytes = tr->peak * (size_t)B * sizeof(float);
    tr->arena = loco_malloc(bytes);
    tr->scratch = loco_malloc(tr->scratch_floats * sizeof(float));
    if (!tr->arena || !tr->scratch) {
        graph_train_free(tr);
        return loco_fail(LOCO_E_NOMEM, "training: batch %d: cannot allocate %zu bytes of activations and records", B,
                         bytes);
    }
    *out = tr;
    return LOCO_OK;
}

loco_status graph_train_plan(const graph *u, int B, graph_train_mem *mem) {
    if (!mem) return loco_fail(LOCO_E_INVALID_ARGUMENT, "graph_train_plan: NULL argument");
    graph_train *tr;
    loco_status s = train_plan(u, B, &tr);
    if (s) return s;
    graph_train_memory(tr, mem);
    graph_train_free(tr);
    return LOCO_OK;
}

void graph_train_memory(const graph_train *tr, graph_train_mem *m) {
    memset(m, 0, sizeof *m);
    if (!tr) return;
    const size_t f = sizeof(float) * (size_t)tr->B;
    m->record = tr->record * f;
    m->attention = tr->attention * f;
    m->forward_peak = tr->fwd_peak * f;
    m->arena = tr->peak * f;
    m->scratch = tr->scratch_floats * sizeof(float);
    m->unshared = tr->unshared * f;
}

/* ======================================================================== */
/* Forward                                                                  */
/* ======================================================================== */

#define BLK(id) (tr->arena + tr->off[id] * (size_t)B)

loco_status graph_train_forward(graph_train *tr, const float *x, const float *t, float *eps) {
    if (!tr || !x || !t) return loco_fail(LOCO_E_INVALID_ARGUMENT, "graph_train_forward: NULL argument");
    const graph *u = tr->u;
    const int B = tr->B, nv = u->n_values;
    tr->recorded = 0; /* a failed forward leaves no record either */
    for (size_t i = 0; i < tr->n_in * (size_t)B; i++)
        if (!isfinite(x[i])) return loco_fail(LOCO_E_NUMERIC, "training: x element %zu is not finite", i);
    for (int b = 0; b < B; b++)
        if (!isfinite(t[b])) return loco_fail(LOCO_E_NUMERIC, "training: t[%d] is not finite", b);
    memcpy(BLK(ID_REC(u->x_in)), x, sizeof(float) * tr->n_in * (size_t)B);
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        const node_ops *op = &graph_node_ops[n->kind];
        node_io io = {.g = u, .i = i, .n = n, .B = B, .t = t, .scratch = tr->scratch};
        io.a = n->in0 >= 0 ? BLK(ID_REC(n->in0)) : NULL;
        io.c = n->in1 >= 0 ? BLK(ID_REC(n->in1)) : NULL;
        io.y = BLK(ID_REC(n->out));
        io.save = save_floats(u, i) ? BLK(ID_SAVE(i)) : NULL;
        (op->tfwd ? op->tfwd : op->fwd)(&io);
    }
    if (eps) memcpy(eps, BLK(ID_REC(u->t_out)), sizeof(float) * tr->n_out * (size_t)B);
    tr->recorded = 1;
    return LOCO_OK;
}

/* ======================================================================== */
/* Reverse pass                                                             */
/* ======================================================================== */

/* node i's input in0 as the forward pass saw it: the record, or a group
 * norm's output recomputed from that norm's recorded input */
static const float *input0(graph_train *tr, int i) {
    const graph *u = tr->u;
    const int B = tr->B, nv = u->n_values, nn = u->n_nodes;
    const node *n = &u->nodes[i];
    if (!(tr->flags[i] & RECOMPUTE)) return BLK(ID_REC(n->in0));
    const node *gn = &u->nodes[tr->producer[n->in0]];
    const value *v = &u->values[n->in0];
    float *y = BLK(ID_TMP(i));
    group_norm_fwd(B, v->c, v->h * v->w, gn->groups, gn->eps, graph_param(u, gn->pw), graph_param(u, gn->pb), gn->silu,
                   BLK(ID_REC(gn->in0)), y, NULL, NULL);
    return y;
}

loco_status graph_train_backward(graph_train *tr, const float *deps, float *grad, float *dx) {
    if (!tr || !deps) return loco_fail(LOCO_E_INVALID_ARGUMENT, "graph_train_backward: NULL argument");
    if (!tr->recorded)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "graph_train_backward: no recorded forward pass (each backward consumes the record of one "
                         "graph_train_forward)");
    const graph *u = tr->u;
    const int B = tr->B, nv = u->n_values, nn = u->n_nodes;
    for (size_t i = 0; i < tr->n_out * (size_t)B; i++)
        if (!isfinite(deps[i])) return loco_fail(LOCO_E_NUMERIC, "training: deps element %zu is not finite", i);
    tr->recorded = 0;
#define COT(v) BLK(ID_COT(v))
#define REC(v) BLK(ID_REC(v))
    memcpy(COT(u->t_out), deps, sizeof(float) * tr->n_out * (size_t)B);
    for (int i = nn - 1; i >= 0; i--) {
        const node *n = &u->nodes[i];
        if (!(tr->flags[i] & ACTIVE)) continue;
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (tr->flags[i] & (j ? ZERO_IN1 : ZERO_IN0))
                memset(COT(in[j]), 0, sizeof(float) * graph_value_size(u, in[j]) * (size_t)B);
        node_io io = {.g = u, .i = i, .n = n, .B = B, .scratch = tr->scratch, .grad = grad};
        const unsigned reads = graph_node_ops[n->kind].train_reads;
        io.a = (reads & 1) && n->in0 >= 0 ? input0(tr, i) : NULL;
        io.c = (reads & 2) && n->in1 >= 0 ? REC(n->in1) : NULL;
        io.gy = COT(n->out);
        io.ga = has_cot(u, tr->producer, n->in0) ? COT(n->in0) : NULL;
        io.gc = has_cot(u, tr->producer, n->in1) ? COT(n->in1) : NULL;
        io.save = save_floats(u, i) ? BLK(ID_SAVE(i)) : NULL;
        graph_node_ops[n->kind].bwd(&io);
    }
    if (dx) memcpy(dx, COT(u->x_in), sizeof(float) * tr->n_in * (size_t)B);
#undef COT
#undef REC
    return LOCO_OK;
}
