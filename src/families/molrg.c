/* molrg.c - the MoLRG closed-form model (formulas in molrg.h): creation,
 * loading, posterior mean, and exact Jacobian products. */
#include "molrg.h"
#include "linalg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOLRG_TAG "molrg"

/* ======================================================================== */
/* Files                                                                    */
/* ======================================================================== */

int molrg_is_file(const char *path) {
    if (!loco_file_exists(path)) return 0;
    loco_tensors *f;
    if (loco_tensors_open(path, &f) != LOCO_OK) return 0;
    const char *k = loco_tensors_metadata(f, "loco_model");
    int yes = k && strcmp(k, MOLRG_TAG) == 0;
    loco_tensors_close(f);
    return yes;
}

void molrg_free(molrg *mo) {
    if (!mo) return;
    free(mo->U);
    free(mo->logpi);
    free(mo);
}

/* One decimal integer in [1, max] at *s (digits only), advancing *s. The
 * value is range-checked as it grows: sscanf's %d on a number past int is
 * undefined behaviour. */
static bool read_dim(const char **s, long max, int *out) {
    const char *p = *s;
    long v = 0;
    if (*p < '0' || *p > '9') return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = 10 * v + (*p - '0');
        if (v > max) return false;
    }
    if (v < 1) return false;
    *out = (int)v;
    *s = p;
    return true;
}

/* "CxHxW" exactly, C in [1, 64], H and W in [1, 4096] */
static bool parse_shape(const char *s, molrg *mo) {
    return s && read_dim(&s, 64, &mo->C) && *s++ == 'x' && read_dim(&s, 4096, &mo->H) && *s++ == 'x' &&
           read_dim(&s, 4096, &mo->W) && *s == 0;
}

loco_status molrg_load(const char *path, molrg **out) {
    *out = NULL;
    loco_tensors *f;
    loco_status s = loco_tensors_open(path, &f);
    if (s) return s;
    molrg *mo = calloc(1, sizeof *mo);
    float *pi = NULL;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    if (!mo) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    const char *shape = loco_tensors_metadata(f, "shape"), *sg = loco_tensors_metadata(f, "sigma0");
    if (!parse_shape(shape, mo)) {
        s = loco_fail(LOCO_E_FORMAT, "%s: metadata 'shape' must be CxHxW with C in [1, 64], H and W in [1, 4096] "
                      "(got '%.64s')", path, shape ? shape : "(none)");
        goto done;
    }
    mo->sigma0 = 0;
    if (sg) {
        char *end;
        double v = strtod(sg, &end);
        if (*end || !(v >= 0 && v < 100)) {
            s = loco_fail(LOCO_E_FORMAT, "%s: metadata 'sigma0' = '%s' is not a number in [0, 100)", path, sg);
            goto done;
        }
        mo->sigma0 = (float)v;
    }
    mo->n = (size_t)mo->C * mo->H * mo->W;
    if ((s = loco_tensors_read_f32(f, "U", &mo->U, &nd, sh, 0))) goto done;
    if (nd != 3 || sh[0] < 1 || sh[1] < 1 || (size_t)sh[2] != mo->n || (size_t)sh[1] > mo->n || sh[0] > 4096) {
        s = loco_fail(LOCO_E_SHAPE, "%s: tensor 'U' must be [K, d, %zu] with 1 <= d <= %zu", path, mo->n, mo->n);
        goto done;
    }
    mo->K = (int)sh[0];
    mo->d = (int)sh[1];
    if ((s = loco_tensors_read_f32(f, "pi", &pi, &nd, sh, 0))) goto done;
    if (nd != 1 || sh[0] != mo->K) {
        s = loco_fail(LOCO_E_SHAPE, "%s: tensor 'pi' must be [%d]", path, mo->K);
        goto done;
    }
    mo->logpi = malloc(sizeof(float) * (size_t)mo->K);
    double tot = 0;
    for (int k = 0; k < mo->K; k++) {
        if (!(pi[k] > 0)) {
            s = loco_fail(LOCO_E_NUMERIC, "%s: tensor 'pi': weight %d is not positive", path, k);
            goto done;
        }
        tot += pi[k];
    }
    for (int k = 0; k < mo->K; k++) mo->logpi[k] = (float)log(pi[k] / tot);
    /* each block must have orthonormal rows */
    for (int k = 0; k < mo->K; k++)
        for (int i = 0; i < mo->d; i++)
            for (int j = 0; j <= i; j++) {
                const float *a = mo->U + ((size_t)k * mo->d + i) * mo->n, *b = mo->U + ((size_t)k * mo->d + j) * mo->n;
                double dd = 0;
                for (size_t e = 0; e < mo->n; e++) dd += (double)a[e] * b[e];
                if (fabs(dd - (i == j)) > 1e-4) {
                    s = loco_fail(LOCO_E_NUMERIC, "%s: tensor 'U': block %d rows %d and %d are not orthonormal (%.3g)",
                                  path, k, i, j, dd);
                    goto done;
                }
            }
done:
    free(pi);
    loco_tensors_close(f);
    if (s) molrg_free(mo);
    else *out = mo;
    return s;
}

loco_status loco_molrg_init(const char *path, int C, int H, int W, int K, int d, float sigma0, uint64_t seed) {
    if (!path || C < 1 || H < 1 || W < 1 || K < 1 || d < 1 || C > 64 || H > 4096 || W > 4096 || K > 4096)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "molrg init: bad sizes");
    size_t n = (size_t)C * H * W;
    if ((size_t)d > n) return loco_fail(LOCO_E_INVALID_ARGUMENT, "molrg init: d = %d exceeds n = %zu", d, n);
    if (!(sigma0 >= 0 && sigma0 < 100)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "molrg init: sigma0 must be in [0, 100)");
    size_t tot;
    if (!loco_mul_ok((size_t)K * d, n, &tot) || tot > ((size_t)1 << 30))
        return loco_fail(LOCO_E_NOMEM, "molrg init: K*d*n = %d*%d*%zu is too large", K, d, n);
    float *U = loco_malloc(sizeof(float) * tot), *pi = malloc(sizeof(float) * (size_t)K);
    if (!U || !pi) {
        free(U);
        free(pi);
        return loco_fail(LOCO_E_NOMEM, "molrg init: out of memory");
    }
    loco_rng rng;
    loco_rng_seed(&rng, seed);
    for (size_t i = 0; i < tot; i++) U[i] = (float)loco_rng_normal(&rng);
    for (int k = 0; k < K; k++) {
        linalg_orthonormalize_rows(d, n, U + (size_t)k * d * n);
        pi[k] = 1.0f / (float)K;
    }
    char shape[64], sg[32];
    snprintf(shape, sizeof shape, "%dx%dx%d", C, H, W);
    snprintf(sg, sizeof sg, "%.9g", sigma0);
    const char *meta[] = {"loco_model", MOLRG_TAG, "shape", shape, "sigma0", sg};
    loco_tensor_ref refs[2] = {{"U", LOCO_DTYPE_F32, 3, {K, d, (int64_t)n}, U}, {"pi", LOCO_DTYPE_F32, 1, {K}, pi}};
    loco_status s = loco_tensors_write(path, refs, 2, meta, 3);
    free(U);
    free(pi);
    return s;
}

/* ======================================================================== */
/* Posterior mean                                                           */
/* ======================================================================== */

struct molrg_lin {
    const molrg *mo;
    float sa, c, b;  /* sqrt(a), c, b                                  */
    double *w;       /* [K] posterior weights                         */
    float *proj;     /* [K, d] U_k x                                  */
    float *mk;       /* [K, n] m_k(x)                                 */
    float *x, *x0;   /* [n]                                           */
};

/* Fills w, proj, mk, x0 at x for abar a. */
static void evaluate(const molrg *mo, const float *x, float a, double *w, float *proj, float *mk, float *x0) {
    const size_t n = mo->n;
    const int K = mo->K, d = mo->d;
    const double s0 = mo->sigma0, c = a * s0 * s0 + 1.0 - a, b = a / (a + c), sa = sqrt(a);
    double wmax = -INFINITY;
    for (int k = 0; k < K; k++) {
        double q = 0;
        for (int i = 0; i < d; i++) {
            const float *u = mo->U + ((size_t)k * d + i) * n;
            double p = 0;
            for (size_t e = 0; e < n; e++) p += (double)u[e] * x[e];
            proj[k * d + i] = (float)p;
            q += p * p;
        }
        w[k] = mo->logpi[k] - 0.5 * d * log((a + c) / c) + 0.5 * (b / c) * q;
        if (w[k] > wmax) wmax = w[k];
    }
    double tot = 0;
    for (int k = 0; k < K; k++) tot += (w[k] = exp(w[k] - wmax));
    for (int k = 0; k < K; k++) w[k] /= tot;
    const double cu = sa * (1 - b * (1 + s0 * s0)) / c, cx = sa * s0 * s0 / c;
    memset(x0, 0, sizeof(float) * n);
    for (int k = 0; k < K; k++) {
        float *m = mk + (size_t)k * n;
        for (size_t e = 0; e < n; e++) m[e] = (float)(cx * x[e]);
        for (int i = 0; i < d; i++) {
            const float *u = mo->U + ((size_t)k * d + i) * n;
            const float f = (float)(cu * proj[k * d + i]);
            for (size_t e = 0; e < n; e++) m[e] += f * u[e];
        }
        for (size_t e = 0; e < n; e++) x0[e] += (float)(w[k] * m[e]);
    }
}

void molrg_x0(const molrg *mo, int B, const float *x, const float *abar, float *x0) {
    double *w = malloc(sizeof(double) * mo->K);
    float *proj = malloc(sizeof(float) * (size_t)mo->K * mo->d), *mk = malloc(sizeof(float) * (size_t)mo->K * mo->n);
    if (!w || !proj || !mk) {
        free(w);
        free(proj);
        free(mk);
        for (size_t i = 0; i < (size_t)B * mo->n; i++) x0[i] = NAN;
        return;
    }
    for (int b = 0; b < B; b++) evaluate(mo, x + (size_t)b * mo->n, abar[b], w, proj, mk, x0 + (size_t)b * mo->n);
    free(w);
    free(proj);
    free(mk);
}

/* ======================================================================== */
/* Linearization                                                            */
/* ======================================================================== */

void molrg_lin_free(molrg_lin *l) {
    if (!l) return;
    free(l->w);
    free(l->proj);
    free(l->mk);
    free(l->x);
    free(l->x0);
    free(l);
}

loco_status molrg_lin_new(const molrg *mo, const float *x, float abar, molrg_lin **out) {
    *out = NULL;
    molrg_lin *l = calloc(1, sizeof *l);
    const size_t n = mo->n;
    if (!l || !(l->w = malloc(sizeof(double) * mo->K)) || !(l->proj = malloc(sizeof(float) * (size_t)mo->K * mo->d)) ||
        !(l->mk = loco_malloc(sizeof(float) * (size_t)mo->K * n)) ||
        !(l->x = malloc(sizeof(float) * n)) || !(l->x0 = malloc(sizeof(float) * n))) {
        molrg_lin_free(l);
        return loco_fail(LOCO_E_NOMEM, "molrg: out of memory");
    }
    l->mo = mo;
    const double s0 = mo->sigma0, c = abar * s0 * s0 + 1.0 - abar;
    l->sa = sqrtf(abar);
    l->c = (float)c;
    l->b = (float)(abar / (abar + c));
    memcpy(l->x, x, sizeof(float) * n);
    evaluate(mo, x, abar, l->w, l->proj, l->mk, l->x0);
    *out = l;
    return LOCO_OK;
}

const float *molrg_lin_x0(const molrg_lin *l) { return l->x0; }

/* out = sqrt(a) M_k v (accumulated with weight wk) ; returns g_k . v */
static double apply_Mk(const molrg_lin *l, int k, double wk, const float *v, float *out) {
    const molrg *mo = l->mo;
    const size_t n = mo->n;
    const double s0 = mo->sigma0, cu = l->sa * (1 - l->b * (1 + s0 * s0)) / l->c, cx = l->sa * s0 * s0 / l->c;
    double gv = 0;
    for (int i = 0; i < mo->d; i++) {
        const float *u = mo->U + ((size_t)k * mo->d + i) * n;
        double p = 0;
        for (size_t e = 0; e < n; e++) p += (double)u[e] * v[e];
        gv += (double)l->proj[k * mo->d + i] * p;
        const float f = (float)(wk * cu * p);
        for (size_t e = 0; e < n; e++) out[e] += f * u[e];
    }
    if (cx != 0)
        for (size_t e = 0; e < n; e++) out[e] += (float)(wk * cx * v[e]);
    return gv * l->b / l->c;
}

void molrg_lin_jvp(const molrg_lin *l, int k, const float *V, float *out) {
    const molrg *mo = l->mo;
    const size_t n = mo->n;
    double *gv = malloc(sizeof(double) * mo->K);
    for (int j = 0; j < k; j++) {
        const float *v = V + (size_t)j * n;
        float *o = out + (size_t)j * n;
        memset(o, 0, sizeof(float) * n);
        double gb = 0;
        for (int q = 0; q < mo->K; q++) {
            gv[q] = apply_Mk(l, q, l->w[q], v, o);
            gb += l->w[q] * gv[q];
        }
        for (int q = 0; q < mo->K; q++) {
            const float f = (float)(l->w[q] * (gv[q] - gb));
            const float *m = l->mk + (size_t)q * n;
            for (size_t e = 0; e < n; e++) o[e] += f * m[e];
        }
    }
    free(gv);
}

void molrg_lin_vjp(const molrg_lin *l, int k, const float *U, float *out) {
    const molrg *mo = l->mo;
    const size_t n = mo->n;
    double *mu = malloc(sizeof(double) * mo->K);
    for (int j = 0; j < k; j++) {
        const float *u = U + (size_t)j * n;
        float *o = out + (size_t)j * n;
        memset(o, 0, sizeof(float) * n);
        /* sum_q w_q (m_q . u)(g_q - gbar) = sum_q g_q w_q ((m_q . u) - S),
         * S = sum_q w_q (m_q . u): the coefficients are formed in double, so
         * the large, nearly equal g_q and gbar never cancel in float */
        double S = 0;
        for (int q = 0; q < mo->K; q++) {
            const float *m = l->mk + (size_t)q * n;
            double d = 0;
            for (size_t e = 0; e < n; e++) d += (double)m[e] * u[e];
            mu[q] = d;
            S += l->w[q] * d;
        }
        for (int q = 0; q < mo->K; q++) {
            apply_Mk(l, q, l->w[q], u, o); /* M_q is symmetric */
            const double f = l->w[q] * (mu[q] - S) * l->b / l->c;
            for (int i = 0; i < mo->d; i++) {
                const float *ui = mo->U + ((size_t)q * mo->d + i) * n;
                const float fi = (float)(f * l->proj[q * mo->d + i]);
                for (size_t e = 0; e < n; e++) o[e] += fi * ui[e];
            }
        }
    }
    free(mu);
}
