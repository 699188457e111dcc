/* Shared by the libFuzzer harnesses in tests/fuzz/ (built by run.sh, not
 * by meson). A failed CHECK is a finding: it prints the condition and
 * aborts, which libFuzzer reports as a crash and saves the input. */
#ifndef LWSINIT_FUZZ_H
#define LWSINIT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, #cond);     \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A NUL-terminated heap copy of the input, exactly size + 1 bytes, so that
 * ASan sees any read past the end. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
  char *s = malloc(size + 1);
  if (s == NULL)
    abort();
  for (size_t i = 0; i < size; i++)
    s[i] = (char)data[i];
  s[size] = '\0';
  return s;
}

/* Chunk sizes for feeding a stream in pieces: small and uneven, so that
 * every boundary (inside a header, a length, a line) is crossed. */
static const size_t fuzz_chunks[] = {1, 2, 3, 5, 8, 13, 4, 1, 7, 64, 6, 100, 11, 1000, 9};
#define FUZZ_NCHUNKS (sizeof(fuzz_chunks) / sizeof(fuzz_chunks[0]))

#endif
