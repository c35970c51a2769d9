/* i2sg_avx512.c: the block-scaled kernel (i2sg.h) for x86-64 with AVX-512 VNNI (Ice Lake and
 * later servers, Zen 4+), compiled with -mavx2 -mf16c -mavx512f -mavx512bw -mavx512vl
 * -mavx512vnni. Same value as i2sg_scalar.c, bit for bit: the group sums are exact integers
 * and the double accumulation runs in the same order.
 *
 * It is i2sg_avx2.c's method on 256-bit vectors with one change: vpdpbusd multiplies the
 * unsigned codes (c = t + 1, 0..3) by the signed activations and adds each four products
 * into an int32 lane in one instruction, exactly (no saturation: |sum| <= 4 * 3 * 128), where
 * AVX2 needs vpmaddubsw, an int16 add, vpmaddwd and an int32 add. GEMM (prompt) takes two
 * tokens at a time, so each unpacked code vector serves both: with 32 vector registers the
 * two tokens' activations, a row's four planes and the accumulators of four rows and two
 * tokens stay in registers.
 */
#include <immintrin.h>

#include "i2s_driver.h"   /* i2s_prefetch_distance */
#include "i2sg.h"
#include "i2sg_x86.h"
#include "kernels.h"


/* The four 2-bit planes of one 128-weight block of a row (32 bytes). */
static inline __attribute__((always_inline)) void planes(const uint8_t *p, __m256i m3, __m256i c[4]) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)p);
    c[0] = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
    c[1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
    c[2] = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
    c[3] = _mm256_and_si256(v, m3);
}

/* The activations of block b for T tokens (x + t * KP). */
static inline __attribute__((always_inline)) void load_acts(const int8_t *x, int KP, int b, const int T,
                                                           __m256i xq[2][4]) {
    for (int t = 0; t < T; t++)
        for (int j = 0; j < 4; j++) xq[t][j] = _mm256_loadu_si256((const __m256i *)(x + (long)t * KP + 128 * b + 32 * j));
}

/* Add the double products of the four rows' group sums s (int32, sum c*q minus the group's
 * activation sum already applied) and their fp16 scales dv to acc. */
static inline __attribute__((always_inline)) __m256d fma4(__m256d acc, __m128 dv, __m128i s) {
    return _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(dv), _mm256_cvtepi32_pd(s)));
}

/* Rows r..r+3 (all < M) of T = 1 or 2 tokens (activations x + t * KP, outputs y + t * M,
 * activation sums xs + t * ng). T is a compile-time constant at each call. */
static inline __attribute__((always_inline)) void rows4_t(const uint8_t *w, const uint16_t *d, int G,
                                                         const int8_t *x, const int32_t *xs, float *y,
                                                         int KP, int M, int r, const int T) {
    const long row_bytes = KP / 4, ng = (KP + G - 1) / G;
    const int blocks = KP / 128, bpg = G / 128;
    const uint8_t *rw[4];
    for (int i = 0; i < 4; i++) rw[i] = w + (r + i) * row_bytes;
    const uint16_t *dt = d + (long)(r / 4) * ng * 4;   /* this 4-row tile's scales, [ng][4] */
    const size_t pf = i2s_prefetch_distance((size_t)row_bytes);
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256d acc[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    if (G == 64) {                       /* two groups per block: one reduction tree for both */
        for (int b = 0; b < blocks; b++) {
            __m256i xq[2][4], lo[2][4], hi[2][4];
            load_acts(x, KP, b, T, xq);
            for (int i = 0; i < 4; i++) {
                __m256i c[4];
                if (!(b & 1)) BN_PREFETCH_STREAM(rw[i] + 32 * b + pf);
                planes(rw[i] + 32 * b, m3, c);
                for (int t = 0; t < T; t++) {
                    lo[t][i] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), c[0], xq[t][0]),
                                                   c[1], xq[t][1]);
                    hi[t][i] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), c[2], xq[t][2]),
                                                   c[3], xq[t][3]);
                }
            }
            const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dt + 8 * b)));
            for (int t = 0; t < T; t++) {
                const int32_t *xst = xs + (long)t * ng;
                const __m256i s = _mm256_sub_epi32(i2sg_hsum8(lo[t], hi[t]),
                    _mm256_set_m128i(_mm_set1_epi32(xst[2 * b + 1]), _mm_set1_epi32(xst[2 * b])));
                acc[t] = fma4(acc[t], _mm256_castps256_ps128(dv), _mm256_castsi256_si128(s));
                acc[t] = fma4(acc[t], _mm256_extractf128_ps(dv, 1), _mm256_extracti128_si256(s, 1));
            }
        }
    } else {                             /* G a multiple of 128: whole blocks per group */
        for (long g = 0; g < ng; g++) {
            __m256i a[2][4];
            for (int t = 0; t < T; t++)
                for (int i = 0; i < 4; i++) a[t][i] = _mm256_setzero_si256();
            const int b_end = (int)(g + 1) * bpg < blocks ? (int)(g + 1) * bpg : blocks;
            for (int b = (int)g * bpg; b < b_end; b++) {
                __m256i xq[2][4];
                load_acts(x, KP, b, T, xq);
                for (int i = 0; i < 4; i++) {
                    __m256i c[4];
                    if (!(b & 1)) BN_PREFETCH_STREAM(rw[i] + 32 * b + pf);
                    planes(rw[i] + 32 * b, m3, c);
                    for (int t = 0; t < T; t++)
                        for (int j = 0; j < 4; j++) a[t][i] = _mm256_dpbusd_epi32(a[t][i], c[j], xq[t][j]);
                }
            }
            const __m128 dv = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(dt + 4 * g)));
            for (int t = 0; t < T; t++)
                acc[t] = fma4(acc[t], dv, _mm_sub_epi32(i2sg_hsum4(a[t]), _mm_set1_epi32(xs[(long)t * ng + g])));
        }
    }
    for (int t = 0; t < T; t++) _mm_storeu_ps(y + (long)t * M + r, _mm256_cvtpd_ps(acc[t]));
}

static void rows4(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, const int32_t *xs,
                  float *y, int KP, int r) {
    rows4_t(w, d, G, x, xs, y, KP, 0, r, 1);
}

void i2sg_gemv_avx512vnni(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                          int KP, int row_begin, int row_end) {
    i2sg_gemv_rows(rows4, 1, w, d, G, x, y, KP, row_begin, row_end);
}

/* GEMM: tokens in chunks whose group sums fit XS_MAX; per chunk, strips of I2SG_STRIP rows
 * (the strip's weights stay in L1 for every token of the chunk), tokens in pairs sharing
 * each unpacked code vector. Rows outside whole 4-row tiles take the scalar row. */
#define XS_MAX 4096   /* int32 group sums on the stack (16 KiB; musl threads have 128 KiB) */

void i2sg_gemm_avx512vnni(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                          int N, int M, int KP, int row_begin, int row_end) {
    const int ng = (KP + G - 1) / G;
    if (!(G == 64 || G % 128 == 0) || ng > XS_MAX / 2) {
        i2sg_gemm_strips(i2sg_gemv_avx512vnni, w, d, G, x, y, N, M, KP, row_begin, row_end);
        return;
    }
    int32_t xs[XS_MAX];
    const int chunk = XS_MAX / ng;                                  /* >= 2 tokens */
    const int t0 = (row_begin + 3) / 4 * 4, t1 = row_end / 4 * 4 > t0 ? row_end / 4 * 4 : t0;
    for (int n0 = 0; n0 < N; n0 += chunk) {
        const int nc = N - n0 < chunk ? N - n0 : chunk;
        const int8_t *xc = x + (long)n0 * KP;
        float *yc = y + (long)n0 * M;
        for (int t = 0; t < nc; t++) i2sg_group_sums(xc + (long)t * KP, G, KP, xs + (long)t * ng);
        for (int t = 0; t < nc; t++)
            for (int r = row_begin; r < row_end; r++)
                if (r < t0 || r >= t1)
                    yc[(long)t * M + r] = i2sg_row_scalar(w + (long)r * (KP / 4), i2sg_row_scales(d, G, KP, r),
                                                          G, xc + (long)t * KP, KP);
        for (int r0 = t0; r0 < t1; r0 += I2SG_STRIP) {
            const int r1 = r0 + I2SG_STRIP < t1 ? r0 + I2SG_STRIP : t1;
            int t = 0;
            for (; t + 2 <= nc; t += 2)
                for (int r = r0; r < r1; r += 4)
                    rows4_t(w, d, G, xc + (long)t * KP, xs + (long)t * ng, yc + (long)t * M, KP, M, r, 2);
            if (t < nc)
                for (int r = r0; r < r1; r += 4)
                    rows4_t(w, d, G, xc + (long)t * KP, xs + (long)t * ng, yc + (long)t * M, KP, M, r, 1);
        }
    }
}
