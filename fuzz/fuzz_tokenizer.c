/* fuzz_tokenizer.c: libFuzzer harness for runtime_c/text/tokenizer.c (encoder, decoder, streaming
 * detokenizer). Built by fuzz/run_c_fuzzers.py with -fsanitize=fuzzer,address,undefined,
 * once per vocabulary (a factory SPM and a factory BPE one): the packed tokenizer blob comes
 * from a generated C file defining fuzz_tok_blob / fuzz_tok_blob_len.
 *
 * Input: byte 0 selects the case, the rest is the payload.
 *   bit 0  add_bos, bit 1  parse_special  (passed to tokenizer_encode)
 *   bit 2  the payload is also read as little-endian int16 token ids (any value, invalid
 *          ones included) and fed to tokenizer_decode and the streaming detokenizer.
 * Checks (abort() on failure, so libFuzzer saves the input):
 *   - count call (max_ids 0) returns -need; an exact buffer returns need; a buffer one too
 *     small returns -need and the same prefix; every id is in [0, n_vocab);
 *   - round trip: decode(encode(s)) == s byte for byte when no special token can be
 *     involved (parse_special = 0, add_bos = 0), as tokenizer.h promises for any bytes --
 *     except, for SPM, text containing U+2581 (the space marker, which decodes as a space);
 *   - the raw stream of the ids concatenates to the decoded text; pushes stay within
 *     tokenizer_stream_bound, for the raw and the replacing stream;
 *   - decode with cap < need writes a NUL-terminated prefix and returns the full length.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

extern const unsigned char fuzz_tok_blob[];
extern const size_t fuzz_tok_blob_len;

static Tokenizer tok;
static int tok_ready;

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "CHECK failed: " __VA_ARGS__); \
    fprintf(stderr, "\n"); abort(); } } while (0)

static void setup(void) {
    if (tok_ready) return;
    unsigned char *copy = malloc(fuzz_tok_blob_len);          /* malloc: 16-byte aligned */
    memcpy(copy, fuzz_tok_blob, fuzz_tok_blob_len);
    int err = tokenizer_init(&tok, copy, fuzz_tok_blob_len);
    CHECK(err == 0, "tokenizer_init: %s", tokenizer_error_string(err));
    tok_ready = 1;                                            /* kept for the whole run */
}

static void check_stream(const int *ids, int n, int flags, const char *text, size_t len) {
    size_t bound = tokenizer_stream_bound(&tok);
    char *out = malloc(bound ? bound : 1);
    TokenizerStream st;
    size_t total = 0;
    tokenizer_stream_init(&st, &tok, flags | TOKENIZER_DECODE_RAW);
    for (int i = 0; i < n; i++) {
        size_t w = tokenizer_stream_push(&st, ids[i], out);
        CHECK(w <= bound, "raw stream push wrote %zu > bound %zu", w, bound);
        CHECK(total + w <= len && memcmp(out, text + total, w) == 0, "raw stream differs at id %d", i);
        total += w;
    }
    size_t w = tokenizer_stream_flush(&st, out);
    CHECK(w <= bound, "flush wrote %zu > bound %zu", w, bound);
    CHECK(total + w == len && memcmp(out, text + total, w) == 0, "raw stream total differs");
    tokenizer_stream_init(&st, &tok, flags);
    for (int i = 0; i < n; i++) {
        w = tokenizer_stream_push(&st, ids[i], out);
        CHECK(w <= bound, "stream push wrote %zu > bound %zu", w, bound);
    }
    CHECK(tokenizer_stream_flush(&st, out) <= bound, "stream flush over bound");
    free(out);
}

static char *decode_checked(const int *ids, int n, int flags, size_t *len) {
    size_t need = tokenizer_decode(&tok, ids, n, flags, NULL, 0);
    char *text = malloc(need + 1);
    size_t got = tokenizer_decode(&tok, ids, n, flags, text, need + 1);
    CHECK(got == need && text[need] == 0, "decode: %zu then %zu", need, got);
    if (need > 0) {                       /* truncated output: a NUL-terminated prefix */
        char *small = malloc(need);
        got = tokenizer_decode(&tok, ids, n, flags, small, need);
        CHECK(got == need && small[need - 1] == 0 && memcmp(small, text, need - 1) == 0,
              "truncated decode differs");
        free(small);
    }
    *len = need;
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    if (size == 0) return 0;
    int mode = data[0];
    int add_bos = mode & 1, ps = (mode >> 1) & 1;
    size_t n = size - 1;
    char *s = malloc(n ? n : 1);          /* exact-size copy: reads past it are caught */
    memcpy(s, data + 1, n);

    int need = tokenizer_encode(&tok, s, n, add_bos, ps, NULL, 0);
    CHECK(need <= 0 && need > -1000, "count call returned %d", need);
    need = -need;
    int *ids = malloc(sizeof(int) * (size_t)(need + 1));
    int got = tokenizer_encode(&tok, s, n, add_bos, ps, ids, need);
    CHECK(got == need, "encode returned %d, count said %d", got, need);
    for (int i = 0; i < need; i++)
        CHECK(ids[i] >= 0 && ids[i] < tok.n_vocab, "id %d out of range", ids[i]);
    if (need > 0) {
        int *few = malloc(sizeof(int) * (size_t)need);
        int r = tokenizer_encode(&tok, s, n, add_bos, ps, few, need - 1);
        CHECK(r == -need, "short buffer returned %d, expected %d", r, -need);
        CHECK(need == 1 || memcmp(few, ids, sizeof(int) * (size_t)(need - 1)) == 0, "short buffer prefix differs");
        free(few);
    }
    int flags = TOKENIZER_DECODE_STRIP_SPACE | (ps ? TOKENIZER_DECODE_SPECIAL : 0);
    size_t dl;
    char *text = decode_checked(ids, need, flags, &dl);
    /* SPM prints "\xe2\x96\x81" (U+2581, its space marker) as a space, like sentencepiece:
       text holding that character cannot round-trip there */
    int has_marker = tok.model == TOKENIZER_SPM && n >= 3 && memmem(s, n, "\xe2\x96\x81", 3) != NULL;
    if (!add_bos && !ps && !has_marker)
        CHECK(dl == n && memcmp(text, s, n) == 0, "round trip differs: %zu bytes in, %zu out", n, dl);
    check_stream(ids, need, flags, text, dl);
    free(text);
    free(ids);

    if (mode & 4) {                       /* arbitrary ids -> decode and stream */
        int m = (int)(n / 2);
        int *raw = malloc(sizeof(int) * (size_t)(m + 1));
        for (int i = 0; i < m; i++)
            raw[i] = (int16_t)((unsigned)(unsigned char)s[2 * i] | (unsigned)(unsigned char)s[2 * i + 1] << 8);
        for (int f = 0; f < 4; f++) {
            text = decode_checked(raw, m, f, &dl);
            check_stream(raw, m, f, text, dl);
            free(text);
        }
        for (int i = 0; i < m; i++) {
            size_t l = 0;
            const char *p = tokenizer_piece(&tok, raw[i], &l);
            if (p) CHECK(l <= (size_t)tok.max_piece_len, "piece of %d: %zu bytes > max_piece_len", raw[i], l);
            p = tokenizer_token_text(&tok, raw[i], &l);
            (void)tokenizer_is_eog(&tok, raw[i]);
            if (p) CHECK(tokenizer_find_token(&tok, p, l) >= 0, "find_token(token_text(%d)) failed", raw[i]);
        }
        free(raw);
    }
    free(s);
    return 0;
}
