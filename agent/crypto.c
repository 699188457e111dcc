#include "lwsinit/crypto.h"

#include <dlfcn.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* The few functions used, typed from OpenSSL's own headers so that every
 * call is checked, and resolved at run time. */
static struct {
  bool loaded;
  __typeof__(&EVP_sha256) sha256;
  __typeof__(&EVP_Digest) digest;
  __typeof__(&HMAC) hmac;
} g_crypto;

int lwsi_crypto_load(void)
{
  if (g_crypto.loaded)
    return 0;
  /* Never dlclose'd: OpenSSL 3 registers an atexit handler. */
  void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (h == NULL)
    return -ELIBACC;
  /* Before anything else initialises it: no openssl.cnf. SHA-256 and HMAC
   * come from the built-in default provider; reading the system's
   * configuration costs a file read and a parse in every agent's start
   * (measurable in a group's start-up, docs/benchmarks.md), and would let
   * it change what PID 1 loads
   * (engines, providers: OPENSSL_init_crypto(3), config(5ossl)). */
  __typeof__(&OPENSSL_init_crypto) init =
      (__typeof__(init))dlsym(h, "OPENSSL_init_crypto");
  if (init == NULL || !init(OPENSSL_INIT_NO_LOAD_CONFIG, NULL))
    return -ELIBBAD;
  g_crypto.sha256 = (__typeof__(g_crypto.sha256))dlsym(h, "EVP_sha256");
  g_crypto.digest = (__typeof__(g_crypto.digest))dlsym(h, "EVP_Digest");
  g_crypto.hmac = (__typeof__(g_crypto.hmac))dlsym(h, "HMAC");
  if (g_crypto.sha256 == NULL || g_crypto.digest == NULL || g_crypto.hmac == NULL)
    return -ELIBBAD;
  g_crypto.loaded = true;
  return 0;
}

int lwsi_crypto_sha256(const void *data, size_t len, uint8_t out[LWSI_SHA256_LEN])
{
  int rc = lwsi_crypto_load();
  if (rc < 0)
    return rc;
  unsigned int n = 0;
  if (!g_crypto.digest(data, len, out, &n, g_crypto.sha256(), NULL) || n != LWSI_SHA256_LEN)
    return -EIO;
  return 0;
}

int lwsi_crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                            uint8_t out[LWSI_SHA256_LEN])
{
  int rc = lwsi_crypto_load();
  if (rc < 0)
    return rc;
  if (keylen > (size_t)INT32_MAX)
    return -EINVAL;
  unsigned int n = 0;
  if (g_crypto.hmac(g_crypto.sha256(), key, (int)keylen, data, len, out, &n) == NULL ||
      n != LWSI_SHA256_LEN)
    return -EIO;
  return 0;
}

bool lwsi_crypto_equal(const void *a, const void *b, size_t len)
{
  /* As CRYPTO_memcmp: OR every difference, branch once at the end. */
  const volatile uint8_t *x = a, *y = b;
  uint8_t diff = 0;
  for (size_t i = 0; i < len; i++)
    diff |= (uint8_t)(x[i] ^ y[i]);
  return diff == 0;
}
