/* loco_train.h - the datasets and training sub-API of loco: synthetic
 * part-labelled faces, part masks, idx files and Fashion-MNIST
 * (src/dataset.c), and the trainer (src/train.c). Conventions as in loco.h
 * (status codes, loco_last_error, loco_free); include this header for these
 * functions, loco.h for the rest. */
#ifndef LOCO_TRAIN_H
#define LOCO_TRAIN_H

#include "loco.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* Datasets: synthetic part-labelled faces, part masks, idx files and       */
/* Fashion-MNIST (src/dataset.c)                                            */
/* ======================================================================== */

/* Synthetic cartoon faces, 32x32 RGB, each with a per-pixel part label map.
 * An image is drawn from LOCO_FACES_N_FACTORS factors, each a number in
 * [0, 1]. Most factors are LOCAL: changing one changes only the pixels of one
 * part (eye size, iris colour, gaze, mouth curve/width/opening, hair colour
 * and length, fringe, blush, shirt colour); five are global: skin tone in
 * a narrow range, one of 4 background colours, position (+-0.75 px) and
 * scale (0.97..1.03). loco_faces_sample keeps position and scale at 0.5
 * (centred, scale 1); loco_faces_render honours them. Every pixel is the mean of 4x4
 * subsamples; its label is the part covering most of them (ties go to the
 * higher label). Drawing uses only arithmetic and sqrt, so images are
 * reproducible bit for bit. */
#define LOCO_FACES_SIZE 32
#define LOCO_FACES_N_FACTORS 17
#define LOCO_FACES_N_LABELS 11

/* Labels (left/right = image left/right, i.e. the viewer's side): */
enum {
    LOCO_LABEL_BACKGROUND = 0,
    LOCO_LABEL_SKIN = 1,            /* face and neck                       */
    LOCO_LABEL_HAIR = 2,
    LOCO_LABEL_LEFT_EYE_WHITE = 3,  /* sclera and lid outline              */
    LOCO_LABEL_RIGHT_EYE_WHITE = 4,
    LOCO_LABEL_LEFT_IRIS = 5,       /* iris and pupil                      */
    LOCO_LABEL_RIGHT_IRIS = 6,
    LOCO_LABEL_MOUTH = 7,           /* lips and the open mouth's inside    */
    LOCO_LABEL_NOSE = 8,
    LOCO_LABEL_CHEEKS = 9,          /* both cheek areas (where blush goes) */
    LOCO_LABEL_CLOTHES = 10
};

int loco_faces_n_factors(void);
/* Name of factor i ("eye_size", ...), NULL when out of range. Static. */
const char *loco_faces_factor_name(int i);
/* The part (a name loco_faces_part_labels knows) factor i is local to, or
 * NULL for a global factor or i out of range. Static. */
const char *loco_faces_factor_part(int i);
/* Name of a label ("background", "left_iris", ...), NULL when out of range. */
const char *loco_faces_label_name(int label);

/* Parts: every label name, and groups: left_eye (left_eye_white +
 * left_iris), right_eye, eyes, eye_whites, irises, face (everything but hair,
 * clothes and background), head (face + hair). loco_faces_part_name(i) for
 * i = 0 .. loco_faces_n_parts()-1 lists them (NULL past the end). */
int loco_faces_n_parts(void);
const char *loco_faces_part_name(int i);
/* *label_bits receives bit l set for each label l of `part`. An unknown part
 * is LOCO_E_INVALID_ARGUMENT with a message listing the valid names. */
loco_status loco_faces_part_labels(const char *part, uint32_t *label_bits);

/* The generator's version. 2: offset_x, offset_y and scale are 0.5 (no
 * geometric jitter: it coupled the parts, docs/datasets.md). 1: the first
 * generator, with the jitter (models trained before 2026-12-03). Both draw
 * the same random stream, so the other factors of an image agree. */
#define LOCO_FACES_VERSION 2

/* The factors of image `index` (>= 0) of the dataset with `seed` under
 * generator `version` (1 or 2, else LOCO_E_INVALID_ARGUMENT): each factor
 * uniform in [0, 1), drawn from a generator seeded by (seed, index) alone, so
 * any subset of a dataset can be made in any order; version 2 then fixes the
 * geometry factors at 0.5. factors holds LOCO_FACES_N_FACTORS floats. */
loco_status loco_faces_sample_version(uint64_t seed, int index, int version, float *factors);
/* loco_faces_sample_version at LOCO_FACES_VERSION. */
loco_status loco_faces_sample(uint64_t seed, int index, float *factors);

/* Draws the face of `factors` (each in [0, 1], else LOCO_E_INVALID_ARGUMENT):
 * rgb receives 32*32*3 bytes (rows top to bottom, RGB interleaved), labels
 * (may be NULL) 32*32 bytes. Buffers owned by the caller. */
loco_status loco_faces_render(const float *factors, uint8_t *rgb, uint8_t *labels);

/* loco_faces_sample_version + loco_faces_render; labels and factors may be
 * NULL. loco_faces_generate is version LOCO_FACES_VERSION. */
loco_status loco_faces_generate_version(uint64_t seed, int index, int version, uint8_t *rgb, uint8_t *labels,
                                        float *factors);
loco_status loco_faces_generate(uint64_t seed, int index, uint8_t *rgb, uint8_t *labels, float *factors);

/* A binary mask (1 inside, 0 outside) of the pixels of labels[h*w] that
 * belong to `part`, dilated by `dilate` pixels (0..64) in the 8-neighbourhood
 * (Chebyshev distance <= dilate). Errors: an unknown part
 * (LOCO_E_INVALID_ARGUMENT, listing the valid ones), a value >=
 * LOCO_FACES_N_LABELS in labels (LOCO_E_FORMAT), a part absent from the map
 * (LOCO_E_NOT_FOUND: the mask would be empty). */
loco_status loco_part_mask(const uint8_t *labels, int h, int w, const char *part, int dilate, uint8_t *mask);

/* Reads a label map PNG (8-bit gray, each value a label < LOCO_FACES_N_LABELS,
 * as `loco dataset faces` writes it). Anything else is LOCO_E_FORMAT with a
 * message saying why (channels, or the first bad value and its position).
 * img->data is new memory (loco_free). */
loco_status loco_labels_read_png(const char *path, loco_image *img);

/* An idx file (the MNIST format: magic 0x0000TTNN, N big-endian uint32 dims,
 * then the data), optionally gzip-compressed (told apart by content). Only
 * unsigned-byte data (type 0x08) with 1..4 dimensions is read; every
 * dimension must be >= 1, one item (the product of dims[1..]) at most
 * 2^24 bytes and the whole file at most 2^32 bytes. Truncation, a wrong
 * magic, a corrupt gzip stream and (when the whole file is read) trailing
 * bytes are LOCO_E_FORMAT; memory grows with the data actually read, so a
 * lying header cannot make it allocate more than the file holds. */
typedef struct loco_idx {
    int ndim;
    int64_t dims[4];    /* dims[0]: items read (<= max_items)               */
    int64_t file_items; /* items the header announces                       */
    uint8_t *data;      /* dims[0]*...*dims[ndim-1] bytes, freed with loco_free */
} loco_idx;

/* Reads the first max_items items of path (max_items <= 0: all of them). */
loco_status loco_idx_read(const char *path, int64_t max_items, loco_idx *out);

/* Fashion-MNIST as Debian's dataset-fashion-mnist installs it. */
#define LOCO_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Reads the first max_count (<= 0: all) images of split "train" or "test"
 * (files <split>-images-idx3-ubyte[.gz] and <split>-labels-idx1-ubyte[.gz],
 * "test" being named t10k) from dir (NULL: LOCO_FASHION_MNIST_DIR). The
 * 28x28 images are padded to 32x32 with a 2-pixel border of 0 (-1 in the
 * model range x/127.5 - 1): *images receives *n * 32 * 32 bytes, *labels *n
 * class indices 0..9 (loco_fashion_mnist_class names them); both freed with
 * loco_free. */
loco_status loco_fashion_mnist_read(const char *dir, const char *split, int max_count, uint8_t **images,
                                    uint8_t **labels, int *n);
/* "T-shirt/top", "Trouser", ... for class 0..9; NULL otherwise. */
const char *loco_fashion_mnist_class(int label);

/* ==== end of datasets section ============================================ */

/* ======================================================================== */
/* Training (src/train.c)                                                   */
/* ======================================================================== */

/* Trains a UNet2DModel from random weights (or resumes a run) for eps
 * prediction: each step draws `batch` images from the data, an integer
 * timestep t uniform in [0, T-1] and Gaussian noise eps per image, forms
 * x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps and minimises
 * mean((eps_hat - eps)^2) with AdamW (bias-corrected; decoupled weight decay
 * lr * wd * w), the learning rate ramped linearly over `warmup` steps and,
 * with lr_decay_steps, brought down linearly over the run's last steps. An
 * exponential moving average of the weights is kept, started from the
 * initial weights; at step k (1-based) its decay is min(ema, (1+k)/(10+k)),
 * as diffusers' EMAModel, so short runs do not stay at the initialisation.
 * With t_focus_share, a share of the timesteps is drawn from a range
 * instead (more training where the model needs it).
 * Schedule: linear betas beta_start..beta_end (1e-4..0.02, DDPM's), T = 1000,
 * or squaredcos_cap_v2 (cosine); zero_snr rescales either to a zero
 * terminal SNR (alphas_cumprod[999] = 0, Lin et al. 2024), which only a
 * v_prediction or sample model can use: prediction picks the target (the
 * loss is the mean squared error of the network's output against it).
 * A smaller beta_end leaves more of the image at a given t (at t = 600,
 * sqrt(abar) is 0.16 with 0.02 and 0.40 with 0.01): small images lose their
 * parts to noise at a smaller t than large ones, so a 32x32 model whose
 * mid-range t should mean what it means at 256x256 wants the smaller one.
 *
 * Data: "faces" (loco_faces_generate with data_seed, images 0..data_count-1;
 * "faces-v1": the same with generator version 1),
 * "fashion-mnist" (the train split of LOCO_FASHION_MNIST_DIR, or of
 * fashion_dir, the first data_count images when data_count > 0), or a folder
 * of PNG files, in name order (each the config's sample size; gray or RGB
 * matched to in_channels, alpha dropped; names ending in _labels.png, the
 * label maps `loco dataset faces` writes, are skipped). Pixels map to [-1, 1] as x/127.5 - 1. Images
 * are drawn uniformly with replacement; flip mirrors each drawn image with
 * probability 1/2.
 *
 * Output folder out_dir (created if needed), written at every save_every
 * steps and at the end, each file atomically:
 *   config.json                          the model config (copied)
 *   diffusion_pytorch_model.safetensors  the EMA weights, F32 (what
 *                                        loco_model_open reads)
 *   scheduler/scheduler_config.json      DDPMScheduler, linear (or
 *                                        squaredcos_cap_v2), 1000 steps,
 *                                        beta_start, beta_end,
 *                                        prediction_type; with zero_snr
 *                                        rescale_betas_zero_snr true and
 *                                        timestep_spacing "trailing"
 *   train_state.safetensors              raw weights, Adam moments, EMA,
 *                                        step and generator state
 * Everything is determined by seed (weights init, data order, timesteps,
 * noise); the kernels round the same way whatever the thread count.
 * resume: continue from out_dir/train_state.safetensors up to `steps` steps
 * in all (steps is the total, not the number of new steps); running N steps
 * and then resuming to N + M gives the same files as N + M steps at once.
 * The schedule and the prediction type cannot change on resume
 * (LOCO_E_INVALID_ARGUMENT naming the state file and key). */
/* The network's target, diffusers' prediction_type: with x_t = sqrt(abar)
 * x0 + sqrt(1 - abar) eps, epsilon learns eps, v_prediction learns
 * v = sqrt(abar) eps - sqrt(1 - abar) x0 and sample learns x0. */
typedef enum loco_prediction { LOCO_PRED_EPSILON = 0, LOCO_PRED_V = 1, LOCO_PRED_SAMPLE = 2 } loco_prediction;

typedef struct loco_train_params {
    const char *config_path; /* UNet2DModel config.json                     */
    const char *data;        /* "faces", "fashion-mnist" or a PNG folder    */
    const char *out_dir;
    int steps;               /* total optimiser steps (1000)                */
    int batch;               /* images per step (32)                        */
    float lr;                /* 2e-4                                        */
    float beta1, beta2, adam_eps; /* 0.9, 0.999, 1e-8                       */
    float weight_decay;      /* 0                                           */
    int warmup;              /* linear warmup steps (0)                     */
    int lr_decay_steps;      /* > 0: the learning rate falls linearly over
                                the last lr_decay_steps steps before
                                lr_decay_end, step k taking
                                lr * (end - k + 1) / (lr_decay_steps + 1)
                                (never 0); steps before it are untouched,
                                so a run saved before the decay starts
                                resumes into it exactly (0: constant)       */
    int lr_decay_end;        /* the step the decay ends at (0: steps; set it
                                when steps is a chunk of a longer run)       */
    float ema;               /* EMA decay in [0, 1) (0.999)                 */
    int flip;                /* random horizontal flips (0)                 */
    int winograd;            /* 1: 3x3 convolutions of the forward and dx
                                passes by Winograd (faster; results differ
                                from the default im2col path by rounding,
                                so a run is reproducible only with the same
                                setting) (0)                                 */
    uint64_t seed;           /* 0                                           */
    int save_every;          /* steps between checkpoints; 0: only the end (500) */
    int resume;              /* 0                                           */
    int data_count;          /* faces: dataset size (10000); fashion-mnist:
                                first N images (0: all 60000)               */
    uint64_t data_seed;      /* faces dataset seed (0)                      */
    const char *fashion_dir; /* NULL: LOCO_FASHION_MNIST_DIR                */
    double beta_start, beta_end; /* linear betas, 0 < start < end < 1
                                    (1e-4, 0.02)                            */
    loco_prediction prediction; /* what the network learns to predict
                                   (LOCO_PRED_EPSILON)                      */
    int zero_snr;            /* 1: betas rescaled to zero terminal SNR
                                (diffusers' rescale_betas_zero_snr); needs
                                LOCO_PRED_V or LOCO_PRED_SAMPLE (0)          */
    int cosine;              /* 1: squaredcos_cap_v2 betas (beta_start and
                                beta_end unused) instead of linear (0)       */
    float t_focus_share;     /* > 0: each image's timestep is drawn from
                                [t_focus_lo, t_focus_hi] with this
                                probability and from [0, T-1] otherwise, to
                                train a range of noise levels more; in
                                [0, 1]. Each image then takes two generator
                                draws instead of one (0: uniform, one draw,
                                the runs before this option bit for bit)     */
    int t_focus_lo, t_focus_hi; /* the range, 0 <= lo <= hi <= T-1 (T 1000) */
    float ms_weight;         /* > 0: a multiscale loss (as simple diffusion,
                                Hoogeboom et al. 2023): the objective adds
                                ms_weight times the mean squared error of the
                                output-minus-target averaged over 2x2, 4x4,
                                ... blocks (ms_levels of them), so errors
                                shared by a region (its colour) count more
                                than pixel noise; the loss reported (progress,
                                losses) stays the plain mean squared error
                                (0: off)                                      */
    int ms_levels;           /* 1..: the block sizes 2 .. 2^ms_levels, which
                                must divide the image's height and width (3) */
    /* Called after every step (may be NULL): the step just done (1-based),
     * the total, the batch loss and the images per second since the start
     * of this call. */
    void (*progress)(int step, int total, float loss, double images_per_s, void *user);
    void *user;
    float *losses;           /* NULL, or [steps]: losses[s] = loss of step s
                                (0-based; entries of steps done before a
                                resume are left alone)                       */
} loco_train_params;

/* Fills the defaults above (pointers NULL). */
void loco_train_params_init(loco_train_params *p);

/* Runs the training. Errors: a bad argument (batch < 1, steps < 1, lr <= 0,
 * ema outside [0, 1), betas not 0 < start < end < 1, unknown data) is
 * LOCO_E_INVALID_ARGUMENT; data that do
 * not fit the config (channels, size) LOCO_E_SHAPE; a non-finite loss
 * LOCO_E_NUMERIC; resume with a state of another config or no state file
 * the corresponding open/read error. */
loco_status loco_train(const loco_train_params *p);

#ifdef __cplusplus
}
#endif
#endif /* LOCO_TRAIN_H */
