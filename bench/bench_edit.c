/* bench_edit.c - time and network evaluations per phase of one LOCO edit,
 * at the authors' settings (100 steps, t_edit 0.6, min 10 / max 50
 * iterations, tol 1e-4), for rank 1 / null 5 and rank 5 / null 5.
 *
 *   build/bench_edit [--model DIR]... [--max-iter N] [--invert-to edit|full] [--oversample P]
 *
 * --oversample P iterates P extra vectors (randomised start, Rayleigh-Ritz
 * every step; loco_subspace_params.oversample) in both iterations.
 *
 * Without --model it uses tests/fixtures/unet-small and, if present,
 * build/bench-models/celebahq (a random-initialised google/ddpm-ema-celebahq-256
 * configuration; create it with `loco init build/bench-models/celebahq
 * --config configs/ddpm-ema-celebahq-256.json`). --max-iter below 50 measures
 * per-iteration cost and extrapolates the iteration phases to 50 iterations
 * (random weights never converge, so the authors' setting runs all 50);
 * extrapolated figures are marked with '*'. Uses only include/loco.h. */
#define _POSIX_C_SOURCE 200809L
#include "loco.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static int g_oversample = 0;

static int run(const char *model, int rank, int null_rank, int max_iter, int invert_full) {
    loco_model *m;
    if (loco_model_open(model, &m)) {
        fprintf(stderr, "bench_edit: %s\n", loco_last_error());
        return 1;
    }
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const int C = inf.in_channels, H = inf.height, W = inf.width;
    const size_t n = (size_t)C * H * W;
    float *x0 = malloc(sizeof(float) * n), *batch = malloc(sizeof(float) * n * 3);
    uint8_t *mask = malloc((size_t)H * W);
    for (size_t i = 0; i < n; i++) x0[i] = (float)sin(0.001 * (double)i) * 0.8f;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) mask[(size_t)y * W + x] = y >= H / 4 && y < H / 2 && x >= W / 4 && x < 3 * W / 4;
    /* the recipe (loco_edit_prepare) at the authors' settings */
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit.invert_full = invert_full;
    rp.rank = rank;
    rp.null_rank = null_rank;
    rp.max_iter = max_iter;
    rp.min_iter = max_iter < 10 ? max_iter : 10;
    rp.tol = 1e-4;
    rp.oversample = g_oversample;
    loco_edit_directions *d = NULL;
    int nfe_dec = 0;
    loco_status st = loco_edit_prepare(m, &rp, x0, mask, &d);
    double t0 = now();
    if (!st) {
        /* the first direction at -8, 0, +8 */
        const float *v = loco_edit_directions_vectors(d);
        const loco_edit_move mv[3] = {{v, -8.0f}, {v, 0.0f}, {v, 8.0f}};
        st = loco_edit_render(m, &rp.edit, loco_edit_directions_xt(d), 3, NULL, mv, 3, batch, &nfe_dec);
    }
    double t_dec = now() - t0;
    if (st) {
        fprintf(stderr, "bench_edit: %s\n", loco_last_error());
        return 1;
    }
    loco_edit_info ei;
    loco_edit_directions_info(d, &ei);
    const loco_subspace *roi = loco_edit_directions_subspace(d, LOCO_BASIS_ROI),
                        *nul = loco_edit_directions_subspace(d, LOCO_BASIS_NULL);
    const double t_inv = ei.seconds_inversion, t_lin = ei.seconds_linearize, t_roi = ei.seconds_roi,
                 t_null = ei.seconds_null;
    /* extrapolate an iteration that --max-iter cut short (not one that
     * converged) to the authors' 50 */
    const int full = 50;
    double f_roi = (!roi->converged && roi->iters < full) ? (double)full / roi->iters : 1.0;
    double f_null = (!nul->converged && nul->iters < full) ? (double)full / nul->iters : 1.0;
    int ext = f_roi > 1 || f_null > 1;
    double total = t_inv + t_lin + t_roi * f_roi + t_null * f_null + t_dec;
    printf("| %-40s | %d / %d | %6.1f s (%3d) | %5.1f s | %7.1f s%s (%2d it, %4d+%4d vec) | %7.1f s%s (%2d it, %4d+%4d vec) | "
           "%6.1f s (%3d) | %7.1f s%s | %6.0f |\n",
           model, rank, null_rank, t_inv, ei.nfe_inversion, t_lin, t_roi * f_roi, ext ? "*" : "", roi->iters,
           roi->jvp_vectors, roi->vjp_vectors, t_null * f_null, ext ? "*" : "", nul->iters, nul->jvp_vectors,
           nul->vjp_vectors, t_dec, nfe_dec, total, ext ? "*" : "", peak_mib());
    fflush(stdout);
    loco_edit_directions_free(d);
    loco_model_free(m);
    free(x0);
    free(batch);
    free(mask);
    return 0;
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* short OpenMP waits unless chosen otherwise */
    const char *models[8];
    int nm = 0, max_iter = 50, full = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc && nm < 8) models[nm++] = argv[++i];
        else if (!strcmp(argv[i], "--max-iter") && i + 1 < argc) max_iter = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--invert-to") && i + 1 < argc) full = strcmp(argv[++i], "edit") != 0;
        else if (!strcmp(argv[i], "--oversample") && i + 1 < argc) g_oversample = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_edit [--model DIR]... [--max-iter N] [--invert-to edit|full] [--oversample P]\n");
            return 2;
        }
    }
    if (max_iter < 1 || max_iter > 50) max_iter = 50;
    if (!nm) {
        models[nm++] = "tests/fixtures/unet-small";
        if (access("build/bench-models/celebahq/config.json", R_OK) == 0) models[nm++] = "build/bench-models/celebahq";
    }
    printf("LOCO edit per phase (threads %d, OPENBLAS_CORETYPE=%s, invert-to %s, 100 steps, t_edit 0.6; "
           "network evaluations in parentheses; vec = J V + U^T J vectors)\n\n",
           loco_get_threads(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)",
           full ? "full" : "edit");
    printf("| model | rank / null | inversion | linearize | ROI iteration | null iteration | 3 edits denoised | "
           "total | peak MiB |\n|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < nm; i++)
        for (int r = 0; r < 2; r++)
            if (run(models[i], r ? 5 : 1, 5, max_iter, full)) return 1;
    if (max_iter < 50) printf("\n* extrapolated to 50 iterations from %d measured\n", max_iter);
    return 0;
}
