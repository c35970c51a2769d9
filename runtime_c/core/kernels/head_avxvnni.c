/* head_avxvnni.c: the integer head rows for x86-64 with AVX-VNNI, compiled with -mavx2 -mf16c
 * -mfma -mavxvnni: head_x86.h with vpdpbusd (VEX form); q8 codes get +128. The float rows of
 * such a CPU are head_avx2.c's. */
#include "head_x86.h"

static inline __m256i dot_u8(__m256i u, __m256i x) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, x); }
static inline __m256i dot_s8(__m256i w, __m256i x) { return dot_u8(_mm256_xor_si256(w, _mm256_set1_epi8(-128)), x); }

void head_q8_avxvnni(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_q8_rows(dot_s8, 7, q, d, in, logits, E, v0, v1);
}
void head_q6_avxvnni(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows(dot_u8, 6, q, d, in, logits, E, v0, v1);
}
void head_q4_avxvnni(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows(dot_u8, 4, q, d, in, logits, E, v0, v1);
}
