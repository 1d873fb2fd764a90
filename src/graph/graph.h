/* graph.h - a network as a flat recorded graph: parameters (named as in the
 * checkpoint), values (per-image tensors) and nodes (ops over values) in
 * topological order. Model families build graphs with the gb_* helpers
 * (build.c); the forward pass, the linearisation (J V and U^T J, lin.c) and
 * the trainer's backward (train.c) all run the nodes through one dispatch
 * table of per-kind functions (exec.c). A graph knows no family: everything a
 * node needs is in the node. */
#ifndef LOCO_GRAPH_H
#define LOCO_GRAPH_H

#include "internal.h"
#include "ops.h"

typedef enum node_kind {
    NODE_TEMB,        /* sinusoidal embedding of t -> [B, dim]                    */
    NODE_LINEAR,      /* [B, in] -> [B, out]                                      */
    NODE_SILU,        /* elementwise                                              */
    NODE_CONV,        /* conv2d (+ per-image channel bias from value in1)         */
    NODE_GN,          /* group norm (+ SiLU)                                      */
    NODE_ADD,         /* (in0 + in1) / scale                                      */
    NODE_CONCAT,      /* channels of in0 then in1                                 */
    NODE_UPSAMPLE,    /* nearest 2x                                               */
    NODE_ATTN,        /* whole attention block with residual                      */
    NODE_SCALE_SHIFT, /* y = scale * x + shift (center_input_sample: 2x - 1)      */
    NODE_FILM,        /* y = silu?(in0 * (1 + scale) + shift), in1 = [2C] (scale, shift) */
    NODE_AVGPOOL,     /* 2x2 average pooling, stride 2                            */
    NODE_SLICE,       /* the first c channels of in0                              */
    NODE_LN,          /* LayerNorm over the channels of each position             */
    NODE_GEGLU,       /* [2F, T] -> [F, T]: hidden * gelu(gate)                   */
    NODE_MHA,         /* attention with projections: queries from in0, keys and
                         values from in1 (the conditioning) or in0 (in1 = -1)     */
    NODE_KIND_COUNT
} node_kind;

typedef struct value {
    int c, h, w;          /* per-image shape; vectors are [c, 1, 1]          */
    int depends_on_x;     /* 0 for the time-embedding path                   */
    const char *tap;      /* block name for activation taps (owned), or NULL */
    int last_use;         /* index of the last node reading it               */
} value;

typedef struct node {
    node_kind kind;
    int in0, in1, out;    /* value ids; in1 = -1 when unused                 */
    int pw, pb;           /* parameter ids (weight, bias) or -1              */
    conv_geom g;          /* NODE_CONV                                       */
    int groups, silu;     /* NODE_GN, NODE_FILM (silu)                       */
    float eps, scale, shift;
    int heads;            /* NODE_ATTN                                       */
    int pattn[10];        /* NODE_ATTN: gn w,b, q w,b, k w,b, v w,b, o w,b;
                             with qkv_fused, q w,b are one [3C, C] / [3C]
                             parameter and k, v ids are -1                 */
    int qkv_fused;        /* NODE_ATTN                                       */
    int flip_sin_to_cos;  /* NODE_TEMB                                       */
    float freq_shift;     /* NODE_TEMB                                       */
} node;

/* How a checkpoint tensor is laid out in the parameter arena. */
typedef enum param_layout {
    PARAM_PLAIN = 0,
    /* guided-diffusion's legacy QKVAttention: the [3C, C(, 1)] qkv weight (or
     * [3C] bias) holds per head h rows q_h, k_h, v_h of C/heads each; the
     * arena holds all q rows, then all k, then all v (head-major) */
    PARAM_QKV_LEGACY = 1,
} param_layout;

typedef struct param {
    char name[128];       /* checkpoint key (bounded: build.c, gb_param)     */
    char alt[128];        /* older key naming (attention), or ""             */
    int ndim;
    int64_t shape[4];
    size_t off, numel;    /* offset in the parameter arena (floats)          */
    float fan_in;         /* for random initialisation; 0 = norm parameter   */
    int is_gn_weight;
    param_layout layout;
    int layout_heads;     /* PARAM_QKV_LEGACY                                */
} param;

typedef struct graph {
    param *params;
    int n_params, cap_params;
    size_t total_params;  /* floats                                          */
    float *pdata;         /* [total_params], owned                           */
    value *values;
    int n_values, cap_values;
    node *nodes;
    int n_nodes, cap_nodes;
    int x_in, t_out;      /* input value, output (prediction) value          */
    int cond_in;          /* conditioning input value (constant in x), or -1 */
    int has_cond;         /* building: gb_cond_input was called              */
    size_t *fwd_off;      /* [n_values] per-image offsets of the forward plan */
    size_t arena_per_image; /* floats, from the plan                         */
    size_t scratch_floats;
    double flops;         /* per image                                       */
} graph;

static inline const float *graph_param(const graph *g, int id) { return id < 0 ? NULL : g->pdata + g->params[id].off; }
static inline size_t graph_value_size(const graph *g, int id) {
    const value *v = &g->values[id];
    return (size_t)v->c * v->h * v->w;
}
void graph_free(graph *g);

/* ---- building (build.c) --------------------------------------------------
 * A builder appends to a zeroed graph; every helper returns the new value id
 * (or parameter id), -1 once an error is recorded in b->err (later calls do
 * nothing). Names longer than param.name are refused. */
typedef struct gbuilder {
    graph *g;
    loco_status err;
} gbuilder;
int gb_param(gbuilder *b, const char *name, const char *alt, int ndim, const int64_t *shape, float fan_in,
             int is_gn_weight);
int gb_value(gbuilder *b, int c, int h, int w, int dep);
node *gb_node(gbuilder *b, node_kind k, int in0, int in1, int out);
/* sinusoidal embedding of the timesteps, dim wide */
int gb_temb(gbuilder *b, int dim, int flip_sin_to_cos, float freq_shift);
/* prefix.weight [cout, cin, k, k], prefix.bias [cout]; bias2: a [cout]
 * vector value added per image and channel, or -1 */
int gb_conv(gbuilder *b, const char *prefix, int in, int cout, int k, int stride, int pad_t, int pad_l, int bias2);
/* as gb_conv with the weight stored as [cout, cin, 1] (a Conv1d) */
int gb_conv1d(gbuilder *b, const char *prefix, int in, int cout);
int gb_group_norm(gbuilder *b, const char *prefix, int in, int groups, float eps, int silu);
int gb_linear(gbuilder *b, const char *prefix, int in, int out_f);
int gb_silu(gbuilder *b, int in);
int gb_add(gbuilder *b, int a, int c, float scale);
int gb_concat(gbuilder *b, int a, int c);
int gb_upsample(gbuilder *b, int in);
int gb_avgpool(gbuilder *b, int in);
int gb_slice(gbuilder *b, int in, int c);
int gb_scale_shift(gbuilder *b, int in, float scale, float shift);
/* a linear map of the channels at every position: prefix.weight [cout, cin]
 * (a torch Linear applied to tokens), prefix.bias [cout] when bias */
int gb_linear_tok(gbuilder *b, const char *prefix, int in, int cout, int bias);
/* diffusers' ResnetBlock2D: norm1 (GroupNorm + SiLU), time_emb_proj of
 * temb_act (skipped when temb_act is -1: the VAE's blocks), conv1, norm2,
 * conv2, a 1x1 conv_shortcut when the channels change, then
 * (shortcut + h) / out_scale */
int gb_resnet(gbuilder *b, const char *prefix, int in, int cout, int temb_act, int groups, float eps, float out_scale);
/* LayerNorm over channels: prefix.weight, prefix.bias [C] */
int gb_layer_norm(gbuilder *b, const char *prefix, int in, float eps);
int gb_geglu(gbuilder *b, int in);
/* diffusers' Attention without norm or residual: prefix.to_q/to_k/to_v
 * (weights only when !qkv_bias), prefix.to_out.0 (weight, bias); keys and
 * values from ctx (a conditioning value) or, ctx = -1, from in itself */
int gb_mha(gbuilder *b, const char *prefix, int in, int ctx, int heads, int qkv_bias);
/* The conditioning input: a constant-in-x value [c, h, w] per image (e.g.
 * text embeddings as [width, 1, tokens]); at most one per graph. */
int gb_cond_input(gbuilder *b, int c, int h, int w);
int gb_film(gbuilder *b, int in, int ss, int silu);
/* diffusers' Attention: prefix.group_norm, to_q/to_k/to_v/to_out.0 (older
 * names query/key/value/proj_attn accepted) */
int gb_attention(gbuilder *b, const char *prefix, int in, int head_dim, int groups, float eps, float rescale);
/* guided-diffusion's AttentionBlock: prefix.norm, prefix.qkv (Conv1d C ->
 * 3C, legacy head order), prefix.proj_out (Conv1d C -> C) */
int gb_attention_qkv(gbuilder *b, const char *prefix, int in, int heads, int groups, float eps);
/* names value v for activation taps */
void gb_tap(gbuilder *b, int v, const char *name);
/* Ends a build: sets x_in, t_out, plans the memory. On failure the graph is
 * freed and the first error returned. */
loco_status gb_finish(gbuilder *b, int x_in, int out);

/* ---- memory planning (plan.c) -------------------------------------------- */
typedef struct plan_span {
    size_t off, len;
    int id;
} plan_span;
typedef struct planner {
    plan_span *live;
    int n, cap, oom;
    size_t peak;
} planner;
void planner_init(planner *p);
void planner_release(planner *p);
/* first-fit offset (floats) for a block of len floats named id */
size_t planner_alloc(planner *p, size_t len, int id);
void planner_free(planner *p, int id);
/* Forward-order plan; values with keep[id] set are never released. Fills
 * off[n_values] and returns the peak (floats per image), 0 on OOM. */
size_t graph_plan_forward(const graph *g, const char *keep, size_t *off);
/* last uses, the forward plan and the scratch size (called by gb_finish) */
loco_status graph_plan(graph *g);

/* Winograd F(2x2,3x3) for the eligible 3x3 convolutions of the forward pass
 * (on after building). The trainer turns it off so that training runs stay
 * bit-identical to the im2col path its gradients use. */
void graph_set_winograd(graph *g, int on);
/* flops with the Winograd convolutions counted at 4/9 of their direct cost */
double graph_flops_executed(const graph *g);

/* ---- parameters (params.c) ------------------------------------------------ */
/* Reads every parameter from a weights file (safetensors or PyTorch) into a
 * new g->pdata: names (or their alt), shapes and dtypes checked, missing and
 * unexpected tensors refused, layouts applied. wpath names the file. */
loco_status graph_load_weights(graph *g, const char *wpath);
/* The same for a file that also holds another graph's tensors (a VAE's
 * encoder and decoder): a tensor the graph does not use whose name starts
 * with one of ignore[] (NULL-terminated; NULL: none) is skipped; any other
 * unused tensor is still refused. */
loco_status graph_load_weights_subset(graph *g, const char *wpath, const char *const *ignore);
/* Random initialisation as PyTorch's default (uniform +-1/sqrt(fan_in); norm
 * weights 1, biases 0) from seed, into w [total_params]. */
void graph_init_random(const graph *g, float *w, uint64_t seed);

/* ---- execution (exec.c) ---------------------------------------------------- */
/* The network output for batch B. cond: [B, cond value size] when the graph
 * has a conditioning input, else NULL. arena: B * arena_per_image floats;
 * scratch: scratch_floats. */
void graph_forward(const graph *g, int B, const float *x, const float *t, const float *cond, float *y, float *arena,
                   float *scratch, act_tap_fn tap, void *tap_user);

/* What one node does, for each pass. Every function gets the node and its
 * buffers in a node_io; the passes fill the fields they use. */
typedef struct node_io {
    const graph *g;
    int i;                 /* node index                                   */
    const node *n;
    int B;                 /* batch: images (forward, train) or vectors     */
    const float *t;        /* forward: timesteps [B]                       */
    const float *a, *c;    /* forward: inputs in0, in1 (or NULL);
                              jvp/vjp: the recorded inputs (batch 1);
                              train backward: the recorded inputs (batch B) */
    float *y;              /* forward: output                              */
    float *save;           /* forward: what the node keeps (NULL: nothing) */
    const float *da, *dc;  /* jvp: input tangents (NULL: constant in x)    */
    float *dy;             /* jvp: output tangents                         */
    const float *gy;       /* vjp/train: output cotangents                 */
    float *ga, *gc;        /* vjp/train: input cotangents, += (NULL: skip) */
    float *grad;           /* train: the parameter gradient arena, += (NULL) */
    float *scratch;
} node_io;

typedef struct node_ops {
    const char *name;
    void (*fwd)(const node_io *io);
    void (*jvp)(const node_io *io);   /* NULL: never depends on x          */
    void (*vjp)(const node_io *io);
    void (*bwd)(const node_io *io);   /* training, per-image records        */
    /* floats a linearisation keeps per node (batch 1), and floats the
       trainer keeps per image; 0 when none */
    size_t (*lin_save)(const graph *g, const node *n);
    size_t (*train_save)(const graph *g, const node *n);
    /* training forward keeping per-image records in save (NULL: fwd) */
    void (*tfwd)(const node_io *io);
    unsigned lin_reads;    /* recorded inputs J V / U^T J read: bit 0 in0, bit 1 in1 */
    unsigned train_reads;  /* recorded inputs the training backward reads    */
} node_ops;

/* The one dispatch table, indexed by node_kind. */
extern const node_ops graph_node_ops[NODE_KIND_COUNT];
/* floats of scratch a NODE_MHA needs (graph_plan) */
size_t graph_mha_scratch(const graph *g, const node *n);

#endif
