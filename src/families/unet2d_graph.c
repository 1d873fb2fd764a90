/* unet2d.c - diffusers UNet2DModel as a graph. The structure follows
 * diffusers' UNet2DModel, DownBlock2D/AttnDownBlock2D, UNetMidBlock2D,
 * UpBlock2D/AttnUpBlock2D, ResnetBlock2D, Downsample2D, Upsample2D and
 * Attention; parameter names are the checkpoint's keys. */
#include "families/unet2d.h"

#include <stdio.h>
#include <string.h>

loco_status unet2d_build(graph *u, const unet_config *cfg) {
    memset(u, 0, sizeof *u);
    gbuilder bb = {u, LOCO_OK}, *b = &bb;
    const int n = cfg->n_blocks;
    char p[128]; /* "up_blocks.15.attentions.64" at most (see gb_param) */

    /* time embedding: positional projection then TimestepEmbedding */
    int te = gb_temb(b, cfg->boc[0], cfg->flip_sin_to_cos, cfg->freq_shift);
    te = gb_linear(b, "time_embedding.linear_1", te, cfg->temb_dim);
    te = gb_silu(b, te);
    te = gb_linear(b, "time_embedding.linear_2", te, cfg->temb_dim);
    gb_tap(b, te, "time_embedding");
    int temb_act = gb_silu(b, te); /* every resnet applies SiLU to emb first */

    const int x_in = gb_value(b, cfg->in_ch, cfg->height, cfg->width, 1);
    int x = x_in;
    if (cfg->center_input) x = gb_scale_shift(b, x, 2.0f, -1.0f);
    int h = gb_conv(b, "conv_in", x, cfg->boc[0], 3, 1, 1, 1, -1);
    gb_tap(b, h, "conv_in");

    int skips[UNET_MAX_BLOCKS * 66];
    int ns = 0;
    skips[ns++] = h;
    for (int i = 0; i < n; i++) {
        int cout = cfg->boc[i];
        for (int l = 0; l < cfg->layers; l++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, l);
            h = gb_resnet(b, p, h, cout, temb_act, cfg->groups, cfg->eps, 1.0f);
            if (cfg->down_attn[i]) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, l);
                h = gb_attention(b, p, h, cfg->head_dim ? cfg->head_dim : cout, cfg->groups, cfg->eps, 1.0f);
            }
            skips[ns++] = h;
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", i);
            int pad = cfg->downsample_padding;
            h = gb_conv(b, p, h, cout, 3, 2, pad, pad, -1);
            skips[ns++] = h;
        }
        snprintf(p, sizeof p, "down_blocks.%d", i);
        gb_tap(b, h, p);
    }
    if (cfg->mid_block) {
        int cmid = cfg->boc[n - 1];
        h = gb_resnet(b, "mid_block.resnets.0", h, cmid, temb_act, cfg->groups, cfg->eps, cfg->mid_scale);
        if (cfg->add_attention)
            h = gb_attention(b, "mid_block.attentions.0", h, cfg->head_dim ? cfg->head_dim : cmid, cfg->attn_groups, cfg->eps,
                          cfg->mid_scale);
        h = gb_resnet(b, "mid_block.resnets.1", h, cmid, temb_act, cfg->groups, cfg->eps, cfg->mid_scale);
        gb_tap(b, h, "mid_block");
    }
    for (int i = 0; i < n; i++) {
        int cout = cfg->boc[n - 1 - i];
        for (int l = 0; l < cfg->layers + 1; l++) {
            h = gb_concat(b, h, skips[--ns]);
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, l);
            h = gb_resnet(b, p, h, cout, temb_act, cfg->groups, cfg->eps, 1.0f);
            if (cfg->up_attn[i]) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, l);
                h = gb_attention(b, p, h, cfg->head_dim ? cfg->head_dim : cout, cfg->groups, cfg->eps, 1.0f);
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
    h = gb_group_norm(b, "conv_norm_out", h, cfg->groups, cfg->eps, 0);
    gb_tap(b, h, "conv_norm_out");
    h = gb_silu(b, h);
    h = gb_conv(b, "conv_out", h, cfg->out_ch, 3, 1, 1, 1, -1);
    return gb_finish(b, x_in, h);
}

