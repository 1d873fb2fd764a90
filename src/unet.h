/* unet.h - diffusers UNet2DModel as a flat graph of nodes.
 *
 * The builder turns a config into a list of parameters (names as in the
 * checkpoint) and a topologically ordered list of nodes over values. The
 * forward pass runs the nodes in order inside one arena whose layout is
 * planned once per batch size (values are freed after their last use). The
 * same graph is what the derivative passes (linearize) walk. */
#ifndef LOCO_UNET_H
#define LOCO_UNET_H

#include "internal.h"
#include "ops.h"
#include "schedule.h"

#define UNET_MAX_BLOCKS 16

typedef struct unet_config {
    int in_ch, out_ch, height, width;
    int n_blocks;
    int boc[UNET_MAX_BLOCKS];      /* block_out_channels                   */
    int down_attn[UNET_MAX_BLOCKS]; /* AttnDownBlock2D?                     */
    int up_attn[UNET_MAX_BLOCKS];   /* AttnUpBlock2D?                       */
    int layers;                    /* layers_per_block                     */
    int groups;                    /* norm_num_groups                      */
    int attn_groups;               /* mid-block attention groups           */
    float eps;                     /* norm_eps                             */
    int head_dim;                  /* attention_head_dim; 0 = full width   */
    int flip_sin_to_cos;
    float freq_shift;
    int downsample_padding;
    float mid_scale;               /* mid_block_scale_factor               */
    int center_input;
    int mid_block;                 /* UNetMidBlock2D present               */
    int add_attention;
    int temb_dim;                  /* time_embedding_dim                   */
} unet_config;

/* Parses and validates a UNet2DModel config.json text. path for messages. */
loco_status unet_config_parse(unet_config *c, const char *text, size_t len, const char *path);

typedef enum node_kind {
    NODE_TEMB,     /* sinusoidal embedding of t -> [B, dim]                  */
    NODE_LINEAR,   /* [B, in] -> [B, out]                                    */
    NODE_SILU,     /* elementwise                                            */
    NODE_CONV,     /* conv2d (+ per-image channel bias from value in1)       */
    NODE_GN,       /* group norm (+ SiLU)                                    */
    NODE_ADD,      /* (in0 + in1) / scale                                    */
    NODE_CONCAT,   /* channels of in0 then in1                               */
    NODE_UPSAMPLE, /* nearest 2x                                             */
    NODE_ATTN,     /* whole attention block with residual                    */
    NODE_SCALE_SHIFT, /* y = a*x + b (center_input_sample: 2x - 1)           */
    NODE_KIND_COUNT
} node_kind;

typedef struct value {
    int c, h, w;          /* per-image shape; vectors are [c, 1, 1]        */
    int depends_on_x;     /* 0 for the time-embedding path                 */
    const char *tap;      /* block name for activation taps, or NULL       */
    int last_use;         /* index of the last node reading it             */
} value;

typedef struct node {
    node_kind kind;
    int in0, in1, out;    /* value ids; in1 = -1 when unused               */
    int pw, pb;           /* parameter ids (weight, bias) or -1            */
    conv_geom g;          /* NODE_CONV                                     */
    int groups, silu;     /* NODE_GN (silu also: NODE_LINEAR never)        */
    float eps, scale, shift;
    int heads;            /* NODE_ATTN                                     */
    int pattn[10];        /* NODE_ATTN: gn w,b, q w,b, k w,b, v w,b, o w,b */
} node;

typedef struct param {
    char name[128];       /* checkpoint key (bounded: unet.c, add_param)   */
    char alt[128];        /* older key naming (attention), or ""           */
    int ndim;
    int64_t shape[4];
    size_t off, numel;    /* offset in the parameter arena (floats)        */
    float fan_in;         /* for random initialisation; 0 = GroupNorm      */
    int is_gn_weight;
} param;

typedef struct unet {
    unet_config cfg;
    param *params;
    int n_params, cap_params;
    size_t total_params;  /* floats                                        */
    float *pdata;         /* [total_params], owned                         */
    value *values;
    int n_values, cap_values;
    node *nodes;
    int n_nodes, cap_nodes;
    int x_in, t_out;      /* input value, output (eps) value               */
    size_t *fwd_off;      /* [n_values] per-image offsets of the forward plan */
    size_t arena_per_image; /* floats, from the plan                       */
    size_t scratch_floats;
    double flops;         /* per image                                     */
} unet;

/* Builds the graph for cfg (no weights yet): fills params, values, nodes and
 * the memory plan. */
loco_status unet_build(unet *u, const unet_config *cfg);
void unet_free(unet *u);
/* Winograd F(2x2,3x3) for the eligible 3x3 convolutions of the forward pass
 * (on after unet_build). The trainer turns it off so that training runs stay
 * bit-identical to the im2col path its gradients use. */
void unet_set_winograd(unet *u, int on);
/* u->flops with the convolutions that conv2d_fwd computes by Winograd
 * counted at 4/9 of their direct cost (16 multiplies per 2x2 tile, not 36). */
double unet_flops_executed(const unet *u);

static inline const float *unet_param(const unet *u, int id) { return id < 0 ? NULL : u->pdata + u->params[id].off; }

/* ---- memory planning -------------------------------------------------- */
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

size_t unet_value_size(const unet *u, int id); /* floats per image */
/* Forward-order plan; values with keep[id] set are never released. Fills
 * off[n_values] and returns the peak (floats per image), 0 on OOM. */
size_t unet_plan_forward(const unet *u, const char *keep, size_t *off);

/* ---- execution ----------------------------------------------------------- */
/* Floats node i keeps for the derivative passes when recording (GN: mean and
 * rstd; attention: attn_saved). */
size_t unet_node_save_floats(const unet *u, int i);
attn_saved unet_attn_saved(const unet *u, int i, float *save);
attn_params unet_attn_params(const unet *u, int i);
/* Runs node i on batch B; value id lives at arena + off[id] * B. save: NULL or
 * unet_node_save_floats(u, i) floats to record into (B must be 1). */
void unet_exec_node(const unet *u, int i, int B, float *arena, const size_t *off, const float *t, float *scratch,
                    float *save);

/* Activation tap: called after each node that produces a named value. */
typedef void (*unet_tap_fn)(void *user, const char *name, const float *data, int B, int c, int h, int w);

/* eps for batch B. arena: B * arena_per_image floats; scratch:
 * scratch_floats. */
void unet_forward(const unet *u, int B, const float *x, const float *t, float *eps, float *arena, float *scratch,
                  unet_tap_fn tap, void *tap_user);

#endif
