"""Output quality of each KV cache precision (--kv f32|f16|q8), through the compiled path.

    python bench/kv_quality.py [--threads 2] [--max-windows N]

1. The bundled model (examples/shakespeare.gguf) on the held-out last 10% of
   ../shared/data/tinyshakespeare.txt in windows of 256 tokens (its trained context), fed as
   [BOS] + window[:-1], every position scored (the protocol of `bitnet-aot perplexity`):
   perplexity per --kv, and per position the argmax agreement and logit error against f32.
2. A factory model of the 2B-4T attention shape (head dim 128, 20 query heads, 5 KV heads;
   two layers, E 2560, V 4096) over 2048 positions of random tokens: logit error and argmax
   agreement against f32, where a long context accumulates any error of the cache.

Prints one table and writes bench/results/kv-quality-<date>.json. Every CPU computes the
same bits, so one run is enough.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.head_quality import CTX, MODEL, TEXT, _compare, _finish, _logsoftmax_nll  # noqa: E402

KVS = ("f32", "f16", "q8")


def shakespeare(threads: int, max_windows: int | None, log) -> dict:
    from bitnet_aot.bindings.api import CompiledModel
    from bitnet_aot.build import build
    from bitnet_aot.gguf_file import GGUFFile
    text = open(TEXT, encoding="utf-8").read()
    held = text[int(len(text) * 0.9):].encode()
    g = GGUFFile(MODEL)
    bos = g.kv["tokenizer.ggml.bos_token_id"]
    g.close()
    d = tempfile.mkdtemp(prefix="kvq-")
    libs = {kv: build(MODEL, "host", os.path.join(d, f"{kv}.so"), shared=True, kv=kv, log=lambda s: None).output
            for kv in KVS}
    models = {kv: CompiledModel(libs[kv], n_ctx=CTX, n_threads=threads) for kv in KVS}
    ids = np.asarray(models["f32"].tokenize(held, add_bos=False), dtype=np.int64)
    n_win = len(ids) // CTX if not max_windows else min(max_windows, len(ids) // CTX)
    nll = {kv: 0.0 for kv in KVS}
    cmp = {kv: {} for kv in KVS}
    sd = []
    for w in range(n_win):
        win = ids[w * CTX:(w + 1) * CTX]
        feed = np.concatenate([[bos], win[:-1]]).astype(np.int32)
        lg = {}
        for kv in KVS:
            models[kv].reset()
            lg[kv] = models[kv].eval(feed, all_logits=True)
            nll[kv] += float(_logsoftmax_nll(lg[kv], win).sum())
        ref = lg["f32"].astype(np.float64)
        sd.append(float(ref.std()))
        for kv in KVS:
            _compare(lg[kv], ref, cmp[kv])
        if w % 40 == 0:
            log(f"  window {w + 1}/{n_win}")
    for m in models.values():
        m.close()
    n = n_win * CTX
    return {"windows": n_win, "tokens": n, "per_kv": {kv: {"perplexity": float(np.exp(nll[kv] / n)),
                                                          **_finish(cmp[kv], float(np.mean(sd)))} for kv in KVS}}


def factory(threads: int, positions: int, log) -> dict:
    from bitnet_aot.bindings.api import CompiledModel
    from bitnet_aot.build import build
    from bitnet_aot.factory import make_test_model
    d = tempfile.mkdtemp(prefix="kvq-f-")
    g = make_test_model(os.path.join(d, "m.gguf"), "bitnet-b1.58", "tq2_0", n_embd=2560, n_layer=2, n_ff=6912,
                        n_head=20, n_head_kv=5, n_vocab=4096, n_ctx=positions, seed=7)
    toks = np.random.default_rng(7).integers(3, 4096, positions).astype(np.int32)
    lg = {}
    for kv in KVS:
        lib = build(g, "host", os.path.join(d, f"{kv}.so"), shared=True, kv=kv, log=lambda s: None).output
        with CompiledModel(lib, n_ctx=positions, n_threads=threads) as cm:
            lg[kv] = cm.eval(toks, all_logits=True)
        log(f"  factory --kv {kv} done")
    ref = lg["f32"].astype(np.float64)
    out = {}
    for kv in KVS:
        acc = {}
        _compare(lg[kv], ref, acc)
        out[kv] = _finish(acc, float(ref.std()))
    return {"positions": positions, "per_kv": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=None)
    ap.add_argument("--positions", type=int, default=2048)
    a = ap.parse_args()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log("bundled model, held-out text ...")
    sh = shakespeare(a.threads, a.max_windows, log)
    log("factory model of the 2B-4T attention shape ...")
    fa = factory(a.threads, a.positions, log)
    print(f"\n{'--kv':<5} {'perplexity':>10} {'agree':>7} {'err max':>8} {'err mean':>9} | "
          f"{'factory agree':>13} {'err max':>8} {'err mean':>9}")
    for kv in KVS:
        s, f = sh["per_kv"][kv], fa["per_kv"][kv]
        print(f"{kv:<5} {s['perplexity']:>10.4f} {s['greedy_agreement'] * 100:>6.1f}% {s['max_logit_err']:>8.3f} "
              f"{s['mean_logit_err']:>9.4f} | {f['greedy_agreement'] * 100:>12.1f}% {f['max_logit_err']:>8.3f} "
              f"{f['mean_logit_err']:>9.4f}")
    out = {"date": datetime.date.today().isoformat(), "shakespeare": sh, "factory_2b4t_attention": fa}
    path = os.path.join(ROOT, "bench", "results", f"kv-quality-{out['date']}.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
