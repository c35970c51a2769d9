"""The C tokenizer (runtime_c/text/tokenizer.c) against independent references.

* SPM: sentencepiece models trained here (unigram and BPE, byte fallback) on Tiny
  Shakespeare, compared with the sentencepiece library on WikiText-2 lines + adversarial text.
* BPE: the BitNet-2B-4T (LLaMA-3) vocabulary built from its tiktoken ranks, compared with
  tiktoken (LLaMA-3 regex) and HF tokenizers; the GPT-2 pre-tokenizer against tiktoken with
  the GPT-2 regex over the same ranks.
* llama.cpp's own vocab test vectors (ggml-vocab-{llama-spm,gpt-2,llama-bpe}.gguf + .inp/.out)
  from the llama-cpp-python 0.3.36 sdist, when pip can fetch it (cached in tests/.cache).
* Round trips, streaming detokenization, special tokens, errors, Unicode tables.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_harness import (DECODE_RAW, DECODE_SPECIAL, DECODE_STRIP_SPACE,  # noqa: E402
                               GPT2_PAT, LLAMA3_PAT, LLAMA3_SPECIALS, TokenizerLib,
                               build_library, llama3_tokenizer_data)

from bitnet_aot.model import TokenizerData  # noqa: E402
from bitnet_aot.tokenizer_pack import (TokenizerPackError, bytes_to_unicode,  # noqa: E402
                                       pack_tokenizer, unicode_flags, unicode_tables_c)

ROOT = Path(__file__).resolve().parents[1]
from fixtures import LLAMA_VOCAB, SHAKESPEARE, WIKI  # noqa: E402
from fixtures import TIKTOKEN_2B4T as TIKTOKEN_MODEL  # noqa: E402
CACHE = Path(__file__).resolve().parent / ".cache"

N_LINES = 2000

# Text meant to break things: whitespace runs of every kind, emoji (ZWJ sequences, flags,
# skin tones), CJK, combining marks, RTL, digits of other scripts, contractions, control
# characters, a 100 KB line is added by the fixtures.
ADVERSARIAL = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n \n", "\t\t\n  \r\n\r\n   x",
    "\u00a0\u2003\u3000 x\u2028y\u2029z\u0085w",  "\x1c\x1d\x1e\x1f a\x0b\x0cb",
    "Hello world", " Hello world", "Hello, y'all! How're you? I'M FINE'S 'LL 'd",
    "'s 'S 'ſ 'x '", "don't won't shan't y'all'll",
    "🦙🚀 😶‍🌫️ 👩🏽‍💻 🇫🇷🇩🇪 ✅", "我想在apple工作1314151天～", "こんにちは世界。カタカナ",
    "한국어 텍스트", "e\u0301 a\u0308 \u0915\u094d\u0937 \u0e01\u0e34\u0e19", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "مرحبا بالعالم 123", "שָׁלוֹם", "١٢٣٤٥ ๑๒๓ ⅫⅣ ½ ²³", "3333333333 12,345.678",
    "ﬁ ﬂ Ⅻ ℃ ™ © ®", "<|begin_of_text|><|eot_id|> <s></s> <unk>", "\x00\x01\x02 nul",
    "a" * 300, " " * 300 + "x", "\n" * 50 + "y", "." * 200, "w048 7tuijk dsdfhu",
    "Καλημέρα κόσμε", "Привет, мир! Ёж", "ǅemal ǈubljana", "\U0001F600\U0010FFFD\U000E0001",
]

INVALID_UTF8 = [
    b"\xff", b"\xfe\xff", b"ab\x80cd", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(x",
    b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe0\x80\xaf",
    b"x \xf8\x88\x80\x80\x80 y", b"caf\xe9 au lait", b"\xf0\x9f\xa6\x99\xf0\x9f",
    bytes(range(256)), bytes(range(255, -1, -1)) * 3,
]


# -------------------------------------------------------------------------------------
# Fixtures
# -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tl(tmp_path_factory):
    return TokenizerLib(build_library(tmp_path_factory.mktemp("tokenizer_c")))


@pytest.fixture(scope="session")
def corpus():
    lines = []
    with open(WIKI, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
            if len(lines) >= N_LINES:
                break
    assert len(lines) == N_LINES
    return lines


@pytest.fixture(scope="session")
def long_line(corpus):
    """A 100 KB line of real text (WikiText lines joined without newlines)."""
    s = " ".join(x.strip() for x in corpus)
    return s[:100_000]


def spm_to_tokenizer_data(sp, add_space_prefix=True) -> TokenizerData:
    """A sentencepiece model as the GGUF converter would describe it."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_unused(i):
            types.append(5)
        elif sp.is_byte(i):
            types.append(6)
        else:
            types.append(1)
    return TokenizerData(model="llama", tokens=tokens, scores=scores, token_types=types,
                         bos_id=sp.bos_id(), eos_id=sp.eos_id(), unk_id=sp.unk_id(),
                         add_bos=True, add_space_prefix=add_space_prefix)


@pytest.fixture(scope="session")
def spm_models(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    d = tmp_path_factory.mktemp("spm")
    train = d / "train.txt"
    train.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:400_000], encoding="utf-8")
    models = {}
    for kind, vocab in (("unigram", 2000), ("bpe", 2000)):
        prefix = d / kind
        spm.SentencePieceTrainer.train(
            input=str(train), model_prefix=str(prefix), vocab_size=vocab, model_type=kind,
            byte_fallback=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=1.0,
            split_digits=True, num_threads=1, minloglevel=2)
        models[kind] = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    return models


@pytest.fixture(scope="session")
def llama3():
    """(ranks, TokenizerData) for the BitNet-2B-4T vocabulary, built like the GGUF converter."""
    return llama3_tokenizer_data(TIKTOKEN_MODEL)


@pytest.fixture(scope="session")
def llama3_blob(llama3):
    return pack_tokenizer(llama3[1])


@pytest.fixture(scope="session")
def tiktoken_llama3(llama3):
    tiktoken = pytest.importorskip("tiktoken")
    ranks, td = llama3
    specials = {t: len(ranks) + i for i, t in enumerate(LLAMA3_SPECIALS)}
    return tiktoken.Encoding("llama3-test", pat_str=LLAMA3_PAT, mergeable_ranks=ranks,
                             special_tokens=specials)


# -------------------------------------------------------------------------------------
# Unicode tables and packing
# -------------------------------------------------------------------------------------

def test_unicode_flags_match_unicodedata_for_every_code_point(tl):
    lib = tl.lib
    bad = [cp for cp in range(0x110000) if lib.tokenizer_unicode_flags(cp) != unicode_flags(cp)]
    assert not bad, f"{len(bad)} code points differ, first {hex(bad[0])}"
    assert lib.tokenizer_unicode_flags(0x110000) == 0


def test_unicode_flags_are_independent_facts():
    # a few classes checked against unicodedata directly (not through unicode_flags' rule)
    for ch in "aZéßΩжあ漢ǅ":
        assert unicode_flags(ord(ch)) & 1, ch
    for ch in "09٣௫Ⅻ½²":
        assert unicode_flags(ord(ch)) & 2, ch
    for cp in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028,
               0x2029, 0x202F, 0x205F, 0x3000):
        assert unicode_flags(cp) & 4, hex(cp)
    for cp in (0x1C, 0x1D, 0x1E, 0x1F, 0x200B, 0x180E, 0xFEFF):   # not White_Space
        assert not unicode_flags(cp) & 4, hex(cp)
    assert unicode_flags(0x301) & 8 and unicode_flags(ord("!")) & 16 and unicode_flags(ord("+")) & 32
    assert unicodedata.category(chr(0x378)) == "Cn" and unicode_flags(0x378) == 128


def test_packing_is_deterministic(llama3, spm_models):
    td = llama3[1]
    assert pack_tokenizer(td) == pack_tokenizer(td)
    s = spm_to_tokenizer_data(spm_models["bpe"])
    assert pack_tokenizer(s) == pack_tokenizer(s)
    assert unicode_tables_c() == unicode_tables_c()


def test_pack_rejects_unknown_pre_tokenizer(llama3):
    td = llama3[1]
    bad = TokenizerData(**{**td.__dict__, "pre": "chatglm-bpe"})
    with pytest.raises(TokenizerPackError, match="chatglm-bpe"):
        pack_tokenizer(bad)


# -------------------------------------------------------------------------------------
# SPM against sentencepiece
# -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_spm_matches_sentencepiece(tl, spm_models, corpus, long_line, kind):
    sp = spm_models[kind]
    ct = tl.load(pack_tokenizer(spm_to_tokenizer_data(sp)))
    assert ct.info("spm_viterbi") == (kind == "unigram")   # "auto" picked the right algorithm
    # the whole file as one text: 1.3 MB, long enough for sentencepiece's score re-basing
    texts = corpus + ADVERSARIAL + [long_line, WIKI.read_text(encoding="utf-8")]
    bad = []
    for s in texts:
        exp = sp.encode(s)
        got = ct.encode(s)
        if got != exp:
            bad.append((s[:80], exp[:30], got[:30]))
    assert not bad, f"{len(bad)}/{len(texts)} differ, first: {bad[:3]}"


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_spm_invalid_utf8_is_tokenised_bytewise(tl, spm_models, kind):
    """sentencepiece turns an invalid byte into U+FFFD; we keep the byte. Expected ids: encode
    the text with an unknown placeholder character instead, then swap its byte tokens for
    the invalid byte's (an unknown character segments the same whatever it is)."""
    sp = spm_models[kind]
    ct = tl.load(pack_tokenizer(spm_to_tokenizer_data(sp)))
    ph = "\ue000"          # private use: not in the vocabulary
    ph_ids = [sp.piece_to_id("<0x%02X>" % b) for b in ph.encode()]
    for raw in [b"ab\xffcd", b"\xfe", b"Hello \x80world", b"to be\xc3 or not"]:
        bad_byte = next(b for b in raw if b >= 0x80)
        text = raw.replace(bytes([bad_byte]), ph.encode()).decode()
        exp = sp.encode(text)
        i = next(k for k in range(len(exp)) if exp[k:k + 3] == ph_ids)
        exp[i:i + 3] = [sp.piece_to_id("<0x%02X>" % bad_byte)]
        assert ct.encode(raw) == exp, raw
        assert ct.decode(ct.encode(raw)) == raw


def test_spm_merge_mode_is_llamacpp_for_unigram_vocab(tl, spm_models):
    """Forcing llama.cpp's merge algorithm on a unigram vocab still round-trips (ids may
    differ from sentencepiece's, which is why "auto" picks viterbi there)."""
    sp = spm_models["unigram"]
    ct = tl.load(pack_tokenizer(spm_to_tokenizer_data(sp), spm_algorithm="merge"))
    assert ct.info("spm_viterbi") == 0
    for s in ["To be, or not to be", "我想 ok", ""]:
        assert ct.decode(ct.encode(s)) == s.encode()


def test_spm_without_byte_fallback_uses_one_unk_per_run(tl, tmp_path):
    spm = pytest.importorskip("sentencepiece")
    train = tmp_path / "t.txt"
    train.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    for kind in ("bpe", "unigram"):
        spm.SentencePieceTrainer.train(
            input=str(train), model_prefix=str(tmp_path / kind), vocab_size=800, model_type=kind,
            byte_fallback=False, normalization_rule_name="identity", remove_extra_whitespaces=False,
            character_coverage=1.0, num_threads=1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=str(tmp_path / kind) + ".model")
        ct = tl.load(pack_tokenizer(spm_to_tokenizer_data(sp)))
        for s in ["hello 你好世界 ok", "ä€€€x", "a\u0301b", "🦙🦙 llama", "plain words only"]:
            assert ct.encode(s) == sp.encode(s), (kind, s)


def test_spm_special_tokens_and_space_prefix(tl, spm_models):
    sp = spm_models["bpe"]
    ct = tl.load(pack_tokenizer(spm_to_tokenizer_data(sp)))
    bos, eos = sp.bos_id(), sp.eos_id()
    # ordinary text never produces control tokens
    assert bos not in ct.encode("<s>hello</s>") and eos not in ct.encode("<s>hello</s>")
    assert ct.encode("<s>hello</s>") == sp.encode("<s>hello</s>")
    # parse_special: whole tokens, and (llama.cpp) the text after a special gets the prefix
    got = ct.encode("<s>hello</s>", parse_special=True)
    assert got == [bos] + sp.encode("hello") + [eos]
    got = ct.encode("hi</s>there", parse_special=True)
    assert got == sp.encode("hi") + [eos] + sp.encode("there")
    assert ct.encode("hello", add_bos=True) == [bos] + sp.encode("hello")
    assert ct.encode("", add_bos=True) == [bos] and ct.encode("") == []


# -------------------------------------------------------------------------------------
# BPE against tiktoken / HF tokenizers
# -------------------------------------------------------------------------------------

def test_llama3_matches_tiktoken(tl, llama3_blob, tiktoken_llama3, corpus, long_line):
    ct = tl.load(llama3_blob)
    texts = corpus + ADVERSARIAL + [long_line]
    bad = []
    for s in texts:
        exp = tiktoken_llama3.encode_ordinary(s)
        got = ct.encode(s)
        if got != exp:
            bad.append((s[:80], exp[:20], got[:20]))
    assert not bad, f"{len(bad)}/{len(texts)} differ, first: {bad[:3]}"


def random_unicode_text(rng, n):
    """Random text mixing many classes; only code points assigned in this Python's Unicode
    version and stable in older/newer ones (letters, digits, marks, spaces, symbols)."""
    pools = [
        "abcXYZ", "'sStTmMdDrReEvVlL", " ", "  \t", "\r\n", "\n", "0123456789", "٠١٢٣", "Ⅻ½²",
        "éßΩжあ漢한", "\u0301\u0308\u094d", ".,!?;:-_()[]{}\"'`~@#$%^&*+=<>/\\|",
        "\u00a0\u2003\u3000\u0085\u2028", "\x1c\x1f\x0b\x0c", "🦙🚀✅", "\u200b\u200d\ufeff", "ſ",
    ]
    out = []
    for _ in range(n):
        out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


def test_llama3_matches_tiktoken_on_random_unicode(tl, llama3_blob, tiktoken_llama3):
    ct = tl.load(llama3_blob)
    rng = random.Random(1234)
    for _ in range(1500):
        s = random_unicode_text(rng, rng.randint(1, 40))
        assert ct.encode(s) == tiktoken_llama3.encode_ordinary(s), repr(s)


def test_gpt2_pretokenizer_matches_tiktoken(tl, llama3, corpus):
    """The GPT-2 regex over the LLaMA-3 ranks, against tiktoken with the GPT-2 pattern
    (tiktoken looks whole words up first, so the blob uses ignore_merges too)."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks, td = llama3
    enc = tiktoken.Encoding("gpt2-pat-test", pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={})
    blob = pack_tokenizer(TokenizerData(**{**td.__dict__, "pre": "gpt-2"}), ignore_merges=True)
    ct = tl.load(blob)
    assert ct.info("pre") == 2
    rng = random.Random(99)
    texts = corpus + ADVERSARIAL + [random_unicode_text(rng, rng.randint(1, 40)) for _ in range(1500)]
    bad = [(s[:60], enc.encode_ordinary(s)[:12], ct.encode(s)[:12]) for s in texts
           if ct.encode(s) != enc.encode_ordinary(s)]
    assert not bad, f"{len(bad)}/{len(texts)} differ, first: {bad[:3]}"


def test_llama3_matches_hf_tokenizers_merges_semantics(tl, llama3, llama3_blob, corpus):
    """HF tokenizers with the same vocab + merges list (its BPE is what llama.cpp's is)."""
    tk = pytest.importorskip("tokenizers")
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    ranks, td = llama3
    vocab = {t: i for i, t in enumerate(td.tokens[:len(ranks)])}
    merges = [tuple(m.split(" ", 1)) for m in td.merges]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    ct = tl.load(llama3_blob)
    texts = corpus[:500] + ADVERSARIAL
    bad = [s for s in texts if ct.encode(s) != hf.encode(s, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} differ, first {bad[:2]!r}"
    assert tk is not None


def partition_reference(text: str, specials: list) -> list:
    """llama.cpp's special-token split written independently: for each special token, longest
    first, cut every raw fragment at its leftmost non-overlapping occurrences.
    Returns a list of str (raw text) and int (token id)."""
    frags = [text] if text else []
    for tid, tok in sorted(specials, key=lambda p: (-len(p[1].encode()), p[0])):
        out = []
        for f in frags:
            if isinstance(f, int):
                out.append(f)
                continue
            parts = f.split(tok)
            for k, p in enumerate(parts):
                if p:
                    out.append(p)
                if k < len(parts) - 1:
                    out.append(tid)
        frags = out
    return frags


def test_spm_special_partition_random(tl, spm_models):
    sp = spm_models["bpe"]
    td = spm_to_tokenizer_data(sp)
    # add user-defined tokens that overlap each other and the control tokens
    td.tokens = td.tokens + ["<s>x", "ab", "s><"]
    td.scores = td.scores + [0.0, 0.0, 0.0]
    td.token_types = td.token_types + [4, 4, 4]
    n = sp.get_piece_size()
    ct = tl.load(pack_tokenizer(td))
    control = [(sp.bos_id(), "<s>"), (sp.eos_id(), "</s>"), (sp.unk_id(), "<unk>")]
    user = [(n, "<s>x"), (n + 1, "ab"), (n + 2, "s><")]
    rng = random.Random(5)
    alphabet = ["<s>", "</s>", "<", "/", "s", ">", "x", "a", "b", " ", "<unk>", "hi"]
    for _ in range(800):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for ps in (False, True):
            frags = partition_reference(text, user + (control if ps else []))
            exp = []
            for f in frags:   # every raw fragment gets the "▁" prefix (start or after a special)
                exp += [f] if isinstance(f, int) else sp.encode(f)
            assert ct.encode(text, parse_special=ps) == exp, (text, ps)


def test_llama3_special_tokens_random(tl, llama3_blob, tiktoken_llama3):
    ct = tl.load(llama3_blob)
    rng = random.Random(11)
    alphabet = ["<|eot_id|>", "<|begin_of_text|>", "<|", "|>", "<", "eot_id", "_", "Hi", " ",
                "\n", "<|reserved_special_token_17|>", "<|start_header_id|>"]
    for _ in range(800):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert ct.encode(text, parse_special=True) == tiktoken_llama3.encode(text, allowed_special="all")
        assert ct.encode(text) == tiktoken_llama3.encode_ordinary(text)


def test_llama3_special_tokens(tl, llama3_blob, tiktoken_llama3):
    ct = tl.load(llama3_blob)
    text = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
    assert ct.encode(text, parse_special=True) == tiktoken_llama3.encode(text, allowed_special="all")
    # without parse_special the markers are ordinary text, split like any other
    plain = ct.encode(text)
    assert plain == tiktoken_llama3.encode_ordinary(text)
    assert not any(i >= 128000 for i in plain)
    assert ct.encode("x", add_bos=True) == [128000] + tiktoken_llama3.encode_ordinary("x")
    assert ct.is_eog(128009) and ct.is_eog(128001) and not ct.is_eog(128000)
    assert ct.find("<|eot_id|>") == 128009 and ct.find("no such token") == -1
    # decoding control tokens: hidden by default, text with DECODE_SPECIAL
    ids = ct.encode(text, parse_special=True)
    assert ct.decode(ids, flags=DECODE_SPECIAL) == text.encode()
    assert ct.decode(ids, flags=0) == b"user\n\nHi there"


# -------------------------------------------------------------------------------------
# llama.cpp's vocab test vectors (from the llama-cpp-python sdist)
# -------------------------------------------------------------------------------------

# Every family llama.cpp ships vectors for. Committed under tests/data/llama-vocab; the two
# largest files (command-r 10.9 MB, gemma-4 15.8 MB) are checked from the sdist by
# test_llamacpp_vocab_vectors_from_sdist (network).
VOCABS = ["llama-spm", "phi-3", "gpt-2", "llama-bpe", "mpt", "qwen2", "qwen35", "starcoder", "refact",
          "falcon", "deepseek-llm", "deepseek-coder", "bert-bge"]
SDIST_VOCABS = ["command-r", "gemma-4"]
SDIST = "llama-cpp-python==0.3.36"
SDIST_CACHE = Path(os.path.expanduser("~/.cache/bitnet-aot/pypi"))


def vocab_dir():
    """llama.cpp's vocab test files, committed under tests/data/llama-vocab (from the
    llama-cpp-python==0.3.36 sdist; see tests/data/README.md)."""
    return LLAMA_VOCAB


def read_vectors(path: Path):
    """(input, ids) pairs in llama.cpp's test-tokenizer-0 format."""
    raw = path.with_name(path.name + ".inp").read_text(encoding="utf-8")
    outs = path.with_name(path.name + ".out").read_text(encoding="utf-8").splitlines()
    sep = "\n__ggml_vocab_test__\n"
    inps = raw.split(sep)
    if inps and inps[-1] == "":
        inps.pop()
    assert len(inps) == len(outs), (len(inps), len(outs))
    return [(s, [int(x) for x in o.split()]) for s, o in zip(inps, outs)]


def check_vectors(tl, path: Path):
    from bitnet_aot.gguf_file import GGUFFile
    from bitnet_aot.gguf_import import Importer
    g = GGUFFile(str(path))
    td = Importer(g, ternarize=False).tokenizer(len(g.kv["tokenizer.ggml.tokens"]))
    ct = tl.load(pack_tokenizer(td))
    vectors = read_vectors(path)
    assert len(vectors) >= 40
    bad = [(s, exp, ct.encode(s)) for s, exp in vectors if ct.encode(s) != exp]
    assert not bad, f"{len(bad)}/{len(vectors)} vectors fail, first: {bad[:2]!r}"
    if td.model == "bert":
        return   # WordPiece lowercases and drops accents and spaces: no way back
    for s, exp in vectors:
        assert ct.decode(exp) == s.encode(), s


@pytest.mark.parametrize("vocab", VOCABS)
def test_llamacpp_vocab_vectors(tl, vocab):
    check_vectors(tl, vocab_dir() / f"ggml-vocab-{vocab}.gguf")


@pytest.fixture(scope="module")
def sdist_vocab_dir():
    """The vocab files too big to commit, from the llama-cpp-python sdist (downloaded once
    into ~/.cache/bitnet-aot/pypi, as tests/test_real_gguf.py does for its wheel)."""
    import glob
    import tarfile
    out = SDIST_CACHE / "llama-vocab-0.3.36"
    want = [f"ggml-vocab-{v}.gguf{ext}" for v in SDIST_VOCABS for ext in ("", ".inp", ".out")]
    if all((out / w).exists() for w in want):
        return out
    SDIST_CACHE.mkdir(parents=True, exist_ok=True)
    tars = glob.glob(str(SDIST_CACHE / "llama_cpp_python-0.3.36.tar.gz"))
    if not tars:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "-q", "-d", str(SDIST_CACHE), SDIST], capture_output=True, text=True, timeout=1800)
        tars = glob.glob(str(SDIST_CACHE / "llama_cpp_python-0.3.36.tar.gz"))
        if not tars:
            pytest.skip(f"{SDIST} could not be downloaded from PyPI: {r.stderr.strip()[-200:]}")
    out.mkdir(parents=True, exist_ok=True)
    prefix = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
    with tarfile.open(tars[0], "r:gz") as tf:
        for w in want:
            src = tf.extractfile(prefix + w)
            with open(out / (w + ".tmp"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(out / (w + ".tmp"), out / w)
    return out


@pytest.mark.network
@pytest.mark.parametrize("vocab", SDIST_VOCABS)
def test_llamacpp_vocab_vectors_from_sdist(tl, sdist_vocab_dir, vocab):
    check_vectors(tl, sdist_vocab_dir / f"ggml-vocab-{vocab}.gguf")


def test_gpt2_vocab_matches_hf_tokenizers(tl, corpus):
    """GGUF GPT-2 vocabulary vs HF tokenizers' byte-level BPE (GPT-2 regex) on the corpus."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from bitnet_aot.gguf_file import GGUFFile
    from bitnet_aot.gguf_import import Importer
    g = GGUFFile(str(vocab_dir() / "ggml-vocab-gpt-2.gguf"))
    td = Importer(g, ternarize=False).tokenizer(len(g.kv["tokenizer.ggml.tokens"]))
    vocab = {t: i for i, t in enumerate(td.tokens)}
    hf = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in td.merges]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ct = tl.load(pack_tokenizer(td))
    texts = corpus + [s for s in ADVERSARIAL if "<|" not in s]
    bad = [s for s in texts if ct.encode(s) != hf.encode(s, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)}/{len(texts)} differ, first {bad[:2]!r}"


# -------------------------------------------------------------------------------------
# Round trips and streaming
# -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def all_families(tl, spm_models, llama3_blob):
    return {
        "spm-bpe": tl.load(pack_tokenizer(spm_to_tokenizer_data(spm_models["bpe"]))),
        "spm-unigram": tl.load(pack_tokenizer(spm_to_tokenizer_data(spm_models["unigram"]))),
        "llama3": tl.load(llama3_blob),
    }


@pytest.mark.parametrize("family", ["spm-bpe", "spm-unigram", "llama3"])
def test_round_trip(all_families, corpus, long_line, family):
    ct = all_families[family]
    texts = [s.encode() for s in corpus + ADVERSARIAL + [long_line]] + INVALID_UTF8
    for s in texts:
        for bos in (False, True):
            ids = ct.encode(s, add_bos=bos)
            assert ct.decode(ids, flags=DECODE_STRIP_SPACE) == s, (family, s[:80])


@pytest.mark.parametrize("family", ["spm-bpe", "llama3"])
def test_stream_emits_only_complete_characters(all_families, corpus, family):
    ct = all_families[family]
    texts = [s.encode() for s in corpus[:300] + ADVERSARIAL] + INVALID_UTF8
    for s in texts:
        ids = ct.encode(s)
        full = ct.decode(ids, flags=DECODE_STRIP_SPACE)
        chunks = ct.stream(ids, flags=DECODE_STRIP_SPACE)
        for c in chunks:
            c.decode("utf-8")                  # every chunk is valid UTF-8 on its own
        assert b"".join(chunks) == full.decode("utf-8", "replace").encode(), s[:60]
        raw = ct.stream(ids, flags=DECODE_STRIP_SPACE | DECODE_RAW)
        assert b"".join(raw) == full


def test_stream_holds_split_characters(all_families):
    ct = all_families["llama3"]
    ids = ct.encode("🦙")          # one emoji, several byte tokens
    assert len(ids) > 1
    chunks = ct.stream(ids)
    assert chunks[:-2] == [b""] * (len(ids) - 1) and chunks[-2] == "🦙".encode() and chunks[-1] == b""
    # a truncated character is flushed as one U+FFFD at the end
    assert ct.stream(ids[:-1])[-1] == "\ufffd".encode()


def test_decode_buffer_and_pieces(all_families):
    ct = all_families["spm-bpe"]
    ids = ct.encode("Hello world")
    assert ct.decode(ids, flags=0).startswith(b" ")          # no strip: the prefix shows
    assert ct.decode(ids) == b"Hello world"
    assert ct.piece(-1) is None and ct.piece(10 ** 7) is None
    bt = ct.find("<0x41>")
    assert ct.piece(bt) == b"A" and ct.token_text(bt) == b"<0x41>"
    assert ct.token_text(ct.find("\u2581the")) == "\u2581the".encode()
    assert ct.piece(ct.find("\u2581the")) == b" the"
    l3 = all_families["llama3"]
    assert l3.token_text(l3.find("Ġthe")) == "Ġthe".encode() and l3.piece(l3.find("Ġthe")) == b" the"


# -------------------------------------------------------------------------------------
# API contract: sizes, errors, robustness, speed
# -------------------------------------------------------------------------------------

def test_encode_reports_needed_size(all_families):
    ct = all_families["llama3"]
    data = b"The quick brown fox jumps over the lazy dog."
    full = ct.encode(data)
    n, _ = ct.encode_raw(data, 0)
    assert n == -len(full)
    n, part = ct.encode_raw(data, 3)
    assert n == -len(full) and part == full[:3]
    n, got = ct.encode_raw(data, len(full))
    assert n == len(full) and got == full


def test_blob_errors(tl, llama3_blob, spm_models):
    blob = pack_tokenizer(spm_to_tokenizer_data(spm_models["bpe"]))
    with pytest.raises(ValueError, match="magic"):
        tl.load(b"XTOK" + blob[4:])
    with pytest.raises(ValueError, match="checksum"):
        tl.load(blob[:-8] + bytes([blob[-8] ^ 1]) + blob[-7:])
    with pytest.raises(ValueError):
        tl.load(blob[:len(blob) // 2])
    with pytest.raises(ValueError):
        tl.load(b"")
    # a misaligned blob is copied once and works the same
    a, b = tl.load(blob), tl.load(blob, misalign=1)
    assert b.info("copied") == 1 and a.info("copied") == 0
    assert a.encode("misaligned text") == b.encode("misaligned text")


def test_random_bytes_never_crash(all_families):
    rng = random.Random(7)
    for ct in all_families.values():
        for _ in range(300):
            s = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            for ps in (0, 1):
                ids = ct.encode(s, parse_special=bool(ps))
                assert ct.decode(ids, flags=DECODE_STRIP_SPACE | DECODE_SPECIAL) == s


@pytest.mark.parametrize("family", ["spm-bpe", "spm-unigram", "llama3"])
def test_long_inputs_are_fast(all_families, family):
    ct = all_families[family]
    for s in [b"a" * 100_000, b" " * 100_000, b"\xff" * 100_000, "🦙".encode() * 25_000,
              b"ab " * 33_000, b"<|eot_id|>" * 10_000]:
        t0 = time.perf_counter()
        ids = ct.encode(s, parse_special=True)
        dt = time.perf_counter() - t0
        assert dt < 2.0, (family, s[:10], dt)
        assert ct.decode(ids, flags=DECODE_STRIP_SPACE | DECODE_SPECIAL) == s


def test_sanitizers_find_nothing(tmp_path, spm_models, llama3_blob, corpus):
    """AddressSanitizer + UBSan over encode / short buffers / decode / stream on adversarial
    input, and tokenizer_init on blobs with corrupted headers."""
    run_sanitized_fuzz(tmp_path, spm_models, llama3_blob, corpus, mutations=30)


@pytest.mark.slow
def test_sanitizers_many_corrupt_headers(tmp_path, spm_models, llama3_blob, corpus):
    run_sanitized_fuzz(tmp_path, spm_models, llama3_blob, corpus, mutations=1000)


def run_sanitized_fuzz(tmp_path, spm_models, llama3_blob, corpus, mutations):
    import shutil
    import struct
    cc = shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no gcc/clang with sanitizers")
    (tmp_path / "unicode_tables.c").write_text(unicode_tables_c())
    exe = tmp_path / "fuzz"
    r = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
                        "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                        "-I", str(ROOT / "runtime_c" / "text"), "-o", str(exe),
                        str(Path(__file__).parent / "data" / "tokenizer" / "fuzz_tokenizer.c"),
                        str(ROOT / "runtime_c" / "text" / "tokenizer.c"), str(tmp_path / "unicode_tables.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        if "sanitize" in r.stderr or "asan" in r.stderr:
            pytest.skip("sanitizer runtime unavailable: " + r.stderr[-200:])
        raise AssertionError(r.stderr)
    rng = random.Random(3)
    inputs = [s.encode() for s in ADVERSARIAL + corpus[:200]] + INVALID_UTF8
    inputs += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 80))) for _ in range(200)]
    inputs += [random_unicode_text(rng, rng.randint(1, 60)).encode() for _ in range(200)]
    inputs += [b"<|eot_id|><s></s>" * 50, "🦙".encode() * 2000 + b"\xf0\x9f", b" \n" * 5000]
    (tmp_path / "inputs").write_bytes(b"".join(struct.pack("<I", len(s)) + s for s in inputs))
    blobs = {"llama3": llama3_blob,
             "spm-bpe": pack_tokenizer(spm_to_tokenizer_data(spm_models["bpe"])),
             "spm-unigram": pack_tokenizer(spm_to_tokenizer_data(spm_models["unigram"]))}
    for name, blob in blobs.items():
        (tmp_path / name).write_bytes(blob)
        r = subprocess.run([str(exe), str(tmp_path / name), str(tmp_path / "inputs"), str(mutations)],
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1"})
        assert r.returncode == 0 and r.stdout.startswith("ok"), (name, r.stdout[-2000:], r.stderr[-3000:])


def test_compiles_with_zig_for_musl(tmp_path):
    """The runtime is built with zig cc for musl targets: compile (no link) strictly."""
    pytest.importorskip("ziglang")
    (tmp_path / "unicode_tables.c").write_text(unicode_tables_c())
    for src in [ROOT / "runtime_c" / "text" / "tokenizer.c", ROOT / "runtime_c" / "text" / "chat.c", tmp_path / "unicode_tables.c"]:
        r = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-musl",
                            "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-c",
                            "-I", str(ROOT / "runtime_c"), str(src), "-o", str(tmp_path / "x.o")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
