/* edit_eval.h - the pieces of an edit-locality evaluation, shared by
 * bench/eval_edit.c (the full measurement over many images) and
 * tests/test_faces32.c (one edit in CI). Uses only loco.h.
 *
 * An edit of image x0 with mask M: loco_edit_prepare (invert x0 to x_t, the
 * ROI basis of the Jacobian of x0_hat restricted to M, the top null_rank
 * subspace of the complement, the directions with it projected out or
 * constrained away), then x_t (the reconstruction R) and x_t +- s v (the
 * edits E) denoised by loco_edit_render, for v the first direction and for
 * the first ROI basis vector (no null-space handling). Locality is the mean
 * absolute change |E - R| over the pixels inside M divided by the mean over
 * the pixels outside M (all channels). */
#ifndef LOCO_EDIT_EVAL_H
#define LOCO_EDIT_EVAL_H

#include "loco.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x0 [C,H,W] in [-1,1]; mask_hw [H*W] (nonzero inside). Prepares the edit
 * with recipe r and denoises five images into batch [5, C, H, W] (caller's):
 * the reconstruction, x_t - s v, x_t + s v with v the first edit direction
 * (null-space handling as r says), x_t - s u, x_t + s u with u the first ROI
 * basis vector (without it). On success *out (may be NULL) receives the
 * prepared directions, which the caller frees with
 * loco_edit_directions_free. */
static loco_status ev_edit(loco_model *m, const loco_edit_recipe *r, const float *x0, const uint8_t *mask_hw,
                           float strength, float *batch, loco_edit_directions **out) {
    if (out) *out = NULL;
    loco_edit_directions *d = NULL;
    loco_status st = loco_edit_prepare(m, r, x0, mask_hw, &d);
    if (!st) {
        const float *v = loco_edit_directions_vectors(d), *u = loco_edit_directions_subspace(d, LOCO_BASIS_ROI)->vT;
        const loco_edit_move mv[4] = {{v, -strength}, {v, strength}, {u, -strength}, {u, strength}};
        const int per[5] = {0, 1, 1, 1, 1};
        st = loco_edit_render(m, &r->edit, loco_edit_directions_xt(d), 5, per, mv, 4, batch, NULL);
    }
    if (!st && out) *out = d;
    else loco_edit_directions_free(d);
    return st;
}

static double ev_clip(float v) { return v < -1.0f ? -1.0 : v > 1.0f ? 1.0 : (double)v; }

/* Mean absolute difference of e and r [C,H,W], each clipped to [-1, 1] as
 * the images are shown, over the pixels inside (mask_hw == 1) and outside
 * (mask_hw == 0) the mask; other values count as neither. */
static void ev_change(const float *e, const float *r, const uint8_t *mask_hw, int C, int H, int W, double *inside,
                      double *outside) {
    const size_t hw = (size_t)H * W;
    double si = 0, so = 0;
    size_t ni = 0, no = 0;
    for (int c = 0; c < C; c++)
        for (size_t p = 0; p < hw; p++) {
            double d = fabs(ev_clip(e[c * hw + p]) - ev_clip(r[c * hw + p]));
            if (mask_hw[p] == 1) si += d, ni++;
            else if (mask_hw[p] == 0) so += d, no++;
        }
    *inside = ni ? si / (double)ni : 0;
    *outside = no ? so / (double)no : 0;
}

#endif
