"""The zig toolchain: locating it, its cache, and running `zig cc`."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading

from .errors import BitnetError

ZIG_VERSION = "0.17.1"   # pinned in pyproject.toml too: generated binaries are reproducible per zig version


def zig_cache_dir() -> str:
    """zig's global cache (compiled libc per target). Kept between builds and test runs:
    the first build for a new target takes minutes, later ones about a second."""
    d = os.environ.get("ZIG_GLOBAL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bitnet-aot", "zig")
    os.makedirs(d, exist_ok=True)
    return d


def zig_command() -> list:
    return [sys.executable, "-m", "ziglang"]


def zig_env(local_cache: str | None = None) -> dict:
    """Environment for zig. The global cache keeps compiled libc per target; objects of a
    build (the blob object is as large as the weights) go to a local cache that the build
    deletes afterwards, so the global cache does not grow by a model's size per build."""
    env = dict(os.environ)
    env["ZIG_GLOBAL_CACHE_DIR"] = zig_cache_dir()
    env["ZIG_LOCAL_CACHE_DIR"] = local_cache or os.path.join(zig_cache_dir(), "local")
    # Reproducibility: no timestamps from the environment leak into objects.
    env["SOURCE_DATE_EPOCH"] = "0"
    return env


def zig_version() -> str:
    try:
        r = subprocess.run(zig_command() + ["version"], capture_output=True, text=True, env=zig_env(), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BitnetError(f"cannot run zig ({e}); reinstall with `pip install ziglang=={ZIG_VERSION}`") from None
    if r.returncode != 0:
        raise BitnetError(f"zig does not run: {r.stderr.strip()[:200]}; reinstall with `pip install ziglang=={ZIG_VERSION}`")
    return r.stdout.strip()


def run_zig(args: list, cwd: str, what: str, log=None, local_cache: str | None = None):
    """Run `zig <args>` in cwd; a failure becomes a one-line BitnetError (full output in a log file)."""
    cmd = zig_command() + args
    if log:
        log("  $ zig " + " ".join(shlex.quote(a) for a in args))
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=zig_env(local_cache))
    if r.returncode != 0:
        logf = os.path.join(cwd, "build-error.log")
        with open(logf, "w") as f:
            f.write("$ zig " + " ".join(shlex.quote(a) for a in args) + "\n" + r.stdout + r.stderr)
        first = next((ln for ln in (r.stderr or r.stdout).splitlines() if "error" in ln), (r.stderr or r.stdout).strip()[:300])
        raise BitnetError(f"{what} failed: {first.strip()} (full log: {logf})")
    return r


# ---------------------------------------------------------------------------------------
# Object cache: a compiled object is reused when the command, the zig version and the bytes
# of the source and of every header it includes (followed through our own quoted includes)
# are the same. The kernels, tokenizer, HTTP and JSON code do not depend on the model, so a
# new model recompiles only the files that include its model_config.h. zig's own cache is
# not used for this: its entries are keyed by relative include paths, which every build
# tree shares. Objects are deterministic, so a reused one is the one a compile would write.
# ---------------------------------------------------------------------------------------
_INCLUDE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.M)


def object_cache_dir() -> str:
    return os.environ.get("BITNET_AOT_OBJECT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bitnet-aot", "objects")


def _object_key(args: list, cwd: str) -> str | None:
    """sha256 of what the object of compile command `args` (zig arguments, run in cwd) is
    made of; None when a quoted include cannot be found (then it is not cached)."""
    src = args[args.index("-c") + 1]
    if not src.endswith(".c"):
        return None
    out = args.index("-o")
    key_args = args[:out] + args[out + 2:]
    incdirs = [a[2:] if len(a) > 2 else args[i + 1] for i, a in enumerate(args) if a.startswith("-I")]
    h = hashlib.sha256(f"{ZIG_VERSION}\0{json.dumps(key_args)}".encode())
    seen, stack = set(), [os.path.normpath(os.path.join(cwd, src))]
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        h.update(os.path.relpath(path, cwd).encode() + b"\0" + hashlib.sha256(data).digest())
        for inc in _INCLUDE.findall(data):
            name = inc.decode("utf-8", "replace")
            for d in [os.path.dirname(path)] + [os.path.join(cwd, d) for d in incdirs]:
                cand = os.path.normpath(os.path.join(d, name))
                if os.path.isfile(cand):
                    stack.append(cand)
                    break
            else:
                return None
    return h.hexdigest()


OBJECT_CACHE_LIMIT = 256 << 20     # bytes; the least recently used objects go first beyond it


def prune_object_cache(limit: int = OBJECT_CACHE_LIMIT) -> None:
    root = object_cache_dir()
    files = []
    for d, _, names in os.walk(root):
        for n in names:
            try:
                st = os.stat(os.path.join(d, n))
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, os.path.join(d, n)))
    total = sum(f[1] for f in files)
    for _, size, path in sorted(files):
        if total <= limit:
            break
        try:
            os.remove(path)
            total -= size
        except OSError:
            pass


def run_zig_cached(args: list, cwd: str, what: str, local_cache: str | None = None) -> bool:
    """run_zig for one compile, through the object cache; True when the object was reused."""
    key = _object_key(args, cwd)
    obj = os.path.join(cwd, args[args.index("-o") + 1])
    cached = os.path.join(object_cache_dir(), key[:2], key + ".o") if key else None
    if cached and os.path.isfile(cached):
        shutil.copyfile(cached, obj)
        try:
            os.utime(cached)                # most recently used: pruned last
        except OSError:
            pass
        return True
    run_zig(args, cwd, what, local_cache=local_cache)
    if cached:
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            tmp = f"{cached}.{os.getpid()}.{threading.get_ident()}.tmp"
            shutil.copyfile(obj, tmp)
            os.replace(tmp, cached)
        except OSError:
            pass
    return False


def _libc_marker(target: str, shared: bool) -> str:
    return os.path.join(zig_cache_dir(), f".bitnet-aot-libc-{target}{'-shared' if shared else ''}-{ZIG_VERSION}")


def run_zig_all(cmds: list, cwd: str, target: str, shared: bool = False, local_cache: str | None = None):
    """Run the compile and link commands of one build in order, with progress (see
    progress.py). The first build for a target also compiles zig's C library for it
    (about a minute, once per target and zig version): said beforehand, so the wait is
    not silent."""
    from . import progress
    marker = _libc_marker(target, shared)
    first = not shared and not os.path.exists(marker)     # a shared library links the system's libc
    if first and progress.enabled():
        print(f"first build for {target} with zig {ZIG_VERSION}: zig compiles its C library for this target once "
              f"(about a minute); later builds take seconds", file=sys.stderr, flush=True)
    what = f"compiling for {target}"
    # Objects compile in parallel, one zig process per core (each writes only its own
    # object; zig locks its caches); links run after them, in order.
    from concurrent.futures import ThreadPoolExecutor, as_completed
    compiles = [c for c in cmds if "-c" in c]
    links = [c for c in cmds if "-c" not in c]
    with progress.Progress(what, total=len(cmds), unit="step", delay=0 if first else 2.0) as p:
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            futs = {pool.submit(run_zig_cached, c, cwd, what, local_cache=local_cache): c for c in compiles}
            for f in as_completed(futs):
                f.result()
                c = futs[f]
                p.note(os.path.basename(c[c.index("-c") + 1]))
                p.update()
        for c in links:
            p.note("linking (and zig's C library)" if first else "linking")
            run_zig(c, cwd, what, local_cache=local_cache)
            p.update()
    try:
        with open(marker, "w") as f:
            f.write("zig's C library for this target is in the cache\n")
    except OSError:
        pass
    prune_object_cache()
