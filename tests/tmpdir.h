/* tmpdir.h - a per-program temporary folder for tests that write files:
 * setup_dir/teardown_dir (cmocka group fixtures) create and remove it, tpath()
 * names files inside it, write_raw() writes bytes. An alarm() handler fails
 * the program cleanly (removing the folder) when a call hangs or crawls. */
#ifndef LOCO_TMPDIR_H
#define LOCO_TMPDIR_H

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "\nFAILED: timed out (a hang, or far too slow)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(1);
    if (g_dir[0]) nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    _exit(1);
}

static int setup_dir(void **state) {
    (void)state;
    signal(SIGALRM, on_alarm);
    snprintf(g_dir, sizeof g_dir, "/tmp/loco-test-XXXXXX");
    if (!mkdtemp(g_dir)) fail_msg("mkdtemp: %s", strerror(errno));
    return 0;
}

static int teardown_dir(void **state) {
    (void)state;
    if (g_dir[0]) nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_dir[0] = 0;
    return 0;
}

/* g_dir/name in one of 8 rotating buffers */
static const char *tpath(const char *name) {
    static char buf[8][256];
    static int k = 0;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

static void write_raw(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("%s: %s", path, strerror(errno));
    if (n && fwrite(p, 1, n, f) != n) fail_msg("%s: short write", path);
    fclose(f);
}

#endif
