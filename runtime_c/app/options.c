/* options.c: the command line of a compiled model, shared by plain generation (main.c),
 * chat mode (chat_cli.c) and the server (server.c). */
#include "options.h"
#include "core/model_internal.h"
#include "core/platform.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------------------ */
/* Options                                                                              */
/* ------------------------------------------------------------------------------------ */


void usage(FILE *f, const char *argv0) {
    fprintf(f,
        "usage: %s [options]\n"
        "  -p, --prompt TEXT        prompt text\n"
        "  -f, --file FILE          read the prompt from FILE (- for stdin)\n"
        "      --ids LIST           prompt as token ids, comma or space separated\n"
        "  -n, --n-predict N        tokens to generate (default 128; -1 = until end of text or context)\n"
        "  -t, --threads N          threads (default: online cores, at most one per 32 MiB of weights)\n"
        "  -c, --ctx N              context size in tokens (default: the model's trained context; the\n"
        "                           KV cache grows with use, not with N; 0 = all of the trained context)\n"
        "      --temp X             temperature; 0 = greedy (default 0.8)\n"
        "      --top-k N            top-k sampling, 0 = off (default 40)\n"
        "      --top-p X            top-p sampling, 1 = off (default 0.95)\n"
        "      --min-p X            min-p sampling, 0 = off (default 0.05)\n"
        "      --repeat-penalty X   repetition penalty, 1 = off (default 1.0)\n"
        "      --repeat-last-n N    tokens the penalty looks back (default 64)\n"
        "  -s, --seed N             random seed (default -1: a random one, printed in the timings line)\n"
        "      --ignore-eos         keep generating past end-of-text tokens\n"
        "      --special            match special tokens like <|eot_id|> in the prompt\n"
        "      --print-ids          print token ids instead of text\n"
        "      --no-timings         do not print the timing line on stderr\n"
        "      --weights FILE       weights file (builds made with --weights external)\n"
        "      --chat, -cnv         chat with the model's template (stdin; works with pipes)\n"
        "      --system TEXT        system message for --chat\n"
        "      --chat-format NAME   bitnet, llama3, falcon3 or chatml (default: from the model's template)\n"
        "  -i, --interactive        interactive continuation: each stdin line is added and continued\n"
        "      --info               print the model, kernel, target and build provenance\n"
        "      --verify             check the embedded weights against their recorded SHA-256\n"
        "  -h, --help               this help\n"
        "long options also take --flag=value\n"
        "\n"
        "server: %s serve [--host 127.0.0.1] [--port 8000] [--parallel N] [--queue N] [--max-body BYTES]\n"
        "                 [--timeout SECONDS] [--api-key KEY] [--cors ORIGIN] [--log-prompts]\n"
        "                 [generation options as defaults]\n",
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

/* A seed for runs that ask for none (or --seed -1): from the OS's random source where
 * there is one, else from the clock. Kept below 2^31 so it can be passed back to --seed on
 * every target (long is 32 bits on Windows and 32-bit ABIs). */
uint64_t options_random_seed(void) {
    uint64_t x = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&x, sizeof x, 1, f) != 1) x = 0;
        fclose(f);
    }
    if (x == 0) {
        static uint64_t calls;
        struct timespec ts = {0, 0};
        timespec_get(&ts, TIME_UTC);       /* C11: nanoseconds on every target, WASI and Windows too */
        x = (uint64_t)ts.tv_sec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)&x
            ^ ++calls * 0xBF58476D1CE4E5B9ULL;
        x ^= x >> 31;
        x *= 0x94D049BB133111EBULL;
        x ^= x >> 29;
    }
    return x & 0x7fffffffULL;
}

/* Default context: the model's trained one (the KV cache is reserved, not touched, until
 * the conversation fills it), halved while its cache would need over half of the memory. */
int options_default_ctx(void) {
    int n = BN_N_CTX_TRAIN;
    double phys = (double)platform_physical_memory();   /* 0: unknown */
    while (phys > 0 && n > 256 && bn_kv_cache_bytes(n) > 0.5 * phys) n /= 2;
    return n;
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
    o->n_threads = bn_default_threads();
    o->show_timings = 1;
    o->s = bn_sampling_default();
    long seed = -1;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        /* --flag=value, as llama.cpp and getopt accept it */
        char name[40];
        const char *inline_v = NULL;
        const char *eq = a[0] == '-' && a[1] == '-' ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            inline_v = eq + 1;
            a = name;
        }
        int has_value = inline_v || i + 1 < argc;
        const char *v = inline_v ? inline_v : has_value ? argv[i + 1] : NULL;
#define FLAG(short_, long_) (strcmp(a, long_) == 0 || (short_[0] && strcmp(a, short_) == 0))
#define NEED_VALUE() do { if (!has_value) die("%s needs a value%s", a, ""); if (!inline_v) i++; } while (0)
#define NO_VALUE() do { if (inline_v) die("%s takes no value, got '%s'", a, inline_v); } while (0)
        if (FLAG("-h", "--help")) { NO_VALUE(); usage(stdout, argv[0]); exit(0); }
        else if (FLAG("-p", "--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (FLAG("-f", "--file")) { NEED_VALUE(); o->prompt_file = v; }
        else if (FLAG("", "--ids")) { NEED_VALUE(); o->ids = v; }
        else if (FLAG("", "--weights")) { NEED_VALUE(); o->weights = v; }
        else if (FLAG("-n", "--n-predict")) { NEED_VALUE(); o->n_predict = (int)parse_int(a, v, -1, 1 << 24); }
        else if (FLAG("-t", "--threads")) { NEED_VALUE(); o->n_threads = (int)parse_int(a, v, 1, 256); }
        else if (FLAG("-c", "--ctx")) { NEED_VALUE(); o->n_ctx = (int)parse_int(a, v, 0, BN_N_CTX_MAX);
                                           if (o->n_ctx == 0) o->n_ctx = BN_N_CTX_MAX; }
        else if (FLAG("", "--temp")) { NEED_VALUE(); o->s.temperature = parse_float(a, v, 0.0, 100.0); }
        else if (FLAG("", "--top-k")) { NEED_VALUE(); o->s.top_k = (int)parse_int(a, v, 0, BN_N_VOCAB); }
        else if (FLAG("", "--top-p")) { NEED_VALUE(); o->s.top_p = parse_float(a, v, 0.0, 1.0); }
        else if (FLAG("", "--min-p")) { NEED_VALUE(); o->s.min_p = parse_float(a, v, 0.0, 1.0); }
        else if (FLAG("", "--repeat-penalty")) { NEED_VALUE(); o->s.repeat_penalty = parse_float(a, v, 0.01, 100.0); }
        else if (FLAG("", "--repeat-last-n")) { NEED_VALUE(); o->s.repeat_last_n = (int)parse_int(a, v, 0, 1 << 20); }
        else if (FLAG("-s", "--seed")) { NEED_VALUE(); seed = parse_int(a, v, -1, LONG_MAX); }
        else if (FLAG("", "--ignore-eos")) { NO_VALUE(); o->ignore_eos = 1; }
        else if (FLAG("", "--special")) { NO_VALUE(); o->parse_special = 1; }
        else if (FLAG("", "--print-ids")) { NO_VALUE(); o->print_ids = 1; }
        else if (FLAG("", "--no-timings")) { NO_VALUE(); o->show_timings = 0; }
        else if (FLAG("-cnv", "--chat")) { NO_VALUE(); o->chat = 1; }
        else if (FLAG("-i", "--interactive")) { NO_VALUE(); o->interactive = 1; }
        else if (FLAG("", "--system")) { NEED_VALUE(); o->system = v; }
        else if (FLAG("", "--chat-format")) { NEED_VALUE(); o->chat_format = v; }
        else if (FLAG("", "--host")) { NEED_VALUE(); o->host = v; }
        else if (FLAG("", "--port")) { NEED_VALUE(); o->port = (int)parse_int(a, v, 1, 65535); }
        else if (FLAG("", "--parallel")) { NEED_VALUE(); o->parallel = (int)parse_int(a, v, 1, 64); }
        else if (FLAG("", "--queue")) { NEED_VALUE(); o->queue = (int)parse_int(a, v, 0, 4096); }
        else if (FLAG("", "--max-body")) { NEED_VALUE(); o->max_body = parse_int(a, v, 1024, 1L << 30); }
        else if (FLAG("", "--timeout")) { NEED_VALUE(); o->timeout = (int)parse_int(a, v, 1, 3600); }
        else if (FLAG("", "--api-key")) { NEED_VALUE(); o->api_key = v; }
        else if (FLAG("", "--cors")) { NEED_VALUE(); o->cors = v; }
        else if (FLAG("", "--log-prompts")) o->log_prompts = 1;
        else die("unknown option '%s'; run with --help to see the options%s", a, "");
#undef FLAG
#undef NEED_VALUE
#undef NO_VALUE
    }
    o->seed_random = seed < 0;
    o->s.seed = seed < 0 ? options_random_seed() : (uint64_t)seed;
    if (o->n_predict < 0) {                  /* -n -1: until end of text or the context is full */
        o->n_predict_unlimited = 1;
        o->n_predict = o->n_ctx ? o->n_ctx : options_default_ctx();
    }
    if (!!o->prompt + !!o->prompt_file + !!o->ids > 1) die("give only one of -p, -f and --ids%s%s", "", "");
}

