"""llama.cpp's Q1_0 / Q2_0 and the type ids whose meaning depends on the writer.

Layouts (current ggml, ggml-common.h / ggml-quants.c, read as a specification):
* Q1_0, id 41: blocks of 128 weights in 18 bytes: fp16 d, then 16 bytes; weight j is bit
  j % 8 of byte j / 8: set -> +d, clear -> -d.
* Q2_0, id 42: blocks of 64 weights in 18 bytes: fp16 d, then 16 bytes; weight j is
  (byte j / 4 >> 2 (j % 4)) & 3, value (code - 1) d. PrismML's fork wrote id 42 with
  128-weight blocks of 34 bytes; the reader tells them apart by size.
The packers below are written element by element from those sentences, independently of
compiler/quants.py.
"""
from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from bitnet_aot import quants
from bitnet_aot.errors import BitnetError
from bitnet_aot.factory import make_test_model
from bitnet_aot.gguf_file import GGUFFile, I2_S, MXFP4, Q2_0
from bitnet_aot.gguf_import import load_gguf
from bitnet_aot.reference import Reference

rng = np.random.default_rng(77)


def _f16(x) -> bytes:
    return np.float16(x).tobytes()


def q1_0_by_hand(signs, ds) -> bytes:
    out = bytearray()
    for b, d in enumerate(ds):
        blk = bytearray(18)
        blk[0:2] = _f16(d)
        for j in range(128):
            if signs[b * 128 + j] > 0:
                blk[2 + j // 8] |= 1 << (j % 8)
        out += blk
    return bytes(out)


def q2_0_by_hand(codes, ds, qk=64) -> bytes:
    out = bytearray()
    for b, d in enumerate(ds):
        blk = bytearray(2 + qk // 4)
        blk[0:2] = _f16(d)
        for j in range(qk):
            blk[2 + j // 4] |= (int(codes[b * qk + j]) + 1) << (2 * (j % 4))
        out += blk
    return bytes(out)


def test_q1_0_decoder_and_encoder_match_the_layout():
    n = 128 * 5
    signs = rng.choice([-1, 1], n).astype(np.int8)
    ds = [0.5, -0.25, 3.0, 1e-3, 0.0]
    raw = np.frombuffer(q1_0_by_hand(signs, ds), np.uint8)
    codes, d = quants.decode_q1_0(raw, n)
    assert np.array_equal(codes, signs)
    assert np.array_equal(d, np.array(ds, np.float16).astype(np.float32))
    assert np.array_equal(quants.encode_q1_0(signs, np.array(ds, np.float32)), raw)


@pytest.mark.parametrize("qk", [64, 128])
def test_q2_0_decoder_and_encoder_match_the_layout(qk):
    n = qk * 6
    codes = rng.integers(-1, 3, n).astype(np.int8)      # includes the +2 code
    ds = rng.random(6).astype(np.float32)
    raw = np.frombuffer(q2_0_by_hand(codes, ds, qk), np.uint8)
    got, d = quants.decode_q2_0(raw, n, qk)
    assert np.array_equal(got, codes)
    assert np.array_equal(d, ds.astype(np.float16).astype(np.float32))
    assert np.array_equal(quants.encode_q2_0(codes, ds, qk), raw)


# ---- whole models: the same weights in Q1_0 / Q2_0 and in F16 ----------------------------

@pytest.mark.parametrize("ptype", ["q2_0", "q2_0_g128", "q1_0"])
@pytest.mark.parametrize("arch", ["bitnet-b1.58", "llama"])
def test_block_types_import_as_the_f16_weights(tmp_path, arch, ptype):
    zf = 0.0 if ptype == "q1_0" else 0.35
    p = make_test_model(str(tmp_path / "q.gguf"), arch, ptype, n_layer=2, seed=5)
    f = make_test_model(str(tmp_path / "f.gguf"), arch, "f16", n_layer=2, seed=5, zero_fraction=zf)
    m, r = load_gguf(p), load_gguf(f)
    for La, Lb in zip(m.layers, r.layers):
        for (name, a), (_, b) in zip(La.projections(), Lb.projections()):
            assert np.array_equal(a.codes, b.codes), name
            assert abs(a.scale - b.scale) <= 1e-6 * abs(b.scale), name
            assert a.source_type == {"q2_0": "Q2_0", "q2_0_g128": "Q2_0_g128", "q1_0": "Q1_0"}[ptype]
    toks = rng.integers(3, m.hp.n_vocab, 12)
    assert np.array_equal(Reference(m).forward(toks), Reference(r).forward(toks))
    if ptype == "q1_0":
        assert all(np.all(w.codes != 0) for L in m.layers for _, w in L.projections())


def test_compiled_q2_0_gives_the_f16_model_tokens(cache):
    """Compiled from the Q2_0 file: the same logits and greedy tokens as the reference of
    the same weights stored in F16."""
    from bitnet_aot.bindings.api import CompiledModel
    q = cache.model("llama", "q2_0", n_layer=2)
    f = cache.model("llama", "f16", n_layer=2)
    lib = cache.build(q).output
    ref = load_gguf(f)
    toks = np.random.default_rng(1).integers(3, ref.hp.n_vocab, 24).astype(np.int32)
    want = Reference(ref).forward(toks)
    with CompiledModel(lib, n_ctx=128, n_threads=1) as cm:
        got = cm.eval(toks)
        assert np.max(np.abs(got - want)) < 1e-3 * float(np.ptp(want))
        ids = cm.generate(toks[:6], 24, temperature=0.0, ignore_eos=True)
    assert ids == Reference(ref).generate_greedy(toks[:6], 24)


# ---- what is not ternary with one scale is refused, naming the tensor -----------------------

def _rewrite_tensor(path, name, raw: bytes):
    g = GGUFFile(path)
    t = g.tensors[name]
    off, nb = t.offset, t.nbytes
    g.close()
    assert len(raw) == nb
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(raw)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bitnet_aot.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_q2_0_plus_two_code_is_run_block_scaled(tmp_path):
    """One +2 code makes the tensor not ternary: it is kept exactly, block-scaled
    (test_block_scaled.py runs such models), while its neighbours stay plain ternary."""
    p = make_test_model(str(tmp_path / "m.gguf"), "llama", "q2_0", n_layer=1, seed=2)
    name = "blk.0.ffn_up.weight"
    codes = rng.integers(-1, 2, 512 * 256).astype(np.int8)
    codes[1000] = 2
    _rewrite_tensor(p, name, q2_0_by_hand(codes, [0.01] * (codes.size // 64)))
    L = load_gguf(p).layers[0]
    assert L.w_up.group == 64 and L.w_up.codes.reshape(-1)[1000] == 2
    assert np.array_equal(L.w_up.codes.reshape(-1), codes)
    assert np.all(L.w_up.group_scales == np.float32(np.float16(0.01)))
    assert L.w_gate.group == 0


def test_q2_0_varying_block_scales_are_run_block_scaled(tmp_path):
    p = make_test_model(str(tmp_path / "m.gguf"), "llama", "q2_0", n_layer=1, seed=2)
    name = "blk.0.attn_v.weight"
    n = 256 * 128
    codes = rng.integers(-1, 2, n).astype(np.int8)
    ds = np.full(n // 64, 0.02, np.float32)
    ds[3] = 0.03
    _rewrite_tensor(p, name, q2_0_by_hand(codes, ds))
    w = load_gguf(p).layers[0].wv
    assert w.group == 64 and w.group_scales.shape == (128, 4)
    assert w.group_scales.reshape(-1)[3] == np.float32(np.float16(0.03))


def test_q1_0_uniform_negative_scale_flips_signs(tmp_path):
    p = make_test_model(str(tmp_path / "m.gguf"), "llama", "q1_0", n_layer=1, seed=2)
    name = "blk.0.attn_q.weight"
    n = 256 * 256
    signs = rng.choice([-1, 1], n).astype(np.int8)
    _rewrite_tensor(p, name, q1_0_by_hand(signs, [-0.5] * (n // 128)))
    w = load_gguf(p).layers[0].wq
    assert np.array_equal(w.codes.reshape(-1), -signs) and w.scale == 0.5


# ---- ids that mean different things to different writers -----------------------------------

def _one_tensor_file(path, ggml_type, ne, nbytes, arch="llama"):
    raw = np.zeros(nbytes, np.uint8)
    # written by hand: one tensor of the given id and exactly nbytes of data
    kv = struct.pack("<Q", 20) + b"general.architecture" + struct.pack("<I", 8) + struct.pack("<Q", len(arch)) + arch.encode()
    ti = struct.pack("<Q", 1) + b"t" + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) + \
        struct.pack("<IQ", ggml_type, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + kv + ti
    head += b"\0" * (-len(head) % 32)
    with open(path, "wb") as fh:
        fh.write(head + raw.tobytes())


def test_q2_0_reading_is_chosen_by_size(tmp_path):
    ne = (4096, 2)
    n = ne[0] * ne[1]
    p = str(tmp_path / "a.gguf")
    _one_tensor_file(p, Q2_0, ne, n // 64 * 18)
    g = GGUFFile(p)
    assert g.tensors["t"].type_name == "Q2_0" and "64-weight" in g.tensors["t"].reading_reason
    g.close()
    _one_tensor_file(p, Q2_0, ne, n // 128 * 34)
    g = GGUFFile(p)
    assert g.tensors["t"].type_name == "Q2_0_g128" and "128-weight" in g.tensors["t"].reading_reason
    g.close()
    _one_tensor_file(p, Q2_0, ne, n // 128 * 34 - 64)
    with pytest.raises(BitnetError, match=r"'t'.*truncated"):
        GGUFFile(p)


def test_type_39_is_mxfp4_or_refused_as_tl2(tmp_path):
    ne = (256, 4)
    p = str(tmp_path / "b.gguf")
    _one_tensor_file(p, MXFP4, ne, 256 * 4 // 32 * 17)
    g = GGUFFile(p)
    assert g.tensors["t"].type_name == "MXFP4" and "not bitnet.cpp's TL2" in g.tensors["t"].reading_reason
    g.close()
    _one_tensor_file(p, MXFP4, ne, 256 * 4 // 8)     # TL2-sized: far smaller than MXFP4
    with pytest.raises(BitnetError, match=r"'t'.*TL2"):
        GGUFFile(p)


def test_inspect_says_how_type_36_and_42_were_read(tmp_path):
    for ptype, want in (("i2_s", "type id 36 read as bitnet.cpp's I2_S"),
                        ("q2_0_g128", "type id 42 read as PrismML's Q2_0 (128-weight groups")):
        p = make_test_model(str(tmp_path / f"{ptype}.gguf"), "bitnet-b1.58", ptype, n_layer=1)
        r = _cli("inspect", p)
        assert r.returncode == 0, r.stderr
        assert want in r.stdout, r.stdout


def test_type_36_too_small_for_i2s_is_refused(tmp_path):
    # IQ4_NL_4_4 (ggml's removed id 36) is larger than I2_S; a tensor with fewer bytes
    # than I2_S needs is truncated, one with IQ4_NL_4_4's size is read as that and refused.
    p = make_test_model(str(tmp_path / "m.gguf"), "bitnet-b1.58", "i2_s", n_layer=1)
    r = _cli("inspect", p)
    assert r.returncode == 0
    ne = (256, 4)
    q = str(tmp_path / "c.gguf")
    _one_tensor_file(q, I2_S, ne, 256 * 4 // 32 * 18, arch="bitnet-b1.58")
    g = GGUFFile(q)
    assert g.tensors["t"].type_name == "IQ4_NL_4_4"
    g.close()
