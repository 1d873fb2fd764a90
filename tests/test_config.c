/* test_config.c - hostile and unsupported UNet2DModel config.json files
 * (unet_config_parse directly and through loco_model_open), and weight files
 * that disagree with the config: missing, extra, misshapen, wrong dtype, F16
 * and BF16 weights, old attention key names, incomplete model folders. Every
 * file is generated here in a temporary folder under /tmp. */
#include "testutil.h"
#include "internal.h"
#include "tmpdir.h"
#include "families/unet2d.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_PATH "some/model/config.json" /* the path unet_config_parse reports */

/* ------------------------------------------------------------------------ */
/* Temporary folder, fixture text                                           */
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

static char *g_cfg_text; /* tests/fixtures/unet-small/config.json */

static int group_setup(void **state) {
    (void)state;
    g_cfg_text = read_text(fixture_path("unet-small/config.json"));
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    free(g_cfg_text);
    return 0;
}

/* Checks that the last error message mentions every non-NULL needle. */
static void expect_msg(const char *a, const char *b, const char *c) {
    const char *msg = loco_last_error();
    const char *n[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (n[i] && !strstr(msg, n[i])) fail_msg("error message '%s' does not mention '%s'", msg, n[i]);
}

/* The fixture config with `key` set to the JSON text `value` (NULL: key
 * removed), inserted as written (so that 1e999 stays 1e999: cJSON would print
 * the infinity it parses to as null). Caller frees with free(). */
#define CFG_HOLE "\"@@value@@\""
static char *cfg_with(const char *key, const char *json) {
    cJSON *root = cJSON_Parse(g_cfg_text);
    assert_non_null(root);
    if (json) {
        cJSON *probe = cJSON_Parse(json);
        if (!probe) fail_msg("bad test value for %s: %s", key, json);
        cJSON_Delete(probe);
        cJSON *v = cJSON_CreateString("@@value@@");
        if (cJSON_GetObjectItemCaseSensitive(root, key)) cJSON_ReplaceItemInObjectCaseSensitive(root, key, v);
        else cJSON_AddItemToObject(root, key, v);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    const char *hole = json ? strstr(s, CFG_HOLE) : NULL;
    size_t n = strlen(s) + (json ? strlen(json) : 0) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    if (hole)
        snprintf(out, n, "%.*s%s%s", (int)(hole - s), s, json, hole + strlen(CFG_HOLE));
    else
        snprintf(out, n, "%s", s);
    cJSON_free(s);
    return out;
}

static loco_status parse(const char *text, unet_config *c) {
    unet_config tmp;
    return unet_config_parse(c ? c : &tmp, text, strlen(text), CFG_PATH);
}

/* ------------------------------------------------------------------------ */
/* unet_config_parse: valid                                                 */
/* ------------------------------------------------------------------------ */

static void test_config_valid(void **state) {
    (void)state;
    unet_config c;
    CHECK_OK(parse(g_cfg_text, &c));
    assert_int_equal(c.height, 32);
    assert_int_equal(c.width, 32);
    assert_int_equal(c.in_ch, 3);
    assert_int_equal(c.n_blocks, 3);
    assert_int_equal(c.boc[0], 32);
    assert_int_equal(c.boc[2], 64);
    assert_int_equal(c.down_attn[1], 1);
    assert_int_equal(c.up_attn[1], 1);
    assert_int_equal(c.down_attn[0], 0);
    assert_int_equal(c.groups, 8);
    assert_int_equal(c.head_dim, 0);
    assert_int_equal(c.downsample_padding, 0);
    assert_true(c.eps == 1e-6f);
    /* the other fixture, and [h, w] sample sizes */
    char *mh = read_text(fixture_path("unet-small_mh/config.json"));
    CHECK_OK(parse(mh, &c));
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.groups, 16);
    free(mh);
    char *t = cfg_with("sample_size", "[64, 32]");
    CHECK_OK(parse(t, &c));
    assert_int_equal(c.height, 64);
    assert_int_equal(c.width, 32);
    free(t);
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

/* Keys a newer diffusers adds are ignored with a warning that names them. */
static void test_config_unknown_key(void **state) {
    (void)state;
    char *t = cfg_with("some_future_option", "{\"a\": [1, 2, 3]}");
    n_warn = 0;
    loco_set_log(log_fn, NULL);
    loco_status s = parse(t, NULL);
    loco_set_log(NULL, NULL);
    CHECK_OK(s);
    assert_int_equal(n_warn, 1);
    assert_non_null(strstr(warn_text, "'some_future_option'"));
    assert_non_null(strstr(warn_text, CFG_PATH));
    free(t);
}

/* ------------------------------------------------------------------------ */
/* unet_config_parse: whole-text failures                                   */
/* ------------------------------------------------------------------------ */

static void test_config_not_json(void **state) {
    (void)state;
    static const struct {
        const char *text;
        loco_status want;
        const char *needle;
    } c[] = {
        {"", LOCO_E_FORMAT, "JSON"},
        {"   \n", LOCO_E_FORMAT, "JSON"},
        {"{\"sample_size\": 32,,}", LOCO_E_FORMAT, "JSON"},
        {"{'sample_size': 32}", LOCO_E_FORMAT, "JSON"},
        {"{\"sample_size\": 32", LOCO_E_FORMAT, "JSON"},
        {"{\"sample_size\": 3", LOCO_E_FORMAT, "JSON"},
        {"{\"down_block_types\": [\"DownBlock2D\"", LOCO_E_FORMAT, "JSON"},
        {"\xef\xbb\xbf\xff\xfe", LOCO_E_FORMAT, "JSON"},
        {"[1, 2, 3]", LOCO_E_FORMAT, "not a JSON object"},
        {"42", LOCO_E_FORMAT, "not a JSON object"},
        {"\"UNet2DModel\"", LOCO_E_FORMAT, "not a JSON object"},
        {"null", LOCO_E_FORMAT, "not a JSON object"},
        {"true", LOCO_E_FORMAT, "not a JSON object"},
        {"{}", LOCO_E_FORMAT, "'sample_size'"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        printf("  case %zu\n", i);
        expect_error(parse(c[i].text, NULL), c[i].want, CFG_PATH, c[i].needle);
    }
}

/* Every truncation of a valid config fails cleanly and names the file. */
static void test_config_truncated(void **state) {
    (void)state;
    size_t n = strlen(g_cfg_text);
    /* the fixture ends with '}' (and maybe a newline): cut before it */
    size_t last = n;
    while (last > 0 && g_cfg_text[last - 1] != '}') last--;
    assert_true(last > 0);
    for (size_t len = 0; len < last; len++) {
        unet_config c;
        loco_status s = unet_config_parse(&c, g_cfg_text, len, CFG_PATH);
        if (s == LOCO_OK) fail_msg("a prefix of %zu bytes parsed", len);
        expect_error(s, LOCO_E_FORMAT, CFG_PATH, "JSON");
    }
}

/* Text after the object, and duplicate keys (which parsers resolve
 * differently: diffusers' json.load keeps the last one), are refused. */
static void test_config_trailing_and_duplicates(void **state) {
    (void)state;
    size_t n = strlen(g_cfg_text);
    char *t = malloc(n + 64);
    snprintf(t, n + 64, "%s\n{\"sample_size\": 64}", g_cfg_text);
    expect_error(parse(t, NULL), LOCO_E_FORMAT, CFG_PATH, "after the JSON");
    snprintf(t, n + 64, "%s garbage", g_cfg_text);
    expect_error(parse(t, NULL), LOCO_E_FORMAT, CFG_PATH, "after the JSON");
    snprintf(t, n + 64, "%s \n\t\r\n", g_cfg_text); /* whitespace is fine */
    CHECK_OK(parse(t, NULL));
    /* a NUL inside the given length */
    memcpy(t, g_cfg_text, n);
    t[n] = 0;
    memcpy(t + n + 1, "junk", 4);
    unet_config c;
    expect_error(unet_config_parse(&c, t, n + 5, CFG_PATH), LOCO_E_FORMAT, CFG_PATH, "after the JSON");
    free(t);
    /* duplicate key */
    const char *dup = "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 32, \"block_out_channels\": [32, 64, 64],"
                      " \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\"],"
                      " \"up_block_types\": [\"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"],"
                      " \"norm_num_groups\": 8, \"sample_size\": 64}";
    expect_error(parse(dup, NULL), LOCO_E_FORMAT, CFG_PATH, "'sample_size'");
    expect_msg("twice", NULL, NULL);
}

/* Deep nesting in an (unknown) key must not exhaust the stack. */
static void test_config_deep_nesting(void **state) {
    (void)state;
    const size_t depth = 200000;
    char *t = malloc(2 * depth + 64);
    size_t k = (size_t)sprintf(t, "{\"x\":");
    for (size_t i = 0; i < depth; i++) t[k++] = '[';
    for (size_t i = 0; i < depth; i++) t[k++] = ']';
    k += (size_t)sprintf(t + k, "}");
    unet_config c;
    expect_error(unet_config_parse(&c, t, k, CFG_PATH), LOCO_E_FORMAT, CFG_PATH, NULL);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* unet_config_parse: one key at a time                                     */
/* ------------------------------------------------------------------------ */

typedef struct kcase {
    const char *key;
    const char *value; /* JSON text; NULL removes the key */
    loco_status want;
    const char *n1, *n2; /* must appear in the message, besides the path */
} kcase;

static const kcase key_cases[] = {
    /* class */
    {"_class_name", "\"UNet2DConditionModel\"", LOCO_E_UNSUPPORTED, "'_class_name'", "UNet2DConditionModel"},
    {"_class_name", "\"\"", LOCO_E_UNSUPPORTED, "'_class_name'", NULL},
    {"_class_name", "5", LOCO_E_UNSUPPORTED, "'_class_name'", "not a string"},
    /* block types */
    {"down_block_types", "[\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"DownBlock2D\"]", LOCO_E_UNSUPPORTED,
     "'down_block_types'", "CrossAttnDownBlock2D"},
    {"down_block_types", "[\"DownBlock2D\", \"AttnDownBlock2D\", \"SkipDownBlock2D\"]", LOCO_E_UNSUPPORTED,
     "'down_block_types'[2]", "SkipDownBlock2D"},
    {"up_block_types", "[\"UpBlock2D\", \"AttnSkipUpBlock2D\", \"UpBlock2D\"]", LOCO_E_UNSUPPORTED,
     "'up_block_types'", "AttnSkipUpBlock2D"},
    {"up_block_types", "[\"upblock2d\", \"AttnUpBlock2D\", \"UpBlock2D\"]", LOCO_E_UNSUPPORTED, "'up_block_types'",
     "upblock2d"},
    {"down_block_types", "[\"DownBlock2D\", 7, \"DownBlock2D\"]", LOCO_E_FORMAT, "'down_block_types'[1]", "string"},
    {"up_block_types", "[null, \"AttnUpBlock2D\", \"UpBlock2D\"]", LOCO_E_FORMAT, "'up_block_types'[0]", "string"},
    {"down_block_types", "\"DownBlock2D\"", LOCO_E_FORMAT, "'down_block_types'", "array"},
    {"up_block_types", NULL, LOCO_E_FORMAT, "'up_block_types'", "array"},
    {"down_block_types", "{\"0\": \"DownBlock2D\"}", LOCO_E_FORMAT, "'down_block_types'", "array"},
    /* list lengths */
    {"down_block_types", "[\"DownBlock2D\", \"AttnDownBlock2D\"]", LOCO_E_FORMAT, "'down_block_types' 2",
     "'block_out_channels' has 3"},
    {"up_block_types", "[\"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\", \"UpBlock2D\"]", LOCO_E_FORMAT,
     "'up_block_types' 4", "'block_out_channels' has 3"},
    {"block_out_channels", "[32, 64]", LOCO_E_FORMAT, "'block_out_channels' has 2", "'down_block_types' 3"},
    {"block_out_channels", "[]", LOCO_E_UNSUPPORTED, "'block_out_channels'", "0 entries"},
    {"block_out_channels", "[32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32]", LOCO_E_UNSUPPORTED,
     "'block_out_channels'", "17 entries"},
    /* channels */
    {"block_out_channels", "[1099511627776, 64, 64]", LOCO_E_UNSUPPORTED, "'block_out_channels'[0]", "1099511627776"},
    {"block_out_channels", "[32, 64, 1099511627776]", LOCO_E_UNSUPPORTED, "'block_out_channels'[2]", "1099511627776"},
    {"block_out_channels", "[32, 64, 1e300]", LOCO_E_UNSUPPORTED, "'block_out_channels'[2]", NULL},
    {"block_out_channels", "[-32, 64, 64]", LOCO_E_UNSUPPORTED, "'block_out_channels'[0]", "-32"},
    {"block_out_channels", "[32, 0, 64]", LOCO_E_UNSUPPORTED, "'block_out_channels'[1]", NULL},
    {"block_out_channels", "[32, 64.5, 64]", LOCO_E_FORMAT, "'block_out_channels'[1]", "integer"},
    {"block_out_channels", "[32, \"64\", 64]", LOCO_E_FORMAT, "'block_out_channels'[1]", "integer"},
    {"block_out_channels", "\"32, 64, 64\"", LOCO_E_FORMAT, "'block_out_channels'", "array"},
    {"in_channels", "1099511627776", LOCO_E_UNSUPPORTED, "'in_channels'", NULL},
    {"in_channels", "-3", LOCO_E_UNSUPPORTED, "'in_channels'", "-3"},
    {"out_channels", "0", LOCO_E_UNSUPPORTED, "'out_channels'", NULL},
    /* groups and heads */
    {"norm_num_groups", "7", LOCO_E_UNSUPPORTED, "'norm_num_groups'", "7"},
    {"norm_num_groups", "48", LOCO_E_UNSUPPORTED, "'norm_num_groups'", "48"},
    {"norm_num_groups", "0", LOCO_E_UNSUPPORTED, "'norm_num_groups'", NULL},
    {"norm_num_groups", "-8", LOCO_E_UNSUPPORTED, "'norm_num_groups'", NULL},
    {"norm_num_groups", "null", LOCO_E_UNSUPPORTED, "'norm_num_groups'", "null"},
    {"norm_num_groups", "\"8\"", LOCO_E_FORMAT, "'norm_num_groups'", "integer"},
    {"attn_norm_num_groups", "24", LOCO_E_UNSUPPORTED, "'attn_norm_num_groups'", "24"},
    {"attention_head_dim", "24", LOCO_E_UNSUPPORTED, "'attention_head_dim'", "24"},
    {"attention_head_dim", "48", LOCO_E_UNSUPPORTED, "'attention_head_dim'", "48"},
    {"attention_head_dim", "0", LOCO_E_UNSUPPORTED, "'attention_head_dim'", NULL},
    {"attention_head_dim", "-16", LOCO_E_UNSUPPORTED, "'attention_head_dim'", NULL},
    {"attention_head_dim", "16.5", LOCO_E_FORMAT, "'attention_head_dim'", "integer"},
    {"attention_head_dim", "[16]", LOCO_E_FORMAT, "'attention_head_dim'", "integer"},
    /* sample size */
    {"sample_size", "30", LOCO_E_UNSUPPORTED, "'sample_size'", "divisible by 4"},
    {"sample_size", "[32, 30]", LOCO_E_UNSUPPORTED, "'sample_size'", "divisible by 4"},
    {"sample_size", "[30, 32]", LOCO_E_UNSUPPORTED, "'sample_size'", "divisible by 4"},
    {"sample_size", "2", LOCO_E_UNSUPPORTED, "'sample_size'", "divisible by 4"},
    {"sample_size", "0", LOCO_E_UNSUPPORTED, "'sample_size'", NULL},
    {"sample_size", "-32", LOCO_E_UNSUPPORTED, "'sample_size'", "-32"},
    {"sample_size", "1099511627776", LOCO_E_UNSUPPORTED, "'sample_size'", NULL},
    {"sample_size", "[32, -32]", LOCO_E_UNSUPPORTED, "'sample_size'", NULL},
    {"sample_size", "[32, 1e300]", LOCO_E_UNSUPPORTED, "'sample_size'", NULL},
    {"sample_size", "32.5", LOCO_E_FORMAT, "'sample_size'", "integer"},
    {"sample_size", "\"32\"", LOCO_E_FORMAT, "'sample_size'", "integer"},
    {"sample_size", "[32]", LOCO_E_FORMAT, "'sample_size'", NULL},
    {"sample_size", "[32, 32, 32]", LOCO_E_FORMAT, "'sample_size'", NULL},
    {"sample_size", "[32, \"32\"]", LOCO_E_FORMAT, "'sample_size'", NULL},
    {"sample_size", "[32, 31.5]", LOCO_E_FORMAT, "'sample_size'", NULL},
    {"sample_size", "{\"h\": 32}", LOCO_E_FORMAT, "'sample_size'", "integer"},
    {"sample_size", "null", LOCO_E_FORMAT, "'sample_size'", "missing"},
    {"sample_size", NULL, LOCO_E_FORMAT, "'sample_size'", "missing"},
    /* unsupported features */
    {"time_embedding_type", "\"fourier\"", LOCO_E_UNSUPPORTED, "'time_embedding_type'", "fourier"},
    {"time_embedding_type", "3", LOCO_E_FORMAT, "'time_embedding_type'", "string"},
    {"class_embed_type", "\"timestep\"", LOCO_E_UNSUPPORTED, "'class_embed_type'", "timestep"},
    {"class_embed_type", "\"identity\"", LOCO_E_UNSUPPORTED, "'class_embed_type'", "identity"},
    {"num_class_embeds", "10", LOCO_E_UNSUPPORTED, "'num_class_embeds'", "10"},
    {"resnet_time_scale_shift", "\"scale_shift\"", LOCO_E_UNSUPPORTED, "'resnet_time_scale_shift'", "scale_shift"},
    {"act_fn", "\"gelu\"", LOCO_E_UNSUPPORTED, "'act_fn'", "gelu"},
    {"act_fn", "[\"silu\"]", LOCO_E_FORMAT, "'act_fn'", "string"},
    {"mid_block_type", "\"UNetMidBlock2DCrossAttn\"", LOCO_E_UNSUPPORTED, "'mid_block_type'", "CrossAttn"},
    {"downsample_type", "\"resnet\"", LOCO_E_UNSUPPORTED, "'downsample_type'", "resnet"},
    {"upsample_type", "\"resnet\"", LOCO_E_UNSUPPORTED, "'upsample_type'", "resnet"},
    {"downsample_padding", "2", LOCO_E_UNSUPPORTED, "'downsample_padding'", NULL},
    /* wrong types and ranges of scalars */
    {"layers_per_block", "\"2\"", LOCO_E_FORMAT, "'layers_per_block'", "integer"},
    {"layers_per_block", "true", LOCO_E_FORMAT, "'layers_per_block'", "integer"},
    {"layers_per_block", "1.5", LOCO_E_FORMAT, "'layers_per_block'", "integer"},
    {"layers_per_block", "0", LOCO_E_UNSUPPORTED, "'layers_per_block'", NULL},
    {"layers_per_block", "1099511627776", LOCO_E_UNSUPPORTED, "'layers_per_block'", NULL},
    {"in_channels", "\"3\"", LOCO_E_FORMAT, "'in_channels'", "integer"},
    {"time_embedding_dim", "-1", LOCO_E_UNSUPPORTED, "'time_embedding_dim'", NULL},
    {"flip_sin_to_cos", "1", LOCO_E_FORMAT, "'flip_sin_to_cos'", "true or false"},
    {"center_input_sample", "\"false\"", LOCO_E_FORMAT, "'center_input_sample'", "true or false"},
    {"add_attention", "0", LOCO_E_FORMAT, "'add_attention'", "true or false"},
    {"norm_eps", "\"1e-6\"", LOCO_E_FORMAT, "'norm_eps'", "number"},
    {"norm_eps", "0", LOCO_E_UNSUPPORTED, "'norm_eps'", NULL},
    {"norm_eps", "-1e-6", LOCO_E_UNSUPPORTED, "'norm_eps'", NULL},
    {"freq_shift", "1e300", LOCO_E_UNSUPPORTED, "'freq_shift'", NULL},
    {"mid_block_scale_factor", "0", LOCO_E_UNSUPPORTED, "'mid_block_scale_factor'", NULL},
    /* numbers far outside int, fractions and infinities (JSON has no NaN;
     * cJSON reads 1e999 as inf): refused before any conversion to int */
    {"sample_size", "1e300", LOCO_E_UNSUPPORTED, "'sample_size'", NULL},
    {"sample_size", "-1e300", LOCO_E_UNSUPPORTED, "'sample_size'", NULL},
    {"sample_size", "2.5", LOCO_E_FORMAT, "'sample_size'", "integer"},
    {"sample_size", "1e999", LOCO_E_UNSUPPORTED, "'sample_size'", "inf"},
    {"sample_size", "-1e999", LOCO_E_UNSUPPORTED, "'sample_size'", "inf"},
    {"sample_size", "[1e999, 32]", LOCO_E_UNSUPPORTED, "'sample_size'", "inf"},
    {"sample_size", "[32, -1e300]", LOCO_E_UNSUPPORTED, "'sample_size'", NULL},
    {"sample_size", "[32.5, 32]", LOCO_E_FORMAT, "'sample_size'", "integer"},
    {"block_out_channels", "[32, 1e999, 64]", LOCO_E_UNSUPPORTED, "'block_out_channels'[1]", "inf"},
    {"block_out_channels", "[-1e999, 64, 64]", LOCO_E_UNSUPPORTED, "'block_out_channels'[0]", "inf"},
    {"block_out_channels", "[32, 64, -1e300]", LOCO_E_UNSUPPORTED, "'block_out_channels'[2]", NULL},
    {"block_out_channels", "[32, 2.5, 64]", LOCO_E_FORMAT, "'block_out_channels'[1]", "integer"},
    {"norm_num_groups", "1e300", LOCO_E_UNSUPPORTED, "'norm_num_groups'", NULL},
    {"norm_num_groups", "-1e300", LOCO_E_UNSUPPORTED, "'norm_num_groups'", NULL},
    {"norm_num_groups", "2.5", LOCO_E_FORMAT, "'norm_num_groups'", "integer"},
    {"norm_num_groups", "1e999", LOCO_E_UNSUPPORTED, "'norm_num_groups'", "inf"},
    {"norm_num_groups", "-1e999", LOCO_E_UNSUPPORTED, "'norm_num_groups'", "inf"},
    {"layers_per_block", "1e999", LOCO_E_UNSUPPORTED, "'layers_per_block'", "inf"},
    {"attention_head_dim", "-1e300", LOCO_E_UNSUPPORTED, "'attention_head_dim'", NULL},
    {"time_embedding_dim", "1e999", LOCO_E_UNSUPPORTED, "'time_embedding_dim'", "inf"},
    {"norm_eps", "1e999", LOCO_E_UNSUPPORTED, "'norm_eps'", "inf"},
    {"freq_shift", "-1e999", LOCO_E_UNSUPPORTED, "'freq_shift'", "inf"},
    {"mid_block_scale_factor", "1e999", LOCO_E_UNSUPPORTED, "'mid_block_scale_factor'", "inf"},
};

static void test_config_keys(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof key_cases / sizeof key_cases[0]; i++) {
        const kcase *k = &key_cases[i];
        printf("  case: %s = %s\n", k->key, k->value ? k->value : "(removed)");
        char *t = cfg_with(k->key, k->value);
        expect_error(parse(t, NULL), k->want, CFG_PATH, k->n1);
        expect_msg(k->n2, NULL, NULL);
        free(t);
    }
}

/* A config whose attention would need more scratch memory than the library
 * allows (here: 4096 heads over 8192x8192 tokens, 2^64 floats, which wraps
 * size_t) is refused at parse time instead of overflowing a size later. */
static void test_config_absurd_sizes(void **state) {
    (void)state;
    const char *base = "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 8192, \"block_out_channels\": [4096],"
                       " \"down_block_types\": [\"AttnDownBlock2D\"], \"up_block_types\": [\"UpBlock2D\"],"
                       " \"attention_head_dim\": 1, \"norm_num_groups\": 32}";
    expect_error(parse(base, NULL), LOCO_E_NOMEM, CFG_PATH, "'sample_size'");
    expect_msg("attention", "down_blocks.0", NULL);
    /* the same at 16x16 is fine: 4096 heads x 256^2 = 2^28 floats (1 GiB) */
    const char *small = "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 16, \"block_out_channels\": [4096],"
                        " \"down_block_types\": [\"AttnDownBlock2D\"], \"up_block_types\": [\"UpBlock2D\"],"
                        " \"attention_head_dim\": 1, \"norm_num_groups\": 32}";
    CHECK_OK(parse(small, NULL));
    /* the mid-block attention at the lowest resolution counts too */
    const char *mid = "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 4096, \"block_out_channels\": [64],"
                      " \"down_block_types\": [\"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\"],"
                      " \"norm_num_groups\": 32}";
    expect_error(parse(mid, NULL), LOCO_E_NOMEM, CFG_PATH, "mid_block");
}

/* ------------------------------------------------------------------------ */
/* Model folders                                                            */
/* ------------------------------------------------------------------------ */

#define WEIGHTS "diffusion_pytorch_model.safetensors"

/* g_dir/name/ with the given config text (NULL: none). Returns the folder. */
static const char *make_dir(const char *name, const char *cfg_text) {
    const char *d = tpath(name);
    if (mkdir(d, 0700) != 0) fail_msg("mkdir %s: %s", d, strerror(errno));
    if (cfg_text) {
        char p[512];
        snprintf(p, sizeof p, "%s/config.json", d);
        write_raw(p, cfg_text, strlen(cfg_text));
    }
    return d;
}

static const char *wpath(const char *dir) {
    static char buf[4][512];
    static int k = 0;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", dir, WEIGHTS);
    return b;
}

static void test_model_config_errors(void **state) {
    (void)state;
    loco_model *m = (loco_model *)(uintptr_t)1;
    /* a bad config.json is reported with its path */
    const char *d = make_dir("bad_json", "{\"sample_size\": 32,");
    char cp[512];
    snprintf(cp, sizeof cp, "%s/config.json", d);
    expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, cp, "JSON");
    assert_null(m);
    char *t = cfg_with("act_fn", "\"gelu\"");
    d = make_dir("gelu", t);
    free(t);
    snprintf(cp, sizeof cp, "%s/config.json", d);
    expect_error(loco_model_open(d, &m), LOCO_E_UNSUPPORTED, cp, "'act_fn'");
    /* naming the config file itself works the same */
    expect_error(loco_model_open(cp, &m), LOCO_E_UNSUPPORTED, cp, "'act_fn'");
    /* an oversized config.json (2 MiB of spaces) */
    d = make_dir("huge", NULL);
    snprintf(cp, sizeof cp, "%s/config.json", d);
    size_t n = (size_t)2 << 20;
    char *big = malloc(n);
    memset(big, ' ', n);
    memcpy(big, g_cfg_text, strlen(g_cfg_text));
    write_raw(cp, big, n);
    free(big);
    expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, cp, "bytes");
    /* config.json that is a folder, or a FIFO: named as such (more kinds in
     * test_model_wrong_kinds) */
    d = make_dir("cfgdir", NULL);
    snprintf(cp, sizeof cp, "%s/config.json", d);
    assert_int_equal(mkdir(cp, 0700), 0);
    expect_error(loco_model_open(d, &m), LOCO_E_IO, cp, "is a folder, not a file");
    d = make_dir("cfgfifo", NULL);
    snprintf(cp, sizeof cp, "%s/config.json", d);
    assert_int_equal(mkfifo(cp, 0600), 0);
    alarm(20); /* a hang is a failure */
    expect_error(loco_model_open(d, &m), LOCO_E_IO, cp, "is a FIFO");
    alarm(0);
    assert_null(m);
}

/* dir/name: a copy of the fixture's weights (safetensors) */
static void copy_fixture_weights(const char *dir, const char *name) {
    FILE *f = fopen(fixture_path("unet-small/" WEIGHTS), "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(n);
    assert_int_equal(fread(b, 1, n, f), n);
    fclose(f);
    size_t pl = strlen(dir) + strlen(name) + 2;
    char *p = malloc(pl);
    assert_non_null(p);
    snprintf(p, pl, "%s/%s", dir, name);
    write_raw(p, b, n);
    free(p);
    free(b);
}

/* Something other than a regular file where a model folder's file belongs
 * (a folder, a FIFO, /dev/zero through a symbolic link, a link to nothing):
 * refused at once, naming the path and what is there. It was reported as a
 * missing config.json or missing weights, or silently skipped (the scheduler
 * config); a FIFO must never hang (alarm) and /dev/zero is never read. */
static void test_model_wrong_kinds(void **state) {
    (void)state;
    static const char *const files[] = {"config.json", WEIGHTS, "diffusion_pytorch_model.bin",
                                        "scheduler/scheduler_config.json"};
    static const char *const kinds[] = {"is a folder, not a file", "is a FIFO (named pipe), not a regular file",
                                        "is a character device, not a regular file",
                                        "is a symbolic link to nothing"};
    loco_model *m = (loco_model *)(uintptr_t)1;
    for (int fi = 0; fi < 4; fi++)
        for (int k = 0; k < 4; k++) {
            char name[64];
            snprintf(name, sizeof name, "kind%d%d", fi, k);
            const char *d = make_dir(name, fi == 0 ? NULL : g_cfg_text);
            if (fi != 1 && fi != 2) copy_fixture_weights(d, WEIGHTS);
            char p[512];
            if (fi == 3) {
                snprintf(p, sizeof p, "%s/scheduler", d);
                assert_int_equal(mkdir(p, 0700), 0);
            }
            snprintf(p, sizeof p, "%s/%s", d, files[fi]);
            int r = k == 0 ? mkdir(p, 0700) : k == 1 ? mkfifo(p, 0600) : symlink(k == 2 ? "/dev/zero" : "nowhere", p);
            if (r != 0) fail_msg("%s: %s", p, strerror(errno));
            printf("  %s %s\n", files[fi], kinds[k]);
            alarm(20); /* a hang (FIFO) or an endless read (/dev/zero) fails */
            expect_error(loco_model_open(d, &m), LOCO_E_IO, p, kinds[k]);
            assert_null(m);
            if (fi == 1 || fi == 2) { /* the weights' path, and conversion, say the same */
                char *wp = (char *)(uintptr_t)1;
                expect_error(loco_model_weights_path(d, &wp), LOCO_E_IO, p, kinds[k]);
                expect_error(loco_convert(d, tpath("converted"), LOCO_DTYPE_COUNT), LOCO_E_IO, p, kinds[k]);
            }
            if (fi == 0 || fi == 3)
                expect_error(loco_convert(d, tpath("converted"), LOCO_DTYPE_COUNT), LOCO_E_IO, p, kinds[k]);
            alarm(0);
        }
    /* a .bin named as the MODEL argument that is a FIFO, next to a good
     * safetensors file: the named file is refused, not replaced */
    const char *d = make_dir("namedfifo", g_cfg_text);
    copy_fixture_weights(d, WEIGHTS);
    char p[512];
    snprintf(p, sizeof p, "%s/other.bin", d);
    assert_int_equal(mkfifo(p, 0600), 0);
    alarm(20);
    expect_error(loco_model_open(p, &m), LOCO_E_IO, p, "is a FIFO");
    alarm(0);
    assert_null(m);
}

/* Numbers of scheduler/scheduler_config.json beyond int, fractional or
 * infinite (1e999): refused naming the file and the key, before any
 * conversion to int; a sane one loads. */
static void test_model_scheduler_numbers(void **state) {
    (void)state;
    static const struct {
        const char *json, *key;
    } cases[] = {
        {"{\"num_train_timesteps\": 1e300}", "'num_train_timesteps'"},
        {"{\"num_train_timesteps\": -1e300}", "'num_train_timesteps'"},
        {"{\"num_train_timesteps\": 2.5}", "'num_train_timesteps'"},
        {"{\"num_train_timesteps\": 1e999}", "'num_train_timesteps'"},
        {"{\"num_train_timesteps\": -1e999}", "'num_train_timesteps'"},
        {"{\"num_train_timesteps\": 4294967297}", "'num_train_timesteps'"},
        {"{\"num_train_timesteps\": \"1000\"}", "'num_train_timesteps'"},
        {"{\"beta_start\": 1e999}", "'beta_start'"},
        {"{\"beta_end\": -1e999}", "'beta_end'"},
        {"{\"beta_end\": 1e300}", "'beta_end'"},
    };
    loco_model *m = (loco_model *)(uintptr_t)1;
    char sp[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "sched%zu", i);
        const char *d = make_dir(name, g_cfg_text);
        copy_fixture_weights(d, WEIGHTS);
        snprintf(sp, sizeof sp, "%s/scheduler", d);
        assert_int_equal(mkdir(sp, 0700), 0);
        snprintf(sp, sizeof sp, "%s/scheduler/scheduler_config.json", d);
        write_raw(sp, cases[i].json, strlen(cases[i].json));
        printf("  %s\n", cases[i].json);
        expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, sp, cases[i].key);
        assert_null(m);
    }
    const char *d = make_dir("sched_ok", g_cfg_text);
    copy_fixture_weights(d, WEIGHTS);
    snprintf(sp, sizeof sp, "%s/scheduler", d);
    assert_int_equal(mkdir(sp, 0700), 0);
    snprintf(sp, sizeof sp, "%s/scheduler/scheduler_config.json", d);
    const char *ok = "{\"num_train_timesteps\": 500.0, \"beta_start\": 1e-4, \"beta_end\": 0.02}";
    write_raw(sp, ok, strlen(ok));
    CHECK_OK(loco_model_open(d, &m));
    int T = 0;
    const float *ac = loco_model_alphas_cumprod(m, &T);
    assert_int_equal(T, 500);
    /* abar at times past int is abar[T-1] (the float was cast to int first) */
    const float big[] = {1e30f, INFINITY, 3e9f, 499.5f, 499.0f};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) assert_true(loco_model_abar(m, big[i]) == ac[T - 1]);
    assert_true(loco_model_abar(m, -1e30f) == ac[0]);
    assert_true(loco_model_abar(m, NAN) == ac[0]);
    assert_true(loco_model_abar(m, 1.5f) == ac[1]);
    loco_model_free(m);
}

/* A model folder whose path has 2000 characters: it opens, and its
 * description names it whole (each line was formatted in 512 bytes). */
static void test_model_long_path(void **state) {
    (void)state;
    char *d = malloc(4096);
    assert_non_null(d);
    size_t k = (size_t)snprintf(d, 4096, "%s", g_dir);
    for (int i = 0; k < 2000; i++) {
        k += (size_t)snprintf(d + k, 4096 - k, "/%03d-", i);
        while (k % 200) d[k++] = 'x';
        d[k] = 0;
        if (mkdir(d, 0700) != 0) fail_msg("mkdir: %s", strerror(errno));
    }
    char *p = malloc(4200);
    assert_non_null(p);
    snprintf(p, 4200, "%s/config.json", d);
    write_raw(p, g_cfg_text, strlen(g_cfg_text));
    copy_fixture_weights(d, WEIGHTS);
    loco_model *m;
    CHECK_OK(loco_model_open(d, &m));
    char *text;
    CHECK_OK(loco_model_describe(m, &text));
    snprintf(p, 4200, "model: %s\n", d);
    if (strncmp(text, p, strlen(p)) != 0) fail_msg("the description does not start with '%s'", p);
    assert_non_null(strstr(text, "\nclass: UNet2DModel"));
    assert_non_null(strstr(text, "\nschedule: 1000 train timesteps"));
    loco_free(text);
    loco_model_free(m);
    free(p);
    free(d);
}

static void test_model_incomplete_folder(void **state) {
    (void)state;
    loco_model *m = (loco_model *)(uintptr_t)1;
    /* no weights */
    const char *d = make_dir("noweights", g_cfg_text);
    expect_error(loco_model_open(d, &m), LOCO_E_NOT_FOUND, d, WEIGHTS);
    assert_null(m);
    /* no config (the weights are there) */
    d = make_dir("noconfig", NULL);
    {
        size_t n;
        FILE *f = fopen(fixture_path("unet-small/" WEIGHTS), "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        n = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        char *b = malloc(n);
        assert_int_equal(fread(b, 1, n, f), n);
        fclose(f);
        write_raw(wpath(d), b, n);
        free(b);
    }
    expect_error(loco_model_open(d, &m), LOCO_E_NOT_FOUND, d, "config.json");
    /* naming the weights file of a folder without config */
    expect_error(loco_model_open(wpath(d), &m), LOCO_E_NOT_FOUND, d, "config.json");
    /* an empty folder, and a folder that does not exist */
    d = make_dir("empty", NULL);
    expect_error(loco_model_open(d, &m), LOCO_E_NOT_FOUND, d, "config.json");
    const char *none = tpath("no/such/model");
    expect_error(loco_model_open(none, &m), LOCO_E_NOT_FOUND, none, "no such file");
    expect_error(loco_model_open(tpath("does-not-exist"), &m), LOCO_E_NOT_FOUND, "does-not-exist", "no such file");
    assert_null(m);
    /* an empty weights file */
    d = make_dir("emptyweights", g_cfg_text);
    write_raw(wpath(d), "", 0);
    expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, wpath(d), NULL);
    /* a truncated weights file: the fixture less its last 100 bytes */
    d = make_dir("truncweights", g_cfg_text);
    {
        FILE *f = fopen(fixture_path("unet-small/" WEIGHTS), "rb");
        fseek(f, 0, SEEK_END);
        size_t n = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        char *b = malloc(n);
        assert_int_equal(fread(b, 1, n, f), n);
        fclose(f);
        write_raw(wpath(d), b, n - 100);
        free(b);
    }
    expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, wpath(d), "past the end");
    assert_null(m);
}

/* ------------------------------------------------------------------------ */
/* Weights that disagree with the config                                    */
/* ------------------------------------------------------------------------ */

/* The fixture's tensors, as refs into its (open) mapping. */
typedef struct weights {
    loco_tensors *f;
    loco_tensor_ref *t;
    size_t n;
} weights;

static weights load_fixture_weights(void) {
    weights w;
    CHECK_OK(loco_tensors_open(fixture_path("unet-small/" WEIGHTS), &w.f));
    w.n = loco_tensors_count(w.f);
    assert_true(w.n > 10);
    w.t = calloc(w.n + 4, sizeof *w.t); /* room for extra tensors */
    for (size_t i = 0; i < w.n; i++) {
        loco_tensor_ref *r = &w.t[i];
        r->name = loco_tensors_name(w.f, i);
        CHECK_OK(loco_tensors_info(w.f, r->name, &r->dtype, &r->ndim, r->shape));
        assert_int_equal(r->dtype, LOCO_DTYPE_F32);
        CHECK_OK(loco_tensors_raw(w.f, r->name, &r->data, NULL));
    }
    return w;
}

static void free_weights(weights *w) {
    free(w->t);
    loco_tensors_close(w->f);
}

static loco_tensor_ref *find_ref(weights *w, const char *name) {
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) return &w->t[i];
    fail_msg("fixture has no tensor '%s'", name);
    return NULL;
}

/* A model folder g_dir/name with the fixture config and these tensors. */
static const char *write_model(const char *name, const loco_tensor_ref *t, size_t n) {
    const char *d = make_dir(name, g_cfg_text);
    CHECK_OK(loco_tensors_write(wpath(d), t, n, NULL, 0));
    return d;
}

static void test_weights_missing_extra(void **state) {
    (void)state;
    weights w = load_fixture_weights();
    loco_model *m = (loco_model *)(uintptr_t)1;
    /* the unmodified tensors load (the control) */
    const char *d = write_model("same", w.t, w.n);
    CHECK_OK(loco_model_open(d, &m));
    loco_model_free(m);
    /* a missing tensor, wherever it is in the list */
    const char *drop[] = {"conv_in.bias", "mid_block.attentions.0.to_k.weight", "conv_out.weight",
                          "down_blocks.1.attentions.0.group_norm.bias"};
    for (size_t k = 0; k < sizeof drop / sizeof drop[0]; k++) {
        loco_tensor_ref *t = malloc(w.n * sizeof *t);
        size_t n = 0;
        for (size_t i = 0; i < w.n; i++)
            if (strcmp(w.t[i].name, drop[k]) != 0) t[n++] = w.t[i];
        assert_int_equal(n, w.n - 1);
        char nm[32];
        snprintf(nm, sizeof nm, "missing%zu", k);
        d = write_model(nm, t, n);
        m = (loco_model *)(uintptr_t)1;
        expect_error(loco_model_open(d, &m), LOCO_E_NOT_FOUND, wpath(d), drop[k]);
        expect_msg("missing", NULL, NULL);
        assert_null(m);
        free(t);
    }
    /* an unexpected extra tensor */
    float extra[3] = {1, 2, 3};
    w.t[w.n] = (loco_tensor_ref){"down_blocks.0.resnets.0.extra.weight", LOCO_DTYPE_F32, 1, {3}, extra};
    d = write_model("extra", w.t, w.n + 1);
    expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, wpath(d), "'down_blocks.0.resnets.0.extra.weight'");
    expect_msg("unexpected", NULL, NULL);
    /* a tensor of a block the config does not have */
    w.t[w.n] = (loco_tensor_ref){"down_blocks.3.resnets.0.conv1.bias", LOCO_DTYPE_F32, 1, {3}, extra};
    d = write_model("extra_block", w.t, w.n + 1);
    expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, wpath(d), "'down_blocks.3.resnets.0.conv1.bias'");
    free_weights(&w);
}

static void test_weights_shape_dtype(void **state) {
    (void)state;
    weights w = load_fixture_weights();
    loco_model *m = (loco_model *)(uintptr_t)1;
    loco_tensor_ref *r = find_ref(&w, "conv_in.weight");
    loco_tensor_ref keep = *r;
    assert_int_equal(r->ndim, 4);
    /* [32,3,3,3] stored as [32,3,9]: same bytes, wrong shape */
    r->ndim = 3;
    r->shape[2] = 9;
    const char *d = write_model("shape3", w.t, w.n);
    expect_error(loco_model_open(d, &m), LOCO_E_SHAPE, wpath(d), "'conv_in.weight'");
    expect_msg("[32,3,9]", "[32,3,3,3]", NULL);
    assert_null(m);
    /* the same numbers transposed */
    *r = keep;
    r->shape[0] = 3;
    r->shape[1] = 32;
    d = write_model("shape_t", w.t, w.n);
    expect_error(loco_model_open(d, &m), LOCO_E_SHAPE, wpath(d), "'conv_in.weight'");
    expect_msg("[3,32,3,3]", "[32,3,3,3]", NULL);
    *r = keep;
    /* a bias with an extra unit dimension */
    loco_tensor_ref *b = find_ref(&w, "mid_block.attentions.0.to_q.bias");
    loco_tensor_ref bkeep = *b;
    b->ndim = 2;
    b->shape[1] = 1;
    d = write_model("shape_b", w.t, w.n);
    expect_error(loco_model_open(d, &m), LOCO_E_SHAPE, wpath(d), "'mid_block.attentions.0.to_q.bias'");
    expect_msg("[64,1]", "[64]", NULL);
    *b = bkeep;
    /* a scalar */
    b->ndim = 0;
    d = write_model("shape_s", w.t, w.n);
    expect_error(loco_model_open(d, &m), LOCO_E_SHAPE, wpath(d), "'mid_block.attentions.0.to_q.bias'");
    expect_msg("[]", "[64]", NULL);
    *b = bkeep;
    /* I32 with the right shape and byte size */
    r->dtype = LOCO_DTYPE_I32;
    d = write_model("dtype_i32", w.t, w.n);
    expect_error(loco_model_open(d, &m), LOCO_E_SHAPE, wpath(d), "'conv_in.weight'");
    expect_msg("I32", NULL, NULL);
    /* F64 (twice the bytes) is not a weight dtype either */
    size_t ne = 32 * 3 * 3 * 3;
    double *f64 = malloc(ne * sizeof *f64);
    for (size_t i = 0; i < ne; i++) f64[i] = 0.01 * (double)i;
    *r = keep;
    r->dtype = LOCO_DTYPE_F64;
    r->data = f64;
    d = write_model("dtype_f64", w.t, w.n);
    expect_error(loco_model_open(d, &m), LOCO_E_SHAPE, wpath(d), "'conv_in.weight'");
    expect_msg("F64", NULL, NULL);
    free(f64);
    /* a NaN weight */
    float *nanw = malloc(ne * sizeof *nanw);
    memcpy(nanw, keep.data, ne * sizeof *nanw);
    nanw[17] = NAN;
    *r = keep;
    r->data = nanw;
    d = write_model("nan", w.t, w.n);
    expect_error(loco_model_open(d, &m), LOCO_E_NUMERIC, wpath(d), "'conv_in.weight'");
    expect_msg("element 17", NULL, NULL);
    free(nanw);
    *r = keep;
    assert_null(m);
    free_weights(&w);
}

/* eps of the model in folder d at the fixture's x and t. */
static float *eps_of(const char *d, size_t *n) {
    const char *vec = fixture_path("unet-small/vectors.safetensors");
    float *x = load_tensor(vec, "x", n);
    float *t = load_tensor(vec, "t", NULL);
    loco_model *m;
    CHECK_OK(loco_model_open(d, &m));
    float *e = malloc(*n * sizeof *e);
    CHECK_OK(loco_model_eps(m, 1, x, t, e));
    loco_model_free(m);
    loco_free(x);
    loco_free(t);
    return e;
}

static uint16_t f32_to_bf16(float f) { /* round to nearest even */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static double max_abs_f(const float *a, size_t n) { return max_abs(a, n); }

/* F16 and BF16 weight files: eps equals, bit for bit, that of an F32 file
 * holding the same rounded values (so the loader converts exactly), and is
 * close to the F32 model's eps. */
static void test_weights_half(void **state) {
    (void)state;
    weights w = load_fixture_weights();
    size_t n;
    float *eps32 = eps_of(fixture_path("unet-small"), &n);
    double scale = max_abs_f(eps32, n);
    const struct {
        const char *name;
        loco_dtype dt;
        double tol; /* relative to max |eps| */
    } kinds[2] = {
        /* F16 keeps 11 significant bits (relative rounding error <= 2^-11 =
         * 4.9e-4 per weight) and BF16 8 (2^-8 = 3.9e-3). Through the ~20
         * layers of this network the errors add up like a random walk, not
         * coherently; we allow 8 unit roundoffs of max|eps|: 4e-3 (F16) and
         * 3e-2 (BF16). The measured figures are printed (about 3.5x below: 1.1e-3
         * and 7.7e-3 of max|eps|). */
        {"f16", LOCO_DTYPE_F16, 8 * 0x1p-11},
        {"bf16", LOCO_DTYPE_BF16, 8 * 0x1p-8},
    };
    for (int k = 0; k < 2; k++) {
        loco_tensor_ref *half = malloc(w.n * sizeof *half), *rounded = malloc(w.n * sizeof *rounded);
        void **bufs = calloc(2 * w.n, sizeof *bufs);
        for (size_t i = 0; i < w.n; i++) {
            float *v;
            size_t ne;
            int nd;
            int64_t sh[LOCO_MAX_DIMS];
            CHECK_OK(loco_tensors_read_f32(w.f, w.t[i].name, &v, &nd, sh, 0));
            ne = 1;
            for (int j = 0; j < nd; j++) ne *= (size_t)sh[j];
            uint16_t *h = malloc(ne * 2 + 2);
            float *r = malloc(ne * 4 + 4);
            for (size_t j = 0; j < ne; j++) {
                if (kinds[k].dt == LOCO_DTYPE_F16) {
                    h[j] = loco_f32_to_f16(v[j]);
                    r[j] = loco_f16_to_f32(h[j]);
                } else {
                    h[j] = f32_to_bf16(v[j]);
                    r[j] = loco_bf16_to_f32(h[j]);
                }
            }
            half[i] = w.t[i];
            half[i].dtype = kinds[k].dt;
            half[i].data = h;
            rounded[i] = w.t[i];
            rounded[i].data = r;
            bufs[2 * i] = h;
            bufs[2 * i + 1] = r;
            loco_free(v);
        }
        char nm[32];
        snprintf(nm, sizeof nm, "%s", kinds[k].name);
        const char *dh = write_model(nm, half, w.n);
        snprintf(nm, sizeof nm, "%s_as_f32", kinds[k].name);
        const char *dr = write_model(nm, rounded, w.n);
        size_t n2;
        float *eh = eps_of(dh, &n2), *er = eps_of(dr, &n2);
        assert_int_equal(n2, n);
        if (memcmp(eh, er, n * sizeof *eh) != 0)
            fail_msg("%s: eps differs from the F32 file with the same values (max diff %.3e)", kinds[k].name,
                     max_abs_diff(eh, er, n));
        char what[64];
        snprintf(what, sizeof what, "%s eps vs F32 eps", kinds[k].name);
        CHECK_CLOSE(what, eh, eps32, n, kinds[k].tol * scale);
        assert_true(max_abs_diff(eh, eps32, n) > 0); /* the rounding did happen */
        free(eh);
        free(er);
        for (size_t i = 0; i < 2 * w.n; i++) free(bufs[i]);
        free(bufs);
        free(half);
        free(rounded);
    }
    free(eps32);
    free_weights(&w);
}

/* Old attention key names (query/key/value/proj_attn) give the same model. */
static void test_weights_old_attention_names(void **state) {
    (void)state;
    weights w = load_fixture_weights();
    static const char *const cur[4] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."};
    static const char *const old[4] = {".query.", ".key.", ".value.", ".proj_attn."};
    char (*names)[160] = calloc(w.n, sizeof *names);
    loco_tensor_ref *t = malloc((w.n + 1) * sizeof *t);
    int renamed = 0;
    for (size_t i = 0; i < w.n; i++) {
        t[i] = w.t[i];
        for (int k = 0; k < 4; k++) {
            const char *at = strstr(w.t[i].name, cur[k]);
            if (!at) continue;
            snprintf(names[i], sizeof names[i], "%.*s%s%s", (int)(at - w.t[i].name), w.t[i].name, old[k],
                     at + strlen(cur[k]));
            t[i].name = names[i];
            renamed++;
        }
    }
    /* 4 attentions (down_blocks.1, up_blocks.1 twice, mid_block) x 4 projections x weight and bias */
    assert_int_equal(renamed, 4 * 4 * 2);
    size_t n;
    float *e_new = eps_of(fixture_path("unet-small"), &n);
    const char *d = write_model("old_names", t, w.n);
    size_t n2;
    float *e_old = eps_of(d, &n2);
    assert_int_equal(n2, n);
    assert_memory_equal(e_old, e_new, n * sizeof *e_new);
    /* mixing old and new names for different tensors is fine */
    for (size_t i = 0; i < w.n; i += 2) t[i].name = w.t[i].name;
    d = write_model("mixed_names", t, w.n);
    free(e_old);
    e_old = eps_of(d, &n2);
    assert_memory_equal(e_old, e_new, n * sizeof *e_new);
    /* the same tensor under both names is refused, naming both */
    for (size_t i = 0; i < w.n; i++) t[i] = w.t[i];
    t[w.n] = *find_ref(&w, "mid_block.attentions.0.to_k.bias");
    t[w.n].name = "mid_block.attentions.0.key.bias";
    d = write_model("both_names", t, w.n + 1);
    loco_model *m = (loco_model *)(uintptr_t)1;
    expect_error(loco_model_open(d, &m), LOCO_E_FORMAT, wpath(d), "'mid_block.attentions.0.to_k.bias'");
    expect_msg("'mid_block.attentions.0.key.bias'", NULL, NULL);
    assert_null(m);
    free(e_old);
    free(e_new);
    free(t);
    free(names);
    free_weights(&w);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_valid),
        cmocka_unit_test(test_config_unknown_key),
        cmocka_unit_test(test_config_not_json),
        cmocka_unit_test(test_config_truncated),
        cmocka_unit_test(test_config_trailing_and_duplicates),
        cmocka_unit_test(test_config_deep_nesting),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_config_absurd_sizes),
        T(test_model_config_errors),
        T(test_model_wrong_kinds),
        T(test_model_long_path),
        T(test_model_scheduler_numbers),
        T(test_model_incomplete_folder),
        T(test_weights_missing_extra),
        T(test_weights_shape_dtype),
        T(test_weights_half),
        T(test_weights_old_attention_names),
    };
    return cmocka_run_group_tests_name("config", tests, group_setup, group_teardown);
}
