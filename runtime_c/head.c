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

float f16_to_f32(uint16_t h) { return f16_table[h]; }

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
    const int n8 = BN_N_EMBD / 8 * 8;
    for (int v = v0; v < v1; v++) {
        const uint16_t *row = head + (size_t)v * BN_N_EMBD;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= n8; i += 16) {
            __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i)));
            __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i + 8)));
            acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0);
            acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc1);
        }
        for (; i < n8; i += 8) {
            __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + i)));
            acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0);
        }
        float sum = hsum256(_mm256_add_ps(acc0, acc1));
        for (; i < BN_N_EMBD; i++) sum += f16_table[row[i]] * x[i];
        logits[v] = sum;
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

/* logits[v] for v in [v0, v1): head is [V, E] f16 (is_f16) or f32, x is (E). */
void head_rows(const void *head, int is_f16, const float *x, float *logits, int v0, int v1) {
#if defined(__x86_64__) && !defined(KERNELS_SCALAR_ONLY)
    if (kernel_cpu_features() & KCPU_AVX2) {
        if (is_f16) rows_f16_avx2(head, x, logits, v0, v1);
        else rows_f32_avx2(head, x, logits, v0, v1);
        return;
    }
#endif
    if (is_f16) rows_f16_portable(head, x, logits, v0, v1);
    else rows_f32_portable(head, x, logits, v0, v1);
}
