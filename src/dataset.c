/* dataset.c - training data for our own models: synthetic part-labelled
 * cartoon faces, part masks from their label maps, a hostile-input-safe idx
 * (MNIST format) reader with transparent gzip, and Fashion-MNIST.
 *
 * The faces are drawn from factors that are mostly LOCAL (each changes the
 * pixels of one part), so that a model trained on them has local editing
 * directions a part mask can find, as CelebA-HQ attributes are local. The
 * face geometry is nearly fixed and the palette modest; see the tables
 * below. Drawing uses only +, -, *, / and sqrt (all correctly rounded), and
 * the build is ISO C (no FMA contraction), so images are reproducible. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "loco_train.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ======================================================================== */
/* Tables                                                                   */
/* ======================================================================== */

enum {
    F_EYE_SIZE, F_IRIS_COLOUR, F_GAZE, F_MOUTH_CURVE, F_MOUTH_WIDTH, F_MOUTH_OPEN, F_HAIR_COLOUR, F_HAIR_LENGTH,
    F_FRINGE_LENGTH, F_FRINGE_PART, F_BLUSH, F_SHIRT_COLOUR, F_SKIN_TONE, F_BACKGROUND, F_OFFSET_X, F_OFFSET_Y,
    F_SCALE, F_COUNT
};
_Static_assert(F_COUNT == LOCO_FACES_N_FACTORS, "factor table");

static const struct {
    const char *name, *part;
} factor_table[F_COUNT] = {
    {"eye_size", "eyes"},        {"iris_colour", "irises"},  {"gaze", "eyes"},
    {"mouth_curve", "mouth"},    {"mouth_width", "mouth"},   {"mouth_open", "mouth"},
    {"hair_colour", "hair"},     {"hair_length", "hair"},    {"fringe_length", "hair"},
    {"fringe_part", "hair"},     {"blush", "cheeks"},        {"shirt_colour", "clothes"},
    {"skin_tone", NULL},         {"background", NULL},       {"offset_x", NULL},
    {"offset_y", NULL},          {"scale", NULL},
};

static const char *const label_names[LOCO_FACES_N_LABELS] = {
    "background", "skin", "hair", "left_eye_white", "right_eye_white", "left_iris",
    "right_iris", "mouth", "nose", "cheeks", "clothes",
};

#define B(l) (1u << (l))
static const struct {
    const char *name;
    uint32_t bits;
} part_groups[] = {
    {"left_eye", B(LOCO_LABEL_LEFT_EYE_WHITE) | B(LOCO_LABEL_LEFT_IRIS)},
    {"right_eye", B(LOCO_LABEL_RIGHT_EYE_WHITE) | B(LOCO_LABEL_RIGHT_IRIS)},
    {"eyes", B(LOCO_LABEL_LEFT_EYE_WHITE) | B(LOCO_LABEL_LEFT_IRIS) | B(LOCO_LABEL_RIGHT_EYE_WHITE) |
                 B(LOCO_LABEL_RIGHT_IRIS)},
    {"eye_whites", B(LOCO_LABEL_LEFT_EYE_WHITE) | B(LOCO_LABEL_RIGHT_EYE_WHITE)},
    {"irises", B(LOCO_LABEL_LEFT_IRIS) | B(LOCO_LABEL_RIGHT_IRIS)},
    {"face", B(LOCO_LABEL_SKIN) | B(LOCO_LABEL_LEFT_EYE_WHITE) | B(LOCO_LABEL_RIGHT_EYE_WHITE) |
                 B(LOCO_LABEL_LEFT_IRIS) | B(LOCO_LABEL_RIGHT_IRIS) | B(LOCO_LABEL_MOUTH) | B(LOCO_LABEL_NOSE) |
                 B(LOCO_LABEL_CHEEKS)},
    {"head", B(LOCO_LABEL_SKIN) | B(LOCO_LABEL_HAIR) | B(LOCO_LABEL_LEFT_EYE_WHITE) |
                 B(LOCO_LABEL_RIGHT_EYE_WHITE) | B(LOCO_LABEL_LEFT_IRIS) | B(LOCO_LABEL_RIGHT_IRIS) |
                 B(LOCO_LABEL_MOUTH) | B(LOCO_LABEL_NOSE) | B(LOCO_LABEL_CHEEKS)},
};
#undef B
#define N_GROUPS ((int)(sizeof part_groups / sizeof part_groups[0]))

int loco_faces_n_factors(void) { return F_COUNT; }

const char *loco_faces_factor_name(int i) { return i >= 0 && i < F_COUNT ? factor_table[i].name : NULL; }

const char *loco_faces_factor_part(int i) { return i >= 0 && i < F_COUNT ? factor_table[i].part : NULL; }

const char *loco_faces_label_name(int label) {
    return label >= 0 && label < LOCO_FACES_N_LABELS ? label_names[label] : NULL;
}

int loco_faces_n_parts(void) { return LOCO_FACES_N_LABELS + N_GROUPS; }

const char *loco_faces_part_name(int i) {
    if (i < 0 || i >= LOCO_FACES_N_LABELS + N_GROUPS) return NULL;
    return i < LOCO_FACES_N_LABELS ? label_names[i] : part_groups[i - LOCO_FACES_N_LABELS].name;
}

loco_status loco_faces_part_labels(const char *part, uint32_t *label_bits) {
    if (!part || !label_bits) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_faces_part_labels: NULL argument");
    for (int l = 0; l < LOCO_FACES_N_LABELS; l++)
        if (strcmp(part, label_names[l]) == 0) {
            *label_bits = 1u << l;
            return LOCO_OK;
        }
    for (int g = 0; g < N_GROUPS; g++)
        if (strcmp(part, part_groups[g].name) == 0) {
            *label_bits = part_groups[g].bits;
            return LOCO_OK;
        }
    char list[512]; /* for the message only: the fixed part names (~170 characters) */
    size_t k = 0;
    list[0] = 0;
    for (int i = 0; i < loco_faces_n_parts() && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", loco_faces_part_name(i));
    return loco_fail(LOCO_E_INVALID_ARGUMENT, "unknown part '%.64s'; valid parts: %s", part, list);
}

/* ======================================================================== */
/* Factors                                                                  */
/* ======================================================================== */

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

loco_status loco_faces_sample_version(uint64_t seed, int index, int version, float *factors) {
    if (!factors || index < 0)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_faces_sample: %s", factors ? "negative index" : "NULL factors");
    if (version != 1 && version != 2)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "faces generator version %d: there are versions 1 and 2", version);
    loco_rng r;
    loco_rng_seed(&r, mix64(seed ^ mix64((uint64_t)index ^ 0x5fa7f0ce5eedull)));
    for (int i = 0; i < F_COUNT; i++) {
        float f = (float)loco_rng_uniform(&r);
        factors[i] = f < 1.0f ? f : 0x1.fffffep-1f; /* rounding may reach 1 */
    }
    /* The global geometry is drawn (the stream and every other factor stay
     * as they were) but not used: position and scale jitter moved every
     * part at once, and a model learned hair length, eye size and mouth
     * together from it (docs/datasets.md, "Generator versions"). Version 1
     * kept them. */
    if (version >= 2) factors[F_OFFSET_X] = factors[F_OFFSET_Y] = factors[F_SCALE] = 0.5f;
    return LOCO_OK;
}

loco_status loco_faces_sample(uint64_t seed, int index, float *factors) {
    return loco_faces_sample_version(seed, index, LOCO_FACES_VERSION, factors);
}

/* ======================================================================== */
/* Drawing                                                                  */
/* ======================================================================== */

typedef struct col {
    double r, g, b;
} col;

static col lerp(col a, col b, double t) {
    return (col){a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}

/* piecewise-linear palette of n >= 2 stops, t in [0, 1] */
static col palette(const col *stops, int n, double t) {
    double p = t * (n - 1);
    int i = (int)p;
    if (i >= n - 1) i = n - 2;
    return lerp(stops[i], stops[i + 1], p - i);
}

static const col iris_stops[] = {{40, 90, 185}, {35, 135, 160}, {55, 135, 65}, {135, 100, 40}, {85, 48, 22}};
static const col hair_stops[] = {{28, 22, 22}, {78, 48, 30}, {130, 80, 42}, {170, 70, 32}, {222, 182, 100}};
static const col bg_colours[4] = {{168, 198, 228}, {178, 212, 172}, {204, 188, 224}, {206, 206, 200}};
static const col skin_light = {246, 214, 188}, skin_dark = {226, 178, 142};
static const col sclera_col = {250, 250, 250}, lid_col = {55, 35, 30}, pupil_col = {18, 14, 14};
static const col lip_col = {192, 72, 84}, mouth_in_col = {85, 22, 32}, blush_col = {238, 112, 128};

/* hue h in [0, 1) at saturation 0.5, value 0.72 */
static col shirt_colour(double h) {
    const double v = 0.72 * 255, s = 0.5;
    double p = h * 6;
    int i = (int)p;
    double f = p - i, lo = v * (1 - s), dn = v * (1 - s * f), up = v * (1 - s * (1 - f));
    switch (i % 6) {
    case 0: return (col){v, up, lo};
    case 1: return (col){dn, v, lo};
    case 2: return (col){lo, v, up};
    case 3: return (col){lo, dn, v};
    case 4: return (col){up, lo, v};
    default: return (col){v, lo, dn};
    }
}

/* Geometry, in face coordinates (u right, v down, pixels at scale 1, origin
 * at the face centre, which sits at image (16, 15.5) before jitter). */
#define FACE_CX 16.0
#define FACE_CY 15.5
#define FACE_RX 10.0
#define FACE_RY 11.5
#define EYE_X 5.0
#define EYE_Y (-1.0)
#define NOSE_Y 2.5
#define CHEEK_X 6.2
#define CHEEK_Y 4.0
#define CHEEK_RX 2.4
#define CHEEK_RY 1.7
#define MOUTH_Y 7.0
#define CAP_Y (-1.5)
#define CAP_RX 11.6
#define CAP_RY 12.2
#define NECK_RX 3.6

typedef struct scene {
    double ox, oy, inv_s;
    col skin, bg, hair, iris, shirt;
    double blush;
    double eye_rx, eye_ry, iris_r, pupil_r, gaze;
    double mouth_w, mouth_c, mouth_open;
    double hair_end, fringe_base, fringe_slant;
} scene;

static void scene_init(scene *sc, const float *f) {
    sc->ox = FACE_CX + (f[F_OFFSET_X] - 0.5) * 1.5;
    sc->oy = FACE_CY + (f[F_OFFSET_Y] - 0.5) * 1.5;
    sc->inv_s = 1.0 / (0.97 + 0.06 * f[F_SCALE]);
    sc->skin = lerp(skin_light, skin_dark, f[F_SKIN_TONE]);
    int bi = (int)(f[F_BACKGROUND] * 4);
    sc->bg = bg_colours[bi > 3 ? 3 : bi];
    sc->hair = palette(hair_stops, 5, f[F_HAIR_COLOUR]);
    sc->iris = palette(iris_stops, 5, f[F_IRIS_COLOUR]);
    sc->shirt = shirt_colour(f[F_SHIRT_COLOUR] < 1 ? f[F_SHIRT_COLOUR] : 0);
    sc->blush = 0.75 * f[F_BLUSH];
    sc->eye_ry = 2.6 + 1.0 * f[F_EYE_SIZE];
    sc->eye_rx = 1.15 * sc->eye_ry;
    sc->iris_r = 0.62 * sc->eye_ry;
    sc->pupil_r = 0.45 * sc->iris_r;
    sc->gaze = (2.0 * f[F_GAZE] - 1.0) * (sc->eye_rx - sc->iris_r - 0.25);
    sc->mouth_w = 4.0 + 2.5 * f[F_MOUTH_WIDTH];
    sc->mouth_c = 2.0 * (2.0 * f[F_MOUTH_CURVE] - 1.0);
    sc->mouth_open = 1.5 * f[F_MOUTH_OPEN];
    sc->hair_end = -1.0 + 14.0 * f[F_HAIR_LENGTH];
    sc->fringe_base = -9.5 + 3.0 * f[F_FRINGE_LENGTH];
    sc->fringe_slant = 1.2 * (2.0 * f[F_FRINGE_PART] - 1.0);
}

static double sq(double a) { return a * a; }

/* The colour and label at face coordinates (u, v), top layer first. */
static int shade(const scene *sc, double u, double v, col *c) {
    /* fringe: hair in front of the forehead, above a scalloped line */
    int in_cap = sq(u / CAP_RX) + sq((v - CAP_Y) / CAP_RY) <= 1.0;
    if (in_cap) {
        double t = u / 3.3 + 100.0;
        t -= (double)(long)t;
        double fy = sc->fringe_base + sc->fringe_slant * u / 10.0 + 0.7 * 4.0 * t * (1.0 - t);
        if (v < fy) {
            *c = sc->hair;
            return LOCO_LABEL_HAIR;
        }
    }
    /* eyes */
    for (int side = 0; side < 2; side++) {
        double ex = side ? EYE_X : -EYE_X, du = u - ex, dv = v - EYE_Y;
        double e = sq(du / sc->eye_rx) + sq(dv / sc->eye_ry);
        if (e > 1.0) continue;
        double depth = (1.0 - sqrt(e)) * sc->eye_ry; /* ~ distance to the rim */
        if (depth < (dv < 0 ? 0.6 : 0.3)) {
            *c = lid_col;
            return side ? LOCO_LABEL_RIGHT_EYE_WHITE : LOCO_LABEL_LEFT_EYE_WHITE;
        }
        double ir = sq(du - sc->gaze) + sq(dv);
        if (ir <= sq(sc->iris_r)) {
            *c = ir <= sq(sc->pupil_r) ? pupil_col : sc->iris;
            return side ? LOCO_LABEL_RIGHT_IRIS : LOCO_LABEL_LEFT_IRIS;
        }
        *c = sclera_col;
        return side ? LOCO_LABEL_RIGHT_EYE_WHITE : LOCO_LABEL_LEFT_EYE_WHITE;
    }
    /* mouth: lips around a curved centre line, open inside */
    double mu = u / sc->mouth_w;
    if (mu > -1.0 && mu < 1.0) {
        double taper = sqrt(1.0 - mu * mu);
        double yc = MOUTH_Y - sc->mouth_c * (mu * mu - 0.4);
        double hi = sc->mouth_open * taper, ho = hi + (1.1 - 0.2 * sc->mouth_open) * (0.35 + 0.65 * taper);
        double d = v - yc;
        if (d < 0) d = -d;
        if (d <= ho) {
            *c = d < hi ? mouth_in_col : lip_col;
            return LOCO_LABEL_MOUTH;
        }
    }
    /* face (egg-shaped: narrower towards the chin) */
    double frx = v > 0 ? FACE_RX * (1.0 - 0.15 * v / FACE_RY) : FACE_RX;
    if (sq(u / frx) + sq(v / FACE_RY) <= 1.0) {
        if (sq(u / 1.1) + sq((v - NOSE_Y) / 0.75) <= 1.0) {
            *c = (col){sc->skin.r * 0.8, sc->skin.g * 0.78, sc->skin.b * 0.78};
            return LOCO_LABEL_NOSE;
        }
        double q = sq((u < 0 ? u + CHEEK_X : u - CHEEK_X) / CHEEK_RX) + sq((v - CHEEK_Y) / CHEEK_RY);
        if (q <= 1.0) {
            *c = lerp(sc->skin, blush_col, sc->blush * (1.0 - q));
            return LOCO_LABEL_CHEEKS;
        }
        *c = sc->skin;
        return LOCO_LABEL_SKIN;
    }
    /* shirt, rounded shoulders in front of the neck's base */
    if (v >= 12.5 && sq(u / 15.0) + sq((v - 24.0) / 11.5) <= 1.0) {
        *c = sc->shirt;
        return LOCO_LABEL_CLOTHES;
    }
    if (u > -NECK_RX && u < NECK_RX && v > 4.0) {
        *c = sc->skin;
        return LOCO_LABEL_SKIN;
    }
    /* hair behind the head: the cap, and side locks down to hair_end */
    if (in_cap) {
        *c = sc->hair;
        return LOCO_LABEL_HAIR;
    }
    if (v > CAP_Y && u > -CAP_RX && u < CAP_RX) {
        double bottom = sc->hair_end + 1.5 * sqrt(1.0 - sq(u / CAP_RX));
        if (v < bottom) {
            *c = sc->hair;
            return LOCO_LABEL_HAIR;
        }
    }
    *c = sc->bg;
    return LOCO_LABEL_BACKGROUND;
}

static loco_status check_factors(const float *factors) {
    if (!factors) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_faces_render: NULL factors");
    for (int i = 0; i < F_COUNT; i++)
        if (!(factors[i] >= 0.0f && factors[i] <= 1.0f))
            return loco_fail(LOCO_E_INVALID_ARGUMENT, "face factor %d (%s) is %g, outside [0, 1]", i,
                             factor_table[i].name, (double)factors[i]);
    return LOCO_OK;
}

#define SS 4 /* subsamples per pixel side */

loco_status loco_faces_render(const float *factors, uint8_t *rgb, uint8_t *labels) {
    loco_status st = check_factors(factors);
    if (st) return st;
    if (!rgb) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_faces_render: NULL rgb");
    scene sc;
    scene_init(&sc, factors);
    const int N = LOCO_FACES_SIZE;
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++) {
            double acc[3] = {0, 0, 0};
            int count[LOCO_FACES_N_LABELS] = {0};
            for (int sy = 0; sy < SS; sy++)
                for (int sx = 0; sx < SS; sx++) {
                    double px = x + (sx + 0.5) / SS, py = y + (sy + 0.5) / SS;
                    col c;
                    int l = shade(&sc, (px - sc.ox) * sc.inv_s, (py - sc.oy) * sc.inv_s, &c);
                    acc[0] += c.r;
                    acc[1] += c.g;
                    acc[2] += c.b;
                    count[l]++;
                }
            for (int k = 0; k < 3; k++) {
                double m = acc[k] / (SS * SS) + 0.5;
                rgb[(y * N + x) * 3 + k] = (uint8_t)(m < 0 ? 0 : m > 255 ? 255 : m);
            }
            if (labels) {
                int best = 0;
                for (int l = 1; l < LOCO_FACES_N_LABELS; l++)
                    if (count[l] >= count[best]) best = l;
                labels[y * N + x] = (uint8_t)best;
            }
        }
    return LOCO_OK;
}

loco_status loco_faces_generate_version(uint64_t seed, int index, int version, uint8_t *rgb, uint8_t *labels,
                                        float *factors) {
    float f[F_COUNT];
    loco_status st = loco_faces_sample_version(seed, index, version, f);
    if (st) return st;
    if ((st = loco_faces_render(f, rgb, labels))) return st;
    if (factors) memcpy(factors, f, sizeof f);
    return LOCO_OK;
}

loco_status loco_faces_generate(uint64_t seed, int index, uint8_t *rgb, uint8_t *labels, float *factors) {
    return loco_faces_generate_version(seed, index, LOCO_FACES_VERSION, rgb, labels, factors);
}

/* ======================================================================== */
/* Part masks                                                               */
/* ======================================================================== */

static loco_status check_labels(const uint8_t *labels, int h, int w, const char *what) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (labels[(size_t)y * w + x] >= LOCO_FACES_N_LABELS)
                return loco_fail(LOCO_E_FORMAT,
                                 "%s: not a part label map: value %d at (x %d, y %d) is not a label (0..%d)", what,
                                 labels[(size_t)y * w + x], x, y, LOCO_FACES_N_LABELS - 1);
    return LOCO_OK;
}

loco_status loco_part_mask(const uint8_t *labels, int h, int w, const char *part, int dilate, uint8_t *mask) {
    if (!labels || !mask || !part || h < 1 || w < 1 || h > 16384 || w > 16384)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_part_mask: bad arguments");
    if (dilate < 0 || dilate > 64)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "mask dilation %d is outside 0..64 pixels", dilate);
    uint32_t bits;
    loco_status st = loco_faces_part_labels(part, &bits);
    if (st) return st;
    if ((st = check_labels(labels, h, w, "label map"))) return st;
    size_t n = (size_t)h * w, count = 0;
    for (size_t i = 0; i < n; i++) {
        mask[i] = (uint8_t)((bits >> labels[i]) & 1u);
        count += mask[i];
    }
    if (!count) return loco_fail(LOCO_E_NOT_FOUND, "part '%s' is absent from the label map: the mask would be empty", part);
    if (dilate == 0) return LOCO_OK;
    /* Chebyshev dilation = max filter over rows, then over columns */
    uint8_t *tmp = malloc(n);
    if (!tmp) return loco_fail(LOCO_E_NOMEM, "loco_part_mask: out of memory");
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int lo = x - dilate < 0 ? 0 : x - dilate, hi = x + dilate >= w ? w - 1 : x + dilate;
            uint8_t m = 0;
            for (int k = lo; k <= hi && !m; k++) m = mask[(size_t)y * w + k];
            tmp[(size_t)y * w + x] = m;
        }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int lo = y - dilate < 0 ? 0 : y - dilate, hi = y + dilate >= h ? h - 1 : y + dilate;
            uint8_t m = 0;
            for (int k = lo; k <= hi && !m; k++) m = tmp[(size_t)k * w + x];
            mask[(size_t)y * w + x] = m;
        }
    free(tmp);
    return LOCO_OK;
}

loco_status loco_labels_read_png(const char *path, loco_image *img) {
    if (!path || !img) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_labels_read_png: NULL argument");
    loco_status st = loco_png_read(path, img);
    if (st) return st;
    /* loco_png_read reduces 16-bit samples to 8 bits, which would turn small
     * labels into background: a label map must be 8-bit (IHDR's bit depth is
     * byte 24 of a PNG that loco_png_read accepted) */
    unsigned char head[25];
    FILE *f = fopen(path, "rb");
    int depth = f && fread(head, 1, sizeof head, f) == sizeof head ? head[24] : 8;
    if (f) fclose(f);
    if (depth == 16) {
        st = loco_fail(LOCO_E_FORMAT, "%s: not a part label map: 16-bit samples (a label map is one 8-bit gray channel)",
                       path);
    } else if (img->channels != 1) {
        st = loco_fail(LOCO_E_FORMAT, "%s: not a part label map: %d channels (a label map is one 8-bit gray channel)",
                       path, img->channels);
    } else {
        st = check_labels(img->data, img->height, img->width, path);
    }
    if (st) {
        free(img->data);
        memset(img, 0, sizeof *img);
    }
    return st;
}

/* ======================================================================== */
/* idx files                                                                */
/* ======================================================================== */

#define IDX_MAX_ITEM ((uint64_t)1 << 24)
#define IDX_MAX_TOTAL ((uint64_t)1 << 32)
#define IDX_CHUNK ((size_t)1 << 20)

/* Reads up to n bytes; returns the count read (< n only at the end of the
 * stream), or -1 on a gzip error (message in *err). */
static int64_t gz_read_all(gzFile g, uint8_t *dst, size_t n, const char **err) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got < IDX_CHUNK ? n - got : IDX_CHUNK;
        int r = gzread(g, dst + got, (unsigned)want);
        if (r < 0) {
            int code;
            *err = gzerror(g, &code);
            return -1;
        }
        if (r == 0) {
            int code;
            const char *m = gzerror(g, &code);
            if (code != Z_OK && code != Z_BUF_ERROR) {
                *err = m;
                return -1;
            }
            /* Z_BUF_ERROR: the gzip stream ended early */
            if (code == Z_BUF_ERROR) {
                *err = "unexpected end of the compressed stream";
                return -1;
            }
            break;
        }
        got += (size_t)r;
    }
    return (int64_t)got;
}

static const char *idx_type_name(int t) {
    switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0b: return "short";
    case 0x0c: return "int";
    case 0x0d: return "float";
    case 0x0e: return "double";
    default: return "unknown";
    }
}

loco_status loco_idx_read(const char *path, int64_t max_items, loco_idx *out) {
    if (!path || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_idx_read: NULL argument");
    memset(out, 0, sizeof *out);
    /* only a regular file is opened, never blocking (FIFOs, devices) */
    int fd;
    uint64_t fsize;
    loco_status ost = loco_open_file(path, &fd, &fsize);
    if (ost) return ost;
    gzFile g = gzdopen(fd, "rb");
    if (!g) {
        close(fd);
        return loco_fail(LOCO_E_NOMEM, "%s: cannot start reading (zlib)", path);
    }
    gzbuffer(g, 1 << 16);
    loco_status st = LOCO_OK;
    uint8_t *data = NULL;
    const char *zerr = NULL;
    uint8_t hdr[4 + 4 * 4];
    int64_t r = gz_read_all(g, hdr, 4, &zerr);
    if (r < 0) {
        st = loco_fail(LOCO_E_FORMAT, "%s: corrupt gzip data: %s", path, zerr);
        goto done;
    }
    if (r < 4 || hdr[0] != 0 || hdr[1] != 0) {
        st = loco_fail(LOCO_E_FORMAT, "%s: not an idx file (the magic number must start with two zero bytes)", path);
        goto done;
    }
    int type = hdr[2], nd = hdr[3];
    if (type != 0x08) {
        st = loco_fail(LOCO_E_UNSUPPORTED, "%s: idx data type 0x%02x (%s) is not supported (only 0x08, unsigned byte)",
                       path, type, idx_type_name(type));
        goto done;
    }
    if (nd < 1 || nd > 4) {
        st = loco_fail(LOCO_E_UNSUPPORTED, "%s: idx file with %d dimensions (1..4 are supported)", path, nd);
        goto done;
    }
    r = gz_read_all(g, hdr + 4, (size_t)nd * 4, &zerr);
    if (r < 0) {
        st = loco_fail(LOCO_E_FORMAT, "%s: corrupt gzip data: %s", path, zerr);
        goto done;
    }
    if (r < nd * 4) {
        st = loco_fail(LOCO_E_FORMAT, "%s: truncated idx header (%d dimensions announced)", path, nd);
        goto done;
    }
    uint64_t item = 1;
    for (int i = 0; i < nd; i++) {
        const uint8_t *p = hdr + 4 + 4 * i;
        uint64_t d = (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
        out->dims[i] = (int64_t)d;
        if (d == 0) {
            st = loco_fail(LOCO_E_FORMAT, "%s: idx dimension %d is 0", path, i);
            goto done;
        }
        if (i > 0) item *= d; /* <= 2^24 * 2^32 before the check below: no overflow */
        if (item > IDX_MAX_ITEM) {
            st = loco_fail(LOCO_E_FORMAT, "%s: absurd idx dimensions: one item would exceed %llu bytes", path,
                           (unsigned long long)IDX_MAX_ITEM);
            goto done;
        }
    }
    uint64_t file_items = (uint64_t)out->dims[0];
    if (file_items * item > IDX_MAX_TOTAL) {
        st = loco_fail(LOCO_E_FORMAT, "%s: absurd idx dimensions: %llu items of %llu bytes exceed %llu bytes", path,
                       (unsigned long long)file_items, (unsigned long long)item, (unsigned long long)IDX_MAX_TOTAL);
        goto done;
    }
    uint64_t items = max_items > 0 && (uint64_t)max_items < file_items ? (uint64_t)max_items : file_items;
    size_t need = (size_t)(items * item), cap = need < IDX_CHUNK ? need : IDX_CHUNK, got = 0;
    data = malloc(cap);
    if (!data) {
        st = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* grow with the data actually present, so a lying header costs nothing */
    while (got < need) {
        if (got == cap) {
            size_t ncap = cap * 2 < need ? cap * 2 : need;
            uint8_t *nd2 = realloc(data, ncap);
            if (!nd2) {
                st = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
                goto done;
            }
            data = nd2;
            cap = ncap;
        }
        r = gz_read_all(g, data + got, cap - got, &zerr);
        if (r < 0) {
            st = loco_fail(LOCO_E_FORMAT, "%s: corrupt gzip data after %zu data bytes: %s", path, got, zerr);
            goto done;
        }
        got += (size_t)r;
        if (got < cap) break; /* end of stream */
    }
    if (got < need) {
        st = loco_fail(LOCO_E_FORMAT, "%s: truncated: the header announces %llu items of %llu bytes, the file holds %zu data bytes",
                       path, (unsigned long long)file_items, (unsigned long long)item, got);
        goto done;
    }
    if (items == file_items) {
        uint8_t extra;
        r = gz_read_all(g, &extra, 1, &zerr);
        if (r != 0) {
            st = r < 0 ? loco_fail(LOCO_E_FORMAT, "%s: corrupt gzip data at the end: %s", path, zerr)
                       : loco_fail(LOCO_E_FORMAT, "%s: trailing bytes after the %llu announced items", path,
                                   (unsigned long long)file_items);
            goto done;
        }
    }
    out->ndim = nd;
    out->dims[0] = (int64_t)items;
    out->file_items = (int64_t)file_items;
    out->data = data;
    data = NULL;
done:
    gzclose(g); /* closes fd */
    free(data);
    if (st) memset(out, 0, sizeof *out);
    return st;
}

/* ======================================================================== */
/* Fashion-MNIST                                                            */
/* ======================================================================== */

static const char *const fmnist_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                               "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

const char *loco_fashion_mnist_class(int label) { return label >= 0 && label < 10 ? fmnist_classes[label] : NULL; }

/* dir/<stem>.gz if something is there, else dir/<stem>; *path is malloc'd
 * (any length). A folder or FIFO in a file's place is named as such. */
static loco_status find_idx(const char *dir, const char *stem, char **path) {
    *path = NULL;
    for (int gz = 1; gz >= 0; gz--) {
        size_t n = strlen(dir) + strlen(stem) + 5;
        char *p = malloc(n);
        if (!p) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", dir);
        snprintf(p, n, "%s/%s%s", dir, stem, gz ? ".gz" : "");
        loco_status s = loco_check_file(p);
        if (s == LOCO_OK) {
            *path = p;
            return LOCO_OK;
        }
        free(p);
        if (s != LOCO_E_NOT_FOUND) return s;
    }
    return loco_fail(LOCO_E_NOT_FOUND,
                     "%s: neither %s.gz nor %s found (Fashion-MNIST: install Debian's dataset-fashion-mnist)", dir,
                     stem, stem);
}

loco_status loco_fashion_mnist_read(const char *dir, const char *split, int max_count, uint8_t **images,
                                    uint8_t **labels, int *n) {
    if (!images || !labels || !n || !split)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_fashion_mnist_read: NULL argument");
    *images = NULL;
    *labels = NULL;
    *n = 0;
    const char *pre;
    if (strcmp(split, "train") == 0) pre = "train";
    else if (strcmp(split, "test") == 0 || strcmp(split, "t10k") == 0) pre = "t10k";
    else return loco_fail(LOCO_E_INVALID_ARGUMENT, "Fashion-MNIST split '%.64s': use train or test", split);
    if (!dir) dir = LOCO_FASHION_MNIST_DIR;
    char *ip = NULL, *lp = NULL, stem[64]; /* stem: "t10k-labels-idx1-ubyte" at most */
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", pre);
    loco_status st = find_idx(dir, stem, &ip);
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", pre);
    if (!st) st = find_idx(dir, stem, &lp);
    loco_idx im = {0}, lb = {0};
    if (!st && !(st = loco_idx_read(ip, max_count, &im))) st = loco_idx_read(lp, max_count, &lb);
    if (st) {
        free(im.data);
        free(ip);
        free(lp);
        return st;
    }
    uint8_t *out = NULL;
    if (im.ndim != 3 || im.dims[1] != 28 || im.dims[2] != 28) {
        st = loco_fail(LOCO_E_FORMAT, "%s: Fashion-MNIST images must be [N, 28, 28]", ip);
        goto done;
    }
    if (lb.ndim != 1 || lb.file_items != im.file_items) {
        st = loco_fail(LOCO_E_FORMAT, "%s: labels must be [N] with N = %lld, the image count of %s", lp,
                       (long long)im.file_items, ip);
        goto done;
    }
    int64_t cnt = im.dims[0];
    if (cnt < 1 || cnt > (1 << 24) || lb.dims[0] != cnt) {
        st = loco_fail(LOCO_E_FORMAT, "%s: %lld images, %lld labels read", ip, (long long)cnt, (long long)lb.dims[0]);
        goto done;
    }
    for (int64_t i = 0; i < cnt; i++)
        if (lb.data[i] > 9) {
            st = loco_fail(LOCO_E_FORMAT, "%s: label %d of item %lld is not a class 0..9", lp, lb.data[i], (long long)i);
            goto done;
        }
    out = calloc((size_t)cnt, 32 * 32);
    if (!out) {
        st = loco_fail(LOCO_E_NOMEM, "Fashion-MNIST: out of memory for %lld images", (long long)cnt);
        goto done;
    }
    for (int64_t i = 0; i < cnt; i++)
        for (int y = 0; y < 28; y++) memcpy(out + i * 1024 + (y + 2) * 32 + 2, im.data + i * 784 + y * 28, 28);
    *images = out;
    *labels = lb.data;
    lb.data = NULL;
    *n = (int)cnt;
done:
    free(im.data);
    free(lb.data);
    free(ip);
    free(lp);
    return st;
}
