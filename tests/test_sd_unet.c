/* test_sd_unet.c - Stable Diffusion's UNet2DConditionModel as a graph
 * against the reference fixtures (tests/fixtures/sd-tiny/README.md): eps at
 * integer and fractional timesteps for two prompts' embeddings, the guided
 * eps and x0_hat; J V and U^T J of the guided x0_hat on the latent mask;
 * finite differences and the adjoint identity; hostile configs. */
#include "testutil.h"

#include "families/sd_unet.h"
#include "graph/lin.h"

#include <stdio.h>

#define VEC "sd-tiny/vectors.safetensors"

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = malloc((size_t)n + 1);
    if (fread(t, 1, (size_t)n, f) != (size_t)n) fail_msg("%s: short read", path);
    t[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return t;
}

typedef struct sdu {
    sd_unet_config c;
    graph g;
    float *arena, *scratch;
} sdu;

static void sdu_open(sdu *u, int max_batch) {
    size_t len;
    char *text = read_text(fixture_path("sd-tiny/pipeline/unet/config.json"), &len);
    CHECK_OK(sd_unet_config_parse(&u->c, text, len, "unet/config.json"));
    free(text);
    /* the fixtures' latents are 16x16 (images 32x32); sample_size is only
     * the default size */
    u->c.height = u->c.width = 16;
    CHECK_OK(sd_unet_build(&u->g, &u->c));
    CHECK_OK(graph_load_weights(&u->g, fixture_path("sd-tiny/pipeline/unet/diffusion_pytorch_model.safetensors")));
    u->arena = malloc(sizeof(float) * u->g.arena_per_image * (size_t)max_batch);
    u->scratch = malloc(sizeof(float) * u->g.scratch_floats);
}

static void sdu_close(sdu *u) {
    graph_free(&u->g);
    free(u->arena);
    free(u->scratch);
}

/* the fixture's embeddings [77, 8] of prompt p, as the graph wants them: [8, 1, 77] */
static float *ctx_of(const float *emb, int p) {
    float *c = malloc(sizeof(float) * 77 * 8);
    for (int t = 0; t < 77; t++)
        for (int d = 0; d < 8; d++) c[d * 77 + t] = emb[((size_t)p * 77 + t) * 8 + d];
    return c;
}

static void rel(const char *what, const float *a, const float *ref, size_t n, double tol) {
    CHECK_CLOSE(what, a, ref, n, tol * max_abs(ref, n));
}

static void test_eps(void **state) {
    sdu u;
    sdu_open(&u, 2);
    const char *vec = fixture_path(VEC);
    size_t nz, nt;
    float *z = load_tensor(vec, "z", &nz), *emb = load_tensor(vec, "emb", NULL), *tl = load_tensor(vec, "t_list", &nt);
    const size_t n = nz / 2;
    assert_int_equal(n, 4 * 16 * 16);
    float *ctx = malloc(sizeof(float) * 2 * 77 * 8), *c0 = ctx_of(emb, 0), *c1 = ctx_of(emb, 1);
    memcpy(ctx, c0, sizeof(float) * 77 * 8);
    memcpy(ctx + 77 * 8, c1, sizeof(float) * 77 * 8);
    float *y = malloc(sizeof(float) * 2 * n);
    for (size_t i = 0; i < nt; i++) {
        char key[32], what[64];
        snprintf(key, sizeof key, "eps.t%zu", i);
        float *ref = load_tensor(vec, key, NULL);
        const float t2[2] = {tl[i], tl[i]};
        graph_forward(&u.g, 2, z, t2, ctx, y, u.arena, u.scratch, NULL, NULL);
        snprintf(what, sizeof what, "eps at t = %g (prompts 0, 1)", (double)tl[i]);
        rel(what, y, ref, 2 * n, 1e-4);
        loco_free(ref);
    }
    /* classifier-free guidance: eps_u + 7.5 (eps_c - eps_u), prompt 0 vs "" */
    float *cu = ctx_of(emb, 2);
    const int ti[3] = {0, 4, 5};
    for (int k = 0; k < 3; k++) {
        char key[32];
        const float t1 = tl[ti[k]];
        float *yc = malloc(sizeof(float) * n), *yu = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
        graph_forward(&u.g, 1, z, &t1, c0, yc, u.arena, u.scratch, NULL, NULL);
        graph_forward(&u.g, 1, z, &t1, cu, yu, u.arena, u.scratch, NULL, NULL);
        for (size_t j = 0; j < n; j++) g[j] = yu[j] + 7.5f * (yc[j] - yu[j]);
        snprintf(key, sizeof key, "eps_cfg.t%d", ti[k]);
        float *ref = load_tensor(vec, key, NULL);
        rel(key, g, ref, n, 1e-4);
        loco_free(ref);
        free(yc);
        free(yu);
        free(g);
    }
    free(cu);
    free(ctx);
    free(c0);
    free(c1);
    free(y);
    loco_free(z);
    loco_free(emb);
    loco_free(tl);
    sdu_close(&u);
}

/* J V and U^T J of the guided x0_hat on the latent mask, from two
 * linearisations (conditional and unconditional) combined as the guidance */
static void test_jacobians(void **state) {
    sdu u;
    sdu_open(&u, 1);
    const char *vec = fixture_path(VEC);
    size_t nz, nv, nm;
    float *z = load_tensor(vec, "z", &nz), *emb = load_tensor(vec, "emb", NULL);
    float *jt = load_tensor(vec, "jac_t", NULL), *ja = load_tensor(vec, "jac_alpha", NULL);
    float *V = load_tensor(vec, "V", &nv), *JV_ref = load_tensor(vec, "JV", NULL), *U = load_tensor(vec, "U", NULL),
          *UJ_ref = load_tensor(vec, "UJ", NULL), *maskf = load_tensor(vec, "mask_latent", &nm);
    const size_t n = nz / 2;
    const int k = (int)(nv / n);
    float *c0 = ctx_of(emb, 0), *cu = ctx_of(emb, 2);
    graph_lin *Lc, *Lu;
    CHECK_OK(graph_lin_new(&u.g, z, jt[0], c0, &Lc));
    CHECK_OK(graph_lin_new(&u.g, z, jt[0], cu, &Lu));
    const float g = 7.5f, sa = sqrtf(ja[0]), s1 = sqrtf(1 - ja[0]);
    float *jc = malloc(sizeof(float) * k * n), *ju = malloc(sizeof(float) * k * n);
    CHECK_OK(graph_lin_jvp(Lc, k, V, jc));
    CHECK_OK(graph_lin_jvp(Lu, k, V, ju));
    /* x0 = (z - s1 eps) / sa: J_x0 V = (V - s1 J_eps V) / sa, masked */
    size_t l = 0;
    for (size_t i = 0; i < nm; i++) l += maskf[i] != 0;
    float *JV = calloc((size_t)k * l, sizeof(float));
    for (int b = 0; b < k; b++) {
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            if (!maskf[i]) continue;
            const float je = ju[b * n + i] + g * (jc[b * n + i] - ju[b * n + i]);
            JV[b * l + j++] = (V[b * n + i] - s1 * je) / sa;
        }
    }
    rel("J V of the guided x0_hat (latent mask)", JV, JV_ref, (size_t)k * l, 1e-4);
    /* U^T J: embed U, pull back through both branches */
    float *full = calloc((size_t)k * n, sizeof(float)), *uc = malloc(sizeof(float) * k * n),
          *uu = malloc(sizeof(float) * k * n), *UJ = malloc(sizeof(float) * k * n);
    for (int b = 0; b < k; b++) {
        size_t j = 0;
        for (size_t i = 0; i < n; i++)
            if (maskf[i]) full[b * n + i] = U[b * l + j++];
    }
    CHECK_OK(graph_lin_vjp(Lc, k, full, uc));
    CHECK_OK(graph_lin_vjp(Lu, k, full, uu));
    for (size_t i = 0; i < (size_t)k * n; i++) {
        const float ue = uu[i] + g * (uc[i] - uu[i]);
        UJ[i] = (full[i] - s1 * ue) / sa;
    }
    rel("U^T J of the guided x0_hat (latent mask)", UJ, UJ_ref, (size_t)k * n, 1e-4);
    /* adjoint identity with our own numbers */
    for (int b = 0; b < k; b++) {
        double a1 = 0, a2 = 0;
        for (size_t j = 0; j < l; j++) a1 += (double)U[b * l + j] * JV[b * l + j];
        for (size_t i = 0; i < n; i++) a2 += (double)UJ[b * n + i] * V[b * n + i];
        printf("  <u, J v> %.9g  <U^T J, v> %.9g\n", a1, a2);
        assert_true(fabs(a1 - a2) <= 1e-4 * (fabs(a1) + 1e-3));
    }
    graph_lin_free(Lc);
    graph_lin_free(Lu);
    free(jc);
    free(ju);
    free(JV);
    free(full);
    free(uc);
    free(uu);
    free(UJ);
    free(c0);
    free(cu);
    loco_free(z);
    loco_free(emb);
    loco_free(jt);
    loco_free(ja);
    loco_free(V);
    loco_free(JV_ref);
    loco_free(U);
    loco_free(UJ_ref);
    loco_free(maskf);
    sdu_close(&u);
}

static void expect_parse_error(const char *text, const char *needle) {
    sd_unet_config c;
    loco_status s = sd_unet_config_parse(&c, text, strlen(text), "unet/config.json");
    if (s == LOCO_OK) fail_msg("config accepted: %s", text);
    if (!strstr(loco_last_error(), needle)) fail_msg("'%s' does not mention '%s'", loco_last_error(), needle);
    printf("  refused: %s\n", loco_last_error());
}

static void test_hostile_configs(void **state) {
    const char *base = "{\"block_out_channels\": [32, 64], \"down_block_types\": [\"DownBlock2D\", "
                       "\"CrossAttnDownBlock2D\"], \"up_block_types\": [\"CrossAttnUpBlock2D\", \"UpBlock2D\"]";
    char t[1024];
    snprintf(t, sizeof t, "%s, \"time_cond_proj_dim\": 256}", base);
    expect_parse_error(t, "time_cond_proj_dim");
    snprintf(t, sizeof t, "%s, \"attention_head_dim\": 5}", base);
    expect_parse_error(t, "attention_head_dim");
    snprintf(t, sizeof t, "%s, \"norm_num_groups\": 3}", base);
    expect_parse_error(t, "norm_num_groups");
    snprintf(t, sizeof t, "%s, \"attention_head_dim\": [8, 8, 8]}", base);
    expect_parse_error(t, "attention_head_dim");
    snprintf(t, sizeof t, "%s, \"addition_embed_type\": \"text_time\"}", base);
    expect_parse_error(t, "addition_embed_type");
    expect_parse_error("{\"block_out_channels\": [32], \"down_block_types\": [\"SkipDownBlock2D\"], "
                       "\"up_block_types\": [\"UpBlock2D\"]}",
                       "down_block_types");
    snprintf(t, sizeof t, "%s, \"sample_size\": 33}", base);
    expect_parse_error(t, "sample_size");
    /* a valid one parses */
    snprintf(t, sizeof t, "%s, \"sample_size\": 32, \"cross_attention_dim\": 64}", base);
    sd_unet_config c;
    CHECK_OK(sd_unet_config_parse(&c, t, strlen(t), "unet/config.json"));
    assert_int_equal(c.heads[1], 8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eps),
        cmocka_unit_test(test_jacobians),
        cmocka_unit_test(test_hostile_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
