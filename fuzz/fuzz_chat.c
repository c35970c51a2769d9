/* fuzz_chat.c: libFuzzer harness for runtime_c/text/chat.c (chat-template filler and detector).
 *
 * Input: byte 0 = format (low 2 bits: unknown/bitnet/llama3/falcon3) | add_assistant (bit 2)
 * | custom eos text (bit 3). The rest is split at NUL bytes into fields: with bit 3 the first
 * field is the eos text; then each message is one field whose first byte picks the role
 * (system/user/assistant/tool, mod 4: "tool" is a role no format knows) and whose rest is the
 * content (arbitrary bytes, invalid UTF-8 included). The whole payload is also given to
 * chat_detect as a template text.
 * Checks: the sizing call (cap 0) and the real call agree; a too-small buffer gets a
 * NUL-terminated prefix; formatting is prefix-stable (messages[0..k) without the assistant
 * prompt is a prefix of messages[0..k+1), as chat.h promises).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "CHECK failed: " __VA_ARGS__); \
    fprintf(stderr, "\n"); abort(); } } while (0)

#define MAX_MSGS 64

static char *apply(int fmt, const ChatMessage *m, int n, int aa, const char *eos, size_t *len) {
    size_t need = chat_apply(fmt, m, n, aa, eos, NULL, 0);
    char *out = malloc(need + 1);
    size_t got = chat_apply(fmt, m, n, aa, eos, out, need + 1);
    CHECK(got == need && out[need] == 0, "chat_apply: sizing %zu, real %zu", need, got);
    if (need > 0) {
        size_t cap = need / 2 + 1;
        char *small = malloc(cap);
        got = chat_apply(fmt, m, n, aa, eos, small, cap);
        CHECK(got == need && small[cap - 1] == 0 && memcmp(small, out, cap - 1) == 0, "truncated chat_apply differs");
        free(small);
    }
    *len = need;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const ROLES[] = {"system", "user", "assistant", "tool"};
    if (size == 0) return 0;
    int fmt = data[0] & 3, aa = (data[0] >> 2) & 1, custom_eos = (data[0] >> 3) & 1;
    size_t n = size - 1;
    char *buf = malloc(n + 1);              /* the payload, NUL-terminated fields */
    memcpy(buf, data + 1, n);
    buf[n] = 0;
    (void)chat_detect(buf, n);              /* not NUL-terminated use: exactly n bytes */

    ChatMessage msgs[MAX_MSGS];
    int nm = 0;
    const char *eos = NULL;
    size_t p = 0;
    if (custom_eos) { eos = buf; p = strlen(buf) + 1; }
    while (p < n && nm < MAX_MSGS) {
        size_t l = strlen(buf + p);
        msgs[nm].role = ROLES[l ? (unsigned char)buf[p] % 4 : 1];
        msgs[nm].content = l ? buf + p + 1 : buf + p;
        nm++;
        p += l + 1;
    }
    size_t full_len;
    char *full = apply(fmt, msgs, nm, aa, eos, &full_len);
    /* prefix stability */
    size_t prev_len = 0;
    char *prev = apply(fmt, msgs, 0, 0, eos, &prev_len);
    for (int k = 1; k <= nm; k++) {
        size_t cur_len;
        char *cur = apply(fmt, msgs, k, 0, eos, &cur_len);
        CHECK(prev_len <= cur_len && memcmp(prev, cur, prev_len) == 0,
              "not prefix-stable: %d messages is not a prefix of %d", k - 1, k);
        free(prev);
        prev = cur;
        prev_len = cur_len;
    }
    CHECK(prev_len <= full_len && memcmp(prev, full, prev_len) == 0, "text without the assistant prompt is not a prefix");
    free(prev);
    free(full);
    free(buf);
    return 0;
}
