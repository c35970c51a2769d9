/* i2s_avx2.c: the i2s kernels for x86-64 with AVX2, compiled three times (compiler/kernels.py):
 *   -mavx2                          -> i2s_{gemv,gemm}_avx2     (Haswell+, Zen 1+)
 *   -mavx2 -mavxvnni -DI2S_VNNI     -> i2s_{gemv,gemm}_avxvnni  (Alder Lake+, Zen 5+)
 *   -mavx2 -mavx512vl -mavx512vnni -DI2S_VNNI -DI2S_EVEX
 *                                   -> i2s_{gemv,gemm}_avx512vl (the same 256-bit vpdpbusd in
 *      its EVEX form, which every AVX-512 VNNI CPU has, AVX-VNNI or not: Zen 4, Ice Lake.
 *      i2s_avx512vnni uses its GEMV, which streams memory faster than a 512-bit one here.)
 * Only these objects may contain AVX instructions; dispatch.c calls them only after the
 * start-up CPU check found AVX2 (and AVX-VNNI) with OS support for YMM state.
 *
 * Layout: the i2s layout of kernels.h (128-weight blocks of 32 bytes; bits 7-6, 5-4, 3-2, 1-0
 * of byte p hold weights p, p+32, p+64, p+96 as codes c = t+1 in {0,1,2}).
 *
 * Method ("maddubs trick"): the codes are unsigned bytes and the activations signed bytes,
 * which is exactly what vpmaddubsw multiplies. So per row we compute
 *     sum_k c_k*q_k  =  sum_k (t_k+1)*q_k  =  y + sum_k q_k
 * and subtract sum_k q_k (computed once per token) at the end. One 32-byte load of weights
 * gives four 32-lane code vectors by shift+mask, each lined up with 32 consecutive
 * activations: no shuffles at all.
 *
 * Overflow: vpmaddubsw adds two products c*q with c in [0,2], q in [-128,127], so each int16
 * lane lies in [-512, 508] and never saturates. One 128-weight block adds 4 such lanes:
 * [-2048, 2032]. We add I2S_GROUP = 8 blocks in int16 (|sum| <= 16384 < 32767) and then widen
 * to int32 with vpmaddwd. With AVX-VNNI, vpdpbusd adds the four products of each int32 lane
 * straight into int32 accumulators (no int16 stage). Row totals are bounded by
 * 256*KP < 2^31 for KP < 2^23.
 *
 * Tiling: GEMV runs 4 rows at once (each activation load serves 4 rows) and prefetches ahead
 * (the VNNI GEMV runs 2 rows with 4 shift-free accumulators each: see i2s_gemv_tile_vnni). GEMM runs tiles of
 * 2 rows x 4 tokens: each unpacked code vector is used for 4 tokens straight from registers,
 * and the 2 rows' bytes (KP/2 bytes) stay in L1 while the token loop walks over the batch.
 */
#include <immintrin.h>
#include <stddef.h>

#include "i2s_x86.h"
#include "kernels.h"

/* GEMM tile: I2S_GEMM_R rows x I2S_GEMM_T tokens (accumulators must fit 16 YMM registers) */
#define I2S_MAXR 4
#define I2S_MAXT 8
#ifndef I2S_GEMM_R
#define I2S_GEMM_R 2
#endif
#ifndef I2S_GEMM_T
#define I2S_GEMM_T 4
#endif

#if defined(I2S_VNNI) && defined(I2S_EVEX)
#define I2S_FN(name) name##_avx512vl
#define I2S_DPBUSD _mm256_dpbusd_epi32         /* EVEX encoding (AVX512VL + AVX512_VNNI) */
#elif defined(I2S_VNNI)
#define I2S_FN(name) name##_avxvnni
#define I2S_DPBUSD _mm256_dpbusd_avx_epi32     /* VEX encoding (AVX-VNNI) */
#else
#define I2S_FN(name) name##_avx2
#define I2S_GROUP 8  /* blocks accumulated in int16 before widening; see overflow note */
#endif

/* The core: R rows (R <= 4) times T tokens (T <= 4), full K. Always inlined with constant
 * R and T so the compiler keeps the accumulators in registers and unrolls the i/t loops.
 * w: first row (rows are row_bytes apart); x: first token (tokens are x_stride apart).
 * out[i][t] = sum_k c[i][k] * q[t][k] (the uncorrected maddubs dot product). */
static inline __attribute__((always_inline))
void i2s_tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride,
              int KP, const int R, const int T, size_t pf, int32_t out[I2S_MAXR][I2S_MAXT]) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i ones16 = _mm256_set1_epi16(1);
    const int nb = KP / 128;
    __m256i acc32[I2S_MAXR][I2S_MAXT];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc32[i][t] = _mm256_setzero_si256();

#ifdef I2S_VNNI
    const int group = nb;
    (void)ones16;
#else
    const int group = I2S_GROUP;
#endif
    for (int b0 = 0; b0 < nb; b0 += group) {
        const int b1 = b0 + group < nb ? b0 + group : nb;
#ifndef I2S_VNNI
        __m256i acc16[I2S_MAXR][I2S_MAXT];
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) acc16[i][t] = _mm256_setzero_si256();
#endif
        for (int b = b0; b < b1; b++) {
            __m256i wv[I2S_MAXR];
            for (int i = 0; i < R; i++)
                wv[i] = _mm256_loadu_si256((const __m256i *)(w + i * row_bytes + 32 * (size_t)b));
            if (pf && !(b & 1))
                for (int i = 0; i < R; i++)
                    _mm_prefetch((const char *)(w + i * row_bytes + 32 * (size_t)b + pf), _MM_HINT_T0);
            const int8_t *xb = x + 128 * (size_t)b;
#ifdef I2S_VNNI
#define I2S_MAC(i, t, c, xv) acc32[i][t] = I2S_DPBUSD(acc32[i][t], c, xv)
#else
#define I2S_MAC(i, t, c, xv) acc16[i][t] = _mm256_add_epi16(acc16[i][t], _mm256_maddubs_epi16(c, xv))
#endif
/* chunk J: codes at bit offset SH pair with activations 128b + 32J .. 128b + 32J + 31 */
#define I2S_CHUNK(J, SH)                                                                    \
            {                                                                               \
                __m256i c[I2S_MAXR];                                                           \
                for (int i = 0; i < R; i++)                                                 \
                    c[i] = _mm256_and_si256(_mm256_srli_epi16(wv[i], SH), m3);              \
                for (int t = 0; t < T; t++) {                                               \
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + t * x_stride + 32 * J)); \
                    for (int i = 0; i < R; i++)                                             \
                        I2S_MAC(i, t, c[i], xv);                                    \
                }                                                                           \
            }
            I2S_CHUNK(0, 6)
            I2S_CHUNK(1, 4)
            I2S_CHUNK(2, 2)
            I2S_CHUNK(3, 0)
#undef I2S_CHUNK
#undef I2S_MAC
        }
#ifndef I2S_VNNI
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++)
                acc32[i][t] = _mm256_add_epi32(acc32[i][t], _mm256_madd_epi16(acc16[i][t], ones16));
#endif
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) out[i][t] = hsum_epi32(acc32[i][t]);
}

/* GEMV streams the matrix once: software prefetch the same block I2S_PF_ROWS rows ahead
 * (~12 KB, a multiple of the 4-row tile) so DRAM latency overlaps the arithmetic. Without it
 * one thread reached ~10 GB/s from DRAM here, with it ~20-28 GB/s (bench/kernels.py). */
static size_t i2s_prefetch_distance(size_t row_bytes) {
    size_t rows = (12288 / row_bytes + 3) / 4 * 4;
    rows = rows < 4 ? 4 : rows > 32 ? 32 : rows;
    return rows * row_bytes;
}

#ifdef I2S_VNNI
/* VNNI GEMV without shifts: code J sits at bits 6-2J of each byte, so w & (3 << (6-2J)) is
 * the code times 4^(3-J), still a valid unsigned byte (<= 128). vpdpbusd of it with the
 * activations accumulates 4^(3-J) times the dot product in a separate int32 accumulator per
 * J; every lane is a multiple of 4^(3-J), so an arithmetic shift divides it back exactly.
 * That is 4 AND + 4 VPDPBUSD per 32 bytes instead of 3 shifts + 4 AND + 4 VPDPBUSD.
 * Overflow: a lane gets KP/32 products of at most 64*2*128 = 2^14: exact for KP < 2^22. */
static inline __attribute__((always_inline))
void i2s_gemv_tile_vnni(const uint8_t *w, size_t row_bytes, const int8_t *x, int KP,
                        const int R, size_t pf, int32_t *out) {
    const __m256i m0 = _mm256_set1_epi8((char)0xc0), m1 = _mm256_set1_epi8(0x30);
    const __m256i m2 = _mm256_set1_epi8(0x0c), m3 = _mm256_set1_epi8(0x03);
    __m256i acc[2][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_si256();
    for (int b = 0; b < KP / 128; b++) {
        const int8_t *xb = x + 128 * (size_t)b;
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb);
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
        const __m256i x2 = _mm256_loadu_si256((const __m256i *)(xb + 64));
        const __m256i x3 = _mm256_loadu_si256((const __m256i *)(xb + 96));
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + i * row_bytes + 32 * (size_t)b;
            if (pf && !(b & 1)) _mm_prefetch((const char *)(wb + pf), _MM_HINT_T0);
            const __m256i v = _mm256_loadu_si256((const __m256i *)wb);
            acc[i][0] = I2S_DPBUSD(acc[i][0], _mm256_and_si256(v, m0), x0);
            acc[i][1] = I2S_DPBUSD(acc[i][1], _mm256_and_si256(v, m1), x1);
            acc[i][2] = I2S_DPBUSD(acc[i][2], _mm256_and_si256(v, m2), x2);
            acc[i][3] = I2S_DPBUSD(acc[i][3], _mm256_and_si256(v, m3), x3);
        }
    }
    for (int i = 0; i < R; i++) {
        __m256i s = _mm256_add_epi32(_mm256_srai_epi32(acc[i][0], 6), _mm256_srai_epi32(acc[i][1], 4));
        s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_srai_epi32(acc[i][2], 2), acc[i][3]));
        out[i] = hsum_epi32(s);
    }
}
#endif

void I2S_FN(i2s_gemv)(const uint8_t *w, const int8_t *x, int32_t *y,
                   int KP, int row_begin, int row_end) {
    const size_t row_bytes = (size_t)KP / 4;
    const int32_t sx = sum_q(x, KP);
    int32_t out[I2S_MAXR][I2S_MAXT];
    const size_t pfd = i2s_prefetch_distance(row_bytes);
    int r = row_begin;
#if defined(I2S_VNNI) && !defined(I2S_VNNI_GEMV_SHIFTS)
    int32_t o2[2];
    for (; r + 2 <= row_end; r += 2) {
        i2s_gemv_tile_vnni(w + r * row_bytes, row_bytes, x, KP, 2, pfd, o2);
        y[r] = o2[0] - sx;
        y[r + 1] = o2[1] - sx;
    }
#endif
    for (; r + 4 <= row_end; r += 4) {
        i2s_tile(w + r * row_bytes, row_bytes, x, 0, KP, 4, 1, pfd, out);
        for (int i = 0; i < 4; i++) y[r + i] = out[i][0] - sx;
    }
    for (; r < row_end; r++) {
        i2s_tile(w + r * row_bytes, row_bytes, x, 0, KP, 1, 1, 0, out);
        y[r] = out[0][0] - sx;
    }
}

/* Tokens are processed in slabs of I2S_NSLAB so the slab's activations (NSLAB*KP bytes,
 * 221 KB for K=6912) stay in L2 while every row pair of this thread streams past them. */
#define I2S_NSLAB 32

/* One row tile (R rows) against tokens [n0, n1): tiles of GT tokens, then tails of 4, 2, 1. */
static inline __attribute__((always_inline))
void i2s_rows_tokens(const uint8_t *wr, size_t row_bytes, const int8_t *x, int32_t *y,
                     const int32_t *sx /* [n - n0] */, int M, int KP, int r, int n0, int n1, const int R,
                     size_t pf /* prefetch distance for the first token tile: the next R rows */) {
    int32_t out[I2S_MAXR][I2S_MAXT];
    int n = n0;
#define I2S_TOKENS(TT)                                                                      \
    {                                                                                       \
        i2s_tile(wr, row_bytes, x + (size_t)n * KP, KP, KP, R, TT, n == n0 ? pf : 0, out);  \
        for (int i = 0; i < R; i++)                                                         \
            for (int t = 0; t < TT; t++) y[(size_t)(n + t) * M + r + i] = out[i][t] - sx[n + t - n0]; \
        n += TT;                                                                            \
    }
    while (n + I2S_GEMM_T <= n1) I2S_TOKENS(I2S_GEMM_T)
    if (I2S_GEMM_T > 4 && n + 4 <= n1) I2S_TOKENS(4)
    if (I2S_GEMM_T > 2 && n + 2 <= n1) I2S_TOKENS(2)
    if (n < n1) I2S_TOKENS(1)
#undef I2S_TOKENS
}

void I2S_FN(i2s_gemm)(const uint8_t *w, const int8_t *x, int32_t *y,
                   int N, int M, int KP, int row_begin, int row_end) {
    if (N == 1) {
        I2S_FN(i2s_gemv)(w, x, y, KP, row_begin, row_end);
        return;
    }
    const size_t row_bytes = (size_t)KP / 4;
    int32_t sx[I2S_NSLAB];
    for (int n0 = 0; n0 < N; n0 += I2S_NSLAB) {
        const int n1 = n0 + I2S_NSLAB < N ? n0 + I2S_NSLAB : N;
        for (int n = n0; n < n1; n++) sx[n - n0] = sum_q(x + (size_t)n * KP, KP);
        int r = row_begin;
        for (; r + I2S_GEMM_R <= row_end; r += I2S_GEMM_R)
            i2s_rows_tokens(w + r * row_bytes, row_bytes, x, y, sx, M, KP, r, n0, n1, I2S_GEMM_R,
                            r + 2 * I2S_GEMM_R <= row_end ? I2S_GEMM_R * row_bytes : 0);
        for (; r < row_end; r++)
            i2s_rows_tokens(w + r * row_bytes, row_bytes, x, y, sx, M, KP, r, n0, n1, 1, 0);
    }
}
