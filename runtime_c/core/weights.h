/* weights.h: where each tensor lives in the weights blob.
 *
 * The blob is one read-only byte array (embedded in the executable, or an external file
 * mapped at start-up). The generated weights_index.c says at which 64-byte-aligned offset
 * each tensor starts; nothing is copied: the model reads the blob in place.
 */
#ifndef BITNET_WEIGHTS_H
#define BITNET_WEIGHTS_H

#include <stdint.h>

#include "model_config.h"

/* Storage of a float matrix [V, E] (embedding, head): BN_EMBD_TYPE / BN_HEAD_TYPE. */
#define BN_MAT_F32 0   /* data: f32 [V][E] */
#define BN_MAT_F16 1   /* data: f16 [V][E] */
/* Quantized types (layouts in compiler/pack.py pack_matrix and head.c): EP8 = E rounded up to
 * 32, EP = E rounded up to 64 (zero padding); q4/q6 rows are pairs of 32-element blocks. */
#define BN_MAT_Q8  2   /* data: int8 [V][EP8]; scales: f32 [V] (one per row) */
#define BN_MAT_Q4  3   /* data: uint8 [V][EP/64][32], codes 0..15 = (c-8)*d; scales: f16 [V][EP/32] */
#define BN_MAT_Q6  4   /* data: uint8 [V][EP/64][48], codes 0..63 = (c-32)*d; scales: f16 [V][EP/32] */

typedef struct {
    uint64_t data;         /* see BN_MAT_* */
    uint64_t scales;       /* quantized types only */
} bn_matrix_ref;

typedef struct {
    uint64_t offset;       /* packed codes (kernel layout, see kernels/kernels.h), [M][KP/4] bytes */
    float scale;           /* per-tensor weight scale: W = codes * scale (times the group scales) */
    int group;             /* 0: one scale; else block-scaled (kernels/i2sg.h): weights per scale */
    uint64_t scales;       /* block-scaled only: f16 [M][ceil(KP / group)] */
} bn_ternary_ref;

typedef struct {
    uint64_t attn_norm;       /* f32 [E] */
    uint64_t attn_sub_norm;   /* f32 [E]  (BN_SUB_NORMS) */
    uint64_t ffn_norm;        /* f32 [E] */
    uint64_t ffn_sub_norm;    /* f32 [F]  (BN_SUB_NORMS) */
    uint64_t attn_q_norm;     /* f32 [D]  (BN_QK_NORM) */
    uint64_t attn_k_norm;     /* f32 [D]  (BN_QK_NORM) */
    bn_ternary_ref wq;        /* [H*D, E] */
    bn_ternary_ref wk;        /* [KV, E] */
    bn_ternary_ref wv;        /* [KV, E] */
    bn_ternary_ref wo;        /* [E, H*D] */
    bn_ternary_ref w_gate;    /* [F, E] */
    bn_ternary_ref w_up;      /* [F, E] */
    bn_ternary_ref w_down;    /* [E, F] */
} bn_layer_ref;

typedef struct {
    bn_matrix_ref token_embd; /* [V, E], stored as BN_EMBD_TYPE */
    bn_matrix_ref output;     /* [V, E], stored as BN_HEAD_TYPE; the same matrix when tied */
    uint64_t output_norm;     /* f32 [E] */
    uint64_t tokenizer;       /* tokenizer blob (see tokenizer.h), BN_TOKENIZER_BYTES bytes */
    bn_layer_ref layers[BN_N_LAYER];
} bn_weights_index;

extern const bn_weights_index BN_WEIGHTS_INDEX;   /* generated: weights_index.c */
/* RoPE: pair i of a head at position p turns by p * BN_ROPE_FREQ[i] radians (base, scaling
 * and rope_freqs factors included; reference.rope_frequencies), cos/sin times BN_ROPE_MSCALE. */
extern const double BN_ROPE_FREQ[BN_ROPE_DIM / 2]; /* generated: weights_index.c */
extern const char BN_WEIGHTS_SHA256[65];          /* generated: hex SHA-256 of the blob */
extern const char BN_BUILD_INFO_JSON[];           /* generated: provenance, options, hparams */

/* The blob: opened by bn_init (blob.c). */
const uint8_t *bn_blob(void);

#endif
