"""Published ternary models: their configurations as data, with where each number came from.

One row per model a user can download. `make-test-model --shape NAME` writes a random-weight
GGUF of exactly this shape (factory.make_shape_model), so every published configuration
can be built, inspected and checked against the reference without downloading it.

Fields (HF config.json names in brackets):
  hf_repo        the Hugging Face repository of the ternary model
  arch           GGUF general.architecture the model is (or would be) converted to
  n_embd [hidden_size], n_layer [num_hidden_layers], n_ff [intermediate_size],
  n_head [num_attention_heads], n_head_kv [num_key_value_heads],
  head_dim [head_dim; E / H when absent], n_vocab [vocab_size],
  n_ctx [max_position_embeddings], rope_base [rope_theta], rope_scaling [rope_scaling],
  rope_yarn      (factor, original_max_position_embeddings) of a published YaRN rope_scaling:
                 the factory writes them as <arch>.rope.scaling.*; None (or absent) when the
                 model has no scaling or its values were not found
  norm_eps [rms_norm_eps], tied [tie_word_embeddings]
  activation     relu2 / silu [hidden_act]
  qk_norm        per-head RMSNorm of q and k before RoPE (Qwen3)
  tokenizer      vocabulary family: llama3 (BPE, LLaMA-3 regex), falcon3 (BPE, llama.cpp's
                 falcon3 = LLaMA-3 regex), qwen2 (BPE, Qwen2 regex), llama-spm (SentencePiece)
  specials       {token id: text} of the special tokens the factory places at their ids
  bos, eos, eot  ids (-1: none) [bos_token_id, eos_token_id; eot from the chat template]
  chat           chat template family (what runtime_c/text/chat.c detects), or None
  weights        how the published checkpoint stores the ternary weights
  source         where the numbers were read (config.json / generation_config.json pages)
  verified       False when no config.json was found: the row is then not offered as a shape
  notes          anything a user must know

Numbers were read from the pages named in `source` (found with the search tool of the
session that wrote this table, 2026-12-01) and checked by hand; none is guessed. Rows whose
config could not be found say so.
"""
from __future__ import annotations

_LLAMA3_SPECIALS = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128009: "<|eot_id|>"}
_QWEN_SPECIALS = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>"}
_FALCON3_SPECIALS = {11: "<|endoftext|>"}
_SPM_SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>", 32000: "<pad>", 32001: "</line>"}

_HF = "https://huggingface.co/"

PUBLISHED = {
    "bitnet-b1.58-2b-4t": dict(
        hf_repo="microsoft/BitNet-b1.58-2B-4T", arch="bitnet-b1.58",
        n_embd=2560, n_layer=30, n_ff=6912, n_head=20, n_head_kv=5, head_dim=128, n_vocab=128256,
        n_ctx=4096, rope_base=500000.0, rope_scaling=None, norm_eps=1e-5, tied=True,
        activation="relu2", qk_norm=False, tokenizer="llama3", specials=_LLAMA3_SPECIALS,
        bos=128000, eos=128001, eot=128009, chat="bitnet",
        weights="packed uint8 (4 codes per byte) + weight_scale per tensor; official GGUF I2_S",
        source="shared/docs/FORMATS.md section 2 (config.json of microsoft/BitNet-b1.58-2B-4T)",
        verified=True, notes="sub-norms; tied F16 head"),
    "bitnet_b1_58-large": dict(
        hf_repo="1bitLLM/bitnet_b1_58-large", arch="bitnet",
        n_embd=1536, n_layer=24, n_ff=4096, n_head=16, n_head_kv=16, head_dim=96, n_vocab=32002,
        n_ctx=2048, rope_base=10000.0, rope_scaling=None, norm_eps=1e-5, tied=True,
        activation="silu", qk_norm=False, tokenizer="llama-spm", specials=_SPM_SPECIALS,
        bos=1, eos=2, eot=-1, chat=None,
        weights="float master weights (absmean-ternarized in the forward pass)",
        source=_HF + "1bitLLM/bitnet_b1_58-large/blame/85d047191dcb224f0e04f20d26110caaf8dc1a47/config.json",
        verified=True, notes="BitnetForCausalLM: llama.cpp's 'bitnet' graph (sub-norms, SiLU); "
                             "<pad> 32000 and </line> 32001 added to LLaMA's SentencePiece vocabulary"),
    "bitnet_b1_58-3b": dict(
        hf_repo="1bitLLM/bitnet_b1_58-3B", arch="bitnet",
        n_embd=3200, n_layer=26, n_ff=8640, n_head=32, n_head_kv=32, head_dim=100, n_vocab=32002,
        n_ctx=2048, rope_base=10000.0, rope_scaling=None, norm_eps=1e-5, tied=True,
        activation="silu", qk_norm=False, tokenizer="llama-spm", specials=_SPM_SPECIALS,
        bos=1, eos=2, eot=-1, chat=None,
        weights="float master weights (absmean-ternarized in the forward pass)",
        source=_HF + "1bitLLM/bitnet_b1_58-3B/blame/main/config.json",
        verified=True, notes="E = 3200 and F = 8640 are not multiples of 256: TQ1_0/TQ2_0 cannot store "
                             "these rows, I2_S and F16 can (the factory writes I2_S)"),
    "llama3-8b-1.58-100b-tokens": dict(
        hf_repo="HF1BitLLM/Llama3-8B-1.58-100B-tokens", arch="llama",
        n_embd=4096, n_layer=32, n_ff=14336, n_head=32, n_head_kv=8, head_dim=128, n_vocab=128256,
        n_ctx=8192, rope_base=500000.0, rope_scaling=None, norm_eps=1e-5, tied=False,
        activation="silu", qk_norm=False, tokenizer="llama3", specials=_LLAMA3_SPECIALS,
        bos=128000, eos=128009, eot=128009, chat="llama3",
        weights="packed uint8 + weight_scale (transformers BitNet quantization), 3.85 GB model.safetensors",
        source=_HF + "HF1BitLLM/Llama3-8B-1.58-100B-tokens/blob/refs%2Fpr%2F2/generation_config.json "
                     "(bos 128000, eos 128009); widths of its base Meta-Llama-3-8B-Instruct (the repository's "
                     "config.json was not in the searchable sources)",
        verified=True, notes="Llama 3 (not 3.1): no rope_scaling"),
    "falcon3-1b-instruct-1.58bit": dict(
        hf_repo="tiiuae/Falcon3-1B-Instruct-1.58bit", arch="llama",
        n_embd=2048, n_layer=18, n_ff=8192, n_head=8, n_head_kv=4, head_dim=256, n_vocab=131072,
        n_ctx=8192, rope_base=1000042.0, rope_scaling=None, norm_eps=1e-6, tied=False,
        activation="silu", qk_norm=False, tokenizer="falcon3", specials=_FALCON3_SPECIALS,
        bos=-1, eos=11, eot=-1, chat="falcon3",
        weights="packed uint8 + weight_scale (quant_method bitnet); lm_head not converted",
        source=_HF + "tiiuae/Falcon3-1B-Instruct-1.58bit/blob/b932224b67d2b686e9e687fd74a6179476e037eb/config.json",
        verified=True, notes="no bos_token_id in config.json"),
    "falcon3-3b-instruct-1.58bit": dict(
        hf_repo="tiiuae/Falcon3-3B-Instruct-1.58bit", arch="llama",
        n_embd=3072, n_layer=22, n_ff=9216, n_head=12, n_head_kv=4, head_dim=256, n_vocab=131072,
        n_ctx=4096, rope_base=1000042.0, rope_scaling=None, norm_eps=1e-6, tied=False,
        activation="silu", qk_norm=False, tokenizer="falcon3", specials=_FALCON3_SPECIALS,
        bos=11, eos=11, eot=-1, chat="falcon3",
        weights="packed uint8 + weight_scale (quant_method bitnet); lm_head not converted",
        source=_HF + "tiiuae/Falcon3-3B-Base-1.58bit/blame/a7bb5926d5d60c748cc23ee05e9dace4a9280970/config.json "
                     "(the Base-1.58bit config; the Instruct model is the same network)",
        verified=True, notes="F = 9216 = 36 x 256"),
    "falcon3-7b-instruct-1.58bit": dict(
        hf_repo="tiiuae/Falcon3-7B-Instruct-1.58bit", arch="llama",
        n_embd=3072, n_layer=28, n_ff=23040, n_head=12, n_head_kv=4, head_dim=256, n_vocab=131072,
        n_ctx=8192, rope_base=1000042.0, rope_scaling=None, norm_eps=1e-6, tied=False,
        activation="silu", qk_norm=False, tokenizer="falcon3", specials=_FALCON3_SPECIALS,
        bos=11, eos=11, eot=-1, chat="falcon3",
        weights="packed uint8 + weight_scale (quant_method bitnet); lm_head not converted",
        source=_HF + "tiiuae/Falcon3-7B-Base-1.58bit/blob/d99c91438ae364785ca956a74d6f40b920661ed3/config.json "
                     "(the Base-1.58bit config; the Instruct model is the same network)",
        verified=True, notes=""),
    "falcon3-10b-instruct-1.58bit": dict(
        hf_repo="tiiuae/Falcon3-10B-Instruct-1.58bit", arch="llama",
        n_embd=3072, n_layer=40, n_ff=23040, n_head=12, n_head_kv=4, head_dim=256, n_vocab=131072,
        n_ctx=32768, rope_base=1000042.0, rope_scaling=None, norm_eps=1e-6, tied=False,
        activation="silu", qk_norm=False, tokenizer="falcon3", specials=_FALCON3_SPECIALS,
        bos=1, eos=11, eot=-1, chat="falcon3",
        weights="packed uint8 + weight_scale (quant_method bitnet); lm_head not converted",
        source=_HF + "tiiuae/Falcon3-10B-Base-1.58bit/blob/af04ff884ece860d516af1677aa93ea10a527729/config.json "
                     "(the Base-1.58bit config; the Instruct model is the same network)",
        verified=True, notes="bos_token_id 1 in this config (11 in the smaller ones)"),
    "falcon-e-1b": dict(
        hf_repo="tiiuae/Falcon-E-1B-Instruct", arch="bitnet-25", verified=False,
        source="not found: no config.json of tiiuae/Falcon-E-1B-* was in the searchable sources "
               "(only the model card, which gives no widths)",
        notes="published as BitNet checkpoints and bitnet.cpp I2_S GGUFs (Falcon-E-*-GGUF)"),
    "falcon-e-3b": dict(
        hf_repo="tiiuae/Falcon-E-3B-Instruct", arch="bitnet-25", verified=False,
        source="not found: no config.json of tiiuae/Falcon-E-3B-* was in the searchable sources",
        notes="published as BitNet checkpoints and bitnet.cpp I2_S GGUFs (Falcon-E-*-GGUF)"),
    "ternary-bonsai-1.7b": dict(
        hf_repo="prism-ml/Ternary-Bonsai-1.7B-gguf", arch="qwen3",
        n_embd=2048, n_layer=28, n_ff=6144, n_head=16, n_head_kv=8, head_dim=128, n_vocab=151936,
        n_ctx=40960, rope_base=1000000.0, rope_scaling=None, norm_eps=1e-6, tied=True,
        activation="silu", qk_norm=True, tokenizer="qwen2", specials=_QWEN_SPECIALS,
        bos=-1, eos=151645, eot=151645, chat="chatml",
        weights="GGUF Q2_0 with 128-weight groups (PrismML's fork of id 42), one fp16 scale per group",
        source="base model Qwen/Qwen3-1.7B (model card of prism-ml/Ternary-Bonsai-*-gguf: 'Base model "
               "Qwen3-*'); Qwen3-1.7B config.json values",
        verified=True, notes="group scales vary inside a tensor: run block-scaled (kernels/i2sg.h); "
                             "make-test-model --shape writes one scale per tensor"),
    "ternary-bonsai-4b": dict(
        hf_repo="prism-ml/Ternary-Bonsai-4B-gguf", arch="qwen3",
        n_embd=2560, n_layer=36, n_ff=9728, n_head=32, n_head_kv=8, head_dim=128, n_vocab=151936,
        n_ctx=32768, rope_base=1000000.0, rope_scaling=None, norm_eps=1e-6, tied=True,
        activation="silu", qk_norm=True, tokenizer="qwen2", specials=_QWEN_SPECIALS,
        bos=-1, eos=151645, eot=151645, chat="chatml",
        weights="GGUF Q2_0 with 128-weight groups (PrismML's fork of id 42), one fp16 scale per group",
        source=_HF + "MultiRL/qwen3_4b_instruct_sft/blob/main/config.json (a Qwen3-4B config.json copy) and "
                     "dev.modelhub.org.cn/prism-ml/Ternary-Bonsai-4B-gguf (32 q / 8 kv heads, 36 layers, "
                     "32,768 context, vocab 151,936)",
        verified=True, notes="head_dim 128 x 32 heads = 4096 != E 2560"),
    "ternary-bonsai-8b": dict(
        hf_repo="prism-ml/Ternary-Bonsai-8B-gguf", arch="qwen3",
        n_embd=4096, n_layer=36, n_ff=12288, n_head=32, n_head_kv=8, head_dim=128, n_vocab=151936,
        n_ctx=65536, rope_base=1000000.0,
        rope_scaling="yarn, factor and original context not published in any source found (see notes)",
        rope_yarn=None, norm_eps=1e-6, tied=False,
        activation="silu", qk_norm=True, tokenizer="qwen2", specials=_QWEN_SPECIALS,
        bos=-1, eos=151645, eot=151645, chat="chatml",
        weights="GGUF Q2_0 with 128-weight groups (PrismML's fork of id 42), one fp16 scale per group",
        source="llmsreview.com/models/prism-ml--ternary-bonsai-8b-gguf (model card: base Qwen3-8B, 36 layers, "
               "32 q / 8 kv heads, 65,536 context, vocab 151,936, ternary embeddings and LM head); widths "
               "of Qwen3-8B",
        verified=True, notes="the card's 65,536 context implies YaRN scaling, but "
                             "neither its config.json nor its GGUF metadata was in the searchable sources "
                             "(searched 2026-12-03: the card pages at dev.modelhub.org.cn and llmsreview.com "
                             "give the context only). A third-party repack, vinpix/Bonsai-8B-TQ-GGUF (page "
                             "mirrored at kk6lht.com/vinpix/Bonsai-8B-TQ-GGUF), says it has 'RoPE/YaRN scaling "
                             "removed (native context up to 16k)', which suggests original context 16,384 and "
                             "factor 4; unconfirmed, so the shape writes no scaling keys. bitnet-aot implements "
                             "YaRN: make-test-model --shape ternary-bonsai-8b --rope-scaling yarn --rope-factor F "
                             "--rope-orig-ctx N writes them"),
}


def shape_names() -> list:
    return sorted(k for k, v in PUBLISHED.items() if v.get("verified"))


def get(name: str) -> dict:
    key = name.lower()
    if key == "2b4t":
        key = "bitnet-b1.58-2b-4t"
    row = PUBLISHED.get(key)
    if row is None or not row.get("verified"):
        why = f" ({row['source']})" if row else ""
        raise KeyError(f"no published configuration {name!r}{why}; known: {', '.join(shape_names())}")
    return row
