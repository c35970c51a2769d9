/* platform.h: the few operating-system services the runtime needs, behind one interface.
 *
 * Everything else in runtime_c/ is plain C11 plus pthreads; what differs between Linux
 * (and Android), macOS, Windows and WASI lives in platform.c, so the model code has no
 * #ifdefs for operating systems.
 *
 *   Linux/Android  sysconf, /proc/self/exe, mmap
 *   macOS          sysconf, _NSGetExecutablePath, mmap
 *   Windows        GetSystemInfo, GlobalMemoryStatusEx, GetModuleFileNameA, files read into memory
 *   WASI           one core, no executable path, files read into memory
 */
#ifndef BITNET_PLATFORM_H
#define BITNET_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/* The HTTP server needs POSIX sockets and threads: not on Windows, WASI or BN_NO_THREADS. */
#if defined(BN_NO_THREADS) || defined(__wasi__) || defined(_WIN32)
#define PLATFORM_HAS_SERVER 0
#else
#define PLATFORM_HAS_SERVER 1
#endif

#if defined(_WIN32)
#define PLATFORM_NAME "Windows"
#elif defined(__wasi__)
#define PLATFORM_NAME "WASI"
#elif defined(__APPLE__)
#define PLATFORM_NAME "macOS"
#else
#define PLATFORM_NAME "Linux"
#endif

/* Process set-up: a write to a closed pipe (`./model | head`) ends the program quietly;
 * on Windows the console is switched to UTF-8 so generated text prints as written. */
void platform_init(void);

/* Online CPU cores (at least 1). */
int platform_cpu_count(void);

/* Physical memory in bytes, 0 when the platform does not say. */
uint64_t platform_physical_memory(void);

/* The running executable's path into buf; 0 on success, -1 when unknown or too long. */
int platform_executable_path(char *buf, size_t size);

/* A read-only view of the whole file at path, which must have exactly `size` bytes: mapped
 * where the OS maps files (pages load lazily, shared between processes), read into memory
 * elsewhere (Windows, WASI). Returns NULL on failure, with errno set and *found_size the
 * file's size (UINT64_MAX when it could not be opened), so the caller can say which. */
const void *platform_map_file(const char *path, uint64_t size, uint64_t *found_size);

/* Zeroed memory reserved from the OS, page-aligned: pages are mapped on first touch, so a
 * large KV cache costs resident memory only as the conversation fills it (mmap where the
 * OS has it; calloc elsewhere). Released with platform_release(p, bytes). NULL on failure. */
void *platform_reserve(size_t bytes);
void platform_release(void *p, size_t bytes);

/* 64-byte-aligned allocations (freed with platform_aligned_free, never free). */
void *platform_aligned_alloc(size_t alignment, size_t bytes);
void platform_aligned_free(void *p);

#endif
