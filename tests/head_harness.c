/* head_harness.c: runtime_c/core/head.c and the head row kernels alone, on the weights of a
 * generated tree (tests/test_head.py).
 *
 *   BN_HEAD_VARIANT=NAME head_harness WEIGHTS.BIN < x.f32 > logits.f32
 *
 * NAME: a head variant of kernels/dispatch.c this CPU has. BN_HEAD_UNCHECKED=NAME instead runs
 * that row without the CPU check: test_head.py does so for the
 * AVX-VNNI rows compiled to their EVEX twin (conftest.avxvnni_as_evex) on a CPU without
 * AVX-VNNI. stdin holds T vectors of E float32
 * (the head's input); stdout gets T rows of V float32 logits, from head_prepare + head_rows_with
 * over the whole vocabulary split in three uneven ranges (as threads would split it); stderr
 * gets "head NAME" of the variant that ran. Compiled with the generated tree's -Isrc -Igen,
 * linked with its src/core/head.c, gen/weights_index.c and the target's kernel objects
 * (bitnet_aot.kernels.build_kernel_program); this file provides bn_blob.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model_internal.h"
#include "core/kernels/head.h"

static uint8_t *blob;

const uint8_t *bn_blob(void) { return blob; }

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: BN_HEAD_VARIANT=NAME %s WEIGHTS.BIN\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    blob = malloc((size_t)size);
    if (!blob || fread(blob, 1, (size_t)size, f) != (size_t)size) { fprintf(stderr, "cannot read weights\n"); return 1; }
    fclose(f);
    head_init();
    const char *unchecked = getenv("BN_HEAD_UNCHECKED");
    const head_ops *k = NULL;
    for (int i = 0; unchecked && i < head_ops_table_len; i++)
        if (strcmp(head_ops_table[i].name, unchecked) == 0) k = &head_ops_table[i];
    if (unchecked && !k) {
        fprintf(stderr, "BN_HEAD_UNCHECKED=%s: no such head variant\n", unchecked);
        return 2;
    }
    if (!k) k = head_pick();
    fprintf(stderr, "head %s\n", k->name);
    static float x[BN_N_EMBD], logits[BN_N_VOCAB];
    static head_input in;
    const int cut[4] = {0, BN_N_VOCAB / 5, BN_N_VOCAB / 2 + 1, BN_N_VOCAB};
    while (fread(x, sizeof(float), BN_N_EMBD, stdin) == BN_N_EMBD) {
        head_prepare(&in, BN_HEAD_TYPE, x);
        for (int i = 0; i < 3; i++)
            head_rows_with(k, &BN_WEIGHTS_INDEX.output, BN_HEAD_TYPE, &in, logits, cut[i], cut[i + 1]);
        fwrite(logits, sizeof(float), BN_N_VOCAB, stdout);
    }
    free(blob);
    return 0;
}
