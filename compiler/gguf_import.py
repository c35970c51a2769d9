"""GGUF -> model description.

Reads a validated GGUFFile, decides the architecture family and activation, decodes every
projection into ternary codes plus one scale, and returns a `Model`. Anything it cannot
represent exactly is refused with one line naming the tensor or key, unless the user asked
for `ternarize` (absmean post-training quantization).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
from gguf import GGMLQuantizationType, quants as gguf_quants

from . import quants
from .errors import BitnetError
from .gguf_file import GGUFFile, I2_S, MXFP4, Q1_0, Q2_0, Q2_0_G128, TL1, TL2
from .model import ROPE_SCALINGS, HParams, Layer, Model, RopeScaling, TernaryWeight, TokenizerData

F32, F16, BF16 = GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16
TQ1_0, TQ2_0 = GGMLQuantizationType.TQ1_0, GGMLQuantizationType.TQ2_0
# Block-scaled ternary-ish types: id -> (weights per block, decoder)
BLOCK_TYPES = {
    TQ2_0: (256, quants.decode_tq2_0),
    TQ1_0: (256, quants.decode_tq1_0),
    Q1_0: (128, quants.decode_q1_0),
    Q2_0: (64, lambda raw, n: quants.decode_q2_0(raw, n, 64)),
    Q2_0_G128: (128, lambda raw, n: quants.decode_q2_0(raw, n, 128)),
}

# architecture name -> (family, default activation, sub-norms)
ARCHITECTURES = {
    "bitnet-b1.58": ("bitnet", "relu2", True),
    "bitnet-25": ("bitnet", "relu2", True),
    "bitnet": ("bitnet", "silu", True),
    "llama": ("llama", "silu", False),
    # Qwen3 (Ternary Bonsai): LLaMA graph plus per-head q/k RMSNorm, NEOX RoPE, head dim from key_length
    "qwen3": ("qwen3", "silu", False),
}

# Limits well above any real model, to refuse absurd files before allocating for them.
LIMITS = {"embedding_length": 1 << 16, "block_count": 1024, "feed_forward_length": 1 << 18,
          "attention.head_count": 1024, "context_length": 1 << 24, "vocab": 1 << 22}


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


class Importer:
    def __init__(self, g: GGUFFile, ternarize: bool, no_tokenizer: bool = False):
        self.g = g
        self.ternarize = ternarize
        self.no_tokenizer = no_tokenizer
        self.warnings = []
        self.name = g.name

    def fail(self, msg: str):
        raise BitnetError(f"{self.name}: {msg}")

    # -- metadata ---------------------------------------------------------------------
    def key(self, key: str, kind, default=None, required=False):
        v = self.g.kv.get(key, None)
        if v is None:
            if required:
                self.fail(f"missing metadata key {key!r}; is this a complete model file?")
            return default
        if kind is int:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                self.fail(f"metadata {key!r} should be an integer, found {type(v).__name__}")
            return int(v)
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                self.fail(f"metadata {key!r} should be a number, found {type(v).__name__}")
            v = float(v)
            if not np.isfinite(v):
                self.fail(f"metadata {key!r} is {v}")
            return v
        if kind is str:
            if not isinstance(v, str):
                self.fail(f"metadata {key!r} should be a string, found {type(v).__name__}")
            return v
        if kind is bool:
            if not isinstance(v, (bool, int, np.integer)):
                self.fail(f"metadata {key!r} should be a bool")
            return bool(v)
        return v

    def bounded(self, key, v, lo, hi):
        if not lo <= v <= hi:
            self.fail(f"{key} = {v} is outside the supported range {lo}..{hi}")
        return v

    def hparams(self) -> HParams:
        arch = self.key("general.architecture", str, required=True)
        if arch not in ARCHITECTURES:
            self.fail(f"unsupported architecture {arch!r}; bitnet-aot compiles "
                      f"{', '.join(sorted(ARCHITECTURES))} models with ternary projections")
        family, act, sub = ARCHITECTURES[arch]
        p = arch + "."
        E = self.bounded(p + "embedding_length", self.key(p + "embedding_length", int, required=True), 1, LIMITS["embedding_length"])
        n_layer = self.bounded(p + "block_count", self.key(p + "block_count", int, required=True), 1, LIMITS["block_count"])
        F = self.bounded(p + "feed_forward_length", self.key(p + "feed_forward_length", int, required=True), 1, LIMITS["feed_forward_length"])
        n_head = self.bounded(p + "attention.head_count", self.key(p + "attention.head_count", int, required=True), 1, LIMITS["attention.head_count"])
        n_head_kv = self.bounded(p + "attention.head_count_kv", self.key(p + "attention.head_count_kv", int, default=n_head), 1, n_head)
        head_dim = self.key(p + "attention.key_length", int, default=None)
        if head_dim is None:
            if E % n_head:
                self.fail(f"embedding_length {E} is not divisible by head_count {n_head} "
                          f"(and {p}attention.key_length is not given)")
            head_dim = E // n_head
        if n_head % n_head_kv:
            self.fail(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
        self.bounded(p + "attention.key_length", head_dim, 2, 1024)
        vlen = self.key(p + "attention.value_length", int, default=head_dim)
        if vlen != head_dim:
            self.fail(f"{p}attention.value_length {vlen} differs from key_length {head_dim}; not supported")
        if family == "bitnet" and head_dim * n_head != E:
            self.fail(f"head_count {n_head} x key_length {head_dim} != embedding_length {E}: the BitNet graph's "
                      "attention sub-norm needs them equal")
        if head_dim % 2:
            self.fail(f"head dimension {head_dim} is odd; RoPE needs an even head dimension")
        n_ctx = self.bounded(p + "context_length", self.key(p + "context_length", int, default=2048), 1, LIMITS["context_length"])
        rope_dim = self.key(p + "rope.dimension_count", int, default=head_dim)
        if rope_dim % 2 or not 0 < rope_dim <= head_dim:
            self.fail(f"rope.dimension_count {rope_dim} must be even and at most the head dimension {head_dim}")
        rope_base = self.key(p + "rope.freq_base", float, default=10000.0)
        if rope_base <= 1.0:
            self.fail(f"rope.freq_base {rope_base} must be greater than 1")
        scaling = self.rope_scaling(p, n_ctx)
        eps = self.key(p + "attention.layer_norm_rms_epsilon", float, default=1e-5)
        if not 0 < eps < 1:
            self.fail(f"attention.layer_norm_rms_epsilon {eps} must be in (0, 1)")

        ha = self.key(p + "hidden_activation", str, default=None)
        if ha is not None:
            ha_norm = {"relu2": "relu2", "relu_squared": "relu2", "relu^2": "relu2",
                       "silu": "silu", "swish": "silu"}.get(ha.lower())
            if ha_norm is None:
                self.fail(f"{p}hidden_activation {ha!r} is not supported (relu2 or silu)")
            act, reason = ha_norm, f"{p}hidden_activation = {ha!r}"
        elif arch == "bitnet":
            reason = ("llama.cpp's 'bitnet' architecture computes the FFN with SiLU; set "
                      "bitnet.hidden_activation = 'relu2' for BitNet-b1.58-2B-4T-style models")
        elif family == "bitnet":
            reason = f"architecture {arch} is defined with squared ReLU"
        elif family == "qwen3":
            reason = "Qwen3 graph: SiLU-gated FFN, per-head q/k RMSNorm"
        else:
            reason = "LLaMA graph: SiLU-gated FFN"
        # llama.cpp's converters permute Q/K of 'llama' so that RoPE acts on adjacent pairs;
        # the BitNet converters keep HF's rotate-half layout.
        rope_style = "norm" if family == "llama" else "neox"
        return HParams(arch=arch, family=family, n_vocab=0, n_embd=E, n_layer=n_layer, n_ff=F,
                       n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_ctx_train=n_ctx,
                       rope_base=rope_base, rope_dim=rope_dim, rope_style=rope_style, norm_eps=eps,
                       activation=act, activation_reason=reason, sub_norms=sub,
                       tied_head="output.weight" not in self.g.tensors, qk_norm=family == "qwen3",
                       rope_scaling=scaling)

    def rope_scaling(self, p: str, n_ctx: int) -> RopeScaling:
        """<arch>.rope.scaling.* (llama.cpp's names, gguf-py's constants): every key present is
        used or refused, never skipped. Without a type, a factor means linear (as in llama.cpp)."""
        k = p + "rope.scaling."
        kind = self.key(k + "type", str)
        factor = self.key(k + "factor", float)
        legacy = self.key(p + "rope.scale_linear", float)
        if factor is not None and legacy is not None and factor != legacy:
            self.fail(f"{k}factor {factor:g} and {p}rope.scale_linear {legacy:g} disagree")
        factor = legacy if factor is None else factor
        for key, what in ((k + "alpha", "NTK-aware alpha (XDRoPE)"),
                          (k + "yarn_log_multiplier", "YaRN's mscale_all_dim (DeepSeek-style attention scaling)"),
                          (k + "yarn_attn_factor", "a YaRN attention factor override")):
            if key in self.g.kv:
                self.fail(f"{key} ({what}) is not supported")
        for t in ("rope_factors_long.weight", "rope_factors_short.weight"):
            if t in self.g.tensors:
                self.fail(f"tensor {t!r}: LongRoPE (Phi-3-style) scaling is not supported")
        if kind is None:
            kind = "none" if factor is None else "linear"
        elif kind == "longrope":
            self.fail(f"{k}type 'longrope' (Phi-3-style) is not supported; bitnet-aot implements "
                      f"{', '.join(ROPE_SCALINGS)}")
        elif kind not in ROPE_SCALINGS:
            self.fail(f"{k}type {kind!r} is unknown; bitnet-aot implements {', '.join(ROPE_SCALINGS)}")
        if kind == "none":
            if factor not in (None, 0.0, 1.0):     # llama.cpp reads 0 as "not set"
                self.fail(f"{k}factor {factor:g} contradicts {k}type 'none'")
            factor = 1.0
        elif factor is None:
            factor = 1.0
        elif kind == "yarn" and not 1.0 <= factor <= 1024.0:
            self.fail(f"{k}factor {factor:g} must be in [1, 1024] for yarn scaling")
        elif kind == "linear" and not 0.0 < factor <= 1024.0:
            self.fail(f"{k}factor {factor:g} must be in (0, 1024] for linear scaling")
        orig = self.key(k + "original_context_length", int)
        if orig is not None:
            self.bounded(k + "original_context_length", orig, 1, LIMITS["context_length"])
        elif kind == "yarn":
            orig = n_ctx                             # llama.cpp's default: the trained context
        attn = self.key(k + "attn_factor", float, default=1.0)
        if not 0 < attn <= 16:
            self.fail(f"{k}attn_factor {attn:g} must be in (0, 16]")
        yarn = {name: self.key(k + "yarn_" + name, float) for name in ("beta_fast", "beta_slow", "ext_factor")}
        given = [k + "yarn_" + n for n, v in yarn.items() if v is not None]
        if given and kind != "yarn":
            self.fail(f"{given[0]} is given but {k}type is {kind!r}, not 'yarn'")
        beta_fast = 32.0 if yarn["beta_fast"] is None else yarn["beta_fast"]
        beta_slow = 1.0 if yarn["beta_slow"] is None else yarn["beta_slow"]
        ext = 1.0 if yarn["ext_factor"] is None else yarn["ext_factor"]
        if not 0 < beta_slow < beta_fast <= 1e6:
            self.fail(f"{k}yarn_beta_fast {beta_fast:g} and yarn_beta_slow {beta_slow:g} must satisfy "
                      "0 < beta_slow < beta_fast")
        if not 0 <= ext <= 1:
            self.fail(f"{k}yarn_ext_factor {ext:g} must be in [0, 1]")
        finetuned = self.key(k + "finetuned", bool)
        return RopeScaling(kind=kind, factor=float(factor), orig_ctx=int(orig or 0), attn_factor=attn,
                           beta_fast=beta_fast, beta_slow=beta_slow, ext_factor=ext, finetuned=finetuned)

    def rope_freqs(self, hp: HParams):
        """Llama 3.1-style rope_freqs.weight [rope_dim / 2]: pair i's frequency is divided by it."""
        if "rope_freqs.weight" not in self.g.tensors:
            return None
        a, _ = self.floats("rope_freqs.weight", (hp.rope_dim // 2,))
        if not np.all(a > 0):
            self.fail(f"tensor 'rope_freqs.weight' holds {float(a[a <= 0][0]):g}; its factors must be positive")
        return a.astype(np.float32)

    # -- tensors ----------------------------------------------------------------------
    def info(self, name: str, shape: tuple):
        t = self.g.tensors.get(name)
        if t is None:
            self.fail(f"missing tensor {name!r}")
        if t.shape != tuple(shape):
            self.fail(f"tensor {name!r} has shape {list(t.ne)} (ggml order), expected {list(reversed(shape))}")
        return t

    def floats(self, name: str, shape: tuple) -> tuple:
        """Any float or llama.cpp-quantized tensor -> (f32 array in numpy order, type name)."""
        t = self.info(name, shape)
        raw = self.g.raw(name)
        if t.ggml_type == F32:
            a = raw.view("<f4").astype(np.float32)
        elif t.ggml_type == F16:
            a = raw.view("<f2").astype(np.float32)
        elif t.ggml_type == BF16:
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif t.ggml_type == I2_S and t.type_name == "I2_S":
            self.fail(f"tensor {name!r} is {t.type_name}, which only ternary projections may use")
        elif t.ggml_type in (I2_S, TL1):
            self.fail(f"tensor {name!r} is {t.type_name} ({t.reading_reason}); re-quantize it with a current tool")
        elif t.ggml_type in (Q1_0, Q2_0, Q2_0_G128):
            qk, dec = BLOCK_TYPES[t.ggml_type]
            codes, d = dec(raw, t.n_elements)
            a = (codes.reshape(-1, qk).astype(np.float32) * d[:, None]).reshape(-1)
        else:
            try:
                a = gguf_quants.dequantize(raw, GGMLQuantizationType(t.ggml_type)).astype(np.float32)
            except (NotImplementedError, ValueError, KeyError):
                self.fail(f"tensor {name!r} has type {t.type_name}, which bitnet-aot cannot decode; "
                          "re-quantize it as F16, F32, BF16 or Q8_0")
        a = a.reshape(shape)
        if not np.all(np.isfinite(a)):
            self.fail(f"tensor {name!r} contains NaN or infinite values")
        return a, t.type_name

    def ternary(self, name: str, shape: tuple, extra_scale: float = 1.0) -> TernaryWeight:
        t = self.info(name, shape)
        n = t.n_elements
        raw = self.g.raw(name)
        tn = t.type_name
        if t.ggml_type == TL1 or (t.ggml_type == I2_S and tn != "I2_S"):
            self.fail(f"tensor {name!r} is {tn} ({t.reading_reason}), not a ternary layout; "
                      "convert the model to I2_S, TQ2_0 or TQ1_0 instead")
        if t.ggml_type == I2_S:
            try:
                codes, scales = quants.decode_i2_s(raw, n)
            except ValueError as e:
                self.fail(f"tensor {name!r}: {e}")
            if not np.isfinite(scales[0]):
                self.fail(f"tensor {name!r} has a NaN or infinite scale")
            scale = float(scales[0])
            if scale <= 0:
                if np.any(codes):
                    self.fail(f"tensor {name!r} has scale {scale}; a ternary scale must be positive")
                scale = 1.0
            return TernaryWeight(codes.reshape(shape), float(np.float32(scale * extra_scale)), tn)
        if t.ggml_type in BLOCK_TYPES:
            qk, dec = BLOCK_TYPES[t.ggml_type]
            if shape[1] % qk:
                self.fail(f"tensor {name!r} ({tn}) has rows of {shape[1]} weights, not a multiple of its "
                          f"{qk}-weight blocks; the file is damaged")
            codes, block_scale = dec(raw, n)
            blocks = codes.reshape(-1, qk)
            if t.ggml_type in (TQ1_0, TQ2_0) and np.any(blocks.max(axis=1) > 1):
                self.fail(f"tensor {name!r} holds invalid TQ codes (outside -1..1)")
            if not np.all(np.isfinite(block_scale)):
                self.fail(f"tensor {name!r} has a NaN or infinite scale")
            # One scale per tensor: every block holding a non-zero code must carry the same d.
            used = np.any(blocks != 0, axis=1)
            ds = np.unique(block_scale[used])
            if ds.size > 1 or np.any(codes == 2):
                # Several block scales, or Q2_0's fourth level (+2): not one ternary tensor. Run
                # it exactly as stored with the block-scaled kernels (kernels/i2sg.h).
                return TernaryWeight(codes.reshape(shape), float(np.float32(extra_scale)),
                                     tn + "/block-scaled", group=qk,
                                     group_scales=block_scale.reshape(shape[0], shape[1] // qk))
            scale = float(ds[0]) if ds.size else 1.0
            if scale < 0 and t.ggml_type == Q1_0:
                codes, scale = -codes, -scale      # Q1_0 stores signs: a negative d flips them all
            if scale <= 0:
                if np.any(codes):
                    self.fail(f"tensor {name!r} has scale {scale}; a ternary scale must be positive")
                scale = 1.0
            return TernaryWeight(codes.reshape(shape), float(np.float32(scale * extra_scale)), tn)

        w, tn = self.floats(name, shape)
        got = quants.ternary_from_floats(w)
        if got is None:
            if not self.ternarize:
                self.fail(f"tensor {name!r} ({tn}) is not ternary (not one scale times -1/0/+1); "
                          "pass --ternarize to quantize it post-training (quality will suffer)")
            return self._ternarize(name, w, tn, extra_scale)
        codes, scale = got
        return TernaryWeight(codes, float(np.float32(scale * extra_scale)), tn)

    def _ternarize(self, name, w, tn, extra_scale):
        codes, scale = quants.absmean_ternarize(w)
        if not self.warnings or "--ternarize" not in self.warnings[-1]:
            self.warnings.append("--ternarize: quantizing non-ternary projections post-training "
                                 "(absmean); expect a large loss of quality")
        return TernaryWeight(codes, float(np.float32(scale * extra_scale)), tn + "->ternarized")

    def out_scale(self, name: str) -> float:
        """llama.cpp 'bitnet' files may carry blk.N.<proj>.scale [1] tensors."""
        if name not in self.g.tensors:
            return 1.0
        a, _ = self.floats(name, (1,))
        return float(a[0])

    # -- tokenizer ----------------------------------------------------------------------
    def tokenizer(self, n_vocab: int):
        kv = self.g.kv
        model = kv.get("tokenizer.ggml.model")
        if model is None:
            self.warnings.append("no tokenizer in the file: the binary will take and print token ids")
            return None
        if not isinstance(model, str) or model not in ("llama", "gpt2", "bert", "gemma4"):
            self.fail(f"tokenizer.ggml.model {model!r} is not supported (llama = SentencePiece, gpt2 = byte-level BPE, "
                      "bert = WordPiece, gemma4 = BPE on UTF-8)")
        tokens = kv.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens:
            self.fail("tokenizer.ggml.tokens is missing or not a list of strings")
        if len(tokens) > n_vocab:
            self.fail(f"the tokenizer has {len(tokens)} tokens but the embedding only {n_vocab} rows")

        def arr(key, n, dtype):
            v = kv.get(key)
            if v is None:
                return None
            if not isinstance(v, np.ndarray) or v.size != n:
                self.fail(f"{key} should be a numeric array of {n} entries")
            return [dtype(x) for x in v]

        scores = arr("tokenizer.ggml.scores", len(tokens), float)
        types = arr("tokenizer.ggml.token_type", len(tokens), int)
        merges = kv.get("tokenizer.ggml.merges")
        if merges is not None and not isinstance(merges, list):
            self.fail("tokenizer.ggml.merges should be a list of strings")
        if model in ("gpt2", "gemma4") and not merges:
            self.fail(f"a {model} (BPE) tokenizer needs tokenizer.ggml.merges")

        def tok_id(key):
            v = kv.get(key)
            if v is None:
                return -1
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < len(tokens):
                self.fail(f"{key} = {v!r} is not a token id of this vocabulary")
            return int(v)

        pre = kv.get("tokenizer.ggml.pre")
        if pre is not None and not isinstance(pre, str):
            self.fail("tokenizer.ggml.pre should be a string")
        for flag in ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix",
                     "tokenizer.ggml.normalizer.lowercase", "tokenizer.ggml.normalizer.strip_accents"):
            if flag in kv and not isinstance(kv[flag], bool):
                self.fail(f"{flag} should be a bool")
        if model == "gpt2" and pre is None:
            pre = "llama-bpe" if self.g.kv.get("general.architecture", "").startswith("bitnet") else "gpt-2"
            self.warnings.append(f"tokenizer.ggml.pre is missing; using the {pre!r} pre-tokenizer")
        eot = tok_id("tokenizer.ggml.eot_token_id")
        if eot < 0 and "<|eot_id|>" in tokens:
            eot = tokens.index("<|eot_id|>")
        tmpl = kv.get("tokenizer.chat_template")
        bos, eos = tok_id("tokenizer.ggml.bos_token_id"), tok_id("tokenizer.ggml.eos_token_id")
        add_bos = bool(kv.get("tokenizer.ggml.add_bos_token",
                              model == "llama" or pre in ("llama-bpe", "llama3", "llama-v3", "falcon3")))
        add_eos = bool(kv.get("tokenizer.ggml.add_eos_token", False))
        if model == "bert":
            # WordPiece (llama.cpp): [CLS] text [SEP] with the special tokens added
            cls, sep = tok_id("tokenizer.ggml.cls_token_id"), tok_id("tokenizer.ggml.seperator_token_id")
            bos = cls if cls >= 0 else bos
            eos = sep if sep >= 0 else eos
            add_bos, add_eos = bos >= 0, eos >= 0
        if model == "gemma4" and not add_bos:
            add_bos = True   # as llama.cpp: Gemma 4 always starts with <bos>
            self.warnings.append("tokenizer.ggml.add_bos_token is false; gemma4 models need BOS, adding it")
        return TokenizerData(
            model=model, tokens=tokens, scores=scores, token_types=types, merges=merges, pre=pre,
            bos_id=bos, eos_id=eos,
            eot_id=eot, unk_id=tok_id("tokenizer.ggml.unknown_token_id"),
            pad_id=tok_id("tokenizer.ggml.padding_token_id"),
            # Without the key, llama.cpp adds BOS for SentencePiece and the LLaMA-3 family only.
            add_bos=add_bos, add_eos=add_eos,
            add_space_prefix=bool(kv.get("tokenizer.ggml.add_space_prefix", model == "llama")),
            lowercase=kv.get("tokenizer.ggml.normalizer.lowercase"),
            strip_accents=kv.get("tokenizer.ggml.normalizer.strip_accents"),
            chat_template=tmpl if isinstance(tmpl, str) else None)

    # -- the whole model ----------------------------------------------------------------
    def model(self) -> Model:
        hp = self.hparams()
        E, F, Ekv, Eq, D = hp.n_embd, hp.n_ff, hp.kv_dim, hp.q_dim, hp.head_dim
        te = self.g.tensors.get("token_embd.weight")
        if te is None:
            self.fail("missing tensor 'token_embd.weight'")
        if len(te.ne) != 2 or te.ne[0] != E:
            self.fail(f"token_embd.weight has shape {list(te.ne)}, expected [{E}, n_vocab]")
        V = self.bounded("vocabulary size", te.ne[1], 1, LIMITS["vocab"])
        hp.n_vocab = V
        embd, embd_t = self.floats("token_embd.weight", (V, E))
        out, out_t = (None, None)
        if not hp.tied_head:
            out, out_t = self.floats("output.weight", (V, E))
        out_norm, _ = self.floats("output_norm.weight", (E,))
        rope_freqs = self.rope_freqs(hp)
        layers = []
        for i in range(hp.n_layer):
            b = f"blk.{i}."

            def tern(proj, shape):
                return self.ternary(b + proj + ".weight", shape, self.out_scale(b + proj + ".scale"))

            L = Layer(
                attn_norm=self.floats(b + "attn_norm.weight", (E,))[0],
                wq=tern("attn_q", (Eq, E)), wk=tern("attn_k", (Ekv, E)), wv=tern("attn_v", (Ekv, E)),
                wo=tern("attn_output", (E, Eq)),
                ffn_norm=self.floats(b + "ffn_norm.weight", (E,))[0],
                w_gate=tern("ffn_gate", (F, E)), w_up=tern("ffn_up", (F, E)), w_down=tern("ffn_down", (E, F)))
            if hp.sub_norms:
                L.attn_sub_norm = self.floats(b + "attn_sub_norm.weight", (E,))[0]
                L.ffn_sub_norm = self.floats(b + "ffn_sub_norm.weight", (F,))[0]
            if hp.qk_norm:
                L.attn_q_norm = self.floats(b + "attn_q_norm.weight", (D,))[0]
                L.attn_k_norm = self.floats(b + "attn_k_norm.weight", (D,))[0]
            layers.append(L)
        if self.no_tokenizer:
            tok = None
            self.warnings.append("--no-tokenizer: the binary takes and prints token ids")
        else:
            tok = self.tokenizer(V)
        return Model(hp=hp, token_embd=embd, token_embd_dtype=embd_t, output_norm=out_norm,
                     layers=layers, output=out, output_dtype=out_t, tokenizer=tok, rope_freqs=rope_freqs,
                     source_name=self.name, warnings=self.warnings)


def load_gguf(path: str, ternarize: bool = False, hash_file: bool = True, no_tokenizer: bool = False) -> Model:
    """Read a GGUF file into a Model, or raise BitnetError with a one-line reason.
    no_tokenizer: leave the file's tokenizer out (it is then not even validated)."""
    g = GGUFFile(path)
    try:
        m = Importer(g, ternarize, no_tokenizer).model()
    except MemoryError:
        raise BitnetError(f"{os.path.basename(path)}: not enough memory to import this model") from None
    finally:
        try:
            g.close()
        except BufferError:
            pass  # a view is still referenced (by a traceback); the map closes when it is freed
    if hash_file:
        m.source_sha256 = file_sha256(path)
    return m
