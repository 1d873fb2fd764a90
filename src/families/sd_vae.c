/* sd_vae.c - diffusers' AutoencoderKL as two graphs (see sd_vae.h): its
 * config.json parsed strictly (as unet2d_config.c parses UNet2DModel's), the
 * encoder and decoder built from diffusers' Encoder, Decoder,
 * DownEncoderBlock2D, UpDecoderBlock2D, UNetMidBlock2D, ResnetBlock2D
 * (no time embedding), Downsample2D (padding (0,1,0,1)), Upsample2D and
 * Attention, parameter names the checkpoint's keys, and the two halves
 * loaded from the one weights file. */
#define _POSIX_C_SOURCE 200809L
#include "families/json_cfg.h"
#include "families/sd_files.h"
#include "families/sd_vae.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* Config                                                                   */
/* ======================================================================== */

#define CFG_MAX_CH 65536
#define CFG_MAX_RES 16384

static loco_status cfg_expect_null_why(const cfg_ctx *c, const char *key, const char *why) {
    const cJSON *v = cfg_get(c, key);
    if (!v) return LOCO_OK;
    char *s = cJSON_PrintUnformatted(v);
    loco_status st = loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %.60s%s is not supported (only null): %s", c->path,
                               key, s ? s : "?", s && strlen(s) > 60 ? "..." : "", why);
    free(s);
    return st;
}

/* A key that appears twice (parsers disagree on which one wins) is refused.
 * Returns the name or NULL. */
static int vae_factor(const sd_vae_config *c) { return 1 << (c->n_blocks - 1); }

/* An image size the graphs can be built for: within range, divisible by the
 * downsampling factor, and with the mid-block attention's scores (one head
 * over the latent positions) within the allocator's limit. what names the
 * size in messages. */
static loco_status check_size(const sd_vae_config *c, int h, int w, const char *path, const char *what) {
    int f = vae_factor(c);
    if (h < 1 || w < 1 || h > CFG_MAX_RES || w > CFG_MAX_RES)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s %dx%d is outside [1, %d]", path, what, h, w, CFG_MAX_RES);
    if (h % f || w % f)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s %dx%d must be divisible by %d (the downsampling of %d blocks)",
                         path, what, h, w, f, c->n_blocks);
    if (c->mid_attention) {
        size_t hw = (size_t)(h / f) * (size_t)(w / f), floats;
        if (!loco_mul_ok(hw, hw, &floats) || floats > LOCO_MAX_ALLOC / sizeof(float))
            return loco_fail(LOCO_E_NOMEM,
                             "%s: the mid-block attention over %dx%d latent positions needs more than %zu bytes of "
                             "scores; %s %dx%d is too large for it",
                             path, h / f, w / f, (size_t)LOCO_MAX_ALLOC, what, h, w);
    }
    return LOCO_OK;
}

static const char *const known_keys[] = {
    "in_channels",  "out_channels",    "down_block_types", "up_block_types",      "block_out_channels",
    "layers_per_block", "act_fn",      "latent_channels",  "norm_num_groups",     "sample_size",
    "scaling_factor", "shift_factor",  "latents_mean",     "latents_std",         "force_upcast",
    "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention",
};

/* one entry of block_out_channels / down_block_types / up_block_types */
static loco_status cfg_block(const cfg_ctx *c, sd_vae_config *cfg, const cJSON *boc, const cJSON *dbt,
                             const cJSON *ubt, int i) {
    const cJSON *v = cJSON_GetArrayItem(boc, i);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return loco_fail(LOCO_E_FORMAT, "%s: key 'block_out_channels'[%d] must be an integer", c->path, i);
    if (!(v->valuedouble >= 1 && v->valuedouble <= CFG_MAX_CH)) /* before the cast below */
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'block_out_channels'[%d] = %.17g is outside [1, %d]", c->path,
                         i, v->valuedouble, CFG_MAX_CH);
    cfg->boc[i] = (int)v->valuedouble;
    static const char *const keys[2] = {"down_block_types", "up_block_types"};
    static const char *const want[2] = {"DownEncoderBlock2D", "UpDecoderBlock2D"};
    const cJSON *t[2] = {cJSON_GetArrayItem(dbt, i), cJSON_GetArrayItem(ubt, i)};
    for (int k = 0; k < 2; k++) {
        if (!cJSON_IsString(t[k]))
            return loco_fail(LOCO_E_FORMAT, "%s: key '%s'[%d] must be a string", c->path, keys[k], i);
        if (strcmp(t[k]->valuestring, want[k]) != 0)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s'[%d] = \"%s\" is not supported (only \"%s\")",
                             c->path, keys[k], i, t[k]->valuestring, want[k]);
    }
    if (cfg->boc[i] % cfg->groups)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'norm_num_groups' = %d does not divide block_out_channels[%d] = %d",
                         c->path, cfg->groups, i, cfg->boc[i]);
    return LOCO_OK;
}

static loco_status parse_root(const cJSON *root, sd_vae_config *cfg, const char *path) {
    cfg_ctx c = {root, path};
    loco_status s;
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((s = (expr)) != LOCO_OK) return s;                                                                         \
    } while (0)
    const cJSON *cls = cfg_get(&c, "_class_name");
    if (cls && (!cJSON_IsString(cls) || strcmp(cls->valuestring, "AutoencoderKL") != 0))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '_class_name' = %s%.60s%s is not supported (only \"AutoencoderKL\")",
                         path, cJSON_IsString(cls) ? "\"" : "",
                         cJSON_IsString(cls) ? cls->valuestring : "(not a string)", cJSON_IsString(cls) ? "\"" : "");
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
    TRY(cfg_int(&c, "in_channels", 3, 1, 1024, &cfg->in_ch));
    TRY(cfg_int(&c, "out_channels", 3, 1, 1024, &cfg->out_ch));
    TRY(cfg_int(&c, "latent_channels", 4, 1, 4096, &cfg->latent_ch));
    TRY(cfg_int(&c, "layers_per_block", 1, 1, 64, &cfg->layers));
    TRY(cfg_expect_str(&c, "act_fn", "silu"));
    {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "norm_num_groups");
        if (g && cJSON_IsNull(g))
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'norm_num_groups' = null is not supported", path);
    }
    TRY(cfg_int(&c, "norm_num_groups", 32, 1, CFG_MAX_CH, &cfg->groups));
    /* scaling_factor: the pipeline's latent is (mean - shift) * scaling */
    TRY(cfg_num(&c, "scaling_factor", 0.18215, 1e-6, 1e6, &cfg->scaling_factor));
    TRY(cfg_num(&c, "shift_factor", 0.0, -1e6, 1e6, &cfg->shift_factor));
    TRY(cfg_expect_null_why(&c, "latents_mean", "per-channel latent statistics are not implemented"));
    TRY(cfg_expect_null_why(&c, "latents_std", "per-channel latent statistics are not implemented"));
    TRY(cfg_bool(&c, "force_upcast", 1, &cfg->force_upcast));
    TRY(cfg_bool(&c, "use_quant_conv", 1, &cfg->use_quant_conv));
    TRY(cfg_bool(&c, "use_post_quant_conv", 1, &cfg->use_post_quant_conv));
    TRY(cfg_bool(&c, "mid_block_add_attention", 1, &cfg->mid_attention));
    /* block lists: required (diffusers' one-block defaults are not what any
     * Stable Diffusion checkpoint uses) */
    const cJSON *boc = cfg_get(&c, "block_out_channels"), *dbt = cfg_get(&c, "down_block_types"),
                *ubt = cfg_get(&c, "up_block_types");
    {
        const cJSON *lists[3] = {boc, dbt, ubt};
        static const char *const names[3] = {"block_out_channels", "down_block_types", "up_block_types"};
        for (int i = 0; i < 3; i++)
            if (!cJSON_IsArray(lists[i]))
                return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be an array%s", path, names[i],
                                 lists[i] ? "" : " (it is missing)");
    }
    int n = cJSON_GetArraySize(boc);
    if (n < 1 || n > SD_VAE_MAX_BLOCKS)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'block_out_channels' has %d entries (1..%d supported)", path, n,
                         SD_VAE_MAX_BLOCKS);
    if (cJSON_GetArraySize(dbt) != n || cJSON_GetArraySize(ubt) != n)
        return loco_fail(LOCO_E_FORMAT,
                         "%s: key 'block_out_channels' has %d entries, 'down_block_types' %d and 'up_block_types' %d "
                         "(all three must agree)",
                         path, n, cJSON_GetArraySize(dbt), cJSON_GetArraySize(ubt));
    cfg->n_blocks = n;
    for (int i = 0; i < n; i++) TRY(cfg_block(&c, cfg, boc, dbt, ubt, i));
    /* sample_size: int or [h, w]; the image size the graphs are built for
     * unless the caller gives another */
    const cJSON *ss = cfg_get(&c, "sample_size");
    if (!ss) return loco_fail(LOCO_E_FORMAT, "%s: key 'sample_size' is missing", path);
    if (cJSON_IsArray(ss)) {
        const cJSON *a = cJSON_GetArrayItem(ss, 0), *b = cJSON_GetArrayItem(ss, 1);
        if (cJSON_GetArraySize(ss) != 2 || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) ||
            a->valuedouble != floor(a->valuedouble) || b->valuedouble != floor(b->valuedouble))
            return loco_fail(LOCO_E_FORMAT, "%s: key 'sample_size' must be an integer or [height, width]", path);
        if (!(a->valuedouble >= 1 && a->valuedouble <= CFG_MAX_RES && b->valuedouble >= 1 &&
              b->valuedouble <= CFG_MAX_RES))
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'sample_size' = [%g, %g] is outside [1, %d]", path,
                             a->valuedouble, b->valuedouble, CFG_MAX_RES);
        cfg->height = (int)a->valuedouble;
        cfg->width = (int)b->valuedouble;
    } else {
        TRY(cfg_int(&c, "sample_size", 0, 1, CFG_MAX_RES, &cfg->height));
        cfg->width = cfg->height;
    }
    return check_size(cfg, cfg->height, cfg->width, path, "key 'sample_size'");
#undef TRY
}

loco_status sd_vae_config_parse(sd_vae_config *cfg, const char *text, size_t len, const char *path) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root;
    loco_status s = cfg_parse_root(text, len, path, &root);
    if (s) return s;
    s = parse_root(root, cfg, path);
    cJSON_Delete(root);
    if (s) memset(cfg, 0, sizeof *cfg);
    return s;
}

loco_status sd_vae_config_read(const char *path, sd_vae_config *cfg) {
    char *text;
    size_t len;
    loco_status s = loco_read_file(path, &text, &len, 1 << 20);
    if (s) return s;
    s = sd_vae_config_parse(cfg, text, len, path);
    free(text);
    return s;
}

/* ======================================================================== */
/* Graphs                                                                   */
/* ======================================================================== */

/* ResnetBlock2D without time embedding (temb_channels None), output scale
 * factor 1: norm1+SiLU, conv1, norm2+SiLU, (dropout), conv2, a 1x1
 * conv_shortcut when the channels change. */
/* UNetMidBlock2D as Encoder and Decoder make it: resnet, Attention (group
 * norm, one head of the full width, residual, rescale 1), resnet. */
static int mid_block(gbuilder *b, const sd_vae_config *c, const char *half, int h) {
    char p[64];
    const int C = c->boc[c->n_blocks - 1];
    snprintf(p, sizeof p, "%s.mid_block.resnets.0", half);
    h = gb_resnet(b, p, h, C, -1, c->groups, SD_VAE_EPS, 1.0f);
    if (c->mid_attention) {
        snprintf(p, sizeof p, "%s.mid_block.attentions.0", half);
        h = gb_attention(b, p, h, C, c->groups, SD_VAE_EPS, 1.0f);
    }
    snprintf(p, sizeof p, "%s.mid_block.resnets.1", half);
    h = gb_resnet(b, p, h, C, -1, c->groups, SD_VAE_EPS, 1.0f);
    snprintf(p, sizeof p, "%s.mid_block", half);
    gb_tap(b, h, p);
    return h;
}

loco_status sd_vae_build_encoder(graph *g, const sd_vae_config *c, int height, int width) {
    memset(g, 0, sizeof *g);
    loco_status s = check_size(c, height, width, "VAE encoder", "image size");
    if (s) return s;
    gbuilder bb = {g, LOCO_OK}, *b = &bb;
    const int n = c->n_blocks, L = c->latent_ch;
    char p[96]; /* "encoder.down_blocks.15.resnets.63" at most */
    const int x_in = gb_value(b, c->in_ch, height, width, 1);
    int h = gb_conv(b, "encoder.conv_in", x_in, c->boc[0], 3, 1, 1, 1, -1);
    gb_tap(b, h, "encoder.conv_in");
    for (int i = 0; i < n; i++) {
        for (int l = 0; l < c->layers; l++) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d", i, l);
            h = gb_resnet(b, p, h, c->boc[i], -1, c->groups, SD_VAE_EPS, 1.0f);
        }
        if (i < n - 1) { /* Downsample2D, padding 0: pad (0,1,0,1), stride 2 */
            snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            h = gb_conv(b, p, h, c->boc[i], 3, 2, 0, 0, -1);
        }
        snprintf(p, sizeof p, "encoder.down_blocks.%d", i);
        gb_tap(b, h, p);
    }
    h = mid_block(b, c, "encoder", h);
    h = gb_group_norm(b, "encoder.conv_norm_out", h, c->groups, SD_VAE_EPS, 1);
    h = gb_conv(b, "encoder.conv_out", h, 2 * L, 3, 1, 1, 1, -1); /* double_z: mean, log-variance */
    if (c->use_quant_conv) h = gb_conv(b, "quant_conv", h, 2 * L, 1, 1, 0, 0, -1);
    h = gb_slice(b, h, L);
    return gb_finish(b, x_in, h);
}

loco_status sd_vae_build_decoder(graph *g, const sd_vae_config *c, int height, int width) {
    memset(g, 0, sizeof *g);
    loco_status s = check_size(c, height, width, "VAE decoder", "image size");
    if (s) return s;
    gbuilder bb = {g, LOCO_OK}, *b = &bb;
    const int n = c->n_blocks, f = vae_factor(c);
    char p[96]; /* "decoder.up_blocks.15.resnets.64" at most */
    const int x_in = gb_value(b, c->latent_ch, height / f, width / f, 1);
    /* the pipeline's latent -> the decoder's: latent / scaling + shift */
    int h = gb_scale_shift(b, x_in, (float)(1.0 / (double)c->scaling_factor), c->shift_factor);
    if (c->use_post_quant_conv) h = gb_conv(b, "post_quant_conv", h, c->latent_ch, 1, 1, 0, 0, -1);
    h = gb_conv(b, "decoder.conv_in", h, c->boc[n - 1], 3, 1, 1, 1, -1);
    gb_tap(b, h, "decoder.conv_in");
    h = mid_block(b, c, "decoder", h);
    for (int i = 0; i < n; i++) {
        const int cout = c->boc[n - 1 - i];
        for (int l = 0; l < c->layers + 1; l++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, l);
            h = gb_resnet(b, p, h, cout, -1, c->groups, SD_VAE_EPS, 1.0f);
        }
        if (i < n - 1) { /* Upsample2D: nearest 2x, 3x3 conv */
            h = gb_upsample(b, h);
            snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            h = gb_conv(b, p, h, cout, 3, 1, 1, 1, -1);
        }
        snprintf(p, sizeof p, "decoder.up_blocks.%d", i);
        gb_tap(b, h, p);
    }
    h = gb_group_norm(b, "decoder.conv_norm_out", h, c->groups, SD_VAE_EPS, 1);
    h = gb_conv(b, "decoder.conv_out", h, c->out_ch, 3, 1, 1, 1, -1);
    return gb_finish(b, x_in, h);
}

/* ======================================================================== */
/* The model                                                                */
/* ======================================================================== */

struct sd_vae {
    sd_vae_config cfg;
    graph enc, dec;
    float *arena;         /* activations of either graph, grown to the largest batch */
    size_t arena_bytes;
    float *scratch;       /* max of the graphs' scratch_floats               */
    sd_vae_sizes sz;
};

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

void sd_vae_free(sd_vae *v) {
    if (!v) return;
    graph_free(&v->enc);
    graph_free(&v->dec);
    free(v->arena);
    free(v->scratch);
    free(v);
}

loco_status sd_vae_open(const char *vae_dir, sd_vae **out) { return sd_vae_open_sized(vae_dir, 0, 0, out); }

loco_status sd_vae_open_sized(const char *vae_dir, int height, int width, sd_vae **out) {
    *out = NULL;
    static const char *const enc_ignore[] = {"decoder.", "post_quant_conv.", NULL};
    static const char *const dec_ignore[] = {"encoder.", "quant_conv.", NULL};
    char *cfg_path = join(vae_dir, "config.json"), *w_path = NULL;
    sd_vae *v = calloc(1, sizeof *v);
    loco_status s = LOCO_OK;
    if (!cfg_path || !v) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    if (!loco_is_dir(vae_dir)) {
        s = loco_fail(LOCO_E_IO, "%s: not a VAE folder", vae_dir);
        goto done;
    }
    if ((s = loco_check_file(cfg_path)) == LOCO_E_NOT_FOUND)
        s = loco_fail(LOCO_E_NOT_FOUND, "%s: no config.json in the VAE folder", vae_dir);
    if (s || (s = sd_vae_config_read(cfg_path, &v->cfg))) goto done;
    const sd_vae_config *c = &v->cfg;
    if (!height && !width) {
        height = c->height;
        width = c->width;
    }
    if ((s = sd_vae_build_encoder(&v->enc, c, height, width)) || (s = sd_vae_build_decoder(&v->dec, c, height, width))) {
        s = loco_fail_in(s, cfg_path);
        goto done;
    }
    if ((s = sd_weights_locate(vae_dir, 0, &w_path)) ||
        (s = graph_load_weights_subset(&v->enc, w_path, enc_ignore)) ||
        (s = graph_load_weights_subset(&v->dec, w_path, dec_ignore)))
        goto done;
    size_t sf = v->enc.scratch_floats > v->dec.scratch_floats ? v->enc.scratch_floats : v->dec.scratch_floats;
    v->scratch = loco_malloc((sf ? sf : 1) * sizeof(float));
    if (!v->scratch) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory for %zu floats of scratch space", vae_dir, sf);
        goto done;
    }
    const value *xi = &v->enc.values[v->enc.x_in], *zi = &v->dec.values[v->dec.x_in],
                *yo = &v->dec.values[v->dec.t_out];
    v->sz = (sd_vae_sizes){xi->c, yo->c, xi->h, xi->w, zi->c, zi->h, zi->w,
                           graph_value_size(&v->enc, v->enc.x_in), graph_value_size(&v->dec, v->dec.t_out),
                           graph_value_size(&v->dec, v->dec.x_in)};
    *out = v;
    v = NULL;
done:
    sd_vae_free(v);
    free(cfg_path);
    free(w_path);
    return s;
}

static loco_status reserve_arena(sd_vae *v, const graph *g, int B) {
    size_t need;
    if (B < 1) return loco_fail(LOCO_E_INVALID_ARGUMENT, "VAE: batch %d (at least 1)", B);
    if (!loco_mul_ok(g->arena_per_image, (size_t)B, &need) || !loco_mul_ok(need, sizeof(float), &need))
        return loco_fail(LOCO_E_NOMEM, "VAE: batch %d: activation memory overflows", B);
    if (need <= v->arena_bytes) return LOCO_OK;
    free(v->arena);
    v->arena_bytes = 0;
    v->arena = loco_malloc(need);
    if (!v->arena) return loco_fail(LOCO_E_NOMEM, "VAE: batch %d: cannot allocate %zu bytes of activations", B, need);
    v->arena_bytes = need;
    return LOCO_OK;
}

static loco_status check_finite(const char *what, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return loco_fail(LOCO_E_NUMERIC, "VAE %s: element %zu is not finite", what, i);
    return LOCO_OK;
}

loco_status sd_vae_encode(sd_vae *v, int B, const float *image, float *latent) {
    loco_status s = reserve_arena(v, &v->enc, B);
    if (s || (s = check_finite("image", image, v->sz.image_floats * (size_t)B))) return s;
    threads_for_work(v->enc.flops);
    graph_forward(&v->enc, B, image, NULL, NULL, latent, v->arena, v->scratch, NULL, NULL);
    const float sc = v->cfg.scaling_factor, sh = v->cfg.shift_factor;
    const size_t n = v->sz.latent_floats * (size_t)B;
    if (sh != 0.0f)
        for (size_t i = 0; i < n; i++) latent[i] = (latent[i] - sh) * sc;
    else
        for (size_t i = 0; i < n; i++) latent[i] *= sc;
    return LOCO_OK;
}

loco_status sd_vae_decode(sd_vae *v, int B, const float *latent, float *image) {
    loco_status s = reserve_arena(v, &v->dec, B);
    if (s || (s = check_finite("latent", latent, v->sz.latent_floats * (size_t)B))) return s;
    threads_for_work(v->dec.flops);
    graph_forward(&v->dec, B, latent, NULL, NULL, image, v->arena, v->scratch, NULL, NULL);
    return LOCO_OK;
}

const graph *sd_vae_encoder(const sd_vae *v) { return &v->enc; }
const graph *sd_vae_decoder(const sd_vae *v) { return &v->dec; }
const sd_vae_config *sd_vae_get_config(const sd_vae *v) { return &v->cfg; }
float sd_vae_scaling_factor(const sd_vae *v) { return v->cfg.scaling_factor; }
int sd_vae_downsample_factor(const sd_vae *v) { return vae_factor(&v->cfg); }
void sd_vae_get_sizes(const sd_vae *v, sd_vae_sizes *s) { *s = v->sz; }
