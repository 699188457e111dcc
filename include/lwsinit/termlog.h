/* The termination message (Kubernetes' terminationMessagePath). */
#ifndef LWSINIT_TERMLOG_H
#define LWSINIT_TERMLOG_H

#include <stdbool.h>

/* Writes msg and a newline to path, replacing what is there. With
 * keep_existing, a file that already holds text (the engine's own message)
 * is left alone. Returns 0 or a negative errno. */
int lwsi_termlog_write(const char *path, const char *msg, bool keep_existing);

#endif
