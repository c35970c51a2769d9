/* threads.c: the thread pool behind every parallel matmul.
 *
 * Work is split by the callers into contiguous, disjoint ranges indexed by thread number,
 * so results never depend on the thread count or on scheduling. Workers wait on a
 * generation counter: they spin (a decode step issues about 130 tasks per token, each a
 * few microseconds apart) and sleep on a condition variable only after SPIN_NS without
 * work. Handing out a task and waiting for it take no lock unless a thread sleeps; the
 * caller's wait for the workers is the only barrier per task. Shared counters sit in one
 * small struct written only at hand-out and completion; per-thread outputs are disjoint
 * row ranges of whole 32-row tiles, so threads do not write the same cache lines.
 * Targets without threads (wasm32-wasi) build with BN_NO_THREADS and run inline.
 */
#include "threads.h"

#include <stdlib.h>

#ifdef BN_NO_THREADS

struct bn_pool { int n; };
bn_pool *bn_pool_create(int n_threads) { (void)n_threads; bn_pool *p = malloc(sizeof *p); if (p) p->n = 1; return p; }
void bn_pool_run(bn_pool *p, bn_task_fn fn, void *arg) { (void)p; fn(arg, 0, 1); }
int bn_pool_size(const bn_pool *p) { (void)p; return 1; }
void bn_pool_free(bn_pool *p) { free(p); }

#else

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* How long a thread spins on the shared counters before it sleeps. A decode step runs a
 * few hundred tasks per token with a few microseconds of serial work between them, and a
 * futex wake-up costs tens of microseconds (more in a VM), so waiting threads spin for up
 * to this long; an idle pool (waiting for input) sleeps and costs nothing. */
#define SPIN_NS 2000000

struct bn_pool {
    int n;                         /* threads including the caller */
    pthread_t *threads;            /* (n-1) workers */
    pthread_mutex_t mu;            /* guards sleeping only; the fast path takes no lock */
    pthread_cond_t wake;           /* sleeping workers wait here for a new generation */
    pthread_cond_t done;           /* a sleeping caller waits here for pending == 0 */
    atomic_int generation;         /* bumped once per bn_pool_run, after fn and arg are set */
    atomic_int pending;            /* workers still running the current task */
    atomic_int sleepers;           /* workers inside pthread_cond_wait (or about to be) */
    atomic_int caller_sleeping;    /* the caller is waiting on `done` */
    atomic_int quit;
    bn_task_fn fn;
    void *arg;
};

typedef struct { bn_pool *p; int ith; } worker_arg;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A hint to the core that this is a spin loop (frees the sibling hyper-thread). */
static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield");
#endif
}

/* Spin until *v != unchanged or SPIN_NS have passed; returns the last value read. */
static int spin_while_equal(atomic_int *v, int unchanged) {
    uint64_t deadline = 0;
    for (int i = 0;; i++) {
        int now = atomic_load_explicit(v, memory_order_acquire);
        if (now != unchanged) return now;
        cpu_relax();
        if ((i & 255) == 255) {                    /* read the clock now and then */
            uint64_t t = now_ns();
            if (!deadline) deadline = t + SPIN_NS;
            else if (t > deadline) return now;
            /* With more threads than free cores (-t above the core count, or other jobs),
             * the thread we wait for may need this core: offer it. Costs a system call
             * per ~256 spins when nobody else wants the core. */
            if (i > 4096) sched_yield();
        }
    }
}

static void *worker_main(void *a) {
    worker_arg *wa = a;
    bn_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    int seen = 0;
    for (;;) {
        if (spin_while_equal(&p->generation, seen) == seen) {
            /* Sleep. sleepers is raised before generation is re-read (both sequentially
             * consistent), so bn_pool_run either sees a sleeper and broadcasts, or this
             * thread sees the new generation. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        p->fn(p->arg, ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping)) {   /* both seq_cst: see bn_pool_run */
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

bn_pool *bn_pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    bn_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_sleeping, 0);
    atomic_init(&p->quit, 0);
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) { free(p); return NULL; }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) { p->n = i; break; }
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) { free(wa); p->n = i; break; }
    }
    return p;
}

/* One barrier per call: the caller runs its share, then waits for pending == 0. */
void bn_pool_run(bn_pool *p, bn_task_fn fn, void *arg) {
    if (p->n == 1) { fn(arg, 0, 1); return; }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add(&p->generation, 1);           /* publishes fn, arg and pending */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }

    fn(arg, 0, p->n);

    int left = atomic_load_explicit(&p->pending, memory_order_acquire);
    while (left > 0) {
        int now = spin_while_equal(&p->pending, left);
        if (now == left) break;                     /* no progress for SPIN_NS: sleep */
        left = now;
    }
    if (left == 0) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeping, 1);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
    atomic_store(&p->caller_sleeping, 0);
    pthread_mutex_unlock(&p->mu);
}

int bn_pool_size(const bn_pool *p) { return p->n; }

void bn_pool_free(bn_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

#endif
