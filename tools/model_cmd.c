/* model_cmd.c - the commands on a model and tensors: `loco info`, `init`,
 * `eps`, `jacobian` and `convert`. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- info ------------------------------------------------------------------ */

int cmd_info(args *a) {
    const char *model = NULL;
    int json = 0;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if (strcmp(s, "--json") == 0) json = 1;
        else if (s[0] == '-') return usage_error("info: unknown option '%s'", s);
        else if (!model) model = s;
        else return usage_error("info: unexpected argument '%s'", s);
    }
    if (!model) return usage_error("info: %s", "missing MODEL");
    loco_model *m;
    loco_status st = open_model(model, &m);
    if (st) return fail(st);
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    if (json) {
        printf("{\"model\": \"%s\", \"family\": \"%s\", \"in_channels\": %d, \"out_channels\": %d, \"height\": %d, \"width\": %d, "
               "\"blocks\": %d, \"parameters\": %lld, \"gflop_per_image\": %.4f, \"gflop_executed_per_image\": %.4f, "
               "\"weight_bytes\": %zu, "
               "\"activation_bytes_per_image\": %zu, \"train_timesteps\": %d, \"default_t_edit\": %.9g, "
               "\"default_boost_t\": %.9g}\n",
               model, inf.family, inf.in_channels, inf.out_channels, inf.height, inf.width, inf.n_blocks, (long long)inf.n_params,
               inf.flops / 1e9, inf.flops_executed / 1e9, inf.weight_bytes, inf.activation_bytes, inf.train_timesteps,
               (double)inf.default_t_edit, (double)inf.default_boost_t);
    } else {
        char *text;
        if ((st = loco_model_describe(m, &text))) {
            loco_model_free(m);
            return fail(st);
        }
        fputs(text, stdout);
        loco_free(text);
    }
    loco_model_free(m);
    return 0;
}

/* ---- init ------------------------------------------------------------------ */

int cmd_init(args *a) {
    const char *out = NULL, *config = NULL, *v;
    long long seed = 0;
    loco_dtype dt = LOCO_DTYPE_F32;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--config"))) config = v;
        else if ((v = opt(a, "--seed"))) {
            if (!parse_long(v, 0, INT64_MAX, &seed)) return usage_error("init: bad --seed '%s'", v);
        } else if ((v = opt(a, "--dtype"))) {
            if (strcmp(v, "f32") == 0) dt = LOCO_DTYPE_F32;
            else if (strcmp(v, "f16") == 0) dt = LOCO_DTYPE_F16;
            else return usage_error("init: --dtype must be f32 or f16, not '%s'", v);
        } else if (s[0] == '-') return usage_error("init: unknown or incomplete option '%s'", s);
        else if (!out) out = s;
        else return usage_error("init: unexpected argument '%s'", s);
    }
    if (!out) return usage_error("init: %s", "missing OUT_DIR");
    if (!config) return usage_error("init: %s", "missing --config CONFIG.json");
    loco_status st = loco_model_init_random(config, out, (uint64_t)seed, dt);
    if (st) return fail(st);
    if (!g_quiet) fprintf(stderr, "loco: wrote %s (seed %lld, %s)\n", out, seed, dt == LOCO_DTYPE_F32 ? "f32" : "f16");
    return 0;
}

/* ---- eps ------------------------------------------------------------------- */

/* --t must name one of the model's timesteps, 0..T-1 (fractions allowed) */
static int check_t(const char *cmd, const char *model, const loco_model_info *inf, double t) {
    if (t < 0 || t > inf->train_timesteps - 1) {
        fprintf(stderr, "loco: error: %s: --t %g is outside %s's timesteps [0, %d]\n", cmd, t, model,
                inf->train_timesteps - 1);
        return 2;
    }
    return 0;
}

int cmd_eps(args *a) {
    const char *model = NULL, *xpath = NULL, *outp = NULL, *v;
    double t = NAN, g;
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--x"))) xpath = v;
        else if ((v = opt(a, "--prompt"))) cp.prompt = v;
        else if ((v = opt(a, "--negative-prompt"))) cp.negative_prompt = v;
        else if ((v = opt(a, "--guidance"))) {
            if (!parse_float(v, &g) || fabs(g) > 1000) return usage_error("eps: bad --guidance '%s' (|g| <= 1000)", v);
            cp.guidance = (float)g;
        }
        else if ((v = opt(a, "--out"))) outp = v;
        else if ((v = opt(a, "--t"))) {
            if (!parse_float(v, &t) || t < 0) return usage_error("eps: bad --t '%s' (a timestep >= 0)", v);
        } else if (s[0] == '-') return usage_error("eps: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("eps: unexpected argument '%s'", s);
    }
    if (!model || !xpath || !outp || isnan(t))
        return usage_error("eps: %s", "needs MODEL --x X.safetensors --t T --out OUT.safetensors");
    int rc = check_out_file(outp, "--out");
    if (rc) return rc;
    loco_model *m = NULL;
    loco_cond *cond = NULL;
    loco_tensors *xf = NULL;
    float *x = NULL, *eps = NULL, *x0 = NULL, *ts = NULL;
    loco_status st;
    if ((st = open_model(model, &m))) return fail(st);
    /* a text-to-image model: the prompts' guided eps */
    if (cp.prompt && (st = loco_cond_new(m, &cp, &cond))) goto err;
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    if ((rc = check_t("eps", model, &inf, t))) {
        loco_model_free(m);
        return rc;
    }
    if ((st = loco_tensors_open(xpath, &xf))) goto err;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    if ((st = loco_tensors_read_f32(xf, "x", &x, &nd, sh, 0))) goto err;
    if (nd != 4 || sh[1] != inf.in_channels || sh[2] != inf.height || sh[3] != inf.width || sh[0] < 1 || sh[0] > 4096) {
        fprintf(stderr, "loco: error: %s: tensor 'x' must have shape [B,%d,%d,%d] with 1 <= B <= 4096\n", xpath,
                inf.in_channels, inf.height, inf.width);
        rc = 1;
        goto done;
    }
    int B = (int)sh[0];
    size_t per = (size_t)inf.out_channels * inf.height * inf.width;
    eps = malloc(sizeof(float) * per * (size_t)B);
    x0 = malloc(sizeof(float) * per * (size_t)B);
    ts = malloc(sizeof(float) * (size_t)B);
    if (!eps || !x0 || !ts) {
        fprintf(stderr, "loco: error: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int b = 0; b < B; b++) ts[b] = (float)t;
    int have_x0 = inf.in_channels == inf.out_channels;
    if (have_x0) st = loco_model_x0_hat_cond(m, B, x, ts, cond, x0, eps);
    else st = loco_model_eps_cond(m, B, x, ts, cond, eps);
    if (st) goto err;
    loco_tensor_ref refs[2] = {
        {"eps", LOCO_DTYPE_F32, 4, {B, inf.out_channels, inf.height, inf.width}, eps},
        {"x0_hat", LOCO_DTYPE_F32, 4, {B, inf.out_channels, inf.height, inf.width}, x0},
    };
    char tbuf[64], abuf[64];
    snprintf(tbuf, sizeof tbuf, "%.9g", (double)(float)t);
    snprintf(abuf, sizeof abuf, "%.9g", (double)loco_model_abar(m, (float)t));
    const char *meta[] = {"model", model, "t", tbuf, "alpha_t", abuf};
    if ((st = loco_tensors_write(outp, refs, have_x0 ? 2 : 1, meta, 3))) goto err;
    goto done;
err:
    rc = fail(st);
done:
    free(x);
    free(eps);
    free(x0);
    free(ts);
    loco_tensors_close(xf);
    loco_cond_free(cond);
    loco_model_free(m);
    return rc;
}

/* ---- jacobian -------------------------------------------------------------- */

/* "a,b,c,d" -> 4 whole numbers */
static int parse_rect(const char *s, int r[4]) { return parse_int_list(s, r, 4, -1000000, 1000000) == 4; }

/* Reads tensor `name` [1,C,H,W] or [C,H,W] of the model's input shape. */
static loco_status read_image_tensor(const char *path, const char *name, const loco_model_info *inf, float **out) {
    loco_tensors *f;
    loco_status st = loco_tensors_open(path, &f);
    if (st) return st;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    st = loco_tensors_read_f32(f, name, out, &nd, sh, 0);
    loco_tensors_close(f);
    if (st) return st;
    int ok = (nd == 4 && sh[0] == 1 && sh[1] == inf->in_channels && sh[2] == inf->height && sh[3] == inf->width) ||
             (nd == 3 && sh[0] == inf->in_channels && sh[1] == inf->height && sh[2] == inf->width);
    if (!ok) {
        fprintf(stderr, "loco: error: %s: tensor '%s' must have shape [1,%d,%d,%d]\n", path, name, inf->in_channels,
                inf->height, inf->width);
        loco_free(*out);
        *out = NULL;
        return LOCO_E_SHAPE;
    }
    return LOCO_OK;
}

int cmd_jacobian(args *a) {
    const char *model = NULL, *xpath = NULL, *inp = NULL, *outp = NULL, *maskp = NULL, *rect = NULL, *mode = NULL,
               *of_s = "x0", *v;
    double t = NAN;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--x"))) xpath = v;
        else if ((v = opt(a, "--in"))) inp = v;
        else if ((v = opt(a, "--out"))) outp = v;
        else if ((v = opt(a, "--mask"))) maskp = v;
        else if ((v = opt(a, "--rect"))) rect = v;
        else if ((v = opt(a, "--mode"))) mode = v;
        else if ((v = opt(a, "--of"))) of_s = v;
        else if ((v = opt(a, "--t"))) {
            if (!parse_float(v, &t) || t < 0) return usage_error("jacobian: bad --t '%s' (a timestep >= 0)", v);
        } else if (s[0] == '-') return usage_error("jacobian: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("jacobian: unexpected argument '%s'", s);
    }
    if (!model || !xpath || !inp || !outp || !mode || isnan(t))
        return usage_error("jacobian: %s", "needs MODEL --x X --t T --mode jvp|vjp --in IN --out OUT");
    int jvp = strcmp(mode, "jvp") == 0;
    if (!jvp && strcmp(mode, "vjp") != 0) return usage_error("jacobian: --mode must be jvp or vjp, not '%s'", mode);
    loco_output of;
    if (strcmp(of_s, "x0") == 0) of = LOCO_OUT_X0;
    else if (strcmp(of_s, "eps") == 0) of = LOCO_OUT_EPS;
    else return usage_error("jacobian: --of must be eps or x0, not '%s'", of_s);
    if (maskp && rect) return usage_error("jacobian: %s", "give --mask or --rect, not both");
    int r4[4];
    if (rect && !parse_rect(rect, r4))
        return usage_error("jacobian: bad --rect '%s' (four whole numbers y0,y1,x0,x1)", rect);
    int rc = check_out_file(outp, "--out");
    if (rc) return rc;

    loco_model *m = NULL;
    loco_lin *L = NULL;
    loco_tensors *inf_f = NULL;
    float *x = NULL, *in = NULL, *out = NULL;
    uint8_t *pix = NULL, *mask = NULL;
    loco_status st;
    if ((st = open_model(model, &m))) return fail(st);
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    if ((rc = check_t("jacobian", model, &inf, t))) {
        loco_model_free(m);
        return rc;
    }
    const int C = inf.out_channels, H = inf.height, W = inf.width;
    const size_t n = (size_t)inf.in_channels * H * W, nout = (size_t)C * H * W;
    if ((st = read_image_tensor(xpath, "x", &inf, &x))) goto err;
    if (maskp || rect) {
        pix = malloc((size_t)H * W);
        mask = malloc(nout);
        if (!pix || !mask) {
            st = LOCO_E_NOMEM;
            goto err;
        }
        st = maskp ? loco_mask_png(maskp, H, W, pix) : loco_mask_rect(H, W, r4[0], r4[1], r4[2], r4[3], pix);
        if (st) goto err;
        for (int c = 0; c < C; c++) memcpy(mask + (size_t)c * H * W, pix, (size_t)H * W);
    }
    if ((st = loco_tensors_open(inp, &inf_f))) goto err;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    const char *iname = jvp ? "V" : "U";
    if ((st = loco_tensors_read_f32(inf_f, iname, &in, &nd, sh, 0))) goto err;
    if ((st = loco_linearize(m, x, (float)t, &L))) goto err;
    size_t l = loco_lin_mask_count(L, mask);
    int k = nd >= 1 ? (int)sh[0] : 0;
    if (jvp) {
        if (nd != 4 || sh[1] != inf.in_channels || sh[2] != H || sh[3] != W || k < 1 || k > 65536) {
            fprintf(stderr, "loco: error: %s: tensor 'V' must have shape [k,%d,%d,%d]\n", inp, inf.in_channels, H, W);
            rc = 1;
            goto done;
        }
        out = malloc(sizeof(float) * (size_t)k * l);
        if (!out) {
            st = LOCO_E_NOMEM;
            goto err;
        }
        if ((st = loco_lin_jvp(L, of, mask, k, in, out))) goto err;
        loco_tensor_ref ref = {"JV", LOCO_DTYPE_F32, mask ? 2 : 4, {k, (int64_t)l}, out};
        if (!mask) {
            ref.shape[1] = C;
            ref.shape[2] = H;
            ref.shape[3] = W;
        }
        char tb[64];
        snprintf(tb, sizeof tb, "%.9g", (double)(float)t);
        const char *meta[] = {"model", model, "t", tb, "of", of_s, "mode", "jvp"};
        if ((st = loco_tensors_write(outp, &ref, 1, meta, 4))) goto err;
    } else {
        int full = nd == 4 && sh[1] == C && sh[2] == H && sh[3] == W;
        int flat = nd == 2 && (size_t)sh[1] == l;
        if ((!full && !flat) || k < 1 || k > 65536) {
            fprintf(stderr, "loco: error: %s: tensor 'U' must have shape [k,%d,%d,%d] or [k,%zu] (mask entries)\n", inp,
                    C, H, W, l);
            rc = 1;
            goto done;
        }
        if (full && mask) { /* keep only the mask entries */
            size_t j = 0;
            for (int b = 0; b < k; b++)
                for (size_t i = 0; i < nout; i++)
                    if (mask[i]) in[j++] = in[(size_t)b * nout + i];
        }
        out = malloc(sizeof(float) * (size_t)k * n);
        if (!out) {
            st = LOCO_E_NOMEM;
            goto err;
        }
        if ((st = loco_lin_vjp(L, of, mask, k, in, out))) goto err;
        loco_tensor_ref ref = {"UJ", LOCO_DTYPE_F32, 4, {k, inf.in_channels, H, W}, out};
        char tb[64];
        snprintf(tb, sizeof tb, "%.9g", (double)(float)t);
        const char *meta[] = {"model", model, "t", tb, "of", of_s, "mode", "vjp"};
        if ((st = loco_tensors_write(outp, &ref, 1, meta, 4))) goto err;
    }
    goto done;
err:
    rc = fail(st);
done:
    loco_free(x);
    loco_free(in);
    free(out);
    free(pix);
    free(mask);
    loco_tensors_close(inf_f);
    loco_lin_free(L);
    loco_model_free(m);
    return rc;
}

/* ---- convert --------------------------------------------------------------- */

int cmd_convert(args *a) {
    const char *model = NULL, *out = NULL, *v;
    loco_dtype dt = LOCO_DTYPE_COUNT; /* keep */
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--dtype"))) {
            if (strcmp(v, "f32") == 0) dt = LOCO_DTYPE_F32;
            else if (strcmp(v, "f16") == 0) dt = LOCO_DTYPE_F16;
            else return usage_error("convert: --dtype must be f32 or f16, not '%s'", v);
        } else if (s[0] == '-') return usage_error("convert: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else if (!out) out = s;
        else return usage_error("convert: unexpected argument '%s'", s);
    }
    if (!model || !out) return usage_error("convert: %s", "needs MODEL OUT_DIR");
    /* the model must load (its weights match its config) before it is copied */
    loco_model *m;
    char *wpath = NULL;
    loco_status st = open_model(model, &m);
    if (st) return fail(st);
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const int adm = strcmp(inf.family, "ADM") == 0, sd = strcmp(inf.family, "StableDiffusion") == 0;
    loco_model_free(m);
    if ((!adm && !sd && (st = loco_model_weights_path(model, &wpath))) ||
        (st = loco_convert_with(model, &g_open, out, dt))) {
        loco_free(wpath);
        return fail(st);
    }
    const int bare_pt = adm && strlen(out) > 3 && strcmp(out + strlen(out) - 3, ".pt") == 0;
    if (!g_quiet)
        fprintf(stderr, "loco: wrote %s%s%s (from %s%s)\n", out, bare_pt ? "" : "/",
                bare_pt ? " as a bare PyTorch checkpoint"
                        : adm ? "config.json and model.safetensors"
                        : sd  ? "{unet,vae,text_encoder} weights and configs"
                              : "diffusion_pytorch_model.safetensors",
                wpath ? wpath : model, dt == LOCO_DTYPE_F32 ? ", as f32" : dt == LOCO_DTYPE_F16 ? ", as f16" : "");
    loco_free(wpath);
    return 0;
}

