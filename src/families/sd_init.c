/* sd_init.c - `loco init` for Stable Diffusion: a complete diffusers
 * pipeline folder with random weights, from a folder of configs laid out as
 * the hub's (configs/sd21-base: Stable Diffusion 2.1-base's), for benchmarks
 * and tests at the real sizes without the real weights. */
#define _POSIX_C_SOURCE 200809L
#include "families/graph_denoiser.h"
#include "families/sd.h"
#include "families/sd_text.h"
#include "families/sd_unet.h"
#include "families/sd_vae.h"
#include "formats/weights.h"
#include "schedule.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The files a pipeline folder holds besides the weights, copied as they are
 * (the tokenizer's optional ones only where present). */
static const char *const config_files[] = {"model_index.json", "unet/config.json", "vae/config.json",
                                           "text_encoder/config.json", "scheduler/scheduler_config.json"};
static const char *const tokenizer_files[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                              "special_tokens_map.json"};
static const char *const subdirs[] = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))


static loco_status read_text(const char *dir, const char *name, char **text, size_t *len, char **path) {
    *path = fmt_path_join(dir, name);
    if (!*path) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status s = loco_check_file(*path);
    if (s == LOCO_E_NOT_FOUND) return loco_fail(LOCO_E_NOT_FOUND, "%s: no %s (a pipeline's configs)", dir, name);
    return s ? s : loco_read_file(*path, text, len, (size_t)16 << 20);
}

/* The sizes and checks of every component, before anything is written. */
typedef struct sd_configs {
    sd_unet_config unet;
    sd_vae_config vae;
    sd_text_config text;
} sd_configs;

static loco_status read_configs(const char *dir, sd_configs *c) {
    char *text = NULL, *path = NULL;
    size_t len;
    loco_status s = read_text(dir, "unet/config.json", &text, &len, &path);
    if (!s) s = sd_unet_config_parse(&c->unet, text, len, path);
    free(text);
    free(path);
    text = path = NULL;
    if (!s && !(s = read_text(dir, "vae/config.json", &text, &len, &path))) s = sd_vae_config_parse(&c->vae, text, len, path);
    free(text);
    free(path);
    text = path = NULL;
    if (!s && !(s = read_text(dir, "text_encoder/config.json", &text, &len, &path)))
        s = sd_text_config_parse(&c->text, text, len, path);
    free(text);
    free(path);
    if (!s && c->text.hidden != c->unet.cross_dim)
        s = loco_fail(LOCO_E_SHAPE, "%s: the text encoder's width (hidden_size %d) is not the UNet's "
                      "cross_attention_dim (%d)", dir, c->text.hidden, c->unet.cross_dim);
    if (!s) {
        schedule sched;
        char *sp = fmt_path_join(dir, "scheduler/scheduler_config.json");
        s = sp ? schedule_from_json(&sched, sp) : loco_fail(LOCO_E_NOMEM, "out of memory");
        if (!s) schedule_free(&sched);
        free(sp);
    }
    if (!s) {
        char *tdir = fmt_path_join(dir, "tokenizer");
        loco_tokenizer *tok = NULL;
        s = tdir ? loco_tokenizer_open(tdir, &tok) : loco_fail(LOCO_E_NOMEM, "out of memory");
        loco_tokenizer_free(tok);
        free(tdir);
    }
    return s;
}

static loco_status copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char *from = fmt_path_join(from_dir, name), *to = fmt_path_join(to_dir, name), *text = NULL;
    size_t len;
    loco_status s = from && to ? loco_read_file(from, &text, &len, (size_t)64 << 20)
                               : loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!s) s = loco_write_file_atomic(to, text, len);
    free(text);
    free(from);
    free(to);
    return s;
}

static loco_status write_weights(const sd_configs *c, const char *out, uint64_t seed, loco_dtype dtype) {
    graph g[3] = {0};
    char *up = fmt_path_join(out, "unet/diffusion_pytorch_model.safetensors");
    char *vp = fmt_path_join(out, "vae/diffusion_pytorch_model.safetensors");
    char *tp = fmt_path_join(out, "text_encoder/model.safetensors");
    loco_status s = up && vp && tp ? LOCO_OK : loco_fail(LOCO_E_NOMEM, "out of memory");
    /* the UNet at its sample_size (the weights do not depend on it) */
    sd_unet_config u = c->unet;
    u.text_len = c->text.length;
    if (!s) s = sd_unet_build(&g[0], &u);
    if (!s) {
        const graph *gs[1] = {&g[0]};
        s = graph_write_random_weights(gs, 1, up, seed, dtype);
    }
    graph_free(&g[0]);
    /* the VAE's two halves in one file, at the smallest image size */
    const int f = 1 << (c->vae.n_blocks - 1);
    if (!s) s = sd_vae_build_encoder(&g[1], &c->vae, f, f);
    if (!s) s = sd_vae_build_decoder(&g[2], &c->vae, f, f);
    if (!s) {
        const graph *gs[2] = {&g[1], &g[2]};
        s = graph_write_random_weights(gs, 2, vp, seed + 1, dtype);
    }
    if (!s) s = sd_text_write_random(&c->text, tp, seed + 2, dtype);
    graph_free(&g[1]);
    graph_free(&g[2]);
    free(up);
    free(vp);
    free(tp);
    return s;
}

static int empty_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n == 0;
}

/* Removes what write_folder may have written in tmp, then tmp. */
static void remove_partial(const char *tmp) {
    static const char *const weights[] = {"unet/diffusion_pytorch_model.safetensors",
                                          "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"};
    char *p;
    for (size_t i = 0; i < N_OF(weights); i++)
        if ((p = fmt_path_join(tmp, weights[i]))) unlink(p), free(p);
    for (size_t i = 0; i < N_OF(config_files); i++)
        if ((p = fmt_path_join(tmp, config_files[i]))) unlink(p), free(p);
    for (size_t i = 0; i < N_OF(tokenizer_files); i++) {
        char name[64];
        snprintf(name, sizeof name, "tokenizer/%s", tokenizer_files[i]);
        if ((p = fmt_path_join(tmp, name))) unlink(p), free(p);
    }
    for (size_t i = 0; i < N_OF(subdirs); i++)
        if ((p = fmt_path_join(tmp, subdirs[i]))) rmdir(p), free(p);
    rmdir(tmp);
}

static loco_status write_folder(const char *src, const sd_configs *c, const char *tmp, uint64_t seed,
                                loco_dtype dtype) {
    loco_status s = LOCO_OK;
    for (size_t i = 0; i < N_OF(subdirs) && !s; i++) {
        char *p = fmt_path_join(tmp, subdirs[i]);
        s = p ? loco_mkdir_p(p) : loco_fail(LOCO_E_NOMEM, "out of memory");
        free(p);
    }
    for (size_t i = 0; i < N_OF(config_files) && !s; i++) s = copy_file(src, tmp, config_files[i]);
    for (size_t i = 0; i < N_OF(tokenizer_files) && !s; i++) {
        char name[64];
        snprintf(name, sizeof name, "tokenizer/%s", tokenizer_files[i]);
        char *from = fmt_path_join(src, name);
        loco_status have = from ? loco_check_file(from) : LOCO_E_NOMEM;
        free(from);
        if (have == LOCO_OK) s = copy_file(src, tmp, name);
        else if (have != LOCO_E_NOT_FOUND) s = have;
    }
    if (!s) s = write_weights(c, tmp, seed, dtype);
    return s;
}

loco_status sd_init_random(const char *config_path, const char *text, size_t len, const char *out_dir, uint64_t seed,
                           loco_dtype dtype) {
    (void)text;
    (void)len;
    char *src = fmt_folder_of(config_path);
    size_t n = strlen(out_dir) + 32;
    char *tmp = malloc(n);
    sd_configs c;
    loco_status s = src && tmp ? sd_check_index(config_path) : loco_fail(LOCO_E_NOMEM, "out of memory");
    if (!s) s = read_configs(src, &c);
    struct stat st;
    if (!s && lstat(out_dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s exists and is not a folder", out_dir);
        else if (!empty_dir(out_dir))
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s exists and is not an empty folder (a pipeline is written as a "
                          "new folder)", out_dir);
    }
    if (!s) {
        snprintf(tmp, n, "%s.partial-%ld", out_dir, (long)getpid());
        s = write_folder(src, &c, tmp, seed, dtype);
        if (!s && rename(tmp, out_dir) != 0)
            s = loco_fail(LOCO_E_IO, "%s: cannot rename %s into place (%s)", out_dir, tmp, strerror(errno));
        if (s) remove_partial(tmp);
    }
    free(src);
    free(tmp);
    return s;
}
