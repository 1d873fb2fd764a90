/* gemm.c - the one float matrix product of the kernels.
 *
 * C = alpha op(A) op(B) + beta C (row-major, as cblas_sgemm), computed as a
 * grid of tiles fixed by the shape alone, each tile by a single-threaded
 * OpenBLAS (or, as an experiment, oneDNN: ops_gemm_dnnl) call, the tiles
 * shared among the OpenMP threads. OpenBLAS's own
 * threading rounds differently with the number of threads (measured: a
 * 128x1152x1024 product differs between 1 and 2 threads), so a result would
 * depend on how many cores were free; with fixed tiles it is bit-identical
 * whatever the thread count, which lets the thread count follow the load
 * (threads.c). OpenBLAS is set to one thread once, before the first product,
 * and never changed: its threaded and single-threaded paths round
 * differently, and Debian's OpenMP build does not follow OpenMP's thread
 * limit (it threads even inside a one-thread region). */
#include "ops.h"

#include <cblas.h>
#include <dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Products below this many multiply-adds are one tile: splitting them costs
 * more (packing A or B again per tile) than a second thread gains. */
#define GEMM_TILE_MIN_MACS ((int64_t)1 << 22)
/* At most this many tiles along the split dimension. */
#define GEMM_MAX_TILES 8

/* OpenBLAS's setter, declared here to avoid depending on its header */
extern void openblas_set_num_threads(int);
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_serial(void) { openblas_set_num_threads(1); }

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* The tiles' kernel: OpenBLAS (the default), or oneDNN's sgemm
 * (LOCO_GEMM=dnnl: its own JIT kernels, whatever OPENBLAS_CORETYPE says;
 * 1.4-1.9x OpenBLAS's on the models' products, bench/bench_gemm). Not the
 * default: its rounding of a column depends on the product's size, so an
 * image's result would depend on its batch (test_pipeline's batch
 * independence, test_backward's batch consistency fail with it;
 * docs/performance.md, "oneDNN matrix products"). -1: read LOCO_GEMM at
 * the first product. */
int ops_gemm_dnnl = -1;
static int use_dnnl(void) {
    if (ops_gemm_dnnl < 0) {
        const char *v = getenv("LOCO_GEMM");
        ops_gemm_dnnl = v && strcmp(v, "dnnl") == 0;
    }
    return ops_gemm_dnnl;
}

typedef struct gemm_job {
    enum CBLAS_TRANSPOSE ta, tb;
    int M, N, K, lda, ldb, ldc, split_n, step, dnnl;
    float alpha, beta;
    const float *A, *B;
    float *C;
} gemm_job;

/* one single-threaded product, row-major */
static void sgemm1(const gemm_job *j, int M, int N, const float *A, const float *B, float *C) {
    if (j->dnnl) {
        dnnl_sgemm(j->ta == CblasTrans ? 'T' : 'N', j->tb == CblasTrans ? 'T' : 'N', M, N, j->K, j->alpha, A, j->lda, B,
                   j->ldb, j->beta, C, j->ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, j->ta, j->tb, M, N, j->K, j->alpha, A, j->lda, B, j->ldb, j->beta, C, j->ldc);
}

/* tile t: columns (split_n) or rows t*step.. of C */
static void gemm_tile(const gemm_job *j, int t) {
    const int total = j->split_n ? j->N : j->M, lo = t * j->step, len = total - lo < j->step ? total - lo : j->step;
    if (j->split_n)
        sgemm1(j, j->M, len, j->A, j->tb == CblasTrans ? j->B + (size_t)lo * j->ldb : j->B + lo, j->C + lo);
    else
        sgemm1(j, len, j->N, j->ta == CblasTrans ? j->A + lo : j->A + (size_t)lo * j->lda, j->B,
               j->C + (size_t)lo * j->ldc);
}

void gemm_f32(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
              int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    pthread_once(&blas_once, blas_serial);
    gemm_job j = {trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, lda, ldb, ldc,
                  1, N, use_dnnl(), alpha, beta, A, B, C};
    const int64_t macs = (int64_t)M * N * (K > 0 ? K : 1);
    /* split the columns of C when there are enough, else its rows */
    int tiles = 1;
    if (macs >= 2 * GEMM_TILE_MIN_MACS) {
        int64_t by_work = macs / GEMM_TILE_MIN_MACS;
        int want = by_work < GEMM_MAX_TILES ? (int)by_work : GEMM_MAX_TILES;
        /* tiles of at least 256 columns (or 32 rows): each tile packs its
         * share of B and all of A again, which cost 2-6% at 256-512 columns
         * on one core and 7-11% at 64 (M 128-256, K 1152-2304) */
        if (N >= 2 * 256) {
            j.step = round_up((N + want - 1) / want, 64);
            if (j.step < 256) j.step = 256;
        } else if (M >= 2 * 32) {
            j.split_n = 0;
            j.step = round_up((M + want - 1) / want, 16);
            if (j.step < 32) j.step = 32;
        }
        tiles = ((j.split_n ? N : M) + j.step - 1) / j.step;
    }
    int in_par = 0;
#ifdef _OPENMP
    in_par = omp_in_parallel();
#endif
    if (in_par) {
        for (int t = 0; t < tiles; t++) gemm_tile(&j, t);
        return;
    }
    if (tiles == 1) {
        if (j.dnnl) { /* oneDNN threads a call made outside a parallel region */
#pragma omp parallel num_threads(1)
            {
#ifdef _OPENMP
                omp_set_num_threads(1);
#endif
                gemm_tile(&j, 0);
            }
        } else {
            gemm_tile(&j, 0);
        }
        return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < tiles; t++) gemm_tile(&j, t);
}
