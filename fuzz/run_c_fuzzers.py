#!/usr/bin/env python3
"""Build and run the libFuzzer harnesses of the C runtime (tokenizer, chat, HTTP, JSON).

    python3 fuzz/run_c_fuzzers.py [--time 30] [--only NAME ...] [--replay] [--build-dir DIR]

Each harness is compiled with `clang -g -O1 -fsanitize=fuzzer,address,undefined` (UBSan
reports are fatal) against the runtime_c sources it covers. The tokenizer harness is built
twice, for a factory SPM vocabulary and a factory BPE one: their packed blobs
(bitnet_aot.tokenizer_pack.pack_tokenizer) and the Unicode tables (unicode_tables_c()) are
generated into the build directory as C files.

Each harness then runs for --time seconds (-max_total_time) on a corpus in fuzz/corpus/NAME/
(seeded here with a few hand-written inputs); a crash input is saved in
fuzz/crashers/NAME/ and makes this script exit 1. With --replay the harnesses only run the
saved crashers (a regression check, no fuzzing). Prints one summary line per harness:
"NAME: N runs in S s, ok|CRASH".
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNTIME = os.path.join(ROOT, "runtime_c")
CFLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
          "-fno-omit-frame-pointer", "-std=c11", "-D_GNU_SOURCE", "-I", RUNTIME]

# name -> (harness source, runtime sources, max_len)
HARNESSES = {
    "tokenizer_spm": ("fuzz_tokenizer.c", ["text/tokenizer.c"], 4096),
    "tokenizer_bpe": ("fuzz_tokenizer.c", ["text/tokenizer.c"], 4096),
    "chat": ("fuzz_chat.c", ["text/chat.c"], 4096),
    "http": ("fuzz_http.c", ["app/http.c"], 32768),
    "json": ("fuzz_json.c", ["app/json.c"], 8192),
}


def find_clang():
    for cc in ("clang", "clang-16", "clang-15", "clang-14"):
        p = shutil.which(cc)
        if p:
            return p
    return None


def clang_has_libfuzzer(clang: str) -> bool:
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write("#include <stddef.h>\n#include <stdint.h>\n"
                    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
        r = subprocess.run([clang, "-fsanitize=fuzzer,address,undefined", src, "-o", os.path.join(d, "t")],
                           capture_output=True)
        return r.returncode == 0


# ---------------------------------------------------------------------------------------
# Generated inputs: tokenizer blobs, Unicode tables, seeds
# ---------------------------------------------------------------------------------------
def _c_array(name: str, data: bytes) -> str:
    lines = [f"#include <stddef.h>\nconst unsigned char {name}[{max(1, len(data))}] = {{"]
    for i in range(0, len(data), 24):
        lines.append(",".join(str(b) for b in data[i:i + 24]) + ",")
    lines.append("};")
    lines.append(f"const size_t {name}_len = {len(data)};")
    return "\n".join(lines) + "\n"


def tokenizer_blob(kind: str) -> bytes:
    """The packed tokenizer of a factory model with an SPM or BPE vocabulary."""
    from bitnet_aot.factory import make_test_model
    from bitnet_aot.gguf_import import load_gguf
    from bitnet_aot.tokenizer_pack import pack_tokenizer
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.gguf")
        make_test_model(path, "bitnet-b1.58", "tq2_0", n_embd=256, n_layer=1, n_ff=256, n_head=2,
                        n_head_kv=1, n_vocab=400, n_ctx=64, tokenizer=kind)
        tok = load_gguf(path, hash_file=False).tokenizer
    return pack_tokenizer(tok)


def generate_sources(build_dir: str) -> dict:
    """Writes unicode_tables.c and the two blob files; returns name -> extra generated sources."""
    from bitnet_aot.tokenizer_pack import unicode_tables_c
    os.makedirs(build_dir, exist_ok=True)
    ut = os.path.join(build_dir, "unicode_tables.c")
    with open(ut, "w") as f:
        f.write(unicode_tables_c())
    extra = {}
    for kind in ("spm", "bpe"):
        p = os.path.join(build_dir, f"blob_{kind}.c")
        with open(p, "w") as f:
            f.write(_c_array("fuzz_tok_blob", tokenizer_blob(kind)))
        extra[f"tokenizer_{kind}"] = [ut, p]
    return extra


def seeds(name: str) -> list:
    """A few hand-written starting inputs per harness."""
    if name.startswith("tokenizer"):
        texts = [b"Once upon a time there was a little model.", b"  Hello,  world!\n\n", b"0123456789 x",
                 "caf\u00e9 \u4e16\u754c \U0001F600 \u0301e".encode(), b"\xff\xfe\xc3(\xe2\x82", b"<s></s><unk>",
                 b"<|begin_of_text|>Hi<|eot_id|>", b"'s 't 're 've 'm 'll 'd", b"\t\r\n \x00 \x7f"]
        return [bytes([m]) + t for t in texts for m in (0, 3, 4)]
    if name == "chat":
        return [b"\x04\x00system\x00\x01Hello!\x00\x02Hi there.\x00\x01  How are you?  ",
                b"\x05\x01 \xe3\x80\x80trim me\xc2\xa0 \x00\x02answer",
                b"\x0e</s>\x00\x01q\x00\x02a\x00\x01q2", b"\x07\x03tool\x00\x01\xff\xfe",
                b"{% if message['role'] == 'system' %}<|start_header_id|>{{ '<|eot_id|>' }}"]
    if name == "http":
        return [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /generate HTTP/1.1\r\nContent-Length: 13\r\nAuthorization: Bearer k\r\n\r\n{\"prompt\":1}\n",
                b"POST /v1/completions?x=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
                b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
                b"GET / HTTP/1.0\r\n\r\n"]
    if name == "json":
        return [json.dumps(v).encode() for v in (
            {"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0, "stream": True},
            {"messages": [{"role": "user", "content": "Hi \u00e9\U0001F600"}], "stop": ["\n", None]},
            [1, -0.5, 1e300, 12345678901234567890, True, False, None, "\\\"\t\u0000"], "x", 0)] + \
            [b'{"a":1,"a":2}', b'"\\ud83d\\ude00"', b"[[[[[[[[[[[[[[]]]]]]]]]]]]]]", b" [ ] "]
    return []


# ---------------------------------------------------------------------------------------
# Build and run
# ---------------------------------------------------------------------------------------
def build(clang: str, name: str, build_dir: str, extra_sources: dict) -> str:
    src, runtime, _ = HARNESSES[name]
    exe = os.path.join(build_dir, f"fuzz_{name}")
    cmd = [clang] + CFLAGS + ["-o", exe, os.path.join(HERE, src)] + \
          [os.path.join(RUNTIME, s) for s in runtime] + extra_sources.get(name, [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{' '.join(cmd)}\n{r.stderr}")
    return exe


def _env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def run_fuzzer(exe: str, name: str, seconds: int, seed: int = 0) -> dict:
    corpus = os.path.join(HERE, "corpus", name)
    crash_dir = os.path.join(HERE, "crashers", name)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(crash_dir, exist_ok=True)
    for i, s in enumerate(seeds(name)):
        with open(os.path.join(corpus, f"seed-{i}"), "wb") as f:
            f.write(s)
    max_len = HARNESSES[name][2]
    cmd = [exe, f"-max_total_time={seconds}", f"-max_len={max_len}", "-timeout=10",
           "-rss_limit_mb=1536", "-print_final_stats=1", f"-seed={seed}",
           "-artifact_prefix=" + crash_dir + os.sep, corpus]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=seconds + 120)
    dt = time.time() - t0
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", r.stderr) or \
        re.search(r"Done (\d+) runs", r.stderr)
    runs = int(m.group(1)) if m else 0
    crash = r.returncode != 0
    log = os.path.join(HERE, "corpus", f"{name}.log")
    with open(log, "w") as f:
        f.write(r.stderr)
    return {"name": name, "runs": runs, "seconds": round(dt, 1), "crash": crash,
            "tail": "\n".join(r.stderr.splitlines()[-40:]) if crash else "", "log": log}


def replay(exe: str, name: str) -> dict:
    crash_dir = os.path.join(HERE, "crashers", name)
    files = sorted(os.path.join(crash_dir, f) for f in os.listdir(crash_dir)) if os.path.isdir(crash_dir) else []
    failed = []
    for f in files:
        r = subprocess.run([exe, f], capture_output=True, text=True, env=_env(), timeout=120)
        if r.returncode != 0:
            failed.append((f, "\n".join(r.stderr.splitlines()[-30:])))
    return {"name": name, "replayed": len(files), "failed": failed}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--time", type=int, default=30, help="seconds per harness (default 30)")
    ap.add_argument("--only", nargs="*", choices=sorted(HARNESSES), help="harnesses to run (default all)")
    ap.add_argument("--replay", action="store_true", help="only replay fuzz/crashers/NAME/*")
    ap.add_argument("--build-dir", default=os.path.join(HERE, "build"))
    ap.add_argument("--seed", type=int, default=0, help="libFuzzer -seed (0: random)")
    a = ap.parse_args(argv)
    clang = find_clang()
    if not clang or not clang_has_libfuzzer(clang):
        print("clang with libFuzzer (-fsanitize=fuzzer) not found: apt-get install clang", file=sys.stderr)
        return 2
    extra = generate_sources(a.build_dir)
    bad = 0
    for name in a.only or list(HARNESSES):
        exe = build(clang, name, a.build_dir, extra)
        if a.replay:
            res = replay(exe, name)
            print(f"{name}: replayed {res['replayed']} crashers, {len(res['failed'])} failing", flush=True)
            for f, tail in res["failed"]:
                print(f"--- {f}\n{tail}", flush=True)
            bad += bool(res["failed"])
            continue
        res = run_fuzzer(exe, name, a.time, a.seed)
        print(f"{name}: {res['runs']} runs in {res['seconds']} s, {'CRASH' if res['crash'] else 'ok'}", flush=True)
        if res["crash"]:
            print(res["tail"], flush=True)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
