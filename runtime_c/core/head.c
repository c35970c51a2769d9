/* head.c: the output head, logits[v] = dot(head[v], x) over a [V, E] matrix, and the
 * embedding lookup (one row of such a matrix as floats).
 *
 * For a tied 2B-4T model the head reads 128256 x 2560 values per token, more bytes than all
 * ternary layers together, so its rows are kernels with a variant per ISA, picked at start-up
 * from the dispatch table like the ternary kernels (kernels/head.h, kernels/dispatch.c).
 * This file prepares their input and hands them the rows of the model's head matrix.
 *
 * Integer heads (q8, q6, q4): head_prepare quantizes x once per token into 32-element
 * blocks, xq = round(x / dx) with dx = max|block| / 127; the rows' numerics are in
 * kernels/head.h (bit-identical logits on every CPU; compiler/reference.py quantized_head
 * computes the same).
 */
#include "model_internal.h"

#include <math.h>
#include <string.h>

#include "kernels/head.h"

static const head_ops *head_kernels;

void head_init(void) {
    head_tables_init();
    if (!head_kernels) head_kernels = head_pick();
}

/* ---- the integer heads' input ---- */

/* Round to nearest, ties to even, for |v| < 2^22 (as model.c; np.rint). */
static float round_half_even(float v) {
    const float big = 12582912.0f;   /* 1.5 * 2^23 */
    return (v + big) - big;
}

void head_prepare(head_input *in, int type, const float *x) {
    in->x = x;
    if (type != BN_MAT_Q8 && type != BN_MAT_Q6 && type != BN_MAT_Q4) return;
    for (int b = 0; b < HEAD_NB; b++) {
        int n = BN_N_EMBD - b * 32;          /* elements of x in this block */
        n = n < 0 ? 0 : n > 32 ? 32 : n;
        float amax = 0.0f;
        for (int i = 0; i < n; i++) { float a = fabsf(x[b * 32 + i]); if (a > amax) amax = a; }
        float d = amax / 127.0f;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            int q = 0;
            if (i < n && d > 0.0f) {
                float r = round_half_even(x[b * 32 + i] / d);
                q = r > 127.0f ? 127 : r < -127.0f ? -127 : r == r ? (int)r : 0;
            }
            in->q[b * 32 + i] = (int8_t)q;
            sum += q;
        }
        in->d[b] = d;
        in->sum[b] = sum;
    }
}

/* logits[v] for v in [v0, v1): m is a [V, E] matrix stored as `type` (BN_MAT_*). */
void head_rows(const bn_matrix_ref *m, int type, const head_input *in, float *logits, int v0, int v1) {
    head_rows_with(head_kernels, m, type, in, logits, v0, v1);
}

void head_rows_with(const head_ops *k, const bn_matrix_ref *m, int type, const head_input *in, float *logits,
                    int v0, int v1) {
    const uint8_t *data = bn_blob() + m->data;
    const void *scales = bn_blob() + m->scales;
    const head_xq xq = {in->q, in->d, in->sum};
    switch (type) {
    case BN_MAT_F16: k->f16((const uint16_t *)data, in->x, logits, BN_N_EMBD, v0, v1); return;
    case BN_MAT_Q8: k->q8((const int8_t *)data, scales, &xq, logits, BN_N_EMBD, v0, v1); return;
    case BN_MAT_Q6: k->q6(data, scales, &xq, logits, BN_N_EMBD, v0, v1); return;
    case BN_MAT_Q4: k->q4(data, scales, &xq, logits, BN_N_EMBD, v0, v1); return;
    default: k->f32((const float *)data, in->x, logits, BN_N_EMBD, v0, v1); return;
    }
}

/* One row of a [V, E] matrix as f32: the embedding lookup. */
void matrix_row(float *out, const bn_matrix_ref *m, int type, int row) {
    const uint8_t *data = bn_blob() + m->data;
    switch (type) {
    case BN_MAT_F16: {
        const uint16_t *p = (const uint16_t *)data + (size_t)row * BN_N_EMBD;
        for (int i = 0; i < BN_N_EMBD; i++) out[i] = head_f16_table[p[i]];
        return;
    }
    case BN_MAT_Q8: {
        const int8_t *p = (const int8_t *)data + (size_t)row * head_q8_row(BN_N_EMBD);
        const float d = ((const float *)(bn_blob() + m->scales))[row];
        for (int i = 0; i < BN_N_EMBD; i++) out[i] = (float)p[i] * d;
        return;
    }
    case BN_MAT_Q6:
    case BN_MAT_Q4: {
        const int six = type == BN_MAT_Q6, off = six ? 32 : 8;
        const uint8_t *p = data + (size_t)row * (six ? head_q6_row(BN_N_EMBD) : head_q4_row(BN_N_EMBD));
        const uint16_t *dw = (const uint16_t *)(bn_blob() + m->scales) + (size_t)row * HEAD_NB;
        for (int i = 0; i < BN_N_EMBD; i++) {
            const int b = i / 32, k = i % 32, sh = 4 * (b & 1);
            const uint8_t *pair = p + (b >> 1) * (six ? 48 : 32);
            int c = (pair[k] >> sh) & 15;
            if (six) c |= ((pair[32 + (k & 15)] >> (sh + 2 * (k >> 4))) & 3) << 4;
            out[i] = (float)(c - off) * head_f16_table[dw[b]];
        }
        return;
    }
    default:
        memcpy(out, (const float *)data + (size_t)row * BN_N_EMBD, BN_N_EMBD * sizeof(float));
        return;
    }
}
