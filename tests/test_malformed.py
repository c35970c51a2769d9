"""Malformed and hostile GGUF files: each must end in one line `error: ...` and exit code 2."""
from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from bitnet_aot import cli
from bitnet_aot.factory import make_test_model
from bitnet_aot.gguf_file import GGUFFile, TensorToWrite, write_gguf


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("malformed")
    p = str(d / "base.gguf")
    make_test_model(p, "bitnet-b1.58", "tq2_0", n_layer=1, n_vocab=300)
    return p


def _parts(path):
    g = GGUFFile(path)
    kv = dict(g.kv)
    ts = [TensorToWrite(t.name, t.ggml_type, t.ne, g.raw(t.name).copy()) for t in g.tensors.values()]
    header_end = g.data_start
    g.close()
    return kv, ts, header_end


def _bytes(path):
    with open(path, "rb") as f:
        return bytearray(f.read())


def _first_kv_offset():
    return 24


# Each case: (id, function(base_path, out_path) -> None writing the bad file, expected words in the message)
def _semantic(mutate):
    def make(base, out):
        kv, ts, _ = _parts(base)
        kv, ts = mutate(kv, ts)
        write_gguf(out, kv, ts)
    return make


def _raw(mutate):
    def make(base, out):
        b = _bytes(base)
        b = mutate(b, base)
        with open(out, "wb") as f:
            f.write(b)
    return make


def _set_tensor(ts, name, **changes):
    out = []
    for t in ts:
        if t.name == name:
            t = TensorToWrite(changes.get("name", t.name), changes.get("ggml_type", t.ggml_type),
                              changes.get("ne", t.ne), changes.get("data", t.data))
        out.append(t)
    return out


def _truncate(fraction):
    def m(b, base):
        g = GGUFFile(base)
        cut = {"header": 17, "kv": 24 + 40, "infos": (g.data_start - 100),
               "data": g.data_start + (len(b) - g.data_start) // 2, "last_byte": len(b) - 1}[fraction]
        g.close()
        return b[:cut]
    return m


def _nan_scale(b, base):
    g = GGUFFile(base)
    t = g.tensors["blk.0.attn_q.weight"]
    g.close()
    b[t.offset + 64:t.offset + 66] = np.array([np.nan], dtype="<f2").tobytes()   # d of block 0
    return b


def _header_field(offset, fmt, value):
    def m(b, base):
        struct.pack_into(fmt, b, offset, value)
        return b
    return m


def _tensor_field(field):
    """Patch a field of the first tensor info (token_embd.weight)."""
    def m(b, base):
        g = GGUFFile(base)
        g.close()
        name = b"token_embd.weight"
        i = bytes(b).index(struct.pack("<Q", len(name)) + name)
        p = i + 8 + len(name)
        if field == "ndims0":
            struct.pack_into("<I", b, p, 0)
        elif field == "ndims9":
            struct.pack_into("<I", b, p, 9)
        elif field == "dim0":
            struct.pack_into("<Q", b, p + 4, 0)
        elif field == "dimhuge":
            struct.pack_into("<Q", b, p + 4, 1 << 50)
        elif field == "type":
            struct.pack_into("<I", b, p + 4 + 16, 77)
        elif field == "tl2":
            struct.pack_into("<I", b, p + 4 + 16, 39)
        elif field == "misaligned":
            struct.pack_into("<Q", b, p + 4 + 16 + 4, 3)
        elif field == "pastend":
            struct.pack_into("<Q", b, p + 4 + 16 + 4, 1 << 40)
        return b
    return m


def _kv_value_patch(kind):
    """Rewrite the first metadata entry (general.architecture, a string)."""
    def m(b, base):
        klen = struct.unpack_from("<Q", b, 24)[0]
        tpos = 24 + 8 + klen
        if kind == "keylen":
            struct.pack_into("<Q", b, 24, 1 << 60)
        elif kind == "vtype":
            struct.pack_into("<I", b, tpos, 99)
        elif kind == "strlen":
            struct.pack_into("<Q", b, tpos + 4, 1 << 59)
        return b
    return m


def _array_patch(kind):
    def m(b, base):
        key = b"tokenizer.ggml.tokens"
        i = bytes(b).index(struct.pack("<Q", len(key)) + key)
        p = i + 8 + len(key) + 4     # after the value type (ARRAY)
        if kind == "etype":
            struct.pack_into("<I", b, p, 42)
        elif kind == "count":
            struct.pack_into("<Q", b, p + 4, 1 << 62)
        return b
    return m


CASES = [
    ("empty", _raw(lambda b, base: bytearray()), "not a GGUF"),
    ("tiny", _raw(lambda b, base: b[:10]), "not a GGUF"),
    ("bad_magic", _raw(lambda b, base: bytearray(b"GGML") + b[4:]), "bad magic"),
    ("version_1", _raw(_header_field(4, "<I", 1)), "version 1"),
    ("version_99", _raw(_header_field(4, "<I", 99)), "version 99"),
    ("huge_tensor_count", _raw(_header_field(8, "<Q", 1 << 40)), "tensors"),
    ("huge_kv_count", _raw(_header_field(16, "<Q", 1 << 50)), "metadata"),
    ("truncated_header", _raw(_truncate("header")), "truncated"),
    ("truncated_kv", _raw(_truncate("kv")), "truncated"),
    ("truncated_infos", _raw(_truncate("infos")), ""),
    ("truncated_data", _raw(_truncate("data")), "past the end"),
    ("truncated_last_byte", _raw(_truncate("last_byte")), "past the end"),
    ("absurd_key_length", _raw(_kv_value_patch("keylen")), "string"),
    ("unknown_value_type", _raw(_kv_value_patch("vtype")), "value type"),
    ("absurd_string_length", _raw(_kv_value_patch("strlen")), "string"),
    ("unknown_array_type", _raw(_array_patch("etype")), "array element type"),
    ("absurd_array_count", _raw(_array_patch("count")), "more than the file"),
    ("zero_dims", _raw(_tensor_field("ndims0")), "dimensions"),
    ("nine_dims", _raw(_tensor_field("ndims9")), "dimensions"),
    ("zero_sized_dim", _raw(_tensor_field("dim0")), "impossible shape"),
    ("huge_dim", _raw(_tensor_field("dimhuge")), "impossible shape"),
    ("unknown_type_id", _raw(_tensor_field("type")), "unknown tensor type"),
    ("misaligned_offset", _raw(_tensor_field("misaligned")), "aligned"),
    ("offset_past_end", _raw(_tensor_field("pastend")), "past the end"),
    ("nan_scale", _raw(_nan_scale), "NaN"),
    ("unknown_arch", _semantic(lambda kv, ts: ({**kv, "general.architecture": "gpt-neox"}, ts)), "unsupported architecture"),
    ("missing_key", _semantic(lambda kv, ts: ({k: v for k, v in kv.items() if not k.endswith("embedding_length")}, ts)),
     "embedding_length"),
    ("absurd_width", _semantic(lambda kv, ts: ({**kv, "bitnet-b1.58.embedding_length": (10, 1 << 40)}, ts)), "range"),
    ("heads_not_dividing", _semantic(lambda kv, ts: ({**kv, "bitnet-b1.58.attention.head_count": 7}, ts)), "divisible"),
    ("wrong_key_type", _semantic(lambda kv, ts: ({**kv, "bitnet-b1.58.block_count": "two"}, ts)), "integer"),
    ("missing_tensor", _semantic(lambda kv, ts: (kv, [t for t in ts if t.name != "blk.0.ffn_up.weight"])), "ffn_up"),
    ("wrong_shape", _semantic(lambda kv, ts: (kv, _set_tensor(ts, "blk.0.attn_norm.weight", ne=(128,),
                                                                 data=np.zeros(128, "<f4"))) ), "shape"),
    ("nan_norm", _semantic(lambda kv, ts: (kv, _set_tensor(ts, "output_norm.weight",
                                                             data=np.full(256, np.nan, "<f4")))), "NaN"),
    ("fork_tl2_type", _raw(_tensor_field("tl2")), "TL2"),
    ("duplicate_tensor", _semantic(lambda kv, ts: (kv, ts + [ts[1]])), "twice"),
    ("bad_alignment", _semantic(lambda kv, ts: ({**kv, "general.alignment": (4, 48)}, ts)), "alignment"),
    ("too_many_tokens", _semantic(lambda kv, ts: ({**kv, "tokenizer.ggml.tokens": kv["tokenizer.ggml.tokens"] + ["x"] * 10,
                                                   "tokenizer.ggml.scores": np.zeros(310, np.float32),
                                                   "tokenizer.ggml.token_type": np.ones(310, np.int32)}, ts)), "tokens"),
    ("bad_bos_id", _semantic(lambda kv, ts: ({**kv, "tokenizer.ggml.bos_token_id": 99999}, ts)), "token id"),
    ("unknown_tokenizer", _semantic(lambda kv, ts: ({**kv, "tokenizer.ggml.model": "rwkv"}, ts)), "tokenizer"),
]


@pytest.mark.parametrize("name,make,words", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_gives_one_line_error(base, tmp_path, capsys, name, make, words):
    out = str(tmp_path / f"{name}.gguf")
    make(base, out)
    rc = cli.main(["inspect", out])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err
    assert words.lower() in err.lower(), err


def test_missing_file_and_directory(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "nope.gguf")]) == 2
    assert cli.main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)


def test_exit_code_from_a_real_process(base, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\xff" * 16)
    for args in (["inspect", str(bad)], ["build", str(bad), "-o", str(tmp_path / "x")], ["build", base, "--target", "vax"],
                 ["frobnicate"], ["build"]):
        r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli"] + args, capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, (args, r.stderr)
