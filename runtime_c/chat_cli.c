/* chat_cli.c: talking to the model on stdin/stdout, one turn per input line.
 *
 *   ./model --chat [--system "..."] [--chat-format bitnet|llama3|falcon3]
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
 * --print-ids prints the ids each turn built from its text (not the carried-over reply
 * token) to stderr as "ids: 1 2 3", so tests can compare them with the Python side.
 *
 * Sections: reading lines, the session (context, one turn), chat, interactive, chat_run.
 */
#include "modes.h"

#include "bitnet.h"
#include "chat.h"
#include "model_internal.h"
#include "text.h"
#include "tokenizer.h"

#include <limits.h>
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
    /* the current reply */
    text_stream stream;
    int stopped_at_eog;
    /* totals for the timing line */
    int n_prompt_total, n_gen_total;
    double t_prompt_total, t_gen_total;
} session;

enum { TURN_OK = 0, TURN_CONTEXT_FULL = 1, TURN_ERROR = 2 };

static int on_token(void *user, int32_t id) {
    session *s = user;
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

static void say_context_full(const session *s) {
    fprintf(stderr, "the context is full (%d of %d tokens): ending the session; raise --ctx (max %d) for longer ones\n",
            bn_pos(s->c), s->n_ctx, BN_N_CTX_MAX);
}

/* Evaluates the carried-over token and ids[0..n), then streams the reply to stdout. */
static int session_turn(session *s, const int32_t *ids, int n) {
    if (s->o->print_ids) print_ids("ids", ids, n);
    int n_prompt = n + (s->pending >= 0);
    if (n_prompt == 0) return TURN_OK;        /* nothing to continue from */
    if (bn_pos(s->c) + n_prompt + 1 > s->n_ctx) {
        if (s->turns == 0) {
            fprintf(stderr, "error: the prompt has %d tokens but the context holds %d; shorten it or raise --ctx (max %d)\n",
                    n_prompt, s->n_ctx, BN_N_CTX_MAX);
            return TURN_ERROR;
        }
        say_context_full(s);
        return TURN_CONTEXT_FULL;
    }
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    if (!prompt) { fprintf(stderr, "error: out of memory\n"); return TURN_ERROR; }
    int k = 0;
    if (s->pending >= 0) prompt[k++] = s->pending;
    if (n > 0) memcpy(prompt + k, ids, (size_t)n * sizeof *ids);

    bn_sampling sp = s->o->s;
    sp.seed += (uint64_t)s->turns;            /* a different random stream for every turn */
    memset(&s->stream, 0, sizeof s->stream);
    s->stopped_at_eog = 0;
    int n_predict = s->o->n_predict;
    /* ignore_eos = 1: on_token decides where the reply ends (every end-of-generation token
     * of the vocabulary, not only EOS/EOT) */
    int n_gen = bn_generate(s->c, prompt, n_prompt, n_predict, &sp, 1, s->out, on_token, s);
    free(prompt);
    text_stream_flush(&s->stream, stdout);
    printf("\n");
    fflush(stdout);
    s->turns++;
    if (n_gen < 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return TURN_ERROR; }

    int np, ng;
    double tp, tg;
    bn_last_timings(s->c, &np, &tp, &ng, &tg);
    s->n_prompt_total += np; s->t_prompt_total += tp;
    s->n_gen_total += ng; s->t_gen_total += tg;

    s->pending = (n_gen > 0 && !s->stopped_at_eog) ? s->out[n_gen - 1] : -1;
    /* bn_generate stops early only at the end of the context (or at our eog stop) */
    if (!s->stopped_at_eog && n_gen < n_predict) { say_context_full(s); return TURN_CONTEXT_FULL; }
    return TURN_OK;
}

static void session_timings(const session *s) {
    if (!s->o->show_timings || s->turns == 0) return;
    double tp = s->t_prompt_total, tg = s->t_gen_total;
    fprintf(stderr, "timings: %d turns; prompt %d tokens in %.3f s (%.2f tok/s), generation %d tokens in %.3f s (%.2f tok/s), %d threads\n",
            s->turns, s->n_prompt_total, tp, tp > 0 ? s->n_prompt_total / tp : 0.0,
            s->n_gen_total, tg, tg > 0 ? s->n_gen_total / tg : 0.0, s->o->n_threads);
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
            fprintf(stderr, "error: --chat-format '%s' is not one of bitnet, llama3, falcon3\n", o->chat_format);
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
    fprintf(stderr, "error: %s; choose one with --chat-format bitnet|llama3|falcon3, or use -i for plain text\n",
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

    conversation cv = {0};
    line_reader lr = {0};
    char *prev = NULL;            /* the text formatted so far (its tokens are in the cache) */
    size_t prev_len = 0;
    int rc = 0;
    if (o->system && conv_add(&cv, "system", o->system, strlen(o->system)) != 0) {
        fprintf(stderr, "error: out of memory\n");
        rc = 2;
    }
    if (s->tty && rc == 0) fprintf(stderr, "type a message and press Enter; end with Ctrl-D\n");
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

        if (conv_add(&cv, "user", lr.buf, len) != 0) { fprintf(stderr, "error: out of memory\n"); rc = 2; break; }
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
        free(prev);
        prev = text;
        prev_len = len;
        if (n < 0) { rc = 2; break; }
        int t = session_turn(s, ids, n);
        free(ids);
        if (t == TURN_ERROR) rc = 2;
        if (t != TURN_OK) break;
        /* the reply's tokens are in the cache; the message text after it is the format's own */
        if (conv_add(&cv, "assistant", "", 0) != 0) { fprintf(stderr, "error: out of memory\n"); rc = 2; break; }
    }
    free(prev);
    free(lr.buf);
    free(eos);
    conv_free(&cv);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Interactive continuation: plain text, no template                                    */
/* ------------------------------------------------------------------------------------ */

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
        int t = session_turn(s, ids, n);
        free(ids);
        if (t != TURN_OK) return t == TURN_ERROR ? 2 : 0;
    }
    if (s->tty) fprintf(stderr, "type text to continue and press Enter (an empty line continues); end with Ctrl-D\n");
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
        first = 0;
        int t = session_turn(s, ids, n);
        free(ids);
        if (t == TURN_ERROR) rc = 2;
        if (t != TURN_OK) break;
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
    if (!s.out) { fprintf(stderr, "error: out of memory\n"); return 2; }
    s.c = bn_create(s.n_ctx, o->n_threads);
    if (!s.c) { fprintf(stderr, "error: %s\n", bn_last_error()); free(s.out); return 2; }

    int rc = o->chat ? run_chat(&s) : run_interactive(&s);
    session_timings(&s);
    bn_free(s.c);
    free(s.out);
    return rc;
}
