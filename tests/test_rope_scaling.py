"""RoPE scaling: linear, YaRN and Llama 3.1-style rope_freqs factors.

The frequencies and the cos/sin multiplier are checked against formulas written here from
the published descriptions (HF transformers' YaRN and llama3 rope parameters, llama.cpp's
ggml YaRN ramp), the reference forward pass against a float64 formulation of the graph
with those frequencies, and compiled models against the reference at positions well past
the original context (32), where scaling changes the logits. Bad or unsupported scaling
metadata is one error line.
"""
from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from bitnet_aot.errors import BitnetError
from bitnet_aot.factory import make_test_model
from bitnet_aot.gguf_file import GGUFFile, TensorToWrite
from bitnet_aot.gguf_import import load_gguf
from bitnet_aot.model import RopeScaling
from bitnet_aot.reference import Reference, rope, rope_frequencies

import graph64

from gguf import GGMLQuantizationType as Q

D, BASE = 64, 10000.0       # the factory's default head dim (256 / 4 heads) and RoPE base


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bitnet_aot.cli", *args], capture_output=True, text=True,
                          timeout=600)


# -- independent formulas ---------------------------------------------------------------
def hf_default(dim, base):
    return 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def hf_yarn(dim, base, factor, orig, beta_fast=32.0, beta_slow=1.0):
    """transformers' _compute_yarn_parameters as documented: inverse frequencies blended
    between interpolation (1 / (factor * pos_freq)) and extrapolation (1 / pos_freq) by a
    linear ramp over the correction range, attention factor 0.1 ln(factor) + 1."""
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)

    def correction_dim(rotations):
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))
    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    keep = 1 - ramp                          # weight of the extrapolated frequency
    return interpolation * (1 - keep) + extrapolation * keep, 0.1 * math.log(factor) + 1


def hf_llama3_factors(dim, base, factor, orig, low_freq_factor=1.0, high_freq_factor=4.0):
    """Llama 3.1: inv_freq_llama = inv_freq / divisor per pair; returns the divisors."""
    inv = hf_default(dim, base)
    out = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < orig / high_freq_factor:
            out.append(1.0)
        elif wavelen > orig / low_freq_factor:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(f / ((1 - smooth) * f / factor + smooth * f))
    return np.array(out)


def _hp(kind="none", factor=1.0, orig=0, **kw):
    from types import SimpleNamespace
    return SimpleNamespace(rope_dim=D, rope_base=BASE,
                           rope_scaling=RopeScaling(kind=kind, factor=factor, orig_ctx=orig, **kw))


def test_frequencies_match_the_published_formulas():
    theta, ms = rope_frequencies(_hp())
    assert ms == 1.0 and np.allclose(theta, hf_default(D, BASE), rtol=1e-14, atol=0)
    theta, ms = rope_frequencies(_hp("linear", 2.5))
    assert ms == 1.0 and np.allclose(theta, hf_default(D, BASE) / 2.5, rtol=1e-14, atol=0)
    for factor, orig, bf, bs in ((4.0, 32, 32.0, 1.0), (8.0, 4096, 32.0, 1.0), (2.0, 1000, 16.0, 2.0), (1.0, 64, 32.0, 1.0)):
        want, mscale = hf_yarn(D, BASE, factor, orig, bf, bs)
        theta, ms = rope_frequencies(_hp("yarn", factor, orig, beta_fast=bf, beta_slow=bs))
        assert np.allclose(theta, want, rtol=1e-14, atol=0), (factor, orig)
        assert abs(ms - mscale) < 1e-15, (factor, orig)
    # hand-computed anchors of factor 4, original context 32: the correction range is pairs
    # 0..6 (64 ln(32 / 2pi) / (2 ln 1e4) = 5.65, rounded up), so pair 0 keeps its frequency 1,
    # pairs 6..31 are divided by 4, and pair 5 keeps 1/6 of its own: (5/6) / 4 + 1/6 = 0.375;
    # cos/sin grow by 1 + 0.1 ln 4 = 1.1386
    theta, ms = rope_frequencies(_hp("yarn", 4.0, 32))
    assert theta[0] == 1.0 and abs(theta[31] - 1e4 ** (-62 / 64) / 4) < 1e-18
    assert abs(theta[6] - 1e4 ** (-12 / 64) / 4) < 1e-15 and abs(theta[5] - 0.375 * 1e4 ** (-10 / 64)) < 1e-15
    assert abs(ms - 1.1386294361119891) < 1e-15
    # ext_factor 0 turns YaRN into linear interpolation without the attention factor
    theta, ms = rope_frequencies(_hp("yarn", 4.0, 32, ext_factor=0.0))
    assert ms == 1.0 and np.allclose(theta, hf_default(D, BASE) / 4, rtol=1e-14, atol=0)
    # attn_factor multiplies on top; rope_freqs divide the frequencies
    _, ms = rope_frequencies(_hp("yarn", 4.0, 32, attn_factor=0.5))
    assert abs(ms - 0.5 * 1.1386294361119891) < 1e-15
    ff = hf_llama3_factors(D, BASE, 8.0, 32)
    assert ff[0] == 1.0 and ff[-1] == 8.0 and 1 < ff[2] < 8          # all three regimes occur
    theta, _ = rope_frequencies(_hp(), ff.astype(np.float32))
    assert np.allclose(theta, hf_default(D, BASE) / ff, rtol=1e-7, atol=0)


def test_factory_llama3_factors_match_the_published_formula():
    from bitnet_aot.factory import llama3_rope_freqs
    for factor, orig in ((8.0, 32), (8.0, 8192), (32.0, 256)):
        assert np.allclose(llama3_rope_freqs(D, BASE, factor, orig), hf_llama3_factors(D, BASE, factor, orig),
                           rtol=1e-6, atol=0)


def test_rope_rotates_by_the_frequencies_times_mscale():
    """reference.rope against complex multiplication, both pair layouts."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, D)).astype(np.float32)
    pos = np.array([0, 1, 31, 64, 127])
    theta, ms = rope_frequencies(_hp("yarn", 4.0, 32))
    rot = ms * np.exp(1j * pos[:, None, None] * theta[None, None, :])
    z = (x[..., :D // 2] + 1j * x[..., D // 2:]) * rot
    assert np.max(np.abs(rope(x, pos, theta, ms, "neox") - np.concatenate([z.real, z.imag], -1))) < 1e-5
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * rot
    want = np.stack([z.real, z.imag], -1).reshape(x.shape)
    assert np.max(np.abs(rope(x, pos, theta, ms, "norm") - want)) < 1e-5


# -- models -------------------------------------------------------------------------------
CASES = {   # name: (arch, factory arguments, independent (frequencies, mscale))
    "qwen3-yarn": ("qwen3", dict(rope_scaling="yarn", rope_factor=4.0, rope_orig_ctx=32),
                   lambda: hf_yarn(D, BASE, 4.0, 32)),
    "llama-rope_freqs": ("llama", dict(rope_freqs="llama3", rope_factor=8.0, rope_orig_ctx=32),
                         lambda: (hf_default(D, BASE) / hf_llama3_factors(D, BASE, 8.0, 32), 1.0)),
    "llama-linear": ("llama", dict(rope_scaling="linear", rope_factor=2.0),
                     lambda: (hf_default(D, BASE) / 2.0, 1.0)),
    # all of it at once: YaRN over rope_freqs-divided frequencies, attn_factor, norm-style pairs
    "llama-yarn-rope_freqs": ("llama", dict(rope_scaling="yarn", rope_factor=4.0, rope_orig_ctx=32,
                                            rope_freqs=hf_llama3_factors(D, BASE, 8.0, 32).astype(np.float32),
                                            extra_kv={"llama.rope.scaling.attn_factor": 0.75}), None),
}


def _model(path, name, **over):
    arch, kw = CASES[name][0], dict(n_layer=2, n_vocab=512, n_ctx=128, tokenizer="bpe", seed=7, **CASES[name][1])
    kw.update(over)
    return make_test_model(str(path), arch, "tq2_0", **kw)


def _independent(m, tokens, theta, mscale):
    """float64 formulation of the llama/qwen3 graph with the given RoPE frequencies and
    cos/sin multiplier: fake-quantized activations times codes*scale, complex rotation,
    whole-sequence softmax attention."""
    hp = m.hp
    T, H, Hkv, Dh = len(tokens), hp.n_head, hp.n_head_kv, hp.head_dim
    neox = hp.arch == "qwen3"

    lin = graph64.linear

    def norm(x, g):
        return graph64.rmsnorm(x, g, hp.norm_eps)

    rot = (mscale * np.exp(1j * np.arange(T)[:, None] * theta[None, :]))[:, None, :]

    def rope_(x):
        if neox:
            z = (x[..., :Dh // 2] + 1j * x[..., Dh // 2:]) * rot
            return np.concatenate([z.real, z.imag], axis=-1)
        z = (x[..., 0::2] + 1j * x[..., 1::2]) * rot
        return np.stack([z.real, z.imag], -1).reshape(x.shape)

    x = m.token_embd[np.asarray(tokens)].astype(np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for L in m.layers:
        h = norm(x, L.attn_norm)
        q, k = lin(h, L.wq).reshape(T, H, Dh), lin(h, L.wk).reshape(T, Hkv, Dh)
        if neox:
            q, k = norm(q, L.attn_q_norm), norm(k, L.attn_k_norm)
        q, k = rope_(q), np.repeat(rope_(k), H // Hkv, axis=1)
        v = np.repeat(lin(h, L.wv).reshape(T, Hkv, Dh), H // Hkv, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(Dh) + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + lin(np.einsum("hts,shd->thd", p, v).reshape(T, H * Dh), L.wo)
        h = norm(x, L.ffn_norm)
        g, u = lin(h, L.w_gate), lin(h, L.w_up)
        x = x + lin(g / (1 + np.exp(-g)) * u, L.w_down)
    return norm(x, m.output_norm) @ m.head.astype(np.float64).T


@pytest.mark.parametrize("name", ["qwen3-yarn", "llama-rope_freqs", "llama-linear"])
def test_reference_matches_independent_formulation(tmp_path, name):
    """One layer, 64 positions (relative distances up to twice the original context). The
    float64 formulation and the float32 reference may round one int8 activation differently
    at a .5 boundary, which moves that row's logits by ~1e-3 of their range; at most two rows
    may do so, every other row agrees to 1e-5."""
    m = load_gguf(_model(tmp_path / "m.gguf", name, n_layer=1))
    theta, mscale = CASES[name][2]()
    toks = list(np.random.default_rng(3).integers(0, 512, 64))
    want = _independent(m, toks, theta, mscale)
    err = np.max(np.abs(Reference(m, kv="f32").forward(toks) - want), axis=1) / np.ptp(want)
    assert (err > 1e-5).sum() <= 2 and err.max() < 1e-2, (name, np.flatnonzero(err > 1e-5), err.max())
    # and the scaling matters: with the unscaled frequencies every late row moves
    plain = _independent(m, toks, hf_default(D, BASE), 1.0)
    assert np.all(np.max(np.abs(plain[33:] - want[33:]), axis=1) > 3e-2 * np.ptp(want)), name


def _compiled_matches_reference(cache, path, n_threads=1):
    from bitnet_aot.bindings.api import CompiledModel
    lib = cache.build(path).output
    m = load_gguf(path)
    toks = np.random.default_rng(5).integers(3, 512, 100).astype(np.int32)
    ref = Reference(m)
    want = np.concatenate([ref.forward(toks[:40])] + [ref.forward(toks[i:i + 1]) for i in range(40, 100)])
    with CompiledModel(lib, n_ctx=128, n_threads=n_threads) as cm:
        got = np.concatenate([cm.eval(toks[:40])] + [cm.eval(toks[i:i + 1]) for i in range(40, 100)])
        err = np.max(np.abs(got - want), axis=1) / float(np.ptp(want))
        assert err.max() < 1e-3, (path, int(err.argmax()), float(err.max()))
        ids = cm.generate(toks[:20], 80, temperature=0.0, ignore_eos=True)      # positions 20..99
    assert ids == Reference(m).generate_greedy(toks[:20], 80)
    return want


# The generated C has no per-kind code (it reads the frequencies and the multiplier the
# compiler wrote), so two builds cover it in the default run: YaRN with its multiplier and
# NEOX pairs, and YaRN over rope_freqs with attn_factor and adjacent pairs. The single kinds
# each get their own build under -m slow; the emitted numbers of every kind are checked
# without compiling below.
@pytest.mark.parametrize("name", ["qwen3-yarn", "llama-yarn-rope_freqs",
                                  pytest.param("llama-rope_freqs", marks=pytest.mark.slow),
                                  pytest.param("llama-linear", marks=pytest.mark.slow)])
def test_compiled_matches_reference_past_the_original_context(cache, tmp_path, name):
    p = _model(tmp_path / f"{name}.gguf", name)
    want = _compiled_matches_reference(cache, p)
    # the test can fail: the unscaled model's reference differs at the late positions
    m = load_gguf(p)
    m.hp.rope_scaling, m.rope_freqs = RopeScaling(), None
    ref = Reference(m)
    toks = np.random.default_rng(5).integers(3, 512, 100).astype(np.int32)
    plain = np.concatenate([ref.forward(toks[:40])] + [ref.forward(toks[i:i + 1]) for i in range(40, 100)])
    assert np.max(np.abs(plain[40:] - want[40:])) > 1e-2 * np.ptp(want)


@pytest.mark.parametrize("name", list(CASES))
def test_generated_c_holds_the_frequencies(tmp_path, name):
    """--emit-c: BN_ROPE_FREQ in weights_index.c and BN_ROPE_MSCALE in model_config.h are the
    independent formula's numbers, and the build log names the scaling."""
    from bitnet_aot.build import build
    p = _model(tmp_path / "m.gguf", name)
    lines = []
    build(p, "host", emit_c=str(tmp_path / "c"), log=lines.append)
    src = (tmp_path / "c" / "gen" / "weights_index.c").read_text()
    body = re.search(r"BN_ROPE_FREQ\[BN_ROPE_DIM / 2\] = \{(.*?)\};", src, re.S).group(1)
    freq = np.array([float(v) for v in body.replace("\n", " ").split(",") if v.strip()])
    cfg = (tmp_path / "c" / "gen" / "model_config.h").read_text()
    mscale = float(re.search(r"#define BN_ROPE_MSCALE\s+(\S+)", cfg).group(1))
    if CASES[name][2] is None:                     # the composed case: YaRN of the divided frequencies
        ff = CASES[name][1]["rope_freqs"].astype(np.float64)
        want, ms = hf_yarn(D, BASE, 4.0, 32)
        want, ms = want / ff, ms * 0.75
    else:
        want, ms = CASES[name][2]()
    assert freq.size == D // 2 and np.allclose(freq, want, rtol=1e-7 if "freqs" in name else 1e-14, atol=0)
    assert abs(mscale - ms) < 1e-15
    log = [s for s in lines if s.startswith("rope scaling: ")]
    assert len(log) == 1, lines
    kind = CASES[name][1].get("rope_scaling")
    assert (kind or "none") in log[0] and ("rope_freqs" in log[0]) == ("rope_freqs" in CASES[name][1])


def test_unscaled_build_keeps_the_plain_frequencies(tmp_path):
    from bitnet_aot.build import build
    p = make_test_model(str(tmp_path / "m.gguf"), "qwen3", "tq2_0", n_layer=1, n_vocab=512, tokenizer="bpe")
    lines = []
    build(p, "host", emit_c=str(tmp_path / "c"), log=lines.append)
    assert not [s for s in lines if s.startswith("rope scaling")]
    cfg = (tmp_path / "c" / "gen" / "model_config.h").read_text()
    assert re.search(r"#define BN_ROPE_MSCALE\s+1\.0 ", cfg)


def test_inspect_prints_the_scaling(tmp_path):
    p = tmp_path / "m.gguf"
    r = _cli("make-test-model", str(p), "--arch", "qwen3", "--tokenizer", "bpe", "--n-layer", "1",
             "--rope-scaling", "yarn", "--rope-factor", "4", "--rope-orig-ctx", "64")
    assert r.returncode == 0, r.stderr
    kv = GGUFFile(str(p)).kv
    assert kv["qwen3.rope.scaling.type"] == "yarn" and kv["qwen3.rope.scaling.factor"] == 4.0
    assert kv["qwen3.rope.scaling.original_context_length"] == 64
    r = _cli("inspect", str(p))
    assert r.returncode == 0, r.stderr
    line = [s for s in r.stdout.splitlines() if s.startswith("rope scaling")]
    assert line == ["rope scaling  yarn x4, original context 64, beta_fast 32, beta_slow 1, ext_factor 1"], r.stdout
    r = _cli("inspect", str(p), "--json")
    import json
    rs = json.loads(r.stdout)["rope_scaling"]
    assert (rs["kind"], rs["factor"], rs["orig_ctx"], rs["rope_freqs"]) == ("yarn", 4.0, 64, None)
    r = _cli("make-test-model", str(p), "--arch", "llama", "--tokenizer", "bpe", "--n-layer", "1",
             "--rope-freqs", "llama3")
    assert r.returncode == 0, r.stderr
    assert GGUFFile(str(p)).tensors["rope_freqs.weight"].ne == (32,)
    r = _cli("inspect", str(p))
    assert "rope scaling  none; rope_freqs factors for 32 pairs (1..8)" in r.stdout, r.stdout


def test_defaults_and_legacy_keys(tmp_path):
    # YaRN without an original context: the trained context (llama.cpp's default)
    m = load_gguf(_model(tmp_path / "a.gguf", "qwen3-yarn", rope_orig_ctx=None))
    assert (m.hp.rope_scaling.kind, m.hp.rope_scaling.orig_ctx) == ("yarn", 128)
    # a factor without a type is linear; the old key rope.scale_linear too
    m = load_gguf(_model(tmp_path / "b.gguf", "llama-linear", rope_scaling=None))
    assert (m.hp.rope_scaling.kind, m.hp.rope_scaling.factor) == ("linear", 2.0)
    m = load_gguf(_model(tmp_path / "c.gguf", "llama-linear", rope_scaling=None, rope_factor=None,
                         extra_kv={"llama.rope.scale_linear": 3.0}))
    assert (m.hp.rope_scaling.kind, m.hp.rope_scaling.factor) == ("linear", 3.0)
    # YaRN parameters are read, not defaulted over
    m = load_gguf(_model(tmp_path / "d.gguf", "qwen3-yarn", extra_kv={
        "qwen3.rope.scaling.yarn_beta_fast": 16.0, "qwen3.rope.scaling.yarn_beta_slow": 2.0,
        "qwen3.rope.scaling.yarn_ext_factor": 0.5, "qwen3.rope.scaling.finetuned": True}))
    s = m.hp.rope_scaling
    assert (s.beta_fast, s.beta_slow, s.ext_factor, s.finetuned) == (16.0, 2.0, 0.5, True)
    # type none with factor 1 (or llama.cpp's unset 0) is no scaling
    m = load_gguf(_model(tmp_path / "e.gguf", "llama-linear", rope_scaling="none", rope_factor=1.0))
    assert m.hp.rope_scaling.kind == "none"


def _ff(values):
    a = np.asarray(values, dtype="<f4")
    return a


BAD = [  # (case, overrides, part of the message)
    ("qwen3-yarn", dict(rope_scaling="dynamic"), "rope.scaling.type 'dynamic' is unknown"),
    ("qwen3-yarn", dict(rope_scaling="longrope"), "'longrope' (Phi-3-style) is not supported"),
    ("qwen3-yarn", dict(rope_factor=0.5), "factor 0.5 must be in [1, 1024] for yarn"),
    ("llama-linear", dict(rope_factor=-2.0), "factor -2 must be in (0, 1024] for linear"),
    ("llama-linear", dict(rope_factor=float("nan")), "rope.scaling.factor' is nan"),
    ("llama-linear", dict(rope_scaling="none", rope_factor=4.0), "factor 4 contradicts"),
    ("qwen3-yarn", dict(rope_orig_ctx=0), "original_context_length = 0 is outside"),
    ("qwen3-yarn", dict(extra_kv={"qwen3.rope.scaling.type": 3}), "should be a string"),
    ("qwen3-yarn", dict(extra_kv={"qwen3.rope.scaling.attn_factor": 0.0}), "attn_factor 0 must be in (0, 16]"),
    ("qwen3-yarn", dict(extra_kv={"qwen3.rope.scaling.yarn_beta_fast": 1.0,
                                  "qwen3.rope.scaling.yarn_beta_slow": 32.0}), "0 < beta_slow < beta_fast"),
    ("qwen3-yarn", dict(extra_kv={"qwen3.rope.scaling.yarn_ext_factor": 2.0}), "yarn_ext_factor 2 must be in [0, 1]"),
    ("llama-linear", dict(extra_kv={"llama.rope.scaling.yarn_beta_fast": 32.0}), "is 'linear', not 'yarn'"),
    ("qwen3-yarn", dict(extra_kv={"qwen3.rope.scaling.yarn_log_multiplier": 0.1}), "yarn_log_multiplier"),
    ("qwen3-yarn", dict(extra_kv={"qwen3.rope.scaling.alpha": 1000.0}), "rope.scaling.alpha"),
    ("qwen3-yarn", dict(extra_kv={"qwen3.rope.scaling.yarn_attn_factor": 1.0}), "yarn_attn_factor"),
    ("llama-linear", dict(extra_kv={"llama.rope.scaling.factor": 2.0, "llama.rope.scale_linear": 4.0}), "disagree"),
    ("llama-rope_freqs", dict(rope_freqs=_ff(np.ones(16))), "rope_freqs.weight' has shape [16]"),
    ("llama-rope_freqs", dict(rope_freqs=_ff([0.0] + [1.0] * 31)), "its factors must be positive"),
    ("llama-rope_freqs", dict(rope_freqs=_ff([np.inf] + [1.0] * 31)), "NaN or infinite"),
    ("llama-linear", dict(extra_tensors=[TensorToWrite("rope_factors_long.weight", Q.F32, (32,), _ff(np.ones(32)))]),
     "LongRoPE"),
]


@pytest.mark.parametrize("case,over,msg", BAD, ids=[b[2][:32] for b in BAD])
def test_bad_scaling_is_one_clear_error(tmp_path, case, over, msg):
    p = _model(tmp_path / "bad.gguf", case, **over)
    with pytest.raises(BitnetError) as e:
        load_gguf(p)
    text = str(e.value)
    assert msg in text and "\n" not in text, text


def test_bad_scaling_on_the_command_line(tmp_path):
    p = _model(tmp_path / "bad.gguf", "qwen3-yarn", rope_scaling="ntk")
    for cmd in (["inspect", str(p)], ["build", str(p), "-o", str(tmp_path / "x")]):
        r = _cli(*cmd)
        assert r.returncode == 2, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "'ntk' is unknown" in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_published_shape_rope_keys():
    """A shape row with published YaRN numbers writes them; explicit arguments win; Ternary
    Bonsai 8B's were not found, so its shape writes none (configs.py says where we looked)."""
    from bitnet_aot import configs
    from bitnet_aot.factory import _shape_rope
    assert configs.get("ternary-bonsai-8b")["rope_yarn"] is None
    assert "not published" in configs.get("ternary-bonsai-8b")["rope_scaling"]
    row = {"rope_yarn": (4.0, 16384)}
    assert _shape_rope(row, None, None, None, None) == dict(rope_scaling="yarn", rope_factor=4.0,
                                                            rope_orig_ctx=16384, rope_freqs=None)
    assert _shape_rope(row, "linear", 2.0, None, None)["rope_scaling"] == "linear"
    assert _shape_rope({}, None, None, None, None) == dict(rope_scaling=None, rope_factor=None,
                                                           rope_orig_ctx=None, rope_freqs=None)
