/* text.h: text <-> token ids for the CLI, on top of the tokenizer baked into the blob. */
#ifndef BITNET_TEXT_H
#define BITNET_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tokenizer.h"

typedef struct {
    TokenizerStream ts;        /* holds back an incomplete UTF-8 character between tokens */
    int started;
} text_stream;

int text_available(void);      /* 1 when the model was built with a tokenizer */
/* Encode text into a malloc'ed id array (*ids); returns the count or -1 (bn_last_error). */
int text_encode(const char *text, size_t len, int add_bos, int parse_special, int32_t **ids);
/* Print the text of one token, holding back an incomplete UTF-8 character. */
void text_stream_put(text_stream *s, int32_t id, FILE *out);
void text_stream_flush(text_stream *s, FILE *out);
/* The tokenizer, or NULL when the model has none. */
const Tokenizer *text_tokenizer(void);

#endif
