/* lin.h - a graph's linearisation at one point (lin.c): the network output y
 * there, and batched products J V and U^T J of the Jacobian of y. */
#ifndef LOCO_GRAPH_LIN_H
#define LOCO_GRAPH_LIN_H

#include "graph/graph.h"

typedef struct graph_lin graph_lin;

/* Records the forward pass of g at x [n_in], timestep t and conditioning
 * cond (NULL when g has none; else copied) (batch 1). g must outlive the
 * handle and its parameters must not change. *out: free with graph_lin_free. */
loco_status graph_lin_new(const graph *g, const float *x, float t, const float *cond, graph_lin **out);
void graph_lin_free(graph_lin *L);
/* y at the point, [n_out] (owned by L) */
const float *graph_lin_output(const graph_lin *L);
/* JY [k, n_out] = J_y V for tangents V [k, n_in] (and the VJP below): the k
 * vectors go through in groups whose work space stays under
 * graph_lin_work_budget bytes (at least one vector a group); the results do
 * not depend on the grouping. */
extern size_t graph_lin_work_budget;
loco_status graph_lin_jvp(graph_lin *L, int k, const float *V, float *JY);
/* UJ [k, n_in] = U^T J_y for cotangents U [k, n_out] */
loco_status graph_lin_vjp(graph_lin *L, int k, const float *U, float *UJ);
/* floats of one input vector (the graph's x) and of one output vector */
size_t graph_lin_input_floats(const graph_lin *L);
size_t graph_lin_output_floats(const graph_lin *L);
size_t graph_lin_record_bytes(const graph_lin *L);
/* the work space k vectors take (one group's) */
size_t graph_lin_work_bytes(const graph_lin *L, int k);

#endif
