/* images.c - the commands' image files: reading an input image (PNG or
 * safetensors) into the model's layout, and writing images as PNG grids. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bilinear resize of an 8-bit interleaved image (align_corners = false). */
static uint8_t *resize(const loco_image *im, int H, int W) {
    uint8_t *o = malloc((size_t)H * W * im->channels);
    if (!o) return NULL;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double sy = (y + 0.5) * im->height / H - 0.5, sx = (x + 0.5) * im->width / W - 0.5;
            if (sy < 0) sy = 0;
            if (sx < 0) sx = 0;
            int y0 = (int)sy, x0 = (int)sx;
            int y1 = y0 + 1 < im->height ? y0 + 1 : y0, x1 = x0 + 1 < im->width ? x0 + 1 : x0;
            double fy = sy - y0, fx = sx - x0;
            for (int c = 0; c < im->channels; c++) {
#define PX(yy, xx) im->data[((size_t)(yy) * im->width + (xx)) * im->channels + c]
                double v = (1 - fy) * ((1 - fx) * PX(y0, x0) + fx * PX(y0, x1)) + fy * ((1 - fx) * PX(y1, x0) + fx * PX(y1, x1));
#undef PX
                o[((size_t)y * W + x) * im->channels + c] = (uint8_t)lround(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    return o;
}

/* Reads the input image into x0 [C, H, W] in [-1, 1]: a PNG or a
 * safetensors file with tensor x0 [1, C, H, W]. Returns 0 or an exit code. */
int load_input(const char *path, const loco_model_info *inf, int drop_alpha, int do_resize, float *x0) {
    const int C = inf->in_channels, H = inf->height, W = inf->width;
    size_t len = strlen(path);
    if (len > 12 && strcmp(path + len - 12, ".safetensors") == 0) {
        loco_tensors *f;
        loco_status st = loco_tensors_open(path, &f);
        if (st) return fail(st);
        float *d;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        st = loco_tensors_read_f32(f, "x0", &d, &nd, sh, 0);
        loco_tensors_close(f);
        if (st) return fail(st);
        if (nd != 4 || sh[0] != 1 || sh[1] != C || sh[2] != H || sh[3] != W) {
            fprintf(stderr, "loco: error: %s: tensor 'x0' must have shape [1,%d,%d,%d]\n", path, C, H, W);
            loco_free(d);
            return 1;
        }
        memcpy(x0, d, sizeof(float) * (size_t)C * H * W);
        loco_free(d);
        return 0;
    }
    loco_image im;
    loco_status st = loco_png_read(path, &im);
    if (st) return fail(st);
    int ch = im.channels, alpha = ch == 2 || ch == 4;
    if (alpha && !drop_alpha) {
        fprintf(stderr, "loco: error: %s: the image has an alpha channel; pass --drop-alpha to ignore it\n", path);
        loco_free(im.data);
        return 1;
    }
    int colors = alpha ? ch - 1 : ch;
    if (colors != C) {
        fprintf(stderr, "loco: error: %s: the image has %d colour channel(s) but the model takes %d\n", path, colors, C);
        loco_free(im.data);
        return 1;
    }
    uint8_t *px = im.data;
    if (im.width != W || im.height != H) {
        if (!do_resize) {
            fprintf(stderr, "loco: error: %s: the image is %dx%d but the model works at %dx%d (pass --resize)\n", path,
                    im.width, im.height, W, H);
            loco_free(im.data);
            return 1;
        }
        px = resize(&im, H, W);
        if (!px) {
            loco_free(im.data);
            return fail(LOCO_E_NOMEM);
        }
    }
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H * W; i++) x0[(size_t)c * H * W + i] = px[(size_t)i * ch + c] / 127.5f - 1.0f;
    if (px != im.data) free(px);
    loco_free(im.data);
    return 0;
}

loco_status write_images(const char *path, const float *const *imgs, int n, int C, int H, int W, int cols, int zoom) {
    if (n < 1 || C < 1 || C > 4 || H < 1 || W < 1 || zoom < 1) return LOCO_E_INVALID_ARGUMENT;
    if (cols < 1) cols = (int)ceil(sqrt((double)n));
    if (cols > n) cols = n;
    const int rows = (n + cols - 1) / cols;
    const int GW = cols * W * zoom, GH = rows * H * zoom;
    loco_image im = {GW, GH, C, calloc((size_t)GW * GH * C, 1)};
    if (!im.data) return LOCO_E_NOMEM;
    for (int i = 0; i < n; i++) {
        const float *xi = imgs[i];
        const int oy = (i / cols) * H * zoom, ox = (i % cols) * W * zoom;
        for (int y = 0; y < H * zoom; y++)
            for (int xx = 0; xx < W * zoom; xx++)
                for (int c = 0; c < C; c++) {
                    float v = (xi[((size_t)c * H + y / zoom) * W + xx / zoom] + 1.0f) * 127.5f;
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                    im.data[((size_t)(oy + y) * GW + ox + xx) * C + c] = (uint8_t)lrintf(v);
                }
    }
    loco_status st = loco_png_write(path, &im);
    free(im.data);
    return st;
}

loco_status write_grid(const char *path, const float *x, int n, int C, int H, int W, int cols, int zoom) {
    if (n < 1) return LOCO_E_INVALID_ARGUMENT;
    const float **imgs = malloc(sizeof(float *) * (size_t)n);
    if (!imgs) return LOCO_E_NOMEM;
    for (int i = 0; i < n; i++) imgs[i] = x + (size_t)i * C * H * W;
    loco_status st = write_images(path, imgs, n, C, H, W, cols, zoom);
    free(imgs);
    return st;
}

int parse_zoom(const char *s, long long *zoom) {
    if (strcmp(s, "auto") == 0) {
        *zoom = 0;
        return 1;
    }
    return parse_long(s, 1, 16, zoom);
}

int view_zoom(long long zoom, int n, int H, int W) {
    if (zoom > 0) return (int)zoom;
    const int side = H > W ? H : W;
    if (n < 2 || side >= 128) return 1;
    int z = (128 + side - 1) / side;
    return z > 8 ? 8 : z;
}
