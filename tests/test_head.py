"""The output head alone (runtime_c/core/head.c and the head row kernels of
runtime_c/core/kernels/head_*.c, through tests/head_harness.c): the integer heads (q8, q6,
q4) give bit-identical logits on every head variant of the dispatch table this CPU can run
(portable, avx2, avxvnni, avx512vnni, avx512_avxvnni; on AArch64 under qemu: neon_dotprod,
neon) and equal compiler/reference.py's quantized_head, for head inputs with outliers, all-zero blocks and widths with padded blocks and a tail after the
SIMD groups of eight blocks."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from bitnet_aot.build import BASE_CFLAGS, build
from bitnet_aot.factory import make_test_model
from bitnet_aot.gguf_import import load_gguf
from bitnet_aot.pack import pack_matrix
from bitnet_aot.reference import quantized_head
from bitnet_aot.kernels import build_kernel_program
from conftest import AVX512_VNNI_256, avxvnni_as_evex, host_cpu_flags  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

x86_host = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"),
                              reason="the harness runs the x86-64 Linux paths natively (needs an x86-64 CPU)")


def _paths() -> list:
    """The head variants (kernels/dispatch.c head_ops_table) this CPU can run."""
    flags = host_cpu_flags()
    paths = ["portable"]
    if {"avx2", "f16c", "fma"} <= flags:
        paths.append("avx2")
        avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= flags
        if "avx_vnni" in flags:
            paths.append("avxvnni")
        if avx512:
            paths.append("avx512vnni")
        if avx512 and "avx_vnni" in flags:
            paths.append("avx512_avxvnni")
    return paths


def _evex_paths() -> list:
    """The AVX-VNNI rows that run only as their EVEX twin here (conftest.avxvnni_as_evex)."""
    flags = host_cpu_flags()
    return ["avxvnni", "avx512_avxvnni"] if "avx_vnni" not in flags and AVX512_VNNI_256 <= flags else []


def _run(exe: str, weights: str, variant: str, x: np.ndarray, unchecked: bool = False, prefix=(),
         expect: str | None = None) -> np.ndarray:
    """The harness's logits with head variant `variant` (None: the one the CPU picks, which
    must be `expect`)."""
    env = dict(os.environ)
    if variant:
        env["BN_HEAD_UNCHECKED" if unchecked else "BN_HEAD_VARIANT"] = variant
    r = subprocess.run(list(prefix) + [exe, weights], input=x.tobytes(), capture_output=True, env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr.decode().strip() == f"head {variant or expect}", r.stderr.decode()   # the variant asked for ran
    return np.frombuffer(r.stdout, np.float32).reshape(x.shape[0], -1)


def _harness(tmp_path, gguf: str, head: str, sources=None, arch: str = "x86_64") -> tuple:
    d = tmp_path / f"tree-{arch}-{head}"
    if not d.exists():
        build(gguf, f"{arch}-linux", emit_c=str(d), head=head, log=lambda s: None)
    exe = str(d / ("head_harness_evex" if sources else "head_harness"))
    build_kernel_program(f"{arch}-linux-musl", [os.path.join(ROOT, "tests", "head_harness.c"), str(d / "src" / "core" / "head.c"),
                                               str(d / "gen" / "weights_index.c")], exe, repo_root=ROOT,
                         cflags=tuple(["-O2"] + BASE_CFLAGS), main_cflags=("-I", str(d / "src"), "-I", str(d / "gen")),
                         workdir=str(d), sources=sources)
    return exe, str(d / "weights.bin")


def _inputs(E: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, E)).astype(np.float32)
    x[1, :32] = 0                                       # an all-zero block
    x[2, 5] = 40.0                                      # an outlier
    x[3] = np.round(x[3] * 2) / 2                       # values on rounding ties of x / d
    x[4, -7:] = 0
    x[5] *= np.float32(1e-3)
    return x


@x86_host
@pytest.mark.parametrize("width", [288, 512])
@pytest.mark.parametrize("head", ["q8", "q6", "q4"])
def test_every_code_path_gives_the_same_logits(tmp_path, width, head):
    gguf = make_test_model(str(tmp_path / "m.gguf"), "bitnet-b1.58", "f16", n_embd=width, n_head=width // 32,
                           n_head_kv=1, n_ff=256, n_layer=1, n_vocab=700, tokenizer=None)
    exe, weights = _harness(tmp_path, gguf, head)
    x = _inputs(width)
    want = quantized_head(x, pack_matrix(load_gguf(gguf).head, head))
    outs = {name: _run(exe, weights, name, x) for name in _paths()}
    if _evex_paths():
        evex, _ = _harness(tmp_path, gguf, head, avxvnni_as_evex())
        outs.update({name + " (EVEX)": _run(evex, weights, name, x, unchecked=True) for name in _evex_paths()})
    for name, got in outs.items():
        assert np.array_equal(got, want), (name, float(np.max(np.abs(got - want))))


@x86_host
@pytest.mark.parametrize("width", [288, 512])
def test_f16_head_avx512_rows_equal_avx2_rows(tmp_path, width):
    """The F16 head's 512-bit rows (AVX-512 CPUs) add the same products in the same lanes
    and order as the AVX2 rows: bit-identical logits, close to a float64 product."""
    paths = _paths()
    if "avx512vnni" not in paths:
        pytest.skip("this CPU has no AVX-512 VNNI")
    gguf = make_test_model(str(tmp_path / "m.gguf"), "bitnet-b1.58", "f16", n_embd=width, n_head=width // 32,
                           n_head_kv=1, n_ff=256, n_layer=1, n_vocab=700, tokenizer=None)
    exe, weights = _harness(tmp_path, gguf, "f16")
    x = _inputs(width)
    outs = {name: _run(exe, weights, name, x) for name in ("avx2", "avx512vnni")}
    assert np.array_equal(outs["avx2"], outs["avx512vnni"])
    head = pack_matrix(load_gguf(gguf).head, "f16").values.astype(np.float64)
    want = x.astype(np.float64) @ head.T
    assert np.allclose(outs["avx512vnni"], want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))))


# qemu CPU -> the head variants it can run (dispatch.c head_ops_table) and the one it picks
ARM_CPUS = {"max": (["neon_dotprod", "neon", "portable"], "neon_dotprod"), "cortex-a72": (["neon", "portable"], "neon")}


@pytest.mark.emulated
@pytest.mark.parametrize("width", [288, 512])
@pytest.mark.parametrize("head", ["q8", "q6", "q4", "f16"])
def test_aarch64_head_rows(tmp_path, width, head):
    """The AArch64 head rows (head_neon.c, head_neon_dotprod.c) under qemu: integer heads
    bit-identical to the portable rows and the numpy reference on a CPU with and without the
    dot product; the F16 rows close to a float64 product; the start-up pick per CPU."""
    import shutil
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed")
    gguf = make_test_model(str(tmp_path / "m.gguf"), "bitnet-b1.58", "f16", n_embd=width, n_head=width // 32,
                           n_head_kv=1, n_ff=256, n_layer=1, n_vocab=700, tokenizer=None)
    exe, weights = _harness(tmp_path, gguf, head, arch="aarch64")
    x = _inputs(width)
    if head == "f16":
        m = pack_matrix(load_gguf(gguf).head, "f16").values.astype(np.float64)
        want = x.astype(np.float64) @ m.T
    else:
        want = quantized_head(x, pack_matrix(load_gguf(gguf).head, head))
    for cpu, (variants, best) in ARM_CPUS.items():
        prefix = ["qemu-aarch64", "-cpu", cpu]
        outs = {name: _run(exe, weights, name, x, prefix=prefix) for name in variants}
        outs["picked"] = _run(exe, weights, None, x, prefix=prefix, expect=best)
        for name, got in outs.items():
            if head == "f16":
                assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want)))), (cpu, name)
            else:
                assert np.array_equal(got, want), (cpu, name, float(np.max(np.abs(got - want))))
