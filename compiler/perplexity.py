"""`bitnet-aot perplexity model.gguf file.txt`: perplexity of a text under the compiled model.

The compiled path end to end: the model is built for this machine (cached), the text is
tokenized by the C tokenizer inside it, and logits come from the same C forward pass as the
binary. Protocol (the same as examples/train/train.py's evaluation): the text's tokens are
cut into non-overlapping windows of `ctx` tokens; each window is fed as [BOS] + window[:-1]
and every position is scored, so the first token is predicted from BOS alone.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import BitnetError
from .gguf_file import GGUFFile


def perplexity(gguf: str, text_path: str, ctx: int = 256, head: str = "auto", threads: int = 2,
               max_windows: int | None = None, embed: str = "auto", kv: str = "f16") -> dict:
    from .bindings.api import CompiledModel
    from .build_cache import compile_cached
    from .progress import iterate

    if ctx < 2:
        raise BitnetError(f"--ctx must be at least 2 tokens, got {ctx}")
    if threads < 1:
        raise BitnetError(f"--threads must be at least 1, got {threads}")
    if max_windows is not None and max_windows < 1:
        raise BitnetError(f"--max-windows must be at least 1, got {max_windows}")
    g = GGUFFile(gguf)
    bos = g.kv.get("tokenizer.ggml.bos_token_id")
    g.close()
    if bos is None:
        raise BitnetError(f"{gguf}: the model has no BOS token; perplexity needs one")
    try:
        with open(text_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BitnetError(f"{text_path}: cannot read ({e.strerror})") from None
    lib = compile_cached(gguf, head=head, embed=embed, kv=kv)
    with CompiledModel(lib, n_ctx=ctx, n_threads=threads) as cm:
        ids = np.asarray(cm.tokenize(data, add_bos=False), dtype=np.int64)
        n_win = len(ids) // ctx
        if max_windows:
            n_win = min(n_win, max_windows)
        if n_win == 0:
            raise BitnetError(f"{text_path}: {len(ids)} tokens, fewer than one window of {ctx}; use a smaller --ctx")
        total = 0.0
        for w in iterate(range(n_win), "perplexity", unit="window"):
            win = ids[w * ctx:(w + 1) * ctx]
            cm.reset()
            lg = cm.eval(np.concatenate([[bos], win[:-1]])).astype(np.float64)        # [ctx, V]
            mx = lg.max(axis=1, keepdims=True)
            logz = mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1))
            total += float(np.sum(logz - lg[np.arange(ctx), win]))
    n = n_win * ctx
    return {"perplexity": math.exp(total / n), "nll": total / n, "tokens": n, "windows": n_win, "ctx": ctx,
            "head": head, "embed": embed, "kv": kv}
