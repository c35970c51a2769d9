"""Kernel benchmark: GEMV (decode) and GEMM (prompt, N=128) time per kernel for the
BitNet-b1.58-2B-4T shapes on this machine, with the effective GB/s of weight traffic, next
to the measured memory read bandwidth (1 and 2 threads).

    python bench/kernels.py [--threads 1,2] [--seconds 1.0] [--kernels i2s_avx2,tl2_avx2,i2sg_avx2:64]

GEMV cycles through enough packed copies of each matrix (>= 256 MiB in total) that the
weights come from DRAM, as in decoding a whole model; GEMM (N=128) reuses one copy, as a
prompt batch does. Prints a table and writes bench/results/kernels-<date>.json.

Columns: wall-clock time per call and what it means in weight GB/s (GEMV) or GOPS
(2*M*K*N / time, GEMM); "%bw" is GEMV GB/s over the measured read bandwidth for the same
thread count; cpuGB/s and cpuGOPS divide the whole call's work by thread 0's CPU time
instead of wall time: the rate the threads would reach if no other job preempted them,
which stays meaningful on a shared machine (wall numbers then drop, CPU ones don't).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bitnet_aot.kernels import build_kernel_program  # noqa: E402

SHAPES = [  # (name, M, K)
    ("attn_qo 2560x2560", 2560, 2560),
    ("attn_kv 640x2560", 640, 2560),
    ("ffn_up 6912x2560", 6912, 2560),
    ("ffn_down 2560x6912", 2560, 6912),
]
# "name:G": a block-scaled (i2sg) kernel with G weights per fp16 scale (Q2_0: 64, PrismML: 128)
DEFAULT_KERNELS = ["i2s_avx512vnni", "i2s_avxvnni", "i2s_avx2", "tl2_avx2", "i2s_generic", "i2s_scalar",
                   "i2sg_avx2:64", "i2sg_avx2:128"]
COPY_BYTES = 256 << 20


def build(workdir: str) -> str:
    exe = os.path.join(workdir, "kernel_bench")
    build_kernel_program("x86_64-linux-musl", [os.path.join(ROOT, "bench", "kernel_bench.c")], exe,
                         repo_root=ROOT, cflags=("-O2",), workdir=workdir)
    return exe


def run(exe: str, args: list) -> dict:
    out = subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    f = out.split()
    return {f[i]: float(f[i + 1]) for i in range(0, len(f) - 1, 2)}


def membw(exe: str, threads: int, seconds: float) -> float:
    """Best read rate over a 1 GiB buffer: plain loads, and loads with a software prefetch
    4 KiB / 16 KiB ahead (what the GEMV kernels do), whichever is fastest."""
    best = 0.0
    for pf in (0, 4096, 16384):
        r = run(exe, ["membw", threads, 1024, seconds, pf])
        best = max(best, r["bytes"] / r["seconds"] / 1e9)
    return best


def kernel_time(exe: str, kernel: str, M: int, K: int, N: int, threads: int, seconds: float) -> dict:
    KP = (K + 127) // 128 * 128
    wb = M * KP // 4 + (M * (-(-KP // int(kernel.split(":")[1]))) * 2 if ":" in kernel else 0)
    copies = max(1, COPY_BYTES // wb) if N == 1 else 1
    r = run(exe, ["kernel", kernel, M, KP, N, threads, copies, seconds])
    t = r["seconds"] / r["calls"]
    tc = r["cpu_seconds"] / r["calls"]  # thread 0's CPU time: excludes preemption by other jobs
    return {"us": t * 1e6, "gbps": r["bytes_per_call"] / t / 1e9,
            "gops": 2.0 * M * K * N / t / 1e9, "bytes": int(r["bytes_per_call"]),
            "cpu_us": tc * 1e6, "cpu_gbps": r["bytes_per_call"] / tc / 1e9,
            "cpu_gops": 2.0 * M * K * N / tc / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--kernels", default=",".join(DEFAULT_KERNELS))
    ap.add_argument("--gemm-n", type=int, default=128)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    kernels = a.kernels.split(",")
    with tempfile.TemporaryDirectory(prefix="kbench-") as wd:
        exe = build(wd)
        result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "host": platform.node(), "cpu": _cpu_name(), "membw_gbps": {}, "rows": []}
        for th in threads:
            result["membw_gbps"][th] = membw(exe, th, a.seconds)
            print(f"memory read bandwidth, {th} thread(s): {result['membw_gbps'][th]:.1f} GB/s", flush=True)
        hdr = (f"{'shape':22} {'kernel':14} {'thr':>3} | {'GEMV us':>8} {'GB/s':>5} {'%bw':>4} {'cpuGB/s':>7} | "
               f"{'GEMM N=' + str(a.gemm_n) + ' us':>14} {'GOPS':>6} {'cpuGOPS':>7}")
        print(hdr)
        print("-" * len(hdr))
        have = set(subprocess.run([exe, "list"], capture_output=True, text=True).stdout.split())
        for name, M, K in SHAPES:
            for k in kernels:
                if k.split(":")[0] not in have:
                    continue
                for th in threads:
                    if k.endswith(("scalar", "generic")) and th > 1:
                        continue
                    gv = kernel_time(exe, k, M, K, 1, th, a.seconds)
                    gm = kernel_time(exe, k, M, K, a.gemm_n, th, a.seconds)
                    frac = gv["gbps"] / result["membw_gbps"][th]
                    print(f"{name:22} {k:14} {th:3} | {gv['us']:8.1f} {gv['gbps']:5.1f} {100 * frac:4.0f} "
                          f"{gv['cpu_gbps']:7.1f} | {gm['us']:14.1f} {gm['gops']:6.1f} {gm['cpu_gops']:7.1f}",
                          flush=True)
                    result["rows"].append({"shape": name, "M": M, "K": K, "kernel": k, "threads": th,
                                           "gemv": gv, "gemm": gm, "gemm_n": a.gemm_n,
                                           "gemv_fraction_of_membw": frac})
    out = a.out or os.path.join(ROOT, "bench", "results", f"kernels-{datetime.date.today().isoformat()}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
