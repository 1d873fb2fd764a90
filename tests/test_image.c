/* test_image.c - PNG round trips, hostile PNGs, and region-of-interest masks. */
#include <unistd.h>

#include "testutil.h"

static char g_dir[] = "/tmp/loco_imgXXXXXX";

static const char *tp(const char *name) {
    static char buf[4][600];
    static int k = 0;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

static int setup(void **s) {
    (void)s;
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **s) {
    (void)s;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd);
}

static void test_png_round_trip(void **s) {
    (void)s;
    for (int ch = 1; ch <= 4; ch++) {
        loco_image im = {7, 5, ch, malloc(7 * 5 * ch)};
        for (int i = 0; i < 7 * 5 * ch; i++) im.data[i] = (uint8_t)(i * 37 + ch);
        CHECK_OK(loco_png_write(tp("a.png"), &im));
        loco_image back;
        CHECK_OK(loco_png_read(tp("a.png"), &back));
        assert_int_equal(back.width, 7);
        assert_int_equal(back.height, 5);
        assert_int_equal(back.channels, ch);
        assert_memory_equal(back.data, im.data, 7 * 5 * ch);
        loco_free(back.data);
        free(im.data);
    }
    /* no temporary file left behind */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", g_dir);
    assert_int_not_equal(system(cmd), 0);
}

static void test_png_hostile(void **s) {
    (void)s;
    loco_image im;
    expect_error(loco_png_read(tp("missing.png"), &im), LOCO_E_IO, "missing.png", NULL);
    FILE *f = fopen(tp("junk.png"), "wb");
    fputs("this is not a png", f);
    fclose(f);
    expect_error(loco_png_read(tp("junk.png"), &im), LOCO_E_FORMAT, "junk.png", NULL);
    /* a truncated PNG: every prefix of a valid file fails cleanly */
    loco_image ok = {9, 9, 3, calloc(243, 1)};
    for (int i = 0; i < 243; i++) ok.data[i] = (uint8_t)(i * 11);
    CHECK_OK(loco_png_write(tp("ok.png"), &ok));
    free(ok.data);
    f = fopen(tp("ok.png"), "rb");
    uint8_t buf[4096];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    int failures = 0;
    for (size_t cut = 0; cut < len; cut += 3) {
        f = fopen(tp("cut.png"), "wb");
        fwrite(buf, 1, cut, f);
        fclose(f);
        loco_status st = loco_png_read(tp("cut.png"), &im);
        if (st == LOCO_OK) loco_free(im.data); /* trailing chunks may be optional */
        else failures++;
    }
    printf("  %d of %zu truncations refused cleanly\n", failures, (len + 2) / 3);
    assert_true(failures > 0);
    loco_image bad = {0, 5, 3, (uint8_t *)"x"};
    expect_error(loco_png_write(tp("bad.png"), &bad), LOCO_E_INVALID_ARGUMENT, "bad.png", NULL);
}

static void test_masks(void **s) {
    (void)s;
    uint8_t m[8 * 10];
    CHECK_OK(loco_mask_rect(8, 10, 2, 5, 3, 7, m));
    int count = 0;
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 10; x++) {
            int in = y >= 2 && y < 5 && x >= 3 && x < 7;
            assert_int_equal(m[y * 10 + x], in);
            count += in;
        }
    assert_int_equal(count, 12);
    expect_error(loco_mask_rect(8, 10, 5, 5, 3, 7, m), LOCO_E_INVALID_ARGUMENT, "rect", NULL);
    expect_error(loco_mask_rect(8, 10, 0, 9, 3, 7, m), LOCO_E_INVALID_ARGUMENT, "rect", NULL);
    CHECK_OK(loco_mask_ellipse(8, 10, 4, 5, 2, 3, m));
    assert_int_equal(m[4 * 10 + 5], 1);
    assert_int_equal(m[4 * 10 + 8], 1); /* on the x radius */
    assert_int_equal(m[4 * 10 + 9], 0);
    assert_int_equal(m[1 * 10 + 5], 0);
    expect_error(loco_mask_ellipse(8, 10, 40, 50, 1, 1, m), LOCO_E_INVALID_ARGUMENT, "empty", NULL);
    expect_error(loco_mask_ellipse(8, 10, 4, 5, 0, 1, m), LOCO_E_INVALID_ARGUMENT, "radii", NULL);
    /* PNG masks: any nonzero channel is inside; wrong size and empty refused */
    loco_image im = {10, 8, 2, calloc(160, 1)};
    im.data[(3 * 10 + 4) * 2 + 1] = 7; /* only the alpha channel set */
    CHECK_OK(loco_png_write(tp("m.png"), &im));
    CHECK_OK(loco_mask_png(tp("m.png"), 8, 10, m));
    count = 0;
    for (int i = 0; i < 80; i++) count += m[i];
    assert_int_equal(count, 1);
    assert_int_equal(m[3 * 10 + 4], 1);
    expect_error(loco_mask_png(tp("m.png"), 10, 8, m), LOCO_E_SHAPE, "m.png", "10x8");
    memset(im.data, 0, 160);
    CHECK_OK(loco_png_write(tp("e.png"), &im));
    expect_error(loco_mask_png(tp("e.png"), 8, 10, m), LOCO_E_INVALID_ARGUMENT, "e.png", "empty");
    free(im.data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_round_trip),
        cmocka_unit_test(test_png_hostile),
        cmocka_unit_test(test_masks),
    };
    return cmocka_run_group_tests_name("image", tests, setup, teardown);
}
