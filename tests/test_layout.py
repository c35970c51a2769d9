"""The runtime's layers (ARCHITECTURE.md): core/ includes nothing from text/ or app/, text/
nothing from app/; the shared library (the Python binding) is built from core/ and text/ only."""
from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime_c")
ALLOWED = {"core": {"core"}, "text": {"core", "text"}, "app": {"core", "text", "app"}}


def _layer_of_include(including: str, name: str) -> str:
    """The layer a quoted #include resolves to: a sibling file first, then src/ (-Isrc)."""
    here = os.path.dirname(including)
    if os.path.exists(os.path.join(here, name)):
        return os.path.relpath(os.path.join(here, name), RUNTIME).split(os.sep)[0]
    if os.path.exists(os.path.join(RUNTIME, name)):
        return name.split("/")[0] if "/" in name else "api"
    return "generated"                   # gen/: model_config.h, chat_page.h


def test_layers_include_only_downwards():
    bad = []
    for layer in ALLOWED:
        for d, _, files in os.walk(os.path.join(RUNTIME, layer)):
            for f in files:
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(d, f)
                for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', open(path).read(), re.M):
                    to = _layer_of_include(path, name)
                    if to not in ALLOWED[layer] | {"api", "generated"}:
                        bad.append(f"{os.path.relpath(path, RUNTIME)} includes {name} ({to})")
    assert not bad, bad


def test_every_runtime_file_is_in_a_layer():
    top = sorted(f for f in os.listdir(RUNTIME) if not f.startswith((".", "__")))
    assert top == ["app", "bitnet.h", "core", "text"], top


def test_shared_library_sources_leave_out_the_app_layer(tmp_path):
    from bitnet_aot.build import BuildOptions, generate
    from bitnet_aot.gguf_import import load_gguf
    from bitnet_aot.targets import load_target
    m = load_gguf(os.path.join(ROOT, "examples", "shakespeare.gguf"))
    srcs = [p for p, _ in generate(m, load_target("host"), str(tmp_path), BuildOptions(shared=True),
                                   log=lambda s: None)["sources"]]
    assert not [p for p in srcs if p.startswith(os.path.join("src", "app"))], srcs
    assert any(p.endswith(os.path.join("core", "model.c")) for p in srcs)
    assert any(p.endswith(os.path.join("text", "generate.c")) for p in srcs)
