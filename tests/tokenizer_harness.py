"""Build runtime_c/text/tokenizer.c into a shared library for the tests and wrap it with cffi.

The library is compiled from the same sources the generated program uses: runtime_c/
tokenizer.c and chat.c, the unicode_tables.c that bitnet_aot.tokenizer_pack.unicode_tables_c()
generates, and a tiny shim (below) that allocates Tokenizer / TokenizerStream structs so
Python never has to know their layout.  Strict flags: -std=c11 -Wall -Wextra -Werror.
"""
from __future__ import annotations

import base64
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cffi

from bitnet_aot.model import TokenizerData
from bitnet_aot.tokenizer_pack import bytes_to_unicode, unicode_tables_c

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"

SHIM_C = r"""
#include <stdlib.h>
#include <string.h>
#include "tokenizer.h"
#include "chat.h"

/* The tokenizer plus the buffer its blob lives in. */
typedef struct { Tokenizer t; unsigned char *mem; } Owned;

/* Copies the blob to offset `misalign` of a fresh buffer (to test the unaligned path). */
void *tk_new(const unsigned char *blob, size_t len, int misalign, int *err) {
    Owned *o = malloc(sizeof *o);
    unsigned char *mem = malloc(len + 8);
    if (!mem || !o) { free(mem); free(o); *err = TOKENIZER_E_NOMEM; return NULL; }
    memcpy(mem + misalign, blob, len);
    *err = tokenizer_init(&o->t, mem + misalign, len);
    if (*err) { free(mem); free(o); return NULL; }
    o->mem = mem;
    return o;
}

void tk_free(void *p) {
    Owned *o = p;
    tokenizer_free(&o->t);
    free(o->mem);
    free(o);
}

int tk_info(void *p, int what) {
    Tokenizer *t = p;
    switch (what) {
    case 0: return t->n_vocab;
    case 1: return t->bos_id;
    case 2: return t->eos_id;
    case 3: return t->eot_id;
    case 4: return t->unk_id;
    case 5: return t->add_bos;
    case 6: return t->add_space_prefix;
    case 7: return t->spm_viterbi;
    case 8: return t->model;
    case 9: return t->pre;
    case 10: return t->max_piece_len;
    case 11: return t->blob_copy != NULL;
    default: return -1;
    }
}

void *tk_stream_new(void *t, int flags) {
    TokenizerStream *s = malloc(sizeof *s);
    if (s) tokenizer_stream_init(s, t, flags);
    return s;
}
"""

CDEF = """
void *tk_new(const unsigned char *blob, size_t len, int misalign, int *err);
void tk_free(void *p);
int tk_info(void *p, int what);
void *tk_stream_new(void *t, int flags);
void free(void *p);

const char *tokenizer_error_string(int code);
int tokenizer_encode(void *t, const char *text, size_t len, int add_bos,
                     int parse_special, int *out_ids, int max_ids);
const char *tokenizer_piece(void *t, int id, size_t *len);
const char *tokenizer_token_text(void *t, int id, size_t *len);
int tokenizer_token_type(void *t, int id);
int tokenizer_is_eog(void *t, int id);
int tokenizer_find_token(void *t, const char *text, size_t len);
size_t tokenizer_decode(void *t, const int *ids, int n_ids, int flags, char *out, size_t cap);
size_t tokenizer_stream_bound(void *t);
size_t tokenizer_stream_push(void *s, int id, char *out);
size_t tokenizer_stream_flush(void *s, char *out);
unsigned tokenizer_unicode_flags(uint32_t cp);

typedef struct { const char *role; const char *content; } ChatMessage;
int chat_detect(const char *tmpl, size_t len);
int chat_format_by_name(const char *name);
const char *chat_format_name(int fmt);
size_t chat_apply(int fmt, const ChatMessage *msgs, int n, int add_assistant,
                  const char *eos_text, char *out, size_t cap);
"""

DECODE_SPECIAL, DECODE_STRIP_SPACE, DECODE_RAW = 1, 2, 4
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC"]


def compiler_cmd() -> list:
    """The system C compiler when there is one (fast), else zig cc."""
    for cc in ("cc", "gcc", "clang"):
        path = shutil.which(cc)
        if path:
            return [path]
    return [sys.executable, "-m", "ziglang", "cc"]


def build_library(outdir: Path, extra_sources=(), extra_cflags=()) -> Path:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "unicode_tables.c").write_text(unicode_tables_c())
    (outdir / "tk_shim.c").write_text(SHIM_C)
    lib = outdir / "libtokenizer_test.so"
    cmd = compiler_cmd() + CFLAGS + list(extra_cflags) + [
        "-I", str(RUNTIME / "text"), "-o", str(lib),
        str(RUNTIME / "text" / "tokenizer.c"), str(RUNTIME / "text" / "chat.c"), str(outdir / "unicode_tables.c"),
        str(outdir / "tk_shim.c"),
        *[str(s) for s in extra_sources]]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"compiling the tokenizer failed:\n{' '.join(cmd)}\n{r.stderr}")
    return lib


class TokenizerLib:
    def __init__(self, path: Path, extra_cdef: str = ""):
        self.ffi = cffi.FFI()
        self.ffi.cdef(CDEF + extra_cdef)
        self.lib = self.ffi.dlopen(str(path))

    def load(self, blob: bytes, misalign: int = 0) -> "CTokenizer":
        return CTokenizer(self, blob, misalign)

    def chat_detect(self, template: str) -> str:
        b = template.encode()
        return self.ffi.string(self.lib.chat_format_name(self.lib.chat_detect(b, len(b)))).decode()

    def chat_apply(self, fmt: str, messages, add_assistant=True, eos_token=None) -> str:
        """runtime_c/text/chat.c's chat_apply on [(role, content)] pairs."""
        keep = []
        arr = self.ffi.new("ChatMessage[]", max(1, len(messages)))
        for i, (role, content) in enumerate(messages):
            r, c = self.ffi.new("char[]", role.encode()), self.ffi.new("char[]", content.encode())
            keep += [r, c]
            arr[i].role, arr[i].content = r, c
        f = self.lib.chat_format_by_name(fmt.encode())
        eos = self.ffi.new("char[]", eos_token.encode()) if eos_token is not None else self.ffi.NULL
        need = self.lib.chat_apply(f, arr, len(messages), int(add_assistant), eos, self.ffi.NULL, 0)
        buf = self.ffi.new("char[]", need + 1)
        assert self.lib.chat_apply(f, arr, len(messages), int(add_assistant), eos, buf, need + 1) == need
        return self.ffi.buffer(buf, need)[:].decode()


class CTokenizer:
    """One tokenizer_init'ed blob, with Pythonic wrappers."""

    def __init__(self, tl: TokenizerLib, blob: bytes, misalign: int = 0):
        self.tl, self.ffi, self.lib = tl, tl.ffi, tl.lib
        err = self.ffi.new("int *")
        self.h = self.lib.tk_new(blob, len(blob), misalign, err)
        if self.h == self.ffi.NULL:
            raise ValueError("tokenizer_init: " + self.ffi.string(self.lib.tokenizer_error_string(err[0])).decode())
        self.bound = self.lib.tokenizer_stream_bound(self.h)

    def close(self):
        if self.h is not None and self.h != self.ffi.NULL:
            self.lib.tk_free(self.h)
        self.h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def info(self, what: str) -> int:
        keys = ["n_vocab", "bos", "eos", "eot", "unk", "add_bos", "add_space_prefix",
                "spm_viterbi", "model", "pre", "max_piece_len", "copied"]
        return self.lib.tk_info(self.h, keys.index(what))

    def encode(self, text, add_bos=False, parse_special=False) -> list:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        cap = len(data) + 8
        out = self.ffi.new("int[]", cap)
        n = self.lib.tokenizer_encode(self.h, data, len(data), int(add_bos), int(parse_special), out, cap)
        if n < 0:
            raise RuntimeError(f"tokenizer_encode returned {n}")
        return list(out[0:n])

    def encode_raw(self, data: bytes, max_ids: int, add_bos=False, parse_special=False):
        out = self.ffi.new("int[]", max(max_ids, 1))
        n = self.lib.tokenizer_encode(self.h, data, len(data), int(add_bos), int(parse_special), out, max_ids)
        return n, list(out[0:max(0, min(n if n >= 0 else -n, max_ids))])

    def decode(self, ids, flags=DECODE_STRIP_SPACE) -> bytes:
        arr = self.ffi.new("int[]", list(ids) or [0])
        need = self.lib.tokenizer_decode(self.h, arr, len(ids), flags, self.ffi.NULL, 0)
        buf = self.ffi.new("char[]", need + 1)
        got = self.lib.tokenizer_decode(self.h, arr, len(ids), flags, buf, need + 1)
        assert got == need
        return self.ffi.buffer(buf, need)[:]

    def stream(self, ids, flags=0) -> list:
        """Feeds ids one by one; returns the chunks emitted after each push, then the flush."""
        s = self.lib.tk_stream_new(self.h, flags)
        buf = self.ffi.new("char[]", self.bound)
        chunks = []
        try:
            for i in ids:
                n = self.lib.tokenizer_stream_push(s, i, buf)
                assert n <= self.bound
                chunks.append(self.ffi.buffer(buf, n)[:])
            n = self.lib.tokenizer_stream_flush(s, buf)
            chunks.append(self.ffi.buffer(buf, n)[:])
        finally:
            self.lib.free(s)
        return chunks

    def piece(self, i) -> bytes:
        ln = self.ffi.new("size_t *")
        p = self.lib.tokenizer_piece(self.h, i, ln)
        return None if p == self.ffi.NULL else self.ffi.buffer(p, ln[0])[:]

    def token_text(self, i) -> bytes:
        ln = self.ffi.new("size_t *")
        p = self.lib.tokenizer_token_text(self.h, i, ln)
        return None if p == self.ffi.NULL else self.ffi.buffer(p, ln[0])[:]

    def is_eog(self, i) -> bool:
        return bool(self.lib.tokenizer_is_eog(self.h, i))

    def find(self, text: str) -> int:
        b = text.encode()
        return self.lib.tokenizer_find_token(self.h, b, len(b))


# ---------------------------------------------------------------------------------------
# The BitNet-2B-4T (LLaMA-3) vocabulary from its tiktoken file, built like the GGUF converter
# ---------------------------------------------------------------------------------------

LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PAT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

def read_tiktoken_ranks(path) -> dict:
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def merges_from_ranks(ranks: dict) -> list:
    """The GGUF/HF merges list for tiktoken ranks: a token's merge is the split the BPE of its
    own bytes reaches using only lower ranks (tokens it cannot reach get no merge)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


LLAMA3_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                    "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
                    "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
                    "<|reserved_special_token_4|>", "<|eot_id|>"]
                   + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)])




@functools.lru_cache(maxsize=2)
def llama3_tokenizer_data(path):
    """(ranks, TokenizerData): tokens through GPT-2's byte->unicode map, merges derived from
    the ranks, the 256 LLaMA-3 special tokens (control) after the 128000 ranked ones."""
    ranks = read_tiktoken_ranks(path)
    b2u = bytes_to_unicode()
    enc = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    n = len(ranks)
    tokens = [None] * n
    for tok, r in ranks.items():
        tokens[r] = enc(tok)
    assert None not in tokens
    tokens += LLAMA3_SPECIALS
    types = [1] * n + [3] * len(LLAMA3_SPECIALS)
    merges = [enc(a) + " " + enc(b) for a, b in merges_from_ranks(ranks)]
    td = TokenizerData(model="gpt2", tokens=tokens, token_types=types, merges=merges,
                       pre="llama-bpe", bos_id=n, eos_id=n + 1, eot_id=n + 9, add_bos=True,
                       add_space_prefix=False)
    return ranks, td


if __name__ == "__main__":  # pragma: no cover - manual: build into a folder
    print(build_library(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tokenizer_build")))
