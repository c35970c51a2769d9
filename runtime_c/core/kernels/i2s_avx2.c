/* i2s_avx2.c: the i2s kernels for x86-64 with AVX2 (Haswell+, Zen 1+), compiled with -mavx2.
 * Only the x86 kernel files may contain AVX instructions; dispatch.c calls these only after
 * the start-up CPU check found AVX2 with OS support for YMM state.
 *
 * Method: the 256-bit tile of i2s_x86.h with vpmaddubsw as its multiply-add (layout and the
 * unsigned-code trick are described there).
 *
 * Overflow: vpmaddubsw adds two products c*q with c in [0,2], q in [-128,127], so each int16
 * lane lies in [-512, 508] and never saturates. One 128-weight block adds 4 such lanes:
 * [-2048, 2032]. We add I2S_GROUP = 8 blocks in int16 (|sum| <= 16384 < 32767) and then widen
 * to int32 with vpmaddwd. Row totals are bounded by 256*KP < 2^31 for KP < 2^23.
 *
 * Tiling: GEMV runs 4 rows at once (each activation load serves 4 rows) and prefetches ahead;
 * GEMM runs tiles of 2 rows x 4 tokens: each unpacked code vector is used for 4 tokens
 * straight from registers (i2s_driver.h has the loops around the tiles).
 */
#include <immintrin.h>

#include "i2s_x86.h"
#include "kernels.h"

#define I2S_GROUP 8   /* blocks accumulated in int16 before widening; see overflow note */

static inline __m256i mac_maddubs(__m256i acc, __m256i codes, __m256i x) {
    return _mm256_add_epi16(acc, _mm256_maddubs_epi16(codes, x));
}

static inline __attribute__((always_inline))
void tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride, int KP,
          int R, int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    i2s_tile256(mac_maddubs, I2S_GROUP, w, row_bytes, x, x_stride, KP, R, T, pf, out);
}

void i2s_gemv_avx2(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
                   int row_end, void *scratch) {
    (void)scratch;
    i2s_gemv_rows(NULL, tile, 4, sum_q, w, x, y, KP, row_begin, row_end);
}

void i2s_gemm_avx2(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
                   int row_begin, int row_end, void *scratch) {
    (void)scratch;
    i2s_gemm_or_gemv(NULL, tile, 4, 2, 4, 1, sum_q, w, x, y, N, M, KP, row_begin, row_end);
}
