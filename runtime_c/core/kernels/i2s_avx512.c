/* i2s_avx512.c: the i2s kernels for x86-64 with AVX-512 VNNI (Ice Lake / Sapphire Rapids
 * servers, Zen 4, Zen 5), compiled with -mavx2 -mavx512f -mavx512bw -mavx512vl -mavx512vnni.
 * dispatch.c calls them only after the start-up CPU check found AVX512F/BW/VNNI with OS
 * support for ZMM state (every such CPU has AVX512VL).
 *
 * Layout: the i2s layout of kernels.h (128-weight blocks of 32 bytes; bits 7-6, 5-4, 3-2, 1-0
 * of byte p hold weights p, p+32, p+64, p+96 as codes c = t+1 in {0,1,2}).
 *
 * Method: the unsigned-code trick of i2s_x86.h (sum_k c_k*q_k = y + sum_k q_k, so subtract
 * the activation sum at the end), with vpdpbusd on 512-bit registers. A 32-byte block of one
 * row fills half a register, so each ZMM holds the same block of TWO rows (row r in the low
 * 256 bits, row r+1 in the high 256 bits), and the 32 activations each code chunk pairs with
 * are broadcast to both halves. Nothing is repacked: the weights are the same bytes the
 * AVX2 kernels read, and the results are the same integers.
 *
 * Tiling: GEMM tiles are 4 rows (2 ZMM) x 8 tokens: 16 ZMM accumulators, each unpacked code
 * register serving 8 tokens, each broadcast activation serving 2 registers (4 rows); the
 * loops around the tiles are i2s_driver.h's. GEMV is memory-bound; there the 256-bit
 * shift-free rows of i2s_x86.h in their EVEX form stream faster than a 512-bit tile.
 *
 * Overflow: a 32-bit lane gets 4 products c*q (c <= 2, |q| <= 128) per code chunk, 4 chunks
 * per block: |lane| <= 4096 per block, 32*KP in total: exact for KP < 2^26 (GEMV: KP < 2^22).
 */
#include <immintrin.h>
#include <stddef.h>

#include "i2s_x86.h"
#include "kernels.h"

/* R rows (1, 2 or 4) x T tokens (<= 8), full K, as RZ = (R+1)/2 row pairs: pair z holds
 * rows 2z and 2z+1 (row 0 twice when R = 1). pf: prefetch the R rows that start pf bytes
 * on (the next row tile), R*32 bytes per block, so they arrive within this tile. */
static inline __attribute__((always_inline))
void tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride, int KP,
          const int R, const int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const int RZ = (R + 1) / 2;
    const uint8_t *rows[4];
    for (int i = 0; i < 2 * RZ; i++) rows[i] = w + (i < R ? i : R - 1) * row_bytes;
    __m512i acc[2][I2S_TILE_T];
    for (int z = 0; z < RZ; z++)
        for (int t = 0; t < T; t++) acc[z][t] = _mm512_setzero_si512();
    for (int b = 0; b < KP / 128; b++) {
        __m512i wv[2];
        for (int z = 0; z < RZ; z++) {
            const uint8_t *lo = rows[2 * z] + 32 * (size_t)b, *hi = rows[2 * z + 1] + 32 * (size_t)b;
            wv[z] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)),
                                       _mm256_loadu_si256((const __m256i *)hi), 1);
        }
        if (pf)                             /* the next R rows are contiguous: R*32 bytes per block */
            for (int o = 0; o < 32 * R; o += 64)
                BN_PREFETCH_STREAM((const char *)(w + pf + (size_t)(32 * R) * b + o));
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

static inline __m256i dp_evex(__m256i acc, __m256i codes, __m256i x) {
    return _mm256_dpbusd_epi32(acc, codes, x);
}

static inline __attribute__((always_inline))
void rows(const uint8_t *w, size_t row_bytes, const int8_t *x, int KP, int R, size_t pf,
          int32_t out[I2S_TILE_R]) {
    i2s_rows_vnni256(dp_evex, w, row_bytes, x, KP, R, pf, out);
}

void i2s_gemv_avx512vnni(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
                         int row_end, void *scratch) {
    (void)scratch;
    i2s_gemv_rows(rows, tile, 2, sum_q, w, x, y, KP, row_begin, row_end);
}

void i2s_gemm_avx512vnni(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
                         int row_begin, int row_end, void *scratch) {
    (void)scratch;
    i2s_gemm_or_gemv(rows, tile, 2, 4, 8, 1, sum_q, w, x, y, N, M, KP, row_begin, row_end);
}
