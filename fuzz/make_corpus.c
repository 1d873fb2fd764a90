/* make_corpus.c - writes the seed corpora fuzz/corpus/<target>/ (small files
 * made with the library's own writers, plus copies of a few fixtures made by
 * fuzz/run.sh). Run by `fuzz/run.sh --seeds`; the output is committed, so it
 * only needs running again when the formats change.
 *   make_corpus OUT_ROOT     (OUT_ROOT/<target>/ must exist) */
#include "internal.h"

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
    return 0;
}
