/* head.h: the output head's row kernels, logits[v] = dot(head[v], x) over a [V, E] matrix,
 * one variant per ISA in the dispatch table like the ternary kernels (dispatch.c).
 *
 * Float heads (f32, f16): float dot products with x. Integer heads (q8, q6, q4; layouts in
 * ../weights.h and compiler/pack.py pack_matrix) read the head's input quantized once per
 * token into 32-element blocks (head_xq; ../head.c head_prepare). Per row and block b, the
 * integer dot isum_b = sum(code * xq) is exact; the block's float term is dx_b * isum_b (q8,
 * whose one row scale multiplies the total) or (dw_b * dx_b) * isum_b (q6, q4, with the f16
 * block scale dw_b). Term b is added to float lane b % 8 of eight partial sums, which are
 * summed as ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)): every variant does exactly these
 * operations (no FMA), so every CPU gives bit-identical integer-head logits, and
 * compiler/reference.py quantized_head computes the same.
 *
 * q4/q6 rows are stored as pairs of blocks (A = elements 64p..64p+31, B = the next 32):
 *   32 bytes: low 4 bits of A[k] in the low nibble, of B[k] in the high nibble (k = 0..31)
 *   q6 only, 16 bytes: byte j = high 2 bits of A[j] | A[j+16] << 2 | B[j] << 4 | B[j+16] << 6
 * Codes are unsigned (c = value + 32 for q6, + 8 for q4); the offset comes off as
 * 32 * sum(xq) or 8 * sum(xq) (head_xq.sum). q8 codes are signed.
 *
 * Each row is summed by one thread in a fixed order, so results do not depend on the thread
 * count (a float head's sum order is the variant's own: f16/f32 logits may differ between
 * ISAs in the last bits, never between thread counts).
 */
#ifndef BITNET_HEAD_KERNELS_H
#define BITNET_HEAD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Row sizes of a [V, E] matrix (E = n_embd). The macros are for array bounds (model_internal.h
 * sizes the quantized input with them); the functions are the same numbers. */
#define HEAD_XP_OF(E) (((E) + 63) / 64 * 64)   /* E padded to whole pairs of blocks */
#define HEAD_NB_OF(E) (HEAD_XP_OF(E) / 32)     /* 32-element blocks */
static inline int head_xp(int E) { return HEAD_XP_OF(E); }
static inline int head_nb(int E) { return HEAD_NB_OF(E); }
static inline int head_q8_row(int E) { return (E + 31) / 32 * 32; } /* q8 bytes per row */
static inline int head_q6_row(int E) { return head_xp(E) / 64 * 48; }
static inline int head_q4_row(int E) { return head_xp(E) / 64 * 32; }

/* The quantized input of the integer heads: head_nb(E) blocks of 32. */
typedef struct {
    const int8_t *q;       /* (head_xp(E)) round(x / d) per block; zero padding */
    const float *d;        /* (head_nb(E)) block scales */
    const int32_t *sum;    /* (head_nb(E)) sum of each block's q */
} head_xq;

typedef void (*head_rows_f32_fn)(const float *m, const float *x, float *logits, int E, int v0, int v1);
typedef void (*head_rows_f16_fn)(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1);
typedef void (*head_rows_q8_fn)(const int8_t *q, const float *d, const head_xq *in, float *logits,
                                int E, int v0, int v1);
typedef void (*head_rows_qk_fn)(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits,
                                int E, int v0, int v1);
typedef struct {
    const char *name;      /* "avx2", ... "portable" */
    unsigned needs;        /* KCPU_* bits */
    head_rows_f32_fn f32;
    head_rows_f16_fn f16;
    head_rows_q8_fn q8;
    head_rows_qk_fn q6, q4;
} head_ops;

extern const head_ops head_ops_table[];   /* fastest first, portable last (dispatch.c) */
extern const int head_ops_table_len;
const head_ops *head_pick(void);              /* for this CPU ($BN_HEAD_VARIANT: a named one it has) */
const head_ops *head_pick_for(unsigned have); /* the fastest needing only the KCPU_* bits `have` */

/* head_portable.c: the f16 -> f32 table (every bit pattern, filled by head_tables_init, once
 * before any thread runs), the portable rows, and the block terms the SIMD rows use for the
 * blocks past their last whole group of eight. */
extern float head_f16_table[65536];
void head_tables_init(void);
float head_lanes_sum(const float l[8]);
float head_q8_term(const int8_t *row, const head_xq *in, int b);
float head_q6_term(const uint8_t *row, const uint16_t *dw, const head_xq *in, int b);
float head_q4_term(const uint8_t *row, const uint16_t *dw, const head_xq *in, int b);

void head_f32_portable(const float *m, const float *x, float *logits, int E, int v0, int v1);
void head_f16_portable(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1);
void head_q8_portable(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q6_portable(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q4_portable(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
/* head_avx2.c (AVX2 + F16C + FMA), head_avxvnni.c, head_avx512.c */
void head_f32_avx2(const float *m, const float *x, float *logits, int E, int v0, int v1);
void head_f16_avx2(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1);
void head_q8_avx2(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q6_avx2(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q4_avx2(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q8_avxvnni(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q6_avxvnni(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q4_avxvnni(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_f16_avx512(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1);
void head_q8_avx512(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q6_avx512(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q4_avx512(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
/* head_neon.c (baseline AArch64 NEON), head_neon_dotprod.c (+dotprod) */
void head_f32_neon(const float *m, const float *x, float *logits, int E, int v0, int v1);
void head_f16_neon(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1);
void head_q8_neon(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q6_neon(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q4_neon(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q8_neon_dotprod(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1);
void head_q6_neon_dotprod(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0,
                          int v1);
void head_q4_neon_dotprod(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0,
                          int v1);

#endif
