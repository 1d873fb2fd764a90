/* norm.c - group normalisation with affine gamma/beta and optional SiLU, as
 * torch.nn.GroupNorm (biased variance): over a group of n entries
 *   x_hat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps),
 *   y = gamma x_hat + beta, z = silu(y) (optional).
 *   jvp: dx_hat = rstd (dx - mean(dx) - x_hat mean(dx x_hat)),
 *        dz = silu'(y) gamma dx_hat
 *   vjp: g = gamma silu'(y) dz, dx += rstd (g - mean(g) - x_hat mean(g x_hat))
 *   bwd: the vjp with per-image records, plus dgamma = sum e x_hat and
 *        dbeta = sum e, with e = silu'(y) dz. */
#include "ops.h"
#include "ops_math.h"

/* ======================================================================== */
/* Forward                                                                  */
/* ======================================================================== */

/* Sum of x[i] (and of (x[i] - c)^2 if sq) in blocks: 16 float lanes inside a
 * block of 4096 (vectorisable), blocks accumulated in double. */
static double blocked_sum(const float *x, size_t n, int sq, float c) {
    double total = 0;
    size_t i = 0;
    while (i < n) {
        size_t e = n - i > 4096 ? i + 4096 : n;
        float acc[16] = {0};
        if (sq) {
            for (; i + 16 <= e; i += 16)
                for (int j = 0; j < 16; j++) {
                    float d = x[i + j] - c;
                    acc[j] += d * d;
                }
            for (; i < e; i++) acc[0] += (x[i] - c) * (x[i] - c);
        } else {
            for (; i + 16 <= e; i += 16)
                for (int j = 0; j < 16; j++) acc[j] += x[i + j];
            for (; i < e; i++) acc[0] += x[i];
        }
        double s = 0;
        for (int j = 0; j < 16; j++) s += acc[j];
        total += s;
    }
    return total;
}

void group_norm_fwd(int B, int C, int hw, int G, float eps, const float *gamma, const float *beta, int silu,
                    const float *x, float *y, float *mean_out, float *rstd_out) {
    const int cpg = C / G;
    const size_t gsize = (size_t)cpg * hw;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bg = 0; bg < B * G; bg++) {
        int b = bg / G, g = bg % G;
        const float *xg = x + ((size_t)b * C + (size_t)g * cpg) * hw;
        float *yg = y + ((size_t)b * C + (size_t)g * cpg) * hw;
        /* two passes (mean, then centred squares) for accuracy */
        double mean = blocked_sum(xg, gsize, 0, 0.0f) / (double)gsize;
        double v = blocked_sum(xg, gsize, 1, (float)mean) / (double)gsize;
        float rstd = (float)(1.0 / sqrt(v + (double)eps));
        float m = (float)mean;
        if (mean_out) mean_out[bg] = m;
        if (rstd_out) rstd_out[bg] = rstd;
        for (int c = 0; c < cpg; c++) {
            float a = rstd * gamma[g * cpg + c];
            float bb = beta[g * cpg + c] - m * a;
            const float *xc = xg + (size_t)c * hw;
            float *yc = yg + (size_t)c * hw;
            if (silu) {
                for (int i = 0; i < hw; i++) yc[i] = silu1(xc[i] * a + bb);
            } else {
                for (int i = 0; i < hw; i++) yc[i] = xc[i] * a + bb;
            }
        }
    }
}

/* ======================================================================== */
/* Linearisation: J V and V J P against one recorded image                  */
/* ======================================================================== */

void group_norm_jvp(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dx, float *dy) {
    const int cpg = C / G;
    const size_t gsize = (size_t)cpg * hw;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bg = 0; bg < B * G; bg++) {
        int b = bg / G, g = bg % G;
        const size_t base = (size_t)g * cpg * hw;
        const float *xg = x + base;
        const float *dxg = dx + (size_t)b * C * hw + base;
        float *dyg = dy + (size_t)b * C * hw + base;
        const float m = mean[g], r = rstd[g];
        double s1 = 0, s2 = 0;
        for (size_t i = 0; i < gsize; i++) {
            s1 += dxg[i];
            s2 += (double)dxg[i] * ((xg[i] - m) * r);
        }
        const float m1 = (float)(s1 / (double)gsize), m2 = (float)(s2 / (double)gsize);
        for (int c = 0; c < cpg; c++) {
            const float ga = gamma[g * cpg + c], be = beta[g * cpg + c];
            const size_t o = (size_t)c * hw;
            for (int i = 0; i < hw; i++) {
                float xh = (xg[o + i] - m) * r;
                float d = ga * r * (dxg[o + i] - m1 - xh * m2);
                dyg[o + i] = silu ? d * dsilu1(ga * xh + be) : d;
            }
        }
    }
}

void group_norm_vjp(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dy, float *dx) {
    const int cpg = C / G;
    const size_t gsize = (size_t)cpg * hw;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bg = 0; bg < B * G; bg++) {
        int b = bg / G, g = bg % G;
        const size_t base = (size_t)g * cpg * hw;
        const float *xg = x + base;
        const float *dyg = dy + (size_t)b * C * hw + base;
        float *dxg = dx + (size_t)b * C * hw + base;
        const float m = mean[g], r = rstd[g];
        /* first pass: sums of g and g x_hat, where g = gamma silu'(y) dy */
        double s1 = 0, s2 = 0;
        for (int c = 0; c < cpg; c++) {
            const float ga = gamma[g * cpg + c], be = beta[g * cpg + c];
            const size_t o = (size_t)c * hw;
            for (int i = 0; i < hw; i++) {
                float xh = (xg[o + i] - m) * r;
                float gi = ga * (silu ? dyg[o + i] * dsilu1(ga * xh + be) : dyg[o + i]);
                s1 += gi;
                s2 += (double)gi * xh;
            }
        }
        const float m1 = (float)(s1 / (double)gsize), m2 = (float)(s2 / (double)gsize);
        for (int c = 0; c < cpg; c++) {
            const float ga = gamma[g * cpg + c], be = beta[g * cpg + c];
            const size_t o = (size_t)c * hw;
            for (int i = 0; i < hw; i++) {
                float xh = (xg[o + i] - m) * r;
                float gi = ga * (silu ? dyg[o + i] * dsilu1(ga * xh + be) : dyg[o + i]);
                dxg[o + i] += r * (gi - m1 - xh * m2);
            }
        }
    }
}

/* ======================================================================== */
/* Training backward: per-image records, gamma/beta gradients               */
/* ======================================================================== */

/* Over one channel row: sum e and sum e x_hat, e = silu'(y) dy (silu) or dy,
 * y = ga x_hat + be, x_hat = (x - m) r. 16 float lanes (vectorisable), the
 * lanes and the tail added in double. */
static void gn_row_sums(const float *x, const float *dy, int hw, float m, float r, float ga, float be, int silu,
                        double *A, double *Bs) {
    float a[16] = {0}, b[16] = {0};
    int i = 0;
    if (silu) {
        for (; i + 16 <= hw; i += 16)
            for (int j = 0; j < 16; j++) {
                const float xh = (x[i + j] - m) * r, e = dy[i + j] * dsilu1(ga * xh + be);
                a[j] += e;
                b[j] += e * xh;
            }
    } else {
        for (; i + 16 <= hw; i += 16)
            for (int j = 0; j < 16; j++) {
                const float xh = (x[i + j] - m) * r, e = dy[i + j];
                a[j] += e;
                b[j] += e * xh;
            }
    }
    double sa = 0, sb = 0;
    for (; i < hw; i++) {
        const float xh = (x[i] - m) * r, e = silu ? dy[i] * dsilu1(ga * xh + be) : dy[i];
        sa += e;
        sb += (double)e * xh;
    }
    for (int j = 0; j < 16; j++) {
        sa += a[j];
        sb += b[j];
    }
    *A = sa;
    *Bs = sb;
}

void group_norm_bwd(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta) {
    const int cpg = C / G;
    const size_t gsize = (size_t)cpg * hw;
    /* one thread per group: it owns that group's gamma/beta gradients */
#pragma omp parallel for schedule(dynamic, 1)
    for (int g = 0; g < G; g++) {
        for (int b = 0; b < B; b++) {
            const size_t base = ((size_t)b * C + (size_t)g * cpg) * hw;
            const float *xg = x + base, *dyg = dy + base;
            const float m = mean[(size_t)b * G + g], r = rstd[(size_t)b * G + g];
            /* per channel: A = sum e, Bs = sum e x_hat, with e = silu'(y) dy the
             * cotangent of y = gamma x_hat + beta */
            double s1 = 0, s2 = 0;
            for (int c = 0; c < cpg; c++) {
                const int ch = g * cpg + c;
                const size_t o = (size_t)c * hw;
                double A, Bs;
                gn_row_sums(xg + o, dyg + o, hw, m, r, gamma[ch], beta[ch], silu, &A, &Bs);
                if (dgamma) dgamma[ch] += (float)Bs;
                if (dbeta) dbeta[ch] += (float)A;
                s1 += gamma[ch] * A;
                s2 += gamma[ch] * Bs;
            }
            if (!dx) continue;
            const float m1 = (float)(s1 / (double)gsize), m2 = (float)(s2 / (double)gsize);
            float *dxg = dx + base;
            for (int c = 0; c < cpg; c++) {
                const int ch = g * cpg + c;
                const float ga = gamma[ch], be = beta[ch];
                const float *xc = xg + (size_t)c * hw, *dyc = dyg + (size_t)c * hw;
                float *dxc = dxg + (size_t)c * hw;
                if (silu) {
                    for (int i = 0; i < hw; i++) {
                        const float xh = (xc[i] - m) * r;
                        dxc[i] += r * (ga * dyc[i] * dsilu1(ga * xh + be) - m1 - xh * m2);
                    }
                } else {
                    for (int i = 0; i < hw; i++) {
                        const float xh = (xc[i] - m) * r;
                        dxc[i] += r * (ga * dyc[i] - m1 - xh * m2);
                    }
                }
            }
        }
    }
}
