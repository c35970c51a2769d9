/* attn_scalar.c: the attention inner loops in plain C, the reference every ISA variant
 * must equal bit for bit (numerics and cache layout in attn.h). Runs on any CPU. */
#include "attn.h"

/* Element d of key s (before its q8 scale) and element d of value s, as float. */
static float key_at(const attn_kv *kv, int s, int d) {
    size_t i = (size_t)(s / ATTN_KB) * kv->D * ATTN_KB + (size_t)d * ATTN_KB + s % ATTN_KB;
    if (kv->type == ATTN_KV_F16) return attn_f16_to_f32(((const uint16_t *)kv->k)[i]);
    if (kv->type == ATTN_KV_Q8) return (float)((const int8_t *)kv->k)[i];
    return ((const float *)kv->k)[i];
}

static float value_at(const attn_kv *kv, int s, int d) {
    size_t i = (size_t)s * kv->D + d;
    if (kv->type == ATTN_KV_F16) return attn_f16_to_f32(((const uint16_t *)kv->v)[i]);
    if (kv->type == ATTN_KV_Q8) return (float)((const int8_t *)kv->v)[i];
    return ((const float *)kv->v)[i];
}

void attn_scores_scalar(const attn_kv *kv, const float *q, int s0, int nblk, float inv_sqrt_d, float *S) {
    const int D = kv->D;
    for (int i = 0; i < ATTN_QB; i++) {
        for (int j = 0; j < nblk * ATTN_KB; j++) {
            float acc = 0.0f;
            for (int d = 0; d < D; d++) acc += q[(size_t)i * D + d] * key_at(kv, s0 + j, d);
            if (kv->type == ATTN_KV_Q8) acc *= kv->ks[s0 + j];
            S[i * ATTN_CHUNK + j] = acc * inv_sqrt_d;
        }
    }
}

void attn_pv_scalar(const attn_kv *kv, const float *p, int s0, int n, float *o) {
    const int D = kv->D;
    for (int i = 0; i < ATTN_QB; i++) {
        float *oi = o + (size_t)i * D;
        for (int d = 0; d < D; d++) oi[d] = 0.0f;
        for (int j = 0; j < n; j++) {
            float w = p[i * ATTN_CHUNK + j];
            for (int d = 0; d < D; d++) oi[d] += w * value_at(kv, s0 + j, d);
        }
    }
}

void attn_exp_scalar(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = attn_exp_f32(x[i]);
}
