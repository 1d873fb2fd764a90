/* unet2d.h - the diffusers UNet2DModel family: its config.json
 * (unet2d_config.c), its network as a graph (unet2d_graph.c) and its
 * denoiser (unet2d.c, registered in registry.c). */
#ifndef LOCO_FAMILY_UNET2D_H
#define LOCO_FAMILY_UNET2D_H

#include "graph/graph.h"

#define UNET_MAX_BLOCKS 16

typedef struct unet_config {
    int in_ch, out_ch, height, width;
    int n_blocks;
    int boc[UNET_MAX_BLOCKS];      /* block_out_channels                   */
    int down_attn[UNET_MAX_BLOCKS]; /* AttnDownBlock2D?                     */
    int up_attn[UNET_MAX_BLOCKS];   /* AttnUpBlock2D?                       */
    int layers;                    /* layers_per_block                     */
    int groups;                    /* norm_num_groups                      */
    int attn_groups;               /* mid-block attention groups           */
    float eps;                     /* norm_eps                             */
    int head_dim;                  /* attention_head_dim; 0 = full width   */
    int flip_sin_to_cos;
    float freq_shift;
    int downsample_padding;
    float mid_scale;               /* mid_block_scale_factor               */
    int center_input;
    int mid_block;                 /* UNetMidBlock2D present               */
    int add_attention;
    int temb_dim;                  /* time_embedding_dim                   */
} unet_config;

/* Parses and validates a UNet2DModel config.json text. path for messages. */
loco_status unet_config_parse(unet_config *c, const char *text, size_t len, const char *path);
/* Reads and parses the config.json at path. */
loco_status unet_config_read(const char *path, unet_config *c);

/* Builds the graph for cfg (no weights yet): fills params, values, nodes and
 * the memory plan. On failure g is left empty. */
loco_status unet2d_build(graph *g, const unet_config *cfg);

#endif
