/* avxvnni_as_evex.h: force-included (-include) by tests/conftest.py's avxvnni_as_evex() when
 * it compiles i2s_avxvnni.c and head_avxvnni.c for a CPU with AVX-512 VNNI but no AVX-VNNI.
 * The intrinsic headers are read first, then the one VEX intrinsic those files use becomes
 * its EVEX twin: the same vpdpbusd on YMM registers (Intel SDM), in another encoding. The
 * files' own #include <immintrin.h> is then a no-op, and every other line runs unchanged. */
#include <immintrin.h>
#define _mm256_dpbusd_avx_epi32 _mm256_dpbusd_epi32
