/* test_adm_config.c - the guided-diffusion UNetModel ("ADM") configuration
 * layer (src/families/adm_config.c): config.json parsing against the
 * fixtures' _derived facts, the implied parameter list against the fixtures'
 * weight files (model.pt in state_dict order, safetensors as a set, and
 * adm-small's model.pt converted to safetensors here), inference from the
 * weights with hints, the P2 preset's parameter count, the to_json round
 * trip, and hostile configs, tensor lists and hints (each error names the
 * field or tensor). */
#include "testutil.h"
#include "internal.h"
#include "tmpdir.h"
#include "families/adm_config.h"

#include <cjson/cJSON.h>
#include <errno.h>

#define CFG_PATH "some/adm/config.json" /* the path adm_config_parse reports */
#define W_PATH "some/adm/model.pt"      /* the name infer and check report */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) fail_msg("%s: short read", path);
    b[n] = 0;
    fclose(f);
    return b;
}

static loco_status parse(const char *text, adm_config *c) {
    adm_config tmp;
    return adm_config_parse(c ? c : &tmp, text, strlen(text), CFG_PATH);
}

static void parse_fixture(const char *rel, adm_config *c) {
    char *t = read_text(fixture_path(rel));
    CHECK_OK(parse(t, c));
    free(t);
}

/* Tensor names and shapes, as adm_config_infer takes them; everything owned. */
typedef struct tlist {
    size_t n, cap;
    char **names;
    int *ndim;
    int64_t (*shape)[4];
} tlist;

static void tl_add(tlist *t, const char *name, int nd, const int64_t *sh) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 512;
        t->names = realloc(t->names, t->cap * sizeof *t->names);
        t->ndim = realloc(t->ndim, t->cap * sizeof *t->ndim);
        t->shape = realloc(t->shape, t->cap * sizeof *t->shape);
        assert_non_null(t->names);
        assert_non_null(t->ndim);
        assert_non_null(t->shape);
    }
    t->names[t->n] = strdup(name);
    t->ndim[t->n] = nd;
    for (int d = 0; d < 4; d++) t->shape[t->n][d] = d < nd ? sh[d] : 0;
    t->n++;
}

static void tl_load(tlist *t, const char *path) {
    memset(t, 0, sizeof *t);
    loco_weights *w;
    CHECK_OK(loco_weights_open(path, &w));
    for (size_t i = 0; i < loco_weights_count(w); i++) {
        const char *name = loco_weights_name(w, i);
        loco_dtype dt;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        CHECK_OK(loco_weights_info(w, name, &dt, &nd, sh));
        assert_int_equal(dt, LOCO_DTYPE_F32);
        assert_true(nd >= 1 && nd <= 4);
        tl_add(t, name, nd, sh);
    }
    loco_weights_close(w);
}

static void tl_from_params(tlist *t, const adm_param *p, size_t n) {
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < n; i++) tl_add(t, p[i].name, p[i].ndim, p[i].shape);
}

static void tl_free(tlist *t) {
    for (size_t i = 0; i < t->n; i++) free(t->names[i]);
    free(t->names);
    free(t->ndim);
    free(t->shape);
    memset(t, 0, sizeof *t);
}

static long tl_find(const tlist *t, const char *name) {
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->names[i], name) == 0) return (long)i;
    return -1;
}

static void tl_remove(tlist *t, const char *name) {
    long i = tl_find(t, name);
    if (i < 0) fail_msg("no tensor %s to remove", name);
    free(t->names[i]);
    for (size_t k = (size_t)i + 1; k < t->n; k++) {
        t->names[k - 1] = t->names[k];
        t->ndim[k - 1] = t->ndim[k];
        memcpy(t->shape[k - 1], t->shape[k], sizeof t->shape[k]);
    }
    t->n--;
}

static loco_status infer(adm_config *c, const tlist *t, const adm_hints *h, char **report) {
    return adm_config_infer(c, t->n, (const char *const *)t->names, t->ndim, (const int64_t(*)[4])t->shape, h, W_PATH,
                            report);
}

static loco_status check(const adm_config *c, const tlist *t) {
    return adm_config_check_tensors(c, t->n, (const char *const *)t->names, t->ndim, (const int64_t(*)[4])t->shape,
                                    W_PATH);
}

static int64_t count_params(const adm_config *c, size_t *n_tensors) {
    adm_param *p;
    size_t n;
    CHECK_OK(adm_config_params(c, &p, &n));
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) total += adm_param_numel(&p[i]);
    free(p);
    if (n_tensors) *n_tensors = n;
    return total;
}

/* Same model: every field, and every attention block's heads (the head flags
 * themselves may differ where they do not matter, e.g. num_heads when
 * num_head_channels is set). */
static void expect_same_model(const adm_config *a, const adm_config *b) {
    assert_int_equal(a->image_size, b->image_size);
    assert_int_equal(a->in_ch, b->in_ch);
    assert_int_equal(a->model_ch, b->model_ch);
    assert_int_equal(a->out_ch, b->out_ch);
    assert_int_equal(a->num_res_blocks, b->num_res_blocks);
    assert_int_equal(a->n_levels, b->n_levels);
    for (int i = 0; i < ADM_MAX_LEVELS; i++) {
        assert_true(a->channel_mult[i] == b->channel_mult[i]);
        assert_int_equal(a->level_ch[i], b->level_ch[i]);
        assert_int_equal(a->attn_level[i], b->attn_level[i]);
    }
    assert_int_equal(a->num_head_channels, b->num_head_channels);
    for (int i = 0; i < a->n_levels; i++)
        for (int up = 0; up < 2; up++)
            assert_int_equal(adm_heads(a, a->level_ch[i], up), adm_heads(b, b->level_ch[i], up));
    assert_int_equal(a->learn_sigma, b->learn_sigma);
    assert_int_equal(a->use_scale_shift_norm, b->use_scale_shift_norm);
    assert_int_equal(a->resblock_updown, b->resblock_updown);
    assert_int_equal(a->use_new_attention_order, b->use_new_attention_order);
    assert_int_equal(a->diffusion_steps, b->diffusion_steps);
}

static void expect_identical(const adm_config *a, const adm_config *b) {
    expect_same_model(a, b);
    assert_int_equal(a->num_heads, b->num_heads);
    assert_int_equal(a->num_heads_upsample, b->num_heads_upsample);
}

/* ------------------------------------------------------------------------ */
/* The fixtures' configs against their _derived facts                       */
/* ------------------------------------------------------------------------ */

static void check_derived(const char *folder) {
    char rel[128];
    snprintf(rel, sizeof rel, "%s/config.json", folder);
    char *text = read_text(fixture_path(rel));
    adm_config c;
    CHECK_OK(parse(text, &c));
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "_derived");
    assert_non_null(d);
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(d, "channel_mult");
    assert_int_equal(cJSON_GetArraySize(cm), c.n_levels);
    for (int i = 0; i < c.n_levels; i++) {
        assert_true(cJSON_GetArrayItem(cm, i)->valuedouble == c.channel_mult[i]);
        assert_int_equal(c.level_ch[i], (int)(cJSON_GetArrayItem(cm, i)->valuedouble * c.model_ch));
    }
    const cJSON *ads = cJSON_GetObjectItemCaseSensitive(d, "attention_ds");
    int k = 0;
    for (int i = 0; i < c.n_levels; i++)
        if (c.attn_level[i]) {
            assert_true(k < cJSON_GetArraySize(ads));
            assert_int_equal(cJSON_GetArrayItem(ads, k)->valueint, 1 << i);
            k++;
        }
    assert_int_equal(k, cJSON_GetArraySize(ads));
    assert_int_equal(c.in_ch, cJSON_GetObjectItemCaseSensitive(d, "in_channels")->valueint);
    assert_int_equal(c.out_ch, cJSON_GetObjectItemCaseSensitive(d, "out_channels")->valueint);
    assert_int_equal(c.model_ch, cJSON_GetObjectItemCaseSensitive(d, "model_channels")->valueint);
    assert_int_equal(4 * c.model_ch, cJSON_GetObjectItemCaseSensitive(d, "time_embed_dim")->valueint);
    assert_int_equal(c.num_heads_upsample != -1 ? c.num_heads_upsample : c.num_heads,
                     cJSON_GetObjectItemCaseSensitive(d, "num_heads_upsample_effective")->valueint);
    size_t nt;
    int64_t np = count_params(&c, &nt);
    printf("  %s: %lld parameters in %zu tensors\n", folder, (long long)np, nt);
    assert_true(np == (int64_t)cJSON_GetObjectItemCaseSensitive(d, "num_parameters")->valuedouble);
    assert_int_equal(nt, cJSON_GetObjectItemCaseSensitive(d, "num_tensors")->valueint);
    /* heads of every attention block: the blocks are those with a qkv */
    const cJSON *heads = cJSON_GetObjectItemCaseSensitive(d, "attention_heads");
    adm_param *p;
    size_t n;
    CHECK_OK(adm_config_params(&c, &p, &n));
    int blocks = 0;
    for (size_t i = 0; i < n; i++) {
        const char *q = strstr(p[i].name, ".qkv.weight");
        if (!q || q[strlen(".qkv.weight")]) continue;
        char block[96];
        snprintf(block, sizeof block, "%.*s", (int)(q - p[i].name), p[i].name);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(heads, block);
        if (!h) fail_msg("%s: attention block %s is not in _derived.attention_heads", folder, block);
        int up = strncmp(block, "output_blocks.", 14) == 0;
        assert_int_equal(adm_heads(&c, (int)p[i].shape[1], up), h->valueint);
        blocks++;
    }
    assert_int_equal(blocks, cJSON_GetArraySize(heads));
    free(p);
    cJSON_Delete(root);
    free(text);
}

static void test_parse_fixtures(void **state) {
    (void)state;
    adm_config c;
    parse_fixture("adm-small/config.json", &c);
    assert_int_equal(c.image_size, 32);
    assert_int_equal(c.model_ch, 32);
    assert_int_equal(c.n_levels, 3);
    assert_int_equal(c.level_ch[2], 64);
    assert_int_equal(c.num_res_blocks, 2);
    assert_int_equal(c.attn_level[0], 0);
    assert_int_equal(c.attn_level[1], 1);
    assert_int_equal(c.attn_level[2], 1);
    assert_int_equal(c.num_head_channels, 16);
    assert_int_equal(c.learn_sigma, 1);
    assert_int_equal(c.out_ch, 6);
    assert_int_equal(c.use_scale_shift_norm, 1);
    assert_int_equal(c.resblock_updown, 1);
    assert_int_equal(adm_heads(&c, 32, 0), 2);
    assert_int_equal(adm_heads(&c, 64, 1), 4);
    parse_fixture("adm-small_legacy/config.json", &c);
    assert_int_equal(c.num_res_blocks, 1);
    assert_int_equal(c.num_heads, 2);
    assert_int_equal(c.num_heads_upsample, 4);
    assert_int_equal(c.num_head_channels, -1);
    assert_int_equal(adm_heads(&c, 32, 0), 2);
    assert_int_equal(adm_heads(&c, 32, 1), 4);
    assert_int_equal(c.out_ch, 3);
    assert_int_equal(c.resblock_updown, 0);
    assert_int_equal(c.use_scale_shift_norm, 0);
    check_derived("adm-small");
    check_derived("adm-small_legacy");
}

/* ------------------------------------------------------------------------ */
/* Parameter list = the fixtures' tensors                                   */
/* ------------------------------------------------------------------------ */

/* model.pt holds the state_dict in its order: same names, order, shapes. */
static void expect_params_in_order(const adm_config *c, const char *rel, size_t want_n, int64_t want_total) {
    adm_param *p;
    size_t n;
    CHECK_OK(adm_config_params(c, &p, &n));
    tlist t;
    tl_load(&t, fixture_path(rel));
    assert_int_equal(t.n, n);
    assert_int_equal(n, want_n);
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t.names[i], p[i].name) != 0)
            fail_msg("%s: tensor %zu is '%s', the parameter list has '%s'", rel, i, t.names[i], p[i].name);
        assert_int_equal(t.ndim[i], p[i].ndim);
        for (int d = 0; d < p[i].ndim; d++)
            if (t.shape[i][d] != p[i].shape[d]) fail_msg("%s: %s: dimension %d differs", rel, p[i].name, d);
        total += adm_param_numel(&p[i]);
    }
    assert_true(total == want_total);
    CHECK_OK(check(c, &t));
    tl_free(&t);
    free(p);
}

static void test_params_match_weights(void **state) {
    (void)state;
    adm_config c;
    parse_fixture("adm-small/config.json", &c);
    expect_params_in_order(&c, "adm-small/model.pt", 306, 1397190);
    parse_fixture("adm-small_legacy/config.json", &c);
    expect_params_in_order(&c, "adm-small_legacy/model.pt", 182, 408003);
    /* safetensors: sorted by name, so a set; the check ignores the order */
    tlist t;
    tl_load(&t, fixture_path("adm-small_legacy/model.safetensors"));
    assert_int_equal(t.n, 182);
    CHECK_OK(check(&c, &t));
    tl_free(&t);
}

/* adm-small's model.safetensors is not in the repository: convert model.pt
 * (every tensor's bytes) and check and infer from the result. */
static void test_convert_pt_to_safetensors(void **state) {
    (void)state;
    loco_weights *w;
    CHECK_OK(loco_weights_open(fixture_path("adm-small/model.pt"), &w));
    size_t n = loco_weights_count(w);
    loco_tensor_ref *refs = calloc(n, sizeof *refs);
    void **bufs = calloc(n, sizeof *bufs);
    assert_non_null(refs);
    assert_non_null(bufs);
    for (size_t i = 0; i < n; i++) {
        refs[i].name = loco_weights_name(w, i);
        CHECK_OK(loco_weights_info(w, refs[i].name, &refs[i].dtype, &refs[i].ndim, refs[i].shape));
        size_t nb;
        CHECK_OK(loco_weights_read(w, refs[i].name, &bufs[i], &nb));
        refs[i].data = bufs[i];
    }
    const char *out = tpath("model.safetensors");
    CHECK_OK(loco_tensors_write(out, refs, n, NULL, 0));
    for (size_t i = 0; i < n; i++) loco_free(bufs[i]);
    free(bufs);
    free(refs);
    loco_weights_close(w);
    adm_config c, inf;
    parse_fixture("adm-small/config.json", &c);
    tlist t;
    tl_load(&t, out);
    assert_int_equal(t.n, 306);
    assert_string_not_equal(t.names[0], "time_embed.0.weight"); /* sorted: not the state_dict order */
    CHECK_OK(check(&c, &t));
    adm_hints h = {.image_size = 32, .head_channels = 16};
    CHECK_OK(infer(&inf, &t, &h, NULL));
    expect_same_model(&c, &inf);
    tl_free(&t);
}

/* ------------------------------------------------------------------------ */
/* Inference from the weights                                               */
/* ------------------------------------------------------------------------ */

static void test_infer_fixtures(void **state) {
    (void)state;
    adm_config c, inf;
    tlist t;
    char *report = NULL;
    /* adm-small: 16 channels per head */
    parse_fixture("adm-small/config.json", &c);
    tl_load(&t, fixture_path("adm-small/model.pt"));
    adm_hints h = {.image_size = 32, .head_channels = 16};
    CHECK_OK(infer(&inf, &t, &h, &report));
    assert_non_null(report);
    printf("%s", report);
    expect_same_model(&c, &inf);
    assert_int_equal(inf.num_heads, -1); /* not given: unset */
    assert_non_null(strstr(report, "num_channels 32"));
    assert_non_null(strstr(report, "resblock_updown true"));
    assert_non_null(strstr(report, "from the hints"));
    assert_non_null(strstr(report, "1397190 parameters"));
    free(report);
    /* the same with heads given as a count: 2 heads everywhere fits 32 and 64
     * channels, but is a different model (4 heads at 64 channels) */
    adm_hints h2 = {.image_size = 32, .heads = 2};
    CHECK_OK(infer(&inf, &t, &h2, NULL));
    assert_int_equal(adm_heads(&inf, 64, 0), 2);
    tl_free(&t);
    /* adm-small_legacy: 2 heads, 4 in the output blocks; both file formats */
    parse_fixture("adm-small_legacy/config.json", &c);
    adm_hints hl = {.image_size = 32, .heads = 2, .heads_upsample = 4};
    const char *files[2] = {"adm-small_legacy/model.pt", "adm-small_legacy/model.safetensors"};
    for (int f = 0; f < 2; f++) {
        tl_load(&t, fixture_path(files[f]));
        CHECK_OK(infer(&inf, &t, &hl, &report));
        if (f == 0) printf("%s", report);
        expect_identical(&c, &inf);
        assert_non_null(strstr(report, "resblock_updown false"));
        assert_non_null(strstr(report, "use_scale_shift_norm false"));
        free(report);
        tl_free(&t);
    }
}

/* ------------------------------------------------------------------------ */
/* P2                                                                       */
/* ------------------------------------------------------------------------ */

/* The real P2 configuration (ffhq_p2.pt and the others): image_size 256,
 * num_channels 128, num_res_blocks 1, channel_mult "" = 1,1,2,2,4,4,
 * attention_resolutions "16" (downsampling 16 = level 4), num_head_channels
 * 64, learn_sigma, use_scale_shift_norm, resblock_updown.
 * guided-diffusion's UNetModel of it has 93,563,910 parameters in 362
 * tensors, by hand: time_embed 82,432 + 656,384; input conv 3,584; level
 * channels 128,128,256,256,512,512; the per-module formulas below. */
#define P2_PARAMS 93563910
#define P2_TENSORS 362

/* An independent count from closed forms (not the parameter list). */
static int64_t resblock_n(int64_t ci, int64_t co, int64_t E, int ss) {
    int64_t n = 2 * ci + (9 * ci * co + co) + (E * (ss ? 2 * co : co) + (ss ? 2 * co : co)) + 2 * co + (9 * co * co + co);
    if (ci != co) n += ci * co + co;
    return n;
}
static int64_t attn_n(int64_t c) { return 2 * c + (3 * c * c + 3 * c) + (c * c + c); }

static void test_p2(void **state) {
    (void)state;
    adm_config p;
    CHECK_OK(adm_config_preset(&p, "p2"));
    size_t nt;
    int64_t np = count_params(&p, &nt);
    printf("  P2: %lld parameters in %zu tensors\n", (long long)np, nt);
    assert_true(np == P2_PARAMS);
    assert_int_equal(nt, P2_TENSORS);
    /* cross-check by closed forms, walking UNetModel.__init__ */
    const int64_t C = 128, E = 512;
    const int64_t ch[6] = {128, 128, 256, 256, 512, 512};
    int64_t n = (C * E + E) + (E * E + E) + (27 * C + C), cur = C, skips[16];
    int ns = 0;
    skips[ns++] = cur;
    for (int i = 0; i < 6; i++) {
        n += resblock_n(cur, ch[i], E, 1);
        cur = ch[i];
        if (i == 4) n += attn_n(cur);
        skips[ns++] = cur;
        if (i < 5) {
            n += resblock_n(cur, cur, E, 1); /* down */
            skips[ns++] = cur;
        }
    }
    n += 2 * resblock_n(cur, cur, E, 1) + attn_n(cur);
    for (int i = 5; i >= 0; i--)
        for (int r = 0; r < 2; r++) {
            n += resblock_n(cur + skips[--ns], ch[i], E, 1);
            cur = ch[i];
            if (i == 4) n += attn_n(cur);
            if (i > 0 && r == 1) n += resblock_n(cur, cur, E, 1); /* up */
        }
    n += 2 * cur + (9 * cur * 6 + 6);
    assert_int_equal(ns, 0);
    assert_true(n == P2_PARAMS);
    /* the flags as config.json, channel_mult "" */
    static const char p2_json[] =
        "{\"_class_name\": \"ADMUNetModel\", \"image_size\": 256, \"num_channels\": 128, \"num_res_blocks\": 1,"
        " \"channel_mult\": \"\", \"attention_resolutions\": \"16\", \"num_heads\": 4, \"num_head_channels\": 64,"
        " \"num_heads_upsample\": -1, \"learn_sigma\": true, \"use_scale_shift_norm\": true,"
        " \"resblock_updown\": true, \"use_new_attention_order\": false, \"dropout\": 0.0, \"class_cond\": false,"
        " \"use_fp16\": false, \"use_checkpoint\": false, \"diffusion_steps\": 1000, \"noise_schedule\": \"linear\"}";
    adm_config c;
    CHECK_OK(parse(p2_json, &c));
    expect_identical(&p, &c);
    /* a P2 state dict: inferred with the preset alone */
    adm_param *pp;
    size_t npp;
    CHECK_OK(adm_config_params(&p, &pp, &npp));
    tlist t;
    tl_from_params(&t, pp, npp);
    free(pp);
    adm_hints h = {.preset = "p2"};
    char *report;
    CHECK_OK(infer(&c, &t, &h, &report));
    expect_identical(&p, &c);
    assert_non_null(strstr(report, "from preset p2"));
    assert_non_null(strstr(report, "93563910 parameters"));
    free(report);
    /* with agreeing hints too */
    adm_hints h2 = {.preset = "p2", .image_size = 256, .head_channels = 64};
    CHECK_OK(infer(&c, &t, &h2, NULL));
    expect_identical(&p, &c);
    /* and without the preset, from hints */
    adm_hints h3 = {.image_size = 256, .head_channels = 64};
    CHECK_OK(infer(&c, &t, &h3, NULL));
    expect_same_model(&p, &c);
    tl_free(&t);
    /* adm-small is not P2 */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_SHAPE, "preset p2", "num_channels");
    tl_free(&t);
}

/* ------------------------------------------------------------------------ */
/* to_json round trip                                                       */
/* ------------------------------------------------------------------------ */

static void roundtrip(const adm_config *c) {
    char *json;
    CHECK_OK(adm_config_to_json(c, &json));
    adm_config back;
    CHECK_OK(parse(json, &back));
    expect_identical(c, &back);
    /* its _derived counts are the parameter list's */
    cJSON *root = cJSON_Parse(json);
    assert_non_null(root);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "_derived");
    size_t nt;
    int64_t np = count_params(c, &nt);
    assert_true((int64_t)cJSON_GetObjectItemCaseSensitive(d, "num_parameters")->valuedouble == np);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(d, "num_tensors")->valueint, nt);
    cJSON_Delete(root);
    free(json);
}

static void test_roundtrip(void **state) {
    (void)state;
    adm_config c;
    parse_fixture("adm-small/config.json", &c);
    roundtrip(&c);
    /* the fixture's _derived.attention_heads equals what to_json writes */
    char *json, *text = read_text(fixture_path("adm-small/config.json"));
    CHECK_OK(adm_config_to_json(&c, &json));
    cJSON *a = cJSON_Parse(json), *b = cJSON_Parse(text);
    const cJSON *ha = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(a, "_derived"), "attention_heads");
    const cJSON *hb = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "_derived"), "attention_heads");
    assert_true(cJSON_Compare(ha, hb, 1));
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(json);
    free(text);
    parse_fixture("adm-small_legacy/config.json", &c);
    roundtrip(&c);
    CHECK_OK(adm_config_preset(&c, "p2"));
    roundtrip(&c);
    /* the 512 default, with its 0.5: written back as "" */
    static const char j512[] = "{\"image_size\": 512, \"num_channels\": 256, \"num_res_blocks\": 2,"
                               " \"attention_resolutions\": \"32,16,8\", \"num_head_channels\": 64,"
                               " \"use_scale_shift_norm\": true, \"resblock_updown\": true, \"learn_sigma\": true}";
    CHECK_OK(parse(j512, &c));
    assert_int_equal(c.n_levels, 7);
    assert_true(c.channel_mult[0] == 0.5);
    assert_int_equal(c.level_ch[0], 128);
    assert_int_equal(c.attn_level[4], 1); /* 512 / 32 = 16 */
    size_t nt;
    /* guided-diffusion's 512x512 model less its class embedding (1000 x 1024) */
    assert_true(count_params(&c, &nt) == 557973638);
    roundtrip(&c);
    CHECK_OK(adm_config_to_json(&c, &json));
    assert_non_null(strstr(json, "\"channel_mult\":\t\"\""));
    free(json);
    /* the other defaults */
    static const struct {
        int size, levels, last;
    } defs[] = {{256, 6, 4}, {128, 5, 4}, {64, 4, 4}, {32, 4, 2}};
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        char t[256];
        snprintf(t, sizeof t, "{\"image_size\": %d, \"num_channels\": 64, \"num_res_blocks\": 1, "
                 "\"attention_resolutions\": \"\", \"num_heads\": 1, \"use_scale_shift_norm\": false}", defs[i].size);
        CHECK_OK(parse(t, &c));
        assert_int_equal(c.n_levels, defs[i].levels);
        assert_true(c.channel_mult[c.n_levels - 1] == defs[i].last);
        for (int l = 0; l < c.n_levels; l++) assert_int_equal(c.attn_level[l], 0);
        roundtrip(&c);
    }
}

/* ------------------------------------------------------------------------ */
/* Hostile tensor lists                                                     */
/* ------------------------------------------------------------------------ */

static void test_hostile_tensors(void **state) {
    (void)state;
    adm_config c, parsed;
    parse_fixture("adm-small/config.json", &parsed);
    adm_hints h = {.image_size = 32, .head_channels = 16};
    tlist t;
    /* a missing tensor: inference still works, the check names it */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    tl_remove(&t, "input_blocks.4.1.qkv.bias");
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_NOT_FOUND, W_PATH, "'input_blocks.4.1.qkv.bias' is missing");
    expect_error(check(&parsed, &t), LOCO_E_NOT_FOUND, W_PATH, "'input_blocks.4.1.qkv.bias' is missing");
    tl_free(&t);
    /* several missing: counted, the first few named */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    tl_remove(&t, "middle_block.1.qkv.weight");
    tl_remove(&t, "middle_block.1.qkv.bias");
    tl_remove(&t, "out.0.bias");
    expect_error(check(&parsed, &t), LOCO_E_NOT_FOUND, "'middle_block.1.qkv.weight' is missing", "2 more missing");
    assert_non_null(strstr(loco_last_error(), "'out.0.bias'"));
    tl_free(&t);
    /* a tensor inference needs */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    tl_remove(&t, "input_blocks.4.0.in_layers.2.weight");
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_NOT_FOUND, "'input_blocks.4.0.in_layers.2.weight'", "level 1");
    tl_free(&t);
    /* an extra tensor */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    const int64_t sh1[1] = {32};
    tl_add(&t, "input_blocks.4.1.extra.weight", 1, sh1);
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_FORMAT, "unexpected tensor 'input_blocks.4.1.extra.weight'",
                 "inferred: num_channels 32");
    expect_error(check(&parsed, &t), LOCO_E_FORMAT, "unexpected tensor 'input_blocks.4.1.extra.weight'", W_PATH);
    tl_free(&t);
    /* a wrong shape */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    long i = tl_find(&t, "output_blocks.3.1.qkv.weight");
    assert_true(i >= 0);
    t.shape[i][2] = 3;
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_SHAPE, "'output_blocks.3.1.qkv.weight' has shape [96, 32, 3]",
                 "needs [96, 32, 1]");
    t.ndim[i] = 2;
    expect_error(check(&parsed, &t), LOCO_E_SHAPE, "'output_blocks.3.1.qkv.weight' has shape [96, 32]", "[96, 32, 1]");
    tl_free(&t);
    /* missing and extra at once (a renamed tensor): both said */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    i = tl_find(&t, "out.2.bias");
    free(t.names[i]);
    t.names[i] = strdup("out.2.b");
    expect_error(check(&parsed, &t), LOCO_E_NOT_FOUND, "'out.2.bias' is missing", "unexpected tensor(s), the first 'out.2.b'");
    tl_free(&t);
    /* the wrong output channels, time embedding, scale-shift width */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    i = tl_find(&t, "out.2.weight");
    t.shape[i][0] = 4;
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_UNSUPPORTED, "'out.2.weight'", "4 output channels");
    t.shape[i][0] = 6;
    i = tl_find(&t, "time_embed.0.weight");
    t.shape[i][0] = 100;
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_SHAPE, "'time_embed.0.weight'", "[100, 32]");
    t.shape[i][0] = 128;
    i = tl_find(&t, "input_blocks.1.0.emb_layers.1.weight");
    t.shape[i][0] = 48;
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_SHAPE, "'input_blocks.1.0.emb_layers.1.weight'", "48 outputs");
    t.shape[i][0] = 64;
    i = tl_find(&t, "input_blocks.0.0.weight");
    t.shape[i][1] = 4;
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_UNSUPPORTED, "'input_blocks.0.0.weight'", "4 input channels");
    t.shape[i][1] = 3;
    /* a name twice, too many dimensions */
    const int64_t sh4[4] = {32, 3, 3, 3};
    tl_add(&t, "input_blocks.0.0.weight", 4, sh4);
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_FORMAT, "'input_blocks.0.0.weight' appears twice", W_PATH);
    expect_error(check(&parsed, &t), LOCO_E_FORMAT, "'input_blocks.0.0.weight' appears twice", W_PATH);
    t.n--;
    free(t.names[t.n]);
    t.ndim[0] = 5;
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_SHAPE, "'time_embed.0.weight'", "5 dimensions");
    t.ndim[0] = 2;
    CHECK_OK(infer(&c, &t, &h, NULL)); /* restored */
    /* level channels that are not a multiple of 32 (and of num_channels) */
    tl_free(&t);
    tl_load(&t, fixture_path("adm-small/model.pt"));
    for (size_t k = 0; k < t.n; k++) /* level 2 at 48 channels instead of 64 */
        for (int d = 0; d < t.ndim[k]; d++)
            if (t.shape[k][d] == 64 && strstr(t.names[k], "emb_layers") == NULL) t.shape[k][d] = 48;
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_UNSUPPORTED, "level 2 has 48 channels", "whole multiple");
    tl_free(&t);
    /* a DataParallel-style prefix; not a UNetModel at all */
    tl_load(&t, fixture_path("adm-small/model.pt"));
    for (size_t k = 0; k < t.n; k++) {
        char b[160];
        snprintf(b, sizeof b, "module.%s", t.names[k]);
        free(t.names[k]);
        t.names[k] = strdup(b);
    }
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_UNSUPPORTED, "prefix", "'module.time_embed.0.weight'");
    tl_free(&t);
    tl_load(&t, fixture_path("unet-small/diffusion_pytorch_model.safetensors"));
    expect_error(infer(&c, &t, &h, NULL), LOCO_E_NOT_FOUND, "'time_embed.0.weight'", "not a guided-diffusion");
    tl_free(&t);
    /* upsamplers of two kinds */
    tl_load(&t, fixture_path("adm-small_legacy/model.pt"));
    const int64_t shc[4] = {32, 32, 3, 3}, shb[1] = {32};
    tl_remove(&t, "output_blocks.1.2.conv.weight");
    tl_remove(&t, "output_blocks.1.2.conv.bias");
    tl_add(&t, "output_blocks.1.2.in_layers.2.weight", 4, shc);
    tl_add(&t, "output_blocks.1.2.in_layers.2.bias", 1, shb);
    adm_hints hl = {.image_size = 32, .heads = 2, .heads_upsample = 4};
    expect_error(infer(&c, &t, &hl, NULL), LOCO_E_FORMAT, "output_blocks.3", "ResBlock");
    tl_free(&t);
    /* a 0-tensor list */
    expect_error(adm_config_infer(&c, 0, NULL, NULL, NULL, &h, W_PATH, NULL), LOCO_E_FORMAT, W_PATH, "no tensors");
}

/* ------------------------------------------------------------------------ */
/* Hints                                                                    */
/* ------------------------------------------------------------------------ */

static void test_hints(void **state) {
    (void)state;
    adm_config c;
    tlist t;
    char *report = (char *)1;
    tl_load(&t, fixture_path("adm-small/model.pt"));
    static const struct {
        adm_hints h;
        loco_status want;
        const char *n1, *n2;
    } cases[] = {
        {{NULL, 0, 16, 0, 0}, LOCO_E_INVALID_ARGUMENT, "image_size", "not determined"},
        {{NULL, 32, 0, 0, 0}, LOCO_E_INVALID_ARGUMENT, "heads are not determined", "head_channels"},
        {{NULL, 32, 16, 2, 0}, LOCO_E_INVALID_ARGUMENT, "contradicting hints head_channels 16 and heads 2", NULL},
        {{NULL, 32, 16, 0, 4}, LOCO_E_INVALID_ARGUMENT, "heads_upsample 4", "contradicts head_channels"},
        {{NULL, 32, 0, 0, 4}, LOCO_E_INVALID_ARGUMENT, "heads_upsample 4 needs the hint heads", NULL},
        {{"p2", 128, 0, 0, 0}, LOCO_E_INVALID_ARGUMENT, "image_size 128 contradicts preset p2", "256"},
        {{"p2", 0, 32, 0, 0}, LOCO_E_INVALID_ARGUMENT, "head_channels 32 contradicts preset p2", "64"},
        {{"p2", 0, 0, 4, 0}, LOCO_E_INVALID_ARGUMENT, "heads 4 contradicts preset p2", NULL},
        {{"p3", 32, 16, 0, 0}, LOCO_E_INVALID_ARGUMENT, "unknown preset 'p3'", NULL},
        {{NULL, -32, 16, 0, 0}, LOCO_E_INVALID_ARGUMENT, "hint image_size = -32", NULL},
        {{NULL, 32, -1, 0, 0}, LOCO_E_INVALID_ARGUMENT, "hint head_channels = -1", NULL},
        /* hints the weights refute */
        {{NULL, 32, 24, 0, 0}, LOCO_E_UNSUPPORTED, "'num_head_channels' (from the hints) = 24", "input_blocks.4.1"},
        {{NULL, 32, 0, 3, 0}, LOCO_E_UNSUPPORTED, "'num_heads' (from the hints) = 3", "32 channels"},
        {{NULL, 32, 0, 2, 5}, LOCO_E_UNSUPPORTED, "'num_heads_upsample' (from the hints) = 5", "output_blocks.3.1"},
        {{NULL, 30, 16, 0, 0}, LOCO_E_UNSUPPORTED, "'image_size' (from the hints) = 30", "divisible by 4"},
        {{"p2", 0, 0, 0, 0}, LOCO_E_SHAPE, "not preset p2's architecture", "num_channels is 32 (p2: 128)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        printf("  case %zu\n", i);
        report = (char *)1;
        expect_error(infer(&c, &t, &cases[i].h, &report), cases[i].want, cases[i].n1, cases[i].n2);
        assert_null(report);
        assert_int_equal(c.model_ch, 0); /* zeroed on failure */
    }
    /* no hints at all */
    expect_error(infer(&c, &t, NULL, NULL), LOCO_E_INVALID_ARGUMENT, "image_size", W_PATH);
    tl_free(&t);
}

/* ------------------------------------------------------------------------ */
/* Hostile config.json                                                      */
/* ------------------------------------------------------------------------ */

static char *g_cfg; /* adm-small/config.json */

/* g_cfg with key1 (and key2) set to JSON text (NULL: removed), inserted as
 * written. Caller frees. */
static char *cfg_with2(const char *k1, const char *v1, const char *k2, const char *v2) {
    cJSON *root = cJSON_Parse(g_cfg);
    assert_non_null(root);
    const char *keys[2] = {k1, k2}, *vals[2] = {v1, v2};
    for (int i = 0; i < 2; i++) {
        if (!keys[i]) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(root, keys[i]);
        if (vals[i]) {
            char hole[32];
            snprintf(hole, sizeof hole, "@@value%d@@", i);
            cJSON_AddItemToObject(root, keys[i], cJSON_CreateString(hole));
        }
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    for (int i = 0; i < 2; i++) {
        if (!keys[i] || !vals[i]) continue;
        char hole[32];
        snprintf(hole, sizeof hole, "\"@@value%d@@\"", i);
        char *at = strstr(s, hole);
        assert_non_null(at);
        size_t n = strlen(s) + strlen(vals[i]) + 1;
        char *o = malloc(n);
        snprintf(o, n, "%.*s%s%s", (int)(at - s), s, vals[i], at + strlen(hole));
        free(s);
        s = o;
    }
    return s;
}

static int n_warn;
static char warn_text[512];
static void log_fn(loco_log_level lvl, const char *msg, void *user) {
    (void)user;
    if (lvl == LOCO_LOG_WARN) {
        n_warn++;
        snprintf(warn_text, sizeof warn_text, "%s", msg);
    }
}

static void test_hostile_config(void **state) {
    (void)state;
    g_cfg = read_text(fixture_path("adm-small/config.json"));
    static const struct {
        const char *k1, *v1, *k2, *v2;
        loco_status want;
        const char *n1, *n2;
    } cases[] = {
        {"image_size", NULL, NULL, NULL, LOCO_E_FORMAT, "key 'image_size' is missing", NULL},
        {"image_size", "0", NULL, NULL, LOCO_E_UNSUPPORTED, "'image_size' = 0", "range"},
        {"image_size", "1e999", NULL, NULL, LOCO_E_UNSUPPORTED, "'image_size'", "range"},
        {"image_size", "30", NULL, NULL, LOCO_E_UNSUPPORTED, "key 'image_size' = 30", "divisible by 4"},
        {"image_size", "32.5", NULL, NULL, LOCO_E_FORMAT, "'image_size' must be an integer", NULL},
        {"num_channels", NULL, NULL, NULL, LOCO_E_FORMAT, "'num_channels' is missing", NULL},
        {"num_channels", "\"32\"", NULL, NULL, LOCO_E_FORMAT, "'num_channels' must be an integer", NULL},
        {"num_channels", "33", NULL, NULL, LOCO_E_UNSUPPORTED, "'num_channels' = 33", "even"},
        {"num_channels", "48", NULL, NULL, LOCO_E_UNSUPPORTED, "level 0 has 48 channels", "key 'num_channels'"},
        {"num_channels", "100000", NULL, NULL, LOCO_E_UNSUPPORTED, "'num_channels'", "range"},
        {"num_res_blocks", "0", NULL, NULL, LOCO_E_UNSUPPORTED, "'num_res_blocks' = 0", NULL},
        {"num_res_blocks", "-3", NULL, NULL, LOCO_E_UNSUPPORTED, "'num_res_blocks'", NULL},
        {"channel_mult", "\"1,x,2\"", NULL, NULL, LOCO_E_FORMAT, "'channel_mult'", "entry 'x'"},
        {"channel_mult", "\"1,,2\"", NULL, NULL, LOCO_E_FORMAT, "'channel_mult'", "entry ''"},
        {"channel_mult", "\"1,0,2\"", NULL, NULL, LOCO_E_FORMAT, "'channel_mult'", "entry '0'"},
        {"channel_mult", "\"1,-1\"", NULL, NULL, LOCO_E_FORMAT, "'channel_mult'", "entry '-1'"},
        {"channel_mult", "\"1,1,1,1,1,1,1,1,1\"", NULL, NULL, LOCO_E_UNSUPPORTED, "'channel_mult'", "more than 8"},
        {"channel_mult", "\"1,100\"", NULL, NULL, LOCO_E_UNSUPPORTED, "'channel_mult' entry 1 = 100", NULL},
        {"channel_mult", "[1, 1, 2]", NULL, NULL, LOCO_E_FORMAT, "'channel_mult' must be a string", NULL},
        {"channel_mult", "\"\"", "image_size", "48", LOCO_E_UNSUPPORTED, "'channel_mult' = \"\"", "image_size 48"},
        {"channel_mult", "\"1,1,1,1,1,1,1\"", NULL, NULL, LOCO_E_UNSUPPORTED, "'image_size' = 32", "divisible by 64"},
        {"attention_resolutions", NULL, NULL, NULL, LOCO_E_FORMAT, "'attention_resolutions' is missing", NULL},
        {"attention_resolutions", "\"12\"", NULL, NULL, LOCO_E_UNSUPPORTED, "'attention_resolutions' entry 12",
         "does not divide image_size 32"},
        {"attention_resolutions", "\"64\"", NULL, NULL, LOCO_E_UNSUPPORTED, "'attention_resolutions' entry 64",
         "larger"},
        {"attention_resolutions", "\"16;8\"", NULL, NULL, LOCO_E_FORMAT, "'attention_resolutions'", "'16;8'"},
        {"attention_resolutions", "16", NULL, NULL, LOCO_E_FORMAT, "'attention_resolutions' must be a string", NULL},
        {"num_head_channels", "24", NULL, NULL, LOCO_E_UNSUPPORTED, "key 'num_head_channels' = 24",
         "attention block input_blocks.4.1"},
        {"num_head_channels", "0", NULL, NULL, LOCO_E_UNSUPPORTED, "'num_head_channels' = 0", NULL},
        {"num_head_channels", "-2", NULL, NULL, LOCO_E_UNSUPPORTED, "'num_head_channels'", "range"},
        {"num_head_channels", "-1", "num_heads", "3", LOCO_E_UNSUPPORTED, "key 'num_heads' = 3", "32 channels"},
        {"num_head_channels", "-1", "num_heads", NULL, LOCO_E_FORMAT, "'num_heads' is missing", "num_head_channels"},
        {"num_head_channels", "-1", "num_heads", "-1", LOCO_E_UNSUPPORTED, "'num_heads'", "both -1"},
        {"num_head_channels", "-1", "num_heads_upsample", "5", LOCO_E_UNSUPPORTED, "key 'num_heads_upsample' = 5",
         "output_blocks.3.1"},
        {"use_scale_shift_norm", NULL, NULL, NULL, LOCO_E_FORMAT, "'use_scale_shift_norm' is missing", "disagree"},
        {"learn_sigma", "\"yes\"", NULL, NULL, LOCO_E_FORMAT, "'learn_sigma' must be true or false", NULL},
        {"resblock_updown", "1", NULL, NULL, LOCO_E_FORMAT, "'resblock_updown' must be true or false", NULL},
        {"class_cond", "true", NULL, NULL, LOCO_E_UNSUPPORTED, "'class_cond' = true", NULL},
        {"use_new_attention_order", "true", NULL, NULL, LOCO_E_UNSUPPORTED, "'use_new_attention_order'",
         "not supported yet"},
        {"noise_schedule", "\"cosine\"", NULL, NULL, LOCO_E_UNSUPPORTED, "'noise_schedule' = \"cosine\"", NULL},
        {"noise_schedule", "7", NULL, NULL, LOCO_E_FORMAT, "'noise_schedule' must be a string", NULL},
        {"diffusion_steps", "4000", NULL, NULL, LOCO_E_UNSUPPORTED, "'diffusion_steps' = 4000", NULL},
        {"predict_xstart", "true", NULL, NULL, LOCO_E_UNSUPPORTED, "'predict_xstart'", NULL},
        {"rescale_timesteps", "true", NULL, NULL, LOCO_E_UNSUPPORTED, "'rescale_timesteps'", NULL},
        {"use_fp16", "\"no\"", NULL, NULL, LOCO_E_FORMAT, "'use_fp16'", NULL},
        {"dropout", "\"0\"", NULL, NULL, LOCO_E_FORMAT, "'dropout' must be a number", NULL},
        {"dropout", "2", NULL, NULL, LOCO_E_UNSUPPORTED, "'dropout'", NULL},
        {"_class_name", "\"UNet2DModel\"", NULL, NULL, LOCO_E_UNSUPPORTED, "'_class_name'", "ADMUNetModel"},
        /* attention scores beyond the memory limit */
        {"image_size", "8192", "attention_resolutions", "\"\"", LOCO_E_NOMEM, "middle_block.1",
         "key 'image_size' = 8192"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        printf("  case %zu: %s\n", i, cases[i].k1);
        char *t = cfg_with2(cases[i].k1, cases[i].v1, cases[i].k2, cases[i].v2);
        adm_config c;
        c.model_ch = 7;
        expect_error(parse(t, &c), cases[i].want, CFG_PATH, cases[i].n1);
        if (cases[i].n2) expect_error(parse(t, &c), cases[i].want, cases[i].n2, NULL);
        assert_int_equal(c.model_ch, 0); /* zeroed on failure */
        free(t);
    }
    /* whole-text failures */
    static const struct {
        const char *text;
        const char *needle;
    } w[] = {
        {"", "JSON"}, {"{\"image_size\": 32", "JSON"}, {"[1]", "not a JSON object"}, {"null", "not a JSON object"},
        {"{\"image_size\": 32} x", "after the JSON object"}, {"{\"image_size\": 32, \"image_size\": 64}", "appears twice"},
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) expect_error(parse(w[i].text, NULL), LOCO_E_FORMAT, CFG_PATH, w[i].needle);
    /* every prefix fails cleanly */
    size_t n = strlen(g_cfg);
    while (n > 0 && g_cfg[n - 1] != '}') n--;
    for (size_t len = 0; len + 1 < n; len++) {
        adm_config c;
        loco_status s = adm_config_parse(&c, g_cfg, len, CFG_PATH);
        if (s == LOCO_OK) fail_msg("a prefix of %zu bytes parsed", len);
    }
    /* warnings: an unknown key, a resolution that matches no level */
    loco_set_log(log_fn, NULL);
    n_warn = 0;
    char *t = cfg_with2("some_future_flag", "3", NULL, NULL);
    CHECK_OK(parse(t, NULL));
    assert_int_equal(n_warn, 1);
    assert_non_null(strstr(warn_text, "'some_future_flag'"));
    free(t);
    n_warn = 0;
    t = cfg_with2("attention_resolutions", "\"16, 1\"", NULL, NULL);
    adm_config c;
    CHECK_OK(parse(t, &c));
    assert_int_equal(n_warn, 1);
    assert_non_null(strstr(warn_text, "entry 1 (downsampling factor 32)"));
    assert_int_equal(c.attn_level[1], 1);
    assert_int_equal(c.attn_level[2], 0);
    free(t);
    loco_set_log(NULL, NULL);
    /* ignored keys and nulls (= absent: defaults) */
    t = cfg_with2("use_fp16", "true", "_derived", "{\"anything\": [1]}");
    CHECK_OK(parse(t, NULL));
    free(t);
    t = cfg_with2("num_heads_upsample", "null", "timestep_respacing", "\"ddim25\"");
    CHECK_OK(parse(t, &c));
    assert_int_equal(c.num_heads_upsample, -1);
    free(t);
    free(g_cfg);
}

/* Configs made in code: validate and params refuse nonsense. */
static void test_validate(void **state) {
    (void)state;
    adm_config c;
    CHECK_OK(adm_config_preset(&c, "p2"));
    CHECK_OK(adm_config_validate(&c));
    adm_config b = c;
    b.level_ch[2] = 300;
    expect_error(adm_config_validate(&b), LOCO_E_INVALID_ARGUMENT, "level 2 has 300 channels", NULL);
    b = c;
    b.n_levels = 9;
    expect_error(adm_config_validate(&b), LOCO_E_UNSUPPORTED, "'channel_mult'", "9 levels");
    b = c;
    b.out_ch = 3;
    expect_error(adm_config_validate(&b), LOCO_E_UNSUPPORTED, "'out_channels' = 3", "learn_sigma");
    b = c;
    b.attn_level[7] = 1;
    expect_error(adm_config_validate(&b), LOCO_E_INVALID_ARGUMENT, "attn_level[7]", NULL);
    adm_param *p = (adm_param *)1;
    size_t n = 7;
    expect_error(adm_config_params(&b, &p, &n), LOCO_E_INVALID_ARGUMENT, "attn_level[7]", NULL);
    assert_null(p);
    assert_int_equal(n, 0);
    char *json = (char *)1;
    expect_error(adm_config_to_json(&b, &json), LOCO_E_INVALID_ARGUMENT, "attn_level[7]", NULL);
    assert_null(json);
    expect_error(adm_config_preset(&b, "ffhq"), LOCO_E_INVALID_ARGUMENT, "unknown ADM preset 'ffhq'", NULL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

int main(void) {
    (void)write_raw; /* tmpdir.h's, unused here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_fixtures),
        cmocka_unit_test(test_params_match_weights),
        T(test_convert_pt_to_safetensors),
        cmocka_unit_test(test_infer_fixtures),
        cmocka_unit_test(test_p2),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_hostile_tensors),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_hostile_config),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests_name("adm_config", tests, NULL, NULL);
}
