/* params.c - a graph's parameters: loading them from a weights file by
 * checkpoint name (with shape, dtype and completeness checks, and the
 * layouts some families store differently from the arena), and random
 * initialisation. */
#include "graph/graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies a tensor as read from the file into the arena at dst. */
static void place(const param *p, const float *src, float *dst) {
    if (p->layout != PARAM_QKV_LEGACY) {
        memcpy(dst, src, p->numel * sizeof(float));
        return;
    }
    /* rows of the file: per head h, q_h k_h v_h (d rows each); rows of the
     * arena: all q (head-major), all k, all v */
    const size_t rows = (size_t)p->shape[0], C = rows / 3, d = C / (size_t)p->layout_heads,
                 row = p->numel / rows;
    for (size_t r = 0; r < rows; r++) {
        const size_t h = r / (3 * d), part = (r % (3 * d)) / d, j = r % d;
        memcpy(dst + (part * C + h * d + j) * row, src + r * row, row * sizeof(float));
    }
}

static int has_prefix(const char *name, const char *const *prefixes) {
    for (; prefixes && *prefixes; prefixes++)
        if (strncmp(name, *prefixes, strlen(*prefixes)) == 0) return 1;
    return 0;
}

/* wpath: safetensors or a PyTorch checkpoint (loco_weights, pytorch.c) */
loco_status graph_load_weights(graph *u, const char *wpath) { return graph_load_weights_subset(u, wpath, NULL); }

loco_status graph_load_weights_subset(graph *u, const char *wpath, const char *const *ignore) {
    loco_weights *f;
    loco_status s = loco_weights_open(wpath, &f);
    if (s) return s;
    size_t nf = loco_weights_count(f);
    char *used = calloc(nf ? nf : 1, 1);
    u->pdata = loco_calloc(u->total_params, sizeof(float));
    if (!used || !u->pdata) {
        free(used);
        loco_weights_close(f);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory for %zu parameters", wpath, u->total_params);
    }
    for (int i = 0; i < u->n_params && !s; i++) {
        const param *p = &u->params[i];
        /* the current name, or else the older one (attention); not both */
        size_t idx = nf, idx_alt = nf;
        for (size_t j = 0; j < nf; j++) {
            const char *fn = loco_weights_name(f, j);
            if (idx == nf && strcmp(fn, p->name) == 0) idx = j;
            else if (idx_alt == nf && p->alt[0] && strcmp(fn, p->alt) == 0) idx_alt = j;
        }
        if (idx != nf && idx_alt != nf) {
            s = loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' is present under both its name and its old name '%s'", wpath,
                          p->name, p->alt);
            break;
        }
        if (idx == nf) idx = idx_alt;
        if (idx == nf) {
            s = loco_fail(LOCO_E_NOT_FOUND, "%s: tensor '%s' is missing (the config needs it)", wpath, p->name);
            break;
        }
        const char *name = loco_weights_name(f, idx);
        if (used[idx]) {
            s = loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' would be used twice", wpath, name);
            break;
        }
        used[idx] = 1;
        loco_dtype dt;
        int nd;
        int64_t shape[LOCO_MAX_DIMS];
        loco_weights_info(f, name, &dt, &nd, shape);
        if (dt != LOCO_DTYPE_F32 && dt != LOCO_DTYPE_F16 && dt != LOCO_DTYPE_BF16) {
            s = loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)", wpath, name,
                          loco_dtype_name(dt));
            break;
        }
        int same = nd == p->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == p->shape[d];
        if (!same) {
            char got[128] = "", want[128] = ""; /* for the message only: 8 dims fit, or are cut */
            for (int d = 0; d < nd; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "", (long long)shape[d]);
            for (int d = 0; d < p->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "",
                         (long long)p->shape[d]);
            s = loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has shape [%s] but the config needs [%s]", wpath, name, got,
                          want);
            break;
        }
        if (p->layout != PARAM_QKV_LEGACY) {
            s = loco_weights_read_f32_into(f, name, u->pdata + p->off, p->numel, 0);
            if (s) break;
            continue;
        }
        float *data;
        s = loco_weights_read_f32(f, name, &data, NULL, NULL, 0);
        if (s) break;
        place(p, data, u->pdata + p->off);
        free(data);
    }
    for (size_t j = 0; !s && j < nf; j++)
        if (!used[j] && !has_prefix(loco_weights_name(f, j), ignore))
            s = loco_fail(LOCO_E_FORMAT, "%s: unexpected tensor '%s' (not part of the model the config describes)", wpath,
                          loco_weights_name(f, j));
    free(used);
    loco_weights_close(f);
    return s;
}


void graph_init_random(const graph *u, float *w, uint64_t seed) {
    loco_rng rng;
    loco_rng_seed(&rng, seed);
    for (int i = 0; i < u->n_params; i++) {
        const param *p = &u->params[i];
        for (size_t k = 0; k < p->numel; k++) {
            float v;
            if (p->fan_in > 0) {
                float bound = 1.0f / sqrtf(p->fan_in);
                v = (float)((2.0 * loco_rng_uniform(&rng) - 1.0) * bound);
            } else {
                v = p->is_gn_weight ? 1.0f : 0.0f;
            }
            w[p->off + k] = v;
        }
    }
}
