"""BitNetModel: text in, text out, over a model compiled for this machine.

    from bitnet_aot import BitNetModel
    model = BitNetModel.from_pretrained("model.gguf")     # compiles once, then cached
    out = model.generate("Explain quantum computing in simple terms:", max_tokens=100)
    print(out)                                  # a str: the continuation
    print(out.finish_reason, out.seed, len(out.tokens))   # "stop" | "length", the seed used, the ids
    outs = model.generate_batch(["What is machine learning?", "Define deep learning"], max_tokens=50)
    stream = model.stream("Hello", max_tokens=20)
    for piece in stream:
        print(piece, end="")
    print(stream.finish_reason)

`from_pretrained` takes a GGUF file (compiled on first use into the build cache,
``~/.cache/bitnet-aot/builds/<key>/``, shared with ``bitnet-aot tokenize``, ``perplexity``
and ``serve``; see ``bitnet_aot.build_cache``), a folder holding one GGUF, a compiled
shared library (``.so`` from ``bitnet-aot build --shared``) or a cache entry. Generation runs
in C (``bn_generate``: the sampler of the CLI and the server, so a seed gives the same text
everywhere); text is decoded incrementally so streamed pieces never split a UTF-8
character.

Sampling is seeded as in llama.cpp and the OpenAI API: without a seed (or with seed=-1)
every call draws a random one, returned as ``.seed``; a given seed reproduces the text
exactly. Arguments are checked as the compiled CLI checks its flags, with the same
messages (``ValueError`` for a value out of range, ``TypeError`` for a wrong type).

``generate`` returns a :class:`Completion`: a ``str`` (the text) that also carries
``.text``, ``.tokens`` (the generated ids), ``.finish_reason`` (``"stop"``: an
end-of-text token or a stop string; ``"length"``: max_tokens reached or the context
full, ``.context_full`` tells which), ``.seed`` and ``.prompt_tokens``.

``generate_batch`` decodes the prompts together (one context per prompt, batched matmuls);
results equal one ``generate`` call per prompt with the same seed.

Errors are ``BitnetError`` subclasses carrying the C side's message: ``CompileError``,
``LoadError``, ``ContextLengthError``, ``GenerationError``.
"""
from __future__ import annotations

import codecs
import json
import numbers
import os
import secrets
import threading

import numpy as np
from typing import Iterator, List, Optional, Sequence, Union

from ..errors import BitnetError
from .. import build_cache
from ..build_cache import cache_key, cache_root
from .api import _ffi, _load    # one cffi declaration and one loaded copy per library

__all__ = ["BitNetModel", "Completion", "Stream", "CompileError", "LoadError", "ContextLengthError",
           "GenerationError", "compile_cached", "cache_key", "cache_root"]


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------

class CompileError(BitnetError):
    """Compiling the GGUF for this machine failed (the message names the step)."""


class LoadError(BitnetError):
    """The compiled library could not be found, loaded or initialised."""


class ContextLengthError(BitnetError):
    """The prompt does not fit in the context (n_ctx)."""


class GenerationError(BitnetError):
    """bn_generate or the tokenizer failed; the message is bn_last_error()."""


# ------------------------------------------------------------------------------------------
# The C API (bitnet.h): declared in api.py
# ------------------------------------------------------------------------------------------

def _open_library(path: str):
    return _load(path, LoadError)


def compile_cached(gguf: str, cache_dir: Optional[str] = None, executable: bool = False, **build_opts) -> str:
    """The build cache's shared library (or static executable) of `gguf` for this machine,
    compiled on first use (bitnet_aot.build_cache). Raises CompileError."""
    try:
        return build_cache.compile_cached(gguf, cache_dir, executable=executable, **build_opts)
    except CompileError:
        raise
    except BitnetError as e:
        raise CompileError(str(e)) from None


# ------------------------------------------------------------------------------------------
# Argument checks: the ranges and messages of the compiled CLI (runtime_c/app/options.c)
# ------------------------------------------------------------------------------------------

N_PREDICT_MAX = 1 << 24
SEED_MAX = 2**63 - 1


def _int(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} expects an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {v}")
    return int(v)


def _float(name: str, v, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v:
        raise TypeError(f"{name} expects a number, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {v:g}")
    return float(v)


def _text(name: str, v) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str, got {type(v).__name__}")
    return v


def _stops(stop) -> List[str]:
    """stop: None, one string, or a list of strings (as in the OpenAI API)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, (bytes, bytearray)) or not isinstance(stop, (list, tuple)):
        raise TypeError(f"stop must be a str or a list of str, got {type(stop).__name__}")
    for x in stop:
        _text("stop", x)
    return [x for x in stop if x]


def _seed(seed) -> int:
    """None or -1: a fresh random seed (0..2^31-1, as the CLI draws); else the seed given."""
    if seed is None:
        return secrets.randbits(31)
    seed = _int("seed", seed, -1, SEED_MAX)
    return secrets.randbits(31) if seed == -1 else seed


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------

class Completion(str):
    """The result of generate(): the continuation as a ``str``, with the details of the run.

    text: the continuation (the same as ``str(self)``); tokens: the generated ids (the
    end-of-text token and the one that completed a stop string included); finish_reason:
    ``"stop"`` (an end-of-generation token or a stop string), ``"length"`` (max_tokens
    reached, or the context full: then context_full is True) or ``"cancelled"`` (a stream
    closed early); seed: the seed used; prompt_tokens: the prompt's token count."""

    tokens: List[int]
    finish_reason: str
    seed: int
    context_full: bool
    prompt_tokens: int

    def __new__(cls, text: str, tokens: Sequence[int] = (), finish_reason: str = "stop", seed: int = 0,
                context_full: bool = False, prompt_tokens: int = 0):
        self = super().__new__(cls, text)
        self.tokens, self.finish_reason, self.seed = list(tokens), finish_reason, seed
        self.context_full, self.prompt_tokens = context_full, prompt_tokens
        return self

    @property
    def text(self) -> str:
        """The continuation as a plain str."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return (f"Completion(text={self.text!r}, finish_reason={self.finish_reason!r}, "
                f"tokens=<{len(self.tokens)} ids>, seed={self.seed}, context_full={self.context_full})")

    def __reduce__(self):
        return (Completion, (self.text, self.tokens, self.finish_reason, self.seed, self.context_full,
                             self.prompt_tokens))


class Stream:
    """The iterator stream() returns: yields the continuation in text pieces; after the last
    one, ``.result`` is the :class:`Completion` (and ``.finish_reason``, ``.tokens``,
    ``.text`` are its). ``.seed`` is known from the start. close() (or leaving a ``with``
    block) stops generation early."""

    def __init__(self, pieces, seed: int):
        self._pieces, self.seed = pieces, seed
        self.result: Optional[Completion] = None

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as e:
            if e.value is not None:
                self.result = e.value
            raise StopIteration from None

    @property
    def finish_reason(self) -> Optional[str]:
        """"stop", "length" or "cancelled" once the stream has ended, None before."""
        return self.result.finish_reason if self.result is not None else None

    @property
    def tokens(self) -> Optional[List[int]]:
        """The generated ids once the stream has ended, None before."""
        return self.result.tokens if self.result is not None else None

    @property
    def text(self) -> Optional[str]:
        """The whole continuation once the stream has ended, None before."""
        return self.result.text if self.result is not None else None

    def close(self):
        """Stop generating (the pieces not read yet are dropped)."""
        self._pieces.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------------
# Text pieces: incremental UTF-8 decoding and stop strings
# ------------------------------------------------------------------------------------------

class _TextStream:
    """Turns generated ids into text pieces: decodes prompt+generated ids and takes the new
    bytes (so SentencePiece spaces come out as the CLI prints them), holds back incomplete
    UTF-8 characters and any tail that could still grow into a stop string."""

    def __init__(self, model: "BitNetModel", prompt_ids: List[int], stop: Sequence[str]):
        """stop: a list of strings (already checked by _stops)."""
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
    """A compiled model with the generation API of BitNet's documentation.

    library: a compiled shared library (usually from from_pretrained); n_threads: 1..256
    (default: the online cores, at most one per 32 MiB of weights: bn_default_threads);
    n_ctx: the context in tokens (default: the model's, capped at 4096; 0 = the model's
    trained context)."""

    def __init__(self, library: str, n_threads: Optional[int] = None, n_ctx: Optional[int] = None):
        self.library = os.path.abspath(library)
        if n_threads is not None:
            _int("n_threads", n_threads, 1, 256)
        if n_ctx is not None:
            _int("n_ctx", n_ctx, 0, 1 << 24)
        self.lib = _open_library(self.library)
        self.n_vocab = self.lib.bn_n_vocab()
        n_train = self.lib.bn_n_ctx_train()
        if n_ctx is not None and n_ctx > n_train:
            raise ValueError(f"n_ctx must be between 0 and {n_train}, got {n_ctx}")
        self.n_ctx = n_train if n_ctx == 0 else (n_ctx or min(n_train, 4096))
        self.n_threads = n_threads or self.lib.bn_default_threads()
        self._contexts: dict = {}          # idle contexts of generate_batch by thread count
        self._lock = threading.Lock()
        self._ctx = self._new_context(self.n_threads)
        self._ctx_lock = threading.Lock()  # one generate() at a time on the main context

    # ---- loading ----

    @classmethod
    def from_pretrained(cls, path_or_gguf: Union[str, "os.PathLike[str]"], n_threads: Optional[int] = None,
                        n_ctx: Optional[int] = None, cache_dir: Optional[str] = None, **build_opts) -> "BitNetModel":
        """Load a model: a GGUF file (compiled for this machine on first use, then cached),
        a folder holding one GGUF (or a compiled model.so), a compiled shared library, or
        a build-cache key, or a Hugging Face repository "org/name" holding a GGUF (resolved
        through huggingface_hub's cache, downloaded only when online; optional filename=,
        revision=, hub_cache_dir=). build_opts go to bitnet_aot.build.build (kernel=,
        weights=, ctx=, head=, embed=, kv=, ternarize=). Raises LoadError or CompileError."""
        if not isinstance(path_or_gguf, (str, os.PathLike)):
            raise TypeError(f"path_or_gguf must be a path, got {type(path_or_gguf).__name__}")
        if n_threads is not None:
            _int("n_threads", n_threads, 1, 256)
        if n_ctx is not None:
            _int("n_ctx", n_ctx, 0, 1 << 24)
        p = os.path.expanduser(os.fspath(path_or_gguf))
        hub_opts = {k: build_opts.pop(k, None) for k in ("filename", "revision", "hub_cache_dir")}
        from ..hub import looks_like_repo_id
        if looks_like_repo_id(p) and not os.path.isfile(os.path.join(cache_dir or cache_root(), os.path.basename(p),
                                                                     "model.so")):
            # "org/name": a GGUF from the Hugging Face Hub, through huggingface_hub's cache
            from ..hub import resolve
            try:
                p = resolve(p, filename=hub_opts["filename"], cache_dir=hub_opts["hub_cache_dir"],
                            revision=hub_opts["revision"])
            except BitnetError as e:
                raise LoadError(str(e)) from None
        if os.path.isdir(p):
            if os.path.isfile(os.path.join(p, "model.so")):
                return cls(os.path.join(p, "model.so"), n_threads, n_ctx)
            ggufs = sorted(f for f in os.listdir(p) if f.lower().endswith(".gguf")
                           and os.path.isfile(os.path.join(p, f)))
            if len(ggufs) != 1:
                raise LoadError(f"{p}: a folder with {'no' if not ggufs else len(ggufs)} .gguf files"
                                + (f" ({', '.join(ggufs)}); give the file's path" if ggufs else
                                   " (nor a compiled model.so); give a .gguf model or a compiled .so"))
            p = os.path.join(p, ggufs[0])
        if not os.path.isfile(p):
            key_dir = os.path.join(cache_dir or cache_root(), os.path.basename(p))
            if os.path.basename(p) and os.path.isfile(os.path.join(key_dir, "model.so")):
                return cls(os.path.join(key_dir, "model.so"), n_threads, n_ctx)
            raise LoadError(f"{p}: no such file or folder (give a .gguf model, a folder holding one, "
                            "a compiled .so or a cache key)")
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            return cls(compile_cached(p, cache_dir, **build_opts), n_threads, n_ctx)
        if magic in (b"\x7fELF", b"\xcf\xfa\xed\xfe") or p.endswith((".so", ".dylib")):
            return cls(p, n_threads, n_ctx)
        raise LoadError(f"{p}: neither a GGUF model nor a compiled shared library")

    @property
    def info(self) -> dict:
        """The build's provenance (bn_info_json): model, hashes, target, kernel, options."""
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
        """The token ids of `text`, by the C tokenizer compiled into the model (the one the
        binary runs). add_bos: start with BOS when the model asks for one; special: match
        special tokens such as <|eot_id|> written in the text."""
        data = _text("text", text).encode("utf-8", "surrogateescape")
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
        """The text of token ids (control tokens print as nothing; bytes that are not
        UTF-8 become U+FFFD)."""
        ids = list(ids)
        for i in ids:
            _int("token id", i, 0, self.n_vocab - 1)
        return self._detok_bytes(ids).decode("utf-8", "replace")

    # ---- generation ----

    def _sampling(self, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed):
        """The checked sampling settings (the CLI's ranges and messages) as a bn_sampling."""
        s = _ffi.new("bn_sampling *", self.lib.bn_sampling_default())
        s.temperature = _float("temperature", temperature, 0.0, 100.0)
        s.top_k = _int("top_k", top_k, 0, self.n_vocab)
        s.top_p = _float("top_p", top_p, 0.0, 1.0)
        s.min_p = _float("min_p", min_p, 0.0, 1.0)
        s.repeat_penalty = _float("repeat_penalty", repeat_penalty, 0.01, 100.0)
        s.repeat_last_n = _int("repeat_last_n", repeat_last_n, 0, 1 << 20)
        s.seed = seed
        return s

    def _prepare(self, prompt: str, max_tokens: int):
        """(prompt ids, tokens to generate at most, tokens asked for: None = until the end)."""
        _text("prompt", prompt)
        want = _int("max_tokens", max_tokens, -1, N_PREDICT_MAX)
        ids = self.tokenize(prompt)
        if not ids:
            raise GenerationError("the prompt is empty (and the model adds no BOS token)")
        if len(ids) >= self.n_ctx:
            raise ContextLengthError(f"the prompt has {len(ids)} tokens but the context holds {self.n_ctx} "
                                     f"(n_ctx); shorten the prompt or load with a larger n_ctx")
        room = self.n_ctx - len(ids)
        return ids, room if want == -1 else min(want, room), None if want == -1 else want

    def _finish(self, ts: "_TextStream", out_ids: List[int], n: int, want, ignore_eos: bool, seed: int,
                n_prompt: int, cancelled: bool = False) -> Completion:
        """The Completion of a run: why it ended, by the rules bn_generate stops by."""
        context_full = False
        if cancelled:
            reason = "cancelled"
        elif ts.stopped or (out_ids and not ignore_eos and self.lib.bn_is_eog(out_ids[-1])):
            reason = "stop"
        else:
            reason = "length"
            context_full = len(out_ids) == n and (want is None or n < want)
        return Completion(ts.text, out_ids, reason, seed, context_full, n_prompt)

    def _run(self, ctx, prompt: str, max_tokens: int, stop, ignore_eos: bool, on_piece, sampling,
             seed: int) -> Completion:
        """bn_generate with a callback that decodes text, applies stop strings and hands
        each new piece to on_piece (which returns True to stop)."""
        ids, n, want = self._prepare(prompt, max_tokens)
        ts = _TextStream(self, ids, stop)
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
        return self._finish(ts, list(out[0:got]), n, want, ignore_eos, seed, len(ids), state["cancel"])

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                 seed: Optional[int] = None, stop: Union[str, Sequence[str], None] = None,
                 ignore_eos: bool = False) -> Completion:
        """The continuation of `prompt` (without the prompt), as a Completion (a str with
        .tokens, .finish_reason, .seed). max_tokens -1: until end of text or the context is
        full. temperature 0 is greedy. seed None or -1: a random one (returned as .seed).
        stop: a string or a list of strings that end the text (not included)."""
        seed = _seed(seed)
        s = self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        stops = _stops(stop)
        with self._ctx_lock:
            return self._run(self._ctx, prompt, max_tokens, stops, ignore_eos, lambda piece: False, s, seed)

    def stream(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
               seed: Optional[int] = None, stop: Union[str, Sequence[str], None] = None,
               ignore_eos: bool = False) -> Stream:
        """generate() in pieces as they are generated (whole UTF-8 characters; joined, they
        equal generate()). Returns a Stream: iterate it for the pieces; afterwards its
        .finish_reason, .tokens and .result tell how it ended. Closing it stops generation.
        The arguments are checked here, before the first piece."""
        seed = _seed(seed)
        s = self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        stops = _stops(stop)
        _text("prompt", prompt)
        _int("max_tokens", max_tokens, -1, N_PREDICT_MAX)
        return Stream(self._stream(prompt, max_tokens, stops, ignore_eos, s, seed), seed)

    def _stream(self, prompt, max_tokens, stops, ignore_eos, s, seed) -> Iterator[str]:
        import queue
        q: "queue.Queue" = queue.Queue()
        closed = threading.Event()

        def on_piece(piece):
            q.put(("piece", piece))
            return closed.is_set()

        def worker():
            try:
                with self._ctx_lock:
                    result = self._run(self._ctx, prompt, max_tokens, stops, ignore_eos, on_piece, s, seed)
                q.put(("end", result))
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
                    return value
        finally:
            closed.set()
            t.join()

    def generate_batch(self, prompts: Sequence[str], max_tokens: int = 128, temperature: float = 0.8,
                       top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                       repeat_last_n: int = 64, seed: Optional[int] = None,
                       stop: Union[str, Sequence[str], None] = None, ignore_eos: bool = False) -> List[Completion]:
        """generate() for every prompt, decoded together: one context (KV cache) per prompt,
        and every decoding step is one bn_eval_batch call, so each weight tile is read once
        for all prompts (batched matmuls). Same C sampler as generate(): with a seed, every
        prompt uses it and the outputs equal sequential generate(seed=...) calls; without
        one, each prompt gets its own random seed (its Completion's .seed)."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a list of str, got {type(prompts).__name__}")
        prompts = list(prompts)
        if not prompts:
            return []
        seeds = [_seed(seed) for _ in prompts] if seed is None or seed == -1 else [_seed(seed)] * len(prompts)
        sampling = [self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, sd)
                    for sd in seeds]
        stops = _stops(stop)
        prepared = [self._prepare(p, max_tokens) for p in prompts]   # errors before any work
        bmax = int(self.info.get("batch", 8))      # the compiled batch size (BN_BATCH)
        out: List[Completion] = []
        for i in range(0, len(prompts), bmax):
            out += self._batch(prepared[i:i + bmax], sampling[i:i + bmax], seeds[i:i + bmax], stops, ignore_eos)
        return out

    def _batch(self, prepared, sampling, seeds, stops, ignore_eos) -> List[Completion]:
        V = self.lib.bn_n_vocab()
        ctxs = [self._new_context(self.n_threads) for _ in prepared]
        try:
            streams = [_TextStream(self, ids, stops) for ids, _, _ in prepared]
            hist = [list(ids) for ids, _, _ in prepared]
            rng = [_ffi.new("uint64_t *", self.lib.bn_rng_init(sd)) for sd in seeds]
            logits = np.empty((len(prepared), V), dtype=np.float32)
            for i, (ids, _, _) in enumerate(prepared):          # prompts: each its own prefill
                p = _ffi.new("int32_t[]", ids)
                if self.lib.bn_eval(ctxs[i], p, len(ids), _ffi.cast("float *", logits[i].ctypes.data), 1) != 0:
                    raise GenerationError(self._error())
            active = list(range(len(prepared)))
            gen: List[List[int]] = [[] for _ in prepared]
            while active:
                step = []                                     # (sequence, token) still going
                for i in active:
                    h = _ffi.new("int32_t[]", hist[i])
                    tok = self.lib.bn_sample(_ffi.cast("float *", logits[i].ctypes.data), sampling[i], h,
                                             len(hist[i]), rng[i])
                    if tok < 0:
                        raise GenerationError(self._error())
                    hist[i].append(tok)
                    gen[i].append(tok)
                    streams[i].push(tok)
                    # the same stopping rules, in the same order, as bn_generate
                    if streams[i].stopped or (not ignore_eos and self.lib.bn_is_eog(tok)) \
                            or len(gen[i]) == prepared[i][1] or self.lib.bn_pos(ctxs[i]) >= self.lib.bn_n_ctx(ctxs[i]):
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
            return [self._finish(ts, gen[i], prepared[i][1], prepared[i][2], ignore_eos, seeds[i],
                                 len(prepared[i][0])) for i, ts in enumerate(streams)]
        finally:
            del ctxs                                          # freed by their ffi.gc finalizers

    def __repr__(self):
        return f"BitNetModel({self.library!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"
