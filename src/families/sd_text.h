/* sd_text.h - Stable Diffusion's text encoder: transformers' CLIPTextModel
 * (the last hidden state after the final LayerNorm, what the pipelines give
 * the UNet as encoder_hidden_states), read from a diffusers `text_encoder/`
 * folder: config.json (CLIPTextConfig) and model.safetensors or
 * pytorch_model.bin. Internal to the library. */
#ifndef LOCO_FAMILY_SD_TEXT_H
#define LOCO_FAMILY_SD_TEXT_H

#include "internal.h"
#include "ops.h"

#include <stdint.h>

typedef struct sd_text_config {
    int hidden;   /* hidden_size                          */
    int inter;    /* intermediate_size                    */
    int heads;    /* num_attention_heads (divides hidden) */
    int layers;   /* num_hidden_layers                    */
    int length;   /* max_position_embeddings: tokens T    */
    int vocab;    /* vocab_size                           */
    act_kind act; /* hidden_act: quick_gelu or gelu       */
    float eps;    /* layer_norm_eps                       */
} sd_text_config;

/* Parses and validates a CLIPTextConfig config.json text (absent keys take
 * CLIPTextConfig's defaults, as transformers writes only the keys that
 * differ from them). path for messages, which name it and the key. */
loco_status sd_text_config_parse(sd_text_config *c, const char *text, size_t len, const char *path);
loco_status sd_text_config_read(const char *path, sd_text_config *c);

/* Writes a CLIPTextModel weights file (path: model.safetensors) for config
 * c with random values (seeded), as dtype (F32 or F16): the tensors and
 * shapes sd_text_open reads back. */
loco_status sd_text_write_random(const sd_text_config *c, const char *path, uint64_t seed, loco_dtype dtype);

typedef struct sd_text sd_text;

/* Opens the text encoder in folder dir: dir/config.json, and the weights
 * dir/model.safetensors or else dir/pytorch_model.bin, every tensor's name,
 * dtype and shape checked against the config (a text_model.embeddings.
 * position_ids buffer is accepted and ignored; any other tensor is an
 * error). On failure *out is NULL. */
loco_status sd_text_open(const char *dir, sd_text **out);
void sd_text_free(sd_text *te);

const sd_text_config *sd_text_cfg(const sd_text *te);
int sd_text_width(const sd_text *te);  /* hidden_size: floats per token of the output */
int sd_text_length(const sd_text *te); /* max_position_embeddings: tokens T per sequence */

/* emb [B, T, hidden] (token-major, as torch's last_hidden_state) of ids
 * [B, T], T = sd_text_length(te): token + position embeddings; per layer
 * x += out_proj(causal self-attention(LN1(x))), x += fc2(act(fc1(LN2(x))));
 * then the final LayerNorm. An id outside [0, vocab_size) is an error
 * (LOCO_E_INVALID_ARGUMENT) naming its sequence and position. */
loco_status sd_text_encode(const sd_text *te, int B, const int64_t *ids, float *emb);

#endif
