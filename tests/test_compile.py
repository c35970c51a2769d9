"""The compile path end to end: compiled model vs numpy reference, threads, the static
binary, --verify, sanitizers, and aarch64 under qemu."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from bitnet_aot.bindings.api import CompiledModel
from bitnet_aot.factory import ARCHS, PROJ_TYPES
from bitnet_aot.gguf_import import load_gguf
from bitnet_aot.reference import Reference

from conftest import have, host_cpu_flags, sanitized_binary

SEQ = 64

# Default run: every architecture (with TQ2_0) and every projection type (with
# bitnet-b1.58). The full grid runs under the `slow` marker.
DEFAULT_GRID = [(a, "tq2_0") for a in ARCHS] + [("bitnet-b1.58", t) for t in PROJ_TYPES if t != "tq2_0"]
FULL_GRID = [(a, t) for a in ARCHS for t in PROJ_TYPES if (a, t) not in DEFAULT_GRID]


def _tokens(n_vocab, n, seed=0):
    return np.random.default_rng(seed).integers(3, n_vocab, n).astype(np.int32)


def _check_against_reference(cache, arch, ptype, kernel="auto"):
    gguf = cache.model(arch, ptype)
    lib = cache.build(gguf, kernel=kernel).output
    m = load_gguf(gguf)
    toks = _tokens(m.hp.n_vocab, SEQ)
    want = Reference(m).forward(toks)
    scale = float(np.ptp(want))
    per_thread = []
    # 8 threads: more than this machine's cores, so the pool's waits must yield to the
    # thread they wait for; the row split must not depend on the count either
    for threads in (1, 2, 3, 8):
        with CompiledModel(lib, n_ctx=256, n_threads=threads) as cm:
            # the first half as one batch (GEMM path), the rest token by token (GEMV path)
            got = np.concatenate([cm.eval(toks[:SEQ // 2])] + [cm.eval(toks[i:i + 1]) for i in range(SEQ // 2, SEQ)])
            per_thread.append(got)
            assert np.max(np.abs(got - want)) < 1e-3 * scale, (arch, ptype, threads)
            ids = cm.generate(toks[:8], SEQ, temperature=0.0, ignore_eos=True)
        ref_ids = Reference(m).generate_greedy(toks[:8], SEQ)
        assert ids == ref_ids, (arch, ptype, threads)
    # every thread count gives bit-identical logits
    assert all(np.array_equal(per_thread[0], p) for p in per_thread[1:])


@pytest.mark.parametrize("arch,ptype", DEFAULT_GRID)
def test_compiled_matches_reference(cache, arch, ptype):
    _check_against_reference(cache, arch, ptype)


@pytest.mark.parametrize("arch", ["bitnet-b1.58", "llama"])
def test_compiled_tl2_matches_reference(cache, arch):
    _check_against_reference(cache, arch, "tq2_0", kernel="tl2")


@pytest.mark.slow
@pytest.mark.parametrize("arch,ptype", FULL_GRID)
def test_compiled_matches_reference_full_grid(cache, arch, ptype):
    _check_against_reference(cache, arch, ptype)


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def static_binary(cache):
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    return gguf, cache.build(gguf, "x86_64-linux", shared=False)


def _greedy_ids_cli(cmd_prefix, binary, prompt, n):
    r = _run(cmd_prefix + [binary, "--ids", " ".join(map(str, prompt)), "-n", str(n), "--temp", "0",
                           "--print-ids", "--ignore-eos", "-t", "2"])
    assert r.returncode == 0, r.stderr
    return [int(t) for t in r.stdout.split()]


def _elf_is_static(path: str) -> bool:
    """An ELF executable with no program interpreter (PT_INTERP) and no dynamic section
    (PT_DYNAMIC) needs no loader or shared library: read from the program headers."""
    import struct
    with open(path, "rb") as f:
        h = f.read(64)
        assert h[:4] == b"\x7fELF" and h[4] == 2 and h[5] == 1, "not a 64-bit little-endian ELF"
        phoff, = struct.unpack_from("<Q", h, 32)
        phentsize, phnum = struct.unpack_from("<HH", h, 54)
        f.seek(phoff)
        types = [struct.unpack_from("<I", f.read(phentsize))[0] for _ in range(phnum)]
    assert types, "no program headers"
    return 3 not in types and 2 not in types          # PT_INTERP = 3, PT_DYNAMIC = 2


def test_static_binary_runs_anywhere_and_matches(static_binary, tmp_path):
    gguf, res = static_binary
    exe = str(tmp_path / "model")
    shutil.copy(res.output, exe)       # alone, in another directory
    assert _elf_is_static(exe)
    m = load_gguf(gguf)
    prompt = _tokens(m.hp.n_vocab, 6, seed=3).tolist()
    ids = _greedy_ids_cli([], exe, prompt, 32)
    assert ids == Reference(m).generate_greedy(prompt, 32)
    r = _run([exe, "--info"], cwd=str(tmp_path))
    assert r.returncode == 0 and m.source_sha256 in r.stdout and "kernel" in r.stdout


def test_verify_detects_a_flipped_byte(static_binary, tmp_path):
    _, res = static_binary
    exe = tmp_path / "model"
    shutil.copy(res.output, exe)
    assert _run([str(exe), "--verify"]).returncode == 0
    data = bytearray(exe.read_bytes())
    blob = open(os.path.join(res.build_dir, "weights.bin"), "rb").read()
    at = bytes(data).find(blob[:4096])
    assert at > 0
    data[at + len(blob) // 2] ^= 0x01
    exe.write_bytes(bytes(data))
    r = _run([str(exe), "--verify"])
    assert r.returncode != 0 and "corrupt" in r.stderr


def test_bad_flags_give_one_line(static_binary):
    _, res = static_binary
    for args in (["--temp", "abc"], ["-n", "-5"], ["--bogus"], ["-t", "0"], ["--ctx", "999999"], ["--ids", "1 2 99999"],
                 ["-p"], ["--top-p", "2"], ["--ids", "1 2", "--ctx", "2"]):
        r = _run([res.output] + args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_external_weights(cache, tmp_path):
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    res = cache.build(gguf, "x86_64-linux", shared=False, weights="external")
    assert os.path.exists(res.output + ".weights")
    assert os.path.getsize(res.output) < res.blob_bytes + (2 << 20)
    m = load_gguf(gguf)
    prompt = [5, 6, 7]
    assert _greedy_ids_cli([], res.output, prompt, 8) == Reference(m).generate_greedy(prompt, 8)
    exe = str(tmp_path / "alone")
    shutil.copy(res.output, exe)           # without its weights file: a clear error
    r = _run([exe, "--ids", "1 2"])
    assert r.returncode == 2 and "weights" in r.stderr


def test_emit_c_is_a_rebuildable_tree(cache, tmp_path):
    from bitnet_aot.build import build
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    d = tmp_path / "gen"
    build(gguf, "x86_64-linux", emit_c=str(d), log=lambda s: None)
    for f in ("build.sh", "weights.bin", "gen/model_config.h", "gen/weights_index.c", "gen/blob.S", "src/core/model.c"):
        assert (d / f).exists(), f
    r = _run(["sh", str(d / "build.sh")])
    assert r.returncode == 0, r.stderr
    r = _run([str(d / "model"), "--ids", "1 2 3", "-n", "4", "--temp", "0", "--print-ids"])
    assert r.returncode == 0 and len(r.stdout.split()) == 4


SANITIZE_DEFAULT = [("bitnet-b1.58", "tq2_0", "i2s", "auto")]
# Under -m slow: the test suite's other compiled configurations (every architecture, both x86
# kernels, quantized heads) run once under ASan + UBSan too.
SANITIZE_SLOW = [("bitnet-b1.58", "tq2_0", "i2s", "q6"), ("bitnet", "tq1_0", "i2s", "auto"), ("bitnet-25", "i2_s", "tl2", "q8"),
                 ("llama", "tq2_0", "tl2", "q4"), ("llama", "f16", "i2s", "auto")]


@pytest.mark.skipif(not have("gcc"), reason="needs the system gcc for ASan/UBSan")
@pytest.mark.parametrize("arch,ptype,kernel,head", SANITIZE_DEFAULT + [
    pytest.param(*c, marks=pytest.mark.slow) for c in SANITIZE_SLOW])
def test_generated_c_clean_under_asan_ubsan(cache, tmp_path, arch, ptype, kernel, head):
    """The same generated tree, compiled natively by gcc with -fsanitize=address,undefined."""
    from bitnet_aot.build import build
    gguf = cache.model(arch, ptype)
    d = tmp_path / "san"
    res = build(gguf, "x86_64-linux", emit_c=str(d), kernel=kernel, head=head, log=lambda s: None)
    sanitized_binary(d, res.commands)
    m = load_gguf(gguf)
    prompt = list(range(3, 40))
    for threads in ("1", "3"):
        r = _run([str(d / "san"), "--ids", " ".join(map(str, prompt)), "-n", "24", "--temp", "0", "--print-ids",
                  "--ignore-eos", "-t", threads])
        assert r.returncode == 0 and "runtime error" not in r.stderr and "AddressSanitizer" not in r.stderr, r.stderr
        assert [int(t) for t in r.stdout.split()] == Reference(m, head=head).generate_greedy(prompt, 24)
    r = _run([str(d / "san"), "--ids", "1 2", "-n", "300", "--temp", "0.9", "--top-k", "5", "--ctx", "64",
              "--repeat-penalty", "1.3", "--print-ids"])
    assert r.returncode == 0 and "runtime error" not in r.stderr, r.stderr
    if (arch, ptype, kernel, head) != SANITIZE_DEFAULT[0]:
        return
    # every kernel and attention variant this CPU has, forced one at a time (BN_KERNEL_VARIANT,
    # BN_ATTN_VARIANT), not only the one the host would pick
    want = Reference(m, head=head).generate_greedy(prompt, 8)
    ran = []
    for kv, av in [(k, "") for k in _host_variants(kernel)] + [("", a) for a in _host_attn_variants()]:
        env = {**os.environ, "BN_KERNEL_VARIANT": kv, "BN_ATTN_VARIANT": av}
        r = subprocess.run([str(d / "san"), "--ids", " ".join(map(str, prompt)), "-n", "8", "--temp", "0",
                            "--print-ids", "--ignore-eos", "-t", "2"], capture_output=True, text=True, env=env,
                           timeout=600)
        assert r.returncode == 0 and "runtime error" not in r.stderr and "AddressSanitizer" not in r.stderr, r.stderr
        assert [int(t) for t in r.stdout.split()] == want, (kv, av)
        if kv:
            assert f"kernel {kv}" in r.stderr, (kv, r.stderr[-300:])
        ran.append(kv or "attn_" + av)
    assert "i2s_scalar" in ran and "attn_scalar" in ran, ran


def _host_variants(layout: str) -> list:
    """The ternary kernels of `layout` in runtime_c/core/kernels/dispatch.c this CPU can run."""
    fl = host_cpu_flags()
    x86 = {"i2s_avx512vnni": {"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "i2s_avxvnni": {"avx2", "avx_vnni"},
           "i2s_avx2": {"avx2"}, "i2s_generic": set(), "i2s_scalar": set(), "tl2_avx2": {"avx2"},
           "tl2_scalar": set(), "tl1_scalar": set()}
    return [k for k, need in x86.items() if k.startswith(layout + "_") and need <= fl]


def _host_attn_variants() -> list:
    return (["avx2"] if {"avx2", "f16c"} <= host_cpu_flags() else []) + ["scalar"]


@pytest.mark.emulated
@pytest.mark.skipif(not have("qemu-aarch64"), reason="needs qemu-user (apt-get install qemu-user)")
@pytest.mark.parametrize("arch,kernel", [("bitnet-b1.58", "i2s"), ("llama", "i2s"), ("bitnet-b1.58", "tl1")])
def test_aarch64_under_qemu_matches_reference(cache, arch, kernel):
    gguf = cache.model(arch, "tq2_0")
    res = cache.build(gguf, "aarch64-linux", shared=False, kernel=kernel)
    m = load_gguf(gguf)
    prompt = _tokens(m.hp.n_vocab, 8, seed=11).tolist()
    want = Reference(m).generate_greedy(prompt, 48)
    for cpu in ("cortex-a72", "max"):       # without and with the dot-product extension
        assert _greedy_ids_cli(["qemu-aarch64", "-cpu", cpu], res.output, prompt, 48) == want, cpu


def test_blob_too_large_for_the_target_is_refused(cache, monkeypatch, tmp_path):
    """A target whose linker could truncate an embedded blob (aarch64: >= 4 GiB) refuses it."""
    import bitnet_aot.build as b
    from bitnet_aot.errors import BitnetError
    from bitnet_aot.targets import load_target
    t = load_target("aarch64-linux")
    t.max_blob_bytes = 100_000
    monkeypatch.setattr(b, "load_target", lambda name: t)
    with pytest.raises(BitnetError, match="--weights external"):
        b.build(cache.model(), "aarch64-linux", str(tmp_path / "x"), log=lambda s: None)


def test_large_blob_is_embedded_in_1gib_pieces():
    """One .incbin of 4 GiB or more is silently truncated by the toolchain (a 4.05 GiB blob
    left a 48 MB binary that crashed): a blob over 1 GiB is embedded as consecutive pieces
    that cover it exactly."""
    import re
    from bitnet_aot.codegen import INCBIN_CHUNK, BuildOptions, blob_s
    from bitnet_aot.targets import load_target
    t = load_target("x86_64-linux")
    n = 4 * INCBIN_CHUNK + 12345
    pieces = [(int(a), int(b)) for a, b in re.findall(r'\.incbin "weights\.bin", (\d+), (\d+)', blob_s(t, BuildOptions(), n))]
    assert len(pieces) == 5 and all(b <= INCBIN_CHUNK for _, b in pieces)
    assert [a for a, _ in pieces] == [sum(b for _, b in pieces[:i]) for i in range(5)]
    assert sum(b for _, b in pieces) == n
    small = blob_s(t, BuildOptions(), 1000)
    assert '.incbin "weights.bin"\n' in small and ".incbin \"weights.bin\"," not in small


def test_truncated_link_is_an_error_not_a_binary(cache, monkeypatch, tmp_path):
    """If the linked program is smaller than the weights it embeds, the build fails with one
    line instead of leaving a binary that crashes."""
    import bitnet_aot.build as b
    from bitnet_aot.errors import BitnetError

    def short_link(cmds, bdir, *a, **kw):
        with open(os.path.join(bdir, "model"), "wb") as f:
            f.write(b"\x7fELF too short")
    monkeypatch.setattr(b, "run_zig_all", short_link)
    with pytest.raises(BitnetError, match="truncated.*--weights external"):
        b.build(cache.model(), "x86_64-linux", str(tmp_path / "x"), log=lambda s: None)
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.slow
def test_blob_over_4gib_links_and_runs_on_x86_64(tmp_path):
    """A 4.2 GiB blob (f32 embedding, 2.2 M rows of 512): embedded in pieces, it links,
    verifies and gives the reference's tokens."""
    from bitnet_aot.build import build
    from bitnet_aot.factory import make_test_model
    p = make_test_model(str(tmp_path / "huge4.gguf"), "bitnet-b1.58", "tq2_0", n_layer=1, n_vocab=2_200_000,
                        n_embd=512, embd_type="f32", tokenizer=None, n_ctx=64)
    res = build(p, "x86_64-linux", str(tmp_path / "huge4"), log=lambda s: None)
    assert res.blob_bytes >= 2 ** 32
    assert os.path.getsize(res.output) > res.blob_bytes
    want = Reference(load_gguf(p)).generate_greedy([5, 2_199_990, 7], 2)
    os.remove(p)
    shutil.rmtree(res.build_dir, ignore_errors=True)
    r = _run([res.output, "--verify"])
    assert r.returncode == 0, r.stderr
    r = _run([res.output, "--ids", "5 2199990 7", "-n", "2", "--temp", "0", "--print-ids", "--ignore-eos"])
    assert r.returncode == 0, r.stderr
    assert [int(t) for t in r.stdout.split()] == want


@pytest.mark.slow
def test_blob_over_2gib_links_and_runs_on_x86_64(tmp_path):
    """x86-64 PC-relative references reach 2 GiB: the blob lives in a large-data section
    reached through a 64-bit pointer. A 2.1 GiB embedding (f32, 2.2 M rows) must link and run."""
    from bitnet_aot.build import build
    from bitnet_aot.factory import make_test_model
    p = make_test_model(str(tmp_path / "huge.gguf"), "bitnet-b1.58", "tq2_0", n_layer=1, n_vocab=2_200_000,
                        embd_type="f32", tokenizer=None, n_ctx=64)
    res = build(p, "x86_64-linux", str(tmp_path / "huge"), log=lambda s: None)
    assert res.blob_bytes > 2 ** 31
    want = Reference(load_gguf(p)).generate_greedy([5, 6, 7], 2)
    os.remove(p)
    r = _run([res.output, "--verify"])
    assert r.returncode == 0, r.stderr
    r = _run([res.output, "--ids", "5 6 7", "-n", "2", "--temp", "0", "--print-ids", "--ignore-eos", "-t", "2"])
    assert r.returncode == 0, r.stderr
    assert [int(t) for t in r.stdout.split()] == want


@pytest.mark.slow
def test_2b4t_shaped_model_builds_and_runs(tmp_path):
    """BitNet-b1.58-2B-4T shapes (30 layers, E 2560, F 6912, V 128256, F16 tied head)."""
    from bitnet_aot.build import build
    from bitnet_aot.factory import SHAPES_2B4T, make_test_model
    p = make_test_model(str(tmp_path / "2b4t.gguf"), "bitnet-b1.58", "tq2_0", tokenizer="bpe", **SHAPES_2B4T)
    logs = []
    res = build(p, "x86_64-linux", str(tmp_path / "m2b4t"), log=logs.append)
    assert any("built" in line and " s" in line for line in logs)          # the build reports its time
    assert 0.5e9 < res.blob_bytes < 1.3e9
    r = _run([res.output, "--ids", "1 2 3 4", "-n", "4", "--temp", "0", "--print-ids", "--ignore-eos", "-t", "2"])
    assert r.returncode == 0 and len(r.stdout.split()) == 4, r.stderr
    assert "timings:" in r.stderr


# The llama q6 head (untied, float embedding) under -m slow: the tied q6 and both untied
# quantized embeddings stay in the default run.
@pytest.mark.parametrize("arch,head,embed", [("bitnet-b1.58", "q8", "auto"), ("bitnet-b1.58", "q6", "auto"),
                                              ("bitnet-b1.58", "q4", "auto"), ("llama", "q8", "q4"),
                                              pytest.param("llama", "q6", "auto", marks=pytest.mark.slow),
                                              ("llama", "q4", "q6")])
def test_quantized_head_matches_reference_with_the_same_values(cache, arch, head, embed):
    """--head q8/q6/q4 (and --embed for an untied model): the compiled model equals the
    reference run with the values the packer wrote and the runtime's integer head
    (reference.quantized_head); tied models share one matrix. Every thread count gives the
    same bits."""
    gguf = cache.model(arch, "tq2_0")
    lib = cache.build(gguf, head=head, embed=embed).output
    m = load_gguf(gguf)
    toks = _tokens(m.hp.n_vocab, 32, seed=5)
    ref = Reference(m, head=head, embed=embed)
    want = ref.forward(toks)
    got = []
    for threads in (1, 3):
        with CompiledModel(lib, n_ctx=256, n_threads=threads) as cm:
            got.append(cm.eval(toks))
            assert np.max(np.abs(got[-1] - want)) < 1e-5 * float(np.ptp(want))
            assert cm.generate(toks[:8], 24, ignore_eos=True) == Reference(m, head=head, embed=embed).generate_greedy(toks[:8], 24)
    assert np.array_equal(got[0], got[1])


@pytest.mark.parametrize("width", [96, 288])
def test_quantized_heads_of_odd_widths(cache, width):
    """Widths that are not whole pairs of 32-blocks (padded rows), with and without a tail
    after the SIMD rows' groups of eight blocks."""
    gguf = cache.model("bitnet-b1.58", "f16", n_embd=width, n_head=width // 32, n_head_kv=1, n_ff=256)
    m = load_gguf(gguf)
    toks = _tokens(m.hp.n_vocab, 16, seed=7)
    for head in ("q8", "q6", "q4"):
        with CompiledModel(cache.build(gguf, head=head).output, n_ctx=64, n_threads=2) as cm:
            got = cm.eval(toks)
        want = Reference(m, head=head).forward(toks)
        assert np.max(np.abs(got - want)) < 1e-5 * float(np.ptp(want)), head


def test_quantized_heads_are_smaller(cache):
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    sizes = {h: cache.build(gguf, head=h).blob_bytes for h in ("f16", "q8", "q6", "q4")}
    assert sizes["q4"] < sizes["q6"] < sizes["q8"] < sizes["f16"]


def test_head_and_embed_options_are_checked(cache):
    from bitnet_aot.build import build
    from bitnet_aot.cli import MATRIX_CHOICES
    from bitnet_aot.errors import BitnetError
    from bitnet_aot.pack import MATRIX_CHOICES as PACK_CHOICES
    assert MATRIX_CHOICES == PACK_CHOICES
    with pytest.raises(BitnetError, match="--head must be one of auto, f32, f16, q8, q6, q4, not 'q5'"):
        build(cache.model(), "host", head="q5", log=lambda s: None)
    with pytest.raises(BitnetError, match="tied to its embedding.*use --head"):
        build(cache.model(), "host", embed="q8", log=lambda s: None)


def test_stdin_prompt_of_any_bytes_and_closed_stdout(static_binary, tmp_path):
    """A large stdin prompt with invalid UTF-8 is tokenized byte-wise (no crash), a prompt
    longer than the context is refused with one line, and a closed stdout (| head) ends the
    program quietly."""
    _, res = static_binary
    junk = bytes(range(256)) * 4 + "naïve café ☃ 日本".encode() + b"\xff\xfe\xc3"
    r = subprocess.run([res.output, "-f", "-", "-n", "4", "--ctx", "256", "--no-timings"], input=junk[:180],
                       capture_output=True, timeout=120)
    assert r.returncode in (0, 2), r.stderr
    if r.returncode == 2:
        assert r.stderr.decode().startswith("error: ") and b"context" in r.stderr
    big = tmp_path / "big.txt"
    big.write_bytes(junk * 200)                       # ~250 KB: far longer than the context
    r = subprocess.run([res.output, "-f", str(big), "-n", "4"], capture_output=True, timeout=120)
    assert r.returncode == 2 and r.stderr.decode().startswith("error: the prompt has") and \
        len(r.stderr.decode().strip().splitlines()) == 1
    p = subprocess.Popen(f"{res.output} --ids '1 2 3' -n 200 --ignore-eos --temp 0.8 --print-ids | head -c 5",
                         shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=120)
    assert len(out) == 5 and b"error" not in err.lower() and b"Segmentation" not in err


@pytest.mark.parametrize("kv", ["f16", "f32", "q8"])
def test_long_prompt_matches_reference_per_kv(cache, kv):
    """A 600-token prompt (two attention segments of 512 keys, a GQA group of 2) then 24
    tokens one at a time, per KV cache type: logits against the reference that stores the
    cache the same way, greedy tokens exactly, and 1 and 3 threads bit-identical."""
    gguf = cache.model("bitnet-b1.58", "tq2_0", n_ctx=1024)
    lib = cache.build(gguf, kv=kv).output
    m = load_gguf(gguf)
    toks = _tokens(m.hp.n_vocab, 624, seed=5)
    want = Reference(m, kv=kv).forward(toks)
    scale = float(np.ptp(want))
    got = {}
    for threads in (1, 3):
        with CompiledModel(lib, n_ctx=1024, n_threads=threads) as cm:
            got[threads] = np.concatenate([cm.eval(toks[:600])] + [cm.eval(toks[i:i + 1]) for i in range(600, 624)])
    assert np.max(np.abs(got[1] - want)) < 1e-4 * scale, kv
    assert np.array_equal(got[1], got[3])
    # the cache types differ from each other (the option reached the build)
    if kv != "f32":
        f32_logits = Reference(m, kv="f32").forward(toks)
        assert not np.array_equal(want, f32_logits)
    with CompiledModel(lib, n_ctx=1024, n_threads=2) as cm:
        ids = cm.generate(toks[:520], 16, temperature=0.0, ignore_eos=True)
    assert ids == Reference(m, kv=kv).generate_greedy(toks[:520], 16)


def _maxrss_kb(cmd) -> int:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 0, err
    return ru.ru_maxrss


def test_kv_cache_is_touched_only_as_it_fills(cache):
    """The KV cache of the whole context is reserved but resident memory follows the
    positions used: a 16-token run with --ctx 8192 (64 MiB of f32 cache reserved) stays
    within a few MiB of the same run with --ctx 256, and an 8000-token context accepted."""
    gguf = cache.model("bitnet-b1.58", "tq2_0", n_layer=4, n_head=4, n_head_kv=4, n_ctx=8192)
    exe = cache.build(gguf, "x86_64-linux", shared=False, kv="f32").output
    base = [exe, "--ids", "5 6 7 8", "-n", "12", "--temp", "0", "--ignore-eos", "-t", "1"]
    small = _maxrss_kb(base + ["--ctx", "256"])
    big = _maxrss_kb(base + ["--ctx", "8192"])
    assert big - small < 8 * 1024, (small, big)
    # and the default is the trained context: the same run fills nothing more
    assert _maxrss_kb(base) - small < 8 * 1024
