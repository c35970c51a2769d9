/* i2sg.h: block-scaled ternary weights ("i2sg"), shared by its scalar and SIMD kernels.
 *
 * Some files store a scale per group of weights instead of one per tensor: llama.cpp's Q2_0
 * (64 weights per fp16 scale, four levels -1, 0, +1, +2), PrismML's Q2_0 (128 per scale),
 * Q1_0 (128, two levels) and TQ1_0/TQ2_0 files whose 256-weight blocks carry different
 * scales. bitnet-aot runs them exactly as stored, with no re-quantization:
 *
 *   codes: the i2s layout of kernels.h, code c = t + 1, and c = 3 holds Q2_0's +2;
 *   scales: f16 [ceil(M / 4)][NG][4], NG = ceil(KP / G): the scale of row r, group g (weights
 *           [gG, gG + G)) is at ((r / 4) * NG + g) * 4 + r % 4, so the four rows a SIMD
 *           kernel computes together find theirs in one 8-byte load; groups past K and rows
 *           past M are zero-filled;
 *   G: a multiple of 64 (one half of a 128-weight block is 64 weights: planes 0-1 are its
 *      first half, planes 2-3 its second).
 *
 *   y[r] = (float) sum over g = 0, 1, ... in order of (double) d[r][g] * (double) s_g,
 *          s_g = the exact integer sum of t * q over group g.
 *
 * Why double: d has 11 significant bits and |s_g| <= 2 * 128 * G <= 2^18 (G <= 1024), so every
 * product is exact in double (29 of 53 bits), and each addition rounds once. With exact
 * products, a fused multiply-add gives the same bits as a multiply and an add, so every ISA,
 * compiler and thread split gives the same float, and the numpy reference
 * (compiler/reference.py: grouped_sums) computes the identical value.
 */
#ifndef BITNET_I2SG_H
#define BITNET_I2SG_H

#include <stdint.h>

#include "attn.h"   /* attn_f16_to_f32: the exact half -> float conversion */

/* Exact integer sum of t * q over half h (0 or 1) of the 128-weight block at blk / xb. */
static inline int32_t i2sg_half_dot(const uint8_t *blk, const int8_t *xb, int h) {
    int32_t s = 0;
    const int hi = h ? 2 : 6, lo = h ? 0 : 4;
    for (int p = 0; p < 32; p++) {
        const uint8_t v = blk[p];
        s += ((int32_t)((v >> hi) & 3) - 1) * xb[p + 64 * h];
        s += ((int32_t)((v >> lo) & 3) - 1) * xb[p + 64 * h + 32];
    }
    return s;
}

/* Where row r's scales start (its group g is at [4 * g]). */
static inline const uint16_t *i2sg_row_scales(const uint16_t *d, int G, int KP, int r) {
    const long ng = (KP + G - 1) / G;
    return d + ((long)(r / 4) * ng) * 4 + r % 4;
}

/* One row, the reference order: halves in ascending order, summed into their group, each
 * finished group added to the double accumulator. d: i2sg_row_scales of the row. */
static inline float i2sg_row_scalar(const uint8_t *row, const uint16_t *d, int G, const int8_t *x, int KP) {
    double acc = 0.0;
    const int halves_per_group = G / 64;
    int32_t s = 0;
    int g = 0, in_group = 0;
    for (int hb = 0; hb < KP / 64; hb++) {
        s += i2sg_half_dot(row + (hb / 2) * 32, x + (hb / 2) * 128, hb & 1);
        if (++in_group == halves_per_group || hb == KP / 64 - 1) {
            acc += (double)attn_f16_to_f32(d[4 * g]) * (double)s;
            s = 0;
            in_group = 0;
            g++;
        }
    }
    return (float)acc;
}

/* ---- the row and token loops every SIMD variant shares ---------------------------------
 * A variant supplies rows4: rows r..r+3 (r a multiple of 4, all < M) of one token, for
 * G = 64 or a multiple of 128; xs holds the activation sum of each group when the
 * variant asked for it (need_xs), else NULL. Other shapes and the rows outside whole
 * 4-row tiles take i2sg_row_scalar (the same value). */
typedef void (*i2sg_rows4_fn)(const uint8_t *w, const uint16_t *d, int G, const int8_t *x,
                              const int32_t *xs, float *y, int KP, int r);

/* Exact integer activation sum of each group of one token (xs[0 .. ceil(KP / G))). */
static inline void i2sg_group_sums(const int8_t *x, int G, int KP, int32_t *xs) {
    const int ng = (KP + G - 1) / G;
    for (int g = 0; g < ng; g++) {
        int32_t s = 0;
        const int end = (g + 1) * G < KP ? (g + 1) * G : KP;
        for (int k = g * G; k < end; k++) s += x[k];
        xs[g] = s;
    }
}

#define I2SG_MAX_GROUPS 1024   /* activation sums on the stack (4 KiB: musl threads have 128 KiB);
                                  longer rows (K > 65536 at G = 64) take the scalar path */
#define I2SG_STRIP 32          /* GEMM rows per strip */

static inline __attribute__((always_inline))
void i2sg_gemv_rows(i2sg_rows4_fn rows4, int need_xs, const uint8_t *w, const uint16_t *d, int G,
                    const int8_t *x, float *y, int KP, int row_begin, int row_end) {
    const long row_bytes = KP / 4;
    const int ng = (KP + G - 1) / G;
    int r = row_begin;
    if ((G == 64 || G % 128 == 0) && ng <= I2SG_MAX_GROUPS) {
        int32_t xs[I2SG_MAX_GROUPS];
        if (need_xs) i2sg_group_sums(x, G, KP, xs);
        for (; r < row_end && r % 4; r++)   /* a range may start inside a 4-row scale tile */
            y[r] = i2sg_row_scalar(w + r * row_bytes, i2sg_row_scales(d, G, KP, r), G, x, KP);
        for (; r + 4 <= row_end; r += 4) rows4(w, d, G, x, need_xs ? xs : NULL, y, KP, r);
    }
    for (; r < row_end; r++) y[r] = i2sg_row_scalar(w + r * row_bytes, i2sg_row_scales(d, G, KP, r), G, x, KP);
}

/* GEMM: strips of I2SG_STRIP rows, tokens inner: the strip's weights (20 KiB for K = 2560)
 * stay in L1 for every token, and each token's group sums serve the whole strip. */
static inline void i2sg_gemm_strips(void (*gemv)(const uint8_t *, const uint16_t *, int, const int8_t *,
                                                 float *, int, int, int),
                                    const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                                    int N, int M, int KP, int row_begin, int row_end) {
    for (int r0 = row_begin; r0 < row_end; r0 += I2SG_STRIP) {
        const int r1 = r0 + I2SG_STRIP < row_end ? r0 + I2SG_STRIP : row_end;
        for (int n = 0; n < N; n++) gemv(w, d, G, x + (long)n * KP, y + (long)n * M, KP, r0, r1);
    }
}

#endif
