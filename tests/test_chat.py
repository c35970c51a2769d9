"""runtime_c/text/chat.c and its Python mirror bitnet_aot.chat: same template recognition, same text
as the Jinja templates render, and the same token ids through the C tokenizer as through
tiktoken on the Python side."""
from __future__ import annotations

import random
import zlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_harness import (LLAMA3_PAT, LLAMA3_SPECIALS, TokenizerLib,  # noqa: E402
                               build_library, llama3_tokenizer_data)

from bitnet_aot.chat import FORMATS, detect_chat_format, format_chat  # noqa: E402
from bitnet_aot.tokenizer_pack import pack_tokenizer  # noqa: E402

from fixtures import TIKTOKEN_2B4T as TIKTOKEN_MODEL  # noqa: E402

# The templates as the models' tokenizer_config.json carry them (the Jinja references).
TEMPLATES = {
    "bitnet": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"),
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
        "{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "falcon3": (
        "{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{ '<|system|>\n' + message['content'] + '\n' }}"
        "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
        "{% elif message['role'] == 'assistant' %}{% if not loop.last %}"
        "{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
        "{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
        "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}"),
    # ChatML as Qwen2-family templates write it, without a default system prompt
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
}
OTHER_TEMPLATES = [
    "{{ bos_token }}{% for message in messages %}[INST] {{ message['content'] }} [/INST]{% endfor %}",
    "", "User: hi",
]

SPACES = [" ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85", "\u200b", "\ufeff"]
WORDS = ["Hello", "how are you?", "🦙", "你好", "e\u0301", "<|eot_id|>", "Assistant:", "x", "",
         "line\nbreak", "  spaced  "]


def random_conversation(rng, with_system=None):
    msgs = []
    if with_system if with_system is not None else rng.random() < 0.5:
        msgs.append(("system", random_text(rng)))
    for i in range(rng.randint(0, 5)):
        msgs.append(("user" if i % 2 == 0 else "assistant", random_text(rng)))
    return msgs


def random_text(rng):
    parts = []
    for _ in range(rng.randint(0, 6)):
        parts.append(rng.choice(SPACES) if rng.random() < 0.4 else rng.choice(WORDS))
    return "".join(parts)


@pytest.fixture(scope="module")
def tl(tmp_path_factory):
    return TokenizerLib(build_library(tmp_path_factory.mktemp("chat_c")))


@pytest.fixture(scope="module")
def jinja_env():
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    assert jinja2
    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)


def render(env, fmt, msgs, add, bos="", eos="<|endoftext|>"):
    return env.from_string(TEMPLATES[fmt]).render(
        messages=[{"role": r, "content": c} for r, c in msgs], add_generation_prompt=add,
        bos_token=bos, eos_token=eos)


def test_detect(tl):
    for fmt, tmpl in TEMPLATES.items():
        assert detect_chat_format(tmpl) == fmt
        assert tl.chat_detect(tmpl) == fmt
    for tmpl in OTHER_TEMPLATES:
        assert detect_chat_format(tmpl) is None
        assert tl.chat_detect(tmpl) == "unknown"


@pytest.mark.parametrize("fmt", FORMATS)
def test_text_matches_jinja_and_python(tl, jinja_env, fmt):
    rng = random.Random(zlib.crc32(fmt.encode()))  # hash() of a str changes per process
    eos = "<|end_of_text|>"
    for _ in range(400):
        msgs = random_conversation(rng)
        for add in (False, True):
            ref = render(jinja_env, fmt, msgs, add, eos=eos)
            assert format_chat(fmt, msgs, add, eos_token=eos) == ref, (msgs, add)
            assert tl.chat_apply(fmt, msgs, add, eos_token=eos) == ref, (msgs, add)


@pytest.mark.parametrize("fmt", FORMATS)
def test_prefix_stable(tl, fmt):
    """A chat loop encodes only what each turn adds: earlier text must be a prefix."""
    rng = random.Random(42)
    for _ in range(100):
        msgs = random_conversation(rng, with_system=True)
        for k in range(1, len(msgs)):
            before = tl.chat_apply(fmt, msgs[:k], add_assistant=False)
            assert tl.chat_apply(fmt, msgs[:k + 1], add_assistant=True).startswith(before)


def test_trim_is_python_strip(tl):
    """C trimming equals str.strip() for every whitespace-ish code point below U+10000."""
    cps = [cp for cp in range(0x10000) if chr(cp).isspace() or cp in (0x200B, 0x180E, 0xFEFF, 0x2060)]
    for cp in cps:
        c = chr(cp)
        for content in (c + "a" + c, c * 3, "a" + c + "b", c + "\u00e9" + c + c):
            assert tl.chat_apply("bitnet", [("user", content)], False) == \
                "User: " + content.strip() + "<|eot_id|>", hex(cp)


def test_ids_equal_through_both_tokenizers(tl, jinja_env):
    """The prompt ids of C (chat_apply + tokenizer_encode with BOS and special tokens) equal
    the Python side's (Jinja template with bos_token, then tiktoken with special tokens)."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks, td = llama3_tokenizer_data(TIKTOKEN_MODEL)
    ct = tl.load(pack_tokenizer(td))
    enc = tiktoken.Encoding("llama3-chat-test", pat_str=LLAMA3_PAT, mergeable_ranks=ranks,
                            special_tokens={t: len(ranks) + i for i, t in enumerate(LLAMA3_SPECIALS)})
    rng = random.Random(7)
    for fmt in FORMATS:
        for _ in range(150):
            msgs = random_conversation(rng)
            if not msgs:
                continue
            eos = "<|end_of_text|>"
            c_ids = ct.encode(tl.chat_apply(fmt, msgs, True, eos_token=eos), add_bos=True, parse_special=True)
            py_ids = enc.encode("<|begin_of_text|>" + format_chat(fmt, msgs, True, eos_token=eos),
                                allowed_special="all")
            assert c_ids == py_ids, (fmt, msgs)
            # falcon3's and chatml's templates have no bos_token: the BOS comes from add_bos
            lead = "<|begin_of_text|>" if fmt in ("falcon3", "chatml") else ""
            jinja_ids = enc.encode(lead + render(jinja_env, fmt, msgs, True, bos="<|begin_of_text|>", eos=eos),
                                   allowed_special="all")
            assert c_ids == jinja_ids, (fmt, msgs)
    # a two-turn BitNet conversation, spelled out
    msgs = [("system", "You are a helpful assistant."), ("user", "Hi!"), ("assistant", "Hello."),
            ("user", "What is 2+2?")]
    text = tl.chat_apply("bitnet", msgs, True)
    assert text == ("System: You are a helpful assistant.<|eot_id|>User: Hi!<|eot_id|>"
                    "Assistant: Hello.<|eot_id|>User: What is 2+2?<|eot_id|>Assistant: ")
    ids = ct.encode(text, add_bos=True, parse_special=True)
    assert ids[0] == 128000 and ids.count(128009) == 4 and ids[-1] != 128009


def test_unknown_format_and_names(tl):
    assert tl.chat_apply("nonsense", [("user", "hi")], True) == ""
    with pytest.raises(ValueError):
        format_chat("nonsense", [("user", "hi")])
    assert format_chat("falcon3", [], True) == tl.chat_apply("falcon3", [], True) == ""
