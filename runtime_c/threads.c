/* threads.c: the thread pool behind every parallel matmul.
 *
 * Work is split by the callers into contiguous, disjoint ranges indexed by thread number,
 * so results never depend on the thread count or on scheduling. Workers wait on a
 * generation counter: they spin briefly (a decode step issues a few hundred tasks per
 * token, each a few microseconds apart) and then sleep on a condition variable.
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
#include <stdatomic.h>

#define SPIN_ITERATIONS 20000

struct bn_pool {
    int n;                         /* threads including the caller */
    pthread_t *threads;            /* (n-1) workers */
    pthread_mutex_t mu;
    pthread_cond_t wake;           /* workers wait here for a new generation */
    pthread_cond_t done;           /* the caller waits here for pending == 0 */
    atomic_int generation;         /* bumped once per bn_pool_run */
    atomic_int pending;            /* workers still running the current task */
    int quit;
    bn_task_fn fn;
    void *arg;
};

typedef struct { bn_pool *p; int ith; } worker_arg;

static void *worker_main(void *a) {
    worker_arg *wa = a;
    bn_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    int seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen && spins < SPIN_ITERATIONS) spins++;
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->generation) == seen && !p->quit) pthread_cond_wait(&p->wake, &p->mu);
        if (p->quit) { pthread_mutex_unlock(&p->mu); return NULL; }
        seen = atomic_load(&p->generation);
        bn_task_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);

        fn(arg, ith, p->n);

        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
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

void bn_pool_run(bn_pool *p, bn_task_fn fn, void *arg) {
    if (p->n == 1) { fn(arg, 0, 1); return; }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    fn(arg, 0, p->n);

    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0 && spins < SPIN_ITERATIONS) spins++;
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int bn_pool_size(const bn_pool *p) { return p->n; }

void bn_pool_free(bn_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
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
