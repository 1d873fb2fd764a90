/* linearize.c - the public linearisation (loco_lin) over any family: the
 * family records the point and computes J_y V and U^T J_y of its prediction
 * y (denoiser.h); this file turns them into products of eps or x0_hat and
 * handles masks, staging and checks.
 *
 * eps and x0_hat are linear in (x, y) (param.h), so J_out V = param_out(V,
 * J_y V) and U^T J_out = param_out(U, U^T J_y) with the same coefficients. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct loco_lin {
    loco_model *m;          /* borrowed                                        */
    void *flin;             /* the family's linearisation                      */
    float t, abar;
    size_t n_in, n_out;     /* C*H*W of input and output                       */
    float *x, *eps, *x0;    /* [n_in], [n_out], [n_out]                        */
    float *buf;             /* [k * max(n_in, n_out)] staging                  */
    size_t buf_floats;
    /* LOCO_OUT_IMAGE of a latent family: the decoder recorded at x0_hat
     * (made on first use); n_img floats per image */
    void *dlin;
    size_t n_img;
    float *ibuf;            /* [k * n_img] staging                             */
    size_t ibuf_floats;
};

void loco_lin_free(loco_lin *L) {
    if (!L) return;
    if (L->flin) L->m->d.vt->lin_free(L->flin);
    if (L->dlin) L->m->d.vt->dec_free(L->dlin);
    free(L->ibuf);
    free(L->x);
    free(L->eps);
    free(L->x0);
    free(L->buf);
    free(L);
}

loco_status loco_linearize(loco_model *m, const float *x, float t, loco_lin **out) {
    return loco_linearize_cond(m, x, t, NULL, out);
}

loco_status loco_linearize_cond(loco_model *m, const float *x, float t, const loco_cond *c, loco_lin **out) {
    if (!m || !x || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_linearize: NULL argument");
    *out = NULL;
    const void *fc;
    loco_status s = model_cond_of(m, c, &fc);
    if (s) return s;
    if (!isfinite(t) || t < 0) return loco_fail(LOCO_E_NUMERIC, "loco_linearize: t = %g is not a finite timestep", t);
    if (t > (float)(m->sched.T - 1))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_linearize: t = %g is outside the model's timesteps [0, %d]",
                         (double)t, m->sched.T - 1);
    const size_t n_in = model_image_size(m), n_out = (size_t)m->info.out_ch * m->info.height * m->info.width;
    for (size_t i = 0; i < n_in; i++)
        if (!isfinite(x[i])) return loco_fail(LOCO_E_NUMERIC, "loco_linearize: x element %zu is not finite", i);
    loco_lin *L = calloc(1, sizeof *L);
    if (!L) return loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
    L->m = m;
    L->t = t;
    L->abar = schedule_abar(&m->sched, t);
    L->n_in = n_in;
    L->n_out = n_out;
    L->n_img = m->d.vt->dec_linearize
                   ? (size_t)m->info.image_ch * m->info.image_height * m->info.image_width
                   : n_out;
    L->x = malloc(n_in * sizeof(float));
    L->eps = malloc(n_out * sizeof(float));
    L->x0 = malloc(n_out * sizeof(float));
    if (!L->x || !L->eps || !L->x0) {
        loco_lin_free(L);
        return loco_fail(LOCO_E_NOMEM, "linearize: out of memory");
    }
    memcpy(L->x, x, n_in * sizeof(float));
    threads_for_work(m->info.flops);
    s = m->d.vt->linearize(m->d.self, x, t, fc, &L->flin);
    if (s) {
        L->flin = NULL;
        loco_lin_free(L);
        return s;
    }
    /* the network's prediction, then eps and x0_hat from it (param.h) */
    const float *y = m->d.vt->lin_output(L->flin);
    const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    for (size_t i = 0; i < n_out; i++) {
        L->eps[i] = i < n_in ? param_out(m->sched.pred, LOCO_OUT_EPS, sa, s1, x[i], y[i]) : y[i];
        L->x0[i] = i < n_in ? param_out(m->sched.pred, LOCO_OUT_X0, sa, s1, x[i], y[i]) : 0.0f;
    }
    if ((s = model_check_finite(L->eps, n_out, "linearize: the model output (eps)")) ||
        (s = model_check_finite(L->x0, n_out, "linearize: x0_hat"))) {
        loco_lin_free(L);
        return s;
    }
    *out = L;
    return LOCO_OK;
}

/* the decoder's linearisation at x0_hat (latent families), made once */
static loco_status need_decoder(loco_lin *L) {
    if (L->dlin || !L->m->d.vt->dec_linearize) return LOCO_OK;
    loco_status s = L->m->d.vt->dec_linearize(L->m->d.self, L->x0, &L->dlin);
    if (s) L->dlin = NULL;
    return s;
}

const float *loco_lin_value(const loco_lin *L, loco_output of) {
    if (!L) return NULL;
    if (of == LOCO_OUT_IMAGE) {
        if (!L->m->d.vt->dec_linearize) return L->x0;
        if (need_decoder((loco_lin *)L)) return NULL;
        return L->m->d.vt->dec_output(L->dlin);
    }
    return of == LOCO_OUT_X0 ? L->x0 : L->eps;
}

size_t loco_lin_image_size(const loco_lin *L) { return L ? L->n_img : 0; }

size_t loco_lin_image_mask_count(const loco_lin *L, const uint8_t *mask) {
    if (!L) return 0;
    if (!mask) return L->n_img;
    size_t c = 0;
    for (size_t i = 0; i < L->n_img; i++) c += mask[i] != 0;
    return c;
}

size_t loco_lin_input_size(const loco_lin *L) { return L ? L->n_in : 0; }
size_t loco_lin_output_size(const loco_lin *L) { return L ? L->n_out : 0; }

size_t loco_lin_mask_count(const loco_lin *L, const uint8_t *mask) {
    if (!L) return 0;
    if (!mask) return L->n_out;
    size_t c = 0;
    for (size_t i = 0; i < L->n_out; i++) c += mask[i] != 0;
    return c;
}

size_t loco_lin_record_bytes(const loco_lin *L) {
    if (!L) return 0;
    return L->m->d.vt->lin_bytes(L->flin, 0) + (L->n_in + 2 * L->n_out) * sizeof(float);
}

size_t loco_lin_work_bytes(const loco_lin *L, int k) {
    if (!L || k < 1) return 0;
    size_t nmax = L->n_in > L->n_out ? L->n_in : L->n_out;
    return L->m->d.vt->lin_bytes(L->flin, k) + (size_t)k * nmax * sizeof(float);
}

static loco_status reserve(loco_lin *L, int k) {
    size_t nbuf, nmax = L->n_in > L->n_out ? L->n_in : L->n_out;
    if (!loco_mul_ok(nmax, (size_t)k, &nbuf)) return loco_fail(LOCO_E_NOMEM, "k = %d vectors: work space overflows", k);
    if (nbuf > L->buf_floats) {
        free(L->buf);
        L->buf_floats = 0;
        if (!(L->buf = loco_malloc(nbuf * sizeof(float))))
            return loco_fail(LOCO_E_NOMEM, "k = %d vectors: out of memory", k);
        L->buf_floats = nbuf;
    }
    return LOCO_OK;
}

static loco_status check_args(const loco_lin *L, loco_output of, int k, const void *a, const void *b) {
    if (!L || !a || !b) return loco_fail(LOCO_E_INVALID_ARGUMENT, "NULL argument");
    if (k < 1 || k > 65536) return loco_fail(LOCO_E_INVALID_ARGUMENT, "k = %d vectors is out of range [1, 65536]", k);
    if (of != LOCO_OUT_EPS && of != LOCO_OUT_X0 && of != LOCO_OUT_IMAGE)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "unknown output %d", of);
    if (of != LOCO_OUT_EPS && L->n_in != L->n_out)
        return loco_fail(LOCO_E_UNSUPPORTED, "x0_hat needs as many output as input channels");
    return LOCO_OK;
}

static loco_status reserve_img(loco_lin *L, int k) {
    size_t need;
    if (!loco_mul_ok(L->n_img, (size_t)k, &need)) return loco_fail(LOCO_E_NOMEM, "k = %d vectors: overflow", k);
    if (need <= L->ibuf_floats) return LOCO_OK;
    free(L->ibuf);
    L->ibuf_floats = 0;
    if (!(L->ibuf = loco_malloc(need * sizeof(float)))) return loco_fail(LOCO_E_NOMEM, "k = %d vectors: out of memory", k);
    L->ibuf_floats = need;
    return LOCO_OK;
}

/* J V of the decoded x0_hat: the decoder's J at x0_hat times J_x0 V */
static loco_status image_jvp(loco_lin *L, const uint8_t *mask, int k, const float *V, float *JV) {
    loco_status s;
    if ((s = need_decoder(L)) || (s = reserve_img(L, k))) return s;
    float *jx = loco_malloc(sizeof(float) * (size_t)k * L->n_out);
    if (!jx) return loco_fail(LOCO_E_NOMEM, "out of memory");
    s = loco_lin_jvp(L, LOCO_OUT_X0, NULL, k, V, jx);
    if (!s) s = L->m->d.vt->dec_jvp(L->dlin, k, jx, L->ibuf);
    free(jx);
    if (s) return s;
    const size_t l = loco_lin_image_mask_count(L, mask);
    for (int b = 0; b < k; b++) {
        size_t j = 0;
        const float *e = L->ibuf + (size_t)b * L->n_img;
        for (size_t i = 0; i < L->n_img; i++)
            if (!mask || mask[i]) JV[(size_t)b * l + j++] = e[i];
    }
    return model_check_finite(JV, (size_t)k * l, "J V (decoded image)");
}

/* U^T J of the decoded x0_hat: (U^T J_dec) J_x0 */
static loco_status image_vjp(loco_lin *L, const uint8_t *mask, int k, const float *U, float *UJ) {
    loco_status s;
    if ((s = need_decoder(L)) || (s = reserve_img(L, k))) return s;
    const size_t l = loco_lin_image_mask_count(L, mask);
    for (size_t i = 0; i < l * (size_t)k; i++)
        if (!isfinite(U[i])) return loco_fail(LOCO_E_NUMERIC, "U^T J: cotangent element %zu is not finite", i);
    for (int b = 0; b < k; b++) {
        size_t j = 0;
        float *fb = L->ibuf + (size_t)b * L->n_img;
        for (size_t i = 0; i < L->n_img; i++) fb[i] = (!mask || mask[i]) ? U[(size_t)b * l + j++] : 0.0f;
    }
    float *ul = loco_malloc(sizeof(float) * (size_t)k * L->n_out);
    if (!ul) return loco_fail(LOCO_E_NOMEM, "out of memory");
    s = L->m->d.vt->dec_vjp(L->dlin, k, L->ibuf, ul);
    if (!s) s = loco_lin_vjp(L, LOCO_OUT_X0, NULL, k, ul, UJ);
    free(ul);
    return s;
}

loco_status loco_lin_jvp(loco_lin *L, loco_output of, const uint8_t *mask, int k, const float *V, float *JV) {
    loco_status s = check_args(L, of, k, V, JV);
    if (s || (s = reserve(L, k))) return s;
    if (of == LOCO_OUT_IMAGE) {
        if (L->m->d.vt->dec_linearize) return image_jvp(L, mask, k, V, JV);
        of = LOCO_OUT_X0;
    }
    const size_t nin = L->n_in, nout = L->n_out;
    for (size_t i = 0; i < nin * (size_t)k; i++)
        if (!isfinite(V[i])) return loco_fail(LOCO_E_NUMERIC, "J V: tangent element %zu is not finite", i);
    threads_for_work(L->m->info.flops);
    if ((s = L->m->d.vt->jvp(L->flin, k, V, L->buf))) return s; /* J_y V, [k, nout] */
    const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    const size_t l = mask ? loco_lin_mask_count(L, mask) : nout;
    for (int b = 0; b < k; b++) {
        const float *e = L->buf + (size_t)b * nout;
        const float *v = V + (size_t)b * nin;
        size_t j = 0;
        float *o = JV + (size_t)b * l;
        for (size_t i = 0; i < nout; i++) {
            if (mask && !mask[i]) continue;
            o[j++] = param_out(L->m->sched.pred, of, sa, s1, v[i], e[i]);
        }
    }
    return model_check_finite(JV, (size_t)k * l, "J V");
}

loco_status loco_lin_vjp(loco_lin *L, loco_output of, const uint8_t *mask, int k, const float *U, float *UJ) {
    loco_status s = check_args(L, of, k, U, UJ);
    if (s || (s = reserve(L, k))) return s;
    if (of == LOCO_OUT_IMAGE) {
        if (L->m->d.vt->dec_linearize) return image_vjp(L, mask, k, U, UJ);
        of = LOCO_OUT_X0;
    }
    const size_t nin = L->n_in, nout = L->n_out;
    const size_t l = mask ? loco_lin_mask_count(L, mask) : nout;
    for (size_t i = 0; i < l * (size_t)k; i++)
        if (!isfinite(U[i])) return loco_fail(LOCO_E_NUMERIC, "U^T J: cotangent element %zu is not finite", i);
    /* embed U into the full output: buf [k, nout] */
    float *full = L->buf;
    for (int b = 0; b < k; b++) {
        const float *ub = U + (size_t)b * l;
        float *fb = full + (size_t)b * nout;
        size_t j = 0;
        for (size_t i = 0; i < nout; i++) fb[i] = (!mask || mask[i]) ? ub[j++] : 0.0f;
    }
    threads_for_work(L->m->info.flops);
    if ((s = L->m->d.vt->vjp(L->flin, k, full, UJ))) return s; /* U^T J_y, [k, nin] */
    const float sa = sqrtf(L->abar), s1 = sqrtf(1.0f - L->abar);
    param_apply(L->m->sched.pred, of, sa, s1, nin * (size_t)k, full, UJ, UJ);
    return model_check_finite(UJ, nin * (size_t)k, "U^T J");
}
