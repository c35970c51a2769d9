"""Code generation: model description + packed weights -> a C source tree.

The tree written to the build directory is complete and readable on its own:

    src/                 the runtime (copied from runtime_c/), unchanged
    gen/model_config.h   hyper-parameters and shapes as compile-time constants
    gen/weights_index.c  where each tensor sits in the blob, its scale, the blob's SHA-256,
                         and the build provenance (JSON)
    gen/blob.S           .incbin of weights.bin into a read-only section (embedded builds)
    weights.bin          the packed weights (and tokenizer data), 64-byte aligned tensors
    build.sh             the exact zig cc commands, to rebuild by hand

Nothing in the output depends on the build directory, the time or dict order, so the
same inputs give byte-identical sources (and binaries).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .model import Model
from .pack import MATRIX_TYPES, matrix_kinds, pack_group_scales, pack_i2s, pack_matrix, padded_k
from .pack_tl import pack_tl1, pack_tl2
from .reference import rope_frequencies

# kernel layout -> packer (layouts documented in runtime_c/core/kernels/)
PACKERS = {"i2s": pack_i2s, "tl1": pack_tl1, "tl2": pack_tl2}
from .targets import Target

ALIGN = 64
BLOB_MAGIC = b"BITNET-AOT-BLOB1"   # 64-byte header before the blob: this, its size (u64 LE), padding


def batch_size(m: Model, target: Target) -> int:
    """Tokens per forward chunk (prompt processing, batched decoding): as many as keep the
    chunk's int8 activations for the widest matmul in half of the target's L2 cache, so a
    GEMM reuses each weight tile across all of them without spilling; 8 to 64, a multiple of 8."""
    kp = max(padded_k(m.hp.n_embd), padded_k(m.hp.n_ff))
    n = (target.l2_cache_bytes // 2) // kp
    return max(8, min(64, n // 8 * 8))


KV_TYPES = {"f32": 0, "f16": 1, "q8": 2}   # --kv -> ATTN_KV_* (runtime_c/core/kernels/attn.h)


@dataclass
class BuildOptions:
    kernel: str = "i2s"
    head: str = "auto"                  # f32 | f16 | q8 | q6 | q4 | auto (the source precision)
    embed: str = "auto"                 # the same for an untied model's embedding table
    weights: str = "embedded"           # embedded | external
    n_ctx_max: int = 0                  # 0: the model's trained context
    kv: str = "f16"                     # KV cache precision: f32 | f16 | q8 (kernels/attn.h)
    shared: bool = False                # build a shared library for the Python binding
    sanitize: bool = False              # -fsanitize=address,undefined (host builds, for tests)
    opt: str = "-O2"
    zig_version: str = ""


class BlobWriter:
    """Append arrays to weights.bin at 64-byte-aligned offsets while hashing them."""

    def __init__(self, path: str):
        self.f = open(path, "wb")
        self.h = hashlib.sha256()
        self.pos = 0

    def add(self, data) -> int:
        pad = (-self.pos) % ALIGN
        if pad:
            self._write(b"\0" * pad)
        off = self.pos
        self._write(memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data)
        return off

    def _write(self, b):
        self.f.write(b)
        self.h.update(b)
        self.pos += len(b) if isinstance(b, bytes) else b.nbytes

    def close(self) -> tuple:
        pad = (-self.pos) % ALIGN
        if pad:
            self._write(b"\0" * pad)
        self.f.close()
        return self.pos, self.h.hexdigest()


def write_weights(m: Model, path: str, opts: BuildOptions, tokenizer_blob: bytes | None):
    """Pack every tensor into weights.bin. Returns (index dict, size, sha256)."""
    w = BlobWriter(path)
    idx = {"tokenizer": 0, "tokenizer_bytes": 0}
    if tokenizer_blob:
        idx["tokenizer"] = w.add(tokenizer_blob)
        idx["tokenizer_bytes"] = len(tokenizer_blob)
    # Embedding and head: the source precision, or --head / --embed (pack.matrix_kinds). A
    # tied model stores one matrix, in the head's precision.
    embd_kind, head_kind = matrix_kinds(m, opts.head, opts.embed)

    def add_matrix(a, kind):
        pm = pack_matrix(a, kind)
        return (MATRIX_TYPES[kind], w.add(pm.data), w.add(pm.scales) if pm.scales is not None else 0)
    idx["embd"] = add_matrix(m.token_embd, embd_kind)
    idx["head"] = idx["embd"] if m.output is None else add_matrix(m.output, head_kind)
    idx["embd_kind"], idx["head_kind"] = embd_kind, head_kind
    idx["output_norm"] = w.add(np.asarray(m.output_norm, "<f4"))
    layers = []
    from .progress import iterate
    for L in iterate(m.layers, "packing weights", unit="layer"):
        e = {"attn_norm": w.add(np.asarray(L.attn_norm, "<f4")),
             "ffn_norm": w.add(np.asarray(L.ffn_norm, "<f4")),
             "attn_sub_norm": w.add(np.asarray(L.attn_sub_norm, "<f4")) if L.attn_sub_norm is not None else 0,
             "ffn_sub_norm": w.add(np.asarray(L.ffn_sub_norm, "<f4")) if L.ffn_sub_norm is not None else 0,
             "attn_q_norm": w.add(np.asarray(L.attn_q_norm, "<f4")) if L.attn_q_norm is not None else 0,
             "attn_k_norm": w.add(np.asarray(L.attn_k_norm, "<f4")) if L.attn_k_norm is not None else 0}
        for key, tw in (("wq", L.wq), ("wk", L.wk), ("wv", L.wv), ("wo", L.wo),
                        ("w_gate", L.w_gate), ("w_up", L.w_up), ("w_down", L.w_down)):
            if tw.group:      # block-scaled: the i2s codes (3 = +2) and f16 group scales (kernels/i2sg.h)
                e[key] = (w.add(pack_i2s(tw.codes)), tw.scale, tw.group, w.add(pack_group_scales(tw)))
            else:
                e[key] = (w.add(PACKERS[opts.kernel](tw.codes)), tw.scale, 0, 0)
            tw.release()      # keep only the 2-bit codes: one projection unpacked at a time
        layers.append(e)
    idx["layers"] = layers
    size, sha = w.close()
    return idx, size, sha


def _c_float(x: float) -> str:
    """A float32 literal that round-trips exactly."""
    return repr(float(np.float32(x))) + "f"


def model_config_h(m: Model, opts: BuildOptions, idx: dict, blob_bytes: int, target: Target) -> str:
    hp = m.hp
    tok = m.tokenizer
    n_ctx_max = opts.n_ctx_max or hp.n_ctx_train
    defs = [
        ("BN_N_VOCAB", hp.n_vocab, "V: vocabulary rows of the embedding"),
        ("BN_N_EMBD", hp.n_embd, "E: model width"),
        ("BN_N_LAYER", hp.n_layer, "L: transformer blocks"),
        ("BN_N_FF", hp.n_ff, "F: feed-forward width"),
        ("BN_N_HEAD", hp.n_head, "H: query heads"),
        ("BN_N_HEAD_KV", hp.n_head_kv, "HKV: key/value heads (GQA)"),
        ("BN_HEAD_DIM", hp.head_dim, "D (E / H unless the model says otherwise)"),
        ("BN_Q_DIM", hp.q_dim, "H * D: width of q and of the attention output"),
        ("BN_KP_Q", padded_k(hp.q_dim), "H * D padded to the kernel block (attn_output's input)"),
        ("BN_QK_NORM", int(hp.qk_norm), "per-head RMSNorm of q and k before RoPE (Qwen3)"),
        ("BN_KV_DIM", hp.kv_dim, "KV = HKV * D"),
        ("BN_KP_EMBD", padded_k(hp.n_embd), "E padded to the kernel block"),
        ("BN_KP_FF", padded_k(hp.n_ff), "F padded to the kernel block"),
        ("BN_ROPE_DIM", hp.rope_dim, "rotated dims per head"),
        ("BN_ROPE_BASE", repr(float(hp.rope_base)), "RoPE frequency base (BN_ROPE_FREQ holds the frequencies)"),
        ("BN_ROPE_MSCALE", repr(float(rope_frequencies(hp, m.rope_freqs)[1])),
         f"cos/sin multiplier; RoPE scaling: {hp.rope_scaling.describe()}"
         + (", rope_freqs factors" if m.rope_freqs is not None else "")),
        ("BN_ROPE_NEOX", int(hp.rope_style == "neox"), "1: rotate halves (NEOX); 0: adjacent pairs"),
        ("BN_NORM_EPS", repr(float(hp.norm_eps)), "RMSNorm epsilon"),
        ("BN_ACT_RELU2", int(hp.activation == "relu2"), f"1: squared ReLU, 0: SiLU ({hp.activation_reason})"),
        ("BN_SUB_NORMS", int(hp.sub_norms), "attn_sub_norm/ffn_sub_norm present"),
        ("BN_N_CTX_TRAIN", hp.n_ctx_train, "trained context length"),
        ("BN_N_CTX_MAX", n_ctx_max, "largest --ctx accepted"),
        ("BN_KV_TYPE", KV_TYPES[opts.kv], f"KV cache elements: {opts.kv} (ATTN_KV_* in kernels/attn.h)"),
        ("BN_BATCH", batch_size(m, target), "tokens per forward chunk: activations of the widest matmul in half of L2"),
        ("BN_KERNEL_LAYOUT", f'"{opts.kernel}"', "packed ternary layout (kernels/kernels.h)"),
        ("BN_GROUPED", len(m.block_scaled()),
         "block-scaled projections (kernels/i2sg.h), read with the i2sg kernels"),
        ("BN_EMBD_TYPE", idx["embd"][0], f"token embedding storage: {idx['embd_kind']} (BN_MAT_* in weights.h)"),
        ("BN_HEAD_TYPE", idx["head"][0], f"output head storage: {idx['head_kind']}"),
        ("BN_HAS_TOKENIZER", int(idx["tokenizer_bytes"] > 0), "tokenizer data in the blob"),
        ("BN_TOKENIZER_BYTES", idx["tokenizer_bytes"], "size of the tokenizer data"),
        ("BN_BOS_ID", tok.bos_id if tok else -1, "begin-of-text token, -1 if none"),
        ("BN_EOS_ID", tok.eos_id if tok else -1, "end-of-text token, -1 if none"),
        ("BN_EOT_ID", tok.eot_id if tok else -1, "end-of-turn token, -1 if none"),
        ("BN_WEIGHTS_BYTES", f"{blob_bytes}ULL", "size of the weights blob"),
        ("BN_THREADS_USEFUL", threads_useful(blob_bytes), "default thread cap: one per 32 MiB of weights"),
        ("BN_WEIGHTS_EXTERNAL", int(opts.weights == "external"), "weights in a file beside the binary"),
        ("BN_BLOB_POINTER_TABLE", int(target.pointer_table and opts.weights == "embedded"),
         "reach the blob through a 64-bit pointer (large blobs on x86-64)"),
    ]
    lines = ["/* model_config.h: generated by bitnet-aot for one model. Do not edit. */",
             "#ifndef BITNET_MODEL_CONFIG_H", "#define BITNET_MODEL_CONFIG_H", ""]
    for name, val, doc in defs:
        lines.append(f"#define {name:<22} {val:<12} /* {doc} */")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def threads_useful(blob_bytes: int) -> int:
    """The most threads a decode step of this model gains from, the default thread count's
    cap (bn_default_threads): one per 32 MiB of weights, a decoded token's reads. A step
    issues a few hundred tasks whose hand-off costs microseconds each; below ~32 MiB per
    thread (about 1.5 ms of reading) the hand-offs cost more than the second thread saves:
    the bundled 3 MB model decodes faster at one thread than at two (bench/contention.py)."""
    return max(1, min(256, blob_bytes // (32 << 20)))


def rope_freq_c(m: Model) -> list:
    """BN_ROPE_FREQ: the per-pair RoPE frequencies (reference.rope_frequencies) as exact doubles."""
    theta, _ = rope_frequencies(m.hp, m.rope_freqs)
    vals = [repr(float(t)) for t in theta]
    return (["/* RoPE frequency of each rotated pair, radians per position (base, scaling, rope_freqs) */",
             "const double BN_ROPE_FREQ[BN_ROPE_DIM / 2] = {"]
            + [f"    {', '.join(vals[i:i + 4])}," for i in range(0, len(vals), 4)] + ["};", ""])


def weights_index_c(idx: dict, sha: str, info_json: str, rope_freq: list = ()) -> str:
    def tern(t):
        return f"{{{t[0]}ULL, {_c_float(t[1])}, {t[2]}, {t[3]}ULL}}"
    out = ["/* weights_index.c: generated by bitnet-aot. Offsets into weights.bin. Do not edit. */",
           '#include "core/weights.h"', "",
           "const bn_weights_index BN_WEIGHTS_INDEX = {",
           f"    .token_embd = {{{idx['embd'][1]}ULL, {idx['embd'][2]}ULL}},",
           f"    .output = {{{idx['head'][1]}ULL, {idx['head'][2]}ULL}},",
           f"    .output_norm = {idx['output_norm']}ULL,",
           f"    .tokenizer = {idx['tokenizer']}ULL,",
           "    .layers = {"]
    for i, L in enumerate(idx["layers"]):
        out.append(f"        {{ /* layer {i} */")
        out.append(f"            .attn_norm = {L['attn_norm']}ULL, .attn_sub_norm = {L['attn_sub_norm']}ULL,")
        out.append(f"            .ffn_norm = {L['ffn_norm']}ULL, .ffn_sub_norm = {L['ffn_sub_norm']}ULL,")
        out.append(f"            .attn_q_norm = {L['attn_q_norm']}ULL, .attn_k_norm = {L['attn_k_norm']}ULL,")
        out.append(f"            .wq = {tern(L['wq'])}, .wk = {tern(L['wk'])}, .wv = {tern(L['wv'])}, .wo = {tern(L['wo'])},")
        out.append(f"            .w_gate = {tern(L['w_gate'])}, .w_up = {tern(L['w_up'])}, .w_down = {tern(L['w_down'])},")
        out.append("        },")
    out += ["    },", "};", "",
            *rope_freq,
            f'const char BN_WEIGHTS_SHA256[65] = "{sha}";', "",
            "const char BN_BUILD_INFO_JSON[] =",
            *[f"    {json.dumps(line)}" for line in _chunks(info_json, 100)], "    ;", ""]
    return "\n".join(out)


def _chunks(s: str, n: int):
    return [s[i:i + n] for i in range(0, len(s), n)] or [""]


INCBIN_CHUNK = 1 << 30    # bytes per .incbin directive of a large blob


def blob_s(target: Target, opts: BuildOptions, blob_bytes: int) -> str:
    p = target.symbol_prefix
    lines = ["/* blob.S: generated by bitnet-aot. Embeds weights.bin, 64-byte aligned. */",
             target.blob_section,
             "/* a 64-byte header (marker, size, padding), so `bitnet-aot verify` finds the blob in any",
             "   executable format: in the file too the blob starts 64 bytes after the marker */",
             ".balign 64",
             f'.ascii "{BLOB_MAGIC.decode()}"',
             f".quad {blob_bytes}" if target.pointer_directive == ".quad" else f".long {blob_bytes & 0xffffffff}, {blob_bytes >> 32}",
             f".globl {p}bn_weights_data",
             ".balign 64",
             f"{p}bn_weights_data:"]
    if target.object_format == "wasm" or blob_bytes <= INCBIN_CHUNK:
        lines.append('.incbin "weights.bin"')
    else:
        # one .incbin of 4 GiB or more is silently truncated by zig 0.17's toolchain (x86-64
        # too: a 4.05 GiB blob left a 48 MB binary), so large blobs come in 1 GiB pieces
        lines += [f'.incbin "weights.bin", {off}, {min(INCBIN_CHUNK, blob_bytes - off)}'
                  for off in range(0, blob_bytes, INCBIN_CHUNK)]
    if target.object_format == "wasm":
        lines.append(f".size {p}bn_weights_data, {blob_bytes}")   # wasm data symbols need a size
    if target.pointer_table:
        # A 64-bit pointer to the blob in small data: code reaches the blob through it, so
        # the blob may lie any distance away (x86-64 PC-relative references reach only 2 GiB).
        lines += [".section .data.rel.ro.bitnet,\"aw\",@progbits", f".globl {p}bn_weights_ptr",
                  ".balign 8", f"{p}bn_weights_ptr:", f"{target.pointer_directive} {p}bn_weights_data"]
    if target.object_format == "elf":
        lines.append('.section .note.GNU-stack,"",%progbits')   # % : @ starts a comment on ARM
    return "\n".join(lines) + "\n"


def copy_runtime(dst: str) -> list:
    """Copy the runtime_c/ tree (every folder: core/, core/kernels/, text/, app/) into
    dst/src; returns the relative paths of its .c files, sorted. Nothing is listed by hand:
    a file added under runtime_c/ is in every build."""
    c_files = []
    stack = [("", resources.files("bitnet_aot.runtime_c"))]
    while stack:
        sub, d = stack.pop()
        os.makedirs(os.path.join(dst, "src", sub), exist_ok=True)
        for f in sorted(d.iterdir(), key=lambda p: p.name):
            rel = os.path.join(sub, f.name) if sub else f.name
            if f.is_dir():
                if f.name != "__pycache__":
                    stack.append((rel, f))
            elif f.name.endswith((".c", ".h")):
                with resources.as_file(f) as real:
                    shutil.copyfile(real, os.path.join(dst, "src", rel))
                if f.name.endswith(".c"):
                    c_files.append(os.path.join("src", rel))
            elif f.name.endswith(".html"):
                # a page served by the binary (chat_page.html -> chat_page.h: one C string)
                write_c_string_header(f.read_bytes(), f.name, os.path.join(dst, "src", rel[:-5] + ".h"))
    return sorted(c_files)


def write_c_string_header(data: bytes, name: str, path: str) -> None:
    """data as `static const char NAME_HTML[]` in a header (octal escapes where needed)."""
    ident = name.replace(".", "_").upper()
    out = [f"/* generated from runtime_c/{name} by bitnet_aot.codegen: do not edit */",
           f"static const char {ident}[] ="]
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        line += b"\n" if i < len(lines) - 1 else b""
        esc = "".join(chr(c) if 32 <= c < 127 and chr(c) not in '\\"?' else f"\\{c:03o}" for c in line)
        out.append(f'    "{esc}"')
    out[-1] += ";"
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")
