/* test_sd_vae.c - Stable Diffusion's VAE (diffusers AutoencoderKL) as two
 * graphs (families/sd_vae.c) against the sd-tiny reference vectors: the
 * encoder's posterior mean and the pipeline's latent, the decoder on that
 * latent and on z[0]; the decoder's J V (central differences) and U^T J
 * (adjoint identity) through graph_lin; batches; other image sizes;
 * PyTorch .bin weights; hostile configs and weight files. */
#include "testutil.h"
#include "internal.h"
#include "tmpdir.h"
#include "families/sd_vae.h"
#include "graph/lin.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define VAE_DIR "sd-tiny/pipeline/vae"
#define VEC "sd-tiny/vectors.safetensors"
#define WNAME "diffusion_pytorch_model.safetensors"

__attribute__((noinline)) static char *read_text(const char *path) {
    char *t = NULL;
    size_t n = 0;
    if (loco_read_file(path, &t, &n, 1 << 20) != LOCO_OK) fail_msg("%s: %s", path, loco_last_error());
    return t;
}

/* max |a - b| <= rel * max |ref|, printed */
static void check_rel(const char *what, const float *a, const float *ref, size_t n, double rel) {
    double m = max_abs(ref, n);
    CHECK_CLOSE(what, a, ref, n, rel * m);
}

/* ------------------------------------------------------------------------ */
/* Against the reference vectors                                            */
/* ------------------------------------------------------------------------ */

static void test_reference(void **state) {
    (void)state;
    sd_vae *v;
    CHECK_OK(sd_vae_open(fixture_path(VAE_DIR), &v));
    sd_vae_sizes sz;
    sd_vae_get_sizes(v, &sz);
    printf("  image %dx%dx%d -> latent %dx%dx%d, factor %d, scaling %.9g; encoder %zu params %.3f MFLOP, decoder "
           "%zu params %.3f MFLOP\n",
           sz.image_ch, sz.height, sz.width, sz.latent_ch, sz.latent_h, sz.latent_w, sd_vae_downsample_factor(v),
           sd_vae_scaling_factor(v), sd_vae_encoder(v)->total_params, sd_vae_encoder(v)->flops / 1e6,
           sd_vae_decoder(v)->total_params, sd_vae_decoder(v)->flops / 1e6);
    assert_int_equal(sz.image_ch, 3);
    assert_int_equal(sz.out_ch, 3);
    assert_int_equal(sz.height, 32);
    assert_int_equal(sz.width, 32);
    assert_int_equal(sz.latent_ch, 4);
    assert_int_equal(sz.latent_h, 16);
    assert_int_equal(sz.latent_w, 16);
    assert_int_equal(sd_vae_downsample_factor(v), 2);
    assert_true(sd_vae_scaling_factor(v) == 0.18215f);
    assert_int_equal(sd_vae_get_config(v)->n_blocks, 2);
    /* every tensor of the file is in one graph or the other */
    loco_tensors *tf;
    CHECK_OK(loco_tensors_open(fixture_path(VAE_DIR "/" WNAME), &tf));
    assert_int_equal(sd_vae_encoder(v)->n_params + sd_vae_decoder(v)->n_params, (int)loco_tensors_count(tf));
    loco_tensors_close(tf);

    size_t ni, nl;
    float *image = load_tensor(fixture_path(VEC), "image", &ni);
    float *mean_ref = load_tensor(fixture_path(VEC), "vae_mean", &nl);
    float *lat_ref = load_tensor(fixture_path(VEC), "vae_latent", NULL);
    float *dec_ref = load_tensor(fixture_path(VEC), "vae_decode_of_mean", NULL);
    float *z = load_tensor(fixture_path(VEC), "z", NULL);
    float *dz0_ref = load_tensor(fixture_path(VEC), "vae_decode_z0", NULL);
    assert_int_equal(ni, sz.image_floats);
    assert_int_equal(nl, sz.latent_floats);

    /* the encoder graph itself: the unscaled mean */
    const graph *e = sd_vae_encoder(v);
    float *arena = malloc(e->arena_per_image * sizeof(float)), *scratch = malloc((e->scratch_floats + 1) * sizeof(float));
    float *mean = malloc(nl * sizeof(float)), *lat = malloc(nl * sizeof(float)), *img = malloc(ni * sizeof(float));
    graph_forward(e, 1, image, NULL, NULL, mean, arena, scratch, NULL, NULL);
    check_rel("encoder graph: vae_mean", mean, mean_ref, nl, 1e-4);
    CHECK_OK(sd_vae_encode(v, 1, image, lat));
    check_rel("sd_vae_encode: vae_latent", lat, lat_ref, nl, 1e-4);
    CHECK_OK(sd_vae_decode(v, 1, lat_ref, img));
    check_rel("sd_vae_decode(vae_latent)", img, dec_ref, ni, 1e-4);
    CHECK_OK(sd_vae_decode(v, 1, z, img)); /* z[0] */
    check_rel("sd_vae_decode(z[0])", img, dz0_ref, ni, 1e-4);

    /* non-finite inputs and bad batches are refused */
    lat[7] = NAN;
    expect_error(sd_vae_decode(v, 1, lat, img), LOCO_E_NUMERIC, "latent", "element 7");
    image[11] = INFINITY;
    expect_error(sd_vae_encode(v, 1, image, lat), LOCO_E_NUMERIC, "image", "element 11");
    expect_error(sd_vae_encode(v, 0, image, lat), LOCO_E_INVALID_ARGUMENT, "batch 0", NULL);
    free(arena);
    free(scratch);
    free(mean);
    free(lat);
    free(img);
    loco_free(image);
    loco_free(mean_ref);
    loco_free(lat_ref);
    loco_free(dec_ref);
    loco_free(z);
    loco_free(dz0_ref);
    sd_vae_free(v);
}

/* Batch 3 = three batch-1 calls, both ways; the arena grows and is reused. */
static void test_batch(void **state) {
    (void)state;
    sd_vae *v;
    CHECK_OK(sd_vae_open(fixture_path(VAE_DIR), &v));
    sd_vae_sizes sz;
    sd_vae_get_sizes(v, &sz);
    const size_t ni = sz.image_floats, nl = sz.latent_floats;
    float *image = load_tensor(fixture_path(VEC), "image", NULL);
    float *z = load_tensor(fixture_path(VEC), "z", NULL); /* [2, ...] */
    float *ib = malloc(3 * ni * sizeof(float)), *lb = malloc(3 * nl * sizeof(float));
    float *l1 = malloc(3 * nl * sizeof(float)), *i1 = malloc(3 * ni * sizeof(float)), *ob = malloc(3 * ni * sizeof(float));
    for (size_t k = 0; k < ni; k++) {
        ib[k] = image[k];
        ib[ni + k] = -image[k];
        ib[2 * ni + k] = 0.5f * image[(k * 7) % ni];
    }
    CHECK_OK(sd_vae_encode(v, 3, ib, lb));
    for (int b = 0; b < 3; b++) CHECK_OK(sd_vae_encode(v, 1, ib + b * ni, l1 + b * nl));
    check_rel("encode: batch 3 vs 3 x batch 1", lb, l1, 3 * nl, 1e-6);
    assert_true(max_abs_diff(lb, lb + nl, nl) > 1e-3); /* different images, different latents */
    float *zb = malloc(3 * nl * sizeof(float));
    memcpy(zb, z, 2 * nl * sizeof(float));
    memcpy(zb + 2 * nl, lb, nl * sizeof(float));
    CHECK_OK(sd_vae_decode(v, 3, zb, ob));
    for (int b = 0; b < 3; b++) CHECK_OK(sd_vae_decode(v, 1, zb + b * nl, i1 + b * ni));
    check_rel("decode: batch 3 vs 3 x batch 1", ob, i1, 3 * ni, 1e-6);
    free(zb);
    free(ib);
    free(lb);
    free(l1);
    free(i1);
    free(ob);
    loco_free(image);
    loco_free(z);
    sd_vae_free(v);
}

/* ------------------------------------------------------------------------ */
/* The decoder's Jacobian                                                   */
/* ------------------------------------------------------------------------ */

static void test_decoder_jacobian(void **state) {
    (void)state;
    sd_vae *v;
    CHECK_OK(sd_vae_open(fixture_path(VAE_DIR), &v));
    sd_vae_sizes sz;
    sd_vae_get_sizes(v, &sz);
    const size_t ni = sz.out_floats, nl = sz.latent_floats;
    const int k = 3;
    float *z = load_tensor(fixture_path(VEC), "z", NULL);
    float *dz0_ref = load_tensor(fixture_path(VEC), "vae_decode_z0", NULL);
    graph_lin *L;
    CHECK_OK(graph_lin_new(sd_vae_decoder(v), z, 0.0f, NULL, &L));
    check_rel("graph_lin output = decode(z[0])", graph_lin_output(L), dz0_ref, ni, 1e-4);

    loco_rng rng;
    loco_rng_seed(&rng, 7);
    float *V = malloc(k * nl * sizeof(float)), *U = malloc(k * ni * sizeof(float));
    float *JV = malloc(k * ni * sizeof(float)), *UJ = malloc(k * nl * sizeof(float));
    for (size_t i = 0; i < k * nl; i++) V[i] = (float)loco_rng_normal(&rng);
    for (size_t i = 0; i < k * ni; i++) U[i] = (float)loco_rng_normal(&rng);
    CHECK_OK(graph_lin_jvp(L, k, V, JV));
    CHECK_OK(graph_lin_vjp(L, k, U, UJ));

    /* J V against central differences of sd_vae_decode */
    const float h = 1e-2f;
    float *zp = malloc(nl * sizeof(float)), *zm = malloc(nl * sizeof(float));
    float *yp = malloc(ni * sizeof(float)), *ym = malloc(ni * sizeof(float)), *fd = malloc(ni * sizeof(float));
    for (int j = 0; j < k; j++) {
        for (size_t i = 0; i < nl; i++) {
            zp[i] = z[i] + h * V[j * nl + i];
            zm[i] = z[i] - h * V[j * nl + i];
        }
        CHECK_OK(sd_vae_decode(v, 1, zp, yp));
        CHECK_OK(sd_vae_decode(v, 1, zm, ym));
        for (size_t i = 0; i < ni; i++) fd[i] = (float)(((double)yp[i] - ym[i]) / (2.0 * h));
        char what[64];
        snprintf(what, sizeof what, "J V[%d] vs central differences", j);
        check_rel(what, JV + j * ni, fd, ni, 1e-3);
    }
    /* <U_i, J V_j> = <U_i^T J, V_j> for every pair */
    double worst = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double a = 0, b = 0, sa = 0, sb = 0;
            for (size_t q = 0; q < ni; q++) {
                a += (double)U[i * ni + q] * JV[j * ni + q];
                sa += fabs((double)U[i * ni + q] * JV[j * ni + q]);
            }
            for (size_t q = 0; q < nl; q++) {
                b += (double)UJ[i * nl + q] * V[j * nl + q];
                sb += fabs((double)UJ[i * nl + q] * V[j * nl + q]);
            }
            double rel = fabs(a - b) / (sa > sb ? sa : sb);
            if (rel > worst) worst = rel;
        }
    printf("  adjoint identity <U, J V> = <U^T J, V>: worst relative difference %.3e (tol 1e-5)\n", worst);
    assert_true(worst <= 1e-5);
    /* J is with respect to the pipeline's latent: the decoder graph starts
     * with latent / scaling_factor */
    const node *n0 = &sd_vae_decoder(v)->nodes[0];
    assert_int_equal(n0->kind, NODE_SCALE_SHIFT);
    assert_int_equal(n0->in0, sd_vae_decoder(v)->x_in);
    assert_true(fabsf(n0->scale * sd_vae_scaling_factor(v) - 1.0f) <= 1e-7f && n0->shift == 0.0f);
    graph_lin_free(L);
    free(zp);
    free(zm);
    free(yp);
    free(ym);
    free(fd);
    free(V);
    free(U);
    free(JV);
    free(UJ);
    loco_free(z);
    loco_free(dz0_ref);
    sd_vae_free(v);
}

/* ------------------------------------------------------------------------ */
/* Other sizes, .bin weights                                                */
/* ------------------------------------------------------------------------ */

static void test_sizes_and_bin(void **state) {
    (void)state;
    sd_vae *v, *w;
    CHECK_OK(sd_vae_open_sized(fixture_path(VAE_DIR), 48, 64, &v));
    sd_vae_sizes sz;
    sd_vae_get_sizes(v, &sz);
    assert_int_equal(sz.height, 48);
    assert_int_equal(sz.width, 64);
    assert_int_equal(sz.latent_h, 24);
    assert_int_equal(sz.latent_w, 32);
    float *lat = malloc(sz.latent_floats * sizeof(float)), *img = malloc(sz.out_floats * sizeof(float)),
          *im2 = malloc(sz.out_floats * sizeof(float));
    for (size_t i = 0; i < sz.latent_floats; i++) lat[i] = (float)sin(0.37 * (double)i);
    CHECK_OK(sd_vae_decode(v, 1, lat, img));
    CHECK_OK(sd_vae_encode(v, 1, img, lat));
    assert_true(isfinite(max_abs(lat, sz.latent_floats)));
    expect_error(sd_vae_open_sized(fixture_path(VAE_DIR), 33, 32, &w), LOCO_E_UNSUPPORTED, "33x32", "divisible by 2");
    assert_null(w);

    /* the same tensors as a PyTorch .bin give the same numbers */
    loco_tensors *tf;
    CHECK_OK(loco_tensors_open(fixture_path(VAE_DIR "/" WNAME), &tf));
    size_t n = loco_tensors_count(tf);
    loco_tensor_ref *refs = calloc(n, sizeof *refs);
    for (size_t i = 0; i < n; i++) {
        refs[i].name = loco_tensors_name(tf, i);
        CHECK_OK(loco_tensors_info(tf, refs[i].name, &refs[i].dtype, &refs[i].ndim, refs[i].shape));
        CHECK_OK(loco_tensors_raw(tf, refs[i].name, &refs[i].data, NULL));
    }
    const char *d = tpath("bin");
    mkdir(d, 0755);
    char p[512], *cfg = read_text(fixture_path(VAE_DIR "/config.json"));
    snprintf(p, sizeof p, "%s/config.json", d);
    write_raw(p, cfg, strlen(cfg));
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.bin", d);
    CHECK_OK(loco_pt_write(p, refs, n));
    CHECK_OK(sd_vae_open_sized(d, 48, 64, &w));
    for (size_t i = 0; i < sz.latent_floats; i++) lat[i] = (float)sin(0.37 * (double)i);
    CHECK_OK(sd_vae_decode(w, 1, lat, im2));
    CHECK_OK(sd_vae_decode(v, 1, lat, img));
    CHECK_CLOSE(".bin weights vs safetensors (decode)", im2, img, sz.out_floats, 0.0);
    sd_vae_free(w);
    free(cfg);
    free(refs);
    loco_tensors_close(tf);
    free(lat);
    free(img);
    free(im2);
    sd_vae_free(v);
}

static char *cfg_with(const char *key, const char *val);

/* shift_factor (SD3-style VAEs): latent = (mean - shift) * scaling, and the
 * decoder undoes it, so decode(encode(image)) is unchanged */
static void test_shift(void **state) {
    (void)state;
    const char *d = tpath("shift");
    mkdir(d, 0755);
    char p[512], *cfg = cfg_with("shift_factor", "0.5");
    snprintf(p, sizeof p, "%s/config.json", d);
    write_raw(p, cfg, strlen(cfg));
    free(cfg);
    snprintf(p, sizeof p, "%s/" WNAME, d);
    char abs_w[PATH_MAX];
    if (!realpath(fixture_path(VAE_DIR "/" WNAME), abs_w)) fail_msg("realpath: %s", strerror(errno));
    if (symlink(abs_w, p) != 0) fail_msg("symlink %s: %s", p, strerror(errno));
    sd_vae *v;
    CHECK_OK(sd_vae_open(d, &v));
    size_t ni, nl;
    float *image = load_tensor(fixture_path(VEC), "image", &ni);
    float *mean_ref = load_tensor(fixture_path(VEC), "vae_mean", &nl);
    float *dec_ref = load_tensor(fixture_path(VEC), "vae_decode_of_mean", NULL);
    float *lat = malloc(nl * sizeof(float)), *want = malloc(nl * sizeof(float)), *img = malloc(ni * sizeof(float));
    for (size_t i = 0; i < nl; i++) want[i] = (mean_ref[i] - 0.5f) * 0.18215f;
    CHECK_OK(sd_vae_encode(v, 1, image, lat));
    check_rel("shift 0.5: latent = (vae_mean - 0.5) * scaling", lat, want, nl, 1e-4);
    CHECK_OK(sd_vae_decode(v, 1, lat, img));
    check_rel("shift 0.5: decode(latent) = vae_decode_of_mean", img, dec_ref, ni, 1e-4);
    assert_true(sd_vae_decoder(v)->nodes[0].shift == 0.5f);
    free(lat);
    free(want);
    free(img);
    loco_free(image);
    loco_free(mean_ref);
    loco_free(dec_ref);
    sd_vae_free(v);
}

/* ------------------------------------------------------------------------ */
/* Hostile configs                                                          */
/* ------------------------------------------------------------------------ */

#define CFGP "some/vae/config.json"

/* the fixture config with key set to the JSON text val (NULL: removed) */
static char *cfg_with(const char *key, const char *val) {
    char *t = read_text(fixture_path(VAE_DIR "/config.json"));
    cJSON *root = cJSON_Parse(t);
    free(t);
    assert_non_null(root);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (val) {
        cJSON *x = cJSON_Parse(val);
        if (!x) fail_msg("bad test value %s", val);
        cJSON_AddItemToObject(root, key, x);
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}

static loco_status parse_with(const char *key, const char *val, sd_vae_config *c) {
    char *t = cfg_with(key, val);
    loco_status s = sd_vae_config_parse(c, t, strlen(t), CFGP);
    free(t);
    return s;
}

static void expect_cfg(const char *key, const char *val, loco_status want, const char *n1, const char *n2) {
    sd_vae_config c;
    printf("  %s = %s\n", key, val ? val : "(absent)");
    expect_error(parse_with(key, val, &c), want, n1, n2);
    if (!strstr(loco_last_error(), CFGP)) fail_msg("'%s' does not name the file", loco_last_error());
}

static void test_config(void **state) {
    (void)state;
    sd_vae_config c;
    /* the fixture, and what the defaults and optional keys give */
    char *t = read_text(fixture_path(VAE_DIR "/config.json"));
    CHECK_OK(sd_vae_config_parse(&c, t, strlen(t), CFGP));
    free(t);
    assert_int_equal(c.n_blocks, 2);
    assert_int_equal(c.boc[1], 8);
    assert_int_equal(c.groups, 2);
    assert_int_equal(c.latent_ch, 4);
    assert_true(c.use_quant_conv && c.use_post_quant_conv && c.mid_attention && c.force_upcast);
    CHECK_OK(parse_with("scaling_factor", NULL, &c));
    assert_true(c.scaling_factor == 0.18215f);
    CHECK_OK(parse_with("shift_factor", "0.0609", &c));
    assert_true(c.shift_factor == 0.0609f);
    CHECK_OK(parse_with("sample_size", "[16, 48]", &c));
    assert_int_equal(c.height, 16);
    assert_int_equal(c.width, 48);
    CHECK_OK(parse_with("some_future_key", "[1, 2]", &c)); /* unknown keys: logged, ignored */
    CHECK_OK(parse_with("mid_block_add_attention", "false", &c));
    assert_int_equal(c.mid_attention, 0);

    expect_cfg("down_block_types", "[\"DownEncoderBlock2D\", \"AttnDownEncoderBlock2D\"]", LOCO_E_UNSUPPORTED,
               "'down_block_types'[1]", "AttnDownEncoderBlock2D");
    expect_cfg("up_block_types", "[\"UpDecoderBlock2D\", \"UpBlock2D\"]", LOCO_E_UNSUPPORTED, "'up_block_types'[1]",
               "UpDecoderBlock2D");
    expect_cfg("up_block_types", "[\"UpDecoderBlock2D\"]", LOCO_E_FORMAT, "must agree", NULL);
    expect_cfg("down_block_types", "[\"DownEncoderBlock2D\", 7]", LOCO_E_FORMAT, "must be a string", NULL);
    expect_cfg("block_out_channels", NULL, LOCO_E_FORMAT, "block_out_channels", "missing");
    expect_cfg("block_out_channels", "[4, 8.5]", LOCO_E_FORMAT, "'block_out_channels'[1]", "integer");
    expect_cfg("block_out_channels", "[4, 1e300]", LOCO_E_UNSUPPORTED, "'block_out_channels'[1]", NULL);
    expect_cfg("block_out_channels", "[]", LOCO_E_UNSUPPORTED, "block_out_channels", NULL);
    expect_cfg("norm_num_groups", "3", LOCO_E_UNSUPPORTED, "'norm_num_groups' = 3", "block_out_channels[0] = 4");
    expect_cfg("norm_num_groups", "null", LOCO_E_UNSUPPORTED, "norm_num_groups", NULL);
    expect_cfg("scaling_factor", "0", LOCO_E_UNSUPPORTED, "'scaling_factor'", NULL);
    expect_cfg("scaling_factor", "-0.18215", LOCO_E_UNSUPPORTED, "'scaling_factor'", NULL);
    {
        /* cJSON writes inf as null: edit the text itself */
        char *tx = read_text(fixture_path(VAE_DIR "/config.json"));
        char *at = strstr(tx, "0.18215");
        assert_non_null(at);
        memcpy(at, "1e999  ", 7);
        printf("  scaling_factor = 1e999\n");
        expect_error(sd_vae_config_parse(&c, tx, strlen(tx), CFGP), LOCO_E_UNSUPPORTED, "'scaling_factor'", "inf");
        free(tx);
    }
    expect_cfg("scaling_factor", "\"0.18215\"", LOCO_E_FORMAT, "'scaling_factor'", "number");
    expect_cfg("shift_factor", "true", LOCO_E_FORMAT, "'shift_factor'", "number");
    expect_cfg("latents_mean", "[0.1, 0.2, 0.3, 0.4]", LOCO_E_UNSUPPORTED, "'latents_mean'", "only null");
    expect_cfg("latents_std", "[1, 1, 1, 1]", LOCO_E_UNSUPPORTED, "'latents_std'", "only null");
    expect_cfg("act_fn", "\"gelu\"", LOCO_E_UNSUPPORTED, "'act_fn'", "silu");
    expect_cfg("use_quant_conv", "1", LOCO_E_FORMAT, "'use_quant_conv'", "true or false");
    expect_cfg("force_upcast", "\"yes\"", LOCO_E_FORMAT, "'force_upcast'", NULL);
    expect_cfg("layers_per_block", "0", LOCO_E_UNSUPPORTED, "'layers_per_block'", NULL);
    expect_cfg("latent_channels", "2.5", LOCO_E_FORMAT, "'latent_channels'", "integer");
    expect_cfg("sample_size", "33", LOCO_E_UNSUPPORTED, "'sample_size'", "divisible by 2");
    expect_cfg("sample_size", "[32]", LOCO_E_FORMAT, "'sample_size'", NULL);
    expect_cfg("sample_size", NULL, LOCO_E_FORMAT, "'sample_size'", "missing");
    expect_cfg("_class_name", "\"UNet2DModel\"", LOCO_E_UNSUPPORTED, "'_class_name'", "AutoencoderKL");

    /* NaN (Python's json writes it) is not JSON; nor is trailing text, and a
     * key given twice is refused */
    static const char *const raw[][2] = {
        {"{\"sample_size\": 32, \"scaling_factor\": NaN}", "not valid JSON"},
        {"{\"sample_size\": 32} x", "unexpected text"},
        {"{\"sample_size\": 32, \"sample_size\": 64}", "appears twice"},
        {"[1, 2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        printf("  %s\n", raw[i][0]);
        expect_error(sd_vae_config_parse(&c, raw[i][0], strlen(raw[i][0]), CFGP), LOCO_E_FORMAT, CFGP, raw[i][1]);
    }
}

/* ------------------------------------------------------------------------ */
/* Hostile folders and weights                                              */
/* ------------------------------------------------------------------------ */

typedef struct wset {
    loco_tensors *f;
    loco_tensor_ref *t;
    size_t n;
} wset;

static wset load_weights(void) {
    wset w;
    CHECK_OK(loco_tensors_open(fixture_path(VAE_DIR "/" WNAME), &w.f));
    w.n = loco_tensors_count(w.f);
    w.t = calloc(w.n + 2, sizeof *w.t);
    for (size_t i = 0; i < w.n; i++) {
        loco_tensor_ref *r = &w.t[i];
        r->name = loco_tensors_name(w.f, i);
        CHECK_OK(loco_tensors_info(w.f, r->name, &r->dtype, &r->ndim, r->shape));
        CHECK_OK(loco_tensors_raw(w.f, r->name, &r->data, NULL));
    }
    return w;
}

/* g_dir/name with config text cfg and tensors t[0..n) */
static const char *write_vae(const char *name, const char *cfg, const loco_tensor_ref *t, size_t n) {
    const char *d = tpath(name);
    char p[512];
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/config.json", d);
    write_raw(p, cfg, strlen(cfg));
    if (t) {
        snprintf(p, sizeof p, "%s/" WNAME, d);
        CHECK_OK(loco_tensors_write(p, t, n, NULL, 0));
    }
    return d;
}

static void expect_open_fails(const char *d, loco_status want, const char *n1, const char *n2) {
    sd_vae *v = (sd_vae *)(uintptr_t)1;
    expect_error(sd_vae_open(d, &v), want, n1, n2);
    printf("  refused: %s\n", loco_last_error());
    assert_null(v);
}

static void test_weights(void **state) {
    (void)state;
    wset w = load_weights();
    char *cfg = read_text(fixture_path(VAE_DIR "/config.json"));
    sd_vae *v;
    /* the control: the same tensors written again load */
    CHECK_OK(sd_vae_open(write_vae("same", cfg, w.t, w.n), &v));
    sd_vae_free(v);

    /* a missing tensor, from either half */
    const char *drop[] = {"decoder.up_blocks.1.resnets.0.conv_shortcut.weight", "encoder.conv_in.bias",
                          "quant_conv.weight", "post_quant_conv.bias", "encoder.mid_block.attentions.0.to_q.weight"};
    loco_tensor_ref *t = calloc(w.n + 2, sizeof *t);
    for (size_t k = 0; k < sizeof drop / sizeof drop[0]; k++) {
        size_t n = 0;
        for (size_t i = 0; i < w.n; i++)
            if (strcmp(w.t[i].name, drop[k]) != 0) t[n++] = w.t[i];
        assert_int_equal(n, w.n - 1);
        expect_open_fails(write_vae("missing", cfg, t, n), LOCO_E_NOT_FOUND, drop[k], "missing");
    }
    /* an extra tensor: under another name, or under a prefix of the other
     * half (ignored by one graph, refused by the other) */
    static const float one[1] = {1};
    const char *extra[] = {"encoder.extra.weight", "decoder.mid_block.extra", "post_quant_conv.scale", "lpips.net"};
    for (size_t k = 0; k < sizeof extra / sizeof extra[0]; k++) {
        memcpy(t, w.t, w.n * sizeof *t);
        t[w.n] = (loco_tensor_ref){extra[k], LOCO_DTYPE_F32, 1, {1}, one};
        expect_open_fails(write_vae("extra", cfg, t, w.n + 1), LOCO_E_FORMAT, extra[k], "unexpected tensor");
    }
    /* the wrong shape */
    memcpy(t, w.t, w.n * sizeof *t);
    for (size_t i = 0; i < w.n; i++)
        if (strcmp(t[i].name, "decoder.conv_out.weight") == 0) {
            t[i].shape[0] = 1; /* [1, 4, 3, 3]: a prefix of the data */
            t[i].ndim = 4;
        }
    expect_open_fails(write_vae("shape", cfg, t, w.n), LOCO_E_SHAPE, "decoder.conv_out.weight", "[3,4,3,3]");
    /* a config without quant_conv while the file has it; the converse */
    char *noq = cfg_with("use_quant_conv", "false");
    expect_open_fails(write_vae("noquant", noq, w.t, w.n), LOCO_E_FORMAT, "'quant_conv.", "unexpected tensor");
    free(noq);
    char *nopq = cfg_with("use_post_quant_conv", "false");
    expect_open_fails(write_vae("nopostquant", nopq, w.t, w.n), LOCO_E_FORMAT, "post_quant_conv", "unexpected");
    free(nopq);
    /* one block too many in the config */
    char *big = cfg_with("block_out_channels", "[4, 8, 8]");
    cJSON *r = cJSON_Parse(big);
    free(big);
    cJSON_ReplaceItemInObject(r, "down_block_types",
                              cJSON_Parse("[\"DownEncoderBlock2D\",\"DownEncoderBlock2D\",\"DownEncoderBlock2D\"]"));
    cJSON_ReplaceItemInObject(r, "up_block_types",
                              cJSON_Parse("[\"UpDecoderBlock2D\",\"UpDecoderBlock2D\",\"UpDecoderBlock2D\"]"));
    big = cJSON_Print(r);
    cJSON_Delete(r);
    expect_open_fails(write_vae("bigger", big, w.t, w.n), LOCO_E_NOT_FOUND, "missing", NULL);
    free(big);
    /* no weights, no config, not a folder */
    expect_open_fails(write_vae("noweights", cfg, NULL, 0), LOCO_E_NOT_FOUND, WNAME, NULL);
    const char *empty = tpath("empty");
    mkdir(empty, 0755);
    expect_open_fails(empty, LOCO_E_NOT_FOUND, "config.json", NULL);
    expect_open_fails(tpath("nothing-here"), LOCO_E_IO, "not a VAE folder", NULL);
    /* a hostile config is named by its path */
    char *bad = cfg_with("norm_num_groups", "3");
    expect_open_fails(write_vae("badcfg", bad, w.t, w.n), LOCO_E_UNSUPPORTED, "config.json", "norm_num_groups");
    free(bad);

    /* why the subset loader exists: the whole file is not one graph's */
    sd_vae_config c;
    t[0] = w.t[0];
    char *text = read_text(fixture_path(VAE_DIR "/config.json"));
    CHECK_OK(sd_vae_config_parse(&c, text, strlen(text), CFGP));
    free(text);
    graph g;
    CHECK_OK(sd_vae_build_encoder(&g, &c, 32, 32));
    expect_error(graph_load_weights(&g, fixture_path(VAE_DIR "/" WNAME)), LOCO_E_FORMAT, "unexpected tensor",
                 "'decoder.");
    graph_free(&g);
    free(t);
    free(cfg);
    free(w.t);
    loco_tensors_close(w.f);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference), cmocka_unit_test(test_batch), cmocka_unit_test(test_decoder_jacobian),
        T(test_sizes_and_bin),            T(test_shift),                 cmocka_unit_test(test_config),
        T(test_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
