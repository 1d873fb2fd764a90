/* activation.c - the transformers' activations and diffusers' GEGLU:
 *   GELU (exact, as torch F.gelu): gelu(x) = x Phi(x) = x (1 + erf(x/sqrt 2)) / 2
 *     (computed as x erfc(-x/sqrt 2) / 2),
 *     gelu'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi)
 *   QuickGELU (CLIP): x s(1.702 x), s the sigmoid,
 *     derivative s + 1.702 x s (1 - s)
 *   GEGLU: x = [h; g] along channels, y = h gelu(g),
 *     jvp: dy = dh gelu(g) + h gelu'(g) dg
 *     vjp: dh += dy gelu(g), dg += dy h gelu'(g)
 * Elementwise loops threaded with OpenMP (no reductions: results do not
 * depend on the thread count). The derivatives ACCUMULATE (+=) in _vjp. */
#include "ops.h"
#include "ops_math.h"

#define QUICK_GELU_A 1.702f

/* Phi(x) = erfc(-x / sqrt 2) / 2: accurate in the lower tail too, where
 * torch's (1 + erf(x / sqrt 2)) / 2 loses digits to cancellation (the two
 * differ by a few 1e-8 absolute there, far below gelu's own size) */
static inline float phi_cdf(float x) { return 0.5f * erfcf(-x * (float)M_SQRT1_2); }

static inline float gelu1(float x) { return x * phi_cdf(x); }

static inline float dgelu1(float x) {
    const float cdf = phi_cdf(x);
    const float pdf = fast_expf(-0.5f * x * x) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2); /* 1 / sqrt(2 pi) */
    return cdf + x * pdf;
}

static inline float quick_gelu1(float x) { return x / (1.0f + fast_expf(-QUICK_GELU_A * x)); }

static inline float dquick_gelu1(float x) {
    const float s = 1.0f / (1.0f + fast_expf(-QUICK_GELU_A * x));
    return s * (1.0f + QUICK_GELU_A * x * (1.0f - s));
}

/* ======================================================================== */
/* GELU, QuickGELU                                                          */
/* ======================================================================== */

void act_fwd(act_kind k, size_t n, const float *x, float *y) {
    if (k == ACT_QUICK_GELU) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) y[i] = quick_gelu1(x[i]);
    } else {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) y[i] = gelu1(x[i]);
    }
}

void act_jvp(act_kind k, int B, size_t n, const float *x, const float *dx, float *dy) {
    for (int b = 0; b < B; b++) {
        const float *d = dx + (size_t)b * n;
        float *o = dy + (size_t)b * n;
        if (k == ACT_QUICK_GELU) {
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++) o[i] = dquick_gelu1(x[i]) * d[i];
        } else {
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++) o[i] = dgelu1(x[i]) * d[i];
        }
    }
}

void act_vjp(act_kind k, int B, size_t n, const float *x, const float *dy, float *dx) {
    for (int b = 0; b < B; b++) {
        const float *d = dy + (size_t)b * n;
        float *o = dx + (size_t)b * n;
        if (k == ACT_QUICK_GELU) {
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++) o[i] += dquick_gelu1(x[i]) * d[i];
        } else {
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++) o[i] += dgelu1(x[i]) * d[i];
        }
    }
}

/* ======================================================================== */
/* GEGLU                                                                    */
/* ======================================================================== */

void geglu_fwd(int B, int F, int T, const float *x, float *y) {
    const size_t n = (size_t)F * T;
    for (int b = 0; b < B; b++) {
        const float *h = x + 2 * n * b, *g = h + n;
        float *yb = y + n * b;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) yb[i] = h[i] * gelu1(g[i]);
    }
}

void geglu_jvp(int B, int F, int T, const float *x, const float *dx, float *dy) {
    const size_t n = (size_t)F * T;
    const float *h = x, *g = x + n;
    for (int b = 0; b < B; b++) {
        const float *dh = dx + 2 * n * b, *dg = dh + n;
        float *o = dy + n * b;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) o[i] = dh[i] * gelu1(g[i]) + h[i] * dgelu1(g[i]) * dg[i];
    }
}

void geglu_vjp(int B, int F, int T, const float *x, const float *dy, float *dx) {
    const size_t n = (size_t)F * T;
    const float *h = x, *g = x + n;
    for (int b = 0; b < B; b++) {
        const float *d = dy + n * b;
        float *dh = dx + 2 * n * b, *dg = dh + n;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            dh[i] += d[i] * gelu1(g[i]);
            dg[i] += d[i] * h[i] * dgelu1(g[i]);
        }
    }
}
