/* i2s_scalar.c: the reference ternary kernel. Plain C, no intrinsics: the oracle every SIMD
 * kernel is tested against, and the fallback for targets without a SIMD variant. Written as
 * simple loops over one 128-weight block so compilers can vectorise it.
 *
 * Overflow: |t*q| <= 128 per weight, so a row of K weights sums to at most 128*K in
 * magnitude; int32 holds that for any K < 2^24.
 */
#include "kernels.h"

/* One row: sum over KP/128 blocks of 32 bytes, each byte holding 4 weights. */
static int32_t i2s_row_dot(const uint8_t *row, const int8_t *x, int KP) {
    int32_t sum = 0;
    for (int b = 0; b < KP / 128; b++) {
        const uint8_t *blk = row + b * 32;     /* 32 bytes = 128 weights */
        const int8_t *xb = x + b * 128;        /* 128 activations */
        int32_t s = 0;
        for (int p = 0; p < 32; p++) {
            uint8_t v = blk[p];
            s += ((int32_t)((v >> 6) & 3) - 1) * xb[p];
            s += ((int32_t)((v >> 4) & 3) - 1) * xb[p + 32];
            s += ((int32_t)((v >> 2) & 3) - 1) * xb[p + 64];
            s += ((int32_t)(v & 3) - 1) * xb[p + 96];
        }
        sum += s;
    }
    return sum;
}

void i2s_gemv_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int KP, int row_begin, int row_end, void *scratch) {
    (void)scratch;
    const long row_bytes = KP / 4;
    for (int r = row_begin; r < row_end; r++) {
        y[r] = i2s_row_dot(w + (long)r * row_bytes, x, KP);
    }
}

void i2s_gemm_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int N, int M, int KP, int row_begin, int row_end, void *scratch) {
    (void)scratch;
    (void)scratch;
    const long row_bytes = KP / 4;
    for (int r = row_begin; r < row_end; r++) {
        const uint8_t *row = w + (long)r * row_bytes;
        for (int n = 0; n < N; n++) {
            y[(long)n * M + r] = i2s_row_dot(row, x + (long)n * KP, KP);
        }
    }
}
