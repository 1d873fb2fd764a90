/* pytorch.c - PyTorch checkpoints without Python: a reader for the zip
 * archives torch.save writes (torch >= 1.6) with a restricted pickle
 * interpreter that executes nothing, a writer of the same layout, the
 * loco_weights interface over safetensors and PyTorch files, and conversion
 * of a model folder to safetensors.
 *
 * The archive (written by PyTorch's miniz with MZ_ZIP_FLAG_WRITE_ZIP64):
 *   ARCHIVE/data.pkl              the pickled state_dict (protocol 2)
 *   ARCHIVE/byteorder             "little" (newer torch)
 *   ARCHIVE/data/<key>            raw little-endian bytes of storage <key>
 *   ARCHIVE/version               "3\n"
 *   ARCHIVE/.data/serialization_id
 * Every entry is stored (not compressed); data start at 64-byte boundaries
 * through an 'FB' padding extra field; CRC and sizes follow each entry in a
 * data descriptor and are repeated in the central directory, which is what we
 * read. A tensor is pickled as
 *   torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
 *                                   requires_grad, backward_hooks[, metadata])
 * where storage is a persistent id ('storage', torch.FloatStorage, key,
 * location, numel) loaded by BINPERSID.
 *
 * The interpreter is a plain loop over opcodes with an explicit stack: no
 * recursion anywhere (deep nesting cannot overflow the C stack), every value
 * lives in one chain freed at the end (cycles through the memo are harmless),
 * and counts of objects, stack entries and memo slots are bounded. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define PT_MAX_PICKLE ((size_t)64 << 20) /* data.pkl of 100k tensors is ~20 MB  */
#define PT_MAX_OBJECTS ((size_t)1 << 22)
#define PT_MAX_STACK ((size_t)1 << 22)
#define PT_MAX_MEMO ((size_t)1 << 22)
#define PT_MAX_DIM ((uint64_t)1 << 40)
#define PT_MAX_KEY 1024

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define SIG_DESCRIPTOR 0x08074b50u

/* ======================================================================== */
/* Small helpers                                                            */
/* ======================================================================== */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* s[0..len) as printable text for messages: at most 80 characters, anything
 * outside printable ASCII as '?'. */
static const char *clean(char *buf, size_t cap, const char *s, size_t len) {
    size_t k = 0;
    for (size_t i = 0; i < len && k + 4 < cap && k < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[k++] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    if (k < len && k + 4 <= cap) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = 0;
    return buf;
}

static bool is_float_dtype(loco_dtype d) {
    return d == LOCO_DTYPE_F32 || d == LOCO_DTYPE_F16 || d == LOCO_DTYPE_BF16 || d == LOCO_DTYPE_F64;
}

/* ======================================================================== */
/* The handle                                                               */
/* ======================================================================== */

typedef struct zent {
    const char *name; /* into the archive bytes, not NUL-terminated */
    size_t nlen;
    uint64_t hdr, off, size; /* local header, data start, data size */
    uint32_t crc;
    int st_dtype;      /* first storage reference to this entry: dtype, or -1 */
    uint64_t st_numel;
} zent;

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
    zent *ents; /* sorted by name */
    size_t n_ents;
    pt_tensor *t; /* pickle order */
    size_t n;
    pt_tensor **by_name;
};

void loco_pt_close(loco_pt *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    free(f->by_name);
    free(f->ents);
    free(f->path);
    free(f);
}

/* ======================================================================== */
/* Zip                                                                      */
/* ======================================================================== */

static int zent_cmp_name(const zent *a, const char *name, size_t nlen) {
    size_t m = a->nlen < nlen ? a->nlen : nlen;
    int c = memcmp(a->name, name, m);
    if (c) return c;
    return a->nlen < nlen ? -1 : a->nlen > nlen ? 1 : 0;
}

static int cmp_zent_name(const void *x, const void *y) {
    const zent *b = y;
    return zent_cmp_name(x, b->name, b->nlen);
}

static int cmp_zent_hdr(const void *x, const void *y) {
    const zent *a = *(const zent *const *)x, *b = *(const zent *const *)y;
    return a->hdr < b->hdr ? -1 : a->hdr > b->hdr ? 1 : 0;
}

static zent *zip_find(const loco_pt *f, const char *name, size_t nlen) {
    size_t lo = 0, hi = f->n_ents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = zent_cmp_name(&f->ents[mid], name, nlen);
        if (c == 0) return &f->ents[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* The zip64 extended information extra field (id 1) supplies, in this order,
 * each of the four fields whose 32-bit (16-bit for disk) value is saturated. */
static loco_status zip64_extra(const char *p, const char *nm, const uint8_t *x, size_t xl, uint64_t *usize,
                               uint64_t *csize, uint64_t *lho, uint64_t *disk) {
    while (xl >= 4) {
        uint16_t id = rd16(x), sz = rd16(x + 2);
        if ((size_t)sz > xl - 4) break;
        if (id == 1) {
            const uint8_t *q = x + 4;
            size_t left = sz;
            uint64_t *f64[3] = {usize, csize, lho};
            for (int i = 0; i < 3; i++) {
                if (*f64[i] != 0xFFFFFFFFu) continue;
                if (left < 8)
                    return loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': the zip64 extra field is too short", p, nm);
                *f64[i] = rd64(q);
                q += 8;
                left -= 8;
            }
            if (*disk == 0xFFFF) {
                if (left < 4)
                    return loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': the zip64 extra field is too short", p, nm);
                *disk = rd32(q);
            }
            return LOCO_OK;
        }
        x += 4 + sz;
        xl -= 4 + (size_t)sz;
    }
    return loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': sizes or offset need a zip64 extra field, and there is none",
                     p, nm);
}

static loco_status zip_parse(loco_pt *f, unsigned flags) {
    const uint8_t *b = f->buf;
    const size_t n = f->len;
    const char *p = f->path;
    if (n < 22)
        return loco_fail(LOCO_E_FORMAT, "%s: %zu bytes, too short for a zip archive (truncated?)", p, n);
    /* the end of central directory record, with its comment reaching the end */
    size_t eocd = SIZE_MAX;
    size_t lo = n - 22 > 0xFFFF ? n - 22 - 0xFFFF : 0;
    for (size_t i = n - 22 + 1; i-- > lo;)
        if (rd32(b + i) == SIG_EOCD && (size_t)rd16(b + i + 20) == n - 22 - i) {
            eocd = i;
            break;
        }
    if (eocd == SIZE_MAX)
        return loco_fail(LOCO_E_FORMAT, "%s: no zip end-of-central-directory record (truncated, or not a zip archive)",
                         p);
    uint64_t ndisk = rd16(b + eocd + 4), cddisk = rd16(b + eocd + 6), n_here = rd16(b + eocd + 8),
             n_total = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12), cd_off = rd32(b + eocd + 16);
    uint64_t area_end = eocd; /* where the central directory must end */
    if (eocd >= 20 && rd32(b + eocd - 20) == SIG_LOC64) {
        const uint8_t *L = b + eocd - 20;
        uint64_t z = rd64(L + 8);
        if (rd32(L + 4) != 0 || rd32(L + 16) > 1)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: multi-volume (split) zip archives are not supported", p);
        if (z > eocd - 20 || eocd - 20 - z < 56 || rd32(b + z) != SIG_EOCD64)
            return loco_fail(LOCO_E_FORMAT, "%s: the zip64 end record the locator points at (offset %llu) is missing", p,
                             (unsigned long long)z);
        const uint8_t *Z = b + z;
        ndisk = rd32(Z + 16);
        cddisk = rd32(Z + 20);
        n_here = rd64(Z + 24);
        n_total = rd64(Z + 32);
        cd_size = rd64(Z + 40);
        cd_off = rd64(Z + 48);
        area_end = z;
    } else if (n_total == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        return loco_fail(LOCO_E_FORMAT, "%s: the zip end record asks for zip64 records, and there are none", p);
    }
    if (ndisk || cddisk || n_here != n_total)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: multi-volume (split) zip archives are not supported", p);
    if (cd_off > area_end || cd_size > area_end - cd_off)
        return loco_fail(LOCO_E_FORMAT, "%s: the zip central directory (offset %llu, %llu bytes) is outside the file "
                         "(truncated?)", p, (unsigned long long)cd_off, (unsigned long long)cd_size);
    if (n_total == 0) return loco_fail(LOCO_E_FORMAT, "%s: an empty zip archive", p);
    if (n_total > cd_size / 46)
        return loco_fail(LOCO_E_FORMAT, "%s: %llu zip entries cannot fit a central directory of %llu bytes", p,
                         (unsigned long long)n_total, (unsigned long long)cd_size);
    f->ents = calloc((size_t)n_total, sizeof *f->ents);
    zent **by_hdr = calloc((size_t)n_total, sizeof *by_hdr);
    loco_status s = LOCO_OK;
    if (!f->ents || !by_hdr) {
        free(by_hdr);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
    }
    const uint8_t *q = b + cd_off, *qe = b + cd_off + cd_size;
    char nm[96]; /* an entry's name for messages only, shortened by clean() */
    for (uint64_t i = 0; i < n_total; i++) {
        if (qe - q < 46 || rd32(q) != SIG_CENTRAL) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip central directory entry %llu is malformed", p, (unsigned long long)i);
            goto done;
        }
        uint16_t gflags = rd16(q + 8), method = rd16(q + 10), nl = rd16(q + 28), xl = rd16(q + 30), cl = rd16(q + 32);
        uint32_t crc = rd32(q + 16);
        uint64_t csize = rd32(q + 20), usize = rd32(q + 24), disk = rd16(q + 34), lho = rd32(q + 42);
        if ((size_t)(qe - q) - 46 < (size_t)nl + xl + cl) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip central directory entry %llu runs past the directory", p,
                          (unsigned long long)i);
            goto done;
        }
        const char *name = (const char *)q + 46;
        clean(nm, sizeof nm, name, nl);
        if (nl == 0 || memchr(name, 0, nl)) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entry %llu has an empty name or a NUL in it", p, (unsigned long long)i);
            goto done;
        }
        if (usize == 0xFFFFFFFFu || csize == 0xFFFFFFFFu || lho == 0xFFFFFFFFu || disk == 0xFFFF)
            if ((s = zip64_extra(p, nm, q + 46 + nl, xl, &usize, &csize, &lho, &disk))) goto done;
        if (gflags & 0x41) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: zip entry '%s' is encrypted", p, nm);
            goto done;
        }
        if (method != 0) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: zip entry '%s' is compressed (method %u%s); only stored entries are "
                          "read (torch.save stores them)", p, nm, method, method == 8 ? ", deflate" : "");
            goto done;
        }
        if (csize != usize || disk != 0) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': stored with %llu bytes but %llu bytes long%s", p, nm,
                          (unsigned long long)csize, (unsigned long long)usize, disk ? " (or on another disk)" : "");
            goto done;
        }
        if (lho > cd_off || cd_off - lho < 30 || rd32(b + lho) != SIG_LOCAL) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': no local header at offset %llu", p, nm,
                          (unsigned long long)lho);
            goto done;
        }
        const uint8_t *L = b + lho;
        uint16_t lnl = rd16(L + 26), lxl = rd16(L + 28);
        if (rd16(L + 8) != method || (rd16(L + 6) & 0x41) || lnl != nl || cd_off - lho - 30 < nl ||
            memcmp(L + 30, name, nl) != 0) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': the local header disagrees with the central directory", p,
                          nm);
            goto done;
        }
        uint64_t off = lho + 30 + lnl + lxl;
        if (off > cd_off || usize > cd_off - off) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': its %llu bytes of data at offset %llu run past the data "
                          "area (truncated?)", p, nm, (unsigned long long)usize, (unsigned long long)off);
            goto done;
        }
        zent *e = &f->ents[i];
        e->name = name;
        e->nlen = nl;
        e->hdr = lho;
        e->off = off;
        e->size = usize;
        e->crc = crc;
        e->st_dtype = -1;
        by_hdr[i] = e;
        q += 46 + (size_t)nl + xl + cl;
    }
    f->n_ents = (size_t)n_total;
    /* entries must not overlap: each one's data ends before the next header */
    qsort(by_hdr, f->n_ents, sizeof *by_hdr, cmp_zent_hdr);
    for (size_t i = 1; i < f->n_ents; i++)
        if (by_hdr[i]->hdr < by_hdr[i - 1]->off + by_hdr[i - 1]->size) {
            char nm2[96]; /* for the message only (clean) */
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entries '%s' and '%s' overlap", p,
                          clean(nm, sizeof nm, by_hdr[i - 1]->name, by_hdr[i - 1]->nlen),
                          clean(nm2, sizeof nm2, by_hdr[i]->name, by_hdr[i]->nlen));
            goto done;
        }
    if (!(flags & LOCO_PT_NO_CRC))
        for (size_t i = 0; i < f->n_ents; i++) {
            const zent *e = by_hdr[i];
            uint32_t c = (uint32_t)crc32_z(0L, b + e->off, (z_size_t)e->size);
            if (c != e->crc) {
                s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': CRC-32 mismatch (recorded %08x, data give %08x): the "
                              "file is corrupt", p, clean(nm, sizeof nm, e->name, e->nlen), e->crc, c);
                goto done;
            }
        }
    qsort(f->ents, f->n_ents, sizeof *f->ents, cmp_zent_name);
    for (size_t i = 1; i < f->n_ents; i++)
        if (zent_cmp_name(&f->ents[i - 1], f->ents[i].name, f->ents[i].nlen) == 0) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s' appears twice", p,
                          clean(nm, sizeof nm, f->ents[i].name, f->ents[i].nlen));
            goto done;
        }
done:
    free(by_hdr);
    return s;
}

/* ======================================================================== */
/* Pickle values                                                            */
/* ======================================================================== */

typedef enum vtype { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR } vtype;
static const char *const vtype_name[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict",
                                         "global", "storage", "tensor"};

/* the globals that may be named */
enum {
    G_ODICT,
    G_REBUILD_V2,
    G_REBUILD_PARAM,
    G_STORAGE /* + dtype */
};
static const struct {
    const char *name;
    loco_dtype dtype;
} storage_types[] = {
    {"FloatStorage", LOCO_DTYPE_F32}, {"HalfStorage", LOCO_DTYPE_F16}, {"BFloat16Storage", LOCO_DTYPE_BF16},
    {"DoubleStorage", LOCO_DTYPE_F64}, {"LongStorage", LOCO_DTYPE_I64}, {"IntStorage", LOCO_DTYPE_I32},
    {"CharStorage", LOCO_DTYPE_I8},    {"ByteStorage", LOCO_DTYPE_U8},  {"BoolStorage", LOCO_DTYPE_BOOL},
};
#define N_STORAGE_TYPES (sizeof storage_types / sizeof storage_types[0])

typedef struct tdesc {
    int ndim;
    int64_t size[LOCO_MAX_DIMS], stride[LOCO_MAX_DIMS];
    uint64_t offset;
    struct val *storage;
} tdesc;

typedef struct val {
    vtype t;
    struct val *chain; /* every value, for freeing */
    union {
        int64_t i; /* V_BOOL, V_INT; V_GLOBAL: G_* */
        double f;
        struct {
            char *s;
            size_t len;
        } str;
        struct {
            struct val **it; /* V_DICT: key, value, key, value... */
            size_t n, cap;
        } seq;
        struct {
            loco_dtype dtype;
            zent *ent;
            uint64_t numel;
        } st;
        tdesc *td;
    } u;
} val;

static const char *global_name(int g, char *buf, size_t cap) {
    if (g == G_ODICT) return "collections.OrderedDict";
    if (g == G_REBUILD_V2) return "torch._utils._rebuild_tensor_v2";
    if (g == G_REBUILD_PARAM) return "torch._utils._rebuild_parameter";
    snprintf(buf, cap, "torch.%s", storage_types[g - G_STORAGE].name);
    return buf;
}

typedef struct vm {
    loco_pt *f;
    const char *prefix; /* ARCHIVE/ */
    size_t prefix_len;
    char entry[128]; /* data.pkl's name, for messages only (shortened by clean) */
    const uint8_t *pk;
    size_t len, pos; /* pos: offset of the opcode being run */
    val **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nm, mcap;
    val **memo;
    size_t memo_cap, memo_used;
    val *chain;
    size_t nobj;
} vm;

static loco_status vm_err(vm *m, loco_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static loco_status vm_err(vm *m, loco_status s, const char *fmt, ...) {
    char msg[512]; /* the message only; names in it are shortened by clean() */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return loco_fail(s, "%s: %s, byte %zu: %s", m->f->path, m->entry, m->pos, msg);
}

static void vm_free(vm *m) {
    for (val *v = m->chain, *nx; v; v = nx) {
        nx = v->chain;
        if (v->t == V_STR) free(v->u.str.s);
        else if (v->t == V_TUPLE || v->t == V_LIST || v->t == V_DICT) free(v->u.seq.it);
        else if (v->t == V_TENSOR) free(v->u.td);
        free(v);
    }
    free(m->stack);
    free(m->marks);
    free(m->memo);
}

static val *vnew(vm *m, vtype t) {
    if (m->nobj >= PT_MAX_OBJECTS) return NULL;
    val *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->t = t;
    v->chain = m->chain;
    m->chain = v;
    m->nobj++;
    return v;
}

static loco_status oom(vm *m) {
    if (m->nobj >= PT_MAX_OBJECTS)
        return vm_err(m, LOCO_E_NOMEM, "more than %zu objects: not a state_dict", (size_t)PT_MAX_OBJECTS);
    return vm_err(m, LOCO_E_NOMEM, "out of memory");
}

static bool seq_push(val *v, val *x) {
    if (v->u.seq.n == v->u.seq.cap) {
        size_t nc = v->u.seq.cap ? 2 * v->u.seq.cap : 4;
        val **ni = realloc(v->u.seq.it, nc * sizeof *ni);
        if (!ni) return false;
        v->u.seq.it = ni;
        v->u.seq.cap = nc;
    }
    v->u.seq.it[v->u.seq.n++] = x;
    return true;
}

static loco_status push(vm *m, val *v) {
    if (!v) return oom(m);
    if (m->sp == m->scap) {
        if (m->scap >= PT_MAX_STACK)
            return vm_err(m, LOCO_E_NOMEM, "the stack passes %zu entries: not a state_dict", (size_t)PT_MAX_STACK);
        size_t nc = m->scap ? 2 * m->scap : 64;
        val **ns = realloc(m->stack, nc * sizeof *ns);
        if (!ns) return oom(m);
        m->stack = ns;
        m->scap = nc;
    }
    m->stack[m->sp++] = v;
    return LOCO_OK;
}

/* the stack may not be popped below the innermost MARK (as CPython) */
static size_t fence(const vm *m) { return m->nm ? m->marks[m->nm - 1] : 0; }

static loco_status need_items(vm *m, size_t k, const char *op) {
    if (m->sp - fence(m) < k) return vm_err(m, LOCO_E_FORMAT, "%s needs %zu value(s) on the stack", op, k);
    return LOCO_OK;
}

static loco_status pop_mark(vm *m, const char *op, size_t *k) {
    if (!m->nm) return vm_err(m, LOCO_E_FORMAT, "%s without a MARK", op);
    *k = m->marks[--m->nm];
    return LOCO_OK;
}

/* a new tuple/list/dict from stack[k..sp) */
static loco_status collect(vm *m, vtype t, size_t k, val **out) {
    val *v = vnew(m, t);
    if (!v) return oom(m);
    size_t cnt = m->sp - k;
    if (cnt) {
        v->u.seq.it = malloc(cnt * sizeof *v->u.seq.it);
        if (!v->u.seq.it) return oom(m);
        memcpy(v->u.seq.it, m->stack + k, cnt * sizeof *v->u.seq.it);
        v->u.seq.n = v->u.seq.cap = cnt;
    }
    m->sp = k;
    *out = v;
    return LOCO_OK;
}

static loco_status memo_put(vm *m, uint64_t idx) {
    if (m->sp == 0) return vm_err(m, LOCO_E_FORMAT, "memo store with an empty stack");
    if (idx >= PT_MAX_MEMO)
        return vm_err(m, LOCO_E_NOMEM, "memo index %llu is beyond %zu", (unsigned long long)idx, (size_t)PT_MAX_MEMO);
    if (idx >= m->memo_cap) {
        size_t nc = m->memo_cap ? m->memo_cap : 64;
        while (nc <= idx) nc *= 2;
        val **nm = realloc(m->memo, nc * sizeof *nm);
        if (!nm) return oom(m);
        memset(nm + m->memo_cap, 0, (nc - m->memo_cap) * sizeof *nm);
        m->memo = nm;
        m->memo_cap = nc;
    }
    if (!m->memo[idx]) m->memo_used++;
    m->memo[idx] = m->stack[m->sp - 1];
    return LOCO_OK;
}

static loco_status memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx])
        return vm_err(m, LOCO_E_FORMAT, "memo index %llu was never stored", (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

static loco_status resolve_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl, val **out) {
    int g = -1;
    if (ml == 11 && !memcmp(mod, "collections", 11) && nl == 11 && !memcmp(name, "OrderedDict", 11)) g = G_ODICT;
    else if (ml == 12 && !memcmp(mod, "torch._utils", 12)) {
        if (nl == 18 && !memcmp(name, "_rebuild_tensor_v2", 18)) g = G_REBUILD_V2;
        else if (nl == 18 && !memcmp(name, "_rebuild_parameter", 18)) g = G_REBUILD_PARAM;
    } else if (ml == 5 && !memcmp(mod, "torch", 5)) {
        for (size_t i = 0; i < N_STORAGE_TYPES; i++)
            if (strlen(storage_types[i].name) == nl && !memcmp(name, storage_types[i].name, nl)) g = G_STORAGE + (int)i;
    }
    if (g < 0) {
        char a[96], b[96]; /* for the message only (clean) */
        return vm_err(m, LOCO_E_UNSUPPORTED,
                      "global '%s.%s' is not allowed (a state_dict needs only collections.OrderedDict, "
                      "torch._utils._rebuild_tensor_v2 and torch.*Storage; nothing is ever executed)",
                      clean(a, sizeof a, mod, ml), clean(b, sizeof b, name, nl));
    }
    val *v = vnew(m, V_GLOBAL);
    if (!v) return oom(m);
    v->u.i = g;
    *out = v;
    return LOCO_OK;
}

/* BINPERSID: ('storage', torch.XStorage, key, location, numel) */
static loco_status persistent_load(vm *m, val *pid, val **out) {
    if (pid->t != V_TUPLE || pid->u.seq.n != 5)
        return vm_err(m, LOCO_E_FORMAT, "a persistent id must be a 5-tuple ('storage', type, key, location, numel), "
                      "not a %s%s", pid->t == V_TUPLE ? "tuple of another length" : vtype_name[pid->t], "");
    val **a = pid->u.seq.it;
    if (a[0]->t != V_STR || strcmp(a[0]->u.str.s, "storage") != 0)
        return vm_err(m, LOCO_E_UNSUPPORTED, "persistent id of a kind other than 'storage'");
    if (a[1]->t != V_GLOBAL || a[1]->u.i < G_STORAGE)
        return vm_err(m, LOCO_E_UNSUPPORTED, "a storage's type must be one of torch.*Storage, not a %s",
                      a[1]->t == V_GLOBAL ? "function" : vtype_name[a[1]->t]);
    if (a[2]->t != V_STR || a[3]->t != V_STR || a[4]->t != V_INT || a[4]->u.i < 0)
        return vm_err(m, LOCO_E_FORMAT, "a storage's key and location must be strings and its size an int >= 0");
    loco_dtype dt = storage_types[a[1]->u.i - G_STORAGE].dtype;
    const char *key = a[2]->u.str.s;
    size_t kl = a[2]->u.str.len;
    char kc[96]; /* the key for messages only (clean); the lookup uses the whole key */
    if (kl == 0 || kl > PT_MAX_KEY) return vm_err(m, LOCO_E_FORMAT, "storage key of %zu bytes", kl);
    char *full = malloc(m->prefix_len + 5 + kl + 1);
    if (!full) return oom(m);
    memcpy(full, m->prefix, m->prefix_len);
    memcpy(full + m->prefix_len, "data/", 5);
    memcpy(full + m->prefix_len + 5, key, kl);
    zent *e = zip_find(m->f, full, m->prefix_len + 5 + kl);
    free(full);
    clean(kc, sizeof kc, key, kl);
    if (!e)
        return vm_err(m, LOCO_E_FORMAT, "storage '%s' has no entry '%.*sdata/%s' in the archive", kc,
                      (int)m->prefix_len, m->prefix, kc);
    uint64_t numel = (uint64_t)a[4]->u.i, need;
    size_t es = loco_dtype_size(dt);
    if (__builtin_mul_overflow(numel, (uint64_t)es, &need)) need = UINT64_MAX;
    if (need != e->size)
        return vm_err(m, LOCO_E_FORMAT, "storage '%s' of %llu %s elements needs %s bytes, but its entry has %llu", kc,
                      (unsigned long long)numel, loco_dtype_name(dt),
                      need > e->size ? "more" : "fewer", (unsigned long long)e->size);
    if (e->st_dtype >= 0 && (e->st_dtype != (int)dt || e->st_numel != numel))
        return vm_err(m, LOCO_E_FORMAT, "storage '%s' is named with two different types or sizes",
                      kc);
    e->st_dtype = (int)dt;
    e->st_numel = numel;
    val *v = vnew(m, V_STORAGE);
    if (!v) return oom(m);
    v->u.st.dtype = dt;
    v->u.st.ent = e;
    v->u.st.numel = numel;
    *out = v;
    return LOCO_OK;
}

static loco_status int_tuple(vm *m, const val *v, const char *what, int64_t *out, int *n) {
    if (v->t != V_TUPLE) return vm_err(m, LOCO_E_FORMAT, "a tensor's %s must be a tuple, not a %s", what, vtype_name[v->t]);
    if (v->u.seq.n > LOCO_MAX_DIMS)
        return vm_err(m, LOCO_E_UNSUPPORTED, "a tensor of %zu dimensions (at most %d)", v->u.seq.n, LOCO_MAX_DIMS);
    for (size_t i = 0; i < v->u.seq.n; i++) {
        const val *x = v->u.seq.it[i];
        if (x->t != V_INT || x->u.i < 0)
            return vm_err(m, LOCO_E_FORMAT, "a tensor's %s[%zu] is not an int >= 0", what, i);
        if ((uint64_t)x->u.i > PT_MAX_DIM)
            return vm_err(m, LOCO_E_NOMEM, "a tensor's %s[%zu] = %lld is absurdly large", what, i, (long long)x->u.i);
        out[i] = x->u.i;
    }
    *n = (int)v->u.seq.n;
    return LOCO_OK;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static loco_status rebuild_tensor(vm *m, val *args, val **out) {
    size_t na = args->u.seq.n;
    val **a = args->u.seq.it;
    if (na != 6 && na != 7)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2 takes 6 or 7 arguments, not %zu", na);
    if (a[0]->t != V_STORAGE)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: the storage is a %s", vtype_name[a[0]->t]);
    if (a[1]->t != V_INT || a[1]->u.i < 0)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: the storage offset is not an int >= 0");
    if (a[4]->t != V_BOOL && a[4]->t != V_INT)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: requires_grad is a %s", vtype_name[a[4]->t]);
    if (a[5]->t != V_DICT || a[5]->u.seq.n)
        return vm_err(m, LOCO_E_UNSUPPORTED, "_rebuild_tensor_v2: backward hooks must be an empty dict");
    if (na == 7 && (a[6]->t != V_DICT || a[6]->u.seq.n))
        return vm_err(m, LOCO_E_UNSUPPORTED,
                      "_rebuild_tensor_v2: tensor metadata (conjugate or negative views) is not supported");
    tdesc *td = calloc(1, sizeof *td);
    if (!td) return oom(m);
    val *v = vnew(m, V_TENSOR);
    if (!v) {
        free(td);
        return oom(m);
    }
    v->u.td = td;
    int ns, nst;
    loco_status s;
    if ((s = int_tuple(m, a[2], "size", td->size, &ns)) || (s = int_tuple(m, a[3], "stride", td->stride, &nst)))
        return s;
    if (ns != nst)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: %d sizes but %d strides", ns, nst);
    td->ndim = ns;
    td->offset = (uint64_t)a[1]->u.i;
    td->storage = a[0];
    /* the view must stay inside the storage: its last element is
     * offset + sum (size_d - 1) * stride_d */
    uint64_t numel = 1, last = td->offset;
    bool ovf = false;
    for (int d = 0; d < ns; d++) {
        uint64_t t;
        ovf |= __builtin_mul_overflow(numel, (uint64_t)td->size[d], &numel);
        if (td->size[d] > 0) {
            ovf |= __builtin_mul_overflow((uint64_t)td->size[d] - 1, (uint64_t)td->stride[d], &t);
            ovf |= __builtin_add_overflow(last, t, &last);
        }
    }
    uint64_t sn = a[0]->u.st.numel;
    char kc[96]; /* for messages only (clean) */
    const zent *e = a[0]->u.st.ent;
    if (ovf || numel > ((uint64_t)1 << 48))
        return vm_err(m, LOCO_E_NOMEM, "a view of storage '%s' has an absurd size", clean(kc, sizeof kc, e->name, e->nlen));
    if (numel > sn)
        return vm_err(m, LOCO_E_UNSUPPORTED, "a view of storage '%s' has %llu elements, more than the storage's %llu "
                      "(broadcast views are not read)", clean(kc, sizeof kc, e->name, e->nlen),
                      (unsigned long long)numel, (unsigned long long)sn);
    if (numel ? last >= sn : td->offset > sn)
        return vm_err(m, LOCO_E_FORMAT, "a view of storage '%s' reaches element %llu, but the storage has %llu",
                      clean(kc, sizeof kc, e->name, e->nlen), (unsigned long long)(numel ? last : td->offset),
                      (unsigned long long)sn);
    *out = v;
    return LOCO_OK;
}

static loco_status do_reduce(vm *m, val *fn, val *args, val **out) {
    if (fn->t != V_GLOBAL)
        return vm_err(m, LOCO_E_UNSUPPORTED, "REDUCE of a %s: only collections.OrderedDict, "
                      "torch._utils._rebuild_tensor_v2 and _rebuild_parameter may be called", vtype_name[fn->t]);
    if (args->t != V_TUPLE) return vm_err(m, LOCO_E_FORMAT, "REDUCE with %s arguments", vtype_name[args->t]);
    char gb[64]; /* "torch.BFloat16Storage" at most */
    switch (fn->u.i) {
    case G_ODICT:
        if (args->u.seq.n) return vm_err(m, LOCO_E_UNSUPPORTED, "collections.OrderedDict called with arguments");
        *out = vnew(m, V_DICT);
        return *out ? LOCO_OK : oom(m);
    case G_REBUILD_V2: return rebuild_tensor(m, args, out);
    case G_REBUILD_PARAM:
        /* _rebuild_parameter(data, requires_grad, backward_hooks): the data */
        if (args->u.seq.n != 3 || args->u.seq.it[0]->t != V_TENSOR || args->u.seq.it[2]->t != V_DICT ||
            args->u.seq.it[2]->u.seq.n)
            return vm_err(m, LOCO_E_UNSUPPORTED, "_rebuild_parameter takes (tensor, requires_grad, {})");
        *out = args->u.seq.it[0];
        return LOCO_OK;
    default:
        return vm_err(m, LOCO_E_UNSUPPORTED, "calling %s is not allowed", global_name((int)fn->u.i, gb, sizeof gb));
    }
}

static const char *op_name(uint8_t op) {
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

/* Runs the pickle; *result is the value STOP returns. */
static loco_status vm_run(vm *m, val **result) {
    const uint8_t *b = m->pk;
    const size_t n = m->len;
    size_t i = 0;
    loco_status s = LOCO_OK;
    val *v, *x, *y;
    size_t k = 0;
#define NEED(cnt)                                                                                                     \
    do {                                                                                                               \
        if ((uint64_t)(cnt) > (uint64_t)(n - i))                                                                       \
            return vm_err(m, LOCO_E_FORMAT, "%s runs past the end of the pickle (truncated?)", op_name(op));          \
    } while (0)
#define TRY(e)                                                                                                         \
    do {                                                                                                               \
        if ((s = (e)) != LOCO_OK) return s;                                                                            \
    } while (0)
    if (n < 2 || b[0] != 0x80)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s: not a pickle of protocol 2 or later (torch.save writes protocol "
                         "2)", m->f->path, m->entry);
    for (;;) {
        if (i >= n) {
            m->pos = n;
            return vm_err(m, LOCO_E_FORMAT, "the pickle ends without STOP (truncated?)");
        }
        m->pos = i;
        uint8_t op = b[i++];
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (b[i] < 2 || b[i] > 5) return vm_err(m, LOCO_E_UNSUPPORTED, "pickle protocol %u (2 to 5 are read)", b[i]);
            i++;
            break;
        case 0x95: /* FRAME: only a size hint */
            NEED(8);
            if (rd64(b + i) > n - i - 8) return vm_err(m, LOCO_E_FORMAT, "FRAME of %llu bytes runs past the end",
                                                       (unsigned long long)rd64(b + i));
            i += 8;
            break;
        case '.': /* STOP */
            TRY(need_items(m, 1, "STOP"));
            *result = m->stack[--m->sp];
            return LOCO_OK;
        case '(': /* MARK */
            if (m->nm == m->mcap) {
                if (m->mcap >= PT_MAX_STACK) return vm_err(m, LOCO_E_NOMEM, "too many MARKs");
                size_t nc = m->mcap ? 2 * m->mcap : 16;
                size_t *nmk = realloc(m->marks, nc * sizeof *nmk);
                if (!nmk) return oom(m);
                m->marks = nmk;
                m->mcap = nc;
            }
            m->marks[m->nm++] = m->sp;
            break;
        case '0': /* POP: the top, or else the innermost mark (as pickle.py) */
            if (m->sp > fence(m)) m->sp--;
            else if (m->nm) m->nm--;
            else return vm_err(m, LOCO_E_FORMAT, "POP on an empty stack");
            break;
        case '1': /* POP_MARK */
            TRY(pop_mark(m, "POP_MARK", &k));
            m->sp = k;
            break;
        case '2': /* DUP */
            TRY(need_items(m, 1, "DUP"));
            TRY(push(m, m->stack[m->sp - 1]));
            break;
        case 'N': TRY(push(m, vnew(m, V_NONE))); break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            v = vnew(m, V_BOOL);
            if (v) v->u.i = op == 0x88;
            TRY(push(m, v));
            break;
        case 'J': /* BININT */
            NEED(4);
            v = vnew(m, V_INT);
            if (v) v->u.i = (int32_t)rd32(b + i);
            i += 4;
            TRY(push(m, v));
            break;
        case 'K': /* BININT1 */
            NEED(1);
            v = vnew(m, V_INT);
            if (v) v->u.i = b[i];
            i += 1;
            TRY(push(m, v));
            break;
        case 'M': /* BININT2 */
            NEED(2);
            v = vnew(m, V_INT);
            if (v) v->u.i = rd16(b + i);
            i += 2;
            TRY(push(m, v));
            break;
        case 0x8a: { /* LONG1: n bytes of two's complement, little-endian */
            NEED(1);
            size_t nb = b[i++];
            NEED(nb);
            if (nb > 8) return vm_err(m, LOCO_E_UNSUPPORTED, "an integer of %zu bytes (at most 8)", nb);
            uint64_t u = 0;
            for (size_t j = 0; j < nb; j++) u |= (uint64_t)b[i + j] << (8 * j);
            if (nb && nb < 8 && (b[i + nb - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * nb); /* sign-extend */
            i += nb;
            v = vnew(m, V_INT);
            if (v) memcpy(&v->u.i, &u, 8);
            TRY(push(m, v));
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            NEED(8);
            uint64_t u = 0;
            for (int j = 0; j < 8; j++) u = u << 8 | b[i + j];
            i += 8;
            v = vnew(m, V_FLOAT);
            if (v) memcpy(&v->u.f, &u, 8);
            TRY(push(m, v));
            break;
        }
        case 'X':    /* BINUNICODE */
        case 0x8c:   /* SHORT_BINUNICODE */
        case 0x8d: { /* BINUNICODE8 */
            uint64_t sl;
            if (op == 0x8c) {
                NEED(1);
                sl = b[i++];
            } else if (op == 'X') {
                NEED(4);
                sl = rd32(b + i);
                i += 4;
            } else {
                NEED(8);
                sl = rd64(b + i);
                i += 8;
            }
            NEED(sl);
            if (memchr(b + i, 0, (size_t)sl)) return vm_err(m, LOCO_E_FORMAT, "a string with a NUL character");
            v = vnew(m, V_STR);
            if (!v || !(v->u.str.s = malloc((size_t)sl + 1))) return oom(m);
            memcpy(v->u.str.s, b + i, (size_t)sl);
            v->u.str.s[sl] = 0;
            v->u.str.len = (size_t)sl;
            i += (size_t)sl;
            TRY(push(m, v));
            break;
        }
        case ')': TRY(push(m, vnew(m, V_TUPLE))); break;
        case ']': TRY(push(m, vnew(m, V_LIST))); break;
        case '}': TRY(push(m, vnew(m, V_DICT))); break;
        case 0x85: /* TUPLE1..3 */
        case 0x86:
        case 0x87:
            k = (size_t)(op - 0x84);
            TRY(need_items(m, k, op_name(op)));
            TRY(collect(m, V_TUPLE, m->sp - k, &v));
            TRY(push(m, v));
            break;
        case 't': /* TUPLE */
        case 'l': /* LIST */
        case 'd': /* DICT */
            TRY(pop_mark(m, op_name(op), &k));
            if (op == 'd' && (m->sp - k) % 2) return vm_err(m, LOCO_E_FORMAT, "DICT with an odd number of values");
            TRY(collect(m, op == 't' ? V_TUPLE : op == 'l' ? V_LIST : V_DICT, k, &v));
            TRY(push(m, v));
            break;
        case 'a': /* APPEND */
            TRY(need_items(m, 2, "APPEND"));
            x = m->stack[--m->sp];
            v = m->stack[m->sp - 1];
            if (v->t != V_LIST) return vm_err(m, LOCO_E_UNSUPPORTED, "APPEND to a %s", vtype_name[v->t]);
            if (!seq_push(v, x)) return oom(m);
            break;
        case 'e': /* APPENDS */
            TRY(pop_mark(m, "APPENDS", &k));
            if (k == 0 || k <= fence(m)) return vm_err(m, LOCO_E_FORMAT, "APPENDS without a list below its MARK");
            v = m->stack[k - 1];
            if (v->t != V_LIST) return vm_err(m, LOCO_E_UNSUPPORTED, "APPENDS to a %s", vtype_name[v->t]);
            for (size_t j = k; j < m->sp; j++)
                if (!seq_push(v, m->stack[j])) return oom(m);
            m->sp = k;
            break;
        case 's': /* SETITEM */
            TRY(need_items(m, 3, "SETITEM"));
            y = m->stack[--m->sp];
            x = m->stack[--m->sp];
            v = m->stack[m->sp - 1];
            if (v->t != V_DICT) return vm_err(m, LOCO_E_UNSUPPORTED, "SETITEM on a %s", vtype_name[v->t]);
            if (!seq_push(v, x) || !seq_push(v, y)) return oom(m);
            break;
        case 'u': /* SETITEMS */
            TRY(pop_mark(m, "SETITEMS", &k));
            if (k == 0 || k <= fence(m)) return vm_err(m, LOCO_E_FORMAT, "SETITEMS without a dict below its MARK");
            v = m->stack[k - 1];
            if (v->t != V_DICT) return vm_err(m, LOCO_E_UNSUPPORTED, "SETITEMS on a %s", vtype_name[v->t]);
            if ((m->sp - k) % 2) return vm_err(m, LOCO_E_FORMAT, "SETITEMS with an odd number of values");
            for (size_t j = k; j < m->sp; j++)
                if (!seq_push(v, m->stack[j])) return oom(m);
            m->sp = k;
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *e1 = memchr(b + i, '\n', n - i < 256 ? n - i : 256);
            const uint8_t *e2 = e1 ? memchr(e1 + 1, '\n', (size_t)(b + n - e1 - 1) < 256 ? (size_t)(b + n - e1 - 1) : 256)
                                   : NULL;
            if (!e2) return vm_err(m, LOCO_E_FORMAT, "GLOBAL without two newline-terminated names");
            TRY(resolve_global(m, (const char *)b + i, (size_t)(e1 - b - i), (const char *)e1 + 1,
                               (size_t)(e2 - e1 - 1), &v));
            i = (size_t)(e2 - b) + 1;
            TRY(push(m, v));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            TRY(need_items(m, 2, "STACK_GLOBAL"));
            y = m->stack[--m->sp];
            x = m->stack[--m->sp];
            if (x->t != V_STR || y->t != V_STR) return vm_err(m, LOCO_E_FORMAT, "STACK_GLOBAL of non-strings");
            TRY(resolve_global(m, x->u.str.s, x->u.str.len, y->u.str.s, y->u.str.len, &v));
            TRY(push(m, v));
            break;
        case 'R': /* REDUCE */
            TRY(need_items(m, 2, "REDUCE"));
            y = m->stack[--m->sp];
            x = m->stack[--m->sp];
            TRY(do_reduce(m, x, y, &v));
            TRY(push(m, v));
            break;
        case 'b': /* BUILD: only the attributes of a dict (an OrderedDict's _metadata), dropped */
            TRY(need_items(m, 2, "BUILD"));
            y = m->stack[--m->sp];
            v = m->stack[m->sp - 1];
            if (v->t != V_DICT) return vm_err(m, LOCO_E_UNSUPPORTED, "BUILD on a %s", vtype_name[v->t]);
            if (y->t != V_DICT && y->t != V_NONE)
                return vm_err(m, LOCO_E_UNSUPPORTED, "BUILD with a %s state", vtype_name[y->t]);
            break;
        case 'Q': /* BINPERSID */
            TRY(need_items(m, 1, "BINPERSID"));
            x = m->stack[--m->sp];
            TRY(persistent_load(m, x, &v));
            TRY(push(m, v));
            break;
        case 'q': /* BINPUT */
            NEED(1);
            TRY(memo_put(m, b[i]));
            i += 1;
            break;
        case 'r': /* LONG_BINPUT */
            NEED(4);
            TRY(memo_put(m, rd32(b + i)));
            i += 4;
            break;
        case 0x94: /* MEMOIZE */
            TRY(memo_put(m, m->memo_used));
            break;
        case 'h': /* BINGET */
            NEED(1);
            TRY(memo_get(m, b[i]));
            i += 1;
            break;
        case 'j': /* LONG_BINGET */
            NEED(4);
            TRY(memo_get(m, rd32(b + i)));
            i += 4;
            break;
        default: {
            const char *nm = op_name(op);
            if (nm) return vm_err(m, LOCO_E_UNSUPPORTED, "opcode %s (0x%02x) is not allowed in a state_dict", nm, op);
            return vm_err(m, LOCO_E_FORMAT, "byte 0x%02x is not a pickle opcode", op);
        }
        }
    }
#undef NEED
#undef TRY
}

/* ======================================================================== */
/* Opening                                                                  */
/* ======================================================================== */

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const pt_tensor *const *)a)->name, (*(const pt_tensor *const *)b)->name);
}

/* The top-level dict -> f->t */
static loco_status take_tensors(vm *m, val *root) {
    loco_pt *f = m->f;
    if (root->t != V_DICT)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s holds a %s, not a state_dict (a dict of tensors)", f->path,
                         m->entry, vtype_name[root->t]);
    size_t cnt = root->u.seq.n / 2;
    f->t = calloc(cnt ? cnt : 1, sizeof *f->t);
    f->by_name = calloc(cnt ? cnt : 1, sizeof *f->by_name);
    if (!f->t || !f->by_name) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", f->path);
    char kc[96]; /* for messages only (clean); the names are strdup'd whole */
    for (size_t i = 0; i < cnt; i++) {
        const val *key = root->u.seq.it[2 * i], *tv = root->u.seq.it[2 * i + 1];
        if (key->t != V_STR || key->u.str.len == 0)
            return loco_fail(LOCO_E_FORMAT, "%s: state_dict key %zu is %s, not a non-empty string", f->path, i,
                             key->t == V_STR ? "empty" : vtype_name[key->t]);
        if (tv->t != V_TENSOR)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: '%s' is a %s, not a tensor (only flat state_dicts of tensors are "
                             "read)", f->path, clean(kc, sizeof kc, key->u.str.s, key->u.str.len), vtype_name[tv->t]);
        const tdesc *td = tv->u.td;
        pt_tensor *t = &f->t[f->n];
        if (!(t->name = strdup(key->u.str.s))) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", f->path);
        f->n++;
        t->dtype = td->storage->u.st.dtype;
        t->ndim = td->ndim;
        t->offset = td->offset;
        t->storage = f->buf + td->storage->u.st.ent->off;
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
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_tensor_name);
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' appears twice in the state_dict", f->path,
                             clean(kc, sizeof kc, f->by_name[i]->name, strlen(f->by_name[i]->name)));
    return LOCO_OK;
}

static loco_status pt_load(loco_pt *f, unsigned flags) {
    const uint8_t *b = f->buf;
    const char *p = f->path;
    if (f->len >= 4 && (rd32(b) == SIG_LOCAL || rd32(b) == SIG_EOCD)) {
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
    loco_status s = zip_parse(f, flags);
    if (s) return s;
    /* ARCHIVE/data.pkl: exactly one, at the top level of the archive */
    const zent *pk = NULL;
    bool torchscript = false;
    for (size_t i = 0; i < f->n_ents; i++) {
        const zent *e = &f->ents[i];
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
    vm m;
    memset(&m, 0, sizeof m);
    m.f = f;
    m.prefix = pk->name;
    m.prefix_len = pk->nlen - 8;
    clean(m.entry, sizeof m.entry, pk->name, pk->nlen);
    /* ARCHIVE/byteorder, when present, must say little; its name is as long
     * as the archive's prefix (a zip name may have 65535 bytes) */
    char *bo = malloc(m.prefix_len + sizeof "byteorder");
    if (!bo) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
    memcpy(bo, m.prefix, m.prefix_len);
    memcpy(bo + m.prefix_len, "byteorder", sizeof "byteorder");
    const zent *be = zip_find(f, bo, m.prefix_len + sizeof "byteorder" - 1);
    if (be && !(be->size == 6 && !memcmp(b + be->off, "little", 6))) {
        char bc[96]; /* the entry's name for the message: shortened (clean) */
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: the byteorder entry '%s' does not say 'little': big-endian checkpoints are "
                      "not supported", p, clean(bc, sizeof bc, bo, m.prefix_len + sizeof "byteorder" - 1));
        free(bo);
        return s;
    }
    free(bo);
    if (pk->size > PT_MAX_PICKLE)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s is %llu bytes, more than the %zu allowed", p, m.entry,
                         (unsigned long long)pk->size, PT_MAX_PICKLE);
    m.pk = b + pk->off;
    m.len = (size_t)pk->size;
    val *root = NULL;
    s = vm_run(&m, &root);
    if (!s) s = take_tensors(&m, root);
    vm_free(&m);
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
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
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
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
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
    return is_float_dtype(dt) || dt == LOCO_DTYPE_U8 || dt == LOCO_DTYPE_BOOL;
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

typedef struct obuf {
    uint8_t *b;
    size_t n, cap;
    bool oom;
} obuf;

static void ob_reserve(obuf *o, size_t more) {
    if (o->oom || o->n + more <= o->cap) return;
    size_t nc = o->cap ? o->cap : 256;
    while (nc < o->n + more) nc *= 2;
    uint8_t *nb = nc <= LOCO_MAX_ALLOC ? realloc(o->b, nc) : NULL;
    if (!nb) {
        o->oom = true;
        return;
    }
    o->b = nb;
    o->cap = nc;
}

static void ob_put(obuf *o, const void *p, size_t k) {
    ob_reserve(o, k);
    if (o->oom) return;
    if (k) memcpy(o->b + o->n, p, k);
    o->n += k;
}

static void ob_u8(obuf *o, uint8_t v) { ob_put(o, &v, 1); }
static void ob_u16(obuf *o, uint16_t v) {
    uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    ob_put(o, t, 2);
}
static void ob_u32(obuf *o, uint32_t v) {
    uint8_t t[4];
    for (int i = 0; i < 4; i++) t[i] = (uint8_t)(v >> (8 * i));
    ob_put(o, t, 4);
}
static void ob_u64(obuf *o, uint64_t v) {
    ob_u32(o, (uint32_t)v);
    ob_u32(o, (uint32_t)(v >> 32));
}

/* ---- zip ----------------------------------------------------------------- */

static void zip64_field(obuf *o, const uint64_t *v, int nv) {
    ob_u16(o, 1);
    ob_u16(o, (uint16_t)(8 * nv));
    for (int i = 0; i < nv; i++) ob_u64(o, v[i]);
}

loco_status loco_zip_build(const loco_zip_item *items, size_t n, unsigned flags, uint8_t **out, size_t *len) {
    if (!out || !len || (n && !items)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_zip_build: NULL argument");
    *out = NULL;
    *len = 0;
    size_t total = 1024;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].name || !items[i].name[0] || strlen(items[i].name) > 0x7FFF || (items[i].len && !items[i].data))
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "zip item %zu: bad name or NULL data", i);
        size_t add = 2 * strlen(items[i].name) + 256;
        if (items[i].len > LOCO_MAX_ALLOC - add || total > LOCO_MAX_ALLOC - add - items[i].len)
            return loco_fail(LOCO_E_NOMEM, "zip archive: too large");
        total += add + items[i].len;
    }
    obuf o = {0};
    ob_reserve(&o, total);
    uint64_t *lho = calloc(n ? n : 1, sizeof *lho);
    uint32_t *crc = calloc(n ? n : 1, sizeof *crc);
    if (!lho || !crc || o.oom) {
        free(lho);
        free(crc);
        free(o.b);
        return loco_fail(LOCO_E_NOMEM, "zip archive: out of memory");
    }
    const bool desc = !(flags & LOCO_ZIP_NO_DESCRIPTOR);
    const uint16_t dos_time = 0, dos_date = (0 << 9) | (1 << 5) | 1; /* 1980-01-01 00:00 */
    for (size_t i = 0; i < n; i++) {
        const loco_zip_item *it = &items[i];
        size_t nl = strlen(it->name);
        uint64_t sz = it->len;
        lho[i] = o.n;
        crc[i] = (uint32_t)crc32_z(0L, it->data, (z_size_t)sz);
        bool big = sz >= 0xFFFFFFFFu || lho[i] >= 0xFFFFFFFFu;
        if (big && (flags & LOCO_ZIP_PLAIN)) {
            free(lho);
            free(crc);
            free(o.b);
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "zip item '%s': needs zip64", it->name);
        }
        /* the local zip64 field as miniz writes it: the large values only */
        uint64_t z[3];
        int nz = 0;
        if (sz >= 0xFFFFFFFFu) z[nz++] = sz, z[nz++] = sz;
        if (lho[i] >= 0xFFFFFFFFu) z[nz++] = lho[i];
        size_t zlen = nz ? 4 + 8 * (size_t)nz : 0;
        size_t start = o.n + 30 + nl + zlen + 4;
        size_t pad = (64 - start % 64) % 64;
        ob_u32(&o, SIG_LOCAL);
        ob_u16(&o, nz ? 45 : 20);
        ob_u16(&o, desc ? 8 : 0);
        ob_u16(&o, 0); /* stored */
        ob_u16(&o, dos_time);
        ob_u16(&o, dos_date);
        ob_u32(&o, desc ? 0 : crc[i]);
        ob_u32(&o, desc ? 0 : (uint32_t)sz);
        ob_u32(&o, desc ? 0 : (uint32_t)sz);
        ob_u16(&o, (uint16_t)nl);
        ob_u16(&o, (uint16_t)(zlen + 4 + pad));
        ob_put(&o, it->name, nl);
        if (nz) zip64_field(&o, z, nz);
        ob_put(&o, "FB", 2); /* PyTorch's padding field */
        ob_u16(&o, (uint16_t)pad);
        for (size_t k = 0; k < pad; k++) ob_u8(&o, 'Z');
        ob_put(&o, it->data, (size_t)sz);
        if (desc) {
            ob_u32(&o, SIG_DESCRIPTOR);
            ob_u32(&o, crc[i]);
            if (nz) {
                ob_u64(&o, sz);
                ob_u64(&o, sz);
            } else {
                ob_u32(&o, (uint32_t)sz);
                ob_u32(&o, (uint32_t)sz);
            }
        }
    }
    uint64_t cd_off = o.n;
    for (size_t i = 0; i < n; i++) {
        const loco_zip_item *it = &items[i];
        size_t nl = strlen(it->name);
        uint64_t sz = it->len;
        bool force = (flags & LOCO_ZIP_ZIP64_EXTRA) != 0;
        bool bsz = force || sz >= 0xFFFFFFFFu, bofs = force || lho[i] >= 0xFFFFFFFFu;
        uint64_t z[3];
        int nz = 0;
        if (bsz) z[nz++] = sz, z[nz++] = sz;
        if (bofs) z[nz++] = lho[i];
        ob_u32(&o, SIG_CENTRAL);
        ob_u16(&o, 0x031E); /* made by: Unix, 3.0 */
        ob_u16(&o, nz ? 45 : 20);
        ob_u16(&o, desc ? 8 : 0);
        ob_u16(&o, 0);
        ob_u16(&o, dos_time);
        ob_u16(&o, dos_date);
        ob_u32(&o, crc[i]);
        ob_u32(&o, bsz ? 0xFFFFFFFFu : (uint32_t)sz);
        ob_u32(&o, bsz ? 0xFFFFFFFFu : (uint32_t)sz);
        ob_u16(&o, (uint16_t)nl);
        ob_u16(&o, (uint16_t)(nz ? 4 + 8 * nz : 0));
        ob_u16(&o, 0);                /* comment */
        ob_u16(&o, 0);                /* disk */
        ob_u16(&o, 0);                /* internal attributes */
        ob_u32(&o, 0100644u << 16);   /* external: a regular file, rw-r--r-- */
        ob_u32(&o, bofs ? 0xFFFFFFFFu : (uint32_t)lho[i]);
        ob_put(&o, it->name, nl);
        if (nz) zip64_field(&o, z, nz);
    }
    uint64_t cd_size = o.n - cd_off;
    bool z64 = !(flags & LOCO_ZIP_PLAIN);
    if (!z64 && (n > 0xFFFE || cd_off >= 0xFFFFFFFFu || cd_size >= 0xFFFFFFFFu)) {
        free(lho);
        free(crc);
        free(o.b);
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "zip archive: needs zip64 end records");
    }
    if (z64) {
        uint64_t rec = o.n;
        ob_u32(&o, SIG_EOCD64);
        ob_u64(&o, 44);
        ob_u16(&o, 0x031E);
        ob_u16(&o, 45);
        ob_u32(&o, 0);
        ob_u32(&o, 0);
        ob_u64(&o, n);
        ob_u64(&o, n);
        ob_u64(&o, cd_size);
        ob_u64(&o, cd_off);
        ob_u32(&o, SIG_LOC64);
        ob_u32(&o, 0);
        ob_u64(&o, rec);
        ob_u32(&o, 1);
    }
    ob_u32(&o, SIG_EOCD);
    ob_u16(&o, 0);
    ob_u16(&o, 0);
    ob_u16(&o, (uint16_t)(n < 0xFFFF ? n : 0xFFFF));
    ob_u16(&o, (uint16_t)(n < 0xFFFF ? n : 0xFFFF));
    ob_u32(&o, (uint32_t)(cd_size < 0xFFFFFFFFu ? cd_size : 0xFFFFFFFFu));
    ob_u32(&o, (uint32_t)(cd_off < 0xFFFFFFFFu ? cd_off : 0xFFFFFFFFu));
    ob_u16(&o, 0);
    free(lho);
    free(crc);
    if (o.oom) {
        free(o.b);
        return loco_fail(LOCO_E_NOMEM, "zip archive: out of memory");
    }
    *out = o.b;
    *len = o.n;
    return LOCO_OK;
}

/* ---- pickle --------------------------------------------------------------- */

typedef struct pkw {
    obuf o;
    uint32_t memo; /* next memo index */
} pkw;

static void pk_put(pkw *w) {
    if (w->memo < 256) {
        ob_u8(&w->o, 'q');
        ob_u8(&w->o, (uint8_t)w->memo);
    } else {
        ob_u8(&w->o, 'r');
        ob_u32(&w->o, w->memo);
    }
    w->memo++;
}

static void pk_get(pkw *w, uint32_t idx) {
    if (idx < 256) {
        ob_u8(&w->o, 'h');
        ob_u8(&w->o, (uint8_t)idx);
    } else {
        ob_u8(&w->o, 'j');
        ob_u32(&w->o, idx);
    }
}

static void pk_str(pkw *w, const char *s) {
    size_t n = strlen(s);
    ob_u8(&w->o, 'X');
    ob_u32(&w->o, (uint32_t)n);
    ob_put(&w->o, s, n);
    pk_put(w);
}

/* a string memoized once and fetched afterwards, as pickle does for one object */
static void pk_str_once(pkw *w, const char *s, int64_t *slot) {
    if (*slot >= 0) {
        pk_get(w, (uint32_t)*slot);
        return;
    }
    *slot = w->memo;
    pk_str(w, s);
}

static void pk_int(pkw *w, int64_t v) {
    if (v >= 0 && v < 256) {
        ob_u8(&w->o, 'K');
        ob_u8(&w->o, (uint8_t)v);
    } else if (v >= 0 && v < 65536) {
        ob_u8(&w->o, 'M');
        ob_u16(&w->o, (uint16_t)v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        ob_u8(&w->o, 'J');
        ob_u32(&w->o, (uint32_t)(int32_t)v);
    } else { /* LONG1, the fewest bytes that keep the sign */
        uint8_t t[8];
        int nb = 0;
        uint64_t u;
        memcpy(&u, &v, 8);
        for (int i = 0; i < 8; i++) t[i] = (uint8_t)(u >> (8 * i));
        for (nb = 8; nb > 1; nb--) {
            uint8_t top = t[nb - 1], below = t[nb - 2];
            if (!((top == 0 && !(below & 0x80)) || (top == 0xFF && (below & 0x80)))) break;
        }
        ob_u8(&w->o, 0x8a);
        ob_u8(&w->o, (uint8_t)nb);
        ob_put(&w->o, t, (size_t)nb);
    }
}

static void pk_global(pkw *w, const char *mod, const char *name, int64_t *slot) {
    if (*slot >= 0) {
        pk_get(w, (uint32_t)*slot);
        return;
    }
    ob_u8(&w->o, 'c');
    ob_put(&w->o, mod, strlen(mod));
    ob_u8(&w->o, '\n');
    ob_put(&w->o, name, strlen(name));
    ob_u8(&w->o, '\n');
    *slot = w->memo;
    pk_put(w);
}

static void pk_int_tuple(pkw *w, const int64_t *v, int n) {
    if (n == 0) {
        ob_u8(&w->o, ')');
        return; /* the empty tuple is a singleton pickle does not memoize */
    }
    if (n > 3) ob_u8(&w->o, '(');
    for (int i = 0; i < n; i++) pk_int(w, v[i]);
    ob_u8(&w->o, n > 3 ? 't' : (uint8_t)(0x84 + n));
    pk_put(w);
}

static const char *storage_type_name(loco_dtype d) {
    for (size_t i = 0; i < N_STORAGE_TYPES; i++)
        if (storage_types[i].dtype == d) return storage_types[i].name;
    return NULL;
}

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
        else if ((int)t->dtype < 0 || t->dtype >= LOCO_DTYPE_COUNT || !storage_type_name(t->dtype) || t->ndim < 0 ||
                 t->ndim > LOCO_MAX_DIMS)
            s = loco_fail(LOCO_E_INVALID_ARGUMENT, "tensor '%s': bad dtype (%d) or rank (%d)", t->name, (int)t->dtype,
                          t->ndim);
        size_t nb = loco_dtype_size(t->dtype);
        for (int d = 0; !s && d < t->ndim; d++)
            if (t->shape[d] < 0 || (uint64_t)t->shape[d] > PT_MAX_DIM || !loco_mul_ok(nb, (size_t)t->shape[d], &nb))
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
    pkw w = {{0}, 0};
    int64_t g_odict = -1, g_rebuild = -1, s_storage = -1, s_cpu = -1, g_st[LOCO_DTYPE_COUNT];
    for (int d = 0; d < LOCO_DTYPE_COUNT; d++) g_st[d] = -1;
    ob_u8(&w.o, 0x80);
    ob_u8(&w.o, 2);
    pk_global(&w, "collections", "OrderedDict", &g_odict);
    ob_u8(&w.o, ')');
    ob_u8(&w.o, 'R');
    pk_put(&w);
    char key[32]; /* a size_t in decimal */
    for (size_t i = 0; i < n; i++) {
        const loco_tensor_ref *t = &tensors[i];
        if (i % 1000 == 0 && n - i > 1) ob_u8(&w.o, '('); /* batches of 1000, as pickle */
        pk_str(&w, t->name);
        pk_global(&w, "torch._utils", "_rebuild_tensor_v2", &g_rebuild);
        ob_u8(&w.o, '(');
        ob_u8(&w.o, '(');
        pk_str_once(&w, "storage", &s_storage);
        pk_global(&w, "torch", storage_type_name(t->dtype), &g_st[t->dtype]);
        snprintf(key, sizeof key, "%zu", i);
        pk_str(&w, key);
        pk_str_once(&w, "cpu", &s_cpu);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        pk_int(&w, (int64_t)numel);
        ob_u8(&w.o, 't');
        pk_put(&w);
        ob_u8(&w.o, 'Q');
        pk_int(&w, 0);
        pk_int_tuple(&w, t->shape, t->ndim);
        int64_t stride[LOCO_MAX_DIMS], acc = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            stride[d] = acc;
            acc *= t->shape[d];
        }
        pk_int_tuple(&w, stride, t->ndim);
        ob_u8(&w.o, 0x89); /* requires_grad False */
        pk_global(&w, "collections", "OrderedDict", &g_odict);
        ob_u8(&w.o, ')');
        ob_u8(&w.o, 'R');
        pk_put(&w);
        ob_u8(&w.o, 't');
        pk_put(&w);
        ob_u8(&w.o, 'R');
        pk_put(&w);
        if (n - i == 1 && i % 1000 == 0) ob_u8(&w.o, 's');
        else if (i % 1000 == 999 || i == n - 1) ob_u8(&w.o, 'u');
    }
    /* the state_dict's _metadata attribute (an empty OrderedDict here) */
    ob_u8(&w.o, '}');
    pk_put(&w);
    pk_str(&w, "_metadata");
    pk_global(&w, "collections", "OrderedDict", &g_odict);
    ob_u8(&w.o, ')');
    ob_u8(&w.o, 'R');
    pk_put(&w);
    ob_u8(&w.o, 's');
    ob_u8(&w.o, 'b');
    ob_u8(&w.o, '.');
    loco_status s = LOCO_OK;
    loco_zip_item *items = calloc(n + 4, sizeof *items);
    char **names = calloc(n ? n : 1, sizeof *names);
    if (w.o.oom || !items || !names) {
        s = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    /* a serialization id derived from the content, so output is reproducible */
    char sid[48]; /* 40 digits */
    snprintf(sid, sizeof sid, "%020lu%020zu", crc32_z(0L, w.o.b, (z_size_t)w.o.n), w.o.n);
    size_t k = 0;
    items[k++] = (loco_zip_item){"archive/data.pkl", w.o.b, w.o.n};
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
    free(w.o.b);
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

/* ======================================================================== */
/* Weights of either format                                                 */
/* ======================================================================== */

struct loco_weights {
    loco_tensors *st;
    loco_pt *pt;
};

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* a MODEL argument naming a PyTorch file is that file; other files in a
 * folder (config.json, vectors.safetensors...) stand for the folder */
static bool names_pytorch_file(const char *p) {
    return ends_with(p, ".bin") || ends_with(p, ".pt") || ends_with(p, ".pth");
}

/* Is path a PyTorch checkpoint rather than safetensors? Judged by its first
 * bytes, else by its name: an empty or unrecognised .bin, .pt or .pth goes to
 * the PyTorch reader, which says it is not a PyTorch zip checkpoint (not the
 * safetensors reader, whose complaint would puzzle). Files that cannot be
 * read go to the reader their name suggests, which says why. */
static bool looks_pytorch(const char *path) {
    if (ends_with(path, ".safetensors")) return false;
    const bool by_name = names_pytorch_file(path);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return by_name; /* never opens a FIFO or device */
    uint8_t b[262];
    ssize_t got = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) got = read(fd, b, sizeof b);
        close(fd);
    }
    if (got >= 9 && b[8] == '{') return false; /* a safetensors JSON header */
    if (got >= 4 && (rd32(b) == SIG_LOCAL || rd32(b) == SIG_EOCD)) return true;
    if (got >= 2 && b[0] == 0x80 && b[1] <= 5) return true;          /* legacy pickle */
    if (got >= 262 && memcmp(b + 257, "ustar", 5) == 0) return true; /* legacy tar */
    return by_name;
}

loco_status loco_weights_open(const char *path, loco_weights **out) {
    if (!path || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_open: NULL argument");
    *out = NULL;
    loco_weights *w = calloc(1, sizeof *w);
    if (!w) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    loco_status s = looks_pytorch(path) ? loco_pt_open(path, &w->pt) : loco_tensors_open(path, &w->st);
    if (s) {
        free(w);
        return s;
    }
    *out = w;
    return LOCO_OK;
}

void loco_weights_close(loco_weights *w) {
    if (!w) return;
    loco_tensors_close(w->st);
    loco_pt_close(w->pt);
    free(w);
}

loco_weights_format loco_weights_get_format(const loco_weights *w) {
    return w && w->pt ? LOCO_WEIGHTS_PYTORCH : LOCO_WEIGHTS_SAFETENSORS;
}

size_t loco_weights_count(const loco_weights *w) {
    return !w ? 0 : w->pt ? loco_pt_count(w->pt) : loco_tensors_count(w->st);
}

const char *loco_weights_name(const loco_weights *w, size_t i) {
    return !w ? NULL : w->pt ? loco_pt_name(w->pt, i) : loco_tensors_name(w->st, i);
}

loco_status loco_weights_info(const loco_weights *w, const char *name, loco_dtype *dtype, int *ndim,
                              int64_t shape[LOCO_MAX_DIMS]) {
    if (!w) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_info: NULL argument");
    return w->pt ? loco_pt_info(w->pt, name, dtype, ndim, shape) : loco_tensors_info(w->st, name, dtype, ndim, shape);
}

loco_status loco_weights_read_f32(const loco_weights *w, const char *name, float **data, int *ndim,
                                  int64_t shape[LOCO_MAX_DIMS], int allow_nonfinite) {
    if (!w) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_read_f32: NULL argument");
    return w->pt ? loco_pt_read_f32(w->pt, name, data, ndim, shape, allow_nonfinite)
                 : loco_tensors_read_f32(w->st, name, data, ndim, shape, allow_nonfinite);
}

loco_status loco_weights_read(const loco_weights *w, const char *name, void **data, size_t *nbytes) {
    if (!w || !name || !data) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_read: NULL argument");
    if (w->pt) return loco_pt_read(w->pt, name, data, nbytes);
    *data = NULL;
    const void *raw;
    size_t nb;
    loco_status s = loco_tensors_raw(w->st, name, &raw, &nb);
    if (s) return s;
    void *copy = loco_malloc(nb ? nb : 1);
    if (!copy) return loco_fail(LOCO_E_NOMEM, "tensor '%s': out of memory (%zu bytes)", name, nb);
    if (nb) memcpy(copy, raw, nb);
    *data = copy;
    if (nbytes) *nbytes = nb;
    return LOCO_OK;
}

/* ======================================================================== */
/* Model folders and conversion                                             */
/* ======================================================================== */

#define ST_NAME "diffusion_pytorch_model.safetensors"
#define BIN_NAME "diffusion_pytorch_model.bin"

static char *join2(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* Is something (of any kind, even a dangling symbolic link) at path? */
static bool something_at(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

loco_status loco_weights_locate(const char *dir, const char *named, char **path) {
    *path = NULL;
    /* a named PyTorch file that is not a folder; a FIFO or device there is
     * then refused by name when it is opened */
    if (named && names_pytorch_file(named) && something_at(named) && !loco_is_dir(named)) {
        if (!(*path = strdup(named))) return loco_fail(LOCO_E_NOMEM, "out of memory");
        return LOCO_OK;
    }
    const char *cand[2] = {ST_NAME, BIN_NAME};
    for (int i = 0; i < 2; i++) {
        char *p = join2(dir, cand[i]);
        if (!p) return loco_fail(LOCO_E_NOMEM, "out of memory");
        /* the first name present is the weights: a folder, FIFO or device
         * in its place is an error, not a reason to try the other name */
        loco_status s = loco_check_file(p);
        if (s == LOCO_OK) {
            *path = p;
            return LOCO_OK;
        }
        free(p);
        if (s != LOCO_E_NOT_FOUND) return s;
    }
    return loco_fail(LOCO_E_NOT_FOUND, "%s: no %s (nor %s) in the model folder", dir, ST_NAME, BIN_NAME);
}

/* the folder of a MODEL argument: itself if a directory, else its parent */
static char *folder_of(const char *path) {
    if (loco_is_dir(path)) return strdup(path);
    const char *sl = strrchr(path, '/');
    if (!sl) return strdup(".");
    if (sl == path) return strdup("/");
    return strndup(path, (size_t)(sl - path));
}

loco_status loco_model_weights_path(const char *model, char **path) {
    if (!model || !path) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_model_weights_path: NULL argument");
    *path = NULL;
    struct stat st;
    if (stat(model, &st) != 0) return loco_fail(LOCO_E_NOT_FOUND, "%s: no such file or folder", model);
    char *dir = folder_of(model);
    if (!dir) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status s = loco_weights_locate(dir, model, path);
    free(dir);
    return s;
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

static loco_status copy_file(const char *from, const char *to) {
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
        if (to == LOCO_DTYPE_F32) {
            float f = (float)v;
            if (isfinite(v) && !isfinite(f)) goto overflow;
            memcpy(o + 4 * i, &f, 4);
        } else {
            float f = (float)v;
            uint16_t h = loco_f32_to_f16(f);
            if (isfinite(v) && (!isfinite(f) || !isfinite(loco_f16_to_f32(h)))) goto overflow;
            memcpy(o + 2 * i, &h, 2);
        }
        continue;
    overflow:
        free(o);
        return loco_fail(LOCO_E_NUMERIC, "tensor '%s': element %zu (%g) does not fit in %s", name, i, v,
                         loco_dtype_name(to));
    }
    *out = o;
    return LOCO_OK;
}

loco_status loco_convert(const char *model, const char *out_dir, loco_dtype dtype) {
    if (!model || !out_dir) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_convert: NULL argument");
    if (dtype != LOCO_DTYPE_F32 && dtype != LOCO_DTYPE_F16 && dtype != LOCO_DTYPE_COUNT)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "convert: the dtype must be F32 or F16 (or kept)");
    struct stat pst;
    if (stat(model, &pst) != 0) return loco_fail(LOCO_E_NOT_FOUND, "%s: no such file or folder", model);
    char *dir = folder_of(model), *cfg = dir ? join2(dir, "config.json") : NULL,
         *sched = dir ? join2(dir, "scheduler/scheduler_config.json") : NULL, *wpath = NULL;
    char *o_w = join2(out_dir, ST_NAME), *o_cfg = join2(out_dir, "config.json"), *o_sd = join2(out_dir, "scheduler"),
         *o_sched = join2(out_dir, "scheduler/scheduler_config.json");
    loco_weights *w = NULL;
    loco_tensor_ref *refs = NULL;
    void **bufs = NULL;
    size_t n = 0;
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
    if ((s = loco_weights_locate(dir, model, &wpath)) || (s = loco_weights_open(wpath, &w))) goto done;
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
        if (dtype != LOCO_DTYPE_COUNT && is_float_dtype(r->dtype) && r->dtype != dtype) {
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
    }
    if ((s = mkdir_all(out_dir))) goto done;
    const char *meta[] = {"format", "pt"};
    if ((s = loco_tensors_write(o_w, refs, n, meta, 1))) goto done;
    if ((s = copy_file(cfg, o_cfg))) goto done;
    if (have_sched && !(s = mkdir_all(o_sd))) s = copy_file(sched, o_sched);
done:
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(refs);
    loco_weights_close(w);
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
