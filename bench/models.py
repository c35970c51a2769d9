"""Every published model shape at full size: build time, binary size, resident memory and
speed on this machine, and the fit that projects them to a 100B-class model.

    python bench/models.py [--shapes a,b,...] [--prompt 512] [--gen 64] [--reps 3]
                           [--threads 1] [--cpus 0] [--workdir DIR] [--keep] [--out FILE]

For each shape of compiler/configs.py (`bitnet-aot make-test-model --shape NAME`: random
weights, exact widths, layers and vocabulary, in the tensor type the model is published in:
I2_S for BitNet-b1.58-2B-4T, Q2_0 with 128-weight groups and a scale per group for Ternary
Bonsai, TQ2_0 otherwise, I2_S where rows are not multiples of 256), it

  1. writes the GGUF (not timed as part of the build),
  2. runs `bitnet-aot build` and records its wall time and the builder's peak RSS,
  3. runs the binary --reps times: a --prompt-token prompt (random ids, `--ids`), then --gen
     greedy tokens with --ignore-eos, at --threads threads, recording the binary's own
     prompt and generation tok/s and the process's peak RSS (wait4's ru_maxrss: weights
     embedded in the binary count once their pages are touched, which decoding does for all
     of them),
  4. deletes the GGUF and the binary unless --keep (a 10B shape is ~4 GB of each).

Runs are pinned to --cpus with sched_setaffinity (default: all CPUs). The memory read
bandwidth of the same CPUs is probed first (2 GiB buffer, bench/kernel_bench.c), so the
decode rate can be read as a fraction of it. Then a least-squares fit over the shapes of
decode seconds per token against the bytes a token reads (packed ternary weights, their
scales, the output head and the KV cache at the prompt's length) gives the effective
bandwidth and the per-token overhead, and build time and peak RSS are fitted against the
binary's size; `--project` applies the fits to a 100B-class shape (README "Accepted
models" explains the method). Prints a table and writes
bench/results/models-<date>-<host>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import kernels as kb  # noqa: E402  (bench/kernels.py: the membw probe, the CPU's name)
from bitnet_aot import configs  # noqa: E402

TIMING = re.compile(r"prompt (\d+) tokens in ([0-9.]+) s \(([0-9.]+) tok/s\), "
                    r"generation (\d+) tokens in ([0-9.]+) s \(([0-9.]+) tok/s\)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def published_type(name: str, row: dict) -> list:
    """make-test-model arguments for the tensor type the model is published in."""
    if name.startswith("ternary-bonsai"):
        return ["--type", "q2_0_g128", "--block-scales"]
    if name == "bitnet-b1.58-2b-4t":
        return ["--type", "i2_s"]
    return []   # the factory's default: tq2_0, or i2_s for rows not multiples of 256


def bytes_per_token(row: dict, ctx: int) -> dict:
    """What one decoded token reads: every ternary weight at 2 bits (i2s / q2_0 codes),
    Bonsai's fp16 scale per 128 weights, the f16 head, and K and V (f16) of `ctx` positions."""
    E, F, L = row["n_embd"], row["n_ff"], row["n_layer"]
    D, H, Hk = row["head_dim"], row["n_head"], row["n_head_kv"]
    per_layer = E * H * D * 2 + E * Hk * D * 2 + 3 * E * F   # q,o ; k,v ; gate, up, down
    ternary = L * per_layer
    w = ternary // 4
    if row["arch"] == "qwen3":
        w += ternary // 128 * 2
    head = row["n_vocab"] * E * 2
    kv = L * 2 * Hk * D * 2 * ctx
    return {"ternary_params": ternary, "weights": w, "head": head, "kv": kv, "total": w + head + kv}


def run_measured(cmd: list, cpus, timeout: float = 3600) -> tuple:
    """Run cmd; return (wall seconds, peak RSS bytes, stdout+stderr text)."""
    def pin():
        if cpus:
            os.sched_setaffinity(0, cpus)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=pin)
    out = []
    # read while it runs so a full pipe never blocks it
    for chunk in iter(lambda: p.stdout.read(65536), b""):
        out.append(chunk)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    text = b"".join(out).decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"error: {' '.join(cmd[:3])} ... exited with {code}:\n{text[-2000:]}")
    return wall, ru.ru_maxrss * 1024, text


def membw(cpus, seconds: float = 1.0) -> float:
    with tempfile.TemporaryDirectory() as d:
        exe = kb.build(d)
        n = len(cpus) if cpus else os.cpu_count()
        best = 0.0
        for pf in (0, 4096, 16384):
            _, _, text = run_measured([exe, "membw", str(n), "2048", str(seconds), str(pf)], cpus)
            f = text.split()
            r = {f[i]: float(f[i + 1]) for i in range(0, len(f) - 1, 2)}
            best = max(best, r["bytes"] / r["seconds"] / 1e9)
        return best


def measure(name: str, a, workdir: str, cpus) -> dict:
    row = configs.get(name)
    gguf = os.path.join(workdir, name + ".gguf")
    exe = os.path.join(workdir, name)
    targs = published_type(name, row)
    log(f"[{name}] writing the GGUF ({' '.join(targs) or 'default type'}) ...")
    t_make, _, _ = run_measured([sys.executable, "-m", "bitnet_aot.cli", "make-test-model", gguf,
                                 "--shape", name] + targs, cpus)
    gguf_size = os.path.getsize(gguf)
    log(f"[{name}] building ({gguf_size / 2**30:.2f} GiB GGUF) ...")
    t_build, rss_build, build_log = run_measured(
        [sys.executable, "-m", "bitnet_aot.cli", "build", gguf, "-o", exe], cpus)
    bin_size = os.path.getsize(exe)
    if not a.keep:
        os.unlink(gguf)
    import random
    rng = random.Random(0)
    hi = min(row["n_vocab"], 100000)
    ids = ",".join(str(rng.randrange(100, hi)) for _ in range(a.prompt))
    runs = []
    for r in range(a.reps):
        log(f"[{name}] run {r + 1}/{a.reps}: {a.prompt}-token prompt, {a.gen} tokens, -t {a.threads} ...")
        wall, rss, text = run_measured([exe, "--ids", ids, "-n", str(a.gen), "--temp", "0", "--ignore-eos",
                                        "-t", str(a.threads), "-c", str(a.prompt + a.gen + 16),
                                        "--print-ids"], cpus)
        m = TIMING.search(text)
        if not m:
            raise SystemExit(f"error: no timings line from {exe}:\n{text[-1000:]}")
        runs.append({"wall_s": wall, "rss_bytes": rss, "prompt_tps": float(m.group(3)),
                     "gen_tps": float(m.group(6)), "kernel": re.search(r"kernel ([^,]+),", text).group(1)})
    if not a.keep:
        os.unlink(exe)
    bpt = bytes_per_token(row, a.prompt + a.gen // 2)
    res = {
        "shape": name, "arch": row["arch"], "type": " ".join(targs) or "default", "n_layer": row["n_layer"],
        "ternary_params": bpt["ternary_params"], "bytes_per_token": bpt,
        "make_s": t_make, "gguf_bytes": gguf_size, "build_s": t_build, "build_rss_bytes": rss_build,
        "binary_bytes": bin_size, "runs": runs,
        "prompt_tps": statistics.median(x["prompt_tps"] for x in runs),
        "gen_tps": statistics.median(x["gen_tps"] for x in runs),
        "rss_bytes": statistics.median(x["rss_bytes"] for x in runs),
        "kernel": runs[0]["kernel"], "revision": _revision(),
    }
    log(f"[{name}] build {t_build:.0f} s, binary {bin_size / 2**30:.2f} GiB, RSS {res['rss_bytes'] / 2**30:.2f} GiB, "
        f"prompt {res['prompt_tps']:.1f} tok/s, decode {res['gen_tps']:.2f} tok/s")
    return res


def lstsq(xs, ys):
    """y = a + b x by least squares; returns (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def fits(rows: list) -> dict:
    if len(rows) < 2:
        return {}
    # decode: seconds per token = overhead + bytes / bandwidth, over the one-scale (i2s / tl)
    # models: the projection is of one, and block-scaled ones (kernel "a + b") run slower
    plain = [r for r in rows if "+" not in r.get("kernel", "")] or rows
    a, b = lstsq([r["bytes_per_token"]["total"] for r in plain], [1.0 / r["gen_tps"] for r in plain])
    a_p, b_p = lstsq([r["ternary_params"] for r in plain], [1.0 / r["prompt_tps"] for r in plain])
    a_b, b_b = lstsq([r["binary_bytes"] for r in rows], [r["build_s"] for r in rows])
    # the builder's memory changed with the code (2-bit resident codes, 2026-12-03): rows
    # measured before then carry no revision; fit it on the rows that do, when two or more
    newer = [r for r in rows if r.get("revision")]
    brows = newer if len(newer) >= 2 else rows
    a_m, b_m = lstsq([r["binary_bytes"] for r in brows], [r["build_rss_bytes"] for r in brows])
    a_r, b_r = lstsq([r["bytes_per_token"]["total"] for r in rows], [r["rss_bytes"] for r in rows])
    return {"decode_s_per_token": {"overhead_s": a, "s_per_byte": b, "effective_gbps": 1e-9 / b if b > 0 else None},
            "prompt_s_per_token": {"overhead_s": a_p, "s_per_param": b_p},
            "build_s": {"fixed_s": a_b, "s_per_binary_byte": b_b},
            "build_rss": {"fixed_bytes": a_m, "per_binary_byte": b_m},
            "run_rss": {"fixed_bytes": a_r, "per_token_byte": b_r}}


# A 100B-class ternary shape for the projection: LLaMA-style, 80 layers, E = 10240,
# F = 32768, 80 q / 8 kv heads of 128, vocabulary 128256 (a Llama-3-70B-like grid widened
# to 99 B ternary parameters); only its byte counts matter to the fits.
PROJECTED = dict(arch="llama", n_embd=10240, n_layer=80, n_ff=32768, n_head=80, n_head_kv=8, head_dim=128,
                 n_vocab=128256)


def project(f: dict, ctx: int, bandwidths: dict) -> dict:
    bpt = bytes_per_token(PROJECTED, ctx)
    binary = bpt["weights"] + 2 * bpt["head"]   # untied: embedding + head, f16
    out = {"shape": PROJECTED, "bytes_per_token": bpt, "binary_bytes": binary,
           "build_s": f["build_s"]["fixed_s"] + f["build_s"]["s_per_binary_byte"] * binary,
           "build_rss_bytes": f["build_rss"]["fixed_bytes"] + f["build_rss"]["per_binary_byte"] * binary,
           "run_rss_bytes": f["run_rss"]["fixed_bytes"] + f["run_rss"]["per_token_byte"] * bpt["total"],
           "decode_tps": {}}
    try:
        ram = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        ram = None
    out["ram_bytes_here"] = ram
    out["fits_in_ram_here"] = ram is not None and out["run_rss_bytes"] < ram
    eff = f["decode_s_per_token"]
    out["decode_tps"]["this machine (fit)"] = 1.0 / (eff["overhead_s"] + eff["s_per_byte"] * bpt["total"])
    measured_bw = bandwidths.get("measured_gbps")
    frac = (eff["effective_gbps"] / measured_bw) if measured_bw and eff.get("effective_gbps") else None
    out["fraction_of_bandwidth"] = frac
    for label, gbps in bandwidths.items():
        if label == "measured_gbps" or frac is None:
            continue
        out["decode_tps"][label] = gbps * frac * 1e9 / bpt["total"]
    return out


def bandwidths(measured: float) -> dict:
    """Read bandwidths the projection is scaled to: this machine's, and typical servers' and
    Apple's M2 Ultra's peaks (README "Accepted models" cites them)."""
    return {"measured_gbps": measured, "this machine": measured,
            "Apple M2 Ultra (800 GB/s unified memory)": 800.0,
            "12-channel DDR5-4800 server (460.8 GB/s peak)": 460.8,
            "8-channel DDR4-3200 server (204.8 GB/s peak)": 204.8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=",".join(configs.shape_names()))
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    ap.add_argument("--gen", type=int, default=64, help="generated tokens (default 64)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default=None, help="comma-separated CPUs to pin every step to (default: all)")
    ap.add_argument("--workdir", default=None, help="where GGUFs and binaries go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the GGUFs and binaries")
    ap.add_argument("--out", default=None)
    ap.add_argument("--refit", default=None, metavar="JSON",
                    help="only recompute the fits and the projection of an earlier run's JSON")
    ap.add_argument("--update", default=None, metavar="JSON",
                    help="replace these shapes' rows in an earlier run's JSON (same machine and options: "
                         "checked) and refit, instead of starting a new file")
    a = ap.parse_args()
    for f in (a.refit, a.update):
        if f and not os.path.isfile(f):
            raise SystemExit(f"error: {f}: no such file (give the JSON an earlier run of bench/models.py wrote)")
    if a.refit:
        with open(a.refit) as fh:
            result = json.load(fh)
        result["fits"] = fits(result["rows"])
        result["projection"] = project(result["fits"], result["prompt_tokens"] + result["gen_tokens"] // 2,
                                       bandwidths(result["membw_gbps"]))
        with open(a.refit, "w") as fh:
            json.dump(result, fh, indent=1)
        print(json.dumps(result["projection"]["decode_tps"], indent=1))
        return
    cpus = {int(c) for c in a.cpus.split(",")} if a.cpus else None
    names = [n.strip() for n in a.shapes.split(",") if n.strip()]
    for n in names:
        try:
            configs.get(n)
        except KeyError as e:
            raise SystemExit(f"error: {e.args[0]}")
    workdir = a.workdir or tempfile.mkdtemp(prefix="bitnet-aot-models-")
    os.makedirs(workdir, exist_ok=True)
    log(f"probing memory read bandwidth on CPUs {sorted(cpus) if cpus else 'all'} (2 GiB buffer) ...")
    bw = membw(cpus)
    log(f"read bandwidth: {bw:.1f} GB/s")
    result = {"date": datetime.date.today().isoformat(), "host": platform.node(), "cpu": kb._cpu_name(),
              "cpus": sorted(cpus) if cpus else None, "threads": a.threads, "prompt_tokens": a.prompt,
              "gen_tokens": a.gen, "reps": a.reps, "membw_gbps": bw, "rows": []}
    out = a.out or os.path.join(ROOT, "bench", "results",
                                f"models-{result['date']}-{platform.node() or 'host'}.json")
    kept = []
    if a.update:
        with open(a.update) as fh:
            old = json.load(fh)
        for k in ("cpu", "cpus", "threads", "prompt_tokens", "gen_tokens", "reps"):
            if old.get(k) != result[k]:
                raise SystemExit(f"error: {a.update} was run with {k} = {old.get(k)!r}, this run has "
                                 f"{result[k]!r}; give the same options")
        kept = [r for r in old["rows"] if r["shape"] not in names]
        result["updated"] = old.get("updated", []) + [{"date": result["date"], "shapes": names,
                                                       "membw_gbps": bw}]
        result["membw_gbps"] = old["membw_gbps"]
        out = a.update
    result["rows"] = list(kept)
    for n in names:
        result["rows"].append(measure(n, a, workdir, cpus))
        result["fits"] = fits(result["rows"])
        with open(out, "w") as fh:     # after every shape: a long run keeps what it measured
            json.dump(result, fh, indent=1)
    if not a.workdir and not a.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    result["rows"].sort(key=lambda r: r["ternary_params"])
    if result.get("fits"):
        # typical servers' read bandwidth, for scale (see README "Accepted models")
        bw = result["membw_gbps"]
        result["projection"] = project(result["fits"], a.prompt + a.gen // 2, bandwidths(bw))
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"\n{result['cpu']}, CPUs {result['cpus'] or 'all'}, -t {a.threads}, read bandwidth {bw:.1f} GB/s; "
          f"prompt {a.prompt} tokens, {a.gen} generated, median of {a.reps}")
    print(f"{'shape':34} {'params':>7} {'binary':>8} {'build':>7} {'bld RSS':>8} {'run RSS':>8} "
          f"{'prompt':>8} {'decode':>8} {'%bw':>5}")
    for r in result["rows"]:
        frac = r["bytes_per_token"]["total"] * r["gen_tps"] / 1e9 / bw
        print(f"{r['shape']:34} {r['ternary_params'] / 1e9:6.2f}B {r['binary_bytes'] / 2**30:6.2f}Gi "
              f"{r['build_s']:6.0f}s {r['build_rss_bytes'] / 2**30:6.2f}Gi {r['rss_bytes'] / 2**30:6.2f}Gi "
              f"{r['prompt_tps']:8.1f} {r['gen_tps']:8.2f} {100 * frac:4.0f}%")
    p = result.get("projection")
    if p:
        print(f"\nprojection, {p['bytes_per_token']['ternary_params'] / 1e9:.0f}B ternary parameters: binary "
              f"{p['binary_bytes'] / 2**30:.1f} GiB, build {p['build_s'] / 60:.0f} min, builder RSS "
              f"{p['build_rss_bytes'] / 2**30:.0f} GiB, run RSS {p['run_rss_bytes'] / 2**30:.1f} GiB"
              + ("" if p["fits_in_ram_here"] else f" (more than this machine's {(p['ram_bytes_here'] or 0) / 2**30:.0f} GiB)"))
        for k, v in p["decode_tps"].items():
            print(f"  decode, {k}: {v:.2f} tok/s")
    print(f"wrote {out}")


def _revision() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


if __name__ == "__main__":
    main()
