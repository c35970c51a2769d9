/* server.c: `./model serve`, an HTTP server for the compiled model.
 *
 *   POST /generate              {"prompt": "...", "max_tokens": 50, ...} -> {"text", "tokens", "finish_reason"}
 *   POST /v1/completions        OpenAI-compatible, "stream": true for server-sent events
 *   POST /v1/chat/completions   the same with the model's chat template (chat.h)
 *   POST /tokenize, /detokenize {"content": "text"} <-> {"tokens": [ids]}
 *   GET  /v1/models, /health, /metrics (Prometheus text), / (the chat page, chat_page.html)
 *
 * Design. The main thread accepts connections and starts one thread per connection (at
 * most parallel + queue + 64 at once; beyond that a 503 is written at once). A connection
 * thread reads requests (HTTP/1.1 keep-alive: several per connection) and checks them
 * (http.c, json.c) without touching model state, so slow or broken clients cost a thread,
 * never a decoding slot. A generation becomes a job handed to the scheduler, and the
 * connection thread turns the job's tokens into text and sends it (stop strings,
 * streaming): network writes never hold up the model.
 *
 * Continuous batching. One scheduler thread owns the model. There are --parallel slots
 * (each a bn_context: its own KV cache; all share the weights). At every step it builds
 * one batch of at most BN_BATCH rows: the next token of every decoding slot, then a chunk
 * of the prompt of slots still prefilling (as many prompt tokens as the rows left), and
 * runs it as ONE forward pass (bn_eval_rows: each weight tile read once for all rows, the
 * output head in one pass too) on all --threads threads. Jobs join free slots and leave
 * between steps; a job alone gets the whole machine. Each row's logits are exactly what a
 * lone bn_eval gives (rows are computed independently), and each slot samples with its own
 * seeded generator, so a seeded request gives the same text alone or in a full batch.
 *
 * Prompt cache. A slot keeps its KV cache (and the tokens in it) after its job ends. A new
 * job goes to the free slot whose cached tokens share the longest prefix with its prompt
 * (the system prompt, the earlier turns of a chat) and only the rest is evaluated; with no
 * useful prefix, the least recently used free slot is taken.
 *
 * Queue and overload: a job that finds every slot busy waits (at most --queue of them);
 * beyond that 503 with Retry-After. A job whose client goes away (checked every 200 ms
 * while waiting, after every token while generating) is dropped at the next step.
 *
 * Shutdown: SIGINT/SIGTERM stop accepting; in-flight generations stop at their next token
 * and end their responses normally (streams get a final chunk and "data: [DONE]"); queued
 * requests get 503; the process exits 0 once connections are closed (or after --timeout).
 *
 * Sections: the server state, metrics and the request log, errors, reading a generation
 * request, the scheduler, answering a job (text, stop strings, logprobs, streaming), the
 * endpoints, connections, the accept loop.
 */
#include "modes.h"
#include "core/platform.h"

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
#include "text/chat.h"
#include "chat_page.h"
#include "http.h"
#include "json.h"
#include "core/model_internal.h"
#include "text/text.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
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
#include <strings.h>
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
#define MAX_BIAS 1024              /* logit_bias entries per request */
#define MAX_TOP_LOGPROBS 20
#define EXTRA_CONNECTIONS 64       /* connection threads beyond parallel + queue */

struct job;

typedef struct {
    bn_context *ctx;               /* KV cache of this slot (slot 0's also lends its threads) */
    int32_t *toks;                 /* (n_ctx + 1) prompt + generated tokens; toks[0..bn_pos) are in the KV cache */
    int n_toks;
    void *sample_scratch;          /* (bn_sample_scratch_bytes) */
    struct job *j;                 /* the job decoding here, or NULL */
    uint64_t rng;
    double last_used;              /* for least-recently-used reuse */
} slot;

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };
enum { JOB_OK, JOB_ERROR, JOB_SHUTDOWN, JOB_CANCELLED };

typedef struct gen_request gen_request;

typedef struct job {
    gen_request *g;
    /* written by the scheduler under S.mu */
    int32_t *out;                  /* (max_tokens) generated ids */
    float *lp;                     /* (max_tokens) log-probability of each, if logprobs asked */
    int32_t *top_ids;              /* (max_tokens, n_top) */
    float *top_lp;
    int n_out;
    int state, result;             /* JOB_QUEUED.., JOB_OK.. */
    int stopped;                   /* ended by an end-of-generation token */
    int n_cached;                  /* prompt tokens taken from the prompt cache */
    char error[200];
    double t_submit, t_first;      /* monotonic seconds */
    /* written by the connection thread */
    int cancel;
    pthread_cond_t cv;             /* signalled when tokens arrive or the job ends */
    struct job *next;              /* in the queue */
} job;

static struct {
    const options *o;
    const Tokenizer *tok;          /* NULL: a model without a tokenizer (ids only) */
    slot *slots;
    int n_slots;
    int n_ctx;                     /* context size of every slot, tokens */
    int chat_format;               /* CHAT_* */
    char eos_text[128];            /* the EOS token's text (Falcon3 puts it after answers) */
    char model_name[256];
    float *logits;                 /* (BN_BATCH, V) the scheduler's logits */
    float *lp_logits;              /* (BN_BATCH, V) copies for logprobs */

    pthread_mutex_t mu;            /* guards everything below and the jobs' shared fields */
    pthread_cond_t changed;        /* a connection ended */
    pthread_cond_t work;           /* the scheduler has something to do */
    job *queue_head, *queue_tail;
    int queued, running;
    int connections;               /* connection threads alive */
    int max_connections;
    pthread_t scheduler;
    int scheduler_started;

    volatile sig_atomic_t stop;    /* SIGINT/SIGTERM seen */
    int wake_pipe[2];              /* the signal handler writes here to wake the accept loop */
    atomic_ulong next_id;          /* for response ids */
    atomic_ulong seed_counter;
} S;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &ts);
}

/* A fresh seed for a request without one: the clock, a counter and the address space,
 * mixed by splitmix64 (sampling needs variety, not secrecy). */
static uint64_t fresh_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t z = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)atomic_fetch_add(&S.seed_counter, 1) << 40) ^ (uint64_t)(uintptr_t)&ts;
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z & ((1ULL << 53) - 1);        /* exact as a JSON number (a double) when sent back */
}

/* ===================================================================================== */
/* Metrics (GET /metrics) and the request log                                              */
/* ===================================================================================== */

static const double LAT_BUCKETS[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
static const double TTFT_BUCKETS[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define N_BUCKETS 11

typedef struct { unsigned long count[N_BUCKETS + 1]; double sum; unsigned long n; } histogram;

static struct {
    pthread_mutex_t mu;
    unsigned long by_status[600];
    unsigned long prompt_tokens, cached_tokens, completion_tokens, steps, batch_rows;
    histogram latency, ttft;
} M = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, 0, 0, 0, {{0}, 0, 0}, {{0}, 0, 0}};

static void hist_add(histogram *h, const double *buckets, double v) {
    int i = 0;
    while (i < N_BUCKETS && v > buckets[i]) i++;
    h->count[i]++;
    h->sum += v;
    h->n++;
}

/* What the current connection thread knows about the request it is answering. */
typedef struct {
    int status;
    int n_prompt, n_cached, n_gen;
    double t0, ttft;               /* ttft < 0: none */
    const char *prompt_text;       /* for --log-prompts */
    size_t prompt_len;
} req_log;

static _Thread_local req_log RL;

static void request_done(const http_request *req) {
    double dt = now_s() - RL.t0;
    const char *method = req->method[0] ? req->method : "-", *path = req->path[0] ? req->path : "-";
    pthread_mutex_lock(&M.mu);
    if (RL.status > 0 && RL.status < 600) M.by_status[RL.status]++;
    hist_add(&M.latency, LAT_BUCKETS, dt);
    if (RL.ttft >= 0) hist_add(&M.ttft, TTFT_BUCKETS, RL.ttft);
    pthread_mutex_unlock(&M.mu);
    char ttft[32] = "-";
    if (RL.ttft >= 0) snprintf(ttft, sizeof ttft, "%.1f", RL.ttft * 1e3);
    if (S.o->log_prompts && RL.prompt_text)
        fprintf(stderr, "%s %s %d prompt=%d cached=%d completion=%d ttft_ms=%s ms=%.1f prompt_text=%.*s\n", method,
                path, RL.status, RL.n_prompt, RL.n_cached, RL.n_gen, ttft, dt * 1e3,
                RL.prompt_len > 2000 ? 2000 : (int)RL.prompt_len, RL.prompt_text);
    else
        fprintf(stderr, "%s %s %d prompt=%d cached=%d completion=%d ttft_ms=%s ms=%.1f\n", method, path,
                RL.status, RL.n_prompt, RL.n_cached, RL.n_gen, ttft, dt * 1e3);
}

static _Thread_local int keep_alive;   /* the current response may keep the connection */

static int respond(int fd, int status, const char *type, const char *extra, const char *body, size_t len) {
    RL.status = status;
    return http_respond_ka(fd, keep_alive, status, type, extra, body, len);
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
    if (status >= 500 && status != 503) keep_alive = 0;
    if (!b.failed) respond(fd, status, "application/json", extra, b.data, b.len);
    json_buf_free(&b);
}

static void send_error(int fd, int status, const char *message) { send_error_full(fd, status, message, NULL, NULL); }

/* ===================================================================================== */
/* Reading a generation request                                                             */
/* ===================================================================================== */

enum { EP_GENERATE, EP_COMPLETIONS, EP_CHAT };

struct gen_request {
    int endpoint;                  /* EP_* */
    int32_t *prompt;               /* (n_prompt) malloc'ed */
    int n_prompt;
    int max_tokens;
    bn_sampling s;
    int seed_given;
    float presence_penalty, frequency_penalty;
    int n_bias;
    int32_t bias_id[MAX_BIAS];
    float bias[MAX_BIAS];
    int logprobs;                  /* report log-probabilities */
    int n_top;                     /* and this many alternatives per token */
    int ignore_eos;
    int cache_prompt;              /* start from a slot's cached prefix (default 1) */
    int stream;
    int include_usage;             /* stream_options.include_usage */
    int dropped_messages;          /* chat: oldest turns left out to fit the context */
    char stops[MAX_STOPS][MAX_STOP_LEN + 1];
    size_t stop_len[MAX_STOPS];
    int n_stops;
};

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

/* "messages" -> the chat template's text -> ids. Context shift: when the conversation
 * (with room for min(max_tokens, a quarter of the context) of answer) does not fit the
 * context, the oldest messages after the leading system messages are left out, one at a
 * time, and the kept ones re-encoded; the last message is always kept (alone too long:
 * context_length_exceeded). */
static int read_messages(const json_doc *d, const json_value *root, gen_request *g, int max_tokens, req_error *e) {
    const json_value *m = json_get(d, root, "messages");
    if (!m) return bad(e, "messages", "'messages' is required%s%s", "", "");
    if (m->type != JSON_ARRAY || m->len == 0) return bad(e, "messages", "'messages' must be a non-empty array of {\"role\", \"content\"}%s%s", "", "");
    if (m->len > MAX_MESSAGES) return bad(e, "messages", "too many messages (limit %s)%s", "4096", "");
    int n = (int)m->len;
    ChatMessage *msgs = calloc((size_t)n, sizeof *msgs);
    ChatMessage *kept = calloc((size_t)n, sizeof *kept);
    json_buf *contents = calloc((size_t)n, sizeof *contents);
    int rc = -1, i = 0;
    if (!msgs || !contents || !kept) { bad(e, "messages", "out of memory%s%s", "", ""); goto out; }
    for (const json_value *msg = json_first(d, m); msg; msg = json_next(d, msg), i++) {
        if (msg->type != JSON_OBJECT) { bad(e, "messages", "each message must be an object%s%s", "", ""); goto out; }
        for (const json_value *f = json_first(d, msg); f; f = json_next(d, f))
            if (strcmp(f->key, "role") != 0 && strcmp(f->key, "content") != 0 && strcmp(f->key, "name") != 0) {
                bad(e, "messages", "message field '%.60s' is not supported (only role, content, name)%s", f->key, "");
                goto out;
            }
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
    int n_system = 0;
    while (n_system < n - 1 && strcmp(msgs[n_system].role, "system") == 0) n_system++;
    int reserve = max_tokens < S.n_ctx / 4 ? max_tokens : S.n_ctx / 4;
    int drop = 0;
    for (;; drop++) {
        int nk = 0;
        for (int k = 0; k < n_system; k++) kept[nk++] = msgs[k];
        for (int k = n_system + drop; k < n; k++) kept[nk++] = msgs[k];
        size_t need = chat_apply(S.chat_format, kept, nk, 1, S.eos_text, NULL, 0);
        char *text = malloc(need + 1);
        if (!text) { bad(e, "messages", "out of memory%s%s", "", ""); goto out; }
        chat_apply(S.chat_format, kept, nk, 1, S.eos_text, text, need + 1);
        free(g->prompt);
        g->prompt = NULL;
        g->n_prompt = 0;
        rc = encode_prompt(g, text, need, 1, e);
        free(text);
        if (rc < 0) { e->param = "messages"; goto out; }
        if (g->n_prompt + reserve <= S.n_ctx || n_system + drop >= n - 1) break;
    }
    g->dropped_messages = drop;
out:
    for (int k = 0; k < n && contents; k++) json_buf_free(&contents[k]);
    free(contents);
    free(msgs);
    free(kept);
    return rc;
}

/* Fields a request may carry. Any other field is refused with a 400 naming it, so a client
 * never believes it got something the server does not do. "model" and "user" are accepted
 * and have no effect (there is one model; "user" is the caller's bookkeeping). Fields of
 * features not implemented are accepted only with their neutral value (checked below). */
static const char *const KNOWN_FIELDS[] = {
    "model", "user", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_k", "top_p",
    "min_p", "repeat_penalty", "repeat_last_n", "seed", "n", "stream", "stream_options", "stop", "ignore_eos",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "echo", "best_of", "suffix",
    "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "store",
    "metadata", "cache_prompt",
};

static int neutral_value(const json_value *v, const char *key) {
    if (v->type == JSON_NULL) return 1;
    if (!strcmp(key, "echo") || !strcmp(key, "store")) return v->type == JSON_FALSE;
    if (!strcmp(key, "parallel_tool_calls")) return 1;      /* no tools: nothing to run in parallel */
    if (!strcmp(key, "best_of")) return v->type == JSON_NUMBER && v->number == 1;
    if (!strcmp(key, "suffix")) return v->type == JSON_STRING && v->len == 0;
    if (!strcmp(key, "tools") || !strcmp(key, "functions")) return v->type == JSON_ARRAY && v->len == 0;
    if (!strcmp(key, "tool_choice") || !strcmp(key, "function_call")) return v->type == JSON_STRING && !strcmp(v->str, "none");
    if (!strcmp(key, "metadata")) return v->type == JSON_OBJECT;
    return 0;
}

static int check_fields(const json_doc *d, const json_value *root, int endpoint, req_error *e) {
    for (const json_value *f = json_first(d, root); f; f = json_next(d, f)) {
        size_t k = 0, n = sizeof KNOWN_FIELDS / sizeof KNOWN_FIELDS[0];
        while (k < n && strcmp(f->key, KNOWN_FIELDS[k]) != 0) k++;
        if (k == n) return bad(e, f->key, "the field '%.80s' is not supported by this server%s", f->key, "");
        const char *key = KNOWN_FIELDS[k];
        if (!strcmp(key, (endpoint == EP_CHAT ? "prompt" : "messages")))
            return bad(e, key, "'%s' does not belong in this endpoint's request%s", key, "");
        if (endpoint != EP_CHAT && !strcmp(key, "top_logprobs"))
            return bad(e, key, "'top_logprobs' is a chat field: for completions 'logprobs' is the number of alternatives%s%s", "", "");
        static const char *const neutral_only[] = {"echo", "best_of", "suffix", "tools", "tool_choice", "functions",
                                                   "function_call", "store", "metadata", "parallel_tool_calls"};
        for (size_t i = 0; i < sizeof neutral_only / sizeof neutral_only[0]; i++)
            if (!strcmp(key, neutral_only[i]) && !neutral_value(f, key))
                return bad(e, key, "'%s' is not implemented by this server (only its default value is accepted)%s", key, "");
        if (!strcmp(key, "response_format") && f->type != JSON_NULL) {
            const json_value *t = f->type == JSON_OBJECT ? json_get(d, f, "type") : NULL;
            if (!t || t->type != JSON_STRING || strcmp(t->str, "text") != 0)
                return bad(e, key, "'response_format' is not implemented: only {\"type\": \"text\"} is accepted%s%s", "", "");
        }
    }
    return 0;
}

/* "logit_bias": {"token id": bias in -100..100, ...} */
static int read_logit_bias(const json_doc *d, const json_value *root, gen_request *g, req_error *e) {
    const json_value *lb = json_get(d, root, "logit_bias");
    if (!lb || lb->type == JSON_NULL) return 0;
    if (lb->type != JSON_OBJECT) return bad(e, "logit_bias", "'logit_bias' must be an object of token id -> bias%s%s", "", "");
    for (const json_value *f = json_first(d, lb); f; f = json_next(d, f)) {
        char *end;
        long id = strtol(f->key, &end, 10);
        if (!f->key[0] || *end || id < 0 || id >= BN_N_VOCAB)
            return bad(e, "logit_bias", "'logit_bias' keys must be token ids (0..n_vocab-1), not '%.40s'%s", f->key, "");
        if (f->type != JSON_NUMBER || !(f->number >= -100 && f->number <= 100))
            return bad(e, "logit_bias", "'logit_bias' values must be numbers in -100..100%s%s", "", "");
        if (g->n_bias == MAX_BIAS) return bad(e, "logit_bias", "at most %s 'logit_bias' entries%s", "1024", "");
        g->bias_id[g->n_bias] = (int32_t)id;
        g->bias[g->n_bias++] = (float)f->number;
    }
    return 0;
}

/* Every field of a generation request, checked. */
static int read_gen_request(const json_doc *d, int endpoint, gen_request *g, req_error *e) {
    const json_value *root = json_root(d);
    if (root->type != JSON_OBJECT) return bad(e, NULL, "the request body must be a JSON object, not %s%s", json_type_name(root->type), "");
    if (check_fields(d, root, endpoint, e) < 0) return -1;
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
    if ((r = get_number(d, root, "presence_penalty", 0, -2, 2, &x, e)) < 0) return -1;
    if (r) g->presence_penalty = (float)x;
    if ((r = get_number(d, root, "frequency_penalty", 0, -2, 2, &x, e)) < 0) return -1;
    if (r) g->frequency_penalty = (float)x;
    if ((r = get_number(d, root, "seed", 1, -9.2e18, 9.2e18, &x, e)) < 0) return -1;
    g->seed_given = r;
    g->s.seed = r ? (uint64_t)(int64_t)x : fresh_seed();
    if ((r = get_number(d, root, "n", 1, 1, 1, &x, e)) < 0) { snprintf(e->message, sizeof e->message, "'n' must be 1 (one completion per request)"); return -1; }
    if (get_bool(d, root, "stream", &g->stream, e) < 0) return -1;
    if (get_bool(d, root, "ignore_eos", &g->ignore_eos, e) < 0) return -1;
    g->cache_prompt = 1;
    if (get_bool(d, root, "cache_prompt", &g->cache_prompt, e) < 0) return -1;
    if (read_logit_bias(d, root, g, e) < 0) return -1;
    if (endpoint == EP_CHAT) {
        if (get_bool(d, root, "logprobs", &g->logprobs, e) < 0) return -1;
        if ((r = get_number(d, root, "top_logprobs", 1, 0, MAX_TOP_LOGPROBS, &x, e)) < 0) return -1;
        if (r && !g->logprobs) return bad(e, "top_logprobs", "'top_logprobs' needs \"logprobs\": true%s%s", "", "");
        if (r) g->n_top = (int)x;
    } else {
        if ((r = get_number(d, root, "logprobs", 1, 0, MAX_TOP_LOGPROBS, &x, e)) < 0) return -1;
        if (r) { g->logprobs = 1; g->n_top = (int)x; }
    }
    const json_value *so = json_get(d, root, "stream_options");
    if (so && so->type != JSON_NULL) {
        if (so->type != JSON_OBJECT) return bad(e, "stream_options", "'stream_options' must be an object%s%s", "", "");
        for (const json_value *f = json_first(d, so); f; f = json_next(d, f))
            if (strcmp(f->key, "include_usage") != 0)
                return bad(e, "stream_options", "'stream_options.%.60s' is not supported (only include_usage)%s", f->key, "");
        if (get_bool(d, so, "include_usage", &g->include_usage, e) < 0) return -1;
    }
    const json_value *stop = json_get(d, root, "stop");
    if (stop && stop->type == JSON_ARRAY) {
        for (const json_value *s = json_first(d, stop); s; s = json_next(d, s))
            if (add_stop(g, s, e) < 0) return -1;
    } else if (stop && stop->type != JSON_NULL) {
        if (add_stop(g, stop, e) < 0) return -1;
    }

    if (endpoint == EP_CHAT) { if (read_messages(d, root, g, max_tokens, e) < 0) return -1; }
    else if (read_prompt(d, root, g, e) < 0) return -1;

    const char *param = endpoint == EP_CHAT ? "messages" : "prompt";
    if (g->n_prompt == 0) return bad(e, param, "the prompt is empty%s%s", "", "");
    if (g->n_prompt >= S.n_ctx) {
        snprintf(e->message, sizeof e->message,
                 "the %s has %d tokens but the context holds %d (--ctx %d); shorten it",
                 endpoint == EP_CHAT ? "last message" : "prompt", g->n_prompt, S.n_ctx, S.n_ctx);
        e->param = param;
        e->code = "context_length_exceeded";
        return -1;
    }
    g->max_tokens = max_tokens < S.n_ctx - g->n_prompt ? max_tokens : S.n_ctx - g->n_prompt;
    return 0;
}

/* ===================================================================================== */
/* The scheduler: one thread, one batched forward pass per step                            */
/* ===================================================================================== */

static void job_finish(job *j, int result) {           /* under S.mu */
    j->state = JOB_DONE;
    j->result = result;
    pthread_cond_broadcast(&j->cv);
}

static void slot_release(slot *sl) {                   /* under S.mu */
    sl->j = NULL;
    sl->last_used = now_s();
    S.running--;
    /* the KV cache holds toks[0..bn_pos): what the next job may reuse */
    if (sl->n_toks > bn_pos(sl->ctx)) sl->n_toks = bn_pos(sl->ctx);
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Moves queued jobs into free slots (under S.mu): the slot whose cache shares the longest
 * prefix with the prompt, else the least recently used one. */
static void assign_jobs(void) {
    while (S.queue_head && S.running < S.n_slots) {
        job *j = S.queue_head;
        S.queue_head = j->next;
        if (!S.queue_head) S.queue_tail = NULL;
        S.queued--;
        const gen_request *g = j->g;
        int best = -1, best_len = -1;
        for (int i = 0; i < S.n_slots; i++) {
            slot *sl = &S.slots[i];
            if (sl->j) continue;
            int n = common_prefix(sl->toks, sl->n_toks, g->prompt, g->n_prompt);
            if (n > best_len || (n == best_len && sl->last_used < S.slots[best].last_used)) { best = i; best_len = n; }
        }
        slot *sl = &S.slots[best];
        int keep = best_len < g->n_prompt ? best_len : g->n_prompt - 1;   /* evaluate at least one token */
        if (!g->cache_prompt) keep = 0;
        bn_truncate(sl->ctx, keep);
        memcpy(sl->toks, g->prompt, (size_t)g->n_prompt * sizeof(int32_t));
        sl->n_toks = g->n_prompt;
        sl->rng = bn_rng_init(g->s.seed);
        sl->j = j;
        j->n_cached = keep;
        j->state = JOB_RUNNING;
        S.running++;
        pthread_cond_broadcast(&j->cv);
    }
}

/* Samples the next token of slot sl from its logits (V, modified). Returns 1 if the job
 * is complete. */
static int sample_for(slot *sl, float *logits, float *lp_logits) {
    job *j = sl->j;
    const gen_request *g = j->g;
    int k = j->n_out;
    if (g->logprobs) {
        memcpy(lp_logits, logits, (size_t)BN_N_VOCAB * sizeof(float));   /* the model's distribution */
    }
    for (int i = 0; i < g->n_bias; i++) logits[g->bias_id[i]] += g->bias[i];
    bn_apply_penalties(logits, j->out, k, g->presence_penalty, g->frequency_penalty);
    int id = bn_sample_with(logits, &g->s, sl->toks, sl->n_toks, &sl->rng, sl->sample_scratch);
    if (g->logprobs)
        j->lp[k] = bn_logprobs(lp_logits, id, g->n_top, j->top_ids + (size_t)k * g->n_top, j->top_lp + (size_t)k * g->n_top);
    pthread_mutex_lock(&S.mu);
    j->out[k] = id;
    j->n_out = k + 1;
    if (k == 0) j->t_first = now_s();
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&S.mu);
    sl->toks[sl->n_toks++] = id;
    if (!g->ignore_eos && bn_is_eog(id)) { j->stopped = 1; return 1; }
    if (j->n_out >= g->max_tokens) return 1;
    if (bn_pos(sl->ctx) + 1 > S.n_ctx) return 1;         /* no room to feed it back */
    return 0;
}

/* Sampling the rows of one step on the pool's threads: item i (a slot) on thread i % nth.
 * Each slot's draw depends only on its own logits and generator: the split changes nothing. */
typedef struct {
    int n;
    int slot[BN_BATCH];
    float *logits[BN_BATCH];
    int done[BN_BATCH];
} sample_task;

static void sample_worker(void *arg, int ith, int nth) {
    sample_task *t = arg;
    for (int i = ith; i < t->n; i += nth)
        t->done[i] = sample_for(&S.slots[t->slot[i]], t->logits[i], S.lp_logits + (size_t)i * BN_N_VOCAB);
}

static void *scheduler_main(void *arg) {
    (void)arg;
    bn_context *work = S.slots[0].ctx;
    bn_context *owners[BN_BATCH];
    int32_t tokens[BN_BATCH];
    unsigned char want[BN_BATCH];
    int row_slot[BN_BATCH];
    int rotate = 0;
    pthread_mutex_lock(&S.mu);
    for (;;) {
        /* between steps: drop cancelled jobs, end everything on shutdown, fill free slots */
        for (job **pj = &S.queue_head; *pj; ) {
            job *j = *pj;
            if (j->cancel || S.stop) {
                *pj = j->next;
                S.queued--;
                job_finish(j, S.stop && !j->cancel ? JOB_SHUTDOWN : JOB_CANCELLED);
            } else pj = &j->next;
        }
        S.queue_tail = NULL;
        for (job *j = S.queue_head; j; j = j->next) S.queue_tail = j;
        for (int i = 0; i < S.n_slots; i++) {
            slot *sl = &S.slots[i];
            if (sl->j && (sl->j->cancel || S.stop)) {
                job *j = sl->j;
                slot_release(sl);
                job_finish(j, j->cancel ? JOB_CANCELLED : JOB_OK);
            }
        }
        assign_jobs();
        if (S.running == 0) {
            if (S.stop) break;
            timed_wait(&S.work, &S.mu, 200);
            continue;
        }
        /* the batch: every decoding slot's next token, then prompt chunks in the rows left */
        int n = 0;
        int n_decode = 0, n_prefill_slots = 0;
        for (int i = 0; i < S.n_slots; i++) {
            slot *sl = &S.slots[i];
            if (!sl->j) continue;
            if (bn_pos(sl->ctx) >= sl->j->g->n_prompt) n_decode++;
            else n_prefill_slots++;
        }
        int decode_rows = n_decode;
        int reserve = n_prefill_slots ? (BN_BATCH >= 8 ? BN_BATCH / 8 : 1) : 0;   /* prompts always progress */
        if (decode_rows > BN_BATCH - reserve) decode_rows = BN_BATCH - reserve;
        for (int k = 0; k < S.n_slots && n < decode_rows; k++) {
            int i = (rotate + k) % S.n_slots;
            slot *sl = &S.slots[i];
            if (!sl->j || bn_pos(sl->ctx) < sl->j->g->n_prompt) continue;
            owners[n] = sl->ctx;
            tokens[n] = sl->toks[bn_pos(sl->ctx)];
            want[n] = 1;
            row_slot[n++] = i;
        }
        rotate = (rotate + 1) % S.n_slots;
        for (int i = 0; i < S.n_slots && n < BN_BATCH; i++) {
            slot *sl = &S.slots[i];
            if (!sl->j) continue;
            int p = bn_pos(sl->ctx), np = sl->j->g->n_prompt;
            for (; p < np && n < BN_BATCH; p++) {
                owners[n] = sl->ctx;
                tokens[n] = sl->toks[p];
                want[n] = p == np - 1;
                row_slot[n++] = i;
            }
        }
        M.steps++;
        M.batch_rows += (unsigned long)n;
        pthread_mutex_unlock(&S.mu);

        int rc = bn_eval_rows(work, owners, tokens, n, want, S.logits);
        char err[200] = "";
        if (rc < 0) snprintf(err, sizeof err, "%s", bn_last_error());
        int done[BN_BATCH];
        sample_task st;
        st.n = 0;
        for (int r = 0; r < n; r++) {
            done[r] = 0;
            if (rc < 0 || !want[r]) continue;
            st.slot[st.n] = row_slot[r];
            st.logits[st.n] = S.logits + (size_t)st.n * BN_N_VOCAB;
            st.n++;
        }
        if (st.n) bn_pool_run(work->pool, sample_worker, &st);
        for (int r = 0, k = 0; r < n; r++)
            if (rc == 0 && want[r]) done[r] = st.done[k++];

        pthread_mutex_lock(&S.mu);
        for (int r = 0; r < n; r++) {
            slot *sl = &S.slots[row_slot[r]];
            if (!sl->j) continue;
            if (rc < 0) {
                job *j = sl->j;
                snprintf(j->error, sizeof j->error, "%s", err);
                bn_reset(sl->ctx);
                sl->n_toks = 0;
                slot_release(sl);
                job_finish(j, JOB_ERROR);
            } else if (done[r]) {
                job *j = sl->j;
                slot_release(sl);
                job_finish(j, JOB_OK);
            }
        }
    }
    pthread_mutex_unlock(&S.mu);
    return NULL;
}

/* Hands g to the scheduler. NULL with *status 503 (queue full, shutting down) or 500. */
static job *job_submit(gen_request *g, int *status, char *msg, size_t msg_cap) {
    job *j = calloc(1, sizeof *j);
    size_t cap = (size_t)g->max_tokens + 1;
    if (j) {
        j->g = g;
        j->out = malloc(cap * sizeof(int32_t));
        if (g->logprobs) {
            j->lp = malloc(cap * sizeof(float));
            j->top_ids = malloc(cap * (size_t)(g->n_top + 1) * sizeof(int32_t));
            j->top_lp = malloc(cap * (size_t)(g->n_top + 1) * sizeof(float));
        }
    }
    if (!j || !j->out || (g->logprobs && (!j->lp || !j->top_ids || !j->top_lp))) {
        if (j) { free(j->out); free(j->lp); free(j->top_ids); free(j->top_lp); }
        free(j);
        *status = 500;
        snprintf(msg, msg_cap, "out of memory");
        return NULL;
    }
    pthread_cond_init(&j->cv, NULL);
    j->t_submit = now_s();
    pthread_mutex_lock(&S.mu);
    int free_slots = S.n_slots - S.running - S.queued;
    if (S.stop) {
        *status = 503;
        snprintf(msg, msg_cap, "the server is shutting down");
    } else if (free_slots <= 0 && S.queued - (S.n_slots - S.running) >= S.o->queue) {
        *status = 503;
        snprintf(msg, msg_cap, "the server is busy: %d requests are generating and %d waiting (--parallel %d, --queue %d); retry later",
                 S.n_slots, S.o->queue, S.n_slots, S.o->queue);
    } else {
        if (S.queue_tail) S.queue_tail->next = j; else S.queue_head = j;
        S.queue_tail = j;
        S.queued++;
        pthread_cond_signal(&S.work);
        pthread_mutex_unlock(&S.mu);
        return j;
    }
    pthread_mutex_unlock(&S.mu);
    pthread_cond_destroy(&j->cv);
    free(j->out); free(j->lp); free(j->top_ids); free(j->top_lp);
    free(j);
    return NULL;
}

/* Asks the scheduler to drop j and waits until it has (then j may be freed). */
static void job_release(job *j) {
    pthread_mutex_lock(&S.mu);
    if (j->state != JOB_DONE) {
        j->cancel = 1;
        pthread_cond_signal(&S.work);
        while (j->state != JOB_DONE) timed_wait(&j->cv, &S.mu, 100);
    }
    pthread_mutex_unlock(&S.mu);
    pthread_cond_destroy(&j->cv);
    free(j->out); free(j->lp); free(j->top_ids); free(j->top_lp);
    free(j);
}

/* ===================================================================================== */
/* Answering a job: text, stop strings, logprobs, streaming                                */
/* ===================================================================================== */

typedef struct {
    int fd;
    const gen_request *g;
    job *j;
    TokenizerStream ts;
    char *piece;                   /* (tokenizer_stream_bound) scratch for one token's text */
    json_buf text;                 /* the generated text so far (cut at a stop string) */
    size_t sent;                   /* bytes of text already streamed */
    size_t searched;               /* text before this offset holds no stop string start */
    int n_tokens;                  /* tokens taken from the job */
    int lp_sent;                   /* tokens whose logprobs were streamed */
    size_t text_offset;            /* completions' logprobs.text_offset of the next token */
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

/* A token's text for logprobs (its bytes; json_put_string makes broken UTF-8 valid). */
static size_t token_text(int32_t id, char *buf, size_t cap) {
    if (!S.tok) return (size_t)snprintf(buf, cap, "[%d]", (int)id);
    int ids[1] = {id};
    size_t n = tokenizer_decode(S.tok, ids, 1, TOKENIZER_DECODE_SPECIAL, buf, cap);
    return n < cap ? n : cap - 1;
}

static void put_bytes(json_buf *b, const char *s, size_t n) {
    json_put_text(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i) json_put_text(b, ",");
        json_put_int(b, (unsigned char)s[i]);
    }
    json_put_text(b, "]");
}

/* The "logprobs" value for tokens [from, to) of the job. */
static void put_logprobs(json_buf *b, gen_state *st, int from, int to) {
    const gen_request *g = st->g;
    const job *j = st->j;
    char t[256];
    if (!g->logprobs) { json_put_text(b, "null"); return; }
    if (g->endpoint == EP_CHAT) {
        json_put_text(b, "{\"content\":[");
        for (int i = from; i < to; i++) {
            if (i > from) json_put_text(b, ",");
            size_t n = token_text(j->out[i], t, sizeof t);
            json_put_text(b, "{\"token\":");
            json_put_string(b, t, n);
            json_put_text(b, ",\"logprob\":");
            json_put_double(b, j->lp[i]);
            json_put_text(b, ",\"bytes\":");
            put_bytes(b, t, n);
            json_put_text(b, ",\"top_logprobs\":[");
            for (int k = 0; k < g->n_top; k++) {
                if (k) json_put_text(b, ",");
                size_t m = token_text(j->top_ids[(size_t)i * g->n_top + k], t, sizeof t);
                json_put_text(b, "{\"token\":");
                json_put_string(b, t, m);
                json_put_text(b, ",\"logprob\":");
                json_put_double(b, j->top_lp[(size_t)i * g->n_top + k]);
                json_put_text(b, ",\"bytes\":");
                put_bytes(b, t, m);
                json_put_text(b, "}");
            }
            json_put_text(b, "]}");
        }
        json_put_text(b, "],\"refusal\":null}");
        return;
    }
    /* completions (the legacy format): parallel arrays */
    json_put_text(b, "{\"tokens\":[");
    for (int i = from; i < to; i++) {
        if (i > from) json_put_text(b, ",");
        size_t n = token_text(j->out[i], t, sizeof t);
        json_put_string(b, t, n);
    }
    json_put_text(b, "],\"token_logprobs\":[");
    for (int i = from; i < to; i++) {
        if (i > from) json_put_text(b, ",");
        json_put_double(b, j->lp[i]);
    }
    json_put_text(b, "],\"top_logprobs\":[");
    for (int i = from; i < to; i++) {
        if (i > from) json_put_text(b, ",");
        json_put_text(b, "{");
        for (int k = 0; k < g->n_top; k++) {
            if (k) json_put_text(b, ",");
            size_t m = token_text(j->top_ids[(size_t)i * g->n_top + k], t, sizeof t);
            json_put_string(b, t, m);
            json_put_text(b, ":");
            json_put_double(b, j->top_lp[(size_t)i * g->n_top + k]);
        }
        json_put_text(b, "}");
    }
    json_put_text(b, "],\"text_offset\":[");
    for (int i = from; i < to; i++) {
        if (i > from) json_put_text(b, ",");
        json_put_int(b, (long long)st->text_offset);
        st->text_offset += token_text(j->out[i], t, sizeof t);
    }
    json_put_text(b, "]}");
}

static void put_head(json_buf *b, const gen_state *st, const char *object) {
    json_put_text(b, "{\"id\":");
    json_put_cstring(b, st->id);
    json_put_text(b, ",\"object\":");
    json_put_cstring(b, object);
    json_put_text(b, ",\"created\":");
    json_put_int(b, st->created);
    json_put_text(b, ",\"model\":");
    json_put_cstring(b, S.model_name);
    json_put_text(b, ",\"system_fingerprint\":\"bitnet-aot\",\"seed\":");
    json_put_int(b, (long long)st->g->s.seed);
}

/* One streamed chunk: content (may be empty) and, in the last one, the finish reason. */
static void stream_chunk(gen_state *st, const char *content, size_t n, const char *finish) {
    json_buf b;
    json_buf_init(&b);
    int ep = st->g->endpoint;
    int lp_to = st->n_tokens;
    if (ep == EP_GENERATE) {
        json_put_text(&b, "{\"text\":");
        json_put_string(&b, content, n);
        if (finish) {
            json_put_text(&b, ",\"tokens\":");
            json_put_int(&b, st->n_tokens);
            json_put_text(&b, ",\"finish_reason\":");
            json_put_cstring(&b, finish);
            json_put_text(&b, ",\"seed\":");
            json_put_int(&b, (long long)st->g->s.seed);
        }
        json_put_text(&b, "}");
    } else {
        put_head(&b, st, ep == EP_CHAT ? "chat.completion.chunk" : "text_completion");
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
        }
        json_put_text(&b, ",\"logprobs\":");
        if (st->g->logprobs && lp_to > st->lp_sent) {
            put_logprobs(&b, st, st->lp_sent, lp_to);
            st->lp_sent = lp_to;
        } else json_put_text(&b, "null");
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

/* One generated token: returns 1 to stop. */
static int on_token(gen_state *st, int32_t id) {
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
    return st->stopped || st->client_gone;
}

static void put_usage(json_buf *b, const gen_state *st) {
    json_put_text(b, "\"usage\":{\"prompt_tokens\":");
    json_put_int(b, st->g->n_prompt);
    json_put_text(b, ",\"completion_tokens\":");
    json_put_int(b, st->n_tokens);
    json_put_text(b, ",\"total_tokens\":");
    json_put_int(b, st->g->n_prompt + st->n_tokens);
    json_put_text(b, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    json_put_int(b, st->j ? st->j->n_cached : 0);
    json_put_text(b, "}}");
}

/* The whole (non-streamed) response body. */
static void put_response(json_buf *b, gen_state *st, const char *finish) {
    int ep = st->g->endpoint;
    if (ep == EP_GENERATE) {
        json_put_text(b, "{\"text\":");
        json_put_string(b, st->text.data, st->text.len);
        json_put_text(b, ",\"tokens\":");
        json_put_int(b, st->n_tokens);
        json_put_text(b, ",\"prompt_tokens\":");
        json_put_int(b, st->g->n_prompt);
        json_put_text(b, ",\"cached_tokens\":");
        json_put_int(b, st->j ? st->j->n_cached : 0);
        json_put_text(b, ",\"finish_reason\":");
        json_put_cstring(b, finish);
        json_put_text(b, ",\"seed\":");
        json_put_int(b, (long long)st->g->s.seed);
        json_put_text(b, "}\n");
        return;
    }
    put_head(b, st, ep == EP_CHAT ? "chat.completion" : "text_completion");
    json_put_text(b, ",\"choices\":[{\"index\":0,");
    if (ep == EP_CHAT) {
        json_put_text(b, "\"message\":{\"role\":\"assistant\",\"content\":");
        json_put_string(b, st->text.data, st->text.len);
        json_put_text(b, "}");
    } else {
        json_put_text(b, "\"text\":");
        json_put_string(b, st->text.data, st->text.len);
    }
    json_put_text(b, ",\"logprobs\":");
    put_logprobs(b, st, 0, st->n_tokens);
    json_put_text(b, ",\"finish_reason\":");
    json_put_cstring(b, finish);
    json_put_text(b, "}],");
    put_usage(b, st);
    json_put_text(b, "}\n");
}

/* Returns 1 if the connection can take another request. */
static int run_generation(int fd, gen_request *g) {
    gen_state st;
    memset(&st, 0, sizeof st);
    st.fd = fd;
    st.g = g;
    st.created = (long)time(NULL);
    snprintf(st.id, sizeof st.id, "%s-%lx%08lx", g->endpoint == EP_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long)st.created, (unsigned long)atomic_fetch_add(&S.next_id, 1));
    RL.n_prompt = g->n_prompt;
    job *j = NULL;
    if (g->max_tokens > 0) {
        int status = 0;
        char msg[300];
        j = job_submit(g, &status, msg, sizeof msg);
        if (!j) { send_error(fd, status, msg); return keep_alive; }
    }
    st.j = j;
    json_buf_init(&st.text);
    json_put_raw(&st.text, "", 0);
    if (S.tok) {
        tokenizer_stream_init(&st.ts, S.tok, 0);
        st.piece = malloc(tokenizer_stream_bound(S.tok) + 1);
    }
    int result = JOB_OK;
    if ((S.tok && !st.piece) || st.text.failed) {
        send_error(fd, 500, "out of memory");
        goto done;
    }
    /* wait for the job to start (or end in the queue) before answering a stream's head */
    if (j) {
        pthread_mutex_lock(&S.mu);
        while (j->state == JOB_QUEUED) {
            timed_wait(&j->cv, &S.mu, 200);
            if (j->state == JOB_QUEUED && http_peer_closed(fd)) { st.client_gone = 1; break; }
        }
        int state = j->state;
        result = j->result;
        pthread_mutex_unlock(&S.mu);
        if (st.client_gone) goto done;
        if (state == JOB_DONE && result == JOB_SHUTDOWN) { send_error(fd, 503, "the server is shutting down"); goto done; }
    }
    if (g->stream) {
        keep_alive = 0;                      /* a close-delimited event stream */
        RL.status = 200;
        if (http_respond_head(fd, 200, "text/event-stream", NULL) < 0) { st.client_gone = 1; goto done; }
        if (g->endpoint == EP_CHAT) {
            /* the first chunk names the role, as OpenAI's does */
            json_buf b;
            json_buf_init(&b);
            put_head(&b, &st, "chat.completion.chunk");
            json_put_text(&b, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}");
            send_event(&st, &b);
            json_buf_free(&b);
        }
    }
    /* take the tokens as the scheduler produces them */
    while (j && !st.stopped && !st.client_gone) {
        pthread_mutex_lock(&S.mu);
        while (j->n_out == st.n_tokens && j->state != JOB_DONE) {
            timed_wait(&j->cv, &S.mu, 200);
            if (j->n_out == st.n_tokens && j->state != JOB_DONE && http_peer_closed(fd)) { st.client_gone = 1; break; }
        }
        int avail = j->n_out, state = j->state;
        result = j->result;
        if (state == JOB_DONE && result == JOB_ERROR && !g->stream) {
            pthread_mutex_unlock(&S.mu);
            send_error(fd, 500, j->error);
            goto done;
        }
        pthread_mutex_unlock(&S.mu);
        if (st.client_gone) break;
        if (RL.ttft < 0 && avail > 0) RL.ttft = j->t_first - RL.t0;
        while (st.n_tokens < avail && !on_token(&st, j->out[st.n_tokens])) { }
        if (!g->stream && !st.stopped && http_peer_closed(fd)) st.client_gone = 1;
        if (state == JOB_DONE && st.n_tokens >= avail) break;
    }
    if (j && result == JOB_ERROR && g->stream) st.client_gone = 1;    /* cannot change the status any more: cut */
    if (st.client_gone) { keep_alive = 0; goto done; }
    if (S.tok && !st.stopped) {
        size_t k = tokenizer_stream_flush(&st.ts, st.piece);
        json_put_raw(&st.text, st.piece, k);
        if (g->n_stops && cut_at_stop(&st)) st.stopped = 1;
    }
    const char *finish = st.stopped || (j && j->stopped) ? "stop" : (st.n_tokens >= g->max_tokens ? "length" : "stop");
    RL.n_gen = st.n_tokens;
    if (j) RL.n_cached = j->n_cached;
    if (g->stream) {
        stream_ready_text(&st, 1);
        stream_chunk(&st, "", 0, finish);
        if (g->include_usage && g->endpoint != EP_GENERATE) {
            json_buf b;
            json_buf_init(&b);
            put_head(&b, &st, g->endpoint == EP_CHAT ? "chat.completion.chunk" : "text_completion");
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
        else respond(fd, 200, "application/json", NULL, b.data, b.len);
        json_buf_free(&b);
    }
done:
    RL.n_gen = st.n_tokens;
    if (j) {
        pthread_mutex_lock(&M.mu);
        M.prompt_tokens += (unsigned long)g->n_prompt;
        M.cached_tokens += (unsigned long)j->n_cached;
        M.completion_tokens += (unsigned long)st.n_tokens;
        pthread_mutex_unlock(&M.mu);
        RL.n_cached = j->n_cached;
        job_release(j);
    }
    free(st.piece);
    json_buf_free(&st.text);
    return keep_alive && !st.client_gone;
}

/* ===================================================================================== */
/* The endpoints                                                                           */
/* ===================================================================================== */

static void handle_health(int fd) {
    pthread_mutex_lock(&S.mu);
    int busy = S.running, waiting = S.queued;
    pthread_mutex_unlock(&S.mu);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"ok\",\"slots\":%d,\"slots_busy\":%d,\"queued\":%d}\n",
                     S.n_slots, busy, waiting);
    respond(fd, 200, "application/json", NULL, body, (size_t)n);
}

static void handle_models(int fd) {
    json_buf b;
    json_buf_init(&b);
    json_put_text(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    json_put_cstring(&b, S.model_name);
    json_put_text(&b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"bitnet-aot\",\"context_length\":");
    json_put_int(&b, S.n_ctx);
    json_put_text(&b, "}]}\n");
    if (!b.failed) respond(fd, 200, "application/json", NULL, b.data, b.len);
    json_buf_free(&b);
}

static void put_hist(json_buf *b, const char *name, const char *help, const histogram *h, const double *buckets) {
    char line[256];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    json_put_text(b, line);
    unsigned long cum = 0;
    for (int i = 0; i <= N_BUCKETS; i++) {
        cum += h->count[i];
        if (i < N_BUCKETS) snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %lu\n", name, buckets[i], cum);
        else snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %lu\n", name, cum);
        json_put_text(b, line);
    }
    snprintf(line, sizeof line, "%s_sum %.6f\n%s_count %lu\n", name, h->sum, name, h->n);
    json_put_text(b, line);
}

static void handle_metrics(int fd) {
    pthread_mutex_lock(&S.mu);
    int busy = S.running, waiting = S.queued, conns = S.connections;
    pthread_mutex_unlock(&S.mu);
    json_buf b;
    json_buf_init(&b);
    char line[256];
    pthread_mutex_lock(&M.mu);
    json_put_text(&b, "# HELP bitnet_requests_total HTTP requests answered, by status\n# TYPE bitnet_requests_total counter\n");
    for (int s = 100; s < 600; s++) {
        if (!M.by_status[s]) continue;
        snprintf(line, sizeof line, "bitnet_requests_total{status=\"%d\"} %lu\n", s, M.by_status[s]);
        json_put_text(&b, line);
    }
    snprintf(line, sizeof line,
             "# HELP bitnet_prompt_tokens_total prompt tokens of generation requests\n# TYPE bitnet_prompt_tokens_total counter\n"
             "bitnet_prompt_tokens_total %lu\n", M.prompt_tokens);
    json_put_text(&b, line);
    snprintf(line, sizeof line,
             "# HELP bitnet_prompt_tokens_cached_total prompt tokens taken from the prompt cache\n# TYPE bitnet_prompt_tokens_cached_total counter\n"
             "bitnet_prompt_tokens_cached_total %lu\n", M.cached_tokens);
    json_put_text(&b, line);
    snprintf(line, sizeof line,
             "# HELP bitnet_completion_tokens_total generated tokens\n# TYPE bitnet_completion_tokens_total counter\n"
             "bitnet_completion_tokens_total %lu\n", M.completion_tokens);
    json_put_text(&b, line);
    snprintf(line, sizeof line,
             "# HELP bitnet_batch_steps_total batched forward passes\n# TYPE bitnet_batch_steps_total counter\n"
             "bitnet_batch_steps_total %lu\n", M.steps);
    json_put_text(&b, line);
    snprintf(line, sizeof line,
             "# HELP bitnet_batch_rows_total rows (tokens) of all batched forward passes\n# TYPE bitnet_batch_rows_total counter\n"
             "bitnet_batch_rows_total %lu\n", M.batch_rows);
    json_put_text(&b, line);
    put_hist(&b, "bitnet_request_duration_seconds", "time to answer a request", &M.latency, LAT_BUCKETS);
    put_hist(&b, "bitnet_time_to_first_token_seconds", "from the request read to the first generated token", &M.ttft, TTFT_BUCKETS);
    pthread_mutex_unlock(&M.mu);
    snprintf(line, sizeof line,
             "# HELP bitnet_queue_length requests waiting for a slot\n# TYPE bitnet_queue_length gauge\nbitnet_queue_length %d\n"
             "# HELP bitnet_slots_busy slots generating\n# TYPE bitnet_slots_busy gauge\nbitnet_slots_busy %d\n", waiting, busy);
    json_put_text(&b, line);
    snprintf(line, sizeof line,
             "# HELP bitnet_slots decoding slots (--parallel)\n# TYPE bitnet_slots gauge\nbitnet_slots %d\n"
             "# HELP bitnet_connections open connections\n# TYPE bitnet_connections gauge\nbitnet_connections %d\n", S.n_slots, conns);
    json_put_text(&b, line);
    if (!b.failed) respond(fd, 200, "text/plain; version=0.0.4", NULL, b.data, b.len);
    else send_error(fd, 500, "out of memory");
    json_buf_free(&b);
}

static int parse_body(int fd, const http_request *req, json_doc *d) {
    if (json_parse(d, req->body ? req->body : "", req->body_len) < 0) {
        send_error(fd, 400, req->body_len ? d->error : "the request needs a JSON body");
        return -1;
    }
    if (json_root(d)->type != JSON_OBJECT) { send_error(fd, 400, "the request body must be a JSON object"); return -1; }
    return 0;
}

/* POST /tokenize {"content": "text", "add_special": true, "parse_special": true} -> {"tokens": [...]} */
static void handle_tokenize(int fd, const http_request *req) {
    json_doc d;
    if (parse_body(fd, req, &d) < 0) { json_free(&d); return; }
    const json_value *root = json_root(&d);
    for (const json_value *f = json_first(&d, root); f; f = json_next(&d, f))
        if (strcmp(f->key, "content") && strcmp(f->key, "add_special") && strcmp(f->key, "parse_special") && strcmp(f->key, "model")) {
            char msg[160];
            snprintf(msg, sizeof msg, "the field '%.80s' is not supported by /tokenize", f->key);
            send_error_full(fd, 400, msg, f->key, NULL);
            json_free(&d);
            return;
        }
    const json_value *c = json_get(&d, root, "content");
    req_error e;
    memset(&e, 0, sizeof e);
    int add = 1, special = 1;
    if (!c || c->type != JSON_STRING) send_error_full(fd, 400, "'content' (a string) is required", "content", NULL);
    else if (!S.tok) send_error(fd, 400, "this model was built without a tokenizer");
    else if (get_bool(&d, root, "add_special", &add, &e) < 0 || get_bool(&d, root, "parse_special", &special, &e) < 0)
        send_error_full(fd, 400, e.message, e.param, NULL);
    else {
        int32_t *ids = NULL;
        int n = text_encode(c->str, c->len, add, special, &ids);
        if (n < 0) send_error(fd, 400, bn_last_error());
        else {
            json_buf b;
            json_buf_init(&b);
            json_put_text(&b, "{\"tokens\":[");
            for (int i = 0; i < n; i++) {
                if (i) json_put_text(&b, ",");
                json_put_int(&b, ids[i]);
            }
            json_put_text(&b, "]}\n");
            if (!b.failed) respond(fd, 200, "application/json", NULL, b.data, b.len);
            else send_error(fd, 500, "out of memory");
            json_buf_free(&b);
        }
        free(ids);
    }
    json_free(&d);
}

/* POST /detokenize {"tokens": [ids]} -> {"content": "text"} */
static void handle_detokenize(int fd, const http_request *req) {
    json_doc d;
    if (parse_body(fd, req, &d) < 0) { json_free(&d); return; }
    const json_value *root = json_root(&d);
    for (const json_value *f = json_first(&d, root); f; f = json_next(&d, f))
        if (strcmp(f->key, "tokens") && strcmp(f->key, "model")) {
            char msg[160];
            snprintf(msg, sizeof msg, "the field '%.80s' is not supported by /detokenize", f->key);
            send_error_full(fd, 400, msg, f->key, NULL);
            json_free(&d);
            return;
        }
    const json_value *t = json_get(&d, root, "tokens");
    if (!t || t->type != JSON_ARRAY) { send_error_full(fd, 400, "'tokens' (an array of token ids) is required", "tokens", NULL); json_free(&d); return; }
    if (!S.tok) { send_error(fd, 400, "this model was built without a tokenizer"); json_free(&d); return; }
    int32_t *ids = malloc((t->len + 1) * sizeof(int32_t));
    int n = 0, ok = ids != NULL;
    for (const json_value *v = json_first(&d, t); ok && v; v = json_next(&d, v)) {
        if (v->type != JSON_NUMBER || !v->is_integer || v->number < 0 || v->number >= BN_N_VOCAB) ok = 0;
        else ids[n++] = (int32_t)v->number;
    }
    if (!ok) send_error_full(fd, 400, ids ? "'tokens' must hold token ids (integers in 0..n_vocab-1)" : "out of memory", "tokens", NULL);
    else {
        long len = bn_detokenize(ids, n, 0, NULL, 0);
        char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
        if (!text) send_error(fd, 500, "out of memory");
        else {
            bn_detokenize(ids, n, 0, text, (size_t)len + 1);
            json_buf b;
            json_buf_init(&b);
            json_put_text(&b, "{\"content\":");
            json_put_string(&b, text, (size_t)len);
            json_put_text(&b, "}\n");
            if (!b.failed) respond(fd, 200, "application/json", NULL, b.data, b.len);
            json_buf_free(&b);
        }
        free(text);
    }
    free(ids);
    json_free(&d);
}

static int handle_generation(int fd, const http_request *req, int endpoint) {
    json_doc d;
    if (json_parse(&d, req->body ? req->body : "", req->body_len) < 0) {
        send_error(fd, 400, req->body_len ? d.error : "the request needs a JSON body");
        json_free(&d);
        return keep_alive;
    }
    gen_request *g = calloc(1, sizeof *g);
    req_error e;
    memset(&e, 0, sizeof e);
    int more = keep_alive;
    if (!g) send_error(fd, 500, "out of memory");
    else if (read_gen_request(&d, endpoint, g, &e) < 0) send_error_full(fd, 400, e.message, e.param, e.code);
    else {
        if (S.o->log_prompts) { RL.prompt_text = req->body; RL.prompt_len = req->body_len; }
        json_free(&d);             /* the parsed body is not needed while generating */
        more = run_generation(fd, g);
    }
    json_free(&d);
    if (g) free(g->prompt);
    free(g);
    return more;
}

static int authorized(const http_request *req) {
    if (!S.o->api_key) return 1;
    const char *a = req->authorization;
    if (req->authorization_too_long || strncasecmp(a, "Bearer ", 7) != 0) return 0;
    a += 7;
    while (*a == ' ') a++;
    return http_secret_equal(a, S.o->api_key);
}

enum { R_HEALTH = -1, R_MODELS = -2, R_METRICS = -3, R_PAGE = -4, R_TOKENIZE = -5, R_DETOKENIZE = -6 };

/* Answers one request; returns 1 if the connection can take another. */
static int route(int fd, const http_request *req) {
    static const struct { const char *path; const char *method; int endpoint; } routes[] = {
        {"/health", "GET", R_HEALTH},
        {"/metrics", "GET", R_METRICS},
        {"/", "GET", R_PAGE},
        {"/v1/models", "GET", R_MODELS},
        {"/generate", "POST", EP_GENERATE},
        {"/v1/completions", "POST", EP_COMPLETIONS},
        {"/v1/chat/completions", "POST", EP_CHAT},
        {"/tokenize", "POST", R_TOKENIZE},
        {"/detokenize", "POST", R_DETOKENIZE},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(req->path, routes[i].path) != 0) continue;
        if (S.o->cors && strcmp(req->method, "OPTIONS") == 0) {      /* a CORS preflight */
            char extra[200];
            snprintf(extra, sizeof extra, "Access-Control-Allow-Methods: %s, OPTIONS\r\n"
                     "Access-Control-Allow-Headers: Authorization, Content-Type\r\nAccess-Control-Max-Age: 600\r\n",
                     routes[i].method);
            respond(fd, 204, "text/plain", extra, "", 0);
            return keep_alive;
        }
        if (strcmp(req->method, routes[i].method) != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "%.16s is not allowed on %.32s (use %.8s)", req->method, routes[i].path, routes[i].method);
            send_error(fd, 405, msg);
            return keep_alive;
        }
        int ep = routes[i].endpoint;
        if (ep == R_HEALTH) { handle_health(fd); return keep_alive; }
        if (ep == R_PAGE) { respond(fd, 200, "text/html; charset=utf-8", NULL, CHAT_PAGE_HTML, sizeof CHAT_PAGE_HTML - 1); return keep_alive; }
        if (ep == R_METRICS) { handle_metrics(fd); return keep_alive; }
        if (!authorized(req)) { send_error(fd, 401, "invalid or missing API key: send 'Authorization: Bearer KEY'"); return keep_alive; }
        if (ep == R_MODELS) handle_models(fd);
        else if (ep == R_TOKENIZE) handle_tokenize(fd, req);
        else if (ep == R_DETOKENIZE) handle_detokenize(fd, req);
        else return handle_generation(fd, req, ep);
        return keep_alive;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "no such endpoint: %.100s (try /v1/completions, /v1/chat/completions, /generate)", req->path);
    send_error(fd, 404, msg);
    return keep_alive;
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
    http_conn *hc = http_conn_open(fd);
    http_error err;
    keep_alive = 0;
    if (!req || !hc) send_error(fd, 500, "out of memory");
    else {
        for (;;) {
            memset(&RL, 0, sizeof RL);
            RL.ttft = -1;
            if (http_conn_read(hc, &lim, req, &err) < 0) {
                RL.t0 = now_s();
                keep_alive = 0;
                if (err.status) {                 /* a malformed request: answered, counted and logged */
                    send_error(fd, err.status, err.message);
                    req->method[sizeof req->method - 1] = 0;
                    request_done(req);
                }
                break;
            }
            RL.t0 = now_s();
            pthread_mutex_lock(&S.mu);
            /* keep the connection unless stopping or crowded (idle connections hold threads) */
            keep_alive = req->keep_alive && !S.stop && S.connections * 2 <= S.max_connections;
            pthread_mutex_unlock(&S.mu);
            int more = route(fd, req);
            request_done(req);
            http_request_free(req);
            if (!more || S.stop) break;
        }
    }
    http_conn_free(hc);
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
    for (int i = 0; S.slots && i < S.n_slots; i++) {
        bn_free(S.slots[i].ctx);
        free(S.slots[i].toks);
        free(S.slots[i].sample_scratch);
    }
    free(S.slots);
    S.slots = NULL;
    free(S.logits);
    free(S.lp_logits);
    S.logits = S.lp_logits = NULL;
}

int server_run(const options *o) {
    memset(&S, 0, sizeof S);
    S.o = o;
    S.tok = text_tokenizer();      /* initialise it here, before any thread runs */
    if (o->chat_format && chat_format_by_name(o->chat_format) == CHAT_UNKNOWN) {
        fprintf(stderr, "error: --chat-format must be bitnet, llama3, falcon3 or chatml, not '%s'\n", o->chat_format);
        return 2;
    }
    find_model_name();
    find_chat_format();
    S.n_ctx = o->n_ctx ? o->n_ctx : options_default_ctx();
    S.n_slots = o->parallel;
    S.max_connections = o->parallel + o->queue + EXTRA_CONNECTIONS;
    S.slots = calloc((size_t)S.n_slots, sizeof *S.slots);
    S.logits = malloc((size_t)BN_BATCH * BN_N_VOCAB * sizeof(float));
    S.lp_logits = malloc((size_t)BN_BATCH * BN_N_VOCAB * sizeof(float));
    if (!S.slots || !S.logits || !S.lp_logits) { fprintf(stderr, "error: out of memory\n"); free_slots(); return 2; }
    for (int i = 0; i < S.n_slots; i++) {
        /* slot 0 lends its buffers and all the threads to every batched pass */
        S.slots[i].ctx = bn_create(S.n_ctx, i == 0 ? o->n_threads : 1);
        S.slots[i].toks = malloc(((size_t)S.n_ctx + 1) * sizeof(int32_t));
        S.slots[i].sample_scratch = malloc(bn_sample_scratch_bytes());
        if (!S.slots[i].ctx || !S.slots[i].toks || !S.slots[i].sample_scratch) {
            fprintf(stderr, "error: slot %d of --parallel %d: %s\n", i + 1, S.n_slots, S.slots[i].ctx ? "out of memory" : bn_last_error());
            free_slots();
            return 2;
        }
    }
    if (o->cors) {
        char h[600];
        snprintf(h, sizeof h, "Access-Control-Allow-Origin: %.500s\r\nVary: Origin\r\n", o->cors);
        http_set_common_headers(h);
    }
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.changed, NULL);
    pthread_cond_init(&S.work, NULL);

    if (pipe(S.wake_pipe) != 0) { fprintf(stderr, "error: pipe: %s\n", strerror(errno)); free_slots(); return 2; }
    int lfd = open_listener(o->host, o->port);
    if (lfd < 0) { free_slots(); return 2; }
    if (pthread_create(&S.scheduler, NULL, scheduler_main, NULL) != 0) {
        fprintf(stderr, "error: cannot start the scheduler thread\n");
        close(lfd);
        free_slots();
        return 2;
    }
    S.scheduler_started = 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    fprintf(stderr, "serving %s on http://%s:%d (%d slot%s batched on %d thread%s, up to %d tokens per pass, context %d tokens, "
                    "queue %d, chat format %s)\n",
            S.model_name, o->host, o->port, S.n_slots, S.n_slots == 1 ? "" : "s", o->n_threads,
            o->n_threads == 1 ? "" : "s", BN_BATCH, S.n_ctx, o->queue, chat_format_name(S.chat_format));
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
    pthread_cond_signal(&S.work);
    pthread_mutex_unlock(&S.mu);
    if (left == 0) { pthread_join(S.scheduler, NULL); free_slots(); }     /* else threads still use them: the exit frees all */
    else fprintf(stderr, "shutting down with %d connection(s) still open\n", left);
    fprintf(stderr, "server stopped\n");
    return 0;
}

#endif
