/* threads.h: a small fixed-size thread pool. bn_pool_run(fn) runs fn(arg, i, n) on every
 * thread i in [0, n) (the caller is thread 0) and returns when all have finished. */
#ifndef BITNET_THREADS_H
#define BITNET_THREADS_H

typedef void (*bn_task_fn)(void *arg, int ith, int nth);
typedef struct bn_pool bn_pool;

bn_pool *bn_pool_create(int n_threads);
void bn_pool_run(bn_pool *p, bn_task_fn fn, void *arg);
int bn_pool_size(const bn_pool *p);
void bn_pool_free(bn_pool *p);

#endif
