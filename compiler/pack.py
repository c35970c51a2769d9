"""Weight packing: model description -> the byte layouts the C kernels read.

The "i2s" layout is documented in runtime_c/core/kernels/kernels.h; this is its only writer.
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


def pack_group_scales(w) -> np.ndarray:
    """A block-scaled weight's scales -> f16 [ceil(M / 4)][ceil(KP / group)][4] (row r's
    group g at ((r / 4) * NG + g) * 4 + r % 4), zero past K and M (kernels/i2sg.h)."""
    M, K = w.shape
    ng = -(-padded_k(K) // w.group)
    mt = -(-M // 4)
    d = np.zeros((mt * 4, ng), dtype="<f2")
    d[:M, :w.group_scales.shape[1]] = w.group_scales
    d = d.reshape(mt, 4, ng).transpose(0, 2, 1)
    return np.ascontiguousarray(d).view(np.uint8).reshape(-1)


# -- float matrices (embedding, head): f32, f16, or quantized --------------------------------
MATRIX_TYPES = {"f32": 0, "f16": 1, "q8": 2, "q4": 3, "q6": 4}   # BN_MAT_* in runtime_c/core/weights.h
MATRIX_CHOICES = ("auto", "f32", "f16", "q8", "q6", "q4")   # --head and --embed; auto: the file's precision
QUANTIZED = ("q8", "q6", "q4")
QBLOCK = 32              # elements per block: the q4/q6 scales, and the head's int8 input (head.c)


def padded_width(E: int, kind: str) -> int:
    """Elements stored per row: q8 rows pad to whole 32-blocks, q4/q6 rows to whole pairs of
    blocks (64 elements), with zeros; the float types store E."""
    if kind == "q8":
        return -(-E // 32) * 32
    if kind in ("q4", "q6"):
        return -(-E // 64) * 64
    return E


class PackedMatrix:
    """A [V, E] matrix as the runtime stores it.

    data, scales: the bytes written to the blob (scales None for f32/f16).
    codes, d: quantized types only: the signed integer values int8 [V, padded_width] and
        their scales as float32 ([V] for q8, [V, padded_width / 32] for q4/q6); an element is
        codes * d (the reference's integer head multiplies these).
    values: the f32 [V, E] values the runtime computes with (the embedding lookup's rows).
    """

    def __init__(self, kind, E, data, scales=None, codes=None, d=None, values=None):
        self.kind, self.E, self.data, self.scales, self.codes, self.d = kind, E, data, scales, codes, d
        self._values = values

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            if self.codes is None:       # f32, f16
                return self.data.astype(np.float32, copy=False)
            V = self.codes.shape[0]
            if self.kind == "q8":
                v = self.codes.astype(np.float32) * self.d[:, None]
            else:
                v = (self.codes.reshape(V, -1, QBLOCK).astype(np.float32) * self.d[:, :, None]).reshape(V, -1)
            self._values = np.ascontiguousarray(v[:, :self.E])
        return self._values


def _round_blocks(b: np.ndarray, d16: np.ndarray, lo: int, hi: int):
    """Codes of blocks b [R, NB, 32] under f16 scales d16 [R, NB], and each block's squared error."""
    d = d16.astype(np.float32)
    q = np.rint(b / np.where(d == 0, np.float32(1), d)[..., None])
    np.clip(q, lo, hi, out=q)
    r = q * d[..., None]              # exact: a small integer times an f16 value
    r -= b
    r *= r
    return q.astype(np.int8), r.sum(axis=2, dtype=np.float64)


def _quantize_blocks(b: np.ndarray, nmax: int):
    """Blocks b f32 [R, NB, 32] -> (codes int8 in [-(nmax+1), nmax], f16 scales [R, NB]).

    The first scale maps the block's largest-magnitude element to -(nmax+1) (the extra code
    of a two's-complement range, as llama.cpp's Q4_0); two least-squares refits of the scale
    (d = sum(q*a) / sum(q*q) for the current codes) follow, each kept only where it lowers
    the block's squared error."""
    idx = np.argmax(np.abs(b), axis=2)
    mx = np.take_along_axis(b, idx[..., None], 2)[..., 0]
    d = (mx / np.float32(-(nmax + 1))).astype(np.float16)
    if not np.all(np.isfinite(d)):
        raise ValueError("values too large for float16 block scales; use q8")
    q, err = _round_blocks(b, d, -(nmax + 1), nmax)
    for _ in range(2):
        qf = q.astype(np.float32)
        qq = (qf * qf).sum(axis=2, dtype=np.float64)
        qa = (qf * b).sum(axis=2, dtype=np.float64)
        d2 = np.where(qq > 0, qa / np.where(qq > 0, qq, 1), 0).astype(np.float16)
        q2, err2 = _round_blocks(b, d2, -(nmax + 1), nmax)
        better = err2 < err
        d = np.where(better, d2, d)
        q = np.where(better[..., None], q2, q)
        err = np.where(better, err2, err)
    return q, d


def pack_matrix(a: np.ndarray, kind: str, rows_per_chunk: int = 512) -> PackedMatrix:
    """A [V, E] float matrix in one of MATRIX_TYPES (layouts: runtime_c/core/weights.h, head.c).

      f32, f16: [V][E] values.
      q8: int8 codes [V][EP8] (EP8 = E rounded up to 32, zero padding), one f32 scale per row
          (d = max|row| / 127): data int8 [V][EP8], scales f32 [V].
      q6: 6-bit codes c in 0..63 meaning (c - 32) * d, one f16 scale d per 32-element block;
          rows padded with zeros to EP = E rounded up to 64 and stored as pairs of blocks
          (A = elements 64p..64p+31, B = the next 32), 48 bytes per pair:
            bytes  0..31: low 4 bits of A[k] (low nibble) and of B[k] (high nibble), k = 0..31
            bytes 32..47: byte j holds the high 2 bits of A[j] (bits 0-1), A[j+16] (bits 2-3),
                          B[j] (bits 4-5) and B[j+16] (bits 6-7), j = 0..15
          data uint8 [V][EP/64*48] (6.5 bits per element with the scales), scales f16 [V][EP/32].
      q4: 4-bit codes c in 0..15 meaning (c - 8) * d, one f16 scale per 32-element block, the
          same pairs of blocks with only the first plane: 32 bytes per pair (4.5 bits per
          element): data uint8 [V][EP/64*32], scales f16 [V][EP/32].
    q4/q6 scales: the largest-magnitude element maps to the most negative code, then two
    least-squares refits of each block's scale (see _quantize_blocks).
    """
    a = np.asarray(a, dtype=np.float32)
    V, E = a.shape
    if kind == "f32":
        return PackedMatrix(kind, E, np.ascontiguousarray(a, "<f4"))
    if kind == "f16":
        return PackedMatrix(kind, E, np.ascontiguousarray(a, "<f2"))
    if kind not in MATRIX_TYPES:
        raise ValueError(f"unknown matrix type {kind!r}; choose one of {', '.join(MATRIX_TYPES)}")
    EP = padded_width(E, kind)
    codes = np.zeros((V, EP), np.int8)
    if kind == "q8":
        amax = np.max(np.abs(a), axis=1)
        d = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        codes[:, :E] = np.clip(np.rint(a / d[:, None]), -127, 127)
        return PackedMatrix(kind, E, codes, d.astype("<f4"), codes, d)
    nmax = 31 if kind == "q6" else 7
    d16 = np.zeros((V, EP // QBLOCK), np.float16)
    for r in range(0, V, rows_per_chunk):
        chunk = np.zeros((min(rows_per_chunk, V - r), EP), np.float32)
        chunk[:, :E] = a[r:r + rows_per_chunk]
        q, d = _quantize_blocks(chunk.reshape(len(chunk), EP // QBLOCK, QBLOCK), nmax)
        codes[r:r + len(chunk)] = q.reshape(len(chunk), EP)
        d16[r:r + len(chunk)] = d
    u = (codes.astype(np.int16) + (nmax + 1)).astype(np.uint8).reshape(V, EP // 64, 2, QBLOCK)   # pairs (A, B)
    low = (u[:, :, 0] & 15) | ((u[:, :, 1] & 15) << 4)                                        # [V, pairs, 32]
    if kind == "q6":
        h = u >> 4
        high = h[:, :, 0, :16] | (h[:, :, 0, 16:] << 2) | (h[:, :, 1, :16] << 4) | (h[:, :, 1, 16:] << 6)
        data = np.concatenate([low, high], axis=2).reshape(V, EP // 64 * 48)
    else:
        data = low.reshape(V, EP // 64 * 32)
    return PackedMatrix(kind, E, np.ascontiguousarray(data, np.uint8), np.ascontiguousarray(d16, "<f2"),
                        codes, d16.astype(np.float32))


def matrix_kinds(m, head: str = "auto", embed: str = "auto"):
    """(embedding kind, head kind) a build stores for model m: `auto` keeps the source
    precision (f16 stays f16, anything else f32); a tied model stores one matrix, in the
    head's kind."""
    def source(dtype_name):
        return "f16" if dtype_name == "F16" else "f32"
    if m.output is None:
        head_kind = head if head != "auto" else source(m.token_embd_dtype)
        return head_kind, head_kind
    head_kind = head if head != "auto" else source(m.output_dtype)
    return (embed if embed != "auto" else source(m.token_embd_dtype)), head_kind
