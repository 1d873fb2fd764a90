/* denoiser.h - the one interface between model families and everything else.
 *
 * A family (families/: unet2d, adm, molrg) is a table of functions behind an
 * opaque handle. It computes its network's own prediction y (eps, v or x0:
 * the parameterisation, pred_type in param.h, is the family's to declare and
 * param_out's to apply) and the Jacobian products of y. The model handle
 * (model.c), the linearisation (linearize.c), the pipelines, the analysis and
 * the CLI see only this table; the registry (registry.c) opens a path as the
 * right family.
 *
 * Conditioning: every evaluation takes a `cond` argument (text embeddings for
 * conditional families); unconditional families get NULL and refuse
 * anything else. */
#ifndef LOCO_DENOISER_H
#define LOCO_DENOISER_H

#include "internal.h"
#include "param.h"
#include "schedule.h"

struct graph;

typedef struct denoiser_info {
    const char *family;        /* "UNet2DModel", "ADM", "MoLRG" (static)         */
    int in_ch, out_ch;         /* channels of x and of the prediction y          */
    int height, width;
    int n_blocks;              /* resolution levels (0 where it means nothing)    */
    int64_t n_params;
    double flops;              /* per image, 2 x multiply-adds                    */
    double flops_executed;     /* with the Winograd convolutions at their cost    */
    size_t weight_bytes, activation_bytes; /* activation_bytes: per image, batch 1 */
    /* latent families: the decoded image's channels and size (0: none) */
    int image_ch, image_height, image_width;
    /* the authors' edit settings for this family where they differ from
     * loco_edit_params_init's (0: no opinion) */
    float edit_t, edit_boost_t;
} denoiser_info;

typedef struct denoiser_vtable {
    const char *name;
    /* y [B, out_ch, H, W] = the prediction at x [B, in_ch, H, W], t [B]
     * (checked finite and in range by the caller). tap: NULL or called with
     * named block outputs (graph families). */
    loco_status (*predict)(void *self, int B, const float *x, const float *t, const void *cond, float *y,
                           act_tap_fn tap, void *tap_user);
    /* Records the point (x [in], t): *lin is the family's linearisation,
     * freed with lin_free. */
    loco_status (*linearize)(void *self, const float *x, float t, const void *cond, void **lin);
    /* y at the point, [out] (owned by lin) */
    const float *(*lin_output)(const void *lin);
    /* JY [k, out] = J_y V for V [k, in]; UJ [k, in] = U^T J_y for U [k, out] */
    loco_status (*jvp)(void *lin, int k, const float *V, float *JY);
    loco_status (*vjp)(void *lin, int k, const float *U, float *UJ);
    /* bytes the record holds (k = 0) or the work space of k vectors needs */
    size_t (*lin_bytes)(const void *lin, int k);
    void (*lin_free)(void *lin);
    void (*info)(const void *self, denoiser_info *info);
    /* appends the family's own lines of `loco info` */
    void (*describe)(const void *self, sbuf *b);
    void (*free)(void *self);
    /* graph families: their graph (tests look inside); NULL otherwise */
    struct graph *(*graph_of)(void *self);
    /* Conditional families: the family's conditioning from p (prompts and
     * guidance), *cond freed with cond_free. NULL: unconditional. */
    loco_status (*cond_new)(void *self, const loco_cond_params *p, void **cond);
    void (*cond_free)(void *cond);
    /* Latent families: the decoder from latents to images. decode: img
     * [B, image] of z [B, in]. dec_linearize records the decoder at z; its
     * products: JV [k, image] of V [k, in], UJ [k, in] of U [k, image]. NULL
     * for pixel-space families. */
    loco_status (*decode)(void *self, int B, const float *z, float *img);
    loco_status (*encode)(void *self, int B, const float *img, float *z);
    loco_status (*dec_linearize)(void *self, const float *z, void **lin);
    const float *(*dec_output)(const void *lin);
    loco_status (*dec_jvp)(void *lin, int k, const float *V, float *JV);
    loco_status (*dec_vjp)(void *lin, int k, const float *U, float *UJ);
    void (*dec_free)(void *lin);
} denoiser_vtable;

/* An open family instance. */
typedef struct denoiser {
    const denoiser_vtable *vt;
    void *self;
    char *report;   /* what opening inferred, for the user (or NULL), owned */
} denoiser;

/* ---- the registry (registry.c) ---------------------------------------------- */

/* What opening needs besides the path (loco_open_params, public). */
typedef struct family_entry {
    const char *name;
    /* Opens path (a folder, or a file) as this family: *d and the schedule
     * (noise levels, prediction type). */
    loco_status (*open)(const char *path, const loco_open_params *p, denoiser *d, schedule *sched);
    /* Writes a new model folder with random weights from a config file of
     * this family (text: its contents). */
    loco_status (*init_random)(const char *config_path, const char *text, size_t len, const char *out_dir,
                               uint64_t seed, loco_dtype dtype);
    /* Writes the model at path as a folder of this family's own format
     * (NULL: the generic conversion). */
    loco_status (*convert)(const char *path, const loco_open_params *p, const char *out_dir, loco_dtype dtype);
} family_entry;

/* *fam: the family that opens path. */
loco_status registry_family_of_path(const char *path, const family_entry **fam);
/* *fam: the family whose config file this is (by its "_class_name"). */
loco_status registry_family_of_config(const char *config_path, const char *text, size_t len,
                                      const family_entry **fam);

extern const family_entry family_unet2d, family_adm, family_molrg, family_sd;

#endif
