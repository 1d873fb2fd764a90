/* conv.c - 2-D convolution: the forward pass (conv2d_fwd, also the J V of a
 * convolution when called without biases), its transpose (conv2d_vjp, J^T dy,
 * which is also the training backward's dx) and the training weight gradient
 * (conv2d_wgrad). Three routes to the same product, all through gemm_f32:
 *   1x1, stride 1, no padding: a plain GEMM over channels (no im2col);
 *   3x3, stride 1, 'same', wide and large enough: Winograd F(2x2,3x3), for
 *     the forward and, with the kernels transposed and rotated, the VJP;
 *   otherwise: chunked im2col + GEMM (GEMM + col2im for the VJP).
 * Before these, conv_dnnl.c's oneDNN kernels where they apply (g->fast).
 * conv2d_wgrad: dW = sum_b dy[b] col(x[b])^T over im2col columns that span
 * images, one GEMM per chunk. */
#include "ops.h"

#include <string.h>

/* ======================================================================== */
/* im2col and col2im                                                        */
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

/* ======================================================================== */
/* Winograd F(2x2, 3x3)                                                     */
/* ======================================================================== */

/* Lavin & Gray 2015: each 2x2 output tile is
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A
 * with d the 4x4 input patch around it. The 16 elementwise products become
 * 16 GEMMs over channels: M[xi] (cout x T) = U[xi] (cout x cin) V[xi]
 * (cin x T) for T tiles, done a band of tile rows at a time. */

#define WINO_MIN_CH 16
#define WINO_MIN_PIXELS 256 /* output pixels per image: below, the per-image GEMMs are too small */
size_t ops_wino_band_floats = (size_t)2 << 20; /* V + M of one band: 8 MiB */

int conv2d_wino_ok(const conv_geom *g) {
    return g->k == 3 && g->stride == 1 && g->pad_t == 1 && g->pad_l == 1 && g->ho == g->h && g->wo == g->w &&
           g->cin >= WINO_MIN_CH && g->cout >= WINO_MIN_CH;
}

/* Tiles held at a time (V and M hold 16 x (cin + cout) floats per tile);
 * conv2d_wino uses whole tile rows of it, at least one. */
static size_t wino_band_tiles(const conv_geom *g) {
    size_t tw = ((size_t)g->wo + 1) / 2;
    size_t t = ops_wino_band_floats / (16 * ((size_t)g->cin + g->cout));
    return t < tw ? tw : t;
}

/* U [16, cout, cin] | V [16, cin, band] | M [16, cout, band] | input tmp
 * [cin, 8, tw + 1] | zero row [w] | output tmp [cout, 2, tw] */
static size_t wino_scratch(const conv_geom *g) {
    size_t tw = ((size_t)g->wo + 1) / 2;
    return 16 * (size_t)g->cout * g->cin + 16 * ((size_t)g->cin + g->cout) * wino_band_tiles(g) +
           (size_t)g->cin * 8 * (tw + 1) + (size_t)g->w + (size_t)g->cout * 2 * tw;
}

/* U[xi][o][i] = (G g G^T)[xi] for w [cout, cin, 3, 3] (flip_t: for the
 * kernel of the transposed convolution, w [cin, cout, 3, 3] rotated): taps
 * gathered into blocks of 64 input channels, then the transform contiguous
 * in i. */
#define WINO_WB 64
static void wino_weights(const conv_geom *g, const float *w, int flip_t, float *U) {
    const int ci = g->cin, co = g->cout;
    const size_t plane = (size_t)co * ci;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < co; o++)
        for (int i0 = 0; i0 < ci; i0 += WINO_WB) {
            const int nb = ci - i0 < WINO_WB ? ci - i0 : WINO_WB;
            float k[9][WINO_WB], t[4][3][WINO_WB];
            if (!flip_t) {
                const float *wo = w + ((size_t)o * ci + i0) * 9;
                for (int i = 0; i < nb; i++)
                    for (int q = 0; q < 9; q++) k[q][i] = wo[(size_t)i * 9 + q];
            } else { /* w is [ci, co, 3, 3]; kernel (o, i) is w[i, o] rotated by 180 degrees */
                for (int i = 0; i < nb; i++) {
                    const float *wi = w + ((size_t)(i0 + i) * co + o) * 9;
                    for (int q = 0; q < 9; q++) k[q][i] = wi[8 - q];
                }
            }
            for (int c = 0; c < 3; c++) /* G g: rows of the kernel */
                for (int i = 0; i < nb; i++) {
                    float a = k[c][i], b = k[3 + c][i], d = k[6 + c][i];
                    t[0][c][i] = a;
                    t[1][c][i] = 0.5f * (a + b + d);
                    t[2][c][i] = 0.5f * (a - b + d);
                    t[3][c][i] = d;
                }
            float *u = U + (size_t)o * ci + i0;
            for (int r = 0; r < 4; r++) { /* (G g) G^T */
                float *u0 = u + (size_t)(4 * r) * plane, *u1 = u0 + plane, *u2 = u1 + plane, *u3 = u2 + plane;
                for (int i = 0; i < nb; i++) {
                    float a = t[r][0][i], b = t[r][1][i], d = t[r][2][i];
                    u0[i] = a;
                    u1[i] = 0.5f * (a + b + d);
                    u2[i] = 0.5f * (a - b + d);
                    u3[i] = d;
                }
            }
        }
}

/* B^T d down 4 rows, at every other column: E_k[j] from R_k[2j]. */
static inline void wino_col(int cnt, const float *restrict R0, const float *restrict R1, const float *restrict R2,
                            const float *restrict R3, float *restrict E0, float *restrict E1, float *restrict E2,
                            float *restrict E3) {
    for (int j = 0; j < cnt; j++) {
        float a = R0[2 * j], b = R1[2 * j], c = R2[2 * j], d = R3[2 * j];
        E0[j] = a - c;
        E1[j] = b + c;
        E2[j] = c - b;
        E3[j] = b - d;
    }
}

/* (.) B along a row: tile j's padded columns are E[j], O[j], E[j+1], O[j+1]. */
static inline void wino_row(int tw, const float *restrict E, const float *restrict O, float *restrict v0,
                            float *restrict v1, float *restrict v2, float *restrict v3) {
    for (int j = 0; j < tw; j++) {
        v0[j] = E[j] - E[j + 1];
        v1[j] = O[j] + E[j + 1];
        v2[j] = E[j + 1] - O[j];
        v3[j] = O[j] - O[j + 1];
    }
}

/* V[xi][c][t] for tile rows [r0, r1), t = (tile row - r0) * tw + tile col.
 * Per channel and tile row: the column transform (B^T d) over the 4 input
 * rows, split into even and odd padded columns (E[j] = column 2j - 1,
 * O[j] = column 2j), then the row transform (. B), both contiguous in j.
 * tmp: 8 * (tw + 1) floats per channel; zero: W zeros. */
static void wino_input(const conv_geom *g, const float *x, int r0, int r1, float *V, float *tmp, const float *zero) {
    const int ci = g->cin, H = g->h, W = g->w, tw = (g->wo + 1) / 2;
    const size_t T = (size_t)(r1 - r0) * tw, plane = (size_t)ci * T;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < ci; c++) {
        const float *xc = x + (size_t)c * H * W;
        float *e = tmp + (size_t)c * 8 * (tw + 1); /* E0 O0 E1 O1 E2 O2 E3 O3 */
        const int n = tw + 1;
        for (int ti = r0; ti < r1; ti++) {
            const int y0 = 2 * ti - 1;
            const float *R[4];
            for (int r = 0; r < 4; r++) R[r] = (y0 + r >= 0 && y0 + r < H) ? xc + (size_t)(y0 + r) * W : zero;
            const float *R0 = R[0], *R1 = R[1], *R2 = R[2], *R3 = R[3];
            float *E0 = e, *O0 = e + n, *E1 = e + 2 * n, *O1 = e + 3 * n;
            float *E2 = e + 4 * n, *O2 = e + 5 * n, *E3 = e + 6 * n, *O3 = e + 7 * n;
            /* padded column p = x + 1: E[j] is x = 2j - 1, O[j] is x = 2j */
            E0[0] = E1[0] = E2[0] = E3[0] = 0.0f;
            const int je = W / 2 + 1 < n ? W / 2 + 1 : n; /* E[j], j in [1, je): 2j - 1 < W */
            wino_col(je - 1, R0 + 1, R1 + 1, R2 + 1, R3 + 1, E0 + 1, E1 + 1, E2 + 1, E3 + 1);
            for (int j = je; j < n; j++) E0[j] = E1[j] = E2[j] = E3[j] = 0.0f;
            const int jo = (W + 1) / 2 < n ? (W + 1) / 2 : n; /* O[j], j in [0, jo): 2j < W */
            wino_col(jo, R0, R1, R2, R3, O0, O1, O2, O3);
            for (int j = jo; j < n; j++) O0[j] = O1[j] = O2[j] = O3[j] = 0.0f;
            float *vt = V + (size_t)c * T + (size_t)(ti - r0) * tw;
            for (int r = 0; r < 4; r++) {
                float *v0 = vt + (size_t)(4 * r) * plane;
                wino_row(tw, e + 2 * r * n, e + (2 * r + 1) * n, v0, v0 + plane, v0 + 2 * plane, v0 + 3 * plane);
            }
        }
    }
}

/* Row a of A^T m (rows p0, p1, p2 of m: a = 0: p0 + p1 + p2; a = 1:
 * p0 - p1 - p2), then (.) A: even outputs ev, odd outputs od, plus bias. */
static inline void wino_out_row(int tw, int a, size_t plane, const float *restrict p0, const float *restrict p1,
                                const float *restrict p2, float bo, float *restrict ev, float *restrict od) {
    const float sg = a ? -1.0f : 1.0f;
    for (int j = 0; j < tw; j++) {
        float q0 = p0[j] + (p1[j] + p2[j]) * sg;
        float q1 = p0[j + plane] + (p1[j + plane] + p2[j + plane]) * sg;
        float q2 = p0[j + 2 * plane] + (p1[j + 2 * plane] + p2[j + 2 * plane]) * sg;
        float q3 = p0[j + 3 * plane] + (p1[j + 3 * plane] + p2[j + 3 * plane]) * sg;
        ev[j] = q0 + q1 + q2 + bo;
        od[j] = q1 - q2 - q3 + bo;
    }
}

static inline void wino_interleave(int n, const float *restrict ev, const float *restrict od, float *restrict y) {
    for (int j = 0; j < n; j++) {
        y[2 * j] = ev[j];
        y[2 * j + 1] = od[j];
    }
}

static inline void wino_interleave_add(int n, const float *restrict ev, const float *restrict od,
                                       float *restrict y) {
    for (int j = 0; j < n; j++) {
        y[2 * j] += ev[j];
        y[2 * j + 1] += od[j];
    }
}

/* y[o] tiles of rows [r0, r1) = A^T m A + bias (+ bias2), or += when acc. tmp: 2 * tw floats
 * per output channel. */
static void wino_output(const conv_geom *g, const float *Mb, int r0, int r1, const float *bias, const float *bias2,
                        int acc, float *y, float *tmp) {
    const int co = g->cout, Ho = g->ho, Wo = g->wo, tw = (Wo + 1) / 2;
    const size_t T = (size_t)(r1 - r0) * tw, plane = (size_t)co * T;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < co; o++) {
        const float bo = (bias ? bias[o] : 0.0f) + (bias2 ? bias2[o] : 0.0f);
        float *yo = y + (size_t)o * Ho * Wo, *ev = tmp + (size_t)o * 2 * tw, *od = ev + tw;
        for (int ti = r0; ti < r1; ti++) {
            const float *m = Mb + (size_t)o * T + (size_t)(ti - r0) * tw;
            for (int a = 0; a < 2 && 2 * ti + a < Ho; a++) {
                /* row a of A^T m: a = 0: m0 + m1 + m2; a = 1: m1 - m2 - m3 (rows of 4) */
                const float *p0 = m + (size_t)(a ? 4 : 0) * plane, *p1 = m + (size_t)(a ? 8 : 4) * plane;
                const float *p2 = m + (size_t)(a ? 12 : 8) * plane;
                wino_out_row(tw, a, plane, p0, p1, p2, bo, ev, od);
                float *yr = yo + (size_t)(2 * ti + a) * Wo;
                if (acc) {
                    wino_interleave_add(Wo / 2, ev, od, yr);
                    if (Wo & 1) yr[Wo - 1] += ev[Wo / 2];
                } else {
                    wino_interleave(Wo / 2, ev, od, yr);
                    if (Wo & 1) yr[Wo - 1] = ev[Wo / 2];
                }
            }
        }
    }
}

/* y = conv(x, w) + bias (+ bias2[b]) for a Winograd-eligible g. flip_t: g
 * is the transposed convolution (see conv2d_vjp_wino), w holds the original
 * [g->cin, g->cout, 3, 3] kernels, and the result is added to y.
 * A band is tile rows of one image: several small images per band would make
 * bigger GEMMs, but then an image's result would depend on the others in the
 * batch through the GEMM's blocking. */
static void conv2d_wino(const conv_geom *g, int B, const float *x, const float *w, int flip_t, const float *bias,
                        const float *bias2, float *y, float *scratch) {
    const int ci = g->cin, co = g->cout, th = (g->ho + 1) / 2, tw = (g->wo + 1) / 2;
    const size_t nin = (size_t)ci * g->h * g->w, nout = (size_t)co * g->ho * g->wo, cap = wino_band_tiles(g);
    float *U = scratch, *V = U + 16 * (size_t)co * ci, *Mb = V + 16 * (size_t)ci * cap;
    float *itmp = Mb + 16 * (size_t)co * cap, *zero = itmp + (size_t)ci * 8 * (tw + 1), *otmp = zero + g->w;
    memset(zero, 0, sizeof(float) * (size_t)g->w);
    wino_weights(g, w, flip_t, U);
    const int rows = cap / tw < (size_t)th ? (int)(cap / tw) : th;
    for (int b = 0; b < B; b++)
        for (int r0 = 0; r0 < th; r0 += rows) {
            const int r1 = r0 + rows < th ? r0 + rows : th;
            const int T = (r1 - r0) * tw;
            wino_input(g, x + (size_t)b * nin, r0, r1, V, itmp, zero);
            /* 16 independent products: one per thread at a time */
#pragma omp parallel for schedule(dynamic, 1)
            for (int k = 0; k < 16; k++)
                gemm_f32(0, 0, co, T, ci, 1.0f, U + (size_t)k * co * ci, ci,
                            V + (size_t)k * ci * T, T, 0.0f, Mb + (size_t)k * co * T, T);
            wino_output(g, Mb, r0, r1, bias, bias2 ? bias2 + (size_t)b * co : NULL, flip_t, y + (size_t)b * nout,
                        otmp);
        }
}

int conv2d_wino_use(const conv_geom *g) {
    return g->wino && conv2d_wino_ok(g) && (size_t)g->ho * g->wo >= WINO_MIN_PIXELS;
}

/* The convolution whose forward pass is the VJP of g: cin and cout swapped. */
static conv_geom transposed(const conv_geom *g) {
    conv_geom t = *g;
    t.cin = g->cout;
    t.cout = g->cin;
    return t;
}

/* dx += conv2d_vjp(dy) by Winograd: for a 3x3 'same' convolution the
 * transpose is the 'same' convolution of dy with the kernels transposed
 * (cin <-> cout) and rotated by 180 degrees. */
void conv2d_vjp_wino(const conv_geom *g, int B, const float *dy, const float *w, float *dx, float *scratch) {
    conv_geom t = transposed(g);
    conv2d_wino(&t, B, dy, w, 1, NULL, NULL, dx, scratch);
}

size_t conv2d_scratch(const conv_geom *g) {
    if (conv2d_is_direct(g)) return 0;
    size_t s = (size_t)g->cin * g->k * g->k * conv2d_chunk_cols(g);
    if (conv2d_wino_ok(g)) { /* the forward and the transposed (VJP) convolution */
        conv_geom t = transposed(g);
        if (wino_scratch(g) > s) s = wino_scratch(g);
        if (wino_scratch(&t) > s) s = wino_scratch(&t);
    }
    return s;
}
/* ======================================================================== */
/* Forward (also the JVP) and VJP                                           */
/* ======================================================================== */

void conv2d_fwd(const conv_geom *g, int B, const float *x, const float *w, const float *bias, const float *bias2,
                float *y, float *scratch) {
    const int K = g->cin * g->k * g->k;
    const size_t np = (size_t)g->ho * g->wo, nin = (size_t)g->cin * g->h * g->w;
    if (conv2d_dnnl_fwd(g, B, x, w, bias, bias2, y)) return;
    /* Winograd pays for its transforms once images are big enough */
    if (conv2d_wino_use(g)) {
        conv2d_wino(g, B, x, w, 0, bias, bias2, y, scratch);
        return;
    }
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
            gemm_f32(0, 0, g->cout, (int)np, g->cin, 1.0f, w, g->cin, xb,
                        (int)np, 1.0f, yb, (int)np);
            continue;
        }
        size_t cc = conv2d_chunk_cols(g);
        for (size_t p0 = 0; p0 < np; p0 += cc) {
            size_t p1 = p0 + cc < np ? p0 + cc : np;
            im2col(g, xb, p0, p1, scratch);
            gemm_f32(0, 0, g->cout, (int)(p1 - p0), K, 1.0f, w, K, scratch,
                        (int)(p1 - p0), 1.0f, yb + p0, (int)np);
        }
    }
}

void conv2d_vjp(const conv_geom *g, int B, const float *dy, const float *w, float *dx, float *scratch) {
    const int K = g->cin * g->k * g->k;
    const size_t np = (size_t)g->ho * g->wo, nin = (size_t)g->cin * g->h * g->w;
    const int done = conv2d_dnnl_vjp(g, B, dy, w, dx);
    if (done == B) return;
    dy += (size_t)done * g->cout * np;
    dx += (size_t)done * nin;
    B -= done;
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
/* Training: weight and bias gradients                                      */
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
