/* conv_dnnl.c - 2-D convolutions by oneDNN (Debian's libdnnl, the library
 * PyTorch's CPU convolutions use): the forward pass (also a convolution's
 * J V) and the transposed convolution of the VJP (U^T J), for the shapes
 * where it beats im2col/Winograd F(2x2) + OpenBLAS (conv.c dispatches here
 * first). Measured per shape in docs/performance.md ("oneDNN convolutions").
 *
 * Why oneDNN and not our own kernels: its JIT AVX-512 Winograd F(4x4,3x3)
 * (jit_wino_4x3) and direct (brgconv) kernels reach 2-3x our GEMM-based
 * rates on the same cores, forward and backward-data (bench/bench_conv).
 *
 * Layout: our tensors stay NCHW / OIHW. Per call the weights, and per image
 * the input, are reordered into the blocked layouts the primitive asks for
 * (bandwidth passes, a few percent of a call), the result reordered back,
 * with a sum post-op where the caller accumulates (dx +=, or a per-image
 * bias2 prefilled). Nothing is cached but the primitives (JIT code) and four
 * grow-only scratch buffers (blocked input, weights and output of one image,
 * the primitive's scratchpad: ~0.3 GB at celebahq's 256x256 level), freed by
 * conv2d_dnnl_release; no prepared copies of the weights. One mutex
 * serialises the calls (the library's own threads do the work).
 *
 * Algorithm: Winograd for 3x3, stride-1 'same' convolutions with channels a
 * multiple of 16 and images of at least 32x32 pixels, direct otherwise. The
 * rule looks at one image only, and each image is its own call, so an
 * image's result does not depend on the batch it is computed in
 * (tests/test_conv_dnnl.c checks it). */
#include "internal.h"
#include "ops.h"

#include <dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

int ops_conv_dnnl = -1;      /* -1: decide at first use (LOCO_CONV); 0 off; 1 on */
int ops_conv_dnnl_wino = -1; /* -1: decide at first use (LOCO_CONV_WINO); 0 off; 1 on */
int ops_conv_dnnl_bf16 = -1; /* -1: decide at first use (LOCO_CONV_PRECISION); 0 f32; 1 bf16 */

#define WINO_MIN_IMAGE_PIXELS 1024 /* 32x32: below, direct is as fast or faster */
#define MAX_ENTRIES 512

typedef struct ckey {
    int vjp, acc, bias, B, cin, cout, h, w, k, stride, pad_t, pad_l, ho, wo;
    int wino; /* asked for Winograd (ops_conv_dnnl_wino may change between calls) */
    int bf16; /* inputs and weights rounded to bf16, f32 accumulation and output */
} ckey;

typedef struct centry {
    ckey key;
    int ok; /* 0: oneDNN refused this shape; the caller computes it */
    int wino;
    dnnl_primitive_t conv, r_in, r_wei, r_out; /* r_*: NULL when no reorder is needed */
    dnnl_memory_desc_t in_user, wei_user, out_user, in_md, wei_md, out_md, bias_md, pad_md;
} centry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static int engine_failed;
static centry *entries;
static int n_entries;
static struct {
    void *p;
    size_t n;
} scratch[4]; /* blocked input, weights, output; the primitives' scratchpad */

/* ---- set-up ----------------------------------------------------------------------- */

static int env_flag(const char *var, const char *off) {
    const char *v = getenv(var);
    return !(v && strcmp(v, off) == 0);
}

/* the switches, read from the environment once */
static int enabled(void) {
    if (ops_conv_dnnl < 0) ops_conv_dnnl = env_flag("LOCO_CONV", "blas");
    if (ops_conv_dnnl_wino < 0) ops_conv_dnnl_wino = env_flag("LOCO_CONV_WINO", "0");
    if (ops_conv_dnnl_bf16 < 0) ops_conv_dnnl_bf16 = !env_flag("LOCO_CONV_PRECISION", "bf16");
    return ops_conv_dnnl && !engine_failed;
}

/* the CPU engine and its stream, made on first use (call with the lock held) */
static int engine_ready(void) {
    if (engine) return 1;
    if (engine_failed) return 0;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        if (engine) dnnl_engine_destroy(engine);
        engine = NULL;
        engine_failed = 1;
        loco_log(LOCO_LOG_WARN, "oneDNN: no CPU engine; convolutions use the BLAS path");
        return 0;
    }
    return 1;
}

static void entry_free(centry *e) {
    if (e->conv) dnnl_primitive_destroy(e->conv);
    if (e->r_in) dnnl_primitive_destroy(e->r_in);
    if (e->r_wei) dnnl_primitive_destroy(e->r_wei);
    if (e->r_out) dnnl_primitive_destroy(e->r_out);
    memset(e, 0, sizeof *e);
}

void conv2d_dnnl_release(void) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_entries; i++) entry_free(&entries[i]);
    free(entries);
    entries = NULL;
    n_entries = 0;
    for (int i = 0; i < 4; i++) {
        free(scratch[i].p);
        scratch[i].p = NULL;
        scratch[i].n = 0;
    }
    pthread_mutex_unlock(&lock);
}

static int wino_shape(const conv_geom *g) {
    return ops_conv_dnnl_wino && g->k == 3 && g->stride == 1 && g->pad_t == 1 && g->pad_l == 1 && g->ho == g->h &&
           g->wo == g->w && g->cin % 16 == 0 && g->cout % 16 == 0 && (size_t)g->ho * g->wo >= WINO_MIN_IMAGE_PIXELS;
}

/* A reorder from `from` to `to` (with dst += when sum), or NULL when the two
 * are the same layout and no sum is asked. Returns 0 on failure. */
static int make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, int sum, dnnl_primitive_t *out) {
    *out = NULL;
    if (!sum && dnnl_memory_desc_equal(from, to)) return 1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    int ok = 1;
    if (sum) {
        ok = dnnl_primitive_attr_create(&attr) == dnnl_success && dnnl_post_ops_create(&po) == dnnl_success &&
             dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    }
    dnnl_primitive_desc_t pd = NULL;
    ok = ok && dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr) == dnnl_success &&
         dnnl_primitive_create(out, pd) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
}

/* The convolution descriptor of g in one direction: src [B,cin,h,w],
 * weights [cout,cin,k,k], dst [B,cout,ho,wo], layouts left to oneDNN. */
static dnnl_status_t conv_desc(const ckey *k, int wino, int vjp, dnnl_convolution_desc_t *cd) {
    dnnl_dims_t sd = {k->B, k->cin, k->h, k->w}, wd = {k->cout, k->cin, k->k, k->k}, dd = {k->B, k->cout, k->ho, k->wo};
    dnnl_dims_t bd = {k->cout}, strides = {k->stride, k->stride}, pl = {k->pad_t, k->pad_l};
    dnnl_dims_t pr = {(k->ho - 1) * k->stride + k->k - k->h - k->pad_t, (k->wo - 1) * k->stride + k->k - k->w - k->pad_l};
    dnnl_memory_desc_t s, w, d, b;
    /* bf16: what the call reads (src, or diff_dst for the VJP) and the
     * weights are bf16; what it writes (dst, diff_src) stays f32; the VJP's
     * forward hint is all bf16 (oneDNN has no f32-src, bf16-weight forward) */
    const dnnl_data_type_t lo = k->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_init_by_tag(&s, 4, sd, k->vjp && vjp ? dnnl_f32 : lo, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&w, 4, wd, lo, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&d, 4, dd, k->vjp ? lo : dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_x);
    const dnnl_alg_kind_t alg = wino ? dnnl_convolution_winograd : dnnl_convolution_direct;
    if (vjp) return dnnl_convolution_backward_data_desc_init(cd, alg, &s, &w, &d, strides, pl, pr);
    /* forward_training: Winograd then takes plain blocked weights and
     * transforms them itself (forward_inference wants them pre-transformed,
     * a slow reorder per call) */
    return dnnl_convolution_forward_desc_init(cd, wino || vjp ? dnnl_forward_training : dnnl_forward_inference, alg, &s,
                                              &w, k->bias ? &b : NULL, &d, strides, pl, pr);
}

static int entry_init(centry *e, int wino) {
    const ckey *k = &e->key;
    dnnl_convolution_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    /* the scratchpad is ours (one grow-only buffer for every primitive), not
     * oneDNN's: no allocation per call, none held per cached primitive */
    dnnl_primitive_attr_t attr = NULL;
    int ok = dnnl_primitive_attr_create(&attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    ok = ok && conv_desc(k, wino, 0, &fd) == dnnl_success &&
         dnnl_primitive_desc_create(&fpd, &fd, attr, engine, NULL) == dnnl_success;
    if (ok && k->vjp)
        ok = conv_desc(k, wino, 1, &bd) == dnnl_success &&
             dnnl_primitive_desc_create(&pd, &bd, attr, engine, fpd) == dnnl_success;
    else if (ok)
        pd = fpd, fpd = NULL;
    if (ok) {
        /* in: what is read (x, or dy for the VJP); out: what is written */
        const dnnl_query_t qin = k->vjp ? dnnl_query_diff_dst_md : dnnl_query_src_md;
        const dnnl_query_t qout = k->vjp ? dnnl_query_diff_src_md : dnnl_query_dst_md;
        e->in_md = *dnnl_primitive_desc_query_md(pd, qin, 0);
        e->out_md = *dnnl_primitive_desc_query_md(pd, qout, 0);
        e->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        e->pad_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        dnnl_dims_t sd = {k->B, k->cin, k->h, k->w}, wd = {k->cout, k->cin, k->k, k->k},
                    dd = {k->B, k->cout, k->ho, k->wo}, bdim = {k->cout};
        dnnl_memory_desc_init_by_tag(&e->in_user, 4, k->vjp ? dd : sd, dnnl_f32, dnnl_nchw);
        dnnl_memory_desc_init_by_tag(&e->out_user, 4, k->vjp ? sd : dd, dnnl_f32, dnnl_nchw);
        dnnl_memory_desc_init_by_tag(&e->wei_user, 4, wd, dnnl_f32, dnnl_oihw);
        dnnl_memory_desc_init_by_tag(&e->bias_md, 1, bdim, dnnl_f32, dnnl_x);
        ok = dnnl_primitive_create(&e->conv, pd) == dnnl_success && make_reorder(&e->in_user, &e->in_md, 0, &e->r_in) &&
             make_reorder(&e->wei_user, &e->wei_md, 0, &e->r_wei) &&
             make_reorder(&e->out_md, &e->out_user, k->acc, &e->r_out);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) entry_free(e);
    e->wino = wino;
    return ok;
}

static centry *entry_get(const ckey *k, int wino) {
    for (int i = 0; i < n_entries; i++)
        if (memcmp(&entries[i].key, k, sizeof *k) == 0) return &entries[i];
    if (!entries && !(entries = calloc(MAX_ENTRIES, sizeof *entries))) return NULL;
    if (n_entries == MAX_ENTRIES) { /* many shapes (batches of every size): start over */
        for (int i = 0; i < n_entries; i++) entry_free(&entries[i]);
        n_entries = 0;
    }
    centry *e = &entries[n_entries++];
    memset(e, 0, sizeof *e);
    e->key = *k;
    e->ok = entry_init(e, wino);
    if (!e->ok && wino) { /* no Winograd on this CPU (it needs AVX-512): direct */
        e->key = *k;      /* entry_free cleared it */
        e->ok = entry_init(e, 0);
    }
    e->key = *k;
    if (!e->ok)
        loco_log(LOCO_LOG_DEBUG, "oneDNN refused a %dx%d convolution %d -> %d at %dx%d (%s); using the BLAS path",
                 k->k, k->k, k->cin, k->cout, k->h, k->w, k->vjp ? "transposed" : "forward");
    return e;
}

static void *scratch_get(int i, size_t n) {
    if (scratch[i].n < n) {
        free(scratch[i].p);
        scratch[i].n = 0;
        if (posix_memalign(&scratch[i].p, 64, n)) scratch[i].p = NULL;
        if (!scratch[i].p) return NULL;
        scratch[i].n = n;
    }
    return scratch[i].p;
}

/* ---- execution -------------------------------------------------------------------- */

static int mem(const dnnl_memory_desc_t *md, void *p, dnnl_memory_t *m) {
    return dnnl_memory_create(m, md, engine, p) == dnnl_success;
}

static int reorder(dnnl_primitive_t r, const dnnl_memory_desc_t *from, void *pf, const dnnl_memory_desc_t *to,
                   void *pt) {
    dnnl_memory_t a = NULL, b = NULL;
    int ok = mem(from, pf, &a) && mem(to, pt, &b);
    if (ok) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
        ok = dnnl_primitive_execute(r, stream, 2, args) == dnnl_success;
    }
    if (a) dnnl_memory_destroy(a);
    if (b) dnnl_memory_destroy(b);
    return ok;
}

/* Runs one cached convolution (k: one image) on n images, in and out
 * `sin` and `sout` floats apart: out (+)= conv(in), the weights reordered
 * once. Returns the number of images done (n unless oneDNN failed). */
static int run(const ckey *k, int n, const float *in, size_t sin, const float *w, const float *bias, float *out,
               size_t sout) {
    if (!engine_ready()) return 0;
    centry *e = entry_get(k, k->wino);
    if (!e || !e->ok) return 0;
    void *pin = NULL, *pw = (void *)w, *pout = NULL;
    if (e->r_in && !(pin = scratch_get(0, dnnl_memory_desc_get_size(&e->in_md)))) return 0;
    if (e->r_wei && !(pw = scratch_get(1, dnnl_memory_desc_get_size(&e->wei_md)))) return 0;
    if (e->r_out && !(pout = scratch_get(2, dnnl_memory_desc_get_size(&e->out_md)))) return 0;
    const size_t npad = dnnl_memory_desc_get_size(&e->pad_md);
    void *ppad = npad ? scratch_get(3, npad) : NULL;
    if (npad && !ppad) return 0;
    if (e->r_wei && !reorder(e->r_wei, &e->wei_user, (void *)w, &e->wei_md, pw)) return 0;
    dnnl_memory_t mw = NULL, mb = NULL, mp = NULL;
    int ok = mem(&e->wei_md, pw, &mw) && (!k->bias || mem(&e->bias_md, (void *)bias, &mb)) &&
             (!npad || mem(&e->pad_md, ppad, &mp));
    int done = 0;
    for (; ok && done < n; done++) {
        const float *ini = in + (size_t)done * sin;
        float *outi = out + (size_t)done * sout;
        void *pi = e->r_in ? pin : (void *)ini, *po = e->r_out ? pout : (void *)outi;
        dnnl_memory_t mi = NULL, mo = NULL;
        ok = (!e->r_in || reorder(e->r_in, &e->in_user, (void *)ini, &e->in_md, pi)) && mem(&e->in_md, pi, &mi) &&
             mem(&e->out_md, po, &mo);
        if (ok) {
            dnnl_exec_arg_t args[5];
            int na = 0;
            args[na++] = (dnnl_exec_arg_t){k->vjp ? DNNL_ARG_DIFF_DST : DNNL_ARG_SRC, mi};
            args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mw};
            if (mb) args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mb};
            args[na++] = (dnnl_exec_arg_t){k->vjp ? DNNL_ARG_DIFF_SRC : DNNL_ARG_DST, mo};
            if (mp) args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mp};
            ok = dnnl_primitive_execute(e->conv, stream, na, args) == dnnl_success;
        }
        if (mi) dnnl_memory_destroy(mi);
        if (mo) dnnl_memory_destroy(mo);
        ok = ok && (!e->r_out || reorder(e->r_out, &e->out_md, po, &e->out_user, outi)) &&
             dnnl_stream_wait(stream) == dnnl_success;
        if (!ok) break;
    }
    if (mw) dnnl_memory_destroy(mw);
    if (mb) dnnl_memory_destroy(mb);
    if (mp) dnnl_memory_destroy(mp);
    return done;
}

static ckey key_of(const conv_geom *g, int B, int vjp, int acc, int bias) {
    ckey k = (ckey){vjp, acc, bias, B, g->cin, g->cout, g->h, g->w, g->k, g->stride, g->pad_t, g->pad_l, g->ho, g->wo, 0, 0};
    k.bf16 = ops_conv_dnnl_bf16 > 0;
    k.wino = !k.bf16 && wino_shape(g); /* oneDNN's Winograd is f32 only */
    return k;
}

/* 1 when this CPU runs oneDNN's Winograd (it needs AVX-512), probed once
 * on a small shape; takes the lock. */
static int cpu_has_winograd(void) {
    static int has = -1; /* set once under the lock; read without it after */
    const int known = __atomic_load_n(&has, __ATOMIC_ACQUIRE);
    if (known >= 0) return known;
    pthread_mutex_lock(&lock);
    if (has < 0 && engine_ready()) {
        centry e;
        memset(&e, 0, sizeof e);
        e.key = (ckey){.B = 1, .cin = 16, .cout = 16, .h = 32, .w = 32, .k = 3, .stride = 1, .pad_t = 1, .pad_l = 1,
                       .ho = 32, .wo = 32, .wino = 1};
        __atomic_store_n(&has, entry_init(&e, 1) && e.wino, __ATOMIC_RELEASE);
        entry_free(&e);
    }
    const int r = has > 0;
    pthread_mutex_unlock(&lock);
    return r;
}

/* Where oneDNN has no Winograd (CPUs without AVX-512), its direct kernels
 * are slower than our own Winograd F(2x2) on the BLAS path: bench_conv on a
 * Zen 3 (AVX2) took 1.4-1.8x the time on every shape that path takes, and
 * 0.58x on the stride-2 ones it does not (docs/performance.md). Those
 * shapes are left to it unless oneDNN's Winograd was switched off
 * (LOCO_CONV_WINO=0: oneDNN direct everywhere, an A/B switch) or bf16 is on. */
static int blas_winograd_wins(const conv_geom *g) {
    return ops_conv_dnnl_wino && ops_conv_dnnl_bf16 <= 0 && conv2d_wino_use(g) && !cpu_has_winograd();
}

static int eligible(const conv_geom *g, int B) {
    /* 1x1 convolutions stay plain GEMMs; so do thin ones (conv_in's 3
     * input channels, conv_out's 3 outputs: oneDNN took 1.3-2.4x the BLAS
     * path's time there, bench_conv) */
    return g->fast && g->k > 1 && g->cin >= 16 && g->cout >= 16 && B > 0 && enabled() && !blas_winograd_wins(g);
}

/* One oneDNN call per image: an image's result is then the same in any
 * batch, bit for bit (with several images per call oneDNN's blocking, and
 * so the rounding, depended on the batch: 3e-6 in tests/test_backward.c),
 * and big batches do not outgrow the caches (measured: five 256x256x128
 * images in one call took 18x one image's time). The weights are reordered
 * once per image; a few percent of a call. */

int conv2d_dnnl_fwd(const conv_geom *g, int B, const float *x, const float *w, const float *bias, const float *bias2,
                    float *y) {
    if (!eligible(g, B)) return 0;
    const size_t np = (size_t)g->ho * g->wo, nin = (size_t)g->cin * g->h * g->w, nout = (size_t)g->cout * np;
    if (bias2) { /* y = bias2[b, c] everywhere, then y += conv(x) + bias */
#pragma omp parallel for schedule(static)
        for (int bc = 0; bc < B * g->cout; bc++) {
            float *yc = y + (size_t)bc * np;
            for (size_t i = 0; i < np; i++) yc[i] = bias2[bc];
        }
    }
    pthread_mutex_lock(&lock);
    const ckey k = key_of(g, 1, 0, bias2 != NULL, bias != NULL);
    const int ok = run(&k, B, x, nin, w, bias, y, nout) == B;
    pthread_mutex_unlock(&lock);
    return ok;
}

/* Returns the number of images done (B, or fewer when oneDNN failed: dx of
 * the others is untouched, the caller does them). */
int conv2d_dnnl_vjp(const conv_geom *g, int B, const float *dy, const float *w, float *dx) {
    if (!eligible(g, B)) return 0;
    const size_t nin = (size_t)g->cin * g->h * g->w, nout = (size_t)g->cout * g->ho * g->wo;
    pthread_mutex_lock(&lock);
    const ckey k = key_of(g, 1, 1, 1, 0);
    const int done = run(&k, B, dy, nout, w, NULL, dx, nin);
    pthread_mutex_unlock(&lock);
    return done;
}

int conv2d_dnnl_handles(const conv_geom *g) { return eligible(g, 1); }

/* From the shape and the CPU's probe, without making the shape's primitive
 * (a model's information is taken when it opens; test_conv_dnnl checks on
 * a shape that the answer is what a call computes). */
int conv2d_dnnl_uses_winograd(const conv_geom *g) {
    return eligible(g, 1) && ops_conv_dnnl_bf16 <= 0 && wino_shape(g) && cpu_has_winograd();
}
