/* main.c: the command line of a compiled model.
 *
 *   ./model -p "Once upon a time" -n 64        generate a continuation
 *   ./model --info | --verify | --help
 *
 * Sections: options, text in and out, generation, main.
 * Every bad flag or input ends with one line on stderr and exit code 2.
 */
#include "bitnet.h"
#include "model_internal.h"
#include "text.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* Options                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    const char *prompt;        /* -p */
    const char *prompt_file;   /* -f */
    const char *ids;           /* --ids "1,2,3": token ids instead of text */
    const char *weights;       /* --weights FILE (external-weights builds) */
    int n_predict;             /* -n */
    int n_threads;             /* -t */
    int n_ctx;                 /* --ctx (0: default) */
    int print_ids;             /* --print-ids */
    int ignore_eos;            /* --ignore-eos */
    int parse_special;         /* --special */
    int show_timings;          /* off with --no-timings */
    bn_sampling s;
} options;

static void usage(FILE *f, const char *argv0) {
    fprintf(f,
        "usage: %s [options]\n"
        "  -p, --prompt TEXT        prompt text\n"
        "  -f, --file FILE          read the prompt from FILE (- for stdin)\n"
        "      --ids LIST           prompt as token ids, comma or space separated\n"
        "  -n, --n-predict N        tokens to generate (default 128)\n"
        "  -t, --threads N          threads (default: online cores)\n"
        "  -c, --ctx N              context size in tokens (default: the model's, capped at 4096)\n"
        "      --temp X             temperature; 0 = greedy (default 0.8)\n"
        "      --top-k N            top-k sampling, 0 = off (default 40)\n"
        "      --top-p X            top-p sampling, 1 = off (default 0.95)\n"
        "      --min-p X            min-p sampling, 0 = off (default 0.05)\n"
        "      --repeat-penalty X   repetition penalty, 1 = off (default 1.0)\n"
        "      --repeat-last-n N    tokens the penalty looks back (default 64)\n"
        "  -s, --seed N             random seed (default 42)\n"
        "      --ignore-eos         keep generating past end-of-text tokens\n"
        "      --special            match special tokens like <|eot_id|> in the prompt\n"
        "      --print-ids          print token ids instead of text\n"
        "      --no-timings         do not print the timing line on stderr\n"
        "      --weights FILE       weights file (builds made with --weights external)\n"
        "      --info               print the model, kernel, target and build provenance\n"
        "      --verify             check the embedded weights against their recorded SHA-256\n"
        "  -h, --help               this help\n",
        argv0);
}

static void die(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "error: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    exit(2);
}

static long parse_int(const char *flag, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end) die("%s expects an integer, got '%s'", flag, v);
    if (x < lo || x > hi) {
        fprintf(stderr, "error: %s must be between %ld and %ld, got %ld\n", flag, lo, hi, x);
        exit(2);
    }
    return x;
}

static float parse_float(const char *flag, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || x != x) die("%s expects a number, got '%s'", flag, v);
    if (x < lo || x > hi) {
        fprintf(stderr, "error: %s must be between %g and %g, got %g\n", flag, lo, hi, x);
        exit(2);
    }
    return (float)x;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 64 ? 64 : (int)n);
}

/* Default context: the model's, capped at 4096 tokens. */
static int default_ctx(void) {
    return BN_N_CTX_TRAIN < 4096 ? BN_N_CTX_TRAIN : 4096;
}

static void parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->n_threads = default_threads();
    o->show_timings = 1;
    o->s = bn_sampling_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        const char *v = has_value ? argv[i + 1] : NULL;
#define FLAG(short_, long_) (strcmp(a, long_) == 0 || (short_[0] && strcmp(a, short_) == 0))
#define NEED_VALUE() do { if (!has_value) die("%s needs a value%s", a, ""); i++; } while (0)
        if (FLAG("-h", "--help")) { usage(stdout, argv[0]); exit(0); }
        else if (FLAG("-p", "--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (FLAG("-f", "--file")) { NEED_VALUE(); o->prompt_file = v; }
        else if (FLAG("", "--ids")) { NEED_VALUE(); o->ids = v; }
        else if (FLAG("", "--weights")) { NEED_VALUE(); o->weights = v; }
        else if (FLAG("-n", "--n-predict")) { NEED_VALUE(); o->n_predict = (int)parse_int(a, v, 0, 1 << 24); }
        else if (FLAG("-t", "--threads")) { NEED_VALUE(); o->n_threads = (int)parse_int(a, v, 1, 256); }
        else if (FLAG("-c", "--ctx")) { NEED_VALUE(); o->n_ctx = (int)parse_int(a, v, 1, BN_N_CTX_MAX); }
        else if (FLAG("", "--temp")) { NEED_VALUE(); o->s.temperature = parse_float(a, v, 0.0, 100.0); }
        else if (FLAG("", "--top-k")) { NEED_VALUE(); o->s.top_k = (int)parse_int(a, v, 0, BN_N_VOCAB); }
        else if (FLAG("", "--top-p")) { NEED_VALUE(); o->s.top_p = parse_float(a, v, 0.0, 1.0); }
        else if (FLAG("", "--min-p")) { NEED_VALUE(); o->s.min_p = parse_float(a, v, 0.0, 1.0); }
        else if (FLAG("", "--repeat-penalty")) { NEED_VALUE(); o->s.repeat_penalty = parse_float(a, v, 0.01, 100.0); }
        else if (FLAG("", "--repeat-last-n")) { NEED_VALUE(); o->s.repeat_last_n = (int)parse_int(a, v, 0, 1 << 20); }
        else if (FLAG("-s", "--seed")) { NEED_VALUE(); o->s.seed = (uint64_t)parse_int(a, v, 0, LONG_MAX); }
        else if (FLAG("", "--ignore-eos")) o->ignore_eos = 1;
        else if (FLAG("", "--special")) o->parse_special = 1;
        else if (FLAG("", "--print-ids")) o->print_ids = 1;
        else if (FLAG("", "--no-timings")) o->show_timings = 0;
        else die("unknown option '%s'; run with --help to see the options%s", a, "");
#undef FLAG
#undef NEED_VALUE
    }
    if (!!o->prompt + !!o->prompt_file + !!o->ids > 1) die("give only one of -p, -f and --ids%s%s", "", "");
}

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
    printf("kernel: %s\n", bn_kernel_active()->name);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_DFL);   /* `| head` ends the program quietly */
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

    /* the prompt, as ids */
    int32_t *prompt = NULL;
    int n_prompt = 0;
    if (o.ids) {
        n_prompt = parse_ids(o.ids, &prompt);
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
        n_prompt = text_encode(text, len, 1, o.parse_special, &prompt);
        free(text);
        if (n_prompt < 0) { fprintf(stderr, "error: %s\n", bn_last_error()); return 2; }
    }
    if (n_prompt == 0) die("the prompt is empty; give one with -p, -f or --ids%s%s", "", "");

    int n_ctx = o.n_ctx ? o.n_ctx : default_ctx();
    if (n_prompt >= n_ctx) {
        fprintf(stderr, "error: the prompt has %d tokens but the context holds %d; shorten it or raise --ctx (max %d)\n",
                n_prompt, n_ctx, BN_N_CTX_MAX);
        return 2;
    }
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
    if (o.show_timings) {
        int np, ng;
        double tp, tg;
        bn_last_timings(c, &np, &tp, &ng, &tg);
        fprintf(stderr, "timings: prompt %d tokens in %.3f s (%.2f tok/s), generation %d tokens in %.3f s (%.2f tok/s), %d threads, kernel %s\n",
                np, tp, tp > 0 ? np / tp : 0.0, ng, tg, tg > 0 ? (ng > 1 ? (ng - 1) / tg : ng / tg) : 0.0,
                o.n_threads, bn_kernel_active()->name);
    }
    free(out);
    free(prompt);
    bn_free(c);
    return 0;
}
