"""Load benchmark of `./model serve` (continuous batching), against llama.cpp's llama-server.

    python bench/serve.py [--shape 2b4t|small] [--clients 1,4,8,16] [--rounds 2] [--max-tokens 64]
    python bench/serve.py --smoke          # the bundled Shakespeare model, 1 and 4 clients, seconds

1. writes (or reuses) the BitNet-b1.58-2B-4T-shaped random GGUF of bench/e2e.py (architecture
   `bitnet`, TQ2_0, F16 head: llama.cpp reads it too) and builds it for this machine;
2. starts `model serve --parallel P` on a free 127.0.0.1 port, and llama-server from
   ~/.cache/bitnet-aot/peers/llama.cpp/build/bin/llama-server (when it is there) with
   `-np P` (continuous batching) on the same file, threads and context per slot;
3. for each client count C: C asyncio clients on loopback each send --rounds streamed
   /v1/completions requests one after another (different prompts, --max-tokens tokens,
   ignore_eos, seeded sampling), bounded by --time-limit seconds per level;
4. reports per system and C: aggregate decode tok/s (all tokens / wall time), time to
   first token p50/p99, per-token latency (gaps between streamed tokens) p50/p99, and
   single-stream tok/s; prints a table and writes bench/results/<date>-<host>-serve.json.

Only loopback connections; every request and level is bounded. The machine may be shared:
compare systems within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CACHE = os.path.expanduser(os.environ.get("BITNET_AOT_BENCH_CACHE", "~/.cache/bitnet-aot/bench"))
LLAMA_SERVER = os.path.expanduser("~/.cache/bitnet-aot/peers/llama.cpp/build/bin/llama-server")
HOST = "127.0.0.1"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def model_path(shape: str) -> str:
    if shape == "shakespeare":
        return os.path.join(ROOT, "examples", "shakespeare.gguf")
    # the e2e bench's file, but with printable filler tokens: a random model samples across
    # all 128K ids, and reserved control tokens would stream as empty text
    from bench.e2e import SMALL_SHAPE
    from bitnet_aot.factory import SHAPES_2B4T, make_test_model
    os.makedirs(CACHE, exist_ok=True)
    p = os.path.join(CACHE, f"{shape}-bitnet-tq2_0-f16-printable.gguf")
    if not os.path.exists(p):
        log(f"writing {p} (cached for later runs) ...")
        shp = dict(SHAPES_2B4T) if shape == "2b4t" else dict(SMALL_SHAPE)
        make_test_model(p + ".tmp", "bitnet", "tq2_0", tokenizer="bpe-printable", embd_type="f16", seed=1, **shp)
        os.replace(p + ".tmp", p)
    return p


def build_ours(gguf: str) -> str:
    from bitnet_aot.build import build
    os.makedirs(CACHE, exist_ok=True)
    out = os.path.join(CACHE, "serve-" + os.path.basename(gguf).replace(".gguf", ""))
    t0 = time.time()
    res = build(gguf, "host", out, log=lambda s: None)
    log(f"built {res.output} in {time.time() - t0:.0f} s")
    return res.output


class Proc:
    """A server process on a free loopback port, up once GET /health answers 200."""

    def __init__(self, name, cmd_for_port, health="/health", timeout=600):
        self.name = name
        self.port = free_port()
        self.cmd = cmd_for_port(self.port)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    s.sendall(f"GET {health} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} did not come up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def one_request(port: int, body: dict, timeout: float) -> dict:
    """One streamed completion over a fresh loopback connection: send time, token times."""
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split()[1])
        if status != 200:
            return {"status": status, "times": [], "t0": t0}
        chunked = b"transfer-encoding: chunked" in head.lower()
        times, buf = [], b""
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            b = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.perf_counter()))
            if not b:
                break
            now = time.perf_counter()
            buf += b
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                i = ev.find(b"data: ")
                if i < 0:
                    continue
                payload = ev[i + 6:].strip()
                if payload == b"[DONE]":
                    return {"status": 200, "times": times, "t0": t0}
                try:
                    d = json.loads(payload)
                except ValueError:
                    continue
                ch = d.get("choices") or []
                if ch and (ch[0].get("text") or ""):
                    times.append(now)
            if chunked and buf.endswith(b"0\r\n\r\n"):
                break
        return {"status": 200, "times": times, "t0": t0}
    finally:
        writer.close()


async def level(port: int, clients: int, rounds: int, max_tokens: int, time_limit: float, prompt_words: int) -> dict:
    results = []

    async def client(c):
        for r in range(rounds):
            words = " ".join(f"w{(c * 131 + r * 17 + k) % 997}" for k in range(prompt_words))
            body = {"prompt": f"Client {c} request {r}: {words}", "max_tokens": max_tokens, "stream": True,
                    "temperature": 0.8, "seed": 1000 * c + r, "ignore_eos": True}
            try:
                results.append(await one_request(port, body, time_limit))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                results.append({"status": None, "error": repr(e), "times": [], "t0": time.perf_counter()})

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(clients))), time_limit + 30)
    except asyncio.TimeoutError:
        log(f"  level with {clients} clients hit the time limit")
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200 and r["times"]]
    tokens = sum(len(r["times"]) for r in ok)
    ttft = [r["times"][0] - r["t0"] for r in ok]
    gaps = [b - a for r in ok for a, b in zip(r["times"], r["times"][1:])]
    streams = [(len(r["times"]) - 1) / (r["times"][-1] - r["times"][0]) for r in ok
               if len(r["times"]) > 1 and r["times"][-1] > r["times"][0]]

    def pct(xs, p):
        if not xs:
            return None
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

    return {"clients": clients, "requests": len(results), "ok": len(ok), "tokens": tokens, "wall_s": wall,
            "aggregate_tok_s": tokens / wall if wall > 0 else 0.0,
            "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99),
            "token_latency_p50_s": pct(gaps, 50), "token_latency_p99_s": pct(gaps, 99),
            "stream_tok_s_median": statistics.median(streams) if streams else None}


async def chat_ttft(port: int, system_words: int, cache: bool, timeout: float) -> float:
    """Time to first token of the second turn of a chat (long system prompt), with or
    without the prompt cache ("cache_prompt", which llama-server knows too)."""
    system = " ".join(f"rule{k % 50}" for k in range(system_words))
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "First question?"}]

    async def ask(messages):
        data = json.dumps({"messages": messages, "max_tokens": 16, "temperature": 0, "stream": True,
                           "cache_prompt": cache}).encode()
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
            await writer.drain()
            text, first, buf = "", None, b""
            while True:
                b = await asyncio.wait_for(reader.read(65536), timeout)
                if not b:
                    break
                buf += b
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    i = ev.find(b"data: {")
                    if i < 0:
                        continue
                    d = json.loads(ev[i + 6:])
                    delta = (d.get("choices") or [{}])[0].get("delta") or {}
                    if delta.get("content"):
                        first = first or time.perf_counter()
                        text += delta["content"]
            return text, (first or time.perf_counter()) - t0
        finally:
            writer.close()

    reply, _ = await ask(msgs)
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And the second?"}]
    return (await ask(msgs))[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="2b4t", choices=["2b4t", "small", "shakespeare"])
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=24)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=512, help="context per slot (both servers)")
    ap.add_argument("--time-limit", type=float, default=300, help="seconds per level")
    ap.add_argument("--no-peer", action="store_true", help="measure bitnet-aot alone")
    ap.add_argument("--smoke", action="store_true", help="the bundled model, 1 and 4 clients, 8 tokens: a quick check")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, alternating the systems; medians reported")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/<date>-<host>-serve.json)")
    a = ap.parse_args()
    if a.smoke:
        a.shape, a.clients, a.rounds, a.max_tokens, a.time_limit, a.no_peer, a.ctx, a.reps = \
            "shakespeare", "1,4", 1, 8, 60, True, 256, 1
    levels = [int(x) for x in a.clients.split(",")]
    parallel = max(levels)
    gguf = model_path(a.shape)
    exe = build_ours(gguf)
    systems = [("bitnet-aot", lambda p: [exe, "serve", "--port", str(p), "--parallel", str(parallel), "-t", str(a.threads),
                                         "--ctx", str(a.ctx), "--queue", str(4 * parallel)])]
    if not a.no_peer and os.path.exists(LLAMA_SERVER):
        systems.append(("llama-server", lambda p: [LLAMA_SERVER, "-m", gguf, "--host", HOST, "--port", str(p),
                                                   "-np", str(parallel), "-c", str(a.ctx * parallel), "-t", str(a.threads),
                                                   "-tb", str(a.threads), "--cont-batching", "--no-webui"]))
    elif not a.no_peer:
        log(f"no llama-server at {LLAMA_SERVER}: measuring bitnet-aot alone")
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "host": socket.gethostname(), "model": os.path.basename(gguf), "threads": a.threads,
              "parallel": parallel, "max_tokens": a.max_tokens, "rounds": a.rounds, "systems": {}}
    # Repetitions alternate the systems (A B, B A, A B, ...); each level's figures are the
    # medians over the repetitions, and every repetition's rows are kept in the JSON.
    per_rep = {name: [] for name, _ in systems}
    ttfts = {name: [] for name, _ in systems}
    for rep in range(a.reps):
        order = systems if rep % 2 == 0 else systems[::-1]
        for name, cmd in order:
            log(f"{name}: starting (repetition {rep + 1}/{a.reps})")
            srv = Proc(name, cmd)
            try:
                asyncio.run(level(srv.port, 1, 1, 4, a.time_limit, a.prompt_words))      # warm-up
                rows = []
                for c in levels:
                    r = asyncio.run(level(srv.port, c, a.rounds, a.max_tokens, a.time_limit, a.prompt_words))
                    log(f"  {c:2d} clients: {r['aggregate_tok_s']:.1f} tok/s, {r['ok']}/{r['requests']} ok")
                    rows.append(r)
                per_rep[name].append(rows)
                sw = 40 if a.smoke else 300
                ttft = {k: asyncio.run(chat_ttft(srv.port, sw, k == "cached", a.time_limit)) for k in ("uncached", "cached")}
                log(f"  second chat turn TTFT ({sw}-word system prompt): {ttft['uncached'] * 1e3:.0f} ms without the "
                    f"prompt cache, {ttft['cached'] * 1e3:.0f} ms with it")
                ttfts[name].append(ttft)
            finally:
                srv.stop()

    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    report["reps"] = a.reps
    for name, reps in per_rep.items():
        rows = []
        for i, c in enumerate(levels):
            runs = [r[i] for r in reps]
            row = {k: med([r[k] for r in runs]) for k in runs[0] if k != "clients"}
            row["clients"] = c
            row["repetitions"] = runs
            rows.append(row)
        report["systems"][name] = rows
        report.setdefault("second_turn_ttft_s", {})[name] = {
            k: med([t[k] for t in ttfts[name]]) for k in ("uncached", "cached")}
    print(f"{'system':14s} {'clients':>7s} {'tok/s':>8s} {'TTFT p50':>9s} {'TTFT p99':>9s} {'tok p50':>8s} {'tok p99':>8s} {'stream':>7s}")
    ms = lambda v: f"{v * 1e3:.0f} ms" if v is not None else "-"  # noqa: E731
    for name, rows in report["systems"].items():
        for r in rows:
            print(f"{name:14s} {r['clients']:7d} {r['aggregate_tok_s']:8.1f} {ms(r['ttft_p50_s']):>9s} {ms(r['ttft_p99_s']):>9s} "
                  f"{ms(r['token_latency_p50_s']):>8s} {ms(r['token_latency_p99_s']):>8s} "
                  f"{(r['stream_tok_s_median'] or 0):7.1f}")
    for name, t in report.get("second_turn_ttft_s", {}).items():
        print(f"{name}: second chat turn TTFT {t['uncached'] * 1e3:.0f} ms without the prompt cache, {t['cached'] * 1e3:.0f} ms with it")
    if "llama-server" in report["systems"]:
        for ours, theirs in zip(report["systems"]["bitnet-aot"], report["systems"]["llama-server"]):
            if theirs["aggregate_tok_s"]:
                print(f"ratio at {ours['clients']} clients: {ours['aggregate_tok_s'] / theirs['aggregate_tok_s']:.2f}x")
    one = next((r for r in report["systems"]["bitnet-aot"] if r["clients"] == 1), None)
    eight = next((r for r in report["systems"]["bitnet-aot"] if r["clients"] == 8), None)
    if one and eight and one["aggregate_tok_s"]:
        print(f"bitnet-aot: 8 clients / 1 client aggregate = {eight['aggregate_tok_s'] / one['aggregate_tok_s']:.2f}x")
    out = a.out or os.path.join(ROOT, "bench", "results",
                                f"{datetime.date.today().isoformat()}-{socket.gethostname()}-serve{'-smoke' if a.smoke else ''}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
