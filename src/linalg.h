/* linalg.h - small dense linear algebra in double precision for the subspace
 * iteration: symmetric eigenproblems and thin SVDs of k x n matrices with
 * k small (k <= a few dozen). */
#ifndef LOCO_LINALG_H
#define LOCO_LINALG_H

#include <stddef.h>

/* Eigen-decomposition of the symmetric k x k matrix A (row-major, destroyed):
 * eigenvalues in w[k], descending; eigenvectors as the COLUMNS of V [k, k].
 * Cyclic Jacobi rotations; returns the number of sweeps, or -1 if it did not
 * converge. */
int linalg_sym_eig(int k, double *A, double *w, double *V);

/* Thin SVD of the k x n matrix W (float, row-major): W = P S Q^T with S[k]
 * descending and Qt [k, n] (rows orthonormal where S > 0), via the k x k
 * Gram matrix W W^T in double. Rows of Qt whose singular value is below
 * 1e-12 * S[0] are set to zero. Optional P [k, k] (columns). Returns 0, or -1
 * on failure (out of memory, no convergence). */
int linalg_svd_rows(int k, size_t n, const float *W, double *S, float *Qt, double *P);

/* Orthonormalises the k rows of X [k, n] in place (modified Gram-Schmidt,
 * twice, in double accumulation). Returns the number of rows that were
 * (numerically) dependent and replaced by zeros. */
int linalg_orthonormalize_rows(int k, size_t n, float *X);

#endif
