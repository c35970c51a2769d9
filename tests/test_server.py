"""`./model serve`: the HTTP server compiled into the binary (runtime_c/app/server.c, http.c, json.c).

A factory model is compiled for this machine and served on a free loopback port. Checked
here: the official `openai` client (completions, chat, streaming, errors), raw HTTP, a
malformed-request suite, slow and vanishing clients, a bounded load test (32 clients x 4
requests against --parallel 4: correct or 503, no hang, RSS flat, seeded output equal to the
request made alone), a hypothesis fuzz run of the HTTP parser, API keys and graceful shutdown.
Every connection goes to 127.0.0.1 only.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from conftest import sanitized_binary  # noqa: E402

HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
TIMEOUT = 2          # the server's --timeout: slow clients are cut off after this


# ------------------------------------------------------------------------------------------
# Servers
# ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """A running `model serve` on a free loopback port; stop() sends SIGTERM."""

    def __init__(self, binary: str, *args: str):
        self.port = free_port()
        self.cmd = [binary, "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # the server logs a line per request: drain stderr, or a full pipe would stall it
        self._log = []
        self._drain = threading.Thread(target=lambda: self._log.extend(iter(self.proc.stderr.readline, b"")), daemon=True)
        self._drain.start()
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self._drain.join(timeout=5)
                raise RuntimeError(f"server exited: {self.log_text()}")
            try:
                if get_json(self.port, "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not come up")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log_text(self) -> str:
        """What the server wrote to stderr so far (all of it after stop())."""
        return b"".join(self._log).decode("utf-8", "replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=10)
        return self.proc.returncode


@pytest.fixture(scope="module")
def binary(cache):
    # BITNET_AOT_SERVER_BINARY: run the suite against another build of the same factory
    # model, e.g. one compiled with -fsanitize=address,undefined from its build.sh
    if os.environ.get("BITNET_AOT_SERVER_BINARY"):
        return os.environ["BITNET_AOT_SERVER_BINARY"]
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    return cache.build(gguf, "host", shared=False).output


@pytest.fixture(scope="module")
def long_binary(cache):
    """A model with a 4096-token context: 3000 tokens take seconds, so a request is surely
    still running when a test disconnects or stops the server."""
    gguf = cache.model("bitnet-b1.58", "tq2_0", n_ctx=4096)
    return cache.build(gguf, "host", shared=False).output


def long_request(**kw):
    body = {"prompt": "Once", "max_tokens": 3000, "ignore_eos": True}
    body.update(kw)
    return body


@pytest.fixture(scope="module")
def server(binary):
    s = Server(binary, "--parallel", "4", "--queue", "8", "-t", "2", "--timeout", str(TIMEOUT),
               "--max-body", str(MAX_BODY))
    yield s
    assert s.stop() == 0


def get_json(port, path, method="GET", body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw), dict(r.getheaders())
        except ValueError:
            return r.status, raw, dict(r.getheaders())
    finally:
        c.close()


def generate(port, **body):
    status, out, _ = get_json(port, "/generate", "POST", body)
    assert status == 200, out
    return out


def assert_healthy(server):
    status, out, _ = get_json(server.port, "/health")
    assert status == 200 and out["status"] == "ok"
    deadline = time.time() + 3
    while out["slots_busy"] and time.time() < deadline:     # slots free up right after a request
        time.sleep(0.05)
        out = get_json(server.port, "/health")[1]
    assert out["slots_busy"] == 0, out
    assert generate(server.port, prompt="Once upon a time", max_tokens=3)["tokens"] <= 3


# ------------------------------------------------------------------------------------------
# Endpoints and the openai client
# ------------------------------------------------------------------------------------------

def test_health_and_models(server):
    status, out, _ = get_json(server.port, "/health")
    assert status == 200 and out["slots"] == 4
    status, out, _ = get_json(server.port, "/v1/models")
    assert status == 200 and out["object"] == "list" and out["data"][0]["object"] == "model"


def test_generate_matches_the_cli(server, binary):
    """Greedy /generate text equals what the CLI prints after the prompt."""
    prompt = "Once upon a time"
    out = generate(server.port, prompt=prompt, max_tokens=12, temperature=0, ignore_eos=True)
    assert out["tokens"] == 12 and out["finish_reason"] == "length"
    cli = subprocess.run([binary, "-p", prompt, "-n", "12", "--temp", "0", "--ignore-eos", "--no-timings"],
                         capture_output=True, timeout=60)
    assert cli.returncode == 0
    assert cli.stdout.decode("utf-8", "replace") == prompt + out["text"] + "\n"


def test_generate_seed_and_stop(server):
    a = generate(server.port, prompt="The quick brown fox", max_tokens=16, temperature=0.9, seed=7, ignore_eos=True)
    b = generate(server.port, prompt="The quick brown fox", max_tokens=16, temperature=0.9, seed=7, ignore_eos=True)
    assert b.pop("cached_tokens") > a.pop("cached_tokens")       # the second reuses the first's prompt
    assert a == b
    text = a["text"]
    if len(text) > 4:
        stop = text[2:4]
        c = generate(server.port, prompt="The quick brown fox", max_tokens=16, temperature=0.9, seed=7,
                     ignore_eos=True, stop=[stop, "never-appears"])
        assert c["finish_reason"] == "stop" and c["text"] == text[:text.index(stop)]


def test_token_id_prompt_and_zero_tokens(server):
    out = get_json(server.port, "/v1/completions", "POST", {"prompt": [1, 5, 9], "max_tokens": 2})[1]
    assert out["usage"]["prompt_tokens"] == 3
    out = generate(server.port, prompt="hello", max_tokens=0)
    assert out["tokens"] == 0 and out["text"] == "" and out["finish_reason"] == "length"


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_openai_completions(client, server):
    r = client.completions.create(model="any", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    same = generate(server.port, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert r.choices[0].text == same["text"]


def test_openai_chat(client):
    r = client.chat.completions.create(model="any", max_tokens=8, temperature=0, seed=1,
                                       messages=[{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "What is machine learning?"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and isinstance(r.choices[0].message.content, str)
    assert r.usage.completion_tokens <= 8


def test_openai_streaming(client):
    full = client.completions.create(model="any", prompt="Hello, world", max_tokens=10, temperature=0)
    chunks = list(client.completions.create(model="any", prompt="Hello, world", max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens

    msgs = [{"role": "user", "content": "Define deep learning"}]
    full = client.chat.completions.create(model="any", messages=msgs, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="any", messages=msgs, max_tokens=10, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


def test_openai_errors(client):
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="any", prompt="word " * 400, max_tokens=4)
    assert "context" in str(e.value) and "256" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="any", prompt="hi", max_tokens=-1)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="any", messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="any", messages=[])


def test_raw_sse_format(server):
    status, body, headers = get_json(server.port, "/v1/completions", "POST",
                                     {"prompt": "Once", "max_tokens": 3, "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in body.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")


# ------------------------------------------------------------------------------------------
# Malformed requests
# ------------------------------------------------------------------------------------------

def response_complete(resp: bytes) -> bool:
    """A whole final response with a Content-Length has arrived (interim 100s skipped)."""
    while resp.startswith(b"HTTP/1.1 100 ") and b"\r\n\r\n" in resp:
        resp = resp.split(b"\r\n\r\n", 1)[1]
    head, sep, body = resp.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def raw(port, data: bytes, half_close=True, timeout=10):
    """Sends bytes, returns (status or None if no answer, head, body)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                if response_complete(b"".join(chunks)):      # keep-alive: the server may not close
                    break
        except OSError:
            pass
    resp = b"".join(chunks)
    while resp.startswith(b"HTTP/1.1 100 "):           # interim answer to Expect: 100-continue
        resp = resp.split(b"\r\n\r\n", 1)[1]
    if not resp:
        return None, b"", b""
    head, _, body = resp.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def post(path, body: bytes, extra=b"", version=b"HTTP/1.1"):
    return (b"POST " + path + b" " + version + b"\r\nHost: x\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n" + extra + b"\r\n" + body)


def gen_body(**kw):
    kw.setdefault("prompt", "Once upon a time")
    kw.setdefault("max_tokens", 2)
    return json.dumps(kw).encode()


def chunked(path, parts, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n" + parts)


GOOD = gen_body()
MALFORMED = [
    # (name, request bytes, acceptable statuses; None = closed without an answer)
    ("empty connection", b"", {None}),
    ("garbage", b"GARBAGE\r\n\r\n", {400}),
    ("method only", b"GET\r\n\r\n", {400}),
    ("lowercase method", b"get /health HTTP/1.1\r\n\r\n", {400}),
    ("unknown method", b"BREW /health HTTP/1.1\r\n\r\n", {405}),
    ("DELETE", b"DELETE /generate HTTP/1.1\r\n\r\n", {405}),
    ("PUT", b"PUT /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", {405}),
    ("GET on POST endpoint", b"GET /generate HTTP/1.1\r\n\r\n", {405}),
    ("POST on GET endpoint", b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n", {405}),
    ("unknown path", b"GET /nope HTTP/1.1\r\n\r\n", {404}),
    ("HTTP/2", b"GET /health HTTP/2.0\r\n\r\n", {505}),
    ("bad version", b"GET /health FTP/1.0\r\n\r\n", {400}),
    ("junk after version", b"GET /health HTTP/1.1 x\r\n\r\n", {400, 505}),
    ("relative target", b"GET health HTTP/1.1\r\n\r\n", {400}),
    ("absolute-form target", b"GET http://x/health HTTP/1.1\r\n\r\n", {400}),
    ("header without colon", b"GET /health HTTP/1.1\r\nNoColonHere\r\n\r\n", {400}),
    ("empty header name", b"GET /health HTTP/1.1\r\n: v\r\n\r\n", {400}),
    ("space in header name", b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", {400}),
    ("folded header", b"GET /health HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", {400}),
    ("control char in header", b"GET /health HTTP/1.1\r\nX: a\x01b\r\n\r\n", {400}),
    ("NUL in request line", b"GET /hea\x00lth HTTP/1.1\r\n\r\n", {400}),
    ("truncated request line", b"GET /health HT", {None}),
    ("truncated headers", b"GET /health HTTP/1.1\r\nHost: x\r\n", {None}),
    ("truncated body", b"POST /generate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"prompt\"", {None}),
    ("POST without length", b"POST /generate HTTP/1.1\r\n\r\n", {411}),
    ("non-numeric length", b"POST /generate HTTP/1.1\r\nContent-Length: abc\r\n\r\n", {400}),
    ("negative length", b"POST /generate HTTP/1.1\r\nContent-Length: -5\r\n\r\n", {400}),
    ("conflicting lengths", b"POST /generate HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", {400}),
    ("length and chunked", b"POST /generate HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", {400}),
    ("gzip transfer encoding", b"POST /generate HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", {501}),
    ("chunked, valid", chunked(b"/generate", b"%x\r\n%s\r\n0\r\n\r\n" % (len(GOOD), GOOD)), {200}),
    ("chunked, two chunks and a trailer",
     chunked(b"/generate", b"5\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-T: 1\r\n\r\n" % (GOOD[:5], len(GOOD) - 5, GOOD[5:])), {200}),
    ("chunked, bad size", chunked(b"/generate", b"zz\r\nabc\r\n0\r\n\r\n"), {400}),
    ("chunked, no CRLF after data", chunked(b"/generate", b"2\r\n{}XX0\r\n\r\n"), {400}),
    ("chunked, too large", chunked(b"/generate", b"%x\r\n" % (MAX_BODY + 1)), {413}),
    ("chunked, huge size", chunked(b"/generate", b"ffffffffffffffffffff\r\n"), {413}),
    ("chunked in HTTP/1.0", b"POST /generate HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("chunked, truncated", chunked(b"/generate", b"10\r\nabc"), {None}),
    ("declared body too large", b"POST /generate HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), {413}),
    ("sent body too large", post(b"/generate", b"x" * (4 * MAX_BODY)), {413}),
    ("huge header", b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", {431}),
    ("many headers", b"GET /health HTTP/1.1\r\n" + b"X-H: 1\r\n" * 150 + b"\r\n", {431}),
    ("long target", b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n", {414}),
    ("unsupported Expect", b"POST /generate HTTP/1.1\r\nExpect: magic\r\nContent-Length: 2\r\n\r\n{}", {417}),
    ("Expect: 100-continue", post(b"/generate", GOOD, b"Expect: 100-continue\r\n"), {200}),
    ("bare LF line endings", b"GET /health HTTP/1.1\nHost: x\n\n", {200}),
    ("HTTP/1.0", b"GET /health HTTP/1.0\r\n\r\n", {200}),
    ("query string", b"GET /health?x=1 HTTP/1.1\r\n\r\n", {200}),
    ("empty body", post(b"/generate", b""), {400}),
    ("invalid JSON", post(b"/generate", b"{"), {400}),
    ("trailing comma", post(b"/generate", b'{"prompt": "x",}'), {400}),
    ("single quotes", post(b"/generate", b"{'prompt': 'x'}"), {400}),
    ("JSON array body", post(b"/generate", b"[1]"), {400}),
    ("JSON after value", post(b"/generate", GOOD + b" {}"), {400}),
    ("NaN", post(b"/generate", b'{"prompt": "x", "temperature": NaN}'), {400}),
    ("leading zero", post(b"/generate", b'{"prompt": "x", "max_tokens": 02}'), {400}),
    ("invalid UTF-8", post(b"/generate", b'{"prompt": "\xff\xfe"}'), {400}),
    ("overlong UTF-8", post(b"/generate", b'{"prompt": "\xc0\xaf"}'), {400}),
    ("lone surrogate", post(b"/generate", b'{"prompt": "\\ud800"}'), {400}),
    ("surrogate pair", post(b"/generate", b'{"prompt": "\\ud83d\\ude00 hi", "max_tokens": 1}'), {200}),
    ("raw control char", post(b"/generate", b'{"prompt": "a\x01b"}'), {400}),
    ("bad escape", post(b"/generate", b'{"prompt": "\\q"}'), {400}),
    ("deep nesting", post(b"/generate", b'{"x":' + b"[" * 200 + b"]" * 200 + b', "prompt": "x"}'), {400}),
    ("prompt missing", post(b"/generate", b'{"max_tokens": 2}'), {400}),
    ("prompt wrong type", post(b"/generate", gen_body(prompt=5)), {400}),
    ("prompt list of strings", post(b"/v1/completions", gen_body(prompt=["a", "b"])), {400}),
    ("prompt bad token id", post(b"/v1/completions", gen_body(prompt=[1, 10**9])), {400}),
    ("max_tokens negative", post(b"/generate", gen_body(max_tokens=-1)), {400}),
    ("max_tokens huge", post(b"/generate", gen_body(max_tokens=10**12)), {400}),
    ("max_tokens int max (clamped)", post(b"/generate", gen_body(max_tokens=2**31 - 1)), {200}),
    ("max_tokens string", post(b"/generate", gen_body(max_tokens="10")), {400}),
    ("max_tokens fraction", post(b"/generate", gen_body(max_tokens=1.5)), {400}),
    ("temperature negative", post(b"/generate", gen_body(temperature=-1)), {400}),
    ("top_p above 1", post(b"/generate", gen_body(top_p=2)), {400}),
    ("seed string", post(b"/generate", gen_body(seed="x")), {400}),
    ("stop number", post(b"/generate", gen_body(stop=5)), {400}),
    ("stop too many", post(b"/generate", gen_body(stop=["a"] * 20)), {400}),
    ("stream string", post(b"/v1/completions", gen_body(stream="yes")), {400}),
    ("n = 2", post(b"/v1/completions", gen_body(n=2)), {400}),
    ("accepted no-op fields", post(b"/v1/completions", gen_body(user="u", model="m", logprobs=None, echo=False, best_of=1,
                                                            suffix=None, response_format={"type": "text"})), {200}),
    ("unknown field", post(b"/v1/completions", gen_body(foo={"bar": [1]})), {400}),
    ("unimplemented field", post(b"/v1/completions", gen_body(echo=True)), {400}),
    ("tools", post(b"/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}'), {400}),
    ("response_format json", post(b"/v1/chat/completions",
                                  b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}'), {400}),
    ("top_logprobs without logprobs", post(b"/v1/chat/completions",
                                           b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}'), {400}),
    ("logprobs too many", post(b"/v1/completions", gen_body(logprobs=21)), {400}),
    ("presence_penalty out of range", post(b"/v1/completions", gen_body(presence_penalty=3)), {400}),
    ("logit_bias bad key", post(b"/v1/completions", gen_body(logit_bias={"x": 1})), {400}),
    ("logit_bias bad value", post(b"/v1/completions", gen_body(logit_bias={"1": 500})), {400}),
    ("tokenize without content", post(b"/tokenize", b'{}'), {400}),
    ("detokenize bad id", post(b"/detokenize", b'{"tokens": [-1]}'), {400}),
    ("detokenize not an array", post(b"/detokenize", b'{"tokens": 5}'), {400}),
    ("null fields", post(b"/v1/completions", gen_body(temperature=None, stop=None)), {200}),
    ("chat without messages", post(b"/v1/chat/completions", b'{"max_tokens": 1}'), {400}),
    ("chat bad role", post(b"/v1/chat/completions", b'{"messages": [{"role": "x", "content": "y"}]}'), {400}),
    ("chat content number", post(b"/v1/chat/completions", b'{"messages": [{"role": "user", "content": 1}]}'), {400}),
    ("chat message not object", post(b"/v1/chat/completions", b'{"messages": ["hi"]}'), {400}),
    ("chat content parts", post(b"/v1/chat/completions",
                                b'{"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}'), {200}),
    ("prompt longer than context", post(b"/generate", gen_body(prompt="word " * 400)), {400}),
]


def test_malformed_request_suite(server):
    assert len(MALFORMED) >= 40
    failures = []
    for name, data, want in MALFORMED:
        # half-close only requests that are cut short (a half-closed connection counts as a
        # client that went away, as nginx does: a complete request is not answered then)
        status, head, body = raw(server.port, data, half_close=None in want)
        if status not in want:
            failures.append((name, status, want, body[:200]))
        elif status is not None and status >= 400:
            err = json.loads(body)["error"]          # every error is a JSON error
            assert err["message"], name
    assert not failures, failures
    assert_healthy(server)


def test_error_messages_name_the_limit(server):
    status, _, body = raw(server.port, b"POST /generate HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert status == 413 and b"--max-body" in body and str(MAX_BODY).encode() in body
    status, _, body = raw(server.port, post(b"/generate", gen_body(prompt="word " * 400)))
    err = json.loads(body)["error"]
    assert status == 400 and err["code"] == "context_length_exceeded" and "256" in err["message"]
    status, _, body = raw(server.port, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert status == 431 and b"16384" in body


def test_slow_clients_are_cut_off(server):
    """Slowloris: connections trickling bytes get 408 (or are closed) after --timeout, and
    other requests are served meanwhile."""
    socks = []
    for _ in range(6):
        s = socket.create_connection((HOST, server.port), timeout=TIMEOUT + 5)
        s.sendall(b"POST /generate HTTP/1.1\r\n")
        socks.append(s)
    t0 = time.time()
    for i in range(3):
        for s in socks:
            try:
                s.sendall(b"X-Slow-%d: y\r\n" % i)
            except OSError:
                pass
        assert generate(server.port, prompt="hi", max_tokens=2)["tokens"] <= 2
        time.sleep(0.4)
    for s in socks:
        data = b""
        try:
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
        except OSError:
            pass
        s.close()
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
    assert time.time() - t0 < TIMEOUT + 4
    assert_healthy(server)


def test_abrupt_disconnects_free_the_slot(server, long_binary):
    # reset in the middle of a body
    s = socket.create_connection((HOST, server.port))
    s.sendall(b"POST /generate HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"pro")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert_healthy(server)
    # long generations (seconds) abandoned mid-way: the slot is free again at once
    ls = Server(long_binary, "--parallel", "1", "-t", "1", "--timeout", str(TIMEOUT))
    try:
        for path, body in (("/v1/completions", long_request(stream=True)),
                           ("/v1/chat/completions", long_request(stream=True, prompt=None,
                                                                 messages=[{"role": "user", "content": "hi"}])),
                           ("/generate", long_request())):
            s = socket.create_connection((HOST, ls.port))
            data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
            s.sendall(b"POST %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))
            if body.get("stream"):
                assert s.recv(100).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)
            assert get_json(ls.port, "/health")[1]["slots_busy"] == 1, path
            s.close()
            t0 = time.time()
            while get_json(ls.port, "/health")[1]["slots_busy"] and time.time() - t0 < 5:
                time.sleep(0.02)
            assert time.time() - t0 < 0.5, (path, time.time() - t0)
        # a request waiting in the queue that gives up leaves the queue
        s1 = socket.create_connection((HOST, ls.port))
        data = json.dumps(long_request()).encode()
        s1.sendall(b"POST /generate HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        time.sleep(0.2)
        s2 = socket.create_connection((HOST, ls.port))
        s2.sendall(b"POST /generate HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        time.sleep(0.2)
        assert get_json(ls.port, "/health")[1]["queued"] == 1
        s2.close()
        time.sleep(0.5)
        assert get_json(ls.port, "/health")[1]["queued"] == 0
        s1.close()
    finally:
        assert ls.stop() == 0


# ------------------------------------------------------------------------------------------
# Load: 32 clients x 4 requests against --parallel 4
# ------------------------------------------------------------------------------------------

def load_request(i):
    return {"prompt": f"Client {i} asks: what is machine learning?", "max_tokens": 48,
            "temperature": 0.8, "seed": 1000 + i, "ignore_eos": True}


def test_load_32_clients(server):
    n_clients, n_rounds = 32, 4
    alone = {i: generate(server.port, **load_request(i))["text"] for i in range(n_clients)}
    rss, results, lock = [], [], threading.Lock()

    def client(i):
        status, out, headers = get_json(server.port, "/generate", "POST", load_request(i), timeout=60)
        with lock:
            results.append((i, status, out, headers))

    for _ in range(n_rounds):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        assert not any(t.is_alive() for t in threads), "a request hung"
        rss.append(server.rss_kib())
    assert len(results) == n_clients * n_rounds
    ok = 0
    for i, status, out, headers in results:
        assert status in (200, 503), (status, out)
        if status == 200:
            ok += 1
            assert out["text"] == alone[i], i
        else:
            assert headers.get("Retry-After") == "1" and "busy" in out["error"]["message"]
    assert ok >= 4 * n_rounds
    print(f"load: {ok} answered, {len(results) - ok} x 503, RSS per round {rss} KiB")
    # after the first round (thread stacks, allocator arenas warmed up) RSS stays flat
    # (not under AddressSanitizer, whose quarantine holds freed memory on purpose)
    if not os.environ.get("BITNET_AOT_SERVER_BINARY"):
        assert max(rss[1:]) - rss[1] < 2048, rss
    assert_healthy(server)


# ------------------------------------------------------------------------------------------
# Fuzzing the HTTP parser with hypothesis over raw sockets
# ------------------------------------------------------------------------------------------

SEEDS = [
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    post(b"/generate", GOOD),
    post(b"/v1/chat/completions", b'{"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}'),
    chunked(b"/v1/completions", b"%x\r\n%s\r\n0\r\n\r\n" % (len(GOOD), GOOD)),
]


def test_fuzz_http_parser(server):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @st.composite
    def mutated(draw):
        data = bytearray(draw(st.sampled_from(SEEDS)))
        for _ in range(draw(st.integers(0, 6))):
            op = draw(st.integers(0, 3))
            pos = draw(st.integers(0, len(data)))
            if op == 0 and pos < len(data):
                data[pos] = draw(st.integers(0, 255))
            elif op == 1:
                data[pos:pos] = draw(st.binary(max_size=16))
            elif op == 2:
                del data[pos:pos + draw(st.integers(1, 8))]
            else:
                data = data[:pos]
        return bytes(data)

    @hypothesis.settings(max_examples=300, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(mutated())
    def run(data):
        status, head, body = raw(server.port, data)
        assert status is None or 100 <= status < 600
        if status is not None and status >= 400:
            json.loads(body)

    run()
    assert_healthy(server)


# ------------------------------------------------------------------------------------------
# API key and shutdown
# ------------------------------------------------------------------------------------------

def test_api_key(binary):
    s = Server(binary, "--api-key", "sekrit-key", "-t", "1", "--timeout", str(TIMEOUT))
    try:
        assert get_json(s.port, "/health")[0] == 200            # health needs no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer sekrit-ke"},
                        {"Authorization": "Bearer sekrit-keyy"}, {"Authorization": "Basic sekrit-key"}):
            status, out, h = get_json(s.port, "/generate", "POST", {"prompt": "x", "max_tokens": 1}, headers)
            assert status == 401 and out["error"]["type"] == "authentication_error", headers
        status, out, _ = get_json(s.port, "/generate", "POST", {"prompt": "x", "max_tokens": 1},
                                  {"Authorization": "Bearer sekrit-key"})
        assert status == 200
        openai = pytest.importorskip("openai")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit-key", max_retries=0)
        assert good.models.list().data[0].object == "model"
    finally:
        assert s.stop() == 0


def test_binds_loopback_by_default(binary):
    s = Server(binary, "-t", "1")
    try:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{s.port}"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            local = [line.split()[3] for line in out.stdout.splitlines()]
            assert local == [f"127.0.0.1:{s.port}"], out.stdout
    finally:
        assert s.stop() == 0


def test_graceful_shutdown(long_binary):
    s = Server(long_binary, "--parallel", "1", "--queue", "4", "-t", "1", "--timeout", str(TIMEOUT))
    # an idle connection (no request yet), a stream in flight and a request in the queue
    idle = socket.create_connection((HOST, s.port))
    stream = socket.create_connection((HOST, s.port))
    body = json.dumps(long_request(stream=True)).encode()
    stream.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    stream.recv(1)
    queued = socket.create_connection((HOST, s.port))
    body = json.dumps(long_request()).encode()
    queued.sendall(b"POST /generate HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.3)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    data = b""
    stream.settimeout(10)
    while True:
        b = stream.recv(65536)
        if not b:
            break
        data += b
    events = [e for e in data.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    assert 1 < len(events) < 3000                  # cut short, and ended cleanly
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "stop"
    queued.settimeout(10)
    assert queued.recv(100).startswith(b"HTTP/1.1 503")
    assert s.proc.wait(timeout=TIMEOUT + 10) == 0
    assert time.time() - t0 < TIMEOUT + 5
    for c in (idle, stream, queued):
        c.close()
    with pytest.raises(OSError):
        socket.create_connection((HOST, s.port), timeout=2).close()


# ------------------------------------------------------------------------------------------
# Continuous batching, the prompt cache, OpenAI fields, keep-alive, CORS, metrics, the page
# ------------------------------------------------------------------------------------------

def metrics(port) -> dict:
    status, body, headers = get_json(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def stream_text(port, body, timeout=60):
    """Text of a streamed /v1/completions request and the time of each content event."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200
        text, times, buf = "", [], b""
        while True:
            b = r.read1(65536) if hasattr(r, "read1") else r.read(1)
            if not b:
                break
            buf += b
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if ev == b"data: [DONE]":
                    continue
                d = json.loads(ev[6:])
                if d["choices"] and d["choices"][0]["text"]:
                    text += d["choices"][0]["text"]
                    times.append(time.time())
        return text, times
    finally:
        c.close()


def test_batched_decoding_same_text_alone_or_in_a_full_batch(binary):
    """8 seeded requests at once on --parallel 8 decode together (several rows per forward
    pass, from /metrics) and each gives exactly the text it gives alone; a long prompt
    arriving meanwhile is prefilled in chunks between decode steps."""
    s = Server(binary, "--parallel", "8", "-t", "2", "--timeout", str(TIMEOUT))
    try:
        reqs = [{"prompt": f"Client {i} says hello", "max_tokens": 40, "temperature": 0.9, "seed": 50 + i,
                 "ignore_eos": True, "presence_penalty": 0.5 * (i % 3), "frequency_penalty": 0.3 * (i % 2)}
                for i in range(8)]
        alone = [generate(s.port, **r)["text"] for r in reqs]
        m0 = metrics(s.port)
        results = [None] * 9
        barrier = threading.Barrier(9)

        def run(i):
            barrier.wait()
            if i < 8:
                results[i] = stream_text(s.port, reqs[i])[0]
            else:
                time.sleep(0.05)
                results[i] = generate(s.port, prompt="word " * 150, max_tokens=4, temperature=0)["text"]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert results[:8] == alone
        m1 = metrics(s.port)
        steps = m1["bitnet_batch_steps_total"] - m0["bitnet_batch_steps_total"]
        rows = m1["bitnet_batch_rows_total"] - m0["bitnet_batch_rows_total"]
        assert rows / steps > 2, (rows, steps)          # batched: many rows per pass
        assert steps < 8 * 40, steps                     # fewer passes than one per token
        assert results[8] == generate(s.port, prompt="word " * 150, max_tokens=4, temperature=0)["text"]
    finally:
        assert s.stop() == 0


def test_prompt_cache(server, binary):
    """A second request sharing a prefix reuses the slot's KV cache (reported as cached
    tokens) and gives the same text as without the cache (the CLI)."""
    system = "You are a helpful assistant who answers briefly. " * 3
    first = generate(server.port, prompt=system + "Question one?", max_tokens=6, temperature=0, ignore_eos=True)
    assert first["cached_tokens"] < first["prompt_tokens"]
    second = generate(server.port, prompt=system + "Question two?", max_tokens=6, temperature=0, ignore_eos=True)
    assert second["cached_tokens"] >= 20, second
    cli = subprocess.run([binary, "-p", system + "Question two?", "-n", "6", "--temp", "0", "--ignore-eos", "--no-timings"],
                         capture_output=True, timeout=60)
    assert cli.stdout.decode("utf-8", "replace") == system + "Question two?" + second["text"] + "\n"
    # a chat's next turn starts from the cached previous turn
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Hello there"}]
    out = get_json(server.port, "/v1/chat/completions", "POST", {"messages": msgs, "max_tokens": 8, "temperature": 0})[1]
    msgs += [{"role": "assistant", "content": out["choices"][0]["message"]["content"]},
             {"role": "user", "content": "And then?"}]
    out2 = get_json(server.port, "/v1/chat/completions", "POST", {"messages": msgs, "max_tokens": 8, "temperature": 0})[1]
    assert out2["usage"]["prompt_tokens_details"]["cached_tokens"] >= out["usage"]["prompt_tokens"] - 1
    assert metrics(server.port)["bitnet_prompt_tokens_cached_total"] > 0


def test_seed_absent_is_fresh_and_reported(server):
    body = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 1.0, "ignore_eos": True}
    a, b = generate(server.port, **body), generate(server.port, **body)
    assert a["seed"] != b["seed"]
    assert a["text"] != b["text"]
    assert generate(server.port, seed=a["seed"], **body)["text"] == a["text"]
    out = get_json(server.port, "/v1/completions", "POST", dict(body, seed=123))[1]
    assert out["seed"] == 123


def test_logprobs(server):
    body = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    out = get_json(server.port, "/v1/completions", "POST", dict(body, logprobs=3))[1]
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
    assert "".join(lp["tokens"]) == out["choices"][0]["text"]
    assert lp["text_offset"][0] == 0
    for tok, l, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        vals = list(top.values())
        assert len(top) <= 3 and vals == sorted(vals, reverse=True) and all(v <= 0 for v in vals)
        assert l <= 0 and abs(l - max(vals)) < 1e-6           # greedy: the chosen token is the most likely
    assert get_json(server.port, "/v1/completions", "POST", body)[1]["choices"][0]["logprobs"] is None

    msgs = [{"role": "user", "content": "Say something"}]
    out = get_json(server.port, "/v1/chat/completions", "POST",
                   {"messages": msgs, "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 2})[1]
    content = out["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= 5
    for c in content:
        assert len(c["top_logprobs"]) == 2 and c["logprob"] == c["top_logprobs"][0]["logprob"]
        assert bytes(c["bytes"]).decode("utf-8", "replace") == c["token"]
        assert sum(math.exp(t["logprob"]) for t in c["top_logprobs"]) <= 1 + 1e-5
    # streamed: the same log-probabilities, spread over the chunks
    status, raw_body, _ = get_json(server.port, "/v1/completions", "POST", dict(body, logprobs=1, stream=True))
    events = [json.loads(e[6:]) for e in raw_body.decode().split("\n\n") if e.startswith("data: {")]
    streamed = [x for e in events if e["choices"] and e["choices"][0]["logprobs"]
                for x in e["choices"][0]["logprobs"]["token_logprobs"]]
    whole = get_json(server.port, "/v1/completions", "POST", dict(body, logprobs=1))[1]
    assert streamed == whole["choices"][0]["logprobs"]["token_logprobs"]


def test_penalties_and_logit_bias(server):
    body = {"prompt": "the the the the the", "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    plain = generate(server.port, **body)
    pen = generate(server.port, frequency_penalty=2.0, presence_penalty=2.0, **body)
    assert pen["text"] != plain["text"]
    assert generate(server.port, frequency_penalty=2.0, presence_penalty=2.0, **body)["text"] == pen["text"]
    toks = get_json(server.port, "/tokenize", "POST", {"content": plain["text"], "add_special": False})[1]["tokens"]
    pen_toks = get_json(server.port, "/tokenize", "POST", {"content": pen["text"], "add_special": False})[1]["tokens"]
    assert len(set(pen_toks)) >= len(set(toks))          # penalised: more distinct tokens
    # logit_bias: a token pushed up by 100 is picked (greedy)
    first = toks[0]
    other = (first + 7) % 200 + 3
    out = get_json(server.port, "/v1/completions", "POST",
                   {"prompt": "the", "max_tokens": 1, "temperature": 0, "logit_bias": {str(other): 100}, "logprobs": 1})[1]
    want = get_json(server.port, "/detokenize", "POST", {"tokens": [other]})[1]["content"]
    assert out["choices"][0]["text"] == want and out["choices"][0]["logprobs"]["tokens"] == [want]


def test_unsupported_fields_are_named(server):
    for body, field in (({"prompt": "x", "max_tokens": 1, "foo": 1}, "foo"),
                        ({"prompt": "x", "max_tokens": 1, "echo": True}, "echo"),
                        ({"prompt": "x", "max_tokens": 1, "best_of": 3}, "best_of"),
                        ({"prompt": "x", "max_tokens": 1, "suffix": "y"}, "suffix")):
        status, out, _ = get_json(server.port, "/v1/completions", "POST", body)
        assert status == 400 and out["error"]["param"] == field and field in out["error"]["message"], out
    status, out, _ = get_json(server.port, "/v1/chat/completions", "POST",
                              {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})
    assert status == 400 and out["error"]["param"] == "tools"


def test_tokenize_detokenize(server):
    status, out, _ = get_json(server.port, "/tokenize", "POST", {"content": "Hello world"})
    assert status == 200 and all(isinstance(t, int) for t in out["tokens"])
    no_bos = get_json(server.port, "/tokenize", "POST", {"content": "Hello world", "add_special": False})[1]["tokens"]
    assert len(no_bos) <= len(out["tokens"])
    status, back, _ = get_json(server.port, "/detokenize", "POST", {"tokens": no_bos})
    assert status == 200 and back["content"] == "Hello world"


def test_keep_alive_and_connection_close(server):
    c = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        c.request("GET", "/health")
        r = c.getresponse()
        r.read()
        assert r.getheader("Connection") == "keep-alive"
        sock = c.sock
        for _ in range(3):
            c.request("POST", "/generate", body=json.dumps({"prompt": "hi", "max_tokens": 2}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            assert r.status == 200 and json.loads(r.read())["tokens"] <= 2
            assert c.sock is sock                            # the same connection throughout
        c.request("GET", "/health", headers={"Connection": "close"})
        r = c.getresponse()
        r.read()
        assert r.getheader("Connection") == "close"
    finally:
        c.close()
    # pipelined: two requests in one write, two answers
    with socket.create_connection((HOST, server.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_cors_log_and_metrics(binary):
    s = Server(binary, "-t", "1", "--cors", "http://example.test", "--timeout", str(TIMEOUT))
    try:
        status, _, headers = get_json(s.port, "/health")
        assert headers["Access-Control-Allow-Origin"] == "http://example.test"
        c = http.client.HTTPConnection(HOST, s.port, timeout=10)
        c.request("OPTIONS", "/v1/chat/completions", headers={"Origin": "http://example.test",
                                                              "Access-Control-Request-Method": "POST"})
        r = c.getresponse()
        r.read()
        assert r.status == 204 and "POST" in r.getheader("Access-Control-Allow-Methods")
        assert r.getheader("Access-Control-Allow-Origin") == "http://example.test"
        c.close()
        secret = "my secret prompt text"
        generate(s.port, prompt=secret, max_tokens=2)
        get_json(s.port, "/nope")
        m = metrics(s.port)
        assert m['bitnet_requests_total{status="200"}'] >= 2 and m['bitnet_requests_total{status="404"}'] == 1
        assert m["bitnet_completion_tokens_total"] >= 1 and m["bitnet_slots"] == 1
        assert m['bitnet_request_duration_seconds_bucket{le="+Inf"}'] >= 3
        assert m["bitnet_time_to_first_token_seconds_count"] >= 1
        assert "bitnet_queue_length" in m and "bitnet_slots_busy" in m
    finally:
        assert s.stop() == 0
    log = s.log_text()
    lines = [l for l in log.splitlines() if l.startswith(("GET ", "POST ", "OPTIONS "))]
    assert any(l.startswith("POST /generate 200 prompt=") for l in lines), log
    assert any(l.startswith("GET /nope 404") for l in lines), log
    assert secret not in log
    s = Server(binary, "-t", "1", "--log-prompts", "--timeout", str(TIMEOUT))
    try:
        generate(s.port, prompt=secret, max_tokens=1)
    finally:
        assert s.stop() == 0
    assert secret in s.log_text()


def test_chat_context_shift(server):
    """A conversation longer than the context drops its oldest turns after the system
    prompt and is answered; one message longer than the context is a 400."""
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(40):
        msgs += [{"role": "user", "content": f"Tell me about thing number {i}, please."},
                 {"role": "assistant", "content": f"Thing {i} is a thing."}]
    msgs.append({"role": "user", "content": "And the last one?"})
    status, out, _ = get_json(server.port, "/v1/chat/completions", "POST", {"messages": msgs, "max_tokens": 8})
    assert status == 200, out
    assert out["usage"]["prompt_tokens"] < 256
    status, out, _ = get_json(server.port, "/v1/chat/completions", "POST",
                              {"messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 8})
    assert status == 400 and out["error"]["code"] == "context_length_exceeded"


def test_chat_page(server):
    status, body, headers = get_json(server.port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "<script>" in page and "v1/chat/completions" in page
    assert "http://" not in page and "https://" not in page        # no external assets


# ------------------------------------------------------------------------------------------
# The server under load, compiled with AddressSanitizer and UndefinedBehaviorSanitizer
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("gcc"), reason="needs the system gcc for ASan/UBSan")
def test_server_under_load_clean_under_asan_ubsan(cache, tmp_path):
    """The generated tree compiled by gcc -fsanitize=address,undefined (server.c, http.c and
    json.c with -Werror), serving batched streams, plain and chat requests with logprobs and
    penalties, cancelled streams, prompt-cache hits, malformed requests and keep-alive at
    once, then shut down: no sanitizer report, exit 0 (LeakSanitizer included)."""
    from bitnet_aot.build import build
    gguf = cache.model("bitnet-b1.58", "tq2_0")
    d = tmp_path / "san"
    res = build(gguf, "x86_64-linux", emit_c=str(d), log=lambda s: None)
    s = Server(sanitized_binary(d, res.commands, werror=lambda src: src.endswith(("server.c", "http.c", "json.c"))), "--parallel", "4", "--queue", "16", "-t", "2", "--timeout", str(TIMEOUT),
               "--max-body", str(MAX_BODY))
    errors = []

    def client(i):
        try:
            kind = i % 5
            if kind == 0:
                stream_text(s.port, {"prompt": f"Stream {i}", "max_tokens": 24, "seed": i, "logprobs": 2})
            elif kind == 1:
                generate(s.port, prompt="A shared prefix for the cache. " * 4 + str(i), max_tokens=12,
                         presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"5": 3})
            elif kind == 2:
                st, out, _ = get_json(s.port, "/v1/chat/completions", "POST",
                                      {"messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 10,
                                       "logprobs": True, "top_logprobs": 3, "stream": i % 2 == 0})
                assert st in (200, 503)
            elif kind == 3:                                   # cancelled mid-stream
                with socket.create_connection((HOST, s.port), timeout=10) as c:
                    body = json.dumps({"prompt": "Once", "max_tokens": 200, "stream": True, "ignore_eos": True}).encode()
                    c.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    c.recv(200)
            else:
                name, data, want = MALFORMED[i % len(MALFORMED)]
                status, _, _ = raw(s.port, data, half_close=None in want)
                assert status in want, name
        except Exception as e:                                # noqa: BLE001 (collected, asserted below)
            errors.append((i, repr(e)))

    try:
        for _ in range(2):
            threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=240)
            assert not any(t.is_alive() for t in threads), "a request hung"
        assert not errors, errors
        metrics(s.port)
        assert_healthy(s)
    finally:
        rc = s.stop()
    err = s.log_text()
    assert "runtime error" not in err and "Sanitizer" not in err, err[-4000:]
    assert rc == 0, err[-4000:]


@pytest.mark.slow
def test_soak_2000_mixed_requests(binary):
    """2,000 mixed requests from 16 clients (plain, streamed, chat, cancelled mid-stream,
    malformed, over-long, keep-alive): every one answered as expected, none hung, /health
    answering throughout, resident memory flat after warm-up."""
    s = Server(binary, "--parallel", "4", "--queue", "64", "-t", "2", "--timeout", str(TIMEOUT),
               "--max-body", str(MAX_BODY))
    total, workers = 2000, 16
    counter, lock = iter(range(total)), threading.Lock()
    problems, done, rss = [], [0], []
    stop_health = threading.Event()

    def health():
        while not stop_health.is_set():
            t0 = time.time()
            try:
                status = get_json(s.port, "/health", timeout=5)[0]
                if status != 200 or time.time() - t0 > 3:
                    problems.append(("health", status, time.time() - t0))
            except OSError as e:
                problems.append(("health", repr(e)))
            time.sleep(0.2)

    def one(i):
        kind = i % 8
        if kind in (0, 1):
            out = generate(s.port, prompt=f"Soak {i}", max_tokens=8, seed=i)
            assert out["tokens"] <= 8
        elif kind == 2:
            text, _ = stream_text(s.port, {"prompt": f"Stream {i}", "max_tokens": 8})
        elif kind == 3:
            st, out, _ = get_json(s.port, "/v1/chat/completions", "POST",
                                  {"messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 6, "stream": i % 2 == 0})
            assert st == 200, out
        elif kind == 4:                                       # cancelled mid-stream
            with socket.create_connection((HOST, s.port), timeout=10) as c:
                body = json.dumps({"prompt": "Once", "max_tokens": 100, "stream": True, "ignore_eos": True}).encode()
                c.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                c.recv(300)
        elif kind == 5:
            name, data, want = MALFORMED[i % len(MALFORMED)]
            status, _, _ = raw(s.port, data, half_close=None in want)
            assert status in want, name
        elif kind == 6:                                       # over-long
            st, out, _ = get_json(s.port, "/generate", "POST", {"prompt": "word " * 400})
            assert st == 400 and out["error"]["code"] == "context_length_exceeded"
        else:                                                 # keep-alive: three on one connection
            c = http.client.HTTPConnection(HOST, s.port, timeout=30)
            try:
                for _ in range(3):
                    c.request("POST", "/tokenize", body=json.dumps({"content": f"t {i}"}))
                    r = c.getresponse()
                    assert r.status == 200 and json.loads(r.read())["tokens"]
            finally:
                c.close()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                one(i)
            except Exception as e:                            # noqa: BLE001 (collected, asserted below)
                problems.append((i, repr(e)))
            with lock:
                done[0] += 1
                if done[0] % 250 == 0:
                    rss.append(s.rss_kib())

    hthread = threading.Thread(target=health)
    hthread.start()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=1200)
        assert not any(t.is_alive() for t in threads), "a request hung"
    finally:
        stop_health.set()
        hthread.join()
    try:
        assert done[0] == total and not problems, problems[:10]
        print(f"soak: RSS every 250 requests {rss} KiB")
        assert max(rss[2:]) - rss[1] < 8192, rss             # flat after warm-up (8 MiB slack)
        assert_healthy(s)
    finally:
        assert s.stop() == 0
