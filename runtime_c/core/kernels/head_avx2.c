/* head_avx2.c: the output head's rows for x86-64 with AVX2 (which every such CPU pairs with
 * F16C and FMA), compiled with -mavx2 -mf16c -mfma. Float rows: eight f16 values widened per
 * instruction, four independent FMA chains. Integer rows: head_x86.h with vpmaddubsw. */
#include "head_x86.h"

void head_f16_avx2(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1) {
    const int n32 = E / 32 * 32;
    for (int v = v0; v < v1; v++) {
        const uint16_t *row = m + (size_t)v * E;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int i = 0;
        for (; i < n32; i += 32) {
            BN_PREFETCH_STREAM((const char *)(row + i) + HEAD_PREFETCH);
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i))), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i + 8))), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i + 16))), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i + 24))), _mm256_loadu_ps(x + i + 24), a3);
        }
        float sum = head_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < E; i++) sum += head_f16_table[row[i]] * x[i];
        logits[v] = sum;
    }
}

void head_f32_avx2(const float *m, const float *x, float *logits, int E, int v0, int v1) {
    const int n8 = E / 8 * 8;
    for (int v = v0; v < v1; v++) {
        const float *row = m + (size_t)v * E;
        __m256 acc = _mm256_setzero_ps();
        int i = 0;
        for (; i < n8; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(x + i), acc);
        float sum = head_hsum256(acc);
        for (; i < E; i++) sum += row[i] * x[i];
        logits[v] = sum;
    }
}

static inline __m256i dot_u8(__m256i u, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}
/* signed q8 codes w: |w| * (sign(w) * xq) */
static inline __m256i dot_s8(__m256i w, __m256i x) { return dot_u8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)); }

void head_q8_avx2(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_q8_rows(dot_s8, 0, q, d, in, logits, E, v0, v1);
}
void head_q6_avx2(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows(dot_u8, 6, q, d, in, logits, E, v0, v1);
}
void head_q4_avx2(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    head_qk_rows(dot_u8, 4, q, d, in, logits, E, v0, v1);
}
