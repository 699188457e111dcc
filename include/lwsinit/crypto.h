/* SHA-256 and HMAC-SHA256 from OpenSSL's libcrypto, loaded with dlopen(3)
 * on first use. Linking libcrypto cost PID 1 about 4 ms of start-up and
 * 400 KiB of private memory (its relocations; docs/benchmarks.md), for two
 * functions that only a group needs. A standalone init never loads it. */
#ifndef LWSINIT_CRYPTO_H
#define LWSINIT_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LWSI_SHA256_LEN 32

/* Loads libcrypto once ("libcrypto.so.3"). Returns 0, or -ELIBACC when it
 * is not there, -ELIBBAD when a function is missing. */
int lwsi_crypto_load(void);

int lwsi_crypto_sha256(const void *data, size_t len, uint8_t out[LWSI_SHA256_LEN]);
int lwsi_crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                            uint8_t out[LWSI_SHA256_LEN]);

/* Compares in time that does not depend on where a and b differ. */
bool lwsi_crypto_equal(const void *a, const void *b, size_t len);

#endif
