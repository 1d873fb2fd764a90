/* layernorm.c - LayerNorm over the channels of each position, as
 * torch.nn.LayerNorm applied to [B, T, C] (biased variance), on
 * channels-first tensors [B, C, T]: for each (b, t), over the C channels
 *   x_hat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps),
 *   y = gamma x_hat + beta.
 *   jvp: dy = gamma rstd (dx - mean(dx) - x_hat mean(dx x_hat))
 *   vjp: g = gamma dy, dx += rstd (g - mean(g) - x_hat mean(g x_hat))
 * The channels of one position are T floats apart, so the statistics are
 * gathered a row at a time over a tile of LN_TILE positions (contiguous,
 * vectorisable), in double; the forward subtracts the mean as two floats
 * (its float rounding and the rest), so x - mean loses nothing to it. Each
 * tile is computed by one thread, so the results do not depend on the
 * thread count, nor an image's on the batch. */
#include "ops.h"

#include <math.h>

#define LN_TILE 64

/* ======================================================================== */
/* Forward                                                                  */
/* ======================================================================== */

void layer_norm_fwd(int B, int C, int T, float eps, const float *gamma, const float *beta, const float *x, float *y,
                    float *mean, float *rstd) {
    const int tiles = (T + LN_TILE - 1) / LN_TILE;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bt = 0; bt < B * tiles; bt++) {
        const int b = bt / tiles, t0 = bt % tiles * LN_TILE, n = T - t0 < LN_TILE ? T - t0 : LN_TILE;
        const float *xb = x + (size_t)b * C * T + t0;
        float *yb = y + (size_t)b * C * T + t0;
        double s[LN_TILE], m[LN_TILE];
        float mf[LN_TILE], ml[LN_TILE], rf[LN_TILE];
        /* two passes (mean, then centred squares) for accuracy */
        for (int i = 0; i < n; i++) s[i] = 0;
        for (int c = 0; c < C; c++) {
            const float *xc = xb + (size_t)c * T;
            for (int i = 0; i < n; i++) s[i] += xc[i];
        }
        for (int i = 0; i < n; i++) {
            m[i] = s[i] / C;
            s[i] = 0;
        }
        for (int c = 0; c < C; c++) {
            const float *xc = xb + (size_t)c * T;
            for (int i = 0; i < n; i++) {
                const double d = xc[i] - m[i];
                s[i] += d * d;
            }
        }
        for (int i = 0; i < n; i++) {
            mf[i] = (float)m[i];
            ml[i] = (float)(m[i] - mf[i]); /* the mean as mf + ml: x - mean without mf's rounding */
            rf[i] = (float)(1.0 / sqrt(s[i] / C + (double)eps));
        }
        if (mean)
            for (int i = 0; i < n; i++) mean[(size_t)b * T + t0 + i] = mf[i];
        if (rstd)
            for (int i = 0; i < n; i++) rstd[(size_t)b * T + t0 + i] = rf[i];
        for (int c = 0; c < C; c++) {
            const float *xc = xb + (size_t)c * T;
            float *yc = yb + (size_t)c * T;
            const float ga = gamma[c], be = beta[c];
            for (int i = 0; i < n; i++) yc[i] = (xc[i] - mf[i] - ml[i]) * rf[i] * ga + be;
        }
    }
}

/* ======================================================================== */
/* Linearisation: J V and V J P against one recorded image                  */
/* ======================================================================== */

/* Over a tile of n positions starting at t0: per position, the means over
 * the channels of g and of g x_hat, where g = gamma d (vjp) or d (jvp). */
static void ln_tile_means(int C, int T, int t0, int n, const float *gamma, const float *x, const float *mean,
                          const float *rstd, const float *d, float *m1, float *m2) {
    double s1[LN_TILE], s2[LN_TILE];
    for (int i = 0; i < n; i++) s1[i] = s2[i] = 0;
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * T + t0, *dc = d + (size_t)c * T + t0;
        const float ga = gamma ? gamma[c] : 1.0f;
        for (int i = 0; i < n; i++) {
            const float xh = (xc[i] - mean[t0 + i]) * rstd[t0 + i], g = ga * dc[i];
            s1[i] += g;
            s2[i] += (double)g * xh;
        }
    }
    for (int i = 0; i < n; i++) {
        m1[i] = (float)(s1[i] / C);
        m2[i] = (float)(s2[i] / C);
    }
}

void layer_norm_jvp(int B, int C, int T, const float *gamma, const float *x, const float *mean, const float *rstd,
                    const float *dx, float *dy) {
    const int tiles = (T + LN_TILE - 1) / LN_TILE;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bt = 0; bt < B * tiles; bt++) {
        const int b = bt / tiles, t0 = bt % tiles * LN_TILE, n = T - t0 < LN_TILE ? T - t0 : LN_TILE;
        const float *dxb = dx + (size_t)b * C * T;
        float *dyb = dy + (size_t)b * C * T;
        float m1[LN_TILE], m2[LN_TILE];
        ln_tile_means(C, T, t0, n, NULL, x, mean, rstd, dxb, m1, m2);
        for (int c = 0; c < C; c++) {
            const size_t o = (size_t)c * T + t0;
            const float ga = gamma[c];
            for (int i = 0; i < n; i++) {
                const float r = rstd[t0 + i], xh = (x[o + i] - mean[t0 + i]) * r;
                dyb[o + i] = ga * r * (dxb[o + i] - m1[i] - xh * m2[i]);
            }
        }
    }
}

void layer_norm_vjp(int B, int C, int T, const float *gamma, const float *x, const float *mean, const float *rstd,
                    const float *dy, float *dx) {
    const int tiles = (T + LN_TILE - 1) / LN_TILE;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bt = 0; bt < B * tiles; bt++) {
        const int b = bt / tiles, t0 = bt % tiles * LN_TILE, n = T - t0 < LN_TILE ? T - t0 : LN_TILE;
        const float *dyb = dy + (size_t)b * C * T;
        float *dxb = dx + (size_t)b * C * T;
        float m1[LN_TILE], m2[LN_TILE];
        ln_tile_means(C, T, t0, n, gamma, x, mean, rstd, dyb, m1, m2);
        for (int c = 0; c < C; c++) {
            const size_t o = (size_t)c * T + t0;
            const float ga = gamma[c];
            for (int i = 0; i < n; i++) {
                const float r = rstd[t0 + i], xh = (x[o + i] - mean[t0 + i]) * r;
                dxb[o + i] += r * (ga * dyb[o + i] - m1[i] - xh * m2[i]);
            }
        }
    }
}
