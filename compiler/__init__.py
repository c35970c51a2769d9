"""bitnet-aot: an ahead-of-time compiler for ternary (BitNet b1.58) language models.

GGUF -> model description (gguf_import) -> packed weights (pack) -> generated C (codegen)
-> zig cc (toolchain, build) -> one static binary per target.

The Python API: ``BitNetModel`` (text in, text out; ``from_pretrained`` compiles a GGUF
once into the build cache), ``CompiledModel`` (token ids and logits), ``Completion`` and
``Stream`` (what generate() and stream() return) and the errors, all ``BitnetError``.
"""
__version__ = "0.1.0"

from .errors import BitnetError  # noqa: E402
from .bindings.api import CompiledModel  # noqa: E402
from .bindings.model import (BitNetModel, CompileError, Completion, ContextLengthError,  # noqa: E402
                             GenerationError, LoadError, Stream)

__all__ = ["BitNetModel", "CompiledModel", "Completion", "Stream", "BitnetError", "CompileError", "LoadError",
           "ContextLengthError", "GenerationError", "__version__"]
