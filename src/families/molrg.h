/* molrg.h - the mixture of low-rank Gaussians (MoLRG) data model of the LOCO
 * Edit paper, whose posterior mean and its Jacobian are exact closed forms.
 *
 * Data: with probability pi_k, x0 = U_k z + sigma0 e, z ~ N(0, I_d), e ~
 * N(0, I_n), U_k [n, d] with orthonormal columns (stored as rows of a
 * [d, n] block). Noising: x = sqrt(a) x0 + sqrt(1-a) eps.
 * Given k, x ~ N(0, S_k), S_k = a U_k U_k^T + c I, c = a sigma0^2 + 1 - a, so
 *   S_k^-1 = (I - b U_k U_k^T) / c,  b = a / (a + c)
 *   m_k(x) = E[x0 | x, k] = sqrt(a) M_k x,
 *   M_k = ((1 - b (1 + sigma0^2)) U_k U_k^T + sigma0^2 I) / c
 *   log w_k(x) = log pi_k - d/2 log((a + c)/c) + (b / 2c) |U_k^T x|^2 + const
 *   x0_hat(x) = sum_k w_k m_k(x)
 *   J v   = sum_k w_k sqrt(a) M_k v + sum_k w_k (g_k . v - gbar . v) m_k
 *   J^T u = sum_k w_k sqrt(a) M_k u + sum_k w_k (m_k . u) (g_k - gbar)
 * with g_k = (b / c) U_k U_k^T x = grad log of the k-th Gaussian term and
 * gbar = sum_k w_k g_k. */
#ifndef LOCO_MOLRG_H
#define LOCO_MOLRG_H

#include "internal.h"

typedef struct molrg {
    int K, d, C, H, W;
    size_t n;       /* C*H*W                                  */
    float *U;       /* [K, d, n]: rows of each block orthonormal */
    float *logpi;   /* [K]                                    */
    float sigma0;
} molrg;

/* True if path is a safetensors file whose metadata names a MoLRG model. */
int molrg_is_file(const char *path);
loco_status molrg_load(const char *path, molrg **out);
void molrg_free(molrg *mo);

/* x0_hat for a batch; eps optional. abar per image. */
void molrg_x0(const molrg *mo, int B, const float *x, const float *abar, float *x0);

/* Linearization state at one point. */
typedef struct molrg_lin molrg_lin;
loco_status molrg_lin_new(const molrg *mo, const float *x, float abar, molrg_lin **out);
void molrg_lin_free(molrg_lin *l);
const float *molrg_lin_x0(const molrg_lin *l);
/* J_x0 V for k vectors [k, n] -> [k, n]; J_x0^T U likewise. */
void molrg_lin_jvp(const molrg_lin *l, int k, const float *V, float *out);
void molrg_lin_vjp(const molrg_lin *l, int k, const float *U, float *out);

#endif
