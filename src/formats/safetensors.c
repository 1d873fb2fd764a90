/* formats/safetensors.c - a hostile-input-proof reader (memory-mapped) and an atomic
 * writer for the safetensors format:
 *   [u64 little-endian header length N][N bytes of JSON][data]
 * The JSON maps tensor names to {"dtype", "shape", "data_offsets": [b, e]}
 * with offsets relative to the start of the data; "__metadata__" maps
 * strings to strings. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include "formats/names.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* the format's own limit */
#define ST_MAX_DIM ((int64_t)1 << 40)

typedef struct st_entry {
    char *name;
    loco_dtype dtype;
    int ndim;
    int64_t shape[LOCO_MAX_DIMS];
    uint64_t begin, end; /* relative to data start */
} st_entry;

struct loco_tensors {
    char *path;
    void *map;
    size_t map_len;
    const uint8_t *data; /* start of the data region */
    uint64_t data_len;
    st_entry *entries;
    size_t n;
    st_entry **by_name; /* the entries sorted by name, for lookups */
    char **meta; /* 2*n_meta strings */
    size_t n_meta;
};

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [LOCO_DTYPE_F32] = {"F32", 4}, [LOCO_DTYPE_F16] = {"F16", 2}, [LOCO_DTYPE_BF16] = {"BF16", 2},
    [LOCO_DTYPE_F64] = {"F64", 8}, [LOCO_DTYPE_U8] = {"U8", 1},   [LOCO_DTYPE_I8] = {"I8", 1},
    [LOCO_DTYPE_I32] = {"I32", 4}, [LOCO_DTYPE_I64] = {"I64", 8}, [LOCO_DTYPE_BOOL] = {"BOOL", 1},
};
_Static_assert(sizeof(dtype_table) / sizeof(dtype_table[0]) == LOCO_DTYPE_COUNT,
               "dtype_table must cover every loco_dtype");

const char *loco_dtype_name(loco_dtype d) {
    return ((int)d >= 0 && d < LOCO_DTYPE_COUNT) ? dtype_table[d].name : "?";
}

size_t loco_dtype_size(loco_dtype d) {
    return ((int)d >= 0 && d < LOCO_DTYPE_COUNT) ? dtype_table[d].size : 0;
}

static int dtype_from_name(const char *s) {
    for (int i = 0; i < LOCO_DTYPE_COUNT; i++)
        if (strcmp(s, dtype_table[i].name) == 0) return i;
    return -1;
}

/* ======================================================================== */
/* Reader                                                                   */
/* ======================================================================== */

void loco_tensors_close(loco_tensors *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    for (size_t i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    free(f->by_name);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    free(f->path);
    free(f);
}

/* A JSON number that is a non-negative integer exactly representable. */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

static int cmp_begin(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* the name of a by_name element, for fmt_sort_names and fmt_find_name */
static const char *entry_name(const void *e, size_t *len) {
    const st_entry *x = *(const st_entry *const *)e;
    *len = strlen(x->name);
    return x->name;
}

static loco_status parse_entry(loco_tensors *f, const cJSON *item, st_entry *e) {
    const char *p = f->path, *nm = item->string;
    if (!cJSON_IsObject(item))
        return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s': header entry is not an object", p, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt))
        return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s': missing or non-string 'dtype'", p, nm);
    int d = dtype_from_name(dt->valuestring);
    if (d < 0)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor '%s': unsupported dtype '%s'", p, nm,
                         dt->valuestring);
    e->dtype = (loco_dtype)d;
    if (!cJSON_IsArray(sh))
        return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s': missing or non-array 'shape'", p, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > LOCO_MAX_DIMS)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor '%s': %d dimensions (at most %d)", p, nm, nd,
                         LOCO_MAX_DIMS);
    e->ndim = nd;
    size_t numel = 1;
    int k = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, sh) {
        uint64_t dim;
        if (!json_uint(v, &dim))
            return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", p,
                             nm, k);
        if (dim > (uint64_t)ST_MAX_DIM)
            return loco_fail(LOCO_E_NOMEM, "%s: tensor '%s': shape[%d] = %llu is absurdly large", p, nm, k,
                             (unsigned long long)dim);
        e->shape[k++] = (int64_t)dim;
        if (!loco_mul_ok(numel, (size_t)dim, &numel))
            return loco_fail(LOCO_E_NOMEM, "%s: tensor '%s': element count overflows", p, nm);
    }
    size_t nbytes;
    if (!loco_mul_ok(numel, dtype_table[d].size, &nbytes))
        return loco_fail(LOCO_E_NOMEM, "%s: tensor '%s': byte size overflows", p, nm);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(cJSON_GetArrayItem(off, 0), &e->begin) ||
        !json_uint(cJSON_GetArrayItem(off, 1), &e->end))
        return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s': 'data_offsets' must be two non-negative integers", p,
                         nm);
    if (e->begin > e->end)
        return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] are out of order", p, nm,
                         (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > f->data_len)
        return loco_fail(LOCO_E_FORMAT,
                         "%s: tensor '%s': data_offsets end %llu is past the end of the data (%llu bytes); "
                         "file truncated?",
                         p, nm, (unsigned long long)e->end, (unsigned long long)f->data_len);
    if (e->end - e->begin != nbytes)
        return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s': %llu bytes of data but dtype %s and shape need %zu", p,
                         nm, (unsigned long long)(e->end - e->begin), dtype_table[d].name, nbytes);
    e->name = strdup(nm);
    if (!e->name) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
    return LOCO_OK;
}

static loco_status parse_meta(loco_tensors *f, const cJSON *item) {
    if (!cJSON_IsObject(item))
        return loco_fail(LOCO_E_FORMAT, "%s: '__metadata__' is not an object", f->path);
    int n = cJSON_GetArraySize(item);
    if (n == 0) return LOCO_OK;
    f->meta = calloc(2 * (size_t)n, sizeof(char *));
    if (!f->meta) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", f->path);
    const cJSON *v;
    cJSON_ArrayForEach(v, item) {
        if (!cJSON_IsString(v))
            return loco_fail(LOCO_E_FORMAT, "%s: '__metadata__' key '%s': the value is not a string", f->path,
                             v->string);
        f->meta[2 * f->n_meta] = strdup(v->string);
        f->meta[2 * f->n_meta + 1] = strdup(v->valuestring);
        f->n_meta++;
        if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1])
            return loco_fail(LOCO_E_NOMEM, "%s: out of memory", f->path);
    }
    return LOCO_OK;
}

static loco_status parse_header(loco_tensors *f, const char *json, size_t len) {
    const char *p = f->path;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) return loco_fail(LOCO_E_FORMAT, "%s: header is not valid JSON", p);
    loco_status s = LOCO_OK;
    if (!cJSON_IsObject(root)) {
        s = loco_fail(LOCO_E_FORMAT, "%s: header is not a JSON object", p);
        goto done;
    }
    /* only whitespace (the format pads with spaces) may follow the object */
    for (const char *q = end; q && q < json + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            s = loco_fail(LOCO_E_FORMAT, "%s: header has unexpected bytes after the JSON object (at byte %zu of %zu)",
                          p, (size_t)(q - json), len);
            goto done;
        }
    int n = cJSON_GetArraySize(root);
    f->entries = calloc(n > 0 ? (size_t)n : 1, sizeof(st_entry));
    if (!f->entries) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
        goto done;
    }
    const cJSON *item;
    bool seen_meta = false;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta) {
                s = loco_fail(LOCO_E_FORMAT, "%s: '__metadata__' appears twice", p);
                goto done;
            }
            seen_meta = true;
            if ((s = parse_meta(f, item)) != LOCO_OK) goto done;
            continue;
        }
        if (item->string[0] == 0) {
            s = loco_fail(LOCO_E_FORMAT, "%s: a tensor has an empty name", p);
            goto done;
        }
        if ((s = parse_entry(f, item, &f->entries[f->n])) != LOCO_OK) goto done;
        f->n++;
    }
    /* duplicate names: sort an index by name (also used for lookups) */
    f->by_name = malloc((f->n ? f->n : 1) * sizeof *f->by_name);
    if (!f->by_name) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
        goto done;
    }
    for (size_t i = 0; i < f->n; i++) f->by_name[i] = &f->entries[i];
    const st_entry *const *dup = fmt_sort_names(f->by_name, f->n, sizeof *f->by_name, entry_name);
    if (dup) {
        s = loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' appears twice in the header", p, (*dup)->name);
        goto done;
    }
    /* overlap check: sort a view by begin offset; each non-empty tensor must
     * start at or after the furthest end seen so far (empty tensors occupy
     * nothing and may sit anywhere) */
    if (f->n > 1) {
        st_entry **v = malloc(f->n * sizeof *v);
        if (!v) {
            s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
            goto done;
        }
        for (size_t i = 0; i < f->n; i++) v[i] = &f->entries[i];
        qsort(v, f->n, sizeof *v, cmp_begin);
        const st_entry *far = NULL; /* the non-empty tensor with the largest end so far */
        for (size_t i = 0; i < f->n; i++) {
            if (v[i]->end == v[i]->begin) continue;
            if (far && v[i]->begin < far->end) {
                s = loco_fail(LOCO_E_FORMAT, "%s: tensors '%s' and '%s' overlap in the data ([%llu,%llu) and [%llu,%llu))",
                              p, far->name, v[i]->name, (unsigned long long)far->begin,
                              (unsigned long long)far->end, (unsigned long long)v[i]->begin,
                              (unsigned long long)v[i]->end);
                break;
            }
            if (!far || v[i]->end > far->end) far = v[i];
        }
        free(v);
    }
done:
    cJSON_Delete(root);
    return s;
}

loco_status loco_tensors_open(const char *path, loco_tensors **out) {
    if (!out || !path) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tensors_open: NULL argument");
    *out = NULL;
    loco_tensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    }
    loco_status s = LOCO_OK;
    /* only a regular file is opened, never blocking (FIFOs, devices) */
    int fd;
    uint64_t size;
    if ((s = loco_open_file(path, &fd, &size))) goto fail;
    if (size < 8) {
        close(fd);
        s = loco_fail(LOCO_E_FORMAT, "%s: file is %llu bytes, too short for a safetensors header", path,
                      (unsigned long long)size);
        goto fail;
    }
    f->map_len = (size_t)size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        s = loco_fail(LOCO_E_IO, "%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    const uint8_t *b = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    if (hlen > ST_MAX_HEADER || hlen > (uint64_t)f->map_len - 8) {
        s = loco_fail(LOCO_E_FORMAT, "%s: header length %llu is past the end of the file (%zu bytes)", path,
                      (unsigned long long)hlen, f->map_len);
        goto fail;
    }
    f->data = b + 8 + hlen;
    f->data_len = (uint64_t)f->map_len - 8 - hlen;
    if ((s = parse_header(f, (const char *)b + 8, (size_t)hlen)) != LOCO_OK) goto fail;
    *out = f;
    return LOCO_OK;
fail:
    loco_tensors_close(f);
    return s;
}

size_t loco_tensors_count(const loco_tensors *f) { return f ? f->n : 0; }

const char *loco_tensors_name(const loco_tensors *f, size_t i) {
    return (f && i < f->n) ? f->entries[i].name : NULL;
}

static const st_entry *find(const loco_tensors *f, const char *name) {
    const st_entry *const *e = fmt_find_name(f->by_name, f->n, sizeof *f->by_name, entry_name, name, strlen(name));
    return e ? *e : NULL;
}

loco_status loco_tensors_info(const loco_tensors *f, const char *name, loco_dtype *dtype, int *ndim,
                              int64_t shape[LOCO_MAX_DIMS]) {
    if (!f || !name) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tensors_info: NULL argument");
    const st_entry *e = find(f, name);
    if (!e) return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    if (dtype) *dtype = e->dtype;
    if (ndim) *ndim = e->ndim;
    if (shape)
        for (int i = 0; i < e->ndim; i++) shape[i] = e->shape[i];
    return LOCO_OK;
}

loco_status loco_tensors_raw(const loco_tensors *f, const char *name, const void **data, size_t *nbytes) {
    if (!f || !name) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tensors_raw: NULL argument");
    const st_entry *e = find(f, name);
    if (!e) return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    if (data) *data = f->data + e->begin;
    if (nbytes) *nbytes = (size_t)(e->end - e->begin);
    return LOCO_OK;
}

loco_status loco_tensors_read_f32(const loco_tensors *f, const char *name, float **data, int *ndim,
                                  int64_t shape[LOCO_MAX_DIMS], int allow_nonfinite) {
    if (!f || !name || !data) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tensors_read_f32: NULL argument");
    *data = NULL;
    const st_entry *e = find(f, name);
    if (!e) return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    size_t n = (size_t)(e->end - e->begin) / dtype_table[e->dtype].size;
    float *out = loco_malloc(n ? n * sizeof(float) : 1);
    if (!out) return loco_fail(LOCO_E_NOMEM, "%s: tensor '%s': out of memory", f->path, name);
    const uint8_t *src = f->data + e->begin;
    if (!loco_to_f32(e->dtype, src, n, out)) {
        free(out);
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as float", f->path, name,
                         dtype_table[e->dtype].name);
    }
    if (!allow_nonfinite)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(out[i])) {
                free(out);
                return loco_fail(LOCO_E_NUMERIC, "%s: tensor '%s': element %zu is not finite", f->path, name, i);
            }
    if (ndim) *ndim = e->ndim;
    if (shape)
        for (int i = 0; i < e->ndim; i++) shape[i] = e->shape[i];
    *data = out;
    return LOCO_OK;
}

loco_status tensors_read_f32_into(const loco_tensors *f, const char *name, float *dst, size_t numel,
                                  int allow_nonfinite) {
    const st_entry *e = find(f, name);
    if (!e) return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    size_t n = (size_t)(e->end - e->begin) / dtype_table[e->dtype].size;
    if (n != numel)
        return loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has %zu elements, not %zu", f->path, name, n, numel);
    if (!loco_to_f32(e->dtype, f->data + e->begin, n, dst))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as float", f->path, name,
                         dtype_table[e->dtype].name);
    if (!allow_nonfinite)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(dst[i]))
                return loco_fail(LOCO_E_NUMERIC, "%s: tensor '%s': element %zu is not finite", f->path, name, i);
    return LOCO_OK;
}

const char *loco_tensors_metadata(const loco_tensors *f, const char *key) {
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

/* ======================================================================== */
/* Writer                                                                   */
/* ======================================================================== */

/* the name of an element of order[], for fmt_sort_names */
static const char *ref_name(const void *r, size_t *len) {
    const loco_tensor_ref *t = *(const loco_tensor_ref *const *)r;
    *len = strlen(t->name);
    return t->name;
}

loco_status loco_tensors_write(const char *path, const loco_tensor_ref *tensors, size_t n, const char *const *meta,
                               size_t n_meta) {
    if (!path) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tensors_write: NULL path");
    if ((n && !tensors) || (n_meta && !meta))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: NULL %s array", path, n && !tensors ? "tensor" : "metadata");
    /* everything is checked before anything is sorted, allocated or written */
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const loco_tensor_ref *t = &tensors[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor %zu: name %s%s%s is not allowed", path, i,
                             t->name ? "'" : "", t->name ? t->name : "NULL", t->name ? "'" : "");
        if ((int)t->dtype < 0 || t->dtype >= LOCO_DTYPE_COUNT || t->ndim < 0 || t->ndim > LOCO_MAX_DIMS)
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor '%s': bad dtype (%d) or rank (%d)", path, t->name,
                             (int)t->dtype, t->ndim);
        size_t nb = dtype_table[t->dtype].size;
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || t->shape[d] > ST_MAX_DIM || !loco_mul_ok(nb, (size_t)t->shape[d], &nb))
                return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor '%s': bad shape (dimension %d is %lld or the "
                                 "size overflows)", path, t->name, d, (long long)t->shape[d]);
        if (nb > LOCO_MAX_ALLOC || off + nb > LOCO_MAX_ALLOC)
            return loco_fail(LOCO_E_NOMEM, "%s: tensor '%s': the data would pass %zu bytes", path, t->name,
                             (size_t)LOCO_MAX_ALLOC);
        if (nb && !t->data) return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor '%s': NULL data", path, t->name);
        off += nb;
    }
    for (size_t i = 0; i < 2 * n_meta; i++)
        if (!meta[i])
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: metadata entry %zu has a NULL %s", path, i / 2,
                             i % 2 ? "value" : "key");
    loco_status s = LOCO_OK;
    const loco_tensor_ref **order = calloc(n ? n : 1, sizeof *order);
    cJSON *root = cJSON_CreateObject();
    char *hdr = NULL;
    uint8_t *buf = NULL;
    if (!order || !root) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) order[i] = &tensors[i];
    const loco_tensor_ref *const *dup = fmt_sort_names(order, n, sizeof *order, ref_name);
    if (n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; m && i < n_meta; i++)
            if (!cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1])) m = NULL;
        if (!m) {
            s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    off = 0;
    for (size_t i = 0; i < n; i++) {
        const loco_tensor_ref *t = order[i];
        if (dup && *dup == t) {
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor '%s' given twice", path, t->name);
            goto done;
        }
        size_t nb = dtype_table[t->dtype].size; /* no overflow: checked above */
        for (int d = 0; d < t->ndim; d++) nb *= (size_t)t->shape[d];
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON *sh = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *of = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!e || !sh || !of || !cJSON_AddStringToObject(e, "dtype", dtype_table[t->dtype].name)) {
            s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
            goto done;
        }
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    size_t total = 8 + padded + off;
    buf = loco_malloc(total);
    if (!buf) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory (%zu bytes)", path, total);
        goto done;
    }
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    uint8_t *dp = buf + 8 + padded;
    for (size_t i = 0; i < n; i++) {
        const loco_tensor_ref *t = order[i];
        size_t nb = dtype_table[t->dtype].size;
        for (int d = 0; d < t->ndim; d++) nb *= (size_t)t->shape[d];
        if (nb) memcpy(dp, t->data, nb);
        dp += nb;
    }
    s = loco_write_file_atomic(path, buf, total);
done:
    free(buf);
    free(hdr);
    cJSON_Delete(root);
    free(order);
    return s;
}
