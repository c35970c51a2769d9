/* tl_layout.h: sizes of the tl2 and tl1 packed layouts (described in full at the top of
 * tl2_avx2.c and tl1_neon.c; written by compiler/pack_tl.py, which must agree). */
#ifndef BITNET_TL_LAYOUT_H
#define BITNET_TL_LAYOUT_H

#define TL_ROWS 32    /* rows per tile: one AVX2 register of 32 byte lanes = 32 rows */
#define TL_NSLAB 8    /* GEMM builds tables for at most this many tokens at a time */

/* tl2: triple g covers k = 3g..3g+2 (weights at k >= KP are 0); triples come in octets of 8. */
#define TL2_TRIPLES(KP) (((KP) + 2) / 3)
#define TL2_OCTETS(KP) ((TL2_TRIPLES(KP) + 7) / 8)
#define TL2_TILE_HEADER 128                      /* 32 x int32: negative triples per row */
#define TL2_OCTET_BYTES 160                      /* 4 x 32 index bytes + 32 sign bytes */
#define TL2_TILE_BYTES(KP) ((size_t)TL2_TILE_HEADER + (size_t)TL2_OCTETS(KP) * TL2_OCTET_BYTES)
#define TL2_LUT_BYTES(KP) ((size_t)TL2_OCTETS(KP) * 8 * 32)  /* per token: lo[16] hi[16] per triple */

/* tl1: pair g covers k = 2g, 2g+1; 32 bytes per tile hold two pairs of all 32 rows. */
#define TL1_TILE_BYTES(KP) ((size_t)(KP) / 4 * 32)
#define TL1_LUT_BYTES(KP) ((size_t)(KP) / 2 * 32)            /* per token: lo[16] hi[16] per pair */

#endif
