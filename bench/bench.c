/* bench - how fast is loco on this machine?
 *
 * One run measures
 *   (a) OpenBLAS sgemm in GFLOP/s on the GEMM shapes a 3x3 convolution
 *       lowers to (C[M,N] = W[M,K] * cols[K,N], M = C_out, K = 9 C_in,
 *       N = H W), best of a few repetitions;
 *   (b) the UNet forward pass (loco_model_eps) of three models at batch 1 and
 *       4: median time after a warm-up, GFLOP/s, that as a share of the best
 *       sgemm rate, and the peak resident memory of the process.
 *
 * Every measurement runs in its own child process (fork), so that each row
 * has its own peak-memory figure (VmHWM) and the parent never starts an
 * OpenMP thread pool (libgomp's pool does not survive fork()).
 *
 * Uses only the public header, cblas (OpenBLAS) and the C/POSIX library.
 * Results go to stdout (a table, or JSON with --json); progress to stderr.
 */
#include "bench_util.h"
#include "loco.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------- */

static struct {
    int quick, json, threads, load;
    double retry_busy; /* retry a measurement while others use more than this % of the CPUs; <0: never */
    const char *only;   /* comma-separated names, NULL: all */
    const char *batch;  /* comma-separated batch sizes, NULL: 1,4 */
    const char *cache;  /* where random-initialised models are kept */
    const char *fixtures;
    const char *configs;
} opt = {0, 0, 0, 0, -1, NULL, NULL, "build/bench-models", "tests/fixtures", "configs"};

static const char *const usage_text =
    "usage: bench [--quick] [--json] [--only NAMES] [--batch LIST] [--threads N]\n"
    "             [--cache DIR] [--fixtures DIR] [--configs DIR]\n"
    "\n"
    "  --quick         fewer repetitions; skips the 256x256 models at batch 4\n"
    "  --json          machine-readable output on stdout\n"
    "  --only NAMES    comma-separated subset of: sgemm, unet-small,\n"
    "                  ddpm-cifar10-32, ddpm-ema-celebahq-256, adm-p2-256 (the\n"
    "                  P2-weighting guided-diffusion UNet; a word selects\n"
    "                  every name containing it, e.g. 'celebahq')\n"
    "  --batch LIST    comma-separated batch sizes (default 1,4)\n"
    "  --threads N     threads for loco and OpenBLAS (default: loco's automatic choice)\n"
    "  --load N        N busy-looping processes run beside every measurement, as\n"
    "                  on a machine doing other work (default 0)\n"
    "  --retry-busy P  on a shared machine: when other processes used more than\n"
    "                  P%% of the CPUs during a measurement, wait 15 s and measure\n"
    "                  again (up to 4 more times); the quietest attempt is kept\n"
    "  --cache DIR     folder for the random-initialised models (default\n"
    "                  build/bench-models; made on first use, then reused)\n"
    "  --fixtures DIR  default tests/fixtures;  --configs DIR  default configs\n"
    "\n"
    "Run from the repository root. Set OPENBLAS_CORETYPE before starting to\n"
    "choose the OpenBLAS kernel (e.g. Haswell); the one in use is printed.\n";

static int selected(const char *name) {
    if (!opt.only) return 1;
    const char *p = opt.only;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n > 0) {
            char word[128];
            if (n >= sizeof word) n = sizeof word - 1;
            memcpy(word, p, n);
            word[n] = 0;
            if (strstr(name, word)) return 1;
        }
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

static const char *const all_names[] = {"sgemm", "unet-small", "ddpm-cifar10-32", "ddpm-ema-celebahq-256",
                                        "adm-p2-256"};

/* every word of --only must select something */
static int check_only(void) {
    if (!opt.only) return 1;
    const char *p = opt.only;
    while (*p) {
        size_t n = strcspn(p, ",");
        char word[128];
        if (n == 0 || n >= sizeof word) goto bad;
        memcpy(word, p, n);
        word[n] = 0;
        int hit = 0;
        for (size_t i = 0; i < sizeof all_names / sizeof all_names[0]; i++) hit |= strstr(all_names[i], word) != NULL;
        if (!hit) goto bad;
        p += n;
        if (*p == ',') p++;
    }
    return 1;
bad:
    fprintf(stderr, "bench: --only '%s': each comma-separated word must be part of one of: sgemm, unet-small, "
                    "ddpm-cifar10-32, ddpm-ema-celebahq-256, adm-p2-256\n", opt.only);
    return 0;
}

/* ---- small helpers --------------------------------------------------------- */


static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}


/* deterministic generator: splitmix64, normals by Box-Muller */
static uint64_t rng_state;
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return ((double)(rng_next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static void fill_normal(float *p, size_t n, uint64_t seed) {
    rng_state = seed;
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(rng_uniform())), a = 2.0 * M_PI * rng_uniform();
        p[i] = (float)(r * cos(a));
        if (i + 1 < n) p[i + 1] = (float)(r * sin(a));
    }
}


static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* "bench: <what> ...\n" on stderr */
static void progress(const char *what) { fprintf(stderr, "bench: %s ...\n", what); }

/* ---- child processes --------------------------------------------------------- */

#define MAX_REPS 64

typedef struct result {
    int ok;
    char err[512];
    /* sgemm */
    double best_s;
    /* forward */
    int64_t params;
    double gflop_img;      /* per image, from loco_model_info.flops */
    double gflop_exec_img; /* per image, loco_model_info.flops_executed */
    double load_s;         /* loco_model_open */
    double warm_s;         /* the warm-up run */
    double median_s, min_s, max_s;
    int reps;
    long rss_load_kb;      /* VmRSS after loading the model */
    long hwm_kb;           /* VmHWM at the end of the child: the whole peak */
    long fwd_hwm_kb;       /* VmHWM since the model was loaded, -1 if unknown */
    double expect_mb;      /* weight_bytes + batch * activation_bytes */
    /* filled in by the parent */
    double wall_s;         /* lifetime of the child */
    double other_pct;      /* CPU time of everything else on the machine over
                              the child's lifetime, % of all CPUs; -1 unknown */
} result;

/* busy and total jiffies of all CPUs from /proc/stat; 0 if unreadable */
static int cpu_jiffies(double *busy, double *total) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8) return 0;
    /* user nice system idle iowait irq softirq steal; guest time is already
     * inside user */
    *total = (double)(v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]);
    *busy = *total - (double)(v[3] + v[4]);
    return 1;
}

typedef void (*child_fn)(const void *arg, result *r);

/* Runs fn(arg, r) in a child process and copies its result back. */
static int in_child(child_fn fn, const void *arg, result *r) {
    int fd[2];
    memset(r, 0, sizeof *r);
    fflush(NULL);
    if (pipe(fd) != 0) {
        snprintf(r->err, sizeof r->err, "pipe: %s", strerror(errno));
        return 0;
    }
    double busy0 = 0, total0 = 0, t0 = now_s();
    int have_stat = cpu_jiffies(&busy0, &total0);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(r->err, sizeof r->err, "fork: %s", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return 0;
    }
    if (pid == 0) {
        close(fd[0]);
        result cr;
        memset(&cr, 0, sizeof cr);
        if (opt.threads > 0) loco_set_threads(opt.threads);
        fn(arg, &cr);
        const char *p = (const char *)&cr;
        size_t left = sizeof cr;
        while (left > 0) {
            ssize_t w = write(fd[1], p, left);
            if (w <= 0) _exit(3);
            p += w;
            left -= (size_t)w;
        }
        fflush(NULL);
        _exit(0);
    }
    close(fd[1]);
    char *p = (char *)r;
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t n = read(fd[0], p + got, sizeof *r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd[0]);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    double wall = now_s() - t0, busy1, total1;
    double other = -1;
    if (have_stat && cpu_jiffies(&busy1, &total1) && total1 > total0) {
        double child_cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
                           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
        double tck = (double)sysconf(_SC_CLK_TCK);
        /* total jiffies cover every CPU, so the share is relative to all */
        other = 100.0 * ((busy1 - busy0) - child_cpu * tck) / (total1 - total0);
        if (other < 0) other = 0;
    }
    if (got != sizeof *r) {
        memset(r, 0, sizeof *r);
        if (WIFSIGNALED(status))
            snprintf(r->err, sizeof r->err, "child killed by signal %d%s", WTERMSIG(status),
                     WTERMSIG(status) == 9 ? " (out of memory?)" : "");
        else
            snprintf(r->err, sizeof r->err, "child exited with status %d", WEXITSTATUS(status));
        return 0;
    }
    r->wall_s = wall;
    r->other_pct = other;
    return r->ok;
}

/* in_child with --retry-busy: repeats a measurement disturbed by other
 * processes, keeping the quietest attempt */
static int measure(child_fn fn, const void *arg, result *r, const char *what) {
    int ok = in_child(fn, arg, r);
    for (int attempt = 1; ok && opt.retry_busy >= 0 && r->other_pct > opt.retry_busy && attempt <= 4; attempt++) {
        fprintf(stderr, "bench: %s: other processes used %.0f%% of the CPUs; again in 15 s (%d/4)\n", what,
                r->other_pct, attempt);
        sleep(15);
        result again;
        if (!in_child(fn, arg, &again)) break;
        if (again.other_pct < r->other_pct) *r = again;
    }
    return ok;
}

/* ---- (a) sgemm ------------------------------------------------------------------ */

typedef struct gemm_shape {
    int m, n, k;
    const char *what;
} gemm_shape;

static const gemm_shape shapes[] = {
    {128, 65536, 1152, "celebahq 256x256, 128 ch"},
    {128, 16384, 1152, "celebahq 128x128, 128 ch"},
    {256, 4096, 2304, "celebahq 64x64, 256 ch"},
    {512, 256, 4608, "celebahq 16x16, 512 ch"},
    {128, 1024, 1152, "cifar10 32x32, 128 ch"},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

static void gemm_child(const void *arg, result *r) {
    const gemm_shape *s = arg;
    size_t na = (size_t)s->m * s->k, nb = (size_t)s->k * s->n, nc = (size_t)s->m * s->n;
    float *a = malloc(na * sizeof(float)), *b = malloc(nb * sizeof(float)), *c = malloc(nc * sizeof(float));
    if (!a || !b || !c) {
        snprintf(r->err, sizeof r->err, "out of memory");
        free(a), free(b), free(c);
        return;
    }
    fill_normal(a, na, 1);
    fill_normal(b, nb, 2);
    memset(c, 0, nc * sizeof(float));
    int reps = opt.quick ? 3 : 7;
    double best = INFINITY;
    for (int i = -1; i < reps; i++) { /* i = -1: warm-up */
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->m, s->n, s->k, 1.0f, a, s->k, b, s->n, 0.0f, c,
                    s->n);
        double dt = now_s() - t0;
        if (i >= 0 && dt < best) best = dt;
    }
    r->best_s = best;
    r->reps = reps;
    r->hwm_kb = proc_status_kb("VmHWM");
    r->ok = isfinite(c[0]) && isfinite(c[nc - 1]);
    if (!r->ok) snprintf(r->err, sizeof r->err, "non-finite result");
    free(a), free(b), free(c);
}

/* ---- (b) forward ------------------------------------------------------------------ */

typedef struct model_spec {
    const char *name;
    const char *config; /* NULL: `dir` is an existing folder (a fixture) */
    char dir[1024];
} model_spec;

typedef struct fwd_arg {
    const model_spec *spec;
    int batch;
} fwd_arg;

static void set_err(result *r, const char *what, loco_status s) {
    snprintf(r->err, sizeof r->err, "%s: %s: %s", what, loco_strerror(s), loco_last_error());
}

static void init_child(const void *arg, result *r) {
    const model_spec *m = arg;
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s/%s.json", opt.configs, m->config);
    double t0 = now_s();
    loco_status s = loco_model_init_random(cfg, m->dir, 0, LOCO_DTYPE_F32);
    if (s) {
        set_err(r, "loco_model_init_random", s);
        return;
    }
    r->load_s = now_s() - t0;
    r->ok = 1;
}

static void forward_child(const void *arg, result *r) {
    const fwd_arg *fa = arg;
    int B = fa->batch;
    loco_model *m = NULL;
    float *x = NULL, *t = NULL, *eps = NULL;
    double t0 = now_s();
    loco_status s = loco_model_open(fa->spec->dir, &m);
    if (s) {
        set_err(r, "loco_model_open", s);
        return;
    }
    r->load_s = now_s() - t0;
    r->rss_load_kb = proc_status_kb("VmRSS");
    long load_hwm_kb = proc_status_kb("VmHWM");
    int hwm_reset = reset_hwm();
    loco_model_info inf;
    if ((s = loco_model_get_info(m, &inf))) {
        set_err(r, "loco_model_get_info", s);
        goto done;
    }
    r->params = inf.n_params;
    r->gflop_img = inf.flops / 1e9;
    r->gflop_exec_img = inf.flops_executed / 1e9;
    r->expect_mb = ((double)inf.weight_bytes + (double)B * (double)inf.activation_bytes) / (1024.0 * 1024.0);
    size_t nin = (size_t)B * inf.in_channels * inf.height * inf.width;
    size_t nout = (size_t)B * inf.out_channels * inf.height * inf.width;
    x = malloc(nin * sizeof(float));
    eps = malloc(nout * sizeof(float));
    t = malloc((size_t)B * sizeof(float));
    if (!x || !eps || !t) {
        snprintf(r->err, sizeof r->err, "out of memory for the inputs");
        goto done;
    }
    fill_normal(x, nin, 42);
    for (int b = 0; b < B; b++) t[b] = 50.5f + (float)(b * 900) / (float)(B > 1 ? B - 1 : 1); /* 50.5 .. 950.5 */

    t0 = now_s();
    if ((s = loco_model_eps(m, B, x, t, eps))) {
        set_err(r, "loco_model_eps", s);
        goto done;
    }
    r->warm_s = now_s() - t0;
    /* repetitions: at least 3 (2 with --quick), more while they fit in a
     * time budget of about 8 s (2 s) */
    int min_reps = opt.quick ? 2 : 3, max_reps = opt.quick ? 5 : 15;
    double budget = opt.quick ? 2.0 : 8.0;
    int reps = (int)(budget / (r->warm_s > 1e-6 ? r->warm_s : 1e-6));
    if (reps < min_reps) reps = min_reps;
    if (reps > max_reps) reps = max_reps;
    double times[MAX_REPS];
    for (int i = 0; i < reps; i++) {
        t0 = now_s();
        if ((s = loco_model_eps(m, B, x, t, eps))) {
            set_err(r, "loco_model_eps", s);
            goto done;
        }
        times[i] = now_s() - t0;
    }
    for (size_t i = 0; i < nout; i++)
        if (!isfinite(eps[i])) {
            snprintf(r->err, sizeof r->err, "eps[%zu] is not finite", i);
            goto done;
        }
    qsort(times, (size_t)reps, sizeof times[0], cmp_double);
    r->reps = reps;
    r->min_s = times[0];
    r->max_s = times[reps - 1];
    r->median_s = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
    r->hwm_kb = proc_status_kb("VmHWM");
    r->fwd_hwm_kb = hwm_reset ? r->hwm_kb : -1;
    if (load_hwm_kb > r->hwm_kb) r->hwm_kb = load_hwm_kb;
    r->ok = 1;
done:
    free(x);
    free(t);
    free(eps);
    loco_model_free(m);
}

/* ---- output -------------------------------------------------------------------- */

typedef struct fwd_row {
    const char *name;
    int batch;
    result r;
} fwd_row;

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static void print_machine_text(int threads, const char *coretype, const char *cpu) {
    printf("loco bench (loco %s)\n", LOCO_VERSION);
    printf("cpu: %s, %ld online cpus\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
    if (opt.threads > 0) printf("threads: %d (fixed)", threads);
    else printf("threads: automatic, up to %d (one for small models, else the free cores)", threads);
    printf(", busy processes beside: %d, OpenBLAS core: %s, OPENBLAS_CORETYPE=%s\n", opt.load,
           openblas_get_corename(), coretype ? coretype : "(unset)");
    printf("OpenBLAS config: %s\n", openblas_get_config());
}

static void read_cpu_name(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512], name[256] = "", fam[32] = "", mod[32] = "";
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!c) continue;
        char *v = c + 1;
        while (*v == ' ') v++;
        v[strcspn(v, "\n")] = 0;
        if (!name[0] && strncmp(line, "model name", 10) == 0) snprintf(name, sizeof name, "%s", v);
        else if (!fam[0] && strncmp(line, "cpu family", 10) == 0) snprintf(fam, sizeof fam, "%s", v);
        else if (!mod[0] && strncmp(line, "model\t", 6) == 0) snprintf(mod, sizeof mod, "%s", v);
        if (name[0] && fam[0] && mod[0]) break;
    }
    fclose(f);
    snprintf(buf, n, "%s (family %s, model %s)", name[0] ? name : "?", fam[0] ? fam : "?", mod[0] ? mod : "?");
}

/* ---- main ------------------------------------------------------------------------ */

static int parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) opt.quick = 1;
        else if (strcmp(a, "--json") == 0) opt.json = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (next && strcmp(a, "--only") == 0) opt.only = argv[++i];
        else if (next && strcmp(a, "--batch") == 0) opt.batch = argv[++i];
        else if (next && strcmp(a, "--cache") == 0) opt.cache = argv[++i];
        else if (next && strcmp(a, "--fixtures") == 0) opt.fixtures = argv[++i];
        else if (next && strcmp(a, "--configs") == 0) opt.configs = argv[++i];
        else if (next && strcmp(a, "--retry-busy") == 0) {
            char *end;
            double v = strtod(next, &end);
            if (*end || !(v >= 0 && v <= 100)) {
                fprintf(stderr, "bench: bad --retry-busy '%s' (a percentage)\n", next);
                return 0;
            }
            opt.retry_busy = v;
            i++;
        } else if (next && strcmp(a, "--load") == 0) {
            char *end;
            long v = strtol(next, &end, 10);
            if (*end || end == next || v < 0 || v > 64) {
                fprintf(stderr, "bench: bad --load '%s' (0..64 busy processes)\n", next);
                return 0;
            }
            opt.load = (int)v;
            i++;
        } else if (next && strcmp(a, "--threads") == 0) {
            char *end;
            long v = strtol(next, &end, 10);
            if (*end || v < 1 || v > 1024) {
                fprintf(stderr, "bench: bad --threads '%s'\n", next);
                return 0;
            }
            opt.threads = (int)v;
            i++;
        } else {
            fprintf(stderr, "bench: unknown or incomplete option '%s'\n%s", a, usage_text);
            return 0;
        }
    }
    /* the model and config paths are built in fixed buffers sized for these */
    const char *dirs[3] = {opt.cache, opt.fixtures, opt.configs}, *names[3] = {"--cache", "--fixtures", "--configs"};
    for (int i = 0; i < 3; i++)
        if (strlen(dirs[i]) > 900) {
            fprintf(stderr, "bench: %s is longer than 900 bytes; give a shorter path\n", names[i]);
            return 0;
        }
    return 1;
}

/* batch sizes from --batch; returns the count */
static int parse_batches(int *out, int max) {
    const char *p = opt.batch ? opt.batch : "1,4";
    int n = 0;
    while (*p && n < max) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 256 || (*end && *end != ',')) {
            fprintf(stderr, "bench: bad --batch '%s'\n", opt.batch);
            return -1;
        }
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return n;
}

static int mkdir_p(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return 0;
        *p = '/';
    }
    return mkdir(buf, 0777) == 0 || errno == EEXIST;
}

/* ---- --load: busy processes beside the measurements ------------------------ */

static pid_t hogs[64];
static int n_hogs = 0;

static void stop_hogs(void) {
    for (int i = 0; i < n_hogs; i++) kill(hogs[i], SIGKILL);
    for (int i = 0; i < n_hogs; i++) waitpid(hogs[i], NULL, 0);
    n_hogs = 0;
}

static void on_signal(int sig) {
    for (int i = 0; i < n_hogs; i++) kill(hogs[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void start_hogs(int n) {
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            volatile unsigned long x = 0;
            for (;;) x++;
        }
        if (p > 0) hogs[n_hogs++] = p;
    }
    atexit(stop_hogs);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
}

int main(int argc, char **argv) {
    loco_threads_reexec(argv); /* short OpenMP waits unless chosen otherwise */
    if (!parse_args(argc, argv) || !check_only()) return 2;
    if (opt.load > 0) start_hogs(opt.load);
    int batches[16];
    int nb = parse_batches(batches, 16);
    if (nb < 0) return 2;
    int threads = opt.threads > 0 ? opt.threads : loco_get_threads();
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    char cpu[512];
    read_cpu_name(cpu, sizeof cpu);
    fprintf(stderr, "bench: %d threads, OpenBLAS core %s%s\n", threads, openblas_get_corename(),
            opt.quick ? ", quick" : "");

    /* (a) sgemm */
    result gemm[N_SHAPES];
    int gemm_ok[N_SHAPES] = {0};
    double best_gflops = 0;
    int run_gemm = selected("sgemm");
    if (run_gemm) {
        for (size_t i = 0; i < N_SHAPES; i++) {
            char label[128];
            snprintf(label, sizeof label, "%dx%dx%d", shapes[i].m, shapes[i].n, shapes[i].k);
            char line[160];
            snprintf(line, sizeof line, "sgemm M,N,K = %s", label);
            progress(line);
            gemm_ok[i] = measure(gemm_child, &shapes[i], &gemm[i], line);
            if (!gemm_ok[i]) {
                fprintf(stderr, "bench: sgemm %s failed: %s\n", label, gemm[i].err);
                continue;
            }
            double gf = 2.0 * shapes[i].m * (double)shapes[i].n * shapes[i].k / gemm[i].best_s / 1e9;
            if (gf > best_gflops) best_gflops = gf;
        }
    }

    /* (b) forward passes */
    static model_spec specs[4] = {
        {"unet-small", NULL, ""},
        {"ddpm-cifar10-32", "ddpm-cifar10-32", ""},
        {"ddpm-ema-celebahq-256", "ddpm-ema-celebahq-256", ""},
        {"adm-p2-256", "adm-p2-256", ""},
    };
    fwd_row rows[4 * 16];
    int nrows = 0, failures = 0;
    for (int k = 0; k < 4; k++) {
        model_spec *sp = &specs[k];
        if (!selected(sp->name)) continue;
        if (!sp->config) {
            snprintf(sp->dir, sizeof sp->dir, "%s/%s", opt.fixtures, sp->name);
        } else {
            snprintf(sp->dir, sizeof sp->dir, "%s/%s", opt.cache, sp->name);
            char w[1200];
            snprintf(w, sizeof w, "%s/config.json", sp->dir); /* written last by loco_model_init_random */
            if (!file_exists(w)) {
                if (!mkdir_p(opt.cache)) {
                    fprintf(stderr, "bench: cannot create %s: %s\n", opt.cache, strerror(errno));
                    return 1;
                }
                fprintf(stderr, "bench: writing a random %s model (seed 0) to %s ...\n", sp->name, sp->dir);
                result ir;
                if (!in_child(init_child, sp, &ir)) {
                    fprintf(stderr, "bench: %s: %s\n", sp->name, ir.err);
                    failures++;
                    continue;
                }
                fprintf(stderr, "bench: ... %.1f s\n", ir.load_s);
            }
        }
        for (int j = 0; j < nb; j++) {
            int B = batches[j];
            if (opt.quick && B > 1 && k >= 2) continue; /* 256x256 at batch > 1 takes minutes */
            fwd_arg fa = {sp, B};
            fwd_row *row = &rows[nrows++];
            row->name = sp->name;
            row->batch = B;
            char label[160];
            snprintf(label, sizeof label, "forward %s batch %d", sp->name, B);
            progress(label);
            if (!measure(forward_child, &fa, &row->r, label)) {
                fprintf(stderr, "bench: %s failed: %s\n", label, row->r.err);
                failures++;
                continue;
            }
            fprintf(stderr, "bench: ... median %.4f s over %d runs (others used %.0f%% of the CPUs)\n", row->r.median_s,
                    row->r.reps, row->r.other_pct);
        }
    }

    double load[3] = {-1, -1, -1};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
        fclose(la);
    }

    if (opt.json) {
        printf("{\"loco_version\": \"%s\", \"cpu\": ", LOCO_VERSION);
        json_str(cpu);
        printf(", \"online_cpus\": %ld, \"threads\": %d, \"openblas_core\": ", sysconf(_SC_NPROCESSORS_ONLN), threads);
        json_str(openblas_get_corename());
        printf(", \"openblas_coretype_env\": ");
        if (coretype) json_str(coretype);
        else printf("null");
        printf(", \"quick\": %s, \"loadavg_1min_after\": %.2f,\n \"sgemm\": [", opt.quick ? "true" : "false", load[0]);
        int first = 1;
        for (size_t i = 0; run_gemm && i < N_SHAPES; i++) {
            if (!gemm_ok[i]) continue;
            double gf = 2.0 * shapes[i].m * (double)shapes[i].n * shapes[i].k / gemm[i].best_s / 1e9;
            printf("%s\n  {\"m\": %d, \"n\": %d, \"k\": %d, \"what\": \"%s\", \"best_s\": %.6f, \"reps\": %d, "
                   "\"gflops\": %.2f, \"other_cpu_pct\": %.1f}",
                   first ? "" : ",", shapes[i].m, shapes[i].n, shapes[i].k, shapes[i].what, gemm[i].best_s,
                   gemm[i].reps, gf, gemm[i].other_pct);
            first = 0;
        }
        printf("],\n \"sgemm_best_gflops\": ");
        if (best_gflops > 0) printf("%.2f", best_gflops);
        else printf("null");
        printf(",\n \"forward\": [");
        first = 1;
        for (int i = 0; i < nrows; i++) {
            const result *r = &rows[i].r;
            printf("%s\n  {\"model\": \"%s\", \"batch\": %d, ", first ? "" : ",", rows[i].name, rows[i].batch);
            first = 0;
            if (!r->ok) {
                printf("\"error\": ");
                json_str(r->err);
                printf("}");
                continue;
            }
            double gf = r->gflop_img * rows[i].batch / r->median_s;
            printf("\"parameters\": %lld, \"gflop_per_image\": %.4f, \"load_s\": %.4f, \"warmup_s\": %.5f, "
                   "\"median_s\": %.5f, \"min_s\": %.5f, \"max_s\": %.5f, \"reps\": %d, \"gflops\": %.2f, ",
                   (long long)r->params, r->gflop_img, r->load_s, r->warm_s, r->median_s, r->min_s, r->max_s, r->reps,
                   gf);
            if (best_gflops > 0) printf("\"pct_of_sgemm\": %.1f, ", 100.0 * gf / best_gflops);
            else printf("\"pct_of_sgemm\": null, ");
            double gx = r->gflop_exec_img * rows[i].batch / r->median_s;
            printf("\"gflop_executed_per_image\": %.4f, \"gflops_executed\": %.2f, ", r->gflop_exec_img, gx);
            if (best_gflops > 0) printf("\"pct_of_sgemm_executed\": %.1f, ", 100.0 * gx / best_gflops);
            else printf("\"pct_of_sgemm_executed\": null, ");
            printf("\"rss_after_load_mib\": %.1f, \"peak_rss_mib\": %.1f, ", r->rss_load_kb / 1024.0,
                   r->hwm_kb / 1024.0);
            if (r->fwd_hwm_kb >= 0) printf("\"peak_rss_forward_mib\": %.1f, ", r->fwd_hwm_kb / 1024.0);
            else printf("\"peak_rss_forward_mib\": null, ");
            printf("\"expected_mib\": %.1f, \"other_cpu_pct\": %.1f}", r->expect_mb, r->other_pct);
        }
        printf("]}\n");
    } else {
        print_machine_text(threads, coretype, cpu);
        if (run_gemm) {
            printf("\nsgemm, row-major C[M,N] = A[M,K] B[K,N], best of %d after a warm-up\n", opt.quick ? 3 : 7);
            printf("%6s %7s %6s  %-26s %10s %9s %7s\n", "M", "N", "K", "conv it stands for", "best ms", "GFLOP/s",
                   "other%");
            for (size_t i = 0; i < N_SHAPES; i++) {
                if (!gemm_ok[i]) {
                    printf("%6d %7d %6d  %-26s %s\n", shapes[i].m, shapes[i].n, shapes[i].k, shapes[i].what, "FAILED");
                    continue;
                }
                double gf = 2.0 * shapes[i].m * (double)shapes[i].n * shapes[i].k / gemm[i].best_s / 1e9;
                printf("%6d %7d %6d  %-26s %10.2f %9.1f %7.0f\n", shapes[i].m, shapes[i].n, shapes[i].k, shapes[i].what,
                       gemm[i].best_s * 1e3, gf, gemm[i].other_pct);
            }
            printf("best sgemm rate: %.1f GFLOP/s\n", best_gflops);
        }
        if (nrows > 0) {
            printf("\nforward pass (loco_model_eps), median after a warm-up; GFLOP/s = flops x batch / median;\n"
                   "exec%% = the same with the FLOPs the code executes (Winograd 3x3 convolutions: oneDNN F(4x4) at 1/4, F(2x2) at 4/9)\n");
            printf("%-22s %5s %8s %8s %6s %9s %9s %4s %7s %6s %6s %8s %8s %8s %8s %6s\n", "model", "batch", "params",
                   "GFLOP/im", "load s", "median s", "min s", "runs", "GFLOP/s", "%sgemm", "exec%", "RSS load",
                   "peak fwd", "peak", "expect", "other%");
            for (int i = 0; i < nrows; i++) {
                const result *r = &rows[i].r;
                if (!r->ok) {
                    printf("%-22s %5d FAILED: %s\n", rows[i].name, rows[i].batch, r->err);
                    continue;
                }
                double gf = r->gflop_img * rows[i].batch / r->median_s;
                char pct[16], xpct[16], fwd[16];
                if (best_gflops > 0) snprintf(pct, sizeof pct, "%.1f", 100.0 * gf / best_gflops);
                else snprintf(pct, sizeof pct, "-");
                if (best_gflops > 0)
                    snprintf(xpct, sizeof xpct, "%.1f",
                             100.0 * r->gflop_exec_img * rows[i].batch / r->median_s / best_gflops);
                else snprintf(xpct, sizeof xpct, "-");
                if (r->fwd_hwm_kb >= 0) snprintf(fwd, sizeof fwd, "%.0f", r->fwd_hwm_kb / 1024.0);
                else snprintf(fwd, sizeof fwd, "-");
                printf("%-22s %5d %7.2fM %8.2f %6.2f %9.4f %9.4f %4d %7.1f %6s %6s %8.0f %8s %8.0f %8.0f %6.0f\n",
                       rows[i].name, rows[i].batch, r->params / 1e6, r->gflop_img, r->load_s, r->median_s, r->min_s,
                       r->reps, gf, pct, xpct, r->rss_load_kb / 1024.0, fwd, r->hwm_kb / 1024.0, r->expect_mb,
                       r->other_pct);
            }
            printf("memory in MiB, one process per row: RSS load = VmRSS after loco_model_open; peak fwd = VmHWM\n"
                   "while running the forward passes (reset after loading); peak = VmHWM of the whole process;\n"
                   "expect = weight_bytes + batch x activation_bytes from loco_model_info.\n");
            printf("other%%: CPU time used by other processes while the row ran, as a share of all CPUs\n"
                   "(from /proc/stat); above a few %% the row's times are disturbed.\n");
        }
        if (load[0] >= 0) printf("load average at the end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
    }
    return failures ? 1 : 0;
}
