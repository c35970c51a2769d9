/* model_internal.h: what the runtime's files share and the public API does not show. */
#ifndef BITNET_MODEL_INTERNAL_H
#define BITNET_MODEL_INTERNAL_H

#include <stdint.h>

#include "model_config.h"
#include "threads.h"
#include "weights.h"
#include "kernels/kernels.h"
#include "kernels/attn.h"
#include "kernels/head.h"

#define KP_MAX_EF (BN_KP_FF > BN_KP_EMBD ? BN_KP_FF : BN_KP_EMBD)
#define KP_MAX (BN_KP_Q > KP_MAX_EF ? BN_KP_Q : KP_MAX_EF)
/* integer results of one fused matmul per batch row: q|k|v (E + 2 KV) or gate|up (2 F) */
#define ACC_QKV (BN_Q_DIM + 2 * BN_KV_DIM)
#define ACC_MAX (2 * BN_N_FF > ACC_QKV ? 2 * BN_N_FF : ACC_QKV)

/* The input of the integer heads (q8, q6, q4; head.c): the head's input vector quantized
 * once per token, before the threads split the rows, in 32-element blocks (Q8_0 style). */
#define HEAD_XP HEAD_XP_OF(BN_N_EMBD)   /* E padded to whole pairs of blocks (kernels/head.h) */
#define HEAD_NB HEAD_NB_OF(BN_N_EMBD)   /* blocks */
typedef struct {
    const float *x;          /* (E) the normed final hidden state (the float heads use it) */
    int8_t q[HEAD_XP];       /* (HEAD_XP) round(x / d) per block, half to even; zero padding */
    float d[HEAD_NB];        /* (HEAD_NB) block scales max|block| / 127 (0: an all-zero block) */
    int32_t sum[HEAD_NB];    /* (HEAD_NB) sum of each block's q (offsets of unsigned codes) */
} head_input;

struct bn_context {
    int n_ctx;               /* KV cache capacity, tokens */
    int n_threads;
    const ternary_kernel *kernel;   /* best variant of BN_KERNEL_LAYOUT for this CPU */
    const grouped_kernel *gkernel;  /* best block-scaled variant (BN_GROUPED models) */
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
    const attn_ops *attn;    /* attention inner loops for this CPU (kernels/attn.h) */
    void **attn_work;        /* (n_threads) per-thread attention buffers (attn_work_bytes) */
    float *attn_part;        /* (BN_BATCH, H, n_seg, D + 2) per-segment partial results: m, l, o[D] */
    int n_seg;               /* segments of ATTN_SEG positions in n_ctx */

    struct bn_context *row_owner[BN_BATCH];  /* sequence of each batch row (itself, or others in bn_eval_batch) */
    int row_pos[BN_BATCH];   /* position of each batch row in its sequence */
    float rope_cs[BN_BATCH * BN_ROPE_DIM];  /* (BN_BATCH, ROPE_DIM/2, 2) cos/sin of each row's position */
    head_input head_in;      /* the head's input of the token being scored, quantized (head.c) */

    /* KV cache, BN_KV_TYPE elements (kernels/attn.h: f32, f16 or q8), reserved up front and
     * touched only as positions fill; per layer and KV head n_ctx_pad positions:
     * keys in blocks of ATTN_KB positions ([D][8] each), values [pos][D]. */
    int n_ctx_pad;           /* n_ctx rounded up to ATTN_CHUNK */
    size_t kv_bytes;         /* bytes of each of key_cache, value_cache */
    void *key_cache;         /* (L, HKV, n_ctx_pad, D) blocked */
    void *value_cache;       /* (L, HKV, n_ctx_pad, D) */
    float *key_scale;        /* (L, HKV, n_ctx_pad) q8 scales, else NULL */
    float *value_scale;      /* (L, HKV, n_ctx_pad) */

    /* sampling state of the last bn_generate */
    int last_n_prompt, last_n_gen;
    double last_t_prompt, last_t_gen;
};

/* head.c: the output head and embedding rows */
void head_init(void);
/* Set in->x = x and, for the integer head types, quantize x into in (once per token). */
void head_prepare(head_input *in, int type, const float *x);
/* logits[v] = dot(row v of m, x) for v in [v0, v1); m stored as `type` (BN_MAT_*), its
 * input prepared by head_prepare. Bit-identical results on every CPU and thread split. */
void head_rows(const bn_matrix_ref *m, int type, const head_input *in, float *logits, int v0, int v1);
/* The same with the rows of head variant k (tests/head_harness.c runs a named one). */
void head_rows_with(const head_ops *k, const bn_matrix_ref *m, int type, const head_input *in, float *logits,
                    int v0, int v1);
/* One row of m as f32 (embedding lookup). */
void matrix_row(float *out, const bn_matrix_ref *m, int type, int row);

/* Record the message bn_last_error() returns (printf-style). */
void bn_set_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
