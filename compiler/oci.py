"""`bitnet-aot build --oci DIR`: an OCI image layout holding only the static binary.

The image is `scratch` plus one layer with the executable at /model; its entrypoint is
`/model serve --host 0.0.0.0 --port 8000` (in a container the server must listen on the
pod's address; `docker run IMAGE --parallel 4` appends flags). The layer is an uncompressed
tar written byte for byte the same every time (one entry, mode 0755, owner 0:0, mtime 0),
the config has no timestamps, and JSON is written with sorted keys, so the same binary gives
the same image digests: the layout is as reproducible as the binary. Loadable by podman
(`podman load -i` does not take a layout: use `skopeo copy oci:DIR:TAG containers-storage:...`
or `podman pull oci:DIR:TAG`), docker (`skopeo copy oci:DIR:TAG docker-daemon:NAME:TAG`) and
pushed to any registry for Kubernetes (`skopeo copy oci:DIR:TAG docker://REGISTRY/NAME:TAG`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

from .errors import BitnetError

# zig target triple architecture -> OCI platform
PLATFORMS = {"x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "arm": ("arm", "v7"), "riscv64": ("riscv64", None)}
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
INDEX = "application/vnd.oci.image.index.v1+json"


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _layer_tar(binary: str) -> bytes:
    """One regular file, /model, as reproducible tar bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("model")
        info.size = os.path.getsize(binary)
        info.mode = 0o755
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with open(binary, "rb") as f:
            tar.addfile(info, f)
    return buf.getvalue()


def write_oci_layout(binary: str, out_dir: str, triple: str, tag: str = "latest", port: int = 8000) -> dict:
    """Writes the layout; returns {"manifest": digest, "config": digest, "layer": digest}."""
    arch = triple.split("-")[0]
    if "linux" not in triple or arch not in PLATFORMS:
        raise BitnetError(f"--oci makes Linux container images; target {triple} is not a Linux one "
                          "(use x86_64-linux, aarch64-linux, armv7-linux or riscv64-linux)")
    oci_arch, variant = PLATFORMS[arch]
    platform = {"architecture": oci_arch, "os": "linux"}
    if variant and oci_arch == "arm":
        platform["variant"] = variant
    blobs = os.path.join(out_dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)

    layer = _layer_tar(binary)
    layer_digest, layer_size = put(layer)
    config = dict(platform, config={
        "Entrypoint": ["/model", "serve", "--host", "0.0.0.0", "--port", str(port)],
        "ExposedPorts": {f"{port}/tcp": {}},
        "Labels": {"org.opencontainers.image.title": os.path.basename(binary),
                   "org.opencontainers.image.description": "bitnet-aot compiled model server (static binary)"},
        "StopSignal": "SIGTERM", "WorkingDir": "/"},
        rootfs={"type": "layers", "diff_ids": [layer_digest]},
        history=[{"created_by": "bitnet-aot build --oci", "comment": "the static binary as /model"}])
    config_digest, config_size = put(_json(config))
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}]}
    manifest_digest, manifest_size = put(_json(manifest))
    index = {"schemaVersion": 2, "mediaType": INDEX,
             "manifests": [{"mediaType": MANIFEST, "digest": manifest_digest, "size": manifest_size, "platform": platform,
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(out_dir, "index.json"), "wb") as f:
        f.write(_json(index))
    with open(os.path.join(out_dir, "oci-layout"), "wb") as f:
        f.write(_json({"imageLayoutVersion": "1.0.0"}))
    # blobs of an earlier image in the same directory would make it grow without bound
    keep = {d.split(":")[1] for d in (layer_digest, config_digest, manifest_digest)}
    for name in os.listdir(blobs):
        if name not in keep:
            os.remove(os.path.join(blobs, name))
    return {"manifest": manifest_digest, "config": config_digest, "layer": layer_digest}
