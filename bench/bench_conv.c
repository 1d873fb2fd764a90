/* bench_conv.c - one convolution at a time on the shapes of the celebahq-256
 * UNet (diffusers' ddpm-ema-celebahq-256: channels 128-128-256-256-512-512 at
 * 256 down to 8 pixels), three paths interleaved in one process:
 *   blas    im2col / Winograd F(2x2,3x3) + OpenBLAS (ops_conv_dnnl = 0)
 *   direct  oneDNN's direct kernels only (ops_conv_dnnl_wino = 0)
 *   dnnl    the default: oneDNN Winograd F(4x4,3x3) where conv_dnnl.c picks
 *           it, direct elsewhere
 *   bf16    (--bf16) oneDNN direct with the input and weights rounded to
 *           bf16, f32 accumulation and output (ops_conv_dnnl_bf16 = 1),
 *           with its largest error relative to the dnnl result's max |.|
 * for the forward pass (with bias), J V (no bias: the same call) and U^T J
 * (the transposed convolution, accumulating), with `--batch` images (5 =
 * the null space's k). Best of --reps after a warm-up; GFLOP/s count the
 * direct convolution's 2 cin cout 9 ho wo per image.
 *
 *   build/bench_conv [--reps 3] [--batch 1] [--bf16]
 *
 * Links the internal archive: it calls conv2d_fwd / conv2d_vjp directly. */
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

static void set_mode(int m) {
    ops_conv_dnnl = m > 0;
    ops_conv_dnnl_wino = m == 2;
    ops_conv_dnnl_bf16 = m == 3;
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
    return m;
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* the short OpenMP waits of every loco program */
    int reps = 3, B = 1, bf16 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bf16")) bf16 = 1;
        else {
            fprintf(stderr, "usage: bench_conv [--reps N] [--batch B] [--bf16]\n");
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
    const int NM = bf16 ? 4 : 3;
    printf("| shape | GFLOP | fwd blas ms | fwd direct ms | fwd dnnl ms | speed-up | dnnl GFLOP/s |%s U^T J blas ms | "
           "U^T J direct ms | U^T J dnnl ms | speed-up |%s\n|---|---|---|---|---|---|---|%s---|---|---|---|---|%s\n",
           bf16 ? " fwd bf16 ms | bf16 err |" : "", bf16 ? " U^T J bf16 ms | bf16 err |" : "", bf16 ? "---|---|" : "",
           bf16 ? "---|---|" : "");
    double tot[2][4] = {{0}}, worst[2] = {0};
    unsigned st = 1;
    for (int si = 0; si < NS; si++) {
        const conv_geom g = geom(&shapes[si]);
        const size_t nin = (size_t)B * g.cin * g.h * g.w, nout = (size_t)B * g.cout * g.ho * g.wo;
        const size_t nw = (size_t)g.cout * g.cin * 9, ns = conv2d_scratch(&g) + 1;
        float *x = malloc(sizeof(float) * nin), *y = malloc(sizeof(float) * nout), *w = malloc(sizeof(float) * nw),
              *b = malloc(sizeof(float) * (size_t)g.cout), *dx = malloc(sizeof(float) * nin),
              *sc = malloc(sizeof(float) * ns), *yr[2] = {malloc(sizeof(float) * nout), malloc(sizeof(float) * nout)},
              *dxr[2] = {malloc(sizeof(float) * nin), malloc(sizeof(float) * nin)}, *dy = malloc(sizeof(float) * nout);
        if (!x || !y || !w || !b || !dx || !sc || !yr[0] || !yr[1] || !dxr[0] || !dxr[1] || !dy) {
            fprintf(stderr, "bench_conv: out of memory\n");
            return 1;
        }
        fill_uniform(x, nin, &st), fill_uniform(w, nw, &st), fill_uniform(b, (size_t)g.cout, &st), fill_uniform(dy, nout, &st);
        double best[2][4];
        for (int d = 0; d < 2; d++)
            for (int m = 0; m < 4; m++) best[d][m] = 1e30;
        for (int r = 0; r <= reps; r++)
            for (int m = 0; m < NM; m++) {
                set_mode(m);
                memset(dx, 0, sizeof(float) * nin);
                double t0 = now_s();
                conv2d_fwd(&g, B, x, w, b, NULL, y, sc);
                double t1 = now_s();
                conv2d_vjp(&g, B, dy, w, dx, sc);
                double t2 = now_s();
                if (r > 0) { /* the first round warms up (primitives, pages) */
                    if (t1 - t0 < best[0][m]) best[0][m] = t1 - t0;
                    if (t2 - t1 < best[1][m]) best[1][m] = t2 - t1;
                }
                if (m >= 2) { /* dnnl (f32) and bf16 results, to compare */
                    memcpy(yr[m - 2], y, sizeof(float) * nout);
                    memcpy(dxr[m - 2], dx, sizeof(float) * nin);
                }
            }
        const double gf = 2.0 * g.cin * g.cout * 9.0 * g.ho * g.wo * B / 1e9;
        char e0[96] = "", e1[96] = "";
        if (bf16) {
            const double ef = max_diff(yr[0], yr[1], nout) / max_abs(yr[0], nout),
                         eb = max_diff(dxr[0], dxr[1], nin) / max_abs(dxr[0], nin);
            worst[0] = ef > worst[0] ? ef : worst[0];
            worst[1] = eb > worst[1] ? eb : worst[1];
            snprintf(e0, sizeof e0, " %.2f | %.1e |", 1e3 * best[0][3], ef);
            snprintf(e1, sizeof e1, " %.2f | %.1e |", 1e3 * best[1][3], eb);
        }
        printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2fx | %.0f |%s %.2f | %.2f | %.2f | %.2fx |%s\n", shapes[si].name,
               gf, 1e3 * best[0][0], 1e3 * best[0][1], 1e3 * best[0][2], best[0][0] / best[0][2], gf / best[0][2], e0,
               1e3 * best[1][0], 1e3 * best[1][1], 1e3 * best[1][2], best[1][0] / best[1][2], e1);
        for (int d = 0; d < 2; d++)
            for (int m = 0; m < NM; m++) tot[d][m] += best[d][m];
        free(x), free(y), free(w), free(b), free(dx), free(sc), free(yr[0]), free(yr[1]), free(dxr[0]), free(dxr[1]);
        free(dy);
    }
    char s0[96] = "", s1[96] = "";
    if (bf16) {
        snprintf(s0, sizeof s0, " %.1f | %.1e |", 1e3 * tot[0][3], worst[0]);
        snprintf(s1, sizeof s1, " %.1f | %.1e |", 1e3 * tot[1][3], worst[1]);
    }
    printf("| **sum** | | %.1f | %.1f | %.1f | %.2fx | |%s %.1f | %.1f | %.1f | %.2fx |%s\n", 1e3 * tot[0][0],
           1e3 * tot[0][1], 1e3 * tot[0][2], tot[0][0] / tot[0][2], s0, 1e3 * tot[1][0], 1e3 * tot[1][1],
           1e3 * tot[1][2], tot[1][0] / tot[1][2], s1);
    conv2d_dnnl_release();
    return 0;
}
