/*
 * loco.h - the public API of loco, LOCO Edit for diffusion models in C.
 *
 * Conventions
 *  - Every public symbol starts with loco_ (types) or LOCO_ (constants).
 *  - Handles are opaque; each *_open / *_new has a matching *_free / *_close.
 *  - Functions that can fail return a loco_status. On failure a detailed
 *    message (naming the file, tensor or key) is available from
 *    loco_last_error() on the same thread, and is also sent to the log callback.
 *  - Ownership is stated on every function. "Caller frees with loco_free()"
 *    means the memory came from the library's allocator.
 *  - The library never prints and never exits; it reports only through
 *    return values and the log callback.
 *  - Tensors are float32, C order, batch first: x is [B, C, H, W].
 */
#ifndef LOCO_H
#define LOCO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOCO_VERSION "0.1.0"

/* ------------------------------------------------------------------------ */
/* Status codes and logging                                                 */
/* ------------------------------------------------------------------------ */

typedef enum loco_status {
    LOCO_OK = 0,
    LOCO_E_INVALID_ARGUMENT, /* the caller passed something unusable        */
    LOCO_E_IO,               /* a file could not be opened, read or written */
    LOCO_E_FORMAT,           /* a file is malformed: truncated, bad JSON... */
    LOCO_E_UNSUPPORTED,      /* well-formed but not supported (config, dtype)*/
    LOCO_E_SHAPE,            /* shapes or dtypes disagree                    */
    LOCO_E_NOT_FOUND,        /* a required tensor or key is missing          */
    LOCO_E_NUMERIC,          /* NaN or Inf where finite numbers are needed   */
    LOCO_E_NOMEM,            /* out of memory, or a size beyond the limits   */
    LOCO_E_CANCELLED,        /* a progress callback called loco_progress_cancel */
    LOCO_STATUS_COUNT
} loco_status;

/* A short static description of a status code. Never NULL; not to be freed. */
const char *loco_strerror(loco_status s);

/* The detailed message of the last failing call made on this thread
 * (e.g. "model/diffusion_pytorch_model.safetensors: tensor 'conv_in.weight':
 * shape [32,3,3] but the config needs [32,3,3,3]"). Owned by the library,
 * valid until the next failing call on this thread. Empty string if none. */
const char *loco_last_error(void);

typedef enum loco_log_level {
    LOCO_LOG_ERROR = 0,
    LOCO_LOG_WARN = 1,
    LOCO_LOG_INFO = 2,
    LOCO_LOG_DEBUG = 3
} loco_log_level;

/* Receives every message the library has to say. msg is valid only during
 * the call. */
typedef void (*loco_log_fn)(loco_log_level level, const char *msg, void *user);

/* Installs a process-wide log callback (NULL: messages are dropped, the
 * default). Not thread-safe against concurrent library calls. */
void loco_set_log(loco_log_fn fn, void *user);

/* Threads used by the kernels and BLAS. n > 0 fixes the count; n = 0 (the
 * default) lets the library choose before each network evaluation: one
 * thread for small models (under 1.5 GFLOP per image), every core on an
 * idle machine, and on a busy one the cores other processes leave free
 * (models of 50 GFLOP per image and more keep every core when OpenMP's waits
 * are short, see loco_threads_reexec). OMP_NUM_THREADS, when set, fixes the
 * count too. Results are bit-identical whatever the count. loco_get_threads
 * returns the fixed count, or in the automatic mode the cores this process
 * may use. */
void loco_set_threads(int n);
int loco_get_threads(void);

/* Every file the library writes appears complete or not at all: it is
 * written under a hidden temporary name beside it, ".<name>" LOCO_TEMP_TAG
 * "<pid>.XXXXXX", flushed, then renamed. A process killed while writing
 * leaves that temporary behind; loco_clean_stale_temps(path) removes the
 * ones beside path (files or folders) whose process no longer runs, and
 * returns how many. loco_remove_tree removes a file or a folder tree without
 * following links (0 or -1). */
#define LOCO_TEMP_TAG ".loco-tmp."
/* Writes a NUL-terminated text to path that way. */
loco_status loco_write_text_file(const char *path, const char *text);
int loco_clean_stale_temps(const char *path);
int loco_remove_tree(const char *path);

/* OpenMP (libgomp) reads its wait policy when the program loads; by default
 * an idle thread spins 300,000 times before it sleeps, which costs a busy
 * machine dearly. Call this first thing in main with main's argv: when
 * neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, it sets
 * GOMP_SPINCOUNT=1000 (a short spin: as fast as the long one on an idle
 * machine) and re-executes the program (/proc/self/exe) with the same
 * arguments, so it does not return. Returns 0 when nothing needed doing, -1
 * when the re-execution failed (the program can go on; the library then
 * never uses more threads than there are free cores). */
int loco_threads_reexec(char **argv);

/* n standard normal draws from the library's generator (xoshiro256**)
 * seeded with seed: loco_sample's image i starts from
 * loco_randn(seed * 0x9E3779B97F4A7C15 + i, ...). */
loco_status loco_randn(uint64_t seed, size_t n, float *out);

/* Frees memory the library handed to the caller. NULL is fine. */
void loco_free(void *p);

/* ------------------------------------------------------------------------ */
/* Tensor files (safetensors)                                               */
/* ------------------------------------------------------------------------ */

#define LOCO_MAX_DIMS 8

typedef enum loco_dtype {
    LOCO_DTYPE_F32 = 0,
    LOCO_DTYPE_F16,
    LOCO_DTYPE_BF16,
    LOCO_DTYPE_F64,
    LOCO_DTYPE_U8,
    LOCO_DTYPE_I8,
    LOCO_DTYPE_I32,
    LOCO_DTYPE_I64,
    LOCO_DTYPE_BOOL,
    LOCO_DTYPE_COUNT
} loco_dtype;

/* "F32", "F16", ... as written in safetensors headers. Static string. */
const char *loco_dtype_name(loco_dtype d);
size_t loco_dtype_size(loco_dtype d);

/* An opened safetensors file, memory-mapped read-only. Every header field is
 * validated at open: offsets inside the data, no overlaps, sizes consistent
 * with dtype and shape. */
typedef struct loco_tensors loco_tensors;

/* Opens path. On success *out is a new handle the caller closes with
 * loco_tensors_close(). On failure *out is NULL. */
loco_status loco_tensors_open(const char *path, loco_tensors **out);
void loco_tensors_close(loco_tensors *f);

/* Number of tensors, and the name of the i-th (in header order). The name is
 * owned by the handle. */
size_t loco_tensors_count(const loco_tensors *f);
const char *loco_tensors_name(const loco_tensors *f, size_t i);

/* Shape and dtype of tensor `name`. shape must hold LOCO_MAX_DIMS entries.
 * Returns LOCO_E_NOT_FOUND if absent. Any output pointer may be NULL. */
loco_status loco_tensors_info(const loco_tensors *f, const char *name, loco_dtype *dtype,
                              int *ndim, int64_t shape[LOCO_MAX_DIMS]);

/* Reads tensor `name` converted to float32 (from F32, F16, BF16, F64 or U8).
 * *data is a new array the caller frees with loco_free(). ndim/shape may be
 * NULL. Non-finite values are an error (LOCO_E_NUMERIC) unless allow_nonfinite. */
loco_status loco_tensors_read_f32(const loco_tensors *f, const char *name, float **data,
                                  int *ndim, int64_t shape[LOCO_MAX_DIMS], int allow_nonfinite);

/* Raw bytes of tensor `name` (pointer into the mapping, owned by the handle). */
loco_status loco_tensors_raw(const loco_tensors *f, const char *name, const void **data,
                             size_t *nbytes);

/* Value of a __metadata__ key, or NULL. Owned by the handle. */
const char *loco_tensors_metadata(const loco_tensors *f, const char *key);

/* A tensor to write. data points at ndim-shaped C-order values of dtype. */
typedef struct loco_tensor_ref {
    const char *name;
    loco_dtype dtype;
    int ndim;
    int64_t shape[LOCO_MAX_DIMS];
    const void *data;
} loco_tensor_ref;

/* Writes a safetensors file. meta is n_meta key/value pairs (meta[2i] key,
 * meta[2i+1] value), may be NULL. The file is written to a temporary name in
 * the same folder and renamed into place, so `path` is either the old file
 * or the complete new one. Tensors are written sorted by name. */
loco_status loco_tensors_write(const char *path, const loco_tensor_ref *tensors, size_t n,
                               const char *const *meta, size_t n_meta);

/* ------------------------------------------------------------------------ */
/* Models                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct loco_model loco_model;

/* Opens a model as the right family:
 *  - a diffusers UNet2DModel folder (config.json +
 *    diffusion_pytorch_model.safetensors, or diffusion_pytorch_model.bin, a
 *    PyTorch checkpoint: see loco_model_weights_path; scheduler/
 *    scheduler_config.json is read when present);
 *  - a guided-diffusion (ADM, P2-weighting) folder: config.json with
 *    "_class_name": "ADMUNetModel" and guided-diffusion's create_model flags,
 *    and model.safetensors or model.pt;
 *  - a bare guided-diffusion checkpoint file (.pt or .safetensors, no
 *    config.json beside it): every flag the tensor shapes determine is
 *    inferred; the image size and head layout come from loco_open_params
 *    (loco_model_open_with);
 *  - a MoLRG closed-form model file (loco_molrg_init).
 * `path` may also name the config.json or the weights file inside a folder.
 * On success *out is a new model the caller frees with loco_model_free(). */
loco_status loco_model_open(const char *path, loco_model **out);
void loco_model_free(loco_model *m);

/* What a bare checkpoint does not say about itself. */
typedef struct loco_open_params {
    const char *preset;  /* NULL, or "p2": the published P2-weighting flags
                            (256x256, 128 channels, 1 res block, attention at
                            16, 64 head channels, learn_sigma, scale-shift,
                            resblock_updown)                                 */
    int image_size;      /* 0: from the preset                               */
    int head_channels;   /* num_head_channels; 0: unset                      */
    int heads;           /* num_heads; 0: unset                              */
    int heads_upsample;  /* num_heads_upsample; 0: as heads                  */
} loco_open_params;
void loco_open_params_init(loco_open_params *p);
/* loco_model_open with p (NULL: defaults). The parameters only matter for a
 * bare checkpoint; a folder that says otherwise wins, and a contradiction is
 * an error. */
loco_status loco_model_open_with(const char *path, const loco_open_params *p, loco_model **out);
/* The family's own words on how the model was opened (for a bare checkpoint:
 * what was inferred from the shapes and what came from the parameters), or
 * NULL; owned by the model. */
const char *loco_model_open_report(const loco_model *m);

typedef struct loco_model_info {
    const char *family;            /* "UNet2DModel", "ADM", "MoLRG"        */
    int in_channels, out_channels;
    int height, width;             /* sample_size                          */
    int n_blocks;                  /* len(block_out_channels)              */
    int64_t n_params;
    double flops;                  /* one forward pass, batch 1 (2*MACs),
                                      convolutions counted as direct sums  */
    double flops_executed;         /* the same as the code computes it:
                                      3x3 convolutions by Winograd at 1/4
                                      (oneDNN F(4x4)) or 4/9 (F(2x2)) of
                                      their direct cost (<= flops)         */
    size_t weight_bytes;           /* float32 parameters in memory         */
    size_t activation_bytes;       /* forward arena + scratch at batch 1   */
    int train_timesteps;           /* schedule length (default 1000)       */
    int conditional;               /* 1: takes a prompt (loco_cond_new)    */
    /* The edit settings the model's authors use for this family: t_edit
     * and boost_t (loco_edit_params) where they differ from
     * loco_edit_params_init's, else those defaults (0.6 and 0). ADM (P2):
     * 0.7 and 0.2, as the AFHQ, Flowers and MetFaces scripts. */
    float default_t_edit, default_boost_t;
} loco_model_info;

loco_status loco_model_get_info(const loco_model *m, loco_model_info *info);

/* A human-readable multi-line summary of the architecture (blocks, channels,
 * resolutions, attention heads, parameters, FLOPs, memory). *text is a new
 * string the caller frees with loco_free(). */
loco_status loco_model_describe(const loco_model *m, char **text);

/* eps(x, t): x is [batch, C, H, W]; t[b] is the (fractional) timestep of
 * image b; eps receives [batch, C_out, H, W]. The caller owns all buffers.
 * Non-finite x or t gives LOCO_E_NUMERIC. Not safe to call concurrently on
 * the same model (it reuses its activation arena). */
loco_status loco_model_eps(loco_model *m, int batch, const float *x, const float *t, float *eps);

/* Conditioning of a text-to-image model (Stable Diffusion): the guided eps
 * is eps(uncond) + guidance (eps(prompt) - eps(uncond)) [+ edit_guidance
 * (eps(edit_prompt) - eps(uncond))], uncond being the negative prompt ("" by
 * default), as the diffusers pipeline and the T-LOCO authors compute it. */
typedef struct loco_cond loco_cond;
typedef struct loco_cond_params {
    const char *prompt;           /* required                                */
    const char *negative_prompt;  /* NULL: ""                                */
    float guidance;               /* 7.5; 1 evaluates the prompt alone       */
    const char *edit_prompt;      /* NULL: none                              */
    float edit_guidance;          /* 4.0 (with edit_prompt)                  */
} loco_cond_params;
void loco_cond_params_init(loco_cond_params *p);
/* Encodes the prompts with the model's tokenizer and text encoder. *out is
 * freed with loco_cond_free and must not outlive m. A model that takes no
 * conditioning refuses (LOCO_E_UNSUPPORTED). */
loco_status loco_cond_new(loco_model *m, const loco_cond_params *p, loco_cond **out);
void loco_cond_free(loco_cond *c);
/* loco_model_eps / loco_model_x0_hat / loco_linearize with conditioning
 * (c NULL: as those functions; a text-to-image model needs c). */
loco_status loco_model_eps_cond(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c,
                                float *eps);
loco_status loco_model_x0_hat_cond(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c,
                                   float *x0_hat, float *eps);

/* A latent model's decoder (Stable Diffusion's VAE): img [B, image] from
 * latents z [B, C, H, W] as the pipeline holds them (scaled), in [-1, 1]
 * up to the decoder's overshoot (not clamped). Pixel-space models refuse
 * (LOCO_E_UNSUPPORTED). The image's size: loco_model_image_info. */
loco_status loco_model_decode(loco_model *m, int B, const float *z, float *img);
/* The encoder: latents z [B, C, H, W] (scaled as the pipeline holds them;
 * the posterior mean) of images img [B, image] in [-1, 1]. Pixel-space
 * models refuse (LOCO_E_UNSUPPORTED). */
loco_status loco_model_encode(loco_model *m, int B, const float *img, float *z);
/* The decoded image's channels and size (a pixel-space model: its own). */
void loco_model_image_info(const loco_model *m, int *channels, int *height, int *width);

/* alphas_cumprod of the model's noise schedule: *n entries, owned by the
 * model. */
const float *loco_model_alphas_cumprod(const loco_model *m, int *n);

/* abar at timestep t: alphas_cumprod[floor(t)], t clamped to [0, T-1]. */
float loco_model_abar(const loco_model *m, float t);

/* Posterior mean x0_hat = (x - sqrt(1-abar) eps) / sqrt(abar) with abar at
 * floor(t[b]); also writes eps when eps != NULL. Buffers owned by caller. */
loco_status loco_model_x0_hat(loco_model *m, int batch, const float *x, const float *t,
                              float *x0_hat, float *eps);

/* Writes a MoLRG closed-form model (mixture of K low-rank Gaussians of
 * dimension d in R^(C*H*W), equal weights, orthonormal bases drawn from
 * `seed`, isotropic term sigma0) to the safetensors file path. Such a file
 * opens with loco_model_open() like a checkpoint folder, and every model
 * operation (eps, x0_hat, linearization, sampling, editing) uses its exact
 * closed forms. */
loco_status loco_molrg_init(const char *path, int C, int H, int W, int K, int d, float sigma0, uint64_t seed);

/* Writes a random-initialised checkpoint folder for the UNet2DModel config
 * at config_path: OUT_DIR/config.json and OUT_DIR/diffusion_pytorch_model.
 * safetensors (dtype F32 or F16). Weights follow PyTorch's default
 * initialisation (uniform +-1/sqrt(fan_in); GroupNorm 1 and 0), drawn from a
 * deterministic generator seeded by seed. out_dir is created if needed. */
loco_status loco_model_init_random(const char *config_path, const char *out_dir, uint64_t seed,
                                   loco_dtype dtype);

/* ======================================================================== */
/* PyTorch checkpoints and weights of either format (src/formats/)           */
/* ======================================================================== */

/* A state_dict saved by torch.save since torch 1.6 (.bin, .pt, .pth): a zip
 * archive holding ARCHIVE/data.pkl (a pickle) and each storage's raw
 * little-endian bytes as ARCHIVE/data/<key>. The file is memory-mapped. Every
 * zip entry must be stored (compressed or encrypted entries are refused) and
 * match its CRC-32; zip64 archives (as torch writes them) are read.
 *
 * The pickle is read by a restricted interpreter that never executes
 * anything. It knows the protocol 2-5 opcodes for None, bools, ints, floats,
 * strings, tuples, lists and dicts, and only these globals:
 * collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 * torch._utils._rebuild_parameter and the storage types torch.FloatStorage,
 * HalfStorage, BFloat16Storage, DoubleStorage, LongStorage, IntStorage,
 * CharStorage, ByteStorage and BoolStorage (named by persistent ids
 * ('storage', TYPE, key, location, numel)). Any other global, call or opcode
 * is refused with LOCO_E_UNSUPPORTED and a message naming it. The pickled
 * object must be a dict (or OrderedDict) from names to tensors; a tensor may
 * be any strided view that stays inside its storage, and reading gathers it
 * into C order. The legacy pre-1.6 format is refused (LOCO_E_UNSUPPORTED)
 * with advice to re-save it with torch >= 1.6. */
typedef struct loco_pt loco_pt;

/* Opens path. On success *out is a new handle the caller closes with
 * loco_pt_close(); on failure *out is NULL. */
loco_status loco_pt_open(const char *path, loco_pt **out);
void loco_pt_close(loco_pt *f);

/* Number of tensors and the name of the i-th, in the pickle's order. The name
 * is owned by the handle. */
size_t loco_pt_count(const loco_pt *f);
const char *loco_pt_name(const loco_pt *f, size_t i);

/* As loco_tensors_info / loco_tensors_read_f32 (read_f32 converts F32, F16,
 * BF16, F64, U8 and BOOL). */
loco_status loco_pt_info(const loco_pt *f, const char *name, loco_dtype *dtype, int *ndim,
                         int64_t shape[LOCO_MAX_DIMS]);
loco_status loco_pt_read_f32(const loco_pt *f, const char *name, float **data, int *ndim,
                             int64_t shape[LOCO_MAX_DIMS], int allow_nonfinite);

/* The elements of tensor `name` in its own dtype, C order, contiguous:
 * *data is new memory (freed with loco_free) of *nbytes bytes. */
loco_status loco_pt_read(const loco_pt *f, const char *name, void **data, size_t *nbytes);

/* Writes tensors as torch.save writes a state_dict (torch.load reads it): a
 * zip64 archive "archive/" with a protocol-2 pickle of an OrderedDict of
 * _rebuild_tensor_v2 tensors, one storage per tensor, data 64-byte aligned,
 * in the order given. Names must be unique and non-empty. Written to a
 * temporary file and renamed into place. */
loco_status loco_pt_write(const char *path, const loco_tensor_ref *tensors, size_t n);

/* Weights of either format, behind one interface. */
typedef struct loco_weights loco_weights;

typedef enum loco_weights_format {
    LOCO_WEIGHTS_SAFETENSORS = 0,
    LOCO_WEIGHTS_PYTORCH = 1
} loco_weights_format;

/* Opens a safetensors file or a PyTorch checkpoint, told apart by content (a
 * name ending in .safetensors is always read as safetensors). Errors are those
 * of loco_tensors_open or loco_pt_open. */
loco_status loco_weights_open(const char *path, loco_weights **out);
void loco_weights_close(loco_weights *w);
loco_weights_format loco_weights_get_format(const loco_weights *w);
size_t loco_weights_count(const loco_weights *w);
const char *loco_weights_name(const loco_weights *w, size_t i);
loco_status loco_weights_info(const loco_weights *w, const char *name, loco_dtype *dtype, int *ndim,
                              int64_t shape[LOCO_MAX_DIMS]);
loco_status loco_weights_read_f32(const loco_weights *w, const char *name, float **data, int *ndim,
                                  int64_t shape[LOCO_MAX_DIMS], int allow_nonfinite);
/* As loco_pt_read, for either format. */
loco_status loco_weights_read(const loco_weights *w, const char *name, void **data, size_t *nbytes);

/* The weights file loco_model_open reads for MODEL (a folder, or a file in
 * one): MODEL itself when it names a .bin, .pt or .pth file, else the
 * folder's diffusion_pytorch_model.safetensors, else its
 * diffusion_pytorch_model.bin. *path is new memory (loco_free).
 * LOCO_E_NOT_FOUND names the folder and both file names. */
loco_status loco_model_weights_path(const char *model, char **path);

/* Writes MODEL (a folder as loco_model_open takes, weights in either format)
 * as a diffusers folder OUT_DIR (created if needed):
 * diffusion_pytorch_model.safetensors, a copy of config.json and, when
 * present, of scheduler/scheduler_config.json. dtype LOCO_DTYPE_F32 or
 * LOCO_DTYPE_F16 converts every floating-point tensor to it (a value that
 * does not fit is an error, LOCO_E_NUMERIC); LOCO_DTYPE_COUNT keeps each
 * tensor's dtype. Tensors are not checked against the config here (open the
 * model for that). */
loco_status loco_convert(const char *model, const char *out_dir, loco_dtype dtype);
/* loco_convert for any family: a guided-diffusion checkpoint (a folder, or a
 * bare file opened with p) becomes a folder with config.json (the inferred
 * flags) and model.safetensors, or, when out_dir ends in ".pt", a bare
 * PyTorch state dict as guided-diffusion saves it; a diffusers folder as
 * loco_convert. */
loco_status loco_convert_with(const char *model, const loco_open_params *p, const char *out_dir, loco_dtype dtype);

/* ------------------------------------------------------------------------ */
/* Images and masks                                                         */
/* ------------------------------------------------------------------------ */

/* An 8-bit image, rows top to bottom, channels interleaved: data[(y*W + x)*C + c]. */
typedef struct loco_image {
    int width, height, channels; /* channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    uint8_t *data;               /* owned by whoever filled the struct        */
} loco_image;

/* Reads a PNG of any bit depth and colour type, samples as stored: no gamma,
 * sRGB or ICC conversion (ancillary chunks other than tRNS, such as gAMA,
 * sRGB, iCCP, sBIT and text, are skipped unread). 16-bit samples are
 * reduced to 8 bits by value, v -> round(v * 255 / 65535) (0x8080 -> 128);
 * 1, 2, 4-bit gray is scaled to 8 bits (1-bit 1 -> 255);
 * palettes are expanded to RGB, or RGBA when there is a tRNS chunk; a tRNS
 * chunk on gray or RGB adds an alpha channel (0 where the colour matches).
 * A palette index outside the palette is an error (LOCO_E_FORMAT), as is
 * anything libpng refuses and a file cut before its IEND chunk; every error
 * names the file. img->data is new memory the caller frees with loco_free().
 * At most 16384 x 16384 pixels, files of at most 1 GiB. */
loco_status loco_png_read(const char *path, loco_image *img);

/* Writes img as an 8-bit PNG (1-4 channels), atomically (temporary file,
 * then rename). */
loco_status loco_png_write(const char *path, const loco_image *img);

/* Region-of-interest masks over an h x w image: mask[h*w], 1 inside, 0 outside.
 * rect: rows y0..y1-1, columns x0..x1-1 (half-open, as Python slices; must be
 * inside the image and non-empty). ellipse: centre (cy, cx), radii (ry, rx)
 * in pixels, pixel centres at integer coordinates. png: a PNG of exactly
 * w x h pixels (else LOCO_E_SHAPE), read as loco_png_read reads it but at the
 * file's own bit depth (16-bit samples are not reduced to 8 bits). A pixel is
 * inside when any COLOUR channel (gray, or R, G, B; for a palette image the
 * entry's R, G, B) is nonzero, and, when the PNG has an alpha channel or a
 * tRNS chunk, its alpha is nonzero too: alpha gates, it does not count as
 * colour. So a 16-bit mask of value 1 is inside, black with alpha 255 is
 * outside, white with alpha 0 is outside.
 * The caller owns mask. An empty mask is an error (LOCO_E_INVALID_ARGUMENT). */
loco_status loco_mask_rect(int h, int w, int y0, int y1, int x0, int x1, uint8_t *mask);
loco_status loco_mask_ellipse(int h, int w, double cy, double cx, double ry, double rx, uint8_t *mask);
loco_status loco_mask_png(const char *path, int h, int w, uint8_t *mask);

/* ------------------------------------------------------------------------ */
/* Linearization: J V and U^T J of eps or of the posterior mean x0_hat      */
/* ------------------------------------------------------------------------ */

/* One forward pass at (x, t), batch 1, recorded so that any number of
 * Jacobian products can follow without recomputing it. */
typedef struct loco_lin loco_lin;

typedef enum loco_output {
    LOCO_OUT_EPS = 0,  /* eps(x, t)                                          */
    LOCO_OUT_X0 = 1,   /* x0_hat = (x - sqrt(1-abar) eps) / sqrt(abar)       */
    LOCO_OUT_IMAGE = 2 /* the image x0_hat stands for: a latent model's
                          decoder applied to x0_hat (T-LOCO's function,
                          masks select image pixels); x0_hat itself for a
                          pixel-space model                                 */
} loco_output;

/* Records the forward pass at x ([C, H, W]) and timestep t. The model must
 * outlive the linearization and must not be freed before it; other calls on
 * the model may be made in between (the record has its own memory). *out is a
 * new handle freed with loco_lin_free(). */
loco_status loco_linearize(loco_model *m, const float *x, float t, loco_lin **out);
/* loco_linearize with conditioning (c: see loco_cond_new; borrowed, it must
 * outlive the linearisation). */
loco_status loco_linearize_cond(loco_model *m, const float *x, float t, const loco_cond *c, loco_lin **out);
void loco_lin_free(loco_lin *lin);

/* The function value at the linearization point: eps or x0_hat, [C,H,W],
 * owned by the handle. */
const float *loco_lin_value(const loco_lin *lin, loco_output of);

/* C*H*W of the image LOCO_OUT_IMAGE gives (the output's for pixel-space
 * models), and the entries of mask (over that image; NULL: all) there. */
size_t loco_lin_image_size(const loco_lin *lin);
size_t loco_lin_image_mask_count(const loco_lin *lin, const uint8_t *mask);

/* C*H*W of the input and of the output. */
size_t loco_lin_input_size(const loco_lin *lin);
size_t loco_lin_output_size(const loco_lin *lin);

/* Number of output entries selected by mask (C*H*W bytes, nonzero = in; NULL
 * = every entry). */
size_t loco_lin_mask_count(const loco_lin *lin, const uint8_t *mask);

/* J V for k tangents: V is [k, C, H, W]; JV receives [k, l], the l entries of
 * the output selected by mask in C order (l = C*H*W when mask is NULL).
 * Buffers owned by the caller. */
loco_status loco_lin_jvp(loco_lin *lin, loco_output of, const uint8_t *mask, int k, const float *V, float *JV);

/* U^T J for k cotangents: U is [k, l] on the masked output entries (as for
 * loco_lin_jvp); UJ receives [k, C, H, W]. */
loco_status loco_lin_vjp(loco_lin *lin, loco_output of, const uint8_t *mask, int k, const float *U, float *UJ);

/* Bytes held by the record, and by the tangent/cotangent work space for k
 * vectors (allocated on first use and kept for the largest k seen). */
size_t loco_lin_record_bytes(const loco_lin *lin);
size_t loco_lin_work_bytes(const loco_lin *lin, int k);

/* ------------------------------------------------------------------------ */
/* Sampling and inversion (DDIM, eta 0; the LOCO Edit authors' timesteps)    */
/* ------------------------------------------------------------------------ */

/* Progress of long work: phase name, units done of total. The callback runs
 * on the thread doing the work, after each unit (a DDIM step, a subspace
 * iteration). */
typedef void (*loco_progress_fn)(const char *phase, int done, int total, void *user);

/* Called from inside a progress callback: stops the work. The library
 * function that called the callback frees what it allocated and returns
 * LOCO_E_CANCELLED ("<phase>: cancelled" in loco_last_error; its outputs are
 * then unspecified, a handle it would have made is NULL). Outside a
 * callback it does nothing. Per thread: another thread's work goes on.
 * Every function that takes a loco_progress_fn can be cancelled this way
 * (DDIM inversion and sampling, loco_sample, loco_edit_encode/decode/render,
 * loco_subspace_iteration, loco_edit_prepare). A program that cancels from
 * another thread sets a flag there and calls this in its next callback: the
 * work stops within one unit. */
void loco_progress_cancel(void);
/* Inside a progress callback: the figure the unit just done produced, or
 * NaN when it has none. Subspace iterations ("roi", "null", "constrained",
 * "subspace") give the sine of the largest principal angle between the last
 * two bases (loco_subspace.sin_angle), the convergence measure compared
 * with tol. Outside a callback NaN. */
double loco_progress_value(void);

/* The timestep grid of an n-step schedule over T training steps:
 * grid[i] = linspace(0, 1, n)[i] * (T - 1) in float32 (torch.linspace
 * semantics), i = 0..n-1; sampling walks it downwards, inversion upwards.
 * The network sees these float timesteps; alphas are looked up at floor(t).
 * grid holds n floats (caller-owned). n in [2, T]. */
loco_status loco_ddim_grid(int n, int T, float *grid);

/* DDIM inversion (eta 0) of a batch x [B, C, H, W] in place, from grid index
 * `from` up to grid index `to` (from < to <= n-1), one network evaluation per
 * step. As the authors do, the very first step evaluates the network at
 * t = 1e-6 rather than 0. */
loco_status loco_ddim_invert(loco_model *m, int B, float *x, const float *grid, int from, int to,
                             loco_progress_fn progress, void *user);
/* loco_ddim_invert with a text-to-image model's conditioning (NULL: as
 * loco_ddim_invert). */
loco_status loco_ddim_invert_cond(loco_model *m, const loco_cond *cond, int B, float *x, const float *grid, int from,
                                  int to, loco_progress_fn progress, void *user);

/* DDIM sampling of x [B, C, H, W] in place from grid index `from` down to `to`
 * (from > to >= 0). Steps that start at a timestep <= boost_t use eta 1
 * (stochastic) as the authors' performance_boosting_t; boost_t <= 0 keeps
 * every step deterministic. The noise comes from `seed`, one draw per step
 * shared by every image of the batch (so an image's result does not depend
 * on what else is in the batch; the authors draw per image). */
loco_status loco_ddim_sample(loco_model *m, int B, float *x, const float *grid, int from, int to, float boost_t,
                             uint64_t seed, loco_progress_fn progress, void *user);
/* loco_ddim_sample with a conditioning (NULL: as loco_ddim_sample). */
loco_status loco_ddim_sample_cond(loco_model *m, const loco_cond *cond, int B, float *x, const float *grid, int from,
                                  int to, float boost_t, uint64_t seed, loco_progress_fn progress, void *user);

/* Draws n images from the model: x_T ~ N(0, I), then `steps` DDIM steps
 * down the grid of loco_ddim_grid(steps, T) (eta 0, except that steps
 * starting at a timestep <= boost_t * T are stochastic, eta 1; boost_t 0 =
 * off). Image i's starting noise, and the noise of its stochastic steps
 * (one stream per image, unlike loco_ddim_sample's shared one: images that
 * shared it would be pulled towards each other), depend on (seed, i) only,
 * so the images do not depend on n or batch. Works in batches of `batch`
 * images (>= 1).
 * clip_x0: clamp each step's predicted x0 to [-1, 1] before the update, as
 * diffusers' DDIMScheduler does with clip_sample (its default; eps stays the
 * network's); 0 is plain DDIM as in loco_ddim_sample. x: [n, C, H, W]
 * caller-owned, receives the images (values near [-1, 1], not clamped).
 * progress (may be NULL) gets ("sampling", steps done, steps in all) over
 * all batches. */
loco_status loco_sample(loco_model *m, int n, int steps, float boost_t, uint64_t seed, int batch, int clip_x0,
                        float *x, loco_progress_fn progress, void *user);
/* loco_sample with a text-to-image model's conditioning (NULL: as
 * loco_sample); x receives latents: decode them with loco_model_decode. */
loco_status loco_sample_cond(loco_model *m, const loco_cond *cond, int n, int steps, float boost_t, uint64_t seed,
                             int batch, int clip_x0, float *x, loco_progress_fn progress, void *user);

/* Which timesteps DDIM sampling and inversion walk.
 *  - LOCO_TIMESTEPS_AUTHORS (the default): the LOCO Edit authors' grid of
 *    loco_ddim_grid, `steps` float points (steps - 1 network evaluations);
 *    sampling evaluates the network at the upper point of each step,
 *    inversion at the lower one (1e-6 for 0), alphas at floor(t).
 *  - LOCO_TIMESTEPS_LEADING, LOCO_TIMESTEPS_TRAILING: diffusers'
 *    DDIMScheduler / DDIMInverseScheduler with that timestep_spacing and the
 *    model folder's scheduler_config.json steps_offset and set_alpha_to_one
 *    (defaults 0 and true): `steps` integer timesteps (num_inference_steps,
 *    one network evaluation each), r = T / steps (integer division);
 *    leading: k r + steps_offset, trailing: round(T - k T / steps) - 1
 *    (numpy's round half to even), k = 0..steps-1. A sampling step from t
 *    evaluates the network at t and moves from alphas_cumprod[t] to
 *    alphas_cumprod[t - r] (the final alpha when t - r < 0: 1 with
 *    set_alpha_to_one, else alphas_cumprod[0]); an inversion step to t
 *    evaluates the network at t, on the latent it moves, from the alpha at
 *    t - r (the same rule) to alphas_cumprod[t]. The points are the
 *    timesteps ascending after one more point 0, t[1] - r, where sampling
 *    ends and inversion starts: steps + 1 points. */
typedef enum loco_timesteps {
    LOCO_TIMESTEPS_AUTHORS = 0,
    LOCO_TIMESTEPS_LEADING = 1,
    LOCO_TIMESTEPS_TRAILING = 2,
    LOCO_TIMESTEPS_COUNT
} loco_timesteps;

/* "authors", "leading", "trailing"; NULL for other values. Static. */
const char *loco_timesteps_name(loco_timesteps ts);
/* The value named by one of those words; LOCO_E_INVALID_ARGUMENT (naming
 * the word and the choices) otherwise. */
loco_status loco_timesteps_parse(const char *name, loco_timesteps *ts);

/* Points of a `steps`-step schedule: steps (authors) or steps + 1; 0 for
 * an unknown ts. */
int loco_ddim_points(loco_timesteps ts, int steps);

/* The points' timesteps, ascending, into t[loco_ddim_points(ts, steps)]
 * (caller-owned): loco_ddim_grid's for the authors'; for diffusers' the
 * end point t[1] - r (may be negative) and then the scheduler's timesteps
 * in ascending order (DDIMScheduler.timesteps reversed). Errors
 * (LOCO_E_INVALID_ARGUMENT): steps outside [2, T] (authors) or [1, T]
 * (diffusers'), a timestep past T - 1 (leading with a large steps_offset). */
loco_status loco_ddim_timesteps(const loco_model *m, loco_timesteps ts, int steps, float *t);

/* DDIM sampling of x [B, C, H, W] in place on the schedule (ts, steps),
 * from point `from` down to point `to` (0 <= to < from < points), eta 0
 * except for steps starting at a timestep <= boost_t (eta 1, noise from
 * seed as loco_ddim_sample). With LOCO_TIMESTEPS_AUTHORS this is
 * loco_ddim_sample_cond on loco_ddim_grid(steps, T), bit for bit. cond may
 * be NULL (unconditional models). */
loco_status loco_ddim_sample_ts(loco_model *m, const loco_cond *cond, loco_timesteps ts, int steps, int B, float *x,
                                int from, int to, float boost_t, uint64_t seed, loco_progress_fn progress, void *user);
/* DDIM inversion of x [B, C, H, W] in place on the schedule (ts, steps),
 * from point `from` up to point `to` (0 <= from < to < points). Authors':
 * loco_ddim_invert_cond on loco_ddim_grid(steps, T); diffusers':
 * DDIMInverseScheduler's steps (above). */
loco_status loco_ddim_invert_ts(loco_model *m, const loco_cond *cond, loco_timesteps ts, int steps, int B, float *x,
                                int from, int to, loco_progress_fn progress, void *user);
/* loco_sample_cond on the schedule (ts, steps): the whole schedule from
 * its top point to point 0. With LOCO_TIMESTEPS_AUTHORS it is
 * loco_sample_cond, bit for bit; the starting noise is the same for every
 * ts. */
loco_status loco_sample_ts(loco_model *m, const loco_cond *cond, loco_timesteps ts, int n, int steps, float boost_t,
                           uint64_t seed, int batch, int clip_x0, float *x, loco_progress_fn progress, void *user);

/* The encode/decode halves of an edit, on the schedule `timesteps` says
 * (the authors' by default). */
typedef struct loco_edit_params {
    float t_edit;      /* edit timestep as a fraction of T (0.6): the sampling
                          timestep nearest t_edit * T                        */
    int steps;         /* sampling steps (100)                                */
    int inv_steps;     /* inversion steps (100)                               */
    int invert_full;   /* 1: invert to T and sample back down to the edit step
                          (the authors' round trip); 0: invert only up to it  */
    float boost_t;     /* fraction of T; sampling steps from the timestep
                          nearest boost_t * T downwards are stochastic (eta 1);
                          0 = off                                              */
    uint64_t seed;     /* noise of the stochastic steps                       */
    loco_progress_fn progress;
    void *user;
    const loco_cond *cond; /* a text-to-image model's conditioning (borrowed;
                              the guidance every network call uses), or NULL */
    loco_timesteps timesteps; /* LOCO_TIMESTEPS_AUTHORS (the default). With
                              diffusers' timesteps `steps` and `inv_steps`
                              count network evaluations (points: one more);
                              invert_full inverts all inv_steps steps, then
                              samples from the top of the sampling schedule
                              down to the edit point; invert_full 0 inverts
                              on the sampling schedule's points up to the
                              edit point (inv_steps unused)                 */
} loco_edit_params;

/* Defaults: t_edit 0.6, 100 and 100 steps, invert_full 1, boost off, seed 0,
 * the authors' timesteps. */
void loco_edit_params_init(loco_edit_params *p);

/* The edit timestep (network time) and its index in the sampling grid. */
loco_status loco_edit_timestep(const loco_model *m, const loco_edit_params *p, float *t_value, int *grid_index);

/* x0 [C, H, W] (in [-1, 1]) -> x_t at the edit timestep, written to xt
 * (caller-owned). *nfe (may be NULL) receives the network evaluations. */
loco_status loco_edit_encode(loco_model *m, const loco_edit_params *p, const float *x0, float *xt, int *nfe);
/* The same; xT (caller-owned, may be NULL) also receives the latent at the
 * top of the inversion: x_T when p->invert_full (before sampling back down
 * to the edit timestep), else x_t itself. */
loco_status loco_edit_encode_full(loco_model *m, const loco_edit_params *p, const float *x0, float *xT, float *xt,
                                  int *nfe);

/* The edit's starting point x_t [C, H, W] (caller-owned) at the edit
 * timestep of p, from exactly one of:
 *  - image [image channels, height, width] in [-1, 1] (loco_model_image_info;
 *    a latent model's image is VAE-encoded first, loco_model_encode), then
 *    inverted as loco_edit_encode_full (under p->cond);
 *  - start_latent z_T [C, H, W], sampled down to the edit step on the
 *    sampling grid of p (p->cond; deterministic steps), as `loco generate`'s
 *    latents are sampled.
 * The other is NULL. xT (caller-owned, may be NULL) receives the top: x_T of
 * the inversion, or z_T itself. This is step 1 of loco_edit_prepare, so the
 * same arguments give it the same bytes. *nfe (may be NULL): the network
 * evaluations. Non-finite inputs give LOCO_E_NUMERIC; errors name the phase
 * ("encoding the image: ", "inversion: ", "sampling to the edit step: "). */
loco_status loco_edit_start(loco_model *m, const loco_edit_params *p, const float *image, const float *start_latent,
                            float *xT, float *xt, int *nfe);

/* x [B, C, H, W] at the edit timestep -> images at t = 0, in place. */
loco_status loco_edit_decode(loco_model *m, const loco_edit_params *p, int B, float *x, int *nfe);

/* ------------------------------------------------------------------------ */
/* Local directions: subspace iteration and null-space projection           */
/* ------------------------------------------------------------------------ */

typedef struct loco_subspace_params {
    int rank;            /* r, number of directions                              */
    int min_iter, max_iter;
    double tol;          /* stop when sin(largest principal angle) < tol         */
    const float *init;   /* [rank, n] starting basis, or NULL: random (seed)     */
    uint64_t seed;
    loco_output of;      /* LOCO_OUT_X0 (the paper) or LOCO_OUT_EPS             */
    int oversample;      /* p >= 0 extra vectors iterated along (0: the
                            authors' plain iteration). The block of r + p
                            vectors starts random (after `init`'s r rows when
                            given) and is rotated to its Ritz vectors every
                            step; convergence and the results concern the top
                            r. Each step costs r + p products each way, and
                            the top-r subspace converges like
                            (sigma_{r+p+1} / sigma_r)^2 per step instead of
                            (sigma_{r+1} / sigma_r)^2.                        */
    const float *constrain; /* [constrain_rank, n] orthonormal rows (e.g. the
                            null-space basis of the Jacobian outside the
                            mask), or NULL: iterate on J P with P = I - C^T C,
                            so the directions found are the top singular
                            vectors of the Jacobian among the vectors
                            orthogonal to these rows. (The authors find them
                            without a constraint and project afterwards,
                            loco_project_directions; when a top direction lies
                            mostly in the projected-out span, what remains of
                            it after projection is small and need not be the
                            best local direction.) The caller keeps ownership. */
    int constrain_rank;
    loco_progress_fn progress;
    void *user;
    const char *phase;   /* label passed to progress                            */
} loco_subspace_params;

/* Fills defaults: rank 5, min 10, max 50 iterations, tol 1e-4, x0_hat, no
 * oversampling, no constraint. */
void loco_subspace_params_init(loco_subspace_params *p);

typedef struct loco_subspace {
    int rank;
    size_t n, l;         /* input size C*H*W; masked output entries             */
    float *vT;           /* [rank, n] right singular vectors (orthonormal rows)  */
    float *s;            /* [rank] singular values of the masked Jacobian        */
    float *u;            /* [rank, l] left singular vectors                      */
    int iters;           /* iterations run                                       */
    double *sin_angle;   /* [iters] sin of the largest principal angle between
                            successive bases (history)                          */
    float *s_hist;       /* [iters, rank] singular values after each iteration  */
    int converged;
    int jvp_vectors, vjp_vectors; /* products computed (with the oversampling)   */
    double seconds_jvp, seconds_vjp, seconds_svd;
} loco_subspace;

/* Top-r singular subspace of the Jacobian of x0_hat (or eps) restricted to
 * the output entries selected by mask ([C*H*W], nonzero = in), by subspace
 * iteration: V <- rows of Q^T where (J V^T)^T J = P S Q^T. Each step costs one
 * J V and one U^T J product with r vectors. On success *out owns its arrays;
 * free them with loco_subspace_free(). */
loco_status loco_subspace_iteration(loco_lin *lin, const uint8_t *mask, const loco_subspace_params *p,
                                    loco_subspace *out);
void loco_subspace_free(loco_subspace *s);

/* Singular values of the Jacobian of x0_hat (or eps) at a linearization.
 * When the input has at most max_exact entries the Jacobian is formed
 * column by column (batched J V) and all its singular values are computed
 * from J^T J in double precision (LAPACK dsyevd): exact = 1, err_bound = 0.
 * Otherwise a randomised estimate of the top k (Halko, Martinsson & Tropp
 * 2011): Y = (J J^T)^q J W for Gaussian W with k + 10 columns, Q = orth(Y),
 * singular values of Q^T J. Each estimate s_j satisfies
 * s_j <= sigma_j(J) <= s_j + err_bound with probability >= 1 - 1e-10, where
 * err_bound = 10 sqrt(2/pi) max_i |(I - Q Q^T) J w_i| over 10 fresh Gaussian
 * probes (their Lemma 4.1). */
typedef struct loco_spectrum {
    int n_values;      /* singular values returned, descending            */
    double *sv;        /* [n_values], owned; free with loco_spectrum_free */
    int exact;
    double err_bound;
    int jvp_vectors, vjp_vectors;
} loco_spectrum;

loco_status loco_jacobian_spectrum(loco_lin *lin, loco_output of, size_t max_exact, int k, int power_iters,
                                   uint64_t seed, loco_spectrum *out);
void loco_spectrum_free(loco_spectrum *s);

/* Removes from each of the r rows of dirs [r, n] its component in the span of
 * the orthonormal rows of null_basis [r_null, n] (r_null may be 0), then
 * normalises each row to unit length and flips its sign so that its
 * largest-magnitude entry is positive. A row that vanishes after projection
 * is an error (LOCO_E_NUMERIC). */
loco_status loco_project_directions(int r, size_t n, float *dirs, int r_null, const float *null_basis);

/* Flips the sign of each row of X [r, n] so that its largest-magnitude entry
 * is positive (the authors' canonical sign). */
void loco_canonical_sign(int r, size_t n, float *X);


/* ======================================================================== */
/* Edit recipe: LOCO Edit of one image end to end (src/edit_recipe.c)       */
/* ======================================================================== */

/* What loco_edit_prepare computes, in order (docs/loco-edit.md):
 *  1. x0 -> x_t by DDIM inversion (loco_edit_encode_full; also x_T);
 *  2. one recorded forward pass at (x_t, t) (loco_linearize);
 *  3. the ROI basis: top-`rank` right singular vectors of the Jacobian of
 *     x0_hat (or eps, `of`) restricted to every channel of the masked pixels,
 *     by subspace iteration (loco_subspace_iteration, seed, init_roi),
 *     canonical signs (loco_canonical_sign);
 *  4. when null_rank > 0, the null basis: the same outside the mask
 *     (seed + 1, init_null), canonical signs;
 *  5. the edit directions: LOCO_NULL_PROJECT (the authors') removes from each
 *     ROI vector its component in the null basis, normalises it and fixes
 *     its sign (loco_project_directions; with null_rank 0 this only
 *     normalises); LOCO_NULL_CONSTRAIN instead runs a third iteration inside
 *     the mask on J P, P = I - N^T N (seed + 2, random start; see
 *     loco_subspace_params.constrain), canonical signs.
 * Then x_t + s v is denoised with loco_edit_render. */
typedef enum loco_null_mode {
    LOCO_NULL_PROJECT = 0,   /* project the ROI directions afterwards        */
    LOCO_NULL_CONSTRAIN = 1  /* iterate in the complement of the null basis  */
} loco_null_mode;

typedef struct loco_edit_recipe {
    loco_edit_params edit;   /* the schedule: t_edit, steps, inv_steps,
                                invert_full, boost_t, seed (the noise of
                                stochastic steps). edit.progress and
                                edit.user are not used by loco_edit_prepare
                                (progress below is).                        */
    int rank;                /* r, ROI directions (5)                        */
    int null_rank;           /* size of the null basis outside the mask; 0:
                                none, the directions are the ROI basis
                                (normalised) (5)                             */
    int min_iter, max_iter;  /* of each subspace iteration (10, 50)          */
    double tol;              /* sin of the largest principal angle (1e-4)    */
    int oversample;          /* extra iterated vectors, 0..1000 (0)          */
    uint64_t seed;           /* random starting bases: ROI seed, null
                                seed + 1, constrained seed + 2 (0)           */
    loco_output of;          /* LOCO_OUT_X0 (the paper) or LOCO_OUT_EPS      */
    loco_null_mode null_mode;/* LOCO_NULL_PROJECT                            */
    const float *init_roi;   /* NULL (random), or init_roi_rows >= rank rows
                                of C*H*W floats: the ROI iteration starts
                                from the first rank rows (caller-owned)      */
    int init_roi_rows;
    const float *init_null;  /* the same for the null iteration             */
    int init_null_rows;
    /* Text-to-image (latent) models. edit.cond is the plain guidance every
     * network call uses (required for them). The directions are then in the
     * latent, and the edited function is the decoded x0_hat
     * (LOCO_OUT_IMAGE): the mask selects pixels of the decoded image. */
    const loco_cond *edit_cond; /* text-supervised T-LOCO: the guidance with the
                                   edit prompt; the direction (rank 1) is
                                   J_e^T delta / |.|, J_e the Jacobian under it
                                   and delta its decoded x0 minus the plain one
                                   on the mask. NULL: unsupervised           */
    const float *start_latent;  /* start from this z_T [C, h, w] (sampled down
                                   to the edit step) instead of an image     */
    loco_progress_fn progress; /* every phase: "inversion" and "sampling"
                                (DDIM), "roi", "null", "constrained" (one
                                unit per iteration, of max_iter); may be NULL */
    void *user;
} loco_edit_recipe;

/* Fills the defaults above (pointers NULL, loco_edit_params_init). */
void loco_edit_recipe_init(loco_edit_recipe *p);

/* Checks everything loco_edit_prepare can check before any network
 * evaluation, and computes nothing: arguments not NULL; a model with
 * in_channels == out_channels; the schedule (as loco_edit_timestep); mask
 * ([H, W] of the model's sample size, nonzero = inside) not empty, and not
 * the whole image when null_rank > 0; 1 <= rank <= the masked entries
 * (pixels x channels); 0 <= null_rank <= the entries outside; with
 * LOCO_NULL_CONSTRAIN null_rank >= 1 and rank + null_rank <= C*H*W;
 * 0 <= min_iter <= max_iter (1..100000), tol >= 0, oversample in [0, 1000];
 * init rows >= rank (null_rank) when an init basis is given. Errors are
 * LOCO_E_INVALID_ARGUMENT (LOCO_E_UNSUPPORTED for the model) with a message
 * saying which. */
loco_status loco_edit_recipe_check(const loco_model *m, const loco_edit_recipe *p, const uint8_t *mask);

/* The result of loco_edit_prepare for one image: opaque, freed with
 * loco_edit_directions_free. */
typedef struct loco_edit_directions loco_edit_directions;

/* Runs the recipe above on x0 [C, H, W] (values in [-1, 1], finite) with the
 * ROI mask [H, W] (nonzero = inside, every channel of a pixel alike), after
 * loco_edit_recipe_check. On success *out is a new handle the caller frees
 * with loco_edit_directions_free; on failure *out is NULL and the message
 * names the phase that failed ("inversion: ...", "linearize: ...",
 * "directions inside the mask: ...", "null space outside the mask: ...",
 * "constrained directions inside the mask: ..."; a direction lost to the
 * projection is LOCO_E_NUMERIC). Results are deterministic: the same
 * arguments give the same bytes. The model is used, not kept. */
loco_status loco_edit_prepare(loco_model *m, const loco_edit_recipe *p, const float *x0, const uint8_t *mask,
                              loco_edit_directions **out);
void loco_edit_directions_free(loco_edit_directions *d);

/* Figures of a prepared edit (copied into *info, caller-owned). */
typedef struct loco_edit_info {
    int channels, height, width;
    size_t n;                  /* C*H*W                                      */
    int rank, null_rank;
    loco_null_mode null_mode;
    float t_value;             /* edit timestep (network time)               */
    int grid_index;            /* its index in the sampling grid             */
    size_t mask_pixels;        /* pixels inside the mask                     */
    int nfe_inversion;         /* network evaluations of the inversion       */
    double seconds_inversion, seconds_linearize, seconds_roi, seconds_null, seconds_constrained;
} loco_edit_info;
loco_status loco_edit_directions_info(const loco_edit_directions *d, loco_edit_info *info);

/* Arrays owned by the handle, valid until loco_edit_directions_free:
 * vectors: the edit directions [rank, C*H*W], unit rows, each with its
 *   largest-magnitude entry positive, orthogonal to the null basis (to
 *   rounding) when null_rank > 0;
 * xt: x_t [C, H, W], the point they were found at;
 * xT: the top of the inversion (x_T with edit.invert_full, else x_t). */
const float *loco_edit_directions_vectors(const loco_edit_directions *d);
const float *loco_edit_directions_xt(const loco_edit_directions *d);
const float *loco_edit_directions_xT(const loco_edit_directions *d);

typedef enum loco_edit_basis {
    LOCO_BASIS_ROI = 0,        /* inside the mask (orthonormal rows)         */
    LOCO_BASIS_NULL = 1,       /* outside it, when null_rank > 0             */
    LOCO_BASIS_CONSTRAINED = 2 /* with LOCO_NULL_CONSTRAIN                   */
} loco_edit_basis;
/* A subspace iteration's full result (bases, singular values, history,
 * counts, timings), owned by the handle; NULL when that one was not run. */
const loco_subspace *loco_edit_directions_subspace(const loco_edit_directions *d, loco_edit_basis which);

/* One move of an edit: x += strength * direction. */
typedef struct loco_edit_move {
    const float *direction;    /* [C, H, W], caller-owned (e.g. a row of
                                  loco_edit_directions_vectors)             */
    float strength;            /* finite                                     */
} loco_edit_move;

/* Denoises n_images edits of one x_t [C, H, W] (at the edit timestep of
 * ep) to t = 0. Image i starts from x_t plus its moves, the next
 * moves_per_image[i] entries of moves (0: the reconstruction), added left to
 * right in float: x[e] = x_t[e] + s1 v1[e] + s2 v2[e] ...; moves_per_image
 * NULL means one move per image. n_moves is the length of moves and must
 * equal the moves used. The images go through loco_edit_decode in batches
 * sized to keep activations near 1 GiB: 1 to 16 images, a number fixed by
 * the model (the network's rounding can depend on the batch size, so an
 * image's bytes are reproduced by the same n_images and moves, as `loco
 * apply` reproduces `loco edit`). out: [n_images, C, H, W], caller-owned.
 * *nfe (may be NULL): network evaluations (images x steps). ep->progress
 * gets the sampling progress. Errors are those of loco_edit_decode, without
 * a phase prefix. */
loco_status loco_edit_render(loco_model *m, const loco_edit_params *ep, const float *xt, int n_images,
                             const int *moves_per_image, const loco_edit_move *moves, int n_moves, float *out,
                             int *nfe);

/* ==== end of edit recipe section ========================================= */

/* ------------------------------------------------------------------------ */
/* Tokenizer                                                                */
/* ------------------------------------------------------------------------ */

/* Stable Diffusion's CLIP BPE tokenizer, giving the ids transformers'
 * CLIPTokenizer (the Python one, without ftfy, as diffusers' pipelines run
 * it) gives with padding="max_length", max_length=model_max_length,
 * truncation=True: <|startoftext|>, the prompt's tokens (at most
 * max_length - 2), <|endoftext|>, then the pad token up to max_length.
 * What that includes: added tokens (the special ones, and the pad token:
 * with SD 2.x's "!" a "!" in a prompt is split off as the pad id 0) are cut
 * out of the text first; the rest is cleaned as transformers' BasicTokenizer
 * does (control and format characters dropped, whitespace runs collapsed,
 * spaces put around CJK ideographs, NFC, Python's lower-casing), split by
 * CLIP's pattern ('s 't 're 've 'm 'll 'd, letter runs, single digits, other
 * runs) and each piece byte-level BPE-encoded with vocab.json / merges.txt.
 * Unicode tables are utf8proc's (Unicode 15); transformers uses those of its
 * Python, which can differ for characters added to Unicode since. */
typedef struct loco_tokenizer loco_tokenizer;

/* Opens a diffusers/transformers tokenizer folder (vocab.json, merges.txt,
 * and when present tokenizer_config.json, special_tokens_map.json,
 * added_tokens.json, read as transformers reads them), or a Stable Diffusion
 * pipeline folder (its tokenizer/ is used). Malformed files are refused with
 * a message naming the file and the line, byte or key: a merge naming a
 * token that vocab.json lacks, duplicate tokens, ids or merges, invalid
 * UTF-8 or JSON. model_max_length defaults to 77 when tokenizer_config.json
 * does not give it. On success *out is a new handle the caller frees with
 * loco_tokenizer_free(); on failure *out is NULL. About 20 ms for the
 * real CLIP vocabulary (49408 tokens, 48894 merges). */
loco_status loco_tokenizer_open(const char *dir, loco_tokenizer **out);
void loco_tokenizer_free(loco_tokenizer *t); /* NULL is fine */

/* Ids per prompt: model_max_length (77 for Stable Diffusion). 0 for NULL. */
int loco_tokenizer_max_length(const loco_tokenizer *t);

typedef struct loco_tokenizer_info {
    int max_length;       /* model_max_length                               */
    int vocab_size;       /* entries of vocab.json (49408)                  */
    int n_ids;            /* largest id + 1, added tokens included          */
    int64_t bos_id;       /* <|startoftext|> (49406)                        */
    int64_t eos_id;       /* <|endoftext|> (49407)                          */
    int64_t pad_id;       /* 0 ("!", SD 2.x) or 49407 (SD 1.x)              */
    int64_t unk_id;       /* -1 when the folder sets no unk_token           */
    const char *bos, *eos, *pad, *unk; /* their text (unk may be NULL),
                                          owned by the handle               */
    const char *dir;      /* the tokenizer folder read, owned by the handle */
} loco_tokenizer_info;
loco_status loco_tokenizer_get_info(const loco_tokenizer *t, loco_tokenizer_info *info);

/* The token of an id as vocab.json spells it (byte-level characters, "</w>"
 * ending a word: "photo</w>"), or an added token's text; NULL for an id
 * that names nothing. Owned by the handle. */
const char *loco_tokenizer_token(const loco_tokenizer *t, int64_t id);

/* Tokenizes a NUL-terminated UTF-8 prompt into ids[max_length]
 * (caller-owned). *n_real (may be NULL): ids before the padding, start and
 * end tokens included (2 .. max_length). Prompts that are not UTF-8 are
 * refused with LOCO_E_INVALID_ARGUMENT naming the byte offset; ids are then
 * unspecified. A prompt of any length costs what its first max_length
 * tokens cost, plus a linear check of its bytes. The tokenizer is only read:
 * several threads may tokenize with one handle at once. */
loco_status loco_tokenize(const loco_tokenizer *t, const char *prompt, int64_t *ids, int *n_real);
/* The same for len bytes that may hold NUL bytes (dropped, as CLIPTokenizer
 * drops U+0000). *truncated (may be NULL): 1 when the prompt had more than
 * max_length - 2 tokens and was cut (the pipeline's warning), else 0. */
loco_status loco_tokenize_n(const loco_tokenizer *t, const char *text, size_t len, int64_t *ids, int *n_real,
                            int *truncated);

/* ==== end of tokenizer section ============================================ */

#ifdef __cplusplus
}
#endif
#endif /* LOCO_H */
