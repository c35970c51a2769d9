/* i2sg_neon.c: the block-scaled kernel for every AArch64 core (Cortex-A53/A72, Pi 3/4):
 * i2sg_neon.h with a widening multiply (smull/smlal2) and a pairwise widening add (sadalp). */
#include "i2sg_neon.h"

static inline int32x4_t mac_smull(int32x4_t acc, int8x16_t t, int8x16_t x) {
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(t), vget_low_s8(x)), t, x));
}

I2SG_NEON_VARIANT(neon, mac_smull)
