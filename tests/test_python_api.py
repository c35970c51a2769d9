"""BitNetModel (bindings/model.py): from_pretrained's build cache, generate, stream,
generate_batch and typed errors, on a factory model compiled for this machine."""
from __future__ import annotations

import os
import time

import pytest

from bitnet_aot.bindings.api import CompiledModel
from bitnet_aot import (BitNetModel, CompileError, Completion, ContextLengthError, GenerationError,
                        LoadError)
from bitnet_aot.bindings.model import cache_key
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
    assert len(full) >= 6, full            # greedy and ignore_eos: 24 tokens of the bundled model
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


# -------------------------------------------------------------------------------------
# As OpenAI and llama.cpp users expect it (issue 18)
# -------------------------------------------------------------------------------------

SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "ignore_eos": True}


def test_seed_is_random_by_default_and_returned(model):
    outs = [model.generate("The quick brown fox", max_tokens=20, **SAMPLING) for _ in range(3)]
    seeds = [o.seed for o in outs]
    assert len(set(seeds)) == 3 and len(set(outs)) > 1, (seeds, outs)
    again = model.generate("The quick brown fox", max_tokens=20, seed=outs[1].seed, **SAMPLING)
    assert again == outs[1] and again.tokens == outs[1].tokens and again.seed == outs[1].seed
    assert model.generate("The quick brown fox", max_tokens=20, seed=-1, **SAMPLING).seed not in seeds
    st = model.stream("The quick brown fox", max_tokens=20, seed=outs[2].seed, **SAMPLING)
    assert st.seed == outs[2].seed and "".join(st) == outs[2]
    # generate_batch: one random seed per prompt, each reproducible by generate()
    batch = model.generate_batch(["Hello", "Hello"], max_tokens=12, **SAMPLING)
    assert batch[0].seed != batch[1].seed
    assert model.generate("Hello", max_tokens=12, seed=batch[1].seed, **SAMPLING) == batch[1]


def test_completion_carries_the_finish_reason(model):
    out = model.generate("Once upon a time", max_tokens=7, temperature=0, ignore_eos=True)
    assert isinstance(out, str) and isinstance(out, Completion)
    assert out.finish_reason == "length" and not out.context_full and len(out.tokens) == 7
    assert out.text == str(out) and type(out.text) is str
    assert out.prompt_tokens == len(model.tokenize("Once upon a time"))
    # the context fills first: "length" with context_full; -1 runs until it is full
    n_prompt = out.prompt_tokens
    full = model.generate("Once upon a time", max_tokens=100000, temperature=0, ignore_eos=True)
    assert full.finish_reason == "length" and full.context_full and len(full.tokens) == model.n_ctx - n_prompt
    unl = model.generate("Once upon a time", max_tokens=-1, temperature=0, ignore_eos=True)
    assert unl.context_full and unl.tokens == full.tokens
    # a stop string: "stop", the text cut before it
    stop = out.text[2:4]
    if stop.strip():
        cut = model.generate("Once upon a time", max_tokens=7, temperature=0, ignore_eos=True, stop=stop)
        assert cut.finish_reason == "stop" and cut == out.text[:out.text.index(stop)]
    # streams end with the reason too
    st = model.stream("Once upon a time", max_tokens=7, temperature=0, ignore_eos=True)
    assert st.finish_reason is None
    assert "".join(st) == out and st.finish_reason == "length" and st.tokens == out.tokens
    assert st.result == out


def test_finish_stop_at_end_of_text(model):
    eos = model.info.get("eos")
    for seed in range(60):     # temperature 100: near-uniform, EOS is sampled soon
        out = model.generate("Hi", max_tokens=2000, temperature=100, top_k=0, top_p=1, min_p=0, seed=seed)
        if out.finish_reason == "stop":
            assert not out.context_full and len(out.tokens) < 2000 and model.lib.bn_is_eog(out.tokens[-1])
            return
    pytest.fail(f"no run ended at an end-of-text token (eos {eos})")


def test_stop_accepts_a_string_or_a_list(model):
    full = model.generate("Once upon a time", max_tokens=24, temperature=0, ignore_eos=True)
    letter = next((c for c in full[2:] if c.isalpha()), None)
    assert letter is not None, full
    as_str = model.generate("Once upon a time", max_tokens=24, temperature=0, ignore_eos=True, stop=letter)
    as_list = model.generate("Once upon a time", max_tokens=24, temperature=0, ignore_eos=True, stop=[letter])
    assert as_str == as_list == full[:full.index(letter)]
    assert "".join(model.stream("Once upon a time", max_tokens=24, temperature=0, ignore_eos=True,
                                stop=letter)) == as_str
    assert model.generate_batch(["Once upon a time"], max_tokens=24, temperature=0, ignore_eos=True,
                                stop=letter) == [as_str]
    with pytest.raises(TypeError, match="stop must be a str or a list of str"):
        model.generate("x", stop=5)


@pytest.mark.parametrize("kw, exc, msg", [
    ({"temperature": -3}, ValueError, "temperature must be between 0 and 100, got -3"),
    ({"temperature": "hot"}, TypeError, "temperature expects a number, got 'hot'"),
    ({"top_k": -1}, ValueError, "top_k must be between 0 and "),
    ({"top_p": 2}, ValueError, "top_p must be between 0 and 1, got 2"),
    ({"min_p": -0.5}, ValueError, "min_p must be between 0 and 1, got -0.5"),
    ({"repeat_penalty": 0}, ValueError, "repeat_penalty must be between 0.01 and 100, got 0"),
    ({"repeat_last_n": -1}, ValueError, "repeat_last_n must be between 0 and 1048576, got -1"),
    ({"max_tokens": -2}, ValueError, "max_tokens must be between -1 and 16777216, got -2"),
    ({"max_tokens": 2.5}, TypeError, "max_tokens expects an integer, got 2.5"),
    ({"seed": -2}, ValueError, "seed must be between -1 and "),
])
def test_arguments_are_checked_like_the_cli(model, kw, exc, msg):
    """The compiled CLI's ranges and wording (runtime_c/app/options.c: `--temp must be between
    0 and 100, got -3`), with the Python names."""
    for call in (lambda: model.generate("Hi", **kw), lambda: model.stream("Hi", **kw),
                 lambda: model.generate_batch(["Hi"], **kw)):
        with pytest.raises(exc) as e:
            call()
        assert str(e.value).startswith(msg), str(e.value)


def test_bad_prompts_and_constructor_arguments(model, gguf, cache_dir):
    with pytest.raises(TypeError, match="prompt must be a str, got NoneType"):
        model.generate(None)
    with pytest.raises(TypeError, match="prompt must be a str, got bytes"):
        model.stream(b"hi")
    with pytest.raises(TypeError, match="prompts must be a list of str"):
        model.generate_batch("hello")
    with pytest.raises(TypeError, match="text must be a str"):
        model.tokenize(None)
    with pytest.raises(ValueError, match="n_threads must be between 1 and 256, got 0"):
        BitNetModel.from_pretrained(gguf, n_threads=0, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="n_threads must be between 1 and 256, got 0"):
        BitNetModel(model.library, n_threads=0)
    with pytest.raises(ValueError, match="n_ctx must be between 0 and 256, got 300"):
        BitNetModel(model.library, n_ctx=300)
    assert BitNetModel(model.library, n_ctx=0).n_ctx == 256          # 0: the trained context
    with pytest.raises(TypeError):
        BitNetModel.from_pretrained(None)


def test_from_pretrained_takes_a_folder_with_one_gguf(model, gguf, cache_dir, tmp_path):
    import shutil
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(gguf, d / "model.gguf")
    (d / "README.md").write_text("a model")
    m = BitNetModel.from_pretrained(str(d), cache_dir=cache_dir)
    assert m.library == model.library                   # the same GGUF: the same cached build
    shutil.copy(gguf, d / "other.gguf")
    with pytest.raises(LoadError, match="2 .gguf files"):
        BitNetModel.from_pretrained(str(d), cache_dir=cache_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LoadError, match="no .gguf"):
        BitNetModel.from_pretrained(str(empty), cache_dir=cache_dir)


def test_public_names_are_real_typed_imports():
    """In a fresh interpreter on the installed package: the names are attributes of the
    module (no __getattr__), py.typed is shipped, every public function has a docstring."""
    import subprocess
    import sys
    code = r'''
import importlib.resources, inspect, bitnet_aot
from bitnet_aot import (BitNetModel, CompiledModel, Completion, Stream, BitnetError, CompileError, LoadError,
                        ContextLengthError, GenerationError)
assert not hasattr(bitnet_aot, "__getattr__")
for n in bitnet_aot.__all__:
    assert n in vars(bitnet_aot), n
assert importlib.resources.files("bitnet_aot").joinpath("py.typed").is_file()
missing = []
for cls in (BitNetModel, CompiledModel, Completion, Stream):
    assert cls.__doc__, cls
    for name, f in vars(cls).items():
        if name.startswith("_"):
            continue
        f = f.__func__ if isinstance(f, classmethod) else f.fget if isinstance(f, property) else f
        if callable(f) and not (f.__doc__ or "").strip():
            missing.append(f"{cls.__name__}.{name}")
assert not missing, missing
hints = inspect.signature(BitNetModel.generate).return_annotation
assert "Completion" in str(hints), hints
print("ok")
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_default_thread_count_is_capped_for_small_models(model):
    """A model this small (a few MB of weights) decodes fastest at one thread: the default
    thread count (bn_default_threads, the CLI's -t default) is 1 whatever the core count;
    a 2B-4T-sized blob allows one thread per 32 MiB."""
    from bitnet_aot.codegen import threads_useful
    assert model.lib.bn_default_threads() == 1
    assert BitNetModel(model.library).n_threads == 1
    assert threads_useful(3 << 20) == 1 and threads_useful(64 << 20) == 2
    assert threads_useful(1_178_000_000) == 35 and threads_useful(1 << 40) == 256
