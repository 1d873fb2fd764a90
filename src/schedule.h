/* schedule.h - noise schedules (betas -> alphas_cumprod) as diffusers'
 * DDPMScheduler/DDIMScheduler compute them in float32. */
#ifndef LOCO_SCHEDULE_H
#define LOCO_SCHEDULE_H

#include "internal.h"
#include "param.h"

typedef struct schedule {
    int T;                 /* num_train_timesteps                 */
    float *alphas_cumprod; /* [T], owned                          */
    pred_type pred;        /* prediction_type (default epsilon)   */
    /* diffusers' DDIMScheduler settings, used by the "leading" and
     * "trailing" timesteps (loco_timesteps); the authors' grid ignores them */
    int steps_offset;      /* steps_offset (default 0)            */
    float final_abar;      /* set_alpha_to_one ? 1 : alphas_cumprod[0]
                              (default set_alpha_to_one true: 1)  */
} schedule;

/* DDPM's linear betas, the default of schedule_default, of a
 * scheduler_config.json that omits them, and of loco train. */
#define SCHEDULE_BETA_START 1e-4
#define SCHEDULE_BETA_END 0.02

/* Default: linear betas SCHEDULE_BETA_START..SCHEDULE_BETA_END over 1000 steps. */
loco_status schedule_default(schedule *s);
/* From a diffusers scheduler_config.json (path used in messages): betas,
 * prediction_type, steps_offset (an integer in [0, T-1]) and
 * set_alpha_to_one (a boolean). */
loco_status schedule_from_json(schedule *s, const char *path);
/* kind: "linear", "scaled_linear", "squaredcos_cap_v2". */
loco_status schedule_make(schedule *s, const char *kind, int T, double beta_start, double beta_end);
void schedule_free(schedule *s);
/* alphas_cumprod[floor(t)] with t clamped to [0, T-1]. */
float schedule_abar(const schedule *s, float t);

#endif
