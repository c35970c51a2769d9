"""from_pretrained("org/name") through huggingface_hub's cache, laid out on disk by the test
(refs/main -> commit, snapshots/<commit>/<file>); offline throughout (HF_HUB_OFFLINE=1)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("huggingface_hub")

from bitnet_aot.errors import BitnetError  # noqa: E402
from bitnet_aot.factory import make_test_model  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _lay_out(cache, repo, files):
    d = cache / ("models--" + repo.replace("/", "--"))
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(COMMIT)
    snap = d / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    paths = {}
    for name in files:
        paths[name] = make_test_model(str(snap / name), "bitnet-b1.58", "tq2_0", n_layer=1, n_embd=256, n_ff=256,
                                      n_vocab=300) if name.endswith(".gguf") else (snap / name).write_text("{}")
    return snap


def _run(code, cache):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hfhome"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)


def test_resolve_from_cache_and_refusals(tmp_path):
    cache = tmp_path / "hub"
    snap = _lay_out(cache, "someorg/Tiny-BitNet-gguf", ["ggml-model-tq2_0.gguf", "ggml-model-f16.gguf", "config.json"])
    code = ("from bitnet_aot.hub import resolve\n"
            "print(resolve('someorg/Tiny-BitNet-gguf'))\n"
            "print(resolve('someorg/Tiny-BitNet-gguf', filename='ggml-model-f16.gguf'))\n")
    r = _run(code, cache)
    assert r.returncode == 0, r.stderr
    got = r.stdout.split()
    assert got == [str(snap / "ggml-model-tq2_0.gguf"), str(snap / "ggml-model-f16.gguf")]
    # not cached, offline: one line naming the repository and where it looked
    code = ("from bitnet_aot.hub import resolve\nfrom bitnet_aot.errors import BitnetError\n"
            "try:\n    resolve('someorg/missing')\nexcept BitnetError as e:\n    print('ERR', e)\n")
    r = _run(code, cache)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ERR someorg/missing: not in the Hugging Face cache") and str(cache) in r.stdout
    assert "HF_HUB_OFFLINE" in r.stdout and len(r.stdout.strip().splitlines()) == 1


def test_from_pretrained_repo_id_builds_from_the_cache(tmp_path):
    cache = tmp_path / "hub"
    _lay_out(cache, "someorg/tiny", ["model.gguf"])
    code = ("from bitnet_aot import BitNetModel\n"
            f"m = BitNetModel.from_pretrained('someorg/tiny', cache_dir={str(tmp_path / 'aot')!r})\n"
            "print(len(m.generate('Once upon', max_tokens=4, temperature=0.0)) >= 0, m.info['n_embd'])\n"
            "from bitnet_aot.bindings.model import LoadError\n"
            "try:\n    BitNetModel.from_pretrained('someorg/absent')\nexcept LoadError as e:\n    print('ERR', e)\n")
    r = _run(code, cache)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "True 256", r.stdout
    assert lines[1].startswith("ERR someorg/absent: not in the Hugging Face cache")


def test_repo_id_is_not_taken_for_a_path(tmp_path):
    from bitnet_aot.hub import looks_like_repo_id
    assert looks_like_repo_id("org/name")
    assert not looks_like_repo_id("/abs/path.gguf") and not looks_like_repo_id("a/b/c")
    os.makedirs(tmp_path / "org", exist_ok=True)
    (tmp_path / "org" / "m.gguf").write_bytes(b"x")
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert not looks_like_repo_id("org/m.gguf")   # an existing file wins
    finally:
        os.chdir(cwd)
    with pytest.raises(BitnetError):
        from bitnet_aot.hub import _pick
        _pick(["a.gguf", "b.gguf"], "o/n", None)
