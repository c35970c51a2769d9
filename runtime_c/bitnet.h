/* bitnet.h: the public C API of a compiled bitnet-aot model.
 *
 * One compiled program holds one model (its shapes are compile-time constants in the
 * generated model_config.h). A context owns a KV cache and scratch buffers; several
 * contexts may share the read-only weights. Used by main.c (the CLI) and by the Python
 * binding (bindings/), which loads the same code as a shared library.
 */
#ifndef BITNET_H
#define BITNET_H

#include <stddef.h>
#include <stdint.h>

typedef struct bn_context bn_context;

/* ---- model facts ---- */
int bn_n_vocab(void);
int bn_n_ctx_train(void);
int bn_default_threads(void);          /* online cores, at most BN_THREADS_USEFUL (one per 32 MiB of weights) */
double bn_kv_cache_bytes(int n_ctx);   /* bytes the KV cache of an n_ctx-token context reserves */
const char *bn_info_json(void);        /* build provenance and hyper-parameters, JSON */
const char *bn_last_error(void);       /* message for the last failing call (thread-local) */

/* Open the weights (embedded or external file). Returns 0, or -1 with bn_last_error(). */
int bn_init(const char *weights_path /* NULL: embedded, or the default external path */);
/* Recompute the SHA-256 of the weights blob and compare with the recorded one: 1 ok, 0 mismatch. */
int bn_verify(char *hex_out /* 65 bytes or NULL */);

/* ---- contexts ---- */
bn_context *bn_create(int n_ctx, int n_threads);   /* NULL on failure, see bn_last_error() */
void bn_free(bn_context *c);
void bn_reset(bn_context *c);                      /* forget the KV cache */
int bn_pos(const bn_context *c);                   /* tokens in the KV cache */
int bn_truncate(bn_context *c, int n);             /* keep the first n cached tokens (n <= pos); 0 or -1 */
int bn_n_ctx(const bn_context *c);

/* Evaluate n tokens after the cached ones. logits_mode: 0 none, 1 last token only
 * (logits = [n_vocab]), 2 every token (logits = [n][n_vocab]).
 * Returns 0, or -1 (context full, bad token id) with bn_last_error(). */
int bn_eval(bn_context *c, const int32_t *tokens, int n, float *logits, int logits_mode);

/* ---- text (the tokenizer baked into the model) ---- */
/* Text -> ids. Returns the count; if max_ids is too small, -(count needed); -1 on error
 * (no tokenizer in this model; see bn_last_error()). add_bos follows the model's rule. */
int bn_tokenize(const char *text, size_t len, int add_bos, int parse_special, int32_t *out_ids, int max_ids);
/* ids -> text (snprintf-style: writes at most cap-1 bytes and a NUL, returns the full
 * length, or -1 without a tokenizer). special: print control tokens as their text. */
long bn_detokenize(const int32_t *ids, int n_ids, int special, char *out, size_t cap);

/* One decoding step for n independent sequences, each in its own context: the matmuls run
 * batched (each weight tile read once for all n) on cs[0]'s buffers and threads; row i uses
 * cs[i]'s position and KV cache, and each cs[i] advances by one token. logits: (n, V) or
 * NULL. All contexts must be distinct, n <= the compiled batch size, and no context larger
 * than cs[0]'s. Returns 0 or -1 (bn_last_error). */
int bn_eval_batch(bn_context *const *cs, const int32_t *tokens, int n, float *logits);

/* One forward pass over n <= the compiled batch size rows of several sequences (continuous
 * batching: decode steps of some and a prompt chunk of another in one pass over the
 * weights). Row i is the next token of cs[i]; a context may own several rows, in order,
 * and advances by their count. work lends its buffers and threads and need not be among
 * cs (no context larger than work's). logits: (number of rows with want_logits[i], V), in
 * row order; NULL for none. Every row's logits equal what bn_eval computes for it alone.
 * Returns 0 or -1 (bn_last_error). */
int bn_eval_rows(bn_context *work, bn_context *const *cs, const int32_t *tokens, int n,
                 const unsigned char *want_logits, float *logits);

/* ---- sampling ---- */
typedef struct {
    float temperature;     /* <= 0: greedy */
    int top_k;             /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int repeat_last_n;     /* tokens of history the penalty looks at */
    uint64_t seed;
} bn_sampling;

bn_sampling bn_sampling_default(void);

/* The sampler bn_generate uses, for callers that run their own loop (bn_eval_batch):
 * logits (V) are modified; rng_state starts as bn_rng_init(seed). Returns a token id. */
uint64_t bn_rng_init(uint64_t seed);
int bn_sample(float *logits, const bn_sampling *s, const int32_t *hist, int n_hist, uint64_t *rng_state);
/* The same with caller-owned scratch of bn_sample_scratch_bytes() (no allocation per token). */
size_t bn_sample_scratch_bytes(void);
int bn_sample_with(float *logits, const bn_sampling *s, const int32_t *hist, int n_hist, uint64_t *rng_state,
                   void *scratch);
int bn_is_eog(int32_t token);
/* OpenAI's penalties over the tokens generated so far: logits[t] -= frequency * count(t)
 * + presence * (count(t) > 0). Returns 0 or -1 (out of memory). */
int bn_apply_penalties(float *logits, const int32_t *gen, int n_gen, float presence, float frequency);
/* Log-probability of token under softmax(logits), and the top_n most likely ids with theirs,
 * best first (top_ids, top_lp: top_n entries; fewer if the vocabulary is smaller). */
float bn_logprobs(const float *logits, int token, int top_n, int32_t *top_ids, float *top_lp);     /* end-of-text / end-of-turn */

/* Generate up to n_predict tokens after the prompt (which is evaluated first). Stops at
 * end-of-generation tokens unless ignore_eos. Writes generated ids to out (capacity
 * n_predict); on_token (may be NULL) is called for each, and generation stops when it
 * returns non-zero. Returns the number generated, or -1 on error. */
typedef int (*bn_token_cb)(void *user, int32_t token);
int bn_generate(bn_context *c, const int32_t *prompt, int n_prompt, int n_predict,
                const bn_sampling *s, int ignore_eos, int32_t *out, bn_token_cb on_token, void *user);

/* Timing of the last bn_generate: prompt tokens, generated tokens, seconds each. */
void bn_last_timings(const bn_context *c, int *n_prompt, double *t_prompt, int *n_gen, double *t_gen);

#endif
