/* testutil.h - helpers shared by the tests: fixture paths, tensor loading,
 * element-wise comparison that prints the max difference. Header-only. */
#ifndef LOCO_TESTUTIL_H
#define LOCO_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "loco.h"

/* tests/fixtures, or $LOCO_FIXTURES */
static inline const char *fixtures_dir(void) {
    const char *e = getenv("LOCO_FIXTURES");
    return e && e[0] ? e : "tests/fixtures";
}

static inline char *fixture_path(const char *rel) {
    static char buf[8][1024];
    static int k = 0;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", fixtures_dir(), rel);
    return b;
}

/* Loads tensor `name` from safetensors file `path` as float; fails the test
 * if absent. *n receives the element count. Caller frees with loco_free. */
static inline float *load_tensor(const char *path, const char *name, size_t *n) {
    loco_tensors *f;
    loco_status s = loco_tensors_open(path, &f);
    if (s) fail_msg("%s: %s", path, loco_last_error());
    float *d;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    s = loco_tensors_read_f32(f, name, &d, &nd, sh, 0);
    if (s) fail_msg("%s: %s", name, loco_last_error());
    size_t c = 1;
    for (int i = 0; i < nd; i++) c *= (size_t)sh[i];
    if (n) *n = c;
    loco_tensors_close(f);
    return d;
}

/* max |a - b| over n elements */
static inline double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

static inline double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

/* Fails the test when max |a - b| > tol, always printing the figure. */
#define CHECK_CLOSE(what, a, b, n, tol)                                                                               \
    do {                                                                                                               \
        double md_ = max_abs_diff((a), (b), (n));                                                                      \
        printf("  %-40s max abs diff %.3e (tol %.1e, max |ref| %.3e)\n", (what), md_, (double)(tol),                  \
               max_abs((b), (n)));                                                                                     \
        if (!(md_ <= (tol))) fail_msg("%s: max abs diff %.3e > %.1e", (what), md_, (double)(tol));                    \
    } while (0)

#define CHECK_OK(expr)                                                                                                 \
    do {                                                                                                               \
        loco_status st_ = (expr);                                                                                      \
        if (st_ != LOCO_OK) fail_msg("%s -> %s: %s", #expr, loco_strerror(st_), loco_last_error());                    \
    } while (0)

/* Expects status `want` and a message containing every non-NULL needle. */
static inline void expect_error(loco_status got, loco_status want, const char *n1, const char *n2) {
    const char *msg = loco_last_error();
    if (got != want)
        fail_msg("expected status '%s', got '%s' (%s)", loco_strerror(want), loco_strerror(got), msg);
    if (n1 && !strstr(msg, n1)) fail_msg("error message '%s' does not mention '%s'", msg, n1);
    if (n2 && !strstr(msg, n2)) fail_msg("error message '%s' does not mention '%s'", msg, n2);
}

#endif
