/* elementwise.c - elementwise and reshaping ops: SiLU, (a + b) / scale,
 * channel concatenation, nearest 2x upsampling. Plain loops threaded with
 * OpenMP; the derivatives ACCUMULATE (+=) into their outputs, as everywhere
 * in ops.h.
 * The linear ops' J V are their forwards on the tangents: add_scale_fwd,
 * concat_fwd, upsample2x_fwd. */
#include "ops.h"
#include "ops_math.h"

/* ======================================================================== */
/* SiLU                                                                     */
/* ======================================================================== */

void silu_fwd(size_t n, const float *x, float *y) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = silu1(x[i]);
}

void silu_jvp(int B, size_t n, const float *x, const float *dx, float *dy) {
    for (int b = 0; b < B; b++) {
        const float *d = dx + (size_t)b * n;
        float *o = dy + (size_t)b * n;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) o[i] = dsilu1(x[i]) * d[i];
    }
}

void silu_vjp(int B, size_t n, const float *x, const float *dy, float *dx) {
    for (int b = 0; b < B; b++) {
        const float *d = dy + (size_t)b * n;
        float *o = dx + (size_t)b * n;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) o[i] += dsilu1(x[i]) * d[i];
    }
}

/* ======================================================================== */
/* Sum, concatenation                                                       */
/* ======================================================================== */

void add_scale_fwd(size_t n, const float *a, const float *b, float scale, float *y) {
    if (scale == 1.0f) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    } else {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) y[i] = (a[i] + b[i]) / scale;
    }
}

void concat_fwd(int B, int ca, int cb, int hw, const float *a, const float *b, float *y) {
    for (int i = 0; i < B; i++) {
        float *yb = y + (size_t)i * (ca + cb) * hw;
        memcpy(yb, a + (size_t)i * ca * hw, sizeof(float) * (size_t)ca * hw);
        memcpy(yb + (size_t)ca * hw, b + (size_t)i * cb * hw, sizeof(float) * (size_t)cb * hw);
    }
}

/* ======================================================================== */
/* Nearest 2x upsampling                                                    */
/* ======================================================================== */

void upsample2x_fwd(int B, int C, int h, int w, const float *x, float *y) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const float *xc = x + (size_t)bc * h * w;
        float *yc = y + (size_t)bc * 4 * h * w;
        for (int i = 0; i < h; i++) {
            float *r0 = yc + (size_t)(2 * i) * 2 * w;
            for (int j = 0; j < w; j++) r0[2 * j] = r0[2 * j + 1] = xc[(size_t)i * w + j];
            memcpy(r0 + 2 * w, r0, sizeof(float) * 2 * (size_t)w);
        }
    }
}

void upsample2x_vjp(int B, int C, int h, int w, const float *dy, float *dx) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const float *yc = dy + (size_t)bc * 4 * h * w;
        float *xc = dx + (size_t)bc * h * w;
        for (int i = 0; i < h; i++) {
            const float *r0 = yc + (size_t)(2 * i) * 2 * w, *r1 = r0 + 2 * w;
            for (int j = 0; j < w; j++)
                xc[(size_t)i * w + j] += r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1];
        }
    }
}
