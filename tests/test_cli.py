"""The command lines as llama.cpp and OpenAI users expect them (issue 18), through the real
entry points: the `bitnet-aot` command (run as `python -m bitnet_aot.cli`, the installed
package) and the binary it builds.

- the compiled binary: random seeds by default, printed and reproducible; `--seed -1`,
  `-n -1`, `-c 0`, `--flag=value`; the end of the context announced; the finish reason in
  the timings line; `--ids ""` like `-p ""`; a warning for a prompt of invalid UTF-8;
- `bitnet-aot`: one build-cache entry shared by tokenize, perplexity and the binding,
  `cache list|clean`, the cache in `doctor`; `build` leaves no OUT.build unless
  --keep-build and wants the output folder to exist; progress lines; help text for every
  argument; `tokenize --pieces`, `-f`, stdin and a text starting with '-'.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from bitnet_aot.factory import make_test_model

N_CTX_TRAIN = 4200          # not a power of two: -c 0 is visibly the trained context


def bitnet_aot(args, env=None, input=None, timeout=900):
    r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli", *args], capture_output=True, text=True,
                       env=env, input=input, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def run(exe, args, input=None):
    r = subprocess.run([exe, *args], capture_output=True, input=input, timeout=300)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def one_error_line(rc, err):
    return rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def timings(err):
    lines = [x for x in err.splitlines() if x.startswith("timings:")]
    assert len(lines) == 1, err
    m = re.search(r"generation (\d+) tokens .*, seed (\d+), finish (.+)$", lines[0])
    assert m, lines[0]
    return int(m.group(1)), int(m.group(2)), m.group(3)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["BITNET_AOT_CACHE"] = str(tmp_path_factory.mktemp("build_cache"))
    e.pop("BITNET_AOT_BUILD_CACHE", None)
    e.pop("BITNET_AOT_PROGRESS_DELAY", None)
    return e


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return make_test_model(str(tmp_path_factory.mktemp("m") / "tiny.gguf"), "bitnet-b1.58", "tq2_0",
                           n_ctx=N_CTX_TRAIN, tokenizer="spm", seed=4)


@pytest.fixture(scope="module")
def built(gguf, tmp_path_factory, env):
    """`bitnet-aot build` with progress lines forced on (a pipe: plain lines)."""
    from bitnet_aot.toolchain import _libc_marker
    out = tmp_path_factory.mktemp("out") / "tiny"
    marker = _libc_marker("x86_64-linux", shared=False)     # "zig's libc for the target is built": say so
    if os.path.exists(marker):                               # as on a first build (the libc stays cached)
        os.remove(marker)
    rc, stdout, err = bitnet_aot(["build", gguf, "-o", str(out)], env=dict(env, BITNET_AOT_PROGRESS_DELAY="0"))
    assert os.path.exists(marker)
    assert rc == 0, err
    return str(out), err


# -------------------------------------------------------------------------------------
# The compiled binary
# -------------------------------------------------------------------------------------

SAMPLE = ["-p", "Once upon a time", "-n", "24", "--temp", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0",
          "--ignore-eos", "-t", "1"]


def test_seed_is_random_by_default_printed_and_reproducible(built):
    exe, _ = built
    runs = [run(exe, SAMPLE) for _ in range(3)]
    for rc, _, err in runs:
        assert rc == 0, err
    seeds = [timings(err)[1] for _, _, err in runs]
    texts = [out for _, out, _ in runs]
    assert len(set(seeds)) == 3 and len(set(texts)) > 1, (seeds, texts)
    # the printed seed gives the same text again; --seed -1 is random too
    rc, out, err = run(exe, SAMPLE + ["--seed", str(seeds[1])])
    assert rc == 0 and out == texts[1] and timings(err)[1] == seeds[1], err
    rc, out, err = run(exe, SAMPLE + ["--seed", "-1"])
    assert rc == 0 and timings(err)[1] not in seeds, err
    rc, out7, err = run(exe, SAMPLE + ["-s", "7"])
    assert rc == 0 and run(exe, SAMPLE + ["--seed=7"])[1] == out7


def test_llama_cpp_forms(built):
    exe, _ = built
    greedy = ["-p", "Hello", "-n", "8", "-t", "1", "--no-timings"]
    rc, want, err = run(exe, greedy + ["--temp", "0"])
    assert rc == 0, err
    for form in (["--temp=0"], ["--temp=0.0", "--top-k=40"], ["--temp", "0", "--n-predict=8"]):
        rc, out, err = run(exe, greedy + form)
        assert rc == 0 and out == want, (form, err)
    # -n -1: until the context is full (no end-of-text here), and said so on stderr
    rc, out, err = run(exe, ["--ids", "1 5 9", "-n", "-1", "--ctx", "40", "--temp", "0", "--ignore-eos",
                             "--print-ids", "-t", "1"])
    assert rc == 0, err
    assert len(out.split()) == 40 - 3
    assert "note: the context is full (40 tokens)" in err
    assert timings(err) [2] == "length (context full)"
    # -c 0: all of the trained context (4200 tokens)
    ids = " ".join(["7"] * 4190)
    rc, out, err = run(exe, ["--ids", ids, "-n", "-1", "-c", "0", "--temp", "0", "--ignore-eos", "--print-ids",
                             "-t", "1"])
    assert rc == 0 and len(out.split()) == 10, err
    assert "note: the context is full (4200 tokens)" in err, err
    rc, out, err = run(exe, ["--ids", ids, "-n", "-1", "-c", "4195", "--temp", "0", "--ignore-eos", "--print-ids",
                             "-t", "1"])
    assert rc == 0 and len(out.split()) == 5, err
    # value-less flags with =, and what stays an error
    for bad in (["--ignore-eos=1"], ["-n", "-2"], ["--seed", "-2"], ["-c", "-1"], ["--temp="], ["--bogus=3"]):
        rc, _, err = run(exe, ["-p", "x", *bad])
        assert one_error_line(rc, err), (bad, err)


def test_end_of_context_is_announced(built):
    exe, _ = built
    rc, out, err = run(exe, ["--ids", "1 2 3 4", "-n", "300", "--ctx", "64", "--ignore-eos", "--print-ids",
                             "--temp", "0.7", "-t", "1"])
    assert rc == 0, err
    assert len(out.split()) == 60
    warn = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(warn) == 1 and "context is full (64 tokens)" in warn[0] and "60 of the 300" in warn[0], err
    assert timings(err)[0] == 60 and timings(err)[2] == "length (context full)"
    # asked for fewer tokens than fit: no warning, finish "length"
    rc, out, err = run(exe, ["--ids", "1 2 3 4", "-n", "10", "--ctx", "64", "--ignore-eos", "-t", "1"])
    assert rc == 0 and "warning" not in err and "note" not in err and timings(err)[2] == "length", err


def test_finish_stop_at_end_of_text(built, gguf):
    """A run that samples the EOS token ends with finish "stop"."""
    from bitnet_aot.gguf_import import load_gguf
    exe, _ = built
    eos = load_gguf(gguf).tokenizer.eos_id
    for seed in range(40):        # temperature 100 is near-uniform over 512 tokens: EOS comes soon
        rc, out, err = run(exe, ["--ids", "1 2", "-n", "2000", "--temp", "100", "--top-k", "0", "--top-p", "1",
                                 "--min-p", "0", "--seed", str(seed), "--print-ids", "-t", "1"])
        assert rc == 0, err
        ids = [int(x) for x in out.split()]
        if ids and ids[-1] == eos:
            assert timings(err)[2] == "stop" and "warning" not in err
            return
    pytest.fail("no run ended at EOS")


def test_empty_prompts_and_invalid_utf8(built, tmp_path):
    exe, _ = built
    a = run(exe, ["-p", "", "-n", "6", "--temp", "0", "-t", "1", "--print-ids", "--no-timings"])
    b = run(exe, ["--ids", "", "-n", "6", "--temp", "0", "-t", "1", "--print-ids", "--no-timings"])
    assert a[0] == 0 and b[0] == 0 and a[1] == b[1] and len(a[1].split()) == 6, (a, b)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Hello \xff\xfe world")
    rc, out, err = run(exe, ["-f", str(bad), "-n", "2", "-t", "1", "--no-timings"])
    assert rc == 0 and err.count("warning:") == 1 and "not valid UTF-8" in err and "offset 6" in err, err
    good = tmp_path / "good.txt"
    good.write_bytes("Hello wörld 🦙".encode())
    rc, out, err = run(exe, ["-f", str(good), "-n", "2", "-t", "1", "--no-timings"])
    assert rc == 0 and "warning" not in err, err
    rc, out, err = run(exe, ["-p", "caf\xe9".encode("latin-1").decode("latin-1"), "-n", "1", "--no-timings"])
    assert rc == 0 and "warning" not in err      # (the shell passes the text as UTF-8)


def test_interactive_sessions_print_their_seed(built):
    exe, _ = built
    args = ["-i", "-p", "Once", "-n", "8", "--temp", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0", "-t", "1"]
    runs = [run(exe, args, input=b"upon a time\n") for _ in range(2)]
    seeds = []
    for rc, out, err in runs:
        assert rc == 0, err
        m = re.search(r"^timings: .*, seed (\d+)$", err, re.M)
        assert m, err
        seeds.append(int(m.group(1)))
    assert seeds[0] != seeds[1]
    rc, out, err = run(exe, args + ["--seed", str(seeds[0])], input=b"upon a time\n")
    assert rc == 0 and out == runs[0][1] and f"seed {seeds[0]}" in err


def test_help_lists_the_new_forms(built):
    exe, _ = built
    rc, out, err = run(exe, ["--help"])
    assert rc == 0
    assert "-1 = until end of text or context" in out and "0 = all of the trained context" in out
    assert "random" in out and "--flag=value" in out


# -------------------------------------------------------------------------------------
# bitnet-aot build: progress, no OUT.build, the output folder
# -------------------------------------------------------------------------------------

def test_build_progress_and_no_build_folder(built):
    exe, err = built
    assert os.path.isfile(exe) and not os.path.exists(exe + ".build")
    assert re.search(r"compiling for x86_64-linux: \d+/\d+ steps", err), err
    first = [x for x in err.splitlines() if x.startswith("first build for x86_64-linux")]
    assert len(first) == 1 and "zig compiles its C library" in first[0], err
    assert err.index(first[0]) < err.index("compiling for x86_64-linux:")
    assert "packing weights: 2/2 layers" in err, err
    assert "generated C in" not in err            # the tree was temporary


def test_build_output_folder_and_keep_build(gguf, tmp_path, env):
    rc, out, err = bitnet_aot(["build", gguf, "-o", str(tmp_path / "missing" / "m")], env=env)
    assert one_error_line(rc, err) and "does not exist" in err, err
    assert not (tmp_path / "missing").exists()
    rc, out, err = bitnet_aot(["build", gguf, "-o", str(tmp_path / "m.so"), "--shared", "--keep-build", "-q"],
                              env=env)
    assert rc == 0 and err == "", err
    assert (tmp_path / "m.so").is_file() and (tmp_path / "m.so.build" / "build.sh").is_file()


# -------------------------------------------------------------------------------------
# One build cache: tokenize, perplexity, the binding; cache list|clean; doctor
# -------------------------------------------------------------------------------------

def cache_entries(env):
    rc, out, err = bitnet_aot(["cache", "list", "--json"], env=env)
    assert rc == 0, err
    return json.loads(out)["entries"]


def test_one_cache_entry_for_every_command(gguf, env, tmp_path):
    rc, out, err = bitnet_aot(["tokenize", gguf, "Hello world"], env=env)
    assert rc == 0 and "compiling" in err, err
    ids = [int(x) for x in out.split()]
    text = tmp_path / "t.txt"
    text.write_text("Hello world, once upon a time. " * 40)
    rc, out, err = bitnet_aot(["perplexity", gguf, str(text), "--ctx", "32", "--max-windows", "2", "--json"],
                              env=dict(env, BITNET_AOT_PROGRESS_DELAY="0"))
    assert rc == 0 and "compiling" not in err, err                 # the tokenizer's build, reused
    assert json.loads(out)["windows"] == 2
    assert "perplexity: 2/2 windows (100%)" in err, err
    code = ("import sys; from bitnet_aot import BitNetModel; m = BitNetModel.from_pretrained(sys.argv[1]); "
            "print(m.tokenize('Hello world'))")
    r = subprocess.run([sys.executable, "-c", code, gguf], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "compiling" not in r.stderr, r.stderr
    assert json.loads(r.stdout) == ids
    es = cache_entries(env)
    assert len(es) == 1 and es[0]["artefacts"] == ["shared"] and es[0]["bytes"] > 100_000, es
    assert os.path.basename(es[0]["gguf"]) == "tiny.gguf" and not es[0]["stale"]
    # a build option is another entry
    rc, out, err = bitnet_aot(["perplexity", gguf, str(text), "--ctx", "32", "--max-windows", "1", "--head", "q8"],
                              env=env)
    assert rc == 0 and "compiling" in err, err
    es = cache_entries(env)
    assert len(es) == 2 and {json.dumps(e["options"]) for e in es} == {"{}", '{"head": "q8"}'}
    rc, out, err = bitnet_aot(["cache", "list"], env=env)
    assert rc == 0 and out.count("tiny.gguf") == 2 and "head=q8" in out and env["BITNET_AOT_CACHE"] in out
    rc, out, err = bitnet_aot(["doctor"], env=env)
    assert re.search(r"build cache +%s \(2 entries, [\d.]+ MiB" % re.escape(env["BITNET_AOT_CACHE"]), out), out
    q8 = [e for e in es if e["options"]][0]["key"]
    rc, out, err = bitnet_aot(["cache", "clean", q8[:8]], env=env)
    assert rc == 0 and out.startswith("removed 1 entry"), out
    assert [e["options"] for e in cache_entries(env)] == [{}]
    rc, out, err = bitnet_aot(["cache", "clean", "nosuchkey"], env=env)
    assert one_error_line(rc, err), err
    rc, out, err = bitnet_aot(["cache", "clean", "--stale"], env=env)
    assert rc == 0 and out.startswith("removed 0 entries") and len(cache_entries(env)) == 1


def test_tokenize_pieces_file_stdin_and_dash_text(gguf, env, tmp_path):
    from bitnet_aot.gguf_import import load_gguf
    vocab = load_gguf(gguf).tokenizer.tokens
    rc, out, err = bitnet_aot(["tokenize", gguf, "Hello world"], env=env)
    assert rc == 0, err
    ids = [int(x) for x in out.split()]
    rc, out, err = bitnet_aot(["tokenize", gguf, "Hello world", "--pieces"], env=env)
    assert rc == 0, err
    rows = [re.fullmatch(r"\s*(\d+) -> (.*)", x).groups() for x in out.splitlines()]
    assert [int(i) for i, _ in rows] == ids
    # the pieces join to the text, and each is its vocabulary entry (SentencePiece: ▁ = space)
    pieces = [json.loads(p) for _, p in rows]
    assert "".join(pieces[1:]).lstrip() == "Hello world"
    for (i, _), p in zip(rows[1:], pieces[1:]):
        assert vocab[int(i)].replace("\u2581", " ") == p
    f = tmp_path / "t.txt"
    f.write_text("Hello world")
    assert bitnet_aot(["tokenize", gguf, "-f", str(f)], env=env)[1].split() == [str(i) for i in ids]
    assert bitnet_aot(["tokenize", gguf], env=env, input="Hello world")[1].split() == [str(i) for i in ids]
    assert bitnet_aot(["tokenize", gguf, "-f", "-"], env=env, input="Hello world")[1].split() == [str(i) for i in ids]
    # a text that starts with '-' is the text, with or without --
    rc, out, err = bitnet_aot(["tokenize", gguf, "-hello", "--json", "--no-bos"], env=env)
    assert rc == 0, err
    assert bitnet_aot(["tokenize", gguf, "--json", "--no-bos", "--", "-hello"], env=env)[1] == out
    rc, out2, err = bitnet_aot(["tokenize", gguf, "--json", "--pieces", "--no-bos", "-hello"], env=env)
    assert rc == 0 and "".join(x["piece"] for x in json.loads(out2)).strip() == "-hello", out2
    rc, out, err = bitnet_aot(["tokenize", gguf, "x", "-f", str(f)], env=env)
    assert one_error_line(rc, err), err


# -------------------------------------------------------------------------------------
# Help text and argument errors
# -------------------------------------------------------------------------------------

def test_every_argument_has_help():
    from bitnet_aot.cli import make_parser
    import argparse

    def walk(p, path):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, path + [name])
            elif not isinstance(a, argparse._HelpAction) and a.help is not argparse.SUPPRESS:
                yield path, a
    missing = [(" ".join(path), a.dest) for path, a in walk(make_parser(), []) if not a.help]
    assert missing == []


def test_help_of_serve_and_make_test_model():
    rc, out, err = bitnet_aot(["serve", "--help"])
    assert rc == 0
    for flag in ("--port", "--host", "--parallel", "--queue", "--api-key", "--timeout", "--max-body", "--ctx",
                 "--seed", "--head"):
        assert flag in out, flag
    rc, out, err = bitnet_aot(["make-test-model", "--help"])
    assert rc == 0 and "embedding width" in out and "--n-embd N" in out
    rc, out, err = bitnet_aot(["tokenize", "--help"])
    assert rc == 0 and "--pieces" in out and "stdin" in out


def test_bad_type_names_the_flag(tmp_path):
    rc, out, err = bitnet_aot(["make-test-model", str(tmp_path / "x.gguf"), "--type", "q4_0"])
    assert one_error_line(rc, err) and "--type" in err and "proj_type" not in err, err
    rc, out, err = bitnet_aot(["convert", str(tmp_path), "-o", str(tmp_path / "x.gguf"), "--type", "q4_0"])
    assert one_error_line(rc, err) and "--type" in err, err


def test_convert_shows_progress(tmp_path, env):
    """convert: progress lines over the layers (forced on with BITNET_AOT_PROGRESS_DELAY=0)
    for a random 2-layer master-weight checkpoint."""
    import numpy as np
    spm = pytest.importorskip("sentencepiece")
    from bitnet_aot.convert import save_safetensors
    E, F, V = 256, 256, 300
    d = tmp_path / "ck"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2", "hidden_size": E,
        "intermediate_size": F, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": V, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}))
    rng = np.random.default_rng(1)
    t = {"model.embed_tokens.weight": rng.standard_normal((V, E), dtype=np.float32),
         "model.norm.weight": np.ones(E, np.float32)}
    for i in range(2):
        p = f"model.layers.{i}."
        for n, shape in (("self_attn.q_proj", (E, E)), ("self_attn.k_proj", (128, E)), ("self_attn.v_proj", (128, E)),
                         ("self_attn.o_proj", (E, E)), ("mlp.gate_proj", (F, E)), ("mlp.up_proj", (F, E)),
                         ("mlp.down_proj", (E, F))):
            t[p + n + ".weight"] = 0.02 * rng.standard_normal(shape, dtype=np.float32)
        for n, k in (("input_layernorm", E), ("post_attention_layernorm", E), ("self_attn.attn_sub_norm", E),
                     ("mlp.ffn_sub_norm", F)):
            t[p + n + ".weight"] = np.ones(k, np.float32)
    save_safetensors(str(d / "model.safetensors"), t)
    txt = tmp_path / "text.txt"
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly zebras".split()
    txt.write_text("\n".join(" ".join(words[(i * 7 + k) % len(words)] for k in range(9)) for i in range(400)))
    spm.SentencePieceTrainer.train(input=str(txt), model_prefix=str(d / "tokenizer"), vocab_size=V,
                                   model_type="bpe", byte_fallback=True, minloglevel=2, num_threads=1)
    rc, out, err = bitnet_aot(["convert", str(d), "-o", str(tmp_path / "c.gguf")],
                              env=dict(env, BITNET_AOT_PROGRESS_DELAY="0"))
    assert rc == 0, err
    assert "converting: 1/2 layers (50%)" in err and "converting: 2/2 layers (100%)" in err, err
    rc, out, err = bitnet_aot(["convert", str(d), "-o", str(tmp_path / "d.gguf")], env=env)
    assert rc == 0 and "converting" not in err, err          # fast: no lines


def test_progress_bar_on_a_terminal(gguf, env, tmp_path):
    """On a terminal, perplexity draws a tqdm bar (carriage returns), not lines."""
    import pty
    text = tmp_path / "t.txt"
    text.write_text("Hello world, once upon a time. " * 40)
    pid, fd = pty.fork()
    if pid == 0:
        import fcntl
        import struct
        import termios
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))     # a 100-column terminal
        os.environ.update(env)
        os.environ["BITNET_AOT_PROGRESS_DELAY"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "bitnet_aot.cli", "perplexity", gguf, str(text), "--ctx", "32",
                                  "--max-windows", "3"])
    chunks = []
    while True:
        try:
            b = os.read(fd, 4096)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    _, status = os.waitpid(pid, 0)
    got = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, got
    assert "\r" in got and re.search(r"perplexity: +100%\|.*\| 3/3", got), got
    assert "perplexity: 1/3 windows" not in got


def test_a_file_that_is_no_model_leaves_no_cache_entry(tmp_path, env):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    e = dict(env, BITNET_AOT_CACHE=str(tmp_path / "c"))
    for cmd in (["tokenize", str(bad), "x"], ["serve", str(bad)]):
        rc, out, err = bitnet_aot(cmd, env=e)
        assert one_error_line(rc, err), err
    assert cache_entries(e) == []


def test_a_refused_prompt_of_invalid_utf8_gets_only_the_error(built, tmp_path):
    exe, _ = built
    big = tmp_path / "big.txt"
    big.write_bytes(b"\xff word" * 3000)
    rc, out, err = run(exe, ["-f", str(big), "-n", "2", "--ctx", "64"])
    assert one_error_line(rc, err) and "context holds 64" in err, err
