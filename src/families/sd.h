/* sd.h - the Stable Diffusion family's pieces shared between opening
 * (sd.c) and writing new pipeline folders (sd_init.c). Internal. */
#ifndef LOCO_FAMILY_SD_H
#define LOCO_FAMILY_SD_H
#include "internal.h"

/* model_index.json at path names the components loco reads (unet
 * UNet2DConditionModel, vae AutoencoderKL, text_encoder CLIPTextModel,
 * tokenizer CLIPTokenizer[Fast]); an error names the component otherwise. */
loco_status sd_check_index(const char *path);

/* `loco init` for a pipeline: config_path is a model_index.json (text: its
 * contents) in a folder laid out as the hub's (unet/config.json,
 * vae/config.json, text_encoder/config.json, tokenizer/,
 * scheduler/scheduler_config.json). Every config is read and checked (and the
 * text width against the UNet's cross-attention width) before anything is
 * written; then out_dir is written as a complete pipeline folder with random
 * weights (seeded, as dtype F32 or F16) and copies of the configs and the
 * tokenizer files. out_dir appears whole or not at all: it is written beside
 * itself and renamed into place; an existing out_dir that is not an empty
 * folder is an error. */
loco_status sd_init_random(const char *config_path, const char *text, size_t len, const char *out_dir, uint64_t seed,
                           loco_dtype dtype);
#endif
