/* common.c - status strings, error messages, logging, allocation helpers,
 * half-precision conversion, a deterministic RNG, small file helpers. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


/* ======================================================================== */
/* Status and errors                                                        */
/* ======================================================================== */

static const char *const status_names[] = {
    [LOCO_OK] = "ok",
    [LOCO_E_INVALID_ARGUMENT] = "invalid argument",
    [LOCO_E_IO] = "input/output error",
    [LOCO_E_FORMAT] = "malformed file",
    [LOCO_E_UNSUPPORTED] = "unsupported",
    [LOCO_E_SHAPE] = "shape or dtype mismatch",
    [LOCO_E_NOT_FOUND] = "not found",
    [LOCO_E_NUMERIC] = "non-finite number",
    [LOCO_E_NOMEM] = "out of memory or size beyond limits",
    [LOCO_E_CANCELLED] = "cancelled",
};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == LOCO_STATUS_COUNT,
               "status_names must cover every loco_status");

const char *loco_strerror(loco_status s) {
    if ((int)s < 0 || s >= LOCO_STATUS_COUNT) return "unknown status";
    return status_names[s];
}

static _Thread_local char last_error[1024]; /* see loco_fail for longer messages */

const char *loco_last_error(void) { return last_error; }

static loco_log_fn log_fn = NULL;
static void *log_user = NULL;

void loco_set_log(loco_log_fn fn, void *user) {
    log_fn = fn;
    log_user = user;
}

static void vlog(loco_log_level lvl, const char *fmt, va_list ap) {
    if (!log_fn) return;
    char buf[1024]; /* log lines (warnings) only: a longer one is cut short */
    vsnprintf(buf, sizeof buf, fmt, ap);
    log_fn(lvl, buf, log_user);
}

void loco_log(loco_log_level lvl, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, fmt, ap);
    va_end(ap);
}

/* A message longer than last_error (long paths) keeps its beginning and its
 * end, which says what went wrong, and loses its middle. */
#define ERR_TAIL 400
loco_status loco_fail(loco_status s, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    char *full = n >= (int)sizeof last_error ? malloc((size_t)n + 1) : NULL;
    if (full) {
        vsnprintf(full, (size_t)n + 1, fmt, ap2);
        static const char gap[] = " [...] ";
        const size_t head = sizeof last_error - 1 - ERR_TAIL - (sizeof gap - 1);
        memcpy(last_error, full, head);
        memcpy(last_error + head, gap, sizeof gap - 1);
        memcpy(last_error + head + sizeof gap - 1, full + n - ERR_TAIL, ERR_TAIL + 1);
        free(full);
    }
    va_end(ap2);
    if (log_fn) log_fn(LOCO_LOG_ERROR, last_error, log_user);
    return s;
}

loco_status loco_fail_in(loco_status s, const char *where) {
    char msg[sizeof last_error];
    memcpy(msg, last_error, sizeof msg);
    return loco_fail(s, "%s: %s", where, msg);
}

/* ---- progress: cancelling, and the figure of the last unit ------------- */

static _Thread_local int progress_depth;     /* callbacks running on this thread */
static _Thread_local int progress_cancelled; /* loco_progress_cancel in one      */
static _Thread_local double progress_val = NAN;

void loco_progress_cancel(void) {
    if (progress_depth > 0) progress_cancelled = 1;
}

double loco_progress_value(void) { return progress_depth > 0 ? progress_val : NAN; }

loco_status loco_progress_report(loco_progress_fn fn, void *user, const char *phase, int done, int total,
                                 double value) {
    if (!fn) return LOCO_OK;
    const double saved = progress_val;
    progress_val = value;
    progress_depth++;
    fn(phase, done, total, user);
    progress_depth--;
    progress_val = saved;
    /* the outermost report takes the request (a wrapping callback's inner
     * reports leave it to the loop that called it) */
    if (progress_cancelled && progress_depth == 0) {
        progress_cancelled = 0;
        return loco_fail(LOCO_E_CANCELLED, "%s: cancelled", phase ? phase : "work");
    }
    return LOCO_OK;
}

/* ======================================================================== */
/* Threads and memory                                                       */
/* ======================================================================== */

void loco_free(void *p) { free(p); }

/* Large blocks (weights, activations) are 2 MiB aligned and advised as
 * transparent huge pages: first touches then fault 2 MiB at a time instead
 * of 4 KiB, which on a virtual machine is most of the cost of loading a
 * model (measured: a Stable Diffusion 2.1 folder's load went from 43 s to
 * the figure in docs/performance.md). The blocks are still released with
 * free(). */
#define HUGE_BLOCK ((size_t)2 << 20)

static void *alloc_large(size_t n) {
    const size_t rounded = (n + HUGE_BLOCK - 1) & ~(HUGE_BLOCK - 1);
    void *p = aligned_alloc(HUGE_BLOCK, rounded);
    if (p) madvise(p, rounded, MADV_HUGEPAGE);
    return p;
}

void *loco_malloc(size_t n) {
    if (n == 0 || n > LOCO_MAX_ALLOC) return NULL;
    return n >= 4 * HUGE_BLOCK ? alloc_large(n) : malloc(n);
}

void *loco_calloc(size_t n, size_t size) {
    size_t total;
    if (!loco_mul_ok(n, size, &total) || total == 0 || total > LOCO_MAX_ALLOC) return NULL;
    if (total < 4 * HUGE_BLOCK) return calloc(n, size);
    void *p = alloc_large(total);
    if (p) memset(p, 0, total);
    return p;
}

bool loco_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

/* ======================================================================== */
/* Half precision                                                           */
/* ======================================================================== */

float loco_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            man &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t loco_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);
    if (absx >= 0x477ff000u) return sign | 0x7c00; /* rounds past 65504 */
    if (absx < 0x38800000u) {                      /* subnormal or zero in f16 */
        if (absx < 0x33000000u) return sign;        /* below half the smallest */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; /* 14 - (e - 127) + 13 - 13 ... */
        /* value = m * 2^(e-150); f16 subnormal unit 2^-24 -> q = m >> (126-e) */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t e = (absx >> 23) - 127 + 15;
    uint32_t m = absx & 0x7fffff;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float loco_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* n elements of dtype dt at src -> float (F32, F16, BF16, F64, U8, BOOL);
 * false if dt cannot be read as float. src and out may overlap for F32. */
bool loco_to_f32(loco_dtype dt, const uint8_t *src, size_t n, float *out) {
    switch (dt) {
    case LOCO_DTYPE_F32: memmove(out, src, n * 4); return true;
    case LOCO_DTYPE_F16:
    case LOCO_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = dt == LOCO_DTYPE_F16 ? loco_f16_to_f32(h) : loco_bf16_to_f32(h);
        }
        return true;
    case LOCO_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        return true;
    case LOCO_DTYPE_U8:
    case LOCO_DTYPE_BOOL:
        for (size_t i = 0; i < n; i++) out[i] = (float)src[i];
        return true;
    default: return false;
    }
}

/* ======================================================================== */
/* RNG: xoshiro256** seeded by splitmix64                                   */
/* ======================================================================== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void loco_rng_seed(loco_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t loco_rng_next(loco_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double loco_rng_uniform(loco_rng *r) { return (double)(loco_rng_next(r) >> 11) * 0x1.0p-53; }

double loco_rng_normal(loco_rng *r) {
    double u1 = loco_rng_uniform(r), u2 = loco_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ======================================================================== */
/* Files                                                                    */
/* ======================================================================== */

/* What a file that is not a regular one is, for "PATH: <kind>". */
static const char *kind_of(mode_t m) {
    if (S_ISDIR(m)) return "is a folder, not a file";
    if (S_ISFIFO(m)) return "is a FIFO (named pipe), not a regular file";
    if (S_ISCHR(m)) return "is a character device, not a regular file";
    if (S_ISBLK(m)) return "is a block device, not a regular file";
    if (S_ISSOCK(m)) return "is a socket, not a regular file";
    return "is not a regular file";
}

loco_status loco_check_file(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        struct stat ls;
        if (e == ENOENT && lstat(path, &ls) == 0 && S_ISLNK(ls.st_mode))
            return loco_fail(LOCO_E_IO, "%s: is a symbolic link to nothing (its target does not exist)", path);
        if (e == ENOENT) return LOCO_E_NOT_FOUND; /* nothing recorded: absence may be fine */
        return loco_fail(LOCO_E_IO, "%s: cannot open: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) return loco_fail(LOCO_E_IO, "%s: %s", path, kind_of(st.st_mode));
    return LOCO_OK;
}

loco_status loco_open_file(const char *path, int *fd, uint64_t *size) {
    *fd = -1;
    *size = 0;
    /* stat first: a device is never opened (opening some has effects) */
    loco_status s = loco_check_file(path);
    if (s == LOCO_E_NOT_FOUND) return loco_fail(LOCO_E_IO, "%s: cannot open: %s", path, strerror(ENOENT));
    if (s) return s;
    /* O_NONBLOCK: should a FIFO replace the file after the stat, the open
     * must not wait for a writer; no effect on regular files */
    int d = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (d < 0) return loco_fail(LOCO_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(d, &st) != 0) {
        s = loco_fail(LOCO_E_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(d);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        close(d);
        return loco_fail(LOCO_E_IO, "%s: %s", path, kind_of(st.st_mode));
    }
    *fd = d;
    *size = (uint64_t)st.st_size;
    return LOCO_OK;
}

loco_status loco_read_file(const char *path, char **data, size_t *len, size_t max_len) {
    *data = NULL;
    int fd;
    uint64_t size;
    loco_status s = loco_open_file(path, &fd, &size);
    if (s) return s;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        s = loco_fail(LOCO_E_IO, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        return s;
    }
    if (size > max_len) {
        fclose(f);
        return loco_fail(LOCO_E_FORMAT, "%s: file is %llu bytes, more than the %zu allowed", path,
                         (unsigned long long)size, max_len);
    }
    size_t n = (size_t)size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    }
    if (n && fread(buf, 1, n, f) != n) {
        fclose(f);
        free(buf);
        return loco_fail(LOCO_E_IO, "%s: read failed", path);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return LOCO_OK;
}

char *loco_temp_name(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0, n = strlen(path) + 64;
    char *t = malloc(n);
    if (t) snprintf(t, n, "%.*s.%s" LOCO_TEMP_TAG "%ld.XXXXXX", (int)dl, path, path + dl, (long)getpid());
    return t;
}

/* removes a file or a folder tree (no links followed); 0 or -1 */
static int remove_tree(int dirfd, const char *name) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) return unlinkat(dirfd, name, 0);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) remove_tree(fd, e->d_name);
    closedir(d);
    return unlinkat(dirfd, name, AT_REMOVEDIR);
}

int loco_remove_tree(const char *path) { return remove_tree(AT_FDCWD, path); }

int loco_clean_stale_temps(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
    const char *base = slash ? slash + 1 : path;
    if (!dir) return 0;
    size_t bl = strlen(base), tl = strlen(LOCO_TEMP_TAG);
    int removed = 0;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            const char *nm = e->d_name;
            /* ".<base>" LOCO_TEMP_TAG "<pid>.XXXXXX" */
            if (nm[0] != '.' || strncmp(nm + 1, base, bl) != 0 || strncmp(nm + 1 + bl, LOCO_TEMP_TAG, tl) != 0) continue;
            char *end;
            long pid = strtol(nm + 1 + bl + tl, &end, 10);
            if (end == nm + 1 + bl + tl || *end != '.' || pid <= 0) continue;
            if (pid == (long)getpid()) continue;                         /* ours: being written */
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* its writer still runs */
            if (remove_tree(dirfd(d), nm) == 0) removed++;
        }
        closedir(d);
    }
    free(dir);
    return removed;
}

loco_status loco_write_file_atomic(const char *path, const void *data, size_t len) {
    char *tmp = loco_temp_name(path);
    if (!tmp) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        loco_status s = loco_fail(LOCO_E_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(tmp);
        return s;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            loco_status s = loco_fail(LOCO_E_IO, "%s: write failed: %s", path, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return s;
        }
        p += w;
        left -= (size_t)w;
    }
    fchmod(fd, 0644);
    /* the data reaches the disk before the rename makes it visible, so a
     * crash leaves the old file or the complete new one */
    if (fsync(fd) != 0) {
        loco_status s = loco_fail(LOCO_E_IO, "%s: cannot flush to disk: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return s;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        loco_status s = loco_fail(LOCO_E_IO, "%s: cannot finish writing: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return s;
    }
    free(tmp);
    return LOCO_OK;
}

loco_status loco_write_text_file(const char *path, const char *text) {
    if (!path || !text) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_write_text_file: NULL argument");
    return loco_write_file_atomic(path, text, strlen(text));
}

bool loco_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool loco_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

double loco_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ======================================================================== */
/* Text building                                                            */
/* ======================================================================== */

void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 1024;
        while (nc < b->len + (size_t)n + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void human_bytes(double b, char *out, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, n, "%.1f %s", b, u[i]);
}

loco_status loco_mkdir_p(const char *dir) {
    char *d = strdup(dir);
    if (!d) return loco_fail(LOCO_E_NOMEM, "out of memory");
    for (char *p = d + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(d, 0755) != 0 && errno != EEXIST) {
            loco_status s = loco_fail(LOCO_E_IO, "%s: cannot create folder: %s", d, strerror(errno));
            free(d);
            return s;
        }
        *p = '/';
    }
    loco_status s = LOCO_OK;
    if (mkdir(d, 0755) != 0 && errno != EEXIST) s = loco_fail(LOCO_E_IO, "%s: cannot create folder: %s", d, strerror(errno));
    free(d);
    return s;
}


loco_status loco_randn(uint64_t seed, size_t n, float *out) {
    if (!out && n) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_randn: NULL argument");
    loco_rng r;
    loco_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) out[i] = (float)loco_rng_normal(&r);
    return LOCO_OK;
}
