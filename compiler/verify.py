"""`bitnet-aot verify BINARY [model.gguf]`: check a compiled model without running it (so it
works for any target's binary): the embedded weights against the SHA-256 recorded at build
time, and, given the GGUF, that the binary was built from that file."""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct

from .codegen import BLOB_MAGIC
from .errors import BitnetError
from .gguf_import import file_sha256


def _build_info(mm) -> dict:
    """The provenance JSON (BN_BUILD_INFO_JSON) stored in the binary."""
    key = b'{"activation": '
    i = mm.find(key)
    if i < 0:
        return {}
    j = mm.find(b"}", i)
    try:
        return json.loads(mm[i:j + 1].decode())
    except (ValueError, UnicodeDecodeError):
        return {}


def verify(binary: str, gguf: str | None = None) -> dict:
    name = os.path.basename(binary)
    try:
        f = open(binary, "rb")
    except OSError as e:
        raise BitnetError(f"{binary}: cannot open ({e.strerror})") from None
    with f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        info = _build_info(mm)
        if not info.get("weights_sha256"):
            raise BitnetError(f"{name}: no bitnet-aot build information found; is this a compiled model?")
        result = {"binary": binary, "info": info}
        if info.get("weights") == "external":
            wpath = binary + ".weights"
            if not os.path.exists(wpath):
                raise BitnetError(f"{name}: built with external weights, but {wpath} is missing")
            got = file_sha256(wpath)
        else:
            at = mm.find(BLOB_MAGIC)
            if at < 0:
                raise BitnetError(f"{name}: the embedded weights were not found (binary truncated or altered)")
            size = struct.unpack_from("<Q", mm, at + 16)[0]
            start = at + 64     # blob.S: the marker, the size and padding fill 64 bytes
            if start + size > len(mm):
                raise BitnetError(f"{name}: the embedded weights are truncated ({len(mm) - start} of {size} bytes)")
            h = hashlib.sha256()
            for off in range(start, start + size, 1 << 24):
                h.update(mm[off:min(off + (1 << 24), start + size)])
            got = h.hexdigest()
        result["weights_ok"] = got == info["weights_sha256"]
        result["weights_sha256"] = got
    if not result["weights_ok"]:
        raise BitnetError(f"{name}: weights are corrupt: sha256 {got[:16]}…, recorded {info['weights_sha256'][:16]}…")
    if gguf:
        src = file_sha256(gguf)
        result["source_ok"] = src == info.get("source_sha256")
        if not result["source_ok"]:
            raise BitnetError(f"{name} was not built from {os.path.basename(gguf)} (sha256 {src[:16]}…, "
                              f"recorded {str(info.get('source_sha256'))[:16]}…)")
    return result
