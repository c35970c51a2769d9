/* i2sg_neon.c: the block-scaled kernel for every AArch64 core (Cortex-A53/A72, Pi 3/4):
 * i2sg_neon.h with a widening multiply (smull/smlal2) and a pairwise widening add (sadalp). */
#include "i2sg_neon.h"

static inline int32x4_t mac_smull(int32x4_t acc, int8x16_t t, int8x16_t x) {
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(t), vget_low_s8(x)), t, x));
}

static void rows4(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, const int32_t *xs,
                  float *y, int KP, int r) {
    (void)xs;
    i2sg_neon_rows4(mac_smull, w, d, G, x, y, KP, r);
}

void i2sg_gemv_neon(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int KP, int row_begin, int row_end) {
    i2sg_gemv_rows(rows4, 0, w, d, G, x, y, KP, row_begin, row_end);
}

void i2sg_gemm_neon(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int N, int M, int KP, int row_begin, int row_end) {
    i2sg_gemm_strips(i2sg_gemv_neon, w, d, G, x, y, N, M, KP, row_begin, row_end);
}
