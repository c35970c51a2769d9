/* kernel_bench.c: times one ternary kernel on one shape, or the machine's memory read
 * bandwidth, for bench/kernels.py.
 *
 *   kernel_bench kernel <name> <M> <KP> <N> <threads> <copies> <seconds>
 *       `copies` packed copies of a random M x KP matrix (enough to overflow the caches,
 *       like the layers of a model) are used in turn; each call computes all M rows for N
 *       tokens, rows split in contiguous ranges over the threads (one spin barrier per
 *       call). Prints "calls <n> seconds <s> bytes_per_call <b> cpu_seconds <c>" (c: CPU
 *       time of thread 0, which excludes time the thread was preempted on a shared machine).
 *   kernel_bench list      names of the compiled-in kernels this CPU can run
 *   kernel_bench membw <threads> <MiB> <seconds> [prefetch_bytes]
 *       each thread sums its share of a buffer with 32-byte vector loads, repeatedly,
 *       optionally with a software prefetch that many bytes ahead (as the GEMV kernels do).
 *       Prints "bytes <b> seconds <s>".
 *   A block-scaled kernel is named with its group size, "i2sg_avx2:64": each copy is then
 *       the i2s codes plus M x ceil(KP/G) fp16 scales, and bytes_per_call counts both.
 * The packed bytes are random codes in {0,1,2} (valid for i2s and tl1; for tl2 the sign
 * and header bytes are arbitrary but the kernel's work per byte is the same).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "tl_layout.h"

static double cpu_now(void) {  /* CPU time of the calling thread: robust to preemption */
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* sense-reversing spin barrier */
static atomic_int bar_count, bar_sense;
static int nthreads;
static void barrier(int *local_sense) {
    *local_sense = !*local_sense;
    if (atomic_fetch_add(&bar_count, 1) == nthreads - 1) {
        atomic_store(&bar_count, 0);
        atomic_store(&bar_sense, *local_sense);
    } else {
        /* spin briefly, then yield: on a shared machine a preempted peer must get the core */
        for (int spins = 0; atomic_load(&bar_sense) != *local_sense; spins++)
            if (spins > 4096) sched_yield();
    }
}

/* ---- kernel timing ---- */
static const ternary_kernel *K_;
static const grouped_kernel *GK_;   /* block-scaled (i2sg) instead of K_ */
static int G_;
static size_t codes_bytes_;         /* i2sg: the codes part of a copy; its scales follow */
static uint8_t *W_;
static size_t wbytes_;
static int8_t *X_;
static int32_t *Y_;
static int M_, KP_, N_, copies_;
static double seconds_;
/* iteration at which everyone stops, decided by thread 0 before that iteration's barrier
 * (a plain flag would let a slow thread see the flag of the NEXT iteration and leave early) */
static atomic_long stop_at_ = -1;
static long calls_;
static double elapsed_, cpu_elapsed_;

static void *kernel_worker(void *arg) {
    const int ith = (int)(intptr_t)arg;
    int sense = 0;
    /* rows split on tile (32) boundaries so tl kernels do no redundant edge tiles */
    const int tiles = (M_ + 31) / 32, per = (tiles + nthreads - 1) / nthreads;
    int rb = ith * per * 32, re = (ith + 1) * per * 32;
    if (re > M_) re = M_;
    if (rb > M_) rb = M_;
    void *scratch = NULL;
    if (K_ && K_->scratch_bytes) {
        scratch = aligned_alloc(64, (K_->scratch_bytes(KP_, N_) + 63) / 64 * 64);
    }
    barrier(&sense);
    const double t0 = now(), c0 = cpu_now();
    long n = 0;
    for (;; n++) {
        const uint8_t *w = W_ + (size_t)(n % copies_) * wbytes_;
        if (GK_) {
            const uint16_t *d = (const uint16_t *)(const void *)(w + codes_bytes_);
            if (N_ == 1) GK_->gemv(w, d, G_, X_, (float *)(void *)Y_, KP_, rb, re);
            else GK_->gemm(w, d, G_, X_, (float *)(void *)Y_, N_, M_, KP_, rb, re);
        } else if (N_ == 1) K_->gemv(w, X_, Y_, KP_, rb, re, scratch);
        else K_->gemm(w, X_, Y_, N_, M_, KP_, rb, re, scratch);
        if (ith == 0 && now() - t0 > seconds_) atomic_store(&stop_at_, n);
        barrier(&sense);
        if (atomic_load(&stop_at_) == n) break;
    }
    if (ith == 0) {
        elapsed_ = now() - t0;
        cpu_elapsed_ = cpu_now() - c0;
        calls_ = n + 1;
    }
    free(scratch);
    return NULL;
}

static size_t packed_bytes(const char *layout, int M, int KP) {
    if (strcmp(layout, "tl2") == 0) return (size_t)((M + 31) / 32) * TL2_TILE_BYTES(KP);
    if (strcmp(layout, "tl1") == 0) return (size_t)((M + 31) / 32) * TL1_TILE_BYTES(KP);
    return (size_t)M * KP / 4;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static int run_kernel(int argc, char **argv) {
    if (argc < 9) return 2;
    char name[64];
    snprintf(name, sizeof name, "%s", argv[2]);
    char *colon = strchr(name, ':');
    if (colon) { *colon = 0; G_ = atoi(colon + 1); GK_ = grouped_kernel_by_name(name); }
    else K_ = kernel_by_name(name);
    if (!K_ && !(GK_ && G_ > 0 && G_ % 64 == 0)) { fprintf(stderr, "kernel %s not compiled in\n", argv[2]); return 1; }
    M_ = atoi(argv[3]); KP_ = atoi(argv[4]); N_ = atoi(argv[5]);
    nthreads = atoi(argv[6]); copies_ = atoi(argv[7]); seconds_ = atof(argv[8]);
    if (GK_) {
        codes_bytes_ = (size_t)M_ * KP_ / 4;
        wbytes_ = (codes_bytes_ + (size_t)(M_ + 3) / 4 * 4 * ((KP_ + G_ - 1) / G_) * 2 + 63) / 64 * 64;
    } else {
        wbytes_ = packed_bytes(K_->layout, M_, KP_);
    }
    W_ = aligned_alloc(64, (wbytes_ * copies_ + 63) / 64 * 64);
    X_ = aligned_alloc(64, (size_t)N_ * KP_);
    Y_ = aligned_alloc(64, (size_t)N_ * M_ * 4 + 64);
    for (size_t i = 0; i < wbytes_ * copies_; i++) {
        uint64_t r = next();
        W_[i] = (uint8_t)(((r % 3) << 6) | (((r >> 8) % 3) << 4) | (((r >> 16) % 3) << 2) | ((r >> 24) % 3));
    }
    /* tl2 headers hold counts, not codes: keep them small */
    if (K_ && strcmp(K_->layout, "tl2") == 0)
        for (int c = 0; c < copies_; c++)
            for (int t = 0; t < (M_ + 31) / 32; t++)
                memset(W_ + (size_t)c * wbytes_ + t * TL2_TILE_BYTES(KP_), 0, TL2_TILE_HEADER);
    for (size_t i = 0; i < (size_t)N_ * KP_; i++) X_[i] = (int8_t)(next() & 0xff);
    pthread_t th[64];
    for (int i = 1; i < nthreads; i++) pthread_create(&th[i], NULL, kernel_worker, (void *)(intptr_t)i);
    kernel_worker((void *)0);
    for (int i = 1; i < nthreads; i++) pthread_join(th[i], NULL);
    printf("calls %ld seconds %.6f bytes_per_call %zu cpu_seconds %.6f\n", calls_, elapsed_, wbytes_, cpu_elapsed_);
    return 0;
}

/* ---- memory bandwidth ---- */
typedef long long v4i __attribute__((vector_size(32)));
static v4i *buf_;
static size_t nvec_;
static long long sink_[64];
static double bw_elapsed_;
static long bw_passes_;
static size_t prefetch_;  /* vectors ahead; 0 = rely on the hardware prefetcher */

static void *bw_worker(void *arg) {
    const int ith = (int)(intptr_t)arg;
    int sense = 0;
    const size_t per = nvec_ / nthreads, b = ith * per, e = b + per;
    v4i acc0 = {0}, acc1 = {0}, acc2 = {0}, acc3 = {0};
    barrier(&sense);
    const double t0 = now();
    long pass = 0;
    for (;; pass++) {
        for (size_t i = b; i < e; i += 4) {
            if (prefetch_) __builtin_prefetch(&buf_[i + prefetch_]);
            acc0 += buf_[i]; acc1 += buf_[i + 1]; acc2 += buf_[i + 2]; acc3 += buf_[i + 3];
        }
        if (ith == 0 && now() - t0 > seconds_) atomic_store(&stop_at_, pass);
        barrier(&sense);
        if (atomic_load(&stop_at_) == pass) break;
    }
    v4i s = acc0 + acc1 + acc2 + acc3;
    sink_[ith] = s[0] + s[1] + s[2] + s[3];
    if (ith == 0) { bw_elapsed_ = now() - t0; bw_passes_ = pass + 1; }
    return NULL;
}

static int run_membw(int argc, char **argv) {
    if (argc < 5) return 2;
    nthreads = atoi(argv[2]);
    const size_t bytes = (size_t)atoi(argv[3]) << 20;
    seconds_ = atof(argv[4]);
    prefetch_ = argc > 5 ? (size_t)atoi(argv[5]) / 32 : 0;
    nvec_ = bytes / 32 / (4 * nthreads) * (4 * nthreads);
    buf_ = aligned_alloc(64, nvec_ * 32);
    memset(buf_, 1, nvec_ * 32);
    pthread_t th[64];
    for (int i = 1; i < nthreads; i++) pthread_create(&th[i], NULL, bw_worker, (void *)(intptr_t)i);
    bw_worker((void *)0);
    for (int i = 1; i < nthreads; i++) pthread_join(th[i], NULL);
    printf("bytes %.0f seconds %.6f sink %lld\n", (double)nvec_ * 32 * bw_passes_, bw_elapsed_, sink_[0]);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc >= 2 && strcmp(argv[1], "kernel") == 0) rc = run_kernel(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "membw") == 0) rc = run_membw(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "list") == 0) {  /* kernels this CPU can run */
        const unsigned have = kernel_cpu_features();
        for (int i = 0; i < kernel_table_len; i++)
            if ((kernel_table[i].needs & ~have) == 0) printf("%s\n", kernel_table[i].name);
        for (int i = 0; i < grouped_kernel_table_len; i++)
            if ((grouped_kernel_table[i].needs & ~have) == 0) printf("%s\n", grouped_kernel_table[i].name);
        rc = 0;
    }
    if (rc == 2) fprintf(stderr, "usage: kernel_bench kernel NAME M KP N THREADS COPIES SECONDS | membw THREADS MIB SECONDS [PREFETCH_BYTES]\n");
    return rc;
}
