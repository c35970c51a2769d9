"""Numpy reference forward pass: the oracle for every compiled model.

Clear rather than fast. Numerics are the trained BitNet b1.58 ones (FORMATS.md section 1):
activations entering each ternary matmul are quantized per token with absmax to int8
(round half to even), the matmul is exact integer arithmetic, and the output is
acc / as * ws, all in float32 like the C runtime.
"""
from __future__ import annotations

import math

import numpy as np

from .model import Model, TernaryWeight
from .pack import QBLOCK, QUANTIZED, PackedMatrix, matrix_kinds, pack_matrix, padded_k

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
    if w.group:
        return (grouped_sums(q, w) / a_s * f32(w.scale)).astype(f32)
    acc = q.astype(np.int64) @ w.codes.T.astype(np.int64)         # exact integers
    return (acc.astype(f32) / a_s * f32(w.scale)).astype(f32)


def grouped_sums(q: np.ndarray, w: TernaryWeight) -> np.ndarray:
    """Block-scaled weights (runtime_c/core/kernels/i2sg.h): q int8 [T, K] -> f32 [T, M],
    sum over groups g in order of d[r, g] * (exact integer sum of t * q over group g), the
    products exact in float64 and each addition rounded once, then rounded to float32: the
    value every C variant computes, bit for bit. Groups run over K padded to the i2s block,
    as the kernels do (the padded groups add d = 0)."""
    G = w.group
    T, K = q.shape
    ng = -(-padded_k(K) // G)
    acc = np.zeros((T, w.codes.shape[0]), dtype=np.float64)
    d = np.zeros((w.codes.shape[0], ng), dtype=np.float64)
    d[:, :w.group_scales.shape[1]] = w.group_scales
    qi, ci = q.astype(np.int64), w.codes.astype(np.int64)
    for g in range(ng):
        s = qi[:, g * G:(g + 1) * G] @ ci[:, g * G:(g + 1) * G].T      # empty past K: zeros
        acc = acc + d[:, g][None, :] * s.astype(np.float64)
    return acc.astype(f32)


def yarn_corr_dims(n_dims: int, orig_ctx: int, base: float, beta_fast: float, beta_slow: float):
    """YaRN's correction range (low, high) in pair indices: pair i turns orig_ctx * theta_i / 2pi
    times over the original context; the pairs turning more than beta_fast times keep their
    angle, those turning less than beta_slow times are interpolated, a linear ramp between.
    The pair turning r times is n_dims * ln(orig_ctx / (2 pi r)) / (2 ln base); low is
    rounded down, high up, both clamped to [0, n_dims - 1] (as llama.cpp's ggml does)."""
    def pair(turns):
        return n_dims * math.log(orig_ctx / (turns * 2.0 * math.pi)) / (2.0 * math.log(base))
    return max(0.0, float(math.floor(pair(beta_fast)))), min(n_dims - 1.0, float(math.ceil(pair(beta_slow))))


def rope_frequencies(hp, freq_factors=None):
    """(theta float64 [rope_dim / 2], mscale): pair i at position p turns by p * theta[i], and
    its cos and sin are multiplied by mscale. The one definition of RoPE scaling (model.RopeScaling):
    codegen writes these numbers into the generated C (BN_ROPE_FREQ, BN_ROPE_MSCALE).

      theta_i = base^(-2i/n) / ff_i                      (ff: rope_freqs factors, else 1)
      linear:  theta_i / factor
      yarn:    theta_i * (1/factor * (1 - r_i) + r_i), r_i = ext_factor * (1 - clamp((i - low) / max(0.001, high - low), 0, 1))
               mscale = attn_factor * (1 + 0.1 ln factor) when ext_factor != 0
    """
    n = hp.rope_dim
    i = np.arange(n // 2, dtype=np.float64)
    theta = 1.0 / (float(hp.rope_base) ** (i * 2.0 / n))
    if freq_factors is not None:
        theta = theta / np.asarray(freq_factors, dtype=np.float64)
    s = hp.rope_scaling
    mscale = float(s.attn_factor)
    if s.kind == "linear" or (s.kind == "yarn" and s.ext_factor == 0):
        theta = theta / s.factor
    elif s.kind == "yarn":
        low, high = yarn_corr_dims(n, s.orig_ctx, hp.rope_base, s.beta_fast, s.beta_slow)
        ramp = (1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)) * s.ext_factor
        theta = theta * ((1.0 / s.factor) * (1.0 - ramp) + ramp)
        mscale *= 1.0 + 0.1 * math.log(s.factor)
    return theta, mscale


def rope(x: np.ndarray, pos: np.ndarray, theta: np.ndarray, mscale: float, style: str) -> np.ndarray:
    """x [T, H, D]; rotates the first 2 * len(theta) dims of each head: pair i at position p by
    p * theta[i] (rope_frequencies), cos and sin computed in float64, times mscale, rounded once."""
    half = theta.size
    rope_dim = 2 * half
    ang = pos[:, None].astype(np.float64) * theta[None, :]                  # [T, half]
    cos = (np.cos(ang) * mscale).astype(f32)[:, None, :]
    sin = (np.sin(ang) * mscale).astype(f32)[:, None, :]
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


# Attention: the runtime's numerics (runtime_c/core/kernels/attn.h), so reference and compiled
# model agree to the last bit: dot products summed over d in order, keys in chunks of 64
# with a float exp polynomial, chunks and then segments of 512 merged in order.
ATTN_CHUNK, ATTN_SEG = 64, 512


def attn_exp(x: np.ndarray) -> np.ndarray:
    """e^x for x <= 0 in float32, exactly as attn_exp_f32 in runtime_c/core/kernels/attn.h."""
    x = np.where(x < f32(-87.0), f32(-87.0), x).astype(f32)
    kf = (x * f32(1.44269504) + f32(12582912.0)) - f32(12582912.0)
    r = (x - kf * f32(0.693359375)) - kf * f32(-2.12194440e-4)
    p = np.full_like(x, f32(1.98412698e-4))
    for c in (1.38888889e-3, 8.33333333e-3, 4.16666667e-2, 1.66666667e-1, 0.5, 1.0, 1.0):
        p = p * r + f32(c)
    scale = ((kf.astype(np.int32) + 127) << 23).astype(np.int32).view(f32)
    return (p * scale).astype(f32)


def attn_merge(M, L, O, m, l, o):
    """Merge a later part (m, l, o) into (M, L, O) in place, per row (attn_merge in attn.c)."""
    for i in np.nonzero(m != -np.inf)[0]:
        if M[i] == -np.inf:
            M[i], L[i], O[i] = m[i], l[i], o[i]
            continue
        mn = max(M[i], m[i])
        a, b = attn_exp(np.array([M[i] - mn], f32))[0], attn_exp(np.array([m[i] - mn], f32))[0]
        L[i] = L[i] * a + l[i] * b
        O[i] = O[i] * a + o[i] * b
        M[i] = mn


def attention_head(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos: np.ndarray,
                   ks: np.ndarray | None = None, vs: np.ndarray | None = None) -> np.ndarray:
    """Causal attention of one head. q [T, D] at positions pos; k, v [S, D] (the cache: for
    a q8 cache the codes, with per-position scales ks, vs [S])."""
    T, D = q.shape
    S = k.shape[0]
    inv = f32(1.0) / np.sqrt(f32(D))
    M, L, O = np.full(T, -np.inf, f32), np.zeros(T, f32), np.zeros((T, D), f32)
    for s0 in range(0, S, ATTN_SEG):
        Ms, Ls, Os = np.full(T, -np.inf, f32), np.zeros(T, f32), np.zeros((T, D), f32)
        for c0 in range(s0, min(s0 + ATTN_SEG, S), ATTN_CHUNK):
            c1 = min(c0 + ATTN_CHUNK, S)
            s = np.zeros((T, c1 - c0), f32)
            for d in range(D):                                       # dot products, d in order
                s += q[:, d:d + 1] * k[None, c0:c1, d]
            if ks is not None:
                s = s * ks[None, c0:c1]
            s = s * inv
            valid = np.arange(c0, c1)[None, :] <= pos[:, None]       # causal mask
            mc = np.max(np.where(valid, s, -np.inf), axis=1).astype(f32)
            e = np.where(valid, attn_exp(np.where(valid, s - mc[:, None], f32(-87))), f32(0))
            lc = np.zeros(T, f32)
            oc = np.zeros((T, D), f32)
            p = e * vs[None, c0:c1] if vs is not None else e
            for j in range(c1 - c0):                                 # keys in order
                lc += e[:, j]
                oc += p[:, j:j + 1] * v[c0 + j][None, :]
            attn_merge(Ms, Ls, Os, mc, lc, oc)
        attn_merge(M, L, O, Ms, Ls, Os)
    return (O / L[:, None]).astype(f32)


KV_CHOICES = ("f16", "f32", "q8")


def kv_store(x: np.ndarray, kv: str):
    """x [T, Hkv, D] as the KV cache stores it (runtime_c/core/model.c kv_store): returns
    (values [T, Hkv, D], scales [T, Hkv] or None). f32 as is, f16 rounded to nearest even;
    q8 per position and head: codes round(x / s) (half to even), s = max|x| / 127."""
    if kv == "f32":
        return x, None
    if kv == "f16":
        return x.astype(np.float16).astype(f32), None
    if kv != "q8":
        raise ValueError(f"kv must be one of {KV_CHOICES}, not {kv!r}")
    s = (np.max(np.abs(x), axis=-1) / f32(127)).astype(f32)
    safe = np.where(s > 0, s, f32(1))[..., None]
    codes = np.where(s[..., None] > 0, np.rint((x / safe).astype(f32)), f32(0)).astype(f32)
    return codes, s


def quantize_head_input(xn: np.ndarray):
    """The integer heads' input (runtime_c/core/head.c, head_prepare): xn f32 [T, E], zero-padded
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
    """logits f32 [T, V] of a q8/q6/q4 head, computed as runtime_c/core/head.c does: per 32-block
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


def qk_head_norm(q: np.ndarray, k: np.ndarray, L, eps: float):
    """Qwen3: RMSNorm of every q and k head vector (q [T, H, D], k [T, Hkv, D]) with the
    layer's attn_q_norm / attn_k_norm [D], before RoPE. Other architectures: unchanged."""
    if L.attn_q_norm is None:
        return q, k
    return rmsnorm(q, L.attn_q_norm, eps), rmsnorm(k, L.attn_k_norm, eps)


class Reference:
    """Stateful reference model with a KV cache.

    head, embed: the precision a build stores the head and (untied) embedding in (the build's
    --head/--embed): the reference then computes with exactly those values, and for q8/q6/q4
    heads with the runtime's integer head (quantized_head). kv: the build's --kv; keys and
    values are stored as the runtime's cache stores them (kv_store)."""

    def __init__(self, model: Model, head: str = "auto", embed: str = "auto", kv: str = "f16"):
        self.m = model
        if kv not in KV_CHOICES:
            raise ValueError(f"kv must be one of {KV_CHOICES}, not {kv!r}")
        self.kv = kv
        self.rope_theta, self.rope_mscale = rope_frequencies(model.hp, model.rope_freqs)
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
        self.ks_cache = [np.zeros((0, hp.n_head_kv), f32) for _ in range(hp.n_layer)]   # q8 scales
        self.vs_cache = [np.zeros((0, hp.n_head_kv), f32) for _ in range(hp.n_layer)]
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
            q, k = qk_head_norm(q, k, L, hp.norm_eps)
            q = rope(q, pos, self.rope_theta, self.rope_mscale, hp.rope_style)
            k = rope(k, pos, self.rope_theta, self.rope_mscale, hp.rope_style)
            (kc, ksc), (vc, vsc) = kv_store(k, self.kv), kv_store(v, self.kv)
            K = self.k_cache[li] = np.concatenate([self.k_cache[li], kc], axis=0)   # [S, Hkv, D]
            V = self.v_cache[li] = np.concatenate([self.v_cache[li], vc], axis=0)
            if ksc is not None:
                self.ks_cache[li] = np.concatenate([self.ks_cache[li], ksc], axis=0)
                self.vs_cache[li] = np.concatenate([self.vs_cache[li], vsc], axis=0)
            q8 = self.kv == "q8"
            att = np.empty((T, H, D), f32)
            for hh in range(H):
                g = hh // group
                att[:, hh, :] = attention_head(q[:, hh, :], K[:, g, :], V[:, g, :], pos,
                                               self.ks_cache[li][:, g] if q8 else None,
                                               self.vs_cache[li][:, g] if q8 else None)
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
