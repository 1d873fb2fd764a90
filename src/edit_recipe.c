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

/* The sizes a recipe works with: the latent (the directions) and the image
 * the mask covers (the same for pixel-space models). */
typedef struct recipe_sizes {
    int latent;            /* a latent model: the edited function is decoded */
    int C, H, W;           /* the model's input (the directions)            */
    int IC, IH, IW;        /* the image the mask covers                     */
    size_t n, hw_img, n_img;
} recipe_sizes;

static void sizes_of(const loco_model *m, const loco_model_info *inf, recipe_sizes *z) {
    z->C = inf->in_channels;
    z->H = inf->height;
    z->W = inf->width;
    loco_model_image_info(m, &z->IC, &z->IH, &z->IW);
    z->latent = z->IC != z->C || z->IH != z->H || z->IW != z->W;
    z->n = (size_t)z->C * z->H * z->W;
    z->hw_img = (size_t)z->IH * z->IW;
    z->n_img = (size_t)z->IC * z->hw_img;
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
    if (inf.conditional && !p->edit.cond)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "a %s model edits under a prompt's guidance: give one", inf.family);
    if (!inf.conditional && (p->edit.cond || p->edit_cond))
        return loco_fail(LOCO_E_UNSUPPORTED, "a %s model takes no prompt", inf.family);
    if ((st = loco_edit_timestep(m, &p->edit, NULL, NULL))) return st;
    recipe_sizes z;
    sizes_of(m, &inf, &z);
    const size_t C = (size_t)z.IC, hw = z.hw_img, n = z.n;
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
    if (p->edit_cond && p->rank != 1)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "a text-supervised edit has one direction (rank %d given)", p->rank);
    const size_t nmax = out_entries < n ? out_entries : n;
    if (p->null_rank < 0 || (size_t)p->null_rank > nmax)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "null rank %d must be in [0, %zu] (outside the mask: %zu pixels x %zu channels)",
                         p->null_rank, nmax, hw - inside, C);
    if (p->null_mode != LOCO_NULL_PROJECT && p->null_mode != LOCO_NULL_CONSTRAIN)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "null_mode %d is neither project (0) nor constrain (1)",
                         (int)p->null_mode);
    if (p->null_mode == LOCO_NULL_CONSTRAIN && (p->edit_cond || p->null_rank < 1 ||
                                                (size_t)p->rank + (size_t)p->null_rank > n))
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "the constrained iteration needs a null rank >= 1, rank + null rank <= %zu (got %d + %d) and "
                         "no edit prompt",
                         n, p->rank, p->null_rank);
    if (p->of != LOCO_OUT_X0 && p->of != LOCO_OUT_EPS && p->of != LOCO_OUT_IMAGE)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "output %d is neither eps (0), x0_hat (1) nor the image (2)",
                         (int)p->of);
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
    if (p->start_latent)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(p->start_latent[i]))
                return loco_fail(LOCO_E_NUMERIC, "the start latent: element %zu is not finite", i);
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

/* v [n] minus its projection on the r orthonormal rows of B, normalised;
 * the sign kept (a text-supervised direction has a meaning) */
static loco_status project_keep_sign(size_t n, float *v, int r, const float *B) {
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < r; k++) {
            const float *b = B + (size_t)k * n;
            double d = 0;
            for (size_t i = 0; i < n; i++) d += (double)v[i] * b[i];
            for (size_t i = 0; i < n; i++) v[i] -= (float)(d * b[i]);
        }
    double nn = 0;
    for (size_t i = 0; i < n; i++) nn += (double)v[i] * v[i];
    if (!(nn > 0)) return loco_fail(LOCO_E_NUMERIC, "the edit direction lies in the null space");
    const double sc = 1.0 / sqrt(nn);
    for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] * sc);
    return LOCO_OK;
}

/* The text-supervised direction J_e^T delta / |.| as a rank-1 subspace
 * (vT, s = |J_e^T delta|, u = delta / |delta|). */
static loco_status semantic_direction(loco_model *m, const loco_edit_recipe *p, const float *xt, float t,
                                      const float *y, loco_output of, const uint8_t *in, size_t n,
                                      loco_subspace *out) {
    loco_lin *Le = NULL;
    loco_status st = loco_linearize_cond(m, xt, t, p->edit_cond, &Le);
    if (st) return st;
    const size_t l = of == LOCO_OUT_IMAGE ? loco_lin_image_mask_count(Le, in) : loco_lin_mask_count(Le, in);
    const size_t nf = of == LOCO_OUT_IMAGE ? loco_lin_image_size(Le) : loco_lin_output_size(Le);
    const float *ye = loco_lin_value(Le, of);
    memset(out, 0, sizeof *out);
    out->rank = 1;
    out->n = n;
    out->l = l;
    out->vT = malloc(sizeof(float) * n);
    out->s = malloc(sizeof(float));
    out->u = malloc(sizeof(float) * (l ? l : 1));
    if (!y || !ye) st = loco_fail(LOCO_E_NOMEM, "the decoded predictions: out of memory");
    else if (!out->vT || !out->s || !out->u) st = loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!st) {
        size_t j = 0;
        double dn = 0;
        for (size_t i = 0; i < nf; i++)
            if (in[i]) {
                out->u[j] = ye[i] - y[i];
                dn += (double)out->u[j] * out->u[j];
                j++;
            }
        if (!(dn > 0)) st = loco_fail(LOCO_E_NUMERIC, "the edit prompt changes nothing inside the mask");
    }
    if (!st) st = loco_lin_vjp(Le, of, in, 1, out->u, out->vT);
    if (!st) {
        double nn = 0, dn = 0;
        for (size_t i = 0; i < n; i++) nn += (double)out->vT[i] * out->vT[i];
        for (size_t i = 0; i < l; i++) dn += (double)out->u[i] * out->u[i];
        if (!(nn > 0)) st = loco_fail(LOCO_E_NUMERIC, "J_e^T delta vanishes");
        else {
            out->s[0] = (float)sqrt(nn);
            for (size_t i = 0; i < n; i++) out->vT[i] = (float)(out->vT[i] / sqrt(nn));
            for (size_t i = 0; i < l; i++) out->u[i] = (float)(out->u[i] / sqrt(dn));
            out->converged = 1;
        }
    }
    loco_lin_free(Le);
    return st;
}

loco_status loco_edit_start(loco_model *m, const loco_edit_params *ep, const float *image, const float *start_latent,
                            float *xT, float *xt, int *nfe) {
    if (nfe) *nfe = 0;
    if (!m || !ep || !xt || (!image) == (!start_latent))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_start: %s",
                         !m || !ep || !xt ? "NULL argument" : "give exactly one of an image and a start latent");
    float t_value;
    int grid_index;
    loco_status st = loco_edit_timestep(m, ep, &t_value, &grid_index);
    if (st) return st;
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    recipe_sizes z;
    sizes_of(m, &inf, &z);
    const size_t n = z.n;
    if (start_latent) {
        for (size_t i = 0; i < n; i++)
            if (!isfinite(start_latent[i]))
                return loco_fail(LOCO_E_NUMERIC, "the start latent: element %zu is not finite", i);
        if (xT) memcpy(xT, start_latent, sizeof(float) * n);
        memcpy(xt, start_latent, sizeof(float) * n);
        /* from the top point of the sampling schedule (the authors' grid or
         * diffusers' timesteps) down to the edit point */
        const int top = loco_ddim_points(ep->timesteps, ep->steps) - 1;
        if (grid_index < top)
            st = loco_ddim_sample_ts(m, ep->cond, ep->timesteps, ep->steps, 1, xt, top, grid_index, 0, ep->seed,
                                     ep->progress, ep->user);
        if (st) return fail_in(st, "sampling to the edit step");
        if (nfe) *nfe = top - grid_index;
        return LOCO_OK;
    }
    for (size_t i = 0; i < z.n_img; i++)
        if (!isfinite(image[i])) return loco_fail(LOCO_E_NUMERIC, "the image: element %zu is not finite", i);
    const float *start = image;
    float *z0 = NULL;
    if (z.latent) {
        if (!(z0 = malloc(sizeof(float) * n))) return loco_fail(LOCO_E_NOMEM, "out of memory");
        if ((st = loco_model_encode(m, 1, image, z0))) {
            free(z0);
            return fail_in(st, "encoding the image");
        }
        start = z0;
    }
    if ((st = loco_edit_encode_full(m, ep, start, xT, xt, nfe))) st = fail_in(st, "inversion");
    free(z0);
    return st;
}

loco_status loco_edit_prepare(loco_model *m, const loco_edit_recipe *p, const float *x0, const uint8_t *mask,
                              loco_edit_directions **out) {
    if (!out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_prepare: NULL out");
    *out = NULL;
    loco_status st = loco_edit_recipe_check(m, p, mask);
    if (st) return st;
    if (!x0 && !p->start_latent) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_edit_prepare: NULL image");
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    recipe_sizes z;
    sizes_of(m, &inf, &z);
    const int C = z.C, H = z.H, W = z.W, r = p->rank, rn = p->null_rank;
    const size_t n = z.n, hw = z.hw_img, ni = z.n_img;
    /* a latent model edits the decoded image */
    const loco_output of = z.latent ? LOCO_OUT_IMAGE : p->of;
    if (x0)
        for (size_t i = 0; i < ni; i++)
            if (!isfinite(x0[i])) return loco_fail(LOCO_E_NUMERIC, "the image: element %zu is not finite", i);

    loco_edit_directions *d = calloc(1, sizeof *d);
    uint8_t *in = malloc(ni), *outside = malloc(ni);
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
    /* the mask on every channel of a pixel of the image, and its complement */
    for (int c = 0; c < z.IC; c++)
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

    /* 1. x_t: the image inverted (a latent model's image encoded first), or
     *    a start latent sampled down to the edit step */
    loco_edit_params ep = p->edit;
    ep.progress = p->progress;
    ep.user = p->user;
    double t0 = loco_now();
    if ((st = loco_edit_start(m, &ep, p->start_latent ? NULL : x0, p->start_latent, d->xT, d->xt,
                              &inf_out->nfe_inversion)))
        goto done;
    inf_out->seconds_inversion = loco_now() - t0;

    /* 2. the linearization at x_t (under the plain guidance) */
    t0 = loco_now();
    if ((st = loco_linearize_cond(m, d->xt, inf_out->t_value, ep.cond, &L))) {
        st = fail_in(st, "linearize");
        goto done;
    }
    inf_out->seconds_linearize = loco_now() - t0;

    /* 3. the ROI basis: the top singular vectors inside the mask, or the
     *    text-supervised direction */
    loco_subspace_params sp;
    loco_subspace_params_init(&sp);
    sp.rank = r;
    sp.min_iter = p->min_iter;
    sp.max_iter = p->max_iter;
    sp.oversample = p->oversample;
    sp.tol = p->tol;
    sp.seed = p->seed;
    sp.of = of;
    sp.init = p->init_roi;
    sp.progress = p->progress;
    sp.user = p->user;
    sp.phase = "roi";
    t0 = loco_now();
    if (p->edit_cond) {
        /* The plain prediction's value is kept and L freed while the edit
         * guidance's linearization is made and used, then L is made again:
         * the two records never coexist (each is ~6 GB for SD at 512x512,
         * with a ~3 GB decoder record; the whole edit peaked at 17.9 GB
         * with both). It costs one more linearization. */
        const size_t nf = of == LOCO_OUT_IMAGE ? loco_lin_image_size(L) : loco_lin_output_size(L);
        const float *yl = loco_lin_value(L, of);
        float *y = yl ? malloc(sizeof(float) * nf) : NULL;
        if (!y) {
            st = loco_fail(LOCO_E_NOMEM, "the decoded prediction: out of memory");
            goto done;
        }
        memcpy(y, yl, sizeof(float) * nf);
        loco_lin_free(L);
        L = NULL;
        st = semantic_direction(m, p, d->xt, inf_out->t_value, y, of, in, n, &d->roi);
        free(y);
        if (st) {
            st = fail_in(st, "the edit prompt's direction");
            goto done;
        }
        if ((st = loco_linearize_cond(m, d->xt, inf_out->t_value, ep.cond, &L))) {
            st = fail_in(st, "linearize");
            goto done;
        }
    } else {
        if ((st = loco_subspace_iteration(L, in, &sp, &d->roi))) {
            st = fail_in(st, "directions inside the mask");
            goto done;
        }
        loco_canonical_sign(r, n, d->roi.vT);
    }
    inf_out->seconds_roi = loco_now() - t0;

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
    } else if (p->edit_cond) {
        memcpy(d->dirs, d->roi.vT, sizeof(float) * n);
        st = project_keep_sign(n, d->dirs, rn, rn > 0 ? d->nul.vT : NULL);
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
