/* chat.c: chat templates recognised by their markers and formatted by hand. See chat.h. */
#include "chat.h"

#include <string.h>

/* ===================================================================================== */
/* Output buffer with snprintf semantics                                                  */
/* ===================================================================================== */

typedef struct {
    char *out;
    size_t cap;
    size_t len;     /* full length, even past cap */
} Buf;

static void put(Buf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++, b->len++)
        if (b->len + 1 < b->cap) b->out[b->len] = s[i];
}

static void puts_(Buf *b, const char *s) { put(b, s, strlen(s)); }

/* ===================================================================================== */
/* Trimming like Python's str.strip()                                                     */
/* ===================================================================================== */

/* Python's str.isspace(): Unicode White_Space plus U+001C..U+001F. */
static int py_space(unsigned long cp) {
    if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20)) return 1;
    if (cp == 0x85 || cp == 0xA0 || cp == 0x1680) return 1;
    if (cp >= 0x2000 && cp <= 0x200A) return 1;
    return cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* The code point of the well-formed UTF-8 character s[0..n) (n = its length), or -1. */
static long utf8_char(const unsigned char *s, size_t n) {
    if (n == 1) return s[0] < 0x80 ? (long)s[0] : -1;
    if (n == 2 && s[0] >= 0xC2 && s[0] <= 0xDF && (s[1] & 0xC0) == 0x80)
        return ((long)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    if (n == 3 && (s[0] & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        long cp = ((long)(s[0] & 0x0F) << 12) | ((long)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) ? cp : -1;
    }
    return -1;      /* 4-byte characters are never whitespace */
}

/* Length of a leading whitespace character at s (0 if none). */
static size_t space_at(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        long cp = utf8_char(s, k);
        if (cp >= 0) return py_space((unsigned long)cp) ? k : 0;
    }
    return 0;
}

/* Length of a trailing whitespace character ending at s[n-1] (0 if none). */
static size_t space_before(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        if (k < 3 && k < n && (s[n - k] & 0xC0) == 0x80) continue;   /* continuation: go back */
        long cp = utf8_char(s + n - k, k);
        return (cp >= 0 && py_space((unsigned long)cp)) ? k : 0;
    }
    return 0;
}

static void put_trimmed(Buf *b, const char *text) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text), k;
    while (n > 0 && (k = space_at(s, n)) > 0) { s += k; n -= k; }
    while (n > 0 && (k = space_before(s, n)) > 0) n -= k;
    put(b, (const char *)s, n);
}

/* ===================================================================================== */
/* Recognising and formatting                                                             */
/* ===================================================================================== */

static int contains(const char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    if (m == 0 || m > n) return m == 0;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0) return 1;
    return 0;
}

int chat_detect(const char *t, size_t n) {
    if (!t || n == 0) return CHAT_UNKNOWN;
    if (contains(t, n, "<|start_header_id|>") && contains(t, n, "<|end_header_id|>")) return CHAT_LLAMA3;
    if (contains(t, n, "<|assistant|>") && contains(t, n, "<|user|>")) return CHAT_FALCON3;
    if (contains(t, n, "Assistant: ") && contains(t, n, "<|eot_id|>")) return CHAT_BITNET;
    if (contains(t, n, "<|im_start|>") && contains(t, n, "<|im_end|>")) return CHAT_CHATML;
    return CHAT_UNKNOWN;
}

static const char *const NAMES[] = {"unknown", "bitnet", "llama3", "falcon3", "chatml"};
#define N_NAMES ((int)(sizeof NAMES / sizeof NAMES[0]))

int chat_format_by_name(const char *name) {
    for (int i = 1; i < N_NAMES; i++)
        if (name && strcmp(name, NAMES[i]) == 0) return i;
    return CHAT_UNKNOWN;
}

const char *chat_format_name(int fmt) {
    return fmt >= 0 && fmt < N_NAMES ? NAMES[fmt] : NAMES[0];
}

size_t chat_apply(int fmt, const ChatMessage *msgs, int n, int add_assistant,
                  const char *eos_text, char *out, size_t cap) {
    Buf b = {out, cap, 0};
    const char *eos = eos_text ? eos_text : "<|endoftext|>";
    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role ? msgs[i].role : "";
        const char *content = msgs[i].content ? msgs[i].content : "";
        if (fmt == CHAT_BITNET) {
            /* Jinja's capitalize (ASCII): first letter upper, the rest lower */
            for (size_t k = 0; role[k]; k++) {
                char c = role[k];
                if (k == 0 && c >= 'a' && c <= 'z') c = (char)(c - 32);
                if (k > 0 && c >= 'A' && c <= 'Z') c = (char)(c + 32);
                put(&b, &c, 1);
            }
            puts_(&b, ": ");
            put_trimmed(&b, content);
            puts_(&b, "<|eot_id|>");
        } else if (fmt == CHAT_LLAMA3) {
            puts_(&b, "<|start_header_id|>");
            puts_(&b, role);
            puts_(&b, "<|end_header_id|>\n\n");
            put_trimmed(&b, content);
            puts_(&b, "<|eot_id|>");
        } else if (fmt == CHAT_CHATML) {
            puts_(&b, "<|im_start|>");
            puts_(&b, role);
            puts_(&b, "\n");
            puts_(&b, content);
            puts_(&b, "<|im_end|>\n");
        } else if (fmt == CHAT_FALCON3) {
            if (strcmp(role, "system") == 0 || strcmp(role, "user") == 0) {
                puts_(&b, strcmp(role, "system") == 0 ? "<|system|>\n" : "<|user|>\n");
                puts_(&b, content);
                puts_(&b, "\n");
            } else if (strcmp(role, "assistant") == 0) {
                puts_(&b, "<|assistant|>\n");
                puts_(&b, content);
                puts_(&b, eos);
                if (i < n - 1) puts_(&b, "\n");
            }
        }
    }
    if (add_assistant) {
        if (fmt == CHAT_BITNET) puts_(&b, "Assistant: ");
        else if (fmt == CHAT_LLAMA3) puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        else if (fmt == CHAT_CHATML) puts_(&b, "<|im_start|>assistant\n");
        else if (fmt == CHAT_FALCON3 && n > 0) puts_(&b, "<|assistant|>\n");  /* template: inside its loop */
    }
    if (cap > 0) out[b.len < cap ? b.len : cap - 1] = '\0';
    return b.len;
}
