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

/* Copies a file of at most 16 MiB (a config) to `to`, atomically
 * (convert.c). */
loco_status fmt_copy_file(const char *from, const char *to);

/* Reads every tensor of the weights file wpath (either format), converts the
 * floating-point ones to dtype (F32 or F16; LOCO_DTYPE_COUNT keeps them) and
 * writes them to out_path as safetensors (metadata format=pt). out_path NULL:
 * only checks that every value converts, one tensor at a time, writing
 * nothing. A value that is not finite, or beyond the range of dtype (F16:
 * |x| > 65504), is LOCO_E_NUMERIC naming wpath, the tensor and the element
 * (convert.c). */
loco_status fmt_convert_weights(const char *wpath, const char *out_path, loco_dtype dtype);

#endif
