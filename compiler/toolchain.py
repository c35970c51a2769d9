"""The zig toolchain: locating it, its cache, and running `zig cc`."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

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
            futs = {pool.submit(run_zig, c, cwd, what, local_cache=local_cache): c for c in compiles}
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
