/* graph_denoiser.c - the denoiser functions shared by graph families. */
#include "families/graph_denoiser.h"

#include "graph/lin.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

loco_status gd_new(graph *g, void *cfg, const char *family, graph_denoiser **out) {
    *out = NULL;
    graph_denoiser *gd = calloc(1, sizeof *gd);
    if (!gd) return loco_fail(LOCO_E_NOMEM, "out of memory");
    gd->g = *g;
    memset(g, 0, sizeof *g);
    gd->cfg = cfg;
    gd->family = family;
    gd->scratch = loco_malloc(gd->g.scratch_floats * sizeof(float));
    if (!gd->scratch) {
        gd->cfg = NULL; /* stays the caller's */
        gd_free(gd);
        return loco_fail(LOCO_E_NOMEM, "out of memory for scratch space");
    }
    const value *x = &gd->g.values[gd->g.x_in], *y = &gd->g.values[gd->g.t_out];
    gd->in_ch = x->c;
    gd->height = x->h;
    gd->width = x->w;
    gd->out_ch = y->c;
    *out = gd;
    return LOCO_OK;
}

void gd_free(void *self) {
    graph_denoiser *gd = self;
    if (!gd) return;
    graph_free(&gd->g);
    free(gd->arena);
    free(gd->scratch);
    free(gd->cfg);
    free(gd);
}

struct graph *gd_graph_of(void *self) { return &((graph_denoiser *)self)->g; }

static loco_status reserve_arena(graph_denoiser *gd, int batch) {
    size_t need;
    if (!loco_mul_ok(gd->g.arena_per_image, (size_t)batch, &need) || !loco_mul_ok(need, sizeof(float), &need))
        return loco_fail(LOCO_E_NOMEM, "batch %d: activation memory overflows", batch);
    if (need <= gd->arena_bytes) return LOCO_OK;
    free(gd->arena);
    gd->arena_bytes = 0;
    gd->arena = loco_malloc(need);
    if (!gd->arena) return loco_fail(LOCO_E_NOMEM, "batch %d: cannot allocate %zu bytes of activations", batch, need);
    gd->arena_bytes = need;
    return LOCO_OK;
}

loco_status gd_predict(void *self, int B, const float *x, const float *t, const void *cond, float *y, act_tap_fn tap,
                       void *tap_user) {
    graph_denoiser *gd = self;
    if ((cond != NULL) != (gd->g.cond_in >= 0))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, cond ? "a %s model takes no conditioning" : "a %s model needs its conditioning",
                         gd->family);
    loco_status s = reserve_arena(gd, B);
    if (s) return s;
    graph_forward(&gd->g, B, x, t, cond, y, gd->arena, gd->scratch, tap, tap_user);
    return LOCO_OK;
}

loco_status gd_linearize(void *self, const float *x, float t, const void *cond, void **lin) {
    graph_denoiser *gd = self;
    if ((cond != NULL) != (gd->g.cond_in >= 0))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, cond ? "a %s model takes no conditioning" : "a %s model needs its conditioning",
                         gd->family);
    return graph_lin_new(&gd->g, x, t, cond, (graph_lin **)lin);
}

const float *gd_lin_output(const void *lin) { return graph_lin_output(lin); }
loco_status gd_jvp(void *lin, int k, const float *V, float *JY) { return graph_lin_jvp(lin, k, V, JY); }
loco_status gd_vjp(void *lin, int k, const float *U, float *UJ) { return graph_lin_vjp(lin, k, U, UJ); }
size_t gd_lin_bytes(const void *lin, int k) { return k ? graph_lin_work_bytes(lin, k) : graph_lin_record_bytes(lin); }
void gd_lin_free(void *lin) { graph_lin_free(lin); }

void gd_info(const void *self, denoiser_info *info) {
    const graph_denoiser *gd = self;
    memset(info, 0, sizeof *info);
    info->family = gd->family;
    info->in_ch = gd->in_ch;
    info->out_ch = gd->out_ch;
    info->height = gd->height;
    info->width = gd->width;
    info->n_blocks = gd->n_blocks;
    info->n_params = (int64_t)gd->g.total_params;
    info->flops = gd->g.flops;
    info->flops_executed = graph_flops_executed(&gd->g);
    info->weight_bytes = gd->g.total_params * sizeof(float);
    info->activation_bytes = (gd->g.arena_per_image + gd->g.scratch_floats) * sizeof(float);
}

void gd_describe_costs(const graph_denoiser *gd, sbuf *b) {
    const graph *g = &gd->g;
    char wb[32], ab[32]; /* "1023.9 GiB" */
    human_bytes((double)g->total_params * 4, wb, sizeof wb);
    human_bytes((double)(g->arena_per_image + g->scratch_floats) * 4, ab, sizeof ab);
    sb_printf(b, "forward: %.2f GFLOP per image (2 x multiply-adds); %.2f GFLOP executed (Winograd 3x3 convolutions)\n",
              g->flops / 1e9, graph_flops_executed(g) / 1e9);
    sb_printf(b, "memory: weights %s (float32), activations %s per image at batch 1\n", wb, ab);
}

loco_status graph_write_random_weights(const graph *const *gs, int n, const char *path, uint64_t seed,
                                       loco_dtype dtype) {
    size_t total = 0, n_refs = 0;
    for (int g = 0; g < n; g++) {
        total += gs[g]->total_params;
        n_refs += (size_t)gs[g]->n_params;
    }
    float *w = loco_malloc(total * sizeof(float) + 1);
    loco_tensor_ref *refs = calloc(n_refs ? n_refs : 1, sizeof *refs);
    loco_status s = LOCO_OK;
    if (!w || !refs) {
        s = loco_fail(LOCO_E_NOMEM, "init: out of memory for %zu parameters", total);
        goto done;
    }
    size_t base = 0, r = 0;
    for (int g = 0; g < n; g++) {
        const graph *u = gs[g];
        graph_init_random(u, w + base, seed + (uint64_t)g * 0x9E3779B97F4A7C15ull);
        for (int i = 0; i < u->n_params; i++, r++) {
            const param *p = &u->params[i];
            refs[r].name = p->name;
            refs[r].dtype = LOCO_DTYPE_F32;
            refs[r].ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) refs[r].shape[d] = p->shape[d];
            refs[r].data = w + base + p->off;
        }
        base += u->total_params;
    }
    char seedbuf[32];
    snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)seed);
    const char *meta[] = {"format", "pt", "loco_init_seed", seedbuf};
    s = loco_tensors_write_as(path, refs, n_refs, dtype, meta, 2);
done:
    free(refs);
    free(w);
    return s;
}

loco_status graph_write_random(const graph *u, const char *out_dir, const char *weights_name, const char *cfg_text,
                               size_t cfg_len, uint64_t seed, loco_dtype dtype) {
    char *cfg_out = join(out_dir, "config.json"), *w_out = join(out_dir, weights_name);
    loco_status s = cfg_out && w_out ? loco_mkdir_p(out_dir) : loco_fail(LOCO_E_NOMEM, "init: out of memory");
    if (!s) s = graph_write_random_weights(&u, 1, w_out, seed, dtype);
    if (!s) s = loco_write_file_atomic(cfg_out, cfg_text, cfg_len);
    free(cfg_out);
    free(w_out);
    return s;
}

