"""ARM cost model: llvm-mca on the inner loops of our NEON kernels and of the peers' NEON
kernels for the same job (one token's ternary dot products), and from it a projection of
2B-4T decode speed on Raspberry Pi 4, Raspberry Pi 5 and an A55 phone core.

    python bench/arm_model.py [--out bench/results/arm-model-<date>.json]

A projection, not a measurement: nothing here runs on ARM.

1. Each kernel is compiled with clang for aarch64 (and armv7: -mfpu=neon) at -O3, for each
   core's -mcpu. Ours come from runtime_c/core/kernels/; the peers' are taken at run time from
   their public sources and never stored in this repository:
   - llama.cpp's TQ2_0 dot product (ggml_vec_dot_tq2_0_q8_K, ggml-cpu/arch/arm/quants.c) from
     the llama-cpp-python==0.3.36 sdist on PyPI (`pip download --no-binary :all:`), cached in
     ~/.cache/bitnet-aot/peers/sdist;
   - bitnet.cpp's I2_S dot product (ggml_vec_dot_i2_i8_s_1x1, src/ggml-bitnet-mad.cpp) from
     a clone of github.com/microsoft/BitNet (--bitnet-src DIR: a checkout or a bare clone, or
     $BITNET_CPP_SRC; skipped with a note when absent).
   Each function is extracted by name, compiled in a file of its own with the few type
   definitions it needs, and its asm parsed.
2. The hot loop is the innermost loop (as clang's assembly comments mark its blocks, wherever
   they were placed) with the most multiply instructions; weights per iteration are counted from those instructions (SDOT:
   16 products, SMLAL/SMLAL2/VMLAL.S8: 8). Per-row or per-block code outside that loop is
   not counted (a few percent for K = 2560).
3. llvm-mca-19 runs the loop body for 200 iterations with the core's scheduling model;
   cycles per iteration -> cycles per 256 weights and weight bytes per cycle.
   LLVM 19 has no Cortex-A76 model: `-mcpu=cortex-a76` (like cortex-a78, cortex-x1) falls
   back to the Cortex-A57 model, the same one cortex-a72 uses. The Pi 5 row uses the
   Neoverse-N1 model (N1 is the server derivative of A76); the fallback row is printed too.
4. Decode projection, one core and four: time per token = max(bytes read per token / DRAM
   bandwidth, ternary weights x cycles per weight / clock); the head is taken as memory
   bound. Bandwidths are the DRAM peaks (data rate x bus width) of the devices' published
   memory types: an upper bound; one core alone reaches less.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.expanduser("~/.cache/bitnet-aot/peers")
LLAMA_SDIST = "llama-cpp-python==0.3.36"

# (row label, llvm -mcpu, clang -mcpu for code generation, has the dot product)
CORES = [
    ("Pi 5: Cortex-A76 (Neoverse-N1 model)", "neoverse-n1", "cortex-a76", True),
    ("Cortex-A76 name (falls back to the A57 model)", "cortex-a76", "cortex-a76", True),
    ("Pi 4: Cortex-A72 (A57 model)", "cortex-a72", "cortex-a72", False),
    ("phone little core: Cortex-A55", "cortex-a55", "cortex-a55", True),
    ("current big core: Neoverse-V2 (Cortex-X3 class; code for neoverse-v1)", "neoverse-v2", "neoverse-v1", True),
]
ARMV7_CORES = [("Pi 4, 32-bit OS: Cortex-A72", "cortex-a72"), ("Pi 2/3-class: Cortex-A53", "cortex-a53")]

# Devices of the projection. Bandwidth: DRAM peak = MT/s x bus bytes, from the memory type
# each maker publishes.
DEVICES = [
    {"device": "Raspberry Pi 5", "core": "neoverse-n1", "ghz": 2.4, "cores": 4, "dot": True,
     "bw_gbs": 4267e6 * 4 / 1e9,
     "source": "Raspberry Pi 5 product brief (raspberrypi.com): quad Cortex-A76 2.4 GHz, LPDDR4X-4267; BCM2712 32-bit bus"},
    {"device": "Raspberry Pi 4", "core": "cortex-a72", "ghz": 1.8, "cores": 4, "dot": False,
     "bw_gbs": 3200e6 * 4 / 1e9,
     "source": "Raspberry Pi 4 product brief (raspberrypi.com): quad Cortex-A72 1.8 GHz, LPDDR4-3200; BCM2711 32-bit bus"},
    {"device": "Phone little cores (Google Tensor G1: 4x Cortex-A55 1.8 GHz)", "core": "cortex-a55", "ghz": 1.8,
     "cores": 4, "dot": True, "bw_gbs": 6400e6 * 8 / 1e9,
     "source": "Google Tensor G1 (Pixel 6): 4x Cortex-A55 at 1.8 GHz, LPDDR5-6400 on a 64-bit bus"},
]

# 2B-4T: ternary weights and head bytes per precision (the README's head table)
E, F, L, V, KV = 2560, 6912, 30, 128256, 640
TERNARY_WEIGHTS = L * (2 * E * E + 2 * KV * E + 3 * F * E)
TERNARY_BYTES = TERNARY_WEIGHTS // 4
HEAD_BYTES = {"f16": V * E * 2, "q8": V * E + 4 * V, "q6": V * E * 6 // 8 + V * (E // 32) * 2,
              "q4": V * E // 2 + V * (E // 32) * 2}

# Types the extracted peer functions need, written here (no peer header is copied).
LLAMA_PRELUDE = r'''
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#define assert(x) ((void)0)
#define QK_K 256
#define GGML_RESTRICT restrict
#define UNUSED(x) (void)(x)
typedef uint16_t ggml_half;
static inline float half_to_float(ggml_half h) { __fp16 f; __builtin_memcpy(&f, &h, 2); return (float)f; }
#define GGML_CPU_FP16_TO_FP32(x) half_to_float(x)
typedef struct { uint8_t qs[QK_K / 4]; ggml_half d; } block_tq2_0;
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;
void ggml_vec_dot_tq2_0_q8_K_generic(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy,
                                     size_t by, int nrc);
'''
BITNET_PRELUDE = r'''
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#define QK_I2_S 64
'''
ARMV7_SHIMS = r'''
#if !defined(__aarch64__)
static inline int32_t vaddvq_s32(int32x4_t v) { int32x2_t s = vadd_s32(vget_low_s32(v), vget_high_s32(v)); return vget_lane_s32(vpadd_s32(s, s), 0); }
static inline int32_t vaddlvq_s16(int16x8_t v) { return vaddvq_s32(vpaddlq_s16(v)); }
#define vmovl_high_s16(v) vmovl_s16(vget_high_s16(v))
#endif
'''

MUL = re.compile(r"^\s*(sdot|smlal2?|vmlal\.s8|smull2?|vmull\.s8)\b", re.I)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def tool(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    raise SystemExit(f"error: none of {', '.join(names)} found (apt-get install llvm-19 clang)")


def extract_function(text: str, name: str) -> str:
    """The full definition of C function `name` (from its return type to the closing brace)."""
    m = re.search(r"^[^\n;{}]*\b" + re.escape(name) + r"\s*\([^)]*\)\s*\{", text, re.M)
    if not m:
        raise SystemExit(f"error: {name} not found in the peer source")
    depth, i = 0, m.end() - 1
    while True:
        c = text[i]
        depth += c == "{"
        depth -= c == "}"
        i += 1
        if depth == 0:
            return text[m.start():i]


def llama_source() -> str:
    tar = sorted(glob.glob(os.path.join(PEERS, "sdist", "llama_cpp_python-0.3.36.tar.gz")))
    if not tar:
        os.makedirs(os.path.join(PEERS, "sdist"), exist_ok=True)
        log(f"downloading the {LLAMA_SDIST} sdist from PyPI ...")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        LLAMA_SDIST, "-d", os.path.join(PEERS, "sdist")], check=True)
        tar = sorted(glob.glob(os.path.join(PEERS, "sdist", "llama_cpp_python-0.3.36.tar.gz")))
    with tarfile.open(tar[0]) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("ggml-cpu/arch/arm/quants.c"))
        text = t.extractfile(member).read().decode()
    return LLAMA_PRELUDE + extract_function(text, "ggml_vec_dot_tq2_0_q8_K")


def bitnet_source(src_dir: str) -> str | None:
    """The I2_S kernel from a checkout (or a bare clone: read from its HEAD) of BitNet."""
    if not src_dir:
        return None
    path = os.path.join(src_dir, "src", "ggml-bitnet-mad.cpp")
    if os.path.isfile(path):
        text = open(path, encoding="utf-8", errors="replace").read()
    else:
        r = subprocess.run(["git", "--git-dir", src_dir, "show", "HEAD:src/ggml-bitnet-mad.cpp"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
        text = r.stdout
    return BITNET_PRELUDE + extract_function(text, "ggml_vec_dot_i2_i8_s_1x1")


def compile_asm(src: str, triple: str, cpu: str, extra: list, tmp: str, name: str) -> str:
    c = os.path.join(tmp, name + ".c")
    with open(c, "w") as f:
        f.write(src)
    s = os.path.join(tmp, name + ".s")
    cmd = [CLANG, f"--target={triple}", "-O3", "-S", "-ffreestanding", "-fno-asynchronous-unwind-tables",
           f"-mcpu={cpu}", "-I", os.path.join(ROOT, "runtime_c", "core", "kernels"), *extra, c, "-o", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "clang failed")
    return open(s).read()


def hot_loop(asm: str, func: str):
    """(instructions of the hot loop, weights per iteration) of function `func`: of the
    innermost loops clang marks in its assembly comments ("=>This Inner Loop Header" on the
    header block, "in Loop: Header=BB..." on the others), the one with the most multiply
    instructions. Its blocks are taken whole, wherever clang placed them (a rotated loop has
    blocks before its header), starting at the header."""
    m = re.search(r"^" + re.escape(func) + r":[^\n]*$(.*?)^\.Lfunc_end", asm, re.M | re.S)
    if not m:
        raise RuntimeError(f"{func} not in the asm")
    blocks, cur = [], None          # [name, loop header name, is an inner header, instructions]
    for raw in m.group(1).splitlines():
        code, _, comment = re.split(r"(//|@)", raw, maxsplit=1) if re.search(r"//|@", raw) else (raw, "", "")
        code = code.rstrip()
        label = re.match(r"^\.?L(\w+):$", code.strip()) or (re.match(r"^\s*%bb\.(\d+):", comment) and not code.strip()
                                                          and re.match(r"^\s*%bb\.(\d+):", comment))
        if label:
            name = "BB" + label.group(1).replace("BB", "", 1) if code.strip() else f"bb.{label.group(1)}"
            cur = [name, None, False, []]
            blocks.append(cur)
        if cur is not None and comment:
            if "Inner Loop Header" in comment:
                cur[1], cur[2] = cur[0], True
            elif "Loop Header" in comment and cur[1] is None:
                cur[1] = cur[0]
            hm = re.search(r"in Loop: Header=(BB\w+)", comment)
            if hm and cur[1] is None:
                cur[1] = hm.group(1)
        if cur is not None and code.strip() and not label and not code.strip().startswith("."):
            cur[3].append(code)
    best, best_w = None, 0
    for i, h in enumerate(blocks):
        if not h[2]:
            continue
        order = blocks[i:] + blocks[:i]
        body = [ln for b in order if b[1] == h[0] for ln in b[3]]
        w = 0
        for ln in body:
            mm = MUL.match(ln)
            if mm:
                w += 16 if mm.group(1).lower() == "sdot" else 8
        if w > best_w:
            best, best_w = body, w
    if not best:
        raise RuntimeError(f"no multiply loop in {func}")
    return best, best_w


def mca_cycles(body: list, triple: str, cpu: str, attrs: str) -> float:
    n = 200
    cmd = [MCA, f"-mtriple={triple}", f"-mcpu={cpu}", f"-iterations={n}"] + ([f"-mattr={attrs}"] if attrs else [])
    r = subprocess.run(cmd, input="\n".join(body) + "\n", capture_output=True, text=True)
    m = re.search(r"Total Cycles:\s+(\d+)", r.stdout)
    if not m:
        raise RuntimeError("llvm-mca: " + (r.stderr.strip().splitlines() or ["no output"])[-1])
    return int(m.group(1)) / n


def kernels_aarch64(bitnet_src):
    kdir = os.path.join(ROOT, "runtime_c", "core", "kernels")
    ours = open(os.path.join(kdir, "i2s_neon.c")).read()
    ours_dot = open(os.path.join(kdir, "i2s_neon_dotprod.c")).read()
    out = [
        ("bitnet-aot i2s_neon_dotprod (4 rows)", ours_dot, [], "i2s_gemv_neon_dotprod", 64, True),
        ("bitnet-aot i2s_neon (4 rows, no SDOT)", ours, [], "i2s_gemv_neon", 64, False),
        ("llama.cpp TQ2_0 (SDOT)", llama_source(), [], "ggml_vec_dot_tq2_0_q8_K", 66, True),
        ("llama.cpp TQ2_0 (no SDOT)", llama_source(), [], "ggml_vec_dot_tq2_0_q8_K", 66, False),
    ]
    if bitnet_src:
        out += [("bitnet.cpp I2_S (SDOT)", bitnet_src, [], "ggml_vec_dot_i2_i8_s_1x1", 64, True),
                ("bitnet.cpp I2_S (no SDOT)", bitnet_src, [], "ggml_vec_dot_i2_i8_s_1x1", 64, False)]
    return out


def main(argv=None) -> int:
    global CLANG, MCA
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bitnet-src", default=os.environ.get("BITNET_CPP_SRC", ""),
                    help="a checkout of github.com/microsoft/BitNet (for its I2_S kernel)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                  f"arm-model-{datetime.date.today().isoformat()}.json"))
    a = ap.parse_args(argv)
    CLANG = tool("clang-19", "clang")
    MCA = tool("llvm-mca-19")
    bitnet_src = bitnet_source(a.bitnet_src)
    if not bitnet_src:
        log("note: no bitnet.cpp checkout (--bitnet-src / $BITNET_CPP_SRC): its I2_S rows are skipped")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bn-arm-model-") as tmp:
        for ki, (kname, src, defs, func, bytes256, dot) in enumerate(kernels_aarch64(bitnet_src)):
            for label, mca_cpu, cc_cpu, core_dot in CORES:
                if dot and not core_dot:
                    continue
                cpu = cc_cpu + ("+dotprod" if dot and cc_cpu in ("cortex-a72",) else "")
                if not dot:
                    cpu += "+nodotprod"
                try:
                    asm = compile_asm(src, "aarch64-linux-gnu", cpu, defs, tmp, f"k{ki}")
                    body, w = hot_loop(asm, func)
                    cyc = mca_cycles(body, "aarch64", mca_cpu, "+dotprod" if dot else "")
                except RuntimeError as e:
                    log(f"{kname} on {label}: {e}")
                    continue
                c256 = cyc * 256 / w
                rows.append({"isa": "aarch64", "kernel": kname, "core": label, "llvm_model_cpu": mca_cpu,
                             "weights_per_iter": w, "cycles_per_iter": cyc, "cycles_per_256": c256,
                             "bytes_per_cycle": bytes256 / c256, "loop_instructions": len(body)})
        neon = open(os.path.join(ROOT, "runtime_c", "core", "kernels", "i2s_neon.c")).read()
        v7 = [("bitnet-aot i2s_neon (armv7 NEON)", neon, "i2s_gemv_neon", 64),
              ("llama.cpp TQ2_0 (no SDOT)", llama_source().replace("#define QK_K", ARMV7_SHIMS + "#define QK_K", 1),
               "ggml_vec_dot_tq2_0_q8_K", 66)]
        if bitnet_src:
            v7.append(("bitnet.cpp I2_S (no SDOT)", bitnet_src.replace("#define QK_I2_S", ARMV7_SHIMS + "#define QK_I2_S"),
                       "ggml_vec_dot_i2_i8_s_1x1", 64))
        for ki, (kname, src, func, bytes256) in enumerate(v7):
            for label, cpu in ARMV7_CORES:
                try:
                    asm = compile_asm(src, "armv7a-linux-gnueabihf", cpu, ["-mfpu=neon", "-mfloat-abi=hard"], tmp, f"v{ki}")
                    body, w = hot_loop(asm, func)
                    cyc = mca_cycles(body, "armv7a", cpu, "")
                except RuntimeError as e:
                    log(f"armv7 {kname} on {label}: {e}")
                    continue
                c256 = cyc * 256 / w
                rows.append({"isa": "armv7", "kernel": kname, "core": label, "llvm_model_cpu": cpu,
                             "weights_per_iter": w, "cycles_per_iter": cyc, "cycles_per_256": c256,
                             "bytes_per_cycle": bytes256 / c256, "loop_instructions": len(body)})

    print("cycles per 256 weights of one token's dot products (llvm-mca-19, inner loop), weight bytes per cycle")
    print("| ISA | kernel | core (LLVM model) | cycles / 256 w | bytes / cycle |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['isa']} | {r['kernel']} | {r['core']} (`{r['llvm_model_cpu']}`) | {r['cycles_per_256']:.1f} | "
              f"{r['bytes_per_cycle']:.2f} |")

    # our best kernel against the best peer kernel on each core (same SDOT availability)
    print()
    print("| core (LLVM model) | SDOT | ours cycles / 256 w | best peer | ours / peer |")
    print("|---|---|---|---|---|")
    compare = []
    for _, mca_cpu, _, _ in CORES:
        for dot in (True, False):
            sel = [r for r in rows if r["isa"] == "aarch64" and r["llvm_model_cpu"] == mca_cpu
                   and (("no SDOT" not in r["kernel"]) == dot)]
            ours = [r for r in sel if r["kernel"].startswith("bitnet-aot")]
            peers = [r for r in sel if not r["kernel"].startswith("bitnet-aot")]
            if ours and peers:
                o = min(ours, key=lambda r: r["cycles_per_256"])
                p = min(peers, key=lambda r: r["cycles_per_256"])
                compare.append({"llvm_model_cpu": mca_cpu, "sdot": dot, "ours": o["cycles_per_256"],
                                "best_peer": p["kernel"], "peer": p["cycles_per_256"],
                                "ratio": o["cycles_per_256"] / p["cycles_per_256"]})
                print(f"| `{mca_cpu}` | {'yes' if dot else 'no'} | {o['cycles_per_256']:.1f} | {p['kernel']} "
                      f"{p['cycles_per_256']:.1f} | {o['cycles_per_256'] / p['cycles_per_256']:.2f} |")
    for label, cpu in ARMV7_CORES:   # 32-bit ARM: no SDOT
        sel = [r for r in rows if r["isa"] == "armv7" and r["llvm_model_cpu"] == cpu]
        ours = [r for r in sel if r["kernel"].startswith("bitnet-aot")]
        peers = [r for r in sel if not r["kernel"].startswith("bitnet-aot")]
        if ours and peers:
            o, p = ours[0], min(peers, key=lambda r: r["cycles_per_256"])
            compare.append({"isa": "armv7", "llvm_model_cpu": cpu, "sdot": False, "ours": o["cycles_per_256"],
                            "best_peer": p["kernel"], "peer": p["cycles_per_256"],
                            "ratio": o["cycles_per_256"] / p["cycles_per_256"]})
            print(f"| armv7 `{cpu}` | no | {o['cycles_per_256']:.1f} | {p['kernel']} {p['cycles_per_256']:.1f} | "
                  f"{o['cycles_per_256'] / p['cycles_per_256']:.2f} |")

    proj = []
    for d in DEVICES:
        def best(prefix):
            cands = [r for r in rows if r["isa"] == "aarch64" and r["llvm_model_cpu"] == d["core"]
                     and r["kernel"].startswith(prefix) and (("no SDOT" not in r["kernel"]) == d["dot"])]
            return min(cands, key=lambda r: r["cycles_per_256"]) if cands else None
        ours = best("bitnet-aot")
        if not ours:
            continue
        for head, hb in HEAD_BYTES.items():
            total = TERNARY_BYTES + hb
            t_mem = total / (d["bw_gbs"] * 1e9)
            roof = 1 / t_mem
            entry = {"device": d["device"], "head": head, "kernel": ours["kernel"], "bw_gbs": d["bw_gbs"],
                     "bytes_per_token": total, "roofline_tok_s": roof, "source": d["source"]}
            for ncores in (1, d["cores"]):
                t_cpu = TERNARY_WEIGHTS / 256 * ours["cycles_per_256"] / (d["ghz"] * 1e9) / ncores
                tok = 1 / max(t_mem, t_cpu)
                entry[f"tok_s_{ncores}core"] = tok
                entry[f"roofline_frac_{ncores}core"] = tok / roof
            proj.append(entry)
    print()
    print("PROJECTION (not measured) of 2B-4T decode: max(bytes / DRAM peak, ternary compute / clock), head memory-bound")
    print("| device | head | bytes/token | DRAM peak GB/s | roofline tok/s | 1 core tok/s | 4 cores tok/s |")
    print("|---|---|---|---|---|---|---|")
    for p in proj:
        print(f"| {p['device']} | {p['head']} | {p['bytes_per_token'] / 1e6:.0f} MB | {p['bw_gbs']:.1f} | "
              f"{p['roofline_tok_s']:.1f} | {p['tok_s_1core']:.1f} ({p['roofline_frac_1core']:.0%}) | "
              f"{p['tok_s_4core']:.1f} ({p['roofline_frac_4core']:.0%}) |")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "clang": subprocess.run([CLANG, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
                   "llvm_mca": MCA, "ternary_weights_2b4t": TERNARY_WEIGHTS, "kernels": rows, "ours_vs_peers": compare,
                   "projection": proj,
                   "devices": DEVICES}, f, indent=1)
    print(f"wrote {a.out}")
    return 0


CLANG = MCA = ""

if __name__ == "__main__":
    sys.exit(main())
