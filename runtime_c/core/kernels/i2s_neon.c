/* i2s_neon.c: the i2s kernels for AArch64 NEON, compiled twice (compiler/kernels.py):
 *   plain (baseline ARMv8-A: Cortex-A53/A72, Raspberry Pi 3/4)  -> i2s_{gemv,gemm}_neon
 *   -mcpu=generic+dotprod -DI2S_DOTPROD (zig cc spelling of armv8.2-a+dotprod; Cortex-A55/A76+, Pi 5, Apple M)
 *                                                              -> i2s_{gemv,gemm}_neon_dotprod
 * dispatch.c calls the dotprod pair only when the CPU reports SDOT (HWCAP_ASIMDDP).
 *
 * Layout: the i2s layout of kernels.h (128-weight blocks of 32 bytes; bits 7-6, 5-4, 3-2,
 * 1-0 of byte p hold weights p, p+32, p+64, p+96 as codes c = t+1 in {0,1,2}).
 *
 * Method: as in i2s_avx2.c, multiply the codes c (0..2, fine as signed bytes) by the
 * activations and subtract sum(q) once per token: sum c*q - sum q = sum t*q. One block's
 * 32 bytes give, by shift+mask, four 32-lane code vectors aligned with 32 consecutive
 * activations, so no shuffles are needed.
 *
 * Overflow: with SDOT every product goes straight into int32 lanes (|row| <= 256*KP < 2^31
 * for KP < 2^23). Without it, products c*q in [-256, 254] accumulate in int16 lanes with
 * SMLAL: one block adds 16 products per lane ([-4096, 4064]); I2S_GROUP = 4 blocks stay
 * within [-16384, 16256] before SADALP widens them into int32.
 *
 * Tiling: GEMV runs 4 rows at once; GEMM 4 rows x 4 tokens, so every code vector unpacked
 * from the weights serves 4 tokens from registers (NEON has 32 vector registers).
 */
#include <arm_neon.h>
#include <stddef.h>

#include "kernels.h"

#ifdef I2S_DOTPROD
#define I2S_FN(name) name##_neon_dotprod
#else
#define I2S_FN(name) name##_neon
#define I2S_GROUP 4  /* blocks accumulated in int16 before widening; see overflow note */
#endif

static inline int32_t sum_q(const int8_t *x, int KP) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int k = 0; k < KP; k += 16) acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(x + k)));
    return vaddvq_s32(acc);
}

/* Code vector J (weights 32J..32J+31 of the block) of one 16-byte half w. */
#define CODES_0(w) vreinterpretq_s8_u8(vshrq_n_u8(w, 6))
#define CODES_1(w) vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(w, 4), m3))
#define CODES_2(w) vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(w, 2), m3))
#define CODES_3(w) vreinterpretq_s8_u8(vandq_u8(w, m3))

/* R rows (<= 4) x T tokens (<= 4) over the full K; inlined with constant R, T.
 * out[i][t] = sum_k c[i][k] * q[t][k] (before the sum(q) correction). */
static inline __attribute__((always_inline))
void i2s_tile(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride,
              int KP, const int R, const int T, size_t pf, int32_t out[4][4]) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    const int nb = KP / 128;
    int32x4_t acc32[4][4];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc32[i][t] = vdupq_n_s32(0);
#ifdef I2S_DOTPROD
    const int group = nb;
#else
    const int group = I2S_GROUP;
#endif
    for (int b0 = 0; b0 < nb; b0 += group) {
        const int b1 = b0 + group < nb ? b0 + group : nb;
#ifndef I2S_DOTPROD
        int16x8_t acc16[4][4];
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) acc16[i][t] = vdupq_n_s16(0);
#endif
        for (int b = b0; b < b1; b++) {
            uint8x16_t wl[4], wh[4];
            for (int i = 0; i < R; i++) {
                wl[i] = vld1q_u8(w + i * row_bytes + 32 * (size_t)b);
                wh[i] = vld1q_u8(w + i * row_bytes + 32 * (size_t)b + 16);
            }
            if (pf && !(b & 1))
                for (int i = 0; i < R; i++) __builtin_prefetch(w + i * row_bytes + 32 * (size_t)b + pf);
            const int8_t *xb = x + 128 * (size_t)b;
#ifdef I2S_DOTPROD
#define I2S_MAC(i, t, c, xv) acc32[i][t] = vdotq_s32(acc32[i][t], c, xv)
#else
#define I2S_MAC(i, t, c, xv)                                                     \
    acc16[i][t] = vmlal_s8(acc16[i][t], vget_low_s8(c), vget_low_s8(xv));        \
    acc16[i][t] = vmlal_high_s8(acc16[i][t], c, xv)
#endif
#define I2S_CHUNK(J)                                                             \
            {                                                                    \
                int8x16_t cl[4], ch[4];                                          \
                for (int i = 0; i < R; i++) {                                    \
                    cl[i] = CODES_##J(wl[i]);                                    \
                    ch[i] = CODES_##J(wh[i]);                                    \
                }                                                                \
                for (int t = 0; t < T; t++) {                                    \
                    const int8x16_t xl = vld1q_s8(xb + t * x_stride + 32 * J);   \
                    const int8x16_t xh = vld1q_s8(xb + t * x_stride + 32 * J + 16); \
                    for (int i = 0; i < R; i++) {                                \
                        I2S_MAC(i, t, cl[i], xl);                                \
                        I2S_MAC(i, t, ch[i], xh);                                \
                    }                                                            \
                }                                                                \
            }
            I2S_CHUNK(0)
            I2S_CHUNK(1)
            I2S_CHUNK(2)
            I2S_CHUNK(3)
#undef I2S_CHUNK
#undef I2S_MAC
        }
#ifndef I2S_DOTPROD
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) acc32[i][t] = vpadalq_s16(acc32[i][t], acc16[i][t]);
#endif
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) out[i][t] = vaddvq_s32(acc32[i][t]);
}

/* GEMV streams the matrix once: prefetch the same block ~12 KB (whole 4-row tiles) ahead,
 * as in i2s_avx2.c where it doubled the DRAM throughput of one thread. */
static size_t i2s_prefetch_distance(size_t row_bytes) {
    size_t rows = (12288 / row_bytes + 3) / 4 * 4;
    rows = rows < 4 ? 4 : rows > 32 ? 32 : rows;
    return rows * row_bytes;
}

#ifdef I2S_DOTPROD
/* Dot-product GEMV with fewer unpack ops: code 0 is w >> 6 (no mask), codes 1-3 are kept
 * in place, w & 0x30 = 16*c, w & 0x0c = 4*c, w & 0x03 = c (all fit a signed byte), and go
 * to accumulators per scale (codes 0 and 3 share the x1 one); each lane of the x16 / x4
 * accumulators is a multiple of 16 / 4, so an arithmetic shift divides it back exactly.
 * 1 shift + 3 AND per 16 bytes instead of 3 shifts + 3 AND. Overflow: a lane gets KP/16
 * products of at most 16*2*128 = 2^12: exact for KP < 2^23. */
static inline __attribute__((always_inline))
void i2s_gemv_tile_dot(const uint8_t *w, size_t row_bytes, const int8_t *x, int KP,
                       const int R, size_t pf, int32_t *out) {
    const uint8x16_t m1 = vdupq_n_u8(0x30), m2 = vdupq_n_u8(0x0c), m3 = vdupq_n_u8(0x03);
    int32x4_t a1[4], a16[4], a4[4];
    for (int i = 0; i < R; i++) a1[i] = a16[i] = a4[i] = vdupq_n_s32(0);
    for (int b = 0; b < KP / 128; b++) {
        const int8_t *xb = x + 128 * (size_t)b;
        int8x16_t xv[8];
        for (int q = 0; q < 8; q++) xv[q] = vld1q_s8(xb + 16 * q);
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + i * row_bytes + 32 * (size_t)b;
            if (pf && !(b & 1)) __builtin_prefetch(wb + pf);
            for (int h = 0; h < 2; h++) {   /* bytes 16h .. 16h+15 of the block */
                const uint8x16_t v = vld1q_u8(wb + 16 * h);
                a1[i] = vdotq_s32(a1[i], vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), xv[h]);
                a16[i] = vdotq_s32(a16[i], vreinterpretq_s8_u8(vandq_u8(v, m1)), xv[2 + h]);
                a4[i] = vdotq_s32(a4[i], vreinterpretq_s8_u8(vandq_u8(v, m2)), xv[4 + h]);
                a1[i] = vdotq_s32(a1[i], vreinterpretq_s8_u8(vandq_u8(v, m3)), xv[6 + h]);
            }
        }
    }
    for (int i = 0; i < R; i++)
        out[i] = vaddvq_s32(vaddq_s32(a1[i], vaddq_s32(vshrq_n_s32(a16[i], 4), vshrq_n_s32(a4[i], 2))));
}
#endif

void I2S_FN(i2s_gemv)(const uint8_t *w, const int8_t *x, int32_t *y,
                      int KP, int row_begin, int row_end) {
    const size_t row_bytes = (size_t)KP / 4;
    const int32_t sx = sum_q(x, KP);
    const size_t pfd = i2s_prefetch_distance(row_bytes);
    int32_t out[4][4];
    int r = row_begin;
#ifdef I2S_DOTPROD
    int32_t o4[4];
    for (; r + 4 <= row_end; r += 4) {
        i2s_gemv_tile_dot(w + r * row_bytes, row_bytes, x, KP, 4, pfd, o4);
        for (int i = 0; i < 4; i++) y[r + i] = o4[i] - sx;
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

#define I2S_NSLAB 32  /* tokens per slab: their activations stay in L2 across the rows */

static inline __attribute__((always_inline))
void i2s_rows_tokens(const uint8_t *wr, size_t row_bytes, const int8_t *x, int32_t *y,
                     const int32_t *sx /* [n - n0] */, int M, int KP, int r, int n0, int n1,
                     const int R) {
    int32_t out[4][4];
    int n = n0;
#define I2S_TOKENS(TT)                                                                      \
    {                                                                                       \
        i2s_tile(wr, row_bytes, x + (size_t)n * KP, KP, KP, R, TT, 0, out);                    \
        for (int i = 0; i < R; i++)                                                         \
            for (int t = 0; t < TT; t++) y[(size_t)(n + t) * M + r + i] = out[i][t] - sx[n + t - n0]; \
    }
    for (; n + 4 <= n1; n += 4) I2S_TOKENS(4)
    const int left = n1 - n;
    if (left == 3) I2S_TOKENS(3)
    else if (left == 2) I2S_TOKENS(2)
    else if (left == 1) I2S_TOKENS(1)
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
        for (; r + 4 <= row_end; r += 4)
            i2s_rows_tokens(w + r * row_bytes, row_bytes, x, y, sx, M, KP, r, n0, n1, 4);
        for (; r < row_end; r++)
            i2s_rows_tokens(w + r * row_bytes, row_bytes, x, y, sx, M, KP, r, n0, n1, 1);
    }
}
