/* build.c - the graph builder: parameters, values and nodes appended in
 * order, with shapes, FLOP counts and activation taps. Families compose these
 * helpers into their networks (families/unet2d.c, families/adm.c). */
#include "graph/graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 1;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np) return 0;
    *p = np;
    *cap = nc;
    return 1;
}

int gb_param(gbuilder *b, const char *name, const char *alt, int ndim, const int64_t *shape, float fan_in,
                     int is_gn_weight) {
    graph *g = b->g;
    if (b->err) return -1;
    if (!grow((void **)&g->params, &g->cap_params, g->n_params + 1, sizeof(param))) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return -1;
    }
    param *p = &g->params[g->n_params];
    memset(p, 0, sizeof *p);
    /* names come from the config's bounded indices (blocks < 16, layers <=
     * 64: at most ~50 characters); one that did not fit would be looked up
     * truncated, so it is refused */
    if ((size_t)snprintf(p->name, sizeof p->name, "%s", name) >= sizeof p->name ||
        (alt && (size_t)snprintf(p->alt, sizeof p->alt, "%s", alt) >= sizeof p->alt)) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "parameter name '%s' is longer than %zu characters", name,
                           sizeof p->name - 1);
        return -1;
    }
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->off = g->total_params;
    p->fan_in = fan_in;
    p->is_gn_weight = is_gn_weight;
    g->total_params += p->numel;
    return g->n_params++;
}

int gb_value(gbuilder *b, int c, int h, int w, int dep) {
    graph *g = b->g;
    if (b->err) return -1;
    if (!grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof(value))) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return -1;
    }
    value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->c = c;
    v->h = h;
    v->w = w;
    v->depends_on_x = dep;
    v->last_use = -1;
    return g->n_values++;
}

node *gb_node(gbuilder *b, node_kind k, int in0, int in1, int out) {
    graph *g = b->g;
    if (b->err) return NULL;
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(node))) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return NULL;
    }
    node *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->kind = k;
    n->in0 = in0;
    n->in1 = in1;
    n->out = out;
    n->pw = n->pb = -1;
    return n;
}

static const value *V(gbuilder *b, int id) { return &b->g->values[id]; }

/* weight/bias of a conv or linear; returns weight id, bias id in *pb */
static int wb(gbuilder *b, const char *prefix, int ndim, const int64_t *wshape, float fan_in, int *pb) {
    char n1[160], n2[160]; /* a longer name is refused by gb_param (n1 > param.name) */
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    int w = gb_param(b, n1, NULL, ndim, wshape, fan_in, 0);
    *pb = gb_param(b, n2, NULL, 1, wshape, fan_in, 0);
    return w;
}

static int conv_nd(gbuilder *b, const char *prefix, int in, int cout, int k, int stride, int pad_t, int pad_l,
                   int bias2, int wdims) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: gb_value may realloc */
    int cin = x->c;
    int64_t ws[4] = {cout, cin, k, k};
    int pb;
    int pw = wb(b, prefix, wdims, ws, (float)(cin * k * k), &pb);
    /* output size: padding after is pad_l for pad>0 convs, 1 for diffusers'
     * asymmetric (0,1,0,1) downsample padding; both give the same size */
    int pad_sum_h = k == 1 ? 0 : (stride == 1 ? 2 * pad_t : (pad_t ? 2 * pad_t : 1));
    int pad_sum_w = k == 1 ? 0 : (stride == 1 ? 2 * pad_l : (pad_l ? 2 * pad_l : 1));
    int ho = (x->h + pad_sum_h - k) / stride + 1, wo = (x->w + pad_sum_w - k) / stride + 1;
    int out = gb_value(b, cout, ho, wo, x->depends_on_x);
    node *n = gb_node(b, NODE_CONV, in, bias2, out);
    if (!n) return -1;
    n->pw = pw;
    n->pb = pb;
    n->g = (conv_geom){cin, cout, x->h, x->w, k, stride, pad_t, pad_l, ho, wo, 0, 1};
    n->g.wino = conv2d_wino_ok(&n->g);
    b->g->flops += 2.0 * cout * cin * k * k * (double)ho * wo;
    return out;
}

int gb_conv(gbuilder *b, const char *prefix, int in, int cout, int k, int stride, int pad_t, int pad_l, int bias2) {
    return conv_nd(b, prefix, in, cout, k, stride, pad_t, pad_l, bias2, 4);
}

int gb_conv1d(gbuilder *b, const char *prefix, int in, int cout) { return conv_nd(b, prefix, in, cout, 1, 1, 0, 0, -1, 3); }

int gb_group_norm(gbuilder *b, const char *prefix, int in, int groups, float eps, int silu) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: gb_value may realloc */
    char n1[160], n2[160]; /* a longer name is refused by gb_param (n1 > param.name) */
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    int64_t s[1] = {x->c};
    int pw = gb_param(b, n1, NULL, 1, s, 0, 1);
    int pb = gb_param(b, n2, NULL, 1, s, 0, 0);
    int out = gb_value(b, x->c, x->h, x->w, x->depends_on_x);
    node *n = gb_node(b, NODE_GN, in, -1, out);
    if (!n) return -1;
    n->pw = pw;
    n->pb = pb;
    n->groups = groups;
    n->eps = eps;
    n->silu = silu;
    return out;
}

int gb_linear(gbuilder *b, const char *prefix, int in, int out_f) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: gb_value may realloc */
    int64_t ws[2] = {out_f, x->c};
    int pb;
    int pw = wb(b, prefix, 2, ws, (float)x->c, &pb);
    int out = gb_value(b, out_f, 1, 1, x->depends_on_x);
    node *n = gb_node(b, NODE_LINEAR, in, -1, out);
    if (!n) return -1;
    n->pw = pw;
    n->pb = pb;
    b->g->flops += 2.0 * out_f * x->c;
    return out;
}

int gb_silu(gbuilder *b, int in) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: gb_value may realloc */
    int out = gb_value(b, x->c, x->h, x->w, x->depends_on_x);
    gb_node(b, NODE_SILU, in, -1, out);
    return out;
}

int gb_add(gbuilder *b, int a, int c, float scale) {
    if (b->err) return -1;
    const value xv = *V(b, a), *x = &xv;
    int dep = x->depends_on_x || V(b, c)->depends_on_x;
    int out = gb_value(b, x->c, x->h, x->w, dep);
    node *n = gb_node(b, NODE_ADD, a, c, out);
    if (n) n->scale = scale;
    return out;
}

int gb_concat(gbuilder *b, int a, int c) {
    if (b->err) return -1;
    const value xv = *V(b, a), yv = *V(b, c), *x = &xv, *y = &yv;
    int out = gb_value(b, x->c + y->c, x->h, x->w, x->depends_on_x || y->depends_on_x);
    gb_node(b, NODE_CONCAT, a, c, out);
    return out;
}

int gb_upsample(gbuilder *b, int in) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: gb_value may realloc */
    int out = gb_value(b, x->c, 2 * x->h, 2 * x->w, x->depends_on_x);
    gb_node(b, NODE_UPSAMPLE, in, -1, out);
    return out;
}

int gb_attention(gbuilder *b, const char *prefix, int in, int head_dim, int groups, float eps, float rescale) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: gb_value may realloc */
    const int C = x->c, hw = x->h * x->w;
    static const char *const cur[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    static const char *const old[4] = {"query", "key", "value", "proj_attn"};
    int ids[10];
    char n1[160], n2[160]; /* a longer name is refused by gb_param (n1 > param.name) */
    int64_t s1[1] = {C}, s2[2] = {C, C};
    snprintf(n1, sizeof n1, "%s.group_norm.weight", prefix);
    ids[0] = gb_param(b, n1, NULL, 1, s1, 0, 1);
    snprintf(n1, sizeof n1, "%s.group_norm.bias", prefix);
    ids[1] = gb_param(b, n1, NULL, 1, s1, 0, 0);
    for (int i = 0; i < 4; i++) {
        snprintf(n1, sizeof n1, "%s.%s.weight", prefix, cur[i]);
        snprintf(n2, sizeof n2, "%s.%s.weight", prefix, old[i]);
        ids[2 + 2 * i] = gb_param(b, n1, n2, 2, s2, (float)C, 0);
        snprintf(n1, sizeof n1, "%s.%s.bias", prefix, cur[i]);
        snprintf(n2, sizeof n2, "%s.%s.bias", prefix, old[i]);
        ids[3 + 2 * i] = gb_param(b, n1, n2, 1, s1, (float)C, 0);
    }
    int out = gb_value(b, C, x->h, x->w, x->depends_on_x);
    node *n = gb_node(b, NODE_ATTN, in, -1, out);
    if (!n) return -1;
    memcpy(n->pattn, ids, sizeof ids);
    n->groups = groups;
    n->eps = eps;
    n->heads = C / head_dim;
    n->scale = rescale;
    b->g->flops += 4 * 2.0 * C * C * hw + 2 * 2.0 * (double)hw * hw * C;
    return out;
}


int gb_temb(gbuilder *b, int dim, int flip_sin_to_cos, float freq_shift) {
    int te = gb_value(b, dim, 1, 1, 0);
    node *n = gb_node(b, NODE_TEMB, -1, -1, te);
    if (!n) return -1;
    n->flip_sin_to_cos = flip_sin_to_cos;
    n->freq_shift = freq_shift;
    return te;
}

int gb_avgpool(gbuilder *b, int in) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    if ((x->h | x->w) & 1) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "2x2 average pooling of an odd %dx%d map", x->h, x->w);
        return -1;
    }
    int out = gb_value(b, x->c, x->h / 2, x->w / 2, x->depends_on_x);
    gb_node(b, NODE_AVGPOOL, in, -1, out);
    return out;
}

int gb_slice(gbuilder *b, int in, int c) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    if (c < 1 || c > x->c) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "slice of %d channels from %d", c, x->c);
        return -1;
    }
    int out = gb_value(b, c, x->h, x->w, x->depends_on_x);
    gb_node(b, NODE_SLICE, in, -1, out);
    return out;
}

int gb_scale_shift(gbuilder *b, int in, float scale, float shift) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    int out = gb_value(b, x->c, x->h, x->w, x->depends_on_x);
    node *n = gb_node(b, NODE_SCALE_SHIFT, in, -1, out);
    if (!n) return -1;
    n->scale = scale;
    n->shift = shift;
    return out;
}

int gb_film(gbuilder *b, int in, int ss, int silu) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    if (V(b, ss)->c != 2 * x->c || V(b, ss)->depends_on_x) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "scale-shift of %d channels needs a [%d] time vector", x->c, 2 * x->c);
        return -1;
    }
    int out = gb_value(b, x->c, x->h, x->w, x->depends_on_x);
    node *n = gb_node(b, NODE_FILM, in, ss, out);
    if (!n) return -1;
    n->silu = silu;
    return out;
}

int gb_attention_qkv(gbuilder *b, const char *prefix, int in, int heads, int groups, float eps) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    const int C = x->c, hw = x->h * x->w;
    if (heads < 1 || C % heads) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "%s: %d heads do not divide %d channels", prefix, heads, C);
        return -1;
    }
    int ids[10];
    char n1[160]; /* a longer name is refused by gb_param (n1 > param.name) */
    int64_t s1[1] = {C}, s3[1] = {3 * C}, w3[3] = {3 * C, C, 1}, w1[3] = {C, C, 1};
    snprintf(n1, sizeof n1, "%s.norm.weight", prefix);
    ids[0] = gb_param(b, n1, NULL, 1, s1, 0, 1);
    snprintf(n1, sizeof n1, "%s.norm.bias", prefix);
    ids[1] = gb_param(b, n1, NULL, 1, s1, 0, 0);
    snprintf(n1, sizeof n1, "%s.qkv.weight", prefix);
    ids[2] = gb_param(b, n1, NULL, 3, w3, (float)C, 0);
    snprintf(n1, sizeof n1, "%s.qkv.bias", prefix);
    ids[3] = gb_param(b, n1, NULL, 1, s3, (float)C, 0);
    ids[4] = ids[5] = ids[6] = ids[7] = -1;
    snprintf(n1, sizeof n1, "%s.proj_out.weight", prefix);
    ids[8] = gb_param(b, n1, NULL, 3, w1, (float)C, 0);
    snprintf(n1, sizeof n1, "%s.proj_out.bias", prefix);
    ids[9] = gb_param(b, n1, NULL, 1, s1, (float)C, 0);
    if (b->err) return -1;
    for (int j = 2; j <= 3; j++) {
        b->g->params[ids[j]].layout = PARAM_QKV_LEGACY;
        b->g->params[ids[j]].layout_heads = heads;
    }
    int out = gb_value(b, C, x->h, x->w, x->depends_on_x);
    node *n = gb_node(b, NODE_ATTN, in, -1, out);
    if (!n) return -1;
    memcpy(n->pattn, ids, sizeof ids);
    n->qkv_fused = 1;
    n->groups = groups;
    n->eps = eps;
    n->heads = heads;
    n->scale = 1.0f;
    b->g->flops += 4 * 2.0 * C * C * hw + 2 * 2.0 * (double)hw * hw * C;
    return out;
}

void gb_tap(gbuilder *b, int v, const char *name) {
    if (b->err || v < 0) return;
    char *s = strdup(name);
    if (!s) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return;
    }
    free((char *)b->g->values[v].tap);
    b->g->values[v].tap = s;
}

loco_status gb_finish(gbuilder *b, int x_in, int out) {
    loco_status s = b->err;
    if (!s && (x_in < 0 || out < 0)) s = loco_fail(LOCO_E_INVALID_ARGUMENT, "graph without input or output");
    if (!s) {
        b->g->x_in = x_in;
        b->g->t_out = out;
        if (!b->g->has_cond) b->g->cond_in = -1;
        s = graph_plan(b->g);
    }
    if (s) graph_free(b->g);
    return s;
}

void graph_free(graph *g) {
    for (int i = 0; i < g->n_values; i++) free((char *)g->values[i].tap);
    free(g->values);
    free(g->nodes);
    free(g->params);
    free(g->pdata);
    free(g->fwd_off);
    memset(g, 0, sizeof *g);
}

int gb_cond_input(gbuilder *b, int c, int h, int w) {
    if (b->err) return -1;
    if (b->g->has_cond) {
        b->err = loco_fail(LOCO_E_INVALID_ARGUMENT, "a graph has one conditioning input");
        return -1;
    }
    int v = gb_value(b, c, h, w, 0);
    if (v < 0) return -1;
    b->g->cond_in = v;
    b->g->has_cond = 1;
    return v;
}

int gb_linear_tok(gbuilder *b, const char *prefix, int in, int cout, int bias) {
    if (b->err) return -1;
    int out = conv_nd(b, prefix, in, cout, 1, 1, 0, 0, -1, 2);
    if (out >= 0 && !bias) {
        /* drop the bias parameter conv_nd made (the last one added) */
        node *n = &b->g->nodes[b->g->n_nodes - 1];
        param *pb = &b->g->params[n->pb];
        b->g->total_params -= pb->numel;
        b->g->n_params--;
        n->pb = -1;
    }
    return out;
}

int gb_layer_norm(gbuilder *b, const char *prefix, int in, float eps) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    char n1[160], n2[160]; /* a longer name is refused by gb_param (n1 > param.name) */
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    int64_t s1[1] = {x->c};
    int pw = gb_param(b, n1, NULL, 1, s1, 0, 1);
    int pb = gb_param(b, n2, NULL, 1, s1, 0, 0);
    int out = gb_value(b, x->c, x->h, x->w, x->depends_on_x);
    node *n = gb_node(b, NODE_LN, in, -1, out);
    if (!n) return -1;
    n->pw = pw;
    n->pb = pb;
    n->eps = eps;
    return out;
}

int gb_geglu(gbuilder *b, int in) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    if (x->c % 2) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "GEGLU of an odd number of channels (%d)", x->c);
        return -1;
    }
    int out = gb_value(b, x->c / 2, x->h, x->w, x->depends_on_x);
    gb_node(b, NODE_GEGLU, in, -1, out);
    return out;
}

int gb_mha(gbuilder *b, const char *prefix, int in, int ctx, int heads, int qkv_bias) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv;
    const int C = x->c, Tq = x->h * x->w;
    const int Dc = ctx >= 0 ? V(b, ctx)->c : C, Tk = ctx >= 0 ? V(b, ctx)->h * V(b, ctx)->w : Tq;
    if (heads < 1 || C % heads) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "%s: %d heads do not divide %d channels", prefix, heads, C);
        return -1;
    }
    static const char *const names[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    int ids[10] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    char n1[160]; /* a longer name is refused by gb_param (n1 > param.name) */
    for (int i = 0; i < 4; i++) {
        const int cin = (i == 1 || i == 2) ? Dc : C;
        int64_t ws[2] = {C, cin}, bs[1] = {C};
        snprintf(n1, sizeof n1, "%s.%s.weight", prefix, names[i]);
        ids[2 + 2 * i] = gb_param(b, n1, NULL, 2, ws, (float)cin, 0);
        if (i == 3 || qkv_bias) {
            snprintf(n1, sizeof n1, "%s.%s.bias", prefix, names[i]);
            ids[3 + 2 * i] = gb_param(b, n1, NULL, 1, bs, (float)cin, 0);
        }
    }
    int out = gb_value(b, C, x->h, x->w, x->depends_on_x);
    node *n = gb_node(b, NODE_MHA, in, ctx, out);
    if (!n) return -1;
    memcpy(n->pattn, ids, sizeof ids);
    n->heads = heads;
    b->g->flops += 2.0 * 2.0 * C * C * Tq + 2.0 * 2.0 * C * (double)Dc * Tk + 2 * 2.0 * (double)Tq * Tk * C;
    return out;
}

int gb_resnet(gbuilder *b, const char *prefix, int in, int cout, int temb_act, int groups, float eps, float out_scale) {
    if (b->err) return -1;
    char p[192]; /* a longer name is refused by gb_param */
    snprintf(p, sizeof p, "%s.norm1", prefix);
    int h = gb_group_norm(b, p, in, groups, eps, 1);
    int tp = -1;
    if (temb_act >= 0) {
        snprintf(p, sizeof p, "%s.time_emb_proj", prefix);
        tp = gb_linear(b, p, temb_act, cout);
    }
    snprintf(p, sizeof p, "%s.conv1", prefix);
    h = gb_conv(b, p, h, cout, 3, 1, 1, 1, tp);
    snprintf(p, sizeof p, "%s.norm2", prefix);
    h = gb_group_norm(b, p, h, groups, eps, 1);
    snprintf(p, sizeof p, "%s.conv2", prefix);
    h = gb_conv(b, p, h, cout, 3, 1, 1, 1, -1);
    int sc = in;
    if (!b->err && b->g->values[in].c != cout) {
        snprintf(p, sizeof p, "%s.conv_shortcut", prefix);
        sc = gb_conv(b, p, in, cout, 1, 1, 0, 0, -1);
    }
    return gb_add(b, sc, h, out_scale);
}
