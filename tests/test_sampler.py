"""The C sampler (runtime_c/core/sampler.c, through bn_sample) against a plain numpy statement of
the same rules: candidates in order of logit (ties: lower id first), top-k, softmax at the
temperature, top-p, min-p, then one xorshift64* draw. Each case is decided by the rules,
not by the C code's internals (a heap selection in C, a full sort here)."""
from __future__ import annotations

import numpy as np
import pytest

from bitnet_aot.bindings.api import CompiledModel, _ffi

MASK = (1 << 64) - 1


def rng_next(state: int) -> tuple[int, int]:
    x = state
    x ^= x >> 12
    x ^= (x << 25) & MASK
    x ^= x >> 27
    return (x * 0x2545F4914F6CDD1D) & MASK, x


def numpy_sample(logits: np.ndarray, temp: float, top_k: int, top_p: float, min_p: float, state: int) -> int:
    V = logits.size
    order = sorted(range(V), key=lambda i: (-float(logits[i]), i))
    n = top_k if 0 < top_k < V else V
    ids = order[:n]
    lg = logits[ids].astype(np.float32)
    e = np.exp(((lg - lg[0]) / np.float32(temp)).astype(np.float32)).astype(np.float32)
    p = (e.astype(np.float64) / e.astype(np.float64).sum()).astype(np.float32)
    if top_p < 1.0:
        cum = np.cumsum(p.astype(np.float64))
        n = int(np.argmax(cum >= top_p)) + 1 if (cum >= top_p).any() else n
    if min_p > 0.0:
        keep = 1
        while keep < n and p[keep] >= p[0] * np.float32(min_p):
            keep += 1
        n = keep
    out, _ = rng_next(state)
    r = float(np.float32((out >> 40) / 16777216.0)) * float(p[:n].astype(np.float64).sum())
    cum = np.cumsum(p[:n].astype(np.float64))
    hit = np.nonzero(r < cum)[0]
    return ids[int(hit[0])] if hit.size else ids[n - 1]


@pytest.fixture(scope="module")
def lib(cache):
    return cache.build(cache.model()).output


CASES = [  # temperature, top_k, top_p, min_p
    (0.8, 40, 0.95, 0.05), (1.0, 0, 1.0, 0.0), (1.0, 5, 1.0, 0.0), (0.5, 0, 0.9, 0.0),
    (1.5, 1000, 1.0, 0.1), (2.0, 3, 0.5, 0.0), (1.0, 1, 1.0, 0.0),
]


@pytest.mark.parametrize("temp,top_k,top_p,min_p", CASES)
def test_sampler_follows_the_rules(lib, temp, top_k, top_p, min_p):
    with CompiledModel(lib, n_ctx=32, n_threads=1) as cm:
        V = cm.lib.bn_n_vocab()
        rng = np.random.default_rng(int(temp * 100) + top_k)
        s = cm.lib.bn_sampling_default()
        s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty = temp, top_k, top_p, min_p, 1.0
        sp = _ffi.new("bn_sampling *", s)
        for trial in range(40):
            # coarse logits: many exact ties, so the id tie-break is exercised
            logits = (rng.integers(-40, 40, V) / 8).astype(np.float32)
            state = int(rng.integers(1, 2**63))
            st = _ffi.new("uint64_t *", state)
            buf = _ffi.new("float[]", logits.tolist())
            got = cm.lib.bn_sample(buf, sp, _ffi.NULL, 0, st)
            assert got == numpy_sample(logits, temp, top_k, top_p, min_p, state), (trial, temp, top_k)
