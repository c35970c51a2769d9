/* server.c: `./model serve`, an HTTP server for the compiled model.
 *
 *   POST /generate              {"prompt": "...", "max_tokens": 50, ...} -> {"text", "tokens", "finish_reason"}
 *   POST /v1/completions        OpenAI-compatible, "stream": true for server-sent events
 *   POST /v1/chat/completions   the same with the model's chat template (chat.h)
 *   GET  /v1/models, GET /health
 *
 * Design. The main thread accepts connections and starts one thread per connection (at
 * most parallel + queue + 64 at once; beyond that a 503 is written at once). A connection
 * thread reads and checks the request (http.c, json.c) without holding any model state,
 * so slow or broken clients cost a thread, never a decoding slot. To generate, it takes
 * one of --parallel slots (a bn_context with its own KV cache; all share the read-only
 * weights), waiting in a queue of at most --queue requests; a request that finds the
 * queue full gets 503 with Retry-After. The slot is released as soon as generation ends,
 * including when the client disconnects (checked after every token) or while waiting.
 * Threads: each slot's context gets max(1, --threads / --parallel) threads, so the slots
 * together use about --threads cores and run truly in parallel. Results never depend on
 * the thread count (see threads.c), so a seeded request gives the same text alone or
 * under load.
 *
 * Shutdown: SIGINT/SIGTERM stop accepting; in-flight generations stop at their next token
 * and end their responses normally (streams get a final chunk and "data: [DONE]"); queued
 * requests get 503; the process exits 0 once connections are closed (or after --timeout).
 *
 * Sections: the server state, slots and the queue, errors, reading a generation request,
 * generating (stop strings, streaming), the endpoints, connections, the accept loop.
 */
#include "modes.h"
#include "platform.h"

#include <stdio.h>

#if !PLATFORM_HAS_SERVER

int server_run(const options *o) {
    (void)o;
    fprintf(stderr, "error: serve is not supported on this target (" PLATFORM_NAME "): the server needs POSIX "
                    "sockets and threads; build for a Linux or macOS target to serve, or use --chat here\n");
    return 2;
}

#else

#include "bitnet.h"
#include "chat.h"
#include "http.h"
#include "json.h"
#include "model_internal.h"
#include "text.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ===================================================================================== */
/* The server state                                                                        */
/* ===================================================================================== */

#define MAX_STOPS 16               /* stop strings per request */
#define MAX_STOP_LEN 256           /* bytes per stop string */
#define MAX_MESSAGES 4096          /* chat messages per request */
#define EXTRA_CONNECTIONS 64       /* connection threads beyond parallel + queue */

typedef struct {
    bn_context *ctx;               /* KV cache + thread pool of this slot */
    int busy;
} slot;

static struct {
    const options *o;
    const Tokenizer *tok;          /* NULL: a model without a tokenizer (ids only) */
    slot *slots;
    int n_slots;
    int n_ctx;                     /* context size of every slot, tokens */
    int threads_per_slot;
    int chat_format;               /* CHAT_* */
    char eos_text[128];            /* the EOS token's text (Falcon3 puts it after answers) */
    char model_name[256];

    pthread_mutex_t mu;            /* guards everything below */
    pthread_cond_t changed;        /* a slot was freed or a connection ended */
    int waiting;                   /* requests waiting for a slot */
    int connections;               /* connection threads alive */
    int max_connections;

    volatile sig_atomic_t stop;    /* SIGINT/SIGTERM seen */
    int wake_pipe[2];              /* the signal handler writes here to wake the accept loop */
    atomic_ulong next_id;          /* for response ids */
} S;

/* ===================================================================================== */
/* Slots and the queue                                                                     */
/* ===================================================================================== */

enum { SLOT_QUEUE_FULL = -1, SLOT_SHUTDOWN = -2, SLOT_CLIENT_GONE = -3 };

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &ts);
}

static int free_slot_index(void) {
    for (int i = 0; i < S.n_slots; i++) if (!S.slots[i].busy) return i;
    return -1;
}

/* A free slot's index, or SLOT_*: the queue is full, the server is stopping, or the
 * client closed its connection while it waited. */
static int slot_acquire(int fd) {
    pthread_mutex_lock(&S.mu);
    int i = free_slot_index();
    if (i < 0) {
        if (S.waiting >= S.o->queue) { pthread_mutex_unlock(&S.mu); return SLOT_QUEUE_FULL; }
        S.waiting++;
        while ((i = free_slot_index()) < 0 && !S.stop) {
            timed_wait(&S.changed, &S.mu, 200);
            if (free_slot_index() < 0 && http_peer_closed(fd)) break;
        }
        S.waiting--;
        if (S.stop) i = SLOT_SHUTDOWN;
        else if (i < 0) i = SLOT_CLIENT_GONE;
    }
    if (i >= 0) S.slots[i].busy = 1;
    pthread_mutex_unlock(&S.mu);
    return i;
}

static void slot_release(int i) {
    pthread_mutex_lock(&S.mu);
    S.slots[i].busy = 0;
    pthread_cond_broadcast(&S.changed);
    pthread_mutex_unlock(&S.mu);
}

/* ===================================================================================== */
/* Errors: {"error": {"message", "type", "param", "code"}} as OpenAI sends them             */
/* ===================================================================================== */

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 503: return "server_overloaded";
    case 500: return "server_error";
    default: return "invalid_request_error";
    }
}

static void send_error_full(int fd, int status, const char *message, const char *param, const char *code) {
    json_buf b;
    json_buf_init(&b);
    json_put_text(&b, "{\"error\":{\"message\":");
    json_put_cstring(&b, message);
    json_put_text(&b, ",\"type\":");
    json_put_cstring(&b, error_type(status));
    json_put_text(&b, ",\"param\":");
    if (param) json_put_cstring(&b, param); else json_put_text(&b, "null");
    json_put_text(&b, ",\"code\":");
    if (code) json_put_cstring(&b, code); else json_put_text(&b, "null");
    json_put_text(&b, "}}\n");
    const char *extra = NULL;
    if (status == 503) extra = "Retry-After: 1\r\n";
    else if (status == 401) extra = "WWW-Authenticate: Bearer\r\n";
    else if (status == 405) extra = "Allow: GET, POST\r\n";
    if (!b.failed) http_respond(fd, status, "application/json", extra, b.data, b.len);
    json_buf_free(&b);
}

static void send_error(int fd, int status, const char *message) { send_error_full(fd, status, message, NULL, NULL); }

/* ===================================================================================== */
/* Reading a generation request                                                             */
/* ===================================================================================== */

enum { EP_GENERATE, EP_COMPLETIONS, EP_CHAT };

typedef struct {
    int endpoint;                  /* EP_* */
    int32_t *prompt;               /* (n_prompt) malloc'ed */
    int n_prompt;
    int max_tokens;
    bn_sampling s;
    int ignore_eos;
    int stream;
    int include_usage;             /* stream_options.include_usage */
    char stops[MAX_STOPS][MAX_STOP_LEN + 1];
    size_t stop_len[MAX_STOPS];
    int n_stops;
} gen_request;

/* A field error: status 400, the message, and the parameter it concerns. */
typedef struct {
    char message[300];
    const char *param;
    const char *code;
} req_error;

static int bad(req_error *e, const char *param, const char *fmt, const char *a, const char *b) {
    snprintf(e->message, sizeof e->message, fmt, a, b);
    e->param = param;
    return -1;
}

/* A number field: 0 absent (or null), 1 read into *out, -1 wrong type or range. */
static int get_number(const json_doc *d, const json_value *obj, const char *key, int integer,
                      double lo, double hi, double *out, req_error *e) {
    const json_value *v = json_get(d, obj, key);
    if (!v || v->type == JSON_NULL) return 0;
    char range[80];
    if (integer) snprintf(range, sizeof range, "an integer in %.0f..%.0f", lo, hi);
    else snprintf(range, sizeof range, "a number in %g..%g", lo, hi);
    if (v->type != JSON_NUMBER) return bad(e, key, "'%s' must be %s", key, range);
    if ((integer && !v->is_integer) || !(v->number >= lo && v->number <= hi))
        return bad(e, key, "'%s' must be %s", key, range);
    *out = v->number;
    return 1;
}

static int get_bool(const json_doc *d, const json_value *obj, const char *key, int *out, req_error *e) {
    const json_value *v = json_get(d, obj, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_TRUE && v->type != JSON_FALSE) return bad(e, key, "'%s' must be a boolean, not %s", key, json_type_name(v->type));
    *out = v->type == JSON_TRUE;
    return 1;
}

static int add_stop(gen_request *g, const json_value *v, req_error *e) {
    if (v->type != JSON_STRING) return bad(e, "stop", "'stop' must be a string or an array of strings%s%s", "", "");
    if (v->len == 0) return 0;                                   /* an empty stop string: ignore */
    if (v->len > MAX_STOP_LEN) return bad(e, "stop", "a stop string is longer than %s bytes%s", "256", "");
    if (g->n_stops == MAX_STOPS) return bad(e, "stop", "at most %s stop strings%s", "16", "");
    memcpy(g->stops[g->n_stops], v->str, v->len);
    g->stop_len[g->n_stops++] = v->len;
    return 0;
}

/* Text -> ids into g->prompt (appending BOS as the model does). */
static int encode_prompt(gen_request *g, const char *text, size_t len, int parse_special, req_error *e) {
    if (!S.tok) return bad(e, "prompt", "this model was built without a tokenizer: send the prompt as an array of token ids%s%s", "", "");
    int n = text_encode(text, len, 1, parse_special, &g->prompt);
    if (n < 0) return bad(e, "prompt", "%s%s", bn_last_error(), "");
    g->n_prompt = n;
    return 0;
}

/* "prompt": a string, an array with one string, or an array of token ids. */
static int read_prompt(const json_doc *d, const json_value *root, gen_request *g, req_error *e) {
    const json_value *p = json_get(d, root, "prompt");
    if (!p) return bad(e, "prompt", "'prompt' is required%s%s", "", "");
    if (p->type == JSON_STRING) return encode_prompt(g, p->str, p->len, S.o->parse_special, e);
    if (p->type != JSON_ARRAY) return bad(e, "prompt", "'prompt' must be a string or an array, not %s%s", json_type_name(p->type), "");
    const json_value *first = json_first(d, p);
    if (first && first->type == JSON_STRING) {
        if (p->len != 1) return bad(e, "prompt", "one prompt per request: 'prompt' has %s strings%s", p->len > 1 ? "several" : "no", "");
        return encode_prompt(g, first->str, first->len, S.o->parse_special, e);
    }
    if (p->len > (size_t)S.n_ctx) {
        char n[32];
        snprintf(n, sizeof n, "%d", S.n_ctx);
        e->code = "context_length_exceeded";
        return bad(e, "prompt", "the prompt is longer than the context of %s tokens (--ctx)%s", n, "");
    }
    g->prompt = malloc((p->len + 1) * sizeof(int32_t));
    if (!g->prompt) return bad(e, "prompt", "out of memory%s%s", "", "");
    for (const json_value *t = first; t; t = json_next(d, t)) {
        if (t->type != JSON_NUMBER || !t->is_integer || t->number < 0 || t->number >= BN_N_VOCAB)
            return bad(e, "prompt", "'prompt' as an array must hold token ids (integers in 0..n_vocab-1)%s%s", "", "");
        g->prompt[g->n_prompt++] = (int32_t)t->number;
    }
    return 0;
}

/* "content": a string, null, or an array of {"type": "text", "text": ...} parts (joined). */
static int read_content(const json_doc *d, const json_value *c, json_buf *out, req_error *e) {
    if (!c || c->type == JSON_NULL) return 0;
    if (c->type == JSON_STRING) { json_put_raw(out, c->str, c->len); return 0; }
    if (c->type != JSON_ARRAY) return bad(e, "messages", "a message's 'content' must be a string or an array of parts%s%s", "", "");
    for (const json_value *part = json_first(d, c); part; part = json_next(d, part)) {
        const json_value *type = json_get(d, part, "type");
        const json_value *text = json_get(d, part, "text");
        if (!type || type->type != JSON_STRING || strcmp(type->str, "text") != 0 || !text || text->type != JSON_STRING)
            return bad(e, "messages", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported%s%s", "", "");
        json_put_raw(out, text->str, text->len);
    }
    return 0;
}

/* "messages" -> the chat template's text -> ids. */
static int read_messages(const json_doc *d, const json_value *root, gen_request *g, req_error *e) {
    const json_value *m = json_get(d, root, "messages");
    if (!m) return bad(e, "messages", "'messages' is required%s%s", "", "");
    if (m->type != JSON_ARRAY || m->len == 0) return bad(e, "messages", "'messages' must be a non-empty array of {\"role\", \"content\"}%s%s", "", "");
    if (m->len > MAX_MESSAGES) return bad(e, "messages", "too many messages (limit %s)%s", "4096", "");
    int n = (int)m->len;
    ChatMessage *msgs = calloc((size_t)n, sizeof *msgs);
    json_buf *contents = calloc((size_t)n, sizeof *contents);
    int rc = -1, i = 0;
    if (!msgs || !contents) { bad(e, "messages", "out of memory%s%s", "", ""); goto out; }
    for (const json_value *msg = json_first(d, m); msg; msg = json_next(d, msg), i++) {
        if (msg->type != JSON_OBJECT) { bad(e, "messages", "each message must be an object%s%s", "", ""); goto out; }
        const json_value *role = json_get(d, msg, "role");
        if (!role || role->type != JSON_STRING) { bad(e, "messages", "each message needs a string 'role'%s%s", "", ""); goto out; }
        if (strcmp(role->str, "system") == 0 || strcmp(role->str, "developer") == 0) msgs[i].role = "system";
        else if (strcmp(role->str, "user") == 0) msgs[i].role = "user";
        else if (strcmp(role->str, "assistant") == 0) msgs[i].role = "assistant";
        else { bad(e, "messages", "unknown role '%.40s' (use system, user or assistant)%s", role->str, ""); goto out; }
        json_buf_init(&contents[i]);
        json_put_raw(&contents[i], "", 0);                     /* never NULL data */
        if (read_content(d, json_get(d, msg, "content"), &contents[i], e) < 0) goto out;
        if (contents[i].failed) { bad(e, "messages", "out of memory%s%s", "", ""); goto out; }
        msgs[i].content = contents[i].data;
    }
    size_t need = chat_apply(S.chat_format, msgs, n, 1, S.eos_text, NULL, 0);
    char *text = malloc(need + 1);
    if (!text) { bad(e, "messages", "out of memory%s%s", "", ""); goto out; }
    chat_apply(S.chat_format, msgs, n, 1, S.eos_text, text, need + 1);
    rc = encode_prompt(g, text, need, 1, e);
    if (rc < 0) e->param = "messages";
    free(text);
out:
    for (int k = 0; k < n && contents; k++) json_buf_free(&contents[k]);
    free(contents);
    free(msgs);
    return rc;
}

/* Every field of a generation request, checked. Unknown fields are ignored (OpenAI clients
 * send many: user, logprobs, presence_penalty, ...). */
static int read_gen_request(const json_doc *d, int endpoint, gen_request *g, req_error *e) {
    const json_value *root = json_root(d);
    if (root->type != JSON_OBJECT) return bad(e, NULL, "the request body must be a JSON object, not %s%s", json_type_name(root->type), "");
    g->endpoint = endpoint;
    g->s = S.o->s;
    g->ignore_eos = S.o->ignore_eos;
    double x;
    int r;
    int max_tokens = S.o->n_predict;
    if ((r = get_number(d, root, "max_tokens", 1, 0, INT_MAX, &x, e)) < 0) return -1;
    if (r) max_tokens = (int)x;
    if ((r = get_number(d, root, "max_completion_tokens", 1, 0, INT_MAX, &x, e)) < 0) return -1;
    if (r) max_tokens = (int)x;
    if ((r = get_number(d, root, "temperature", 0, 0, 100, &x, e)) < 0) return -1;
    if (r) g->s.temperature = (float)x;
    if ((r = get_number(d, root, "top_k", 1, -1, BN_N_VOCAB, &x, e)) < 0) return -1;
    if (r) g->s.top_k = x < 0 ? 0 : (int)x;
    if ((r = get_number(d, root, "top_p", 0, 0, 1, &x, e)) < 0) return -1;
    if (r) g->s.top_p = (float)x;
    if ((r = get_number(d, root, "min_p", 0, 0, 1, &x, e)) < 0) return -1;
    if (r) g->s.min_p = (float)x;
    if ((r = get_number(d, root, "repeat_penalty", 0, 0.01, 100, &x, e)) < 0) return -1;
    if (r) g->s.repeat_penalty = (float)x;
    if ((r = get_number(d, root, "repeat_last_n", 1, 0, 1 << 20, &x, e)) < 0) return -1;
    if (r) g->s.repeat_last_n = (int)x;
    if ((r = get_number(d, root, "seed", 1, -9.2e18, 9.2e18, &x, e)) < 0) return -1;
    if (r) g->s.seed = (uint64_t)(int64_t)x;
    if ((r = get_number(d, root, "n", 1, 1, 1, &x, e)) < 0) { snprintf(e->message, sizeof e->message, "'n' must be 1 (one completion per request)"); return -1; }
    if (get_bool(d, root, "stream", &g->stream, e) < 0) return -1;
    if (get_bool(d, root, "ignore_eos", &g->ignore_eos, e) < 0) return -1;
    const json_value *so = json_get(d, root, "stream_options");
    if (so && so->type != JSON_NULL) {
        if (so->type != JSON_OBJECT) return bad(e, "stream_options", "'stream_options' must be an object%s%s", "", "");
        if (get_bool(d, so, "include_usage", &g->include_usage, e) < 0) return -1;
    }
    const json_value *stop = json_get(d, root, "stop");
    if (stop && stop->type == JSON_ARRAY) {
        for (const json_value *s = json_first(d, stop); s; s = json_next(d, s))
            if (add_stop(g, s, e) < 0) return -1;
    } else if (stop && stop->type != JSON_NULL) {
        if (add_stop(g, stop, e) < 0) return -1;
    }

    if (endpoint == EP_CHAT) { if (read_messages(d, root, g, e) < 0) return -1; }
    else if (read_prompt(d, root, g, e) < 0) return -1;

    const char *param = endpoint == EP_CHAT ? "messages" : "prompt";
    if (g->n_prompt == 0) return bad(e, param, "the prompt is empty%s%s", "", "");
    if (g->n_prompt >= S.n_ctx) {
        snprintf(e->message, sizeof e->message,
                 "the prompt has %d tokens but the context holds %d (--ctx %d); shorten the prompt",
                 g->n_prompt, S.n_ctx, S.n_ctx);
        e->param = param;
        e->code = "context_length_exceeded";
        return -1;
    }
    g->max_tokens = max_tokens < S.n_ctx - g->n_prompt ? max_tokens : S.n_ctx - g->n_prompt;
    return 0;
}

/* ===================================================================================== */
/* Generating: text, stop strings, streaming                                               */
/* ===================================================================================== */

typedef struct {
    int fd;
    const gen_request *g;
    TokenizerStream ts;
    char *piece;                   /* (tokenizer_stream_bound) scratch for one token's text */
    json_buf text;                 /* the generated text so far (cut at a stop string) */
    size_t sent;                   /* bytes of text already streamed */
    size_t searched;               /* text before this offset holds no stop string start */
    int n_tokens;
    int stopped;                   /* end of generation token or a stop string */
    int client_gone;
    char id[48];
    long created;
} gen_state;

/* How many bytes at the end of the text could still become a stop string: hold them back. */
static size_t stop_holdback(const gen_state *st) {
    const gen_request *g = st->g;
    size_t hold = 0;
    for (int i = 0; i < g->n_stops; i++) {
        size_t max = g->stop_len[i] - 1 < st->text.len ? g->stop_len[i] - 1 : st->text.len;
        for (size_t k = max; k > hold; k--)
            if (memcmp(st->text.data + st->text.len - k, g->stops[i], k) == 0) { hold = k; break; }
    }
    return hold;
}

/* Cuts the text at the first stop string; returns 1 if one was found. */
static int cut_at_stop(gen_state *st) {
    const gen_request *g = st->g;
    size_t best = (size_t)-1;
    for (int i = 0; i < g->n_stops; i++) {
        size_t L = g->stop_len[i];
        for (size_t p = st->searched; p + L <= st->text.len; p++)
            if (memcmp(st->text.data + p, g->stops[i], L) == 0) { if (p < best) best = p; break; }
    }
    if (best == (size_t)-1) {
        size_t hold = 0;
        for (int i = 0; i < g->n_stops; i++) if (g->stop_len[i] > hold) hold = g->stop_len[i];
        if (st->text.len > hold) st->searched = st->text.len - hold;
        return 0;
    }
    st->text.len = best;
    st->text.data[best] = 0;
    return 1;
}

static int send_event(gen_state *st, const json_buf *event) {
    if (st->client_gone) return -1;
    if (event->failed || http_send(st->fd, "data: ", 6) < 0 || http_send(st->fd, event->data, event->len) < 0 ||
        http_send(st->fd, "\n\n", 2) < 0) {
        st->client_gone = 1;
        return -1;
    }
    return 0;
}

/* One streamed chunk: content (may be empty) and, in the last one, the finish reason. */
static void stream_chunk(gen_state *st, const char *content, size_t n, const char *finish) {
    json_buf b;
    json_buf_init(&b);
    int ep = st->g->endpoint;
    if (ep == EP_GENERATE) {
        json_put_text(&b, "{\"text\":");
        json_put_string(&b, content, n);
        if (finish) {
            json_put_text(&b, ",\"tokens\":");
            json_put_int(&b, st->n_tokens);
            json_put_text(&b, ",\"finish_reason\":");
            json_put_cstring(&b, finish);
        }
        json_put_text(&b, "}");
    } else {
        json_put_text(&b, "{\"id\":");
        json_put_cstring(&b, st->id);
        json_put_text(&b, ep == EP_CHAT ? ",\"object\":\"chat.completion.chunk\"" : ",\"object\":\"text_completion\"");
        json_put_text(&b, ",\"created\":");
        json_put_int(&b, st->created);
        json_put_text(&b, ",\"model\":");
        json_put_cstring(&b, S.model_name);
        json_put_text(&b, ",\"choices\":[{\"index\":0,");
        if (ep == EP_CHAT) {
            if (finish) json_put_text(&b, "\"delta\":{}");
            else {
                json_put_text(&b, "\"delta\":{\"content\":");
                json_put_string(&b, content, n);
                json_put_text(&b, "}");
            }
        } else {
            json_put_text(&b, "\"text\":");
            json_put_string(&b, content, n);
            json_put_text(&b, ",\"logprobs\":null");
        }
        json_put_text(&b, ",\"finish_reason\":");
        if (finish) json_put_cstring(&b, finish); else json_put_text(&b, "null");
        json_put_text(&b, "}]}");
    }
    send_event(st, &b);
    json_buf_free(&b);
}

/* Streams the text that can no longer turn into a stop string. */
static void stream_ready_text(gen_state *st, int final) {
    size_t end = final ? st->text.len : st->text.len - stop_holdback(st);
    if (end > st->sent) {
        stream_chunk(st, st->text.data + st->sent, end - st->sent, NULL);
        st->sent = end;
    }
}

/* bn_generate's per-token callback: returns 1 to stop. */
static int on_token(void *user, int32_t id) {
    gen_state *st = user;
    st->n_tokens++;
    if (!st->g->ignore_eos && S.tok && tokenizer_is_eog(S.tok, id)) { st->stopped = 1; return 1; }
    if (S.tok) {
        size_t n = tokenizer_stream_push(&st->ts, id, st->piece);
        json_put_raw(&st->text, st->piece, n);
    } else {
        char tmp[24];
        int n = snprintf(tmp, sizeof tmp, "[%d]", (int)id);
        json_put_raw(&st->text, tmp, (size_t)n);
    }
    if (st->text.failed) { st->client_gone = 1; return 1; }
    if (st->g->n_stops && cut_at_stop(st)) st->stopped = 1;
    if (st->g->stream) stream_ready_text(st, st->stopped);
    else if (http_peer_closed(st->fd)) st->client_gone = 1;
    return st->stopped || st->client_gone || S.stop;
}

static void put_usage(json_buf *b, const gen_state *st) {
    json_put_text(b, "\"usage\":{\"prompt_tokens\":");
    json_put_int(b, st->g->n_prompt);
    json_put_text(b, ",\"completion_tokens\":");
    json_put_int(b, st->n_tokens);
    json_put_text(b, ",\"total_tokens\":");
    json_put_int(b, st->g->n_prompt + st->n_tokens);
    json_put_text(b, "}");
}

/* The whole (non-streamed) response body. */
static void put_response(json_buf *b, const gen_state *st, const char *finish) {
    int ep = st->g->endpoint;
    if (ep == EP_GENERATE) {
        json_put_text(b, "{\"text\":");
        json_put_string(b, st->text.data, st->text.len);
        json_put_text(b, ",\"tokens\":");
        json_put_int(b, st->n_tokens);
        json_put_text(b, ",\"prompt_tokens\":");
        json_put_int(b, st->g->n_prompt);
        json_put_text(b, ",\"finish_reason\":");
        json_put_cstring(b, finish);
        json_put_text(b, "}\n");
        return;
    }
    json_put_text(b, "{\"id\":");
    json_put_cstring(b, st->id);
    json_put_text(b, ep == EP_CHAT ? ",\"object\":\"chat.completion\"" : ",\"object\":\"text_completion\"");
    json_put_text(b, ",\"created\":");
    json_put_int(b, st->created);
    json_put_text(b, ",\"model\":");
    json_put_cstring(b, S.model_name);
    json_put_text(b, ",\"choices\":[{\"index\":0,");
    if (ep == EP_CHAT) {
        json_put_text(b, "\"message\":{\"role\":\"assistant\",\"content\":");
        json_put_string(b, st->text.data, st->text.len);
        json_put_text(b, "}");
    } else {
        json_put_text(b, "\"text\":");
        json_put_string(b, st->text.data, st->text.len);
        json_put_text(b, ",\"logprobs\":null");
    }
    json_put_text(b, ",\"finish_reason\":");
    json_put_cstring(b, finish);
    json_put_text(b, "}],");
    put_usage(b, st);
    json_put_text(b, "}\n");
}

static void run_generation(int fd, gen_request *g) {
    int si = slot_acquire(fd);
    if (si == SLOT_QUEUE_FULL) {
        char msg[160];
        snprintf(msg, sizeof msg, "the server is busy: %d requests are generating and %d waiting (--parallel %d, --queue %d); retry later",
                 S.n_slots, S.o->queue, S.n_slots, S.o->queue);
        send_error(fd, 503, msg);
        return;
    }
    if (si == SLOT_SHUTDOWN) { send_error(fd, 503, "the server is shutting down"); return; }
    if (si == SLOT_CLIENT_GONE) return;

    gen_state st;
    memset(&st, 0, sizeof st);
    st.fd = fd;
    st.g = g;
    st.created = (long)time(NULL);
    snprintf(st.id, sizeof st.id, "%s-%lx%08lx", g->endpoint == EP_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long)st.created, (unsigned long)atomic_fetch_add(&S.next_id, 1));
    json_buf_init(&st.text);
    json_put_raw(&st.text, "", 0);
    if (S.tok) {
        tokenizer_stream_init(&st.ts, S.tok, 0);
        st.piece = malloc(tokenizer_stream_bound(S.tok) + 1);
    }
    int32_t *out = malloc(((size_t)g->max_tokens + 1) * sizeof(int32_t));
    if (!out || (S.tok && !st.piece) || st.text.failed) {
        send_error(fd, 500, "out of memory");
        goto done;
    }
    if (g->stream) {
        if (http_respond_head(fd, 200, "text/event-stream", NULL) < 0) goto done;
        if (g->endpoint == EP_CHAT) {
            /* the first chunk names the role, as OpenAI's does */
            json_buf b;
            json_buf_init(&b);
            json_put_text(&b, "{\"id\":");
            json_put_cstring(&b, st.id);
            json_put_text(&b, ",\"object\":\"chat.completion.chunk\",\"created\":");
            json_put_int(&b, st.created);
            json_put_text(&b, ",\"model\":");
            json_put_cstring(&b, S.model_name);
            json_put_text(&b, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}");
            send_event(&st, &b);
            json_buf_free(&b);
        }
    }
    bn_context *c = S.slots[si].ctx;
    bn_reset(c);
    int n = st.client_gone ? 0 : bn_generate(c, g->prompt, g->n_prompt, g->max_tokens, &g->s, 1, out, on_token, &st);
    if (n < 0) {
        if (g->stream) st.client_gone = 1;          /* cannot change the status any more: cut */
        else send_error(fd, 500, bn_last_error());
        goto done;
    }
    if (S.tok && !st.stopped && !st.client_gone) {
        size_t k = tokenizer_stream_flush(&st.ts, st.piece);
        json_put_raw(&st.text, st.piece, k);
        if (g->n_stops && cut_at_stop(&st)) st.stopped = 1;
    }
    const char *finish = st.stopped ? "stop" : (st.n_tokens >= g->max_tokens ? "length" : "stop");
    if (st.client_gone) goto done;
    if (g->stream) {
        stream_ready_text(&st, 1);
        stream_chunk(&st, "", 0, finish);
        if (g->include_usage && g->endpoint != EP_GENERATE) {
            json_buf b;
            json_buf_init(&b);
            json_put_text(&b, "{\"id\":");
            json_put_cstring(&b, st.id);
            json_put_text(&b, g->endpoint == EP_CHAT ? ",\"object\":\"chat.completion.chunk\"" : ",\"object\":\"text_completion\"");
            json_put_text(&b, ",\"created\":");
            json_put_int(&b, st.created);
            json_put_text(&b, ",\"model\":");
            json_put_cstring(&b, S.model_name);
            json_put_text(&b, ",\"choices\":[],");
            put_usage(&b, &st);
            json_put_text(&b, "}");
            send_event(&st, &b);
            json_buf_free(&b);
        }
        if (!st.client_gone) http_send(fd, "data: [DONE]\n\n", 14);
    } else {
        json_buf b;
        json_buf_init(&b);
        put_response(&b, &st, finish);
        if (b.failed) send_error(fd, 500, "out of memory");
        else http_respond(fd, 200, "application/json", NULL, b.data, b.len);
        json_buf_free(&b);
    }
done:
    slot_release(si);
    free(out);
    free(st.piece);
    json_buf_free(&st.text);
}

/* ===================================================================================== */
/* The endpoints                                                                           */
/* ===================================================================================== */

static void handle_health(int fd) {
    pthread_mutex_lock(&S.mu);
    int busy = 0;
    for (int i = 0; i < S.n_slots; i++) busy += S.slots[i].busy;
    int waiting = S.waiting;
    pthread_mutex_unlock(&S.mu);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"ok\",\"slots\":%d,\"slots_busy\":%d,\"queued\":%d}\n",
                     S.n_slots, busy, waiting);
    http_respond(fd, 200, "application/json", NULL, body, (size_t)n);
}

static void handle_models(int fd) {
    json_buf b;
    json_buf_init(&b);
    json_put_text(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    json_put_cstring(&b, S.model_name);
    json_put_text(&b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"bitnet-aot\",\"context_length\":");
    json_put_int(&b, S.n_ctx);
    json_put_text(&b, "}]}\n");
    if (!b.failed) http_respond(fd, 200, "application/json", NULL, b.data, b.len);
    json_buf_free(&b);
}

static void handle_generation(int fd, const http_request *req, int endpoint) {
    json_doc d;
    if (json_parse(&d, req->body ? req->body : "", req->body_len) < 0) {
        send_error(fd, 400, req->body_len ? d.error : "the request needs a JSON body");
        json_free(&d);
        return;
    }
    gen_request *g = calloc(1, sizeof *g);
    req_error e;
    memset(&e, 0, sizeof e);
    if (!g) send_error(fd, 500, "out of memory");
    else if (read_gen_request(&d, endpoint, g, &e) < 0) send_error_full(fd, 400, e.message, e.param, e.code);
    else {
        json_free(&d);             /* the parsed body is not needed while generating */
        run_generation(fd, g);
    }
    json_free(&d);
    if (g) free(g->prompt);
    free(g);
}

static int authorized(const http_request *req) {
    if (!S.o->api_key) return 1;
    const char *a = req->authorization;
    if (req->authorization_too_long || strncasecmp(a, "Bearer ", 7) != 0) return 0;
    a += 7;
    while (*a == ' ') a++;
    return http_secret_equal(a, S.o->api_key);
}

static void route(int fd, const http_request *req) {
    static const struct { const char *path; const char *method; int endpoint; } routes[] = {
        {"/health", "GET", -1},
        {"/v1/models", "GET", -2},
        {"/generate", "POST", EP_GENERATE},
        {"/v1/completions", "POST", EP_COMPLETIONS},
        {"/v1/chat/completions", "POST", EP_CHAT},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(req->path, routes[i].path) != 0) continue;
        if (strcmp(req->method, routes[i].method) != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "%.16s is not allowed on %.32s (use %.8s)", req->method, routes[i].path, routes[i].method);
            send_error(fd, 405, msg);
            return;
        }
        if (routes[i].endpoint == -1) { handle_health(fd); return; }
        if (!authorized(req)) { send_error(fd, 401, "invalid or missing API key: send 'Authorization: Bearer KEY'"); return; }
        if (routes[i].endpoint == -2) handle_models(fd);
        else handle_generation(fd, req, routes[i].endpoint);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "no such endpoint: %.100s (try /v1/completions, /v1/chat/completions, /generate)", req->path);
    send_error(fd, 404, msg);
}

/* ===================================================================================== */
/* Connections                                                                             */
/* ===================================================================================== */

/* Closes after letting the client read our answer: stop writing, then drain what it still
 * sends (briefly), so the kernel does not reset the connection before the answer arrives. */
static void linger_close(int fd) {
    shutdown(fd, SHUT_WR);
    char buf[4096];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long total = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (t1.tv_sec - t0.tv_sec >= 1 || S.stop) break;
            continue;
        }
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        total += n;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (total > 4L * S.o->max_body || t1.tv_sec - t0.tv_sec >= 2) break;
    }
    close(fd);
}

static void *connection_main(void *arg) {
    int fd = (int)(intptr_t)arg;
    http_limits lim = {S.o->max_body, S.o->timeout, &S.stop};
    http_request *req = malloc(sizeof *req);
    http_error err;
    if (!req) send_error(fd, 500, "out of memory");
    else if (http_read_request(fd, &lim, req, &err) < 0) {
        if (err.status) send_error(fd, err.status, err.message);
    } else {
        route(fd, req);
        http_request_free(req);
    }
    free(req);
    linger_close(fd);
    pthread_mutex_lock(&S.mu);
    S.connections--;
    pthread_cond_broadcast(&S.changed);
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

static void start_connection(int fd) {
    struct timeval tv = {S.o->timeout, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    pthread_mutex_lock(&S.mu);
    int full = S.connections >= S.max_connections;
    if (!full) S.connections++;
    pthread_mutex_unlock(&S.mu);
    if (full) {
        struct timeval quick = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &quick, sizeof quick);
        send_error(fd, 503, "too many connections; retry later");
        close(fd);
        return;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1 << 20);
    pthread_t th;
    if (pthread_create(&th, &attr, connection_main, (void *)(intptr_t)fd) != 0) {
        send_error(fd, 503, "cannot start a thread for this connection; retry later");
        close(fd);
        pthread_mutex_lock(&S.mu);
        S.connections--;
        pthread_mutex_unlock(&S.mu);
    }
    pthread_attr_destroy(&attr);
}

/* ===================================================================================== */
/* Signals, setup and the accept loop                                                      */
/* ===================================================================================== */

static void on_signal(int sig) {
    (void)sig;
    S.stop = 1;
    int saved = errno;
    if (write(S.wake_pipe[1], "x", 1) < 0) { /* the flag is enough */ }
    errno = saved;
}

static int open_listener(const char *host, int port) {
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host, port_s, &hints, &res);
    if (rc != 0) { fprintf(stderr, "error: --host %s: %s\n", host, gai_strerror(rc)); return -1; }
    int fd = -1, last_errno = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) { last_errno = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) fprintf(stderr, "error: cannot listen on %s:%d: %s\n", host, port, strerror(last_errno));
    return fd;
}

/* The model's name for /v1/models and responses: "model" from bn_info_json(). */
static void find_model_name(void) {
    snprintf(S.model_name, sizeof S.model_name, "bitnet-aot");
    const char *info = bn_info_json();
    json_doc d;
    if (json_parse(&d, info, strlen(info)) == 0) {
        const json_value *m = json_get(&d, json_root(&d), "model");
        if (m && m->type == JSON_STRING && m->len > 0) snprintf(S.model_name, sizeof S.model_name, "%s", m->str);
    }
    json_free(&d);
}

static void find_chat_format(void) {
    S.chat_format = CHAT_UNKNOWN;
    if (S.o->chat_format) S.chat_format = chat_format_by_name(S.o->chat_format);
    if (S.chat_format == CHAT_UNKNOWN && S.tok && S.tok->chat_template)
        S.chat_format = chat_detect(S.tok->chat_template, S.tok->chat_template_len);
    if (S.chat_format == CHAT_UNKNOWN) S.chat_format = CHAT_BITNET;
    snprintf(S.eos_text, sizeof S.eos_text, "<|endoftext|>");
    if (S.tok && S.tok->eos_id >= 0) {
        size_t n;
        const char *t = tokenizer_token_text(S.tok, S.tok->eos_id, &n);
        if (t && n < sizeof S.eos_text) { memcpy(S.eos_text, t, n); S.eos_text[n] = 0; }
    }
}

static void free_slots(void) {
    for (int i = 0; i < S.n_slots; i++) bn_free(S.slots[i].ctx);
    free(S.slots);
    S.slots = NULL;
}

int server_run(const options *o) {
    memset(&S, 0, sizeof S);
    S.o = o;
    S.tok = text_tokenizer();      /* initialise it here, before any thread runs */
    if (o->chat_format && chat_format_by_name(o->chat_format) == CHAT_UNKNOWN) {
        fprintf(stderr, "error: --chat-format must be bitnet, llama3 or falcon3, not '%s'\n", o->chat_format);
        return 2;
    }
    find_model_name();
    find_chat_format();
    S.n_ctx = o->n_ctx ? o->n_ctx : options_default_ctx();
    S.n_slots = o->parallel;
    S.threads_per_slot = o->n_threads / o->parallel > 1 ? o->n_threads / o->parallel : 1;
    S.max_connections = o->parallel + o->queue + EXTRA_CONNECTIONS;
    S.slots = calloc((size_t)S.n_slots, sizeof *S.slots);
    if (!S.slots) { fprintf(stderr, "error: out of memory\n"); return 2; }
    for (int i = 0; i < S.n_slots; i++) {
        S.slots[i].ctx = bn_create(S.n_ctx, S.threads_per_slot);
        if (!S.slots[i].ctx) {
            fprintf(stderr, "error: slot %d of --parallel %d: %s\n", i + 1, S.n_slots, bn_last_error());
            free_slots();
            return 2;
        }
    }
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.changed, NULL);

    if (pipe(S.wake_pipe) != 0) { fprintf(stderr, "error: pipe: %s\n", strerror(errno)); free_slots(); return 2; }
    int lfd = open_listener(o->host, o->port);
    if (lfd < 0) { free_slots(); return 2; }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    fprintf(stderr, "serving %s on http://%s:%d (%d slot%s x %d thread%s, context %d tokens, queue %d, chat format %s)\n",
            S.model_name, o->host, o->port, S.n_slots, S.n_slots == 1 ? "" : "s", S.threads_per_slot,
            S.threads_per_slot == 1 ? "" : "s", S.n_ctx, o->queue, chat_format_name(S.chat_format));
    fflush(stderr);

    while (!S.stop) {
        struct pollfd p[2] = {{lfd, POLLIN, 0}, {S.wake_pipe[0], POLLIN, 0}};
        int pr = poll(p, 2, 1000);
        if (pr < 0 && errno != EINTR) { fprintf(stderr, "error: poll: %s\n", strerror(errno)); break; }
        if (pr <= 0 || !(p[0].revents & POLLIN) || S.stop) continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) usleep(100000);   /* out of descriptors: wait */
            continue;
        }
        start_connection(fd);
    }

    /* graceful shutdown: no new connections; in-flight requests see S.stop */
    close(lfd);
    fprintf(stderr, "shutting down: finishing %d connection(s)\n", S.connections);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&S.mu);
    pthread_cond_broadcast(&S.changed);
    while (S.connections > 0) {
        timed_wait(&S.changed, &S.mu, 100);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > o->timeout + 2) break;
    }
    int left = S.connections;
    pthread_mutex_unlock(&S.mu);
    if (left == 0) free_slots();     /* else threads still use them: the exit frees all */
    else fprintf(stderr, "shutting down with %d connection(s) still open\n", left);
    fprintf(stderr, "server stopped\n");
    return 0;
}

#endif
