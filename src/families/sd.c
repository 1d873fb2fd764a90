/* sd.c - the Stable Diffusion family: a diffusers pipeline folder
 * (model_index.json, unet/, text_encoder/, tokenizer/, vae/, scheduler/) as
 * a denoiser of latents whose conditioning is the prompts. The prediction is
 * the classifier-free-guided eps the pipeline and the T-LOCO authors use:
 *   eps = eps(uncond) + g (eps(prompt) - eps(uncond)) [+ g_e (eps(edit) - eps(uncond))]
 * = a weighted sum of UNet evaluations, one per branch; its Jacobian products
 * are the same weighted sums of each branch's (one linearisation each). */
#define _POSIX_C_SOURCE 200809L
#include "families/graph_denoiser.h"
#include "families/sd.h"
#include "families/sd_files.h"
#include "families/sd_text.h"
#include "families/sd_unet.h"
#include "families/sd_vae.h"
#include "graph/lin.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD_MAX_BRANCHES 3

typedef struct sd_family {
    graph_denoiser *gd;  /* the UNet, its graph conditioned on [text_dim, 1, text_len] */
    sd_unet_config ucfg;
    loco_tokenizer *tok;
    sd_text *text;
    sd_vae *vae;
    int text_len, text_dim;
} sd_family;

/* the guided prediction: sum_k w[k] UNet(x, t, ctx[k]) */
typedef struct sd_cond {
    int K;
    float w[SD_MAX_BRANCHES];
    float *ctx;          /* [K, text_dim, text_len] channels first, owned */
    size_t ctx_floats;   /* per branch                                    */
} sd_cond;

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* ======================================================================== */
/* Conditioning                                                             */
/* ======================================================================== */

static void cond_free(void *p) {
    sd_cond *c = p;
    if (!c) return;
    free(c->ctx);
    free(c);
}

static loco_status cond_new(void *self, const loco_cond_params *p, void **out) {
    sd_family *f = self;
    *out = NULL;
    const char *prompts[SD_MAX_BRANCHES];
    float w[SD_MAX_BRANCHES];
    int K = 0;
    const float g = p->guidance, ge = p->edit_prompt ? p->edit_guidance : 0.0f;
    /* eps = (1 - g - ge) eps_u + g eps_c + ge eps_e; a branch of weight 0 is
     * not evaluated */
    if (1.0f - g - ge != 0.0f) {
        prompts[K] = p->negative_prompt ? p->negative_prompt : "";
        w[K++] = 1.0f - g - ge;
    }
    if (g != 0.0f) {
        prompts[K] = p->prompt;
        w[K++] = g;
    }
    if (p->edit_prompt && ge != 0.0f) {
        prompts[K] = p->edit_prompt;
        w[K++] = ge;
    }
    if (K == 0) return loco_fail(LOCO_E_INVALID_ARGUMENT, "the guidance weights cancel: every branch has weight 0");
    const int T = f->text_len, D = f->text_dim;
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)K * T);
    float *emb = malloc(sizeof(float) * (size_t)K * T * D);
    sd_cond *c = calloc(1, sizeof *c);
    loco_status s = ids && emb && c ? LOCO_OK : loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!s && loco_tokenizer_max_length(f->tok) != T)
        s = loco_fail(LOCO_E_SHAPE, "the tokenizer pads to %d tokens but the text encoder takes %d",
                      loco_tokenizer_max_length(f->tok), T);
    for (int k = 0; !s && k < K; k++) s = loco_tokenize(f->tok, prompts[k], ids + (size_t)k * T, NULL);
    if (!s) s = sd_text_encode(f->text, K, ids, emb);
    if (!s && !(c->ctx = malloc(sizeof(float) * (size_t)K * T * D))) s = loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!s) {
        c->K = K;
        c->ctx_floats = (size_t)T * D;
        memcpy(c->w, w, sizeof w);
        for (int k = 0; k < K; k++) /* [T, D] token-major -> [D, T] */
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++)
                    c->ctx[(size_t)k * T * D + (size_t)d * T + t] = emb[(size_t)k * T * D + (size_t)t * D + d];
        *out = c;
        c = NULL;
    }
    cond_free(c);
    free(ids);
    free(emb);
    return s;
}

/* ======================================================================== */
/* Prediction and linearisation                                             */
/* ======================================================================== */

static loco_status predict(void *self, int B, const float *x, const float *t, const void *cond, float *y,
                           act_tap_fn tap, void *tap_user) {
    sd_family *f = self;
    const sd_cond *c = cond;
    if (!c) return loco_fail(LOCO_E_INVALID_ARGUMENT, "Stable Diffusion needs a prompt");
    const int K = c->K;
    const size_t n = (size_t)f->gd->in_ch * f->gd->height * f->gd->width;
    float *xr = malloc(sizeof(float) * n * (size_t)B * K), *yr = malloc(sizeof(float) * n * (size_t)B * K);
    float *tr = malloc(sizeof(float) * (size_t)B * K), *cr = malloc(sizeof(float) * c->ctx_floats * (size_t)B * K);
    loco_status s = xr && yr && tr && cr ? LOCO_OK : loco_fail(LOCO_E_NOMEM, "out of memory for the guidance batch");
    if (!s) {
        for (int b = 0; b < B; b++)
            for (int k = 0; k < K; k++) {
                const size_t i = (size_t)b * K + k;
                memcpy(xr + i * n, x + (size_t)b * n, sizeof(float) * n);
                tr[i] = t[b];
                memcpy(cr + i * c->ctx_floats, c->ctx + (size_t)k * c->ctx_floats, sizeof(float) * c->ctx_floats);
            }
        s = gd_predict(f->gd, B * K, xr, tr, cr, yr, tap, tap_user);
    }
    if (!s)
        for (int b = 0; b < B; b++)
            for (size_t j = 0; j < n; j++) {
                float acc = 0;
                for (int k = 0; k < K; k++) acc += c->w[k] * yr[((size_t)b * K + k) * n + j];
                y[(size_t)b * n + j] = acc;
            }
    free(xr);
    free(yr);
    free(tr);
    free(cr);
    return s;
}

typedef struct sd_lin {
    int K;
    float w[SD_MAX_BRANCHES];
    void *l[SD_MAX_BRANCHES];
    float *y;            /* the guided prediction at the point [n] */
    size_t n;
    float *tmp;          /* [k, n] */
    size_t tmp_floats;
} sd_lin;

static void lin_free(void *p) {
    sd_lin *L = p;
    if (!L) return;
    for (int k = 0; k < L->K; k++) gd_lin_free(L->l[k]);
    free(L->y);
    free(L->tmp);
    free(L);
}

static loco_status linearize(void *self, const float *x, float t, const void *cond, void **out) {
    sd_family *f = self;
    const sd_cond *c = cond;
    *out = NULL;
    if (!c) return loco_fail(LOCO_E_INVALID_ARGUMENT, "Stable Diffusion needs a prompt");
    sd_lin *L = calloc(1, sizeof *L);
    if (!L) return loco_fail(LOCO_E_NOMEM, "out of memory");
    L->n = (size_t)f->gd->in_ch * f->gd->height * f->gd->width;
    L->y = calloc(L->n, sizeof(float));
    loco_status s = L->y ? LOCO_OK : loco_fail(LOCO_E_NOMEM, "out of memory");
    for (int k = 0; !s && k < c->K; k++) {
        s = gd_linearize(f->gd, x, t, c->ctx + (size_t)k * c->ctx_floats, &L->l[k]);
        if (s) break;
        L->K = k + 1;
        L->w[k] = c->w[k];
        const float *yk = gd_lin_output(L->l[k]);
        for (size_t j = 0; j < L->n; j++) L->y[j] += c->w[k] * yk[j];
    }
    if (s) {
        lin_free(L);
        return s;
    }
    *out = L;
    return LOCO_OK;
}

static const float *lin_output(const void *p) { return ((const sd_lin *)p)->y; }

static loco_status reserve_tmp(sd_lin *L, int k) {
    size_t need = (size_t)k * L->n;
    if (need <= L->tmp_floats) return LOCO_OK;
    free(L->tmp);
    L->tmp_floats = 0;
    if (!(L->tmp = loco_malloc(need * sizeof(float))))
        return loco_fail(LOCO_E_NOMEM, "k = %d vectors: out of memory", k);
    L->tmp_floats = need;
    return LOCO_OK;
}

/* out [k, n] = sum over branches of w * (branch product) */
static loco_status combine(sd_lin *L, int k, const float *in, float *out, int vjp) {
    loco_status s = reserve_tmp(L, k);
    const size_t tot = (size_t)k * L->n;
    for (int b = 0; !s && b < L->K; b++) {
        s = vjp ? gd_vjp(L->l[b], k, in, L->tmp) : gd_jvp(L->l[b], k, in, L->tmp);
        if (s) break;
        for (size_t j = 0; j < tot; j++) out[j] = (b ? out[j] : 0.0f) + L->w[b] * L->tmp[j];
    }
    return s;
}

static loco_status jvp(void *p, int k, const float *V, float *JY) { return combine(p, k, V, JY, 0); }
static loco_status vjp(void *p, int k, const float *U, float *UJ) { return combine(p, k, U, UJ, 1); }

static size_t lin_bytes(const void *p, int k) {
    const sd_lin *L = p;
    size_t b = 0;
    for (int i = 0; i < L->K; i++) b += gd_lin_bytes(L->l[i], k);
    return b + (k ? (size_t)k * L->n * sizeof(float) : L->n * sizeof(float));
}

/* ======================================================================== */
/* Info                                                                     */
/* ======================================================================== */

static void info(const void *self, denoiser_info *in) {
    const sd_family *f = self;
    gd_info(f->gd, in);
    in->family = "StableDiffusion";
    sd_vae_sizes sz;
    sd_vae_get_sizes(f->vae, &sz);
    in->image_ch = sz.out_ch;
    in->image_height = sz.height;
    in->image_width = sz.width;
    /* the T-LOCO authors' Stable Diffusion settings */
    in->edit_t = 0.7f;
    in->edit_boost_t = 0.0f;
}

static void describe(const void *self, sbuf *b) {
    const sd_family *f = self;
    const sd_unet_config *c = &f->ucfg;
    const graph *g = &f->gd->g;
    sb_printf(b, "class: Stable Diffusion (UNet2DConditionModel on %dx%dx%d latents, %dx%d images; text %d x %d)\n",
              c->in_ch, c->height, c->width, c->height * sd_vae_downsample_factor(f->vae),
              c->width * sd_vae_downsample_factor(f->vae), f->text_len, f->text_dim);
    sb_printf(b, "unet parameters: %lld (%.2f M); attention heads per block:", (long long)g->total_params,
              g->total_params / 1e6);
    for (int i = 0; i < c->n_blocks; i++) sb_printf(b, " %d", c->heads[i]);
    sb_printf(b, "; %s projections\n", c->linear_proj ? "linear" : "1x1 conv");
    for (int i = 0; i < c->n_blocks; i++)
        sb_printf(b, "  down_blocks.%d: %-21s %5d ch\n", i, c->down_xattn[i] ? "CrossAttnDownBlock2D" : "DownBlock2D",
                  c->boc[i]);
    sb_printf(b, "vae: scaling factor %g, %dx downsampling\n", (double)sd_vae_scaling_factor(f->vae),
              sd_vae_downsample_factor(f->vae));
    gd_describe_costs(f->gd, b);
}

static struct graph *graph_of(void *self) { return &((sd_family *)self)->gd->g; }

/* ======================================================================== */
/* The decoder: latents (as the pipeline holds them) to images in [-1, 1]   */
/* ======================================================================== */

static loco_status decode(void *self, int B, const float *z, float *img) {
    return sd_vae_decode(((sd_family *)self)->vae, B, z, img);
}

static loco_status encode(void *self, int B, const float *img, float *z) {
    return sd_vae_encode(((sd_family *)self)->vae, B, img, z);
}

static loco_status dec_linearize(void *self, const float *z, void **lin) {
    return graph_lin_new(sd_vae_decoder(((sd_family *)self)->vae), z, 0.0f, NULL, (graph_lin **)lin);
}

static const float *dec_output(const void *lin) { return graph_lin_output(lin); }
/* The decoder's products: graph_lin takes the k vectors in groups under
 * graph_lin_work_budget (at 512x512 a vector's tangents through the decoder
 * take ~0.6 GB, so k = 5 at once would add 3 GB to the record). */
static loco_status dec_jvp(void *lin, int k, const float *V, float *JV) { return graph_lin_jvp(lin, k, V, JV); }
static loco_status dec_vjp(void *lin, int k, const float *U, float *UJ) { return graph_lin_vjp(lin, k, U, UJ); }
static void dec_free(void *lin) { graph_lin_free(lin); }

static void family_free(void *self) {
    sd_family *f = self;
    if (!f) return;
    gd_free(f->gd);
    loco_tokenizer_free(f->tok);
    sd_text_free(f->text);
    sd_vae_free(f->vae);
    free(f);
}

static const denoiser_vtable vtable = {"StableDiffusion", predict,     linearize, lin_output, jvp,      vjp,
                                       lin_bytes,         lin_free,    info,      describe,   family_free,
                                       graph_of,          cond_new,    cond_free, decode,     encode,  dec_linearize,
                                       dec_output,        dec_jvp,     dec_vjp,   dec_free};

/* ======================================================================== */
/* Opening                                                                  */
/* ======================================================================== */

/* model_index.json names the components loco reads */
loco_status sd_check_index(const char *path) {
    char *text;
    size_t len;
    loco_status s = loco_read_file(path, &text, &len, 1 << 20);
    if (s) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return loco_fail(LOCO_E_FORMAT, "%s: not a JSON object", path);
    }
    static const char *const comp[4][2] = {{"unet", "UNet2DConditionModel"},
                                           {"vae", "AutoencoderKL"},
                                           {"text_encoder", "CLIPTextModel"},
                                           {"tokenizer", "CLIPTokenizer"}};
    for (int i = 0; i < 4 && !s; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, comp[i][0]);
        const cJSON *cls = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, 1) : NULL;
        if (!cJSON_IsString(cls))
            s = loco_fail(LOCO_E_FORMAT, "%s: no '%s' component (a [library, class] pair)", path, comp[i][0]);
        else if (strcmp(cls->valuestring, comp[i][1]) != 0 &&
                 !(i == 3 && strcmp(cls->valuestring, "CLIPTokenizerFast") == 0))
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: component '%s' is a %s (loco reads %s)", path, comp[i][0],
                          cls->valuestring, comp[i][1]);
    }
    cJSON_Delete(root);
    return s;
}

static loco_status open_sd(const char *path, const loco_open_params *p, denoiser *d, schedule *sched) {
    char *dir;
    if (loco_is_dir(path)) dir = strdup(path);
    else {
        const char *slash = strrchr(path, '/');
        dir = !slash ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    }
    sd_family *f = calloc(1, sizeof *f);
    char *index = dir ? join(dir, "model_index.json") : NULL, *unet_dir = dir ? join(dir, "unet") : NULL;
    char *ucfg = dir ? join(dir, "unet/config.json") : NULL, *tdir = dir ? join(dir, "text_encoder") : NULL;
    char *tokdir = dir ? join(dir, "tokenizer") : NULL, *vdir = dir ? join(dir, "vae") : NULL;
    char *sdir = dir ? join(dir, "scheduler/scheduler_config.json") : NULL, *wpath = NULL;
    graph g = {0};
    loco_status s = f && index && unet_dir && ucfg && tdir && tokdir && vdir && sdir
                        ? LOCO_OK
                        : loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!s) s = sd_check_index(index);
    if (!s) {
        char *text;
        size_t len;
        if (!(s = loco_read_file(ucfg, &text, &len, 1 << 20))) {
            s = sd_unet_config_parse(&f->ucfg, text, len, ucfg);
            free(text);
        }
    }
    if (!s) s = sd_text_open(tdir, &f->text);
    if (!s) s = loco_tokenizer_open(tokdir, &f->tok);
    if (!s) {
        f->text_len = sd_text_length(f->text);
        f->text_dim = sd_text_width(f->text);
        if (f->text_dim != f->ucfg.cross_dim)
            s = loco_fail(LOCO_E_SHAPE,
                          "%s: the text encoder's width (hidden_size %d) is not the UNet's cross_attention_dim (%d)",
                          dir, f->text_dim, f->ucfg.cross_dim);
    }
    /* the latent size: from --image-size and the VAE's factor, else the
     * UNet's sample_size */
    if (!s) s = sd_vae_open(vdir, &f->vae);
    if (!s && p->image_size) {
        const int fct = sd_vae_downsample_factor(f->vae);
        if (p->image_size % (fct << (f->ucfg.n_blocks - 1)))
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "image size %d is not a multiple of %d (the VAE's %dx times the UNet's "
                                                   "%d halvings)",
                          p->image_size, fct << (f->ucfg.n_blocks - 1), fct, f->ucfg.n_blocks - 1);
        else f->ucfg.height = f->ucfg.width = p->image_size / fct;
    }
    if (!s && p->image_size) {
        sd_vae_free(f->vae);
        f->vae = NULL;
        s = sd_vae_open_sized(vdir, p->image_size, p->image_size, &f->vae);
    }
    f->ucfg.text_len = f->text_len;
    if (!s) s = sd_unet_build(&g, &f->ucfg);
    if (!s) s = sd_weights_locate(unet_dir, 0, &wpath);
    if (!s) s = graph_load_weights(&g, wpath);
    if (!s) {
        s = loco_check_file(sdir);
        if (s == LOCO_OK) s = schedule_from_json(sched, sdir);
        else if (s == LOCO_E_NOT_FOUND) s = loco_fail(LOCO_E_NOT_FOUND, "%s: no scheduler/scheduler_config.json", dir);
    }
    if (!s) s = gd_new(&g, NULL, "StableDiffusion", &f->gd);
    if (!s) {
        f->gd->n_blocks = f->ucfg.n_blocks;
        d->vt = &vtable;
        d->self = f;
        f = NULL;
    }
    graph_free(&g);
    family_free(f);
    free(dir);
    free(index);
    free(unet_dir);
    free(ucfg);
    free(tdir);
    free(tokdir);
    free(vdir);
    free(sdir);
    free(wpath);
    return s;
}

const family_entry family_sd = {"StableDiffusion", open_sd, sd_init_random, sd_convert};
