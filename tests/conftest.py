"""Shared fixtures: factory models and compiled builds, cached per test session."""
from __future__ import annotations

import os
import shutil

import pytest

from bitnet_aot.factory import make_test_model

# zig's cache (compiled libc per target) survives between runs: first builds take minutes.
os.environ.setdefault("ZIG_GLOBAL_CACHE_DIR", os.path.expanduser("~/.cache/bitnet-aot/zig"))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bitnet")


class ModelCache:
    """Factory models and their compiled forms, made once per session."""

    def __init__(self, root):
        self.root = root
        self.models = {}
        self.builds = {}

    def model(self, arch="bitnet-b1.58", ptype="tq2_0", **kw) -> str:
        key = (arch, ptype, tuple(sorted(kw.items())))
        if key not in self.models:
            name = f"{arch}-{ptype}-{abs(hash(key)) % 10**8}.gguf"
            kw.setdefault("tokenizer", "bpe" if arch == "llama" else "spm")
            self.models[key] = make_test_model(str(self.root / name), arch, ptype, **kw)
        return self.models[key]

    def build(self, gguf: str, target="host", shared=True, **kw) -> str:
        from bitnet_aot.build import build
        key = (gguf, target, shared, tuple(sorted(kw.items())))
        if key not in self.builds:
            out = str(self.root / (os.path.basename(gguf) + f".{target}.{len(self.builds)}" + (".so" if shared else "")))
            self.builds[key] = build(gguf, target, out, shared=shared, log=lambda s: None, **kw)
        return self.builds[key]


@pytest.fixture(scope="session")
def cache(workdir):
    return ModelCache(workdir)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


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
