/* json.c: a small strict JSON reader and writer. See json.h.
 *
 * Sections: UTF-8, the reader (one recursive-descent function per JSON value kind),
 * looking things up, the writer.
 */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ===================================================================================== */
/* UTF-8                                                                                   */
/* ===================================================================================== */

/* Length of the well-formed UTF-8 character at s[0..n), or 0 if it is not one. */
static size_t utf8_char_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;            /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0;           /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;            /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0;           /* above U+10FFFF */
        return 4;
    }
    return 0;
}

int json_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_char_len(p + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

static size_t utf8_encode(unsigned long cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ===================================================================================== */
/* The reader                                                                              */
/* ===================================================================================== */

typedef struct {
    json_doc *doc;
    const char *s;
    size_t len, pos;
    int failed;
} reader;

static void fail(reader *r, const char *fmt, ...) {
    if (r->failed) return;
    r->failed = 1;
    char msg[120];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->doc->error, sizeof r->doc->error, "invalid JSON at byte %zu: %s", r->pos, msg);
}

static void skip_space(reader *r) {
    while (r->pos < r->len) {
        char c = r->s[r->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        r->pos++;
    }
}

/* A new node (index), or -1 when out of memory. */
static int new_node(reader *r, json_type type) {
    json_doc *d = r->doc;
    if (d->n_nodes == d->cap_nodes) {
        int cap = d->cap_nodes ? d->cap_nodes * 2 : 64;
        json_value *nodes = realloc(d->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) { fail(r, "out of memory"); return -1; }
        d->nodes = nodes;
        d->cap_nodes = cap;
    }
    json_value *v = &d->nodes[d->n_nodes];
    memset(v, 0, sizeof *v);
    v->type = type;
    v->first_child = -1;
    v->next = -1;
    return d->n_nodes++;
}

static int hex4(reader *r, unsigned long *out) {
    if (r->len - r->pos < 4) { fail(r, "a \\u escape needs four hex digits"); return -1; }
    unsigned long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = r->s[r->pos + (size_t)i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) { fail(r, "a \\u escape needs four hex digits"); return -1; }
        v = v * 16 + (unsigned long)d;
    }
    r->pos += 4;
    *out = v;
    return 0;
}

/* Reads a string starting at its opening quote; stores the decoded text in doc->strings
 * (which was sized for the whole input, so it never moves) and returns its offset. */
static long read_string(reader *r, size_t *out_len) {
    json_doc *d = r->doc;
    r->pos++;                                   /* the opening quote */
    size_t start = d->n_strings;
    for (;;) {
        if (r->pos >= r->len) { fail(r, "unterminated string"); return -1; }
        unsigned char c = (unsigned char)r->s[r->pos];
        if (c == '"') { r->pos++; break; }
        if (c < 0x20) { fail(r, "control character 0x%02x in a string (escape it)", c); return -1; }
        if (c == '\\') {
            r->pos++;
            if (r->pos >= r->len) { fail(r, "unterminated string"); return -1; }
            char e = r->s[r->pos++];
            char ch;
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned long cp;
                if (hex4(r, &cp) < 0) return -1;
                if (cp >= 0xDC00 && cp <= 0xDFFF) { fail(r, "lone low surrogate \\u%04lx", cp); return -1; }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned long lo;
                    if (r->len - r->pos < 2 || r->s[r->pos] != '\\' || r->s[r->pos + 1] != 'u') {
                        fail(r, "high surrogate \\u%04lx without its low half", cp);
                        return -1;
                    }
                    r->pos += 2;
                    if (hex4(r, &lo) < 0) return -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) { fail(r, "high surrogate \\u%04lx without its low half", cp); return -1; }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                /* an escape takes 6 or 12 input bytes and decodes to at most 4: it fits */
                d->n_strings += utf8_encode(cp, d->strings + d->n_strings);
                continue;
            }
            default: fail(r, "unknown escape \\%c", e >= 0x20 && e < 0x7f ? e : '?'); return -1;
            }
            d->strings[d->n_strings++] = ch;
            continue;
        }
        size_t k = utf8_char_len((const unsigned char *)r->s + r->pos, r->len - r->pos);
        if (k == 0) { fail(r, "invalid UTF-8 in a string"); return -1; }
        memcpy(d->strings + d->n_strings, r->s + r->pos, k);
        d->n_strings += k;
        r->pos += k;
    }
    d->strings[d->n_strings++] = 0;
    *out_len = d->n_strings - start - 1;
    return (long)start;
}

static int read_value(reader *r, int depth);

static int read_number(reader *r) {
    size_t start = r->pos;
    const char *s = r->s;
    int integer = 1;
    if (r->pos < r->len && s[r->pos] == '-') r->pos++;
    if (r->pos >= r->len || s[r->pos] < '0' || s[r->pos] > '9') { fail(r, "a number needs digits"); return -1; }
    if (s[r->pos] == '0') {
        r->pos++;
        if (r->pos < r->len && s[r->pos] >= '0' && s[r->pos] <= '9') { fail(r, "leading zero in a number"); return -1; }
    } else {
        while (r->pos < r->len && s[r->pos] >= '0' && s[r->pos] <= '9') r->pos++;
    }
    if (r->pos < r->len && s[r->pos] == '.') {
        integer = 0;
        r->pos++;
        if (r->pos >= r->len || s[r->pos] < '0' || s[r->pos] > '9') { fail(r, "digits must follow the decimal point"); return -1; }
        while (r->pos < r->len && s[r->pos] >= '0' && s[r->pos] <= '9') r->pos++;
    }
    if (r->pos < r->len && (s[r->pos] == 'e' || s[r->pos] == 'E')) {
        integer = 0;
        r->pos++;
        if (r->pos < r->len && (s[r->pos] == '+' || s[r->pos] == '-')) r->pos++;
        if (r->pos >= r->len || s[r->pos] < '0' || s[r->pos] > '9') { fail(r, "digits must follow the exponent"); return -1; }
        while (r->pos < r->len && s[r->pos] >= '0' && s[r->pos] <= '9') r->pos++;
    }
    size_t n = r->pos - start;
    char tmp[64];
    if (n >= sizeof tmp) {
        if (integer) { fail(r, "integer too long"); return -1; }
        n = sizeof tmp - 1;   /* a long fraction: the first 63 characters decide the double */
    }
    memcpy(tmp, s + start, n);
    tmp[n] = 0;
    int idx = new_node(r, JSON_NUMBER);
    if (idx < 0) return -1;
    r->doc->nodes[idx].number = strtod(tmp, NULL);
    r->doc->nodes[idx].is_integer = integer;
    return idx;
}

static int read_literal(reader *r, const char *word, json_type type) {
    size_t n = strlen(word);
    if (r->len - r->pos < n || memcmp(r->s + r->pos, word, n) != 0) { fail(r, "unexpected character"); return -1; }
    r->pos += n;
    return new_node(r, type);
}

/* Reads the members of an array or object after its opening bracket. */
static int read_container(reader *r, int depth, int is_object) {
    char close = is_object ? '}' : ']';
    int idx = new_node(r, is_object ? JSON_OBJECT : JSON_ARRAY);
    if (idx < 0) return -1;
    r->pos++;
    skip_space(r);
    if (r->pos < r->len && r->s[r->pos] == close) { r->pos++; return idx; }
    int last = -1;
    size_t count = 0;
    for (;;) {
        skip_space(r);
        long key = -1;
        size_t key_len = 0;
        if (is_object) {
            if (r->pos >= r->len || r->s[r->pos] != '"') { fail(r, "expected a string key"); return -1; }
            key = read_string(r, &key_len);
            if (key < 0) return -1;
            skip_space(r);
            if (r->pos >= r->len || r->s[r->pos] != ':') { fail(r, "expected ':' after a key"); return -1; }
            r->pos++;
        }
        int child = read_value(r, depth + 1);
        if (child < 0) return -1;
        json_value *cv = &r->doc->nodes[child];
        if (is_object) { cv->key = r->doc->strings + key; cv->key_len = key_len; }
        if (last < 0) r->doc->nodes[idx].first_child = child;
        else r->doc->nodes[last].next = child;
        last = child;
        count++;
        skip_space(r);
        if (r->pos >= r->len) { fail(r, "unterminated %s", is_object ? "object" : "array"); return -1; }
        char c = r->s[r->pos++];
        if (c == close) break;
        if (c != ',') { r->pos--; fail(r, "expected ',' or '%c'", close); return -1; }
    }
    r->doc->nodes[idx].len = count;
    return idx;
}

static int read_value(reader *r, int depth) {
    if (depth > JSON_MAX_DEPTH) { fail(r, "nested deeper than %d levels", JSON_MAX_DEPTH); return -1; }
    skip_space(r);
    if (r->pos >= r->len) { fail(r, "unexpected end of input"); return -1; }
    char c = r->s[r->pos];
    switch (c) {
    case '{': return read_container(r, depth, 1);
    case '[': return read_container(r, depth, 0);
    case 't': return read_literal(r, "true", JSON_TRUE);
    case 'f': return read_literal(r, "false", JSON_FALSE);
    case 'n': return read_literal(r, "null", JSON_NULL);
    case '"': {
        size_t n;
        long off = read_string(r, &n);
        if (off < 0) return -1;
        int idx = new_node(r, JSON_STRING);
        if (idx < 0) return -1;
        r->doc->nodes[idx].str = r->doc->strings + off;
        r->doc->nodes[idx].len = n;
        return idx;
    }
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return read_number(r);
        fail(r, "unexpected character");
        return -1;
    }
}

int json_parse(json_doc *doc, const char *text, size_t len) {
    memset(doc, 0, sizeof *doc);
    doc->strings = malloc(len + 1);    /* decoded strings never outgrow the input */
    if (!doc->strings) { snprintf(doc->error, sizeof doc->error, "out of memory"); return -1; }
    doc->cap_strings = len + 1;
    reader r = {doc, text, len, 0, 0};
    int root = read_value(&r, 1);
    if (root >= 0) {
        skip_space(&r);
        if (r.pos != len) fail(&r, "unexpected text after the value");
    }
    return r.failed ? -1 : 0;
}

void json_free(json_doc *doc) {
    free(doc->nodes);
    free(doc->strings);
    doc->nodes = NULL;
    doc->strings = NULL;
}

const json_value *json_root(const json_doc *doc) { return doc->n_nodes ? &doc->nodes[0] : NULL; }

/* ===================================================================================== */
/* Looking things up                                                                       */
/* ===================================================================================== */

const json_value *json_first(const json_doc *doc, const json_value *v) {
    if (!v || (v->type != JSON_ARRAY && v->type != JSON_OBJECT) || v->first_child < 0) return NULL;
    return &doc->nodes[v->first_child];
}

const json_value *json_next(const json_doc *doc, const json_value *v) {
    return v && v->next >= 0 ? &doc->nodes[v->next] : NULL;
}

const json_value *json_get(const json_doc *doc, const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    const json_value *found = NULL;
    for (const json_value *m = json_first(doc, obj); m; m = json_next(doc, m))
        if (m->key_len == n && memcmp(m->key, key, n) == 0) found = m;
    return found;
}

const char *json_type_name(json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_FALSE: case JSON_TRUE: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}

/* ===================================================================================== */
/* The writer                                                                              */
/* ===================================================================================== */

void json_buf_init(json_buf *b) { memset(b, 0, sizeof *b); }

void json_buf_free(json_buf *b) { free(b->data); json_buf_init(b); }

void json_put_raw(json_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) { b->failed = 1; return; }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void json_put_text(json_buf *b, const char *s) { json_put_raw(b, s, strlen(s)); }

void json_put_string(json_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    json_put_raw(b, "\"", 1);
    size_t i = 0, run = 0;     /* bytes p[run..i) need no escaping and are copied in one go */
    while (i < n) {
        unsigned char c = p[i];
        const char *esc = NULL;
        char tmp[8];
        size_t k = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20 || c == 0x7f) { snprintf(tmp, sizeof tmp, "\\u%04x", c); esc = tmp; }
        else if (c >= 0x80) {
            k = utf8_char_len(p + i, n - i);
            if (k == 0) { esc = "\xEF\xBF\xBD"; k = 1; }      /* U+FFFD for an invalid byte */
        }
        if (esc) {
            json_put_raw(b, s + run, i - run);
            json_put_text(b, esc);
            i += k;
            run = i;
        } else {
            i += k;
        }
    }
    json_put_raw(b, s + run, n - run);
    json_put_raw(b, "\"", 1);
}

void json_put_cstring(json_buf *b, const char *s) { json_put_string(b, s, strlen(s)); }

void json_put_int(json_buf *b, long long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    json_put_raw(b, tmp, (size_t)n);
}

void json_put_double(json_buf *b, double v) {
    if (!isfinite(v)) { json_put_text(b, "null"); return; }
    char tmp[40];
    int n = snprintf(tmp, sizeof tmp, "%.17g", v);
    json_put_raw(b, tmp, (size_t)n);
}
