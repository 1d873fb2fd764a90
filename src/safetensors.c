/* safetensors.c - a hostile-input-proof reader (memory-mapped) and an atomic
 * writer for the safetensors format:
 *   [u64 little-endian header length N][N bytes of JSON][data]
 * The JSON maps tensor names to {"dtype", "shape", "data_offsets": [b, e]}
 * with offsets relative to the start of the data; "__metadata__" maps
 * strings to strings. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

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
            return loco_fail(LOCO_E_FORMAT, "%s: __metadata__ key '%s' is not a string", f->path, v->string);
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
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return loco_fail(LOCO_E_FORMAT, "%s: header is not valid JSON", p);
    loco_status s = LOCO_OK;
    if (!cJSON_IsObject(root)) {
        s = loco_fail(LOCO_E_FORMAT, "%s: header is not a JSON object", p);
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    f->entries = calloc(n > 0 ? (size_t)n : 1, sizeof(st_entry));
    if (!f->entries) {
        s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
        goto done;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (f->meta || f->n_meta) {
                s = loco_fail(LOCO_E_FORMAT, "%s: '__metadata__' appears twice", p);
                goto done;
            }
            if ((s = parse_meta(f, item)) != LOCO_OK) goto done;
            continue;
        }
        if (item->string[0] == 0) {
            s = loco_fail(LOCO_E_FORMAT, "%s: a tensor has an empty name", p);
            goto done;
        }
        for (size_t i = 0; i < f->n; i++)
            if (strcmp(f->entries[i].name, item->string) == 0) {
                s = loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' appears twice in the header", p, item->string);
                goto done;
            }
        if ((s = parse_entry(f, item, &f->entries[f->n])) != LOCO_OK) goto done;
        f->n++;
    }
    /* overlap check: sort a view by begin offset */
    if (f->n > 1) {
        st_entry **v = malloc(f->n * sizeof *v);
        if (!v) {
            s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
            goto done;
        }
        for (size_t i = 0; i < f->n; i++) v[i] = &f->entries[i];
        qsort(v, f->n, sizeof *v, cmp_begin);
        for (size_t i = 1; i < f->n; i++)
            if (v[i]->begin < v[i - 1]->end && v[i]->end > v[i]->begin) {
                s = loco_fail(LOCO_E_FORMAT, "%s: tensors '%s' and '%s' overlap in the data ([%llu,%llu) and [%llu,%llu))",
                              p, v[i - 1]->name, v[i]->name, (unsigned long long)v[i - 1]->begin,
                              (unsigned long long)v[i - 1]->end, (unsigned long long)v[i]->begin,
                              (unsigned long long)v[i]->end);
                break;
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
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        s = loco_fail(LOCO_E_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        s = loco_fail(LOCO_E_IO, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size < 8) {
        close(fd);
        s = loco_fail(LOCO_E_FORMAT, "%s: file is %lld bytes, too short for a safetensors header", path,
                      (long long)st.st_size);
        goto fail;
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
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
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
    return NULL;
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
    switch (e->dtype) {
    case LOCO_DTYPE_F32: memcpy(out, src, n * 4); break;
    case LOCO_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = loco_f16_to_f32(h);
        }
        break;
    case LOCO_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = loco_bf16_to_f32(h);
        }
        break;
    case LOCO_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        break;
    case LOCO_DTYPE_U8:
    case LOCO_DTYPE_BOOL:
        for (size_t i = 0; i < n; i++) out[i] = (float)src[i];
        break;
    default:
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

const char *loco_tensors_metadata(const loco_tensors *f, const char *key) {
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

/* ======================================================================== */
/* Writer                                                                   */
/* ======================================================================== */

static int cmp_ref_name(const void *a, const void *b) {
    return strcmp((*(const loco_tensor_ref *const *)a)->name, (*(const loco_tensor_ref *const *)b)->name);
}

loco_status loco_tensors_write(const char *path, const loco_tensor_ref *tensors, size_t n, const char *const *meta,
                               size_t n_meta) {
    if (!path || (n && !tensors)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tensors_write: NULL argument");
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
    qsort(order, n, sizeof *order, cmp_ref_name);
    if (n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; m && i < n_meta; i++) cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]);
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const loco_tensor_ref *t = order[i];
        if (!t->name || !t->name[0] || (int)t->dtype < 0 || t->dtype >= LOCO_DTYPE_COUNT || t->ndim < 0 ||
            t->ndim > LOCO_MAX_DIMS) {
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor %zu has a bad name, dtype or rank", path, i);
            goto done;
        }
        if (i > 0 && strcmp(order[i - 1]->name, t->name) == 0) {
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor '%s' given twice", path, t->name);
            goto done;
        }
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || !loco_mul_ok(numel, (size_t)t->shape[d], &numel)) {
                s = loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor '%s': bad shape", path, t->name);
                goto done;
            }
        size_t nb = numel * dtype_table[t->dtype].size;
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
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        size_t nb = numel * dtype_table[t->dtype].size;
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
