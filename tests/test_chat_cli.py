"""`./model --chat` / `-i` (runtime_c/app/chat_cli.c) and `bitnet-aot tokenize` (tokenize_cmd.py).

The models: small random-weight bitnet-b1.58 networks with the real BitNet-b1.58-2B-4T
vocabulary (128256 tokens, built from its tiktoken ranks like tests/test_tokenizer.py does)
and a chat template in `tokenizer.chat_template`: BitNet-2B-4T's own and LLaMA-3's. The
weights are noise, so the replies are too; what is checked is the protocol: the ids each
turn evaluates (printed by --print-ids) equal what the Python side builds from the same
template (bitnet_aot.chat.format_chat + tiktoken), the session ends cleanly at end of
input, and nothing crashes on odd input.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_harness import LLAMA3_PAT, LLAMA3_SPECIALS, llama3_tokenizer_data  # noqa: E402

from bitnet_aot.chat import format_chat, turn_text  # noqa: E402
from bitnet_aot.factory import make_test_model  # noqa: E402
from bitnet_aot.gguf_file import GGUFFile, TensorToWrite, write_gguf  # noqa: E402
from conftest import sanitized_binary  # noqa: E402

from fixtures import TIKTOKEN_2B4T as TIKTOKEN_MODEL  # noqa: E402

# The templates as the models' tokenizer_config.json carry them (see tests/test_chat.py).
BITNET_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

BOS, EOS, EOT = 128000, 128001, 128009



# -------------------------------------------------------------------------------------
# Test models
# -------------------------------------------------------------------------------------

def tokenizer_kv(td, chat_template) -> dict:
    """GGUF tokenizer metadata for a TokenizerData (BPE), as a converter writes it."""
    import numpy as np
    kv = {"tokenizer.ggml.model": td.model, "tokenizer.ggml.pre": td.pre,
          "tokenizer.ggml.tokens": list(td.tokens),
          "tokenizer.ggml.token_type": np.asarray(td.token_types, dtype=np.int32),
          "tokenizer.ggml.merges": list(td.merges),
          "tokenizer.ggml.bos_token_id": td.bos_id, "tokenizer.ggml.eos_token_id": td.eos_id,
          "tokenizer.ggml.eot_token_id": td.eot_id, "tokenizer.ggml.add_bos_token": bool(td.add_bos)}
    if chat_template is not None:
        kv["tokenizer.chat_template"] = chat_template
    return kv


def make_llama3_vocab_model(path: str, td, chat_template, arch="bitnet-b1.58", n_ctx=512,
                            eos_bias=False) -> str:
    """A small random-weight model (E=256, 2 layers, F16 embedding) whose vocabulary is the
    BitNet-2B-4T one: the factory writes the weights, the tokenizer metadata is added here.

    eos_bias: make <|end_of_text|> (an end-of-generation token) the greedy choice after any
    prompt: every embedding row gets a common direction v, and EOS's row is a long v (the
    head is tied, and the residual stream keeps the input's v)."""
    import numpy as np
    base = path + ".base.gguf"
    make_test_model(base, arch, "tq2_0", n_embd=256, n_layer=2, n_ff=512, n_head=4, n_head_kv=2,
                    n_vocab=len(td.tokens), n_ctx=n_ctx, tokenizer=None, embd_type="f16", seed=1)
    g = GGUFFile(base)
    try:
        kv = {k: v for k, v in g.kv.items() if not k.startswith("tokenizer.")}
        kv.update(tokenizer_kv(td, chat_template))
        tensors = []
        for t in g.tensors.values():
            data = g.raw(t.name).tobytes()
            if eos_bias and t.name == "token_embd.weight":
                E, V = t.ne
                emb = np.frombuffer(data, np.float16).reshape(V, E).astype(np.float32)
                v = np.random.default_rng(5).standard_normal(E).astype(np.float32)
                v /= np.linalg.norm(v)
                emb += 4 * v
                emb[EOS] = 16 * v
                data = emb.astype(np.float16)
            tensors.append(TensorToWrite(t.name, t.ggml_type, tuple(t.ne), data))
        write_gguf(path, kv, tensors)
    finally:
        g.close()
    os.remove(base)
    return path


@pytest.fixture(scope="module")
def vocab():
    ranks, td = llama3_tokenizer_data(TIKTOKEN_MODEL)
    return ranks, td


@pytest.fixture(scope="module")
def enc(vocab):
    tiktoken = pytest.importorskip("tiktoken")
    ranks, _ = vocab
    return tiktoken.Encoding("llama3-chat-cli-test", pat_str=LLAMA3_PAT, mergeable_ranks=ranks,
                             special_tokens={t: len(ranks) + i for i, t in enumerate(LLAMA3_SPECIALS)})


@pytest.fixture(scope="module")
def models(tmp_path_factory, vocab):
    """{"bitnet": (gguf, binary), "llama3": (gguf, binary)}, built once per module."""
    from bitnet_aot.build import build
    _, td = vocab
    root = tmp_path_factory.mktemp("chat_cli")
    out = {}
    # the BitNet one babbles (replies run to -n); the LLaMA-3 one answers <|end_of_text|> at once
    for name, tmpl in (("bitnet", BITNET_TEMPLATE), ("llama3", LLAMA3_TEMPLATE)):
        gguf = make_llama3_vocab_model(str(root / f"{name}.gguf"), td, tmpl, eos_bias=name == "llama3")
        exe = build(gguf, "host", str(root / name), log=lambda s: None).output
        out[name] = (gguf, exe)
    return out


def run(exe, args, stdin: bytes, timeout=120):
    r = subprocess.run([exe, *args], input=stdin, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode("utf-8", "replace")


def ids_lines(stderr: str) -> list:
    return [[int(x) for x in line.split()[1:]] for line in stderr.splitlines() if line.startswith("ids:")]


def python_turn_ids(enc, fmt, system, users) -> list:
    """The ids each turn of a chat evaluates, from the Python mirror of the templates."""
    out = []
    for k in range(1, len(users) + 1):
        text = turn_text(fmt, users[:k], system=system)
        ids = enc.encode(text, allowed_special="all")
        out.append(([BOS] if k == 1 else []) + ids)
    return out


GEN = ["--temp", "0", "-n", "8", "-t", "1", "--no-timings"]


# -------------------------------------------------------------------------------------
# --chat
# -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,system", [("bitnet", None), ("bitnet", "You are a helpful assistant."),
                                        ("llama3", None), ("llama3", "Answer briefly.")])
def test_two_turn_chat_ids_match_python(models, enc, fmt, system):
    _, exe = models[fmt]
    users = ["Hi there! What is a ternary weight?", "And why 1.58 bits — log2(3)? 🦙"]
    args = ["--chat", "--print-ids", *GEN] + (["--system", system] if system else [])
    rc, out, err = run(exe, args, ("\n".join(users) + "\n").encode())
    assert rc == 0, err
    assert f"chat format: {fmt} (from the model's chat template)" in err
    got = ids_lines(err)
    assert got == python_turn_ids(enc, fmt, system, users), err
    # turn 1 spelled out for the BitNet format
    if fmt == "bitnet" and system is None:
        assert enc.decode(got[0][1:]) == "User: Hi there! What is a ternary weight?<|eot_id|>Assistant: "
        assert enc.decode(got[1]).startswith("<|eot_id|>User: And why")
    # one reply line per turn, at most 8 tokens each, no special tokens printed
    lines = out.decode("utf-8", "replace").split("\n")
    assert len(lines) >= 3 and lines[-1] == ""
    assert b"<|eot_id|>" not in out and b"<|end_of_text|>" not in out


def test_chat_format_override_and_crlf_and_blank_lines(models, enc):
    """--chat-format beats the template; "\\r\\n" endings and blank lines are ignored."""
    _, exe = models["bitnet"]
    rc, out, err = run(exe, ["--chat", "--chat-format", "llama3", "--print-ids", *GEN],
                       b"\r\n   \nHello\r\n\nBye\r\n")
    assert rc == 0, err
    assert "chat format: llama3 (--chat-format)" in err
    assert ids_lines(err) == python_turn_ids(enc, "llama3", None, ["Hello", "Bye"])


def timings(stderr: str):
    """(prompt tokens, generated tokens) of the session's timing line."""
    line = [x for x in stderr.splitlines() if x.startswith("timings:")][-1]
    m = re.search(r"prompt (\d+) tokens .* generation (\d+) tokens", line)
    return int(m.group(1)), int(m.group(2))


def test_reply_stops_at_end_of_generation(models, enc):
    """The LLaMA-3 test model answers <|end_of_text|> at once: the reply is empty, the token
    is not printed and not kept (the template's <|eot_id|> follows), so the session
    evaluates exactly the ids it printed. With --ignore-eos, replies run to -n, and the
    last reply token (sampled, never evaluated) goes in front of the next turn."""
    _, exe = models["llama3"]
    users = ["Hello", "Again"]
    stdin = ("\n".join(users) + "\n").encode()
    args = ["--chat", "--print-ids", "--temp", "0", "-n", "8", "-t", "1"]
    rc, out, err = run(exe, args, stdin)
    assert rc == 0, err
    ids = ids_lines(err)
    assert ids == python_turn_ids(enc, "llama3", None, users)
    assert out == b"\n\n"
    assert timings(err) == (len(ids[0]) + len(ids[1]), 2)      # one EOS sampled per turn
    rc, out, err = run(exe, args + ["--ignore-eos"], stdin)
    assert rc == 0, err
    assert out == b"\n\n"                                      # EOG tokens never print
    assert ids_lines(err) == ids
    assert timings(err) == (len(ids[0]) + 1 + len(ids[1]), 16)


def test_reply_cut_by_n_predict_carries_its_last_token(models, enc):
    _, exe = models["bitnet"]
    users = ["Tell me a story.", "Go on."]
    rc, out, err = run(exe, ["--chat", "--print-ids", "--temp", "0", "-n", "6", "-t", "1"],
                       ("\n".join(users) + "\n").encode())
    assert rc == 0, err
    ids = ids_lines(err)
    assert ids == python_turn_ids(enc, "bitnet", None, users)
    n_prompt, n_gen = timings(err)
    assert n_gen == 12, "the random test model should not end its replies by itself"
    assert n_prompt == len(ids[0]) + 1 + len(ids[1])
    assert out.endswith(b"\n")


def test_chat_empty_input_and_errors(models):
    _, exe = models["bitnet"]
    rc, out, err = run(exe, ["--chat", *GEN], b"")
    assert rc == 0 and out == b"", err
    rc, out, err = run(exe, ["--chat", "--chat-format", "vicuna", *GEN], b"hi\n")
    assert rc == 2 and err.strip().splitlines()[-1].startswith("error: --chat-format 'vicuna'")
    rc, out, err = run(exe, ["--chat", "--chat-format", "chatml", *GEN], b"hi\n")
    assert rc == 0 and "chat format: chatml (--chat-format)" in err, err
    rc, out, err = run(exe, ["--chat", "-p", "hi", *GEN], b"hi\n")
    assert rc == 2 and err.startswith("error: ")


def test_chat_invalid_utf8_and_nul_bytes(models):
    _, exe = models["llama3"]
    data = b"caf\xe9 \xff\xfe\xc3\n\x00abc\x00\n" + bytes(range(1, 256)).replace(b"\n", b"") + b"\n"
    rc, out, err = run(exe, ["--chat", "--print-ids", *GEN], data)
    assert rc == 0, err
    assert len(ids_lines(err)) == 3


def test_chat_context_shift(models):
    """A context too small for the conversation: the oldest turns are dropped and the
    session goes on to the end of input (exit 0); a message longer than the whole context
    gets one line and is skipped (also past 1000 ids)."""
    _, exe = models["bitnet"]
    rc, out, err = run(exe, ["--chat", "--ctx", "48", "--print-ids", *GEN], b"Hello there\n" * 10)
    assert rc == 0, err
    assert "context shift: kept" in err and "the context is full" not in err
    assert len([l for l in err.splitlines() if l.startswith("reply:")]) == 10
    for n_words, ctx in ((40, "16"), (1500, "512")):
        rc, out, err = run(exe, ["--chat", "--ctx", ctx, "--print-ids", *GEN], b"word " * n_words + b"\nhi\n")
        assert rc == 0, err
        lines = [l for l in err.splitlines() if "too long for the context" in l]
        assert len(lines) == 1 and "not sent" in lines[0], err
        assert len([l for l in err.splitlines() if l.startswith("reply:")]) == 1      # "hi" is answered


def test_unknown_template_falls_back_to_bitnet(tmp_path, vocab, enc):
    """No chat template on a bitnet-b1.58 model: the BitNet format; on llama: an error."""
    from bitnet_aot.build import build
    _, td = vocab
    gguf = make_llama3_vocab_model(str(tmp_path / "plain.gguf"), td, None, arch="llama", n_ctx=128)
    exe = build(gguf, "host", str(tmp_path / "plain"), log=lambda s: None).output
    rc, out, err = run(exe, ["--chat", *GEN], b"hi\n")
    assert rc == 2 and err.strip().splitlines() == [
        "error: the model has no chat template; choose one with --chat-format bitnet|llama3|falcon3|chatml, "
        "or use -i for plain text"]
    rc, out, err = run(exe, ["--chat", "--chat-format", "bitnet", "--print-ids", *GEN], b"hi\n")
    assert rc == 0, err
    assert ids_lines(err) == python_turn_ids(enc, "bitnet", None, ["hi"])


# -------------------------------------------------------------------------------------
# -i
# -------------------------------------------------------------------------------------

def test_interactive_through_a_pipe(models, enc):
    _, exe = models["bitnet"]
    rc, out, err = run(exe, ["-i", "--print-ids", *GEN], b"Once upon a time\n there was\n\n")
    assert rc == 0, err
    got = ids_lines(err)
    assert got == [[BOS] + enc.encode("Once upon a time"), enc.encode(" there was"), []]
    assert out.count(b"\n") == 3


def test_interactive_prompt_flag_and_empty_stdin(models, enc):
    _, exe = models["bitnet"]
    rc, out, err = run(exe, ["-i", "-p", "Hello", "--print-ids", *GEN], b"")
    assert rc == 0, err
    assert ids_lines(err) == [[BOS] + enc.encode("Hello")]
    assert out.startswith(b"Hello")
    rc, out, err = run(exe, ["-i", *GEN], b"")
    assert rc == 0 and out == b"", err


def test_interactive_invalid_utf8(models):
    _, exe = models["bitnet"]
    data = b"\xff\xfe\n\xc3\n\xe2\x82\n" + bytes(range(256)) + b"\n"
    rc, out, err = run(exe, ["-i", "--print-ids", *GEN], data)
    assert rc == 0, err
    assert len(ids_lines(err)) >= 4


# -------------------------------------------------------------------------------------
# bitnet-aot tokenize
# -------------------------------------------------------------------------------------

def tokenize_cli(args, env):
    r = subprocess.run([sys.executable, "-m", "bitnet_aot.cli", "tokenize", *args], capture_output=True,
                       text=True, env=env, timeout=600)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    env = dict(os.environ)
    env["BITNET_AOT_CACHE"] = str(tmp_path_factory.mktemp("build_cache"))
    return env


def test_tokenize_command(models, enc, cli_env):
    gguf, _ = models["bitnet"]
    text = "Hello world! <|eot_id|> 🦙 ünïcödé  123456"
    rc, out, err = tokenize_cli([gguf, text], cli_env)
    assert rc == 0, err
    assert [int(x) for x in out.split()] == [BOS] + enc.encode(text, disallowed_special=())
    rc, out, err = tokenize_cli([gguf, text, "--special", "--no-bos", "--json"], cli_env)
    assert rc == 0, err
    assert json.loads(out) == enc.encode(text, allowed_special="all")
    # the second call reused the cached build
    cache = Path(cli_env["BITNET_AOT_CACHE"])
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1


def test_tokenize_command_errors(tmp_path, cli_env):
    rc, out, err = tokenize_cli([str(tmp_path / "missing.gguf"), "x"], cli_env)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all, just text" * 4)
    rc, out, err = tokenize_cli([str(bad), "x"], cli_env)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err


# -------------------------------------------------------------------------------------
# Sanitizers
# -------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("gcc"), reason="needs the system gcc for ASan/UBSan")
def test_chat_and_interactive_clean_under_asan_ubsan(models, tmp_path):
    """The generated tree compiled by gcc with -fsanitize=address,undefined; chat_cli.c also
    with -Werror (the other files' warnings are theirs to check), fed hostile input.
    (slow: about 35 s here, most of it gcc and ASan-instrumented decoding)"""
    from bitnet_aot.build import build
    gguf, _ = models["bitnet"]
    d = tmp_path / "san"
    res = build(gguf, "x86_64-linux", emit_c=str(d), log=lambda s: None)
    exe = sanitized_binary(d, res.commands, werror=lambda src: src.endswith("chat_cli.c"))
    rng = random.Random(3)
    noise = bytes(rng.randrange(256) for _ in range(3000))
    hostile = b"Hi\n\xff\xfe caf\xe9\n\x00abc\x00\n\r\n  \n" + noise + b"\nlast line, no newline"
    for args, stdin in ((["--chat", "--system", "Be brief.", "--temp", "0.8", "-n", "6"], hostile),
                        (["--chat", "--ctx", "40", "--temp", "0", "-n", "6"], b"Hello there\n" * 8),
                        (["-i", "-p", "Start", "--temp", "0", "-n", "4"], b"more\n\n\n" + noise[:500] + b"\n"),
                        (["-i", "-n", "0", "--print-ids"], b"a\nb\n"),
                        (["--chat", "-n", "3"], b"")):
        for threads in ("1", "2"):
            r = subprocess.run([exe, *args, "-t", threads], input=stdin, capture_output=True, timeout=300)
            err = r.stderr.decode("utf-8", "replace")
            assert "runtime error" not in err and "Sanitizer" not in err, err
            assert r.returncode in (0, 2), err
