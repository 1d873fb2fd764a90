/* cli_parse.c - the command line's number and list parsers. Each accepts a
 * whole argument or nothing: no trailing text, no out-of-range value, no
 * silent truncation of a fraction, no cast of an out-of-range double (which
 * C leaves undefined). They never print; the caller names the option.
 * Fuzzed by fuzz/fuzz_cli.c. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

int parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

int parse_list(const char *s, double *out, int max) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v) || n >= max) return -1;
        out[n++] = v;
        if (*end == ',') {
            end++;
            if (!*end) return -1; /* "1," */
        } else if (*end) {
            return -1;
        }
        p = end;
    }
    return n;
}

int parse_int_list(const char *s, int *out, int max, long long lo, long long hi) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < lo || v > hi || n >= max) return -1;
        out[n++] = (int)v;
        if (*end == ',') {
            end++;
            if (!*end) return -1;
        } else if (*end) {
            return -1;
        }
        p = end;
    }
    return n;
}
