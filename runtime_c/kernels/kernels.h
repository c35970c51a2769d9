/* kernels.h: ternary matrix-vector and matrix-matrix kernels.
 *
 * Every kernel computes exact integers: y[r] = sum_k t[r][k] * q[k], with ternary weights
 * t in {-1,0,+1} and int8 activations q. All kernels, ISAs and thread splits must give the
 * same integers as the scalar reference in i2s_scalar.c.
 *
 * Packed layout "i2s" (produced by compiler/pack.py: pack_i2s):
 *   K is padded to KP, a multiple of 128 (padding weights are 0; padding activations are 0).
 *   Row r occupies KP/4 bytes at w + r*KP/4, as 128-weight blocks of 32 bytes. Byte p of
 *   block b holds weights 128b+p, 128b+p+32, 128b+p+64, 128b+p+96 at bits 7-6, 5-4, 3-2, 1-0,
 *   each stored as the code c = t+1 in {0,1,2}.
 *
 * Row ranges: a kernel computes rows [row_begin, row_end) and writes y[r] at the absolute
 * row index r, so threads can split rows without changing any result.
 */
#ifndef BITNET_KERNELS_H
#define BITNET_KERNELS_H

#include <stdint.h>

/* ---- i2s, scalar reference (any target) ---- */
void i2s_gemv_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int KP, int row_begin, int row_end);
/* x is [N][KP] (one activation row per token), y is [N][M]. */
void i2s_gemm_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int N, int M, int KP, int row_begin, int row_end);

#endif
