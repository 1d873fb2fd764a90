/* bench_sd.c - Stable Diffusion's pieces, timed one by one, with the peak
 * memory of each: loading the pipeline, encoding the prompts (the
 * unconditional and the conditional, as classifier-free guidance needs),
 * one guided UNet step (both branches), one VAE decode, and T-LOCO's
 * Jacobian: recording the decoded posterior mean d x0 / d z_t and one
 * J V and one U^T J on k vectors over a pixel mask.
 *
 *   bench_sd PIPELINE [--image-size N] [--k K] [--no-jacobian] [--json]
 *
 * PIPELINE is a diffusers folder; for Stable Diffusion 2.1-base at its real
 * size with random weights:
 *   build/loco init --config configs/sd21-base/model_index.json --dtype f16 /tmp/sd21
 * Uses only the public header. Wall times; each figure is the median of
 * --repeat runs (3) except loading and the Jacobian (once). Peak memory is
 * the process's VmHWM, reset before each phase (so each phase's figure
 * includes what stays resident from the phases before: the weights). The
 * JSON also gives each figure's CPU time (user + system, all threads), a
 * better measure than wall time on a shared machine with one thread. */
#include "bench_util.h"
#include "loco.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct phase {
    const char *name;
    double seconds;
    double cpu_seconds;
    long peak_kb;
    double gflop;  /* 0: not counted */
    size_t extra_bytes;
} phase;

static phase phases[8];
static int n_phases;

static double cpu_last; /* the CPU time of the last timed run (record's default) */

static void record(const char *name, double s, double gflop, size_t extra) {
    phase *p = &phases[n_phases++];
    p->name = name;
    p->seconds = s;
    p->cpu_seconds = cpu_last;
    p->peak_kb = proc_status_kb("VmHWM");
    p->gflop = gflop;
    p->extra_bytes = extra;
    fprintf(stderr, "bench_sd: %-22s %8.3f s, peak %.2f GiB\n", name, s, p->peak_kb / 1048576.0);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int fail(const char *what, loco_status s) {
    fprintf(stderr, "bench_sd: %s: %s: %s\n", what, loco_strerror(s), loco_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int image_size = 0, k = 1, jac = 1, json = 0, repeat = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--image-size") && v) image_size = atoi(argv[++i]);
        else if (!strcmp(a, "--k") && v) k = atoi(argv[++i]);
        else if (!strcmp(a, "--repeat") && v) repeat = atoi(argv[++i]);
        else if (!strcmp(a, "--no-jacobian")) jac = 0;
        else if (!strcmp(a, "--json")) json = 1;
        else if (a[0] != '-' && !path) path = a;
        else {
            fprintf(stderr, "usage: bench_sd PIPELINE [--image-size N] [--k K] [--repeat R] [--no-jacobian] [--json]\n");
            return 2;
        }
    }
    if (!path || k < 1 || k > 64 || repeat < 1 || repeat > 100 || image_size < 0 || image_size > 4096) {
        fprintf(stderr, "usage: bench_sd PIPELINE [--image-size N] [--k 1..64] [--repeat 1..100] [--no-jacobian] "
                        "[--json]\n");
        return 2;
    }
    loco_open_params op;
    loco_open_params_init(&op);
    op.image_size = image_size;
    loco_model *m = NULL;
    reset_hwm();
    double t0 = now_s(), c0 = cpu_s();
    loco_status s = loco_model_open_with(path, &op, &m);
    cpu_last = cpu_s() - c0;
    if (s) return fail(path, s);
    record("load", now_s() - t0, 0, 0);

    loco_model_info info;
    loco_model_get_info(m, &info);
    int ic, ih, iw;
    loco_model_image_info(m, &ic, &ih, &iw);
    const size_t zn = (size_t)info.in_channels * info.height * info.width, in = (size_t)ic * ih * iw;
    float *z = malloc(zn * sizeof(float)), *eps = malloc(zn * sizeof(float)), *img = malloc(in * sizeof(float));
    double *ts = malloc((size_t)repeat * sizeof(double)), *cs = malloc((size_t)repeat * sizeof(double));
    if (!z || !eps || !img || !ts || !cs) return fail("buffers", LOCO_E_NOMEM);
    loco_randn(7, zn, z);

    /* the prompts: unconditional + conditional (+ edit for T-LOCO's
     * semantic direction: timed separately below only through the Jacobian) */
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    cp.prompt = "a photo of a man";
    loco_cond *c = NULL;
    reset_hwm();
    for (int r = 0; r < repeat; r++) {
        loco_cond_free(c);
        c = NULL;
        t0 = now_s();
        c0 = cpu_s();
        if ((s = loco_cond_new(m, &cp, &c))) return fail("text encoding", s);
        ts[r] = now_s() - t0;
        cs[r] = cpu_s() - c0;
    }
    qsort(ts, (size_t)repeat, sizeof *ts, cmp_d);
    qsort(cs, (size_t)repeat, sizeof *cs, cmp_d);
    cpu_last = cs[repeat / 2];
    record("text (2 prompts)", ts[repeat / 2], 0, 0);

    const float t = 500.0f;
    reset_hwm();
    for (int r = 0; r < repeat; r++) {
        t0 = now_s();
        c0 = cpu_s();
        if ((s = loco_model_eps_cond(m, 1, z, &t, c, eps))) return fail("UNet step", s);
        ts[r] = now_s() - t0;
        cs[r] = cpu_s() - c0;
    }
    qsort(ts, (size_t)repeat, sizeof *ts, cmp_d);
    qsort(cs, (size_t)repeat, sizeof *cs, cmp_d);
    cpu_last = cs[repeat / 2];
    record("UNet step, CFG (x2)", ts[repeat / 2], 2 * info.flops / 1e9, 0);

    reset_hwm();
    for (int r = 0; r < repeat; r++) {
        t0 = now_s();
        c0 = cpu_s();
        if ((s = loco_model_decode(m, 1, z, img))) return fail("VAE decode", s);
        ts[r] = now_s() - t0;
        cs[r] = cpu_s() - c0;
    }
    qsort(ts, (size_t)repeat, sizeof *ts, cmp_d);
    qsort(cs, (size_t)repeat, sizeof *cs, cmp_d);
    cpu_last = cs[repeat / 2];
    record("VAE decode", ts[repeat / 2], 0, 0);

    if (jac) {
        /* the decoded x0 at the authors' edit step (t_edit 0.7), over the
         * middle quarter of the image */
        uint8_t *mask = calloc(in, 1);
        if (!mask) return fail("mask", LOCO_E_NOMEM);
        for (int ch = 0; ch < ic; ch++)
            for (int y = ih * 3 / 8; y < ih * 5 / 8; y++)
                for (int x = iw * 3 / 8; x < iw * 5 / 8; x++) mask[((size_t)ch * ih + y) * iw + x] = 1;
        loco_lin *lin = NULL;
        reset_hwm();
        t0 = now_s();
        c0 = cpu_s();
        if ((s = loco_linearize_cond(m, z, 696.27f, c, &lin))) return fail("linearize", s);
        cpu_last = cpu_s() - c0;
        record("record d x0 / d z_t", now_s() - t0, 0, loco_lin_record_bytes(lin));
        const size_t l = loco_lin_image_mask_count(lin, mask);
        float *V = malloc((size_t)k * zn * sizeof(float)), *JV = malloc((size_t)k * l * sizeof(float));
        float *UJ = malloc((size_t)k * zn * sizeof(float));
        if (!V || !JV || !UJ) return fail("tangents", LOCO_E_NOMEM);
        loco_randn(8, (size_t)k * zn, V);
        reset_hwm();
        t0 = now_s();
        c0 = cpu_s();
        if ((s = loco_lin_jvp(lin, LOCO_OUT_IMAGE, mask, k, V, JV))) return fail("J V", s);
        static char jv_name[32], vj_name[32];
        snprintf(jv_name, sizeof jv_name, "J V (k=%d)", k);
        snprintf(vj_name, sizeof vj_name, "U^T J (k=%d)", k);
        cpu_last = cpu_s() - c0;
        record(jv_name, now_s() - t0, 0, loco_lin_work_bytes(lin, k));
        reset_hwm();
        t0 = now_s();
        c0 = cpu_s();
        if ((s = loco_lin_vjp(lin, LOCO_OUT_IMAGE, mask, k, JV, UJ))) return fail("U^T J", s);
        cpu_last = cpu_s() - c0;
        record(vj_name, now_s() - t0, 0, loco_lin_work_bytes(lin, k));
        /* the adjoint identity with U = J V: <J V, J V> = <U^T J, V> */
        double a = 0, b = 0;
        for (size_t i = 0; i < (size_t)k * l; i++) a += (double)JV[i] * JV[i];
        for (size_t i = 0; i < (size_t)k * zn; i++) b += (double)UJ[i] * V[i];
        fprintf(stderr, "bench_sd: adjoint identity: <JV, JV> %.8g, <U^T J, V> %.8g, relative difference %.2g\n", a,
                b, fabs(a - b) / fmax(fabs(a), 1e-30));
        loco_lin_free(lin);
        free(V);
        free(JV);
        free(UJ);
        free(mask);
    }

    if (json) {
        printf("{\"model\": \"%s\", \"latent\": [%d, %d, %d], \"image\": [%d, %d, %d], \"unet_gflop\": %.2f, "
               "\"phases\": [",
               path, info.in_channels, info.height, info.width, ic, ih, iw, info.flops / 1e9);
        for (int i = 0; i < n_phases; i++)
            printf("%s{\"name\": \"%s\", \"seconds\": %.4f, \"cpu_seconds\": %.4f, \"peak_bytes\": %lld, "
                   "\"gflops\": %.2f, \"bytes\": %zu}",
                   i ? ", " : "", phases[i].name, phases[i].seconds, phases[i].cpu_seconds,
                   (long long)phases[i].peak_kb * 1024,
                   phases[i].gflop > 0 ? phases[i].gflop / phases[i].seconds : 0.0, phases[i].extra_bytes);
        printf("]}\n");
    } else {
        printf("%s: latent %dx%dx%d, image %dx%dx%d, UNet %.1f GFLOP per image\n", path, info.in_channels,
               info.height, info.width, ic, ih, iw, info.flops / 1e9);
        printf("%-22s %10s %12s %10s %12s\n", "phase", "seconds", "peak GiB", "GFLOP/s", "held GiB");
        for (int i = 0; i < n_phases; i++) {
            printf("%-22s %10.3f %12.2f ", phases[i].name, phases[i].seconds, phases[i].peak_kb / 1048576.0);
            if (phases[i].gflop > 0) printf("%10.1f ", phases[i].gflop / phases[i].seconds);
            else printf("%10s ", "-");
            if (phases[i].extra_bytes) printf("%12.2f\n", phases[i].extra_bytes / 1073741824.0);
            else printf("%12s\n", "-");
        }
    }
    loco_cond_free(c);
    loco_model_free(m);
    free(z);
    free(eps);
    free(img);
    free(ts);
    free(cs);
    return 0;
}
