"""`bitnet-aot serve model.gguf`: builds (or reuses) a cached host build and serves it."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_builds_and_serves(cache, tmp_path):
    """serve builds the executable into the build-cache entry the tokenizer's shared library
    is in (one entry per model and options); its flags (--port, -t, --seed=...) reach the server."""
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    port = _free_port()
    env = dict(os.environ, BITNET_AOT_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "tokenize", gguf, "hello"], capture_output=True,
                       text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen([sys.executable, "-m", "bitnet_aot.cli", "serve", gguf, "--port", str(port), "-t", "1",
                          "--seed=5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert p.poll() is None, p.stderr.read().decode()
                assert time.time() < deadline
                time.sleep(0.5)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/generate",
                                     data=json.dumps({"prompt": "Once upon", "max_tokens": 4, "temperature": 0}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.loads(r.read())
        assert out["tokens"] >= 1 and out["finish_reason"] in ("stop", "length")
    finally:
        p.terminate()
        assert p.wait(timeout=30) == 0
    r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "cache", "list", "--json"], capture_output=True,
                       text=True, env=env, timeout=60)
    entries = json.loads(r.stdout)["entries"]
    assert len(entries) == 1 and sorted(entries[0]["artefacts"]) == ["executable", "shared"], entries
