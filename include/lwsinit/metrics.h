/* A small writer of the Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/), into a
 * buffer of its own. Pure string work: the agent decides what to expose,
 * and the probe server copies the text into its answer.
 *
 *   lwsi_metrics_family(b, "lwsinit_members", LWSI_METRICS_GAUGE, "Members by state.");
 *   lwsi_metrics_sample(b, "lwsinit_members",
 *                       (const struct lwsi_metrics_label[]){{"state", "alive"}}, 1, 3);
 *
 * gives
 *
 *   # HELP lwsinit_members Members by state.
 *   # TYPE lwsinit_members gauge
 *   lwsinit_members{state="alive"} 3
 */
#ifndef LWSINIT_METRICS_H
#define LWSINIT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "lwsinit/buf.h"

enum lwsi_metrics_type { LWSI_METRICS_GAUGE, LWSI_METRICS_COUNTER, LWSI_METRICS_UNTYPED };

struct lwsi_metrics_label {
  const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" */
  const char *value; /* any UTF-8; escaped here. NULL is "" */
};

/* Writes "# HELP name help" (help escaped: backslash, newline) and
 * "# TYPE name type". help may be NULL (no HELP line). Returns 0, -EINVAL
 * for a bad metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), or the buffer's error. */
int lwsi_metrics_family(struct lwsi_buf *b, const char *name, enum lwsi_metrics_type type,
                        const char *help);

/* Writes one sample line: name{label="value",...} value. Label values are
 * escaped (backslash, double quote, newline). Returns 0, -EINVAL for a bad
 * metric or label name, or the buffer's error. */
int lwsi_metrics_sample(struct lwsi_buf *b, const char *name,
                        const struct lwsi_metrics_label *labels, size_t nlabels, double value);

/* The same with an exact integer value (counters beyond 2^53 stay exact). */
int lwsi_metrics_sample_u64(struct lwsi_buf *b, const char *name,
                            const struct lwsi_metrics_label *labels, size_t nlabels,
                            uint64_t value);

/* A family of one unlabelled sample: HELP, TYPE and the sample. */
int lwsi_metrics_gauge(struct lwsi_buf *b, const char *name, const char *help, double value);
int lwsi_metrics_counter(struct lwsi_buf *b, const char *name, const char *help,
                         uint64_t value);

/* Formats a value as Prometheus parses it (Go's ParseFloat): the shortest
 * of %.15g..%.17g that reads back exactly, "+Inf", "-Inf" or "NaN".
 * Returns the length, or -ENOSPC when len is too small (32 is enough). */
int lwsi_metrics_format_value(char *buf, size_t len, double v);

#endif
