"""BitNetModel (bindings/model.py): from_pretrained's build cache, generate, stream,
generate_batch and typed errors, on a factory model compiled for this machine."""
from __future__ import annotations

import os
import time

import pytest

from bitnet_aot.bindings.api import CompiledModel
from bitnet_aot.bindings.model import (BitNetModel, CompileError, ContextLengthError, GenerationError,
                                       LoadError, cache_key)
from bitnet_aot.errors import BitnetError

PROMPTS = ["What is machine learning?", "Define deep learning", "Once upon a time", "Hello, world!"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="module")
def gguf(cache):
    return cache.model("bitnet-b1.58", "tq2_0")


@pytest.fixture(scope="module")
def model(gguf, cache_dir):
    return BitNetModel.from_pretrained(gguf, n_threads=2, cache_dir=cache_dir)


def test_from_pretrained_caches_the_build(gguf, cache_dir, model, capfd):
    assert model.library.startswith(cache_dir) and model.library.endswith("model.so")
    capfd.readouterr()
    t0 = time.time()
    again = BitNetModel.from_pretrained(gguf, cache_dir=cache_dir)
    assert time.time() - t0 < 5 and again.library == model.library
    assert "compiling" not in capfd.readouterr().err           # no second compile
    # by the library, by the cache directory, by the cache key
    key = os.path.basename(os.path.dirname(model.library))
    assert BitNetModel.from_pretrained(model.library).library == model.library
    assert BitNetModel.from_pretrained(os.path.dirname(model.library)).library == model.library
    assert BitNetModel.from_pretrained(key, cache_dir=cache_dir).library == model.library
    # options are part of the key
    assert cache_key("0" * 64, {}) != cache_key("0" * 64, {"kernel": "i2s"})
    assert model.info["architecture"] == "bitnet-b1.58"


def test_generate_matches_the_compiled_model(model):
    """Greedy text equals decoding the ids CompiledModel generates."""
    prompt = "Once upon a time"
    text = model.generate(prompt, max_tokens=16, temperature=0, ignore_eos=True)
    cm = CompiledModel(model.library, n_ctx=model.n_ctx, n_threads=1)
    ids = cm.tokenize(prompt)
    new = cm.generate(ids, 16, temperature=0.0, ignore_eos=True)
    want = cm.detokenize(ids + new)[len(cm.detokenize(ids)):].decode("utf-8", "replace")
    assert text == want
    cm.close()


def test_sampling_is_seeded(model):
    a = model.generate("The quick brown fox", max_tokens=20, temperature=1.0, seed=3, ignore_eos=True)
    b = model.generate("The quick brown fox", max_tokens=20, temperature=1.0, seed=3, ignore_eos=True)
    c = model.generate("The quick brown fox", max_tokens=20, temperature=1.0, seed=4, ignore_eos=True)
    assert a == b and a != c


def test_stream_joins_to_generate(model):
    for kw in ({"temperature": 0}, {"temperature": 0.9, "seed": 11}):
        full = model.generate("Hello", max_tokens=24, ignore_eos=True, **kw)
        pieces = list(model.stream("Hello", max_tokens=24, ignore_eos=True, **kw))
        assert "".join(pieces) == full and len(pieces) > 1
        assert all(isinstance(p, str) and p for p in pieces)


def test_stream_stops_when_closed(model):
    it = model.stream("Hello", max_tokens=200, temperature=0, ignore_eos=True)
    first = next(it)
    it.close()
    assert first
    assert model.generate("Hello", max_tokens=2, temperature=0)          # the context is free again


def test_stop_strings(model):
    full = model.generate("Once upon a time", max_tokens=24, temperature=0, ignore_eos=True)
    if len(full) < 6:
        pytest.skip("output too short to cut")
    stop = full[3:5]
    cut = model.generate("Once upon a time", max_tokens=24, temperature=0, ignore_eos=True, stop=[stop])
    assert cut == full[:full.index(stop)]
    assert "".join(model.stream("Once upon a time", max_tokens=24, temperature=0, ignore_eos=True,
                                stop=[stop])) == cut


def test_generate_batch_equals_sequential(model):
    for kw in ({"temperature": 0}, {"temperature": 0.8, "seed": 5}):
        seq = [model.generate(p, max_tokens=16, ignore_eos=True, **kw) for p in PROMPTS]
        assert model.generate_batch(PROMPTS, max_tokens=16, ignore_eos=True, **kw) == seq
    assert model.generate_batch([], max_tokens=4) == []


def test_typed_errors(model, tmp_path):
    with pytest.raises(ContextLengthError, match="context holds 256"):
        model.generate("word " * 400, max_tokens=4)
    with pytest.raises(ContextLengthError):
        model.generate_batch(["hi", "word " * 400], max_tokens=4)
    with pytest.raises(LoadError, match="no such file"):
        BitNetModel.from_pretrained(str(tmp_path / "missing.gguf"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    with pytest.raises(LoadError):
        BitNetModel.from_pretrained(str(junk))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(CompileError) as e:
        BitNetModel.from_pretrained(str(bad), cache_dir=str(tmp_path / "c"))
    assert str(e.value)
    for cls in (CompileError, LoadError, ContextLengthError, GenerationError):
        assert issubclass(cls, BitnetError)
