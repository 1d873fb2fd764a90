/* lin.c - a graph's linearisation: one recorded forward pass, then batched
 * Jacobian products of the network output y.
 *
 * Record: the forward pass at (x, t) with batch 1, keeping only what the
 * derivative passes read (graph_node_ops: lin_reads, lin_save): the inputs of
 * the nonlinear nodes and their statistics. Linear nodes keep nothing, and
 * the time-embedding path is a constant of x.
 *
 * J V: the nodes in order on k tangents at once (batch k), each through its
 * jvp; a tangent is released after its last reader (forward liveness plan).
 * U^T J: the nodes in reverse on k cotangents; a value's cotangent is created
 * (zeroed) at its last reader and released after its producer has run;
 * every vjp accumulates. */
#include "graph/lin.h"

#include <stdlib.h>
#include <string.h>

struct graph_lin {
    const graph *g;         /* borrowed                                        */
    float t;
    size_t n_in, n_out;
    float *rec;             /* record arena                                    */
    size_t *rec_off;        /* [n_values]                                      */
    size_t rec_floats;
    float *save;            /* per-node saved statistics                       */
    size_t *save_off;       /* [n_nodes], SIZE_MAX when none                   */
    size_t save_floats;
    size_t *jvp_off;        /* [n_values] tangent plan (per vector)            */
    size_t jvp_peak;
    size_t *vjp_off;        /* [n_values] cotangent plan (per vector)          */
    size_t vjp_peak;
    unsigned char *vjp_zero;/* [n_nodes] bits 0/1: zero in0/in1 cotangent here; bit 2: node active */
    float *work;            /* k * max(jvp_peak, vjp_peak)                     */
    size_t work_floats;
    float *scratch;         /* [g->scratch_floats]                             */
};

static int dep(const graph *g, int v) { return v >= 0 && g->values[v].depends_on_x; }

static loco_status make_plans(graph_lin *L) {
    const graph *g = L->g;
    const int nv = g->n_values, nn = g->n_nodes;
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
        const node *n = &g->nodes[i];
        const node_ops *op = &graph_node_ops[n->kind];
        L->save_off[i] = SIZE_MAX;
        if (!dep(g, n->out)) continue;
        if ((op->lin_reads & 1) && n->in0 >= 0) keep[n->in0] = 1;
        if ((op->lin_reads & 2) && n->in1 >= 0) keep[n->in1] = 1;
        size_t sf = op->lin_save ? op->lin_save(g, n) : 0;
        if (sf) {
            L->save_off[i] = L->save_floats;
            L->save_floats += (sf + 15) & ~(size_t)15;
        }
    }
    L->rec_floats = graph_plan_forward(g, keep, L->rec_off);

    /* J V: forward order over the x-dependent nodes */
    planner pl;
    planner_init(&pl);
    L->jvp_off[g->x_in] = planner_alloc(&pl, graph_value_size(g, g->x_in), g->x_in);
    for (int i = 0; i < nn; i++) {
        const node *n = &g->nodes[i];
        if (!dep(g, n->out)) continue;
        L->jvp_off[n->out] = planner_alloc(&pl, graph_value_size(g, n->out), n->out);
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (dep(g, in[j]) && g->values[in[j]].last_use == i && in[j] != g->t_out) planner_free(&pl, in[j]);
    }
    L->jvp_peak = pl.oom ? 0 : pl.peak;
    planner_release(&pl);

    /* U^T J: reverse order */
    planner_init(&pl);
    L->vjp_off[g->t_out] = planner_alloc(&pl, graph_value_size(g, g->t_out), g->t_out);
    have[g->t_out] = 1;
    for (int i = nn - 1; i >= 0; i--) {
        const node *n = &g->nodes[i];
        if (!dep(g, n->out) || !have[n->out]) continue;
        L->vjp_zero[i] |= 4; /* active: its output has a cotangent */
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (dep(g, in[j]) && !have[in[j]]) {
                L->vjp_off[in[j]] = planner_alloc(&pl, graph_value_size(g, in[j]), in[j]);
                have[in[j]] = 1;
                L->vjp_zero[i] |= (unsigned char)(1 << j);
            }
        planner_free(&pl, n->out);
    }
    L->vjp_peak = pl.oom ? 0 : pl.peak;
    planner_release(&pl);
    int ok = have[g->x_in];
    free(keep);
    free(have);
    if (!L->rec_floats || !L->jvp_peak || !L->vjp_peak) return loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
    if (!ok) return loco_fail(LOCO_E_UNSUPPORTED, "linearize: the output does not depend on the input");
    return LOCO_OK;
}

void graph_lin_free(graph_lin *L) {
    if (!L) return;
    free(L->rec);
    free(L->rec_off);
    free(L->save);
    free(L->save_off);
    free(L->jvp_off);
    free(L->vjp_off);
    free(L->vjp_zero);
    free(L->work);
    free(L->scratch);
    free(L);
}

loco_status graph_lin_new(const graph *g, const float *x, float t, const float *cond, graph_lin **out) {
    *out = NULL;
    graph_lin *L = calloc(1, sizeof *L);
    if (!L) return loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
    L->g = g;
    L->t = t;
    L->n_in = graph_value_size(g, g->x_in);
    L->n_out = graph_value_size(g, g->t_out);
    loco_status s = make_plans(L);
    if (s) {
        graph_lin_free(L);
        return s;
    }
    L->rec = loco_malloc(L->rec_floats * sizeof(float));
    L->save = loco_malloc((L->save_floats ? L->save_floats : 1) * sizeof(float));
    L->scratch = loco_malloc(g->scratch_floats * sizeof(float));
    if (!L->rec || !L->save || !L->scratch) {
        const size_t bytes = (L->rec_floats + L->save_floats) * sizeof(float);
        graph_lin_free(L);
        return loco_fail(LOCO_E_NOMEM, "linearize: cannot allocate the record (%zu bytes)", bytes);
    }
    memcpy(L->rec + L->rec_off[g->x_in], x, L->n_in * sizeof(float));
    if (g->cond_in >= 0) memcpy(L->rec + L->rec_off[g->cond_in], cond, graph_value_size(g, g->cond_in) * sizeof(float));
    for (int i = 0; i < g->n_nodes; i++) {
        const node *n = &g->nodes[i];
        node_io io = {.g = g, .i = i, .n = n, .B = 1, .t = &L->t, .scratch = L->scratch};
        io.a = n->in0 >= 0 ? L->rec + L->rec_off[n->in0] : NULL;
        io.c = n->in1 >= 0 ? L->rec + L->rec_off[n->in1] : NULL;
        io.y = L->rec + L->rec_off[n->out];
        io.save = L->save_off[i] == SIZE_MAX ? NULL : L->save + L->save_off[i];
        graph_node_ops[n->kind].fwd(&io);
    }
    *out = L;
    return LOCO_OK;
}

const float *graph_lin_output(const graph_lin *L) { return L->rec + L->rec_off[L->g->t_out]; }
size_t graph_lin_input_floats(const graph_lin *L) { return L->n_in; }
size_t graph_lin_output_floats(const graph_lin *L) { return L->n_out; }

size_t graph_lin_record_bytes(const graph_lin *L) {
    return (L->rec_floats + L->save_floats + L->g->scratch_floats) * sizeof(float);
}

/* The products take their k vectors in groups whose work space stays under
 * graph_lin_work_budget (at least one vector a group): each vector's
 * product is computed on its own either way (every op treats the vectors of
 * a batch independently; oneDNN convolutions run one image per call), so the
 * grouping changes the memory, not the result, and costs little time. For
 * celebahq-256 a vector's tangents take 289 MB: k = 5 at once was 1.44 GB of
 * the edit's peak, in groups of 2 it is 0.58 GB. */
size_t graph_lin_work_budget = (size_t)640 << 20;

static int group_size(const graph_lin *L, int k) {
    const size_t peak = (L->jvp_peak > L->vjp_peak ? L->jvp_peak : L->vjp_peak) * sizeof(float);
    const size_t g = peak ? graph_lin_work_budget / peak : (size_t)k;
    return g < 1 ? 1 : g > (size_t)k ? k : (int)g;
}

size_t graph_lin_work_bytes(const graph_lin *L, int k) {
    size_t peak = L->jvp_peak > L->vjp_peak ? L->jvp_peak : L->vjp_peak;
    return (size_t)(k > 0 ? group_size(L, k) : 0) * peak * sizeof(float);
}

static loco_status reserve(graph_lin *L, int k) {
    size_t peak = L->jvp_peak > L->vjp_peak ? L->jvp_peak : L->vjp_peak, need;
    if (!loco_mul_ok(peak, (size_t)k, &need)) return loco_fail(LOCO_E_NOMEM, "k = %d vectors: work space overflows", k);
    if (need > L->work_floats) {
        free(L->work);
        L->work_floats = 0;
        if (!(L->work = loco_malloc(need * sizeof(float))))
            return loco_fail(LOCO_E_NOMEM, "k = %d vectors: cannot allocate %zu bytes of work space", k,
                             need * sizeof(float));
        L->work_floats = need;
    }
    return LOCO_OK;
}

static loco_status jvp_group(graph_lin *L, int k, const float *V, float *JY) {
    loco_status s = reserve(L, k);
    if (s) return s;
    const graph *g = L->g;
    float *W = L->work;
#define T(id) (W + L->jvp_off[id] * (size_t)k)
#define R(id) (L->rec + L->rec_off[id])
    memcpy(T(g->x_in), V, sizeof(float) * L->n_in * (size_t)k);
    for (int i = 0; i < g->n_nodes; i++) {
        const node *n = &g->nodes[i];
        if (!dep(g, n->out)) continue;
        node_io io = {.g = g, .i = i, .n = n, .B = k, .scratch = L->scratch};
        io.a = n->in0 >= 0 ? R(n->in0) : NULL;
        io.c = n->in1 >= 0 ? R(n->in1) : NULL;
        io.da = dep(g, n->in0) ? T(n->in0) : NULL;
        io.dc = dep(g, n->in1) ? T(n->in1) : NULL;
        io.dy = T(n->out);
        io.save = L->save_off[i] == SIZE_MAX ? NULL : L->save + L->save_off[i];
        graph_node_ops[n->kind].jvp(&io);
    }
    memcpy(JY, T(g->t_out), sizeof(float) * L->n_out * (size_t)k);
#undef T
    return LOCO_OK;
}

static loco_status vjp_group(graph_lin *L, int k, const float *U, float *UJ) {
    loco_status s = reserve(L, k);
    if (s) return s;
    const graph *g = L->g;
    float *W = L->work;
#define C(id) (W + L->vjp_off[id] * (size_t)k)
    memcpy(C(g->t_out), U, sizeof(float) * L->n_out * (size_t)k);
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const node *n = &g->nodes[i];
        if (!(L->vjp_zero[i] & 4)) continue;
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (L->vjp_zero[i] & (1 << j)) memset(C(in[j]), 0, sizeof(float) * graph_value_size(g, in[j]) * (size_t)k);
        node_io io = {.g = g, .i = i, .n = n, .B = k, .scratch = L->scratch};
        io.a = n->in0 >= 0 ? R(n->in0) : NULL;
        io.c = n->in1 >= 0 ? R(n->in1) : NULL;
        io.gy = C(n->out);
        io.ga = dep(g, n->in0) ? C(n->in0) : NULL;
        io.gc = dep(g, n->in1) ? C(n->in1) : NULL;
        io.save = L->save_off[i] == SIZE_MAX ? NULL : L->save + L->save_off[i];
        graph_node_ops[n->kind].vjp(&io);
    }
    memcpy(UJ, C(g->x_in), sizeof(float) * L->n_in * (size_t)k);
#undef C
#undef R
    return LOCO_OK;
}

loco_status graph_lin_jvp(graph_lin *L, int k, const float *V, float *JY) {
    const int g = group_size(L, k);
    loco_status s = LOCO_OK;
    for (int b = 0; b < k && !s; b += g)
        s = jvp_group(L, k - b < g ? k - b : g, V + (size_t)b * L->n_in, JY + (size_t)b * L->n_out);
    return s;
}

loco_status graph_lin_vjp(graph_lin *L, int k, const float *U, float *UJ) {
    const int g = group_size(L, k);
    loco_status s = LOCO_OK;
    for (int b = 0; b < k && !s; b += g)
        s = vjp_group(L, k - b < g ? k - b : g, U + (size_t)b * L->n_out, UJ + (size_t)b * L->n_in);
    return s;
}
