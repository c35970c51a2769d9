/* i2s_avx512.c: the i2s kernels for x86-64 with AVX-512 VNNI (Ice Lake / Sapphire Rapids
 * servers, Zen 4, Zen 5), compiled with -mavx512f -mavx512bw -mavx512vnni. dispatch.c calls
 * them only after the start-up CPU check found AVX512F/BW/VNNI with OS support for ZMM state.
 *
 * Layout: the i2s layout of kernels.h (128-weight blocks of 32 bytes; bits 7-6, 5-4, 3-2, 1-0
 * of byte p hold weights p, p+32, p+64, p+96 as codes c = t+1 in {0,1,2}).
 *
 * Method: the maddubs trick of i2s_avx2.c (sum_k c_k*q_k = y + sum_k q_k, so subtract the
 * activation sum at the end), with vpdpbusd on 512-bit registers. A 32-byte block of one
 * row fills half a register, so each ZMM holds the same block of TWO rows (row r in the low
 * 256 bits, row r+1 in the high 256 bits), and the 32 activations each code chunk pairs with
 * are broadcast to both halves. Nothing is repacked: the weights are the same bytes the
 * AVX2 kernels read, and the results are the same integers.
 *
 * Tiling: GEMM tiles are 4 rows (2 ZMM) x 8 tokens: 16 ZMM accumulators, each unpacked code
 * register serving 8 tokens, each broadcast activation serving 2 registers (4 rows). The
 * row pair's bytes stay in L1 while the token loop walks over a slab of I2S_NSLAB tokens
 * whose activations stay in L2. (GEMV is memory-bound; there the 256-bit shift-free kernel of
 * i2s_avx2.c, compiled for AVX512VL, streams faster: dispatch.c pairs the two. N >= 2 here.)
 *
 * Overflow: a 32-bit lane gets 4 products c*q (c <= 2, |q| <= 128) per code chunk, 4 chunks
 * per block: |lane| <= 4096 per block, 32*KP in total: exact for KP < 2^26.
 */
#include <immintrin.h>
#include <stddef.h>

#include "i2s_x86.h"
#include "kernels.h"

#define T_MAX 8          /* tokens per GEMM tile */
#define I2S_NSLAB 32     /* tokens whose activations stay in L2 while the rows stream past */

/* The core: RZ row pairs (RZ <= 2) times T tokens (T <= 8), full K. Always inlined with
 * constant RZ and T so the accumulators stay in registers.
 * rows[2z], rows[2z+1]: the two rows of pair z (the same row twice for an odd tail).
 * x: first token (tokens are x_stride apart).
 * out[2z + h][t] = sum_k c[row 2z+h][k] * q[t][k] (uncorrected). */
static inline __attribute__((always_inline))
void tile(const uint8_t *const rows[4], const int8_t *x, size_t x_stride, int KP,
          const int RZ, const int T, const uint8_t *pf, int32_t out[4][T_MAX]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i acc[2][T_MAX];
    for (int z = 0; z < RZ; z++)
        for (int t = 0; t < T; t++) acc[z][t] = _mm512_setzero_si512();
    for (int b = 0; b < KP / 128; b++) {
        __m512i wv[2];
        for (int z = 0; z < RZ; z++) {
            const uint8_t *lo = rows[2 * z] + 32 * (size_t)b, *hi = rows[2 * z + 1] + 32 * (size_t)b;
            wv[z] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)),
                                       _mm256_loadu_si256((const __m256i *)hi), 1);
        }
        if (pf) {                           /* the next 4 rows, 128 bytes per block */
            _mm_prefetch((const char *)(pf + 128 * (size_t)b), _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + 128 * (size_t)b + 64), _MM_HINT_T0);
        }
        const int8_t *xb = x + 128 * (size_t)b;
        for (int j = 0; j < 4; j++) {       /* codes at bits 6-2j pair with activations 32j.. */
            __m512i c[2];
            for (int z = 0; z < RZ; z++) c[z] = _mm512_and_si512(_mm512_srli_epi16(wv[z], 6 - 2 * j), m3);
            for (int t = 0; t < T; t++) {
                const __m512i xv = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)(xb + t * x_stride + 32 * j)));
                for (int z = 0; z < RZ; z++) acc[z][t] = _mm512_dpbusd_epi32(acc[z][t], c[z], xv);
            }
        }
    }
    if (T == 8) {
        /* 16 horizontal sums per row pair in 21 instructions instead of 16 hsum_epi32s:
         * unpack-and-add twice leaves, in each 128-bit quarter q of r4[k], the sums of that
         * quarter for tokens 4k..4k+3; quarters 0-1 belong to the low row, 2-3 to the high. */
        for (int z = 0; z < RZ; z++) {
            __m512i r4[2];
            for (int k = 0; k < 2; k++) {
                const __m512i *a = &acc[z][4 * k];
                __m512i p01 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[0], a[1]), _mm512_unpackhi_epi32(a[0], a[1]));
                __m512i p23 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2], a[3]), _mm512_unpackhi_epi32(a[2], a[3]));
                r4[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(p01, p23), _mm512_unpackhi_epi64(p01, p23));
            }
            /* quarters (0, 2) and (1, 3) of each: [low t0-3, high t0-3, low t4-7, high t4-7] */
            const __m512i even = _mm512_shuffle_i64x2(r4[0], r4[1], 0x88), odd = _mm512_shuffle_i64x2(r4[0], r4[1], 0xdd);
            int32_t v[16];
            _mm512_storeu_si512((void *)v, _mm512_add_epi32(even, odd));
            for (int t = 0; t < 4; t++) {
                out[2 * z][t] = v[t];
                out[2 * z + 1][t] = v[4 + t];
                out[2 * z][4 + t] = v[8 + t];
                out[2 * z + 1][4 + t] = v[12 + t];
            }
        }
        return;
    }
    for (int z = 0; z < RZ; z++)
        for (int t = 0; t < T; t++) {
            out[2 * z][t] = hsum_epi32(_mm512_castsi512_si256(acc[z][t]));
            out[2 * z + 1][t] = hsum_epi32(_mm512_extracti64x4_epi64(acc[z][t], 1));
        }
}

/* rows[] (RZ pairs) against tokens [n0, n1): tiles of 8 tokens, then tails of 4, 2, 1. */
static inline __attribute__((always_inline))
void rows_tokens(const uint8_t *const rows[4], const int8_t *x, int32_t *y, const int32_t *sx,
                 int M, int KP, int r, int nrows, int n0, int n1, const int RZ, const uint8_t *pf) {
    int32_t out[4][T_MAX];
    int n = n0;
#define TOKENS(TT)                                                                          \
    {                                                                                       \
        tile(rows, x + (size_t)n * KP, KP, KP, RZ, TT, n == n0 ? pf : NULL, out);          \
        for (int i = 0; i < nrows; i++)                                                     \
            for (int t = 0; t < TT; t++) y[(size_t)(n + t) * M + r + i] = out[i][t] - sx[n + t - n0]; \
        n += TT;                                                                            \
    }
    while (n + 8 <= n1) TOKENS(8)
    if (n + 4 <= n1) TOKENS(4)
    if (n + 2 <= n1) TOKENS(2)
    if (n < n1) TOKENS(1)
#undef TOKENS
}

void i2s_gemm_avx512vnni(const uint8_t *w, const int8_t *x, int32_t *y,
                         int N, int M, int KP, int row_begin, int row_end) {
    const size_t row_bytes = (size_t)KP / 4;
    int32_t sx[I2S_NSLAB];
    for (int n0 = 0; n0 < N; n0 += I2S_NSLAB) {
        const int n1 = n0 + I2S_NSLAB < N ? n0 + I2S_NSLAB : N;
        for (int n = n0; n < n1; n++) sx[n - n0] = sum_q(x + (size_t)n * KP, KP);
        int r = row_begin;
        for (; r + 4 <= row_end; r += 4) {
            const uint8_t *rows[4] = {w + r * row_bytes, w + (r + 1) * row_bytes, w + (r + 2) * row_bytes,
                                      w + (r + 3) * row_bytes};
            const uint8_t *next = r + 8 <= row_end ? w + (r + 4) * row_bytes : NULL;
            rows_tokens(rows, x, y, sx, M, KP, r, 4, n0, n1, 2, next);
        }
        for (; r < row_end; r += 2) {
            const int nrows = r + 1 < row_end ? 2 : 1;
            const uint8_t *rows[4] = {w + r * row_bytes, w + (r + nrows - 1) * row_bytes, NULL, NULL};
            rows_tokens(rows, x, y, sx, M, KP, r, nrows, n0, n1, 1, NULL);
        }
    }
}
