/* sd_text.c - Stable Diffusion's text encoder, transformers' CLIPTextModel:
 * config.json parsed strictly (types, ranges, duplicates, the architecture),
 * weights read by name with every dtype and shape checked, and the forward
 * pass to the last hidden state on channels-first [hidden, T] buffers with
 * the ops of ops/layernorm.c, ops/mha.c and ops/activation.c:
 *   x = token_embedding[ids] + position_embedding[0..T-1]
 *   per layer: x += out_proj(causal self-attention(layer_norm1(x)))
 *              x += fc2(act(fc1(layer_norm2(x))))
 *   y = final_layer_norm(x), written token-major [T, hidden]. */
#include "families/json_cfg.h"
#include "families/sd_files.h"
#include "families/sd_text.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* config.json                                                              */
/* ======================================================================== */

/* A string key, absent -> def; must be a string. */
static loco_status cfg_str(const cfg_ctx *c, const char *key, const char *def, const char **out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        *out = def;
        return LOCO_OK;
    }
    if (!cJSON_IsString(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be a string", c->path, key);
    *out = v->valuestring;
    return LOCO_OK;
}

/* A key that appears twice (parsers disagree on which one wins): its name,
 * or NULL. */
static const char *const known_keys[] = {
    "architectures", "attention_dropout", "bos_token_id", "dropout", "eos_token_id", "hidden_act", "hidden_size",
    "initializer_factor", "initializer_range", "intermediate_size", "layer_norm_eps", "max_position_embeddings",
    "model_type", "num_attention_heads", "num_hidden_layers", "pad_token_id", "projection_dim", "torch_dtype",
    "transformers_version", "vocab_size",
};

/* floats a*b (*c) fit the allocator: returns the count, or 0 */
static size_t fits(size_t a, size_t b, size_t c) {
    size_t n;
    if (!loco_mul_ok(a, b, &n) || !loco_mul_ok(n, c, &n) || n > LOCO_MAX_ALLOC / sizeof(float)) return 0;
    return n;
}

loco_status sd_text_config_parse(sd_text_config *cfg, const char *text, size_t len, const char *path) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root;
    loco_status s = cfg_parse_root(text, len, path, &root);
    if (s) return s;
    cfg_ctx c = {root, path};
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((s = (expr)) != LOCO_OK) goto done;                                                                        \
    } while (0)
    /* unknown keys: warn, do not fail (newer transformers versions add keys) */
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (it->string[0] == '_') continue;
        size_t k = 0;
        for (; k < sizeof known_keys / sizeof known_keys[0]; k++)
            if (strcmp(it->string, known_keys[k]) == 0) break;
        if (k == sizeof known_keys / sizeof known_keys[0])
            loco_log(LOCO_LOG_WARN, "%s: unknown key '%s' ignored", path, it->string);
    }
    /* what the file describes: a CLIPTextModel */
    const char *str = NULL;
    TRY(cfg_str(&c, "model_type", "clip_text_model", &str));
    if (strcmp(str, "clip_text_model") != 0) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'model_type' = \"%s\" is not supported (only \"clip_text_model\")",
                      path, str);
        goto done;
    }
    const cJSON *arch = cfg_get(&c, "architectures");
    if (arch) {
        const cJSON *a0 = cJSON_GetArrayItem(arch, 0);
        if (!cJSON_IsArray(arch) || cJSON_GetArraySize(arch) != 1 || !cJSON_IsString(a0)) {
            s = loco_fail(LOCO_E_FORMAT, "%s: key 'architectures' must be an array of one string", path);
            goto done;
        }
        if (strcmp(a0->valuestring, "CLIPTextModel") != 0) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'architectures' = [\"%s\"] is not supported (only "
                          "[\"CLIPTextModel\"])", path, a0->valuestring);
            goto done;
        }
    }
    /* CLIPTextConfig's defaults for absent keys */
    TRY(cfg_int(&c, "hidden_size", 512, 1, 65536, &cfg->hidden));
    TRY(cfg_int(&c, "intermediate_size", 2048, 1, 1 << 20, &cfg->inter));
    TRY(cfg_int(&c, "num_attention_heads", 8, 1, 65536, &cfg->heads));
    TRY(cfg_int(&c, "num_hidden_layers", 12, 1, 1024, &cfg->layers));
    TRY(cfg_int(&c, "max_position_embeddings", 77, 1, 65536, &cfg->length));
    TRY(cfg_int(&c, "vocab_size", 49408, 1, 1 << 24, &cfg->vocab));
    TRY(cfg_num(&c, "layer_norm_eps", 1e-5, 0.0, 1.0, &cfg->eps));
    TRY(cfg_str(&c, "hidden_act", "quick_gelu", &str));
    if (strcmp(str, "quick_gelu") == 0) cfg->act = ACT_QUICK_GELU;
    else if (strcmp(str, "gelu") == 0) cfg->act = ACT_GELU;
    else {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'hidden_act' = \"%s\" is not supported (\"quick_gelu\", \"gelu\")",
                      path, str);
        goto done;
    }
    if (cfg->hidden % cfg->heads) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'num_attention_heads' = %d does not divide key 'hidden_size' = %d",
                      path, cfg->heads, cfg->hidden);
        goto done;
    }
    /* sizes the allocator takes: the token embedding, the attention
     * scores, the MLP's activations */
    if (!fits((size_t)cfg->vocab, (size_t)cfg->hidden, 1)) {
        s = loco_fail(LOCO_E_NOMEM, "%s: keys 'vocab_size' = %d and 'hidden_size' = %d: the token embedding is too "
                      "large", path, cfg->vocab, cfg->hidden);
        goto done;
    }
    if (!fits((size_t)cfg->length, (size_t)cfg->length, 2) ||
        !fits((size_t)cfg->length, (size_t)cfg->inter, 1)) {
        s = loco_fail(LOCO_E_NOMEM, "%s: key 'max_position_embeddings' = %d is too large for the attention scores", path,
                      cfg->length);
        goto done;
    }
done:
#undef TRY
    cJSON_Delete(root);
    return s;
}

loco_status sd_text_config_read(const char *path, sd_text_config *cfg) {
    char *text;
    size_t len;
    loco_status s = loco_read_file(path, &text, &len, 1 << 20);
    if (s) return s;
    s = sd_text_config_parse(cfg, text, len, path);
    free(text);
    return s;
}

/* ======================================================================== */
/* Weights                                                                  */
/* ======================================================================== */

typedef struct sd_text_layer {
    const float *ln1_w, *ln1_b, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w,
        *fc2_b;
} sd_text_layer;

struct sd_text {
    sd_text_config cfg;
    float *arena;
    const float *tok, *pos, *lnf_w, *lnf_b;
    sd_text_layer *L;
};

/* One expected tensor: its name, shape and place in the arena. */
typedef struct wspec {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t off;
    const float **dst;
} wspec;

typedef struct wlist {
    wspec *w;
    int n;
    size_t total;
} wlist;

/* name: text_model.encoder.layers.<layer>.<name>, or text_model.<name>
 * when layer < 0 */
static void wadd(wlist *l, const float **dst, int64_t d0, int64_t d1, int layer, const char *name) {
    wspec *w = &l->w[l->n++];
    if (layer >= 0) snprintf(w->name, sizeof w->name, "text_model.encoder.layers.%d.%s", layer, name);
    else snprintf(w->name, sizeof w->name, "text_model.%s", name);
    w->ndim = d1 ? 2 : 1;
    w->shape[0] = d0;
    w->shape[1] = d1;
    w->off = l->total;
    w->dst = dst;
    l->total += (size_t)d0 * (size_t)(d1 ? d1 : 1);
    l->total = (l->total + 15) & ~(size_t)15;
}

/* The tensors the config needs, in checkpoint order. */
static loco_status wlist_build(sd_text *te, wlist *l) {
    const sd_text_config *c = &te->cfg;
    const int h = c->hidden, I = c->inter;
    l->n = 0;
    l->total = 0;
    l->w = calloc((size_t)c->layers * 16 + 4, sizeof *l->w);
    te->L = calloc((size_t)c->layers, sizeof *te->L);
    if (!l->w || !te->L) return loco_fail(LOCO_E_NOMEM, "text encoder: out of memory");
    wadd(l, &te->tok, c->vocab, h, -1, "embeddings.token_embedding.weight");
    wadd(l, &te->pos, c->length, h, -1, "embeddings.position_embedding.weight");
    for (int i = 0; i < c->layers; i++) {
        sd_text_layer *L = &te->L[i];
        wadd(l, &L->ln1_w, h, 0, i, "layer_norm1.weight");
        wadd(l, &L->ln1_b, h, 0, i, "layer_norm1.bias");
        wadd(l, &L->wq, h, h, i, "self_attn.q_proj.weight");
        wadd(l, &L->bq, h, 0, i, "self_attn.q_proj.bias");
        wadd(l, &L->wk, h, h, i, "self_attn.k_proj.weight");
        wadd(l, &L->bk, h, 0, i, "self_attn.k_proj.bias");
        wadd(l, &L->wv, h, h, i, "self_attn.v_proj.weight");
        wadd(l, &L->bv, h, 0, i, "self_attn.v_proj.bias");
        wadd(l, &L->wo, h, h, i, "self_attn.out_proj.weight");
        wadd(l, &L->bo, h, 0, i, "self_attn.out_proj.bias");
        wadd(l, &L->ln2_w, h, 0, i, "layer_norm2.weight");
        wadd(l, &L->ln2_b, h, 0, i, "layer_norm2.bias");
        wadd(l, &L->fc1_w, I, h, i, "mlp.fc1.weight");
        wadd(l, &L->fc1_b, I, 0, i, "mlp.fc1.bias");
        wadd(l, &L->fc2_w, h, I, i, "mlp.fc2.weight");
        wadd(l, &L->fc2_b, h, 0, i, "mlp.fc2.bias");
    }
    wadd(l, &te->lnf_w, h, 0, -1, "final_layer_norm.weight");
    wadd(l, &te->lnf_b, h, 0, -1, "final_layer_norm.bias");
    return LOCO_OK;
}

loco_status sd_text_write_random(const sd_text_config *c, const char *path, uint64_t seed, loco_dtype dtype) {
    sd_text te = {.cfg = *c};
    wlist l = {0};
    float *w = NULL;
    loco_tensor_ref *refs = NULL;
    loco_status s = wlist_build(&te, &l);
    if (!s) {
        w = loco_malloc(l.total * sizeof(float) + 1);
        refs = calloc((size_t)l.n, sizeof *refs);
        if (!w || !refs) s = loco_fail(LOCO_E_NOMEM, "%s: out of memory for %zu parameters", path, l.total);
    }
    loco_rng rng;
    loco_rng_seed(&rng, seed);
    for (int i = 0; i < l.n && !s; i++) {
        const wspec *p = &l.w[i];
        const size_t numel = (size_t)p->shape[0] * (size_t)(p->ndim == 2 ? p->shape[1] : 1);
        float *dst = w + p->off;
        /* embeddings ~ U(+-0.02 sqrt 3) (CLIP's initializer_range 0.02 as a
         * spread); weights U(+-1/sqrt(fan_in)); LayerNorm weight 1, bias 0;
         * a linear bias as its weight (the entry before it) */
        const int is_ln = strstr(p->name, "layer_norm") != NULL;
        const int is_emb = strstr(p->name, "embedding") != NULL;
        double bound = is_emb ? 0.02 * sqrt(3.0)
                       : p->ndim == 2 ? 1.0 / sqrt((double)p->shape[1])
                       : i > 0 && l.w[i - 1].ndim == 2 ? 1.0 / sqrt((double)l.w[i - 1].shape[1])
                                                       : 0.0;
        for (size_t k = 0; k < numel; k++)
            dst[k] = is_ln ? (strstr(p->name, ".weight") ? 1.0f : 0.0f)
                           : (float)((2.0 * loco_rng_uniform(&rng) - 1.0) * bound);
        refs[i].name = p->name;
        refs[i].dtype = LOCO_DTYPE_F32;
        refs[i].ndim = p->ndim;
        refs[i].shape[0] = p->shape[0];
        refs[i].shape[1] = p->shape[1];
        refs[i].data = dst;
    }
    char seedbuf[32];
    snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)seed);
    const char *meta[] = {"format", "pt", "loco_init_seed", seedbuf};
    if (!s) s = loco_tensors_write_as(path, refs, (size_t)l.n, dtype, meta, 2);
    free(refs);
    free(w);
    free(l.w);
    free(te.L);
    return s;
}

static void shape_str(char *buf, size_t cap, int nd, const int64_t *sh) {
    buf[0] = 0;
    for (int d = 0; d < nd; d++) snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", d ? "," : "", (long long)sh[d]);
}

static loco_status load_weights(sd_text *te, const char *wpath) {
    wlist l = {0};
    loco_weights *f = NULL;
    char *used = NULL;
    loco_status s = wlist_build(te, &l);
    if (!s) s = loco_weights_open(wpath, &f);
    if (s) goto done;
    const size_t nf = loco_weights_count(f);
    used = calloc(nf ? nf : 1, 1);
    te->arena = loco_malloc(l.total * sizeof(float));
    if (!used || !te->arena) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory for %zu parameters", wpath, l.total);
        goto done;
    }
    for (int i = 0; i < l.n && !s; i++) {
        const wspec *w = &l.w[i];
        size_t j = 0;
        while (j < nf && strcmp(loco_weights_name(f, j), w->name) != 0) j++;
        if (j == nf) {
            s = loco_fail(LOCO_E_NOT_FOUND, "%s: tensor '%s' is missing (the config needs it)", wpath, w->name);
            break;
        }
        used[j] = 1;
        loco_dtype dt;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        if ((s = loco_weights_info(f, w->name, &dt, &nd, sh))) break;
        if (dt != LOCO_DTYPE_F32 && dt != LOCO_DTYPE_F16 && dt != LOCO_DTYPE_BF16) {
            s = loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)", wpath, w->name,
                          loco_dtype_name(dt));
            break;
        }
        int same = nd == w->ndim;
        for (int d = 0; same && d < nd; d++) same = sh[d] == w->shape[d];
        if (!same) {
            char got[160], want[64];
            shape_str(got, sizeof got, nd, sh);
            shape_str(want, sizeof want, w->ndim, w->shape);
            s = loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has shape [%s] but the config needs [%s]", wpath, w->name, got,
                          want);
            break;
        }
        if ((s = loco_weights_read_f32_into(f, w->name, te->arena + w->off,
                                            (size_t)w->shape[0] * (size_t)(w->ndim == 2 ? w->shape[1] : 1), 0)))
            break;
        *w->dst = te->arena + w->off;
    }
    for (size_t j = 0; !s && j < nf; j++) {
        const char *name = loco_weights_name(f, j);
        if (!used[j] && strcmp(name, "text_model.embeddings.position_ids") != 0)
            s = loco_fail(LOCO_E_FORMAT, "%s: unexpected tensor '%s' (not part of the CLIPTextModel the config "
                          "describes)", wpath, name);
    }
done:
    free(used);
    free(l.w);
    if (f) loco_weights_close(f);
    return s;
}

/* ======================================================================== */
/* Opening                                                                  */
/* ======================================================================== */

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void sd_text_free(sd_text *te) {
    if (!te) return;
    free(te->arena);
    free(te->L);
    free(te);
}

loco_status sd_text_open(const char *dir, sd_text **out) {
    if (!out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "sd_text_open: out is NULL");
    *out = NULL;
    if (!dir) return loco_fail(LOCO_E_INVALID_ARGUMENT, "sd_text_open: dir is NULL");
    sd_text *te = calloc(1, sizeof *te);
    char *cfg = join(dir, "config.json"), *wpath = NULL;
    loco_status s = LOCO_OK;
    if (!te || !cfg) {
        s = loco_fail(LOCO_E_NOMEM, "sd_text_open: out of memory");
        goto done;
    }
    if (!loco_file_exists(cfg)) {
        s = loco_fail(LOCO_E_NOT_FOUND, "%s: no config.json (not a diffusers text_encoder folder)", dir);
        goto done;
    }
    if ((s = sd_text_config_read(cfg, &te->cfg))) goto done;
    if ((s = sd_weights_locate(dir, 1, &wpath))) goto done;
    s = load_weights(te, wpath);
done:
    free(cfg), free(wpath);
    if (s) sd_text_free(te);
    else *out = te;
    return s;
}

const sd_text_config *sd_text_cfg(const sd_text *te) { return &te->cfg; }
int sd_text_width(const sd_text *te) { return te->cfg.hidden; }
int sd_text_length(const sd_text *te) { return te->cfg.length; }

/* ======================================================================== */
/* Forward                                                                  */
/* ======================================================================== */

/* y [M, T] = bias + W [M, K] x [K, T] */
static void dense(int M, int T, int K, const float *W, const float *bias, const float *x, float *y) {
    for (int m = 0; m < M; m++)
        for (int t = 0; t < T; t++) y[(size_t)m * T + t] = bias[m];
    gemm_f32(0, 0, M, T, K, 1.0f, W, K, x, T, 1.0f, y, T);
}

static void add_into(size_t n, float *x, const float *a) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] += a[i];
}

loco_status sd_text_encode(const sd_text *te, int B, const int64_t *ids, float *emb) {
    if (!te || !ids || !emb || B < 1)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "sd_text_encode: %s",
                         !te ? "no text encoder" : B < 1 ? "batch size below 1" : "ids or emb is NULL");
    const sd_text_config *c = &te->cfg;
    const int h = c->hidden, T = c->length, I = c->inter;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const int64_t id = ids[(size_t)b * T + t];
            if (id < 0 || id >= c->vocab)
                return loco_fail(LOCO_E_INVALID_ARGUMENT,
                                 "sd_text_encode: token id %lld at position %d of sequence %d is outside the "
                                 "vocabulary [0, %d)", (long long)id, t, b, c->vocab);
        }
    const size_t n = (size_t)h * T, nsc = mha_scratch(h, h, T, T, c->heads, 1);
    float *x = loco_malloc(n * sizeof(float)), *xn = loco_malloc(n * sizeof(float));
    float *a = loco_malloc(n * sizeof(float)), *f = loco_malloc((size_t)I * T * sizeof(float));
    float *sc = loco_malloc(nsc * sizeof(float));
    if (!x || !xn || !a || !f || !sc) {
        free(x), free(xn), free(a), free(f), free(sc);
        return loco_fail(LOCO_E_NOMEM, "sd_text_encode: out of memory for %d tokens of width %d", T, h);
    }
    /* multiply-adds per sequence: projections, MLP, scores and mixing */
    threads_for_work(2.0 * c->layers * ((double)T * (4.0 * h * h + 2.0 * h * I) + 2.0 * T * T * h));
    for (int b = 0; b < B; b++) {
        const int64_t *idb = ids + (size_t)b * T;
        for (int t = 0; t < T; t++) {
            const float *tk = te->tok + (size_t)idb[t] * h, *ps = te->pos + (size_t)t * h;
            for (int k = 0; k < h; k++) x[(size_t)k * T + t] = tk[k] + ps[k];
        }
        for (int l = 0; l < c->layers; l++) {
            const sd_text_layer *L = &te->L[l];
            const mha_params p = {L->wq, L->bq, L->wk, L->bk, L->wv, L->bv, L->wo, L->bo, c->heads, 1};
            layer_norm_fwd(1, h, T, c->eps, L->ln1_w, L->ln1_b, x, xn, NULL, NULL);
            mha_fwd(&p, 1, h, T, h, T, xn, xn, a, sc, NULL);
            add_into(n, x, a);
            layer_norm_fwd(1, h, T, c->eps, L->ln2_w, L->ln2_b, x, xn, NULL, NULL);
            dense(I, T, h, L->fc1_w, L->fc1_b, xn, f);
            act_fwd(c->act, (size_t)I * T, f, f);
            dense(h, T, I, L->fc2_w, L->fc2_b, f, a);
            add_into(n, x, a);
        }
        layer_norm_fwd(1, h, T, c->eps, te->lnf_w, te->lnf_b, x, xn, NULL, NULL);
        float *eb = emb + (size_t)b * n;
        for (int t = 0; t < T; t++)
            for (int k = 0; k < h; k++) eb[(size_t)t * h + k] = xn[(size_t)k * T + t];
    }
    free(x), free(xn), free(a), free(f), free(sc);
    return LOCO_OK;
}
