/* threads.c: the thread pool behind every parallel matmul, head and per-row step.
 *
 * Work comes in tiles handed out through one atomic counter: each thread, the caller
 * included, claims the next unclaimed tile until none is left, so a thread the OS has
 * descheduled (another process on its core) or a slower core (big.LITTLE) holds back only
 * the tile it is running, and a thread that has not woken up yet holds back nothing: the
 * caller waits for the tiles to finish, not for the threads to arrive. Callers size tiles
 * so that every thread gets several. Which thread runs a tile never changes what the tile
 * computes, so results do not depend on the thread count or on scheduling.
 *
 * The counters are monotonic across tasks (unsigned, wrapping): a task owns the tile
 * numbers [base, end) of `next`; a thread claims number i by moving `next` from i to i + 1
 * with a compare-and-swap, which fails if another thread, or a newer task, moved it first.
 * Tiles are claimed only while i < end, and the caller publishes a new task (fn, arg,
 * base, then end, released) only after every tile of the previous one has finished
 * (done == end), so a successful claim always belongs to the current task and its fields
 * stay valid until the tile's completion is counted. A thread that wakes late for an old
 * task finds no tile and goes back to waiting.
 *
 * Waiting: workers spin on a generation counter (a decode step issues a few hundred tasks
 * per token, microseconds apart) and sleep on a condition variable after SPIN_NS without
 * work. The caller, once nothing is left to claim, spins for the running tiles only up to
 * WAIT_SPIN_NS, then sleeps: a tile still running after that belongs to a thread that was
 * descheduled, and an idle core is what lets the OS move that thread over to finish it.
 * Hand-out and completion take no lock unless a thread sleeps. Targets without threads
 * (wasm32-wasi) build with BN_NO_THREADS and run every tile inline.
 */
#include "threads.h"

#include <stdlib.h>

#ifdef BN_NO_THREADS

struct bn_pool { int n; };
bn_pool *bn_pool_create(int n_threads) { (void)n_threads; bn_pool *p = malloc(sizeof *p); if (p) p->n = 1; return p; }
void bn_pool_tiles(bn_pool *p, int n_tiles, bn_tile_fn fn, void *arg) {
    (void)p;
    for (int i = 0; i < n_tiles; i++) fn(arg, i, 0);
}
void bn_pool_run(bn_pool *p, bn_task_fn fn, void *arg) { (void)p; fn(arg, 0, 1); }
int bn_pool_size(const bn_pool *p) { (void)p; return 1; }
void bn_pool_free(bn_pool *p) { free(p); }

#else

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* How long a worker spins for the next task before it sleeps. A decode step runs a few
 * hundred tasks per token with a few microseconds of serial work between them, and a
 * futex wake-up costs tens of microseconds (more in a VM), so waiting workers spin for up
 * to this long; an idle pool (waiting for input) sleeps and costs nothing. */
#define SPIN_NS 2000000
/* How long the caller spins for tiles other threads are still running. A tile takes
 * microseconds; one still running after this was descheduled mid-way, and sleeping frees
 * the core for it. */
#define WAIT_SPIN_NS 100000

/* The fields of the current task: written by the caller only while no tile is claimable
 * and before `end` is released. `next` and `done` each have a cache line of their own:
 * every claim and every completion writes them. */
struct bn_pool {
    int n;                         /* threads including the caller */
    pthread_t *threads;            /* (n-1) workers */
    pthread_mutex_t mu;            /* guards sleeping only; the fast path takes no lock */
    pthread_cond_t wake;           /* sleeping workers wait here for a new generation */
    pthread_cond_t done_cv;        /* a sleeping caller waits here for done == end */
    atomic_uint generation;        /* bumped once per task, after end is published */
    atomic_int sleepers;           /* workers inside pthread_cond_wait (or about to be) */
    atomic_int caller_sleeping;    /* the caller is waiting on done_cv */
    atomic_int quit;
    bn_tile_fn tile_fn;            /* the task: tile_fn(arg, tile, thread), or */
    bn_task_fn task_fn;            /* task_fn(arg, tile, n_tiles) (bn_pool_run) */
    void *arg;
    int n_tiles;
    unsigned base;                 /* tile numbers of the task: [base, end) */
    atomic_uint end;
    char pad0[64];
    atomic_uint next;              /* the next unclaimed tile number */
    char pad1[64];
    atomic_uint done;              /* tiles finished, counted from the first task on */
    char pad2[64];
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

/* Spin until *v != unchanged or limit_ns have passed; returns the last value read. */
static unsigned spin_while_equal(atomic_uint *v, unsigned unchanged, uint64_t limit_ns) {
    uint64_t deadline = 0;
    for (int i = 0;; i++) {
        unsigned now = atomic_load_explicit(v, memory_order_acquire);
        if (now != unchanged) return now;
        cpu_relax();
        if ((i & 255) == 255) {                    /* read the clock now and then */
            uint64_t t = now_ns();
            if (!deadline) deadline = t + limit_ns;
            else if (t > deadline) return now;
            /* With more threads than free cores (-t above the core count, or other jobs),
             * the thread we wait for may need this core: offer it. Costs a system call
             * per ~256 spins when nobody else wants the core. */
            if (i > 4096) sched_yield();
        }
    }
}

/* Claim and run tiles of the current task until none is left unclaimed. */
static void run_tiles(bn_pool *p, int thread) {
    for (;;) {
        unsigned i = atomic_load_explicit(&p->next, memory_order_acquire);
        unsigned end = atomic_load_explicit(&p->end, memory_order_acquire);
        if ((int)(end - i) <= 0) return;
        if (!atomic_compare_exchange_weak_explicit(&p->next, &i, i + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        /* tile i is ours, and belongs to the task that published `end` */
        int tile = (int)(i - p->base);
        if (p->tile_fn) p->tile_fn(p->arg, tile, thread);
        else p->task_fn(p->arg, tile, p->n_tiles);
        /* both sequentially consistent: either the caller sees done == end, or this
         * thread sees it sleeping and wakes it */
        if (atomic_fetch_add(&p->done, 1) + 1 == end && atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *a) {
    worker_arg *wa = a;
    bn_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        if (spin_while_equal(&p->generation, seen, SPIN_NS) == seen) {
            /* Sleep. sleepers is raised before generation is re-read (both sequentially
             * consistent), so bn_pool_tiles either sees a sleeper and broadcasts, or this
             * thread sees the new generation. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_tiles(p, ith);
    }
}

bn_pool *bn_pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    bn_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_sleeping, 0);
    atomic_init(&p->quit, 0);
    atomic_init(&p->end, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
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

/* Publish the task, work on it like any thread, then wait until its last tile is done:
 * one barrier per call. */
static void run_task(bn_pool *p, int n_tiles, bn_tile_fn tile_fn, bn_task_fn task_fn, void *arg) {
    p->tile_fn = tile_fn;
    p->task_fn = task_fn;
    p->arg = arg;
    p->n_tiles = n_tiles;
    p->base = atomic_load_explicit(&p->next, memory_order_relaxed);   /* == end: nothing claimable */
    const unsigned end = p->base + (unsigned)n_tiles;
    atomic_store_explicit(&p->end, end, memory_order_release);       /* publishes the fields */
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }

    run_tiles(p, 0);

    unsigned done = atomic_load_explicit(&p->done, memory_order_acquire);
    while (done != end) {
        unsigned now = spin_while_equal(&p->done, done, WAIT_SPIN_NS);
        if (now == done) break;                     /* no tile finished for a while: sleep */
        done = now;
    }
    if (done == end) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeping, 1);
    while (atomic_load(&p->done) != end) pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store(&p->caller_sleeping, 0);
    pthread_mutex_unlock(&p->mu);
}

void bn_pool_tiles(bn_pool *p, int n_tiles, bn_tile_fn fn, void *arg) {
    if (n_tiles <= 0) return;
    if (p->n == 1 || n_tiles == 1) {               /* nothing to share: no barrier */
        for (int i = 0; i < n_tiles; i++) fn(arg, i, 0);
        return;
    }
    run_task(p, n_tiles, fn, NULL, arg);
}

void bn_pool_run(bn_pool *p, bn_task_fn fn, void *arg) {
    if (p->n == 1) { fn(arg, 0, 1); return; }
    run_task(p, p->n, NULL, fn, arg);
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
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

#endif
