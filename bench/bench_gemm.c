/* bench_gemm.c - loco's matrix product (gemm_f32: fixed tiles over the
 * threads, each tile one single-threaded call) with OpenBLAS tiles against
 * oneDNN's dnnl_sgemm tiles, on the products the models make: Stable
 * Diffusion's attention and feed-forward at a 64x64 latent (4096 tokens),
 * celebahq's 1x1 convolutions and 16x16 attention, the im2col GEMM of a thin
 * convolution (conv_out's 3 output rows). Interleaved, best of --reps after
 * a warm-up; GFLOP/s = 2 M N K / time. OpenBLAS's kernel follows
 * OPENBLAS_CORETYPE (printed); oneDNN's does not.
 *
 *   build/bench_gemm [--reps 5]
 *
 * Links the internal archive (calls gemm_f32 directly). */
#include "loco.h"
#include "ops.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *name;
    int ta, tb, M, N, K;
} shape;

static const shape shapes[] = {
    {"SD q/k/v/out projection 4096x320x320", 0, 1, 4096, 320, 320},
    {"SD attention scores q k^T 4096x4096x64", 0, 1, 4096, 4096, 64},
    {"SD attention output p v 4096x64x4096", 0, 0, 4096, 64, 4096},
    {"SD GEGLU in 4096x2560x320", 0, 1, 4096, 2560, 320},
    {"SD feed-forward out 4096x320x1280", 0, 1, 4096, 320, 1280},
    {"SD cross-attention k/v 77x320x1024", 0, 1, 77, 320, 1024},
    {"SD 1280-wide projection 256x1280x1280", 0, 1, 256, 1280, 1280},
    {"celebahq 1x1 conv 256->128 @256 128x65536x256", 0, 0, 128, 65536, 256},
    {"celebahq attention 256x256x512", 0, 1, 256, 256, 512},
    {"im2col 3x3 128->128 @64 128x4096x1152", 0, 0, 128, 4096, 1152},
    {"conv_out im2col 3x65536x1152", 0, 0, 3, 65536, 1152},
};
#define NS (int)(sizeof shapes / sizeof shapes[0])

int main(int argc, char **argv) {
    loco_threads_reexec(argv);
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_gemm [--reps N]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 100) return 2;
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("bench_gemm: best of %d, %d threads, OPENBLAS_CORETYPE=%s\n\n", reps, loco_get_threads(),
           core ? core : "(unset)");
    printf("| product | GFLOP | OpenBLAS tiles ms | GFLOP/s | oneDNN tiles ms | GFLOP/s | OpenBLAS / oneDNN | max diff / max |\n"
           "|---|---|---|---|---|---|---|---|\n");
    double tot[2] = {0, 0};
    unsigned st = 7;
    for (int si = 0; si < NS; si++) {
        const shape *s = &shapes[si];
        const size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
        float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb), *C[2] = {malloc(sizeof(float) * nc),
                                                                                         malloc(sizeof(float) * nc)};
        if (!A || !B || !C[0] || !C[1]) return 1;
        fill_uniform(A, na, &st), fill_uniform(B, nb, &st);
        const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
        double best[2] = {1e30, 1e30};
        for (int r = 0; r <= reps; r++)
            for (int m = 0; m < 2; m++) {
                ops_gemm_dnnl = m;
                double t0 = now_s();
                gemm_f32(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C[m], s->N);
                double t = now_s() - t0;
                if (r > 0 && t < best[m]) best[m] = t;
            }
        double d = 0, mx = 0;
        for (size_t i = 0; i < nc; i++) {
            d = fmax(d, fabs((double)C[0][i] - C[1][i]));
            mx = fmax(mx, fabs((double)C[0][i]));
        }
        const double gf = 2.0 * s->M * s->N * s->K / 1e9;
        printf("| %s | %.2f | %.2f | %.0f | %.2f | %.0f | %.2fx | %.1e |\n", s->name, gf, 1e3 * best[0], gf / best[0],
               1e3 * best[1], gf / best[1], best[0] / best[1], d / mx);
        tot[0] += best[0], tot[1] += best[1];
        free(A), free(B), free(C[0]), free(C[1]);
    }
    printf("| **sum** | | %.1f | | %.1f | | %.2fx | |\n", 1e3 * tot[0], 1e3 * tot[1], tot[0] / tot[1]);
    return 0;
}
