/* train_cmd.c - `loco train`: train a UNet2DModel on faces, Fashion-MNIST or
 * a folder of PNGs (loco_train). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "loco_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRAIN_USAGE                                                                                                    \
    "usage: loco train --config CONFIG.json --data faces|faces-v1|fashion-mnist|DIR --out MODEL_DIR [--steps N]\n"             \
    "       [--batch 32] [--lr 2e-4] [--warmup 0] [--lr-decay 0] [--ema 0.999] [--flip] [--seed 0] [--save-every 500]\n"             \
    "       [--resume] [--weight-decay 0] [--data-count N] [--data-seed S] [--sample-every N] [--winograd]\n"      \
    "       [--sample-count 64] [--sample-steps 50] [--beta-start 1e-4] [--beta-end 0.02]\n"                         \
    "       [--prediction eps|v|sample] [--zero-snr] [--schedule linear|cosine] [--t-focus LO:HI:SHARE]\n"        \
    "       [--multiscale-loss WEIGHT[:LEVELS]]"

typedef struct prog {
    int tty, every, total;
    double loss_acc;
    int n_acc;
} prog;

static void on_step(int step, int total, float loss, double ips, void *user) {
    prog *p = user;
    total = p->total; /* the run's total, not the chunk's */
    p->loss_acc += loss;
    p->n_acc++;
    if (p->tty) {
        fprintf(stderr, "\rstep %d/%d  loss %.4f  %.1f images/s ", step, total, (double)loss, ips);
        if (step == total) fputc('\n', stderr);
    } else if (step % p->every == 0 || step == total) {
        fprintf(stderr, "step %d/%d  loss %.4f (mean of last %d: %.4f)  %.1f images/s\n", step, total, (double)loss,
                p->n_acc, p->loss_acc / p->n_acc, ips);
        p->loss_acc = 0;
        p->n_acc = 0;
    }
}

/* out_dir/samples.png: n images of the EMA weights, DDIM steps with x0
 * clipped (as loco sample), seed 0 */
static int write_samples(const char *dir, int n, int steps) {
    loco_model *m = NULL;
    loco_status st = open_model(dir, &m);
    if (st) return fail(st);
    loco_model_info inf;
    loco_model_get_info(m, &inf);
    const size_t per = (size_t)inf.in_channels * inf.height * inf.width;
    float *x = malloc(sizeof(float) * per * (size_t)n);
    size_t len = strlen(dir) + 16;
    char *path = malloc(len);
    if (!x || !path) st = LOCO_E_NOMEM;
    if (!st) st = loco_sample(m, n, steps, 0.0f, 0, 16, 1, x, NULL, NULL);
    if (!st && inf.in_channels <= 4) {
        snprintf(path, len, "%s/samples.png", dir);
        st = write_grid(path, x, n, inf.in_channels, inf.height, inf.width, 0, 1);
    }
    free(x);
    free(path);
    loco_model_free(m);
    return st ? fail(st) : 0;
}

/* "LO:HI:SHARE" into p's t_focus fields; 0 when malformed or out of range */
static int parse_t_focus(const char *v, loco_train_params *p) {
    char buf[64];
    if (strlen(v) >= sizeof buf) return 0;
    strcpy(buf, v);
    char *c1 = strchr(buf, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2) return 0;
    *c1 = *c2 = 0;
    long long lo, hi;
    double share;
    if (!parse_long(buf, 0, 999, &lo) || !parse_long(c1 + 1, 0, 999, &hi) || lo > hi) return 0;
    if (!parse_float(c2 + 1, &share) || !(share > 0 && share <= 1)) return 0;
    p->t_focus_lo = (int)lo;
    p->t_focus_hi = (int)hi;
    p->t_focus_share = (float)share;
    return 1;
}

/* "WEIGHT[:LEVELS]" into p's ms fields; 0 when malformed or out of range */
static int parse_multiscale(const char *v, loco_train_params *p) {
    char buf[64];
    if (strlen(v) >= sizeof buf) return 0;
    strcpy(buf, v);
    char *c = strchr(buf, ':');
    long long lv = 3;
    if (c) {
        *c = 0;
        if (!parse_long(c + 1, 1, 12, &lv)) return 0;
    }
    double w;
    if (!parse_float(buf, &w) || !(w > 0 && w <= 1e6)) return 0;
    p->ms_weight = (float)w;
    p->ms_levels = (int)lv;
    return 1;
}

int cmd_train(args *a) {
    loco_train_params p;
    loco_train_params_init(&p);
    const char *v;
    long long n;
    double d;
    int count_given = 0, sample_every = 0, sample_count = 64, sample_steps = 50;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--config"))) p.config_path = v;
        else if ((v = opt(a, "--data"))) p.data = v;
        else if ((v = opt(a, "--out"))) p.out_dir = v;
        else if ((v = opt(a, "--steps"))) {
            if (!parse_long(v, 1, 1000000000, &n)) return usage_error("train: bad --steps '%s'", v);
            p.steps = (int)n;
        } else if ((v = opt(a, "--batch"))) {
            if (!parse_long(v, 1, 4096, &n)) return usage_error("train: bad --batch '%s' (1..4096)", v);
            p.batch = (int)n;
        } else if ((v = opt(a, "--lr"))) {
            if (!parse_float(v, &d) || !(d > 0)) return usage_error("train: bad --lr '%s'", v);
            p.lr = (float)d;
        } else if ((v = opt(a, "--warmup"))) {
            if (!parse_long(v, 0, 1000000000, &n)) return usage_error("train: bad --warmup '%s'", v);
            p.warmup = (int)n;
        } else if ((v = opt(a, "--lr-decay"))) {
            if (!parse_long(v, 0, 1000000000, &n)) return usage_error("train: bad --lr-decay '%s'", v);
            p.lr_decay_steps = (int)n;
        } else if ((v = opt(a, "--t-focus"))) {
            if (!parse_t_focus(v, &p))
                return usage_error("train: bad --t-focus '%s' (LO:HI:SHARE, 0 <= LO <= HI <= 999, SHARE in (0, 1])", v);
        } else if ((v = opt(a, "--multiscale-loss"))) {
            if (!parse_multiscale(v, &p))
                return usage_error("train: bad --multiscale-loss '%s' (WEIGHT[:LEVELS], WEIGHT > 0, LEVELS 1..12)", v);
        } else if ((v = opt(a, "--ema"))) {
            if (!parse_float(v, &d) || !(d >= 0 && d < 1)) return usage_error("train: bad --ema '%s' (in [0, 1))", v);
            p.ema = (float)d;
        } else if ((v = opt(a, "--weight-decay"))) {
            if (!parse_float(v, &d) || !(d >= 0)) return usage_error("train: bad --weight-decay '%s'", v);
            p.weight_decay = (float)d;
        } else if ((v = opt(a, "--seed"))) {
            if (!parse_long(v, 0, INT64_MAX, &n)) return usage_error("train: bad --seed '%s'", v);
            p.seed = (uint64_t)n;
        } else if ((v = opt(a, "--data-seed"))) {
            if (!parse_long(v, 0, INT64_MAX, &n)) return usage_error("train: bad --data-seed '%s'", v);
            p.data_seed = (uint64_t)n;
        } else if ((v = opt(a, "--data-count"))) {
            if (!parse_long(v, 1, 1000000000, &n)) return usage_error("train: bad --data-count '%s'", v);
            p.data_count = (int)n;
            count_given = 1;
        } else if ((v = opt(a, "--save-every"))) {
            if (!parse_long(v, 0, 1000000000, &n)) return usage_error("train: bad --save-every '%s'", v);
            p.save_every = (int)n;
        } else if ((v = opt(a, "--sample-every"))) {
            if (!parse_long(v, 0, 1000000000, &n)) return usage_error("train: bad --sample-every '%s'", v);
            sample_every = (int)n;
        } else if ((v = opt(a, "--sample-count"))) {
            if (!parse_long(v, 0, 4096, &n)) return usage_error("train: bad --sample-count '%s' (0..4096)", v);
            sample_count = (int)n;
        } else if ((v = opt(a, "--sample-steps"))) {
            if (!parse_long(v, 2, 1000, &n)) return usage_error("train: bad --sample-steps '%s' (2..1000)", v);
            sample_steps = (int)n;
        } else if ((v = opt(a, "--beta-start"))) {
            if (!parse_float(v, &d) || !(d > 0 && d < 1)) return usage_error("train: bad --beta-start '%s' (in (0, 1))", v);
            p.beta_start = d;
        } else if ((v = opt(a, "--beta-end"))) {
            if (!parse_float(v, &d) || !(d > 0 && d < 1)) return usage_error("train: bad --beta-end '%s' (in (0, 1))", v);
            p.beta_end = d;
        } else if ((v = opt(a, "--prediction"))) {
            if (strcmp(v, "eps") == 0 || strcmp(v, "epsilon") == 0) p.prediction = LOCO_PRED_EPSILON;
            else if (strcmp(v, "v") == 0 || strcmp(v, "v_prediction") == 0) p.prediction = LOCO_PRED_V;
            else if (strcmp(v, "sample") == 0) p.prediction = LOCO_PRED_SAMPLE;
            else return usage_error("train: bad --prediction '%s' (eps, v or sample)", v);
        } else if ((v = opt(a, "--schedule"))) {
            if (strcmp(v, "linear") == 0) p.cosine = 0;
            else if (strcmp(v, "cosine") == 0 || strcmp(v, "squaredcos_cap_v2") == 0) p.cosine = 1;
            else return usage_error("train: bad --schedule '%s' (linear or cosine)", v);
        } else if (strcmp(s, "--zero-snr") == 0) p.zero_snr = 1;
        else if (strcmp(s, "--flip") == 0) p.flip = 1;
        else if (strcmp(s, "--winograd") == 0) p.winograd = 1;
        else if (strcmp(s, "--resume") == 0) p.resume = 1;
        else if (s[0] == '-') return usage_error("train: unknown or incomplete option '%s'", s);
        else return usage_error("train: unexpected argument '%s'", s);
    }
    if (!p.config_path || !p.data || !p.out_dir) return usage_error("train: %s", TRAIN_USAGE);
    if (p.lr_decay_steps > p.steps) {
        char msg[96];
        snprintf(msg, sizeof msg, "%d is more than --steps %d", p.lr_decay_steps, p.steps);
        return usage_error("train: --lr-decay %s", msg);
    }
    p.lr_decay_end = p.steps; /* the whole run's, also when it runs in chunks */
    if (p.zero_snr && p.prediction == LOCO_PRED_EPSILON)
        return usage_error("train: --zero-snr needs --prediction v or sample (an eps model cannot give x0 at abar = %d)", 0);
    /* 10000 is the faces default; fashion-mnist uses the whole split unless told */
    if (!count_given && strcmp(p.data, "fashion-mnist") == 0) p.data_count = 0;
    prog pr = {isatty(2), 50, p.steps, 0, 0};
    if (!g_quiet) {
        p.progress = on_step;
        p.user = &pr;
        static const char *const pn[3] = {"eps", "v", "sample"};
        char sch[64];
        if (p.cosine) snprintf(sch, sizeof sch, "cosine betas");
        else snprintf(sch, sizeof sch, "betas %g..%g", p.beta_start, p.beta_end);
        char decay[64] = "";
        if (p.lr_decay_steps > 0)
            snprintf(decay, sizeof decay, " falling linearly over the last %d steps", p.lr_decay_steps);
        char focus[160] = "";
        int k = 0;
        if (p.t_focus_share > 0)
            k = snprintf(focus, sizeof focus, ", %g of the timesteps in %d..%d", (double)p.t_focus_share, p.t_focus_lo,
                         p.t_focus_hi);
        if (p.ms_weight > 0)
            snprintf(focus + k, sizeof focus - (size_t)k, ", multiscale loss %g over %d levels", (double)p.ms_weight,
                     p.ms_levels);
        fprintf(stderr, "loco: training %s on %s, %d steps of batch %d (lr %g%s, ema %g, %s%s, %s prediction%s, seed %llu)%s\n",
                p.config_path, p.data, p.steps, p.batch, (double)p.lr, decay, (double)p.ema, sch,
                p.zero_snr ? " rescaled to zero terminal SNR" : "", pn[p.prediction], focus, (unsigned long long)p.seed,
                p.resume ? ", resuming" : "");
    }
    /* train in chunks of sample_every steps (resuming from the state each
     * chunk wrote), writing a sample grid of the EMA weights after each */
    const int total = p.steps;
    int target = sample_every > 0 ? sample_every : total;
    for (;;) {
        if (target > total) target = total;
        p.steps = target;
        loco_status st = loco_train(&p);
        if (st) return fail(st);
        if (sample_count > 0 && (sample_every > 0 || target == total)) {
            int rc = write_samples(p.out_dir, sample_count, sample_steps);
            if (rc) return rc;
        }
        if (target == total) break;
        p.resume = 1;
        target += sample_every;
    }
    if (!g_quiet) fprintf(stderr, "loco: wrote %s (EMA weights, config, scheduler, train_state)\n", p.out_dir);
    return 0;
}
