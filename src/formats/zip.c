/* formats/zip.c - the zip archives of PyTorch checkpoints: a reader of
 * stored archives held in memory (zip_archive_open, zip_archive_find) and a
 * writer laying entries out as torch.save does (loco_zip_build). See
 * formats/zip.h for the layout. */
#include "formats/zip.h"

#include "formats/bytes.h"
#include "formats/names.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ======================================================================== */
/* Reader                                                                   */
/* ======================================================================== */

bool zip_starts_archive(const uint8_t *b, size_t len) {
    return len >= 4 && (fmt_rd32(b) == ZIP_SIG_LOCAL || fmt_rd32(b) == ZIP_SIG_EOCD);
}

static const char *entry_name(const void *e, size_t *len) {
    const zip_entry *z = e;
    *len = z->nlen;
    return z->name;
}

static int cmp_entry_hdr(const void *x, const void *y) {
    const zip_entry *a = *(const zip_entry *const *)x, *b = *(const zip_entry *const *)y;
    return a->hdr < b->hdr ? -1 : a->hdr > b->hdr ? 1 : 0;
}

const zip_entry *zip_archive_find(const zip_archive *z, const char *name, size_t nlen) {
    return fmt_find_name(z->ents, z->n, sizeof *z->ents, entry_name, name, nlen);
}

void zip_archive_close(zip_archive *z) {
    if (!z) return;
    free(z->ents);
    memset(z, 0, sizeof *z);
}

/* The zip64 extended information extra field (id 1) supplies, in this order,
 * each of the four fields whose 32-bit (16-bit for disk) value is saturated. */
static loco_status zip64_extra(const char *p, const char *nm, const uint8_t *x, size_t xl, uint64_t *usize,
                               uint64_t *csize, uint64_t *lho, uint64_t *disk) {
    while (xl >= 4) {
        uint16_t id = fmt_rd16(x), sz = fmt_rd16(x + 2);
        if ((size_t)sz > xl - 4) break;
        if (id == 1) {
            const uint8_t *q = x + 4;
            size_t left = sz;
            uint64_t *f64[3] = {usize, csize, lho};
            for (int i = 0; i < 3; i++) {
                if (*f64[i] != 0xFFFFFFFFu) continue;
                if (left < 8)
                    return loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': the zip64 extra field is too short", p, nm);
                *f64[i] = fmt_rd64(q);
                q += 8;
                left -= 8;
            }
            if (*disk == 0xFFFF) {
                if (left < 4)
                    return loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': the zip64 extra field is too short", p, nm);
                *disk = fmt_rd32(q);
            }
            return LOCO_OK;
        }
        x += 4 + sz;
        xl -= 4 + (size_t)sz;
    }
    return loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': sizes or offset need a zip64 extra field, and there is none",
                     p, nm);
}

loco_status zip_archive_open(zip_archive *z, const char *path, const uint8_t *buf, size_t len, bool check_crc) {
    memset(z, 0, sizeof *z);
    const uint8_t *b = buf;
    const size_t n = len;
    const char *p = path;
    if (n < 22)
        return loco_fail(LOCO_E_FORMAT, "%s: %zu bytes, too short for a zip archive (truncated?)", p, n);
    /* the end of central directory record, with its comment reaching the end */
    size_t eocd = SIZE_MAX;
    size_t lo = n - 22 > 0xFFFF ? n - 22 - 0xFFFF : 0;
    for (size_t i = n - 22 + 1; i-- > lo;)
        if (fmt_rd32(b + i) == ZIP_SIG_EOCD && (size_t)fmt_rd16(b + i + 20) == n - 22 - i) {
            eocd = i;
            break;
        }
    if (eocd == SIZE_MAX)
        return loco_fail(LOCO_E_FORMAT, "%s: no zip end-of-central-directory record (truncated, or not a zip archive)",
                         p);
    uint64_t ndisk = fmt_rd16(b + eocd + 4), cddisk = fmt_rd16(b + eocd + 6), n_here = fmt_rd16(b + eocd + 8),
             n_total = fmt_rd16(b + eocd + 10), cd_size = fmt_rd32(b + eocd + 12), cd_off = fmt_rd32(b + eocd + 16);
    uint64_t area_end = eocd; /* where the central directory must end */
    if (eocd >= 20 && fmt_rd32(b + eocd - 20) == ZIP_SIG_LOC64) {
        const uint8_t *L = b + eocd - 20;
        uint64_t zo = fmt_rd64(L + 8);
        if (fmt_rd32(L + 4) != 0 || fmt_rd32(L + 16) > 1)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: multi-volume (split) zip archives are not supported", p);
        if (zo > eocd - 20 || eocd - 20 - zo < 56 || fmt_rd32(b + zo) != ZIP_SIG_EOCD64)
            return loco_fail(LOCO_E_FORMAT, "%s: the zip64 end record the locator points at (offset %llu) is missing", p,
                             (unsigned long long)zo);
        const uint8_t *Z = b + zo;
        ndisk = fmt_rd32(Z + 16);
        cddisk = fmt_rd32(Z + 20);
        n_here = fmt_rd64(Z + 24);
        n_total = fmt_rd64(Z + 32);
        cd_size = fmt_rd64(Z + 40);
        cd_off = fmt_rd64(Z + 48);
        area_end = zo;
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
    const size_t n_ents = (size_t)n_total;
    zip_entry *ents = calloc(n_ents, sizeof *ents);
    zip_entry **by_hdr = calloc(n_ents, sizeof *by_hdr);
    loco_status s = LOCO_OK;
    if (!ents || !by_hdr) {
        free(ents);
        free(by_hdr);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory", p);
    }
    const uint8_t *q = b + cd_off, *qe = b + cd_off + cd_size;
    char nm[96]; /* an entry's name for messages only, shortened by fmt_clean() */
    for (uint64_t i = 0; i < n_total; i++) {
        if (qe - q < 46 || fmt_rd32(q) != ZIP_SIG_CENTRAL) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip central directory entry %llu is malformed", p, (unsigned long long)i);
            goto done;
        }
        uint16_t gflags = fmt_rd16(q + 8), method = fmt_rd16(q + 10), nl = fmt_rd16(q + 28), xl = fmt_rd16(q + 30),
                 cl = fmt_rd16(q + 32);
        uint32_t crc = fmt_rd32(q + 16);
        uint64_t csize = fmt_rd32(q + 20), usize = fmt_rd32(q + 24), disk = fmt_rd16(q + 34), lho = fmt_rd32(q + 42);
        if ((size_t)(qe - q) - 46 < (size_t)nl + xl + cl) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip central directory entry %llu runs past the directory", p,
                          (unsigned long long)i);
            goto done;
        }
        const char *name = (const char *)q + 46;
        fmt_clean(nm, sizeof nm, name, nl);
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
        if (lho > cd_off || cd_off - lho < 30 || fmt_rd32(b + lho) != ZIP_SIG_LOCAL) {
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': no local header at offset %llu", p, nm,
                          (unsigned long long)lho);
            goto done;
        }
        const uint8_t *L = b + lho;
        uint16_t lnl = fmt_rd16(L + 26), lxl = fmt_rd16(L + 28);
        if (fmt_rd16(L + 8) != method || (fmt_rd16(L + 6) & 0x41) || lnl != nl || cd_off - lho - 30 < nl ||
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
        zip_entry *e = &ents[i];
        e->name = name;
        e->nlen = nl;
        e->hdr = lho;
        e->off = off;
        e->size = usize;
        e->crc = crc;
        by_hdr[i] = e;
        q += 46 + (size_t)nl + xl + cl;
    }
    /* entries must not overlap: each one's data ends before the next header */
    qsort(by_hdr, n_ents, sizeof *by_hdr, cmp_entry_hdr);
    for (size_t i = 1; i < n_ents; i++)
        if (by_hdr[i]->hdr < by_hdr[i - 1]->off + by_hdr[i - 1]->size) {
            char nm2[96]; /* for the message only (fmt_clean) */
            s = loco_fail(LOCO_E_FORMAT, "%s: zip entries '%s' and '%s' overlap", p,
                          fmt_clean(nm, sizeof nm, by_hdr[i - 1]->name, by_hdr[i - 1]->nlen),
                          fmt_clean(nm2, sizeof nm2, by_hdr[i]->name, by_hdr[i]->nlen));
            goto done;
        }
    if (check_crc)
        for (size_t i = 0; i < n_ents; i++) {
            const zip_entry *e = by_hdr[i];
            uint32_t c = (uint32_t)crc32_z(0L, b + e->off, (z_size_t)e->size);
            if (c != e->crc) {
                s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s': CRC-32 mismatch (recorded %08x, data give %08x): the "
                              "file is corrupt", p, fmt_clean(nm, sizeof nm, e->name, e->nlen), e->crc, c);
                goto done;
            }
        }
    const zip_entry *dup = fmt_sort_names(ents, n_ents, sizeof *ents, entry_name);
    if (dup) {
        s = loco_fail(LOCO_E_FORMAT, "%s: zip entry '%s' appears twice", p,
                      fmt_clean(nm, sizeof nm, dup->name, dup->nlen));
        goto done;
    }
done:
    free(by_hdr);
    if (s) {
        free(ents);
        return s;
    }
    z->path = path;
    z->buf = buf;
    z->len = len;
    z->ents = ents;
    z->n = n_ents;
    return LOCO_OK;
}

/* ======================================================================== */
/* Writer                                                                   */
/* ======================================================================== */

static void zip64_field(fmt_buf *o, const uint64_t *v, int nv) {
    fmt_buf_u16(o, 1);
    fmt_buf_u16(o, (uint16_t)(8 * nv));
    for (int i = 0; i < nv; i++) fmt_buf_u64(o, v[i]);
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
    fmt_buf o = {0};
    fmt_buf_reserve(&o, total);
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
        fmt_buf_u32(&o, ZIP_SIG_LOCAL);
        fmt_buf_u16(&o, nz ? 45 : 20);
        fmt_buf_u16(&o, desc ? 8 : 0);
        fmt_buf_u16(&o, 0); /* stored */
        fmt_buf_u16(&o, dos_time);
        fmt_buf_u16(&o, dos_date);
        fmt_buf_u32(&o, desc ? 0 : crc[i]);
        fmt_buf_u32(&o, desc ? 0 : (uint32_t)sz);
        fmt_buf_u32(&o, desc ? 0 : (uint32_t)sz);
        fmt_buf_u16(&o, (uint16_t)nl);
        fmt_buf_u16(&o, (uint16_t)(zlen + 4 + pad));
        fmt_buf_put(&o, it->name, nl);
        if (nz) zip64_field(&o, z, nz);
        fmt_buf_put(&o, "FB", 2); /* PyTorch's padding field */
        fmt_buf_u16(&o, (uint16_t)pad);
        for (size_t k = 0; k < pad; k++) fmt_buf_u8(&o, 'Z');
        fmt_buf_put(&o, it->data, (size_t)sz);
        if (desc) {
            fmt_buf_u32(&o, ZIP_SIG_DESCRIPTOR);
            fmt_buf_u32(&o, crc[i]);
            if (nz) {
                fmt_buf_u64(&o, sz);
                fmt_buf_u64(&o, sz);
            } else {
                fmt_buf_u32(&o, (uint32_t)sz);
                fmt_buf_u32(&o, (uint32_t)sz);
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
        fmt_buf_u32(&o, ZIP_SIG_CENTRAL);
        fmt_buf_u16(&o, 0x031E); /* made by: Unix, 3.0 */
        fmt_buf_u16(&o, nz ? 45 : 20);
        fmt_buf_u16(&o, desc ? 8 : 0);
        fmt_buf_u16(&o, 0);
        fmt_buf_u16(&o, dos_time);
        fmt_buf_u16(&o, dos_date);
        fmt_buf_u32(&o, crc[i]);
        fmt_buf_u32(&o, bsz ? 0xFFFFFFFFu : (uint32_t)sz);
        fmt_buf_u32(&o, bsz ? 0xFFFFFFFFu : (uint32_t)sz);
        fmt_buf_u16(&o, (uint16_t)nl);
        fmt_buf_u16(&o, (uint16_t)(nz ? 4 + 8 * nz : 0));
        fmt_buf_u16(&o, 0);                /* comment */
        fmt_buf_u16(&o, 0);                /* disk */
        fmt_buf_u16(&o, 0);                /* internal attributes */
        fmt_buf_u32(&o, 0100644u << 16);   /* external: a regular file, rw-r--r-- */
        fmt_buf_u32(&o, bofs ? 0xFFFFFFFFu : (uint32_t)lho[i]);
        fmt_buf_put(&o, it->name, nl);
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
        fmt_buf_u32(&o, ZIP_SIG_EOCD64);
        fmt_buf_u64(&o, 44);
        fmt_buf_u16(&o, 0x031E);
        fmt_buf_u16(&o, 45);
        fmt_buf_u32(&o, 0);
        fmt_buf_u32(&o, 0);
        fmt_buf_u64(&o, n);
        fmt_buf_u64(&o, n);
        fmt_buf_u64(&o, cd_size);
        fmt_buf_u64(&o, cd_off);
        fmt_buf_u32(&o, ZIP_SIG_LOC64);
        fmt_buf_u32(&o, 0);
        fmt_buf_u64(&o, rec);
        fmt_buf_u32(&o, 1);
    }
    fmt_buf_u32(&o, ZIP_SIG_EOCD);
    fmt_buf_u16(&o, 0);
    fmt_buf_u16(&o, 0);
    fmt_buf_u16(&o, (uint16_t)(n < 0xFFFF ? n : 0xFFFF));
    fmt_buf_u16(&o, (uint16_t)(n < 0xFFFF ? n : 0xFFFF));
    fmt_buf_u32(&o, (uint32_t)(cd_size < 0xFFFFFFFFu ? cd_size : 0xFFFFFFFFu));
    fmt_buf_u32(&o, (uint32_t)(cd_off < 0xFFFFFFFFu ? cd_off : 0xFFFFFFFFu));
    fmt_buf_u16(&o, 0);
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
