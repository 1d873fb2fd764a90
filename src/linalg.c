/* linalg.c - Jacobi eigen-solver, thin SVD via the Gram matrix, and
 * Gram-Schmidt, all accumulating in double. */
#include "linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int linalg_sym_eig(int k, double *A, double *w, double *V) {
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) V[i * k + j] = i == j;
    int sweep;
    for (sweep = 0; sweep < 100; sweep++) {
        double off = 0, tot = 0;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                tot += A[i * k + j] * A[i * k + j];
                if (i != j) off += A[i * k + j] * A[i * k + j];
            }
        if (off <= 1e-30 * tot || off == 0) break;
        for (int p = 0; p < k - 1; p++)
            for (int q = p + 1; q < k; q++) {
                double apq = A[p * k + q];
                if (fabs(apq) < 1e-300) continue;
                double app = A[p * k + p], aqq = A[q * k + q];
                double theta = (aqq - app) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int r = 0; r < k; r++) { /* A <- A J */
                    double arp = A[r * k + p], arq = A[r * k + q];
                    A[r * k + p] = c * arp - s * arq;
                    A[r * k + q] = s * arp + c * arq;
                }
                for (int r = 0; r < k; r++) { /* A <- J^T A */
                    double apr = A[p * k + r], aqr = A[q * k + r];
                    A[p * k + r] = c * apr - s * aqr;
                    A[q * k + r] = s * apr + c * aqr;
                }
                for (int r = 0; r < k; r++) {
                    double vrp = V[r * k + p], vrq = V[r * k + q];
                    V[r * k + p] = c * vrp - s * vrq;
                    V[r * k + q] = s * vrp + c * vrq;
                }
            }
    }
    for (int i = 0; i < k; i++) w[i] = A[i * k + i];
    /* sort descending (selection sort on columns) */
    for (int i = 0; i < k; i++) {
        int m = i;
        for (int j = i + 1; j < k; j++)
            if (w[j] > w[m]) m = j;
        if (m != i) {
            double t = w[i];
            w[i] = w[m];
            w[m] = t;
            for (int r = 0; r < k; r++) {
                t = V[r * k + i];
                V[r * k + i] = V[r * k + m];
                V[r * k + m] = t;
            }
        }
    }
    return sweep < 100 ? sweep : -1;
}

int linalg_svd_rows(int k, size_t n, const float *W, double *S, float *Qt, double *P) {
    double *G = malloc(sizeof(double) * (size_t)k * k), *V = malloc(sizeof(double) * (size_t)k * k);
    double *row = malloc(sizeof(double) * n);
    if (!G || !V || !row) {
        free(G);
        free(V);
        free(row);
        return -1;
    }
    for (int i = 0; i < k; i++)
        for (int j = i; j < k; j++) {
            double s = 0;
            const float *a = W + (size_t)i * n, *b = W + (size_t)j * n;
            for (size_t e = 0; e < n; e++) s += (double)a[e] * b[e];
            G[i * k + j] = G[j * k + i] = s;
        }
    int rc = linalg_sym_eig(k, G, S, V) < 0 ? -1 : 0;
    for (int i = 0; i < k; i++) S[i] = S[i] > 0 ? sqrt(S[i]) : 0;
    for (int i = 0; i < k; i++) {
        /* Qt[i] = (sum_j V[j, i] W[j]) / S[i] */
        memset(row, 0, sizeof(double) * n);
        for (int j = 0; j < k; j++) {
            double c = V[j * k + i];
            const float *a = W + (size_t)j * n;
            for (size_t e = 0; e < n; e++) row[e] += c * a[e];
        }
        double inv = S[i] > 1e-12 * S[0] && S[i] > 0 ? 1.0 / S[i] : 0.0;
        for (size_t e = 0; e < n; e++) Qt[(size_t)i * n + e] = (float)(row[e] * inv);
    }
    if (P) memcpy(P, V, sizeof(double) * (size_t)k * k);
    free(G);
    free(V);
    free(row);
    return rc;
}

int linalg_orthonormalize_rows(int k, size_t n, float *X) {
    int dependent = 0;
    for (int i = 0; i < k; i++) {
        float *xi = X + (size_t)i * n;
        double n0 = 0;
        for (size_t e = 0; e < n; e++) n0 += (double)xi[e] * xi[e];
        for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < i; j++) {
                const float *xj = X + (size_t)j * n;
                double d = 0;
                for (size_t e = 0; e < n; e++) d += (double)xi[e] * xj[e];
                for (size_t e = 0; e < n; e++) xi[e] = (float)(xi[e] - d * xj[e]);
            }
        double nn = 0;
        for (size_t e = 0; e < n; e++) nn += (double)xi[e] * xi[e];
        if (!(nn > 1e-24 * (n0 > 0 ? n0 : 1)) || nn == 0) {
            memset(xi, 0, sizeof(float) * n);
            dependent++;
            continue;
        }
        double inv = 1.0 / sqrt(nn);
        for (size_t e = 0; e < n; e++) xi[e] = (float)(xi[e] * inv);
    }
    return dependent;
}
