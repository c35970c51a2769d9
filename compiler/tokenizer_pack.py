"""Pack a TokenizerData into the tokenizer blob the C runtime reads, and generate the
Unicode category tables its pre-tokenizers use.

Two entry points for the code generator:

* ``pack_tokenizer(tok) -> bytes``: the blob below, embedded in the binary and handed to
  ``tokenizer_init()`` (runtime_c/text/tokenizer.h).  Same input -> same bytes.
* ``unicode_tables_c() -> str``: the C source of ``unicode_tables.c`` (written into the build
  directory and compiled with runtime_c/text/tokenizer.c).  Built from Python's ``unicodedata``.

How the generated program uses them: embed ``pack_tokenizer(model.tokenizer)`` as a byte
array aligned to at least 4 bytes (``_Alignas(16) static const unsigned char blob[] = {...}``
or ``.incbin`` after ``.balign 16``; a misaligned blob still works but is copied once), write
``unicode_tables_c()`` to ``<build>/unicode_tables.c``, and compile ``runtime_c/text/tokenizer.c``,
``runtime_c/text/chat.c`` and ``unicode_tables.c`` with the rest (plain C11, -Wall -Wextra -Werror
clean, libc only: malloc/free/memcpy/memcmp/memchr/memmove/memset/strlen/strcmp).  At run
time: ``tokenizer_init(&tok, blob, sizeof blob)`` once, then tokenizer_encode/decode, the
TokenizerStream for printing generated tokens, and chat_detect/chat_apply for ``--chat``
(template text: ``tok.chat_template``).  Models without a tokenizer have no blob.

Blob format, version 1 (all integers little-endian; every section starts on a 4-byte
boundary; the blob itself should be 4-byte aligned in memory, tokenizer_init copies it
once if it is not)::

    offset  size  field
    0       4     magic "BTOK"
    4       u32   version (1)
    8       u32   header size (128)
    12      u32   total size of the blob in bytes
    16      u32   model: 1 = SentencePiece (SPM), 2 = byte-level BPE, 3 = WordPiece (WPM),
                  4 = BPE on UTF-8 characters with "▁" spaces (BPE_UTF8, gemma4)
    20      u32   pre-tokenizer (byte-level BPE only, else 0): 1 llama3 (LLaMA-3 / Falcon3
                  regex), 2 gpt2, 3 qwen2 (llama3 with single digits), 4 starcoder (digits
                  split, then gpt2), 5 deepseek-llm, 6 deepseek-coder, 7 falcon, 8 qwen35
    24      u32   flags: 1 add_bos, 2 add_eos, 4 add_space_prefix, 8 ignore_merges,
                         16 spm_viterbi (unigram: best-score segmentation instead of merging),
                         32 lowercase, 64 strip_accents (WPM normalizer)
    28      i32   bos id      32 i32 eos id     36 i32 eot id
    40      i32   unk id      44 i32 pad id     (-1 = none)
    48      u32   n_tokens (V)
    52      u32   n_merges (M)
    56      u32   n_special (S)
    60      u32   n_eog (G)
    64      u32   offset of text_offs     u32[V+1]  token text (as in the GGUF) = text_pool[offs[i]:offs[i+1]]
    68      u32   offset of piece_offs    u32[V+1]  decoded bytes a token prints as = piece_pool[...]
    72      u32   offset of types         u8[V]     low 3 bits: 1 normal 2 unknown 3 control
                                                    4 user-defined 5 unused 6 byte; bit 7 (0x80):
                                                    never matched against input text
    76      u32   offset of scores        f32[V]    (0 when the model has no scores)
    80      u32   offset of merges        u32[M][3] (left id, right id, merged id), rank = row
    84      u32   offset of special ids   u32[S]    tokens matched as whole strings in the input
                                                    (control/unknown only with parse_special;
                                                    user-defined always), longest text first
    88      u32   offset of eog ids       u32[G]    end-of-generation tokens (eos, eot, ...)
    92      u32   offset of byte tokens   i32[256]  token for a raw byte (-1 = none)
    96      u32   offset of text_pool     100 u32 size of text_pool
    104     u32   offset of piece_pool    108 u32 size of piece_pool
    112     u32   offset of chat template 116 u32 its length in bytes (UTF-8, 0 = none)
    120     8     reserved (zero)
    128     u32   FNV-1a 32 checksum of bytes [132, total)   (header ends at 132; see HEADER_SIZE)
    132..   sections in the order above.

Which tokens the encoder may produce from ordinary text:
* SPM: types normal/user-defined/unused/byte are looked up by their text (with "\u2581" for
  spaces); merges only produce normal/user-defined/unused tokens; unused tokens are split back
  into their parts (sentencepiece's rule).
* BPE: a token is matchable when every character of its text is in GPT-2's byte<->unicode
  table; its key is the raw bytes it stands for (= its decoded piece).  Merges are converted
  to id triples here; a merge whose parts or result are not tokens is dropped.
* WPM and BPE_UTF8: normal/user-defined/unused tokens are looked up by their text ("▁" =
  a space / a word start); they print with "▁" as a space.  BPE_UTF8's byte tokens are
  <0xNN> only.
"""
from __future__ import annotations

import re
import struct
import sys
import unicodedata
import zlib

from .model import TokenizerData

def _c_enums() -> dict:
    """NAME -> value of every enum constant in runtime_c/text/tokenizer.h: the blob's header
    offsets, model and pre-tokenizer ids, flags and token types are stated there once."""
    from importlib import resources
    text = resources.files("bitnet_aot.runtime_c").joinpath("text", "tokenizer.h").read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    out = {}
    for body in re.findall(r"enum\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*)\s*=\s*(-?\d+)", body):
            out[name] = int(value)
    return out


C_ENUMS = _c_enums()

MAGIC = b"BTOK"
VERSION = 1
HEADER_SIZE = C_ENUMS["TOKB_HEADER_SIZE"]

MODEL_SPM = C_ENUMS["TOKENIZER_SPM"]
MODEL_BPE = C_ENUMS["TOKENIZER_BPE"]
MODEL_WPM = C_ENUMS["TOKENIZER_WPM"]              # WordPiece (GGUF "bert")
MODEL_BPE_UTF8 = C_ENUMS["TOKENIZER_BPE_UTF8"]    # BPE on UTF-8 characters, "▁" spaces (GGUF "gemma4")

PRE_NONE = C_ENUMS["TOKENIZER_PRE_NONE"]
PRE_LLAMA3 = C_ENUMS["TOKENIZER_PRE_LLAMA3"]
PRE_GPT2 = C_ENUMS["TOKENIZER_PRE_GPT2"]
PRE_QWEN2 = C_ENUMS["TOKENIZER_PRE_QWEN2"]            # LLaMA-3 regex with single digits
PRE_STARCODER = C_ENUMS["TOKENIZER_PRE_STARCODER"]    # digits split off one by one, then the GPT-2 regex
PRE_DEEPSEEK_LLM = C_ENUMS["TOKENIZER_PRE_DEEPSEEK_LLM"]
PRE_DEEPSEEK_CODER = C_ENUMS["TOKENIZER_PRE_DEEPSEEK_CODER"]
PRE_FALCON = C_ENUMS["TOKENIZER_PRE_FALCON"]          # punctuation runs, GPT-2 regex, 3-digit groups
PRE_QWEN35 = C_ENUMS["TOKENIZER_PRE_QWEN35"]          # Qwen2's regex with marks as letters

FLAG_ADD_BOS = C_ENUMS["TOKB_FLAG_ADD_BOS"]
FLAG_ADD_EOS = C_ENUMS["TOKB_FLAG_ADD_EOS"]
FLAG_ADD_SPACE_PREFIX = C_ENUMS["TOKB_FLAG_ADD_SPACE_PREFIX"]
FLAG_IGNORE_MERGES = C_ENUMS["TOKB_FLAG_IGNORE_MERGES"]
FLAG_SPM_VITERBI = C_ENUMS["TOKB_FLAG_SPM_VITERBI"]
FLAG_LOWERCASE = C_ENUMS["TOKB_FLAG_LOWERCASE"]
FLAG_STRIP_ACCENTS = C_ENUMS["TOKB_FLAG_STRIP_ACCENTS"]

T_NORMAL, T_UNKNOWN, T_CONTROL, T_USER, T_UNUSED, T_BYTE = (
    C_ENUMS[f"TOKEN_{n}"] for n in ("NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"))
T_NOMATCH = 0x80

# tokenizer.ggml.pre names -> (pre-tokenizer, ignore_merges), as llama.cpp groups them.
PRE_TOKENIZERS = {
    "llama-bpe": (PRE_LLAMA3, True), "llama3": (PRE_LLAMA3, True), "llama-v3": (PRE_LLAMA3, True),
    "falcon3": (PRE_LLAMA3, True), "falcon-h1": (PRE_LLAMA3, True), "pixtral": (PRE_LLAMA3, True),
    "dbrx": (PRE_LLAMA3, False), "smaug-bpe": (PRE_LLAMA3, False),
    "gpt-2": (PRE_GPT2, False), "phi-2": (PRE_GPT2, False), "mpt": (PRE_GPT2, False),
    "olmo": (PRE_GPT2, False),
    "qwen2": (PRE_QWEN2, False), "deepseek-r1-qwen": (PRE_QWEN2, False), "stablelm2": (PRE_QWEN2, False),
    "starcoder": (PRE_STARCODER, False), "refact": (PRE_STARCODER, False),
    "smollm": (PRE_STARCODER, False), "command-r": (PRE_STARCODER, False),
    "deepseek-llm": (PRE_DEEPSEEK_LLM, False), "deepseek-coder": (PRE_DEEPSEEK_CODER, False),
    "falcon": (PRE_FALCON, False), "qwen35": (PRE_QWEN35, False),
}

# tokenizer.ggml.model values pack_tokenizer accepts.
MODELS = ("llama", "gpt2", "bert", "gemma4")

# Token texts that end a generation when they are control tokens (besides eos / eot ids).
EOG_TEXTS = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|end|>",
             "<end_of_turn>", "<|endoftext|>", "<EOT>")

SPACE_MARK = "\u2581"  # SentencePiece's visible space "▁"


class TokenizerPackError(ValueError):
    """The tokenizer description cannot be packed (unsupported or inconsistent)."""


def bytes_to_unicode() -> dict:
    """GPT-2's reversible byte -> printable character table (byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def _types(tok: TokenizerData) -> list:
    n = len(tok.tokens)
    if tok.token_types is None:
        return [T_NORMAL] * n
    out = []
    for t in tok.token_types:
        t = int(t)
        out.append(t if 1 <= t <= 6 else T_NORMAL)
    return out


_BYTE_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _spm_tables(tok: TokenizerData, types: list):
    """SPM: decoded pieces and the byte -> token table."""
    pieces = []
    for text, ty in zip(tok.tokens, types):
        if ty == T_NORMAL:
            pieces.append(text.replace(SPACE_MARK, " ").encode("utf-8"))
        elif ty == T_BYTE:
            m = _BYTE_RE.match(text)
            pieces.append(bytes([int(m.group(1), 16)]) if m else text.encode("utf-8"))
        elif ty == T_UNUSED:
            pieces.append(b"")
        else:  # unknown, control, user-defined: their text
            pieces.append(text.encode("utf-8"))
    index = {}
    for i, text in enumerate(tok.tokens):
        index[text] = i  # last one wins, like llama.cpp's token_to_id
    byte_tokens = []
    for b in range(256):
        i = index.get("<0x%02X>" % b, -1)
        if i < 0 and b < 0x80:
            i = index.get(chr(b), -1)  # vocabularies without byte tokens: the character itself
        byte_tokens.append(i)
    return pieces, byte_tokens


def _bpe_tables(tok: TokenizerData, types: list):
    """BPE: decoded pieces, matchability, byte -> token table and merges as id triples."""
    b2u = bytes_to_unicode()
    u2b = {c: b for b, c in b2u.items()}
    pieces, nomatch = [], []
    for text, ty in zip(tok.tokens, types):
        if ty in (T_NORMAL, T_BYTE):
            m = _BYTE_RE.match(text) if ty == T_BYTE else None
            if m:
                pieces.append(bytes([int(m.group(1), 16)]))
                nomatch.append(True)
                continue
            ok = all(c in u2b for c in text)
            if ok:
                pieces.append(bytes(u2b[c] for c in text))
            else:  # characters outside the byte alphabet print as themselves
                pieces.append(b"".join(bytes([u2b[c]]) if c in u2b else c.encode("utf-8") for c in text))
            nomatch.append(not ok or not text)
        elif ty == T_UNUSED:
            pieces.append(b"")
            nomatch.append(True)
        else:
            pieces.append(text.encode("utf-8"))
            nomatch.append(ty != T_USER)
    index = {}
    for i, text in enumerate(tok.tokens):
        index[text] = i
    byte_tokens = [index.get(b2u[b], -1) for b in range(256)]
    return pieces, nomatch, byte_tokens, _merge_triples(tok)


def _merge_triples(tok: TokenizerData) -> list:
    """Merges "a b" as (left id, right id, merged id) by token text; a merge whose parts or
    result are not tokens is dropped, as is a repeated pair."""
    index = {}
    for i, text in enumerate(tok.tokens):
        index[text] = i
    merges, seen = [], set()
    for m in tok.merges or []:
        pos = m.find(" ", 1)
        if pos < 0:
            continue
        a, b = m[:pos], m[pos + 1:]
        ia, ib, ic = index.get(a, -1), index.get(b, -1), index.get(a + b, -1)
        if ia < 0 or ib < 0 or ic < 0 or (ia, ib) in seen:
            continue
        seen.add((ia, ib))
        merges.append((ia, ib, ic))
    return merges


def _looks_unigram(tok: TokenizerData, types: list) -> bool:
    """BPE-trained SentencePiece models score normal pieces -0, -1, -2, ... (integers);
    unigram models store log-probabilities.  llama.cpp always merges; we follow the scores."""
    if not tok.scores:
        return False
    for s, ty in zip(tok.scores, types):
        if ty == T_NORMAL and float(s) != float(int(s)):
            return True
    return False


def pack_tokenizer(tok: TokenizerData, spm_algorithm: str = "auto", ignore_merges=None) -> bytes:
    """Serialise ``tok`` into the blob described at the top of this module.

    ``spm_algorithm`` (SPM only): "merge" = llama.cpp's SPM (greedy merging of the best-scored
    adjacent pair: exact for BPE-trained SentencePiece models such as LLaMA's), "viterbi" =
    sentencepiece's unigram segmentation (best total score), "auto" = viterbi when the normal
    pieces' scores are not all integers (a unigram model), else merge.
    """
    if tok.model not in MODELS:
        raise TokenizerPackError(f"tokenizer model {tok.model!r} is not supported ({', '.join(MODELS)})")
    n = len(tok.tokens)
    if n == 0:
        raise TokenizerPackError("the vocabulary is empty")
    types = _types(tok)
    if len(types) != n:
        raise TokenizerPackError("token_types and tokens differ in length")
    if tok.scores is not None and len(tok.scores) != n:
        raise TokenizerPackError("scores and tokens differ in length")
    for name in ("bos_id", "eos_id", "eot_id", "unk_id", "pad_id"):
        v = getattr(tok, name)
        if not -1 <= v < n:
            raise TokenizerPackError(f"{name} = {v} is not a token id")

    flags = 0
    if tok.add_bos and tok.bos_id >= 0:
        flags |= FLAG_ADD_BOS
    if tok.add_eos and tok.eos_id >= 0:
        flags |= FLAG_ADD_EOS
    merges = []
    scores = None
    nomatch = [False] * n
    if tok.model == "llama":
        model, pre = MODEL_SPM, PRE_NONE
        if tok.add_space_prefix:
            flags |= FLAG_ADD_SPACE_PREFIX
        if spm_algorithm not in ("auto", "merge", "viterbi"):
            raise TokenizerPackError(f"spm_algorithm {spm_algorithm!r}: use auto, merge or viterbi")
        viterbi = spm_algorithm == "viterbi" or (spm_algorithm == "auto" and _looks_unigram(tok, types))
        if viterbi:
            flags |= FLAG_SPM_VITERBI
        pieces, byte_tokens = _spm_tables(tok, types)
        scores = [float(s) for s in tok.scores] if tok.scores is not None else [0.0] * n
        for i, ty in enumerate(types):
            nomatch[i] = ty not in (T_NORMAL, T_USER, T_UNUSED, T_BYTE) or not tok.tokens[i]
    elif tok.model in ("bert", "gemma4"):
        # WordPiece: tokens are looked up by their text ("▁" marks a word start); gemma4: BPE
        # on that text with <0xNN> byte fallback. Both print "▁" as a space.
        model, pre = (MODEL_WPM, PRE_NONE) if tok.model == "bert" else (MODEL_BPE_UTF8, PRE_NONE)
        if tok.model == "bert":
            lower = True if tok.lowercase is None else bool(tok.lowercase)
            strip = lower if tok.strip_accents is None else bool(tok.strip_accents)
            flags |= (FLAG_LOWERCASE if lower else 0) | (FLAG_STRIP_ACCENTS if strip else 0)
        else:
            if not tok.merges:
                raise TokenizerPackError("a gemma4 tokenizer needs merges")
            merges = _merge_triples(tok)
        pieces, byte_tokens = _spm_tables(tok, types)
        if tok.model == "gemma4":
            index = {t: i for i, t in enumerate(tok.tokens)}
            byte_tokens = [index.get("<0x%02X>" % b, -1) for b in range(256)]
        for i, ty in enumerate(types):
            nomatch[i] = ty not in (T_NORMAL, T_USER, T_UNUSED) or not tok.tokens[i]
    else:
        model = MODEL_BPE
        pre_name = tok.pre
        if pre_name not in PRE_TOKENIZERS:
            raise TokenizerPackError(
                f"BPE pre-tokenizer {pre_name!r} is not supported; supported: "
                + ", ".join(sorted(PRE_TOKENIZERS)))
        pre, ignore = PRE_TOKENIZERS[pre_name]
        if ignore_merges is not None:
            ignore = bool(ignore_merges)
        if ignore:
            flags |= FLAG_IGNORE_MERGES
        pieces, nomatch, byte_tokens, merges = _bpe_tables(tok, types)

    specials = [i for i, ty in enumerate(types)
                if ty in (T_CONTROL, T_USER, T_UNKNOWN) and tok.tokens[i]]
    specials.sort(key=lambda i: (-len(tok.tokens[i].encode("utf-8")), i))
    eog = []
    for i in (tok.eos_id, tok.eot_id):
        if i >= 0 and i not in eog:
            eog.append(i)
    for i, (text, ty) in enumerate(zip(tok.tokens, types)):
        if text in EOG_TEXTS and ty in (T_CONTROL, T_USER) and i not in eog:
            eog.append(i)

    # ---- sections ----
    text_pool = bytearray()
    text_offs = [0]
    for text in tok.tokens:
        text_pool += text.encode("utf-8")
        text_offs.append(len(text_pool))
    piece_pool = bytearray()
    piece_offs = [0]
    for p in pieces:
        piece_pool += p
        piece_offs.append(len(piece_pool))
    type_bytes = bytes((ty | (T_NOMATCH if nm else 0)) for ty, nm in zip(types, nomatch))
    chat = (tok.chat_template or "").encode("utf-8")

    body = bytearray()
    offsets = {}

    def section(name, data: bytes):
        while (HEADER_SIZE + len(body)) % 4:
            body.append(0)
        offsets[name] = HEADER_SIZE + len(body)
        body.extend(data)

    section("text_offs", struct.pack(f"<{n + 1}I", *text_offs))
    section("piece_offs", struct.pack(f"<{n + 1}I", *piece_offs))
    section("types", type_bytes)
    if scores is not None:
        section("scores", struct.pack(f"<{n}f", *scores))
    else:
        offsets["scores"] = 0
    flat = [x for m in merges for x in m]
    section("merges", struct.pack(f"<{len(flat)}I", *flat))
    section("special", struct.pack(f"<{len(specials)}I", *specials))
    section("eog", struct.pack(f"<{len(eog)}I", *eog))
    section("byte_tokens", struct.pack("<256i", *byte_tokens))
    section("text_pool", bytes(text_pool))
    section("piece_pool", bytes(piece_pool))
    section("chat", chat)
    while (HEADER_SIZE + len(body)) % 4:
        body.append(0)

    total = HEADER_SIZE + len(body)
    if total >= 1 << 31:
        raise TokenizerPackError("the tokenizer blob would exceed 2 GiB")
    header = bytearray(HEADER_SIZE)
    fields = {  # TOKB_<name> offset in tokenizer.h -> value; "<i" for ids that may be -1
        "VERSION": VERSION, "HEADER_BYTES": HEADER_SIZE, "TOTAL": total, "MODEL": model, "PRE": pre,
        "FLAGS": flags, "N_TOKENS": n, "N_MERGES": len(merges), "N_SPECIAL": len(specials),
        "N_EOG": len(eog), "O_TEXT_OFFS": offsets["text_offs"], "O_PIECE_OFFS": offsets["piece_offs"],
        "O_TYPES": offsets["types"], "O_SCORES": offsets["scores"], "O_MERGES": offsets["merges"],
        "O_SPECIAL": offsets["special"], "O_EOG": offsets["eog"], "O_BYTE_TOKENS": offsets["byte_tokens"],
        "O_TEXT_POOL": offsets["text_pool"], "N_TEXT_POOL": len(text_pool),
        "O_PIECE_POOL": offsets["piece_pool"], "N_PIECE_POOL": len(piece_pool),
        "O_CHAT": offsets["chat"], "N_CHAT": len(chat),
        "CHECKSUM": zlib.crc32(bytes(body)) & 0xFFFFFFFF,
    }
    header[C_ENUMS["TOKB_MAGIC"]:C_ENUMS["TOKB_MAGIC"] + 4] = MAGIC
    for name, value in fields.items():
        struct.pack_into("<I", header, C_ENUMS["TOKB_" + name], value)
    for name, value in (("BOS", tok.bos_id), ("EOS", tok.eos_id), ("EOT", tok.eot_id), ("UNK", tok.unk_id),
                        ("PAD", tok.pad_id)):
        struct.pack_into("<i", header, C_ENUMS["TOKB_" + name], value)
    return bytes(header) + bytes(body)



# ---------------------------------------------------------------------------------------
# Unicode category tables
# ---------------------------------------------------------------------------------------

U_LETTER = 1       # L*
U_NUMBER = 2       # N*
U_SPACE = 4        # White_Space property (regex \s): Zs, Zl, Zp, U+0009..U+000D, U+0085
U_MARK = 8         # M*
U_PUNCT = 16       # P*
U_SYMBOL = 32      # S*
U_SEPARATOR = 64   # Z*
U_OTHER = 128      # C* (control, format, surrogate, private use, unassigned)

_CAT_FLAGS = {"L": U_LETTER, "N": U_NUMBER, "M": U_MARK, "P": U_PUNCT, "S": U_SYMBOL,
              "Z": U_SEPARATOR, "C": U_OTHER}


def unicode_flags(cp: int) -> int:
    """Category flags of one code point, exactly as the generated C table reports them."""
    cat = unicodedata.category(chr(cp))
    f = _CAT_FLAGS[cat[0]]
    if cat in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85:
        f |= U_SPACE
    return f


def unicode_ranges() -> list:
    """[(first code point, flags)] for every run of code points with equal flags."""
    out = []
    prev = None
    for cp in range(0x110000):
        f = unicode_flags(cp)
        if f != prev:
            out.append((cp, f))
            prev = f
    return out


def unicode_tables_c() -> str:
    """C source defining the tables tokenizer.c declares extern (deterministic)."""
    ranges = unicode_ranges()
    lines = [
        "/* unicode_tables.c: Unicode character classes for the tokenizer's pre-tokenizers.",
        f" * Generated by bitnet_aot.tokenizer_pack.unicode_tables_c() from Python's unicodedata",
        f" * (Unicode {unicodedata.unidata_version}). Do not edit.",
        " *",
        " * tokenizer_unicode_ranges[i] = (first code point << 8) | flags; a run lasts until the",
        " * next entry's first code point. Flags: 1 letter (L*), 2 number (N*), 4 White_Space,",
        " * 8 mark (M*), 16 punctuation (P*), 32 symbol (S*), 64 separator (Z*), 128 other (C*).",
        " * tokenizer_unicode_latin1[c] = flags of code point c < 256 (fast path).",
        " * tokenizer_unicode_lower / _nfd: sorted (code point, mapped) pairs: the simple lowercase",
        " * mapping and the first code point of the canonical decomposition (WordPiece normalizer). */",
        "#include <stdint.h>",
        "",
        f"const uint32_t tokenizer_unicode_n_ranges = {len(ranges)};",
        "",
        f"const uint32_t tokenizer_unicode_ranges[{len(ranges)}] = {{",
    ]
    row = []
    for cp, f in ranges:
        row.append("0x%08x" % ((cp << 8) | f))
        if len(row) == 8:
            lines.append("    " + ", ".join(row) + ",")
            row = []
    if row:
        lines.append("    " + ", ".join(row) + ",")
    lines.append("};")
    lines.append("")
    lines.append("const uint8_t tokenizer_unicode_latin1[256] = {")
    vals = [unicode_flags(c) for c in range(256)]
    for i in range(0, 256, 16):
        lines.append("    " + ", ".join("%3d" % v for v in vals[i:i + 16]) + ",")
    lines.append("};")
    lines.append("")
    for name, pairs in (("lower", unicode_lower_pairs()), ("nfd", unicode_nfd_pairs())):
        lines.append(f"const uint32_t tokenizer_unicode_n_{name} = {len(pairs)};")
        lines.append(f"const uint32_t tokenizer_unicode_{name}[{2 * len(pairs)}] = {{")
        for i in range(0, len(pairs), 6):
            lines.append("    " + " ".join("0x%05x, 0x%05x," % p for p in pairs[i:i + 6]))
        lines.append("};")
        lines.append("")
    return "\n".join(lines)


def unicode_lower_pairs() -> list:
    """[(code point, its lowercase)] for every code point whose simple lowercase mapping differs
    (U+0130, whose full lowercase is two characters, maps to its first: i)."""
    out = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        low = chr(cp).lower()
        if low != chr(cp):
            out.append((cp, ord(low[0])))
    return out


def unicode_nfd_pairs() -> list:
    """[(code point, first code point of its NFD)] for every character with a canonical
    decomposition (BERT's accent stripping keeps that base and drops the marks after it).
    Hangul syllables (algorithmic decomposition) are left to the C code."""
    out = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            first = ord(unicodedata.normalize("NFD", chr(cp))[0])
            if first != cp:
                out.append((cp, first))
    return out


if __name__ == "__main__":  # pragma: no cover - manual use: print the tables
    sys.stdout.write(unicode_tables_c())
