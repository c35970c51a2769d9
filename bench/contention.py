"""Threads under contention: decode speed at the default thread count against `-t 1`, on a
quiet machine and with a busy-loop process occupying one core.

    python bench/contention.py [--models shakespeare,2b4t] [--reps 5] [--binary NAME=PATH ...]

For each model (the bundled examples/shakespeare.gguf; a 2B-4T-shaped factory model,
`bitnet-aot make-test-model --shape 2b4t`) it builds a binary for this machine (or takes
--binary NAME=PATH), then runs greedy decode (8-token prompt, -n tokens, --ignore-eos)
at `-t 1` and at the default thread count (no -t: every online core), each quiet and
with the busy loop, alternating the four configurations run by run, and reports medians of
--reps runs of the binary's own "generation ... tok/s" timing. The busy loop is a separate
process spinning on one core (pinned to the last CPU unless --no-pin) that exits by itself
after --busy-seconds even if this script dies.

The target (issue 16): under the busy loop the default thread count is not slower than
-t 1. The machine may be shared: compare the ratios of one run, not absolute figures.
Prints a table and writes bench/results/contention-<date>-<host>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = re.compile(r"generation (\d+) tokens in ([0-9.]+) s \(([0-9.]+) tok/s\)")
BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"
# decoded tokens per run: enough for about a second of decode per model
DEFAULT_N = {"shakespeare": 200, "2b4t": 32}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build(name: str, workdir: str) -> str:
    """A binary for this machine: the bundled model, or a 2B-4T-shaped factory model."""
    out = os.path.join(workdir, name)
    if name == "shakespeare":
        gguf = os.path.join(ROOT, "examples", "shakespeare.gguf")
    elif name == "2b4t":
        gguf = os.path.join(workdir, "2b4t.gguf")
        subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "make-test-model", gguf, "--shape", "2b4t"],
                       check=True, stdout=subprocess.DEVNULL)
    else:
        raise SystemExit(f"error: unknown model {name!r} (shakespeare, 2b4t)")
    log(f"building {name} ...")
    subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "build", gguf, "-o", out], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def start_busy(seconds: float, pin: bool) -> subprocess.Popen:
    def pin_last_cpu():
        if pin and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    return subprocess.Popen([sys.executable, "-c", BUSY.format(s=seconds)], preexec_fn=pin_last_cpu)


def decode_tok_s(binary: str, threads: int | None, n: int) -> float:
    args = [binary, "--ids", "1 5 9 13 17 21 25 29", "-n", str(n), "--temp", "0", "--ignore-eos"]
    if threads is not None:
        args += ["-t", str(threads)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    m = TIMING.search(r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit(f"error: {binary} failed (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    return float(m.group(3))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="shakespeare,2b4t", help="comma-separated: shakespeare, 2b4t")
    ap.add_argument("--binary", action="append", default=[], metavar="NAME=PATH",
                    help="use this binary for model NAME instead of building it")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("-n", type=int, default=0, help="decoded tokens per run (default: per model)")
    ap.add_argument("--busy-seconds", type=float, default=120.0, help="upper bound of one busy loop's life")
    ap.add_argument("--no-pin", action="store_true", help="let the busy loop move between cores")
    ap.add_argument("--out", default="", help="JSON path (default: bench/results/contention-<date>-<host>.json)")
    a = ap.parse_args(argv)

    given = {}
    for b in a.binary:
        name, sep, path = b.partition("=")
        if not sep or not os.path.isfile(path):
            ap.error(f"--binary {b!r}: expected NAME=PATH of an existing file")
        given[name] = path
    models = [m for m in a.models.split(",") if m]
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bn-contention-") as tmp:
        for name in models:
            binary = given.get(name) or build(name, tmp)
            n = a.n or DEFAULT_N.get(name, 64)
            configs = [(t, busy) for busy in (False, True) for t in (1, None)]
            got = {c: [] for c in configs}
            for rep in range(a.reps):
                for t, busy in (configs if rep % 2 == 0 else configs[::-1]):
                    proc = start_busy(a.busy_seconds, not a.no_pin) if busy else None
                    try:
                        got[(t, busy)].append(decode_tok_s(binary, t, n))
                    finally:
                        if proc:
                            proc.kill()
                            proc.wait()
                log(f"{name} rep {rep + 1}/{a.reps}: " + ", ".join(
                    f"{'t1' if t else 'default'}{'+busy' if b else ''} {v[-1]:.1f}" for (t, b), v in got.items()))
            med = {c: statistics.median(v) for c, v in got.items()}
            for busy in (False, True):
                rows.append({"model": name, "busy_core": busy, "tokens": n, "default_threads": cores,
                             "t1_tok_s": med[(1, busy)], "default_tok_s": med[(None, busy)],
                             "ratio": med[(None, busy)] / med[(1, busy)],
                             "t1_runs": got[(1, busy)], "default_runs": got[(None, busy)]})

    print(f"decode tok/s, median of {a.reps}; default = no -t: the binary's bn_default_threads (the {cores} online "
          "cores, at most one per 32 MiB of weights: 1 for the bundled model); "
          f"load average before: {load_before[0]:.2f}")
    print("| model | busy loop on one core | -t 1 | default (no -t) | default / -t 1 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {'yes' if r['busy_core'] else 'no'} | {r['t1_tok_s']:.1f} | "
              f"{r['default_tok_s']:.1f} | {r['ratio']:.2f}x |")
    out = a.out or os.path.join(ROOT, "bench", "results",
                                f"contention-{datetime.date.today().isoformat()}-{socket.gethostname()}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "host": socket.gethostname(), "cores": cores, "load_average_before": load_before,
                   "reps": a.reps, "busy_pinned": not a.no_pin, "rows": rows}, f, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
