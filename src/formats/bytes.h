/* formats/bytes.h - little-endian bytes in and out, shared by the zip and
 * pickle readers and writers: readers of fixed-width fields (the caller has
 * checked that the bytes are there) and a growing output buffer. */
#ifndef LOCO_FORMATS_BYTES_H
#define LOCO_FORMATS_BYTES_H

#include "internal.h"

static inline uint16_t fmt_rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t fmt_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t fmt_rd64(const uint8_t *p) { return (uint64_t)fmt_rd32(p) | (uint64_t)fmt_rd32(p + 4) << 32; }

/* An output buffer that grows as bytes are appended. Running out of memory
 * (or past LOCO_MAX_ALLOC) sets oom and makes every later append a no-op, so
 * a writer appends freely and checks oom once at the end. b is malloc'd:
 * whoever holds the buffer frees it, oom or not. Start from {0}. */
typedef struct fmt_buf {
    uint8_t *b;
    size_t n, cap;
    bool oom;
} fmt_buf;

/* Room for `more` bytes past n (or oom). */
void fmt_buf_reserve(fmt_buf *o, size_t more);
void fmt_buf_put(fmt_buf *o, const void *p, size_t k);
void fmt_buf_u8(fmt_buf *o, uint8_t v);
void fmt_buf_u16(fmt_buf *o, uint16_t v); /* little-endian, as the next two */
void fmt_buf_u32(fmt_buf *o, uint32_t v);
void fmt_buf_u64(fmt_buf *o, uint64_t v);

#endif
