/* head.c: the output head, logits[v] = dot(head[v], x) over a [V, E] float matrix.
 *
 * For a tied 2B-4T model this reads 128256 x 2560 f16 values per token, more bytes than all
 * ternary layers together, so it gets its own SIMD path: on x86-64 CPUs with AVX2 (which
 * all have F16C and FMA) eight f16 values are widened per instruction; elsewhere a
 * 64K-entry f16 -> f32 table. Each row is summed by one thread in a fixed order, so
 * results do not depend on the thread count.
 */
#include "model_internal.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* f16 -> f32 for every bit pattern, filled once (256 KiB). */
static float f16_table[65536];
static int f16_table_ready;

static float f16_bits_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {                       /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void head_init(void) {
    if (f16_table_ready) return;
    for (uint32_t i = 0; i < 65536; i++) f16_table[i] = f16_bits_to_f32((uint16_t)i);
    f16_table_ready = 1;
}


/* ---- portable rows ---- */

static void rows_f16_portable(const uint16_t *head, const float *x, float *logits, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const uint16_t *row = head + (size_t)v * BN_N_EMBD;
        float sum = 0.0f;
        for (int i = 0; i < BN_N_EMBD; i++) sum += f16_table[row[i]] * x[i];
        logits[v] = sum;
    }
}

static void rows_f32_portable(const float *head, const float *x, float *logits, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const float *row = head + (size_t)v * BN_N_EMBD;
        float sum = 0.0f;
        for (int i = 0; i < BN_N_EMBD; i++) sum += row[i] * x[i];
        logits[v] = sum;
    }
}

/* q8: int8 codes, one f32 scale per row */
static void rows_q8_portable(const int8_t *q, const float *d, const float *x, float *logits, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const int8_t *row = q + (size_t)v * BN_N_EMBD;
        float sum = 0.0f;
        for (int i = 0; i < BN_N_EMBD; i++) sum += (float)row[i] * x[i];
        logits[v] = sum * d[v];
    }
}

/* q4: 32-element blocks, two 4-bit codes per byte (low nibble first), one f32 scale per block */
#define Q4_BLOCK 32
static void rows_q4_portable(const uint8_t *q, const float *d, const float *x, float *logits, int v0, int v1) {
    const int nb = BN_N_EMBD / Q4_BLOCK;
    for (int v = v0; v < v1; v++) {
        const uint8_t *row = q + (size_t)v * (BN_N_EMBD / 2);
        float sum = 0.0f;
        for (int b = 0; b < nb; b++) {
            float s = 0.0f;
            for (int j = 0; j < Q4_BLOCK / 2; j++) {
                uint8_t byte = row[b * (Q4_BLOCK / 2) + j];
                s += (float)((int)(byte & 15) - 8) * x[b * Q4_BLOCK + 2 * j];
                s += (float)((int)(byte >> 4) - 8) * x[b * Q4_BLOCK + 2 * j + 1];
            }
            sum += s * d[(size_t)v * nb + b];
        }
        logits[v] = sum;
    }
}

/* ---- x86-64 AVX2 + F16C + FMA rows (chosen at run time) ---- */
#if defined(__x86_64__)
#define AVX2_FNS __attribute__((target("avx2,f16c,fma")))

AVX2_FNS static float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_FNS static void rows_f16_avx2(const uint16_t *head, const float *x, float *logits, int v0, int v1) {
    const int n32 = BN_N_EMBD / 32 * 32;
    for (int v = v0; v < v1; v++) {
        const uint16_t *row = head + (size_t)v * BN_N_EMBD;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int i = 0;
        for (; i < n32; i += 32) {    /* four independent FMA chains */
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i))), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i + 8))), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i + 16))), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i + 24))), _mm256_loadu_ps(x + i + 24), a3);
        }
        float sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < BN_N_EMBD; i++) sum += f16_table[row[i]] * x[i];
        logits[v] = sum;
    }
}

/* Four independent accumulators (32 elements per step): with one, every FMA would wait for
 * the previous one and the row would be latency-bound instead of memory-bound. */
AVX2_FNS static void rows_q8_avx2(const int8_t *q, const float *d, const float *x, float *logits, int v0, int v1) {
    const int n32 = BN_N_EMBD / 32 * 32;
    for (int v = v0; v < v1; v++) {
        const int8_t *row = q + (size_t)v * BN_N_EMBD;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int i = 0;
        for (; i < n32; i += 32) {
            __m256i b = _mm256_loadu_si256((const __m256i *)(row + i));
            __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + i + 24), a3);
        }
        float sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < BN_N_EMBD; i++) sum += (float)row[i] * x[i];
        logits[v] = sum * d[v];
    }
}

/* x rearranged per 32-block as (even elements, odd elements) so low and high nibbles line up */
AVX2_FNS static void rows_q4_avx2(const uint8_t *q, const float *d, const float *x, float *logits, int v0, int v1) {
    const int nb = BN_N_EMBD / Q4_BLOCK;
    const __m128i mask = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    for (int v = v0; v < v1; v++) {
        const uint8_t *row = q + (size_t)v * (BN_N_EMBD / 2);
        __m256 total = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++) {
            __m128i bytes = _mm_loadu_si128((const __m128i *)(row + b * 16));
            __m128i lo = _mm_sub_epi8(_mm_and_si128(bytes, mask), eight);                  /* elements 0,2,..,30 */
            __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), eight); /* elements 1,3,..,31 */
            __m128i e0 = _mm_unpacklo_epi8(lo, hi);     /* elements 0..15 in order */
            __m128i e1 = _mm_unpackhi_epi8(lo, hi);     /* elements 16..31 */
            const float *xb = x + b * Q4_BLOCK;
            __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(e0)), _mm256_loadu_ps(xb));
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(e0, 8))), _mm256_loadu_ps(xb + 8), s);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(e1)), _mm256_loadu_ps(xb + 16), s);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(e1, 8))), _mm256_loadu_ps(xb + 24), s);
            total = _mm256_fmadd_ps(s, _mm256_set1_ps(d[(size_t)v * nb + b]), total);
        }
        logits[v] = hsum256(total);
    }
}

AVX2_FNS static void rows_f32_avx2(const float *head, const float *x, float *logits, int v0, int v1) {
    const int n8 = BN_N_EMBD / 8 * 8;
    for (int v = v0; v < v1; v++) {
        const float *row = head + (size_t)v * BN_N_EMBD;
        __m256 acc = _mm256_setzero_ps();
        int i = 0;
        for (; i < n8; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(x + i), acc);
        float sum = hsum256(acc);
        for (; i < BN_N_EMBD; i++) sum += row[i] * x[i];
        logits[v] = sum;
    }
}
#endif

/* logits[v] for v in [v0, v1): m is a [V, E] matrix stored as `type` (BN_MAT_*), x is (E). */
void head_rows(const bn_matrix_ref *m, int type, const float *x, float *logits, int v0, int v1) {
    const uint8_t *data = bn_blob() + m->data;
    const float *scales = (const float *)(bn_blob() + m->scales);
#if defined(__x86_64__) && !defined(KERNELS_SCALAR_ONLY)
    if (kernel_cpu_features() & KCPU_AVX2) {
        switch (type) {
        case BN_MAT_F16: rows_f16_avx2((const uint16_t *)data, x, logits, v0, v1); return;
        case BN_MAT_Q8: rows_q8_avx2((const int8_t *)data, scales, x, logits, v0, v1); return;
        case BN_MAT_Q4: rows_q4_avx2(data, scales, x, logits, v0, v1); return;
        default: rows_f32_avx2((const float *)data, x, logits, v0, v1); return;
        }
    }
#endif
    switch (type) {
    case BN_MAT_F16: rows_f16_portable((const uint16_t *)data, x, logits, v0, v1); return;
    case BN_MAT_Q8: rows_q8_portable((const int8_t *)data, scales, x, logits, v0, v1); return;
    case BN_MAT_Q4: rows_q4_portable(data, scales, x, logits, v0, v1); return;
    default: rows_f32_portable((const float *)data, x, logits, v0, v1); return;
    }
}

/* One row of a [V, E] matrix as f32: the embedding lookup. */
void matrix_row(float *out, const bn_matrix_ref *m, int type, int row) {
    const uint8_t *data = bn_blob() + m->data;
    const float *scales = (const float *)(bn_blob() + m->scales);
    switch (type) {
    case BN_MAT_F16: {
        const uint16_t *p = (const uint16_t *)data + (size_t)row * BN_N_EMBD;
        for (int i = 0; i < BN_N_EMBD; i++) out[i] = f16_table[p[i]];
        return;
    }
    case BN_MAT_Q8: {
        const int8_t *p = (const int8_t *)data + (size_t)row * BN_N_EMBD;
        for (int i = 0; i < BN_N_EMBD; i++) out[i] = (float)p[i] * scales[row];
        return;
    }
    case BN_MAT_Q4: {
        const uint8_t *p = data + (size_t)row * (BN_N_EMBD / 2);
        const float *d = scales + (size_t)row * (BN_N_EMBD / Q4_BLOCK);
        for (int i = 0; i < BN_N_EMBD; i += 2) {
            out[i] = (float)((int)(p[i / 2] & 15) - 8) * d[i / Q4_BLOCK];
            out[i + 1] = (float)((int)(p[i / 2] >> 4) - 8) * d[i / Q4_BLOCK];
        }
        return;
    }
    default:
        memcpy(out, (const float *)data + (size_t)row * BN_N_EMBD, BN_N_EMBD * sizeof(float));
        return;
    }
}
