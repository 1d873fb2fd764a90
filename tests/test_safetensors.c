/* test_safetensors.c - the safetensors reader against hostile files (every
 * one generated here, in a temporary folder under /tmp), and round trips
 * through the writer: exact F32/F16/BF16 values, atomic replacement, no
 * temporary files left behind, invalid arguments refused cleanly. */
#include "testutil.h"
#include "internal.h"
#include "tmpdir.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Temporary folder, one per test                                           */
/* ------------------------------------------------------------------------ */


/* Number of entries in a folder (without . and ..); -1 if it cannot be read. */
static int dir_count(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}


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

/* A safetensors file: the 8-byte length hlen (which need not be the true
 * length), then the header bytes, then data_len bytes of data (0x00). */
static void write_st_raw(const char *path, uint64_t hlen, const char *hdr, size_t hdr_len, size_t data_len) {
    size_t n = 8 + hdr_len + data_len;
    uint8_t *b = calloc(n, 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hdr_len);
    write_raw(path, b, n);
    free(b);
}

static void write_st(const char *path, const char *hdr, size_t data_len) {
    write_st_raw(path, strlen(hdr), hdr, strlen(hdr), data_len);
}

/* Opening must fail with `want`, name the file and mention `needle`, and
 * leave *out NULL. */
static void expect_open_fails(const char *path, loco_status want, const char *needle) {
    loco_tensors *f = (loco_tensors *)(uintptr_t)1;
    loco_status s = loco_tensors_open(path, &f);
    if (f) {
        if (s == LOCO_OK) loco_tensors_close(f);
        fail_msg("%s: open gave %s and a non-NULL handle", path, loco_strerror(s));
    }
    expect_error(s, want, path, needle);
}

/* ------------------------------------------------------------------------ */
/* Hostile files: the framing                                               */
/* ------------------------------------------------------------------------ */

static void test_empty_and_short(void **state) {
    (void)state;
    const char *p = tpath("empty.safetensors");
    write_raw(p, "", 0);
    expect_open_fails(p, LOCO_E_FORMAT, "too short");
    for (size_t n = 1; n < 8; n++) {
        uint8_t b[8] = {2, 0, 0, 0, 0, 0, 0, 0};
        write_raw(p, b, n);
        expect_open_fails(p, LOCO_E_FORMAT, "too short");
    }
    /* exactly the length field, announcing nothing: an empty header */
    uint8_t z[8] = {0};
    write_raw(p, z, 8);
    expect_open_fails(p, LOCO_E_FORMAT, "JSON");
}

static void test_not_a_file(void **state) {
    (void)state;
    expect_open_fails(tpath("absent.safetensors"), LOCO_E_IO, "cannot open");
    expect_open_fails(g_dir, LOCO_E_IO, "is a folder, not a file");
    /* a FIFO must not block the open (nobody will ever write to it) */
    const char *fifo = tpath("fifo.safetensors");
    if (mkfifo(fifo, 0600) != 0) fail_msg("mkfifo: %s", strerror(errno));
    alarm(20); /* a hang is a failure */
    expect_open_fails(fifo, LOCO_E_IO, "is a FIFO (named pipe), not a regular file");
    /* nor may a device be read (endlessly, for /dev/zero) */
    const char *zero = tpath("zero.safetensors");
    if (symlink("/dev/zero", zero) != 0) fail_msg("symlink: %s", strerror(errno));
    expect_open_fails(zero, LOCO_E_IO, "is a character device, not a regular file");
    alarm(0);
}

static void test_header_length(void **state) {
    (void)state;
    const char *p = tpath("hlen.safetensors");
    const char *hdr = "{}";
    /* past the end of the file: by one byte, by a lot, absurd (2^63), 2^64-1 */
    const uint64_t bad[] = {3, 100, (uint64_t)1 << 32, (uint64_t)1 << 63, UINT64_MAX, (uint64_t)101 << 20};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_st_raw(p, bad[i], hdr, 2, 0);
        expect_open_fails(p, LOCO_E_FORMAT, "header length");
    }
    /* the true length works, and so does a length that counts trailing
     * spaces (the format's padding) */
    write_st_raw(p, 2, hdr, 2, 0);
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    assert_int_equal(loco_tensors_count(f), 0);
    loco_tensors_close(f);
    write_st_raw(p, 8, "{}      ", 8, 0);
    CHECK_OK(loco_tensors_open(p, &f));
    loco_tensors_close(f);
}

/* ------------------------------------------------------------------------ */
/* Hostile files: the header                                                */
/* ------------------------------------------------------------------------ */

typedef struct hcase {
    const char *label;
    const char *hdr;
    size_t data_len;
    loco_status want;
    const char *needle; /* must appear in the message (with the path) */
    const char *needle2;
} hcase;

#define F32_1 "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"

static const hcase header_cases[] = {
    {"not JSON", "hello, world", 0, LOCO_E_FORMAT, "not valid JSON", NULL},
    {"binary junk", "\x01\x02\xff\xfe", 0, LOCO_E_FORMAT, "not valid JSON", NULL},
    {"truncated JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4, LOCO_E_FORMAT,
     "not valid JSON", NULL},
    {"truncated string", "{\"a", 0, LOCO_E_FORMAT, "not valid JSON", NULL},
    {"JSON array", "[{" F32_1 "}]", 4, LOCO_E_FORMAT, "not a JSON object", NULL},
    {"JSON string", "\"F32\"", 0, LOCO_E_FORMAT, "not a JSON object", NULL},
    {"JSON number", "42", 0, LOCO_E_FORMAT, "not a JSON object", NULL},
    {"JSON null", "null", 0, LOCO_E_FORMAT, "not a JSON object", NULL},
    {"trailing garbage", "{\"a\":{" F32_1 "}} junk", 4, LOCO_E_FORMAT, "after the JSON", NULL},
    {"second object", "{}{\"a\":{" F32_1 "}}", 4, LOCO_E_FORMAT, "after the JSON", NULL},
    {"entry not an object", "{\"a\":[1,2]}", 0, LOCO_E_FORMAT, "'a'", "not an object"},
    {"entry is a string", "{\"a\":\"F32\"}", 0, LOCO_E_FORMAT, "'a'", "not an object"},
    {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'", "'dtype'"},
    {"dtype not a string", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'",
     "'dtype'"},
    {"missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'", "'shape'"},
    {"shape not an array", "{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'",
     "'shape'"},
    {"missing data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, LOCO_E_FORMAT, "'w'", "'data_offsets'"},
    {"one data offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4, LOCO_E_FORMAT, "'w'",
     "'data_offsets'"},
    {"three data offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, LOCO_E_FORMAT,
     "'w'", "'data_offsets'"},
    {"string data offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}", 4,
     LOCO_E_FORMAT, "'w'", "'data_offsets'"},
    {"negative data offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, LOCO_E_FORMAT,
     "'w'", "'data_offsets'"},
    {"fractional data offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4.5]}}", 5,
     LOCO_E_FORMAT, "'w'", "'data_offsets'"},
    {"unknown dtype", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, LOCO_E_UNSUPPORTED,
     "'w'", "'F8_E4M3'"},
    {"lower-case dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LOCO_E_UNSUPPORTED,
     "'w'", "'f32'"},
    {"empty dtype", "{\"w\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LOCO_E_UNSUPPORTED, "'w'",
     "dtype"},
    {"negative shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'",
     "shape[0]"},
    {"negative shape, second dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,-4],\"data_offsets\":[0,4]}}", 4,
     LOCO_E_FORMAT, "'w'", "shape[1]"},
    {"fractional shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT,
     "'w'", "shape[0]"},
    {"string shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'",
     "shape[0]"},
    {"null shape entry", "{\"w\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT,
     "'w'", "shape[0]"},
    {"shape 1e300", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'",
     "shape[0]"},
    {"shape 2^53+2", "{\"w\":{\"dtype\":\"F32\",\"shape\":[9007199254740994],\"data_offsets\":[0,4]}}", 4,
     LOCO_E_FORMAT, "'w'", "shape[0]"},
    {"shape 2^41", "{\"w\":{\"dtype\":\"U8\",\"shape\":[2199023255552],\"data_offsets\":[0,4]}}", 4, LOCO_E_NOMEM,
     "'w'", "shape[0]"},
    {"shape 2^40 x 2^40 (element count overflows)",
     "{\"w\":{\"dtype\":\"U8\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}}", 4, LOCO_E_NOMEM,
     "'w'", "overflow"},
    {"shape 2^40 x 2^40 x 0 (overflow before the zero)",
     "{\"w\":{\"dtype\":\"U8\",\"shape\":[1099511627776,1099511627776,0],\"data_offsets\":[0,0]}}", 0, LOCO_E_NOMEM,
     "'w'", "overflow"},
    {"F64 2^40 x 2^22 (byte size overflows)",
     "{\"w\":{\"dtype\":\"F64\",\"shape\":[1099511627776,4194304],\"data_offsets\":[0,8]}}", 8, LOCO_E_NOMEM, "'w'",
     "overflow"},
    {"F32 2^40 x 2^20 (fits size_t, not the data)",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1048576],\"data_offsets\":[0,4]}}", 4, LOCO_E_FORMAT, "'w'",
     "bytes"},
    {"nine dimensions", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     LOCO_E_UNSUPPORTED, "'w'", "dimensions"},
    {"end past the data", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, LOCO_E_FORMAT, "'w'",
     "past the end"},
    {"end 2^53 past the data", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9007199254740991,9007199254740992]}}",
     4, LOCO_E_FORMAT, "'w'", "past the end"},
    {"begin > end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, LOCO_E_FORMAT, "'w'",
     "out of order"},
    {"byte count below dtype*shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12,
     LOCO_E_FORMAT, "'w'", "8 bytes"},
    {"byte count above dtype*shape", "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     LOCO_E_FORMAT, "'w'", "8 bytes"},
    {"zero-size data for a non-empty shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,4]}}", 4,
     LOCO_E_FORMAT, "'w'", "0 bytes"},
    {"two tensors overlapping",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, LOCO_E_FORMAT, "overlap", "'a' and 'b'"},
    {"two tensors at the same place",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
     4, LOCO_E_FORMAT, "overlap", "'a'"},
    {"one tensor inside another",
     "{\"big\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"small\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     16, LOCO_E_FORMAT, "overlap", "'small'"},
    {"overlap with an empty tensor in between",
     "{\"big\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
     "\"small\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     16, LOCO_E_FORMAT, "overlap", "'small'"},
    {"overlap with a non-neighbour",
     "{\"big\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"s1\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"s2\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
     16, LOCO_E_FORMAT, "overlap", NULL},
    {"duplicate tensor names",
     "{\"w\":{" F32_1 "},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, LOCO_E_FORMAT, "'w'",
     "twice"},
    {"duplicate names far apart",
     "{\"w\":{" F32_1 "},\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]},"
     "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, LOCO_E_FORMAT, "'w'", "twice"},
    {"empty tensor name", "{\"\":{" F32_1 "}}", 4, LOCO_E_FORMAT, "empty name", NULL},
    {"__metadata__ a string", "{\"__metadata__\":\"format=pt\",\"w\":{" F32_1 "}}", 4, LOCO_E_FORMAT,
     "'__metadata__'", "not an object"},
    {"__metadata__ an array", "{\"__metadata__\":[\"a\",\"b\"],\"w\":{" F32_1 "}}", 4, LOCO_E_FORMAT,
     "'__metadata__'", "not an object"},
    {"__metadata__ null", "{\"__metadata__\":null}", 0, LOCO_E_FORMAT, "'__metadata__'", "not an object"},
    {"__metadata__ number value", "{\"__metadata__\":{\"format\":\"pt\",\"step\":3},\"w\":{" F32_1 "}}", 4,
     LOCO_E_FORMAT, "__metadata__", "'step'"},
    {"__metadata__ object value", "{\"__metadata__\":{\"nested\":{\"a\":\"b\"}}}", 0, LOCO_E_FORMAT,
     "__metadata__", "'nested'"},
    {"__metadata__ null value", "{\"__metadata__\":{\"k\":null}}", 0, LOCO_E_FORMAT, "__metadata__", "'k'"},
    {"__metadata__ twice", "{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"b\":\"2\"}}", 0, LOCO_E_FORMAT,
     "'__metadata__'", "twice"},
    {"__metadata__ twice, the first empty", "{\"__metadata__\":{},\"__metadata__\":{\"b\":\"2\"}}", 0,
     LOCO_E_FORMAT, "'__metadata__'", "twice"},
};

static void test_hostile_headers(void **state) {
    (void)state;
    const char *p = tpath("hostile.safetensors");
    for (size_t i = 0; i < sizeof header_cases / sizeof header_cases[0]; i++) {
        const hcase *c = &header_cases[i];
        printf("  case: %s\n", c->label);
        write_st(p, c->hdr, c->data_len);
        expect_open_fails(p, c->want, c->needle);
        if (c->needle2) expect_error(c->want, c->want, c->needle2, NULL);
    }
    /* the same headers are fine when well-formed: a control that the cases
     * fail for the stated reason and not the framing */
    write_st(p, "{\"w\":{" F32_1 "},\"__metadata__\":{\"format\":\"pt\"}}", 4);
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    assert_int_equal(loco_tensors_count(f), 1);
    assert_string_equal(loco_tensors_metadata(f, "format"), "pt");
    loco_tensors_close(f);
}

/* A NUL byte inside the header (not valid JSON padding). */
static void test_nul_in_header(void **state) {
    (void)state;
    const char *p = tpath("nul.safetensors");
    char hdr[] = "{\"w\":{" F32_1 "}}\0\0\0\0";
    write_st_raw(p, sizeof hdr - 1, hdr, sizeof hdr - 1, 4);
    expect_open_fails(p, LOCO_E_FORMAT, "after the JSON");
}

/* Deep nesting must not exhaust the stack. */
static void test_deep_nesting(void **state) {
    (void)state;
    const char *p = tpath("deep.safetensors");
    const size_t depth = 200000;
    size_t n = 2 * depth + 64;
    char *h = malloc(n);
    size_t k = (size_t)sprintf(h, "{\"__metadata__\":{\"a\":");
    for (size_t i = 0; i < depth; i++) h[k++] = '[';
    for (size_t i = 0; i < depth; i++) h[k++] = ']';
    k += (size_t)sprintf(h + k, "}}");
    write_st_raw(p, k, h, k, 0);
    free(h);
    expect_open_fails(p, LOCO_E_FORMAT, NULL);
}

/* A file with many tensors opens in reasonable time (no quadratic checks). */
static void test_many_tensors(void **state) {
    (void)state;
    const char *p = tpath("many.safetensors");
    const int n = 200000;
    size_t cap = (size_t)n * 96 + 16, k = 0;
    char *h = malloc(cap);
    h[k++] = '{';
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(h + k, cap - k, "%s\"tensor.%07d\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                              i ? "," : "", n - 1 - i, i, i + 1);
    h[k++] = '}';
    h[k] = 0;
    write_st_raw(p, k, h, k, (size_t)n);
    alarm(60); /* quadratic duplicate or overlap checks would take far longer */
    loco_tensors *f;
    double t0 = loco_now();
    CHECK_OK(loco_tensors_open(p, &f));
    assert_int_equal(loco_tensors_count(f), n);
    /* lookups by name, in a loop, are fast too */
    for (int i = 0; i < n; i += 7) {
        char nm[32];
        snprintf(nm, sizeof nm, "tensor.%07d", i);
        const void *d;
        size_t nb;
        CHECK_OK(loco_tensors_raw(f, nm, &d, &nb));
        assert_int_equal(nb, 1);
    }
    printf("  %d tensors opened and looked up in %.2f s\n", n, loco_now() - t0);
    alarm(0);
    loco_tensors_close(f);
    /* and a duplicate among them is found */
    memcpy(strstr(h, "tensor.0100000"), "tensor.0100001", 14);
    write_st_raw(p, k, h, k, (size_t)n);
    alarm(60);
    expect_open_fails(p, LOCO_E_FORMAT, "'tensor.0100001' appears twice");
    alarm(0);
    free(h);
}

/* ------------------------------------------------------------------------ */
/* Truncation and corruption of a valid file                               */
/* ------------------------------------------------------------------------ */

static const char *write_small_valid(const char *name) {
    static const float a[6] = {1, 2, 3, 4, 5, 6};
    static const uint16_t b[3] = {0x3c00, 0x4000, 0x4200};
    static const uint8_t c[5] = {1, 2, 3, 4, 5};
    loco_tensor_ref t[3] = {
        {"a", LOCO_DTYPE_F32, 2, {2, 3}, a},
        {"b", LOCO_DTYPE_F16, 1, {3}, b},
        {"c", LOCO_DTYPE_U8, 1, {5}, c},
    };
    const char *meta[2] = {"format", "pt"};
    const char *p = tpath(name);
    CHECK_OK(loco_tensors_write(p, t, 3, meta, 1));
    return p;
}

static void test_truncated(void **state) {
    (void)state;
    const char *src = write_small_valid("full.safetensors");
    size_t n;
    uint8_t *b = read_raw(src, &n);
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(src, &f));
    loco_tensors_close(f);
    /* every strict prefix fails cleanly and names the file */
    const char *p = tpath("cut.safetensors");
    int past_end_c = 0;
    for (size_t len = 0; len < n; len++) {
        write_raw(p, b, len);
        loco_tensors *g = NULL;
        loco_status s = loco_tensors_open(p, &g);
        if (s == LOCO_OK) {
            loco_tensors_close(g);
            fail_msg("a prefix of %zu of %zu bytes opened", len, n);
        }
        assert_null(g);
        expect_error(s, LOCO_E_FORMAT, p, NULL);
        if (strstr(loco_last_error(), "past the end of the data") && strstr(loco_last_error(), "'c'")) past_end_c++;
    }
    assert_int_equal(past_end_c, 5); /* cutting 1..5 bytes hits only c, the last tensor in the data */
    free(b);
}

/* Every single-byte corruption of the header opens or fails cleanly; what
 * opens reads without trouble (ASan/UBSan watch this). */
static void test_corrupted_bytes(void **state) {
    (void)state;
    const char *src = write_small_valid("full.safetensors");
    size_t n;
    uint8_t *b = read_raw(src, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    const uint8_t subst[] = {0, ' ', '"', '{', '}', '[', ']', ',', ':', '-', '0', '9', '.', 'e', 'x', 0x80, 0xff};
    const char *p = tpath("corrupt.safetensors");
    int opened = 0, failed = 0;
    for (size_t pos = 0; pos < 8 + hlen; pos++) {
        for (size_t k = 0; k < sizeof subst; k++) {
            if (b[pos] == subst[k]) continue;
            uint8_t old = b[pos];
            b[pos] = subst[k];
            write_raw(p, b, n);
            b[pos] = old;
            loco_tensors *f = NULL;
            loco_status s = loco_tensors_open(p, &f);
            if (s != LOCO_OK) {
                assert_null(f);
                if (!strstr(loco_last_error(), p)) fail_msg("message '%s' does not name the file", loco_last_error());
                failed++;
                continue;
            }
            opened++;
            for (size_t i = 0; i < loco_tensors_count(f); i++) {
                float *d = NULL;
                loco_status r = loco_tensors_read_f32(f, loco_tensors_name(f, i), &d, NULL, NULL, 1);
                assert_true(r == LOCO_OK || r == LOCO_E_UNSUPPORTED);
                loco_free(d);
            }
            loco_tensors_close(f);
        }
    }
    printf("  %d corrupted files opened, %d refused\n", opened, failed);
    assert_true(failed > opened);
    free(b);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */
/* ------------------------------------------------------------------------ */

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* bit-exact float comparison (tells -0 from +0, compares NaN payload) */
static void expect_bits(const char *what, size_t i, float got, float want) {
    if (f2u(got) != f2u(want))
        fail_msg("%s[%zu]: got %a (0x%08x), want %a (0x%08x)", what, i, (double)got, f2u(got), (double)want,
                 f2u(want));
}

static void test_roundtrip_f32(void **state) {
    (void)state;
    const float v[] = {0.0f, -0.0f, 1.0f, -1.5f, 3.14159274f, 0x1p-149f /* smallest subnormal */,
                       -0x1.fffffcp-127f, 0x1.fffffep127f, 1e-30f, 123456.789f, -7.0f, 0.1f};
    const size_t n = sizeof v / sizeof v[0];
    const int32_t iv[3] = {-1, 0, 2147483647};
    loco_tensor_ref t[2] = {{"vals", LOCO_DTYPE_F32, 2, {3, 4}, v}, {"ints", LOCO_DTYPE_I32, 1, {3}, iv}};
    const char *meta[4] = {"format", "pt", "note", "with \"quotes\" and \\ and \n newline"};
    const char *p = tpath("f32.safetensors");
    CHECK_OK(loco_tensors_write(p, t, 2, meta, 2));
    assert_int_equal(dir_count(g_dir), 1); /* no temporary file left */
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    assert_int_equal(loco_tensors_count(f), 2);
    assert_string_equal(loco_tensors_name(f, 0), "ints"); /* sorted by name */
    assert_string_equal(loco_tensors_name(f, 1), "vals");
    assert_null(loco_tensors_name(f, 2));
    assert_string_equal(loco_tensors_metadata(f, "format"), "pt");
    assert_string_equal(loco_tensors_metadata(f, "note"), meta[3]);
    assert_null(loco_tensors_metadata(f, "absent"));
    float *d;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    CHECK_OK(loco_tensors_read_f32(f, "vals", &d, &nd, sh, 0));
    assert_int_equal(nd, 2);
    assert_int_equal(sh[0], 3);
    assert_int_equal(sh[1], 4);
    for (size_t i = 0; i < n; i++) expect_bits("F32", i, d[i], v[i]);
    loco_free(d);
    loco_dtype dt;
    CHECK_OK(loco_tensors_info(f, "ints", &dt, &nd, sh));
    assert_int_equal(dt, LOCO_DTYPE_I32);
    const void *raw;
    size_t nb;
    CHECK_OK(loco_tensors_raw(f, "ints", &raw, &nb));
    assert_int_equal(nb, sizeof iv);
    assert_memory_equal(raw, iv, sizeof iv);
    /* I32 cannot be read as float; absent tensors are named */
    d = (float *)(uintptr_t)1;
    expect_error(loco_tensors_read_f32(f, "ints", &d, NULL, NULL, 0), LOCO_E_UNSUPPORTED, p, "'ints'");
    assert_null(d);
    expect_error(loco_tensors_read_f32(f, "nope", &d, NULL, NULL, 0), LOCO_E_NOT_FOUND, p, "'nope'");
    expect_error(loco_tensors_info(f, "nope", NULL, NULL, NULL), LOCO_E_NOT_FOUND, p, "'nope'");
    expect_error(loco_tensors_raw(f, "nope", NULL, NULL), LOCO_E_NOT_FOUND, p, "'nope'");
    loco_tensors_close(f);
}

/* f16 <-> f32: encode with the library's converter (round to nearest even,
 * saturating to inf), write F16, read back, compare with exact values. */
static void test_roundtrip_f16(void **state) {
    (void)state;
    static const struct {
        float in;
        uint16_t bits; /* expected f16 encoding */
        float out;     /* expected value read back */
    } c[] = {
        {1.0f, 0x3c00, 1.0f},
        {-2.0f, 0xc000, -2.0f},
        {0.0f, 0x0000, 0.0f},
        {-0.0f, 0x8000, -0.0f},
        {65504.0f, 0x7bff, 65504.0f},                 /* largest finite */
        {65519.99f, 0x7bff, 65504.0f},                /* just below the tie: rounds down */
        {65520.0f, 0x7c00, INFINITY},                 /* tie between 65504 and 2^16: to even = inf */
        {1e6f, 0x7c00, INFINITY},                     /* overflow */
        {-1e6f, 0xfc00, -INFINITY},
        {INFINITY, 0x7c00, INFINITY},
        {-INFINITY, 0xfc00, -INFINITY},
        {1.0f + 0x1p-11f, 0x3c00, 1.0f},              /* tie: to even (down) */
        {1.0f + 0x3p-11f, 0x3c02, 1.0f + 0x1p-9f},    /* tie: to even (up) */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01, 1.0f + 0x1p-10f}, /* above the tie: up */
        {2047.5f, 0x6800, 2048.0f},                   /* tie: to even 2048, carrying into the exponent */
        {2048.0f + 1.0f, 0x6800, 2048.0f},            /* tie at spacing 2: to even 2048 */
        {2048.0f + 3.0f, 0x6802, 2052.0f},            /* tie: to even 2052 */
        {0.1f, 0x2e66, 0x1.998p-4f},
        {0x1p-14f, 0x0400, 0x1p-14f},                 /* smallest normal */
        {0x1p-24f, 0x0001, 0x1p-24f},                 /* smallest subnormal */
        {-0x1p-24f, 0x8001, -0x1p-24f},
        {0x3ffp-24f, 0x03ff, 0x3ffp-24f},             /* largest subnormal */
        {0x1p-14f - 0x1p-25f, 0x0400, 0x1p-14f},      /* tie between 0x3ff and 0x400: even */
        {0x1p-25f, 0x0000, 0.0f},                     /* half the smallest: tie to even zero */
        {-0x1p-25f, 0x8000, -0.0f},
        {0x1.000002p-25f, 0x0001, 0x1p-24f},          /* just above half: up */
        {0x3p-25f, 0x0002, 0x2p-24f},                 /* 1.5 units: tie to even 2 */
        {0x5p-25f, 0x0002, 0x2p-24f},                 /* 2.5 units: tie to even 2 */
        {0x7p-25f, 0x0004, 0x4p-24f},                 /* 3.5 units: tie to even 4 */
        {0x1p-26f, 0x0000, 0.0f},                     /* underflow */
        {0x1p-149f, 0x0000, 0.0f},
        {0x155p-24f, 0x0155, 0x155p-24f},             /* a subnormal pattern */
    };
    const size_t n = sizeof c / sizeof c[0];
    uint16_t *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) {
        h[i] = loco_f32_to_f16(c[i].in);
        if (h[i] != c[i].bits)
            fail_msg("f32_to_f16(%a) = 0x%04x, want 0x%04x (case %zu)", (double)c[i].in, h[i], c[i].bits, i);
    }
    uint16_t nan = loco_f32_to_f16(NAN);
    assert_true((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    loco_tensor_ref t = {"h", LOCO_DTYPE_F16, 1, {(int64_t)n}, h};
    const char *p = tpath("f16.safetensors");
    CHECK_OK(loco_tensors_write(p, &t, 1, NULL, 0));
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    float *d;
    /* contains inf: refused by default, naming the first bad element */
    expect_error(loco_tensors_read_f32(f, "h", &d, NULL, NULL, 0), LOCO_E_NUMERIC, p, "element 6");
    CHECK_OK(loco_tensors_read_f32(f, "h", &d, NULL, NULL, 1));
    for (size_t i = 0; i < n; i++) expect_bits("F16", i, d[i], c[i].out);
    loco_free(d);
    loco_tensors_close(f);
    free(h);

    /* decoding every f16 bit pattern: finite ones round-trip through the
     * encoder exactly; the value is sign * 2^(e-15) * (1 + m/1024), or
     * sign * m * 2^-24 for subnormals */
    uint16_t *all = malloc(65536 * sizeof *all);
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    loco_tensor_ref ta = {"all", LOCO_DTYPE_F16, 1, {65536}, all};
    CHECK_OK(loco_tensors_write(p, &ta, 1, NULL, 0));
    CHECK_OK(loco_tensors_open(p, &f));
    CHECK_OK(loco_tensors_read_f32(f, "all", &d, NULL, NULL, 1));
    for (uint32_t i = 0; i < 65536; i++) {
        int e = (i >> 10) & 31, m = i & 1023;
        double mag = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        float want = (float)((i & 0x8000) ? -mag : mag);
        if (e == 31 && m) {
            if (!isnan(d[i])) fail_msg("F16 0x%04x should read as NaN, got %a", i, (double)d[i]);
            continue;
        }
        expect_bits("F16 pattern", i, d[i], want);
        if (loco_f32_to_f16(d[i]) != i) fail_msg("f32_to_f16(f16_to_f32(0x%04x)) = 0x%04x", i, loco_f32_to_f16(d[i]));
    }
    loco_free(d);
    loco_tensors_close(f);
    free(all);
}

static void test_roundtrip_bf16(void **state) {
    (void)state;
    static const struct {
        uint16_t bits;
        float out;
    } c[] = {
        {0x3f80, 1.0f},         {0xbf80, -1.0f},          {0x0000, 0.0f},
        {0x8000, -0.0f},        {0x4049, 3.140625f},      {0x0001, 0x1p-133f}, /* smallest subnormal */
        {0x8001, -0x1p-133f},   {0x007f, 0x7fp-133f},     /* largest subnormal */
        {0x0080, 0x1p-126f},    {0x7f7f, 0x1.fep127f},    /* largest finite */
        {0x3dcd, 0x1.9ap-4f},   {0xc2f7, -123.5f},
    };
    const size_t n = sizeof c / sizeof c[0];
    uint16_t h[sizeof c / sizeof c[0]];
    for (size_t i = 0; i < n; i++) h[i] = c[i].bits;
    loco_tensor_ref t = {"b", LOCO_DTYPE_BF16, 2, {1, (int64_t)n}, h};
    const char *p = tpath("bf16.safetensors");
    CHECK_OK(loco_tensors_write(p, &t, 1, NULL, 0));
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    float *d;
    CHECK_OK(loco_tensors_read_f32(f, "b", &d, NULL, NULL, 0));
    for (size_t i = 0; i < n; i++) expect_bits("BF16", i, d[i], c[i].out);
    loco_free(d);
    loco_tensors_close(f);
    /* inf and NaN in BF16 */
    uint16_t bad[3] = {0x3f80, 0x7fc0, 0xff80};
    loco_tensor_ref tb = {"bad", LOCO_DTYPE_BF16, 1, {3}, bad};
    CHECK_OK(loco_tensors_write(p, &tb, 1, NULL, 0));
    CHECK_OK(loco_tensors_open(p, &f));
    expect_error(loco_tensors_read_f32(f, "bad", &d, NULL, NULL, 0), LOCO_E_NUMERIC, "'bad'", "element 1");
    CHECK_OK(loco_tensors_read_f32(f, "bad", &d, NULL, NULL, 1));
    assert_true(isnan(d[1]));
    assert_true(isinf(d[2]) && d[2] < 0);
    loco_free(d);
    loco_tensors_close(f);
}

static void test_nonfinite(void **state) {
    (void)state;
    float v[5] = {1, 2, NAN, INFINITY, -INFINITY};
    double w[3] = {1.0, 1e300 /* not representable in float: inf */, -2.5};
    uint8_t u[2] = {0, 255};
    loco_tensor_ref t[3] = {{"v", LOCO_DTYPE_F32, 1, {5}, v}, {"w", LOCO_DTYPE_F64, 1, {3}, w},
                            {"u", LOCO_DTYPE_U8, 1, {2}, u}};
    const char *p = tpath("nonfinite.safetensors");
    CHECK_OK(loco_tensors_write(p, t, 3, NULL, 0));
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    float *d = (float *)(uintptr_t)1;
    expect_error(loco_tensors_read_f32(f, "v", &d, NULL, NULL, 0), LOCO_E_NUMERIC, p, "'v'");
    assert_non_null(strstr(loco_last_error(), "element 2"));
    assert_null(d);
    CHECK_OK(loco_tensors_read_f32(f, "v", &d, NULL, NULL, 1));
    assert_true(isnan(d[2]) && isinf(d[3]) && d[3] > 0 && isinf(d[4]) && d[4] < 0);
    loco_free(d);
    expect_error(loco_tensors_read_f32(f, "w", &d, NULL, NULL, 0), LOCO_E_NUMERIC, "'w'", "element 1");
    CHECK_OK(loco_tensors_read_f32(f, "w", &d, NULL, NULL, 1));
    assert_true(d[0] == 1.0f && isinf(d[1]) && d[2] == -2.5f);
    loco_free(d);
    CHECK_OK(loco_tensors_read_f32(f, "u", &d, NULL, NULL, 0));
    assert_true(d[0] == 0.0f && d[1] == 255.0f);
    loco_free(d);
    loco_tensors_close(f);
}

static void test_empty_and_scalar_tensors(void **state) {
    (void)state;
    float s = 42.5f;
    loco_tensor_ref t[3] = {{"scalar", LOCO_DTYPE_F32, 0, {0}, &s},
                            {"empty", LOCO_DTYPE_F32, 2, {0, 7}, NULL},
                            {"empty16", LOCO_DTYPE_F16, 1, {0}, NULL}};
    const char *p = tpath("odd.safetensors");
    CHECK_OK(loco_tensors_write(p, t, 3, NULL, 0));
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    float *d;
    int nd = -1;
    int64_t sh[LOCO_MAX_DIMS];
    CHECK_OK(loco_tensors_read_f32(f, "scalar", &d, &nd, sh, 0));
    assert_int_equal(nd, 0);
    assert_true(d[0] == 42.5f);
    loco_free(d);
    CHECK_OK(loco_tensors_read_f32(f, "empty", &d, &nd, sh, 0));
    assert_int_equal(nd, 2);
    assert_int_equal(sh[0], 0);
    assert_int_equal(sh[1], 7);
    loco_free(d);
    loco_tensors_close(f);
    /* no tensors at all */
    CHECK_OK(loco_tensors_write(p, NULL, 0, NULL, 0));
    CHECK_OK(loco_tensors_open(p, &f));
    assert_int_equal(loco_tensors_count(f), 0);
    loco_tensors_close(f);
}

/* ------------------------------------------------------------------------ */
/* The writer: atomicity and invalid arguments                              */
/* ------------------------------------------------------------------------ */

static void test_write_atomic(void **state) {
    (void)state;
    float a[4] = {1, 2, 3, 4}, b[2] = {9, 8};
    loco_tensor_ref ta = {"a", LOCO_DTYPE_F32, 1, {4}, a}, tb = {"b", LOCO_DTYPE_F32, 1, {2}, b};
    const char *p = tpath("w.safetensors");
    CHECK_OK(loco_tensors_write(p, &ta, 1, NULL, 0));
    assert_int_equal(dir_count(g_dir), 1);
    /* overwriting replaces the whole file, leaving nothing else */
    CHECK_OK(loco_tensors_write(p, &tb, 1, NULL, 0));
    assert_int_equal(dir_count(g_dir), 1);
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(p, &f));
    assert_int_equal(loco_tensors_count(f), 1);
    assert_string_equal(loco_tensors_name(f, 0), "b");
    loco_tensors_close(f);
    size_t n_before;
    uint8_t *before = read_raw(p, &n_before);

    /* into a folder that does not exist: LOCO_E_IO, nothing created */
    const char *sub = tpath("no/such/dir/x.safetensors");
    expect_error(loco_tensors_write(sub, &ta, 1, NULL, 0), LOCO_E_IO, sub, NULL);
    assert_int_equal(dir_count(g_dir), 1);
    assert_int_equal(dir_count(tpath("no")), -1);

    /* onto a folder: LOCO_E_IO, the folder untouched, no temporary left */
    const char *d = tpath("adir");
    assert_int_equal(mkdir(d, 0700), 0);
    expect_error(loco_tensors_write(d, &ta, 1, NULL, 0), LOCO_E_IO, d, NULL);
    assert_int_equal(dir_count(g_dir), 2);
    assert_int_equal(dir_count(d), 0);

    /* invalid arguments leave the old file as it was and create nothing */
    const int64_t big = (int64_t)1 << 62;
    const char *m_bad[2] = {"k", NULL};
    struct {
        const char *label;
        loco_tensor_ref t[2];
        size_t n;
        const char *const *meta;
        size_t n_meta;
        const char *needle;
    } bad[] = {
        {"NULL name", {{NULL, LOCO_DTYPE_F32, 1, {4}, a}, {"b", LOCO_DTYPE_F32, 1, {2}, b}}, 2, NULL, 0, "name"},
        {"empty name", {{"", LOCO_DTYPE_F32, 1, {4}, a}}, 1, NULL, 0, "name"},
        {"name __metadata__", {{"__metadata__", LOCO_DTYPE_F32, 1, {4}, a}}, 1, NULL, 0, "__metadata__"},
        {"duplicate name", {{"a", LOCO_DTYPE_F32, 1, {4}, a}, {"a", LOCO_DTYPE_F32, 1, {2}, b}}, 2, NULL, 0, "'a'"},
        {"bad dtype", {{"a", (loco_dtype)99, 1, {4}, a}}, 1, NULL, 0, "'a'"},
        {"negative dtype", {{"a", (loco_dtype)-1, 1, {4}, a}}, 1, NULL, 0, "'a'"},
        {"rank 9", {{"a", LOCO_DTYPE_F32, 9, {4}, a}}, 1, NULL, 0, "'a'"},
        {"negative rank", {{"a", LOCO_DTYPE_F32, -1, {4}, a}}, 1, NULL, 0, "'a'"},
        {"negative dim", {{"a", LOCO_DTYPE_F32, 2, {4, -1}, a}}, 1, NULL, 0, "'a'"},
        {"NULL data", {{"a", LOCO_DTYPE_F32, 1, {4}, NULL}}, 1, NULL, 0, "'a'"},
        {"byte size overflows", {{"a", LOCO_DTYPE_F32, 1, {big}, a}}, 1, NULL, 0, "'a'"},
        {"element count overflows", {{"a", LOCO_DTYPE_U8, 2, {big, 8}, a}}, 1, NULL, 0, "'a'"},
        {"total size overflows",
         {{"a", LOCO_DTYPE_U8, 1, {big}, a}, {"b", LOCO_DTYPE_U8, 2, {big, 3}, b}}, 2, NULL, 0, "'a'"},
        {"metadata NULL with n_meta 1", {{"a", LOCO_DTYPE_F32, 1, {4}, a}}, 1, NULL, 1, "metadata"},
        {"metadata value NULL", {{"a", LOCO_DTYPE_F32, 1, {4}, a}}, 1, m_bad, 1, "metadata"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        printf("  case: %s\n", bad[i].label);
        loco_status s = loco_tensors_write(p, bad[i].t, bad[i].n, bad[i].meta, bad[i].n_meta);
        if (s != LOCO_E_INVALID_ARGUMENT && s != LOCO_E_NOMEM)
            fail_msg("%s: got '%s' (%s)", bad[i].label, loco_strerror(s), loco_last_error());
        expect_error(s, s, p, bad[i].needle);
        assert_int_equal(dir_count(g_dir), 2);
        size_t n_after;
        uint8_t *after = read_raw(p, &n_after);
        assert_int_equal(n_after, n_before);
        assert_memory_equal(after, before, n_before);
        free(after);
    }
    expect_error(loco_tensors_write(NULL, &ta, 1, NULL, 0), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    expect_error(loco_tensors_write(p, NULL, 1, NULL, 0), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    free(before);
}

/* NULL arguments to the reader */
static void test_null_arguments(void **state) {
    (void)state;
    loco_tensors *f;
    expect_error(loco_tensors_open(NULL, &f), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    expect_error(loco_tensors_open("x", NULL), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    assert_int_equal(loco_tensors_count(NULL), 0);
    assert_null(loco_tensors_name(NULL, 0));
    assert_null(loco_tensors_metadata(NULL, "k"));
    loco_tensors_close(NULL);
    const char *p = write_small_valid("v.safetensors");
    CHECK_OK(loco_tensors_open(p, &f));
    float *d;
    expect_error(loco_tensors_read_f32(f, NULL, &d, NULL, NULL, 0), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    expect_error(loco_tensors_read_f32(f, "a", NULL, NULL, NULL, 0), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    expect_error(loco_tensors_info(NULL, "a", NULL, NULL, NULL), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    assert_null(loco_tensors_metadata(f, NULL));
    loco_tensors_close(f);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_empty_and_short),  T(test_not_a_file),       T(test_header_length),
        T(test_hostile_headers),  T(test_nul_in_header),    T(test_deep_nesting),
        T(test_many_tensors),     T(test_truncated),        T(test_corrupted_bytes),
        T(test_roundtrip_f32),    T(test_roundtrip_f16),    T(test_roundtrip_bf16),
        T(test_nonfinite),        T(test_empty_and_scalar_tensors), T(test_write_atomic),
        T(test_null_arguments),
    };
    return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
