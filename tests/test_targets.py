"""Every target in targets/, end to end.

- Where this machine can run a target's binary (natively, under qemu-user, under wasmtime),
  a compiled factory model's greedy tokens equal the numpy reference's: plain greedy, and
  greedy with a repetition penalty (which makes every generated token different, so a wrong
  logit anywhere shows).
- x86-64 binaries under a CPU without AVX2 and aarch64 binaries under a CPU without the dot
  product run the whole model on their fallback kernels (no SIGILL).
- Windows binaries run under wine64 (the emulated suite): greedy and penalised greedy equal
  the reference, --verify passes, --chat on piped input (CRLF lines) gives the Linux
  binary's ids and text, and `serve` refuses with its one line.
- macOS binaries, which cannot run here, and Windows ones are checked for their format
  (Mach-O, PE), what they import, and the integrity of their embedded weights (`bitnet-aot
  verify`, which finds the blob by its marker without running the binary).

Cross builds under the `emulated` marker cover every target at least once; the default run
builds the two macOS binaries and the baseline x86-64 one (about 10 s each even with an
empty zig cache, 5 s once it is warm).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import pytest

from bitnet_aot.errors import BitnetError
from bitnet_aot.gguf_import import load_gguf
from bitnet_aot.reference import Reference
from bitnet_aot.targets import list_targets
from bitnet_aot.verify import verify

from conftest import have

N_GEN = 32
PENALTY = 2.0          # --repeat-penalty of the second check (with --repeat-last-n 64)

TARGETS = {t.name: t for t in list_targets()}
BUILD_ONLY = sorted(n for n, t in TARGETS.items() if t.run == "none")
# binaries checked for their format and embedded weights: those that cannot run here, and
# the Windows ones (which also run under wine)
FORMAT_CHECKED = sorted(n for n, t in TARGETS.items() if t.run in ("none", "wine"))
# Build-only targets the default run checks: macOS links zig's libSystem stubs, so even a
# first build takes ~10 s. The first Windows build compiles MinGW (~1 min): emulated suite.
DEFAULT_RUN_FOREIGN = [n for n in BUILD_ONLY if TARGETS[n].object_format == "macho"]


# ---- the model and its expected tokens ------------------------------------------------

def _penalised_greedy(m, prompt, n, penalty, last_n=64):
    """Greedy with llama.cpp's repetition penalty, as sampler.c applies it: each id among
    the last `last_n` tokens (prompt included) once, logit / p if positive, else * p."""
    ref = Reference(m)
    logits = ref.forward(prompt)[-1]
    hist, out = list(prompt), []
    for _ in range(n):
        lg = logits.copy()
        for t in set(hist[-last_n:]):
            lg[t] = lg[t] / penalty if lg[t] > 0 else lg[t] * penalty
        t = int(np.argmax(lg))
        out.append(t)
        hist.append(t)
        logits = ref.forward([t])[-1]
    return out


@pytest.fixture(scope="session")
def model(cache):
    """(gguf path, prompt ids, greedy ids, penalised greedy ids) of the factory model."""
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    m = load_gguf(gguf)
    prompt = np.random.default_rng(11).integers(3, m.hp.n_vocab, 8).tolist()
    greedy = Reference(m).generate_greedy(prompt, N_GEN)
    penalised = _penalised_greedy(m, prompt, N_GEN, PENALTY)
    assert len(set(penalised)) > N_GEN // 2      # the check below sees many different tokens
    return gguf, prompt, greedy, penalised


# ---- running a binary -----------------------------------------------------------------

def _run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    return p.returncode, p.stdout, p.stderr


def run_wasm(exe, args, dirs=()):
    """Run a WASI module: the wasmtime CLI if installed, else wasmtime's Python API.
    dirs: (host directory, guest path) pairs to preopen. Returns (exit code, stdout, stderr)."""
    if have("wasmtime"):
        return _run(["wasmtime", "run"] + [f"--dir={h}::{g}" for h, g in dirs] + [exe] + list(args))
    wasmtime = pytest.importorskip("wasmtime")
    with tempfile.TemporaryDirectory() as td:
        out, err = os.path.join(td, "stdout"), os.path.join(td, "stderr")
        engine = wasmtime.Engine()
        store = wasmtime.Store(engine)
        cfg = wasmtime.WasiConfig()
        cfg.argv = [os.path.basename(exe)] + list(args)
        cfg.stdout_file, cfg.stderr_file = out, err
        for h, g in dirs:
            cfg.preopen_dir(h, g)
        store.set_wasi(cfg)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        instance = linker.instantiate(store, wasmtime.Module.from_file(engine, exe))
        try:
            instance.exports(store)["_start"](store)
            rc = 0
        except wasmtime.ExitTrap as e:
            rc = e.code
        except wasmtime.Trap as e:       # a crash inside the module
            rc = -1
            with open(err, "a") as f:
                f.write(f"\ntrap: {e}")
        with open(out) as fo, open(err) as fe:
            return rc, fo.read(), fe.read()


WINE = shutil.which("wine64") or ("/usr/lib/wine/wine64" if os.path.exists("/usr/lib/wine/wine64") else None) \
    or shutil.which("wine")


def wine_env():
    """Environment for wine64: a prefix of our own (created on first use: `wineboot --init`,
    about 20 s; no display, no Mono/Gecko installers), and no debug chatter on stderr."""
    if not WINE:
        pytest.skip("wine64 not installed (apt-get install wine64)")
    prefix = os.environ.get("BITNET_AOT_WINEPREFIX") or os.path.expanduser("~/.cache/bitnet-aot/wine")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(WINEPREFIX=prefix, WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    if not os.path.isfile(os.path.join(prefix, "system.reg")):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run([WINE, "wineboot", "--init"], env=env, capture_output=True, timeout=600)
        subprocess.run([shutil.which("wineserver") or "wineserver", "-w"], env=env, capture_output=True, timeout=600)
    return env


def run_binary(target, exe, args, cpu=None, dirs=(), stdin=None):
    t = TARGETS[target]
    if t.run == "wasmtime":
        return run_wasm(exe, args, dirs)
    if t.run == "wine":
        rc, out, err = _run([WINE, exe] + list(args), env=wine_env(), input=stdin)
        # wine's own notices about its prefix ("wine: configuration in ... has been updated")
        return rc, out, "".join(ln for ln in err.splitlines(True) if not ln.startswith(("wine: ", "wineserver: ")))
    prefix = []
    if t.run == "qemu" or cpu:
        if not have(t.qemu):
            pytest.skip(f"{t.qemu} not installed (apt-get install qemu-user)")
        prefix = [t.qemu] + (["-cpu", cpu] if cpu else [])
    return _run(prefix + [exe] + list(args), input=stdin)


def generate(target, exe, prompt, extra=(), cpu=None):
    args = ["--ids", " ".join(map(str, prompt)), "-n", str(N_GEN), "--temp", "0", "--print-ids",
            "--ignore-eos"] + list(extra)
    if TARGETS[target].threads:
        args += ["-t", "2"]
    rc, out, err = run_binary(target, exe, args, cpu=cpu)
    assert rc == 0, f"{target}: exit {rc}: {err[-2000:]}"
    return [int(t) for t in out.split()], err


def check_matches_reference(target, exe, model, cpu=None):
    """Plain and penalised greedy tokens equal the reference's. Returns the timing line."""
    _, prompt, greedy, penalised = model
    got, err = generate(target, exe, prompt, cpu=cpu)
    assert got == greedy, f"{target} (cpu {cpu}): greedy tokens differ from the reference"
    got, err = generate(target, exe, prompt, ["--repeat-penalty", str(PENALTY), "--repeat-last-n", "64"], cpu=cpu)
    assert got == penalised, f"{target} (cpu {cpu}): penalised greedy tokens differ from the reference"
    return err


# ---- the target files and `bitnet-aot targets` ------------------------------------------

def test_every_target_file_is_consistent():
    from bitnet_aot.kernels import FAST_LAYOUTS, arch_of
    assert {"x86_64-linux", "x86_64-linux-baseline", "aarch64-linux", "armv7-linux", "riscv64-linux",
            "aarch64-android", "x86_64-macos", "aarch64-macos", "x86_64-windows", "wasm32-wasi"} <= set(TARGETS)
    for name, t in TARGETS.items():
        assert t.name == name, name                    # misspelled keys: load_target refuses them
        assert t.run in ("native", "qemu", "wasmtime", "wine", "none"), name
        assert t.run != "wine" or t.object_format == "coff", name
        assert t.run != "qemu" or t.qemu.startswith("qemu-"), name
        assert t.default_kernel in t.kernels and "i2s" in t.kernels, name
        simd = FAST_LAYOUTS.get(arch_of(t.zig_target), ()) if t.cpu_dispatch else ()
        assert set(t.kernels) - {"i2s"} <= set(simd), f"{name}: a tl kernel without its SIMD variant"
        assert t.object_format in ("elf", "macho", "coff", "wasm"), name
        assert (t.symbol_prefix == "_") == (t.object_format == "macho"), name
        assert t.exe_suffix == {"coff": ".exe", "wasm": ".wasm"}.get(t.object_format, ""), name
        assert t.static == (t.object_format != "macho"), name
        assert t.threads == (t.object_format != "wasm"), name
        assert 0 < t.max_blob_bytes and (t.object_format != "coff" or t.max_blob_bytes < 2 ** 32), name


def test_targets_command_lists_every_target(capsys):
    from bitnet_aot.cli import main
    main(["targets"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["target", "zig"]
    names = [ln.split()[0] for ln in lines[1:]]
    assert names == sorted(TARGETS)
    col = lines[0].index("zig triple")          # columns line up under their headings
    assert all(ln[col - 2:col] == "  " and ln[col] != " " for ln in lines[1:])
    main(["targets", "--json"])
    assert {d["name"] for d in json.loads(capsys.readouterr().out)} == set(TARGETS)


# ---- runnable targets -----------------------------------------------------------------

ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "arm": 40, "riscv64": 243}


def _check_elf(path, arch):
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF", path
    assert struct.unpack_from("<H", head, 18)[0] == ELF_MACHINE[arch], path


@pytest.mark.emulated
@pytest.mark.parametrize("target,cpu", [
    ("armv7-linux", None),
    ("armv7-linux", "arm1176"),           # Pi Zero/1: ARMv6, no NEON (the portable kernels)
    ("riscv64-linux", None),
    ("aarch64-android", None),
    ("aarch64-linux", "cortex-a72"),      # no dot product: the NEON variant without sdot
    ("x86_64-linux-baseline", "Nehalem"),
    ("wasm32-wasi", None),
    ("x86_64-windows", None),             # under wine64
])
def test_emulated_target_matches_reference(cache, model, target, cpu):
    t = TARGETS[target]
    res = cache.build(model[0], target, shared=False)
    if t.object_format == "elf":
        _check_elf(res.output, t.arch)
    check_matches_reference(target, res.output, model, cpu=cpu)
    rc, out, err = run_binary(target, res.output, ["--verify"], cpu=cpu)
    assert rc == 0 and "weights OK" in out, err
    rc, out, err = run_binary(target, res.output, ["--info"], cpu=cpu)
    assert rc == 0 and json.loads(out.splitlines()[0])["target"] == target, err


@pytest.mark.emulated
def test_windows_binary_runs_under_wine(cache, model):
    """The x86_64-windows .exe under wine64: the tl2 kernel matches the reference too (the
    default i2s one: test_emulated_target_matches_reference), a chat on piped input with
    CRLF line endings evaluates and prints what the Linux binary does, and serve refuses."""
    exe = cache.build(model[0], "x86_64-windows", shared=False, kernel="tl2").output
    err = check_matches_reference("x86_64-windows", exe, model)
    assert "kernel tl2_" in err, err
    win = cache.build(model[0], "x86_64-windows", shared=False).output
    linux = cache.build(model[0], "host", shared=False).output
    args = ["--chat", "--chat-format", "bitnet", "--print-ids", "--temp", "0", "-n", "6", "-t", "2", "--no-timings"]
    rc_w, out_w, err_w = run_binary("x86_64-windows", win, args, stdin="Hello there\r\nWhat next?\r\n")
    rc_l, out_l, err_l = _run([linux] + args, input="Hello there\nWhat next?\n")
    assert rc_w == 0 and rc_l == 0, err_w + err_l
    ids = [ln for ln in err_w.splitlines() if ln.startswith("ids:")]
    assert len(ids) == 2, err_w
    assert ids == [ln for ln in err_l.splitlines() if ln.startswith("ids:")]
    assert out_w.replace("\r\n", "\n") == out_l
    rc, out, err = run_binary("x86_64-windows", win, ["serve", "--port", "8000"])
    assert rc == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: serve is not supported on this target (Windows)"), err


@pytest.mark.emulated
@pytest.mark.skipif(not have("qemu-x86_64"), reason="needs qemu-user (apt-get install qemu-user)")
@pytest.mark.parametrize("kernel,fallback", [("i2s", "i2s_generic"), ("tl2", "tl2_scalar")])
def test_x86_64_without_avx2_falls_back(cache, model, kernel, fallback):
    """The x86_64-linux binary (AVX2 kernels and head) on a Nehalem: no AVX at all."""
    res = cache.build(model[0], "x86_64-linux", shared=False, kernel=kernel)
    err = check_matches_reference("x86_64-linux", res.output, model, cpu="Nehalem")
    assert f"kernel {fallback}" in err, err


def test_baseline_target_runs_without_simd_kernels(cache, model):
    res = cache.build(model[0], "x86_64-linux-baseline", shared=False)
    err = check_matches_reference("x86_64-linux-baseline", res.output, model)
    assert "kernel i2s_generic" in err, err
    rc, out, _ = _run([res.output, "--info"])
    assert rc == 0 and out.splitlines()[1] == "kernel: i2s_generic"


@pytest.mark.emulated
def test_wasm_reads_external_weights_and_refuses_serve(cache, model, tmp_path):
    """WASI has no mmap (the weights file is read into memory) and no sockets."""
    res = cache.build(model[0], "wasm32-wasi", shared=False, weights="external")
    d = tmp_path / "w"
    d.mkdir()
    shutil.copy(res.output + ".weights", d / "model.weights")
    _, prompt, greedy, _ = model
    args = ["--weights", "/w/model.weights", "--ids", " ".join(map(str, prompt)), "-n", str(N_GEN),
            "--temp", "0", "--print-ids", "--ignore-eos"]
    rc, out, err = run_wasm(res.output, args, dirs=[(str(d), "/w")])
    assert rc == 0, err
    assert [int(t) for t in out.split()] == greedy
    (d / "model.weights").write_bytes(b"\0" * 100)
    rc, _, err = run_wasm(res.output, args, dirs=[(str(d), "/w")])
    assert rc == 2 and "has 100 bytes" in err, err
    embedded = cache.build(model[0], "wasm32-wasi", shared=False)
    rc, _, err = run_wasm(embedded.output, ["serve"])
    assert rc == 2 and "not supported on this target (WASI)" in err, err


# ---- build-only targets: format, imports, embedded weights ----------------------------

MACHO_CPU = {"x86_64": 0x01000007, "aarch64": 0x0100000C}
LC_LOAD_DYLIB, LC_BUILD_VERSION, LC_CODE_SIGNATURE = 0xC, 0x32, 0x1D


def check_macho(path, arch):
    with open(path, "rb") as f:
        d = f.read(1 << 16)
    magic, cputype, _, filetype, ncmds, _, _, _ = struct.unpack_from("<IiiIIIII", d, 0)
    assert magic == 0xFEEDFACF, hex(magic)       # 64-bit Mach-O, little-endian (bytes cf fa ed fe)
    assert cputype == MACHO_CPU[arch] and filetype == 2, (hex(cputype), filetype)   # MH_EXECUTE
    off, dylibs, cmds, minos = 32, [], set(), None
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", d, off)
        cmds.add(cmd)
        if cmd == LC_LOAD_DYLIB:
            name_off = struct.unpack_from("<I", d, off + 8)[0]
            dylibs.append(d[off + name_off:off + size].split(b"\0")[0].decode())
        if cmd == LC_BUILD_VERSION:
            minos = struct.unpack_from("<I", d, off + 12)[0]
        off += size
    assert dylibs == ["/usr/lib/libSystem.B.dylib"], dylibs
    assert minos == 11 << 16, hex(minos or 0)     # runs on macOS 11 (Big Sur) and later
    if arch == "aarch64":
        assert LC_CODE_SIGNATURE in cmds         # Apple silicon refuses unsigned code


def check_pe(path):
    with open(path, "rb") as f:
        d = f.read()
    assert d[:2] == b"MZ"
    pe = struct.unpack_from("<I", d, 0x3C)[0]
    assert d[pe:pe + 4] == b"PE\0\0"
    machine, nsect, _, _, _, opt_size, chars = struct.unpack_from("<HHIIIHH", d, pe + 4)
    assert machine == 0x8664 and chars & 0x2, (hex(machine), hex(chars))   # AMD64, executable image
    opt = pe + 24
    assert struct.unpack_from("<H", d, opt)[0] == 0x20B                      # PE32+
    assert struct.unpack_from("<H", d, opt + 68)[0] == 3                     # console subsystem
    import_rva = struct.unpack_from("<I", d, opt + 112 + 8)[0]               # data directory 1
    sections = [struct.unpack_from("<8sIIII", d, opt + opt_size + 40 * i) for i in range(nsect)]

    def at(rva):
        for _, vsize, va, rsize, raw in sections:
            if va <= rva < va + max(vsize, rsize):
                return rva - va + raw
        raise AssertionError(f"RVA {rva:#x} outside every section")

    dlls, p = [], at(import_rva)
    while struct.unpack_from("<I", d, p + 12)[0]:
        name = at(struct.unpack_from("<I", d, p + 12)[0])
        dlls.append(d[name:d.index(b"\0", name)].decode().lower())
        p += 20
    # only what every Windows 10+ has: KERNEL32 and the Universal C Runtime
    assert "kernel32.dll" in dlls and all(x == "kernel32.dll" or x.startswith("api-ms-win-crt-") for x in dlls), dlls


def check_format(target, path):
    t = TARGETS[target]
    if t.object_format == "macho":
        check_macho(path, t.arch)
    elif t.object_format == "coff":
        check_pe(path)
    else:
        raise AssertionError(f"no format check for {target}")


def check_blob(path, gguf, tmp_path):
    r = verify(path, gguf)
    assert r["weights_ok"] and r["source_ok"]
    # one flipped bit inside the embedded weights is found
    bad = str(tmp_path / ("bad-" + os.path.basename(path)))
    shutil.copy(path, bad)
    with open(path, "rb") as f:
        at = f.read().find(b"BITNET-AOT-BLOB1")
    with open(bad, "r+b") as f:
        f.seek(at + 64 + 1000)
        b = f.read(1)
        f.seek(at + 64 + 1000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(BitnetError, match="corrupt"):
        verify(bad)


@pytest.fixture(scope="session")
def foreign_builds(cache, model):
    """The default run's build-only binaries (default kernel, embedded weights), built once."""
    return {name: cache.build(model[0], name, shared=False) for name in DEFAULT_RUN_FOREIGN}


@pytest.mark.parametrize("target", DEFAULT_RUN_FOREIGN)
def test_foreign_binary_format_and_weights(foreign_builds, model, target, tmp_path):
    res = foreign_builds[target]
    check_format(target, res.output)
    check_blob(res.output, model[0], tmp_path)


@pytest.mark.emulated
@pytest.mark.parametrize("target,kernel", [(n, k) for n in FORMAT_CHECKED for k in TARGETS[n].kernels
                                           if n not in DEFAULT_RUN_FOREIGN or k != TARGETS[n].default_kernel])
def test_foreign_binary_format_and_weights_each_kernel(cache, model, target, kernel, tmp_path):
    """The emulated suite builds every build-only target too, with every kernel."""
    res = cache.build(model[0], target, shared=False, kernel=kernel)
    check_format(target, res.output)
    check_blob(res.output, model[0], tmp_path)
