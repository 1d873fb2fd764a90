/* pipeline.c - the pieces of LOCO Edit above the network: DDIM sampling and
 * inversion on the authors' timestep grid, the masked subspace iteration for
 * the top singular vectors of the posterior-mean Jacobian, and null-space
 * projection of directions.
 *
 * DDIM (Song et al. 2021, eq. 12) with a_t = alphas_cumprod[floor(t)]:
 *   x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t)   (eps models; v and sample
 *   models give x0 and eps from their prediction with param_out, without
 *   a division by sqrt(a_t), so a_t = 0 works for them: x0 = -v, eps = x)
 *   x' = sqrt(a') x0 + sqrt(1 - a' - sigma^2) eps + sigma z,
 *   sigma = eta sqrt((1 - a') / (1 - a_t)) sqrt(1 - a_t / a')
 * with eta 0 (deterministic) except below the boost timestep. Inversion runs
 * the same update towards larger t.
 *
 * Subspace iteration (LOCO Edit, Alg. 1): with V [r, n] orthonormal rows,
 * A = J V^T (r products J v), W = A^T J (r products u^T J), W = P S Q^T;
 * V <- Q^T. At a fixed point S = Sigma^2 (so singular values are sqrt(S)) and
 * the left singular vectors are A P S^-1/2. */
#include "linalg.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* DDIM                                                                     */
/* ======================================================================== */

loco_status loco_ddim_grid(int n, int T, float *grid) {
    if (!grid) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_ddim_grid: NULL argument");
    if (T < 2 || n < 2 || n > T)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "steps = %d must be in [2, %d] (the training timesteps)", n, T);
    /* torch.linspace(0, 1, n) in float32: the lower half counts up from 0,
     * the upper half down from 1, with a float32 step */
    const float step = 1.0f / (float)(n - 1);
    for (int i = 0; i < n; i++) {
        float v = i < n / 2 ? (float)((double)step * i) : (float)(1.0 - (double)step * (n - 1 - i));
        grid[i] = v * (float)(T - 1);
    }
    return LOCO_OK;
}

static loco_status check_grid(const loco_model *m, const float *grid, int a, int b) {
    if (!m || !grid) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    for (int i = a < b ? a : b; i <= (a < b ? b : a); i++)
        if (!isfinite(grid[i]) || grid[i] < 0 || grid[i] > (float)(m->sched.T - 1))
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "timestep grid[%d] = %g is outside [0, %d]", i, grid[i],
                             m->sched.T - 1);
    return LOCO_OK;
}

/* One DDIM update of x [B, n] from timestep t (network sees t_net) to t_next. */
/* clip: clamp the predicted x0 to [-1, 1] (diffusers' clip_sample; eps
 * stays the network's, as with use_clipped_model_output False) */
/* a and an: the alphas (alphas_cumprod) at the step's start and end */
/* A DDIM run's buffers, made once per call (ddim_work_new): the network's
 * output eps [B, n] and timesteps tb [B]; for sampling also the stochastic
 * steps' noise streams rng (one shared by the batch, n_rng 1, or one per
 * image, n_rng B) and their noise z [n_rng, n]. */
typedef struct ddim_work {
    float *eps, *tb, *z;
    loco_rng *rng;
    int n_rng;
} ddim_work;

static void ddim_work_free(ddim_work *w) {
    free(w->eps), free(w->tb), free(w->z), free(w->rng);
    memset(w, 0, sizeof *w);
}

/* noise: 0 (inversion: no streams), or the streams for sampling:
 * first_image < 0, one stream from seed shared by the batch (an edit's
 * strengths then differ only by the edit); else one per image, image b's
 * seeded from (seed, first_image + b) only. Either way an image's result
 * does not depend on its batch neighbours. */
static loco_status ddim_work_new(loco_model *m, int B, int noise, uint64_t seed, int first_image, ddim_work *w) {
    memset(w, 0, sizeof *w);
    const size_t n = model_image_size(m);
    w->eps = loco_malloc(sizeof(float) * (size_t)B * n);
    w->tb = loco_malloc(sizeof(float) * (size_t)B);
    int ok = w->eps && w->tb;
    if (ok && noise) {
        w->n_rng = first_image < 0 ? 1 : B;
        w->rng = loco_malloc(sizeof *w->rng * (size_t)w->n_rng);
        w->z = loco_malloc(sizeof(float) * (size_t)w->n_rng * n);
        ok = w->rng && w->z;
        if (ok && first_image < 0) loco_rng_seed(w->rng, seed);
        else if (ok)
            for (int b = 0; b < B; b++)
                loco_rng_seed(&w->rng[b],
                              (seed ^ 0xD1B54A32D192ED03ull) * 0x9E3779B97F4A7C15ull + (uint64_t)(first_image + b));
    }
    if (!ok) {
        ddim_work_free(w);
        return loco_fail(LOCO_E_NOMEM, "DDIM: out of memory");
    }
    return LOCO_OK;
}

/* eta > 0 needs w's noise streams */
static loco_status ddim_step(loco_model *m, const loco_cond *cond, int B, float *x, ddim_work *w, float t_net, float a,
                             float an, float eta, int clip) {
    const size_t n = model_image_size(m);
    float *eps = w->eps, *tb = w->tb;
    for (int b = 0; b < B; b++) tb[b] = t_net;
    const pred_type pred = m->sched.pred;
    if (pred == PRED_EPSILON && !(a > 0))
        return loco_fail(LOCO_E_UNSUPPORTED,
                         "DDIM: alphas_cumprod is 0 at timestep %g (zero terminal SNR) and an epsilon-prediction model "
                         "cannot give x0 there",
                         (double)t_net);
    loco_status s = model_predict(m, B, x, tb, cond, eps); /* the network's y, turned into eps below */
    if (s) return s;
    /* float32 arithmetic in the reference's order: near t = T, 1/sqrt(a_t) is
     * ~160 and the result depends on the rounding of each step */
    const float sa = sqrtf(a), s1 = sqrtf(1.0f - a), cx = sqrtf(an);
    float sigma = 0.0f;
    if (eta > 0) sigma = eta * sqrtf((1.0f - an) / (1.0f - a)) * sqrtf(fmaxf(0.0f, 1.0f - a / an));
    const float ce = sqrtf(fmaxf(0.0f, 1.0f - an - sigma * sigma));
    /* a stochastic step draws one noise image from each stream */
    const float *z = NULL;
    const int n_rng = w->n_rng;
    if (sigma > 0) {
        if (!w->rng) return loco_fail(LOCO_E_INVALID_ARGUMENT, "DDIM: a stochastic step without noise streams");
        for (size_t i = 0; i < (size_t)n_rng * n; i++) w->z[i] = (float)loco_rng_normal(&w->rng[i / n]);
        z = w->z;
    }
    for (size_t i = 0; i < n * (size_t)B; i++) {
        /* x0 and eps straight from the prediction at the step's start
         * alpha a (diffusers' DDIMScheduler and DDIMInverseScheduler): for
         * v models at a = 0 (zero terminal SNR) x0 = -v and eps = x, with
         * no division; epsilon models give eps = y and x0 as before */
        const float e = param_out(pred, LOCO_OUT_EPS, sa, s1, x[i], eps[i]);
        float x0 = param_out(pred, LOCO_OUT_X0, sa, s1, x[i], eps[i]);
        if (clip) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;
        float v = cx * x0 + ce * e;
        if (z) v += sigma * z[n_rng > 1 ? i : i % n];
        x[i] = v;
    }
    return LOCO_OK;
}

loco_status loco_ddim_invert(loco_model *m, int B, float *x, const float *grid, int from, int to,
                             loco_progress_fn progress, void *user) {
    return loco_ddim_invert_cond(m, NULL, B, x, grid, from, to, progress, user);
}

loco_status loco_ddim_invert_cond(loco_model *m, const loco_cond *cond, int B, float *x, const float *grid, int from,
                                  int to, loco_progress_fn progress, void *user) {
    loco_status s = check_grid(m, grid, from, to);
    if (s) return s;
    if (!x || B < 1 || from < 0 || to <= from)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "inversion: need x, batch >= 1 and 0 <= from < to (got %d, %d)", from,
                         to);
    if (m->info.in_ch != m->info.out_ch)
        return loco_fail(LOCO_E_UNSUPPORTED, "DDIM needs in_channels == out_channels");
    ddim_work w;
    if ((s = ddim_work_new(m, B, 0, 0, -1, &w))) return s;
    for (int i = from; i < to && !s; i++) {
        float t_net = grid[i] > 0 ? grid[i] : 1e-6f; /* the authors' first step */
        s = ddim_step(m, cond, B, x, &w, t_net, schedule_abar(&m->sched, grid[i]), schedule_abar(&m->sched, grid[i + 1]),
                      0.0f, 0);
        if (!s) s = loco_progress_report(progress, user, "inversion", i - from + 1, to - from, NAN);
    }
    ddim_work_free(&w);
    return s;
}

static loco_status ddim_sample(loco_model *m, const loco_cond *cond, int B, float *x, const float *grid, int from,
                               int to, float boost_t, uint64_t seed, int first_image, int clip,
                               loco_progress_fn progress, void *user) {
    loco_status s = check_grid(m, grid, to, from);
    if (s) return s;
    if (!x || B < 1 || to < 0 || from <= to)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "sampling: need x, batch >= 1 and 0 <= to < from (got %d, %d)", from,
                         to);
    if (m->info.in_ch != m->info.out_ch)
        return loco_fail(LOCO_E_UNSUPPORTED, "DDIM needs in_channels == out_channels");
    ddim_work w;
    if ((s = ddim_work_new(m, B, 1, seed, first_image, &w))) return s;
    for (int i = from; i > to && !s; i--) {
        float eta = (boost_t > 0 && grid[i] <= boost_t) ? 1.0f : 0.0f;
        s = ddim_step(m, cond, B, x, &w, grid[i], schedule_abar(&m->sched, grid[i]),
                      schedule_abar(&m->sched, grid[i - 1]), eta, clip);
        if (!s) s = loco_progress_report(progress, user, "sampling", from - i + 1, from - to, NAN);
    }
    ddim_work_free(&w);
    return s;
}

typedef struct chunk_progress {
    loco_progress_fn fn;
    void *user;
    int base, total;
} chunk_progress;

static void chunk_cb(const char *phase, int done, int total, void *user) {
    (void)total;
    chunk_progress *c = user;
    c->fn(phase, c->base + done, c->total, c->user); /* a cancel here reaches the report that called chunk_cb */
}

loco_status loco_sample(loco_model *m, int n, int steps, float boost_t, uint64_t seed, int batch, int clip_x0,
                        float *x, loco_progress_fn progress, void *user) {
    return loco_sample_cond(m, NULL, n, steps, boost_t, seed, batch, clip_x0, x, progress, user);
}

loco_status loco_sample_cond(loco_model *m, const loco_cond *cond, int n, int steps, float boost_t, uint64_t seed,
                             int batch, int clip_x0, float *x, loco_progress_fn progress, void *user) {
    return loco_sample_ts(m, cond, LOCO_TIMESTEPS_AUTHORS, n, steps, boost_t, seed, batch, clip_x0, x, progress, user);
}

loco_status loco_ddim_sample(loco_model *m, int B, float *x, const float *grid, int from, int to, float boost_t,
                             uint64_t seed, loco_progress_fn progress, void *user) {
    return ddim_sample(m, NULL, B, x, grid, from, to, boost_t, seed, -1, 0, progress, user);
}

loco_status loco_ddim_sample_cond(loco_model *m, const loco_cond *cond, int B, float *x, const float *grid, int from,
                                  int to, float boost_t, uint64_t seed, loco_progress_fn progress, void *user) {
    return ddim_sample(m, cond, B, x, grid, from, to, boost_t, seed, -1, 0, progress, user);
}

/* ======================================================================== */
/* Timestep schedules: the authors' grid or diffusers' DDIMScheduler        */
/* ======================================================================== */

static const char *const ts_names[LOCO_TIMESTEPS_COUNT] = {"authors", "leading", "trailing"};

const char *loco_timesteps_name(loco_timesteps ts) {
    return (int)ts >= 0 && ts < LOCO_TIMESTEPS_COUNT ? ts_names[ts] : NULL;
}

loco_status loco_timesteps_parse(const char *name, loco_timesteps *ts) {
    if (!name || !ts) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_timesteps_parse: NULL argument");
    for (int i = 0; i < LOCO_TIMESTEPS_COUNT; i++)
        if (strcmp(name, ts_names[i]) == 0) {
            *ts = (loco_timesteps)i;
            return LOCO_OK;
        }
    return loco_fail(LOCO_E_INVALID_ARGUMENT, "timesteps '%.64s' must be authors, leading or trailing", name);
}

int loco_ddim_points(loco_timesteps ts, int steps) {
    if ((int)ts < 0 || ts >= LOCO_TIMESTEPS_COUNT) return 0;
    return ts == LOCO_TIMESTEPS_AUTHORS ? steps : steps + 1;
}

/* A schedule's points, ascending. Authors': t only (the steps look alphas
 * up at floor(t), as ever). Diffusers': ab[i] = alphas_cumprod[t[i]] and
 * lo[i] the alpha a step down from point i lands on, which is also the
 * alpha an inversion step up to point i starts from (diffusers' t - r,
 * which for trailing spacing with T % steps != 0 is not always the next
 * point down). One allocation, t owns it. */
typedef struct ddim_plan {
    loco_timesteps ts;
    int n;
    float *t, *ab, *lo;
} ddim_plan;

static void plan_free(ddim_plan *p) {
    free(p->t);
    memset(p, 0, sizeof *p);
}

static loco_status plan_make(const loco_model *m, loco_timesteps ts, int steps, ddim_plan *p) {
    memset(p, 0, sizeof *p);
    if (!m) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL model");
    const char *name = loco_timesteps_name(ts);
    if (!name) return loco_fail(LOCO_E_INVALID_ARGUMENT, "timesteps: unknown schedule %d", (int)ts);
    const schedule *sc = &m->sched;
    const int T = sc->T;
    if (ts != LOCO_TIMESTEPS_AUTHORS && (steps < 1 || steps > T))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "steps = %d must be in [1, %d] (the training timesteps) for %s timesteps",
                         steps, T, name);
    if (ts == LOCO_TIMESTEPS_AUTHORS && (steps < 2 || steps > T))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "steps = %d must be in [2, %d] (the training timesteps)", steps, T);
    const int n = loco_ddim_points(ts, steps);
    float *buf = malloc(sizeof(float) * 3 * (size_t)n);
    if (!buf) return loco_fail(LOCO_E_NOMEM, "timesteps: out of memory");
    p->ts = ts;
    p->n = n;
    p->t = buf;
    p->ab = buf + n;
    p->lo = buf + 2 * n;
    if (ts == LOCO_TIMESTEPS_AUTHORS) {
        loco_status s = loco_ddim_grid(steps, T, p->t);
        if (s) plan_free(p);
        return s;
    }
    const int r = T / steps;
    for (int k = 0; k < steps; k++) { /* k: ascending */
        long t;
        if (ts == LOCO_TIMESTEPS_LEADING) {
            t = (long)k * r + sc->steps_offset;
        } else {
            /* numpy.round(numpy.arange(T, 0, -T / steps)) - 1, reversed:
             * arange's values are start + i * delta, delta = (start + step) -
             * start; round half to even (rint) */
            const double ratio = (double)T / steps, delta = ((double)T - ratio) - (double)T;
            if ((int)ceil((0.0 - T) / -ratio) != steps) {
                plan_free(p);
                return loco_fail(LOCO_E_INVALID_ARGUMENT,
                                 "trailing timesteps: numpy's arange(%d, 0, -%d/%d) has %d entries, not %d (diffusers "
                                 "would step past timestep 0); choose another number of steps",
                                 T, T, steps, (int)ceil((0.0 - T) / -ratio), steps);
            }
            t = (long)rint((double)T + (double)(steps - 1 - k) * delta) - 1;
        }
        if (t < 0 || t > T - 1) {
            plan_free(p);
            return loco_fail(LOCO_E_INVALID_ARGUMENT,
                             "%s timesteps: %d steps with steps_offset %d reach timestep %ld, outside [0, %d]", name, steps,
                             sc->steps_offset, t, T - 1);
        }
        const long lo = t - r;
        p->t[k + 1] = (float)t;
        p->ab[k + 1] = sc->alphas_cumprod[t];
        p->lo[k + 1] = lo >= 0 ? sc->alphas_cumprod[lo] : sc->final_abar;
    }
    p->t[0] = p->t[1] - (float)r;
    p->ab[0] = p->lo[0] = p->lo[1];
    return LOCO_OK;
}

loco_status loco_ddim_timesteps(const loco_model *m, loco_timesteps ts, int steps, float *t) {
    if (!m || !t) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_ddim_timesteps: NULL argument");
    ddim_plan p;
    loco_status s = plan_make(m, ts, steps, &p);
    if (s) return s;
    memcpy(t, p.t, sizeof(float) * (size_t)p.n);
    plan_free(&p);
    return LOCO_OK;
}

static loco_status check_span(const loco_model *m, const ddim_plan *p, int B, const float *x, int lo, int hi,
                              const char *what) {
    if (!x || B < 1 || lo < 0 || hi <= lo || hi > p->n - 1)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: need x, batch >= 1 and points 0 <= %d < %d <= %d", what, lo, hi,
                         p->n - 1);
    if (m->info.in_ch != m->info.out_ch) return loco_fail(LOCO_E_UNSUPPORTED, "DDIM needs in_channels == out_channels");
    return LOCO_OK;
}

/* Sampling on a plan from point `from` down to `to`. */
static loco_status plan_sample(loco_model *m, const loco_cond *cond, const ddim_plan *p, int B, float *x, int from,
                               int to, float boost_t, uint64_t seed, int first_image, int clip,
                               loco_progress_fn progress, void *user) {
    if (p->ts == LOCO_TIMESTEPS_AUTHORS)
        return ddim_sample(m, cond, B, x, p->t, from, to, boost_t, seed, first_image, clip, progress, user);
    loco_status s = check_span(m, p, B, x, to, from, "sampling");
    if (s) return s;
    ddim_work w;
    if ((s = ddim_work_new(m, B, 1, seed, first_image, &w))) return s;
    for (int i = from; i > to && !s; i--) {
        float eta = (boost_t > 0 && p->t[i] <= boost_t) ? 1.0f : 0.0f;
        s = ddim_step(m, cond, B, x, &w, p->t[i], p->ab[i], p->lo[i], eta, clip);
        if (!s) s = loco_progress_report(progress, user, "sampling", from - i + 1, from - to, NAN);
    }
    ddim_work_free(&w);
    return s;
}

/* Inversion on a plan from point `from` up to `to`. */
static loco_status plan_invert(loco_model *m, const loco_cond *cond, const ddim_plan *p, int B, float *x, int from,
                               int to, loco_progress_fn progress, void *user) {
    if (p->ts == LOCO_TIMESTEPS_AUTHORS) return loco_ddim_invert_cond(m, cond, B, x, p->t, from, to, progress, user);
    loco_status s = check_span(m, p, B, x, from, to, "inversion");
    if (s) return s;
    ddim_work w;
    if ((s = ddim_work_new(m, B, 0, 0, -1, &w))) return s;
    for (int i = from + 1; i <= to && !s; i++) { /* DDIMInverseScheduler: eps at the target timestep */
        s = ddim_step(m, cond, B, x, &w, p->t[i], p->lo[i], p->ab[i], 0.0f, 0);
        if (!s) s = loco_progress_report(progress, user, "inversion", i - from, to - from, NAN);
    }
    ddim_work_free(&w);
    return s;
}

loco_status loco_ddim_sample_ts(loco_model *m, const loco_cond *cond, loco_timesteps ts, int steps, int B, float *x,
                                int from, int to, float boost_t, uint64_t seed, loco_progress_fn progress, void *user) {
    ddim_plan p;
    loco_status s = plan_make(m, ts, steps, &p);
    if (s) return s;
    s = plan_sample(m, cond, &p, B, x, from, to, boost_t, seed, -1, 0, progress, user);
    plan_free(&p);
    return s;
}

loco_status loco_ddim_invert_ts(loco_model *m, const loco_cond *cond, loco_timesteps ts, int steps, int B, float *x,
                                int from, int to, loco_progress_fn progress, void *user) {
    ddim_plan p;
    loco_status s = plan_make(m, ts, steps, &p);
    if (s) return s;
    s = plan_invert(m, cond, &p, B, x, from, to, progress, user);
    plan_free(&p);
    return s;
}

loco_status loco_sample_ts(loco_model *m, const loco_cond *cond, loco_timesteps ts, int n, int steps, float boost_t,
                           uint64_t seed, int batch, int clip_x0, float *x, loco_progress_fn progress, void *user) {
    if (!m || !x) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_sample: NULL argument");
    if (n < 1 || batch < 1)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "sampling: need count >= 1 and batch >= 1 (got %d, %d)", n, batch);
    if (!(boost_t >= 0 && boost_t < 1))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "boost_t = %g must be in [0, 1)", boost_t);
    const int T = m->sched.T;
    ddim_plan p;
    loco_status s = plan_make(m, ts, steps, &p);
    if (s) return s;
    const size_t per = model_image_size(m);
    for (int i = 0; i < n; i++) {
        loco_rng r;
        loco_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (uint64_t)i);
        for (size_t j = 0; j < per; j++) x[(size_t)i * per + j] = (float)loco_rng_normal(&r);
    }
    const int nb = (n + batch - 1) / batch, top = p.n - 1;
    for (int b = 0; b < nb && !s; b++) {
        const int i0 = b * batch, B = n - i0 < batch ? n - i0 : batch;
        chunk_progress cp = {progress, user, b * top, nb * top};
        s = plan_sample(m, cond, &p, B, x + (size_t)i0 * per, top, 0, boost_t * (float)(T - 1), seed, i0, clip_x0,
                        progress ? chunk_cb : NULL, &cp);
    }
    plan_free(&p);
    return s;
}

/* ======================================================================== */
/* Encode and decode on the chosen schedule                                 */
/* ======================================================================== */

void loco_edit_params_init(loco_edit_params *p) {
    memset(p, 0, sizeof *p);
    p->t_edit = MODEL_DEFAULT_T_EDIT;
    p->boost_t = MODEL_DEFAULT_BOOST_T;
    p->steps = 100;
    p->inv_steps = 100;
    p->invert_full = 1;
}

/* index into grid[0..n-1] nearest to target among 1..n-1 (sampling starts) */
static int nearest_start(const float *grid, int n, double target) {
    int best = n - 1;
    for (int i = n - 1; i >= 1; i--) /* ties go to the earlier sampling step */
        if (fabs(grid[i] - target) < fabs(grid[best] - target)) best = i;
    return best;
}

/* The sampling and inversion schedules of an edit. */
static loco_status edit_plans(const loco_model *m, const loco_edit_params *p, ddim_plan *g, ddim_plan *gi) {
    memset(g, 0, sizeof *g);
    memset(gi, 0, sizeof *gi);
    if (!m || !p) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    const int T = m->sched.T;
    if (!(p->t_edit > 0 && p->t_edit < 1)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "t_edit = %g must be in (0, 1)", p->t_edit);
    if (!(p->boost_t >= 0 && p->boost_t < 1)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "boost_t = %g must be in [0, 1)", p->boost_t);
    if (!loco_timesteps_name(p->timesteps))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "timesteps: unknown schedule %d", (int)p->timesteps);
    if (p->steps < 2 || p->steps > T || p->inv_steps < 2 || p->inv_steps > T)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "steps (%d) and inversion steps (%d) must be in [2, %d]", p->steps,
                         p->inv_steps, T);
    loco_status s = plan_make(m, p->timesteps, p->steps, g);
    if (!s && (s = plan_make(m, p->timesteps, p->inv_steps, gi))) plan_free(g);
    return s;
}

static void edit_plans_free(ddim_plan *g, ddim_plan *gi) {
    plan_free(g);
    plan_free(gi);
}

loco_status loco_edit_timestep(const loco_model *m, const loco_edit_params *p, float *t_value, int *grid_index) {
    ddim_plan g, gi;
    loco_status s = edit_plans(m, p, &g, &gi);
    if (s) return s;
    int e = nearest_start(g.t, g.n, (double)p->t_edit * m->sched.T);
    if (t_value) *t_value = g.t[e];
    if (grid_index) *grid_index = e;
    edit_plans_free(&g, &gi);
    return LOCO_OK;
}

loco_status loco_edit_encode(loco_model *m, const loco_edit_params *p, const float *x0, float *xt, int *nfe) {
    return loco_edit_encode_full(m, p, x0, NULL, xt, nfe);
}

loco_status loco_edit_encode_full(loco_model *m, const loco_edit_params *p, const float *x0, float *xT, float *xt,
                                  int *nfe) {
    ddim_plan gp, gip;
    loco_status s = edit_plans(m, p, &gp, &gip);
    if (s) return s;
    if (!x0 || !xt) {
        edit_plans_free(&gp, &gip);
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    }
    const size_t n = model_image_size(m);
    float *g = gp.t, *gi = gip.t;
    const int e = nearest_start(g, gp.n, (double)p->t_edit * m->sched.T);
    memcpy(xt, x0, sizeof(float) * n);
    int evals = 0;
    if (p->timesteps != LOCO_TIMESTEPS_AUTHORS) {
        /* diffusers': the whole inversion schedule, then down the sampling
         * one from its top; or up the sampling schedule to the edit point */
        if (p->invert_full) {
            s = plan_invert(m, p->cond, &gip, 1, xt, 0, gip.n - 1, p->progress, p->user);
            evals += gip.n - 1;
            if (!s && xT) memcpy(xT, xt, sizeof(float) * n);
            if (!s && e < gp.n - 1) {
                s = plan_sample(m, p->cond, &gp, 1, xt, gp.n - 1, e, 0, p->seed, -1, 0, p->progress, p->user);
                evals += gp.n - 1 - e;
            }
        } else {
            s = plan_invert(m, p->cond, &gp, 1, xt, 0, e, p->progress, p->user);
            evals += e;
            if (!s && xT) memcpy(xT, xt, sizeof(float) * n);
        }
    } else if (p->invert_full) {
        /* up the inversion grid, skipping its last step (as the authors do),
         * then treat the result as x at grid[n-1] and sample down to e */
        if (p->inv_steps > 2)
            s = loco_ddim_invert_cond(m, p->cond, 1, xt, gi, 0, p->inv_steps - 2, p->progress, p->user);
        evals += p->inv_steps - 2;
        if (!s && xT) memcpy(xT, xt, sizeof(float) * n);
        if (!s && e < p->steps - 1) {
            s = loco_ddim_sample_cond(m, p->cond, 1, xt, g, p->steps - 1, e, 0, p->seed, p->progress, p->user);
            evals += p->steps - 1 - e;
        }
    } else {
        /* up the inversion grid while below the edit timestep, then one last
         * step onto it exactly */
        int k = 0;
        while (k < p->inv_steps && gi[k] < g[e]) k++;
        gi[k] = g[e];
        s = loco_ddim_invert_cond(m, p->cond, 1, xt, gi, 0, k, p->progress, p->user);
        evals += k;
        if (!s && xT) memcpy(xT, xt, sizeof(float) * n);
    }
    if (!s) s = model_check_finite(xt, n, "inversion: x_t");
    if (nfe) *nfe = evals;
    edit_plans_free(&gp, &gip);
    return s;
}

loco_status loco_edit_decode(loco_model *m, const loco_edit_params *p, int B, float *x, int *nfe) {
    ddim_plan g, gi;
    loco_status s = edit_plans(m, p, &g, &gi);
    if (s) return s;
    const int e = nearest_start(g.t, g.n, (double)p->t_edit * m->sched.T);
    float boost = 0;
    if (p->boost_t > 0) boost = g.t[nearest_start(g.t, g.n, (double)p->boost_t * m->sched.T)];
    s = plan_sample(m, p->cond, &g, B, x, e, 0, boost, p->seed, -1, 0, p->progress, p->user);
    if (!s) {
        s = model_check_finite(x, (size_t)B * model_image_size(m), "denoising: the edited images");
    }
    if (nfe) *nfe = e * B;
    edit_plans_free(&g, &gi);
    return s;
}

/* ======================================================================== */
/* Subspace iteration                                                       */
/* ======================================================================== */

void loco_subspace_params_init(loco_subspace_params *p) {
    memset(p, 0, sizeof *p);
    p->rank = 5;
    p->min_iter = 10;
    p->max_iter = 50;
    p->tol = 1e-4;
    p->of = LOCO_OUT_X0;
    p->phase = "subspace";
}

void loco_subspace_free(loco_subspace *s) {
    if (!s) return;
    free(s->vT);
    free(s->s);
    free(s->u);
    free(s->sin_angle);
    free(s->s_hist);
    memset(s, 0, sizeof *s);
}

void loco_canonical_sign(int r, size_t n, float *X) {
    for (int i = 0; i < r; i++) {
        float *x = X + (size_t)i * n;
        size_t am = 0;
        for (size_t e = 1; e < n; e++)
            if (fabsf(x[e]) > fabsf(x[am])) am = e;
        if (x[am] < 0)
            for (size_t e = 0; e < n; e++) x[e] = -x[e];
    }
}

/* sin of the largest principal angle between the row spaces of orthonormal
 * A and B [r, n]: the 2-norm of B - (B A^T) A. */
static double sin_max_angle(int r, size_t n, const float *A, const float *B, double *work) {
    double *M = work, *G = M + r * r, *w = G + r * r, *V = w + r;
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double d = 0;
            for (size_t e = 0; e < n; e++) d += (double)B[i * n + e] * A[j * n + e];
            M[i * r + j] = d;
        }
    /* G = R R^T with R = B - M A; R R^T = I - M M^T for orthonormal rows, but
     * form it from R directly for accuracy at small angles */
    double *R = malloc(sizeof(double) * (size_t)r * n);
    if (!R) return NAN;
    for (int i = 0; i < r; i++)
        for (size_t e = 0; e < n; e++) {
            double v = B[i * n + e];
            for (int j = 0; j < r; j++) v -= M[i * r + j] * A[j * n + e];
            R[i * n + e] = v;
        }
    for (int i = 0; i < r; i++)
        for (int j = i; j < r; j++) {
            double d = 0;
            for (size_t e = 0; e < n; e++) d += R[i * n + e] * R[j * n + e];
            G[i * r + j] = G[j * r + i] = d;
        }
    free(R);
    linalg_sym_eig(r, G, w, V);
    return sqrt(fmax(0.0, w[0]));
}

/* Removes from the k rows of X [k, n] their components along the c
 * orthonormal rows of C [c, n] (twice, for orthogonality to float
 * precision). */
static void project_out_rows(int k, size_t n, float *X, int c, const float *C) {
    for (int i = 0; i < k; i++) {
        float *x = X + (size_t)i * n;
        for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < c; j++) {
                const float *b = C + (size_t)j * n;
                double d = 0;
                for (size_t e = 0; e < n; e++) d += (double)x[e] * b[e];
                for (size_t e = 0; e < n; e++) x[e] = (float)(x[e] - d * b[e]);
            }
    }
}

/* Orthonormalises the k rows of X; a dependent row among the first r is a
 * failure (-1), one among the oversampling rows r..k-1 (a direction the
 * Jacobian maps to zero) is replaced by a random vector. */
static int orthonormalize_block(int r, int k, size_t n, float *X, loco_rng *rng) {
    for (int attempt = 0; attempt < 4; attempt++) {
        if (linalg_orthonormalize_rows(k, n, X) == 0) return 0;
        for (int i = 0; i < k; i++) {
            float *x = X + (size_t)i * n;
            double nn = 0;
            for (size_t e = 0; e < n; e++) nn += (double)x[e] * x[e];
            if (nn > 0.5) continue;
            if (i < r) return -1;
            for (size_t e = 0; e < n; e++) x[e] = (float)loco_rng_normal(rng);
        }
    }
    return -1;
}

loco_status loco_subspace_iteration(loco_lin *lin, const uint8_t *mask, const loco_subspace_params *p,
                                    loco_subspace *out) {
    if (!lin || !p || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_subspace_iteration: NULL argument");
    memset(out, 0, sizeof *out);
    const int r = p->rank;
    const size_t n = loco_lin_input_size(lin);
    /* a mask over the output, or over the decoded image (LOCO_OUT_IMAGE) */
    const size_t l = p->of == LOCO_OUT_IMAGE ? loco_lin_image_mask_count(lin, mask) : loco_lin_mask_count(lin, mask);
    if (l == 0) return loco_fail(LOCO_E_INVALID_ARGUMENT, "subspace iteration: the mask is empty");
    if (r < 1 || (size_t)r > n || (size_t)r > l)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "subspace iteration: rank %d must be in [1, %zu] (mask entries)", r,
                         l < n ? l : n);
    if (p->max_iter < 1 || p->min_iter < 0 || p->min_iter > p->max_iter || p->max_iter > 100000)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "subspace iteration: need 0 <= min_iter <= max_iter (got %d, %d)",
                         p->min_iter, p->max_iter);
    if (!(p->tol >= 0)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "subspace iteration: tol must be >= 0");
    if (p->oversample < 0 || p->oversample > 1000)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "subspace iteration: oversample %d must be in [0, 1000]",
                         p->oversample);
    const int cr = p->constrain ? p->constrain_rank : 0;
    if (cr < 0 || (cr > 0 && !p->constrain) || (size_t)cr + (size_t)r > n)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "subspace iteration: constraint rank %d (with rank %d) must be in [0, %zu] with its rows given",
                         p->constrain_rank, r, n - (size_t)r);
    for (size_t i = 0; i < (size_t)cr * n; i++)
        if (!isfinite(p->constrain[i]))
            return loco_fail(LOCO_E_NUMERIC, "subspace iteration: constraint element %zu is not finite", i);
    /* the iterated block: r wanted vectors and the oversampling ones (as many
     * as the mask and the input allow) */
    size_t kk = (size_t)r + (size_t)p->oversample;
    if (kk > l) kk = l;
    if (kk > n - (size_t)cr) kk = n - (size_t)cr;
    const int k = (int)kk;
    float *V = malloc(sizeof(float) * k * n), *Vn = malloc(sizeof(float) * k * n);
    float *A = malloc(sizeof(float) * k * l), *W = malloc(sizeof(float) * k * n);
    double *S = malloc(sizeof(double) * k), *P = malloc(sizeof(double) * k * k);
    double *work = malloc(sizeof(double) * (3 * r * r + r));
    out->sin_angle = malloc(sizeof(double) * p->max_iter);
    out->s_hist = malloc(sizeof(float) * r * p->max_iter);
    out->s = malloc(sizeof(float) * r);
    out->u = malloc(sizeof(float) * r * l);
    loco_status s = LOCO_OK;
    if (!V || !Vn || !A || !W || !S || !P || !work || !out->sin_angle || !out->s_hist || !out->s || !out->u) {
        s = loco_fail(LOCO_E_NOMEM, "subspace iteration: out of memory");
        goto done;
    }
    out->rank = r;
    out->n = n;
    out->l = l;
    loco_rng rng;
    loco_rng_seed(&rng, p->seed);
    {
        size_t i0 = 0;
        if (p->init) {
            memcpy(V, p->init, sizeof(float) * r * n);
            for (size_t i = 0; i < (size_t)r * n; i++)
                if (!isfinite(V[i])) {
                    s = loco_fail(LOCO_E_NUMERIC, "subspace iteration: initial basis element %zu is not finite", i);
                    goto done;
                }
            i0 = (size_t)r * n;
        }
        /* a random start (or the oversampling rows after a given one) */
        for (size_t i = i0; i < (size_t)k * n; i++) V[i] = (float)loco_rng_normal(&rng);
    }
    if (cr) project_out_rows(k, n, V, cr, p->constrain);
    if (orthonormalize_block(r, k, n, V, &rng)) {
        s = loco_fail(LOCO_E_NUMERIC, "subspace iteration: the initial basis has dependent rows%s",
                      cr ? " (after removing the constraint rows)" : "");
        goto done;
    }
    for (int it = 0; it < p->max_iter; it++) {
        double t0 = loco_now();
        if ((s = loco_lin_jvp(lin, p->of, mask, k, V, A))) goto done;
        double t1 = loco_now();
        if ((s = loco_lin_vjp(lin, p->of, mask, k, A, W))) goto done;
        double t2 = loco_now();
        if (cr) project_out_rows(k, n, W, cr, p->constrain); /* W P: the operator is J P */
        /* Rayleigh-Ritz: the SVD of W = (J V^T)^T J rotates the block to the
         * Ritz vectors of J^T J, sorted by Ritz value */
        if (linalg_svd_rows(k, n, W, S, Vn, P)) {
            s = loco_fail(LOCO_E_NUMERIC, "subspace iteration: SVD failed at iteration %d", it);
            goto done;
        }
        if (!(S[0] > 0)) {
            s = loco_fail(LOCO_E_NUMERIC, "subspace iteration: the masked Jacobian is zero");
            goto done;
        }
        int bad = orthonormalize_block(r, k, n, Vn, &rng);
        if (!bad && cr) { /* random refills and rounding: back into the complement */
            project_out_rows(k, n, Vn, cr, p->constrain);
            bad = orthonormalize_block(r, k, n, Vn, &rng);
        }
        if (bad) {
            s = loco_fail(LOCO_E_NUMERIC, "subspace iteration: rank deficient at iteration %d (rank %d too large?)", it,
                          r);
            goto done;
        }
        double sa = sin_max_angle(r, n, V, Vn, work);
        double t3 = loco_now();
        out->seconds_jvp += t1 - t0;
        out->seconds_vjp += t2 - t1;
        out->seconds_svd += t3 - t2;
        out->jvp_vectors += k;
        out->vjp_vectors += k;
        out->sin_angle[it] = sa;
        for (int i = 0; i < r; i++) out->s_hist[it * r + i] = (float)sqrt(S[i]);
        /* left singular vectors from this step: U = A P S^-1/2 */
        for (int i = 0; i < r; i++) {
            float *ui = out->u + (size_t)i * l;
            double inv = 1.0 / sqrt(S[i]);
            for (size_t e = 0; e < l; e++) {
                double v = 0;
                for (int j = 0; j < k; j++) v += (double)A[(size_t)j * l + e] * P[j * k + i];
                ui[e] = (float)(v * inv);
            }
            out->s[i] = (float)sqrt(S[i]);
        }
        memcpy(V, Vn, sizeof(float) * k * n);
        out->iters = it + 1;
        if ((s = loco_progress_report(p->progress, p->user, p->phase ? p->phase : "subspace", it + 1, p->max_iter, sa)))
            goto done;
        if (it + 1 >= p->min_iter && sa < p->tol) {
            out->converged = 1;
            break;
        }
    }
    if (k > r) { /* keep the wanted r rows */
        float *Vr = realloc(V, sizeof(float) * r * n);
        if (Vr) V = Vr;
    }
    out->vT = V;
    V = NULL;
done:
    free(V);
    free(Vn);
    free(A);
    free(W);
    free(S);
    free(P);
    free(work);
    if (s) loco_subspace_free(out);
    return s;
}

/* ======================================================================== */
/* Null-space projection                                                    */
/* ======================================================================== */

loco_status loco_project_directions(int r, size_t n, float *dirs, int r_null, const float *null_basis) {
    if (!dirs || r < 1 || (r_null > 0 && !null_basis) || r_null < 0)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_project_directions: bad arguments");
    for (int i = 0; i < r; i++) {
        float *v = dirs + (size_t)i * n;
        double n0 = 0;
        for (size_t e = 0; e < n; e++) n0 += (double)v[e] * v[e];
        project_out_rows(1, n, v, r_null, null_basis);
        double nn = 0;
        for (size_t e = 0; e < n; e++) nn += (double)v[e] * v[e];
        if (!(nn > 1e-12 * n0))
            return loco_fail(LOCO_E_NUMERIC,
                             "direction %d lies inside the null space (norm %.2e after projection): lower --null-rank",
                             i, sqrt(nn));
        double inv = 1.0 / sqrt(nn);
        for (size_t e = 0; e < n; e++) v[e] = (float)(v[e] * inv);
    }
    loco_canonical_sign(r, n, dirs);
    return LOCO_OK;
}
