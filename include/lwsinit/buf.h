/* A growable text buffer for answers built in memory (HTTP bodies, the
 * metrics text, the status document's text). libc only. */
#ifndef LWSINIT_BUF_H
#define LWSINIT_BUF_H

#include <stddef.h>

#define LWSI_BUF_MAX (16u << 20) /* the largest text kept: the largest probe answer */

/* Kept NUL-terminated; a zeroed struct is an empty buffer. The first
 * failure (-ENOMEM, or -EMSGSIZE past LWSI_BUF_MAX) is sticky in err and
 * makes later appends no-ops, so a writer may append freely and check
 * once. */
struct lwsi_buf {
  char *data; /* NULL while nothing was ever appended */
  size_t len;
  size_t cap;
  int err; /* 0 or the first negative errno */
};

int lwsi_buf_append(struct lwsi_buf *b, const void *p, size_t n);
int lwsi_buf_puts(struct lwsi_buf *b, const char *s);
int lwsi_buf_printf(struct lwsi_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Empties the buffer and clears err; keeps the memory. */
void lwsi_buf_reset(struct lwsi_buf *b);
void lwsi_buf_free(struct lwsi_buf *b);

#endif
