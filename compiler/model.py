"""The model description: one plain, format-independent picture of a ternary model.

Every stage after import reads only this: the numpy reference, the packers, the code
generator and the inspect command. Nothing here knows about GGUF.

Conventions
-----------
* Matrices are numpy arrays in math order ``[out, in]`` (row ``o`` produces output ``o``).
* A ternary projection is ``codes`` (int8 in {-1, 0, +1}, shape ``[out, in]``) times one
  float32 ``scale`` per tensor: ``W = codes * scale``.  Any extra per-tensor output scale a
  file carries (llama.cpp's ``blk.N.<proj>.scale``) is folded into ``scale`` at import.
* Float tensors (embeddings, norms, head) are float32 arrays holding exactly the values the
  source file stores; ``*_dtype`` records the source precision so packers can keep it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

ACTIVATIONS = ("relu2", "silu")
ROPE_STYLES = ("neox", "norm")  # neox: rotate halves (HF rotate_half); norm: adjacent pairs
ROPE_SCALINGS = ("none", "linear", "yarn")


@dataclass
class RopeScaling:
    """How the rotation angles of RoPE are stretched for a context longer than the one the
    model was first trained at (GGUF <arch>.rope.scaling.*; the math is reference.rope_frequencies).

    none:   angle = pos * base^(-2i/n) / ff_i              (ff: the rope_freqs factors, else 1)
    linear: the same times 1/factor (position interpolation)
    yarn:   per pair, a mix of the linear and the unscaled angle by YaRN's ramp over the
            pairs that turn fewer than beta_slow..beta_fast times in orig_ctx positions, and
            cos/sin multiplied by 1 + 0.1 ln(factor) (when ext_factor != 0)
    attn_factor multiplies cos/sin in every kind (<arch>.rope.scaling.attn_factor, default 1)."""
    kind: str = "none"          # see ROPE_SCALINGS
    factor: float = 1.0         # context extension factor (llama.cpp's freq_scale is 1/factor)
    orig_ctx: int = 0           # context before the extension (YaRN's correction range); 0: not given
    attn_factor: float = 1.0
    beta_fast: float = 32.0     # YaRN: pairs turning more often than this in orig_ctx are not interpolated
    beta_slow: float = 1.0      # YaRN: pairs turning less often than this are fully interpolated
    ext_factor: float = 1.0     # YaRN: weight of the extrapolated angle in the ramp (0: linear)
    finetuned: Optional[bool] = None  # <arch>.rope.scaling.finetuned (informational)

    def describe(self) -> str:
        if self.kind == "none":
            return "none" + ("" if self.attn_factor == 1.0 else f" (attn_factor {self.attn_factor:g})")
        out = f"{self.kind} x{self.factor:g}"
        if self.kind == "yarn":
            out += (f", original context {self.orig_ctx}, beta_fast {self.beta_fast:g}, "
                    f"beta_slow {self.beta_slow:g}, ext_factor {self.ext_factor:g}")
        elif self.orig_ctx:
            out += f", original context {self.orig_ctx}"
        if self.attn_factor != 1.0:
            out += f", attn_factor {self.attn_factor:g}"
        if self.finetuned is not None:
            out += ", finetuned" if self.finetuned else ", not finetuned"
        return out


@dataclass
class HParams:
    arch: str               # source architecture name as written in the file
    family: str             # "bitnet" (sub-norms) or "llama" (plain LLaMA graph)
    n_vocab: int
    n_embd: int             # E
    n_layer: int
    n_ff: int               # F
    n_head: int
    n_head_kv: int
    head_dim: int           # D: E / n_head unless the file says otherwise (Qwen3: key_length)
    n_ctx_train: int
    rope_base: float
    rope_dim: int           # number of rotated dims per head (<= head_dim)
    rope_style: str         # see ROPE_STYLES
    norm_eps: float
    activation: str         # see ACTIVATIONS
    activation_reason: str  # why that activation was chosen (printed by inspect/build)
    sub_norms: bool         # attn_sub_norm / ffn_sub_norm present (BitNet b1.58 graph)
    tied_head: bool         # logits use token_embd when output.weight is absent
    qk_norm: bool = False   # per-head RMSNorm of q and k before RoPE (Qwen3: attn_q_norm/attn_k_norm [D])
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)

    @property
    def kv_dim(self) -> int:
        return self.n_head_kv * self.head_dim

    @property
    def q_dim(self) -> int:
        """Width of q and of the attention output: n_head * head_dim (= E except for Qwen3-4B-like shapes)."""
        return self.n_head * self.head_dim


class TernaryWeight:
    """One ternary projection: W[r, k] = codes[r, k] * scale (block-scaled: also times
    group_scales[r, k // group]).

    The codes are held at two bits each (code + 1 in {0..3}, four per byte), not as int8:
    a model's projections then take a quarter of the memory while it is imported and
    packed (a 10B model: 2.4 GB instead of 9.5 GB). `codes` decodes them to int8 on first
    use and keeps that array until release(); the build releases each projection once it
    has packed it, so at most one is held unpacked."""

    __slots__ = ("shape", "scale", "source_type", "group", "group_scales", "_packed", "_codes")

    def __init__(self, codes: np.ndarray, scale: float, source_type: str, group: int = 0,
                 group_scales: np.ndarray | None = None):
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype.kind not in "iu":
            raise ValueError(f"ternary codes must be a 2-D integer array, not {codes.dtype} {codes.shape}")
        self.shape = tuple(codes.shape)
        self.scale = scale                  # float32 per-tensor scale
        self.source_type = source_type      # GGUF type name it came from (TQ2_0, I2_S, F16, ...)
        # Block-scaled weights (Q2_0, Q1_0, TQ files with several block scales), run exactly
        # as stored. group 0: one scale for the whole tensor.
        self.group = group
        self.group_scales = group_scales    # f32 [out, in / group], each exactly an fp16 value
        self._packed = _pack_codes2(codes)
        self._codes = None

    @property
    def codes(self) -> np.ndarray:
        """int8 [out, in], values in {-1, 0, 1} (block-scaled: also 2). Read-only."""
        if self._codes is None:
            c = _unpack_codes2(self._packed, self.shape)
            c.flags.writeable = False
            self._codes = c
        return self._codes

    @codes.setter
    def codes(self, codes: np.ndarray) -> None:
        codes = np.asarray(codes)
        if tuple(codes.shape) != self.shape:
            raise ValueError(f"new codes {codes.shape} do not match the weight's shape {self.shape}")
        self._packed = _pack_codes2(codes)
        self._codes = None

    def release(self) -> None:
        """Drop the unpacked int8 codes (they are decoded again on the next use)."""
        self._codes = None

    def __repr__(self) -> str:
        return (f"TernaryWeight(shape={self.shape}, scale={self.scale!r}, source_type={self.source_type!r}, "
                f"group={self.group})")


def _pack_codes2(codes: np.ndarray) -> np.ndarray:
    """int codes in -1..2 -> uint8, four 2-bit fields (code + 1) per byte, row-major."""
    flat = codes.reshape(-1)
    if flat.size and (int(flat.min()) < -1 or int(flat.max()) > 2):
        raise ValueError("ternary codes must lie in -1..2")
    n = flat.size
    u = np.zeros(-(-n // 4) * 4, np.uint8)
    u[:n] = (flat + 1).astype(np.uint8)
    u = u.reshape(-1, 4)
    return u[:, 0] | (u[:, 1] << 2) | (u[:, 2] << 4) | (u[:, 3] << 6)


def _unpack_codes2(packed: np.ndarray, shape: tuple) -> np.ndarray:
    n = int(np.prod(shape))
    out = np.empty((packed.size, 4), np.int8)
    for j in range(4):
        out[:, j] = ((packed >> (2 * j)) & 3).astype(np.int8) - 1
    return out.reshape(-1)[:n].reshape(shape)


@dataclass
class Layer:
    attn_norm: np.ndarray               # f32 [E]
    wq: TernaryWeight                   # [H*D, E]
    wk: TernaryWeight                   # [Ekv, E]
    wv: TernaryWeight                   # [Ekv, E]
    wo: TernaryWeight                   # [E, H*D]
    ffn_norm: np.ndarray                # f32 [E]
    w_gate: TernaryWeight               # [F, E]
    w_up: TernaryWeight                 # [F, E]
    w_down: TernaryWeight               # [E, F]
    attn_sub_norm: Optional[np.ndarray] = None   # f32 [E]  (bitnet family only)
    ffn_sub_norm: Optional[np.ndarray] = None    # f32 [F]  (bitnet family only)
    attn_q_norm: Optional[np.ndarray] = None     # f32 [D]  (qk_norm: Qwen3)
    attn_k_norm: Optional[np.ndarray] = None     # f32 [D]

    def projections(self):
        """(name, weight) pairs in a fixed order, used by packers and reports."""
        return [("attn_q", self.wq), ("attn_k", self.wk), ("attn_v", self.wv),
                ("attn_output", self.wo), ("ffn_gate", self.w_gate),
                ("ffn_up", self.w_up), ("ffn_down", self.w_down)]


@dataclass
class TokenizerData:
    model: str                          # "llama" (SentencePiece), "gpt2" (byte-level BPE), "bert"
                                        # (WordPiece) or "gemma4" (BPE on UTF-8 with "▁" spaces)
    tokens: list                        # list[str], id -> piece text
    scores: Optional[list] = None       # list[float] (SPM)
    token_types: Optional[list] = None  # list[int]: 1 normal, 2 unknown, 3 control, 4 user, 5 unused, 6 byte
    merges: Optional[list] = None       # list[str] "a b" in rank order (BPE)
    pre: Optional[str] = None           # pre-tokenizer name (BPE): "llama-bpe", "gpt-2", "falcon3", ...
    bos_id: int = -1
    eos_id: int = -1
    eot_id: int = -1                    # end of turn (<|eot_id|>), -1 if none
    unk_id: int = -1
    pad_id: int = -1
    add_bos: bool = True
    add_eos: bool = False
    add_space_prefix: bool = True       # SPM: prepend "▁" to the text
    lowercase: Optional[bool] = None    # WordPiece normalizer (None = llama.cpp's default, True)
    strip_accents: Optional[bool] = None  # WordPiece: NFD without marks (None = as lowercase)
    chat_template: Optional[str] = None


@dataclass
class Model:
    hp: HParams
    token_embd: np.ndarray              # f32 [V, E]
    token_embd_dtype: str               # source type name of token_embd
    output_norm: np.ndarray             # f32 [E]
    layers: list                        # list[Layer]
    output: Optional[np.ndarray] = None  # f32 [V, E]; None when the head is tied
    output_dtype: Optional[str] = None
    # Llama 3.1-style per-pair RoPE frequency divisors (GGUF rope_freqs.weight), f32 [rope_dim / 2]
    rope_freqs: Optional[np.ndarray] = None
    tokenizer: Optional[TokenizerData] = None
    source_sha256: str = ""             # hash of the source file
    source_name: str = ""               # base name of the source file
    warnings: list = field(default_factory=list)

    @property
    def head(self) -> np.ndarray:
        """The [V, E] matrix that produces logits (token_embd when tied)."""
        return self.token_embd if self.output is None else self.output

    def block_scaled(self) -> list:
        """The projections that keep per-group scales (run by the i2sg kernels)."""
        return [w for L in self.layers for _, w in L.projections() if w.group]

    def param_counts(self) -> dict:
        tern = sum(w.codes.size for L in self.layers for _, w in L.projections())
        emb = self.token_embd.size
        head = 0 if self.output is None else self.output.size
        norms = self.output_norm.size + sum(
            L.attn_norm.size + L.ffn_norm.size
            + (0 if L.attn_sub_norm is None else L.attn_sub_norm.size)
            + (0 if L.ffn_sub_norm is None else L.ffn_sub_norm.size)
            + (0 if L.attn_q_norm is None else L.attn_q_norm.size + L.attn_k_norm.size)
            for L in self.layers)
        return {"ternary": tern, "embedding": emb, "head": head, "norms": norms,
                "total": tern + emb + head + norms}
