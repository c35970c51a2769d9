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
int bn_default_threads(void) {
    const int n = platform_cpu_count();
    return n < BN_THREADS_USEFUL ? n : BN_THREADS_USEFUL;
}
int bn_pos(const bn_context *c) { return c->pos; }
int bn_n_ctx(const bn_context *c) { return c->n_ctx; }
void bn_reset(bn_context *c) { c->pos = 0; }
int bn_truncate(bn_context *c, int n) {
    if (n < 0 || n > c->pos) { bn_set_error("cannot keep %d of %d cached tokens", n, c->pos); return -1; }
    c->pos = n;
    return 0;
}

/* Bytes of one KV cache element, and the (L, HKV, n_ctx_pad, D) cache of n_ctx positions. */
static size_t kv_elem_bytes(void) { return BN_KV_TYPE == ATTN_KV_F32 ? 4 : BN_KV_TYPE == ATTN_KV_F16 ? 2 : 1; }
static int ctx_pad(int n_ctx) { return (n_ctx + ATTN_CHUNK - 1) / ATTN_CHUNK * ATTN_CHUNK; }
double bn_kv_cache_bytes(int n_ctx) {
    double per_pos = 2.0 * BN_N_LAYER * BN_KV_DIM * (double)kv_elem_bytes()
                   + (BN_KV_TYPE == ATTN_KV_Q8 ? 2.0 * BN_N_LAYER * BN_N_HEAD_KV * sizeof(float) : 0.0);
    return per_pos * ctx_pad(n_ctx);
}

/* Query rows one attention work item gathers: a batch's rows times the heads of a group. */
#define ATTN_NQ_MAX ((BN_BATCH * (BN_N_HEAD / BN_N_HEAD_KV) + ATTN_QB - 1) / ATTN_QB * ATTN_QB)
/* A thread's attention buffers: queries [NQ][D], their limits [NQ], partial m, l [NQ] and
 * o [NQ][D], then the segment kernel's scratch. */
static size_t attn_work_bytes(void) {
    return ((size_t)ATTN_NQ_MAX * (2 * BN_HEAD_DIM + 3)) * sizeof(float) + attn_scratch_bytes(ATTN_NQ_MAX, BN_HEAD_DIM);
}

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
     * start and the OOM killer ends us later (it is reserved, not touched, until used). */
    double kv_bytes = bn_kv_cache_bytes(n_ctx);
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
    c->q = alloc_lines((size_t)BN_BATCH * BN_Q_DIM, sizeof(float), &failed);
    c->k = alloc_lines((size_t)BN_BATCH * BN_KV_DIM, sizeof(float), &failed);
    c->v = alloc_lines((size_t)BN_BATCH * BN_KV_DIM, sizeof(float), &failed);
    c->att = alloc_lines((size_t)BN_BATCH * BN_Q_DIM, sizeof(float), &failed);
    c->hg = alloc_lines((size_t)BN_BATCH * BN_N_FF, sizeof(float), &failed);
    c->hu = alloc_lines((size_t)BN_BATCH * BN_N_FF, sizeof(float), &failed);
    c->tmp = alloc_lines((size_t)BN_BATCH * BN_N_EMBD, sizeof(float), &failed);
    c->xq = alloc_lines((size_t)BN_BATCH * KP_MAX, 1, &failed);
    c->xscale = alloc_lines(BN_BATCH, sizeof(float), &failed);
    c->acc = alloc_lines((size_t)BN_BATCH * ACC_MAX, sizeof(int32_t), &failed);
    c->n_ctx_pad = ctx_pad(n_ctx);
    c->n_seg = (c->n_ctx_pad + ATTN_SEG - 1) / ATTN_SEG;
    c->attn_part = alloc_zero((size_t)BN_BATCH * BN_N_HEAD * c->n_seg * (BN_HEAD_DIM + 2), sizeof(float), &failed);
    size_t heads = (size_t)BN_N_LAYER * BN_N_HEAD_KV * (size_t)c->n_ctx_pad;
    c->kv_bytes = heads * BN_HEAD_DIM * kv_elem_bytes();
    c->key_cache = platform_reserve(c->kv_bytes);
    c->value_cache = platform_reserve(c->kv_bytes);
    if (!c->key_cache || !c->value_cache) failed = 1;
    if (BN_KV_TYPE == ATTN_KV_Q8) {
        c->key_scale = alloc_zero(heads, sizeof(float), &failed);
        c->value_scale = alloc_zero(heads, sizeof(float), &failed);
    }
    c->n_threads = n_threads;
    c->kernel = kernel_pick(BN_KERNEL_LAYOUT);
    c->gkernel = grouped_kernel_pick();
    if (!c->kernel) failed = 1;
    c->attn = attn_pick();   /* every variant takes any head dim (bitnet_b1_58-3B: 100) */
    c->attn_work = alloc_zero((size_t)n_threads, sizeof(void *), &failed);
    for (int i = 0; !failed && i < n_threads; i++) {
        c->attn_work[i] = platform_aligned_alloc(64, attn_work_bytes());
        if (!c->attn_work[i]) failed = 1;
    }
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
        bn_free(c);
        bn_set_error("out of memory for a context of %d tokens (KV cache %.0f MiB); lower --ctx", n_ctx,
                     kv_bytes / (1 << 20));
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
    if (c->attn_work)
        for (int i = 0; i < c->n_threads; i++) platform_aligned_free(c->attn_work[i]);
    free(c->attn_work);
    void *lines[] = {c->x, c->xb, c->q, c->k, c->v, c->att, c->hg, c->hu, c->tmp, c->xq, c->xscale, c->acc};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) platform_aligned_free(lines[i]);
    platform_release(c->key_cache, c->kv_bytes);
    platform_release(c->value_cache, c->kv_bytes);
    free(c->key_scale); free(c->value_scale);
    free(c->attn_part);
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

/* Per-token work of a batch (normalising, quantizing) is one tile per token over the pool
 * when there is more than one token; a single token is done inline (no barrier). */
typedef struct {
    bn_context *c;
    float *out;               /* rmsnorm: (n, dim); quantize: NULL (writes c->xq, c->xscale) */
    const float *x;           /* (n, dim) */
    const float *w;           /* rmsnorm weight (dim) */
    int n, dim, KP;
} rows_task;

static void rows_worker(void *arg, int i, int thread) {
    rows_task *t = arg;
    (void)thread;
    if (t->out) rmsnorm(t->out + (size_t)i * t->dim, t->x + (size_t)i * t->dim, t->w, t->dim);
    else quantize_row(t->c, t->x, i, t->dim, t->KP);
}

static void run_rows(bn_context *c, rows_task *t) {
    bn_pool_tiles(c->pool, t->n, rows_worker, t);
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
    int tile_rows;            /* rows per tile, a multiple of 32 */
    int first_tile[4];        /* tiles of part p: [first_tile[p], first_tile[p + 1]) */
} matmul_task;

/* The FFN activation, rounded once from double like the reference (relu^2 or SiLU). */
static float ffn_act(float g) {
    if (BN_ACT_RELU2) { g = g > 0.0f ? g : 0.0f; return g * g; }
    return (float)((double)g / (1.0 + exp_f64(-(double)g)));
}

/* Tiles: the threads claim them one at a time (threads.c), so a descheduled or slower
 * core holds back one tile, not a fixed 1/nth share. A tile should be worth far more than
 * a claim (tens of nanoseconds) and leave every thread several: about TILE_WORK weights x
 * tokens (128 rows of a 2560-wide matrix for one token: 80 KiB of i2s weights, a few
 * microseconds), at least one 32-row unit (the lookup-table layouts store rows in tiles of
 * 32), and for the lookup-table kernels, which rebuild their tables from the activations
 * in every call (about one unit's work), at least LUT_TILE_UNITS units. One thread gets
 * one tile per matrix: each tile restarts the kernel and its prefetching. */
#define TILE_WORK (128 * 2560)
#define LUT_TILE_UNITS 8

static int tile_units(int units, double unit_work, int min_units, int nth) {
    if (nth == 1) return units > 0 ? units : 1;    /* one thread: one call, as few restarts as possible */
    int u = (int)(TILE_WORK / unit_work + 0.999);
    if (u < min_units) u = min_units;
    if (u > units) u = units > 0 ? units : 1;
    return u;
}

/* Tile j covers rows [r0, r1) of one part; tiles of parts laid end to end (q, k, v). Gate
 * and up share their tiles instead (same rows of both), because the tile finishes with
 * act(gate) * up. Each tile rescales its own rows in their fixed order, so which thread
 * runs it changes nothing; one bn_pool_tiles (one barrier) covers the whole fused matmul. */
static void matmul_worker(void *arg, int tile, int thread) {
    matmul_task *t = arg;
    const ternary_kernel *k = t->c->kernel;
    void *scratch = t->c->scratch ? t->c->scratch[thread] : NULL;
    int p = 0;
    while (!t->glu && tile >= t->first_tile[p + 1]) p++;
    const int r0 = (tile - t->first_tile[p]) * t->tile_rows;
    for (int q = p; q < (t->glu ? 2 : p + 1); q++) {
        const matmul_part *pt = &t->part[q];
        const int r1 = r0 + t->tile_rows < pt->M ? r0 + t->tile_rows : pt->M;
        const uint8_t *w = bn_blob() + pt->w->offset;
        if (pt->w->group) {           /* block-scaled: the kernel returns each row's scaled sum */
            const grouped_kernel *gk = t->c->gkernel;
            const uint16_t *d = (const uint16_t *)(const void *)(bn_blob() + pt->w->scales);
            float *facc = (float *)(void *)pt->acc;
            if (t->n == 1) gk->gemv(w, d, pt->w->group, t->c->xq, facc, t->KP, r0, r1);
            else gk->gemm(w, d, pt->w->group, t->c->xq, facc, t->n, pt->M, t->KP, r0, r1);
            for (int i = 0; i < t->n; i++) {
                float as = t->c->xscale[i];
                const float *acc = facc + (size_t)i * pt->M;
                float *o = pt->out + (size_t)i * pt->M;
                for (int r = r0; r < r1; r++) o[r] = acc[r] / as * pt->w->scale;
            }
        } else {
            if (t->n == 1) k->gemv(w, t->c->xq, pt->acc, t->KP, r0, r1, scratch);
            else k->gemm(w, t->c->xq, pt->acc, t->n, pt->M, t->KP, r0, r1, scratch);
            for (int i = 0; i < t->n; i++) {
                float as = t->c->xscale[i];
                const int32_t *acc = pt->acc + (size_t)i * pt->M;
                float *o = pt->out + (size_t)i * pt->M;
                for (int r = r0; r < r1; r++) o[r] = (float)acc[r] / as * pt->w->scale;
            }
        }
        if (t->glu && q == 1) {           /* gate and up have the same M, so the same rows */
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
    matmul_task t = {c, n, KP, n_parts, glu, {{0}}, 0, {0}};
    int32_t *acc = c->acc;
    int units = 0;
    for (int p = 0; p < n_parts; p++) {
        t.part[p] = parts[p];
        t.part[p].acc = acc;
        acc += (size_t)n * parts[p].M;
        units += (parts[p].M + 31) / 32;
    }
    if (glu) units = (parts[0].M + 31) / 32;
    t.tile_rows = 32 * tile_units(units, 32.0 * KP * n * (glu ? 2 : 1), c->kernel->scratch_bytes ? LUT_TILE_UNITS : 1, bn_pool_size(c->pool));
    for (int p = 0; p < n_parts; p++)
        t.first_tile[p + 1] = t.first_tile[p] + (glu && p ? 0 : (parts[p].M + t.tile_rows - 1) / t.tile_rows);
    bn_pool_tiles(c->pool, t.first_tile[n_parts], matmul_worker, &t);
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
 * pos * BN_ROPE_FREQ[i], times BN_ROPE_MSCALE, computed in double and rounded once (like the
 * reference). The frequencies hold the model's RoPE scaling (linear, YaRN, rope_freqs
 * factors): the compiler computes them (reference.rope_frequencies) and writes them out. */
static void rope_angles(float *cs, int pos) {
    for (int i = 0; i < BN_ROPE_DIM / 2; i++) {
        double ang = (double)pos * BN_ROPE_FREQ[i];
        cs[2 * i] = (float)(cos(ang) * BN_ROPE_MSCALE);
        cs[2 * i + 1] = (float)(sin(ang) * BN_ROPE_MSCALE);
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

/* Store a row's new key and value (KV floats each, after RoPE) at position pos of layer l
 * in owner's cache, rounded to the cache type (q8: per head, scale = max|x| / 127 and codes
 * round(x / scale), half to even). */
static void kv_store(bn_context *owner, int l, int pos, const float *k, const float *v) {
    for (int g = 0; g < BN_N_HEAD_KV; g++) {
        const size_t head = (size_t)l * BN_N_HEAD_KV + g;
        const size_t kb = (head * owner->n_ctx_pad + (size_t)(pos / ATTN_KB) * ATTN_KB) * BN_HEAD_DIM + pos % ATTN_KB;
        const size_t vb = (head * owner->n_ctx_pad + (size_t)pos) * BN_HEAD_DIM;
        const float *kg = k + g * BN_HEAD_DIM, *vg = v + g * BN_HEAD_DIM;
        if (BN_KV_TYPE == ATTN_KV_F32) {
            float *K = owner->key_cache, *V = owner->value_cache;
            for (int d = 0; d < BN_HEAD_DIM; d++) { K[kb + (size_t)d * ATTN_KB] = kg[d]; V[vb + d] = vg[d]; }
        } else if (BN_KV_TYPE == ATTN_KV_F16) {
            uint16_t *K = owner->key_cache, *V = owner->value_cache;
            for (int d = 0; d < BN_HEAD_DIM; d++) {
                K[kb + (size_t)d * ATTN_KB] = attn_f32_to_f16(kg[d]);
                V[vb + d] = attn_f32_to_f16(vg[d]);
            }
        } else {
            int8_t *K = owner->key_cache, *V = owner->value_cache;
            const size_t si = head * owner->n_ctx_pad + (size_t)pos;
            float ka = 0.0f, va = 0.0f;
            for (int d = 0; d < BN_HEAD_DIM; d++) { ka = fmaxf(ka, fabsf(kg[d])); va = fmaxf(va, fabsf(vg[d])); }
            float ks = ka / 127.0f, vs = va / 127.0f;
            owner->key_scale[si] = ks;
            owner->value_scale[si] = vs;
            for (int d = 0; d < BN_HEAD_DIM; d++) {
                K[kb + (size_t)d * ATTN_KB] = (int8_t)(ks > 0.0f ? round_half_even(kg[d] / ks) : 0.0f);
                V[vb + d] = (int8_t)(vs > 0.0f ? round_half_even(vg[d] / vs) : 0.0f);
            }
        }
    }
}

/* Layer l, KV head g of a context's cache, for the attention kernels. */
static attn_kv kv_head(const bn_context *owner, int l, int g) {
    const size_t head = (size_t)l * BN_N_HEAD_KV + g;
    const size_t e = kv_elem_bytes();
    attn_kv kv = {BN_KV_TYPE, BN_HEAD_DIM,
                  (const char *)owner->key_cache + head * owner->n_ctx_pad * BN_HEAD_DIM * e,
                  (const char *)owner->value_cache + head * owner->n_ctx_pad * BN_HEAD_DIM * e,
                  owner->key_scale ? owner->key_scale + head * owner->n_ctx_pad : NULL,
                  owner->value_scale ? owner->value_scale + head * owner->n_ctx_pad : NULL};
    return kv;
}

/* The attention of a batch as work items. Rows with the same owner form a group (a prompt
 * chunk is one group; batched decoding has one row per group). An item is (group, KV head
 * g, segment j): the group's rows times the G query heads that share g, against keys
 * [j * ATTN_SEG, (j + 1) * ATTN_SEG). Each writes per-segment partials; a second pass
 * merges them in segment order. Items are fixed by positions and handed out as tiles (any
 * free thread takes the next), so the result does not depend on the thread count. */
#define ATTN_G (BN_N_HEAD / BN_N_HEAD_KV)
typedef struct {
    bn_context *c;           /* the context whose buffers hold this batch */
    int layer;
    int n_groups;
    int row0[BN_BATCH + 1];  /* group i is rows [row0[i], row0[i + 1]) */
    int nseg[BN_BATCH];      /* segments group i's last row sees */
    int item0[BN_BATCH + 1]; /* first item of group i */
} attn_task;

static float *attn_part_at(const bn_context *c, int row, int head, int seg) {
    return c->attn_part + (((size_t)row * BN_N_HEAD + head) * c->n_seg + seg) * (BN_HEAD_DIM + 2);
}

static void attention_item(void *arg, int it, int thread) {
    attn_task *t = arg;
    bn_context *c = t->c;
    float *qbuf = c->attn_work[thread];                            /* [NQ][D] */
    float *obuf = qbuf + (size_t)ATTN_NQ_MAX * BN_HEAD_DIM;        /* [NQ][D] */
    float *mbuf = obuf + (size_t)ATTN_NQ_MAX * BN_HEAD_DIM;        /* [NQ] */
    float *lbuf = mbuf + ATTN_NQ_MAX;                              /* [NQ] */
    int *lim = (int *)(lbuf + ATTN_NQ_MAX);                        /* [NQ] */
    void *scratch = lim + ATTN_NQ_MAX;
    {
        int gi = 0;
        while (t->item0[gi + 1] <= it) gi++;
        const int local = it - t->item0[gi];
        const int g = local / t->nseg[gi], seg = local % t->nseg[gi];
        const int r0 = t->row0[gi], r1 = t->row0[gi + 1];
        int nq = 0;
        for (int r = r0; r < r1; r++)
            for (int j = 0; j < ATTN_G; j++, nq++) {
                memcpy(qbuf + (size_t)nq * BN_HEAD_DIM, c->q + (size_t)r * BN_Q_DIM + (size_t)(g * ATTN_G + j) * BN_HEAD_DIM,
                       BN_HEAD_DIM * sizeof(float));
                lim[nq] = c->row_pos[r];
            }
        attn_kv kv = kv_head(c->row_owner[r0], t->layer, g);
        attn_segment(c->attn, &kv, qbuf, lim, nq, seg * ATTN_SEG, (seg + 1) * ATTN_SEG, mbuf, lbuf, obuf, scratch);
        nq = 0;
        for (int r = r0; r < r1; r++)
            for (int j = 0; j < ATTN_G; j++, nq++) {
                float *p = attn_part_at(c, r, g * ATTN_G + j, seg);
                p[0] = mbuf[nq];
                p[1] = lbuf[nq];
                memcpy(p + 2, obuf + (size_t)nq * BN_HEAD_DIM, BN_HEAD_DIM * sizeof(float));
            }
    }
}

/* att[row][head] = the merge of the row's segments in order, divided by its sum. */
static void attention_merge_one(bn_context *c, const attn_task *t, int gi, int r, int h) {
    float *out = c->att + (size_t)r * BN_Q_DIM + (size_t)h * BN_HEAD_DIM;
    float M = -INFINITY, L = 0.0f;
    for (int d = 0; d < BN_HEAD_DIM; d++) out[d] = 0.0f;
    for (int seg = 0; seg < t->nseg[gi]; seg++) {
        const float *p = attn_part_at(c, r, h, seg);
        attn_merge(&M, &L, out, p[0], p[1], p + 2, BN_HEAD_DIM);
    }
    for (int d = 0; d < BN_HEAD_DIM; d++) out[d] /= L;
}

static void attention_merge_worker(void *arg, int ith, int nth) {
    attn_task *t = arg;
    for (int gi = 0; gi < t->n_groups; gi++)
        for (int r = t->row0[gi]; r < t->row0[gi + 1]; r++)
            for (int h = 0; h < BN_N_HEAD; h++)
                if ((r * BN_N_HEAD + h) % nth == ith) attention_merge_one(t->c, t, gi, r, h);
}

/* c->att (n, E) = causal attention of the batch's queries c->q against each row's cache. */
static void attention(bn_context *c, int layer, int n) {
    attn_task t;
    t.c = c; t.layer = layer; t.n_groups = 0;
    t.item0[0] = 0;
    for (int r = 0; r < n; ) {
        int r1 = r + 1;
        while (r1 < n && c->row_owner[r1] == c->row_owner[r]) r1++;
        int last = 0;
        for (int i = r; i < r1; i++) last = c->row_pos[i] > last ? c->row_pos[i] : last;
        t.row0[t.n_groups] = r;
        t.nseg[t.n_groups] = last / ATTN_SEG + 1;
        t.item0[t.n_groups + 1] = t.item0[t.n_groups] + BN_N_HEAD_KV * t.nseg[t.n_groups];
        t.n_groups++;
        r = r1;
    }
    t.row0[t.n_groups] = n;
    bn_pool_tiles(c->pool, t.item0[t.n_groups], attention_item, &t);
    if (n == 1) attention_merge_worker(&t, 0, 1);
    else bn_pool_run(c->pool, attention_merge_worker, &t);
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
        matmul_part qkv[3] = {{&L->wq, BN_Q_DIM, c->q, NULL}, {&L->wk, BN_KV_DIM, c->k, NULL},
                              {&L->wv, BN_KV_DIM, c->v, NULL}};
        ternary_matmul_fused(c, c->xb, n, BN_N_EMBD, BN_KP_EMBD, 0, 3, qkv);
        for (int t = 0; t < n; t++) {
            const float *cs = c->rope_cs + (size_t)t * BN_ROPE_DIM;
            if (BN_QK_NORM) {   /* Qwen3: RMSNorm of each q and k head before RoPE */
                for (int h = 0; h < BN_N_HEAD; h++) {
                    float *qh = c->q + (size_t)t * BN_Q_DIM + h * BN_HEAD_DIM;
                    rmsnorm(qh, qh, f32_at(L->attn_q_norm), BN_HEAD_DIM);
                }
                for (int h = 0; h < BN_N_HEAD_KV; h++) {
                    float *kh = c->k + (size_t)t * BN_KV_DIM + h * BN_HEAD_DIM;
                    rmsnorm(kh, kh, f32_at(L->attn_k_norm), BN_HEAD_DIM);
                }
            }
            for (int h = 0; h < BN_N_HEAD; h++) rope(c->q + (size_t)t * BN_Q_DIM + h * BN_HEAD_DIM, cs);
            for (int h = 0; h < BN_N_HEAD_KV; h++) rope(c->k + (size_t)t * BN_KV_DIM + h * BN_HEAD_DIM, cs);
            kv_store(c->row_owner[t], l, c->row_pos[t], c->k + (size_t)t * BN_KV_DIM, c->v + (size_t)t * BN_KV_DIM);
        }
        attention(c, l, n);
        if (BN_SUB_NORMS)
            rmsnorm_rows(c, c->att, c->att, f32_at(L->attn_sub_norm), n, BN_N_EMBD);
        ternary_matmul(c, c->tmp, c->att, n, BN_Q_DIM, BN_KP_Q, &L->wo, BN_N_EMBD);
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
    int tile_rows;          /* vocabulary rows per tile, a multiple of 32 */
} head_task;

static void head_worker(void *arg, int tile, int thread) {
    head_task *t = arg;
    (void)thread;
    int v0 = tile * t->tile_rows, v1 = v0 + t->tile_rows < BN_N_VOCAB ? v0 + t->tile_rows : BN_N_VOCAB;
    head_rows(&BN_WEIGHTS_INDEX.output, BN_HEAD_TYPE, t->in, t->logits, v0, v1);
}

static void compute_logits(bn_context *c, int token_in_batch, float *logits) {
    float *xn = c->xb;   /* reuse: (E) */
    rmsnorm(xn, c->x + (size_t)token_in_batch * BN_N_EMBD, f32_at(BN_WEIGHTS_INDEX.output_norm), BN_N_EMBD);
    head_prepare(&c->head_in, BN_HEAD_TYPE, xn);   /* q8/q6/q4: quantize xn once, for all threads */
    const int units = (BN_N_VOCAB + 31) / 32;
    /* work of a head row in i2s-weight equivalents: its bytes over a ternary row's (E / 4) */
    const double row_cost = BN_HEAD_TYPE == BN_MAT_F32 ? 16.0 : BN_HEAD_TYPE == BN_MAT_F16 ? 8.0
                          : BN_HEAD_TYPE == BN_MAT_Q8 ? 4.0 : BN_HEAD_TYPE == BN_MAT_Q6 ? 3.25 : 2.25;
    head_task t = {&c->head_in, logits, 32 * tile_units(units, 32.0 * BN_N_EMBD * row_cost, 1, bn_pool_size(c->pool))};
    bn_pool_tiles(c->pool, (BN_N_VOCAB + t.tile_rows - 1) / t.tile_rows, head_worker, &t);
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

/* Logits of several rows of work's batch at once: the head's rows are visited in blocks,
 * each block scored against every row's input while it is in cache (one pass over the head
 * for all rows). Each logit is the same head_rows computation as compute_logits makes. */
#define HEAD_BLOCK 32
typedef struct {
    const head_input *in;    /* (n) */
    float *logits;           /* (n, V) */
    int n;
} head_batch_task;

static void head_batch_worker(void *arg, int ith, int nth) {
    head_batch_task *t = arg;
    int chunk = (BN_N_VOCAB + nth - 1) / nth;
    int v0 = ith * chunk, v1 = v0 + chunk < BN_N_VOCAB ? v0 + chunk : BN_N_VOCAB;
    for (int b = v0; b < v1; b += HEAD_BLOCK) {
        int e = b + HEAD_BLOCK < v1 ? b + HEAD_BLOCK : v1;
        for (int i = 0; i < t->n; i++)
            head_rows(&BN_WEIGHTS_INDEX.output, BN_HEAD_TYPE, &t->in[i], t->logits + (size_t)i * BN_N_VOCAB, b, e);
    }
}

int bn_eval_rows(bn_context *work, bn_context *const *cs, const int32_t *tokens, int n,
                 const unsigned char *want_logits, float *logits) {
    if (n < 1 || n > BN_BATCH) { bn_set_error("batch of %d rows is outside 1..%d", n, BN_BATCH); return -1; }
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= BN_N_VOCAB) {
            bn_set_error("token id %d is outside the vocabulary (0..%d)", (int)tokens[i], BN_N_VOCAB - 1);
            return -1;
        }
        if (cs[i]->n_ctx > work->n_ctx) { bn_set_error("row %d has a larger context than the work context", i); return -1; }
        int pos = cs[i]->pos;
        for (int j = 0; j < i; j++) pos += cs[j] == cs[i];
        if (pos + 1 > cs[i]->n_ctx) { bn_set_error("context full for row %d", i); return -1; }
        work->row_owner[i] = cs[i];
        work->row_pos[i] = pos;
    }
    forward_rows(work, tokens, n);
    for (int i = 0; i < n; i++) cs[i]->pos++;
    if (!logits || !want_logits) return 0;
    int m = 0;
    for (int i = 0; i < n; i++) m += want_logits[i] != 0;
    if (m == 0) return 0;
    head_input *in = malloc((size_t)m * sizeof *in);
    float *xn = malloc((size_t)m * BN_N_EMBD * sizeof(float));
    if (!in || !xn) { free(in); free(xn); bn_set_error("out of memory"); return -1; }
    for (int i = 0, k = 0; i < n; i++) {
        if (!want_logits[i]) continue;
        float *x = xn + (size_t)k * BN_N_EMBD;
        rmsnorm(x, work->x + (size_t)i * BN_N_EMBD, f32_at(BN_WEIGHTS_INDEX.output_norm), BN_N_EMBD);
        head_prepare(&in[k], BN_HEAD_TYPE, x);
        k++;
    }
    head_batch_task t = {in, logits, m};
    bn_pool_run(work->pool, head_batch_worker, &t);
    free(in);
    free(xn);
    return 0;
}
