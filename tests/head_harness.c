/* head_harness.c: runtime_c/core/head.c alone, on the weights of a generated tree, with the CPU
 * features it dispatches on set from the command line (tests/test_head.py).
 *
 *   head_harness WEIGHTS.BIN FEATURES < x.f32 > logits.f32
 *
 * FEATURES is a KCPU_* mask (0: the portable rows). stdin holds T vectors of E float32 (the
 * head's input); stdout gets T rows of V float32 logits, from head_prepare + head_rows over
 * the whole vocabulary split in three uneven ranges (as threads would split it).
 * Compiled with the generated tree's -Isrc -Igen and linked with src/head.c and
 * gen/weights_index.c; this file provides bn_blob and kernel_cpu_features.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/model_internal.h"

static unsigned features;
static uint8_t *blob;

unsigned kernel_cpu_features(void) { return features; }
const uint8_t *bn_blob(void) { return blob; }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s WEIGHTS.BIN FEATURES\n", argv[0]); return 2; }
    features = (unsigned)strtoul(argv[2], NULL, 0);
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    blob = malloc((size_t)size);
    if (!blob || fread(blob, 1, (size_t)size, f) != (size_t)size) { fprintf(stderr, "cannot read weights\n"); return 1; }
    fclose(f);
    head_init();
    static float x[BN_N_EMBD], logits[BN_N_VOCAB];
    static head_input in;
    const int cut[4] = {0, BN_N_VOCAB / 5, BN_N_VOCAB / 2 + 1, BN_N_VOCAB};
    while (fread(x, sizeof(float), BN_N_EMBD, stdin) == BN_N_EMBD) {
        head_prepare(&in, BN_HEAD_TYPE, x);
        for (int i = 0; i < 3; i++) head_rows(&BN_WEIGHTS_INDEX.output, BN_HEAD_TYPE, &in, logits, cut[i], cut[i + 1]);
        fwrite(logits, sizeof(float), BN_N_VOCAB, stdout);
    }
    free(blob);
    return 0;
}
