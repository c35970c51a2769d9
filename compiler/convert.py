"""Hugging Face BitNet checkpoint -> GGUF (`bitnet-b1.58` architecture; `llama` for
LlamaForCausalLM checkpoints quantized with quant_method bitnet, see MODEL_TYPES).

    convert_hf(hf_dir, out_path, out_type)      out_type: tq2_0 | tq1_0 | i2_s | f16

Input: a directory with `config.json` (`model_type: bitnet`), `model.safetensors` (or shards
listed in `model.safetensors.index.json`) and a tokenizer (`tokenizer.model` SentencePiece,
or `tokenizer.json` byte-level BPE). Projections may come in either form:

* **master weights** (float32/bf16/f16 ``[out, in]``, e.g. microsoft/bitnet-b1.58-2B-4T-bf16 or
  examples/train): ternarized here exactly as training does (FORMATS.md section 1):
  ``s = 1/max(mean|W|, 1e-5)`` (mean in float64, rounded to float32), ``codes =
  clamp(round(W*s), -1, 1)``, ``ws = 1/s`` in float32. When config.json says
  ``"weight_scale_precision": "float16"`` (examples/train does), ``ws`` is rounded to float16
  as the training forward pass did.
* **packed** (the offline-quantized microsoft/bitnet-b1.58-2B-4T release, HF transformers
  ``integrations/bitnet.py``): ``weight`` is uint8 ``[out/4, in]``; output row ``r`` lives in
  packed row ``r % (out/4)`` at bits ``2*(r // (out/4))`` .. ``+1`` (four blocks of out/4 rows
  stacked along the OUTPUT dimension, block ``i`` in bit pair ``i``); the 2-bit value ``c`` means
  ``c - 1`` (3 is invalid). ``weight_scale`` is one number per tensor whose direction depends on
  ``quantization_config.linear_class``, exactly as transformers applies it:
    - ``autobitlinear`` (what the 2B-4T release declares): ``y = (codes . x) * weight_scale``,
      so ``ws = weight_scale`` (about 1.5 there: it is mean|W| of the masters);
    - ``bitlinear`` (transformers' default class): ``y = (codes . x) / weight_scale``, so
      ``ws = 1 / weight_scale``.
  Float weights that already hold only -1/0/+1 next to a ``weight_scale`` (offline, unpacked)
  follow the same rule.

Output: the projections in the chosen ternary type with one scale ``ws`` (``W = codes * ws``;
TQ types store it as float16 ``d`` in every block, I2_S as float32, F16 stores ``codes*ws``),
token embedding F16 (or F32), norms F32, tied head unless the checkpoint has an untied
``lm_head.weight``, and ``bitnet-b1.58.hidden_activation`` from ``hidden_act``.

Everything wrong with the input raises BitnetError with one line.
"""
from __future__ import annotations

import base64
import json
import os
import struct

import numpy as np

from . import quants
from .errors import BitnetError
from .gguf_file import I2_S, T_F32, T_I32, T_U32, TensorToWrite, write_gguf
from .tokenizer_pack import bytes_to_unicode  # GPT-2 byte <-> char map, one definition

F32_ID, F16_ID, TQ1_0_ID, TQ2_0_ID = 0, 1, 34, 35
OUT_TYPES = ("tq2_0", "tq1_0", "i2_s", "f16")
PROJS = (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
         ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
         ("mlp.down_proj", "ffn_down"))
ACTIVATIONS = {"relu2": "relu2", "relu_squared": "relu2", "squared_relu": "relu2",
               "silu": "silu", "swish": "silu"}
MODEL_TYPES = ("bitnet", "llama")
# model_type llama (Falcon3-*-1.58bit, Llama3-8B-1.58-100B-tokens): LlamaForCausalLM with
# quantization_config.quant_method "bitnet" (packed uint8 + weight_scale, transformers'
# BitLinear: W = codes / weight_scale), SiLU FFN, no sub-norms, untied lm_head. Written as
# GGUF architecture "llama" with q/k rows permuted the way llama.cpp's converter does
# (RoPE on adjacent pairs), so the file is what llama.cpp itself would write.


def _fail(msg: str):
    raise BitnetError(msg)


# ----------------------------------------------------------------------------------------
# safetensors (read and write). Our own small parser: numpy cannot hold bf16, which the
# official checkpoints use, and every offset is checked before use.
# ----------------------------------------------------------------------------------------
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}


class SafeTensors:
    """Read-only view of one .safetensors file: names -> (dtype name, shape, numpy array)."""

    def __init__(self, path: str):
        self.path = path
        name = os.path.basename(path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                _fail(f"{name}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                _fail(f"{name}: not a safetensors file (header length {n} exceeds the file)")
            try:
                hdr = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                _fail(f"{name}: not a safetensors file (unreadable JSON header)")
        if not isinstance(hdr, dict):
            _fail(f"{name}: safetensors header is not a JSON object")
        self.metadata = hdr.pop("__metadata__", {}) or {}
        self.data_start = 8 + n
        data_len = size - self.data_start
        self.info = {}
        for k, v in hdr.items():
            try:
                dt, shape, (b, e) = v["dtype"], [int(d) for d in v["shape"]], v["data_offsets"]
            except (KeyError, TypeError, ValueError):
                _fail(f"{name}: malformed safetensors entry for {k!r}")
            if dt not in _ST_DTYPES:
                _fail(f"{name}: tensor {k!r} has unsupported dtype {dt}")
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if any(d < 0 for d in shape) or not (0 <= b <= e <= data_len) \
                    or e - b != count * np.dtype(_ST_DTYPES[dt]).itemsize:
                _fail(f"{name}: tensor {k!r} has inconsistent offsets or shape")
            self.info[k] = (dt, tuple(shape), b, e)
        self._mm = None

    def array(self, key: str) -> np.ndarray:
        """The tensor as stored (BF16 as uint16 bit patterns)."""
        dt, shape, b, e = self.info[key]
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._mm[self.data_start + b: self.data_start + e]
        return raw.view(_ST_DTYPES[dt]).reshape(shape)

    def floats(self, key: str) -> np.ndarray:
        dt = self.info[key][0]
        a = self.array(key)
        if dt == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        if dt in ("F64", "F32", "F16"):
            return a.astype(np.float32)
        _fail(f"tensor {key!r} has dtype {dt}, expected a float type")


def save_safetensors(path: str, tensors: dict, metadata: dict = None):
    """Write numpy arrays (float32/float16/uint8/int8/...) as a .safetensors file."""
    inv = {"<f8": "F64", "<f4": "F32", "<f2": "F16", "<i8": "I64", "<i4": "I32", "<i2": "I16",
           "|i1": "I8", "|u1": "U8"}
    hdr, blobs, off = {}, [], 0
    if metadata:
        hdr["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for k, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = inv[a.dtype.newbyteorder("<").str if a.dtype.byteorder == "=" else a.dtype.str]
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


class Checkpoint:
    """All tensors of a HF checkpoint directory (single file or sharded)."""

    def __init__(self, hf_dir: str):
        single = os.path.join(hf_dir, "model.safetensors")
        index = os.path.join(hf_dir, "model.safetensors.index.json")
        self.files, self.where = {}, {}
        if os.path.isfile(single):
            st = SafeTensors(single)
            self.files[single] = st
            self.where = {k: st for k in st.info}
        elif os.path.isfile(index):
            try:
                wm = json.load(open(index, encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError):
                _fail(f"{index}: unreadable index (no weight_map)")
            for k, fn in wm.items():
                p = os.path.join(hf_dir, os.path.basename(str(fn)))
                if p not in self.files:
                    if not os.path.isfile(p):
                        _fail(f"{hf_dir}: shard {fn} listed in model.safetensors.index.json is missing")
                    self.files[p] = SafeTensors(p)
                if k not in self.files[p].info:
                    _fail(f"{p}: tensor {k!r} listed in the index is not in the shard")
                self.where[k] = self.files[p]
        else:
            bins = [f for f in os.listdir(hf_dir) if f.endswith((".bin", ".pt", ".pth"))]
            extra = f" (found {bins[0]}: PyTorch pickles are not read; re-save as safetensors)" if bins else ""
            _fail(f"{hf_dir}: no model.safetensors or model.safetensors.index.json{extra}")

    def __contains__(self, k):
        return k in self.where

    def dtype(self, k):
        return self.where[k].info[k][0]

    def shape(self, k):
        return self.where[k].info[k][1]

    def array(self, k):
        return self.where[k].array(k)

    def floats(self, k, shape=None):
        if k not in self.where:
            _fail(f"missing tensor {k!r}")
        if shape is not None and self.shape(k) != tuple(shape):
            _fail(f"tensor {k!r} has shape {list(self.shape(k))}, expected {list(shape)}")
        a = self.where[k].floats(k)
        if not np.all(np.isfinite(a)):
            _fail(f"tensor {k!r} contains NaN or infinite values")
        return a


# ----------------------------------------------------------------------------------------
# Ternary projections
# ----------------------------------------------------------------------------------------
def absmean_ternarize(w: np.ndarray, scale_fp16: bool = False):
    """Master weights -> (codes int8, ws float32), bit-identical to examples/train/train.py."""
    w = np.asarray(w, dtype=np.float32)
    m = np.float32(np.mean(np.abs(w), dtype=np.float64))
    s = np.float32(1.0) / np.maximum(m, np.float32(1e-5))
    codes = np.clip(np.rint(w * s), -1, 1).astype(np.int8)
    ws = np.float32(1.0) / s
    if scale_fp16:
        ws = np.float32(np.float16(ws))
    return codes, float(ws)


def pack_2bit(codes: np.ndarray) -> np.ndarray:
    """int8 codes [out, in] in {-1,0,1} -> uint8 [out/4, in], HF transformers' layout:
    row r goes to packed row r % (out/4), bit pair r // (out/4); stored value code+1."""
    out_dim = codes.shape[0]
    if out_dim % 4:
        raise ValueError(f"packing needs the output dimension to be a multiple of 4, got {out_dim}")
    p = out_dim // 4
    c = (codes.astype(np.int16) + 1).astype(np.uint8).reshape(4, p, *codes.shape[1:])
    return (c[0] | (c[1] << 2) | (c[2] << 4) | (c[3] << 6)).astype(np.uint8)


def unpack_2bit(packed: np.ndarray) -> np.ndarray:
    """Inverse of pack_2bit -> int8 codes [4*rows, in]; values 3 become 2 (caller checks)."""
    parts = [((packed >> np.uint8(2 * i)) & np.uint8(3)) for i in range(4)]
    return (np.concatenate(parts, axis=0).astype(np.int8) - 1)


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q or k projection from HF's rotate-half order to llama.cpp's adjacent-pair
    order: within each head, row i of the first half and row i of the second half become
    rows 2i and 2i+1 (llama.cpp's convert_hf_to_gguf permute)."""
    out_dim = w.shape[0]
    d = out_dim // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class _Converter:
    def __init__(self, hf_dir: str, out_type: str, embd_type: str):
        self.dir = hf_dir
        self.out_type = out_type
        self.embd_type = embd_type
        self.warnings = []

    # -- config ------------------------------------------------------------------------
    def config(self):
        path = os.path.join(self.dir, "config.json")
        if not os.path.isfile(path):
            _fail(f"{self.dir}: missing config.json; is this a Hugging Face checkpoint directory?")
        try:
            c = json.load(open(path, encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            _fail(f"{path}: not valid JSON ({str(e).splitlines()[0]})")
        if not isinstance(c, dict):
            _fail(f"{path}: not a JSON object")
        mt = c.get("model_type")
        if mt not in MODEL_TYPES:
            _fail(f"{path}: unsupported model_type {mt!r}; bitnet-aot converts BitNet b1.58 checkpoints "
                  f"(model_type 'bitnet', BitNetForCausalLM; or 'llama' with quantization_config bitnet)")
        qc0 = c.get("quantization_config")
        if mt == "llama" and not ((isinstance(qc0, dict) and qc0.get("quant_method") == "bitnet")
                                  or c.get("is_bitnet_config") is True):
            _fail(f"{path}: a model_type 'llama' checkpoint without quantization_config.quant_method 'bitnet' "
                  "is not a ternary model")

        def intkey(k, default=None, lo=1, hi=1 << 24):
            v = c.get(k, default)
            if v is None:
                _fail(f"{path}: missing {k!r}")
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                _fail(f"{path}: {k!r} = {v!r} is not a valid size")
            return v

        def floatkey(k, default):
            v = c.get(k, default)
            if v is None:
                v = default
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                _fail(f"{path}: {k!r} = {v!r} is not a positive number")
            return float(v)

        hp = dict(E=intkey("hidden_size", hi=1 << 16), F=intkey("intermediate_size", hi=1 << 18),
                  n_layer=intkey("num_hidden_layers", hi=1024), H=intkey("num_attention_heads", hi=1024),
                  V=intkey("vocab_size", hi=1 << 22))
        hp["Hkv"] = intkey("num_key_value_heads", hp["H"], hi=hp["H"])
        hp["ctx"] = intkey("max_position_embeddings", 2048)
        if hp["E"] % hp["H"] or hp["H"] % hp["Hkv"]:
            _fail(f"{path}: hidden_size {hp['E']}, num_attention_heads {hp['H']} and num_key_value_heads "
                  f"{hp['Hkv']} do not divide evenly")
        hp["D"] = hp["E"] // hp["H"]
        hp["arch"] = "llama" if mt == "llama" else "bitnet-b1.58"
        if c.get("head_dim") not in (None, hp["D"]):
            _fail(f"{path}: head_dim {c['head_dim']} differs from hidden_size/num_attention_heads = {hp['D']}")
        if hp["D"] % 2:
            _fail(f"{path}: head dimension {hp['D']} is odd")
        hp["eps"] = floatkey("rms_norm_eps", 1e-5)
        # transformers' defaults: BitNetConfig 500000, LlamaConfig 10000
        hp["rope_theta"] = floatkey("rope_theta", 500000.0 if mt == "bitnet" else 10000.0)
        rs = c.get("rope_scaling")
        if rs not in (None, {}) and not (isinstance(rs, dict) and rs.get("factor", 1.0) == 1.0
                                         and rs.get("rope_type", rs.get("type")) in ("linear", "default")):
            _fail(f"{path}: rope_scaling {rs!r} is not supported")
        act = c.get("hidden_act", "relu2" if mt == "bitnet" else "silu")
        if not isinstance(act, str) or act.lower() not in ACTIVATIONS:
            _fail(f"{path}: hidden_act {act!r} is not supported (relu2 or silu)")
        hp["act"] = ACTIVATIONS[act.lower()]
        hp["tie"] = c.get("tie_word_embeddings")
        qc = c.get("quantization_config") or {}
        if not isinstance(qc, dict):
            _fail(f"{path}: quantization_config is not an object")
        if qc and qc.get("quant_method", "bitnet") != "bitnet":
            _fail(f"{path}: quantization_config.quant_method {qc.get('quant_method')!r} is not 'bitnet'")
        lc = qc.get("linear_class", "bitlinear")
        if lc not in ("bitlinear", "autobitlinear"):
            _fail(f"{path}: quantization_config.linear_class {lc!r} is unknown (bitlinear or autobitlinear)")
        hp["linear_class"] = lc
        wsp = c.get("weight_scale_precision", "float32")
        if wsp not in ("float32", "float16"):
            _fail(f"{path}: weight_scale_precision {wsp!r} must be float32 or float16")
        hp["scale_fp16"] = wsp == "float16"
        hp["bos"], hp["eos"] = c.get("bos_token_id"), c.get("eos_token_id")
        hp["name"] = c.get("_name_or_path") or os.path.basename(os.path.normpath(self.dir))
        self.hp = hp
        return hp

    # -- weights -------------------------------------------------------------------------
    def projection(self, ck: Checkpoint, key: str, out_dim: int, in_dim: int):
        """-> (codes int8 [out, in], ws float) for HF module `key` (without .weight)."""
        wk, sk = key + ".weight", key + ".weight_scale"
        if wk not in ck:
            _fail(f"missing tensor {wk!r}")
        dt, shape = ck.dtype(wk), ck.shape(wk)
        if dt == "U8":
            if shape != (out_dim // 4, in_dim) or out_dim % 4:
                _fail(f"packed tensor {wk!r} has shape {list(shape)}, expected [{out_dim // 4}, {in_dim}] "
                      f"(uint8, four 2-bit codes per byte along the output dimension)")
            packed = np.asarray(ck.array(wk))
            if np.any((packed & 0x03) == 3) or np.any((packed & 0x0C) == 0x0C) \
                    or np.any((packed & 0x30) == 0x30) or np.any((packed & 0xC0) == 0xC0):
                _fail(f"packed tensor {wk!r} holds the 2-bit value 3, which is not a ternary code")
            codes = unpack_2bit(packed)
            return codes, self._scale(ck, sk, wk, required=True)
        if dt not in ("F32", "F16", "BF16", "F64", "I8"):
            _fail(f"tensor {wk!r} has dtype {dt}; expected float master weights or packed uint8")
        if shape != (out_dim, in_dim):
            _fail(f"tensor {wk!r} has shape {list(shape)}, expected [{out_dim}, {in_dim}]")
        if dt == "I8":
            if sk not in ck:
                _fail(f"int8 tensor {wk!r} needs a {sk!r} tensor")
            w = np.asarray(ck.array(wk)).astype(np.float32)
        else:
            w = ck.floats(wk)
        if sk in ck:
            # offline-quantized but unpacked: the floats must already be codes
            if not np.all(np.isin(w, (-1.0, 0.0, 1.0))):
                _fail(f"tensor {wk!r} has a {sk.split('.')[-1]} but holds values other than -1, 0, +1")
            return w.astype(np.int8), self._scale(ck, sk, wk, required=True)
        return absmean_ternarize(w, self.hp["scale_fp16"])

    def _scale(self, ck, sk, wk, required):
        if sk not in ck:
            _fail(f"missing tensor {sk!r} (the scale of packed {wk!r})")
        a = ck.floats(sk)
        if a.size != 1:
            _fail(f"tensor {sk!r} has {a.size} values; one per-tensor scale is expected")
        v = float(a.reshape(-1)[0])
        if not v > 0:
            _fail(f"tensor {sk!r} is {v}; a weight scale must be positive")
        ws = v if self.hp["linear_class"] == "autobitlinear" else 1.0 / v
        ws = float(np.float32(ws))
        if self.hp["scale_fp16"]:
            ws = float(np.float32(np.float16(ws)))
        return ws

    def ternary_tensor(self, name: str, codes: np.ndarray, ws: float) -> TensorToWrite:
        out_dim, in_dim = codes.shape
        flat = codes.reshape(-1)
        ne = (in_dim, out_dim)
        t = self.out_type
        if t in ("tq2_0", "tq1_0"):
            if in_dim % 256:
                _fail(f"{name}: row length {in_dim} is not a multiple of 256, which {t.upper()} needs; "
                      f"use --type i2_s or f16")
            d = np.full(flat.size // 256, ws, np.float32)
            if t == "tq2_0":
                return TensorToWrite(name, TQ2_0_ID, ne, quants.encode_tq2_0(flat, d))
            return TensorToWrite(name, TQ1_0_ID, ne, quants.encode_tq1_0(flat, d))
        if t == "i2_s":
            if flat.size % 128:
                _fail(f"{name}: {flat.size} weights is not a multiple of 128, which I2_S needs; use --type f16")
            return TensorToWrite(name, I2_S, ne, quants.encode_i2_s(flat, ws))
        w16 = (codes.astype(np.float32) * np.float32(ws)).astype("<f2")
        return TensorToWrite(name, F16_ID, ne, w16)

    def float_tensor(self, name, a, typ):
        ne = tuple(reversed(a.shape))
        if typ == "f16":
            if np.max(np.abs(a)) > 65504:
                _fail(f"{name}: values exceed the float16 range; use an F32 embedding")
            return TensorToWrite(name, F16_ID, ne, np.ascontiguousarray(a, dtype="<f2"))
        return TensorToWrite(name, F32_ID, ne, np.ascontiguousarray(a, dtype="<f4"))

    def tensors(self):
        hp = self.hp
        ck = Checkpoint(self.dir)
        E, F_, V, Ekv = hp["E"], hp["F"], hp["V"], hp["Hkv"] * hp["D"]
        emb = ck.floats("model.embed_tokens.weight", (V, E))
        if hp["tie"] is None:
            hp["tie"] = "lm_head.weight" not in ck
        elif not hp["tie"] and "lm_head.weight" not in ck:
            _fail("missing tensor 'lm_head.weight' (config.json says tie_word_embeddings is false)")
        out = [self.float_tensor("token_embd.weight", emb, self.embd_type),
               self.float_tensor("output_norm.weight", ck.floats("model.norm.weight", (E,)), "f32")]
        if not hp["tie"]:
            out.append(self.float_tensor("output.weight", ck.floats("lm_head.weight", (V, E)), self.embd_type))
        shapes = {"attn_q": (E, E), "attn_k": (Ekv, E), "attn_v": (Ekv, E), "attn_output": (E, E),
                  "ffn_gate": (F_, E), "ffn_up": (F_, E), "ffn_down": (E, F_)}
        self.codes = {}
        from .progress import iterate
        for i in iterate(range(hp["n_layer"]), "converting", unit="layer"):
            p, b = f"model.layers.{i}.", f"blk.{i}."
            out.append(self.float_tensor(b + "attn_norm.weight", ck.floats(p + "input_layernorm.weight", (E,)), "f32"))
            out.append(self.float_tensor(b + "ffn_norm.weight", ck.floats(p + "post_attention_layernorm.weight", (E,)), "f32"))
            if hp["arch"] != "llama":
                out.append(self.float_tensor(b + "attn_sub_norm.weight", ck.floats(p + "self_attn.attn_sub_norm.weight", (E,)), "f32"))
                out.append(self.float_tensor(b + "ffn_sub_norm.weight", ck.floats(p + "mlp.ffn_sub_norm.weight", (F_,)), "f32"))
            for hf, gg in PROJS:
                codes, ws = self.projection(ck, p + hf, *shapes[gg])
                if hp["arch"] == "llama" and gg in ("attn_q", "attn_k"):
                    codes = llama_permute(codes, hp["H"] if gg == "attn_q" else hp["Hkv"])
                self.codes[b + gg] = (codes, ws)
                out.append(self.ternary_tensor(b + gg + ".weight", codes, ws))
        extra = [k for k in ck.where if k.startswith("model.layers.")
                 and int(k.split(".")[2]) >= hp["n_layer"]]
        if extra:
            _fail(f"tensor {extra[0]!r} belongs to a layer beyond num_hidden_layers = {hp['n_layer']}")
        return out

    # -- metadata ------------------------------------------------------------------------
    def metadata(self, tok: dict) -> dict:
        hp = self.hp
        a = hp["arch"] + "."
        kv = {"general.architecture": hp["arch"], "general.name": str(hp["name"]),
              a + "vocab_size": hp["V"], a + "context_length": hp["ctx"], a + "embedding_length": hp["E"],
              a + "block_count": hp["n_layer"], a + "feed_forward_length": hp["F"],
              a + "attention.head_count": hp["H"], a + "attention.head_count_kv": hp["Hkv"],
              a + "rope.freq_base": hp["rope_theta"], a + "rope.dimension_count": hp["D"],
              a + "attention.layer_norm_rms_epsilon": hp["eps"]}
        if hp["arch"] != "llama" or hp["act"] != "silu":
            kv[a + "hidden_activation"] = hp["act"]
        kv.update(tok)
        return kv


# ----------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------
def _varint(b: bytes, i: int):
    v, shift = 0, 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError("truncated varint")
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        if not x & 0x80:
            return v, i
        shift += 7


def _proto_fields(b: bytes):
    """Minimal protobuf wire-format walker: yields (field number, wire type, value)."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if i > len(b):
            raise ValueError("truncated field")
        yield f, wt, v


def read_spm_model(path: str) -> dict:
    """sentencepiece ModelProto -> pieces, scores, types, special ids, add_dummy_prefix."""
    data = open(path, "rb").read()
    pieces, scores, types = [], [], []
    ids = {"unk": 0, "bos": 1, "eos": 2, "pad": -1}
    dummy_prefix = True
    model_type = 1   # UNIGRAM
    try:
        for f, wt, v in _proto_fields(data):
            if f == 1 and wt == 2:                        # SentencePiece
                piece, score, typ = "", 0.0, 1
                for f2, wt2, v2 in _proto_fields(v):
                    if f2 == 1 and wt2 == 2:
                        piece = v2.decode("utf-8")
                    elif f2 == 2 and wt2 == 5:
                        score = struct.unpack("<f", v2)[0]
                    elif f2 == 3 and wt2 == 0:
                        typ = int(v2)
                pieces.append(piece)
                scores.append(score)
                types.append(typ)
            elif f == 2 and wt == 2:                      # TrainerSpec
                for f2, wt2, v2 in _proto_fields(v):
                    if f2 == 3 and wt2 == 0:
                        model_type = int(v2)
                    for name, num in (("unk", 40), ("bos", 41), ("eos", 42), ("pad", 43)):
                        if f2 == num and wt2 == 0:
                            ids[name] = int(v2) - (1 << 64) if v2 >= (1 << 63) else int(v2)
            elif f == 3 and wt == 2:                      # NormalizerSpec
                for f2, wt2, v2 in _proto_fields(v):
                    if f2 == 3 and wt2 == 0:
                        dummy_prefix = bool(v2)
    except (ValueError, UnicodeDecodeError, struct.error, IndexError):
        return None
    if not pieces or not all(1 <= t <= 6 for t in types):
        return None
    return {"pieces": pieces, "scores": scores, "types": types, "ids": ids,
            "add_dummy_prefix": dummy_prefix, "model_type": model_type}


# Pre-tokenizer regexes of the tokenizer.json files we recognise -> llama.cpp's pre names.
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pre_tokenizer_name(tj: dict) -> str:
    pt = tj.get("pre_tokenizer") or {}
    if not isinstance(pt, dict):
        _fail("tokenizer.json: pre_tokenizer is not an object")
    steps = pt.get("pretokenizers", [pt]) if pt.get("type") == "Sequence" else [pt]
    if not isinstance(steps, list) or not all(isinstance(x, dict) for x in steps):
        _fail("tokenizer.json: pre_tokenizer.pretokenizers is not a list of objects")
    kinds = [x.get("type") for x in steps]
    regexes = [(x.get("pattern") or {}).get("Regex") if isinstance(x.get("pattern") or {}, dict) else None
               for x in steps if x.get("type") == "Split"]
    if regexes and regexes[0] == _LLAMA3_REGEX:
        return "llama-bpe"
    if regexes and regexes[0] == _QWEN2_REGEX:
        return "qwen2"
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    _fail(f"tokenizer.json: unrecognised pre-tokenizer {json.dumps(pt)[:120]}; bitnet-aot knows the "
          f"llama-bpe, qwen2, gpt-2 and smollm ones")


def _bpe_kv(tokens: list, types: list, merges: list, pre: str, bos, eos, eot, add_bos: bool) -> dict:
    kv = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": np.asarray(types, dtype=np.int32), "tokenizer.ggml.merges": merges,
          "tokenizer.ggml.add_bos_token": bool(add_bos)}
    for k, v in (("bos", bos), ("eos", eos), ("eot", eot)):
        if v is None:
            continue
        if not _is_int(v) or not 0 <= v < len(tokens):
            _fail(f"config.json: {k}_token_id {v!r} is not a token id of the {len(tokens)}-token vocabulary")
        kv[f"tokenizer.ggml.{k}_token_id"] = (T_U32, int(v))
    return kv


def tokenizer_from_json(path: str, hp: dict, tok_cfg: dict) -> dict:
    """tokenizer.json (untrusted input): every field's type is checked before use."""
    try:
        tj = json.load(open(path, encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        _fail(f"{path}: not a Hugging Face tokenizers file")
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict):
        _fail(f"{path}: not a Hugging Face tokenizers file (no 'model' object)")
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        _fail(f"{path}: only byte-level BPE tokenizer.json files are supported "
              f"(found {model.get('type')}{' with byte_fallback' if model.get('byte_fallback') else ''})")
    vocab = model.get("vocab") or {}
    added = tj.get("added_tokens") or []
    if not isinstance(vocab, dict) or not all(_is_int(i) and i >= 0 for i in vocab.values()):
        _fail(f"{path}: model.vocab must map token text to non-negative integer ids")
    if not isinstance(added, list) or not all(
            isinstance(t, dict) and _is_int(t.get("id")) and t["id"] >= 0 and isinstance(t.get("content"), str)
            for t in added):
        _fail(f"{path}: added_tokens must be objects with a non-negative integer 'id' and a string 'content'")
    merges_in = model.get("merges") or []
    if not isinstance(merges_in, list) or not all(
            isinstance(m, str) or (isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m))
            for m in merges_in):
        _fail(f"{path}: model.merges must be strings 'a b' or pairs of strings")
    n = max(list(vocab.values()) + [t["id"] for t in added] + [-1]) + 1
    if n > hp["V"]:
        _fail(f"{path}: the tokenizer has {n} tokens but the embedding only {hp['V']} rows")
    tokens, types = [None] * hp["V"], [1] * hp["V"]
    for t, i in vocab.items():
        tokens[i] = t
    for t in added:
        tokens[t["id"]] = t["content"]
        types[t["id"]] = 3 if t.get("special") else 4
    for i in range(hp["V"]):
        if tokens[i] is None:
            tokens[i], types[i] = f"[PAD{i}]", 5
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges_in]
    pre = _pre_tokenizer_name(tj)
    ids = {t: i for i, t in enumerate(tokens)}
    eot = ids.get("<|eot_id|>", ids.get("<|im_end|>"))
    add_bos = bool(tok_cfg.get("add_bos_token", pre == "llama-bpe"))
    return _bpe_kv(tokens, types, merges, pre, hp["bos"], _first(hp["eos"]), eot, add_bos)


def _first(v):
    return v[0] if isinstance(v, list) and v else v


# LLaMA-3's special tokens follow its 128000 regular tokens (Meta's tokenizer.py layout).
def _llama3_specials(n_base: int, n_total: int) -> list:
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>",
             7: "<|end_header_id|>", 9: "<|eot_id|>"}
    out, r = [], 0
    for j in range(n_total - n_base):
        if j in named:
            out.append(named[j])
        else:
            out.append(f"<|reserved_special_token_{r}|>")
            r += 1
    return out


def tokenizer_from_tiktoken(path: str, hp: dict, tok_cfg: dict) -> dict:
    """A tiktoken rank file ('base64 rank' lines; LLaMA-3, and the 2B-4T release's tokenizer.model)
    -> byte-level BPE vocabulary with merges recovered from the ranks."""
    ranks = {}
    for ln in open(path, "rb").read().splitlines():
        if not ln.strip():
            continue
        tok, r = ln.split()
        ranks[base64.b64decode(tok)] = int(r)
    n_base = len(ranks)
    if sorted(ranks.values()) != list(range(n_base)) or n_base > hp["V"]:
        _fail(f"{path}: not a consistent tiktoken rank file for a {hp['V']}-row embedding")
    b2u = bytes_to_unicode()

    def sym(bs: bytes) -> str:
        return "".join(b2u[x] for x in bs)

    # Every split of a token into two tokens is a merge, ranked by the merged token, ties by
    # the parts' ranks (the order Hugging Face's tiktoken conversion produces for LLaMA-3).
    merges = []
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    for tok, r in by_rank:
        local = []
        for i in range(1, len(tok)):
            a, b = ranks.get(tok[:i]), ranks.get(tok[i:])
            if a is not None and b is not None:
                local.append((a, b, i))
        for a, b, i in sorted(local):
            merges.append(f"{sym(tok[:i])} {sym(tok[i:])}")
    tokens = [sym(t) for t, _ in by_rank]
    types = [1] * n_base
    specials = _llama3_specials(n_base, hp["V"])
    tokens += specials
    types += [3] * len(specials)
    ids = {t: i for i, t in enumerate(tokens)}
    bos = hp["bos"] if hp["bos"] is not None else ids.get("<|begin_of_text|>")
    eos = _first(hp["eos"]) if hp["eos"] is not None else ids.get("<|end_of_text|>")
    add_bos = bool(tok_cfg.get("add_bos_token", True))
    return _bpe_kv(tokens, types, merges, "llama-bpe", bos, eos, ids.get("<|eot_id|>"), add_bos)


def tokenizer_from_spm(spm: dict, hp: dict, tok_cfg: dict) -> dict:
    pieces, scores, types = list(spm["pieces"]), list(spm["scores"]), list(spm["types"])
    if len(pieces) > hp["V"]:
        _fail(f"tokenizer.model has {len(pieces)} pieces but the embedding only {hp['V']} rows")
    while len(pieces) < hp["V"]:
        pieces.append(f"[PAD{len(pieces)}]")
        scores.append(-1000.0)
        types.append(5)
    ids = spm["ids"]
    bos = hp["bos"] if isinstance(hp["bos"], int) else ids["bos"]
    eos = _first(hp["eos"]) if hp["eos"] is not None else ids["eos"]
    kv = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": pieces,
          "tokenizer.ggml.scores": np.asarray(scores, dtype=np.float32),
          "tokenizer.ggml.token_type": np.asarray(types, dtype=np.int32),
          "tokenizer.ggml.add_bos_token": bool(tok_cfg.get("add_bos_token", True)),
          "tokenizer.ggml.add_eos_token": bool(tok_cfg.get("add_eos_token", False)),
          "tokenizer.ggml.add_space_prefix": bool(spm["add_dummy_prefix"])}
    for k, v in (("bos", bos), ("eos", eos), ("unknown", ids["unk"]), ("padding", ids["pad"])):
        if isinstance(v, int) and 0 <= v < len(pieces):
            kv[f"tokenizer.ggml.{k}_token_id"] = (T_U32, v)
    return kv


def tokenizer_kv(hf_dir: str, hp: dict) -> dict:
    tok_cfg = {}
    p = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.isfile(p):
        try:
            tok_cfg = json.load(open(p, encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            _fail(f"{p}: not valid JSON")
        if not isinstance(tok_cfg, dict):
            tok_cfg = {}
    spm_path, tj_path = os.path.join(hf_dir, "tokenizer.model"), os.path.join(hf_dir, "tokenizer.json")
    if os.path.isfile(spm_path):
        spm = read_spm_model(spm_path)
        if spm is not None:
            kv = tokenizer_from_spm(spm, hp, tok_cfg)
        elif os.path.isfile(tj_path):
            kv = tokenizer_from_json(tj_path, hp, tok_cfg)
        else:
            head = open(spm_path, "rb").read(64)
            if b" " in head and head.split(b"\n")[0].split()[-1].isdigit():
                kv = tokenizer_from_tiktoken(spm_path, hp, tok_cfg)
            else:
                _fail(f"{spm_path}: neither a SentencePiece model nor a tiktoken rank file")
    elif os.path.isfile(tj_path):
        kv = tokenizer_from_json(tj_path, hp, tok_cfg)
    else:
        _fail(f"{hf_dir}: no tokenizer (tokenizer.model or tokenizer.json)")
    tmpl = tok_cfg.get("chat_template")
    if isinstance(tmpl, str):
        kv["tokenizer.chat_template"] = tmpl
    return kv


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------
def convert_hf(hf_dir: str, out_path: str, out_type: str = "tq2_0", *, embd_type: str = "f16",
               name: str = None) -> dict:
    """Convert a BitNet HF checkpoint directory to a GGUF file. Returns a summary dict
    (hparams, number of tensors, tokenizer model, warnings). Raises BitnetError.
    embd_type: f16 (default) or f32 for token_embd (and an untied output.weight);
    name: general.name (default: config's _name_or_path, else the directory name)."""
    out_type = str(out_type).lower()
    if out_type not in OUT_TYPES:
        _fail(f"unknown output type {out_type!r}; choose one of {', '.join(OUT_TYPES)}")
    if embd_type not in ("f16", "f32"):
        _fail(f"unknown embedding type {embd_type!r}; choose f16 or f32")
    if not os.path.isdir(hf_dir):
        _fail(f"{hf_dir}: not a directory")
    cv = _Converter(hf_dir, out_type, embd_type)
    hp = cv.config()
    if name:
        hp["name"] = str(name)
    tok = tokenizer_kv(hf_dir, hp)
    tensors = cv.tensors()
    kv = cv.metadata(tok)
    write_gguf(out_path, kv, tensors)
    return {"hparams": hp, "tensors": len(tensors), "tokenizer": tok["tokenizer.ggml.model"],
            "out_type": out_type, "warnings": cv.warnings}


def pack_hf(src_dir: str, dst_dir: str, linear_class: str = "autobitlinear", scale_dtype: str = "float32"):
    """Make the packed (offline) form of an unpacked master-weight checkpoint: every projection
    becomes uint8 [out/4, in] + `weight_scale` [1] (HF transformers layout, see module doc),
    other tensors are copied. linear_class decides the scale's direction (autobitlinear:
    weight_scale = ws, bitlinear: weight_scale = 1/ws). scale_dtype: float32 or float16."""
    cv = _Converter(src_dir, "tq2_0", "f16")
    hp = cv.config()
    ck = Checkpoint(src_dir)
    out = {}
    proj_keys = {f"model.layers.{i}.{hf}.weight" for i in range(hp["n_layer"]) for hf, _ in PROJS}
    E, F_, Ekv = hp["E"], hp["F"], hp["Hkv"] * hp["D"]
    shapes = {"attn_q": (E, E), "attn_k": (Ekv, E), "attn_v": (Ekv, E), "attn_output": (E, E),
              "ffn_gate": (F_, E), "ffn_up": (F_, E), "ffn_down": (E, F_)}
    for k in ck.where:
        if k in proj_keys:
            continue
        out[k] = np.asarray(ck.floats(k))
    for i in range(hp["n_layer"]):
        for hf, gg in PROJS:
            key = f"model.layers.{i}.{hf}"
            codes, ws = cv.projection(ck, key, *shapes[gg])
            out[key + ".weight"] = pack_2bit(codes)
            v = ws if linear_class == "autobitlinear" else 1.0 / ws
            out[key + ".weight_scale"] = np.array([v], dtype=np.float16 if scale_dtype == "float16" else np.float32)
    os.makedirs(dst_dir, exist_ok=True)
    save_safetensors(os.path.join(dst_dir, "model.safetensors"), out, {"format": "pt"})
    cfg = json.load(open(os.path.join(src_dir, "config.json"), encoding="utf-8"))
    cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": linear_class,
                                  "quantization_mode": "offline"}
    with open(os.path.join(dst_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    for fn in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "generation_config.json"):
        p = os.path.join(src_dir, fn)
        if os.path.isfile(p):
            with open(p, "rb") as a, open(os.path.join(dst_dir, fn), "wb") as b:
                b.write(a.read())
    return dst_dir
