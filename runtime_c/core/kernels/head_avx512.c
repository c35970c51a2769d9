/* head_avx512.c: the head rows for x86-64 with AVX-512 (F, BW, VL, VNNI), compiled with
 * -mavx2 -mf16c -mfma -mavx512f -mavx512bw -mavx512vl -mavx512vnni.
 *
 * f16: the sums of head_avx2.c with 512-bit registers (half the f16 conversions and FMAs per
 * row: the F16 head was conversion-bound, not memory-bound, at one thread). Lanes 0-7 of z0
 * are a0 there, 8-15 are a1; z1 holds a2, a3: every lane sees the same FMAs in the same
 * order, and the halves are added exactly as there, so the logits are bit-identical.
 * Integer rows: head_x86.h with the 256-bit EVEX vpdpbusd (for CPUs with AVX-512 VNNI but
 * not AVX-VNNI: Zen 4, Ice Lake); q8 codes get +128. */
#include "head_x86.h"

void head_f16_avx512(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1) {
    const int n32 = E / 32 * 32;
    for (int v = v0; v < v1; v++) {
        const uint16_t *row = m + (size_t)v * E;
        __m512 z0 = _mm512_setzero_ps(), z1 = _mm512_setzero_ps();
        int i = 0;
        for (; i < n32; i += 32) {
            BN_PREFETCH_STREAM((const char *)(row + i) + HEAD_PREFETCH);
            z0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + i))), _mm512_loadu_ps(x + i), z0);
            z1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + i + 16))), _mm512_loadu_ps(x + i + 16), z1);
        }
        __m256 a0 = _mm512_castps512_ps256(z0), a1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z0), 1));
        __m256 a2 = _mm512_castps512_ps256(z1), a3 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z1), 1));
        float sum = head_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < E; i++) sum += head_f16_table[row[i]] * x[i];
        logits[v] = sum;
    }
}

static inline __m256i dot_u8(__m256i u, __m256i x) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x); }
static inline __m256i dot_s8(__m256i w, __m256i x) { return dot_u8(_mm256_xor_si256(w, _mm256_set1_epi8(-128)), x); }

void head_q8_avx512(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_q8_rows(dot_s8, 7, q, d, in, logits, E, v0, v1);
}
void head_q6_avx512(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows(dot_u8, 6, q, d, in, logits, E, v0, v1);
}
void head_q4_avx512(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows(dot_u8, 4, q, d, in, logits, E, v0, v1);
}
