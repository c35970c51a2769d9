"""The `bitnet-aot` command line.

Every failure a user can cause ends in one line `error: ...` on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from . import __version__
from .errors import BitnetError

MATRIX_CHOICES = ("auto", "f32", "f16", "q8", "q6", "q4")   # = pack.MATRIX_CHOICES (pack imports numpy)
KV_TYPES = ("f16", "f32", "q8")                               # = codegen.KV_TYPES


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


# -- inspect ------------------------------------------------------------------------------
def _c_tokenizer_support(tok) -> str:
    """'yes', or why the C tokenizer cannot run it (a build then needs --no-tokenizer)."""
    from .tokenizer_pack import TokenizerPackError, pack_tokenizer
    try:
        pack_tokenizer(tok)
        return "yes"
    except TokenizerPackError as e:
        return f"no: {e}"


def inspect_report(path: str, ternarize: bool) -> dict:
    from .gguf_file import GGUFFile
    from .gguf_import import load_gguf
    from .pack import padded_k

    g = GGUFFile(path)
    tensors = [{"name": t.name, "shape": list(t.ne), "type": t.type_name, "bytes": t.nbytes}
               for t in g.tensors.values()]
    kv_small = {k: (v if not isinstance(v, (list,)) else f"[{len(v)} items]")
                for k, v in g.kv.items() if not hasattr(v, "dtype")}
    # type ids whose layout depends on the writer: which reading was chosen, and why
    readings = []
    for reason in sorted({t.reading_reason for t in g.tensors.values() if t.reading_reason}):
        ts = [t for t in g.tensors.values() if t.reading_reason == reason]
        sc = [t.reading_scale for t in ts if t.reading_scale is not None]
        extra = f"; scale trailers {min(sc):.4g} .. {max(sc):.4g}" if sc else ""
        readings.append(f"{reason}: {len(ts)} tensor{'s' if len(ts) != 1 else ''}{extra}")
    g.close()
    try:
        m = load_gguf(path, ternarize=ternarize)
    except BitnetError as e:
        if "--ternarize" not in str(e):
            raise
        # Not a ternary model: still show it, and say what building it would take.
        m = load_gguf(path, ternarize=True)
        m.warnings = [f"not a ternary model: {e}".replace(f"{os.path.basename(path)}: ", "")]
    hp = m.hp
    counts = m.param_counts()
    tern_packed = sum(w.shape[0] * padded_k(w.shape[1]) // 4 for L in m.layers for _, w in L.projections())
    grouped = m.block_scaled()
    head_elems = m.head.size
    emb_elems = m.token_embd.size
    tok = m.tokenizer
    return {
        "file": os.path.basename(path), "sha256": m.source_sha256,
        "architecture": hp.arch, "family": hp.family,
        "activation": hp.activation, "activation_reason": hp.activation_reason,
        "rope_style": hp.rope_style,
        "rope_scaling": dict(dataclasses.asdict(hp.rope_scaling),
                             rope_freqs=None if m.rope_freqs is None else [float(x) for x in m.rope_freqs],
                             summary=hp.rope_scaling.describe()
                             + ("" if m.rope_freqs is None else f"; rope_freqs factors for {m.rope_freqs.size} pairs "
                                f"({float(m.rope_freqs.min()):g}..{float(m.rope_freqs.max()):g})")),
        "hparams": {k: getattr(hp, k) for k in ("n_vocab", "n_embd", "n_layer", "n_ff", "n_head", "n_head_kv",
                                               "head_dim", "n_ctx_train", "rope_base", "rope_dim", "norm_eps",
                                               "sub_norms", "tied_head")},
        "tokenizer": None if tok is None else {
            "model": tok.model, "vocab_size": len(tok.tokens), "pre": tok.pre, "bos": tok.bos_id,
            "eos": tok.eos_id, "eot": tok.eot_id, "merges": len(tok.merges or []),
            "chat_template": bool(tok.chat_template), "c_tokenizer": _c_tokenizer_support(tok)},
        "params": counts,
        "packed_bytes": {
            "ternary_i2s": tern_packed,
            "head_f32": head_elems * 4 if not hp.tied_head else 0,
            "head_f16": head_elems * 2 if not hp.tied_head else 0,
            "embedding_f32": emb_elems * 4, "embedding_f16": emb_elems * 2,
        },
        "type_readings": readings,
        "block_scaled": {"projections": len(grouped), "groups": sorted({w.group for w in grouped}),
                         "scale_bytes": sum(w.group_scales.size * 2 for w in grouped)},
        "warnings": m.warnings,
        "metadata": kv_small,
        "tensors": tensors,
    }


def print_inspect(r: dict):
    hp = r["hparams"]
    print(f"file          {r['file']}  (sha256 {r['sha256'][:16]}…)")
    print(f"architecture  {r['architecture']}  (family {r['family']}, RoPE {r['rope_style']})")
    print(f"activation    {r['activation']}: {r['activation_reason']}")
    print(f"rope scaling  {r['rope_scaling']['summary']}")
    print("hparams       " + ", ".join(f"{k}={v}" for k, v in hp.items()))
    t = r["tokenizer"]
    if t:
        print(f"tokenizer     {t['model']} ({'SentencePiece' if t['model'] == 'llama' else 'byte-level BPE'}), "
              f"{t['vocab_size']} tokens, pre={t['pre']}, bos={t['bos']} eos={t['eos']} eot={t['eot']}, "
              f"chat template: {'yes' if t['chat_template'] else 'no'}")
        if t.get("c_tokenizer", "yes") != "yes":
            print(f"              C tokenizer: {t['c_tokenizer']} (build with --no-tokenizer for a token-id binary)")
    else:
        print("tokenizer     none (the binary will take token ids)")
    p = r["params"]
    print(f"parameters    {p['total'] / 1e6:.2f} M total: {p['ternary'] / 1e6:.2f} M ternary, "
          f"{p['embedding'] / 1e6:.2f} M embedding, {p['head'] / 1e6:.2f} M untied head, {p['norms'] / 1e3:.1f} K norms")
    b = r["packed_bytes"]
    print(f"packed size   ternary (i2s, 2 bit): {_human(b['ternary_i2s'])}; embedding f16 {_human(b['embedding_f16'])} "
          f"/ f32 {_human(b['embedding_f32'])}" + (f"; head f16 {_human(b['head_f16'])} / f32 {_human(b['head_f32'])}"
                                                     if b['head_f16'] else "; head tied to the embedding"))
    for rd in r.get("type_readings", []):
        print(f"type id       {rd}")
    bs = r.get("block_scaled") or {}
    if bs.get("projections"):
        print(f"block-scaled  {bs['projections']} projections keep a scale per "
              f"{'/'.join(map(str, bs['groups']))} weights (+{_human(bs['scale_bytes'])} of fp16 scales): "
              "run as stored by the i2sg kernels")
    for w in r["warnings"]:
        print(f"warning       {w}")
    print(f"tensors       {len(r['tensors'])}")
    for tt in r["tensors"]:
        print(f"  {tt['name']:<32} {str(tt['shape']):<18} {tt['type']:<6} {_human(tt['bytes'])}")


# -- commands -----------------------------------------------------------------------------
def cmd_inspect(a):
    r = inspect_report(a.model, a.ternarize)
    if a.json:
        print(json.dumps(r, indent=1, default=str))
    else:
        print_inspect(r)


def cmd_build(a):
    import shutil
    import tempfile
    from .build import build
    tmp = None

    def log(line):
        if a.quiet or (tmp and line.startswith("generated C in")):     # a temporary tree: not worth a line
            return
        print(line, file=sys.stderr)
    if not os.path.isfile(a.model):
        raise BitnetError(f"{a.model}: no such file; check the path")
    build_dir = a.build_dir
    if not a.emit_c:
        if a.output:
            folder = os.path.dirname(os.path.abspath(a.output))
            if os.path.isdir(a.output):
                raise BitnetError(f"-o {a.output}: is a folder; give the output file's path")
            if not os.path.isdir(folder):
                raise BitnetError(f"-o {a.output}: the folder {folder} does not exist; create it first")
        if a.keep_build and not build_dir:
            build_dir = None                        # build() keeps OUTPUT.build
        elif not build_dir:                         # the generated C goes away after the compile
            tmp = build_dir = tempfile.mkdtemp(prefix="bitnet-aot-build-")
    try:
        r = build(a.model, a.target, a.output, kernel=a.kernel, weights=a.weights, emit_c=a.emit_c,
                  build_dir=build_dir, shared=a.shared, ternarize=a.ternarize, ctx=a.ctx, head=a.head,
                  embed=a.embed, kv=a.kv, no_tokenizer=a.no_tokenizer, log=log)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if r.output:
        print(r.output)
    if a.oci and r.output:
        from .oci import write_oci_layout
        from .targets import load_target
        d = write_oci_layout(r.output, a.oci, load_target(a.target).zig_target)
        log(f"wrote the OCI image layout {a.oci} (manifest {d['manifest']}); e.g. skopeo copy oci:{a.oci}:latest docker-daemon:model:latest")


def cmd_targets(a):
    from .targets import list_targets
    ts = list_targets()
    if a.json:
        print(json.dumps([t.__dict__ for t in ts], indent=1))
        return
    rows = [("target", "zig triple", "kernels", "SIMD", "tests run it", "description")]
    for t in ts:
        run = {"native": "natively", "qemu": t.qemu, "wasmtime": "wasmtime", "wine": "wine64", "none": "build only"}.get(t.run, t.run)
        rows.append((t.name, t.zig_target, ",".join(t.kernels), ",".join(t.simd_features) or "-", run, t.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def cmd_make_test_model(a):
    a.type_default = a.type is None
    a.type = a.type or "tq2_0"
    from .factory import SHAPES_2B4T, make_shape_model, make_test_model
    rope = dict(rope_scaling=a.rope_scaling, rope_factor=a.rope_factor, rope_orig_ctx=a.rope_orig_ctx,
                rope_freqs=a.rope_freqs)
    if a.shape not in ("tiny", "2b4t"):
        from . import configs
        try:
            configs.get(a.shape)
        except KeyError as e:
            raise BitnetError(str(e).strip("\"'")) from None
        for k in ("n_embd", "n_ff", "n_head", "n_head_kv"):
            if getattr(a, k) is not None:
                raise BitnetError(f"--{k.replace('_', '-')} cannot change a published shape "
                                  "(only --n-layer, --n-vocab and --n-ctx can)")
        try:
            make_shape_model(a.output, a.shape, None if a.type_default else a.type, n_layer=a.n_layer,
                             n_vocab=a.n_vocab, n_ctx=a.n_ctx, seed=a.seed, embd_type=a.embd_type,
                             block_scales=a.block_scales, **rope)
        except ValueError as e:
            raise BitnetError(str(e)) from None
        print(a.output)
        return
    shape = dict(SHAPES_2B4T) if a.shape == "2b4t" else {}
    for k in ("n_embd", "n_layer", "n_ff", "n_head", "n_head_kv", "n_vocab", "n_ctx"):
        v = getattr(a, k)
        if v is not None:
            shape[k] = v
    try:
        make_test_model(a.output, a.arch, a.type, tokenizer=a.tokenizer, seed=a.seed,
                        embd_type=a.embd_type, block_scales=a.block_scales, **rope, **shape)
    except ValueError as e:
        raise BitnetError(str(e)) from None
    print(a.output)


def cmd_tokenize(a):
    from .tokenize_cmd import main_tokenize
    main_tokenize(a)


def cmd_verify(a):
    from .verify import verify
    r = verify(a.binary, a.model)
    i = r["info"]
    print(f"weights OK: sha256 {r['weights_sha256']}")
    print(f"built from {i.get('model')} (sha256 {i.get('source_sha256')}) for {i.get('target')}, kernel {i.get('kernel')}, "
          f"bitnet-aot {i.get('bitnet_aot')}, zig {i.get('zig')}")
    if a.model:
        print(f"source OK: {a.model} is the file this binary was built from")


def cmd_doctor(a):
    import platform
    import shutil
    from .targets import list_targets
    from .toolchain import ZIG_VERSION, zig_cache_dir, zig_version
    ok = True
    print(f"bitnet-aot {__version__} on Python {platform.python_version()} ({platform.machine()})")
    try:
        zv = zig_version()
        pin = "pinned" if zv == ZIG_VERSION else f"MISMATCH: bitnet-aot pins {ZIG_VERSION}; pip install ziglang=={ZIG_VERSION}"
        print(f"zig           {zv} ({pin})")
        ok = ok and zv == ZIG_VERSION
    except BitnetError as e:
        print(f"zig           not working: {e}")
        ok = False
    cache = zig_cache_dir()
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs)
    print(f"zig cache     {cache} ({_human(size)}; the first build per target fills it, later builds take seconds)")
    from .build_cache import cache_root, entries
    es = entries()
    print(f"build cache   {cache_root()} ({len(es)} entries, {_human(sum(e['bytes'] for e in es))}; "
          "`bitnet-aot cache list|clean`)")
    runners = {"qemu-aarch64": "aarch64 binaries", "qemu-arm": "armv7 binaries", "qemu-riscv64": "riscv64 binaries",
               "qemu-x86_64": "CPU-dispatch tests without AVX2", "wasmtime": "wasm32-wasi binaries", "wine": "x86_64-windows binaries",
               "gcc": "ASan/UBSan tests"}
    for tool, what in runners.items():
        path = shutil.which(tool)
        print(f"{tool:<13} {'found' if path else 'missing'} ({what}{'' if path else '; apt-get install qemu-user wine64 / pip install wasmtime'})")
    print("targets:")
    for t in list_targets():
        run = {"native": "runs here natively", "qemu": f"tests run it under {t.qemu}",
               "wasmtime": "tests run it under wasmtime", "wine": "tests run it under wine64",
               "none": "built and format-checked only"}.get(t.run, t.run)
        print(f"  {t.name:<22} {t.zig_target:<22} kernels {','.join(t.kernels):<9} {run}")
    if not ok:
        raise BitnetError("the toolchain is not ready (see above)")


# `serve` flags the compiled server takes: (flags, metavar, help). Their values are checked
# by the server itself (runtime_c/app/options.c), with the binary's messages.
SERVE_FLAGS = [
    (("--host",), "ADDR", "address to bind (default 127.0.0.1; 0.0.0.0 for every interface)"),
    (("--port",), "N", "TCP port (default 8000)"),
    (("--parallel",), "N", "decoding slots sharing the weights (default 1)"),
    (("--queue",), "N", "requests that wait for a slot before the server answers 503 (default 16)"),
    (("--max-body",), "BYTES", "largest request body (default 1 MiB)"),
    (("--timeout",), "SECONDS", "read/write timeout per connection (default 30)"),
    (("--api-key",), "KEY", "require `Authorization: Bearer KEY`"),
    (("-t", "--threads"), "N", "threads (default: online cores)"),
    (("-c", "--ctx"), "N", "context of every slot in tokens (default and 0: the model's trained context)"),
    (("-n", "--n-predict"), "N", "default max_tokens of a request (default 128; -1 = until the context is full)"),
    (("--temp",), "X", "default temperature (default 0.8)"),
    (("--top-k",), "N", "default top-k (default 40)"),
    (("--top-p",), "X", "default top-p (default 0.95)"),
    (("--min-p",), "X", "default min-p (default 0.05)"),
    (("--repeat-penalty",), "X", "default repetition penalty (default 1.0)"),
    (("--repeat-last-n",), "N", "tokens the penalty looks back (default 64)"),
    (("-s", "--seed"), "N", "default seed of a request (default -1: random)"),
    (("--chat-format",), "NAME", "bitnet, llama3 or falcon3 (default: from the model's chat template)"),
]


def cmd_serve(a, extra):
    from .build_cache import compile_cached
    exe = compile_cached(a.model, executable=True, head=a.head, embed=a.embed, kv=a.kv, kernel=a.kernel)
    argv = [exe, "serve"]
    for flags, _, _ in SERVE_FLAGS:
        v = getattr(a, "serve_" + flags[-1].lstrip("-").replace("-", "_"))
        if v is not None:
            argv += [flags[-1], v]
    os.execv(exe, argv + extra)


def cmd_cache(a):
    import time
    from .build_cache import cache_root, clean, entries
    if a.action == "list":
        es = entries()
        if a.json:
            print(json.dumps({"path": cache_root(), "entries": es}, indent=1))
            return
        print(f"{cache_root()}: {len(es)} entries, {_human(sum(e['bytes'] for e in es))}")
        for e in es:
            opts = ", ".join(f"{k}={v}" for k, v in e["options"].items()) or "default options"
            model = os.path.basename(e["gguf"]) if e["gguf"] else "?"
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["last_used"]))
            print(f"  {e['key']}  {_human(e['bytes']):>10}  used {used}  {'+'.join(e['artefacts']) or 'empty':<17} "
                  f"{model} ({opts}){'  [stale: older bitnet-aot]' if e['stale'] else ''}")
    else:
        n, freed = clean(a.keys or None, stale_only=a.stale)
        print(f"removed {n} {'entry' if n == 1 else 'entries'}, {_human(freed)} freed from {cache_root()}")


def cmd_perplexity(a):
    from .perplexity import perplexity
    r = perplexity(a.model, a.text, ctx=a.ctx, head=a.head, embed=a.embed, kv=a.kv, threads=a.threads,
                   max_windows=a.max_windows)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"perplexity {r['perplexity']:.4f} over {r['tokens']} tokens ({r['windows']} windows of {r['ctx']}, "
              f"head {r['head']})")


def cmd_convert(a):
    from .convert import convert_hf
    summary = convert_hf(a.hf_dir, a.output, a.type, embd_type=a.embd_type)
    for w in (summary or {}).get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(a.output)


TOKENIZE_FLAGS = {"-h", "--help", "--special", "--no-bos", "--json", "--pieces"}


def _tokenize_argv(argv: list) -> list:
    """`bitnet-aot tokenize model TEXT`: the text becomes --text=TEXT, so that it may start
    with '-' (`tokenize model "-hello"`, or after `--`) and stand before or after the flags."""
    try:
        i = argv.index("tokenize")
    except ValueError:
        return argv
    if any(x.startswith("-") for x in argv[:i]):
        return argv
    out, positional, k = argv[:i + 1], 0, i + 1
    while k < len(argv):
        x = argv[k]
        if x == "--":
            rest = argv[k + 1:]
            if positional == 0 and rest:
                out.append(rest.pop(0))
                positional = 1
            if positional == 1 and rest:
                out.append("--text=" + rest.pop(0))
            return out + (["--"] + rest if rest else [])
        if x in ("-f", "--file") and k + 1 < len(argv):
            out += [x, argv[k + 1]]
            k += 2
            continue
        if x in TOKENIZE_FLAGS or x.startswith(("--file=", "--text=")) or positional != 1:
            out.append(x)
            if not x.startswith("-"):
                positional += 1
        else:
            out.append("--text=" + x)
            positional += 1
        k += 1
    return out


def make_parser() -> argparse.ArgumentParser:
    from .factory import ARCHS, PROJ_TYPES
    p = _Parser(prog="bitnet-aot", description="Compile ternary (BitNet b1.58) GGUF models into one static binary.")
    p.add_argument("--version", action="version", version=f"bitnet-aot {__version__}")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser, metavar="COMMAND")
    GGUF = "the model, a GGUF file"

    s = sub.add_parser("inspect", help="show a GGUF model's architecture, shapes, tensors and packed sizes")
    s.add_argument("model", help=GGUF)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--ternarize", action="store_true", help="accept non-ternary projections (absmean PTQ)")
    s.set_defaults(fn=cmd_inspect)

    s = sub.add_parser("build", help="compile a GGUF model into a static executable")
    s.add_argument("model", help=GGUF)
    s.add_argument("--target", default="host", help="target name (see `bitnet-aot targets`); default: this machine")
    s.add_argument("-o", "--output", help="output path; its folder must exist (default: the model's name, here)")
    s.add_argument("--kernel", default="auto", help="ternary kernel: auto, i2s, tl1, tl2")
    s.add_argument("--weights", default="embedded", choices=["embedded", "external"],
                   help="embed the weights (default) or write them beside the binary as OUTPUT.weights")
    s.add_argument("--emit-c", metavar="DIR", help="only write the generated C tree to DIR")
    s.add_argument("--keep-build", action="store_true",
                   help="keep the generated C tree and objects in OUTPUT.build (default: deleted after the compile)")
    s.add_argument("--build-dir", metavar="DIR", help="where the generated C goes (kept); implies --keep-build")
    s.add_argument("--shared", action="store_true", help="build a shared library for the Python binding (host only)")
    s.add_argument("--oci", metavar="DIR", help="also write an OCI image layout (scratch + the binary, entrypoint serve) to DIR")
    s.add_argument("--ctx", type=int, default=0, help="largest context the binary accepts (default: the model's)")
    s.add_argument("--head", default="auto", choices=MATRIX_CHOICES,
                   help="precision of the output head (and of the embedding when tied); auto keeps the file's")
    s.add_argument("--embed", default="auto", choices=MATRIX_CHOICES,
                   help="precision of an untied model's embedding table; auto keeps the file's")
    s.add_argument("--kv", default="f16", choices=list(KV_TYPES),
                   help="KV cache precision: f16 (default), f32, or q8 (int8, one scale per head and position)")
    s.add_argument("--ternarize", action="store_true", help="quantize non-ternary projections post-training (quality drops)")
    s.add_argument("--no-tokenizer", action="store_true",
                   help="leave the tokenizer out (the binary takes and prints token ids); needed when the C "
                        "tokenizer cannot run the model's")
    s.add_argument("-q", "--quiet", action="store_true", help="print only the output path (no log, no progress)")
    s.set_defaults(fn=cmd_build)

    s = sub.add_parser("convert", help="convert a Hugging Face BitNet checkpoint directory to GGUF")
    s.add_argument("hf_dir", help="the checkpoint folder (config.json, *.safetensors, tokenizer files)")
    s.add_argument("-o", "--output", required=True, help="output .gguf path")
    s.add_argument("--type", default="tq2_0", choices=["tq2_0", "tq1_0", "i2_s", "f16"],
                   help="projection type (default tq2_0)")
    s.add_argument("--embd-type", default="f16", choices=["f16", "f32"], help="embedding precision (default f16)")
    s.set_defaults(fn=cmd_convert)

    s = sub.add_parser("verify", help="check a compiled binary's weights (and that it was built from a GGUF)")
    s.add_argument("binary", help="a binary built by `bitnet-aot build` (any target)")
    s.add_argument("model", nargs="?", help="the GGUF it should have been built from")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("serve", help="build (or reuse the cached build of) a model for this machine and serve it over HTTP",
                       description="Build the model for this machine (once; kept in the build cache) and run its HTTP "
                                   "server: POST /generate, /v1/completions, /v1/chat/completions, GET /v1/models, "
                                   "/health. Flags not listed here go to the server unchanged.")
    s.add_argument("model", help=GGUF)
    for flags, metavar, text in SERVE_FLAGS:
        s.add_argument(*flags, dest="serve_" + flags[-1].lstrip("-").replace("-", "_"), metavar=metavar, help=text)
    s.add_argument("--head", default="auto", choices=MATRIX_CHOICES, help="build option: output head precision (see build)")
    s.add_argument("--embed", default="auto", choices=MATRIX_CHOICES, help="build option: untied embedding precision")
    s.add_argument("--kv", default="f16", choices=list(KV_TYPES), help="build option: KV cache precision (see build)")
    s.add_argument("--kernel", default="auto", help="build option: ternary kernel (auto, i2s, tl2)")
    s.set_defaults(fn=cmd_serve, passthrough=True)

    s = sub.add_parser("perplexity", help="perplexity of a text file under the compiled model (built for this machine)")
    s.add_argument("model", help=GGUF)
    s.add_argument("text", help="a UTF-8 text file")
    s.add_argument("--ctx", type=int, default=256, help="window length in tokens (default 256)")
    s.add_argument("--head", default="auto", choices=MATRIX_CHOICES, help="output head precision (see build)")
    s.add_argument("--embed", default="auto", choices=MATRIX_CHOICES, help="untied embedding precision (see build)")
    s.add_argument("--kv", default="f16", choices=list(KV_TYPES), help="KV cache precision (see build)")
    s.add_argument("-t", "--threads", type=int, default=2, help="threads (default 2)")
    s.add_argument("--max-windows", type=int, default=None, help="score only the first N windows (default: all)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(fn=cmd_perplexity)

    s = sub.add_parser("doctor", help="check the toolchain, the zig cache, the build cache and the test runners")
    s.set_defaults(fn=cmd_doctor)

    s = sub.add_parser("cache", help="list or clean the build cache (models compiled by tokenize, perplexity, "
                                     "serve and the Python binding)")
    csub = s.add_subparsers(dest="action", parser_class=_Parser, metavar="ACTION", required=True)
    c = csub.add_parser("list", help="the entries: key, size, last use, artefacts, model and options")
    c.add_argument("--json", action="store_true", help="print the entries as JSON")
    c.set_defaults(fn=cmd_cache)
    c = csub.add_parser("clean", help="remove entries (all of them unless keys or --stale are given)")
    c.add_argument("keys", nargs="*", metavar="KEY", help="entries to remove (a key, or the start of one)")
    c.add_argument("--stale", action="store_true", help="only entries built by another bitnet-aot version")
    c.set_defaults(fn=cmd_cache)

    s = sub.add_parser("targets", help="list the targets")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_targets)

    s = sub.add_parser("make-test-model", help="write a random-weight test GGUF")
    s.add_argument("output", help="the .gguf file to write")
    s.add_argument("--arch", default="bitnet-b1.58", choices=ARCHS, help="architecture (default bitnet-b1.58)")
    s.add_argument("--type", default=None, choices=PROJ_TYPES,
                   help="projection tensor type (default tq2_0; for a published shape whose rows are not "
                        "multiples of 256, i2_s)")
    s.add_argument("--tokenizer", default="spm", choices=["spm", "bpe"],
                   help="SentencePiece (spm, default) or byte-level BPE vocabulary")
    s.add_argument("--embd-type", default="f16", choices=["f16", "f32", "bf16"], help="embedding type (default f16)")
    s.add_argument("--shape", default="tiny",
                   help="tiny (default), 2b4t, or a published model's exact shape (compiler/configs.py): "
                        "bitnet-b1.58-2b-4t, bitnet_b1_58-large, bitnet_b1_58-3b, llama3-8b-1.58-100b-tokens, "
                        "falcon3-{1b,3b,7b,10b}-instruct-1.58bit, ternary-bonsai-{1.7b,4b,8b}")
    for k, what in (("n_embd", "embedding width"), ("n_layer", "layers"), ("n_ff", "feed-forward width"),
                    ("n_head", "attention heads"), ("n_head_kv", "key/value heads"), ("n_vocab", "vocabulary size"),
                    ("n_ctx", "trained context")):
        s.add_argument("--" + k.replace("_", "-"), dest=k, type=int, metavar="N", help=f"{what} (overrides --shape)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    s.add_argument("--block-scales", action="store_true",
                   help="block types (q2_0, q2_0_g128, q1_0, tq1_0, tq2_0): a different scale in every block, "
                        "and for Q2_0 some +2 weights, as Ternary Bonsai's files have (run block-scaled)")
    s.add_argument("--rope-scaling", choices=["none", "linear", "yarn"],
                   help="write <arch>.rope.scaling.type (e.g. --rope-scaling yarn --rope-factor 4 --rope-orig-ctx 64)")
    s.add_argument("--rope-factor", type=float, metavar="X", help="write <arch>.rope.scaling.factor")
    s.add_argument("--rope-orig-ctx", type=int, metavar="N",
                   help="write <arch>.rope.scaling.original_context_length")
    s.add_argument("--rope-freqs", choices=["llama3"],
                   help="write a rope_freqs.weight tensor of Llama 3.1's per-pair factors (from --rope-factor, "
                        "default 8, and --rope-orig-ctx, default 32)")
    s.set_defaults(fn=cmd_make_test_model)

    s = sub.add_parser("tokenize", help="print the ids (and pieces) the model's compiled C tokenizer gives for a text")
    s.add_argument("model", help=GGUF)
    s.add_argument("text", nargs="?", help="the text (may start with '-'); without it, -f FILE or stdin")
    s.add_argument("--text", dest="text_opt", help=argparse.SUPPRESS)
    s.add_argument("-f", "--file", metavar="FILE", help="read the text from FILE (- for stdin)")
    s.add_argument("--pieces", action="store_true", help="print each id with the text it stands for")
    s.add_argument("--special", action="store_true", help="match special tokens such as <|eot_id|> in the text")
    s.add_argument("--no-bos", action="store_true", help="do not add the BOS token")
    s.add_argument("--json", action="store_true", help="print a JSON list")
    s.set_defaults(fn=cmd_tokenize)
    return p


def main(argv=None):
    p = make_parser()
    argv = _tokenize_argv(list(sys.argv[1:] if argv is None else argv))
    a, extra = p.parse_known_args(argv)
    if extra and not getattr(a, "passthrough", False):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(a, "fn", None):
        p.print_help()
        return 2
    if getattr(a, "text_opt", None) is not None:
        if a.text is not None:
            p.error("tokenize takes one text")
        a.text = a.text_opt
    from . import progress
    try:
        with progress.shown(not getattr(a, "quiet", False)):
            if getattr(a, "passthrough", False):
                a.fn(a, extra)
            else:
                a.fn(a)
    except BitnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: still one line, with the traceback on request
        if os.environ.get("BITNET_AOT_DEBUG"):
            raise
        print(f"error: internal error: {type(e).__name__}: {e} (set BITNET_AOT_DEBUG=1 for details, and please report it)",
              file=sys.stderr)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
