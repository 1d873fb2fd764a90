/* image.c - PNG input/output and region-of-interest masks. Reading uses
 * libpng's low-level API, so that samples come back as stored: no gamma or
 * sRGB conversion, 16-bit data either kept (masks) or reduced to 8 bits by
 * value with rounding (images), palette indices checked against the palette.
 * Writing uses the simplified API (8-bit data only). */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIDE 16384
#define MAX_DECODED ((size_t)1 << 30) /* bytes of decoded samples */

/* One PNG being decoded. Everything that changes while libpng may longjmp
 * lives here, in the caller's frame, not in locals of the function that
 * calls setjmp (whose locals would be indeterminate after the longjmp). */
typedef struct {
    const char *path;
    const uint8_t *bytes; /* the whole file */
    size_t len, off;      /* its size; read position */
    int keep16;           /* 16-bit samples kept (else reduced to 8 bits) */
    int want_h, want_w;   /* > 0: the size the caller needs (checked first) */
    int stage;            /* 0 header, 1 pixels: chooses the error wording */
    char msg[256];        /* libpng's error text */
    loco_status status;   /* set by our own checks inside decode() */
    /* result */
    int w, h, ch, depth;  /* depth 8, or 16 (samples big-endian) */
    uint8_t *data;        /* h rows of w*ch samples */
    uint8_t *idx;         /* palette images: the indices, one byte each */
    png_bytep *rows;
} png_job;

static void on_png_error(png_structp png, png_const_charp msg) {
    png_job *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* the library never prints; warnings are not errors */
}

static void on_png_read(png_structp png, png_bytep out, size_t n) {
    png_job *j = png_get_io_ptr(png);
    if (n > j->len - j->off) png_error(png, "unexpected end of file");
    memcpy(out, j->bytes + j->off, n);
    j->off += n;
}

/* Decodes into j (which owns j->data, j->idx, j->rows afterwards, also on
 * failure). Returns 0 on failure with j->status set. Only j's fields change
 * after setjmp, so no local needs to be volatile. */
static int decode(png_structp png, png_infop info, png_job *j) {
    if (setjmp(png_jmpbuf(png))) {
        j->status = loco_fail(LOCO_E_FORMAT, j->stage ? "%s: corrupt PNG: %s" : "%s: not a readable PNG: %s", j->path,
                              j->msg);
        return 0;
    }
    png_set_read_fn(png, j, on_png_read);
    /* Only IHDR, PLTE, tRNS, IDAT and IEND are read; every other chunk is
     * skipped unread (its CRC still checked). libpng would otherwise
     * allocate and zero a text chunk's claimed length, up to 2 GiB, before
     * finding that the file is 100 bytes long. */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ct, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ct, &interlace, NULL, NULL);
    if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE) {
        j->status = loco_fail(LOCO_E_UNSUPPORTED, "%s: image size %ux%u is outside 1..%d", j->path, (unsigned)w,
                              (unsigned)h, MAX_SIDE);
        return 0;
    }
    j->w = (int)w;
    j->h = (int)h;
    if (j->want_h > 0 && (j->h != j->want_h || j->w != j->want_w)) {
        j->status = loco_fail(LOCO_E_SHAPE, "%s: mask is %dx%d but the model works at %dx%d", j->path, j->w, j->h,
                              j->want_w, j->want_h);
        return 0;
    }
    int palette = ct == PNG_COLOR_TYPE_PALETTE;
    int trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    if (palette) {
        png_set_packing(png); /* 1, 2, 4-bit indices to one byte each */
    } else {
        if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (trns) png_set_tRNS_to_alpha(png);
        if (depth == 16 && !j->keep16) png_set_scale_16(png); /* round(v / 257) */
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info), od = png_get_bit_depth(png, info);
    size_t bps = od == 16 ? 2 : 1;
    size_t row = (size_t)w * (size_t)ch * bps;
    if (ch < 1 || ch > 4 || (od != 8 && od != 16) || png_get_rowbytes(png, info) != row) {
        j->status = loco_fail(LOCO_E_FORMAT, "%s: unexpected PNG layout (%d channels of %d bits)", j->path, ch, od);
        return 0;
    }
    size_t out_ch = palette ? (trns ? 4 : 3) : (size_t)ch;
    if ((size_t)w * h * out_ch * bps > MAX_DECODED) {
        j->status = loco_fail(LOCO_E_UNSUPPORTED, "%s: %ux%u pixels of %zu %d-bit samples exceed 1 GiB decoded",
                              j->path, (unsigned)w, (unsigned)h, out_ch, od);
        return 0;
    }
    uint8_t *buf = malloc(row * h);
    if (palette) j->idx = buf;
    else j->data = buf;
    j->rows = malloc(h * sizeof *j->rows);
    if (!buf || !j->rows) {
        j->status = loco_fail(LOCO_E_NOMEM, "%s: out of memory for %ux%u pixels", j->path, (unsigned)w, (unsigned)h);
        return 0;
    }
    for (png_uint_32 y = 0; y < h; y++) j->rows[y] = buf + (size_t)y * row;
    j->stage = 1;
    png_read_image(png, j->rows);
    png_read_end(png, NULL);
    j->ch = ch;
    j->depth = od;
    if (!palette) return 1;

    /* palette: check every index, then expand (tRNS gives the alpha of the
     * first entries, the rest are opaque) */
    png_colorp pal = NULL;
    int npal = 0;
    if (!png_get_PLTE(png, info, &pal, &npal) || npal < 1) {
        j->status = loco_fail(LOCO_E_FORMAT, "%s: palette image without a palette", j->path);
        return 0;
    }
    png_bytep talpha = NULL;
    int ntrans = 0;
    if (trns) png_get_tRNS(png, info, &talpha, &ntrans, NULL);
    if (!talpha) ntrans = 0;
    size_t np = (size_t)w * h;
    for (size_t i = 0; i < np; i++)
        if (buf[i] >= npal) {
            j->status = loco_fail(LOCO_E_FORMAT, "%s: pixel index %d at (x %zu, y %zu) is outside the palette of %d entries",
                                  j->path, buf[i], i % w, i / w, npal);
            return 0;
        }
    j->data = malloc(np * out_ch);
    if (!j->data) {
        j->status = loco_fail(LOCO_E_NOMEM, "%s: out of memory for %ux%u pixels", j->path, (unsigned)w, (unsigned)h);
        return 0;
    }
    for (size_t i = 0; i < np; i++) {
        uint8_t *o = j->data + i * out_ch;
        int k = buf[i];
        o[0] = pal[k].red;
        o[1] = pal[k].green;
        o[2] = pal[k].blue;
        if (out_ch == 4) o[3] = k < ntrans ? talpha[k] : 255;
    }
    j->ch = (int)out_ch;
    j->depth = 8;
    return 1;
}

/* Reads path into j->data (j->w, j->h, j->ch, j->depth); on success the
 * caller frees j->data. */
static loco_status png_load(const char *path, int keep16, int want_h, int want_w, png_job *j) {
    memset(j, 0, sizeof *j);
    j->path = path;
    j->keep16 = keep16;
    j->want_h = want_h;
    j->want_w = want_w;
    char *bytes;
    size_t len;
    loco_status s = loco_read_file(path, &bytes, &len, (size_t)1 << 30);
    if (s) return s;
    if (len < 8 || png_sig_cmp((png_const_bytep)bytes, 0, 8) != 0) {
        free(bytes);
        return loco_fail(LOCO_E_FORMAT, "%s: not a readable PNG: no PNG signature", path);
    }
    j->bytes = (const uint8_t *)bytes;
    j->len = len;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, j, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) s = loco_fail(LOCO_E_NOMEM, "%s: out of memory (libpng)", path);
    else if (!decode(png, info, j)) s = j->status;
    png_destroy_read_struct(&png, &info, NULL);
    free(j->rows);
    j->rows = NULL;
    free(j->idx);
    j->idx = NULL;
    if (s) {
        free(j->data);
        j->data = NULL;
    }
    free(bytes);
    return s;
}

loco_status loco_png_read(const char *path, loco_image *img) {
    if (!path || !img) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_png_read: NULL argument");
    memset(img, 0, sizeof *img);
    png_job j;
    loco_status s = png_load(path, 0, 0, 0, &j);
    if (s) return s;
    img->width = j.w;
    img->height = j.h;
    img->channels = j.ch;
    img->data = j.data;
    return LOCO_OK;
}

loco_status loco_png_write(const char *path, const loco_image *img) {
    if (!path || !img || !img->data) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_png_write: NULL argument");
    if (img->channels < 1 || img->channels > 4 || img->width < 1 || img->height < 1 || img->width > MAX_SIDE ||
        img->height > MAX_SIDE)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: bad image geometry %dx%dx%d", path, img->width, img->height,
                         img->channels);
    static const png_uint_32 fmt[5] = {0, PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB, PNG_FORMAT_RGBA};
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)img->width;
    pi.height = (png_uint_32)img->height;
    pi.format = fmt[img->channels];
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&pi, NULL, &size, 0, img->data, 0, NULL))
        return loco_fail(LOCO_E_IO, "%s: PNG encoding failed: %s", path, pi.message);
    void *buf = malloc(size);
    if (!buf) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    if (!png_image_write_to_memory(&pi, buf, &size, 0, img->data, 0, NULL)) {
        free(buf);
        return loco_fail(LOCO_E_IO, "%s: PNG encoding failed: %s", path, pi.message);
    }
    loco_status s = loco_write_file_atomic(path, buf, size);
    free(buf);
    return s;
}

static loco_status nonempty(const uint8_t *mask, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (mask[i]) return LOCO_OK;
    return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: the mask is empty", what);
}

loco_status loco_mask_rect(int h, int w, int y0, int y1, int x0, int x1, uint8_t *mask) {
    if (!mask || h < 1 || w < 1) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_mask_rect: bad arguments");
    if (y0 < 0 || x0 < 0 || y1 > h || x1 > w || y0 >= y1 || x0 >= x1)
        return loco_fail(LOCO_E_INVALID_ARGUMENT,
                         "rect %d,%d,%d,%d: need 0 <= y0 < y1 <= %d and 0 <= x0 < x1 <= %d (half-open)", y0, y1, x0, x1,
                         h, w);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) mask[(size_t)y * w + x] = y >= y0 && y < y1 && x >= x0 && x < x1;
    return LOCO_OK;
}

loco_status loco_mask_ellipse(int h, int w, double cy, double cx, double ry, double rx, uint8_t *mask) {
    if (!mask || h < 1 || w < 1) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_mask_ellipse: bad arguments");
    if (!(ry > 0) || !(rx > 0) || !isfinite(cy) || !isfinite(cx) || !isfinite(ry) || !isfinite(rx))
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "ellipse %g,%g,%g,%g: radii must be positive and finite", cy, cx, ry, rx);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double dy = (y - cy) / ry, dx = (x - cx) / rx;
            mask[(size_t)y * w + x] = dy * dy + dx * dx <= 1.0;
        }
    char what[96];
    snprintf(what, sizeof what, "ellipse %g,%g,%g,%g", cy, cx, ry, rx);
    return nonempty(mask, (size_t)h * w, what);
}

loco_status loco_mask_png(const char *path, int h, int w, uint8_t *mask) {
    if (!path || !mask) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_mask_png: NULL argument");
    if (h < 1 || w < 1) return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: bad mask size %dx%d", path, w, h);
    png_job j;
    loco_status s = png_load(path, 1, h, w, &j);
    if (s) return s;
    /* inside: a colour channel nonzero at the file's own depth, and the
     * alpha channel (when there is one) nonzero too */
    int alpha = j.ch == 2 || j.ch == 4, colours = j.ch - alpha;
    size_t bps = j.depth == 16 ? 2 : 1, px = (size_t)j.ch * bps;
    for (size_t i = 0; i < (size_t)h * w; i++) {
        const uint8_t *p = j.data + i * px;
        int in = 0;
        for (size_t b = 0; b < (size_t)colours * bps; b++) in |= p[b] != 0;
        if (alpha) {
            int a = 0;
            for (size_t b = 0; b < bps; b++) a |= p[(size_t)colours * bps + b] != 0;
            in &= a;
        }
        mask[i] = (uint8_t)in;
    }
    free(j.data);
    return nonempty(mask, (size_t)h * w, path);
}
