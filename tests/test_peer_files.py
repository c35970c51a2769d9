"""GGUFs written by llama.cpp's own quantizer (llama-quantize, build 11312) in TQ1_0, TQ2_0,
Q1_0 and Q2_0, and by bitnet.cpp's in I2_S (its type id 36), import as exactly the weights
they were quantized from, and the compiled models give the F16 model's logits and greedy
tokens.

The quantized files are in tests/data/peer-gguf (made by its make.py with the real
quantizers: our encoders played no part); their F16 sources are written again here by the
factory from the arguments manifest.json records."""
import hashlib
import json
import os

import numpy as np
import pytest

from bitnet_aot.factory import make_test_model
from bitnet_aot.gguf_import import load_gguf
from bitnet_aot.reference import Reference

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "peer-gguf")
MANIFEST = json.load(open(os.path.join(HERE, "manifest.json")))
FILES = {e["file"]: e for e in MANIFEST["files"]}
TYPE_NAMES = {"TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "Q1_0": "Q1_0", "Q2_0": "Q2_0", "I2_S": "I2_S"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """name -> path of the F16 source, written again by the factory."""
    d = tmp_path_factory.mktemp("peer-src")
    out = {}
    for e in MANIFEST["files"]:
        if e["source"] in out:
            continue
        p = make_test_model(str(d / (e["source"] + "-f16.gguf")), **e["factory"])
        with open(p, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        assert got == e["source_sha256"], (
            f"the factory no longer writes the F16 model {e['file']} was quantized from; "
            "rebuild the fixtures with tests/data/peer-gguf/make.py")
        out[e["source"]] = p
    return out


def test_manifest_covers_every_ternary_type():
    assert {e["type"] for e in MANIFEST["files"]} == set(TYPE_NAMES)
    assert {e["quantizer"].split()[0] for e in MANIFEST["files"]} == {"llama.cpp", "bitnet.cpp"}
    for name, e in FILES.items():
        with open(os.path.join(HERE, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == e["sha256"], name


@pytest.mark.parametrize("name", sorted(FILES))
def test_peer_file_imports_as_the_f16_weights(name, sources):
    e = FILES[name]
    q = load_gguf(os.path.join(HERE, name))
    f = load_gguf(sources[e["source"]])
    assert q.hp.n_layer == f.hp.n_layer and q.hp.n_embd == f.hp.n_embd
    n = 0
    for La, Lb in zip(q.layers, f.layers):
        for (pname, a), (_, b) in zip(La.projections(), Lb.projections()):
            assert a.source_type == TYPE_NAMES[e["type"]], (pname, a.source_type)
            assert a.group == 0, f"{pname}: one scale per tensor, so plain (not block-scaled)"
            assert np.array_equal(a.codes, b.codes), pname
            assert a.scale == b.scale, (pname, a.scale, b.scale)
            n += 1
    assert n == 7 * f.hp.n_layer
    assert np.array_equal(q.token_embd, f.token_embd)
    if e["type"] == "Q1_0":
        assert all(np.all(w.codes != 0) for L in q.layers for _, w in L.projections())
    toks = np.random.default_rng(2).integers(3, f.hp.n_vocab, 16)
    assert np.array_equal(Reference(q).forward(toks), Reference(f).forward(toks))


@pytest.mark.parametrize("name", sorted(FILES))
def test_compiled_peer_file_gives_the_f16_tokens(name, sources, cache):
    from bitnet_aot.bindings.api import CompiledModel
    e = FILES[name]
    ref = load_gguf(sources[e["source"]])
    lib = cache.build(os.path.join(HERE, name)).output
    toks = np.random.default_rng(3).integers(3, ref.hp.n_vocab, 20).astype(np.int32)
    want = Reference(ref).forward(toks)
    with CompiledModel(lib, n_ctx=128, n_threads=2) as cm:
        got = cm.eval(toks)
        assert np.max(np.abs(got - want)) < 1e-3 * float(np.ptp(want))
        ids = cm.generate(toks[:6], 20, temperature=0.0, ignore_eos=True)
    assert ids == Reference(ref).generate_greedy(toks[:6], 20)
