/* i2sg_avx2.c: the block-scaled kernel (i2sg.h) for x86-64 with AVX2 and F16C, compiled with
 * -mavx2 -mf16c. Same value as i2sg_scalar.c, bit for bit: the group sums are exact
 * integers and the double accumulation runs in the same order.
 *
 * Method: four rows at a time share each activation load. Each 128-weight block of a row
 * is unpacked into its four 2-bit planes (shift, mask) and multiplied with vpmaddubsw
 * (unsigned code c = t + 1 in 0..3 times signed q); sum c*q - sum q = sum t*q, with the
 * activation sums of the groups computed once per call. At the end of a group the four
 * rows' int32 lanes are reduced together (vphaddd; for G = 64 both groups of a block in
 * one tree), converted to double, multiplied by the rows' fp16 scales (one load from the
 * 4-row tiled scale layout, vcvtph2ps: exact) and added in group order.
 *
 * Overflow: vpmaddubsw adds two products |c*q| <= 3*128, and four of them are added per
 * block in int16: |.| <= 3072. Group sums are int32.
 */
#include <immintrin.h>

#include "i2s_driver.h"   /* i2s_prefetch_distance */
#include "i2sg.h"
#include "i2sg_x86.h"
#include "kernels.h"



/* The four planes of one block of a row, multiplied with the block's activations:
 * h[0] = weights 0..63 (planes 0-1), h[1] = weights 64..127 (planes 2-3), int16. */
static inline void block_dot(const uint8_t *p, const __m256i xq[4], __m256i m3, __m256i h[2]) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)p);
    const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
    const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
    const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
    const __m256i c3 = _mm256_and_si256(v, m3);
    h[0] = _mm256_add_epi16(_mm256_maddubs_epi16(c0, xq[0]), _mm256_maddubs_epi16(c1, xq[1]));
    h[1] = _mm256_add_epi16(_mm256_maddubs_epi16(c2, xq[2]), _mm256_maddubs_epi16(c3, xq[3]));
}

/* Rows r..r+3 (all < M) of one token; xs: the activation sum of each group. */
static void rows4(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, const int32_t *xs,
                  float *y, int KP, int r) {
    const long row_bytes = KP / 4, ng = (KP + G - 1) / G;
    const int blocks = KP / 128, bpg = G / 128;
    const uint8_t *rw[4];
    for (int i = 0; i < 4; i++) rw[i] = w + (r + i) * row_bytes;
    const uint16_t *dt = d + (long)(r / 4) * ng * 4;   /* this 4-row tile's scales, [ng][4] */
    const size_t pf = i2s_prefetch_distance((size_t)row_bytes);   /* a few rows ahead, as i2s */
    const __m256i m3 = _mm256_set1_epi8(3), ones16 = _mm256_set1_epi16(1);
    __m256d acc = _mm256_setzero_pd();
    if (G == 64) {                       /* two groups per block: one reduction tree for both */
        for (int b = 0; b < blocks; b++) {
            __m256i xq[4], lo[4], hi[4];
            for (int j = 0; j < 4; j++) xq[j] = _mm256_loadu_si256((const __m256i *)(x + 128 * b + 32 * j));
            for (int i = 0; i < 4; i++) {
                __m256i h[2];
                if (!(b & 1)) BN_PREFETCH_STREAM(rw[i] + 32 * b + pf);
                block_dot(rw[i] + 32 * b, xq, m3, h);
                lo[i] = _mm256_madd_epi16(h[0], ones16);
                hi[i] = _mm256_madd_epi16(h[1], ones16);
            }
            const __m256i s = _mm256_sub_epi32(i2sg_hsum8(lo, hi),
                _mm256_set_m128i(_mm_set1_epi32(xs[2 * b + 1]), _mm_set1_epi32(xs[2 * b])));
            const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dt + 8 * b)));
            acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(dv)),
                                                   _mm256_cvtepi32_pd(_mm256_castsi256_si128(s))));
            acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(dv, 1)),
                                                   _mm256_cvtepi32_pd(_mm256_extracti128_si256(s, 1))));
        }
    } else {                             /* G a multiple of 128: whole blocks per group */
        for (long g = 0; g < ng; g++) {
            __m256i a[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                            _mm256_setzero_si256()};
            const int b_end = (int)(g + 1) * bpg < blocks ? (int)(g + 1) * bpg : blocks;
            for (int b = (int)g * bpg; b < b_end; b++) {
                __m256i xq[4];
                for (int j = 0; j < 4; j++) xq[j] = _mm256_loadu_si256((const __m256i *)(x + 128 * b + 32 * j));
                for (int i = 0; i < 4; i++) {
                    __m256i h[2];
                    if (!(b & 1)) BN_PREFETCH_STREAM(rw[i] + 32 * b + pf);
                    block_dot(rw[i] + 32 * b, xq, m3, h);
                    a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(_mm256_add_epi16(h[0], h[1]), ones16));
                }
            }
            const __m128i s = _mm_sub_epi32(i2sg_hsum4(a), _mm_set1_epi32(xs[g]));
            const __m128 dv = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(dt + 4 * g)));
            acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(dv), _mm256_cvtepi32_pd(s)));
        }
    }
    _mm_storeu_ps(y + r, _mm256_cvtpd_ps(acc));
}

void i2sg_gemv_avx2(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int KP, int row_begin, int row_end) {
    i2sg_gemv_rows(rows4, 1, w, d, G, x, y, KP, row_begin, row_end);
}

void i2sg_gemm_avx2(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int N, int M, int KP, int row_begin, int row_end) {
    i2sg_gemm_strips(i2sg_gemv_avx2, w, d, G, x, y, N, M, KP, row_begin, row_end);
}
