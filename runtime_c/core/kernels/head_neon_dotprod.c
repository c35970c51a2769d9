/* head_neon_dotprod.c: the integer head rows for AArch64 with the dot-product extension
 * (ARMv8.2 SDOT: Cortex-A55/A76+, Pi 5, Apple M), compiled with -mcpu=generic+dotprod:
 * head_neon.h with SDOT, four signed byte products per int32 lane (exact). The float rows of
 * such a CPU are head_neon.c's. */
#include "head_neon.h"

static inline int32x4_t dot_sdot(int8x16_t c0, int8x16_t c1, const int8_t *xq) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), c0, vld1q_s8(xq)), c1, vld1q_s8(xq + 16));
}

void head_q8_neon_dotprod(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_q8_rows_neon(dot_sdot, q, d, in, logits, E, v0, v1);
}
void head_q6_neon_dotprod(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0,
                          int v1) {
    head_qk_rows_neon(dot_sdot, 6, q, d, in, logits, E, v0, v1);
}
void head_q4_neon_dotprod(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0,
                          int v1) {
    head_qk_rows_neon(dot_sdot, 4, q, d, in, logits, E, v0, v1);
}
