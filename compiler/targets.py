"""Target descriptions: one declarative TOML file per target in targets/."""
from __future__ import annotations

import platform
import tomllib
from dataclasses import dataclass, field
from importlib import resources

from .errors import BitnetError


@dataclass
class Target:
    name: str
    description: str
    zig_target: str
    arch: str
    object_format: str          # elf | macho | coff | wasm
    simd_features: list
    kernels: list
    default_kernel: str
    threads: bool
    blob_section: str
    pointer_table: bool
    pointer_directive: str
    symbol_prefix: str
    extra_cflags: list
    max_blob_bytes: int
    exe_suffix: str
    run: str                    # native | qemu | wasmtime | wine | none
    qemu: str = ""
    l2_cache_bytes: int = 524288
    static: bool = True         # link with -static (Mach-O executables always link libSystem)
    cpu_dispatch: bool = True   # compile the SIMD kernel variants and pick one at start-up
    extra_ldflags: list = field(default_factory=list)


def _target_dir():
    return resources.files("bitnet_aot.target_files")


def list_targets() -> list:
    out = []
    for f in sorted(_target_dir().iterdir(), key=lambda p: p.name.removesuffix(".toml")):
        if f.name.endswith(".toml"):
            out.append(load_target(f.name[:-5]))
    return out


def host_target_name() -> str:
    m = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)
    system = {"darwin": "macos"}.get(platform.system().lower(), platform.system().lower())
    if arch.startswith("armv7") or arch.startswith("armv6"):
        arch = "armv7"
    name = f"{arch}-{system}"
    if name in ("x86_64-linux", "aarch64-linux", "armv7-linux", "riscv64-linux", "x86_64-macos",
                "aarch64-macos", "x86_64-windows"):
        return name
    raise BitnetError(f"no target is defined for this host ({m}, {platform.system()}); pass --target, "
                      "see `bitnet-aot targets`")


def load_target(name: str) -> Target:
    if name in ("host", "native"):
        name = host_target_name()
    f = _target_dir() / f"{name}.toml"
    if not f.is_file():
        names = ", ".join(t.name for t in list_targets())
        raise BitnetError(f"unknown target {name!r}; choose one of: {names}")
    d = tomllib.loads(f.read_text())
    unknown = sorted(set(d) - set(Target.__dataclass_fields__))
    if unknown:
        raise BitnetError(f"{f.name}: unknown key(s) {', '.join(unknown)}; the keys are the fields of "
                          f"bitnet_aot.targets.Target")
    return Target(**d)
