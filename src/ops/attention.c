/* attention.c - the self-attention block of diffusers' Attention on a
 * [C, hw] map, with its group norm, q/k/v/out projections and residual:
 *   xn = GN(x), q = W_q xn + b_q (k, v alike),
 *   per head h (d = C / heads channels): S = q_h^T k_h / sqrt(d),
 *   P = softmax_rows(S), o_h = v_h P^T,
 *   y = (W_o o + b_o + x) / rescale.
 * Derivatives per head:
 *   jvp: dS = (dq^T k + q^T dk) / sqrt(d), dP = P (dS - rowsum(P dS)),
 *        do = dv P^T + v dP^T
 *   vjp: dv = do P, dP = do^T v, dS = P (dP - rowsum(P dP)),
 *        dq = k dS^T / sqrt(d), dk = q dS / sqrt(d)
 *   bwd: the vjp with a per-image record, plus dW_o = g o^T,
 *        dW_q = dq xn^T (k, v alike) and the group norm's gradients.
 * attention_fwd and attention_fwd_record run the same code (attn_image_fwd),
 * so a training forward pass gives the very eps of loco_model_eps; the vjp
 * and the training backward share theirs (attn_heads_vjp, qkv_vjp). */
#include "ops.h"
#include "ops_math.h"

/* ======================================================================== */
/* Shared helpers                                                           */
/* ======================================================================== */

/* With bias: y [C, hw] = W [C, C] x [C, hw] + bias (y is set to the bias,
 * then the product added). Without: y = op(W) x + beta y, op(W) = W^T if
 * trans. */
static void proj(int C, int hw, const float *W, int trans, const float *bias, const float *x, float beta, float *y) {
    if (bias) {
        for (int c = 0; c < C; c++)
            for (int i = 0; i < hw; i++) y[(size_t)c * hw + i] = bias[c];
        beta = 1.0f;
    }
    gemm_f32(trans ? 1 : 0, 0, C, hw, C, 1.0f, W, C, x, hw, beta, y, hw);
}

/* Each row of S [rows, cols] <- softmax(row) */
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

/* dS <- P * (dS - rowsum(P * dS)), rows of length n: the derivative of
 * softmax_rows at P, forward (a tangent of S in, of P out) and transposed
 * (a cotangent of P in, of S out) alike, the Jacobian being symmetric. */
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

/* ======================================================================== */
/* Forward                                                                  */
/* ======================================================================== */

size_t attention_scratch(int C, int hw) { return 5 * (size_t)C * hw + (size_t)hw * hw; }

/* One image through the block: x [C, hw] -> y [C, hw], keeping xn, q, k, v,
 * o [C, hw] and the group norm's mean/rstd (when non-NULL). The heads'
 * probabilities go to P + h * P_stride: [heads, hw, hw] with P_stride
 * hw * hw, or one [hw, hw] buffer that each head reuses with P_stride 0. */
static void attn_image_fwd(const attn_params *p, int C, int hw, const float *x, float *y, float *mean, float *rstd,
                           float *xn, float *q, float *k, float *v, float *o, float *P, size_t P_stride) {
    const size_t n = (size_t)C * hw;
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    group_norm_fwd(1, C, hw, p->groups, p->eps, p->gn_w, p->gn_b, 0, x, xn, mean, rstd);
    proj(C, hw, p->wq, 0, p->bq, xn, 0.0f, q);
    proj(C, hw, p->wk, 0, p->bk, xn, 0.0f, k);
    proj(C, hw, p->wv, 0, p->bv, xn, 0.0f, v);
    for (int h = 0; h < p->heads; h++) {
        const size_t off = (size_t)h * d * hw;
        float *Ph = P + (size_t)h * P_stride;
        /* S[i, j] = scale * sum_c q[c, i] k[c, j] */
        gemm_f32(1, 0, hw, hw, d, scale, q + off, hw, k + off, hw, 0.0f, Ph, hw);
        softmax_rows(hw, hw, Ph);
        /* o[c, i] = sum_j v[c, j] P[i, j] */
        gemm_f32(0, 1, d, hw, hw, 1.0f, v + off, hw, Ph, hw, 0.0f, o + off, hw);
    }
    proj(C, hw, p->wo, 0, p->bo, o, 0.0f, y);
    for (size_t i = 0; i < n; i++) y[i] = (y[i] + x[i]) / p->rescale;
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
    for (int b = 0; b < B; b++)
        attn_image_fwd(p, C, hw, x + (size_t)b * n, y + (size_t)b * n, save ? save->mean : NULL,
                       save ? save->rstd : NULL, xn, q, k, v, o, save ? save->P : S, save ? (size_t)hw * hw : 0);
}

/* ======================================================================== */
/* Linearisation: J V and V J P against one recorded image                  */
/* ======================================================================== */

/* Per head, from the cotangent dO [C, hw] of the heads' output o:
 * dv = dO P, dS = softmax'(dO^T v), dq = k dS^T * scale, dk = q dS * scale.
 * dS: [hw, hw] scratch. */
static void attn_heads_vjp(const attn_params *p, int C, int hw, const float *q, const float *k, const float *v,
                           const float *P, const float *dO, float *dq, float *dk, float *dv, float *dS) {
    const int d = C / p->heads;
    const float scale = 1.0f / sqrtf((float)d);
    for (int h = 0; h < p->heads; h++) {
        const size_t o = (size_t)h * d * hw;
        const float *Ph = P + (size_t)h * hw * hw;
        gemm_f32(0, 0, d, hw, hw, 1.0f, dO + o, hw, Ph, hw, 0.0f, dv + o, hw);
        gemm_f32(1, 0, hw, hw, d, 1.0f, dO + o, hw, v + o, hw, 0.0f, dS, hw);
        softmax_rows_grad(hw, Ph, dS);
        gemm_f32(0, 1, d, hw, hw, scale, k + o, hw, dS, hw, 0.0f, dq + o, hw);
        gemm_f32(0, 0, d, hw, hw, scale, q + o, hw, dS, hw, 0.0f, dk + o, hw);
    }
}

/* g <- W_q^T dq + W_k^T dk + W_v^T dv: the cotangent of the group norm's
 * output. */
static void qkv_vjp(const attn_params *p, int C, int hw, const float *dq, const float *dk, const float *dv, float *g) {
    proj(C, hw, p->wq, 1, NULL, dq, 0.0f, g);
    proj(C, hw, p->wk, 1, NULL, dk, 1.0f, g);
    proj(C, hw, p->wv, 1, NULL, dv, 1.0f, g);
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
        proj(C, hw, p->wq, 0, NULL, dxn, 0.0f, dq);
        proj(C, hw, p->wk, 0, NULL, dxn, 0.0f, dk);
        proj(C, hw, p->wv, 0, NULL, dxn, 0.0f, dv);
        for (int h = 0; h < p->heads; h++) {
            const size_t o = (size_t)h * d * hw;
            const float *P = s->P + (size_t)h * hw * hw;
            gemm_f32(1, 0, hw, hw, d, scale, dq + o, hw, s->k + o, hw, 0.0f, dS, hw);
            gemm_f32(1, 0, hw, hw, d, scale, s->q + o, hw, dk + o, hw, 1.0f, dS, hw);
            softmax_rows_grad(hw, P, dS);
            gemm_f32(0, 1, d, hw, hw, 1.0f, dv + o, hw, P, hw, 0.0f, dO + o, hw);
            gemm_f32(0, 1, d, hw, hw, 1.0f, s->v + o, hw, dS, hw, 1.0f, dO + o, hw);
        }
        proj(C, hw, p->wo, 0, NULL, dO, 0.0f, dyb);
        for (size_t i = 0; i < n; i++) dyb[i] = (dyb[i] + dxb[i]) / p->rescale;
    }
}

void attention_vjp(const attn_params *p, int C, int hw, const float *x, const attn_saved *s, int B, const float *dy,
                   float *dx, float *scratch) {
    const size_t n = (size_t)C * hw;
    float *g = scratch, *dO = g + n, *dq = dO + n, *dk = dq + n, *dv = dk + n, *dS = dv + n;
    for (int b = 0; b < B; b++) {
        const float *dyb = dy + (size_t)b * n;
        float *dxb = dx + (size_t)b * n;
        for (size_t i = 0; i < n; i++) {
            g[i] = dyb[i] / p->rescale;
            dxb[i] += g[i]; /* residual */
        }
        proj(C, hw, p->wo, 1, NULL, g, 0.0f, dO);
        attn_heads_vjp(p, C, hw, s->q, s->k, s->v, s->P, dO, dq, dk, dv, dS);
        qkv_vjp(p, C, hw, dq, dk, dv, g);
        group_norm_vjp(1, C, hw, p->groups, p->gn_w, p->gn_b, 0, x, s->mean, s->rstd, g, dxb);
    }
}

/* ======================================================================== */
/* Training: per-image record, backward with parameter gradients            */
/* ======================================================================== */

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

void attention_fwd_record(const attn_params *p, int C, int hw, const float *x, float *y, const attn_record *r) {
    attn_image_fwd(p, C, hw, x, y, r->mean, r->rstd, r->xn, r->q, r->k, r->v, r->o, r->P, (size_t)hw * hw);
}

size_t attention_bwd_scratch(int C, int hw) { return attention_scratch(C, hw); }

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
    for (size_t i = 0; i < n; i++) g[i] = dy[i] / p->rescale;
    if (dx)
        for (size_t i = 0; i < n; i++) dx[i] += g[i]; /* residual */
    if (gr) proj_wgrad(C, hw, g, r->o, gr->wo, gr->bo);
    proj(C, hw, p->wo, 1, NULL, g, 0.0f, dO);
    attn_heads_vjp(p, C, hw, r->q, r->k, r->v, r->P, dO, dq, dk, dv, dS);
    if (gr) {
        proj_wgrad(C, hw, dq, r->xn, gr->wq, gr->bq);
        proj_wgrad(C, hw, dk, r->xn, gr->wk, gr->bk);
        proj_wgrad(C, hw, dv, r->xn, gr->wv, gr->bv);
    }
    qkv_vjp(p, C, hw, dq, dk, dv, g);
    group_norm_bwd(1, C, hw, p->groups, p->gn_w, p->gn_b, 0, x, r->mean, r->rstd, g, dx, gr ? gr->gn_w : NULL,
                   gr ? gr->gn_b : NULL);
}
