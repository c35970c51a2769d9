"""Reproducible builds: the same GGUF, options, target and bitnet-aot version give a
byte-identical binary, whatever the directory (no timestamps, paths or dict order)."""
from __future__ import annotations

import hashlib
import os
import shutil

from bitnet_aot.build import build


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_two_builds_in_different_directories_are_identical(cache, tmp_path):
    src = cache.model("bitnet-b1.58", "tq2_0")
    outs = []
    for d in ("first/place", "second/other/deeper"):
        os.makedirs(tmp_path / d)
        g = tmp_path / d / "model.gguf"
        shutil.copy(src, g)                       # a copy: the path differs, the content does not
        res = build(str(g), "x86_64-linux", str(tmp_path / d / "bin"), log=lambda s: None)
        outs.append(res)
    assert _sha(outs[0].output) == _sha(outs[1].output)
    for f in ("gen/model_config.h", "gen/weights_index.c", "gen/blob.S", "weights.bin", "build.sh"):
        assert _sha(os.path.join(outs[0].build_dir, f)) == _sha(os.path.join(outs[1].build_dir, f)), f


def test_verify_command(cache, tmp_path, capsys):
    from bitnet_aot import cli
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    other = cache.model("bitnet", "tq2_0")
    for target in ("x86_64-linux", "aarch64-linux"):       # no need to run the binary
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
