/* cli.h - helpers shared by the command-line program's files (cli.c,
 * cli_parse.c, outputs.c, images.c) and its commands (*_cmd.c), dispatched
 * by main.c. The program uses only the public header include/loco.h. */
#ifndef LOCO_CLI_H
#define LOCO_CLI_H

#include "loco.h"

extern int g_quiet; /* --quiet given */
extern int g_progress_json; /* --progress-json given */

/* ---- progress (progress.c) ------------------------------------------------- */
/* Whether long work should report progress: not --quiet, and stderr is a
 * terminal or --progress-json was given. */
int cli_progress_wanted(void);
/* A loco_progress_fn: the phase, step i/n, elapsed time and ETA (and the
 * subspace angle where the library reports one), as a line rewritten in
 * place on a terminal or as JSON lines with --progress-json. */
void cli_progress(const char *phase, int done, int total, void *user);
/* --preset, --head-channels, --heads, --image-size (global options) */
extern loco_open_params g_open;
/* loco_model_open_with(path, &g_open, m) */
loco_status open_model(const char *path, loco_model **m);

typedef struct args {
    int argc;
    char **argv;
    int i;
} args;

void log_cb(loco_log_level lvl, const char *msg, void *user);
/* prints loco_last_error() and returns the exit code for status s */
int fail(loco_status s);
/* prints "loco: <fmt with arg>" and a hint; returns 2 */
int usage_error(const char *fmt, const char *arg);
/* value of option `name` at a->i, advancing; NULL if a->argv[a->i] is not it */
const char *opt(args *a, const char *name);
/* ---- parsers (cli_parse.c); each returns 1/count on success, 0/-1 else -- */
/* a whole decimal integer in [lo, hi] */
int parse_long(const char *s, long long lo, long long hi, long long *out);
/* a whole finite number */
int parse_float(const char *s, double *out);
/* "a,b,c" -> finite doubles (at most max); returns the count or -1 */
int parse_list(const char *s, double *out, int max);
/* "a,b,c" -> integers in [lo, hi] (lo, hi within int; at most max); returns
 * the count or -1 (a fraction, "1e3" or an out-of-range value is -1) */
int parse_int_list(const char *s, int *out, int max, long long lo, long long hi);

/* ---- outputs (outputs.c) -------------------------------------------------- */
/* dir/name (malloc'd; NULL when out of memory) */
char *path_join(const char *dir, const char *name);
/* An output file can be written: not a folder, device or FIFO, its folder
 * exists and is writable; removes stale temporaries beside it. 0, or the
 * exit code after printing the error naming `what` (e.g. "--out"). */
int check_out_file(const char *path, const char *what);
/* An output folder, written as a temporary folder beside it and swapped in
 * by out_dir_commit (all old or all new; see outputs.c). */
typedef struct out_dir {
    char *final;   /* --out, without trailing slashes */
    char *tmp;     /* where this run writes, NULL once committed */
    int existed;
} out_dir;
/* Checks path (a folder holding only names matching patterns, a
 * NULL-terminated fnmatch list, or absent with a writable parent) and makes
 * the temporary folder. 0 or an exit code (printed). out_dir_end always. */
int out_dir_begin(out_dir *o, const char *path, const char *const *patterns);
int out_dir_commit(out_dir *o);
void out_dir_end(out_dir *o);
/* An input file must not lie inside an output folder this run replaces. */
int check_input_outside(const char *input, const char *out, const char *what);
/* Writes text to dir/name atomically; 0 or 1 (after printing the error). */
int write_file(const char *dir, const char *name, const char *text);

/* the commands, each `loco NAME ...` with a->i at its first argument;
 * return the exit status */
int cmd_info(args *a);     /* model_cmd.c */
int cmd_init(args *a);     /* model_cmd.c */
int cmd_eps(args *a);      /* model_cmd.c */
int cmd_jacobian(args *a); /* model_cmd.c */
int cmd_convert(args *a);  /* model_cmd.c */
int cmd_edit(args *a);
int cmd_apply(args *a);
int cmd_molrg(args *a);
int cmd_dataset(args *a); /* dataset_cmd.c */
int cmd_mask(args *a);    /* dataset_cmd.c */
int cmd_analyze(args *a);
int cmd_train(args *a);   /* train_cmd.c */
int cmd_sample(args *a);
int cmd_generate(args *a);  /* sample_cmd.c */
int cmd_tokenize(args *a); /* text_cmd.c */
int cmd_serve(args *a);    /* serve.c */
/* Writes n images, each [C, H, W] in [-1, 1] (imgs[i]; C <= 4), as one PNG
 * grid with `cols` columns (<= 0: ceil(sqrt(n))), each pixel a zoom x zoom
 * block, atomically. write_grid: the same for contiguous x [n, C, H, W]
 * (sample_cmd.c). */
loco_status write_images(const char *path, const float *const *imgs, int n, int C, int H, int W, int cols, int zoom);
loco_status write_grid(const char *path, const float *x, int n, int C, int H, int W, int cols, int zoom);
/* --zoom: "auto" (stored as 0) or 1..16; returns 1 when valid (images.c).
 * view_zoom: the zoom a picture of n images of H x W gets: the given one, or
 * for auto, enough that a tile is >= 128 pixels (at most 8x) when the picture
 * holds several images (strips, grids), 1 for a single image (which other
 * commands may read back as input). */
int parse_zoom(const char *s, long long *zoom);
int view_zoom(long long zoom, int n, int H, int W);

/* Reads an input image (PNG, or safetensors with x0 [1,C,H,W]) into x0
 * [C,H,W] in [-1,1]; returns 0 or an exit code (edit_cmd.c). */
int load_input(const char *path, const loco_model_info *inf, int drop_alpha, int do_resize, float *x0);

#endif
