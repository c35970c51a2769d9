"""Exact decoding (and encoding) of the ternary GGUF tensor types.

Each decoder turns a tensor's bytes into int8 codes in {-1, 0, +1} (flat, in file element
order) plus the scale(s) the format stores. The layouts are those described in
shared/docs/FORMATS.md section 3; tests check TQ1_0/TQ2_0 against `gguf.quants` and I2_S
against an independent packer.
"""
from __future__ import annotations

import numpy as np

QK = 256  # TQ1_0 / TQ2_0 block size


def _f16_scales(raw: np.ndarray, nblocks: int, block_bytes: int, d_off: int) -> np.ndarray:
    blocks = raw.reshape(nblocks, block_bytes)
    return blocks[:, d_off:d_off + 2].copy().view("<f2").reshape(nblocks).astype(np.float32)


# -- TQ2_0: 256 weights in 66 bytes: qs[64] then fp16 d -----------------------------------
def decode_tq2_0(raw: np.ndarray, n: int):
    """-> (codes int8 [n], block scales f32 [n/256])"""
    nb = n // QK
    blocks = raw.reshape(nb, 66)
    qs = blocks[:, :64].reshape(nb, 2, 1, 32)                  # [block, g, -, m]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    c = (qs >> shifts) & 3                                      # [block, g, l, m]: element 128g+32l+m
    codes = c.astype(np.int8).reshape(nb, QK) - 1
    return codes.reshape(n), _f16_scales(raw, nb, 66, 64)


def encode_tq2_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """codes int8 [n] in {-1,0,1}, scales f32 [n/256] -> bytes"""
    nb = codes.size // QK
    c = (codes.reshape(nb, 2, 4, 32).astype(np.int16) + 1).astype(np.uint8)
    qs = np.zeros((nb, 2, 32), dtype=np.uint8)
    for l in range(4):
        qs |= c[:, :, l, :] << np.uint8(2 * l)
    out = np.empty((nb, 66), dtype=np.uint8)
    out[:, :64] = qs.reshape(nb, 64)
    out[:, 64:66] = np.asarray(scales, dtype="<f2").reshape(nb, 1).view(np.uint8)
    return out.reshape(-1)


# -- TQ1_0: 256 weights in 54 bytes: qs[48], qh[4], fp16 d --------------------------------
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16)


def _trits(b: np.ndarray, count: int) -> np.ndarray:
    """b uint8 [..., nbytes] -> trits [..., count(n), nbytes]: ((uint8)(b*3^n) * 3) >> 8"""
    p = _POW3[:count].reshape((1,) * (b.ndim - 1) + (count, 1))
    q = (b[..., None, :].astype(np.uint16) * p) & 0xFF
    return ((q * 3) >> 8).astype(np.int8)


def decode_tq1_0(raw: np.ndarray, n: int):
    nb = n // QK
    blocks = raw.reshape(nb, 54)
    codes = np.empty((nb, QK), dtype=np.int8)
    codes[:, 0:160] = _trits(blocks[:, 0:32], 5).reshape(nb, 160)      # m + 32n
    codes[:, 160:240] = _trits(blocks[:, 32:48], 5).reshape(nb, 80)    # 160 + m + 16n
    codes[:, 240:256] = _trits(blocks[:, 48:52], 4).reshape(nb, 16)    # 240 + j + 4n
    return (codes - 1).reshape(n), _f16_scales(raw, nb, 54, 52)


def _pack_trits(t: np.ndarray) -> np.ndarray:
    """t [..., count, nbytes] in {0,1,2} (first trit most significant) -> bytes ceil(v*256/243)"""
    count = t.shape[-2]
    v = np.zeros(t.shape[:-2] + t.shape[-1:], dtype=np.int32)
    for k in range(count):
        v = v * 3 + t[..., k, :]
    v = v * (3 ** (5 - count))
    return ((v * 256 + 242) // 243).astype(np.uint8)


def encode_tq1_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    nb = codes.size // QK
    t = (codes.reshape(nb, QK).astype(np.int32) + 1)
    out = np.empty((nb, 54), dtype=np.uint8)
    out[:, 0:32] = _pack_trits(t[:, 0:160].reshape(nb, 5, 32))
    out[:, 32:48] = _pack_trits(t[:, 160:240].reshape(nb, 5, 16))
    out[:, 48:52] = _pack_trits(t[:, 240:256].reshape(nb, 4, 4))
    out[:, 52:54] = np.asarray(scales, dtype="<f2").reshape(nb, 1).view(np.uint8)
    return out.reshape(-1)


# -- I2_S (bitnet.cpp x86 layout): 128-weight blocks of 32 bytes, one f32 scale ------------
def decode_i2_s(raw: np.ndarray, n: int):
    """-> (codes int8 [n], scale f32 [1]). Byte p of a block holds weights p, p+32, p+64, p+96
    at bits 7-6, 5-4, 3-2, 1-0; stored code 0 -> -1, 1 -> 0, 2 -> +1 (3 is invalid)."""
    nb = n // 128
    q = raw[: n // 4].reshape(nb, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
    c = (q >> shifts) & 3                                      # [block, j, p] -> weight 32j+p
    if np.any(c == 3):
        raise ValueError("I2_S data holds the invalid code 3")
    scale = raw[n // 4: n // 4 + 4].copy().view("<f4").astype(np.float32)
    return (c.astype(np.int8) - 1).reshape(n), scale


def encode_i2_s(codes: np.ndarray, scale: float) -> np.ndarray:
    n = codes.size
    nb = n // 128
    c = (codes.reshape(nb, 4, 32).astype(np.int16) + 1).astype(np.uint8)
    q = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    out = np.zeros(n // 4 + 32, dtype=np.uint8)
    out[: n // 4] = q.reshape(-1)
    out[n // 4: n // 4 + 4] = np.array([scale], dtype="<f4").view(np.uint8)
    return out


# -- float <-> ternary -------------------------------------------------------------------
def ternary_from_floats(w: np.ndarray, rtol: float = 2e-3):
    """If w is exactly codes*scale (within fp16 rounding), return (codes, scale); else None."""
    w = np.asarray(w, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        return None
    s = float(np.max(np.abs(w))) if w.size else 0.0
    if s == 0.0:
        return np.zeros(w.shape, dtype=np.int8), 1.0
    codes = np.rint(w / s).astype(np.int8)
    if np.max(np.abs(w - codes.astype(np.float32) * s)) > rtol * s:
        return None
    # The scale is the mean magnitude of the non-zero entries (all equal up to rounding).
    nz = codes != 0
    mags = np.abs(w[nz])
    if mags.size and mags.min() == mags.max():
        return codes, float(mags[0])          # exactly one magnitude: keep it bit for bit
    return codes, float(np.mean(mags))


def absmean_ternarize(w: np.ndarray):
    """Post-training quantization, as BitNet b1.58 training does in its forward pass."""
    w = np.asarray(w, dtype=np.float32)
    s = 1.0 / max(float(np.mean(np.abs(w))), 1e-5)
    codes = np.clip(np.rint(w * s), -1, 1).astype(np.int8)
    return codes, float(np.float32(1.0 / s))


# -- Q1_0 (ggml type 41): 128 weights in 18 bytes: fp16 d, then qs[16] ---------------------
# Weight j of a block is bit (j % 8) of qs[j / 8]: set -> +d, clear -> -d (binary, no zero).
QK1_0 = 128


def decode_q1_0(raw: np.ndarray, n: int):
    """-> (codes int8 [n] in {-1, +1}, block scales f32 [n/128])"""
    nb = n // QK1_0
    blocks = raw[: nb * 18].reshape(nb, 18)
    bits = np.unpackbits(blocks[:, 2:18], axis=1, bitorder="little")      # [block, 128]: bit j%8 of byte j/8
    codes = bits.astype(np.int8) * 2 - 1
    d = blocks[:, 0:2].copy().view("<f2").reshape(nb).astype(np.float32)
    return codes.reshape(n), d


def encode_q1_0(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """codes int8 [n] in {-1, +1} (0 is not representable), scales f32 [n/128] -> bytes"""
    nb = codes.size // QK1_0
    c = codes.reshape(nb, QK1_0)
    if np.any(c == 0):
        raise ValueError("Q1_0 cannot store a zero weight")
    out = np.empty((nb, 18), dtype=np.uint8)
    out[:, 0:2] = np.asarray(scales, dtype="<f2").reshape(nb, 1).view(np.uint8)
    out[:, 2:18] = np.packbits((c > 0).astype(np.uint8), axis=1, bitorder="little")
    return out.reshape(-1)


# -- Q2_0 (ggml type 42): fp16 d, then 2-bit codes, 4 per byte ------------------------------
# Current ggml: 64 weights in 18 bytes. PrismML's fork (the first Ternary Bonsai GGUFs)
# used the same id with 128 weights in 34 bytes. Weight j of a block is
# (qs[j / 4] >> 2 (j % 4)) & 3, value (code - 1) * d: codes 0, 1, 2, 3 -> -1, 0, +1, +2.
def q2_0_block_bytes(qk: int) -> int:
    return 2 + qk // 4


def decode_q2_0(raw: np.ndarray, n: int, qk: int = 64):
    """-> (codes int8 [n] in {-1, 0, 1, 2}, block scales f32 [n/qk])"""
    nb = n // qk
    bb = q2_0_block_bytes(qk)
    blocks = raw[: nb * bb].reshape(nb, bb)
    qs = blocks[:, 2:].reshape(nb, qk // 4, 1)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4)
    c = (qs >> shifts) & 3                                      # [block, byte, j%4] -> weight 4*byte + j%4
    d = blocks[:, 0:2].copy().view("<f2").reshape(nb).astype(np.float32)
    return (c.astype(np.int8) - 1).reshape(n), d


def encode_q2_0(codes: np.ndarray, scales: np.ndarray, qk: int = 64) -> np.ndarray:
    """codes int8 [n] in {-1, 0, 1, 2}, scales f32 [n/qk] -> bytes"""
    nb = codes.size // qk
    c = (codes.reshape(nb, qk // 4, 4).astype(np.int16) + 1)
    if np.any(c < 0) or np.any(c > 3):
        raise ValueError("Q2_0 codes must be in -1..2")
    c = c.astype(np.uint8)
    qs = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    out = np.empty((nb, q2_0_block_bytes(qk)), dtype=np.uint8)
    out[:, 0:2] = np.asarray(scales, dtype="<f2").reshape(nb, 1).view(np.uint8)
    out[:, 2:] = qs
    return out.reshape(-1)
