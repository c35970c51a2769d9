/* model.c: the transformer forward pass of a compiled ternary model.
 *
 * Shapes are compile-time constants from the generated model_config.h:
 *   E = BN_N_EMBD, F = BN_N_FF, V = BN_N_VOCAB, H = BN_N_HEAD, HKV = BN_N_HEAD_KV,
 *   D = BN_HEAD_DIM, KV = BN_KV_DIM (= HKV * D), KPE/KPF = E/F padded for the kernels.
 *
 * Numerics follow BitNet b1.58 exactly as the numpy reference (compiler/reference.py):
 * every ternary matmul quantizes its input per token to int8 with absmax (round half to
 * even), computes exact integer dot products, and scales by 1/as * ws in float32.
 * Compile with -ffp-contract=off so float results do not depend on FMA contraction.
 *
 * Sections: contexts, small math, ternary matmul, attention, the forward pass, head.
 */
#include "bitnet.h"
#include "model_internal.h"
#include "platform.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Contexts                                                                             */
/* ------------------------------------------------------------------------------------ */

static void *alloc_zero(size_t count, size_t size, int *failed) {
    void *p = calloc(count ? count : 1, size);
    if (!p) *failed = 1;
    return p;
}

/* Activation buffers start on a cache line: threads write disjoint ranges of 32-row tiles
 * (128 bytes), so no two threads ever write the same line. Freed with platform_aligned_free. */
static void *alloc_lines(size_t count, size_t size, int *failed) {
    size_t bytes = (count * size + 63) / 64 * 64;
    void *p = platform_aligned_alloc(64, bytes ? bytes : 64);
    if (!p) { *failed = 1; return NULL; }
    memset(p, 0, bytes);
    return p;
}

int bn_n_vocab(void) { return BN_N_VOCAB; }
int bn_n_ctx_train(void) { return BN_N_CTX_TRAIN; }
int bn_pos(const bn_context *c) { return c->pos; }
int bn_n_ctx(const bn_context *c) { return c->n_ctx; }
void bn_reset(bn_context *c) { c->pos = 0; }

bn_context *bn_create(int n_ctx, int n_threads) {
    if (!bn_blob()) { bn_set_error("bn_init() was not called or failed"); return NULL; }
    if (n_ctx < 1 || n_ctx > BN_N_CTX_MAX) {
        bn_set_error("context size %d is out of range 1..%d", n_ctx, BN_N_CTX_MAX);
        return NULL;
    }
    if (n_threads < 1 || n_threads > 256) {
        bn_set_error("thread count %d is out of range 1..256", n_threads);
        return NULL;
    }
    /* Refuse a KV cache the machine cannot hold, before the kernel's overcommit lets us
     * start and the OOM killer ends us later. */
    double kv_bytes = 2.0 * BN_N_LAYER * (double)n_ctx * BN_KV_DIM * sizeof(float);
    double phys = (double)platform_physical_memory();   /* 0: unknown */
    if (phys > 0 && kv_bytes > 0.8 * phys) {
        bn_set_error("a %d-token context needs %.0f MiB of KV cache, more than this machine's %.0f MiB of memory allows; "
                     "lower --ctx", n_ctx, kv_bytes / (1 << 20), phys / (1 << 20));
        return NULL;
    }
    bn_context *c = calloc(1, sizeof *c);
    if (!c) { bn_set_error("out of memory"); return NULL; }
    int failed = 0;
    c->n_ctx = n_ctx;
    c->x = alloc_lines((size_t)BN_BATCH * BN_N_EMBD, sizeof(float), &failed);
    c->xb = alloc_lines((size_t)BN_BATCH * BN_N_EMBD, sizeof(float), &failed);
    c->q = alloc_lines((size_t)BN_BATCH * BN_N_EMBD, sizeof(float), &failed);
    c->k = alloc_lines((size_t)BN_BATCH * BN_KV_DIM, sizeof(float), &failed);
    c->v = alloc_lines((size_t)BN_BATCH * BN_KV_DIM, sizeof(float), &failed);
    c->att = alloc_lines((size_t)BN_BATCH * BN_N_EMBD, sizeof(float), &failed);
    c->hg = alloc_lines((size_t)BN_BATCH * BN_N_FF, sizeof(float), &failed);
    c->hu = alloc_lines((size_t)BN_BATCH * BN_N_FF, sizeof(float), &failed);
    c->tmp = alloc_lines((size_t)BN_BATCH * BN_N_EMBD, sizeof(float), &failed);
    c->xq = alloc_lines((size_t)BN_BATCH * KP_MAX, 1, &failed);
    c->xscale = alloc_lines(BN_BATCH, sizeof(float), &failed);
    c->acc = alloc_lines((size_t)BN_BATCH * ACC_MAX, sizeof(int32_t), &failed);
    c->scores_stride = (n_ctx + 15) / 16 * 16;   /* whole cache lines per thread's row */
    c->scores = alloc_lines((size_t)n_threads * (size_t)c->scores_stride, sizeof(float), &failed);
    c->key_cache = alloc_zero((size_t)BN_N_LAYER * (size_t)n_ctx * BN_KV_DIM, sizeof(float), &failed);
    c->value_cache = alloc_zero((size_t)BN_N_LAYER * (size_t)n_ctx * BN_KV_DIM, sizeof(float), &failed);
    c->n_threads = n_threads;
    c->kernel = kernel_pick(BN_KERNEL_LAYOUT);
    if (!c->kernel) failed = 1;
    if (!failed && c->kernel->scratch_bytes) {
        /* one lookup-table scratch per thread, 64-byte aligned */
        size_t bytes = (c->kernel->scratch_bytes(KP_MAX, BN_BATCH) + 63) / 64 * 64;
        c->scratch = alloc_zero((size_t)n_threads, sizeof(void *), &failed);
        for (int i = 0; !failed && i < n_threads; i++) {
            c->scratch[i] = platform_aligned_alloc(64, bytes);
            if (!c->scratch[i]) failed = 1;
        }
    }
    if (!failed) {
        c->pool = bn_pool_create(n_threads);
        if (!c->pool) failed = 1;
    }
    if (failed) {
        double mib = 2.0 * BN_N_LAYER * (double)n_ctx * BN_KV_DIM * sizeof(float) / (1 << 20);
        bn_free(c);
        bn_set_error("out of memory for a context of %d tokens (KV cache %.0f MiB); lower --ctx", n_ctx, mib);
        return NULL;
    }
    return c;
}

void bn_free(bn_context *c) {
    if (!c) return;
    if (c->pool) bn_pool_free(c->pool);
    if (c->scratch)
        for (int i = 0; i < c->n_threads; i++) platform_aligned_free(c->scratch[i]);
    free(c->scratch);
    void *lines[] = {c->x, c->xb, c->q, c->k, c->v, c->att, c->hg, c->hu, c->tmp, c->xq, c->xscale, c->acc, c->scores};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) platform_aligned_free(lines[i]);
    free(c->key_cache); free(c->value_cache);
    free(c);
}

/* ------------------------------------------------------------------------------------ */
/* Small math                                                                           */
/* ------------------------------------------------------------------------------------ */

static const float *f32_at(uint64_t offset) { return (const float *)(bn_blob() + offset); }

/* out = x / sqrt(mean(x^2) + eps) * w, for one row of n values (sum in double, like numpy) */
static void rmsnorm(float *out, const float *x, const float *w, int n) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    double r = sqrt(ss / n + (double)BN_NORM_EPS);
    for (int i = 0; i < n; i++) out[i] = (float)(x[i] / r) * w[i];
}

/* e^x in double, within about 2 ulp (the reference uses numpy's exp; results are rounded
 * to float afterwards, so they agree except when a value lies within 2^-50 of a float
 * rounding boundary). x = k ln2 + r with |r| <= ln2/2; e^r by its Taylor polynomial to
 * degree 13 (truncation error below 5e-18); 2^k from the exponent bits. x is clamped to
 * [-708, 709], where e^x still fits a normal double: below that the callers' results round
 * to 0 or -0 in float anyway. Branch-free and inlinable, 5-10x faster than libm's exp. */
static double exp_f64(double x) {
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double shifter = 6755399441055744.0;      /* 1.5 * 2^52: rounds to an integer */
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    double kd = (x * 1.44269504088896338700 + shifter) - shifter;
    double r = (x - kd * ln2_hi) - kd * ln2_lo;
    double p = 1.0 / 6227020800.0;                  /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t bits = (uint64_t)((int64_t)kd + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Round to nearest, ties to even, for |v| < 2^22: adding and subtracting 1.5 * 2^23 leaves
 * the integer part, rounded by the FPU's default mode (ties to even). Same as np.rint. */
static float round_half_even(float v) {
    const float big = 12582912.0f;   /* 1.5 * 2^23 (strict IEEE: the compiler may not fold this) */
    return (v + big) - big;
}

/* Quantize token t of x (n, K) into row t of xq (row stride KP, zero padding) and xscale. */
static void quantize_row(bn_context *c, const float *x, int t, int K, int KP) {
    const float *xr = x + (size_t)t * K;
    int8_t *qr = c->xq + (size_t)t * KP;
    float amax = 1e-5f;
    for (int i = 0; i < K; i++) { float a = fabsf(xr[i]); if (a > amax) amax = a; }
    float as = 127.0f / amax;
    for (int i = 0; i < K; i++) {
        float r = round_half_even(xr[i] * as);
        qr[i] = (int8_t)(r > 127.0f ? 127 : (r < -128.0f ? -128 : r));
    }
    memset(qr + K, 0, (size_t)(KP - K));
    c->xscale[t] = as;
}

/* Per-token work of a batch (normalising, quantizing) is dealt round-robin over the pool
 * when there is more than one token; a single token is done inline (no barrier). */
typedef struct {
    bn_context *c;
    float *out;               /* rmsnorm: (n, dim); quantize: NULL (writes c->xq, c->xscale) */
    const float *x;           /* (n, dim) */
    const float *w;           /* rmsnorm weight (dim) */
    int n, dim, KP;
} rows_task;

static void rows_worker(void *arg, int ith, int nth) {
    rows_task *t = arg;
    for (int i = ith; i < t->n; i += nth) {
        if (t->out) rmsnorm(t->out + (size_t)i * t->dim, t->x + (size_t)i * t->dim, t->w, t->dim);
        else quantize_row(t->c, t->x, i, t->dim, t->KP);
    }
}

static void run_rows(bn_context *c, rows_task *t) {
    if (t->n == 1) rows_worker(t, 0, 1);
    else bn_pool_run(c->pool, rows_worker, t);
}

/* out (n, dim) = rmsnorm of each row of x, times w (out may be x). */
static void rmsnorm_rows(bn_context *c, float *out, const float *x, const float *w, int n, int dim) {
    rows_task t = {c, out, x, w, n, dim, 0};
    run_rows(c, &t);
}

/* Quantize n tokens of K floats into xq (row stride KP, zero padding) and xscale. */
static void quantize_rows(bn_context *c, const float *x, int n, int K, int KP) {
    rows_task t = {c, NULL, x, NULL, n, K, KP};
    run_rows(c, &t);
}

/* One matrix of a fused matmul: out (n, M) = W (M, K) . x, all parts sharing the input x. */
typedef struct {
    const bn_ternary_ref *w;
    int M;
    float *out;               /* (n, M) */
    int32_t *acc;             /* (n, M) integer results, a block of c->acc */
} matmul_part;

typedef struct {
    bn_context *c;
    int n, KP;
    int n_parts;              /* 1..3 */
    int glu;                  /* parts are (gate, up): finish with gate = act(gate) * up */
    matmul_part part[3];
} matmul_task;

/* The FFN activation, rounded once from double like the reference (relu^2 or SiLU). */
static float ffn_act(float g) {
    if (BN_ACT_RELU2) { g = g > 0.0f ? g : 0.0f; return g * g; }
    return (float)((double)g / (1.0 + exp_f64(-(double)g)));
}

static int round_up_32(int v) { return (v + 31) / 32 * 32; }

/* The rows of all parts, laid end to end, are split into one contiguous range per thread
 * (so q, k and v together are balanced even when k and v alone have fewer tiles than
 * threads); within each part a range starts and ends on a 32-row tile (the lookup-table
 * layouts store rows in tiles of 32). Gate and up are split alike instead, row by row the
 * same, because each thread finishes its rows with act(gate) * up. Each thread rescales
 * its own rows, so one bn_pool_run (one barrier) covers the whole fused matmul. */
static void matmul_worker(void *arg, int ith, int nth) {
    matmul_task *t = arg;
    const ternary_kernel *k = t->c->kernel;
    void *scratch = t->c->scratch ? t->c->scratch[ith] : NULL;
    int total = 0;
    for (int p = 0; p < t->n_parts; p++) total += t->part[p].M;
    const int chunk = (total + nth - 1) / nth;
    int offset = 0;                                      /* first row of part p, end to end */
    for (int p = 0; p < t->n_parts; p++) {
        const matmul_part *pt = &t->part[p];
        int r0, r1;
        if (t->glu) {
            int c = round_up_32((pt->M + nth - 1) / nth);
            r0 = ith * c;
            r1 = r0 + c;
        } else {
            r0 = round_up_32(ith * chunk - offset);
            r1 = round_up_32((ith + 1) * chunk - offset);
        }
        offset += pt->M;
        r0 = r0 < 0 ? 0 : (r0 > pt->M ? pt->M : r0);
        r1 = r1 < 0 ? 0 : (r1 > pt->M ? pt->M : r1);
        if (r0 >= r1) continue;
        const uint8_t *w = bn_blob() + pt->w->offset;
        if (t->n == 1) k->gemv(w, t->c->xq, pt->acc, t->KP, r0, r1, scratch);
        else k->gemm(w, t->c->xq, pt->acc, t->n, pt->M, t->KP, r0, r1, scratch);
        for (int i = 0; i < t->n; i++) {
            float as = t->c->xscale[i];
            const int32_t *acc = pt->acc + (size_t)i * pt->M;
            float *o = pt->out + (size_t)i * pt->M;
            for (int r = r0; r < r1; r++) o[r] = (float)acc[r] / as * pt->w->scale;
        }
        if (t->glu && p == 1) {           /* gate and up have the same M, so the same rows */
            const matmul_part *g = &t->part[0];
            for (int i = 0; i < t->n; i++) {
                float *go = g->out + (size_t)i * g->M;
                const float *uo = pt->out + (size_t)i * pt->M;
                for (int r = r0; r < r1; r++) go[r] = ffn_act(go[r]) * uo[r];
            }
        }
    }
}

/* out_p (n, M_p) = W_p (M_p, K) . x (n, K) with BitNet numerics, for up to three matrices
 * sharing the input x (quantized once). */
static void ternary_matmul_fused(bn_context *c, const float *x, int n, int K, int KP, int glu,
                                 int n_parts, const matmul_part *parts) {
    quantize_rows(c, x, n, K, KP);
    matmul_task t = {c, n, KP, n_parts, glu, {{0}}};
    int32_t *acc = c->acc;
    for (int p = 0; p < n_parts; p++) {
        t.part[p] = parts[p];
        t.part[p].acc = acc;
        acc += (size_t)n * parts[p].M;
    }
    bn_pool_run(c->pool, matmul_worker, &t);
}

static void ternary_matmul(bn_context *c, float *out, const float *x, int n, int K, int KP,
                           const bn_ternary_ref *w, int M) {
    matmul_part p = {w, M, out, NULL};
    ternary_matmul_fused(c, x, n, K, KP, 0, 1, &p);
}

/* ------------------------------------------------------------------------------------ */
/* Attention                                                                            */
/* ------------------------------------------------------------------------------------ */

/* cos/sin of every rotated pair at position pos: cs[2i] = cos, cs[2i+1] = sin of
 * pos * base^(-2i/rope_dim), computed in double and rounded once (like the reference). */
static void rope_angles(float *cs, int pos) {
    for (int i = 0; i < BN_ROPE_DIM / 2; i++) {
        double inv = 1.0 / pow((double)BN_ROPE_BASE, (double)(2 * i) / (double)BN_ROPE_DIM);
        double ang = (double)pos * inv;
        cs[2 * i] = (float)cos(ang);
        cs[2 * i + 1] = (float)sin(ang);
    }
}

/* Rotate one head vector in place (NEOX: pairs (i, i+half); else (2i, 2i+1)). */
static void rope(float *v, const float *cs) {
    const int half = BN_ROPE_DIM / 2;
    for (int i = 0; i < half; i++) {
        float co = cs[2 * i], si = cs[2 * i + 1];
        int i0 = BN_ROPE_NEOX ? i : 2 * i;
        int i1 = BN_ROPE_NEOX ? i + half : 2 * i + 1;
        float a = v[i0], b = v[i1];
        v[i0] = a * co - b * si;
        v[i1] = a * si + b * co;
    }
}

typedef struct {
    bn_context *c;           /* the context whose buffers hold this batch */
    int layer, n;
} attn_task;

/* Work item = (token, head), numbered token-major; thread ith takes items ith, ith + nth, ...
 * A causal item costs in proportion to its position, so contiguous ranges would give the
 * last thread the longest rows of a prompt batch; dealt round-robin, every thread gets
 * about H / nth heads of every token. Each item writes its own 128-float slice of att. */
static void attention_worker(void *arg, int ith, int nth) {
    attn_task *t = arg;
    bn_context *c = t->c;
    const int items = t->n * BN_N_HEAD;
    float *scores = c->scores + (size_t)ith * c->scores_stride;
    const float sqrt_d = sqrtf((float)BN_HEAD_DIM);
    for (int it = ith; it < items; it += nth) {
        int tok = it / BN_N_HEAD, h = it % BN_N_HEAD;
        int kvh = h / (BN_N_HEAD / BN_N_HEAD_KV);
        int pos = c->row_pos[tok];
        const bn_context *owner = c->row_owner[tok];      /* whose KV cache this row reads */
        const float *kc = owner->key_cache + (size_t)t->layer * owner->n_ctx * BN_KV_DIM;
        const float *vc = owner->value_cache + (size_t)t->layer * owner->n_ctx * BN_KV_DIM;
        const float *q = c->q + (size_t)tok * BN_N_EMBD + h * BN_HEAD_DIM;
        const float *kh = kc + kvh * BN_HEAD_DIM;         /* this head's key at position 0 */
        int s = 0;
        for (; s + 4 <= pos + 1; s += 4) {                  /* four positions at once: four */
            const float *k0 = kh + (size_t)s * BN_KV_DIM;   /* independent chains, each summed */
            const float *k1 = k0 + BN_KV_DIM, *k2 = k1 + BN_KV_DIM, *k3 = k2 + BN_KV_DIM;  /* in order */
            float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
            for (int d = 0; d < BN_HEAD_DIM; d++) {
                d0 += q[d] * k0[d];
                d1 += q[d] * k1[d];
                d2 += q[d] * k2[d];
                d3 += q[d] * k3[d];
            }
            scores[s] = d0 / sqrt_d;
            scores[s + 1] = d1 / sqrt_d;
            scores[s + 2] = d2 / sqrt_d;
            scores[s + 3] = d3 / sqrt_d;
        }
        for (; s <= pos; s++) {
            const float *k = kh + (size_t)s * BN_KV_DIM;
            float dot = 0.0f;
            for (int d = 0; d < BN_HEAD_DIM; d++) dot += q[d] * k[d];
            scores[s] = dot / sqrt_d;
        }
        float maxs = -INFINITY;
        for (s = 0; s <= pos; s++) maxs = scores[s] > maxs ? scores[s] : maxs;
        float sum = 0.0f;
        for (s = 0; s <= pos; s++) { scores[s] = (float)exp_f64((double)(scores[s] - maxs)); sum += scores[s]; }
        float *out = c->att + (size_t)tok * BN_N_EMBD + h * BN_HEAD_DIM;
        for (int d = 0; d < BN_HEAD_DIM; d++) out[d] = 0.0f;
        for (s = 0; s <= pos; s++) {
            float p = scores[s] / sum;
            const float *v = vc + (size_t)s * BN_KV_DIM + kvh * BN_HEAD_DIM;
            for (int d = 0; d < BN_HEAD_DIM; d++) out[d] += p * v[d];
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* The forward pass over a batch of n <= BN_BATCH tokens                                */
/* ------------------------------------------------------------------------------------ */

/* Rows t in [0, n) of c's buffers; row t belongs to sequence c->row_owner[t] at position
 * c->row_pos[t] (its KV cache is written there and attention reads that cache). */
static void forward_rows(bn_context *c, const int32_t *tokens, int n) {
    const bn_weights_index *W = &BN_WEIGHTS_INDEX;
    for (int t = 0; t < n; t++) rope_angles(c->rope_cs + (size_t)t * BN_ROPE_DIM, c->row_pos[t]);   /* once for all layers */
    for (int t = 0; t < n; t++) matrix_row(c->x + (size_t)t * BN_N_EMBD, &W->token_embd, BN_EMBD_TYPE, tokens[t]);

    for (int l = 0; l < BN_N_LAYER; l++) {
        const bn_layer_ref *L = &W->layers[l];

        /* attention block */
        rmsnorm_rows(c, c->xb, c->x, f32_at(L->attn_norm), n, BN_N_EMBD);
        matmul_part qkv[3] = {{&L->wq, BN_N_EMBD, c->q, NULL}, {&L->wk, BN_KV_DIM, c->k, NULL},
                              {&L->wv, BN_KV_DIM, c->v, NULL}};
        ternary_matmul_fused(c, c->xb, n, BN_N_EMBD, BN_KP_EMBD, 0, 3, qkv);
        for (int t = 0; t < n; t++) {
            const float *cs = c->rope_cs + (size_t)t * BN_ROPE_DIM;
            for (int h = 0; h < BN_N_HEAD; h++) rope(c->q + (size_t)t * BN_N_EMBD + h * BN_HEAD_DIM, cs);
            for (int h = 0; h < BN_N_HEAD_KV; h++) rope(c->k + (size_t)t * BN_KV_DIM + h * BN_HEAD_DIM, cs);
            bn_context *owner = c->row_owner[t];
            size_t at_kv = ((size_t)l * owner->n_ctx + (size_t)c->row_pos[t]) * BN_KV_DIM;
            memcpy(owner->key_cache + at_kv, c->k + (size_t)t * BN_KV_DIM, BN_KV_DIM * sizeof(float));
            memcpy(owner->value_cache + at_kv, c->v + (size_t)t * BN_KV_DIM, BN_KV_DIM * sizeof(float));
        }
        attn_task at = {c, l, n};
        bn_pool_run(c->pool, attention_worker, &at);
        if (BN_SUB_NORMS)
            rmsnorm_rows(c, c->att, c->att, f32_at(L->attn_sub_norm), n, BN_N_EMBD);
        ternary_matmul(c, c->tmp, c->att, n, BN_N_EMBD, BN_KP_EMBD, &L->wo, BN_N_EMBD);
        for (size_t i = 0; i < (size_t)n * BN_N_EMBD; i++) c->x[i] += c->tmp[i];

        /* feed-forward block */
        rmsnorm_rows(c, c->xb, c->x, f32_at(L->ffn_norm), n, BN_N_EMBD);
        matmul_part gate_up[2] = {{&L->w_gate, BN_N_FF, c->hg, NULL}, {&L->w_up, BN_N_FF, c->hu, NULL}};
        ternary_matmul_fused(c, c->xb, n, BN_N_EMBD, BN_KP_EMBD, 1, 2, gate_up);   /* hg = act(gate) * up */
        if (BN_SUB_NORMS)
            rmsnorm_rows(c, c->hg, c->hg, f32_at(L->ffn_sub_norm), n, BN_N_FF);
        ternary_matmul(c, c->tmp, c->hg, n, BN_N_FF, BN_KP_FF, &L->w_down, BN_N_EMBD);
        for (size_t i = 0; i < (size_t)n * BN_N_EMBD; i++) c->x[i] += c->tmp[i];
    }
}

/* n consecutive tokens of one sequence. */
static void forward_batch(bn_context *c, const int32_t *tokens, int n) {
    for (int t = 0; t < n; t++) { c->row_owner[t] = c; c->row_pos[t] = c->pos + t; }
    forward_rows(c, tokens, n);
    c->pos += n;
}

/* ------------------------------------------------------------------------------------ */
/* Output head: logits = head (V, E) . rmsnorm(x)                                        */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    const head_input *in;   /* normed final hidden state (E), quantized for integer heads */
    float *logits;          /* (V) */
} head_task;

static void head_worker(void *arg, int ith, int nth) {
    head_task *t = arg;
    int chunk = (BN_N_VOCAB + nth - 1) / nth;
    int v0 = ith * chunk, v1 = v0 + chunk < BN_N_VOCAB ? v0 + chunk : BN_N_VOCAB;
    if (v0 < v1) head_rows(&BN_WEIGHTS_INDEX.output, BN_HEAD_TYPE, t->in, t->logits, v0, v1);
}

static void compute_logits(bn_context *c, int token_in_batch, float *logits) {
    float *xn = c->xb;   /* reuse: (E) */
    rmsnorm(xn, c->x + (size_t)token_in_batch * BN_N_EMBD, f32_at(BN_WEIGHTS_INDEX.output_norm), BN_N_EMBD);
    head_prepare(&c->head_in, BN_HEAD_TYPE, xn);   /* q8/q6/q4: quantize xn once, for all threads */
    head_task t = {&c->head_in, logits};
    bn_pool_run(c->pool, head_worker, &t);
}

int bn_eval(bn_context *c, const int32_t *tokens, int n, float *logits, int logits_mode) {
    if (n < 0 || (n > 0 && !tokens)) { bn_set_error("bad token array"); return -1; }
    if (c->pos + n > c->n_ctx) {
        bn_set_error("context full: %d tokens cached + %d new > context size %d; use a larger --ctx or a shorter prompt",
                     c->pos, n, c->n_ctx);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= BN_N_VOCAB) {
            bn_set_error("token id %d is outside the vocabulary (0..%d)", (int)tokens[i], BN_N_VOCAB - 1);
            return -1;
        }
    }
    for (int done = 0; done < n; ) {
        int b = n - done < BN_BATCH ? n - done : BN_BATCH;
        forward_batch(c, tokens + done, b);
        if (logits_mode == 2) {
            for (int t = 0; t < b; t++) compute_logits(c, t, logits + (size_t)(done + t) * BN_N_VOCAB);
        } else if (logits_mode == 1 && done + b == n) {
            compute_logits(c, b - 1, logits);
        }
        done += b;
    }
    return 0;
}

int bn_eval_batch(bn_context *const *cs, const int32_t *tokens, int n, float *logits) {
    if (n < 1 || n > BN_BATCH) { bn_set_error("batch of %d sequences is outside 1..%d", n, BN_BATCH); return -1; }
    bn_context *work = cs[0];
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= BN_N_VOCAB) {
            bn_set_error("token id %d is outside the vocabulary (0..%d)", (int)tokens[i], BN_N_VOCAB - 1);
            return -1;
        }
        if (cs[i]->pos + 1 > cs[i]->n_ctx) { bn_set_error("context full for sequence %d", i); return -1; }
        if (cs[i]->n_ctx > work->n_ctx) { bn_set_error("sequence %d has a larger context than sequence 0", i); return -1; }
        for (int j = 0; j < i; j++)
            if (cs[j] == cs[i]) { bn_set_error("sequence %d appears twice in the batch", i); return -1; }
    }
    for (int i = 0; i < n; i++) { work->row_owner[i] = cs[i]; work->row_pos[i] = cs[i]->pos; }
    forward_rows(work, tokens, n);
    for (int i = 0; i < n; i++) cs[i]->pos++;
    if (logits)
        for (int i = 0; i < n; i++) compute_logits(work, i, logits + (size_t)i * BN_N_VOCAB);
    return 0;
}
