/* sd_unet_config.c - diffusers UNet2DConditionModel config.json, parsed
 * strictly (types, ranges, duplicate keys) into an sd_unet_config; what
 * Stable Diffusion 1.x/2.x do not use is refused by name. */
#include "families/json_cfg.h"
#include "families/sd_unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SDC_MAX_CH 65536
#define SDC_MAX_RES 4096

static const char *const known_keys[] = {
    "act_fn", "addition_embed_type", "addition_embed_type_num_heads", "addition_time_embed_dim",
    "attention_head_dim", "attention_type", "block_out_channels", "center_input_sample", "class_embed_type",
    "class_embeddings_concat", "conv_in_kernel", "conv_out_kernel", "cross_attention_dim", "cross_attention_norm",
    "down_block_types", "downsample_padding", "dropout", "dual_cross_attention", "encoder_hid_dim",
    "encoder_hid_dim_type", "flip_sin_to_cos", "freq_shift", "in_channels", "layers_per_block",
    "mid_block_only_cross_attention", "mid_block_scale_factor", "mid_block_type", "norm_eps", "norm_num_groups",
    "num_attention_heads", "num_class_embeds", "only_cross_attention", "out_channels",
    "projection_class_embeddings_input_dim", "resnet_out_scale_factor", "resnet_skip_time_act",
    "resnet_time_scale_shift", "reverse_transformer_layers_per_block", "sample_size", "time_cond_proj_dim",
    "time_embedding_act_fn", "time_embedding_dim", "time_embedding_type", "timestep_post_act",
    "transformer_layers_per_block", "up_block_types", "upcast_attention", "use_linear_projection",
};

/* an int, or a list of n ints, each in [lo, hi] -> out[n] */
static loco_status int_or_list(const cfg_ctx *c, const char *key, int def, int n, int lo, int hi, int *out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        for (int i = 0; i < n; i++) out[i] = def;
        return LOCO_OK;
    }
    if (cJSON_IsNumber(v)) {
        int x;
        loco_status s = cfg_int(c, key, def, lo, hi, &x);
        for (int i = 0; !s && i < n; i++) out[i] = x;
        return s;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be an integer or a list of %d (one per block)", c->path, key,
                         n);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || !(e->valuedouble >= lo) ||
            !(e->valuedouble <= hi))
            return loco_fail(LOCO_E_FORMAT, "%s: key '%s'[%d] must be an integer in [%d, %d]", c->path, key, i, lo, hi);
        out[i] = (int)e->valuedouble;
    }
    return LOCO_OK;
}

/* a key whose value, when present and not null, must be `want` (a bool or number) */
static loco_status expect_num(const cfg_ctx *c, const char *key, double want) {
    const cJSON *v = cfg_get(c, key);
    if (!v) return LOCO_OK;
    if ((cJSON_IsBool(v) && (cJSON_IsTrue(v) ? 1.0 : 0.0) == want) || (cJSON_IsNumber(v) && v->valuedouble == want))
        return LOCO_OK;
    char *t = cJSON_PrintUnformatted(v);
    loco_status s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %s is not supported (only %g)", c->path, key,
                              t ? t : "?", want);
    free(t);
    return s;
}

static loco_status block_list(const cfg_ctx *c, const char *key, int n, const char *plain, const char *xattn,
                              int *out) {
    const cJSON *v = cfg_get(c, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be a list of %d block types", c->path, key, n);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (cJSON_IsString(e) && strcmp(e->valuestring, plain) == 0) out[i] = 0;
        else if (cJSON_IsString(e) && strcmp(e->valuestring, xattn) == 0) out[i] = 1;
        else
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s'[%d] = %s%s%s is not supported (only %s or %s)", c->path,
                             key, i, cJSON_IsString(e) ? "\"" : "", cJSON_IsString(e) ? e->valuestring : "(not a string)",
                             cJSON_IsString(e) ? "\"" : "", plain, xattn);
    }
    return LOCO_OK;
}

loco_status sd_unet_config_parse(sd_unet_config *cfg, const char *text, size_t len, const char *path) {
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
    if (cls && (!cJSON_IsString(cls) || strcmp(cls->valuestring, "UNet2DConditionModel") != 0)) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key '_class_name' is not \"UNet2DConditionModel\"", path);
        goto done;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (it->string[0] == '_') continue;
        size_t k = 0;
        for (; k < sizeof known_keys / sizeof known_keys[0]; k++)
            if (strcmp(it->string, known_keys[k]) == 0) break;
        if (k == sizeof known_keys / sizeof known_keys[0])
            loco_log(LOCO_LOG_WARN, "%s: unknown key '%s' ignored", path, it->string);
    }
    TRY(cfg_int(&c, "sample_size", 64, 1, SDC_MAX_RES, &cfg->height));
    cfg->width = cfg->height;
    TRY(cfg_int(&c, "in_channels", 4, 1, 1024, &cfg->in_ch));
    TRY(cfg_int(&c, "out_channels", 4, 1, 1024, &cfg->out_ch));
    TRY(expect_num(&c, "center_input_sample", 0));
    TRY(cfg_expect_str(&c, "time_embedding_type", "positional"));
    TRY(cfg_bool(&c, "flip_sin_to_cos", 1, &cfg->flip_sin_to_cos));
    TRY(cfg_num(&c, "freq_shift", 0, -1e6, 1e6, &cfg->freq_shift));
    TRY(cfg_int(&c, "downsample_padding", 1, 0, 1, &cfg->downsample_padding));
    TRY(cfg_num(&c, "mid_block_scale_factor", 1, 1e-6, 1e6, &cfg->mid_scale));
    TRY(cfg_expect_str(&c, "act_fn", "silu"));
    TRY(cfg_expect_str(&c, "resnet_time_scale_shift", "default"));
    TRY(cfg_expect_str(&c, "attention_type", "default"));
    TRY(expect_num(&c, "resnet_out_scale_factor", 1));
    TRY(expect_num(&c, "resnet_skip_time_act", 0));
    TRY(expect_num(&c, "only_cross_attention", 0));
    TRY(expect_num(&c, "dual_cross_attention", 0));
    TRY(expect_num(&c, "class_embeddings_concat", 0));
    TRY(expect_num(&c, "conv_in_kernel", 3));
    TRY(expect_num(&c, "conv_out_kernel", 3));
    static const char *const must_be_null[] = {
        "addition_embed_type", "class_embed_type", "num_class_embeds", "time_cond_proj_dim", "encoder_hid_dim",
        "encoder_hid_dim_type", "timestep_post_act", "time_embedding_act_fn", "cross_attention_norm",
        "projection_class_embeddings_input_dim", "addition_time_embed_dim", "mid_block_only_cross_attention",
        "reverse_transformer_layers_per_block", "num_attention_heads"};
    for (size_t k = 0; k < sizeof must_be_null / sizeof must_be_null[0]; k++) TRY(cfg_expect_null(&c, must_be_null[k]));
    TRY(cfg_num(&c, "norm_eps", 1e-5, 1e-12, 1.0, &cfg->eps));
    TRY(cfg_int(&c, "norm_num_groups", 32, 1, SDC_MAX_CH, &cfg->groups));
    TRY(cfg_int(&c, "layers_per_block", 2, 1, 64, &cfg->layers));
    TRY(cfg_bool(&c, "use_linear_projection", 0, &cfg->linear_proj));
    TRY(cfg_int(&c, "cross_attention_dim", 1280, 1, SDC_MAX_CH, &cfg->cross_dim));
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "mid_block_type");
        cfg->mid_block = 1;
        if (m && cJSON_IsNull(m)) cfg->mid_block = 0;
        else TRY(cfg_expect_str(&c, "mid_block_type", "UNetMidBlock2DCrossAttn"));
    }
    const cJSON *boc = cfg_get(&c, "block_out_channels");
    if (!cJSON_IsArray(boc) || cJSON_GetArraySize(boc) < 1 || cJSON_GetArraySize(boc) > SD_MAX_BLOCKS) {
        s = loco_fail(LOCO_E_FORMAT, "%s: key 'block_out_channels' must be a list of 1 to %d channel counts", path,
                      SD_MAX_BLOCKS);
        goto done;
    }
    const int n = cfg->n_blocks = cJSON_GetArraySize(boc);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(boc, i);
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || !(e->valuedouble >= 1) ||
            !(e->valuedouble <= SDC_MAX_CH)) {
            s = loco_fail(LOCO_E_FORMAT, "%s: key 'block_out_channels'[%d] must be an integer in [1, %d]", path, i,
                          SDC_MAX_CH);
            goto done;
        }
        cfg->boc[i] = (int)e->valuedouble;
        if (cfg->boc[i] % cfg->groups) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'norm_num_groups' = %d does not divide block_out_channels[%d] = %d",
                          path, cfg->groups, i, cfg->boc[i]);
            goto done;
        }
    }
    TRY(block_list(&c, "down_block_types", n, "DownBlock2D", "CrossAttnDownBlock2D", cfg->down_xattn));
    TRY(block_list(&c, "up_block_types", n, "UpBlock2D", "CrossAttnUpBlock2D", cfg->up_xattn));
    /* diffusers passes attention_head_dim on as the number of heads */
    TRY(int_or_list(&c, "attention_head_dim", 8, n, 1, SDC_MAX_CH, cfg->heads));
    TRY(int_or_list(&c, "transformer_layers_per_block", 1, n, 1, 64, cfg->tlayers));
    for (int i = 0; i < n; i++)
        if ((cfg->down_xattn[i] || cfg->up_xattn[n - 1 - i] || (cfg->mid_block && i == n - 1)) &&
            cfg->boc[i] % cfg->heads[i]) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'attention_head_dim'[%d] = %d heads do not divide %d channels",
                          path, i, cfg->heads[i], cfg->boc[i]);
            goto done;
        }
    {
        const cJSON *td = cJSON_GetObjectItemCaseSensitive(root, "time_embedding_dim");
        TRY(cfg_int(&c, "time_embedding_dim", 4 * cfg->boc[0], 1, 4 * SDC_MAX_CH, &cfg->temb_dim));
        (void)td;
    }
    if (cfg->height >> (n - 1) < 1 || (cfg->height % (1 << (n - 1)))) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'sample_size' = %d is not divisible by 2^%d (the down blocks)", path,
                      cfg->height, n - 1);
        goto done;
    }
    cfg->text_len = 77;
done:
#undef TRY
    cJSON_Delete(root);
    if (s) memset(cfg, 0, sizeof *cfg);
    return s;
}
