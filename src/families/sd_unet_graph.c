/* sd_unet_graph.c - diffusers' UNet2DConditionModel as a graph, module by
 * module as diffusers builds it (names are the checkpoint's keys):
 *   temb = time_embedding(Timesteps(boc[0]))          as UNet2DModel
 *   conv_in; down blocks: layers x [ResnetBlock2D (+ Transformer2DModel)],
 *   a downsampler but after the last; mid: resnet, transformer, resnet; up
 *   blocks: layers + 1 x [cat(h, skip), resnet (+ transformer)], an upsampler
 *   but after the last; conv_norm_out, SiLU, conv_out.
 * Transformer2DModel: GroupNorm (eps 1e-6), proj_in (1x1 conv, or a linear
 * map with use_linear_projection), transformer blocks, proj_out, + input.
 * BasicTransformerBlock: h += attn1(LN1 h) (self), h += attn2(LN2 h, text)
 * (cross), h += ff(LN3 h) with ff = net.2(GEGLU(net.0.proj h)).
 * Attention heads: diffusers reads attention_head_dim as the number of heads
 * (per block; up blocks in reverse), each of C / heads channels. */
#include "families/sd_unet.h"

#include <stdio.h>
#include <string.h>

/* channel mixing at every position: a 1x1 conv or a Linear on tokens */
static int proj(gbuilder *b, const sd_unet_config *c, const char *prefix, int in, int cout) {
    return c->linear_proj ? gb_linear_tok(b, prefix, in, cout, 1) : gb_conv(b, prefix, in, cout, 1, 1, 0, 0, -1);
}

static int transformer(gbuilder *b, const sd_unet_config *c, const char *prefix, int in, int ctx, int heads,
                       int n_layers) {
    if (b->err) return -1;
    const int C = b->g->values[in].c;
    char p[192];
    snprintf(p, sizeof p, "%s.norm", prefix);
    int h = gb_group_norm(b, p, in, c->groups, 1e-6f, 0);
    snprintf(p, sizeof p, "%s.proj_in", prefix);
    h = proj(b, c, p, h, C);
    for (int l = 0; l < n_layers; l++) {
        char tb[176];
        snprintf(tb, sizeof tb, "%s.transformer_blocks.%d", prefix, l);
        snprintf(p, sizeof p, "%s.norm1", tb);
        int a = gb_layer_norm(b, p, h, 1e-5f);
        snprintf(p, sizeof p, "%s.attn1", tb);
        a = gb_mha(b, p, a, -1, heads, 0);
        h = gb_add(b, a, h, 1.0f);
        snprintf(p, sizeof p, "%s.norm2", tb);
        a = gb_layer_norm(b, p, h, 1e-5f);
        snprintf(p, sizeof p, "%s.attn2", tb);
        a = gb_mha(b, p, a, ctx, heads, 0);
        h = gb_add(b, a, h, 1.0f);
        snprintf(p, sizeof p, "%s.norm3", tb);
        a = gb_layer_norm(b, p, h, 1e-5f);
        snprintf(p, sizeof p, "%s.ff.net.0.proj", tb);
        a = gb_linear_tok(b, p, a, 8 * C, 1);
        a = gb_geglu(b, a);
        snprintf(p, sizeof p, "%s.ff.net.2", tb);
        a = gb_linear_tok(b, p, a, C, 1);
        h = gb_add(b, a, h, 1.0f);
    }
    snprintf(p, sizeof p, "%s.proj_out", prefix);
    h = proj(b, c, p, h, C);
    return gb_add(b, h, in, 1.0f);
}

loco_status sd_unet_build(graph *u, const sd_unet_config *cfg) {
    memset(u, 0, sizeof *u);
    gbuilder bb = {u, LOCO_OK}, *b = &bb;
    const int n = cfg->n_blocks;
    char p[160];

    int te = gb_temb(b, cfg->boc[0], cfg->flip_sin_to_cos, cfg->freq_shift);
    te = gb_linear(b, "time_embedding.linear_1", te, cfg->temb_dim);
    te = gb_silu(b, te);
    te = gb_linear(b, "time_embedding.linear_2", te, cfg->temb_dim);
    gb_tap(b, te, "time_embedding");
    const int temb_act = gb_silu(b, te);
    const int ctx = gb_cond_input(b, cfg->cross_dim, 1, cfg->text_len);

    const int x_in = gb_value(b, cfg->in_ch, cfg->height, cfg->width, 1);
    int h = gb_conv(b, "conv_in", x_in, cfg->boc[0], 3, 1, 1, 1, -1);
    gb_tap(b, h, "conv_in");
    int skips[SD_MAX_BLOCKS * 66];
    int ns = 0;
    skips[ns++] = h;
    for (int i = 0; i < n; i++) {
        const int cout = cfg->boc[i];
        for (int l = 0; l < cfg->layers; l++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, l);
            h = gb_resnet(b, p, h, cout, temb_act, cfg->groups, cfg->eps, 1.0f);
            if (cfg->down_xattn[i]) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, l);
                h = transformer(b, cfg, p, h, ctx, cfg->heads[i], cfg->tlayers[i]);
            }
            skips[ns++] = h;
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", i);
            const int pad = cfg->downsample_padding;
            h = gb_conv(b, p, h, cout, 3, 2, pad, pad, -1);
            skips[ns++] = h;
        }
        snprintf(p, sizeof p, "down_blocks.%d", i);
        gb_tap(b, h, p);
    }
    if (cfg->mid_block) {
        const int cm = cfg->boc[n - 1];
        h = gb_resnet(b, "mid_block.resnets.0", h, cm, temb_act, cfg->groups, cfg->eps, cfg->mid_scale);
        h = transformer(b, cfg, "mid_block.attentions.0", h, ctx, cfg->heads[n - 1], cfg->tlayers[n - 1]);
        h = gb_resnet(b, "mid_block.resnets.1", h, cm, temb_act, cfg->groups, cfg->eps, cfg->mid_scale);
        gb_tap(b, h, "mid_block");
    }
    for (int i = 0; i < n; i++) {
        const int k = n - 1 - i; /* the down block this up block mirrors */
        const int cout = cfg->boc[k];
        for (int l = 0; l < cfg->layers + 1; l++) {
            h = gb_concat(b, h, skips[--ns]);
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, l);
            h = gb_resnet(b, p, h, cout, temb_act, cfg->groups, cfg->eps, 1.0f);
            if (cfg->up_xattn[i]) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, l);
                h = transformer(b, cfg, p, h, ctx, cfg->heads[k], cfg->tlayers[k]);
            }
        }
        if (i < n - 1) {
            h = gb_upsample(b, h);
            snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", i);
            h = gb_conv(b, p, h, cout, 3, 1, 1, 1, -1);
        }
        snprintf(p, sizeof p, "up_blocks.%d", i);
        gb_tap(b, h, p);
    }
    h = gb_group_norm(b, "conv_norm_out", h, cfg->groups, cfg->eps, 1);
    h = gb_conv(b, "conv_out", h, cfg->out_ch, 3, 1, 1, 1, -1);
    return gb_finish(b, x_in, h);
}
