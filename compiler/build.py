"""The build driver: GGUF -> model description -> packed weights -> generated C -> zig -> binary."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass

from . import __version__
from .codegen import (KV_TYPES, BuildOptions, batch_size, blob_s, copy_runtime, model_config_h, rope_freq_c, weights_index_c,
                      write_weights)
from .errors import BitnetError
from .gguf_import import load_gguf
from .kernels import KERNELS_DIR
from .model import Model
from .pack import MATRIX_CHOICES
from .targets import Target, load_target
from .toolchain import run_zig_all, zig_version

# Flags every runtime file is compiled with. -ffp-contract=off keeps float results equal to
# the numpy reference (no fused multiply-add where the source has two operations). C needs
# no unwind tables (no exceptions; sanitizers walk frame pointers), and one section per
# function and datum so the linker can drop unused ones.
BASE_CFLAGS = ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-g0",
               "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-ffunction-sections", "-fdata-sections",
               "-fno-ident", "-Isrc", "-Igen"]


@dataclass
class BuildResult:
    output: str
    build_dir: str
    target: str
    kernel: str
    blob_bytes: int
    blob_sha256: str
    seconds: float
    commands: list


def source_fingerprint() -> str:
    """A hash of everything a build is made from besides the model and options: the runtime
    sources, the target files and the compiler itself. Build caches include it in their key,
    so a changed bitnet-aot never reuses a stale build."""
    import hashlib
    from importlib import resources
    h = hashlib.sha256()
    roots = [resources.files("bitnet_aot.runtime_c"), resources.files("bitnet_aot.target_files"),
             resources.files("bitnet_aot")]
    for root in roots:
        stack = [root]
        while stack:
            d = stack.pop()
            for f in sorted(d.iterdir(), key=lambda p: p.name):
                if f.is_dir():
                    if f.name != "__pycache__":
                        stack.append(f)
                elif f.name.endswith((".c", ".h", ".toml", ".py", ".html")):
                    h.update(f.name.encode())
                    h.update(f.read_bytes())
    return h.hexdigest()[:16]


def kernel_sources(target: Target, cpu_dispatch: bool = True) -> list:
    """[(source path relative to the build dir, extra flags)] of the kernel files to compile:
    every variant the target can use (compiler/kernels.py), chosen among at run time."""
    from .kernels import arch_of, kernel_sources as table
    cpu_dispatch = cpu_dispatch and target.cpu_dispatch
    return [(f"src/{KERNELS_DIR}/{k.source}", list(k.flags)) for k in table(arch_of(target.zig_target), cpu_dispatch)]


def choose_kernel(target: Target, kernel: str) -> str:
    if kernel in ("auto", "", None):
        return target.default_kernel
    if kernel not in target.kernels:
        raise BitnetError(f"kernel {kernel!r} is not available for {target.name}; choose one of "
                          f"{', '.join(target.kernels)} or auto")
    return kernel


def tokenizer_blob(m: Model, log=print):
    """The tokenizer data for the blob, or None (the binary then takes token ids) when the
    model has none (or the build was asked for none: load_gguf(no_tokenizer=True)). A
    tokenizer the C tokenizer cannot run is an error: a build never drops one silently."""
    from .tokenizer_pack import TokenizerPackError, pack_tokenizer
    if m.tokenizer is None:
        return None
    try:
        return pack_tokenizer(m.tokenizer)
    except TokenizerPackError as e:
        raise BitnetError(f"{m.source_name}: {e}; pass --no-tokenizer to build a binary that takes and "
                          "prints token ids") from None


def unicode_tables():
    try:
        from .tokenizer_pack import unicode_tables_c
    except ImportError:
        return None
    return unicode_tables_c()


def info_json(m: Model, target: Target, opts: BuildOptions, kernel: str, sha: str) -> str:
    hp = m.hp
    info = {
        "model": m.source_name, "source_sha256": m.source_sha256,
        "architecture": hp.arch, "activation": hp.activation, "rope": hp.rope_style,
        "rope_scaling": hp.rope_scaling.describe() + (", rope_freqs factors" if m.rope_freqs is not None else ""),
        "n_vocab": hp.n_vocab, "n_embd": hp.n_embd, "n_layer": hp.n_layer, "n_ff": hp.n_ff,
        "n_head": hp.n_head, "n_head_kv": hp.n_head_kv, "n_ctx_train": hp.n_ctx_train,
        "tokenizer": m.tokenizer.model if m.tokenizer else None,
        "target": target.name, "zig_target": target.zig_target, "kernel": kernel,
        "weights": opts.weights, "weights_sha256": sha, "head": opts.head, "embed": opts.embed, "kv": opts.kv, "batch": batch_size(m, target),
        "bitnet_aot": __version__, "zig": opts.zig_version,
    }
    return json.dumps(info, sort_keys=True)


def generate(m: Model, target: Target, build_dir: str, opts: BuildOptions, log=print) -> dict:
    """Write the generated C tree into build_dir. Returns facts the compile step needs."""
    kernel = opts.kernel = choose_kernel(target, opts.kernel)
    if os.path.exists(os.path.join(build_dir, "build-error.log")):
        os.remove(os.path.join(build_dir, "build-error.log"))
    if os.path.isdir(os.path.join(build_dir, "src")):
        shutil.rmtree(os.path.join(build_dir, "src"))
    os.makedirs(os.path.join(build_dir, "gen"), exist_ok=True)
    c_files = copy_runtime(build_dir)
    t0 = time.time()
    tok = tokenizer_blob(m, log)
    idx, size, sha = write_weights(m, os.path.join(build_dir, "weights.bin"), opts, tok)
    log(f"packed weights: {size / 2**20:.1f} MiB ({kernel}) in {time.time() - t0:.1f} s, sha256 {sha[:16]}…")
    if opts.weights == "embedded" and size > target.max_blob_bytes:
        raise BitnetError(f"the packed weights are {size / 2**30:.2f} GiB, more than {target.name} can embed "
                          f"safely ({target.max_blob_bytes / 2**30:.2f} GiB); build with --weights external")
    with open(os.path.join(build_dir, "gen", "model_config.h"), "w") as f:
        f.write(model_config_h(m, opts, idx, size, target))
    with open(os.path.join(build_dir, "gen", "weights_index.c"), "w") as f:
        f.write(weights_index_c(idx, sha, info_json(m, target, opts, kernel, sha), rope_freq_c(m)))
    gen_c = ["gen/weights_index.c"]
    ut = unicode_tables()
    if ut is not None:
        with open(os.path.join(build_dir, "gen", "unicode_tables.c"), "w") as f:
            f.write(ut)
        gen_c.append("gen/unicode_tables.c")
    asm = []
    if opts.weights == "embedded":
        with open(os.path.join(build_dir, "gen", "blob.S"), "w") as f:
            f.write(blob_s(target, opts, size))
        asm.append("gen/blob.S")
    kern = kernel_sources(target)
    # the kernels are compiled per ISA above; a shared library (the Python binding) is the
    # core and text layers only: no CLI, chat loop, server, HTTP or JSON (runtime_c/app/)
    runtime = [p for p in c_files if not p.startswith(os.path.join("src", KERNELS_DIR) + os.sep)]
    if opts.shared:
        runtime = [p for p in runtime if not p.startswith(os.path.join("src", "app") + os.sep)]
    sources = [(p, []) for p in runtime + gen_c] + [(p, fl) for p, fl in kern] + [(p, []) for p in asm]
    return {"kernel": kernel, "sources": sources, "blob_bytes": size, "sha": sha}


def compile_commands(target: Target, opts: BuildOptions, sources: list, out_name: str) -> list:
    """The zig argument lists, in order: one compile per source, then the link."""
    if opts.shared:
        tflags = ["-fPIC"]            # host, dynamic: loaded into Python by the binding
    else:
        tflags = ["-target", target.zig_target] + list(target.extra_cflags)
    defs = [] if target.threads else ["-DBN_NO_THREADS"]
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if opts.sanitize else []
    cmds, objs = [], []
    for i, (src, flags) in enumerate(sources):
        obj = os.path.join("obj", f"{i:02d}-" + os.path.basename(src).rsplit(".", 1)[0] + ".o")
        objs.append(obj)
        cmds.append(["cc"] + tflags + [opts.opt] + BASE_CFLAGS + defs + san + list(flags) + ["-c", src, "-o", obj])
    if opts.shared:
        link = ["cc", "-shared", "-fPIC"] + san + objs + ["-o", out_name, "-lm", "-lpthread"]
    else:
        static = ["-static"] if target.static else []
        # ELF: drop every function and datum nothing references (with -ffunction-sections,
        # -fdata-sections: about half of a static binary's code is unused libc)
        static += ["-Wl,--gc-sections"] if target.object_format == "elf" else []
        link = ["cc"] + tflags + static + ["-s"] + list(target.extra_ldflags) + objs + ["-o", out_name, "-lm"]
    cmds.append(link)
    return cmds


def write_build_sh(build_dir: str, cmds: list):
    lines = ["#!/bin/sh", "# Rebuild this model by hand: sh build.sh (needs zig; `pip install ziglang`).",
             "set -e", 'cd "$(dirname "$0")"', 'ZIG="${ZIG:-python3 -m ziglang}"', "mkdir -p obj",
             "# build objects go to a local cache removed at the end (the blob object is as big as the weights)",
             'export ZIG_LOCAL_CACHE_DIR="$PWD/.zig-cache"', "trap 'rm -rf .zig-cache' EXIT"]
    for c in cmds:
        lines.append("$ZIG " + " ".join(shlex.quote(a) for a in c))
    with open(os.path.join(build_dir, "build.sh"), "w") as f:
        f.write("\n".join(lines) + "\n")


def build(gguf_path: str, target_name: str = "host", output: str | None = None, *,
          kernel: str = "auto", weights: str = "embedded", emit_c: str | None = None,
          build_dir: str | None = None, shared: bool = False, ternarize: bool = False,
          ctx: int = 0, sanitize: bool = False, head: str = "auto", embed: str = "auto", kv: str = "f16",
          model: Model | None = None, no_tokenizer: bool = False, log=print) -> BuildResult:
    t_start = time.time()
    if weights not in ("embedded", "external"):
        raise BitnetError(f"--weights must be embedded or external, not {weights!r}")
    target = load_target(target_name)
    if shared and target_name not in ("host", "native") and target.run != "native":
        raise BitnetError("--shared builds a library for this machine; use --target host")
    m = model or load_gguf(gguf_path, ternarize=ternarize, no_tokenizer=no_tokenizer)
    if no_tokenizer and m.tokenizer is not None:
        m.tokenizer = None
        m.warnings.append("--no-tokenizer: the binary takes and prints token ids")
    for wmsg in m.warnings:
        log(f"warning: {wmsg}")
    log(f"model: {m.hp.arch}, {m.hp.n_layer} layers, E={m.hp.n_embd}, F={m.hp.n_ff}, V={m.hp.n_vocab}; "
        f"activation {m.hp.activation} ({m.hp.activation_reason})")
    if m.hp.rope_scaling.kind != "none" or m.rope_freqs is not None or m.hp.rope_scaling.attn_factor != 1.0:
        log(f"rope scaling: {m.hp.rope_scaling.describe()}"
            + (f"; rope_freqs factors for {m.rope_freqs.size} pairs" if m.rope_freqs is not None else "")
            + f" (trained context {m.hp.n_ctx_train})")
    grouped = m.block_scaled()
    if grouped:
        n_proj = sum(len(L.projections()) for L in m.layers)
        sizes = ", ".join(str(g) for g in sorted({w.group for w in grouped}))
        log(f"block-scaled: {len(grouped)} of {n_proj} projections keep their per-group scales "
            f"({sizes} weights per fp16 scale), run exactly as stored by the i2sg kernels")
    if ctx and not 0 < ctx <= m.hp.n_ctx_train:
        raise BitnetError(f"--ctx {ctx} is outside 1..{m.hp.n_ctx_train} (the model's trained context)")
    zv = zig_version()
    for flag, value in (("--head", head), ("--embed", embed)):
        if value not in MATRIX_CHOICES:
            raise BitnetError(f"{flag} must be one of {', '.join(MATRIX_CHOICES)}, not {value!r}")
    if kv not in KV_TYPES:
        raise BitnetError(f"--kv must be one of {', '.join(KV_TYPES)}, not {kv!r}")
    if embed != "auto" and m.output is None:
        raise BitnetError("--embed: this model's head is tied to its embedding (one matrix); use --head to set its precision")
    opts = BuildOptions(kernel=kernel, weights=weights, n_ctx_max=ctx, shared=shared, head=head, embed=embed,
                        kv=kv, sanitize=sanitize, zig_version=zv)
    if output is None:
        base = os.path.splitext(os.path.basename(gguf_path))[0]
        output = base + (".so" if shared else target.exe_suffix)
    output = os.path.abspath(output)
    bdir = os.path.abspath(emit_c or build_dir or output + ".build")
    os.makedirs(bdir, exist_ok=True)
    g = generate(m, target, bdir, opts, log)
    out_name = "model.so" if shared else "model" + target.exe_suffix
    cmds = compile_commands(target, opts, g["sources"], out_name)
    write_build_sh(bdir, cmds)
    log(f"generated C in {bdir} (rebuild by hand: sh {os.path.join(bdir, 'build.sh')})")
    if emit_c:
        return BuildResult(output="", build_dir=bdir, target=target.name, kernel=g["kernel"],
                           blob_bytes=g["blob_bytes"], blob_sha256=g["sha"], seconds=time.time() - t_start,
                           commands=cmds)
    os.makedirs(os.path.join(bdir, "obj"), exist_ok=True)
    t0 = time.time()
    local_cache = os.path.join(bdir, ".zig-cache")
    try:
        run_zig_all(cmds, bdir, target.name, shared=shared, local_cache=local_cache)
    finally:
        shutil.rmtree(local_cache, ignore_errors=True)
    log(f"compiled with zig {zv} for {target.zig_target} in {time.time() - t0:.1f} s")
    linked = os.path.getsize(os.path.join(bdir, out_name))
    if weights != "external" and linked < g["blob_bytes"]:
        # a linker that drops part of an embedded blob must not leave a binary that crashes
        raise BitnetError(f"the linked program ({linked} bytes) is smaller than its embedded weights "
                          f"({g['blob_bytes']} bytes): the toolchain truncated them; build with "
                          "--weights external")
    if weights == "external":
        shutil.copyfile(os.path.join(bdir, "weights.bin"), output + ".weights")
    tmp = output + ".tmp"
    shutil.copyfile(os.path.join(bdir, out_name), tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
    secs = time.time() - t_start
    log(f"built {output} ({os.path.getsize(output) / 2**20:.1f} MiB) in {secs:.1f} s")
    return BuildResult(output=output, build_dir=bdir, target=target.name, kernel=g["kernel"],
                       blob_bytes=g["blob_bytes"], blob_sha256=g["sha"], seconds=secs, commands=cmds)
