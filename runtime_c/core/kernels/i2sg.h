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
 * (compiler/reference.py: grouped_matmul) computes the identical value.
 */
#ifndef BITNET_I2SG_H
#define BITNET_I2SG_H

#include <stdint.h>
#include <string.h>

/* IEEE binary16 -> binary32, exact for every value (subnormals, infinities, NaN). */
static inline float i2sg_half(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {                         /* subnormal: normalise */
        exp = 113;
        while (!(man & 0x400u)) { man <<= 1; exp--; }
        bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

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
            acc += (double)i2sg_half(d[4 * g]) * (double)s;
            s = 0;
            in_group = 0;
            g++;
        }
    }
    return (float)acc;
}

#endif
