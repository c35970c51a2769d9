/* head_x86.h: the integer head rows the x86 head files share (head_avx2.c, head_avxvnni.c,
 * head_avx512.c), written once with the ISA's integer dot product as an explicit parameter
 * and always inlined, so each file compiles them with its own instructions. Included only
 * by files compiled with -mavx2 -mf16c -mfma or more. Numerics and layouts: head.h.
 *
 * q4/q6: one 256-bit load and a mask or shift give the 32 low parts of block A or B in
 * element order, and the 16 high-bit bytes broadcast to both halves of a register give the
 * high parts with one 64-bit variable shift per block. Unsigned codes times signed xq is
 * what vpmaddubsw and vpdpbusd multiply. q8 codes are signed: AVX2 multiplies |w| by
 * sign(w) * xq; with VNNI the codes get +128 and 128 * sum(xq) comes off.
 */
#ifndef BITNET_HEAD_X86_H
#define BITNET_HEAD_X86_H

#include <immintrin.h>

#include "head.h"
#include "kernels.h"   /* BN_PREFETCH_STREAM */

/* Rows are streamed once per token: prefetch 4 KiB ahead (the hardware prefetcher alone
 * left the q6 head about 5% short of memory speed at one thread). */
#define HEAD_PREFETCH 4096

static inline float head_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lane j of the result: the sum of the eight int32 lanes of s[j]. */
static inline __m256i head_sum8_epi32(const __m256i s[8]) {
    __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
    /* t0 = (s0..s3 over lanes 0-3 | s0..s3 over lanes 4-7), t1 the same for s4..s7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
}

/* The products of 32 code bytes with 32 signed xq, summed into eight int32 lanes. For q8
 * the codes are signed; for q6/q4 unsigned. */
typedef __m256i head_dot_fn(__m256i codes, __m256i xq);

/* The eight block terms of blocks b..b+7 added to the float lanes acc, as the portable rows
 * add them one by one (isum: their integer dots, scale: their float scales). */
static inline __m256 head_add_terms(__m256 acc, __m256 scale, __m256i isum) {
    return _mm256_add_ps(acc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)));
}

/* q8 rows. off_shift: log2 of the code offset dot adds (0: none, 7: +128). */
static inline __attribute__((always_inline))
void head_q8_rows(head_dot_fn *dot, const int off_shift, const int8_t *q, const float *d,
                  const head_xq *in, float *logits, int E, int v0, int v1) {
    const int row_bytes = head_q8_row(E), nb = row_bytes / 32;
    for (int v = v0; v < v1; v++) {
        const int8_t *row = q + (size_t)v * row_bytes;
        __m256 acc = _mm256_setzero_ps();
        int b = 0;
        for (; b + 8 <= nb; b += 8) {
            __m256i s[8];
            for (int l = 0; l < 256; l += 64) BN_PREFETCH_STREAM((const char *)(row + b * 32 + HEAD_PREFETCH + l));
            for (int j = 0; j < 8; j++)
                s[j] = dot(_mm256_loadu_si256((const __m256i *)(row + (b + j) * 32)),
                           _mm256_loadu_si256((const __m256i *)(in->q + (b + j) * 32)));
            __m256i isum = head_sum8_epi32(s);
            if (off_shift)
                isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(in->sum + b)), off_shift));
            acc = head_add_terms(acc, _mm256_loadu_ps(in->d + b), isum);
        }
        float lanes[8];
        _mm256_storeu_ps(lanes, acc);
        for (; b < nb; b++) lanes[b & 7] += head_q8_term(row, in, b);
        logits[v] = head_lanes_sum(lanes) * d[v];
    }
}

/* q6 (bits 6) or q4 (bits 4) rows: a pair of blocks is 48 or 32 bytes; codes are offset by
 * 32 or 8. */
static inline __attribute__((always_inline))
void head_qk_rows(head_dot_fn *dot, const int bits, const uint8_t *q, const uint16_t *d,
                  const head_xq *in, float *logits, int E, int v0, int v1) {
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    const __m256i sha = _mm256_setr_epi64x(4, 4, 2, 2), shb = _mm256_setr_epi64x(0, 0, 2, 2);
    const int pair = bits == 6 ? 48 : 32, nb = head_nb(E);
    for (int v = v0; v < v1; v++) {
        const uint8_t *row = q + (size_t)v * (head_xp(E) / 64 * pair);
        const uint16_t *dw = d + (size_t)v * nb;
        __m256 acc = _mm256_setzero_ps();
        int b = 0;
        for (; b + 8 <= nb; b += 8) {
            __m256i s[8];
            for (int j = 0; j < 8; j += 2) {
                const uint8_t *p = row + (b + j) / 2 * pair;
                BN_PREFETCH_STREAM((const char *)(p + HEAD_PREFETCH));
                const __m256i lo = _mm256_loadu_si256((const __m256i *)p);
                __m256i ua = _mm256_and_si256(lo, m4), ub = _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4);
                if (bits == 6) {   /* high bits of A[k]: byte k % 16 >> (0 or 2), of B[k]: >> (4 or 6) */
                    const __m256i hv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 32)));
                    ua = _mm256_or_si256(ua, _mm256_and_si256(_mm256_sllv_epi64(hv, sha), m30));
                    ub = _mm256_or_si256(ub, _mm256_and_si256(_mm256_srlv_epi64(hv, shb), m30));
                }
                s[j] = dot(ua, _mm256_loadu_si256((const __m256i *)(in->q + (b + j) * 32)));
                s[j + 1] = dot(ub, _mm256_loadu_si256((const __m256i *)(in->q + (b + j + 1) * 32)));
            }
            const __m256i isum = _mm256_sub_epi32(head_sum8_epi32(s), _mm256_slli_epi32(
                _mm256_loadu_si256((const __m256i *)(in->sum + b)), bits == 6 ? 5 : 3));
            const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dw + b))),
                                               _mm256_loadu_ps(in->d + b));
            acc = head_add_terms(acc, scale, isum);
        }
        float lanes[8];
        _mm256_storeu_ps(lanes, acc);
        for (; b < nb; b++) lanes[b & 7] += bits == 6 ? head_q6_term(row, dw, in, b) : head_q4_term(row, dw, in, b);
        logits[v] = head_lanes_sum(lanes);
    }
}

#endif
