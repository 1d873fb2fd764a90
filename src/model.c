/* model.c - the loco_model handle: opening a path as the right family
 * (registry.c), eps and x0_hat through the family's prediction and the one
 * parameterisation helper (param.h), info, summaries and random
 * initialisation. No family is named here. */
#define _POSIX_C_SOURCE 200809L
#include "model.h"
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ======================================================================== */
/* Open / free                                                              */
/* ======================================================================== */

void loco_open_params_init(loco_open_params *p) {
    if (p) memset(p, 0, sizeof *p);
}

loco_status loco_model_open_with(const char *path, const loco_open_params *p, loco_model **out) {
    if (!path || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_model_open: NULL argument");
    *out = NULL;
    loco_open_params defaults;
    loco_open_params_init(&defaults);
    if (!p) p = &defaults;
    struct stat pst;
    if (stat(path, &pst) != 0) return loco_fail(LOCO_E_NOT_FOUND, "%s: no such file or folder", path);
    const family_entry *fam;
    loco_status s = registry_family_of_path(path, &fam);
    if (s) return s;
    loco_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    s = fam->open(path, p, &m->d, &m->sched);
    if (s) {
        m->d.vt = NULL;
        loco_model_free(m);
        return s;
    }
    m->d.vt->info(m->d.self, &m->info);
    m->report = m->d.report;
    m->d.report = NULL;
    *out = m;
    return LOCO_OK;
}

loco_status loco_model_open(const char *path, loco_model **out) { return loco_model_open_with(path, NULL, out); }

void loco_model_free(loco_model *m) {
    if (!m) return;
    if (m->d.vt) m->d.vt->free(m->d.self);
    free(m->d.report);
    free(m->report);
    schedule_free(&m->sched);
    free(m->path);
    free(m);
    conv2d_dnnl_release(); /* oneDNN's cached primitives and scratch: rebuilt on demand */
}

const char *loco_model_open_report(const loco_model *m) { return m ? m->report : NULL; }

struct graph *model_graph(loco_model *m) {
    return m && m->d.vt->graph_of ? m->d.vt->graph_of(m->d.self) : NULL;
}

/* ======================================================================== */
/* Evaluation                                                               */
/* ======================================================================== */

static loco_status check_inputs(const loco_model *m, int batch, const float *x, const float *t, const void *out) {
    if (!m || !x || !t || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    if (batch < 1 || batch > 4096) return loco_fail(LOCO_E_INVALID_ARGUMENT, "batch %d out of range [1, 4096]", batch);
    size_t n = (size_t)batch * model_image_size(m);
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

/* ======================================================================== */
/* Conditioning                                                             */
/* ======================================================================== */

void loco_cond_params_init(loco_cond_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->guidance = 7.5f;
    p->edit_guidance = 4.0f;
}

loco_status loco_cond_new(loco_model *m, const loco_cond_params *p, loco_cond **out) {
    if (!m || !p || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_cond_new: NULL argument");
    *out = NULL;
    if (!m->d.vt->cond_new)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: a %s model takes no prompt", m->path, m->info.family);
    if (!p->prompt) return loco_fail(LOCO_E_INVALID_ARGUMENT, "a prompt is required");
    if (!isfinite(p->guidance) || fabsf(p->guidance) > 1000 || !isfinite(p->edit_guidance) ||
        fabsf(p->edit_guidance) > 1000)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "guidance %g / edit guidance %g: each must be finite, |g| <= 1000",
                         (double)p->guidance, (double)p->edit_guidance);
    loco_cond *c = calloc(1, sizeof *c);
    if (!c) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status s = m->d.vt->cond_new(m->d.self, p, &c->fc);
    if (s) {
        free(c);
        return s;
    }
    c->m = m;
    *out = c;
    return LOCO_OK;
}

void loco_cond_free(loco_cond *c) {
    if (!c) return;
    if (c->fc) c->m->d.vt->cond_free(c->fc);
    free(c);
}

loco_status model_cond_of(const loco_model *m, const loco_cond *c, const void **fc) {
    *fc = NULL;
    if (!c) {
        if (m->d.vt->cond_new)
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: a %s model needs a prompt", m->path, m->info.family);
        return LOCO_OK;
    }
    if (c->m != m) return loco_fail(LOCO_E_INVALID_ARGUMENT, "the conditioning belongs to another model");
    *fc = c->fc;
    return LOCO_OK;
}

/* The family's prediction y [batch, out_ch, H, W], checked finite. */
static loco_status forward_raw(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c, float *y,
                               act_tap_fn tap, void *user) {
    const void *fc;
    loco_status s = model_cond_of(m, c, &fc);
    if (s) return s;
    threads_for_work(m->info.flops);
    s = m->d.vt->predict(m->d.self, batch, x, t, fc, y, tap, user);
    if (s) return s;
    return model_check_finite(y, (size_t)batch * m->info.out_ch * m->info.height * m->info.width, "the model output");
}

/* dst = eps or x0_hat of the prediction y, per batch item (param.h); dst
 * may be y */
static void from_prediction(const loco_model *m, loco_output out, int batch, const float *x, const float *t,
                            const float *y, float *dst) {
    const size_t per = model_image_size(m);
    for (int b = 0; b < batch; b++) {
        const float ab = schedule_abar(&m->sched, t[b]), sa = sqrtf(ab), s1 = sqrtf(1.0f - ab);
        const size_t o = (size_t)b * per;
        param_apply(m->sched.pred, out, sa, s1, per, x + o, y + o, dst + o);
    }
}

loco_status model_eps_tap(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c, float *eps,
                          act_tap_fn tap, void *user) {
    loco_status s = check_inputs(m, batch, x, t, eps);
    if (s) return s;
    if ((s = forward_raw(m, batch, x, t, c, eps, tap, user))) return s;
    if (m->sched.pred != PRED_EPSILON) from_prediction(m, LOCO_OUT_EPS, batch, x, t, eps, eps);
    return LOCO_OK;
}

loco_status model_predict(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c, float *y) {
    loco_status s = check_inputs(m, batch, x, t, y);
    if (s) return s;
    return forward_raw(m, batch, x, t, c, y, NULL, NULL);
}

loco_status loco_model_eps(loco_model *m, int batch, const float *x, const float *t, float *eps) {
    return model_eps_tap(m, batch, x, t, NULL, eps, NULL, NULL);
}

loco_status loco_model_eps_cond(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c,
                                float *eps) {
    return model_eps_tap(m, batch, x, t, c, eps, NULL, NULL);
}

const float *loco_model_alphas_cumprod(const loco_model *m, int *n) {
    if (n) *n = m ? m->sched.T : 0;
    return m ? m->sched.alphas_cumprod : NULL;
}

float loco_model_abar(const loco_model *m, float t) { return schedule_abar(&m->sched, t); }

loco_status loco_model_x0_hat(loco_model *m, int batch, const float *x, const float *t, float *x0_hat, float *eps) {
    return loco_model_x0_hat_cond(m, batch, x, t, NULL, x0_hat, eps);
}

loco_status loco_model_x0_hat_cond(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c,
                                   float *x0_hat, float *eps) {
    loco_status s = check_inputs(m, batch, x, t, x0_hat);
    if (s) return s;
    if (m->info.in_ch != m->info.out_ch)
        return loco_fail(LOCO_E_UNSUPPORTED, "x0_hat needs in_channels == out_channels (%d vs %d)", m->info.in_ch,
                         m->info.out_ch);
    size_t per = model_image_size(m);
    float *y = eps ? eps : loco_malloc(per * (size_t)batch * sizeof(float));
    if (!y) return loco_fail(LOCO_E_NOMEM, "out of memory");
    if ((s = forward_raw(m, batch, x, t, c, y, NULL, NULL))) {
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
    const denoiser_info *d = &m->info;
    memset(info, 0, sizeof *info);
    info->family = d->family;
    info->in_channels = d->in_ch;
    info->out_channels = d->out_ch;
    info->height = d->height;
    info->width = d->width;
    info->n_blocks = d->n_blocks;
    info->n_params = d->n_params;
    info->flops = d->flops;
    info->flops_executed = d->flops_executed;
    info->weight_bytes = d->weight_bytes;
    info->activation_bytes = d->activation_bytes;
    info->train_timesteps = m->sched.T;
    info->conditional = m->d.vt->cond_new != NULL;
    info->default_t_edit = d->edit_t > 0 ? d->edit_t : MODEL_DEFAULT_T_EDIT;
    info->default_boost_t = d->edit_t > 0 ? d->edit_boost_t : MODEL_DEFAULT_BOOST_T;
    return LOCO_OK;
}

loco_status loco_model_describe(const loco_model *m, char **text) {
    if (!m || !text) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    *text = NULL;
    sbuf b = {0};
    sb_printf(&b, "model: %s\n", m->path);
    m->d.vt->describe(m->d.self, &b);
    static const char *const pred[] = {"epsilon", "v_prediction", "sample"};
    sb_printf(&b, "schedule: %d train timesteps, abar[0] %.6f, abar[T-1] %.3g%s; the network predicts %s\n",
              m->sched.T, m->sched.alphas_cumprod[0], m->sched.alphas_cumprod[m->sched.T - 1],
              m->sched.zero_snr ? " (zero terminal SNR)" : "", pred[m->sched.pred]);
    if (m->report) sb_printf(&b, "%s%s", m->report, m->report[0] && m->report[strlen(m->report) - 1] != '\n' ? "\n" : "");
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

loco_status loco_model_init_random(const char *config_path, const char *out_dir, uint64_t seed, loco_dtype dtype) {
    if (!config_path || !out_dir) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    if (dtype != LOCO_DTYPE_F32 && dtype != LOCO_DTYPE_F16)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "init: dtype must be F32 or F16");
    char *text;
    size_t len;
    loco_status s = loco_read_file(config_path, &text, &len, 1 << 20);
    if (s) return s;
    const family_entry *fam;
    s = registry_family_of_config(config_path, text, len, &fam);
    if (s) {
    } else if (!fam->init_random) s = loco_fail(LOCO_E_UNSUPPORTED, "%s: a %s model cannot be initialised from a config",
                      config_path, fam->name);
    else s = fam->init_random(config_path, text, len, out_dir, seed, dtype);
    free(text);
    return s;
}

/* ======================================================================== */
/* Conversion                                                               */
/* ======================================================================== */

loco_status loco_convert_with(const char *model, const loco_open_params *p, const char *out_dir, loco_dtype dtype) {
    if (!model || !out_dir) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_convert: NULL argument");
    loco_open_params defaults;
    loco_open_params_init(&defaults);
    const family_entry *fam;
    loco_status s = registry_family_of_path(model, &fam);
    if (s) return s;
    if (fam->convert) return fam->convert(model, p ? p : &defaults, out_dir, dtype);
    return loco_convert(model, out_dir, dtype);
}

/* ======================================================================== */
/* Latent models: the decoder                                               */
/* ======================================================================== */

void loco_model_image_info(const loco_model *m, int *c, int *h, int *w) {
    const int lat = m && m->d.vt->decode;
    if (c) *c = !m ? 0 : lat ? m->info.image_ch : m->info.in_ch;
    if (h) *h = !m ? 0 : lat ? m->info.image_height : m->info.height;
    if (w) *w = !m ? 0 : lat ? m->info.image_width : m->info.width;
}

loco_status loco_model_decode(loco_model *m, int B, const float *z, float *img) {
    if (!m || !z || !img) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_model_decode: NULL argument");
    if (!m->d.vt->decode) return loco_fail(LOCO_E_UNSUPPORTED, "%s: a %s model has no decoder", m->path, m->info.family);
    if (B < 1 || B > 4096) return loco_fail(LOCO_E_INVALID_ARGUMENT, "batch %d out of range [1, 4096]", B);
    loco_status s = m->d.vt->decode(m->d.self, B, z, img);
    if (s) return s;
    return model_check_finite(img, (size_t)B * m->info.image_ch * m->info.image_height * m->info.image_width,
                              "the decoded image");
}

loco_status loco_model_encode(loco_model *m, int B, const float *img, float *z) {
    if (!m || !z || !img) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_model_encode: NULL argument");
    if (!m->d.vt->encode) return loco_fail(LOCO_E_UNSUPPORTED, "%s: a %s model has no encoder", m->path, m->info.family);
    if (B < 1 || B > 4096) return loco_fail(LOCO_E_INVALID_ARGUMENT, "batch %d out of range [1, 4096]", B);
    loco_status s = m->d.vt->encode(m->d.self, B, img, z);
    if (s) return s;
    return model_check_finite(z, (size_t)B * model_image_size(m), "the encoded latent");
}
