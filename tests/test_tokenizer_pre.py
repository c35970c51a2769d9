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

POOL = (list("abcxyzABCXYZ") + list("0123456789") + list("٠١٢٣٤٥๑๒½²①𝟙０") + [" "] * 6 + ["\n", "\r", "\t",
        "\u00a0", "\u3000", "\u2028", "\u0085", "\x0b"] + list("'\".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`")
        + list("éßſKÅñçøœ") + list("中文字日本한국어") + list("Привет") + list("مرحبا") + ["\u0301", "\u0308"]
        + ["🦙", "👍🏿", "\u200d", "\ufe0f"] + ["'s", "'T", "'re", "'LL", "'ve", "'m", "'d", "'ſ"])


def _pre(kind):
    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "qwen2":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PAT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
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
                                           ("smollm", "digits"), ("command-r", "digits")])
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
    assert "deepseek-llm" not in PRE_TOKENIZERS
    p = _with_pre(tmp_path, "deepseek-llm")
    r = _cli("build", p, "-o", str(tmp_path / "m"), "--emit-c", str(tmp_path / "c"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "'deepseek-llm'" in lines[-1] and "--no-tokenizer" in lines[-1]
    assert not any("Traceback" in x for x in lines)
    r = _cli("build", p, "-o", str(tmp_path / "m"), "--emit-c", str(tmp_path / "c"), "--no-tokenizer")
    assert r.returncode == 0, r.stderr
    assert "--no-tokenizer" in r.stderr
    r = _cli("inspect", p)
    assert r.returncode == 0 and "C tokenizer: no" in r.stdout and "deepseek-llm" in r.stdout, r.stdout


def test_pack_refuses_unknown_pre_tokenizer():
    td = TokenizerData(model="gpt2", tokens=["a", "b", "ab"], merges=["a b"], pre="bert")
    with pytest.raises(TokenizerPackError, match="'bert'"):
        pack_tokenizer(td)
