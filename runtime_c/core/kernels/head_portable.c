/* head_portable.c: the output head's rows in plain C (any CPU), the f16 -> f32 table they
 * use, and the block terms the SIMD rows share for their tail blocks. The numerics (block
 * terms, eight float lanes, one summation order) are described in head.h. */
#include <string.h>

#include "head.h"

float head_f16_table[65536];

static float f16_bits_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {                       /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void head_tables_init(void) {
    static int ready;
    if (ready) return;
    for (uint32_t i = 0; i < 65536; i++) head_f16_table[i] = f16_bits_to_f32((uint16_t)i);
    ready = 1;
}

/* The eight float lanes of an integer head's row, summed in the one fixed order. */
float head_lanes_sum(const float l[8]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

float head_q8_term(const int8_t *row, const head_xq *in, int b) {
    int32_t s = 0;
    for (int k = 0; k < 32; k++) s += (int32_t)row[b * 32 + k] * in->q[b * 32 + k];
    return in->d[b] * (float)s;
}

float head_q6_term(const uint8_t *row, const uint16_t *dw, const head_xq *in, int b) {
    const uint8_t *lo = row + (b >> 1) * 48, *hi = lo + 32;
    const int sh = 4 * (b & 1);                /* A: low nibbles / bits 0-3; B: high / bits 4-7 */
    int32_t s = 0;
    for (int k = 0; k < 32; k++) {
        int c = ((lo[k] >> sh) & 15) | (((hi[k & 15] >> (sh + 2 * (k >> 4))) & 3) << 4);
        s += c * in->q[b * 32 + k];
    }
    s -= 32 * in->sum[b];
    return (head_f16_table[dw[b]] * in->d[b]) * (float)s;
}

float head_q4_term(const uint8_t *row, const uint16_t *dw, const head_xq *in, int b) {
    const uint8_t *lo = row + (b >> 1) * 32;
    const int sh = 4 * (b & 1);
    int32_t s = 0;
    for (int k = 0; k < 32; k++) s += ((lo[k] >> sh) & 15) * in->q[b * 32 + k];
    s -= 8 * in->sum[b];
    return (head_f16_table[dw[b]] * in->d[b]) * (float)s;
}

void head_f16_portable(const uint16_t *m, const float *x, float *logits, int E, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const uint16_t *row = m + (size_t)v * E;
        float sum = 0.0f;
        for (int i = 0; i < E; i++) sum += head_f16_table[row[i]] * x[i];
        logits[v] = sum;
    }
}

void head_f32_portable(const float *m, const float *x, float *logits, int E, int v0, int v1) {
    for (int v = v0; v < v1; v++) {
        const float *row = m + (size_t)v * E;
        float sum = 0.0f;
        for (int i = 0; i < E; i++) sum += row[i] * x[i];
        logits[v] = sum;
    }
}

void head_q8_portable(const int8_t *q, const float *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    const int nb = head_q8_row(E) / 32;
    for (int v = v0; v < v1; v++) {
        const int8_t *row = q + (size_t)v * head_q8_row(E);
        float lanes[8] = {0};
        for (int b = 0; b < nb; b++) lanes[b & 7] += head_q8_term(row, in, b);
        logits[v] = head_lanes_sum(lanes) * d[v];
    }
}

/* q6 (six = 1) or q4 rows. */
static void qk_portable(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E,
                        int v0, int v1, int six) {
    const int nb = head_nb(E), row_bytes = six ? head_q6_row(E) : head_q4_row(E);
    for (int v = v0; v < v1; v++) {
        const uint8_t *row = q + (size_t)v * row_bytes;
        const uint16_t *dw = d + (size_t)v * nb;
        float lanes[8] = {0};
        for (int b = 0; b < nb; b++) lanes[b & 7] += six ? head_q6_term(row, dw, in, b) : head_q4_term(row, dw, in, b);
        logits[v] = head_lanes_sum(lanes);
    }
}

void head_q6_portable(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    qk_portable(q, d, in, logits, E, v0, v1, 1);
}

void head_q4_portable(const uint8_t *q, const uint16_t *d, const head_xq *in, float *logits, int E, int v0, int v1) {
    qk_portable(q, d, in, logits, E, v0, v1, 0);
}
