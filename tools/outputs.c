/* outputs.c - where the CLI writes: output locations checked before any
 * compute, and output folders that appear all-old or all-new.
 *
 * An output folder (loco edit/apply/analyze --out DIR) is written as a hidden
 * temporary folder beside DIR, ".DIR" LOCO_TEMP_TAG "<pid>.XXXXXX", and
 * swapped in at the end: renamed to DIR when DIR does not exist, else
 * exchanged with DIR in one atomic rename (renameat2 RENAME_EXCHANGE) and the
 * old contents removed. A run that fails removes its temporary folder; a run
 * that is killed leaves it, and the next run writing beside it removes it
 * (loco_clean_stale_temps). An existing DIR is replaced only when everything
 * in it is a file this command writes, so a mistyped --out never deletes
 * anything else. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* the folder holding path (malloc'd): "." for a bare name */
static char *parent_of(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--; /* "a/b/" is "a/b" */
    const char *s = NULL;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '/') s = path + i;
    if (!s) return strdup(".");
    if (s == path) return strdup("/");
    return strndup(path, (size_t)(s - path));
}

static int parent_ok(const char *path, const char *what) {
    char *par = parent_of(path);
    if (!par) return fail(LOCO_E_NOMEM);
    struct stat st;
    int rc = 0;
    if (stat(par, &st) != 0) {
        fprintf(stderr, "loco: error: %s %s: its folder %s does not exist\n", what, path, par);
        rc = 2;
    } else if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "loco: error: %s %s: %s is not a folder\n", what, path, par);
        rc = 2;
    } else if (access(par, W_OK | X_OK) != 0) {
        fprintf(stderr, "loco: error: %s %s: cannot write in %s: %s\n", what, path, par, strerror(errno));
        rc = 2;
    }
    free(par);
    return rc;
}

int check_out_file(const char *path, const char *what) {
    if (!path[0]) return usage_error("%s: empty path", what);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "loco: error: %s %s is a folder; give a file name\n", what, path);
            return 2;
        }
        if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
            fprintf(stderr, "loco: error: %s %s exists and is not a regular file (a device, FIFO or socket); "
                            "loco replaces only regular files\n", what, path);
            return 2;
        }
        if (S_ISLNK(st.st_mode) && (stat(path, &st) != 0 || !S_ISREG(st.st_mode))) {
            fprintf(stderr, "loco: error: %s %s is a link to something other than a regular file\n", what, path);
            return 2;
        }
    } else if (errno != ENOENT) {
        fprintf(stderr, "loco: error: %s %s: %s\n", what, path, strerror(errno));
        return 2;
    }
    int rc = parent_ok(path, what);
    if (!rc) loco_clean_stale_temps(path);
    return rc;
}

/* 1 if every entry of folder path matches one of patterns (fnmatch); else
 * 0, with the first foreign entry's name in *bad (malloc'd) */
static int only_ours(const char *path, const char *const *patterns, char **bad) {
    DIR *d = opendir(path);
    if (!d) {
        *bad = strdup(strerror(errno));
        return 0;
    }
    struct dirent *e;
    int ok = 1;
    while (ok && (e = readdir(d))) {
        const char *nm = e->d_name;
        if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0) continue;
        int m = 0;
        for (int i = 0; patterns[i] && !m; i++) m = fnmatch(patterns[i], nm, FNM_PERIOD) == 0;
        if (!m && nm[0] == '.' && strstr(nm, LOCO_TEMP_TAG)) m = 1; /* an interrupted write of ours */
        struct stat st;
        if (m && (fstatat(dirfd(d), nm, &st, AT_SYMLINK_NOFOLLOW) != 0 || (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))))
            m = 0;
        if (m && S_ISDIR(st.st_mode) && !strstr(nm, LOCO_TEMP_TAG)) m = 0;
        if (!m) {
            ok = 0;
            *bad = strdup(nm);
        }
    }
    closedir(d);
    return ok;
}

int out_dir_begin(out_dir *o, const char *path, const char *const *patterns) {
    memset(o, 0, sizeof *o);
    if (!path[0]) return usage_error("%s", "--out: empty path");
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "loco: error: --out %s exists and is not a folder\n", path);
            return 2;
        }
        char *bad = NULL;
        if (!only_ours(path, patterns, &bad)) {
            fprintf(stderr,
                    "loco: error: --out %s holds '%s', which this command does not write; loco replaces an output "
                    "folder as a whole, so give a new folder, an empty one, or one an earlier run of this command "
                    "wrote\n", path, bad ? bad : "?");
            free(bad);
            return 2;
        }
        o->existed = 1;
    } else if (errno != ENOENT) {
        fprintf(stderr, "loco: error: --out %s: %s\n", path, strerror(errno));
        return 2;
    }
    int rc = parent_ok(path, "--out");
    if (rc) return rc;
    /* a trailing slash would put the temporary folder inside */
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    o->final = strndup(path, n);
    if (!o->final) return fail(LOCO_E_NOMEM);
    loco_clean_stale_temps(o->final);
    size_t tl = n + 64;
    o->tmp = malloc(tl);
    if (!o->tmp) return fail(LOCO_E_NOMEM);
    const char *slash = strrchr(o->final, '/');
    size_t dl = slash ? (size_t)(slash - o->final + 1) : 0;
    snprintf(o->tmp, tl, "%.*s.%s" LOCO_TEMP_TAG "%ld.XXXXXX", (int)dl, o->final, o->final + dl, (long)getpid());
    if (!mkdtemp(o->tmp)) {
        fprintf(stderr, "loco: error: --out %s: cannot create a temporary folder beside it: %s\n", path,
                strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        return 1;
    }
    chmod(o->tmp, 0755);
    return 0;
}

int out_dir_commit(out_dir *o) {
    /* the files are flushed (loco_write_file_atomic); now the folder */
    int fd = open(o->tmp, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    int r;
    if (o->existed) {
        r = renameat2(AT_FDCWD, o->tmp, AT_FDCWD, o->final, RENAME_EXCHANGE);
        if (r != 0 && (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP)) {
            /* no atomic exchange on this file system: old aside, new in */
            /* ".DIR.loco-tmp.PID.XXXXXX.old": a stale temporary if we die here */
            size_t ol = strlen(o->tmp) + 5;
            char *old = malloc(ol);
            if (!old) return fail(LOCO_E_NOMEM);
            snprintf(old, ol, "%s.old", o->tmp);
            r = rename(o->final, old);
            if (r == 0) {
                r = rename(o->tmp, o->final);
                if (r == 0) loco_remove_tree(old);
                else rename(old, o->final);
            }
            free(old);
            if (r == 0) {
                free(o->tmp);
                o->tmp = NULL;
            }
        }
    } else {
        r = rename(o->tmp, o->final);
        if (r == 0) {
            free(o->tmp);
            o->tmp = NULL;
        }
    }
    if (r != 0) {
        fprintf(stderr, "loco: error: --out %s: cannot move the finished outputs into place: %s\n", o->final,
                strerror(errno));
        return 1;
    }
    /* after an exchange the temporary name holds the old outputs */
    if (o->tmp) loco_remove_tree(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
    char *par = parent_of(o->final);
    if (par) {
        int pf = open(par, O_RDONLY | O_DIRECTORY);
        if (pf >= 0) {
            fsync(pf);
            close(pf);
        }
        free(par);
    }
    return 0;
}

void out_dir_end(out_dir *o) {
    if (o->tmp) loco_remove_tree(o->tmp);
    free(o->tmp);
    free(o->final);
    memset(o, 0, sizeof *o);
}

int check_input_outside(const char *input, const char *out, const char *what) {
    char *ri = realpath(input, NULL), *ro = realpath(out, NULL);
    int rc = 0;
    if (ri && ro) {
        size_t n = strlen(ro);
        if (strncmp(ri, ro, n) == 0 && (ri[n] == '/' || ri[n] == 0)) {
            fprintf(stderr, "loco: error: %s %s is inside --out %s, which this run replaces; copy it elsewhere "
                            "first\n", what, input, out);
            rc = 2;
        }
    }
    free(ri);
    free(ro);
    return rc;
}

int write_file(const char *dir, const char *name, const char *text) {
    char *p = path_join(dir, name);
    loco_status st = p ? loco_write_text_file(p, text) : LOCO_E_NOMEM;
    free(p);
    return st ? fail(st) : 0;
}
