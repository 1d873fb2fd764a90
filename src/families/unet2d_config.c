/* unet2d_config.c - diffusers UNet2DModel config.json: parsed strictly
 * (types, ranges, known keys, duplicates) into a unet_config. */
#include "families/json_cfg.h"
#include "families/unet2d.h"

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
    cJSON *root;
    loco_status s = cfg_parse_root(text, len, path, &root);
    if (s) return s;
    cfg_ctx c = {root, path};
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((s = (expr)) != LOCO_OK) goto done;                                                                        \
    } while (0)
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


loco_status unet_config_read(const char *path, unet_config *cfg) {
    char *text;
    size_t len;
    loco_status s = loco_read_file(path, &text, &len, 1 << 20);
    if (s) return s;
    s = unet_config_parse(cfg, text, len, path);
    free(text);
    return s;
}
