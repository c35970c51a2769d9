/* tl_scalar.c: plain-C kernels for the tl2 and tl1 packed layouts. They are the fallback a
 * --cpu-dispatch binary uses when a tl2 model meets a CPU without AVX2 (or a tl1 model a
 * non-ARM CPU), and the executable definition of both layouts: they decode each packed
 * weight group back to ternary digits, no lookup tables involved. The layouts are described
 * at the top of tl2_avx2.c and tl1_neon.c; the packers are compiler/pack_tl.py.
 *
 * Overflow: every product is |t*q| <= 128, a row sums to at most 128*KP: int32 for any
 * KP < 2^24.
 */
#include <stddef.h>
#include <string.h>

#include "kernels.h"
#include "tl_layout.h"

/* ---- tl2 ------------------------------------------------------------------------------ */

/* Balanced-ternary digits of u in [0, 13]: u = 9*d0 + 3*d1 + d2, digits in {-1,0,1}. */
static void tl2_digits(int u, int d[3]) {
    int v = u;
    for (int i = 2; i >= 0; i--) {
        int r = ((v % 3) + 3) % 3;       /* 0, 1, 2 */
        int digit = r == 2 ? -1 : r;
        d[i] = digit;
        v = (v - digit) / 3;
    }
}

static int32_t tl2_row(const uint8_t *tile, int i, const int8_t *x, int KP) {
    const int G = TL2_TRIPLES(KP), NO = TL2_OCTETS(KP);
    int32_t sum = 0;
    for (int o = 0; o < NO; o++) {
        const uint8_t *oct = tile + TL2_TILE_HEADER + (size_t)o * TL2_OCTET_BYTES;
        for (int j = 0; j < 8; j++) {
            const int g = 8 * o + j;
            if (g >= G) break;
            const uint8_t idxb = oct[32 * (j / 2) + i];
            const int u = (j & 1) ? idxb >> 4 : idxb & 15;
            const int neg = (oct[128 + i] >> j) & 1;
            int d[3];
            tl2_digits(u, d);
            int32_t s = 0;
            for (int e = 0; e < 3; e++) {
                const int k = 3 * g + e;
                if (k < KP) s += d[e] * x[k];
            }
            sum += neg ? -s : s;
        }
    }
    return sum;
}

size_t tl2_scratch_bytes(int KP, int N) {
    const int n = N < TL_NSLAB ? N : TL_NSLAB;
    return (size_t)n * TL2_LUT_BYTES(KP) + 64;
}

void tl2_gemv_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int KP, int row_begin, int row_end, void *scratch) {
    (void)scratch;
    for (int r = row_begin; r < row_end; r++)
        y[r] = tl2_row(w + (size_t)(r / 32) * TL2_TILE_BYTES(KP), r % 32, x, KP);
}

void tl2_gemm_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int N, int M, int KP, int row_begin, int row_end, void *scratch) {
    (void)scratch;
    for (int n = 0; n < N; n++)
        for (int r = row_begin; r < row_end; r++)
            y[(size_t)n * M + r] = tl2_row(w + (size_t)(r / 32) * TL2_TILE_BYTES(KP), r % 32,
                                           x + (size_t)n * KP, KP);
}

/* ---- tl1 ------------------------------------------------------------------------------ */

static int32_t tl1_row(const uint8_t *tile, int i, const int8_t *x, int KP) {
    int32_t sum = 0;
    for (int h = 0; h < KP / 4; h++) {          /* 32 bytes hold pairs 2h, 2h+1 of 32 rows */
        const uint8_t b = tile[(size_t)32 * h + i];
        for (int half = 0; half < 2; half++) {
            const int idx = half ? b >> 4 : b & 15;   /* 3*(t0+1) + (t1+1) */
            const int k = 4 * h + 2 * half;
            sum += (idx / 3 - 1) * x[k] + (idx % 3 - 1) * x[k + 1];
        }
    }
    return sum;
}

size_t tl1_scratch_bytes(int KP, int N) {
    const int n = N < TL_NSLAB ? N : TL_NSLAB;
    return (size_t)n * TL1_LUT_BYTES(KP) + 64;
}

void tl1_gemv_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int KP, int row_begin, int row_end, void *scratch) {
    (void)scratch;
    for (int r = row_begin; r < row_end; r++)
        y[r] = tl1_row(w + (size_t)(r / 32) * TL1_TILE_BYTES(KP), r % 32, x, KP);
}

void tl1_gemm_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int N, int M, int KP, int row_begin, int row_end, void *scratch) {
    (void)scratch;
    for (int n = 0; n < N; n++)
        for (int r = row_begin; r < row_end; r++)
            y[(size_t)n * M + r] = tl1_row(w + (size_t)(r / 32) * TL1_TILE_BYTES(KP), r % 32,
                                           x + (size_t)n * KP, KP);
}
