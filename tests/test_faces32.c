/* test_faces32.c - the shipped faces model (models/faces32) end to end:
 * it loads (fp16 weights), denoises held-out faces, and LOCO edits of the
 * eyes, the mouth and the hair with a short schedule are visible and local:
 * the mean absolute change inside the part mask is >= 5x the change outside
 * it, for every part.
 *
 * The model folder is $LOCO_MODELS/faces32 (default models/faces32). */
#include "testutil.h"
#include "loco_train.h"

#include "../bench/edit_eval.h"

/* The faces generator the shipped model was trained on: 2 (no jitter) since
 * issue #17's model; 1 (jittered) for the faces32 of 2026-11. */
#define FACES32_GENERATOR 2

static const char *model_dir(void) {
    static char buf[1024];
    const char *e = getenv("LOCO_MODELS");
    snprintf(buf, sizeof buf, "%s/faces32", e && e[0] ? e : "models");
    return buf;
}

static void face(int index, float *x0, uint8_t *labels) {
    uint8_t rgb[32 * 32 * 3];
    /* seed 99: not in the training set; the generator version the shipped
     * model was trained on (models/faces32/README.md) */
    CHECK_OK(loco_faces_generate_version(99, index, FACES32_GENERATOR, rgb, labels, NULL));
    for (int p = 0; p < 32 * 32; p++)
        for (int c = 0; c < 3; c++) x0[c * 1024 + p] = rgb[p * 3 + c] / 127.5f - 1.0f;
}

/* A trained model predicts the noise: held-out loss at t = 500 well below
 * the 1.0 of predicting zero (a random-weight model gives ~1.15). */
static void test_denoises(void **s) {
    (void)s;
    loco_model *m;
    CHECK_OK(loco_model_open(model_dir(), &m));
    const int B = 8;
    const size_t n = 3 * 32 * 32;
    float *x = malloc(sizeof(float) * n * B), *eps = malloc(sizeof(float) * n * B), *eh = malloc(sizeof(float) * n * B);
    float t[8];
    uint8_t labels[1024];
    double loss = 0;
    for (int b = 0; b < B; b++) {
        face(b, x + n * b, labels);
        t[b] = 500;
    }
    const float ab = loco_model_abar(m, 500), sa = sqrtf(ab), sb = sqrtf(1 - ab);
    uint64_t st = 12345;
    for (size_t i = 0; i < n * B; i++) {
        /* a fixed pseudo-normal noise (sum of uniforms, variance 1) */
        double z = 0;
        for (int k = 0; k < 12; k++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            z += (double)(st >> 11) / 9007199254740992.0;
        }
        eps[i] = (float)(z - 6);
        x[i] = sa * x[i] + sb * eps[i];
    }
    CHECK_OK(loco_model_eps(m, B, x, t, eh));
    for (size_t i = 0; i < n * B; i++) loss += ((double)eh[i] - eps[i]) * ((double)eh[i] - eps[i]);
    loss /= (double)(n * B);
    printf("  held-out eps MSE at t = 500 over %d faces: %.4f (predicting 0 gives 1)\n", B, loss);
    assert_true(loss < 0.25);
    free(x), free(eps), free(eh);
    loco_model_free(m);
}

/* One edit of held-out face `index` with the short schedule; returns the
 * inside/outside ratio with and without null-space projection and the
 * inside change. */
static void edit_ratio(loco_model *m, int index, const char *part, double *ratio_proj, double *ratio_raw,
                       double *inside) {
    const int C = 3, H = 32, W = 32;
    const size_t n = (size_t)C * H * W;
    float *x0 = malloc(sizeof(float) * n), *batch = malloc(sizeof(float) * n * 5);
    uint8_t labels[1024], mask[1024];
    face(index, x0, labels);
    CHECK_OK(loco_part_mask(labels, H, W, part, 1, mask));
    loco_edit_recipe es;
    loco_edit_recipe_init(&es);
    es.edit.steps = 20;
    es.edit.inv_steps = 20;
    es.edit.invert_full = 0;
    es.rank = 3;
    es.null_rank = 3;
    es.min_iter = 5;
    es.max_iter = 10;
    const float strength = 4;
    /* recon, -/+ strength with the null-space projection, -/+ without */
    CHECK_OK(ev_edit(m, &es, x0, mask, strength, batch, NULL));
    double i1, o1, i2, o2, i3, o3, i4, o4;
    ev_change(batch + n, batch, mask, C, H, W, &i1, &o1);
    ev_change(batch + 2 * n, batch, mask, C, H, W, &i2, &o2);
    ev_change(batch + 3 * n, batch, mask, C, H, W, &i3, &o3);
    ev_change(batch + 4 * n, batch, mask, C, H, W, &i4, &o4);
    *ratio_proj = (i1 + i2) / (o1 + o2);
    *ratio_raw = (i3 + i4) / (o3 + o4);
    *inside = 127.5 * (i1 + i2) / 2;
    printf("  face %d, %s edit, strength %g: mean |change| inside %.1f, outside %.2f (8-bit levels): ratio %.2f with "
           "null-space projection; without: inside %.1f, outside %.2f, ratio %.2f\n",
           index, part, (double)strength, *inside, 127.5 * (o1 + o2) / 2, *ratio_proj, 127.5 * (i3 + i4) / 2,
           127.5 * (o3 + o4) / 2, *ratio_raw);
    free(x0), free(batch);
}

/* Measures all three parts first (so a failure shows every number), then
 * checks them. Measured on face 0 (generator version 2) with this short
 * schedule: ratio 24.21 / 25.41 / 18.37 for eyes / mouth / hair with
 * null-space projection, 26.50 / 26.05 / 17.02 without. The bar is 5 (the
 * issue's) for every part; the full evaluation over 20 faces gives 59 of 60
 * edits >= 5 (docs/models.md). */
static void test_local_edit(void **s) {
    (void)s;
    loco_model *m;
    CHECK_OK(loco_model_open(model_dir(), &m));
    const char *parts[3] = {"eyes", "mouth", "hair"};
    double rp[3], rr[3], in[3];
    for (int k = 0; k < 3; k++) edit_ratio(m, 0, parts[k], &rp[k], &rr[k], &in[k]);
    const double bar[3] = {5.0, 5.0, 5.0};
    for (int k = 0; k < 3; k++) {
        if (!(in[k] >= 4.0 && rp[k] >= bar[k]))
            fail_msg("%s: inside %.1f levels (need >= 4), ratio %.2f (need >= %.1f)", parts[k], in[k], rp[k], bar[k]);
    }
    /* The null-space projection: over 20 faces it matters most for the mouth
     * (19.4 against 15.3 without, docs/models.md); on face 0 with this short
     * schedule it changes little for any part (above), on face 3's mouth it
     * takes the outside change from 2.08 to 1.40 levels: ratio 25.59 against
     * 17.52 (1.46x). Bar 1.2x: a projection that did nothing gives ~1x. */
    double p3, r3, i3;
    edit_ratio(m, 3, "mouth", &p3, &r3, &i3);
    if (!(p3 >= 1.2 * r3)) fail_msg("face 3 mouth: projection %.2f, without %.2f: need >= 1.2x", p3, r3);
    loco_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_denoises),
        cmocka_unit_test(test_local_edit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
