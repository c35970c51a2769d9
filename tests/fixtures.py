"""Paths of the committed test fixtures (see tests/data/README.md for sources and licenses).

Tests read these and nothing outside the repository, so a fresh clone runs them offline.
"""
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SHAKESPEARE = DATA / "text" / "tinyshakespeare.txt"
WIKI = DATA / "text" / "wiki.test.raw"
TIKTOKEN_2B4T = DATA / "tokenizers" / "bitnet-b1.58-2B-4T" / "tokenizer.model"
LLAMA_VOCAB = DATA / "llama-vocab"
