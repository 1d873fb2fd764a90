/* test_tokenizer.c - the CLIP BPE tokenizer (src/text/clip_tokenizer.c)
 * against transformers' CLIPTokenizer: the 24 prompts of
 * sd-tiny/tokenizer-cases.json with the pipeline's "!" padding and with
 * SD 1.x's <|endoftext|> padding, the 6 prompts of sd-tiny/vectors.safetensors
 * (all 77 ids); then hostile folders (missing files, malformed vocab.json,
 * merges.txt and configurations), hostile prompts (invalid UTF-8, NUL bytes,
 * 1 MB), the speed of opening and tokenizing, and threads sharing a handle. */
#include "testutil.h"
#include "tmpdir.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"
#include "text/clip_tokenizer.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define SLOW 20.0 /* sanitizers: time limits 20x looser */
#else
#define SLOW 1.0
#endif

#define PIPE "sd-tiny/pipeline"
#define TOKDIR "sd-tiny/pipeline/tokenizer"
#define ML 77

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a whole fixture or temporary file (caller frees) */
static char *slurp(const char *path, size_t *len) {
    char *d;
    size_t n;
    if (loco_read_file(path, &d, &n, (size_t)64 << 20)) fail_msg("%s: %s", path, loco_last_error());
    if (len) *len = n;
    return d;
}

static loco_tokenizer *open_ok(const char *dir) {
    loco_tokenizer *t;
    loco_status s = loco_tokenizer_open(dir, &t);
    if (s) fail_msg("loco_tokenizer_open(%s): %s", dir, loco_last_error());
    return t;
}

/* Fails at the first difference of got[0..n) and want[0..n), printing it
 * and both sequences around it. */
static void check_ids(const char *what, const int64_t *got, const int64_t *want, int n) {
    for (int i = 0; i < n; i++) {
        if (got[i] == want[i]) continue;
        printf("  %s: first mismatch at index %d: got %lld, want %lld\n    got :", what, i, (long long)got[i],
               (long long)want[i]);
        for (int k = 0; k < n && k < i + 8; k++) printf(" %lld", (long long)got[k]);
        printf("\n    want:");
        for (int k = 0; k < n && k < i + 8; k++) printf(" %lld", (long long)want[k]);
        printf("\n");
        fail_msg("%s: ids differ at index %d", what, i);
    }
}

static cJSON *load_cases(void) {
    char *text = slurp(fixture_path("sd-tiny/tokenizer-cases.json"), NULL);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("tokenizer-cases.json: bad JSON");
    return j;
}

static int json_ids(const cJSON *arr, int64_t *out, int cap) {
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (n >= cap) fail_msg("too many ids in the fixture");
        out[n++] = (int64_t)e->valuedouble;
    }
    return n;
}

/* Every prompt of tokenizer-cases.json against the fixture's `key` ids.
 * The fixture lists the ids up to the first <|endoftext|>: after it come
 * the padding (checked: all pad) or, for the one prompt that has an
 * <|endoftext|> in its text, the rest of the text (checked by name). */
static void run_cases(loco_tokenizer *t, const char *key, int64_t pad) {
    cJSON *j = load_cases();
    int n_cases = 0, n_openai = 0;
    for (int part = 0; part < 2; part++) {
        const char *group = part ? "extra" : "prompts";
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, group)) {
            const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
            int64_t want[ML], oa[ML], got[ML];
            int m = json_ids(cJSON_GetObjectItem(c, key), want, ML);
            int mo = json_ids(cJSON_GetObjectItem(c, "openai"), oa, ML);
            int n_real = -1;
            CHECK_OK(loco_tokenize(t, prompt, got, &n_real));
            char what[160];
            snprintf(what, sizeof what, "%s %s[%d] '%.60s'", key, group, n_cases, prompt);
            check_ids(what, got, want, m);
            if (strstr(prompt, "<|endoftext|>")) {
                /* "<|startoftext|>inner special tokens<|endoftext|> in text" */
                assert_int_equal(n_real, m + 3);
                assert_string_equal(loco_tokenizer_token(t, got[m]), "in</w>");
                assert_string_equal(loco_tokenizer_token(t, got[m + 1]), "text</w>");
                assert_int_equal(got[m + 2], 49407);
            } else {
                if (n_real != m) fail_msg("%s: %d real tokens, the fixture %d", what, n_real, m);
            }
            for (int i = n_real; i < ML; i++)
                if (got[i] != pad) fail_msg("%s: id %d is %lld, not the pad %lld", what, i, (long long)got[i], (long long)pad);
            bool same_openai = mo == m && memcmp(oa, want, (size_t)m * sizeof *oa) == 0;
            n_openai += same_openai;
            if (part) printf("  extra '%s': agrees with %s%s\n", prompt, key, same_openai ? " and openai/CLIP" : " (openai/CLIP differs)");
            n_cases++;
        }
    }
    cJSON_Delete(j);
    printf("  %d/%d prompts agree with %s (%d of them also with openai/CLIP)\n", n_cases, n_cases, key, n_openai);
    assert_int_equal(n_cases, 24);
}

static void test_cases_pad_bang(void **state) {
    (void)state;
    loco_tokenizer *t = open_ok(fixture_path(PIPE)); /* the pipeline root */
    loco_tokenizer_info inf;
    CHECK_OK(loco_tokenizer_get_info(t, &inf));
    assert_int_equal(inf.pad_id, 0);
    assert_string_equal(inf.pad, "!");
    run_cases(t, "hf_pad_bang", 0);
    loco_tokenizer_free(t);
}

/* the fixture tokenizer's files in folder `name`, with `map` as
 * special_tokens_map.json and `cfg` as tokenizer_config.json (NULL: the
 * fixture's; "": none) */
static const char *tok_folder(const char *name, const char *cfg, const char *map) {
    const char *dir = tpath(name);
    if (mkdir(dir, 0755) != 0) fail_msg("mkdir %s", dir);
    static const char *const files[] = {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"};
    for (int k = 0; k < 4; k++) {
        const char *over = k == 2 ? cfg : k == 3 ? map : NULL;
        char src[512], dst[512];
        snprintf(src, sizeof src, "%s/%s", fixture_path(TOKDIR), files[k]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[k]);
        if (over) {
            if (over[0]) write_raw(dst, over, strlen(over));
            continue;
        }
        size_t n;
        char *d = slurp(src, &n);
        write_raw(dst, d, n);
        free(d);
    }
    return dir;
}

/* SD 1.x (openai/clip-vit-large-patch14)'s special_tokens_map.json */
static const char *const sd1_map =
    "{\"bos_token\": {\"content\": \"<|startoftext|>\", \"lstrip\": false, \"normalized\": true, \"rstrip\": false, "
    "\"single_word\": false},\n \"eos_token\": {\"content\": \"<|endoftext|>\", \"lstrip\": false, \"normalized\": true, "
    "\"rstrip\": false, \"single_word\": false},\n \"pad_token\": \"<|endoftext|>\",\n \"unk_token\": {\"content\": "
    "\"<|endoftext|>\", \"lstrip\": false, \"normalized\": true, \"rstrip\": false, \"single_word\": false}}\n";

/* SD 1.x padding: special_tokens_map.json replaces the tokenizer_config.json
 * pad_token "!" (transformers' older layout: no added_tokens_decoder) */
static void test_cases_pad_eot(void **state) {
    (void)state;
    loco_tokenizer *t = open_ok(tok_folder("sd1", NULL, sd1_map));
    loco_tokenizer_info inf;
    CHECK_OK(loco_tokenizer_get_info(t, &inf));
    assert_int_equal(inf.pad_id, 49407);
    assert_string_equal(inf.pad, "<|endoftext|>");
    run_cases(t, "hf_pad_eot", 49407);
    loco_tokenizer_free(t);
}

/* The newer layout (SD 2.1 on the hub today): tokenizer_config.json has
 * added_tokens_decoder, and special_tokens_map.json is then not read. */
static void test_added_tokens_decoder(void **state) {
    (void)state;
    const char *cfg =
        "{\"added_tokens_decoder\": {\"0\": {\"content\": \"!\", \"lstrip\": false, \"normalized\": false, \"rstrip\": "
        "false, \"single_word\": false, \"special\": true}, \"49406\": {\"content\": \"<|startoftext|>\", \"lstrip\": false, "
        "\"normalized\": true, \"rstrip\": false, \"single_word\": false, \"special\": true}, \"49407\": {\"content\": "
        "\"<|endoftext|>\", \"lstrip\": false, \"normalized\": true, \"rstrip\": false, \"single_word\": false, \"special\": "
        "true}}, \"bos_token\": \"<|startoftext|>\", \"do_lower_case\": true, \"eos_token\": \"<|endoftext|>\", "
        "\"model_max_length\": 77, \"pad_token\": \"!\", \"tokenizer_class\": \"CLIPTokenizer\", \"unk_token\": "
        "\"<|endoftext|>\"}";
    loco_tokenizer *t = open_ok(tok_folder("sd21", cfg, sd1_map));
    loco_tokenizer_info inf;
    CHECK_OK(loco_tokenizer_get_info(t, &inf));
    assert_int_equal(inf.pad_id, 0);
    run_cases(t, "hf_pad_bang", 0);
    loco_tokenizer_free(t);
}

/* vectors.safetensors: ids [6,77] of the prompts in its `meta` */
static void test_vectors(void **state) {
    (void)state;
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(fixture_path("sd-tiny/vectors.safetensors"), &f));
    const void *raw;
    size_t nbytes;
    CHECK_OK(loco_tensors_raw(f, "ids", &raw, &nbytes));
    assert_int_equal(nbytes, 6 * ML * sizeof(int64_t));
    cJSON *meta = cJSON_Parse(loco_tensors_metadata(f, "meta"));
    const cJSON *prompts = cJSON_GetObjectItem(meta, "prompts");
    assert_int_equal(cJSON_GetArraySize(prompts), 6);
    loco_tokenizer *t = open_ok(fixture_path(PIPE));
    for (int p = 0; p < 6; p++) {
        int64_t want[ML], got[ML];
        memcpy(want, (const char *)raw + (size_t)p * ML * sizeof(int64_t), sizeof want);
        const char *s = cJSON_GetArrayItem(prompts, p)->valuestring;
        int n_real, trunc;
        CHECK_OK(loco_tokenize_n(t, s, strlen(s), got, &n_real, &trunc));
        char what[96];
        snprintf(what, sizeof what, "vectors ids[%d] '%.40s'", p, s);
        check_ids(what, got, want, ML);
        printf("  %-50s all 77 ids equal (%d real%s)\n", what, n_real, trunc ? ", truncated" : "");
        assert_int_equal(trunc, p == 4); /* prompt 4 is longer than 77 tokens */
    }
    loco_tokenizer_free(t);
    cJSON_Delete(meta);
    loco_tensors_close(f);
}

static void test_info_and_tokens(void **state) {
    (void)state;
    loco_tokenizer *t = open_ok(fixture_path(TOKDIR)), *t2 = open_ok(fixture_path(PIPE));
    loco_tokenizer_info a, b;
    CHECK_OK(loco_tokenizer_get_info(t, &a));
    CHECK_OK(loco_tokenizer_get_info(t2, &b));
    assert_int_equal(a.max_length, 77);
    assert_int_equal(loco_tokenizer_max_length(t), 77);
    assert_int_equal(a.vocab_size, 49408);
    assert_int_equal(a.n_ids, 49408);
    assert_int_equal(a.bos_id, 49406);
    assert_int_equal(a.eos_id, 49407);
    assert_int_equal(a.unk_id, 49407);
    assert_string_equal(a.bos, "<|startoftext|>");
    assert_string_equal(a.unk, "<|endoftext|>");
    assert_true(strstr(b.dir, "pipeline/tokenizer") != NULL);
    assert_int_equal(b.pad_id, a.pad_id);
    assert_string_equal(loco_tokenizer_token(t, 320), "a</w>");
    assert_string_equal(loco_tokenizer_token(t, 0), "!");
    assert_string_equal(loco_tokenizer_token(t, 49407), "<|endoftext|>");
    assert_null(loco_tokenizer_token(t, -1));
    assert_null(loco_tokenizer_token(t, 49408));
    assert_null(loco_tokenizer_token(NULL, 0));
    assert_int_equal(loco_tokenizer_max_length(NULL), 0);
    expect_error(loco_tokenizer_get_info(NULL, &a), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    loco_tokenizer_free(t);
    loco_tokenizer_free(t2);
    loco_tokenizer_free(NULL);
}

/* ---- hostile prompts -------------------------------------------------------- */

static void test_invalid_utf8(void **state) {
    (void)state;
    loco_tokenizer *t = open_ok(fixture_path(PIPE));
    static const struct {
        const char *s;
        size_t len, bad;
    } cases[] = {
        {"abc\xff", 4, 3},            {"\x80", 1, 0},                  {"a \xc0\xaf", 4, 2}, /* overlong '/' */
        {"xy\xed\xa0\x80", 5, 2},     /* surrogate U+D800 */           {"\xf4\x90\x80\x80", 4, 0}, /* > U+10FFFF */
        {"photo \xe2\x82", 8, 6},     /* truncated euro sign */        {"\xc3\xa9\xc3", 3, 2},
        {"ok\xe2\x28\xa1", 5, 2},     {"\xf8\x88\x80\x80\x80", 5, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t ids[ML];
        int n_real = 99;
        char want[32];
        snprintf(want, sizeof want, "byte %zu ", cases[k].bad);
        expect_error(loco_tokenize_n(t, cases[k].s, cases[k].len, ids, &n_real, NULL), LOCO_E_INVALID_ARGUMENT,
                     "not UTF-8", want);
        assert_int_equal(n_real, 0);
        assert_int_equal(clip_utf8_check(cases[k].s, cases[k].len), cases[k].bad);
        if (k == 0) printf("  e.g. %s\n", loco_last_error());
    }
    /* the NUL-terminated form sees the same */
    int64_t ids[ML];
    expect_error(loco_tokenize(t, "caf\xe9", ids, NULL), LOCO_E_INVALID_ARGUMENT, "byte 3", NULL);
    /* valid edge cases: U+10FFFF, U+FFFF, 4-byte emoji */
    assert_int_equal(clip_utf8_check("\xf4\x8f\xbf\xbf\xef\xbf\xbf\xf0\x9f\x90\xb1", 11), 11);
    CHECK_OK(loco_tokenize(t, "\xf4\x8f\xbf\xbf\xef\xbf\xbf\xf0\x9f\x90\xb1", ids, NULL));
    loco_tokenizer_free(t);
}

static void tok(loco_tokenizer *t, const char *s, size_t len, int64_t *ids, int *n_real) {
    CHECK_OK(loco_tokenize_n(t, s, len, ids, n_real, NULL));
}

static void test_nul_and_blank(void **state) {
    (void)state;
    loco_tokenizer *t = open_ok(fixture_path(PIPE));
    int64_t a[ML], b[ML];
    int na, nb;
    /* U+0000 is dropped, as BasicTokenizer drops it: "a\0photo" is "aphoto" */
    tok(t, "a\0photo", 7, a, &na);
    tok(t, "aphoto", 6, b, &nb);
    check_ids("a\\0photo vs aphoto", a, b, ML);
    tok(t, "a photo\0\0", 9, a, &na);
    tok(t, "a photo", 7, b, &nb);
    check_ids("trailing NULs", a, b, ML);
    assert_int_equal(na, 4);
    /* only spaces, controls, format characters and U+FFFD: start, end, padding */
    static const char blank[] = " \t\n\r\v\f\x01\x1f\x7f\xc2\x85\xc2\xa0\xe2\x80\x8b\xe2\x80\xa8\xe3\x80\x80\xef\xbf\xbd\0";
    tok(t, blank, sizeof blank, a, &na);
    tok(t, "", 0, b, &nb);
    check_ids("blank prompt", a, b, ML);
    assert_int_equal(na, 2);
    tok(t, NULL, 0, b, &nb);
    check_ids("NULL, 0", a, b, ML);
    /* the vertical tab is a control character (dropped), the tab a space */
    tok(t, "a\vb", 3, a, &na);
    tok(t, "ab", 2, b, &nb);
    check_ids("a\\vb vs ab", a, b, ML);
    tok(t, "a\tb", 3, a, &na);
    assert_int_equal(na, 4);
    /* NULL arguments */
    expect_error(loco_tokenize(NULL, "a", a, NULL), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    expect_error(loco_tokenize(t, NULL, a, NULL), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    expect_error(loco_tokenize(t, "a", NULL, NULL), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    expect_error(loco_tokenize_n(t, NULL, 3, a, NULL, NULL), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    loco_tokenizer_free(t);
}

/* GPT-2's byte <-> character table, for spelling tokens back */
static int char_byte(uint32_t cp) {
    for (int b = 0; b < 256; b++) {
        uint32_t c = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE ? (uint32_t)b
                     : b <= 0x20                                                     ? 256u + (uint32_t)b
                     : b <= 0xA0                                                     ? 256u + 33 + (uint32_t)(b - 0x7F)
                                                                                     : 256u + 67;
        if (c == cp) return b;
    }
    return -1;
}

/* The bytes the ids ids[1..n_real-1) spell (each token's characters back to
 * bytes, "</w>" dropped), appended to out; returns the count. */
static size_t spell(loco_tokenizer *t, const int64_t *ids, int n_real, char *out, size_t cap) {
    size_t o = 0;
    for (int i = 1; i < n_real - 1; i++) {
        const char *s = loco_tokenizer_token(t, ids[i]);
        assert_non_null(s);
        size_t n = strlen(s);
        if (n >= 4 && strcmp(s + n - 4, "</w>") == 0) n -= 4;
        for (size_t k = 0; k < n;) {
            uint32_t cp = (unsigned char)s[k];
            int extra = cp >= 0xF0 ? 3 : cp >= 0xE0 ? 2 : cp >= 0xC0 ? 1 : 0;
            if (extra) cp &= 0x3Fu >> extra;
            for (int x = 1; x <= extra; x++) cp = cp << 6 | ((unsigned char)s[k + (size_t)x] & 0x3F);
            k += (size_t)extra + 1;
            int b = char_byte(cp);
            if (b < 0 || o >= cap) fail_msg("token '%s' is not byte-level", s);
            out[o++] = (char)b;
        }
    }
    return o;
}

/* 1 MB prompts: truncated like short ones, in bounded time whatever the
 * shape (many words; one word of one letter, of random letters, of
 * combining sequences, of punctuation; pad tokens). */
static void test_long_prompts(void **state) {
    (void)state;
    loco_tokenizer *t = open_ok(fixture_path(PIPE));
    const size_t N = (size_t)1 << 20;
    char *big = malloc(N + 1);
    int64_t a[ML], b[ML];
    int na, nb, trunc;
    alarm(600); /* a hang or a quadratic blow-up fails */
    /* many words: the same ids as a short prompt past 75 tokens */
    static const char phrase[] = "a photo of a man wearing glasses, ";
    size_t L = strlen(phrase);
    for (size_t i = 0; i < N; i++) big[i] = phrase[i % L];
    double t0 = now();
    CHECK_OK(loco_tokenize_n(t, big, N, a, &na, &trunc));
    double dt = now() - t0;
    CHECK_OK(loco_tokenize_n(t, big, 20 * L, b, &nb, NULL));
    check_ids("1 MB of words vs 20 phrases", a, b, ML);
    assert_int_equal(na, 77);
    assert_int_equal(trunc, 1);
    assert_int_equal(a[76], 49407);
    printf("  1 MB prompt of words: %.2f ms\n", 1e3 * dt);
    assert_true(dt < 1.0 * SLOW);
    /* single words of 1 MB: BPE of the whole word, then its first 75 tokens,
     * which must spell the word's start */
    char spelled[4096];
    uint64_t rng = 12345;
    for (int shape = 0; shape < 4; shape++) {
        const char *name = "";
        size_t n = N;
        if (shape == 0) {
            name = "'a' x 1M";
            memset(big, 'a', N);
        } else if (shape == 1) {
            name = "random letters";
            for (size_t i = 0; i < N; i++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                big[i] = (char)('a' + (rng >> 33) % 26);
            }
        } else if (shape == 2) {
            name = "e + U+0301 (NFC: e-acute)";
            for (size_t i = 0; i + 3 <= N; i += 3) memcpy(big + i, "e\xcc\x81", 3);
            n = N / 3 * 3;
        } else {
            name = "'.,;' (one punctuation run)";
            for (size_t i = 0; i < N; i++) big[i] = ".,;"[i % 3];
        }
        t0 = now();
        CHECK_OK(loco_tokenize_n(t, big, n, a, &na, &trunc));
        dt = now() - t0;
        assert_int_equal(na, 77);
        assert_int_equal(trunc, 1);
        size_t m = spell(t, a, na, spelled, sizeof spelled);
        const char *expect = big;
        if (shape == 2) { /* NFC composed it: U+00E9 = C3 A9 */
            for (size_t i = 0; i < m; i += 2)
                if (memcmp(spelled + i, "\xc3\xa9", m - i < 2 ? m - i : 2) != 0) fail_msg("%s: not e-acute at %zu", name, i);
        } else if (memcmp(spelled, expect, m) != 0) {
            fail_msg("%s: the 75 tokens do not spell the word's start", name);
        }
        printf("  1 MB word, %-28s %7.1f ms, 75 tokens spell its first %zu bytes\n", name, 1e3 * dt, m);
        assert_true(dt < 10.0 * SLOW); /* ~0.5 s; quadratic would be hours */
    }
    /* 1 MB of the pad token "!" (an added token): 75 pad ids */
    memset(big, '!', N);
    t0 = now();
    CHECK_OK(loco_tokenize_n(t, big, N, a, &na, &trunc));
    dt = now() - t0;
    for (int i = 1; i < 76; i++) assert_int_equal(a[i], 0);
    assert_int_equal(trunc, 1);
    printf("  1 MB of '!': %.2f ms\n", 1e3 * dt);
    assert_true(dt < 1.0 * SLOW);
    /* 1 MB of CJK ideographs (each its own word) */
    for (size_t i = 0; i + 3 <= N; i += 3) memcpy(big + i, "\xe4\xb8\xad", 3); /* U+4E2D */
    CHECK_OK(loco_tokenize_n(t, big, N / 3 * 3, a, &na, &trunc));
    assert_int_equal(na, 77);
    alarm(0);
    free(big);
    loco_tokenizer_free(t);
}

/* ---- speed -------------------------------------------------------------------- */

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void test_speed(void **state) {
    (void)state;
    double o[5];
    loco_tokenizer *t = NULL;
    for (int r = 0; r < 5; r++) {
        loco_tokenizer_free(t);
        double t0 = now();
        t = open_ok(fixture_path(PIPE));
        o[r] = now() - t0;
    }
    qsort(o, 5, sizeof *o, cmp_double);
    /* a 77-token prompt */
    static const char prompt[] =
        "a highly detailed photograph of an astronaut riding a horse on the surface of mars, golden hour lighting, "
        "cinematic composition, 8k resolution, ultra sharp focus, trending on artstation, by greg rutkowski and "
        "alphonse mucha, intricate ornate details, volumetric fog, ray tracing, octane render, unreal engine, "
        "masterpiece, award winning photography, depth of field";
    int64_t ids[ML];
    int n_real, trunc;
    enum { R = 15, K = 200 };
    double per[R];
    for (int r = 0; r < R; r++) {
        double t0 = now();
        for (int k = 0; k < K; k++) CHECK_OK(loco_tokenize_n(t, prompt, sizeof prompt - 1, ids, &n_real, &trunc));
        per[r] = (now() - t0) / K;
    }
    qsort(per, R, sizeof *per, cmp_double);
    printf("  open: median %.1f ms (min %.1f) for %d tokens and merges; tokenize a %d-token prompt: median %.1f us\n",
           1e3 * o[2], 1e3 * o[0], 49408, n_real, 1e6 * per[R / 2]);
    assert_true(n_real >= 70);
    assert_int_equal(trunc, 0);
    /* limits with room for a loaded 2-core machine */
    assert_true(o[0] < 0.1 * SLOW);
    assert_true(per[R / 2] < 1e-3 * SLOW);
    loco_tokenizer_free(t);
}

/* several threads on one handle get what one thread gets */
static void test_threads(void **state) {
    (void)state;
    loco_tokenizer *t = open_ok(fixture_path(PIPE));
    cJSON *j = load_cases();
    const cJSON *list = cJSON_GetObjectItem(j, "prompts");
    int n = cJSON_GetArraySize(list);
    const char *p[32];
    int64_t want[32][ML];
    for (int i = 0; i < n; i++) {
        p[i] = cJSON_GetObjectItem(cJSON_GetArrayItem(list, i), "prompt")->valuestring;
        CHECK_OK(loco_tokenize(t, p[i], want[i], NULL));
    }
    int bad = 0;
#pragma omp parallel for num_threads(4) reduction(+ : bad)
    for (int r = 0; r < 64 * n; r++) {
        int64_t got[ML];
        if (loco_tokenize(t, p[r % n], got, NULL) != LOCO_OK || memcmp(got, want[r % n], sizeof got) != 0) bad++;
    }
    printf("  %d tokenizations on 4 threads, %d differ\n", 64 * n, bad);
    assert_int_equal(bad, 0);
    cJSON_Delete(j);
    loco_tokenizer_free(t);
}

/* ---- hostile folders ---------------------------------------------------------- */

static char *g_vocab, *g_merges;
static size_t g_vocab_n, g_merges_n;

static void load_originals(void) {
    if (g_vocab) return;
    char p[512];
    snprintf(p, sizeof p, "%s/vocab.json", fixture_path(TOKDIR));
    g_vocab = slurp(p, &g_vocab_n);
    snprintf(p, sizeof p, "%s/merges.txt", fixture_path(TOKDIR));
    g_merges = slurp(p, &g_merges_n);
}

/* A folder with vocab.json = the fixture's with its closing brace replaced by
 * vocab_tail (NULL: unchanged), merges.txt = merges (NULL: the fixture's),
 * and tokenizer_config.json = cfg when given. */
static const char *hostile_dir(const char *name, const char *vocab_tail, const char *merges, size_t merges_n,
                               const char *cfg) {
    load_originals();
    const char *dir = tpath(name);
    if (mkdir(dir, 0755) != 0) fail_msg("mkdir %s", dir);
    char p[512];
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    if (vocab_tail) {
        const char *brace = strrchr(g_vocab, '}');
        size_t head = (size_t)(brace - g_vocab), tl = strlen(vocab_tail);
        char *v = malloc(head + tl);
        memcpy(v, g_vocab, head);
        memcpy(v + head, vocab_tail, tl);
        write_raw(p, v, head + tl);
        free(v);
    } else {
        write_raw(p, g_vocab, g_vocab_n);
    }
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    if (merges) write_raw(p, merges, merges_n);
    else write_raw(p, g_merges, g_merges_n);
    if (cfg) {
        snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
        write_raw(p, cfg, strlen(cfg));
    }
    return dir;
}

/* merges.txt with `line` put in place of line `at` (2 = the first merge);
 * replace = 0 inserts it before that line instead; caller frees */
static char *merges_with(const char *line, int at, int replace, size_t *len) {
    load_originals();
    const char *s = g_merges;
    for (int k = 1; k < at; k++) s = strchr(s, '\n') + 1;
    const char *rest = replace ? strchr(s, '\n') + 1 : s;
    size_t head = (size_t)(s - g_merges), ll = strlen(line), tail = g_merges_n - (size_t)(rest - g_merges);
    char *m = malloc(head + ll + 1 + tail);
    memcpy(m, g_merges, head);
    memcpy(m + head, line, ll);
    m[head + ll] = '\n';
    memcpy(m + head + ll + 1, rest, tail);
    *len = head + ll + 1 + tail;
    return m;
}

static void expect_open_error(const char *dir, loco_status want, const char *n1, const char *n2) {
    loco_tokenizer *t = (loco_tokenizer *)1;
    loco_status s = loco_tokenizer_open(dir, &t);
    expect_error(s, want, n1, n2);
    assert_null(t);
    printf("  refused: %s\n", loco_last_error());
}

static void test_missing_files(void **state) {
    (void)state;
    expect_open_error(tpath("nothing-here"), LOCO_E_NOT_FOUND, "no such folder", NULL);
    write_raw(tpath("afile"), "x", 1);
    expect_open_error(tpath("afile"), LOCO_E_INVALID_ARGUMENT, "not a folder", NULL);
    mkdir(tpath("empty"), 0755);
    expect_open_error(tpath("empty"), LOCO_E_NOT_FOUND, "neither a tokenizer folder", NULL);
    /* missing merges.txt */
    const char *d = hostile_dir("nomerges", NULL, NULL, 0, NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/merges.txt", d);
    remove(p);
    expect_open_error(d, LOCO_E_NOT_FOUND, "merges.txt", "missing");
    /* merges.txt a folder */
    mkdir(p, 0755);
    expect_open_error(d, LOCO_E_IO, "merges.txt", "folder");
    /* a pipeline folder whose tokenizer/ lacks vocab.json */
    mkdir(tpath("pipe"), 0755);
    mkdir(tpath("pipe/tokenizer"), 0755);
    expect_open_error(tpath("pipe"), LOCO_E_NOT_FOUND, "tokenizer/vocab.json", "missing");
    expect_error(loco_tokenizer_open(NULL, NULL), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
}

static void test_bad_vocab(void **state) {
    (void)state;
    static const struct {
        const char *tail, *n1, *n2;
    } cases[] = {
        {", \"photo</w>\": 49408}", "'photo</w>' appears twice", NULL},
        {", \"zzzqqq\": 320}", "both have id 320", "zzzqqq"},
        {", \"zzzqqq\": 1.5}", "zzzqqq", "must be an integer id"},
        {", \"zzzqqq\": \"5\"}", "zzzqqq", "must be an integer id"},
        {", \"zzzqqq\": -3}", "zzzqqq", "out of range"},
        {", \"zzzqqq\": 99999999999999}", "zzzqqq", "out of range"},
        {", \"zz\xff\": 49408}", "not UTF-8", NULL},
        {", \"a\\u0000b\": 49408}", "\\u0000", NULL},
        {", \"a\\ud800b\": 49408}", "lone surrogate", NULL},
        {", \"a\\qb\": 49408}", "invalid escape", NULL},
        {", \"zzz\" 49408}", "expected ':'", NULL},
        {", \"zzz\": 49408", "expected ',' or '}'", "end of the file"},
        {"} []", "data after the JSON object", NULL},
        {", \"unterminated: 1}", "unterminated string", NULL},
        {", \"tab\there\": 49408}", "raw control character", NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[32];
        snprintf(name, sizeof name, "v%zu", k);
        expect_open_error(hostile_dir(name, cases[k].tail, NULL, 0, NULL), LOCO_E_FORMAT, cases[k].n1, cases[k].n2);
        assert_non_null(strstr(loco_last_error(), "vocab.json"));
        if (strstr(cases[k].tail, "\xff")) { /* the offset of the bad byte */
            char at[32];
            snprintf(at, sizeof at, "byte %zu:", (size_t)(strrchr(g_vocab, '}') - g_vocab) + 5);
            expect_error(LOCO_E_FORMAT, LOCO_E_FORMAT, at, NULL);
        }
    }
    /* not an object; empty; a byte-level token missing */
    const char *d = hostile_dir("varr", NULL, NULL, 0, NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/vocab.json", d);
    write_raw(p, "[1, 2]", 6);
    expect_open_error(d, LOCO_E_FORMAT, "vocab.json", "expected a JSON object");
    write_raw(p, " {} ", 4);
    expect_open_error(d, LOCO_E_FORMAT, "vocab.json", "empty");
    write_raw(p, "", 0);
    expect_open_error(d, LOCO_E_FORMAT, "vocab.json", "expected a JSON object");
    load_originals();
    const char *bang = strstr(g_vocab, "\"!\": 0, ");
    assert_non_null(bang);
    size_t head = (size_t)(bang - g_vocab), skip = strlen("\"!\": 0, ");
    char *v = malloc(g_vocab_n);
    memcpy(v, g_vocab, head);
    memcpy(v + head, bang + skip, g_vocab_n - head - skip);
    write_raw(p, v, g_vocab_n - skip);
    free(v);
    expect_open_error(d, LOCO_E_FORMAT, "lacks the byte-level token '!'", "byte 0x21");
}

static void test_bad_merges(void **state) {
    (void)state;
    static const struct {
        const char *line;
        int at, replace;
        const char *n1, *n2;
    } cases[] = {
        {"zzzq x", 2, 1, "line 2: token 'zzzq' is not in vocab.json", NULL},
        {"i zzzq", 3, 1, "line 3: token 'zzzq' is not in vocab.json", NULL},
        {"q z", 2, 1, "line 2: the merge of 'q' and 'z', 'qz', is not in vocab.json", NULL},
        {"i n", 3, 0, "line 3 repeats the merge 'i n' of line 2", NULL},
        {"i n x", 2, 1, "line 2: expected two tokens", "found 3"},
        {"", 5, 0, "line 5: expected two tokens", "found 0"},
        {"\xc3\x28 x", 2, 1, "not UTF-8", "byte 14"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t n;
        char *m = merges_with(cases[k].line, cases[k].at, cases[k].replace, &n);
        char name[32];
        snprintf(name, sizeof name, "m%zu", k);
        expect_open_error(hostile_dir(name, NULL, m, n, NULL), LOCO_E_FORMAT, cases[k].n1, cases[k].n2);
        assert_non_null(strstr(loco_last_error(), "merges.txt"));
        free(m);
    }
    /* transformers reads only the first 48894 merges: lines after them are
     * ignored, however malformed */
    load_originals();
    static const char extra[] = "zzzq x y\n\n\nq z\ni n\n";
    char *m = malloc(g_merges_n + sizeof extra);
    memcpy(m, g_merges, g_merges_n);
    memcpy(m + g_merges_n, extra, sizeof extra - 1);
    loco_tokenizer *t = open_ok(hostile_dir("mlimit", NULL, m, g_merges_n + sizeof extra - 1, NULL));
    int64_t a[ML];
    CHECK_OK(loco_tokenize(t, "a photo", a, NULL));
    assert_int_equal(a[2], 1125);
    loco_tokenizer_free(t);
    free(m);
    /* only the header: every pre-token stays bytes */
    t = open_ok(hostile_dir("mhead", NULL, "#version: 0.2\n", 14, NULL));
    int n_real;
    CHECK_OK(loco_tokenize(t, "ab", a, &n_real));
    const int64_t want[4] = {49406, 64, 321, 49407}; /* "a", "b</w>" */
    check_ids("no merges", a, want, 4);
    assert_int_equal(n_real, 4);
    loco_tokenizer_free(t);
    /* empty */
    expect_open_error(hostile_dir("mempty", NULL, " \n\n", 3, NULL), LOCO_E_FORMAT, "merges.txt", "empty");
}

static void test_bad_config(void **state) {
    (void)state;
    static const struct {
        const char *cfg;
        loco_status st;
        const char *n1, *n2;
    } cases[] = {
        {"{\"model_max_length\": 1e30}", LOCO_E_UNSUPPORTED, "tokenizer_config.json", "model_max_length"},
        {"{\"model_max_length\": 2}", LOCO_E_UNSUPPORTED, "model_max_length", NULL},
        {"{\"model_max_length\": \"77\"}", LOCO_E_UNSUPPORTED, "model_max_length", NULL},
        {"{\"tokenizer_class\": \"T5Tokenizer\"}", LOCO_E_UNSUPPORTED, "T5Tokenizer", NULL},
        {"{\"pad_token\": \"zzzq-not-a-token\"}", LOCO_E_FORMAT, "pad_token 'zzzq-not-a-token' is not in vocab.json", NULL},
        {"{\"pad_token\": null}", LOCO_E_UNSUPPORTED, "pad_token", "null"},
        {"{\"pad_token\": 5}", LOCO_E_FORMAT, "pad_token", "string, null or an object"},
        {"{\"pad_token\": {\"content\": \"!\", \"single_word\": true}}", LOCO_E_UNSUPPORTED, "single_word", NULL},
        {"{\"pad_token\": {\"content\": \"!\", \"lstrip\": 1}}", LOCO_E_FORMAT, "lstrip", "true or false"},
        {"{\"pad_token\": {\"lstrip\": false}}", LOCO_E_FORMAT, "content", NULL},
        {"{\"pad_token\": \"\"}", LOCO_E_FORMAT, "pad_token", "empty"},
        {"{\"pad_token\": \"a\\u0000b\"}", LOCO_E_FORMAT, "tokenizer_config.json", "\\u0000"},
        {"{\"model_max_length\": 77,", LOCO_E_FORMAT, "tokenizer_config.json", "not a valid JSON object"},
        {"[77]", LOCO_E_FORMAT, "tokenizer_config.json", "not a valid JSON object"},
        {"{\"added_tokens_decoder\": {\"x\": {\"content\": \"!\"}}}", LOCO_E_FORMAT, "added_tokens_decoder['x']", NULL},
        {"{\"added_tokens_decoder\": {\"-1\": {\"content\": \"!\"}}}", LOCO_E_FORMAT, "added_tokens_decoder['-1']", NULL},
        {"{\"added_tokens_decoder\": [1]}", LOCO_E_FORMAT, "added_tokens_decoder", "object"},
        {"{\"x\": \"\xe9t\xe9\"}", LOCO_E_FORMAT, "tokenizer_config.json", "not UTF-8"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[32];
        snprintf(name, sizeof name, "c%zu", k);
        expect_open_error(hostile_dir(name, NULL, NULL, 0, cases[k].cfg), cases[k].st, cases[k].n1, cases[k].n2);
    }
    /* a smaller model_max_length truncates there */
    loco_tokenizer *t = open_ok(hostile_dir("cmax16", NULL, NULL, 0, "{\"model_max_length\": 16}"));
    assert_int_equal(loco_tokenizer_max_length(t), 16);
    int64_t ids[16];
    int n_real, trunc;
    static const char long_prompt[] = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen";
    CHECK_OK(loco_tokenize_n(t, long_prompt, strlen(long_prompt), ids, &n_real, &trunc));
    assert_int_equal(n_real, 16);
    assert_int_equal(trunc, 1);
    assert_int_equal(ids[15], 49407);
    assert_string_equal(loco_tokenizer_token(t, ids[14]), "fourteen</w>");
    /* no configuration at all: CLIPTokenizer's defaults (pad <|endoftext|>), 77 */
    loco_tokenizer_free(t);
    t = open_ok(hostile_dir("cnone", NULL, NULL, 0, NULL));
    loco_tokenizer_info inf;
    CHECK_OK(loco_tokenizer_get_info(t, &inf));
    assert_int_equal(inf.max_length, 77);
    assert_int_equal(inf.pad_id, 49407);
    loco_tokenizer_free(t);
}

/* added_tokens.json (the older layout's extra tokens) */
static void test_added_tokens_json(void **state) {
    (void)state;
    const char *d = hostile_dir("added", NULL, NULL, 0, NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/added_tokens.json", d);
    write_raw(p, "{\"<new>\": 49408}", 16);
    loco_tokenizer *t = open_ok(d);
    loco_tokenizer_info inf;
    CHECK_OK(loco_tokenizer_get_info(t, &inf));
    assert_int_equal(inf.vocab_size, 49408);
    assert_int_equal(inf.n_ids, 49409);
    assert_string_equal(loco_tokenizer_token(t, 49408), "<new>");
    int64_t ids[ML];
    int n_real;
    CHECK_OK(loco_tokenize(t, "a<new>b", ids, &n_real));
    const int64_t want[5] = {49406, 320, 49408, 321, 49407};
    check_ids("a<new>b", ids, want, 5);
    assert_int_equal(n_real, 5);
    loco_tokenizer_free(t);
    write_raw(p, "{\"<new>\": 1.5}", 14);
    expect_open_error(d, LOCO_E_FORMAT, "added_tokens.json", "<new>");
}

#define T(fn) cmocka_unit_test(fn)
#define TD(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_cases_pad_bang),   TD(test_cases_pad_eot),  TD(test_added_tokens_decoder), T(test_vectors),
        T(test_info_and_tokens),  T(test_invalid_utf8),    T(test_nul_and_blank),         TD(test_long_prompts),
        T(test_speed),            T(test_threads),         TD(test_missing_files),        TD(test_bad_vocab),
        TD(test_bad_merges),      TD(test_bad_config),     TD(test_added_tokens_json),
    };
    int rc = cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
    free(g_vocab);
    free(g_merges);
    return rc;
}
