/* adm_config.c - guided-diffusion UNetModel ("ADM") configuration: config.json
 * parsing, inference from a state dict, the implied parameter list and the
 * exact check of a state dict against it. The structure mirrors
 * guided_diffusion/unet.py (UNetModel.__init__, ResBlock, AttentionBlock,
 * Downsample, Upsample) and script_util.create_model. */
#include "families/adm_config.h"
#include "families/json_cfg.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADM_MAX_CH 65536     /* channels of any level                      */
#define ADM_MAX_IMAGE 8192   /* image_size                                 */
#define ADM_MAX_RES_BLOCKS 64
#define ADM_MAX_MULT 64      /* a channel multiplier                       */
#define ADM_MAX_RESOLUTIONS 32 /* entries of attention_resolutions        */
/* output_blocks entries: levels * (num_res_blocks + 1) */
#define ADM_MAX_OUT_ENTRIES (ADM_MAX_LEVELS * (ADM_MAX_RES_BLOCKS + 1))

/* ======================================================================== */
/* Small helpers                                                            */
/* ======================================================================== */

/* A growing string; oom records a failed allocation (the text is then cut). */
typedef struct cbuf {
    char *s;
    size_t n, cap;
    int oom;
} cbuf;

static void cb_printf(cbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cb_printf(cbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    char tmp[1];
    int k = vsnprintf(tmp, 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->n + (size_t)k + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static void fmt_shape(char *buf, size_t cap, int nd, const int64_t *sh) {
    size_t o = 0;
    buf[0] = 0;
    for (int d = 0; d < nd && o < cap; d++) {
        int k = snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "", (long long)sh[d]);
        if (k < 0) break;
        o += (size_t)k;
    }
}

/* channel_mult as "1,1,2" (%g: the 512 default's 0.5 shows as 0.5) */
static void fmt_mult(char *buf, size_t cap, const adm_config *c) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < c->n_levels && o < cap; i++) {
        int k = snprintf(buf + o, cap - o, "%s%g", i ? "," : "", c->channel_mult[i]);
        if (k < 0) break;
        o += (size_t)k;
    }
}

/* attention_resolutions as "16,8": image_size >> level for each attention level */
static void fmt_res(char *buf, size_t cap, const adm_config *c) {
    size_t o = 0;
    buf[0] = 0;
    int first = 1;
    for (int i = 0; i < c->n_levels && o < cap; i++) {
        if (!c->attn_level[i]) continue;
        int k = snprintf(buf + o, cap - o, "%s%d", first ? "" : ",", c->image_size >> i);
        if (k < 0) break;
        o += (size_t)k;
        first = 0;
    }
}

/* create_model's channel_mult for channel_mult "": the count, or 0 if none */
static int default_mult(int image_size, double m[ADM_MAX_LEVELS]) {
    static const struct {
        int size, n;
        double m[7];
    } d[] = {
        {512, 7, {0.5, 1, 1, 2, 2, 4, 4}},
        {256, 6, {1, 1, 2, 2, 4, 4}},
        {128, 5, {1, 1, 2, 3, 4}},
        {64, 4, {1, 2, 3, 4}},
        {32, 4, {1, 2, 2, 2}},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i].size == image_size) {
            for (int k = 0; k < d[i].n; k++) m[k] = d[i].m[k];
            return d[i].n;
        }
    return 0;
}

/* int(mult * model_ch), as UNetModel computes a level's channels */
static int level_channels(double mult, int model_ch) { return (int)floor(mult * (double)model_ch); }

/* Index of the first ResBlock of level i in input_blocks / output_blocks. */
static int in_index(const adm_config *c, int level) { return 1 + level * (c->num_res_blocks + 1); }
static int out_index(const adm_config *c, int level) { return (c->n_levels - 1 - level) * (c->num_res_blocks + 1); }

int adm_heads(const adm_config *c, int ch, int upsample) {
    if (c->num_head_channels != -1) return c->num_head_channels > 0 ? ch / c->num_head_channels : 0;
    if (upsample && c->num_heads_upsample != -1) return c->num_heads_upsample;
    return c->num_heads;
}

/* ======================================================================== */
/* Validation                                                               */
/* ======================================================================== */

/* How fields are named in messages: config.json keys, or flags with where
 * their values came from. */
typedef struct vctx {
    const char *path;      /* named first in every message                  */
    int json;              /* 1: "key 'x'"                                   */
    const char *src;       /* else "'x' (src)", or "'x'" when NULL           */
    const char *src_size;  /* image_size's source when it differs from src   */
    const char *src_heads; /* the head flags' source when it differs         */
} vctx;

static const char *lab(const vctx *v, const char *flag, char *buf, size_t cap) {
    if (v->json) {
        snprintf(buf, cap, "key '%s'", flag);
        return buf;
    }
    const char *s = v->src;
    if (strcmp(flag, "image_size") == 0 && v->src_size) s = v->src_size;
    if (strncmp(flag, "num_head", 8) == 0 && v->src_heads) s = v->src_heads;
    if (s) snprintf(buf, cap, "'%s' (%s)", flag, s);
    else snprintf(buf, cap, "'%s'", flag);
    return buf;
}
#define LAB(flag) lab(v, (flag), lb, sizeof lb)
#define LAB2(flag) lab(v, (flag), lb2, sizeof lb2)

/* One attention block (the first of its level): heads divide the channels,
 * and the score matrices fit in memory. */
static loco_status check_attention(const adm_config *c, const vctx *v, const char *block, int ch, int level,
                                   int upsample) {
    char lb[160];
    const char *p = v->path;
    const char *flag = "num_head_channels";
    int div = c->num_head_channels;
    if (div == -1) {
        flag = upsample && c->num_heads_upsample != -1 ? "num_heads_upsample" : "num_heads";
        div = upsample && c->num_heads_upsample != -1 ? c->num_heads_upsample : c->num_heads;
    }
    if (div < 1 || ch % div)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d does not divide the %d channels of the attention block %s",
                         p, LAB(flag), div, ch, block);
    int heads = adm_heads(c, ch, upsample);
    int side = c->image_size >> level;
    size_t pos = (size_t)side * (size_t)side, floats;
    if (!loco_mul_ok(pos, pos, &floats) || !loco_mul_ok(floats, (size_t)heads, &floats) ||
        floats > LOCO_MAX_ALLOC / sizeof(float))
        return loco_fail(LOCO_E_NOMEM,
                         "%s: the attention block %s (%d head(s) over %dx%d positions) needs more than %zu bytes of "
                         "scores; %s = %d is too large for it",
                         p, block, heads, side, side, (size_t)LOCO_MAX_ALLOC, LAB("image_size"), c->image_size);
    return LOCO_OK;
}

static loco_status validate(const adm_config *c, const vctx *v) {
    char lb[160], lb2[160];
    const char *p = v->path;
    const int L = c->n_levels;
    if (L < 1 || L > ADM_MAX_LEVELS)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s has %d levels (1..%d supported)", p, LAB("channel_mult"), L,
                         ADM_MAX_LEVELS);
    if (c->image_size < 1 || c->image_size > ADM_MAX_IMAGE)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d is outside the supported range [1, %d]", p,
                         LAB("image_size"), c->image_size, ADM_MAX_IMAGE);
    if (c->image_size % (1 << (L - 1)))
        return loco_fail(LOCO_E_UNSUPPORTED,
                         "%s: %s = %d must be divisible by %d: the %d levels of %s halve it %d time(s)", p,
                         LAB("image_size"), c->image_size, 1 << (L - 1), L, LAB2("channel_mult"), L - 1);
    if (c->model_ch < 2 || c->model_ch > ADM_MAX_CH || c->model_ch % 2)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d must be an even number in [2, %d]", p, LAB("num_channels"),
                         c->model_ch, ADM_MAX_CH);
    if (c->in_ch != 3)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d is not supported (create_model always uses 3)", p,
                         LAB("in_channels"), c->in_ch);
    const struct {
        const char *name;
        int v;
    } bools[] = {{"learn_sigma", c->learn_sigma},
                 {"use_scale_shift_norm", c->use_scale_shift_norm},
                 {"resblock_updown", c->resblock_updown},
                 {"use_new_attention_order", c->use_new_attention_order}};
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++)
        if (bools[i].v != 0 && bools[i].v != 1)
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: %s = %d must be 0 or 1", p, LAB(bools[i].name), bools[i].v);
    if (c->out_ch != (c->learn_sigma ? 6 : 3))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d does not match %s = %s (%d)", p, LAB("out_channels"),
                         c->out_ch, LAB2("learn_sigma"), c->learn_sigma ? "true" : "false", c->learn_sigma ? 6 : 3);
    if (c->num_res_blocks < 1 || c->num_res_blocks > ADM_MAX_RES_BLOCKS)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d is outside the supported range [1, %d]", p,
                         LAB("num_res_blocks"), c->num_res_blocks, ADM_MAX_RES_BLOCKS);
    for (int i = 0; i < L; i++) {
        double m = c->channel_mult[i];
        if (!(m > 0 && m <= ADM_MAX_MULT))
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s entry %d = %g is outside (0, %d]", p, LAB("channel_mult"), i,
                             m, ADM_MAX_MULT);
        double want = floor(m * (double)c->model_ch);
        int ch = c->level_ch[i];
        if ((double)ch != want)
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: level %d has %d channels, not int(%g x %d) = %.0f", p, i,
                             ch, m, c->model_ch, want);
        if (ch < ADM_GROUPS || ch > ADM_MAX_CH || ch % ADM_GROUPS)
            return loco_fail(LOCO_E_UNSUPPORTED,
                             "%s: level %d has %d channels (%s entry %d = %g times %s = %d): a multiple of %d in "
                             "[%d, %d] is needed (GroupNorm's %d groups)",
                             p, i, ch, LAB("channel_mult"), i, m, LAB2("num_channels"), c->model_ch, ADM_GROUPS,
                             ADM_GROUPS, ADM_MAX_CH, ADM_GROUPS);
        if (c->attn_level[i] != 0 && c->attn_level[i] != 1)
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: attn_level[%d] = %d must be 0 or 1", p, i,
                             c->attn_level[i]);
    }
    for (int i = L; i < ADM_MAX_LEVELS; i++)
        if (c->attn_level[i])
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: attn_level[%d] is set beyond the %d levels", p, i, L);
    if (c->use_new_attention_order)
        return loco_fail(LOCO_E_UNSUPPORTED,
                         "%s: %s = true is not supported yet (only the legacy QKV order of QKVAttentionLegacy)", p,
                         LAB("use_new_attention_order"));
    const struct {
        const char *name;
        int v;
    } heads[] = {{"num_head_channels", c->num_head_channels},
                 {"num_heads", c->num_heads},
                 {"num_heads_upsample", c->num_heads_upsample}};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++)
        if (heads[i].v != -1 && !(heads[i].v >= 1 && heads[i].v <= ADM_MAX_CH))
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d must be -1 (unset) or in [1, %d]", p,
                             LAB(heads[i].name), heads[i].v, ADM_MAX_CH);
    if (c->num_head_channels == -1 && c->num_heads == -1)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s and %s are both -1: one of them must give the heads", p,
                         LAB("num_heads"), LAB2("num_head_channels"));
    if (c->diffusion_steps != 1000)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s = %d is not supported yet (only 1000)", p,
                         LAB("diffusion_steps"), c->diffusion_steps);
    /* attention blocks: every block of a level has the level's channels */
    char block[64];
    loco_status s;
    for (int i = 0; i < L; i++) {
        if (!c->attn_level[i]) continue;
        snprintf(block, sizeof block, "input_blocks.%d.1", in_index(c, i));
        if ((s = check_attention(c, v, block, c->level_ch[i], i, 0))) return s;
        snprintf(block, sizeof block, "output_blocks.%d.1", out_index(c, i));
        if ((s = check_attention(c, v, block, c->level_ch[i], i, 1))) return s;
    }
    return check_attention(c, v, "middle_block.1", c->level_ch[L - 1], L - 1, 0);
}

loco_status adm_config_validate(const adm_config *c) {
    if (!c) return loco_fail(LOCO_E_INVALID_ARGUMENT, "adm_config_validate: NULL argument");
    vctx v = {"ADM config", 0, NULL, NULL, NULL};
    return validate(c, &v);
}

/* ======================================================================== */
/* Presets                                                                  */
/* ======================================================================== */

loco_status adm_config_preset(adm_config *c, const char *name) {
    if (!c) return loco_fail(LOCO_E_INVALID_ARGUMENT, "adm_config_preset: NULL argument");
    memset(c, 0, sizeof *c);
    if (!name || strcmp(name, "p2") != 0)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "unknown ADM preset '%s' (known: p2)", name ? name : "(null)");
    c->image_size = 256;
    c->in_ch = 3;
    c->model_ch = 128;
    c->out_ch = 6;
    c->num_res_blocks = 1;
    c->n_levels = default_mult(256, c->channel_mult);
    for (int i = 0; i < c->n_levels; i++) c->level_ch[i] = level_channels(c->channel_mult[i], c->model_ch);
    c->attn_level[4] = 1; /* attention_resolutions "16": 256 / 16 = 2^4 */
    c->num_heads = 4;     /* model_and_diffusion_defaults; unused with num_head_channels */
    c->num_head_channels = 64;
    c->num_heads_upsample = -1;
    c->learn_sigma = 1;
    c->use_scale_shift_norm = 1;
    c->resblock_updown = 1;
    c->use_new_attention_order = 0;
    c->diffusion_steps = 1000;
    return LOCO_OK;
}

/* ======================================================================== */
/* Parameter list                                                           */
/* ======================================================================== */

typedef struct plist {
    adm_param *p;
    size_t n, cap;
    int oom;
} plist;

/* Appends prefix + "." + suffix with the given shape (ndim = number of dims
 * given, the rest -1). */
static void padd(plist *l, const char *prefix, const char *suffix, int nd, int64_t a, int64_t b, int64_t c,
                 int64_t d) {
    if (l->oom) return;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        adm_param *np = realloc(l->p, nc * sizeof *np);
        if (!np) {
            l->oom = 1;
            return;
        }
        l->p = np;
        l->cap = nc;
    }
    adm_param *q = &l->p[l->n++];
    memset(q, 0, sizeof *q);
    /* bounded: the longest is "output_blocks.519.2.skip_connection.weight" */
    snprintf(q->name, sizeof q->name, "%s.%s", prefix, suffix);
    q->ndim = nd;
    const int64_t s[4] = {a, b, c, d};
    for (int k = 0; k < nd; k++) q->shape[k] = s[k];
}

static void p_linear(plist *l, const char *pre, int64_t in, int64_t out) {
    padd(l, pre, "weight", 2, out, in, 0, 0);
    padd(l, pre, "bias", 1, out, 0, 0, 0);
}

static void p_conv(plist *l, const char *pre, int64_t in, int64_t out, int k) {
    padd(l, pre, "weight", 4, out, in, k, k);
    padd(l, pre, "bias", 1, out, 0, 0, 0);
}

static void p_norm(plist *l, const char *pre, int64_t ch) {
    padd(l, pre, "weight", 1, ch, 0, 0, 0);
    padd(l, pre, "bias", 1, ch, 0, 0, 0);
}

/* ResBlock(cin -> cout): in_layers (GroupNorm, SiLU, conv3), emb_layers
 * (SiLU, Linear), out_layers (GroupNorm, SiLU, Dropout, conv3),
 * skip_connection (1x1 conv) only when cin != cout. */
static void p_resblock(plist *l, const adm_config *c, const char *pre, int64_t cin, int64_t cout) {
    char b[80];
    snprintf(b, sizeof b, "%s.in_layers.0", pre);
    p_norm(l, b, cin);
    snprintf(b, sizeof b, "%s.in_layers.2", pre);
    p_conv(l, b, cin, cout, 3);
    snprintf(b, sizeof b, "%s.emb_layers.1", pre);
    p_linear(l, b, 4 * (int64_t)c->model_ch, c->use_scale_shift_norm ? 2 * cout : cout);
    snprintf(b, sizeof b, "%s.out_layers.0", pre);
    p_norm(l, b, cout);
    snprintf(b, sizeof b, "%s.out_layers.3", pre);
    p_conv(l, b, cout, cout, 3);
    if (cin != cout) {
        snprintf(b, sizeof b, "%s.skip_connection", pre);
        p_conv(l, b, cin, cout, 1);
    }
}

/* AttentionBlock(ch): norm, qkv (Conv1d ch -> 3ch), proj_out (Conv1d). */
static void p_attention(plist *l, const char *pre, int64_t ch) {
    char b[80];
    snprintf(b, sizeof b, "%s.norm", pre);
    p_norm(l, b, ch);
    snprintf(b, sizeof b, "%s.qkv", pre);
    padd(l, b, "weight", 3, 3 * ch, ch, 1, 0);
    padd(l, b, "bias", 1, 3 * ch, 0, 0, 0);
    snprintf(b, sizeof b, "%s.proj_out", pre);
    padd(l, b, "weight", 3, ch, ch, 1, 0);
    padd(l, b, "bias", 1, ch, 0, 0, 0);
}

/* The list for a validated config. */
static loco_status build_params(const adm_config *c, plist *l) {
    const int64_t C = c->model_ch, E = 4 * C;
    const int L = c->n_levels, R = c->num_res_blocks;
    char pre[64];
    p_linear(l, "time_embed.0", C, E);
    p_linear(l, "time_embed.2", E, E);
    int64_t ch = c->level_ch[0];
    p_conv(l, "input_blocks.0.0", c->in_ch, ch, 3);
    /* channels of every input_blocks output: the skips, popped in reverse */
    int64_t chans[ADM_MAX_OUT_ENTRIES + 1];
    int nch = 0, k = 1;
    chans[nch++] = ch;
    for (int i = 0; i < L; i++) {
        for (int r = 0; r < R; r++, k++) {
            snprintf(pre, sizeof pre, "input_blocks.%d.0", k);
            p_resblock(l, c, pre, ch, c->level_ch[i]);
            ch = c->level_ch[i];
            if (c->attn_level[i]) {
                snprintf(pre, sizeof pre, "input_blocks.%d.1", k);
                p_attention(l, pre, ch);
            }
            chans[nch++] = ch;
        }
        if (i != L - 1) {
            snprintf(pre, sizeof pre, "input_blocks.%d.0", k);
            if (c->resblock_updown) p_resblock(l, c, pre, ch, ch); /* down=True: no skip_connection */
            else {
                snprintf(pre, sizeof pre, "input_blocks.%d.0.op", k);
                p_conv(l, pre, ch, ch, 3);
            }
            chans[nch++] = ch;
            k++;
        }
    }
    p_resblock(l, c, "middle_block.0", ch, ch);
    p_attention(l, "middle_block.1", ch);
    p_resblock(l, c, "middle_block.2", ch, ch);
    k = 0;
    for (int i = L - 1; i >= 0; i--)
        for (int r = 0; r <= R; r++, k++) {
            int64_t ich = chans[--nch];
            snprintf(pre, sizeof pre, "output_blocks.%d.0", k);
            p_resblock(l, c, pre, ch + ich, c->level_ch[i]);
            ch = c->level_ch[i];
            int j = 1;
            if (c->attn_level[i]) {
                snprintf(pre, sizeof pre, "output_blocks.%d.1", k);
                p_attention(l, pre, ch);
                j = 2;
            }
            if (i > 0 && r == R) {
                snprintf(pre, sizeof pre, "output_blocks.%d.%d", k, j);
                if (c->resblock_updown) p_resblock(l, c, pre, ch, ch); /* up=True */
                else {
                    snprintf(pre, sizeof pre, "output_blocks.%d.%d.conv", k, j);
                    p_conv(l, pre, ch, ch, 3);
                }
            }
        }
    p_norm(l, "out.0", ch);
    p_conv(l, "out.2", c->level_ch[0], c->out_ch, 3);
    if (l->oom) return loco_fail(LOCO_E_NOMEM, "out of memory for the ADM parameter list");
    return LOCO_OK;
}

static loco_status params_checked(const adm_config *c, const vctx *v, adm_param **out, size_t *n) {
    *out = NULL;
    *n = 0;
    loco_status s = validate(c, v);
    if (s) return s;
    plist l = {0};
    if ((s = build_params(c, &l))) {
        free(l.p);
        return s;
    }
    *out = l.p;
    *n = l.n;
    return LOCO_OK;
}

loco_status adm_config_params(const adm_config *c, adm_param **out, size_t *n) {
    if (!c || !out || !n) return loco_fail(LOCO_E_INVALID_ARGUMENT, "adm_config_params: NULL argument");
    vctx v = {"ADM config", 0, NULL, NULL, NULL};
    return params_checked(c, &v, out, n);
}

/* ======================================================================== */
/* State dicts: lookup by name                                              */
/* ======================================================================== */

typedef struct sd_ent {
    const char *name;
    size_t i;
} sd_ent;

typedef struct sd {
    size_t n;
    const char *const *names;
    const int *ndim;
    const int64_t (*shape)[4];
    sd_ent *ent; /* sorted by name; owned */
} sd;

static int cmp_ent(const void *a, const void *b) {
    return strcmp(((const sd_ent *)a)->name, ((const sd_ent *)b)->name);
}

static loco_status sd_open(sd *s, size_t n, const char *const *names, const int *ndim, const int64_t (*shape)[4],
                           const char *what) {
    memset(s, 0, sizeof *s);
    if (n && (!names || !ndim || !shape))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: NULL tensor list", what);
    if (n == 0) return loco_fail(LOCO_E_FORMAT, "%s: no tensors", what);
    for (size_t i = 0; i < n; i++) {
        if (!names[i]) return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: tensor %zu has no name", what, i);
        if (ndim[i] < 0 || ndim[i] > 4)
            return loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has %d dimensions (a UNetModel's have 1 to 4)", what,
                             names[i], ndim[i]);
        for (int d = 0; d < ndim[i]; d++)
            if (shape[i][d] < 0)
                return loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has a negative dimension", what, names[i]);
    }
    s->ent = malloc(n * sizeof *s->ent);
    if (!s->ent) return loco_fail(LOCO_E_NOMEM, "%s: out of memory for %zu tensor names", what, n);
    for (size_t i = 0; i < n; i++) s->ent[i] = (sd_ent){names[i], i};
    qsort(s->ent, n, sizeof *s->ent, cmp_ent);
    for (size_t i = 1; i < n; i++)
        if (strcmp(s->ent[i - 1].name, s->ent[i].name) == 0) {
            loco_status st = loco_fail(LOCO_E_FORMAT, "%s: tensor '%s' appears twice", what, s->ent[i].name);
            free(s->ent);
            s->ent = NULL;
            return st;
        }
    s->n = n;
    s->names = names;
    s->ndim = ndim;
    s->shape = shape;
    return LOCO_OK;
}

/* First entry whose name is >= key. */
static size_t sd_lower(const sd *s, const char *key) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(s->ent[mid].name, key) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The tensor's index in the caller's arrays, or -1. */
static long sd_find(const sd *s, const char *name) {
    size_t k = sd_lower(s, name);
    return k < s->n && strcmp(s->ent[k].name, name) == 0 ? (long)s->ent[k].i : -1;
}

static int sd_has_prefix(const sd *s, const char *prefix) {
    size_t k = sd_lower(s, prefix);
    return k < s->n && strncmp(s->ent[k].name, prefix, strlen(prefix)) == 0;
}

enum { MOD_NONE, MOD_RES, MOD_ATTN, MOD_CONV, MOD_OP, MOD_OTHER };

/* What the module under prefix ("output_blocks.3.2.") holds, by its tensors. */
static int mod_kind(const sd *s, const char *prefix) {
    if (!sd_has_prefix(s, prefix)) return MOD_NONE;
    static const struct {
        const char *sub;
        int kind;
    } subs[] = {{"in_layers.", MOD_RES}, {"emb_layers.", MOD_RES}, {"out_layers.", MOD_RES},
                {"qkv.", MOD_ATTN},      {"proj_out.", MOD_ATTN},  {"norm.", MOD_ATTN},
                {"conv.", MOD_CONV},     {"op.", MOD_OP}};
    char b[128];
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(b, sizeof b, "%s%s", prefix, subs[i].sub);
        if (sd_has_prefix(s, b)) return subs[i].kind;
    }
    return MOD_OTHER;
}

/* The shape of a tensor inference needs: it must exist with nd dimensions. */
static loco_status sd_need(const sd *s, const char *name, int nd, const char *why, const char *what,
                           const int64_t **shape) {
    long i = sd_find(s, name);
    if (i < 0) return loco_fail(LOCO_E_NOT_FOUND, "%s: tensor '%s' is missing (needed to infer %s)", what, name, why);
    if (s->ndim[i] != nd) {
        char sh[96];
        fmt_shape(sh, sizeof sh, s->ndim[i], s->shape[i]);
        return loco_fail(LOCO_E_SHAPE, "%s: tensor '%s' has shape [%s]: %d dimensions are expected", what, name, sh,
                         nd);
    }
    *shape = s->shape[i];
    return LOCO_OK;
}

/* ======================================================================== */
/* The exact check                                                          */
/* ======================================================================== */

#define CHECK_NAMES 3 /* names quoted per kind of problem */

/* whose: "the config" or "the inferred configuration"; tail (or NULL) is
 * appended in brackets (the inferred configuration's summary). */
static loco_status check_tensors(const adm_config *c, const vctx *v, const sd *s, const char *what, const char *whose,
                                 const char *tail) {
    adm_param *P;
    size_t np;
    loco_status st = params_checked(c, v, &P, &np);
    if (st) return st;
    unsigned char *used = calloc(s->n, 1);
    if (!used) {
        free(P);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory", what);
    }
    cbuf miss = {0}, shp = {0}, extra = {0};
    size_t n_miss = 0, n_shape = 0, n_extra = 0;
    const adm_param *first_miss = NULL;
    cbuf first_shape = {0}; /* "tensor 'x' has shape [..] but .. needs [..]" */
    for (size_t k = 0; k < np; k++) {
        const adm_param *p = &P[k];
        long i = sd_find(s, p->name);
        if (i < 0) {
            if (!n_miss) first_miss = p;
            else if (n_miss <= CHECK_NAMES) cb_printf(&miss, "%s'%s'", n_miss > 1 ? ", " : "", p->name);
            n_miss++;
            continue;
        }
        used[i] = 1;
        int same = s->ndim[i] == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = s->shape[i][d] == p->shape[d];
        if (same) continue;
        char got[96], want[96];
        fmt_shape(got, sizeof got, s->ndim[i], s->shape[i]);
        fmt_shape(want, sizeof want, p->ndim, p->shape);
        if (!n_shape)
            cb_printf(&first_shape, "tensor '%s' has shape [%s] but %s needs [%s]", p->name, got, whose, want);
        else if (n_shape <= CHECK_NAMES)
            cb_printf(&shp, "%s'%s' [%s], needs [%s]", n_shape > 1 ? "; " : "", p->name, got, want);
        n_shape++;
    }
    const char *first_extra = NULL;
    for (size_t k = 0; k < s->n; k++) {
        size_t i = s->ent[k].i; /* in name order: messages do not depend on the file's order */
        if (used[i]) continue;
        if (!n_extra) first_extra = s->names[i];
        else if (n_extra <= CHECK_NAMES) cb_printf(&extra, "%s'%s'", n_extra > 1 ? ", " : "", s->names[i]);
        n_extra++;
    }
    free(used);
    if (!n_miss && !n_shape && !n_extra) {
        free(P);
        return LOCO_OK;
    }
    /* one message: the first problem (missing, then shape, then unexpected),
     * then how many of each kind, with the first few names */
    cbuf m = {0};
    if (n_miss) {
        st = LOCO_E_NOT_FOUND;
        cb_printf(&m, "%s: tensor '%s' is missing (%s needs it)", what, first_miss->name, whose);
    } else if (n_shape) {
        st = LOCO_E_SHAPE;
        cb_printf(&m, "%s: %s", what, first_shape.s ? first_shape.s : "a tensor has the wrong shape");
    } else {
        st = LOCO_E_FORMAT;
        cb_printf(&m, "%s: unexpected tensor '%s' (not part of the model %s describes)", what, first_extra, whose);
    }
    if (n_miss > 1)
        cb_printf(&m, "; %zu more missing: %s%s", n_miss - 1, miss.s ? miss.s : "", n_miss - 1 > CHECK_NAMES ? ", ..." : "");
    if (n_shape > (st == LOCO_E_SHAPE ? 1u : 0u)) {
        if (st == LOCO_E_SHAPE)
            cb_printf(&m, "; %zu more of the wrong shape: %s%s", n_shape - 1, shp.s ? shp.s : "",
                      n_shape - 1 > CHECK_NAMES ? "; ..." : "");
        else
            cb_printf(&m, "; %zu of the wrong shape, the first %s", n_shape, first_shape.s ? first_shape.s : "?");
    }
    if (n_extra > (st == LOCO_E_FORMAT ? 1u : 0u)) {
        if (st == LOCO_E_FORMAT)
            cb_printf(&m, "; %zu more unexpected: %s%s", n_extra - 1, extra.s ? extra.s : "",
                      n_extra - 1 > CHECK_NAMES ? ", ..." : "");
        else
            cb_printf(&m, "; %zu unexpected tensor(s), the first '%s'", n_extra, first_extra);
    }
    if (tail) cb_printf(&m, " [%s]", tail);
    st = m.oom || !m.s ? loco_fail(st, "%s: the tensors do not match %s", what, whose) : loco_fail(st, "%s", m.s);
    free(m.s);
    free(first_shape.s);
    free(miss.s);
    free(shp.s);
    free(extra.s);
    free(P);
    return st;
}

loco_status adm_config_check_tensors(const adm_config *c, size_t n, const char *const *names, const int *ndim,
                                     const int64_t (*shape)[4], const char *what) {
    if (!what) what = "weights";
    if (!c) return loco_fail(LOCO_E_INVALID_ARGUMENT, "adm_config_check_tensors: NULL config");
    sd s;
    loco_status st = sd_open(&s, n, names, ndim, shape, what);
    if (st) return st;
    vctx v = {what, 0, NULL, NULL, NULL};
    st = check_tensors(c, &v, &s, what, "the config", NULL);
    free(s.ent);
    return st;
}

/* ======================================================================== */
/* config.json                                                              */
/* ======================================================================== */

typedef struct jctx {
    const cJSON *root;
    const char *path;
} jctx;

/* null counts as absent */
static const cJSON *jget(const jctx *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static loco_status jmissing(const jctx *j, const char *key, const char *why) {
    return loco_fail(LOCO_E_FORMAT, "%s: key '%s' is missing%s", j->path, key, why ? why : "");
}

/* An integer key in [lo, hi]; absent: def, or an error when why_required. */
static loco_status jint(const jctx *j, const char *key, const char *why_required, int def, int lo, int hi, int *out) {
    const cJSON *v = jget(j, key);
    if (!v) {
        if (why_required) return jmissing(j, key, why_required);
        *out = def;
        return LOCO_OK;
    }
    /* integral and in range before the cast (NaN fails both tests) */
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be an integer", j->path, key);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %.17g is outside the supported range [%d, %d]", j->path,
                         key, v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return LOCO_OK;
}

static loco_status jbool(const jctx *j, const char *key, const char *why_required, int def, int *out) {
    const cJSON *v = jget(j, key);
    if (!v) {
        if (why_required) return jmissing(j, key, why_required);
        *out = def;
        return LOCO_OK;
    }
    if (!cJSON_IsBool(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be true or false", j->path, key);
    *out = cJSON_IsTrue(v);
    return LOCO_OK;
}

static loco_status jstr(const jctx *j, const char *key, const char *why_required, const char *def, const char **out) {
    const cJSON *v = jget(j, key);
    if (!v) {
        if (why_required) return jmissing(j, key, why_required);
        *out = def;
        return LOCO_OK;
    }
    if (!cJSON_IsString(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be a string", j->path, key);
    *out = v->valuestring;
    return LOCO_OK;
}

/* A flag that must be false when present. */
static loco_status jfalse(const jctx *j, const char *key, const char *why) {
    int b = 0;
    loco_status s = jbool(j, key, NULL, 0, &b);
    if (s) return s;
    if (b) return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = true is not supported (%s)", j->path, key, why);
    return LOCO_OK;
}

/* "a,b,c" of whole numbers as Python's int() reads each entry (spaces around
 * an entry allowed; signs and underscores are not). Returns the count, -1
 * with *bad and *bad_len (the offending entry) when an entry is not a number
 * in [1, 999999999], -2 when there are more than max entries. */
static int parse_list(const char *s, long *vals, int max, const char **bad, int *bad_len) {
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *start = p, *e = p;
        while (*e && *e != ',') e++;
        const char *a = start, *b = e;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        long v = 0;
        int ok = a < b && b - a <= 9;
        for (const char *q = a; ok && q < b; q++) {
            if (*q < '0' || *q > '9') ok = 0;
            else v = v * 10 + (*q - '0');
        }
        if (!ok || v < 1) {
            *bad = start;
            *bad_len = (int)(e - start);
            return -1;
        }
        if (n == max) return -2;
        vals[n++] = v;
        if (!*e) return n;
        p = e + 1;
    }
}

static const char *const known_keys[] = {
    "image_size", "num_channels", "num_res_blocks", "channel_mult", "attention_resolutions", "num_heads",
    "num_head_channels", "num_heads_upsample", "learn_sigma", "use_scale_shift_norm", "resblock_updown",
    "use_new_attention_order", "dropout", "class_cond", "use_fp16", "use_checkpoint", "diffusion_steps",
    "noise_schedule", "predict_xstart", "rescale_timesteps", "use_kl", "rescale_learned_sigmas",
    "timestep_respacing",
};

static const char DIFFERING_DEFAULTS[] =
    " (no default: guided-diffusion's create_model and its scripts' model_and_diffusion_defaults disagree)";

static loco_status parse_root(adm_config *c, const cJSON *root, const char *path) {
    jctx j = {root, path};
    loco_status s;
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((s = (expr)) != LOCO_OK) return s;                                                                         \
    } while (0)
    const cJSON *cls = jget(&j, "_class_name");
    if (cls && (!cJSON_IsString(cls) || strcmp(cls->valuestring, "ADMUNetModel") != 0))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '_class_name' = %s%.64s%s is not supported (only \"ADMUNetModel\")",
                         path, cJSON_IsString(cls) ? "\"" : "", cJSON_IsString(cls) ? cls->valuestring : "(not a string)",
                         cJSON_IsString(cls) ? "\"" : "");
    /* unknown keys: warn, do not fail */
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (it->string[0] == '_') continue;
        size_t k = 0;
        for (; k < sizeof known_keys / sizeof known_keys[0]; k++)
            if (strcmp(it->string, known_keys[k]) == 0) break;
        if (k == sizeof known_keys / sizeof known_keys[0])
            loco_log(LOCO_LOG_WARN, "%s: unknown key '%s' ignored", path, it->string);
    }
    /* unsupported, or changing what the model's output means */
    int b = 0;
    TRY(jbool(&j, "class_cond", NULL, 0, &b));
    if (b)
        return loco_fail(LOCO_E_UNSUPPORTED,
                         "%s: key 'class_cond' = true is not supported (class-conditional models: LOCO Edit runs "
                         "unconditional ones)", path);
    TRY(jfalse(&j, "predict_xstart", "the model must predict eps"));
    TRY(jfalse(&j, "rescale_timesteps", "the model must see the raw timestep"));
    /* ignored, type-checked */
    TRY(jbool(&j, "use_fp16", NULL, 0, &b));
    TRY(jbool(&j, "use_checkpoint", NULL, 0, &b));
    TRY(jbool(&j, "use_kl", NULL, 0, &b));
    TRY(jbool(&j, "rescale_learned_sigmas", NULL, 0, &b));
    {
        const char *ts;
        TRY(jstr(&j, "timestep_respacing", NULL, "", &ts));
        const cJSON *d = jget(&j, "dropout");
        if (d && !cJSON_IsNumber(d)) return loco_fail(LOCO_E_FORMAT, "%s: key 'dropout' must be a number", path);
        if (d && !(d->valuedouble >= 0 && d->valuedouble <= 1))
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'dropout' = %.17g is outside [0, 1]", path, d->valuedouble);
    }
    /* the model */
    TRY(jint(&j, "image_size", "", 0, 1, ADM_MAX_IMAGE, &c->image_size));
    TRY(jint(&j, "num_channels", "", 0, 1, ADM_MAX_CH, &c->model_ch));
    if (c->model_ch % 2)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'num_channels' = %d must be even (the timestep embedding's "
                         "cos/sin halves)", path, c->model_ch);
    TRY(jint(&j, "num_res_blocks", "", 0, 1, ADM_MAX_RES_BLOCKS, &c->num_res_blocks));
    c->in_ch = 3;
    TRY(jbool(&j, "learn_sigma", NULL, 0, &c->learn_sigma));
    c->out_ch = c->learn_sigma ? 6 : 3;
    TRY(jbool(&j, "use_scale_shift_norm", DIFFERING_DEFAULTS, 0, &c->use_scale_shift_norm));
    TRY(jbool(&j, "resblock_updown", NULL, 0, &c->resblock_updown));
    TRY(jbool(&j, "use_new_attention_order", NULL, 0, &c->use_new_attention_order));
    if (c->use_new_attention_order)
        return loco_fail(LOCO_E_UNSUPPORTED,
                         "%s: key 'use_new_attention_order' = true is not supported yet (only the legacy QKV order)",
                         path);
    {
        const char *sched;
        TRY(jstr(&j, "noise_schedule", NULL, "linear", &sched));
        if (strcmp(sched, "linear") != 0)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'noise_schedule' = \"%.64s\" is not supported (only \"linear\")",
                             path, sched);
    }
    TRY(jint(&j, "diffusion_steps", NULL, 1000, 1, 1000000, &c->diffusion_steps));
    if (c->diffusion_steps != 1000)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'diffusion_steps' = %d is not supported yet (only 1000)", path,
                         c->diffusion_steps);
    /* channel_mult */
    {
        const char *cm;
        TRY(jstr(&j, "channel_mult", NULL, "", &cm));
        if (!cm[0]) {
            c->n_levels = default_mult(c->image_size, c->channel_mult);
            if (!c->n_levels)
                return loco_fail(LOCO_E_UNSUPPORTED,
                                 "%s: key 'channel_mult' = \"\" means create_model's default for image_size, and there "
                                 "is none for image_size %d (512, 256, 128, 64, 32): write channel_mult out",
                                 path, c->image_size);
        } else {
            long m[ADM_MAX_LEVELS];
            const char *bad = NULL;
            int bad_len = 0;
            int n = parse_list(cm, m, ADM_MAX_LEVELS, &bad, &bad_len);
            if (n == -2)
                return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'channel_mult' = \"%.64s\" has more than %d entries",
                                 path, cm, ADM_MAX_LEVELS);
            if (n < 0)
                return loco_fail(LOCO_E_FORMAT,
                                 "%s: key 'channel_mult' = \"%.64s\": entry '%.*s' is not a positive whole number",
                                 path, cm, bad_len > 32 ? 32 : bad_len, bad);
            c->n_levels = n;
            for (int i = 0; i < n; i++) {
                if (m[i] > ADM_MAX_MULT)
                    return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'channel_mult' entry %d = %ld is outside [1, %d]",
                                     path, i, m[i], ADM_MAX_MULT);
                c->channel_mult[i] = (double)m[i];
            }
        }
        for (int i = 0; i < c->n_levels; i++) c->level_ch[i] = level_channels(c->channel_mult[i], c->model_ch);
        /* before the resolutions are matched to levels (validate says it too) */
        if (c->image_size % (1 << (c->n_levels - 1)))
            return loco_fail(LOCO_E_UNSUPPORTED,
                             "%s: key 'image_size' = %d must be divisible by %d: the %d levels of key 'channel_mult' "
                             "halve it %d time(s)", path, c->image_size, 1 << (c->n_levels - 1), c->n_levels,
                             c->n_levels - 1);
    }
    /* attention_resolutions */
    {
        const char *ar;
        TRY(jstr(&j, "attention_resolutions", DIFFERING_DEFAULTS, "", &ar));
        if (ar[0]) {
            long r[ADM_MAX_RESOLUTIONS];
            const char *bad = NULL;
            int bad_len = 0;
            int n = parse_list(ar, r, ADM_MAX_RESOLUTIONS, &bad, &bad_len);
            if (n == -2)
                return loco_fail(LOCO_E_UNSUPPORTED, "%s: key 'attention_resolutions' = \"%.64s\" has more than %d "
                                 "entries", path, ar, ADM_MAX_RESOLUTIONS);
            if (n < 0)
                return loco_fail(LOCO_E_FORMAT,
                                 "%s: key 'attention_resolutions' = \"%.64s\": entry '%.*s' is not a positive whole "
                                 "number", path, ar, bad_len > 32 ? 32 : bad_len, bad);
            for (int i = 0; i < n; i++) {
                if (r[i] > c->image_size)
                    return loco_fail(LOCO_E_UNSUPPORTED,
                                     "%s: key 'attention_resolutions' entry %ld is larger than image_size %d", path,
                                     r[i], c->image_size);
                if (c->image_size % r[i])
                    return loco_fail(LOCO_E_UNSUPPORTED,
                                     "%s: key 'attention_resolutions' entry %ld does not divide image_size %d "
                                     "(guided-diffusion would use the downsampling factor image_size // %ld = %ld: "
                                     "write the resolution %ld instead)",
                                     path, r[i], c->image_size, r[i], c->image_size / r[i],
                                     c->image_size / (c->image_size / r[i]));
                long ds = c->image_size / r[i];
                int lvl = 0;
                while (lvl < c->n_levels && (1L << lvl) != ds) lvl++;
                if (lvl == c->n_levels)
                    loco_log(LOCO_LOG_WARN,
                             "%s: key 'attention_resolutions' entry %ld (downsampling factor %ld) matches none of the "
                             "%d levels: ignored, as guided-diffusion ignores it", path, r[i], ds, c->n_levels);
                else c->attn_level[lvl] = 1;
            }
        }
    }
    /* heads */
    TRY(jint(&j, "num_head_channels", NULL, -1, -1, ADM_MAX_CH, &c->num_head_channels));
    TRY(jint(&j, "num_heads", c->num_head_channels == -1 ? " (it gives the heads when num_head_channels is -1; "
                                                           "create_model defaults it to 1, the scripts to 4)" : NULL,
             -1, -1, ADM_MAX_CH, &c->num_heads));
    TRY(jint(&j, "num_heads_upsample", NULL, -1, -1, ADM_MAX_CH, &c->num_heads_upsample));
    static const char *const hk[3] = {"num_head_channels", "num_heads", "num_heads_upsample"};
    const int hv[3] = {c->num_head_channels, c->num_heads, c->num_heads_upsample};
    for (int i = 0; i < 3; i++)
        if (hv[i] == 0)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = 0 is not supported (-1 = unset, or a positive "
                             "number)", path, hk[i]);
#undef TRY
    vctx v = {path, 1, NULL, NULL, NULL};
    return validate(c, &v);
}

loco_status adm_config_parse(adm_config *c, const char *text, size_t len, const char *path) {
    if (!path) path = "config.json";
    if (!c || !text) return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: adm_config_parse: NULL argument", path);
    memset(c, 0, sizeof *c);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) return loco_fail(LOCO_E_FORMAT, "%s: not valid JSON (truncated or malformed)", path);
    loco_status s = LOCO_OK;
    if (!cJSON_IsObject(root)) s = loco_fail(LOCO_E_FORMAT, "%s: not a JSON object", path);
    for (const char *q = end; !s && q && q < text + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r')
            s = loco_fail(LOCO_E_FORMAT, "%s: unexpected text after the JSON object (at byte %zu)", path,
                          (size_t)(q - text));
    if (!s) {
        const char *dup = cfg_duplicate_key(root, &s, path);
        if (!s && dup) s = loco_fail(LOCO_E_FORMAT, "%s: key '%s' appears twice", path, dup);
    }
    if (!s) s = parse_root(c, root, path);
    cJSON_Delete(root);
    if (s) memset(c, 0, sizeof *c);
    return s;
}

/* ======================================================================== */
/* to_json                                                                  */
/* ======================================================================== */

loco_status adm_config_to_json(const adm_config *c, char **json) {
    if (!c || !json) return loco_fail(LOCO_E_INVALID_ARGUMENT, "adm_config_to_json: NULL argument");
    *json = NULL;
    adm_param *P;
    size_t np;
    loco_status s = adm_config_params(c, &P, &np);
    if (s) return s;
    int64_t total = 0;
    for (size_t k = 0; k < np; k++) total += adm_param_numel(&P[k]);
    /* channel_mult: whole multipliers written out, else the default's "" */
    int whole = 1;
    for (int i = 0; i < c->n_levels; i++) whole &= c->channel_mult[i] == floor(c->channel_mult[i]);
    char mult[160], res[160];
    if (whole) fmt_mult(mult, sizeof mult, c);
    else {
        double d[ADM_MAX_LEVELS];
        int nd = default_mult(c->image_size, d);
        int same = nd == c->n_levels;
        for (int i = 0; same && i < nd; i++) same = d[i] == c->channel_mult[i];
        if (!same) {
            free(P);
            return loco_fail(LOCO_E_UNSUPPORTED, "ADM config: channel_mult with fractions other than image_size %d's "
                             "default cannot be written as config.json's channel_mult", c->image_size);
        }
        mult[0] = 0;
    }
    fmt_res(res, sizeof res, c);
    cJSON *o = cJSON_CreateObject(), *d = cJSON_CreateObject(), *cm = cJSON_CreateArray(), *ads = cJSON_CreateArray(),
          *heads = cJSON_CreateObject();
    int ok = o && d && cm && ads && heads;
    if (ok) {
        ok &= cJSON_AddStringToObject(o, "_class_name", "ADMUNetModel") != NULL;
        ok &= cJSON_AddNumberToObject(o, "image_size", c->image_size) != NULL;
        ok &= cJSON_AddNumberToObject(o, "num_channels", c->model_ch) != NULL;
        ok &= cJSON_AddNumberToObject(o, "num_res_blocks", c->num_res_blocks) != NULL;
        ok &= cJSON_AddStringToObject(o, "channel_mult", mult) != NULL;
        ok &= cJSON_AddStringToObject(o, "attention_resolutions", res) != NULL;
        ok &= cJSON_AddNumberToObject(o, "num_heads", c->num_heads) != NULL;
        ok &= cJSON_AddNumberToObject(o, "num_head_channels", c->num_head_channels) != NULL;
        ok &= cJSON_AddNumberToObject(o, "num_heads_upsample", c->num_heads_upsample) != NULL;
        ok &= cJSON_AddBoolToObject(o, "learn_sigma", c->learn_sigma) != NULL;
        ok &= cJSON_AddBoolToObject(o, "use_scale_shift_norm", c->use_scale_shift_norm) != NULL;
        ok &= cJSON_AddBoolToObject(o, "resblock_updown", c->resblock_updown) != NULL;
        ok &= cJSON_AddBoolToObject(o, "use_new_attention_order", c->use_new_attention_order) != NULL;
        ok &= cJSON_AddNumberToObject(o, "dropout", 0) != NULL;
        ok &= cJSON_AddBoolToObject(o, "class_cond", 0) != NULL;
        ok &= cJSON_AddBoolToObject(o, "use_fp16", 0) != NULL;
        ok &= cJSON_AddBoolToObject(o, "use_checkpoint", 0) != NULL;
        ok &= cJSON_AddNumberToObject(o, "diffusion_steps", c->diffusion_steps) != NULL;
        ok &= cJSON_AddStringToObject(o, "noise_schedule", "linear") != NULL;
        for (int i = 0; ok && i < c->n_levels; i++) {
            cJSON *x = cJSON_CreateNumber(c->channel_mult[i]);
            if (!x || !cJSON_AddItemToArray(cm, x)) {
                cJSON_Delete(x);
                ok = 0;
            }
            if (!ok || !c->attn_level[i]) continue;
            x = cJSON_CreateNumber(1 << i);
            if (!x || !cJSON_AddItemToArray(ads, x)) {
                cJSON_Delete(x);
                ok = 0;
            }
        }
        for (size_t k = 0; ok && k < np; k++) {
            size_t ln = strlen(P[k].name);
            static const char qkv[] = ".qkv.weight";
            if (ln <= sizeof qkv - 1 || strcmp(P[k].name + ln - (sizeof qkv - 1), qkv) != 0) continue;
            char block[96];
            snprintf(block, sizeof block, "%.*s", (int)(ln - (sizeof qkv - 1)), P[k].name);
            int up = strncmp(block, "output_blocks.", 14) == 0;
            ok &= cJSON_AddNumberToObject(heads, block, adm_heads(c, (int)P[k].shape[1], up)) != NULL;
        }
        if (ok && cJSON_AddItemToObject(d, "channel_mult", cm)) cm = NULL; /* now owned by d */
        else ok = 0;
        if (ok && cJSON_AddItemToObject(d, "attention_ds", ads)) ads = NULL; /* now owned by d */
        else ok = 0;
        ok &= cJSON_AddNumberToObject(d, "in_channels", c->in_ch) != NULL;
        ok &= cJSON_AddNumberToObject(d, "out_channels", c->out_ch) != NULL;
        ok &= cJSON_AddNumberToObject(d, "model_channels", c->model_ch) != NULL;
        ok &= cJSON_AddNumberToObject(d, "time_embed_dim", 4 * c->model_ch) != NULL;
        ok &= cJSON_AddNumberToObject(d, "num_heads_upsample_effective",
                                      c->num_heads_upsample == -1 ? c->num_heads : c->num_heads_upsample) != NULL;
        ok &= cJSON_AddNumberToObject(d, "num_parameters", (double)total) != NULL;
        ok &= cJSON_AddNumberToObject(d, "num_tensors", (double)np) != NULL;
        if (ok && cJSON_AddItemToObject(d, "attention_heads", heads)) heads = NULL; /* now owned by d */
        else ok = 0;
        if (ok && cJSON_AddItemToObject(o, "_derived", d)) d = NULL; /* now owned by o */
        else ok = 0;
    }
    free(P);
    /* items not yet attached are deleted here (cJSON_Delete(NULL) is a no-op) */
    cJSON_Delete(cm);
    cJSON_Delete(ads);
    cJSON_Delete(heads);
    cJSON_Delete(d);
    char *text = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!text) return loco_fail(LOCO_E_NOMEM, "out of memory writing the ADM config as JSON");
    *json = strdup(text); /* the caller frees with free(), whatever cJSON's hooks are */
    cJSON_free(text);
    if (!*json) return loco_fail(LOCO_E_NOMEM, "out of memory writing the ADM config as JSON");
    return LOCO_OK;
}

/* ======================================================================== */
/* Inference from a state dict                                              */
/* ======================================================================== */

/* One line: "num_channels 32, channel_mult 1,1,2, ..." */
static void summary(char *buf, size_t cap, const adm_config *c) {
    char mult[160], res[160];
    fmt_mult(mult, sizeof mult, c);
    fmt_res(res, sizeof res, c);
    snprintf(buf, cap,
             "inferred: num_channels %d, channel_mult %s, num_res_blocks %d, attention_resolutions \"%s\" at "
             "image_size %d, learn_sigma %s, use_scale_shift_norm %s, resblock_updown %s",
             c->model_ch, mult, c->num_res_blocks, res, c->image_size, c->learn_sigma ? "true" : "false",
             c->use_scale_shift_norm ? "true" : "false", c->resblock_updown ? "true" : "false");
}

/* The hints alone: ranges and contradictions. pre/has_pre: the preset. */
static loco_status check_hints(const adm_hints *h, const char *what, adm_config *pre, int *has_pre) {
    *has_pre = 0;
    const struct {
        const char *name;
        int v, hi;
    } r[] = {{"image_size", h->image_size, ADM_MAX_IMAGE},
             {"head_channels", h->head_channels, ADM_MAX_CH},
             {"heads", h->heads, ADM_MAX_CH},
             {"heads_upsample", h->heads_upsample, ADM_MAX_CH}};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (r[i].v < 0 || r[i].v > r[i].hi)
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: hint %s = %d is outside [1, %d] (0 = not given)", what,
                             r[i].name, r[i].v, r[i].hi);
    if (h->head_channels && h->heads)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "%s: contradicting hints head_channels %d and heads %d: head_channels fixes the heads of "
                         "every attention block, give one of them", what, h->head_channels, h->heads);
    if (h->heads_upsample && !h->heads)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: hint heads_upsample %d needs the hint heads%s", what,
                         h->heads_upsample,
                         h->head_channels ? " (it contradicts head_channels, which fixes the heads of every block)" : "");
    if (!h->preset) return LOCO_OK;
    if (adm_config_preset(pre, h->preset))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: unknown preset '%.64s' (known: p2)", what, h->preset);
    *has_pre = 1;
    if (h->image_size && h->image_size != pre->image_size)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: hint image_size %d contradicts preset %s (image_size %d)", what,
                         h->image_size, h->preset, pre->image_size);
    if (h->head_channels && h->head_channels != pre->num_head_channels)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: hint head_channels %d contradicts preset %s (num_head_channels %d)",
                         what, h->head_channels, h->preset, pre->num_head_channels);
    if (h->heads && (pre->num_head_channels != -1 || h->heads != pre->num_heads))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: hint heads %d contradicts preset %s (num_head_channels %d)", what,
                         h->heads, h->preset, pre->num_head_channels);
    return LOCO_OK;
}

/* The structure the tensors determine; s and the hints' image_size known. */
/* a report line: the item, then why in parentheses (the format goes on) */
#define REP_LINE "  %-28s ("

static loco_status infer_structure(adm_config *c, const sd *s, const char *what, cbuf *rep) {
    char name[128], item[200]; /* item: "channel_mult " + a 160-byte mult */
    const int64_t *sh;
    loco_status st;
    /* num_channels: time_embed.0 is Linear(C, 4C) */
    if (sd_find(s, "time_embed.0.weight") < 0) {
        for (size_t k = 0; k < s->n; k++) {
            const char *nm = s->ent[k].name, *t = strstr(nm, ".time_embed.0.weight");
            if (t && t[strlen(".time_embed.0.weight")] == 0)
                return loco_fail(LOCO_E_UNSUPPORTED,
                                 "%s: tensor names carry a prefix ('%s'): not supported, save the UNetModel's own "
                                 "state_dict", what, nm);
        }
        return loco_fail(LOCO_E_NOT_FOUND,
                         "%s: tensor 'time_embed.0.weight' is missing: not a guided-diffusion UNetModel state dict", what);
    }
    if ((st = sd_need(s, "time_embed.0.weight", 2, "num_channels", what, &sh))) return st;
    if (sh[1] < 2 || sh[1] > ADM_MAX_CH || sh[1] % 2 || sh[0] != 4 * sh[1])
        return loco_fail(LOCO_E_SHAPE,
                         "%s: tensor 'time_embed.0.weight' has shape [%lld, %lld]: a UNetModel's is [4C, C] with "
                         "num_channels C even, in [2, %d]", what, (long long)sh[0], (long long)sh[1], ADM_MAX_CH);
    c->model_ch = (int)sh[1];
    snprintf(item, sizeof item, "num_channels %d", c->model_ch);
    cb_printf(rep, REP_LINE "time_embed.0.weight [%d, %d])\n", item, 4 * c->model_ch, c->model_ch);
    /* levels: output_blocks entries, of which the last of every level but
     * the first holds an upsampler (a ResBlock, or `conv`) after its
     * ResBlock [and attention] */
    int O = 0, ups = 0, up_kind = MOD_NONE, first_up = -1;
    for (;;) {
        snprintf(name, sizeof name, "output_blocks.%d.", O);
        if (!sd_has_prefix(s, name)) break;
        if (O == ADM_MAX_OUT_ENTRIES)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: more than %d output_blocks entries (at most %d levels of %d "
                             "ResBlocks are supported)", what, ADM_MAX_OUT_ENTRIES, ADM_MAX_LEVELS, ADM_MAX_RES_BLOCKS);
        int kind = MOD_NONE;
        for (int j = 2; j >= 1 && kind == MOD_NONE; j--) {
            snprintf(name, sizeof name, "output_blocks.%d.%d.", O, j);
            int k = mod_kind(s, name);
            if (k == MOD_RES || k == MOD_CONV) kind = k;
        }
        if (kind != MOD_NONE) {
            if (up_kind != MOD_NONE && kind != up_kind)
                return loco_fail(LOCO_E_FORMAT,
                                 "%s: output_blocks.%d upsamples with a %s but output_blocks.%d with a %s (a UNetModel "
                                 "uses one kind)", what, O, kind == MOD_RES ? "ResBlock" : "convolution ('conv')",
                                 first_up, up_kind == MOD_RES ? "ResBlock" : "convolution ('conv')");
            if (first_up < 0) first_up = O;
            up_kind = kind;
            ups++;
        }
        O++;
    }
    if (O == 0)
        return loco_fail(LOCO_E_NOT_FOUND, "%s: no tensor 'output_blocks.0.*': not a guided-diffusion UNetModel state "
                         "dict", what);
    int L = ups + 1;
    if (L > ADM_MAX_LEVELS)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %d upsamplers in output_blocks: %d levels (at most %d supported)",
                         what, ups, L, ADM_MAX_LEVELS);
    if (O % L || O / L < 2)
        return loco_fail(LOCO_E_UNSUPPORTED,
                         "%s: the %d output_blocks entries do not make %d levels (from the %d upsamplers) of "
                         "num_res_blocks + 1 entries with num_res_blocks >= 1", what, O, L, ups);
    c->n_levels = L;
    c->num_res_blocks = O / L - 1;
    if (c->num_res_blocks > ADM_MAX_RES_BLOCKS)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: num_res_blocks %d (from %d output_blocks entries over %d levels) is "
                         "outside [1, %d]", what, c->num_res_blocks, O, L, ADM_MAX_RES_BLOCKS);
    /* channels and attention of each level: its first input ResBlock */
    int whole = 1;
    for (int i = 0; i < L; i++) {
        int k = in_index(c, i);
        snprintf(name, sizeof name, "input_blocks.%d.0.in_layers.2.weight", k);
        char why[64];
        snprintf(why, sizeof why, "the channels of level %d", i);
        if ((st = sd_need(s, name, 4, why, what, &sh))) return st;
        if (sh[0] < 1 || sh[0] > ADM_MAX_CH)
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor '%s' has %lld output channels (1..%d supported)", what,
                             name, (long long)sh[0], ADM_MAX_CH);
        c->level_ch[i] = (int)sh[0];
        whole &= c->level_ch[i] % c->model_ch == 0;
        snprintf(name, sizeof name, "input_blocks.%d.1.", k);
        c->attn_level[i] = mod_kind(s, name) == MOD_ATTN;
    }
    if (whole) {
        for (int i = 0; i < L; i++) c->channel_mult[i] = c->level_ch[i] / c->model_ch;
    } else {
        /* only create_model's default for image_size has a fraction (512) */
        double d[ADM_MAX_LEVELS];
        int nd = default_mult(c->image_size, d), same = nd == L;
        for (int i = 0; same && i < L; i++) same = level_channels(d[i], c->model_ch) == c->level_ch[i];
        if (!same) {
            int i = 0;
            while (c->level_ch[i] % c->model_ch == 0) i++;
            return loco_fail(LOCO_E_UNSUPPORTED,
                             "%s: level %d has %d channels (tensor 'input_blocks.%d.0.in_layers.2.weight'), not a "
                             "whole multiple of num_channels %d: config.json's channel_mult cannot express it", what,
                             i, c->level_ch[i], in_index(c, i), c->model_ch);
        }
        for (int i = 0; i < L; i++) c->channel_mult[i] = d[i];
    }
    {
        char mult[160];
        fmt_mult(mult, sizeof mult, c);
        snprintf(item, sizeof item, "channel_mult %s", mult);
        cb_printf(rep, REP_LINE "level channels", item);
        for (int i = 0; i < L; i++) cb_printf(rep, "%s%d", i ? ", " : " ", c->level_ch[i]);
        cb_printf(rep, "; %d level(s): %d upsampler(s) in output_blocks)\n", L, ups);
        snprintf(item, sizeof item, "num_res_blocks %d", c->num_res_blocks);
        cb_printf(rep, REP_LINE "%d output_blocks entries = %d levels x (num_res_blocks + 1))\n", item, O, L);
        size_t o = (size_t)snprintf(item, sizeof item, "attention at level(s)");
        int any = 0;
        for (int i = 0; i < L && o < sizeof item; i++)
            if (c->attn_level[i]) o += (size_t)snprintf(item + o, sizeof item - o, "%s%d", any++ ? ", " : " ", i);
        if (!any) snprintf(item, sizeof item, "attention only in middle_block");
        cb_printf(rep, REP_LINE "%s)\n", item, any ? "an AttentionBlock after their ResBlocks" : "no other .1.qkv");
    }
    /* in and out channels */
    if ((st = sd_need(s, "input_blocks.0.0.weight", 4, "in_channels", what, &sh))) return st;
    if (sh[1] != 3)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor 'input_blocks.0.0.weight' has %lld input channels (create_model "
                         "always uses 3)", what, (long long)sh[1]);
    c->in_ch = 3;
    if ((st = sd_need(s, "out.2.weight", 4, "learn_sigma", what, &sh))) return st;
    if (sh[0] != 3 && sh[0] != 6)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: tensor 'out.2.weight' has %lld output channels (3, or 6 with "
                         "learn_sigma)", what, (long long)sh[0]);
    c->out_ch = (int)sh[0];
    c->learn_sigma = c->out_ch == 6;
    snprintf(item, sizeof item, "learn_sigma %s", c->learn_sigma ? "true" : "false");
    cb_printf(rep, REP_LINE "out.2.weight: %d output channels)\n", item, c->out_ch);
    /* FiLM: emb_layers.1 outputs scale and shift, 2 * C_out */
    if ((st = sd_need(s, "input_blocks.1.0.emb_layers.1.weight", 2, "use_scale_shift_norm", what, &sh))) return st;
    if (sh[0] != c->level_ch[0] && sh[0] != 2 * (int64_t)c->level_ch[0])
        return loco_fail(LOCO_E_SHAPE, "%s: tensor 'input_blocks.1.0.emb_layers.1.weight' has %lld outputs: %d (or %d "
                         "with use_scale_shift_norm) expected", what, (long long)sh[0], c->level_ch[0],
                         2 * c->level_ch[0]);
    c->use_scale_shift_norm = sh[0] == 2 * (int64_t)c->level_ch[0];
    snprintf(item, sizeof item, "use_scale_shift_norm %s", c->use_scale_shift_norm ? "true" : "false");
    cb_printf(rep, REP_LINE "input_blocks.1.0.emb_layers.1.weight: %lld outputs for %d channels)\n", item,
              (long long)sh[0], c->level_ch[0]);
    /* resblock_updown: the first downsampling entry */
    if (L > 1) {
        int k = c->num_res_blocks + 1;
        snprintf(name, sizeof name, "input_blocks.%d.0.", k);
        int kind = mod_kind(s, name);
        if (kind != MOD_RES && kind != MOD_OP)
            return loco_fail(kind == MOD_NONE ? LOCO_E_NOT_FOUND : LOCO_E_FORMAT,
                             "%s: input_blocks.%d.0 (the first downsampler) holds neither a ResBlock nor a strided "
                             "convolution 'op'", what, k);
        c->resblock_updown = kind == MOD_RES;
        snprintf(item, sizeof item, "resblock_updown %s", c->resblock_updown ? "true" : "false");
        cb_printf(rep, REP_LINE "input_blocks.%d.0 is %s)\n", item, k,
                  c->resblock_updown ? "a ResBlock" : "a strided convolution 'op'");
    }
    return LOCO_OK;
}

loco_status adm_config_infer(adm_config *c, size_t n, const char *const *names, const int *ndim,
                             const int64_t (*shape)[4], const adm_hints *hp, const char *what, char **report) {
    if (report) *report = NULL;
    if (!what) what = "weights";
    if (!c) return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: adm_config_infer: NULL config", what);
    memset(c, 0, sizeof *c);
    adm_hints h = {0};
    if (hp) h = *hp;
    adm_config pre;
    int has_pre;
    loco_status st = check_hints(&h, what, &pre, &has_pre);
    if (st) return st;
    /* what the weights cannot tell: image_size and the heads */
    char src_size[80], src_heads[80];
    if (has_pre) {
        c->image_size = pre.image_size;
        snprintf(src_size, sizeof src_size, "from preset %.32s", h.preset);
    } else if (h.image_size) {
        c->image_size = h.image_size;
        snprintf(src_size, sizeof src_size, "from the hints");
    } else
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: image_size is not determined by the weights: give it as a hint "
                         "(or a preset such as p2)", what);
    c->num_heads = c->num_head_channels = c->num_heads_upsample = -1;
    if (has_pre) { /* head hints, if any, agree with it (check_hints) */
        c->num_heads = pre.num_heads;
        c->num_head_channels = pre.num_head_channels;
        c->num_heads_upsample = pre.num_heads_upsample;
        snprintf(src_heads, sizeof src_heads, "from preset %.32s", h.preset);
    } else if (h.head_channels || h.heads) {
        c->num_head_channels = h.head_channels ? h.head_channels : -1;
        c->num_heads = h.heads ? h.heads : -1;
        c->num_heads_upsample = h.heads_upsample ? h.heads_upsample : -1;
        snprintf(src_heads, sizeof src_heads, "from the hints");
    } else
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: the attention heads are not determined by the weights: give the "
                         "hint head_channels or heads (or a preset such as p2)", what);
    c->diffusion_steps = 1000;
    c->use_new_attention_order = 0;
    sd s;
    if ((st = sd_open(&s, n, names, ndim, shape, what))) return st;
    cbuf rep = {0};
    cb_printf(&rep, "guided-diffusion UNetModel (ADM) in %s\ninferred from the weights:\n", what);
    st = infer_structure(c, &s, what, &rep);
    char sum[512];
    if (!st && has_pre) {
        /* the weights must be the preset's architecture */
        const struct {
            const char *flag;
            int got, want;
        } f[] = {{"num_channels", c->model_ch, pre.model_ch},
                 {"num_res_blocks", c->num_res_blocks, pre.num_res_blocks},
                 {"number of levels (channel_mult entries)", c->n_levels, pre.n_levels},
                 {"learn_sigma", c->learn_sigma, pre.learn_sigma},
                 {"use_scale_shift_norm", c->use_scale_shift_norm, pre.use_scale_shift_norm},
                 {"resblock_updown", c->resblock_updown, pre.resblock_updown}};
        for (size_t i = 0; !st && i < sizeof f / sizeof f[0]; i++)
            if (f[i].got != f[i].want)
                st = loco_fail(LOCO_E_SHAPE, "%s: the weights are not preset %s's architecture: %s is %d (%s: %d)",
                               what, h.preset, f[i].flag, f[i].got, h.preset, f[i].want);
        for (int i = 0; !st && i < c->n_levels; i++) {
            if (c->level_ch[i] != pre.level_ch[i])
                st = loco_fail(LOCO_E_SHAPE, "%s: the weights are not preset %s's architecture: level %d has %d "
                               "channels (%s: %d)", what, h.preset, i, c->level_ch[i], h.preset, pre.level_ch[i]);
            else if (c->attn_level[i] != pre.attn_level[i])
                st = loco_fail(LOCO_E_SHAPE, "%s: the weights are not preset %s's architecture: level %d %s attention "
                               "(%s: %s)", what, h.preset, i, c->attn_level[i] ? "has" : "has no", h.preset,
                               pre.attn_level[i] ? "has" : "none");
        }
    }
    if (!st) {
        vctx v = {what, 0, "inferred from the weights", src_size, src_heads};
        st = validate(c, &v);
        summary(sum, sizeof sum, c);
        if (!st) st = check_tensors(c, &v, &s, what, "the inferred configuration", sum);
    }
    if (!st && report) {
        char res[160];
        fmt_res(res, sizeof res, c);
        cb_printf(&rep, "%s:\n  image_size %d (so attention_resolutions \"%s\")\n", src_size, c->image_size, res);
        if (strcmp(src_heads, src_size) != 0) cb_printf(&rep, "%s:\n", src_heads);
        if (c->num_head_channels != -1) cb_printf(&rep, "  num_head_channels %d\n", c->num_head_channels);
        else {
            cb_printf(&rep, "  num_heads %d\n", c->num_heads);
            if (c->num_heads_upsample != -1) cb_printf(&rep, "  num_heads_upsample %d\n", c->num_heads_upsample);
        }
        cb_printf(&rep, "  heads:");
        for (int i = 0; i < c->n_levels; i++)
            if (c->attn_level[i])
                cb_printf(&rep, " level %d %d (input) / %d (output),", i, adm_heads(c, c->level_ch[i], 0),
                          adm_heads(c, c->level_ch[i], 1));
        cb_printf(&rep, " middle %d\n", adm_heads(c, c->level_ch[c->n_levels - 1], 0));
        cb_printf(&rep, "defaults:\n");
        if (c->n_levels == 1) cb_printf(&rep, "  resblock_updown false (one level: no downsampler to tell)\n");
        cb_printf(&rep, "  diffusion_steps 1000, noise_schedule linear, use_new_attention_order false, class_cond "
                  "false\n");
        adm_param *P;
        size_t np;
        if (!(st = adm_config_params(c, &P, &np))) {
            int64_t total = 0;
            for (size_t k = 0; k < np; k++) total += adm_param_numel(&P[k]);
            cb_printf(&rep, "checked: the %zu tensors (%lld parameters) are exactly those of this configuration\n", np,
                      (long long)total);
            free(P);
        }
        if (!st && (rep.oom || !rep.s)) st = loco_fail(LOCO_E_NOMEM, "%s: out of memory for the report", what);
        if (!st) {
            *report = rep.s;
            rep.s = NULL;
        }
    }
    free(rep.s);
    free(s.ent);
    if (st) memset(c, 0, sizeof *c);
    return st;
}
