"""Block-scaled ternary weights (runtime_c/core/kernels/i2sg.h): llama.cpp's Q2_0 (a scale
per 64 weights, levels -1, 0, +1, +2), PrismML's 128-weight Q2_0, Q1_0, and TQ1_0/TQ2_0
files whose blocks carry different scales run exactly as stored.

* the numpy reference of the grouped sums (reference.grouped_sums) is the float math of the
  dequantized weights, to float tolerance (checked against plain float64 numpy);
* every compiled-in kernel variant gives the reference's float32 bits exactly, for every
  group size, odd shapes, negative and subnormal scales, all four codes, any row split;
* a model built from such a file gives the reference's logits and greedy tokens, with
  logits bit-identical at every thread count (GEMV and GEMM paths).
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bitnet_aot.gguf_import import load_gguf  # noqa: E402
from bitnet_aot.kernels import build_kernel_program  # noqa: E402
from bitnet_aot.model import TernaryWeight  # noqa: E402
from bitnet_aot.pack import pack_group_scales, pack_i2s, padded_k  # noqa: E402
from bitnet_aot.reference import Reference, grouped_sums  # noqa: E402
from conftest import AVX512_VNNI_256, host_cpu_flags  # noqa: E402

rng = np.random.default_rng(7)


def random_weight(M, K, G, rng):
    codes = rng.integers(-1, 3, (M, K)).astype(np.int8)          # all four Q2_0 levels
    d = (rng.standard_normal((M, K // G)) * 0.02).astype(np.float16)
    special = np.array([6e-8, -6e-8, 0.0], np.float16)         # subnormal, negative subnormal, zero
    d.reshape(-1)[:min(3, d.size)] = special[:min(3, d.size)]
    return TernaryWeight(codes, 1.0, "test", group=G, group_scales=d.astype(np.float32))


def random_acts(N, K, rng):
    q = rng.integers(-128, 128, (N, K)).astype(np.int8)
    q[0, : min(K, 64)] = -128                                      # the extreme activation
    return q


def test_reference_is_the_dequantized_float_math():
    for G, K in ((64, 192), (128, 384), (256, 512)):
        w = random_weight(37, K, G, rng)
        q = random_acts(5, K, rng)
        dense = w.codes.astype(np.float64) * np.repeat(w.group_scales.astype(np.float64), G, axis=1)
        want = q.astype(np.float64) @ dense.T
        got = grouped_sums(q, w).astype(np.float64)
        assert np.max(np.abs(got - want)) <= 1e-6 * np.max(np.abs(want))


# ---- every kernel variant against the reference, bit for bit --------------------------------

_harnesses: dict = {}


def build_harness(tmp_path_factory, triple):
    if triple not in _harnesses:
        wd = tmp_path_factory.mktemp("grouped-harness")
        out = str(wd / "grouped_harness")
        build_kernel_program(triple, [os.path.join(ROOT, "tests", "grouped_harness.c")], out,
                             repo_root=ROOT, cflags=("-O2", "-Wall", "-Wextra", "-Werror"), workdir=str(wd))
        _harnesses[triple] = out
    return _harnesses[triple]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return [build_harness(tmp_path_factory, "x86_64-linux-musl")]


def _run(exe, args, stdin=b""):
    p = subprocess.run(exe + args, input=stdin, capture_output=True, timeout=1200)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return p.stdout


def _have(exe):
    lines = _run(exe, ["info"]).decode().split("\n")
    return [ln.split()[1] for ln in lines if ln.startswith("have ")], \
        [ln.split()[1] for ln in lines if ln.startswith("pick ")][0]


def test_dispatch_picks_the_best_variant_the_cpu_has(harness):
    have, pick = _have(harness)
    assert "i2sg_scalar" in have
    flags = host_cpu_flags()
    if "avx2" in flags and "f16c" in flags:
        assert "i2sg_avx2" in have
        vnni = AVX512_VNNI_256 <= flags
        assert ("i2sg_avx512vnni" in have) == vnni
        assert pick == ("i2sg_avx512vnni" if vnni else "i2sg_avx2")
    else:
        assert pick == "i2sg_scalar"


CASES = [  # (G, M, K, N): M not a multiple of the 4-row tile; K with a half block past 128s
    (64, 1, 64, 1), (64, 7, 192, 3), (64, 33, 320, 2), (128, 9, 256, 4), (128, 66, 640, 1),
    (256, 13, 768, 3), (64, 257, 2560, 2),
    (64, 6, 65536, 5),     # 1024 groups: the AVX-512 GEMM takes its tokens in chunks of 4
]


def check_variants(harness, G, M, K, N, expect=None):
    have, _ = _have(harness)
    if expect is not None:
        assert sorted(have) == sorted(expect)
    w = random_weight(M, K, G, rng)
    q = random_acts(N, K, rng)
    KP = padded_k(K)
    xq = np.zeros((N, KP), np.int8)
    xq[:, :K] = q
    want = grouped_sums(q, w)
    cuts = sorted(set([0, M] + list(rng.integers(0, M + 1, 3))))
    for name in have:
        nb = name.encode()
        case = struct.pack("<6i", len(nb), G, M, KP, N, len(cuts) - 1) + nb + struct.pack(f"<{len(cuts)}i", *cuts)
        case += pack_i2s(w.codes).tobytes() + pack_group_scales(w).tobytes() + xq.tobytes()
        out = _run(harness, ["run"], case)
        status = struct.unpack("<i", out[:4])[0]
        assert status == 0, (name, status)
        y = np.frombuffer(out[4:], np.float32).reshape(2, N, M)
        for how, got in zip(("gemv", "gemm"), y):
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (name, how, G, M, K, N)


@pytest.mark.parametrize("G,M,K,N", CASES)
def test_every_variant_matches_the_reference_bits(harness, G, M, K, N):
    check_variants(harness, G, M, K, N)


@pytest.mark.emulated
@pytest.mark.parametrize("cpu,expect", [
    ("max", ["i2sg_neon_dotprod", "i2sg_neon", "i2sg_scalar"]),
    ("cortex-a72", ["i2sg_neon", "i2sg_scalar"]),           # no dot product
])
def test_aarch64_variants_match_the_reference_bits(tmp_path_factory, cpu, expect):
    import shutil
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (apt-get install qemu-user)")
    exe = ["qemu-aarch64", "-cpu", cpu, build_harness(tmp_path_factory, "aarch64-linux-musl")]
    for G, M, K, N in CASES:
        check_variants(exe, G, M, K, N, expect)


# ---- whole models -----------------------------------------------------------------------------

@pytest.mark.parametrize("ptype", ["q2_0", "q2_0_g128", "q1_0", "tq2_0"])
def test_compiled_block_scaled_model_matches_reference(cache, ptype):
    from bitnet_aot.bindings.api import CompiledModel
    gguf = cache.model("llama", ptype, n_layer=2, block_scales=True)
    m = load_gguf(gguf)
    groups = {w.group for L in m.layers for _, w in L.projections()}
    assert groups == {{"q2_0": 64, "q2_0_g128": 128, "q1_0": 128, "tq2_0": 256}[ptype]}
    if ptype.startswith("q2_0"):
        assert any(np.any(w.codes == 2) for L in m.layers for _, w in L.projections())
    lib = cache.build(gguf).output
    toks = np.random.default_rng(1).integers(3, m.hp.n_vocab, 24).astype(np.int32)
    want = Reference(m).forward(toks)
    ref_ids = Reference(m).generate_greedy(toks[:6], 24)
    outs = []
    for threads in (1, 2, 3):
        with CompiledModel(lib, n_ctx=128, n_threads=threads) as cm:
            got = np.concatenate([cm.eval(toks[:12])] + [cm.eval(toks[i:i + 1]) for i in range(12, 24)])
            assert np.max(np.abs(got - want)) < 1e-3 * float(np.ptp(want)), (ptype, threads)
            outs.append(got)
            assert cm.generate(toks[:6], 24, temperature=0.0, ignore_eos=True) == ref_ids, (ptype, threads)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_info_names_the_block_scaled_kernel(cache):
    gguf = cache.model("llama", "q2_0", n_layer=1, block_scales=True)
    exe = cache.build(gguf, "x86_64-linux", shared=False).output
    r = subprocess.run([exe, "--info"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "block-scaled kernel: i2sg_" in r.stdout


@pytest.mark.emulated
@pytest.mark.parametrize("target,qemu", [
    ("aarch64-linux", ["qemu-aarch64", "-cpu", "cortex-a76"]),
    ("x86_64-linux", ["qemu-x86_64", "-cpu", "Nehalem"]),      # no AVX2: i2sg_scalar
])
def test_block_scaled_model_on_other_cpus(cache, target, qemu):
    import shutil
    if shutil.which(qemu[0]) is None:
        pytest.skip(f"{qemu[0]} not installed (apt-get install qemu-user)")
    gguf = cache.model("llama", "q2_0", n_layer=2, block_scales=True)
    m = load_gguf(gguf)
    prompt = [int(t) for t in np.random.default_rng(3).integers(3, m.hp.n_vocab, 6)]
    want = Reference(m).generate_greedy(prompt, 16)
    exe = cache.build(gguf, target, shared=False).output
    r = subprocess.run(qemu + [exe, "--ids", " ".join(map(str, prompt)), "-n", "16", "--temp", "0",
                               "--print-ids", "--ignore-eos", "-t", "2"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [int(t) for t in r.stdout.split()] == want
    info = subprocess.run(qemu + [exe, "--info"], capture_output=True, text=True, timeout=300).stdout
    assert "block-scaled kernel: " + ("i2sg_neon_dotprod" if target.startswith("aarch64") else "i2sg_scalar") in info


def test_bonsai_shape_as_published_matches_reference(tmp_path):
    """Ternary Bonsai 1.7B's exact widths (qwen3: per-head q/k norms, D = 128), one layer, a
    small vocabulary, projections as PrismML ships them: Q2_0 in 128-weight groups with a
    scale per group; made with the CLI a user would use."""
    from bitnet_aot.bindings.api import CompiledModel
    from bitnet_aot.build import build
    p = str(tmp_path / "bonsai.gguf")
    r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "make-test-model", p, "--shape", "ternary-bonsai-1.7b",
                        "--type", "q2_0_g128", "--block-scales", "--n-layer", "1", "--n-vocab", "1024"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    m = load_gguf(p)
    assert {w.group for _, w in m.layers[0].projections()} == {128}
    lib = build(p, "host", str(tmp_path / "bonsai"), shared=True, log=lambda *_: None).output
    toks = np.random.default_rng(5).integers(3, m.hp.n_vocab, 16).astype(np.int32)
    want = Reference(m).forward(toks)
    with CompiledModel(lib, n_ctx=64, n_threads=2) as cm:
        got = np.concatenate([cm.eval(toks[:8])] + [cm.eval(toks[i:i + 1]) for i in range(8, 16)])
        assert np.max(np.abs(got - want)) < 1e-3 * float(np.ptp(want))
        assert cm.generate(toks[:4], 12, temperature=0.0, ignore_eos=True) == Reference(m).generate_greedy(toks[:4], 12)


def test_inspect_says_which_projections_run_block_scaled(cache):
    gguf = cache.model("llama", "q2_0", n_layer=2, block_scales=True)
    r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "inspect", gguf], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("block-scaled"))
    assert "14 projections keep a scale per 64 weights" in line
    plain = cache.model("llama", "q2_0", n_layer=2)
    r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "inspect", plain], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "block-scaled" not in r.stdout, r.stderr
