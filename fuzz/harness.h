/* harness.h - the bodies of the fuzz targets, shared by the libFuzzer entry
 * points (fuzz/fuzz_*.c) and the regression test (tests/test_pytorch.c runs
 * every file of fuzz/corpus/ and fuzz/regressions/ through them). Each takes
 * arbitrary bytes; errors are expected, crashes, leaks, hangs and undefined
 * behaviour are bugs. Files are handed over as memfds (/proc/self/fd/N), so
 * the file-based readers run unchanged without touching the disk. */
#ifndef LOCO_FUZZ_HARNESS_H
#define LOCO_FUZZ_HARNESS_H

#include "internal.h"
#include "schedule.h"
#include "families/adm.h"
#include "families/unet2d.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

/* A memfd holding d[0..n) and its path; returns the fd (close it) or -1. */
static inline int fz_memfd(const uint8_t *d, size_t n, char path[64]) {
    int fd = memfd_create("loco-fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, d + off, n - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
}

/* safetensors: open, then every accessor on every tensor */
static inline void fz_safetensors(const uint8_t *d, size_t n) {
    char path[64];
    int fd = fz_memfd(d, n, path);
    if (fd < 0) return;
    loco_tensors *f;
    if (loco_tensors_open(path, &f) == LOCO_OK) {
        for (size_t i = 0; i < loco_tensors_count(f); i++) {
            const char *nm = loco_tensors_name(f, i);
            loco_dtype dt;
            int nd;
            int64_t sh[LOCO_MAX_DIMS];
            const void *raw;
            size_t nb;
            float *x;
            loco_tensors_info(f, nm, &dt, &nd, sh);
            loco_tensors_raw(f, nm, &raw, &nb);
            if (loco_tensors_read_f32(f, nm, &x, &nd, sh, 1) == LOCO_OK) loco_free(x);
        }
        loco_tensors_metadata(f, "format");
        loco_tensors_close(f);
    }
    close(fd);
}

/* config.json of a UNet2DModel and of a guided-diffusion UNet (parse and
 * build the graph; written back as JSON), and the same text as a
 * scheduler_config.json */
static inline void fz_config(const uint8_t *d, size_t n) {
    unet_config c;
    if (unet_config_parse(&c, (const char *)d, n, "fuzz/config.json") == LOCO_OK) {
        graph u;
        if (unet2d_build(&u, &c) == LOCO_OK) graph_free(&u);
    }
    adm_config ac;
    if (adm_config_parse(&ac, (const char *)d, n, "fuzz/config.json") == LOCO_OK) {
        graph u;
        if (adm_build(&u, &ac) == LOCO_OK) graph_free(&u);
        char *json = NULL;
        if (adm_config_to_json(&ac, &json) == LOCO_OK) free(json);
    }
    char path[64];
    int fd = fz_memfd(d, n, path);
    if (fd < 0) return;
    schedule s;
    if (schedule_from_json(&s, path) == LOCO_OK) {
        schedule_abar(&s, 500.5f);
        schedule_free(&s);
    }
    close(fd);
}

/* PNG images (8-bit by value) and PNG masks (at the file's own bit depth,
 * alpha gating) at the image's own size, or 7 x 5 when the image is refused
 * (so a 5 x 7 seed such as palette_bad_index_5x7.png reaches the mask's
 * pixel checks too), and at a wrong size */
static inline void fz_png_one(const uint8_t *d, size_t n) {
    char path[64];
    int fd = fz_memfd(d, n, path);
    if (fd < 0) return;
    loco_image img;
    int h = 7, w = 5;
    if (loco_png_read(path, &img) == LOCO_OK) {
        if (img.width <= 1024 && img.height <= 1024) {
            h = img.height;
            w = img.width;
        }
        loco_free(img.data);
    }
    uint8_t *mask = malloc((size_t)h * (size_t)w);
    if (mask) {
        loco_mask_png(path, h, w, mask);
        loco_mask_png(path, 3, 2, mask);
        free(mask);
    }
    close(fd);
}

/* The input as it is, then with every chunk's CRC made right, so that
 * mutations inside chunks reach libpng's parsers instead of its CRC check
 * (libpng is not instrumented: coverage counts only our side). */
static inline void fz_png(const uint8_t *d, size_t n) {
    fz_png_one(d, n);
    if (n < 8) return;
    uint8_t *c = malloc(n);
    if (!c) return;
    memcpy(c, d, n);
    size_t o = 8;
    while (n - o >= 12) {
        size_t len = (size_t)c[o] << 24 | (size_t)c[o + 1] << 16 | (size_t)c[o + 2] << 8 | c[o + 3];
        if (len > n - o - 12) break;
        uint32_t crc = (uint32_t)crc32(0L, c + o + 4, (uInt)(len + 4));
        for (int k = 0; k < 4; k++) c[o + 8 + len + (size_t)k] = (uint8_t)(crc >> (24 - 8 * k));
        o += 12 + len;
    }
    if (memcmp(c, d, n) != 0) fz_png_one(c, n);
    free(c);
}

static inline void fz_read_all(loco_pt *f) {
    for (size_t i = 0; i < loco_pt_count(f); i++) {
        const char *nm = loco_pt_name(f, i);
        loco_dtype dt;
        int nd;
        int64_t sh[LOCO_MAX_DIMS];
        void *raw;
        size_t nb;
        float *x;
        loco_pt_info(f, nm, &dt, &nd, sh);
        if (loco_pt_read(f, nm, &raw, &nb) == LOCO_OK) loco_free(raw);
        if (loco_pt_read_f32(f, nm, &x, &nd, sh, 1) == LOCO_OK) loco_free(x);
    }
}

/* the pickle interpreter: d is data.pkl of an archive that also holds the
 * storages archive/data/0..3 (64 bytes each) and archive/data/4 (empty) */
static inline void fz_pickle(const uint8_t *d, size_t n) {
    static uint8_t st[64];
    for (int i = 0; i < 64; i++) st[i] = (uint8_t)(i * 37 + 1);
    loco_zip_item it[7] = {
        {"archive/data.pkl", d, n},      {"archive/byteorder", "little", 6}, {"archive/data/0", st, 64},
        {"archive/data/1", st, 64},      {"archive/data/2", st, 64},         {"archive/data/3", st, 64},
        {"archive/data/4", "", 0},
    };
    uint8_t *zip;
    size_t len;
    if (loco_zip_build(it, 7, 0, &zip, &len) != LOCO_OK) return;
    loco_pt *f;
    if (loco_pt_open_mem(zip, len, "fuzz.bin", LOCO_PT_NO_CRC, &f) == LOCO_OK) {
        fz_read_all(f);
        loco_pt_close(f);
    }
    free(zip);
}

/* a whole PyTorch checkpoint (zip + pickle): checked as is, then again
 * without the CRC checks so that damaged archives reach the pickle */
static inline void fz_pytorch(const uint8_t *d, size_t n) {
    loco_pt *f;
    for (unsigned flags = 0; flags <= LOCO_PT_NO_CRC; flags += LOCO_PT_NO_CRC)
        if (loco_pt_open_mem(d, n, "fuzz.bin", flags, &f) == LOCO_OK) {
            fz_read_all(f);
            loco_pt_close(f);
            break;
        }
}

/* prompts through the CLIP tokenizer of the sd-tiny fixture (the real
 * vocabulary and merges); the tokenizer is opened once */
static inline void fz_tokenizer(const uint8_t *d, size_t n) {
    static loco_tokenizer *tok;
    static int tried;
    if (!tried) {
        tried = 1;
        const char *dir = getenv("LOCO_FUZZ_TOKENIZER");
        if (loco_tokenizer_open(dir && dir[0] ? dir : "tests/fixtures/sd-tiny/pipeline/tokenizer", &tok) != LOCO_OK)
            tok = NULL;
    }
    if (!tok) return;
    char *p = malloc(n + 1);
    if (!p) return;
    memcpy(p, d, n);
    p[n] = 0; /* a NUL inside ends the prompt early, as for any C string */
    int64_t ids[77];
    int real;
    if (loco_tokenize(tok, p, ids, &real) == LOCO_OK)
        for (int i = 0; i < 77; i++)
            if (ids[i] < 0) abort(); /* every id is a vocabulary entry */
    free(p);
}

#endif
