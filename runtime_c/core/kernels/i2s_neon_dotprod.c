/* i2s_neon_dotprod.c: the i2s kernels for ARMv8.2+ with the dot-product extension
 * (Cortex-A55/A76+, Raspberry Pi 5, Apple M), compiled with -mcpu=generic+dotprod (zig cc's
 * spelling of armv8.2-a+dotprod). dispatch.c calls them only when the CPU reports SDOT
 * (HWCAP_ASIMDDP). The tile and the method are i2s_neon.h's, with SDOT as the multiply-add.
 *
 * Overflow: SDOT adds every product straight into int32 lanes: row totals are bounded by
 * 256*KP < 2^31 for KP < 2^23.
 *
 * Tiling: GEMV 4 rows at once with fewer unpack operations (rows below); GEMM 4 rows x 4
 * tokens, as i2s_neon.c.
 */
#include "i2s_neon.h"
#include "kernels.h"

static inline int32x4_t mac_sdot(int32x4_t acc, int8x16_t c, int8x16_t x) { return vdotq_s32(acc, c, x); }
static inline int32x4_t widen_s32(int32x4_t acc32, int32x4_t acc) { return vaddq_s32(acc32, acc); }

static inline __attribute__((always_inline))
void tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride, int KP,
          int R, int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]) {
    i2s_tile_neon(mac_sdot, widen_s32, 0, w, row_bytes, x, x_stride, KP, R, T, pf, out);
}

/* GEMV rows with fewer unpack ops: code 0 is w >> 6 (no mask), codes 1-3 are kept in place,
 * w & 0x30 = 16*c, w & 0x0c = 4*c, w & 0x03 = c (all fit a signed byte), and go to
 * accumulators per scale (codes 0 and 3 share the x1 one); each lane of the x16 / x4
 * accumulators is a multiple of 16 / 4, so an arithmetic shift divides it back exactly.
 * 1 shift + 3 AND per 16 bytes instead of 3 shifts + 3 AND. Overflow: a lane gets KP/16
 * products of at most 16*2*128 = 2^12: exact for KP < 2^23. */
static inline __attribute__((always_inline))
void rows_block(const uint8_t *w, size_t row_bytes, const int8_t *xb, const int R, int32x4_t a1[4],
                int32x4_t a16[4], int32x4_t a4[4]) {
    const uint8x16_t m1 = vdupq_n_u8(0x30), m2 = vdupq_n_u8(0x0c), m3 = vdupq_n_u8(0x03);
    int8x16_t xv[8];
    for (int q = 0; q < 8; q++) xv[q] = vld1q_s8(xb + 16 * q);
    for (int i = 0; i < R; i++) {
        for (int h = 0; h < 2; h++) {   /* bytes 16h .. 16h+15 of the block */
            const uint8x16_t v = vld1q_u8(w + i * row_bytes + 16 * h);
            a1[i] = vdotq_s32(a1[i], vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), xv[h]);
            a16[i] = vdotq_s32(a16[i], vreinterpretq_s8_u8(vandq_u8(v, m1)), xv[2 + h]);
            a4[i] = vdotq_s32(a4[i], vreinterpretq_s8_u8(vandq_u8(v, m2)), xv[4 + h]);
            a1[i] = vdotq_s32(a1[i], vreinterpretq_s8_u8(vandq_u8(v, m3)), xv[6 + h]);
        }
    }
}

/* Blocks go in pairs (one 64-byte line per row), with one prefetch per row and pair and no
 * branch in the loop (pf 0, for the tails, prefetches the line being read: harmless). */
static inline __attribute__((always_inline))
void rows(const uint8_t *w, size_t row_bytes, const int8_t *x, int KP, const int R, size_t pf,
          int32_t out[I2S_TILE_R]) {
    int32x4_t a1[4], a16[4], a4[4];
    for (int i = 0; i < R; i++) a1[i] = a16[i] = a4[i] = vdupq_n_s32(0);
    const int nb = KP / 128;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        for (int i = 0; i < R; i++) __builtin_prefetch(w + i * row_bytes + 32 * (size_t)b + pf);
        rows_block(w + 32 * (size_t)b, row_bytes, x + 128 * (size_t)b, R, a1, a16, a4);
        rows_block(w + 32 * (size_t)(b + 1), row_bytes, x + 128 * (size_t)(b + 1), R, a1, a16, a4);
    }
    if (b < nb) rows_block(w + 32 * (size_t)b, row_bytes, x + 128 * (size_t)b, R, a1, a16, a4);
    for (int i = 0; i < R; i++)
        out[i] = i2s_addv_s32(vaddq_s32(a1[i], vaddq_s32(vshrq_n_s32(a16[i], 4), vshrq_n_s32(a4[i], 2))));
}

void i2s_gemv_neon_dotprod(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
                           int row_end, void *scratch) {
    (void)scratch;
    i2s_gemv_rows(rows, tile, 4, sum_q, w, x, y, KP, row_begin, row_end);
}

void i2s_gemm_neon_dotprod(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
                           int row_begin, int row_end, void *scratch) {
    (void)scratch;
    i2s_gemm_or_gemv(rows, tile, 4, 4, 4, 0, sum_q, w, x, y, N, M, KP, row_begin, row_end);
}
