/* edit_eval.h - the pieces of an edit-locality evaluation, shared by
 * bench/eval_edit.c (the full measurement over many images) and
 * tests/test_faces32.c (one edit in CI). Uses only loco.h.
 *
 * An edit of image x0 with mask M: invert x0 to x_t, find the first local
 * direction v (subspace iteration on the Jacobian of x0_hat restricted to M,
 * optionally with the top null_rank subspace of the complement projected
 * out), denoise x_t (the reconstruction R) and x_t +- s v (the edits E).
 * Locality is the mean absolute change |E - R| over the pixels inside M
 * divided by the mean over the pixels outside M (all channels). */
#ifndef LOCO_EDIT_EVAL_H
#define LOCO_EDIT_EVAL_H

#include "loco.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ev_setup {
    loco_edit_params ep; /* t_edit, steps, inv_steps, invert_full         */
    int rank, null_rank; /* 5, 5                                          */
    int min_iter, max_iter;
    int oversample; /* 0: plain subspace iteration                  */
    int constrain;  /* 1: the ROI iteration runs in the complement of the
                       null basis (loco_subspace_params.constrain) instead of
                       projecting its result afterwards                  */
    double tol;
    uint64_t seed;
} ev_setup;

static void ev_setup_init(ev_setup *s) {
    memset(s, 0, sizeof *s);
    loco_edit_params_init(&s->ep);
    s->rank = 5;
    s->null_rank = 5;
    s->min_iter = 10;
    s->max_iter = 50;
    s->tol = 1e-4;
}

/* x0 [C,H,W] in [-1,1]; mask_hw [H*W] (1 inside, 0 outside). Writes xt [n], the
 * first direction with the null-space projection (dproj, may be NULL when
 * null_rank is 0) and without it (draw), each [n] unit length, and the
 * first singular value of the masked Jacobian (*sv0). */
static loco_status ev_directions(loco_model *m, const ev_setup *es, int C, int H, int W, const float *x0,
                                 const uint8_t *mask_hw, float *xt, float *dproj, float *draw, float *sv0) {
    const size_t n = (size_t)C * H * W, hw = (size_t)H * W;
    uint8_t *in = malloc(n), *out = malloc(n);
    float *dirs = NULL;
    loco_lin *L = NULL;
    loco_subspace roi, nul;
    memset(&roi, 0, sizeof roi);
    memset(&nul, 0, sizeof nul);
    loco_status st = (in && out) ? LOCO_OK : LOCO_E_NOMEM;
    float t = 0;
    int idx = 0;
    if (!st) {
        for (size_t i = 0; i < n; i++) {
            in[i] = mask_hw[i % hw] == 1;
            out[i] = !in[i];
        }
        st = loco_edit_timestep(m, &es->ep, &t, &idx);
    }
    if (!st) st = loco_edit_encode(m, &es->ep, x0, xt, NULL);
    if (!st) st = loco_linearize(m, xt, t, &L);
    loco_subspace_params sp;
    loco_subspace_params_init(&sp);
    sp.rank = es->rank;
    sp.min_iter = es->min_iter;
    sp.max_iter = es->max_iter;
    sp.oversample = es->oversample;
    sp.tol = es->tol;
    sp.seed = es->seed;
    if (!st) st = loco_subspace_iteration(L, in, &sp, &roi);
    if (!st) {
        loco_canonical_sign(es->rank, n, roi.vT);
        memcpy(draw, roi.vT, sizeof(float) * n);
        *sv0 = roi.s[0];
    }
    if (!st && es->null_rank > 0 && dproj) {
        sp.rank = es->null_rank;
        sp.seed = es->seed + 1;
        st = loco_subspace_iteration(L, out, &sp, &nul);
        if (!st) {
            loco_canonical_sign(es->null_rank, n, nul.vT);
            dirs = malloc(sizeof(float) * n * (size_t)es->rank);
            if (!dirs) st = LOCO_E_NOMEM;
        }
        if (!st && es->constrain) {
            loco_subspace con;
            memset(&con, 0, sizeof con);
            sp.rank = es->rank;
            sp.seed = es->seed + 2;
            sp.constrain = nul.vT;
            sp.constrain_rank = es->null_rank;
            st = loco_subspace_iteration(L, in, &sp, &con);
            if (!st) {
                memcpy(dirs, con.vT, sizeof(float) * n * (size_t)es->rank);
                loco_canonical_sign(es->rank, n, dirs);
            }
            loco_subspace_free(&con);
        } else if (!st) {
            memcpy(dirs, roi.vT, sizeof(float) * n * (size_t)es->rank);
            st = loco_project_directions(es->rank, n, dirs, es->null_rank, nul.vT);
        }
        if (!st) memcpy(dproj, dirs, sizeof(float) * n);
    }
    free(dirs);
    loco_subspace_free(&roi);
    loco_subspace_free(&nul);
    loco_lin_free(L);
    free(in);
    free(out);
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
