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
