"""Numpy reference forward pass: the oracle for every compiled model.

Clear rather than fast. Numerics are the trained BitNet b1.58 ones (FORMATS.md section 1):
activations entering each ternary matmul are quantized per token with absmax to int8
(round half to even), the matmul is exact integer arithmetic, and the output is
acc / as * ws, all in float32 like the C runtime.
"""
from __future__ import annotations

import numpy as np

from .model import Model, TernaryWeight
from .pack import QBLOCK, QUANTIZED, PackedMatrix, matrix_kinds, pack_matrix

f32 = np.float32


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x [T, D] -> x / sqrt(mean(x^2) + eps) * w"""
    ms = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
    return (x / np.sqrt(ms + eps)).astype(f32) * w


def quantize_activations(x: np.ndarray):
    """Per-token absmax int8: returns (q int8 [T, K], as f32 [T, 1])."""
    amax = np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), f32(1e-5)).astype(f32)
    a_s = (f32(127.0) / amax).astype(f32)
    q = np.clip(np.rint(x * a_s), -128, 127).astype(np.int8)
    return q, a_s


def ternary_matmul(x: np.ndarray, w: TernaryWeight) -> np.ndarray:
    """x f32 [T, K] -> y f32 [T, M] with BitNet numerics."""
    q, a_s = quantize_activations(x)
    acc = q.astype(np.int64) @ w.codes.T.astype(np.int64)         # exact integers
    return (acc.astype(f32) / a_s * f32(w.scale)).astype(f32)


def rope(x: np.ndarray, pos: np.ndarray, rope_dim: int, base: float, style: str) -> np.ndarray:
    """x [T, H, D]; rotates the first rope_dim dims of each head."""
    half = rope_dim // 2
    inv = (1.0 / (base ** (np.arange(half, dtype=np.float64) * 2.0 / rope_dim)))
    ang = pos[:, None].astype(np.float64) * inv[None, :]                    # [T, half]
    cos = np.cos(ang).astype(f32)[:, None, :]
    sin = np.sin(ang).astype(f32)[:, None, :]
    out = x.copy()
    if style == "neox":       # pairs (i, i + half)
        a, b = x[..., :half], x[..., half:rope_dim]
        out[..., :half] = a * cos - b * sin
        out[..., half:rope_dim] = a * sin + b * cos
    else:                     # "norm": adjacent pairs (2i, 2i + 1)
        a, b = x[..., 0:rope_dim:2], x[..., 1:rope_dim:2]
        out[..., 0:rope_dim:2] = a * cos - b * sin
        out[..., 1:rope_dim:2] = a * sin + b * cos
    return out


def silu(g: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), evaluated in float64 and rounded once (as the C runtime does)."""
    g64 = g.astype(np.float64)
    return (g64 / (1.0 + np.exp(-g64))).astype(f32)


def attention_head(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Causal attention of one head. q [T, D] at positions pos; k, v [S, D] (the cache).

    Sums run in the C runtime's order (float32, left to right) and exp is evaluated in
    float64 and rounded once, so reference and compiled model agree to the last bit in the
    usual case; only the head's dot products differ in summation order.
    """
    T, D = q.shape
    S = k.shape[0]
    s = np.zeros((T, S), f32)
    for d in range(D):                                   # dot products, d in order
        s += q[:, d:d + 1] * k[None, :, d]
    s = s / f32(np.sqrt(D))
    valid = np.arange(S)[None, :] <= pos[:, None]        # causal mask
    smax = np.max(np.where(valid, s, -np.inf), axis=1, keepdims=True)
    e = np.where(valid, np.exp((s - smax).astype(np.float64)).astype(f32), f32(0))
    tot = np.zeros((T, 1), f32)
    for j in range(S):                                   # softmax denominator, in order
        tot += e[:, j:j + 1]
    p = e / tot
    out = np.zeros((T, D), f32)
    for j in range(S):                                   # weighted values, in order
        out += p[:, j:j + 1] * v[j][None, :]
    return out


def quantize_head_input(xn: np.ndarray):
    """The integer heads' input (runtime_c/head.c, head_prepare): xn f32 [T, E], zero-padded
    to whole pairs of 32-blocks, quantized per block Q8_0-style: d = max|block| / 127,
    q = round(x / d) (half to even). Returns (q int8 [T, blocks, 32], d f32 [T, blocks])."""
    T, E = xn.shape
    EP = -(-E // 64) * 64
    b = np.zeros((T, EP), f32)
    b[:, :E] = xn
    b = b.reshape(T, EP // QBLOCK, QBLOCK)
    d = (np.max(np.abs(b), axis=2) / f32(127)).astype(f32)
    q = np.clip(np.rint(b / np.where(d == 0, f32(1), d)[..., None]), -127, 127).astype(np.int8)
    return q, d


def quantized_head(xn: np.ndarray, pm: PackedMatrix) -> np.ndarray:
    """logits f32 [T, V] of a q8/q6/q4 head, computed as runtime_c/head.c does: per 32-block
    an exact integer dot of the codes with the quantized input, a float term
    dx * isum (q8; times the row scale at the end) or (dw * dx) * isum (q6, q4), added to
    lane (block % 8) of eight float32 partial sums, which are then added as
    ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))."""
    q, dx = quantize_head_input(xn)
    V = pm.codes.shape[0]
    nb = pm.codes.shape[1] // QBLOCK
    codes = pm.codes.reshape(V, nb, QBLOCK).astype(np.float64)
    lanes = np.zeros((xn.shape[0], V, 8), f32)
    for b in range(nb):
        isum = (q[:, b, :].astype(np.float64) @ codes[:, b, :].T).astype(f32)     # exact: |isum| < 2^24
        s = dx[:, b][:, None] if pm.kind == "q8" else pm.d[None, :, b] * dx[:, b][:, None]
        lanes[:, :, b % 8] += s * isum
    out = ((lanes[..., 0] + lanes[..., 4]) + (lanes[..., 2] + lanes[..., 6])) + \
          ((lanes[..., 1] + lanes[..., 5]) + (lanes[..., 3] + lanes[..., 7]))
    return out * pm.d[None, :] if pm.kind == "q8" else out


class Reference:
    """Stateful reference model with a KV cache.

    head, embed: the precision a build stores the head and (untied) embedding in (the build's
    --head/--embed): the reference then computes with exactly those values, and for q8/q6/q4
    heads with the runtime's integer head (quantized_head)."""

    def __init__(self, model: Model, head: str = "auto", embed: str = "auto"):
        self.m = model
        self.embd, self.head, self.head_packed = model.token_embd, model.head, None
        if head != "auto" or embed != "auto":
            embd_kind, head_kind = matrix_kinds(model, head, embed)
            pm = pack_matrix(model.head, head_kind)
            self.head = pm.values
            self.head_packed = pm if head_kind in QUANTIZED else None
            self.embd = pm.values if model.output is None else pack_matrix(model.token_embd, embd_kind).values
        self.reset()

    def reset(self):
        hp = self.m.hp
        self.k_cache = [np.zeros((0, hp.n_head_kv, hp.head_dim), f32) for _ in range(hp.n_layer)]
        self.v_cache = [np.zeros((0, hp.n_head_kv, hp.head_dim), f32) for _ in range(hp.n_layer)]
        self.pos = 0

    def forward(self, tokens) -> np.ndarray:
        """Evaluate tokens (appending to the cache); returns logits f32 [T, V]."""
        m, hp = self.m, self.m.hp
        tokens = np.asarray(tokens, dtype=np.int64)
        T = tokens.size
        pos = np.arange(self.pos, self.pos + T)
        x = self.embd[tokens].astype(f32)                                       # [T, E]
        H, Hkv, D = hp.n_head, hp.n_head_kv, hp.head_dim
        group = H // Hkv
        for li, L in enumerate(m.layers):
            h = rmsnorm(x, L.attn_norm, hp.norm_eps)
            q = ternary_matmul(h, L.wq).reshape(T, H, D)
            k = ternary_matmul(h, L.wk).reshape(T, Hkv, D)
            v = ternary_matmul(h, L.wv).reshape(T, Hkv, D)
            q = rope(q, pos, hp.rope_dim, hp.rope_base, hp.rope_style)
            k = rope(k, pos, hp.rope_dim, hp.rope_base, hp.rope_style)
            K = self.k_cache[li] = np.concatenate([self.k_cache[li], k], axis=0)   # [S, Hkv, D]
            V = self.v_cache[li] = np.concatenate([self.v_cache[li], v], axis=0)
            S = K.shape[0]
            att = np.empty((T, H, D), f32)
            for hh in range(H):
                att[:, hh, :] = attention_head(q[:, hh, :], K[:, hh // group, :], V[:, hh // group, :], pos)
            a = att.reshape(T, H * D)
            if L.attn_sub_norm is not None:
                a = rmsnorm(a, L.attn_sub_norm, hp.norm_eps)
            x = x + ternary_matmul(a, L.wo)
            h = rmsnorm(x, L.ffn_norm, hp.norm_eps)
            g = ternary_matmul(h, L.w_gate)
            u = ternary_matmul(h, L.w_up)
            if hp.activation == "relu2":
                g = np.maximum(g, 0) * np.maximum(g, 0)
            else:
                g = silu(g)
            f = (g * u).astype(f32)
            if L.ffn_sub_norm is not None:
                f = rmsnorm(f, L.ffn_sub_norm, hp.norm_eps)
            x = x + ternary_matmul(f, L.w_down)
        self.pos += T
        xn = rmsnorm(x, m.output_norm, hp.norm_eps)
        if self.head_packed is not None:
            return quantized_head(xn, self.head_packed)
        return (xn @ self.head.T).astype(f32)

    def generate_greedy(self, prompt, n: int, stop_ids=()):
        """Greedy continuation: returns the list of generated ids (prompt excluded)."""
        logits = self.forward(prompt)[-1]
        out = []
        for _ in range(n):
            t = int(np.argmax(logits))
            out.append(t)
            if t in stop_ids:
                break
            logits = self.forward([t])[-1]
        return out
