/* formats/weights.h - what weights.c shares with convert.c: the file names
 * of a model folder's weights and the paths of a MODEL argument. */
#ifndef LOCO_FORMATS_WEIGHTS_H
#define LOCO_FORMATS_WEIGHTS_H

#include "internal.h"

/* a model folder's weights, in the order loco_weights_locate tries them */
#define FMT_WEIGHTS_ST "diffusion_pytorch_model.safetensors"
#define FMT_WEIGHTS_BIN "diffusion_pytorch_model.bin"

/* "dir/name", new memory (free); NULL when out of memory */
char *fmt_path_join(const char *dir, const char *name);

/* The folder of a MODEL argument: itself if a directory, else its parent
 * ("." when it has none). New memory (free); NULL when out of memory. */
char *fmt_folder_of(const char *path);

#endif
