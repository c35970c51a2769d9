/* chat.h: turn a conversation into prompt text with the model's chat template.
 *
 * No Jinja in C: the template text in the GGUF (tokenizer.chat_template) is recognised by
 * markers it contains, and the conversation is formatted by hand-written code that produces
 * what that template renders (checked against Jinja in tests/test_chat.py; the Python mirror
 * is bitnet_aot.chat):
 *
 *   CHAT_BITNET   BitNet-b1.58-2B-4T:  "System: {s}<|eot_id|>User: {u}<|eot_id|>Assistant: {a}<|eot_id|>"
 *                 generation prompt "Assistant: "; role capitalised, content trimmed.
 *   CHAT_LLAMA3   LLaMA-3 Instruct:    "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
 *                 generation prompt "<|start_header_id|>assistant<|end_header_id|>\n\n"; content trimmed.
 *   CHAT_FALCON3  Falcon3 Instruct:    "<|system|>\n{s}\n<|user|>\n{u}\n<|assistant|>\n{a}{eos}\n"
 *                 (no "\n" after the last assistant message), generation prompt "<|assistant|>\n".
 *   CHAT_CHATML   ChatML (Qwen2/Qwen3, Ternary Bonsai, SmolLM2): "<|im_start|>{role}\n{content}<|im_end|>\n",
 *                 generation prompt "<|im_start|>assistant\n"; content as given. Templates that
 *                 add a default system prompt when none is given (Qwen2.5, SmolLM2) or rewrite
 *                 <think> blocks (Qwen3) render more than this core: pass --system for them.
 *
 * The text never includes the BOS token: encode it with tokenizer_encode(t, text, len,
 * t->add_bos, 1 (parse_special), ...), like llama.cpp. Formatting is prefix-stable: the text
 * of messages[0..k) (add_assistant = 0) is a prefix of the text of messages[0..k+1), so a chat
 * loop can encode only the new part of each turn.
 * "Trimmed" means Python's str.strip() (Jinja's trim): Unicode whitespace at both ends.
 */
#ifndef BITNET_CHAT_H
#define BITNET_CHAT_H

#include <stddef.h>

enum {
    CHAT_UNKNOWN = 0,
    CHAT_BITNET = 1,
    CHAT_LLAMA3 = 2,
    CHAT_FALCON3 = 3,
    CHAT_CHATML = 4,
};

typedef struct {
    const char *role;       /* "system", "user" or "assistant" (NUL-terminated) */
    const char *content;    /* UTF-8, NUL-terminated */
} ChatMessage;

/* Recognises a chat template text (not NUL-terminated); CHAT_UNKNOWN if none matches
 * (the caller then picks one, e.g. CHAT_BITNET for a bitnet-b1.58 model). */
int chat_detect(const char *tmpl, size_t len);

/* "bitnet", "llama3", "falcon3" <-> CHAT_*; unknown names give CHAT_UNKNOWN / "unknown". */
int chat_format_by_name(const char *name);
const char *chat_format_name(int fmt);

/* Formats msgs[0..n) and, if add_assistant, the prompt that makes the model answer.
 * eos_text: the EOS token's text, which Falcon3 puts after assistant messages (NULL:
 * "<|endoftext|>"). Writes at most cap-1 bytes and a NUL (when cap > 0) like snprintf and
 * returns the full length. Messages with roles a format does not know are skipped. */
size_t chat_apply(int fmt, const ChatMessage *msgs, int n, int add_assistant,
                  const char *eos_text, char *out, size_t cap);

#endif /* BITNET_CHAT_H */
