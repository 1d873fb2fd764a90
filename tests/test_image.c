/* test_image.c - PNG round trips, hostile PNGs, and region-of-interest masks. */
#include <png.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

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

static void write_raw_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("%s: cannot create", path);
    if (n && fwrite(p, 1, n, f) != n) fail_msg("%s: short write", path);
    fclose(f);
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
    /* PNG masks: a nonzero colour channel where alpha is nonzero is inside;
     * wrong size and empty refused (more in test_mask_png_rule) */
    loco_image im = {10, 8, 2, calloc(160, 1)};
    im.data[(3 * 10 + 4) * 2] = 7; /* gray 7, alpha 255: inside */
    im.data[(3 * 10 + 4) * 2 + 1] = 255;
    im.data[(5 * 10 + 1) * 2 + 1] = 255; /* gray 0, alpha 255: outside */
    im.data[(6 * 10 + 2) * 2] = 255;     /* gray 255, alpha 0: outside */
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

/* ------------------------------------------------------------------------ */
/* PNGs written here with libpng's low-level writer, in the layouts that     */
/* loco_png_write cannot make (16-bit, palettes, tRNS, low bit depths, gAMA) */
/* ------------------------------------------------------------------------ */

typedef struct {
    int w, h, depth, ct;
    int interlace;         /* 1: Adam7 */
    const uint16_t *v;     /* w*h*channels sample values (palette: indices) */
    const png_color *pal;  /* PNG_COLOR_TYPE_PALETTE: npal entries */
    int npal;
    const uint8_t *talpha; /* palette tRNS: alphas of the first ntrans entries */
    int ntrans;
    const png_color_16 *tcolor; /* gray / RGB tRNS: the transparent colour */
    double gamma;               /* > 0: a gAMA chunk with this file gamma */
} png_spec;

static int spec_channels(int ct) {
    switch (ct) {
        case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
        case PNG_COLOR_TYPE_RGB: return 3;
        case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
        default: return 1; /* gray, palette */
    }
}

/* everything libpng may longjmp out of; 0 on a libpng error */
static int write_png_body(png_structp png, png_infop info, FILE *f, const png_spec *sp, uint8_t *row,
                          size_t rowbytes, int ch) {
    if (setjmp(png_jmpbuf(png))) return 0;
    png_set_benign_errors(png, 1); /* allow out-of-palette indices */
    png_set_check_for_invalid_index(png, 0);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)sp->w, (png_uint_32)sp->h, sp->depth, sp->ct,
                 sp->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (sp->pal) png_set_PLTE(png, info, sp->pal, sp->npal);
    if (sp->talpha || sp->tcolor) png_set_tRNS(png, info, sp->talpha, sp->ntrans, sp->tcolor);
    if (sp->gamma > 0) png_set_gAMA(png, info, sp->gamma);
    png_write_info(png, info);
    int passes = sp->interlace ? png_set_interlace_handling(png) : 1;
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < sp->h; y++) {
            memset(row, 0, rowbytes);
            for (int i = 0; i < sp->w * ch; i++) {
                unsigned v = sp->v[(size_t)y * sp->w * ch + i];
                if (sp->depth == 16) {
                    row[2 * i] = (uint8_t)(v >> 8);
                    row[2 * i + 1] = (uint8_t)v;
                } else if (sp->depth == 8) {
                    row[i] = (uint8_t)v;
                } else { /* packed, first sample in the high bits */
                    int per = 8 / sp->depth, k = i % per;
                    row[i / per] |= (uint8_t)(v << (8 - sp->depth * (k + 1)));
                }
            }
            png_write_row(png, row);
        }
    png_write_end(png, NULL);
    return 1;
}

/* writes sp as a PNG with libpng's low-level writer */
static void write_png_spec(const char *path, const png_spec *sp) {
    int ch = spec_channels(sp->ct);
    size_t rowbytes = ((size_t)sp->w * ch * sp->depth + 7) / 8;
    uint8_t *row = calloc(rowbytes, 1);
    FILE *f = fopen(path, "wb");
    if (!f || !row) fail_msg("%s: cannot open", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) fail_msg("%s: png_create_write_struct", path);
    int ok = write_png_body(png, info, f, sp, row, rowbytes, ch);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(row);
    if (!ok) fail_msg("%s: libpng refused to write the test PNG", path);
}

/* reads path, checks its size, and compares every sample with want[],
 * printing the first difference */
static void expect_pixels(const char *path, int w, int h, int ch, const uint8_t *want) {
    loco_image im;
    CHECK_OK(loco_png_read(path, &im));
    assert_int_equal(im.width, w);
    assert_int_equal(im.height, h);
    assert_int_equal(im.channels, ch);
    for (int i = 0; i < w * h * ch; i++)
        if (im.data[i] != want[i]) {
            int got = im.data[i];
            loco_free(im.data);
            fail_msg("%s: sample %d (x %d, y %d, channel %d) reads %d, want %d", path, i, i / ch % w, i / ch / w,
                     i % ch, got, want[i]);
        }
    loco_free(im.data);
}

static uint8_t to8(unsigned v) { return (uint8_t)((v * 255u + 32767u) / 65535u); }

/* 16-bit samples come back by value, rounded to 8 bits (libpng's simplified
 * API took them as linear light and brightened them: 0x8080 read as 186) */
static void test_png_16bit(void **s) {
    (void)s;
    static const uint16_t g[6] = {0x8080, 0, 0xffff, 0x0080, 0x0081, 0x4000};
    uint8_t want[6 * 4];
    for (int i = 0; i < 6; i++) want[i] = to8(g[i]);
    assert_int_equal(want[0], 128);
    assert_int_equal(want[3], 0);
    assert_int_equal(want[4], 1);
    write_png_spec(tp("g16.png"), &(png_spec){3, 2, 16, PNG_COLOR_TYPE_GRAY, 0, g, NULL, 0, NULL, 0, NULL, 0});
    expect_pixels(tp("g16.png"), 3, 2, 1, want);
    /* a gAMA chunk changes nothing */
    write_png_spec(tp("g16g.png"), &(png_spec){3, 2, 16, PNG_COLOR_TYPE_GRAY, 0, g, NULL, 0, NULL, 0, NULL, 1.0});
    expect_pixels(tp("g16g.png"), 3, 2, 1, want);

    /* every 16-bit value: 256 x 256 gray, value y*256+x */
    uint16_t *all = malloc(65536 * sizeof *all);
    uint8_t *want_all = malloc(65536);
    for (unsigned v = 0; v < 65536; v++) {
        all[v] = (uint16_t)v;
        want_all[v] = to8(v);
    }
    write_png_spec(tp("all16.png"), &(png_spec){256, 256, 16, PNG_COLOR_TYPE_GRAY, 0, all, NULL, 0, NULL, 0, NULL, 0});
    expect_pixels(tp("all16.png"), 256, 256, 1, want_all);
    free(all);
    free(want_all);

    /* RGB16, gray+alpha 16, RGBA16 (alpha is not premultiplied either) */
    static const uint16_t rgb[6] = {0x8080, 0x1234, 0xfedc, 0x0101, 0x7f7f, 0xffff};
    for (int i = 0; i < 6; i++) want[i] = to8(rgb[i]);
    write_png_spec(tp("rgb16.png"), &(png_spec){2, 1, 16, PNG_COLOR_TYPE_RGB, 0, rgb, NULL, 0, NULL, 0, NULL, 0});
    expect_pixels(tp("rgb16.png"), 2, 1, 3, want);
    static const uint16_t ga[6] = {0x8080, 0x4000, 0x0202, 0, 0xffff, 0x8080};
    for (int i = 0; i < 6; i++) want[i] = to8(ga[i]);
    write_png_spec(tp("ga16.png"), &(png_spec){3, 1, 16, PNG_COLOR_TYPE_GRAY_ALPHA, 0, ga, NULL, 0, NULL, 0, NULL, 0});
    expect_pixels(tp("ga16.png"), 3, 1, 2, want);
    assert_int_equal(want[0], 128);
    assert_int_equal(want[1], 64);
    static const uint16_t rgba[8] = {0x8080, 0x4040, 0xc0c0, 0x8080, 0x0101, 0x0000, 0xffff, 0x0000};
    for (int i = 0; i < 8; i++) want[i] = to8(rgba[i]);
    write_png_spec(tp("rgba16.png"), &(png_spec){2, 1, 16, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba, NULL, 0, NULL, 0, NULL, 0});
    expect_pixels(tp("rgba16.png"), 2, 1, 4, want);
    /* 16-bit gray with tRNS: an alpha channel, 0 on the transparent value */
    png_color_16 tc = {.gray = 0x8080};
    for (int i = 0; i < 6; i++) {
        want[2 * i] = to8(g[i]);
        want[2 * i + 1] = g[i] == 0x8080 ? 0 : 255;
    }
    write_png_spec(tp("g16t.png"), &(png_spec){3, 2, 16, PNG_COLOR_TYPE_GRAY, 0, g, NULL, 0, NULL, 0, &tc, 0});
    expect_pixels(tp("g16t.png"), 3, 2, 2, want);
}

/* 8-bit samples as stored, whatever gAMA says (the simplified API converted
 * a file gamma of 1.0 to sRGB) */
static void test_png_no_gamma(void **s) {
    (void)s;
    static const uint16_t g[4] = {0, 64, 128, 255};
    static const uint8_t want[4] = {0, 64, 128, 255};
    const double gammas[3] = {1.0, 1 / 2.2, 0.8};
    for (int k = 0; k < 3; k++) {
        write_png_spec(tp("gam.png"), &(png_spec){4, 1, 8, PNG_COLOR_TYPE_GRAY, 0, g, NULL, 0, NULL, 0, NULL, gammas[k]});
        expect_pixels(tp("gam.png"), 4, 1, 1, want);
    }
    static const uint16_t rgb[6] = {10, 64, 200, 128, 1, 254};
    static const uint8_t want_rgb[6] = {10, 64, 200, 128, 1, 254};
    write_png_spec(tp("gamrgb.png"), &(png_spec){2, 1, 8, PNG_COLOR_TYPE_RGB, 0, rgb, NULL, 0, NULL, 0, NULL, 1.0});
    expect_pixels(tp("gamrgb.png"), 2, 1, 3, want_rgb);
}

/* 1, 2, 4-bit gray scaled to 8 bits; widths that do not fill the last byte;
 * gray and RGB tRNS add alpha; Adam7 interlacing */
static void test_png_gray_lowbit(void **s) {
    (void)s;
    uint16_t v[5 * 3];
    uint8_t want[5 * 3 * 3];
    for (int depth = 1; depth <= 4; depth *= 2) {
        int maxv = (1 << depth) - 1;
        for (int i = 0; i < 15; i++) {
            v[i] = (uint16_t)((i * 7 + 3) % (maxv + 1));
            want[i] = (uint8_t)(v[i] * 255 / maxv);
        }
        char nm[32];
        snprintf(nm, sizeof nm, "gray%d.png", depth);
        write_png_spec(tp(nm), &(png_spec){5, 3, depth, PNG_COLOR_TYPE_GRAY, 0, v, NULL, 0, NULL, 0, NULL, 0});
        expect_pixels(tp(nm), 5, 3, 1, want);
        /* the same with tRNS on value 1: gray+alpha */
        png_color_16 tc = {.gray = 1};
        for (int i = 0; i < 15; i++) {
            want[2 * i] = (uint8_t)(v[i] * 255 / maxv);
            want[2 * i + 1] = v[i] == 1 ? 0 : 255;
        }
        write_png_spec(tp(nm), &(png_spec){5, 3, depth, PNG_COLOR_TYPE_GRAY, 0, v, NULL, 0, NULL, 0, &tc, 0});
        expect_pixels(tp(nm), 5, 3, 2, want);
    }
    /* RGB + tRNS */
    static const uint16_t rgb[6] = {1, 2, 3, 4, 5, 6};
    static const uint8_t want_rgba[8] = {1, 2, 3, 255, 4, 5, 6, 0};
    png_color_16 tc = {.red = 4, .green = 5, .blue = 6};
    write_png_spec(tp("rgbt.png"), &(png_spec){2, 1, 8, PNG_COLOR_TYPE_RGB, 0, rgb, NULL, 0, NULL, 0, &tc, 0});
    expect_pixels(tp("rgbt.png"), 2, 1, 4, want_rgba);
    /* interlaced RGB and interlaced 16-bit gray */
    uint16_t big[13 * 11 * 3];
    uint8_t *wb = malloc(13 * 11 * 3);
    for (int i = 0; i < 13 * 11 * 3; i++) {
        big[i] = (uint16_t)((i * 29 + 5) & 0xff);
        wb[i] = (uint8_t)big[i];
    }
    write_png_spec(tp("adam7.png"), &(png_spec){13, 11, 8, PNG_COLOR_TYPE_RGB, 1, big, NULL, 0, NULL, 0, NULL, 0});
    expect_pixels(tp("adam7.png"), 13, 11, 3, wb);
    for (int i = 0; i < 13 * 11; i++) {
        big[i] = (uint16_t)(i * 457);
        wb[i] = to8(big[i]);
    }
    write_png_spec(tp("adam7g16.png"), &(png_spec){13, 11, 16, PNG_COLOR_TYPE_GRAY, 1, big, NULL, 0, NULL, 0, NULL, 0});
    expect_pixels(tp("adam7g16.png"), 13, 11, 1, wb);
    free(wb);
}

static const png_color g_pal[5] = {{0, 0, 0}, {255, 255, 255}, {200, 10, 20}, {1, 2, 3}, {9, 99, 199}};

/* palettes expand to RGB (RGBA with tRNS) at every index depth; an index
 * past the palette is an error naming the file (it read as black) */
static void test_png_palette(void **s) {
    (void)s;
    uint16_t v[5 * 2];
    uint8_t want[5 * 2 * 4];
    for (int depth = 1; depth <= 8; depth *= 2) {
        int npal = depth == 1 ? 2 : depth == 2 ? 4 : 5;
        for (int i = 0; i < 10; i++) {
            v[i] = (uint16_t)((i * 3 + 1) % npal);
            memcpy(want + 3 * i, &g_pal[v[i]], 3);
        }
        char nm[32];
        snprintf(nm, sizeof nm, "pal%d.png", depth);
        write_png_spec(tp(nm), &(png_spec){5, 2, depth, PNG_COLOR_TYPE_PALETTE, 0, v, g_pal, npal, NULL, 0, NULL, 0});
        expect_pixels(tp(nm), 5, 2, 3, want);
        /* tRNS for the first two entries; the others opaque */
        static const uint8_t ta[2] = {0, 77};
        for (int i = 0; i < 10; i++) {
            memcpy(want + 4 * i, &g_pal[v[i]], 3);
            want[4 * i + 3] = v[i] < 2 ? ta[v[i]] : 255;
        }
        write_png_spec(tp(nm), &(png_spec){5, 2, depth, PNG_COLOR_TYPE_PALETTE, 0, v, g_pal, npal, ta, 2, NULL, 0});
        expect_pixels(tp(nm), 5, 2, 4, want);
    }
    /* an index past the palette: 8-bit, 3 entries, index 7 at (x 1, y 1) */
    uint16_t bad[6] = {0, 1, 2, 0, 7, 1};
    write_png_spec(tp("palbad.png"), &(png_spec){3, 2, 8, PNG_COLOR_TYPE_PALETTE, 0, bad, g_pal, 3, NULL, 0, NULL, 0});
    loco_image im;
    expect_error(loco_png_read(tp("palbad.png"), &im), LOCO_E_FORMAT, "palbad.png",
                 "pixel index 7 at (x 1, y 1) is outside the palette of 3 entries");
    uint8_t m[6];
    expect_error(loco_mask_png(tp("palbad.png"), 2, 3, m), LOCO_E_FORMAT, "palbad.png", "outside the palette of 3");
    /* and packed: 2-bit, 2 entries, index 3 */
    bad[4] = 3;
    write_png_spec(tp("palbad2.png"), &(png_spec){3, 2, 2, PNG_COLOR_TYPE_PALETTE, 0, bad, g_pal, 3, NULL, 0, NULL, 0});
    expect_error(loco_png_read(tp("palbad2.png"), &im), LOCO_E_FORMAT, "palbad2.png",
                 "pixel index 3 at (x 1, y 1) is outside the palette of 3 entries");
}

/* reads a whole file */
static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) fail_msg("%s: short read", path);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* offset of the first chunk of type `type` (its length field), or 0 */
static size_t find_chunk(const uint8_t *b, size_t n, const char *type) {
    for (size_t o = 8; o + 12 <= n;) {
        size_t len = (size_t)b[o] << 24 | (size_t)b[o + 1] << 16 | (size_t)b[o + 2] << 8 | b[o + 3];
        if (!memcmp(b + o + 4, type, 4)) return o;
        o += 12 + len;
    }
    return 0;
}

static void fix_crc(uint8_t *b, size_t o) {
    size_t len = (size_t)b[o] << 24 | (size_t)b[o + 1] << 16 | (size_t)b[o + 2] << 8 | b[o + 3];
    uint32_t c = (uint32_t)crc32(0L, b + o + 4, (uInt)(len + 4));
    for (int k = 0; k < 4; k++) b[o + 8 + len + (size_t)k] = (uint8_t)(c >> (24 - 8 * k));
}

/* libpng's errors come back as statuses naming the file (and leak nothing:
 * see make asan); the size limits hold */
static void test_png_libpng_errors(void **s) {
    (void)s;
    uint16_t v[16 * 4];
    for (int i = 0; i < 64; i++) v[i] = (uint16_t)(i * 1000);
    write_png_spec(tp("src.png"), &(png_spec){16, 4, 16, PNG_COLOR_TYPE_GRAY, 0, v, NULL, 0, NULL, 0, NULL, 0});
    size_t n;
    uint8_t *b = slurp(tp("src.png"), &n);
    size_t idat = find_chunk(b, n, "IDAT"), ihdr = find_chunk(b, n, "IHDR");
    assert_true(idat > 0 && ihdr > 0);
    loco_image im;
    uint8_t m[64];
    /* a wrong IDAT CRC, then a damaged zlib header with the CRC made right */
    uint8_t *c = malloc(n);
    memcpy(c, b, n);
    size_t idat_len = (size_t)c[idat] << 24 | (size_t)c[idat + 1] << 16 | (size_t)c[idat + 2] << 8 | c[idat + 3];
    c[idat + 8 + idat_len] ^= 0x55;
    write_raw_file(tp("crc.png"), c, n);
    expect_error(loco_png_read(tp("crc.png"), &im), LOCO_E_FORMAT, "crc.png", "CRC");
    expect_error(loco_mask_png(tp("crc.png"), 4, 16, m), LOCO_E_FORMAT, "crc.png", "CRC");
    memcpy(c, b, n);
    c[idat + 8] ^= 0xff;
    fix_crc(c, idat);
    write_raw_file(tp("zlib.png"), c, n);
    expect_error(loco_png_read(tp("zlib.png"), &im), LOCO_E_FORMAT, "zlib.png", "corrupt PNG");
    expect_error(loco_mask_png(tp("zlib.png"), 4, 16, m), LOCO_E_FORMAT, "zlib.png", "corrupt PNG");
    /* a bit depth PNG does not have (3) in the header */
    memcpy(c, b, n);
    c[ihdr + 8 + 8] = 3;
    fix_crc(c, ihdr);
    write_raw_file(tp("depth3.png"), c, n);
    expect_error(loco_png_read(tp("depth3.png"), &im), LOCO_E_FORMAT, "depth3.png", "not a readable PNG");
    /* cut inside IDAT, and cut before IEND */
    write_raw_file(tp("cutidat.png"), b, idat + 20);
    expect_error(loco_png_read(tp("cutidat.png"), &im), LOCO_E_FORMAT, "cutidat.png", NULL);
    write_raw_file(tp("noiend.png"), b, n - 12);
    expect_error(loco_png_read(tp("noiend.png"), &im), LOCO_E_FORMAT, "noiend.png", NULL);
    expect_error(loco_mask_png(tp("noiend.png"), 4, 16, m), LOCO_E_FORMAT, "noiend.png", NULL);
    free(c);
    free(b);
    /* the size limit: 16385 x 1 is refused, 16384 x 1 read */
    uint16_t *wide = calloc(16385, sizeof *wide);
    wide[16383] = 1;
    write_png_spec(tp("wide.png"), &(png_spec){16385, 1, 1, PNG_COLOR_TYPE_GRAY, 0, wide, NULL, 0, NULL, 0, NULL, 0});
    expect_error(loco_png_read(tp("wide.png"), &im), LOCO_E_UNSUPPORTED, "wide.png", "16385x1 is outside 1..16384");
    write_png_spec(tp("wide.png"), &(png_spec){16384, 1, 1, PNG_COLOR_TYPE_GRAY, 0, wide, NULL, 0, NULL, 0, NULL, 0});
    CHECK_OK(loco_png_read(tp("wide.png"), &im));
    assert_int_equal(im.width, 16384);
    assert_int_equal(im.data[16383], 255);
    assert_int_equal(im.data[16382], 0);
    loco_free(im.data);
    free(wide);
}

/* b[0..n) with a chunk (type, data[0..len), claimed length `claim`, right
 * CRC over the data given) inserted after IHDR; *out_n gets the size */
static uint8_t *with_chunk(const uint8_t *b, size_t n, const char *type, const void *data, size_t len, uint32_t claim,
                           size_t *out_n) {
    size_t at = 8 + 12 + 13; /* after the signature and IHDR */
    uint8_t *c = malloc(n + 12 + len);
    memcpy(c, b, at);
    uint8_t *k = c + at;
    for (int i = 0; i < 4; i++) k[i] = (uint8_t)(claim >> (24 - 8 * i));
    memcpy(k + 4, type, 4);
    if (len) memcpy(k + 8, data, len);
    uint32_t crc = (uint32_t)crc32(0L, k + 4, (uInt)(len + 4));
    for (int i = 0; i < 4; i++) k[8 + len + (size_t)i] = (uint8_t)(crc >> (24 - 8 * i));
    memcpy(k + 12 + len, b + at, n - at);
    *out_n = n + 12 + len;
    return c;
}

static long max_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* ancillary chunks are skipped unread: a tEXt chunk claiming 1 GiB in a
 * 100-byte file is refused without libpng allocating and zeroing 1 GiB
 * first (found by fuzz_png as a timeout); a real tEXt chunk is harmless */
static void test_png_huge_chunk(void **s) {
    (void)s;
    uint16_t v[4 * 3];
    uint8_t want[4 * 3];
    for (int i = 0; i < 12; i++) want[i] = (uint8_t)(v[i] = (uint16_t)(i * 20));
    write_png_spec(tp("base.png"), &(png_spec){4, 3, 8, PNG_COLOR_TYPE_GRAY, 0, v, NULL, 0, NULL, 0, NULL, 0});
    size_t n, cn;
    uint8_t *b = slurp(tp("base.png"), &n);
    static const char text[] = "Comment\0a harmless comment";
    uint8_t *c = with_chunk(b, n, "tEXt", text, sizeof text - 1, sizeof text - 1, &cn);
    write_raw_file(tp("text.png"), c, cn);
    free(c);
    expect_pixels(tp("text.png"), 4, 3, 1, want);
    uint8_t m[12];
    CHECK_OK(loco_mask_png(tp("text.png"), 3, 4, m));
    const char *types[3] = {"tEXt", "zTXt", "iCCP"};
    for (int t = 0; t < 3; t++) {
        c = with_chunk(b, n, types[t], "x", 1, 1u << 30, &cn);
        write_raw_file(tp("huge.png"), c, cn);
        free(c);
        long before = max_rss_kib();
        loco_image im;
        expect_error(loco_png_read(tp("huge.png"), &im), LOCO_E_FORMAT, "huge.png", NULL);
        expect_error(loco_mask_png(tp("huge.png"), 3, 4, m), LOCO_E_FORMAT, "huge.png", NULL);
        long grew = max_rss_kib() - before;
        printf("  %s claiming 1 GiB: refused (%s), peak memory grew by %ld KiB\n", types[t], loco_last_error(), grew);
        if (grew > 256 * 1024) fail_msg("%s claiming 1 GiB: peak memory grew by %ld KiB", types[t], grew);
    }
    free(b);
}

/* counts mask pixels and checks that exactly those of `in` are set */
static void expect_mask(const char *path, int h, int w, const uint8_t *in) {
    uint8_t m[64];
    assert_true(h * w <= 64);
    memset(m, 0xee, sizeof m);
    CHECK_OK(loco_mask_png(path, h, w, m));
    for (int i = 0; i < h * w; i++)
        if (m[i] != in[i]) fail_msg("%s: mask pixel %d (x %d, y %d) is %d, want %d", path, i, i % w, i / w, m[i], in[i]);
}

/* the mask rule: a nonzero colour channel at the file's own depth, gated by
 * alpha (or tRNS) where there is one */
static void test_mask_png_rule(void **s) {
    (void)s;
    uint8_t m[64];
    /* 16-bit gray: value 1 is inside (reduced to 8 bits it was 0: empty) */
    uint16_t g[6] = {0, 0, 0, 0, 1, 0};
    static const uint8_t in_g[6] = {0, 0, 0, 0, 1, 0};
    write_png_spec(tp("m16.png"), &(png_spec){3, 2, 16, PNG_COLOR_TYPE_GRAY, 0, g, NULL, 0, NULL, 0, NULL, 0});
    expect_mask(tp("m16.png"), 2, 3, in_g);
    /* RGBA, black everywhere, alpha 255: empty (alpha is not colour) */
    uint16_t rgba[6 * 4] = {0};
    for (int i = 0; i < 6; i++) rgba[4 * i + 3] = 255;
    write_png_spec(tp("mblack.png"), &(png_spec){3, 2, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba, NULL, 0, NULL, 0, NULL, 0});
    expect_error(loco_mask_png(tp("mblack.png"), 2, 3, m), LOCO_E_INVALID_ARGUMENT, "mblack.png", "empty");
    /* RGBA: white with alpha 0 outside, white with alpha 255 inside, blue
     * with alpha 1 inside */
    rgba[0] = rgba[1] = rgba[2] = 255, rgba[3] = 0;
    rgba[4] = rgba[5] = rgba[6] = 255;
    rgba[4 * 5 + 2] = 9, rgba[4 * 5 + 3] = 1;
    static const uint8_t in_rgba[6] = {0, 1, 0, 0, 0, 1};
    write_png_spec(tp("mrgba.png"), &(png_spec){3, 2, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba, NULL, 0, NULL, 0, NULL, 0});
    expect_mask(tp("mrgba.png"), 2, 3, in_rgba);
    /* 16-bit RGBA: blue 1 with alpha 1 inside; red 1 with alpha 0 outside */
    uint16_t rgba16[6 * 4] = {0};
    rgba16[4 * 2 + 2] = 1, rgba16[4 * 2 + 3] = 1;
    rgba16[4 * 3 + 0] = 1, rgba16[4 * 3 + 3] = 0;
    rgba16[4 * 4 + 1] = 0xffff, rgba16[4 * 4 + 3] = 0xffff;
    static const uint8_t in_rgba16[6] = {0, 0, 1, 0, 1, 0};
    write_png_spec(tp("mrgba16.png"), &(png_spec){3, 2, 16, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba16, NULL, 0, NULL, 0, NULL, 0});
    expect_mask(tp("mrgba16.png"), 2, 3, in_rgba16);
    /* 16-bit gray+alpha: (1, 1) inside, (0, 0xffff) and (0xffff, 0) outside */
    uint16_t ga16[6 * 2] = {1, 1, 0, 0xffff, 0xffff, 0, 0x100, 0x100, 0, 0, 2, 0};
    static const uint8_t in_ga16[6] = {1, 0, 0, 1, 0, 0};
    write_png_spec(tp("mga16.png"), &(png_spec){3, 2, 16, PNG_COLOR_TYPE_GRAY_ALPHA, 0, ga16, NULL, 0, NULL, 0, NULL, 0});
    expect_mask(tp("mga16.png"), 2, 3, in_ga16);
    /* palette + tRNS: entry 0 black opaque, 1 white transparent, 2 red
     * alpha 255 (past the tRNS entries: opaque), 3 nonzero with alpha 1 */
    static const uint8_t ta[2] = {255, 0};
    uint16_t pi[6] = {0, 1, 2, 3, 1, 0};
    static const uint8_t in_p[6] = {0, 0, 1, 1, 0, 0};
    write_png_spec(tp("mpal.png"), &(png_spec){3, 2, 4, PNG_COLOR_TYPE_PALETTE, 0, pi, g_pal, 5, ta, 2, NULL, 0});
    expect_mask(tp("mpal.png"), 2, 3, in_p);
    /* palette without tRNS: the colour only */
    static const uint8_t in_p2[6] = {0, 1, 1, 1, 1, 0};
    write_png_spec(tp("mpal2.png"), &(png_spec){3, 2, 8, PNG_COLOR_TYPE_PALETTE, 0, pi, g_pal, 5, NULL, 0, NULL, 0});
    expect_mask(tp("mpal2.png"), 2, 3, in_p2);
    /* gray + tRNS on 200: 200 outside, 100 inside, 0 outside */
    uint16_t gt[6] = {200, 100, 0, 1, 200, 255};
    static const uint8_t in_gt[6] = {0, 1, 0, 1, 0, 1};
    png_color_16 tc = {.gray = 200};
    write_png_spec(tp("mgt.png"), &(png_spec){3, 2, 8, PNG_COLOR_TYPE_GRAY, 0, gt, NULL, 0, NULL, 0, &tc, 0});
    expect_mask(tp("mgt.png"), 2, 3, in_gt);
    /* 1-bit gray, interlaced */
    uint16_t b1[6] = {0, 1, 0, 0, 0, 1};
    static const uint8_t in_b1[6] = {0, 1, 0, 0, 0, 1};
    write_png_spec(tp("m1.png"), &(png_spec){3, 2, 1, PNG_COLOR_TYPE_GRAY, 1, b1, NULL, 0, NULL, 0, NULL, 0});
    expect_mask(tp("m1.png"), 2, 3, in_b1);
    /* the wrong size is refused before the pixels are read */
    expect_error(loco_mask_png(tp("m16.png"), 3, 2, m), LOCO_E_SHAPE, "m16.png", "3x2 but the model works at 2x3");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_round_trip),
        cmocka_unit_test(test_png_hostile),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_png_16bit),
        cmocka_unit_test(test_png_no_gamma),
        cmocka_unit_test(test_png_gray_lowbit),
        cmocka_unit_test(test_png_palette),
        cmocka_unit_test(test_png_libpng_errors),
        cmocka_unit_test(test_mask_png_rule),
        cmocka_unit_test(test_png_huge_chunk),
    };
    return cmocka_run_group_tests_name("image", tests, setup, teardown);
}
