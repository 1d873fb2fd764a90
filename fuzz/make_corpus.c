/* make_corpus.c - writes the seed corpora fuzz/corpus/<target>/ (small files
 * made with the library's own writers, plus copies of a few fixtures made by
 * fuzz/run.sh). Run by `fuzz/run.sh --seeds`; the output is committed, so it
 * only needs running again when the formats change.
 *   make_corpus OUT_ROOT     (OUT_ROOT/<target>/ must exist) */
#include "internal.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_root;

static void put(const char *target, const char *name, const void *d, size_t n) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s/%s", g_root, target, name);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n)) {
        fprintf(stderr, "make_corpus: cannot write %s\n", p);
        exit(1);
    }
    fclose(f);
}

/* opens pk as data.pkl of the fuzz harness's archive; want_ok: must open */
static void check_pickle(const char *name, const char *pk, size_t n, int want_ok) {
    static uint8_t st[64];
    loco_zip_item it[7] = {
        {"archive/data.pkl", pk, n},     {"archive/byteorder", "little", 6}, {"archive/data/0", st, 64},
        {"archive/data/1", st, 64},      {"archive/data/2", st, 64},         {"archive/data/3", st, 64},
        {"archive/data/4", "", 0},
    };
    uint8_t *z;
    size_t zl;
    loco_pt *f = NULL;
    if (loco_zip_build(it, 7, 0, &z, &zl) != LOCO_OK) exit(1);
    loco_status s = loco_pt_open_mem(z, zl, name, 0, &f);
    if ((s == LOCO_OK) != want_ok) {
        fprintf(stderr, "make_corpus: %s: %s\n", name, s ? loco_last_error() : "accepted");
        exit(1);
    }
    if (f) printf("%s: %zu tensors\n", name, loco_pt_count(f));
    else printf("%s: refused: %s\n", name, loco_last_error());
    loco_pt_close(f);
    free(z);
}

static void check(loco_status s) {
    if (s) {
        fprintf(stderr, "make_corpus: %s\n", loco_last_error());
        exit(1);
    }
}

/* the data.pkl entry of a built archive (the first entry: its data start
 * after the local header) */
static void put_pickle_of(const char *name, const uint8_t *z, size_t n) {
    loco_pt *f;
    check(loco_pt_open_mem(z, n, name, 0, &f));
    loco_pt_close(f);
    size_t nl = (size_t)(z[26] | z[27] << 8), xl = (size_t)(z[28] | z[29] << 8);
    size_t off = 30 + nl + xl;
    /* the central directory has its size; find the entry's record */
    for (size_t i = n - 22; i > 0; i--)
        if (!memcmp(z + i, "PK\x01\x02", 4) && !memcmp(z + i + 46, "archive/data.pkl", 16)) {
            size_t len = (size_t)(z[i + 24] | z[i + 25] << 8 | z[i + 26] << 16 | (size_t)z[i + 27] << 24);
            put("pickle", name, z + off, len);
            return;
        }
    fprintf(stderr, "make_corpus: no data.pkl in %s\n", name);
    exit(1);
}

/* A PNG in a layout loco_png_write cannot make, written with libpng's
 * low-level writer: w x h, bit depth, colour type, Adam7 or not, samples
 * v[] (palette: indices, which may lie past the palette), optional PLTE,
 * palette tRNS alphas, gray/RGB tRNS colour. Out-of-palette indices are
 * allowed (png_set_check_for_invalid_index off). */
typedef struct {
    const char *name;
    int w, h, depth, ct, interlace;
    const png_color *pal;
    int npal;
    const uint8_t *talpha;
    int ntrans;
    const png_color_16 *tcolor;
    unsigned (*sample)(int i); /* sample i of w*h*channels */
} png_seed;

static int seed_body(png_structp png, png_infop info, FILE *f, const png_seed *sd, uint8_t *row, size_t rowbytes,
                     int ch) {
    if (setjmp(png_jmpbuf(png))) return 0;
    png_set_benign_errors(png, 1);
    png_set_check_for_invalid_index(png, 0);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)sd->w, (png_uint_32)sd->h, sd->depth, sd->ct,
                 sd->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (sd->pal) png_set_PLTE(png, info, sd->pal, sd->npal);
    if (sd->talpha || sd->tcolor) png_set_tRNS(png, info, sd->talpha, sd->ntrans, sd->tcolor);
    png_write_info(png, info);
    int passes = sd->interlace ? png_set_interlace_handling(png) : 1;
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < sd->h; y++) {
            memset(row, 0, rowbytes);
            for (int i = 0; i < sd->w * ch; i++) {
                unsigned v = sd->sample(y * sd->w * ch + i);
                if (sd->depth == 16) {
                    row[2 * i] = (uint8_t)(v >> 8);
                    row[2 * i + 1] = (uint8_t)v;
                } else if (sd->depth == 8) {
                    row[i] = (uint8_t)v;
                } else {
                    int per = 8 / sd->depth, k = i % per;
                    row[i / per] |= (uint8_t)((v & ((1u << sd->depth) - 1)) << (8 - sd->depth * (k + 1)));
                }
            }
            png_write_row(png, row);
        }
    png_write_end(png, NULL);
    return 1;
}

static void put_png_seed(const png_seed *sd) {
    int ch = sd->ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : sd->ct == PNG_COLOR_TYPE_RGB ? 3
             : sd->ct == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : 1;
    size_t rowbytes = ((size_t)sd->w * ch * sd->depth + 7) / 8;
    uint8_t *row = calloc(rowbytes, 1);
    char p[1024];
    snprintf(p, sizeof p, "%s/png/%s", g_root, sd->name);
    FILE *f = fopen(p, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    int ok = row && f && info && seed_body(png, info, f, sd, row, rowbytes, ch);
    png_destroy_write_struct(&png, &info);
    if (f) fclose(f);
    free(row);
    if (!ok) {
        fprintf(stderr, "make_corpus: cannot write %s\n", p);
        exit(1);
    }
    /* say what the library makes of it, as an image and as a mask */
    loco_image img;
    loco_status s = loco_png_read(p, &img);
    if (s == LOCO_OK) {
        uint8_t *m = malloc((size_t)img.width * img.height);
        loco_status ms = loco_mask_png(p, img.height, img.width, m);
        size_t in = 0;
        for (size_t i = 0; ms == LOCO_OK && i < (size_t)img.width * img.height; i++) in += m[i];
        printf("%s: %dx%dx%d, mask %s%zu inside\n", sd->name, img.width, img.height, img.channels,
               ms ? "refused, " : "", in);
        free(m);
        loco_free(img.data);
    } else {
        printf("%s: refused: %s\n", sd->name, loco_last_error());
    }
}

static unsigned s_ramp16(int i) { return (unsigned)(i * 4099 + 0x8080) & 0xffff; }
static unsigned s_ramp8(int i) { return (unsigned)(i * 53) & 0xff; }
static unsigned s_index(int i) { return (unsigned)(i * 5 + i / 7) % 6; }
static unsigned s_bits(int i) { return (unsigned)(i * 7 + 3) % 16; }
/* RGBA mask: colour on even pixels, alpha on every third */
static unsigned s_mask_rgba(int i) { return i % 4 == 3 ? ((i / 4) % 3 == 0 ? 0 : 255) : ((i / 4) % 2 ? 0 : 255); }
/* 16-bit gray+alpha mask: small values, inside only where both are nonzero */
static unsigned s_mask_ga16(int i) { return (unsigned)((i * 3) % 5 == 0 ? 0 : (i % 3)); }
/* 5 x 7 palette indices with one past a 6-entry palette */
static unsigned s_bad_index(int i) { return i == 17 ? 9u : (unsigned)i % 6; }

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus OUT_ROOT\n");
        return 2;
    }
    g_root = argv[1];
    float f32[12] = {0, 1, -2, 3.5f, 1e-3f, 5, 6, 7, 8, 9, 10, 11};
    uint16_t f16[4] = {0x3c00, 0xc000, 0x7bff, 0x0001}, bf16[4] = {0x3f80, 0xc000, 0x7f7f, 0x0001};
    double f64[2] = {1.5, -2.5};
    int64_t i64[2] = {7, -7};
    int32_t i32[2] = {7, -7};
    uint8_t u8[4] = {0, 1, 255, 3};
    loco_tensor_ref t[] = {
        {"conv.weight", LOCO_DTYPE_F32, 4, {1, 3, 2, 2}, f32}, {"conv.bias", LOCO_DTYPE_F16, 1, {4}, f16},
        {"norm.weight", LOCO_DTYPE_BF16, 2, {2, 2}, bf16},     {"d", LOCO_DTYPE_F64, 1, {2}, f64},
        {"steps", LOCO_DTYPE_I64, 1, {2}, i64},                {"i", LOCO_DTYPE_I32, 2, {1, 2}, i32},
        {"mask", LOCO_DTYPE_U8, 1, {4}, u8},                   {"flag", LOCO_DTYPE_BOOL, 0, {0}, u8},
        {"empty", LOCO_DTYPE_F32, 2, {0, 3}, NULL},
    };
    const size_t nt = sizeof t / sizeof t[0];
    uint8_t *z;
    size_t n;

    /* ---- pytorch: whole archives in each layout ---- */
    const unsigned layouts[] = {0, LOCO_ZIP_PLAIN, LOCO_ZIP_NO_DESCRIPTOR, LOCO_ZIP_ZIP64_EXTRA};
    for (size_t L = 0; L < 4; L++) {
        char nm[64];
        snprintf(nm, sizeof nm, "state_dict_layout%zu.bin", L);
        check(loco_pt_build(t, L == 0 ? nt : 3, layouts[L], &z, &n));
        put("pytorch", nm, z, n);
        if (L == 0) put_pickle_of("state_dict.pkl", z, n);
        free(z);
    }
    check(loco_pt_build(t, 1, 0, &z, &n));
    put("pytorch", "one_tensor.bin", z, n);
    put_pickle_of("one_tensor.pkl", z, n);
    free(z);

    /* ---- pickle: hand-made ones over the harness's storages 0..4 ---- */
    /* torch 2.x bytes for {'a': 6 floats as 2x3} (storage 0 has 16 floats) */
    static const char torch2[] =
        "\x80\x02}q\x00X\x01\x00\x00\x00" "aq\x01" "ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00"
        "storageq\x03" "ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x00" "0q\x05X\x03\x00\x00\x00" "cpuq\x06K\x10tq\x07"
        "QK\x00K\x02K\x03\x86q\x08K\x03K\x01\x86q\x09\x89" "ccollections\nOrderedDict\nq\x0a)Rq\x0btq\x0cRq\x0ds.";
    check_pickle("torch2_dict.pkl", torch2, sizeof torch2 - 1, 1);
    put("pickle", "torch2_dict.pkl", torch2, sizeof torch2 - 1);
    /* a transposed view and a half-precision strided view, protocol 4 with
     * STACK_GLOBAL and MEMOIZE, _rebuild_parameter, a BUILD state */
    static const char views[] =
        "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x8c\x0ctorch._utils\x94\x8c\x12"
        "_rebuild_tensor_v2\x94\x93\x94(" "(\x8c\x07storage\x8c\x05torch\x8c\x0c" "FloatStorage\x93\x8c\x01" "0\x8c\x03"
        "cpuK\x10tQK\x01K\x03K\x02\x86K\x01K\x03\x86\x89\x8c\x0b" "collections\x8c\x0bOrderedDict\x93\x94)Rt"
        "R\x8c\x01h\x8c\x0ctorch._utils\x8c\x12_rebuild_parameter\x93(h\x03(" "(\x8c\x07storage\x8c\x05torch\x8c\x0b"
        "HalfStorage\x93\x8c\x01" "1\x8c\x03" "cpuK tQK\x02K\x02K\x04\x86K\x08K\x02\x86\x89h\x04)Rt"
        "R\x88h\x04)RtRu}\x8c\x09_metadata](G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x8a\x01\xff" "esb.";
    check_pickle("views_proto4.pkl", views, sizeof views - 1, 1);
    put("pickle", "views_proto4.pkl", views, sizeof views - 1);
    /* refused things, for the fuzzer to start near them */
    static const char evil[] = "\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00id\x85R.";
    check_pickle("os_system.pkl", evil, sizeof evil - 1, 0);
    put("pickle", "os_system.pkl", evil, sizeof evil - 1);
    static const char nest[] = "\x80\x02((((((]q\x00h\x00" "alllll.";
    check_pickle("nested.pkl", nest, sizeof nest - 1, 0);
    put("pickle", "nested.pkl", nest, sizeof nest - 1);

    /* ---- safetensors ---- */
    const char *meta[] = {"format", "pt", "note", "seed"};
    const char *ps = "/tmp/loco-make-corpus.safetensors";
    struct {
        const char *name;
        size_t from, n, n_meta;
    } sts[] = {{"floats.safetensors", 0, 3, 2}, {"all_dtypes.safetensors", 0, 8, 0}, {"ints.safetensors", 4, 4, 1},
               {"empty_tensor.safetensors", 8, 1, 0}, {"none.safetensors", 0, 0, 0}};
    for (size_t i = 0; i < sizeof sts / sizeof sts[0]; i++) {
        check(loco_tensors_write(ps, t + sts[i].from, sts[i].n, meta, sts[i].n_meta));
        char *b;
        size_t bl;
        check(loco_read_file(ps, &b, &bl, 1 << 20));
        put("safetensors", sts[i].name, b, bl);
        free(b);
    }
    remove(ps);

    /* ---- png: each channel count ---- */
    const char *pp = "/tmp/loco-make-corpus.png";
    for (int ch = 1; ch <= 4; ch++) {
        uint8_t px[6 * 5 * 4];
        for (size_t k = 0; k < sizeof px; k++) px[k] = (uint8_t)((k * 53) & 0xff);
        loco_image img = {6, 5, ch, px};
        check(loco_png_write(pp, &img));
        char *b;
        size_t bl;
        check(loco_read_file(pp, &b, &bl, 1 << 20));
        char nm[32];
        snprintf(nm, sizeof nm, "ch%d_6x5.png", ch);
        put("png", nm, b, bl);
        free(b);
    }
    remove(pp);

    /* ---- png: 16-bit, palettes, tRNS, low bit depths, interlacing, masks
     * gated by alpha (fz_png reads each as an image and as a mask) ---- */
    static const png_color pal[6] = {{0, 0, 0}, {255, 255, 255}, {200, 10, 20}, {1, 2, 3}, {9, 99, 199}, {0, 0, 1}};
    static const uint8_t talpha[3] = {255, 0, 77};
    static const png_color_16 tgray16 = {.gray = 0x8080}, trgb = {.red = 53, .green = 106, .blue = 159};
    const png_seed seeds[] = {
        {"gray16_6x5.png", 6, 5, 16, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, NULL, s_ramp16},
        {"gray16_trns_6x5.png", 6, 5, 16, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, &tgray16, s_ramp16},
        {"ga16_mask_6x5.png", 6, 5, 16, PNG_COLOR_TYPE_GRAY_ALPHA, 0, NULL, 0, NULL, 0, NULL, s_mask_ga16},
        {"rgb16_adam7_9x7.png", 9, 7, 16, PNG_COLOR_TYPE_RGB, 1, NULL, 0, NULL, 0, NULL, s_ramp16},
        {"rgba16_6x5.png", 6, 5, 16, PNG_COLOR_TYPE_RGB_ALPHA, 0, NULL, 0, NULL, 0, NULL, s_ramp16},
        {"rgb_trns_6x5.png", 6, 5, 8, PNG_COLOR_TYPE_RGB, 0, NULL, 0, NULL, 0, &trgb, s_ramp8},
        {"rgba_mask_6x5.png", 6, 5, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, NULL, 0, NULL, 0, NULL, s_mask_rgba},
        {"palette8_6x5.png", 6, 5, 8, PNG_COLOR_TYPE_PALETTE, 0, pal, 6, NULL, 0, NULL, s_index},
        {"palette4_trns_7x5.png", 7, 5, 4, PNG_COLOR_TYPE_PALETTE, 0, pal, 6, talpha, 3, NULL, s_index},
        {"palette2_adam7_9x7.png", 9, 7, 2, PNG_COLOR_TYPE_PALETTE, 1, pal, 4, talpha, 2, NULL, s_index},
        {"palette_bad_index_5x7.png", 5, 7, 8, PNG_COLOR_TYPE_PALETTE, 0, pal, 6, NULL, 0, NULL, s_bad_index},
        {"gray1_13x3.png", 13, 3, 1, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, NULL, s_bits},
        {"gray2_7x3.png", 7, 3, 2, PNG_COLOR_TYPE_GRAY, 0, NULL, 0, NULL, 0, NULL, s_bits},
        {"gray4_adam7_9x7.png", 9, 7, 4, PNG_COLOR_TYPE_GRAY, 1, NULL, 0, NULL, 0, NULL, s_bits},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) put_png_seed(&seeds[i]);
    return 0;
}
