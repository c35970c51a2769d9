/* options.c: the command line of a compiled model, shared by plain generation (main.c),
 * chat mode (chat_cli.c) and the server (server.c). */
#include "options.h"
#include "model_internal.h"
#include "platform.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Options                                                                              */
/* ------------------------------------------------------------------------------------ */


void usage(FILE *f, const char *argv0) {
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
        "      --chat, -cnv         chat with the model's template (stdin; works with pipes)\n"
        "      --system TEXT        system message for --chat\n"
        "      --chat-format NAME   bitnet, llama3 or falcon3 (default: from the model's template)\n"
        "  -i, --interactive        interactive continuation: each stdin line is added and continued\n"
        "      --info               print the model, kernel, target and build provenance\n"
        "      --verify             check the embedded weights against their recorded SHA-256\n"
        "  -h, --help               this help\n"
        "\n"
        "server: %s serve [--host 127.0.0.1] [--port 8000] [--parallel N] [--queue N] [--max-body BYTES]\n"
        "                 [--timeout SECONDS] [--api-key KEY] [generation options as defaults]\n",
        argv0, argv0);
}

void die(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "error: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    exit(2);
}

long parse_int(const char *flag, const char *v, long lo, long hi) {
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

float parse_float(const char *flag, const char *v, double lo, double hi) {
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

/* Default context: the model's, capped at 4096 tokens. */
int options_default_ctx(void) {
    return BN_N_CTX_TRAIN < 4096 ? BN_N_CTX_TRAIN : 4096;
}

void parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->host = "127.0.0.1";
    o->port = 8000;
    o->parallel = 1;
    o->queue = 16;
    o->max_body = 1 << 20;
    o->timeout = 30;
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "serve") == 0) { o->serve = 1; first = 2; }
    o->n_threads = platform_cpu_count();
    o->show_timings = 1;
    o->s = bn_sampling_default();
    for (int i = first; i < argc; i++) {
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
        else if (FLAG("-cnv", "--chat")) o->chat = 1;
        else if (FLAG("-i", "--interactive")) o->interactive = 1;
        else if (FLAG("", "--system")) { NEED_VALUE(); o->system = v; }
        else if (FLAG("", "--chat-format")) { NEED_VALUE(); o->chat_format = v; }
        else if (FLAG("", "--host")) { NEED_VALUE(); o->host = v; }
        else if (FLAG("", "--port")) { NEED_VALUE(); o->port = (int)parse_int(a, v, 1, 65535); }
        else if (FLAG("", "--parallel")) { NEED_VALUE(); o->parallel = (int)parse_int(a, v, 1, 64); }
        else if (FLAG("", "--queue")) { NEED_VALUE(); o->queue = (int)parse_int(a, v, 0, 4096); }
        else if (FLAG("", "--max-body")) { NEED_VALUE(); o->max_body = parse_int(a, v, 1024, 1L << 30); }
        else if (FLAG("", "--timeout")) { NEED_VALUE(); o->timeout = (int)parse_int(a, v, 1, 3600); }
        else if (FLAG("", "--api-key")) { NEED_VALUE(); o->api_key = v; }
        else die("unknown option '%s'; run with --help to see the options%s", a, "");
#undef FLAG
#undef NEED_VALUE
    }
    if (!!o->prompt + !!o->prompt_file + !!o->ids > 1) die("give only one of -p, -f and --ids%s%s", "", "");
}

