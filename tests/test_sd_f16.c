/* test_sd_f16.c - Stable Diffusion pipeline folders in half precision:
 * `loco convert --dtype f16` of the sd-tiny pipeline opens and gives eps,
 * x0_hat and decoded images close to the f32 ones (bounds below); the fp16
 * variant file names diffusers writes open too; an inf or NaN in an f16
 * weight file is an error naming the file and tensor; and converting to f16
 * refuses a value beyond f16's range (|x| > 65504), writing nothing. */
#include "testutil.h"
#include "tmpdir.h"

#include "internal.h"

#include <sys/stat.h>

#define VEC "sd-tiny/vectors.safetensors"
#define PIPE "sd-tiny/pipeline"

static loco_model *open_at(const char *dir) {
    loco_open_params p;
    loco_open_params_init(&p);
    p.image_size = 32; /* latents 16x16 */
    loco_model *m;
    CHECK_OK(loco_model_open_with(dir, &p, &m));
    return m;
}

static loco_status convert(const char *from, const char *to, loco_dtype dt) {
    loco_open_params p;
    loco_open_params_init(&p);
    return loco_convert_with(from, &p, to, dt);
}

/* Rewrites the safetensors file src as dst with every tensor in dtype dt
 * (F32 or F16); element `elem` of tensor `name` (NULL: none) becomes the
 * float `value` (F32) or the half bits `bits` (F16). */
static void rewrite(const char *src, const char *dst, loco_dtype dt, const char *name, size_t elem, float value,
                    uint16_t bits) {
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(src, &f));
    const size_t n = loco_tensors_count(f);
    loco_tensor_ref *refs = calloc(n, sizeof *refs);
    void **bufs = calloc(n, sizeof *bufs);
    assert_non_null(refs);
    assert_non_null(bufs);
    for (size_t i = 0; i < n; i++) {
        float *d;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        refs[i].name = loco_tensors_name(f, i);
        CHECK_OK(loco_tensors_read_f32(f, refs[i].name, &d, &nd, sh, 0));
        size_t cnt = 1;
        for (int k = 0; k < nd; k++) cnt *= (size_t)sh[k], refs[i].shape[k] = sh[k];
        refs[i].ndim = nd;
        refs[i].dtype = dt;
        const int hit = name && strcmp(refs[i].name, name) == 0;
        if (dt == LOCO_DTYPE_F32) {
            if (hit) d[elem] = value;
            bufs[i] = d;
        } else {
            uint16_t *h = malloc(2 * cnt + 2);
            assert_non_null(h);
            for (size_t k = 0; k < cnt; k++) h[k] = loco_f32_to_f16(d[k]);
            if (hit) h[elem] = bits;
            loco_free(d);
            bufs[i] = h;
        }
        refs[i].data = bufs[i];
    }
    CHECK_OK(loco_tensors_write(dst, refs, n, NULL, 0));
    for (size_t i = 0; i < n; i++) dt == LOCO_DTYPE_F32 ? loco_free(bufs[i]) : free(bufs[i]);
    free(refs);
    free(bufs);
    loco_tensors_close(f);
}

static loco_dtype dtype_of(const char *path, const char *name) {
    loco_tensors *f;
    CHECK_OK(loco_tensors_open(path, &f));
    loco_dtype dt;
    int nd;
    int64_t sh[LOCO_MAX_DIMS];
    CHECK_OK(loco_tensors_info(f, name, &dt, &nd, sh));
    loco_tensors_close(f);
    return dt;
}

/* guided eps and x0_hat at the fixture's z for three timesteps, and the
 * decoded x0_hat: [3 * n] eps, [3 * n] x0, [3 * ni] images */
static void evaluate(loco_model *m, float guidance, const float *z, size_t n, size_t ni, float *eps, float *x0,
                     float *img) {
    loco_cond_params cp;
    loco_cond_params_init(&cp);
    cp.prompt = "a photo of a man";
    cp.guidance = guidance;
    loco_cond *c;
    CHECK_OK(loco_cond_new(m, &cp, &c));
    const float ts[3] = {999.0f, 500.0f, 1.0f};
    for (int k = 0; k < 3; k++) {
        CHECK_OK(loco_model_x0_hat_cond(m, 1, z, &ts[k], c, x0 + n * (size_t)k, eps + n * (size_t)k));
        CHECK_OK(loco_model_decode(m, 1, x0 + n * (size_t)k, img + ni * (size_t)k));
    }
    loco_cond_free(c);
}

static void test_f16_close_to_f32(void **state) {
    (void)state;
    alarm(300);
    const char *f16 = tpath("f16");
    CHECK_OK(convert(fixture_path(PIPE), f16, LOCO_DTYPE_F16));
    char p[512];
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", f16);
    assert_int_equal(dtype_of(p, "conv_in.weight"), LOCO_DTYPE_F16);
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", f16);
    assert_int_equal(dtype_of(p, "text_model.final_layer_norm.weight"), LOCO_DTYPE_F16);
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", f16);
    assert_int_equal(dtype_of(p, "decoder.conv_out.weight"), LOCO_DTYPE_F16);

    size_t nz;
    float *z = load_tensor(fixture_path(VEC), "z", &nz);
    const size_t n = 4 * 16 * 16, ni = 3 * 32 * 32;
    assert_true(nz >= n);
    float *e32 = malloc(sizeof(float) * 3 * n), *x32 = malloc(sizeof(float) * 3 * n),
          *i32 = malloc(sizeof(float) * 3 * ni), *e16 = malloc(sizeof(float) * 3 * n),
          *x16 = malloc(sizeof(float) * 3 * n), *i16 = malloc(sizeof(float) * 3 * ni);
    loco_model *m32 = open_at(fixture_path(PIPE)), *m16 = open_at(f16);
    /* f16 weights carry a relative rounding of up to 2^-11 = 4.9e-4 each;
     * through the text encoder, the UNet and the VAE the outputs move by a
     * few times that relative to their size. Guidance 7.5 multiplies the
     * conditional-minus-unconditional difference, and its error, by 7.5.
     * Bounds, relative to max |f32 output|: unguided (guidance 1) 5e-3,
     * guided 2.5e-2 (measured figures printed). */
    static const float gs[2] = {1.0f, 7.5f};
    for (int gi = 0; gi < 2; gi++) {
        const double tol = gi ? 2.5e-2 : 5e-3;
        char what[96];
        evaluate(m32, gs[gi], z, n, ni, e32, x32, i32);
        evaluate(m16, gs[gi], z, n, ni, e16, x16, i16);
        snprintf(what, sizeof what, "eps (guidance %g), f16 vs f32", gs[gi]);
        CHECK_CLOSE(what, e16, e32, 3 * n, tol * max_abs(e32, 3 * n));
        snprintf(what, sizeof what, "x0_hat (guidance %g), f16 vs f32", gs[gi]);
        CHECK_CLOSE(what, x16, x32, 3 * n, tol * max_abs(x32, 3 * n));
        snprintf(what, sizeof what, "decoded x0_hat (guidance %g), f16 vs f32", gs[gi]);
        CHECK_CLOSE(what, i16, i32, 3 * ni, tol * max_abs(i32, 3 * ni));
    }
    /* and they are not the same numbers: the f16 folder was really used */
    assert_true(max_abs_diff(e16, e32, 3 * n) > 0);
    loco_model_free(m16);

    /* the fp16 variant names diffusers writes (variant="fp16"), alone in
     * their folders: the same weights, the same numbers */
    const char *var = tpath("variant");
    CHECK_OK(convert(f16, var, LOCO_DTYPE_COUNT));
    static const char *const comp[3][2] = {{"unet", "diffusion_pytorch_model"},
                                           {"vae", "diffusion_pytorch_model"},
                                           {"text_encoder", "model"}};
    for (int k = 0; k < 3; k++) {
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/%s/%s.safetensors", var, comp[k][0], comp[k][1]);
        snprintf(b, sizeof b, "%s/%s/%s.fp16.safetensors", var, comp[k][0], comp[k][1]);
        assert_int_equal(rename(a, b), 0);
    }
    loco_model *mv = open_at(var);
    float *ev = malloc(sizeof(float) * 3 * n), *xv = malloc(sizeof(float) * 3 * n),
          *iv = malloc(sizeof(float) * 3 * ni);
    evaluate(mv, 7.5f, z, n, ni, ev, xv, iv);
    CHECK_CLOSE("eps of the .fp16 variant files", ev, e16, 3 * n, 0.0);
    CHECK_CLOSE("images of the .fp16 variant files", iv, i16, 3 * ni, 0.0);
    loco_model_free(mv);
    loco_model_free(m32);
    free(ev), free(xv), free(iv);
    free(e32), free(x32), free(i32), free(e16), free(x16), free(i16);
    loco_free(z);
}

/* an inf or NaN in an f16 weight file: an error naming the file and tensor */
static void test_f16_nonfinite_weights(void **state) {
    (void)state;
    alarm(120);
    static const struct {
        const char *comp, *file, *tensor;
        uint16_t bits;
    } cases[] = {
        {"unet", "diffusion_pytorch_model.safetensors", "conv_in.weight", 0x7C00},           /* +inf */
        {"vae", "diffusion_pytorch_model.safetensors", "decoder.conv_out.bias", 0x7E00},     /* NaN  */
        {"text_encoder", "model.safetensors", "text_model.final_layer_norm.weight", 0xFC00}, /* -inf */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char dir[64], src[512], dst[512];
        snprintf(dir, sizeof dir, "bad%zu", k);
        const char *d = tpath(dir);
        CHECK_OK(convert(fixture_path(PIPE), d, LOCO_DTYPE_COUNT));
        snprintf(src, sizeof src, "%s/%s/%s", fixture_path(PIPE), cases[k].comp, cases[k].file);
        snprintf(dst, sizeof dst, "%s/%s/%s", d, cases[k].comp, cases[k].file);
        rewrite(src, dst, LOCO_DTYPE_F16, cases[k].tensor, 1, 0, cases[k].bits);
        loco_open_params p;
        loco_open_params_init(&p);
        p.image_size = 32;
        loco_model *m = NULL;
        expect_error(loco_model_open_with(d, &p, &m), LOCO_E_NUMERIC, dst, cases[k].tensor);
        assert_null(m);
        printf("  %s: %s\n", cases[k].comp, loco_last_error());
    }
}

/* converting to f16: a value beyond f16's range is refused, nothing written */
static void test_f16_overflow_refused(void **state) {
    (void)state;
    alarm(120);
    const char *big = tpath("big");
    CHECK_OK(convert(fixture_path(PIPE), big, LOCO_DTYPE_COUNT));
    char src[512], dst[512];
    snprintf(src, sizeof src, "%s/vae/diffusion_pytorch_model.safetensors", fixture_path(PIPE));
    snprintf(dst, sizeof dst, "%s/vae/diffusion_pytorch_model.safetensors", big);
    /* 65504 is f16's largest finite value and converts; 65520 and above
     * round to inf */
    rewrite(src, dst, LOCO_DTYPE_F32, "decoder.conv_out.bias", 2, 65504.0f, 0);
    CHECK_OK(convert(big, tpath("ok16"), LOCO_DTYPE_F16));
    rewrite(src, dst, LOCO_DTYPE_F32, "decoder.conv_out.bias", 2, 65520.0f, 0);
    const char *out = tpath("over16");
    expect_error(convert(big, out, LOCO_DTYPE_F16), LOCO_E_NUMERIC, "decoder.conv_out.bias", "65504");
    expect_error(convert(big, out, LOCO_DTYPE_F16), LOCO_E_NUMERIC, dst, "element 2");
    printf("  %s\n", loco_last_error());
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0); /* nothing written */
    /* kept as f32 it is a valid folder */
    CHECK_OK(convert(big, tpath("big32"), LOCO_DTYPE_F32));
}

int main(void) {
    (void)write_raw; /* tmpdir.h's, not needed here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_close_to_f32),
        cmocka_unit_test(test_f16_nonfinite_weights),
        cmocka_unit_test(test_f16_overflow_refused),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
