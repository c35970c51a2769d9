"""The BPE pre-tokenizers added for Qwen-based and code models, exact against Hugging Face
`tokenizers`, and the rule that a build never drops a tokenizer silently.

For each pre-tokenizer a byte-level BPE vocabulary is trained here with HF `tokenizers`
(pre-tokenizer configured as in the published tokenizer.json files of that family) on
tests/data/tokenizer/pre_corpus.txt (written for these tests; see pre_corpus.LICENSE);
the C tokenizer must give the same ids on the corpus lines, random strings drawn from a
character pool that stresses digits, whitespace and scripts, and the adversarial lines.
No network, nothing from outside the repository.
"""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_harness import TokenizerLib, build_library  # noqa: E402

from bitnet_aot.model import TokenizerData  # noqa: E402
from bitnet_aot.tokenizer_pack import PRE_TOKENIZERS, TokenizerPackError, pack_tokenizer  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "data" / "tokenizer" / "pre_corpus.txt"

# Qwen2 / Qwen3 tokenizer.json: Split(this regex, isolated) then ByteLevel(use_regex=false)
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen3.5: the same with marks as letters
QWEN35_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")

# DeepSeek LLM / Coder tokenizer.json: Sequence of Split(..., isolated), then ByteLevel(use_regex=false)
DS_LETTERS = ("A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF"
              "\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1"
              "\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD"
              "\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D"
              "\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC"
              "\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC"
              "\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"
              "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3"
              "\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06"
              "\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3"
              "\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF"
              "\U0001E900-\U0001E943")
DS_CJK = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+"
DEEPSEEK_LLM_SPLITS = ["[\r\n]", "\\s?[" + DS_LETTERS + "]+",
                       "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+", "\\s+$", DS_CJK, "\\p{N}+"]
DEEPSEEK_CODER_SPLITS = ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", DS_CJK, "\\p{N}"]

POOL = (list("abcxyzABCXYZ") + list("0123456789") + list("٠١٢٣٤٥๑๒½²①𝟙０") + [" "] * 6 + ["\n", "\r", "\t",
        "\u00a0", "\u3000", "\u2028", "\u0085", "\x0b"] + list("'\".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`")
        + list("éßſKÅñçøœ") + list("中文字日本한국어") + list("Привет") + list("مرحبا") + ["\u0301", "\u0308"]
        + ["🦙", "👍🏿", "\u200d", "\ufe0f"] + ["'s", "'T", "'re", "'LL", "'ve", "'m", "'d", "'ſ"])


def _pre(kind):
    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind in ("qwen2", "qwen35"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PAT if kind == "qwen2" else QWEN35_PAT), behavior="isolated",
                                 invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if kind in ("deepseek-llm", "deepseek-coder"):
        splits = DEEPSEEK_LLM_SPLITS if kind == "deepseek-llm" else DEEPSEEK_CODER_SPLITS
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in splits]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if kind == "falcon":
        # llama.cpp's falcon chain: punctuation runs, GPT-2's regex, then 3-digit groups
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[\p{P}\$\+<=>\^~\|`]+"), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            pre_tokenizers.Split(Regex("[0-9][0-9][0-9]"), behavior="isolated", invert=False)])
    # starcoder, refact, smollm, command-r: digits one by one, then GPT-2's byte-level regex
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def _texts():
    lines = CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)
    rnd = random.Random(1234)
    rand = ["".join(rnd.choice(POOL) for _ in range(rnd.randint(1, 40))) for _ in range(1500)]
    whole = CORPUS.read_text(encoding="utf-8")
    return lines + rand + [whole, whole.replace("\n", " "), "", " ", "  ", "\n\n", "1" * 50, " 1 22 333"]


def _train(kind):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre(kind)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=900, min_frequency=1, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    text = CORPUS.read_text(encoding="utf-8")
    rnd = random.Random(7)
    extra = ["".join(rnd.choice(POOL) for _ in range(30)) for _ in range(300)]
    tok.train_from_iterator([text] * 3 + extra, trainer=tr)
    return tok


def _tokenizer_data(hf, pre_name) -> TokenizerData:
    import json
    j = json.loads(hf.to_str())
    vocab = j["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    types = [1] * len(tokens)
    for a in j["added_tokens"]:
        types[a["id"]] = 3
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    return TokenizerData(model="gpt2", tokens=tokens, token_types=types, merges=merges, pre=pre_name,
                         bos_id=-1, eos_id=tokens.index("<|endoftext|>"), add_bos=False)


@pytest.fixture(scope="module")
def tl(tmp_path_factory):
    return TokenizerLib(build_library(tmp_path_factory.mktemp("tokenizer_pre_c")))


@pytest.mark.parametrize("pre_name,kind", [("qwen2", "qwen2"), ("deepseek-r1-qwen", "qwen2"),
                                           ("starcoder", "digits"), ("refact", "digits"),
                                           ("smollm", "digits"), ("command-r", "digits"),
                                           ("qwen35", "qwen35"), ("deepseek-llm", "deepseek-llm"),
                                           ("deepseek-coder", "deepseek-coder"), ("falcon", "falcon")])
@pytest.mark.parametrize("vocab_from", ["own", "gpt2"])
def test_pre_tokenizer_matches_hf_tokenizers(tl, pre_name, kind, vocab_from):
    """vocab_from: trained with this pre-tokenizer, or with GPT-2's (which has multi-digit
    tokens, so splitting digits wrongly would show)."""
    hf = _train(kind if vocab_from == "own" else "gpt2")
    if vocab_from != "own":
        import json
        j = json.loads(hf.to_str())
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
        hf2 = Tokenizer(models.BPE(vocab=j["model"]["vocab"], merges=merges))
        hf2.pre_tokenizer = _pre(kind)
        hf2.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        hf = hf2
    ct = tl.load(pack_tokenizer(_tokenizer_data(hf, pre_name)))
    texts = _texts()
    bad = [s for s in texts if ct.encode(s) != hf.encode(s, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]!r}"
    # and the pieces decode back to the text
    for s in texts[:200]:
        assert ct.decode(ct.encode(s), flags=0) == s.encode("utf-8")


def test_qwen2_and_starcoder_differ_from_llama3_and_gpt2(tl):
    """The new pre-tokenizers really are different splits (a test that could fail if the
    blob's pre-tokenizer id were ignored): on a vocabulary with multi-digit tokens, qwen2 and
    starcoder keep digits apart where llama-bpe and gpt-2 merge them."""
    td = _tokenizer_data(_train("gpt2"), "gpt-2")
    text = "in 2026 we had 12345 tokens, 1234 of them"
    ids = {}
    for pre in ("qwen2", "llama-bpe", "starcoder", "gpt-2"):
        td.pre = pre
        ids[pre] = tl.load(pack_tokenizer(td, ignore_merges=False)).encode(text)
    assert ids["qwen2"] != ids["llama-bpe"] and ids["starcoder"] != ids["gpt-2"], ids
    assert len(ids["qwen2"]) > len(ids["llama-bpe"]) and len(ids["starcoder"]) > len(ids["gpt-2"])


# ---- the two non-byte-level models: gemma4's UTF-8 BPE and WordPiece ----------------------------

def test_gemma4_style_bpe_matches_hf_tokenizers(tl):
    """gemma4 (llama.cpp): spaces become "▁", the text is cut at newline runs, BPE runs on
    UTF-8 characters with <0xNN> byte fallback = HF BPE(byte_fallback) after Replace(" ", "▁")
    and Split(newline runs | the rest). Vocabulary trained here on the corpus."""
    import json
    norm = lambda: tokenizers.normalizers.Replace(" ", "\u2581")  # noqa: E731
    split = lambda: pre_tokenizers.Split(Regex("\n+|[^\n]+"), behavior="isolated")  # noqa: E731
    tok = Tokenizer(models.BPE())
    tok.normalizer, tok.pre_tokenizer = norm(), split()
    tr = trainers.BpeTrainer(vocab_size=1200, min_frequency=1, show_progress=False,
                             special_tokens=["<pad>", "<eos>", "<bos>"])
    rnd = random.Random(7)
    extra = ["".join(rnd.choice(POOL) for _ in range(30)) for _ in range(300)]
    tok.train_from_iterator([CORPUS.read_text(encoding="utf-8")] * 3 + extra, trainer=tr)
    j = json.loads(tok.to_str())
    vocab = dict(j["model"]["vocab"])
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True))
    hf.normalizer, hf.pre_tokenizer = norm(), split()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    types = [3, 3, 3] + [1] * (len(tokens) - 259) + [6] * 256
    td = TokenizerData(model="gemma4", tokens=tokens, token_types=types, merges=[" ".join(m) for m in merges],
                       bos_id=2, eos_id=1)
    ct = tl.load(pack_tokenizer(td))
    texts = _texts() + ["snow \u2603 clef \U0001d11e\n\n x"]      # characters the vocabulary lacks
    bad = [s for s in texts if ct.encode(s) != hf.encode(s, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]!r}"
    assert sum(tokens[i].startswith("<0x") for i in ct.encode(texts[-1])) == 7    # byte fallback used
    for s in texts[:300]:
        assert ct.decode(ct.encode(s), flags=0) == s.encode("utf-8")


# llama.cpp's WordPiece differs from HF's BertNormalizer on these (we follow llama.cpp, whose
# vectors are exact): U+000B, U+000C and U+0085 separate words (HF deletes them as control
# characters), a Hangul syllable keeps only its leading jamo (HF keeps all three), and
# accent stripping drops spacing marks (Mc, e.g. Devanagari vowel signs) too (HF only Mn).
def _wpm_divergent(s):
    import unicodedata
    return any(c in "\x0b\x0c\x85" or "\uac00" <= c <= "\ud7a3" or unicodedata.category(c) == "Mc" for c in s)


def _bert_hf():
    """bert-bge's vocabulary (llama.cpp's GGUF, "▁" marks word starts) as HF WordPiece
    ("##" marks continuations) with BertNormalizer(lowercase, strip_accents), BertPreTokenizer."""
    from bitnet_aot.gguf_file import GGUFFile
    from bitnet_aot.gguf_import import Importer
    g = GGUFFile(str(Path(__file__).resolve().parent / "data" / "llama-vocab" / "ggml-vocab-bert-bge.gguf"))
    td = Importer(g, ternarize=False).tokenizer(len(g.kv["tokenizer.ggml.tokens"]))
    vocab = {}
    for i, t in enumerate(td.tokens):
        key = t if td.token_types[i] == 3 else (t[1:] if t.startswith("\u2581") else "##" + t)
        vocab.setdefault(key, i)
    hf = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=10 ** 6))
    hf.normalizer = tokenizers.normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                          strip_accents=True, lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return hf, td


def test_wordpiece_matches_hf_tokenizers(tl):
    hf, td = _bert_hf()
    ct = tl.load(pack_tokenizer(td))
    texts = [s for s in _texts() if not _wpm_divergent(s)]
    assert len(texts) > 600
    bad = [s for s in texts if ct.encode(s) != hf.encode(s, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]!r}"
    # the divergences are what the comment above says, no more
    assert ct.encode("a\x0bb") == ct.encode("a b") != hf.encode("a\x0bb", add_special_tokens=False).ids
    assert [td.tokens[i] for i in ct.encode("국")] == ["\u2581\u1100"]
    assert ct.encode("\u0915\u093f") == ct.encode("\u0915")      # Mc dropped
    # [CLS] text [SEP] when the special tokens are added
    assert ct.encode("hello", add_bos=True)[0] == td.bos_id == 101


# ---- a build never drops a tokenizer without being told to ------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bitnet_aot.cli", *args], capture_output=True, text=True,
                          timeout=600)


def _with_pre(tmp_path, pre):
    from bitnet_aot.factory import make_test_model
    from bitnet_aot.gguf_file import GGUFFile, TensorToWrite, write_gguf
    src = make_test_model(str(tmp_path / "src.gguf"), "llama", "tq2_0", n_layer=1, tokenizer="bpe")
    g = GGUFFile(src)
    kv = dict(g.kv)
    kv["tokenizer.ggml.pre"] = pre
    ts = [TensorToWrite(t.name, t.ggml_type, t.ne, bytes(g.raw(t.name))) for t in g.tensors.values()]
    g.close()
    out = str(tmp_path / f"pre-{pre}.gguf")
    write_gguf(out, kv, ts)
    return out


def test_unsupported_pre_tokenizer_is_an_error_naming_it(tmp_path):
    assert "chatglm-bpe" not in PRE_TOKENIZERS
    p = _with_pre(tmp_path, "chatglm-bpe")
    r = _cli("build", p, "-o", str(tmp_path / "m"), "--emit-c", str(tmp_path / "c"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "'chatglm-bpe'" in lines[-1] and "--no-tokenizer" in lines[-1]
    assert not any("Traceback" in x for x in lines)
    r = _cli("build", p, "-o", str(tmp_path / "m"), "--emit-c", str(tmp_path / "c"), "--no-tokenizer")
    assert r.returncode == 0, r.stderr
    assert "--no-tokenizer" in r.stderr
    r = _cli("inspect", p)
    assert r.returncode == 0 and "C tokenizer: no" in r.stdout and "chatglm-bpe" in r.stdout, r.stdout


def test_pack_refuses_unknown_pre_tokenizer():
    td = TokenizerData(model="gpt2", tokens=["a", "b", "ab"], merges=["a b"], pre="bert")
    with pytest.raises(TokenizerPackError, match="'bert'"):
        pack_tokenizer(td)
