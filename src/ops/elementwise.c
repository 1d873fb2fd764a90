/* elementwise.c - elementwise and reshaping ops: SiLU, (a + b) / scale,
 * channel concatenation, nearest 2x upsampling, 2x2 average pooling and
 * FiLM (ADM's scale-shift norm). Plain loops threaded with OpenMP; the
 * derivatives ACCUMULATE (+=) into their outputs, as everywhere in ops.h.
 * The linear ops' J V are their forwards on the tangents: add_scale_fwd,
 * concat_fwd, upsample2x_fwd, avgpool2x2_fwd. */
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

/* ======================================================================== */
/* 2x2 average pooling, stride 2                                            */
/* ======================================================================== */

/* Summed in the order of torch's avg_pool2d on CPU, ((x00 + x01) + x10) + x11,
 * then divided by 4 (exact: * 0.25f is the same). */
void avgpool2x2_fwd(int B, int C, int h, int w, const float *x, float *y) {
    const int ho = h / 2, wo = w / 2;
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const float *xc = x + (size_t)bc * h * w;
        float *yc = y + (size_t)bc * ho * wo;
        for (int i = 0; i < ho; i++) {
            const float *r0 = xc + (size_t)(2 * i) * w, *r1 = r0 + w;
            float *yr = yc + (size_t)i * wo;
            for (int j = 0; j < wo; j++) {
                float s = r0[2 * j] + r0[2 * j + 1];
                s += r1[2 * j];
                s += r1[2 * j + 1];
                yr[j] = s * 0.25f;
            }
        }
    }
}

void avgpool2x2_vjp(int B, int C, int h, int w, const float *dy, float *dx) {
    const int ho = h / 2, wo = w / 2;
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const float *yc = dy + (size_t)bc * ho * wo;
        float *xc = dx + (size_t)bc * h * w;
        for (int i = 0; i < ho; i++) {
            float *r0 = xc + (size_t)(2 * i) * w, *r1 = r0 + w;
            const float *yr = yc + (size_t)i * wo;
            for (int j = 0; j < wo; j++) {
                const float g = yr[j] * 0.25f;
                r0[2 * j] += g;
                r0[2 * j + 1] += g;
                r1[2 * j] += g;
                r1[2 * j + 1] += g;
            }
        }
    }
}

/* ======================================================================== */
/* FiLM: y = silu?(x * (1 + scale) + shift)                                 */
/* ======================================================================== */

/* With u = x (1 + scale) + shift, computed as written (as ADM's
 * out_norm(h) * (1 + scale) + shift), and y = silu(u) by silu1 (silu_fwd's
 * rounding), or y = u:
 *   jvp: dy = silu'(u) * ((1 + scale) dx)
 *   vjp: dx += (1 + scale) * (silu'(u) dy)
 *   bwd: the vjp with per-image records, plus dscale += sum e x and
 *        dshift += sum e over the pixels, e = silu'(u) dy.
 * So film with silu equals film without it followed by silu_fwd, and its
 * derivatives silu_jvp / silu_vjp composed with those of film without, bit
 * for bit. */

void film_fwd(int B, int C, int hw, const float *x, const float *ss, int silu, float *y) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const int b = bc / C, c = bc % C;
        const float s = 1.0f + ss[(size_t)b * 2 * C + c], sh = ss[(size_t)b * 2 * C + C + c];
        const float *xc = x + (size_t)bc * hw;
        float *yc = y + (size_t)bc * hw;
        if (silu) {
            for (int i = 0; i < hw; i++) yc[i] = silu1(xc[i] * s + sh);
        } else {
            for (int i = 0; i < hw; i++) yc[i] = xc[i] * s + sh;
        }
    }
}

/* silu'(u) of a run of one channel's pixels, computed once for the B tangents */
#define FILM_RUN 256

void film_jvp(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dx, float *dy) {
    const size_t n = (size_t)C * hw;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float s = 1.0f + ss[c], sh = ss[C + c];
        const float *xc = x + (size_t)c * hw;
        float ds[FILM_RUN];
        for (int i0 = 0; i0 < hw; i0 += FILM_RUN) {
            const int m = hw - i0 < FILM_RUN ? hw - i0 : FILM_RUN;
            if (silu)
                for (int i = 0; i < m; i++) ds[i] = dsilu1(xc[i0 + i] * s + sh);
            for (int b = 0; b < B; b++) {
                const float *d = dx + (size_t)b * n + (size_t)c * hw + i0;
                float *o = dy + (size_t)b * n + (size_t)c * hw + i0;
                if (silu) {
                    for (int i = 0; i < m; i++) o[i] = ds[i] * (s * d[i]);
                } else {
                    for (int i = 0; i < m; i++) o[i] = s * d[i];
                }
            }
        }
    }
}

void film_vjp(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dy, float *dx) {
    const size_t n = (size_t)C * hw;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float s = 1.0f + ss[c], sh = ss[C + c];
        const float *xc = x + (size_t)c * hw;
        float ds[FILM_RUN];
        for (int i0 = 0; i0 < hw; i0 += FILM_RUN) {
            const int m = hw - i0 < FILM_RUN ? hw - i0 : FILM_RUN;
            if (silu)
                for (int i = 0; i < m; i++) ds[i] = dsilu1(xc[i0 + i] * s + sh);
            for (int b = 0; b < B; b++) {
                const float *d = dy + (size_t)b * n + (size_t)c * hw + i0;
                float *o = dx + (size_t)b * n + (size_t)c * hw + i0;
                if (silu) {
                    for (int i = 0; i < m; i++) o[i] += s * (ds[i] * d[i]);
                } else {
                    for (int i = 0; i < m; i++) o[i] += s * d[i];
                }
            }
        }
    }
}

void film_bwd(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dy, float *dx,
              float *dss) {
    /* one (image, channel) per iteration: it owns dss[b, c], dss[b, C + c] */
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const int b = bc / C, c = bc % C;
        const float s = 1.0f + ss[(size_t)b * 2 * C + c], sh = ss[(size_t)b * 2 * C + C + c];
        const float *xc = x + (size_t)bc * hw, *dyc = dy + (size_t)bc * hw;
        float *dxc = dx ? dx + (size_t)bc * hw : NULL;
        double sx = 0, s1 = 0; /* sum e x, sum e */
        for (int i = 0; i < hw; i++) {
            const float e = silu ? dsilu1(xc[i] * s + sh) * dyc[i] : dyc[i];
            if (dxc) dxc[i] += s * e;
            sx += (double)e * xc[i];
            s1 += e;
        }
        if (dss) {
            dss[(size_t)b * 2 * C + c] += (float)sx;
            dss[(size_t)b * 2 * C + C + c] += (float)s1;
        }
    }
}
