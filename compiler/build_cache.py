"""The build cache: one compiled copy of a model per GGUF and build options, for this machine.

`bitnet-aot tokenize`, `perplexity` and `serve` and the Python binding
(`BitNetModel.from_pretrained`) all compile through `compile_cached`, so a model is
compiled once for all of them. An entry is a folder

    ~/.cache/bitnet-aot/builds/<key>/
        model.so       the shared library (tokenize, perplexity, the binding)
        model          the static executable (serve), built the first time it is asked for
        entry.json     the GGUF it came from, its SHA-256, the options, the bitnet-aot version

named by a hash of the GGUF's SHA-256, the build options (defaults left out, so
`perplexity --head auto` and `from_pretrained()` share an entry), the target and the
bitnet-aot sources (a changed bitnet-aot never reuses a stale build). The folder moves with
the environment variable BITNET_AOT_CACHE. `bitnet-aot cache list|clean` shows and removes
entries; the generated C tree of a cached build is deleted once it is compiled.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

from .errors import BitnetError

# build() keyword defaults: options equal to these are left out of the key
DEFAULT_OPTIONS = {"kernel": "auto", "weights": "embedded", "ctx": 0, "head": "auto", "embed": "auto", "kv": "f16",
                   "ternarize": False, "sanitize": False}
ARTEFACTS = {"shared": "model.so", "executable": "model"}


def cache_root() -> str:
    """The cache folder: $BITNET_AOT_CACHE, else ~/.cache/bitnet-aot/builds."""
    return (os.environ.get("BITNET_AOT_CACHE") or os.environ.get("BITNET_AOT_BUILD_CACHE")
            or os.path.join(os.path.expanduser("~"), ".cache", "bitnet-aot", "builds"))


def normalized_options(build_opts: dict) -> dict:
    """The options that make a build differ from the default one (sorted, defaults dropped)."""
    return {k: build_opts[k] for k in sorted(build_opts)
            if build_opts[k] is not None and DEFAULT_OPTIONS.get(k, object()) != build_opts[k]}


def cache_key(gguf_sha256: str, build_opts: dict) -> str:
    """The entry's folder name: a hash of the GGUF hash, bitnet-aot version and sources,
    the target and the options that are not the defaults."""
    from . import __version__
    from .build import source_fingerprint
    from .targets import load_target
    desc = json.dumps({"gguf": gguf_sha256, "bitnet_aot": __version__, "sources": source_fingerprint(),
                       "target": load_target("host").name, "opts": normalized_options(build_opts)},
                      sort_keys=True, default=str)
    return hashlib.sha256(desc.encode()).hexdigest()[:24]


def _say(line: str):
    print(line, file=sys.stderr, flush=True)


def compile_cached(gguf: str, cache_dir: str | None = None, executable: bool = False, log=_say,
                   **build_opts) -> str:
    """The shared library (executable=False) or static executable (True) of `gguf` for this
    machine: compiled on first use, then taken from the cache. Raises BitnetError."""
    from . import progress
    from .build import build
    from .gguf_import import file_sha256
    if not os.path.isfile(gguf):
        raise BitnetError(f"{gguf}: no such file; check the path")
    try:
        sha = file_sha256(gguf)
    except OSError as e:
        raise BitnetError(f"{gguf}: cannot read ({e.strerror}); check the path") from None
    root = cache_dir or cache_root()
    d = os.path.join(root, cache_key(sha, build_opts))
    out = os.path.join(d, ARTEFACTS["executable" if executable else "shared"])
    if os.path.isfile(out):
        _touch(d)
        return out
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise BitnetError(f"cannot create the build cache {root} ({e.strerror}); "
                          "set BITNET_AOT_CACHE to a writable folder") from None
    import fcntl
    with open(os.path.join(d, ".lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)          # another process may be building it
        if os.path.isfile(out):
            return out
        from .gguf_import import load_gguf
        tmp = None
        try:
            model = load_gguf(gguf, ternarize=bool(build_opts.get("ternarize")))   # a bad file fails before any message
            what = "an executable" if executable else "a shared library"
            log(f"compiling {os.path.basename(gguf)} for this machine as {what} (once; cached in {d})")
            tmp = tempfile.mkdtemp(prefix=".build-", dir=d)
            t0 = time.time()
            with progress.shown(True):
                build(gguf, "host", os.path.join(tmp, os.path.basename(out)), shared=not executable,
                      build_dir=os.path.join(tmp, "c"), log=lambda s: _build_line(log, s), model=model, **build_opts)
            os.replace(os.path.join(tmp, os.path.basename(out)), out)
        except BaseException:
            if not any(os.path.isfile(os.path.join(d, a)) for a in ARTEFACTS.values()):
                shutil.rmtree(d, ignore_errors=True)
            raise
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        from . import __version__
        from .build import source_fingerprint
        with open(os.path.join(d, "entry.json"), "w") as f:
            json.dump({"gguf": os.path.abspath(gguf), "sha256": sha, "options": normalized_options(build_opts),
                       "bitnet_aot": __version__, "sources": source_fingerprint()}, f, default=str)
        log(f"compiled in {time.time() - t0:.1f} s")
    return out


def _build_line(log, line: str):
    """build()'s log, without the lines about the temporary folders of a cached build."""
    if not line.startswith(("generated C in", "built ")):
        log("  " + line)


def _touch(d: str):
    try:
        os.utime(os.path.join(d, "entry.json"))
    except OSError:
        pass


def _size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def entries(cache_dir: str | None = None) -> list:
    """The cache's entries, most recently used first: dicts with key, path, bytes, last_used
    (a time stamp), artefacts, gguf, sha256, options and stale (made by other bitnet-aot
    sources: never used again)."""
    from .build import source_fingerprint
    root = cache_dir or cache_root()
    if not os.path.isdir(root):
        return []
    now_fp = source_fingerprint()
    out = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d) or name.startswith("."):
            continue
        meta = {}
        try:
            with open(os.path.join(d, "entry.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            pass
        stamp = os.path.join(d, "entry.json")
        out.append({"key": name, "path": d, "bytes": _size(d),
                    "last_used": os.path.getmtime(stamp if os.path.exists(stamp) else d),
                    "artefacts": [k for k, a in ARTEFACTS.items() if os.path.isfile(os.path.join(d, a))],
                    "gguf": meta.get("gguf"), "sha256": meta.get("sha256"), "options": meta.get("options", {}),
                    "bitnet_aot": meta.get("bitnet_aot"), "stale": meta.get("sources") != now_fp})
    out.sort(key=lambda e: -e["last_used"])
    return out


def total_bytes(cache_dir: str | None = None) -> int:
    root = cache_dir or cache_root()
    return _size(root) if os.path.isdir(root) else 0


def clean(keys=None, stale_only: bool = False, cache_dir: str | None = None) -> tuple:
    """Removes entries: the ones named (a key or the start of one), the stale ones, or all.
    Returns (entries removed, bytes freed). An unknown key is a BitnetError."""
    all_entries = entries(cache_dir)
    chosen = all_entries
    if keys:
        chosen = []
        for k in keys:
            hit = [e for e in all_entries if e["key"].startswith(k)]
            if not hit:
                raise BitnetError(f"no cache entry {k!r}; `bitnet-aot cache list` shows them")
            chosen += [e for e in hit if e not in chosen]
    if stale_only:
        chosen = [e for e in chosen if e["stale"]]
    freed = 0
    for e in chosen:
        freed += e["bytes"]
        shutil.rmtree(e["path"], ignore_errors=True)
    return len(chosen), freed
