/* formats/pytorch.c - PyTorch checkpoints without Python: opening the zip
 * archives torch.save writes (torch >= 1.6) into a loco_pt handle, reading
 * their tensors, and writing the same layout (loco_pt_write). The zip
 * reader and writer are formats/zip.c, the pickle interpreter and writer
 * formats/pickle.c.
 *
 * The archive (written by PyTorch's miniz with MZ_ZIP_FLAG_WRITE_ZIP64):
 *   ARCHIVE/data.pkl              the pickled state_dict (protocol 2)
 *   ARCHIVE/byteorder             "little" (newer torch)
 *   ARCHIVE/data/<key>            raw little-endian bytes of storage <key>
 *   ARCHIVE/version               "3\n"
 *   ARCHIVE/.data/serialization_id
 * Every entry is stored, its data 64-byte aligned (formats/zip.h). A tensor
 * is pickled as a _rebuild_tensor_v2 view of a storage named by a persistent
 * id (formats/pickle.h); the reader lets every entry be a storage, and the
 * pickle says which are, of what type. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include "formats/names.h"
#include "formats/pickle.h"
#include "formats/zip.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

/* ======================================================================== */
/* The handle                                                               */
/* ======================================================================== */

typedef struct pt_tensor {
    char *name;
    loco_dtype dtype;
    int ndim;
    int64_t shape[LOCO_MAX_DIMS], stride[LOCO_MAX_DIMS];
    uint64_t offset;        /* storage offset, elements */
    const uint8_t *storage; /* the storage's bytes in the archive */
    size_t numel;
    bool contiguous;
} pt_tensor;

struct loco_pt {
    char *path;
    void *map;
    size_t map_len;
    const uint8_t *buf;
    size_t len;
    zip_archive zip;
    pt_tensor *t; /* pickle order */
    size_t n;
    pt_tensor **by_name; /* sorted by name (fmt_sort_names) */
};

/* the name of a by_name element, for fmt_sort_names and fmt_find_name */
static const char *tensor_name(const void *e, size_t *len) {
    const pt_tensor *t = *(const pt_tensor *const *)e;
    *len = strlen(t->name);
    return t->name;
}

void loco_pt_close(loco_pt *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    free(f->by_name);
    zip_archive_close(&f->zip);
    free(f->path);
    free(f);
}

/* ======================================================================== */
/* Opening                                                                  */
/* ======================================================================== */

/* The archive's entries as storages the pickle may name: st[i] is entry i. */
typedef struct storages {
    const zip_archive *zip;
    pkl_storage *st;
} storages;

static pkl_storage *find_storage(void *ctx, const char *name, size_t nlen) {
    storages *s = ctx;
    const zip_entry *e = zip_archive_find(s->zip, name, nlen);
    return e ? &s->st[e - s->zip->ents] : NULL;
}

/* The state_dict's tensors -> f->t (their names taken from ts) and f->by_name */
static loco_status take_tensors(loco_pt *f, pkl_tensor *ts, size_t cnt) {
    f->t = calloc(cnt ? cnt : 1, sizeof *f->t);
    f->by_name = calloc(cnt ? cnt : 1, sizeof *f->by_name);
    if (!f->t || !f->by_name) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < cnt; i++) {
        const pkl_tensor *td = &ts[i];
        pt_tensor *t = &f->t[f->n];
        t->name = ts[i].name;
        ts[i].name = NULL; /* now f's */
        f->n++;
        t->dtype = (loco_dtype)td->storage->dtype;
        t->ndim = td->ndim;
        t->offset = td->offset;
        t->storage = td->storage->data;
        t->numel = 1;
        t->contiguous = true;
        int64_t want = 1;
        for (int d = td->ndim - 1; d >= 0; d--) {
            t->shape[d] = td->size[d];
            t->stride[d] = td->stride[d];
            t->numel *= (size_t)td->size[d];
            if (td->size[d] != 1 && td->stride[d] != want) t->contiguous = false;
            want *= td->size[d];
        }
        f->by_name[i] = t;
    }
    const pt_tensor *const *dup = fmt_sort_names(f->by_name, f->n, sizeof *f->by_name, tensor_name);
    if (dup) {
        char kc[96]; /* for the message only (fmt_clean) */
        return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' appears twice in the state_dict", f->path,
                         fmt_clean(kc, sizeof kc, (*dup)->name, strlen((*dup)->name)));
    }
    return LOCO_OK;
}

static loco_status pt_load(loco_pt *f, unsigned flags) {
    const uint8_t *b = f->buf;
    const char *p = f->path;
    if (zip_starts_archive(b, f->len)) {
        /* a zip archive */
    } else if (f->len >= 2 && b[0] == 0x80 && b[1] <= 5) {
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: a PyTorch checkpoint in the legacy (pre-1.6) format, which is not "
                         "supported: re-save it with torch>=1.6 (torch.save(torch.load(f), f))", p);
    } else if (f->len >= 262 && memcmp(b + 257, "ustar", 5) == 0) {
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: a PyTorch checkpoint in the legacy tar format, which is not "
                         "supported: re-save it with torch>=1.6 (torch.save(torch.load(f), f))", p);
    } else {
        return loco_fail(LOCO_E_FORMAT, "%s: not a PyTorch zip checkpoint (no zip signature)", p);
    }
    loco_status s = zip_archive_open(&f->zip, p, b, f->len, !(flags & LOCO_PT_NO_CRC));
    if (s) return s;
    /* ARCHIVE/data.pkl: exactly one, at the top level of the archive */
    const zip_entry *pk = NULL;
    bool torchscript = false;
    for (size_t i = 0; i < f->zip.n; i++) {
        const zip_entry *e = &f->zip.ents[i];
        const char *sl = memchr(e->name, '/', e->nlen);
        size_t rest = sl ? e->nlen - (size_t)(sl - e->name) - 1 : e->nlen;
        const char *tail = sl ? sl + 1 : e->name;
        if (rest == 13 && !memcmp(tail, "constants.pkl", 13)) torchscript = true;
        if (rest == 8 && !memcmp(tail, "data.pkl", 8)) {
            if (pk) return loco_fail(LOCO_E_FORMAT, "%s: several data.pkl entries in the archive", p);
            pk = e;
        }
    }
    if (!pk) {
        if (torchscript)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: a TorchScript archive (torch.jit.save), not a state_dict saved "
                             "by torch.save", p);
        return loco_fail(LOCO_E_FORMAT, "%s: no data.pkl in the archive: not a checkpoint written by torch.save", p);
    }
    char entry[128]; /* data.pkl's name, for messages only (fmt_clean) */
    fmt_clean(entry, sizeof entry, pk->name, pk->nlen);
    const char *prefix = pk->name; /* ARCHIVE/ */
    const size_t prefix_len = pk->nlen - 8;
    /* ARCHIVE/byteorder, when present, must say little; its name is as long
     * as the archive's prefix (a zip name may have 65535 bytes) */
    char *bo = malloc(prefix_len + sizeof "byteorder");
    if (!bo) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
    memcpy(bo, prefix, prefix_len);
    memcpy(bo + prefix_len, "byteorder", sizeof "byteorder");
    const zip_entry *be = zip_archive_find(&f->zip, bo, prefix_len + sizeof "byteorder" - 1);
    if (be && !(be->size == 6 && !memcmp(b + be->off, "little", 6))) {
        char bc[96]; /* the entry's name for the message: shortened (fmt_clean) */
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: the byteorder entry '%s' does not say 'little': big-endian checkpoints are "
                      "not supported", p, fmt_clean(bc, sizeof bc, bo, prefix_len + sizeof "byteorder" - 1));
        free(bo);
        return s;
    }
    free(bo);
    /* every entry may be a storage; the pickle says which, and their types */
    storages st = {&f->zip, calloc(f->zip.n, sizeof *st.st)};
    if (!st.st) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
    for (size_t i = 0; i < f->zip.n; i++) {
        const zip_entry *e = &f->zip.ents[i];
        st.st[i] = (pkl_storage){e->name, e->nlen, b + e->off, e->size, -1, 0};
    }
    const pkl_source src = {p, entry, b + pk->off, (size_t)pk->size, prefix, prefix_len, find_storage, &st};
    pkl_tensor *ts = NULL;
    size_t cnt = 0;
    s = pkl_load_state_dict(&src, &ts, &cnt);
    if (!s) s = take_tensors(f, ts, cnt);
    pkl_tensors_free(ts, cnt);
    free(st.st);
    return s;
}

static loco_pt *pt_new(const char *label) {
    loco_pt *f = calloc(1, sizeof *f);
    if (f && !(f->path = strdup(label ? label : "(memory)"))) {
        free(f);
        f = NULL;
    }
    return f;
}

loco_status loco_pt_open_mem(const void *data, size_t len, const char *label, unsigned flags, loco_pt **out) {
    if (!out || (!data && len)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_pt_open_mem: NULL argument");
    *out = NULL;
    loco_pt *f = pt_new(label);
    if (!f) return loco_fail(LOCO_E_NOMEM, "out of memory");
    f->buf = data;
    f->len = len;
    loco_status s = pt_load(f, flags);
    if (s) {
        loco_pt_close(f);
        return s;
    }
    *out = f;
    return LOCO_OK;
}

loco_status loco_pt_open(const char *path, loco_pt **out) {
    if (!out || !path) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_pt_open: NULL argument");
    *out = NULL;
    loco_pt *f = pt_new(path);
    if (!f) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    int fd;
    uint64_t size;
    loco_status s = loco_open_file(path, &fd, &size); /* regular files only, never blocking */
    if (s) goto fail;
    if (size == 0) {
        close(fd);
        s = loco_fail(LOCO_E_FORMAT, "%s: an empty file, not a PyTorch zip checkpoint (truncated?)", path);
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
    f->buf = f->map;
    f->len = f->map_len;
    if ((s = pt_load(f, 0))) goto fail;
    *out = f;
    return LOCO_OK;
fail:
    loco_pt_close(f);
    return s;
}

/* ======================================================================== */
/* Reading tensors                                                          */
/* ======================================================================== */

size_t loco_pt_count(const loco_pt *f) { return f ? f->n : 0; }

const char *loco_pt_name(const loco_pt *f, size_t i) { return (f && i < f->n) ? f->t[i].name : NULL; }

static const pt_tensor *pt_find(const loco_pt *f, const char *name) {
    const pt_tensor *const *t = fmt_find_name(f->by_name, f->n, sizeof *f->by_name, tensor_name, name, strlen(name));
    return t ? *t : NULL;
}

loco_status loco_pt_info(const loco_pt *f, const char *name, loco_dtype *dtype, int *ndim,
                         int64_t shape[LOCO_MAX_DIMS]) {
    if (!f || !name) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_pt_info: NULL argument");
    const pt_tensor *t = pt_find(f, name);
    if (!t) return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    if (dtype) *dtype = t->dtype;
    if (ndim) *ndim = t->ndim;
    if (shape)
        for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
    return LOCO_OK;
}

/* The elements of t in C order, packed into dst (numel * element size). */
static void gather(const pt_tensor *t, uint8_t *dst) {
    size_t es = loco_dtype_size(t->dtype);
    if (t->numel == 0) return;
    if (t->contiguous) {
        memcpy(dst, t->storage + t->offset * es, t->numel * es);
        return;
    }
    int nd = t->ndim; /* >= 1: a 0-d tensor is contiguous */
    int64_t idx[LOCO_MAX_DIMS] = {0};
    uint64_t base = t->offset; /* element offset of idx with idx[nd-1] = 0 */
    const int64_t inner = t->shape[nd - 1], istride = t->stride[nd - 1];
    size_t o = 0;
    for (;;) {
        for (int64_t j = 0; j < inner; j++) {
            memcpy(dst + o, t->storage + (base + (uint64_t)(j * istride)) * es, es);
            o += es;
        }
        int d = nd - 2;
        while (d >= 0) {
            idx[d]++;
            base += (uint64_t)t->stride[d];
            if (idx[d] < t->shape[d]) break;
            base -= (uint64_t)(t->stride[d] * t->shape[d]);
            idx[d] = 0;
            d--;
        }
        if (d < 0) break;
    }
}

loco_status loco_pt_read(const loco_pt *f, const char *name, void **data, size_t *nbytes) {
    if (!f || !name || !data) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_pt_read: NULL argument");
    *data = NULL;
    const pt_tensor *t = pt_find(f, name);
    if (!t) return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    size_t nb = t->numel * loco_dtype_size(t->dtype);
    uint8_t *out = loco_malloc(nb ? nb : 1);
    if (!out) return loco_fail(LOCO_E_NOMEM, "%s: tensor '%s': out of memory (%zu bytes)", f->path, name, nb);
    gather(t, out);
    *data = out;
    if (nbytes) *nbytes = nb;
    return LOCO_OK;
}

static bool readable_f32(loco_dtype dt) {
    return dt == LOCO_DTYPE_F32 || dt == LOCO_DTYPE_F16 || dt == LOCO_DTYPE_BF16 || dt == LOCO_DTYPE_F64 ||
           dt == LOCO_DTYPE_U8 || dt == LOCO_DTYPE_BOOL;
}

loco_status loco_pt_read_f32(const loco_pt *f, const char *name, float **data, int *ndim,
                             int64_t shape[LOCO_MAX_DIMS], int allow_nonfinite) {
    if (!f || !name || !data) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_pt_read_f32: NULL argument");
    *data = NULL;
    const pt_tensor *t = pt_find(f, name);
    if (!t) return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    if (!readable_f32(t->dtype))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as float", f->path, name,
                         loco_dtype_name(t->dtype));
    size_t es = loco_dtype_size(t->dtype), n = t->numel;
    /* gather, then widen in place from the back when elements are smaller */
    size_t cap = n * (es > 4 ? es : 4);
    uint8_t *buf = loco_malloc(cap ? cap : 1);
    if (!buf) return loco_fail(LOCO_E_NOMEM, "%s: tensor '%s': out of memory", f->path, name);
    float *out = (float *)buf;
    if (es >= 4) {
        gather(t, buf);
        loco_to_f32(t->dtype, buf, n, out); /* F64 narrows front to back safely */
    } else {
        uint8_t *tail = buf + cap - n * es;
        gather(t, tail);
        /* out[i] (4 bytes at 4i) never overwrites tail elements > i */
        for (size_t i = 0; i < n; i++) loco_to_f32(t->dtype, tail + i * es, 1, out + i);
    }
    if (!allow_nonfinite)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(out[i])) {
                free(buf);
                return loco_fail(LOCO_E_NUMERIC, "%s: tensor '%s': element %zu is not finite", f->path, name, i);
            }
    if (ndim) *ndim = t->ndim;
    if (shape)
        for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
    *data = out;
    return LOCO_OK;
}

/* ======================================================================== */
/* Writing                                                                  */
/* ======================================================================== */

loco_status loco_pt_build(const loco_tensor_ref *tensors, size_t n, unsigned zip_flags, uint8_t **out, size_t *len) {
    if (!out || !len || (n && !tensors)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_pt_build: NULL argument");
    *out = NULL;
    *len = 0;
    size_t *nbytes = calloc(n ? n : 1, sizeof *nbytes);
    if (!nbytes) return loco_fail(LOCO_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const loco_tensor_ref *t = &tensors[i];
        loco_status s = LOCO_OK;
        if (!t->name || !t->name[0]) s = loco_fail(LOCO_E_INVALID_ARGUMENT, "tensor %zu: empty or NULL name", i);
        else if ((int)t->dtype < 0 || t->dtype >= LOCO_DTYPE_COUNT || !pkl_storage_type(t->dtype) || t->ndim < 0 ||
                 t->ndim > LOCO_MAX_DIMS)
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "tensor '%s': bad dtype (%d) or rank (%d)", t->name, (int)t->dtype,
                          t->ndim);
        size_t nb = loco_dtype_size(t->dtype);
        for (int d = 0; !s && d < t->ndim; d++)
            if (t->shape[d] < 0 || (uint64_t)t->shape[d] > PKL_MAX_DIM || !loco_mul_ok(nb, (size_t)t->shape[d], &nb))
                s = loco_fail(LOCO_E_INVALID_ARGUMENT, "tensor '%s': bad shape (dimension %d is %lld)", t->name, d,
                              (long long)t->shape[d]);
        if (!s && nb && !t->data) s = loco_fail(LOCO_E_INVALID_ARGUMENT, "tensor '%s': NULL data", t->name);
        for (size_t j = 0; !s && j < i; j++)
            if (strcmp(tensors[j].name, t->name) == 0)
                s = loco_fail(LOCO_E_INVALID_ARGUMENT, "tensor '%s' given twice", t->name);
        if (s) {
            free(nbytes);
            return s;
        }
        nbytes[i] = nb;
    }
    uint8_t *pk = NULL; /* data.pkl */
    size_t pk_len = 0;
    loco_status s = pkl_write_state_dict(tensors, n, &pk, &pk_len);
    if (s) {
        free(nbytes);
        return s;
    }
    loco_zip_item *items = calloc(n + 4, sizeof *items);
    char **names = calloc(n ? n : 1, sizeof *names);
    if (!items || !names) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    /* a serialization id derived from the content, so output is reproducible */
    char sid[48]; /* 40 digits */
    snprintf(sid, sizeof sid, "%020lu%020zu", crc32_z(0L, pk, (z_size_t)pk_len), pk_len);
    size_t k = 0;
    items[k++] = (loco_zip_item){"archive/data.pkl", pk, pk_len};
    items[k++] = (loco_zip_item){"archive/byteorder", "little", 6};
    for (size_t i = 0; i < n; i++) {
        names[i] = malloc(48);
        if (!names[i]) {
            s = loco_fail(LOCO_E_NOMEM, "out of memory");
            goto done;
        }
        snprintf(names[i], 48, "archive/data/%zu", i);
        items[k++] = (loco_zip_item){names[i], tensors[i].data, nbytes[i]};
    }
    items[k++] = (loco_zip_item){"archive/version", "3\n", 2};
    items[k++] = (loco_zip_item){"archive/.data/serialization_id", sid, 40};
    s = loco_zip_build(items, k, zip_flags, out, len);
done:
    for (size_t i = 0; names && i < n; i++) free(names[i]);
    free(names);
    free(items);
    free(pk);
    free(nbytes);
    return s;
}

loco_status loco_pt_write(const char *path, const loco_tensor_ref *tensors, size_t n) {
    if (!path) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_pt_write: NULL path");
    uint8_t *buf;
    size_t len;
    loco_status s = loco_pt_build(tensors, n, 0, &buf, &len);
    if (s) return loco_fail_in(s, path);
    s = loco_write_file_atomic(path, buf, len);
    free(buf);
    return s;
}
