/* main.c: the command line of a compiled model.
 *
 *   ./model -p "Once upon a time" -n 64        generate a continuation
 *   ./model --info | --verify | --help
 *
 * Sections: options, text in and out, generation, main.
 * Every bad flag or input ends with one line on stderr and exit code 2.
 */
#include "bitnet.h"
#include "core/model_internal.h"
#include "text/text.h"
#include "options.h"
#include "modes.h"
#include "core/platform.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* Text in and out                                                                      */
/* ------------------------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) die("cannot open prompt file '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) die("out of memory reading '%s'%s", path, "");
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
        if (n == cap) { cap *= 2; buf = realloc(buf, cap + 1); }
    }
    if (f != stdin) fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* "1, 2 3" -> ids */
static int parse_ids(const char *s, int32_t **out) {
    size_t cap = 16;
    int n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    const char *p = s;
    while (ids && *p) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= BN_N_VOCAB) {
            fprintf(stderr, "error: --ids: '%.20s' is not a token id in 0..%d\n", p, BN_N_VOCAB - 1);
            exit(2);
        }
        if ((size_t)n == cap) { cap *= 2; ids = realloc(ids, cap * sizeof *ids); if (!ids) break; }
        ids[n++] = (int32_t)v;
        p = end;
    }
    if (!ids) die("out of memory%s%s", "", "");
    *out = ids;
    return n;
}

/* Offset of the first byte that is not part of well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF), or -1 when all of it is. */
static long utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;       /* the allowed range of the second byte */
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return (long)i;
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return (long)i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return (long)i;
        i += len;
    }
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* Generation                                                                           */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    int print_ids;
    int first;
    text_stream stream;       /* buffers partial UTF-8 between tokens */
} print_state;

static int print_token(void *user, int32_t id) {
    print_state *ps = user;
    if (ps->print_ids) {
        printf(ps->first ? "%d" : " %d", (int)id);
    } else {
        text_stream_put(&ps->stream, id, stdout);
    }
    ps->first = 0;
    fflush(stdout);
    return 0;
}

static void print_info(void) {
    char hex[65];
    (void)hex;
    printf("%s\n", bn_info_json());
    printf("kernel: %s\n", kernel_pick(BN_KERNEL_LAYOUT)->name);
    if (BN_GROUPED) printf("block-scaled kernel: %s\n", grouped_kernel_pick()->name);
}

int main(int argc, char **argv) {
    platform_init();            /* `| head` ends the program quietly; UTF-8 console on Windows */
    options o;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--info") == 0) {
            if (bn_init(NULL) != 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return 2; }
            print_info();
            return 0;
        }
        if (strcmp(argv[i], "--verify") == 0) {
            char hex[65];
            int ok = bn_verify(hex);
            if (!ok && hex[0] == 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return 2; }
            if (ok) { printf("weights OK: sha256 %s\n", hex); return 0; }
            fprintf(stderr, "error: weights are corrupt: sha256 %s, expected %s; rebuild or re-copy the binary\n",
                    hex, BN_WEIGHTS_SHA256);
            return 1;
        }
    }
    parse_args(argc, argv, &o);
    if (bn_init(o.weights) != 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return 2; }
    if (o.serve) return server_run(&o);
    if (o.chat || o.interactive) return chat_run(&o);

    /* the prompt, as ids */
    int32_t *prompt = NULL;
    int n_prompt = 0;
    long bad_utf8 = -1;         /* offset of the first byte of the prompt text that is not UTF-8 */
    unsigned bad_byte = 0;
    if (o.ids) {
        n_prompt = parse_ids(o.ids, &prompt);
        if (n_prompt == 0 && BN_BOS_ID >= 0) prompt[n_prompt++] = BN_BOS_ID;   /* like -p "": from BOS */
    } else {
        size_t len = 0;
        char *text;
        if (o.prompt_file) text = read_file(o.prompt_file, &len);
        else if (o.prompt) { text = strdup(o.prompt); len = strlen(o.prompt); }
        else { text = strdup(""); len = 0; }
        if (!text_available()) {
            fprintf(stderr, "error: this model was built without a tokenizer; pass the prompt as token ids with --ids\n");
            return 2;
        }
        bad_utf8 = utf8_invalid_at((const unsigned char *)text, len);
        if (bad_utf8 >= 0) bad_byte = (unsigned char)text[bad_utf8];
        n_prompt = text_encode(text, len, 1, o.parse_special, &prompt);
        free(text);
        if (n_prompt < 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return 2; }
    }
    if (n_prompt == 0) die("the prompt is empty; give one with -p, -f or --ids%s%s", "", "");

    int n_ctx = o.n_ctx ? o.n_ctx : options_default_ctx();
    if (!o.n_ctx && n_ctx < BN_N_CTX_TRAIN)
        fprintf(stderr, "note: using a %d-token context (the model was trained for %d); raise it with --ctx (-c 0: all of it)\n",
                n_ctx, BN_N_CTX_TRAIN);
    if (n_prompt >= n_ctx) {
        fprintf(stderr, "error: the prompt has %d tokens but the context holds %d; shorten it or raise --ctx (max %d)\n",
                n_prompt, n_ctx, BN_N_CTX_MAX);
        return 2;
    }
    if (bad_utf8 >= 0)          /* (after the errors: a refused prompt gets one line) */
        fprintf(stderr, "warning: the prompt is not valid UTF-8 (byte 0x%02x at offset %ld); "
                "invalid bytes are read as U+FFFD\n", bad_byte, bad_utf8);
    int n_predict = o.n_predict;
    if (n_prompt + n_predict > n_ctx) n_predict = n_ctx - n_prompt;

    bn_context *c = bn_create(n_ctx, o.n_threads);
    if (!c) { fprintf(stderr, "error: %s\n", bn_last_error()); return 2; }

    print_state ps;
    memset(&ps, 0, sizeof ps);
    ps.print_ids = o.print_ids;
    ps.first = 1;
    if (!o.print_ids) {
        /* echo the prompt like llama.cpp does */
        for (int i = 0; i < n_prompt; i++) text_stream_put(&ps.stream, prompt[i], stdout);
    }
    int32_t *out = malloc(((size_t)n_predict + 1) * sizeof(int32_t));
    if (!out) die("out of memory%s%s", "", "");
    int n = bn_generate(c, prompt, n_prompt, n_predict, &o.s, o.ignore_eos, out, print_token, &ps);
    if (!o.print_ids) text_stream_flush(&ps.stream, stdout);
    printf("\n");
    fflush(stdout);
    if (n < 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return 2; }
    /* why generation ended: an end-of-generation token ("stop"), -n reached ("length"), or
     * the context filled up first (also "length", announced: the output is shorter than asked) */
    int eog = n > 0 && !o.ignore_eos && bn_is_eog(out[n - 1]);
    int context_full = !eog && n == n_predict && n_predict < o.n_predict;
    if (context_full && o.n_predict_unlimited)
        fprintf(stderr, "note: the context is full (%d tokens) after %d generated tokens; raise --ctx (max %d) for more\n",
                n_ctx, n, BN_N_CTX_MAX);
    else if (context_full)
        fprintf(stderr, "warning: the context is full (%d tokens): stopped after %d of the %d tokens asked for; "
                "raise --ctx (max %d) or shorten the prompt\n", n_ctx, n, o.n_predict, BN_N_CTX_MAX);
    if (o.show_timings) {
        int np, ng;
        double tp, tg;
        bn_last_timings(c, &np, &tp, &ng, &tg);
        fprintf(stderr, "timings: prompt %d tokens in %.3f s (%.2f tok/s), generation %d tokens in %.3f s (%.2f tok/s), %d threads, kernel %s%s%s, seed %llu, finish %s\n",
                np, tp, tp > 0 ? np / tp : 0.0, ng, tg, tg > 0 ? (ng > 1 ? (ng - 1) / tg : ng / tg) : 0.0,
                o.n_threads, kernel_pick(BN_KERNEL_LAYOUT)->name, BN_GROUPED ? " + " : "",
                BN_GROUPED ? grouped_kernel_pick()->name : "", (unsigned long long)o.s.seed,
                eog ? "stop" : context_full ? "length (context full)" : "length");
    }
    free(out);
    free(prompt);
    bn_free(c);
    return 0;
}
