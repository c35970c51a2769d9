"""The `bitnet-aot` command line.

Every failure a user can cause ends in one line `error: ...` on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .errors import BitnetError

MATRIX_CHOICES = ("auto", "f32", "f16", "q8", "q6", "q4")   # = pack.MATRIX_CHOICES (pack imports numpy)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


# -- inspect ------------------------------------------------------------------------------
def inspect_report(path: str, ternarize: bool) -> dict:
    from .gguf_file import GGUFFile
    from .gguf_import import load_gguf
    from .pack import padded_k

    g = GGUFFile(path)
    tensors = [{"name": t.name, "shape": list(t.ne), "type": t.type_name, "bytes": t.nbytes}
               for t in g.tensors.values()]
    kv_small = {k: (v if not isinstance(v, (list,)) else f"[{len(v)} items]")
                for k, v in g.kv.items() if not hasattr(v, "dtype")}
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
    head_elems = m.head.size
    emb_elems = m.token_embd.size
    tok = m.tokenizer
    return {
        "file": os.path.basename(path), "sha256": m.source_sha256,
        "architecture": hp.arch, "family": hp.family,
        "activation": hp.activation, "activation_reason": hp.activation_reason,
        "rope_style": hp.rope_style,
        "hparams": {k: getattr(hp, k) for k in ("n_vocab", "n_embd", "n_layer", "n_ff", "n_head", "n_head_kv",
                                               "head_dim", "n_ctx_train", "rope_base", "rope_dim", "norm_eps",
                                               "sub_norms", "tied_head")},
        "tokenizer": None if tok is None else {
            "model": tok.model, "vocab_size": len(tok.tokens), "pre": tok.pre, "bos": tok.bos_id,
            "eos": tok.eos_id, "eot": tok.eot_id, "merges": len(tok.merges or []),
            "chat_template": bool(tok.chat_template)},
        "params": counts,
        "packed_bytes": {
            "ternary_i2s": tern_packed,
            "head_f32": head_elems * 4 if not hp.tied_head else 0,
            "head_f16": head_elems * 2 if not hp.tied_head else 0,
            "embedding_f32": emb_elems * 4, "embedding_f16": emb_elems * 2,
        },
        "warnings": m.warnings,
        "metadata": kv_small,
        "tensors": tensors,
    }


def print_inspect(r: dict):
    hp = r["hparams"]
    print(f"file          {r['file']}  (sha256 {r['sha256'][:16]}…)")
    print(f"architecture  {r['architecture']}  (family {r['family']}, RoPE {r['rope_style']})")
    print(f"activation    {r['activation']}: {r['activation_reason']}")
    print("hparams       " + ", ".join(f"{k}={v}" for k, v in hp.items()))
    t = r["tokenizer"]
    if t:
        print(f"tokenizer     {t['model']} ({'SentencePiece' if t['model'] == 'llama' else 'byte-level BPE'}), "
              f"{t['vocab_size']} tokens, pre={t['pre']}, bos={t['bos']} eos={t['eos']} eot={t['eot']}, "
              f"chat template: {'yes' if t['chat_template'] else 'no'}")
    else:
        print("tokenizer     none (the binary will take token ids)")
    p = r["params"]
    print(f"parameters    {p['total'] / 1e6:.2f} M total: {p['ternary'] / 1e6:.2f} M ternary, "
          f"{p['embedding'] / 1e6:.2f} M embedding, {p['head'] / 1e6:.2f} M untied head, {p['norms'] / 1e3:.1f} K norms")
    b = r["packed_bytes"]
    print(f"packed size   ternary (i2s, 2 bit): {_human(b['ternary_i2s'])}; embedding f16 {_human(b['embedding_f16'])} "
          f"/ f32 {_human(b['embedding_f32'])}" + (f"; head f16 {_human(b['head_f16'])} / f32 {_human(b['head_f32'])}"
                                                     if b['head_f16'] else "; head tied to the embedding"))
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
    from .build import build
    log = (lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr))
    r = build(a.model, a.target, a.output, kernel=a.kernel, weights=a.weights, emit_c=a.emit_c,
              build_dir=a.build_dir, shared=a.shared, ternarize=a.ternarize, ctx=a.ctx, head=a.head,
              embed=a.embed, log=log)
    if r.output:
        print(r.output)


def cmd_targets(a):
    from .targets import list_targets
    ts = list_targets()
    if a.json:
        print(json.dumps([t.__dict__ for t in ts], indent=1))
        return
    rows = [("target", "zig triple", "kernels", "SIMD", "tests run it", "description")]
    for t in ts:
        run = {"native": "natively", "qemu": t.qemu, "wasmtime": "wasmtime", "none": "build only"}.get(t.run, t.run)
        rows.append((t.name, t.zig_target, ",".join(t.kernels), ",".join(t.simd_features) or "-", run, t.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def cmd_make_test_model(a):
    from .factory import SHAPES_2B4T, make_test_model
    shape = dict(SHAPES_2B4T) if a.shape == "2b4t" else {}
    for k in ("n_embd", "n_layer", "n_ff", "n_head", "n_head_kv", "n_vocab", "n_ctx"):
        v = getattr(a, k)
        if v is not None:
            shape[k] = v
    try:
        make_test_model(a.output, a.arch, a.type, tokenizer=a.tokenizer, seed=a.seed,
                        embd_type=a.embd_type, **shape)
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
    runners = {"qemu-aarch64": "aarch64 binaries", "qemu-arm": "armv7 binaries", "qemu-riscv64": "riscv64 binaries",
               "qemu-x86_64": "CPU-dispatch tests without AVX2", "wasmtime": "wasm32-wasi binaries", "gcc": "ASan/UBSan tests"}
    for tool, what in runners.items():
        path = shutil.which(tool)
        print(f"{tool:<13} {'found' if path else 'missing'} ({what}{'' if path else '; apt-get install qemu-user / pip install wasmtime'})")
    print("targets:")
    for t in list_targets():
        run = {"native": "runs here natively", "qemu": f"tests run it under {t.qemu}",
               "wasmtime": "tests run it under wasmtime", "none": "built and format-checked only"}.get(t.run, t.run)
        print(f"  {t.name:<22} {t.zig_target:<22} kernels {','.join(t.kernels):<9} {run}")
    if not ok:
        raise BitnetError("the toolchain is not ready (see above)")


def cmd_serve(a, extra):
    from .bindings.model import compile_cached
    exe = compile_cached(a.model, executable=True)
    os.execv(exe, [exe, "serve"] + extra)


def cmd_perplexity(a):
    from .perplexity import perplexity
    r = perplexity(a.model, a.text, ctx=a.ctx, head=a.head, embed=a.embed, threads=a.threads,
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


def main(argv=None):
    p = _Parser(prog="bitnet-aot", description="Compile ternary (BitNet b1.58) GGUF models into one static binary.")
    p.add_argument("--version", action="version", version=f"bitnet-aot {__version__}")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)

    s = sub.add_parser("inspect", help="show a GGUF model's architecture, shapes, tensors and packed sizes")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--ternarize", action="store_true", help="accept non-ternary projections (absmean PTQ)")
    s.set_defaults(fn=cmd_inspect)

    s = sub.add_parser("build", help="compile a GGUF model into a static executable")
    s.add_argument("model")
    s.add_argument("--target", default="host", help="target name (see `bitnet-aot targets`); default: this machine")
    s.add_argument("-o", "--output", help="output path (default: the model's name)")
    s.add_argument("--kernel", default="auto", help="ternary kernel: auto, i2s, tl1, tl2")
    s.add_argument("--weights", default="embedded", choices=["embedded", "external"],
                   help="embed the weights (default) or write them beside the binary as OUTPUT.weights")
    s.add_argument("--emit-c", metavar="DIR", help="only write the generated C tree to DIR")
    s.add_argument("--build-dir", metavar="DIR", help="where the generated C goes (default: OUTPUT.build)")
    s.add_argument("--shared", action="store_true", help="build a shared library for the Python binding (host only)")
    s.add_argument("--ctx", type=int, default=0, help="largest context the binary accepts (default: the model's)")
    s.add_argument("--head", default="auto", choices=MATRIX_CHOICES,
                   help="precision of the output head (and of the embedding when tied); auto keeps the file's")
    s.add_argument("--embed", default="auto", choices=MATRIX_CHOICES,
                   help="precision of an untied model's embedding table; auto keeps the file's")
    s.add_argument("--ternarize", action="store_true", help="quantize non-ternary projections post-training (quality drops)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(fn=cmd_build)

    s = sub.add_parser("convert", help="convert a Hugging Face BitNet checkpoint directory to GGUF")
    s.add_argument("hf_dir")
    s.add_argument("-o", "--output", required=True, help="output .gguf path")
    s.add_argument("--type", default="tq2_0", help="projection type: tq2_0 (default), tq1_0, i2_s, f16")
    s.add_argument("--embd-type", default="f16", choices=["f16", "f32"], help="embedding precision")
    s.set_defaults(fn=cmd_convert)

    s = sub.add_parser("verify", help="check a compiled binary's weights (and that it was built from a GGUF)")
    s.add_argument("binary")
    s.add_argument("model", nargs="?", help="the GGUF it should have been built from")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("serve", help="build (or reuse a cached build of) a model for this machine and serve it over HTTP; "
                                     "other flags (--port, --parallel, ...) go to the server")
    s.add_argument("model")
    s.set_defaults(fn=cmd_serve, passthrough=True)

    s = sub.add_parser("perplexity", help="perplexity of a text file under the compiled model (built for this machine)")
    s.add_argument("model")
    s.add_argument("text")
    s.add_argument("--ctx", type=int, default=256, help="window length in tokens (default 256)")
    s.add_argument("--head", default="auto", choices=MATRIX_CHOICES, help="output head precision (see build)")
    s.add_argument("--embed", default="auto", choices=MATRIX_CHOICES, help="untied embedding precision (see build)")
    s.add_argument("-t", "--threads", type=int, default=2)
    s.add_argument("--max-windows", type=int, default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_perplexity)

    s = sub.add_parser("doctor", help="check the toolchain, the zig cache and the test runners")
    s.set_defaults(fn=cmd_doctor)

    s = sub.add_parser("targets", help="list the targets")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_targets)

    s = sub.add_parser("make-test-model", help="write a random-weight test GGUF")
    s.add_argument("output")
    s.add_argument("--arch", default="bitnet-b1.58")
    s.add_argument("--type", default="tq2_0", help="projection type: tq2_0 tq1_0 i2_s f16 f32 bf16")
    s.add_argument("--tokenizer", default="spm", choices=["spm", "bpe"])
    s.add_argument("--embd-type", default="f16", choices=["f16", "f32", "bf16"])
    s.add_argument("--shape", choices=["tiny", "2b4t"], default="tiny", help="2b4t: BitNet-b1.58-2B-4T shapes")
    for k in ("n_embd", "n_layer", "n_ff", "n_head", "n_head_kv", "n_vocab", "n_ctx"):
        s.add_argument("--" + k.replace("_", "-"), dest=k, type=int)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_make_test_model)

    s = sub.add_parser("tokenize", help="print the ids the model's compiled C tokenizer gives for a text")
    s.add_argument("model")
    s.add_argument("text")
    s.add_argument("--special", action="store_true", help="match special tokens such as <|eot_id|> in the text")
    s.add_argument("--no-bos", action="store_true", help="do not add the BOS token")
    s.add_argument("--json", action="store_true", help="print a JSON list")
    s.set_defaults(fn=cmd_tokenize)

    a, extra = p.parse_known_args(argv)
    if extra and not getattr(a, "passthrough", False):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(a, "fn", None):
        p.print_help()
        return 2
    try:
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
