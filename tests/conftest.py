"""Shared fixtures: factory models and compiled builds, cached per test session."""
from __future__ import annotations

import os
import shutil

import pytest

from bitnet_aot.factory import make_test_model


SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bitnet")


class ModelCache:
    """Factory models and their compiled forms, shared by every test and kept between runs.

    Entries live under $BITNET_AOT_TEST_CACHE (default ~/.cache/bitnet-aot/test-builds), in a
    folder named by the fingerprint of the compiler, runtime and target sources and the zig
    version: any change to what a build is made of starts a fresh folder, so a stale build is
    never reused. Within it a factory model is named by its parameters and a build by the
    GGUF's content and the build options. The default, emulated and slow suites (separate
    pytest runs in .ci/run) and a developer's reruns share them. Tests must not modify a
    cached file in place (they copy it first)."""

    def __init__(self, root):
        import hashlib
        from bitnet_aot.build import source_fingerprint
        from bitnet_aot.toolchain import zig_version
        self.tmp = root
        base = os.environ.get("BITNET_AOT_TEST_CACHE") or os.path.expanduser("~/.cache/bitnet-aot/test-builds")
        fp = hashlib.sha256(f"{source_fingerprint()} {zig_version()}".encode()).hexdigest()[:16]
        self.root = os.path.join(base, fp)
        os.makedirs(os.path.join(self.root, "models"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "builds"), exist_ok=True)
        # keep the four most recently used fingerprints (other checkouts, older sources)
        os.utime(self.root)
        olds = sorted((e for e in os.scandir(base) if e.is_dir() and e.path != self.root),
                      key=lambda e: e.stat().st_mtime, reverse=True)[3:]
        for e in olds:
            shutil.rmtree(e.path, ignore_errors=True)
        self.models = {}
        self.builds = {}

    @staticmethod
    def _digest(obj) -> str:
        import hashlib
        return hashlib.sha256(repr(obj).encode()).hexdigest()[:16]

    def model(self, arch="bitnet-b1.58", ptype="tq2_0", **kw) -> str:
        kw.setdefault("tokenizer", "bpe" if arch == "llama" else "spm")
        key = (arch, ptype, tuple(sorted(kw.items())))
        if key not in self.models:
            path = os.path.join(self.root, "models", f"{arch}-{ptype}-{self._digest(key)}.gguf")
            if not os.path.exists(path):
                tmp = path + f".{os.getpid()}.tmp"
                make_test_model(tmp, arch, ptype, **kw)
                os.replace(tmp, path)
            self.models[key] = path
        return self.models[key]

    def build(self, gguf: str, target="host", shared=True, **kw):
        import hashlib
        import pickle
        from bitnet_aot.build import build
        key = (gguf, target, shared, tuple(sorted(kw.items())))
        if key not in self.builds:
            with open(gguf, "rb") as f:
                content = hashlib.file_digest(f, "sha256").hexdigest()
            d = os.path.join(self.root, "builds", self._digest((content, target, shared, key[3])))
            meta = os.path.join(d, "result.pickle")
            res = None
            if os.path.exists(meta):
                with open(meta, "rb") as f:
                    res = pickle.load(f)
                if not (os.path.exists(res.output) and os.path.isdir(res.build_dir)):
                    res = None
            if res is None:
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
                out = os.path.join(d, os.path.basename(gguf) + f".{target}" + (".so" if shared else ""))
                res = build(gguf, target, out, shared=shared, log=lambda s: None, **kw)
                with open(meta + ".tmp", "wb") as f:
                    pickle.dump(res, f)
                os.replace(meta + ".tmp", meta)
            self.builds[key] = res
        return self.builds[key]


@pytest.fixture(scope="session")
def cache(workdir):
    return ModelCache(workdir)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def host_cpu_flags() -> set:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


AVX512_VNNI_256 = {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}


def avxvnni_as_evex() -> list:
    """The x86-64 kernel sources with the AVX-VNNI files (i2s_avxvnni.c, head_avxvnni.c)
    compiled for AVX-512 VNNI + VL, their one VEX intrinsic, _mm256_dpbusd_avx_epi32, made its
    EVEX twin _mm256_dpbusd_epi32 by tests/avxvnni_as_evex.h (the same vpdpbusd on YMM
    registers, another encoding). A CPU with AVX-512 VNNI but no AVX-VNNI (Zen 4, Ice Lake) then runs every other
    line of those files; the tests use it where the real variant cannot run."""
    from bitnet_aot.kernels import KernelSource, kernel_sources
    evex = ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni",
            "-include", os.path.join(os.path.dirname(os.path.abspath(__file__)), "avxvnni_as_evex.h"))
    return [KernelSource(ks.source, tuple(f for f in ks.flags if f != "-mavxvnni") + evex, ks.isa)
            if ks.isa == "avxvnni" else ks for ks in kernel_sources("x86_64")]


def sanitized_binary(build_dir, commands, werror=lambda src: True) -> str:
    """Compile a generated tree (build(..., emit_c=build_dir).commands) natively with gcc
    -fsanitize=address,undefined and link it to build_dir/san; -Werror only for the sources
    `werror` picks (gcc warns where zig's clang does not). Returns the executable's path."""
    import subprocess
    d = str(build_dir)
    os.makedirs(os.path.join(d, "obj"), exist_ok=True)
    objs = []
    for cmd in commands[:-1]:
        src, obj = cmd[cmd.index("-c") + 1], cmd[cmd.index("-o") + 1]
        flags = [a for a in cmd[1:] if a.startswith(("-I", "-D", "-m", "-std", "-W", "-f"))
                 and a != "-mcmodel=medium" and (a != "-Werror" or werror(src))]
        r = subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
                           + flags + ["-c", src, "-o", obj], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        objs.append(obj)
    r = subprocess.run(["gcc", "-fsanitize=address,undefined"] + objs + ["-o", "san", "-lm", "-lpthread"],
                       cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return os.path.join(d, "san")


# ---------------------------------------------------------------------------------------
# Strict mode (BITNET_AOT_STRICT=1, set by .ci/run): a skip is a failure unless its reason
# names something a machine may honestly lack: an emulator (qemu, wine, wasmtime, podman)
# or a CPU feature. A missing fixture, Python package or system tool fails the run.
# ---------------------------------------------------------------------------------------
STRICT = os.environ.get("BITNET_AOT_STRICT", "") not in ("", "0")
_ALLOWED_SKIP = ("qemu", "wine", "wasmtime", "podman", "CPU", "AVX", "signals")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not STRICT or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = str(rep.longrepr[2]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if any(word in reason for word in _ALLOWED_SKIP):
        return
    rep.outcome = "failed"
    rep.longrepr = f"BITNET_AOT_STRICT: skip not allowed here: {reason}"
    _STRICT_FAILURES.append(item.nodeid)


_STRICT_FAILURES: list = []


def pytest_sessionfinish(session, exitstatus):
    """A rewritten report does not count toward pytest's exit status by itself."""
    if _STRICT_FAILURES and exitstatus in (0, 5):
        session.exitstatus = 1
