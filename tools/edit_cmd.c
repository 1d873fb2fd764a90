/* edit_cmd.c - `loco edit` and `loco apply`: LOCO Edit end to end on one
 * image, and transfer/composition of saved directions to other images. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 64

/* ======================================================================== */
/* Small helpers                                                            */
/* ======================================================================== */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void say(const char *fmt, const char *arg) {
    if (g_quiet) return;
    fprintf(stderr, fmt, arg);
}

/* prints the library's error, prefixed with the phase it happened in */
static int fail_in(const char *phase, loco_status st) {
    const char *d = loco_last_error();
    fprintf(stderr, "loco: error: %s: %s\n", phase, d[0] ? d : loco_strerror(st));
    return st == LOCO_E_INVALID_ARGUMENT ? 2 : 1;
}

/* |strength| above this is refused before any work: x_t + s v leaves the
 * range any diffusion model was trained on long before (v has unit norm). */
#define MAX_STRENGTH 1000.0

static int check_strengths(const char *cmd, const double *s, int n) {
    for (int i = 0; i < n; i++)
        if (fabs(s[i]) > MAX_STRENGTH) {
            fprintf(stderr, "loco: error: %s: --strengths: %g is beyond +-%g (directions have unit norm; the paper "
                            "uses about 8)\n", cmd, s[i], MAX_STRENGTH);
            return 2;
        }
    return 0;
}

/* what loco edit and loco apply write into --out (see outputs.c) */
static const char *const edit_outputs[] = {"original.png", "recon.png", "strip.png", "report.json",
                                           "directions.safetensors", "tensors.safetensors", "edit_d*_s*.png", NULL};
static const char *const apply_outputs[] = {"img*_strip.png", "img*_recon.png", "img*_edit_d*_s*.png",
                                            "img*_composed.png", NULL};

/* [C, H, W] floats in [-1, 1] -> 8-bit interleaved pixels at column offset
 * xoff of a strip `stride` images wide */
static loco_status write_png(const char *dir, const char *name, const float *x, int C, int H, int W) {
    char *p = path_join(dir, name);
    loco_status st = p ? write_images(p, &x, 1, C, H, W, 1, 1) : LOCO_E_NOMEM;
    free(p);
    return st;
}

/* n images side by side, zoomed (--zoom; auto: see view_zoom) */
static loco_status write_strip(const char *dir, const char *name, const float *const *imgs, int n, int C, int H, int W,
                               long long zoom) {
    char *p = path_join(dir, name);
    loco_status st = p ? write_images(p, imgs, n, C, H, W, n, view_zoom(zoom, n, H, W)) : LOCO_E_NOMEM;
    free(p);
    return st;
}

static void strength_name(char *buf, size_t n, int dir, double s) {
    snprintf(buf, n, "edit_d%d_s%+g.png", dir, s);
}

/* Builds the 2-D mask from --mask/--rect/--ellipse. Returns 0 or exit code. */
static int build_mask(const char *maskp, const char *rect, const char *ell, int H, int W, uint8_t *pix) {
    int given = (maskp != NULL) + (rect != NULL) + (ell != NULL);
    if (given != 1) return usage_error("edit: %s", "give exactly one of --mask, --rect, --ellipse");
    loco_status st;
    if (maskp) st = loco_mask_png(maskp, H, W, pix);
    else if (rect) {
        int r[4];
        if (parse_int_list(rect, r, 4, -1000000, 1000000) != 4)
            return usage_error("edit: bad --rect '%s' (four whole numbers y0,y1,x0,x1)", rect);
        st = loco_mask_rect(H, W, r[0], r[1], r[2], r[3], pix);
    } else {
        double e[4];
        if (parse_list(ell, e, 4) != 4) return usage_error("edit: bad --ellipse '%s' (cy,cx,ry,rx)", ell);
        st = loco_mask_ellipse(H, W, e[0], e[1], e[2], e[3], pix);
    }
    return st ? fail(st) : 0;
}

static cJSON *json_farray(const float *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *json_history(const loco_subspace *s) {
    cJSON *h = cJSON_CreateArray();
    for (int i = 0; i < s->iters; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "iter", i);
        cJSON_AddNumberToObject(e, "sin_max_angle", s->sin_angle[i]);
        cJSON_AddItemToObject(e, "singular_values", json_farray(s->s_hist + (size_t)i * s->rank, s->rank));
        cJSON_AddItemToArray(h, e);
    }
    return h;
}

static cJSON *json_subspace(const loco_subspace *s, double secs) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rank", s->rank);
    cJSON_AddNumberToObject(o, "mask_entries", (double)s->l);
    cJSON_AddNumberToObject(o, "iterations", s->iters);
    cJSON_AddBoolToObject(o, "converged", s->converged);
    cJSON_AddItemToObject(o, "singular_values", json_farray(s->s, s->rank));
    cJSON_AddNumberToObject(o, "seconds", secs);
    cJSON_AddNumberToObject(o, "seconds_jvp", s->seconds_jvp);
    cJSON_AddNumberToObject(o, "seconds_vjp", s->seconds_vjp);
    cJSON_AddNumberToObject(o, "jvp_vectors", s->jvp_vectors);
    cJSON_AddNumberToObject(o, "vjp_vectors", s->vjp_vectors);
    cJSON_AddItemToObject(o, "history", json_history(s));
    return o;
}

/* Reads a start latent z_T of n = C*H*W values from a safetensors file: its
 * only tensor, else the first of latent, zT, xT, latents, z present. 0 or the
 * exit code (printed). */
static int read_latent(const char *path, int C, int H, int W, float *out) {
    const size_t n = (size_t)C * H * W;
    loco_tensors *lf;
    float *zl = NULL;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    loco_status st = loco_tensors_open(path, &lf);
    if (st) return fail(st);
    const char *nm = loco_tensors_count(lf) == 1 ? loco_tensors_name(lf, 0) : "latent";
    static const char *const names[] = {"latent", "zT", "xT", "latents", "z"};
    loco_dtype ldt;
    int lnd;
    int64_t lsh[LOCO_MAX_DIMS];
    for (size_t k = 0; loco_tensors_count(lf) != 1 && k < sizeof names / sizeof names[0]; k++)
        if (loco_tensors_info(lf, names[k], &ldt, &lnd, lsh) == LOCO_OK) {
            nm = names[k];
            break;
        }
    st = loco_tensors_read_f32(lf, nm, &zl, &nd, sh, 0);
    loco_tensors_close(lf);
    if (st) return fail(st);
    size_t cnt = 1;
    for (int k = 0; k < nd; k++) cnt *= (size_t)sh[k];
    if (cnt != n) {
        fprintf(stderr, "loco: error: %s: the latent has %zu values; the model's is %dx%dx%d\n", path, cnt, C, H, W);
        loco_free(zl);
        return 1;
    }
    memcpy(out, zl, sizeof(float) * n);
    loco_free(zl);
    return 0;
}

/* ======================================================================== */
/* loco edit                                                                */
/* ======================================================================== */

/* The authors' per-dataset scripts (LOCO Edit's src/scripts/): edit_t,
 * performance_boosting_t, pca_rank, pca_rank_null. */
typedef struct edit_settings {
    const char *name;
    float t_edit, boost_t;
    int rank, null_rank;
} edit_settings;
static const edit_settings edit_settings_table[] = {
    {"celeba", 0.6f, 0.2f, 1, 5},  {"ffhq", 0.2f, 0.2f, 3, 5},    {"afhq", 0.7f, 0.2f, 1, 10},
    {"flowers", 0.7f, 0.2f, 5, 5}, {"metfaces", 0.7f, 0.2f, 1, 10},
};

int cmd_edit(args *a) {
    const char *model = NULL, *image = NULL, *maskp = NULL, *rect = NULL, *ell = NULL, *out = NULL, *init_basis = NULL,
               *v, *latentp = NULL;
    /* text-to-image models (T-LOCO): the prompts and guidance */
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    const char *edit_prompt = NULL;
    loco_edit_params ep;
    loco_edit_params_init(&ep);
    int rank = 5, null_rank = 5, min_iter = 10, max_iter = 50, oversample = 0, save_tensors = 0, drop_alpha = 0, do_resize = 0, json = 0;
    double tol = 1e-4, strengths[MAX_LIST] = {-8, 8}, dirs_d[MAX_LIST] = {0};
    int n_str = 2, n_dir = 1;
    long long seed = 0, ll, zoom = 0;
    double d;
    int rc0, writing = 0, given_t = 0, given_boost = 0, given_rank = 0, given_null = 0;
    const edit_settings *settings = NULL;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--image"))) image = v;
        else if ((v = opt(a, "--prompt"))) cp.prompt = v;
        else if ((v = opt(a, "--negative-prompt"))) cp.negative_prompt = v;
        else if ((v = opt(a, "--edit-prompt"))) edit_prompt = v;
        else if ((v = opt(a, "--latent"))) latentp = v;
        else if ((v = opt(a, "--guidance")) || (v = opt(a, "--edit-guidance"))) {
            const int edit_g = strcmp(a->argv[a->i - 1], "--edit-guidance") == 0;
            if (!parse_float(v, &d) || fabs(d) > 1000)
                return usage_error(edit_g ? "edit: bad --edit-guidance '%s' (|g| <= 1000)" : "edit: bad --guidance '%s' (|g| <= 1000)", v);
            if (edit_g) cp.edit_guidance = (float)d;
            else cp.guidance = (float)d;
        }
        else if ((v = opt(a, "--settings"))) {
            for (size_t k = 0; k < sizeof edit_settings_table / sizeof edit_settings_table[0]; k++)
                if (strcmp(v, edit_settings_table[k].name) == 0) settings = &edit_settings_table[k];
            if (!settings)
                return usage_error("edit: --settings '%s' must be celeba, ffhq, afhq, flowers or metfaces", v);
        }
        else if ((v = opt(a, "--mask"))) maskp = v;
        else if ((v = opt(a, "--rect"))) rect = v;
        else if ((v = opt(a, "--ellipse"))) ell = v;
        else if ((v = opt(a, "--out"))) out = v;
        else if ((v = opt(a, "--init-basis"))) init_basis = v;
        else if ((v = opt(a, "--t-edit"))) {
            if (!parse_float(v, &d) || d <= 0 || d >= 1) return usage_error("edit: --t-edit '%s' must be in (0, 1)", v);
            ep.t_edit = (float)d;
            given_t = 1;
        } else if ((v = opt(a, "--boost-t"))) {
            if (!parse_float(v, &d) || d < 0 || d >= 1) return usage_error("edit: --boost-t '%s' must be in [0, 1)", v);
            ep.boost_t = (float)d;
            given_boost = 1;
        } else if ((v = opt(a, "--steps"))) {
            if (!parse_long(v, 2, 100000, &ll)) return usage_error("edit: bad --steps '%s'", v);
            ep.steps = (int)ll;
        } else if ((v = opt(a, "--inv-steps"))) {
            if (!parse_long(v, 2, 100000, &ll)) return usage_error("edit: bad --inv-steps '%s'", v);
            ep.inv_steps = (int)ll;
        } else if ((v = opt(a, "--rank"))) {
            if (!parse_long(v, 1, 4096, &ll)) return usage_error("edit: bad --rank '%s'", v);
            rank = (int)ll;
            given_rank = 1;
        } else if ((v = opt(a, "--null-rank"))) {
            if (!parse_long(v, 0, 4096, &ll)) return usage_error("edit: bad --null-rank '%s'", v);
            null_rank = (int)ll;
            given_null = 1;
        } else if ((v = opt(a, "--min-iter"))) {
            if (!parse_long(v, 0, 100000, &ll)) return usage_error("edit: bad --min-iter '%s'", v);
            min_iter = (int)ll;
        } else if ((v = opt(a, "--max-iter"))) {
            if (!parse_long(v, 1, 100000, &ll)) return usage_error("edit: bad --max-iter '%s'", v);
            max_iter = (int)ll;
        } else if ((v = opt(a, "--oversample"))) {
            if (!parse_long(v, 0, 1000, &ll)) return usage_error("edit: bad --oversample '%s' (0..1000)", v);
            oversample = (int)ll;
        } else if ((v = opt(a, "--tol"))) {
            if (!parse_float(v, &tol) || tol < 0) return usage_error("edit: bad --tol '%s'", v);
        } else if ((v = opt(a, "--zoom"))) {
            if (!parse_zoom(v, &zoom)) return usage_error("edit: bad --zoom '%s' (auto or 1..16)", v);
        } else if ((v = opt(a, "--strengths"))) {
            if ((n_str = parse_list(v, strengths, MAX_LIST)) < 1) return usage_error("edit: bad --strengths '%s'", v);
        } else if ((v = opt(a, "--directions"))) {
            if ((n_dir = parse_list(v, dirs_d, MAX_LIST)) < 1) return usage_error("edit: bad --directions '%s'", v);
        } else if ((v = opt(a, "--timesteps"))) {
            if (loco_timesteps_parse(v, &ep.timesteps))
                return usage_error("edit: --timesteps '%s' must be authors, leading or trailing", v);
        } else if ((v = opt(a, "--invert-to"))) {
            if (strcmp(v, "full") == 0) ep.invert_full = 1;
            else if (strcmp(v, "edit") == 0) ep.invert_full = 0;
            else return usage_error("edit: --invert-to must be edit or full, not '%s'", v);
        } else if ((v = opt(a, "--seed"))) {
            if (!parse_long(v, 0, INT64_MAX, &seed)) return usage_error("edit: bad --seed '%s'", v);
        } else if (strcmp(s, "--save-tensors") == 0) save_tensors = 1;
        else if (strcmp(s, "--drop-alpha") == 0) drop_alpha = 1;
        else if (strcmp(s, "--resize") == 0) do_resize = 1;
        else if (strcmp(s, "--json") == 0) json = 1;
        else if (s[0] == '-') return usage_error("edit: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("edit: unexpected argument '%s'", s);
    }
    if (!model || (!image && !cp.prompt) || !out)
        return usage_error("edit: %s", "needs MODEL --image IMG --out DIR and a mask (a text-to-image model: --prompt P, and "
                                       "--image IMG, --latent Z.safetensors or --seed S)");
    if (image && latentp) return usage_error("edit: %s", "--image and --latent are two starting points: give one");
    if (edit_prompt && !cp.prompt) return usage_error("edit: %s", "--edit-prompt needs --prompt");
    if (min_iter > max_iter) return usage_error("edit: %s", "--min-iter must not exceed --max-iter");
    for (int i = 0; i < n_dir; i++)
        if (dirs_d[i] != floor(dirs_d[i]) || dirs_d[i] < 0 || dirs_d[i] >= rank)
            return usage_error("edit: --directions entries must be integers in [0, --rank) %s", "");
    if (check_strengths("edit", strengths, n_str)) return 2;
    ep.seed = (uint64_t)seed;
    ep.progress = cli_progress;

    /* every location is checked before any work */
    out_dir od;
    if ((rc0 = out_dir_begin(&od, out, edit_outputs)) || (image && (rc0 = check_input_outside(image, out, "--image"))) ||
        (latentp && (rc0 = check_input_outside(latentp, out, "--latent"))) ||
        (maskp && (rc0 = check_input_outside(maskp, out, "--mask"))) ||
        (init_basis && (rc0 = check_input_outside(init_basis, out, "--init-basis")))) {
        out_dir_end(&od);
        return rc0;
    }
    const char *dir = od.tmp; /* where this run writes until it commits */
    double t_start = now();
    loco_model *m = NULL;
    loco_edit_directions *ed = NULL;
    float *x0 = NULL, *batch = NULL, *v0m = NULL, *v0n = NULL, *zstart = NULL, *imgs = NULL;
    loco_cond *cond = NULL, *econd = NULL;
    uint8_t *pix = NULL;
    loco_edit_move *moves = NULL;
    int *counts = NULL;
    cJSON *rep = NULL;
    char *text = NULL;
    int rc = 0;
    loco_status st;
    if ((st = open_model(model, &m))) {
        out_dir_end(&od);
        return fail(st);
    }
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    /* what was not given: --settings (the authors' script for a dataset),
     * else the model family's defaults */
    if (!given_t) ep.t_edit = settings ? settings->t_edit : inf.default_t_edit;
    if (!given_boost) ep.boost_t = settings ? settings->boost_t : inf.default_boost_t;
    if (settings && !given_rank) rank = settings->rank;
    if (settings && !given_null) null_rank = settings->null_rank;
    const int C = inf.in_channels, H = inf.height, W = inf.width;
    const size_t n = (size_t)C * H * W;
    if (inf.out_channels != C) {
        fprintf(stderr, "loco: error: %s: editing needs in_channels == out_channels\n", model);
        loco_model_free(m);
        out_dir_end(&od);
        return 1;
    }
    /* the image the mask covers and the outputs show: a latent model's
     * decoded image, else the model's own input */
    int IC, IH, IW;
    loco_model_image_info(m, &IC, &IH, &IW);
    const int latent = IC != C || IH != H || IW != W;
    const size_t ni = (size_t)IC * IH * IW;
    loco_model_info iinf = inf;
    iinf.in_channels = IC;
    iinf.height = IH;
    iinf.width = IW;
    if (inf.conditional && !cp.prompt) {
        fprintf(stderr, "loco: error: %s: a %s model edits under a prompt: give --prompt\n", model, inf.family);
        rc = 2;
        goto done;
    }
    if (!image && !inf.conditional) {
        rc = usage_error("edit: %s", "needs --image IMG");
        goto done;
    }
    if (cp.prompt) {
        if ((st = loco_cond_new(m, &cp, &cond))) goto err;
        if (edit_prompt) {
            loco_cond_params ce = cp;
            ce.edit_prompt = edit_prompt;
            if ((st = loco_cond_new(m, &ce, &econd))) goto err;
            if (!given_rank) rank = 1; /* the authors' text-supervised edit: one direction */
        }
        ep.cond = cond;
    }
    pix = malloc((size_t)IH * IW);
    if (image) x0 = malloc(sizeof(float) * ni);
    if (!pix || (image && !x0)) {
        rc = fail(LOCO_E_NOMEM);
        goto done;
    }
    if (image && (rc = load_input(image, &iinf, drop_alpha, do_resize, x0))) goto done;
    if (!image) { /* a start latent: given, or drawn from --seed as loco generate draws it */
        if (!(zstart = malloc(sizeof(float) * n))) {
            rc = fail(LOCO_E_NOMEM);
            goto done;
        }
        if (latentp) {
            if ((rc = read_latent(latentp, C, H, W, zstart))) goto done;
        } else if ((st = loco_randn((uint64_t)seed * 0x9E3779B97F4A7C15ull, n, zstart))) goto err;
    }
    if ((rc = build_mask(maskp, rect, ell, IH, IW, pix))) goto done;
    /* the recipe (src/edit_recipe.c); everything it can refuse is refused
     * here, before any work */
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit = ep;
    rp.rank = rank;
    rp.null_rank = null_rank;
    rp.min_iter = min_iter;
    rp.max_iter = max_iter;
    rp.oversample = oversample;
    rp.tol = tol;
    rp.seed = (uint64_t)seed;
    rp.progress = cli_progress;
    rp.edit_cond = econd;
    rp.start_latent = zstart;
    if ((st = loco_edit_recipe_check(m, &rp, pix))) {
        rc = fail(st);
        goto done;
    }
    if (init_basis) {
        loco_tensors *f;
        if ((st = loco_tensors_open(init_basis, &f))) goto err;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        st = loco_tensors_read_f32(f, "v0_modify", &v0m, &nd, sh, 0);
        if (!st && (nd != 2 || sh[0] < rank || (size_t)sh[1] != n)) {
            fprintf(stderr, "loco: error: %s: 'v0_modify' must be [>= %d, %zu]\n", init_basis, rank, n);
            st = LOCO_E_SHAPE;
        }
        if (!st) {
            rp.init_roi = v0m;
            rp.init_roi_rows = (int)sh[0];
        }
        if (!st && null_rank > 0) {
            st = loco_tensors_read_f32(f, "v0_null", &v0n, &nd, sh, 0);
            if (!st && (nd != 2 || sh[0] < null_rank || (size_t)sh[1] != n)) {
                fprintf(stderr, "loco: error: %s: 'v0_null' must be [>= %d, %zu]\n", init_basis, null_rank, n);
                st = LOCO_E_SHAPE;
            }
            if (!st) {
                rp.init_null = v0n;
                rp.init_null_rows = (int)sh[0];
            }
        }
        loco_tensors_close(f);
        if (st) {
            rc = st == LOCO_E_SHAPE ? 1 : fail(st);
            goto done;
        }
    }

    /* 1-2. invert to x_t and find the local directions there */
    float t_value;
    int edit_idx;
    if ((st = loco_edit_timestep(m, &ep, &t_value, &edit_idx))) goto err;
    char tbuf[64];
    snprintf(tbuf, sizeof tbuf, "%.4f", t_value);
    say(image ? "loco: inverting to t = %s\n" : "loco: sampling down to t = %s\n", tbuf);
    if ((st = loco_edit_prepare(m, &rp, x0, pix, &ed))) goto err;
    loco_edit_info ei;
    loco_edit_directions_info(ed, &ei);
    static const loco_subspace none; /* the null basis when --null-rank is 0 */
    const loco_subspace *roi = loco_edit_directions_subspace(ed, LOCO_BASIS_ROI),
                        *nul = null_rank > 0 ? loco_edit_directions_subspace(ed, LOCO_BASIS_NULL) : &none;
    const float *xt = loco_edit_directions_xt(ed), *xT = loco_edit_directions_xT(ed),
                *dirs = loco_edit_directions_vectors(ed);

    /* 3. edits: reconstruction first, then directions outer, strengths inner */
    const int n_img = 1 + n_dir * n_str;
    batch = malloc(sizeof(float) * n * (size_t)n_img);
    moves = malloc(sizeof(loco_edit_move) * (size_t)(n_dir * n_str));
    counts = malloc(sizeof(int) * (size_t)n_img);
    if (!batch || !moves || !counts) {
        st = LOCO_E_NOMEM;
        goto err;
    }
    counts[0] = 0;
    for (int di = 0; di < n_dir; di++)
        for (int si = 0; si < n_str; si++) {
            moves[di * n_str + si] = (loco_edit_move){dirs + n * (size_t)dirs_d[di], (float)strengths[si]};
            counts[1 + di * n_str + si] = 1;
        }
    say("loco: denoising %s images\n", n_img == 1 ? "1" : "the");
    double t0 = now();
    int nfe_dec = 0;
    if ((st = loco_edit_render(m, &ep, xt, n_img, counts, moves, n_dir * n_str, batch, &nfe_dec))) {
        rc = fail_in("denoising", st);
        goto done;
    }
    double t_dec = now() - t0;
    /* a latent model: the images are the decoded latents */
    const float *shown = batch;
    if (latent) {
        if (!(imgs = malloc(sizeof(float) * ni * (size_t)n_img))) {
            st = LOCO_E_NOMEM;
            goto err;
        }
        if ((st = loco_model_decode(m, n_img, batch, imgs))) goto err;
        shown = imgs;
    }
    const float *orig = x0 ? x0 : shown; /* from a latent: the unedited sample */

    /* 4. outputs, into the temporary folder (an error there names that
     * folder's file: say what was being done) */
    writing = 1;
    if ((st = write_png(dir, "original.png", orig, IC, IH, IW)) || (st = write_png(dir, "recon.png", shown, IC, IH, IW)))
        goto err;
    const float **strip = malloc(sizeof(float *) * (size_t)(n_img + 1));
    if (!strip) {
        st = LOCO_E_NOMEM;
        goto err;
    }
    strip[0] = orig;
    for (int i = 0; i < n_img; i++) strip[i + 1] = shown + ni * (size_t)i;
    st = write_strip(dir, "strip.png", strip, n_img + 1, IC, IH, IW, zoom);
    free(strip);
    if (st) goto err;
    char name[96];
    for (int di = 0; di < n_dir; di++)
        for (int si = 0; si < n_str; si++) {
            strength_name(name, sizeof name, (int)dirs_d[di], strengths[si]);
            if ((st = write_png(dir, name, shown + ni * (size_t)(1 + di * n_str + si), IC, IH, IW))) goto err;
        }
    {
        char tv[32], sd[32], rk[16], nrk[16], ns[16], nis[16], inv[8], bt[32], te[32], mk[64];
        snprintf(tv, sizeof tv, "%.9g", t_value);
        snprintf(sd, sizeof sd, "%lld", seed);
        snprintf(rk, sizeof rk, "%d", rank);
        snprintf(nrk, sizeof nrk, "%d", null_rank);
        snprintf(ns, sizeof ns, "%d", ep.steps);
        snprintf(nis, sizeof nis, "%d", ep.inv_steps);
        snprintf(inv, sizeof inv, "%s", ep.invert_full ? "full" : "edit");
        snprintf(bt, sizeof bt, "%.9g", ep.boost_t);
        snprintf(te, sizeof te, "%.9g", ep.t_edit);
        snprintf(mk, sizeof mk, "%s", maskp ? "png" : rect ? "rect" : "ellipse");
        char gd[32], egd[32];
        snprintf(gd, sizeof gd, "%.9g", cp.guidance);
        snprintf(egd, sizeof egd, "%.9g", cp.edit_guidance);
        /* what `loco apply` reads back: the schedule, the family, and a
         * text-to-image model's prompts and guidance */
        const char *meta[40] = {"model", model, "t", tv, "t_edit", te, "steps", ns, "inv_steps", nis, "invert_to", inv,
                                "boost_t", bt, "rank", rk, "null_rank", nrk, "seed", sd,
                                "mask", maskp ? maskp : rect ? rect : ell, "mask_kind", mk,
                                "image", image ? image : latentp ? latentp : "seed", "family", inf.family,
                                "timesteps", loco_timesteps_name(ep.timesteps)};
        size_t n_meta = 15;
        if (cp.prompt) {
            const char *extra[] = {"prompt", cp.prompt, "negative_prompt", cp.negative_prompt ? cp.negative_prompt : "",
                                   "guidance", gd};
            memcpy(meta + 2 * n_meta, extra, sizeof extra);
            n_meta += 3;
            if (edit_prompt) {
                const char *e2[] = {"edit_prompt", edit_prompt, "edit_guidance", egd};
                memcpy(meta + 2 * n_meta, e2, sizeof e2);
                n_meta += 2;
            }
        }
        loco_tensor_ref refs[7] = {
            {"directions", LOCO_DTYPE_F32, 4, {rank, C, H, W}, dirs},
            {"roi_basis", LOCO_DTYPE_F32, 4, {rank, C, H, W}, roi->vT},
            {"roi_singular_values", LOCO_DTYPE_F32, 1, {rank}, roi->s},
            {"xt", LOCO_DTYPE_F32, 4, {1, C, H, W}, xt},
            {"mask", LOCO_DTYPE_U8, 2, {IH, IW}, pix},
            {"null_basis", LOCO_DTYPE_F32, 4, {null_rank, C, H, W}, nul->vT},
            {"null_singular_values", LOCO_DTYPE_F32, 1, {null_rank}, nul->s},
        };
        char *dp = path_join(dir, "directions.safetensors");
        st = dp ? loco_tensors_write(dp, refs, null_rank > 0 ? 7 : 5, meta, n_meta) : LOCO_E_NOMEM;
        free(dp);
        if (st) goto err;
        if (save_tensors) {
            /* xT: the top of the inversion (x_T with --invert-to full, else x_t
             * itself); xt: the edit point the directions were found at */
            loco_tensor_ref tr[6] = {
                {"x0", LOCO_DTYPE_F32, 4, {1, IC, IH, IW}, orig},
                {"xT", LOCO_DTYPE_F32, 4, {1, C, H, W}, xT},
                {"xt", LOCO_DTYPE_F32, 4, {1, C, H, W}, xt},
                {"recon", LOCO_DTYPE_F32, 4, {1, C, H, W}, batch},
                {"edits", LOCO_DTYPE_F32, 4, {n_img - 1, C, H, W}, batch + n},
                {"images", LOCO_DTYPE_F32, 4, {n_img, IC, IH, IW}, shown},
            };
            char *tp = path_join(dir, "tensors.safetensors");
            st = tp ? loco_tensors_write(tp, tr, latent ? 6 : 5, meta, n_meta) : LOCO_E_NOMEM;
            free(tp);
            if (st) goto err;
        }
    }
    /* report */
    rep = cJSON_CreateObject();
    cJSON *par = cJSON_AddObjectToObject(rep, "parameters");
    cJSON_AddStringToObject(par, "model", model);
    cJSON_AddStringToObject(par, "image", image ? image : latentp ? latentp : "seed");
    if (cp.prompt) {
        cJSON_AddStringToObject(par, "prompt", cp.prompt);
        cJSON_AddStringToObject(par, "negative_prompt", cp.negative_prompt ? cp.negative_prompt : "");
        cJSON_AddNumberToObject(par, "guidance", cp.guidance);
        if (edit_prompt) {
            cJSON_AddStringToObject(par, "edit_prompt", edit_prompt);
            cJSON_AddNumberToObject(par, "edit_guidance", cp.edit_guidance);
        }
    }
    cJSON_AddStringToObject(par, "mask", maskp ? maskp : rect ? rect : ell);
    cJSON_AddStringToObject(par, "mask_kind", maskp ? "png" : rect ? "rect" : "ellipse");
    cJSON_AddNumberToObject(par, "mask_pixels", (double)ei.mask_pixels);
    cJSON_AddNumberToObject(par, "t_edit", ep.t_edit);
    cJSON_AddNumberToObject(par, "t_edit_value", t_value);
    cJSON_AddNumberToObject(par, "edit_grid_index", edit_idx);
    cJSON_AddNumberToObject(par, "steps", ep.steps);
    cJSON_AddNumberToObject(par, "inv_steps", ep.inv_steps);
    cJSON_AddStringToObject(par, "invert_to", ep.invert_full ? "full" : "edit");
    cJSON_AddStringToObject(par, "timesteps", loco_timesteps_name(ep.timesteps));
    cJSON_AddNumberToObject(par, "boost_t", ep.boost_t);
    cJSON_AddNumberToObject(par, "rank", rank);
    cJSON_AddNumberToObject(par, "null_rank", null_rank);
    cJSON_AddNumberToObject(par, "min_iter", min_iter);
    cJSON_AddNumberToObject(par, "max_iter", max_iter);
    cJSON_AddNumberToObject(par, "oversample", oversample);
    cJSON_AddNumberToObject(par, "tol", tol);
    cJSON_AddNumberToObject(par, "seed", (double)seed);
    cJSON_AddItemToObject(par, "strengths", cJSON_CreateDoubleArray(strengths, n_str));
    cJSON_AddItemToObject(par, "directions", cJSON_CreateDoubleArray(dirs_d, n_dir));
    cJSON_AddStringToObject(par, "init_basis", init_basis ? init_basis : "random");
    cJSON *tm = cJSON_AddObjectToObject(rep, "timings_seconds");
    cJSON_AddNumberToObject(tm, "inversion", ei.seconds_inversion);
    cJSON_AddNumberToObject(tm, "linearize", ei.seconds_linearize);
    cJSON_AddNumberToObject(tm, "roi_iteration", ei.seconds_roi);
    cJSON_AddNumberToObject(tm, "null_iteration", ei.seconds_null);
    cJSON_AddNumberToObject(tm, "denoise_edits", t_dec);
    cJSON_AddNumberToObject(tm, "total", now() - t_start);
    cJSON *ne = cJSON_AddObjectToObject(rep, "network_evaluations");
    cJSON_AddNumberToObject(ne, "inversion", ei.nfe_inversion);
    cJSON_AddNumberToObject(ne, "linearize", 1);
    cJSON_AddNumberToObject(ne, "roi_jvp_vectors", roi->jvp_vectors);
    cJSON_AddNumberToObject(ne, "roi_vjp_vectors", roi->vjp_vectors);
    cJSON_AddNumberToObject(ne, "null_jvp_vectors", nul->jvp_vectors);
    cJSON_AddNumberToObject(ne, "null_vjp_vectors", nul->vjp_vectors);
    cJSON_AddNumberToObject(ne, "denoise_images_x_steps", nfe_dec);
    cJSON_AddItemToObject(rep, "roi", json_subspace(roi, ei.seconds_roi));
    if (null_rank > 0) cJSON_AddItemToObject(rep, "null", json_subspace(nul, ei.seconds_null));
    cJSON *outs = cJSON_AddArrayToObject(rep, "outputs");
    cJSON_AddItemToArray(outs, cJSON_CreateString("recon.png"));
    for (int di = 0; di < n_dir; di++)
        for (int si = 0; si < n_str; si++) {
            strength_name(name, sizeof name, (int)dirs_d[di], strengths[si]);
            cJSON_AddItemToArray(outs, cJSON_CreateString(name));
        }
    text = cJSON_Print(rep);
    if (!text || write_file(dir, "report.json", text) || out_dir_commit(&od)) {
        rc = 1;
        goto done;
    }
    if (json) printf("%s\n", text);
    if (!g_quiet) {
        fprintf(stderr, "loco: ROI singular values:");
        for (int i = 0; i < rank; i++) fprintf(stderr, " %.4g", roi->s[i]);
        fprintf(stderr, " (%d iterations, %s)\nloco: wrote %s/strip.png and %d edit(s) in %.1f s\n", roi->iters,
                roi->converged ? "converged" : "not converged", out, n_img - 1, now() - t_start);
    }
    goto done;
err:
    rc = writing ? fail_in("writing the outputs (nothing in --out changed)", st) : fail(st);
done:
    free(text);
    cJSON_Delete(rep);
    loco_edit_directions_free(ed);
    loco_cond_free(cond);
    loco_cond_free(econd);
    free(zstart);
    free(imgs);
    free(x0);
    free(batch);
    free(moves);
    free(counts);
    free(pix);
    loco_free(v0m);
    loco_free(v0n);
    loco_model_free(m);
    out_dir_end(&od);
    return rc;
}

/* ======================================================================== */
/* loco apply                                                               */
/* ======================================================================== */

typedef struct dirfile {
    char *path;
    loco_tensors *f;
    float *dirs; /* [r, n] */
    int r;
} dirfile;

/* Opens a directions file written by `loco edit` and checks it fits the
 * model: 'directions' [r, C, H, W] of the model's input (a latent model's
 * latent) and, where the file records it, the same model family. 0 or the
 * exit code (printed). */
static int open_dirfile(dirfile *d, const char *path, const loco_model_info *inf, int latent, int IH, int IW) {
    memset(d, 0, sizeof *d);
    d->path = strdup(path);
    if (!d->path) return fail(LOCO_E_NOMEM);
    loco_status st = loco_tensors_open(path, &d->f);
    if (st) return fail(st);
    const char *fam = loco_tensors_metadata(d->f, "family");
    if (fam && strcmp(fam, inf->family) != 0) {
        fprintf(stderr, "loco: error: %s: directions of a %s model (metadata 'family'); this model is %s\n", path, fam,
                inf->family);
        return 1;
    }
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    if ((st = loco_tensors_read_f32(d->f, "directions", &d->dirs, &nd, sh, 0))) return fail(st);
    if (nd != 4 || sh[0] < 1 || sh[0] > 4096 || sh[1] != inf->in_channels || sh[2] != inf->height ||
        sh[3] != inf->width) {
        char got[96] = "";
        for (int k = 0; k < nd && k < 8; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? "," : "", (long long)sh[k]);
        char what[96] = "";
        if (latent) snprintf(what, sizeof what, " (the latent of a %dx%d image; --image-size picks another)", IW, IH);
        fprintf(stderr, "loco: error: %s: tensor 'directions' has shape [%s]; it must have shape [r,%d,%d,%d] for this "
                        "model%s\n", path, got, inf->in_channels, inf->height, inf->width, what);
        return 1;
    }
    d->r = (int)sh[0];
    return 0;
}

static void close_dirfile(dirfile *d) {
    free(d->path);
    loco_free(d->dirs);
    loco_tensors_close(d->f);
}

/* Reads the edit schedule recorded by `loco edit` into ep. */
static int params_from(const dirfile *d, loco_edit_params *ep) {
    const char *te = loco_tensors_metadata(d->f, "t_edit"), *ns = loco_tensors_metadata(d->f, "steps"),
               *nis = loco_tensors_metadata(d->f, "inv_steps"), *inv = loco_tensors_metadata(d->f, "invert_to"),
               *bt = loco_tensors_metadata(d->f, "boost_t"), *sd = loco_tensors_metadata(d->f, "seed");
    double v;
    long long l;
    if (!te || !ns || !nis || !inv || !bt || !sd) {
        fprintf(stderr, "loco: error: %s: metadata lacks the edit schedule (t_edit, steps, inv_steps, invert_to, boost_t, "
                        "seed); was it written by 'loco edit'?\n", d->path);
        return 1;
    }
    loco_edit_params_init(ep);
    if (!parse_float(te, &v) || !(v > 0 && v < 1)) goto bad;
    ep->t_edit = (float)v;
    if (!parse_long(ns, 2, 100000, &l)) goto bad;
    ep->steps = (int)l;
    if (!parse_long(nis, 2, 100000, &l)) goto bad;
    ep->inv_steps = (int)l;
    if (strcmp(inv, "full") == 0) ep->invert_full = 1;
    else if (strcmp(inv, "edit") == 0) ep->invert_full = 0;
    else {
        fprintf(stderr, "loco: error: %s: metadata 'invert_to' is '%s', not 'edit' or 'full'\n", d->path, inv);
        return 1;
    }
    if (!parse_float(bt, &v) || !(v >= 0 && v < 1)) goto bad;
    ep->boost_t = (float)v;
    if (!parse_long(sd, 0, INT64_MAX, &l)) goto bad;
    ep->seed = (uint64_t)l;
    /* the timestep schedule (files from before it was recorded: the authors') */
    const char *tsn = loco_tensors_metadata(d->f, "timesteps");
    if (tsn && loco_timesteps_parse(tsn, &ep->timesteps)) {
        fprintf(stderr, "loco: error: %s: metadata 'timesteps' is '%.64s', not authors, leading or trailing\n", d->path,
                tsn);
        return 1;
    }
    return 0;
bad:
    fprintf(stderr, "loco: error: %s: malformed schedule metadata (t_edit in (0, 1), steps and inv_steps in [2, "
                    "100000], boost_t in [0, 1), seed >= 0)\n", d->path);
    return 1;
}

/* A regular file of at most 16 MiB into a new NUL-terminated buffer; 0, or
 * -1 (nothing allocated) when it cannot be read. */
static int read_small_file(const char *path, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    size_t cap = 4096, got = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + got, 1, cap - got, fp);
        got += r;
        if (got < cap) break;
        if (cap >= ((size_t)16 << 20)) {
            free(buf);
            buf = NULL;
            break;
        }
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
        } else {
            buf = nb;
            cap *= 2;
        }
    }
    int bad = !buf || ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return -1;
    }
    buf[got] = 0;
    *text = buf;
    *len = got;
    return 0;
}

/* The prompts a directions file was found under: its metadata (prompt,
 * negative_prompt, guidance), else the report.json `loco edit` wrote beside
 * it (files of loco versions that did not record them in the metadata).
 * Strings go to the caller's buffers (malloc'd, *prompt NULL when none is
 * recorded); *guidance is set only when recorded. 0 or the exit code. */
static int prompts_from(const dirfile *d, char **prompt, char **negative, double *guidance, int *have_guidance) {
    *prompt = *negative = NULL;
    *have_guidance = 0;
    const char *p = loco_tensors_metadata(d->f, "prompt"), *np = loco_tensors_metadata(d->f, "negative_prompt"),
               *g = loco_tensors_metadata(d->f, "guidance");
    cJSON *rep = NULL;
    char *text = NULL;
    if (!p) {
        const char *sl = strrchr(d->path, '/');
        char *dir = sl ? strndup(d->path, (size_t)(sl - d->path) + (sl == d->path)) : strdup(".");
        char *rp = dir ? path_join(dir, "report.json") : NULL;
        free(dir);
        if (!rp) return fail(LOCO_E_NOMEM);
        size_t len;
        struct stat sb;
        if (stat(rp, &sb) == 0 && S_ISREG(sb.st_mode) && read_small_file(rp, &text, &len) == 0) {
            rep = cJSON_ParseWithLength(text, len);
            const cJSON *par = cJSON_GetObjectItemCaseSensitive(rep, "parameters");
            const cJSON *jp = cJSON_GetObjectItemCaseSensitive(par, "prompt"),
                        *jn = cJSON_GetObjectItemCaseSensitive(par, "negative_prompt"),
                        *jg = cJSON_GetObjectItemCaseSensitive(par, "guidance");
            if (cJSON_IsString(jp)) {
                p = jp->valuestring;
                np = cJSON_IsString(jn) ? jn->valuestring : NULL;
                if (cJSON_IsNumber(jg)) {
                    *guidance = jg->valuedouble;
                    *have_guidance = 1;
                }
                say("loco: the prompts recorded in %s\n", rp);
            }
        }
        free(rp);
    } else if (g) {
        if (!parse_float(g, guidance) || fabs(*guidance) > 1000) {
            fprintf(stderr, "loco: error: %s: metadata 'guidance' is '%s', not a number in [-1000, 1000]\n", d->path, g);
            return 1;
        }
        *have_guidance = 1;
    }
    int rc = 0;
    if (p && !(*prompt = strdup(p))) rc = fail(LOCO_E_NOMEM);
    if (!rc && np && np[0] && !(*negative = strdup(np))) rc = fail(LOCO_E_NOMEM);
    if (*have_guidance && !(fabs(*guidance) <= 1000)) {
        fprintf(stderr, "loco: error: %s: the recorded guidance %g is not in [-1000, 1000]\n", d->path, *guidance);
        rc = 1;
    }
    cJSON_Delete(rep);
    free(text);
    return rc;
}

/* one starting point of `loco apply`: an image, a latent file or a seed */
typedef struct apply_start {
    const char *opt, *arg; /* "--image", "--latent" or "--seed"; its value */
    long long seed;
} apply_start;

int cmd_apply(args *a) {
    const char *model = NULL, *dfile = NULL, *out = NULL, *comp[MAX_LIST], *v;
    apply_start starts[MAX_LIST];
    int n_starts = 0, n_comp = 0, drop_alpha = 0, do_resize = 0;
    double strengths[MAX_LIST] = {-8, 8}, d;
    int idx_d[MAX_LIST] = {0};
    int n_str = 2, n_idx = 1;
    long long ll, zoom = 0;
    /* overrides of what the directions file records */
    const char *prompt_o = NULL, *neg_o = NULL;
    double guidance_o = 0, t_edit_o = 0;
    int have_guidance_o = 0, steps_o = 0, inv_steps_o = 0;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--directions"))) dfile = v;
        else if ((v = opt(a, "--image")) || (v = opt(a, "--latent")) || (v = opt(a, "--seed"))) {
            if (n_starts >= MAX_LIST)
                return usage_error("apply: at most 64 starting points (--image, --latent, --seed)%s", "");
            apply_start *st = &starts[n_starts++];
            st->opt = a->argv[a->i - 1];
            st->arg = v;
            st->seed = 0;
            if (strcmp(st->opt, "--seed") == 0 && !parse_long(v, 0, INT64_MAX, &st->seed))
                return usage_error("apply: bad --seed '%s'", v);
        } else if ((v = opt(a, "--direction"))) {
            if (n_comp >= MAX_LIST) return usage_error("apply: at most 64 --direction %s", "");
            comp[n_comp++] = v;
        } else if ((v = opt(a, "--out"))) out = v;
        else if ((v = opt(a, "--zoom"))) {
            if (!parse_zoom(v, &zoom)) return usage_error("apply: bad --zoom '%s' (auto or 1..16)", v);
        } else if ((v = opt(a, "--strengths"))) {
            if ((n_str = parse_list(v, strengths, MAX_LIST)) < 1) return usage_error("apply: bad --strengths '%s'", v);
        } else if ((v = opt(a, "--index"))) {
            if ((n_idx = parse_int_list(v, idx_d, MAX_LIST, 0, 4095)) < 1)
                return usage_error("apply: bad --index '%s' (whole numbers 0..4095, comma-separated)", v);
        } else if ((v = opt(a, "--prompt"))) prompt_o = v;
        else if ((v = opt(a, "--negative-prompt"))) neg_o = v;
        else if ((v = opt(a, "--guidance"))) {
            if (!parse_float(v, &guidance_o) || fabs(guidance_o) > 1000)
                return usage_error("apply: bad --guidance '%s' (|g| <= 1000)", v);
            have_guidance_o = 1;
        } else if ((v = opt(a, "--t-edit"))) {
            if (!parse_float(v, &d) || d <= 0 || d >= 1) return usage_error("apply: --t-edit '%s' must be in (0, 1)", v);
            t_edit_o = d;
        } else if ((v = opt(a, "--steps"))) {
            if (!parse_long(v, 2, 100000, &ll)) return usage_error("apply: bad --steps '%s'", v);
            steps_o = (int)ll;
        } else if ((v = opt(a, "--inv-steps"))) {
            if (!parse_long(v, 2, 100000, &ll)) return usage_error("apply: bad --inv-steps '%s'", v);
            inv_steps_o = (int)ll;
        } else if (strcmp(s, "--drop-alpha") == 0) drop_alpha = 1;
        else if (strcmp(s, "--resize") == 0) do_resize = 1;
        else if (s[0] == '-') return usage_error("apply: unknown or incomplete option '%s'", s);
        else if (!model) model = s;
        else return usage_error("apply: unexpected argument '%s'", s);
    }
    if (!model || !out || n_starts == 0 || (!dfile && n_comp == 0))
        return usage_error("apply: %s", "needs MODEL --image IMG --out DIR and --directions FILE or --direction F:I:S "
                                        "(a text-to-image model may start from --latent Z or --seed S instead)");
    if (dfile && n_comp) return usage_error("apply: %s", "give --directions or --direction, not both");
    if (check_strengths("apply", strengths, n_str)) return 2;
    loco_model *m = NULL;
    loco_cond *cond = NULL;
    char *rec_prompt = NULL, *rec_neg = NULL;
    int rc = 0;
    loco_status st;
    out_dir od;
    if ((rc = out_dir_begin(&od, out, apply_outputs))) {
        out_dir_end(&od);
        return rc;
    }
    for (int i = 0; i < n_starts; i++)
        if (strcmp(starts[i].opt, "--seed") != 0 && (rc = check_input_outside(starts[i].arg, out, starts[i].opt))) {
            out_dir_end(&od);
            return rc;
        }
    if (dfile && (rc = check_input_outside(dfile, out, "--directions"))) {
        out_dir_end(&od);
        return rc;
    }
    const char *dir = od.tmp;
    if ((st = open_model(model, &m))) {
        out_dir_end(&od);
        return fail(st);
    }
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const int C = inf.in_channels, H = inf.height, W = inf.width;
    const size_t n = (size_t)C * H * W;
    /* a latent model (Stable Diffusion): the images are decoded latents */
    int IC, IH, IW;
    loco_model_image_info(m, &IC, &IH, &IW);
    const int latent = IC != C || IH != H || IW != W;
    const size_t ni = (size_t)IC * IH * IW;
    loco_model_info iinf = inf;
    iinf.in_channels = IC;
    iinf.height = IH;
    iinf.width = IW;
    /* the moves: (file, index, strength) triples */
    int n_moves = dfile ? n_idx * n_str : n_comp;
    dirfile files[MAX_LIST];
    int n_files = 0;
    int *mv_file = calloc((size_t)n_moves, sizeof(int)), *mv_idx = calloc((size_t)n_moves, sizeof(int));
    double *mv_s = calloc((size_t)n_moves, sizeof(double));
    const size_t nin = ni > n ? ni : n; /* one start: an image or a latent */
    float *inputs = malloc(sizeof(float) * nin * (size_t)n_starts), *xt = malloc(sizeof(float) * n), *batch = NULL,
          *imgs = NULL;
    loco_edit_move *moves = NULL;
    int *counts = NULL;
    if (!mv_file || !mv_idx || !mv_s || !inputs || !xt) {
        rc = fail(LOCO_E_NOMEM);
        goto done;
    }
    if (!inf.conditional && (prompt_o || neg_o || have_guidance_o)) {
        fprintf(stderr, "loco: error: %s: a %s model takes no prompt\n", model, inf.family);
        rc = 2;
        goto done;
    }
    for (int i = 0; i < n_starts; i++)
        if (!inf.conditional && strcmp(starts[i].opt, "--image") != 0) {
            rc = usage_error("apply: %s starts a text-to-image model; this model edits images: give --image",
                             starts[i].opt);
            goto done;
        }
    if (dfile) {
        if ((rc = open_dirfile(&files[n_files++], dfile, &inf, latent, IH, IW))) goto done;
        for (int i = 0; i < n_idx; i++)
            for (int j = 0; j < n_str; j++) {
                int k = i * n_str + j;
                mv_file[k] = 0;
                mv_idx[k] = idx_d[i];
                mv_s[k] = strengths[j];
            }
    } else {
        for (int k = 0; k < n_comp; k++) {
            /* FILE:INDEX:STRENGTH, split at the last two colons */
            char *spec = strdup(comp[k]);
            char *c2 = spec ? strrchr(spec, ':') : NULL;
            char *c1 = NULL;
            if (c2) {
                *c2 = 0;
                c1 = strrchr(spec, ':');
            }
            long long ii;
            double ss;
            if (!c1 || !parse_long(c1 + 1, 0, 4095, &ii) || !parse_float(c2 + 1, &ss) || fabs(ss) > MAX_STRENGTH) {
                free(spec);
                rc = usage_error("apply: bad --direction '%s' (FILE:INDEX:STRENGTH, |STRENGTH| <= 1000)", comp[k]);
                goto done;
            }
            *c1 = 0;
            int fi = -1;
            for (int q = 0; q < n_files; q++)
                if (strcmp(files[q].path, spec) == 0) fi = q;
            if (fi < 0) {
                if ((rc = open_dirfile(&files[n_files], spec, &inf, latent, IH, IW))) {
                    n_files++;
                    free(spec);
                    goto done;
                }
                fi = n_files++;
            }
            free(spec);
            mv_file[k] = fi;
            mv_idx[k] = (int)ii;
            mv_s[k] = ss;
        }
    }
    for (int k = 0; k < n_moves; k++)
        if (mv_idx[k] < 0 || mv_idx[k] >= files[mv_file[k]].r) {
            fprintf(stderr, "loco: error: %s has %d direction(s); index %d is out of range\n", files[mv_file[k]].path,
                    files[mv_file[k]].r, mv_idx[k]);
            rc = 2;
            goto done;
        }
    /* every file must share the edit schedule of the first */
    loco_edit_params ep;
    if ((rc = params_from(&files[0], &ep))) goto done;
    for (int q = 1; q < n_files; q++) {
        loco_edit_params e2;
        if ((rc = params_from(&files[q], &e2))) goto done;
        if (e2.t_edit != ep.t_edit || e2.steps != ep.steps || e2.inv_steps != ep.inv_steps ||
            e2.invert_full != ep.invert_full || e2.timesteps != ep.timesteps) {
            fprintf(stderr, "loco: error: %s and %s were found at different timesteps or schedules\n", files[0].path,
                    files[q].path);
            rc = 2;
            goto done;
        }
    }
    if (t_edit_o > 0) ep.t_edit = (float)t_edit_o;
    if (steps_o) ep.steps = steps_o;
    if (inv_steps_o) ep.inv_steps = inv_steps_o;
    ep.progress = cli_progress;
    if ((st = loco_edit_timestep(m, &ep, NULL, NULL))) {
        rc = fail(st);
        goto done;
    }
    /* a text-to-image model: the prompts the directions were found under,
     * unless given */
    if (inf.conditional) {
        loco_cond_params cp;
        loco_cond_params_init(&cp);
        double g_rec = 0;
        int have_g_rec = 0;
        if ((rc = prompts_from(&files[0], &rec_prompt, &rec_neg, &g_rec, &have_g_rec))) goto done;
        cp.prompt = prompt_o ? prompt_o : rec_prompt;
        cp.negative_prompt = neg_o ? neg_o : prompt_o ? NULL : rec_neg;
        if (have_guidance_o) cp.guidance = (float)guidance_o;
        else if (have_g_rec) cp.guidance = (float)g_rec;
        if (!cp.prompt) {
            fprintf(stderr, "loco: error: %s: a %s model applies directions under a prompt, and %s records none: give "
                            "--prompt\n", model, inf.family, files[0].path);
            rc = 2;
            goto done;
        }
        if ((st = loco_cond_new(m, &cp, &cond))) {
            rc = fail(st);
            goto done;
        }
        ep.cond = cond;
        if (!g_quiet)
            fprintf(stderr, "loco: prompt \"%s\"%s, negative prompt \"%s\", guidance %g\n", cp.prompt,
                    prompt_o ? "" : " (recorded)", cp.negative_prompt ? cp.negative_prompt : "", cp.guidance);
    }
    /* every input, read before any work */
    for (int i = 0; i < n_starts; i++) {
        float *dst = inputs + nin * (size_t)i;
        if (strcmp(starts[i].opt, "--image") == 0) rc = load_input(starts[i].arg, &iinf, drop_alpha, do_resize, dst);
        else if (strcmp(starts[i].opt, "--latent") == 0) rc = read_latent(starts[i].arg, C, H, W, dst);
        else if ((st = loco_randn((uint64_t)starts[i].seed * 0x9E3779B97F4A7C15ull, n, dst))) rc = fail(st);
        if (rc) goto done;
    }
    const int n_out = dfile ? 1 + n_moves : 2; /* recon + each move, or recon + composition */
    batch = malloc(sizeof(float) * n * (size_t)n_out);
    moves = malloc(sizeof(loco_edit_move) * (size_t)n_moves);
    counts = malloc(sizeof(int) * (size_t)n_out);
    if (latent) imgs = malloc(sizeof(float) * ni * (size_t)n_out);
    if (!batch || !moves || !counts || (latent && !imgs)) {
        rc = fail(LOCO_E_NOMEM);
        goto done;
    }
    /* the reconstruction, then each move alone or all of them together */
    counts[0] = 0;
    for (int i = 1; i < n_out; i++) counts[i] = dfile ? 1 : n_moves;
    for (int k = 0; k < n_moves; k++)
        moves[k] = (loco_edit_move){files[mv_file[k]].dirs + n * (size_t)mv_idx[k], (float)mv_s[k]};
    for (int im = 0; im < n_starts; im++) {
        const float *in = inputs + nin * (size_t)im;
        const int is_image = strcmp(starts[im].opt, "--image") == 0;
        loco_edit_params epi = ep;
        /* a seed start: the seed of the stochastic steps too, as `loco edit --seed` */
        if (strcmp(starts[im].opt, "--seed") == 0) epi.seed = (uint64_t)starts[im].seed;
        int nfe;
        if ((st = loco_edit_start(m, &epi, is_image ? in : NULL, is_image ? NULL : in, NULL, xt, &nfe))) {
            rc = fail(st);
            goto done;
        }
        if ((st = loco_edit_render(m, &epi, xt, n_out, counts, moves, n_moves, batch, &nfe))) {
            rc = fail_in("denoising", st);
            goto done;
        }
        const float *shown = batch;
        if (latent) {
            if ((st = loco_model_decode(m, n_out, batch, imgs))) {
                rc = fail_in("decoding", st);
                goto done;
            }
            shown = imgs;
        }
        char name[128], sub[32];
        snprintf(sub, sizeof sub, "img%d_", im);
        const float **strip = malloc(sizeof(float *) * (size_t)(n_out + 1));
        if (!strip) {
            rc = fail(LOCO_E_NOMEM);
            goto done;
        }
        strip[0] = is_image ? in : shown; /* from a latent: the unedited sample */
        for (int i = 0; i < n_out; i++) strip[i + 1] = shown + ni * (size_t)i;
        snprintf(name, sizeof name, "%sstrip.png", sub);
        st = write_strip(dir, name, strip, n_out + 1, IC, IH, IW, zoom);
        free(strip);
        snprintf(name, sizeof name, "%srecon.png", sub);
        if (!st) st = write_png(dir, name, shown, IC, IH, IW);
        for (int k = 0; !st && k < (dfile ? n_moves : 1); k++) {
            if (dfile) {
                char e[96];
                strength_name(e, sizeof e, mv_idx[k], mv_s[k]);
                snprintf(name, sizeof name, "%s%s", sub, e);
            } else {
                snprintf(name, sizeof name, "%scomposed.png", sub);
            }
            st = write_png(dir, name, shown + ni * (size_t)(1 + k), IC, IH, IW);
        }
        if (st) {
            rc = fail_in("writing the outputs (nothing in --out changed)", st);
            goto done;
        }
        if (!g_quiet) fprintf(stderr, "loco: edited %s %s\n", starts[im].opt + 2, starts[im].arg);
    }
    if (out_dir_commit(&od)) rc = 1;
done:
    for (int q = 0; q < n_files; q++) close_dirfile(&files[q]);
    free(mv_file);
    free(mv_idx);
    free(mv_s);
    free(inputs);
    free(xt);
    free(batch);
    free(imgs);
    free(moves);
    free(counts);
    free(rec_prompt);
    free(rec_neg);
    loco_cond_free(cond);
    loco_model_free(m);
    out_dir_end(&od);
    return rc;
}
