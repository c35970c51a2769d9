"""Output quality of each head precision (--head auto|q8|q6|q4), through the compiled path.

    python bench/head_quality.py [--threads 2] [--max-windows N] [--factory-vocab 16384]

1. The bundled model (examples/shakespeare.gguf, tied f32 head) on the held-out last 10% of
   ../shared/data/tinyshakespeare.txt, with the protocol of `bitnet-aot perplexity` (windows
   of 256 tokens fed as [BOS] + window[:-1], every position scored): perplexity, and per
   position the argmax agreement and logit error against the file's f32 head (`auto`).
2. A factory model (random weights, the 2B-4T width 2560 with a smaller vocabulary and two
   layers, F16 head): logit error and argmax agreement against its F16 head over 512
   positions of random tokens; once untied (only the head changes) and once tied like
   2B-4T (the embedding is the same matrix, so the hidden states change too).
3. The bytes each head precision stores for the 2B-4T head (128256 x 2560).

Prints one table and writes bench/results/head-quality-<date>.json. Quality numbers do not
depend on the machine (every CPU computes the same bits), so one run is enough.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MODEL = os.path.join(ROOT, "examples", "shakespeare.gguf")
TEXT = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
HEADS = ("auto", "q8", "q6", "q4")
CTX = 256


def _logsoftmax_nll(lg: np.ndarray, target: np.ndarray) -> np.ndarray:
    lg = lg.astype(np.float64)
    mx = lg.max(axis=1, keepdims=True)
    logz = mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1))
    return logz - lg[np.arange(len(target)), target]


def _compare(got: np.ndarray, ref: np.ndarray, acc: dict):
    err = np.abs(got.astype(np.float64) - ref)
    acc["max_err"] = max(acc.get("max_err", 0.0), float(err.max()))
    acc["sum_err"] = acc.get("sum_err", 0.0) + float(err.sum())
    acc["n_err"] = acc.get("n_err", 0) + err.size
    acc["agree"] = acc.get("agree", 0) + int(np.sum(got.argmax(axis=1) == ref.argmax(axis=1)))
    acc["positions"] = acc.get("positions", 0) + got.shape[0]


def _finish(acc: dict, ref_std: float) -> dict:
    mean = acc["sum_err"] / acc["n_err"]
    return {"greedy_agreement": acc["agree"] / acc["positions"], "positions": acc["positions"],
            "max_logit_err": acc["max_err"], "mean_logit_err": mean, "mean_logit_err_rel_std": mean / ref_std}


def shakespeare(threads: int, max_windows: int | None, log) -> dict:
    from bitnet_aot.bindings.api import CompiledModel
    from bitnet_aot.bindings.model import compile_cached
    from bitnet_aot.gguf_file import GGUFFile

    text = open(TEXT, encoding="utf-8").read()
    held = text[int(len(text) * 0.9):].encode()
    g = GGUFFile(MODEL)
    bos = g.kv["tokenizer.ggml.bos_token_id"]
    g.close()
    libs = {h: compile_cached(MODEL, head=h, embed="auto") for h in HEADS}
    models = {h: CompiledModel(libs[h], n_ctx=CTX, n_threads=threads) for h in HEADS}
    try:
        ids = np.asarray(models["auto"].tokenize(held, add_bos=False), dtype=np.int64)
        n_win = len(ids) // CTX if not max_windows else min(max_windows, len(ids) // CTX)
        nll = {h: 0.0 for h in HEADS}
        cmp = {h: {} for h in HEADS}
        sq = [0.0, 0.0, 0]
        t0 = time.time()
        for w in range(n_win):
            win = ids[w * CTX:(w + 1) * CTX]
            inp = np.concatenate([[bos], win[:-1]])
            ref = None
            for h in HEADS:
                models[h].reset()
                lg = models[h].eval(inp)
                nll[h] += float(np.sum(_logsoftmax_nll(lg, win)))
                if h == "auto":
                    ref = lg.astype(np.float64)
                    sq[0] += float(ref.sum()); sq[1] += float((ref * ref).sum()); sq[2] += ref.size
                _compare(lg, ref, cmp[h])
            if w % 20 == 19:
                log(f"  shakespeare: {w + 1}/{n_win} windows, {time.time() - t0:.0f} s")
    finally:
        for cm in models.values():
            cm.close()
    n = n_win * CTX
    ref_std = float(np.sqrt(sq[1] / sq[2] - (sq[0] / sq[2]) ** 2))
    out = {"model": os.path.basename(MODEL), "text": "last 10% of tinyshakespeare.txt", "windows": n_win, "ctx": CTX,
           "tokens": n, "reference": "auto (the file's f32 head)", "logit_std": ref_std, "heads": {}}
    for h in HEADS:
        out["heads"][h] = {"perplexity": float(np.exp(nll[h] / n)), "nll": nll[h] / n, **_finish(cmp[h], ref_std)}
    return out


def factory(threads: int, n_vocab: int, tied: bool, log) -> dict:
    from bitnet_aot.bindings.api import CompiledModel
    from bitnet_aot.build import build
    from bitnet_aot.factory import make_test_model

    shape = dict(n_embd=2560, n_layer=2, n_ff=6912, n_head=20, n_head_kv=5, n_vocab=n_vocab, n_ctx=512)
    toks = np.random.default_rng(1).integers(3, n_vocab, 512).astype(np.int32)
    with tempfile.TemporaryDirectory(prefix="head-quality-") as d:
        gguf = make_test_model(os.path.join(d, "f.gguf"), "bitnet-b1.58", "tq2_0", tokenizer=None, embd_type="f16",
                               tied=tied, **shape)
        logits = {}
        for h in HEADS:
            t0 = time.time()
            res = build(gguf, "host", os.path.join(d, f"m-{h}.so"), shared=True, head=h, log=lambda s: None)
            with CompiledModel(res.output, n_ctx=512, n_threads=threads) as cm:
                logits[h] = cm.eval(toks)
            log(f"  factory ({'tied' if tied else 'untied'}): head {h} built and run in {time.time() - t0:.0f} s")
    ref = logits["auto"].astype(np.float64)
    out = {"model": "factory bitnet-b1.58 tq2_0, random weights", **shape,
           "head_source": "f16, tied: --head sets the embedding too" if tied else "f16, untied: only the head changes",
           "positions": len(toks), "reference": "auto (the file's f16 head)", "logit_std": float(ref.std()),
           "heads": {}}
    for h in HEADS:
        acc = {}
        _compare(logits[h], ref, acc)
        out["heads"][h] = _finish(acc, float(ref.std()))
    return out


def head_bytes_2b4t() -> dict:
    V, E = 128256, 2560
    n = V * E
    return {"f16": 2 * n, "q8": n + 4 * V, "q6": n * 6 // 8 + n // 32 * 2, "q4": n // 2 + n // 32 * 2}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=None, help="held-out windows (default: all)")
    ap.add_argument("--factory-vocab", type=int, default=16384)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    def log(s):
        print(s, file=sys.stderr, flush=True)
    t0 = time.time()
    log("the bundled model, every head precision:")
    sh = shakespeare(a.threads, a.max_windows, log)
    log("a factory model of the 2B-4T width, untied head (the head alone) and tied (head and embedding):")
    fa = {"untied": factory(a.threads, a.factory_vocab, False, log), "tied": factory(a.threads, a.factory_vocab, True, log)}
    sizes = head_bytes_2b4t()
    print(f"\nexamples/shakespeare.gguf (tied head), held-out {sh['tokens']} tokens ({sh['windows']} windows of {CTX}); "
          f"factory E=2560 V={a.factory_vocab}, {fa['tied']['positions']} positions, untied / tied")
    print(f"{'head':<5} {'perplexity':>11} {'change':>8} {'agree':>7} {'max err':>8} {'mean err':>9}   "
          f"{'factory agree':>15} {'max err':>15} {'mean err':>15}   {'2B-4T head MB':>13}")
    base = sh["heads"]["auto"]["perplexity"]
    for h in HEADS:
        s, fu, ft = sh["heads"][h], fa["untied"]["heads"][h], fa["tied"]["heads"][h]
        mb = sizes["f16" if h == "auto" else h] / 1e6
        print(f"{h:<5} {s['perplexity']:>11.4f} {100 * (s['perplexity'] / base - 1):>+7.2f}% "
              f"{100 * s['greedy_agreement']:>6.2f}% {s['max_logit_err']:>8.4f} {s['mean_logit_err']:>9.5f}   "
              f"{100 * fu['greedy_agreement']:>6.2f}/{100 * ft['greedy_agreement']:>6.2f}% "
              f"{fu['max_logit_err']:>7.3f}/{ft['max_logit_err']:>7.3f} {fu['mean_logit_err']:>7.4f}/{ft['mean_logit_err']:>7.4f}"
              f"   {mb:>13.1f}")
    date = datetime.date.today().isoformat()
    result = {"date": date, "seconds": round(time.time() - t0, 1), "shakespeare": sh, "factory": fa,
              "head_bytes_2b4t": sizes,
              "notes": "agreement: argmax of the logits equal to the reference head's at the same position "
                       "(teacher-forced); errors are absolute logit differences. auto on the factory model is "
                       "its f16 head (2B-4T head bytes listed under f16). A tied model's --head also sets its "
                       "embedding, so its hidden states change too."}
    out = a.out or os.path.join(ROOT, "bench", "results", f"head-quality-{date}.json")
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
