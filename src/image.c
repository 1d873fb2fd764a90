/* image.c - PNG input/output through libpng's simplified API (which checks
 * every chunk and reports errors as text), and region-of-interest masks. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIDE 16384

loco_status loco_png_read(const char *path, loco_image *img) {
    if (!path || !img) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_png_read: NULL argument");
    memset(img, 0, sizeof *img);
    char *bytes;
    size_t len;
    loco_status s = loco_read_file(path, &bytes, &len, (size_t)1 << 30);
    if (s) return s;
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&pi, bytes, len)) {
        s = loco_fail(LOCO_E_FORMAT, "%s: not a readable PNG: %s", path, pi.message);
        free(bytes);
        return s;
    }
    if (pi.width < 1 || pi.height < 1 || pi.width > MAX_SIDE || pi.height > MAX_SIDE) {
        s = loco_fail(LOCO_E_UNSUPPORTED, "%s: image size %ux%u is outside 1..%d", path, pi.width, pi.height, MAX_SIDE);
        png_image_free(&pi);
        free(bytes);
        return s;
    }
    int has_alpha = (pi.format & PNG_FORMAT_FLAG_ALPHA) != 0, color = (pi.format & PNG_FORMAT_FLAG_COLOR) != 0;
    int ch = (color ? 3 : 1) + has_alpha;
    pi.format = color ? (has_alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) : (has_alpha ? PNG_FORMAT_GA : PNG_FORMAT_GRAY);
    size_t n = (size_t)pi.width * pi.height * (size_t)ch;
    uint8_t *data = malloc(n);
    if (!data) {
        png_image_free(&pi);
        free(bytes);
        return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    }
    if (!png_image_finish_read(&pi, NULL, data, 0, NULL)) {
        s = loco_fail(LOCO_E_FORMAT, "%s: corrupt PNG: %s", path, pi.message);
        png_image_free(&pi);
        free(data);
        free(bytes);
        return s;
    }
    free(bytes);
    img->width = (int)pi.width;
    img->height = (int)pi.height;
    img->channels = ch;
    img->data = data;
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
    loco_image img;
    loco_status s = loco_png_read(path, &img);
    if (s) return s;
    if (img.height != h || img.width != w) {
        s = loco_fail(LOCO_E_SHAPE, "%s: mask is %dx%d but the model works at %dx%d", path, img.width, img.height, w, h);
        free(img.data);
        return s;
    }
    for (size_t i = 0; i < (size_t)h * w; i++) {
        int in = 0;
        for (int c = 0; c < img.channels; c++) in |= img.data[i * img.channels + c] != 0;
        mask[i] = (uint8_t)in;
    }
    free(img.data);
    return nonempty(mask, (size_t)h * w, path);
}
