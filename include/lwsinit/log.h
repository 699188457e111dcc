/* The one logger: text or JSON lines to stderr, each with the rank. Only the
 * top layer (main, and the agent's event handlers) logs; modules return
 * negative errno values. */
#ifndef LWSINIT_LOG_H
#define LWSINIT_LOG_H

#include <stddef.h>

#include "lwsinit/config.h"

void lwsi_log_setup(enum lwsi_log_format format, enum lwsi_log_level level, int rank);
void lwsi_log_set_rank(int rank);
void lwsi_log(enum lwsi_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Room for any name lwsi_log_signal_name writes. */
#define LWSI_LOG_SIGNAL_NAME_MAX 24

/* The name of signal sig for a log line, written to buf and returned:
 * "SIGTERM"; a real-time signal as kill -l spells it ("SIGRTMIN",
 * "SIGRTMIN+1", "SIGRTMAX-14", "SIGRTMAX"), since sigabbrev_np(3) returns
 * NULL for those; anything else "signal N". */
const char *lwsi_log_signal_name(int sig, char *buf, size_t len);

#define lwsi_log_debug(...) lwsi_log(LWSI_LOG_DEBUG, __VA_ARGS__)
#define lwsi_log_info(...) lwsi_log(LWSI_LOG_INFO, __VA_ARGS__)
#define lwsi_log_warn(...) lwsi_log(LWSI_LOG_WARN, __VA_ARGS__)
#define lwsi_log_error(...) lwsi_log(LWSI_LOG_ERROR, __VA_ARGS__)

#endif
