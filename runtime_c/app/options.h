/* options.h: the command line of a compiled model (options.c parses it). */
#ifndef BITNET_OPTIONS_H
#define BITNET_OPTIONS_H

#include <stdio.h>

#include "bitnet.h"

typedef struct {
    /* generation */
    const char *prompt;        /* -p */
    const char *prompt_file;   /* -f */
    const char *ids;           /* --ids "1,2,3": token ids instead of text */
    const char *weights;       /* --weights FILE (external-weights builds) */
    int n_predict;             /* -n (-1 on the command line becomes the context size) */
    int n_predict_unlimited;   /* -n -1: until end of text or the context is full */
    int n_threads;             /* -t */
    int n_ctx;                 /* --ctx (0: default; -c 0 on the command line becomes BN_N_CTX_MAX) */
    int print_ids;             /* --print-ids */
    int ignore_eos;            /* --ignore-eos */
    int parse_special;         /* --special */
    int show_timings;          /* off with --no-timings */
    bn_sampling s;             /* s.seed: --seed, or a random one (seed_random) */
    int seed_random;           /* no --seed, or --seed -1: s.seed was drawn by options_random_seed() */
    /* chat (chat_cli.c) */
    int chat;                  /* --chat / -cnv: conversation with the model's chat template */
    int interactive;           /* -i: plain-text interactive continuation, reads stdin */
    const char *system;        /* --system TEXT */
    const char *chat_format;   /* --chat-format bitnet|llama3|falcon3|chatml (default: from the template) */
    /* server (server.c), after the `serve` subcommand */
    int serve;                 /* argv[1] == "serve" */
    const char *host;          /* --host (default 127.0.0.1) */
    int port;                  /* --port (default 8000) */
    int parallel;              /* --parallel: decoding slots (default 1) */
    int queue;                 /* --queue: requests waiting for a slot before 503 (default 16) */
    long max_body;             /* --max-body bytes (default 1 MiB) */
    int timeout;               /* --timeout seconds for reads/writes (default 30) */
    const char *api_key;       /* --api-key (default: none) */
    const char *cors;          /* --cors ORIGIN: allow browser pages from ORIGIN ("*": any) */
    int log_prompts;           /* --log-prompts: the request log shows request bodies */
} options;

void usage(FILE *f, const char *argv0);
void parse_args(int argc, char **argv, options *o);
int options_default_ctx(void);
uint64_t options_random_seed(void);   /* a fresh random seed in 0..2^31-1 */

/* One line "error: ..." on stderr and exit(2). fmt takes exactly two %s (pass "" if unused). */
void die(const char *fmt, const char *a, const char *b);
long parse_int(const char *flag, const char *v, long lo, long hi);
float parse_float(const char *flag, const char *v, double lo, double hi);

#endif
