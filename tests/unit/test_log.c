/* The log module's signal names (agent/log.c): classic signals by their
 * abbreviation, real-time ones as kill -l spells them, others by number. */
#include "lwsinit/log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"

static const char *name(int sig)
{
  static char buf[LWSI_LOG_SIGNAL_NAME_MAX];
  return lwsi_log_signal_name(sig, buf, sizeof(buf));
}

int main(void)
{
  TAP_STR_EQ(name(SIGTERM), "SIGTERM", "SIGTERM");
  TAP_STR_EQ(name(SIGKILL), "SIGKILL", "SIGKILL");
  TAP_STR_EQ(name(SIGSYS), "SIGSYS", "the last classic signal");
  TAP_STR_EQ(name(SIGRTMIN), "SIGRTMIN", "SIGRTMIN");
  TAP_STR_EQ(name(SIGRTMIN + 1), "SIGRTMIN+1", "SIGRTMIN+1");
  TAP_STR_EQ(name(SIGRTMAX), "SIGRTMAX", "SIGRTMAX");
  TAP_STR_EQ(name(SIGRTMAX - 1), "SIGRTMAX-1", "SIGRTMAX-1");
  /* With glibc's 34..64: 49 is RTMIN+15 and 50 RTMAX-14, as in bash. */
  int mid = SIGRTMIN + (SIGRTMAX - SIGRTMIN) / 2;
  char want[32];
  snprintf(want, sizeof(want), "SIGRTMIN+%d", mid - SIGRTMIN);
  TAP_STR_EQ(name(mid), want, "the middle counts from SIGRTMIN");
  snprintf(want, sizeof(want), "SIGRTMAX-%d", SIGRTMAX - (mid + 1));
  TAP_STR_EQ(name(mid + 1), want, "past the middle counts from SIGRTMAX");
  /* The kernel's real-time signals that the C library keeps for itself
   * (signal(7)) have no name here. */
  if (SIGRTMIN > 32)
    TAP_STR_EQ(name(32), "signal 32", "a signal without a name is its number");
  else
    TAP_SKIP("the C library keeps no real-time signal below SIGRTMIN");
  TAP_STR_EQ(name(0), "signal 0", "0");
  snprintf(want, sizeof(want), "signal %d", SIGRTMAX + 1);
  TAP_STR_EQ(name(SIGRTMAX + 1), want, "past SIGRTMAX");
  char tiny[8];
  TAP_STR_EQ(lwsi_log_signal_name(SIGRTMIN + 1, tiny, sizeof(tiny)), "SIGRTMI",
             "a short buffer truncates");
  return tap_done();
}
