/* eval_loss.c - held-out denoising loss of a model, per timestep band.
 *
 *   build/eval_loss MODEL --data faces|faces-v1|fashion-mnist [--count 512]
 *       [--bands 10] [--seed 0] [--data-seed 99] [--batch 32] [--json OUT]
 *
 * Held-out data: faces drawn with --data-seed (faces-v1: by the first,
 * jittered generator, loco_faces_generate_version 1; the shipped faces model was
 * trained on seed 0, images 0..N-1; seed 99 is disjoint), or the Fashion-MNIST
 * test split. For each of `bands` equal timestep bands [b T/bands,
 * (b+1) T/bands) every image is noised at a timestep drawn uniformly in the
 * band (x_t = sqrt(abar) x0 + sqrt(1-abar) eps, eps ~ N(0, I), all from
 * --seed) and the loss is mean((eps_hat - eps)^2), the training objective.
 * Prints one line per band and the mean over bands (the expected training
 * loss under uniform t). */
#include "bench_util.h"
#include "loco.h"
#include "loco_train.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* short OpenMP waits unless chosen otherwise */
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: eval_loss MODEL --data faces|fashion-mnist [--count 512] [--bands 10] [--seed 0] "
                        "[--data-seed 99] [--batch 32] [--json OUT]\n");
        return 2;
    }
    const char *model = argv[1], *data = "faces", *json = NULL;
    int count = 512, bands = 10, batch = 32;
    uint64_t seed = 0, data_seed = 99;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--count")) count = atoi(v);
        else if (!strcmp(a, "--bands")) bands = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--data-seed")) data_seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--json")) json = v;
        else {
            fprintf(stderr, "eval_loss: unknown option %s\n", a);
            return 2;
        }
    }
    if (count < 1 || bands < 1 || batch < 1) return 2;
    loco_model *m = NULL;
    if (loco_model_open(model, &m)) {
        fprintf(stderr, "eval_loss: %s\n", loco_last_error());
        return 1;
    }
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const int C = inf.in_channels, H = inf.height, W = inf.width, T = inf.train_timesteps;
    const size_t per = (size_t)C * H * W;
    float *x0 = malloc(sizeof(float) * per * count);
    if (!x0) return 1;
    if (!strcmp(data, "faces") || !strcmp(data, "faces-v1")) {
        const int version = strcmp(data, "faces") == 0 ? LOCO_FACES_VERSION : 1;
        if (C != 3 || H != 32 || W != 32) {
            fprintf(stderr, "eval_loss: faces need a 3x32x32 model\n");
            return 1;
        }
        uint8_t rgb[32 * 32 * 3];
        for (int i = 0; i < count; i++) {
            if (loco_faces_generate_version(data_seed, i, version, rgb, NULL, NULL)) return 1;
            for (int p = 0; p < 32 * 32; p++)
                for (int c = 0; c < 3; c++) x0[per * i + (size_t)c * 1024 + p] = rgb[p * 3 + c] / 127.5f - 1.0f;
        }
    } else if (!strcmp(data, "fashion-mnist")) {
        uint8_t *img = NULL, *lab = NULL;
        int n = 0;
        if (C != 1 || H != 32 || W != 32 || loco_fashion_mnist_read(NULL, "test", count, &img, &lab, &n) || n < count) {
            fprintf(stderr, "eval_loss: fashion-mnist needs a 1x32x32 model and the test split: %s\n", loco_last_error());
            return 1;
        }
        for (size_t i = 0; i < per * count; i++) x0[i] = img[i] / 127.5f - 1.0f;
        loco_free(img);
        loco_free(lab);
    } else {
        fprintf(stderr, "eval_loss: unknown data %s\n", data);
        return 2;
    }
    float *x = malloc(sizeof(float) * per * batch), *eps = malloc(sizeof(float) * per * batch);
    float *eh = malloc(sizeof(float) * per * batch), *tb = malloc(sizeof(float) * batch);
    double *loss = calloc(bands, sizeof(double));
    if (!x || !eps || !eh || !tb || !loss) return 1;
    for (int b = 0; b < bands; b++) {
        uint64_t s = seed * 1000003u + (uint64_t)b;
        const int lo = b * T / bands, hi = (b + 1) * T / bands;
        double acc = 0;
        for (int i0 = 0; i0 < count; i0 += batch) {
            const int B = count - i0 < batch ? count - i0 : batch;
            for (int j = 0; j < B; j++) {
                int t = lo + (int)(bench_uniform(&s) * (hi - lo));
                if (t >= hi) t = hi - 1;
                tb[j] = (float)t;
                float ab = loco_model_abar(m, (float)t), sa = sqrtf(ab), sb = sqrtf(1 - ab);
                for (size_t e = 0; e < per; e++) {
                    float z = (float)bench_normal(&s);
                    eps[per * j + e] = z;
                    x[per * j + e] = sa * x0[per * (i0 + j) + e] + sb * z;
                }
            }
            if (loco_model_eps(m, B, x, tb, eh)) {
                fprintf(stderr, "eval_loss: %s\n", loco_last_error());
                return 1;
            }
            for (size_t e = 0; e < per * B; e++) acc += ((double)eh[e] - eps[e]) * ((double)eh[e] - eps[e]);
        }
        loss[b] = acc / ((double)per * count);
    }
    double mean = 0;
    printf("%s: held-out eps MSE on %d %s images\n  t band       loss\n", model, count, data);
    for (int b = 0; b < bands; b++) {
        printf("  %4d-%-4d  %.5f\n", b * T / bands, (b + 1) * T / bands - 1, loss[b]);
        mean += loss[b] / bands;
    }
    printf("  mean       %.5f\n", mean);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) return 1;
        fprintf(f, "{\"model\": \"%s\", \"data\": \"%s\", \"count\": %d, \"mean\": %.6f, \"bands\": [", model, data, count,
                mean);
        for (int b = 0; b < bands; b++)
            fprintf(f, "%s{\"t0\": %d, \"t1\": %d, \"loss\": %.6f}", b ? ", " : "", b * T / bands,
                    (b + 1) * T / bands - 1, loss[b]);
        fprintf(f, "]}\n");
        fclose(f);
    }
    free(x), free(eps), free(eh), free(tb), free(loss), free(x0);
    loco_model_free(m);
    return 0;
}
