/* attn_avx2.c: the attention inner loops with AVX2 and F16C (compiled with -mavx2 -mf16c;
 * picked at start-up on CPUs with AVX2, which all have F16C). Numerics and layout in
 * attn.h; every result equals attn_scalar.c bit for bit: the same products and sums in the
 * same order, eight keys (scores) or eight value elements (pv) per register, no FMA.
 *
 * scores: for four queries and two blocks of eight keys, per element d: one load of element
 *   d of each block's eight keys (f32, f16 converted, or int8 widened), four query
 *   broadcasts, eight multiplies and eight adds into eight accumulators (one per query and
 *   block, a key per lane).
 * pv: for four queries and sixteen value elements: per key two loads of the value row,
 *   four weight broadcasts, eight multiplies and eight adds; a head dim that is not a
 *   multiple of 16 ends with eight, four and single elements.
 */
#include <immintrin.h>

#include "attn.h"

static inline __attribute__((always_inline)) __m256 load8(const void *base, size_t i, const int type) {
    if (type == ATTN_KV_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    if (type == ATTN_KV_Q8)
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)base + i))));
    return _mm256_loadu_ps((const float *)base + i);
}

/* nb (1 or 2) blocks of eight keys from position s for four queries: 4 * nb accumulators,
 * one per query and block, each summed over d in order. Two blocks give eight independent
 * add chains, enough to cover the add latency (four chains left the adder idle 3/4 of the
 * time at depth). */
static inline __attribute__((always_inline)) void scores_blocks(const attn_kv *kv, const float *const qr[4], int s,
                                                                float inv_sqrt_d, float *S, int col, const int nb,
                                                                const int type) {
    const int D = kv->D;
    const size_t base = (size_t)(s / ATTN_KB) * D * ATTN_KB;
    const size_t next = (size_t)D * ATTN_KB;             /* the next block's element 0 */
    __m256 a[2][4];
    for (int h = 0; h < nb; h++)
        for (int i = 0; i < 4; i++) a[h][i] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        for (int h = 0; h < nb; h++) {
            const __m256 k = load8(kv->k, base + h * next + (size_t)d * ATTN_KB, type);
            for (int i = 0; i < 4; i++) a[h][i] = _mm256_add_ps(a[h][i], _mm256_mul_ps(_mm256_broadcast_ss(qr[i] + d), k));
        }
    }
    const __m256 inv = _mm256_set1_ps(inv_sqrt_d);
    for (int h = 0; h < nb; h++) {
        const __m256 sc = type == ATTN_KV_Q8 ? _mm256_loadu_ps(kv->ks + s + h * ATTN_KB) : inv;
        for (int i = 0; i < 4; i++) {
            __m256 v = a[h][i];
            if (type == ATTN_KV_Q8) v = _mm256_mul_ps(v, sc);
            _mm256_storeu_ps(S + i * ATTN_CHUNK + col + h * ATTN_KB, _mm256_mul_ps(v, inv));
        }
    }
}

static inline __attribute__((always_inline)) void scores_t(const attn_kv *kv, const float *q, int s0, int nblk,
                                                           float inv_sqrt_d, float *S, const int type) {
    const int D = kv->D;
    const float *const qr[4] = {q, q + D, q + 2 * D, q + 3 * D};
    int b = 0;
    for (; b + 2 <= nblk; b += 2) scores_blocks(kv, qr, s0 + b * ATTN_KB, inv_sqrt_d, S, b * ATTN_KB, 2, type);
    if (b < nblk) scores_blocks(kv, qr, s0 + b * ATTN_KB, inv_sqrt_d, S, b * ATTN_KB, 1, type);
}

void attn_scores_avx2(const attn_kv *kv, const float *q, int s0, int nblk, float inv_sqrt_d, float *S) {
    if (kv->type == ATTN_KV_F16) scores_t(kv, q, s0, nblk, inv_sqrt_d, S, ATTN_KV_F16);
    else if (kv->type == ATTN_KV_Q8) scores_t(kv, q, s0, nblk, inv_sqrt_d, S, ATTN_KV_Q8);
    else scores_t(kv, q, s0, nblk, inv_sqrt_d, S, ATTN_KV_F32);
}

/* Four loads of four value elements as f32 (the tail of a row whose length is not a
 * multiple of eight). */
static inline __attribute__((always_inline)) __m128 load4(const void *base, size_t i, const int type) {
    if (type == ATTN_KV_F16) return _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)((const uint16_t *)base + i)));
    if (type == ATTN_KV_Q8) {
        int32_t x;
        __builtin_memcpy(&x, (const int8_t *)base + i, 4);
        return _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(x)));
    }
    return _mm_loadu_ps((const float *)base + i);
}

/* Columns [d, d + 8 * W) of the four queries' outputs, W = 1 or 2 registers of eight. */
static inline __attribute__((always_inline)) void pv_cols8(const attn_kv *kv, const float *p, int s0, int n,
                                                          float *o, int d, const int W, const int type) {
    const int D = kv->D;
    __m256 a[ATTN_QB][2];
    for (int i = 0; i < ATTN_QB; i++) a[i][0] = a[i][1] = _mm256_setzero_ps();
    for (int j = 0; j < n; j++) {
        const size_t row = (size_t)(s0 + j) * D + d;
        __m256 v[2];
        for (int c = 0; c < W; c++) v[c] = load8(kv->v, row + 8 * c, type);
        for (int i = 0; i < ATTN_QB; i++) {
            const __m256 w = _mm256_broadcast_ss(p + i * ATTN_CHUNK + j);
            for (int c = 0; c < W; c++) a[i][c] = _mm256_add_ps(a[i][c], _mm256_mul_ps(w, v[c]));
        }
    }
    for (int i = 0; i < ATTN_QB; i++)
        for (int c = 0; c < W; c++) _mm256_storeu_ps(o + (size_t)i * D + d + 8 * c, a[i][c]);
}

/* Sixteen columns at a time; a head dim that is not a multiple of 16 (bitnet_b1_58-3B's
 * is 100) ends with eight, then four, then single columns. Every column is the same sum in
 * the same order as attn_scalar.c's. */
static inline __attribute__((always_inline)) void pv_t(const attn_kv *kv, const float *p, int s0, int n, float *o,
                                                       const int type) {
    const int D = kv->D;
    int d = 0;
    for (; d + 16 <= D; d += 16) pv_cols8(kv, p, s0, n, o, d, 2, type);
    if (d + 8 <= D) { pv_cols8(kv, p, s0, n, o, d, 1, type); d += 8; }
    if (d + 4 <= D) {
        __m128 a[ATTN_QB];
        for (int i = 0; i < ATTN_QB; i++) a[i] = _mm_setzero_ps();
        for (int j = 0; j < n; j++) {
            const __m128 v = load4(kv->v, (size_t)(s0 + j) * D + d, type);
            for (int i = 0; i < ATTN_QB; i++) a[i] = _mm_add_ps(a[i], _mm_mul_ps(_mm_set1_ps(p[i * ATTN_CHUNK + j]), v));
        }
        for (int i = 0; i < ATTN_QB; i++) _mm_storeu_ps(o + (size_t)i * D + d, a[i]);
        d += 4;
    }
    for (; d < D; d++) attn_pv_column(kv, p, s0, n, o, d);
}

void attn_pv_avx2(const attn_kv *kv, const float *p, int s0, int n, float *o) {
    if (kv->type == ATTN_KV_F16) pv_t(kv, p, s0, n, o, ATTN_KV_F16);
    else if (kv->type == ATTN_KV_Q8) pv_t(kv, p, s0, n, o, ATTN_KV_Q8);
    else pv_t(kv, p, s0, n, o, ATTN_KV_F32);
}

void attn_exp_avx2(float *x, int n) {
    const __m256 lo = _mm256_set1_ps(-87.0f), log2e = _mm256_set1_ps(1.44269504f), sh = _mm256_set1_ps(12582912.0f);
    const __m256 ln2hi = _mm256_set1_ps(0.693359375f), ln2lo = _mm256_set1_ps(-2.12194440e-4f);
    const float c[8] = {1.98412698e-4f, 1.38888889e-3f, 8.33333333e-3f, 4.16666667e-2f, 1.66666667e-1f, 0.5f, 1.0f, 1.0f};
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_max_ps(lo, _mm256_loadu_ps(x + i));       /* x < -87 ? -87 : x (x kept if NaN) */
        __m256 kf = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v, log2e), sh), sh);
        __m256 r = _mm256_sub_ps(_mm256_sub_ps(v, _mm256_mul_ps(kf, ln2hi)), _mm256_mul_ps(kf, ln2lo));
        __m256 p = _mm256_set1_ps(c[0]);
        for (int k = 1; k < 8; k++) p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c[k]));
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kf), _mm256_set1_epi32(127)), 23);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
    }
}
