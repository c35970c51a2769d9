"""Reproducible builds: the same GGUF, options, target and bitnet-aot version give a
byte-identical binary, whatever the directory (no timestamps, paths or dict order)."""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from bitnet_aot.build import build


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_two_builds_in_different_directories_are_identical(cache, tmp_path, monkeypatch):
    src = cache.model("bitnet-b1.58", "tq2_0")
    outs = []
    for d in ("first/place", "second/other/deeper"):
        # each build compiles every object itself (an empty object cache of its own)
        monkeypatch.setenv("BITNET_AOT_OBJECT_CACHE", str(tmp_path / "objects" / d))
        os.makedirs(tmp_path / d)
        g = tmp_path / d / "model.gguf"
        shutil.copy(src, g)                       # a copy: the path differs, the content does not
        res = build(str(g), "x86_64-linux", str(tmp_path / d / "bin"), log=lambda s: None)
        outs.append(res)
    assert _sha(outs[0].output) == _sha(outs[1].output)
    for f in ("gen/model_config.h", "gen/weights_index.c", "gen/blob.S", "weights.bin", "build.sh"):
        assert _sha(os.path.join(outs[0].build_dir, f)) == _sha(os.path.join(outs[1].build_dir, f)), f


# aarch64: the same check on a cross-built binary (not run); its first build compiles zig's
# aarch64 libc, so it goes with the emulated suite, which builds for aarch64 anyway.
@pytest.mark.parametrize("target", ["x86_64-linux", pytest.param("aarch64-linux", marks=pytest.mark.emulated)])
def test_verify_command(cache, tmp_path, capsys, target):
    from bitnet_aot import cli
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    other = cache.model("bitnet", "tq2_0")
    res = cache.build(gguf, target, shared=False)
    exe = tmp_path / f"m-{target}"
    shutil.copy(res.output, exe)
    assert cli.main(["verify", str(exe), gguf]) == 0
    assert "weights OK" in capsys.readouterr().out
    assert cli.main(["verify", str(exe), other]) == 2
    assert "was not built from" in capsys.readouterr().err
    data = bytearray(exe.read_bytes())
    blob = open(os.path.join(res.build_dir, "weights.bin"), "rb").read()
    at = bytes(data).find(blob[:4096])
    data[at + len(blob) - 100] ^= 0x40
    exe.write_bytes(bytes(data))
    assert cli.main(["verify", str(exe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "corrupt" in err
    assert cli.main(["verify", gguf]) == 2
    assert "no bitnet-aot build information" in capsys.readouterr().err


def test_doctor_reports_the_pinned_toolchain(capsys):
    from bitnet_aot import cli
    from bitnet_aot.toolchain import ZIG_VERSION
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"zig           {ZIG_VERSION} (pinned)" in out and "zig cache" in out and "x86_64-linux" in out
    pins = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")).read()
    assert f'"ziglang=={ZIG_VERSION}"' in pins


def test_a_reused_object_is_the_object_a_compile_writes(cache, tmp_path, monkeypatch):
    """The object cache (toolchain.run_zig_cached): a build from cached objects is
    byte-identical to one that compiled everything; a second model reuses the objects that
    do not include its model_config.h (kernels, tokenizer, HTTP) and recompiles the rest."""
    from bitnet_aot import toolchain
    monkeypatch.setenv("BITNET_AOT_OBJECT_CACHE", str(tmp_path / "objects"))
    a, b = cache.model("bitnet-b1.58", "tq2_0"), cache.model("bitnet-b1.58", "tq2_0", n_ff=768)
    reused = []
    real = toolchain.run_zig_cached

    def spy(args, cwd, what, local_cache=None):
        hit = real(args, cwd, what, local_cache=local_cache)
        reused.append((args[args.index("-c") + 1], hit))
        return hit
    monkeypatch.setattr(toolchain, "run_zig_cached", spy)
    first = build(a, "x86_64-linux", str(tmp_path / "a1"), log=lambda s: None)
    assert not any(hit for _, hit in reused)
    reused.clear()
    again = build(a, "x86_64-linux", str(tmp_path / "a2"), log=lambda s: None)
    assert all(hit for src, hit in reused if src.endswith(".c")), reused
    assert _sha(first.output) == _sha(again.output)
    reused.clear()
    build(b, "x86_64-linux", str(tmp_path / "b"), log=lambda s: None)
    hits = {os.path.basename(src) for src, hit in reused if hit}
    misses = {os.path.basename(src) for src, hit in reused if not hit}
    assert {"i2s_avx2.c", "tokenizer.c", "http.c", "json.c"} <= hits, hits
    assert {"model.c", "head.c", "weights_index.c"} <= misses, misses
