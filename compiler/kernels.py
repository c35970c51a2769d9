"""Which kernel sources a target's binary compiles, with which extra flags.

The build driver compiles every (source, flags) of the target's architecture into its own
object (ISA flags are per file: only the file of a variant may use that variant's
instructions) and links them together with dispatch.c, which picks a variant at start-up
(runtime_c/core/kernels/dispatch.c). Paths are relative to runtime_c/core/kernels/.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelSource:
    source: str            # file in runtime_c/core/kernels/
    flags: tuple[str, ...]  # extra compiler flags for this file only
    isa: str               # "scalar", "avx2", "avxvnni", "avx512vnni", "neon", "neon_dotprod", or "" for dispatch


_PORTABLE = (
    KernelSource("i2s_scalar.c", (), "scalar"),
    KernelSource("i2s_generic.c", (), "generic"),
    KernelSource("i2sg_scalar.c", (), "scalar"),
    KernelSource("tl_scalar.c", (), "scalar"),
    KernelSource("attn.c", (), "scalar"),
    KernelSource("attn_scalar.c", (), "scalar"),
    KernelSource("head_portable.c", (), "scalar"),
    KernelSource("dispatch.c", (), ""),
)

# zig target architecture (first part of the triple) -> sources.
KERNEL_SOURCES: dict[str, tuple[KernelSource, ...]] = {
    "x86_64": _PORTABLE + (
        KernelSource("i2s_avx2.c", ("-mavx2",), "avx2"),
        KernelSource("i2s_avxvnni.c", ("-mavx2", "-mavxvnni"), "avxvnni"),
        KernelSource("i2s_avx512.c", ("-mavx2", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"), "avx512vnni"),
        KernelSource("tl2_avx2.c", ("-mavx2",), "avx2"),
        KernelSource("i2sg_avx2.c", ("-mavx2", "-mf16c"), "avx2"),
        KernelSource("i2sg_avx512.c", ("-mavx2", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"),
                     "avx512vnni"),
        KernelSource("attn_avx2.c", ("-mavx2", "-mf16c"), "avx2"),
        KernelSource("head_avx2.c", ("-mavx2", "-mf16c", "-mfma"), "avx2"),
        KernelSource("head_avxvnni.c", ("-mavx2", "-mf16c", "-mfma", "-mavxvnni"), "avxvnni"),
        KernelSource("head_avx512.c", ("-mavx2", "-mf16c", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl",
                                       "-mavx512vnni"), "avx512vnni"),
    ),
    "aarch64": _PORTABLE + (
        KernelSource("i2s_neon.c", (), "neon"),
        KernelSource("i2s_neon_dotprod.c", ("-mcpu=generic+dotprod",), "neon_dotprod"),
        KernelSource("tl1_neon.c", (), "neon"),
        KernelSource("i2sg_neon.c", (), "neon"),
        KernelSource("i2sg_neon_dotprod.c", ("-mcpu=generic+dotprod",), "neon_dotprod"),
        KernelSource("attn_neon.c", (), "neon"),
        KernelSource("head_neon.c", (), "neon"),
        KernelSource("head_neon_dotprod.c", ("-mcpu=generic+dotprod",), "neon_dotprod"),
    ),
    # 32-bit ARM (armv7-linux): the target's code is ARMv6 + VFP (every Pi); only the NEON
    # file is ARMv7 + NEON, and dispatch.c calls it only on a CPU that reports NEON.
    "arm": _PORTABLE + (
        KernelSource("i2s_neon.c", ("-mcpu=generic+v7a+neon",), "neon"),
    ),
}

# Layouts with a SIMD kernel per architecture (others run the scalar kernel of the layout).
FAST_LAYOUTS = {"x86_64": ("i2s", "tl2"), "aarch64": ("i2s", "tl1")}


def kernel_sources(arch: str, cpu_dispatch: bool = True) -> list[KernelSource]:
    """Sources for a target architecture. Without cpu_dispatch only the portable ones are
    compiled and dispatch.c is built with -DKERNELS_SCALAR_ONLY."""
    if not cpu_dispatch or arch not in KERNEL_SOURCES:
        return [KernelSource(s.source, s.flags + (("-DKERNELS_SCALAR_ONLY",) if s.isa == "" else ()), s.isa)
                for s in _PORTABLE]
    return list(KERNEL_SOURCES[arch])


def arch_of(triple: str) -> str:
    return triple.split("-")[0]


KERNELS_DIR = "core/kernels"              # inside runtime_c/ (and src/ of a build tree)
KERNELS_DIR_NAME = "runtime_c/" + KERNELS_DIR


def build_kernel_program(triple: str, main_sources: list[str], out: str, *, repo_root: str,
                         cflags: tuple[str, ...] = ("-O2",), cpu_dispatch: bool = True,
                         workdir: str | None = None, main_cflags: tuple[str, ...] = (),
                         sources: list[KernelSource] | None = None) -> str:
    """Compile `main_sources` plus the target's kernel sources (each file with its own ISA
    flags) with zig cc and link them into `out`. Used by the kernel tests and benchmarks;
    zig runs as for a model build (toolchain.run_zig: the same cache and environment), and
    the kernel objects go through the object cache (toolchain.run_zig_cached), so programs
    with the same kernels and cflags compile them once. main_cflags: flags for the main
    sources only (include directories of a generated tree, say). sources: the kernel sources
    to compile instead of the target's (tests/conftest.py's avxvnni_as_evex)."""
    import os
    import tempfile

    from .toolchain import run_zig, run_zig_cached

    kdir = os.path.join(repo_root, KERNELS_DIR_NAME)
    wd = workdir or tempfile.mkdtemp(prefix="kobj-")
    cc = ["cc", "-target", triple]
    objs = []
    for i, ks in enumerate(sources if sources is not None else kernel_sources(arch_of(triple), cpu_dispatch)):
        obj = os.path.join(wd, f"{i}-{ks.source}-{ks.isa or 'dispatch'}.o")
        run_zig_cached(cc + list(cflags) + list(ks.flags) + ["-I", kdir, "-c", os.path.join(kdir, ks.source), "-o", obj],
                       wd, f"compiling {ks.source}", local_cache=os.path.join(wd, ".zig-cache"))
        objs.append(obj)
    run_zig(cc + list(cflags) + list(main_cflags) + ["-I", kdir] + list(main_sources) + objs + ["-o", out], wd,
            f"linking {os.path.basename(out)}", local_cache=os.path.join(wd, ".zig-cache"))
    return out


def cpu_feature_bits() -> dict:
    """KCPU_* name -> bit, read from runtime_c/core/kernels/kernels.h (stated there once)."""
    import re
    from importlib import resources
    text = resources.files("bitnet_aot.runtime_c").joinpath("core", "kernels", "kernels.h").read_text(encoding="utf-8")
    return {name: 1 << int(shift) for name, shift in re.findall(r"\b(KCPU_[A-Z0-9_]+)\s*=\s*1u\s*<<\s*(\d+)", text)}
