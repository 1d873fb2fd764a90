/* sd_files.h - the files of a Stable Diffusion pipeline folder: where each
 * component's weights are (the fp16 variant files included), and the
 * conversion of a whole folder (loco convert). */
#ifndef LOCO_FAMILY_SD_FILES_H
#define LOCO_FAMILY_SD_FILES_H

#include "internal.h"

/* The weights of a pipeline component folder (unet/, vae/: is_text 0;
 * text_encoder/: is_text 1), the first present of
 *   diffusion_pytorch_model.safetensors, diffusion_pytorch_model.bin,
 *   diffusion_pytorch_model.fp16.safetensors, diffusion_pytorch_model.fp16.bin
 * (the text encoder: model.safetensors, pytorch_model.bin,
 * model.fp16.safetensors, pytorch_model.fp16.bin). The ".fp16" names are the
 * files diffusers writes for variant="fp16". *path: new memory (free). A
 * folder, FIFO or device in the place of the first name present is an
 * error, as is finding none (naming the folder and the names). */
loco_status sd_weights_locate(const char *dir, int is_text, char **path);

/* loco convert of a pipeline folder: out_dir gets the same folder with each
 * component's weights (unet/, vae/: diffusion_pytorch_model.safetensors;
 * text_encoder/: model.safetensors) in dtype (F32, F16, or LOCO_DTYPE_COUNT:
 * kept), and the configs, tokenizer and scheduler files copied. Every
 * weight is checked first (finite, and within F16's range, |x| <= 65504,
 * for F16): a value that does not fit is LOCO_E_NUMERIC naming the file,
 * tensor and element, and nothing is written. */
loco_status sd_convert(const char *path, const loco_open_params *p, const char *out_dir, loco_dtype dtype);

#endif
