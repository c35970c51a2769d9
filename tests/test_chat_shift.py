"""Context shift: `./model --chat` / `-i` (runtime_c/app/chat_cli.c) and the server's chat
endpoint never end a session or an answer because the context is full.

The bundled Shakespeare model is compiled once; conversations are run with a context of 64
tokens, so they overflow after a few turns. The method is re-encoding: the kept turns are
formatted again from their text and evaluated from an empty cache. Checked: the session
goes on to the end of input, and the reply right after a shift is exactly what a fresh
request holding only the kept messages gets from the server (greedy), i.e. the shift gives
the reference's result for the shortened conversation.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_server import Server, get_json  # noqa: E402

GGUF = Path(__file__).resolve().parents[1] / "examples" / "shakespeare.gguf"


@pytest.fixture(scope="module")
def exe(cache):
    return cache.build(str(GGUF), "host", shared=False).output


def run(exe, args, stdin: bytes, timeout=120):
    r = subprocess.run([exe, *args], input=stdin, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode("utf-8", "replace")


def ids_after(err: str, label: str) -> list:
    return [[int(x) for x in line.split()[1:]] for line in err.splitlines() if line.startswith(label + ":")]


USERS = ["Good morrow, what news from the court?", "Tell me more about the king.", "And what of the queen?",
         "Where is the prince tonight?", "Shall we ride to London?", "Farewell, good friend."]


def test_chat_shift_matches_a_fresh_request(exe):
    rc, out, err = run(exe, ["--chat", "--ctx", "64", "-n", "12", "--temp", "0", "--ignore-eos", "-t", "1",
                             "--print-ids", "--no-timings"], ("\n".join(USERS) + "\n").encode())
    assert rc == 0, err
    replies = ids_after(err, "reply")
    assert len(replies) == len(USERS), err                     # every message answered
    shifts = [(m.start(), int(m.group(1))) for m in re.finditer(r"context shift: kept (\d+) of \d+ messages", err)]
    assert shifts, err
    s = Server(exe, "--ctx", "64", "-t", "1", "--parallel", "1")
    try:
        texts = [get_json(s.port, "/detokenize", "POST", {"tokens": r})[1]["content"] for r in replies]
        past = []
        for i, user in enumerate(USERS):
            past.append({"role": "user", "content": user})
            # the shift made for turn i: the reply lines before it tell which turn it was
            turn_shifts = [k for pos, k in shifts if len(ids_after(err[:pos], "reply")) == i]
            if turn_shifts:
                kept = past[-turn_shifts[0]:]
                assert kept[0]["role"] == "user"
                status, body, _ = get_json(s.port, "/v1/chat/completions", "POST",
                                           {"messages": kept, "max_tokens": 12, "temperature": 0, "ignore_eos": True})
                assert status == 200, body
                assert body["choices"][0]["message"]["content"] == texts[i], (i, kept)
            past.append({"role": "assistant", "content": texts[i]})
        # the server shifts the whole conversation itself and answers
        status, body, _ = get_json(s.port, "/v1/chat/completions", "POST",
                                   {"messages": past + [{"role": "user", "content": "One more?"}], "max_tokens": 12})
        assert status == 200 and body["usage"]["prompt_tokens"] + 12 <= 64, body
    finally:
        assert s.stop() == 0


def test_chat_reply_longer_than_the_context_goes_on(exe):
    """A reply that reaches the end of the context continues after a shift: -n 100 tokens
    in a 64-token context."""
    rc, out, err = run(exe, ["--chat", "--ctx", "64", "-n", "100", "--temp", "0", "--ignore-eos", "-t", "1",
                             "--print-ids", "--no-timings"], b"Speak on, good sir.\nAgain!\n")
    assert rc == 0, err
    replies = ids_after(err, "reply")
    assert [len(r) for r in replies] == [100, 100], err


def test_interactive_shift_and_too_long_text(exe):
    rc, out, err = run(exe, ["-i", "-p", "ROMEO:", "--ctx", "64", "-n", "40", "--temp", "0", "--ignore-eos", "-t", "1",
                             "--print-ids", "--no-timings"], b" more\n and more\n" + b"word " * 200 + b"\n again\n")
    assert rc == 0, err
    assert "context shift: kept" in err
    assert len([l for l in err.splitlines() if "too long for the context" in l]) == 1


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_stops_the_reply_then_exits(exe):
    """SIGINT during a reply stops it and the session reads the next line; SIGINT while
    waiting for input exits with 130."""
    import signal
    import time
    p = subprocess.Popen([exe, "--chat", "-n", "100000", "--ctx", "256", "--ignore-eos", "-t", "1", "--print-ids",
                          "--no-timings"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(b"Speak!\n")
        p.stdin.flush()
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)          # stops the reply (it could not end otherwise: -n 100000 ...)
        time.sleep(0.5)
        assert p.poll() is None
        p.stdin.write(b"Again.\n")
        p.stdin.flush()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)          # stops the second reply
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)          # at the prompt: exits
        assert p.wait(timeout=10) == 130
        err = p.stderr.read().decode()
        assert len(ids_after(err, "reply")) == 2, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
