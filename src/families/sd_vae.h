/* sd_vae.h - diffusers' AutoencoderKL (Stable Diffusion's VAE) as two graphs:
 * the encoder (image in [-1, 1] -> posterior mean) and the decoder (the
 * pipeline's latent -> image), built from a diffusers vae/config.json and
 * loaded from the one weights file that holds both halves. Internal API: the
 * Stable Diffusion family composes it with the UNet and the text encoder.
 *
 * Latents are the pipeline's: encode returns (mean - shift_factor) *
 * scaling_factor, and the decoder graph starts with latent / scaling_factor +
 * shift_factor as its first node, so that the decoder's Jacobian (graph_lin
 * over sd_vae_decoder) is with respect to the latent the pipeline holds. */
#ifndef LOCO_FAMILY_SD_VAE_H
#define LOCO_FAMILY_SD_VAE_H

#include "graph/graph.h"

#define SD_VAE_MAX_BLOCKS 16

typedef struct sd_vae_config {
    int in_ch, out_ch, latent_ch;   /* image and latent channels              */
    int n_blocks;
    int boc[SD_VAE_MAX_BLOCKS];     /* block_out_channels                     */
    int layers;                     /* layers_per_block (decoder: + 1)        */
    int groups;                     /* norm_num_groups                        */
    int height, width;              /* sample_size (image pixels)             */
    float scaling_factor;           /* default 0.18215                        */
    float shift_factor;             /* null -> 0                              */
    int force_upcast;               /* recorded only: loco computes in fp32   */
    int use_quant_conv, use_post_quant_conv;
    int mid_attention;              /* mid_block_add_attention                */
} sd_vae_config;

/* The GroupNorm eps diffusers' Encoder and Decoder use throughout. */
#define SD_VAE_EPS 1e-6f

/* Parses and validates an AutoencoderKL config.json text (path for
 * messages): types, ranges, the supported block types, duplicates; unknown
 * keys are logged and ignored. */
loco_status sd_vae_config_parse(sd_vae_config *c, const char *text, size_t len, const char *path);
loco_status sd_vae_config_read(const char *path, sd_vae_config *c);

/* The graphs for images of height x width pixels (divisible by the
 * downsampling factor 2^(n_blocks-1)), no weights yet. Encoder: [in_ch, H, W]
 * -> mean [latent_ch, H/f, W/f] (unscaled). Decoder: the pipeline's latent
 * [latent_ch, H/f, W/f] -> [out_ch, H, W]. On failure g is left empty. */
loco_status sd_vae_build_encoder(graph *g, const sd_vae_config *c, int height, int width);
loco_status sd_vae_build_decoder(graph *g, const sd_vae_config *c, int height, int width);

typedef struct sd_vae sd_vae;

/* Opens a diffusers vae/ folder: config.json and
 * diffusion_pytorch_model.safetensors (else .bin). sd_vae_open uses the
 * config's sample_size as the image size; sd_vae_open_sized takes another
 * (0, 0: sample_size), as Stable Diffusion pipelines do (their size comes
 * from the UNet's sample_size times the downsampling factor). */
loco_status sd_vae_open(const char *vae_dir, sd_vae **out);
loco_status sd_vae_open_sized(const char *vae_dir, int height, int width, sd_vae **out);
void sd_vae_free(sd_vae *v);

/* image [B, in_ch, H, W] in [-1, 1] -> latent [B, latent_ch, H/f, W/f] =
 * (posterior mean - shift_factor) * scaling_factor (the pipeline's latent;
 * the mean, not a sample). Non-finite inputs are refused. */
loco_status sd_vae_encode(sd_vae *v, int B, const float *image, float *latent);
/* latent [B, latent_ch, H/f, W/f] (the pipeline's) -> image [B, out_ch, H, W]
 * (not clamped). */
loco_status sd_vae_decode(sd_vae *v, int B, const float *latent, float *image);

/* The graphs (owned by v), e.g. for graph_lin_new(sd_vae_decoder(v), z, 0,
 * &L): J V and U^T J of the decoded image with respect to the latent. */
const graph *sd_vae_encoder(const sd_vae *v);
const graph *sd_vae_decoder(const sd_vae *v);
const sd_vae_config *sd_vae_get_config(const sd_vae *v);
float sd_vae_scaling_factor(const sd_vae *v);
/* image pixels per latent position along each axis: 2^(n_blocks-1) */
int sd_vae_downsample_factor(const sd_vae *v);
typedef struct sd_vae_sizes {
    int image_ch, out_ch, height, width;  /* encoder input / decoder output  */
    int latent_ch, latent_h, latent_w;
    size_t image_floats, out_floats, latent_floats; /* per image          */
} sd_vae_sizes;
void sd_vae_get_sizes(const sd_vae *v, sd_vae_sizes *s);

#endif
