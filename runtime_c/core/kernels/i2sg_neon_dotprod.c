/* i2sg_neon_dotprod.c: the block-scaled kernel for AArch64 with dot product (Cortex-A55/A76+,
 * Pi 5, Apple M), compiled with +dotprod: i2sg_neon.h with SDOT as its multiply-accumulate. */
#include "i2sg_neon.h"

static inline int32x4_t mac_sdot(int32x4_t acc, int8x16_t t, int8x16_t x) {
    return vdotq_s32(acc, t, x);
}

I2SG_NEON_VARIANT(neon_dotprod, mac_sdot)
