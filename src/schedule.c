/* schedule.c - betas and alphas_cumprod. Formulas follow diffusers'
 * DDPMScheduler; the arithmetic follows the LOCO Edit authors' code (numpy):
 * betas and their cumulative product in float64, rounded to float32 at the
 * end. This matches their alphas_cumprod bit for bit (tests/test_schedule.c);
 * torch's float32 cumprod differs by up to 7e-7 relative. */
#include "schedule.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* numpy.linspace(start, end, n) in double precision. */
static void linspace(double start, double end, int n, double *out) {
    for (int i = 0; i < n; i++) out[i] = n == 1 ? start : start + (end - start) * (double)i / (double)(n - 1);
}

loco_status schedule_make(schedule *s, const char *kind, int T, double beta_start, double beta_end) {
    return schedule_make_ex(s, kind, T, beta_start, beta_end, 0);
}

loco_status schedule_make_ex(schedule *s, const char *kind, int T, double beta_start, double beta_end, int zero_snr) {
    memset(s, 0, sizeof *s);
    if (T < 2 || T > 100000) return loco_fail(LOCO_E_UNSUPPORTED, "schedule: num_train_timesteps %d out of range", T);
    double *betas = malloc(sizeof(double) * (size_t)T);
    s->alphas_cumprod = malloc(sizeof(float) * (size_t)T);
    if (!betas || !s->alphas_cumprod) {
        free(betas);
        free(s->alphas_cumprod);
        s->alphas_cumprod = NULL;
        return loco_fail(LOCO_E_NOMEM, "schedule: out of memory");
    }
    if (strcmp(kind, "linear") == 0) {
        linspace(beta_start, beta_end, T, betas);
    } else if (strcmp(kind, "scaled_linear") == 0) {
        linspace(sqrt(beta_start), sqrt(beta_end), T, betas);
        for (int i = 0; i < T; i++) betas[i] = betas[i] * betas[i];
    } else if (strcmp(kind, "squaredcos_cap_v2") == 0) {
        for (int i = 0; i < T; i++) {
            double t1 = (double)i / T, t2 = (double)(i + 1) / T;
            double a1 = cos((t1 + 0.008) / 1.008 * M_PI / 2), a2 = cos((t2 + 0.008) / 1.008 * M_PI / 2);
            double b = 1.0 - (a2 * a2) / (a1 * a1);
            betas[i] = b < 0.999 ? b : 0.999;
        }
    } else {
        free(betas);
        free(s->alphas_cumprod);
        s->alphas_cumprod = NULL;
        return loco_fail(LOCO_E_UNSUPPORTED, "schedule: beta_schedule '%s' is not supported", kind);
    }
    /* betas[] becomes alphas_cumprod in double */
    double acc = 1.0;
    for (int i = 0; i < T; i++) {
        acc *= 1.0 - betas[i];
        betas[i] = acc;
    }
    if (zero_snr) {
        /* Lin et al. 2024, Algorithm 1, on sqrt(alphas_cumprod): subtract
         * the last, scale so the first keeps its value. diffusers turns the
         * result back into betas and multiplies them again; the product of
         * those ratios is this sequence, so it is used as it is (the last
         * is exactly 0, and so is diffusers' after its cumprod). */
        const double r0 = sqrt(betas[0]), rT = sqrt(betas[T - 1]);
        if (!(r0 > rT)) {
            free(betas);
            free(s->alphas_cumprod);
            s->alphas_cumprod = NULL;
            return loco_fail(LOCO_E_UNSUPPORTED, "schedule: cannot rescale to zero terminal SNR: alphas_cumprod does not fall");
        }
        for (int i = 0; i < T; i++) {
            double r = (sqrt(betas[i]) - rT) * (r0 / (r0 - rT));
            betas[i] = r * r;
        }
        betas[T - 1] = 0.0;
    }
    for (int i = 0; i < T; i++) s->alphas_cumprod[i] = (float)betas[i];
    free(betas);
    s->T = T;
    s->steps_offset = 0;
    s->final_abar = 1.0f;
    s->zero_snr = zero_snr ? 1 : 0;
    return LOCO_OK;
}

loco_status schedule_default(schedule *s) { return schedule_make(s, "linear", 1000, SCHEDULE_BETA_START, SCHEDULE_BETA_END); }

loco_status schedule_from_json(schedule *s, const char *path) {
    char *text;
    size_t len;
    loco_status st = loco_read_file(path, &text, &len, 1 << 20);
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return loco_fail(LOCO_E_FORMAT, "%s: not a valid JSON object", path);
    }
    int T = 1000;
    double b0 = SCHEDULE_BETA_START, b1 = SCHEDULE_BETA_END;
    const char *kind = "linear";
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "num_train_timesteps")) && !cJSON_IsNull(v)) {
        /* integral and in range before the cast to int (1e300, inf, NaN) */
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
            !(v->valuedouble >= 2 && v->valuedouble <= 100000)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'num_train_timesteps' must be an integer in [2, 100000]", path);
        }
        T = (int)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "beta_start")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble < 1)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'beta_start' must be a number in (0, 1)", path);
        }
        b0 = v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "beta_end")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble < 1)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'beta_end' must be a number in (0, 1)", path);
        }
        b1 = v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "trained_betas")) && !cJSON_IsNull(v)) {
        cJSON_Delete(j);
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'trained_betas' is not supported", path);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "beta_schedule")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'beta_schedule' must be a string", path);
        }
        kind = v->valuestring;
    }
    pred_type pred = PRED_EPSILON;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "prediction_type")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'prediction_type' must be a string", path);
        }
        if (strcmp(v->valuestring, "epsilon") == 0) pred = PRED_EPSILON;
        else if (strcmp(v->valuestring, "v_prediction") == 0) pred = PRED_V;
        else if (strcmp(v->valuestring, "sample") == 0) pred = PRED_SAMPLE;
        else {
            st = loco_fail(LOCO_E_UNSUPPORTED,
                           "%s: key 'prediction_type' is '%s' (supported: epsilon, v_prediction, sample)", path,
                           v->valuestring);
            cJSON_Delete(j);
            return st;
        }
    }
    /* diffusers' DDIMScheduler: steps_offset and set_alpha_to_one (the
     * alpha after the last sampling step, and before the first inversion
     * step) */
    double offset = 0;
    int alpha_one = 1;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "steps_offset")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
            !(v->valuedouble >= 0 && v->valuedouble <= T - 1)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'steps_offset' must be an integer in [0, %d]", path, T - 1);
        }
        offset = v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "set_alpha_to_one")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'set_alpha_to_one' must be true or false", path);
        }
        alpha_one = cJSON_IsTrue(v);
    }
    int zero_snr = 0;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "rescale_betas_zero_snr")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'rescale_betas_zero_snr' must be true or false", path);
        }
        zero_snr = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "timestep_spacing")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v) || (strcmp(v->valuestring, "leading") != 0 && strcmp(v->valuestring, "trailing") != 0 &&
                                   strcmp(v->valuestring, "linspace") != 0)) {
            cJSON_Delete(j);
            return loco_fail(LOCO_E_FORMAT, "%s: key 'timestep_spacing' must be \"leading\", \"trailing\" or \"linspace\"",
                             path);
        }
    }
    if (zero_snr && pred == PRED_EPSILON) {
        cJSON_Delete(j);
        return loco_fail(LOCO_E_UNSUPPORTED,
                         "%s: key 'rescale_betas_zero_snr' is true with prediction_type 'epsilon': at the last timestep "
                         "alphas_cumprod is 0 and x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) is undefined; a zero "
                         "terminal SNR needs prediction_type 'v_prediction' or 'sample'",
                         path);
    }
    st = schedule_make_ex(s, kind, T, b0, b1, zero_snr);
    if (st) loco_fail_in(st, path);
    else {
        s->pred = pred;
        s->steps_offset = (int)offset;
        s->final_abar = alpha_one ? 1.0f : s->alphas_cumprod[0];
    }
    cJSON_Delete(j);
    return st;
}

void schedule_free(schedule *s) {
    free(s->alphas_cumprod);
    s->alphas_cumprod = NULL;
    s->T = 0;
}

float schedule_abar(const schedule *s, float t) {
    /* compared before the cast: a float past int (1e30, inf) converts with
     * undefined behaviour (x86 gives INT_MIN, an index far before the array) */
    if (!(t >= 0)) return s->alphas_cumprod[0];
    if (!(t < (float)(s->T - 1))) return s->alphas_cumprod[s->T - 1];
    return s->alphas_cumprod[(int)t];
}
