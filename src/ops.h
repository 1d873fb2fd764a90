/* ops.h - the kernels of the UNets' operations, one section per op family,
 * each defined in its file under src/ops/. All tensors are float32, C order,
 * batch first. Threads: OpenMP inside elementwise kernels, and GEMMs as
 * tiles over OpenMP threads, each tile single-threaded (gemm_f32).
 *
 * Naming, per op:
 *   _fwd  the forward pass.
 *   _jvp  forward mode: maps B tangents of the input to tangents of the
 *         output, against one recorded forward pass (batch 1: x, mean, rstd,
 *         q, k, v, P, ... are the values at the linearisation point). A
 *         linear op has no _jvp: its J V is its _fwd on the tangents.
 *   _vjp  reverse mode: maps B cotangents of the output to cotangents of the
 *         input against the same batch-1 record, and ACCUMULATES (+=) into
 *         them, since a value's cotangent sums over its consumers.
 *   _bwd  training backpropagation (backward.c): the records are per image
 *         ([B, ...], one per image) and parameter gradients are produced too.
 *         Every output ACCUMULATES (+=); a NULL gradient pointer skips it. */
#ifndef LOCO_OPS_H
#define LOCO_OPS_H

#include <stddef.h>

/* ======================================================================== */
/* Convolution (ops/conv.c)                                                 */
/* ======================================================================== */

/* Geometry of a 2-D convolution with square kernel k (1 or 3). */
typedef struct conv_geom {
    int cin, cout, h, w;  /* input channels/size                        */
    int k, stride;        /* kernel size, stride                         */
    int pad_t, pad_l;     /* zero padding before the first row / column  */
    int ho, wo;           /* output size (padding after is implied)      */
    int wino;             /* 1: conv2d_fwd/vjp may use Winograd F(2x2,3x3) */
    int fast;             /* 1: conv2d_fwd/vjp may use oneDNN (conv_dnnl.c); the
                           * trainer clears it (and wino) to stay bit-identical */
} conv_geom;

/* 3x3, stride 1, 'same' padding, wide enough channels: conv2d_fwd computes it
 * with Winograd F(2x2,3x3) when g->wino is set (2.25x fewer multiplies; the
 * result differs from the direct sum by rounding only). */
int conv2d_wino_ok(const conv_geom *g);
/* Floats of transformed input and output held at a time (a band of tile
 * rows); a tuning knob, changed by tests to exercise several bands. Scratch
 * sizes depend on it: set it before planning. */
extern size_t ops_wino_band_floats;
/* g->wino is set, g is eligible and the images are large enough (at least
 * 256 output pixels) to pay for the transforms: conv2d_fwd and conv2d_vjp
 * use Winograd. Either way each image's result is independent of the batch. */
int conv2d_wino_use(const conv_geom *g);
/* dx += the VJP of a Winograd-eligible convolution, by Winograd (used by
 * conv2d_vjp when conv2d_wino_use). */
void conv2d_vjp_wino(const conv_geom *g, int B, const float *dy, const float *w, float *dx, float *scratch);

/* oneDNN (conv_dnnl.c), tried first by conv2d_fwd and conv2d_vjp: the same
 * products (y = conv(x) + bias + bias2; dx += conv^T(dy)) when g->fast, the
 * kernel is larger than 1x1 and oneDNN takes the shape; returns 1 when it
 * computed the result, 0 when the caller must (nothing written then, except
 * y prefilled with bias2, which the caller overwrites); at least 16 input
 * and output channels (thinner ones stay on the BLAS path). Winograd F(4x4,3x3)
 * for 3x3 'same' convolutions with channels a multiple of 16 on images of at
 * least 32x32, direct otherwise. ops_conv_dnnl: 1 on, 0 off, -1 (default)
 * on unless the environment has LOCO_CONV=blas; ops_conv_dnnl_wino likewise
 * with LOCO_CONV_WINO=0. Primitives and scratch are cached process-wide
 * behind a mutex; conv2d_dnnl_release frees them. */
extern int ops_conv_dnnl, ops_conv_dnnl_wino;
/* ops_conv_dnnl_bf16 (an experiment, issue #15): 1 rounds each call's input
 * and weights to bf16 (f32 accumulation and output, direct kernels; needs
 * AVX512_BF16 or AMX to be fast); -1 (default) reads LOCO_CONV_PRECISION=bf16. */
extern int ops_conv_dnnl_bf16;
int conv2d_dnnl_fwd(const conv_geom *g, int B, const float *x, const float *w, const float *bias, const float *bias2,
                    float *y);
/* conv2d_dnnl_vjp returns how many images (from the first) it did. */
int conv2d_dnnl_vjp(const conv_geom *g, int B, const float *dy, const float *w, float *dx);
void conv2d_dnnl_release(void);
/* 1 when conv2d_dnnl_fwd computes g by Winograd on this CPU (oneDNN's
 * Winograd needs AVX-512; elsewhere the same shapes run direct). */
int conv2d_dnnl_uses_winograd(const conv_geom *g);
/* 1 when conv2d_dnnl_fwd and conv2d_dnnl_vjp take g (oneDNN on and the
 * shape eligible); 0 when g runs on the BLAS path. */
int conv2d_dnnl_handles(const conv_geom *g);

/* 1x1, stride 1, no padding: a plain GEMM without im2col. */
int conv2d_is_direct(const conv_geom *g);
/* Output pixels per im2col chunk. */
size_t conv2d_chunk_cols(const conv_geom *g);
/* Floats of scratch conv2d_fwd needs (im2col buffer for one chunk, or the
 * Winograd buffers when g->wino; enough for either when the geometry is
 * Winograd-eligible, so g->wino may be cleared after planning). */
size_t conv2d_scratch(const conv_geom *g);

/* y[b] = conv(x[b], w) + bias (+ bias2[b, :] per channel if bias2)
 * x: [B, cin, h, w]; w: [cout, cin, k, k]; bias: [cout] or NULL;
 * bias2: [B, cout] or NULL; y: [B, cout, ho, wo]. The JVP of a convolution
 * is conv2d_fwd with no biases. */
void conv2d_fwd(const conv_geom *g, int B, const float *x, const float *w, const float *bias,
                const float *bias2, float *y, float *scratch);

/* J^T of the convolution (no bias): dx[b] += conv^T(dy[b]). Scratch as
 * conv2d_scratch. Also the training backward's dx. */
void conv2d_vjp(const conv_geom *g, int B, const float *dy, const float *w, float *dx, float *scratch);

/* Floats of scratch conv2d_wgrad needs for B images (0 for 1x1 direct). */
size_t conv2d_wgrad_scratch(const conv_geom *g, int B);
/* Convolution parameter gradients, x: [B, cin, h, w], dy: [B, cout, ho, wo]:
 *   dw [cout, cin, k, k] += sum_b dy[b] (x) x[b]   (im2col over columns that
 *                          span images, one GEMM per chunk; 1x1 direct: GEMMs)
 *   dbias [cout]         += sum over images and pixels of dy
 *   dbias2 [B, cout]     += per-image pixel sums of dy (the cotangent of the
 *                          per-image channel bias, e.g. from time_emb_proj) */
void conv2d_wgrad(const conv_geom *g, int B, const float *x, const float *dy, float *dw, float *dbias,
                  float *dbias2, float *scratch);

/* ======================================================================== */
/* Group norm (+ SiLU) (ops/norm.c)                                         */
/* ======================================================================== */

/* Group normalisation over (C/G channels x hw) per image and group, with
 * affine gamma/beta, then SiLU if silu. x, y: [B, C, hw]. In-place allowed.
 * If mean/rstd are non-NULL they receive [B, G] statistics. */
void group_norm_fwd(int B, int C, int hw, int G, float eps, const float *gamma, const float *beta, int silu,
                    const float *x, float *y, float *mean, float *rstd);

/* x [C, hw], mean/rstd [G] recorded (batch 1); dx, dy [B, C, hw]. */
void group_norm_jvp(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dx, float *dy);
void group_norm_vjp(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dy, float *dx);

/* Backward with per-image records: x [B, C, hw], mean, rstd [B, G] as
 * written by group_norm_fwd. dx [B, C, hw] += J^T dy; dgamma, dbeta [C] +=
 * their gradients summed over the batch. */
void group_norm_bwd(int B, int C, int hw, int G, const float *gamma, const float *beta, int silu, const float *x,
                    const float *mean, const float *rstd, const float *dy, float *dx, float *dgamma, float *dbeta);

/* ======================================================================== */
/* Attention (ops/attention.c)                                              */
/* ======================================================================== */

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

/* x [C, hw] and s recorded (batch 1); dx, dy [B, C, hw]. Scratch as
 * attention_scratch. */
void attention_jvp(const attn_params *p, int C, int hw, const float *x, const attn_saved *s, int B, const float *dx,
                   float *dy, float *scratch);
void attention_vjp(const attn_params *p, int C, int hw, const float *x, const attn_saved *s, int B, const float *dy,
                   float *dx, float *scratch);

/* What a training forward pass keeps of one attention block, per image:
 * mean/rstd [groups] of its group norm, the normalised input xn, q, k, v and
 * the output of the heads o (before to_out), all [C, hw], and the
 * probabilities P [heads, hw, hw]. */
typedef struct attn_record {
    float *mean, *rstd, *xn, *q, *k, *v, *o, *P;
} attn_record;

/* Floats of one image's record (a multiple of 16), and its layout at base. */
size_t attn_record_floats(int C, int hw, int heads, int groups);
attn_record attn_record_at(float *base, int C, int hw, int heads, int groups);

/* attention_fwd for one image (the same arithmetic, so the same y), keeping
 * the record r. */
void attention_fwd_record(const attn_params *p, int C, int hw, const float *x, float *y, const attn_record *r);

/* Gradients of an attention block's parameters (each [C] or [C, C]). */
typedef struct attn_grads {
    float *gn_w, *gn_b, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
} attn_grads;

size_t attention_bwd_scratch(int C, int hw);
/* One image: x [C, hw] the block's input, r its record, dy [C, hw]:
 * dx += J^T dy (NULL: skip), parameter gradients += (gr NULL: skip all). */
void attention_bwd(const attn_params *p, int C, int hw, const float *x, const attn_record *r, const float *dy,
                   float *dx, const attn_grads *gr, float *scratch);

/* ======================================================================== */
/* Linear layers, timestep embedding (ops/linear.c)                         */
/* ======================================================================== */

/* y[b] = W x[b] + bias. x: [B, in]; W: [out, in]; bias: [out] or NULL;
 * y: [B, out]. Its J V is linear_fwd without bias. */
void linear_fwd(int B, int in, int out, const float *x, const float *W, const float *bias, float *y);

/* Backward, x: [B, in] recorded, dy: [B, out]: dx [B, in] += dy W (its V J P
 * too); dW [out, in] += dy^T x; db [out] += sum_b dy[b]. */
void linear_bwd(int B, int in, int out, const float *x, const float *W, const float *dy, float *dx, float *dW,
                float *db);

/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * t [B] -> y [B, dim], all in float32 in diffusers' order. With
 * flip_sin_to_cos = 1, freq_shift = 0 also guided-diffusion's (ADM's). */
void timestep_embedding_fwd(int B, int dim, int flip_sin_to_cos, float freq_shift, const float *t, float *y);

/* ======================================================================== */
/* Elementwise and reshaping ops (ops/elementwise.c)                        */
/* ======================================================================== */

/* y = x * sigmoid(x), n elements. In-place allowed. */
void silu_fwd(size_t n, const float *x, float *y);
/* x: [n] recorded input; dx, dy: [B, n] */
void silu_jvp(int B, size_t n, const float *x, const float *dx, float *dy);
void silu_vjp(int B, size_t n, const float *x, const float *dy, float *dx);

/* y = (a + b) / scale, n elements. */
void add_scale_fwd(size_t n, const float *a, const float *b, float scale, float *y);

/* y: [B, ca+cb, hw] = concat(a: [B, ca, hw], b: [B, cb, hw]) along channels. */
void concat_fwd(int B, int ca, int cb, int hw, const float *a, const float *b, float *y);

/* Nearest-neighbour 2x upsampling: x [B, C, h, w] -> y [B, C, 2h, 2w]. */
void upsample2x_fwd(int B, int C, int h, int w, const float *x, float *y);
/* dx [B, C, h, w] += J^T dy, dy [B, C, 2h, 2w]. */
void upsample2x_vjp(int B, int C, int h, int w, const float *dy, float *dx);

/* 2x2 average pooling, stride 2: x [B, C, h, w] -> y [B, C, h/2, w/2]
 * (h, w even). Linear: its J V is avgpool2x2_fwd on the tangents. */
void avgpool2x2_fwd(int B, int C, int h, int w, const float *x, float *y);
/* dx [B, C, h, w] += J^T dy (each input pixel receives dy/4 of its output
 * pixel). Also the training backward. */
void avgpool2x2_vjp(int B, int C, int h, int w, const float *dy, float *dx);

/* FiLM as in ADM's scale-shift ResBlock: y = silu?(x * (1 + scale) + shift)
 * with ss [B, 2C] per image: scale = ss[b, 0:C], shift = ss[b, C:2C].
 * x, y: [B, C, hw]; in place allowed. With silu, y equals film_fwd without
 * it followed by silu_fwd, bit for bit (and likewise the derivatives). */
void film_fwd(int B, int C, int hw, const float *x, const float *ss, int silu, float *y);
/* Linearisation (ss depends on t only, not on x): x [C, hw] and ss [2C] are
 * the recorded batch-1 values; dx, dy [B, C, hw] tangents. dy = J dx. */
void film_jvp(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dx, float *dy);
/* dx [B, C, hw] += J^T dy (same recorded x, ss). */
void film_vjp(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dy, float *dx);
/* Training backward with per-image records x [B, C, hw], ss [B, 2C]:
 * dx += J^T dy (NULL: skip); dss [B, 2C] += d/d(scale, shift) (NULL: skip). */
void film_bwd(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dy, float *dx, float *dss);

/* ======================================================================== */
/* Matrix product (ops/gemm.c)                                              */
/* ======================================================================== */

/* C = alpha op(A) op(B) + beta C, row-major as cblas_sgemm (trans_a/trans_b:
 * 0 or 1). The product is cut into tiles fixed by (M, N, K) alone and each
 * tile computed single-threaded, so the result is bit-identical whatever the
 * number of threads. Every float product of the kernels goes through here. */
void gemm_f32(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc);
/* The tiles' kernel: 1 oneDNN's dnnl_sgemm, 0 OpenBLAS, -1 (default) read
 * the environment at the first product: OpenBLAS unless LOCO_GEMM=dnnl (an
 * experiment: faster, but a column's rounding depends on the product's
 * size). The trainer sets 0 (training runs reproduce their weights). */
extern int ops_gemm_dnnl;

/* ======================================================================== */
/* Stable Diffusion: LayerNorm, GELU, GEGLU, multi-head attention           */
/* (ops/layernorm.c, ops/activation.c, ops/mha.c)                           */
/* ======================================================================== */

/* LayerNorm over the channels of each position: x, y [B, C, T]; gamma, beta
 * [C]; eps as torch (biased variance, rstd = 1 / sqrt(var + eps)). mean,
 * rstd [B, T] when non-NULL (forward records them). In place allowed. */
void layer_norm_fwd(int B, int C, int T, float eps, const float *gamma, const float *beta, const float *x, float *y,
                    float *mean, float *rstd);
/* Linearisation: x [C, T], mean, rstd [T] recorded at batch 1; dx, dy
 * [B, C, T] tangents (dy = J dx) / cotangents (dx += J^T dy). */
void layer_norm_jvp(int B, int C, int T, const float *gamma, const float *x, const float *mean, const float *rstd,
                    const float *dx, float *dy);
void layer_norm_vjp(int B, int C, int T, const float *gamma, const float *x, const float *mean, const float *rstd,
                    const float *dy, float *dx);

typedef enum act_kind {
    ACT_GELU = 0,      /* exact, erf: torch F.gelu        */
    ACT_QUICK_GELU = 1 /* x sigmoid(1.702 x)              */
} act_kind;
void act_fwd(act_kind k, size_t n, const float *x, float *y);                          /* in place allowed */
void act_jvp(act_kind k, int B, size_t n, const float *x, const float *dx, float *dy); /* x [n] recorded; dx, dy [B, n] */
void act_vjp(act_kind k, int B, size_t n, const float *x, const float *dy, float *dx); /* dx += */

/* diffusers' GEGLU after its projection: x [B, 2F, T] (channels 0..F-1 the
 * hidden part, F..2F-1 the gate) -> y [B, F, T] = hidden * gelu(gate) (exact
 * gelu). y must not overlap x. */
void geglu_fwd(int B, int F, int T, const float *x, float *y);
void geglu_jvp(int B, int F, int T, const float *x /*[2F, T] recorded*/, const float *dx, float *dy);
void geglu_vjp(int B, int F, int T, const float *x, const float *dy, float *dx); /* dx += */

/* Multi-head attention with projections, channels-first, as diffusers'
 * Attention (no norm, no residual):
 *   q = Wq x + bq, k = Wk c + bk, v = Wv c + bv (c = the context; c == x for
 *   self-attention), heads split the C channels in contiguous blocks of
 *   d = C/heads, P = softmax over keys of (q_h^T k_h) / sqrt(d) (causal:
 *   query i sees keys j <= i), o_h = v_h P^T, y = Wo o + bo.
 * x [B, C, Tq]; c [B, Dc, Tk]; y [B, C, Tq] (not overlapping x or c);
 * Wq [C, C], Wk, Wv [C, Dc], Wo [C, C]; any bias may be NULL. heads divides
 * C. */
typedef struct mha_params {
    const float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
    int heads, causal;
} mha_params;
/* What the forward keeps for the derivative passes (batch 1): q [C, Tq],
 * k, v [C, Tk], o [C, Tq], P [heads, Tq, Tk] (0 where causality masks). */
/* The record of one image: q [C, Tq], k, v [C, Tk], and per head and query
 * row the softmax's maximum m and 1 / sum inv [heads, Tq]; the probabilities
 * are recomputed from them (not kept: heads x Tq x Tk floats per layer). */
typedef struct mha_saved { float *q, *k, *v, *m, *inv; } mha_saved;
/* Floats of one record (each part starts on a multiple of 16 floats from
 * base), and its layout at base. */
size_t mha_saved_floats(int C, int Tq, int Tk, int heads);
mha_saved mha_saved_at(float *base, int C, int Tq, int Tk, int heads);
/* Floats of scratch mha_fwd, mha_jvp and mha_vjp need for calls on at most B
 * images or vectors (the forward pass takes them one at a time; J V and
 * U^T J keep each vector's projections, so that each head's probabilities
 * are recomputed once per call). */
size_t mha_scratch(int C, int Dc, int Tq, int Tk, int heads, int B);
/* save: NULL, or (B must be 1) where the record is kept. */
void mha_fwd(const mha_params *p, int B, int C, int Tq, int Dc, int Tk, const float *x, const float *c, float *y,
             float *scratch, const mha_saved *save);
/* J V and U^T J with respect to x: self (c is x: its tangent enters k and v
 * too; then Dc == C and Tk == Tq) or cross (c constant). s: the batch-1
 * record of mha_fwd; dx, dy [B, C, Tq]. mha_vjp accumulates into dx. */
void mha_jvp(const mha_params *p, int self, int C, int Tq, int Dc, int Tk, const mha_saved *s, int B, const float *dx,
             float *dy, float *scratch);
void mha_vjp(const mha_params *p, int self, int C, int Tq, int Dc, int Tk, const mha_saved *s, int B, const float *dy,
             float *dx, float *scratch);

#endif
