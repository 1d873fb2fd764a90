/* linear.c - fully connected layers (the time embedding's MLP, the ResBlocks'
 * time_emb_proj) and the sinusoidal timestep embedding that feeds them.
 *   linear: y[b] = W x[b] + bias; bwd: dx += dy W, dW += dy^T x,
 *   db += sum_b dy[b]. Its J V is linear_fwd without bias.
 *   timestep embedding: float32 throughout, in diffusers' order; with
 *   flip_sin_to_cos = 1 and freq_shift = 0 it is guided-diffusion's
 *   timestep_embedding too. Its frequencies and arguments equal those of a
 *   float32 computation with each operation rounded once, and the embedding
 *   is within 6e-8 of it (test_ops). PyTorch's own exp differs by backend: a
 *   frequency one ulp off (as SLEEF's vectorised expf gives for 8 of 64)
 *   moves the embedding by up to ~3e-5 at t near 1000. */
#include "ops.h"

#include <math.h>

void linear_fwd(int B, int in, int out, const float *x, const float *W, const float *bias, float *y) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < out; o++) y[(size_t)b * out + o] = bias ? bias[o] : 0.0f;
    gemm_f32(0, 1, B, out, in, 1.0f, x, in, W, in, 1.0f, y, out);
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
