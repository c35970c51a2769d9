/* tl2_avx2.c: the tl2 lookup-table kernels for x86-64 with AVX2 (compile with -mavx2; called
 * only when dispatch.c found AVX2, else tl_scalar.c runs the same layout).
 *
 * ---- The tl2 layout (writer: compiler/pack_tl.py pack_tl2; sizes: tl_layout.h) ----------
 * K is padded to KP (multiple of 128, as for i2s; activations are zero past K). Weights are
 * grouped in triples g = 0 .. G-1, G = ceil(KP/3): triple g holds weights k = 3g, 3g+1, 3g+2
 * (a weight at k >= KP is 0: when 3 does not divide KP, the last triple carries the 1 or 2
 * leftover weights, i.e. it is the 2-weight remainder scheme expressed with the 3-weight
 * table whose missing activation is 0). A triple's value v = 9*t0 + 3*t1 + t2 in [-13, 13]
 * is stored as a 4-bit index |v| plus a sign bit (v < 0): 5 bits per 3 weights.
 * Triples come in octets of 8 (G padded with zero triples to 8*NO), rows in tiles of 32 (M
 * padded with zero rows). Tile t (rows 32t .. 32t+31) is TL2_TILE_BYTES(KP) bytes at
 * t*TL2_TILE_BYTES(KP):
 *   int32 neg[32]             little-endian: how many triples of row 32t+i are negative
 *   then per octet o (160 bytes):
 *     4 x 32 bytes index      vector p, byte i: |v| of row i, triple 8o+2p (bits 3-0) and
 *                             triple 8o+2p+1 (bits 7-4)
 *     32 bytes sign           byte i, bit j: sign of row i, triple 8o+j
 * Byte lane i of every 32-byte vector is row i of the tile, so one register of indices
 * feeds one pshufb for 32 rows.
 *
 * ---- Method ---------------------------------------------------------------------------
 * Per token and triple (a0, a1, a2) we build the 16-entry table L[u] = d0*a0 + d1*a1 + d2*a2
 * for u in 0..13 (u = 9*d0 + 3*d1 + d2, balanced-ternary digits; entries 14, 15 = 0). L fits
 * int16 (|L| <= 384), so it is kept as two pshufb tables: low bytes and high bytes (32 bytes
 * per triple in the scratch). For a tile: pshufb both tables with the 32 indices, XOR both
 * bytes with the sign mask (0xff where v < 0), interleave to int16: that gives L for v >= 0
 * and ~L = -L - 1 for v < 0; adding neg[i] at the end turns every ~L into -L exactly.
 *
 * Overflow: each int16 term lies in [-385, 384]; TL2_WIDEN = 64 triples are summed in int16
 * (|sum| <= 24640 < 32767) before widening to int32. Row totals: |y| <= 128*KP.
 *
 * GEMM: tokens are processed in slabs of TL_NSLAB whose tables sit in the scratch; each
 * tile's unpacked indices and sign masks are reused for 4 tokens at a time.
 * Scratch: tl2_scratch_bytes(KP, N) (tl_scalar.c) = min(N, 8) * 32 * 8*NO bytes + 64.
 */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "kernels.h"
#include "tl_driver.h"
#include "tl_layout.h"

#define TL2_WIDEN_OCTETS 8  /* 64 triples per int16 accumulation; see overflow note */

/* Tables for one token: lut[32*g .. 32*g+15] low bytes, [32*g+16 .. 32*g+31] high bytes. */
static inline void tl2_build_lut(const int8_t *x, int KP, uint8_t *lut) {
    const __m256i D0 = _mm256_setr_epi16(0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0);
    const __m256i D1 = _mm256_setr_epi16(0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0);
    const __m256i D2 = _mm256_setr_epi16(0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0);
    /* per 128-bit lane: int16 entries -> [low bytes x8, high bytes x8] */
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                           0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const int G = TL2_TRIPLES(KP), GP = 8 * TL2_OCTETS(KP);
    for (int g = 0; g < GP; g++) {
        int a[3];
        for (int e = 0; e < 3; e++) a[e] = 3 * g + e < KP ? x[3 * g + e] : 0;  /* zero past KP */
        if (g >= G) a[0] = a[1] = a[2] = 0;
        /* sign_epi16(a, D) = a*D for D in {-1, 0, 1} */
        __m256i L = _mm256_add_epi16(
            _mm256_add_epi16(_mm256_sign_epi16(_mm256_set1_epi16((short)a[0]), D0),
                             _mm256_sign_epi16(_mm256_set1_epi16((short)a[1]), D1)),
            _mm256_sign_epi16(_mm256_set1_epi16((short)a[2]), D2));
        L = _mm256_shuffle_epi8(L, split);              /* [lo0-7 hi0-7 | lo8-15 hi8-15] */
        L = _mm256_permute4x64_epi64(L, 0xd8);          /* [lo0-15 | hi0-15] */
        _mm256_store_si256((__m256i *)(lut + 32 * (size_t)g), L);
    }
}

/* One 32-row tile against T tokens (T <= 4), full K. out[t][i] = row i for token t
 * (including the neg[] correction). Inlined with constant T. */
static inline __attribute__((always_inline))
void tl2_tile(const uint8_t *tile, const uint8_t *const *luts, int NO, const int T, size_t pf,
              int32_t out[4][32]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    __m256i acc32[4][4];
    for (int t = 0; t < T; t++)
        for (int q = 0; q < 4; q++) acc32[t][q] = zero;

    for (int o0 = 0; o0 < NO; o0 += TL2_WIDEN_OCTETS) {
        const int o1 = o0 + TL2_WIDEN_OCTETS < NO ? o0 + TL2_WIDEN_OCTETS : NO;
        __m256i accA[4], accB[4];   /* int16: A = rows 0-7 | 16-23, B = rows 8-15 | 24-31 */
        for (int t = 0; t < T; t++) accA[t] = accB[t] = zero;
        for (int o = o0; o < o1; o++) {
            const uint8_t *oct = tile + TL2_TILE_HEADER + (size_t)o * TL2_OCTET_BYTES;
            const __m256i sb = _mm256_loadu_si256((const __m256i *)(oct + 128));
            if (pf) {   /* GEMV: fetch the next tile's octet (the matrix is read once) */
                BN_PREFETCH_STREAM((const char *)(oct + pf));
                BN_PREFETCH_STREAM((const char *)(oct + pf + 64));
                BN_PREFETCH_STREAM((const char *)(oct + pf + 128));
            }
            const size_t g8 = 8 * (size_t)o;
/* triple j of the octet: indices idx, sign bit j of sb */
#define TL2_TRIPLE(J, idx)                                                                   \
            {                                                                                \
                const __m256i s = _mm256_cmpgt_epi8(zero, _mm256_slli_epi16(sb, 7 - (J)));   \
                for (int t = 0; t < T; t++) {                                                \
                    const uint8_t *l = luts[t] + 32 * (g8 + (J));                            \
                    const __m256i tlo = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)l)); \
                    const __m256i thi = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(l + 16))); \
                    const __m256i lo = _mm256_xor_si256(_mm256_shuffle_epi8(tlo, idx), s);   \
                    const __m256i hi = _mm256_xor_si256(_mm256_shuffle_epi8(thi, idx), s);   \
                    accA[t] = _mm256_add_epi16(accA[t], _mm256_unpacklo_epi8(lo, hi));       \
                    accB[t] = _mm256_add_epi16(accB[t], _mm256_unpackhi_epi8(lo, hi));       \
                }                                                                            \
            }
#define TL2_PAIR(P)                                                                          \
            {                                                                                \
                const __m256i v = _mm256_loadu_si256((const __m256i *)(oct + 32 * (P)));     \
                const __m256i i0 = _mm256_and_si256(v, m4);                                  \
                const __m256i i1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);           \
                TL2_TRIPLE(2 * (P), i0)                                                      \
                TL2_TRIPLE(2 * (P) + 1, i1)                                                  \
            }
            TL2_PAIR(0)
            TL2_PAIR(1)
            TL2_PAIR(2)
            TL2_PAIR(3)
#undef TL2_PAIR
#undef TL2_TRIPLE
        }
        for (int t = 0; t < T; t++) {
            acc32[t][0] = _mm256_add_epi32(acc32[t][0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(accA[t])));
            acc32[t][1] = _mm256_add_epi32(acc32[t][1], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(accB[t])));
            acc32[t][2] = _mm256_add_epi32(acc32[t][2], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(accA[t], 1)));
            acc32[t][3] = _mm256_add_epi32(acc32[t][3], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(accB[t], 1)));
        }
    }
    /* acc32[t][q] holds rows 8q .. 8q+7 (A low = 0-7, B low = 8-15, A high = 16-23, B high = 24-31) */
    const __m256i *neg = (const __m256i *)tile;
    for (int t = 0; t < T; t++)
        for (int q = 0; q < 4; q++)
            _mm256_storeu_si256((__m256i *)&out[t][8 * q],
                                _mm256_add_epi32(acc32[t][q], _mm256_loadu_si256(neg + q)));
}

void tl2_gemv_avx2(const uint8_t *w, const int8_t *x, int32_t *y,
                   int KP, int row_begin, int row_end, void *scratch) {
    tl_gemm(tl2_build_lut, tl2_tile, TL2_TILE_BYTES(KP), TL2_LUT_BYTES(KP), TL2_OCTETS(KP), w, x, y, 1, 0, KP, row_begin, row_end, scratch);
}

void tl2_gemm_avx2(const uint8_t *w, const int8_t *x, int32_t *y,
                   int N, int M, int KP, int row_begin, int row_end, void *scratch) {
    tl_gemm(tl2_build_lut, tl2_tile, TL2_TILE_BYTES(KP), TL2_LUT_BYTES(KP), TL2_OCTETS(KP), w, x, y, N, M, KP, row_begin, row_end, scratch);
}
