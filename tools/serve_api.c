/* serve_api.c - `loco serve`'s JSON API (docs/serve.md): sessions, masks,
 * direction jobs, renders, transfer and downloads. Every handler checks its
 * input and answers a JSON error naming the problem; nothing a client sends
 * becomes a path. Compute goes to the worker (serve_state.c). */
#define _POSIX_C_SOURCE 200809L
#include "serve.h"
#include "loco_train.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

/* ======================================================================== */
/* Images                                                                   */
/* ======================================================================== */

unsigned char *png_encode(const float *x, int C, int H, int W, size_t *len) {
    if (C != 1 && C != 3) return NULL;
    size_t hw = (size_t)H * W;
    uint8_t *px = malloc(hw * C);
    if (!px) return NULL;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < C; c++) {
            float v = (x[(size_t)c * hw + i] + 1.0f) * 127.5f;
            px[i * C + c] = (uint8_t)lrintf(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)W;
    pi.height = (png_uint_32)H;
    pi.format = C == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    png_alloc_size_t n = 0;
    unsigned char *out = NULL;
    if (png_image_write_to_memory(&pi, NULL, &n, 0, px, 0, NULL) && n > 0 && (out = malloc(n)) &&
        png_image_write_to_memory(&pi, out, &n, 0, px, 0, NULL)) {
        *len = n;
    } else {
        free(out);
        out = NULL;
    }
    png_image_free(&pi);
    free(px);
    return out;
}

static char *base64(const unsigned char *d, size_t n) {
    static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * ((n + 2) / 3) + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *p++ = tb[v >> 18 & 63];
        *p++ = tb[v >> 12 & 63];
        *p++ = i + 1 < n ? tb[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? tb[v & 63] : '=';
    }
    *p = 0;
    return o;
}

/* adds key: "data:image/png;base64,..." of x [C,H,W] */
static void add_png(server *sv, cJSON *o, const char *key, const float *x) {
    size_t len = 0;
    unsigned char *png = x ? png_encode(x, sv->C, sv->H, sv->W, &len) : NULL;
    char *b = png ? base64(png, len) : NULL;
    free(png);
    if (!b) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    size_t bl = strlen(b);
    char *u = malloc(bl + 32);
    if (u) {
        memcpy(u, "data:image/png;base64,", 22);
        memcpy(u + 22, b, bl + 1);
        cJSON_AddStringToObject(o, key, u);
    } else cJSON_AddNullToObject(o, key);
    free(u);
    free(b);
}

/* An uploaded PNG -> x0 [C,H,W], checked as `loco edit` checks --image: a
 * PNG libpng reads whole, no alpha unless drop_alpha, the model's colour
 * channels and size. The bytes go through a memory file (memfd), never a
 * path the client names. Returns NULL with the error in r. */
static float *decode_upload(server *sv, const char *body, size_t len, int drop_alpha, reply *r) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!body || len < 33 || memcmp(body, sig, 8) != 0 || memcmp(body + 12, "IHDR", 4) != 0) {
        reply_error(r, 400, "the upload is not a PNG file (send the PNG's bytes as the body, Content-Type: image/png)");
        return NULL;
    }
    const unsigned char *u = (const unsigned char *)body;
    uint32_t w = (uint32_t)u[16] << 24 | (uint32_t)u[17] << 16 | (uint32_t)u[18] << 8 | u[19];
    uint32_t h = (uint32_t)u[20] << 24 | (uint32_t)u[21] << 16 | (uint32_t)u[22] << 8 | u[23];
    if (w > SERVE_MAX_SIDE || h > SERVE_MAX_SIDE) {
        reply_error(r, 413, "the image is %ux%u; at most %dx%d pixels are accepted (the model works at %dx%d)", w, h,
                    SERVE_MAX_SIDE, SERVE_MAX_SIDE, sv->W, sv->H);
        return NULL;
    }
    int fd = memfd_create("loco-upload", MFD_CLOEXEC);
    if (fd < 0) {
        reply_error(r, 500, "cannot hold the upload: %s", strerror(errno));
        return NULL;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t k = write(fd, body + off, len - off);
        if (k <= 0) {
            close(fd);
            reply_error(r, 500, "cannot hold the upload");
            return NULL;
        }
        off += (size_t)k;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    loco_image im;
    loco_status st = loco_png_read(path, &im);
    close(fd);
    if (st) {
        /* the library names the file: say "upload" instead of the fd path */
        const char *m = loco_last_error(), *c = strstr(m, ": ");
        reply_error(r, 400, "upload: %s", c && strncmp(m, "/proc/", 6) == 0 ? c + 2 : m[0] ? m : loco_strerror(st));
        return NULL;
    }
    float *x0 = NULL;
    int ch = im.channels, alpha = ch == 2 || ch == 4, colors = alpha ? ch - 1 : ch;
    if (alpha && !drop_alpha)
        reply_error(r, 400, "upload: the image has an alpha channel; add ?drop_alpha=1 to ignore it");
    else if (colors != sv->C)
        reply_error(r, 400, "upload: the image has %d colour channel(s) but the model takes %d", colors, sv->C);
    else if (im.width != sv->W || im.height != sv->H)
        reply_error(r, 400, "upload: the image is %dx%d but the model works at %dx%d", im.width, im.height, sv->W,
                    sv->H);
    else if (!(x0 = malloc(sizeof(float) * sv->n)))
        reply_error(r, 500, "out of memory");
    else {
        size_t hw = (size_t)sv->H * sv->W;
        for (int c = 0; c < sv->C; c++)
            for (size_t i = 0; i < hw; i++) x0[(size_t)c * hw + i] = im.data[i * ch + c] / 127.5f - 1.0f;
    }
    loco_free(im.data);
    return x0;
}

/* ======================================================================== */
/* Small JSON helpers                                                       */
/* ======================================================================== */

static int is_json(const request *rq) { return strncmp(rq->ctype, "application/json", 16) == 0; }

/* the body as a JSON object, or NULL with a 400 in r */
static cJSON *parse_body(const request *rq, reply *r) {
    if (!rq->body || rq->body_len == 0) {
        reply_error(r, 400, "this request needs a JSON object as its body");
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(rq->body, rq->body_len);
    if (!o) {
        const char *e = cJSON_GetErrorPtr();
        size_t at = e && e >= rq->body && e <= rq->body + rq->body_len ? (size_t)(e - rq->body) : 0;
        reply_error(r, 400, "malformed JSON in the request body (near byte %zu)", at);
        return NULL;
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        reply_error(r, 400, "the request body must be a JSON object");
        return NULL;
    }
    return o;
}

/* o[key] as a number in [lo, hi] (whole when integral); 1 ok (or absent:
 * *out unchanged), 0 with a 400 in r */
static int get_num(cJSON *o, const char *key, double lo, double hi, int integral, double *out, reply *r) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi ||
        (integral && v->valuedouble != floor(v->valuedouble))) {
        reply_error(r, 400, "'%s' must be %s in [%g, %g]", key, integral ? "a whole number" : "a number", lo, hi);
        return 0;
    }
    *out = v->valuedouble;
    return 1;
}

static cJSON *farray(const float *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static char *mask_bits(const uint8_t *m, size_t hw) {
    char *b = malloc(hw + 1);
    if (!b) return NULL;
    for (size_t i = 0; i < hw; i++) b[i] = m[i] ? '1' : '0';
    b[hw] = 0;
    return b;
}

/* ======================================================================== */
/* Handlers                                                                 */
/* ======================================================================== */

static void h_info(server *sv, reply *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", sv->model_path);
    cJSON_AddStringToObject(o, "family", sv->info.family);
    cJSON_AddNumberToObject(o, "channels", sv->C);
    cJSON_AddNumberToObject(o, "height", sv->H);
    cJSON_AddNumberToObject(o, "width", sv->W);
    cJSON_AddBoolToObject(o, "faces", sv->faces);
    cJSON *d = cJSON_AddObjectToObject(o, "defaults");
    cJSON_AddNumberToObject(d, "t_edit", sv->info.default_t_edit);
    cJSON_AddNumberToObject(d, "rank", 5);
    cJSON_AddNumberToObject(d, "null_rank", 5);
    cJSON_AddNumberToObject(d, "min_iter", 10);
    cJSON_AddNumberToObject(d, "max_iter", 50);
    cJSON_AddNumberToObject(d, "steps", 100);
    cJSON_AddNumberToObject(d, "tol", 1e-4);
    cJSON_AddNumberToObject(d, "seed", 0);
    cJSON *p = cJSON_AddArrayToObject(o, "parts");
    for (int i = 0; sv->faces && i < loco_faces_n_parts(); i++)
        cJSON_AddItemToArray(p, cJSON_CreateString(loco_faces_part_name(i)));
    cJSON *l = cJSON_AddObjectToObject(o, "limits");
    cJSON_AddNumberToObject(l, "max_body_bytes", (double)SERVE_MAX_BODY);
    cJSON_AddNumberToObject(l, "max_side", SERVE_MAX_SIDE);
    cJSON_AddNumberToObject(l, "max_sessions", SERVE_MAX_SESSIONS);
    cJSON_AddNumberToObject(l, "session_idle_seconds", SERVE_SESSION_IDLE_S);
    cJSON_AddNumberToObject(l, "max_rank", SERVE_MAX_DIRS);
    reply_json(r, 200, o);
}

static cJSON *session_json(server *sv, session *s) {
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&sv->lock);
    cJSON_AddStringToObject(o, "session", s->id);
    cJSON_AddStringToObject(o, "source", s->source);
    cJSON_AddBoolToObject(o, "has_labels", s->labels != NULL);
    size_t hw = (size_t)sv->H * sv->W, k = 0;
    for (size_t i = 0; i < hw; i++) k += s->mask[i] != 0;
    cJSON_AddNumberToObject(o, "mask_pixels", (double)k);
    char *bits = mask_bits(s->mask, hw);
    if (bits) cJSON_AddStringToObject(o, "mask", bits);
    free(bits);
    if (s->dirs) {
        cJSON *d = cJSON_AddObjectToObject(o, "directions");
        const loco_subspace *roi = loco_edit_directions_subspace(s->dirs, LOCO_BASIS_ROI),
                            *nul = loco_edit_directions_subspace(s->dirs, LOCO_BASIS_NULL);
        cJSON_AddNumberToObject(d, "rank", s->ps.rank);
        cJSON_AddNumberToObject(d, "null_rank", s->ps.null_rank);
        cJSON_AddNumberToObject(d, "t_edit", s->ps.t_edit);
        cJSON_AddNumberToObject(d, "steps", s->ps.steps);
        cJSON_AddNumberToObject(d, "seed", (double)s->ps.seed);
        cJSON_AddItemToObject(d, "singular_values", farray(roi->s, roi->rank));
        if (nul) cJSON_AddItemToObject(d, "null_singular_values", farray(nul->s, nul->rank));
        cJSON_AddNumberToObject(d, "iterations", roi->iters);
        cJSON_AddBoolToObject(d, "converged", roi->converged);
        cJSON_AddNumberToObject(d, "seconds", s->seconds_prepare);
        char *db = mask_bits(s->dir_mask, hw);
        if (db) cJSON_AddStringToObject(d, "mask", db);
        free(db);
    }
    cJSON_AddBoolToObject(o, "has_transfer", s->txt != NULL);
    pthread_mutex_unlock(&sv->lock);
    /* the images (the session's arrays above change only on the worker,
     * which swaps them under the lock; x0 never changes) */
    add_png(sv, o, "image", s->x0);
    pthread_mutex_lock(&sv->lock);
    float *rc = NULL, *tx = NULL, *tr = NULL;
    if (s->recon && (rc = malloc(sizeof(float) * sv->n))) memcpy(rc, s->recon, sizeof(float) * sv->n);
    if (s->tx0 && (tx = malloc(sizeof(float) * sv->n))) memcpy(tx, s->tx0, sizeof(float) * sv->n);
    if (s->trecon && (tr = malloc(sizeof(float) * sv->n))) memcpy(tr, s->trecon, sizeof(float) * sv->n);
    pthread_mutex_unlock(&sv->lock);
    if (rc) add_png(sv, o, "reconstruction", rc);
    if (tx) add_png(sv, o, "transfer_image", tx);
    if (tr) add_png(sv, o, "transfer_reconstruction", tr);
    free(rc), free(tx), free(tr);
    return o;
}

/* the starting image of a new session or a transfer: an upload (image/png)
 * or {"source": "sample", "seed": S} / {"source": "face", "seed": S,
 * "index": I}. *x0 (malloc'd) and *labels (face only) on success; 0, or -1
 * with the error in r. */
static int image_from(server *sv, const request *rq, int drop_alpha, float **x0, uint8_t **labels, char *src,
                      size_t srcn, reply *r) {
    *x0 = NULL;
    *labels = NULL;
    if (!is_json(rq)) {
        if (strncmp(rq->ctype, "image/png", 9) != 0) {
            reply_error(r, 415, "send a PNG (Content-Type: image/png) or JSON (Content-Type: application/json)");
            return -1;
        }
        if (!(*x0 = decode_upload(sv, rq->body, rq->body_len, drop_alpha, r))) return -1;
        snprintf(src, srcn, "upload");
        return 0;
    }
    cJSON *o = parse_body(rq, r);
    if (!o) return -1;
    cJSON *sr = cJSON_GetObjectItemCaseSensitive(o, "source");
    double seed = 0, index = 0;
    int rc = -1;
    if (!cJSON_IsString(sr)) reply_error(r, 400, "'source' must be \"sample\" or \"face\" (or upload a PNG)");
    else if (!get_num(o, "seed", 0, 9007199254740991.0, 1, &seed, r) ||
             !get_num(o, "index", 0, 2147483647.0, 1, &index, r))
        ;
    else if (strcmp(sr->valuestring, "face") == 0) {
        if (!sv->faces) reply_error(r, 400, "generator faces are 32x32 RGB; this model works at %dx%dx%d", sv->C, sv->H, sv->W);
        else {
            uint8_t rgb[32 * 32 * 3];
            *labels = malloc(32 * 32);
            *x0 = malloc(sizeof(float) * sv->n);
            if (!*labels || !*x0) reply_error(r, 500, "out of memory");
            else if (loco_faces_generate((uint64_t)seed, (int)index, rgb, *labels, NULL))
                reply_error(r, 400, "face: %s", loco_last_error());
            else {
                for (int c = 0; c < 3; c++)
                    for (int i = 0; i < 1024; i++) (*x0)[c * 1024 + i] = rgb[i * 3 + c] / 127.5f - 1.0f;
                snprintf(src, srcn, "face seed %.0f index %.0f", seed, index);
                rc = 0;
            }
        }
    } else if (strcmp(sr->valuestring, "sample") == 0) {
        job *j = job_new(JOB_SAMPLE, NULL);
        if (!j) reply_error(r, 500, "out of memory");
        else {
            j->sample_seed = (uint64_t)seed;
            if (job_submit(sv, j)) reply_error(r, 503, "the work queue is full; try again");
            else {
                job_wait(sv, j);
                if (j->state != JOB_DONE) reply_error(r, 500, "sampling: %s", j->error);
                else {
                    *x0 = j->out;
                    j->out = NULL;
                    snprintf(src, srcn, "sample seed %.0f", seed);
                    rc = 0;
                }
            }
            job_unref(sv, j);
        }
    } else reply_error(r, 400, "'source' must be \"sample\" or \"face\", not \"%.40s\"", sr->valuestring);
    cJSON_Delete(o);
    if (rc) {
        free(*x0);
        free(*labels);
        *x0 = NULL;
        *labels = NULL;
    }
    return rc;
}

static void h_create(server *sv, const request *rq, reply *r) {
    float *x0;
    uint8_t *labels;
    char src[96];
    if (image_from(sv, rq, rq->drop_alpha, &x0, &labels, src, sizeof src, r)) return;
    session *s = session_add(sv, x0, labels, src);
    if (!s) {
        free(x0);
        free(labels);
        reply_error(r, 500, "out of memory");
        return;
    }
    cJSON *o = session_json(sv, s);
    if (labels) { /* the parts present, for the part picker */
        cJSON *pa = cJSON_AddArrayToObject(o, "parts");
        uint8_t *tmp = malloc((size_t)sv->H * sv->W);
        for (int i = 0; tmp && i < loco_faces_n_parts(); i++)
            if (loco_part_mask(labels, sv->H, sv->W, loco_faces_part_name(i), 0, tmp) == LOCO_OK)
                cJSON_AddItemToArray(pa, cJSON_CreateString(loco_faces_part_name(i)));
        free(tmp);
    }
    session_unref(sv, s);
    reply_json(r, 201, o);
}

static void h_mask(server *sv, session *s, const request *rq, reply *r) {
    cJSON *o = parse_body(rq, r);
    if (!o) return;
    const size_t hw = (size_t)sv->H * sv->W;
    uint8_t *m = calloc(hw, 1);
    cJSON *bits = cJSON_GetObjectItemCaseSensitive(o, "mask"), *part = cJSON_GetObjectItemCaseSensitive(o, "part"),
          *rect = cJSON_GetObjectItemCaseSensitive(o, "rect"), *ell = cJSON_GetObjectItemCaseSensitive(o, "ellipse");
    double dil = 0;
    int ok = 0;
    if (!m) reply_error(r, 500, "out of memory");
    else if ((bits != NULL) + (part != NULL) + (rect != NULL) + (ell != NULL) != 1)
        reply_error(r, 400, "give exactly one of 'mask' (a string of %zu '0'/'1'), 'part', 'rect' or 'ellipse'", hw);
    else if (bits) {
        if (!cJSON_IsString(bits) || strlen(bits->valuestring) != hw)
            reply_error(r, 400, "'mask' must be a string of %zu characters '0' or '1' (row by row, %dx%d)", hw, sv->H,
                        sv->W);
        else {
            ok = 1;
            for (size_t i = 0; i < hw && ok; i++) {
                char c = bits->valuestring[i];
                if (c != '0' && c != '1') {
                    reply_error(r, 400, "'mask' character %zu is not '0' or '1'", i);
                    ok = 0;
                }
                m[i] = c == '1';
            }
        }
    } else if (part) {
        if (!s->labels) reply_error(r, 400, "this image has no label map (only generator faces do): paint the mask");
        else if (!cJSON_IsString(part)) reply_error(r, 400, "'part' must be a part name");
        else if (get_num(o, "dilate", 0, 64, 1, &dil, r)) {
            loco_status st = loco_part_mask(s->labels, sv->H, sv->W, part->valuestring, (int)dil, m);
            if (st) reply_error(r, 400, "part: %s", loco_last_error());
            else ok = 1;
        }
    } else {
        cJSON *a = rect ? rect : ell;
        double v[4];
        int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
        for (int i = 0; i < 4 && n == 4; i++) {
            cJSON *e = cJSON_GetArrayItem(a, i);
            if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || fabs(e->valuedouble) > 1e6) n = 0;
            else v[i] = e->valuedouble;
        }
        if (n != 4) reply_error(r, 400, rect ? "'rect' must be [y0, y1, x0, x1]" : "'ellipse' must be [cy, cx, ry, rx]");
        else {
            loco_status st = rect ? loco_mask_rect(sv->H, sv->W, (int)v[0], (int)v[1], (int)v[2], (int)v[3], m)
                                  : loco_mask_ellipse(sv->H, sv->W, v[0], v[1], v[2], v[3], m);
            if (st) reply_error(r, 400, "%s: %s", rect ? "rect" : "ellipse", loco_last_error());
            else ok = 1;
        }
    }
    cJSON_Delete(o);
    if (!ok) {
        free(m);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < hw; i++) k += m[i] != 0;
    pthread_mutex_lock(&sv->lock);
    memcpy(s->mask, m, hw);
    pthread_mutex_unlock(&sv->lock);
    cJSON *out = cJSON_CreateObject();
    char *b = mask_bits(m, hw);
    if (b) cJSON_AddStringToObject(out, "mask", b);
    free(b);
    cJSON_AddNumberToObject(out, "mask_pixels", (double)k);
    free(m);
    reply_json(r, 200, out);
}

static void h_directions(server *sv, session *s, const request *rq, reply *r) {
    cJSON *o = parse_body(rq, r);
    if (!o) return;
    prep_settings ps = {sv->info.default_t_edit, 5, 5, 10, 50, 100, 100, 1e-4, 0};
    double t = ps.t_edit, rank = 5, nr = 5, mi = 10, ma = 50, st = 100, tol = 1e-4, seed = 0;
    int ok = get_num(o, "t_edit", 1e-6, 0.999999, 0, &t, r) && get_num(o, "rank", 1, SERVE_MAX_DIRS, 1, &rank, r) &&
             get_num(o, "null_rank", 0, 4096, 1, &nr, r) && get_num(o, "min_iter", 0, 100000, 1, &mi, r) &&
             get_num(o, "max_iter", 1, 100000, 1, &ma, r) && get_num(o, "steps", 2, 100000, 1, &st, r) &&
             get_num(o, "tol", 0, 1, 0, &tol, r) && get_num(o, "seed", 0, 9007199254740991.0, 1, &seed, r);
    if (ok && mi > ma) {
        reply_error(r, 400, "'min_iter' must not exceed 'max_iter'");
        ok = 0;
    }
    const size_t hw = (size_t)sv->H * sv->W;
    uint8_t *mask = ok ? malloc(hw) : NULL;
    cJSON *bits = cJSON_GetObjectItemCaseSensitive(o, "mask");
    if (ok && !mask) {
        reply_error(r, 500, "out of memory");
        ok = 0;
    }
    if (ok && bits) {
        if (!cJSON_IsString(bits) || strlen(bits->valuestring) != hw) {
            reply_error(r, 400, "'mask' must be a string of %zu characters '0' or '1'", hw);
            ok = 0;
        }
        for (size_t i = 0; ok && i < hw; i++) {
            char c = bits->valuestring[i];
            if (c != '0' && c != '1') {
                reply_error(r, 400, "'mask' character %zu is not '0' or '1'", i);
                ok = 0;
            }
            mask[i] = c == '1';
        }
    } else if (ok) {
        pthread_mutex_lock(&sv->lock);
        memcpy(mask, s->mask, hw);
        pthread_mutex_unlock(&sv->lock);
    }
    cJSON_Delete(o);
    if (!ok) {
        free(mask);
        return;
    }
    ps.t_edit = (float)t;
    ps.rank = (int)rank;
    ps.null_rank = (int)nr;
    ps.min_iter = (int)mi;
    ps.max_iter = (int)ma;
    ps.steps = ps.inv_steps = (int)st;
    ps.tol = tol;
    ps.seed = (uint64_t)seed;
    /* everything the recipe can refuse is refused now, before queueing */
    loco_edit_recipe rp;
    loco_edit_recipe_init(&rp);
    rp.edit.t_edit = ps.t_edit;
    rp.edit.steps = rp.edit.inv_steps = ps.steps;
    rp.rank = ps.rank;
    rp.null_rank = ps.null_rank;
    rp.min_iter = ps.min_iter;
    rp.max_iter = ps.max_iter;
    rp.tol = ps.tol;
    if (loco_edit_recipe_check(sv->model, &rp, mask)) {
        reply_error(r, 400, "%s", loco_last_error());
        free(mask);
        return;
    }
    pthread_mutex_lock(&sv->lock);
    if (bits) memcpy(s->mask, mask, hw); /* the mask sent is the session's now */
    s->refs++;                           /* the job's */
    pthread_mutex_unlock(&sv->lock);
    job *j = job_new(JOB_PREPARE, s);
    if (!j) {
        session_unref(sv, s);
        free(mask);
        reply_error(r, 500, "out of memory");
        return;
    }
    j->ps = ps;
    j->mask = mask;
    if (job_submit(sv, j)) {
        job_unref(sv, j);
        reply_error(r, 503, "the work queue is full; try again");
        return;
    }
    pthread_mutex_lock(&sv->lock);
    s->prep_job = j->id;
    pthread_mutex_unlock(&sv->lock);
    reply_json(r, 202, job_json(sv, j));
    job_unref(sv, j);
}

/* "strengths": [..] into j (at most rank of them) */
static int get_strengths(server *sv, session *s, cJSON *o, job *j, reply *r) {
    cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "strengths");
    pthread_mutex_lock(&sv->lock);
    int rank = s->dirs ? s->ps.rank : 0;
    pthread_mutex_unlock(&sv->lock);
    if (!rank) {
        reply_error(r, 409, "no directions yet: find them first (POST /api/sessions/ID/directions)");
        return 0;
    }
    if (!a) return 1; /* none: all 0 */
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    if (n < 0 || n > rank) {
        reply_error(r, 400, "'strengths' must be an array of at most %d numbers (one per direction)", rank);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || fabs(e->valuedouble) > 1000) {
            reply_error(r, 400, "'strengths'[%d] must be a number in [-1000, 1000]", i);
            return 0;
        }
        j->strengths[i] = (float)e->valuedouble;
    }
    j->n_strengths = n;
    return 1;
}

static void h_render(server *sv, session *s, const request *rq, reply *r) {
    cJSON *o = parse_body(rq, r);
    if (!o) return;
    pthread_mutex_lock(&sv->lock);
    s->refs++;
    pthread_mutex_unlock(&sv->lock);
    job *j = job_new(JOB_RENDER, s);
    if (!j) {
        session_unref(sv, s);
        cJSON_Delete(o);
        reply_error(r, 500, "out of memory");
        return;
    }
    cJSON *tg = cJSON_GetObjectItemCaseSensitive(o, "target"), *pv = cJSON_GetObjectItemCaseSensitive(o, "preview");
    int ok = get_strengths(sv, s, o, j, r);
    if (ok && tg) {
        if (cJSON_IsString(tg) && strcmp(tg->valuestring, "image") == 0) j->target = 0;
        else if (cJSON_IsString(tg) && strcmp(tg->valuestring, "transfer") == 0) j->target = 1;
        else {
            reply_error(r, 400, "'target' must be \"image\" or \"transfer\"");
            ok = 0;
        }
    }
    if (ok && pv && !cJSON_IsNull(pv)) {
        if (cJSON_IsBool(pv)) j->preview = cJSON_IsTrue(pv);
        else {
            reply_error(r, 400, "'preview' must be true or false");
            ok = 0;
        }
    }
    cJSON_Delete(o);
    if (!ok) {
        job_unref(sv, j);
        return;
    }
    renders_supersede(sv, s, j->target); /* what they would show is stale now */
    if (job_submit(sv, j)) {
        job_unref(sv, j);
        reply_error(r, 503, "the work queue is full; try again");
        return;
    }
    job_wait(sv, j);
    pthread_mutex_lock(&sv->lock);
    int superseded = j->state == JOB_CANCELLED && j->superseded;
    pthread_mutex_unlock(&sv->lock);
    if (superseded) { /* a newer render of this session came: no image, not an error */
        cJSON *out = cJSON_CreateObject();
        cJSON_AddBoolToObject(out, "superseded", 1);
        cJSON_AddNumberToObject(out, "job", (double)j->id);
        reply_json(r, 200, out);
    } else if (j->state != JOB_DONE) {
        reply_error(r, j->state == JOB_CANCELLED ? 409 : j->error_status ? j->error_status : 500, "render: %s",
                    j->error);
    } else {
        cJSON *out = cJSON_CreateObject();
        add_png(sv, out, "image", j->out);
        cJSON_AddNumberToObject(out, "seconds", j->seconds);
        cJSON_AddBoolToObject(out, "preview", j->preview);
        cJSON_AddBoolToObject(out, "exact", j->exact);
        cJSON_AddNumberToObject(out, "steps", j->evals);
        cJSON_AddNumberToObject(out, "job", (double)j->id);
        reply_json(r, 200, out);
    }
    job_unref(sv, j);
}

static void h_transfer(server *sv, session *s, const request *rq, reply *r) {
    pthread_mutex_lock(&sv->lock);
    int have = s->dirs != NULL;
    pthread_mutex_unlock(&sv->lock);
    if (!have) {
        reply_error(r, 409, "no directions yet: find them first");
        return;
    }
    float *x0;
    uint8_t *labels;
    char src[96];
    if (image_from(sv, rq, rq->drop_alpha, &x0, &labels, src, sizeof src, r)) return;
    free(labels);
    pthread_mutex_lock(&sv->lock);
    s->refs++;
    pthread_mutex_unlock(&sv->lock);
    job *j = job_new(JOB_TRANSFER, s);
    if (!j) {
        session_unref(sv, s);
        free(x0);
        reply_error(r, 500, "out of memory");
        return;
    }
    j->x0 = x0;
    pthread_mutex_lock(&sv->lock); /* the strengths last rendered */
    memcpy(j->strengths, s->last_strengths, sizeof j->strengths);
    j->n_strengths = s->n_last;
    pthread_mutex_unlock(&sv->lock);
    if (job_submit(sv, j)) {
        job_unref(sv, j);
        reply_error(r, 503, "the work queue is full; try again");
        return;
    }
    pthread_mutex_lock(&sv->lock);
    s->transfer_job = j->id;
    pthread_mutex_unlock(&sv->lock);
    reply_json(r, 202, job_json(sv, j));
    job_unref(sv, j);
}

/* ---- downloads --------------------------------------------------------- */

static int read_whole(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b) break;
        if (n == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    fclose(f);
    if (!b) return -1;
    *data = b;
    *len = n;
    return 0;
}

static cJSON *report_json(server *sv, session *s) {
    loco_edit_info ei;
    loco_edit_directions_info(s->dirs, &ei);
    const loco_subspace *roi = loco_edit_directions_subspace(s->dirs, LOCO_BASIS_ROI),
                        *nul = loco_edit_directions_subspace(s->dirs, LOCO_BASIS_NULL);
    cJSON *rep = cJSON_CreateObject();
    cJSON *par = cJSON_AddObjectToObject(rep, "parameters");
    cJSON_AddStringToObject(par, "model", sv->model_path);
    cJSON_AddStringToObject(par, "image", s->source);
    cJSON_AddStringToObject(par, "mask_kind", "painted");
    cJSON_AddNumberToObject(par, "mask_pixels", (double)ei.mask_pixels);
    cJSON_AddNumberToObject(par, "t_edit", s->ps.t_edit);
    cJSON_AddNumberToObject(par, "t_edit_value", ei.t_value);
    cJSON_AddNumberToObject(par, "edit_grid_index", ei.grid_index);
    cJSON_AddNumberToObject(par, "steps", s->ps.steps);
    cJSON_AddNumberToObject(par, "inv_steps", s->ps.inv_steps);
    cJSON_AddStringToObject(par, "invert_to", s->ep.invert_full ? "full" : "edit");
    cJSON_AddNumberToObject(par, "boost_t", s->ep.boost_t);
    cJSON_AddNumberToObject(par, "rank", s->ps.rank);
    cJSON_AddNumberToObject(par, "null_rank", s->ps.null_rank);
    cJSON_AddNumberToObject(par, "min_iter", s->ps.min_iter);
    cJSON_AddNumberToObject(par, "max_iter", s->ps.max_iter);
    cJSON_AddNumberToObject(par, "tol", s->ps.tol);
    cJSON_AddNumberToObject(par, "seed", (double)s->ps.seed);
    cJSON_AddItemToObject(par, "strengths", farray(s->last_strengths, s->n_last));
    cJSON *tm = cJSON_AddObjectToObject(rep, "timings_seconds");
    cJSON_AddNumberToObject(tm, "inversion", ei.seconds_inversion);
    cJSON_AddNumberToObject(tm, "linearize", ei.seconds_linearize);
    cJSON_AddNumberToObject(tm, "roi_iteration", ei.seconds_roi);
    cJSON_AddNumberToObject(tm, "null_iteration", ei.seconds_null);
    cJSON_AddNumberToObject(tm, "total", s->seconds_prepare);
    const loco_subspace *subs[2] = {roi, nul};
    const char *names[2] = {"roi", "null"};
    for (int q = 0; q < 2; q++) {
        const loco_subspace *b = subs[q];
        if (!b) continue;
        cJSON *o = cJSON_AddObjectToObject(rep, names[q]);
        cJSON_AddNumberToObject(o, "rank", b->rank);
        cJSON_AddNumberToObject(o, "mask_entries", (double)b->l);
        cJSON_AddNumberToObject(o, "iterations", b->iters);
        cJSON_AddBoolToObject(o, "converged", b->converged);
        cJSON_AddItemToObject(o, "singular_values", farray(b->s, b->rank));
        cJSON *h = cJSON_AddArrayToObject(o, "history");
        for (int i = 0; i < b->iters; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "iter", i);
            cJSON_AddNumberToObject(e, "sin_max_angle", b->sin_angle[i]);
            cJSON_AddItemToObject(e, "singular_values", farray(b->s_hist + (size_t)i * b->rank, b->rank));
            cJSON_AddItemToArray(h, e);
        }
    }
    return rep;
}

/* directions.safetensors as `loco edit` writes it (loco apply reads it) */
static int directions_file(server *sv, session *s, char **data, size_t *len) {
    loco_edit_info ei;
    loco_edit_directions_info(s->dirs, &ei);
    const loco_subspace *roi = loco_edit_directions_subspace(s->dirs, LOCO_BASIS_ROI),
                        *nul = loco_edit_directions_subspace(s->dirs, LOCO_BASIS_NULL);
    const int C = sv->C, H = sv->H, W = sv->W, r = s->ps.rank, rn = nul ? s->ps.null_rank : 0;
    char tv[32], sd[32], rk[16], nrk[16], ns[16], nis[16], bt[32], te[32];
    snprintf(tv, sizeof tv, "%.9g", ei.t_value);
    snprintf(sd, sizeof sd, "%llu", (unsigned long long)s->ps.seed);
    snprintf(rk, sizeof rk, "%d", r);
    snprintf(nrk, sizeof nrk, "%d", rn);
    snprintf(ns, sizeof ns, "%d", s->ps.steps);
    snprintf(nis, sizeof nis, "%d", s->ps.inv_steps);
    snprintf(bt, sizeof bt, "%.9g", s->ep.boost_t);
    snprintf(te, sizeof te, "%.9g", s->ps.t_edit);
    const char *meta[] = {"model", sv->model_path, "t", tv, "t_edit", te, "steps", ns, "inv_steps", nis,
                          "invert_to", s->ep.invert_full ? "full" : "edit", "boost_t", bt, "rank", rk, "null_rank",
                          nrk, "seed", sd, "mask", "painted in loco serve", "mask_kind", "painted", "image", s->source};
    loco_tensor_ref refs[7] = {
        {"directions", LOCO_DTYPE_F32, 4, {r, C, H, W}, loco_edit_directions_vectors(s->dirs)},
        {"roi_basis", LOCO_DTYPE_F32, 4, {r, C, H, W}, roi->vT},
        {"roi_singular_values", LOCO_DTYPE_F32, 1, {r}, roi->s},
        {"xt", LOCO_DTYPE_F32, 4, {1, C, H, W}, loco_edit_directions_xt(s->dirs)},
        {"mask", LOCO_DTYPE_U8, 2, {H, W}, s->dir_mask},
        {"null_basis", LOCO_DTYPE_F32, 4, {rn, C, H, W}, rn ? nul->vT : NULL},
        {"null_singular_values", LOCO_DTYPE_F32, 1, {rn}, rn ? nul->s : NULL},
    };
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) return -1;
    char path[400];
    snprintf(path, sizeof path, "%s/dl-%02x%02x%02x%02x%02x%02x%02x%02x.safetensors", sv->tmpdir, rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    loco_status st = loco_tensors_write(path, refs, rn > 0 ? 7 : 5, meta, 13);
    int rc = st ? -1 : read_whole(path, data, len);
    unlink(path);
    return rc;
}

/* a PNG of n images side by side */
static void reply_strip(server *sv, reply *r, const float *const *imgs, int n, const char *fname) {
    const size_t hw = (size_t)sv->H * sv->W;
    float *x = malloc(sizeof(float) * sv->n * (size_t)n);
    if (!x) {
        reply_error(r, 500, "out of memory");
        return;
    }
    const int WW = sv->W * n;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < sv->C; c++)
            for (int y = 0; y < sv->H; y++)
                memcpy(x + ((size_t)c * sv->H + y) * WW + (size_t)i * sv->W, imgs[i] + (size_t)c * hw + (size_t)y * sv->W,
                       sizeof(float) * sv->W);
    size_t len;
    unsigned char *png = png_encode(x, sv->C, sv->H, WW, &len);
    free(x);
    if (!png) reply_error(r, 500, "cannot encode the PNG");
    else reply_bytes(r, "image/png", png, len, fname);
    free(png);
}

static void h_file(server *sv, session *s, const char *name, reply *r) {
    pthread_mutex_lock(&sv->lock); /* the worker swaps arrays under it */
    const float *img = NULL;
    if (strcmp(name, "original.png") == 0) img = s->x0;
    else if (strcmp(name, "recon.png") == 0) img = s->recon;
    else if (strcmp(name, "edit.png") == 0) img = s->edit;
    else if (strcmp(name, "transfer.png") == 0) img = s->tedit;
    if (img) {
        size_t len;
        unsigned char *png = png_encode(img, sv->C, sv->H, sv->W, &len);
        if (png) reply_bytes(r, "image/png", png, len, NULL);
        else reply_error(r, 500, "cannot encode the PNG");
        free(png);
        r->filename = strcmp(name, "edit.png") == 0 ? "edit.png" : strcmp(name, "transfer.png") == 0 ? "transfer.png" : NULL;
    } else if (strcmp(name, "original.png") && strcmp(name, "recon.png") && strcmp(name, "edit.png") &&
               strcmp(name, "transfer.png") && strcmp(name, "strip.png") && strcmp(name, "directions.safetensors") &&
               strcmp(name, "report.json"))
        reply_error(r, 404, "no file '%.60s': original.png, recon.png, edit.png, transfer.png, strip.png, "
                            "directions.safetensors or report.json", name);
    else if (!s->dirs) reply_error(r, 409, "no directions yet: find them first");
    else if (strcmp(name, "strip.png") == 0) {
        const float *imgs[5] = {s->x0, s->recon};
        int n = 2;
        if (s->edit) imgs[n++] = s->edit;
        if (s->tx0 && s->tedit) imgs[n++] = s->tx0, imgs[n++] = s->tedit;
        reply_strip(sv, r, imgs, n, "strip.png");
    } else if (strcmp(name, "report.json") == 0) {
        cJSON *o = report_json(sv, s);
        char *t = cJSON_Print(o);
        cJSON_Delete(o);
        if (t) reply_bytes(r, "application/json", t, strlen(t), "report.json");
        else reply_error(r, 500, "out of memory");
        free(t);
    } else if (strcmp(name, "directions.safetensors") == 0) {
        char *d;
        size_t len;
        if (directions_file(sv, s, &d, &len)) reply_error(r, 500, "cannot write the directions: %s", loco_last_error());
        else {
            reply_bytes(r, "application/octet-stream", d, len, "directions.safetensors");
            free(d);
        }
    } else reply_error(r, 409, "no %s yet: %s", name, strcmp(name, "edit.png") == 0 ? "move a slider first" : "transfer first");
    pthread_mutex_unlock(&sv->lock);
}

/* ======================================================================== */
/* Routing                                                                  */
/* ======================================================================== */

/* splits path after "/api/" into up to 4 segments (in buf) */
static int split(const char *p, char *buf, size_t bn, char **seg, int max) {
    if (strlen(p) >= bn) return -1;
    strcpy(buf, p);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == max) return -1;
        seg[n++] = t;
    }
    return n;
}

static int method_is(const request *rq, const char *m) { return strcmp(rq->method, m) == 0; }

void api_handle(server *sv, const request *rq, reply *r) {
    char buf[256], *seg[5];
    int n = split(rq->path + 4, buf, sizeof buf, seg, 5); /* after "/api" */
    if (n < 1) {
        reply_error(r, 404, "no such API path: %.80s (see docs/serve.md)", rq->path);
        return;
    }
    if (n == 1 && strcmp(seg[0], "info") == 0) {
        if (method_is(rq, "GET")) h_info(sv, r);
        else reply_error(r, 405, "use GET");
        return;
    }
    if (strcmp(seg[0], "sessions") == 0) {
        if (n == 1) {
            if (method_is(rq, "POST")) h_create(sv, rq, r);
            else reply_error(r, 405, "use POST to create a session");
            return;
        }
        pthread_mutex_lock(&sv->lock);
        session *s = session_get_locked(sv, seg[1]);
        pthread_mutex_unlock(&sv->lock);
        if (!s) {
            reply_error(r, 404, "no session '%.40s' (expired, removed, or never made)", seg[1]);
            return;
        }
        if (n == 2 && method_is(rq, "GET")) reply_json(r, 200, session_json(sv, s));
        else if (n == 2 && method_is(rq, "DELETE")) {
            session_remove(sv, seg[1]);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "deleted", seg[1]);
            reply_json(r, 200, o);
        } else if (n == 3 && strcmp(seg[2], "mask") == 0 && (method_is(rq, "PUT") || method_is(rq, "POST")))
            h_mask(sv, s, rq, r);
        else if (n == 3 && strcmp(seg[2], "directions") == 0 && method_is(rq, "POST")) h_directions(sv, s, rq, r);
        else if (n == 3 && strcmp(seg[2], "render") == 0 && method_is(rq, "POST")) h_render(sv, s, rq, r);
        else if (n == 3 && strcmp(seg[2], "transfer") == 0 && method_is(rq, "POST")) h_transfer(sv, s, rq, r);
        else if (n == 4 && strcmp(seg[2], "files") == 0 && method_is(rq, "GET")) h_file(sv, s, seg[3], r);
        else reply_error(r, 404, "no such API path or method: %s %.80s (see docs/serve.md)", rq->method, rq->path);
        session_unref(sv, s);
        return;
    }
    if (strcmp(seg[0], "jobs") == 0 && n >= 2 && n <= 3) {
        char *end;
        errno = 0;
        unsigned long long id = strtoull(seg[1], &end, 10);
        job *j = NULL;
        if (*end == 0 && !errno && seg[1][0] >= '0' && seg[1][0] <= '9') {
            pthread_mutex_lock(&sv->lock);
            j = job_get_locked(sv, id);
            pthread_mutex_unlock(&sv->lock);
        }
        if (!j) {
            reply_error(r, 404, "no job '%.40s'", seg[1]);
            return;
        }
        if (n == 2 && method_is(rq, "GET")) reply_json(r, 200, job_json(sv, j));
        else if (n == 3 && strcmp(seg[2], "cancel") == 0 && method_is(rq, "POST")) {
            job_cancel(sv, j);
            reply_json(r, 200, job_json(sv, j));
        } else if (n == 3 && strcmp(seg[2], "events") == 0 && method_is(rq, "GET")) {
            r->status = 200;
            r->sse_job = j->id;
        } else reply_error(r, 404, "no such API path or method: %s %.80s (see docs/serve.md)", rq->method, rq->path);
        job_unref(sv, j);
        return;
    }
    reply_error(r, 404, "no such API path: %.80s (see docs/serve.md)", rq->path);
}
