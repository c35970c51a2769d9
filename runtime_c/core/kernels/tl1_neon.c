/* tl1_neon.c: the tl1 lookup-table kernels for AArch64 NEON (baseline ARMv8-A: no dot
 * product needed, so this is the fast path for Cortex-A72 / Raspberry Pi 4 as well).
 * tl_scalar.c runs the same layout on any other CPU.
 *
 * ---- The tl1 layout (writer: compiler/pack_tl.py pack_tl1; sizes: tl_layout.h) ----------
 * K is padded to KP (multiple of 128, as for i2s; activations are zero past K). Weights are
 * taken in pairs g = 0 .. KP/2-1 (weights k = 2g, 2g+1), each stored as the 4-bit index
 * idx = 3*(t0+1) + (t1+1) in 0..8 (= 3*t0 + t1 + 4): 2 bits per weight. Rows come in tiles
 * of 32 (M padded with zero rows). Tile t (rows 32t .. 32t+31) is TL1_TILE_BYTES(KP) =
 * 8*KP bytes at t*TL1_TILE_BYTES(KP), a sequence of KP/4 vectors of 32 bytes:
 *   vector h, byte i: idx of row i, pair 2h (bits 3-0) and pair 2h+1 (bits 7-4)
 * Byte lane i of a vector is row i of the tile, so 16 bytes of indices feed one TBL for 16
 * rows.
 *
 * ---- Method ---------------------------------------------------------------------------
 * Per token and pair (a0, a1) we build the table L[idx] = (idx/3 - 1)*a0 + (idx%3 - 1)*a1
 * for idx in 0..8 (entries 9..15 = 0). |L| <= 256 needs int16, so it is stored as two
 * 16-byte TBL tables, low bytes and high bytes (32 bytes per pair in the scratch). For a
 * tile: TBL both tables with the indices of 16 rows, ZIP the two results into int16 lanes
 * (one lane per row), add.
 *
 * Overflow: each int16 term lies in [-256, 254]; TL1_WIDEN = 64 pairs are summed in int16
 * (|sum| <= 16384) before widening to int32. Row totals: |y| <= 128*KP.
 *
 * GEMM: tokens in slabs of TL_NSLAB whose tables sit in the scratch; the indices of each
 * tile are unpacked once per 4 tokens. Scratch: tl1_scratch_bytes(KP, N) (tl_scalar.c)
 * = min(N, 8) * 16*KP bytes + 64.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <string.h>

#include "kernels.h"
#include "tl_driver.h"
#include "tl_layout.h"

#define TL1_WIDEN_VECTORS 32  /* 32 vectors x 2 pairs = 64 pairs per int16 sum */

/* Tables for one token: lut[32*g .. 32*g+15] low bytes, [32*g+16 .. +31] high bytes. */
static inline void tl1_build_lut(const int8_t *x, int KP, uint8_t *lut) {
    static const int16_t e0[16] = {-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    static const int16_t e1[16] = {-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    const int16x8_t E0a = vld1q_s16(e0), E0b = vld1q_s16(e0 + 8);
    const int16x8_t E1a = vld1q_s16(e1), E1b = vld1q_s16(e1 + 8);
    for (int g = 0; g < KP / 2; g++) {
        const int16_t a0 = x[2 * g], a1 = x[2 * g + 1];
        const int16x8_t La = vmlaq_n_s16(vmulq_n_s16(E0a, a0), E1a, a1);  /* entries 0-7 */
        const int16x8_t Lb = vmlaq_n_s16(vmulq_n_s16(E0b, a0), E1b, a1);  /* entries 8-15 */
        const uint8x16_t ua = vreinterpretq_u8_s16(La), ub = vreinterpretq_u8_s16(Lb);
        vst1q_u8(lut + 32 * (size_t)g, vuzp1q_u8(ua, ub));        /* low bytes */
        vst1q_u8(lut + 32 * (size_t)g + 16, vuzp2q_u8(ua, ub));   /* high bytes */
    }
}

/* One 32-row tile against T tokens (T <= 4), full K; out[t][i] = row i for token t. */
static inline __attribute__((always_inline))
void tl1_tile(const uint8_t *tile, const uint8_t *const *luts, int KP, const int T, size_t pf,
              int32_t out[4][32]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    const int nv = KP / 4;
    int32x4_t acc32[4][8];
    for (int t = 0; t < T; t++)
        for (int q = 0; q < 8; q++) acc32[t][q] = vdupq_n_s32(0);
    for (int h0 = 0; h0 < nv; h0 += TL1_WIDEN_VECTORS) {
        const int h1 = h0 + TL1_WIDEN_VECTORS < nv ? h0 + TL1_WIDEN_VECTORS : nv;
        int16x8_t acc[4][4];   /* [token][rows 8q .. 8q+7] */
        for (int t = 0; t < T; t++)
            for (int q = 0; q < 4; q++) acc[t][q] = vdupq_n_s16(0);
        for (int h = h0; h < h1; h++) {
            const uint8x16_t va = vld1q_u8(tile + 32 * (size_t)h);        /* rows 0-15 */
            const uint8x16_t vb = vld1q_u8(tile + 32 * (size_t)h + 16);   /* rows 16-31 */
            if (pf && !(h & 1)) __builtin_prefetch(tile + 32 * (size_t)h + pf);  /* GEMV: next tile */
            const uint8x16_t ia[2] = {vandq_u8(va, m4), vshrq_n_u8(va, 4)};
            const uint8x16_t ib[2] = {vandq_u8(vb, m4), vshrq_n_u8(vb, 4)};
            for (int p = 0; p < 2; p++) {           /* pair 2h + p */
                for (int t = 0; t < T; t++) {
                    const uint8_t *l = luts[t] + 32 * (2 * (size_t)h + p);
                    const uint8x16_t tlo = vld1q_u8(l), thi = vld1q_u8(l + 16);
                    const uint8x16_t loa = vqtbl1q_u8(tlo, ia[p]), hia = vqtbl1q_u8(thi, ia[p]);
                    const uint8x16_t lob = vqtbl1q_u8(tlo, ib[p]), hib = vqtbl1q_u8(thi, ib[p]);
                    acc[t][0] = vaddq_s16(acc[t][0], vreinterpretq_s16_u8(vzip1q_u8(loa, hia)));
                    acc[t][1] = vaddq_s16(acc[t][1], vreinterpretq_s16_u8(vzip2q_u8(loa, hia)));
                    acc[t][2] = vaddq_s16(acc[t][2], vreinterpretq_s16_u8(vzip1q_u8(lob, hib)));
                    acc[t][3] = vaddq_s16(acc[t][3], vreinterpretq_s16_u8(vzip2q_u8(lob, hib)));
                }
            }
        }
        for (int t = 0; t < T; t++)
            for (int q = 0; q < 4; q++) {
                acc32[t][2 * q] = vaddw_s16(acc32[t][2 * q], vget_low_s16(acc[t][q]));
                acc32[t][2 * q + 1] = vaddw_high_s16(acc32[t][2 * q + 1], acc[t][q]);
            }
    }
    for (int t = 0; t < T; t++)
        for (int q = 0; q < 8; q++) vst1q_s32(&out[t][4 * q], acc32[t][q]);
}

void tl1_gemv_neon(const uint8_t *w, const int8_t *x, int32_t *y,
                   int KP, int row_begin, int row_end, void *scratch) {
    tl_gemm(tl1_build_lut, tl1_tile, TL1_TILE_BYTES(KP), TL1_LUT_BYTES(KP), KP, w, x, y, 1, 0, KP, row_begin, row_end, scratch);
}

void tl1_gemm_neon(const uint8_t *w, const int8_t *x, int32_t *y,
                   int N, int M, int KP, int row_begin, int row_end, void *scratch) {
    tl_gemm(tl1_build_lut, tl1_tile, TL1_TILE_BYTES(KP), TL1_LUT_BYTES(KP), KP, w, x, y, N, M, KP, row_begin, row_end, scratch);
}
