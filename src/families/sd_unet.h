/* sd_unet.h - diffusers' UNet2DConditionModel (Stable Diffusion's UNet): its
 * config.json (sd_unet_config.c) and its network as a graph with a
 * conditioning input, the text embeddings (sd_unet_graph.c). */
#ifndef LOCO_FAMILY_SD_UNET_H
#define LOCO_FAMILY_SD_UNET_H

#include "graph/graph.h"

#define SD_MAX_BLOCKS 8

typedef struct sd_unet_config {
    int in_ch, out_ch;                  /* latent channels                        */
    int height, width;                  /* the latent size the graph is built for:
                                           sample_size unless the caller sets it */
    int n_blocks;
    int boc[SD_MAX_BLOCKS];             /* block_out_channels                    */
    int down_xattn[SD_MAX_BLOCKS];      /* CrossAttnDownBlock2D?                 */
    int up_xattn[SD_MAX_BLOCKS];        /* CrossAttnUpBlock2D? (up block order)  */
    int heads[SD_MAX_BLOCKS];           /* attention heads per down block (diffusers: num_attention_heads, or
                                           attention_head_dim used as the head count, an int or a list) */
    int tlayers[SD_MAX_BLOCKS];         /* transformer_layers_per_block per down block */
    int layers;                         /* layers_per_block                      */
    int groups;                         /* norm_num_groups                       */
    float eps;                          /* norm_eps (resnets)                    */
    int cross_dim;                      /* cross_attention_dim                   */
    int linear_proj;                    /* use_linear_projection                 */
    int flip_sin_to_cos;
    float freq_shift;
    int downsample_padding;
    float mid_scale;
    int mid_block;                      /* UNetMidBlock2DCrossAttn present       */
    int temb_dim;                       /* 4 * boc[0] unless time_embedding_dim  */
    int text_len;                       /* tokens of the conditioning (77)       */
} sd_unet_config;

/* Parses and checks a UNet2DConditionModel config.json (path for messages).
 * Features Stable Diffusion 1.x/2.x do not use (class or addition
 * embeddings, time_cond_proj_dim, dual cross-attention...) are refused by
 * name. */
loco_status sd_unet_config_parse(sd_unet_config *c, const char *text, size_t len, const char *path);

/* The graph: input the latent [in_ch, H, W], conditioning the text
 * embeddings as [cross_dim, 1, text_len] (channels first), output eps (or
 * v). On failure g is left empty. */
loco_status sd_unet_build(graph *g, const sd_unet_config *c);

#endif
