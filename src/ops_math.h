/* ops_math.h - scalar helpers shared by the forward and derivative kernels. */
#ifndef LOCO_OPS_MATH_H
#define LOCO_OPS_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for float, vectorisable; relative error about 2 ulp on the range
 * used here. Total over all floats, with no undefined behaviour: NaN gives
 * NaN, x above 88.7 (and +inf) gives +inf, x below -87.3 (and -inf) gives 0. */
static inline float fast_expf(float x) {
    float c = x < -87.3f ? -87.3f : x;
    c = c > 88.7f ? 88.7f : c;
    c = c == c ? c : 0.0f; /* NaN: any finite value, the result is replaced below */
    float n = floorf(c * 1.44269504088896341f + 0.5f); /* in [-126, 128] */
    float r = c - n * 0.693359375f;  /* ln2 split in two parts (Cody-Waite) */
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^n as 2^h 2^(n-h), h = floor(n/2), both factors normal numbers, so
     * exp(x) just below the float range stays finite */
    int32_t ni = (int32_t)n, h = ni >> 1;
    uint32_t b1 = (uint32_t)(h + 127) << 23, b2 = (uint32_t)(ni - h + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1); /* bit casts the vectoriser understands */
    memcpy(&s2, &b2, sizeof s2);
    float e = p * s1 * s2;
    e = x < -87.3f ? 0.0f : e;
    e = x > 88.7f ? INFINITY : e;
    return x == x ? e : x;
}

static inline float silu1(float x) { return x / (1.0f + fast_expf(-x)); }

/* d/dx silu(x) = s (1 + x (1 - s)), s = sigmoid(x) */
static inline float dsilu1(float x) {
    float s = 1.0f / (1.0f + fast_expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

#endif
