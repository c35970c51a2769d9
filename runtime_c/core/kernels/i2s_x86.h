/* i2s_x86.h: what the x86 i2s kernel files share. Included only by files compiled with
 * -mavx2 or more (i2s_avx2.c, i2s_avxvnni.c, i2s_avx512.c): the activation sum, the
 * 256-bit tile the AVX2 and AVX-VNNI kernels build on, and the shift-free GEMV rows the
 * two VNNI kernels share. Each takes the ISA's multiply-add as an explicit parameter and is
 * always inlined, so the caller's file compiles it with its own instructions.
 *
 * Layout: the i2s layout of kernels.h (128-weight blocks of 32 bytes; bits 7-6, 5-4, 3-2, 1-0
 * of byte p hold weights p, p+32, p+64, p+96 as codes c = t+1 in {0,1,2}).
 *
 * Method ("maddubs trick"): the codes are unsigned bytes and the activations signed bytes,
 * which is exactly what vpmaddubsw / vpdpbusd multiply. So per row we compute
 *     sum_k c_k*q_k  =  sum_k (t_k+1)*q_k  =  y + sum_k q_k
 * and subtract sum_k q_k (sum_q, once per token) at the end (i2s_driver.h). One 32-byte load
 * of weights gives four 32-lane code vectors by shift+mask, each lined up with 32
 * consecutive activations: no shuffles at all. */
#ifndef BITNET_I2S_X86_H
#define BITNET_I2S_X86_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "i2s_driver.h"
#include "kernels.h"   /* BN_PREFETCH_STREAM */

/* The sum of the eight int32 lanes of v. */
static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The sum of KP int8 activations (KP a multiple of 32): the correction term of the
 * unsigned-code trick, sum_k (t_k + 1) * q_k = y + sum_k q_k. */
static inline int32_t sum_q(const int8_t *x, int KP) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int k = 0; k < KP; k += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(x + k));
        /* maddubs(1, q): int16 lanes in [-256, 254]; madd widens to int32 exactly. */
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
    }
    return hsum_epi32(acc);
}

/* acc + the products of 32 unsigned codes with 32 signed activations, in the lanes of the
 * caller's accumulator: int16 lanes (vpmaddubsw, AVX2) or int32 lanes (vpdpbusd, VNNI). */
typedef __m256i i2s_mac256_fn(__m256i acc, __m256i codes, __m256i x);

/* Chunk j of one block for the tile below: the codes at bits 6-2j of the R rows' bytes wv
 * pair with activations 32j..32j+31 of each of the T tokens. */
static inline __attribute__((always_inline))
void i2s_chunk256(i2s_mac256_fn *mac, __m256i acc[I2S_TILE_R][I2S_TILE_T], const __m256i wv[I2S_TILE_R],
                  const int8_t *xb, size_t x_stride, const int R, const int T, const int j) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i c[I2S_TILE_R];
    for (int i = 0; i < R; i++) c[i] = _mm256_and_si256(_mm256_srli_epi16(wv[i], 6 - 2 * j), m3);
    for (int t = 0; t < T; t++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + t * x_stride + 32 * j));
        for (int i = 0; i < R; i++) acc[i][t] = mac(acc[i][t], c[i], xv);
    }
}

/* R rows (<= 4) x T tokens (<= 8; R*T accumulators must fit the 16 YMM registers), full K.
 * group: blocks accumulated by mac before they are widened into int32 (int16 lanes of
 * vpmaddubsw would overflow past it: see i2s_avx2.c); 0 for a mac that adds into int32 lanes,
 * whose partial sums are added as they are. */
static inline __attribute__((always_inline))
void i2s_tile256(i2s_mac256_fn *mac, const int group, const uint8_t *w, size_t row_bytes,
                 const int8_t *x, size_t x_stride, int KP, const int R, const int T, size_t pf,
                 int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    const int nb = KP / 128, step = group ? group : nb;
    __m256i acc32[I2S_TILE_R][I2S_TILE_T];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc32[i][t] = _mm256_setzero_si256();
    for (int b0 = 0; b0 < nb; b0 += step) {
        const int b1 = b0 + step < nb ? b0 + step : nb;
        __m256i acc[I2S_TILE_R][I2S_TILE_T];
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_si256();
        for (int b = b0; b < b1; b++) {
            __m256i wv[I2S_TILE_R];
            for (int i = 0; i < R; i++)
                wv[i] = _mm256_loadu_si256((const __m256i *)(w + i * row_bytes + 32 * (size_t)b));
            if (pf && !(b & 1))
                for (int i = 0; i < R; i++)
                    BN_PREFETCH_STREAM((const char *)(w + i * row_bytes + 32 * (size_t)b + pf));
            const int8_t *xb = x + 128 * (size_t)b;
            i2s_chunk256(mac, acc, wv, xb, x_stride, R, T, 0);   /* written out: the four */
            i2s_chunk256(mac, acc, wv, xb, x_stride, R, T, 1);   /* shift counts must be */
            i2s_chunk256(mac, acc, wv, xb, x_stride, R, T, 2);   /* constants for the tile */
            i2s_chunk256(mac, acc, wv, xb, x_stride, R, T, 3);   /* to stay in registers */
        }
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++)
                acc32[i][t] = _mm256_add_epi32(acc32[i][t], group ? _mm256_madd_epi16(acc[i][t], ones16) : acc[i][t]);
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) out[i][t] = hsum_epi32(acc32[i][t]);
}

/* GEMV rows for a CPU with 256-bit vpdpbusd (dp: its VEX or EVEX form), without shifts: code
 * j sits at bits 6-2j of each byte, so w & (3 << (6-2j)) is the code times 4^(3-j), still a
 * valid unsigned byte (<= 128). vpdpbusd of it with the activations accumulates 4^(3-j)
 * times the dot product in a separate int32 accumulator per j; every lane is a multiple of
 * 4^(3-j), so an arithmetic shift divides it back exactly. That is 4 AND + 4 VPDPBUSD per 32
 * bytes instead of 3 shifts + 4 AND + 4 VPDPBUSD. R <= 2 (8 accumulators + 4 activations).
 * Overflow: a lane gets KP/32 products of at most 64*2*128 = 2^14: exact for KP < 2^22. */
static inline __attribute__((always_inline))
void i2s_rows_vnni256(i2s_mac256_fn *dp, const uint8_t *w, size_t row_bytes, const int8_t *x,
                      int KP, const int R, size_t pf, int32_t out[I2S_TILE_R]) {
    const __m256i m0 = _mm256_set1_epi8((char)0xc0), m1 = _mm256_set1_epi8(0x30);
    const __m256i m2 = _mm256_set1_epi8(0x0c), m3 = _mm256_set1_epi8(0x03);
    __m256i acc[2][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_si256();
    for (int b = 0; b < KP / 128; b++) {
        const int8_t *xb = x + 128 * (size_t)b;
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb);
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
        const __m256i x2 = _mm256_loadu_si256((const __m256i *)(xb + 64));
        const __m256i x3 = _mm256_loadu_si256((const __m256i *)(xb + 96));
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + i * row_bytes + 32 * (size_t)b;
            if (pf && !(b & 1)) BN_PREFETCH_STREAM((const char *)(wb + pf));
            const __m256i v = _mm256_loadu_si256((const __m256i *)wb);
            acc[i][0] = dp(acc[i][0], _mm256_and_si256(v, m0), x0);
            acc[i][1] = dp(acc[i][1], _mm256_and_si256(v, m1), x1);
            acc[i][2] = dp(acc[i][2], _mm256_and_si256(v, m2), x2);
            acc[i][3] = dp(acc[i][3], _mm256_and_si256(v, m3), x3);
        }
    }
    for (int i = 0; i < R; i++) {
        __m256i s = _mm256_add_epi32(_mm256_srai_epi32(acc[i][0], 6), _mm256_srai_epi32(acc[i][1], 4));
        s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_srai_epi32(acc[i][2], 2), acc[i][3]));
        out[i] = hsum_epi32(s);
    }
}

#endif
