/* tl_driver.h: the one GEMV/GEMM driver of the table-lookup layouts (tl2_avx2.c, tl1_neon.c).
 *
 * An ISA file supplies two functions and calls tl_gemm (GEMV is tl_gemm with N = 1):
 *   build(x, KP, lut)          the lookup tables of one token's activations;
 *   tile(tw, luts, arg, T, pf, out)
 *                              one TL_ROWS-row tile of packed weights against T <= 4 tokens
 *                              (their tables luts[0..T-1]), full K; out[t][i] = row i, token t.
 *                              arg is what the layout's tile needs (tl1: KP, tl2: octets).
 * Both are static inline in the ISA file; the driver is always inlined into it, so the calls
 * are direct and each `case` below inlines the tile with a constant T (accumulators in
 * registers, loops over t unrolled).
 *
 * Work: tokens in slabs of TL_NSLAB (their tables stay in cache while every tile of this
 * thread's rows [rb, re) streams past); a tile's rows outside [rb, re) are computed and
 * dropped, so threads may split rows anywhere. GEMV prefetches the next tile (one pass over
 * the matrix). Integer results: the order of tiles and tokens does not change them. */
#ifndef BITNET_TL_DRIVER_H
#define BITNET_TL_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tl_layout.h"

typedef void (*tl_build_fn)(const int8_t *x, int KP, uint8_t *lut);
typedef void (*tl_tile_fn)(const uint8_t *tile, const uint8_t *const *luts, int arg, int T, size_t pf,
                           int32_t out[4][32]);

static inline uint8_t *tl_align64(void *p) { return (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* Rows [rb, re) of tokens [n0, n1), whose tables are luts[n - n0]; tb = bytes per tile. */
static inline __attribute__((always_inline))
void tl_rows(tl_tile_fn tile, size_t tb, int arg, const uint8_t *w, const uint8_t *const *luts,
             int32_t *y, int M, int rb, int re, int n0, int n1) {
    const size_t pf = n1 - n0 == 1 ? tb : 0;
    int32_t out[4][32];
    for (int ti = rb / TL_ROWS; ti * TL_ROWS < re; ti++) {
        const uint8_t *tw = w + ti * tb;
        const int r0 = ti * TL_ROWS;
        const int i0 = rb > r0 ? rb - r0 : 0, i1 = re < r0 + TL_ROWS ? re - r0 : TL_ROWS;
        for (int n = n0; n < n1;) {
            const int T = n1 - n >= 4 ? 4 : n1 - n;
            const uint8_t *const *l = luts + (n - n0);
            switch (T) {          /* a constant T for each inlined copy of the tile */
            case 4: tile(tw, l, arg, 4, pf, out); break;
            case 3: tile(tw, l, arg, 3, pf, out); break;
            case 2: tile(tw, l, arg, 2, pf, out); break;
            default: tile(tw, l, arg, 1, pf, out); break;
            }
            for (int t = 0; t < T; t++)
                memcpy(y + (size_t)(n + t) * M + r0 + i0, &out[t][i0], sizeof(int32_t) * (size_t)(i1 - i0));
            n += T;
        }
    }
}

/* y[n*M + r] for tokens n < N and rows [rb, re); tb, lb: bytes per tile and per token's
 * tables; scratch: at least 64 + TL_NSLAB * lb bytes (tl{1,2}_scratch_bytes). */
static inline __attribute__((always_inline))
void tl_gemm(tl_build_fn build, tl_tile_fn tile, size_t tb, size_t lb, int arg,
             const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP, int rb, int re, void *scratch) {
    if (rb >= re) return;
    uint8_t *base = tl_align64(scratch);
    const uint8_t *luts[TL_NSLAB];
    for (int n0 = 0; n0 < N; n0 += TL_NSLAB) {
        const int n1 = n0 + TL_NSLAB < N ? n0 + TL_NSLAB : N;
        for (int n = n0; n < n1; n++) {
            build(x + (size_t)n * KP, KP, base + (size_t)(n - n0) * lb);
            luts[n - n0] = base + (size_t)(n - n0) * lb;
        }
        tl_rows(tile, tb, arg, w, luts, y, M, rb, re, n0, n1);
    }
}

#endif
