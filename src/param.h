/* param.h - a model's parameterisation, in one place: what its network
 * predicts (diffusers' prediction_type) and how eps and x0_hat follow from
 * that prediction y and the noisy input x at noise level abar, with
 * x = sa x0 + s1 eps, sa = sqrt(abar), s1 = sqrt(1 - abar):
 *   epsilon:       eps = y,              x0 = (x - s1 y) / sa
 *   v_prediction:  eps = s1 x + sa y,    x0 = sa x - s1 y
 *   sample:        eps = (x - sa y) / s1, x0 = y
 * (diffusers' DDIMScheduler.step computes the same). Each map is linear in
 * (x, y), so the same function turns tangents (V, J_y V) into J_out V and
 * cotangents (U, U^T J_y) into U^T J_out: every caller uses param_out. */
#ifndef LOCO_PARAM_H
#define LOCO_PARAM_H

#include "loco.h"

typedef enum pred_type { PRED_EPSILON = 0, PRED_V = 1, PRED_SAMPLE = 2 } pred_type;

static inline float param_out(pred_type p, loco_output out, float sa, float s1, float x, float y) {
    switch (p) {
    case PRED_V: return out == LOCO_OUT_X0 ? sa * x - s1 * y : s1 * x + sa * y;
    case PRED_SAMPLE: return out == LOCO_OUT_X0 ? y : (x - sa * y) / s1;
    case PRED_EPSILON: break;
    }
    return out == LOCO_OUT_X0 ? (x - s1 * y) / sa : y;
}

/* The training target of clean x0 and noise eps (x = sa x0 + s1 eps): eps,
 * v = sa eps - s1 x0, or x0; param_out maps it back to (x0, eps). */
static inline float param_target(pred_type p, float sa, float s1, float x0, float eps) {
    switch (p) {
    case PRED_V: return sa * eps - s1 * x0;
    case PRED_SAMPLE: return x0;
    case PRED_EPSILON: break;
    }
    return eps;
}

/* dst[i] = param_out(p, out, sa, s1, x[i], y[i]) for i < n (dst may be y) */
static inline void param_apply(pred_type p, loco_output out, float sa, float s1, size_t n, const float *x,
                               const float *y, float *dst) {
    for (size_t i = 0; i < n; i++) dst[i] = param_out(p, out, sa, s1, x[i], y[i]);
}

#endif
