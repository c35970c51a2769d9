"""`bitnet-aot tokenize model.gguf "text"`: the ids the compiled model's C tokenizer gives.

For debugging prompts: the text goes through the very tokenizer the binary runs (the C code
of runtime_c/tokenizer.c with the vocabulary baked in), reached through the Python binding.
That needs a host shared library of the model; it is built once and kept in a cache folder
keyed by the GGUF's SHA-256 and the bitnet-aot version:

    ~/.cache/bitnet-aot/builds/<sha256>-<version>/model.so

(the folder can be moved with the environment variable BITNET_AOT_BUILD_CACHE).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from . import __version__
from .errors import BitnetError


def cache_root() -> str:
    return os.environ.get("BITNET_AOT_BUILD_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "bitnet-aot", "builds")


def cache_key(gguf_path: str) -> str:
    from .gguf_import import file_sha256
    try:
        sha = file_sha256(gguf_path)
    except OSError as e:
        raise BitnetError(f"{gguf_path}: cannot read ({e.strerror}); check the path") from None
    from .build import source_fingerprint
    return f"{sha}-{__version__}-{source_fingerprint()}"


def shared_library(gguf_path: str, log=None) -> str:
    """The path of a host shared library of this model, built now if the cache has none."""
    from .build import build
    from .gguf_import import load_gguf
    if not os.path.isfile(gguf_path):
        raise BitnetError(f"{gguf_path}: no such file; check the path")
    root = cache_root()
    final = os.path.join(root, cache_key(gguf_path))
    lib = os.path.join(final, "model.so")
    if os.path.isfile(lib):
        return lib
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise BitnetError(f"cannot create the build cache {root} ({e.strerror}); "
                          "set BITNET_AOT_BUILD_CACHE to a writable folder") from None
    model = load_gguf(gguf_path)      # a file that is no model fails here, before any message
    if log:
        log(f"building {os.path.basename(gguf_path)} as a shared library for the tokenizer "
            f"(once; cached in {final})")
    # Build in a private folder and rename it into place, so concurrent runs never see a
    # half-written library (the loser of a race just drops its copy).
    tmp = tempfile.mkdtemp(prefix=".build-", dir=root)
    try:
        build(gguf_path, "host", os.path.join(tmp, "model.so"), build_dir=os.path.join(tmp, "build"),
              shared=True, model=model, log=lambda s: None)
        shutil.rmtree(os.path.join(tmp, "build"), ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isfile(lib):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


def tokenize(gguf_path: str, text, add_bos: bool = True, special: bool = False, log=None) -> list:
    """Token ids of `text` (str or bytes) by the model's compiled C tokenizer."""
    from .bindings.api import CompiledModel
    lib = shared_library(gguf_path, log=log)
    with CompiledModel(lib, n_ctx=1, n_threads=1) as m:
        return m.tokenize(text, add_bos=add_bos, special=special)


def main_tokenize(args) -> None:
    """The `tokenize` subcommand. args: model, text, special, no_bos, json."""
    ids = tokenize(args.model, args.text, add_bos=not args.no_bos, special=args.special,
                   log=lambda s: print(s, file=sys.stderr))
    print(json.dumps(ids) if args.json else " ".join(str(i) for i in ids))
