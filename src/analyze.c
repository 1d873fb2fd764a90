/* analyze.c - the spectrum of the posterior-mean Jacobian: exact for small
 * inputs, randomised with an a-posteriori error bound for large ones. */
#include "linalg.h"
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK from OpenBLAS */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info);

void loco_spectrum_free(loco_spectrum *s) {
    if (!s) return;
    free(s->sv);
    memset(s, 0, sizeof *s);
}

/* eigenvalues (descending) of the symmetric n x n matrix G (destroyed);
 * uplo names the filled triangle in LAPACK's column-major view */
static int sym_eigvals(int n, const char *uplo, double *G, double *w) {
    int lwork = -1, liwork = -1, info = 0, iw;
    double wq;
    dsyevd_("N", uplo, &n, G, &n, w, &wq, &lwork, &iw, &liwork, &info);
    if (info) return info;
    lwork = (int)wq + 1;
    liwork = iw + 1;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    int *iwork = malloc(sizeof(int) * (size_t)liwork);
    if (!work || !iwork) {
        free(work);
        free(iwork);
        return -1;
    }
    dsyevd_("N", uplo, &n, G, &n, w, work, &lwork, iwork, &liwork, &info);
    free(work);
    free(iwork);
    for (int i = 0; i < n / 2; i++) { /* ascending -> descending */
        double t = w[i];
        w[i] = w[n - 1 - i];
        w[n - 1 - i] = t;
    }
    return info;
}

static void gauss(loco_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)loco_rng_normal(r);
}

loco_status loco_jacobian_spectrum(loco_lin *L, loco_output of, size_t max_exact, int k, int power_iters,
                                   uint64_t seed, loco_spectrum *out) {
    if (!L || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_jacobian_spectrum: NULL argument");
    memset(out, 0, sizeof *out);
    const size_t n = loco_lin_input_size(L), m = loco_lin_output_size(L);
    loco_status s = LOCO_OK;
    if (n <= max_exact) {
        /* columns of J, in double: C [n, m] (row i = J e_i) */
        const int blk = 64;
        double *Cd = loco_malloc(sizeof(double) * n * m), *G = loco_malloc(sizeof(double) * n * n);
        float *E = loco_calloc((size_t)blk * n, sizeof(float)), *Y = loco_malloc(sizeof(float) * (size_t)blk * m);
        out->sv = malloc(sizeof(double) * n);
        if (!Cd || !G || !E || !Y || !out->sv) {
            s = loco_fail(LOCO_E_NOMEM, "spectrum: out of memory for the %zu x %zu Jacobian", m, n);
            goto exact_done;
        }
        for (size_t i0 = 0; i0 < n && !s; i0 += blk) {
            int b = (int)(n - i0 < (size_t)blk ? n - i0 : (size_t)blk);
            memset(E, 0, sizeof(float) * (size_t)blk * n);
            for (int j = 0; j < b; j++) E[(size_t)j * n + i0 + j] = 1.0f;
            if ((s = loco_lin_jvp(L, of, NULL, b, E, Y))) break;
            for (size_t e = 0; e < (size_t)b * m; e++) Cd[i0 * m + e] = Y[e];
            out->jvp_vectors += b;
        }
        if (s) goto exact_done;
        /* G = C C^T = J^T J */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)n, (int)m, 1.0, Cd, (int)m, 0.0, G, (int)n);
        /* row-major upper = column-major lower */
        int info = sym_eigvals((int)n, "L", G, out->sv);
        if (info) {
            s = loco_fail(LOCO_E_NUMERIC, "spectrum: eigen-decomposition failed (info %d)", info);
            goto exact_done;
        }
        for (size_t i = 0; i < n; i++) out->sv[i] = sqrt(out->sv[i] > 0 ? out->sv[i] : 0);
        out->n_values = (int)n;
        out->exact = 1;
    exact_done:
        free(Cd);
        free(G);
        free(E);
        free(Y);
        if (s) loco_spectrum_free(out);
        return s;
    }
    /* randomised range finder */
    if (k < 1 || (size_t)k + 10 > n || (size_t)k + 10 > m)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "spectrum: k = %d must be in [1, %zu]", k, (n < m ? n : m) - 10);
    const int l = k + 10, probes = 10;
    float *W = loco_malloc(sizeof(float) * (size_t)l * n), *Y = loco_malloc(sizeof(float) * (size_t)l * m);
    float *B = loco_malloc(sizeof(float) * (size_t)l * n), *P = loco_malloc(sizeof(float) * (size_t)probes * n);
    float *R = loco_malloc(sizeof(float) * (size_t)probes * m);
    double *S = malloc(sizeof(double) * l);
    float *Qt = loco_malloc(sizeof(float) * (size_t)l * n);
    out->sv = malloc(sizeof(double) * l);
    loco_rng rng;
    loco_rng_seed(&rng, seed);
    if (!W || !Y || !B || !P || !R || !S || !Qt || !out->sv) {
        s = loco_fail(LOCO_E_NOMEM, "spectrum: out of memory");
        goto rand_done;
    }
    gauss(&rng, W, (size_t)l * n);
    if ((s = loco_lin_jvp(L, of, NULL, l, W, Y))) goto rand_done; /* rows: J w_i */
    out->jvp_vectors += l;
    linalg_orthonormalize_rows(l, m, Y);
    for (int q = 0; q < power_iters; q++) {
        if ((s = loco_lin_vjp(L, of, NULL, l, Y, W))) goto rand_done; /* J^T Q */
        out->vjp_vectors += l;
        linalg_orthonormalize_rows(l, n, W);
        if ((s = loco_lin_jvp(L, of, NULL, l, W, Y))) goto rand_done;
        out->jvp_vectors += l;
        linalg_orthonormalize_rows(l, m, Y);
    }
    /* B = Q^T J (rows: Q_i^T J) */
    if ((s = loco_lin_vjp(L, of, NULL, l, Y, B))) goto rand_done;
    out->vjp_vectors += l;
    if (linalg_svd_rows(l, n, B, S, Qt, NULL)) {
        s = loco_fail(LOCO_E_NUMERIC, "spectrum: SVD failed");
        goto rand_done;
    }
    out->n_values = k;
    for (int i = 0; i < k; i++) out->sv[i] = S[i];
    /* a-posteriori bound from fresh probes: |(I - QQ^T) J p| */
    gauss(&rng, P, (size_t)probes * n);
    if ((s = loco_lin_jvp(L, of, NULL, probes, P, R))) goto rand_done;
    out->jvp_vectors += probes;
    double worst = 0;
    for (int i = 0; i < probes; i++) {
        float *r = R + (size_t)i * m;
        for (int j = 0; j < l; j++) {
            const float *qj = Y + (size_t)j * m;
            double d = 0;
            for (size_t e = 0; e < m; e++) d += (double)qj[e] * r[e];
            for (size_t e = 0; e < m; e++) r[e] = (float)(r[e] - d * qj[e]);
        }
        double nn = 0;
        for (size_t e = 0; e < m; e++) nn += (double)r[e] * r[e];
        if (sqrt(nn) > worst) worst = sqrt(nn);
    }
    out->err_bound = 10.0 * sqrt(2.0 / M_PI) * worst;
rand_done:
    free(W);
    free(Y);
    free(B);
    free(P);
    free(R);
    free(S);
    free(Qt);
    if (s) loco_spectrum_free(out);
    return s;
}
