#include "lwsinit/agent.h"

#include "lwsinit/cmdline.h"
#include "lwsinit/expand.h"

#include <cjson/cJSON.h>
#include "lwsinit/launcher.h"
#include "lwsinit/log.h"
#include "lwsinit/status.h"
#include "lwsinit/termlog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const phase_names[LWSI_PHASE_COUNT] = {
  "resolving", "joining", "checking", "running", "stopping", "failed",
};

const char *lwsi_agent_phase_name(enum lwsi_phase p) { return phase_names[p]; }

static void set_phase(struct lwsi_agent *a, enum lwsi_phase p)
{
  uint64_t now = uv_now(&a->loop);
  a->phase_ms[a->phase] += now - a->phase_since_ms;
  a->phase_since_ms = now;
  if (a->phase != p)
    lwsi_log_debug("phase %s -> %s", phase_names[a->phase], phase_names[p]);
  a->phase = p;
}

/* Ends the run: every failure is one line on stderr and, where there is
 * one, in the termination log (contract, "Exit status"). */
static void finish(struct lwsi_agent *a, int code, const char *why)
{
  a->exit_code = code;
  a->done = true;
  if (why != NULL) {
    snprintf(a->last_error, sizeof(a->last_error), "%s", why);
    lwsi_log_error("%s", why);
    const char *path = a->cfg->termination_log;
    if (a->cfg->termination_log_given || access(path, F_OK) == 0) {
      int rc = lwsi_termlog_write(path, why, false);
      if (rc < 0)
        lwsi_log_warn("cannot write the termination log %s: %s", path, strerror(-rc));
    }
  }
  uv_stop(&a->loop);
}

static void on_supervisor(struct lwsi_supervisor *sup, enum lwsi_sup_event ev, int arg)
{
  struct lwsi_agent *a = sup->data;
  switch (ev) {
  case LWSI_SUP_STOP_SIGNAL:
    if (sup->child == 0) {
      /* Before launch there is nothing to drain: end as the signal would
       * have ended us (contract: a SIGTERM before launch exits 143). */
      lwsi_log_info("received SIG%s before the engine started; exiting %d", sigabbrev_np(arg),
                    128 + arg);
      set_phase(a, LWSI_PHASE_STOPPING);
      finish(a, 128 + arg, NULL);
      return;
    }
    if (!sup->stopping) {
      lwsi_log_info("received SIG%s; stopping the engine (drain %llu ms, grace %llu ms)",
                    sigabbrev_np(arg), (unsigned long long)sup->drain_ms,
                    (unsigned long long)sup->grace_ms);
      set_phase(a, LWSI_PHASE_STOPPING);
    }
    lwsi_supervisor_stop(sup, arg);
    return;
  case LWSI_SUP_FORWARDED:
    lwsi_log_debug("forwarded SIG%s to process group %d", sigabbrev_np(arg), (int)sup->child);
    return;
  case LWSI_SUP_DROPPED:
    lwsi_log_debug("SIG%s not forwarded: no engine is running", sigabbrev_np(arg));
    return;
  case LWSI_SUP_KILLED:
    lwsi_log_warn("the engine did not stop within the grace period (%llu ms); sent SIGKILL "
                  "to its process group",
                  (unsigned long long)sup->grace_ms);
    return;
  case LWSI_SUP_CHILD_EXITED: {
    int code = lwsi_supervisor_exit_code(arg);
    if (WIFSIGNALED(arg))
      lwsi_log_info("the engine (pid %d) was killed by SIG%s; exiting %d", (int)sup->child,
                    sigabbrev_np(WTERMSIG(arg)), code);
    else
      lwsi_log_info("the engine (pid %d) exited with status %d", (int)sup->child, code);
    if (!sup->stopping)
      set_phase(a, LWSI_PHASE_STOPPING);
    finish(a, code, NULL);
    return;
  }
  }
}

static int launch(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  const struct lwsi_cmdline_values vals = {
    .leader = cfg->leader, .leader_ip = a->leader_ip, .size = cfg->size, .rank = cfg->rank,
  };
  char **argv = NULL, **env = NULL;
  char bad[64];
  int rc = lwsi_cmdline_build(cfg, &vals, &argv, bad, sizeof(bad));
  if (rc == 0)
    rc = lwsi_launcher_env(a->envp, a->leader_ip, cfg->rank, cfg->size, &env);
  if (rc < 0) {
    char why[256];
    snprintf(why, sizeof(why), "cannot prepare the engine's command line: %s", strerror(-rc));
    lwsi_expand_free(argv);
    finish(a, 1, why);
    return rc;
  }
  rc = lwsi_supervisor_spawn(&a->sup, argv, env);
  if (rc == 0) {
    lwsi_log_info("started the engine '%s' as pid %d (rank %u of %u)", argv[0],
                  (int)a->sup.child, cfg->rank, cfg->size);
  } else {
    char why[512];
    int code = a->sup.child > 0 ? lwsi_launcher_exec_code(-rc) : 1;
    snprintf(why, sizeof(why), "cannot run the engine '%s': %s (exit %d); check COMMAND and %s",
             argv[0], strerror(-rc), code,
             code == 127 ? "the PATH" : "the file's execute permission");
    set_phase(a, LWSI_PHASE_FAILED);
    finish(a, code, why);
  }
  lwsi_expand_free(argv);
  lwsi_launcher_env_free(env);
  return rc;
}

bool lwsi_agent_ready(struct lwsi_agent *a)
{
  return a->phase == LWSI_PHASE_RUNNING && a->sup.child_running;
}

void lwsi_agent_status_upstream(struct lwsi_agent *a, cJSON *doc)
{
  cJSON *up = cJSON_AddObjectToObject(doc, "upstream");
  if (up != NULL)
    cJSON_AddBoolToObject(up, "enabled", 0);
}

void lwsi_agent_status_members(struct lwsi_agent *a, cJSON *doc)
{
  (void)a;
  (void)doc;
}

static void on_close_walk(uv_handle_t *h, void *arg)
{
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Starts what every agent has (signals, status socket), then the first
 * phase. Whatever fails here ends the run through finish(). */
static void start(struct lwsi_agent *a, const sigset_t *orig_mask)
{
  const struct lwsi_config *cfg = a->cfg;
  int rc = lwsi_supervisor_init(&a->sup, &a->loop, orig_mask, cfg->drain_delay_ms,
                                cfg->grace_ms, on_supervisor);
  a->sup.data = a;
  if (rc < 0) {
    char why[256];
    snprintf(why, sizeof(why), "cannot set up signal handling: %s", strerror(-rc));
    finish(a, 1, why);
    return;
  }
  rc = lwsi_status_sock_start(&a->status_sock, &a->loop, cfg->status_socket, lwsi_status_render,
                              a);
  if (rc < 0) {
    /* People lose a view, the group loses nothing: keep going. */
    lwsi_log_warn("status socket %s not available: %s", cfg->status_socket, uv_strerror(rc));
  }
  if (!cfg->standalone) {
    finish(a, LWSI_EXIT_USAGE, "group mode is not available in this build yet");
    return;
  }
  snprintf(a->leader_ip, sizeof(a->leader_ip), "127.0.0.1");
  set_phase(a, LWSI_PHASE_RUNNING);
  launch(a);
}

int lwsi_agent_run(struct lwsi_agent *a, const struct lwsi_config *cfg, char **envp,
                   const sigset_t *orig_mask)
{
  memset(a, 0, sizeof(*a));
  a->cfg = cfg;
  a->envp = envp;
  a->exit_code = 1;
  int rc = uv_loop_init(&a->loop);
  if (rc < 0) {
    lwsi_log_error("cannot start the event loop: %s", uv_strerror(rc));
    return 1;
  }
  a->started_ms = uv_now(&a->loop);
  a->phase_since_ms = a->started_ms;
  start(a, orig_mask);
  if (!a->done)
    uv_run(&a->loop, UV_RUN_DEFAULT);

  /* Close every handle and let the loop finish closing them, so that the
   * loop closes cleanly and valgrind sees nothing left behind. */
  lwsi_supervisor_close(&a->sup);
  lwsi_status_sock_close(&a->status_sock);
  uv_walk(&a->loop, on_close_walk, NULL);
  uv_run(&a->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&a->loop) < 0)
    lwsi_log_debug("event loop closed with handles still open");
  return a->exit_code;
}
