/* Owns the bounded-text helpers (include/lwsinit/text.h). */
#include "lwsinit/text.h"

#include <stdarg.h>
#include <stdio.h>

void lwsi_text_printf(char *buf, size_t len, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, len, fmt, ap);
  va_end(ap);
  if (n < 0 && len > 0)
    buf[0] = '\0';
}

void lwsi_text_copy(char *dst, size_t size, const char *src)
{
  lwsi_text_printf(dst, size, "%s", src != NULL ? src : "");
}

int lwsi_text_hexval(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}
