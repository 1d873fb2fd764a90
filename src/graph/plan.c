/* plan.c - memory planning of a graph: first-fit offsets over value
 * lifetimes (the forward plan here; lin.c and train.c plan their passes with
 * the same planner), scratch sizes, and FLOP counts. */
#include "graph/graph.h"

#include <stdlib.h>
#include <string.h>

void planner_init(planner *p) { memset(p, 0, sizeof *p); }

void planner_release(planner *p) {
    free(p->live);
    memset(p, 0, sizeof *p);
}

size_t planner_alloc(planner *p, size_t len, int id) {
    len = (len + 15) & ~(size_t)15; /* keep every block 64-byte aligned */
    if (p->n + 1 > p->cap) {
        int nc = p->cap ? 2 * p->cap : 64;
        plan_span *nl = realloc(p->live, sizeof(plan_span) * (size_t)nc);
        if (!nl) {
            p->oom = 1;
            return 0;
        }
        p->live = nl;
        p->cap = nc;
    }
    size_t off = 0;
    int pos = 0;
    for (; pos < p->n; pos++) {
        if (p->live[pos].off >= off + len) break;
        size_t e = p->live[pos].off + p->live[pos].len;
        if (e > off) off = e;
    }
    memmove(&p->live[pos + 1], &p->live[pos], sizeof(plan_span) * (size_t)(p->n - pos));
    p->live[pos] = (plan_span){off, len, id};
    p->n++;
    if (off + len > p->peak) p->peak = off + len;
    return off;
}

void planner_free(planner *p, int id) {
    for (int j = 0; j < p->n; j++)
        if (p->live[j].id == id) {
            memmove(&p->live[j], &p->live[j + 1], sizeof(plan_span) * (size_t)(p->n - j - 1));
            p->n--;
            return;
        }
}

size_t graph_plan_forward(const graph *u, const char *keep, size_t *off) {
    planner pl;
    planner_init(&pl);
    off[u->x_in] = planner_alloc(&pl, graph_value_size(u, u->x_in), u->x_in);
    if (u->cond_in >= 0) off[u->cond_in] = planner_alloc(&pl, graph_value_size(u, u->cond_in), u->cond_in);
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        off[n->out] = planner_alloc(&pl, graph_value_size(u, n->out), n->out);
        /* a node's inputs stay live while it runs: release them after */
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (in[j] >= 0 && u->values[in[j]].last_use == i && in[j] != u->t_out && !(keep && keep[in[j]]))
                planner_free(&pl, in[j]);
    }
    size_t peak = pl.oom ? 0 : pl.peak;
    planner_release(&pl);
    return peak;
}

void graph_set_winograd(graph *u, int on) {
    for (int i = 0; i < u->n_nodes; i++)
        if (u->nodes[i].kind == NODE_CONV) {
            u->nodes[i].g.wino = on && conv2d_wino_ok(&u->nodes[i].g);
            u->nodes[i].g.fast = on;
        }
}

/* The multiplies the convolutions execute: oneDNN's Winograd F(4x4,3x3)
 * does 36 per 16 outputs and input-output channel pair where direct does
 * 144 (1/4), our own F(2x2,3x3) on the BLAS path 16 per 4 (4/9); the
 * transforms' additions are not counted. */
double graph_flops_executed(const graph *u) {
    double f = u->flops;
    for (int i = 0; i < u->n_nodes; i++) {
        const conv_geom *g = &u->nodes[i].g;
        if (u->nodes[i].kind != NODE_CONV) continue;
        const double direct = 2.0 * g->cout * g->cin * 9.0 * (double)g->ho * g->wo;
        if (conv2d_dnnl_handles(g)) {
            if (conv2d_dnnl_uses_winograd(g)) f -= 3.0 / 4.0 * direct;
        } else if (conv2d_wino_use(g)) {
            f -= 5.0 / 9.0 * direct;
        }
    }
    return f;
}

loco_status graph_plan(graph *u) {
    for (int i = 0; i < u->n_values; i++) u->values[i].last_use = -1;
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        if (n->in0 >= 0) u->values[n->in0].last_use = i;
        if (n->in1 >= 0) u->values[n->in1].last_use = i;
    }
    u->fwd_off = malloc(sizeof(size_t) * (size_t)u->n_values);
    if (!u->fwd_off) return loco_fail(LOCO_E_NOMEM, "out of memory planning the model");
    u->arena_per_image = graph_plan_forward(u, NULL, u->fwd_off);
    if (!u->arena_per_image) return loco_fail(LOCO_E_NOMEM, "out of memory planning the model");
    size_t sc = 0;
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        size_t need = 0;
        if (n->kind == NODE_CONV) need = conv2d_scratch(&n->g);
        if (n->kind == NODE_ATTN) {
            const value *x = &u->values[n->in0];
            need = attention_scratch(x->c, x->h * x->w);
        }
        if (n->kind == NODE_MHA) need = graph_mha_scratch(u, n);
        if (need > sc) sc = need;
    }
    u->scratch_floats = sc ? sc : 1;
    return LOCO_OK;
}

