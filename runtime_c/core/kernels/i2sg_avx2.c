/* i2sg_avx2.c: the block-scaled kernel (i2sg.h) for x86-64 with AVX2 and F16C, compiled with
 * -mavx2 -mf16c. Same value as i2sg_scalar.c, bit for bit: the group sums are exact
 * integers and the double accumulation runs in the same order.
 *
 * Method: four rows at a time share each activation load. For each 64-weight half block,
 * the two 2-bit planes of a row are unpacked (shift, mask) and multiplied with vpmaddubsw
 * (unsigned code c = t + 1 in 0..3 times signed q), so sum c*q - sum q = sum t*q; the
 * activation sum comes from the same instruction with a vector of ones. At the end of a
 * group the four rows' int32 lanes are reduced together (vphaddd), converted to double,
 * multiplied by the rows' four fp16 scales (vcvtph2ps, exact) and added in order.
 *
 * Overflow: vpmaddubsw adds two products |c*q| <= 3*128, and two of them are added per half
 * block in int16: |.| <= 1536. Group sums are int32.
 */
#include <immintrin.h>

#include "i2sg.h"
#include "kernels.h"

static inline __m128i hsum4(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* Rows r..r+3 (all < M) of one token. */
static void rows4(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                  int KP, int r) {
    const long row_bytes = KP / 4, ng = (KP + G - 1) / G;
    const int halves = KP / 64, hpg = G / 64;
    const uint8_t *rw[4];
    for (int i = 0; i < 4; i++) rw[i] = w + (r + i) * row_bytes;
    const __m256i m3 = _mm256_set1_epi8(3), ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256d acc = _mm256_setzero_pd();
    for (long g = 0; g < ng; g++) {
        __m256i a[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                        _mm256_setzero_si256()};
        __m256i xs = _mm256_setzero_si256();
        const int h_end = (int)(g + 1) * hpg < halves ? (int)(g + 1) * hpg : halves;
        for (int hb = (int)g * hpg; hb < h_end; hb++) {
            const __m256i xa = _mm256_loadu_si256((const __m256i *)(x + 64 * hb));
            const __m256i xb = _mm256_loadu_si256((const __m256i *)(x + 64 * hb + 32));
            xs = _mm256_add_epi32(xs, _mm256_madd_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(ones8, xa), _mm256_maddubs_epi16(ones8, xb)), ones16));
            const int sa = (hb & 1) ? 2 : 6, sb = (hb & 1) ? 0 : 4;
            for (int i = 0; i < 4; i++) {
                const uint8_t *p = rw[i] + 32 * (hb >> 1);
                if (!(hb & 1)) BN_PREFETCH_STREAM(p + 512);
                const __m256i v = _mm256_loadu_si256((const __m256i *)p);
                const __m256i ca = _mm256_and_si256(_mm256_srli_epi16(v, sa), m3);
                const __m256i cb = _mm256_and_si256(_mm256_srli_epi16(v, sb), m3);
                a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(
                    _mm256_add_epi16(_mm256_maddubs_epi16(ca, xa), _mm256_maddubs_epi16(cb, xb)), ones16));
            }
        }
        const __m128i s = _mm_sub_epi32(hsum4(a[0], a[1], a[2], a[3]), hsum4(xs, xs, xs, xs));
        const __m128i h = _mm_setr_epi16((short)d[(r + 0) * ng + g], (short)d[(r + 1) * ng + g],
                                         (short)d[(r + 2) * ng + g], (short)d[(r + 3) * ng + g], 0, 0, 0, 0);
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(_mm_cvtph_ps(h)), _mm256_cvtepi32_pd(s)));
    }
    _mm_storeu_ps(y + r, _mm256_cvtpd_ps(acc));
}

void i2sg_gemv_avx2(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int KP, int row_begin, int row_end) {
    const long row_bytes = KP / 4, ng = (KP + G - 1) / G;
    int r = row_begin;
    for (; r + 4 <= row_end; r += 4) rows4(w, d, G, x, y, KP, r);
    for (; r < row_end; r++) y[r] = i2sg_row_scalar(w + r * row_bytes, d + r * ng, G, x, KP);
}

void i2sg_gemm_avx2(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int N, int M, int KP, int row_begin, int row_end) {
    for (int n = 0; n < N; n++)
        i2sg_gemv_avx2(w, d, G, x + (long)n * KP, y + (long)n * M, KP, row_begin, row_end);
}
