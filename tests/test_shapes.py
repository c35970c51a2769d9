"""Published model configurations (compiler/configs.py) and `make-test-model --shape NAME`.

For every published shape: the factory writes a GGUF that the importer and `inspect` read
back with the published widths, heads, head dim, vocabulary, RoPE base, epsilon, tied or
untied head and special ids; and the compiled model matches the reference at the exact
widths with one layer and a small vocabulary (the default run takes four shapes that cover
every code path; the rest run under -m slow). The qwen3 graph (per-head q/k RMSNorm, head
dim != E/H) is also checked against a float64 formulation written here.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bitnet_aot import configs
from bitnet_aot.factory import make_shape_model
from bitnet_aot.gguf_import import load_gguf
from bitnet_aot.reference import Reference

import graph64

SHAPES = configs.shape_names()
# One layer, exact widths: these four cover SentencePiece + sub-norms + K not a multiple of
# 256 (I2_S), the llama graph with D=256, and qwen3 with H*D != E; the others run under slow.
DEFAULT = ["bitnet_b1_58-3b", "falcon3-1b-instruct-1.58bit", "ternary-bonsai-4b", "ternary-bonsai-1.7b"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bitnet_aot.cli", *args], capture_output=True, text=True,
                          timeout=900)


def test_table_rows_are_complete_and_consistent():
    need = ("hf_repo", "arch", "n_embd", "n_layer", "n_ff", "n_head", "n_head_kv", "head_dim", "n_vocab",
            "n_ctx", "rope_base", "norm_eps", "tied", "activation", "qk_norm", "tokenizer", "bos", "eos",
            "source", "weights")
    assert len(SHAPES) == 11
    for name in SHAPES:
        row = configs.PUBLISHED[name]
        for k in need:
            assert k in row, (name, k)
        assert row["source"], name
        assert row["n_head"] % row["n_head_kv"] == 0, name
        assert row["head_dim"] % 2 == 0, name
        if row["arch"].startswith("bitnet"):
            assert row["n_head"] * row["head_dim"] == row["n_embd"], name
    # hand-checked facts from the model cards / config.json files (not from the table)
    assert configs.get("ternary-bonsai-4b")["n_head"] * configs.get("ternary-bonsai-4b")["head_dim"] == 4096
    assert configs.get("falcon3-10b-instruct-1.58bit")["n_layer"] == 40
    assert configs.get("2b4t")["n_vocab"] == 128256
    for name in ("falcon-e-1b", "falcon-e-3b"):
        assert not configs.PUBLISHED[name]["verified"]
        with pytest.raises(KeyError, match="not found"):
            configs.get(name)


def test_unverified_or_unknown_shape_is_one_error_line(tmp_path):
    for name in ("falcon-e-1b", "no-such-model"):
        r = _cli("make-test-model", str(tmp_path / "x.gguf"), "--shape", name)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], r.stderr
    r = _cli("make-test-model", str(tmp_path / "x.gguf"), "--shape", "ternary-bonsai-4b", "--n-embd", "512")
    assert r.returncode == 2 and "--n-embd" in r.stderr


def _big(name):
    row = configs.get(name)
    return row["n_ff"] * row["n_embd"] > 40_000_000


# The widest shapes take most of a minute to generate on a shared 2-core machine: -m slow.
IMPORT_SHAPES = [pytest.param(n, marks=pytest.mark.slow) if _big(n) else n for n in SHAPES]


@pytest.mark.parametrize("name", IMPORT_SHAPES)
def test_shape_imports_with_the_published_numbers(tmp_path, name):
    row = configs.get(name)
    p = make_shape_model(str(tmp_path / "m.gguf"), name, n_layer=1, n_vocab=1024)
    from bitnet_aot.cli import inspect_report
    r = inspect_report(p, False)
    hp = r["hparams"]
    want = {"n_embd": row["n_embd"], "n_ff": row["n_ff"], "n_head": row["n_head"], "n_head_kv": row["n_head_kv"],
            "head_dim": row["head_dim"], "n_ctx_train": row["n_ctx"], "rope_base": row["rope_base"],
            "tied_head": row["tied"], "n_layer": 1, "n_vocab": 1024, "sub_norms": row["arch"].startswith("bitnet")}
    for k, v in want.items():
        assert hp[k] == v, (name, k, hp[k], v)
    assert abs(hp["norm_eps"] - row["norm_eps"]) < 1e-3 * row["norm_eps"]
    assert r["architecture"] == row["arch"]
    assert r["activation"] == row["activation"]
    assert r["rope_style"] == ("norm" if row["arch"] == "llama" else "neox")
    pre = {"llama3": "llama-bpe", "falcon3": "falcon3", "qwen2": "qwen2", "llama-spm": None}[row["tokenizer"]]
    assert r["tokenizer"]["pre"] == pre and r["tokenizer"]["c_tokenizer"] == "yes"
    m = load_gguf(p)
    assert m.hp.qk_norm == row["qk_norm"]
    assert m.layers[0].wq.shape == (row["n_head"] * row["head_dim"], row["n_embd"])
    assert m.layers[0].wo.shape == (row["n_embd"], row["n_head"] * row["head_dim"])
    # special ids below the reduced vocabulary are at their published ids
    for i, text in row["specials"].items():
        if i < 1024:
            assert m.tokenizer.tokens[i] == text, (name, i)
    if row["eos"] < 1024:
        assert m.tokenizer.eos_id == row["eos"]


def test_full_vocabulary_special_ids(tmp_path):
    """At the published vocabulary size every special token sits at its published id."""
    p = make_shape_model(str(tmp_path / "m.gguf"), "bitnet_b1_58-large", n_layer=1)
    m = load_gguf(p)
    assert m.hp.n_vocab == 32002 and len(m.tokenizer.tokens) == 32002
    assert (m.tokenizer.bos_id, m.tokenizer.eos_id, m.tokenizer.unk_id) == (1, 2, 0)
    assert m.tokenizer.tokens[32000] == "<pad>" and m.tokenizer.tokens[32001] == "</line>"


def _independent_qwen3(m, tokens):
    """float64 formulation of the qwen3 graph: fake-quantized activations times codes*scale,
    per-head RMSNorm of q and k, NEOX RoPE via complex numbers, whole-sequence attention."""
    hp = m.hp
    T, H, Hkv, D = len(tokens), hp.n_head, hp.n_head_kv, hp.head_dim

    lin = graph64.linear

    def norm(x, g):
        return graph64.rmsnorm(x, g, hp.norm_eps)

    half = D // 2
    rot = np.exp(1j * np.arange(T)[:, None] * (hp.rope_base ** (-np.arange(half) * 2.0 / D))[None, :])[:, None, :]

    def rope(x):
        z = (x[..., :half] + 1j * x[..., half:]) * rot
        return np.concatenate([z.real, z.imag], axis=-1)

    x = m.token_embd[np.asarray(tokens)].astype(np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for L in m.layers:
        h = norm(x, L.attn_norm)
        q = rope(norm(lin(h, L.wq).reshape(T, H, D), L.attn_q_norm))
        k = np.repeat(rope(norm(lin(h, L.wk).reshape(T, Hkv, D), L.attn_k_norm)), H // Hkv, axis=1)
        v = np.repeat(lin(h, L.wv).reshape(T, Hkv, D), H // Hkv, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(D) + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        a = np.einsum("hts,shd->thd", p, v).reshape(T, H * D)
        x = x + lin(a, L.wo)
        h = norm(x, L.ffn_norm)
        g, u = lin(h, L.w_gate), lin(h, L.w_up)
        x = x + lin(g / (1 + np.exp(-g)) * u, L.w_down)
    return norm(x, m.output_norm) @ m.head.astype(np.float64).T


@pytest.mark.parametrize("head_dim", [None, 128])
def test_reference_qwen3_matches_independent_formulation(tmp_path, head_dim):
    """Small widths (at the published widths float32 and float64 drift apart by more than the
    tolerance after two layers, as any two float formulations do); head_dim 128 with 4 heads
    and E 256 makes q 512 wide, as in Ternary-Bonsai-4B."""
    from bitnet_aot.factory import make_test_model
    m = load_gguf(make_test_model(str(tmp_path / "m.gguf"), "qwen3", "tq2_0", n_layer=2, n_embd=256, n_head=4,
                                  n_head_kv=2, head_dim=head_dim, tokenizer="bpe", n_vocab=512,
                                  rope_base=1000000.0, norm_eps=1e-6))
    assert m.hp.q_dim == (512 if head_dim else 256)
    toks = list(np.random.default_rng(3).integers(0, 512, 16))
    ref = Reference(m, kv="f32")
    got = np.concatenate([ref.forward(toks[:7]), ref.forward(toks[7:])])
    want = _independent_qwen3(m, toks)
    assert np.max(np.abs(got - want)) < 1e-3 * np.ptp(want)
    # and the q/k norms matter: without them the logits move
    for L in m.layers:
        L.attn_q_norm = L.attn_q_norm * 0 + 1.5
    assert np.max(np.abs(Reference(m, kv="f32").forward(toks) - want)) > 1e-2 * np.ptp(want)


def _compiled_matches(cache, tmp_path, name):
    from bitnet_aot.bindings.api import CompiledModel
    p = make_shape_model(str(tmp_path / f"{name}.gguf"), name, n_layer=1, n_vocab=1024, n_ctx=256)
    lib = cache.build(p).output
    m = load_gguf(p)
    toks = np.random.default_rng(0).integers(3, 1024, 24).astype(np.int32)
    want = Reference(m).forward(toks)
    with CompiledModel(lib, n_ctx=128, n_threads=2) as cm:
        got = np.concatenate([cm.eval(toks[:12])] + [cm.eval(toks[i:i + 1]) for i in range(12, 24)])
        assert np.max(np.abs(got - want)) < 1e-3 * float(np.ptp(want)), name
        ids = cm.generate(toks[:5], 16, temperature=0.0, ignore_eos=True)
    assert ids == Reference(m).generate_greedy(toks[:5], 16), name


@pytest.mark.parametrize("name", DEFAULT)
def test_compiled_shape_matches_reference(cache, tmp_path, name):
    _compiled_matches(cache, tmp_path, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [s for s in SHAPES if s not in DEFAULT])
def test_compiled_shape_matches_reference_slow(cache, tmp_path, name):
    _compiled_matches(cache, tmp_path, name)


def test_make_test_model_shape_cli(tmp_path):
    out = str(tmp_path / "b.gguf")
    r = _cli("make-test-model", out, "--shape", "ternary-bonsai-4b", "--n-layer", "1", "--n-vocab", "512")
    assert r.returncode == 0, r.stderr
    r = _cli("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["architecture"] == "qwen3" and j["hparams"]["head_dim"] == 128 and j["hparams"]["n_embd"] == 2560
    assert "attn_q_norm" in " ".join(t["name"] for t in j["tensors"])
