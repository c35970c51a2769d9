/* i2s_avxvnni.c: the i2s kernels for x86-64 with AVX-VNNI (Alder Lake+, Zen 5+), compiled
 * with -mavx2 -mavxvnni. dispatch.c calls them only after the start-up CPU check found AVX2
 * and AVX-VNNI with OS support for YMM state.
 *
 * Method: the 256-bit tile of i2s_x86.h with vpdpbusd (VEX form) as its multiply-add: the
 * four products of each int32 lane go straight into int32 accumulators, no int16 stage.
 * GEMV uses the shift-free rows of i2s_x86.h (i2s_rows_vnni256), 2 rows at a time.
 *
 * Overflow: a lane gets 4 products c*q (c <= 2, |q| <= 128) per code chunk: row totals are
 * bounded by 256*KP < 2^31 for KP < 2^23 (the GEMV rows: KP < 2^22, see i2s_x86.h).
 *
 * Tiling: GEMM tiles of 2 rows x 4 tokens, as i2s_avx2.c.
 */
#include <immintrin.h>

#include "i2s_x86.h"
#include "kernels.h"

static inline __m256i dp_vex(__m256i acc, __m256i codes, __m256i x) {
    return _mm256_dpbusd_avx_epi32(acc, codes, x);
}

static inline __attribute__((always_inline))
void tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride, int KP,
          int R, int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    i2s_tile256(dp_vex, 0, w, row_bytes, x, x_stride, KP, R, T, pf, out);
}

static inline __attribute__((always_inline))
void rows(const uint8_t *w, size_t row_bytes, const int8_t *x, int KP, int R, size_t pf,
          int32_t out[I2S_TILE_R]) {
    i2s_rows_vnni256(dp_vex, w, row_bytes, x, KP, R, pf, out);
}

void i2s_gemv_avxvnni(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
                      int row_end, void *scratch) {
    (void)scratch;
    i2s_gemv_rows(rows, tile, 2, sum_q, w, x, y, KP, row_begin, row_end);
}

void i2s_gemm_avxvnni(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
                      int row_begin, int row_end, void *scratch) {
    (void)scratch;
    i2s_gemm_or_gemv(rows, tile, 2, 2, 4, 1, sum_q, w, x, y, N, M, KP, row_begin, row_end);
}
