/* Bounded text helpers shared by the agent, the probes and the GPU check
 * program: best-effort lines into fixed buffers, and hex digits. libc only,
 * so that the separate check program can link them too. */
#ifndef LWSINIT_TEXT_H
#define LWSINIT_TEXT_H

#include <stddef.h>

/* snprintf into buf of len bytes. Every text written this way is a bounded,
 * best-effort line: truncation is the intended behaviour, not an error, and
 * an encoding error leaves an empty string. */
void lwsi_text_printf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies src (NULL: "") into dst of size bytes, truncating. */
void lwsi_text_copy(char *dst, size_t size, const char *src);

/* The value of one hex digit (either case), or -1. */
int lwsi_text_hexval(char c);

#endif
