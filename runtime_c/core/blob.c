/* blob.c: opening the weights, verifying them, and the build's info JSON.
 *
 * Embedded weights (the default) are a read-only section of the executable, emitted by the
 * generated blob.S with .incbin: the kernel maps them lazily on first touch, so start-up
 * costs nothing and nothing is copied. External weights (--weights external at build time)
 * are a file beside the binary, mapped read-only (read into memory where there is no
 * mmap, as on Windows and WASI: platform.c).
 */
#include "bitnet.h"
#include "model_internal.h"
#include "sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform.h"

const char *bn_info_json(void) { return BN_BUILD_INFO_JSON; }

/* ---- the blob ---- */

#if BN_WEIGHTS_EXTERNAL
static const uint8_t *blob_ptr;
#elif BN_BLOB_POINTER_TABLE
extern const uint8_t *const bn_weights_ptr;   /* blob.S: a 64-bit pointer, so any distance links */
static const uint8_t *blob_ptr;
#else
extern const uint8_t bn_weights_data[];       /* blob.S: .incbin of weights.bin */
static const uint8_t *blob_ptr;
#endif

const uint8_t *bn_blob(void) { return blob_ptr; }

#if BN_WEIGHTS_EXTERNAL
static int open_external(const char *path) {
    uint64_t found;
    const void *p = platform_map_file(path, BN_WEIGHTS_BYTES, &found);
    if (p) { blob_ptr = p; return 0; }
    if (found == UINT64_MAX)
        bn_set_error("cannot open the weights file %s (%s); it must sit beside the binary or be given with --weights FILE",
                     path, strerror(errno));
    else if (found != (uint64_t)BN_WEIGHTS_BYTES)
        bn_set_error("weights file %s has %llu bytes, this binary expects %llu; it belongs to another build",
                     path, (unsigned long long)found, (unsigned long long)BN_WEIGHTS_BYTES);
    else
        bn_set_error("cannot map or read the weights file %s (%s)", path, strerror(errno));
    return -1;
}
#endif

int bn_init(const char *weights_path) {
    head_init();
    if (blob_ptr) return 0;
#if BN_WEIGHTS_EXTERNAL
    char def[4096];
    if (!weights_path) {
        if (platform_executable_path(def, sizeof def - 16) != 0) {
            bn_set_error("cannot locate the weights file; pass --weights FILE");
            return -1;
        }
        strcat(def, ".weights");
        weights_path = def;
    }
    return open_external(weights_path);
#else
    (void)weights_path;
#if BN_BLOB_POINTER_TABLE
    blob_ptr = bn_weights_ptr;
#else
    blob_ptr = bn_weights_data;
#endif
    return 0;
#endif
}

int bn_verify(char *hex_out) {
    if (bn_init(NULL) != 0) return 0;
    sha256_ctx ctx;
    sha256_init(&ctx);
    const uint64_t total = BN_WEIGHTS_BYTES;
    for (uint64_t done = 0; done < total; ) {
        uint64_t n = total - done < (1u << 24) ? total - done : (1u << 24);
        sha256_update(&ctx, blob_ptr + done, (size_t)n);
        done += n;
    }
    uint8_t digest[32];
    char hex[65];
    sha256_final(&ctx, digest);
    sha256_hex(digest, hex);
    if (hex_out) memcpy(hex_out, hex, 65);
    return strcmp(hex, BN_WEIGHTS_SHA256) == 0;
}
