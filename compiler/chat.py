"""Chat templates, the Python mirror of runtime_c/text/chat.c (same recognition, same text).

The compiled binary cannot run Jinja, so both sides recognise the model's
``tokenizer.chat_template`` by markers it contains and format a conversation with
hand-written rules equal to what that template renders:

* ``bitnet``  (BitNet-b1.58-2B-4T): ``"User: {u}<|eot_id|>Assistant: {a}<|eot_id|>"``, prompt
  ``"Assistant: "``; the role is capitalised, the content trimmed.
* ``llama3``  (LLaMA-3 Instruct): ``"<|start_header_id|>{role}<|end_header_id|>\\n\\n{c}<|eot_id|>"``,
  prompt ``"<|start_header_id|>assistant<|end_header_id|>\\n\\n"``; content trimmed.
* ``falcon3`` (Falcon3 Instruct): ``"<|user|>\\n{u}\\n<|assistant|>\\n{a}{eos}\\n"`` (no newline
  after the last assistant message), prompt ``"<|assistant|>\\n"``.
* ``chatml`` (Qwen2/Qwen3, Ternary Bonsai, SmolLM2): ``"<|im_start|>{role}\\n{c}<|im_end|>\\n"``,
  prompt ``"<|im_start|>assistant\\n"``; content as given (no default system prompt, no
  rewriting of Qwen3's <think> blocks).

The text never holds the BOS token: tokenize it with the model's add_bos and special-token
parsing on (``tokenizer_encode(t, text, len, t->add_bos, 1, ...)`` in C).
"""
from __future__ import annotations

from typing import Iterable, Optional

FORMATS = ("bitnet", "llama3", "falcon3", "chatml")


def detect_chat_format(template: Optional[str]) -> Optional[str]:
    """The format a chat template text renders, or None when it is not recognised."""
    if not template:
        return None
    if "<|start_header_id|>" in template and "<|end_header_id|>" in template:
        return "llama3"
    if "<|assistant|>" in template and "<|user|>" in template:
        return "falcon3"
    if "Assistant: " in template and "<|eot_id|>" in template:
        return "bitnet"
    if "<|im_start|>" in template and "<|im_end|>" in template:
        return "chatml"
    return None


def _capitalize(role: str) -> str:
    # Jinja's capitalize restricted to ASCII, as the C side does it
    out = []
    for i, c in enumerate(role):
        if i == 0 and "a" <= c <= "z":
            c = chr(ord(c) - 32)
        elif i > 0 and "A" <= c <= "Z":
            c = chr(ord(c) + 32)
        out.append(c)
    return "".join(out)


def format_chat(fmt: str, messages: Iterable, add_assistant: bool = True,
                eos_token: str = "<|endoftext|>") -> str:
    """The prompt text for ``messages`` (dicts with "role"/"content" or (role, content) pairs)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown chat format {fmt!r}; known: {', '.join(FORMATS)}")
    msgs = [(m["role"], m["content"]) if isinstance(m, dict) else tuple(m) for m in messages]
    out = []
    for i, (role, content) in enumerate(msgs):
        if fmt == "bitnet":
            out.append(_capitalize(role) + ": " + content.strip() + "<|eot_id|>")
        elif fmt == "llama3":
            out.append("<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content.strip() + "<|eot_id|>")
        elif fmt == "chatml":
            out.append("<|im_start|>" + role + "\n" + content + "<|im_end|>\n")
        elif role in ("system", "user"):
            out.append(f"<|{role}|>\n" + content + "\n")
        elif role == "assistant":
            out.append("<|assistant|>\n" + content + eos_token + ("\n" if i < len(msgs) - 1 else ""))
    if add_assistant:
        if fmt == "bitnet":
            out.append("Assistant: ")
        elif fmt == "llama3":
            out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        elif fmt == "chatml":
            out.append("<|im_start|>assistant\n")
        elif msgs:
            out.append("<|assistant|>\n")
    return "".join(out)


def turn_text(fmt: str, users: list, system: Optional[str] = None,
              eos_token: str = "<|endoftext|>") -> str:
    """The text that turn ``len(users)`` of a chat session adds (what ``./model --chat`` in
    runtime_c/app/chat_cli.c encodes and evaluates that turn, BOS aside): the conversation so far,
    with earlier assistant replies empty (their tokens are the model's own, already in the KV
    cache), minus the text of the earlier turns."""
    def conversation(k):
        msgs = [("system", system)] if system is not None else []
        for i, u in enumerate(users[:k]):
            if i > 0:
                msgs.append(("assistant", ""))
            msgs.append(("user", u))
        return format_chat(fmt, msgs, True, eos_token=eos_token)

    text = conversation(len(users))
    before = conversation(len(users) - 1) if len(users) > 1 else ""
    if not text.startswith(before):
        raise AssertionError(f"chat format {fmt} is not prefix-stable")
    return text[len(before):]
