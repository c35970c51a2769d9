/* kernels.h: ternary matrix-vector and matrix-matrix kernels.
 *
 * Every kernel computes exact integers: y[r] = sum_k t[r][k] * q[k], with ternary weights
 * t in {-1,0,+1} and int8 activations q. All kernels, ISAs and thread splits must give the
 * same integers as the scalar reference in i2s_scalar.c.
 *
 * Packed layout "i2s" (produced by compiler/pack.py: pack_i2s):
 *   K is padded to KP, a multiple of 128 (padding weights are 0; padding activations are 0).
 *   Row r occupies KP/4 bytes at w + r*KP/4, as 128-weight blocks of 32 bytes. Byte p of
 *   block b holds weights 128b+p, 128b+p+32, 128b+p+64, 128b+p+96 at bits 7-6, 5-4, 3-2, 1-0,
 *   each stored as the code c = t+1 in {0,1,2}.
 *
 * Row ranges: a kernel computes rows [row_begin, row_end) and writes y[r] at the absolute
 * row index r, so threads can split rows without changing any result.
 *
 * Range: every kernel is exact for KP < 2^22 (each states its int16/int32 bound in its
 * file's header comment); any real model's K is far below that.
 */
#ifndef BITNET_KERNELS_H
#define BITNET_KERNELS_H

#include <stdint.h>

/* The software prefetch of streamed weights (x86 kernels): into L2, not L1 (prefetcht1).
 * On a Zen 4 one thread's i2s GEMV read 9 GB/s from DRAM prefetching into L1
 * (prefetcht0) and 22-26 GB/s prefetching into L2, against 28 GB/s for plain loads
 * (bench/kernels.py): the L1 fills compete with the kernel's own loads, and the line
 * moves to L1 soon enough on its first use. */
#define BN_PREFETCH_STREAM(p) __builtin_prefetch((p), 0, 2)

/* ---- i2s: one gemv/gemm pair per ISA, the uniform signatures below (x is [N][KP], one
 * activation row per token; y is [N][M]; scratch is unused). ---- */
/* the plain-C reference (i2s_scalar.c), any target */
void i2s_gemv_scalar(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
    int row_end, void *scratch);
void i2s_gemm_scalar(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
    int row_begin, int row_end, void *scratch);
/* plain C shaped for auto-vectorisation (i2s_generic.c), any target */
void i2s_gemv_generic(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
    int row_end, void *scratch);
void i2s_gemm_generic(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
    int row_begin, int row_end, void *scratch);
/* x86-64 AVX2 (i2s_avx2.c) */
void i2s_gemv_avx2(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
    int row_end, void *scratch);
void i2s_gemm_avx2(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
    int row_begin, int row_end, void *scratch);
/* x86-64 AVX-VNNI (i2s_avxvnni.c) */
void i2s_gemv_avxvnni(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
    int row_end, void *scratch);
void i2s_gemm_avxvnni(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
    int row_begin, int row_end, void *scratch);
/* x86-64 AVX-512 VNNI (i2s_avx512.c) */
void i2s_gemv_avx512vnni(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
    int row_end, void *scratch);
void i2s_gemm_avx512vnni(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
    int row_begin, int row_end, void *scratch);
/* NEON: AArch64, and 32-bit ARMv7 with NEON (i2s_neon.c) */
void i2s_gemv_neon(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
    int row_end, void *scratch);
void i2s_gemm_neon(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
    int row_begin, int row_end, void *scratch);
/* AArch64 NEON with SDOT (i2s_neon_dotprod.c) */
void i2s_gemv_neon_dotprod(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int row_begin,
    int row_end, void *scratch);
void i2s_gemm_neon_dotprod(const uint8_t *w, const int8_t *x, int32_t *y, int N, int M, int KP,
    int row_begin, int row_end, void *scratch);

/* ---- tl2 / tl1: lookup-table kernels (layouts at the top of tl2_avx2.c / tl1_neon.c,
 * packers compiler/pack_tl.py). They read the same activations as i2s (int8 [N][KP], KP a
 * multiple of 128, zero past K) and take a caller-provided scratch buffer for the tables
 * built from the activations: at least tl2_scratch_bytes(KP, N) / tl1_scratch_bytes(KP, N)
 * bytes, any alignment (the size includes the slack the kernel uses to align its tables),
 * one per thread (each call builds its own tables; nothing survives between calls). Rows are
 * stored in tiles of 32 (M padded to a multiple of 32 by the packer); a row range that
 * does not start or end on a multiple of 32 is correct but computes its edge tiles whole.
 * Any row split gives identical integers. */
#include <stddef.h>
size_t tl2_scratch_bytes(int KP, int N);
size_t tl1_scratch_bytes(int KP, int N);
void tl2_gemv_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int KP, int row_begin, int row_end, void *scratch);
void tl2_gemm_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int N, int M, int KP, int row_begin, int row_end, void *scratch);
void tl2_gemv_avx2(const uint8_t *w, const int8_t *x, int32_t *y,
                   int KP, int row_begin, int row_end, void *scratch);
void tl2_gemm_avx2(const uint8_t *w, const int8_t *x, int32_t *y,
                   int N, int M, int KP, int row_begin, int row_end, void *scratch);
void tl1_gemv_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int KP, int row_begin, int row_end, void *scratch);
void tl1_gemm_scalar(const uint8_t *w, const int8_t *x, int32_t *y,
                     int N, int M, int KP, int row_begin, int row_end, void *scratch);
void tl1_gemv_neon(const uint8_t *w, const int8_t *x, int32_t *y,
                   int KP, int row_begin, int row_end, void *scratch);
void tl1_gemm_neon(const uint8_t *w, const int8_t *x, int32_t *y,
                   int N, int M, int KP, int row_begin, int row_end, void *scratch);

/* ---- i2sg: block-scaled ternary weights (layout and numerics in i2sg.h). y is float: the
 * scaled sum of each row before the activation scale (y[n][r], row stride M for GEMM). ---- */
typedef void (*grouped_gemv_fn)(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                                int KP, int row_begin, int row_end);
typedef void (*grouped_gemm_fn)(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                                int N, int M, int KP, int row_begin, int row_end);
void i2sg_gemv_scalar(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                      int KP, int row_begin, int row_end);
void i2sg_gemm_scalar(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                      int N, int M, int KP, int row_begin, int row_end);
void i2sg_gemv_avx2(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int KP, int row_begin, int row_end);
void i2sg_gemm_avx2(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int N, int M, int KP, int row_begin, int row_end);
void i2sg_gemv_avx512vnni(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                          int KP, int row_begin, int row_end);
void i2sg_gemm_avx512vnni(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                          int N, int M, int KP, int row_begin, int row_end);
void i2sg_gemv_neon(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int KP, int row_begin, int row_end);
void i2sg_gemm_neon(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                    int N, int M, int KP, int row_begin, int row_end);
void i2sg_gemv_neon_dotprod(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                            int KP, int row_begin, int row_end);
void i2sg_gemm_neon_dotprod(const uint8_t *w, const uint16_t *d, int G, const int8_t *x, float *y,
                            int N, int M, int KP, int row_begin, int row_end);

/* ---- Run-time dispatch (dispatch.c) ----
 * A binary carries every variant its target can use (which source files, with which
 * flags: compiler/kernels.py). At start-up kernel_pick(layout) checks the CPU once and
 * returns the fastest variant whose required features are present, so a binary built with
 * --cpu-dispatch never executes an instruction the CPU lacks (no SIGILL on a CPU without
 * AVX2 or dot product: it runs the next variant down, at worst the scalar one). */
enum {
    KCPU_AVX2    = 1u << 0,  /* x86-64: AVX2 and the OS saves YMM state (cpuid + xgetbv) */
    KCPU_DOTPROD = 1u << 1,  /* aarch64: SDOT/UDOT (HWCAP_ASIMDDP); plain NEON is baseline */
    KCPU_AVXVNNI = 1u << 2,  /* x86-64: AVX-VNNI (VEX vpdpbusd; cpuid 7.1 eax bit 4) */
    KCPU_AVX512VNNI = 1u << 3,  /* x86-64: AVX512F+BW+VNNI and the OS saves ZMM state */
    KCPU_F16C    = 1u << 4,  /* x86-64: F16C half-precision conversions (cpuid 1 ecx bit 29) */
    KCPU_NEON    = 1u << 5,  /* 32-bit ARM: NEON (HWCAP_NEON); baseline on AArch64, so unused there */
};
unsigned kernel_cpu_features(void);  /* KCPU_* bits of this CPU (computed once, cached) */

/* Uniform signatures: kernels that need no scratch ignore it (NULL is fine for them). */
typedef void (*ternary_gemv_fn)(const uint8_t *w, const int8_t *x, int32_t *y,
                                int KP, int row_begin, int row_end, void *scratch);
typedef void (*ternary_gemm_fn)(const uint8_t *w, const int8_t *x, int32_t *y,
                                int N, int M, int KP, int row_begin, int row_end,
                                void *scratch);
typedef struct {
    const char *name;       /* "i2s_avx2": layout + isa */
    const char *layout;     /* packed weight layout it reads: "i2s", "tl1", "tl2" */
    const char *isa;        /* "avx512vnni", "avxvnni", "avx2", "neon_dotprod", "neon", "generic", "scalar" */
    const char *cpus;       /* which CPUs it is for, for humans */
    unsigned needs;         /* KCPU_* bits it requires */
    ternary_gemv_fn gemv;
    ternary_gemm_fn gemm;
    size_t (*scratch_bytes)(int KP, int N);  /* NULL: needs no scratch */
} ternary_kernel;

extern const ternary_kernel kernel_table[];  /* per layout: fastest first, scalar last */
extern const int kernel_table_len;
/* Fastest variant for `layout` this CPU can run; NULL only for an unknown layout. */
const ternary_kernel *kernel_pick(const char *layout);
const ternary_kernel *kernel_by_name(const char *name);  /* NULL if not compiled in */


typedef struct {
    const char *name;       /* "i2sg_avx2" */
    const char *isa;
    unsigned needs;         /* KCPU_* bits it requires */
    grouped_gemv_fn gemv;
    grouped_gemm_fn gemm;
} grouped_kernel;
extern const grouped_kernel grouped_kernel_table[];  /* fastest first, scalar last */
extern const int grouped_kernel_table_len;
/* Fastest block-scaled variant this CPU can run (BN_KERNEL_VARIANT may name one); never NULL. */
const grouped_kernel *grouped_kernel_pick(void);
const grouped_kernel *grouped_kernel_by_name(const char *name);  /* NULL if not compiled in */

#endif
