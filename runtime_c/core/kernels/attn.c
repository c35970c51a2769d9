/* attn.c: the attention driver shared by every ISA: one segment of keys for a set of
 * queries, chunk by chunk (scores, softmax of the chunk, weighted values, merge), calling
 * the ISA's inner loops (attn_ops). Numerics in attn.h. */
#include "attn.h"

#include <math.h>
#include <string.h>

size_t attn_scratch_bytes(int nq, int D) {
    (void)nq;
    /* scores S and weights P [QB][CHUNK], chunk output o_c [QB][D], padded queries [QB][D],
     * plus 64 bytes of alignment slack */
    return (size_t)(2 * ATTN_QB * ATTN_CHUNK + 2 * ATTN_QB * D) * sizeof(float) + 64;
}

void attn_merge(float *M, float *L, float *O, float m, float l, const float *o, int D) {
    if (m == -INFINITY) return;
    if (*M == -INFINITY) {
        *M = m; *L = l;
        memcpy(O, o, (size_t)D * sizeof(float));
        return;
    }
    float mn = m > *M ? m : *M;
    float a = attn_exp_f32(*M - mn), b = attn_exp_f32(m - mn);
    *L = *L * a + l * b;
    for (int d = 0; d < D; d++) O[d] = O[d] * a + o[d] * b;
    *M = mn;
}

void attn_segment(const attn_ops *ops, const attn_kv *kv, const float *q, const int *lim, int nq,
                  int s0, int s1, float *m, float *l, float *o, void *scratch) {
    const int D = kv->D;
    const float inv_sqrt_d = 1.0f / sqrtf((float)D);
    float *S = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);   /* [QB][CHUNK] */
    float *P = S + ATTN_QB * ATTN_CHUNK;                                 /* [QB][CHUNK] */
    float *oc = P + ATTN_QB * ATTN_CHUNK;                                /* [QB][D] */
    float *qpad = oc + ATTN_QB * D;                                      /* [QB][D] */
    for (int i = 0; i < nq; i++) { m[i] = -INFINITY; l[i] = 0.0f; }
    memset(o, 0, (size_t)nq * D * sizeof(float));
    for (int g = 0; g < nq; g += ATTN_QB) {
        const int nqg = nq - g < ATTN_QB ? nq - g : ATTN_QB;
        const float *qg = q + (size_t)g * D;
        if (nqg < ATTN_QB) {             /* pad the last group with zero queries (discarded) */
            memset(qpad, 0, (size_t)ATTN_QB * D * sizeof(float));
            memcpy(qpad, qg, (size_t)nqg * D * sizeof(float));
            qg = qpad;
        }
        int see = -1;                    /* the last key any query of the group sees */
        for (int i = 0; i < nqg; i++) see = lim[g + i] > see ? lim[g + i] : see;
        const int end = see + 1 < s1 ? see + 1 : s1;
        for (int c0 = s0; c0 < end; c0 += ATTN_CHUNK) {
            const int c1 = c0 + ATTN_CHUNK < end ? c0 + ATTN_CHUNK : end;
            const int n = c1 - c0, nblk = (n + ATTN_KB - 1) / ATTN_KB;
            ops->scores(kv, qg, c0, nblk, inv_sqrt_d, S);
            for (int i = 0; i < ATTN_QB; i++) {
                float *Si = S + i * ATTN_CHUNK, *Pi = P + i * ATTN_CHUNK;
                const int nv = i < nqg ? (lim[g + i] - c0 + 1 < n ? lim[g + i] - c0 + 1 : n) : 0;
                float mc = -INFINITY;
                for (int j = 0; j < nv; j++) mc = Si[j] > mc ? Si[j] : mc;
                for (int j = 0; j < nblk * ATTN_KB; j++) Pi[j] = j < nv ? Si[j] - mc : -87.0f;
            }
            ops->exp(P, ATTN_QB * ATTN_CHUNK);
            for (int i = 0; i < ATTN_QB; i++) {
                float *Pi = P + i * ATTN_CHUNK, *Si = S + i * ATTN_CHUNK;
                const int nv = i < nqg ? (lim[g + i] - c0 + 1 < n ? lim[g + i] - c0 + 1 : n) : 0;
                float lc = 0.0f, mc = -INFINITY;
                for (int j = 0; j < nv; j++) { lc += Pi[j]; mc = Si[j] > mc ? Si[j] : mc; }
                for (int j = nv; j < ATTN_CHUNK; j++) Pi[j] = 0.0f;      /* keys it does not see */
                if (kv->type == ATTN_KV_Q8)
                    for (int j = 0; j < nv; j++) Pi[j] *= kv->vs[c0 + j];
                Si[0] = mc;  /* keep the chunk maximum and sum for the merge */
                Si[1] = lc;
            }
            ops->pv(kv, P, c0, n, oc);
            for (int i = 0; i < nqg; i++)
                attn_merge(&m[g + i], &l[g + i], o + (size_t)(g + i) * D, S[i * ATTN_CHUNK], S[i * ATTN_CHUNK + 1],
                           oc + (size_t)i * D, D);
        }
    }
}
