/* test_cancel.c - stopping long work from a progress callback
 * (loco_progress_cancel, LOCO_E_CANCELLED) and the figure of the last unit
 * (loco_progress_value), on a small closed-form MoLRG model: sampling stops
 * after the step that asked, an edit stops in its subspace iteration, the
 * value is the subspace angle there and NaN elsewhere, and a later call on
 * the same thread runs to the end. */
#include <math.h>
#include <stdlib.h>

#include "testutil.h"
#include "tmpdir.h"

enum { C = 3, H = 8, W = 8, N = C * H * W };

typedef struct seen {
    int calls, cancel_at; /* cancel at this call (0: never) */
    int nan_values, finite_values, bad_values;
    char last_phase[32];
} seen;

static void cb(const char *phase, int done, int total, void *user) {
    (void)done, (void)total;
    seen *s = user;
    s->calls++;
    snprintf(s->last_phase, sizeof s->last_phase, "%s", phase);
    double v = loco_progress_value();
    if (isnan(v)) s->nan_values++;
    else if (v >= 0 && v <= 1) s->finite_values++;
    else s->bad_values++;
    if (s->cancel_at && s->calls == s->cancel_at) loco_progress_cancel();
}

static loco_model *open_molrg(void) {
    const char *p = tpath("m.safetensors");
    assert_int_equal(loco_molrg_init(p, C, H, W, 2, 8, 0.0f, 3), LOCO_OK);
    loco_model *m = NULL;
    assert_int_equal(loco_model_open(p, &m), LOCO_OK);
    return m;
}

static void test_sampling_stops(void **state) {
    (void)state;
    loco_model *m = open_molrg();
    float *x = malloc(sizeof(float) * N);
    seen s = {0};
    s.cancel_at = 3;
    assert_int_equal(loco_sample(m, 1, 20, 0, 1, 1, 0, x, cb, &s), LOCO_E_CANCELLED);
    assert_int_equal(s.calls, 3); /* no step after the one that asked */
    assert_non_null(strstr(loco_last_error(), "sampling: cancelled"));
    assert_int_equal(s.nan_values, 3); /* DDIM steps have no figure */
    /* the request does not outlive the call: the same thread samples again */
    seen s2 = {0};
    assert_int_equal(loco_sample(m, 1, 20, 0, 1, 1, 0, x, cb, &s2), LOCO_OK);
    assert_int_equal(s2.calls, 19);
    /* outside a callback cancel does nothing and the value is NaN */
    loco_progress_cancel();
    assert_true(isnan(loco_progress_value()));
    assert_int_equal(loco_sample(m, 1, 5, 0, 1, 1, 0, x, NULL, NULL), LOCO_OK);
    free(x);
    loco_model_free(m);
}

static void test_edit_stops_in_iteration(void **state) {
    (void)state;
    loco_model *m = open_molrg();
    float *x0 = calloc(N, sizeof(float));
    uint8_t mask[H * W] = {0};
    for (int y = 2; y < 5; y++)
        for (int xx = 2; xx < 6; xx++) mask[y * W + xx] = 1;
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit.steps = rp.edit.inv_steps = 10;
    rp.rank = 2;
    rp.null_rank = 2;
    rp.min_iter = rp.max_iter = 6;
    rp.tol = 0;
    rp.progress = cb;
    seen s = {0};
    rp.user = &s;
    /* the DDIM steps first (inversion and back down), then "roi" */
    loco_edit_directions *d = NULL;
    assert_int_equal(loco_edit_prepare(m, &rp, x0, mask, &d), LOCO_OK);
    const int all = s.calls;
    assert_int_equal(s.finite_values, 12); /* 6 roi + 6 null iterations: sin of the angle */
    assert_int_equal(s.bad_values, 0);
    loco_edit_directions_free(d);
    seen s2 = {0};
    s2.cancel_at = all - 6 - 2; /* the 4th roi iteration */
    rp.user = &s2;
    d = (loco_edit_directions *)&s2; /* must come back NULL */
    assert_int_equal(loco_edit_prepare(m, &rp, x0, mask, &d), LOCO_E_CANCELLED);
    assert_null(d);
    assert_int_equal(s2.calls, s2.cancel_at);
    assert_string_equal(s2.last_phase, "roi");
    assert_non_null(strstr(loco_last_error(), "roi: cancelled"));
    free(x0);
    loco_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampling_stops),
        cmocka_unit_test(test_edit_stops_in_iteration),
    };
    (void)write_raw; /* tmpdir.h's, unused here */
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
