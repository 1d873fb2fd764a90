/* progress.c - what a long command shows while it works: on a terminal one
 * line per phase, rewritten in place (phase, step i/n, elapsed, ETA and,
 * during subspace iterations, the current subspace angle); with
 * --progress-json one JSON object per line on stderr for scripts and
 * front ends, terminal or not; nothing with --quiet or when stderr is not a
 * terminal. Uses only the public header. */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int g_progress_json = 0;

static struct {
    char phase[48];
    double t_phase, t_shown;
} st;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cli_progress_wanted(void) { return !g_quiet && (g_progress_json || isatty(2)); }

/* "1h02m", "3m05s", "12s" */
static void fmt_secs(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%.0fs", s);
}

void cli_progress(const char *phase, int done, int total, void *user) {
    (void)user;
    if (!cli_progress_wanted() || !phase) return;
    const double t = now();
    if (strncmp(st.phase, phase, sizeof st.phase - 1) != 0 || done <= 1) {
        snprintf(st.phase, sizeof st.phase, "%s", phase);
        st.t_phase = t;
        st.t_shown = 0;
    }
    const double el = t - st.t_phase, eta = done > 0 && total >= done ? el / done * (total - done) : NAN;
    const double angle = loco_progress_value();
    if (g_progress_json) {
        fprintf(stderr, "{\"event\": \"progress\", \"phase\": \"%s\", \"done\": %d, \"total\": %d, "
                        "\"elapsed_s\": %.3f, \"eta_s\": ",
                st.phase, done, total, el);
        if (isfinite(eta)) fprintf(stderr, "%.3f", eta);
        else fputs("null", stderr);
        if (isfinite(angle)) fprintf(stderr, ", \"angle\": %.6g", angle);
        fputs("}\n", stderr);
        fflush(stderr);
        return;
    }
    /* a terminal: at most 10 rewrites a second, and always the last step */
    if (done < total && t - st.t_shown < 0.1) return;
    st.t_shown = t;
    char e[16], r[16];
    fmt_secs(el, e, sizeof e);
    fmt_secs(eta, r, sizeof r);
    fprintf(stderr, "\r  %-12s %5d/%-5d %6s elapsed", st.phase, done, total, e);
    if (done < total) fprintf(stderr, ", ETA %-6s", r);
    else fputs("            ", stderr);
    if (isfinite(angle)) fprintf(stderr, "  angle %.1e", angle);
    fputs(done >= total ? "\n" : "  ", stderr);
    fflush(stderr);
}
