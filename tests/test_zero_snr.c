/* test_zero_snr.c - zero terminal SNR (diffusers' rescale_betas_zero_snr,
 * Lin et al. 2024 Algorithm 1) and v/sample prediction at abar = 0: the
 * rescaled schedule against independently computed values, the
 * parameterisation's round trips, the scheduler config's keys, DDIM from
 * pure noise with a v model, and the refusal of an epsilon model with a
 * zero terminal SNR. */
#include "testutil.h"
#include "tmpdir.h"

#include <sys/stat.h>
#include <unistd.h>
#include "model.h"
#include "param.h"
#include "schedule.h"

/* Reference values, made once with /usr/bin/python3 and numpy in float64:
 *   b = numpy.linspace(1e-4, 0.02, 1000); a = numpy.cumprod(1 - b)
 *   s = numpy.sqrt(a); s = (s - s[-1]) * s[0] / (s[0] - s[-1]); ab = s**2
 * and, for the cosine schedule, the same on the squaredcos_cap_v2 betas
 * min(1 - f((i+1)/T) / f(i/T), 0.999), f(t) = cos((t + 0.008) / 1.008 pi/2)^2.
 * diffusers' own float32 path (torch linspace/cumprod, rescale, betas back
 * from the ratios, cumprod again) gives 0.07524624 at 500 and 4.213212e-09
 * at 998: within 1e-6 and 2e-5 relative of these. */
#define REF_LIN_250 0.5188605367916812
#define REF_LIN_500 0.0752462157043267
#define REF_LIN_998 4.213262465088072e-09
#define REF_DIFFUSERS_F32_500 0.07524624
#define REF_DIFFUSERS_F32_998 4.213212e-09
#define REF_COS_500 0.4922645385316654

static double rel(double a, double b) { return fabs(a - b) / fabs(b); }

static void test_rescaled_schedule(void **state) {
    (void)state;
    schedule s0, s;
    CHECK_OK(schedule_make(&s0, "linear", 1000, 1e-4, 0.02));
    CHECK_OK(schedule_make_ex(&s, "linear", 1000, 1e-4, 0.02, 1));
    printf("  linear: abar[0] %.9g (unrescaled %.9g), abar[250] %.9g, abar[500] %.9g, abar[998] %.6g, abar[999] %g\n",
           s.alphas_cumprod[0], s0.alphas_cumprod[0], s.alphas_cumprod[250], s.alphas_cumprod[500],
           s.alphas_cumprod[998], s.alphas_cumprod[999]);
    assert_true(s.zero_snr == 1 && s0.zero_snr == 0);
    assert_true(s.alphas_cumprod[0] == s0.alphas_cumprod[0]); /* the first is unchanged */
    assert_true(s.alphas_cumprod[999] == 0.0f);                /* the last is exactly 0 */
    assert_true(s0.alphas_cumprod[999] > 0.0f);
    assert_true(rel(s.alphas_cumprod[250], REF_LIN_250) < 1e-7);
    assert_true(rel(s.alphas_cumprod[500], REF_LIN_500) < 1e-7);
    assert_true(rel(s.alphas_cumprod[998], REF_LIN_998) < 1e-7);
    assert_true(rel(s.alphas_cumprod[500], REF_DIFFUSERS_F32_500) < 1e-6);
    assert_true(rel(s.alphas_cumprod[998], REF_DIFFUSERS_F32_998) < 2e-5);
    for (int i = 1; i < 1000; i++) assert_true(s.alphas_cumprod[i] < s.alphas_cumprod[i - 1]);
    /* Algorithm 1 is linear in sqrt(abar): the rescaled square roots are an
     * affine map of the original ones */
    const double r0 = sqrt((double)s0.alphas_cumprod[0]), rT = sqrt((double)s0.alphas_cumprod[999]);
    for (int i = 0; i < 1000; i += 111) {
        double want = (sqrt((double)s0.alphas_cumprod[i]) - rT) * r0 / (r0 - rT);
        assert_true(fabs(sqrt((double)s.alphas_cumprod[i]) - want) < 1e-6);
    }
    schedule_free(&s);
    schedule_free(&s0);
    CHECK_OK(schedule_make_ex(&s, "squaredcos_cap_v2", 1000, 1e-4, 0.02, 1));
    CHECK_OK(schedule_make(&s0, "squaredcos_cap_v2", 1000, 1e-4, 0.02));
    printf("  cosine: abar[500] %.9g (ref %.9g), abar[999] %g\n", s.alphas_cumprod[500], REF_COS_500,
           s.alphas_cumprod[999]);
    assert_true(s.alphas_cumprod[0] == s0.alphas_cumprod[0]);
    assert_true(s.alphas_cumprod[999] == 0.0f);
    assert_true(rel(s.alphas_cumprod[500], REF_COS_500) < 1e-7);
    schedule_free(&s);
    schedule_free(&s0);
    /* the default is untouched by the new code path */
    CHECK_OK(schedule_make_ex(&s, "linear", 1000, 1e-4, 0.02, 0));
    CHECK_OK(schedule_make(&s0, "linear", 1000, 1e-4, 0.02));
    assert_memory_equal(s.alphas_cumprod, s0.alphas_cumprod, sizeof(float) * 1000);
    schedule_free(&s);
    schedule_free(&s0);
}

/* x = sa x0 + s1 eps, v = sa eps - s1 x0: every parameterisation gives x0
 * and eps back, at abar = 0 (v: x0 = -v, eps = x) as elsewhere */
static void test_param_round_trips(void **state) {
    (void)state;
    const float abars[5] = {0.0f, 4.2e-9f, 0.075f, 0.5f, 0.9999f};
    const float x0s[3] = {0.7f, -1.0f, 0.05f}, epss[3] = {-1.3f, 0.4f, 2.2f};
    for (int a = 0; a < 5; a++)
        for (int k = 0; k < 3; k++) {
            const float ab = abars[a], sa = sqrtf(ab), s1 = sqrtf(1.0f - ab), x0 = x0s[k], e = epss[k];
            const float x = sa * x0 + s1 * e, v = sa * e - s1 * x0;
            assert_true(fabsf(param_out(PRED_V, LOCO_OUT_X0, sa, s1, x, v) - x0) < 1e-5f);
            assert_true(fabsf(param_out(PRED_V, LOCO_OUT_EPS, sa, s1, x, v) - e) < 1e-5f);
            assert_true(fabsf(param_out(PRED_SAMPLE, LOCO_OUT_EPS, sa, s1, x, x0) - e) < 1e-5f);
            assert_true(param_out(PRED_SAMPLE, LOCO_OUT_X0, sa, s1, x, x0) == x0);
            if (ab > 0.01f) assert_true(fabsf(param_out(PRED_EPSILON, LOCO_OUT_X0, sa, s1, x, e) - x0) < 1e-4f);
            assert_true(param_out(PRED_EPSILON, LOCO_OUT_EPS, sa, s1, x, e) == e);
        }
    /* the trainer's targets map back to x0 and eps */
    for (int a = 0; a < 5; a++)
        for (int k = 0; k < 3; k++) {
            const float ab = abars[a], sa = sqrtf(ab), s1 = sqrtf(1.0f - ab), x0 = x0s[k], e = epss[k];
            const float x = sa * x0 + s1 * e;
            assert_true(param_target(PRED_V, sa, s1, x0, e) == sa * e - s1 * x0);
            assert_true(param_target(PRED_EPSILON, sa, s1, x0, e) == e);
            assert_true(param_target(PRED_SAMPLE, sa, s1, x0, e) == x0);
            for (int q = 0; q < 3; q++) {
                const pred_type pt = (pred_type)q;
                if (pt == PRED_EPSILON && ab < 0.01f) continue; /* x0 of eps needs sa well above 0 */
                const float y = param_target(pt, sa, s1, x0, e);
                assert_true(fabsf(param_out(pt, LOCO_OUT_X0, sa, s1, x, y) - x0) < 1e-4f);
                assert_true(fabsf(param_out(pt, LOCO_OUT_EPS, sa, s1, x, y) - e) < 1e-4f);
            }
        }
    /* v at abar = 0 is -x0, at abar = 1 eps */
    assert_true(param_target(PRED_V, 0.0f, 1.0f, 0.25f, 2.0f) == -0.25f);
    assert_true(param_target(PRED_V, 1.0f, 0.0f, 0.25f, 2.0f) == 2.0f);
    /* exactly at abar = 0 */
    assert_true(param_out(PRED_V, LOCO_OUT_X0, 0.0f, 1.0f, 0.3f, 0.8f) == -0.8f);
    assert_true(param_out(PRED_V, LOCO_OUT_EPS, 0.0f, 1.0f, 0.3f, 0.8f) == 0.3f);
    assert_true(param_out(PRED_SAMPLE, LOCO_OUT_EPS, 0.0f, 1.0f, 0.3f, 0.8f) == 0.3f);
}

static void write_text(const char *path, const char *text) { write_raw(path, text, strlen(text)); }

/* scheduler_config.json keys: rescale_betas_zero_snr (boolean),
 * timestep_spacing (a known word), and epsilon + zero SNR refused */
static void test_config_keys(void **state) {
    (void)state;
    schedule s;
    const char *p = tpath("sched.json");
    write_text(p, "{\"prediction_type\": \"v_prediction\", \"rescale_betas_zero_snr\": true, "
                  "\"timestep_spacing\": \"trailing\"}");
    CHECK_OK(schedule_from_json(&s, p));
    assert_true(s.pred == PRED_V && s.zero_snr == 1 && s.alphas_cumprod[999] == 0.0f);
    assert_true(rel(s.alphas_cumprod[500], REF_LIN_500) < 1e-7);
    schedule_free(&s);
    write_text(p, "{\"prediction_type\": \"sample\", \"rescale_betas_zero_snr\": true}");
    CHECK_OK(schedule_from_json(&s, p));
    assert_true(s.pred == PRED_SAMPLE && s.alphas_cumprod[999] == 0.0f);
    schedule_free(&s);
    write_text(p, "{\"prediction_type\": \"v_prediction\", \"rescale_betas_zero_snr\": false}");
    CHECK_OK(schedule_from_json(&s, p));
    assert_true(s.zero_snr == 0 && s.alphas_cumprod[999] > 0.0f);
    schedule_free(&s);
    write_text(p, "{\"prediction_type\": \"epsilon\", \"rescale_betas_zero_snr\": true}");
    expect_error(schedule_from_json(&s, p), LOCO_E_UNSUPPORTED, "rescale_betas_zero_snr", "sched.json");
    assert_null(s.alphas_cumprod);
    write_text(p, "{\"rescale_betas_zero_snr\": true}"); /* epsilon by default */
    expect_error(schedule_from_json(&s, p), LOCO_E_UNSUPPORTED, "rescale_betas_zero_snr", "epsilon");
    write_text(p, "{\"prediction_type\": \"v_prediction\", \"rescale_betas_zero_snr\": \"yes\"}");
    expect_error(schedule_from_json(&s, p), LOCO_E_FORMAT, "rescale_betas_zero_snr", "true or false");
    write_text(p, "{\"timestep_spacing\": \"sideways\"}");
    expect_error(schedule_from_json(&s, p), LOCO_E_FORMAT, "timestep_spacing", "sched.json");
    write_text(p, "{\"timestep_spacing\": 3}");
    expect_error(schedule_from_json(&s, p), LOCO_E_FORMAT, "timestep_spacing", NULL);
    write_text(p, "{\"timestep_spacing\": \"leading\"}");
    CHECK_OK(schedule_from_json(&s, p));
    schedule_free(&s);
}

/* g_dir/name: the unet-small weights with a scheduler_config.json of
 * prediction_type pred, rescale_betas_zero_snr zsnr */
static const char *make_model(const char *name, const char *pred, int zsnr) {
    const char *out = tpath(name);
    static char dir[8][300];
    static int k = 0;
    char *d = dir[k++ % 8];
    snprintf(d, sizeof dir[0], "%s", out);
    assert_int_equal(mkdir(d, 0755), 0);
    char a[1200], b[1200];
    const char *files[2] = {"config.json", "diffusion_pytorch_model.safetensors"};
    char *src = realpath(fixture_path("unet-small"), NULL);
    assert_non_null(src);
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", d, files[i]);
        assert_int_equal(symlink(a, b), 0);
    }
    free(src);
    snprintf(b, sizeof b, "%s/scheduler", d);
    assert_int_equal(mkdir(b, 0755), 0);
    snprintf(b, sizeof b, "%s/scheduler/scheduler_config.json", d);
    snprintf(a, sizeof a,
             "{\"_class_name\": \"DDPMScheduler\", \"num_train_timesteps\": 1000, \"prediction_type\": \"%s\", "
             "\"rescale_betas_zero_snr\": %s, \"timestep_spacing\": \"trailing\"}\n",
             pred, zsnr ? "true" : "false");
    write_text(b, a);
    return d;
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* A v model with zero terminal SNR: x0_hat = -y and eps = x at t = 999
 * (the network's output y read from the same weights as epsilon), its
 * Jacobian -J_y, the first DDIM step from pure noise by hand, and whole
 * samples finite on the authors' and the trailing timesteps, both of which
 * start at t = 999 where abar = 0. An epsilon model with the same schedule
 * does not open. */
static void test_v_model_from_pure_noise(void **state) {
    (void)state;
    loco_model *me, *mv, *ms, *mbad = NULL;
    CHECK_OK(loco_model_open(make_model("eps", "epsilon", 0), &me));
    CHECK_OK(loco_model_open(make_model("v", "v_prediction", 1), &mv));
    CHECK_OK(loco_model_open(make_model("x0", "sample", 1), &ms));
    expect_error(loco_model_open(make_model("bad", "epsilon", 1), &mbad), LOCO_E_UNSUPPORTED,
                 "rescale_betas_zero_snr", "scheduler_config.json");
    assert_null(mbad);
    loco_model_info inf;
    CHECK_OK(loco_model_get_info(mv, &inf));
    const size_t n = (size_t)inf.in_channels * inf.height * inf.width;
    const int k = 2;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *x0 = malloc(sizeof(float) * n),
          *e = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n * k), *V = malloc(sizeof(float) * n * k),
          *Jy = malloc(sizeof(float) * n * k), *J = malloc(sizeof(float) * n * k),
          *xs = malloc(sizeof(float) * n * 2);
    if (!x || !y || !x0 || !e || !ref || !V || !Jy || !J || !xs) fail_msg("out of memory");
    loco_rng r;
    loco_rng_seed(&r, 11);
    for (size_t i = 0; i < n; i++) x[i] = (float)loco_rng_normal(&r);
    for (size_t i = 0; i < n * k; i++) V[i] = (float)loco_rng_normal(&r);
    const float T1 = 999.0f;
    assert_true(loco_model_abar(mv, T1) == 0.0f);
    CHECK_OK(loco_model_eps(me, 1, x, &T1, y)); /* the network's output */
    CHECK_OK(loco_model_x0_hat(mv, 1, x, &T1, x0, e));
    for (size_t i = 0; i < n; i++) {
        assert_true(x0[i] == -y[i]);
        assert_true(e[i] == x[i]);
    }
    /* the Jacobian of x0_hat at abar = 0: -J_y */
    loco_lin *Le, *Lv;
    CHECK_OK(loco_linearize(me, x, T1, &Le));
    CHECK_OK(loco_linearize(mv, x, T1, &Lv));
    CHECK_OK(loco_lin_jvp(Le, LOCO_OUT_EPS, NULL, k, V, Jy));
    CHECK_OK(loco_lin_jvp(Lv, LOCO_OUT_X0, NULL, k, V, J));
    for (size_t i = 0; i < n * k; i++) ref[i] = -Jy[i];
    CHECK_CLOSE("v model at abar 0: J_x0 V = -J_y V", J, ref, n * k, 1e-6);
    CHECK_OK(loco_lin_vjp(Le, LOCO_OUT_EPS, NULL, k, V, Jy));
    CHECK_OK(loco_lin_vjp(Lv, LOCO_OUT_X0, NULL, k, V, J));
    for (size_t i = 0; i < n * k; i++) ref[i] = -Jy[i];
    CHECK_CLOSE("v model at abar 0: U^T J_x0 = -U^T J_y", J, ref, n * k, 1e-6);
    loco_lin_free(Le);
    loco_lin_free(Lv);
    /* sampling starts at t = 999 on both schedules */
    float grid[11];
    CHECK_OK(loco_ddim_timesteps(mv, LOCO_TIMESTEPS_AUTHORS, 5, grid));
    assert_true(grid[4] == 999.0f);
    CHECK_OK(loco_ddim_timesteps(mv, LOCO_TIMESTEPS_TRAILING, 10, grid));
    assert_true(grid[10] == 999.0f && grid[9] == 899.0f);
    /* one trailing step 999 -> 899 from pure noise by hand: x0 = -y,
     * eps = x, x' = sqrt(abar[899]) x0 + sqrt(1 - abar[899]) eps */
    memcpy(xs, x, sizeof(float) * n);
    CHECK_OK(loco_ddim_sample_ts(mv, NULL, LOCO_TIMESTEPS_TRAILING, 10, 1, xs, 10, 9, 0.0f, 0, NULL, NULL));
    const float an = loco_model_abar(mv, 899.0f);
    assert_true(an > 0.0f && an < 0.01f);
    for (size_t i = 0; i < n; i++) ref[i] = sqrtf(an) * -y[i] + sqrtf(1.0f - an) * x[i];
    CHECK_CLOSE("first DDIM step of a v model from pure noise", xs, ref, n, 1e-5);
    /* whole samples: finite, on both schedules, v and sample models */
    CHECK_OK(loco_sample_ts(mv, NULL, LOCO_TIMESTEPS_AUTHORS, 2, 4, 0.0f, 3, 2, 1, xs, NULL, NULL));
    assert_true(all_finite(xs, n * 2));
    CHECK_OK(loco_sample_ts(mv, NULL, LOCO_TIMESTEPS_TRAILING, 2, 4, 0.0f, 3, 2, 0, xs, NULL, NULL));
    assert_true(all_finite(xs, n * 2));
    CHECK_OK(loco_sample_ts(ms, NULL, LOCO_TIMESTEPS_AUTHORS, 2, 4, 0.5f, 3, 2, 1, xs, NULL, NULL));
    assert_true(all_finite(xs, n * 2));
    /* inversion up to abar = 0 and back stays finite */
    memcpy(xs, x, sizeof(float) * n);
    CHECK_OK(loco_ddim_invert_ts(mv, NULL, LOCO_TIMESTEPS_TRAILING, 4, 1, xs, 0, 4, NULL, NULL));
    assert_true(all_finite(xs, n));
    free(x);
    free(y);
    free(x0);
    free(e);
    free(ref);
    free(V);
    free(Jy);
    free(J);
    free(xs);
    loco_model_free(me);
    loco_model_free(mv);
    loco_model_free(ms);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rescaled_schedule),
        cmocka_unit_test(test_param_round_trips),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_v_model_from_pure_noise),
    };
    return cmocka_run_group_tests_name("zero_snr", tests, setup_dir, teardown_dir);
}
