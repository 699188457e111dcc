/* Owns the growable text buffer (include/lwsinit/buf.h). */
#include "lwsinit/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lwsi_buf_append(struct lwsi_buf *b, const void *p, size_t n)
{
  if (b->err < 0)
    return b->err;
  if (n > LWSI_BUF_MAX || b->len + n > LWSI_BUF_MAX)
    return b->err = -EMSGSIZE;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL)
      return b->err = -ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int lwsi_buf_puts(struct lwsi_buf *b, const char *s)
{
  return lwsi_buf_append(b, s, strlen(s));
}

int lwsi_buf_printf(struct lwsi_buf *b, const char *fmt, ...)
{
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0)
    return b->err < 0 ? b->err : (b->err = -EINVAL);
  if ((size_t)n < sizeof(small))
    return lwsi_buf_append(b, small, (size_t)n);
  /* Longer than the stack copy: format into a heap copy of the right size. */
  if (b->err < 0)
    return b->err;
  char *tmp = malloc((size_t)n + 1);
  if (tmp == NULL)
    return b->err = -ENOMEM;
  va_start(ap, fmt);
  vsnprintf(tmp, (size_t)n + 1, fmt, ap);
  va_end(ap);
  int rc = lwsi_buf_append(b, tmp, (size_t)n);
  free(tmp);
  return rc;
}

void lwsi_buf_reset(struct lwsi_buf *b)
{
  b->len = 0;
  b->err = 0;
  if (b->data != NULL)
    b->data[0] = '\0';
}

void lwsi_buf_free(struct lwsi_buf *b)
{
  free(b->data);
  memset(b, 0, sizeof(*b));
}
