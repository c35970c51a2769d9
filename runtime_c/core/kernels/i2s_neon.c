/* i2s_neon.c: the i2s kernels for baseline AArch64 NEON (ARMv8-A: Cortex-A53/A72,
 * Raspberry Pi 3/4), compiled without extra flags. The tile and the method are i2s_neon.h's,
 * with SMLAL into int16 lanes as the multiply-add.
 *
 * Overflow: products c*q lie in [-256, 254]; one block adds 16 of them to each int16 lane
 * ([-4096, 4064]); I2S_GROUP = 4 blocks stay within [-16384, 16256] before SADALP widens them
 * into int32. Row totals are bounded by 256*KP < 2^31 for KP < 2^23.
 *
 * Tiling: GEMV 4 rows at once; GEMM 4 rows x 4 tokens, so every code vector unpacked from
 * the weights serves 4 tokens from registers (i2s_driver.h has the loops around the tiles).
 */
#include "i2s_neon.h"
#include "kernels.h"

#define I2S_GROUP 4   /* blocks accumulated in int16 before widening; see overflow note */

static inline int32x4_t mac_smlal(int32x4_t acc, int8x16_t c, int8x16_t x) {
    int16x8_t a = vreinterpretq_s16_s32(acc);
    a = vmlal_s8(a, vget_low_s8(c), vget_low_s8(x));
    return vreinterpretq_s32_s16(vmlal_high_s8(a, c, x));
}

static inline int32x4_t widen_s16(int32x4_t acc32, int32x4_t acc) {
    return vpadalq_s16(acc32, vreinterpretq_s16_s32(acc));
}

static inline __attribute__((always_inline))
void tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride, int KP,
          int R, int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    i2s_tile_neon(mac_smlal, widen_s16, I2S_GROUP, w, row_bytes, x, x_stride, KP, R, T, pf, out);
}

void i2s_gemv_neon(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
                   int row_end, void *scratch) {
    (void)scratch;
    i2s_gemv_rows(NULL, tile, 4, sum_q, w, x, y, KP, row_begin, row_end);
}

void i2s_gemm_neon(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
                   int row_begin, int row_end, void *scratch) {
    (void)scratch;
    i2s_gemm_or_gemv(NULL, tile, 4, 4, 4, 0, sum_q, w, x, y, N, M, KP, row_begin, row_end);
}
