/* test_pytorch.c - PyTorch checkpoints (src/formats/) without Python: round
 * trips through our torch.save-layout writer for every dtype, hand-made
 * pickles (strided views, shared storages, protocol 4, the exact bytes torch
 * 2.x writes), model folders with only diffusion_pytorch_model.bin (eps equal
 * to the safetensors model's, bit for bit), conversion to safetensors, and
 * hostile files: forbidden globals and opcodes, huge sizes, views outside
 * their storage, damaged zips (every truncation, every flipped byte, wrong
 * CRC, compression, encryption, overlaps), recursion and memo bombs, and every
 * fuzzing regression input (fuzz/regressions, fuzz/corpus). */
#include "testutil.h"
#include "internal.h"
#include "tmpdir.h"
#include "../fuzz/harness.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Temporary folder, files                                                  */
/* ------------------------------------------------------------------------ */



static uint8_t *read_raw(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if ((size_t)len && fread(b, 1, (size_t)len, f) != (size_t)len) fail_msg("%s: short read", path);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void copy_path(const char *from, const char *to) {
    size_t n;
    uint8_t *b = read_raw(from, &n);
    write_raw(to, b, n);
    free(b);
}

static const char *mkdir_t(const char *name) {
    const char *d = tpath(name);
    if (mkdir(d, 0700) != 0) fail_msg("mkdir %s: %s", d, strerror(errno));
    return d;
}

static const char *in_dir(const char *dir, const char *name) {
    static char buf[8][512];
    static int k = 0;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

/* The last error message mentions `needle`. */
static void expect_msg_has(const char *needle) {
    if (!strstr(loco_last_error(), needle))
        fail_msg("error message '%s' does not mention '%s'", loco_last_error(), needle);
}

/* Opening must fail with `want`, leave *out NULL and mention the needles. */
static void expect_pt_fails(const char *path, loco_status want, const char *n1, const char *n2) {
    loco_pt *f = (loco_pt *)(uintptr_t)1;
    loco_status s = loco_pt_open(path, &f);
    if (f) {
        if (s == LOCO_OK) loco_pt_close(f);
        fail_msg("%s: open gave %s and a non-NULL handle (expected a failure mentioning '%s')", path,
                 loco_strerror(s), n1 ? n1 : "");
    }
    expect_error(s, want, n1, n2);
}

/* ------------------------------------------------------------------------ */
/* Hand-made pickles                                                        */
/* ------------------------------------------------------------------------ */

typedef struct bb {
    uint8_t *b;
    size_t n, cap;
} bb;

static void bb_put(bb *o, const void *p, size_t k) {
    if (o->n + k > o->cap) {
        o->cap = (o->n + k) * 2 + 64;
        o->b = realloc(o->b, o->cap);
        assert_non_null(o->b);
    }
    memcpy(o->b + o->n, p, k);
    o->n += k;
}
static void bb_u8(bb *o, uint8_t v) { bb_put(o, &v, 1); }
static void bb_raw(bb *o, const char *s) { bb_put(o, s, strlen(s)); }
#define BB_LIT(o, lit) bb_put((o), (lit), sizeof(lit) - 1) /* may hold NULs */
static void bb_u32(bb *o, uint32_t v) {
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bb_put(o, t, 4);
}
static void bb_u64(bb *o, uint64_t v) {
    bb_u32(o, (uint32_t)v);
    bb_u32(o, (uint32_t)(v >> 32));
}
static void bb_str(bb *o, const char *s) { /* BINUNICODE */
    bb_u8(o, 'X');
    bb_u32(o, (uint32_t)strlen(s));
    bb_raw(o, s);
}
static void bb_int(bb *o, int64_t v) { /* BININT, or LONG1 of 8 bytes */
    if (v >= INT32_MIN && v <= INT32_MAX) {
        bb_u8(o, 'J');
        bb_u32(o, (uint32_t)(int32_t)v);
    } else {
        bb_u8(o, 0x8a);
        bb_u8(o, 8);
        bb_u64(o, (uint64_t)v);
    }
}
static void bb_global(bb *o, const char *mod, const char *name) {
    bb_u8(o, 'c');
    bb_raw(o, mod);
    bb_u8(o, '\n');
    bb_raw(o, name);
    bb_u8(o, '\n');
}
static void bb_tuple(bb *o, const int64_t *v, int n) {
    bb_u8(o, '(');
    for (int i = 0; i < n; i++) bb_int(o, v[i]);
    bb_u8(o, 't');
}
/* a persistent id ('storage', torch.<stype>, key, 'cpu', numel) + BINPERSID */
static void bb_storage(bb *o, const char *stype, const char *key, int64_t numel) {
    bb_u8(o, '(');
    bb_str(o, "storage");
    bb_global(o, "torch", stype);
    bb_str(o, key);
    bb_str(o, "cpu");
    bb_int(o, numel);
    bb_u8(o, 't');
    bb_u8(o, 'Q');
}
/* _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) */
static void bb_tensor(bb *o, const char *stype, const char *key, int64_t numel, int64_t off, int nd,
                      const int64_t *size, const int64_t *stride) {
    bb_global(o, "torch._utils", "_rebuild_tensor_v2");
    bb_u8(o, '(');
    bb_storage(o, stype, key, numel);
    bb_int(o, off);
    bb_tuple(o, size, nd);
    bb_tuple(o, stride, nd);
    bb_u8(o, 0x89);
    bb_global(o, "collections", "OrderedDict");
    bb_u8(o, ')');
    bb_u8(o, 'R');
    bb_u8(o, 't');
    bb_u8(o, 'R');
}
/* PROTO 2, EMPTY_DICT; items are key, tensor, SETITEM; then STOP */
static void bb_begin(bb *o) {
    o->n = 0;
    bb_u8(o, 0x80);
    bb_u8(o, 2);
    bb_u8(o, '}');
}

typedef struct stor {
    const char *key;
    const void *data;
    size_t len;
} stor;

/* an archive "archive/" with data.pkl = pk and the storages, written to path */
static void write_archive(const char *path, const uint8_t *pk, size_t pkl, const stor *st, size_t ns, unsigned flags) {
    loco_zip_item it[32];
    char names[32][64];
    assert_true(ns < 30);
    size_t k = 0;
    it[k++] = (loco_zip_item){"archive/data.pkl", pk, pkl};
    for (size_t i = 0; i < ns; i++) {
        snprintf(names[i], sizeof names[i], "archive/data/%s", st[i].key);
        it[k++] = (loco_zip_item){names[i], st[i].data, st[i].len};
    }
    it[k++] = (loco_zip_item){"archive/version", "3\n", 2};
    uint8_t *z;
    size_t zl;
    CHECK_OK(loco_zip_build(it, k, flags, &z, &zl));
    write_raw(path, z, zl);
    free(z);
}

/* a pickle ending the usual way (SETITEM ... STOP) over 12 floats 0..11 */
static float g_f12[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const stor g_st12[] = {{"0", g_f12, sizeof g_f12}};

static void write_pickle_f12(const char *path, bb *o) { write_archive(path, o->b, o->n, g_st12, 1, 0); }

/* ------------------------------------------------------------------------ */
/* Round trips through the writer                                           */
/* ------------------------------------------------------------------------ */

static void test_roundtrip_dtypes(void **state) {
    (void)state;
    float f32[6] = {1.5f, -2.25f, 3e-8f, 65504.0f, -0.0f, 1e30f};
    uint16_t f16[6] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000, 0x3555}; /* 1, -2, tiny, 65504, -0, ~1/3 */
    uint16_t bf16[6] = {0x3f80, 0xc000, 0x0001, 0x7f7f, 0x8000, 0x3eab};
    double f64[6] = {1.0, -2.5, 1e-300, 1e300, 0.125, -7.0};
    int64_t i64[6] = {0, -1, INT64_MAX, INT64_MIN, 42, 1 << 30};
    int32_t i32[6] = {0, -1, INT32_MAX, INT32_MIN, 42, 7};
    int8_t i8[6] = {0, -1, 127, -128, 42, 7};
    uint8_t u8[6] = {0, 1, 255, 128, 42, 7};
    uint8_t bl[6] = {0, 1, 1, 0, 1, 0};
    loco_tensor_ref t[] = {
        {"a.f32", LOCO_DTYPE_F32, 2, {2, 3}, f32},   {"a.f16", LOCO_DTYPE_F16, 2, {3, 2}, f16},
        {"a.bf16", LOCO_DTYPE_BF16, 1, {6}, bf16},   {"a.f64", LOCO_DTYPE_F64, 3, {1, 2, 3}, f64},
        {"a.i64", LOCO_DTYPE_I64, 1, {6}, i64},      {"a.i32", LOCO_DTYPE_I32, 2, {6, 1}, i32},
        {"a.i8", LOCO_DTYPE_I8, 1, {6}, i8},         {"a.u8", LOCO_DTYPE_U8, 1, {6}, u8},
        {"a.bool", LOCO_DTYPE_BOOL, 1, {6}, bl},     {"scalar", LOCO_DTYPE_F32, 0, {0}, f32},
        {"empty", LOCO_DTYPE_F32, 2, {0, 5}, NULL},  {"rank8", LOCO_DTYPE_U8, 8, {1, 2, 1, 3, 1, 1, 1, 1}, u8},
    };
    const size_t nt = sizeof t / sizeof t[0];
    const unsigned layouts[] = {0, LOCO_ZIP_PLAIN, LOCO_ZIP_NO_DESCRIPTOR, LOCO_ZIP_ZIP64_EXTRA,
                                LOCO_ZIP_PLAIN | LOCO_ZIP_NO_DESCRIPTOR};
    for (size_t L = 0; L < sizeof layouts / sizeof layouts[0]; L++) {
        const char *p = tpath("rt.pt");
        if (layouts[L] == 0) {
            CHECK_OK(loco_pt_write(p, t, nt));
        } else {
            uint8_t *z;
            size_t zl;
            CHECK_OK(loco_pt_build(t, nt, layouts[L], &z, &zl));
            write_raw(p, z, zl);
            free(z);
        }
        loco_pt *f;
        CHECK_OK(loco_pt_open(p, &f));
        assert_int_equal(loco_pt_count(f), nt);
        for (size_t i = 0; i < nt; i++) {
            assert_string_equal(loco_pt_name(f, i), t[i].name); /* the pickle's order */
            loco_dtype dt;
            int nd;
            int64_t sh[LOCO_MAX_DIMS];
            CHECK_OK(loco_pt_info(f, t[i].name, &dt, &nd, sh));
            assert_int_equal(dt, t[i].dtype);
            assert_int_equal(nd, t[i].ndim);
            size_t numel = 1;
            for (int d = 0; d < nd; d++) {
                assert_int_equal(sh[d], t[i].shape[d]);
                numel *= (size_t)sh[d];
            }
            void *raw;
            size_t nb;
            CHECK_OK(loco_pt_read(f, t[i].name, &raw, &nb));
            assert_int_equal(nb, numel * loco_dtype_size(dt));
            if (nb) assert_memory_equal(raw, t[i].data, nb);
            loco_free(raw);
            float *x;
            loco_status s = loco_pt_read_f32(f, t[i].name, &x, NULL, NULL, 1);
            if (dt == LOCO_DTYPE_I64 || dt == LOCO_DTYPE_I32 || dt == LOCO_DTYPE_I8) {
                expect_error(s, LOCO_E_UNSUPPORTED, t[i].name, "float");
                continue;
            }
            CHECK_OK(s);
            /* the same conversion as the safetensors reader's */
            for (size_t k = 0; k < numel; k++) {
                float want;
                const uint8_t *src = t[i].data;
                switch (dt) {
                case LOCO_DTYPE_F32: memcpy(&want, src + 4 * k, 4); break;
                case LOCO_DTYPE_F16: want = loco_f16_to_f32(((const uint16_t *)t[i].data)[k]); break;
                case LOCO_DTYPE_BF16: want = loco_bf16_to_f32(((const uint16_t *)t[i].data)[k]); break;
                case LOCO_DTYPE_F64: want = (float)((const double *)t[i].data)[k]; break;
                default: want = (float)src[k]; break;
                }
                if (memcmp(&want, &x[k], 4) != 0) fail_msg("%s[%zu]: %g, want %g", t[i].name, k, x[k], want);
            }
            loco_free(x);
        }
        /* F64 1e300 does not fit a float: non-finite unless allowed */
        float *x;
        expect_error(loco_pt_read_f32(f, "a.f64", &x, NULL, NULL, 0), LOCO_E_NUMERIC, "a.f64", "not finite");
        assert_null(x);
        expect_error(loco_pt_info(f, "nope", NULL, NULL, NULL), LOCO_E_NOT_FOUND, "nope", p);
        loco_pt_close(f);
    }
    /* loco_weights sees the same file as PyTorch, a safetensors one as such */
    loco_weights *w;
    CHECK_OK(loco_weights_open(tpath("rt.pt"), &w));
    assert_int_equal(loco_weights_get_format(w), LOCO_WEIGHTS_PYTORCH);
    assert_int_equal(loco_weights_count(w), nt);
    loco_weights_close(w);
    CHECK_OK(loco_tensors_write(tpath("rt.safetensors"), t, nt, NULL, 0));
    CHECK_OK(loco_weights_open(tpath("rt.safetensors"), &w));
    assert_int_equal(loco_weights_get_format(w), LOCO_WEIGHTS_SAFETENSORS);
    void *raw;
    size_t nb;
    CHECK_OK(loco_weights_read(w, "a.f16", &raw, &nb));
    assert_int_equal(nb, sizeof f16);
    assert_memory_equal(raw, f16, nb);
    loco_free(raw);
    loco_weights_close(w);
    /* writer arguments */
    expect_error(loco_pt_write(tpath("bad.pt"), (loco_tensor_ref[]){{"", LOCO_DTYPE_F32, 1, {1}, f32}}, 1),
                 LOCO_E_INVALID_ARGUMENT, "bad.pt", "name");
    loco_tensor_ref twice[2] = {t[0], t[0]};
    expect_error(loco_pt_write(tpath("bad.pt"), twice, 2), LOCO_E_INVALID_ARGUMENT, "a.f32", "twice");
    expect_error(loco_pt_write(tpath("bad.pt"), (loco_tensor_ref[]){{"x", LOCO_DTYPE_F32, 1, {-1}, f32}}, 1),
                 LOCO_E_INVALID_ARGUMENT, "x", "shape");
    assert_false(loco_file_exists(tpath("bad.pt")));
}

/* 2500 tensors: SETITEMS batches of 1000 and memo indices past 255 */
static void test_roundtrip_many(void **state) {
    (void)state;
    enum { N = 2500 };
    loco_tensor_ref *t = calloc(N, sizeof *t);
    char(*names)[32] = calloc(N, 32);
    float *v = calloc(N, sizeof *v);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], 32, "layer.%d.w", i);
        v[i] = (float)i * 0.5f;
        t[i] = (loco_tensor_ref){names[i], LOCO_DTYPE_F32, 1, {1}, &v[i]};
    }
    CHECK_OK(loco_pt_write(tpath("many.bin"), t, N));
    loco_pt *f;
    CHECK_OK(loco_pt_open(tpath("many.bin"), &f));
    assert_int_equal(loco_pt_count(f), N);
    for (int i = 0; i < N; i += 97) {
        float *x;
        CHECK_OK(loco_pt_read_f32(f, names[i], &x, NULL, NULL, 0));
        assert_true(x[0] == v[i]);
        loco_free(x);
    }
    loco_pt_close(f);
    /* exactly one tensor (SETITEM rather than SETITEMS) and none at all */
    CHECK_OK(loco_pt_write(tpath("one.bin"), t, 1));
    CHECK_OK(loco_pt_open(tpath("one.bin"), &f));
    assert_int_equal(loco_pt_count(f), 1);
    loco_pt_close(f);
    CHECK_OK(loco_pt_write(tpath("none.bin"), t, 0));
    CHECK_OK(loco_pt_open(tpath("none.bin"), &f));
    assert_int_equal(loco_pt_count(f), 0);
    loco_pt_close(f);
    free(t);
    free(names);
    free(v);
}

/* ------------------------------------------------------------------------ */
/* Hand-made files: views, protocol 4, torch's own bytes                     */
/* ------------------------------------------------------------------------ */

static void expect_f32(loco_pt *f, const char *name, int nd, const int64_t *shape, const float *want, size_t n) {
    float *x;
    int got_nd;
    int64_t sh[LOCO_MAX_DIMS];
    CHECK_OK(loco_pt_read_f32(f, name, &x, &got_nd, sh, 0));
    assert_int_equal(got_nd, nd);
    for (int d = 0; d < nd; d++) assert_int_equal(sh[d], shape[d]);
    for (size_t i = 0; i < n; i++)
        if (x[i] != want[i]) fail_msg("%s[%zu] = %g, want %g", name, i, x[i], want[i]);
    loco_free(x);
}

static void test_views(void **state) {
    (void)state;
    uint16_t h[8];
    for (int i = 0; i < 8; i++) h[i] = loco_f32_to_f16((float)(10 * i));
    bb o = {0};
    bb_begin(&o);
    struct {
        const char *name;
        const char *stype, *key;
        int64_t numel, off;
        int nd;
        int64_t size[4], stride[4];
    } v[] = {
        {"t", "FloatStorage", "0", 12, 0, 2, {3, 2}, {1, 3}},               /* a transpose      */
        {"slice", "FloatStorage", "0", 12, 1, 2, {2, 2}, {4, 1}},           /* x[0:2, 1:3] of 3x4 */
        {"step", "FloatStorage", "0", 12, 3, 1, {3}, {4}},                  /* a column          */
        {"shared", "FloatStorage", "0", 12, 0, 1, {12}, {1}},               /* the whole storage */
        {"scalar", "FloatStorage", "0", 12, 5, 0, {0}, {0}},                /* 0-d               */
        {"empty", "FloatStorage", "0", 12, 12, 2, {0, 4}, {4, 1}},          /* no elements       */
        {"perm", "FloatStorage", "0", 12, 0, 3, {2, 2, 3}, {1, 6, 2}},      /* a permutation     */
        {"ones", "FloatStorage", "0", 12, 7, 3, {1, 2, 1}, {99, 2, 1000}},  /* size-1 strides    */
        {"half", "HalfStorage", "1", 8, 1, 2, {2, 3}, {1, 2}},              /* F16, strided      */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        bb_str(&o, v[i].name);
        bb_tensor(&o, v[i].stype, v[i].key, v[i].numel, v[i].off, v[i].nd, v[i].size, v[i].stride);
        bb_u8(&o, 's');
    }
    bb_u8(&o, '.');
    stor st[] = {{"0", g_f12, sizeof g_f12}, {"1", h, sizeof h}};
    write_archive(tpath("views.pt"), o.b, o.n, st, 2, 0);
    loco_pt *f;
    CHECK_OK(loco_pt_open(tpath("views.pt"), &f));
    expect_f32(f, "t", 2, (int64_t[]){3, 2}, (float[]){0, 3, 1, 4, 2, 5}, 6);
    expect_f32(f, "slice", 2, (int64_t[]){2, 2}, (float[]){1, 2, 5, 6}, 4);
    expect_f32(f, "step", 1, (int64_t[]){3}, (float[]){3, 7, 11}, 3);
    expect_f32(f, "shared", 1, (int64_t[]){12}, g_f12, 12);
    expect_f32(f, "scalar", 0, NULL, (float[]){5}, 1);
    expect_f32(f, "empty", 2, (int64_t[]){0, 4}, NULL, 0);
    expect_f32(f, "perm", 3, (int64_t[]){2, 2, 3}, (float[]){0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11}, 12);
    expect_f32(f, "ones", 3, (int64_t[]){1, 2, 1}, (float[]){7, 9}, 2);
    expect_f32(f, "half", 2, (int64_t[]){2, 3}, (float[]){10, 30, 50, 20, 40, 60}, 6);
    /* raw bytes of a strided F16 view, gathered */
    void *raw;
    size_t nb;
    CHECK_OK(loco_pt_read(f, "half", &raw, &nb));
    assert_int_equal(nb, 12);
    uint16_t want[6] = {h[1], h[3], h[5], h[2], h[4], h[6]};
    assert_memory_equal(raw, want, 12);
    loco_free(raw);
    loco_pt_close(f);
    free(o.b);
}

/* what torch 2.x writes for torch.save({'a': t}) with t = arange(6.).view(2,3)
 * (pickletools of a real file), in a zip laid out as PyTorch's miniz does */
static void test_torch_bytes(void **state) {
    (void)state;
    static const char pk[] =
        "\x80\x02}q\x00X\x01\x00\x00\x00" "aq\x01" "ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03"
        "ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x00""0q\x05X\x03\x00\x00\x00""cpuq\x06K\x06tq\x07QK\x00K\x02K\x03"
        "\x86q\x08K\x03K\x01\x86q\x09\x89""ccollections\nOrderedDict\nq\x0a)Rq\x0btq\x0cRq\x0ds.";
    const float a[6] = {0, 1, 2, 3, 4, 5};
    loco_zip_item it[] = {
        {"archive/data.pkl", pk, sizeof pk - 1}, {"archive/byteorder", "little", 6}, {"archive/data/0", a, sizeof a},
        {"archive/version", "3\n", 2},           {"archive/.data/serialization_id", "1234567890123456789012345678901234567890", 40},
    };
    uint8_t *z;
    size_t zl;
    CHECK_OK(loco_zip_build(it, 5, 0, &z, &zl));
    /* PyTorch's layout: data 64-byte aligned, sizes in data descriptors */
    for (size_t i = 0; i + 4 <= zl; i++)
        if (!memcmp(z + i, "PK\x03\x04", 4)) {
            uint16_t nl = (uint16_t)(z[i + 26] | z[i + 27] << 8), xl = (uint16_t)(z[i + 28] | z[i + 29] << 8);
            assert_int_equal((i + 30 + nl + xl) % 64, 0);
            assert_int_equal(z[i + 6] & 8, 8);
        }
    write_raw(tpath("torch2.pt"), z, zl);
    free(z);
    loco_pt *f;
    CHECK_OK(loco_pt_open(tpath("torch2.pt"), &f));
    assert_int_equal(loco_pt_count(f), 1);
    expect_f32(f, "a", 2, (int64_t[]){2, 3}, a, 6);
    loco_pt_close(f);
}

/* protocol 4: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, a plain dict
 * built with DICT, _rebuild_parameter, LONG1, BININT2, a state with lists,
 * floats and None set by BUILD on an OrderedDict */
static void test_protocol4(void **state) {
    (void)state;
    bb o = {0};
    bb_u8(&o, 0x80);
    bb_u8(&o, 4);
    bb_u8(&o, 0x95);
    bb_u64(&o, 0); /* FRAME (a size hint only) */
    /* OrderedDict() via STACK_GLOBAL */
    bb_u8(&o, 0x8c);
    bb_u8(&o, 11);
    bb_raw(&o, "collections");
    bb_u8(&o, 0x94);
    bb_u8(&o, 0x8c);
    bb_u8(&o, 11);
    bb_raw(&o, "OrderedDict");
    bb_u8(&o, 0x94);
    bb_u8(&o, 0x93);
    bb_u8(&o, 0x94); /* memo 2: the class */
    bb_u8(&o, ')');
    bb_u8(&o, 'R');
    bb_u8(&o, 0x94); /* memo 3: the dict */
    bb_u8(&o, '(');
    /* key 'w': _rebuild_parameter(_rebuild_tensor_v2(...), True, OrderedDict()) */
    bb_u8(&o, 0x8c);
    bb_u8(&o, 1);
    bb_raw(&o, "w");
    bb_global(&o, "torch._utils", "_rebuild_parameter");
    bb_u8(&o, '(');
    bb_tensor(&o, "FloatStorage", "0", 12, 2, 1, (int64_t[]){4}, (int64_t[]){2});
    bb_u8(&o, 0x88);
    bb_u8(&o, 'h');
    bb_u8(&o, 2);
    bb_u8(&o, ')');
    bb_u8(&o, 'R');
    bb_u8(&o, 't');
    bb_u8(&o, 'R');
    /* key 'v': a tensor whose numel is LONG1 and size BININT2 */
    bb_u8(&o, 0x8c);
    bb_u8(&o, 1);
    bb_raw(&o, "v");
    bb_global(&o, "torch._utils", "_rebuild_tensor_v2");
    bb_u8(&o, '(');
    bb_u8(&o, '(');
    bb_str(&o, "storage");
    bb_global(&o, "torch", "FloatStorage");
    bb_str(&o, "0");
    bb_str(&o, "cuda:0");
    bb_u8(&o, 0x8a);
    bb_u8(&o, 1);
    bb_u8(&o, 12); /* LONG1 12 */
    bb_u8(&o, 't');
    bb_u8(&o, 'Q');
    bb_u8(&o, 'K');
    bb_u8(&o, 0);
    bb_u8(&o, 'M');
    bb_u8(&o, 12);
    bb_u8(&o, 0);
    bb_u8(&o, 0x85);
    bb_u8(&o, 'K');
    bb_u8(&o, 1);
    bb_u8(&o, 0x85);
    bb_u8(&o, 0x89);
    bb_u8(&o, '}');
    bb_u8(&o, '}'); /* metadata: an empty dict */
    bb_u8(&o, 't');
    bb_u8(&o, 'R');
    bb_u8(&o, 'u');
    /* BUILD with {'_metadata': {'': {'version': 1}}, 'x': [1.5, None, True]} */
    bb_u8(&o, '(');
    bb_str(&o, "_metadata");
    bb_u8(&o, '(');
    bb_str(&o, "");
    bb_u8(&o, '(');
    bb_str(&o, "version");
    bb_u8(&o, 'K');
    bb_u8(&o, 1);
    bb_u8(&o, 'd');
    bb_u8(&o, 'd');
    bb_str(&o, "x");
    bb_u8(&o, ']');
    bb_u8(&o, '(');
    bb_u8(&o, 'G');
    const uint8_t onefive[8] = {0x3f, 0xf8, 0, 0, 0, 0, 0, 0};
    bb_put(&o, onefive, 8);
    bb_u8(&o, 'N');
    bb_u8(&o, 0x88);
    bb_u8(&o, 'e');
    bb_u8(&o, 'd');
    bb_u8(&o, 'b');
    bb_u8(&o, '.');
    write_pickle_f12(tpath("p4.pt"), &o);
    loco_pt *f;
    CHECK_OK(loco_pt_open(tpath("p4.pt"), &f));
    assert_int_equal(loco_pt_count(f), 2);
    assert_string_equal(loco_pt_name(f, 0), "w");
    expect_f32(f, "w", 1, (int64_t[]){4}, (float[]){2, 4, 6, 8}, 4);
    expect_f32(f, "v", 1, (int64_t[]){12}, g_f12, 12);
    loco_pt_close(f);
    free(o.b);
}

/* ------------------------------------------------------------------------ */
/* Model folders with diffusion_pytorch_model.bin                           */
/* ------------------------------------------------------------------------ */

#define ST "diffusion_pytorch_model.safetensors"
#define BIN "diffusion_pytorch_model.bin"

typedef struct fixture_w {
    loco_tensors *f;
    loco_tensor_ref *t;
    size_t n;
} fixture_w;

static fixture_w fixture_weights(void) {
    fixture_w w;
    CHECK_OK(loco_tensors_open(fixture_path("unet-small/" ST), &w.f));
    w.n = loco_tensors_count(w.f);
    w.t = calloc(w.n, sizeof *w.t);
    for (size_t i = 0; i < w.n; i++) {
        loco_tensor_ref *r = &w.t[i];
        r->name = loco_tensors_name(w.f, i);
        CHECK_OK(loco_tensors_info(w.f, r->name, &r->dtype, &r->ndim, r->shape));
        CHECK_OK(loco_tensors_raw(w.f, r->name, &r->data, NULL));
    }
    return w;
}

static float *model_eps(const char *path) {
    size_t nx;
    float *x = load_tensor(fixture_path("unet-small/vectors.safetensors"), "x", &nx);
    float *t = load_tensor(fixture_path("unet-small/vectors.safetensors"), "t", NULL);
    loco_model *m;
    CHECK_OK(loco_model_open(path, &m));
    float *eps = malloc(nx * sizeof *eps);
    CHECK_OK(loco_model_eps(m, 1, x, t, eps));
    loco_model_free(m);
    loco_free(x);
    loco_free(t);
    return eps;
}

static void test_model_folder_bin(void **state) {
    (void)state;
    const size_t n_eps = 3 * 32 * 32;
    fixture_w w = fixture_weights();
    /* only the .bin */
    const char *d = mkdir_t("binmodel");
    copy_path(fixture_path("unet-small/config.json"), in_dir(d, "config.json"));
    CHECK_OK(loco_pt_write(in_dir(d, BIN), w.t, w.n));
    char *wp;
    CHECK_OK(loco_model_weights_path(d, &wp));
    assert_string_equal(wp, in_dir(d, BIN));
    loco_free(wp);
    float *ref = model_eps(fixture_path("unet-small"));
    float *got = model_eps(d);
    assert_memory_equal(got, ref, n_eps * sizeof(float)); /* bit for bit */
    free(got);
    float *fx = load_tensor(fixture_path("unet-small/vectors.safetensors"), "eps", NULL);
    CHECK_CLOSE("eps, .bin folder vs fixture eps", ref, fx, n_eps, 1e-4);
    loco_free(fx);
    /* naming the .bin file or the config of such a folder */
    got = model_eps(in_dir(d, BIN));
    assert_memory_equal(got, ref, n_eps * sizeof(float));
    free(got);
    got = model_eps(in_dir(d, "config.json"));
    assert_memory_equal(got, ref, n_eps * sizeof(float));
    free(got);
    /* both files: the safetensors one wins, unless the .bin is named; make
     * them differ by scaling conv_out.bias in the .bin */
    loco_tensor_ref *cob = NULL;
    for (size_t i = 0; i < w.n; i++)
        if (!strcmp(w.t[i].name, "conv_out.bias")) cob = &w.t[i];
    assert_non_null(cob);
    float bias[3];
    memcpy(bias, cob->data, sizeof bias);
    for (int i = 0; i < 3; i++) bias[i] += 1.0f;
    const void *saved = cob->data;
    cob->data = bias;
    const char *d2 = mkdir_t("both");
    copy_path(fixture_path("unet-small/config.json"), in_dir(d2, "config.json"));
    copy_path(fixture_path("unet-small/" ST), in_dir(d2, ST));
    CHECK_OK(loco_pt_write(in_dir(d2, BIN), w.t, w.n));
    cob->data = saved;
    got = model_eps(d2);
    assert_memory_equal(got, ref, n_eps * sizeof(float));
    free(got);
    got = model_eps(in_dir(d2, BIN));
    for (size_t i = 0; i < n_eps; i++) assert_true(fabsf(got[i] - (ref[i] + 1.0f)) < 1e-5f);
    free(got);
    /* a torch-style F16 .bin equals the F16 safetensors model */
    uint16_t **h = calloc(w.n, sizeof *h);
    loco_tensor_ref *t16 = calloc(w.n, sizeof *t16);
    for (size_t i = 0; i < w.n; i++) {
        size_t ne = 1;
        for (int k = 0; k < w.t[i].ndim; k++) ne *= (size_t)w.t[i].shape[k];
        h[i] = malloc(ne * 2 + 2);
        for (size_t k = 0; k < ne; k++) h[i][k] = loco_f32_to_f16(((const float *)w.t[i].data)[k]);
        t16[i] = w.t[i];
        t16[i].dtype = LOCO_DTYPE_F16;
        t16[i].data = h[i];
    }
    const char *d3 = mkdir_t("f16bin"), *d4 = mkdir_t("f16st");
    copy_path(fixture_path("unet-small/config.json"), in_dir(d3, "config.json"));
    copy_path(fixture_path("unet-small/config.json"), in_dir(d4, "config.json"));
    CHECK_OK(loco_pt_write(in_dir(d3, BIN), t16, w.n));
    CHECK_OK(loco_tensors_write(in_dir(d4, ST), t16, w.n, NULL, 0));
    float *g16 = model_eps(d3), *r16 = model_eps(d4);
    assert_memory_equal(g16, r16, n_eps * sizeof(float));
    free(g16);
    free(r16);
    for (size_t i = 0; i < w.n; i++) free(h[i]);
    free(h);
    free(t16);
    /* neither file: the error names both */
    const char *d5 = mkdir_t("noweights");
    copy_path(fixture_path("unet-small/config.json"), in_dir(d5, "config.json"));
    loco_model *m = (loco_model *)(uintptr_t)1;
    expect_error(loco_model_open(d5, &m), LOCO_E_NOT_FOUND, ST, BIN);
    assert_null(m);
    expect_error(loco_model_weights_path(d5, &wp), LOCO_E_NOT_FOUND, d5, BIN);
    /* a .bin missing a tensor or in the legacy format: named errors */
    const char *d6 = mkdir_t("missing");
    copy_path(fixture_path("unet-small/config.json"), in_dir(d6, "config.json"));
    CHECK_OK(loco_pt_write(in_dir(d6, BIN), w.t, w.n - 1));
    expect_error(loco_model_open(d6, &m), LOCO_E_NOT_FOUND, in_dir(d6, BIN), w.t[w.n - 1].name);
    static const uint8_t legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20,
                                     0x6a, 0xa8, 0x50, 0x19, 0x2e, 0x80, 0x02, 0x4d, 0xe9, 0x03};
    write_raw(in_dir(d6, BIN), legacy, sizeof legacy);
    expect_error(loco_model_open(d6, &m), LOCO_E_UNSUPPORTED, in_dir(d6, BIN), "torch>=1.6");
    expect_msg_has("legacy (pre-1.6) format, which is not supported");
    assert_null(m);
    /* an empty .bin, and one of text: errors of the PyTorch reader naming
     * the .bin (they came from the safetensors reader: "too short for a
     * safetensors header", "header is not valid JSON") */
    static const struct {
        const char *bytes;
        size_t len;
        const char *says;
    } notzip[] = {{"", 0, "an empty file, not a PyTorch zip checkpoint"},
                  {"<html>not found</html>\n", 23, "not a PyTorch zip checkpoint (no zip signature)"},
                  {"ab", 2, "not a PyTorch zip checkpoint"},
                  {"\x10\0\0\0\0\0\0\0garbage garbage", 23, "not a PyTorch zip checkpoint"}};
    for (size_t i = 0; i < sizeof notzip / sizeof notzip[0]; i++) {
        write_raw(in_dir(d6, BIN), notzip[i].bytes, notzip[i].len);
        expect_error(loco_model_open(d6, &m), LOCO_E_FORMAT, in_dir(d6, BIN), notzip[i].says);
        assert_null(m);
        loco_weights *wf = (loco_weights *)(uintptr_t)1;
        expect_error(loco_weights_open(in_dir(d6, BIN), &wf), LOCO_E_FORMAT, in_dir(d6, BIN), notzip[i].says);
        assert_null(wf);
        expect_error(loco_convert(d6, tpath("conv-notzip"), LOCO_DTYPE_COUNT), LOCO_E_FORMAT, in_dir(d6, BIN),
                     notzip[i].says);
    }
    free(ref);
    free(w.t);
    loco_tensors_close(w.f);
}

static void test_convert(void **state) {
    (void)state;
    fixture_w w = fixture_weights();
    const char *d = mkdir_t("src");
    copy_path(fixture_path("unet-small/config.json"), in_dir(d, "config.json"));
    CHECK_OK(loco_pt_write(in_dir(d, BIN), w.t, w.n));
    mkdir_t("src/scheduler");
    const char *sched = "{\"num_train_timesteps\": 1000, \"beta_schedule\": \"linear\"}";
    write_raw(in_dir(d, "scheduler/scheduler_config.json"), sched, strlen(sched));
    /* dtype kept: the tensors are the fixture's, byte for byte */
    const char *out = tpath("out/nested");
    CHECK_OK(loco_convert(d, out, LOCO_DTYPE_COUNT));
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(in_dir(out, ST), &f));
    assert_int_equal(loco_tensors_count(f), w.n);
    assert_string_equal(loco_tensors_metadata(f, "format"), "pt");
    for (size_t i = 0; i < w.n; i++) {
        const void *raw;
        size_t nb;
        loco_dtype dt;
        CHECK_OK(loco_tensors_info(f, w.t[i].name, &dt, NULL, NULL));
        assert_int_equal(dt, LOCO_DTYPE_F32);
        CHECK_OK(loco_tensors_raw(f, w.t[i].name, &raw, &nb));
        assert_memory_equal(raw, w.t[i].data, nb);
    }
    loco_tensors_close(f);
    size_t n1, n2;
    uint8_t *c1 = read_raw(fixture_path("unet-small/config.json"), &n1), *c2 = read_raw(in_dir(out, "config.json"), &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(c1, c2, n1);
    free(c1);
    free(c2);
    c1 = read_raw(in_dir(out, "scheduler/scheduler_config.json"), &n1);
    assert_int_equal(n1, strlen(sched));
    free(c1);
    float *a = model_eps(out), *b = model_eps(fixture_path("unet-small"));
    assert_memory_equal(a, b, 3 * 32 * 32 * sizeof(float));
    free(a);
    /* to F16 (from the .bin named directly) */
    CHECK_OK(loco_convert(in_dir(d, BIN), tpath("out16"), LOCO_DTYPE_F16));
    CHECK_OK(loco_tensors_open(in_dir(tpath("out16"), ST), &f));
    for (size_t i = 0; i < w.n; i++) {
        const uint16_t *raw;
        size_t nb;
        loco_dtype dt;
        CHECK_OK(loco_tensors_info(f, w.t[i].name, &dt, NULL, NULL));
        assert_int_equal(dt, LOCO_DTYPE_F16);
        CHECK_OK(loco_tensors_raw(f, w.t[i].name, (const void **)&raw, &nb));
        for (size_t k = 0; k < nb / 2; k++)
            assert_int_equal(raw[k], loco_f32_to_f16(((const float *)w.t[i].data)[k]));
    }
    loco_tensors_close(f);
    a = model_eps(tpath("out16"));
    CHECK_CLOSE("eps of the f16 conversion", a, b, 3 * 32 * 32, 5e-2);
    free(a);
    free(b);
    /* back to F32 from F16 safetensors (lossless widening) */
    CHECK_OK(loco_convert(tpath("out16"), tpath("out32"), LOCO_DTYPE_F32));
    /* a value that does not fit F16 */
    const char *d2 = mkdir_t("big");
    copy_path(fixture_path("unet-small/config.json"), in_dir(d2, "config.json"));
    float big[2] = {1.0f, 1e6f};
    loco_tensor_ref r = {"x", LOCO_DTYPE_F32, 1, {2}, big};
    CHECK_OK(loco_pt_write(in_dir(d2, BIN), &r, 1));
    expect_error(loco_convert(d2, tpath("outbig"), LOCO_DTYPE_F16), LOCO_E_NUMERIC, "'x'", "F16");
    /* no config, bad dtype */
    const char *d3 = mkdir_t("nocfg");
    CHECK_OK(loco_pt_write(in_dir(d3, BIN), &r, 1));
    expect_error(loco_convert(d3, tpath("outx"), LOCO_DTYPE_COUNT), LOCO_E_NOT_FOUND, d3, "config.json");
    expect_error(loco_convert(d, tpath("outx"), LOCO_DTYPE_BF16), LOCO_E_INVALID_ARGUMENT, "F16", NULL);
    free(w.t);
    loco_tensors_close(w.f);
}

/* ------------------------------------------------------------------------ */
/* Hostile pickles                                                          */
/* ------------------------------------------------------------------------ */

/* data.pkl = o, with the 12-float storage; opening must fail */
static void expect_pickle_fails(bb *o, loco_status want, const char *n1, const char *n2) {
    const char *p = tpath("hostile.pt");
    write_pickle_f12(p, o);
    expect_pt_fails(p, want, n1, n2);
}

static void test_forbidden_globals(void **state) {
    (void)state;
    bb o = {0};
    const char *g[][2] = {{"os", "system"},        {"posix", "system"},       {"builtins", "eval"},
                          {"builtins", "exec"},    {"__builtin__", "getattr"}, {"subprocess", "Popen"},
                          {"torch", "load"},       {"torch._utils", "_rebuild_tensor"},
                          {"numpy.core.multiarray", "_reconstruct"}, {"collections", "defaultdict"},
                          {"torch", "UntypedStorage"}, {"torch", "ShortStorage"}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, "'%s.%s'", g[i][0], g[i][1]);
        /* GLOBAL, then REDUCE: refused at the GLOBAL, nothing runs */
        o.n = 0;
        bb_u8(&o, 0x80);
        bb_u8(&o, 2);
        bb_global(&o, g[i][0], g[i][1]);
        bb_str(&o, "touch /tmp/loco-pwned");
        bb_u8(&o, 0x85);
        bb_u8(&o, 'R');
        bb_u8(&o, '.');
        expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, want, "not allowed");
        /* the same through STACK_GLOBAL (protocol 4) */
        o.n = 0;
        bb_u8(&o, 0x80);
        bb_u8(&o, 4);
        bb_str(&o, g[i][0]);
        bb_str(&o, g[i][1]);
        bb_u8(&o, 0x93);
        bb_u8(&o, ')');
        bb_u8(&o, 'R');
        bb_u8(&o, '.');
        expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, want, "data.pkl");
    }
    assert_false(loco_file_exists("/tmp/loco-pwned"));
    /* a name with control characters is shown cleaned */
    o.n = 0;
    bb_u8(&o, 0x80);
    bb_u8(&o, 2);
    bb_global(&o, "os\x1b[2J", "sys\x7ftem");
    bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "'os?[2J.sys?tem'", NULL);
    free(o.b);
}

static void test_forbidden_calls(void **state) {
    (void)state;
    bb o = {0};
    /* REDUCE of a string, of None, of a storage type, of OrderedDict with
     * arguments; _rebuild_tensor_v2 with wrong arguments */
    o.n = 0;
    bb_u8(&o, 0x80), bb_u8(&o, 2), bb_str(&o, "os.system"), bb_u8(&o, ')'), bb_u8(&o, 'R'), bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "REDUCE of a str", NULL);
    o.n = 0;
    bb_u8(&o, 0x80), bb_u8(&o, 2), bb_u8(&o, 'N'), bb_u8(&o, ')'), bb_u8(&o, 'R'), bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "REDUCE of a None", NULL);
    o.n = 0;
    bb_u8(&o, 0x80), bb_u8(&o, 2), bb_global(&o, "torch", "FloatStorage"), bb_u8(&o, ')'), bb_u8(&o, 'R'),
        bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "calling torch.FloatStorage", NULL);
    o.n = 0;
    bb_u8(&o, 0x80), bb_u8(&o, 2), bb_global(&o, "collections", "OrderedDict"), bb_u8(&o, ']'), bb_u8(&o, 0x85),
        bb_u8(&o, 'R'), bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "OrderedDict called with arguments", NULL);
    o.n = 0;
    bb_u8(&o, 0x80), bb_u8(&o, 2), bb_global(&o, "torch._utils", "_rebuild_tensor_v2"), bb_u8(&o, ')'),
        bb_u8(&o, 'R'), bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_FORMAT, "_rebuild_tensor_v2 takes 6 or 7 arguments", NULL);
    o.n = 0;
    bb_u8(&o, 0x80), bb_u8(&o, 2), bb_global(&o, "collections", "OrderedDict"), bb_str(&o, "x"), bb_u8(&o, 'R'),
        bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_FORMAT, "REDUCE with str arguments", NULL);
    /* non-empty backward hooks or tensor metadata (conjugate views) */
    o.n = 0;
    bb_begin(&o);
    bb_str(&o, "w");
    bb_global(&o, "torch._utils", "_rebuild_tensor_v2");
    bb_u8(&o, '(');
    bb_storage(&o, "FloatStorage", "0", 12);
    bb_int(&o, 0);
    bb_tuple(&o, (int64_t[]){12}, 1);
    bb_tuple(&o, (int64_t[]){1}, 1);
    bb_u8(&o, 0x89);
    bb_u8(&o, '}');
    bb_u8(&o, '(');
    bb_str(&o, "conj");
    bb_u8(&o, 0x88);
    bb_u8(&o, 'd');
    bb_u8(&o, 't');
    bb_u8(&o, 'R');
    bb_u8(&o, 's');
    bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "metadata", NULL);
    /* BUILD on anything but a dict; APPEND to a dict; SETITEM on a list */
#define SQ(lit, msg) {lit, sizeof(lit) - 1, msg}
    static const struct {
        const char *b;
        size_t len;
        const char *msg;
    } seqs[] = {SQ("\x80\x02)}b.", "BUILD on a tuple"),
                             SQ("\x80\x02}K\x01" "b.", "BUILD with a int state"),
                             SQ("\x80\x02}Na.", "APPEND to a dict"),
                             SQ("\x80\x02]NNs.", "SETITEM on a list"),
                             SQ("\x80\x02}(Nu.", "odd number"),
                             SQ("\x80\x02(e.", "APPENDS without a list"),
                             SQ("\x80\x02N(N)Q.", "persistent id must be a 5-tuple"),
                             SQ("\x80\x02(X\x06\x00\x00\x00moduleNNNNtQ.", "other than 'storage'"),
                             SQ("\x80\x02" "0.", "POP on an empty stack"),
                             SQ("\x80\x02" "1.", "POP_MARK without a MARK"),
                             SQ("\x80\x02N(.", "STOP needs"),
                             SQ("\x80\x02t.", "TUPLE without a MARK"),
                             SQ("\x80\x02h\x05.", "memo index 5 was never stored"),
                             SQ("\x80\x02q\x00.", "memo store with an empty stack"),
                             SQ("\x80\x06N.", "pickle protocol 6"),
                             SQ("(N.", "not a pickle of protocol 2"),
                             SQ("\x80\x02N", "without STOP"),
                             SQ("\x80\x02K", "BININT1 runs past the end"),
                             SQ("\x80\x02X\xff\xff\xff\xff" "ab.", "BINUNICODE runs past the end"),
                             SQ("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f.", "BINUNICODE8 runs past"),
                             SQ("\x80\x02\x95\xff\xff\xff\xff\x00\x00\x00\x00N.", "FRAME of"),
                             SQ("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.", "integer of 9 bytes"),
                             SQ("\x80\x02Nr\xff\xff\xff\xff.", "memo index 4294967295 is beyond"),
                             SQ("\x80\x02" "cos.system", "GLOBAL without two newline"),
                             SQ("\x80\x02]q\x00h\x00" "a.", "a list, not a state_dict"),
                             SQ("\x80\x02}K\x01N" "s.", "key 0 is int"),
                             SQ("\x80\x02}X\x01\x00\x00\x00" "aK\x01s.", "'a' is a int, not a tensor"),
                             SQ("\x80\x02}X\x01\x00\x00\x00" "a}s.", "'a' is a dict, not a tensor"),
                             SQ("\x80\x02}X\x00\x00\x00\x00N" "s.", "empty"),
                             SQ("\x80\x02X\x03\x00\x00\x00" "a\x00" "b.", "NUL")};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        o.n = 0;
        bb_put(&o, seqs[i].b, seqs[i].len);
        const char *p = tpath("seq.pt");
        write_pickle_f12(p, &o);
        loco_pt *f = (loco_pt *)(uintptr_t)1;
        loco_status s = loco_pt_open(p, &f);
        if (s == LOCO_OK) fail_msg("pickle %zu (%s) was accepted", i, seqs[i].msg);
        assert_null(f);
        if (!strstr(loco_last_error(), seqs[i].msg))
            fail_msg("pickle %zu: message '%s' lacks '%s'", i, loco_last_error(), seqs[i].msg);
        if (!strstr(loco_last_error(), p)) fail_msg("message '%s' does not name the file", loco_last_error());
    }
    free(o.b);
}

static void test_forbidden_opcodes(void **state) {
    (void)state;
    static const struct {
        uint8_t op;
        const char *name;
    } ops[] = {{0x81, "NEWOBJ"},     {0x92, "NEWOBJ_EX"},  {'i', "INST"},         {'o', "OBJ"},
               {0x82, "EXT1"},       {0x83, "EXT2"},       {0x84, "EXT4"},        {'B', "BINBYTES"},
               {'C', "SHORT_BINBYTES"}, {0x8e, "BINBYTES8"}, {0x96, "BYTEARRAY8"}, {0x8f, "EMPTY_SET"},
               {0x90, "ADDITEMS"},   {0x91, "FROZENSET"},  {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"},
               {'P', "PERSID"},      {'g', "GET"},         {'p', "PUT"},          {'I', "INT"},
               {'L', "LONG"},        {'F', "FLOAT"},       {'S', "STRING"},       {'V', "UNICODE"},
               {'T', "BINSTRING"},   {'U', "SHORT_BINSTRING"}, {0x8b, "LONG4"}};
    bb o = {0};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        o.n = 0;
        bb_u8(&o, 0x80);
        bb_u8(&o, 2);
        bb_u8(&o, 'N');
        bb_u8(&o, ops[i].op);
        bb_raw(&o, "0\n0\n0000000000");
        bb_u8(&o, '.');
        char want[64];
        snprintf(want, sizeof want, "opcode %s (0x%02x)", ops[i].name, ops[i].op);
        expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, want, "byte 3");
    }
    o.n = 0;
    bb_raw(&o, "\x80\x02\xff.");
    expect_pickle_fails(&o, LOCO_E_FORMAT, "0xff is not a pickle opcode", NULL);
    free(o.b);
}

static void test_hostile_sizes(void **state) {
    (void)state;
    bb o = {0};
    struct {
        const char *what;
        const char *stype, *key;
        int64_t numel, off;
        int nd;
        int64_t size[9], stride[9];
        loco_status want;
        const char *needle;
    } c[] = {
        {"huge dims", "FloatStorage", "0", 12, 0, 2, {(int64_t)1 << 40, (int64_t)1 << 40}, {1, 1}, LOCO_E_NOMEM, "absurd"},
        {"dim past 2^40", "FloatStorage", "0", 12, 0, 1, {(int64_t)1 << 41}, {1}, LOCO_E_NOMEM, "absurdly large"},
        {"9 dims", "FloatStorage", "0", 12, 0, 9, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1, 1},
         LOCO_E_UNSUPPORTED, "9 dimensions"},
        {"negative size", "FloatStorage", "0", 12, 0, 1, {-1}, {1}, LOCO_E_FORMAT, "size[0] is not an int >= 0"},
        {"negative stride", "FloatStorage", "0", 12, 4, 1, {2}, {-1}, LOCO_E_FORMAT, "stride[0] is not an int >= 0"},
        {"negative offset", "FloatStorage", "0", 12, -1, 1, {2}, {1}, LOCO_E_FORMAT, "storage offset"},
        {"sizes and strides", "FloatStorage", "0", 12, 0, 1, {2}, {1, 1}, LOCO_E_FORMAT, "1 sizes but 2 strides"},
        {"one past the end", "FloatStorage", "0", 12, 0, 1, {13}, {1}, LOCO_E_UNSUPPORTED, "more than the storage"},
        {"view past the end", "FloatStorage", "0", 12, 1, 2, {3, 4}, {4, 1}, LOCO_E_FORMAT, "reaches element 12"},
        {"strided past", "FloatStorage", "0", 12, 0, 1, {2}, {12}, LOCO_E_FORMAT, "reaches element 12"},
        {"offset past", "FloatStorage", "0", 12, 13, 1, {0}, {1}, LOCO_E_FORMAT, "reaches element 13"},
        {"offset far", "FloatStorage", "0", 12, (int64_t)1 << 62, 1, {1}, {1}, LOCO_E_FORMAT, "reaches element"},
        {"stride overflow", "FloatStorage", "0", 12, 0, 2, {2, 2}, {(int64_t)1 << 62, (int64_t)1 << 62}, LOCO_E_NOMEM,
         "absurd"},
        {"broadcast", "FloatStorage", "0", 12, 0, 1, {100}, {0}, LOCO_E_UNSUPPORTED, "broadcast"},
        {"numel vs bytes", "FloatStorage", "0", 13, 0, 1, {1}, {1}, LOCO_E_FORMAT, "needs more bytes"},
        {"numel small", "FloatStorage", "0", 11, 0, 1, {1}, {1}, LOCO_E_FORMAT, "needs fewer bytes"},
        {"numel 2^62", "FloatStorage", "0", (int64_t)1 << 62, 0, 1, {1}, {1}, LOCO_E_FORMAT, "needs more bytes"},
        {"numel negative", "FloatStorage", "0", -5, 0, 1, {1}, {1}, LOCO_E_FORMAT, "size an int >= 0"},
        {"wrong type size", "DoubleStorage", "0", 12, 0, 1, {1}, {1}, LOCO_E_FORMAT, "needs more bytes"},
        {"missing key", "FloatStorage", "7", 12, 0, 1, {1}, {1}, LOCO_E_FORMAT, "'archive/data/7'"},
        {"path key", "FloatStorage", "../../etc/passwd", 12, 0, 1, {1}, {1}, LOCO_E_FORMAT, "has no entry"},
        {"empty key", "FloatStorage", "", 12, 0, 1, {1}, {1}, LOCO_E_FORMAT, "storage key of 0 bytes"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        bb_begin(&o);
        bb_str(&o, "w");
        bb_tensor(&o, c[i].stype, c[i].key, c[i].numel, c[i].off, c[i].nd, c[i].size, c[i].stride);
        if (!strcmp(c[i].what, "sizes and strides")) { /* rebuild with a 2-stride tuple */
            bb_begin(&o);
            bb_str(&o, "w");
            bb_global(&o, "torch._utils", "_rebuild_tensor_v2");
            bb_u8(&o, '(');
            bb_storage(&o, "FloatStorage", "0", 12);
            bb_int(&o, 0);
            bb_tuple(&o, (int64_t[]){2}, 1);
            bb_tuple(&o, (int64_t[]){1, 1}, 2);
            bb_u8(&o, 0x89);
            bb_u8(&o, '}');
            bb_u8(&o, 't');
            bb_u8(&o, 'R');
        }
        bb_u8(&o, 's');
        bb_u8(&o, '.');
        const char *p = tpath("size.pt");
        write_pickle_f12(p, &o);
        loco_pt *f = (loco_pt *)(uintptr_t)1;
        loco_status s = loco_pt_open(p, &f);
        if (s == LOCO_OK) fail_msg("case '%s' was accepted", c[i].what);
        if (s != c[i].want || !strstr(loco_last_error(), c[i].needle))
            fail_msg("case '%s': %s, '%s' (expected %s mentioning '%s')", c[i].what, loco_strerror(s),
                     loco_last_error(), loco_strerror(c[i].want), c[i].needle);
        assert_null(f);
    }
    /* one storage named with two types; duplicate state_dict keys */
    bb_begin(&o);
    bb_str(&o, "a");
    bb_tensor(&o, "FloatStorage", "0", 12, 0, 1, (int64_t[]){1}, (int64_t[]){1});
    bb_u8(&o, 's');
    bb_str(&o, "b");
    bb_tensor(&o, "IntStorage", "0", 12, 0, 1, (int64_t[]){1}, (int64_t[]){1});
    bb_u8(&o, 's');
    bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_FORMAT, "two different types", NULL);
    bb_begin(&o);
    for (int k = 0; k < 2; k++) {
        bb_str(&o, "dup.weight");
        bb_tensor(&o, "FloatStorage", "0", 12, 0, 1, (int64_t[]){1}, (int64_t[]){1});
        bb_u8(&o, 's');
    }
    bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_FORMAT, "'dup.weight' appears twice", NULL);
    free(o.b);
}

/* no recursion anywhere: deep nesting, self-reference and doubling
 * structures all finish quickly with an error, under ASan too */
static void test_recursion_bombs(void **state) {
    (void)state;
    alarm(60);
    bb o = {0};
    const size_t N = 1000000;
    /* a million nested tuples, then nested lists */
    for (int kind = 0; kind < 2; kind++) {
        o.n = 0;
        bb_u8(&o, 0x80);
        bb_u8(&o, 2);
        for (size_t i = 0; i < N; i++) bb_u8(&o, '(');
        for (size_t i = 0; i < N; i++) bb_u8(&o, kind ? 'l' : 't');
        bb_u8(&o, '.');
        expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, kind ? "holds a list" : "holds a tuple", NULL);
    }
    /* a million MARKs and no STOP */
    o.n = 0;
    bb_u8(&o, 0x80);
    bb_u8(&o, 2);
    for (size_t i = 0; i < N; i++) bb_u8(&o, '(');
    expect_pickle_fails(&o, LOCO_E_FORMAT, "without STOP", NULL);
    /* a list that contains itself, as a state_dict value, and a dict that
     * contains itself */
    o.n = 0;
    BB_LIT(&o, "\x80\x02}X\x01\x00\x00\x00x]q\x00h\x00" "as.");
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "'x' is a list", NULL);
    o.n = 0;
    BB_LIT(&o, "\x80\x02}q\x00X\x01\x00\x00\x00xh\x00s.");
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "'x' is a dict", NULL);
    /* billion laughs: 60 levels of l_k = [l_{k-1}, l_{k-1}] (2^60 leaves) */
    o.n = 0;
    BB_LIT(&o, "\x80\x02}X\x01\x00\x00\x00x]q\x00" "0");
    for (int k = 1; k <= 60; k++) {
        bb_u8(&o, '(');
        bb_u8(&o, 'h');
        bb_u8(&o, (uint8_t)(k - 1));
        bb_u8(&o, 'h');
        bb_u8(&o, (uint8_t)(k - 1));
        bb_u8(&o, 'l');
        bb_u8(&o, 'q');
        bb_u8(&o, (uint8_t)k);
        bb_u8(&o, '0');
    }
    bb_raw(&o, "h\x3cs."); /* memo 60 */
    expect_pickle_fails(&o, LOCO_E_UNSUPPORTED, "'x' is a list", NULL);
    /* DUP and object bombs: limits, not memory exhaustion */
    o.n = 0;
    bb_raw(&o, "\x80\x02N");
    for (size_t i = 0; i < ((size_t)1 << 22) + 10; i++) bb_u8(&o, '2');
    bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_NOMEM, "stack passes", NULL);
    o.n = 0;
    bb_raw(&o, "\x80\x02");
    for (size_t i = 0; i < ((size_t)1 << 22) + 10; i++) bb_raw(&o, "N0");
    bb_u8(&o, '.');
    expect_pickle_fails(&o, LOCO_E_NOMEM, "objects", NULL);
    alarm(0);
    free(o.b);
}

/* ------------------------------------------------------------------------ */
/* Damaged archives                                                         */
/* ------------------------------------------------------------------------ */

static uint8_t *small_archive(size_t *len, unsigned flags) {
    float a[5] = {1, 2, 3, 4, 5};
    uint16_t h[3] = {0x3c00, 0x4000, 0x4200};
    loco_tensor_ref t[2] = {{"a", LOCO_DTYPE_F32, 1, {5}, a}, {"h", LOCO_DTYPE_F16, 2, {1, 3}, h}};
    uint8_t *z;
    CHECK_OK(loco_pt_build(t, 2, flags, &z, len));
    return z;
}

static size_t find_bytes(const uint8_t *b, size_t n, const void *needle, size_t k, size_t from) {
    for (size_t i = from; i + k <= n; i++)
        if (!memcmp(b + i, needle, k)) return i;
    fail_msg("pattern not found");
    return 0;
}

static void test_zip_damage(void **state) {
    (void)state;
    alarm(120);
    const unsigned layouts[] = {0, LOCO_ZIP_PLAIN | LOCO_ZIP_NO_DESCRIPTOR, LOCO_ZIP_ZIP64_EXTRA};
    for (size_t L = 0; L < 3; L++) {
        size_t n;
        uint8_t *z = small_archive(&n, layouts[L]);
        uint8_t *c = malloc(n);
        loco_pt *f;
        CHECK_OK(loco_pt_open_mem(z, n, "ok.pt", 0, &f));
        loco_pt_close(f);
        /* every truncation fails cleanly (the end record is then missing) */
        for (size_t k = 0; k < n; k++) {
            memcpy(c, z, k);
            f = (loco_pt *)(uintptr_t)1;
            loco_status s = loco_pt_open_mem(c, k, "cut.pt", 0, &f);
            if (s == LOCO_OK) fail_msg("layout %zu: truncated to %zu of %zu bytes and accepted", L, k, n);
            assert_null(f);
        }
        /* every single flipped byte: an error or a file that still reads
         * (padding, timestamps...); never a crash */
        size_t accepted = 0;
        for (size_t k = 0; k < n; k++) {
            memcpy(c, z, n);
            c[k] ^= 0x5a;
            for (unsigned fl = 0; fl <= LOCO_PT_NO_CRC; fl++)
                if (loco_pt_open_mem(c, n, "flip.pt", fl, &f) == LOCO_OK) {
                    fz_read_all(f);
                    loco_pt_close(f);
                    accepted += fl == 0;
                }
        }
        printf("  layout %zu: %zu bytes, %zu truncations refused, %zu of %zu byte flips still read (CRC on)\n", L, n,
               n, accepted, n);
        free(c);
        free(z);
    }
    alarm(0);
    size_t n;
    uint8_t *z = small_archive(&n, 0), *c = malloc(n);
    const char *p = tpath("damaged.pt");
    /* wrong CRC: one byte of a storage, one byte of data.pkl */
    memcpy(c, z, n);
    size_t at = find_bytes(c, n, "\x00\x00\x80\x3f\x00\x00\x00\x40", 8, 0); /* 1.0f, 2.0f */
    c[at + 3] ^= 1;
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_FORMAT, "'archive/data/0': CRC-32 mismatch", p);
    memcpy(c, z, n);
    at = find_bytes(c, n, "OrderedDict", 11, 0);
    c[at] = 'o';
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_FORMAT, "'archive/data.pkl': CRC-32 mismatch", NULL);
    /* compressed (deflate) and encrypted entries; patch local and central */
    for (int kind = 0; kind < 2; kind++) {
        memcpy(c, z, n);
        for (size_t i = 0; i + 46 <= n; i++) {
            if (!memcmp(c + i, "PK\x03\x04", 4) && !memcmp(c + i + 30, "archive/data/1", 14)) {
                if (kind == 0) c[i + 8] = 8;
                else c[i + 6] |= 1;
            }
            if (!memcmp(c + i, "PK\x01\x02", 4) && !memcmp(c + i + 46, "archive/data/1", 14)) {
                if (kind == 0) c[i + 10] = 8;
                else c[i + 8] |= 1;
            }
        }
        write_raw(p, c, n);
        if (kind == 0) expect_pt_fails(p, LOCO_E_UNSUPPORTED, "'archive/data/1' is compressed (method 8, deflate)", p);
        else expect_pt_fails(p, LOCO_E_UNSUPPORTED, "'archive/data/1' is encrypted", p);
    }
    /* two central entries on one local header: overlap */
    memcpy(c, z, n);
    size_t c0 = find_bytes(c, n, "PK\x01\x02", 4, 0);
    size_t c1 = find_bytes(c, n, "PK\x01\x02", 4, find_bytes(c, n, "archive/data/0", 14, c0) - 46); /* data/0's entry */
    size_t c2 = find_bytes(c, n, "PK\x01\x02", 4, c1 + 4);                                     /* data/1's entry */
    memcpy(c + c2 + 46, "archive/data/0", 14);
    memcpy(c + c2 + 42, c + c1 + 42, 4);
    memcpy(c + c2 + 16, c + c1 + 16, 12);
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_FORMAT, "overlap", NULL);
    /* central directory offset, entry count and zip64 locator out of range */
    size_t e64 = find_bytes(z, n, "PK\x06\x06", 4, 0), loc = find_bytes(z, n, "PK\x06\x07", 4, 0);
    memcpy(c, z, n);
    c[e64 + 48 + 5] = 0x7f; /* zip64 central directory offset */
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_FORMAT, "central directory", "outside the file");
    memcpy(c, z, n);
    c[e64 + 24 + 6] = 0x01; /* 2^48 entries (on this disk and in all) */
    c[e64 + 32 + 6] = 0x01;
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_FORMAT, "entries cannot fit", NULL);
    memcpy(c, z, n);
    c[loc + 8] ^= 0x10;
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_FORMAT, "zip64 end record", NULL);
    memcpy(c, z, n);
    c[loc + 16] = 2; /* two disks */
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_UNSUPPORTED, "multi-volume", NULL);
    /* the end record without its zip64 records, asking for them */
    size_t eo = find_bytes(z, n, "PK\x05\x06", 4, 0);
    memcpy(c, z, n);
    memset(c + loc, 0, 4);
    memset(c + eo + 16, 0xff, 4);
    write_raw(p, c, n);
    expect_pt_fails(p, LOCO_E_FORMAT, "asks for zip64", NULL);
    /* trailing garbage after the end record; a comment that overruns */
    uint8_t *g = malloc(n + 10);
    memcpy(g, z, n);
    memset(g + n, 'x', 10);
    write_raw(p, g, n + 10);
    expect_pt_fails(p, LOCO_E_FORMAT, "end-of-central-directory", NULL);
    free(g);
    /* not zips: empty, text, legacy pickle, legacy tar, a folder, a FIFO */
    write_raw(p, "", 0);
    expect_pt_fails(p, LOCO_E_FORMAT, "an empty file, not a PyTorch zip checkpoint", p);
    write_raw(p, "hello, this is not a checkpoint at all", 38);
    expect_pt_fails(p, LOCO_E_FORMAT, "not a PyTorch zip checkpoint (no zip signature)", p);
    static const uint8_t legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50,
                                     0x19, 0x2e, 0x80, 0x02, 0x4d, 0xe9, 0x03, 0x2e, 0x80, 0x02, 0x7d, 0x2e};
    write_raw(p, legacy, sizeof legacy);
    expect_pt_fails(p, LOCO_E_UNSUPPORTED, "legacy (pre-1.6) format", "re-save it with torch>=1.6");
    uint8_t tar[1024] = {0};
    memcpy(tar, "storages", 8);
    memcpy(tar + 257, "ustar", 5);
    write_raw(p, tar, sizeof tar);
    expect_pt_fails(p, LOCO_E_UNSUPPORTED, "legacy tar format", "torch>=1.6");
    expect_pt_fails(g_dir, LOCO_E_IO, "is a folder, not a file", g_dir);
    assert_int_equal(mkfifo(tpath("fifo.pt"), 0600), 0);
    assert_int_equal(symlink("/dev/zero", tpath("zero.pt")), 0);
    alarm(20);
    expect_pt_fails(tpath("fifo.pt"), LOCO_E_IO, "is a FIFO (named pipe), not a regular file", tpath("fifo.pt"));
    expect_pt_fails(tpath("zero.pt"), LOCO_E_IO, "is a character device, not a regular file", tpath("zero.pt"));
    alarm(0);
    expect_pt_fails(tpath("absent.pt"), LOCO_E_IO, "cannot open", NULL);
    /* archives without data.pkl, with two, TorchScript, duplicate entries,
     * big-endian */
    loco_zip_item it[4];
    uint8_t *zz;
    size_t zl;
    it[0] = (loco_zip_item){"archive/version", "3\n", 2};
    CHECK_OK(loco_zip_build(it, 1, 0, &zz, &zl));
    write_raw(p, zz, zl);
    free(zz);
    expect_pt_fails(p, LOCO_E_FORMAT, "no data.pkl", NULL);
    it[0] = (loco_zip_item){"m/constants.pkl", "\x80\x02).", 4};
    it[1] = (loco_zip_item){"m/code/__torch__.py", "x", 1};
    CHECK_OK(loco_zip_build(it, 2, 0, &zz, &zl));
    write_raw(p, zz, zl);
    free(zz);
    expect_pt_fails(p, LOCO_E_UNSUPPORTED, "TorchScript", NULL);
    it[0] = (loco_zip_item){"a/data.pkl", "\x80\x02}.", 4};
    it[1] = (loco_zip_item){"b/data.pkl", "\x80\x02}.", 4};
    CHECK_OK(loco_zip_build(it, 2, 0, &zz, &zl));
    write_raw(p, zz, zl);
    free(zz);
    expect_pt_fails(p, LOCO_E_FORMAT, "several data.pkl", NULL);
    it[0] = (loco_zip_item){"a/data.pkl", "\x80\x02}.", 4};
    it[1] = (loco_zip_item){"a/data.pkl", "\x80\x02}.", 4};
    CHECK_OK(loco_zip_build(it, 2, 0, &zz, &zl));
    write_raw(p, zz, zl);
    free(zz);
    expect_pt_fails(p, LOCO_E_FORMAT, "appears twice", NULL);
    it[0] = (loco_zip_item){"a/data.pkl", "\x80\x02}.", 4};
    it[1] = (loco_zip_item){"a/byteorder", "big", 3};
    CHECK_OK(loco_zip_build(it, 2, 0, &zz, &zl));
    write_raw(p, zz, zl);
    free(zz);
    expect_pt_fails(p, LOCO_E_UNSUPPORTED, "big-endian", NULL);
    /* an empty state_dict in an archive with no folder prefix reads */
    it[0] = (loco_zip_item){"data.pkl", "\x80\x02}.", 4};
    CHECK_OK(loco_zip_build(it, 1, 0, &zz, &zl));
    loco_pt *f;
    CHECK_OK(loco_pt_open_mem(zz, zl, "root.pt", 0, &f));
    assert_int_equal(loco_pt_count(f), 0);
    loco_pt_close(f);
    free(zz);
    free(c);
    free(z);
}

/* The archive's byteorder entry is found whatever the length of the archive
 * folder's name (it was looked up through a 256-byte buffer, so a longer
 * prefix hid a "big" and the checkpoint read as little-endian). */
static void test_long_prefix_byteorder(void **state) {
    (void)state;
    static const size_t lens[] = {2, 246, 247, 255, 300, 4000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t pl = lens[i];
        char *pkl = malloc(pl + 16), *bo = malloc(pl + 16), *dat = malloc(pl + 16);
        assert_non_null(pkl);
        assert_non_null(bo);
        assert_non_null(dat);
        memset(pkl, 'p', pl - 1);
        pkl[pl - 1] = '/';
        memcpy(bo, pkl, pl);
        memcpy(dat, pkl, pl);
        strcpy(pkl + pl, "data.pkl");
        strcpy(bo + pl, "byteorder");
        strcpy(dat + pl, "data/0");
        bb o = {0};
        bb_begin(&o);
        bb_str(&o, "w");
        const int64_t sz[1] = {12}, st[1] = {1};
        bb_tensor(&o, "FloatStorage", "0", 12, 0, 1, sz, st);
        bb_u8(&o, 's');
        bb_u8(&o, '.');
        printf("  archive prefix of %zu characters\n", pl);
        for (int big = 0; big < 2; big++) {
            loco_zip_item it[3] = {{pkl, o.b, o.n}, {bo, big ? "big" : "little", big ? 3 : 6}, {dat, g_f12, sizeof g_f12}};
            uint8_t *z;
            size_t zl;
            CHECK_OK(loco_zip_build(it, 3, 0, &z, &zl));
            const char *p = tpath("longprefix.pt");
            write_raw(p, z, zl);
            free(z);
            if (big) {
                expect_pt_fails(p, LOCO_E_UNSUPPORTED, "big-endian", "byteorder");
                continue;
            }
            loco_pt *f;
            CHECK_OK(loco_pt_open(p, &f));
            assert_int_equal(loco_pt_count(f), 1);
            expect_f32(f, "w", 1, (const int64_t[]){12}, g_f12, 12);
            loco_pt_close(f);
        }
        free(o.b);
        free(pkl);
        free(bo);
        free(dat);
    }
}

/* ------------------------------------------------------------------------ */
/* Fuzzing regressions and corpora                                          */
/* ------------------------------------------------------------------------ */

static size_t run_dir(const char *dir, void (*fn)(const uint8_t *, size_t)) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        size_t n;
        uint8_t *b = read_raw(p, &n);
        fn(b, n);
        free(b);
        count++;
    }
    closedir(d);
    return count;
}

static void test_fuzz_inputs(void **state) {
    (void)state;
    static const struct {
        const char *name;
        void (*fn)(const uint8_t *, size_t);
    } targets[] = {{"safetensors", fz_safetensors}, {"config", fz_config}, {"png", fz_png},
                   {"pickle", fz_pickle},           {"pytorch", fz_pytorch},  {"tokenizer", fz_tokenizer}};
    const char *root = getenv("LOCO_FUZZ_DIR");
    if (!root || !root[0]) root = "fuzz";
    alarm(300);
    size_t total = 0;
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        char d[512];
        snprintf(d, sizeof d, "%s/regressions/%s", root, targets[i].name);
        size_t r = run_dir(d, targets[i].fn);
        snprintf(d, sizeof d, "%s/corpus/%s", root, targets[i].name);
        size_t c = run_dir(d, targets[i].fn);
        printf("  %-12s %3zu regression inputs, %3zu corpus inputs\n", targets[i].name, r, c);
        total += r + c;
    }
    alarm(0);
    if (total == 0) fail_msg("no fuzz inputs found under %s/ (run from the repository root)", root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_dtypes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_roundtrip_many, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_views, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_torch_bytes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_protocol4, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_model_folder_bin, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_convert, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_forbidden_globals, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_forbidden_calls, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_forbidden_opcodes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_hostile_sizes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_recursion_bombs, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_zip_damage, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_long_prefix_byteorder, setup_dir, teardown_dir),
        cmocka_unit_test(test_fuzz_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
