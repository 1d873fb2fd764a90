/* formats/names.c - sorting and finding entries by name (fmt_sort_names,
 * fmt_find_name) for the format readers, and names made printable for
 * messages (fmt_clean). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r */
#endif
#include "formats/names.h"

#include <stdlib.h>
#include <string.h>

int fmt_name_cmp(const char *a, size_t alen, const char *b, size_t blen) {
    size_t m = alen < blen ? alen : blen;
    int c = m ? memcmp(a, b, m) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int cmp_elems(const void *x, const void *y, void *ctx) {
    fmt_name_of name = *(fmt_name_of *)ctx;
    size_t xl, yl;
    const char *xs = name(x, &xl), *ys = name(y, &yl);
    return fmt_name_cmp(xs, xl, ys, yl);
}

const void *fmt_sort_names(void *base, size_t n, size_t size, fmt_name_of name) {
    if (n < 2) return NULL;
    qsort_r(base, n, size, cmp_elems, &name);
    const char *b = base;
    for (size_t i = 1; i < n; i++)
        if (cmp_elems(b + (i - 1) * size, b + i * size, &name) == 0) return b + i * size;
    return NULL;
}

const void *fmt_find_name(const void *base, size_t n, size_t size, fmt_name_of name, const char *key,
                          size_t klen) {
    const char *b = base;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, ml;
        const char *ms = name(b + mid * size, &ml);
        int c = fmt_name_cmp(ms, ml, key, klen);
        if (c == 0) return b + mid * size;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *fmt_clean(char *buf, size_t cap, const char *s, size_t len) {
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
