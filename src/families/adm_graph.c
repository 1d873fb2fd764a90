/* adm_graph.c - guided-diffusion's UNetModel ("ADM") as a graph, module by
 * module as guided-diffusion's unet.py builds it (names are the state_dict's
 * keys):
 *   emb   = time_embed(timestep_embedding(t, C))      cos first, no shift
 *   h     = input_blocks.0 (3x3 conv); every input block's output is a skip
 *   levels: num_res_blocks x [ResBlock (+ AttentionBlock)], then (but for the
 *           last level) a downsampler: ResBlock(down) or a strided conv .op
 *   middle_block: ResBlock, AttentionBlock, ResBlock
 *   output_blocks: h = cat(h, skip) then ResBlock (+ AttentionBlock) (+ an
 *           upsampler: ResBlock(up) or nearest x2 and a 3x3 conv)
 *   out   = conv(SiLU(GroupNorm(h))); eps = its first 3 channels
 * ResBlock: in_layers GN, SiLU, conv (an up/down block resamples between SiLU
 * and conv, and resamples x for the skip); emb_layers SiLU, Linear; with
 * scale-shift, h = SiLU(GN(h) (1 + scale) + shift), else h = SiLU(GN(h + e));
 * out_layers' conv; skip_connection 1x1 when the channels change.
 * GroupNorm32: 32 groups, eps 1e-5. Attention: the legacy QKV order (see
 * graph.h, PARAM_QKV_LEGACY), softmax(q^T k / sqrt(C/heads)), residual. */
#include "families/adm.h"

#include <stdio.h>
#include <string.h>

#define GN_EPS 1e-5f

typedef struct adm_builder {
    gbuilder *b;
    const adm_config *c;
    int emb_act; /* SiLU(emb): every emb_layers starts with it */
} adm_builder;

/* 0: plain, 1: down, 2: up */
static int resblock(adm_builder *ab, const char *prefix, int in, int cout, int updown) {
    gbuilder *b = ab->b;
    const adm_config *c = ab->c;
    if (b->err) return -1;
    char p[128]; /* bounded indices: a longer name is refused by gb_param */
    snprintf(p, sizeof p, "%s.in_layers.0", prefix);
    int h = gb_group_norm(b, p, in, ADM_GROUPS, GN_EPS, 1);
    int x = in;
    if (updown == 1) {
        h = gb_avgpool(b, h);
        x = gb_avgpool(b, x);
    } else if (updown == 2) {
        h = gb_upsample(b, h);
        x = gb_upsample(b, x);
    }
    snprintf(p, sizeof p, "%s.emb_layers.1", prefix);
    int e = gb_linear(b, p, ab->emb_act, c->use_scale_shift_norm ? 2 * cout : cout);
    snprintf(p, sizeof p, "%s.in_layers.2", prefix);
    h = gb_conv(b, p, h, cout, 3, 1, 1, 1, c->use_scale_shift_norm ? -1 : e);
    snprintf(p, sizeof p, "%s.out_layers.0", prefix);
    if (c->use_scale_shift_norm) {
        h = gb_group_norm(b, p, h, ADM_GROUPS, GN_EPS, 0);
        h = gb_film(b, h, e, 1);
    } else {
        h = gb_group_norm(b, p, h, ADM_GROUPS, GN_EPS, 1);
    }
    snprintf(p, sizeof p, "%s.out_layers.3", prefix);
    h = gb_conv(b, p, h, cout, 3, 1, 1, 1, -1);
    if (!b->err && b->g->values[x].c != cout) {
        snprintf(p, sizeof p, "%s.skip_connection", prefix);
        x = gb_conv(b, p, x, cout, 1, 1, 0, 0, -1);
    }
    return gb_add(b, x, h, 1.0f);
}

static int attention(adm_builder *ab, const char *prefix, int in, int upsample) {
    if (ab->b->err) return -1;
    const int ch = ab->b->g->values[in].c;
    return gb_attention_qkv(ab->b, prefix, in, adm_heads(ab->c, ch, upsample), ADM_GROUPS, GN_EPS);
}

loco_status adm_build(graph *g, const adm_config *c) {
    memset(g, 0, sizeof *g);
    loco_status s = adm_config_validate(c);
    if (s) return s;
    gbuilder bb = {g, LOCO_OK}, *b = &bb;
    adm_builder ab = {b, c, -1};
    char p[128];
    const int C = c->model_ch, L = c->n_levels, R = c->num_res_blocks;

    int te = gb_temb(b, C, 1, 0.0f);
    gb_tap(b, te, "timestep_embedding");
    te = gb_linear(b, "time_embed.0", te, 4 * C);
    te = gb_silu(b, te);
    te = gb_linear(b, "time_embed.2", te, 4 * C);
    gb_tap(b, te, "time_embed");
    ab.emb_act = gb_silu(b, te);

    const int x_in = gb_value(b, c->in_ch, c->image_size, c->image_size, 1);
    int skips[ADM_MAX_LEVELS * 66], ns = 0, blk = 0;
    int h = gb_conv(b, "input_blocks.0.0", x_in, c->level_ch[0], 3, 1, 1, 1, -1);
    gb_tap(b, h, "input_blocks.0");
    skips[ns++] = h;
    blk = 1;
    for (int lv = 0; lv < L; lv++) {
        for (int r = 0; r < R; r++, blk++) {
            snprintf(p, sizeof p, "input_blocks.%d.0", blk);
            h = resblock(&ab, p, h, c->level_ch[lv], 0);
            if (c->attn_level[lv]) {
                snprintf(p, sizeof p, "input_blocks.%d.1", blk);
                h = attention(&ab, p, h, 0);
            }
            snprintf(p, sizeof p, "input_blocks.%d", blk);
            gb_tap(b, h, p);
            skips[ns++] = h;
        }
        if (lv != L - 1) {
            const int ch = c->level_ch[lv];
            if (c->resblock_updown) {
                snprintf(p, sizeof p, "input_blocks.%d.0", blk);
                h = resblock(&ab, p, h, ch, 1);
            } else {
                snprintf(p, sizeof p, "input_blocks.%d.0.op", blk);
                h = gb_conv(b, p, h, ch, 3, 2, 1, 1, -1);
            }
            snprintf(p, sizeof p, "input_blocks.%d", blk);
            gb_tap(b, h, p);
            skips[ns++] = h;
            blk++;
        }
    }
    const int cm = c->level_ch[L - 1];
    h = resblock(&ab, "middle_block.0", h, cm, 0);
    h = attention(&ab, "middle_block.1", h, 0);
    h = resblock(&ab, "middle_block.2", h, cm, 0);
    gb_tap(b, h, "middle_block");
    blk = 0;
    for (int lv = L - 1; lv >= 0; lv--) {
        for (int r = 0; r <= R; r++, blk++) {
            int m = 0;
            h = gb_concat(b, h, skips[--ns]);
            snprintf(p, sizeof p, "output_blocks.%d.%d", blk, m++);
            h = resblock(&ab, p, h, c->level_ch[lv], 0);
            if (c->attn_level[lv]) {
                snprintf(p, sizeof p, "output_blocks.%d.%d", blk, m++);
                h = attention(&ab, p, h, 1);
            }
            if (lv && r == R) {
                const int ch = c->level_ch[lv];
                if (c->resblock_updown) {
                    snprintf(p, sizeof p, "output_blocks.%d.%d", blk, m++);
                    h = resblock(&ab, p, h, ch, 2);
                } else {
                    snprintf(p, sizeof p, "output_blocks.%d.%d.conv", blk, m++);
                    h = gb_upsample(b, h);
                    h = gb_conv(b, p, h, ch, 3, 1, 1, 1, -1);
                }
            }
            snprintf(p, sizeof p, "output_blocks.%d", blk);
            gb_tap(b, h, p);
        }
    }
    h = gb_group_norm(b, "out.0", h, ADM_GROUPS, GN_EPS, 1);
    h = gb_conv(b, "out.2", h, c->out_ch, 3, 1, 1, 1, -1);
    gb_tap(b, h, "out");
    /* eps: the first in_ch channels (a learn_sigma model's others are the
     * variance interpolation LOCO Edit does not use) */
    if (c->out_ch != c->in_ch) h = gb_slice(b, h, c->in_ch);
    return gb_finish(b, x_in, h);
}
