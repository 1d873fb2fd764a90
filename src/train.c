/* train.c - the trainer: eps, v or x0 prediction MSE, AdamW, EMA,
 * checkpoints (see the Training section of loco_train.h). */
#include "families/unet2d.h"
#include "loco_train.h"
#include "graph/backward.h"
#include "schedule.h"

_Static_assert((int)LOCO_PRED_EPSILON == (int)PRED_EPSILON && (int)LOCO_PRED_V == (int)PRED_V &&
                   (int)LOCO_PRED_SAMPLE == (int)PRED_SAMPLE,
               "loco_prediction and pred_type agree");

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TRAIN_MAX_CONFIG (1 << 20)
#define STATE_NAME "train_state.safetensors"
#define WEIGHTS_NAME_TRAIN "diffusion_pytorch_model.safetensors"

void loco_train_params_init(loco_train_params *p) {
    memset(p, 0, sizeof *p);
    p->steps = 1000;
    p->batch = 32;
    p->lr = 2e-4f;
    p->beta1 = 0.9f;
    p->beta2 = 0.999f;
    p->adam_eps = 1e-8f;
    p->ema = 0.999f;
    p->save_every = 500;
    p->ms_levels = 3;
    p->data_count = 10000;
    p->beta_start = SCHEDULE_BETA_START;
    p->beta_end = SCHEDULE_BETA_END;
}

static char *join2(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

static loco_status mkdir_one(const char *d) {
    if (mkdir(d, 0755) != 0 && errno != EEXIST)
        return loco_fail(LOCO_E_IO, "%s: cannot create folder: %s", d, strerror(errno));
    return LOCO_OK;
}

static loco_status mkdir_all(const char *dir) {
    char *d = strdup(dir);
    if (!d) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status s = LOCO_OK;
    for (char *p = d + 1; *p && !s; p++) {
        if (*p != '/') continue;
        *p = 0;
        s = mkdir_one(d);
        *p = '/';
    }
    if (!s) s = mkdir_one(d);
    free(d);
    return s;
}

/* ---- data ---------------------------------------------------------------- */

typedef struct train_data {
    int kind;          /* 0 faces, 1 stored images                        */
    int n, C, H, W;
    uint8_t *pix;      /* kind 1: [n, H, W, C]                              */
    uint64_t seed;
    int version;       /* kind 0: the faces generator's version            */
} train_data;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static loco_status data_open_dir(train_data *d, const char *dir, int C, int H, int W) {
    DIR *dp = opendir(dir);
    if (!dp) return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: data '%s' is not 'faces', 'faces-v1', 'fashion-mnist' or a folder", dir);
    char **names = NULL;
    int n = 0, cap = 0;
    loco_status s = LOCO_OK;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcasecmp(e->d_name + l - 4, ".png") != 0) continue;
        if (l >= 11 && strcmp(e->d_name + l - 11, "_labels.png") == 0) continue; /* label maps of `loco dataset` */
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, sizeof *names * (size_t)cap);
            if (!nn) { s = loco_fail(LOCO_E_NOMEM, "out of memory"); break; }
            names = nn;
        }
        if (!(names[n] = join2(dir, e->d_name))) { s = loco_fail(LOCO_E_NOMEM, "out of memory"); break; }
        n++;
    }
    closedir(dp);
    if (!s && n == 0) s = loco_fail(LOCO_E_NOT_FOUND, "train: folder %s holds no .png files", dir);
    if (!s) {
        qsort(names, (size_t)n, sizeof *names, cmp_str);
        d->pix = loco_malloc((size_t)n * (size_t)(H * W * C));
        if (!d->pix) s = loco_fail(LOCO_E_NOMEM, "out of memory for %d images", n);
    }
    for (int i = 0; i < n && !s; i++) {
        loco_image im;
        if ((s = loco_png_read(names[i], &im))) break;
        if (im.width != W || im.height != H) {
            s = loco_fail(LOCO_E_SHAPE, "%s: %dx%d but the config's sample size is %dx%d", names[i], im.width,
                          im.height, W, H);
        } else {
            int ic = im.channels, colour = ic >= 3;
            uint8_t *dst = d->pix + (size_t)i * (size_t)(H * W * C);
            for (int p = 0; p < H * W; p++) {
                const uint8_t *src = im.data + (size_t)p * (size_t)ic;
                for (int c = 0; c < C; c++) {
                    uint8_t v;
                    if (C == 1) v = colour ? (uint8_t)((src[0] * 299 + src[1] * 587 + src[2] * 114 + 500) / 1000) : src[0];
                    else if (C == 3) v = colour ? src[c] : src[0];
                    else v = 0;
                    dst[(size_t)p * (size_t)C + (size_t)c] = v;
                }
            }
            if (C != 1 && C != 3) s = loco_fail(LOCO_E_SHAPE, "train: PNG data need in_channels 1 or 3, not %d", C);
        }
        loco_free(im.data);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    d->kind = 1;
    d->n = n;
    return s;
}

static loco_status data_open(train_data *d, const loco_train_params *p, const unet_config *cfg) {
    memset(d, 0, sizeof *d);
    d->C = cfg->in_ch;
    d->H = cfg->height;
    d->W = cfg->width;
    if (strcmp(p->data, "faces") == 0 || strcmp(p->data, "faces-v1") == 0) {
        if (d->C != 3 || d->H != LOCO_FACES_SIZE || d->W != LOCO_FACES_SIZE)
            return loco_fail(LOCO_E_SHAPE, "train: faces are 3x32x32 but the config takes %dx%dx%d", d->C, d->H, d->W);
        if (p->data_count < 1) return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: faces data_count must be >= 1");
        d->kind = 0;
        d->n = p->data_count;
        d->seed = p->data_seed;
        d->version = strcmp(p->data, "faces") == 0 ? LOCO_FACES_VERSION : 1;
        return LOCO_OK;
    }
    if (strcmp(p->data, "fashion-mnist") == 0) {
        if (d->C != 1 || d->H != 32 || d->W != 32)
            return loco_fail(LOCO_E_SHAPE, "train: fashion-mnist is 1x32x32 but the config takes %dx%dx%d", d->C,
                             d->H, d->W);
        uint8_t *labels = NULL;
        loco_status s = loco_fashion_mnist_read(p->fashion_dir, "train", p->data_count, &d->pix, &labels, &d->n);
        loco_free(labels);
        d->kind = 1;
        return s;
    }
    return data_open_dir(d, p->data, d->C, d->H, d->W);
}

/* image i (flipped when flip) into x [C, H, W] in [-1, 1] */
static loco_status data_get(const train_data *d, int i, int flip, float *x) {
    int C = d->C, H = d->H, W = d->W;
    uint8_t rgb[LOCO_FACES_SIZE * LOCO_FACES_SIZE * 3];
    const uint8_t *src;
    if (d->kind == 0) {
        loco_status s = loco_faces_generate_version(d->seed, i, d->version, rgb, NULL, NULL);
        if (s) return s;
        src = rgb;
    } else {
        src = d->pix + (size_t)i * (size_t)(C * H * W);
    }
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                int sx = flip ? W - 1 - xx : xx;
                x[((size_t)c * H + y) * W + xx] = src[((size_t)y * W + sx) * C + c] / 127.5f - 1.0f;
            }
    return LOCO_OK;
}

/* ---- checkpoints ----------------------------------------------------------- */

/* The shortest %g text that reads back as exactly v (0.0001, not
 * 0.00010000000000000000479): what the model's reader parses is then the
 * schedule the run trained with, and the default's file stays as it was. */
static void fmt_exact(char *buf, size_t n, double v) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static const char *const pred_names[3] = {"epsilon", "v_prediction", "sample"};

static const char *train_kind(const loco_train_params *p) { return p->cosine ? "squaredcos_cap_v2" : "linear"; }

/* scheduler/scheduler_config.json of the run: the default's text is the
 * one written before prediction types and zero SNR existed, and with zero
 * SNR diffusers samples from timestep 999 (pure noise) with "trailing" */
static int sched_json(char *buf, size_t n, const loco_train_params *p) {
    char b0[32], b1[32];
    fmt_exact(b0, sizeof b0, p->beta_start);
    fmt_exact(b1, sizeof b1, p->beta_end);
    return snprintf(buf, n,
                    "{\n  \"_class_name\": \"DDPMScheduler\",\n  \"beta_schedule\": \"%s\",\n  \"beta_start\": %s,\n"
                    "  \"beta_end\": %s,\n  \"num_train_timesteps\": 1000,\n  \"prediction_type\": \"%s\",\n"
                    "%s  \"clip_sample\": true\n}\n",
                    train_kind(p), b0, b1, pred_names[p->prediction],
                    p->zero_snr ? "  \"rescale_betas_zero_snr\": true,\n  \"timestep_spacing\": \"trailing\",\n" : "");
}

typedef struct trainer {
    graph u;
    float *w, *m, *v, *ema, *grad;
    int64_t step;
    loco_rng rng;
} trainer;

/* state tensor names: "ema." and a parameter name (graph.h: param.name) */
#define STATE_NAME_CAP 160
_Static_assert(sizeof(((param *)0)->name) + sizeof "ema." <= STATE_NAME_CAP, "state tensor names fit");

static void fill_refs(const graph *u, const float *base, loco_tensor_ref *refs, const char *prefix, char *names) {
    for (int i = 0; i < u->n_params; i++) {
        const param *q = &u->params[i];
        char *nm = names + (size_t)i * STATE_NAME_CAP;
        snprintf(nm, STATE_NAME_CAP, "%s%s", prefix, q->name);
        refs[i].name = nm;
        refs[i].dtype = LOCO_DTYPE_F32;
        refs[i].ndim = q->ndim;
        for (int k = 0; k < q->ndim; k++) refs[i].shape[k] = q->shape[k];
        refs[i].data = base + q->off;
    }
}

static loco_status save_all(const trainer *tr, const loco_train_params *p, const char *cfg_text, size_t cfg_len) {
    const graph *u = &tr->u;
    size_t np = (size_t)u->n_params;
    loco_tensor_ref *refs = calloc(4 * np + 2, sizeof *refs);
    char *names = malloc(4 * np * STATE_NAME_CAP);
    char *cfg_out = join2(p->out_dir, "config.json"), *w_out = join2(p->out_dir, WEIGHTS_NAME_TRAIN),
         *sdir = join2(p->out_dir, "scheduler"), *st_out = join2(p->out_dir, STATE_NAME);
    char *sch_out = sdir ? join2(sdir, "scheduler_config.json") : NULL;
    loco_status s = LOCO_OK;
    if (!refs || !names || !cfg_out || !w_out || !sdir || !st_out || !sch_out) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    if ((s = mkdir_all(p->out_dir)) || (s = mkdir_one(sdir))) goto done;
    if ((s = loco_write_file_atomic(cfg_out, cfg_text, cfg_len))) goto done;
    char sched_text[640]; /* fixed text, two numbers of <= 24 characters and two names */
    int sched_len = sched_json(sched_text, sizeof sched_text, p);
    if ((s = loco_write_file_atomic(sch_out, sched_text, (size_t)sched_len))) goto done;
    char stepbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "%lld", (long long)tr->step);
    const char *meta[] = {"format", "pt", "loco_train_step", stepbuf};
    fill_refs(u, tr->ema, refs, "", names);
    if ((s = loco_tensors_write(w_out, refs, np, meta, 2))) goto done;
    fill_refs(u, tr->w, refs, "w.", names);
    fill_refs(u, tr->m, refs + np, "m.", names + np * STATE_NAME_CAP);
    fill_refs(u, tr->v, refs + 2 * np, "v.", names + 2 * np * STATE_NAME_CAP);
    fill_refs(u, tr->ema, refs + 3 * np, "ema.", names + 3 * np * STATE_NAME_CAP);
    loco_tensor_ref *r = &refs[4 * np];
    r->name = "step";
    r->dtype = LOCO_DTYPE_I64;
    r->ndim = 1;
    r->shape[0] = 1;
    r->data = &tr->step;
    r++;
    r->name = "rng";
    r->dtype = LOCO_DTYPE_U8;
    r->ndim = 1;
    r->shape[0] = sizeof tr->rng.s;
    r->data = tr->rng.s;
    char lrbuf[32], seedbuf[32], batchbuf[32], b0buf[32], b1buf[32];
    fmt_exact(b0buf, sizeof b0buf, p->beta_start);
    fmt_exact(b1buf, sizeof b1buf, p->beta_end);
    snprintf(lrbuf, sizeof lrbuf, "%.9g", (double)p->lr);
    snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)p->seed);
    snprintf(batchbuf, sizeof batchbuf, "%d", p->batch);
    /* the keys of later options only when they differ from their default:
     * a default run's state is what it was before they existed */
    const char *smeta[20] = {"loco_train_step", stepbuf, "lr", lrbuf, "seed", seedbuf, "batch", batchbuf,
                             "data", p->data, "beta_start", b0buf, "beta_end", b1buf};
    int nmeta = 7;
    if (p->prediction != LOCO_PRED_EPSILON) {
        smeta[2 * nmeta] = "prediction_type";
        smeta[2 * nmeta + 1] = pred_names[p->prediction];
        nmeta++;
    }
    if (p->zero_snr) {
        smeta[2 * nmeta] = "rescale_betas_zero_snr";
        smeta[2 * nmeta + 1] = "true";
        nmeta++;
    }
    if (p->cosine) {
        smeta[2 * nmeta] = "beta_schedule";
        smeta[2 * nmeta + 1] = train_kind(p);
        nmeta++;
    }
    s = loco_tensors_write(st_out, refs, 4 * np + 2, smeta, nmeta);
done:
    free(refs);
    free(names);
    free(cfg_out);
    free(w_out);
    free(sdir);
    free(st_out);
    free(sch_out);
    return s;
}

static loco_status read_exact(const loco_tensors *f, const char *path, const char *name, loco_dtype dt, size_t nbytes,
                              void *dst) {
    loco_dtype got;
    loco_status s = loco_tensors_info(f, name, &got, NULL, NULL);
    if (s) return loco_fail(LOCO_E_NOT_FOUND, "%s: tensor '%s' is missing", path, name);
    const void *raw;
    size_t nb;
    if ((s = loco_tensors_raw(f, name, &raw, &nb))) return s;
    if (got != dt || nb != nbytes)
        return loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' is %s of %zu bytes, expected %s of %zu", path, name,
                         loco_dtype_name(got), nb, loco_dtype_name(dt), nbytes);
    memcpy(dst, raw, nbytes);
    return LOCO_OK;
}

/* The state's schedule must be the run's: a state without the keys was
 * written before they existed, with the default betas. */
static loco_status check_state_betas(const loco_tensors *f, const char *path, const loco_train_params *p) {
    const char *keys[2] = {"beta_start", "beta_end"};
    const double want[2] = {p->beta_start, p->beta_end}, dflt[2] = {SCHEDULE_BETA_START, SCHEDULE_BETA_END};
    for (int k = 0; k < 2; k++) {
        const char *v = loco_tensors_metadata(f, keys[k]);
        double got = dflt[k];
        if (v) {
            char *end;
            got = strtod(v, &end);
            if (end == v || *end) return loco_fail(LOCO_E_FORMAT, "%s: metadata '%s' is not a number: '%s'", path, keys[k], v);
        }
        if (got != want[k])
            return loco_fail(LOCO_E_INVALID_ARGUMENT,
                             "%s: the state was trained with %s %.9g, this run asks for %.9g (the schedule cannot change on resume)",
                             path, keys[k], got, want[k]);
    }
    /* the later options: absent means the default */
    const char *names[3] = {"prediction_type", "rescale_betas_zero_snr", "beta_schedule"};
    const char *wants[3] = {pred_names[p->prediction], p->zero_snr ? "true" : "false", train_kind(p)};
    const char *dflts[3] = {"epsilon", "false", "linear"};
    for (int k = 0; k < 3; k++) {
        const char *v = loco_tensors_metadata(f, names[k]);
        if (!v) v = dflts[k];
        if (strcmp(v, wants[k]) != 0)
            return loco_fail(LOCO_E_INVALID_ARGUMENT,
                             "%s: the state was trained with %s %.40s, this run asks for %s (the schedule and the "
                             "prediction type cannot change on resume)",
                             path, names[k], v, wants[k]);
    }
    return LOCO_OK;
}

static loco_status load_state(trainer *tr, const char *out_dir, const loco_train_params *p) {
    char *path = join2(out_dir, STATE_NAME);
    if (!path) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_tensors *f;
    loco_status s = loco_tensors_open(path, &f);
    if (s) {
        free(path);
        return s;
    }
    s = check_state_betas(f, path, p);
    const graph *u = &tr->u;
    float *bufs[4] = {tr->w, tr->m, tr->v, tr->ema};
    const char *pre[4] = {"w.", "m.", "v.", "ema."};
    char nm[STATE_NAME_CAP];
    for (int k = 0; k < 4 && !s; k++)
        for (int i = 0; i < u->n_params && !s; i++) {
            snprintf(nm, sizeof nm, "%s%s", pre[k], u->params[i].name);
            s = read_exact(f, path, nm, LOCO_DTYPE_F32, u->params[i].numel * 4, bufs[k] + u->params[i].off);
        }
    if (!s) s = read_exact(f, path, "step", LOCO_DTYPE_I64, 8, &tr->step);
    if (!s) s = read_exact(f, path, "rng", LOCO_DTYPE_U8, sizeof tr->rng.s, tr->rng.s);
    if (!s && tr->step < 0) s = loco_fail(LOCO_E_FORMAT, "%s: negative step", path);
    loco_tensors_close(f);
    free(path);
    return s;
}

/* ---- the loop -------------------------------------------------------------- */

int loco_train_timestep(loco_rng *r, int T, double share, int lo, int hi) {
    if (!(share > 0)) return (int)(loco_rng_next(r) % (uint64_t)T);
    const int focus = loco_rng_uniform(r) < share;
    const uint64_t a = focus ? (uint64_t)lo : 0, n = focus ? (uint64_t)(hi - lo + 1) : (uint64_t)T;
    return (int)(a + loco_rng_next(r) % n);
}

double loco_train_loss(const float *out, const float *target, int B, int C, int H, int W, float w, int levels,
                       float *cot, float *scratch, double *mse) {
    const size_t n = (size_t)B * C * H * W;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        float d = out[i] - target[i];
        sum += (double)d * d;
        cot[i] = d; /* the differences first; scaled below */
    }
    *mse = sum / (double)n;
    double obj = *mse;
    if (w > 0 && levels > 0) {
        /* per level, each block's mean difference P; the objective's gradient
         * is 2/n (d_i + w * sum_l P_l(i)), since a level's mean over its
         * n / s^2 blocks of P^2 has the gradient 2 P s^2 / n / s^2 */
        float *acc = scratch;
        memset(acc, 0, n * sizeof(float));
        for (int l = 1; l <= levels; l++) {
            const int sz = 1 << l, hb = H / sz, wb = W / sz;
            double lsum = 0;
            for (size_t pl = 0; pl < (size_t)B * C; pl++) {
                const float *dp = cot + pl * H * W;
                float *ap = acc + pl * H * W;
                for (int by = 0; by < hb; by++)
                    for (int bx = 0; bx < wb; bx++) {
                        double m = 0;
                        for (int y = by * sz; y < (by + 1) * sz; y++)
                            for (int x = bx * sz; x < (bx + 1) * sz; x++) m += dp[(size_t)y * W + x];
                        m /= (double)sz * sz;
                        lsum += m * m;
                        for (int y = by * sz; y < (by + 1) * sz; y++)
                            for (int x = bx * sz; x < (bx + 1) * sz; x++) ap[(size_t)y * W + x] += (float)m;
                    }
            }
            obj += (double)w * lsum / ((double)B * C * hb * wb);
        }
        for (size_t i = 0; i < n; i++) cot[i] += w * acc[i];
    }
    const float g = 2.0f / (float)n;
    for (size_t i = 0; i < n; i++) cot[i] *= g;
    return obj;
}

/* the learning rate's factor at step k (1-based): 1, or the linear decay
 * over the last lr_decay_steps steps before lr_decay_end (never below
 * 1 / (lr_decay_steps + 1), also past the end) */
static float lr_decay_factor(const loco_train_params *p, int64_t k) {
    const int64_t n = p->lr_decay_steps, end = p->lr_decay_end > 0 ? p->lr_decay_end : p->steps;
    if (n <= 0 || k <= end - n) return 1.0f;
    int64_t left = end - k + 1;
    if (left < 1) left = 1;
    return (float)((double)left / (double)(n + 1));
}

loco_status loco_train(const loco_train_params *p) {
    if (!p || !p->config_path || !p->data || !p->out_dir)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: config, data and output folder are required");
    if (p->batch < 1 || p->batch > 4096) return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: batch %d not in 1..4096", p->batch);
    if (p->steps < 1) return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: steps %d must be >= 1", p->steps);
    if (!(p->lr > 0) || !isfinite(p->lr)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: lr must be > 0");
    if (!(p->ema >= 0 && p->ema < 1)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: ema must be in [0, 1)");
    if (!(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1) || !(p->adam_eps > 0) ||
        !(p->weight_decay >= 0) || p->warmup < 0 || p->save_every < 0)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: bad optimiser parameters");
    const int decay_end = p->lr_decay_end > 0 ? p->lr_decay_end : p->steps;
    if (p->lr_decay_steps < 0 || p->lr_decay_end < 0 || p->lr_decay_steps > decay_end)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "train: lr_decay_steps %d must be in 0..%d (the decay's end, lr_decay_end %d or steps %d)",
                         p->lr_decay_steps, decay_end, p->lr_decay_end, p->steps);
    if (!(p->t_focus_share >= 0 && p->t_focus_share <= 1))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: t_focus_share %g must be in [0, 1]", (double)p->t_focus_share);
    if (p->t_focus_share > 0 && !(p->t_focus_lo >= 0 && p->t_focus_lo <= p->t_focus_hi && p->t_focus_hi <= 999))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: t_focus_lo %d and t_focus_hi %d must satisfy 0 <= lo <= hi <= 999",
                         p->t_focus_lo, p->t_focus_hi);
    if (!(p->ms_weight >= 0) || !isfinite(p->ms_weight) || p->ms_levels < 0 || p->ms_levels > 12)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: ms_weight %g must be >= 0 and ms_levels %d in 0..12",
                         (double)p->ms_weight, p->ms_levels);
    if ((int)p->prediction < 0 || (int)p->prediction > 2)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: unknown prediction type %d", (int)p->prediction);
    if (p->zero_snr && p->prediction == LOCO_PRED_EPSILON)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "train: zero terminal SNR needs v_prediction or sample: an epsilon model cannot give x0 at "
                         "abar = 0");
    if (!(p->beta_start > 0 && p->beta_start < p->beta_end && p->beta_end < 1))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "train: need 0 < beta_start (%g) < beta_end (%g) < 1", p->beta_start,
                         p->beta_end);

    char *cfg_text = NULL;
    size_t cfg_len = 0;
    loco_status s = loco_read_file(p->config_path, &cfg_text, &cfg_len, TRAIN_MAX_CONFIG);
    if (s) return s;
    trainer tr;
    memset(&tr, 0, sizeof tr);
    train_data data;
    memset(&data, 0, sizeof data);
    schedule sched = {0};
    graph_train *ut = NULL;
    float *x = NULL, *noise = NULL, *epsh = NULL, *t = NULL, *target = NULL, *ms_scratch = NULL;
    unet_config cfg;
    int built = 0;
    if ((s = unet_config_parse(&cfg, cfg_text, cfg_len, p->config_path))) goto done;
    if ((s = unet2d_build(&tr.u, &cfg))) goto done;
    graph_set_winograd(&tr.u, p->winograd);
    /* OpenBLAS tiles, as when the shipped models were trained: a README's
     * training command gives its weights bit for bit (process-wide) */
    ops_gemm_dnnl = 0;
    built = 1;
    if (cfg.in_ch != cfg.out_ch) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "train: %s prediction needs out_channels == in_channels (%d, %d)",
                      pred_names[p->prediction], cfg.out_ch,
                      cfg.in_ch);
        goto done;
    }
    if (p->ms_weight > 0 && ((cfg.height | cfg.width) & ((1 << p->ms_levels) - 1))) {
        s = loco_fail(LOCO_E_INVALID_ARGUMENT, "train: ms_levels %d: blocks of %d do not divide the %dx%d images of %s",
                      p->ms_levels, 1 << p->ms_levels, cfg.height, cfg.width, p->config_path);
        goto done;
    }
    if ((s = data_open(&data, p, &cfg))) goto done;
    if ((s = schedule_make_ex(&sched, train_kind(p), 1000, p->beta_start, p->beta_end, p->zero_snr))) goto done;
    size_t P = tr.u.total_params;
    size_t per = (size_t)cfg.in_ch * (size_t)cfg.height * (size_t)cfg.width, n = per * (size_t)p->batch;
    tr.w = loco_calloc(P, sizeof(float));
    tr.m = loco_calloc(P, sizeof(float));
    tr.v = loco_calloc(P, sizeof(float));
    tr.ema = loco_calloc(P, sizeof(float));
    tr.grad = loco_calloc(P, sizeof(float));
    x = loco_malloc(n * sizeof(float));
    noise = loco_malloc(n * sizeof(float));
    epsh = loco_malloc(n * sizeof(float));
    t = loco_malloc((size_t)p->batch * sizeof(float));
    /* the target: the noise itself for eps prediction, else its own buffer */
    target = p->prediction == LOCO_PRED_EPSILON ? noise : loco_malloc(n * sizeof(float));
    if (p->ms_weight > 0) ms_scratch = loco_malloc(n * sizeof(float));
    if (!tr.w || !tr.m || !tr.v || !tr.ema || !tr.grad || !x || !noise || !epsh || !t || !target ||
        (p->ms_weight > 0 && !ms_scratch)) {
        s = loco_fail(LOCO_E_NOMEM, "train: out of memory for %zu parameters, batch %d", P, p->batch);
        goto done;
    }
    if (p->resume) {
        if ((s = load_state(&tr, p->out_dir, p))) goto done;
    } else {
        loco_rng_seed(&tr.rng, p->seed);
        graph_init_random(&tr.u, tr.w, loco_rng_next(&tr.rng));
        memcpy(tr.ema, tr.w, P * sizeof(float));
    }
    /* the network reads its parameters from u.pdata: point it at the raw weights */
    free(tr.u.pdata);
    tr.u.pdata = tr.w;
    if ((s = graph_train_new(&tr.u, p->batch, &ut))) goto done;

    const int T = sched.T;
    const double t0 = loco_now();
    int64_t first = tr.step;
    while (tr.step < p->steps) {
        /* batch: image indices, flips, timesteps, noise, in that order */
        for (int b = 0; b < p->batch; b++) {
            int idx = (int)(loco_rng_next(&tr.rng) % (uint64_t)data.n);
            int fl = p->flip ? (int)(loco_rng_next(&tr.rng) >> 63) : 0;
            if ((s = data_get(&data, idx, fl, x + (size_t)b * per))) goto done;
            t[b] = (float)loco_train_timestep(&tr.rng, T, p->t_focus_share, p->t_focus_lo, p->t_focus_hi);
        }
        for (size_t i = 0; i < n; i++) noise[i] = (float)loco_rng_normal(&tr.rng);
        for (int b = 0; b < p->batch; b++) {
            float ab = sched.alphas_cumprod[(int)t[b]], sa = sqrtf(ab), sb = sqrtf(1.0f - ab);
            float *xb = x + (size_t)b * per;
            const float *nb = noise + (size_t)b * per;
            float *tg = target + (size_t)b * per;
            if (p->prediction != LOCO_PRED_EPSILON) /* v or x0, before x0 is noised */
                for (size_t i = 0; i < per; i++) tg[i] = param_target((pred_type)p->prediction, sa, sb, xb[i], nb[i]);
            for (size_t i = 0; i < per; i++) xb[i] = sa * xb[i] + sb * nb[i];
        }
        threads_for_work(tr.u.flops);
        if ((s = graph_train_forward(ut, x, t, epsh))) goto done;
        /* the cotangent of the output, in place */
        double loss;
        const double obj = loco_train_loss(epsh, target, p->batch, cfg.in_ch, cfg.height, cfg.width, p->ms_weight,
                                           p->ms_levels, epsh, ms_scratch, &loss);
        if (!isfinite(loss) || !isfinite(obj)) {
            s = loco_fail(LOCO_E_NUMERIC, "train: loss is not finite at step %lld", (long long)tr.step + 1);
            goto done;
        }
        memset(tr.grad, 0, P * sizeof(float));
        if ((s = graph_train_backward(ut, epsh, tr.grad, NULL))) goto done;

        /* AdamW, then the EMA */
        int64_t k = tr.step + 1;
        float lr = p->lr;
        if (p->warmup > 0 && k < p->warmup) lr = p->lr * (float)k / (float)p->warmup;
        lr *= lr_decay_factor(p, k);
        /* EMA decay as diffusers' EMAModel: min(ema, (1 + k) / (10 + k)) */
        float de = (float)((1.0 + (double)k) / (10.0 + (double)k));
        if (de > p->ema) de = p->ema;
        const float b1 = p->beta1, b2 = p->beta2, ae = p->adam_eps, wd = p->weight_decay;
        const float c1 = (float)(1.0 - pow(b1, (double)k)), c2 = (float)(1.0 - pow(b2, (double)k));
        float *w = tr.w, *m = tr.m, *v = tr.v, *e = tr.ema, *gr = tr.grad;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < P; i++) {
            float gi = gr[i];
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            float mh = m[i] / c1, vh = v[i] / c2;
            w[i] -= lr * (mh / (sqrtf(vh) + ae) + wd * w[i]);
            e[i] = de * e[i] + (1.0f - de) * w[i];
        }
        tr.step = k;
        if (p->losses) p->losses[k - 1] = (float)loss;
        if (p->progress) {
            double dt = loco_now() - t0;
            p->progress((int)k, p->steps, (float)loss, dt > 0 ? (double)(k - first) * p->batch / dt : 0, p->user);
        }
        if ((p->save_every > 0 && k % p->save_every == 0) || k == p->steps)
            if ((s = save_all(&tr, p, cfg_text, cfg_len))) goto done;
    }
    if (first >= p->steps) s = save_all(&tr, p, cfg_text, cfg_len); /* nothing to do: still write the folder */
done:
    graph_train_free(ut);
    if (built) {
        if (tr.u.pdata == tr.w) tr.u.pdata = NULL;
        graph_free(&tr.u);
    }
    loco_free(tr.w);
    loco_free(tr.m);
    loco_free(tr.v);
    loco_free(tr.ema);
    loco_free(tr.grad);
    loco_free(x);
    loco_free(noise);
    loco_free(epsh);
    loco_free(t);
    if (target != noise) loco_free(target);
    loco_free(ms_scratch);
    loco_free(data.pix);
    schedule_free(&sched);
    free(cfg_text);
    return s;
}
