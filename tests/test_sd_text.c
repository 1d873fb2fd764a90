/* test_sd_text.c - Stable Diffusion's text encoder (families/sd_text.c)
 * against the sd-tiny fixture: transformers' CLIPTextModel output `emb`
 * [6, 77, 8] for the token ids `ids` [6, 77] of tests/fixtures/sd-tiny/
 * vectors.safetensors, from safetensors and from a pytorch_model.bin (with a
 * position_ids buffer) written from the same weights; batches and thread
 * counts give the same bits; ids outside the vocabulary, hostile configs and
 * hostile weights give errors that name the file and the key or tensor. */
#include "testutil.h"
#include "tmpdir.h"
#include "families/sd_text.h"

#include <sys/stat.h>

#define TE_DIR "sd-tiny/pipeline/text_encoder"

/* ids [6, 77] of the fixture */
static int64_t *load_ids(size_t *n) {
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(fixture_path("sd-tiny/vectors.safetensors"), &f));
    loco_dtype dt;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    CHECK_OK(loco_tensors_info(f, "ids", &dt, &nd, sh));
    assert_int_equal(dt, LOCO_DTYPE_I64);
    assert_int_equal(nd, 2);
    const void *raw;
    size_t nb;
    CHECK_OK(loco_tensors_raw(f, "ids", &raw, &nb));
    *n = (size_t)(sh[0] * sh[1]);
    assert_int_equal(nb, *n * sizeof(int64_t));
    int64_t *ids = malloc(nb);
    assert_non_null(ids);
    memcpy(ids, raw, nb);
    loco_tensors_close(f);
    return ids;
}

/* max |a - b| / max |b| */
static double rel_max(const float *a, const float *b, size_t n) {
    return max_abs_diff(a, b, n) / max_abs(b, n);
}

/* The fixture's CLIPTextModel (2 layers, width 8, 2 heads, MLP 16,
 * quick_gelu, eps 1e-5) in float64, token-major as transformers writes it:
 * an independent check of the float32 code and of the fixture. */
static void ln_f64(const double *x, const float *g, const float *b, double *y) {
    double m = 0, v = 0;
    for (int c = 0; c < 8; c++) m += x[c];
    m /= 8;
    for (int c = 0; c < 8; c++) v += (x[c] - m) * (x[c] - m);
    v /= 8;
    for (int c = 0; c < 8; c++) y[c] = (x[c] - m) / sqrt(v + 1e-5) * g[c] + b[c];
}

/* y [rows] = W [rows, cols] x + b */
static void lin_f64(int rows, int cols, const float *W, const float *b, const double *x, double *y) {
    for (int r = 0; r < rows; r++) {
        double s = b[r];
        for (int c = 0; c < cols; c++) s += (double)W[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

static void encode_f64(const char *wpath, int B, const int64_t *ids, double *out) {
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(wpath, &f));
    float *tok, *pos, *lnf_w, *lnf_b, *w[2][16];
    CHECK_OK(loco_tensors_read_f32(f, "text_model.embeddings.token_embedding.weight", &tok, NULL, NULL, 0));
    CHECK_OK(loco_tensors_read_f32(f, "text_model.embeddings.position_embedding.weight", &pos, NULL, NULL, 0));
    CHECK_OK(loco_tensors_read_f32(f, "text_model.final_layer_norm.weight", &lnf_w, NULL, NULL, 0));
    CHECK_OK(loco_tensors_read_f32(f, "text_model.final_layer_norm.bias", &lnf_b, NULL, NULL, 0));
    static const char *const parts[16] = {
        "layer_norm1.weight",     "layer_norm1.bias",       "self_attn.q_proj.weight", "self_attn.q_proj.bias",
        "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
        "self_attn.out_proj.weight", "self_attn.out_proj.bias", "layer_norm2.weight", "layer_norm2.bias",
        "mlp.fc1.weight",         "mlp.fc1.bias",           "mlp.fc2.weight",          "mlp.fc2.bias"};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 16; i++) {
            char name[128];
            snprintf(name, sizeof name, "text_model.encoder.layers.%d.%s", l, parts[i]);
            CHECK_OK(loco_tensors_read_f32(f, name, &w[l][i], NULL, NULL, 0));
        }
    static double x[77][8], h[77][8], q[77][8], k[77][8], v[77][8], o[77][8], t8[8], f16[16];
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < 77; t++)
            for (int c = 0; c < 8; c++) x[t][c] = (double)tok[ids[b * 77 + t] * 8 + c] + pos[t * 8 + c];
        for (int l = 0; l < 2; l++) {
            float *const *L = w[l];
            for (int t = 0; t < 77; t++) {
                ln_f64(x[t], L[0], L[1], h[t]);
                lin_f64(8, 8, L[2], L[3], h[t], q[t]);
                lin_f64(8, 8, L[4], L[5], h[t], k[t]);
                lin_f64(8, 8, L[6], L[7], h[t], v[t]);
            }
            for (int hd = 0; hd < 2; hd++)
                for (int i = 0; i < 77; i++) {
                    double s[77], mx = -INFINITY, sum = 0;
                    for (int j = 0; j <= i; j++) {
                        s[j] = 0;
                        for (int e = 0; e < 4; e++) s[j] += q[i][hd * 4 + e] * k[j][hd * 4 + e];
                        s[j] /= 2.0; /* sqrt(4) */
                        mx = fmax(mx, s[j]);
                    }
                    for (int j = 0; j <= i; j++) sum += s[j] = exp(s[j] - mx);
                    for (int e = 0; e < 4; e++) {
                        double acc = 0;
                        for (int j = 0; j <= i; j++) acc += s[j] / sum * v[j][hd * 4 + e];
                        o[i][hd * 4 + e] = acc;
                    }
                }
            for (int t = 0; t < 77; t++) {
                lin_f64(8, 8, L[8], L[9], o[t], t8);
                for (int c = 0; c < 8; c++) x[t][c] += t8[c];
                ln_f64(x[t], L[10], L[11], h[t]);
                lin_f64(16, 8, L[12], L[13], h[t], f16);
                for (int c = 0; c < 16; c++) f16[c] = f16[c] / (1 + exp(-1.702 * f16[c]));
                lin_f64(8, 16, L[14], L[15], f16, t8);
                for (int c = 0; c < 8; c++) x[t][c] += t8[c];
            }
        }
        for (int t = 0; t < 77; t++) ln_f64(x[t], lnf_w, lnf_b, out + ((size_t)b * 77 + t) * 8);
    }
    loco_free(tok), loco_free(pos), loco_free(lnf_w), loco_free(lnf_b);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 16; i++) loco_free(w[l][i]);
    loco_tensors_close(f);
}

/* Encodes the fixture's ids with the encoder in dir and checks emb. *out
 * (if non-NULL) receives the output. */
static void check_against_fixture(const char *dir, float **out) {
    sd_text *te;
    CHECK_OK(sd_text_open(dir, &te));
    assert_int_equal(sd_text_width(te), 8);
    assert_int_equal(sd_text_length(te), 77);
    assert_int_equal(sd_text_cfg(te)->act, ACT_QUICK_GELU);
    size_t nids, nemb;
    int64_t *ids = load_ids(&nids);
    float *ref = load_tensor(fixture_path("sd-tiny/vectors.safetensors"), "emb", &nemb);
    const int B = (int)(nids / 77);
    assert_int_equal(B, 6);
    assert_int_equal(nemb, nids * 8);
    float *emb = malloc(nemb * sizeof(float));
    assert_non_null(emb);
    CHECK_OK(sd_text_encode(te, B, ids, emb));
    double r = rel_max(emb, ref, nemb);
    printf("  %s: emb [6,77,8] vs transformers: max abs diff %.3e, relative to max |emb| %.3e (tol 1e-4)\n", dir,
           max_abs_diff(emb, ref, nemb), r);
    if (!(r <= 1e-4)) fail_msg("emb differs from the fixture: relative %.3e", r);
    /* both against a float64 evaluation of the same network */
    double *ed = malloc(nemb * sizeof(double));
    assert_non_null(ed);
    encode_f64(fixture_path(TE_DIR "/model.safetensors"), B, ids, ed);
    double d_ours = 0, d_fix = 0, m = 0;
    for (size_t i = 0; i < nemb; i++) {
        d_ours = fmax(d_ours, fabs(emb[i] - ed[i]));
        d_fix = fmax(d_fix, fabs(ref[i] - ed[i]));
        m = fmax(m, fabs(ed[i]));
    }
    printf("  against float64: ours max abs diff %.3e, the fixture's (PyTorch float32) %.3e (max |emb| %.3e)\n",
           d_ours, d_fix, m);
    if (!(d_ours <= 1e-5 * m)) fail_msg("emb differs from the float64 evaluation by %.3e", d_ours);
    free(ed);
    if (out) *out = emb;
    else free(emb);
    loco_free(ref);
    free(ids);
    sd_text_free(te);
}

static void test_fixture(void **state) {
    (void)state;
    float *emb;
    check_against_fixture(fixture_path(TE_DIR), &emb);
    /* each sequence alone gives the bits of the batch; 1 and 2 threads too */
    sd_text *te;
    CHECK_OK(sd_text_open(fixture_path(TE_DIR), &te));
    size_t nids;
    int64_t *ids = load_ids(&nids);
    float one[77 * 8], two[6 * 77 * 8];
    for (int b = 0; b < 6; b++) {
        CHECK_OK(sd_text_encode(te, 1, ids + b * 77, one));
        if (memcmp(one, emb + b * 77 * 8, sizeof one)) fail_msg("sequence %d alone differs from the batch", b);
    }
    const int saved = loco_get_threads();
    loco_set_threads(1);
    CHECK_OK(sd_text_encode(te, 6, ids, two));
    if (memcmp(two, emb, sizeof two)) fail_msg("1 thread differs from the default count");
    loco_set_threads(2);
    CHECK_OK(sd_text_encode(te, 6, ids, two));
    if (memcmp(two, emb, sizeof two)) fail_msg("2 threads differ from the default count");
    loco_set_threads(saved);
    printf("  each sequence alone = the batch of 6; 1 and 2 threads: bit for bit\n");
    free(ids);
    free(emb);
    sd_text_free(te);
}

/* ids outside the vocabulary, bad arguments */
static void test_bad_ids(void **state) {
    (void)state;
    sd_text *te;
    CHECK_OK(sd_text_open(fixture_path(TE_DIR), &te));
    size_t nids;
    int64_t *ids = load_ids(&nids);
    float *emb = malloc(nids * 8 * sizeof(float));
    assert_non_null(emb);
    ids[77 + 5] = 49408;
    expect_error(sd_text_encode(te, 6, ids, emb), LOCO_E_INVALID_ARGUMENT, "position 5 of sequence 1", "49408");
    ids[77 + 5] = 0;
    ids[4 * 77 + 76] = -1;
    expect_error(sd_text_encode(te, 6, ids, emb), LOCO_E_INVALID_ARGUMENT, "position 76 of sequence 4", "-1");
    ids[4 * 77 + 76] = 0;
    expect_error(sd_text_encode(te, 0, ids, emb), LOCO_E_INVALID_ARGUMENT, "batch", NULL);
    expect_error(sd_text_encode(te, 1, NULL, emb), LOCO_E_INVALID_ARGUMENT, NULL, NULL);
    CHECK_OK(sd_text_encode(te, 6, ids, emb));
    printf("  ids 49408 and -1 refused with their positions; B = 0 and NULL refused\n");
    free(ids);
    free(emb);
    sd_text_free(te);
}

/* ======================================================================== */
/* Rewritten folders: the fixture's weights (changed), a config             */
/* ======================================================================== */

typedef struct wset {
    size_t n;
    loco_tensor_ref *r;
    float **data;
} wset;

static wset load_weights_set(void) {
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(fixture_path(TE_DIR "/model.safetensors"), &f));
    wset w;
    w.n = loco_tensors_count(f);
    w.r = calloc(w.n + 2, sizeof *w.r);
    w.data = calloc(w.n + 2, sizeof *w.data);
    assert_true(w.r && w.data);
    for (size_t i = 0; i < w.n; i++) {
        loco_tensor_ref *r = &w.r[i];
        r->name = strdup(loco_tensors_name(f, i));
        r->dtype = LOCO_DTYPE_F32;
        CHECK_OK(loco_tensors_read_f32(f, r->name, &w.data[i], &r->ndim, r->shape, 0));
        r->data = w.data[i];
    }
    loco_tensors_close(f);
    return w;
}

static void free_set(wset *w) {
    for (size_t i = 0; i < w->n; i++) {
        free((char *)w->r[i].name);
        loco_free(w->data[i]);
    }
    free(w->r);
    free(w->data);
}

static loco_tensor_ref *find(wset *w, const char *name) {
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->r[i].name, name)) return &w->r[i];
    fail_msg("no tensor %s in the fixture", name);
    return NULL;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strdup(buf);
}

/* A folder name under the temporary folder, created. */
static const char *mkfolder(const char *name) {
    const char *d = tpath(name);
    if (mkdir(d, 0755) && errno != EEXIST) fail_msg("mkdir %s: %s", d, strerror(errno));
    return d;
}

static void put_config(const char *dir, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_raw(p, text, strlen(text));
}

static void put_weights(const char *dir, const wset *w, size_t n, int pt) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, pt ? "pytorch_model.bin" : "model.safetensors");
    if (pt) CHECK_OK(loco_pt_write(p, w->r, n));
    else CHECK_OK(loco_tensors_write(p, w->r, n, NULL, 0));
}

/* The fixture config with `from` replaced by `to` (once). */
static char *config_with(const char *from, const char *to) {
    char *base = read_text(fixture_path(TE_DIR "/config.json"));
    char *at = strstr(base, from);
    if (!at) fail_msg("the fixture config has no '%s'", from);
    size_t n = strlen(base) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);
    assert_non_null(s);
    snprintf(s, n, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    free(base);
    return s;
}

/* pytorch_model.bin with a position_ids buffer: the same bits as safetensors */
static void test_pytorch_bin(void **state) {
    (void)state;
    wset w = load_weights_set();
    int64_t pos[77];
    for (int i = 0; i < 77; i++) pos[i] = i;
    w.r[w.n] = (loco_tensor_ref){"text_model.embeddings.position_ids", LOCO_DTYPE_I64, 2, {1, 77}, pos};
    const char *d = mkfolder("bin");
    char *cfg = read_text(fixture_path(TE_DIR "/config.json"));
    put_config(d, cfg);
    put_weights(d, &w, w.n + 1, 1);
    float *a, *b;
    check_against_fixture(fixture_path(TE_DIR), &a);
    check_against_fixture(d, &b);
    if (memcmp(a, b, 6 * 77 * 8 * sizeof(float))) fail_msg("pytorch_model.bin and model.safetensors differ");
    printf("  pytorch_model.bin (with position_ids) = model.safetensors, bit for bit\n");
    /* safetensors wins when both are there; position_ids in safetensors too */
    put_weights(d, &w, w.n + 1, 0);
    check_against_fixture(d, NULL);
    free(a), free(b), free(cfg);
    free_set(&w);
}

static void expect_open_error(const char *dir, loco_status want, const char *n1, const char *n2) {
    sd_text *te = (sd_text *)1;
    loco_status s = sd_text_open(dir, &te);
    printf("  -> %s\n", loco_last_error());
    expect_error(s, want, n1, n2);
    assert_null(te);
}

static void test_hostile_config(void **state) {
    (void)state;
    wset w = load_weights_set();
    const char *d = mkfolder("cfg");
    put_weights(d, &w, w.n, 0);
    static const struct {
        const char *from, *to;
        loco_status want;
        const char *n1, *n2;
    } cases[] = {
        {"\"num_attention_heads\": 2", "\"num_attention_heads\": 3", LOCO_E_UNSUPPORTED, "'num_attention_heads' = 3",
         "does not divide key 'hidden_size' = 8"},
        {"\"hidden_act\": \"quick_gelu\"", "\"hidden_act\": \"relu\"", LOCO_E_UNSUPPORTED, "'hidden_act'", "relu"},
        {"\"hidden_size\": 8", "\"hidden_size\": \"8\"", LOCO_E_FORMAT, "'hidden_size' must be an integer", NULL},
        {"\"hidden_size\": 8", "\"hidden_size\": 8.5", LOCO_E_FORMAT, "'hidden_size' must be an integer", NULL},
        {"\"hidden_size\": 8", "\"hidden_size\": 0", LOCO_E_UNSUPPORTED, "'hidden_size'", "range"},
        {"\"hidden_size\": 8", "\"hidden_size\": 8, \"hidden_size\": 16", LOCO_E_FORMAT, "'hidden_size' appears twice",
         NULL},
        {"\"max_position_embeddings\": 77", "\"max_position_embeddings\": 1e9", LOCO_E_UNSUPPORTED,
         "'max_position_embeddings'", "range"},
        {"\"layer_norm_eps\": 1e-05", "\"layer_norm_eps\": -1", LOCO_E_UNSUPPORTED, "'layer_norm_eps'", NULL},
        {"\"vocab_size\": 49408", "\"vocab_size\": 16777216, \"hidden_sizes\": 1", LOCO_E_SHAPE,
         "token_embedding.weight' has shape [49408,8]", "[16777216,8]"}, /* an unknown key: a warning */
        {"\"CLIPTextModel\"", "\"CLIPTextModelWithProjection\"", LOCO_E_UNSUPPORTED, "'architectures'",
         "CLIPTextModelWithProjection"},
        {"\"clip_text_model\"", "\"clip_vision_model\"", LOCO_E_UNSUPPORTED, "'model_type'", NULL},
        {"\"vocab_size\": 49408\n}", "\"vocab_size\": 49408\n} x", LOCO_E_FORMAT, "unexpected text", NULL},
        {"\"vocab_size\": 49408\n}", "\"vocab_size\": 49408\n", LOCO_E_FORMAT, "not valid JSON", NULL},
        /* the config and the weights disagree */
        {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", LOCO_E_NOT_FOUND,
         "tensor 'text_model.encoder.layers.2.layer_norm1.weight' is missing", "model.safetensors"},
        {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1", LOCO_E_FORMAT,
         "unexpected tensor 'text_model.encoder.layers.1.", NULL},
        {"\"intermediate_size\": 16", "\"intermediate_size\": 32", LOCO_E_SHAPE,
         "'text_model.encoder.layers.0.mlp.fc1.weight' has shape [16,8]", "needs [32,8]"},
        {"\"vocab_size\": 49408", "\"vocab_size\": 1000", LOCO_E_SHAPE, "token_embedding.weight' has shape [49408,8]",
         "[1000,8]"},
        {"\"max_position_embeddings\": 77", "\"max_position_embeddings\": 64", LOCO_E_SHAPE,
         "position_embedding.weight' has shape [77,8]", "[64,8]"},
    };
    char *cfg;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg = config_with(cases[i].from, cases[i].to);
        put_config(d, cfg);
        printf("  %s -> %s\n", cases[i].from, cases[i].to);
        expect_open_error(d, cases[i].want, cases[i].n1, cases[i].n2);
        /* the file at fault is named: the config, or the weights it does not fit */
        if (!strstr(loco_last_error(), "config.json") && !strstr(loco_last_error(), "model.safetensors"))
            fail_msg("'%s' does not name the file", loco_last_error());
        free(cfg);
    }
    /* sizes past the allocator: a 2^24 x 65536 token embedding */
    put_config(d, "{\"hidden_size\": 65536, \"vocab_size\": 16777216, \"num_attention_heads\": 2}");
    expect_open_error(d, LOCO_E_NOMEM, "'vocab_size' = 16777216", "too large");
    /* absent keys take CLIPTextConfig's defaults (hidden_size 512: the
     * weights then disagree) */
    cfg = config_with("\"hidden_size\": 8,", "");
    put_config(d, cfg);
    expect_open_error(d, LOCO_E_SHAPE, "token_embedding.weight' has shape [49408,8]", "[49408,512]");
    free(cfg);
    /* a config of nothing but the keys that matter works */
    put_config(d, "{\"hidden_size\": 8, \"intermediate_size\": 16, \"num_attention_heads\": 2, "
                  "\"num_hidden_layers\": 2, \"max_position_embeddings\": 77, \"vocab_size\": 49408}");
    check_against_fixture(d, NULL);
    /* no config, no weights */
    const char *e = mkfolder("empty");
    expect_open_error(e, LOCO_E_NOT_FOUND, "no config.json", NULL);
    cfg = read_text(fixture_path(TE_DIR "/config.json"));
    put_config(e, cfg);
    expect_open_error(e, LOCO_E_NOT_FOUND, "model.safetensors", "pytorch_model.bin");
    free(cfg);
    free_set(&w);
}

static void test_hostile_weights(void **state) {
    (void)state;
    wset w = load_weights_set();
    const char *d = mkfolder("wts");
    char *cfg = read_text(fixture_path(TE_DIR "/config.json"));
    put_config(d, cfg);
    free(cfg);
    /* a missing tensor: the last one dropped (by swapping it to the end) */
    loco_tensor_ref *q = find(&w, "text_model.encoder.layers.1.self_attn.v_proj.bias"), keep = *q;
    *q = w.r[w.n - 1];
    w.r[w.n - 1] = keep;
    for (int pt = 0; pt < 2; pt++) {
        char sub[32];
        snprintf(sub, sizeof sub, "wts/%s", pt ? "bin" : "st");
        const char *dd = mkfolder(sub);
        cfg = read_text(fixture_path(TE_DIR "/config.json"));
        put_config(dd, cfg);
        free(cfg);
        put_weights(dd, &w, w.n - 1, pt);
        expect_open_error(dd, LOCO_E_NOT_FOUND, "'text_model.encoder.layers.1.self_attn.v_proj.bias' is missing",
                          pt ? "pytorch_model.bin" : "model.safetensors");
    }
    w.r[w.n - 1] = *q;
    *q = keep;
    /* a wrong shape */
    q = find(&w, "text_model.encoder.layers.0.self_attn.q_proj.weight");
    q->ndim = 1;
    q->shape[0] = 64;
    put_weights(d, &w, w.n, 0);
    expect_open_error(d, LOCO_E_SHAPE, "'text_model.encoder.layers.0.self_attn.q_proj.weight' has shape [64]",
                      "needs [8,8]");
    q->ndim = 2;
    q->shape[0] = 8;
    /* a transposed fc1 */
    q = find(&w, "text_model.encoder.layers.1.mlp.fc1.weight");
    q->shape[0] = 8;
    q->shape[1] = 16;
    put_weights(d, &w, w.n, 0);
    expect_open_error(d, LOCO_E_SHAPE, "mlp.fc1.weight' has shape [8,16]", "needs [16,8]");
    q->shape[0] = 16;
    q->shape[1] = 8;
    /* an unexpected tensor */
    float extra[8] = {0};
    w.r[w.n] = (loco_tensor_ref){"text_projection.weight", LOCO_DTYPE_F32, 1, {8}, extra};
    put_weights(d, &w, w.n + 1, 0);
    expect_open_error(d, LOCO_E_FORMAT, "unexpected tensor 'text_projection.weight'", NULL);
    /* an integer tensor where floats belong */
    int64_t ints[8] = {0};
    q = find(&w, "text_model.final_layer_norm.bias");
    keep = *q;
    q->dtype = LOCO_DTYPE_I64;
    q->data = ints;
    put_weights(d, &w, w.n, 0);
    expect_open_error(d, LOCO_E_SHAPE, "'text_model.final_layer_norm.bias' has dtype", NULL);
    *q = keep;
    /* a NaN */
    q = find(&w, "text_model.final_layer_norm.weight");
    ((float *)q->data)[3] = NAN;
    put_weights(d, &w, w.n, 0);
    expect_open_error(d, LOCO_E_NUMERIC, "final_layer_norm.weight", NULL);
    free_set(&w);
}

int main(void) {
    (void)write_raw;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture), cmocka_unit_test(test_bad_ids), T(test_pytorch_bin),
        T(test_hostile_config),         T(test_hostile_weights),
    };
    return cmocka_run_group_tests_name("sd_text", tests, NULL, NULL);
}
