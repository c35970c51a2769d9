"""float64 pieces of the transformer graph, for the tests that write the model out again
independently of compiler/reference.py (test_shapes: qwen3; test_rope_scaling: llama and
qwen3 with scaled RoPE): activations fake-quantized to int8 per row, as the model does,
times codes * scale in float64, and RMSNorm."""
import numpy as np


def fake_quant(x: np.ndarray) -> np.ndarray:
    """x rounded to int8 per row (absmax / 127, float32 like the model) and scaled back."""
    x32 = x.astype(np.float32)
    s = np.float32(127) / np.maximum(np.abs(x32).max(-1, keepdims=True), np.float32(1e-5))
    return np.clip(np.rint(x32 * s), -128, 127).astype(np.float64) / s.astype(np.float64)


def linear(x: np.ndarray, w) -> np.ndarray:
    """A ternary projection: fake-quantized x times codes * scale."""
    return fake_quant(x) @ (w.codes.astype(np.float64) * w.scale).T


def rmsnorm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g
