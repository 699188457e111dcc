/* The termination message (Kubernetes' terminationMessagePath). */
#ifndef LWSINIT_TERMLOG_H
#define LWSINIT_TERMLOG_H

#include <stdbool.h>

/* Writes msg and a newline to path, replacing what is there. With
 * keep_existing, a file that already holds text (the engine's own message)
 * is left alone. Returns 0 or a negative errno. */
int lwsi_termlog_write(const char *path, const char *msg, bool keep_existing);

/* Reports a failure: writes msg to path when the path was given, or when
 * it exists (the default, /dev/termination-log, which Kubernetes creates;
 * never created by us). Returns 0 (also when nothing was written) or a
 * negative errno. */
int lwsi_termlog_report(const char *path, bool given, const char *msg);

#endif
