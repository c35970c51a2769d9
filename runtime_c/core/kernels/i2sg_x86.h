/* i2sg_x86.h: the int32 reductions i2sg_avx2.c and i2sg_avx512.c share (compiled with
 * -mavx2 at least). */
#ifndef BITNET_I2SG_X86_H
#define BITNET_I2SG_X86_H

#include <immintrin.h>

/* [a0..a3 totals, b0..b3 totals] of eight int32x8 vectors. */
static inline __m256i i2sg_hsum8(const __m256i a[4], const __m256i b[4]) {
    const __m256i ha = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    const __m256i hb = _mm256_hadd_epi32(_mm256_hadd_epi32(b[0], b[1]), _mm256_hadd_epi32(b[2], b[3]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(ha, hb, 0x20), _mm256_permute2x128_si256(ha, hb, 0x31));
}

/* [a0..a3 totals] of four int32x8 vectors. */
static inline __m128i i2sg_hsum4(const __m256i a[4]) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

#endif
