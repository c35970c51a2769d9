/* generate.c: the generation loop: evaluate the prompt, then sample (core/sampler.c) and
 * evaluate one token at a time until n_predict tokens, an end-of-generation token of the
 * tokenizer, a callback's stop, or the end of the context; and the timings of the last run.
 * It lives in text/ because "end of generation" is the tokenizer's list of tokens. */
#include "bitnet.h"
#include "core/model_internal.h"
#include "text.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* End of generation: every end-of-generation token the tokenizer lists (EOS, EOT, <|eom_id|>,
 * ...), or just EOS/EOT when the model has no tokenizer. */
static int is_end_of_generation(int id) {
    const Tokenizer *t = text_tokenizer();
    if (t) return tokenizer_is_eog(t, id);
    return id == BN_EOS_ID || id == BN_EOT_ID;
}

int bn_is_eog(int32_t token) { return is_end_of_generation(token); }

int bn_generate(bn_context *c, const int32_t *prompt, int n_prompt, int n_predict,
                const bn_sampling *s, int ignore_eos, int32_t *out, bn_token_cb on_token, void *user) {
    const int V = BN_N_VOCAB;
    if (n_predict < 0) { bn_set_error("n_predict must be >= 0"); return -1; }
    float *logits = malloc((size_t)V * sizeof(float));                  /* (V) */
    void *cand = malloc(bn_sample_scratch_bytes());                   /* (V) candidates */
    int32_t *hist = malloc(((size_t)n_prompt + (size_t)n_predict + 1) * sizeof(int32_t));
    if (!logits || !cand || !hist) {
        free(logits); free(cand); free(hist);
        bn_set_error("out of memory");
        return -1;
    }
    memcpy(hist, prompt, (size_t)n_prompt * sizeof(int32_t));
    uint64_t rng = bn_rng_init(s->seed);
    int n_gen = 0, rc = 0;

    double t0 = now_seconds();
    if (n_prompt > 0) rc = bn_eval(c, prompt, n_prompt, logits, 1);
    double t1 = now_seconds();
    c->last_n_prompt = n_prompt;
    c->last_t_prompt = t1 - t0;
    if (rc == 0 && n_prompt == 0) { bn_set_error("empty prompt"); rc = -1; }

    while (rc == 0 && n_gen < n_predict) {
        int id = bn_sample_with(logits, s, hist, n_prompt + n_gen, &rng, cand);
        out[n_gen] = id;
        hist[n_prompt + n_gen] = id;
        n_gen++;
        if (on_token && on_token(user, id)) break;
        if (!ignore_eos && is_end_of_generation(id)) break;
        if (n_gen == n_predict) break;
        if (bn_pos(c) >= bn_n_ctx(c)) break;        /* context full: stop cleanly */
        rc = bn_eval(c, &hist[n_prompt + n_gen - 1], 1, logits, 1);
    }
    c->last_n_gen = n_gen;
    c->last_t_gen = now_seconds() - t1;
    free(logits); free(cand); free(hist);
    return rc == 0 ? n_gen : -1;
}

void bn_last_timings(const bn_context *c, int *n_prompt, double *t_prompt, int *n_gen, double *t_gen) {
    *n_prompt = c->last_n_prompt;
    *t_prompt = c->last_t_prompt;
    *n_gen = c->last_n_gen;
    *t_gen = c->last_t_gen;
}
