"""End-to-end benchmark: bitnet-aot vs llama.cpp on the same GGUF, side by side.

    python bench/e2e.py [--shape 2b4t|small] [--threads 1,2] [--reps 5] [--kernels i2s,tl2] [--head auto,q6]
    python bench/e2e.py --depth 0,1024,2048,4096 [--threads 1,2] [--reps 3] [--kv f16]

With --depth: long contexts against llama.cpp's own llama-bench (built from its sources into
the bench cache by bench/peers.py, with progress; the llama-cpp-python path is the fallback
of the default mode only). For each depth d, ours runs one process per repetition: a
d-token prompt (prefill tok/s), then 32 greedy tokens (decode tok/s at depth d); depth 0 is
an 8-token prompt for decode and a 128-token prompt for prefill. llama-bench measures the
same two numbers (`-p d -n 0`; `-p 0 -n 32 -d d`), F16 KV on both sides. The roofline
counts the KV cache bytes a decoded token reads at that depth besides the weights. The
model's context is 8192 here so that depth 4096 leaves room to decode.

1. writes a BitNet-b1.58-2B-4T-shaped random-weight GGUF (architecture `bitnet`, TQ2_0
   projections, F16 tied embedding: a file llama.cpp reads too), cached between runs;
2. builds it with bitnet-aot for this machine, once per kernel and head precision, timing
   the build;
3. installs llama-cpp-python (PyPI, built from source) into its own cached venv the first
   time — the build takes 10-20 minutes on two cores; progress is printed;
4. alternates the systems run by run, median of --reps runs each: decode tok/s (64 tokens
   after an 8-token prompt), prompt tok/s (128-token prompt), time to first token (16-token
   prompt, process start to first token for bitnet-aot; model already loaded for llama.cpp,
   whose load time is reported separately), peak RSS, binary size minus weights;
5. measures memory read bandwidth in the same run (bench/kernel_bench.c) after every decode
   repetition, and reports decode as a fraction of the roofline: per repetition, decode
   tok/s over (that repetition's bandwidth / bytes read per token), median;
6. prints one table and writes bench/results/<date>-<host>-e2e.json.
The machine is shared: only ratios measured in the same run mean anything.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import kernels as kb  # noqa: E402  (bench/kernels.py: the read-bandwidth kernel, the CPU name)
CACHE = os.path.expanduser(os.environ.get("BITNET_AOT_BENCH_CACHE", "~/.cache/bitnet-aot/bench"))
LLAMA_VERSION = "0.3.36"

# Runs inside the llama-cpp-python venv: one measurement, printed as JSON.
LLAMA_RUNNER = r'''
import json, sys, time
from llama_cpp import Llama
path, threads, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, n_batch=512,
            verbose=False, use_mmap=True)
load = time.perf_counter() - t0
toks = [(7 * i + 3) % 1000 + 100 for i in range(n)]
out = {"load_s": load}
if mode == "prompt":
    t = time.perf_counter(); llm.eval(toks); out["seconds"] = time.perf_counter() - t; out["tokens"] = n
elif mode == "ttft":
    t = time.perf_counter(); llm.eval(toks); llm.sample(temp=0.0); out["seconds"] = time.perf_counter() - t
else:  # decode: 8-token prompt, then n greedy tokens one at a time
    llm.eval(toks[:8])
    t = time.perf_counter()
    for _ in range(n):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    out["seconds"] = time.perf_counter() - t; out["tokens"] = n
import resource
out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
'''


def log(msg):
    print(msg, file=sys.stderr, flush=True)


SMALL_SHAPE = dict(n_embd=1024, n_layer=8, n_ff=2816, n_head=16, n_head_kv=4, n_vocab=32000, n_ctx=2048)


def model_path(shape: str, n_ctx: int = 0) -> str:
    from bitnet_aot.factory import SHAPES_2B4T, make_test_model
    os.makedirs(CACHE, exist_ok=True)
    p = os.path.join(CACHE, f"{shape}-bitnet-tq2_0-f16{f'-ctx{n_ctx}' if n_ctx else ''}.gguf")
    if not os.path.exists(p):
        shp = dict(SHAPES_2B4T) if shape == "2b4t" else dict(SMALL_SHAPE)
        if n_ctx:
            shp["n_ctx"] = n_ctx
        log(f"writing {p} (cached for later runs) ...")
        make_test_model(p + ".tmp", "bitnet", "tq2_0", tokenizer="bpe", embd_type="f16", seed=1, **shp)
        os.replace(p + ".tmp", p)
    return p


def llama_python() -> str | None:
    venv = os.path.join(CACHE, "llamacpp-venv")
    py = os.path.join(venv, "bin", "python")
    ok = os.path.exists(py) and subprocess.run([py, "-c", "import llama_cpp"], capture_output=True).returncode == 0
    if ok:
        return py
    log(f"installing llama-cpp-python=={LLAMA_VERSION} into {venv} (builds llama.cpp from source: 10-20 min) ...")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    proc = subprocess.Popen([py, "-m", "pip", "install", f"llama-cpp-python=={LLAMA_VERSION}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=ON"))
    t0 = time.time()
    for line in proc.stdout:
        if "Building" in line or "Successfully" in line or "error" in line.lower():
            log(f"  [{time.time() - t0:5.0f} s] {line.rstrip()[:120]}")
    if proc.wait() != 0:
        log("llama-cpp-python could not be installed; measuring bitnet-aot alone")
        return None
    return py


def ours(exe: str, mode: str, threads: int, n: int) -> dict:
    toks = " ".join(str((7 * i + 3) % 1000 + 100) for i in range(max(n, 8)))
    if mode == "prompt":
        args = ["--ids", toks, "-n", "1"]
    elif mode == "ttft":
        args = ["--ids", toks, "-n", "1"]
    else:
        args = ["--ids", " ".join(toks.split()[:8]), "-n", str(n)]
    cmd = ["/usr/bin/time", "-f", "MAXRSS %M", exe] + args + ["-t", str(threads), "--temp", "0", "--ignore-eos",
                                                             "--print-ids", "--ctx", "512"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{exe} failed: {r.stderr[-300:]}")
    m = re.search(r"prompt (\d+) tokens in ([\d.]+) s .*generation (\d+) tokens in ([\d.]+) s", r.stderr)
    rss = int(re.search(r"MAXRSS (\d+)", r.stderr).group(1))
    variant = re.search(r"kernel (\S+)", r.stderr)
    res = {"maxrss_kb": rss, "kernel_variant": variant.group(1) if variant else None}
    if mode == "prompt":
        res.update(seconds=float(m.group(2)), tokens=int(m.group(1)))
    elif mode == "ttft":
        res.update(seconds=wall)
    else:
        res.update(seconds=float(m.group(4)), tokens=int(m.group(3)))
    return res


def theirs(py: str, gguf: str, mode: str, threads: int, n: int) -> dict:
    r = subprocess.run([py, "-c", LLAMA_RUNNER, gguf, str(threads), mode, str(n)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp failed: {r.stderr[-300:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours_depth(exe: str, d: int, threads: int, n_gen: int) -> dict:
    n_prompt = d if d else 8
    toks = " ".join(str((7 * i + 3) % 1000 + 100) for i in range(n_prompt))
    cmd = ["/usr/bin/time", "-f", "MAXRSS %M", exe, "--ids", toks, "-n", str(n_gen), "-t", str(threads), "--temp", "0",
           "--ignore-eos", "--print-ids"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{exe} failed: {r.stderr[-300:]}")
    m = re.search(r"prompt (\d+) tokens in ([\d.]+) s .*generation (\d+) tokens in ([\d.]+) s", r.stderr)
    gen_s = float(m.group(4))   # 0.000 s when n_gen is 1: the first token comes with the prompt
    return {"prefill_tok_s": int(m.group(1)) / float(m.group(2)), "decode_tok_s": int(m.group(3)) / gen_s if gen_s else None,
            "maxrss_kb": int(re.search(r"MAXRSS (\d+)", r.stderr).group(1))}


def llama_bench(bindir: str, gguf: str, threads: int, args: list[str]) -> float:
    cmd = [os.path.join(bindir, "llama-bench"), "-m", gguf, "-t", str(threads), "-r", "1", "-o", "json"] + args
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"llama-bench failed: {r.stderr[-300:]}")
    return float(json.loads(r.stdout)[0]["avg_ts"])


def run_depth(a, threads: list[int]) -> None:
    from bench.peers import llama_bin
    from bitnet_aot.build import build
    from bitnet_aot.factory import SHAPES_2B4T
    depths = [int(x) for x in a.depth.split(",")]
    gguf = model_path(a.shape, n_ctx=8192)
    t0 = time.perf_counter()
    res = build(gguf, "host", os.path.join(CACHE, "builds", f"{a.shape}-ctx8192-i2s-kv{a.kv}"), kv=a.kv,
                log=lambda s: None)
    log(f"built bitnet-aot (--kv {a.kv}) in {time.perf_counter() - t0:.1f} s")
    bindir = None if a.no_llama else llama_bin()
    if not a.no_llama and not bindir:
        log("llama.cpp's llama-bench could not be built; measuring bitnet-aot alone")
    hp = SHAPES_2B4T if a.shape == "2b4t" else SMALL_SHAPE
    kv_elem = {"f32": 4, "f16": 2, "q8": 1}[a.kv]
    kv_per_pos = 2 * hp["n_layer"] * hp["n_head_kv"] * (hp["n_embd"] // hp["n_head"]) * kv_elem
    measure_bw, cleanup_bw = membw_meter()
    rows = []
    date = datetime.date.today().isoformat()
    path = os.path.join(ROOT, "bench", "results", f"{date}-{socket.gethostname()}-e2e-depth.json")

    def save() -> str:
        """Write the rows so far (after every row: a run stopped part-way keeps what it measured)."""
        out = {"date": date, "host": socket.gethostname(), "cpu": kb._cpu_name(),
               "shape": a.shape, "kv": a.kv, "reps": a.reps, "depths": depths, "threads": threads,
               "gguf": os.path.basename(gguf), "peer": "llama.cpp b11312 llama-bench (defaults, F16 KV)" if bindir else None,
               "blob_bytes": res.blob_bytes, "kv_bytes_per_position": kv_per_pos, "rows": rows,
               "complete": len(rows) == len(threads) * len(depths), "load": os.getloadavg()}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1, default=str)
        return path
    for th in threads:
        for d in depths:
            runs = {"ours": [], "llama": [], "bw": []}
            for rep in range(a.reps):
                order = ("ours", "llama") if rep % 2 == 0 else ("llama", "ours")
                for who in order:
                    if who == "ours":
                        o = ours_depth(res.output, d, th, 32)
                        if d == 0:
                            o["prefill_tok_s"] = ours_depth(res.output, 128, th, 1)["prefill_tok_s"]
                        runs["ours"].append(o)
                    elif bindir:
                        runs["llama"].append({"prefill_tok_s": llama_bench(bindir, gguf, th, ["-p", str(d or 128), "-n", "0"]),
                                              "decode_tok_s": llama_bench(bindir, gguf, th, ["-p", "0", "-n", "32", "-d", str(d)])})
                runs["bw"].append(measure_bw(th))
            med = lambda who, k: statistics.median(r[k] for r in runs[who]) if runs[who] else None  # noqa: E731
            per_tok = [res.blob_bytes + kv_per_pos * max(d, 8) for _ in runs["bw"]]
            roof = statistics.median(r["decode_tok_s"] / (b * 1e9 / pt) for r, b, pt in zip(runs["ours"], runs["bw"], per_tok))
            row = {"threads": th, "depth": d, "ours_decode": med("ours", "decode_tok_s"),
                   "ours_prefill": med("ours", "prefill_tok_s"), "llama_decode": med("llama", "decode_tok_s"),
                   "llama_prefill": med("llama", "prefill_tok_s"), "roofline": roof,
                   "ours_maxrss_mib": max(r["maxrss_kb"] for r in runs["ours"]) / 1024,
                   "weights_plus_kv_mib": (res.blob_bytes + kv_per_pos * max(d, 8)) / 2**20,
                   "membw_gbps": runs["bw"], "runs": {k: v for k, v in runs.items() if k != "bw"}}
            rows.append(row)
            log(f"{th} thread(s), depth {d}: ours decode {row['ours_decode']:.2f} prefill {row['ours_prefill']:.1f}"
                + (f"; llama.cpp decode {row['llama_decode']:.2f} prefill {row['llama_prefill']:.1f}" if bindir else ""))
            save()
    cleanup_bw()
    print(f"\n{'thr':>3} {'depth':>5} {'decode':>8} {'llama':>8} {'ratio':>6} {'roofline':>8} "
          f"{'prefill':>8} {'llama':>8} {'ratio':>6} {'RSS MiB':>8} {'W+KV MiB':>8}")
    for r in rows:
        rd = r["ours_decode"] / r["llama_decode"] if r["llama_decode"] else float("nan")
        rp = r["ours_prefill"] / r["llama_prefill"] if r["llama_prefill"] else float("nan")
        print(f"{r['threads']:>3} {r['depth']:>5} {r['ours_decode']:>8.2f} {r['llama_decode'] or 0:>8.2f} {rd:>5.2f}x "
              f"{r['roofline'] * 100:>7.0f}% {r['ours_prefill']:>8.1f} {r['llama_prefill'] or 0:>8.1f} {rp:>5.2f}x "
              f"{r['ours_maxrss_mib']:>8.0f} {r['weights_plus_kv_mib']:>8.0f}")
    print(f"wrote {save()}")


def membw_meter():
    """A function threads -> memory read GB/s (bench/kernels.py's read kernel, built once)."""
    d = tempfile.mkdtemp(prefix="e2e-bw-")
    exe = kb.build(d)
    return lambda threads: kb.membw(exe, threads, 0.5), lambda: shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="2b4t", choices=["2b4t", "small"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kernels", default="i2s,tl2")
    ap.add_argument("--head", default="auto",
                    help="bitnet-aot head precisions, comma-separated: auto (the file's F16), f16, q8, q6, q4 "
                         "(llama.cpp keeps the file's F16 head)")
    ap.add_argument("--no-llama", action="store_true", help="measure bitnet-aot alone")
    ap.add_argument("--depth", help="long-context mode: comma-separated context depths, e.g. 0,1024,2048,4096")
    ap.add_argument("--kv", default="f16", choices=["f16", "f32", "q8"], help="bitnet-aot KV cache (--depth mode)")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    if a.depth:
        try:
            if any(int(x) < 0 for x in a.depth.split(",")):
                raise ValueError
        except ValueError:
            ap.error(f"--depth {a.depth}: give comma-separated token counts, e.g. 0,1024,2048,4096")
        return run_depth(a, threads)
    heads = a.head.split(",")
    bad = [h for h in heads if h not in ("auto", "f32", "f16", "q8", "q6", "q4")]
    if bad:
        ap.error(f"--head {','.join(bad)}: choose from auto, f32, f16, q8, q6, q4")
    # one bitnet-aot system per (kernel, head): "i2s", or "i2s+q6" for a quantized head
    variants = [(k, h) for k in a.kernels.split(",") for h in heads]
    kernels = [k if h == "auto" else f"{k}+{h}" for k, h in variants]

    gguf = model_path(a.shape)
    from bitnet_aot.build import build
    exes, builds = {}, {}
    bdir = os.path.join(CACHE, "builds")
    os.makedirs(bdir, exist_ok=True)
    for k, (kern, head) in zip(kernels, variants):
        t0 = time.perf_counter()
        res = build(gguf, "host", os.path.join(bdir, f"{a.shape}-{kern}-{head}"), kernel=kern, head=head,
                    log=lambda s: None)
        builds[k] = {"seconds": time.perf_counter() - t0, "binary_bytes": os.path.getsize(res.output),
                     "weights_bytes": res.blob_bytes,
                     "code_bytes": os.path.getsize(res.output) - res.blob_bytes}
        exes[k] = res.output
        log(f"built {k}: {builds[k]['seconds']:.1f} s, code {builds[k]['code_bytes'] / 1024:.0f} KiB")
    py = None if a.no_llama else llama_python()

    systems = [(f"bitnet-aot {k}", (lambda k: lambda mode, th, n: ours(exes[k], mode, th, n))(k)) for k in kernels]
    if py:
        systems.append(("llama.cpp TQ2_0", lambda mode, th, n: theirs(py, gguf, mode, th, n)))
    modes = [("decode", 64), ("prompt", 128), ("ttft", 16)]
    results = {}
    # This machine's memory bandwidth drifts by a third within minutes (other tenants), so
    # it is measured after every decode repetition, and each decode run is set against the
    # bandwidth measured next to it.
    measure_bw, cleanup_bw = membw_meter()
    bw_runs = {}
    for th in threads:
        for mode, n in modes:
            runs = {name: [] for name, _ in systems}
            for rep in range(a.reps):                      # alternate systems run by run
                for name, fn in (systems if rep % 2 == 0 else systems[::-1]):
                    runs[name].append(fn(mode, th, n))
                if mode == "decode":
                    bw_runs.setdefault(th, []).append(measure_bw(th))
            for name, rs in runs.items():
                secs = statistics.median(r["seconds"] for r in rs)
                results.setdefault(name, {}).setdefault(th, {})[mode] = {
                    "median_seconds": secs, "tok_s": (rs[0].get("tokens", n) / secs) if mode != "ttft" else None,
                    "maxrss_kb": max(r["maxrss_kb"] for r in rs), "runs": [r["seconds"] for r in rs],
                    "kernel_variant": rs[0].get("kernel_variant")}
            log(f"{th} thread(s), {mode}: " + ", ".join(
                f"{nm} {results[nm][th][mode]['median_seconds']:.3f} s" for nm in runs))
    cleanup_bw()
    bw = {th: statistics.median(bw_runs[th]) for th in threads}

    # bytes read per decoded token: the whole blob (packed ternary weights + the tied head;
    # the tokenizer data in it is small)
    per_token = {k: builds[k]["weights_bytes"] for k in kernels}
    print(f"\n{'system':<18} {'thr':>3} {'decode tok/s':>12} {'prompt tok/s':>12} {'TTFT s':>8} {'RSS MiB':>8} "
          f"{'roofline':>8}")
    table = []
    for name in results:
        for th in threads:
            r = results[name][th]
            roof = ""
            k = name.split()[-1]
            if k in per_token:
                # median over repetitions of (decode tok/s) / (bandwidth of that repetition /
                # bytes per token)
                fracs = [r["decode"].get("tokens", 64) / secs / (b * 1e9 / per_token[k])
                         for secs, b in zip(r["decode"]["runs"], bw_runs[th])]
                roof = f"{statistics.median(fracs) * 100:.0f}%"
            row = {"system": name, "threads": th, "decode_tok_s": r["decode"]["tok_s"],
                   "prompt_tok_s": r["prompt"]["tok_s"], "ttft_s": r["ttft"]["median_seconds"],
                   "maxrss_mib": max(x["maxrss_kb"] for x in r.values()) / 1024, "roofline": roof}
            table.append(row)
            print(f"{name:<18} {th:>3} {row['decode_tok_s']:>12.2f} {row['prompt_tok_s']:>12.1f} "
                  f"{row['ttft_s']:>8.3f} {row['maxrss_mib']:>8.0f} {roof:>8}")
    if py:
        for th in threads:
            base = results["llama.cpp TQ2_0"][th]
            for k in kernels:
                mine = results[f"bitnet-aot {k}"][th]
                print(f"ratio bitnet-aot {k} / llama.cpp, {th} thread(s): decode "
                      f"{mine['decode']['tok_s'] / base['decode']['tok_s']:.2f}x, prompt "
                      f"{mine['prompt']['tok_s'] / base['prompt']['tok_s']:.2f}x")
    print("memory read bandwidth (median; range over the decode repetitions): " + ", ".join(
        f"{th} thread(s) {bw[th]:.1f} GB/s ({min(bw_runs[th]):.1f}-{max(bw_runs[th]):.1f})" for th in threads))
    print("builds: " + ", ".join(f"{k} {builds[k]['seconds']:.1f} s (code {builds[k]['code_bytes'] / 1024:.0f} KiB)"
                                 for k in kernels))
    out = {"date": datetime.date.today().isoformat(), "host": socket.gethostname(), "cpu": kb._cpu_name(),
           "shape": a.shape, "head": a.head, "reps": a.reps, "gguf": os.path.basename(gguf), "builds": builds,
           "membw_gbps": bw, "membw_gbps_per_decode_rep": bw_runs, "bytes_per_token": per_token, "results": results, "table": table,
           "load": os.getloadavg()}
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    suffix = "" if heads == ["auto"] else "-head-" + "-".join(heads)
    path = os.path.join(ROOT, "bench", "results", f"{out['date']}-{out['host']}-e2e{suffix}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
