/* bench_conv.c - one convolution at a time on the shapes of the celebahq-256
 * UNet (diffusers' ddpm-ema-celebahq-256: channels 128-128-256-256-512-512 at
 * 256 down to 8 pixels), three paths interleaved in one process:
 *   blas    im2col / Winograd F(2x2,3x3) + OpenBLAS (ops_conv_dnnl = 0)
 *   direct  oneDNN's direct kernels only (ops_conv_dnnl_wino = 0)
 *   dnnl    the default: oneDNN Winograd F(4x4,3x3) where conv_dnnl.c picks
 *           it, direct elsewhere
 * for the forward pass (with bias), J V (no bias: the same call) and U^T J
 * (the transposed convolution, accumulating), with `--batch` images (5 =
 * the null space's k). Best of --reps after a warm-up; GFLOP/s count the
 * direct convolution's 2 cin cout 9 ho wo per image.
 *
 *   build/bench_conv [--reps 3] [--batch 1]
 *
 * Links the internal archive: it calls conv2d_fwd / conv2d_vjp directly. */
#include "loco.h"
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const char *name;
    int cin, cout, n, k, stride;
} shape;

static const shape shapes[] = {
    {"conv_in 3->128 @256", 3, 128, 256, 3, 1},     {"3x3 128->128 @256", 128, 128, 256, 3, 1},
    {"3x3 256->128 @256", 256, 128, 256, 3, 1},     {"down 128 @256 (stride 2)", 128, 128, 256, 3, 2},
    {"3x3 128->128 @128", 128, 128, 128, 3, 1},     {"3x3 128->256 @64", 128, 256, 64, 3, 1},
    {"3x3 256->256 @64", 256, 256, 64, 3, 1},       {"3x3 512->256 @64", 512, 256, 64, 3, 1},
    {"3x3 256->256 @32", 256, 256, 32, 3, 1},       {"3x3 512->512 @16", 512, 512, 16, 3, 1},
    {"3x3 1024->512 @16", 1024, 512, 16, 3, 1},     {"3x3 512->512 @8", 512, 512, 8, 3, 1},
    {"conv_out 128->3 @256", 128, 3, 256, 3, 1},
};
#define NS (int)(sizeof shapes / sizeof shapes[0])

static conv_geom geom(const shape *s) {
    const int pad = s->stride == 2 ? 0 : 1, sum = s->stride == 2 ? 1 : 2; /* diffusers' (0,1,0,1) */
    const int ho = (s->n + sum - 3) / s->stride + 1;
    conv_geom g = {s->cin, s->cout, s->n, s->n, 3, s->stride, pad, pad, ho, ho, 0, 1};
    g.wino = conv2d_wino_ok(&g);
    return g;
}

static void fill(float *p, size_t n, unsigned *st) {
    for (size_t i = 0; i < n; i++) {
        *st = *st * 1664525u + 1013904223u;
        p[i] = (float)((*st >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
}

static void set_mode(int m) {
    ops_conv_dnnl = m > 0;
    ops_conv_dnnl_wino = m == 2;
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* the short OpenMP waits of every loco program */
    int reps = 3, B = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_conv [--reps N] [--batch B]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 100 || B < 1 || B > 64) {
        fprintf(stderr, "bench_conv: --reps 1..100, --batch 1..64\n");
        return 2;
    }
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("bench_conv: batch %d, best of %d, OPENBLAS_CORETYPE=%s, OMP_NUM_THREADS=%s\n\n", B, reps,
           core ? core : "(unset)", getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "(unset)");
    printf("| shape | GFLOP | fwd blas ms | fwd direct ms | fwd dnnl ms | speed-up | dnnl GFLOP/s | U^T J blas ms | "
           "U^T J direct ms | U^T J dnnl ms | speed-up |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    double tot[2][3] = {{0}};
    unsigned st = 1;
    for (int si = 0; si < NS; si++) {
        const conv_geom g = geom(&shapes[si]);
        const size_t nin = (size_t)B * g.cin * g.h * g.w, nout = (size_t)B * g.cout * g.ho * g.wo;
        const size_t nw = (size_t)g.cout * g.cin * 9, ns = conv2d_scratch(&g) + 1;
        float *x = malloc(sizeof(float) * nin), *y = malloc(sizeof(float) * nout), *w = malloc(sizeof(float) * nw),
              *b = malloc(sizeof(float) * (size_t)g.cout), *dx = malloc(sizeof(float) * nin),
              *sc = malloc(sizeof(float) * ns);
        if (!x || !y || !w || !b || !dx || !sc) {
            fprintf(stderr, "bench_conv: out of memory\n");
            return 1;
        }
        fill(x, nin, &st), fill(w, nw, &st), fill(b, (size_t)g.cout, &st), fill(y, nout, &st);
        memset(dx, 0, sizeof(float) * nin);
        double best[2][3];
        for (int d = 0; d < 2; d++)
            for (int m = 0; m < 3; m++) best[d][m] = 1e30;
        for (int r = 0; r <= reps; r++)
            for (int m = 0; m < 3; m++) {
                set_mode(m);
                double t0 = now();
                conv2d_fwd(&g, B, x, w, b, NULL, y, sc);
                double t1 = now();
                conv2d_vjp(&g, B, y, w, dx, sc);
                double t2 = now();
                if (r > 0) { /* the first round warms up (primitives, pages) */
                    if (t1 - t0 < best[0][m]) best[0][m] = t1 - t0;
                    if (t2 - t1 < best[1][m]) best[1][m] = t2 - t1;
                }
            }
        const double gf = 2.0 * g.cin * g.cout * 9.0 * g.ho * g.wo * B / 1e9;
        printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2fx | %.0f | %.2f | %.2f | %.2f | %.2fx |\n", shapes[si].name, gf,
               1e3 * best[0][0], 1e3 * best[0][1], 1e3 * best[0][2], best[0][0] / best[0][2], gf / best[0][2],
               1e3 * best[1][0], 1e3 * best[1][1], 1e3 * best[1][2], best[1][0] / best[1][2]);
        for (int d = 0; d < 2; d++)
            for (int m = 0; m < 3; m++) tot[d][m] += best[d][m];
        free(x), free(y), free(w), free(b), free(dx), free(sc);
    }
    printf("| **sum** | | %.1f | %.1f | %.1f | %.2fx | | %.1f | %.1f | %.1f | %.2fx |\n", 1e3 * tot[0][0], 1e3 * tot[0][1],
           1e3 * tot[0][2], tot[0][0] / tot[0][2], 1e3 * tot[1][0], 1e3 * tot[1][1], 1e3 * tot[1][2],
           tot[1][0] / tot[1][2]);
    conv2d_dnnl_release();
    return 0;
}
