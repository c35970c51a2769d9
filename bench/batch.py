"""BitNetModel.generate_batch(4 prompts) against 4 sequential generate() calls.

    python bench/batch.py [--shape small|medium] [--tokens 64] [--repeat 3] [--threads N]
                          [--out bench/results/batch-<date>.json]

Builds a factory model (random weights, so the text is noise; the timing is what counts)
through BitNetModel.from_pretrained (cached in ~/.cache/bitnet-aot/builds), checks that the
batch gives the same greedy text as the sequential calls, and prints best-of-N wall times.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

from bitnet_aot.bindings.model import BitNetModel
from bitnet_aot.factory import make_test_model

SHAPES = {
    "small": dict(n_embd=256, n_layer=2, n_ff=512, n_head=4, n_head_kv=2, n_vocab=512, n_ctx=512),
    "medium": dict(n_embd=1024, n_layer=8, n_ff=2816, n_head=16, n_head_kv=4, n_vocab=2048, n_ctx=512),
}
PROMPTS = ["What is machine learning?", "Define deep learning", "Once upon a time", "Explain quantum computing"]


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), nargs="+", default=["small", "medium"])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  f"batch-{datetime.date.today().isoformat()}.json"))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in a.shape:
            gguf = make_test_model(os.path.join(tmp, f"{shape}.gguf"), "bitnet-b1.58", "tq2_0", **SHAPES[shape])
            m = BitNetModel.from_pretrained(gguf, n_threads=a.threads)
            kw = dict(max_tokens=a.tokens, temperature=0, ignore_eos=True)
            m.generate_batch(PROMPTS, **kw)                        # warm-up: contexts, page-ins
            t_seq, seq = best_of(a.repeat, lambda: [m.generate(p, **kw) for p in PROMPTS])
            t_bat, bat = best_of(a.repeat, lambda: m.generate_batch(PROMPTS, **kw))
            assert bat == seq, "generate_batch differs from sequential generate"
            n = a.tokens * len(PROMPTS)
            rows.append({"shape": shape, **SHAPES[shape], "prompts": len(PROMPTS), "tokens_each": a.tokens,
                         "threads": a.threads, "sequential_s": round(t_seq, 4), "batch_s": round(t_bat, 4),
                         "sequential_tok_s": round(n / t_seq, 1), "batch_tok_s": round(n / t_bat, 1),
                         "speedup": round(t_seq / t_bat, 2), "outputs_equal": bat == seq})
    print(f"{'shape':<8} {'threads':>7} {'4x generate':>12} {'generate_batch':>15} {'tok/s seq':>10} "
          f"{'tok/s batch':>12} {'speedup':>8}")
    for r in rows:
        print(f"{r['shape']:<8} {r['threads']:>7} {r['sequential_s']:>11.3f}s {r['batch_s']:>14.3f}s "
              f"{r['sequential_tok_s']:>10.1f} {r['batch_tok_s']:>12.1f} {r['speedup']:>7.2f}x")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"bench": "batch", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                   "machine": platform.machine(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                   "note": "generate_batch = concurrent contexts (one per prompt, threads split); "
                           "decode steps are not fused into batched matmuls yet",
                   "rows": rows}, f, indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
