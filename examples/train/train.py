#!/usr/bin/env python3
"""Train a small BitNet b1.58 model on Tiny Shakespeare, on the CPU, with one thread.

The graph is the one bitnet-aot compiles (shared/docs/FORMATS.md section 2, `bitnet-b1.58`):
LLaMA layout, GQA, NEOX RoPE, sub-norms before o_proj and down_proj, squared-ReLU gated FFN,
tied embeddings. Every projection (q, k, v, o, gate, up, down) is quantization-aware
(FORMATS.md section 1) in the forward pass:

  weights      s = 1/max(mean|W|, 1e-5), codes = clamp(round(W*s), -1, 1), ws = 1/s
  activations  as = 127/max(max|x|, 1e-5) per token, q = clamp(round(x*as), -128, 127)
  output       y = (q . codes) / as * ws

with straight-through gradients for both roundings. One deliberate detail: `ws` is rounded to
float16 in the forward pass (the precision TQ1_0/TQ2_0 store their scale in), so the converted
GGUF reproduces this script's logits exactly rather than to 5e-4. config.json records it as
`"weight_scale_precision": "float16"` and `bitnet_aot.convert` honours it for every output type.
Embedding, head and norms stay in float32.

Output: a Hugging Face style checkpoint directory (config.json `BitNetForCausalLM`,
model.safetensors with float32 master weights, tokenizer.model), plus `heldout_logits.npz`
holding this script's own quantized-forward logits on held-out text for tests.

    python examples/train/train.py --out examples/train/runs/shakespeare
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "tinyshakespeare.txt"))


# ----------------------------------------------------------------------------------------
# Quantization-aware building blocks
# ----------------------------------------------------------------------------------------
def weight_absmean(w: torch.Tensor):
    """-> (codes f32 in {-1,0,1}, ws f32 scalar tensor). The mean is taken in float64 and
    rounded to float32 so that numpy (bitnet_aot.convert) gets bit-identical codes."""
    m = w.detach().abs().double().mean().float()
    s = 1.0 / torch.clamp(m, min=1e-5)                       # float32 division
    codes = torch.clamp(torch.round(w.detach() * s), -1, 1)
    ws = (1.0 / s).half().float()                              # float16 scale, see docstring
    return codes, ws


def act_absmax(x: torch.Tensor) -> torch.Tensor:
    """Per-token int8 quantize-dequantize: q/as with as = 127/max|x|."""
    a_s = 127.0 / torch.clamp(x.detach().abs().amax(dim=-1, keepdim=True), min=1e-5)
    return torch.clamp(torch.round(x.detach() * a_s), -128, 127) / a_s


class BitLinear(nn.Linear):
    """nn.Linear without bias whose forward pass is BitNet b1.58 W1.58A8 (with STE)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out, bias=False)

    def forward(self, x):
        codes, ws = weight_absmean(self.weight)
        w = self.weight + (codes * ws - self.weight).detach()
        xq = x + (act_absmax(x) - x).detach()
        return F.linear(xq, w)


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        E, F_, H, Hkv = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"]
        D = E // H
        eps = c["rms_norm_eps"]
        self.H, self.Hkv, self.D = H, Hkv, D
        self.input_layernorm = RMSNorm(E, eps)
        self.q_proj, self.k_proj = BitLinear(E, H * D), BitLinear(E, Hkv * D)
        self.v_proj, self.o_proj = BitLinear(E, Hkv * D), BitLinear(H * D, E)
        self.attn_sub_norm = RMSNorm(E, eps)
        self.post_attention_layernorm = RMSNorm(E, eps)
        self.gate_proj, self.up_proj = BitLinear(E, F_), BitLinear(E, F_)
        self.down_proj = BitLinear(F_, E)
        self.ffn_sub_norm = RMSNorm(F_, eps)

    def forward(self, x, cos, sin):
        B, T, E = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        g = self.H // self.Hkv
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = a.transpose(1, 2).reshape(B, T, self.H * self.D)
        x = x + self.o_proj(self.attn_sub_norm(a))
        h = self.post_attention_layernorm(x)
        f = F.relu(self.gate_proj(h)).square() * self.up_proj(h)
        return x + self.down_proj(self.ffn_sub_norm(f))


class BitNetLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        D = c["hidden_size"] // c["num_attention_heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        ang = torch.arange(c["max_position_embeddings"], dtype=torch.float64)[:, None] * inv[None, :]
        ang = torch.cat([ang, ang], dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.embed_tokens(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for L in self.layers:
            x = L(x, cos, sin)
        return F.linear(self.norm(x), self.embed_tokens.weight)   # tied head

    def hf_state_dict(self):
        """Parameter names as in HF transformers' BitNetForCausalLM."""
        out = {"model.embed_tokens.weight": self.embed_tokens.weight, "model.norm.weight": self.norm.weight}
        for i, L in enumerate(self.layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = L.input_layernorm.weight
            out[p + "post_attention_layernorm.weight"] = L.post_attention_layernorm.weight
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[p + f"self_attn.{n}.weight"] = getattr(L, n).weight
            out[p + "self_attn.attn_sub_norm.weight"] = L.attn_sub_norm.weight
            for n in ("gate_proj", "up_proj", "down_proj"):
                out[p + f"mlp.{n}.weight"] = getattr(L, n).weight
            out[p + "mlp.ffn_sub_norm.weight"] = L.ffn_sub_norm.weight
        return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def hf_config(vocab, E, n_layer, F_, H, Hkv, ctx, bos, eos, rope_theta=10000.0, eps=1e-5):
    return {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_act": "relu2",
        "hidden_size": E,
        "intermediate_size": F_,
        "num_hidden_layers": n_layer,
        "num_attention_heads": H,
        "num_key_value_heads": Hkv,
        "head_dim": E // H,
        "vocab_size": vocab,
        "max_position_embeddings": ctx,
        "rms_norm_eps": eps,
        "rope_theta": rope_theta,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "initializer_range": 0.02,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
        "use_cache": True,
        # master weights, ternarized on the fly (like microsoft/bitnet-b1.58-2B-4T-bf16)
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "online"},
        "weight_scale_precision": "float16",
    }


# ----------------------------------------------------------------------------------------
# Data and tokenizer
# ----------------------------------------------------------------------------------------
def split_text(path: str):
    text = open(path, encoding="utf-8").read()
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def train_tokenizer(train_text: str, prefix: str, vocab: int):
    """SentencePiece BPE with byte fallback, trained on the training split only. Identity
    normalization and no whitespace collapsing, so pieces are the raw text (what a
    llama.cpp-style SPM tokenizer reproduces); newlines become the byte piece <0x0A>."""
    import sentencepiece as spm
    tmp = prefix + ".train.txt"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(train_text)
    spm.SentencePieceTrainer.train(
        input=tmp, model_prefix=prefix, vocab_size=vocab, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, max_sentence_length=1 << 14, num_threads=1, minloglevel=2,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    os.remove(tmp)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def encode(sp, text: str) -> np.ndarray:
    return np.asarray(sp.encode(text), dtype=np.int64)


# ----------------------------------------------------------------------------------------
# Evaluation: non-overlapping windows of ctx tokens, each fed as [BOS] + window[:-1] and
# scored on every position (the first token is predicted from BOS alone).
# ----------------------------------------------------------------------------------------
def windows(tokens: np.ndarray, ctx: int, bos: int):
    n = len(tokens) // ctx
    w = torch.from_numpy(tokens[: n * ctx].reshape(n, ctx))
    x = torch.cat([torch.full((n, 1), bos, dtype=torch.long), w[:, :-1]], dim=1)
    return x, w


@torch.no_grad()
def evaluate(model, tokens, ctx, bos, batch=8, max_windows=None):
    model.eval()
    x, y = windows(tokens, ctx, bos)
    if max_windows:
        x, y = x[:max_windows], y[:max_windows]
    tot, n = 0.0, 0
    tot_half, n_half = 0.0, 0
    for i in range(0, len(x), batch):
        lg = model(x[i:i + batch])
        nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y[i:i + batch].reshape(-1), reduction="none")
        nll = nll.view(lg.shape[0], -1).double()
        tot += nll.sum().item()
        n += nll.numel()
        tot_half += nll[:, ctx // 2:].sum().item()
        n_half += nll[:, ctx // 2:].numel()
    model.train()
    return tot / n, tot_half / n_half, len(x)


@torch.no_grad()
def sample(model, sp, prompt, n, ctx, bos, temperature=0.8, top_k=40, greedy=False, seed=0):
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = [bos] + sp.encode(prompt)
    for _ in range(n):
        lg = model(torch.tensor([ids[-ctx:]]))[0, -1]
        if greedy:
            t = int(lg.argmax())
        else:
            lg = lg / temperature
            v, ix = torch.topk(lg, top_k)
            p = torch.softmax(v, -1)
            t = int(ix[torch.multinomial(p, 1, generator=g)])
        ids.append(t)
    model.train()
    return sp.decode(ids[1:])


# ----------------------------------------------------------------------------------------
# Checkpoint
# ----------------------------------------------------------------------------------------
def save_checkpoint(model, config, sp_model_path, out_dir):
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file(model.hf_state_dict(), os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(sp_model_path, os.path.join(out_dir, "tokenizer.model"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                   "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "legacy": True, "model_max_length": config["max_position_embeddings"]}, f, indent=2)


@torch.no_grad()
def heldout_logits(model, tokens, bos, n_seq=2, length=64, positions=(0, 1, 7, 15, 31, 47, 62, 63)):
    """The script's own quantized-forward logits on held-out text, for tests: each sequence
    is [BOS] + `length-1` held-out tokens; logits kept at `positions` only (to stay small)."""
    model.eval()
    seqs = []
    for i in range(n_seq):
        start = i * 1000
        seqs.append([bos] + tokens[start:start + length - 1].tolist())
    seqs = torch.tensor(seqs)
    lg = model(seqs)
    pos = np.asarray(positions, dtype=np.int64)
    model.train()
    return {"tokens": seqs.numpy().astype(np.int32), "positions": pos,
            "logits": lg[:, pos, :].numpy().astype(np.float32)}


def load_checkpoint(hf_dir: str):
    """BitNetLM from a checkpoint written by save_checkpoint (master weights)."""
    from safetensors.torch import load_file
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    model = BitNetLM(cfg)
    sd = load_file(os.path.join(hf_dir, "model.safetensors"))
    mine = model.hf_state_dict()
    if set(sd) != set(mine):
        raise SystemExit(f"{hf_dir}: tensor names differ from this script's model")
    with torch.no_grad():
        named = dict(model.named_parameters())
        for k in mine:
            # hf name -> module parameter name
            n = k.replace("model.", "", 1).replace("self_attn.", "").replace("mlp.", "")
            named[n].copy_(sd[k])
    return model, cfg


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------
def build(args, vocab, bos, eos):
    cfg = hf_config(vocab, args.n_embd, args.n_layer, args.n_ff, args.n_head, args.n_head_kv,
                    args.ctx, bos, eos)
    return BitNetLM(cfg), cfg


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def train(args, log=print):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)

    train_text, held_text = split_text(args.data)
    if args.max_chars:
        train_text, held_text = train_text[: args.max_chars], held_text[: max(args.max_chars // 9, 4096)]
    sp = train_tokenizer(train_text, os.path.join(args.out, "spm"), args.vocab)
    V, bos, eos = sp.get_piece_size(), sp.bos_id(), sp.eos_id()
    tr, ho = encode(sp, train_text), encode(sp, held_text)
    log(f"tokenizer: {V} pieces; train {len(tr)} tokens ({len(train_text)/len(tr):.2f} chars/token), "
        f"held-out {len(ho)} tokens  [{time.time()-t0:.1f}s]")

    model, cfg = build(args, V, bos, eos)
    n_tern = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    n_all = sum(p.numel() for p in model.parameters())
    log(f"model: {n_all/1e6:.2f} M parameters ({n_tern/1e6:.2f} M ternary), "
        f"E={args.n_embd} L={args.n_layer} F={args.n_ff} H={args.n_head} Hkv={args.n_head_kv} ctx={args.ctx}")

    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    ctx, B = args.ctx, args.batch
    t_train = time.time()
    ema = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        ix = rng.integers(0, len(tr) - ctx, size=B)
        y = torch.from_numpy(np.stack([tr[i:i + ctx] for i in ix]))
        x = torch.cat([torch.full((B, 1), bos, dtype=torch.long), y[:, :-1]], dim=1)
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.time() - t_train
            log(f"step {step:5d}  loss {loss.item():.4f} (ema {ema:.4f})  lr {lr_at(step, args):.2e}  "
                f"{el/(step+1):.3f} s/step  {el/60:.1f} min")
        if args.eval_every and step and step % args.eval_every == 0:
            hl, _, _ = evaluate(model, ho, ctx, bos, max_windows=16)
            log(f"  held-out (16 windows) loss {hl:.4f}  ppl {math.exp(hl):.2f}")
    train_time = time.time() - t_train

    # final evaluation with the quantized forward pass
    tr_eval = tr[rng.integers(0, len(tr) - len(ho)):][: len(ho)]   # a train slice as large as held-out
    trl, trl_half, _ = evaluate(model, tr_eval, ctx, bos)
    hl, hl_half, nw = evaluate(model, ho, ctx, bos)
    res = {"train_loss": trl, "train_ppl": math.exp(trl), "heldout_loss": hl, "heldout_ppl": math.exp(hl),
           "heldout_loss_second_half": hl_half, "heldout_ppl_second_half": math.exp(hl_half),
           "heldout_windows": nw, "heldout_tokens": int(len(ho)), "train_time_s": train_time,
           "total_time_s": time.time() - t0, "steps": args.steps, "batch": B, "ctx": ctx,
           "parameters": n_all, "ternary_parameters": n_tern, "vocab": V}
    log(json.dumps(res, indent=1))

    ck = os.path.join(args.out, "hf")
    save_checkpoint(model, cfg, os.path.join(args.out, "spm.model"), ck)
    np.savez(os.path.join(args.out, "heldout_logits.npz"), **heldout_logits(model, ho, bos))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    if args.samples:
        for p in ("ROMEO:", "First Citizen:\n", "KING HENRY VI:\nWhat"):
            log(f"--- sample ({p!r}, T=0.8, top-k 40):\n{sample(model, sp, p, 120, ctx, bos)}")
        log(f"--- greedy ('ROMEO:'):\n{sample(model, sp, 'ROMEO:', 80, ctx, bos, greedy=True)}")
    return model, sp, res


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=os.path.join(HERE, "runs", "shakespeare"))
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-ff", type=int, default=768)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-head-kv", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=3e-4)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--max-chars", type=int, default=0, help="use only this many training characters (tests)")
    ap.add_argument("--no-samples", dest="samples", action="store_false")
    ap.add_argument("--eval", metavar="HF_DIR", help="only evaluate a saved checkpoint on the held-out split")
    return ap.parse_args(argv)


def eval_only(args, log=print):
    import sentencepiece as spm
    torch.set_num_threads(args.threads)
    model, cfg = load_checkpoint(args.eval)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.eval, "tokenizer.model"))
    _, held_text = split_text(args.data)
    ho = encode(sp, held_text)
    ctx = cfg["max_position_embeddings"]
    hl, hl_half, nw = evaluate(model, ho, ctx, sp.bos_id())
    log(json.dumps({"heldout_loss": hl, "heldout_ppl": math.exp(hl), "heldout_loss_second_half": hl_half,
                    "heldout_ppl_second_half": math.exp(hl_half), "heldout_windows": nw,
                    "heldout_tokens": int(len(ho))}, indent=1))


if __name__ == "__main__":
    a = parse_args()
    if a.eval:
        eval_only(a, log=lambda s: print(s, flush=True))
    else:
        train(a, log=lambda s: print(s, flush=True))
