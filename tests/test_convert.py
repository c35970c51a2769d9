"""HF checkpoint -> GGUF conversion (bitnet_aot.convert) and the trained Shakespeare model.

(a) the numpy reference on a converted GGUF reproduces the training script's own quantized
    forward logits on held-out text: for a tiny model trained here for a few steps, and for
    the bundled examples/shakespeare.gguf against examples/train/heldout_logits.npz;
(b) the packed (uint8 + weight_scale) form made from the unpacked one converts to the same
    GGUF tensors, and the packing follows HF transformers' documented layout;
(c) malformed checkpoints are refused with one-line BitnetErrors.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from bitnet_aot import convert
from bitnet_aot.errors import BitnetError
from bitnet_aot.gguf_file import GGUFFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, "examples", "train", "train.py")
BUNDLED = os.path.join(ROOT, "examples", "shakespeare.gguf")
BUNDLED_NPZ = os.path.join(ROOT, "examples", "train", "heldout_logits.npz")
SHAKESPEARE = os.path.join(ROOT, "tests", "data", "text", "tinyshakespeare.txt")
TIKTOKEN_2B4T = os.path.join(ROOT, "tests", "data", "tokenizers", "bitnet-b1.58-2B-4T", "tokenizer.model")

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


def _reference():
    try:
        from bitnet_aot import reference
    except ImportError as e:
        pytest.skip(f"bitnet_aot.reference is not available yet ({e})")
    return reference


def _load_train_module():
    pytest.importorskip("torch", reason="training needs torch (pip install torch==2.13.0)")
    pytest.importorskip("safetensors", reason="the training script saves with safetensors")
    spec = importlib.util.spec_from_file_location("bitnet_train", TRAIN_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def assert_logits_close(got: np.ndarray, want: np.ndarray):
    """'Float tolerance' for a W1.58A8 network: the two sides agree to float32 rounding until an
    activation lands within rounding noise of an int8 step boundary; then that one element
    moves by one step (1/127 of the row's absmax) and the difference propagates. So: small
    typical error, bounded worst case, same predictions."""
    scale = float(np.abs(want).max())
    d = np.abs(got - want)
    assert np.median(d) <= 2e-3 * scale, (np.median(d), scale)
    assert d.max() <= 3e-2 * scale, (d.max(), scale)
    agree = np.mean(got.argmax(-1) == want.argmax(-1))
    assert agree >= 0.9, agree


def _reference_logits(gguf_path, npz):
    reference = _reference()
    from bitnet_aot.gguf_import import load_gguf
    m = load_gguf(gguf_path)
    out = []
    for seq in npz["tokens"]:
        out.append(reference.Reference(m).forward(seq)[npz["positions"]])
    return np.stack(out)


# ----------------------------------------------------------------------------------------
# A tiny model trained here (a few steps), shared by the tests below
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    T = _load_train_module()
    pytest.importorskip("sentencepiece")
    d = tmp_path_factory.mktemp("tiny_train")
    data = d / "text.txt"
    data.write_text(open(SHAKESPEARE, encoding="utf-8").read()[:60000], encoding="utf-8")
    args = T.parse_args(["--data", str(data), "--out", str(d / "run"), "--vocab", "320", "--n-embd", "256",
                         "--n-layer", "1", "--n-ff", "256", "--n-head", "4", "--n-head-kv", "2",
                         "--ctx", "64", "--batch", "2", "--steps", "4", "--warmup", "2",
                         "--log-every", "100", "--eval-every", "0", "--no-samples"])
    T.train(args, log=lambda s: None)
    return d / "run"


# ----------------------------------------------------------------------------------------
# (a) reference on the converted GGUF == the training script's quantized forward
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("out_type", ["tq2_0", "tq1_0", "i2_s", "f16"])
def test_reference_reproduces_training_forward(trained, tmp_path, out_type):
    out = tmp_path / f"tiny-{out_type}.gguf"
    convert.convert_hf(str(trained / "hf"), str(out), out_type, embd_type="f32")
    npz = np.load(trained / "heldout_logits.npz")
    assert_logits_close(_reference_logits(str(out), npz), npz["logits"])


def test_bundled_model_reproduces_training_forward():
    if not (os.path.isfile(BUNDLED) and os.path.isfile(BUNDLED_NPZ)):
        pytest.skip("examples/shakespeare.gguf or examples/train/heldout_logits.npz is not there")
    npz = np.load(BUNDLED_NPZ)
    assert_logits_close(_reference_logits(BUNDLED, npz), npz["logits"])


def test_converted_metadata(trained, tmp_path):
    out = tmp_path / "m.gguf"
    convert.convert_hf(str(trained / "hf"), str(out), "tq2_0")
    g = GGUFFile(str(out))
    kv = g.kv
    assert kv["general.architecture"] == "bitnet-b1.58"
    assert kv["bitnet-b1.58.hidden_activation"] == "relu2"
    assert kv["tokenizer.ggml.model"] == "llama"
    assert "output.weight" not in g.tensors                      # tied head
    assert g.tensors["token_embd.weight"].type_name == "F16"
    assert g.tensors["blk.0.ffn_down.weight"].type_name == "TQ2_0"
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(trained / "hf" / "tokenizer.model"))
    toks = kv["tokenizer.ggml.tokens"]
    assert toks == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert [int(t) for t in kv["tokenizer.ggml.token_type"][:4]] == [2, 3, 3, 6]   # unk, bos, eos, <0x00>
    assert np.allclose(kv["tokenizer.ggml.scores"], [sp.get_score(i) for i in range(len(toks))])
    assert kv["tokenizer.ggml.bos_token_id"] == sp.bos_id() and kv["tokenizer.ggml.eos_token_id"] == sp.eos_id()
    g.close()


# ----------------------------------------------------------------------------------------
# (b) packed form
# ----------------------------------------------------------------------------------------
def test_pack_layout_matches_transformers_example():
    # The example in transformers' integrations/bitnet.py unpack_weights docstring.
    packed = np.array([[0b10100001, 0b00011000], [0b10010000, 0b00001010]], dtype=np.uint8)
    want = np.array([[0, -1], [-1, 1], [-1, 1], [-1, 1], [1, 0], [0, -1], [1, -1], [1, -1]], dtype=np.int8)
    assert np.array_equal(convert.unpack_2bit(packed), want)
    assert np.array_equal(convert.pack_2bit(want), packed)


def _gguf_tensors(path):
    g = GGUFFile(path)
    out = {n: (t.ggml_type, t.ne, bytes(g.raw(n))) for n, t in g.tensors.items()}
    kv = dict(g.kv)
    g.close()
    return out, kv


@pytest.mark.parametrize("out_type", ["tq2_0", "i2_s"])
def test_packed_roundtrip_identical(trained, tmp_path, out_type):
    packed = convert.pack_hf(str(trained / "hf"), str(tmp_path / "packed"))
    cfg = json.load(open(os.path.join(packed, "config.json")))
    assert cfg["quantization_config"]["quantization_mode"] == "offline"
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    convert.convert_hf(str(trained / "hf"), str(a), out_type)
    convert.convert_hf(packed, str(b), out_type)
    ta, kva = _gguf_tensors(str(a))
    tb, kvb = _gguf_tensors(str(b))
    assert ta.keys() == tb.keys()
    for n in ta:
        assert ta[n] == tb[n], n
    kva.pop("general.name"), kvb.pop("general.name")
    assert kva.keys() == kvb.keys()


def test_packed_bitlinear_scale_direction(trained, tmp_path):
    """linear_class 'bitlinear' divides by weight_scale, 'autobitlinear' multiplies."""
    from bitnet_aot.gguf_import import load_gguf
    convert.convert_hf(str(trained / "hf"), str(tmp_path / "a.gguf"), "i2_s")
    for lc in ("bitlinear", "autobitlinear"):
        p = convert.pack_hf(str(trained / "hf"), str(tmp_path / lc), linear_class=lc)
        st = convert.SafeTensors(os.path.join(p, "model.safetensors"))
        s = float(st.floats("model.layers.0.self_attn.q_proj.weight_scale")[0])
        assert (s > 1) == (lc == "bitlinear")          # trained |W| means are << 1
        convert.convert_hf(p, str(tmp_path / f"{lc}.gguf"), "i2_s")
        ma, mb = load_gguf(str(tmp_path / "a.gguf")), load_gguf(str(tmp_path / f"{lc}.gguf"))
        for La, Lb in zip(ma.layers, mb.layers):
            for (_, wa), (_, wb) in zip(La.projections(), Lb.projections()):
                assert np.array_equal(wa.codes, wb.codes)
                assert wa.scale == pytest.approx(wb.scale, rel=1e-6)


# ----------------------------------------------------------------------------------------
# (c) malformed checkpoints (synthetic, numpy only)
# ----------------------------------------------------------------------------------------
E, F, V = 256, 256, 300


def _spm_model(path):
    spm = pytest.importorskip("sentencepiece")
    txt = path.parent / "spm_text.txt"
    txt.write_text(TEXT, encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(txt), model_prefix=str(path.with_suffix("")), vocab_size=V,
                                   model_type="bpe", byte_fallback=True, minloglevel=2, num_threads=1)
    return path


@pytest.fixture()
def synth(tmp_path):
    """A random master-weight checkpoint (1 layer) in HF layout."""
    rng = np.random.default_rng(0)
    d = tmp_path / "ck"
    d.mkdir()
    cfg = {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
           "hidden_size": E, "intermediate_size": F, "num_hidden_layers": 1, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": V, "max_position_embeddings": 128,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
           "bos_token_id": 1, "eos_token_id": 2}
    (d / "config.json").write_text(json.dumps(cfg))
    t = {"model.embed_tokens.weight": rng.standard_normal((V, E), dtype=np.float32),
         "model.norm.weight": np.ones(E, np.float32)}
    p = "model.layers.0."
    for n, shape in (("self_attn.q_proj", (E, E)), ("self_attn.k_proj", (128, E)), ("self_attn.v_proj", (128, E)),
                     ("self_attn.o_proj", (E, E)), ("mlp.gate_proj", (F, E)), ("mlp.up_proj", (F, E)),
                     ("mlp.down_proj", (E, F))):
        t[p + n + ".weight"] = 0.02 * rng.standard_normal(shape, dtype=np.float32)
    for n, k in (("input_layernorm", E), ("post_attention_layernorm", E), ("self_attn.attn_sub_norm", E),
                 ("mlp.ffn_sub_norm", F)):
        t[p + n + ".weight"] = np.ones(k, np.float32)
    convert.save_safetensors(str(d / "model.safetensors"), t)
    _spm_model(d / "tokenizer.model")
    return d, t, cfg


def _one_line_error(d, out, match):
    with pytest.raises(BitnetError, match=match) as e:
        convert.convert_hf(str(d), str(out), "tq2_0")
    assert "\n" not in str(e.value)


def test_synthetic_converts(synth, tmp_path):
    d, _, _ = synth
    info = convert.convert_hf(str(d), str(tmp_path / "ok.gguf"), "tq1_0")
    assert info["tokenizer"] == "llama"


def test_refuses_missing_tensor(synth, tmp_path):
    d, t, _ = synth
    del t["model.layers.0.mlp.up_proj.weight"]
    convert.save_safetensors(str(d / "model.safetensors"), t)
    _one_line_error(d, tmp_path / "x.gguf", "missing tensor 'model.layers.0.mlp.up_proj.weight'")


def test_refuses_wrong_shape(synth, tmp_path):
    d, t, _ = synth
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((E, E), np.float32)
    convert.save_safetensors(str(d / "model.safetensors"), t)
    _one_line_error(d, tmp_path / "x.gguf", r"k_proj.weight' has shape \[256, 256\], expected \[128, 256\]")


def test_refuses_non_ternary_packed_codes(synth, tmp_path):
    d, _, _ = synth
    p = convert.pack_hf(str(d), str(tmp_path / "packed"))
    st = convert.SafeTensors(os.path.join(p, "model.safetensors"))
    t = {k: np.array(st.array(k)) for k in st.info}
    t["model.layers.0.mlp.gate_proj.weight"][3, 5] = 0xFF
    convert.save_safetensors(os.path.join(p, "model.safetensors"), t)
    _one_line_error(p, tmp_path / "x.gguf", "2-bit value 3, which is not a ternary code")


def test_refuses_packed_without_scale(synth, tmp_path):
    d, _, _ = synth
    p = convert.pack_hf(str(d), str(tmp_path / "packed"))
    st = convert.SafeTensors(os.path.join(p, "model.safetensors"))
    t = {k: np.array(st.array(k)) for k in st.info if not k.endswith("o_proj.weight_scale")}
    convert.save_safetensors(os.path.join(p, "model.safetensors"), t)
    _one_line_error(p, tmp_path / "x.gguf", "missing tensor .*o_proj.weight_scale")


def test_refuses_unknown_model_type(synth, tmp_path):
    d, _, cfg = synth
    (d / "config.json").write_text(json.dumps(dict(cfg, model_type="mamba")))
    _one_line_error(d, tmp_path / "x.gguf", "unsupported model_type 'mamba'")


@pytest.mark.parametrize("missing, match", [("config.json", "missing config.json"),
                                             ("model.safetensors", "no model.safetensors"),
                                             ("tokenizer.model", "no tokenizer")])
def test_refuses_missing_files(synth, tmp_path, missing, match):
    d, _, _ = synth
    os.remove(d / missing)
    _one_line_error(d, tmp_path / "x.gguf", match)


def test_refuses_truncated_safetensors(synth, tmp_path):
    d, _, _ = synth
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(d, tmp_path / "x.gguf", "inconsistent offsets")


def test_refuses_bad_type_and_row_length(synth, tmp_path):
    d, _, cfg = synth
    with pytest.raises(BitnetError, match="unknown output type"):
        convert.convert_hf(str(d), str(tmp_path / "x.gguf"), "q4_0")
    # 128-wide rows cannot be TQ blocks
    shutil.rmtree(d)
    d.mkdir()
    rng = np.random.default_rng(1)
    cfg = dict(cfg, hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1)
    (d / "config.json").write_text(json.dumps(cfg))
    t = {"model.embed_tokens.weight": rng.standard_normal((V, 128), dtype=np.float32),
         "model.norm.weight": np.ones(128, np.float32)}
    p = "model.layers.0."
    for n, shape in (("self_attn.q_proj", (128, 128)), ("self_attn.k_proj", (64, 128)), ("self_attn.v_proj", (64, 128)),
                     ("self_attn.o_proj", (128, 128)), ("mlp.gate_proj", (256, 128)), ("mlp.up_proj", (256, 128)),
                     ("mlp.down_proj", (128, 256))):
        t[p + n + ".weight"] = rng.standard_normal(shape, dtype=np.float32)
    for n, k in (("input_layernorm", 128), ("post_attention_layernorm", 128), ("self_attn.attn_sub_norm", 128),
                 ("mlp.ffn_sub_norm", 256)):
        t[p + n + ".weight"] = np.ones(k, np.float32)
    convert.save_safetensors(str(d / "model.safetensors"), t)
    _spm_model(d / "tokenizer.model")
    _one_line_error(d, tmp_path / "x.gguf", "not a multiple of 256")
    convert.convert_hf(str(d), str(tmp_path / "ok.gguf"), "i2_s")     # I2_S only needs 128


# ----------------------------------------------------------------------------------------
# Tokenizers: tokenizer.json (byte-level BPE) and tiktoken rank files
# ----------------------------------------------------------------------------------------
def test_tokenizer_json_bpe(synth, tmp_path):
    d, _, cfg = synth
    os.remove(d / "tokenizer.model")
    b2u = convert.bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["Ġt"], vocab["he"], vocab["Ġthe"] = 256, 257, 258
    tj = {"model": {"type": "BPE", "vocab": vocab, "merges": ["Ġ t", "h e", "Ġt he"]},
          "added_tokens": [{"id": 259, "content": "<|begin_of_text|>", "special": True},
                           {"id": 260, "content": "<|end_of_text|>", "special": True},
                           {"id": 261, "content": "<|eot_id|>", "special": True}],
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": convert._LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    (d / "config.json").write_text(json.dumps(dict(cfg, bos_token_id=259, eos_token_id=[260, 261])))
    convert.convert_hf(str(d), str(tmp_path / "bpe.gguf"), "tq2_0")
    g = GGUFFile(str(tmp_path / "bpe.gguf"))
    kv = g.kv
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "llama-bpe"
    assert kv["tokenizer.ggml.merges"] == ["Ġ t", "h e", "Ġt he"]
    assert kv["tokenizer.ggml.bos_token_id"] == 259 and kv["tokenizer.ggml.eos_token_id"] == 260
    assert kv["tokenizer.ggml.eot_token_id"] == 261
    assert len(kv["tokenizer.ggml.tokens"]) == V and kv["tokenizer.ggml.tokens"][262] == "[PAD262]"
    assert [int(x) for x in kv["tokenizer.ggml.token_type"][258:263]] == [1, 3, 3, 3, 5]
    g.close()


def test_tiktoken_merges_2b4t():
    """The 2B-4T tokenizer.model is a tiktoken rank file; the recovered merges are LLaMA-3's."""
    kv = convert.tokenizer_from_tiktoken(TIKTOKEN_2B4T, {"V": 128256, "bos": 128000, "eos": 128001}, {})
    assert len(kv["tokenizer.ggml.merges"]) == 280147            # as in LLaMA-3's tokenizer.json
    assert kv["tokenizer.ggml.merges"][:5] == ["Ġ Ġ", "Ġ ĠĠĠ", "ĠĠ ĠĠ", "ĠĠĠ Ġ", "i n"]
    toks = kv["tokenizer.ggml.tokens"]
    assert toks[128000] == "<|begin_of_text|>" and toks[128009] == "<|eot_id|>"
    assert kv["tokenizer.ggml.pre"] == "llama-bpe" and kv["tokenizer.ggml.eot_token_id"] == (4, 128009)


# ----------------------------------------------------------------------------------------
# model_type llama with quantization_config bitnet (Falcon3-*-1.58bit, Llama3-8B-1.58)
# ----------------------------------------------------------------------------------------
def _hf_llama_forward(t, cfg, tokens):
    """float64 forward with transformers' semantics, from the checkpoint's own tensors:
    BitLinear W = codes / weight_scale with per-token absmax int8 activations, rotate-half
    RoPE on the unpermuted q/k rows, SiLU FFN, untied lm_head. Shares no code with
    bitnet_aot.reference or the converter's permutation."""
    E, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D, T, eps = cfg["head_dim"], len(tokens), cfg["rms_norm_eps"]

    def unpack(p):   # transformers' layout, written out again: bit pair i holds row block i
        rows = p.shape[0]
        return np.concatenate([((p >> (2 * i)) & 3).astype(np.int64) - 1 for i in range(4)], axis=0).reshape(4 * rows, -1)

    def lin(x, name):
        w = unpack(t[name + ".weight"]).astype(np.float64) / float(t[name + ".weight_scale"].reshape(-1)[0])
        x32 = x.astype(np.float32)
        s = np.float32(127) / np.maximum(np.abs(x32).max(-1, keepdims=True), np.float32(1e-5))
        xq = np.clip(np.rint(x32 * s), -128, 127).astype(np.float64) / s.astype(np.float64)
        return xq @ w.T

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    inv = cfg["rope_theta"] ** (-np.arange(0, D, 2) / D)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1))[:, None, :], np.sin(np.concatenate([ang, ang], -1))[:, None, :]

    def rope(x):
        rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1)
        return x * cos + rot * sin

    x = t["model.embed_tokens.weight"][np.asarray(tokens)].astype(np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = norm(x, t[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").reshape(T, H, D))
        k = np.repeat(rope(lin(h, p + "self_attn.k_proj").reshape(T, Hkv, D)), H // Hkv, axis=1)
        v = np.repeat(lin(h, p + "self_attn.v_proj").reshape(T, Hkv, D), H // Hkv, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(D) + mask
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        x = x + lin(np.einsum("hts,shd->thd", pr, v).reshape(T, H * D), p + "self_attn.o_proj")
        h = norm(x, t[p + "post_attention_layernorm.weight"])
        g, u = lin(h, p + "mlp.gate_proj"), lin(h, p + "mlp.up_proj")
        x = x + lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj")
    return norm(x, t["model.norm.weight"]) @ t["lm_head.weight"].astype(np.float64).T


def _falcon3_style_checkpoint(d, rng, n_layer=2):
    """Laid out as tiiuae/Falcon3-*-1.58bit publishes: LlamaForCausalLM config with head_dim,
    is_bitnet_config and quantization_config {quant_method: bitnet, modules_to_not_convert:
    [lm_head]}; one model.safetensors with packed uint8 projections [out/4, in], a scalar
    weight_scale per projection, float norms, embedding and an untied lm_head; tokenizer.json."""
    E, F_, H, Hkv, D, V_ = 256, 512, 4, 2, 64, 262
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "hidden_size": E, "intermediate_size": F_, "num_hidden_layers": n_layer, "num_attention_heads": H,
           "num_key_value_heads": Hkv, "head_dim": D, "vocab_size": V_, "max_position_embeddings": 128,
           "rms_norm_eps": 1e-6, "rope_theta": 1000042, "tie_word_embeddings": False, "is_bitnet_config": True,
           "eos_token_id": 260, "bos_token_id": 259,
           "quantization_config": {"modules_to_not_convert": ["lm_head"], "quant_method": "bitnet"}}
    (d / "config.json").write_text(json.dumps(cfg))
    t = {"model.embed_tokens.weight": rng.standard_normal((V_, E)).astype(np.float32),
         "lm_head.weight": (0.5 * rng.standard_normal((V_, E))).astype(np.float32),
         "model.norm.weight": (1 + 0.1 * rng.standard_normal(E)).astype(np.float32)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        for n, shape in (("self_attn.q_proj", (H * D, E)), ("self_attn.k_proj", (Hkv * D, E)),
                         ("self_attn.v_proj", (Hkv * D, E)), ("self_attn.o_proj", (E, H * D)),
                         ("mlp.gate_proj", (F_, E)), ("mlp.up_proj", (F_, E)), ("mlp.down_proj", (E, F_))):
            codes = rng.integers(-1, 2, shape).astype(np.int8)
            t[p + n + ".weight"] = convert.pack_2bit(codes)
            # BitLinear divides by weight_scale: ~ sqrt(fan-in) keeps activations O(1)
            t[p + n + ".weight_scale"] = np.array([np.sqrt(shape[1]) * (0.8 + 0.4 * rng.random())], np.float32)
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[p + n + ".weight"] = (1 + 0.1 * rng.standard_normal(E)).astype(np.float32)
    convert.save_safetensors(str(d / "model.safetensors"), t)
    b2u = convert.bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["Ġt"], vocab["he"], vocab["Ġthe"] = 256, 257, 258
    tj = {"model": {"type": "BPE", "vocab": vocab, "merges": ["Ġ t", "h e", "Ġt he"]},
          "added_tokens": [{"id": 259, "content": "<|begin_of_text|>", "special": True},
                           {"id": 260, "content": "<|endoftext|>", "special": True}],
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": convert._LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    return t, cfg


def test_falcon3_style_llama_bitnet_checkpoint_converts_exactly(tmp_path):
    from bitnet_aot.gguf_import import load_gguf
    reference = _reference()
    d = tmp_path / "falcon3"
    d.mkdir()
    t, cfg = _falcon3_style_checkpoint(d, np.random.default_rng(11))
    out = tmp_path / "f3.gguf"
    # i2_s: its scale is float32, so W = codes / weight_scale survives exactly (TQ types store
    # the scale as float16 d)
    info = convert.convert_hf(str(d), str(out), "i2_s", embd_type="f32")
    assert info["hparams"]["arch"] == "llama"
    g = GGUFFile(str(out))
    assert g.kv["general.architecture"] == "llama" and "output.weight" in g.tensors
    assert "blk.0.attn_sub_norm.weight" not in g.tensors and g.kv["llama.rope.freq_base"] == 1000042.0
    g.close()
    m = load_gguf(str(out))
    assert m.hp.family == "llama" and m.hp.rope_style == "norm" and not m.hp.tied_head
    assert m.hp.activation == "silu"
    toks = list(np.random.default_rng(5).integers(0, cfg["vocab_size"], 20))
    got = reference.Reference(m, kv="f32").forward(toks)
    want = _hf_llama_forward(t, cfg, toks)
    assert_logits_close(got, want)
    # the permutation matters: without it (q/k rows in HF order) the logits are different
    from bitnet_aot.convert import llama_permute
    for L in m.layers:
        L.wq.codes = llama_permute(L.wq.codes, 4)   # permuting twice is not the identity: wrong order
    bad = reference.Reference(m, kv="f32").forward(toks)
    assert np.abs(bad - want).max() > 10 * np.abs(got - want).max()


def test_llama_checkpoint_without_bitnet_quantization_is_refused(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    _, cfg = _falcon3_style_checkpoint(d, np.random.default_rng(1), n_layer=1)
    cfg.pop("quantization_config")
    cfg.pop("is_bitnet_config")
    (d / "config.json").write_text(json.dumps(cfg))
    _one_line_error(d, tmp_path / "x.gguf", "not a ternary model")
