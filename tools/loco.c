/* loco - command-line front end. Uses only the public header. */
#define _POSIX_C_SOURCE 200809L
#include "loco.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_quiet = 0;

static void log_cb(loco_log_level lvl, const char *msg, void *user) {
    (void)user;
    if (lvl == LOCO_LOG_ERROR) return; /* errors are printed by the caller */
    if (g_quiet && lvl > LOCO_LOG_WARN) return;
    if (lvl == LOCO_LOG_DEBUG) return;
    fprintf(stderr, "loco: %s: %s\n", lvl == LOCO_LOG_WARN ? "warning" : "info", msg);
}

static int fail(loco_status s) {
    const char *d = loco_last_error();
    fprintf(stderr, "loco: error: %s%s%s\n", d[0] ? d : loco_strerror(s), d[0] ? " " : "",
            d[0] ? "" : "");
    return s == LOCO_E_INVALID_ARGUMENT ? 2 : 1;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "loco: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'loco help' for usage.\n");
    return 2;
}

static const char *const usage_text =
    "usage: loco COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  info MODEL [--json]                 architecture, parameters, FLOPs, memory\n"
    "  init OUT_DIR --config CONFIG.json [--seed N] [--dtype f32|f16]\n"
    "                                      write a random-initialised checkpoint folder\n"
    "  eps MODEL --x X.safetensors --t T --out OUT.safetensors\n"
    "                                      eps(x, t) and x0_hat for tensor x [B,C,H,W]\n"
    "  help                                this text\n"
    "\n"
    "MODEL is a diffusers UNet2DModel folder (config.json +\n"
    "diffusion_pytorch_model.safetensors). Global options: --threads N, --quiet.\n";

/* ---- small argument helpers ---------------------------------------------- */

typedef struct args {
    int argc;
    char **argv;
    int i;
} args;

/* value of option `name` at position i, advancing; NULL if not this option */
static const char *opt(args *a, const char *name) {
    if (strcmp(a->argv[a->i], name) != 0) return NULL;
    if (a->i + 1 >= a->argc) return NULL;
    a->i++;
    return a->argv[a->i];
}

static int parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

/* ---- info ------------------------------------------------------------------ */

static int cmd_info(args *a) {
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
    loco_status st = loco_model_open(model, &m);
    if (st) return fail(st);
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    if (json) {
        printf("{\"model\": \"%s\", \"in_channels\": %d, \"out_channels\": %d, \"height\": %d, \"width\": %d, "
               "\"blocks\": %d, \"parameters\": %lld, \"gflop_per_image\": %.4f, \"weight_bytes\": %zu, "
               "\"activation_bytes_per_image\": %zu, \"train_timesteps\": %d}\n",
               model, inf.in_channels, inf.out_channels, inf.height, inf.width, inf.n_blocks, (long long)inf.n_params,
               inf.flops / 1e9, inf.weight_bytes, inf.activation_bytes, inf.train_timesteps);
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

static int cmd_init(args *a) {
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

static int cmd_eps(args *a) {
    const char *model = NULL, *xpath = NULL, *outp = NULL, *v;
    double t = NAN;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--x"))) xpath = v;
        else if ((v = opt(a, "--out"))) outp = v;
        else if ((v = opt(a, "--t"))) {
            if (!parse_float(v, &t) || t < 0) return usage_error("eps: bad --t '%s' (a timestep >= 0)", v);
        } else if (s[0] == '-') return usage_error("eps: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("eps: unexpected argument '%s'", s);
    }
    if (!model || !xpath || !outp || isnan(t))
        return usage_error("eps: %s", "needs MODEL --x X.safetensors --t T --out OUT.safetensors");
    loco_model *m = NULL;
    loco_tensors *xf = NULL;
    float *x = NULL, *eps = NULL, *x0 = NULL, *ts = NULL;
    int rc = 0;
    loco_status st;
    if ((st = loco_model_open(model, &m))) return fail(st);
    loco_model_info inf;
    loco_model_get_info(m, &inf);
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
    if (have_x0) st = loco_model_x0_hat(m, B, x, ts, x0, eps);
    else st = loco_model_eps(m, B, x, ts, eps);
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
    loco_model_free(m);
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv) {
    loco_set_log(log_cb, NULL);
    /* global options may appear anywhere; strip them first */
    int n = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quiet") == 0) {
            g_quiet = 1;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            long long th;
            if (!parse_long(argv[i + 1], 1, 1024, &th)) return usage_error("bad --threads '%s'", argv[i + 1]);
            loco_set_threads((int)th);
            i++;
        } else {
            argv[n++] = argv[i];
        }
    }
    argc = n;
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("loco %s\n", LOCO_VERSION);
        return 0;
    }
    args a = {argc, argv, 2};
    const char *cmd = argv[1];
    if (strcmp(cmd, "info") == 0) return cmd_info(&a);
    if (strcmp(cmd, "init") == 0) return cmd_init(&a);
    if (strcmp(cmd, "eps") == 0) return cmd_eps(&a);
    return usage_error("unknown command '%s'", cmd);
}
