/* i2sg_neon.h: the block-scaled kernel (i2sg.h) for AArch64 NEON, shared by i2sg_neon.c
 * (plain NEON: every AArch64 core) and i2sg_neon_dotprod.c (SDOT), which differ only in
 * their 16-lane multiply-accumulate. Same value as i2sg_scalar.c, bit for bit.
 *
 * Method: four rows at a time share each activation load. A block's four 2-bit planes are
 * unpacked to signed weights t = c - 1 (shift, mask, subtract: no activation-sum
 * correction needed) and multiplied with the activations into int32x4 lanes per row and
 * group; at a group's end the four rows are reduced together (pairwise adds), converted to
 * double, multiplied by the rows' fp16 scales (one load from the 4-row tiled layout,
 * fcvtl: exact) and added in group order.
 *
 * Overflow: |t*q| <= 256; plain NEON adds two products in int16 (|.| <= 512) before widening.
 */
#ifndef BITNET_I2SG_NEON_H
#define BITNET_I2SG_NEON_H

#include <arm_neon.h>

#include "i2sg.h"
#include "kernels.h"

typedef int32x4_t (*i2sg_mac_fn)(int32x4_t acc, int8x16_t t, int8x16_t x);

/* t * x of one plane (32 weights: two vectors) of a row, added to acc. */
static inline __attribute__((always_inline))
int32x4_t i2sg_plane(i2sg_mac_fn mac, int32x4_t acc, uint8x16_t v0, uint8x16_t v1, int shift,
                     const int8x16_t *xq) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    const int8x16_t one = vdupq_n_s8(1);
    const int8x16_t t0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v0, vdupq_n_s8((int8_t)-shift)), m3)), one);
    const int8x16_t t1 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v1, vdupq_n_s8((int8_t)-shift)), m3)), one);
    return mac(mac(acc, t0, xq[0]), t1, xq[1]);
}

/* four int32x4 row accumulators -> [row0, row1, row2, row3] totals */
static inline int32x4_t i2sg_reduce4(const int32x4_t a[4]) {
    return vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]));
}

/* acc01/acc23 += d * s for rows 0-1 and 2-3, in double */
static inline void i2sg_add_group(float64x2_t *acc01, float64x2_t *acc23, float32x4_t d, int32x4_t s) {
    *acc01 = vaddq_f64(*acc01, vmulq_f64(vcvt_f64_f32(vget_low_f32(d)), vcvtq_f64_s64(vmovl_s32(vget_low_s32(s)))));
    *acc23 = vaddq_f64(*acc23, vmulq_f64(vcvt_high_f64_f32(d), vcvtq_f64_s64(vmovl_high_s32(s))));
}

static inline __attribute__((always_inline))
void i2sg_neon_rows4(i2sg_mac_fn mac, const uint8_t *w, const uint16_t *d, int G, const int8_t *x,
                     float *y, int KP, int r) {
    const long row_bytes = KP / 4, ng = (KP + G - 1) / G;
    const int blocks = KP / 128, bpg = G / 128;
    const uint8_t *rw[4];
    for (int i = 0; i < 4; i++) rw[i] = w + (r + i) * row_bytes;
    const uint16_t *dt = d + (long)(r / 4) * ng * 4;
    float64x2_t acc01 = vdupq_n_f64(0.0), acc23 = vdupq_n_f64(0.0);
    const int32x4_t z = vdupq_n_s32(0);
    int32x4_t a[4] = {z, z, z, z}, b2[4] = {z, z, z, z};
    for (int b = 0; b < blocks; b++) {
        int8x16_t xq[8];
        for (int j = 0; j < 8; j++) xq[j] = vld1q_s8(x + 128 * b + 16 * j);
        for (int i = 0; i < 4; i++) {
            const uint8_t *p = rw[i] + 32 * b;
            const uint8x16_t v0 = vld1q_u8(p), v1 = vld1q_u8(p + 16);
            int32x4_t lo = i2sg_plane(mac, G == 64 ? z : a[i], v0, v1, 6, xq);
            lo = i2sg_plane(mac, lo, v0, v1, 4, xq + 2);
            int32x4_t hi = i2sg_plane(mac, G == 64 ? z : lo, v0, v1, 2, xq + 4);
            hi = i2sg_plane(mac, hi, v0, v1, 0, xq + 6);
            if (G == 64) { a[i] = lo; b2[i] = hi; }
            else a[i] = hi;
        }
        if (G == 64) {                   /* groups 2b and 2b+1 */
            const uint16x8_t dh = vld1q_u16(dt + 8 * b);
            const float16x8_t df = vreinterpretq_f16_u16(dh);
            i2sg_add_group(&acc01, &acc23, vcvt_f32_f16(vget_low_f16(df)), i2sg_reduce4(a));
            i2sg_add_group(&acc01, &acc23, vcvt_high_f32_f16(df), i2sg_reduce4(b2));
        } else if ((b + 1) % bpg == 0 || b == blocks - 1) {
            const long g = b / bpg;
            const float16x4_t df = vreinterpret_f16_u16(vld1_u16(dt + 4 * g));
            i2sg_add_group(&acc01, &acc23, vcvt_f32_f16(df), i2sg_reduce4(a));
            for (int i = 0; i < 4; i++) a[i] = z;
        }
    }
    vst1q_f32(y + r, vcombine_f32(vcvt_f32_f64(acc01), vcvt_f32_f64(acc23)));
}

/* The entry points of a variant with multiply-accumulate MAC: i2sg_gemv_<SUFFIX>, i2sg_gemm_<SUFFIX>. */
#define I2SG_NEON_VARIANT(SUFFIX, MAC)                                                             \
    static void rows4_##SUFFIX(const uint8_t *w, const uint16_t *d, int G, const int8_t *x,        \
                               const int32_t *xs, float *y, int KP, int r) {                        \
        (void)xs;                                                                                  \
        i2sg_neon_rows4(MAC, w, d, G, x, y, KP, r);                                                \
    }                                                                                              \
    void i2sg_gemv_##SUFFIX(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y, \
                            int KP, int row_begin, int row_end) {                                  \
        i2sg_gemv_rows(rows4_##SUFFIX, 0, w, d, G, x, y, KP, row_begin, row_end);                  \
    }                                                                                              \
    void i2sg_gemm_##SUFFIX(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y, \
                            int N, int M, int KP, int row_begin, int row_end) {                    \
        i2sg_gemm_strips(i2sg_gemv_##SUFFIX, w, d, G, x, y, N, M, KP, row_begin, row_end);         \
    }

#endif
