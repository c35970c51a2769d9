/* i2s_neon.h: what the NEON i2s kernel files share (i2s_neon.c for AArch64 and 32-bit ARMv7,
 * i2s_neon_dotprod.c for AArch64): the activation sum and the tile, which takes the ISA's multiply-add as an explicit parameter
 * and is always inlined, so each file compiles it with its own instructions.
 *
 * Layout: the i2s layout of kernels.h (128-weight blocks of 32 bytes; bits 7-6, 5-4, 3-2,
 * 1-0 of byte p hold weights p, p+32, p+64, p+96 as codes c = t+1 in {0,1,2}).
 *
 * Method: multiply the codes c (0..2, fine as signed bytes) by the activations and subtract
 * sum(q) once per token (i2s_driver.h): sum c*q - sum q = sum t*q. One block's 32 bytes give,
 * by shift+mask, four 32-lane code vectors aligned with 32 consecutive activations, so no
 * shuffles are needed.
 */
#ifndef BITNET_I2S_NEON_H
#define BITNET_I2S_NEON_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

#include "i2s_driver.h"

/* The total of the four lanes: one ADDV on AArch64; 32-bit NEON has no across-vector add. */
static inline int32_t i2s_addv_s32(int32x4_t v) {
#if defined(__aarch64__)
    return vaddvq_s32(v);
#else
    const int32x2_t s = vadd_s32(vget_low_s32(v), vget_high_s32(v));
    return vget_lane_s32(vpadd_s32(s, s), 0);
#endif
}

static inline int32_t sum_q(const int8_t *x, int KP) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int k = 0; k < KP; k += 16) acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(x + k)));
    return i2s_addv_s32(acc);
}

/* Code vector j (weights 32j..32j+31 of the block, bits 6-2j) of one 16-byte half w. */
static inline __attribute__((always_inline)) int8x16_t codes(uint8x16_t w, const int j) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    switch (j) {
    case 0: return vreinterpretq_s8_u8(vshrq_n_u8(w, 6));
    case 1: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(w, 4), m3));
    case 2: return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(w, 2), m3));
    default: return vreinterpretq_s8_u8(vandq_u8(w, m3));
    }
}

/* acc + the products of 16 codes with 16 activations, in the lanes of the caller's
 * accumulator (held as int32x4_t): int32 lanes (SDOT) or int16 lanes (SMLAL, reinterpreted). */
typedef int32x4_t i2s_mac_neon_fn(int32x4_t acc, int8x16_t codes, int8x16_t x);
/* acc32 + the partial sums acc of one group of blocks, widened if they are int16. */
typedef int32x4_t i2s_widen_neon_fn(int32x4_t acc32, int32x4_t acc);

/* Chunk j of one block for the tile below: code vector j of the R rows' halves wl, wh
 * against activations 32j..32j+31 of each of the T tokens. */
static inline __attribute__((always_inline))
void i2s_chunk_neon(i2s_mac_neon_fn *mac, int32x4_t acc[4][4], const uint8x16_t wl[4],
                    const uint8x16_t wh[4], const int8_t *xb, size_t x_stride, const int R,
                    const int T, const int j) {
    int8x16_t cl[4], ch[4];
    for (int i = 0; i < R; i++) {
        cl[i] = codes(wl[i], j);
        ch[i] = codes(wh[i], j);
    }
    for (int t = 0; t < T; t++) {
        const int8x16_t xl = vld1q_s8(xb + t * x_stride + 32 * j);
        const int8x16_t xh = vld1q_s8(xb + t * x_stride + 32 * j + 16);
        for (int i = 0; i < R; i++) acc[i][t] = mac(mac(acc[i][t], cl[i], xl), ch[i], xh);
    }
}

/* R rows (<= 4) x T tokens (<= 4) over the full K (32 NEON registers: 16 accumulators).
 * group: blocks accumulated by mac before widen (0: all of them, for int32 lanes). */
static inline __attribute__((always_inline))
void i2s_tile_neon(i2s_mac_neon_fn *mac, i2s_widen_neon_fn *widen, const int group,
                   const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride, int KP,
                   const int R, const int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    const int nb = KP / 128, step = group ? group : nb;
    int32x4_t acc32[4][4];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc32[i][t] = vdupq_n_s32(0);
    for (int b0 = 0; b0 < nb; b0 += step) {
        const int b1 = b0 + step < nb ? b0 + step : nb;
        int32x4_t acc[4][4];
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) acc[i][t] = vdupq_n_s32(0);
        for (int b = b0; b < b1; b++) {
            uint8x16_t wl[4], wh[4];
            for (int i = 0; i < R; i++) {
                wl[i] = vld1q_u8(w + i * row_bytes + 32 * (size_t)b);
                wh[i] = vld1q_u8(w + i * row_bytes + 32 * (size_t)b + 16);
            }
            if (pf && !(b & 1))
                for (int i = 0; i < R; i++) __builtin_prefetch(w + i * row_bytes + 32 * (size_t)b + pf);
            const int8_t *xb = x + 128 * (size_t)b;
            i2s_chunk_neon(mac, acc, wl, wh, xb, x_stride, R, T, 0);   /* written out: the shift */
            i2s_chunk_neon(mac, acc, wl, wh, xb, x_stride, R, T, 1);   /* counts are immediates */
            i2s_chunk_neon(mac, acc, wl, wh, xb, x_stride, R, T, 2);
            i2s_chunk_neon(mac, acc, wl, wh, xb, x_stride, R, T, 3);
        }
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) acc32[i][t] = widen(acc32[i][t], acc[i][t]);
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) out[i][t] = i2s_addv_s32(acc32[i][t]);
}

#endif
