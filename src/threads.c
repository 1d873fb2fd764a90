/* threads.c - how many threads the kernels use.
 *
 * A fixed count when the program asks for one (loco_set_threads(n > 0)) or
 * the environment names one (OMP_NUM_THREADS). Otherwise the library decides
 * before each network evaluation (threads_for_work), from measurements on
 * 2-core VMs (docs/performance.md, "Threads"):
 *   - one thread for models under THREADS_MIN_FLOPS per image: there each
 *     operation is too small to pay for waking a second thread (17 us a
 *     parallel region with passive waits, about 1 us with a short spin):
 *     unet-small (0.57 GFLOP) ran a forward pass in 8.6 ms on one thread and
 *     11.7 ms on two; faces32 (2.15 GFLOP) and cifar10 (12.4) gain 1.1-1.4x
 *     from the second thread;
 *   - every core on an idle machine (other processes use less than half a
 *     core);
 *   - on a busy machine, the cores the others leave free (at least one), as
 *     measured from /proc/stat over the time since the last decision (at
 *     most every THREADS_RESAMPLE seconds; the first decision counts runnable
 *     tasks over 30 ms). Models of THREADS_BIG_FLOPS per image and more keep
 *     every core when waits are short: their long operations lose little to
 *     a descheduled thread and the scheduler's fair share gives more CPU to
 *     more threads (celebahq beside two busy processes: 10.7 s on two
 *     threads, 12.3 s on one).
 * Waits: libgomp spins 300,000 times before sleeping unless told otherwise,
 * which costs a busy machine dearly when threads outnumber free cores;
 * loco_threads_reexec restarts a program with GOMP_SPINCOUNT=1000: as fast
 * as the long spin when idle (faces32 edit 7.2-7.4 s, against 7.1-7.8 s at
 * 30000 and 9.7-10.2 s fully passive) and nearly as good as passive when
 * threads must share cores (celebahq beside one busy process: 7.6-7.8 s,
 * passive 7.3-7.7 s, 30000 spins 9.1-9.9 s). Without that the library never
 * runs more threads than free cores. Every kernel gives bit-identical
 * results for any thread count (ops/gemm.c), so the choice changes speed, never
 * the numbers. The state here is process-wide and not locked: call the
 * library from one thread at a time (as loco_set_log already asks). */
#include "internal.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* models of fewer FLOPs per image (2 x multiply-adds, direct convolutions)
 * run on one thread; from THREADS_BIG_FLOPS on they keep every core on a
 * busy machine when waits are short */
#define THREADS_MIN_FLOPS 1.5e9
#define THREADS_BIG_FLOPS 50e9
#define THREADS_RESAMPLE 0.5

static int fixed_n = 0;   /* loco_set_threads(n > 0) */
static int inited = 0;    /* the environment has been read */
static int env_fixed = 0; /* OMP_NUM_THREADS given */
static int long_spin = 0; /* libgomp spins long while waiting (its default) */
static int current = 0;   /* the count last given to OpenMP, 0: none yet */

static struct {
    int have;
    double wall, busy, own; /* seconds: monotonic, all CPUs' non-idle, ours */
    double free_cores;
} load;

static int cpus_allowed(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* 1 if the environment the program started with (what libgomp read when it
 * loaded) has variable `name` (given as "NAME="); -1 if unreadable */
static int start_env_has(const char *name) {
    FILE *f = fopen("/proc/self/environ", "r");
    if (!f) return -1;
    size_t nl = strlen(name), i = 0;
    int c, match = 1, found = 0;
    while ((c = fgetc(f)) != EOF) {
        if (c == 0) {
            i = 0;
            match = 1;
            continue;
        }
        if (match && i < nl) {
            if (c != name[i]) match = 0;
            else if (++i == nl) found = 1;
        }
    }
    fclose(f);
    return found;
}

static int env_has(const char *name) {
    int r = start_env_has(name);
    if (r >= 0) return r;
    char var[64];
    snprintf(var, sizeof var, "%.*s", (int)strlen(name) - 1, name); /* names here are short */
    return getenv(var) != NULL;
}

static void init_env(void) {
    if (inited) return;
    inited = 1;
    const char *nt = getenv("OMP_NUM_THREADS");
    env_fixed = nt && nt[0];
    long_spin = !env_has("OMP_WAIT_POLICY=") && !env_has("GOMP_SPINCOUNT=");
}

/* busy seconds of all CPUs (user, nice, system, irq, softirq, steal) and
 * the number of CPUs, from /proc/stat; -1 when unreadable */
static double cpu_busy_seconds(int *ncpu) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    char line[512];
    double busy = -1;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "cpu", 3) != 0) break;
        if (line[3] == ' ') {
            unsigned long long v[8] = {0};
            if (sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                       &v[6], &v[7]) >= 4)
                busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        } else {
            n++;
        }
    }
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    *ncpu = n > 0 ? n : 1;
    return busy < 0 ? -1 : busy / (double)(hz > 0 ? hz : 100);
}

/* tasks runnable right now, system-wide (/proc/loadavg's fourth field, the
 * part before the slash); -1 when unreadable */
static int runnable_tasks(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1;
    double a, b, c;
    int r = -1, t;
    if (fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &r, &t) != 5) r = -1;
    fclose(f);
    return r;
}

static double own_cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Cores left free by other processes, averaged since the last sample. */
static double free_cores(int allowed) {
    double now = loco_now();
    if (load.have && now - load.wall < THREADS_RESAMPLE) return load.free_cores;
    int ncpu;
    double busy = cpu_busy_seconds(&ncpu), own = own_cpu_seconds();
    if (busy < 0) return allowed; /* no /proc: assume an idle machine */
    double other = 0;
    if (!load.have) {
        /* first decision: /proc/stat counts in 10 ms ticks, too coarse for a
         * short look, so count the runnable tasks instead, 10 times over
         * 30 ms; the calling thread is one of them */
        double sum = 0;
        int got = 0;
        for (int i = 0; i < 10; i++) {
            int r = runnable_tasks();
            if (r > 0) {
                sum += r - 1;
                got++;
            }
            struct timespec d = {0, 3 * 1000 * 1000};
            nanosleep(&d, NULL);
        }
        other = got ? sum / got : 0;
        now = loco_now();
        busy = cpu_busy_seconds(&ncpu);
        own = own_cpu_seconds();
    } else {
        double dt = now - load.wall;
        if (dt > 0) other = ((busy - load.busy) - (own - load.own)) / dt;
    }
    if (other < 0) other = 0;
    double fr = (double)ncpu - other;
    if (fr > allowed) fr = allowed;
    load.have = 1;
    load.wall = now;
    load.busy = busy;
    load.own = own;
    load.free_cores = fr;
    return fr;
}

static void use_threads(int n) {
    if (n == current) return;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    current = n;
}

void threads_for_work(double flops_per_image) {
    init_env();
    if (fixed_n > 0 || env_fixed) return;
    int n = 1;
    if (flops_per_image >= THREADS_MIN_FLOPS) {
        const int allowed = cpus_allowed();
        const double fr = free_cores(allowed);
        if (fr >= allowed - 0.5 || (flops_per_image >= THREADS_BIG_FLOPS && !long_spin)) n = allowed;
        else n = (int)(fr + 0.5);
        if (n < 1) n = 1;
        if (n > allowed) n = allowed;
    }
    use_threads(n);
}

void loco_set_threads(int n) {
    fixed_n = n > 0 ? n : 0;
    if (n > 0) {
#ifdef _OPENMP
        omp_set_num_threads(n);
#endif
        current = n;
    }
}

int loco_get_threads(void) {
    init_env();
    if (fixed_n > 0) return fixed_n;
#ifdef _OPENMP
    if (env_fixed) return omp_get_max_threads();
#endif
    return cpus_allowed();
}

/* a short spin before sleeping: as fast as libgomp's long default when
 * idle, about as good as sleeping at once when threads must share cores */
#define LOCO_SPINCOUNT "1000"

int loco_threads_reexec(char **argv) {
    if (!argv || !argv[0] || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return 0;
    if (setenv("GOMP_SPINCOUNT", LOCO_SPINCOUNT, 1) != 0) return -1;
    execv("/proc/self/exe", argv);
    unsetenv("GOMP_SPINCOUNT"); /* not replaced: carry on as we are */
    return -1;
}
