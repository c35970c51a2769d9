"""Progress of the slow steps (zig's first C-library build, packing, perplexity, convert).

On a terminal: a tqdm bar on stderr that keeps its elapsed time ticking while one step
runs for a long time (the first link for a target compiles zig's libc for about a
minute). Otherwise (a pipe, a log file, CI): plain lines, at most one every few seconds,
and none at all for a step that ends within `delay` seconds (2; the environment variable
BITNET_AOT_PROGRESS_DELAY sets it and the spacing of the plain lines).

Library calls are quiet unless a caller turns progress on: the `bitnet-aot` command does
(except with -q), and so does the build cache the Python binding compiles through.

    with progress.shown(True):
        for x in progress.iterate(items, "packing weights", unit="layer"):
            ...
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

_enabled = False


@contextlib.contextmanager
def shown(on: bool = True):
    """Turn progress output on (or off) for the calls inside the block."""
    global _enabled
    old, _enabled = _enabled, bool(on)
    try:
        yield
    finally:
        _enabled = old


def enabled() -> bool:
    return _enabled


class Progress:
    """Counts `total` steps of `desc`. update(n) after each, note(text) to name the current
    one, close() at the end (or use it as a context manager)."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "step", delay: float = 2.0,
                 every: float = 10.0, stream=None, force: bool | None = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream or sys.stderr
        self.on = _enabled if force is None else force
        env = os.environ.get("BITNET_AOT_PROGRESS_DELAY")    # seconds before the first line and between lines
        if env:
            try:
                delay = every = max(0.0, float(env))
            except ValueError:
                pass
        self.n, self.t0, self.last_line, self.every, self.delay = 0, time.time(), 0.0, every, delay
        self.lines = 0                         # plain lines printed
        self._line_lock = threading.Lock()
        self.current = ""
        self.bar = None
        self._stop = threading.Event()
        self._ticker = None
        self.tty = self.on and hasattr(self.stream, "isatty") and self.stream.isatty()
        if self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, delay=delay, leave=True,
                            dynamic_ncols=True)
        if self.on:          # a long single step (zig's first libc) still shows its time
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self):
        while not self._stop.wait(0.5):
            try:
                if self.bar is not None:
                    self.bar.refresh()
                else:
                    self._line()
            except Exception:
                return

    def _line(self, final: bool = False):
        with self._line_lock:
            self._line_locked(final)

    def _line_locked(self, final: bool):
        el = time.time() - self.t0
        if final:
            if not self.lines and el < self.delay:
                return                      # a short job: nothing to report
        elif el < self.delay or (self.lines and el - self.last_line < self.every):
            return
        self.last_line, self.lines = el, self.lines + 1
        done = f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"
        pct = f" ({100 * self.n // self.total}%)" if self.total else ""
        cur = f", {self.current}" if self.current and not final else ""
        print(f"{self.desc}: {done}{pct}{cur}, {el:.0f} s{', done' if final else ''}", file=self.stream, flush=True)

    def note(self, text: str):
        """Names the step now running (shown beside the bar or in the next line)."""
        self.current = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def update(self, n: int = 1):
        self.n += n
        if not self.on:
            return
        if self.bar is not None:
            self.bar.update(n)
        else:
            self._line()

    def close(self, failed: bool = False):
        """Ends the bar (or prints the last line, unless the work failed or was left)."""
        if not self.on:
            return
        self._stop.set()
        if self.bar is not None:
            self.bar.set_postfix_str("", refresh=False)
            self.bar.close()
            self.bar = None
        elif not failed and (self.lines or time.time() - self.t0 >= self.delay):
            self._line(final=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(failed=exc_type is not None)


def iterate(items, desc: str, unit: str = "step", total: int | None = None, **kw):
    """Yields items with progress (shown only while progress is on)."""
    if total is None:
        try:
            total = len(items)
        except TypeError:
            total = None
    with Progress(desc, total, unit, **kw) as p:
        for x in items:
            yield x
            p.update()
