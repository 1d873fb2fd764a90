/* TEMPORARY naive ADM ops until the ops split lands. */
#include "ops.h"
#include <math.h>
void avgpool2x2_fwd(int B, int C, int h, int w, const float *x, float *y) {
    int ho = h / 2, wo = w / 2;
    for (long bc = 0; bc < (long)B * C; bc++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                const float *p = x + (size_t)bc * h * w + (size_t)(2 * i) * w + 2 * j;
                y[(size_t)bc * ho * wo + (size_t)i * wo + j] = (p[0] + p[1] + p[w] + p[w + 1]) * 0.25f;
            }
}
void avgpool2x2_vjp(int B, int C, int h, int w, const float *dy, float *dx) {
    int ho = h / 2, wo = w / 2;
    for (long bc = 0; bc < (long)B * C; bc++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                float g = dy[(size_t)bc * ho * wo + (size_t)i * wo + j] * 0.25f;
                float *p = dx + (size_t)bc * h * w + (size_t)(2 * i) * w + 2 * j;
                p[0] += g, p[1] += g, p[w] += g, p[w + 1] += g;
            }
}
static float sig(float z) { return 1.0f / (1.0f + expf(-z)); }
void film_fwd(int B, int C, int hw, const float *x, const float *ss, int silu, float *y) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float s = 1.0f + ss[(size_t)b * 2 * C + c], t = ss[(size_t)b * 2 * C + C + c];
            for (int i = 0; i < hw; i++) {
                size_t k = ((size_t)b * C + c) * hw + i;
                float z = x[k] * s + t;
                y[k] = silu ? z * sig(z) : z;
            }
        }
}
void film_jvp(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dx, float *dy) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float s = 1.0f + ss[c], t = ss[C + c];
            for (int i = 0; i < hw; i++) {
                float z = x[(size_t)c * hw + i] * s + t, d = 1.0f;
                if (silu) d = sig(z) * (1.0f + z * (1.0f - sig(z)));
                size_t k = ((size_t)b * C + c) * hw + i;
                dy[k] = dx[k] * s * d;
            }
        }
}
void film_vjp(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dy, float *dx) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float s = 1.0f + ss[c], t = ss[C + c];
            for (int i = 0; i < hw; i++) {
                float z = x[(size_t)c * hw + i] * s + t, d = 1.0f;
                if (silu) d = sig(z) * (1.0f + z * (1.0f - sig(z)));
                size_t k = ((size_t)b * C + c) * hw + i;
                dx[k] += dy[k] * s * d;
            }
        }
}
void film_bwd(int B, int C, int hw, const float *x, const float *ss, int silu, const float *dy, float *dx, float *dss) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float s = 1.0f + ss[(size_t)b * 2 * C + c], t = ss[(size_t)b * 2 * C + C + c];
            double gs = 0, gt = 0;
            for (int i = 0; i < hw; i++) {
                size_t k = ((size_t)b * C + c) * hw + i;
                float z = x[k] * s + t, d = 1.0f;
                if (silu) d = sig(z) * (1.0f + z * (1.0f - sig(z)));
                float e = dy[k] * d;
                if (dx) dx[k] += e * s;
                gs += e * x[k];
                gt += e;
            }
            if (dss) dss[(size_t)b * 2 * C + c] += (float)gs, dss[(size_t)b * 2 * C + C + c] += (float)gt;
        }
}
