"""Attention kernels (runtime_c/core/kernels/attn.h): every compiled-in variant equals the scalar
variant bit for bit, and the scalar variant equals the numpy reference
(compiler/reference.py attention_head, the same numerics) bit for bit, for many position
counts, query counts (GQA groups of a prompt chunk), head dims 64/128/256, key segments and
every KV cache type. Native x86 by default; aarch64 (NEON) and x86-64 without AVX2 under
qemu with `-m emulated`. The whole model at depth is checked in test_compile.py."""
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
from bitnet_aot.reference import attention_head, kv_store  # noqa: E402

TYPES = {"f32": 0, "f16": 1, "q8": 2}
# name -> (zig triple, runner prefix)
TARGETS = {
    "x86_64": ("x86_64-linux-musl", []),
    "x86_64-nehalem": ("x86_64-linux-musl", ["qemu-x86_64", "-cpu", "Nehalem"]),
    "aarch64": ("aarch64-linux-musl", ["qemu-aarch64", "-cpu", "max"]),
    "aarch64-a72": ("aarch64-linux-musl", ["qemu-aarch64", "-cpu", "cortex-a72"]),
}
_built: dict[str, str] = {}


def harness(triple: str, tmp_path_factory) -> str:
    if triple not in _built:
        wd = tmp_path_factory.mktemp("attn-harness")
        out = str(wd / "attn_harness")
        build_kernel_program(triple, [os.path.join(ROOT, "tests", "attn_harness.c")], out, repo_root=ROOT,
                             cflags=("-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"), workdir=str(wd))
        _built[triple] = out
    return _built[triple]


def run(target: str, tmp_path_factory, args: list[str], stdin: bytes = b"") -> bytes:
    triple, prefix = TARGETS[target]
    exe = harness(triple, tmp_path_factory)
    if prefix and shutil.which(prefix[0]) is None:
        pytest.skip(f"{prefix[0]} not installed")
    p = subprocess.run(prefix + [exe] + args, input=stdin, capture_output=True, timeout=1800)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return p.stdout


def variants(target, tmp_path_factory) -> tuple[str, list[str]]:
    lines = run(target, tmp_path_factory, ["info"]).decode().split("\n")
    pick = [ln.split()[1] for ln in lines if ln.startswith("pick ")][0]
    return pick, [ln.split()[1] for ln in lines if ln.startswith("have ")]


class Case:
    """One cache of npos positions and nq queries (GQA: `group` heads per row, rows at
    consecutive positions ending at last), computed over the segment [s0, s1)."""

    def __init__(self, rng, kv, D, npos, rows, group, last, s0, s1):
        self.kv, self.D, self.npos, self.s0, self.s1 = kv, D, npos, s0, s1
        scale = rng.uniform(0.5, 4.0)           # spread the softmax: some peaked, some flat
        k = (rng.standard_normal((npos, 1, D)) * scale).astype(np.float32)
        v = rng.standard_normal((npos, 1, D)).astype(np.float32)
        (self.k, self.ks), (self.v, self.vs) = kv_store(k, kv), kv_store(v, kv)
        self.k, self.v = self.k[:, 0], self.v[:, 0]
        self.ks = self.ks[:, 0] if self.ks is not None else None
        self.vs = self.vs[:, 0] if self.vs is not None else None
        self.q = rng.standard_normal((rows * group, D)).astype(np.float32)
        self.lim = np.repeat(np.arange(last - rows + 1, last + 1), group).astype(np.int32)

    def message(self, name: str) -> bytes:
        def enc(a):
            if self.kv == "f16":
                return a.astype(np.float16).tobytes()
            if self.kv == "q8":
                return a.astype(np.int8).tobytes()
            return a.astype(np.float32).tobytes()
        blocked = self.k.reshape(self.npos // 8, 8, self.D).transpose(0, 2, 1)   # [blocks][D][8]
        nq = self.q.shape[0]
        m = struct.pack("<7i", len(name), TYPES[self.kv], self.D, self.npos, nq, self.s0, self.s1) + name.encode()
        m += enc(blocked) + enc(self.v)
        if self.kv == "q8":
            m += self.ks.astype(np.float32).tobytes() + self.vs.astype(np.float32).tobytes()
        return m + self.q.tobytes() + self.lim.tobytes()

    def parse(self, out: bytes, at: int):
        nq = self.q.shape[0]
        assert struct.unpack_from("<i", out, at)[0] == 0
        a = np.frombuffer(out, np.float32, count=2 * nq + nq * self.D, offset=at + 4)
        return (a[:nq], a[nq:2 * nq], a[2 * nq:].reshape(nq, self.D)), at + 4 + 4 * a.size

    def reference(self) -> np.ndarray:
        """Normalised output of queries over all keys up to their position (the reference
        merges segments itself; the case's segment must hold every key they see)."""
        return attention_head(self.q, self.k, self.v, self.lim, self.ks, self.vs)


def cases(seed=0, emulated=False):
    """Every (type, D, shape); under an emulator fewer head dims, so qemu runs stay short. D 90
    and 100 are not multiples of 16: the pv loops end with 8-, 4- and 1-column tails
    (bitnet_b1_58-3B's head dim is 100)."""
    rng = np.random.default_rng(seed)
    out = []
    for kv in TYPES:
        for D in ((64, 90, 100) if emulated else (64, 90, 100, 128, 256)):
            # (npos, rows, group, last): decode (1 row), prompt chunks, GQA 1/2/4/8, chunk edges
            for npos, rows, group, last in ((8, 1, 4, 0), (64, 1, 4, 63), (64, 3, 2, 40), (128, 1, 1, 64),
                                            (192, 5, 4, 130), (512, 32, 1, 511), (256, 2, 8, 200)):
                out.append(Case(rng, kv, D, npos, rows, group, last, 0, 512))
            # a later segment alone (only variants compared: the reference merges all segments)
            out.append(Case(rng, kv, D, 1088, 4, 2, 1080, 512, 1024))
            out.append(Case(rng, kv, D, 1088, 3, 4, 1087, 1024, 1536))
    return out


def run_cases(target, tmp_path_factory, name, cs):
    out = run(target, tmp_path_factory, ["run"], b"".join(c.message(name) for c in cs))
    res, at = [], 0
    for c in cs:
        r, at = c.parse(out, at)
        res.append(r)
    return res


def check_target(target, tmp_path_factory):
    pick, have = variants(target, tmp_path_factory)
    assert pick == have[0] and "scalar" in have
    cs = cases(emulated=bool(TARGETS[target][1]))
    scalar = run_cases(target, tmp_path_factory, "scalar", cs)
    for c, (m, l, o) in zip(cs, scalar):
        if c.s0 == 0:
            got = o / l[:, None]
            want = c.reference()
            assert np.array_equal(got, want), (c.kv, c.D, c.npos, float(np.max(np.abs(got - want))))
        else:
            assert np.all(np.isfinite(o)) and np.all(l > 0)
    for name in have:
        if name == "scalar":
            continue
        for c, a, b in zip(cs, run_cases(target, tmp_path_factory, name, cs), scalar):
            for x, y in zip(a, b):
                assert np.array_equal(x, y), (name, c.kv, c.D, c.npos, c.s0)
    return pick, have


def test_attention_variants_native(tmp_path_factory):
    pick, have = check_target("x86_64", tmp_path_factory)
    import platform
    if platform.machine() == "x86_64" and "avx2" in open("/proc/cpuinfo").read():
        assert pick == "avx2"


def test_half_conversions_match_numpy(tmp_path_factory):
    """The cache's f32 -> f16 rounding (nearest even, subnormals, overflow to inf, NaN) and
    f16 -> f32 against numpy, which the reference uses."""
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.standard_normal(20000) * 10.0 ** rng.uniform(-9, 5.2, 20000),
                        np.array([0.0, -0.0, 65504, 65519.9, 65520, 1e6, -1e6, np.inf, -np.inf, 2.0 ** -24,
                                  2.0 ** -25, 2.0 ** -25 * 1.0001, 3 * 2.0 ** -26, 2.0 ** -14, 2.0 ** -14 * (1 - 2 ** -12)]),
                        # exact ties between two halves, at every exponent
                        (1 + (2 * rng.integers(0, 1024, 2000) + 1) / 2048.0) * 2.0 ** rng.integers(-14, 15, 2000)])
    x = x.astype(np.float32)
    out = run("x86_64", tmp_path_factory, ["f16"], x.tobytes())
    got = np.frombuffer(out[:2 * x.size], np.uint16)
    assert np.array_equal(got, x.astype(np.float16).view(np.uint16))
    back = np.frombuffer(out[2 * x.size:], np.float32)
    want = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(back), nan) and np.array_equal(back[~nan], want[~nan])


def test_reference_matches_plain_softmax():
    """The chunked reference itself against a float64 two-pass softmax (a check that the
    numerics defined in attn.h are attention at all, to float tolerance)."""
    rng = np.random.default_rng(3)
    for S in (1, 63, 64, 65, 700, 1100):
        D = 64
        q = rng.standard_normal((3, D)).astype(np.float32)
        k = (rng.standard_normal((S, D)) * 2).astype(np.float32)
        v = rng.standard_normal((S, D)).astype(np.float32)
        pos = np.array([S - 3, S - 2, S - 1]).clip(0)
        got = attention_head(q, k, v, pos)
        s = (q.astype(np.float64) @ k.T.astype(np.float64)) / np.sqrt(D)
        s = np.where(np.arange(S)[None, :] <= pos[:, None], s, -np.inf)
        p = np.exp(s - s.max(1, keepdims=True))
        want = (p / p.sum(1, keepdims=True)) @ v.astype(np.float64)
        assert np.max(np.abs(got - want)) < 1e-5, S


@pytest.mark.emulated
@pytest.mark.parametrize("target", ["aarch64", "aarch64-a72", "x86_64-nehalem"])
def test_attention_variants_emulated(target, tmp_path_factory):
    pick, have = check_target(target, tmp_path_factory)
    if target.startswith("aarch64"):
        assert pick == "neon"
    else:
        assert pick == "scalar"
