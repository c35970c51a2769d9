/* tl1_neon.c: placeholder forwarding to the scalar tl1 kernel until the NEON version lands. */
#include "kernels.h"
void tl1_gemv_neon(const uint8_t *w, const int8_t *x, int32_t *y, int KP, int rb, int re, void *s){tl1_gemv_scalar(w,x,y,KP,rb,re,s);}
void tl1_gemm_neon(const uint8_t *w, const int8_t *x, int32_t *y, int N,int M,int KP, int rb, int re, void *s){tl1_gemm_scalar(w,x,y,N,M,KP,rb,re,s);}
