/* ops_math.h - scalar helpers shared by the forward and derivative kernels. */
#ifndef LOCO_OPS_MATH_H
#define LOCO_OPS_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for float, vectorisable; relative error about 2 ulp on the range
 * used here; saturates to 0 below -87.3 and to +inf above 88.7. */
static inline float fast_expf(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.7f ? 88.7f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;  /* ln2 split in two parts (Cody-Waite) */
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale); /* a bit cast the vectoriser understands */
    return p * scale;
}

static inline float silu1(float x) { return x / (1.0f + fast_expf(-x)); }

/* d/dx silu(x) = s (1 + x (1 - s)), s = sigmoid(x) */
static inline float dsilu1(float x) {
    float s = 1.0f / (1.0f + fast_expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

#endif
