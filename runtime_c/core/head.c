/* head.c: the output head, logits[v] = dot(head[v], x) over a [V, E] matrix, and the
 * embedding lookup (one row of such a matrix as floats).
 *
 * For a tied 2B-4T model the head reads 128256 x 2560 values per token, more bytes than all
 * ternary layers together, so it gets its own SIMD paths (x86-64 with AVX2, chosen at run
 * time; portable C elsewhere). Each row is summed by one thread in a fixed order, so results
 * do not depend on the thread count.
 *
 * Float heads (f32, f16): float dot products with x. On AVX2 CPUs (which all have F16C and
 * FMA) eight f16 values are widened per instruction; elsewhere a 64K-entry f16 -> f32 table.
 *
 * Integer heads (q8, q6, q4; layouts in weights.h and compiler/pack.py pack_matrix):
 * head_prepare quantizes x once per token into 32-element blocks, xq = round(x / dx) with
 * dx = max|block| / 127. Per row and block b, the integer dot isum_b = sum(code * xq) is exact;
 * the block's float term is dx_b * isum_b (q8, whose one row scale multiplies the total) or
 * (dw_b * dx_b) * isum_b (q6, q4, with the f16 block scale dw_b). Term b is added to float
 * lane b % 8 of eight partial sums, which are summed as ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)):
 * the portable and the SIMD code do exactly these operations (no FMA), so every CPU gives
 * bit-identical logits, and compiler/reference.py quantized_head computes the same.
 *
 * q4/q6 rows are stored as pairs of blocks (A = elements 64p..64p+31, B = the next 32):
 *   32 bytes: low 4 bits of A[k] in the low nibble, of B[k] in the high nibble (k = 0..31)
 *   q6 only, 16 bytes: byte j = high 2 bits of A[j] | A[j+16] << 2 | B[j] << 4 | B[j+16] << 6
 * so one 256-bit load and a mask or shift give the 32 low parts of A or of B in element
 * order, and the 16 high-bit bytes broadcast to both halves of a register give the high
 * parts with one 64-bit variable shift per block. Codes are unsigned (c = value + 32 for q6,
 * + 8 for q4): vpmaddubsw (u8 x s8) or vpdpbusd multiplies them by xq, and the offset comes
 * off as 32 * sum(xq) (head_input.sum). q8 codes are signed: AVX2 multiplies |w| by
 * sign(w) * xq; with VNNI (AVX-VNNI, or AVX512-VNNI's 256-bit form) the codes get +128 and
 * 128 * sum(xq) comes off.
 */
#include "model_internal.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define Q8_ROW ((BN_N_EMBD + 31) / 32 * 32)   /* q8 bytes per row (EP8) */
#define Q8_NB (Q8_ROW / 32)                    /* q8 blocks per row */
#define Q6_ROW (HEAD_XP / 64 * 48)             /* q6 bytes per row */
#define Q4_ROW (HEAD_XP / 64 * 32)             /* q4 bytes per row */

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

/* ---- the integer heads' input ---- */

/* Round to nearest, ties to even, for |v| < 2^22 (as model.c; np.rint). */
static float round_half_even(float v) {
    const float big = 12582912.0f;   /* 1.5 * 2^23 */
    return (v + big) - big;
}

void head_prepare(head_input *in, int type, const float *x) {
    in->x = x;
    if (type != BN_MAT_Q8 && type != BN_MAT_Q6 && type != BN_MAT_Q4) return;
    for (int b = 0; b < HEAD_NB; b++) {
        int n = BN_N_EMBD - b * 32;          /* elements of x in this block */
        n = n < 0 ? 0 : n > 32 ? 32 : n;
        float amax = 0.0f;
        for (int i = 0; i < n; i++) { float a = fabsf(x[b * 32 + i]); if (a > amax) amax = a; }
        float d = amax / 127.0f;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            int q = 0;
            if (i < n && d > 0.0f) {
                float r = round_half_even(x[b * 32 + i] / d);
                q = r > 127.0f ? 127 : r < -127.0f ? -127 : r == r ? (int)r : 0;
            }
            in->q[b * 32 + i] = (int8_t)q;
            sum += q;
        }
        in->d[b] = d;
        in->sum[b] = sum;
    }
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

/* The eight float lanes of an integer head's row, summed in the one fixed order. */
static float lanes_sum(const float l[8]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* The float term of block b of a row (the SIMD rows use these for blocks past the last
 * whole group of eight). */
static float q8_term(const int8_t *row, const head_input *in, int b) {
    int32_t s = 0;
    for (int k = 0; k < 32; k++) s += (int32_t)row[b * 32 + k] * in->q[b * 32 + k];
    return in->d[b] * (float)s;
}

static float q6_term(const uint8_t *row, const uint16_t *dw, const head_input *in, int b) {
    const uint8_t *lo = row + (b >> 1) * 48, *hi = lo + 32;
    const int sh = 4 * (b & 1);                /* A: low nibbles / bits 0-3; B: high / bits 4-7 */
    int32_t s = 0;
    for (int k = 0; k < 32; k++) {
        int c = ((lo[k] >> sh) & 15) | (((hi[k & 15] >> (sh + 2 * (k >> 4))) & 3) << 4);
        s += c * in->q[b * 32 + k];
    }
    s -= 32 * in->sum[b];
    return (f16_table[dw[b]] * in->d[b]) * (float)s;
}

static float q4_term(const uint8_t *row, const uint16_t *dw, const head_input *in, int b) {
    const uint8_t *lo = row + (b >> 1) * 32;
    const int sh = 4 * (b & 1);
    int32_t s = 0;
    for (int k = 0; k < 32; k++) s += ((lo[k] >> sh) & 15) * in->q[b * 32 + k];
    s -= 8 * in->sum[b];
    return (f16_table[dw[b]] * in->d[b]) * (float)s;
}

static void rows_q8_portable(const int8_t *q, const float *d, const head_input *in, float *logits, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const int8_t *row = q + (size_t)v * Q8_ROW;
        float lanes[8] = {0};
        for (int b = 0; b < Q8_NB; b++) lanes[b & 7] += q8_term(row, in, b);
        logits[v] = lanes_sum(lanes) * d[v];
    }
}

static void rows_q6_portable(const uint8_t *q, const uint16_t *d, const head_input *in, float *logits, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const uint8_t *row = q + (size_t)v * Q6_ROW;
        const uint16_t *dw = d + (size_t)v * HEAD_NB;
        float lanes[8] = {0};
        for (int b = 0; b < HEAD_NB; b++) lanes[b & 7] += q6_term(row, dw, in, b);
        logits[v] = lanes_sum(lanes);
    }
}

static void rows_q4_portable(const uint8_t *q, const uint16_t *d, const head_input *in, float *logits, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const uint8_t *row = q + (size_t)v * Q4_ROW;
        const uint16_t *dw = d + (size_t)v * HEAD_NB;
        float lanes[8] = {0};
        for (int b = 0; b < HEAD_NB; b++) lanes[b & 7] += q4_term(row, dw, in, b);
        logits[v] = lanes_sum(lanes);
    }
}

/* ---- x86-64 AVX2 + F16C + FMA rows, and AVX-VNNI variants of the integer ones (chosen at run time) ---- */
#if defined(__x86_64__)
/* Rows are streamed once per token: prefetch 4 KiB ahead (the hardware prefetcher alone
 * left the q6 head about 5% short of memory speed at one thread). */
#define HEAD_PREFETCH 4096
#define AVX2_FNS __attribute__((target("avx2,f16c,fma")))
#define VNNI_FNS __attribute__((target("avx2,f16c,fma,avxvnni")))
#define EVEX_FNS __attribute__((target("avx2,f16c,fma,avx512vl,avx512vnni")))   /* the same, EVEX-encoded */

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
            _mm_prefetch((const char *)(row + i) + HEAD_PREFETCH, _MM_HINT_T0);
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

/* The same sums with 512-bit registers where AVX-512 is present (half the f16 conversions
 * and FMAs per row: the F16 head was conversion-bound, not memory-bound, at one thread).
 * Lanes 0-7 of z0 are a0 above, 8-15 are a1; z1 holds a2, a3: every lane sees the same
 * FMAs in the same order, and the halves are added exactly as above, so the logits are
 * bit-identical to rows_f16_avx2's. */
#define AVX512_FNS __attribute__((target("avx2,f16c,fma,avx512f")))
AVX512_FNS static void rows_f16_avx512(const uint16_t *head, const float *x, float *logits, int v0, int v1) {
    const int n32 = BN_N_EMBD / 32 * 32;
    for (int v = v0; v < v1; v++) {
        const uint16_t *row = head + (size_t)v * BN_N_EMBD;
        __m512 z0 = _mm512_setzero_ps(), z1 = _mm512_setzero_ps();
        int i = 0;
        for (; i < n32; i += 32) {
            _mm_prefetch((const char *)(row + i) + HEAD_PREFETCH, _MM_HINT_T0);
            z0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + i))), _mm512_loadu_ps(x + i), z0);
            z1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + i + 16))), _mm512_loadu_ps(x + i + 16), z1);
        }
        __m256 a0 = _mm512_castps512_ps256(z0), a1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z0), 1));
        __m256 a2 = _mm512_castps512_ps256(z1), a3 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z1), 1));
        float sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
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

/* Lane j of the result: the sum of the eight int32 lanes of s[j]. */
AVX2_FNS static inline __m256i sum8_epi32(const __m256i s[8]) {
    __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
    /* t0 = (s0..s3 over lanes 0-3 | s0..s3 over lanes 4-7), t1 the same for s4..s7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
}

/* Integer products of 32 unsigned codes u with 32 signed xq, summed into eight int32 lanes. */
#define DOT_AVX2(u, x) _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
#define DOT_VNNI(u, x) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, x)
#define DOT_EVEX(u, x) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)
/* The same for signed q8 codes w: |w| * (sign(w) * xq), or (w + 128) * xq (offset 128). */
#define DOT8_AVX2(w, x) DOT_AVX2(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
#define DOT8_VNNI(w, x) DOT_VNNI(_mm256_xor_si256(w, _mm256_set1_epi8(-128)), x)
#define DOT8_EVEX(w, x) DOT_EVEX(_mm256_xor_si256(w, _mm256_set1_epi8(-128)), x)

/* The eight block terms of blocks b..b+7 added to the float lanes acc (isum: their integer
 * dots, scale: their float scales), exactly as the portable rows do. */
#define ADD_TERMS(acc, scale, isum) acc = _mm256_add_ps(acc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)))

/* OFF_SHIFT: log2 of the code offset the dot product adds (0: none). */
#define Q8_ROWS(NAME, FNS, DOT, OFF_SHIFT)                                                                \
FNS static void NAME(const int8_t *q, const float *d, const head_input *in, float *logits, int v0, int v1) { \
    for (int v = v0; v < v1; v++) {                                                                         \
        const int8_t *row = q + (size_t)v * Q8_ROW;                                                         \
        __m256 acc = _mm256_setzero_ps();                                                                   \
        int b = 0;                                                                                          \
        for (; b + 8 <= Q8_NB; b += 8) {                                                                    \
            __m256i s[8];                                                                                   \
            _mm_prefetch((const char *)(row + b * 32 + HEAD_PREFETCH), _MM_HINT_T0);                        \
            _mm_prefetch((const char *)(row + b * 32 + HEAD_PREFETCH + 64), _MM_HINT_T0);                   \
            _mm_prefetch((const char *)(row + b * 32 + HEAD_PREFETCH + 128), _MM_HINT_T0);                  \
            _mm_prefetch((const char *)(row + b * 32 + HEAD_PREFETCH + 192), _MM_HINT_T0);                  \
            for (int j = 0; j < 8; j++)                                                                     \
                s[j] = DOT(_mm256_loadu_si256((const __m256i *)(row + (b + j) * 32)),                       \
                           _mm256_loadu_si256((const __m256i *)(in->q + (b + j) * 32)));                    \
            __m256i isum = sum8_epi32(s);                                                                   \
            if (OFF_SHIFT)                                                                                  \
                isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(                                            \
                    _mm256_loadu_si256((const __m256i *)(in->sum + b)), OFF_SHIFT));                        \
            ADD_TERMS(acc, _mm256_loadu_ps(in->d + b), isum);                                               \
        }                                                                                                   \
        float lanes[8];                                                                                     \
        _mm256_storeu_ps(lanes, acc);                                                                       \
        for (; b < Q8_NB; b++) lanes[b & 7] += q8_term(row, in, b);                                         \
        logits[v] = lanes_sum(lanes) * d[v];                                                                \
    }                                                                                                       \
}

/* BITS 6 or 4: a pair of blocks is 48 or 32 bytes; codes are offset by 32 or 8. */
#define QK_ROWS(NAME, FNS, DOT, BITS)                                                                     \
FNS static void NAME(const uint8_t *q, const uint16_t *d, const head_input *in, float *logits, int v0, int v1) { \
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);                                 \
    const __m256i sha = _mm256_setr_epi64x(4, 4, 2, 2), shb = _mm256_setr_epi64x(0, 0, 2, 2);               \
    const int pair = BITS == 6 ? 48 : 32;                                                                   \
    for (int v = v0; v < v1; v++) {                                                                         \
        const uint8_t *row = q + (size_t)v * (HEAD_XP / 64 * pair);                                         \
        const uint16_t *dw = d + (size_t)v * HEAD_NB;                                                       \
        __m256 acc = _mm256_setzero_ps();                                                                   \
        int b = 0;                                                                                          \
        for (; b + 8 <= HEAD_NB; b += 8) {                                                                  \
            __m256i s[8];                                                                                   \
            for (int j = 0; j < 8; j += 2) {                                                                \
                const uint8_t *p = row + (b + j) / 2 * pair;                                                \
                _mm_prefetch((const char *)(p + HEAD_PREFETCH), _MM_HINT_T0);                               \
                __m256i lo = _mm256_loadu_si256((const __m256i *)p);                                        \
                __m256i ua = _mm256_and_si256(lo, m4), ub = _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4); \
                if (BITS == 6) { /* high bits of A[k]: byte k % 16 >> (0 or 2), of B[k]: >> (4 or 6) */     \
                    __m256i hv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 32)));   \
                    ua = _mm256_or_si256(ua, _mm256_and_si256(_mm256_sllv_epi64(hv, sha), m30));            \
                    ub = _mm256_or_si256(ub, _mm256_and_si256(_mm256_srlv_epi64(hv, shb), m30));            \
                }                                                                                           \
                s[j] = DOT(ua, _mm256_loadu_si256((const __m256i *)(in->q + (b + j) * 32)));                \
                s[j + 1] = DOT(ub, _mm256_loadu_si256((const __m256i *)(in->q + (b + j + 1) * 32)));        \
            }                                                                                               \
            __m256i isum = _mm256_sub_epi32(sum8_epi32(s), _mm256_slli_epi32(                               \
                _mm256_loadu_si256((const __m256i *)(in->sum + b)), BITS == 6 ? 5 : 3));                    \
            __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dw + b))),       \
                                         _mm256_loadu_ps(in->d + b));                                       \
            ADD_TERMS(acc, scale, isum);                                                                    \
        }                                                                                                   \
        float lanes[8];                                                                                     \
        _mm256_storeu_ps(lanes, acc);                                                                       \
        for (; b < HEAD_NB; b++) lanes[b & 7] += BITS == 6 ? q6_term(row, dw, in, b) : q4_term(row, dw, in, b); \
        logits[v] = lanes_sum(lanes);                                                                       \
    }                                                                                                       \
}

Q8_ROWS(rows_q8_avx2, AVX2_FNS, DOT8_AVX2, 0)
Q8_ROWS(rows_q8_vnni, VNNI_FNS, DOT8_VNNI, 7)
Q8_ROWS(rows_q8_evex, EVEX_FNS, DOT8_EVEX, 7)
QK_ROWS(rows_q6_avx2, AVX2_FNS, DOT_AVX2, 6)
QK_ROWS(rows_q6_vnni, VNNI_FNS, DOT_VNNI, 6)
QK_ROWS(rows_q6_evex, EVEX_FNS, DOT_EVEX, 6)
QK_ROWS(rows_q4_avx2, AVX2_FNS, DOT_AVX2, 4)
QK_ROWS(rows_q4_vnni, VNNI_FNS, DOT_VNNI, 4)
QK_ROWS(rows_q4_evex, EVEX_FNS, DOT_EVEX, 4)

/* [0]: AVX2, [1]: AVX-VNNI, [2]: AVX512-VNNI (256-bit EVEX; CPUs with it but not AVX-VNNI) */
typedef void (*q8_rows_fn)(const int8_t *, const float *, const head_input *, float *, int, int);
typedef void (*qk_rows_fn)(const uint8_t *, const uint16_t *, const head_input *, float *, int, int);
static const q8_rows_fn rows_q8_x86[3] = {rows_q8_avx2, rows_q8_vnni, rows_q8_evex};
static const qk_rows_fn rows_q6_x86[3] = {rows_q6_avx2, rows_q6_vnni, rows_q6_evex};
static const qk_rows_fn rows_q4_x86[3] = {rows_q4_avx2, rows_q4_vnni, rows_q4_evex};
#endif

/* logits[v] for v in [v0, v1): m is a [V, E] matrix stored as `type` (BN_MAT_*). */
void head_rows(const bn_matrix_ref *m, int type, const head_input *in, float *logits, int v0, int v1) {
    const uint8_t *data = bn_blob() + m->data;
    const void *scales = bn_blob() + m->scales;
#if defined(__x86_64__)
    const unsigned cpu = kernel_cpu_features();
    if (cpu & KCPU_AVX2) {
        const int isa = (cpu & KCPU_AVXVNNI) ? 1 : (cpu & KCPU_AVX512VNNI) ? 2 : 0;
        switch (type) {
        case BN_MAT_F16:
            if (cpu & KCPU_AVX512VNNI) rows_f16_avx512((const uint16_t *)data, in->x, logits, v0, v1);
            else rows_f16_avx2((const uint16_t *)data, in->x, logits, v0, v1);
            return;
        case BN_MAT_Q8: rows_q8_x86[isa]((const int8_t *)data, scales, in, logits, v0, v1); return;
        case BN_MAT_Q6: rows_q6_x86[isa](data, scales, in, logits, v0, v1); return;
        case BN_MAT_Q4: rows_q4_x86[isa](data, scales, in, logits, v0, v1); return;
        default: rows_f32_avx2((const float *)data, in->x, logits, v0, v1); return;
        }
    }
#endif
    switch (type) {
    case BN_MAT_F16: rows_f16_portable((const uint16_t *)data, in->x, logits, v0, v1); return;
    case BN_MAT_Q8: rows_q8_portable((const int8_t *)data, scales, in, logits, v0, v1); return;
    case BN_MAT_Q6: rows_q6_portable(data, scales, in, logits, v0, v1); return;
    case BN_MAT_Q4: rows_q4_portable(data, scales, in, logits, v0, v1); return;
    default: rows_f32_portable((const float *)data, in->x, logits, v0, v1); return;
    }
}

/* One row of a [V, E] matrix as f32: the embedding lookup. */
void matrix_row(float *out, const bn_matrix_ref *m, int type, int row) {
    const uint8_t *data = bn_blob() + m->data;
    switch (type) {
    case BN_MAT_F16: {
        const uint16_t *p = (const uint16_t *)data + (size_t)row * BN_N_EMBD;
        for (int i = 0; i < BN_N_EMBD; i++) out[i] = f16_table[p[i]];
        return;
    }
    case BN_MAT_Q8: {
        const int8_t *p = (const int8_t *)data + (size_t)row * Q8_ROW;
        const float d = ((const float *)(bn_blob() + m->scales))[row];
        for (int i = 0; i < BN_N_EMBD; i++) out[i] = (float)p[i] * d;
        return;
    }
    case BN_MAT_Q6:
    case BN_MAT_Q4: {
        const int six = type == BN_MAT_Q6, off = six ? 32 : 8;
        const uint8_t *p = data + (size_t)row * (six ? Q6_ROW : Q4_ROW);
        const uint16_t *dw = (const uint16_t *)(bn_blob() + m->scales) + (size_t)row * HEAD_NB;
        for (int i = 0; i < BN_N_EMBD; i++) {
            const int b = i / 32, k = i % 32, sh = 4 * (b & 1);
            const uint8_t *pair = p + (b >> 1) * (six ? 48 : 32);
            int c = (pair[k] >> sh) & 15;
            if (six) c |= ((pair[32 + (k & 15)] >> (sh + 2 * (k >> 4))) & 3) << 4;
            out[i] = (float)(c - off) * f16_table[dw[b]];
        }
        return;
    }
    default:
        memcpy(out, (const float *)data + (size_t)row * BN_N_EMBD, BN_N_EMBD * sizeof(float));
        return;
    }
}
