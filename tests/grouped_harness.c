/* grouped_harness.c: runs the compiled-in block-scaled kernels (runtime_c/core/kernels/i2sg.h)
 * on matrices sent by tests/test_block_scaled.py, so every variant is checked bit for bit
 * against the numpy reference (compiler/reference.py: grouped_sums).
 *
 *   grouped_harness info   prints "have <name>" for each variant this CPU can run, and
 *                          "pick <name>" for the one the start-up dispatch chooses
 *   grouped_harness run    reads cases from stdin until EOF, answers each on stdout
 *
 * A case (int32 little-endian): name_len, G, M, KP, N, nsplit, then name, splits[nsplit + 1],
 * w (M * KP / 4 bytes), d (ceil(M / 4) * 4 * ceil(KP / G) uint16), x (N * KP int8). The answer: status
 * (0 ok, 1 unknown kernel, 2 a call wrote outside its rows), then y_gemv[N][M] (one call per
 * token and row range) and y_gemm[N][M] (one call per row range), float32.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static int read_all(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(3); }
    return p;
}

#define SENTINEL 0x7fc0dead   /* a NaN bit pattern no kernel writes */

static int take_rows(float *y, const float *tmp, int N, int M, int rb, int re) {
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int r = 0; r < M; r++) {
            uint32_t bits;
            memcpy(&bits, &tmp[(size_t)n * M + r], 4);
            if (r >= rb && r < re) y[(size_t)n * M + r] = tmp[(size_t)n * M + r];
            else if (bits != SENTINEL) bad = 1;
        }
    return bad;
}

static void fill_sentinel(float *t, size_t n) {
    const uint32_t s = SENTINEL;
    for (size_t i = 0; i < n; i++) memcpy(&t[i], &s, 4);
}

static int run_case(void) {
    int32_t h[6];
    if (!read_all(h, sizeof h)) return 0;
    const int name_len = h[0], G = h[1], M = h[2], KP = h[3], N = h[4], nsplit = h[5];
    const size_t ng = (size_t)(KP + G - 1) / G, wbytes = (size_t)M * KP / 4;
    char name[64] = {0};
    int32_t *splits = xmalloc(sizeof(int32_t) * (nsplit + 1));
    uint8_t *w = xmalloc(wbytes);
    const size_t nd = (size_t)(M + 3) / 4 * 4 * ng;   /* scales, in 4-row tiles */
    uint16_t *d = xmalloc(sizeof(uint16_t) * nd);
    int8_t *x = xmalloc((size_t)N * KP);
    if (name_len >= (int)sizeof name || !read_all(name, name_len) ||
        !read_all(splits, sizeof(int32_t) * (nsplit + 1)) || !read_all(w, wbytes) ||
        !read_all(d, sizeof(uint16_t) * nd) || !read_all(x, (size_t)N * KP)) {
        fprintf(stderr, "truncated case\n");
        exit(4);
    }
    const size_t ny = (size_t)N * M;
    float *y1 = xmalloc(ny * 4), *y2 = xmalloc(ny * 4), *tmp = xmalloc(ny * 4);
    memset(y1, 0, ny * 4);
    memset(y2, 0, ny * 4);
    int32_t status = 0;
    const grouped_kernel *k = grouped_kernel_by_name(name);
    if (!k) {
        status = 1;
    } else {
        for (int s = 0; s < nsplit; s++) {
            const int rb = splits[s], re = splits[s + 1];
            fill_sentinel(tmp, ny);
            for (int n = 0; n < N; n++)
                k->gemv(w, d, G, x + (size_t)n * KP, tmp + (size_t)n * M, KP, rb, re);
            status |= take_rows(y1, tmp, N, M, rb, re) ? 2 : 0;
            fill_sentinel(tmp, ny);
            k->gemm(w, d, G, x, tmp, N, M, KP, rb, re);
            status |= take_rows(y2, tmp, N, M, rb, re) ? 2 : 0;
        }
    }
    fwrite(&status, 4, 1, stdout);
    fwrite(y1, 4, ny, stdout);
    fwrite(y2, 4, ny, stdout);
    free(splits); free(w); free(d); free(x); free(y1); free(y2); free(tmp);
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "info") == 0) {
        const unsigned have = kernel_cpu_features();
        for (int i = 0; i < grouped_kernel_table_len; i++)
            if ((grouped_kernel_table[i].needs & ~have) == 0) printf("have %s\n", grouped_kernel_table[i].name);
        printf("pick %s\n", grouped_kernel_pick()->name);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "run") == 0) {
        while (run_case()) {}
        fflush(stdout);
        return 0;
    }
    fprintf(stderr, "usage: grouped_harness info|run\n");
    return 2;
}
