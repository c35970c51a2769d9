/* text.c: text <-> token ids. Until the tokenizer is linked in, a model is driven by ids. */
#include "text.h"
#include "bitnet.h"
#include "model_internal.h"

#include <stdlib.h>

int text_available(void) { return 0; }

int text_encode(const char *text, size_t len, int add_bos, int parse_special, int32_t **ids) {
    (void)text; (void)len; (void)add_bos; (void)parse_special;
    *ids = NULL;
    bn_set_error("this model was built without a tokenizer");
    return -1;
}

void text_stream_put(text_stream *s, int32_t id, FILE *out) {
    (void)s;
    fprintf(out, "[%d]", (int)id);
}

void text_stream_flush(text_stream *s, FILE *out) { (void)s; (void)out; }
