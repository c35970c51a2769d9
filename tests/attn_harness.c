/* attn_harness.c: runs the compiled-in attention loops (kernels/attn.h) on caches sent by
 * tests/test_attention.py, so each target's binary (native, qemu) can be checked against
 * the scalar variant and numpy.
 *
 *   attn_harness info   prints "pick NAME" (the start-up choice) and "have NAME" per variant
 *   attn_harness run    reads cases from stdin until EOF, answers each on stdout
 *   attn_harness f16    reads f32 values from stdin, writes attn_f32_to_f16 of each (u16)
 *                       and attn_f16_to_f32 of every one of the 65536 half bit patterns
 *   attn_harness bench NAME TYPE D NPOS NQ REPS
 *                       times attn_segment of variant NAME over a synthetic cache of NPOS
 *                       positions in ATTN_SEG segments, NQ queries seeing every key (decode
 *                       at depth NPOS for one KV head), REPS times; prints "ns_per_key_query
 *                       X" (bench/attention.py)
 *
 * A case (int32 little-endian unless said): name_len, type, D, npos, nq, s0, s1, then the
 * name (a variant of attn_ops_table, or "pick"), keys (blocked, npos * D elements of the
 * type), values (npos * D), for q8 key scales and value scales (npos f32 each), queries
 * (nq * D f32), lim (nq int32). The answer: status (0 ok, 1 unknown variant), then m[nq],
 * l[nq], o[nq][D] (f32) of one attn_segment call over [s0, s1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn.h"
#include "kernels.h"

static int read_all(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(3); }
    return p;
}

static int bench(char **a) {
    const attn_ops *ops = attn_by_name(a[0]);
    const int type = atoi(a[1]), D = atoi(a[2]), npos = atoi(a[3]), nq = atoi(a[4]), reps = atoi(a[5]);
    if (!ops || type < 0 || type > 2 || D < 1 || npos < 1 || npos % ATTN_SEG || nq < 1 || reps < 1) {
        fprintf(stderr, "bench: bad arguments (npos a multiple of %d)\n", ATTN_SEG);
        return 2;
    }
    const size_t es = type == ATTN_KV_F32 ? 4 : type == ATTN_KV_F16 ? 2 : 1, n = (size_t)npos * D;
    uint8_t *k = xmalloc(n * es), *v = xmalloc(n * es);
    float *ks = xmalloc((size_t)npos * 4), *vs = xmalloc((size_t)npos * 4), *q = xmalloc((size_t)nq * D * 4);
    int32_t *lim = xmalloc((size_t)nq * 4);
    uint32_t r = 12345;
    for (size_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u;
        const float x = (float)(int32_t)(r >> 8) * (1.0f / 8388608.0f);   /* [-1, 1) */
        if (type == ATTN_KV_F16) { ((uint16_t *)k)[i] = attn_f32_to_f16(x); ((uint16_t *)v)[i] = attn_f32_to_f16(-x); }
        else if (type == ATTN_KV_Q8) { k[i] = (uint8_t)(r >> 24); v[i] = (uint8_t)(r >> 16); }
        else { ((float *)k)[i] = x; ((float *)v)[i] = -x; }
    }
    for (int i = 0; i < npos; i++) ks[i] = vs[i] = 1.0f / 127;
    for (int i = 0; i < nq * D; i++) q[i] = (float)((i * 37) % 19 - 9) / 9.0f;
    for (int i = 0; i < nq; i++) lim[i] = npos - 1;
    float *m = xmalloc((size_t)nq * 4), *l = xmalloc((size_t)nq * 4), *o = xmalloc((size_t)nq * D * 4);
    void *scratch = xmalloc(attn_scratch_bytes(nq, D));
    attn_kv kv = {type, D, k, v, type == ATTN_KV_Q8 ? ks : NULL, type == ATTN_KV_Q8 ? vs : NULL};
    double sink = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int rep = 0; rep < reps; rep++)
        for (int s = 0; s < npos; s += ATTN_SEG) {
            attn_segment(ops, &kv, q, lim, nq, s, s + ATTN_SEG, m, l, o, scratch);
            sink += o[0];
        }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("ns_per_key_query %.4f\nsink %g\n", ns / ((double)reps * npos * nq), sink);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "info") == 0) {
        printf("pick %s\n", attn_pick()->name);
        unsigned have = kernel_cpu_features();
        for (int i = 0; i < attn_ops_table_len; i++)
            if ((attn_ops_table[i].needs & ~have) == 0) printf("have %s\n", attn_ops_table[i].name);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "f16") == 0) {
        float f;
        while (read_all(&f, 4)) { uint16_t h = attn_f32_to_f16(f); fwrite(&h, 2, 1, stdout); }
        for (uint32_t h = 0; h < 65536; h++) { float g = attn_f16_to_f32((uint16_t)h); fwrite(&g, 4, 1, stdout); }
        return 0;
    }
    if (argc == 8 && strcmp(argv[1], "bench") == 0) return bench(argv + 2);
    if (argc != 2 || strcmp(argv[1], "run") != 0) { fprintf(stderr, "usage: attn_harness info|run|f16|bench\n"); return 2; }
    int32_t h[7];
    while (read_all(h, sizeof h)) {
        int name_len = h[0], type = h[1], D = h[2], npos = h[3], nq = h[4], s0 = h[5], s1 = h[6];
        size_t es = type == ATTN_KV_F32 ? 4 : type == ATTN_KV_F16 ? 2 : 1;
        char name[64] = {0};
        if (name_len < 0 || name_len > 63 || !read_all(name, (size_t)name_len)) return 2;
        void *k = xmalloc((size_t)npos * D * es), *v = xmalloc((size_t)npos * D * es);
        float *ks = NULL, *vs = NULL;
        if (!read_all(k, (size_t)npos * D * es) || !read_all(v, (size_t)npos * D * es)) return 2;
        if (type == ATTN_KV_Q8) {
            ks = xmalloc((size_t)npos * 4); vs = xmalloc((size_t)npos * 4);
            if (!read_all(ks, (size_t)npos * 4) || !read_all(vs, (size_t)npos * 4)) return 2;
        }
        float *q = xmalloc((size_t)nq * D * 4);
        int32_t *lim = xmalloc((size_t)nq * 4);
        if (!read_all(q, (size_t)nq * D * 4) || !read_all(lim, (size_t)nq * 4)) return 2;
        const attn_ops *ops = strcmp(name, "pick") == 0 ? attn_pick() : attn_by_name(name);
        int32_t status = ops ? 0 : 1;
        fwrite(&status, 4, 1, stdout);
        if (ops) {
            float *m = xmalloc((size_t)nq * 4), *l = xmalloc((size_t)nq * 4), *o = xmalloc((size_t)nq * D * 4);
            void *scratch = xmalloc(attn_scratch_bytes(nq, D));
            memset(scratch, 0x5a, attn_scratch_bytes(nq, D));          /* garbage, as a reused buffer */
            attn_kv kv = {type, D, k, v, ks, vs};
            attn_segment(ops, &kv, q, lim, nq, s0, s1, m, l, o, scratch);
            fwrite(m, 4, (size_t)nq, stdout);
            fwrite(l, 4, (size_t)nq, stdout);
            fwrite(o, 4, (size_t)nq * D, stdout);
            free(m); free(l); free(o); free(scratch);
        }
        fflush(stdout);
        free(k); free(v); free(ks); free(vs); free(q); free(lim);
    }
    return 0;
}
