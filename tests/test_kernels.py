"""Ternary kernels: every kernel x ISA variant x batch size x row split, against numpy and
the scalar reference, on every target (native x86 by default; qemu-user and wasmtime under
`-m emulated`), plus the start-up CPU dispatch under CPU models that lack AVX2 / dot product.

Each case runs every row split three ways: gemv per token, one gemm call per range, and all
ranges at once on real threads (pthreads; sequential on wasm32) sharing one output.
One harness binary per target (tests/kernel_harness.c + the target's kernel sources from
compiler/kernels.py) is built once per session; every case of a test goes through one
process (stdin/stdout), so emulated targets pay the start-up once.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bitnet_aot.kernels import build_kernel_program  # noqa: E402
from bitnet_aot.pack import pack_i2s, padded_k  # noqa: E402
from bitnet_aot.pack_tl import pack_tl1, pack_tl2  # noqa: E402
from conftest import AVX512_VNNI_256, avxvnni_as_evex, host_cpu_flags  # noqa: E402

PACKERS = {"i2s": pack_i2s, "tl1": pack_tl1, "tl2": pack_tl2}
BATCHES = (1, 2, 3, 4, 5, 8, 17, 64)
# (M, K): K not a multiple of 3, 32, 128 or 256; M not a multiple of any tile (2, 4, 32).
RANDOM_SHAPES = ((1, 1), (7, 5), (33, 100), (31, 130), (65, 257), (3, 385), (45, 700), (97, 1000))
BITNET_2B_SHAPES = ((2560, 2560), (640, 2560), (6912, 2560), (2560, 6912))

# name -> (zig triple, extra cflags, runner prefix, emulated)
TARGETS = {
    "x86_64": ("x86_64-linux-musl", (), [], False),
    "x86_64-nehalem": ("x86_64-linux-musl", (), ["qemu-x86_64", "-cpu", "Nehalem"], True),
    "x86_64-haswell": ("x86_64-linux-musl", (), ["qemu-x86_64", "-cpu", "Haswell"], True),
    "aarch64": ("aarch64-linux-musl", (), ["qemu-aarch64", "-cpu", "max"], True),
    "aarch64-a72": ("aarch64-linux-musl", (), ["qemu-aarch64", "-cpu", "cortex-a72"], True),
    "aarch64-a76": ("aarch64-linux-musl", (), ["qemu-aarch64", "-cpu", "cortex-a76"], True),
    "armv7": ("arm-linux-musleabihf", (), ["qemu-arm", "-cpu", "cortex-a7"], True),
    "riscv64": ("riscv64-linux-musl", (), ["qemu-riscv64"], True),
    "wasm32": ("wasm32-wasi", ("-msimd128",), None, True),
}


# ---- building and running the harness ----------------------------------------------------

@pytest.fixture(scope="session")
def harness_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernel-harness")


_built: dict[str, str] = {}


def harness_for(triple: str, cflags: tuple, harness_dir, sources=None, tag: str = "") -> str:
    key = triple + " " + " ".join(cflags) + tag
    if key not in _built:
        wd = harness_dir / key.replace(" ", "_")
        wd.mkdir(exist_ok=True)
        out = str(wd / ("kernel_harness.wasm" if triple.startswith("wasm") else "kernel_harness"))
        build_kernel_program(triple, [os.path.join(ROOT, "tests", "kernel_harness.c")], out,
                             repo_root=ROOT, cflags=("-O2", "-Wall", "-Wextra", "-Werror") + cflags,
                             workdir=str(wd), sources=sources)
        _built[key] = out
    return _built[key]


def run_harness(target: str, harness_dir, args: list[str], stdin: bytes = b"") -> bytes:
    if target == "x86_64-avxvnni-as-evex":      # see conftest.avxvnni_as_evex
        triple, cflags, prefix = "x86_64-linux-musl", (), []
        exe = harness_for(triple, cflags, harness_dir, avxvnni_as_evex(), " avxvnni-as-evex")
    else:
        triple, cflags, prefix, _ = TARGETS[target]
        exe = harness_for(triple, cflags, harness_dir)
    if prefix is None:  # wasm32-wasi under wasmtime's Python API
        return run_wasm(exe, args, stdin, harness_dir)
    if prefix and shutil.which(prefix[0]) is None:
        pytest.skip(f"{prefix[0]} not installed")
    p = subprocess.run(prefix + [exe] + args, input=stdin, capture_output=True, timeout=1800)
    assert p.returncode == 0, f"{target}: harness exited {p.returncode}: {p.stderr.decode()[-2000:]}"
    return p.stdout


def run_wasm(exe: str, args: list[str], stdin: bytes, harness_dir) -> bytes:
    wasmtime = pytest.importorskip("wasmtime")
    inp, outp = harness_dir / "wasm-in.bin", harness_dir / "wasm-out.bin"
    inp.write_bytes(stdin)
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    cfg = wasmtime.WasiConfig()
    cfg.argv = ["kernel_harness"] + args
    cfg.stdin_file = str(inp)
    cfg.stdout_file = str(outp)
    cfg.inherit_stderr()
    store.set_wasi(cfg)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    module = wasmtime.Module.from_file(engine, exe)
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as e:
        assert e.code == 0, f"wasm harness exited {e.code}"
    return outp.read_bytes()


def harness_info(target: str, harness_dir) -> dict:
    out = run_harness(target, harness_dir, ["info"]).decode()
    info = {"have": [], "pick": {}}
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "have":
            info["have"].append(parts[1])
        elif parts[0] == "pick":
            info["pick"][parts[1]] = parts[2]
        else:
            info[parts[0]] = parts[1]
    return info


# ---- cases ------------------------------------------------------------------------------

class Case:
    def __init__(self, rng, M, K, N, splits):
        self.M, self.K, self.N, self.KP = M, K, N, padded_k(K)
        self.codes = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        q = rng.integers(-128, 128, size=(N, K), dtype=np.int16)
        # extremes (all -128 / all +127 tokens) make overflow visible
        if N >= 3:
            q[0, :] = -128
            q[1, :] = 127
        self.x = np.zeros((N, self.KP), dtype=np.int8)
        self.x[:, :K] = q
        self.splits = splits
        self.expect = (q.astype(np.int64) @ self.codes.astype(np.int64).T).astype(np.int32)  # [N, M]
        self.packed = {}

    def encode(self, kernel: str) -> bytes:
        layout = kernel.split(":")[-1].split("_")[0]
        if layout not in self.packed:
            self.packed[layout] = PACKERS[layout](self.codes).tobytes()
        w = self.packed[layout]
        name = kernel.encode()
        head = struct.pack("<7i", len(name), self.M, self.KP, self.N, len(self.splits) - 1, len(w), 0)
        return (head + name + struct.pack(f"<{len(self.splits)}i", *self.splits) + w
                + self.x.tobytes())


def splits_for(rng, M):
    """Row splits as threads would make them: whole, 2 and 3 uneven parts, an empty part,
    and tile-aligned chunks."""
    out = [[0, M]]
    if M >= 2:
        a = int(rng.integers(1, M))
        out.append([0, a, M])
        out.append([0, 0, a, a, M])  # empty ranges
    if M >= 3:
        a, b = sorted(int(v) for v in rng.choice(np.arange(1, M), size=2, replace=False))
        out.append([0, a, b, M])
    if M > 32:
        out.append(list(range(0, M, 32)) + [M])
    return out


def make_cases(seed: int, big: bool, batches=BATCHES, big_batches=(5,)):
    rng = np.random.default_rng(seed)
    cases = []
    for M, K in RANDOM_SHAPES:
        for N in batches:
            for sp in splits_for(rng, M)[: 2 if N > 8 else None]:
                cases.append(Case(rng, M, K, N, sp))
    if big:
        for M, K in BITNET_2B_SHAPES:
            for N in big_batches:
                cases.append(Case(rng, M, K, N, [0, M // 2 + 7, M]))
    return cases


def check_kernel(target: str, harness_dir, kernel: str, cases) -> None:
    stream = b"".join(c.encode(kernel) for c in cases)
    out = memoryview(run_harness(target, harness_dir, ["run"], stream))
    off = 0
    for c in cases:
        status = struct.unpack_from("<i", out, off)[0]
        off += 4
        n = c.N * c.M
        y_gemv = np.frombuffer(out, dtype="<i4", count=n, offset=off).reshape(c.N, c.M)
        y_gemm = np.frombuffer(out, dtype="<i4", count=n, offset=off + 4 * n).reshape(c.N, c.M)
        y_threads = np.frombuffer(out, dtype="<i4", count=n, offset=off + 8 * n).reshape(c.N, c.M)
        off += 12 * n
        what = f"{target} {kernel} M={c.M} K={c.K} N={c.N} splits={c.splits}"
        assert status == 0, f"{what}: status {status} (1 unknown kernel, 2 wrote outside its rows)"
        for label, y in (("gemv", y_gemv), ("gemm", y_gemm), ("threads", y_threads)):
            if not np.array_equal(y, c.expect):
                bad = np.argwhere(y != c.expect)
                n0, r0 = bad[0]
                pytest.fail(f"{what} {label}: {len(bad)} wrong, first y[{n0}][{r0}] = "
                            f"{y[n0, r0]} expected {c.expect[n0, r0]}")
    assert off == len(out)


def kernels_of(target, harness_dir):
    return harness_info(target, harness_dir)["have"]


# ---- tests ------------------------------------------------------------------------------

def test_packers_agree_with_scalar_decoders(harness_dir):
    """The tl packers and the tl scalar kernels describe the same layout as numpy."""
    cases = make_cases(1, big=False, batches=(3,))
    for k in ("i2s_scalar", "tl1_scalar", "tl2_scalar"):
        check_kernel("x86_64", harness_dir, k, cases)


def _host_has(flag: str) -> bool:
    return flag in host_cpu_flags()


@pytest.mark.parametrize("kernel", ["i2s_avx512vnni", "i2s_avxvnni", "i2s_avx2", "tl2_avx2", "i2s_generic", "i2s_scalar", "tl2_scalar", "tl1_scalar"])
def test_native_x86(harness_dir, kernel):
    assert kernel in kernels_of("x86_64", harness_dir)
    if kernel == "i2s_avxvnni" and not _host_has("avx_vnni"):
        if not AVX512_VNNI_256 <= host_cpu_flags():
            pytest.skip("host CPU lacks AVX-VNNI and AVX-512 VNNI")
        # i2s_avxvnni.c with its vpdpbusd in the EVEX encoding: all of its code but one encoding
        check_kernel("x86_64-avxvnni-as-evex", harness_dir, kernel, make_cases(2, big=True))
        return
    if kernel == "i2s_avx512vnni" and not all(_host_has(f) for f in ("avx512f", "avx512bw", "avx512_vnni")):
        pytest.skip("host CPU lacks AVX-512 VNNI")
    check_kernel("x86_64", harness_dir, kernel, make_cases(2, big=True))


def test_native_dispatch_picks_best(harness_dir):
    info = harness_info("x86_64", harness_dir)
    if all(_host_has(f) for f in ("avx512f", "avx512bw", "avx512_vnni")):
        best = "i2s_avx512vnni"
    elif _host_has("avx_vnni"):
        best = "i2s_avxvnni"
    else:
        best = "i2s_avx2"
    assert info["pick"]["i2s"] == best and info["pick"]["tl2"] == "tl2_avx2"


EMULATED_KERNELS = {
    "aarch64": ["i2s_neon_dotprod", "i2s_neon", "tl1_neon", "i2s_generic", "i2s_scalar", "tl1_scalar"],
    "aarch64-a72": ["i2s_neon", "tl1_neon"],
    "armv7": ["i2s_neon", "i2s_generic", "i2s_scalar", "tl1_scalar", "tl2_scalar"],
    "riscv64": ["i2s_generic", "i2s_scalar", "tl1_scalar", "tl2_scalar"],
    "wasm32": ["i2s_generic", "i2s_scalar", "tl1_scalar", "tl2_scalar"],
}


@pytest.mark.emulated
@pytest.mark.parametrize("target,kernel", [(t, k) for t, ks in EMULATED_KERNELS.items() for k in ks])
def test_emulated(harness_dir, target, kernel):
    assert kernel in kernels_of(target, harness_dir)
    # the 2B-4T shapes at one batch size; the scalar tl decoders are too slow under qemu
    big = not kernel.startswith("tl") or not kernel.endswith("scalar")
    check_kernel(target, harness_dir, kernel, make_cases(3, big=big, big_batches=(1,)))


@pytest.mark.emulated
@pytest.mark.parametrize("target,picks", [
    ("x86_64-nehalem", {"i2s": "i2s_generic", "tl2": "tl2_scalar", "tl1": "tl1_scalar"}),
    ("x86_64-haswell", {"i2s": "i2s_avx2", "tl2": "tl2_avx2", "tl1": "tl1_scalar"}),
    ("aarch64-a72", {"i2s": "i2s_neon", "tl1": "tl1_neon", "tl2": "tl2_scalar"}),
    ("aarch64-a76", {"i2s": "i2s_neon_dotprod", "tl1": "tl1_neon", "tl2": "tl2_scalar"}),
    ("armv7", {"i2s": "i2s_neon", "tl1": "tl1_scalar", "tl2": "tl2_scalar"}),
])
def test_cpu_dispatch_under_qemu(harness_dir, target, picks):
    """A CPU without AVX2 / dot product gets a variant it can run, and the picked kernels
    compute correctly there (a SIGILL would fail the harness run)."""
    info = harness_info(target, harness_dir)
    assert info["pick"] == picks
    cases = make_cases(4, big=False, batches=(1, 5))
    for layout in picks:
        check_kernel(target, harness_dir, f"pick:{layout}", cases)
