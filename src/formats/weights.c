/* formats/weights.c - weights of either format behind one interface
 * (loco_weights, over loco_tensors and loco_pt, told apart by content), and
 * where a model's weights are: loco_weights_locate and
 * loco_model_weights_path. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include "formats/weights.h"
#include "formats/zip.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ======================================================================== */
/* Weights of either format                                                 */
/* ======================================================================== */

struct loco_weights {
    loco_tensors *st;
    loco_pt *pt;
};

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* a MODEL argument naming a PyTorch file is that file; other files in a
 * folder (config.json, vectors.safetensors...) stand for the folder */
static bool names_pytorch_file(const char *p) {
    return ends_with(p, ".bin") || ends_with(p, ".pt") || ends_with(p, ".pth");
}

/* Is path a PyTorch checkpoint rather than safetensors? Judged by its first
 * bytes, else by its name: an empty or unrecognised .bin, .pt or .pth goes to
 * the PyTorch reader, which says it is not a PyTorch zip checkpoint (not the
 * safetensors reader, whose complaint would puzzle). Files that cannot be
 * read go to the reader their name suggests, which says why. */
static bool looks_pytorch(const char *path) {
    if (ends_with(path, ".safetensors")) return false;
    const bool by_name = names_pytorch_file(path);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return by_name; /* never opens a FIFO or device */
    uint8_t b[262];
    ssize_t got = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) got = read(fd, b, sizeof b);
        close(fd);
    }
    if (got >= 9 && b[8] == '{') return false; /* a safetensors JSON header */
    if (zip_starts_archive(b, got >= 0 ? (size_t)got : 0)) return true;
    if (got >= 2 && b[0] == 0x80 && b[1] <= 5) return true;          /* legacy pickle */
    if (got >= 262 && memcmp(b + 257, "ustar", 5) == 0) return true; /* legacy tar */
    return by_name;
}

loco_status loco_weights_open(const char *path, loco_weights **out) {
    if (!path || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_open: NULL argument");
    *out = NULL;
    loco_weights *w = calloc(1, sizeof *w);
    if (!w) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    loco_status s = looks_pytorch(path) ? loco_pt_open(path, &w->pt) : loco_tensors_open(path, &w->st);
    if (s) {
        free(w);
        return s;
    }
    *out = w;
    return LOCO_OK;
}

void loco_weights_close(loco_weights *w) {
    if (!w) return;
    loco_tensors_close(w->st);
    loco_pt_close(w->pt);
    free(w);
}

loco_weights_format loco_weights_get_format(const loco_weights *w) {
    return w && w->pt ? LOCO_WEIGHTS_PYTORCH : LOCO_WEIGHTS_SAFETENSORS;
}

size_t loco_weights_count(const loco_weights *w) {
    return !w ? 0 : w->pt ? loco_pt_count(w->pt) : loco_tensors_count(w->st);
}

const char *loco_weights_name(const loco_weights *w, size_t i) {
    return !w ? NULL : w->pt ? loco_pt_name(w->pt, i) : loco_tensors_name(w->st, i);
}

loco_status loco_weights_info(const loco_weights *w, const char *name, loco_dtype *dtype, int *ndim,
                              int64_t shape[LOCO_MAX_DIMS]) {
    if (!w) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_info: NULL argument");
    return w->pt ? loco_pt_info(w->pt, name, dtype, ndim, shape) : loco_tensors_info(w->st, name, dtype, ndim, shape);
}

loco_status loco_weights_read_f32(const loco_weights *w, const char *name, float **data, int *ndim,
                                  int64_t shape[LOCO_MAX_DIMS], int allow_nonfinite) {
    if (!w) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_read_f32: NULL argument");
    return w->pt ? loco_pt_read_f32(w->pt, name, data, ndim, shape, allow_nonfinite)
                 : loco_tensors_read_f32(w->st, name, data, ndim, shape, allow_nonfinite);
}

loco_status loco_weights_read_f32_into(const loco_weights *w, const char *name, float *dst, size_t numel,
                                       int allow_nonfinite) {
    if (!w || !name || !dst) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_read_f32_into: NULL argument");
    if (!w->pt) return tensors_read_f32_into(w->st, name, dst, numel, allow_nonfinite);
    float *data;
    int nd;
    int64_t shape[LOCO_MAX_DIMS];
    loco_status s = loco_pt_read_f32(w->pt, name, &data, &nd, shape, allow_nonfinite);
    if (s) return s;
    size_t n = 1;
    for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
    if (n != numel) s = loco_fail(LOCO_E_SHAPE, "tensor '%s' has %zu elements, not %zu", name, n, numel);
    else memcpy(dst, data, n * sizeof(float));
    free(data);
    return s;
}

loco_status loco_weights_read(const loco_weights *w, const char *name, void **data, size_t *nbytes) {
    if (!w || !name || !data) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_weights_read: NULL argument");
    if (w->pt) return loco_pt_read(w->pt, name, data, nbytes);
    *data = NULL;
    const void *raw;
    size_t nb;
    loco_status s = loco_tensors_raw(w->st, name, &raw, &nb);
    if (s) return s;
    void *copy = loco_malloc(nb ? nb : 1);
    if (!copy) return loco_fail(LOCO_E_NOMEM, "tensor '%s': out of memory (%zu bytes)", name, nb);
    if (nb) memcpy(copy, raw, nb);
    *data = copy;
    if (nbytes) *nbytes = nb;
    return LOCO_OK;
}

/* ======================================================================== */
/* Model folders                                                            */
/* ======================================================================== */

char *fmt_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* Is something (of any kind, even a dangling symbolic link) at path? */
static bool something_at(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

loco_status loco_weights_locate(const char *dir, const char *named, char **path) {
    *path = NULL;
    /* a named PyTorch file that is not a folder; a FIFO or device there is
     * then refused by name when it is opened */
    if (named && names_pytorch_file(named) && something_at(named) && !loco_is_dir(named)) {
        if (!(*path = strdup(named))) return loco_fail(LOCO_E_NOMEM, "out of memory");
        return LOCO_OK;
    }
    const char *cand[2] = {FMT_WEIGHTS_ST, FMT_WEIGHTS_BIN};
    for (int i = 0; i < 2; i++) {
        char *p = fmt_path_join(dir, cand[i]);
        if (!p) return loco_fail(LOCO_E_NOMEM, "out of memory");
        /* the first name present is the weights: a folder, FIFO or device
         * in its place is an error, not a reason to try the other name */
        loco_status s = loco_check_file(p);
        if (s == LOCO_OK) {
            *path = p;
            return LOCO_OK;
        }
        free(p);
        if (s != LOCO_E_NOT_FOUND) return s;
    }
    return loco_fail(LOCO_E_NOT_FOUND, "%s: no %s (nor %s) in the model folder", dir, FMT_WEIGHTS_ST,
                     FMT_WEIGHTS_BIN);
}

char *fmt_folder_of(const char *path) {
    if (loco_is_dir(path)) return strdup(path);
    const char *sl = strrchr(path, '/');
    if (!sl) return strdup(".");
    if (sl == path) return strdup("/");
    return strndup(path, (size_t)(sl - path));
}

loco_status loco_model_weights_path(const char *model, char **path) {
    if (!model || !path) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_model_weights_path: NULL argument");
    *path = NULL;
    struct stat st;
    if (stat(model, &st) != 0) return loco_fail(LOCO_E_NOT_FOUND, "%s: no such file or folder", model);
    char *dir = fmt_folder_of(model);
    if (!dir) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status s = loco_weights_locate(dir, model, path);
    free(dir);
    return s;
}
