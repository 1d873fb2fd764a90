/* ops.h - forward kernels of the UNet's operations. All tensors are float32,
 * C order, batch first. Threads: OpenMP inside elementwise kernels, BLAS
 * threads inside GEMMs (never both at once). */
#ifndef LOCO_OPS_H
#define LOCO_OPS_H

#include <stddef.h>

/* Geometry of a 2-D convolution with square kernel k (1 or 3). */
typedef struct conv_geom {
    int cin, cout, h, w;  /* input channels/size                        */
    int k, stride;        /* kernel size, stride                         */
    int pad_t, pad_l;     /* zero padding before the first row / column  */
    int ho, wo;           /* output size (padding after is implied)      */
} conv_geom;

/* 1x1, stride 1, no padding: a plain GEMM without im2col. */
int conv2d_is_direct(const conv_geom *g);
/* Output pixels per im2col chunk. */
size_t conv2d_chunk_cols(const conv_geom *g);
/* Floats of scratch conv2d_fwd needs (im2col buffer for one chunk). */
size_t conv2d_scratch(const conv_geom *g);

/* y[b] = conv(x[b], w) + bias (+ bias2[b, :] per channel if bias2)
 * x: [B, cin, h, w]; w: [cout, cin, k, k]; bias: [cout] or NULL;
 * bias2: [B, cout] or NULL; y: [B, cout, ho, wo]. */
void conv2d_fwd(const conv_geom *g, int B, const float *x, const float *w, const float *bias,
                const float *bias2, float *y, float *scratch);

/* Group normalisation over (C/G channels x hw) per image and group, with
 * affine gamma/beta, then SiLU if silu. x, y: [B, C, hw]. In-place allowed.
 * If mean/rstd are non-NULL they receive [B, G] statistics. */
void group_norm_fwd(int B, int C, int hw, int G, float eps, const float *gamma, const float *beta, int silu,
                    const float *x, float *y, float *mean, float *rstd);

/* y = x * sigmoid(x), n elements. In-place allowed. */
void silu_fwd(size_t n, const float *x, float *y);

/* y[b] = W x[b] + bias. x: [B, in]; W: [out, in]; y: [B, out]. */
void linear_fwd(int B, int in, int out, const float *x, const float *W, const float *bias, float *y);

/* y = (a + b) * scale, n elements. */
void add_scale_fwd(size_t n, const float *a, const float *b, float scale, float *y);

/* y: [B, ca+cb, hw] = concat(a: [B, ca, hw], b: [B, cb, hw]) along channels. */
void concat_fwd(int B, int ca, int cb, int hw, const float *a, const float *b, float *y);

/* Nearest-neighbour 2x upsampling: x [B, C, h, w] -> y [B, C, 2h, 2w]. */
void upsample2x_fwd(int B, int C, int h, int w, const float *x, float *y);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * t [B] -> y [B, dim]. */
void timestep_embedding_fwd(int B, int dim, int flip_sin_to_cos, float freq_shift, const float *t, float *y);

/* Self-attention block as diffusers' Attention on a [B, C, hw] map with
 * residual connection: y = (W_o attn(GN(x)) + b_o + x) / rescale.
 * heads divides C. Scratch: attention_scratch(C, hw) floats. */
typedef struct attn_params {
    const float *gn_w, *gn_b;     /* [C]    */
    const float *wq, *bq;         /* [C, C], [C] */
    const float *wk, *bk;
    const float *wv, *bv;
    const float *wo, *bo;
    int groups;
    float eps;
    int heads;
    float rescale;
} attn_params;

/* What a forward pass keeps for the derivative passes (batch 1):
 * mean/rstd [groups] of the block's group norm, q, k, v [C, hw] and the
 * attention probabilities P [heads, hw, hw]. */
typedef struct attn_saved {
    float *mean, *rstd, *q, *k, *v, *P;
} attn_saved;

size_t attention_scratch(int C, int hw);
/* save may be NULL; when given, B must be 1 and q/k/v/P are kept there. */
void attention_fwd(const attn_params *p, int B, int C, int hw, const float *x, float *y, float *scratch,
                   const attn_saved *save);

/* ======================================================================== */
/* Derivatives (ops_grad.c). "jvp" maps B tangents of the input to tangents  */
/* of the output; "vjp" maps B cotangents of the output to cotangents of the */
/* input and ACCUMULATES (+=) into them. x, mean, rstd, q, k, v, P are the   */
/* recorded forward values at the linearisation point (batch 1).             */
/* ======================================================================== */

/* J^T of the convolution (no bias): dx[b] += conv^T(dy[b]). Scratch as
 * conv2d_scratch. The JVP of a conv is conv2d_fwd with no biases. */
void conv2d_vjp(const conv_geom *g, int B, const float *dy, const float *w, float *dx, float *scratch);

void group_norm_jvp(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dx, float *dy);
void group_norm_vjp(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dy, float *dx);

/* x: [n] recorded input; dx, dy: [B, n] */
void silu_jvp(int B, size_t n, const float *x, const float *dx, float *dy);
void silu_vjp(int B, size_t n, const float *x, const float *dy, float *dx);

void upsample2x_vjp(int B, int C, int h, int w, const float *dy, float *dx);

void attention_jvp(const attn_params *p, int C, int hw, const float *x, const attn_saved *s, int B, const float *dx,
                   float *dy, float *scratch);
void attention_vjp(const attn_params *p, int C, int hw, const float *x, const attn_saved *s, int B, const float *dy,
                   float *dx, float *scratch);

#endif
