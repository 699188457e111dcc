/* lwsinit: PID 1 and group agent for LeaderWorkerSet pods. */
#include "lwsinit/agent.h"
#include "lwsinit/config.h"
#include "lwsinit/launcher.h"
#include "lwsinit/log.h"
#include "lwsinit/probe_client.h"
#include "lwsinit/rsh.h"
#include "lwsinit/status.h"
#include "lwsinit/status_sock.h"
#include "lwsinit/termlog.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lwsinit_build.h"

extern char **environ;

/* `lwsinit status`: the status socket's document, as JSON or for a person. */
static int status_command(const struct lwsi_config *cfg)
{
  char *doc = NULL;
  int rc = lwsi_status_sock_fetch(cfg->status_socket, 3000, &doc);
  if (rc < 0) {
    dprintf(STDERR_FILENO, "lwsinit: cannot read status from %s: %s (is lwsinit running, and "
            "is this its --status-socket?)\n", cfg->status_socket, strerror(-rc));
    return 1;
  }
  if (cfg->status_json)
    fputs(doc, stdout);
  else if (lwsi_status_print(stdout, doc) < 0)
    rc = -EINVAL;
  free(doc);
  if (rc < 0) {
    dprintf(STDERR_FILENO, "lwsinit: %s did not answer with a status document\n",
            cfg->status_socket);
    return 1;
  }
  return 0;
}

/* `lwsinit probe live|ready`: for clusters that prefer exec probes. The
 * kubelet records an exec probe's output, so the failing check's reason
 * lands in the pod's events. */
static int probe_command(const struct lwsi_config *cfg)
{
  struct lwsi_probe_result res;
  int rc = lwsi_probe_client_get(cfg->probe_addr.host, cfg->probe_addr.port,
                                 lwsi_probe_client_path(cfg->probe_ready),
                                 LWSI_PROBE_CLIENT_TIMEOUT_MS, &res);
  if (rc < 0)
    dprintf(STDERR_FILENO, "lwsinit probe: %s port %u: %s\n", cfg->probe_addr.host,
            cfg->probe_addr.port, strerror(-rc));
  else if (res.status != 200)
    dprintf(STDERR_FILENO, "lwsinit probe: HTTP %d: %s\n", res.status, res.body);
  return lwsi_probe_client_exit_code(rc, &res);
}

/* `lwsinit rsh [-l USER] HOST COMMAND [ARG...]`: Open MPI's rsh agent
 * under preset mpi (agent/rsh_client.c). -l is taken and ignored, as the
 * command runs as the member agent's user; the socket is the agent's
 * default status socket, or LWSINIT_STATUS_SOCKET. A failure without a
 * remote exit status is 255, as with ssh(1). */
static int rsh_command(int argc, char **argv)
{
  int i = 2;
  if (i < argc && strcmp(argv[i], "-l") == 0)
    i += 2;
  else if (i < argc && strncmp(argv[i], "-l", 2) == 0)
    i++;
  if (i < argc && strcmp(argv[i], "--") == 0)
    i++;
  if (i + 1 >= argc || argv[i][0] == '-') {
    dprintf(STDERR_FILENO, "lwsinit rsh: usage: lwsinit rsh [-l USER] HOST COMMAND [ARG...]\n");
    return LWSI_EXIT_USAGE;
  }
  const char *sock = getenv("LWSINIT_STATUS_SOCKET");
  if (sock == NULL || sock[0] == '\0')
    sock = "/run/lwsinit/status.sock";
  char why[1200];
  int code = lwsi_rsh_client(sock, argv[i], argv + i + 1, argc - i - 1, why, sizeof(why));
  if (why[0] != '\0')
    dprintf(STDERR_FILENO, "lwsinit rsh: %s: %s\n", argv[i], why);
  return code;
}

/* A configuration error goes to the termination log too, as every failure
 * does (contract, "Exit status"): to the path given, or to the default
 * when it exists (a Kubernetes container has /dev/termination-log). */
static void report_config_error(const struct lwsi_config *cfg, const char *err)
{
  const char *path = cfg->termination_log;
  if (cfg->mode != LWSI_MODE_RUN)
    return;
  int rc = lwsi_termlog_report(path, cfg->termination_log_given, err);
  if (rc < 0)
    dprintf(STDERR_FILENO, "lwsinit: cannot write the termination log %s: %s\n", path,
            strerror(-rc));
}

int main(int argc, char **argv)
{
  /* Block signals before anything else, so that a SIGTERM that arrives
   * while we start up waits in the signalfd instead of killing us. */
  sigset_t orig;
  if (lwsi_supervisor_block_signals(&orig) < 0) {
    fprintf(stderr, "lwsinit: cannot block signals: %m\n");
    return 1;
  }

  if (argc > 1 && strcmp(argv[1], "rsh") == 0)
    return rsh_command(argc, argv);

  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  if (lwsi_config_parse(&cfg, argc, argv, environ, err, sizeof(err)) < 0) {
    dprintf(STDERR_FILENO, "%s\n", err);
    report_config_error(&cfg, err);
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
    return status_command(&cfg);
  case LWSI_MODE_PROBE:
    return probe_command(&cfg);
  case LWSI_MODE_RUN:
    break;
  }

  lwsi_log_setup(cfg.log_format, cfg.log_level, (int)cfg.rank);
  /* Best effort: at the soft limit we started with, the agent still works,
   * only with fewer connections (each accept failure is logged). */
  (void)lwsi_launcher_raise_nofile();
  static struct lwsi_agent agent;
  return lwsi_agent_run(&agent, &cfg, environ, &orig);
}
