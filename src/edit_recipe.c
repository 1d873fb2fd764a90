/* edit_recipe.c - LOCO Edit of one image end to end: DDIM inversion to x_t,
 * linearization, the ROI and null-space subspace iterations, canonical
 * signs, the projection (or constrained iteration) of the directions, and
 * the denoising of x_t + s v. Built on the public API of loco.h alone; from
 * internal.h it takes only the error reporting and the clock (common.c). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct loco_edit_directions {
    loco_edit_info info;
    float *xt, *xT, *dirs; /* [n], [n], [rank, n] */
    loco_subspace roi, nul, con;
    int has_null, has_con;
};

void loco_edit_recipe_init(loco_edit_recipe *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    loco_edit_params_init(&p->edit);
    p->rank = 5;
    p->null_rank = 5;
    p->min_iter = 10;
    p->max_iter = 50;
    p->tol = 1e-4;
    p->of = LOCO_OUT_X0;
    p->null_mode = LOCO_NULL_PROJECT;
}

/* pixels of mask [hw] that are inside (nonzero) */
static size_t count_inside(const uint8_t *mask, size_t hw) {
    size_t k = 0;
    for (size_t i = 0; i < hw; i++) k += mask[i] != 0;
    return k;
}

loco_status loco_edit_recipe_check(const loco_model *m, const loco_edit_recipe *p, const uint8_t *mask) {
    if (!m || !p || !mask)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "edit recipe: NULL %s", !m ? "model" : !p ? "recipe" : "mask");
    loco_model_info inf;
    loco_status st = loco_model_get_info(m, &inf);
    if (st) return st;
    if (inf.in_channels != inf.out_channels)
        return loco_fail(LOCO_E_UNSUPPORTED, "editing needs in_channels == out_channels (the model has %d and %d)",
                         inf.in_channels, inf.out_channels);
    if ((st = loco_edit_timestep(m, &p->edit, NULL, NULL))) return st;
    const size_t C = (size_t)inf.in_channels, hw = (size_t)inf.height * inf.width, n = C * hw;
    const size_t inside = count_inside(mask, hw), in_entries = inside * C, out_entries = (hw - inside) * C;
    if (inside == 0) return loco_fail(LOCO_E_INVALID_ARGUMENT, "the mask is empty");
    if (p->null_rank > 0 && inside == hw)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "the mask covers the whole image, so there is no outside for the "
                                                  "null-space projection (use --null-rank 0)");
    const size_t rmax = in_entries < n ? in_entries : n;
    if (p->rank < 1 || (size_t)p->rank > rmax)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "rank %d must be in [1, %zu] (the mask holds %zu pixels x %zu channels = %zu entries)",
                         p->rank, rmax, inside, C, in_entries);
    if (p->null_rank < 0 || (size_t)p->null_rank > out_entries)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "null rank %d must be in [0, %zu] (outside the mask: %zu pixels x %zu channels)",
                         p->null_rank, out_entries, hw - inside, C);
    if (p->null_mode != LOCO_NULL_PROJECT && p->null_mode != LOCO_NULL_CONSTRAIN)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "null_mode %d is neither project (0) nor constrain (1)",
                         (int)p->null_mode);
    if (p->null_mode == LOCO_NULL_CONSTRAIN && (p->null_rank < 1 || (size_t)p->rank + (size_t)p->null_rank > n))
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "the constrained iteration needs a null rank >= 1 and rank + null rank <= %zu (got %d + %d)",
                         n, p->rank, p->null_rank);
    if (p->of != LOCO_OUT_X0 && p->of != LOCO_OUT_EPS)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "output %d is neither eps (0) nor x0_hat (1)", (int)p->of);
    if (p->max_iter < 1 || p->max_iter > 100000 || p->min_iter < 0 || p->min_iter > p->max_iter)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "iterations: need 0 <= min_iter <= max_iter, 1 <= max_iter <= "
                                                  "100000 (got %d, %d)", p->min_iter, p->max_iter);
    if (!(p->tol >= 0)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "tol %g must be >= 0", p->tol);
    if (p->oversample < 0 || p->oversample > 1000)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "oversample %d must be in [0, 1000]", p->oversample);
    if (p->init_roi && p->init_roi_rows < p->rank)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "the initial ROI basis has %d rows; rank %d needs at least %d",
                         p->init_roi_rows, p->rank, p->rank);
    if (p->init_null && p->null_rank > 0 && p->init_null_rows < p->null_rank)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "the initial null basis has %d rows; null rank %d needs at least %d",
                         p->init_null_rows, p->null_rank, p->null_rank);
    return LOCO_OK;
}

void loco_edit_directions_free(loco_edit_directions *d) {
    if (!d) return;
    free(d->xt);
    free(d->xT);
    free(d->dirs);
    loco_subspace_free(&d->roi);
    loco_subspace_free(&d->nul);
    loco_subspace_free(&d->con);
    free(d);
}

/* "where: <the message of the call that failed>" (its status's text when it
 * left none) */
static loco_status fail_in(loco_status s, const char *where) {
    if (!loco_last_error()[0]) return loco_fail(s, "%s: %s", where, loco_strerror(s));
    return loco_fail_in(s, where);
}

loco_status loco_edit_prepare(loco_model *m, const loco_edit_recipe *p, const float *x0, const uint8_t *mask,
                              loco_edit_directions **out) {
    if (!out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_prepare: NULL out");
    *out = NULL;
    loco_status st = loco_edit_recipe_check(m, p, mask);
    if (st) return st;
    if (!x0) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_prepare: NULL image");
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const int C = inf.in_channels, H = inf.height, W = inf.width, r = p->rank, rn = p->null_rank;
    const size_t hw = (size_t)H * W, n = (size_t)C * hw;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x0[i])) return loco_fail(LOCO_E_NUMERIC, "the image: element %zu is not finite", i);

    loco_edit_directions *d = calloc(1, sizeof *d);
    uint8_t *in = malloc(n), *outside = malloc(n);
    loco_lin *L = NULL;
    if (d) {
        d->xt = malloc(sizeof(float) * n);
        d->xT = malloc(sizeof(float) * n);
        d->dirs = malloc(sizeof(float) * n * (size_t)r);
    }
    if (!d || !in || !outside || !d->xt || !d->xT || !d->dirs) {
        st = loco_fail(LOCO_E_NOMEM, "edit recipe: out of memory for %zu-entry images", n);
        goto done;
    }
    /* the mask on every channel of a pixel, and its complement */
    for (int c = 0; c < C; c++)
        for (size_t i = 0; i < hw; i++) {
            in[(size_t)c * hw + i] = mask[i] != 0;
            outside[(size_t)c * hw + i] = mask[i] == 0;
        }
    loco_edit_info *inf_out = &d->info;
    inf_out->channels = C;
    inf_out->height = H;
    inf_out->width = W;
    inf_out->n = n;
    inf_out->rank = r;
    inf_out->null_rank = rn;
    inf_out->null_mode = p->null_mode;
    inf_out->mask_pixels = count_inside(mask, hw);
    if ((st = loco_edit_timestep(m, &p->edit, &inf_out->t_value, &inf_out->grid_index))) goto done;

    /* 1. invert to x_t */
    loco_edit_params ep = p->edit;
    ep.progress = p->progress;
    ep.user = p->user;
    double t0 = loco_now();
    if ((st = loco_edit_encode_full(m, &ep, x0, d->xT, d->xt, &inf_out->nfe_inversion))) {
        st = fail_in(st, "inversion");
        goto done;
    }
    inf_out->seconds_inversion = loco_now() - t0;

    /* 2. the linearization at x_t */
    t0 = loco_now();
    if ((st = loco_linearize(m, d->xt, inf_out->t_value, &L))) {
        st = fail_in(st, "linearize");
        goto done;
    }
    inf_out->seconds_linearize = loco_now() - t0;

    /* 3. the ROI basis */
    loco_subspace_params sp;
    loco_subspace_params_init(&sp);
    sp.rank = r;
    sp.min_iter = p->min_iter;
    sp.max_iter = p->max_iter;
    sp.oversample = p->oversample;
    sp.tol = p->tol;
    sp.seed = p->seed;
    sp.of = p->of;
    sp.init = p->init_roi;
    sp.progress = p->progress;
    sp.user = p->user;
    sp.phase = "roi";
    t0 = loco_now();
    if ((st = loco_subspace_iteration(L, in, &sp, &d->roi))) {
        st = fail_in(st, "directions inside the mask");
        goto done;
    }
    inf_out->seconds_roi = loco_now() - t0;
    loco_canonical_sign(r, n, d->roi.vT);

    /* 4. the null basis outside the mask */
    if (rn > 0) {
        sp.rank = rn;
        sp.seed = p->seed + 1;
        sp.init = p->init_null;
        sp.phase = "null";
        t0 = loco_now();
        if ((st = loco_subspace_iteration(L, outside, &sp, &d->nul))) {
            st = fail_in(st, "null space outside the mask");
            goto done;
        }
        inf_out->seconds_null = loco_now() - t0;
        d->has_null = 1;
        loco_canonical_sign(rn, n, d->nul.vT);
    }

    /* 5. the directions */
    if (p->null_mode == LOCO_NULL_CONSTRAIN) {
        sp.rank = r;
        sp.seed = p->seed + 2;
        sp.init = NULL;
        sp.constrain = d->nul.vT;
        sp.constrain_rank = rn;
        sp.phase = "constrained";
        t0 = loco_now();
        if ((st = loco_subspace_iteration(L, in, &sp, &d->con))) {
            st = fail_in(st, "constrained directions inside the mask");
            goto done;
        }
        inf_out->seconds_constrained = loco_now() - t0;
        d->has_con = 1;
        memcpy(d->dirs, d->con.vT, sizeof(float) * n * (size_t)r);
        loco_canonical_sign(r, n, d->dirs);
    } else {
        memcpy(d->dirs, d->roi.vT, sizeof(float) * n * (size_t)r);
        st = loco_project_directions(r, n, d->dirs, rn, rn > 0 ? d->nul.vT : NULL);
    }
done:
    loco_lin_free(L);
    free(in);
    free(outside);
    if (st) loco_edit_directions_free(d);
    else *out = d;
    return st;
}

loco_status loco_edit_directions_info(const loco_edit_directions *d, loco_edit_info *info) {
    if (!d || !info) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_directions_info: NULL argument");
    *info = d->info;
    return LOCO_OK;
}

const float *loco_edit_directions_vectors(const loco_edit_directions *d) { return d ? d->dirs : NULL; }
const float *loco_edit_directions_xt(const loco_edit_directions *d) { return d ? d->xt : NULL; }
const float *loco_edit_directions_xT(const loco_edit_directions *d) { return d ? d->xT : NULL; }

const loco_subspace *loco_edit_directions_subspace(const loco_edit_directions *d, loco_edit_basis which) {
    if (!d) return NULL;
    switch (which) {
    case LOCO_BASIS_ROI: return &d->roi;
    case LOCO_BASIS_NULL: return d->has_null ? &d->nul : NULL;
    case LOCO_BASIS_CONSTRAINED: return d->has_con ? &d->con : NULL;
    }
    return NULL;
}

loco_status loco_edit_render(loco_model *m, const loco_edit_params *ep, const float *xt, int n_images,
                             const int *moves_per_image, const loco_edit_move *moves, int n_moves, float *out,
                             int *nfe) {
    if (nfe) *nfe = 0;
    if (!m || !ep || !xt || !out || (n_moves > 0 && !moves))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_render: NULL argument");
    if (n_images < 1 || n_moves < 0)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_render: %d images and %d moves (need >= 1 and >= 0)",
                         n_images, n_moves);
    long long used = 0;
    for (int i = 0; i < n_images; i++) {
        int k = moves_per_image ? moves_per_image[i] : 1;
        if (k < 0) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_render: image %d has %d moves", i, k);
        used += k;
    }
    if (used != n_moves)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_render: the images use %lld moves but %d are given",
                         used, n_moves);
    for (int k = 0; k < n_moves; k++) {
        if (!moves[k].direction) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_render: move %d: NULL direction", k);
        if (!isfinite(moves[k].strength))
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_render: move %d: strength is not finite", k);
    }
    loco_status st = loco_edit_timestep(m, ep, NULL, NULL);
    if (st) return st;
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    if (inf.in_channels != inf.out_channels)
        return loco_fail(LOCO_E_UNSUPPORTED, "editing needs in_channels == out_channels (the model has %d and %d)",
                         inf.in_channels, inf.out_channels);
    const size_t n = (size_t)inf.in_channels * inf.height * inf.width;
    /* the starting points */
    const loco_edit_move *mv = moves;
    for (int i = 0; i < n_images; i++) {
        float *dst = out + n * (size_t)i;
        memcpy(dst, xt, sizeof(float) * n);
        int k = moves_per_image ? moves_per_image[i] : 1;
        for (int j = 0; j < k; j++, mv++) {
            const float *v = mv->direction;
            const float s = mv->strength;
            for (size_t e = 0; e < n; e++) dst[e] += s * v[e];
        }
    }
    /* batches sized to keep the activations near 1 GiB, 1 to 16 images */
    size_t per = inf.activation_bytes ? ((size_t)1 << 30) / inf.activation_bytes : 8;
    const int B = per < 1 ? 1 : per > 16 ? 16 : (int)per;
    for (int i = 0; i < n_images; i += B) {
        int b = n_images - i < B ? n_images - i : B, e = 0;
        if ((st = loco_edit_decode(m, ep, b, out + (size_t)i * n, &e))) return st;
        if (nfe) *nfe += e;
    }
    return LOCO_OK;
}
