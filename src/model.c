/* model.c - the loco_model handle: opening a diffusers folder, loading and
 * checking weights against the config, eps and x0_hat, summaries, and random
 * initialisation of new checkpoints. */
#define _POSIX_C_SOURCE 200809L
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WEIGHTS_NAME "diffusion_pytorch_model.safetensors"
#define MAX_CONFIG_BYTES (1 << 20)

/* ======================================================================== */
/* Paths                                                                    */
/* ======================================================================== */

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* The folder of a MODEL argument: itself if a directory, else its parent. */
static char *model_dir(const char *path) {
    if (loco_is_dir(path)) return strdup(path);
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = 0;
    if (n == 0) {
        free(d);
        return strdup("/");
    }
    return d;
}

/* ======================================================================== */
/* Weights                                                                  */
/* ======================================================================== */

/* wpath: safetensors or a PyTorch checkpoint (loco_weights, pytorch.c) */
static loco_status load_weights(unet *u, const char *wpath) {
    loco_weights *f;
    loco_status s = loco_weights_open(wpath, &f);
    if (s) return s;
    size_t nf = loco_weights_count(f);
    char *used = calloc(nf ? nf : 1, 1);
    u->pdata = loco_calloc(u->total_params, sizeof(float));
    if (!used || !u->pdata) {
        free(used);
        loco_weights_close(f);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory for %zu parameters", wpath, u->total_params);
    }
    for (int i = 0; i < u->n_params && !s; i++) {
        const param *p = &u->params[i];
        /* the current name, or else the older one (attention); not both */
        size_t idx = nf, idx_alt = nf;
        for (size_t j = 0; j < nf; j++) {
            const char *fn = loco_weights_name(f, j);
            if (idx == nf && strcmp(fn, p->name) == 0) idx = j;
            else if (idx_alt == nf && p->alt[0] && strcmp(fn, p->alt) == 0) idx_alt = j;
        }
        if (idx != nf && idx_alt != nf) {
            s = loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' is present under both its name and its old name '%s'", wpath,
                          p->name, p->alt);
            break;
        }
        if (idx == nf) idx = idx_alt;
        if (idx == nf) {
            s = loco_fail(LOCO_E_NOT_FOUND, "%s: tensor '%s' is missing (the config needs it)", wpath, p->name);
            break;
        }
        const char *name = loco_weights_name(f, idx);
        if (used[idx]) {
            s = loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' would be used twice", wpath, name);
            break;
        }
        used[idx] = 1;
        loco_dtype dt;
        int nd;
        int64_t shape[LOCO_MAX_DIMS];
        loco_weights_info(f, name, &dt, &nd, shape);
        if (dt != LOCO_DTYPE_F32 && dt != LOCO_DTYPE_F16 && dt != LOCO_DTYPE_BF16) {
            s = loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)", wpath, name,
                          loco_dtype_name(dt));
            break;
        }
        int same = nd == p->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == p->shape[d];
        if (!same) {
            char got[128] = "", want[128] = ""; /* for the message only: 8 dims fit, or are cut */
            for (int d = 0; d < nd; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "", (long long)shape[d]);
            for (int d = 0; d < p->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "",
                         (long long)p->shape[d]);
            s = loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has shape [%s] but the config needs [%s]", wpath, name, got,
                          want);
            break;
        }
        float *data;
        s = loco_weights_read_f32(f, name, &data, NULL, NULL, 0);
        if (s) break;
        memcpy(u->pdata + p->off, data, p->numel * sizeof(float));
        free(data);
    }
    for (size_t j = 0; !s && j < nf; j++)
        if (!used[j])
            s = loco_fail(LOCO_E_FORMAT, "%s: unexpected tensor '%s' (not part of the model the config describes)", wpath,
                          loco_weights_name(f, j));
    free(used);
    loco_weights_close(f);
    return s;
}

/* ======================================================================== */
/* Open / free                                                              */
/* ======================================================================== */

loco_status model_open_config(const char *cfg_path, unet_config *cfg) {
    char *text;
    size_t len;
    loco_status s = loco_read_file(cfg_path, &text, &len, MAX_CONFIG_BYTES);
    if (s) return s;
    s = unet_config_parse(cfg, text, len, cfg_path);
    free(text);
    return s;
}

loco_status loco_model_open(const char *path, loco_model **out) {
    if (!path || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_model_open: NULL argument");
    *out = NULL;
    struct stat pst;
    if (stat(path, &pst) != 0) return loco_fail(LOCO_E_NOT_FOUND, "%s: no such file or folder", path);
    if (molrg_is_file(path)) {
        loco_model *mm = calloc(1, sizeof *mm);
        loco_status ms = mm ? molrg_load(path, &mm->mo) : loco_fail(LOCO_E_NOMEM, "out of memory");
        if (!ms) ms = schedule_default(&mm->sched);
        if (!ms) mm->sched.pred = PRED_SAMPLE; /* MoLRG computes x0_hat in closed form */
        if (!ms && !(mm->path = strdup(path))) ms = loco_fail(LOCO_E_NOMEM, "out of memory");
        if (ms) {
            loco_model_free(mm);
            return ms;
        }
        mm->net.cfg.in_ch = mm->net.cfg.out_ch = mm->mo->C;
        mm->net.cfg.height = mm->mo->H;
        mm->net.cfg.width = mm->mo->W;
        *out = mm;
        return LOCO_OK;
    }
    char *dir = model_dir(path);
    if (!dir) return loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!loco_is_dir(dir)) {
        loco_status s = loco_fail(LOCO_E_IO, "%s: not a model folder", path);
        free(dir);
        return s;
    }
    loco_model *m = calloc(1, sizeof *m);
    char *cfg_path = join(dir, "config.json"), *w_path = NULL,
         *sched_path = join(dir, "scheduler/scheduler_config.json");
    loco_status s = LOCO_OK;
    if (!m || !cfg_path || !sched_path) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto fail;
    }
    m->path = dir;
    dir = NULL;
    /* a folder, FIFO or device in its place is named as such */
    if ((s = loco_check_file(cfg_path)) == LOCO_E_NOT_FOUND)
        s = loco_fail(LOCO_E_NOT_FOUND, "%s: no config.json in the model folder", m->path);
    if (s) goto fail;
    unet_config cfg;
    if ((s = model_open_config(cfg_path, &cfg))) goto fail;
    if ((s = unet_build(&m->net, &cfg))) {
        s = loco_fail_in(s, cfg_path);
        goto fail;
    }
    /* the safetensors file, else diffusion_pytorch_model.bin (pytorch.c) */
    if ((s = loco_weights_locate(m->path, path, &w_path))) goto fail;
    if ((s = load_weights(&m->net, w_path))) goto fail;
    /* no scheduler config: the default schedule; something else in its
     * place is an error, not a reason to fall back */
    s = loco_check_file(sched_path);
    if (s == LOCO_OK) s = schedule_from_json(&m->sched, sched_path);
    else if (s == LOCO_E_NOT_FOUND) s = schedule_default(&m->sched);
    if (s) goto fail;
    m->scratch = loco_malloc(m->net.scratch_floats * sizeof(float));
    if (!m->scratch) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory for scratch space", m->path);
        goto fail;
    }
    free(cfg_path);
    free(w_path);
    free(sched_path);
    *out = m;
    return LOCO_OK;
fail:
    free(dir);
    free(cfg_path);
    free(w_path);
    free(sched_path);
    loco_model_free(m);
    return s;
}

void loco_model_free(loco_model *m) {
    if (!m) return;
    unet_free(&m->net);
    molrg_free(m->mo);
    schedule_free(&m->sched);
    free(m->arena);
    free(m->scratch);
    free(m->path);
    free(m);
}

/* ======================================================================== */
/* Evaluation                                                               */
/* ======================================================================== */

loco_status model_reserve_arena(loco_model *m, int batch) {
    size_t need;
    if (!loco_mul_ok(m->net.arena_per_image, (size_t)batch, &need) || !loco_mul_ok(need, sizeof(float), &need))
        return loco_fail(LOCO_E_NOMEM, "batch %d: activation memory overflows", batch);
    if (need <= m->arena_bytes) return LOCO_OK;
    free(m->arena);
    m->arena_bytes = 0;
    m->arena = loco_malloc(need);
    if (!m->arena) return loco_fail(LOCO_E_NOMEM, "batch %d: cannot allocate %zu bytes of activations", batch, need);
    m->arena_bytes = need;
    return LOCO_OK;
}

static loco_status check_inputs(const loco_model *m, int batch, const float *x, const float *t, const void *out) {
    if (!m || !x || !t || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    if (batch < 1 || batch > 4096) return loco_fail(LOCO_E_INVALID_ARGUMENT, "batch %d out of range [1, 4096]", batch);
    const unet_config *c = &m->net.cfg;
    size_t n = (size_t)batch * c->in_ch * c->height * c->width;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return loco_fail(LOCO_E_NUMERIC, "x: element %zu is not finite", i);
    for (int b = 0; b < batch; b++) {
        if (!isfinite(t[b])) return loco_fail(LOCO_E_NUMERIC, "t[%d] is not finite", b);
        if (t[b] < 0 || t[b] > (float)(m->sched.T - 1))
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "t[%d] = %g is outside the model's timesteps [0, %d]", b,
                             (double)t[b], m->sched.T - 1);
    }
    return LOCO_OK;
}

loco_status model_check_finite(const float *y, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(y[i]))
            return loco_fail(LOCO_E_NUMERIC,
                             "%s: element %zu is %g: the model's weights or its input overflow float32 arithmetic",
                             what, i, (double)y[i]);
    return LOCO_OK;
}

/* The network's own prediction y [batch, C, H, W] (what the model's
 * prediction_type says it predicts), checked finite. */
static loco_status forward_raw(loco_model *m, int batch, const float *x, const float *t, float *y, unet_tap_fn tap,
                               void *user) {
    if (m->mo) { /* MoLRG computes the posterior mean itself: a 'sample' model */
        float *ab = malloc(sizeof(float) * (size_t)batch);
        if (!ab) return loco_fail(LOCO_E_NOMEM, "out of memory");
        for (int b = 0; b < batch; b++) ab[b] = schedule_abar(&m->sched, t[b]);
        molrg_x0(m->mo, batch, x, ab, y);
        free(ab);
        return LOCO_OK;
    }
    loco_status s = model_reserve_arena(m, batch);
    if (s) return s;
    threads_for_work(m->net.flops);
    unet_forward(&m->net, batch, x, t, y, m->arena, m->scratch, tap, user);
    return model_check_finite(y, (size_t)batch * m->net.cfg.out_ch * m->net.cfg.height * m->net.cfg.width,
                              "the model output");
}

/* dst = eps or x0_hat of the prediction y, per batch item (param.h); dst
 * may be y */
static void from_prediction(const loco_model *m, loco_output out, int batch, const float *x, const float *t,
                            const float *y, float *dst) {
    const size_t per = m->mo ? m->mo->n : (size_t)m->net.cfg.in_ch * m->net.cfg.height * m->net.cfg.width;
    for (int b = 0; b < batch; b++) {
        const float ab = schedule_abar(&m->sched, t[b]), sa = sqrtf(ab), s1 = sqrtf(1.0f - ab);
        const size_t o = (size_t)b * per;
        param_apply(m->sched.pred, out, sa, s1, per, x + o, y + o, dst + o);
    }
}

loco_status loco_model_eps(loco_model *m, int batch, const float *x, const float *t, float *eps) {
    loco_status s = check_inputs(m, batch, x, t, eps);
    if (s) return s;
    if ((s = forward_raw(m, batch, x, t, eps, NULL, NULL))) return s;
    if (m->sched.pred != PRED_EPSILON) from_prediction(m, LOCO_OUT_EPS, batch, x, t, eps, eps);
    return LOCO_OK;
}

loco_status model_eps_tap(loco_model *m, int batch, const float *x, const float *t, float *eps, unet_tap_fn tap,
                          void *user) {
    loco_status s = check_inputs(m, batch, x, t, eps);
    if (s) return s;
    if ((s = forward_raw(m, batch, x, t, eps, tap, user))) return s;
    if (m->sched.pred != PRED_EPSILON) from_prediction(m, LOCO_OUT_EPS, batch, x, t, eps, eps);
    return LOCO_OK;
}

const float *loco_model_alphas_cumprod(const loco_model *m, int *n) {
    if (n) *n = m ? m->sched.T : 0;
    return m ? m->sched.alphas_cumprod : NULL;
}

float loco_model_abar(const loco_model *m, float t) { return schedule_abar(&m->sched, t); }

loco_status loco_model_x0_hat(loco_model *m, int batch, const float *x, const float *t, float *x0_hat, float *eps) {
    loco_status s = check_inputs(m, batch, x, t, x0_hat);
    if (s) return s;
    const unet_config *c = &m->net.cfg;
    if (c->in_ch != c->out_ch)
        return loco_fail(LOCO_E_UNSUPPORTED, "x0_hat needs in_channels == out_channels (%d vs %d)", c->in_ch, c->out_ch);
    size_t per = (size_t)c->in_ch * c->height * c->width;
    float *y = eps ? eps : loco_malloc(per * (size_t)batch * sizeof(float));
    if (!y) return loco_fail(LOCO_E_NOMEM, "out of memory");
    if ((s = forward_raw(m, batch, x, t, y, NULL, NULL))) {
        if (!eps) free(y);
        return s;
    }
    from_prediction(m, LOCO_OUT_X0, batch, x, t, y, x0_hat);
    if (eps && m->sched.pred != PRED_EPSILON) from_prediction(m, LOCO_OUT_EPS, batch, x, t, y, eps);
    if (!eps) free(y);
    return LOCO_OK;
}

/* ======================================================================== */
/* Info                                                                     */
/* ======================================================================== */

loco_status loco_model_get_info(const loco_model *m, loco_model_info *info) {
    if (!m || !info) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    const unet *u = &m->net;
    memset(info, 0, sizeof *info);
    if (m->mo) {
        info->in_channels = info->out_channels = m->mo->C;
        info->height = m->mo->H;
        info->width = m->mo->W;
        info->n_params = (int64_t)m->mo->K * m->mo->d * (int64_t)m->mo->n + m->mo->K;
        info->flops = 4.0 * m->mo->K * m->mo->d * (double)m->mo->n;
        info->flops_executed = info->flops;
        info->weight_bytes = (size_t)info->n_params * sizeof(float);
        info->activation_bytes = (size_t)(m->mo->K + 2) * m->mo->n * sizeof(float);
        info->train_timesteps = m->sched.T;
        return LOCO_OK;
    }
    info->in_channels = u->cfg.in_ch;
    info->out_channels = u->cfg.out_ch;
    info->height = u->cfg.height;
    info->width = u->cfg.width;
    info->n_blocks = u->cfg.n_blocks;
    info->n_params = (int64_t)u->total_params;
    info->flops = u->flops;
    info->flops_executed = unet_flops_executed(u);
    info->weight_bytes = u->total_params * sizeof(float);
    info->activation_bytes = (u->arena_per_image + u->scratch_floats) * sizeof(float);
    info->train_timesteps = m->sched.T;
    return LOCO_OK;
}

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the whole formatted text, however long (a model's path may be). */
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 1024;
        while (nc < b->len + (size_t)n + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void human_bytes(double b, char *out, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, n, "%.1f %s", b, u[i]);
}

loco_status loco_model_describe(const loco_model *m, char **text) {
    if (!m || !text) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    *text = NULL;
    const unet *u = &m->net;
    const unet_config *c = &u->cfg;
    sbuf b = {0};
    sb_printf(&b, "model: %s\n", m->path);
    if (m->mo) {
        sb_printf(&b, "class: MoLRG closed form, %d Gaussians of rank %d in %dx%dx%d (n = %zu), sigma0 %g\n", m->mo->K,
                  m->mo->d, m->mo->C, m->mo->H, m->mo->W, m->mo->n, m->mo->sigma0);
        sb_printf(&b, "schedule: %d train timesteps (linear betas)\n", m->sched.T);
        if (b.oom) {
            free(b.s);
            return loco_fail(LOCO_E_NOMEM, "out of memory");
        }
        *text = b.s;
        return LOCO_OK;
    }
    sb_printf(&b, "class: UNet2DModel, %d -> %d channels, %dx%d\n", c->in_ch, c->out_ch, c->height, c->width);
    sb_printf(&b, "parameters: %lld (%.2f M)\n", (long long)u->total_params, u->total_params / 1e6);
    sb_printf(&b, "time embedding: positional %d -> %d, flip_sin_to_cos %s, freq_shift %g\n", c->boc[0], c->temb_dim,
              c->flip_sin_to_cos ? "true" : "false", c->freq_shift);
    sb_printf(&b, "norm: %d groups, eps %g; layers per block %d; downsample padding %d\n", c->groups, c->eps, c->layers,
              c->downsample_padding);
    int h = c->height, w = c->width;
    for (int i = 0; i < c->n_blocks; i++) {
        int hd = c->head_dim ? c->head_dim : c->boc[i];
        sb_printf(&b, "  down_blocks.%d: %-15s %4d ch at %dx%d", i, c->down_attn[i] ? "AttnDownBlock2D" : "DownBlock2D",
                  c->boc[i], h, w);
        if (c->down_attn[i]) sb_printf(&b, ", %d head(s) of %d", c->boc[i] / hd, hd);
        sb_printf(&b, "%s\n", i < c->n_blocks - 1 ? ", downsample" : "");
        if (i < c->n_blocks - 1) {
            h /= 2;
            w /= 2;
        }
    }
    if (c->mid_block) {
        int cm = c->boc[c->n_blocks - 1], hd = c->head_dim ? c->head_dim : cm;
        sb_printf(&b, "  mid_block:     UNetMidBlock2D  %4d ch at %dx%d", cm, h, w);
        if (c->add_attention) sb_printf(&b, ", %d head(s) of %d", cm / hd, hd);
        sb_printf(&b, ", scale %g\n", c->mid_scale);
    }
    for (int i = 0; i < c->n_blocks; i++) {
        int ch = c->boc[c->n_blocks - 1 - i], hd = c->head_dim ? c->head_dim : ch;
        sb_printf(&b, "  up_blocks.%d:   %-15s %4d ch at %dx%d", i, c->up_attn[i] ? "AttnUpBlock2D" : "UpBlock2D", ch, h, w);
        if (c->up_attn[i]) sb_printf(&b, ", %d head(s) of %d", ch / hd, hd);
        sb_printf(&b, "%s\n", i < c->n_blocks - 1 ? ", upsample" : "");
        if (i < c->n_blocks - 1) {
            h *= 2;
            w *= 2;
        }
    }
    char wb[32], ab[32]; /* "1023.9 GiB" */
    human_bytes((double)u->total_params * 4, wb, sizeof wb);
    human_bytes((double)(u->arena_per_image + u->scratch_floats) * 4, ab, sizeof ab);
    sb_printf(&b, "forward: %.2f GFLOP per image (2 x multiply-adds); %.2f GFLOP executed (Winograd 3x3 convolutions)\n",
              u->flops / 1e9, unet_flops_executed(u) / 1e9);
    sb_printf(&b, "memory: weights %s (float32), activations %s per image at batch 1\n", wb, ab);
    sb_printf(&b, "schedule: %d train timesteps, abar[0] %.6f, abar[T-1] %.3g\n", m->sched.T, m->sched.alphas_cumprod[0],
              m->sched.alphas_cumprod[m->sched.T - 1]);
    if (b.oom) {
        free(b.s);
        return loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    *text = b.s;
    return LOCO_OK;
}

/* ======================================================================== */
/* Random initialisation                                                    */
/* ======================================================================== */

static loco_status mkdir_p(const char *dir) {
    char *d = strdup(dir);
    if (!d) return loco_fail(LOCO_E_NOMEM, "out of memory");
    for (char *p = d + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(d, 0755) != 0 && errno != EEXIST) {
            loco_status s = loco_fail(LOCO_E_IO, "%s: cannot create folder: %s", d, strerror(errno));
            free(d);
            return s;
        }
        *p = '/';
    }
    loco_status s = LOCO_OK;
    if (mkdir(d, 0755) != 0 && errno != EEXIST) s = loco_fail(LOCO_E_IO, "%s: cannot create folder: %s", d, strerror(errno));
    free(d);
    return s;
}

loco_status loco_model_init_random(const char *config_path, const char *out_dir, uint64_t seed, loco_dtype dtype) {
    if (!config_path || !out_dir) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    if (dtype != LOCO_DTYPE_F32 && dtype != LOCO_DTYPE_F16)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "init: dtype must be F32 or F16");
    char *text;
    size_t len;
    loco_status s = loco_read_file(config_path, &text, &len, MAX_CONFIG_BYTES);
    if (s) return s;
    unet_config cfg;
    unet u;
    if ((s = unet_config_parse(&cfg, text, len, config_path)) || (s = unet_build(&u, &cfg))) {
        free(text);
        return s;
    }
    size_t esz = dtype == LOCO_DTYPE_F32 ? 4 : 2;
    uint8_t *data = loco_malloc(u.total_params * esz);
    loco_tensor_ref *refs = calloc((size_t)u.n_params, sizeof *refs);
    char *cfg_out = join(out_dir, "config.json"), *w_out = join(out_dir, WEIGHTS_NAME);
    if (!data || !refs || !cfg_out || !w_out) {
        s = loco_fail(LOCO_E_NOMEM, "init: out of memory for %zu parameters", u.total_params);
        goto done;
    }
    loco_rng rng;
    loco_rng_seed(&rng, seed);
    for (int i = 0; i < u.n_params; i++) {
        const param *p = &u.params[i];
        uint8_t *dst = data + p->off * esz;
        for (size_t k = 0; k < p->numel; k++) {
            float v;
            if (p->fan_in > 0) {
                float bound = 1.0f / sqrtf(p->fan_in);
                v = (float)((2.0 * loco_rng_uniform(&rng) - 1.0) * bound);
            } else {
                v = p->is_gn_weight ? 1.0f : 0.0f;
            }
            if (esz == 4) memcpy(dst + 4 * k, &v, 4);
            else {
                uint16_t hv = loco_f32_to_f16(v);
                memcpy(dst + 2 * k, &hv, 2);
            }
        }
        refs[i].name = p->name;
        refs[i].dtype = dtype;
        refs[i].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) refs[i].shape[d] = p->shape[d];
        refs[i].data = dst;
    }
    if ((s = mkdir_p(out_dir))) goto done;
    char seedbuf[32];
    snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)seed);
    const char *meta[] = {"format", "pt", "loco_init_seed", seedbuf};
    if ((s = loco_tensors_write(w_out, refs, (size_t)u.n_params, meta, 2))) goto done;
    s = loco_write_file_atomic(cfg_out, text, len);
done:
    free(cfg_out);
    free(w_out);
    free(refs);
    free(data);
    free(text);
    unet_free(&u);
    return s;
}
