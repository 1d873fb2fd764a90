/* mha.c - multi-head attention with its projections, as diffusers' Attention
 * (and transformers' CLIPAttention) without norm or residual, channels-first:
 *   q = W_q x + b_q [C, Tq], k = W_k c + b_k, v = W_v c + b_v [C, Tk],
 *   per head h (d = C / heads channels): S = q_h^T k_h / sqrt(d) [Tq, Tk],
 *   P = softmax_rows(S) (causal: row i over keys j <= i, 0 beyond),
 *   o_h = v_h P^T, y = W_o o + b_o.
 * Derivatives per head (self-attention: dk = W_k dx, dv = W_v dx; cross:
 * the context is constant, dk = dv = 0):
 *   jvp: dS = (dq^T k + q^T dk) / sqrt(d), dP = P (dS - rowsum(P dS)),
 *        do = dv P^T + v dP^T, dy = W_o do
 *   vjp: do = W_o^T dy, dv = do P, dP = do^T v, dS = P (dP - rowsum(P dP)),
 *        dq = k dS^T / sqrt(d), dk = q dS / sqrt(d),
 *        dx += W_q^T dq (+ W_k^T dk + W_v^T dv for self-attention)
 * A masked entry has P = 0, so the softmax derivative leaves it 0 too.
 * The record keeps q, k, v and each row's softmax maximum and normaliser,
 * not P: J V and U^T J recompute P per head from them with the forward
 * pass's own operations (bit-identical), one extra q^T k product per head
 * and call instead of heads x Tq x Tk floats per layer (1.9 GB per UNet
 * branch of Stable Diffusion 2.1 at 512x512).
 * Every product goes through gemm_f32 and every row reduction is one
 * thread's, so results do not depend on the thread count; images are
 * processed one at a time, so an image's result does not depend on B. */
#include "ops.h"
#include "ops_math.h"

/* n floats rounded up to a multiple of 16 (64-byte steps between parts) */
static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

/* ======================================================================== */
/* Shared helpers                                                           */
/* ======================================================================== */

/* y [M, N] = W [M, K] x [K, N] + bias (bias NULL: + beta y). */
static void proj(int M, int N, int K, const float *W, const float *bias, const float *x, float beta, float *y) {
    if (bias) {
        for (int m = 0; m < M; m++)
            for (int i = 0; i < N; i++) y[(size_t)m * N + i] = bias[m];
        beta = 1.0f;
    }
    gemm_f32(0, 0, M, N, K, 1.0f, W, K, x, N, beta, y, N);
}

/* dx [K, N] += W^T dy, W [M, K], dy [M, N]. */
static void proj_t(int M, int N, int K, const float *W, const float *dy, float *dx) {
    gemm_f32(1, 0, K, N, M, 1.0f, W, K, dy, N, 1.0f, dx, N);
}

/* Keys row i of a [rows, cols] score matrix sees. */
static inline int visible(int causal, int i, int cols) { return causal && i + 1 < cols ? i + 1 : cols; }

/* Each row of S [rows, cols] <- softmax(row) over its visible keys, 0 on
 * the others; m_out / inv_out (NULL: not kept) receive each row's maximum
 * and 1 / sum, what recompute_probs needs to rebuild the same P bit for
 * bit. */
static void softmax_rows(int rows, int cols, int causal, float *S, float *m_out, float *inv_out) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < rows; i++) {
        float *row = S + (size_t)i * cols;
        const int n = visible(causal, i, cols);
        float m = row[0];
        for (int j = 1; j < n; j++) m = row[j] > m ? row[j] : m;
        float sum = 0.0f;
        for (int j = 0; j < n; j++) {
            row[j] = fast_expf(row[j] - m);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) row[j] *= inv;
        for (int j = n; j < cols; j++) row[j] = 0.0f;
        if (m_out) m_out[i] = m, inv_out[i] = inv;
    }
}

/* P [Tq, Tk] of head h from the record: the scores again (the same product
 * as the forward pass), then exp(S - m) * inv per row with the recorded m
 * and inv, which are the forward pass's operations on the same numbers: the
 * same P, without keeping heads x Tq x Tk floats per attention layer. */
static void recompute_probs(const mha_saved *s, int h, int d, int Tq, int Tk, int causal, float scale, float *P) {
    const size_t oq = (size_t)h * d * Tq, ok = (size_t)h * d * Tk;
    gemm_f32(1, 0, Tq, Tk, d, scale, s->q + oq, Tq, s->k + ok, Tk, 0.0f, P, Tk);
    const float *mh = s->m + (size_t)h * Tq, *ih = s->inv + (size_t)h * Tq;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < Tq; i++) {
        float *row = P + (size_t)i * Tk;
        const int n = visible(causal, i, Tk);
        const float m = mh[i], inv = ih[i];
        for (int j = 0; j < n; j++) row[j] = fast_expf(row[j] - m);
        for (int j = 0; j < n; j++) row[j] *= inv;
        for (int j = n; j < Tk; j++) row[j] = 0.0f;
    }
}

/* dS <- P * (dS - rowsum(P * dS)), P, dS [rows, cols]: the derivative of
 * softmax_rows at P, forward and transposed alike (the Jacobian is
 * symmetric). Masked entries (P = 0) become 0. */
static void softmax_rows_grad(int rows, int cols, const float *P, float *dS) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < rows; i++) {
        const float *p = P + (size_t)i * cols;
        float *d = dS + (size_t)i * cols;
        double s = 0;
        for (int j = 0; j < cols; j++) s += (double)p[j] * d[j];
        const float sf = (float)s;
        for (int j = 0; j < cols; j++) d[j] = p[j] * (d[j] - sf);
    }
}

/* ======================================================================== */
/* Records, scratch                                                         */
/* ======================================================================== */

size_t mha_saved_floats(int C, int Tq, int Tk, int heads) {
    return up16((size_t)C * Tq) + 2 * up16((size_t)C * Tk) + 2 * up16((size_t)heads * Tq);
}

mha_saved mha_saved_at(float *base, int C, int Tq, int Tk, int heads) {
    mha_saved s;
    s.q = base;
    s.k = s.q + up16((size_t)C * Tq);
    s.v = s.k + up16((size_t)C * Tk);
    s.m = s.v + up16((size_t)C * Tk);
    s.inv = s.m + up16((size_t)heads * Tq);
    return s;
}

/* fwd: q, o [C, Tq], k, v [C, Tk], S [Tq, Tk]; jvp and vjp: P and dS [Tq,
 * Tk], and per vector of the batch (at most B) dq, dO [C, Tq], dk, dv [C, Tk]. */
size_t mha_scratch(int C, int Dc, int Tq, int Tk, int heads, int B) {
    (void)Dc, (void)heads;
    const size_t per = 2 * up16((size_t)C * Tq) + 2 * up16((size_t)C * Tk), fwd = per + up16((size_t)Tq * Tk),
                 lin = 2 * up16((size_t)Tq * Tk) + (size_t)(B > 1 ? B : 1) * per;
    return fwd > lin ? fwd : lin;
}

/* ======================================================================== */
/* Forward                                                                  */
/* ======================================================================== */

void mha_fwd(const mha_params *p, int B, int C, int Tq, int Dc, int Tk, const float *x, const float *c, float *y,
             float *scratch, const mha_saved *save) {
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    float *q = scratch, *o = q + up16((size_t)C * Tq), *k = o + up16((size_t)C * Tq), *v = k + up16((size_t)C * Tk),
          *S = v + up16((size_t)C * Tk);
    if (save) {
        q = save->q;
        k = save->k;
        v = save->v;
    }
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * C * Tq, *cb = c + (size_t)b * Dc * Tk;
        proj(C, Tq, C, p->wq, p->bq, xb, 0.0f, q);
        proj(C, Tk, Dc, p->wk, p->bk, cb, 0.0f, k);
        proj(C, Tk, Dc, p->wv, p->bv, cb, 0.0f, v);
        for (int h = 0; h < p->heads; h++) {
            const size_t oq = (size_t)h * d * Tq, ok = (size_t)h * d * Tk;
            /* S[i, j] = scale sum_c q[c, i] k[c, j] */
            gemm_f32(1, 0, Tq, Tk, d, scale, q + oq, Tq, k + ok, Tk, 0.0f, S, Tk);
            softmax_rows(Tq, Tk, p->causal, S, save ? save->m + (size_t)h * Tq : NULL,
                         save ? save->inv + (size_t)h * Tq : NULL);
            /* o[c, i] = sum_j v[c, j] P[i, j] */
            gemm_f32(0, 1, d, Tq, Tk, 1.0f, v + ok, Tk, S, Tk, 0.0f, o + oq, Tq);
        }
        proj(C, Tq, C, p->wo, p->bo, o, 0.0f, y + (size_t)b * C * Tq);
    }
}

/* ======================================================================== */
/* Linearisation: J V and V J P against one recorded image                  */
/* ======================================================================== */

/* The per-vector parts of the scratch of mha_jvp / mha_vjp. */
typedef struct lin_parts { float *P, *dS, *base; size_t nq, nk; } lin_parts;
static lin_parts parts_of(float *scratch, int C, int Tq, int Tk) {
    lin_parts l;
    l.nq = up16((size_t)C * Tq);
    l.nk = up16((size_t)C * Tk);
    l.P = scratch;
    l.dS = l.P + up16((size_t)Tq * Tk);
    l.base = l.dS + up16((size_t)Tq * Tk);
    return l;
}
/* vector b's dq, dO [C, Tq], dk, dv [C, Tk] */
static float *part(const lin_parts *l, int b, int which) {
    float *v = l->base + (size_t)b * (2 * l->nq + 2 * l->nk);
    static const int before_q[4] = {0, 1, 2, 2}, before_k[4] = {0, 0, 0, 1};
    return v + (size_t)before_q[which] * l->nq + (size_t)before_k[which] * l->nk;
}
enum { P_DQ, P_DO, P_DK, P_DV };

void mha_jvp(const mha_params *p, int self, int C, int Tq, int Dc, int Tk, const mha_saved *s, int B, const float *dx,
             float *dy, float *scratch) {
    (void)Dc;
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    lin_parts l = parts_of(scratch, C, Tq, Tk);
    for (int b = 0; b < B; b++) {
        const float *dxb = dx + (size_t)b * C * Tq;
        proj(C, Tq, C, p->wq, NULL, dxb, 0.0f, part(&l, b, P_DQ));
        if (self) { /* the context is x: Dc == C, Tk == Tq */
            proj(C, Tk, C, p->wk, NULL, dxb, 0.0f, part(&l, b, P_DK));
            proj(C, Tk, C, p->wv, NULL, dxb, 0.0f, part(&l, b, P_DV));
        }
    }
    for (int h = 0; h < p->heads; h++) {
        const size_t oq = (size_t)h * d * Tq, ok = (size_t)h * d * Tk;
        recompute_probs(s, h, d, Tq, Tk, p->causal, scale, l.P);
        for (int b = 0; b < B; b++) {
            float *dq = part(&l, b, P_DQ), *dO = part(&l, b, P_DO), *dk = part(&l, b, P_DK), *dv = part(&l, b, P_DV);
            gemm_f32(1, 0, Tq, Tk, d, scale, dq + oq, Tq, s->k + ok, Tk, 0.0f, l.dS, Tk);
            if (self) gemm_f32(1, 0, Tq, Tk, d, scale, s->q + oq, Tq, dk + ok, Tk, 1.0f, l.dS, Tk);
            softmax_rows_grad(Tq, Tk, l.P, l.dS);
            gemm_f32(0, 1, d, Tq, Tk, 1.0f, s->v + ok, Tk, l.dS, Tk, 0.0f, dO + oq, Tq);
            if (self) gemm_f32(0, 1, d, Tq, Tk, 1.0f, dv + ok, Tk, l.P, Tk, 1.0f, dO + oq, Tq);
        }
    }
    for (int b = 0; b < B; b++) proj(C, Tq, C, p->wo, NULL, part(&l, b, P_DO), 0.0f, dy + (size_t)b * C * Tq);
}

void mha_vjp(const mha_params *p, int self, int C, int Tq, int Dc, int Tk, const mha_saved *s, int B, const float *dy,
             float *dx, float *scratch) {
    (void)Dc;
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    lin_parts l = parts_of(scratch, C, Tq, Tk);
    for (int b = 0; b < B; b++)
        gemm_f32(1, 0, C, Tq, C, 1.0f, p->wo, C, dy + (size_t)b * C * Tq, Tq, 0.0f, part(&l, b, P_DO), Tq);
    for (int h = 0; h < p->heads; h++) {
        const size_t oq = (size_t)h * d * Tq, ok = (size_t)h * d * Tk;
        recompute_probs(s, h, d, Tq, Tk, p->causal, scale, l.P);
        for (int b = 0; b < B; b++) {
            float *dq = part(&l, b, P_DQ), *dO = part(&l, b, P_DO), *dk = part(&l, b, P_DK), *dv = part(&l, b, P_DV);
            if (self) gemm_f32(0, 0, d, Tk, Tq, 1.0f, dO + oq, Tq, l.P, Tk, 0.0f, dv + ok, Tk);
            gemm_f32(1, 0, Tq, Tk, d, 1.0f, dO + oq, Tq, s->v + ok, Tk, 0.0f, l.dS, Tk);
            softmax_rows_grad(Tq, Tk, l.P, l.dS);
            gemm_f32(0, 1, d, Tq, Tk, scale, s->k + ok, Tk, l.dS, Tk, 0.0f, dq + oq, Tq);
            if (self) gemm_f32(0, 0, d, Tk, Tq, scale, s->q + oq, Tq, l.dS, Tk, 0.0f, dk + ok, Tk);
        }
    }
    for (int b = 0; b < B; b++) {
        float *dxb = dx + (size_t)b * C * Tq;
        proj_t(C, Tq, C, p->wq, part(&l, b, P_DQ), dxb);
        if (self) {
            proj_t(C, Tk, C, p->wk, part(&l, b, P_DK), dxb);
            proj_t(C, Tk, C, p->wv, part(&l, b, P_DV), dxb);
        }
    }
}
