/* internal.h - shared declarations of the library's modules (not public). */
#ifndef LOCO_INTERNAL_H
#define LOCO_INTERNAL_H

#include "loco.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors and logging (common.c) ------------------------------------- */

/* Records a detailed message for loco_last_error(), logs it at ERROR level
 * and returns s, so callers can write `return loco_fail(LOCO_E_IO, "...")`. */
loco_status loco_fail(loco_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void loco_log(loco_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records "where: <the last error message>" and returns s (a file's name in
 * front of a message that lacks it). */
loco_status loco_fail_in(loco_status s, const char *where);
/* Calls fn(phase, done, total, user) when fn is set, with `value` as
 * loco_progress_value() during the call (NaN: none). Returns
 * LOCO_E_CANCELLED (message "<phase>: cancelled") when the callback called
 * loco_progress_cancel, else LOCO_OK: a loop stops on nonzero. */
loco_status loco_progress_report(loco_progress_fn fn, void *user, const char *phase, int done, int total,
                                 double value);

/* malloc that returns NULL for 0 bytes or for sizes past LOCO_MAX_ALLOC. */
#define LOCO_MAX_ALLOC ((size_t)64 << 30)
void *loco_malloc(size_t n);
void *loco_calloc(size_t n, size_t size);
/* a*b*... with overflow detection; returns false on overflow. */
bool loco_mul_ok(size_t a, size_t b, size_t *out);

/* ---- half precision (common.c) ----------------------------------------- */
float loco_f16_to_f32(uint16_t h);
uint16_t loco_f32_to_f16(float f); /* round to nearest even, saturating to inf */
float loco_bf16_to_f32(uint16_t h);
/* n elements of dtype dt at src -> float; false if dt is not convertible */
bool loco_to_f32(loco_dtype dt, const uint8_t *src, size_t n, float *out);

/* ---- deterministic random numbers (common.c) --------------------------- */
typedef struct loco_rng { uint64_t s[4]; } loco_rng;
void loco_rng_seed(loco_rng *r, uint64_t seed);
uint64_t loco_rng_next(loco_rng *r);
double loco_rng_uniform(loco_rng *r);  /* [0, 1) */
double loco_rng_normal(loco_rng *r);   /* standard normal */
/* A training timestep in [0, T-1] (src/train.c): share <= 0 takes one draw,
 * uniform; otherwise two, the first choosing [lo, hi] with probability
 * share, the second the step, uniform in the chosen range. */
int loco_train_timestep(loco_rng *r, int T, double share, int lo, int hi);
/* The training objective (src/train.c) of out against target, [B, C, H, W]:
 * mean((out - target)^2) + w * sum over l = 1..levels of the mean of the
 * squares of (out - target) averaged over 2^l x 2^l blocks (H and W
 * multiples of 2^levels; w = 0 or levels = 0: the plain mean). Writes its
 * gradient with respect to out into cot (caller's, [B*C*H*W]; may be out)
 * and the plain mean squared error into *mse; returns the objective.
 * scratch: the caller's [B*C*H*W] when w > 0 and levels > 0 (else unused,
 * may be NULL). */
double loco_train_loss(const float *out, const float *target, int B, int C, int H, int W, float w, int levels,
                       float *cot, float *scratch, double *mse);

/* ---- files -------------------------------------------------------------- */
/* Reads a whole (small) file; *data is NUL-terminated, caller frees. */
loco_status loco_read_file(const char *path, char **data, size_t *len, size_t max_len);
/* Writes bytes to path via a temporary file and rename(). */
loco_status loco_write_file_atomic(const char *path, const void *data, size_t len);
/* The temporary name for path: ".<base>" LOCO_TEMP_TAG "<pid>.XXXXXX" in
 * path's folder, for mkstemp/mkdtemp (malloc'd; NULL when out of memory). */
char *loco_temp_name(const char *path);
bool loco_file_exists(const char *path);
/* Creates dir and its missing parents (mode 0755); existing ones are fine. */
loco_status loco_mkdir_p(const char *dir);
bool loco_is_dir(const char *path);
/* Is path (following symbolic links) a regular file? LOCO_OK if so;
 * LOCO_E_NOT_FOUND when nothing is there (no message is recorded or logged:
 * the caller says what is missing, or carries on); else LOCO_E_IO naming
 * what it is ("PATH: is a folder, not a file", "is a FIFO (named pipe), not
 * a regular file", "is a symbolic link to nothing"...). */
loco_status loco_check_file(const char *path);
/* Opens a regular file for reading, never blocking (a FIFO, a device or a
 * folder is refused, as loco_check_file says, before it is opened) and
 * re-checked with fstat after the open. *fd: the descriptor, *size: bytes. */
loco_status loco_open_file(const char *path, int *fd, uint64_t *size);

/* ---- threads (threads.c) ------------------------------------------------- */
/* Sets the OpenMP thread count for the next network evaluation of a model
 * of `flops_per_image` floating-point operations per image, unless the
 * program or the environment fixed it: one thread for small models or
 * spinning waits, else the free cores. */
void threads_for_work(double flops_per_image);

/* ---- text building (common.c) ------------------------------------------- */
/* A growing string: sb_printf appends the whole formatted text; oom is set
 * (and later calls do nothing) when memory runs out. s is malloc'd. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;
void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "1.5 MiB" */
void human_bytes(double bytes, char *out, size_t n);

/* ---- activation taps ------------------------------------------------------ */
/* Called after a block of a network produced the named value [B, c, h, w]. */
typedef void (*act_tap_fn)(void *user, const char *name, const float *data, int B, int c, int h, int w);

/* ---- timing ------------------------------------------------------------- */
double loco_now(void); /* monotonic seconds */

/* ---- PyTorch checkpoints (formats/pytorch.c, weights.c, zip.c) ---------- */
/* Opens a PyTorch checkpoint held in memory (borrowed: it must outlive the
 * handle); label names it in messages. Flags: LOCO_PT_NO_CRC skips the CRC
 * checks (for fuzzing past them). */
#define LOCO_PT_NO_CRC 1u
loco_status loco_pt_open_mem(const void *data, size_t len, const char *label, unsigned flags, loco_pt **out);

/* Weights file of a model folder dir; `named` is the MODEL argument (used
 * when it names a weights file). *path is malloc'd. */
loco_status loco_weights_locate(const char *dir, const char *named, char **path);

/* As loco_weights_read_f32, into dst (numel floats, the tensor's element
 * count, else LOCO_E_SHAPE): a safetensors tensor is converted straight from
 * the mapped file, with no buffer in between. */
loco_status loco_weights_read_f32_into(const loco_weights *w, const char *name, float *dst, size_t numel,
                                       int allow_nonfinite);
loco_status tensors_read_f32_into(const loco_tensors *f, const char *name, float *dst, size_t numel,
                                  int allow_nonfinite);

/* Writes a safetensors file (as loco_tensors_write) of F32 tensors stored as
 * dtype (F32 or F16): a finite value that does not fit F16 is an error
 * (LOCO_E_NUMERIC) naming the tensor and the element, and nothing is
 * written. The caller keeps the tensors. */
loco_status loco_tensors_write_as(const char *path, const loco_tensor_ref *tensors, size_t n, loco_dtype dtype,
                                  const char *const *meta, size_t n_meta);

/* A zip archive of stored entries laid out as torch.save lays them: local
 * headers with a data descriptor after the data, data 64-byte aligned by an
 * 'FB' padding extra field, zip64 end records. Flags change the layout for
 * tests: */
#define LOCO_ZIP_PLAIN 1u         /* no zip64 end records                    */
#define LOCO_ZIP_NO_DESCRIPTOR 2u /* CRC and sizes in the local headers      */
#define LOCO_ZIP_ZIP64_EXTRA 4u   /* every central entry uses zip64 extras   */
typedef struct loco_zip_item {
    const char *name;
    const void *data;
    size_t len;
} loco_zip_item;
/* *out (malloc'd) receives *len bytes. */
loco_status loco_zip_build(const loco_zip_item *items, size_t n, unsigned flags, uint8_t **out, size_t *len);
/* The bytes loco_pt_write writes (zip_flags as for loco_zip_build). */
loco_status loco_pt_build(const loco_tensor_ref *tensors, size_t n, unsigned zip_flags, uint8_t **out,
                          size_t *len);

#endif
