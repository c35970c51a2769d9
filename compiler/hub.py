"""`from_pretrained("org/name")`: a GGUF from the Hugging Face Hub, through huggingface_hub's
cache (its cache first; a download only when online). Offline and not cached: one line
naming the repository and the cache directory that was searched.
"""
from __future__ import annotations

import os
import re

from .errors import BitnetError

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# When a repository holds several GGUFs and none is named: the ternary types bitnet-aot
# runs exactly, densest first; then F16 (exact when the values are ternary).
_PREFERENCE = ("i2_s", "tq2_0", "tq1_0", "q2_0", "q1_0", "f16", "bf16", "f32")


def looks_like_repo_id(s: str) -> bool:
    return bool(_REPO_RE.match(s)) and not os.path.exists(s)


def _cache_dir(cache_dir):
    if cache_dir:
        return cache_dir
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _pick(files: list, repo_id: str, filename) -> str:
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if filename:
        if filename not in ggufs:
            raise BitnetError(f"{repo_id}: no file {filename!r} (GGUFs: {', '.join(ggufs) or 'none'})")
        return filename
    if not ggufs:
        raise BitnetError(f"{repo_id}: the repository has no .gguf file; convert its checkpoint with "
                          "`bitnet-aot convert`")
    if len(ggufs) == 1:
        return ggufs[0]
    for t in _PREFERENCE:
        hit = [f for f in ggufs if t in os.path.basename(f).lower().replace("-", "_")]
        if len(hit) == 1:
            return hit[0]
    raise BitnetError(f"{repo_id}: several GGUFs ({', '.join(ggufs)}); name one with filename=")


def resolve(repo_id: str, filename: str | None = None, cache_dir: str | None = None,
            revision: str | None = None) -> str:
    """The local path of the repository's GGUF: from the hub cache, else downloaded (when
    huggingface_hub is not offline). Raises BitnetError with one line otherwise."""
    try:
        import huggingface_hub as hh
        from huggingface_hub import constants
    except ImportError:
        raise BitnetError(f"{repo_id}: resolving a Hugging Face repository needs huggingface_hub "
                          "(pip install huggingface_hub), or give the path of a .gguf file") from None
    where = _cache_dir(cache_dir)
    patterns = [filename] if filename else ["*.gguf"]
    try:
        snap = hh.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns,
                                    local_files_only=True)
        files = [os.path.relpath(os.path.join(dp, f), snap) for dp, _, fs in os.walk(snap) for f in fs]
        if any(f.lower().endswith(".gguf") for f in files):
            return os.path.join(snap, _pick(files, repo_id, filename))
    except BitnetError:
        raise
    except Exception:   # not in the cache (LocalEntryNotFoundError and friends)
        pass
    if constants.HF_HUB_OFFLINE:
        raise BitnetError(f"{repo_id}: not in the Hugging Face cache ({where}) and HF_HUB_OFFLINE is set; "
                          "download it once online, or give the path of a .gguf file")
    try:
        if filename is None:
            names = [s.rfilename for s in hh.model_info(repo_id, revision=revision).siblings or []]
            filename = _pick(names, repo_id, None)
        return hh.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir)
    except BitnetError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BitnetError(f"{repo_id}: not in the Hugging Face cache ({where}) and the download failed "
                          f"({type(e).__name__}: {msg[:160]})") from None
