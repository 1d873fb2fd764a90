/* registry.c - which family opens a path, or reads a config.
 *
 *   a MoLRG model file                      -> MoLRG (families/molrg.c)
 *   a folder (or a file inside one) with model_index.json
 *                                           -> Stable Diffusion (families/sd.c)
 *   a folder (or a file inside one) with config.json:
 *       "_class_name": "ADMUNetModel"       -> ADM (families/adm.c)
 *       anything else                       -> UNet2DModel (families/unet2d.c,
 *                                              whose parser names what is wrong)
 *   a checkpoint file with no config.json   -> ADM, a bare guided-diffusion
 *                                              checkpoint (flags inferred),
 *                                              unless named diffusion_pytorch_model.*
 *   a folder without config.json            -> an error saying so */
#define _POSIX_C_SOURCE 200809L
#include "denoiser.h"
#include "families/molrg.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The "_class_name" of a config text, or "" (out: bounded copy). */
static void config_class(const char *text, size_t len, char *out, size_t n) {
    out[0] = 0;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "_class_name");
    if (cJSON_IsString(c)) snprintf(out, n, "%s", c->valuestring);
    cJSON_Delete(root);
}

static const family_entry *by_class(const char *cls) {
    if (strcmp(cls, "ADMUNetModel") == 0) return &family_adm;
    if (strcmp(cls, "StableDiffusionPipeline") == 0) return &family_sd;
    return &family_unet2d;
}

loco_status registry_family_of_config(const char *config_path, const char *text, size_t len,
                                      const family_entry **fam) {
    char cls[64];
    config_class(text, len, cls, sizeof cls);
    *fam = by_class(cls);
    (void)config_path;
    return LOCO_OK;
}

loco_status registry_family_of_path(const char *path, const family_entry **fam) {
    *fam = NULL;
    if (molrg_is_file(path)) {
        *fam = &family_molrg;
        return LOCO_OK;
    }
    /* the folder of the argument: itself, or the file's */
    char *dir;
    if (loco_is_dir(path)) dir = strdup(path);
    else {
        const char *slash = strrchr(path, '/');
        dir = !slash ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    }
    size_t n = dir ? strlen(dir) + sizeof "/model_index.json" : 0;
    char *cfg = dir ? malloc(n) : NULL;
    if (!cfg) {
        free(dir);
        return loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    snprintf(cfg, n, "%s/model_index.json", dir);
    if (loco_check_file(cfg) == LOCO_OK) {
        *fam = &family_sd;
        free(cfg);
        free(dir);
        return LOCO_OK;
    }
    snprintf(cfg, n, "%s/config.json", dir);
    loco_status s = loco_check_file(cfg);
    if (s == LOCO_OK) {
        char *text;
        size_t len;
        if ((s = loco_read_file(cfg, &text, &len, 1 << 20)) == LOCO_OK) {
            s = registry_family_of_config(cfg, text, len, fam);
            free(text);
        }
    } else if (s == LOCO_E_NOT_FOUND) {
        /* a checkpoint file on its own is a bare guided-diffusion one
         * (unless diffusers named it); a folder needs its config */
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        if (!loco_is_dir(path) && strncmp(base, "diffusion_pytorch_model.", 24) != 0) {
            *fam = &family_adm;
            s = LOCO_OK;
        } else {
            s = loco_fail(LOCO_E_NOT_FOUND, "%s: no config.json in the model folder", path);
        }
    }
    free(cfg);
    free(dir);
    return s;
}
