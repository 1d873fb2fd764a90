/* unet.c - UNet2DModel: config parsing, graph construction, memory plan and
 * the forward pass. The structure follows diffusers' UNet2DModel,
 * DownBlock2D/AttnDownBlock2D, UNetMidBlock2D, UpBlock2D/AttnUpBlock2D,
 * ResnetBlock2D, Downsample2D, Upsample2D and Attention; parameter names are
 * the checkpoint's keys. */
#include "unet.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* Config                                                                   */
/* ======================================================================== */

#define CFG_MAX_CH 65536
#define CFG_MAX_RES 8192

typedef struct cfg_ctx {
    const cJSON *root;
    const char *path;
} cfg_ctx;

static const cJSON *cfg_get(const cfg_ctx *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static loco_status cfg_int(const cfg_ctx *c, const char *key, int def, int lo, int hi, int *out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        *out = def;
        return LOCO_OK;
    }
    /* integral and in range before the cast (a double outside int, such as
     * 1e300 or the inf of 1e999, converts with undefined behaviour); the
     * negated test also refuses NaN */
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be an integer", c->path, key);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %.17g is outside the supported range [%d, %d]", c->path,
                         key, v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return LOCO_OK;
}

static loco_status cfg_num(const cfg_ctx *c, const char *key, double def, double lo, double hi, float *out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        *out = (float)def;
        return LOCO_OK;
    }
    if (!cJSON_IsNumber(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be a number", c->path, key);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %.17g is outside the supported range [%g, %g]", c->path,
                         key, v->valuedouble, lo, hi);
    *out = (float)v->valuedouble;
    return LOCO_OK;
}

static loco_status cfg_bool(const cfg_ctx *c, const char *key, int def, int *out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        *out = def;
        return LOCO_OK;
    }
    if (!cJSON_IsBool(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be true or false", c->path, key);
    *out = cJSON_IsTrue(v);
    return LOCO_OK;
}

/* A string key that must equal `want` when present. */
static loco_status cfg_expect_str(const cfg_ctx *c, const char *key, const char *want) {
    const cJSON *v = cfg_get(c, key);
    if (!v) return LOCO_OK;
    if (!cJSON_IsString(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be a string", c->path, key);
    if (strcmp(v->valuestring, want) != 0)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = \"%s\" is not supported (only \"%s\")", c->path, key,
                         v->valuestring, want);
    return LOCO_OK;
}

static loco_status cfg_expect_null(const cfg_ctx *c, const char *key) {
    const cJSON *v = cfg_get(c, key);
    if (!v) return LOCO_OK;
    char *s = cJSON_PrintUnformatted(v);
    loco_status st = loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %s is not supported (only null)", c->path, key,
                               s ? s : "?");
    free(s);
    return st;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A key that appears twice: parsers disagree on which one wins (cJSON the
 * first, Python's json the last), so such a config is refused. Returns the
 * name or NULL. Sorting keeps this fast on hostile files with many keys. */
static const char *cfg_duplicate_key(const cJSON *root, loco_status *s, const char *path) {
    int n = cJSON_GetArraySize(root);
    if (n < 2) return NULL;
    const char **k = malloc((size_t)n * sizeof *k);
    if (!k) {
        *s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) k[i++] = it->string;
    qsort(k, (size_t)n, sizeof *k, cmp_str_ptr);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++)
        if (strcmp(k[i - 1], k[i]) == 0) dup = k[i];
    free(k);
    return dup;
}

/* Scratch floats of one attention (heads score matrices of hw x hw) must stay
 * within the allocator's limit; computed without overflow. */
static loco_status cfg_check_attention(const unet_config *cfg, const char *where, int ch, int h, int w,
                                       const char *path) {
    int heads = ch / (cfg->head_dim ? cfg->head_dim : ch);
    size_t hw = (size_t)h * (size_t)w, floats;
    if (!loco_mul_ok(hw, hw, &floats) || !loco_mul_ok(floats, (size_t)heads, &floats) ||
        floats > LOCO_MAX_ALLOC / sizeof(float))
        return loco_fail(LOCO_E_NOMEM,
                         "%s: the attention in %s (%d head(s) over %dx%d positions) needs more than %zu bytes of "
                         "scores; key 'sample_size' (%dx%d) is too large for it",
                         path, where, heads, h, w, (size_t)LOCO_MAX_ALLOC, cfg->height, cfg->width);
    return LOCO_OK;
}

static const char *const known_keys[] = {
    "sample_size", "in_channels", "out_channels", "center_input_sample", "time_embedding_type",
    "time_embedding_dim", "freq_shift", "flip_sin_to_cos", "down_block_types", "mid_block_type",
    "up_block_types", "block_out_channels", "layers_per_block", "mid_block_scale_factor", "downsample_padding",
    "downsample_type", "upsample_type", "dropout", "act_fn", "attention_head_dim", "norm_num_groups",
    "attn_norm_num_groups", "norm_eps", "resnet_time_scale_shift", "add_attention", "class_embed_type",
    "num_class_embeds", "num_train_timesteps",
};

loco_status unet_config_parse(unet_config *cfg, const char *text, size_t len, const char *path) {
    memset(cfg, 0, sizeof *cfg);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) return loco_fail(LOCO_E_FORMAT, "%s: not valid JSON (truncated or malformed)", path);
    cfg_ctx c = {root, path};
    loco_status s = LOCO_OK;
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((s = (expr)) != LOCO_OK) goto done;                                                                        \
    } while (0)
    if (!cJSON_IsObject(root)) {
        s = loco_fail(LOCO_E_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    for (const char *q = end; q && q < text + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            s = loco_fail(LOCO_E_FORMAT, "%s: unexpected text after the JSON object (at byte %zu)", path,
                          (size_t)(q - text));
            goto done;
        }
    {
        const char *dup = cfg_duplicate_key(root, &s, path);
        if (s) goto done;
        if (dup) {
            s = loco_fail(LOCO_E_FORMAT, "%s: key '%s' appears twice", path, dup);
            goto done;
        }
    }
    const cJSON *cls = cfg_get(&c, "_class_name");
    if (cls && (!cJSON_IsString(cls) || strcmp(cls->valuestring, "UNet2DModel") != 0)) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key '_class_name' = %s%s%s is not supported (only \"UNet2DModel\")",
                      path, cJSON_IsString(cls) ? "\"" : "", cJSON_IsString(cls) ? cls->valuestring : "(not a string)",
                      cJSON_IsString(cls) ? "\"" : "");
        goto done;
    }
    /* unknown keys: warn, do not fail (newer diffusers versions add keys) */
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (it->string[0] == '_') continue;
        size_t k = 0;
        for (; k < sizeof known_keys / sizeof known_keys[0]; k++)
            if (strcmp(it->string, known_keys[k]) == 0) break;
        if (k == sizeof known_keys / sizeof known_keys[0])
            loco_log(LOCO_LOG_WARN, "%s: unknown key '%s' ignored", path, it->string);
    }
    /* sample_size: int or [h, w] */
    const cJSON *ss = cfg_get(&c, "sample_size");
    if (!ss) {
        s = loco_fail(LOCO_E_FORMAT, "%s: key 'sample_size' is missing", path);
        goto done;
    }
    if (cJSON_IsArray(ss)) {
        const cJSON *a = cJSON_GetArrayItem(ss, 0), *b = cJSON_GetArrayItem(ss, 1);
        if (cJSON_GetArraySize(ss) != 2 || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) ||
            a->valuedouble != floor(a->valuedouble) || b->valuedouble != floor(b->valuedouble)) {
            s = loco_fail(LOCO_E_FORMAT, "%s: key 'sample_size' must be an integer or [height, width]", path);
            goto done;
        }
        if (!(a->valuedouble >= 1 && a->valuedouble <= CFG_MAX_RES && b->valuedouble >= 1 &&
              b->valuedouble <= CFG_MAX_RES)) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'sample_size' = [%g, %g] is outside [1, %d]", path,
                          a->valuedouble, b->valuedouble, CFG_MAX_RES);
            goto done;
        }
        cfg->height = (int)a->valuedouble;
        cfg->width = (int)b->valuedouble;
    } else {
        TRY(cfg_int(&c, "sample_size", 0, 1, CFG_MAX_RES, &cfg->height));
        cfg->width = cfg->height;
    }
    TRY(cfg_int(&c, "in_channels", 3, 1, 1024, &cfg->in_ch));
    TRY(cfg_int(&c, "out_channels", 3, 1, 1024, &cfg->out_ch));
    TRY(cfg_bool(&c, "center_input_sample", 0, &cfg->center_input));
    TRY(cfg_expect_str(&c, "time_embedding_type", "positional"));
    TRY(cfg_bool(&c, "flip_sin_to_cos", 1, &cfg->flip_sin_to_cos));
    TRY(cfg_num(&c, "freq_shift", 0, -1e6, 1e6, &cfg->freq_shift));
    TRY(cfg_int(&c, "layers_per_block", 2, 1, 64, &cfg->layers));
    TRY(cfg_num(&c, "mid_block_scale_factor", 1, 1e-6, 1e6, &cfg->mid_scale));
    TRY(cfg_int(&c, "downsample_padding", 1, 0, 1, &cfg->downsample_padding));
    TRY(cfg_expect_str(&c, "downsample_type", "conv"));
    TRY(cfg_expect_str(&c, "upsample_type", "conv"));
    TRY(cfg_expect_str(&c, "act_fn", "silu"));
    TRY(cfg_expect_str(&c, "resnet_time_scale_shift", "default"));
    TRY(cfg_expect_null(&c, "class_embed_type"));
    TRY(cfg_expect_null(&c, "num_class_embeds"));
    {
        /* diffusers' UNet2DModel: absent -> 8; null -> one head of full width */
        const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "attention_head_dim");
        TRY(cfg_int(&c, "attention_head_dim", hd ? 0 : 8, 1, CFG_MAX_CH, &cfg->head_dim));
    }
    TRY(cfg_num(&c, "norm_eps", 1e-5, 1e-12, 1.0, &cfg->eps));
    TRY(cfg_bool(&c, "add_attention", 1, &cfg->add_attention));
    {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "norm_num_groups");
        if (g && cJSON_IsNull(g)) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'norm_num_groups' = null is not supported", path);
            goto done;
        }
    }
    TRY(cfg_int(&c, "norm_num_groups", 32, 1, CFG_MAX_CH, &cfg->groups));
    TRY(cfg_int(&c, "attn_norm_num_groups", cfg->groups, 1, CFG_MAX_CH, &cfg->attn_groups));
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "mid_block_type");
        cfg->mid_block = 1;
        if (m && cJSON_IsNull(m)) cfg->mid_block = 0;
        else TRY(cfg_expect_str(&c, "mid_block_type", "UNetMidBlock2D"));
    }
    /* block lists */
    const cJSON *boc = cfg_get(&c, "block_out_channels"), *dbt = cfg_get(&c, "down_block_types"),
                *ubt = cfg_get(&c, "up_block_types");
    {
        const cJSON *lists[3] = {boc, dbt, ubt};
        static const char *const names[3] = {"block_out_channels", "down_block_types", "up_block_types"};
        for (int i = 0; i < 3; i++)
            if (!cJSON_IsArray(lists[i])) {
                s = loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be an array%s", path, names[i],
                              lists[i] ? "" : " (it is missing)");
                goto done;
            }
    }
    int n = cJSON_GetArraySize(boc);
    if (n < 1 || n > UNET_MAX_BLOCKS) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'block_out_channels' has %d entries (1..%d supported)", path, n,
                      UNET_MAX_BLOCKS);
        goto done;
    }
    if (cJSON_GetArraySize(dbt) != n || cJSON_GetArraySize(ubt) != n) {
        s = loco_fail(LOCO_E_FORMAT, "%s: key 'block_out_channels' has %d entries, 'down_block_types' %d and "
                      "'up_block_types' %d (all three must agree)", path, n, cJSON_GetArraySize(dbt),
                      cJSON_GetArraySize(ubt));
        goto done;
    }
    cfg->n_blocks = n;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(boc, i);
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)) {
            s = loco_fail(LOCO_E_FORMAT, "%s: key 'block_out_channels'[%d] must be an integer", path, i);
            goto done;
        }
        if (!(v->valuedouble >= 1 && v->valuedouble <= CFG_MAX_CH)) { /* before the cast below */
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'block_out_channels'[%d] = %.17g is outside [1, %d]", path, i,
                          v->valuedouble, CFG_MAX_CH);
            goto done;
        }
        cfg->boc[i] = (int)v->valuedouble;
        const cJSON *d = cJSON_GetArrayItem(dbt, i), *u = cJSON_GetArrayItem(ubt, i);
        if (!cJSON_IsString(d) || !cJSON_IsString(u)) {
            s = loco_fail(LOCO_E_FORMAT, "%s: key '%s'[%d] must be a string", path,
                          cJSON_IsString(d) ? "up_block_types" : "down_block_types", i);
            goto done;
        }
        if (strcmp(d->valuestring, "DownBlock2D") == 0) cfg->down_attn[i] = 0;
        else if (strcmp(d->valuestring, "AttnDownBlock2D") == 0) cfg->down_attn[i] = 1;
        else {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'down_block_types'[%d] = \"%s\" is not supported "
                          "(DownBlock2D, AttnDownBlock2D)", path, i, d->valuestring);
            goto done;
        }
        if (strcmp(u->valuestring, "UpBlock2D") == 0) cfg->up_attn[i] = 0;
        else if (strcmp(u->valuestring, "AttnUpBlock2D") == 0) cfg->up_attn[i] = 1;
        else {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'up_block_types'[%d] = \"%s\" is not supported "
                          "(UpBlock2D, AttnUpBlock2D)", path, i, u->valuestring);
            goto done;
        }
    }
    TRY(cfg_int(&c, "time_embedding_dim", cfg->boc[0] * 4, 1, 4 * CFG_MAX_CH, &cfg->temb_dim));
    /* structural checks */
    int f = 1 << (n - 1);
    if (cfg->height % f || cfg->width % f) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'sample_size' (%dx%d) must be divisible by %d for %d blocks", path,
                      cfg->height, cfg->width, f, n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (cfg->boc[i] % cfg->groups) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'norm_num_groups' = %d does not divide block_out_channels[%d] = %d",
                          path, cfg->groups, i, cfg->boc[i]);
            goto done;
        }
        int hd = cfg->head_dim ? cfg->head_dim : cfg->boc[i];
        if ((cfg->down_attn[i] || cfg->up_attn[n - 1 - i] || (i == n - 1 && cfg->mid_block && cfg->add_attention)) &&
            cfg->boc[i] % hd) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'attention_head_dim' = %d does not divide block_out_channels[%d] = %d",
                          path, hd, i, cfg->boc[i]);
            goto done;
        }
    }
    if (cfg->mid_block && cfg->add_attention && cfg->boc[n - 1] % cfg->attn_groups) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'attn_norm_num_groups' = %d does not divide %d", path,
                      cfg->attn_groups, cfg->boc[n - 1]);
        goto done;
    }
    /* attention score memory, at each attention's resolution */
    for (int i = 0; i < n && !s; i++) {
        char where[48]; /* "down_blocks.15" at most */
        if (cfg->down_attn[i]) {
            snprintf(where, sizeof where, "down_blocks.%d", i);
            s = cfg_check_attention(cfg, where, cfg->boc[i], cfg->height >> i, cfg->width >> i, path);
        }
        if (!s && cfg->up_attn[i]) {
            int r = n - 1 - i; /* up block i works at the resolution of down block n-1-i */
            snprintf(where, sizeof where, "up_blocks.%d", i);
            s = cfg_check_attention(cfg, where, cfg->boc[r], cfg->height >> r, cfg->width >> r, path);
        }
    }
    if (!s && cfg->mid_block && cfg->add_attention)
        s = cfg_check_attention(cfg, "mid_block", cfg->boc[n - 1], cfg->height >> (n - 1), cfg->width >> (n - 1),
                                path);
done:
#undef TRY
    cJSON_Delete(root);
    return s;
}

/* ======================================================================== */
/* Graph builder                                                            */
/* ======================================================================== */

typedef struct builder {
    unet *u;
    loco_status err;
} builder;

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 1;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np) return 0;
    *p = np;
    *cap = nc;
    return 1;
}

static int add_param(builder *b, const char *name, const char *alt, int ndim, const int64_t *shape, float fan_in,
                     int is_gn_weight) {
    unet *u = b->u;
    if (b->err) return -1;
    if (!grow((void **)&u->params, &u->cap_params, u->n_params + 1, sizeof(param))) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return -1;
    }
    param *p = &u->params[u->n_params];
    memset(p, 0, sizeof *p);
    /* names come from the config's bounded indices (blocks < 16, layers <=
     * 64: at most ~50 characters); one that did not fit would be looked up
     * truncated, so it is refused */
    if ((size_t)snprintf(p->name, sizeof p->name, "%s", name) >= sizeof p->name ||
        (alt && (size_t)snprintf(p->alt, sizeof p->alt, "%s", alt) >= sizeof p->alt)) {
        b->err = loco_fail(LOCO_E_UNSUPPORTED, "parameter name '%s' is longer than %zu characters", name,
                           sizeof p->name - 1);
        return -1;
    }
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->off = u->total_params;
    p->fan_in = fan_in;
    p->is_gn_weight = is_gn_weight;
    u->total_params += p->numel;
    return u->n_params++;
}

static int add_value(builder *b, int c, int h, int w, int dep) {
    unet *u = b->u;
    if (b->err) return -1;
    if (!grow((void **)&u->values, &u->cap_values, u->n_values + 1, sizeof(value))) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return -1;
    }
    value *v = &u->values[u->n_values];
    memset(v, 0, sizeof *v);
    v->c = c;
    v->h = h;
    v->w = w;
    v->depends_on_x = dep;
    v->last_use = -1;
    return u->n_values++;
}

static node *add_node(builder *b, node_kind k, int in0, int in1, int out) {
    unet *u = b->u;
    if (b->err) return NULL;
    if (!grow((void **)&u->nodes, &u->cap_nodes, u->n_nodes + 1, sizeof(node))) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return NULL;
    }
    node *n = &u->nodes[u->n_nodes++];
    memset(n, 0, sizeof *n);
    n->kind = k;
    n->in0 = in0;
    n->in1 = in1;
    n->out = out;
    n->pw = n->pb = -1;
    return n;
}

static const value *V(builder *b, int id) { return &b->u->values[id]; }

/* weight/bias of a conv or linear; returns weight id, bias id in *pb */
static int wb(builder *b, const char *prefix, int ndim, const int64_t *wshape, float fan_in, int *pb) {
    char n1[160], n2[160]; /* a longer name is refused by add_param (n1 > param.name) */
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    int w = add_param(b, n1, NULL, ndim, wshape, fan_in, 0);
    *pb = add_param(b, n2, NULL, 1, wshape, fan_in, 0);
    return w;
}

static int conv(builder *b, const char *prefix, int in, int cout, int k, int stride, int pad_t, int pad_l, int bias2) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: add_value may realloc */
    int cin = x->c;
    int64_t ws[4] = {cout, cin, k, k};
    int pb;
    int pw = wb(b, prefix, 4, ws, (float)(cin * k * k), &pb);
    /* output size: padding after is pad_l for pad>0 convs, 1 for diffusers'
     * asymmetric (0,1,0,1) downsample padding; both give the same size */
    int pad_sum_h = k == 1 ? 0 : (stride == 1 ? 2 * pad_t : (pad_t ? 2 * pad_t : 1));
    int pad_sum_w = k == 1 ? 0 : (stride == 1 ? 2 * pad_l : (pad_l ? 2 * pad_l : 1));
    int ho = (x->h + pad_sum_h - k) / stride + 1, wo = (x->w + pad_sum_w - k) / stride + 1;
    int out = add_value(b, cout, ho, wo, x->depends_on_x);
    node *n = add_node(b, NODE_CONV, in, bias2, out);
    if (!n) return -1;
    n->pw = pw;
    n->pb = pb;
    n->g = (conv_geom){cin, cout, x->h, x->w, k, stride, pad_t, pad_l, ho, wo, 0};
    n->g.wino = conv2d_wino_ok(&n->g);
    b->u->flops += 2.0 * cout * cin * k * k * (double)ho * wo;
    return out;
}

static int group_norm(builder *b, const char *prefix, int in, int groups, float eps, int silu) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: add_value may realloc */
    char n1[160], n2[160]; /* a longer name is refused by add_param (n1 > param.name) */
    snprintf(n1, sizeof n1, "%s.weight", prefix);
    snprintf(n2, sizeof n2, "%s.bias", prefix);
    int64_t s[1] = {x->c};
    int pw = add_param(b, n1, NULL, 1, s, 0, 1);
    int pb = add_param(b, n2, NULL, 1, s, 0, 0);
    int out = add_value(b, x->c, x->h, x->w, x->depends_on_x);
    node *n = add_node(b, NODE_GN, in, -1, out);
    if (!n) return -1;
    n->pw = pw;
    n->pb = pb;
    n->groups = groups;
    n->eps = eps;
    n->silu = silu;
    return out;
}

static int linear(builder *b, const char *prefix, int in, int out_f) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: add_value may realloc */
    int64_t ws[2] = {out_f, x->c};
    int pb;
    int pw = wb(b, prefix, 2, ws, (float)x->c, &pb);
    int out = add_value(b, out_f, 1, 1, x->depends_on_x);
    node *n = add_node(b, NODE_LINEAR, in, -1, out);
    if (!n) return -1;
    n->pw = pw;
    n->pb = pb;
    b->u->flops += 2.0 * out_f * x->c;
    return out;
}

static int silu(builder *b, int in) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: add_value may realloc */
    int out = add_value(b, x->c, x->h, x->w, x->depends_on_x);
    add_node(b, NODE_SILU, in, -1, out);
    return out;
}

static int add(builder *b, int a, int c, float scale) {
    if (b->err) return -1;
    const value xv = *V(b, a), *x = &xv;
    int dep = x->depends_on_x || V(b, c)->depends_on_x;
    int out = add_value(b, x->c, x->h, x->w, dep);
    node *n = add_node(b, NODE_ADD, a, c, out);
    if (n) n->scale = scale;
    return out;
}

static int concat(builder *b, int a, int c) {
    if (b->err) return -1;
    const value xv = *V(b, a), yv = *V(b, c), *x = &xv, *y = &yv;
    int out = add_value(b, x->c + y->c, x->h, x->w, x->depends_on_x || y->depends_on_x);
    add_node(b, NODE_CONCAT, a, c, out);
    return out;
}

static int upsample(builder *b, int in) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: add_value may realloc */
    int out = add_value(b, x->c, 2 * x->h, 2 * x->w, x->depends_on_x);
    add_node(b, NODE_UPSAMPLE, in, -1, out);
    return out;
}

static int attention(builder *b, const char *prefix, int in, int head_dim, int groups, float eps, float rescale) {
    if (b->err) return -1;
    const value xv = *V(b, in), *x = &xv; /* copy: add_value may realloc */
    const int C = x->c, hw = x->h * x->w;
    static const char *const cur[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    static const char *const old[4] = {"query", "key", "value", "proj_attn"};
    int ids[10];
    char n1[160], n2[160]; /* a longer name is refused by add_param (n1 > param.name) */
    int64_t s1[1] = {C}, s2[2] = {C, C};
    snprintf(n1, sizeof n1, "%s.group_norm.weight", prefix);
    ids[0] = add_param(b, n1, NULL, 1, s1, 0, 1);
    snprintf(n1, sizeof n1, "%s.group_norm.bias", prefix);
    ids[1] = add_param(b, n1, NULL, 1, s1, 0, 0);
    for (int i = 0; i < 4; i++) {
        snprintf(n1, sizeof n1, "%s.%s.weight", prefix, cur[i]);
        snprintf(n2, sizeof n2, "%s.%s.weight", prefix, old[i]);
        ids[2 + 2 * i] = add_param(b, n1, n2, 2, s2, (float)C, 0);
        snprintf(n1, sizeof n1, "%s.%s.bias", prefix, cur[i]);
        snprintf(n2, sizeof n2, "%s.%s.bias", prefix, old[i]);
        ids[3 + 2 * i] = add_param(b, n1, n2, 1, s1, (float)C, 0);
    }
    int out = add_value(b, C, x->h, x->w, x->depends_on_x);
    node *n = add_node(b, NODE_ATTN, in, -1, out);
    if (!n) return -1;
    memcpy(n->pattn, ids, sizeof ids);
    n->groups = groups;
    n->eps = eps;
    n->heads = C / head_dim;
    n->scale = rescale;
    b->u->flops += 4 * 2.0 * C * C * hw + 2 * 2.0 * (double)hw * hw * C;
    return out;
}

/* ResnetBlock2D (default time-scale-shift): returns output value id */
static int resnet(builder *b, const char *prefix, int in, int cout, int temb_act, float out_scale) {
    const unet_config *c = &b->u->cfg;
    char p[128]; /* prefixes of bounded indices (see add_param) */
    snprintf(p, sizeof p, "%s.norm1", prefix);
    int h = group_norm(b, p, in, c->groups, c->eps, 1);
    snprintf(p, sizeof p, "%s.time_emb_proj", prefix);
    int tp = linear(b, p, temb_act, cout);
    snprintf(p, sizeof p, "%s.conv1", prefix);
    h = conv(b, p, h, cout, 3, 1, 1, 1, tp);
    snprintf(p, sizeof p, "%s.norm2", prefix);
    h = group_norm(b, p, h, c->groups, c->eps, 1);
    snprintf(p, sizeof p, "%s.conv2", prefix);
    h = conv(b, p, h, cout, 3, 1, 1, 1, -1);
    int sc = in;
    if (!b->err && V(b, in)->c != cout) {
        snprintf(p, sizeof p, "%s.conv_shortcut", prefix);
        sc = conv(b, p, in, cout, 1, 1, 0, 0, -1);
    }
    return add(b, sc, h, out_scale);
}

static void tap(builder *b, int v, const char *name) {
    if (b->err || v < 0) return;
    char *s = strdup(name);
    if (!s) {
        b->err = loco_fail(LOCO_E_NOMEM, "out of memory building the model");
        return;
    }
    b->u->values[v].tap = s;
}

static loco_status plan(unet *u);

loco_status unet_build(unet *u, const unet_config *cfg) {
    memset(u, 0, sizeof *u);
    u->cfg = *cfg;
    builder bb = {u, LOCO_OK}, *b = &bb;
    const int n = cfg->n_blocks;
    char p[128]; /* "up_blocks.15.attentions.64" at most (see add_param) */

    /* time embedding: positional projection then TimestepEmbedding */
    int te = add_value(b, cfg->boc[0], 1, 1, 0);
    add_node(b, NODE_TEMB, -1, -1, te);
    te = linear(b, "time_embedding.linear_1", te, cfg->temb_dim);
    te = silu(b, te);
    te = linear(b, "time_embedding.linear_2", te, cfg->temb_dim);
    tap(b, te, "time_embedding");
    int temb_act = silu(b, te); /* every resnet applies SiLU to emb first */

    int x = add_value(b, cfg->in_ch, cfg->height, cfg->width, 1);
    u->x_in = x;
    if (cfg->center_input) {
        int y = add_value(b, cfg->in_ch, cfg->height, cfg->width, 1);
        node *nd = add_node(b, NODE_SCALE_SHIFT, x, -1, y);
        if (nd) {
            nd->scale = 2.0f;
            nd->shift = -1.0f;
        }
        x = y;
    }
    int h = conv(b, "conv_in", x, cfg->boc[0], 3, 1, 1, 1, -1);
    tap(b, h, "conv_in");

    int skips[UNET_MAX_BLOCKS * 66];
    int ns = 0;
    skips[ns++] = h;
    for (int i = 0; i < n; i++) {
        int cout = cfg->boc[i];
        for (int l = 0; l < cfg->layers; l++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, l);
            h = resnet(b, p, h, cout, temb_act, 1.0f);
            if (cfg->down_attn[i]) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, l);
                h = attention(b, p, h, cfg->head_dim ? cfg->head_dim : cout, cfg->groups, cfg->eps, 1.0f);
            }
            skips[ns++] = h;
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", i);
            int pad = cfg->downsample_padding;
            h = conv(b, p, h, cout, 3, 2, pad, pad, -1);
            skips[ns++] = h;
        }
        snprintf(p, sizeof p, "down_blocks.%d", i);
        tap(b, h, p);
    }
    if (cfg->mid_block) {
        int cmid = cfg->boc[n - 1];
        h = resnet(b, "mid_block.resnets.0", h, cmid, temb_act, cfg->mid_scale);
        if (cfg->add_attention)
            h = attention(b, "mid_block.attentions.0", h, cfg->head_dim ? cfg->head_dim : cmid, cfg->attn_groups, cfg->eps,
                          cfg->mid_scale);
        h = resnet(b, "mid_block.resnets.1", h, cmid, temb_act, cfg->mid_scale);
        tap(b, h, "mid_block");
    }
    for (int i = 0; i < n; i++) {
        int cout = cfg->boc[n - 1 - i];
        for (int l = 0; l < cfg->layers + 1; l++) {
            h = concat(b, h, skips[--ns]);
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, l);
            h = resnet(b, p, h, cout, temb_act, 1.0f);
            if (cfg->up_attn[i]) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, l);
                h = attention(b, p, h, cfg->head_dim ? cfg->head_dim : cout, cfg->groups, cfg->eps, 1.0f);
            }
        }
        if (i < n - 1) {
            h = upsample(b, h);
            snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", i);
            h = conv(b, p, h, cout, 3, 1, 1, 1, -1);
        }
        snprintf(p, sizeof p, "up_blocks.%d", i);
        tap(b, h, p);
    }
    h = group_norm(b, "conv_norm_out", h, cfg->groups, cfg->eps, 0);
    tap(b, h, "conv_norm_out");
    h = silu(b, h);
    h = conv(b, "conv_out", h, cfg->out_ch, 3, 1, 1, 1, -1);
    u->t_out = h;
    if (b->err) {
        unet_free(u);
        return b->err;
    }
    loco_status s = plan(u);
    if (s) unet_free(u);
    return s;
}

void unet_free(unet *u) {
    for (int i = 0; i < u->n_values; i++) free((char *)u->values[i].tap);
    free(u->values);
    free(u->nodes);
    free(u->params);
    free(u->pdata);
    free(u->fwd_off);
    memset(u, 0, sizeof *u);
}

/* ======================================================================== */
/* Memory planning: first-fit offsets over lifetimes                        */
/* ======================================================================== */

void planner_init(planner *p) { memset(p, 0, sizeof *p); }

void planner_release(planner *p) {
    free(p->live);
    memset(p, 0, sizeof *p);
}

size_t planner_alloc(planner *p, size_t len, int id) {
    len = (len + 15) & ~(size_t)15; /* keep every block 64-byte aligned */
    if (p->n + 1 > p->cap) {
        int nc = p->cap ? 2 * p->cap : 64;
        plan_span *nl = realloc(p->live, sizeof(plan_span) * (size_t)nc);
        if (!nl) {
            p->oom = 1;
            return 0;
        }
        p->live = nl;
        p->cap = nc;
    }
    size_t off = 0;
    int pos = 0;
    for (; pos < p->n; pos++) {
        if (p->live[pos].off >= off + len) break;
        size_t e = p->live[pos].off + p->live[pos].len;
        if (e > off) off = e;
    }
    memmove(&p->live[pos + 1], &p->live[pos], sizeof(plan_span) * (size_t)(p->n - pos));
    p->live[pos] = (plan_span){off, len, id};
    p->n++;
    if (off + len > p->peak) p->peak = off + len;
    return off;
}

void planner_free(planner *p, int id) {
    for (int j = 0; j < p->n; j++)
        if (p->live[j].id == id) {
            memmove(&p->live[j], &p->live[j + 1], sizeof(plan_span) * (size_t)(p->n - j - 1));
            p->n--;
            return;
        }
}

size_t unet_value_size(const unet *u, int id) {
    const value *v = &u->values[id];
    return (size_t)v->c * v->h * v->w;
}

size_t unet_plan_forward(const unet *u, const char *keep, size_t *off) {
    planner pl;
    planner_init(&pl);
    off[u->x_in] = planner_alloc(&pl, unet_value_size(u, u->x_in), u->x_in);
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        off[n->out] = planner_alloc(&pl, unet_value_size(u, n->out), n->out);
        /* a node's inputs stay live while it runs: release them after */
        const int in[2] = {n->in0, n->in1};
        for (int j = 0; j < 2; j++)
            if (in[j] >= 0 && u->values[in[j]].last_use == i && in[j] != u->t_out && !(keep && keep[in[j]]))
                planner_free(&pl, in[j]);
    }
    size_t peak = pl.oom ? 0 : pl.peak;
    planner_release(&pl);
    return peak;
}

size_t unet_node_save_floats(const unet *u, int i) {
    const node *n = &u->nodes[i];
    const value *x = &u->values[n->in0 >= 0 ? n->in0 : n->out];
    if (n->kind == NODE_GN) return 2 * (size_t)n->groups;
    if (n->kind == NODE_ATTN) {
        size_t hw = (size_t)x->h * x->w;
        return 2 * (size_t)n->groups + 3 * (size_t)x->c * hw + (size_t)n->heads * hw * hw;
    }
    return 0;
}

attn_saved unet_attn_saved(const unet *u, int i, float *save) {
    const node *n = &u->nodes[i];
    const value *x = &u->values[n->in0];
    size_t cn = (size_t)x->c * x->h * x->w;
    attn_saved s;
    s.mean = save;
    s.rstd = save + n->groups;
    s.q = s.rstd + n->groups;
    s.k = s.q + cn;
    s.v = s.k + cn;
    s.P = s.v + cn;
    return s;
}

attn_params unet_attn_params(const unet *u, int i) {
    const node *n = &u->nodes[i];
    attn_params ap = {
        unet_param(u, n->pattn[0]), unet_param(u, n->pattn[1]), unet_param(u, n->pattn[2]), unet_param(u, n->pattn[3]),
        unet_param(u, n->pattn[4]), unet_param(u, n->pattn[5]), unet_param(u, n->pattn[6]), unet_param(u, n->pattn[7]),
        unet_param(u, n->pattn[8]), unet_param(u, n->pattn[9]), n->groups, n->eps, n->heads, n->scale,
    };
    return ap;
}

void unet_set_winograd(unet *u, int on) {
    for (int i = 0; i < u->n_nodes; i++)
        if (u->nodes[i].kind == NODE_CONV) u->nodes[i].g.wino = on && conv2d_wino_ok(&u->nodes[i].g);
}

double unet_flops_executed(const unet *u) {
    double f = u->flops;
    for (int i = 0; i < u->n_nodes; i++) {
        const conv_geom *g = &u->nodes[i].g;
        if (u->nodes[i].kind == NODE_CONV && conv2d_wino_use(g))
            f -= 5.0 / 9.0 * 2.0 * g->cout * g->cin * 9.0 * (double)g->ho * g->wo;
    }
    return f;
}

static loco_status plan(unet *u) {
    for (int i = 0; i < u->n_values; i++) u->values[i].last_use = -1;
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        if (n->in0 >= 0) u->values[n->in0].last_use = i;
        if (n->in1 >= 0) u->values[n->in1].last_use = i;
    }
    u->fwd_off = malloc(sizeof(size_t) * (size_t)u->n_values);
    if (!u->fwd_off) return loco_fail(LOCO_E_NOMEM, "out of memory planning the model");
    u->arena_per_image = unet_plan_forward(u, NULL, u->fwd_off);
    if (!u->arena_per_image) return loco_fail(LOCO_E_NOMEM, "out of memory planning the model");
    size_t sc = 0;
    for (int i = 0; i < u->n_nodes; i++) {
        const node *n = &u->nodes[i];
        size_t need = 0;
        if (n->kind == NODE_CONV) need = conv2d_scratch(&n->g);
        if (n->kind == NODE_ATTN) {
            const value *x = &u->values[n->in0];
            need = attention_scratch(x->c, x->h * x->w);
        }
        if (need > sc) sc = need;
    }
    u->scratch_floats = sc ? sc : 1;
    return LOCO_OK;
}

/* ======================================================================== */
/* Forward                                                                  */
/* ======================================================================== */

void unet_exec_node(const unet *u, int i, int B, float *arena, const size_t *off, const float *t, float *scratch,
                    float *save) {
#define PTR(id) (arena + off[id] * (size_t)B)
    const node *n = &u->nodes[i];
    const value *ov = &u->values[n->out];
    float *y = PTR(n->out);
    const float *a = n->in0 >= 0 ? PTR(n->in0) : NULL;
    const float *c = n->in1 >= 0 ? PTR(n->in1) : NULL;
    const size_t nel = unet_value_size(u, n->out) * (size_t)B;
    switch (n->kind) {
    case NODE_TEMB: timestep_embedding_fwd(B, ov->c, u->cfg.flip_sin_to_cos, u->cfg.freq_shift, t, y); break;
    case NODE_LINEAR:
        linear_fwd(B, u->values[n->in0].c, ov->c, a, unet_param(u, n->pw), unet_param(u, n->pb), y);
        break;
    case NODE_SILU: silu_fwd(nel, a, y); break;
    case NODE_CONV: conv2d_fwd(&n->g, B, a, unet_param(u, n->pw), unet_param(u, n->pb), c, y, scratch); break;
    case NODE_GN:
        group_norm_fwd(B, ov->c, ov->h * ov->w, n->groups, n->eps, unet_param(u, n->pw), unet_param(u, n->pb), n->silu,
                       a, y, save ? save : NULL, save ? save + n->groups : NULL);
        break;
    case NODE_ADD: add_scale_fwd(nel, a, c, n->scale, y); break;
    case NODE_CONCAT: concat_fwd(B, u->values[n->in0].c, u->values[n->in1].c, ov->h * ov->w, a, c, y); break;
    case NODE_UPSAMPLE: upsample2x_fwd(B, ov->c, u->values[n->in0].h, u->values[n->in0].w, a, y); break;
    case NODE_ATTN: {
        attn_params ap = unet_attn_params(u, i);
        attn_saved sv;
        if (save) sv = unet_attn_saved(u, i, save);
        attention_fwd(&ap, B, ov->c, ov->h * ov->w, a, y, scratch, save ? &sv : NULL);
        break;
    }
    case NODE_SCALE_SHIFT:
        for (size_t k = 0; k < nel; k++) y[k] = a[k] * n->scale + n->shift;
        break;
    case NODE_KIND_COUNT: break;
    }
#undef PTR
}

void unet_forward(const unet *u, int B, const float *x, const float *t, float *eps, float *arena, float *scratch,
                  unet_tap_fn tapfn, void *tap_user) {
    const size_t *off = u->fwd_off;
    memcpy(arena + off[u->x_in] * (size_t)B, x, sizeof(float) * unet_value_size(u, u->x_in) * (size_t)B);
    for (int i = 0; i < u->n_nodes; i++) {
        unet_exec_node(u, i, B, arena, off, t, scratch, NULL);
        const value *ov = &u->values[u->nodes[i].out];
        if (tapfn && ov->tap)
            tapfn(tap_user, ov->tap, arena + off[u->nodes[i].out] * (size_t)B, B, ov->c, ov->h, ov->w);
    }
    memcpy(eps, arena + off[u->t_out] * (size_t)B, sizeof(float) * unet_value_size(u, u->t_out) * (size_t)B);
}
