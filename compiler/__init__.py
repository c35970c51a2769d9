"""bitnet-aot: an ahead-of-time compiler for ternary (BitNet b1.58) language models.

GGUF -> model description (gguf_import) -> packed weights (pack) -> generated C (codegen)
-> zig cc (toolchain, build) -> one static binary per target.
"""
__version__ = "0.1.0"

from .errors import BitnetError  # noqa: E402


def __getattr__(name):
    # The binding imports cffi and numpy machinery; load it only when asked for.
    if name == "CompiledModel":
        from .bindings import api
        return api.CompiledModel
    if name == "BitNetModel":
        from .bindings import model
        return model.BitNetModel
    raise AttributeError(name)
