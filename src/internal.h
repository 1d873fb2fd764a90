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

/* ---- deterministic random numbers (common.c) --------------------------- */
typedef struct loco_rng { uint64_t s[4]; } loco_rng;
void loco_rng_seed(loco_rng *r, uint64_t seed);
uint64_t loco_rng_next(loco_rng *r);
double loco_rng_uniform(loco_rng *r);  /* [0, 1) */
double loco_rng_normal(loco_rng *r);   /* standard normal */

/* ---- files -------------------------------------------------------------- */
/* Reads a whole (small) file; *data is NUL-terminated, caller frees. */
loco_status loco_read_file(const char *path, char **data, size_t *len, size_t max_len);
/* Writes bytes to path via a temporary file and rename(). */
loco_status loco_write_file_atomic(const char *path, const void *data, size_t len);
bool loco_file_exists(const char *path);
bool loco_is_dir(const char *path);

/* ---- timing ------------------------------------------------------------- */
double loco_now(void); /* monotonic seconds */

#endif
