"""Attention kernels alone: time per (key, query) of attn_segment, the loop a decoded token
runs over the KV cache, per variant this CPU has, optionally against the kernels of an
earlier revision, alternated run by run.

    python bench/attention.py [--depths 1024,4096] [--nq 4,128] [--kv f16] [--reps 5] [--baseline REV]

Each case is one KV head of the 2B-4T shape (D = 128): NQ queries (4: the query heads of
one GQA group in a decode step; 128: a 32-row prompt chunk) against DEPTH cached positions,
every query seeing every key. The harness is tests/attn_harness.c's `bench` mode, built with
the kernel sources of this checkout and, with --baseline, of revision REV (git archive of
its runtime_c/), so both run the same timing code. Prints a table of medians and writes
bench/results/<date>-<host>-attention.json. Nanoseconds per key and query: lower is better;
one decoded 2B-4T token at depth d costs 30 layers x 20 query heads x d of them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bitnet_aot.kernels import build_kernel_program  # noqa: E402

KV_TYPES = {"f32": 0, "f16": 1, "q8": 2}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def harness(repo_root: str, wd: str) -> str:
    os.makedirs(wd, exist_ok=True)
    out = os.path.join(wd, "attn_harness")
    build_kernel_program("x86_64-linux-musl" if os.uname().machine == "x86_64" else "aarch64-linux-musl",
                         [os.path.join(ROOT, "tests", "attn_harness.c")], out, repo_root=repo_root,
                         cflags=("-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"), workdir=wd)
    return out


def checkout(rev: str, dest: str) -> str:
    """runtime_c/ of revision rev, unpacked under dest."""
    os.makedirs(dest, exist_ok=True)
    tar = os.path.join(dest, "src.tar")
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "--quiet", rev + "^{commit}"], capture_output=True)
    if r.returncode != 0:
        sys.exit(f"error: --baseline {rev}: not a revision of this repository (git log --oneline lists them)")
    subprocess.run(["git", "-C", ROOT, "archive", "-o", tar, rev, "runtime_c"], check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest


def variants(exe: str) -> list:
    out = subprocess.run([exe, "info"], capture_output=True, text=True, check=True).stdout
    return [ln.split()[1] for ln in out.splitlines() if ln.startswith("have ")]


def run(exe: str, name: str, kv: int, depth: int, nq: int, reps: int) -> float:
    r = subprocess.run([exe, "bench", name, str(kv), "128", str(depth), str(nq), str(reps)],
                       capture_output=True, text=True, check=True)
    return float(r.stdout.split()[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", default="1024,4096")
    ap.add_argument("--nq", default="4,128")
    ap.add_argument("--kv", default="f16", choices=sorted(KV_TYPES))
    ap.add_argument("--reps", type=int, default=5, help="alternated repetitions (medians reported)")
    ap.add_argument("--baseline", help="a git revision whose kernels to run side by side")
    a = ap.parse_args(argv)
    try:
        depths = [int(x) for x in a.depths.split(",")]
        nqs = [int(x) for x in a.nq.split(",")]
    except ValueError:
        ap.error("--depths and --nq take comma-separated integers")
    if any(d < 512 or d % 512 for d in depths):
        ap.error("--depths: multiples of 512")
    tmp = tempfile.mkdtemp(prefix="bn-attn-bench-")
    builds = {"this checkout": harness(ROOT, os.path.join(tmp, "cur"))}
    if a.baseline:
        builds[a.baseline] = harness(checkout(a.baseline, os.path.join(tmp, "base")), os.path.join(tmp, "base-obj"))
    log(f"built {', '.join(builds)}")
    rows = []
    for name in variants(builds["this checkout"]):
        for depth in depths:
            for nq in nqs:
                inner = max(1, 2_000_000 // (depth * nq))      # about 10-50 ms per run
                t = {b: [] for b in builds}
                for rep in range(a.reps):
                    order = list(builds) if rep % 2 == 0 else list(reversed(builds))
                    for b in order:
                        t[b].append(run(builds[b], name, KV_TYPES[a.kv], depth, nq, inner))
                row = {"variant": name, "kv": a.kv, "depth": depth, "nq": nq,
                       **{f"ns_{b}": statistics.median(v) for b, v in t.items()}, "runs": t}
                rows.append(row)
                log(f"{name} depth {depth} nq {nq}: " + ", ".join(f"{b} {statistics.median(v):.3f} ns" for b, v in t.items()))
    print(f"\n| variant | depth | queries | {' | '.join(f'ns / key / query: {b}' for b in builds)} |"
          + (" ratio |" if a.baseline else ""))
    print("|---|---|---|" + "---|" * len(builds) + ("---|" if a.baseline else ""))
    for r in rows:
        cells = " | ".join(f"{r[f'ns_{b}']:.3f}" for b in builds)
        ratio = f" {r['ns_this checkout'] / r[f'ns_{a.baseline}']:.2f}× |" if a.baseline else ""
        print(f"| {r['variant']} | {r['depth']} | {r['nq']} | {cells} |{ratio}")
    path = os.path.join(ROOT, "bench", "results",
                        f"{datetime.date.today().isoformat()}-{socket.gethostname()}-attention.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"date": datetime.date.today().isoformat(), "host": socket.gethostname(),
                   "baseline": a.baseline, "reps": a.reps, "rows": rows}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
