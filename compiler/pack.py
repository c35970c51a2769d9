"""Weight packing: model description -> the byte layouts the C kernels read.

The "i2s" layout is documented in runtime_c/kernels/kernels.h; this is its only writer.
"""
from __future__ import annotations

import numpy as np

I2S_BLOCK = 128


def padded_k(K: int) -> int:
    return (K + I2S_BLOCK - 1) // I2S_BLOCK * I2S_BLOCK


def pack_i2s(codes: np.ndarray) -> np.ndarray:
    """codes int8 [M, K] in {-1,0,1} -> uint8 [M * KP/4] (KP = K rounded up to 128)."""
    M, K = codes.shape
    KP = padded_k(K)
    c = np.ones((M, KP), dtype=np.uint8)            # code 1 = weight 0 (padding)
    c[:, :K] = (codes.astype(np.int16) + 1).astype(np.uint8)
    c = c.reshape(M, KP // 128, 4, 32)              # [row, block, j, p] -> weight 128b + 32j + p
    packed = (c[:, :, 0] << 6) | (c[:, :, 1] << 4) | (c[:, :, 2] << 2) | c[:, :, 3]
    return np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)


# -- float matrices (embedding, head): f32, f16, or row-wise quantized ------------------------
MATRIX_TYPES = {"f32": 0, "f16": 1, "q8": 2, "q4": 3}   # BN_MAT_* in runtime_c/weights.h
Q4_BLOCK = 32


def pack_matrix(a: np.ndarray, kind: str):
    """A [V, E] float matrix in one of MATRIX_TYPES.

    Returns (data, scales or None, dequantized f32 [V, E]): the bytes the runtime reads and
    the exact values it computes with (the reference uses those to check a compiled model).
      q8: int8 per element, one f32 scale per row (d = max|row| / 127)
      q4: 4-bit codes in 32-element blocks, one f32 scale per block (d = max|block| / 7),
          code c in 0..15 means (c - 8) * d; two codes per byte, low nibble first
    """
    a = np.asarray(a, dtype=np.float32)
    V, E = a.shape
    if kind == "f32":
        return np.ascontiguousarray(a, "<f4"), None, a
    if kind == "f16":
        h = np.ascontiguousarray(a, "<f2")
        return h, None, h.astype(np.float32)
    if kind == "q8":
        amax = np.max(np.abs(a), axis=1)
        d = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        q = np.clip(np.rint(a / d[:, None]), -127, 127).astype(np.int8)
        return q, d.astype("<f4"), q.astype(np.float32) * d[:, None]
    if kind == "q4":
        if E % Q4_BLOCK:
            raise ValueError(f"q4 needs a width that is a multiple of {Q4_BLOCK}")
        b = a.reshape(V, E // Q4_BLOCK, Q4_BLOCK)
        amax = np.max(np.abs(b), axis=2)
        d = np.where(amax > 0, amax / np.float32(7), np.float32(1)).astype(np.float32)
        q = (np.clip(np.rint(b / d[:, :, None]), -8, 7) + 8).astype(np.uint8)      # [V, blocks, 32]
        packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).reshape(V, E // 2)
        deq = ((q.astype(np.float32) - 8) * d[:, :, None]).reshape(V, E)
        return np.ascontiguousarray(packed), d.astype("<f4"), deq
    raise ValueError(f"unknown matrix type {kind!r}; choose one of {', '.join(MATRIX_TYPES)}")
