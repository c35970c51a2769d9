#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris) of the GGUF importer and the Hugging Face converter.

    python3 fuzz/fuzz_importer.py [-max_total_time=60] [-seed=1] [CORPUS_DIR ...]

The contract under test (issue 9): every input ends in a model description or a
`bitnet_aot.errors.BitnetError` with a one-line message -- never another exception, a hang,
or memory use beyond a fixed multiple of the input size.

One fuzz input is one of two things, chosen by its first byte:

  * even first byte: the rest is a GGUF file. It goes through `GGUFFile` and `load_gguf`.
  * odd first byte:  an HF checkpoint directory, serialised as
        u32 len + config.json, u32 len + tokenizer.json, the rest = model.safetensors
    It goes through `convert_hf(dir, out, out_type)` (out_type from the first byte).

Bounds, per input: an address-space limit (`RLIMIT_AS`) of the process's size before the
input + MEM_BASE + MEM_PER_BYTE x input size, and a wall-clock limit of TIME_LIMIT seconds
(SIGALRM). Exceeding either is a crash, and so is a BitnetError that says memory ran out
(load_gguf turns MemoryError into one).

Without arguments naming a corpus, a seed corpus is generated in fuzz/corpus/importer/ from
the test-model factory (several arch x type x tokenizer files) and a tiny packed HF
checkpoint. Crashes are written by libFuzzer to fuzz/crashers/importer/ (-artifact_prefix)
and replayed by tests/test_fuzz.py with `check_input`.
"""
from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_DIR = os.path.join(HERE, "corpus", "importer")
CRASH_DIR = os.path.join(HERE, "crashers", "importer")

MEM_BASE = 256 << 20         # bytes of address space any input may use
MEM_PER_BYTE = 64            # ... plus this many per input byte
TIME_LIMIT = 10              # seconds per input
OUT_TYPES = ("f16", "tq2_0", "tq1_0", "i2_s")


class Hang(BaseException):
    """Raised by the SIGALRM handler: the input ran over TIME_LIMIT (BaseException so that
    no `except Exception` in the code under test swallows it)."""


class ContractViolation(AssertionError):
    pass


def _import_targets(instrument: bool):
    global BitnetError, GGUFFile, load_gguf, convert
    if instrument:
        import atheris
        with atheris.instrument_imports(include=["bitnet_aot"]):
            import bitnet_aot.convert as convert
            import bitnet_aot.gguf_file
            import bitnet_aot.gguf_import
    import bitnet_aot.convert as convert  # noqa: F811
    from bitnet_aot.errors import BitnetError  # noqa: F811
    from bitnet_aot.gguf_file import GGUFFile  # noqa: F811
    from bitnet_aot.gguf_import import load_gguf  # noqa: F811


BitnetError = GGUFFile = load_gguf = convert = None


# ---------------------------------------------------------------------------------------
# Input encoding
# ---------------------------------------------------------------------------------------
def encode_hf(config: bytes, tokenizer_json: bytes, safetensors: bytes, out_type: int = 0) -> bytes:
    """An HF-checkpoint fuzz input (see the module doc)."""
    return (bytes([1 + 2 * out_type]) + struct.pack("<I", len(config)) + config
            + struct.pack("<I", len(tokenizer_json)) + tokenizer_json + safetensors)


def decode_hf(data: bytes):
    """-> (out_type, config, tokenizer_json, safetensors); lengths past the end are clipped."""
    out_type = OUT_TYPES[(data[0] >> 1) % len(OUT_TYPES)]
    pos, parts = 1, []
    for _ in range(2):
        n = struct.unpack_from("<I", data, pos)[0] if pos + 4 <= len(data) else 0
        pos = min(pos + 4, len(data))
        parts.append(data[pos:pos + n])
        pos = min(pos + n, len(data))
    return out_type, parts[0], parts[1], data[pos:]


# ---------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------
def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


class _Bounded:
    """Address-space and time limits for one input (restored afterwards)."""

    def __init__(self, nbytes: int, time_limit: float = TIME_LIMIT):
        self.limit = _vm_size() + MEM_BASE + MEM_PER_BYTE * nbytes
        self.time_limit = time_limit

    def __enter__(self):
        self.old_rlimit = resource.getrlimit(resource.RLIMIT_AS)
        hard = self.old_rlimit[1]
        soft = self.limit if hard == resource.RLIM_INFINITY else min(self.limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

        def on_alarm(signum, frame):
            raise Hang(f"input took more than {self.time_limit} s")
        self.old_handler = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.time_limit)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old_handler)
        resource.setrlimit(resource.RLIMIT_AS, self.old_rlimit)
        return False


# ---------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------
def _check_error(e) -> None:
    msg = str(e)
    if "\n" in msg or not msg.strip():
        raise ContractViolation(f"BitnetError message is not one non-empty line: {msg!r}")
    if "not enough memory" in msg:
        raise ContractViolation(f"memory bound exceeded ({MEM_BASE >> 20} MiB + "
                                f"{MEM_PER_BYTE} x input): {msg}")


def _run_gguf(path: str) -> None:
    try:
        g = GGUFFile(path)
        g.close()
    except BitnetError as e:
        _check_error(e)
        return
    try:
        load_gguf(path, ternarize=False, hash_file=False)
    except BitnetError as e:
        _check_error(e)
    try:
        load_gguf(path, ternarize=True, hash_file=False)
    except BitnetError as e:
        _check_error(e)


def _run_hf(tmp: str, data: bytes) -> None:
    out_type, cfg, tj, st = decode_hf(data)
    d = os.path.join(tmp, "hf")
    os.mkdir(d)
    for name, blob in (("config.json", cfg), ("tokenizer.json", tj), ("model.safetensors", st)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob)
    try:
        convert.convert_hf(d, os.path.join(tmp, "out.gguf"), out_type)
    except BitnetError as e:
        _check_error(e)


def check_input(data: bytes, time_limit: float = TIME_LIMIT) -> None:
    """Runs one input through the importer or the converter. Returns normally when the
    contract holds; raises (anything but BitnetError, or ContractViolation / Hang) if not."""
    if BitnetError is None:
        _import_targets(instrument=False)
    if not data:
        return
    tmp = tempfile.mkdtemp(prefix="bnfuzz-")
    try:
        with _Bounded(len(data), time_limit):
            if data[0] % 2 == 0:
                path = os.path.join(tmp, "in.gguf")
                with open(path, "wb") as f:
                    f.write(data[1:])
                _run_gguf(path)
            else:
                _run_hf(tmp, data)
    except MemoryError:
        raise ContractViolation(f"MemoryError: memory bound exceeded ({MEM_BASE >> 20} MiB + "
                                f"{MEM_PER_BYTE} x {len(data)} bytes)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------
def tiny_hf_checkpoint(E=64, F=128, H=2, Hkv=1, seed=0):
    """A tiny packed BitNet checkpoint: (config bytes, tokenizer.json bytes, safetensors bytes)."""
    rng = np.random.default_rng(seed)
    b2u = convert.bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["Ġt"], vocab["he"], vocab["Ġthe"] = 256, 257, 258
    V = 262
    tj = {"model": {"type": "BPE", "vocab": vocab, "merges": ["Ġ t", "h e", "Ġt he"]},
          "added_tokens": [{"id": 259, "content": "<|begin_of_text|>", "special": True},
                           {"id": 260, "content": "<|end_of_text|>", "special": True},
                           {"id": 261, "content": "<|eot_id|>", "special": True}],
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": convert._LLAMA3_REGEX}, "behavior": "Isolated",
               "invert": False},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}
    cfg = {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
           "hidden_size": E, "intermediate_size": F, "num_hidden_layers": 1, "num_attention_heads": H,
           "num_key_value_heads": Hkv, "vocab_size": V, "max_position_embeddings": 64,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
           "bos_token_id": 259, "eos_token_id": [260, 261],
           "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear"}}
    kv = E // H * Hkv
    t = {"model.embed_tokens.weight": rng.standard_normal((V, E)).astype(np.float16),
         "model.norm.weight": np.ones(E, np.float32)}
    p = "model.layers.0."
    for n, (o, i) in (("self_attn.q_proj", (E, E)), ("self_attn.k_proj", (kv, E)),
                      ("self_attn.v_proj", (kv, E)), ("self_attn.o_proj", (E, E)),
                      ("mlp.gate_proj", (F, E)), ("mlp.up_proj", (F, E)), ("mlp.down_proj", (E, F))):
        codes = rng.integers(0, 3, size=(4, o // 4, i)).astype(np.uint8)
        t[p + n + ".weight"] = codes[0] | (codes[1] << 2) | (codes[2] << 4) | (codes[3] << 6)
        t[p + n + ".weight_scale"] = np.array([0.5 + rng.random()], np.float32)
    for n, k in (("input_layernorm", E), ("post_attention_layernorm", E), ("self_attn.attn_sub_norm", E),
                 ("mlp.ffn_sub_norm", F)):
        t[p + n + ".weight"] = np.ones(k, np.float32)
    tmp = tempfile.mkdtemp(prefix="bnfuzz-seed-")
    try:
        path = os.path.join(tmp, "model.safetensors")
        convert.save_safetensors(path, t)
        st = open(path, "rb").read()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.dumps(cfg).encode(), json.dumps(tj).encode(), st


def make_seed_corpus(corpus_dir: str = CORPUS_DIR) -> list:
    """Writes the seed inputs (small factory GGUFs of several shapes, a tiny HF checkpoint in
    each output type) into corpus_dir; returns their paths."""
    if convert is None:
        _import_targets(instrument=False)
    from bitnet_aot.factory import make_test_model
    os.makedirs(corpus_dir, exist_ok=True)
    paths = []
    tmp = tempfile.mkdtemp(prefix="bnfuzz-seed-")
    try:
        specs = [("bitnet-b1.58", "tq2_0", "spm"), ("bitnet-25", "tq1_0", "bpe"),
                 ("bitnet", "i2_s", "spm"), ("llama", "f16", "bpe"), ("bitnet", "tq2_0", None)]
        for k, (arch, pt, tok) in enumerate(specs):
            g = os.path.join(tmp, f"{k}.gguf")
            kw = dict(n_embd=256, n_layer=1, n_ff=256, n_head=2, n_head_kv=1, n_vocab=300,
                      n_ctx=64, tokenizer=tok, seed=k, proj_scales=(arch == "bitnet"))
            if pt in ("f16",):
                kw.update(n_embd=64, n_ff=128)
            make_test_model(g, arch, pt, **kw)
            p = os.path.join(corpus_dir, f"seed-gguf-{arch}-{pt}-{tok}")
            with open(p, "wb") as f:
                f.write(b"\x00" + open(g, "rb").read())
            paths.append(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg, tj, st = tiny_hf_checkpoint()
    for k in range(len(OUT_TYPES)):
        p = os.path.join(corpus_dir, f"seed-hf-{OUT_TYPES[k]}")
        with open(p, "wb") as f:
            f.write(encode_hf(cfg, tj, st, k))
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------
# atheris entry point
# ---------------------------------------------------------------------------------------
def crash_signature(exc: BaseException) -> str:
    """Exception type + the innermost bitnet_aot frame (file:line): one bug, one signature."""
    import traceback
    where = "?"
    for fr in traceback.extract_tb(exc.__traceback__):
        if os.sep + "compiler" + os.sep in fr.filename or "bitnet_aot" in fr.filename:
            where = f"{os.path.basename(fr.filename)}:{fr.lineno}"
    return f"{type(exc).__name__}@{where}"


def known_signatures(crash_dir: str = CRASH_DIR) -> dict:
    """Signature -> crasher file, for the crashers already saved (replayed once)."""
    out = {}
    if os.path.isdir(crash_dir):
        for name in sorted(os.listdir(crash_dir)):
            try:
                check_input(open(os.path.join(crash_dir, name), "rb").read())
            except BaseException as e:  # noqa: BLE001 - any failure is a signature
                out.setdefault(crash_signature(e), name)
    return out


_KNOWN = {}
_CONTINUE = os.environ.get("BNFUZZ_CONTINUE") == "1"


def TestOneInput(data: bytes) -> None:
    """A crash whose signature is already saved in CRASH_DIR is a known bug: not reported
    again (so a bounded run keeps looking for new ones). A new one is reported (libFuzzer
    saves the input and stops), or with BNFUZZ_CONTINUE=1 saved here and the run goes on."""
    try:
        check_input(data)
    except BaseException as e:  # noqa: BLE001
        sig = crash_signature(e)
        if sig in _KNOWN:
            return
        if not _CONTINUE:
            raise
        import hashlib
        name = "crash-" + hashlib.sha1(data).hexdigest()
        with open(os.path.join(CRASH_DIR, name), "wb") as f:
            f.write(data)
        _KNOWN[sig] = name
        print(f"\n== new crash {sig}: saved {name}: {str(e)[:200]!r}", file=sys.stderr, flush=True)


def main(argv) -> None:
    import atheris
    _import_targets(instrument=True)
    args = list(argv)
    if not any(not a.startswith("-") for a in args[1:]):
        make_seed_corpus(CORPUS_DIR)
        args.append(CORPUS_DIR)
    os.makedirs(CRASH_DIR, exist_ok=True)
    _KNOWN.update(known_signatures(CRASH_DIR))
    print(f"== {len(_KNOWN)} known crash signatures: {sorted(_KNOWN)}", file=sys.stderr)
    if not any(a.startswith("-artifact_prefix=") for a in args):
        args.insert(1, "-artifact_prefix=" + CRASH_DIR + os.sep)
    if not any(a.startswith("-max_len=") for a in args):
        args.insert(1, "-max_len=1048576")
    if not any(a.startswith("-rss_limit_mb=") for a in args):
        args.insert(1, "-rss_limit_mb=4096")
    if not any(a.startswith("-timeout=") for a in args):
        args.insert(1, f"-timeout={TIME_LIMIT * 3}")
    atheris.Setup(args, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
