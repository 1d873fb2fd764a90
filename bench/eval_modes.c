/* eval_modes.c - does a faces model keep its backgrounds to the data's four
 * colours? A probe of mode interpolation.
 *
 *   build/eval_modes MODEL [--count 24] [--frac 0.3] [--t 0.2,0.4,0.6,0.8]
 *       [--steps 50] [--faces-version 2] [--held-out-seed 99] [--seed 0]
 *
 * The data's backgrounds are one of four flat colours. For each of `count`
 * held-out faces this moves the background a fraction `frac` of the way to
 * another of the four (the face drawn again with the next background), noises
 * the image to timestep t (fixed noise per face), runs DDIM (eta 0) back to
 * t = 0 on the authors' `steps`-point grid, and measures the background
 * colour that comes out (bench/colour_eval.h's region): its distance to the
 * nearest training background colour and to the colour it went in with. It
 * does the same for the unchanged faces (the control: their background
 * should come back as it went in).
 *
 * What a denoiser that knows the colours are four does: once the noise on
 * the background's mean colour (per-pixel sigma / sqrt(386 pixels)) is well
 * under the distance between the four, the posterior of x0 has one of them,
 * so an in-between colour comes out at the nearest of the four (distance ~0);
 * a denoiser that is linear along the colour direction leaves it where it
 * went in. Prints a table, one row per t.
 *
 * A second table (--probe-t, fractions of T = 1000) looks at one step: the
 * unchanged faces noised to t, the model's x0_hat, its background colour
 * against the face's own; and the same for the posterior mean of the
 * background colour given the noisy background's mean colour m, with the
 * 512 training faces' background colours c_i as the prior (weights
 * exp(-n |m - sqrt(abar) c_i|^2 / (2 (1 - abar))), n the region's pixels):
 * a lower bound on how sharply a perfect denoiser can name the colour (it
 * sees only the region; --t none skips the first table). Where the posterior is near 0 and the model is not,
 * the model has not learned that the colours are four. Exit 0; 1 on errors. */
#include "bench_util.h"
#include "colour_eval.h"

#include <stdio.h>

/* x [3, H, W] = sqrt(abar) x0 + sqrt(1 - abar) eps: the 8-bit face rgb
 * [H*W*3] in [-1, 1] noised with the stream seeded s */
static void noise_face(const uint8_t *rgb, float abar, uint64_t s, float *x) {
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < CE_PIX; p++)
            x[c * CE_PIX + p] = sqrtf(abar) * (rgb[p * 3 + c] / 127.5f - 1.0f) + sqrtf(1.0f - abar) * (float)bench_normal(&s);
}

static double dist3(const float a[3], const float b[3]) {
    double d = 0;
    for (int c = 0; c < 3; c++) d += ((double)a[c] - b[c]) * ((double)a[c] - b[c]);
    return sqrt(d);
}

/* "a,b,c" into v[16]: the count, or -1 when malformed or out of (0, 1) */
static int parse_list(const char *list, double v[16]) {
    int n = 0;
    if (!strcmp(list, "none")) return 0;
    for (const char *p = list; *p;) {
        char *end;
        if (n == 16) return -1;
        v[n] = strtod(p, &end);
        if (end == p || !(v[n] > 0 && v[n] < 1) || (*end && *end != ',')) return -1;
        n++;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* the second table: one step from the unchanged faces noised to each t */
static int probe(loco_model *m, const ce_regions *r, int count, int version, uint64_t held_seed, uint64_t seed,
                 const double *ps, int np) {
    float *x = malloc(sizeof(float) * 3 * CE_PIX * (size_t)count), *x0 = malloc(sizeof(float) * 3 * CE_PIX * (size_t)count);
    float *tt = malloc(sizeof(float) * (size_t)count), (*truth)[3] = malloc(sizeof *truth * (size_t)count);
    double *lw = malloc(sizeof(double) * (size_t)r->n_ref);
    uint8_t(*own)[CE_PIX * 3] = malloc(sizeof *own * (size_t)count);
    int rc = 1;
    if (!x || !x0 || !tt || !truth || !lw || !own) goto done;
    for (int f = 0; f < count; f++) {
        float col[2][3];
        if (loco_faces_generate_version(held_seed, f, version, own[f], NULL, NULL)) goto done;
        ce_colours(r, own[f], col);
        memcpy(truth[f], col[1], sizeof col[1]);
    }
    printf("\nOne step: x0_hat's background colour from the unchanged faces noised to t, against the face's own "
           "(RGB levels, mean over faces); the posterior: the mean colour given the noisy background's mean, the 512 "
           "training colours as the prior\n\n");
    printf("| t | sqrt(abar) | noise on the mean colour (levels per channel, in x0) | model: off the own colour | posterior: off the own "
           "colour | model: off the posterior |\n|---|---|---|---|---|---|\n");
    const double n = r->count[1];
    for (int k = 0; k < np; k++) {
        const float t = (float)lround(ps[k] * 999);
        const double a = loco_model_abar(m, t);
        for (int f = 0; f < count; f++) {
            noise_face(own[f], (float)a, (seed + 1) * 0x9E3779B97F4A7C15ull + (uint64_t)f * 7919u + (uint64_t)k,
                       x + (size_t)f * 3 * CE_PIX);
            tt[f] = t;
        }
        if (loco_model_x0_hat(m, count, x, tt, x0, NULL)) {
            fprintf(stderr, "eval_modes: %s\n", loco_last_error());
            goto done;
        }
        double dm = 0, dp = 0, dmp = 0;
        for (int f = 0; f < count; f++) {
            uint8_t rgb[CE_PIX * 3];
            float col[2][3], post[3] = {0, 0, 0};
            ce_to_rgb(x0 + (size_t)f * 3 * CE_PIX, rgb);
            ce_colours(r, rgb, col);
            /* the noisy region's mean colour, in [-1, 1] units */
            double mean[3] = {0, 0, 0}, best = -1e300, z = 0;
            const float *xf = x + (size_t)f * 3 * CE_PIX;
            for (int c = 0; c < 3; c++) {
                for (int p = 0; p < CE_PIX; p++)
                    if (r->in[1][p]) mean[c] += xf[c * CE_PIX + p];
                mean[c] /= n;
            }
            for (int i = 0; i < r->n_ref; i++) {
                double d2 = 0;
                for (int c = 0; c < 3; c++) {
                    double e = mean[c] - sqrt(a) * (r->ref[i][1][c] / 127.5 - 1.0);
                    d2 += e * e;
                }
                lw[i] = -n * d2 / (2.0 * (1.0 - a));
                if (lw[i] > best) best = lw[i];
            }
            for (int i = 0; i < r->n_ref; i++) {
                double w = exp(lw[i] - best);
                z += w;
                for (int c = 0; c < 3; c++) post[c] += (float)(w * r->ref[i][1][c]);
            }
            for (int c = 0; c < 3; c++) post[c] = (float)(post[c] / z);
            dm += dist3(col[1], truth[f]) / count;
            dp += dist3(post, truth[f]) / count;
            dmp += dist3(col[1], post) / count;
        }
        printf("| %.0f | %.3f | %.1f | %.1f | %.1f | %.1f |\n", t, sqrt(a), 127.5 * sqrt((1.0 - a) / (a * n)), dm, dp, dmp);
        fflush(stdout);
    }
    rc = 0;
done:
    free(x), free(x0), free(tt), free(truth), free(lw), free(own);
    return rc;
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: eval_modes MODEL [--count 24] [--frac 0.3] [--t 0.2,0.4,0.6,0.8] [--steps 50] "
                        "[--probe-t 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9] [--faces-version 2] [--held-out-seed 99] [--seed 0]\n");
        return 2;
    }
    const char *model = argv[1], *tlist = "0.2,0.4,0.6,0.8", *plist = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9";
    int count = 24, steps = 50, version = LOCO_FACES_VERSION;
    double frac = 0.3;
    uint64_t held_seed = 99, seed = 0;
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "eval_modes: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--count")) count = atoi(v);
        else if (!strcmp(a, "--frac")) frac = atof(v);
        else if (!strcmp(a, "--t")) tlist = v;
        else if (!strcmp(a, "--probe-t")) plist = v;
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--faces-version")) version = atoi(v);
        else if (!strcmp(a, "--held-out-seed")) held_seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "eval_modes: unknown option %s\n", a);
            return 2;
        }
    }
    double ts[16], ps[16];
    const int nt = parse_list(tlist, ts), np = parse_list(plist, ps);
    if (nt < 0 || np < 0) {
        fprintf(stderr, "eval_modes: --t and --probe-t want up to 16 fractions in (0, 1), comma-separated, or none\n");
        return 2;
    }
    if (count < 1 || count > 4096 || steps < 2 || steps > 1000 || !(frac >= 0 && frac <= 1) || nt + np < 1 ||
        (version != 1 && version != 2)) {
        fprintf(stderr, "eval_modes: --count 1..4096, --steps 2..1000, --frac in [0, 1], --faces-version 1|2\n");
        return 2;
    }
    int fb = -1;
    for (int i = 0; i < loco_faces_n_factors(); i++)
        if (!strcmp(loco_faces_factor_name(i), "background")) fb = i;
    ce_regions r;
    if (fb < 0 || ce_init(&r, 0, version, 512)) {
        fprintf(stderr, "eval_modes: the reference faces: %s\n", loco_last_error());
        return 1;
    }
    loco_model *m = ce_open_model("eval_modes", model);
    if (!m) return 1;
    float *grid = malloc(sizeof(float) * (size_t)steps), *x = malloc(sizeof(float) * 3 * CE_PIX);
    if (!grid || !x || loco_ddim_grid(steps, 1000, grid)) return 1;
    printf("eval_modes %s: %d held-out faces (seed %llu, generator %d), background moved %.2f of the way to another "
           "of the four; DDIM from t back to 0 (%d-point grid)\n\n",
           model, count, (unsigned long long)held_seed, version, frac, steps);
    if (nt > 0)
        printf("| t | sqrt(abar) | moved: to the nearest training colour, in / out | moved: out from in | unchanged: to the "
           "nearest training colour, out |\n|---|---|---|---|---|\n");
    for (int k = 0; k < nt; k++) {
        int gi = (int)lround(ts[k] * (steps - 1));
        if (gi < 1) gi = 1;
        double din = 0, dout = 0, dmove = 0, dctl = 0;
        for (int f = 0; f < count; f++) {
            float fac[LOCO_FACES_N_FACTORS], col_in[2][3], col_out[2][3];
            uint8_t own[CE_PIX * 3], other[CE_PIX * 3], lab[CE_PIX], rgb[CE_PIX * 3];
            if (loco_faces_sample_version(held_seed, f, version, fac) || loco_faces_render(fac, own, lab)) return 1;
            fac[fb] = fmodf(fac[fb] + 0.25f, 1.0f); /* the next of the four backgrounds */
            if (loco_faces_render(fac, other, NULL)) return 1;
            for (int moved = 0; moved < 2; moved++) {
                for (int p = 0; p < CE_PIX; p++)
                    for (int c = 0; c < 3; c++) {
                        double v = own[p * 3 + c];
                        if (moved && lab[p] == LOCO_LABEL_BACKGROUND) v = (1 - frac) * v + frac * other[p * 3 + c];
                        rgb[p * 3 + c] = (uint8_t)lround(v);
                    }
                ce_colours(&r, rgb, col_in);
                const float a = loco_model_abar(m, grid[gi]);
                noise_face(rgb, a, seed * 0x9E3779B97F4A7C15ull + (uint64_t)f, x);
                if (loco_ddim_sample(m, 1, x, grid, gi, 0, 0, 0, NULL, NULL)) {
                    fprintf(stderr, "eval_modes: %s\n", loco_last_error());
                    return 1;
                }
                ce_to_rgb(x, rgb);
                ce_colours(&r, rgb, col_out);
                if (moved) {
                    din += ce_distance(&r, 1, col_in[1]) / count;
                    dout += ce_distance(&r, 1, col_out[1]) / count;
                    dmove += dist3(col_out[1], col_in[1]) / count;
                } else
                    dctl += ce_distance(&r, 1, col_out[1]) / count;
            }
        }
        printf("| %.0f | %.3f | %.1f / %.1f | %.1f | %.1f |\n", grid[gi], sqrt(loco_model_abar(m, grid[gi])), din, dout,
               dmove, dctl);
        fflush(stdout);
    }
    free(grid), free(x);
    if (np > 0 && probe(m, &r, count, version, held_seed, seed, ps, np)) return 1;
    ce_free(&r);
    loco_model_free(m);
    return 0;
}
