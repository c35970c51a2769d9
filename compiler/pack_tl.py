"""Weight packing for the lookup-table kernels: tl2 (x86 AVX2) and tl1 (ARM NEON).

The byte layouts are documented at the top of runtime_c/core/kernels/tl2_avx2.c and
runtime_c/core/kernels/tl1_neon.c, and their sizes in runtime_c/core/kernels/tl_layout.h. These two
functions are their only writers. Both keep K padded to KP (a multiple of 128, as for
i2s), so a runtime quantizes activations once for any layout; rows are grouped in tiles
of 32 (M padded with zero rows).
"""
from __future__ import annotations

import numpy as np

from .pack import padded_k

TL_ROWS = 32


def _tiled_codes(codes: np.ndarray, k_cols: int) -> tuple[np.ndarray, int, int]:
    """codes [M, K] -> int16 [MT*32, k_cols] zero-padded, plus (KP, MT)."""
    M, K = codes.shape
    KP = padded_k(K)
    MT = (M + TL_ROWS - 1) // TL_ROWS
    t = np.zeros((MT * TL_ROWS, k_cols), dtype=np.int16)
    t[:M, :K] = codes
    return t, KP, MT


def tl2_sizes(K: int) -> tuple[int, int, int]:
    """-> (KP, triples, octets) for a row length K."""
    KP = padded_k(K)
    G = (KP + 2) // 3
    return KP, G, (G + 7) // 8


def pack_tl2(codes: np.ndarray) -> np.ndarray:
    """codes int8 [M, K] in {-1,0,1} -> uint8 [ceil(M/32) * (128 + octets*160)]."""
    M, K = codes.shape
    KP, G, NO = tl2_sizes(K)
    t, KP, MT = _tiled_codes(codes, NO * 8 * 3)
    t = t.reshape(MT * TL_ROWS, NO * 8, 3)
    v = 9 * t[:, :, 0] + 3 * t[:, :, 1] + t[:, :, 2]          # [row, triple] in [-13, 13]
    idx = np.abs(v).astype(np.uint8).reshape(MT, TL_ROWS, NO, 4, 2)
    neg = (v < 0).astype(np.uint8).reshape(MT, TL_ROWS, NO, 8)
    ib = (idx[..., 0] | (idx[..., 1] << 4)).transpose(0, 2, 3, 1)    # [tile, octet, p, row]
    sb = np.zeros((MT, TL_ROWS, NO), dtype=np.uint8)
    for j in range(8):
        sb |= neg[..., j] << j
    sb = sb.transpose(0, 2, 1)                                         # [tile, octet, row]
    octets = np.concatenate([ib.reshape(MT, NO, 128), sb.reshape(MT, NO, 32)], axis=2)
    header = neg.sum(axis=(2, 3), dtype=np.int32).astype("<i4")        # [tile, row]
    out = np.concatenate([header.view(np.uint8).reshape(MT, 128),
                          octets.reshape(MT, NO * 160)], axis=1)
    return np.ascontiguousarray(out).reshape(-1)


def pack_tl1(codes: np.ndarray) -> np.ndarray:
    """codes int8 [M, K] in {-1,0,1} -> uint8 [ceil(M/32) * KP/4 * 32] (2 bits/weight)."""
    M, K = codes.shape
    t, KP, MT = _tiled_codes(codes, padded_k(K))
    idx = (3 * (t[:, 0::2] + 1) + (t[:, 1::2] + 1)).astype(np.uint8)  # [row, pair] in 0..8
    idx = idx.reshape(MT, TL_ROWS, KP // 4, 2)
    b = (idx[..., 0] | (idx[..., 1] << 4)).transpose(0, 2, 1)          # [tile, pair-pair, row]
    return np.ascontiguousarray(b).reshape(-1)
