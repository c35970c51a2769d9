/* i2s_generic.c: portable i2s kernels written for compiler auto-vectorisation: the fast path
 * on targets without a hand-written SIMD kernel (armv7, riscv64, wasm32 with SIMD128, x86-64
 * without AVX2), compiled with no special flags. i2s_scalar.c stays the readable oracle.
 *
 * Layout: the i2s layout of kernels.h.
 *
 * Method: decode a chunk of a row (I2S_CHUNK weights) into int8 weights t in {-1,0,1} once,
 * then take plain int8 dot products with the activations, one per token. Both loops are
 * straight-line over contiguous arrays, which clang vectorises for SSE2, NEON, SIMD128 and
 * RVV alike (the int8 x int8 -> int32 dot product becomes pmaddwd / smlal / i32x4.dot).
 * In GEMM each decoded chunk serves every token of the batch.
 *
 * Overflow: int32 sums of products |t*q| <= 128: exact for KP < 2^24.
 */
#include <stddef.h>

#include "kernels.h"

#define I2S_CHUNK 1024  /* weights decoded at a time: 1 KiB of int8 stays in L1 */

static void decode_chunk(const uint8_t *bytes, int nblocks, int8_t *t) {
    for (int b = 0; b < nblocks; b++) {
        const uint8_t *blk = bytes + 32 * b;
        int8_t *tb = t + 128 * b;
        for (int p = 0; p < 32; p++) {
            const int v = blk[p];
            tb[p] = (int8_t)((v >> 6) - 1);
            tb[p + 32] = (int8_t)(((v >> 4) & 3) - 1);
            tb[p + 64] = (int8_t)(((v >> 2) & 3) - 1);
            tb[p + 96] = (int8_t)((v & 3) - 1);
        }
    }
}

/* n is a multiple of 128. Partial sums of 128 products stay in int16 (|sum| <= 128*128 =
 * 16384), so vectorisers can use 16-bit lanes (8 per 128-bit register) before widening. */
static int32_t dot_i8(const int8_t *restrict t, const int8_t *restrict x, int n) {
    int32_t s = 0;
    for (int k0 = 0; k0 < n; k0 += 128) {
        int16_t s16 = 0;
        for (int k = k0; k < k0 + 128; k++) s16 = (int16_t)(s16 + t[k] * x[k]);
        s += s16;
    }
    return s;
}

void i2s_gemm_generic(const uint8_t *w, const int8_t *x, int32_t *y,
                      int N, int M, int KP, int row_begin, int row_end, void *scratch) {
    (void)scratch;
    const size_t row_bytes = (size_t)KP / 4;
    int8_t t[I2S_CHUNK];
    for (int r = row_begin; r < row_end; r++) {
        const uint8_t *row = w + r * row_bytes;
        for (int n = 0; n < N; n++) y[(size_t)n * M + r] = 0;
        for (int k0 = 0; k0 < KP; k0 += I2S_CHUNK) {
            const int len = KP - k0 < I2S_CHUNK ? KP - k0 : I2S_CHUNK;
            decode_chunk(row + k0 / 4, len / 128, t);
            for (int n = 0; n < N; n++)
                y[(size_t)n * M + r] += dot_i8(t, x + (size_t)n * KP + k0, len);
        }
    }
}

void i2s_gemv_generic(const uint8_t *w, const int8_t *x, int32_t *y,
                      int KP, int row_begin, int row_end, void *scratch) {
    /* y[r] for one token: the GEMM with N = 1 and M irrelevant (token 0 only) */
    i2s_gemm_generic(w, x, y, 1, 0, KP, row_begin, row_end, scratch);
}
