/* i2sg_scalar.c: the reference block-scaled kernel (layout and numerics in i2sg.h). Plain C:
 * the oracle the SIMD variant is tested against, and the kernel of every other target. */
#include "i2sg.h"
#include "kernels.h"

void i2sg_gemv_scalar(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                      int KP, int row_begin, int row_end) {
    const long row_bytes = KP / 4;
    for (int r = row_begin; r < row_end; r++)
        y[r] = i2sg_row_scalar(w + r * row_bytes, i2sg_row_scales(d, G, KP, r), G, x, KP);
}

void i2sg_gemm_scalar(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                      int N, int M, int KP, int row_begin, int row_end) {
    for (int n = 0; n < N; n++)
        i2sg_gemv_scalar(w, d, G, x + (long)n * KP, y + (long)n * M, KP, row_begin, row_end);
}
