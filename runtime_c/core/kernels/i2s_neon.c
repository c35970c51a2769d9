/* i2s_neon.c: the i2s kernels for baseline NEON: AArch64 (ARMv8-A: Cortex-A53/A72, Raspberry
 * Pi 3/4), compiled without extra flags, and 32-bit ARMv7 with NEON (a Pi 2/3/4 on a 32-bit
 * OS), compiled with -mcpu=generic+v7a+neon (zig cc), where dispatch.c calls them only when the CPU reports NEON
 * (HWCAP_NEON; a Pi Zero/1 has none). The tile and the method are i2s_neon.h's, with SMLAL
 * into int16 lanes as the multiply-add (only instructions both ISAs have).
 *
 * Overflow: products c*q lie in [-256, 254]; one block adds 16 of them to each int16 lane
 * ([-4096, 4064]); I2S_GROUP = 4 blocks stay within [-16384, 16256] before SADALP widens them
 * into int32. Row totals are bounded by 256*KP < 2^31 for KP < 2^23.
 *
 * Tiling (AArch64; 32-bit ARM below): GEMV 4 rows at once (rows below); GEMM 4 rows x 4
 * tokens, so every code vector unpacked from the weights serves 4 tokens from registers
 * (i2s_driver.h has the loops around the tiles).
 */
#include "i2s_neon.h"
#include "kernels.h"

#define I2S_GROUP 4   /* blocks accumulated in int16 before widening; see overflow note */

/* Rows per GEMV call and the GEMM tile: AArch64 has 32 NEON registers, enough for 16
 * accumulators; 32-bit ARM has 16, where 4 rows spill (llvm-mca on Cortex-A72: 81 cycles per
 * 256 weights at 4 rows, 40 at 1; bench/arm_model.py). */
#if defined(__aarch64__)
#define GEMV_R 4
#define GEMM_R 4
#define GEMM_T 4
#else
#define GEMV_R 1
#define GEMM_R 2
#define GEMM_T 2
#endif

static inline int32x4_t mac_smlal(int32x4_t acc, int8x16_t c, int8x16_t x) {
    int16x8_t a = vreinterpretq_s16_s32(acc);
    a = vmlal_s8(a, vget_low_s8(c), vget_low_s8(x));
    return vreinterpretq_s32_s16(vmlal_s8(a, vget_high_s8(c), vget_high_s8(x)));   /* SMLAL2 on AArch64 */
}

static inline int32x4_t widen_s16(int32x4_t acc32, int32x4_t acc) {
    return vpadalq_s16(acc32, vreinterpretq_s16_s32(acc));
}

static inline __attribute__((always_inline))
void tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride, int KP,
          int R, int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    i2s_tile_neon(mac_smlal, widen_s16, I2S_GROUP, w, row_bytes, x, x_stride, KP, R, T, pf, out);
}

/* GEMV rows: one int16 accumulator per row and code vector j (16 independent SMLAL chains
 * of 4 per block, where the tile with T = 1 has 4 chains of 16: on cores whose SMLAL has a
 * 4-cycle latency the tile waited on its chains). Overflow: a lane gets 4 products in
 * [-256, 254] per block, ROWS_GROUP = 16 blocks stay within [-16384, 16256] before SADALP
 * widens them. Blocks go in pairs with one prefetch per row and no branch in the loop. */
#define ROWS_GROUP 16

static inline __attribute__((always_inline))
void rows_block(const uint8_t *w, size_t row_bytes, const int8_t *xb, const int R, int16x8_t a[4][4]) {
    int8x16_t xv[8];
    for (int q = 0; q < 8; q++) xv[q] = vld1q_s8(xb + 16 * q);
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        const uint8x16_t wl = vld1q_u8(w + i * row_bytes), wh = vld1q_u8(w + i * row_bytes + 16);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int8x16_t cl = codes(wl, j), ch = codes(wh, j);
            a[i][j] = vmlal_s8(a[i][j], vget_low_s8(cl), vget_low_s8(xv[2 * j]));
            a[i][j] = vmlal_s8(a[i][j], vget_high_s8(cl), vget_high_s8(xv[2 * j]));
            a[i][j] = vmlal_s8(a[i][j], vget_low_s8(ch), vget_low_s8(xv[2 * j + 1]));
            a[i][j] = vmlal_s8(a[i][j], vget_high_s8(ch), vget_high_s8(xv[2 * j + 1]));
        }
    }
}

static inline __attribute__((always_inline))
void rows(const uint8_t *w, size_t row_bytes, const int8_t *x, int KP, const int R, size_t pf,
          int32_t out[I2S_TILE_R]) {
    const int nb = KP / 128;
    int32x4_t acc[4];
    for (int i = 0; i < R; i++) acc[i] = vdupq_n_s32(0);
    for (int b0 = 0; b0 < nb; b0 += ROWS_GROUP) {
        const int b1 = b0 + ROWS_GROUP < nb ? b0 + ROWS_GROUP : nb;
        int16x8_t a[4][4];
        for (int i = 0; i < R; i++)
            for (int j = 0; j < 4; j++) a[i][j] = vdupq_n_s16(0);
        int b = b0;
        for (; b + 2 <= b1; b += 2) {
            for (int i = 0; i < R; i++) __builtin_prefetch(w + i * row_bytes + 32 * (size_t)b + pf);
            rows_block(w + 32 * (size_t)b, row_bytes, x + 128 * (size_t)b, R, a);
            rows_block(w + 32 * (size_t)(b + 1), row_bytes, x + 128 * (size_t)(b + 1), R, a);
        }
        if (b < b1) rows_block(w + 32 * (size_t)b, row_bytes, x + 128 * (size_t)b, R, a);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < 4; j++) acc[i] = vpadalq_s16(acc[i], a[i][j]);
    }
    for (int i = 0; i < R; i++) out[i] = i2s_addv_s32(acc[i]);
}

void i2s_gemv_neon(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
                   int row_end, void *scratch) {
    (void)scratch;
    i2s_gemv_rows(rows, tile, GEMV_R, sum_q, w, x, y, KP, row_begin, row_end);
}

void i2s_gemm_neon(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
                   int row_begin, int row_end, void *scratch) {
    (void)scratch;
    i2s_gemm_or_gemv(rows, tile, GEMV_R, GEMM_R, GEMM_T, 0, sum_q, w, x, y, N, M, KP, row_begin, row_end);
}
