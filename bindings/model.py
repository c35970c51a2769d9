"""BitNetModel: text in, text out, over a model compiled for this machine.

    from bitnet_aot import BitNetModel
    model = BitNetModel.from_pretrained("model.gguf")     # compiles once, then cached
    print(model.generate("Explain quantum computing in simple terms:", max_tokens=100))
    outs = model.generate_batch(["What is machine learning?", "Define deep learning"], max_tokens=50)
    for piece in model.stream("Hello", max_tokens=20):
        print(piece, end="")

`from_pretrained` takes a GGUF file (compiled on first use into
``~/.cache/bitnet-aot/builds/<key>/``, the key being a hash of the GGUF's SHA-256, the
bitnet-aot version, the target and the build options), a compiled shared library (``.so``
from ``bitnet-aot build --shared``) or a cache directory. Generation runs in C
(``bn_generate``: the sampler of the CLI and the server, so a seed gives the same text
everywhere); text is decoded incrementally so streamed pieces never split a UTF-8
character.

``generate_batch`` runs the prompts at the same time, each in its own context (KV cache)
over the shared weights, one OS thread each (the C call releases the GIL); results equal
one ``generate`` call per prompt for any sampling settings. It does not yet share the
matmuls between prompts: that needs a batched decode step in the C API (see
``generate_batch``).

Errors are ``BitnetError`` subclasses carrying the C side's message: ``CompileError``,
``LoadError``, ``ContextLengthError``, ``GenerationError``.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import sys
import threading
import time

import numpy as np
from typing import Iterator, List, Optional, Sequence

from ..errors import BitnetError
from .api import _ffi, _load    # one cffi declaration and one loaded copy per library


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------

class CompileError(BitnetError):
    """Compiling the GGUF for this machine failed (the message names the step)."""


class LoadError(BitnetError):
    """The compiled library could not be loaded or initialised."""


class ContextLengthError(BitnetError):
    """The prompt does not fit in the context (n_ctx)."""


class GenerationError(BitnetError):
    """bn_generate or the tokenizer failed; the message is bn_last_error()."""


# ------------------------------------------------------------------------------------------
# The C API (bitnet.h): declared in api.py
# ------------------------------------------------------------------------------------------

def _open_library(path: str):
    return _load(path, LoadError)


# ------------------------------------------------------------------------------------------
# The build cache
# ------------------------------------------------------------------------------------------

def cache_root() -> str:
    return os.environ.get("BITNET_AOT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bitnet-aot", "builds")


def cache_key(gguf_sha256: str, build_opts: dict) -> str:
    """The build directory's name: GGUF hash, bitnet-aot version, target and options."""
    from .. import __version__
    from ..build import source_fingerprint
    from ..targets import load_target
    target = load_target("host")
    desc = json.dumps({"gguf": gguf_sha256, "bitnet_aot": __version__, "sources": source_fingerprint(),
                       "target": target.name,
                       "opts": {k: build_opts[k] for k in sorted(build_opts)}}, sort_keys=True, default=str)
    return hashlib.sha256(desc.encode()).hexdigest()[:24]


class _Progress:
    """One status line on stderr, redrawn with the elapsed time while a compile runs."""

    def __init__(self, what: str):
        self.what, self.step, self.t0 = what, "starting", time.time()
        self.done = threading.Event()
        self.tty = sys.stderr.isatty()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def log(self, line: str):
        self.step = line.split(" (")[0][:60]
        if not self.tty:
            print(f"  {line}", file=sys.stderr)

    def _draw(self, final=""):
        spin = "|/-\\"[int((time.time() - self.t0) * 4) % 4] if not final else final
        sys.stderr.write(f"\r{self.what}: {spin} {time.time() - self.t0:5.1f} s  {self.step:<60}")
        sys.stderr.flush()

    def _run(self):
        while not self.done.wait(0.25):
            self._draw()

    def __enter__(self):
        print(f"{self.what} (first use; cached afterwards)", file=sys.stderr)
        if self.tty:
            self.thread.start()
        return self

    def __exit__(self, exc_type, *a):
        self.done.set()
        if self.tty:
            self.thread.join()
            self._draw("failed" if exc_type else "done")
            sys.stderr.write("\n")
        else:
            print(f"{self.what}: {'failed' if exc_type else 'done'} in {time.time() - self.t0:.1f} s", file=sys.stderr)


def compile_cached(gguf: str, cache_dir: Optional[str] = None, executable: bool = False, **build_opts) -> str:
    """The shared library (or, with executable=True, the static program, e.g. for
    `bitnet-aot serve model.gguf`) for `gguf` on this machine: built once, then reused."""
    from ..gguf_import import file_sha256
    from ..build import build
    sha = file_sha256(gguf)
    opts = dict(build_opts, executable=True) if executable else dict(build_opts)
    d = os.path.join(cache_dir or cache_root(), cache_key(sha, opts))
    name = "model" if executable else "model.so"
    out = os.path.join(d, name)
    if os.path.isfile(out):
        return out
    os.makedirs(d, exist_ok=True)
    import fcntl
    with open(os.path.join(d, ".lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)          # another process may be building it
        if os.path.isfile(out):
            return out
        with _Progress(f"compiling {os.path.basename(gguf)} for this machine into {d}") as p:
            try:
                build(gguf, "host", out + ".tmp", shared=not executable,
                      build_dir=os.path.join(d, "build"), log=p.log, **build_opts)
            except BitnetError as e:
                raise CompileError(str(e)) from None
        with open(os.path.join(d, "source.json"), "w") as f:
            json.dump({"gguf": os.path.abspath(gguf), "sha256": sha, "options": opts}, f, default=str)
        os.replace(out + ".tmp", out)
    return out


# ------------------------------------------------------------------------------------------
# Text pieces: incremental UTF-8 decoding and stop strings
# ------------------------------------------------------------------------------------------

class _TextStream:
    """Turns generated ids into text pieces: decodes prompt+generated ids and takes the new
    bytes (so SentencePiece spaces come out as the CLI prints them), holds back incomplete
    UTF-8 characters and any tail that could still grow into a stop string."""

    def __init__(self, model: "BitNetModel", prompt_ids: List[int], stop: Sequence[str]):
        self.model, self.prompt = model, list(prompt_ids)
        self.ids: List[int] = []
        self.n_prefix = len(model._detok_bytes(self.prompt))
        self.n_bytes = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = [s for s in stop if s]
        self.text = ""       # decoded so far (cut at a stop string)
        self.sent = 0        # characters of text already handed out
        self.stopped = False

    def push(self, token: int) -> str:
        """Adds one token; returns the text that is now final."""
        self.ids.append(token)
        full = self.model._detok_bytes(self.prompt + self.ids)
        new = full[self.n_prefix + self.n_bytes:]
        self.n_bytes += len(new)
        self._add(self.decoder.decode(new))
        return self._ready(final=self.stopped)

    def finish(self) -> str:
        if not self.stopped:
            self._add(self.decoder.decode(b"", final=True))
        return self._ready(final=True)

    def _add(self, s: str):
        if self.stopped or not s:
            return
        start = max(0, len(self.text) - max((len(x) for x in self.stop), default=0))
        self.text += s
        cut = [i for i in (self.text.find(x, start) for x in self.stop) if i >= 0]
        if cut:
            self.text = self.text[:min(cut)]
            self.stopped = True

    def _ready(self, final: bool) -> str:
        end = len(self.text)
        if not final:
            for x in self.stop:          # hold back a tail that may become a stop string
                for k in range(min(len(x) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(x[:k]):
                        end = min(end, len(self.text) - k)
                        break
        piece, self.sent = self.text[self.sent:max(end, self.sent)], max(end, self.sent)
        return piece


# ------------------------------------------------------------------------------------------
# BitNetModel
# ------------------------------------------------------------------------------------------

class BitNetModel:
    """A compiled model with the generation API of BitNet's documentation."""

    def __init__(self, library: str, n_threads: Optional[int] = None, n_ctx: Optional[int] = None):
        self.library = os.path.abspath(library)
        self.lib = _open_library(self.library)
        self.n_vocab = self.lib.bn_n_vocab()
        self.n_ctx = n_ctx or min(self.lib.bn_n_ctx_train(), 4096)
        self.n_threads = n_threads or os.cpu_count() or 1
        self._contexts: dict = {}          # idle contexts of generate_batch by thread count
        self._lock = threading.Lock()
        self._ctx = self._new_context(self.n_threads)
        self._ctx_lock = threading.Lock()  # one generate() at a time on the main context

    # ---- loading ----

    @classmethod
    def from_pretrained(cls, path_or_gguf: str, n_threads: Optional[int] = None, n_ctx: Optional[int] = None,
                        cache_dir: Optional[str] = None, **build_opts) -> "BitNetModel":
        """A GGUF file (compiled for this machine on first use, then cached), a compiled
        shared library, or a cache directory holding model.so. build_opts go to
        bitnet_aot.build.build (kernel=, weights=, ctx=, ternarize=)."""
        p = os.path.expanduser(str(path_or_gguf))
        if os.path.isdir(p) and os.path.isfile(os.path.join(p, "model.so")):
            return cls(os.path.join(p, "model.so"), n_threads, n_ctx)
        if not os.path.isfile(p):
            key_dir = os.path.join(cache_dir or cache_root(), os.path.basename(p))
            if os.path.isfile(os.path.join(key_dir, "model.so")):
                return cls(os.path.join(key_dir, "model.so"), n_threads, n_ctx)
            raise LoadError(f"{p}: no such file (give a .gguf model, a compiled .so or a cache key)")
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            return cls(compile_cached(p, cache_dir, **build_opts), n_threads, n_ctx)
        if magic == b"\x7fELF" or p.endswith((".so", ".dylib")):
            return cls(p, n_threads, n_ctx)
        raise LoadError(f"{p}: neither a GGUF model nor a compiled shared library")

    @property
    def info(self) -> dict:
        return json.loads(_ffi.string(self.lib.bn_info_json()).decode())

    def _error(self) -> str:
        return _ffi.string(self.lib.bn_last_error()).decode("utf-8", "replace")

    def _new_context(self, n_threads: int):
        c = self.lib.bn_create(self.n_ctx, n_threads)
        if c == _ffi.NULL:
            raise LoadError(self._error())
        return _ffi.gc(c, self.lib.bn_free)

    # ---- text ----

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> List[int]:
        data = text.encode("utf-8", "surrogateescape")
        cap = len(data) + 8
        while True:
            out = _ffi.new("int32_t[]", cap)
            n = self.lib.bn_tokenize(data, len(data), int(add_bos), int(special), out, cap)
            if n == -1:
                raise GenerationError(self._error())
            if n >= 0:
                return list(out[0:n])
            cap = -n

    def _detok_bytes(self, ids: Sequence[int]) -> bytes:
        arr = _ffi.new("int32_t[]", list(ids)) if ids else _ffi.NULL
        n = self.lib.bn_detokenize(arr, len(ids), 0, _ffi.NULL, 0)
        if n < 0:
            raise GenerationError(self._error())
        buf = _ffi.new("char[]", n + 1)
        self.lib.bn_detokenize(arr, len(ids), 0, buf, n + 1)
        return _ffi.buffer(buf, n)[:]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._detok_bytes(ids).decode("utf-8", "replace")

    # ---- generation ----

    def _sampling(self, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed):
        s = _ffi.new("bn_sampling *", self.lib.bn_sampling_default())
        s.temperature, s.top_k, s.top_p, s.min_p = temperature, top_k, top_p, min_p
        s.repeat_penalty, s.repeat_last_n, s.seed = repeat_penalty, repeat_last_n, seed & (2**64 - 1)
        return s

    def _prepare(self, prompt: str, max_tokens: int):
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        ids = self.tokenize(prompt)
        if not ids:
            raise GenerationError("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise ContextLengthError(f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx} "
                                     f"(n_ctx); shorten the prompt or load with a larger n_ctx")
        return ids, min(max_tokens, self.n_ctx - len(ids))

    def _run(self, ctx, prompt: str, max_tokens: int, stop, ignore_eos: bool, on_piece, sampling) -> str:
        """bn_generate with a callback that decodes text, applies stop strings and hands
        each new piece to on_piece (which returns True to stop)."""
        ids, n = self._prepare(prompt, max_tokens)
        ts = _TextStream(self, ids, list(stop or []))
        state = {"cancel": False, "error": None}

        @_ffi.callback("int(void *, int32_t)")
        def on_token(_user, token):
            try:
                piece = ts.push(token)
                if piece and on_piece(piece):
                    state["cancel"] = True
                return int(ts.stopped or state["cancel"])
            except BaseException as e:        # never let an exception cross into C
                state["error"] = e
                return 1

        out = _ffi.new("int32_t[]", max(n, 1))
        p = _ffi.new("int32_t[]", ids)
        self.lib.bn_reset(ctx)
        got = self.lib.bn_generate(ctx, p, len(ids), n, sampling, int(ignore_eos), out, on_token, _ffi.NULL)
        if state["error"] is not None:
            raise state["error"]
        if got < 0:
            raise GenerationError(self._error())
        if not state["cancel"]:
            tail = ts.finish()
            if tail:
                on_piece(tail)
        return ts.text

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                 seed: int = 42, stop: Optional[Sequence[str]] = None, ignore_eos: bool = False) -> str:
        """The continuation of `prompt` (without the prompt). temperature 0 is greedy."""
        s = self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        with self._ctx_lock:
            return self._run(self._ctx, prompt, max_tokens, stop, ignore_eos, lambda piece: False, s)

    def stream(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
               seed: int = 42, stop: Optional[Sequence[str]] = None, ignore_eos: bool = False) -> Iterator[str]:
        """Yields the continuation in pieces as it is generated (whole UTF-8 characters;
        joined, they equal generate()). Closing the iterator early stops generation."""
        import queue
        s = self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        q: "queue.Queue" = queue.Queue()
        closed = threading.Event()

        def on_piece(piece):
            q.put(("piece", piece))
            return closed.is_set()

        def worker():
            try:
                with self._ctx_lock:
                    self._run(self._ctx, prompt, max_tokens, stop, ignore_eos, on_piece, s)
                q.put(("end", None))
            except BaseException as e:
                q.put(("error", e))

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        try:
            while True:
                kind, value = q.get()
                if kind == "piece":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            closed.set()
            t.join()

    def generate_batch(self, prompts: Sequence[str], max_tokens: int = 128, temperature: float = 0.8,
                       top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                       repeat_last_n: int = 64, seed: int = 42, stop: Optional[Sequence[str]] = None,
                       ignore_eos: bool = False) -> List[str]:
        """generate() for every prompt, decoded together: one context (KV cache) per prompt,
        and every decoding step is one bn_eval_batch call, so each weight tile is read once
        for all prompts (batched matmuls). Same C sampler and the same per-prompt seed as
        generate(), so the outputs equal sequential generate() calls."""
        prompts = list(prompts)
        if not prompts:
            return []
        prepared = [self._prepare(p, max_tokens) for p in prompts]   # errors before any work
        bmax = int(self.info.get("batch", 8))      # the compiled batch size (BN_BATCH)
        if len(prompts) > bmax:
            return [t for i in range(0, len(prompts), bmax)
                    for t in self.generate_batch(prompts[i:i + bmax], max_tokens, temperature, top_k, top_p, min_p,
                                                 repeat_penalty, repeat_last_n, seed, stop, ignore_eos)]
        s = self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        V = self.lib.bn_n_vocab()
        ctxs = [self._new_context(self.n_threads) for _ in prompts]
        try:
            streams = [_TextStream(self, ids, list(stop or [])) for ids, _ in prepared]
            hist = [list(ids) for ids, _ in prepared]
            rng = [_ffi.new("uint64_t *", self.lib.bn_rng_init(seed)) for _ in prompts]
            logits = np.empty((len(prompts), V), dtype=np.float32)
            for i, (ids, _) in enumerate(prepared):          # prompts: each its own prefill
                p = _ffi.new("int32_t[]", ids)
                if self.lib.bn_eval(ctxs[i], p, len(ids), _ffi.cast("float *", logits[i].ctypes.data), 1) != 0:
                    raise GenerationError(self._error())
            active = list(range(len(prompts)))
            n_gen = [0] * len(prompts)
            while active:
                step = []                                     # (sequence, token) still going
                for i in active:
                    h = _ffi.new("int32_t[]", hist[i])
                    tok = self.lib.bn_sample(_ffi.cast("float *", logits[i].ctypes.data), s, h, len(hist[i]), rng[i])
                    if tok < 0:
                        raise GenerationError(self._error())
                    hist[i].append(tok)
                    n_gen[i] += 1
                    streams[i].push(tok)
                    # the same stopping rules, in the same order, as bn_generate
                    if streams[i].stopped or (not ignore_eos and self.lib.bn_is_eog(tok)) \
                            or n_gen[i] == prepared[i][1] or self.lib.bn_pos(ctxs[i]) >= self.lib.bn_n_ctx(ctxs[i]):
                        continue
                    step.append((i, tok))
                active = [i for i, _ in step]
                if step:
                    cs = _ffi.new("bn_context *[]", [ctxs[i] for i in active])
                    toks = _ffi.new("int32_t[]", [t for _, t in step])
                    out = np.empty((len(step), V), dtype=np.float32)
                    if self.lib.bn_eval_batch(cs, toks, len(step), _ffi.cast("float *", out.ctypes.data)) != 0:
                        raise GenerationError(self._error())
                    for row, i in enumerate(active):
                        logits[i] = out[row]
            for ts in streams:
                ts.finish()
            return [ts.text for ts in streams]
        finally:
            del ctxs                                          # freed by their ffi.gc finalizers

    def __repr__(self):
        return f"BitNetModel({self.library!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"
