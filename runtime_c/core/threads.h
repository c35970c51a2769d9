/* threads.h: a small fixed-size thread pool that hands out tiles of work.
 *
 * bn_pool_tiles(p, n, fn, arg) calls fn(arg, tile, thread) once for every tile in [0, n),
 * on whichever thread claims it next (the caller is thread 0 and works too), and returns
 * when all n have finished. `thread` (in [0, bn_pool_size)) names the thread running the
 * tile, for per-thread scratch; results must depend only on `tile`.
 * bn_pool_run(p, fn, arg) is the same with one tile per thread: fn(arg, i, n) for i in
 * [0, n) (i is a part number, not the thread: a free thread may run a slow one's part). */
#ifndef BITNET_THREADS_H
#define BITNET_THREADS_H

typedef void (*bn_task_fn)(void *arg, int ith, int nth);
typedef void (*bn_tile_fn)(void *arg, int tile, int thread);
typedef struct bn_pool bn_pool;

bn_pool *bn_pool_create(int n_threads);
void bn_pool_tiles(bn_pool *p, int n_tiles, bn_tile_fn fn, void *arg);
void bn_pool_run(bn_pool *p, bn_task_fn fn, void *arg);
int bn_pool_size(const bn_pool *p);
void bn_pool_free(bn_pool *p);

#endif
