"""The peers' own C++ tools, built from their public sources into the bench cache.

    python bench/peers.py llama      # build (once) and print the path of llama.cpp's bin/

llama.cpp b11312 is the copy vendored in the PyPI sdist llama-cpp-python==0.3.36: it is
downloaded with pip, configured with cmake (native CPU, static, no network features) and
its tools (llama-bench, llama-server, llama-cli, llama-quantize, llama-perplexity) are
built with two jobs: about 20 minutes on two cores the first time, with progress printed;
later runs find them in ~/.cache/bitnet-aot/peers/llama.cpp/build/bin (or $PEERS).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

PEERS = os.path.expanduser(os.environ.get("PEERS", "~/.cache/bitnet-aot/peers"))
LLAMA_SDIST = "llama-cpp-python==0.3.36"
LLAMA_TOOLS = ("llama-bench", "llama-server", "llama-cli", "llama-perplexity", "llama-quantize")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def llama_bin(tool: str = "llama-bench", build: bool = True) -> str | None:
    """Directory holding llama.cpp's tools, building them first if `tool` is missing (None
    when they cannot be built here: no cmake, no network to PyPI, a failed build)."""
    src = os.path.join(PEERS, "llama.cpp")
    bindir = os.path.join(src, "build", "bin")
    if os.path.exists(os.path.join(bindir, tool)):
        return bindir
    if not build or not shutil.which("cmake"):
        return None
    os.makedirs(PEERS, exist_ok=True)
    if not os.path.isdir(src):
        log(f"downloading the {LLAMA_SDIST} sdist (llama.cpp's sources) ...")
        d = tempfile.mkdtemp(prefix="sdist-", dir=PEERS)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            LLAMA_SDIST, "-d", d])
        if r.returncode != 0:
            return None
        tgz = [f for f in os.listdir(d) if f.endswith(".tar.gz")][0]
        with tarfile.open(os.path.join(d, tgz)) as t:
            t.extractall(d, filter="data")
        top = [f for f in os.listdir(d) if os.path.isdir(os.path.join(d, f))][0]
        os.replace(os.path.join(d, top, "vendor", "llama.cpp"), src)
        shutil.rmtree(d, ignore_errors=True)
    log(f"building llama.cpp's tools in {src}/build (about 20 minutes on two cores, once) ...")
    cfg = ["cmake", "-S", src, "-B", os.path.join(src, "build"), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
           "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF",
           "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_COMMIT=0c1e57098", "-DLLAMA_BUILD_NUMBER=11312"]
    if subprocess.run(cfg, capture_output=True).returncode != 0:
        return None
    p = subprocess.Popen(["cmake", "--build", os.path.join(src, "build"), "-j2", "--target", *LLAMA_TOOLS],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0, last = time.time(), 0.0
    for line in p.stdout:
        if line.startswith("[") and time.time() - last > 15:      # "[ 42%] Building ..." every 15 s
            log(f"  [{time.time() - t0:5.0f} s] {line.strip()[:100]}")
            last = time.time()
    if p.wait() != 0:
        log("llama.cpp's tools failed to build")
        return None
    return bindir


if __name__ == "__main__":
    if sys.argv[1:] != ["llama"]:
        sys.exit("usage: python bench/peers.py llama")
    b = llama_bin()
    if not b:
        sys.exit("error: llama.cpp's tools could not be built here (needs cmake and PyPI)")
    print(b)
