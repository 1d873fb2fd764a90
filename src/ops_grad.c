/* ops_grad.c - forward-mode (jvp) and reverse-mode (vjp) kernels of the
 * UNet's nonlinear and reshaping ops, batched over B tangent/cotangent
 * vectors against one recorded forward pass (batch 1). Every vjp ACCUMULATES
 * into its output, since a value's cotangent sums over its consumers.
 *
 * Group norm, with x_hat = (x - mean) * rstd over a group of n entries,
 * y = gamma x_hat + beta, z = silu(y) (optional):
 *   jvp: dx_hat = rstd (dx - mean(dx) - x_hat mean(dx x_hat)),
 *        dz = silu'(y) gamma dx_hat
 *   vjp: g = gamma silu'(y) dz, dx += rstd (g - mean(g) - x_hat mean(g x_hat))
 * Attention per head, S = q^T k / sqrt(d), P = softmax_rows(S), o = v P^T:
 *   jvp: dS = (dq^T k + q^T dk) / sqrt(d), dP = P (dS - rowsum(P dS)),
 *        do = dv P^T + v dP^T
 *   vjp: dv = do P, dP = do^T v, dS = P (dP - rowsum(P dP)),
 *        dq = k dS^T / sqrt(d), dk = q dS / sqrt(d) */
#include "ops.h"
#include "ops_math.h"

#include <cblas.h>
#include <string.h>

/* ======================================================================== */
/* Convolution                                                              */
/* ======================================================================== */

/* dx[ci, iy, ix] += col[r, p - p0] for the output pixels p in [p0, p1). */
static void col2im_add(const conv_geom *g, const float *col, size_t p0, size_t p1, float *dx) {
    const int k = g->k, s = g->stride, H = g->h, W = g->w, Wo = g->wo;
    const size_t np = p1 - p0;
#pragma omp parallel for schedule(static)
    for (int ci = 0; ci < g->cin; ci++) {
        float *xc = dx + (size_t)ci * H * W;
        for (int kk = 0; kk < k * k; kk++) {
            int ky = kk / k, kx = kk % k;
            const float *src = col + ((size_t)ci * k * k + kk) * np;
            size_t p = p0;
            while (p < p1) { /* one output row segment at a time */
                int oy = (int)(p / Wo), ox0 = (int)(p % Wo);
                int ox1 = Wo;
                if (p1 - p < (size_t)(ox1 - ox0)) ox1 = ox0 + (int)(p1 - p);
                int iy = oy * s - g->pad_t + ky;
                const float *sr = src + (p - p0) - ox0;
                if (iy >= 0 && iy < H) {
                    float *xr = xc + (size_t)iy * W;
                    /* valid ox: 0 <= ox*s - pad_l + kx < W */
                    int lo = g->pad_l - kx > 0 ? (g->pad_l - kx + s - 1) / s : 0;
                    int hi = (W - 1 + g->pad_l - kx) / s + 1; /* exclusive */
                    if (lo < ox0) lo = ox0;
                    if (hi > ox1) hi = ox1;
                    if (s == 1) {
                        float *xd = xr - g->pad_l + kx;
                        for (int ox = lo; ox < hi; ox++) xd[ox] += sr[ox];
                    } else {
                        for (int ox = lo; ox < hi; ox++) xr[ox * s - g->pad_l + kx] += sr[ox];
                    }
                }
                p += (size_t)(ox1 - ox0);
            }
        }
    }
}

void conv2d_vjp(const conv_geom *g, int B, const float *dy, const float *w, float *dx, float *scratch) {
    const int K = g->cin * g->k * g->k;
    const size_t np = (size_t)g->ho * g->wo, nin = (size_t)g->cin * g->h * g->w;
    for (int b = 0; b < B; b++) {
        const float *dyb = dy + (size_t)b * g->cout * np;
        float *dxb = dx + (size_t)b * nin;
        if (conv2d_is_direct(g)) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->cin, (int)np, g->cout, 1.0f, w, g->cin, dyb,
                        (int)np, 1.0f, dxb, (int)np);
            continue;
        }
        size_t cc = conv2d_chunk_cols(g);
        for (size_t p0 = 0; p0 < np; p0 += cc) {
            size_t p1 = p0 + cc < np ? p0 + cc : np;
            /* col [K, p1-p0] = W^T [K, cout] dy[:, p0:p1] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, (int)(p1 - p0), g->cout, 1.0f, w, K, dyb + p0,
                        (int)np, 0.0f, scratch, (int)(p1 - p0));
            col2im_add(g, scratch, p0, p1, dxb);
        }
    }
}

/* ======================================================================== */
/* Group norm (+ SiLU)                                                      */
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
/* SiLU and upsampling                                                      */
/* ======================================================================== */

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
/* Attention                                                                */
/* ======================================================================== */

/* y [C, hw] (+)= W [C, C] x [C, hw] (transposed W if trans) */
static void matmul_cc(int C, int hw, const float *W, int trans, const float *x, float beta, float *y) {
    cblas_sgemm(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, CblasNoTrans, C, hw, C, 1.0f, W, C, x, hw, beta, y,
                hw);
}

/* dS <- P * (dS - rowsum(P * dS)), rows of length n */
static void softmax_rows_grad(int n, const float *P, float *dS) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *p = P + (size_t)i * n;
        float *d = dS + (size_t)i * n;
        double s = 0;
        for (int j = 0; j < n; j++) s += (double)p[j] * d[j];
        float sf = (float)s;
        for (int j = 0; j < n; j++) d[j] = p[j] * (d[j] - sf);
    }
}

void attention_jvp(const attn_params *p, int C, int hw, const float *x, const attn_saved *s, int B, const float *dx,
                   float *dy, float *scratch) {
    const size_t n = (size_t)C * hw;
    float *dxn = scratch, *dq = dxn + n, *dk = dq + n, *dv = dk + n, *dO = dv + n, *dS = dO + n;
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    for (int b = 0; b < B; b++) {
        const float *dxb = dx + (size_t)b * n;
        float *dyb = dy + (size_t)b * n;
        group_norm_jvp(1, C, hw, p->groups, p->gn_w, p->gn_b, 0, x, s->mean, s->rstd, dxb, dxn);
        matmul_cc(C, hw, p->wq, 0, dxn, 0.0f, dq);
        matmul_cc(C, hw, p->wk, 0, dxn, 0.0f, dk);
        matmul_cc(C, hw, p->wv, 0, dxn, 0.0f, dv);
        for (int h = 0; h < p->heads; h++) {
            const size_t o = (size_t)h * d * hw;
            const float *P = s->P + (size_t)h * hw * hw;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hw, hw, d, scale, dq + o, hw, s->k + o, hw, 0.0f, dS,
                        hw);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hw, hw, d, scale, s->q + o, hw, dk + o, hw, 1.0f, dS,
                        hw);
            softmax_rows_grad(hw, P, dS);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, hw, hw, 1.0f, dv + o, hw, P, hw, 0.0f, dO + o, hw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, hw, hw, 1.0f, s->v + o, hw, dS, hw, 1.0f, dO + o,
                        hw);
        }
        matmul_cc(C, hw, p->wo, 0, dO, 0.0f, dyb);
        for (size_t i = 0; i < n; i++) dyb[i] = (dyb[i] + dxb[i]) / p->rescale;
    }
}

void attention_vjp(const attn_params *p, int C, int hw, const float *x, const attn_saved *s, int B, const float *dy,
                   float *dx, float *scratch) {
    const size_t n = (size_t)C * hw;
    float *g = scratch, *dO = g + n, *dq = dO + n, *dk = dq + n, *dv = dk + n, *dS = dv + n;
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    for (int b = 0; b < B; b++) {
        const float *dyb = dy + (size_t)b * n;
        float *dxb = dx + (size_t)b * n;
        for (size_t i = 0; i < n; i++) {
            g[i] = dyb[i] / p->rescale;
            dxb[i] += g[i]; /* residual */
        }
        matmul_cc(C, hw, p->wo, 1, g, 0.0f, dO);
        for (int h = 0; h < p->heads; h++) {
            const size_t o = (size_t)h * d * hw;
            const float *P = s->P + (size_t)h * hw * hw;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, hw, hw, 1.0f, dO + o, hw, P, hw, 0.0f, dv + o, hw);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hw, hw, d, 1.0f, dO + o, hw, s->v + o, hw, 0.0f, dS,
                        hw);
            softmax_rows_grad(hw, P, dS);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, hw, hw, scale, s->k + o, hw, dS, hw, 0.0f, dq + o,
                        hw);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, hw, hw, scale, s->q + o, hw, dS, hw, 0.0f, dk + o,
                        hw);
        }
        /* g <- W_q^T dq + W_k^T dk + W_v^T dv (the cotangent of GN's output) */
        matmul_cc(C, hw, p->wq, 1, dq, 0.0f, g);
        matmul_cc(C, hw, p->wk, 1, dk, 1.0f, g);
        matmul_cc(C, hw, p->wv, 1, dv, 1.0f, g);
        group_norm_vjp(1, C, hw, p->groups, p->gn_w, p->gn_b, 0, x, s->mean, s->rstd, g, dxb);
    }
}
