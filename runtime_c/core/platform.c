/* platform.c: operating-system services for Linux/Android, macOS, Windows and WASI.
 * See platform.h. One section per service; each has the POSIX version first. */
#include "platform.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <malloc.h>
#else
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#if !defined(_WIN32) && !defined(__wasi__)
#include <signal.h>
#include <sys/mman.h>
#define PLATFORM_HAS_MMAP 1
#else
#define PLATFORM_HAS_MMAP 0
#endif
#if defined(__APPLE__)
#include <mach-o/dyld.h>
#endif

/* ---- process set-up ---- */

void platform_init(void) {
#if defined(_WIN32)
    SetConsoleOutputCP(CP_UTF8);
#elif !defined(__wasi__)
    signal(SIGPIPE, SIG_DFL);
#endif
}

/* ---- CPUs and memory ---- */

int platform_cpu_count(void) {
#if defined(_WIN32)
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    long n = (long)si.dwNumberOfProcessors;
#elif defined(__wasi__)
    long n = 1;
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n < 1 ? 1 : (n > 64 ? 64 : (int)n);
}

uint64_t platform_physical_memory(void) {
#if defined(_WIN32)
    MEMORYSTATUSEX ms;
    ms.dwLength = sizeof ms;
    return GlobalMemoryStatusEx(&ms) ? (uint64_t)ms.ullTotalPhys : 0;
#elif defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
#else
    return 0;
#endif
}

/* ---- the executable's path ---- */

int platform_executable_path(char *buf, size_t size) {
    if (size < 2) return -1;
#if defined(_WIN32)
    DWORD n = GetModuleFileNameA(NULL, buf, (DWORD)size);
    return n > 0 && n < size ? 0 : -1;
#elif defined(__APPLE__)
    uint32_t n = (uint32_t)size;
    return _NSGetExecutablePath(buf, &n) == 0 ? 0 : -1;
#elif defined(__linux__)
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n <= 0 || (size_t)n >= size - 1) return -1;
    buf[n] = 0;
    return 0;
#else
    (void)buf;
    return -1;
#endif
}

/* ---- reading a whole file ---- */

#if PLATFORM_HAS_MMAP
const void *platform_map_file(const char *path, uint64_t size, uint64_t *found_size) {
    *found_size = UINT64_MAX;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; close(fd); errno = e; return NULL; }
    *found_size = (uint64_t)st.st_size;
    if (*found_size != size || size != (size_t)size) { close(fd); errno = EINVAL; return NULL; }
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    errno = e;
    return p == MAP_FAILED ? NULL : p;
}
#else
/* No mmap: read it into memory (binary mode), counting any bytes beyond `size`. */
const void *platform_map_file(const char *path, uint64_t size, uint64_t *found_size) {
    *found_size = UINT64_MAX;
    if (size != (size_t)size) { errno = ENOMEM; return NULL; }
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *p = malloc(size ? (size_t)size : 1);
    if (!p) { fclose(f); errno = ENOMEM; return NULL; }
    uint64_t got = 0;
    size_t r;
    while (got < size && (r = fread(p + got, 1, size - got > (1u << 24) ? (1u << 24) : (size_t)(size - got), f)) > 0)
        got += r;
    unsigned char extra[4096];
    while ((r = fread(extra, 1, sizeof extra, f)) > 0) got += r;
    int failed = ferror(f);
    fclose(f);
    *found_size = got;
    if (failed || got != size) { free(p); errno = failed ? EIO : EINVAL; return NULL; }
    return p;
}
#endif

/* ---- reserved memory ---- */

void *platform_reserve(size_t bytes) {
    if (!bytes) bytes = 1;
#if PLATFORM_HAS_MMAP
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
#else
    return calloc(1, bytes);
#endif
}

void platform_release(void *p, size_t bytes) {
    if (!p) return;
#if PLATFORM_HAS_MMAP
    munmap(p, bytes ? bytes : 1);
#else
    (void)bytes;
    free(p);
#endif
}

/* ---- aligned memory ---- */

void *platform_aligned_alloc(size_t alignment, size_t bytes) {
    bytes = (bytes + alignment - 1) / alignment * alignment;   /* C11 wants a multiple */
#if defined(_WIN32)
    return _aligned_malloc(bytes, alignment);
#else
    return aligned_alloc(alignment, bytes);
#endif
}

void platform_aligned_free(void *p) {
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}
