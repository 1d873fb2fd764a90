/* sd_files.c - the files of a Stable Diffusion pipeline folder: each
 * component's weights (the fp16 variant included) and the conversion of the
 * whole folder. */
#define _POSIX_C_SOURCE 200809L
#include "families/sd_files.h"

#include "formats/weights.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

loco_status sd_weights_locate(const char *dir, int is_text, char **path) {
    static const char *const plain[4] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                                         "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin"};
    static const char *const text[4] = {"model.safetensors", "pytorch_model.bin", "model.fp16.safetensors",
                                        "pytorch_model.fp16.bin"};
    const char *const *names = is_text ? text : plain;
    *path = NULL;
    for (int i = 0; i < 4; i++) {
        char *p = fmt_path_join(dir, names[i]);
        if (!p) return loco_fail(LOCO_E_NOMEM, "out of memory");
        loco_status s = loco_check_file(p);
        if (s == LOCO_OK) {
            *path = p;
            return LOCO_OK;
        }
        free(p);
        if (s != LOCO_E_NOT_FOUND) return s;
    }
    return loco_fail(LOCO_E_NOT_FOUND, "%s: no weights (%s, %s, %s or %s)", dir, names[0], names[1], names[2],
                     names[3]);
}

/* the pipeline's components and what a converted folder holds */
static const char *const weight_dirs[3] = {"unet", "vae", "text_encoder"};
static const char *const copied_dirs[5] = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"};

/* Copies the regular files of from/ (configs, tokenizer files) into to/,
 * except weight files (*.safetensors, *.bin). */
static loco_status copy_configs(const char *from, const char *to) {
    DIR *d = opendir(from);
    if (!d) return LOCO_OK; /* an optional folder; open_sd has checked those it needs */
    loco_status s = loco_mkdir_p(to);
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        const char *nm = e->d_name;
        size_t len = strlen(nm);
        if (nm[0] == '.' || (len > 12 && strcmp(nm + len - 12, ".safetensors") == 0) ||
            (len > 4 && strcmp(nm + len - 4, ".bin") == 0))
            continue;
        char *src = fmt_path_join(from, nm), *dst = fmt_path_join(to, nm);
        struct stat st;
        if (!src || !dst) s = loco_fail(LOCO_E_NOMEM, "out of memory");
        else if (stat(src, &st) == 0 && S_ISREG(st.st_mode)) s = fmt_copy_file(src, dst);
        free(src);
        free(dst);
    }
    closedir(d);
    return s;
}

loco_status sd_convert(const char *path, const loco_open_params *p, const char *out_dir, loco_dtype dtype) {
    (void)p;
    if (dtype != LOCO_DTYPE_F32 && dtype != LOCO_DTYPE_F16 && dtype != LOCO_DTYPE_COUNT)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "convert: the dtype must be F32 or F16 (or kept)");
    char *dir = loco_is_dir(path) ? strdup(path) : fmt_folder_of(path);
    char *src[3] = {NULL}, *wsrc[3] = {NULL};
    loco_status s = dir ? LOCO_OK : loco_fail(LOCO_E_NOMEM, "out of memory");
    for (int i = 0; !s && i < 3; i++) {
        if (!(src[i] = fmt_path_join(dir, weight_dirs[i]))) s = loco_fail(LOCO_E_NOMEM, "out of memory");
        else s = sd_weights_locate(src[i], i == 2, &wsrc[i]);
    }
    /* 1. every value of every component converts; nothing written yet */
    for (int i = 0; !s && dtype != LOCO_DTYPE_COUNT && i < 3; i++) s = fmt_convert_weights(wsrc[i], NULL, dtype);
    /* 2. the folder */
    if (!s) s = loco_mkdir_p(out_dir);
    for (int i = 0; !s && i < 5; i++) {
        char *from = fmt_path_join(dir, copied_dirs[i]), *to = fmt_path_join(out_dir, copied_dirs[i]);
        s = from && to ? copy_configs(from, to) : loco_fail(LOCO_E_NOMEM, "out of memory");
        free(from);
        free(to);
    }
    if (!s) {
        char *from = fmt_path_join(dir, "model_index.json"), *to = fmt_path_join(out_dir, "model_index.json");
        s = from && to ? fmt_copy_file(from, to) : loco_fail(LOCO_E_NOMEM, "out of memory");
        free(from);
        free(to);
    }
    for (int i = 0; !s && i < 3; i++) {
        char *sub = fmt_path_join(out_dir, weight_dirs[i]);
        char *to = sub ? fmt_path_join(sub, i == 2 ? "model.safetensors" : FMT_WEIGHTS_ST) : NULL;
        s = to ? fmt_convert_weights(wsrc[i], to, dtype) : loco_fail(LOCO_E_NOMEM, "out of memory");
        free(sub);
        free(to);
    }
    for (int i = 0; i < 3; i++) {
        free(src[i]);
        free(wsrc[i]);
    }
    free(dir);
    return s;
}
