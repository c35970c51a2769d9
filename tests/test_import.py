"""GGUF import: exact decoding of the ternary types, architecture rules, refusals."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants as gq

from bitnet_aot import quants
from bitnet_aot.errors import BitnetError
from bitnet_aot.factory import ARCHS, PROJ_TYPES, make_test_model
from bitnet_aot.gguf_file import I2_S, TensorToWrite, write_gguf
from bitnet_aot.gguf_import import load_gguf

rng = np.random.default_rng(1234)


@pytest.mark.parametrize("qt", [Q.TQ1_0, Q.TQ2_0])
def test_tq_decoding_matches_gguf_dequantize(qt):
    for rows, cols, scale in [(3, 256, 0.5), (7, 768, 0.0123), (1, 2560, 3.0)]:
        w = rng.integers(-1, 2, size=(rows, cols)).astype(np.float32) * np.float32(scale)
        raw = gq.quantize(w, qt).reshape(-1)
        expect = gq.dequantize(raw, qt).reshape(-1)
        dec = quants.decode_tq1_0 if qt == Q.TQ1_0 else quants.decode_tq2_0
        codes, d = dec(raw, w.size)
        got = (codes.reshape(-1, 256).astype(np.float32) * d[:, None]).reshape(-1)
        assert np.array_equal(got, expect)


def _i2s_pack_by_hand(codes: np.ndarray, scale: float) -> bytes:
    """Independent I2_S packer, element by element from the layout description: 128-weight
    blocks of 32 bytes; byte p holds weights p, p+32, p+64, p+96 at bits 7-6, 5-4, 3-2, 1-0;
    -1 -> 0, 0 -> 1, +1 -> 2; then one f32 scale; total n/4 + 32 bytes."""
    n = codes.size
    out = bytearray(n // 4 + 32)
    for e, t in enumerate(codes.reshape(-1).tolist()):
        block, r = divmod(e, 128)
        group, p = divmod(r, 32)
        out[block * 32 + p] |= (t + 1) << (6 - 2 * group)
    out[n // 4:n // 4 + 4] = np.float32(scale).tobytes()
    return bytes(out)


def test_i2s_decoding_matches_independent_packer():
    codes = rng.integers(-1, 2, size=512 * 3).astype(np.int8)
    raw = np.frombuffer(_i2s_pack_by_hand(codes, 0.25), dtype=np.uint8)
    got, scale = quants.decode_i2_s(raw, codes.size)
    assert np.array_equal(got, codes) and scale[0] == np.float32(0.25)
    assert np.array_equal(quants.encode_i2_s(codes, 0.25), raw)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("ptype", PROJ_TYPES)
def test_every_arch_and_type_imports_the_same_codes(tmp_path, arch, ptype):
    p = make_test_model(str(tmp_path / "m.gguf"), arch, ptype, n_layer=1, seed=3)
    ref = make_test_model(str(tmp_path / "ref.gguf"), arch, "tq2_0", n_layer=1, seed=3,
                          zero_fraction=0.0 if ptype == "q1_0" else 0.35)   # Q1_0 has no zeros
    m, r = load_gguf(p), load_gguf(ref)
    for (name, a), (_, b) in zip(m.layers[0].projections(), r.layers[0].projections()):
        assert np.array_equal(a.codes, b.codes), name
        tol = 1e-2 if ptype == "bf16" else 1e-6   # bf16 keeps 8 bits of the scale
        assert abs(a.scale - b.scale) <= tol * b.scale, name
    assert m.hp.family == {"llama": "llama", "qwen3": "qwen3"}.get(arch, "bitnet")
    assert (m.layers[0].attn_q_norm is not None) == (arch == "qwen3") == m.hp.qk_norm


def test_activation_rules(tmp_path):
    def act(arch, **kw):
        return load_gguf(make_test_model(str(tmp_path / f"{arch}.gguf"), arch, n_layer=1, **kw)).hp
    assert act("bitnet-b1.58").activation == "relu2"
    assert act("bitnet-25").activation == "relu2"
    hp = act("bitnet")
    assert hp.activation == "silu" and "hidden_activation" in hp.activation_reason
    assert act("bitnet", hidden_activation="relu2").activation == "relu2"
    hp = act("llama")
    assert hp.activation == "silu" and hp.rope_style == "norm" and not hp.sub_norms and not hp.tied_head


def test_bitnet_scale_tensors_are_folded(tmp_path):
    a = load_gguf(make_test_model(str(tmp_path / "a.gguf"), "bitnet", n_layer=1, seed=5, proj_scales=True))
    b = load_gguf(make_test_model(str(tmp_path / "b.gguf"), "bitnet", n_layer=1, seed=5, proj_scales=False))
    # same codes; a's scales are b's times the extra factor (random in [0.5, 1.5))
    ratio = a.layers[0].wq.scale / b.layers[0].wq.scale
    assert np.array_equal(a.layers[0].wq.codes, b.layers[0].wq.codes)
    assert 0.5 <= ratio < 1.5 and ratio != 1.0


def test_non_ternary_floats_refused_unless_ternarize(tmp_path):
    p = str(tmp_path / "ft.gguf")
    make_test_model(p, "llama", "f32", n_layer=1)
    from bitnet_aot.gguf_file import GGUFFile
    g = GGUFFile(p)
    kv = dict(g.kv)
    ts = []
    for t in g.tensors.values():
        data = g.raw(t.name).copy()
        if t.name == "blk.0.attn_q.weight":
            data = (np.random.default_rng(0).standard_normal(t.n_elements).astype("<f4")).view(np.uint8)
        ts.append(TensorToWrite(t.name, t.ggml_type, t.ne, data))
    g.close()
    kv = {k: v for k, v in kv.items()}
    q = str(tmp_path / "nt.gguf")
    write_gguf(q, kv, ts)
    with pytest.raises(BitnetError, match="blk.0.attn_q.weight.*not ternary.*--ternarize"):
        load_gguf(q)
    m = load_gguf(q, ternarize=True)
    assert set(np.unique(m.layers[0].wq.codes)) <= {-1, 0, 1}
    assert any("ternarize" in w for w in m.warnings)


def test_i2s_invalid_code_is_refused(tmp_path):
    p = str(tmp_path / "bad.gguf")
    make_test_model(p, "bitnet-b1.58", "i2_s", n_layer=1)
    from bitnet_aot.gguf_file import GGUFFile
    g = GGUFFile(p)
    off = g.tensors["blk.0.attn_k.weight"].offset
    g.close()
    with open(p, "r+b") as f:
        f.seek(off)
        f.write(b"\xff")
    with pytest.raises(BitnetError, match="attn_k.*invalid code"):
        load_gguf(p)


def test_writer_refuses_wrong_sizes(tmp_path):
    with pytest.raises(ValueError):
        write_gguf(str(tmp_path / "x.gguf"), {}, [TensorToWrite("t", I2_S, (128, 1), b"\0" * 10)])
