/* Log lines go to stderr in one write(2) each, so that lines from the agent
 * and from the engine (which shares stderr) never interleave mid-line. */
#include "lwsinit/log.h"

#include "lwsinit/text.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
  enum lwsi_log_format format;
  enum lwsi_log_level level;
  int rank;
} g_log = {LWSI_LOG_TEXT, LWSI_LOG_INFO, 0};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void lwsi_log_setup(enum lwsi_log_format format, enum lwsi_log_level level, int rank)
{
  g_log.format = format;
  g_log.level = level;
  g_log.rank = rank;
}

void lwsi_log_set_rank(int rank) { g_log.rank = rank; }

const char *lwsi_log_signal_name(int sig, char *buf, size_t len)
{
  const char *abbrev = sig > 0 ? sigabbrev_np(sig) : NULL;
  if (abbrev != NULL) {
    lwsi_text_printf(buf, len, "SIG%s", abbrev);
  } else if (sig >= SIGRTMIN && sig <= SIGRTMAX) {
    /* Counted from the nearer end, as bash's kill -l lists them. */
    int up = sig - SIGRTMIN, down = SIGRTMAX - sig;
    if (up == 0)
      lwsi_text_printf(buf, len, "SIGRTMIN");
    else if (down == 0)
      lwsi_text_printf(buf, len, "SIGRTMAX");
    else if (up <= down)
      lwsi_text_printf(buf, len, "SIGRTMIN+%d", up);
    else
      lwsi_text_printf(buf, len, "SIGRTMAX-%d", down);
  } else {
    lwsi_text_printf(buf, len, "signal %d", sig);
  }
  return buf;
}

/* Appends s to buf as the inside of a JSON string. */
static size_t json_escape(char *buf, size_t cap, size_t o, const char *s)
{
  for (; *s != '\0' && o + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20) {
      o += (size_t)snprintf(buf + o, cap - o, "\\u%04x", c);
    } else {
      buf[o++] = (char)c;
    }
  }
  return o;
}

static void write_line(const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, buf, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return; /* Nowhere left to report a failing stderr. */
    }
    buf += n;
    len -= (size_t)n;
  }
}

void lwsi_log(enum lwsi_log_level level, const char *fmt, ...)
{
  if (level < g_log.level)
    return;
  int saved = errno;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);

  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char when[40];
  size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + w, sizeof(when) - w, ".%03ldZ", ts.tv_nsec / 1000000);

  char line[4352];
  size_t o;
  if (g_log.format == LWSI_LOG_JSON) {
    o = (size_t)snprintf(line, sizeof(line),
                         "{\"ts\":\"%s\",\"level\":\"%s\",\"rank\":%d,\"msg\":\"", when,
                         level_names[level], g_log.rank);
    o = json_escape(line, sizeof(line) - 3, o, msg);
    line[o++] = '"';
    line[o++] = '}';
  } else {
    o = (size_t)snprintf(line, sizeof(line), "%s lwsinit[%d] %s: %s", when, g_log.rank,
                         level_names[level], msg);
    if (o > sizeof(line) - 2)
      o = sizeof(line) - 2;
  }
  line[o++] = '\n';
  write_line(line, o);
  errno = saved;
}
