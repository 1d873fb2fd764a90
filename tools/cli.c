/* cli.c - helpers every command uses (declared in cli.h): messages, option
 * lookup, the --quiet flag, atomic text files. Uses only the public header. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int g_quiet = 0;

void log_cb(loco_log_level lvl, const char *msg, void *user) {
    (void)user;
    if (lvl == LOCO_LOG_ERROR) return; /* errors are printed by the caller */
    if (g_quiet && lvl > LOCO_LOG_WARN) return;
    if (lvl == LOCO_LOG_DEBUG) return;
    fprintf(stderr, "loco: %s: %s\n", lvl == LOCO_LOG_WARN ? "warning" : "info", msg);
}

loco_open_params g_open;

loco_status open_model(const char *path, loco_model **m) { return loco_model_open_with(path, &g_open, m); }

int fail(loco_status s) {
    const char *d = loco_last_error();
    fprintf(stderr, "loco: error: %s\n", d[0] ? d : loco_strerror(s));
    return s == LOCO_E_INVALID_ARGUMENT ? 2 : 1;
}

int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "loco: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'loco help' for usage.\n");
    return 2;
}

/* value of option `name` at position i, advancing; NULL if not this option */
const char *opt(args *a, const char *name) {
    if (strcmp(a->argv[a->i], name) != 0) return NULL;
    if (a->i + 1 >= a->argc) return NULL;
    a->i++;
    return a->argv[a->i];
}

/* Writes text to dir/name through the library's atomic writer. */

