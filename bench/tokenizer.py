"""Tokenizer benchmark: encode/decode throughput of the C tokenizer (runtime_c/text/tokenizer.c)
on WikiText-2 (wiki.test.raw, 1.29 MB), next to the Python references.

    python bench/tokenizer.py [--repeat 5] [--out bench/results/tokenizer-<date>.json]

Rows:
  bpe-llama3   BitNet-2B-4T vocabulary (128256 tokens, LLaMA-3 pre-tokenizer), built from
               shared/data/tokenizers/bitnet-b1.58-2B-4T/tokenizer.model; reference: tiktoken
  spm-bpe      a 4000-piece BPE SentencePiece model trained here; reference: sentencepiece
  spm-unigram  a 4000-piece unigram SentencePiece model (viterbi); reference: sentencepiece
Each is measured on the whole file as one string ("file") and line by line ("lines", the
per-call overhead included). MB/s = input bytes / best wall time of --repeat runs, one
thread. The C library is built with the system cc -O2 (the shipped binary uses zig cc -O2).
Target (issue 4): BPE encode >= 5 MB/s.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from tokenizer_harness import (DECODE_STRIP_SPACE, LLAMA3_PAT, LLAMA3_SPECIALS,  # noqa: E402
                               TokenizerLib, build_library, llama3_tokenizer_data)

from bitnet_aot.model import TokenizerData  # noqa: E402
from bitnet_aot.tokenizer_pack import pack_tokenizer  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
WIKI = DATA / "wikitext-2-raw" / "wiki.test.raw"
SHAKESPEARE = DATA / "tinyshakespeare.txt"
TIKTOKEN_MODEL = DATA / "tokenizers" / "bitnet-b1.58-2B-4T" / "tokenizer.model"


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def spm_data(sp) -> TokenizerData:
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
                     else 6 if sp.is_byte(i) else 1)
    return TokenizerData(model="llama", tokens=tokens, scores=scores, token_types=types,
                         bos_id=sp.bos_id(), eos_id=sp.eos_id(), unk_id=sp.unk_id())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    text = WIKI.read_text(encoding="utf-8")
    data = text.encode("utf-8")
    lines = [ln.encode("utf-8") for ln in text.splitlines(keepends=True)]
    mb = len(data) / 1e6
    work = Path(tempfile.mkdtemp(prefix="tokbench-"))
    tl = TokenizerLib(build_library(work))

    rows = []

    def measure(name, ct, ref_encode=None, ref_name=""):
        ids = ct.encode(data)
        t_file = best_time(lambda: ct.encode(data), a.repeat)
        t_lines = best_time(lambda: [ct.encode(ln) for ln in lines], max(1, a.repeat // 2))
        t_dec = best_time(lambda: ct.decode(ids, flags=DECODE_STRIP_SPACE), a.repeat)
        row = {"tokenizer": name, "input_mb": round(mb, 3), "tokens": len(ids),
               "encode_file_mb_s": round(mb / t_file, 2), "encode_lines_mb_s": round(mb / t_lines, 2),
               "decode_mb_s": round(mb / t_dec, 1)}
        if ref_encode is not None:
            same = ref_encode(text) == ids
            t_ref = best_time(lambda: ref_encode(text), max(1, a.repeat // 2))
            row.update({"reference": ref_name, "reference_mb_s": round(mb / t_ref, 2),
                        "same_ids_as_reference": same})
        rows.append(row)

    # BPE: BitNet-2B-4T / LLaMA-3
    ranks, td = llama3_tokenizer_data(TIKTOKEN_MODEL)
    t0 = time.perf_counter()
    blob = pack_tokenizer(td)
    pack_s = time.perf_counter() - t0
    ct = tl.load(blob)
    ref = None
    try:
        import tiktoken
        enc = tiktoken.Encoding("llama3-bench", pat_str=LLAMA3_PAT, mergeable_ranks=ranks,
                                special_tokens={t: len(ranks) + i for i, t in enumerate(LLAMA3_SPECIALS)})
        ref = enc.encode_ordinary
    except ImportError:
        pass
    measure("bpe-llama3", ct, ref, "tiktoken")
    rows[-1]["pack_seconds"] = round(pack_s, 2)
    rows[-1]["blob_bytes"] = len(blob)

    # SPM: models trained on Tiny Shakespeare
    try:
        import sentencepiece as spm
        (work / "train.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:400_000], encoding="utf-8")
        for kind in ("bpe", "unigram"):
            spm.SentencePieceTrainer.train(
                input=str(work / "train.txt"), model_prefix=str(work / kind), vocab_size=4000,
                model_type=kind, byte_fallback=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, character_coverage=1.0, num_threads=1, minloglevel=2)
            sp = spm.SentencePieceProcessor(model_file=str(work / kind) + ".model")
            measure(f"spm-{kind}", tl.load(pack_tokenizer(spm_data(sp))), sp.encode, "sentencepiece")
    except ImportError:
        pass

    hdr = f"{'tokenizer':<12} {'tokens':>8} {'enc file MB/s':>14} {'enc lines MB/s':>15} {'dec MB/s':>9}  reference"
    print(f"input: {WIKI} ({mb:.2f} MB, {len(lines)} lines), best of {a.repeat}, 1 thread")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ref = (f"{r['reference']} {r['reference_mb_s']} MB/s, same ids: {r['same_ids_as_reference']}"
               if "reference" in r else "-")
        print(f"{r['tokenizer']:<12} {r['tokens']:>8} {r['encode_file_mb_s']:>14} "
              f"{r['encode_lines_mb_s']:>15} {r['decode_mb_s']:>9}  {ref}")
    bpe = rows[0]["encode_file_mb_s"]
    print(f"BPE encode target >= 5 MB/s: {'met' if bpe >= 5 else 'NOT met'} ({bpe} MB/s)")

    result = {"bench": "tokenizer", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "python": platform.python_version()},
              "input": str(WIKI.name), "repeat": a.repeat, "rows": rows}
    out = a.out or str(ROOT / "bench" / "results" / f"tokenizer-{datetime.date.today().isoformat()}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", out)
    return 0 if bpe >= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
