/* fuzz_json.c: libFuzzer harness for runtime_c/app/json.c (the server's JSON reader and writer).
 *
 * Parses arbitrary bytes; on success walks the whole tree (json_first/json_next, json_get
 * of every member's key, which must find a member with that key), checks that every
 * string it holds is valid UTF-8 (the reader accepts only valid UTF-8) and re-serialises
 * the tree with json_put_*: the output must parse again to the same shape, and
 * serialising that again must give the same text. On failure the
 * error message must be set. Any sanitizer report or abort() is a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/json.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "CHECK failed: " __VA_ARGS__); \
    fprintf(stderr, "\n"); abort(); } } while (0)

static void emit(const json_doc *doc, const json_value *v, json_buf *b, int depth, int *count) {
    CHECK(depth <= JSON_MAX_DEPTH + 1, "tree deeper than JSON_MAX_DEPTH");
    (*count)++;
    switch (v->type) {
    case JSON_NULL: json_put_text(b, "null"); break;
    case JSON_FALSE: json_put_text(b, "false"); break;
    case JSON_TRUE: json_put_text(b, "true"); break;
    case JSON_NUMBER:
        if (v->is_integer && v->number > -1e15 && v->number < 1e15) json_put_int(b, (long long)v->number);
        else json_put_double(b, v->number);
        break;
    case JSON_STRING:
        CHECK(v->str && v->str[v->len] == 0, "string not NUL-terminated");
        CHECK(json_utf8_valid(v->str, v->len), "parsed string is not valid UTF-8");
        json_put_string(b, v->str, v->len);
        break;
    case JSON_ARRAY:
    case JSON_OBJECT: {
        json_put_raw(b, v->type == JSON_ARRAY ? "[" : "{", 1);
        size_t n = 0;
        for (const json_value *c = json_first(doc, v); c; c = json_next(doc, c), n++) {
            if (n) json_put_raw(b, ",", 1);
            if (v->type == JSON_OBJECT) {
                CHECK(c->key != NULL && c->key[c->key_len] == 0, "member without key");
                CHECK(json_utf8_valid(c->key, c->key_len), "key is not valid UTF-8");
                json_put_string(b, c->key, c->key_len);
                json_put_raw(b, ":", 1);
                if (!memchr(c->key, 0, c->key_len)) {
                    const json_value *g = json_get(doc, v, c->key);
                    CHECK(g != NULL && g->key_len == c->key_len && memcmp(g->key, c->key, c->key_len) == 0,
                          "json_get did not find key");
                }
            }
            emit(doc, c, b, depth + 1, count);
        }
        CHECK(n == v->len, "member count %zu != len %zu", n, v->len);
        json_put_raw(b, v->type == JSON_ARRAY ? "]" : "}", 1);
        break;
    }
    default:
        CHECK(0, "bad node type %d", (int)v->type);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1);     /* exact size, not NUL-terminated */
    memcpy(text, data, size);
    json_doc doc;
    if (json_parse(&doc, text, size) != 0) {
        CHECK(doc.error[0] != 0, "failed parse without a message");
        json_free(&doc);
        free(text);
        return 0;
    }
    json_buf b;
    json_buf_init(&b);
    int count = 0;
    emit(&doc, json_root(&doc), &b, 0, &count);
    CHECK(!b.failed, "json_buf allocation failed");
    CHECK(json_utf8_valid(b.data, b.len), "writer output is not valid UTF-8");
    json_doc again;
    CHECK(json_parse(&again, b.data, b.len) == 0, "re-serialised JSON does not parse: %s", again.error);
    json_buf b2;
    json_buf_init(&b2);
    int count2 = 0;
    emit(&again, json_root(&again), &b2, 0, &count2);
    CHECK(count == count2, "node count %d != %d after a round trip", count, count2);
    /* the first serialisation normalises (-0.0 -> -0 -> 0, 1e400 -> null): from the second on
       it must be a fixed point */
    json_doc third;
    CHECK(json_parse(&third, b2.data, b2.len) == 0, "second serialisation does not parse: %s", third.error);
    json_buf b3;
    json_buf_init(&b3);
    int count3 = 0;
    emit(&third, json_root(&third), &b3, 0, &count3);
    CHECK(b2.len == b3.len && memcmp(b2.data, b3.data, b2.len) == 0, "writer is not a fixed point");
    json_buf_free(&b3);
    json_free(&third);
    json_buf_free(&b2);
    json_free(&again);
    json_buf_free(&b);
    json_free(&doc);
    free(text);
    return 0;
}
