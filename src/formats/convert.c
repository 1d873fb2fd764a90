/* formats/convert.c - conversion of a model folder (its weights of either
 * format, config.json and scheduler/scheduler_config.json) to a folder with
 * safetensors weights: loco_convert. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include "formats/weights.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool is_float(loco_dtype d) {
    return d == LOCO_DTYPE_F32 || d == LOCO_DTYPE_F16 || d == LOCO_DTYPE_BF16 || d == LOCO_DTYPE_F64;
}

static loco_status mkdir_all(const char *dir) {
    if (!dir[0]) return loco_fail(LOCO_E_INVALID_ARGUMENT, "an empty folder name");
    char *d = strdup(dir);
    if (!d) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status s = LOCO_OK;
    for (char *p = d + 1;; p++) {
        if (*p != '/' && *p) continue;
        char c = *p;
        *p = 0;
        if (mkdir(d, 0755) != 0 && errno != EEXIST) {
            s = loco_fail(LOCO_E_IO, "%s: cannot create folder: %s", d, strerror(errno));
            break;
        }
        if (!c) break;
        *p = c;
    }
    if (!s && !loco_is_dir(dir)) s = loco_fail(LOCO_E_IO, "%s: not a folder", dir);
    free(d);
    return s;
}

loco_status fmt_copy_file(const char *from, const char *to) {
    char *text;
    size_t len;
    loco_status s = loco_read_file(from, &text, &len, (size_t)16 << 20);
    if (s) return s;
    s = loco_write_file_atomic(to, text, len);
    free(text);
    return s;
}

/* raw (n elements of `from`) -> new buffer of `to` (both floating point) */
static loco_status convert_floats(const char *name, loco_dtype from, const void *raw, size_t n, loco_dtype to,
                                  void **out) {
    uint8_t *o = loco_malloc(n * loco_dtype_size(to) + 1);
    if (!o) return loco_fail(LOCO_E_NOMEM, "tensor '%s': out of memory", name);
    const uint8_t *src = raw;
    for (size_t i = 0; i < n; i++) {
        double v;
        if (from == LOCO_DTYPE_F64) memcpy(&v, src + 8 * i, 8);
        else {
            float f;
            loco_to_f32(from, src + loco_dtype_size(from) * i, 1, &f);
            v = f;
        }
        if (!isfinite(v)) {
            free(o);
            return loco_fail(LOCO_E_NUMERIC, "tensor '%s': element %zu is not finite (%g)", name, i, v);
        }
        if (to == LOCO_DTYPE_F32) {
            float f = (float)v;
            if (!isfinite(f)) goto overflow;
            memcpy(o + 4 * i, &f, 4);
        } else {
            float f = (float)v;
            uint16_t h = loco_f32_to_f16(f);
            if (!isfinite(f) || !isfinite(loco_f16_to_f32(h))) goto overflow; /* |v| > 65504 (or rounds above) */
            memcpy(o + 2 * i, &h, 2);
        }
        continue;
    overflow:
        free(o);
        return loco_fail(LOCO_E_NUMERIC, "tensor '%s': element %zu (%g) does not fit in %s (|x| <= %s)", name, i, v,
                         loco_dtype_name(to), to == LOCO_DTYPE_F16 ? "65504" : "3.4e38");
    }
    *out = o;
    return LOCO_OK;
}

/* Reads every tensor of the weights file wpath, converts the floating-point
 * ones to dtype (LOCO_DTYPE_COUNT: kept) and, when out_path is not NULL,
 * writes them to out_path as safetensors with metadata format=pt. With
 * out_path NULL it only checks that every value converts (finite, and within
 * the range of dtype): nothing is written. Errors name wpath and the
 * tensor. */
loco_status fmt_convert_weights(const char *wpath, const char *out_path, loco_dtype dtype) {
    loco_weights *w = NULL;
    loco_tensor_ref *refs = NULL;
    void **bufs = NULL;
    size_t n = 0;
    loco_status s = loco_weights_open(wpath, &w);
    if (s) return s;
    n = loco_weights_count(w);
    refs = calloc(n ? n : 1, sizeof *refs);
    bufs = calloc(n ? n : 1, sizeof *bufs);
    if (!refs || !bufs) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        loco_tensor_ref *r = &refs[i];
        r->name = loco_weights_name(w, i);
        size_t nb;
        if ((s = loco_weights_info(w, r->name, &r->dtype, &r->ndim, r->shape)) ||
            (s = loco_weights_read(w, r->name, &bufs[i], &nb)))
            goto done;
        if (dtype != LOCO_DTYPE_COUNT && is_float(r->dtype) && r->dtype != dtype) {
            void *c = NULL;
            if ((s = convert_floats(r->name, r->dtype, bufs[i], nb / loco_dtype_size(r->dtype), dtype, &c))) {
                s = loco_fail_in(s, wpath);
                goto done;
            }
            free(bufs[i]);
            bufs[i] = c;
            r->dtype = dtype;
        }
        r->data = bufs[i];
        if (!out_path) { /* checking only: one tensor at a time */
            free(bufs[i]);
            bufs[i] = NULL;
        }
    }
    const char *meta[] = {"format", "pt"};
    if (out_path) s = loco_tensors_write(out_path, refs, n, meta, 1);
done:
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(refs);
    loco_weights_close(w);
    return s;
}

loco_status loco_convert(const char *model, const char *out_dir, loco_dtype dtype) {
    if (!model || !out_dir) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_convert: NULL argument");
    if (dtype != LOCO_DTYPE_F32 && dtype != LOCO_DTYPE_F16 && dtype != LOCO_DTYPE_COUNT)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "convert: the dtype must be F32 or F16 (or kept)");
    struct stat pst;
    if (stat(model, &pst) != 0) return loco_fail(LOCO_E_NOT_FOUND, "%s: no such file or folder", model);
    char *dir = fmt_folder_of(model), *cfg = dir ? fmt_path_join(dir, "config.json") : NULL,
         *sched = dir ? fmt_path_join(dir, "scheduler/scheduler_config.json") : NULL, *wpath = NULL;
    char *o_w = fmt_path_join(out_dir, FMT_WEIGHTS_ST), *o_cfg = fmt_path_join(out_dir, "config.json"),
         *o_sd = fmt_path_join(out_dir, "scheduler"),
         *o_sched = fmt_path_join(out_dir, "scheduler/scheduler_config.json");
    loco_status s = LOCO_OK;
    if (!dir || !cfg || !sched || !o_w || !o_cfg || !o_sd || !o_sched) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    if ((s = loco_check_file(cfg)) == LOCO_E_NOT_FOUND)
        s = loco_fail(LOCO_E_NOT_FOUND, "%s: no config.json in the model folder", dir);
    if (s) goto done;
    /* the scheduler config is optional; something else in its place is an
     * error, found before anything is written */
    bool have_sched = (s = loco_check_file(sched)) == LOCO_OK;
    if (s == LOCO_E_NOT_FOUND) s = LOCO_OK;
    if (s) goto done;
    if ((s = loco_weights_locate(dir, model, &wpath))) goto done;
    /* every value is checked before anything is written */
    if (dtype != LOCO_DTYPE_COUNT && (s = fmt_convert_weights(wpath, NULL, dtype))) goto done;
    if ((s = mkdir_all(out_dir)) || (s = fmt_convert_weights(wpath, o_w, dtype))) goto done;
    if ((s = fmt_copy_file(cfg, o_cfg))) goto done;
    if (have_sched && !(s = mkdir_all(o_sd))) s = fmt_copy_file(sched, o_sched);
done:
    free(wpath);
    free(dir);
    free(cfg);
    free(sched);
    free(o_w);
    free(o_cfg);
    free(o_sd);
    free(o_sched);
    return s;
}

loco_status loco_tensors_write_as(const char *path, const loco_tensor_ref *tensors, size_t n, loco_dtype dtype,
                                  const char *const *meta, size_t n_meta) {
    if (dtype != LOCO_DTYPE_F32 && dtype != LOCO_DTYPE_F16)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: the dtype must be F32 or F16", path);
    loco_tensor_ref *refs = calloc(n ? n : 1, sizeof *refs);
    void **bufs = calloc(n ? n : 1, sizeof *bufs);
    loco_status s = refs && bufs ? LOCO_OK : loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n && !s; i++) {
        refs[i] = tensors[i];
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d];
        if (tensors[i].dtype != LOCO_DTYPE_F32)
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "tensor '%s': F32 data expected", tensors[i].name);
        else if (dtype != LOCO_DTYPE_F32 &&
                 !(s = convert_floats(tensors[i].name, LOCO_DTYPE_F32, tensors[i].data, numel, dtype, &bufs[i]))) {
            refs[i].dtype = dtype;
            refs[i].data = bufs[i];
        }
    }
    if (s) s = loco_fail_in(s, path);
    else s = loco_tensors_write(path, refs, n, meta, n_meta);
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(refs);
    return s;
}
