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
    int zero_snr;          /* rescale_betas_zero_snr: alphas_cumprod[T-1]
                              is exactly 0 (default false)        */
} schedule;

/* DDPM's linear betas, the default of schedule_default, of a
 * scheduler_config.json that omits them, and of loco train. */
#define SCHEDULE_BETA_START 1e-4
#define SCHEDULE_BETA_END 0.02

/* Default: linear betas SCHEDULE_BETA_START..SCHEDULE_BETA_END over 1000 steps. */
loco_status schedule_default(schedule *s);
/* From a diffusers scheduler_config.json (path used in messages): betas,
 * prediction_type, steps_offset (an integer in [0, T-1]),
 * set_alpha_to_one (a boolean), rescale_betas_zero_snr (a boolean) and
 * timestep_spacing (checked to be "leading", "trailing" or "linspace";
 * loco's timesteps are chosen by the caller, loco_timesteps). A zero
 * terminal SNR with prediction_type "epsilon" is refused
 * (LOCO_E_UNSUPPORTED): at abar = 0 such a network cannot give x0. */
loco_status schedule_from_json(schedule *s, const char *path);
/* kind: "linear", "scaled_linear", "squaredcos_cap_v2". */
loco_status schedule_make(schedule *s, const char *kind, int T, double beta_start, double beta_end);
/* schedule_make, then, when zero_snr, diffusers' rescale_zero_terminal_snr
 * (Lin et al. 2024, Algorithm 1): sqrt(alphas_cumprod) shifted so that the
 * last is 0 and scaled so that the first is unchanged. diffusers' DDPM and
 * DDIM schedulers keep alphas_cumprod[T-1] = 0 (only its sigma-based
 * schedulers, Euler and DPM-Solver, clamp it to 2^-24), and so does this. */
loco_status schedule_make_ex(schedule *s, const char *kind, int T, double beta_start, double beta_end, int zero_snr);
void schedule_free(schedule *s);
/* alphas_cumprod[floor(t)] with t clamped to [0, T-1]. */
float schedule_abar(const schedule *s, float t);

#endif
