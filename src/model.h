/* model.h - the loco_model handle (model.c): one family's denoiser behind
 * the interface of denoiser.h, its noise schedule and cached facts; and the
 * internal entry points the linearisation, pipelines and tests use. Nothing
 * here knows a family. */
#ifndef LOCO_MODEL_H
#define LOCO_MODEL_H

#include "denoiser.h"

/* The edit timestep and boost of loco_edit_params_init, which
 * loco_model_get_info reports for families without settings of their own. */
#define MODEL_DEFAULT_T_EDIT 0.6f
#define MODEL_DEFAULT_BOOST_T 0.0f

struct loco_model {
    char *path;          /* what was opened (folder or file), owned        */
    denoiser d;          /* the family instance                            */
    char *report;        /* the family's words on opening, or NULL, owned   */
    schedule sched;      /* alphas_cumprod and the prediction type          */
    denoiser_info info;  /* cached at open                                  */
};

/* A conditioning: the family's object and the model it belongs to. */
struct loco_cond {
    const loco_model *m;
    void *fc;            /* the family's conditioning, owned */
};
/* the family's conditioning of c for m (checked to belong to m), or NULL */
loco_status model_cond_of(const loco_model *m, const loco_cond *c, const void **fc);

/* LOCO_E_NUMERIC naming `what` and the first non-finite element of y[n] */
loco_status model_check_finite(const float *y, size_t n, const char *what);
/* eps with a conditioning (or NULL) and an activation tap (tests compare
 * block outputs). */
loco_status model_eps_tap(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c, float *eps,
                          act_tap_fn tap, void *user);
/* The network's own prediction y [batch, out_ch, H, W] (eps, v or x0 as
 * m->sched.pred says), checked finite: callers that need both eps and x0
 * convert it with param_out at the alpha of their choice. */
loco_status model_predict(loco_model *m, int batch, const float *x, const float *t, const loco_cond *c, float *y);
/* Floats of one image (C*H*W of the input). */
static inline size_t model_image_size(const loco_model *m) {
    return (size_t)m->info.in_ch * m->info.height * m->info.width;
}
/* The graph of a graph family's model (tests look inside); NULL otherwise. */
struct graph *model_graph(loco_model *m);

#endif
