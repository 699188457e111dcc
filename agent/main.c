/* lwsinit: PID 1 and group agent for LeaderWorkerSet pods. */
#include "lwsinit/agent.h"
#include "lwsinit/config.h"
#include "lwsinit/log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lwsinit_build.h"

extern char **environ;

int main(int argc, char **argv)
{
  /* Block signals before anything else, so that a SIGTERM that arrives
   * while we start up waits in the signalfd instead of killing us. */
  sigset_t orig;
  if (lwsi_supervisor_block_signals(&orig) < 0) {
    fprintf(stderr, "lwsinit: cannot block signals: %m\n");
    return 1;
  }

  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  if (lwsi_config_parse(&cfg, argc, argv, environ, err, sizeof(err)) < 0) {
    dprintf(STDERR_FILENO, "%s\n", err);
    return LWSI_EXIT_USAGE;
  }
  switch (cfg.mode) {
  case LWSI_MODE_HELP:
    lwsi_config_usage(STDOUT_FILENO);
    return 0;
  case LWSI_MODE_VERSION:
    dprintf(STDOUT_FILENO, "lwsinit %s\n", LWSI_VERSION);
    return 0;
  case LWSI_MODE_STATUS:
  case LWSI_MODE_PROBE:
    dprintf(STDERR_FILENO, "lwsinit: '%s' is not available in this build yet\n", argv[1]);
    return LWSI_EXIT_USAGE;
  case LWSI_MODE_RUN:
    break;
  }

  lwsi_log_setup(cfg.log_format, cfg.log_level, (int)cfg.rank);
  static struct lwsi_agent agent;
  return lwsi_agent_run(&agent, &cfg, environ, &orig);
}
