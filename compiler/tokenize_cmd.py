"""`bitnet-aot tokenize model.gguf "text"`: the ids the compiled model's C tokenizer gives.

For debugging prompts: the text goes through the very tokenizer the binary runs (the C code
of runtime_c/text/tokenizer.c with the vocabulary baked in), reached through the Python binding.
That needs a host shared library of the model: the one of the build cache (build_cache.py),
which `perplexity`, `serve` and `BitNetModel.from_pretrained` use too, so it is compiled
once for all of them.
"""
from __future__ import annotations

import json
import sys

from .errors import BitnetError


def shared_library(gguf_path: str, log=None) -> str:
    """The path of the cached host shared library of this model (built now if missing)."""
    from .build_cache import compile_cached
    return compile_cached(gguf_path, log=log or (lambda s: None))


def tokenize(gguf_path: str, text, add_bos: bool = True, special: bool = False, log=None) -> list:
    """Token ids of `text` (str or bytes) by the model's compiled C tokenizer."""
    from .bindings.api import CompiledModel
    with CompiledModel(shared_library(gguf_path, log=log), n_ctx=1, n_threads=1) as m:
        return m.tokenize(text, add_bos=add_bos, special=special)


def _piece_text(b: bytes) -> str:
    """A token's bytes for display: the text, with bytes that are not UTF-8 as \\xNN."""
    return b.decode("utf-8", "backslashreplace")


def _read_text(args) -> bytes:
    if args.text is not None and args.file is not None:
        raise BitnetError("give the text either as an argument or with -f, not both")
    if args.text is not None:
        return args.text.encode("utf-8", "surrogateescape")
    if args.file is not None and args.file != "-":
        try:
            with open(args.file, "rb") as f:
                return f.read()
        except OSError as e:
            raise BitnetError(f"{args.file}: cannot read ({e.strerror})") from None
    if args.file is None and sys.stdin.isatty():
        raise BitnetError("no text: give it as an argument, with -f FILE, or on stdin (-f -)")
    return sys.stdin.buffer.read()


def main_tokenize(args) -> None:
    """The `tokenize` subcommand. args: model, text, file, special, no_bos, json, pieces."""
    from .bindings.api import CompiledModel
    data = _read_text(args)
    lib = shared_library(args.model, log=lambda s: print(s, file=sys.stderr))
    with CompiledModel(lib, n_ctx=1, n_threads=1) as m:
        ids = m.tokenize(data, add_bos=not args.no_bos, special=args.special)
        if not args.pieces:
            print(json.dumps(ids) if args.json else " ".join(str(i) for i in ids))
            return
        # each token's bytes as it prints after the one before it (alone, a SentencePiece
        # word start would lose its space the way the first word of a text does)
        pieces = []
        for k, i in enumerate(ids):
            if k == 0:
                pieces.append(_piece_text(m.detokenize([i], special=True)))
            else:
                before = m.detokenize([ids[k - 1]], special=True)
                pieces.append(_piece_text(m.detokenize([ids[k - 1], i], special=True)[len(before):]))
    if args.json:
        print(json.dumps([{"id": i, "piece": p} for i, p in zip(ids, pieces)], ensure_ascii=False))
    else:
        width = len(str(max(ids, default=0)))
        for i, p in zip(ids, pieces):
            print(f"{i:>{width}} -> {json.dumps(p, ensure_ascii=False)}")

