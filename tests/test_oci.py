"""`bitnet-aot build --oci DIR` (compiler/oci.py): an OCI image layout holding only the
static binary, entrypoint `serve`, and the Kubernetes example that uses it.

Checked: the layout's structure and digests, that two writes give identical bytes
(reproducible), that a real tool accepts it (Debian's skopeo and umoci, where installed:
umoci unpacks the rootfs and the binary in it is ours), and, where podman runs, that the
container answers a completion on loopback.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from bitnet_aot.oci import write_oci_layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exe(cache):
    return cache.build(cache.model("bitnet-b1.58", "tq2_0"), "host", shared=False).output


def blob(d: Path, digest: str) -> bytes:
    data = (d / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def test_layout_is_valid_and_reproducible(exe, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    da = write_oci_layout(exe, str(a), "x86_64-linux-musl")
    db = write_oci_layout(exe, str(b), "x86_64-linux-musl")
    assert da == db
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert json.loads((a / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((a / "index.json").read_text())
    m = index["manifests"][0]
    assert m["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    assert m["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest = json.loads(blob(a, m["digest"]))
    config = json.loads(blob(a, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"][:2] == ["/model", "serve"] and "0.0.0.0" in config["config"]["Entrypoint"]
    layer = blob(a, manifest["layers"][0]["digest"])
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    with tarfile.open(fileobj=__import__("io").BytesIO(layer)) as t:
        (member,) = t.getmembers()                             # scratch: the binary only
        assert member.name == "model" and member.mode == 0o755 and member.mtime == 0
        assert t.extractfile(member).read() == Path(exe).read_bytes()
    # a rewrite into the same directory leaves no stale blobs
    write_oci_layout(exe, str(a), "x86_64-linux-musl", tag="v2")
    assert len(list((a / "blobs" / "sha256").iterdir())) == 3
    with pytest.raises(Exception, match="Linux"):
        write_oci_layout(exe, str(tmp_path / "w"), "x86_64-windows-gnu")


def test_cli_build_oci(tmp_path):
    gguf = ROOT / "examples" / "shakespeare.gguf"
    r = subprocess.run(["bitnet-aot", "build", str(gguf), "-o", str(tmp_path / "m"), "--oci", str(tmp_path / "oci"), "-q"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "oci" / "index.json").exists()


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo (apt-get install skopeo)")
def test_skopeo_accepts_the_layout(exe, tmp_path):
    d = tmp_path / "oci"
    write_oci_layout(exe, str(d), "x86_64-linux-musl")
    r = subprocess.run(["skopeo", "inspect", "--config", f"oci:{d}:latest"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["Entrypoint"][1] == "serve"
    r = subprocess.run(["skopeo", "copy", f"oci:{d}:latest", f"dir:{tmp_path / 'copy'}"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which("umoci"), reason="needs umoci (apt-get install umoci)")
def test_umoci_unpacks_the_binary(exe, tmp_path):
    d = tmp_path / "oci"
    write_oci_layout(exe, str(d), "x86_64-linux-musl")
    r = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{d}:latest", str(tmp_path / "bundle")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    unpacked = tmp_path / "bundle" / "rootfs" / "model"
    assert unpacked.read_bytes() == Path(exe).read_bytes()
    spec = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert spec["process"]["args"][:2] == ["/model", "serve"]
    r = subprocess.run([str(unpacked), "--info"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["zig_target"] == "x86_64-linux-musl"


def podman_runs() -> bool:
    if not shutil.which("podman"):
        return False
    return subprocess.run(["podman", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.skipif(not podman_runs(), reason="needs a working podman")
def test_podman_container_answers(exe, tmp_path):
    import socket
    d = tmp_path / "oci"
    write_oci_layout(exe, str(d), "x86_64-linux-musl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"bitnet-aot-test-{os.getpid()}"
    r = subprocess.run(["podman", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8000", f"oci:{d}:latest"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    try:
        import http.client
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("POST", "/v1/completions", body=json.dumps({"prompt": "hi", "max_tokens": 3}),
                          headers={"Content-Type": "application/json"})
                out = json.loads(c.getresponse().read())
                break
            except (OSError, ValueError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        assert out["object"] == "text_completion"
    finally:
        subprocess.run(["podman", "stop", "-t", "10", name], capture_output=True, timeout=60)


def test_kubernetes_example_uses_health_and_metrics():
    yaml = pytest.importorskip("yaml")
    k = ROOT / "examples" / "kubernetes"
    docs = [d for f in sorted(k.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(kinds)
    c = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"] == "bitnet_queue_length"
