/* i2s_driver.h: the loops every SIMD i2s kernel shares, ISA-neutral. A kernel file supplies
 * a tile function (R rows x T tokens over the full K, in registers) and its activation sum;
 * these drivers walk the rows and tokens around it. They are always inlined with the tile
 * function and R, T as constants, so each kernel file gets its own specialised loop.
 *
 * GEMV (one token: decode): tiles of R rows, then a 2-row and 1-row tail, prefetching
 * i2s_prefetch_distance bytes ahead so DRAM latency overlaps the arithmetic.
 * GEMM (N tokens: prompt): tokens in slabs of I2S_NSLAB, whose activations (NSLAB*KP bytes,
 * 221 KB for K=6912) stay in L2 while every row tile of this thread streams past them; per
 * row tile, token tiles of T, then tails of 4, 2 and 1 tokens. The R rows' bytes (R*KP/4)
 * stay in L1 while the token loop walks the slab.
 *
 * Every kernel returns the uncorrected dot product sum_k c_k * q_k of the unsigned codes
 * c = t+1 (kernels.h); the drivers subtract sum_k q_k once per token.
 */
#ifndef BITNET_I2S_DRIVER_H
#define BITNET_I2S_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#define I2S_TILE_R 4    /* most rows a tile function is asked for */
#define I2S_TILE_T 8    /* most tokens */
#define I2S_NSLAB 32    /* tokens per GEMM slab */

/* out[i][t] = sum_k c[row i][k] * q[token t][k] for i < R, t < T. Row i starts at
 * w + i*row_bytes, token t at x + t*x_stride. pf != 0: also prefetch the bytes pf ahead. */
typedef void i2s_tile_fn(const uint8_t *w, size_t row_bytes, const int8_t *x, size_t x_stride,
                         int KP, int R, int T, size_t pf, int32_t out[I2S_TILE_R][I2S_TILE_T]);
/* The same for one token, where a kernel may use a layout of accumulators of its own. */
typedef void i2s_row_fn(const uint8_t *w, size_t row_bytes, const int8_t *x, int KP, int R,
                        size_t pf, int32_t out[I2S_TILE_R]);
typedef int32_t i2s_sum_fn(const int8_t *x, int KP);   /* sum of KP activations */

/* About 12 KB ahead, in whole 4-row tiles: without it one AVX2 thread read ~10 GB/s from DRAM
 * on a Zen 3, with it ~20-28 GB/s (bench/kernels.py). */
static inline size_t i2s_prefetch_distance(size_t row_bytes) {
    size_t rows = (12288 / row_bytes + 3) / 4 * 4;
    rows = rows < 4 ? 4 : rows > 32 ? 32 : rows;
    return rows * row_bytes;
}

/* R rows for one token: the kernel's own row function, or else its tile with T = 1. */
static inline __attribute__((always_inline))
void i2s_row_tile(i2s_row_fn *rows, i2s_tile_fn *tile, const uint8_t *w, size_t row_bytes,
                  const int8_t *x, int KP, const int R, size_t pf, int32_t out[I2S_TILE_R]) {
    if (rows) {
        rows(w, row_bytes, x, KP, R, pf, out);
        return;
    }
    int32_t o[I2S_TILE_R][I2S_TILE_T];
    tile(w, row_bytes, x, 0, KP, R, 1, pf, o);
    for (int i = 0; i < R; i++) out[i] = o[i][0];
}

/* GEMV: rows (NULL: the tile with T = 1) R rows at a time. */
static inline __attribute__((always_inline))
void i2s_gemv_rows(i2s_row_fn *rows, i2s_tile_fn *tile, const int R, i2s_sum_fn *sum_q,
                   const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin, int row_end) {
    const size_t row_bytes = (size_t)KP / 4;
    const int32_t sx = sum_q(x, KP);
    const size_t pf = i2s_prefetch_distance(row_bytes);
    int32_t out[I2S_TILE_R];
    int r = row_begin;
    for (; r + R <= row_end; r += R) {
        i2s_row_tile(rows, tile, w + r * row_bytes, row_bytes, x, KP, R, pf, out);
        for (int i = 0; i < R; i++) y[r + i] = out[i] - sx;
    }
    if (R > 2 && r + 2 <= row_end) {
        i2s_row_tile(rows, tile, w + r * row_bytes, row_bytes, x, KP, 2, 0, out);
        for (int i = 0; i < 2; i++) y[r + i] = out[i] - sx;
        r += 2;
    }
    for (; r < row_end; r++) {
        i2s_row_tile(rows, tile, w + r * row_bytes, row_bytes, x, KP, 1, 0, out);
        y[r] = out[0] - sx;
    }
}

/* One tile of R rows x T tokens starting at token n, corrected and stored into y [N][M]. */
static inline __attribute__((always_inline))
void i2s_store_tile(i2s_tile_fn *tile, const int R, const int T, const uint8_t *wr,
                    size_t row_bytes, const int8_t *x, int32_t *y, const int32_t *sx, int M,
                    int KP, int r, int n, size_t pf) {
    int32_t out[I2S_TILE_R][I2S_TILE_T];
    tile(wr, row_bytes, x + (size_t)n * KP, (size_t)KP, KP, R, T, pf, out);
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) y[(size_t)(n + t) * M + r + i] = out[i][t] - sx[t];
}

/* R rows starting at row r against tokens [n0, n1); sx[n - n0] is token n's activation sum.
 * pf prefetches the next rows during the first token tile only (their bytes then sit in
 * cache when the row loop reaches them). */
static inline __attribute__((always_inline))
void i2s_rows_tokens(i2s_tile_fn *tile, const int R, const int T, const uint8_t *wr,
                     size_t row_bytes, const int8_t *x, int32_t *y, const int32_t *sx, int M,
                     int KP, int r, int n0, int n1, size_t pf) {
    int n = n0;
    for (; n + T <= n1; n += T)
        i2s_store_tile(tile, R, T, wr, row_bytes, x, y, sx + (n - n0), M, KP, r, n, n == n0 ? pf : 0);
    if (T > 4 && n + 4 <= n1) {
        i2s_store_tile(tile, R, 4, wr, row_bytes, x, y, sx + (n - n0), M, KP, r, n, 0);
        n += 4;
    }
    if (T > 2 && n + 2 <= n1) {
        i2s_store_tile(tile, R, 2, wr, row_bytes, x, y, sx + (n - n0), M, KP, r, n, 0);
        n += 2;
    }
    if (n < n1) i2s_store_tile(tile, R, 1, wr, row_bytes, x, y, sx + (n - n0), M, KP, r, n, 0);
}

/* GEMM for N >= 2 tokens: R x T tiles. prefetch: prefetch the next row tile (a kernel whose
 * tiles were measured faster without it passes 0). */
static inline __attribute__((always_inline))
void i2s_gemm_slabs(i2s_tile_fn *tile, const int R, const int T, const int prefetch,
                    i2s_sum_fn *sum_q, const uint8_t *w, const int8_t *x, int32_t *y, int N,
                    int M, int KP, int row_begin, int row_end) {
    const size_t row_bytes = (size_t)KP / 4;
    int32_t sx[I2S_NSLAB];
    for (int n0 = 0; n0 < N; n0 += I2S_NSLAB) {
        const int n1 = n0 + I2S_NSLAB < N ? n0 + I2S_NSLAB : N;
        for (int n = n0; n < n1; n++) sx[n - n0] = sum_q(x + (size_t)n * KP, KP);
        int r = row_begin;
        for (; r + R <= row_end; r += R) {
            const size_t pf = prefetch && r + 2 * R <= row_end ? R * row_bytes : 0;
            i2s_rows_tokens(tile, R, T, w + r * row_bytes, row_bytes, x, y, sx, M, KP, r, n0, n1, pf);
        }
        if (R > 2 && r + 2 <= row_end) {
            i2s_rows_tokens(tile, 2, T, w + r * row_bytes, row_bytes, x, y, sx, M, KP, r, n0, n1, 0);
            r += 2;
        }
        for (; r < row_end; r++)
            i2s_rows_tokens(tile, 1, T, w + r * row_bytes, row_bytes, x, y, sx, M, KP, r, n0, n1, 0);
    }
}

/* A kernel's GEMM entry: one token goes to its GEMV (rows/tile, gemv_R rows at a time),
 * more to the slabs of R x T tiles. */
static inline __attribute__((always_inline))
void i2s_gemm_or_gemv(i2s_row_fn *rows, i2s_tile_fn *tile, const int gemv_R, const int R,
                      const int T, const int prefetch, i2s_sum_fn *sum_q, const uint8_t *w,
                      const int8_t *x, int32_t *y, int N, int M, int KP, int row_begin, int row_end) {
    if (N == 1) i2s_gemv_rows(rows, tile, gemv_R, sum_q, w, x, y, KP, row_begin, row_end);
    else i2s_gemm_slabs(tile, R, T, prefetch, sum_q, w, x, y, N, M, KP, row_begin, row_end);
}

#endif
