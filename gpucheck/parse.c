/* Owns the GPU check's NCCL-id text protocol
 * (include/lwsinit/gpucheck_parse.h): hex, the id lines on stdin, and the
 * nccl_id event. */
#include "lwsinit/gpucheck_parse.h"

#include <errno.h>
#include <string.h>

#include "lwsinit/text.h"

void lwsi_gpucheck_id_to_hex(const lwsi_nccl_unique_id *id, char hex[LWSI_GPUCHECK_HEX_LEN + 1])
{
  static const char digits[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)id->internal;
  for (size_t i = 0; i < LWSI_NCCL_UNIQUE_ID_BYTES; i++) {
    hex[2 * i] = digits[p[i] >> 4];
    hex[2 * i + 1] = digits[p[i] & 15];
  }
  hex[LWSI_GPUCHECK_HEX_LEN] = '\0';
}

int lwsi_gpucheck_hex_to_id(const char *s, const char **end, lwsi_nccl_unique_id *id)
{
  for (size_t i = 0; i < LWSI_NCCL_UNIQUE_ID_BYTES; i++) {
    /* A NUL is not a digit, so neither read goes past the string's end. */
    int hi = lwsi_text_hexval(s[2 * i]);
    int lo = hi < 0 ? -1 : lwsi_text_hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -EINVAL;
    id->internal[i] = (char)(hi << 4 | lo);
  }
  if (lwsi_text_hexval(s[LWSI_GPUCHECK_HEX_LEN]) >= 0)
    return -EINVAL;
  *end = s + LWSI_GPUCHECK_HEX_LEN;
  return 0;
}

static const char *skip_blanks(const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

int lwsi_gpucheck_parse_id_line(const char *line, lwsi_nccl_unique_id *id)
{
  const char *s = skip_blanks(line);
  const char *end;
  if (lwsi_text_hexval(*s) >= 0) {
    if (lwsi_gpucheck_hex_to_id(s, &end, id) < 0)
      return -EINVAL;
    while (*end == ' ' || *end == '\t' || *end == '\r')
      end++;
    return *end == '\0' ? 0 : -EINVAL;
  }
  /* Not a JSON parser: the agent writes this one key in this one form, and
   * lines without it are ignored, so that the agent may add messages later
   * without breaking older checks. */
  const char *k = strstr(line, "\"nccl_id\"");
  if (k == NULL)
    return -EINVAL;
  s = skip_blanks(k + strlen("\"nccl_id\""));
  if (*s++ != ':')
    return -EINVAL;
  s = skip_blanks(s);
  if (*s++ != '"')
    return -EINVAL;
  if (lwsi_gpucheck_hex_to_id(s, &end, id) < 0 || *end != '"')
    return -EINVAL;
  return 0;
}

void lwsi_gpucheck_id_event(const lwsi_nccl_unique_id *id, char buf[LWSI_GPUCHECK_ID_EVENT_MAX])
{
  char hex[LWSI_GPUCHECK_HEX_LEN + 1];
  lwsi_gpucheck_id_to_hex(id, hex);
  lwsi_text_printf(buf, LWSI_GPUCHECK_ID_EVENT_MAX, "{\"event\":\"nccl_id\",\"id\":\"%s\"}", hex);
}

char *lwsi_gpucheck_lines_space(struct lwsi_gpucheck_lines *l, size_t *room)
{
  /* One byte stays free for the NUL that ends the last line. */
  *room = sizeof(l->buf) - 1 - l->have;
  return l->buf + l->have;
}

int lwsi_gpucheck_lines_add(struct lwsi_gpucheck_lines *l, size_t n, lwsi_nccl_unique_id *id)
{
  l->have += n;
  l->buf[l->have] = '\0';
  char *nl;
  while ((nl = memchr(l->buf, '\n', l->have)) != NULL) {
    *nl = '\0';
    if (lwsi_gpucheck_parse_id_line(l->buf, id) == 0)
      return 0;
    size_t used = (size_t)(nl + 1 - l->buf);
    memmove(l->buf, nl + 1, l->have - used);
    l->have -= used;
    l->buf[l->have] = '\0';
  }
  if (l->have == sizeof(l->buf) - 1)
    l->have = 0; /* a line longer than any id line: drop it */
  return -EAGAIN;
}

int lwsi_gpucheck_lines_end(struct lwsi_gpucheck_lines *l, lwsi_nccl_unique_id *id)
{
  l->buf[l->have] = '\0';
  if (l->have > 0 && lwsi_gpucheck_parse_id_line(l->buf, id) == 0)
    return 0;
  return -ENODATA;
}
