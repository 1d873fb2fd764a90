/* adm.c - the guided-diffusion (ADM / P2-weighting) family: opening a folder
 * (config.json in guided-diffusion's flag names + model.safetensors or
 * model.pt) or a bare checkpoint (flags inferred from the tensor shapes, the
 * rest from loco_open_params), its `loco info` text, new folders with random
 * weights, and conversion of a bare checkpoint to a folder. The schedule is
 * guided-diffusion's linear 1e-4..0.02 over 1000 steps; the network predicts
 * eps (its first 3 output channels). */
#define _POSIX_C_SOURCE 200809L
#include "families/adm.h"
#include "families/graph_denoiser.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADM_WEIGHTS_ST "model.safetensors"
#define ADM_WEIGHTS_PT "model.pt"

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

static void describe(const void *self, sbuf *b) {
    const graph_denoiser *gd = self;
    const adm_config *c = gd->cfg;
    sb_printf(b, "class: ADM (guided-diffusion UNetModel), %d -> %d channels%s, %dx%d\n", c->in_ch, c->out_ch,
              c->out_ch != c->in_ch ? " (eps: the first 3; learn_sigma)" : "", c->image_size, c->image_size);
    sb_printf(b, "parameters: %lld (%.2f M)\n", (long long)gd->g.total_params, gd->g.total_params / 1e6);
    sb_printf(b, "time embedding: sinusoidal %d (cos first) -> %d; norm: GroupNorm32, eps 1e-5; %s time conditioning\n",
              c->model_ch, 4 * c->model_ch, c->use_scale_shift_norm ? "scale-shift (FiLM)" : "additive");
    sb_printf(b, "res blocks per level %d; %s\n", c->num_res_blocks,
              c->resblock_updown ? "ResBlocks down/upsample (resblock_updown)" : "strided-conv downsample, nearest+conv upsample");
    int res = c->image_size;
    for (int i = 0; i < c->n_levels; i++) {
        sb_printf(b, "  level %d: %4d ch at %dx%d", i, c->level_ch[i], res, res);
        if (c->attn_level[i])
            sb_printf(b, ", attention %d head(s) (down/mid), %d (up)", adm_heads(c, c->level_ch[i], 0),
                      adm_heads(c, c->level_ch[i], 1));
        sb_printf(b, "\n");
        res /= 2;
    }
    const int cm = c->level_ch[c->n_levels - 1];
    sb_printf(b, "  middle:  %4d ch, attention %d head(s)\n", cm, adm_heads(c, cm, 0));
    gd_describe_costs(gd, b);
}

/* the graph's facts, and the P2 scripts' edit timestep and boost (AFHQ,
 * Flowers, MetFaces: t_edit 0.7; every P2 script: performance boosting 0.2) */
static void info(const void *self, denoiser_info *in) {
    gd_info(self, in);
    in->edit_t = 0.7f;
    in->edit_boost_t = 0.2f;
}

static const denoiser_vtable vtable = {"ADM",       gd_predict, gd_linearize, gd_lin_output, gd_jvp, gd_vjp,
                                       gd_lin_bytes, gd_lin_free, info,       describe,      gd_free, gd_graph_of,
                                       NULL,        NULL,         NULL,      NULL,          NULL,    NULL,
                                       NULL,        NULL,         NULL};

/* names and shapes of a weights file, for inference */
typedef struct tensor_list {
    size_t n;
    char **names;
    int *ndim;
    int64_t (*shape)[4];
} tensor_list;

static void tl_free(tensor_list *t) {
    for (size_t i = 0; t->names && i < t->n; i++) free(t->names[i]);
    free(t->names);
    free(t->ndim);
    free(t->shape);
    memset(t, 0, sizeof *t);
}

static loco_status tl_read(const char *wpath, tensor_list *t) {
    memset(t, 0, sizeof *t);
    loco_weights *w;
    loco_status s = loco_weights_open(wpath, &w);
    if (s) return s;
    size_t n = loco_weights_count(w);
    t->names = calloc(n ? n : 1, sizeof *t->names);
    t->ndim = calloc(n ? n : 1, sizeof *t->ndim);
    t->shape = calloc(n ? n : 1, sizeof *t->shape);
    if (!t->names || !t->ndim || !t->shape) s = loco_fail(LOCO_E_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < n; i++) {
        const char *name = loco_weights_name(w, i);
        loco_dtype dt;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        if ((s = loco_weights_info(w, name, &dt, &nd, sh))) break;
        if (!(t->names[i] = strdup(name))) {
            s = loco_fail(LOCO_E_NOMEM, "out of memory");
            break;
        }
        t->n = i + 1;
        if (nd > 4) {
            s = loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has %d dimensions (a guided-diffusion UNet has at most 4)",
                          wpath, name, nd);
            break;
        }
        t->ndim[i] = nd;
        for (int d = 0; d < nd; d++) t->shape[i][d] = sh[d];
    }
    loco_weights_close(w);
    if (s) tl_free(t);
    return s;
}

/* The configuration of a bare checkpoint, inferred; *report for the user. */
static loco_status infer(const char *wpath, const loco_open_params *p, adm_config *c, char **report) {
    tensor_list t;
    loco_status s = tl_read(wpath, &t);
    if (s) return s;
    /* a diffusers checkpoint given on its own: say what it needs */
    for (size_t i = 0; i < t.n; i++)
        if (strcmp(t.names[i], "conv_in.weight") == 0) {
            tl_free(&t);
            return loco_fail(LOCO_E_UNSUPPORTED,
                             "%s: this is a diffusers UNet2DModel checkpoint: put it in a folder with its config.json",
                             wpath);
        }
    adm_hints h = {p->preset, p->image_size, p->head_channels, p->heads, p->heads_upsample};
    s = adm_config_infer(c, t.n, (const char *const *)t.names, t.ndim, (const int64_t(*)[4])t.shape, &h, wpath, report);
    tl_free(&t);
    return s;
}

/* A folder's config and weights; p must not contradict the config. */
static loco_status folder(const char *path, const char *dir, const loco_open_params *p, adm_config *c, char **wpath) {
    char *cfg_path = join(dir, "config.json");
    char *text = NULL;
    size_t len;
    loco_status s = cfg_path ? loco_read_file(cfg_path, &text, &len, 1 << 20) : loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!s) s = adm_config_parse(c, text, len, cfg_path);
    free(text);
    if (!s && p->image_size && p->image_size != c->image_size)
        s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s says image_size %d, not %d", cfg_path, c->image_size, p->image_size);
    if (!s && p->head_channels && p->head_channels != c->num_head_channels)
        s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s says num_head_channels %d, not %d", cfg_path, c->num_head_channels,
                      p->head_channels);
    if (!s && p->heads_upsample && p->heads_upsample != c->num_heads_upsample)
        s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s says num_heads_upsample %d, not %d", cfg_path, c->num_heads_upsample,
                      p->heads_upsample);
    if (!s && p->heads && p->heads != c->num_heads)
        s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s says num_heads %d, not %d", cfg_path, c->num_heads, p->heads);
    if (!s && p->preset) {
        adm_config pc;
        if (!(s = adm_config_preset(&pc, p->preset)) && memcmp(&pc, c, sizeof pc) != 0)
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s does not describe the '%s' preset's architecture", cfg_path,
                          p->preset);
    }
    free(cfg_path);
    if (s) return s;
    /* the weights: a file named inside the folder, else model.safetensors,
     * else model.pt */
    if (!loco_is_dir(path) && strcmp(strrchr(path, '/') ? strrchr(path, '/') + 1 : path, "config.json") != 0) {
        *wpath = strdup(path);
        return *wpath ? LOCO_OK : loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    const char *cand[2] = {ADM_WEIGHTS_ST, ADM_WEIGHTS_PT};
    for (int i = 0; i < 2; i++) {
        char *w = join(dir, cand[i]);
        if (!w) return loco_fail(LOCO_E_NOMEM, "out of memory");
        s = loco_check_file(w);
        if (s == LOCO_OK) {
            *wpath = w;
            return LOCO_OK;
        }
        free(w);
        if (s != LOCO_E_NOT_FOUND) return s;
    }
    return loco_fail(LOCO_E_NOT_FOUND, "%s: no %s (nor %s) in the model folder", dir, ADM_WEIGHTS_ST, ADM_WEIGHTS_PT);
}

static char *dir_of(const char *path) {
    if (loco_is_dir(path)) return strdup(path);
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* The configuration and weights file of path (folder or bare checkpoint). */
static loco_status resolve(const char *path, const loco_open_params *p, adm_config *c, char **wpath, char **report) {
    *wpath = NULL;
    *report = NULL;
    char *dir = dir_of(path), *cfg = dir ? join(dir, "config.json") : NULL;
    if (!dir || !cfg) {
        free(dir);
        return loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    loco_status s = loco_check_file(cfg);
    if (s == LOCO_OK) s = folder(path, dir, p, c, wpath);
    else if (s == LOCO_E_NOT_FOUND) {
        s = infer(path, p, c, report);
        if (!s && !(*wpath = strdup(path))) s = loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    free(cfg);
    free(dir);
    if (s) {
        free(*wpath);
        free(*report);
        *wpath = *report = NULL;
    }
    return s;
}

static loco_status open_adm(const char *path, const loco_open_params *p, denoiser *d, schedule *sched) {
    adm_config *c = malloc(sizeof *c);
    char *wpath = NULL, *report = NULL;
    graph g = {0};
    graph_denoiser *gd = NULL;
    loco_status s = c ? resolve(path, p, c, &wpath, &report) : loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!s) s = adm_build(&g, c);
    if (!s) s = graph_load_weights(&g, wpath);
    /* guided-diffusion's linear schedule over diffusion_steps (1000) */
    if (!s) s = schedule_make(sched, "linear", c->diffusion_steps, SCHEDULE_BETA_START, SCHEDULE_BETA_END);
    if (!s) sched->pred = PRED_EPSILON;
    if (!s && !(s = gd_new(&g, c, "ADM", &gd))) {
        c = NULL; /* gd owns it */
        gd->n_blocks = ((const adm_config *)gd->cfg)->n_levels;
        d->vt = &vtable;
        d->self = gd;
        d->report = report;
        report = NULL;
        if (d->report) loco_log(LOCO_LOG_INFO, "%s", d->report);
    }
    graph_free(&g);
    free(c);
    free(wpath);
    free(report);
    return s;
}

static loco_status init_adm(const char *config_path, const char *text, size_t len, const char *out_dir, uint64_t seed,
                            loco_dtype dtype) {
    adm_config c;
    graph g;
    loco_status s;
    if ((s = adm_config_parse(&c, text, len, config_path)) || (s = adm_build(&g, &c))) return s;
    s = graph_write_random(&g, out_dir, ADM_WEIGHTS_ST, text, len, seed, dtype);
    graph_free(&g);
    return s;
}

/* A bare checkpoint (or a folder) as a folder: config.json written from the
 * inferred flags, model.safetensors with every tensor under its name; or,
 * when out_dir ends in ".pt", as a bare PyTorch checkpoint. */
static loco_status convert_adm(const char *path, const loco_open_params *p, const char *out_dir, loco_dtype dtype) {
    adm_config c;
    char *wpath = NULL, *report = NULL, *json = NULL;
    loco_status s = resolve(path, p, &c, &wpath, &report);
    free(report);
    if (!s) s = adm_config_to_json(&c, &json);
    loco_weights *w = NULL;
    if (!s) s = loco_weights_open(wpath, &w);
    size_t n = w ? loco_weights_count(w) : 0;
    loco_tensor_ref *refs = calloc(n ? n : 1, sizeof *refs);
    void **bufs = calloc(n ? n : 1, sizeof *bufs);
    if (!s && (!refs || !bufs)) s = loco_fail(LOCO_E_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < n; i++) {
        const char *name = loco_weights_name(w, i);
        loco_dtype dt;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        if ((s = loco_weights_info(w, name, &dt, &nd, sh))) break;
        refs[i].name = name;
        refs[i].ndim = nd;
        memcpy(refs[i].shape, sh, sizeof sh);
        const loco_dtype want = dtype == LOCO_DTYPE_COUNT ? dt : dtype;
        if (want == dt) {
            size_t nb;
            if ((s = loco_weights_read(w, name, &bufs[i], &nb))) break;
            refs[i].dtype = dt;
        } else if (want == LOCO_DTYPE_F32 || want == LOCO_DTYPE_F16) {
            float *f;
            if ((s = loco_weights_read_f32(w, name, &f, NULL, NULL, 0))) break;
            size_t cnt = 1;
            for (int d = 0; d < nd; d++) cnt *= (size_t)sh[d];
            if (want == LOCO_DTYPE_F16) {
                uint16_t *hbuf = malloc(cnt * 2 + 1);
                if (!hbuf) {
                    free(f);
                    s = loco_fail(LOCO_E_NOMEM, "out of memory");
                    break;
                }
                for (size_t k = 0; k < cnt; k++) {
                    hbuf[k] = loco_f32_to_f16(f[k]);
                    if (!isfinite(loco_f16_to_f32(hbuf[k]))) {
                        s = loco_fail(LOCO_E_NUMERIC, "%s: tensor '%s' element %zu (%g) does not fit in float16", wpath,
                                      name, k, (double)f[k]);
                        break;
                    }
                }
                free(f);
                bufs[i] = hbuf;
                if (s) break;
            } else {
                bufs[i] = f;
            }
            refs[i].dtype = want;
        } else {
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "convert: dtype must be F32 or F16");
        }
        refs[i].data = bufs[i];
    }
    char *wout = NULL, *cout = NULL;
    const size_t lo = strlen(out_dir);
    if (lo > 3 && strcmp(out_dir + lo - 3, ".pt") == 0) {
        /* OUT.pt: a bare state dict, as guided-diffusion's training loop
         * saves it (the form the published P2 checkpoints have) */
        if (!s) s = loco_pt_write(out_dir, refs, n);
    } else {
        if (!s && (!(wout = join(out_dir, ADM_WEIGHTS_ST)) || !(cout = join(out_dir, "config.json"))))
            s = loco_fail(LOCO_E_NOMEM, "out of memory");
        if (!s) s = loco_mkdir_p(out_dir);
        const char *meta[] = {"format", "pt"};
        if (!s) s = loco_tensors_write(wout, refs, n, meta, 1);
        if (!s) s = loco_write_file_atomic(cout, json, strlen(json));
    }
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(refs);
    free(wout);
    free(cout);
    free(json);
    free(wpath);
    loco_weights_close(w);
    return s;
}

const family_entry family_adm = {"ADM", open_adm, init_adm, convert_adm};
