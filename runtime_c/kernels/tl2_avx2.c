/* tl2_avx2.c: placeholder forwarding to the scalar tl2 kernel until the AVX2 version lands. */
#include "kernels.h"
void tl2_gemv_avx2(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int rb, int re, void *s){tl2_gemv_scalar(w,x,y,KP,rb,re,s);}
void tl2_gemm_avx2(const uint8_t *w, const int8_t *x, int32_t *y, int N,int M,int KP, int rb, int re, void *s){tl2_gemm_scalar(w,x,y,N,M,KP,rb,re,s);}
