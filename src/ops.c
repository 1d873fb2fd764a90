/* ops.c - forward kernels. GEMMs go to cblas (OpenBLAS); the rest are plain
 * loops threaded with OpenMP. Formulas follow diffusers/PyTorch:
 *   GroupNorm: biased variance, y = (x - mean) / sqrt(var + eps) * g + b
 *   Attention: softmax(q^T k / sqrt(d)) per head (diffusers Attention) */
#include "ops.h"
#include "ops_math.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ======================================================================== */
/* Helpers                                                                  */
/* ======================================================================== */



/* ======================================================================== */
/* Convolution: chunked im2col + sgemm                                      */
/* ======================================================================== */

#define IM2COL_MAX_FLOATS ((size_t)4 << 20) /* 16 MiB of columns at a time */

int conv2d_is_direct(const conv_geom *g) {
    return g->k == 1 && g->stride == 1 && g->pad_t == 0 && g->pad_l == 0 && g->ho == g->h && g->wo == g->w;
}

size_t conv2d_chunk_cols(const conv_geom *g) {
    size_t K = (size_t)g->cin * g->k * g->k, np = (size_t)g->ho * g->wo;
    size_t c = IM2COL_MAX_FLOATS / K;
    if (c < (size_t)g->wo) c = (size_t)g->wo;
    if (c > np) c = np;
    return c;
}

size_t conv2d_scratch(const conv_geom *g) {
    if (conv2d_is_direct(g)) return 0;
    return (size_t)g->cin * g->k * g->k * conv2d_chunk_cols(g);
}

/* col[r, p - p0] for output pixels p in [p0, p1), rows r = (ci, ky, kx). */
static void im2col(const conv_geom *g, const float *x, size_t p0, size_t p1, float *col) {
    const int k = g->k, s = g->stride, H = g->h, W = g->w, Wo = g->wo;
    const int K = g->cin * k * k;
    const size_t np = p1 - p0;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < K; r++) {
        int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        const float *xc = x + (size_t)ci * H * W;
        float *dst = col + (size_t)r * np;
        size_t p = p0;
        while (p < p1) {
            int oy = (int)(p / Wo), ox0 = (int)(p % Wo);
            int ox1 = Wo;
            if ((size_t)(p1 - p) < (size_t)(ox1 - ox0)) ox1 = ox0 + (int)(p1 - p);
            int iy = oy * s - g->pad_t + ky;
            float *d = dst + (p - p0);
            if (iy < 0 || iy >= H) {
                memset(d, 0, sizeof(float) * (size_t)(ox1 - ox0));
            } else {
                const float *xr = xc + (size_t)iy * W;
                if (s == 1) {
                    /* ix = ox - pad_l + kx, valid for ix in [0, W) */
                    int off = kx - g->pad_l;
                    int lo = -off, hi = W - off; /* valid ox range */
                    for (int ox = ox0; ox < ox1; ox++) {
                        if (ox >= lo && ox < hi) {
                            int e = ox1 < hi ? ox1 : hi;
                            memcpy(d + (ox - ox0), xr + ox + off, sizeof(float) * (size_t)(e - ox));
                            ox = e - 1;
                        } else {
                            d[ox - ox0] = 0.0f;
                        }
                    }
                } else {
                    for (int ox = ox0; ox < ox1; ox++) {
                        int ix = ox * s - g->pad_l + kx;
                        d[ox - ox0] = (ix >= 0 && ix < W) ? xr[ix] : 0.0f;
                    }
                }
            }
            p += (size_t)(ox1 - ox0);
        }
    }
}

void conv2d_fwd(const conv_geom *g, int B, const float *x, const float *w, const float *bias, const float *bias2,
                float *y, float *scratch) {
    const int K = g->cin * g->k * g->k;
    const size_t np = (size_t)g->ho * g->wo, nin = (size_t)g->cin * g->h * g->w;
    for (int b = 0; b < B; b++) {
        float *yb = y + (size_t)b * g->cout * np;
        const float *xb = x + (size_t)b * nin;
#pragma omp parallel for schedule(static)
        for (int c = 0; c < g->cout; c++) {
            float v = (bias ? bias[c] : 0.0f) + (bias2 ? bias2[(size_t)b * g->cout + c] : 0.0f);
            float *yc = yb + (size_t)c * np;
            for (size_t i = 0; i < np; i++) yc[i] = v;
        }
        if (conv2d_is_direct(g)) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->cout, (int)np, g->cin, 1.0f, w, g->cin, xb,
                        (int)np, 1.0f, yb, (int)np);
            continue;
        }
        size_t cc = conv2d_chunk_cols(g);
        for (size_t p0 = 0; p0 < np; p0 += cc) {
            size_t p1 = p0 + cc < np ? p0 + cc : np;
            im2col(g, xb, p0, p1, scratch);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->cout, (int)(p1 - p0), K, 1.0f, w, K, scratch,
                        (int)(p1 - p0), 1.0f, yb + p0, (int)np);
        }
    }
}

/* ======================================================================== */
/* Group norm (+ SiLU)                                                      */
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
/* Elementwise and reshaping ops                                            */
/* ======================================================================== */

void silu_fwd(size_t n, const float *x, float *y) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = silu1(x[i]);
}

void linear_fwd(int B, int in, int out, const float *x, const float *W, const float *bias, float *y) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < out; o++) y[(size_t)b * out + o] = bias ? bias[o] : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1.0f, x, in, W, in, 1.0f, y, out);
}

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

void timestep_embedding_fwd(int B, int dim, int flip_sin_to_cos, float freq_shift, const float *t, float *y) {
    const int half = dim / 2;
    for (int b = 0; b < B; b++) {
        float *yb = y + (size_t)b * dim;
        for (int i = 0; i < half; i++) {
            /* float32 arithmetic in the same order as diffusers */
            float e = (float)(-log(10000.0)) * (float)i;
            e = e / ((float)half - freq_shift);
            float f = expf(e);
            float arg = t[b] * f;
            float sn = sinf(arg), cs = cosf(arg);
            if (flip_sin_to_cos) {
                yb[i] = cs;
                yb[half + i] = sn;
            } else {
                yb[i] = sn;
                yb[half + i] = cs;
            }
        }
        if (dim % 2) yb[dim - 1] = 0.0f;
    }
}

/* ======================================================================== */
/* Attention                                                                */
/* ======================================================================== */

size_t attention_scratch(int C, int hw) { return 5 * (size_t)C * hw + (size_t)hw * hw; }

static void softmax_rows(int rows, int cols, float *S) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < rows; i++) {
        float *row = S + (size_t)i * cols;
        float m = row[0];
        for (int j = 1; j < cols; j++) m = row[j] > m ? row[j] : m;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) {
            row[j] = fast_expf(row[j] - m);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < cols; j++) row[j] *= inv;
    }
}

static void proj(int C, int hw, const float *W, const float *bias, const float *x, float *y) {
    /* y [C, hw] = W [C, C] x [C, hw] + bias */
    for (int c = 0; c < C; c++)
        for (int i = 0; i < hw; i++) y[(size_t)c * hw + i] = bias[c];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, hw, C, 1.0f, W, C, x, hw, 1.0f, y, hw);
}

void attention_fwd(const attn_params *p, int B, int C, int hw, const float *x, float *y, float *scratch,
                   const attn_saved *save) {
    const size_t n = (size_t)C * hw;
    float *xn = scratch, *q = xn + n, *k = q + n, *v = k + n, *o = v + n, *S = o + n;
    if (save) {
        q = save->q;
        k = save->k;
        v = save->v;
    }
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * n;
        float *yb = y + (size_t)b * n;
        group_norm_fwd(1, C, hw, p->groups, p->eps, p->gn_w, p->gn_b, 0, xb, xn, save ? save->mean : NULL,
                       save ? save->rstd : NULL);
        proj(C, hw, p->wq, p->bq, xn, q);
        proj(C, hw, p->wk, p->bk, xn, k);
        proj(C, hw, p->wv, p->bv, xn, v);
        for (int h = 0; h < p->heads; h++) {
            const float *qh = q + (size_t)h * d * hw, *kh = k + (size_t)h * d * hw, *vh = v + (size_t)h * d * hw;
            float *Sh = save ? save->P + (size_t)h * hw * hw : S;
            /* S[i, j] = scale * sum_c q[c, i] k[c, j] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hw, hw, d, scale, qh, hw, kh, hw, 0.0f, Sh, hw);
            softmax_rows(hw, hw, Sh);
            /* o[c, i] = sum_j v[c, j] S[i, j] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, hw, hw, 1.0f, vh, hw, Sh, hw, 0.0f,
                        o + (size_t)h * d * hw, hw);
        }
        proj(C, hw, p->wo, p->bo, o, yb);
        for (size_t i = 0; i < n; i++) yb[i] = (yb[i] + xb[i]) / p->rescale;
    }
}
