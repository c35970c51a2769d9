"""The chat page at `/` (runtime_c/chat_page.html, compiled into the binary) in a real
headless Chromium (Debian's `chromium`), driven over its DevTools protocol with a small
WebSocket client written here (no browser-automation package needed).

Checked: the page loads from the server alone (no external requests), a typed message gets
a reply streamed in as several server-sent events, and a second message continues the
conversation. A screenshot is kept in tests/artifacts/chat-page.png. Skipped, with the
reason, where no Chromium is installed.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_server import Server, get_json  # noqa: E402

GGUF = Path(__file__).resolve().parents[1] / "examples" / "shakespeare.gguf"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install -y chromium)")


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, client masking,
    fragmented and 64-bit-length messages."""

    def __init__(self, url: str, timeout=30):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {m.group(3)} HTTP/1.1\r\nHost: {m.group(1)}:{m.group(2)}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            b = self.sock.recv(n - len(data))
            if not b:
                raise ConnectionError("websocket closed")
            data += b
        return data

    def send(self, text: str):
        payload = text.encode()
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            data = self._exact(n)
            if b0 & 0x0F in (0x1, 0x0):
                message += data
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        self.sock.close()


class Page:
    def __init__(self, ws: WebSocket):
        self.ws, self.next_id = ws, 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")

    def wait(self, expr: str, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise TimeoutError(expr)


@pytest.fixture(scope="module")
def exe(cache):
    return cache.build(str(GGUF), "host", shared=False).output


def test_chat_page_in_headless_chromium(exe, tmp_path):
    s = Server(exe, "--parallel", "2", "-t", "1", "-n", "48")
    profile = tmp_path / "profile"
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                                f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=900,700",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ws = None
    try:
        port = None
        deadline = time.time() + 60
        while port is None and time.time() < deadline:
            line = browser.stderr.readline().decode("utf-8", "replace")
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
            elif not line and browser.poll() is not None:
                pytest.fail("chromium exited before its DevTools endpoint came up")
        assert port, "no DevTools endpoint"
        targets = get_json(port, "/json/list")[1]
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        ws = WebSocket(page_ws)
        page = Page(ws)
        page.call("Page.enable")
        page.call("Network.enable")
        page.call("Page.navigate", url=s.url + "/")
        page.wait("document.readyState === 'complete' && document.getElementById('model').textContent.length > 0")
        assert page.js("document.title") == "bitnet-aot chat"
        assert page.js("document.getElementById('model').textContent") == "shakespeare.gguf"
        # every resource came from the server itself
        urls = page.js("performance.getEntriesByType('resource').map(e => e.name)")
        assert all(u.startswith(s.url) for u in urls), urls

        page.js("document.getElementById('q').value = 'ROMEO: What light through yonder window breaks?';"
                "document.getElementById('send').click(); true")
        page.wait("document.querySelectorAll('.assistant').length == 1 && "
                  "document.querySelector('.assistant').dataset.done == '1'")
        reply = page.js("document.querySelector('.assistant').textContent")
        events = int(page.js("document.querySelector('.assistant').dataset.events || '0'"))
        assert reply and events > 2, (reply, events)          # streamed: many events
        assert page.js("document.querySelector('.msg.user').textContent").startswith("ROMEO:")

        page.js("document.getElementById('q').value = 'And then?'; document.getElementById('send').click(); true")
        page.wait("document.querySelectorAll('.assistant').length == 2 && "
                  "document.querySelectorAll('.assistant')[1].dataset.done == '1'")
        assert page.js("document.querySelectorAll('.msg.error').length") == 0

        shot = page.call("Page.captureScreenshot", format="png")["data"]
        ARTIFACTS.mkdir(exist_ok=True)
        png = base64.b64decode(shot)
        assert png.startswith(b"\x89PNG")
        (ARTIFACTS / "chat-page.png").write_bytes(png)
    finally:
        if ws:
            ws.close()
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
        assert s.stop() == 0
    log = s.log_text()
    assert "POST /v1/chat/completions 200" in log and "GET / 200" in log
