/* Owns the Prometheus text writer and its buffer (include/lwsinit/metrics.h). */
#include "lwsinit/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The buffer ---- */

static int buf_append(struct lwsi_metrics_buf *b, const char *p, size_t n)
{
  if (b->err < 0)
    return b->err;
  if (n > LWSI_METRICS_BUF_MAX || b->len + n > LWSI_METRICS_BUF_MAX)
    return b->err = -EMSGSIZE;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL)
      return b->err = -ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static int buf_puts(struct lwsi_metrics_buf *b, const char *s)
{
  return buf_append(b, s, strlen(s));
}

void lwsi_metrics_buf_reset(struct lwsi_metrics_buf *b)
{
  b->len = 0;
  b->err = 0;
  if (b->data != NULL)
    b->data[0] = '\0';
}

void lwsi_metrics_buf_free(struct lwsi_metrics_buf *b)
{
  free(b->data);
  memset(b, 0, sizeof(*b));
}

/* ---- The writer ---- */

/* Names as the exposition format and the Prometheus data model define
 * them: metric [a-zA-Z_:][a-zA-Z0-9_:]*, label [a-zA-Z_][a-zA-Z0-9_]*
 * with "__" reserved for Prometheus itself. */
static bool name_ok(const char *s, bool colon)
{
  if (s == NULL || s[0] == '\0')
    return false;
  for (size_t i = 0; s[i] != '\0'; i++) {
    char c = s[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

static bool label_name_ok(const char *s)
{
  return name_ok(s, false) && strncmp(s, "__", 2) != 0;
}

/* HELP text escapes backslash and newline; label values also escape the
 * double quote (exposition format, "Comments, help text, and type
 * information" and "Line format"). */
static void append_escaped(struct lwsi_metrics_buf *b, const char *s, bool quote)
{
  const char *run = s;
  for (const char *p = s;; p++) {
    const char *esc = NULL;
    if (*p == '\\')
      esc = "\\\\";
    else if (*p == '\n')
      esc = "\\n";
    else if (quote && *p == '"')
      esc = "\\\"";
    else if (*p != '\0')
      continue;
    buf_append(b, run, (size_t)(p - run));
    if (esc == NULL)
      return;
    buf_puts(b, esc);
    run = p + 1;
  }
}

int lwsi_metrics_format_value(char *buf, size_t len, double v)
{
  int n;
  if (isnan(v))
    n = snprintf(buf, len, "NaN");
  else if (isinf(v))
    n = snprintf(buf, len, "%s", v > 0 ? "+Inf" : "-Inf");
  else {
    /* The shortest precision that reads back exactly: 0.1 prints as 0.1,
     * not 0.10000000000000001, and nothing is lost. %g never uses a
     * locale-dependent form here: the agent never calls setlocale(3). */
    n = 0;
    for (int prec = 15; prec <= 17; prec++) {
      n = snprintf(buf, len, "%.*g", prec, v);
      if (n < 0 || (size_t)n >= len || strtod(buf, NULL) == v)
        break;
    }
  }
  if (n < 0 || (size_t)n >= len)
    return -ENOSPC;
  return n;
}

int lwsi_metrics_family(struct lwsi_metrics_buf *b, const char *name, enum lwsi_metrics_type type,
                        const char *help)
{
  static const char *const types[] = {"gauge", "counter", "untyped"};
  if (!name_ok(name, true) || (unsigned)type > LWSI_METRICS_UNTYPED)
    return -EINVAL;
  if (help != NULL) {
    buf_puts(b, "# HELP ");
    buf_puts(b, name);
    buf_puts(b, " ");
    append_escaped(b, help, false);
    buf_puts(b, "\n");
  }
  buf_puts(b, "# TYPE ");
  buf_puts(b, name);
  buf_puts(b, " ");
  buf_puts(b, types[type]);
  buf_puts(b, "\n");
  return b->err;
}

static int sample_start(struct lwsi_metrics_buf *b, const char *name,
                        const struct lwsi_metrics_label *labels, size_t nlabels)
{
  if (!name_ok(name, true))
    return -EINVAL;
  for (size_t i = 0; i < nlabels; i++)
    if (!label_name_ok(labels[i].name))
      return -EINVAL;
  buf_puts(b, name);
  if (nlabels > 0) {
    buf_puts(b, "{");
    for (size_t i = 0; i < nlabels; i++) {
      if (i > 0)
        buf_puts(b, ",");
      buf_puts(b, labels[i].name);
      buf_puts(b, "=\"");
      append_escaped(b, labels[i].value != NULL ? labels[i].value : "", true);
      buf_puts(b, "\"");
    }
    buf_puts(b, "}");
  }
  return 0;
}

int lwsi_metrics_sample(struct lwsi_metrics_buf *b, const char *name,
                        const struct lwsi_metrics_label *labels, size_t nlabels, double value)
{
  char num[40];
  int rc = sample_start(b, name, labels, nlabels);
  if (rc < 0)
    return rc;
  lwsi_metrics_format_value(num, sizeof(num), value); /* 40 always suffices */
  buf_puts(b, " ");
  buf_puts(b, num);
  buf_puts(b, "\n");
  return b->err;
}

int lwsi_metrics_sample_u64(struct lwsi_metrics_buf *b, const char *name,
                            const struct lwsi_metrics_label *labels, size_t nlabels,
                            uint64_t value)
{
  int rc = sample_start(b, name, labels, nlabels);
  if (rc < 0)
    return rc;
  char num[32];
  snprintf(num, sizeof(num), " %" PRIu64 "\n", value);
  buf_puts(b, num);
  return b->err;
}

int lwsi_metrics_gauge(struct lwsi_metrics_buf *b, const char *name, const char *help, double value)
{
  int rc = lwsi_metrics_family(b, name, LWSI_METRICS_GAUGE, help);
  return rc < 0 ? rc : lwsi_metrics_sample(b, name, NULL, 0, value);
}

int lwsi_metrics_counter(struct lwsi_metrics_buf *b, const char *name, const char *help,
                         uint64_t value)
{
  int rc = lwsi_metrics_family(b, name, LWSI_METRICS_COUNTER, help);
  return rc < 0 ? rc : lwsi_metrics_sample_u64(b, name, NULL, 0, value);
}
