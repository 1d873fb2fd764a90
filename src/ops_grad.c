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
 *        dq = k dS^T / sqrt(d), dk = q dS / sqrt(d)
 *
 * The training part at the end (backward.c) records per image instead and
 * also produces parameter gradients: conv dW = sum_b dy[b] col(x[b])^T over
 * im2col columns spanning images, GN dgamma = sum e x_hat and dbeta = sum e
 * with e = silu'(y) dy, attention dW_o = g o^T, dW_q = dq xn^T (k, v alike). */
#include "ops.h"
#include "ops_math.h"

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
    if (conv2d_wino_use(g)) {
        conv2d_vjp_wino(g, B, dy, w, dx, scratch);
        return;
    }
    for (int b = 0; b < B; b++) {
        const float *dyb = dy + (size_t)b * g->cout * np;
        float *dxb = dx + (size_t)b * nin;
        if (conv2d_is_direct(g)) {
            gemm_f32(1, 0, g->cin, (int)np, g->cout, 1.0f, w, g->cin, dyb,
                        (int)np, 1.0f, dxb, (int)np);
            continue;
        }
        size_t cc = conv2d_chunk_cols(g);
        for (size_t p0 = 0; p0 < np; p0 += cc) {
            size_t p1 = p0 + cc < np ? p0 + cc : np;
            /* col [K, p1-p0] = W^T [K, cout] dy[:, p0:p1] */
            gemm_f32(1, 0, K, (int)(p1 - p0), g->cout, 1.0f, w, K, dyb + p0,
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
    gemm_f32(trans ? 1 : 0, 0, C, hw, C, 1.0f, W, C, x, hw, beta, y,
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
            gemm_f32(1, 0, hw, hw, d, scale, dq + o, hw, s->k + o, hw, 0.0f, dS,
                        hw);
            gemm_f32(1, 0, hw, hw, d, scale, s->q + o, hw, dk + o, hw, 1.0f, dS,
                        hw);
            softmax_rows_grad(hw, P, dS);
            gemm_f32(0, 1, d, hw, hw, 1.0f, dv + o, hw, P, hw, 0.0f, dO + o, hw);
            gemm_f32(0, 1, d, hw, hw, 1.0f, s->v + o, hw, dS, hw, 1.0f, dO + o,
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
            gemm_f32(0, 0, d, hw, hw, 1.0f, dO + o, hw, P, hw, 0.0f, dv + o, hw);
            gemm_f32(1, 0, hw, hw, d, 1.0f, dO + o, hw, s->v + o, hw, 0.0f, dS,
                        hw);
            softmax_rows_grad(hw, P, dS);
            gemm_f32(0, 1, d, hw, hw, scale, s->k + o, hw, dS, hw, 0.0f, dq + o,
                        hw);
            gemm_f32(0, 0, d, hw, hw, scale, s->q + o, hw, dS, hw, 0.0f, dk + o,
                        hw);
        }
        /* g <- W_q^T dq + W_k^T dk + W_v^T dv (the cotangent of GN's output) */
        matmul_cc(C, hw, p->wq, 1, dq, 0.0f, g);
        matmul_cc(C, hw, p->wk, 1, dk, 1.0f, g);
        matmul_cc(C, hw, p->wv, 1, dv, 1.0f, g);
        group_norm_vjp(1, C, hw, p->groups, p->gn_w, p->gn_b, 0, x, s->mean, s->rstd, g, dxb);
    }
}

/* ======================================================================== */
/* Training backpropagation: per-image records and parameter gradients      */
/* ======================================================================== */

#define WGRAD_MAX_FLOATS ((size_t)4 << 20) /* 16 MiB of im2col columns at a time */

/* Columns of one wgrad chunk: a range of "global" output pixels b*np + p. */
static size_t wgrad_chunk_cols(const conv_geom *g, int B) {
    size_t K = (size_t)g->cin * g->k * g->k, tot = (size_t)g->ho * g->wo * (size_t)B;
    size_t c = WGRAD_MAX_FLOATS / K;
    if (c < (size_t)g->wo) c = (size_t)g->wo;
    if (c > tot) c = tot;
    return c;
}

size_t conv2d_wgrad_scratch(const conv_geom *g, int B) {
    if (conv2d_is_direct(g)) return 0;
    return ((size_t)g->cin * g->k * g->k + (size_t)g->cout) * wgrad_chunk_cols(g, B);
}

/* col[r, P - P0] for global output pixels P = b*np + p in [P0, P1) of the
 * images x [B, cin, h, w]; rows r = (ci, ky, kx). A row segment of output
 * pixels never crosses an image (np is a multiple of wo). */
static void im2col_images(const conv_geom *g, const float *x, size_t P0, size_t P1, float *col) {
    const int k = g->k, s = g->stride, H = g->h, W = g->w, Wo = g->wo;
    const int K = g->cin * k * k;
    const size_t np = (size_t)g->ho * Wo, ncol = P1 - P0, nin = (size_t)g->cin * H * W;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < K; r++) {
        const int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        float *dst = col + (size_t)r * ncol;
        size_t P = P0;
        while (P < P1) {
            const size_t b = P / np, p = P % np;
            const int oy = (int)(p / (size_t)Wo), ox0 = (int)(p % (size_t)Wo);
            int ox1 = Wo;
            if (P1 - P < (size_t)(ox1 - ox0)) ox1 = ox0 + (int)(P1 - P);
            const int iy = oy * s - g->pad_t + ky;
            float *d = dst + (P - P0) - ox0; /* d[ox] for ox in [ox0, ox1) */
            if (iy < 0 || iy >= H) {
                for (int ox = ox0; ox < ox1; ox++) d[ox] = 0.0f;
            } else {
                const float *xr = x + b * nin + ((size_t)ci * H + (size_t)iy) * W;
                for (int ox = ox0; ox < ox1; ox++) {
                    const int ix = ox * s - g->pad_l + kx;
                    d[ox] = (ix >= 0 && ix < W) ? xr[ix] : 0.0f;
                }
            }
            P += (size_t)(ox1 - ox0);
        }
    }
}

void conv2d_wgrad(const conv_geom *g, int B, const float *x, const float *dy, float *dw, float *dbias,
                  float *dbias2, float *scratch) {
    const int K = g->cin * g->k * g->k, cout = g->cout;
    const size_t np = (size_t)g->ho * g->wo, nin = (size_t)g->cin * g->h * g->w;
    if (dbias || dbias2) {
#pragma omp parallel for schedule(static)
        for (int c = 0; c < cout; c++) {
            double tot = 0;
            for (int b = 0; b < B; b++) {
                const float *d = dy + ((size_t)b * cout + c) * np;
                double s = 0;
                for (size_t i = 0; i < np; i++) s += d[i];
                if (dbias2) dbias2[(size_t)b * cout + c] += (float)s;
                tot += s;
            }
            if (dbias) dbias[c] += (float)tot;
        }
    }
    if (!dw) return;
    if (conv2d_is_direct(g)) {
        for (int b = 0; b < B; b++) /* dw [cout, cin] += dy[b] [cout, np] x[b]^T */
            gemm_f32(0, 1, cout, g->cin, (int)np, 1.0f, dy + (size_t)b * cout * np,
                        (int)np, x + (size_t)b * nin, (int)np, 1.0f, dw, g->cin);
        return;
    }
    const size_t tot = np * (size_t)B, cc = wgrad_chunk_cols(g, B);
    float *col = scratch, *dyp = scratch + (size_t)K * cc;
    for (size_t P0 = 0; P0 < tot; P0 += cc) {
        const size_t P1 = P0 + cc < tot ? P0 + cc : tot, ncol = P1 - P0;
        im2col_images(g, x, P0, P1, col);
        /* dyp [cout, ncol]: the same columns of dy, packed */
#pragma omp parallel for schedule(static)
        for (int c = 0; c < cout; c++) {
            size_t P = P0;
            while (P < P1) {
                const size_t b = P / np, p = P % np;
                size_t e = (b + 1) * np < P1 ? (b + 1) * np : P1;
                memcpy(dyp + (size_t)c * ncol + (P - P0), dy + ((size_t)b * cout + c) * np + p, sizeof(float) * (e - P));
                P = e;
            }
        }
        /* dw [cout, K] += dyp [cout, ncol] col^T [ncol, K] */
        gemm_f32(0, 1, cout, K, (int)ncol, 1.0f, dyp, (int)ncol, col, (int)ncol,
                    1.0f, dw, K);
    }
}

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

void linear_bwd(int B, int in, int out, const float *x, const float *W, const float *dy, float *dx, float *dW,
                float *db) {
    if (dx) gemm_f32(0, 0, B, in, out, 1.0f, dy, out, W, in, 1.0f, dx, in);
    if (dW) gemm_f32(1, 0, out, in, B, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int b = 0; b < B; b++) s += dy[(size_t)b * out + o];
            db[o] += (float)s;
        }
}

/* ---- attention ----------------------------------------------------------- */

size_t attn_record_floats(int C, int hw, int heads, int groups) {
    size_t n = 2 * (size_t)groups + 5 * (size_t)C * hw + (size_t)heads * hw * hw;
    return (n + 15) & ~(size_t)15;
}

attn_record attn_record_at(float *base, int C, int hw, int heads, int groups) {
    const size_t n = (size_t)C * hw;
    (void)heads;
    attn_record r;
    r.mean = base;
    r.rstd = base + groups;
    r.xn = r.rstd + groups;
    r.q = r.xn + n;
    r.k = r.q + n;
    r.v = r.k + n;
    r.o = r.v + n;
    r.P = r.o + n;
    return r;
}

/* The same arithmetic as ops.c's attention_fwd (softmax_rows, proj), so that
 * a training forward pass gives the very eps of loco_model_eps. */
static void softmax_rows_fwd(int rows, int cols, float *S) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < rows; i++) {
        float *row = S + (size_t)i * cols;
        float mx = row[0];
        for (int j = 1; j < cols; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) {
            row[j] = fast_expf(row[j] - mx);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < cols; j++) row[j] *= inv;
    }
}

static void proj_fwd(int C, int hw, const float *W, const float *bias, const float *x, float *y) {
    for (int c = 0; c < C; c++)
        for (int i = 0; i < hw; i++) y[(size_t)c * hw + i] = bias[c];
    gemm_f32(0, 0, C, hw, C, 1.0f, W, C, x, hw, 1.0f, y, hw);
}

void attention_fwd_record(const attn_params *p, int C, int hw, const float *x, float *y, const attn_record *r) {
    const size_t n = (size_t)C * hw;
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    group_norm_fwd(1, C, hw, p->groups, p->eps, p->gn_w, p->gn_b, 0, x, r->xn, r->mean, r->rstd);
    proj_fwd(C, hw, p->wq, p->bq, r->xn, r->q);
    proj_fwd(C, hw, p->wk, p->bk, r->xn, r->k);
    proj_fwd(C, hw, p->wv, p->bv, r->xn, r->v);
    for (int h = 0; h < p->heads; h++) {
        const size_t o = (size_t)h * d * hw;
        float *Sh = r->P + (size_t)h * hw * hw;
        gemm_f32(1, 0, hw, hw, d, scale, r->q + o, hw, r->k + o, hw, 0.0f, Sh,
                    hw);
        softmax_rows_fwd(hw, hw, Sh);
        gemm_f32(0, 1, d, hw, hw, 1.0f, r->v + o, hw, Sh, hw, 0.0f, r->o + o, hw);
    }
    proj_fwd(C, hw, p->wo, p->bo, r->o, y);
    for (size_t i = 0; i < n; i++) y[i] = (y[i] + x[i]) / p->rescale;
}

size_t attention_bwd_scratch(int C, int hw) { return 5 * (size_t)C * hw + (size_t)hw * hw; }

/* dW [C, C] += dY [C, hw] X^T; db [C] += row sums of dY */
static void proj_wgrad(int C, int hw, const float *dY, const float *X, float *dW, float *db) {
    gemm_f32(0, 1, C, C, hw, 1.0f, dY, hw, X, hw, 1.0f, dW, C);
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int i = 0; i < hw; i++) s += dY[(size_t)c * hw + i];
        db[c] += (float)s;
    }
}

void attention_bwd(const attn_params *p, int C, int hw, const float *x, const attn_record *r, const float *dy,
                   float *dx, const attn_grads *gr, float *scratch) {
    const size_t n = (size_t)C * hw;
    float *g = scratch, *dO = g + n, *dq = dO + n, *dk = dq + n, *dv = dk + n, *dS = dv + n;
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    for (size_t i = 0; i < n; i++) g[i] = dy[i] / p->rescale;
    if (dx)
        for (size_t i = 0; i < n; i++) dx[i] += g[i]; /* residual */
    if (gr) proj_wgrad(C, hw, g, r->o, gr->wo, gr->bo);
    matmul_cc(C, hw, p->wo, 1, g, 0.0f, dO);
    for (int h = 0; h < p->heads; h++) {
        const size_t o = (size_t)h * d * hw;
        const float *P = r->P + (size_t)h * hw * hw;
        gemm_f32(0, 0, d, hw, hw, 1.0f, dO + o, hw, P, hw, 0.0f, dv + o, hw);
        gemm_f32(1, 0, hw, hw, d, 1.0f, dO + o, hw, r->v + o, hw, 0.0f, dS, hw);
        softmax_rows_grad(hw, P, dS);
        gemm_f32(0, 1, d, hw, hw, scale, r->k + o, hw, dS, hw, 0.0f, dq + o, hw);
        gemm_f32(0, 0, d, hw, hw, scale, r->q + o, hw, dS, hw, 0.0f, dk + o,
                    hw);
    }
    if (gr) {
        proj_wgrad(C, hw, dq, r->xn, gr->wq, gr->bq);
        proj_wgrad(C, hw, dk, r->xn, gr->wk, gr->bk);
        proj_wgrad(C, hw, dv, r->xn, gr->wv, gr->bv);
    }
    /* g <- the cotangent of the group norm's output */
    matmul_cc(C, hw, p->wq, 1, dq, 0.0f, g);
    matmul_cc(C, hw, p->wk, 1, dk, 1.0f, g);
    matmul_cc(C, hw, p->wv, 1, dv, 1.0f, g);
    group_norm_bwd(1, C, hw, p->groups, p->gn_w, p->gn_b, 0, x, r->mean, r->rstd, g, dx, gr ? gr->gn_w : NULL,
                   gr ? gr->gn_b : NULL);
}
