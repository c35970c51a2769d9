"""Fuzzing: regression cases for saved crashers (always run) and bounded fuzz runs
(`-m fuzz`, run by .ci/run): the atheris importer/converter harness (fuzz/fuzz_importer.py)
and the libFuzzer harnesses of the C runtime (fuzz/run_c_fuzzers.py).

Every file in fuzz/crashers/importer/ is an input that once broke the importer's contract
(a model or a one-line BitnetError, within the memory and time bounds); each is replayed here
through the harness's own check. Files in fuzz/crashers/<c harness>/ are replayed through
the sanitizer-built harness when clang with libFuzzer is available.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(FUZZ, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fi = _load("fuzz_importer")
rc = _load("run_c_fuzzers")


def _crashers(sub):
    d = os.path.join(FUZZ, "crashers", sub)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def _have_atheris():
    return importlib.util.find_spec("atheris") is not None


def _clang():
    c = rc.find_clang()
    return c if c and rc.clang_has_libfuzzer(c) else None


# ---------------------------------------------------------------------------------------
# Regression: saved importer/converter crashers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _crashers("importer"))
def test_importer_crasher(name):
    data = open(os.path.join(FUZZ, "crashers", "importer", name), "rb").read()
    fi.check_input(data)        # raises on a contract violation


def test_seed_corpus_is_accepted(tmp_path):
    """The seeds themselves load (GGUF) or convert (HF, the output types the tiny shapes
    allow) and stay within the bounds."""
    paths = fi.make_seed_corpus(str(tmp_path))
    assert len(paths) >= 9
    for p in paths:
        fi.check_input(open(p, "rb").read())


def test_bounds_catch_a_hang_and_a_big_allocation():
    """The harness's own bounds work: a slow input is a Hang, an over-limit allocation a
    ContractViolation (checked without the importer)."""
    import time
    with pytest.raises(fi.Hang):
        with fi._Bounded(10, time_limit=0.2):
            time.sleep(2)
    with pytest.raises(MemoryError):
        with fi._Bounded(10):
            bytearray(fi.MEM_BASE + (64 << 20))


def test_input_encoding_round_trip():
    cfg, tj, st = b"{}", b"[1]", b"\x00" * 9
    data = fi.encode_hf(cfg, tj, st, 2)
    assert data[0] % 2 == 1
    assert fi.decode_hf(data) == (fi.OUT_TYPES[2], cfg, tj, st)
    assert fi.decode_hf(b"\x01\xff\xff\xff\xff") == ("f16", b"", b"", b"")   # lengths past the end


# only the harnesses with saved crashers (fuzz/crashers/<name>/): with none there is nothing
# to replay and no test (an empty parameter list would be a skip)
C_CRASHER_HARNESSES = [n for n in rc.HARNESSES if _crashers(n)]
if C_CRASHER_HARNESSES:
    @pytest.mark.parametrize("name", C_CRASHER_HARNESSES)
    def test_c_crashers(name, tmp_path):
        clang = _clang()
        if not clang:
            pytest.skip("clang with libFuzzer not installed (apt-get install clang)")
        extra = rc.generate_sources(str(tmp_path))
        exe = rc.build(clang, name, str(tmp_path), extra)
        res = rc.replay(exe, name)
        assert not res["failed"], "\n".join(f"{f}:\n{t}" for f, t in res["failed"])


# ---------------------------------------------------------------------------------------
# Bounded fuzz runs (-m fuzz)
# ---------------------------------------------------------------------------------------
IMPORTER_SECONDS = int(os.environ.get("BNFUZZ_IMPORTER_SECONDS", "60"))
C_SECONDS = int(os.environ.get("BNFUZZ_C_SECONDS", "30"))


@pytest.mark.fuzz
def test_fuzz_importer(tmp_path):
    if not _have_atheris():
        pytest.skip("atheris not installed (pip install atheris; needs clang to build)")
    corpus = tmp_path / "corpus"
    fi.make_seed_corpus(str(corpus))
    crash_dir = os.path.join(FUZZ, "crashers", "importer")
    before = set(_crashers("importer"))
    r = subprocess.run([sys.executable, os.path.join(FUZZ, "fuzz_importer.py"),
                        f"-max_total_time={IMPORTER_SECONDS}", "-print_final_stats=1",
                        "-artifact_prefix=" + crash_dir + os.sep, str(corpus)],
                       capture_output=True, text=True, timeout=IMPORTER_SECONDS + 300)
    new = sorted(set(_crashers("importer")) - before)
    tail = "\n".join(r.stderr.splitlines()[-40:])
    print(tail)
    assert r.returncode == 0 and not new, f"importer fuzzing found a crash (saved: {new}):\n{tail}"


@pytest.mark.fuzz
@pytest.mark.parametrize("name", list(rc.HARNESSES))
def test_fuzz_c(name, tmp_path):
    clang = _clang()
    if not clang:
        pytest.skip("clang with libFuzzer not installed (apt-get install clang)")
    extra = rc.generate_sources(str(tmp_path))
    exe = rc.build(clang, name, str(tmp_path), extra)
    res = rc.run_fuzzer(exe, name, C_SECONDS)
    print(f"{name}: {res['runs']} runs in {res['seconds']} s")
    assert res["runs"] > 0
    assert not res["crash"], f"{name} fuzzing found a crash (saved under fuzz/crashers/{name}/):\n{res['tail']}"
