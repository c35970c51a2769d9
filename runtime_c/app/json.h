/* json.h: a small strict JSON reader and writer for the server (server.c).
 *
 * Reading: json_parse() turns a text into a tree of json_value nodes kept in one json_doc.
 * It follows RFC 8259 strictly: no comments, no trailing commas, no leading zeros, no NaN,
 * no control characters in strings, valid UTF-8 only, \u escapes with surrogate pairs (a
 * lone surrogate is an error), nesting at most JSON_MAX_DEPTH deep. On error it returns -1
 * and a message naming the byte offset. Object members keep their order; a repeated key
 * is allowed and json_get() finds the last one (as JavaScript's JSON.parse does).
 *
 * Writing: a json_buf grows as text is appended. json_put_string() escapes what JSON
 * requires and replaces invalid UTF-8 with U+FFFD, so the output is always valid JSON.
 */
#ifndef BITNET_JSON_H
#define BITNET_JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 64

typedef enum {
    JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT,
} json_type;

typedef struct {
    json_type type;
    double number;          /* JSON_NUMBER */
    int is_integer;         /* JSON_NUMBER written without fraction or exponent */
    const char *str;        /* JSON_STRING: decoded UTF-8, NUL-terminated (may hold NULs) */
    size_t len;             /* JSON_STRING: bytes; JSON_ARRAY/JSON_OBJECT: members */
    const char *key;        /* member of an object: its decoded key, else NULL */
    size_t key_len;
    int first_child;        /* index of the first member, -1 if none */
    int next;               /* index of the next sibling, -1 if last */
} json_value;

typedef struct {
    json_value *nodes;      /* (n_nodes) nodes[0] is the root */
    int n_nodes, cap_nodes;
    char *strings;          /* decoded strings and keys, each NUL-terminated */
    size_t n_strings, cap_strings;
    char error[160];        /* message of a failed parse */
} json_doc;

/* Parses text[0..len). Returns 0 (root = json_root(doc)) or -1 with doc->error set.
 * Always call json_free() afterwards. */
int json_parse(json_doc *doc, const char *text, size_t len);
void json_free(json_doc *doc);
const json_value *json_root(const json_doc *doc);

/* Object member by key (the last one with that key), or NULL. */
const json_value *json_get(const json_doc *doc, const json_value *obj, const char *key);
/* Array element i, or NULL. Walking with json_first/json_next is linear; use those in loops. */
const json_value *json_first(const json_doc *doc, const json_value *v);
const json_value *json_next(const json_doc *doc, const json_value *v);
const char *json_type_name(json_type t);

/* ---- writing ---- */

typedef struct {
    char *data;             /* NUL-terminated text */
    size_t len, cap;
    int failed;             /* an allocation failed: the text is incomplete */
} json_buf;

void json_buf_init(json_buf *b);
void json_buf_free(json_buf *b);
void json_put_raw(json_buf *b, const char *s, size_t n);
void json_put_text(json_buf *b, const char *s);                 /* raw NUL-terminated text */
void json_put_string(json_buf *b, const char *s, size_t n);     /* "..." with escapes */
void json_put_cstring(json_buf *b, const char *s);              /* same, NUL-terminated */
void json_put_int(json_buf *b, long long v);
void json_put_double(json_buf *b, double v);                    /* null for NaN/inf */

/* 1 if s[0..n) is well-formed UTF-8 (no surrogates, no overlongs, at most U+10FFFF). */
int json_utf8_valid(const char *s, size_t n);

#endif
