/* attn.h: causal attention over the KV cache, as kernels per ISA with a scalar reference.
 *
 * Cache layout, per layer and KV head (the model allocates L x HKV of these):
 *   keys    blocks of ATTN_KB positions; block b holds positions 8b..8b+7 as [D][8] (element
 *           d of position s at (s/8)*D*8 + d*8 + s%8), so one vector load reads element d of
 *           eight keys and the dot products run across keys, each summed over d in order;
 *   values  [position][D];
 *   stored as f32, f16 (IEEE half, rounded to nearest even) or q8 (int8 codes, one f32
 *   scale per position and head: x = code * scale, scale = max|x| / 127).
 *
 * Numerics (the same on every ISA, so every variant gives bit-identical results; no fused
 * multiply-add anywhere: a product is rounded, then added):
 *   score(q, s)  = (sum over d = 0..D-1, in order, of q[d] * K[s][d]) * scale_s * inv_sqrt_d
 *                  (scale_s = the key's q8 scale; 1 for f32/f16 and the product is skipped)
 *   keys are taken in chunks of ATTN_CHUNK positions; for the keys of a chunk a query sees
 *   (s <= its position): m_c = max score, e_s = attn_exp(score - m_c), l_c = sum e_s in
 *   key order, o_c[d] = sum over s in key order of (e_s * vscale_s) * V[s][d];
 *   chunks merge in order into (M, L, O) with attn_merge; a segment of ATTN_SEG positions
 *   is the unit the model splits over threads; segments merge in order the same way, and
 *   the output is O / L. The split is fixed by positions, never by the thread count.
 *   attn_exp is a float polynomial (attn_exp_f32 below) that every variant evaluates with
 *   the same operations.
 */
#ifndef BITNET_ATTN_H
#define BITNET_ATTN_H

#include <stddef.h>
#include <stdint.h>

#define ATTN_KB 8        /* key positions per block of the key cache */
#define ATTN_CHUNK 64    /* keys per softmax chunk (a multiple of ATTN_KB) */
#define ATTN_SEG 512     /* keys per segment: the unit of work split (a multiple of ATTN_CHUNK) */
#define ATTN_QB 4        /* queries per micro-kernel call (queries are padded to a multiple) */

enum { ATTN_KV_F32 = 0, ATTN_KV_F16 = 1, ATTN_KV_Q8 = 2 };

/* One KV head of one layer. */
typedef struct {
    int type;              /* ATTN_KV_* */
    int D;                 /* head dimension, a multiple of 16 */
    const void *k;         /* blocked keys (see above) */
    const void *v;         /* values [pos][D] */
    const float *ks, *vs;  /* q8: per-position key / value scales; NULL otherwise */
} attn_kv;

/* The ISA-specific inner loops. q: ATTN_QB query rows of D floats (contiguous); keys of
 * the chunk starting at position s0 (a multiple of ATTN_KB), nblk blocks.
 *   scores: S[i][j] = score(q_i, s0 + j) for j < nblk * ATTN_KB (row stride ATTN_CHUNK),
 *           including inv_sqrt_d and q8 key scales;
 *   pv:     o[i][d] = sum over j < n (key order) of p[i][j] * V[s0 + j][d] for each of
 *           the ATTN_QB queries, p row stride ATTN_CHUNK, o row stride D (p already holds
 *           e_s * vscale_s);
 *   exp:    x[i] = attn_exp_f32(x[i]) for i < n (n a multiple of 8). */
typedef struct {
    const char *name;      /* "avx2", "neon", "scalar" */
    unsigned needs;        /* KCPU_* bits (kernels.h) */
    void (*scores)(const attn_kv *kv, const float *q, int s0, int nblk, float inv_sqrt_d, float *S);
    void (*pv)(const attn_kv *kv, const float *p, int s0, int n, float *o);
    void (*exp)(float *x, int n);
} attn_ops;

void attn_scores_scalar(const attn_kv *kv, const float *q, int s0, int nblk, float inv_sqrt_d, float *S);
void attn_pv_scalar(const attn_kv *kv, const float *p, int s0, int n, float *o);
void attn_exp_scalar(float *x, int n);
void attn_scores_avx2(const attn_kv *kv, const float *q, int s0, int nblk, float inv_sqrt_d, float *S);
void attn_pv_avx2(const attn_kv *kv, const float *p, int s0, int n, float *o);
void attn_exp_avx2(float *x, int n);
void attn_scores_neon(const attn_kv *kv, const float *q, int s0, int nblk, float inv_sqrt_d, float *S);
void attn_pv_neon(const attn_kv *kv, const float *p, int s0, int n, float *o);
void attn_exp_neon(float *x, int n);

extern const attn_ops attn_ops_table[];   /* fastest first, scalar last (dispatch.c) */
extern const int attn_ops_table_len;
const attn_ops *attn_pick(void);           /* fastest variant this CPU runs */
const attn_ops *attn_by_name(const char *name);

/* Scratch bytes one attn_segment call needs for nq queries (any alignment). */
size_t attn_scratch_bytes(int nq, int D);

/* One segment [s0, s1) of keys for nq queries (q: [nq][D], contiguous), query i seeing
 * keys s <= lim[i] (lim[i] < s0: none). Writes per query the partial result relative to
 * its own maximum: m[i] (-INFINITY when it saw no key), l[i], o[i][D] (unnormalised). */
void attn_segment(const attn_ops *ops, const attn_kv *kv, const float *q, const int *lim, int nq,
                  int s0, int s1, float *m, float *l, float *o, void *scratch);

/* (M, L, O) <- the merge of itself with a later part (m, l, o), in that order. A part with
 * m = -INFINITY is empty. */
void attn_merge(float *M, float *L, float *O, float m, float l, const float *o, int D);

/* e^x for x <= 0 in float: x clamped to -87, x = k ln2 + r, e^r by its degree-7 Taylor
 * polynomial (Horner), times 2^k from the exponent bits. Within 2 ulp; every ISA's exp
 * performs these operations in this order. */
static inline float attn_exp_f32(float x) {
    x = x < -87.0f ? -87.0f : x;
    float kf = (x * 1.44269504f + 12582912.0f) - 12582912.0f;   /* round to nearest, ties even */
    float r = (x - kf * 0.693359375f) - kf * -2.12194440e-4f;
    float p = 1.98412698e-4f;           /* 1/7! */
    p = p * r + 1.38888889e-3f;         /* 1/6! */
    p = p * r + 8.33333333e-3f;
    p = p * r + 4.16666667e-2f;
    p = p * r + 1.66666667e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { uint32_t u; float f; } s = {(uint32_t)((int32_t)kf + 127) << 23};
    return p * s.f;
}

/* IEEE half <-> float, portable (f16 -> f32 is exact; f32 -> f16 rounds to nearest even,
 * as F16C's vcvtps2ph with mode 0 and numpy's astype(float16)). */
static inline float attn_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, mant = h & 0x3ff;
    union { uint32_t u; float f; } v;
    if (e == 0) {                                   /* zero or subnormal: mant * 2^-24 */
        v.f = (float)mant * 5.9604644775390625e-8f;
        v.u |= sign;
    } else if (e == 31) {
        v.u = sign | 0x7f800000u | (mant << 13);
    } else {
        v.u = sign | ((e + 112) << 23) | (mant << 13);
    }
    return v.f;
}

static inline uint16_t attn_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t sign = (v.u >> 16) & 0x8000, a = v.u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);          /* rounds past 65504: inf */
    if (a < 0x38800000u) {                                             /* below 2^-14: subnormal */
        union { uint32_t u; float f; } t = {a};
        /* t * 2^24 rounded to an integer (ties even) by the FPU, via the 1.5 * 2^23 shifter */
        float m = (t.f * 16777216.0f + 12582912.0f) - 12582912.0f;
        return (uint16_t)(sign | (uint16_t)(int)m);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);                         /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

/* One output column d of pv for the four queries (a SIMD variant's last columns when the head
 * dim is not a multiple of 4): o[i][d] = sum over keys j in order of p[i][j] * v[j][d], the
 * same products and sums as attn_scalar.c. */
static inline void attn_pv_column(const attn_kv *kv, const float *p, int s0, int n, float *o, int d) {
    const int D = kv->D;
    for (int i = 0; i < ATTN_QB; i++) {
        float acc = 0.0f;
        for (int j = 0; j < n; j++) {
            const size_t at = (size_t)(s0 + j) * D + d;
            const float v = kv->type == ATTN_KV_F16 ? attn_f16_to_f32(((const uint16_t *)kv->v)[at])
                          : kv->type == ATTN_KV_Q8 ? (float)((const int8_t *)kv->v)[at] : ((const float *)kv->v)[at];
            acc += p[i * ATTN_CHUNK + j] * v;
        }
        o[(size_t)i * D + d] = acc;
    }
}

#endif
