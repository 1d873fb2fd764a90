/* bench_util.h - the clock, the memory counters and the random streams the
 * benchmark programs share (header-only: each program is one translation unit). */
#ifndef LOCO_BENCH_UTIL_H
#define LOCO_BENCH_UTIL_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* splitmix64: the eval programs' reproducible streams */
static inline double bench_uniform(uint64_t *s) { /* (0, 1) */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}
/* a standard normal by Box-Muller, the two uniforms drawn in order */
static inline double bench_normal(uint64_t *s) {
    const double u0 = bench_uniform(s), u1 = bench_uniform(s);
    return sqrt(-2.0 * log(u0)) * cos(6.283185307179586 * u1);
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* n floats uniform in [-0.5, 0.5) from a 32-bit LCG whose state *st the
 * caller keeps (the same inputs every run) */
static inline void fill_uniform(float *p, size_t n, unsigned *st) {
    for (size_t i = 0; i < n; i++) {
        *st = *st * 1664525u + 1013904223u;
        p[i] = (float)((*st >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
}

/* this process's CPU time (all threads, user + system) */
static inline double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a field of /proc/self/status in kB ("VmHWM", "VmRSS"), -1 if unreadable */
static inline long proc_status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* Resets this process's VmHWM to its current RSS (Linux >= 4.0: writing 5
 * to /proc/self/clear_refs). Returns 1 on success. */
static inline int reset_hwm(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok;
}
#endif
