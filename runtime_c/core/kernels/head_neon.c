/* head_neon.c: the head rows for any AArch64 CPU (baseline NEON, no flags).
 *
 * Integer rows: head_neon.h with SMULL/SMULL2 and SADALP as the dot product (byte products
 * fit int16, pairs are widened into int32 lanes: exact). Float rows: four float32x4
 * accumulators with FMA over 16 elements, summed pairwise at the end (their own order: f16
 * and f32 logits may differ from other ISAs in the last bits, never between thread counts).
 */
#include "head_neon.h"

static inline int32x4_t dot_smull(int8x16_t c0, int8x16_t c1, const int8_t *xq) {
    const int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
    int32x4_t s = vpaddlq_s16(vmull_s8(vget_low_s8(c0), vget_low_s8(x0)));
    s = vpadalq_s16(s, vmull_high_s8(c0, x0));
    s = vpadalq_s16(s, vmull_s8(vget_low_s8(c1), vget_low_s8(x1)));
    return vpadalq_s16(s, vmull_high_s8(c1, x1));
}

void head_q8_neon(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_q8_rows_neon(dot_smull, q, d, in, logits, E, v0, v1);
}
void head_q6_neon(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows_neon(dot_smull, 6, q, d, in, logits, E, v0, v1);
}
void head_q4_neon(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows_neon(dot_smull, 4, q, d, in, logits, E, v0, v1);
}

/* Float rows: four FMA chains over 16 elements, summed pairwise; load4 widens four weights
 * of the row to f32 (f16 converted, or f32 as they are); the tail goes through tail(). */
static inline float sum4(const float32x4_t a[4]) {
    return vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
}

static inline float32x4_t load4_f16(const void *row, int i) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)row + i)));
}
static inline float32x4_t load4_f32(const void *row, int i) { return vld1q_f32((const float *)row + i); }
static inline float tail_f16(const void *row, int i) { return head_f16_table[((const uint16_t *)row)[i]]; }
static inline float tail_f32(const void *row, int i) { return ((const float *)row)[i]; }

static inline __attribute__((always_inline))
void float_rows(float32x4_t (*load4)(const void *, int), float (*tail)(const void *, int), const size_t elem,
                const void *m, const float *x, float *logits, int E, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const void *row = (const uint8_t *)m + (size_t)v * E * elem;
        float32x4_t a[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        int i = 0;
        for (; i + 16 <= E; i += 16) {
            __builtin_prefetch((const uint8_t *)row + (size_t)i * elem + 4096);
            for (int j = 0; j < 4; j++) a[j] = vfmaq_f32(a[j], load4(row, i + 4 * j), vld1q_f32(x + i + 4 * j));
        }
        float sum = sum4(a);
        for (; i < E; i++) sum += tail(row, i) * x[i];
        logits[v] = sum;
    }
}

void head_f16_neon(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1) {
    float_rows(load4_f16, tail_f16, 2, m, x, logits, E, v0, v1);
}

void head_f32_neon(const float *m, const float *x, float *logits, int E, int v0, int v1) {
    float_rows(load4_f32, tail_f32, 4, m, x, logits, E, v0, v1);
}
