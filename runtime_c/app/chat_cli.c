/* chat_cli.c: talking to the model on stdin/stdout, one turn per input line.
 *
 *   ./model --chat [--system "..."] [--chat-format bitnet|llama3|falcon3|chatml]
 *       A conversation with the model's chat template (chat.h). Each line of stdin is one
 *       user message; the reply is streamed to stdout and ends with a newline.
 *   ./model -i [-p "first text"]
 *       Interactive continuation without a template: each line of stdin is appended to the
 *       text as it is (no newline added; start a line with a space to separate it) and the
 *       model continues. An empty line lets it continue where it stopped.
 *
 * Both work the same when stdin is a pipe (`printf 'Hi\nMore\n' | ./model --chat`): the
 * session ends at end of input with exit code 0. On a terminal a "> " prompt goes to stderr.
 *
 * The KV cache is kept across turns and only what a turn adds is encoded and evaluated.
 * Chat formats are prefix-stable (chat.h), so the text of a turn is
 *     format(messages + [user line], with the generation prompt)
 * minus the text already formatted in earlier turns. Earlier assistant messages are
 * formatted with empty content: their tokens are the ones the model generated, already in
 * the cache, and every format puts the same text after a message whatever its content
 * (e.g. BitNet: "...Assistant: " [reply tokens] "<|eot_id|>User: next<|eot_id|>Assistant: ").
 * A reply that ends at an end-of-generation token does not keep that token (the template's
 * own end-of-turn text follows); a reply cut by -n keeps its last token, which bn_generate
 * sampled but did not evaluate: it goes in front of the next turn's ids.
 *
 * Context shift: a session never ends because the context is full. When a turn does not
 * fit (its ids plus room for min(-n, a quarter of the context) of reply), or a reply
 * reaches the end of the context, the oldest turns are dropped and the rest re-encoded:
 *   --chat: the system message and the latest turns are formatted again from their text
 *     (replies as the text they printed), encoded and evaluated from an empty cache,
 *     dropping the oldest user/assistant pair until it fits; a reply cut by the end of the
 *     context goes on after its text so far (re-encoded too).
 *   -i: the first text's ids (-p, or the first line) are kept and the older half of the
 *     rest dropped; the kept ids are evaluated again as they were (no re-tokenizing).
 * Re-encoding gives exactly the cache a fresh session would have for the kept text, so
 * what follows is what the reference computes for that shorter conversation (the dropped
 * turns are forgotten). A single message too long for the context gets one line on stderr
 * and is left out; the session goes on.
 *
 * Ctrl-C (SIGINT) during a reply stops it (the session goes on); a Ctrl-C while waiting
 * for input, or a second one before the reply has stopped, exits (status 130).
 *
 * --print-ids prints the ids each turn built from its text (not the carried-over reply
 * token) to stderr as "ids: 1 2 3", so tests can compare them with the Python side; in
 * --chat also each reply's ids ("reply: ...") and every context shift ("context shift:
 * kept K of N messages, T tokens").
 *
 * Sections: reading lines, the session (context, one turn), chat, interactive, chat_run.
 */
#include "modes.h"

#include "bitnet.h"
#include "text/chat.h"
#include "core/model_internal.h"
#include "core/platform.h"
#include "text/text.h"
#include "text/tokenizer.h"

#include <limits.h>
#if PLATFORM_HAS_SERVER || defined(_WIN32)
#include <signal.h>                     /* WASI has no signals (its signal.h is an #error) */
#define HAVE_SIGINT 1
typedef sig_atomic_t signal_flag;
#else
#define HAVE_SIGINT 0
typedef int signal_flag;
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINE_BYTES (64u << 20)      /* one input line; the tokenizer takes up to 256 MiB */

/* ------------------------------------------------------------------------------------ */
/* Reading lines                                                                        */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    char *buf;          /* the line without its "\n" / "\r\n", NUL-terminated */
    size_t len;         /* bytes in buf (a line may hold NUL bytes) */
    size_t cap;
} line_reader;

/* Reads the next line of f. Returns 1 with a line, 0 at end of input, -1 on an error
 * (out of memory, line too long: message on stderr). Any bytes are accepted. */
static int read_line(FILE *f, line_reader *r) {
    r->len = 0;
    int c, got = 0;
    while ((c = getc(f)) != EOF) {
        got = 1;
        if (c == '\n') break;
        if (r->len + 2 > r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 256;
            if (cap > MAX_LINE_BYTES) {
                fprintf(stderr, "error: an input line is longer than %u MiB\n", MAX_LINE_BYTES >> 20);
                return -1;
            }
            char *nb = realloc(r->buf, cap);
            if (!nb) { fprintf(stderr, "error: out of memory reading a line\n"); return -1; }
            r->buf = nb;
            r->cap = cap;
        }
        r->buf[r->len++] = (char)c;
    }
    if (!got) return 0;
    if (r->len > 0 && r->buf[r->len - 1] == '\r') r->len--;
    if (r->buf) r->buf[r->len] = '\0';
    else { r->buf = malloc(1); if (!r->buf) return -1; r->cap = 1; r->buf[0] = '\0'; }
    return 1;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Ctrl-C                                                                               */
/* ------------------------------------------------------------------------------------ */

static volatile signal_flag replying;        /* a reply is being generated */
static volatile signal_flag interrupted;     /* Ctrl-C seen during it */

#if HAVE_SIGINT
static void on_sigint(int sig) {
    (void)sig;
    if (replying && !interrupted) { interrupted = 1; return; }
    static const char nl[] = "\n";
    if (write(2, nl, 1) < 0) { /* exiting anyway */ }
    _exit(130);
}

static void install_sigint(void) {
#if PLATFORM_HAS_SERVER
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
#else
    signal(SIGINT, on_sigint);
#endif
}
#else
static void install_sigint(void) {}
#endif

/* ------------------------------------------------------------------------------------ */
/* The session: one context, one turn at a time                                         */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    const options *o;
    const Tokenizer *tok;
    bn_context *c;
    int n_ctx;
    int tty;                  /* stdin is a terminal: show prompts */
    int turns;                /* turns generated so far */
    int32_t pending;          /* last generated token, sampled but not in the cache; -1 none */
    int32_t *out;             /* (n_predict + 1) generated ids of the current turn */
    int32_t *hist;            /* (n_ctx) the ids in the cache, in order (-i's context shift) */
    int n_hist;
    int n_keep;               /* -i: ids at the start that a context shift keeps */
    /* the current reply */
    text_stream stream;
    int stopped_at_eog;
    int cut;                  /* the last turn's reply stopped at the end of the context */
    int n_gen;                /* ids the last turn generated (s->out) */
    /* totals for the timing line */
    int n_prompt_total, n_gen_total;
    double t_prompt_total, t_gen_total;
} session;

enum { TURN_OK = 0, TURN_NO_ROOM = 1, TURN_ERROR = 2 };

static int on_token(void *user, int32_t id) {
    session *s = user;
    if (interrupted) return 1;
    if (!s->o->ignore_eos && tokenizer_is_eog(s->tok, id)) {
        s->stopped_at_eog = 1;
        return 1;                             /* stop; the token is not printed */
    }
    text_stream_put(&s->stream, id, stdout);
    fflush(stdout);
    return 0;
}

static void print_ids(const char *label, const int32_t *ids, int n) {
    fprintf(stderr, "%s:", label);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, "\n");
}

static int reply_room(const session *s) {
    return s->o->n_predict < s->n_ctx / 4 ? s->o->n_predict : s->n_ctx / 4;
}

/* Evaluates the carried-over token and ids[0..n), then streams up to n_predict tokens of
 * reply to stdout (newline after it when end_line). TURN_NO_ROOM: the ids and room for a
 * reply do not fit behind the cache (nothing was done). s->cut: the reply reached the end
 * of the context. */
static int session_turn_n(session *s, const int32_t *ids, int n, int n_predict, int end_line) {
    if (s->o->print_ids) print_ids("ids", ids, n);
    int n_prompt = n + (s->pending >= 0);
    s->cut = 0;
    s->n_gen = 0;
    if (n_prompt == 0) return TURN_OK;        /* nothing to continue from */
    int room = reply_room(s) < n_predict ? reply_room(s) : n_predict;
    if (bn_pos(s->c) + n_prompt + (room > 0 ? room : 1) > s->n_ctx) return TURN_NO_ROOM;
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    if (!prompt) { fprintf(stderr, "error: out of memory\n"); return TURN_ERROR; }
    int k = 0;
    if (s->pending >= 0) prompt[k++] = s->pending;
    if (n > 0) memcpy(prompt + k, ids, (size_t)n * sizeof *ids);

    bn_sampling sp = s->o->s;
    sp.seed += (uint64_t)s->turns;            /* a different random stream for every turn */
    memset(&s->stream, 0, sizeof s->stream);
    s->stopped_at_eog = 0;
    /* ignore_eos = 1: on_token decides where the reply ends (every end-of-generation token
     * of the vocabulary, not only EOS/EOT) */
    int n_gen = bn_generate(s->c, prompt, n_prompt, n_predict, &sp, 1, s->out, on_token, s);
    int was_interrupted = interrupted;
    interrupted = 0;
    text_stream_flush(&s->stream, stdout);
    if (end_line) printf("\n");
    fflush(stdout);
    s->turns++;
    if (n_gen < 0) { free(prompt); fprintf(stderr, "error: %s\n", bn_last_error()); return TURN_ERROR; }
    /* the cache now holds the prompt and every generated id but the last */
    for (int i = 0; i < n_prompt && s->n_hist < s->n_ctx; i++) s->hist[s->n_hist++] = prompt[i];
    for (int i = 0; i + 1 < n_gen && s->n_hist < s->n_ctx; i++) s->hist[s->n_hist++] = s->out[i];
    free(prompt);
    s->n_gen = n_gen;

    int np, ng;
    double tp, tg;
    bn_last_timings(s->c, &np, &tp, &ng, &tg);
    s->n_prompt_total += np; s->t_prompt_total += tp;
    s->n_gen_total += ng; s->t_gen_total += tg;

    s->pending = (n_gen > 0 && !s->stopped_at_eog) ? s->out[n_gen - 1] : -1;
    if (was_interrupted) {
        if (s->pending >= 0 && s->n_hist < s->n_ctx) {   /* a stopped reply keeps what it said */
            if (bn_eval(s->c, &s->pending, 1, NULL, 0) == 0) s->hist[s->n_hist++] = s->pending;
            s->pending = -1;
        }
        if (s->tty) fprintf(stderr, "(stopped; Ctrl-C again at the prompt exits)\n");
        return TURN_OK;
    }
    /* bn_generate stops early only at the end of the context (or at our eog stop) */
    if (!s->stopped_at_eog && n_gen < n_predict) s->cut = 1;
    return TURN_OK;
}

/* Starts the cache again with ids[0..n) (nothing generated). 0, or -1 on an error. */
static int session_refill(session *s, const int32_t *ids, int n) {
    bn_reset(s->c);
    s->pending = -1;
    s->n_hist = 0;
    if (n > s->n_ctx) n = s->n_ctx;
    if (n > 0 && bn_eval(s->c, ids, n, NULL, 0) != 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return -1; }
    memmove(s->hist, ids, (size_t)n * sizeof *ids);
    s->n_hist = n;
    return 0;
}

static void session_timings(const session *s) {
    if (!s->o->show_timings || s->turns == 0) return;
    double tp = s->t_prompt_total, tg = s->t_gen_total;
    fprintf(stderr, "timings: %d turns; prompt %d tokens in %.3f s (%.2f tok/s), generation %d tokens in %.3f s (%.2f tok/s), %d threads, seed %llu\n",
            s->turns, s->n_prompt_total, tp, tp > 0 ? s->n_prompt_total / tp : 0.0,
            s->n_gen_total, tg, tg > 0 ? s->n_gen_total / tg : 0.0, s->o->n_threads,
            (unsigned long long)s->o->s.seed);
}

static void show_prompt(const session *s) {
    if (s->tty) { fputs("> ", stderr); fflush(stderr); }
}

/* Encodes text into a malloc'ed id array; prints the error and returns -1 on failure.
 * (Not text_encode: its counting call cannot tell 1000+ ids from an error code.) The
 * buffer is big enough for any input: every id covers at least one byte of the text except
 * BOS, EOS and one SentencePiece space prefix per stretch between special tokens. */
static int encode(const Tokenizer *t, const char *text, size_t len, int add_bos, int parse_special,
                  int32_t **ids) {
    if (len > (size_t)(INT_MAX - 4) / 2) { fprintf(stderr, "error: the input is too long to tokenize\n"); return -1; }
    size_t cap = 2 * len + 4;
    int *tmp = malloc(cap * sizeof *tmp);
    if (!tmp) { fprintf(stderr, "error: out of memory tokenizing the input\n"); return -1; }
    int n = tokenizer_encode(t, text, len, add_bos && t->add_bos, parse_special, tmp, (int)cap);
    if (n < 0) {
        fprintf(stderr, "error: cannot tokenize the input: %s\n",
                n <= -1000 ? tokenizer_error_string(n) : "more ids than expected");
        free(tmp);
        return -1;
    }
    *ids = malloc(((size_t)n + 1) * sizeof **ids);
    if (!*ids) { free(tmp); fprintf(stderr, "error: out of memory tokenizing the input\n"); return -1; }
    for (int i = 0; i < n; i++) (*ids)[i] = tmp[i];
    free(tmp);
    return n;
}

/* ------------------------------------------------------------------------------------ */
/* Chat: the model's template                                                           */
/* ------------------------------------------------------------------------------------ */

/* The architecture named in the build info is a BitNet one ("bitnet", "bitnet-b1.58", ...). */
static int bitnet_architecture(void) {
    const char *info = bn_info_json();
    const char *p = info ? strstr(info, "\"architecture\":") : NULL;
    if (!p) return 0;
    p += strlen("\"architecture\":");
    while (*p == ' ') p++;
    return strncmp(p, "\"bitnet", 7) == 0;
}

/* The chat format: --chat-format, else the template's, else BitNet's for BitNet models.
 * Returns CHAT_UNKNOWN after printing the error. */
static int choose_format(const options *o, const Tokenizer *t) {
    if (o->chat_format) {
        int fmt = chat_format_by_name(o->chat_format);
        if (fmt == CHAT_UNKNOWN)
            fprintf(stderr, "error: --chat-format '%s' is not one of bitnet, llama3, falcon3, chatml\n", o->chat_format);
        else
            fprintf(stderr, "chat format: %s (--chat-format)\n", chat_format_name(fmt));
        return fmt;
    }
    int fmt = chat_detect(t->chat_template, t->chat_template_len);
    if (fmt != CHAT_UNKNOWN) {
        fprintf(stderr, "chat format: %s (from the model's chat template)\n", chat_format_name(fmt));
        return fmt;
    }
    if (bitnet_architecture()) {
        fprintf(stderr, "chat format: bitnet (the model %s; BitNet architecture)\n",
                t->chat_template_len ? "has a chat template bitnet-aot does not recognise" : "has no chat template");
        return CHAT_BITNET;
    }
    fprintf(stderr, "error: %s; choose one with --chat-format bitnet|llama3|falcon3|chatml, or use -i for plain text\n",
            t->chat_template_len ? "the model's chat template is not one bitnet-aot recognises (BitNet, LLaMA-3, Falcon3)"
                                 : "the model has no chat template");
    return CHAT_UNKNOWN;
}

typedef struct {
    ChatMessage *m;
    char **owned;             /* (n) the content strings this conversation allocated */
    int n, cap;
} conversation;

static int conv_add(conversation *cv, const char *role, const char *content, size_t len) {
    if (cv->n == cv->cap) {
        int cap = cv->cap ? cv->cap * 2 : 16;
        ChatMessage *m = realloc(cv->m, (size_t)cap * sizeof *m);
        if (m) cv->m = m;
        char **ow = realloc(cv->owned, (size_t)cap * sizeof *ow);
        if (ow) cv->owned = ow;
        if (!m || !ow) return -1;
        cv->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, content, len);
    copy[len] = '\0';
    cv->m[cv->n].role = role;
    cv->m[cv->n].content = copy;
    cv->owned[cv->n] = copy;
    cv->n++;
    return 0;
}

static void conv_free(conversation *cv) {
    for (int i = 0; i < cv->n; i++) free(cv->owned[i]);
    free(cv->m);
    free(cv->owned);
}

/* The conversation formatted (with the generation prompt) into a malloc'ed string. */
static char *format_conversation(int fmt, const conversation *cv, const char *eos, size_t *len) {
    size_t n = chat_apply(fmt, cv->m, cv->n, 1, eos, NULL, 0);
    char *text = malloc(n + 1);
    if (!text) return NULL;
    chat_apply(fmt, cv->m, cv->n, 1, eos, text, n + 1);
    *len = n;
    return text;
}

/* Copies msgs[from..n) after msgs[0..n_head) into a new conversation. */
static int conv_copy(conversation *dst, const conversation *src, int n_head, int from) {
    memset(dst, 0, sizeof *dst);
    for (int i = 0; i < src->n; i++) {
        if (i >= n_head && i < from) continue;
        if (conv_add(dst, src->m[i].role, src->m[i].content, strlen(src->m[i].content)) != 0) return -1;
    }
    return 0;
}

/* Context shift for --chat. past holds the conversation as text ([system], u1, a1, ...,
 * the current user message last). Drops the oldest user/assistant pairs until the kept
 * ones, formatted with the generation prompt, plus `partial` (the reply so far) and room
 * to go on fit the context; then *cv becomes the kept conversation, *prev its formatted
 * text, and the cache holds all of it but the last id, which is returned in *last.
 * Returns 0, 1 when even the current message alone does not fit, -1 on an error. */
static int chat_shift(session *s, int fmt, const char *eos, const conversation *past, const char *partial,
                      size_t partial_len, conversation *cv, char **prev, size_t *prev_len, int32_t *last) {
    int n_sys = past->n > 0 && strcmp(past->m[0].role, "system") == 0;
    for (int first = n_sys; first < past->n; first += 2) {
        conversation kept;
        if (conv_copy(&kept, past, n_sys, first) != 0) { conv_free(&kept); fprintf(stderr, "error: out of memory\n"); return -1; }
        size_t len;
        char *text = format_conversation(fmt, &kept, eos, &len);
        char *full = text ? malloc(len + partial_len + 1) : NULL;
        if (!full) { free(text); conv_free(&kept); fprintf(stderr, "error: out of memory\n"); return -1; }
        memcpy(full, text, len);
        if (partial_len) memcpy(full + len, partial, partial_len);
        full[len + partial_len] = '\0';
        int32_t *ids;
        int n = encode(s->tok, full, len + partial_len, 1, 1, &ids);
        free(full);
        if (n < 0) { free(text); conv_free(&kept); return -1; }
        if (n > 0 && n + reply_room(s) <= s->n_ctx) {
            int rc = session_refill(s, ids, n - 1);
            *last = ids[n - 1];
            free(ids);
            conv_free(cv);
            *cv = kept;
            free(*prev);
            *prev = text;
            *prev_len = len;
            if (s->o->print_ids) fprintf(stderr, "context shift: kept %d of %d messages, %d tokens\n", kept.n, past->n, n);
            return rc < 0 ? -1 : 0;
        }
        free(ids);
        free(text);
        conv_free(&kept);
    }
    return 1;
}

static int run_chat(session *s) {
    const options *o = s->o;
    int fmt = choose_format(o, s->tok);
    if (fmt == CHAT_UNKNOWN) return 2;

    /* Falcon3 closes assistant messages with the EOS token's text */
    char *eos = NULL;
    if (s->tok->eos_id >= 0) {
        size_t n;
        const char *e = tokenizer_token_text(s->tok, s->tok->eos_id, &n);
        if (e && (eos = malloc(n + 1)) != NULL) { memcpy(eos, e, n); eos[n] = '\0'; }
    }

    conversation cv = {0};        /* as formatted into the cache (replies empty: their ids are there) */
    conversation past = {0};      /* the same as text (replies as printed), for context shifts */
    line_reader lr = {0};
    char *prev = NULL;            /* the text formatted so far (its tokens are in the cache) */
    size_t prev_len = 0;
    int32_t *reply = malloc(((size_t)o->n_predict + 1) * sizeof *reply);
    int rc = reply ? 0 : 2;
    if (o->system && (conv_add(&cv, "system", o->system, strlen(o->system)) != 0 ||
                      conv_add(&past, "system", o->system, strlen(o->system)) != 0)) rc = 2;
    if (rc) fprintf(stderr, "error: out of memory\n");
    if (s->tty && rc == 0) fprintf(stderr, "type a message and press Enter; Ctrl-C stops a reply; end with Ctrl-D\n");
    while (rc == 0) {
        show_prompt(s);
        int got = read_line(stdin, &lr);
        if (got < 0) { rc = 2; break; }
        if (got == 0) { if (s->tty) fputc('\n', stderr); break; }
        /* a message is a C string: drop NUL bytes rather than cut the line at the first */
        size_t len = 0;
        for (size_t i = 0; i < lr.len; i++)
            if (lr.buf[i] != '\0') lr.buf[len++] = lr.buf[i];
        lr.buf[len] = '\0';
        if (blank(lr.buf, len)) continue;

        if (conv_add(&cv, "user", lr.buf, len) != 0 || conv_add(&past, "user", lr.buf, len) != 0) {
            fprintf(stderr, "error: out of memory\n"); rc = 2; break;
        }
        char *text = format_conversation(fmt, &cv, eos, &len);
        if (!text) { fprintf(stderr, "error: out of memory\n"); rc = 2; break; }
        if (len < prev_len || (prev_len > 0 && memcmp(text, prev, prev_len) != 0)) {
            /* cannot happen with chat.c's formats (tests/test_chat.py checks it) */
            fprintf(stderr, "error: internal error: the %s chat format is not prefix-stable\n", chat_format_name(fmt));
            free(text);
            rc = 2;
            break;
        }
        int32_t *ids;
        int n = encode(s->tok, text + prev_len, len - prev_len, prev_len == 0, 1, &ids);
        if (n < 0) { free(text); rc = 2; break; }
        replying = 1;                         /* until the reply (with its shifts) is over */
        int n_reply = 0, t = session_turn_n(s, ids, n, o->n_predict, 0);
        free(ids);
        int32_t last;
        if (t == TURN_NO_ROOM) {
            free(text);                       /* the shift formats the kept conversation itself */
            int r = chat_shift(s, fmt, eos, &past, NULL, 0, &cv, &prev, &prev_len, &last);
            if (r < 0) { rc = 2; break; }
            if (r > 0) {
                /* this message alone does not fit: one line, forget it, go on */
                fprintf(stderr, "this message is too long for the context of %d tokens (raise --ctx, max %d): not sent\n",
                        s->n_ctx, BN_N_CTX_MAX);
                free(past.owned[--past.n]);
                free(cv.owned[--cv.n]);
                continue;
            }
            t = session_turn_n(s, &last, 1, o->n_predict, 0);
        } else {
            free(prev);
            prev = text;
            prev_len = len;
        }
        if (t == TURN_ERROR) { rc = 2; break; }
        /* a reply that reached the end of the context goes on after a shift; when the kept
         * turns are only this one, the older half of the reply so far goes too */
        int reply_from = 0;
        for (;;) {
            int keep = s->n_gen - (s->stopped_at_eog ? 1 : 0);
            if (keep > 0) memcpy(reply + n_reply, s->out, (size_t)keep * sizeof *reply);
            n_reply += keep;
            if (!s->cut || n_reply >= o->n_predict) break;
            int r = 1;
            while (r > 0 && reply_from < n_reply) {
                long plen = bn_detokenize(reply + reply_from, n_reply - reply_from, 0, NULL, 0);
                char *partial = plen >= 0 ? malloc((size_t)plen + 1) : NULL;
                if (!partial) { r = -1; break; }
                bn_detokenize(reply + reply_from, n_reply - reply_from, 0, partial, (size_t)plen + 1);
                r = chat_shift(s, fmt, eos, &past, partial, (size_t)plen, &cv, &prev, &prev_len, &last);
                free(partial);
                if (r > 0) reply_from += (n_reply - reply_from + 1) / 2;
            }
            if (r < 0) { rc = 2; break; }
            if (r > 0) { fprintf(stderr, "(the message alone fills the context of %d tokens: reply cut here)\n", s->n_ctx); break; }
            t = session_turn_n(s, &last, 1, o->n_predict - n_reply, 0);
            if (t != TURN_OK) { rc = 2; break; }
        }
        replying = 0;
        interrupted = 0;
        if (rc) break;
        printf("\n");
        fflush(stdout);
        if (o->print_ids) print_ids("reply", reply, n_reply);
        /* the reply's tokens are in the cache; the message text after it is the format's own */
        long rlen = bn_detokenize(reply, n_reply, 0, NULL, 0);
        char *rtext = rlen >= 0 ? malloc((size_t)rlen + 1) : NULL;
        if (rtext) bn_detokenize(reply, n_reply, 0, rtext, (size_t)rlen + 1);
        if (!rtext || conv_add(&cv, "assistant", "", 0) != 0 || conv_add(&past, "assistant", rtext, (size_t)rlen) != 0) {
            free(rtext);
            fprintf(stderr, "error: out of memory\n"); rc = 2; break;
        }
        free(rtext);
    }
    free(prev);
    free(lr.buf);
    free(eos);
    free(reply);
    conv_free(&cv);
    conv_free(&past);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Interactive continuation: plain text, no template                                    */
/* ------------------------------------------------------------------------------------ */

/* Context shift for -i: keep the first n_keep ids and the newer half of the rest (with the
 * pending id); the cache holds all of them but the last, returned in *last. */
static int plain_shift(session *s, int32_t *last) {
    if (s->pending >= 0 && s->n_hist < s->n_ctx) s->hist[s->n_hist++] = s->pending;
    s->pending = -1;
    int keep = s->n_keep < s->n_hist ? s->n_keep : 0;
    int rest = s->n_hist - keep, tail = rest / 2;
    if (tail + keep > s->n_ctx / 2) tail = s->n_ctx / 2 - keep > 0 ? s->n_ctx / 2 - keep : 0;
    memmove(s->hist + keep, s->hist + s->n_hist - tail, (size_t)tail * sizeof *s->hist);
    int n = keep + tail;
    if (n == 0) { bn_reset(s->c); s->n_hist = 0; return 1; }
    *last = s->hist[n - 1];
    if (s->o->print_ids) fprintf(stderr, "context shift: kept %d of %d tokens\n", n, s->n_hist);
    return session_refill(s, s->hist, n - 1) < 0 ? -1 : 0;
}

/* One -i turn with context shifts. */
static int plain_turn_shifting(session *s, const int32_t *ids, int n);

static int plain_turn(session *s, const int32_t *ids, int n) {
    replying = 1;
    int t = plain_turn_shifting(s, ids, n);
    replying = 0;
    interrupted = 0;
    printf("\n");
    fflush(stdout);
    return t;
}

static int plain_turn_shifting(session *s, const int32_t *ids, int n) {
    int t = session_turn_n(s, ids, n, s->o->n_predict, 0);
    if (t == TURN_NO_ROOM) {
        int32_t last;
        int r = plain_shift(s, &last);
        if (r < 0) return TURN_ERROR;
        if (r == 0) {
            s->pending = last;               /* fed in front of this turn's ids */
            s->hist[s->n_hist] = last;
        }
        t = session_turn_n(s, ids, n, s->o->n_predict, 0);
        if (t == TURN_NO_ROOM) {
            fprintf(stderr, "this text is too long for the context (%d tokens; raise --ctx, max %d): skipped\n",
                    s->n_ctx, BN_N_CTX_MAX);
            return TURN_OK;
        }
    }
    int done = s->n_gen;
    while (t == TURN_OK && s->cut && done < s->o->n_predict) {
        int32_t last;
        int r = plain_shift(s, &last);
        if (r != 0) return r < 0 ? TURN_ERROR : TURN_OK;
        t = session_turn_n(s, &last, 1, s->o->n_predict - done, 0);
        done += s->n_gen;
    }
    return t;
}

static int run_interactive(session *s) {
    const options *o = s->o;
    line_reader lr = {0};
    int first = 1, rc = 0;
    if (o->prompt) {
        int32_t *ids;
        int n = encode(s->tok, o->prompt, strlen(o->prompt), 1, o->parse_special, &ids);
        if (n < 0) return 2;
        /* echo the prompt like one-shot generation does, the continuation follows it */
        text_stream echo;
        memset(&echo, 0, sizeof echo);
        for (int i = 0; i < n; i++) text_stream_put(&echo, ids[i], stdout);
        text_stream_flush(&echo, stdout);
        first = 0;
        s->n_keep = n < s->n_ctx / 2 ? n : s->n_ctx / 2;
        int t = plain_turn(s, ids, n);
        free(ids);
        if (t != TURN_OK) return 2;
    }
    if (s->tty) fprintf(stderr, "type text to continue and press Enter (an empty line continues); Ctrl-C stops a reply; end with Ctrl-D\n");
    for (;;) {
        show_prompt(s);
        int got = read_line(stdin, &lr);
        if (got < 0) { rc = 2; break; }
        if (got == 0) { if (s->tty) fputc('\n', stderr); break; }
        int32_t *ids = NULL;
        int n = 0;
        if (lr.len > 0 || first) {
            /* BOS only at the very start; the text as it is, no newline added */
            n = encode(s->tok, lr.buf, lr.len, first, o->parse_special, &ids);
            if (n < 0) { rc = 2; break; }
        }
        if (first) s->n_keep = n < s->n_ctx / 2 ? n : s->n_ctx / 2;
        first = 0;
        int t = plain_turn(s, ids, n);
        free(ids);
        if (t == TURN_ERROR) { rc = 2; break; }
    }
    free(lr.buf);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Entry                                                                                */
/* ------------------------------------------------------------------------------------ */

int chat_run(const options *o) {
    const char *mode = o->chat ? "--chat" : "-i";
    if (o->ids || o->prompt_file) {
        fprintf(stderr, "error: %s reads its input from stdin; --ids and -f are for one-shot generation\n", mode);
        return 2;
    }
    if (o->chat && o->prompt) {
        fprintf(stderr, "error: --chat reads the user's messages from stdin; give a system message with --system\n");
        return 2;
    }
    if (!o->chat && o->system) {
        fprintf(stderr, "error: --system is for --chat (with -i the text has no template)\n");
        return 2;
    }
    const Tokenizer *tok = text_tokenizer();
    if (!tok) {
        fprintf(stderr, "error: this model was built without a tokenizer, which %s needs\n", mode);
        return 2;
    }

    session s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.tok = tok;
    s.pending = -1;
    s.tty = isatty(fileno(stdin));
    s.n_ctx = o->n_ctx ? o->n_ctx : options_default_ctx();
    s.out = malloc(((size_t)o->n_predict + 1) * sizeof *s.out);
    s.hist = malloc(((size_t)s.n_ctx + 1) * sizeof *s.hist);
    if (!s.out || !s.hist) { fprintf(stderr, "error: out of memory\n"); free(s.out); free(s.hist); return 2; }
    s.c = bn_create(s.n_ctx, o->n_threads);
    if (!s.c) { fprintf(stderr, "error: %s\n", bn_last_error()); free(s.out); free(s.hist); return 2; }

    install_sigint();
    int rc = o->chat ? run_chat(&s) : run_interactive(&s);
    session_timings(&s);
    bn_free(s.c);
    free(s.out);
    free(s.hist);
    return rc;
}
