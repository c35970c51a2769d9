/* sha256.h: SHA-256 (FIPS 180-4), for verifying the embedded weights. */
#ifndef BITNET_SHA256_H
#define BITNET_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t total;        /* bytes hashed so far */
    uint8_t buf[64];       /* pending partial block */
    size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
void sha256_hex(const uint8_t digest[32], char out[65]);

#endif
