"""Writes the GGUFs in this folder with llama.cpp's and bitnet.cpp's own quantizers (not
with bitnet-aot's encoders), so tests/test_peer_files.py can check that files other tools
write import and run as the same weights in F16.

    python tests/data/peer-gguf/make.py LLAMA_QUANTIZE BITNET_QUANTIZE

LLAMA_QUANTIZE: llama.cpp's `llama-quantize` (the peer build script's `build-peers.sh llama` builds
it from the llama.cpp vendored in the PyPI sdist llama-cpp-python==0.3.36, build 11312).
BITNET_QUANTIZE: bitnet.cpp's `llama-quantize` (`build-peers.sh bitnet`: microsoft/BitNet
1876a3e with its llama.cpp fork), for I2_S (type id 36 in its numbering), run with one
thread as it must be.
For each source in SOURCES, the F16 model is written by bitnet-aot's factory (random
ternary, or for Q1_0 binary, weights times one scale per tensor, in F16), then quantized
with `--pure` (every projection in the asked type) and the embedding and head kept in F16;
manifest.json records the factory arguments, the commands and the sha256 of each file. The
F16 sources are not stored: the test writes them again from the same arguments.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))

# name -> (factory arguments of the F16 source, llama.cpp types it is quantized to)
SHAPE = dict(n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=2, n_vocab=512, n_ctx=256)
SOURCES = {
    "llama-ternary": (dict(arch="llama", proj_type="f16", seed=11, **SHAPE), ["TQ1_0", "TQ2_0", "Q2_0", "I2_S"]),
    "bitnet-ternary": (dict(arch="bitnet", proj_type="f16", seed=12, **SHAPE), ["TQ1_0", "TQ2_0", "I2_S"]),
    "llama-binary": (dict(arch="llama", proj_type="f16", seed=13, zero_fraction=0.0, **SHAPE), ["Q1_0"]),
}


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    from bitnet_aot.factory import make_test_model
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    tools = {"llama.cpp": (sys.argv[1], "llama.cpp llama-quantize, build 11312 (llama-cpp-python 0.3.36 sdist)"),
             "bitnet.cpp": (sys.argv[2], "bitnet.cpp llama-quantize (microsoft/BitNet 1876a3e)")}
    manifest = {"files": []}
    with tempfile.TemporaryDirectory() as d:
        for name, (args, types) in SOURCES.items():
            src = make_test_model(os.path.join(d, name + "-f16.gguf"), **args)
            for t in types:
                out = f"{name}-{t.lower()}.gguf"
                tool = "bitnet.cpp" if t == "I2_S" else "llama.cpp"
                quantize, what = tools[tool]
                cmd = [quantize, "--pure", "--token-embedding-type", "f16", "--output-tensor-type", "f16",
                       src, os.path.join(HERE, out), t, "1"]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                manifest["files"].append({"file": out, "type": t, "quantizer": what, "source": name, "factory": args,
                                          "source_sha256": sha256(src), "sha256": sha256(os.path.join(HERE, out)),
                                          "command": ["llama-quantize"] + cmd[1:5] + ["SOURCE_F16.gguf", out, t, "1"]})
                print(out, os.path.getsize(os.path.join(HERE, out)))
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
