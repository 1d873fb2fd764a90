/* backward.h - training backpropagation through the UNet2DModel graph
 * (internal; for the trainer).
 *
 * graph_train_forward runs the forward pass at batch B and records, per image,
 * what the reverse pass reads; graph_train_backward then maps a cotangent of
 * eps to the gradient of every parameter (accumulated into a buffer laid out
 * like graph.pdata) and, optionally, to the cotangent of x.
 *
 * Recorded per image (everything else is freed as in the forward pass):
 *  - the input of every group norm, SiLU, linear, attention and convolution,
 *    except a convolution/SiLU input that is a group norm's output: that one
 *    is recomputed from the group norm's (recorded) input when needed;
 *  - group norm mean/rstd [groups];
 *  - per attention block: its group norm's mean/rstd, the normalised input,
 *    q, k, v, the heads' output (before to_out) and the probabilities P.
 * The time-embedding path (constant in x) is recorded and traversed too, since
 * its parameters get gradients through every time_emb_proj.
 *
 * Memory: one arena, planned once per batch size with the planner of graph.h
 * over a single timeline (forward, then reverse): records live from their
 * forward node to their last reader in the reverse pass, cotangents from
 * their first use in the reverse pass to their producer. The reverse pass
 * therefore consumes the record (as PyTorch's backward without retain_graph):
 * each graph_train_backward needs its own graph_train_forward before it.
 *
 * Threads: as the kernels (OpenMP loops, BLAS). A graph_train reads the
 * parameters u->pdata at every call: they may change after a backward (an
 * optimiser step) but not between a forward and its backward (the reverse
 * pass recomputes some group norm outputs). It must not outlive u. Not
 * thread-safe. */
#ifndef LOCO_BACKWARD_H
#define LOCO_BACKWARD_H

#include "graph.h"

typedef struct graph_train graph_train;

/* A training context for batches of exactly B images (1..4096). *out is a new
 * handle freed with graph_train_free(); NULL on failure. */
loco_status graph_train_new(const graph *u, int B, graph_train **out);
void graph_train_free(graph_train *tr);

/* Forward pass of B images x [B, C, H, W] at timesteps t [B]; eps receives
 * [B, C_out, H, W] when non-NULL. Non-finite x or t: LOCO_E_NUMERIC (and no
 * record: a failed forward also discards the previous one). */
loco_status graph_train_forward(graph_train *tr, const float *x, const float *t, float *eps);

/* Reverse pass of the last forward, for the cotangent deps [B, C_out, H, W]
 * of eps (e.g. dL/deps of a loss L):
 *  - grad [u->total_params] (or NULL): parameter p's gradient is ADDED at
 *    grad + u->params[p].off (summed over the batch), same layout as u->pdata;
 *  - dx [B, C, H, W] (or NULL): receives (is overwritten with) dL/dx.
 * Consumes the record: a second call needs a new graph_train_forward first
 * (LOCO_E_INVALID_ARGUMENT otherwise). Non-finite deps: LOCO_E_NUMERIC, and
 * then nothing is touched (the record stays). */
loco_status graph_train_backward(graph_train *tr, const float *deps, float *grad, float *dx);

/* Memory, in bytes for the whole batch. */
typedef struct graph_train_mem {
    size_t record;      /* what the forward keeps for the reverse pass      */
    size_t attention;   /* of which attention records (xn, q, k, v, o, P)   */
    size_t forward_peak;/* arena high-water mark during the forward pass    */
    size_t arena;       /* whole arena (forward and reverse, planned)       */
    size_t scratch;     /* im2col / attention scratch                        */
    size_t unshared;    /* arena if records and cotangents did not share    */
} graph_train_mem;
void graph_train_memory(const graph_train *tr, graph_train_mem *mem);
/* The same figures for batch B without allocating (u needs no weights). */
loco_status graph_train_plan(const graph *u, int B, graph_train_mem *mem);

#endif
