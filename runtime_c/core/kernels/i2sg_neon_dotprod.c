/* i2sg_neon_dotprod.c: the block-scaled kernel for AArch64 with dot product (Cortex-A55/A76+,
 * Pi 5, Apple M), compiled with +dotprod: i2sg_neon.h with SDOT as its multiply-accumulate. */
#include "i2sg_neon.h"

static inline int32x4_t mac_sdot(int32x4_t acc, int8x16_t t, int8x16_t x) {
    return vdotq_s32(acc, t, x);
}

static void rows4(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, const int32_t *xs,
                  float *y, int KP, int r) {
    (void)xs;
    i2sg_neon_rows4(mac_sdot, w, d, G, x, y, KP, r);
}

void i2sg_gemv_neon_dotprod(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                            int KP, int row_begin, int row_end) {
    i2sg_gemv_rows(rows4, 0, w, d, G, x, y, KP, row_begin, row_end);
}

void i2sg_gemm_neon_dotprod(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                            int N, int M, int KP, int row_begin, int row_end) {
    i2sg_gemm_strips(i2sg_gemv_neon_dotprod, w, d, G, x, y, N, M, KP, row_begin, row_end);
}
