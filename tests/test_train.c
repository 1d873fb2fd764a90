/* test_train.c - the trainer: the loss falls on faces, runs are deterministic,
 * resume equals one run, the folder opens as a model, bad arguments fail. */
#include "testutil.h"
#include "loco_train.h"
#include "internal.h"

#include <unistd.h>

static const char *CONFIG =
    "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 32, \"in_channels\": 3, \"out_channels\": 3,\n"
    " \"block_out_channels\": [16, 32], \"layers_per_block\": 1, \"norm_num_groups\": 8,\n"
    " \"attention_head_dim\": 8,\n"
    " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],\n"
    " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"]}\n";

static char g_dir[256], g_cfg[300];

static void setup_dir(void) {
    if (g_dir[0]) return;
    snprintf(g_dir, sizeof g_dir, "/tmp/loco_test_train_%d", (int)getpid());
    char cmd[400];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    if (system(cmd) != 0) fail_msg("mkdir failed");
    snprintf(g_cfg, sizeof g_cfg, "%s/config.json", g_dir);
    FILE *f = fopen(g_cfg, "w");
    assert_non_null(f);
    fputs(CONFIG, f);
    fclose(f);
}

static char *path(const char *a, const char *b) {
    static char buf[8][512];
    static int k = 0;
    char *s = buf[k++ % 8];
    snprintf(s, sizeof buf[0], "%s/%s%s%s", g_dir, a, b ? "/" : "", b ? b : "");
    return s;
}

static void params(loco_train_params *p, const char *out, int steps) {
    loco_train_params_init(p);
    p->config_path = g_cfg;
    p->data = "faces";
    p->out_dir = out;
    p->steps = steps;
    p->batch = 8;
    p->lr = 1e-3f;
    p->seed = 7;
    p->flip = 1;
    p->warmup = 2;
    p->ema = 0.9f;
    p->data_count = 64;
    p->save_every = 0;
}

static unsigned char *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) fail_msg("cannot open %s", p);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc((size_t)len + 1);
    assert_non_null(d);
    if (fread(d, 1, (size_t)len, f) != (size_t)len) fail_msg("short read %s", p);
    fclose(f);
    *n = (size_t)len;
    return d;
}

static void same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *da = slurp(a, &na), *db = slurp(b, &nb);
    int same = na == nb && memcmp(da, db, na) == 0;
    printf("  %s vs %s: %zu / %zu bytes, %s\n", a, b, na, nb, same ? "identical" : "DIFFERENT");
    free(da);
    free(db);
    if (!same) fail_msg("%s and %s differ", a, b);
}

/* (1) the loss falls, (4) the folder opens as a model */
/* the mean of n losses */
static double mean(const float *v, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m += v[i] / (double)n;
    return m;
}

static void test_loss_falls(void **st) {
    (void)st;
    setup_dir();
    loco_train_params p;
    params(&p, path("run_a", NULL), 40);
    float losses[40];
    p.losses = losses;
    CHECK_OK(loco_train(&p));
    const double first = mean(losses, 5), last = mean(losses + 35, 5);
    printf("  loss: mean of steps 1-5 %.4f, of steps 36-40 %.4f (step 1 %.4f, step 40 %.4f)\n", first, last,
           losses[0], losses[39]);
    if (!(last < 0.6 * first)) fail_msg("loss did not fall enough: %.4f -> %.4f", first, last);

    loco_model *m;
    CHECK_OK(loco_model_open(path("run_a", NULL), &m));
    loco_model_info inf;
    CHECK_OK(loco_model_get_info(m, &inf));
    assert_int_equal(inf.train_timesteps, 1000);
    size_t n = 3 * 32 * 32 * 2;
    float *x = malloc(n * sizeof(float)), *e = malloc(n * sizeof(float)), t[2] = {10.0f, 500.0f};
    for (size_t i = 0; i < n; i++) x[i] = (float)sin((double)i * 0.37);
    CHECK_OK(loco_model_eps(m, 2, x, t, e));
    for (size_t i = 0; i < n; i++)
        if (!isfinite(e[i])) fail_msg("eps[%zu] not finite", i);
    printf("  opened %s: eps finite, max |eps| %.3f\n", path("run_a", NULL), max_abs(e, n));
    free(x);
    free(e);
    /* the written (EMA) weights predict the noise of fresh noisy faces far
     * better than the initial loss (~1) */
    {
        enum { B = 8 };
        size_t per = 3 * 32 * 32;
        float *xb = malloc(B * per * sizeof(float)), *nb = malloc(B * per * sizeof(float)),
              *eb = malloc(B * per * sizeof(float)), tb[B];
        uint8_t rgb[32 * 32 * 3];
        unsigned long long r = 12345;
        for (int b = 0; b < B; b++) {
            CHECK_OK(loco_faces_generate(99, 1000 + b, rgb, NULL, NULL));
            tb[b] = (float)(100 * b + 50);
            float ab = loco_model_abar(m, tb[b]);
            for (size_t i = 0; i < per; i++) {
                int c = (int)(i / 1024), q = (int)(i % 1024);
                double u1, u2;
                r = r * 6364136223846793005ULL + 1442695040888963407ULL;
                u1 = ((r >> 11) + 1.0) / 9007199254740993.0;
                r = r * 6364136223846793005ULL + 1442695040888963407ULL;
                u2 = (r >> 11) / 9007199254740992.0;
                float z = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
                nb[b * per + i] = z;
                xb[b * per + i] = sqrtf(ab) * (rgb[q * 3 + c] / 127.5f - 1) + sqrtf(1 - ab) * z;
            }
        }
        CHECK_OK(loco_model_eps(m, B, xb, tb, eb));
        double mse = 0;
        for (size_t i = 0; i < B * per; i++) mse += (double)(eb[i] - nb[i]) * (eb[i] - nb[i]);
        mse /= (double)(B * per);
        printf("  EMA model: eps MSE on 8 unseen noisy faces (t = 50..750) %.4f\n", mse);
        if (!(mse < 0.6)) fail_msg("EMA model eps MSE %.4f not below 0.6", mse);
        free(xb);
        free(nb);
        free(eb);
    }
    loco_model_free(m);
    const char *fs[] = {"config.json", "diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
                        "train_state.safetensors"};
    for (int i = 0; i < 4; i++)
        if (access(path("run_a", fs[i]), R_OK) != 0) fail_msg("missing %s", fs[i]);
}

/* --winograd: the same training up to rounding (the first losses agree
 * closely, the loss falls as much), but a different run (the weights differ:
 * the Winograd path was taken) */
static void test_winograd_training(void **st) {
    (void)st;
    setup_dir();
    loco_train_params p;
    float la[20], lb[20];
    params(&p, path("run_im2col", NULL), 20);
    p.losses = la;
    CHECK_OK(loco_train(&p));
    params(&p, path("run_wino", NULL), 20);
    p.losses = lb;
    p.winograd = 1;
    CHECK_OK(loco_train(&p));
    double fa = 0, fb = 0;
    for (int i = 15; i < 20; i++) fa += la[i] / 5.0, fb += lb[i] / 5.0;
    printf("  step 1 loss: im2col %.7f, Winograd %.7f; mean of steps 16-20: %.4f, %.4f\n", la[0], lb[0], fa, fb);
    if (!(fabs(la[0] - lb[0]) <= 1e-5 * la[0])) fail_msg("step 1 losses differ: %.7f vs %.7f", la[0], lb[0]);
    if (!(fabs(fa - fb) <= 0.1 * fa)) fail_msg("Winograd training diverged: %.4f vs %.4f", fa, fb);
    size_t na, nb;
    unsigned char *da = slurp(path("run_im2col", "diffusion_pytorch_model.safetensors"), &na);
    unsigned char *db = slurp(path("run_wino", "diffusion_pytorch_model.safetensors"), &nb);
    int same = na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    if (same) fail_msg("--winograd gave bit-identical weights: the Winograd path was not taken");
}

/* (2) same seed -> identical files; (3) N then resume to N+M == N+M */
static void test_determinism_resume(void **st) {
    (void)st;
    setup_dir();
    loco_train_params p;
    params(&p, path("det1", NULL), 6);
    CHECK_OK(loco_train(&p));
    params(&p, path("det2", NULL), 6);
    CHECK_OK(loco_train(&p));
    same_file(path("det1", "diffusion_pytorch_model.safetensors"), path("det2", "diffusion_pytorch_model.safetensors"));
    same_file(path("det1", "train_state.safetensors"), path("det2", "train_state.safetensors"));

    params(&p, path("res", NULL), 3);
    CHECK_OK(loco_train(&p));
    params(&p, path("res", NULL), 6);
    p.resume = 1;
    CHECK_OK(loco_train(&p));
    same_file(path("det1", "diffusion_pytorch_model.safetensors"), path("res", "diffusion_pytorch_model.safetensors"));
    same_file(path("det1", "train_state.safetensors"), path("res", "train_state.safetensors"));

    /* a different seed gives different weights */
    params(&p, path("det3", NULL), 6);
    p.seed = 8;
    CHECK_OK(loco_train(&p));
    size_t na, nb;
    unsigned char *da = slurp(path("det1", "diffusion_pytorch_model.safetensors"), &na),
                  *db = slurp(path("det3", "diffusion_pytorch_model.safetensors"), &nb);
    assert_true(na != nb || memcmp(da, db, na) != 0);
    free(da);
    free(db);
}

/* the learning-rate decay: a constant run saved before the decay starts
 * resumes into it bit for bit (as the shipped faces model was trained: 2000
 * constant steps, then resumed to 4000 with the last 2000 decaying), also in
 * chunks; the decay changes the weights; its factors are the stated ones;
 * bad values are refused */
static void test_lr_decay(void **st) {
    (void)st;
    setup_dir();
    loco_train_params p;
    params(&p, path("dec1", NULL), 6);
    p.lr_decay_steps = 3;
    CHECK_OK(loco_train(&p));
    params(&p, path("dec2", NULL), 3); /* no decay at all, then resume into it */
    CHECK_OK(loco_train(&p));
    params(&p, path("dec2", NULL), 6);
    p.lr_decay_steps = 3;
    p.resume = 1;
    CHECK_OK(loco_train(&p));
    same_file(path("dec1", "diffusion_pytorch_model.safetensors"), path("dec2", "diffusion_pytorch_model.safetensors"));
    same_file(path("dec1", "train_state.safetensors"), path("dec2", "train_state.safetensors"));
    /* run in chunks with the end given: the same again */
    params(&p, path("dec3", NULL), 4);
    p.lr_decay_steps = 3;
    p.lr_decay_end = 6;
    CHECK_OK(loco_train(&p));
    params(&p, path("dec3", NULL), 6);
    p.lr_decay_steps = 3;
    p.resume = 1;
    CHECK_OK(loco_train(&p));
    same_file(path("dec1", "train_state.safetensors"), path("dec3", "train_state.safetensors"));
    /* without the decay the weights differ */
    params(&p, path("dec4", NULL), 6);
    CHECK_OK(loco_train(&p));
    size_t na, nb;
    unsigned char *da = slurp(path("dec1", "train_state.safetensors"), &na),
                  *db = slurp(path("dec4", "train_state.safetensors"), &nb);
    if (na == nb && memcmp(da, db, na) == 0) fail_msg("lr_decay_steps 3 gave the same weights as no decay");
    free(da);
    free(db);
    /* the factors themselves: 4 steps with lr_decay_steps 3 take lr x 1,
     * 3/4, 2/4, 1/4; the same run made step by step with those rates given
     * as constants (a resume may change lr) has the same weights, bit for
     * bit (the factor is applied as lr * (float)factor in both) */
    params(&p, path("dec5", NULL), 4);
    p.lr_decay_steps = 3;
    CHECK_OK(loco_train(&p));
    const float base = p.lr;
    for (int k = 1; k <= 4; k++) {
        params(&p, path("dec6", NULL), k);
        p.resume = k > 1;
        p.lr = k == 1 ? base : base * (float)((double)(5 - k) / 4.0);
        CHECK_OK(loco_train(&p));
    }
    same_file(path("dec5", "diffusion_pytorch_model.safetensors"), path("dec6", "diffusion_pytorch_model.safetensors"));
    params(&p, path("bad", NULL), 2);
    p.lr_decay_steps = 3; /* more than the run */
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "lr_decay_steps 3", NULL);
    params(&p, path("bad", NULL), 2);
    p.lr_decay_steps = -1;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "lr_decay_steps -1", NULL);
}

/* the schedule option: the folder's scheduler is the run's (the model opened
 * from it has alphas_cumprod of linear betas 1e-4..0.01, recomputed here in
 * double precision), and a resume cannot change it */
static void test_schedule_option(void **st) {
    (void)st;
    setup_dir();
    loco_train_params p;
    params(&p, path("sched", NULL), 2);
    p.beta_end = 0.01;
    CHECK_OK(loco_train(&p));
    loco_model *m = NULL;
    CHECK_OK(loco_model_open(path("sched", NULL), &m));
    int T = 0;
    const float *ac = loco_model_alphas_cumprod(m, &T);
    assert_int_equal(T, 1000);
    double acc = 1, worst = 0;
    for (int i = 0; i < T; i++) {
        acc *= 1.0 - (1e-4 + (0.01 - 1e-4) * i / (T - 1.0));
        double d = fabs(acc - ac[i]) / acc;
        if (d > worst) worst = d;
    }
    printf("  beta_end 0.01: abar[600] %.5f (0.02 gives 0.0256), worst relative difference from float64 %.2e\n",
           (double)ac[600], worst);
    assert_true(worst < 1e-6);
    assert_true(ac[600] > 0.15f && ac[600] < 0.17f);
    loco_model_free(m);

    /* a value with many digits is written so that it reads back exactly
     * (what the model's reader parses is what the run trained with) */
    params(&p, path("sched_digits", NULL), 1);
    p.beta_end = 0.0123456789012345;
    CHECK_OK(loco_train(&p));
    size_t len;
    char *txt = (char *)slurp(path("sched_digits", "scheduler/scheduler_config.json"), &len);
    txt[len] = 0;
    const char *key = strstr(txt, "\"beta_end\": ");
    assert_non_null(key);
    double got = strtod(key + strlen("\"beta_end\": "), NULL);
    printf("  beta_end 0.0123456789012345 written as %.17g (difference %.3g)\n", got, got - 0.0123456789012345);
    assert_true(got == 0.0123456789012345);
    free(txt);

    params(&p, path("sched", NULL), 3);
    p.resume = 1; /* beta_end 0.02 now: refused, naming the state and the key */
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "train_state.safetensors", "beta_end");
    params(&p, path("sched", NULL), 3);
    p.resume = 1;
    p.beta_end = 0.01;
    CHECK_OK(loco_train(&p));

    double bad[][2] = {{0, 0.02}, {0.02, 0.02}, {0.03, 0.02}, {1e-4, 1}, {NAN, 0.02}, {1e-4, NAN}, {-1e-4, 0.02}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        params(&p, path("bad", NULL), 2);
        p.beta_start = bad[k][0];
        p.beta_end = bad[k][1];
        expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "beta_start", NULL);
    }
}

/* v prediction with a zero terminal SNR: the loss falls, the folder opens
 * as a v model with abar[999] = 0, and at t = 999 (pure noise, abar = 0)
 * its x0_hat = -v_hat is near the data's mean face, as the v target
 * sqrt(abar) eps - sqrt(1 - abar) x0 = -x0 teaches there; a network taught
 * eps instead would give -eps_hat = -x there. */
static void test_v_zero_snr(void **st) {
    (void)st;
    setup_dir();
    loco_train_params p;
    params(&p, path("vz", NULL), 40);
    p.prediction = LOCO_PRED_V;
    p.zero_snr = 1;
    float losses[40];
    p.losses = losses;
    CHECK_OK(loco_train(&p));
    const double first = mean(losses, 5), last = mean(losses + 35, 5);
    printf("  v loss: mean of steps 1-5 %.4f, of steps 36-40 %.4f\n", first, last);
    if (!(last < 0.75 * first)) fail_msg("v loss did not fall enough: %.4f -> %.4f", first, last);
    loco_model *m;
    CHECK_OK(loco_model_open(path("vz", NULL), &m));
    int T = 0;
    const float *ac = loco_model_alphas_cumprod(m, &T);
    assert_true(T == 1000 && ac[999] == 0.0f && ac[0] > 0.9998f);
    enum { B = 4 };
    const size_t per = 3 * 32 * 32;
    float *mean = calloc(per, sizeof(float)), *x = malloc(B * per * sizeof(float)), *x0 = malloc(B * per * sizeof(float)),
          t[B];
    uint8_t rgb[32 * 32 * 3];
    for (int i = 0; i < 64; i++) { /* the training data (flipped half the time): the mean of both mirrors */
        CHECK_OK(loco_faces_generate(0, i, rgb, NULL, NULL));
        for (size_t k = 0; k < per; k++) {
            int c = (int)(k / 1024), yy = (int)(k % 1024) / 32, xx = (int)(k % 32);
            float a = rgb[(yy * 32 + xx) * 3 + c] / 127.5f - 1, b = rgb[(yy * 32 + 31 - xx) * 3 + c] / 127.5f - 1;
            mean[k] += (a + b) / 128.0f;
        }
    }
    unsigned long long r = 99;
    for (size_t i = 0; i < B * per; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        double u1 = ((r >> 11) + 1.0) / 9007199254740993.0;
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        double u2 = (r >> 11) / 9007199254740992.0;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
    for (int b = 0; b < B; b++) t[b] = 999.0f;
    CHECK_OK(loco_model_x0_hat(m, B, x, t, x0, NULL));
    double mse = 0, mse_eps = 0;
    for (size_t i = 0; i < B * per; i++) {
        double d = x0[i] - mean[i % per], de = -x[i] - mean[i % per];
        mse += d * d;
        mse_eps += de * de;
    }
    mse /= (double)(B * per);
    mse_eps /= (double)(B * per);
    printf("  x0_hat at t = 999 from pure noise: MSE to the mean face %.4f (-x, an eps network's answer: %.4f)\n",
           mse, mse_eps);
    if (!(mse < 0.25 * mse_eps)) fail_msg("x0_hat at abar = 0 is not near the mean face: %.4f vs %.4f", mse, mse_eps);
    free(mean);
    free(x);
    free(x0);
    loco_model_free(m);

    /* the library refuses epsilon with zero SNR and unknown types */
    params(&p, path("bad", NULL), 2);
    p.zero_snr = 1;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "zero terminal SNR", NULL);
    params(&p, path("bad", NULL), 2);
    p.prediction = (loco_prediction)7;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "prediction", NULL);
    /* resume with another prediction type or without zero SNR: refused */
    params(&p, path("vz", NULL), 41);
    p.resume = 1;
    p.zero_snr = 1;
    p.prediction = LOCO_PRED_SAMPLE;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "train_state.safetensors", "prediction_type");
    params(&p, path("vz", NULL), 41);
    p.resume = 1;
    p.prediction = LOCO_PRED_V;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "train_state.safetensors", "rescale_betas_zero_snr");
}

/* (5) hostile arguments */
static void test_bad_args(void **st) {
    (void)st;
    setup_dir();
    loco_train_params p;
    params(&p, path("bad", NULL), 2);
    p.config_path = path("no_such_config.json", NULL);
    expect_error(loco_train(&p), LOCO_E_IO, "no_such_config.json", NULL);
    params(&p, path("bad", NULL), 2);
    p.data = "no-such-data";
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "no-such-data", NULL);
    params(&p, path("bad", NULL), 2);
    p.batch = 0;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "batch", NULL);
    params(&p, path("bad", NULL), 2);
    p.ema = 1.0f;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "ema", NULL);
    params(&p, path("bad", NULL), 2);
    p.data = "fashion-mnist"; /* a 3-channel config */
    expect_error(loco_train(&p), LOCO_E_SHAPE, "fashion-mnist", NULL);
    params(&p, path("never_trained", NULL), 2);
    p.resume = 1;
    loco_status s = loco_train(&p);
    if (s == LOCO_OK) fail_msg("resume without a state succeeded");
    printf("  resume without state: %s (%s)\n", loco_strerror(s), loco_last_error());
    assert_non_null(strstr(loco_last_error(), "train_state.safetensors"));
}

/* the step losses of p's run (2 steps), into out */
static void two_step_losses(loco_train_params *p, float out[2]) {
    p->losses = out;
    assert_int_equal(loco_train(p), LOCO_OK);
}

/* the default 2-step run's losses, run once for the tests that compare with it */
static const float *plain_two_steps(void) {
    static float l[2];
    static int done;
    if (!done) {
        loco_train_params p;
        params(&p, path("plain2", NULL), 2);
        two_step_losses(&p, l);
        done = 1;
    }
    return l;
}

/* --t-focus: without it one draw per timestep, as before (the runs before
 * the option stay bit for bit); with it the share in the range is the one
 * asked for, every range value is reached and nothing falls outside [0, T-1];
 * a focused run trains on other timesteps (other losses) and bad values are
 * refused naming the field */
static void test_t_focus(void **st) {
    (void)st;
    loco_rng a, b;
    loco_rng_seed(&a, 7);
    loco_rng_seed(&b, 7);
    for (int i = 0; i < 1000; i++) {
        int x = loco_train_timestep(&a, 1000, 0.0, 500, 900), y = (int)(loco_rng_next(&b) % 1000);
        if (x != y) fail_msg("share 0: draw %d gave %d, the uniform draw %d", i, x, y);
    }
    const int N = 200000;
    int in = 0, lo_seen = 0, hi_seen = 0, tmin = 1000, tmax = -1;
    for (int i = 0; i < N; i++) {
        int t = loco_train_timestep(&a, 1000, 0.5, 500, 900);
        in += t >= 500 && t <= 900;
        tmin = t < tmin ? t : tmin;
        tmax = t > tmax ? t : tmax;
    }
    /* expected 0.5 + 0.5 * 401 / 1000 = 0.7005; the binomial sd is 0.001 */
    double frac = (double)in / N;
    printf("  t focus 500..900 share 0.5: %.4f in range (expected 0.7005), t in %d..%d\n", frac, tmin, tmax);
    if (fabs(frac - 0.7005) > 0.005) fail_msg("share in range %.4f, expected 0.7005", frac);
    if (tmin != 0 || tmax != 999) fail_msg("timesteps %d..%d, expected 0..999", tmin, tmax);
    for (int i = 0; i < N; i++) {
        int t = loco_train_timestep(&a, 1000, 1.0, 700, 703);
        if (t < 700 || t > 703) fail_msg("share 1: t %d outside 700..703", t);
        lo_seen |= t == 700;
        hi_seen |= t == 703;
    }
    assert_true(lo_seen && hi_seen);

    setup_dir();
    loco_train_params p;
    const float *l0 = plain_two_steps();
    float l1[2];
    params(&p, path("focus1", NULL), 2);
    p.t_focus_share = 1.0f;
    p.t_focus_lo = p.t_focus_hi = 10;
    two_step_losses(&p, l1);
    printf("  step losses: uniform %.5f %.5f, all at t = 10 %.5f %.5f\n", (double)l0[0], (double)l0[1], (double)l1[0],
           (double)l1[1]);
    if (l0[0] == l1[0]) fail_msg("the focused run's first loss equals the uniform run's (%g)", (double)l0[0]);

    params(&p, path("bad", NULL), 2);
    p.t_focus_share = 1.5f;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "t_focus_share", NULL);
    params(&p, path("bad", NULL), 2);
    p.t_focus_share = 0.5f;
    p.t_focus_lo = 900;
    p.t_focus_hi = 500;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "t_focus_lo", NULL);
    p.t_focus_lo = 0;
    p.t_focus_hi = 1000;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "t_focus_hi", NULL);
}

/* the multiscale loss: its gradient matches central differences of the
 * objective; a region-wide offset counts 1 + w * levels times, pixel noise
 * much less; w = 0 is the plain mean; bad values and sizes are refused */
static void test_multiscale_loss(void **st) {
    (void)st;
    enum { B = 2, C = 3, H = 8, W = 8, N = B * C * H * W };
    float out[N], tg[N], cot[N], cot0[N], tmp[N], scr[N];
    uint64_t z = 12345;
    for (int i = 0; i < N; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = (float)((double)(z >> 11) / 9007199254740992.0 - 0.5);
        tg[i] = 0.3f * (float)sin(i * 0.37);
    }
    double mse, mse0;
    const double obj = loco_train_loss(out, tg, B, C, H, W, 2.0f, 3, cot, scr, &mse);
    const double obj0 = loco_train_loss(out, tg, B, C, H, W, 0.0f, 3, cot0, NULL, &mse0);
    assert_true(mse == mse0 && obj0 == mse0);
    double worst = 0;
    for (int i = 0; i < N; i += 7) {
        const float h = 1e-3f;
        double m, op, om;
        memcpy(tmp, out, sizeof out);
        tmp[i] = out[i] + h;
        op = loco_train_loss(tmp, tg, B, C, H, W, 2.0f, 3, cot0, scr, &m);
        tmp[i] = out[i] - h;
        om = loco_train_loss(tmp, tg, B, C, H, W, 2.0f, 3, cot0, scr, &m);
        double fd = (op - om) / (2.0 * (double)h), e = fabs(fd - cot[i]) / (fabs(fd) + 1e-6);
        if (e > worst) worst = e;
    }
    printf("  multiscale loss w 2, 3 levels: objective %.6f (mse %.6f); gradient against central differences: worst "
           "relative error %.2e\n", obj, mse, worst);
    if (worst > 2e-2) fail_msg("multiscale gradient off by %.2e (relative)", worst);
    /* an offset of 0.1 everywhere: every level's block mean is 0.1 */
    for (int i = 0; i < N; i++) tmp[i] = tg[i] + 0.1f;
    double o = loco_train_loss(tmp, tg, B, C, H, W, 2.0f, 3, cot0, scr, &mse);
    printf("  a uniform offset 0.1: objective %.6f (expected %.6f = 0.01 * (1 + 2 * 3))\n", o, 0.01 * 7);
    if (fabs(o - 0.07) > 1e-6) fail_msg("offset objective %.6f, expected 0.07", o);
    /* +-0.1 alternating pixel by pixel: no block mean, only the plain term */
    for (int i = 0; i < N; i++) tmp[i] = tg[i] + (((i % W) + (i / W)) % 2 ? 0.1f : -0.1f);
    o = loco_train_loss(tmp, tg, B, C, H, W, 2.0f, 3, cot0, scr, &mse);
    if (fabs(o - 0.01) > 1e-6) fail_msg("checkerboard objective %.6f, expected 0.01", o);

    setup_dir();
    loco_train_params p;
    params(&p, path("bad", NULL), 2);
    p.ms_weight = -1.0f;
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "ms_weight", NULL);
    params(&p, path("bad", NULL), 2);
    p.ms_weight = 1.0f;
    p.ms_levels = 6; /* 64 does not divide 32 */
    expect_error(loco_train(&p), LOCO_E_INVALID_ARGUMENT, "ms_levels", NULL);
    const float *l0 = plain_two_steps();
    float l1[2];
    params(&p, path("ms1", NULL), 2);
    p.ms_weight = 4.0f;
    two_step_losses(&p, l1);
    /* the same first batch: the plain loss is reported, so step 1 agrees;
     * the update differs, so step 2 does not */
    printf("  step losses: plain %.6f %.6f, multiscale 4 %.6f %.6f\n", (double)l0[0], (double)l0[1], (double)l1[0],
           (double)l1[1]);
    if (l0[0] != l1[0]) fail_msg("step 1's reported loss differs (%g, %g): it should be the plain MSE", (double)l0[0], (double)l1[0]);
    if (l0[1] == l1[1]) fail_msg("the multiscale loss did not change the update (step 2 loss %g both)", (double)l0[1]);
}

static int cleanup(void **st) {
    (void)st;
    if (g_dir[0] && !getenv("LOCO_KEEP")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
        if (system(cmd) != 0) return 1;
    }
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_falls),
        cmocka_unit_test(test_determinism_resume),
        cmocka_unit_test(test_lr_decay),
        cmocka_unit_test(test_winograd_training),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_schedule_option),
        cmocka_unit_test(test_v_zero_snr),
        cmocka_unit_test(test_t_focus),
        cmocka_unit_test(test_multiscale_loss),
    };
    return cmocka_run_group_tests(tests, NULL, cleanup);
}
