/* Owns the Prometheus text writer and its buffer (include/lwsinit/metrics.h). */
#include "lwsinit/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
static void append_escaped(struct lwsi_buf *b, const char *s, bool quote)
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
    lwsi_buf_append(b, run, (size_t)(p - run));
    if (esc == NULL)
      return;
    lwsi_buf_puts(b, esc);
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

int lwsi_metrics_family(struct lwsi_buf *b, const char *name, enum lwsi_metrics_type type,
                        const char *help)
{
  static const char *const types[] = {"gauge", "counter", "untyped"};
  if (!name_ok(name, true) || (unsigned)type > LWSI_METRICS_UNTYPED)
    return -EINVAL;
  if (help != NULL) {
    lwsi_buf_puts(b, "# HELP ");
    lwsi_buf_puts(b, name);
    lwsi_buf_puts(b, " ");
    append_escaped(b, help, false);
    lwsi_buf_puts(b, "\n");
  }
  lwsi_buf_puts(b, "# TYPE ");
  lwsi_buf_puts(b, name);
  lwsi_buf_puts(b, " ");
  lwsi_buf_puts(b, types[type]);
  lwsi_buf_puts(b, "\n");
  return b->err;
}

static int sample_start(struct lwsi_buf *b, const char *name,
                        const struct lwsi_metrics_label *labels, size_t nlabels)
{
  if (!name_ok(name, true))
    return -EINVAL;
  for (size_t i = 0; i < nlabels; i++)
    if (!label_name_ok(labels[i].name))
      return -EINVAL;
  lwsi_buf_puts(b, name);
  if (nlabels > 0) {
    lwsi_buf_puts(b, "{");
    for (size_t i = 0; i < nlabels; i++) {
      if (i > 0)
        lwsi_buf_puts(b, ",");
      lwsi_buf_puts(b, labels[i].name);
      lwsi_buf_puts(b, "=\"");
      append_escaped(b, labels[i].value != NULL ? labels[i].value : "", true);
      lwsi_buf_puts(b, "\"");
    }
    lwsi_buf_puts(b, "}");
  }
  return 0;
}

int lwsi_metrics_sample(struct lwsi_buf *b, const char *name,
                        const struct lwsi_metrics_label *labels, size_t nlabels, double value)
{
  char num[40];
  int rc = sample_start(b, name, labels, nlabels);
  if (rc < 0)
    return rc;
  lwsi_metrics_format_value(num, sizeof(num), value); /* 40 always suffices */
  lwsi_buf_puts(b, " ");
  lwsi_buf_puts(b, num);
  lwsi_buf_puts(b, "\n");
  return b->err;
}

int lwsi_metrics_sample_u64(struct lwsi_buf *b, const char *name,
                            const struct lwsi_metrics_label *labels, size_t nlabels,
                            uint64_t value)
{
  int rc = sample_start(b, name, labels, nlabels);
  if (rc < 0)
    return rc;
  char num[32];
  snprintf(num, sizeof(num), " %" PRIu64 "\n", value);
  lwsi_buf_puts(b, num);
  return b->err;
}

int lwsi_metrics_gauge(struct lwsi_buf *b, const char *name, const char *help, double value)
{
  int rc = lwsi_metrics_family(b, name, LWSI_METRICS_GAUGE, help);
  return rc < 0 ? rc : lwsi_metrics_sample(b, name, NULL, 0, value);
}

int lwsi_metrics_counter(struct lwsi_buf *b, const char *name, const char *help,
                         uint64_t value)
{
  int rc = lwsi_metrics_family(b, name, LWSI_METRICS_COUNTER, help);
  return rc < 0 ? rc : lwsi_metrics_sample_u64(b, name, NULL, 0, value);
}
