/* graph_denoiser.h - the denoiser of a family whose network is a graph
 * (unet2d, adm): prediction by graph_forward, linearisation by graph_lin.
 * A family builds the graph, loads its weights, and fills in its shape,
 * its name and its describe function. */
#ifndef LOCO_GRAPH_DENOISER_H
#define LOCO_GRAPH_DENOISER_H

#include "denoiser.h"
#include "graph/graph.h"

typedef struct graph_denoiser {
    graph g;
    float *arena;         /* activations, grown to the largest batch       */
    size_t arena_bytes;
    float *scratch;       /* [g.scratch_floats]                            */
    const char *family;   /* static                                         */
    int in_ch, out_ch, height, width, n_blocks;
    void *cfg;            /* the family's config (malloc'd, owned)         */
} graph_denoiser;

/* A new graph denoiser owning *g (moved; g is zeroed) and, on success, cfg;
 * allocates the scratch. *out is freed with gd_free. */
loco_status gd_new(graph *g, void *cfg, const char *family, graph_denoiser **out);

loco_status gd_predict(void *self, int B, const float *x, const float *t, const void *cond, float *y, act_tap_fn tap,
                       void *tap_user);
loco_status gd_linearize(void *self, const float *x, float t, const void *cond, void **lin);
const float *gd_lin_output(const void *lin);
loco_status gd_jvp(void *lin, int k, const float *V, float *JY);
loco_status gd_vjp(void *lin, int k, const float *U, float *UJ);
size_t gd_lin_bytes(const void *lin, int k);
void gd_lin_free(void *lin);
void gd_info(const void *self, denoiser_info *info);
void gd_free(void *self);
struct graph *gd_graph_of(void *self);

/* A family's table: the graph functions with its describe. */
#define GRAPH_DENOISER_VTABLE(name, describe_fn)                                                                    \
    {name,   gd_predict,  gd_linearize, gd_lin_output, gd_jvp,     gd_vjp, gd_lin_bytes, gd_lin_free, gd_info,     \
     describe_fn, gd_free, gd_graph_of, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL}

/* Writes out_dir/config.json (cfg_text) and out_dir/weights_name with the
 * parameters of u initialised by graph_init_random(seed), as dtype (F32 or
 * F16); creates out_dir. */
loco_status graph_write_random(const graph *u, const char *out_dir, const char *weights_name, const char *cfg_text,
                               size_t cfg_len, uint64_t seed, loco_dtype dtype);

/* Writes one weights file (path, created or replaced whole) holding the
 * parameters of n graphs, each initialised by graph_init_random (graph g with
 * a seed derived from seed and g), as dtype (F32 or F16). Parameter names must
 * not repeat across the graphs. */
loco_status graph_write_random_weights(const graph *const *gs, int n, const char *path, uint64_t seed,
                                       loco_dtype dtype);

/* Weights, parameters, FLOPs and memory lines of `loco info`. */
void gd_describe_costs(const graph_denoiser *gd, sbuf *b);

#endif
