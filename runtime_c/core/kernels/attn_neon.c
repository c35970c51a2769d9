/* attn_neon.c: the attention inner loops with AArch64 NEON (baseline: f16 conversion is
 * part of ARMv8 Advanced SIMD). Numerics and layout in attn.h; every result equals
 * attn_scalar.c bit for bit: the same products and sums in the same order, no FMA
 * (vmulq then vaddq). A block of eight keys is two registers of four; pv takes sixteen
 * value elements (four registers) for each of the four queries, and a head dim that is not
 * a multiple of 16 ends with eight, four and single elements. */
#include <arm_neon.h>

#include "attn.h"

typedef struct { float32x4_t lo, hi; } f32x8;

static inline __attribute__((always_inline)) f32x8 load8(const void *base, size_t i, const int type) {
    f32x8 r;
    if (type == ATTN_KV_F16) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)base + i));
        r.lo = vcvt_f32_f16(vget_low_f16(h));
        r.hi = vcvt_f32_f16(vget_high_f16(h));
    } else if (type == ATTN_KV_Q8) {
        int16x8_t w = vmovl_s8(vld1_s8((const int8_t *)base + i));
        r.lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
        r.hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)));
    } else {
        r.lo = vld1q_f32((const float *)base + i);
        r.hi = vld1q_f32((const float *)base + i + 4);
    }
    return r;
}

static inline __attribute__((always_inline)) void scores_t(const attn_kv *kv, const float *q, int s0, int nblk,
                                                           float inv_sqrt_d, float *S, const int type) {
    const int D = kv->D;
    for (int b = 0; b < nblk; b++) {
        const int s = s0 + b * ATTN_KB;
        const size_t base = (size_t)(s / ATTN_KB) * D * ATTN_KB;
        float32x4_t a[ATTN_QB][2];
        for (int i = 0; i < ATTN_QB; i++) a[i][0] = a[i][1] = vdupq_n_f32(0.0f);
        for (int d = 0; d < D; d++) {
            f32x8 k = load8(kv->k, base + (size_t)d * ATTN_KB, type);
            for (int i = 0; i < ATTN_QB; i++) {
                float32x4_t qd = vdupq_n_f32(q[(size_t)i * D + d]);
                a[i][0] = vaddq_f32(a[i][0], vmulq_f32(qd, k.lo));
                a[i][1] = vaddq_f32(a[i][1], vmulq_f32(qd, k.hi));
            }
        }
        for (int i = 0; i < ATTN_QB; i++) {
            if (type == ATTN_KV_Q8) {
                a[i][0] = vmulq_f32(a[i][0], vld1q_f32(kv->ks + s));
                a[i][1] = vmulq_f32(a[i][1], vld1q_f32(kv->ks + s + 4));
            }
            vst1q_f32(S + i * ATTN_CHUNK + b * ATTN_KB, vmulq_n_f32(a[i][0], inv_sqrt_d));
            vst1q_f32(S + i * ATTN_CHUNK + b * ATTN_KB + 4, vmulq_n_f32(a[i][1], inv_sqrt_d));
        }
    }
}

void attn_scores_neon(const attn_kv *kv, const float *q, int s0, int nblk, float inv_sqrt_d, float *S) {
    if (kv->type == ATTN_KV_F16) scores_t(kv, q, s0, nblk, inv_sqrt_d, S, ATTN_KV_F16);
    else if (kv->type == ATTN_KV_Q8) scores_t(kv, q, s0, nblk, inv_sqrt_d, S, ATTN_KV_Q8);
    else scores_t(kv, q, s0, nblk, inv_sqrt_d, S, ATTN_KV_F32);
}

static inline __attribute__((always_inline)) float32x4_t load4(const void *base, size_t i, const int type) {
    if (type == ATTN_KV_F16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)base + i)));
    if (type == ATTN_KV_Q8) {
        const int8_t *b = (const int8_t *)base + i;
        const int32_t x[4] = {b[0], b[1], b[2], b[3]};
        return vcvtq_f32_s32(vld1q_s32(x));
    }
    return vld1q_f32((const float *)base + i);
}

/* Columns [d, d + 4 * W) of the four queries' outputs, W = 4, 2 or 1 registers of four. */
static inline __attribute__((always_inline)) void pv_cols(const attn_kv *kv, const float *p, int s0, int n,
                                                         float *o, int d, const int W, const int type) {
    const int D = kv->D;
    float32x4_t a[ATTN_QB][4];
    for (int i = 0; i < ATTN_QB; i++) a[i][0] = a[i][1] = a[i][2] = a[i][3] = vdupq_n_f32(0.0f);
    for (int j = 0; j < n; j++) {
        const size_t row = (size_t)(s0 + j) * D + d;
        float32x4_t v[4];
        if (W >= 2) {
            f32x8 v0 = load8(kv->v, row, type);
            v[0] = v0.lo; v[1] = v0.hi;
            if (W == 4) {
                f32x8 v1 = load8(kv->v, row + 8, type);
                v[2] = v1.lo; v[3] = v1.hi;
            } else {
                v[2] = v[3] = v[0];
            }
        } else {
            v[0] = v[1] = v[2] = v[3] = load4(kv->v, row, type);
        }
        for (int i = 0; i < ATTN_QB; i++) {
            float32x4_t w = vdupq_n_f32(p[i * ATTN_CHUNK + j]);
            for (int r = 0; r < W; r++) a[i][r] = vaddq_f32(a[i][r], vmulq_f32(w, v[r]));
        }
    }
    for (int i = 0; i < ATTN_QB; i++)
        for (int r = 0; r < W; r++) vst1q_f32(o + (size_t)i * D + d + 4 * r, a[i][r]);
}

/* Sixteen columns at a time; a head dim that is not a multiple of 16 (bitnet_b1_58-3B's
 * is 100) ends with eight, then four, then single columns. Every column is the same sum in
 * the same order as attn_scalar.c's. */
static inline __attribute__((always_inline)) void pv_t(const attn_kv *kv, const float *p, int s0, int n, float *o,
                                                       const int type) {
    const int D = kv->D;
    int d = 0;
    for (; d + 16 <= D; d += 16) pv_cols(kv, p, s0, n, o, d, 4, type);
    if (d + 8 <= D) { pv_cols(kv, p, s0, n, o, d, 2, type); d += 8; }
    if (d + 4 <= D) { pv_cols(kv, p, s0, n, o, d, 1, type); d += 4; }
    for (; d < D; d++) attn_pv_column(kv, p, s0, n, o, d);
}

void attn_pv_neon(const attn_kv *kv, const float *p, int s0, int n, float *o) {
    if (kv->type == ATTN_KV_F16) pv_t(kv, p, s0, n, o, ATTN_KV_F16);
    else if (kv->type == ATTN_KV_Q8) pv_t(kv, p, s0, n, o, ATTN_KV_Q8);
    else pv_t(kv, p, s0, n, o, ATTN_KV_F32);
}

void attn_exp_neon(float *x, int n) {
    const float c[8] = {1.98412698e-4f, 1.38888889e-3f, 8.33333333e-3f, 4.16666667e-2f, 1.66666667e-1f, 0.5f, 1.0f, 1.0f};
    const float32x4_t lo = vdupq_n_f32(-87.0f), sh = vdupq_n_f32(12582912.0f);
    for (int i = 0; i < n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        v = vbslq_f32(vcltq_f32(v, lo), lo, v);                       /* x < -87 ? -87 : x */
        float32x4_t kf = vsubq_f32(vaddq_f32(vmulq_n_f32(v, 1.44269504f), sh), sh);
        float32x4_t r = vsubq_f32(vsubq_f32(v, vmulq_n_f32(kf, 0.693359375f)), vmulq_n_f32(kf, -2.12194440e-4f));
        float32x4_t p = vdupq_n_f32(c[0]);
        for (int k = 1; k < 8; k++) p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(c[k]));
        int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(kf), vdupq_n_s32(127)), 23);
        vst1q_f32(x + i, vmulq_f32(p, vreinterpretq_f32_s32(e)));
    }
}
