/* model.h - the loco_model handle and internal entry points other modules
 * (linearization, pipelines, tests) use. */
#ifndef LOCO_MODEL_H
#define LOCO_MODEL_H

#include "molrg.h"
#include "schedule.h"
#include "unet.h"

struct loco_model {
    char *path;        /* model folder, owned                              */
    unet net;          /* graph + parameters                               */
    schedule sched;    /* alphas_cumprod                                   */
    float *arena;      /* activation arena, grown to the largest batch     */
    size_t arena_bytes;
    float *scratch;    /* [net.scratch_floats]                             */
    molrg *mo;         /* non-NULL: a MoLRG closed-form model; net holds only
                          its sizes (cfg.in_ch/out_ch/height/width)        */
};

loco_status model_open_config(const char *cfg_path, unet_config *cfg);
loco_status model_reserve_arena(loco_model *m, int batch);
/* LOCO_E_NUMERIC naming `what` and the first non-finite element of y[n] */
loco_status model_check_finite(const float *y, size_t n, const char *what);
/* eps with an activation tap (tests compare block outputs). */
loco_status model_eps_tap(loco_model *m, int batch, const float *x, const float *t, float *eps, unet_tap_fn tap,
                          void *user);

#endif
