/* dispatch.c: which kernel variants this binary carries, which CPUs each is for, and the
 * start-up CPU check that picks among them. Compiled WITHOUT any ISA flags (baseline code
 * only), so it runs on every CPU of the target architecture.
 *
 * Adding an ISA: one kernel file, one line in compiler/kernels.py (source + flags), one
 * row in kernel_table below (fastest first within its layout).
 *
 * KERNELS_SCALAR_ONLY (define it) builds a table of scalar kernels only, for builds that
 * compile no SIMD file.
 */
#include <stdlib.h>
#include <string.h>

#include "attn.h"
#include "head.h"
#include "kernels.h"

#if !defined(KERNELS_SCALAR_ONLY) && (defined(__x86_64__) || defined(_M_X64))
#define KERNELS_X86 1
#endif
#if !defined(KERNELS_SCALAR_ONLY) && (defined(__aarch64__) || defined(_M_ARM64))
#define KERNELS_ARM64 1
#endif
#if !defined(KERNELS_SCALAR_ONLY) && defined(__arm__) && defined(__linux__)
#define KERNELS_ARM32 1   /* 32-bit ARM Linux: the NEON i2s kernel when the CPU has NEON */
#endif

/* ---- CPU feature detection ---------------------------------------------------------- */
#if KERNELS_X86
#include <cpuid.h>
static unsigned detect_features(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d) || a < 7) return 0;
    __get_cpuid(1, &a, &b, &c, &d);
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return 0;
    if (f16c) f |= KCPU_F16C;
    /* XCR0 bits 1 (SSE state) and 2 (AVX state): the OS saves YMM registers. */
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 6) != 6) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub = a;
    if ((b >> 5) & 1) f |= KCPU_AVX2;
    /* AVX512F (ebx 16), AVX512BW (ebx 30), AVX512_VNNI (ecx 11), and XCR0 bits 5-7
     * (opmask, upper halves of ZMM0-15, ZMM16-31): the OS saves ZMM state. */
    if (((b >> 16) & 1) && ((b >> 30) & 1) && ((c >> 11) & 1) && (xlo & 0xe0) == 0xe0) f |= KCPU_AVX512VNNI;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 4) & 1) f |= KCPU_AVXVNNI;
    }
    return f;
}
#elif KERNELS_ARM64 && defined(__linux__)   /* Linux and Android */
#include <sys/auxv.h>
static unsigned detect_features(void) {
    unsigned long hw = getauxval(AT_HWCAP);
    return (hw & (1ul << 20)) ? KCPU_DOTPROD : 0;  /* HWCAP_ASIMDDP */
}
#elif KERNELS_ARM64 && defined(__APPLE__)
#include <sys/sysctl.h>
static unsigned detect_features(void) {
    int v = 0;
    size_t n = sizeof v;
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, NULL, 0) == 0 && v) return KCPU_DOTPROD;
    return 0;
}
#elif KERNELS_ARM32
#include <sys/auxv.h>
static unsigned detect_features(void) {
    return (getauxval(AT_HWCAP) & (1ul << 12)) ? KCPU_NEON : 0;  /* HWCAP_NEON */
}
#else   /* unknown OS on aarch64 (e.g. Windows): assume only baseline NEON */
static unsigned detect_features(void) { return 0; }
#endif

unsigned kernel_cpu_features(void) {
    static int done;
    static unsigned features;
    if (!done) {  /* benign race: every thread computes the same value */
        features = detect_features();
        done = 1;
    }
    return features;
}

/* ---- the table ----------------------------------------------------------------------- */
const ternary_kernel kernel_table[] = {
#if KERNELS_X86
    {"i2s_avx512vnni", "i2s", "avx512vnni", "x86-64 with AVX-512 VNNI (Ice Lake+ servers, Zen 4+)",
     KCPU_AVX2 | KCPU_AVX512VNNI, i2s_gemv_avx512vnni, i2s_gemm_avx512vnni, NULL},
    {"i2s_avxvnni", "i2s", "avxvnni", "x86-64 with AVX-VNNI (Alder Lake+, Zen 5+)", KCPU_AVX2 | KCPU_AVXVNNI,
     i2s_gemv_avxvnni, i2s_gemm_avxvnni, NULL},
    {"i2s_avx2", "i2s", "avx2", "x86-64 with AVX2 (Haswell+, Zen+)", KCPU_AVX2,
     i2s_gemv_avx2, i2s_gemm_avx2, NULL},
#endif
#if KERNELS_ARM64
    {"i2s_neon_dotprod", "i2s", "neon_dotprod", "ARMv8.2+ with dot product (Cortex-A55/A76+, Pi 5, Apple M)",
     KCPU_DOTPROD, i2s_gemv_neon_dotprod, i2s_gemm_neon_dotprod, NULL},
    {"i2s_neon", "i2s", "neon", "any AArch64 (Cortex-A53/A72, Pi 3/4)", 0,
     i2s_gemv_neon, i2s_gemm_neon, NULL},
#endif
#if KERNELS_ARM32
    {"i2s_neon", "i2s", "neon", "32-bit ARMv7 with NEON (Pi 2/3/4 on a 32-bit OS)", KCPU_NEON,
     i2s_gemv_neon, i2s_gemm_neon, NULL},
#endif
    {"i2s_generic", "i2s", "generic", "any CPU (plain C shaped for auto-vectorisation)", 0,
     i2s_gemv_generic, i2s_gemm_generic, NULL},
    {"i2s_scalar", "i2s", "scalar", "any CPU (the plain-C reference)", 0,
     i2s_gemv_scalar, i2s_gemm_scalar, NULL},
#if KERNELS_X86
    {"tl2_avx2", "tl2", "avx2", "x86-64 with AVX2 (Haswell+, Zen+)", KCPU_AVX2,
     tl2_gemv_avx2, tl2_gemm_avx2, tl2_scratch_bytes},
#endif
    {"tl2_scalar", "tl2", "scalar", "any CPU (plain C)", 0,
     tl2_gemv_scalar, tl2_gemm_scalar, tl2_scratch_bytes},
#if KERNELS_ARM64
    {"tl1_neon", "tl1", "neon", "any AArch64", 0, tl1_gemv_neon, tl1_gemm_neon, tl1_scratch_bytes},
#endif
    {"tl1_scalar", "tl1", "scalar", "any CPU (plain C)", 0,
     tl1_gemv_scalar, tl1_gemm_scalar, tl1_scratch_bytes},
};
const int kernel_table_len = (int)(sizeof kernel_table / sizeof kernel_table[0]);

const ternary_kernel *kernel_pick(const char *layout) {
    const unsigned have = kernel_cpu_features();
    const char *force = getenv("BN_KERNEL_VARIANT");   /* tests: run a named variant this CPU has */
    if (force) {
        const ternary_kernel *k = kernel_by_name(force);
        if (k && strcmp(k->layout, layout) == 0 && (k->needs & ~have) == 0) return k;
    }
    for (int i = 0; i < kernel_table_len; i++) {
        const ternary_kernel *k = &kernel_table[i];
        if (strcmp(k->layout, layout) == 0 && (k->needs & ~have) == 0) return k;
    }
    return NULL;
}

const ternary_kernel *kernel_by_name(const char *name) {
    for (int i = 0; i < kernel_table_len; i++)
        if (strcmp(kernel_table[i].name, name) == 0) return &kernel_table[i];
    return NULL;
}

/* ---- block-scaled kernels (i2sg.h): fastest first, scalar last ---------------------- */
const grouped_kernel grouped_kernel_table[] = {
#if KERNELS_X86
    {"i2sg_avx512vnni", "avx512vnni", KCPU_AVX2 | KCPU_F16C | KCPU_AVX512VNNI, i2sg_gemv_avx512vnni,
     i2sg_gemm_avx512vnni},
    {"i2sg_avx2", "avx2", KCPU_AVX2 | KCPU_F16C, i2sg_gemv_avx2, i2sg_gemm_avx2},
#endif
#if KERNELS_ARM64
    {"i2sg_neon_dotprod", "neon_dotprod", KCPU_DOTPROD, i2sg_gemv_neon_dotprod, i2sg_gemm_neon_dotprod},
    {"i2sg_neon", "neon", 0, i2sg_gemv_neon, i2sg_gemm_neon},
#endif
    {"i2sg_scalar", "scalar", 0, i2sg_gemv_scalar, i2sg_gemm_scalar},
};
const int grouped_kernel_table_len = (int)(sizeof grouped_kernel_table / sizeof grouped_kernel_table[0]);

const grouped_kernel *grouped_kernel_by_name(const char *name) {
    for (int i = 0; i < grouped_kernel_table_len; i++)
        if (strcmp(grouped_kernel_table[i].name, name) == 0) return &grouped_kernel_table[i];
    return NULL;
}

const grouped_kernel *grouped_kernel_pick(void) {
    const unsigned have = kernel_cpu_features();
    const char *force = getenv("BN_KERNEL_VARIANT");
    const grouped_kernel *k = force ? grouped_kernel_by_name(force) : NULL;
    if (k && (k->needs & ~have) == 0) return k;
    for (int i = 0; i < grouped_kernel_table_len; i++)
        if ((grouped_kernel_table[i].needs & ~have) == 0) return &grouped_kernel_table[i];
    return &grouped_kernel_table[grouped_kernel_table_len - 1];
}

/* ---- attention inner loops (attn.h): fastest first, scalar last ---------------------- */
const attn_ops attn_ops_table[] = {
#if KERNELS_X86
    {"avx2", KCPU_AVX2 | KCPU_F16C, attn_scores_avx2, attn_pv_avx2, attn_exp_avx2},
#endif
#if KERNELS_ARM64
    {"neon", 0, attn_scores_neon, attn_pv_neon, attn_exp_neon},
#endif
    {"scalar", 0, attn_scores_scalar, attn_pv_scalar, attn_exp_scalar},
};
const int attn_ops_table_len = (int)(sizeof attn_ops_table / sizeof attn_ops_table[0]);

const attn_ops *attn_pick(void) {
    const unsigned have = kernel_cpu_features();
    const char *force = getenv("BN_ATTN_VARIANT");   /* tests: run a named variant this CPU has */
    if (force) {
        const attn_ops *o = attn_by_name(force);
        if (o && (o->needs & ~have) == 0) return o;
    }
    for (int i = 0; i < attn_ops_table_len; i++)
        if ((attn_ops_table[i].needs & ~have) == 0) return &attn_ops_table[i];
    return &attn_ops_table[attn_ops_table_len - 1];
}

const attn_ops *attn_by_name(const char *name) {
    for (int i = 0; i < attn_ops_table_len; i++)
        if (strcmp(attn_ops_table[i].name, name) == 0) return &attn_ops_table[i];
    return NULL;
}

/* ---- output head rows (head.h): fastest first, portable last ---------------------- */
#define HEAD_X86 (KCPU_AVX2 | KCPU_F16C)   /* AVX2 CPUs all have FMA too */
const head_ops head_ops_table[] = {
#if KERNELS_X86
    {"avx512_avxvnni", HEAD_X86 | KCPU_AVX512VNNI | KCPU_AVXVNNI, head_f32_avx2, head_f16_avx512,
     head_q8_avxvnni, head_q6_avxvnni, head_q4_avxvnni},
    {"avx512vnni", HEAD_X86 | KCPU_AVX512VNNI, head_f32_avx2, head_f16_avx512,
     head_q8_avx512, head_q6_avx512, head_q4_avx512},
    {"avxvnni", HEAD_X86 | KCPU_AVXVNNI, head_f32_avx2, head_f16_avx2,
     head_q8_avxvnni, head_q6_avxvnni, head_q4_avxvnni},
    {"avx2", HEAD_X86, head_f32_avx2, head_f16_avx2, head_q8_avx2, head_q6_avx2, head_q4_avx2},
#endif
#if KERNELS_ARM64
    {"neon_dotprod", KCPU_DOTPROD, head_f32_neon, head_f16_neon,
     head_q8_neon_dotprod, head_q6_neon_dotprod, head_q4_neon_dotprod},
    {"neon", 0, head_f32_neon, head_f16_neon, head_q8_neon, head_q6_neon, head_q4_neon},
#endif
    {"portable", 0, head_f32_portable, head_f16_portable, head_q8_portable, head_q6_portable, head_q4_portable},
};
const int head_ops_table_len = (int)(sizeof head_ops_table / sizeof head_ops_table[0]);

const head_ops *head_pick_for(unsigned have) {
    for (int i = 0; i < head_ops_table_len; i++)
        if ((head_ops_table[i].needs & ~have) == 0) return &head_ops_table[i];
    return &head_ops_table[head_ops_table_len - 1];
}

const head_ops *head_pick(void) {
    const unsigned have = kernel_cpu_features();
    const char *force = getenv("BN_HEAD_VARIANT");   /* tests: run a named variant this CPU has */
    if (force)
        for (int i = 0; i < head_ops_table_len; i++)
            if (strcmp(head_ops_table[i].name, force) == 0 && (head_ops_table[i].needs & ~have) == 0)
                return &head_ops_table[i];
    return head_pick_for(have);
}
