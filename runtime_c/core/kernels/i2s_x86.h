/* i2s_x86.h: the two helpers every x86 i2s kernel file shares. Included only by files
 * compiled with -mavx2 (i2s_avx2.c in its three builds, i2s_avx512.c). */
#ifndef BITNET_I2S_X86_H
#define BITNET_I2S_X86_H

#include <immintrin.h>
#include <stdint.h>

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

#endif
