/* model_internal.h: what the runtime's files share and the public API does not show. */
#ifndef BITNET_MODEL_INTERNAL_H
#define BITNET_MODEL_INTERNAL_H

#include <stdint.h>

#include "model_config.h"
#include "threads.h"
#include "weights.h"
#include "kernels/kernels.h"

#define KP_MAX (BN_KP_FF > BN_KP_EMBD ? BN_KP_FF : BN_KP_EMBD)
/* integer results of one fused matmul per batch row: q|k|v (E + 2 KV) or gate|up (2 F) */
#define ACC_QKV (BN_N_EMBD + 2 * BN_KV_DIM)
#define ACC_MAX (2 * BN_N_FF > ACC_QKV ? 2 * BN_N_FF : ACC_QKV)

struct bn_context {
    int n_ctx;               /* KV cache capacity, tokens */
    int n_threads;
    const ternary_kernel *kernel;   /* best variant of BN_KERNEL_LAYOUT for this CPU */
    void **scratch;          /* (n_threads) kernel scratch (lookup tables), or NULL */
    int pos;                 /* tokens already in the cache */
    bn_pool *pool;

    /* activations for a batch of up to BN_BATCH tokens */
    float *x;                /* (BN_BATCH, E) residual stream */
    float *xb;               /* (BN_BATCH, E) normed input of a block */
    float *q;                /* (BN_BATCH, E) queries */
    float *k;                /* (BN_BATCH, KV) new keys */
    float *v;                /* (BN_BATCH, KV) new values */
    float *att;              /* (BN_BATCH, E) attention output */
    float *hg;               /* (BN_BATCH, F) gate, then the FFN hidden state */
    float *hu;               /* (BN_BATCH, F) up */
    float *tmp;              /* (BN_BATCH, E) projection output before the residual add */
    int8_t *xq;              /* (BN_BATCH, KP_MAX) int8 activations, zero-padded */
    float *xscale;           /* (BN_BATCH) per-token activation scale `as` */
    int32_t *acc;            /* (BN_BATCH * ACC_MAX) integer matmul results: per fused matrix p, an (n, M_p) block */
    float *scores;           /* (n_threads, n_ctx) attention scores, one row per thread */

    struct bn_context *row_owner[BN_BATCH];  /* sequence of each batch row (itself, or others in bn_eval_batch) */
    int row_pos[BN_BATCH];   /* position of each batch row in its sequence */
    float rope_cs[BN_BATCH * BN_ROPE_DIM];  /* (BN_BATCH, ROPE_DIM/2, 2) cos/sin of each row's position */

    float *key_cache;        /* (L, n_ctx, KV) */
    float *value_cache;      /* (L, n_ctx, KV) */

    /* sampling state of the last bn_generate */
    int last_n_prompt, last_n_gen;
    double last_t_prompt, last_t_gen;
};

/* head.c: the output head and embedding rows */
void head_init(void);
/* logits[v] = dot(row v of m, x) for v in [v0, v1); m stored as `type` (BN_MAT_*). */
void head_rows(const bn_matrix_ref *m, int type, const float *x, float *logits, int v0, int v1);
/* One row of m as f32 (embedding lookup). */
void matrix_row(float *out, const bn_matrix_ref *m, int type, int row);

/* Record the message bn_last_error() returns (printf-style). */
void bn_set_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
