/* adm.c - placeholder */
#include "denoiser.h"
static loco_status open_adm(const char *path, const loco_open_params *p, denoiser *d, schedule *sched) {
    return loco_fail(LOCO_E_UNSUPPORTED, "%s: guided-diffusion models are not supported yet", path);
}
const family_entry family_adm = {"ADM", open_adm, NULL, NULL};
