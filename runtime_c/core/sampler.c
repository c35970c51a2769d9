/* sampler.c: turning logits into the next token (the loop around it: text/generate.c).
 *
 * Order of operations (as llama.cpp's default chain): repetition penalty, then greedy if
 * temperature <= 0; otherwise top-k, temperature, softmax, top-p, min-p, and a draw from a
 * seeded xorshift generator, so a seed always gives the same text on every target.
 */
#include "bitnet.h"
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bn_sampling bn_sampling_default(void) {
    bn_sampling s = {0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 42};
    return s;
}

/* xorshift64*: small, fast, identical on every platform */
static uint64_t rng_next(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static float rng_uniform(uint64_t *state) { return (float)(rng_next(state) >> 40) / 16777216.0f; }

typedef struct { float logit; int id; } candidate;

/* a comes before b: higher logit first, ties lower id first (a total order) */
static int cand_before(const candidate *a, const candidate *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Heap of n candidates whose root is the LAST in candidate order: restore it below i. */
static void sift_down(candidate *h, int n, int i) {
    for (;;) {
        int worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cand_before(&h[worst], &h[l])) worst = l;
        if (r < n && cand_before(&h[worst], &h[r])) worst = r;
        if (worst == i) return;
        candidate t = h[i]; h[i] = h[worst]; h[worst] = t;
        i = worst;
    }
}

/* Keep the first k of cand[0..V) in candidate order, sorted, in cand[0..k): a k-heap of the
 * best seen so far (O(V log k): with top-k 40 a few times faster than sorting 128K ids),
 * then heap sort. k = V sorts everything. */
static void select_sorted(candidate *cand, int V, int k) {
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(cand, k, i);
    for (int i = k; i < V; i++)
        if (cand_before(&cand[i], &cand[0])) { cand[0] = cand[i]; sift_down(cand, k, 0); }
    for (int n = k - 1; n > 0; n--) {          /* move the worst to the end, repeatedly */
        candidate t = cand[0]; cand[0] = cand[n]; cand[n] = t;
        sift_down(cand, n, 0);
    }
}

static int argmax(const float *logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

/* Sample one token. logits (V) are modified (penalty). cand is scratch of V entries. */
static int sample_token(float *logits, const bn_sampling *s, const int32_t *hist, int n_hist,
                        uint64_t *rng, candidate *cand) {
    const int V = BN_N_VOCAB;
    if (s->repeat_penalty != 1.0f && s->repeat_last_n > 0) {
        int from = n_hist > s->repeat_last_n ? n_hist - s->repeat_last_n : 0;
        for (int i = from; i < n_hist; i++) {
            int id = hist[i];
            int seen = 0;      /* penalise each id once */
            for (int j = from; j < i; j++) if (hist[j] == id) { seen = 1; break; }
            if (seen) continue;
            float l = logits[id];
            logits[id] = l > 0 ? l / s->repeat_penalty : l * s->repeat_penalty;
        }
    }
    if (s->temperature <= 0.0f) return argmax(logits, V);

    for (int i = 0; i < V; i++) { cand[i].logit = logits[i]; cand[i].id = i; }
    int n = V;
    if (s->top_k > 0 && s->top_k < n) n = s->top_k;
    select_sorted(cand, V, n);

    float maxl = cand[0].logit;
    double sum = 0.0;
    for (int i = 0; i < n; i++) { cand[i].logit = expf((cand[i].logit - maxl) / s->temperature); sum += cand[i].logit; }
    for (int i = 0; i < n; i++) cand[i].logit = (float)(cand[i].logit / sum);   /* now probabilities */

    if (s->top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) { cum += cand[i].logit; if (cum >= s->top_p) { n = i + 1; break; } }
    }
    if (s->min_p > 0.0f) {
        float floor_p = cand[0].logit * s->min_p;
        int keep = 1;
        while (keep < n && cand[keep].logit >= floor_p) keep++;
        n = keep;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += cand[i].logit;
    double r = (double)rng_uniform(rng) * total, cum = 0.0;
    for (int i = 0; i < n; i++) { cum += cand[i].logit; if (r < cum) return cand[i].id; }
    return cand[n - 1].id;
}

uint64_t bn_rng_init(uint64_t seed) { return seed ? seed : 0x9E3779B97F4A7C15ULL; }

int bn_sample(float *logits, const bn_sampling *s, const int32_t *hist, int n_hist, uint64_t *rng_state) {
    candidate *cand = malloc((size_t)BN_N_VOCAB * sizeof(candidate));      /* (V) */
    if (!cand) { bn_set_error("out of memory"); return -1; }
    int id = sample_token(logits, s, hist, n_hist, rng_state, cand);
    free(cand);
    return id;
}

size_t bn_sample_scratch_bytes(void) { return (size_t)BN_N_VOCAB * sizeof(candidate); }

int bn_sample_with(float *logits, const bn_sampling *s, const int32_t *hist, int n_hist, uint64_t *rng_state,
                   void *scratch) {
    return sample_token(logits, s, hist, n_hist, rng_state, scratch);
}

static int cmp_id(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int bn_apply_penalties(float *logits, const int32_t *gen, int n_gen, float presence, float frequency) {
    if (n_gen <= 0 || (presence == 0.0f && frequency == 0.0f)) return 0;
    int32_t *ids = malloc((size_t)n_gen * sizeof(int32_t));
    if (!ids) { bn_set_error("out of memory"); return -1; }
    memcpy(ids, gen, (size_t)n_gen * sizeof(int32_t));
    qsort(ids, (size_t)n_gen, sizeof(int32_t), cmp_id);
    for (int i = 0; i < n_gen; ) {
        int j = i;
        while (j < n_gen && ids[j] == ids[i]) j++;
        if (ids[i] >= 0 && ids[i] < BN_N_VOCAB)
            logits[ids[i]] -= (float)((double)frequency * (j - i) + (double)presence);
        i = j;
    }
    free(ids);
    return 0;
}

float bn_logprobs(const float *logits, int token, int top_n, int32_t *top_ids, float *top_lp) {
    const int V = BN_N_VOCAB;
    float maxl = logits[0];
    for (int i = 1; i < V; i++) maxl = logits[i] > maxl ? logits[i] : maxl;
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - maxl);
    const double lse = maxl + log(sum);
    int k = 0;                           /* top_ids[0..k): best first, ties lower id first */
    for (int i = 0; i < V && top_n > 0; i++) {
        float l = logits[i];
        if (k == top_n && !(l > top_lp[k - 1])) continue;
        int at = k < top_n ? k++ : top_n - 1;
        while (at > 0 && l > top_lp[at - 1]) { top_lp[at] = top_lp[at - 1]; top_ids[at] = top_ids[at - 1]; at--; }
        top_lp[at] = l;
        top_ids[at] = i;
    }
    for (int i = 0; i < k; i++) top_lp[i] = (float)(top_lp[i] - lse);
    return (float)(logits[token] - lse);
}
