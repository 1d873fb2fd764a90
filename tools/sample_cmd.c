/* sample_cmd.c - `loco sample`: draw images from a model with DDIM and write
 * them as one PNG grid (loco_sample). Each step's predicted x0 is clamped to
 * [-1, 1] as diffusers' DDIMScheduler does by default; --no-clip turns that
 * off (plain DDIM, as the edit pipeline uses). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SAMPLE_USAGE                                                                                                   \
    "usage: loco sample MODEL --count N --out GRID.png [--steps 50] [--seed 0] [--batch 16] [--cols C]\n"            \
    "       [--zoom auto] [--boost-t 0] [--no-clip] [--tensors OUT.safetensors | --save-tensors] [--json]\n"                              \
    "       [--timesteps authors|leading|trailing]\n"                              \
    "       [--prompt P [--negative-prompt N] [--guidance 7.5]]   (text-to-image models)\n"                           \
    "   or: loco generate MODEL --prompt P --out IMG.png [--seed 0] [--steps 50] ... (one image)"

static int sample_or_generate(args *a, int generate) {
    const char *model = NULL, *out = NULL, *tensors = NULL, *v;
    int save_tensors = 0;
    long long count = generate ? 1 : -1, steps = 50, seed = 0, batch = 16, cols = 0, zoom = 0;
    double boost = 0, g;
    int json = 0, clip = 1, clip_given = 0;
    loco_timesteps ts = LOCO_TIMESTEPS_AUTHORS;
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--prompt"))) cp.prompt = v;
        else if ((v = opt(a, "--negative-prompt"))) cp.negative_prompt = v;
        else if ((v = opt(a, "--guidance"))) {
            if (!parse_float(v, &g) || fabs(g) > 1000) return usage_error("sample: bad --guidance '%s' (|g| <= 1000)", v);
            cp.guidance = (float)g;
        } else if (!generate && (v = opt(a, "--count"))) {
            if (!parse_long(v, 1, 65536, &count)) return usage_error("sample: bad --count '%s' (1..65536)", v);
        } else if ((v = opt(a, "--out"))) out = v;
        else if ((v = opt(a, "--steps"))) {
            if (!parse_long(v, 2, 100000, &steps)) return usage_error("sample: bad --steps '%s' (>= 2)", v);
        } else if ((v = opt(a, "--seed"))) {
            if (!parse_long(v, 0, INT64_MAX, &seed)) return usage_error("sample: bad --seed '%s'", v);
        } else if ((v = opt(a, "--batch"))) {
            if (!parse_long(v, 1, 4096, &batch)) return usage_error("sample: bad --batch '%s' (1..4096)", v);
        } else if ((v = opt(a, "--cols"))) {
            if (!parse_long(v, 1, 65536, &cols)) return usage_error("sample: bad --cols '%s'", v);
        } else if ((v = opt(a, "--zoom"))) {
            if (!parse_zoom(v, &zoom)) return usage_error("sample: bad --zoom '%s' (auto or 1..16)", v);
        } else if ((v = opt(a, "--boost-t"))) {
            if (!parse_float(v, &boost) || boost < 0 || boost >= 1)
                return usage_error("sample: bad --boost-t '%s' (in [0, 1))", v);
        } else if ((v = opt(a, "--timesteps"))) {
            if (loco_timesteps_parse(v, &ts)) return usage_error("sample: --timesteps '%s' must be authors, leading or trailing", v);
        } else if ((v = opt(a, "--tensors"))) tensors = v;
        else if (strcmp(s, "--save-tensors") == 0) save_tensors = 1;
        else if (strcmp(s, "--json") == 0) json = 1;
        else if (strcmp(s, "--no-clip") == 0) clip = 0, clip_given = 1;
        else if (s[0] == '-') return usage_error("sample: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("sample: unexpected argument '%s'", s);
    }
    if (!model || !out || count < 0 || (generate && !cp.prompt)) return usage_error("sample: %s", SAMPLE_USAGE);
    /* --save-tensors: the latents (and images) beside the PNG, OUT without
     * its .png + .safetensors */
    char tensors_beside[4096];
    if (save_tensors && !tensors) {
        size_t n = strlen(out);
        if (n >= 4 && strcasecmp(out + n - 4, ".png") == 0) n -= 4;
        if (n + sizeof ".safetensors" > sizeof tensors_beside)
            return usage_error("sample: --out '%.40s...' is too long for --save-tensors", out);
        snprintf(tensors_beside, sizeof tensors_beside, "%.*s.safetensors", (int)n, out);
        tensors = tensors_beside;
    }
    int rc0 = check_out_file(out, "--out");
    if (!rc0 && tensors) rc0 = check_out_file(tensors, "--tensors");
    if (rc0) return rc0;

    loco_model *m = NULL;
    loco_status st = open_model(model, &m);
    if (st) return fail(st);
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    loco_cond *cond = NULL;
    if (cp.prompt && (st = loco_cond_new(m, &cp, &cond))) {
        loco_model_free(m);
        return fail(st);
    }
    /* a latent model: sample latents (no clamp: the pipeline's scheduler
     * does not clip), then decode them */
    int IC, IH, IW;
    loco_model_image_info(m, &IC, &IH, &IW);
    const int latent = IC != inf.in_channels || IH != inf.height || IW != inf.width;
    if (latent && !clip_given) clip = 0;
    const int C = latent ? IC : inf.in_channels, H = latent ? IH : inf.height, W = latent ? IW : inf.width;
    if (C > 4) {
        loco_cond_free(cond);
        loco_model_free(m);
        fprintf(stderr, "loco: sample: %s has %d channels; a PNG holds at most 4\n", model, C);
        return 1;
    }
    if (steps > inf.train_timesteps) {
        loco_cond_free(cond);
        loco_model_free(m);
        return usage_error("sample: --steps is more than the model's training timesteps (%s)", "see loco info");
    }
    const size_t per = (size_t)C * H * W, lper = (size_t)inf.in_channels * inf.height * inf.width;
    float *x = malloc(sizeof(float) * per * (size_t)count), *z = latent ? malloc(sizeof(float) * lper * (size_t)count) : x;
    if (!x || !z) {
        free(x);
        if (latent) free(z);
        loco_cond_free(cond);
        loco_model_free(m);
        return fail(LOCO_E_NOMEM);
    }
    const int prog = cli_progress_wanted();
    st = loco_sample_ts(m, cond, ts, (int)count, (int)steps, (float)boost, (uint64_t)seed, (int)batch, clip, z,
                        prog ? cli_progress : NULL, NULL);
    if (!st && latent) st = loco_model_decode(m, (int)count, z, x);
    if (!st) st = write_grid(out, x, (int)count, C, H, W, (int)cols, view_zoom(zoom, (int)count, H, W));
    if (!st && tensors) {
        char sd[32];
        snprintf(sd, sizeof sd, "%lld", seed);
        const char *meta[] = {"model", model, "seed", sd, "timesteps", loco_timesteps_name(ts)};
        loco_tensor_ref ref[2] = {{"samples", LOCO_DTYPE_F32, 4, {count, C, H, W}, x},
                                  {"latents", LOCO_DTYPE_F32, 4, {count, inf.in_channels, inf.height, inf.width}, z}};
        st = loco_tensors_write(tensors, ref, latent ? 2 : 1, meta, 6 / 2);
    }
    free(x);
    if (latent) free(z);
    loco_cond_free(cond);
    loco_model_free(m);
    if (st) return fail(st);
    if (json)
        printf("{\"count\": %lld, \"steps\": %lld, \"seed\": %lld, \"boost_t\": %g, \"clip_x0\": %s, \"timesteps\": "
               "\"%s\"}\n",
               count, steps, seed, boost, clip ? "true" : "false", loco_timesteps_name(ts));
    else if (!g_quiet)
        fprintf(stderr, "loco: wrote %s (%lld image%s, %lld DDIM steps on the %s timesteps, seed %lld)\n", out, count,
                count == 1 ? "" : "s", steps, loco_timesteps_name(ts), seed);
    return 0;
}

int cmd_sample(args *a) { return sample_or_generate(a, 0); }
int cmd_generate(args *a) { return sample_or_generate(a, 1); }
