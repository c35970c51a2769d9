/* text.c: text <-> token ids. The tokenizer data sits in the weights blob; it is read in
 * place (no copy) the first time text is needed. */
#include "text.h"
#include "bitnet.h"
#include "core/model_internal.h"

#include <stdlib.h>
#include <string.h>

static Tokenizer tokenizer;
static int tokenizer_state;    /* 0 not tried, 1 ready, -1 unavailable */

const Tokenizer *text_tokenizer(void) {
    if (tokenizer_state == 0) {
        tokenizer_state = -1;
        if (BN_HAS_TOKENIZER && bn_blob()) {
            int rc = tokenizer_init(&tokenizer, bn_blob() + BN_WEIGHTS_INDEX.tokenizer, (size_t)BN_TOKENIZER_BYTES);
            if (rc == TOKENIZER_OK) tokenizer_state = 1;
            else bn_set_error("the embedded tokenizer is unusable: %s", tokenizer_error_string(rc));
        }
    }
    return tokenizer_state == 1 ? &tokenizer : NULL;
}

int text_available(void) { return text_tokenizer() != NULL; }

int text_encode(const char *text, size_t len, int add_bos, int parse_special, int32_t **ids) {
    const Tokenizer *t = text_tokenizer();
    *ids = NULL;
    if (!t) { bn_set_error("this model was built without a tokenizer; pass token ids with --ids"); return -1; }
    /* Every id covers at least one byte of text, apart from BOS, EOS and SentencePiece's
     * space prefixes (at most one per byte), so 2*len + 4 ids always suffice. */
    if (len > (size_t)1 << 28) { bn_set_error("the prompt is larger than 256 MiB"); return -1; }
    int cap = (int)(2 * len + 4);
    int *tmp = malloc((size_t)cap * sizeof(int));
    if (!tmp) { bn_set_error("out of memory tokenizing the prompt"); return -1; }
    int got = tokenizer_encode(t, text, len, add_bos && t->add_bos, parse_special, tmp, cap);
    if (got < 0) {
        free(tmp);
        bn_set_error("cannot tokenize the prompt: %s", tokenizer_error_string(got));
        return -1;
    }
    int32_t *out = malloc(((size_t)got + 1) * sizeof(int32_t));
    if (!out) { free(tmp); bn_set_error("out of memory"); return -1; }
    for (int i = 0; i < got; i++) out[i] = tmp[i];
    free(tmp);
    *ids = out;
    return got;
}

void text_stream_put(text_stream *s, int32_t id, FILE *out) {
    const Tokenizer *t = text_tokenizer();
    if (!t) { fprintf(out, "[%d]", (int)id); return; }
    if (!s->started) {
        tokenizer_stream_init(&s->ts, t, t->model == TOKENIZER_SPM && t->add_space_prefix ? TOKENIZER_DECODE_STRIP_SPACE : 0);
        s->started = 1;
    }
    char buf[1024];
    if (tokenizer_stream_bound(t) > sizeof buf) { fprintf(out, "[%d]", (int)id); return; }
    size_t n = tokenizer_stream_push(&s->ts, id, buf);
    fwrite(buf, 1, n, out);
}

void text_stream_flush(text_stream *s, FILE *out) {
    const Tokenizer *t = text_tokenizer();
    if (!t || !s->started) return;
    char buf[1024];
    if (tokenizer_stream_bound(t) > sizeof buf) return;
    size_t n = tokenizer_stream_flush(&s->ts, buf);
    fwrite(buf, 1, n, out);
}

/* ---- the public C API's text functions (bitnet.h) ---- */

int bn_tokenize(const char *text, size_t len, int add_bos, int parse_special, int32_t *out_ids, int max_ids) {
    int32_t *ids;
    int n = text_encode(text, len, add_bos, parse_special, &ids);
    if (n < 0) return -1;
    if (n > max_ids) { free(ids); return -n; }
    memcpy(out_ids, ids, (size_t)n * sizeof(int32_t));
    free(ids);
    return n;
}

long bn_detokenize(const int32_t *ids, int n_ids, int special, char *out, size_t cap) {
    const Tokenizer *t = text_tokenizer();
    if (!t) { bn_set_error("this model was built without a tokenizer"); return -1; }
    int *tmp = malloc(((size_t)n_ids + 1) * sizeof(int));
    if (!tmp) { bn_set_error("out of memory"); return -1; }
    for (int i = 0; i < n_ids; i++) tmp[i] = ids[i];
    int flags = (special ? TOKENIZER_DECODE_SPECIAL : 0) |
                (t->model == TOKENIZER_SPM && t->add_space_prefix ? TOKENIZER_DECODE_STRIP_SPACE : 0);
    size_t n = tokenizer_decode(t, tmp, n_ids, flags, out, cap);
    free(tmp);
    return (long)n;
}
