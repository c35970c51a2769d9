/* kernel_harness.c: runs the compiled-in ternary kernels on matrices sent by
 * tests/test_kernels.py, so one binary per target (native, qemu, wasmtime) can be checked
 * against the scalar reference and numpy.
 *
 *   kernel_harness info    prints the CPU features, every compiled-in kernel, and which
 *                          kernel the dispatcher picks per layout ("pick i2s i2s_avx2")
 *   kernel_harness run     reads cases from stdin until EOF, answers each on stdout
 *
 * A case (all integers int32 little-endian):
 *   name_len, M, KP, N, nsplit, wbytes, 0    then name (name_len bytes),
 *   splits[nsplit + 1] (row boundaries, splits[0] = 0 ... splits[nsplit] = M),
 *   w (wbytes), x (N*KP int8).
 * name is a kernel of the table ("i2s_avx2") or "pick:<layout>" for whatever the start-up
 * dispatch chose on this CPU. The answer: status, then y_gemv[N][M] (gemv per token) and y_gemm[N][M] (one gemm call
 * per row range). status 0 = ok, 1 = unknown kernel, 2 = a call wrote outside its rows.
 * Each row range is computed into a buffer pre-filled with a sentinel, with a scratch
 * buffer filled with garbage, exactly as independent threads would.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define SENTINEL ((int32_t)0x7eadbeef)

#if !defined(__wasi__)
#include <pthread.h>
#define HAVE_THREADS 1
#endif

typedef struct {
    const ternary_kernel *k;
    const uint8_t *w;
    const int8_t *x;
    int32_t *y;
    int N, M, KP, rb, re;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    void *raw = NULL, *scratch = NULL;
    if (j->k->scratch_bytes) {
        size_t n = j->k->scratch_bytes(j->KP, j->N);
        raw = malloc(n + 64);
        if (!raw) return (void *)1;
        memset(raw, 0x5a, n + 64);
        scratch = (void *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    }
    if (j->N == 1) j->k->gemv(j->w, j->x, j->y, j->KP, j->rb, j->re, scratch);
    else j->k->gemm(j->w, j->x, j->y, j->N, j->M, j->KP, j->rb, j->re, scratch);
    free(raw);
    return NULL;
}

static int read_all(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory (%zu bytes)\n", n); exit(3); }
    return p;
}

/* aligned scratch, filled with garbage */
static void *scratch_for(const ternary_kernel *k, int KP, int N, void **raw) {
    *raw = NULL;
    if (!k->scratch_bytes) return NULL;
    size_t n = k->scratch_bytes(KP, N);
    *raw = xmalloc(n + 64);
    memset(*raw, 0xa5, n + 64);
    return (void *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

/* Checks that a call for rows [rb, re) touched no other row of tmp, copies its rows to y. */
static int take_rows(int32_t *y, const int32_t *tmp, int N, int M, int rb, int re) {
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int r = 0; r < M; r++) {
            const int32_t v = tmp[(size_t)n * M + r];
            if (r >= rb && r < re) y[(size_t)n * M + r] = v;
            else if (v != SENTINEL) bad = 1;
        }
    return bad;
}

static int run_case(void) {
    int32_t h[7];
    if (!read_all(h, sizeof h)) return 0;
    const int name_len = h[0], M = h[1], KP = h[2], N = h[3], nsplit = h[4], wbytes = h[5];
    char name[64] = {0};
    int32_t *splits = xmalloc(sizeof(int32_t) * (nsplit + 1));
    uint8_t *w = xmalloc(wbytes);
    int8_t *x = xmalloc((size_t)N * KP);
    if (name_len >= (int)sizeof name || !read_all(name, name_len) ||
        !read_all(splits, sizeof(int32_t) * (nsplit + 1)) || !read_all(w, wbytes) ||
        !read_all(x, (size_t)N * KP)) {
        fprintf(stderr, "truncated case\n");
        exit(4);
    }
    const size_t ny = (size_t)N * M;
    int32_t *y1 = xmalloc(ny * 4), *y2 = xmalloc(ny * 4), *y3 = xmalloc(ny * 4), *tmp = xmalloc(ny * 4);
    int32_t status = 0;
    /* "pick:<layout>" runs whatever the start-up dispatch chose for that layout */
    const ternary_kernel *k = strncmp(name, "pick:", 5) == 0 ? kernel_pick(name + 5) : kernel_by_name(name);
    if (!k) {
        status = 1;
        memset(y1, 0, ny * 4);
        memset(y2, 0, ny * 4);
        memset(y3, 0, ny * 4);
    } else {
        for (int s = 0; s < nsplit; s++) {
            const int rb = splits[s], re = splits[s + 1];
            void *raw;
            void *scratch = scratch_for(k, KP, 1, &raw);
            for (size_t i = 0; i < ny; i++) tmp[i] = SENTINEL;
            for (int n = 0; n < N; n++)
                k->gemv(w, x + (size_t)n * KP, tmp + (size_t)n * M, KP, rb, re, scratch);
            status |= take_rows(y1, tmp, N, M, rb, re) ? 2 : 0;
            free(raw);
            scratch = scratch_for(k, KP, N, &raw);
            for (size_t i = 0; i < ny; i++) tmp[i] = SENTINEL;
            k->gemm(w, x, tmp, N, M, KP, rb, re, scratch);
            status |= take_rows(y2, tmp, N, M, rb, re) ? 2 : 0;
            free(raw);
        }
        /* all ranges concurrently into one shared y */
        job *jobs = xmalloc(sizeof(job) * nsplit);
        for (int s = 0; s < nsplit; s++)
            jobs[s] = (job){k, w, x, y3, N, M, KP, splits[s], splits[s + 1]};
#if HAVE_THREADS
        pthread_t *th = xmalloc(sizeof(pthread_t) * nsplit);
        for (int s = 0; s < nsplit; s++)
            if (pthread_create(&th[s], NULL, run_job, &jobs[s]) != 0) { fprintf(stderr, "pthread_create\n"); exit(5); }
        for (int s = 0; s < nsplit; s++) pthread_join(th[s], NULL);
        free(th);
#else
        for (int s = 0; s < nsplit; s++) run_job(&jobs[s]);
#endif
        free(jobs);
    }
    fwrite(&status, 4, 1, stdout);
    fwrite(y1, 4, ny, stdout);
    fwrite(y2, 4, ny, stdout);
    fwrite(y3, 4, ny, stdout);
    fflush(stdout);
    free(splits); free(w); free(x); free(y1); free(y2); free(y3); free(tmp);
    return 1;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "info") == 0) {
        printf("features %u\n", kernel_cpu_features());
        for (int i = 0; i < kernel_table_len; i++) printf("have %s\n", kernel_table[i].name);
        const char *layouts[] = {"i2s", "tl1", "tl2"};
        for (int i = 0; i < 3; i++) {
            const ternary_kernel *k = kernel_pick(layouts[i]);
            printf("pick %s %s\n", layouts[i], k ? k->name : "none");
        }
        printf("active %s\n", kernel_pick("i2s")->name);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "run") == 0) {
        while (run_case()) {}
        return 0;
    }
    fprintf(stderr, "usage: %s info|run\n", argv[0]);
    return 2;
}
