/* head_neon.h: the integer head rows the AArch64 head files share (head_neon.c with SMULL,
 * head_neon_dotprod.c with SDOT), written once with the ISA's integer dot product as an
 * explicit parameter and always inlined, so each file compiles them with its own
 * instructions. Numerics and layouts: head.h; these rows do the same float operations in the
 * same order as the portable and x86 rows, so the logits are bit-identical.
 *
 * Codes: q8 codes are signed bytes; q6/q4 codes (0..63, 0..15) are unpacked to bytes that
 * are also valid signed bytes, so one signed x signed dot serves all three (SMULL and SDOT
 * both multiply signed bytes; no +128 offset as on x86). Each block's integer dot is exact.
 */
#ifndef BITNET_HEAD_NEON_H
#define BITNET_HEAD_NEON_H

#include <arm_neon.h>

#include "head.h"

/* The products of 32 code bytes (c0: 0..15, c1: 16..31) with 32 xq, summed into four int32
 * lanes whose total is the block's integer dot. */
typedef int32x4_t head_dot_neon_fn(int8x16_t c0, int8x16_t c1, const int8_t *xq);

/* Lane j of the result: the total of s[j]'s four lanes (j = 0..3). */
static inline int32x4_t head_sum4_s32(const int32x4_t s[4]) {
    return vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
}

/* acc (float lanes b%8 = 0..3 | 4..7) += scale * float(isum), eight blocks at a time. */
static inline void head_add_terms_neon(float32x4_t acc[2], const float32x4_t scale[2], const int32x4_t isum[2]) {
    for (int h = 0; h < 2; h++) acc[h] = vaddq_f32(acc[h], vmulq_f32(scale[h], vcvtq_f32_s32(isum[h])));
}

static inline void head_store_lanes(float lanes[8], const float32x4_t acc[2]) {
    vst1q_f32(lanes, acc[0]);
    vst1q_f32(lanes + 4, acc[1]);
}

static inline __attribute__((always_inline))
void head_q8_rows_neon(head_dot_neon_fn *dot, const int8_t *q, const float *d, const head_xq *in, float *logits,
                       int E, int v0, int v1) {
    const int row_bytes = head_q8_row(E), nb = row_bytes / 32;
    for (int v = v0; v < v1; v++) {
        const int8_t *row = q + (size_t)v * row_bytes;
        float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        int b = 0;
        for (; b + 8 <= nb; b += 8) {
            __builtin_prefetch(row + b * 32 + 4096);
            __builtin_prefetch(row + b * 32 + 4096 + 128);
            int32x4_t s[8], isum[2];
            for (int j = 0; j < 8; j++) {
                const int8_t *c = row + (b + j) * 32;
                s[j] = dot(vld1q_s8(c), vld1q_s8(c + 16), in->q + (b + j) * 32);
            }
            isum[0] = head_sum4_s32(s);
            isum[1] = head_sum4_s32(s + 4);
            const float32x4_t scale[2] = {vld1q_f32(in->d + b), vld1q_f32(in->d + b + 4)};
            head_add_terms_neon(acc, scale, isum);
        }
        float lanes[8];
        head_store_lanes(lanes, acc);
        for (; b < nb; b++) lanes[b & 7] += head_q8_term(row, in, b);
        logits[v] = head_lanes_sum(lanes) * d[v];
    }
}

/* q6 (bits 6) or q4 (bits 4) rows: a pair of blocks A, B is 48 or 32 bytes (head.h). */
static inline __attribute__((always_inline))
void head_qk_rows_neon(head_dot_neon_fn *dot, const int bits, const uint8_t *q, const uint16_t *d,
                       const head_xq *in, float *logits, int E, int v0, int v1) {
    const uint8x16_t m4 = vdupq_n_u8(15), m30 = vdupq_n_u8(0x30);
    const int pair = bits == 6 ? 48 : 32, nb = head_nb(E);
    for (int v = v0; v < v1; v++) {
        const uint8_t *row = q + (size_t)v * (head_xp(E) / 64 * pair);
        const uint16_t *dw = d + (size_t)v * nb;
        float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        int b = 0;
        for (; b + 8 <= nb; b += 8) {
            int32x4_t s[8], isum[2];
            for (int j = 0; j < 8; j += 2) {
                const uint8_t *p = row + (b + j) / 2 * pair;
                __builtin_prefetch(p + 4096);
                const uint8x16_t lo0 = vld1q_u8(p), lo1 = vld1q_u8(p + 16);
                uint8x16_t a0 = vandq_u8(lo0, m4), a1 = vandq_u8(lo1, m4);
                uint8x16_t b0 = vshrq_n_u8(lo0, 4), b1 = vshrq_n_u8(lo1, 4);
                if (bits == 6) {   /* high bits: A[k] bits 0-1 / 2-3 of byte k % 16, B[k] bits 4-5 / 6-7 */
                    const uint8x16_t hv = vld1q_u8(p + 32);
                    a0 = vorrq_u8(a0, vandq_u8(vshlq_n_u8(hv, 4), m30));
                    a1 = vorrq_u8(a1, vandq_u8(vshlq_n_u8(hv, 2), m30));
                    b0 = vorrq_u8(b0, vandq_u8(hv, m30));
                    b1 = vorrq_u8(b1, vandq_u8(vshrq_n_u8(hv, 2), m30));
                }
                s[j] = dot(vreinterpretq_s8_u8(a0), vreinterpretq_s8_u8(a1), in->q + (b + j) * 32);
                s[j + 1] = dot(vreinterpretq_s8_u8(b0), vreinterpretq_s8_u8(b1), in->q + (b + j + 1) * 32);
            }
            const int32x4_t off = vdupq_n_s32(bits == 6 ? 32 : 8);
            isum[0] = vmlsq_s32(head_sum4_s32(s), off, vld1q_s32(in->sum + b));
            isum[1] = vmlsq_s32(head_sum4_s32(s + 4), off, vld1q_s32(in->sum + b + 4));
            const float32x4_t scale[2] = {
                vmulq_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dw + b))), vld1q_f32(in->d + b)),
                vmulq_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dw + b + 4))), vld1q_f32(in->d + b + 4))};
            head_add_terms_neon(acc, scale, isum);
        }
        float lanes[8];
        head_store_lanes(lanes, acc);
        for (; b < nb; b++) lanes[b & 7] += bits == 6 ? head_q6_term(row, dw, in, b) : head_q4_term(row, dw, in, b);
        logits[v] = head_lanes_sum(lanes);
    }
}

#endif
