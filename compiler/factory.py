"""Test-model factory: small (or 2B-4T-sized) random-weight GGUF files for every accepted
architecture x projection type, with a valid tokenizer, so every path can be tested
without downloading a model.

Weights are ternary with a realistic zero fraction (about 1/3) and a per-tensor scale that
keeps activations in a sane range; norms are near 1 and embeddings N(0, 1) so logits are
not degenerate.
"""
from __future__ import annotations

import numpy as np

from . import quants
from .gguf_file import I2_S, Q1_0, Q2_0, Q2_0_G128, T_F32, T_U32, TensorToWrite, write_gguf
from .tokenizer_pack import bytes_to_unicode  # GPT-2 byte <-> char map, one definition

from gguf import GGMLQuantizationType as Q

ARCHS = ("bitnet-b1.58", "bitnet-25", "bitnet", "llama", "qwen3")
PROJ_TYPES = ("tq2_0", "tq1_0", "i2_s", "q2_0", "q2_0_g128", "q1_0", "f16", "f32", "bf16")
# Q1_0 stores signs only (+d / -d): its test models have no zero weights.
BINARY_TYPES = ("q1_0",)
FLOAT_TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16}

# A short built-in text: the BPE vocabulary of test models is learned from it.
_TEXT = (
    "Once upon a time there was a little model that learned to read. It read the words of "
    "the world, one token at a time, and it wrote them back with care. The quick brown fox "
    "jumps over the lazy dog; 0123456789 numbers, commas, and periods. What is machine "
    "learning? It is the study of programs that improve with data. Hello, world! "
)


def _bf16_bytes(a: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def float_tensor_bytes(a: np.ndarray, t: str) -> np.ndarray:
    if t == "f32":
        return np.ascontiguousarray(a, dtype="<f4")
    if t == "f16":
        return np.ascontiguousarray(a, dtype="<f2")
    if t == "bf16":
        return _bf16_bytes(a)
    raise ValueError(t)


def _place_specials(kv: dict, n_vocab: int, specials: dict, ids: dict) -> dict:
    """Put special tokens at their published ids (those below n_vocab); the other tokens keep
    their order in the remaining slots. ids: {"bos"/"eos"/"eot": published id}."""
    want = {int(i): t for i, t in specials.items() if int(i) < n_vocab}
    toks = kv["tokenizer.ggml.tokens"]
    types = [int(t) for t in kv["tokenizer.ggml.token_type"]]
    scores = kv.get("tokenizer.ggml.scores")
    scores = None if scores is None else [float(s) for s in scores]
    old = {k: toks[kv[f"tokenizer.ggml.{k}_token_id"]] for k in ("bos", "eos", "eot", "unknown")
           if f"tokenizer.ggml.{k}_token_id" in kv}
    if not want:
        return kv
    placed = set(want.values())
    rest = [(t, ty, None if scores is None else scores[i]) for i, (t, ty) in enumerate(zip(toks, types))
            if t not in placed and ty != 5 and not t.startswith("<|reserved_")]
    filler_type = 5 if scores is not None else 3
    out, it = [], iter(rest)
    for i in range(n_vocab):
        if i in want:
            t = want[i]
            out.append((t, 2 if t == "<unk>" else 3, 0.0))
        else:
            out.append(next(it, (f"<|reserved_{i}|>", filler_type, -1e4)))
    kv = dict(kv)
    kv["tokenizer.ggml.tokens"] = [t for t, _, _ in out]
    kv["tokenizer.ggml.token_type"] = np.array([ty for _, ty, _ in out], dtype=np.int32)
    if scores is not None:
        kv["tokenizer.ggml.scores"] = np.array([s for _, _, s in out], dtype=np.float32)
    index = {t: i for i, (t, _, _) in enumerate(out)}
    for k, text in old.items():
        kv[f"tokenizer.ggml.{k}_token_id"] = index[text] if text in index else None
    for k, i in ids.items():
        if i is not None and 0 <= i < n_vocab and i in want:
            kv[f"tokenizer.ggml.{k}_token_id"] = i
        elif i is not None and i < 0:
            kv[f"tokenizer.ggml.{k}_token_id"] = None
    return {k: v for k, v in kv.items() if v is not None}


def _bpe_vocab(n_vocab: int, printable: bool = False):
    """Byte-level BPE vocabulary learned from _TEXT: 256 byte symbols, merges, 3 specials.
    The rest up to n_vocab are reserved control tokens, or with printable=True normal tokens
    that print " t<id>" (a random model's samples then show as text: the load benchmark)."""
    b2u = bytes_to_unicode()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    n_merges = max(0, n_vocab - 256 - len(specials))
    words = [[b2u[b] for b in (w if i == 0 else " " + w).encode()] for i, w in enumerate(_TEXT.split(" ")) if w]
    tokens = [b2u[b] for b in range(256)]
    merges = []
    have = set(tokens)
    while len(merges) < n_merges:
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        (a, b), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        if a + b not in have:
            tokens.append(a + b)
            have.add(a + b)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    tokens += specials
    types = [1] * (len(tokens) - len(specials)) + [3] * len(specials)
    while len(tokens) < n_vocab:
        tokens.append(f"\u0120t{len(tokens)}" if printable else f"<|reserved_{len(tokens)}|>")
        types.append(1 if printable else 3)
    ids = {t: i for i, t in enumerate(tokens)}
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
            "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": ids["<|begin_of_text|>"],
            "tokenizer.ggml.eos_token_id": ids["<|end_of_text|>"],
            "tokenizer.ggml.eot_token_id": ids["<|eot_id|>"],
            "tokenizer.ggml.add_bos_token": True}


def _spm_vocab(n_vocab: int):
    """SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte pieces, then pieces of _TEXT
    (words with the '▁' marker, then characters), scored so longer pieces win."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    pieces = []
    for w in _TEXT.split():
        w = "▁" + w
        for n in range(2, len(w) + 1):
            if w[:n] not in pieces:
                pieces.append(w[:n])
    chars = sorted(set(_TEXT.replace(" ", "▁")))
    pieces = [c for c in chars] + pieces
    seen = set(tokens)
    for p in pieces:
        if len(tokens) >= n_vocab:
            break
        if p in seen:
            continue
        seen.add(p)
        tokens.append(p)
        types.append(1)
        scores.append(-float(len(tokens)) / 1000.0 + (len(p) * 0.5 if len(p) > 1 else -5.0))
    while len(tokens) < n_vocab:
        tokens.append(f"<unused{len(tokens)}>")
        types.append(5)
        scores.append(-1e4)
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
            "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_space_prefix": True}


BLOCK_SIZES = {"tq2_0": 256, "tq1_0": 256, "q1_0": 128, "q2_0": 64, "q2_0_g128": 128}


def ternary_tensor(name: str, codes: np.ndarray, scale: float, ptype: str, block_scales=None) -> TensorToWrite:
    """A [out, in] ternary matrix written in the requested GGUF type. block_scales: for the
    block types, one scale per block (BLOCK_SIZES) instead of `scale` everywhere."""
    out_dim, in_dim = codes.shape
    flat = codes.reshape(-1)
    ne = (in_dim, out_dim)

    def per_block(qk):
        return np.full(flat.size // qk, scale, np.float32) if block_scales is None else block_scales
    if ptype == "tq2_0":
        return TensorToWrite(name, Q.TQ2_0, ne, quants.encode_tq2_0(flat, per_block(256)))
    if ptype == "tq1_0":
        return TensorToWrite(name, Q.TQ1_0, ne, quants.encode_tq1_0(flat, per_block(256)))
    if ptype == "i2_s":
        return TensorToWrite(name, I2_S, ne, quants.encode_i2_s(flat, scale))
    if ptype == "q1_0":
        return TensorToWrite(name, Q1_0, ne, quants.encode_q1_0(np.where(flat == 0, 1, flat), per_block(128)))
    if ptype in ("q2_0", "q2_0_g128"):
        qk = 64 if ptype == "q2_0" else 128
        return TensorToWrite(name, Q2_0 if qk == 64 else Q2_0_G128, ne,
                             quants.encode_q2_0(flat, per_block(qk), qk))
    return TensorToWrite(name, FLOAT_TYPES[ptype], ne, float_tensor_bytes(codes.astype(np.float32) * np.float32(scale), ptype))


def make_test_model(path: str, arch: str = "bitnet-b1.58", proj_type: str = "tq2_0", *,
                    n_embd: int = 256, n_layer: int = 2, n_ff: int = 512, n_head: int = 4,
                    n_head_kv: int = 2, n_vocab: int = 512, n_ctx: int = 256,
                    tokenizer: str = "spm", embd_type: str = "f16", tied: bool = None,
                    rope_base: float = 10000.0, hidden_activation: str = None,
                    proj_scales: bool = False, block_scales: bool = False, seed: int = 0,
                    zero_fraction: float = 0.35,
                    head_dim: int = None, norm_eps: float = 1e-5, pre: str = None,
                    specials: dict = None, special_ids: dict = None, name: str = None,
                    rope_scaling: str = None, rope_factor: float = None, rope_orig_ctx: int = None,
                    rope_freqs=None, extra_kv: dict = None, extra_tensors: list = None) -> str:
    """Write a random-weight GGUF model and return its path.

    arch: one of ARCHS. proj_type: one of PROJ_TYPES (TQ types need n_embd and n_ff to be
    multiples of 256; I2_S multiples of 128). tokenizer: "spm" or "bpe".
    tied: tied head (default: True for bitnet archs, False for llama).
    proj_scales: write llama.cpp 'bitnet'-style blk.N.<proj>.scale tensors.
    block_scales: block types only: a different fp16 scale in every block (as a quantizer
        writes a model that was not trained with one scale per tensor), and for Q2_0 some
        weights at its fourth level, +2: the block-scaled path (kernels/i2sg.h).
    head_dim: D when it is not n_embd / n_head (written as <arch>.attention.key_length).
    pre: the BPE pre-tokenizer name written as tokenizer.ggml.pre (default llama-bpe).
    specials / special_ids: {id: text} placed at those ids, {"bos"/"eos"/"eot": id}.
    rope_scaling / rope_factor / rope_orig_ctx: written as <arch>.rope.scaling.type / .factor /
        .original_context_length (each only when given).
    rope_freqs: "llama3" writes a rope_freqs.weight tensor of Llama 3.1's factors
        (llama3_rope_freqs: factor rope_factor or 8, original context rope_orig_ctx or 32; those
        two are then not written as scaling keys unless rope_scaling is given), or an array of
        rope_dim / 2 factors written as is.
    extra_kv / extra_tensors: metadata (and TensorToWrite tensors) written as given, after
        everything else (tests of malformed values).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}")
    if proj_type not in PROJ_TYPES:
        raise ValueError(f"proj_type must be one of {PROJ_TYPES}")
    if block_scales and proj_type not in BLOCK_SIZES:
        raise ValueError(f"--block-scales needs a block type ({', '.join(BLOCK_SIZES)}), not {proj_type}")
    rng = np.random.default_rng(seed)
    if proj_type in BINARY_TYPES:
        zero_fraction = 0.0
    if tied is None:
        tied = arch not in ("llama", "qwen3")
    explicit_head_dim = head_dim is not None
    head_dim = head_dim or n_embd // n_head
    kv_dim = head_dim * n_head_kv
    q_dim = head_dim * n_head
    p = arch + "."
    kv = {"general.architecture": arch, "general.name": name or f"bitnet-aot test model ({arch}, {proj_type})",
          p + "context_length": n_ctx, p + "embedding_length": n_embd, p + "block_count": n_layer,
          p + "feed_forward_length": n_ff, p + "attention.head_count": n_head,
          p + "attention.head_count_kv": n_head_kv, p + "rope.freq_base": float(rope_base),
          p + "rope.dimension_count": head_dim, p + "attention.layer_norm_rms_epsilon": float(norm_eps),
          p + "vocab_size": n_vocab}
    if rope_scaling is not None:
        kv[p + "rope.scaling.type"] = rope_scaling
    # with rope_freqs="llama3" the factor and original context are the factors' parameters (as in
    # Llama 3.1 files, no scaling keys), unless a scaling type is given too
    llama3_only = isinstance(rope_freqs, str) and rope_scaling is None
    if rope_factor is not None and not llama3_only:
        kv[p + "rope.scaling.factor"] = float(rope_factor)
    if rope_orig_ctx is not None and not llama3_only:
        kv[p + "rope.scaling.original_context_length"] = int(rope_orig_ctx)
    if explicit_head_dim or arch == "qwen3":
        kv[p + "attention.key_length"] = head_dim
        kv[p + "attention.value_length"] = head_dim
    if hidden_activation:
        kv[p + "hidden_activation"] = hidden_activation
    if tokenizer == "spm":
        kv.update(_spm_vocab(n_vocab))
    elif tokenizer in ("bpe", "bpe-printable"):
        kv.update(_bpe_vocab(n_vocab, printable=tokenizer == "bpe-printable"))
        if pre:
            kv["tokenizer.ggml.pre"] = pre
    elif tokenizer is not None:
        raise ValueError("tokenizer must be 'spm', 'bpe' or None")
    if tokenizer is not None and specials:
        kv = _place_specials(kv, n_vocab, specials, special_ids or {})
    kv.update(extra_kv or {})

    def norm(n):
        return lambda: float_tensor_bytes((1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32), "f32")

    def tern(name, out_dim, in_dim):
        def make():
            r = rng.random((out_dim, in_dim))
            codes = np.where(r < zero_fraction, 0, np.where(rng.random((out_dim, in_dim)) < 0.5, -1, 1)).astype(np.int8)
            # scale ~ 1/sqrt(fan-in * non-zero fraction) keeps outputs O(1)
            scale = float(np.float16(1.0 / np.sqrt(in_dim * (1 - zero_fraction)) * (0.8 + 0.4 * rng.random())))
            if not block_scales:
                return ternary_tensor(name, codes, scale, proj_type).data
            if proj_type.startswith("q2_0"):
                codes = np.where(rng.random(codes.shape) < 0.03, 2, codes).astype(np.int8)
            nb = codes.size // BLOCK_SIZES[proj_type]
            ds = (scale * (0.5 + rng.random(nb))).astype(np.float16).astype(np.float32)
            return ternary_tensor(name, codes, scale, proj_type, ds).data
        t0 = ternary_tensor(name, np.zeros((out_dim, in_dim), np.int8), 1.0, proj_type)
        return TensorToWrite(name, t0.ggml_type, t0.ne, make)

    def embd(name):
        return TensorToWrite(name, FLOAT_TYPES[embd_type], (n_embd, n_vocab),
                             lambda: float_tensor_bytes(0.25 * rng.standard_normal((n_vocab, n_embd), dtype=np.float32), embd_type))

    tensors = [embd("token_embd.weight"),
               TensorToWrite("output_norm.weight", Q.F32, (n_embd,), norm(n_embd))]
    if not tied:
        tensors.append(embd("output.weight"))
    if rope_freqs is not None:
        if isinstance(rope_freqs, str):
            if rope_freqs != "llama3":
                raise ValueError(f"rope_freqs must be 'llama3' or an array, not {rope_freqs!r}")
            rope_freqs = llama3_rope_freqs(head_dim, rope_base, rope_factor or 8.0, rope_orig_ctx or 32)
        ff = np.ascontiguousarray(rope_freqs, dtype="<f4")
        tensors.append(TensorToWrite("rope_freqs.weight", Q.F32, (ff.size,), ff))
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [
            TensorToWrite(b + "attn_norm.weight", Q.F32, (n_embd,), norm(n_embd)),
            tern(b + "attn_q.weight", q_dim, n_embd),
            tern(b + "attn_k.weight", kv_dim, n_embd),
            tern(b + "attn_v.weight", kv_dim, n_embd),
            tern(b + "attn_output.weight", n_embd, q_dim),
            TensorToWrite(b + "ffn_norm.weight", Q.F32, (n_embd,), norm(n_embd)),
            tern(b + "ffn_gate.weight", n_ff, n_embd),
            tern(b + "ffn_up.weight", n_ff, n_embd),
            tern(b + "ffn_down.weight", n_embd, n_ff),
        ]
        if arch == "qwen3":
            tensors += [TensorToWrite(b + "attn_q_norm.weight", Q.F32, (head_dim,), norm(head_dim)),
                        TensorToWrite(b + "attn_k_norm.weight", Q.F32, (head_dim,), norm(head_dim))]
        elif arch != "llama":
            tensors += [TensorToWrite(b + "attn_sub_norm.weight", Q.F32, (n_embd,), norm(n_embd)),
                        TensorToWrite(b + "ffn_sub_norm.weight", Q.F32, (n_ff,), norm(n_ff))]
        if proj_scales:
            for proj in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
                tensors.append(TensorToWrite(f"{b}{proj}.scale", Q.F32, (1,),
                                             lambda: np.array([0.5 + rng.random()], dtype="<f4")))
    write_gguf(path, kv, tensors + list(extra_tensors or []))
    return path


def llama3_rope_freqs(rope_dim: int, base: float, factor: float, orig_ctx: int,
                      low_freq_factor: float = 1.0, high_freq_factor: float = 4.0) -> np.ndarray:
    """Llama 3.1's RoPE frequency divisors, one per rotated pair (what converters store as
    rope_freqs.weight): pairs whose wavelength 2 pi / theta is shorter than orig_ctx /
    high_freq_factor keep their frequency (1), longer than orig_ctx / low_freq_factor are
    slowed by `factor`, and between the two the divisor moves smoothly from 1 to factor."""
    theta = base ** (-np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim)
    wavelen = 2 * np.pi / theta
    smooth = (orig_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < orig_ctx / high_freq_factor, 1.0,
                   np.where(wavelen > orig_ctx / low_freq_factor, factor, mid))
    return out.astype(np.float32)


# Shapes of BitNet-b1.58-2B-4T, for benchmarks.
SHAPES_2B4T = dict(n_embd=2560, n_layer=30, n_ff=6912, n_head=20, n_head_kv=5, n_vocab=128256, n_ctx=4096,
                   rope_base=500000.0)


_TOKENIZERS = {"llama3": ("bpe", "llama-bpe"), "falcon3": ("bpe", "falcon3"), "qwen2": ("bpe", "qwen2"),
               "llama-spm": ("spm", None)}


def shape_proj_type(row: dict) -> str:
    """The densest ternary GGUF type the shape's rows allow (TQ2_0 needs rows of 256)."""
    if row["n_embd"] % 256 == 0 and row["n_ff"] % 256 == 0 and (row["n_head"] * row["head_dim"]) % 256 == 0:
        return "tq2_0"
    return "i2_s"


def make_shape_model(path: str, name: str, proj_type: str = None, *, n_layer: int = None,
                     n_vocab: int = None, n_ctx: int = None, seed: int = 0, embd_type: str = "f16",
                     block_scales: bool = False, rope_scaling: str = None, rope_factor: float = None,
                     rope_orig_ctx: int = None, rope_freqs=None) -> str:
    """A random-weight GGUF with the exact shape of the published model `name`
    (compiler/configs.py): widths, heads, head dim, vocabulary, RoPE, tied or untied head,
    special token ids. n_layer / n_vocab / n_ctx override the published values (tests use
    fewer layers and a small vocabulary at the exact widths). The RoPE scaling keys are the
    published ones (the row's rope_yarn) unless rope_scaling / rope_factor / rope_orig_ctx /
    rope_freqs are given."""
    from . import configs
    row = configs.get(name)
    tok, pre = _TOKENIZERS[row["tokenizer"]]
    ids = {"bos": row["bos"], "eos": row["eos"], "eot": row["eot"]}
    return make_test_model(
        path, row["arch"], proj_type or shape_proj_type(row),
        n_embd=row["n_embd"], n_layer=n_layer or row["n_layer"], n_ff=row["n_ff"], n_head=row["n_head"],
        n_head_kv=row["n_head_kv"], n_vocab=n_vocab or row["n_vocab"], n_ctx=n_ctx or row["n_ctx"],
        tokenizer=tok, pre=pre, embd_type=embd_type, tied=row["tied"], rope_base=row["rope_base"],
        hidden_activation=row["activation"] if row["arch"].startswith("bitnet") else None,
        head_dim=row["head_dim"] if row["head_dim"] * row["n_head"] != row["n_embd"] else None,
        norm_eps=row["norm_eps"], specials=row["specials"], special_ids=ids, seed=seed,
        block_scales=block_scales, name=f"bitnet-aot test model, shape of {row['hf_repo']}",
        **_shape_rope(row, rope_scaling, rope_factor, rope_orig_ctx, rope_freqs))


def _shape_rope(row: dict, kind, factor, orig_ctx, freqs) -> dict:
    """The RoPE keys of a published shape: the row's rope_yarn (factor, original context) when
    the configuration gives them, unless the caller asks for others."""
    given = dict(rope_scaling=kind, rope_factor=factor, rope_orig_ctx=orig_ctx, rope_freqs=freqs)
    if any(v is not None for v in given.values()) or not row.get("rope_yarn"):
        return given
    f, orig = row["rope_yarn"]
    return dict(rope_scaling="yarn", rope_factor=f, rope_orig_ctx=orig, rope_freqs=None)


__all__ = ["make_test_model", "make_shape_model", "llama3_rope_freqs", "ARCHS", "PROJ_TYPES", "SHAPES_2B4T", "T_F32", "T_U32"]
