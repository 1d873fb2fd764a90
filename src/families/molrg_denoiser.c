/* molrg_denoiser.c - the MoLRG closed-form model as a family behind the
 * denoiser interface: it predicts x0_hat itself (prediction type "sample")
 * and its Jacobian products are the closed forms of molrg.c. */
#include "denoiser.h"
#include "families/molrg.h"

#include <stdlib.h>
#include <string.h>

typedef struct molrg_family {
    molrg *mo;
    const schedule *sched; /* the model's, borrowed */
} molrg_family;

static loco_status predict(void *self, int B, const float *x, const float *t, const void *cond, float *y,
                           act_tap_fn tap, void *tap_user) {
    molrg_family *f = self;
    if (cond) return loco_fail(LOCO_E_UNSUPPORTED, "a MoLRG model takes no conditioning");
    float *ab = malloc(sizeof(float) * (size_t)B);
    if (!ab) return loco_fail(LOCO_E_NOMEM, "out of memory");
    for (int b = 0; b < B; b++) ab[b] = schedule_abar(f->sched, t[b]);
    molrg_x0(f->mo, B, x, ab, y);
    free(ab);
    return LOCO_OK;
}

static loco_status linearize(void *self, const float *x, float t, const void *cond, void **lin) {
    molrg_family *f = self;
    if (cond) return loco_fail(LOCO_E_UNSUPPORTED, "a MoLRG model takes no conditioning");
    return molrg_lin_new(f->mo, x, schedule_abar(f->sched, t), (molrg_lin **)lin);
}

static const float *lin_output(const void *lin) { return molrg_lin_x0(lin); }

static loco_status jvp(void *lin, int k, const float *V, float *JY) {
    molrg_lin_jvp(lin, k, V, JY);
    return LOCO_OK;
}

static loco_status vjp(void *lin, int k, const float *U, float *UJ) {
    molrg_lin_vjp(lin, k, U, UJ);
    return LOCO_OK;
}

static size_t lin_bytes(const void *lin, int k) { return 0; }
static void lin_free(void *lin) { molrg_lin_free(lin); }

static void info(const void *self, denoiser_info *in) {
    const molrg *mo = ((const molrg_family *)self)->mo;
    memset(in, 0, sizeof *in);
    in->family = "MoLRG";
    in->in_ch = in->out_ch = mo->C;
    in->height = mo->H;
    in->width = mo->W;
    in->n_params = (int64_t)mo->K * mo->d * (int64_t)mo->n + mo->K;
    in->flops = 4.0 * mo->K * mo->d * (double)mo->n;
    in->flops_executed = in->flops;
    in->weight_bytes = (size_t)in->n_params * sizeof(float);
    in->activation_bytes = (size_t)(mo->K + 2) * mo->n * sizeof(float);
}

static void describe(const void *self, sbuf *b) {
    const molrg *mo = ((const molrg_family *)self)->mo;
    sb_printf(b, "class: MoLRG closed form, %d Gaussians of rank %d in %dx%dx%d (n = %zu), sigma0 %g\n", mo->K, mo->d,
              mo->C, mo->H, mo->W, mo->n, mo->sigma0);
}

static void family_free(void *self) {
    molrg_family *f = self;
    if (!f) return;
    molrg_free(f->mo);
    free(f);
}

static const denoiser_vtable vtable = {"MoLRG", predict,  linearize,   lin_output, jvp,  vjp, lin_bytes, lin_free,
                                       info,    describe, family_free, NULL,       NULL, NULL,
                                       NULL,    NULL,     NULL,        NULL,       NULL, NULL, NULL};

static loco_status open_molrg(const char *path, const loco_open_params *p, denoiser *d, schedule *sched) {
    molrg_family *f = calloc(1, sizeof *f);
    if (!f) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status s = molrg_load(path, &f->mo);
    if (!s) s = schedule_default(sched);
    if (s) {
        family_free(f);
        return s;
    }
    sched->pred = PRED_SAMPLE; /* MoLRG computes x0_hat in closed form */
    f->sched = sched;
    d->vt = &vtable;
    d->self = f;
    return LOCO_OK;
}

const family_entry family_molrg = {"MoLRG", open_molrg, NULL, NULL};
