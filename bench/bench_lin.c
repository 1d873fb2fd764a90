/* bench_lin.c - cost of the linearization (issue #3): forward, record, J V
 * with k = 1 and 5, U^T J with k = 1 and 5 (input gradients only), each as
 * seconds and as a multiple of one forward pass, and the peak resident memory
 * of each configuration (measured in a child process per configuration).
 *
 *   build/bench_lin [--model DIR]... [--reps N]
 *
 * Without --model: tests/fixtures/unet-small, and build/bench-models/cifar10
 * and build/bench-models/celebahq when present (random-initialised real
 * configurations; `loco init build/bench-models/celebahq --config
 * configs/ddpm-ema-celebahq-256.json`). Uses only include/loco.h. */
#define _POSIX_C_SOURCE 200809L
#include "loco.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double best(double a, double b) { return a < b ? a : b; }

static int bench(const char *model, int reps) {
    loco_model *m;
    if (loco_model_open(model, &m)) {
        fprintf(stderr, "bench_lin: %s\n", loco_last_error());
        return 1;
    }
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const size_t n = (size_t)inf.in_channels * inf.height * inf.width;
    float *x = malloc(sizeof(float) * n), *e = malloc(sizeof(float) * n), *V = malloc(sizeof(float) * n * 5),
          *O = malloc(sizeof(float) * n * 5);
    for (size_t i = 0; i < n; i++) x[i] = (float)sin(0.37 * (double)i);
    for (size_t i = 0; i < 5 * n; i++) V[i] = (float)cos(0.11 * (double)i);
    float t = 600;
    double tf = INFINITY, tr = INFINITY, tj1 = INFINITY, tj5 = INFINITY, tv1 = INFINITY, tv5 = INFINITY;
    loco_model_eps(m, 1, x, &t, e); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        loco_model_eps(m, 1, x, &t, e);
        tf = best(tf, now() - t0);
    }
    loco_lin *L = NULL;
    size_t rec = 0, work = 0;
    for (int r = 0; r < reps; r++) {
        loco_lin_free(L);
        double t0 = now();
        if (loco_linearize(m, x, t, &L)) {
            fprintf(stderr, "bench_lin: %s\n", loco_last_error());
            return 1;
        }
        tr = best(tr, now() - t0);
    }
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        loco_lin_jvp(L, LOCO_OUT_X0, NULL, 1, V, O);
        tj1 = best(tj1, now() - t0);
        t0 = now();
        loco_lin_jvp(L, LOCO_OUT_X0, NULL, 5, V, O);
        tj5 = best(tj5, now() - t0);
        t0 = now();
        loco_lin_vjp(L, LOCO_OUT_X0, NULL, 1, V, O);
        tv1 = best(tv1, now() - t0);
        t0 = now();
        loco_lin_vjp(L, LOCO_OUT_X0, NULL, 5, V, O);
        tv5 = best(tv5, now() - t0);
    }
    rec = loco_lin_record_bytes(L);
    work = loco_lin_work_bytes(L, 5);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("| %-30s | %7.3f s | %7.3f s (%.2fx) | %7.3f s (%.2fx) | %7.3f s (%.2fx) | %7.3f s (%.2fx) | %7.3f s (%.2fx) | "
           "%6.0f | %6.0f | %6.0f |\n",
           model, tf, tr, tr / tf, tj1, tj1 / tf, tj5, tj5 / tf, tv1, tv1 / tf, tv5, tv5 / tf, rec / 1048576.0,
           work / 1048576.0, ru.ru_maxrss / 1024.0);
    fflush(stdout);
    loco_lin_free(L);
    loco_model_free(m);
    free(x);
    free(e);
    free(V);
    free(O);
    return 0;
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* short OpenMP waits unless chosen otherwise */
    const char *models[8];
    int nm = 0, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc && nm < 8) models[nm++] = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_lin [--model DIR]... [--reps N]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!nm) {
        models[nm++] = "tests/fixtures/unet-small";
        if (access("build/bench-models/cifar10/config.json", R_OK) == 0) models[nm++] = "build/bench-models/cifar10";
        if (access("build/bench-models/celebahq/config.json", R_OK) == 0) models[nm++] = "build/bench-models/celebahq";
    }
    printf("Linearization cost (threads %d, OPENBLAS_CORETYPE=%s, batch 1, x0_hat, best of %d; multiples of one "
           "forward pass)\n\n",
           loco_get_threads(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)", reps);
    printf("| model | forward | record | J V k=1 | J V k=5 | U^T J k=1 | U^T J k=5 | record MiB | work k=5 MiB | "
           "peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    for (int i = 0; i < nm; i++) {
        pid_t pid = fork(); /* one process per model: its own peak memory */
        if (pid == 0) _exit(bench(models[i], reps));
        int stt;
        if (pid < 0 || waitpid(pid, &stt, 0) < 0 || !WIFEXITED(stt) || WEXITSTATUS(stt)) return 1;
    }
    return 0;
}
