/* eval_colour.c - the colours of a faces model's samples against the data's.
 *
 *   build/eval_colour MODEL [--count 64] [--steps 50] [--seed 0]
 *       [--faces-version 2] [--data-seed 0] [--ref 512] [--held-out-seed 99]
 *       [--bound 8] [--boost-t 0] [--json OUT]
 *
 * Draws `count` samples as `loco sample MODEL --steps S --seed SEED` does
 * (DDIM, x0 clipped) and `count` held-out data faces (--held-out-seed), and
 * measures both against `ref` training faces (--data-seed, generator
 * --faces-version) with colour_eval.h: the skin and background region
 * colours, their per-channel mean and spread, and each image's distance to
 * the nearest training colour (RGB levels). Pass: the 90th percentile of
 * the samples' distances is <= --bound levels in both regions (the held-out
 * data, as a control, sits at ~0-1). Exit 0 on pass, 3 on fail. */
#include "colour_eval.h"

#include <stdio.h>

static void row(FILE *f, const char *set, const char *region, const ce_stats *s, int g) {
    fprintf(f, "| %s | %s | %.1f %.1f %.1f | %.1f %.1f %.1f | %.2f / %.2f / %.2f | %.2f |\n", set, region, s->mean[g][0],
            s->mean[g][1], s->mean[g][2], s->spread[g][0], s->spread[g][1], s->spread[g][2], s->dist_median[g],
            s->dist_p90[g], s->dist_max[g], s->flat_median[g]);
}

static void json_stats(FILE *f, const char *name, const ce_stats *s) {
    static const char *const rn[2] = {"skin", "background"};
    fprintf(f, "  \"%s\": {", name);
    for (int g = 0; g < 2; g++)
        fprintf(f,
                "%s\"%s\": {\"mean\": [%.3f, %.3f, %.3f], \"spread\": [%.3f, %.3f, %.3f], \"distance_median\": %.3f, "
                "\"distance_p90\": %.3f, \"distance_max\": %.3f, \"within_image_median\": %.3f}",
                g ? ", " : "", rn[g], s->mean[g][0], s->mean[g][1], s->mean[g][2], s->spread[g][0], s->spread[g][1],
                s->spread[g][2], s->dist_median[g], s->dist_p90[g], s->dist_max[g], s->flat_median[g]);
    fprintf(f, "}");
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* short OpenMP waits unless chosen otherwise */
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: eval_colour MODEL [--count 64] [--steps 50] [--seed 0] [--faces-version 2] "
                        "[--data-seed 0] [--ref 512] [--held-out-seed 99] [--bound 8] [--boost-t 0] [--json OUT]\n");
        return 2;
    }
    const char *model = argv[1], *json = NULL;
    int count = 64, steps = 50, version = LOCO_FACES_VERSION, nref = 512;
    uint64_t seed = 0, data_seed = 0, held_seed = 99;
    double bound = 8, boost = 0;
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "eval_colour: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--count")) count = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--faces-version")) version = atoi(v);
        else if (!strcmp(a, "--data-seed")) data_seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--ref")) nref = atoi(v);
        else if (!strcmp(a, "--held-out-seed")) held_seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--bound")) bound = atof(v);
        else if (!strcmp(a, "--boost-t")) boost = atof(v);
        else if (!strcmp(a, "--json")) json = v;
        else {
            fprintf(stderr, "eval_colour: unknown option %s\n", a);
            return 2;
        }
    }
    if (count < 2 || count > 4096 || steps < 1 || steps > 1000 || nref < 1 || nref > 100000 ||
        (version != 1 && version != 2) || !(bound > 0) || !(boost >= 0 && boost < 1)) {
        fprintf(stderr, "eval_colour: --count 2..4096, --steps 1..1000, --ref 1..100000, --faces-version 1|2, --bound > 0, --boost-t in [0, 1)\n");
        return 2;
    }
    ce_regions r;
    if (ce_init(&r, data_seed, version, nref)) {
        fprintf(stderr, "eval_colour: the reference faces: %s\n", loco_last_error());
        return 1;
    }
    loco_model *m = ce_open_model("eval_colour", model);
    if (!m) return 1;
    float *x = malloc(sizeof(float) * 3 * CE_PIX * (size_t)count);
    float(*cs)[2][3] = malloc(sizeof *cs * (size_t)count), (*ch)[2][3] = malloc(sizeof *ch * (size_t)count);
    float(*fs)[2] = malloc(sizeof *fs * (size_t)count), (*fh)[2] = malloc(sizeof *fh * (size_t)count);
    if (!x || !cs || !ch || !fs || !fh) return 1;
    if (loco_sample(m, count, steps, (float)boost, seed, 16, 1, x, NULL, NULL)) {
        fprintf(stderr, "eval_colour: sampling: %s\n", loco_last_error());
        return 1;
    }
    uint8_t rgb[CE_PIX * 3];
    for (int i = 0; i < count; i++) {
        ce_to_rgb(x + (size_t)i * 3 * CE_PIX, rgb);
        ce_colours(&r, rgb, cs[i]);
        ce_flatness(&r, rgb, (const float(*)[3])cs[i], fs[i]);
        if (loco_faces_generate_version(held_seed, i, version, rgb, NULL, NULL)) return 1;
        ce_colours(&r, rgb, ch[i]);
        ce_flatness(&r, rgb, (const float(*)[3])ch[i], fh[i]);
    }
    ce_stats ss, sh;
    ce_summarise(&r, count, (const float(*)[2][3])cs, (const float(*)[2])fs, &ss);
    ce_summarise(&r, count, (const float(*)[2][3])ch, (const float(*)[2])fh, &sh);
    printf("eval_colour %s: %d samples (%d steps, seed %llu) and %d held-out faces (seed %llu) against %d training "
           "faces (seed %llu, generator %d); regions: skin %d px, background %d px\n\n",
           model, count, steps, (unsigned long long)seed, count, (unsigned long long)held_seed, nref,
           (unsigned long long)data_seed, version, r.count[0], r.count[1]);
    printf("| set | region | mean R G B | spread R G B | distance to the nearest training colour: median / p90 / max "
           "| within one image: median distance from its mean colour, median over images |\n|---|---|---|---|---|---|\n");
    row(stdout, "held-out data", "skin", &sh, 0);
    row(stdout, "samples", "skin", &ss, 0);
    row(stdout, "held-out data", "background", &sh, 1);
    row(stdout, "samples", "background", &ss, 1);
    const int pass = ss.dist_p90[0] <= bound && ss.dist_p90[1] <= bound;
    printf("\n%s: the samples' 90th-percentile distance is %.2f (skin) and %.2f (background) levels; bound %.1f\n",
           pass ? "PASS" : "FAIL", ss.dist_p90[0], ss.dist_p90[1], bound);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "eval_colour: cannot write %s\n", json);
            return 1;
        }
        fprintf(f, "{\n  \"model\": \"%s\", \"count\": %d, \"steps\": %d, \"seed\": %llu, \"faces_version\": %d, "
                   "\"ref\": %d, \"bound\": %.3f, \"pass\": %s,\n",
                model, count, steps, (unsigned long long)seed, version, nref, bound, pass ? "true" : "false");
        json_stats(f, "samples", &ss);
        fprintf(f, ",\n");
        json_stats(f, "held_out_data", &sh);
        fprintf(f, "\n}\n");
        fclose(f);
    }
    free(x), free(cs), free(ch), free(fs), free(fh);
    ce_free(&r);
    loco_model_free(m);
    return pass ? 0 : 3;
}
