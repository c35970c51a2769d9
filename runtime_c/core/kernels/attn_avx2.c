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
 *   four weight broadcasts, eight multiplies and eight adds.
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

static inline __attribute__((always_inline)) void pv_t(const attn_kv *kv, const float *p, int s0, int n, float *o,
                                                       const int type) {
    const int D = kv->D;
    for (int d = 0; d < D; d += 16) {
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
        for (int j = 0; j < n; j++) {
            const size_t row = (size_t)(s0 + j) * D + d;
            __m256 v0 = load8(kv->v, row, type), v1 = load8(kv->v, row + 8, type);
            __m256 w0 = _mm256_broadcast_ss(p + j), w1 = _mm256_broadcast_ss(p + ATTN_CHUNK + j);
            __m256 w2 = _mm256_broadcast_ss(p + 2 * ATTN_CHUNK + j), w3 = _mm256_broadcast_ss(p + 3 * ATTN_CHUNK + j);
            a00 = _mm256_add_ps(a00, _mm256_mul_ps(w0, v0)); a01 = _mm256_add_ps(a01, _mm256_mul_ps(w0, v1));
            a10 = _mm256_add_ps(a10, _mm256_mul_ps(w1, v0)); a11 = _mm256_add_ps(a11, _mm256_mul_ps(w1, v1));
            a20 = _mm256_add_ps(a20, _mm256_mul_ps(w2, v0)); a21 = _mm256_add_ps(a21, _mm256_mul_ps(w2, v1));
            a30 = _mm256_add_ps(a30, _mm256_mul_ps(w3, v0)); a31 = _mm256_add_ps(a31, _mm256_mul_ps(w3, v1));
        }
        _mm256_storeu_ps(o + d, a00); _mm256_storeu_ps(o + d + 8, a01);
        _mm256_storeu_ps(o + D + d, a10); _mm256_storeu_ps(o + D + d + 8, a11);
        _mm256_storeu_ps(o + 2 * D + d, a20); _mm256_storeu_ps(o + 2 * D + d + 8, a21);
        _mm256_storeu_ps(o + 3 * D + d, a30); _mm256_storeu_ps(o + 3 * D + d + 8, a31);
    }
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
