"""The Python binding: load a compiled model (the same generated C as the binary, built as a
shared library with `bitnet-aot build --shared`) and call it through cffi.

    from bitnet_aot import CompiledModel
    m = CompiledModel("model.so", n_ctx=256, n_threads=2)
    logits = m.eval([1, 2, 3])          # numpy [3, n_vocab]
    ids = m.generate([1, 2, 3], 16)     # greedy by default
"""
from __future__ import annotations

import json
import os
import re
import threading

import numpy as np
from cffi import FFI

from ..errors import BitnetError

def _cdef_from_header() -> str:
    """The cffi declarations, derived from runtime_c/bitnet.h (the one statement of the C
    API): comments and preprocessor lines removed, the rest is plain C cffi parses."""
    from importlib import resources
    text = resources.files("bitnet_aot.runtime_c").joinpath("bitnet.h").read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


CDEF = _cdef_from_header()

_ffi = FFI()
_ffi.cdef(CDEF)
_libs = {}
_lock = threading.Lock()


def _load(path: str, error=BitnetError):
    """dlopen a compiled model once per process (both CompiledModel and BitNetModel use
    this); failures raise `error` (a BitnetError subclass) with a one-line message."""
    path = os.path.abspath(path)
    with _lock:
        if path not in _libs:
            if not os.path.isfile(path):
                raise error(f"{path}: no such compiled model; build one with `bitnet-aot build MODEL.gguf --shared`")
            try:
                lib = _ffi.dlopen(path)
            except OSError as e:
                raise error(f"{path}: cannot load ({e}); was it built with --shared for this machine?") from None
            if lib.bn_init(_ffi.NULL) != 0:
                raise error(_ffi.string(lib.bn_last_error()).decode("utf-8", "replace"))
            _libs[path] = lib
        return _libs[path]


class CompiledModel:
    """One context (KV cache) over a compiled model's shared library."""

    def __init__(self, path: str, n_ctx: int | None = None, n_threads: int = 1):
        self.path = path
        self.lib = _load(path)
        self.n_vocab = self.lib.bn_n_vocab()
        n_ctx = n_ctx or min(self.lib.bn_n_ctx_train(), 4096)
        self._ctx = self.lib.bn_create(n_ctx, n_threads)
        if self._ctx == _ffi.NULL:
            raise BitnetError(self._error())
        self.n_ctx = n_ctx
        self.n_threads = n_threads

    def _error(self) -> str:
        return _ffi.string(self.lib.bn_last_error()).decode(errors="replace")

    @property
    def info(self) -> dict:
        """The build's provenance (bn_info_json): model, hashes, target, kernel, options."""
        return json.loads(_ffi.string(self.lib.bn_info_json()).decode())

    @property
    def pos(self) -> int:
        """Tokens in the KV cache."""
        return self.lib.bn_pos(self._ctx)

    def reset(self):
        """Empty the KV cache."""
        self.lib.bn_reset(self._ctx)

    def eval(self, tokens, all_logits: bool = True) -> np.ndarray:
        """Evaluate tokens after the cached ones: logits [n, V] (or [V] for the last token)."""
        toks = np.ascontiguousarray(tokens, dtype=np.int32)
        n = toks.size
        out = np.empty((n, self.n_vocab) if all_logits else (self.n_vocab,), dtype=np.float32)
        rc = self.lib.bn_eval(self._ctx, _ffi.cast("int32_t *", toks.ctypes.data), n,
                              _ffi.cast("float *", out.ctypes.data), 2 if all_logits else 1)
        if rc != 0:
            raise BitnetError(self._error())
        return out

    def generate(self, prompt, n_predict: int, temperature: float = 0.0, top_k: int = 40, top_p: float = 0.95,
                 min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                 seed: int | None = None, ignore_eos: bool = False, reset: bool = True) -> list:
        """Generate after `prompt` (token ids); greedy when temperature is 0 (the default
        here). seed None or -1: a random one. Returns the new ids."""
        if seed is None or seed == -1:
            import secrets
            seed = secrets.randbits(31)
        if reset:
            self.reset()
        p = np.ascontiguousarray(prompt, dtype=np.int32)
        s = self.lib.bn_sampling_default()
        s.temperature, s.top_k, s.top_p, s.min_p = temperature, top_k, top_p, min_p
        s.repeat_penalty, s.repeat_last_n, s.seed = repeat_penalty, repeat_last_n, seed
        out = np.empty(max(n_predict, 1), dtype=np.int32)
        sp = _ffi.new("bn_sampling *", s)
        n = self.lib.bn_generate(self._ctx, _ffi.cast("int32_t *", p.ctypes.data), p.size, n_predict, sp,
                                 int(ignore_eos), _ffi.cast("int32_t *", out.ctypes.data), _ffi.NULL, _ffi.NULL)
        if n < 0:
            raise BitnetError(self._error())
        return out[:n].tolist()

    def tokenize(self, text, add_bos: bool = True, special: bool = False) -> list:
        """Text (str or bytes) -> token ids, with the C tokenizer compiled into the model."""
        data = text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else bytes(text)
        cap = len(data) + 8
        while True:
            out = np.empty(cap, dtype=np.int32)
            n = self.lib.bn_tokenize(data, len(data), int(add_bos), int(special),
                                     _ffi.cast("int32_t *", out.ctypes.data), cap)
            if n == -1:
                raise BitnetError(self._error())
            if n >= 0:
                return out[:n].tolist()
            cap = -n

    def detokenize(self, ids, special: bool = False) -> bytes:
        """Token ids -> the bytes they print as (may hold incomplete UTF-8 at the ends)."""
        a = np.ascontiguousarray(ids, dtype=np.int32)
        n = self.lib.bn_detokenize(_ffi.cast("int32_t *", a.ctypes.data), a.size, int(special), _ffi.NULL, 0)
        if n < 0:
            raise BitnetError(self._error())
        buf = _ffi.new("char[]", n + 1)
        self.lib.bn_detokenize(_ffi.cast("int32_t *", a.ctypes.data), a.size, int(special), buf, n + 1)
        return _ffi.buffer(buf, n)[:]

    def close(self):
        """Free the context (the library stays loaded for other contexts)."""
        if getattr(self, "_ctx", None) not in (None, _ffi.NULL):
            self.lib.bn_free(self._ctx)
            self._ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
