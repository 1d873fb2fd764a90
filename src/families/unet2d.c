/* unet2d.c - the diffusers UNet2DModel family: opening a folder (config.json,
 * weights, scheduler/scheduler_config.json), its `loco info` text, and new
 * folders with random weights. The network is a graph (unet2d_graph.c)
 * evaluated by the shared graph denoiser. */
#define _POSIX_C_SOURCE 200809L
#include "families/graph_denoiser.h"
#include "families/unet2d.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEIGHTS_NAME "diffusion_pytorch_model.safetensors"

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* The folder of a MODEL argument: itself if a directory, else its parent. */
static char *model_dir(const char *path) {
    if (loco_is_dir(path)) return strdup(path);
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static void describe(const void *self, sbuf *b) {
    const graph_denoiser *gd = self;
    const unet_config *c = gd->cfg;
    const graph *u = &gd->g;
    sb_printf(b, "class: UNet2DModel, %d -> %d channels, %dx%d\n", c->in_ch, c->out_ch, c->height, c->width);
    sb_printf(b, "parameters: %lld (%.2f M)\n", (long long)u->total_params, u->total_params / 1e6);
    sb_printf(b, "time embedding: positional %d -> %d, flip_sin_to_cos %s, freq_shift %g\n", c->boc[0], c->temb_dim,
              c->flip_sin_to_cos ? "true" : "false", c->freq_shift);
    sb_printf(b, "norm: %d groups, eps %g; layers per block %d; downsample padding %d\n", c->groups, c->eps, c->layers,
              c->downsample_padding);
    int h = c->height, w = c->width;
    for (int i = 0; i < c->n_blocks; i++) {
        int hd = c->head_dim ? c->head_dim : c->boc[i];
        sb_printf(b, "  down_blocks.%d: %-15s %4d ch at %dx%d", i, c->down_attn[i] ? "AttnDownBlock2D" : "DownBlock2D",
                  c->boc[i], h, w);
        if (c->down_attn[i]) sb_printf(b, ", %d head(s) of %d", c->boc[i] / hd, hd);
        sb_printf(b, "%s\n", i < c->n_blocks - 1 ? ", downsample" : "");
        if (i < c->n_blocks - 1) {
            h /= 2;
            w /= 2;
        }
    }
    if (c->mid_block) {
        int cm = c->boc[c->n_blocks - 1], hd = c->head_dim ? c->head_dim : cm;
        sb_printf(b, "  mid_block:     UNetMidBlock2D  %4d ch at %dx%d", cm, h, w);
        if (c->add_attention) sb_printf(b, ", %d head(s) of %d", cm / hd, hd);
        sb_printf(b, ", scale %g\n", c->mid_scale);
    }
    for (int i = 0; i < c->n_blocks; i++) {
        int ch = c->boc[c->n_blocks - 1 - i], hd = c->head_dim ? c->head_dim : ch;
        sb_printf(b, "  up_blocks.%d:   %-15s %4d ch at %dx%d", i, c->up_attn[i] ? "AttnUpBlock2D" : "UpBlock2D", ch, h, w);
        if (c->up_attn[i]) sb_printf(b, ", %d head(s) of %d", ch / hd, hd);
        sb_printf(b, "%s\n", i < c->n_blocks - 1 ? ", upsample" : "");
        if (i < c->n_blocks - 1) {
            h *= 2;
            w *= 2;
        }
    }
    gd_describe_costs(gd, b);
}

static const denoiser_vtable vtable = GRAPH_DENOISER_VTABLE("UNet2DModel", describe);

static loco_status open_unet2d(const char *path, const loco_open_params *p, denoiser *d, schedule *sched) {
    char *dir = model_dir(path);
    char *cfg_path = dir ? join(dir, "config.json") : NULL, *sched_path = dir ? join(dir, "scheduler/scheduler_config.json") : NULL,
         *w_path = NULL;
    unet_config *cfg = malloc(sizeof *cfg);
    graph g = {0};
    graph_denoiser *gd = NULL;
    loco_status s = LOCO_OK;
    if (!dir || !cfg_path || !sched_path || !cfg) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    if (!loco_is_dir(dir)) {
        s = loco_fail(LOCO_E_IO, "%s: not a model folder", path);
        goto done;
    }
    /* a folder, FIFO or device in its place is named as such */
    if ((s = loco_check_file(cfg_path)) == LOCO_E_NOT_FOUND)
        s = loco_fail(LOCO_E_NOT_FOUND, "%s: no config.json in the model folder", dir);
    if (s || (s = unet_config_read(cfg_path, cfg))) goto done;
    if ((s = unet2d_build(&g, cfg))) {
        s = loco_fail_in(s, cfg_path);
        goto done;
    }
    /* the safetensors file, else diffusion_pytorch_model.bin (formats) */
    if ((s = loco_weights_locate(dir, path, &w_path)) || (s = graph_load_weights(&g, w_path))) goto done;
    /* no scheduler config: the default schedule; something else in its
     * place is an error, not a reason to fall back */
    s = loco_check_file(sched_path);
    if (s == LOCO_OK) s = schedule_from_json(sched, sched_path);
    else if (s == LOCO_E_NOT_FOUND) s = schedule_default(sched);
    if (s) goto done;
    if ((s = gd_new(&g, cfg, "UNet2DModel", &gd))) goto done;
    cfg = NULL; /* gd owns it */
    gd->n_blocks = ((const unet_config *)gd->cfg)->n_blocks;
    d->vt = &vtable;
    d->self = gd;
done:
    graph_free(&g);
    free(cfg);
    free(dir);
    free(cfg_path);
    free(sched_path);
    free(w_path);
    return s;
}

static loco_status init_unet2d(const char *config_path, const char *text, size_t len, const char *out_dir,
                               uint64_t seed, loco_dtype dtype) {
    unet_config cfg;
    graph u;
    loco_status s;
    if ((s = unet_config_parse(&cfg, text, len, config_path)) || (s = unet2d_build(&u, &cfg))) return s;
    s = graph_write_random(&u, out_dir, WEIGHTS_NAME, text, len, seed, dtype);
    graph_free(&u);
    return s;
}

const family_entry family_unet2d = {"UNet2DModel", open_unet2d, init_unet2d, NULL};
