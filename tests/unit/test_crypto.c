/* SHA-256 and HMAC-SHA256 through the dlopen'd libcrypto, against the
 * published vectors (FIPS 180-2 "abc"; RFC 4231 test case 2). */
#include "lwsinit/crypto.h"

#include <stdio.h>
#include <string.h>

#include "tap.h"

static void hex(const uint8_t *b, char *out)
{
  for (int i = 0; i < LWSI_SHA256_LEN; i++)
    sprintf(out + 2 * i, "%02x", b[i]);
}

int main(void)
{
  uint8_t d[LWSI_SHA256_LEN];
  char h[2 * LWSI_SHA256_LEN + 1];
  TAP_OK(lwsi_crypto_load() == 0, "libcrypto loads");
  TAP_OK(lwsi_crypto_sha256("abc", 3, d) == 0, "sha256");
  hex(d, h);
  TAP_STR_EQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256(abc)");
  const char *msg = "what do ya want for nothing?";
  TAP_OK(lwsi_crypto_hmac_sha256("Jefe", 4, msg, strlen(msg), d) == 0, "hmac");
  hex(d, h);
  TAP_STR_EQ(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
             "RFC 4231 case 2");
  uint8_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
  TAP_OK(lwsi_crypto_equal(a, a, 4) && !lwsi_crypto_equal(a, b, 4), "constant-time compare");
  return tap_done();
}
