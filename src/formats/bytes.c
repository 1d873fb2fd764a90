/* formats/bytes.c - the growing little-endian output buffer (fmt_buf) that
 * the zip and pickle writers append to. */
#include "formats/bytes.h"

#include <stdlib.h>
#include <string.h>

void fmt_buf_reserve(fmt_buf *o, size_t more) {
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

void fmt_buf_put(fmt_buf *o, const void *p, size_t k) {
    fmt_buf_reserve(o, k);
    if (o->oom) return;
    if (k) memcpy(o->b + o->n, p, k);
    o->n += k;
}

void fmt_buf_u8(fmt_buf *o, uint8_t v) { fmt_buf_put(o, &v, 1); }

void fmt_buf_u16(fmt_buf *o, uint16_t v) {
    uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    fmt_buf_put(o, t, 2);
}

void fmt_buf_u32(fmt_buf *o, uint32_t v) {
    uint8_t t[4];
    for (int i = 0; i < 4; i++) t[i] = (uint8_t)(v >> (8 * i));
    fmt_buf_put(o, t, 4);
}

void fmt_buf_u64(fmt_buf *o, uint64_t v) {
    fmt_buf_u32(o, (uint32_t)v);
    fmt_buf_u32(o, (uint32_t)(v >> 32));
}
