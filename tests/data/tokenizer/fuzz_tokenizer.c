/* fuzz_tokenizer.c: drives runtime_c/text/tokenizer.c under AddressSanitizer/UBSan.
 *
 *   fuzz_tokenizer BLOB INPUTS [MUTATIONS]
 *
 * INPUTS holds records [u32 little-endian length][bytes]. For every record and every
 * (add_bos, parse_special) combination: count the ids (max_ids = 0), encode into a buffer of
 * exactly that size, encode into one id too few (must report the same need and write only
 * max_ids ids), decode and check the round trip, stream every id and check the streamed text
 * equals the decoded text when the stream is raw.
 * MUTATIONS (optional, default 0): that many copies of the blob with random header bytes
 * changed are handed to tokenizer_init; any that initialise are used to encode each input.
 * Prints "ok N" and exits 0, or prints what failed and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
    fclose(f);
    *len = (size_t)n;
    return p;
}

static int check_one(const Tokenizer *t, const unsigned char *s, size_t n, int add_bos, int ps, int strict) {
    int need = tokenizer_encode(t, (const char *)s, n, add_bos, ps, NULL, 0);
    if (need > 0) { printf("count call returned %d (expected <= 0)\n", need); return 0; }
    need = -need;
    int *ids = malloc(sizeof(int) * (size_t)(need + 1));
    int got = tokenizer_encode(t, (const char *)s, n, add_bos, ps, ids, need);
    if (got != need) { printf("encode returned %d, need %d\n", got, need); free(ids); return 0; }
    if (need > 0) {
        int *few = malloc(sizeof(int) * (size_t)need);
        int r = tokenizer_encode(t, (const char *)s, n, add_bos, ps, few, need - 1);
        if (r != -need) { printf("short buffer: %d, expected %d\n", r, -need); free(few); free(ids); return 0; }
        if (need > 1 && memcmp(few, ids, sizeof(int) * (size_t)(need - 1)) != 0) {
            printf("short buffer: different prefix\n"); free(few); free(ids); return 0;
        }
        free(few);
    }
    /* control tokens print only when they came from the text (parse_special) */
    int flags = TOKENIZER_DECODE_STRIP_SPACE | (ps ? TOKENIZER_DECODE_SPECIAL : 0);
    if (add_bos && ps) strict = 0;      /* the BOS would print as its text */
    if (ps && t->add_space_prefix) strict = 0;   /* SPM: text after a special gets a new "▁" */
    size_t dl = tokenizer_decode(t, ids, need, flags, NULL, 0);
    char *text = malloc(dl + 1);
    tokenizer_decode(t, ids, need, flags, text, dl + 1);
    int ok = 1;
    if (strict && (dl != n || memcmp(text, s, n) != 0)) { printf("round trip differs (%zu vs %zu bytes)\n", dl, n); ok = 0; }
    TokenizerStream st;
    tokenizer_stream_init(&st, t, flags | TOKENIZER_DECODE_RAW);
    char *out = malloc(tokenizer_stream_bound(t));
    size_t total = 0;
    for (int i = 0; i < need && ok; i++) {
        size_t w = tokenizer_stream_push(&st, ids[i], out);
        if (w > tokenizer_stream_bound(t) || total + w > dl || memcmp(out, text + total, w) != 0) {
            printf("stream differs at id %d\n", i); ok = 0;
        }
        total += w;
    }
    size_t w = tokenizer_stream_flush(&st, out);
    if (ok && (total + w != dl || memcmp(out, text + total, w) != 0)) { printf("stream flush differs\n"); ok = 0; }
    /* the replacing stream must also stay within its bound */
    tokenizer_stream_init(&st, t, flags);
    for (int i = 0; i < need; i++)
        if (tokenizer_stream_push(&st, ids[i], out) > tokenizer_stream_bound(t)) { printf("bound\n"); ok = 0; }
    tokenizer_stream_flush(&st, out);
    free(out);
    free(text);
    free(ids);
    return ok;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);     /* messages survive a sanitizer exit */
    if (argc < 3) { fprintf(stderr, "usage: %s BLOB INPUTS [MUTATIONS]\n", argv[0]); return 2; }
    size_t bl, il;
    unsigned char *blob = read_file(argv[1], &bl), *in = read_file(argv[2], &il);
    int mutations = argc > 3 ? atoi(argv[3]) : 0;
    if (!blob || !in) { printf("cannot read inputs\n"); return 1; }
    Tokenizer t;
    int err = tokenizer_init(&t, blob, bl);
    if (err) { printf("init: %s\n", tokenizer_error_string(err)); return 1; }
    int count = 0;
    for (size_t p = 0; p + 4 <= il;) {
        size_t n = (size_t)in[p] | (size_t)in[p + 1] << 8 | (size_t)in[p + 2] << 16 | (size_t)in[p + 3] << 24;
        p += 4;
        if (n > il - p) { printf("bad inputs file\n"); return 1; }
        unsigned char *s = malloc(n ? n : 1);    /* exact-size copy: reads past it are caught */
        memcpy(s, in + p, n);
        for (int k = 0; k < 4; k++)
            if (!check_one(&t, s, n, k & 1, k >> 1, 1)) { printf("input %d (%zu bytes) case %d\n", count, n, k); return 1; }
        free(s);
        p += n;
        count++;
    }
    tokenizer_free(&t);

    /* corrupted headers: must fail cleanly or work without touching memory out of bounds */
    srand(12345);
    int inited = 0;
    for (int m = 0; m < mutations; m++) {
        unsigned char *copy = malloc(bl);
        memcpy(copy, blob, bl);
        int nb = 1 + rand() % 3;
        for (int k = 0; k < nb; k++) {
            size_t at = 16 + (size_t)(rand() % 112);
            copy[at] = (unsigned char)(rand() % 4 == 0 ? 0xFF : rand());
        }
        if (tokenizer_init(&t, copy, bl) == TOKENIZER_OK) {
            inited++;
            for (size_t p = 0; p + 4 <= il;) {
                size_t n = (size_t)in[p] | (size_t)in[p + 1] << 8 | (size_t)in[p + 2] << 16 | (size_t)in[p + 3] << 24;
                p += 4;
                check_one(&t, in + p, n, 1, 1, 0);
                p += n;
            }
            tokenizer_free(&t);
        }
        free(copy);
    }
    printf("ok %d inputs, %d/%d mutated headers accepted\n", count, inited, mutations);
    free(blob);
    free(in);
    return 0;
}
