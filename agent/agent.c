/* The top layer: phases, exit codes, and the only place (with main) that
 * logs. Modules report events; this file decides what they mean. */
#include "lwsinit/agent.h"

#include "lwsinit/cmdline.h"
#include "lwsinit/engine.h"
#include "lwsinit/expand.h"
#include "lwsinit/gpurun.h"
#include "lwsinit/health.h"
#include "lwsinit/launchck.h"
#include "lwsinit/launcher.h"
#include "lwsinit/log.h"
#include "lwsinit/metrics.h"
#include "lwsinit/phases.h"
#include "lwsinit/status.h"
#include "lwsinit/termlog.h"
#include "lwsinit/text.h"
#include "lwsinit/wire.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const phase_names[LWSI_PHASE_COUNT] = {
  "resolving", "joining", "checking", "running", "restarting", "stopping", "failed",
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

static bool is_leader(const struct lwsi_agent *a)
{
  return !a->cfg->standalone && a->cfg->rank == 0;
}

/* Group health and the ordered stop: defined in their own section below. */
static bool fail_delay_start(struct lwsi_agent *a);
static bool ordered_stop_signal(struct lwsi_agent *a, int sig, const char *name);
static bool ordered_child_exited(struct lwsi_agent *a, int code);
static void engine_failed_tell(struct lwsi_agent *a, const char *why);
static bool ordered_member_lost(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev);
static void on_group_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev);
static void hang_watch(struct lwsi_agent *a);
/* The launch in phases: defined in their own section below. */
static bool phases_finish_hold(struct lwsi_agent *a, int code, const char *why);
static bool phases_divert(struct lwsi_agent *a);
static bool phases_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev);
static const char *child_what(const struct lwsi_agent *a);

/* Restart in place (--on-failure restart): its own section below. */
static bool restart_child_exited(struct lwsi_agent *a, int code, const char *what);
static bool restart_engine_hung(struct lwsi_agent *a, const char *why);
static bool restart_stop_signal(struct lwsi_agent *a, int sig, const char *name);
static bool restart_member_lost(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev,
                                const char *why);
static void restart_member_joined(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev);
static bool restart_engine_failed_msg(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev);
static bool restart_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev);
static void restart_close(struct lwsi_agent *a);
static bool restart_rejoined(struct lwsi_agent *a);
static void restart_epoch_seen(struct lwsi_agent *a, int64_t rank, const cJSON *o);
static bool restart_take_epoch(struct lwsi_agent *a, const cJSON *o);
static void check_program(char *buf, size_t len);

/* The engine's state, in the one vocabulary that the status document and
 * the heartbeats share (lwsi_status_child_name). */
static bool mpi_worker_serving(const struct lwsi_agent *a);

static enum lwsi_status_child child_state(const struct lwsi_agent *a)
{
  if (a->sup.child_running || mpi_worker_serving(a))
    return LWSI_STATUS_CHILD_RUNNING;
  if (a->sup.child > 0)
    return LWSI_STATUS_CHILD_EXITED;
  return LWSI_STATUS_CHILD_NOT_STARTED;
}

/* Every failure is one line on stderr and, where there is one, in the
 * termination log (contract, "Exit status"). */
static void report_failure(struct lwsi_agent *a, const char *why)
{
  lwsi_text_copy(a->last_error, sizeof(a->last_error), why); /* truncation intended */
  lwsi_log_error("%s", why);
  const char *path = a->cfg->termination_log;
  int rc = lwsi_termlog_report(path, a->cfg->termination_log_given, why);
  if (rc < 0)
    lwsi_log_warn("cannot write the termination log %s: %s", path, strerror(-rc));
}

/* Ends the run with code; why, when given, is the failure to report. */
static void finish(struct lwsi_agent *a, int code, const char *why)
{
  if (a->done || phases_finish_hold(a, code, why))
    return;
  a->exit_code = code;
  a->done = true;
  if (why != NULL) {
    if (a->phase != LWSI_PHASE_STOPPING)
      set_phase(a, LWSI_PHASE_FAILED);
    report_failure(a, why);
  }
  if (fail_delay_start(a))
    return;
  uv_stop(&a->loop);
}

/* Tells the group this member is going, once; nothing is heard afterwards. */
static void leave_group(struct lwsi_agent *a, const char *reason)
{
  if (a->rdzv_on && lwsi_rdzv_leave(&a->rdzv, reason) == 0)
    lwsi_log_debug("told the group: %s", reason);
}

/* Stops the engine on the group's behalf and exits with code afterwards.
 * Before launch there is nothing to stop: exit at once. */
static void stop_for_group(struct lwsi_agent *a, int code, const char *why)
{
  if (a->sup.child_running) {
    if (a->stop_exit_code == 0) {
      a->stop_exit_code = code;
      report_failure(a, why);
      lwsi_log_info("stopping the engine (grace %llu ms)", (unsigned long long)a->cfg->grace_ms);
      set_phase(a, LWSI_PHASE_STOPPING);
      lwsi_upstream_close(&a->upstream);
      lwsi_supervisor_stop(&a->sup, SIGTERM, false);
    }
    return;
  }
  finish(a, code, why);
}

/* ---- group health and the ordered stop ------------------------------ */

/* The group's own messages after release (docs/protocol.md, "app"):
 *   stopping       leader -> workers: the leader's stop began (SIGTERM);
 *   engine_exited  leader -> workers: the leader's engine has exited
 *                  during its stop, so theirs may stop now;
 *   engine_failed  a member -> the leader -> the others: its engine
 *                  exited on its own or hung; {"rank":N,"reason":"..."}. */
#define MSG_STOPPING "stopping"
#define MSG_ENGINE_EXITED "engine_exited"
#define MSG_ENGINE_FAILED "engine_failed"

/* The rank a group message speaks for. A worker speaks for itself only:
 * the rendezvous gives its connection's rank, which the join proved; a
 * "rank" in its data is not taken (a worker must not name another rank's
 * failure). The leader speaks for anyone: it passes on what a worker said.
 * -1: the leader named no rank, or one no group has. */
static int64_t msg_rank(const struct lwsi_rdzv_event *ev, const cJSON *o)
{
  if (ev->rank != 0)
    return ev->rank;
  const cJSON *rank = cJSON_GetObjectItemCaseSensitive(o, "rank");
  return cJSON_IsNumber(rank) && rank->valuedouble >= 0 &&
                 rank->valuedouble < LWSI_WIRE_MAX_SIZE
             ? (int64_t)rank->valuedouble
             : -1;
}

static bool group_released(const struct lwsi_agent *a)
{
  return a->rdzv_on && a->rdzv.state == LWSI_RDZV_RELEASED && a->cfg->size > 1;
}

/* What this agent reports of its engine in its heartbeats, and in its own
 * row of the leader's status. */
static void local_health(struct lwsi_agent *a, struct lwsi_rdzv_local *out)
{
  const struct lwsi_upstream *u = &a->upstream;
  lwsi_text_copy(out->child, sizeof(out->child), lwsi_status_child_name(child_state(a)));
  out->upstream = a->upstream_on && u->ok;
  out->has_health = true;
  out->upstream_on = a->upstream_on;
  out->upstream_age_ms = a->upstream_on && u->known ? uv_now(&a->loop) - u->changed_ms : 0;
  const char *err = !a->upstream_on || u->ok ? ""
                    : a->upstream_err[0]     ? a->upstream_err
                    : !u->known              ? "no answer yet"
                                             : u->last_error;
  lwsi_text_copy(out->upstream_error, sizeof(out->upstream_error), err);
  out->stopping = a->sup.stopping || a->phase >= LWSI_PHASE_STOPPING;
}

static void on_fail_delay_end(uv_timer_t *t)
{
  struct lwsi_agent *a = t->data;
  uv_stop(&a->loop);
}

/* --fail-delay (contract, "Exit status"): before exiting 3, 4, 5 or 7, stay
 * up unready with the reason in /status, so that a failing group is seen
 * and is not recreated in a hot loop (kubernetes-sigs/lws#1048). Returns
 * true when the delay began: the exit waits for its timer. */
static bool fail_delay_start(struct lwsi_agent *a)
{
  int code = a->exit_code;
  if (a->fail_delay_on || a->cfg->fail_delay_ms == 0 || !a->group_timers_on ||
      (code != LWSI_EXIT_DNS && code != LWSI_EXIT_RDZV && code != LWSI_EXIT_GPU &&
       code != LWSI_EXIT_HANG))
    return false;
  a->fail_delay_on = true;
  set_phase(a, LWSI_PHASE_FAILED);
  /* Nothing of the group goes on meanwhile: the others learn at once. The
   * reason is short, as the wire bounds it; the full line is in /status. */
  char bye[64];
  snprintf(bye, sizeof(bye), "failed (exit %d)", code);
  leave_group(a, bye);
  lwsi_upstream_close(&a->upstream);
  if (a->reresolve_timer_on)
    uv_timer_stop(&a->reresolve_timer);
  lwsi_log_info("staying up for %.3g s (--fail-delay), unready, before exiting %d",
                (double)a->cfg->fail_delay_ms / 1000.0, code);
  uv_timer_start(&a->fail_timer, on_fail_delay_end, a->cfg->fail_delay_ms, 0);
  return true;
}

/* Tells the group that this member's engine failed (exited on its own, or
 * hung), so that the others' line names the rank and the reason instead of
 * a bare loss. A worker tells the leader, which tells every worker. */
static void engine_failed_tell(struct lwsi_agent *a, const char *why)
{
  if (!group_released(a))
    return;
  char data[1200], reason[700];
  lwsi_text_copy(reason, sizeof(reason), why);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "rank", a->cfg->rank);
  cJSON_AddStringToObject(o, "reason", reason);
  cJSON_AddNumberToObject(o, "epoch", a->rs.epoch);
  if (cJSON_PrintPreallocated(o, data, sizeof(data), 0)) {
    int rc = a->cfg->rank == 0 ? lwsi_rdzv_app_broadcast(&a->rdzv, MSG_ENGINE_FAILED, data)
                               : lwsi_rdzv_app_send(&a->rdzv, MSG_ENGINE_FAILED, data);
    if (rc < 0)
      lwsi_log_debug("cannot tell the group that the engine failed: %s", strerror(-rc));
  }
  cJSON_Delete(o);
}

/* Another member's engine failed: with --on-failure exit (the only policy
 * this build acts on), this member stops its engine and exits 6. */
static void on_engine_failed(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  if (a->ordered_stop || a->stop_exit_code != 0 || a->done)
    return; /* Stopping already: its own child's status, or the first failure, wins. */
  if (restart_engine_failed_msg(a, ev))
    return;
  cJSON *o = cJSON_Parse(ev->data);
  const cJSON *reason = cJSON_GetObjectItemCaseSensitive(o, "reason");
  const char *text = cJSON_IsString(reason) ? reason->valuestring : "no reason given";
  char why[1400];
  long long r = msg_rank(ev, o);
  snprintf(why, sizeof(why), "the engine failed on rank %lld: %s", r, text);
  /* The leader passes the word on before it leaves, so that every worker
   * names the failed rank rather than a lost leader: in its own words,
   * with the rank the sender's connection proved. */
  if (a->cfg->rank == 0 && group_released(a)) {
    char data[1200], copy[700];
    lwsi_text_copy(copy, sizeof(copy), text);
    cJSON *relay = cJSON_CreateObject();
    cJSON_AddNumberToObject(relay, "rank", (double)r);
    cJSON_AddStringToObject(relay, "reason", copy);
    if (cJSON_PrintPreallocated(relay, data, sizeof(data), 0) &&
        lwsi_rdzv_app_broadcast(&a->rdzv, MSG_ENGINE_FAILED, data) < 0)
      lwsi_log_debug("cannot pass on that an engine failed");
    cJSON_Delete(relay);
  }
  cJSON_Delete(o);
  leave_group(a, "an engine of the group failed");
  stop_for_group(a, LWSI_EXIT_PEER, why);
}

/* The ordered stop (contract, "The init"): a worker's engine keeps serving
 * its leader's in-flight requests until the leader's engine has exited (or
 * the leader is gone), and its own drain has passed, at the latest
 * --drain-delay + --grace after its stop began. */
static void ordered_stop_begin(struct lwsi_agent *a, int sig, const char *who)
{
  const struct lwsi_config *cfg = a->cfg;
  a->ordered_stop = true;
  set_phase(a, LWSI_PHASE_STOPPING);
  if (cfg->rank == 0) {
    lwsi_log_info("%s; stopping the group in order: the engine gets %s after the drain "
                  "(%llu ms), the workers' engines once it has exited",
                  who, sig == SIGINT ? "SIGINT" : "SIGTERM",
                  (unsigned long long)cfg->drain_delay_ms);
    if (lwsi_rdzv_app_broadcast(&a->rdzv, MSG_STOPPING, "{}") < 0)
      lwsi_log_debug("cannot tell the workers that the leader stops");
  } else {
    bool wait = !a->leader_engine_exited;
    struct lwsi_rdzv_member m;
    if (lwsi_rdzv_member(&a->rdzv, 0, &m) == 0 && !m.alive)
      wait = false;
    lwsi_log_info("%s; unready now, the engine gets SIGTERM after the drain (%llu ms)%s", who,
                  (unsigned long long)cfg->drain_delay_ms,
                  wait ? " once the leader's engine has exited (at the latest after the drain "
                         "and the grace)"
                       : "");
    if (wait)
      lwsi_supervisor_hold(&a->sup, cfg->drain_delay_ms + cfg->grace_ms);
  }
  lwsi_supervisor_stop(&a->sup, sig, true);
}

/* SIGTERM or SIGINT while the engine runs in a released group. Returns
 * false when the plain stop applies (no group, before launch, or a second
 * signal, which hurries the stop as always). */
static bool ordered_stop_signal(struct lwsi_agent *a, int sig, const char *name)
{
  if (a->sup.child == 0 || !a->sup.child_running || !group_released(a) ||
      a->stop_exit_code != 0)
    return false;
  if (a->sup.stopping) {
    /* The leader's word began this stop: our own signal (a group deletion
     * signals every pod at once) is not a second one, and must not cut the
     * ordered stop short. */
    if (a->ordered_stop && !a->stop_by_signal) {
      a->stop_by_signal = true;
      lwsi_log_info("received %s; already stopping in order", name);
      return true;
    }
    return false;
  }
  a->stop_by_signal = true;
  char who[64];
  snprintf(who, sizeof(who), "received %s", name);
  ordered_stop_begin(a, sig, who);
  return true;
}

/* The engine exited during the ordered stop: the leader tells its workers
 * (their engines may stop now), then everyone leaves with a bye and exits
 * with the child's status. Returns false outside an ordered stop. */
static bool ordered_child_exited(struct lwsi_agent *a, int code)
{
  if (!a->ordered_stop)
    return false;
  char why[96];
  /* Preset mpi: the job's end, even when stopped, is every worker's end,
   * with its status (contract, "Launching", preset mpi). */
  if (a->rsh_on && a->cfg->preset == LWSI_PRESET_MPI && is_leader(a) &&
      lwsi_rsh_group_exit(&a->rsh, code) < 0)
    lwsi_log_debug("cannot tell the workers that the MPI job ended");
  if (a->cfg->rank == 0 && group_released(a) &&
      lwsi_rdzv_app_broadcast(&a->rdzv, MSG_ENGINE_EXITED, "{}") < 0)
    lwsi_log_debug("cannot tell the workers that the leader's engine exited");
  snprintf(why, sizeof(why), "stopped: the engine on rank %u exited with status %d", a->cfg->rank,
           code);
  leave_group(a, why);
  finish(a, code, NULL);
  return true;
}

/* While this agent stops in order, a member that leaves is no loss: the
 * agent exits with its child's status. The leader gone releases a held
 * forward. Returns false when the loss policy applies. */
static bool ordered_member_lost(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  if (!a->ordered_stop)
    return false;
  lwsi_log_info("rank %lld left while stopping (%s): not a loss", (long long)ev->rank,
                ev->reason);
  if (ev->rank == 0) {
    a->leader_engine_exited = true;
    lwsi_supervisor_release(&a->sup);
  }
  return true;
}

static void on_group_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  if (strcmp(ev->kind, MSG_ENGINE_FAILED) == 0) {
    on_engine_failed(a, ev);
    return;
  }
  if (a->cfg->rank == 0 || ev->rank != 0 || a->done)
    return; /* Only a worker takes the leader's stop messages. */
  if (strcmp(ev->kind, MSG_STOPPING) == 0) {
    if (!a->sup.stopping && a->sup.child_running && a->stop_exit_code == 0)
      ordered_stop_begin(a, SIGTERM, "the leader is stopping");
    else if (!a->sup.child_running && a->sup.child == 0 && !a->done &&
             !mpi_worker_serving(a)) {
      /* Before launch (a GPU check, say) there is no engine to order. A
       * worker of preset mpi serves the leader's job instead of an engine
       * of its own: it stays until the job's end (mpi_exit) or the
       * leader's bye, as when the leader is lost. */
      lwsi_log_info("the leader is stopping before the engine started; exiting 143");
      leave_group(a, "the leader is stopping");
      set_phase(a, LWSI_PHASE_STOPPING);
      finish(a, 128 + SIGTERM, NULL);
    }
  } else if (strcmp(ev->kind, MSG_ENGINE_EXITED) == 0) {
    a->leader_engine_exited = true;
    lwsi_log_info("the leader's engine has exited");
    if (!a->sup.stopping && a->sup.child_running && a->stop_exit_code == 0)
      ordered_stop_begin(a, SIGTERM, "the leader's engine has exited");
    lwsi_supervisor_release(&a->sup);
  }
}

/* --hang-timeout (contract, "Membership"): an engine that answered healthy
 * once and has failed every poll for that long has hung. With --on-failure
 * exit this member stops its engine and exits 7; the group learns which
 * rank and why, and the others exit 6. */
static void engine_hung(struct lwsi_agent *a)
{
  const struct lwsi_upstream *u = &a->upstream;
  uint64_t now = uv_now(&a->loop);
  uint64_t failed_ms = now - u->failing_since_ms;
  /* No wall-clock time here: deadlines and their texts use the monotonic
   * clock only; the log line's own timestamp dates the verdict. */
  char why[1600];
  snprintf(why, sizeof(why),
           "the engine hung: its health URL %s has failed every poll for %.1f s, since it last "
           "answered healthy (--hang-timeout %.3g s; last: %s); check the engine's log for a "
           "stuck collective or a GPU fault",
           a->upstream_url, (double)failed_ms / 1000.0, (double)a->cfg->hang_timeout_ms / 1000.0,
           u->last_error);
  if (restart_engine_hung(a, why))
    return;
  engine_failed_tell(a, why);
  char bye[96];
  snprintf(bye, sizeof(bye), "the engine on rank %u hung", a->cfg->rank);
  leave_group(a, bye);
  stop_for_group(a, LWSI_EXIT_HANG, why);
}

static void on_hang_timer(uv_timer_t *t)
{
  hang_watch(t->data);
}

/* Arms the hang timer for when the engine would count as hung, from the
 * upstream's own account (lwsi_upstream_hang_left), and acts when it has. */
static void hang_watch(struct lwsi_agent *a)
{
  if (!a->group_timers_on || a->cfg->hang_timeout_ms == 0)
    return;
  uv_timer_stop(&a->hang_timer);
  if (!a->upstream_on || a->sup.stopping || a->phase >= LWSI_PHASE_STOPPING || a->done)
    return;
  uint64_t left =
      lwsi_upstream_hang_left(&a->upstream, uv_now(&a->loop), a->cfg->hang_timeout_ms);
  if (left == 0)
    engine_hung(a);
  else if (left != UINT64_MAX)
    uv_timer_start(&a->hang_timer, on_hang_timer, left, 0);
}

/* ---- the engine ---------------------------------------------------- */

/* Our engine's state changed: the group hears it with the next tick, not
 * a heartbeat period later (the leader's /readyz waits on it). */
static void beat_soon(struct lwsi_agent *a)
{
  if (a->rdzv_on)
    lwsi_rdzv_beat_soon(&a->rdzv);
}

static void on_upstream(struct lwsi_upstream *u)
{
  if (u->ok)
    lwsi_log_info("the engine's health URL answers (HTTP %ld, %.0f ms)", u->http_status,
                  u->last_latency_s * 1e3);
  else if (u->polls == 1)
    lwsi_log_info("the engine's health URL does not answer yet: %s", u->last_error);
  else
    lwsi_log_warn("the engine's health URL fails: %s", u->last_error);
  hang_watch(u->data);
  beat_soon(u->data);
}

/* Polls the engine's health URL, when there is one, after launch: libcurl
 * is loaded only now, since loading it costs ~10 ms and ~8 MiB that PID 1
 * need not pay before the engine starts. */
static void start_upstream(struct lwsi_agent *a, char *const *argv)
{
  const struct lwsi_config *cfg = a->cfg;
  if (strcmp(cfg->upstream, "none") == 0)
    return;
  if (cfg->upstream[0] != '\0')
    snprintf(a->upstream_url, sizeof(a->upstream_url), "%s", cfg->upstream);
  else if (lwsi_engine_health_url(lwsi_engine_get(cfg->preset), cfg->rank == 0, argv,
                                  a->upstream_url, sizeof(a->upstream_url)) < 0)
    return;
  a->upstream.data = a;
  a->upstream_on = true;
  int rc = lwsi_upstream_start(&a->upstream, &a->loop, a->upstream_url, cfg->upstream_interval_ms,
                               cfg->upstream_timeout_ms, on_upstream, a->upstream_err,
                               sizeof(a->upstream_err));
  if (rc < 0)
    lwsi_log_warn("cannot poll the engine's health URL %s: %s", a->upstream_url,
                  a->upstream_err);
  else
    lwsi_log_info("polling %s every %llu ms", a->upstream_url,
                  (unsigned long long)cfg->upstream_interval_ms);
}

void lwsi_agent_cmdline_error(char *buf, size_t len, int err, const char *bad)
{
  if (err == -ENOENT && bad != NULL && bad[0] != '\0')
    lwsi_text_printf(buf, len, "cannot prepare the engine's command line: unknown placeholder {%s}",
                     bad);
  else if (err == -ENODATA && bad != NULL && bad[0] != '\0')
    lwsi_text_printf(buf, len,
                     "cannot prepare the engine's command line: the placeholder {%s} has no value "
                     "here", bad);
  else
    lwsi_text_printf(buf, len, "cannot prepare the engine's command line: %s", strerror(-err));
}

int lwsi_agent_spawn_error(char *buf, size_t len, const char *prog, int err, bool exec_failed)
{
  if (!exec_failed) {
    /* The launcher fails before exec only when it cannot make the process:
     * pipe2(2) (descriptors) or vfork(2) (EAGAIN at RLIMIT_NPROC, ENOMEM).
     * The file was never looked at. */
    lwsi_text_printf(buf, len,
                     "cannot start the engine '%s': no process could be created for it "
                     "(pipe2 or vfork): %s (exit 1)",
                     prog, strerror(-err));
    return 1;
  }
  int code = lwsi_launcher_exec_code(-err);
  /* execve(2): EACCES is the file's (or a folder's) permission; ENOENT and
   * ENOTDIR a name not found; the rest (ENOEXEC, ETXTBSY, E2BIG, ...) name
   * their cause in the error's own words. */
  const char *hint = code == 127         ? "; check COMMAND and the PATH"
                     : err == -EACCES    ? "; check COMMAND and the file's execute permission"
                                         : "; check COMMAND";
  lwsi_text_printf(buf, len, "cannot run the engine '%s': %s (exit %d)%s", prog, strerror(-err),
                   code, hint);
  return code;
}

/* ---- the network environment (contract, "Node check and network
 * environment") ---------------------------------------------------- */

/* Works out the engine's NCCL and Gloo variables (--network-env auto) and
 * gives, in *out, env with those the agent sets (free() the array). */
static int network_env(struct lwsi_agent *a, char **env, char ***out)
{
  const struct lwsi_config *cfg = a->cfg;
  if (cfg->network_env == LWSI_NETWORK_ENV_OFF)
    return lwsi_netenv_env(env, &a->netenv, out);
  const struct lwsi_netenv_input in = {
    .root = "",
    .envp = a->envp,
    .standalone = cfg->standalone,
    .is_leader = is_leader(a),
    .leader_ip = a->leader_ip,
    /* The leader's leader_ip is where its workers reached it (on_released). */
    .leader_addr = a->leader_ip,
    .rdma = &a->rdma,
  };
  lwsi_netenv_compute(&a->netenv, &in);
  for (size_t i = 0; i < a->netenv.n; i++) {
    const struct lwsi_netenv_var *v = &a->netenv.vars[i];
    if (v->set)
      lwsi_log_info("network: %s=%s for the engine (%s)", v->name, v->value, v->reason);
    else if (v->kept)
      lwsi_log_info("network: %s=%s kept: set by the user", v->name, v->value);
    else
      lwsi_log_debug("network: %s not set: %s", v->name, v->reason);
  }
  return lwsi_netenv_env(env, &a->netenv, out);
}

/* ---- preset mpi (rsh.h) --------------------------------------------- */

static bool mpi_worker_serving(const struct lwsi_agent *a)
{
  return a->rsh_on && a->rsh.enabled && !a->rsh.leader && a->rsh.serving;
}

static void on_rsh(struct lwsi_rsh *s, const struct lwsi_rsh_event *ev)
{
  struct lwsi_agent *a = s->data;
  switch (ev->type) {
  case LWSI_RSH_EV_REFUSED:
    lwsi_log_warn("lwsinit rsh %s", ev->text);
    return;
  case LWSI_RSH_EV_STARTED:
    lwsi_log_info("rsh request %u: started pid %d: %s", ev->id, (int)ev->pid, ev->text);
    return;
  case LWSI_RSH_EV_ENDED:
    lwsi_log_info("rsh request %u: pid %d ended with status %d", ev->id, (int)ev->pid, ev->code);
    return;
  case LWSI_RSH_EV_ERROR:
    lwsi_log_warn("rsh request %u: %s", ev->id, ev->text);
    return;
  case LWSI_RSH_EV_GROUP_EXIT:
    /* The job is over: every agent exits with the leader's COMMAND's
     * status (contract, "Launching", preset mpi). */
    lwsi_log_info("the leader's MPI job ended with status %d; exiting with it", ev->code);
    leave_group(a, "the MPI job ended");
    set_phase(a, LWSI_PHASE_STOPPING);
    finish(a, ev->code, NULL);
    return;
  }
}

/* Every agent answers rsh clients on its status socket (a refusal, but
 * for the leader of preset mpi, says why). */
static void start_rsh(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  a->rsh.data = a;
  int rc = lwsi_rsh_init(&a->rsh, &a->loop, cfg->preset == LWSI_PRESET_MPI, cfg->rank == 0,
                         cfg->standalone ? NULL : &a->rdzv, a->envp, &a->sup.child_mask, on_rsh);
  if (rc < 0) {
    lwsi_log_warn("lwsinit rsh not available: %s", strerror(-rc));
    return;
  }
  a->rsh_on = true;
  lwsi_status_sock_set_rsh(&a->status_sock, lwsi_rsh_accept, &a->rsh);
}

/* Preset mpi at launch: a worker serves the leader's launcher instead of
 * running a COMMAND; the leader writes {hostfile} first. Returns whether
 * the launch goes on. */
static bool mpi_launch(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  if (cfg->preset != LWSI_PRESET_MPI)
    return true;
  if (!a->rsh_on) {
    finish(a, 1, "preset mpi: lwsinit rsh could not be set up (see above)");
    return false;
  }
  lwsi_rsh_serve(&a->rsh);
  if (cfg->rank > 0) {
    set_phase(a, LWSI_PHASE_RUNNING);
    if (cfg->argc > 0)
      lwsi_log_info("preset mpi: this worker runs no COMMAND of its own ('%s' is not run)",
                    cfg->argv[0]);
    lwsi_log_info("serving the leader's MPI launcher through lwsinit rsh (rank %u of %u)",
                  cfg->rank, cfg->size);
    return false;
  }
  char why[4200];
  int rc = lwsi_rsh_hostfile_path(cfg->status_socket, a->hostfile, sizeof(a->hostfile));
  if (rc == 0)
    rc = lwsi_rsh_hostfile(&a->rsh, a->hostfile, a->leader_ip, cfg->gpus);
  if (rc < 0) {
    snprintf(why, sizeof(why), "preset mpi: cannot write the hostfile %s: %s", a->hostfile,
             strerror(-rc));
    leave_group(a, "the MPI hostfile could not be written");
    finish(a, 1, why);
    return false;
  }
  lwsi_log_info("preset mpi: wrote the hostfile %s (%u hosts)", a->hostfile, cfg->size);
  return true;
}

/* The leader's launcher finds `lwsinit rsh` through OMPI_MCA_plm_rsh_agent,
 * by this binary's own path. */
static int mpi_launcher_env(struct lwsi_agent *a, char **env, char ***out, char **added)
{
  *out = NULL;
  *added = NULL;
  if (a->cfg->preset != LWSI_PRESET_MPI || a->cfg->rank > 0)
    return 0;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0)
    return n < 0 ? -errno : -ENOENT;
  exe[n] = '\0';
  return lwsi_rsh_env(env, exe, a->cfg->status_socket, out, added);
}

/* The environment of what the agent starts for the engine (the engine
 * itself, or a launch phase's service): the agent's, the group's
 * variables, and the network variables. Free *env with
 * lwsi_launcher_env_free and *full with free(). */
static int child_env(struct lwsi_agent *a, char ***env, char ***full, char *epoch_kv,
                     size_t epoch_len)
{
  const struct lwsi_config *cfg = a->cfg;
  *env = NULL;
  *full = NULL;
  char **net = NULL;
  int rc = lwsi_launcher_env(a->envp, a->leader_ip, cfg->rank, cfg->size, env);
  if (rc == 0)
    rc = network_env(a, *env, &net);
  if (rc == 0) {
    lwsi_text_printf(epoch_kv, epoch_len, "LWSINIT_EPOCH=%u", a->rs.epoch);
    rc = lwsi_launcher_env_add(net, epoch_kv, full);
  }
  free(net);
  return rc;
}

/* Starts argv as the supervised child: the engine, or on a worker of a
 * launch in phases its service. missing, when not NULL, is the line for a
 * program that is not installed (exit 127). */
static void spawn_child(struct lwsi_agent *a, char **argv, const char *missing)
{
  const struct lwsi_config *cfg = a->cfg;
  char **env = NULL, **full = NULL;
  char epoch_kv[32];
  int rc = child_env(a, &env, &full, epoch_kv, sizeof(epoch_kv));
  if (rc < 0) {
    char why[256];
    lwsi_agent_cmdline_error(why, sizeof(why), rc, "");
    lwsi_launcher_env_free(env);
    finish(a, 1, why);
    return;
  }
  /* Preset mpi: the leader's launcher finds `lwsinit rsh`. */
  char **mpi_env = NULL, *mpi_added = NULL;
  rc = mpi_launcher_env(a, full, &mpi_env, &mpi_added);
  /* No member launches twice in one epoch (contract, "Membership"). */
  a->rs.launched = a->rs.epoch;
  if (rc == 0)
    rc = lwsi_supervisor_spawn(&a->sup, argv, mpi_env != NULL ? mpi_env : full);
  free(mpi_env);
  free(mpi_added);
  free(full);
  if (rc == 0) {
    lwsi_log_info("started %s '%s' as pid %d (rank %u of %u, epoch %u)", child_what(a),
                  argv[0], (int)a->sup.child, cfg->rank, cfg->size, a->rs.epoch);
    start_upstream(a, argv);
    beat_soon(a);
  } else {
    char why[1024];
    /* A pid means a process was created and its exec failed. */
    int code = lwsi_agent_spawn_error(why, sizeof(why), argv[0], rc, a->sup.child > 0);
    if (code == 127 && missing != NULL)
      lwsi_text_printf(why, sizeof(why), "%s (exit 127)", missing);
    leave_group(a, "the engine could not be started");
    finish(a, code, why);
  }
  lwsi_launcher_env_free(env);
}

static void launch(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  if (!mpi_launch(a))
    return;
  const struct lwsi_cmdline_values vals = {
    .leader = cfg->leader, .leader_ip = a->leader_ip, .size = cfg->size, .rank = cfg->rank,
    .hostfile = a->hostfile[0] != '\0' ? a->hostfile : NULL,
    .epoch = a->rs.epoch,
  };
  char **argv = NULL;
  char bad[64] = "";
  set_phase(a, LWSI_PHASE_RUNNING);
  if (phases_divert(a))
    return;
  int rc = lwsi_cmdline_build(cfg, &vals, &argv, bad, sizeof(bad));
  if (rc < 0) {
    char why[256];
    lwsi_agent_cmdline_error(why, sizeof(why), rc, bad);
    lwsi_expand_free(argv);
    finish(a, 1, why);
    return;
  }
  spawn_child(a, argv, NULL);
  lwsi_expand_free(argv);
}

/* Preset mpi: the leader's COMMAND is the job, and its end, whatever its
 * status, is the group's end rather than an engine failure: every worker
 * exits with its status (contract, "Launching", preset mpi). */
static bool mpi_job_ended(struct lwsi_agent *a, int code)
{
  if (!a->rsh_on || a->cfg->preset != LWSI_PRESET_MPI || !is_leader(a))
    return false;
  if (lwsi_rsh_group_exit(&a->rsh, code) < 0)
    lwsi_log_warn("cannot tell the workers that the MPI job ended; they stop as the leader leaves");
  char why[64];
  snprintf(why, sizeof(why), "the MPI job ended with status %d", code);
  leave_group(a, why);
  set_phase(a, LWSI_PHASE_STOPPING);
  finish(a, code, NULL);
  return true;
}

static void on_child_exited(struct lwsi_agent *a, int status)
{
  beat_soon(a);
  int code = lwsi_supervisor_exit_code(status);
  char what[128], sig[LWSI_LOG_SIGNAL_NAME_MAX];
  if (WIFSIGNALED(status))
    snprintf(what, sizeof(what), "%s (pid %d) was killed by %s (%d)", child_what(a),
             (int)a->sup.child, lwsi_log_signal_name(WTERMSIG(status), sig, sizeof(sig)), code);
  else
    snprintf(what, sizeof(what), "%s (pid %d) exited with status %d", child_what(a),
             (int)a->sup.child, code);
  /* An engine that ends on its own and not with 0 (a crash, the OOM
   * killer's SIGKILL) is the pod's failure: its line goes to the
   * termination log, where `kubectl describe pod` shows it. An end we
   * asked for (a stop, a lost member) is not. */
  if (code != 0 && a->stop_exit_code == 0 && a->phase != LWSI_PHASE_STOPPING &&
      a->phase != LWSI_PHASE_RESTARTING)
    report_failure(a, what);
  else
    lwsi_log_info("%s", what);
  if (a->stop_exit_code != 0) {
    finish(a, a->stop_exit_code, NULL);
    return;
  }
  if (ordered_child_exited(a, code))
    return;
  if (mpi_job_ended(a, code))
    return;
  if (restart_child_exited(a, code, what))
    return;
  /* An engine that ended on its own is an engine failure for the group
   * (contract, "Membership"): the others learn which rank and why before
   * this member's bye. */
  if (a->phase != LWSI_PHASE_STOPPING)
    engine_failed_tell(a, what);
  char why[96];
  snprintf(why, sizeof(why), "the engine on rank %u exited with status %d", a->cfg->rank, code);
  leave_group(a, why);
  if (a->phase != LWSI_PHASE_STOPPING)
    set_phase(a, LWSI_PHASE_STOPPING);
  finish(a, code, NULL);
}

static void on_supervisor(struct lwsi_supervisor *sup, enum lwsi_sup_event ev, int arg)
{
  struct lwsi_agent *a = sup->data;
  char sig[LWSI_LOG_SIGNAL_NAME_MAX];
  switch (ev) {
  case LWSI_SUP_STOP_SIGNAL: {
    char why[LWSI_LOG_SIGNAL_NAME_MAX];
    lwsi_log_signal_name(arg, why, sizeof(why));
    if (a->fail_delay_on) {
      /* --fail-delay: a stop signal ends the wait at once, same code. */
      lwsi_log_info("received %s during --fail-delay; exiting %d now", why, a->exit_code);
      uv_stop(&a->loop);
      return;
    }
    if (restart_stop_signal(a, arg, why))
      return;
    if (ordered_stop_signal(a, arg, why))
      return;
    if (sup->child == 0) {
      /* Before launch there is nothing to drain: end as the signal would
       * have ended us (contract: a SIGTERM before launch exits 143). */
      lwsi_log_info("received %s before the engine started; exiting %d", why, 128 + arg);
      leave_group(a, why);
      set_phase(a, LWSI_PHASE_STOPPING);
      finish(a, 128 + arg, NULL);
      return;
    }
    if (!sup->stopping) {
      lwsi_log_info("received %s; stopping the engine (drain %llu ms, grace %llu ms)", why,
                    (unsigned long long)sup->drain_ms, (unsigned long long)sup->grace_ms);
      set_phase(a, LWSI_PHASE_STOPPING);
      /* The group learns at once, so that the other members stop their
       * engines now instead of after --peer-timeout: a stop is one event
       * for the whole group, not a member going silent. */
      leave_group(a, why);
    }
    lwsi_supervisor_stop(sup, arg, true);
    return;
  }
  case LWSI_SUP_FORWARDED:
    lwsi_log_debug("forwarded %s to process group %d", lwsi_log_signal_name(arg, sig, sizeof(sig)),
                   (int)sup->child);
    return;
  case LWSI_SUP_DROPPED:
    lwsi_log_debug("%s not forwarded: no engine is running",
                   lwsi_log_signal_name(arg, sig, sizeof(sig)));
    return;
  case LWSI_SUP_KILLED:
    lwsi_log_warn("the engine did not stop within the grace period (%llu ms); sent SIGKILL "
                  "to its process group",
                  (unsigned long long)sup->grace_ms);
    return;
  case LWSI_SUP_CHILD_EXITED:
    on_child_exited(a, arg);
    return;
  case LWSI_SUP_REAPED:
    if (a->phases_on && lwsi_phases_reaped(&a->phases, sup->reaped_pid, arg))
      return;
    if (a->gpu_on && sup->reaped_pid == a->gpu.pid)
      lwsi_gpurun_reaped(&a->gpu, arg);
    else if (a->rsh_on)
      (void)lwsi_rsh_reaped(&a->rsh, sup->reaped_pid, arg);
    for (unsigned i = 0; i < 2; i++)
      if (a->rs.gpu_free_on[i] && sup->reaped_pid == a->rs.gpu_free[i].pid)
        lwsi_gpurun_reaped(&a->rs.gpu_free[i], arg);
    return;
  }
}

/* ---- the launch in phases (presets vllm-ray, sglang-ray) ------------ */

/* The group's messages of a launch in phases (docs/protocol.md, "app"):
 *   launch_phase   a worker -> the leader, the leader -> every worker: a
 *                  member's step changed; {"rank":N,"phase":"service"};
 *   launch_failed  a member -> the leader -> every worker: a step did not
 *                  finish within --phase-timeout, or the service could
 *                  not start; {"rank":N,"phase":"...","reason":"..."}. */
#define MSG_LAUNCH_PHASE "launch_phase"
#define MSG_LAUNCH_FAILED "launch_failed"

static const struct lwsi_engine_service *launch_service(const struct lwsi_agent *a)
{
  return lwsi_engine_get(a->cfg->preset)->service;
}

/* What the supervised child is, for lines: the engine, or the service a
 * worker of a launch in phases runs instead. */
static const char *child_what(const struct lwsi_agent *a)
{
  const struct lwsi_engine_service *svc = launch_service(a);
  return svc != NULL && a->cfg->rank > 0 ? svc->worker_what : "the engine";
}

static uint16_t phases_dist_port(const struct lwsi_agent *a)
{
  uint16_t port = 0;
  lwsi_config_dist_port(a->cfg, &port);
  return port;
}

static void on_phases(struct lwsi_phases *p, enum lwsi_phases_ev ev);

/* Sets the phases up once: at the launch, or at the first message of
 * another member's step, whichever comes first. */
static bool phases_setup(struct lwsi_agent *a)
{
  if (a->phases_on)
    return true;
  a->phases.data = a;
  int rc = lwsi_phases_init(&a->phases, &a->loop, a->cfg->size, a->cfg->phase_timeout_ms,
                            on_phases);
  if (rc < 0) {
    lwsi_phases_group_free(&a->phases.group);
    finish(a, 1, "cannot set up the launch phases: out of memory");
    return false;
  }
  a->phases_on = true;
  return true;
}

/* Tells the group a step: a worker tells the leader, the leader every
 * worker (so that workers start their service once the leader's is up). */
static void phases_tell(struct lwsi_agent *a, const char *kind, const char *data)
{
  if (!group_released(a))
    return;
  int rc = a->cfg->rank == 0 ? lwsi_rdzv_app_broadcast(&a->rdzv, kind, data)
                             : lwsi_rdzv_app_send(&a->rdzv, kind, data);
  if (rc < 0)
    lwsi_log_debug("cannot tell the group (%s): %s", kind, strerror(-rc));
}

static void phases_enter(struct lwsi_agent *a, enum lwsi_phases_step s)
{
  const char *name = lwsi_phases_step_name(s);
  lwsi_phases_enter(&a->phases, a->cfg->rank, s);
  lwsi_log_info("launch phase '%s' on rank %u", name, a->cfg->rank);
  char data[96];
  snprintf(data, sizeof(data), "{\"rank\":%u,\"phase\":\"%s\"}", a->cfg->rank, name);
  phases_tell(a, MSG_LAUNCH_PHASE, data);
}

/* A launch phase failed: the whole group fails with why (exit 4: the
 * group did not form), this member's engine or service stopped first. */
static void phases_fail(struct lwsi_agent *a, const char *why)
{
  leave_group(a, "a launch phase failed");
  stop_for_group(a, LWSI_EXIT_RDZV, why);
}

/* Fails the group with why, after telling it: the leader tells every
 * worker, a worker tells the leader, which tells the others. */
static void phases_fail_tell(struct lwsi_agent *a, const char *why)
{
  char data[1400], reason[1100];
  lwsi_text_copy(reason, sizeof(reason), why);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "rank", a->cfg->rank);
  cJSON_AddStringToObject(o, "phase", lwsi_phases_step_name(a->phases.step));
  cJSON_AddStringToObject(o, "reason", reason);
  if (cJSON_PrintPreallocated(o, data, sizeof(data), 0))
    phases_tell(a, MSG_LAUNCH_FAILED, data);
  cJSON_Delete(o);
  phases_fail(a, why);
}

/* The leader starts its engine once its own service and every worker's
 * are up (the condition over the group). */
static void phases_maybe_engine(struct lwsi_agent *a)
{
  if (a->cfg->rank != 0 || a->done || a->phases_holding || a->stop_exit_code != 0 ||
      a->phases.step != LWSI_PHASES_WAIT_GROUP || !lwsi_phases_group_ready(&a->phases.group))
    return;
  lwsi_log_info("%s and every worker's %s node are up: starting the engine",
                launch_service(a)->leader_what, launch_service(a)->name);
  phases_enter(a, LWSI_PHASES_ENGINE);
  launch(a);
}

/* The leader's service, beside its engine: the agent's second child, in a
 * process group of its own. */
static void phases_leader_service(struct lwsi_agent *a)
{
  const struct lwsi_engine *e = lwsi_engine_get(a->cfg->preset);
  uint16_t port = phases_dist_port(a);
  char **argv = NULL, **env = NULL, **full = NULL;
  char why[1200], epoch_kv[32];
  phases_enter(a, LWSI_PHASES_SERVICE);
  int rc = lwsi_phases_service_argv(e, true, a->leader_ip, port, &argv);
  if (rc == 0)
    rc = child_env(a, &env, &full, epoch_kv, sizeof(epoch_kv));
  if (rc == 0) {
    rc = lwsi_phases_spawn(&a->phases, argv, full, &a->sup.child_mask);
    if (rc == 0) {
      lwsi_log_info("started %s '%s %s %s' as pid %d; waiting for port %u", e->service->leader_what,
                    argv[0], argv[1], argv[2], (int)a->phases.service, port);
      lwsi_phases_probe(&a->phases, port);
    } else {
      int code = lwsi_agent_spawn_error(why, sizeof(why), argv[0], rc, a->phases.service > 0);
      if (code == 127)
        lwsi_text_printf(why, sizeof(why), "%s (exit 127)", e->service->missing);
      phases_tell(a, MSG_LAUNCH_FAILED, "{\"rank\":0,\"phase\":\"service\",\"reason\":\"the "
                                        "leader could not start its service\"}");
      leave_group(a, "the leader's service could not be started");
      finish(a, code, why);
    }
  } else {
    lwsi_agent_cmdline_error(why, sizeof(why), rc, "");
    finish(a, 1, why);
  }
  lwsi_expand_free(argv);
  lwsi_launcher_env_free(env);
  free(full);
}

/* A worker's service, instead of COMMAND, once the leader's is up. */
static void phases_worker_service(struct lwsi_agent *a)
{
  const struct lwsi_engine *e = lwsi_engine_get(a->cfg->preset);
  char **argv = NULL;
  phases_enter(a, LWSI_PHASES_SERVICE);
  int rc = lwsi_phases_service_argv(e, false, a->leader_ip, phases_dist_port(a), &argv);
  if (rc < 0) {
    char why[256];
    lwsi_agent_cmdline_error(why, sizeof(why), rc, "");
    finish(a, 1, why);
    return;
  }
  spawn_child(a, argv, e->service->missing);
  lwsi_expand_free(argv);
  if (a->sup.child_running)
    lwsi_phases_probe(&a->phases, lwsi_phases_up_port(e, false, 0));
}

/* launch(): with a preset that has a service, the launch runs in phases;
 * returns true while the engine must wait (or this member runs no engine:
 * a worker), false when launch() goes on and starts the engine. */
static bool phases_divert(struct lwsi_agent *a)
{
  if (launch_service(a) == NULL)
    return false;
  if (a->cfg->rank == 0 && a->phases_on && a->phases.step == LWSI_PHASES_ENGINE)
    return false;
  if (!phases_setup(a))
    return true;
  if (a->cfg->rank == 0) {
    phases_leader_service(a);
    return true;
  }
  phases_enter(a, LWSI_PHASES_WAIT_LEADER);
  /* The leader's word may have come before this member's own checks
   * ended. */
  if (lwsi_phases_group_get(&a->phases.group, 0) >= LWSI_PHASES_WAIT_GROUP)
    phases_worker_service(a);
  return true;
}

/* The line for a step that did not finish in time: the member, the step,
 * and what it waited for. */
static const char *phase_pod(void *data, uint32_t rank)
{
  struct lwsi_agent *a = data;
  if (a->member_rows == NULL || lwsi_rdzv_member(&a->rdzv, rank, &a->member_rows[0]) < 0)
    return "";
  return a->member_rows[0].pod;
}

static void phases_deadline(struct lwsi_agent *a)
{
  const struct lwsi_engine_service *svc = launch_service(a);
  enum lwsi_phases_step s = a->phases.step;
  double sec = (double)a->cfg->phase_timeout_ms / 1000.0;
  char why[1400], behind[700];
  if (s == LWSI_PHASES_WAIT_GROUP) {
    lwsi_phases_group_behind(&a->phases.group, a->member_rows != NULL ? phase_pod : NULL, a,
                             behind, sizeof(behind));
    lwsi_text_printf(why, sizeof(why),
                     "the launch phase 'wait-group' did not finish within %.3g s "
                     "(--phase-timeout): waiting for every worker's %s node: %s is not up; "
                     "check that member's log for 'ray start'",
                     sec, svc->name, behind[0] ? behind : "a member");
  } else if (s == LWSI_PHASES_WAIT_LEADER) {
    lwsi_text_printf(why, sizeof(why),
                     "rank %u: the launch phase 'wait-leader' did not finish within %.3g s "
                     "(--phase-timeout): %s on rank 0 was not up",
                     a->cfg->rank, sec, svc->leader_what);
  } else {
    uint16_t port = lwsi_phases_up_port(lwsi_engine_get(a->cfg->preset), a->cfg->rank == 0,
                                        phases_dist_port(a));
    lwsi_text_printf(why, sizeof(why),
                     "rank %u: the launch phase 'service' did not finish within %.3g s "
                     "(--phase-timeout): %s did not open port %u; check its output above",
                     a->cfg->rank, sec, a->cfg->rank == 0 ? svc->leader_what : svc->worker_what,
                     port);
  }
  phases_fail_tell(a, why);
}

/* The leader's service exited. While stopping that is the end of the
 * stop; otherwise it fails this member as an engine failure would. */
static void phases_service_exited(struct lwsi_agent *a)
{
  const struct lwsi_engine_service *svc = launch_service(a);
  int status = a->phases.service_status;
  int code = lwsi_supervisor_exit_code(status);
  if (a->phases_holding) {
    lwsi_log_info("%s (pid %d) exited with status %d", svc->leader_what, (int)a->phases.service,
                  code);
    a->phases_holding = false;
    finish(a, a->phases_exit, NULL);
    return;
  }
  if (a->done)
    return;
  char why[400];
  lwsi_text_printf(why, sizeof(why), "%s (pid %d) %s %d; the group cannot run without it",
                   svc->leader_what, (int)a->phases.service,
                   WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                   WIFSIGNALED(status) ? WTERMSIG(status) : code);
  if (a->phases.step < LWSI_PHASES_ENGINE) {
    phases_fail_tell(a, why);
    return;
  }
  engine_failed_tell(a, why);
  leave_group(a, "the leader's service exited");
  stop_for_group(a, code != 0 ? code : 1, why);
}

static void on_phases(struct lwsi_phases *p, enum lwsi_phases_ev ev)
{
  struct lwsi_agent *a = p->data;
  const struct lwsi_engine_service *svc = launch_service(a);
  switch (ev) {
  case LWSI_PHASES_EV_UP:
    if (a->done || a->phases_holding || a->stop_exit_code != 0)
      return;
    if (a->cfg->rank == 0) {
      lwsi_log_info("%s is up (port %u accepts)", svc->leader_what, p->probe_port);
      phases_enter(a, LWSI_PHASES_WAIT_GROUP);
      phases_maybe_engine(a);
    } else {
      lwsi_log_info("%s is up (port %u accepts)", svc->worker_what, p->probe_port);
      phases_enter(a, LWSI_PHASES_SERVICE_UP);
    }
    return;
  case LWSI_PHASES_EV_DEADLINE:
    if (!a->done && !a->phases_holding && a->stop_exit_code == 0)
      phases_deadline(a);
    return;
  case LWSI_PHASES_EV_EXITED:
    phases_service_exited(a);
    return;
  }
}

/* finish(): the leader's service outlives nothing. While it runs, the
 * exit waits for it: SIGTERM to its process group now (the engine, when
 * there was one, has exited already: the engine stops first), SIGKILL
 * after --grace. Returns true when the exit waits. */
static bool phases_finish_hold(struct lwsi_agent *a, int code, const char *why)
{
  if (!a->phases_on || !a->phases.service_running)
    return false;
  if (a->phases_holding)
    return true; /* the first decision stands */
  a->phases_holding = true;
  a->phases_exit = code;
  if (why != NULL) {
    if (a->phase != LWSI_PHASE_STOPPING)
      set_phase(a, LWSI_PHASE_FAILED);
    report_failure(a, why);
  } else if (a->phase < LWSI_PHASE_STOPPING) {
    set_phase(a, LWSI_PHASE_STOPPING);
  }
  lwsi_log_info("stopping %s (pid %d; grace %llu ms)", launch_service(a)->leader_what,
                (int)a->phases.service, (unsigned long long)a->cfg->grace_ms);
  lwsi_phases_stop(&a->phases, a->cfg->grace_ms);
  return true;
}

/* The launch phases' messages; true when ev was one. */
static bool phases_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  bool step = strcmp(ev->kind, MSG_LAUNCH_PHASE) == 0;
  bool failed = strcmp(ev->kind, MSG_LAUNCH_FAILED) == 0;
  if (!step && !failed)
    return false;
  if (launch_service(a) == NULL || a->done || !phases_setup(a))
    return true;
  cJSON *o = cJSON_Parse(ev->data);
  const cJSON *phase = cJSON_GetObjectItemCaseSensitive(o, "phase");
  const cJSON *reason = cJSON_GetObjectItemCaseSensitive(o, "reason");
  int64_t r = msg_rank(ev, o);
  if (step && cJSON_IsString(phase) && r >= 0) {
    int s = lwsi_phases_step_parse(phase->valuestring);
    if (s > 0 &&
        lwsi_phases_group_set(&a->phases.group, (uint32_t)r, (enum lwsi_phases_step)s) == 0) {
      lwsi_log_debug("rank %lld is in launch phase '%s'", (long long)r, phase->valuestring);
      if (a->cfg->rank == 0)
        phases_maybe_engine(a);
      else if (r == 0 && s >= LWSI_PHASES_WAIT_GROUP &&
               a->phases.step == LWSI_PHASES_WAIT_LEADER && !a->phases_holding &&
               a->stop_exit_code == 0)
        phases_worker_service(a);
    }
  } else if (failed && a->stop_exit_code == 0 && !a->phases_holding) {
    char why[1200];
    lwsi_text_printf(why, sizeof(why), "%s",
                     cJSON_IsString(reason) ? reason->valuestring
                                            : "a launch phase failed on another member");
    if (a->cfg->rank == 0 && group_released(a))
      lwsi_rdzv_app_broadcast(&a->rdzv, MSG_LAUNCH_FAILED, ev->data);
    phases_fail(a, why);
  }
  cJSON_Delete(o);
  return true;
}

/* ---- the group ----------------------------------------------------- */


/* ---- the GPU check (contract, "Checks before launch") --------------- */

static void check_failed(struct lwsi_agent *a, const char *why)
{
  if (a->gpu_on)
    lwsi_gpurun_kill(&a->gpu);
  finish(a, LWSI_EXIT_GPU, why);
}

/* Launches once the group's verdict is in and this node's check process is
 * gone, its GPU memory with it: an engine started beside a check that still
 * holds memory on the same GPUs could fail to allocate its own. */
static void check_maybe_launch(struct lwsi_agent *a)
{
  if (a->done || a->sup.child != 0 || !a->gpu_verdict_ok || !a->gpu_gone)
    return;
  if (a->gpu_timer_on)
    uv_timer_stop(&a->gpu_deadline);
  launch(a);
}

static void leader_verdict(struct lwsi_agent *a, bool ok, const char *reason)
{
  char data[700];
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "ok", ok);
  cJSON_AddStringToObject(o, "reason", reason);
  if (cJSON_PrintPreallocated(o, data, sizeof(data), 0) && a->rdzv_on &&
      a->cfg->size > 1)
    lwsi_rdzv_app_broadcast(&a->rdzv, "gpu_verdict", data);
  cJSON_Delete(o);
}

/* The leader's view of one node's result; the first failure fails all. */
static void leader_result(struct lwsi_agent *a, uint32_t rank, bool ok, const char *error,
                          const char *model)
{
  char why[900];
  if (rank >= a->cfg->size || a->gpu_seen == NULL || a->gpu_seen[rank])
    return;
  a->gpu_seen[rank] = 1;
  if (ok && model[0] != '\0') {
    if (a->gpu_model[0] == '\0') {
      snprintf(a->gpu_model, sizeof(a->gpu_model), "%s", model);
      a->gpu_model_rank = rank;
    } else if (strcmp(a->gpu_model, model) != 0) {
      snprintf(why, sizeof(why), "the GPU models differ: rank %u has %s, rank %u has %s",
               a->gpu_model_rank, a->gpu_model, rank, model);
      leader_verdict(a, false, why);
      check_failed(a, why);
      return;
    }
  }
  if (!ok) {
    snprintf(why, sizeof(why), "the GPU check failed on rank %u: %s", rank,
             error[0] ? error : "no result");
    leader_verdict(a, false, why);
    check_failed(a, why);
    return;
  }
  if (++a->gpu_passed == a->cfg->size) {
    lwsi_log_info("the GPU check passed on all %u nodes", a->cfg->size);
    leader_verdict(a, true, "passed");
    a->gpu_verdict_ok = true;
    check_maybe_launch(a);
  }
}

/* A worker's result, to the leader. */
static void send_check_result(struct lwsi_agent *a, bool ok, const char *error, const char *model)
{
  char data[1024];
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "ok", ok);
  cJSON_AddStringToObject(o, "error", error);
  cJSON_AddStringToObject(o, "model", model);
  if (cJSON_PrintPreallocated(o, data, sizeof(data), 0))
    lwsi_rdzv_app_send(&a->rdzv, "gpu_result", data);
  cJSON_Delete(o);
}

static void on_check(struct lwsi_gpurun *r, enum lwsi_gpurun_ev ev)
{
  struct lwsi_agent *a = r->data;
  const struct lwsi_config *cfg = a->cfg;
  if (a->done)
    return; /* The group's outcome is decided: the rest is noise. */
  switch (ev) {
  case LWSI_GPURUN_ID:
    if (a->rdzv_on && cfg->size > 1)
      lwsi_rdzv_app_broadcast(&a->rdzv, "gpu_id", r->id);
    return;
  case LWSI_GPURUN_RESULT:
    if (r->ok)
      lwsi_log_info("GPU check passed on this node: %u GPU(s) (%s)%s in %.0f ms", r->ndevices,
                    r->model, r->busbw_gbps > 0 ? ", all-reduce bus bandwidth measured" : "",
                    r->time_ms);
    else
      lwsi_log_warn("GPU check failed on this node: %s", r->error);
    if (cfg->standalone || cfg->size == 1 || cfg->rank == 0) {
      leader_result(a, 0, r->ok, r->error, r->model);
      if (cfg->standalone && r->ok && !a->gpu_verdict_ok) {
        a->gpu_verdict_ok = true;
        check_maybe_launch(a);
      }
      return;
    }
    send_check_result(a, r->ok, r->error, r->model);
    if (!r->ok) {
      char why[700];
      snprintf(why, sizeof(why), "the GPU check failed on rank %u: %s", cfg->rank, r->error);
      check_failed(a, why);
    }
    return;
  case LWSI_GPURUN_GONE:
    a->gpu_gone = true;
    if (!r->have_result) {
      char why[400];
      snprintf(why, sizeof(why), "the GPU check on rank %u ended without a result (status %d)",
               cfg->rank, lwsi_supervisor_exit_code(r->status));
      if (cfg->rank == 0 || cfg->standalone) {
        leader_result(a, cfg->rank, false, why, "");
      } else {
        /* The leader must learn why, or it would see only a lost member. */
        send_check_result(a, false, why, "");
        check_failed(a, why);
      }
      return;
    }
    check_maybe_launch(a);
    return;
  }
}

/* Messages of the check between the agents, after release. */
static void on_check_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  if (a->cfg->gpu_check == LWSI_GPU_CHECK_NONE)
    return;
  if (strcmp(ev->kind, "gpu_id") == 0 && a->cfg->rank > 0) {
    int rc = a->gpu_on ? lwsi_gpurun_give_id(&a->gpu, ev->data) : -ESRCH;
    if (rc < 0)
      lwsi_log_warn("cannot give the NCCL id to the GPU check: %s", strerror(-rc));
    return;
  }
  cJSON *o = cJSON_Parse(ev->data);
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(o, "ok");
  if (strcmp(ev->kind, "gpu_result") == 0 && a->cfg->rank == 0 && ev->rank > 0) {
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(o, "error");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(o, "model");
    leader_result(a, (uint32_t)ev->rank, cJSON_IsTrue(ok),
                  cJSON_IsString(err) ? err->valuestring : "a result the leader cannot read",
                  cJSON_IsString(model) ? model->valuestring : "");
  } else if (strcmp(ev->kind, "gpu_verdict") == 0 && a->cfg->rank > 0) {
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(o, "reason");
    if (cJSON_IsTrue(ok)) {
      a->gpu_verdict_ok = true;
      check_maybe_launch(a);
    } else {
      check_failed(a, cJSON_IsString(reason) ? reason->valuestring
                                              : "the GPU check failed on another node");
    }
  }
  cJSON_Delete(o);
}

static void on_check_deadline(uv_timer_t *t)
{
  struct lwsi_agent *a = t->data;
  char why[300];
  if (a->sup.child != 0 || a->done)
    return;
  snprintf(why, sizeof(why), "the GPU check did not finish within %.3g s (--gpu-check-timeout)",
           (double)a->cfg->gpu_check_timeout_ms / 1000.0);
  if (a->cfg->rank == 0)
    leader_verdict(a, false, why);
  check_failed(a, why);
}

/* The check program: LWSINIT_GPUCHECK, else beside this binary (an
 * image installs both in one folder), else from PATH. */
static void check_program(char *buf, size_t len)
{
  const char *env = getenv("LWSINIT_GPUCHECK");
  if (env != NULL && env[0] != '\0') {
    snprintf(buf, len, "%s", env);
    return;
  }
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL) {
      *slash = '\0';
      snprintf(buf, len, "%s/lwsinit-gpucheck", self);
      if (access(buf, X_OK) == 0)
        return;
    }
  }
  snprintf(buf, len, "lwsinit-gpucheck");
}

static void start_check(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  set_phase(a, LWSI_PHASE_CHECKING);
  if (cfg->gpu_check == LWSI_GPU_CHECK_NONE) {
    launch(a);
    return;
  }
  char prog[4200], gpus[16], bytes[24], tmo[24], bw[32], nodes[16], rank[16];
  check_program(prog, sizeof(prog));
  /* The program's own deadline comes first, so that its result line (and
   * NCCL's abort) arrive before the agent's kill. */
  uint64_t t = cfg->gpu_check_timeout_ms;
  uint64_t margin = t / 10 < 5000 ? t / 10 : 5000;
  snprintf(gpus, sizeof(gpus), "%u", cfg->gpus);
  snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)cfg->gpu_check_bytes);
  snprintf(tmo, sizeof(tmo), "%llu", (unsigned long long)(t - margin > 0 ? t - margin : t));
  snprintf(bw, sizeof(bw), "%.3f", cfg->gpu_min_busbw);
  snprintf(nodes, sizeof(nodes), "%u", cfg->size);
  snprintf(rank, sizeof(rank), "%u", cfg->rank);
  const char *mode = lwsi_config_gpu_check_name(cfg->gpu_check);
  char *argv[] = {prog, (char *)mode, "--proto", "--gpus", gpus, "--bytes", bytes,
                  "--timeout-ms", tmo, "--min-busbw", bw, "--nodes", nodes, "--node-rank", rank,
                  NULL};
  /* A restart runs the check again (check_again): the table and the
   * deadline's timer of the first run serve every later one. */
  if (a->gpu_seen == NULL)
    a->gpu_seen = calloc(cfg->size, 1);
  if (!a->gpu_timer_on) {
    uv_timer_init(&a->loop, &a->gpu_deadline);
    a->gpu_deadline.data = a;
    a->gpu_timer_on = true;
  }
  uv_timer_start(&a->gpu_deadline, on_check_deadline, t, 0);
  a->gpu.data = a;
  a->gpu_on = true;
  lwsi_log_info("checking the GPUs (%s) with %s", mode, prog);
  /* The check gets the environment the engine will get (without the
   * group's token): it loads the same CUDA and NCCL, whose crash reports
   * and debug dumps may carry the environment (docs/security.md). The
   * launcher returns once the program has exec'd, so env is freed then. */
  char **env = NULL;
  int rc = a->gpu_seen == NULL ? -ENOMEM
                               : lwsi_launcher_env(a->envp, a->leader_ip, cfg->rank, cfg->size,
                                                   &env);
  if (rc == 0)
    rc = lwsi_gpurun_start(&a->gpu, &a->loop, argv, env, &a->sup.child_mask, on_check);
  lwsi_launcher_env_free(env);
  if (rc < 0) {
    char why[4400];
    snprintf(why, sizeof(why), "cannot run the GPU check %s: %s", prog, strerror(-rc));
    if (cfg->rank == 0)
      leader_verdict(a, false, why);
    check_failed(a, why);
  }
}

/* ---- the node check (contract, "Node check and network environment") */

/* Runs the node check before joining; logs each warning and failure.
 * Returns false when the agent must stop here: a standalone agent whose
 * node fails. A member of a group joins anyway and reports its failure
 * after release (node_exchange), so that the leader can name every failed
 * member in one line instead of waiting for one that never comes. */
static bool node_check(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  if (cfg->node_check != LWSI_NODE_CHECK_OFF || cfg->network_env == LWSI_NETWORK_ENV_AUTO) {
    int rc = lwsi_nodecheck_rdma_scan("", &a->rdma);
    if (rc < 0)
      lwsi_log_warn("cannot read the RDMA devices in /sys/class/infiniband: %s", strerror(-rc));
  }
  if (cfg->node_check == LWSI_NODE_CHECK_OFF)
    return true;
  lwsi_nodecheck_run(&a->node, "", cfg->gpus, &a->rdma, cfg->node_check == LWSI_NODE_CHECK_FAIL);
  a->node_ran = true;
  for (size_t i = 0; i < a->node.n; i++) {
    const struct lwsi_nodecheck_item *it = &a->node.items[i];
    if (it->state == LWSI_NODECHECK_WARN)
      lwsi_log_warn("node check %s: %s; fix: %s", it->name, it->found, it->fix);
    else if (it->state == LWSI_NODECHECK_FAIL && !cfg->standalone)
      /* Standalone, the failure's one line below says it all. */
      lwsi_log_warn("node check %s failed: %s; fix: %s", it->name, it->found, it->fix);
    else
      lwsi_log_debug("node check %s: %s", it->name, it->found);
  }
  if (a->node.failures == 0) {
    lwsi_log_info("node check passed (%u warning%s)", a->node.warnings,
                  a->node.warnings == 1 ? "" : "s");
    return true;
  }
  lwsi_nodecheck_failures(&a->node, a->node_fail, sizeof(a->node_fail));
  if (cfg->standalone) {
    char why[1200];
    lwsi_text_printf(why, sizeof(why), "the node check failed: %s", a->node_fail);
    finish(a, LWSI_EXIT_GPU, why);
    return false;
  }
  lwsi_log_info("joining the group to report the failed node check to the leader");
  return true;
}

static void node_verdict(struct lwsi_agent *a, bool ok, const char *reason)
{
  char data[2300];
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "ok", ok);
  cJSON_AddStringToObject(o, "reason", reason);
  /* The epoch the group launches under (0, or more after a new leader
   * took over a group that ran before: restart_epoch_seen). */
  cJSON_AddNumberToObject(o, "epoch", a->rs.epoch);
  if (cJSON_PrintPreallocated(o, data, sizeof(data), 0) && a->cfg->size > 1)
    lwsi_rdzv_app_broadcast(&a->rdzv, "node_verdict", data);
  cJSON_Delete(o);
}

/* The leader's view of one member's node check; once every member has
 * reported, the group launches, or fails with one line naming every failed
 * member and check. */
static void node_result(struct lwsi_agent *a, uint32_t rank, bool ok, const char *failure)
{
  if (rank >= a->cfg->size || a->node_seen == NULL || a->node_seen[rank])
    return;
  a->node_seen[rank] = 1;
  a->node_reports++;
  if (!ok) {
    a->node_failed++;
    a->node_failures[rank] = strdup(failure);
  }
  if (a->node_reports < a->cfg->size)
    return;
  if (a->node_failed == 0) {
    node_verdict(a, true, "passed");
    a->node_verdict_ok = true;
    start_check(a);
    return;
  }
  /* One line, by rank, with each member's pod (the name kubectl shows). */
  char why[2200];
  size_t o = (size_t)snprintf(why, sizeof(why), "the node check failed on %u of %u members: ",
                              a->node_failed, a->cfg->size);
  for (uint32_t r = 0, n = 0; r < a->cfg->size && o < sizeof(why); r++) {
    if (!a->node_seen[r] || a->node_failures[r] == NULL)
      continue;
    struct lwsi_rdzv_member m;
    char pod[300] = "";
    if (lwsi_rdzv_member(&a->rdzv, r, &m) == 0 && m.pod[0] != '\0')
      lwsi_text_printf(pod, sizeof(pod), " (pod %s)", m.pod);
    lwsi_text_printf(why + o, sizeof(why) - o, "%srank %u%s: %s", n++ ? "; " : "", r, pod,
                     a->node_failures[r][0] ? a->node_failures[r] : "failed");
    o += strlen(why + o);
  }
  node_verdict(a, false, why);
  finish(a, LWSI_EXIT_GPU, why);
}

/* After release, before the GPU check: every member tells the leader how
 * its node check went (also with --node-check off or warn, so that a
 * leader never waits for a report that will not come), and launches only
 * on the leader's verdict. */
static void node_exchange(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  bool ok = a->node_fail[0] == '\0';
  if (cfg->rank == 0) {
    a->node_seen = calloc(cfg->size, 1);
    a->node_failures = calloc(cfg->size, sizeof(*a->node_failures));
    if (a->node_seen == NULL || a->node_failures == NULL) {
      finish(a, 1, "cannot gather the node checks: out of memory");
      return;
    }
    node_result(a, 0, ok, a->node_fail);
    return;
  }
  char data[1200];
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "ok", ok);
  cJSON_AddStringToObject(o, "failure", a->node_fail);
  /* A member that ran an engine before (its leader was lost, and this is
   * a new one) says under which epoch, so that the group goes on above it. */
  if (a->rs.launched >= 0)
    cJSON_AddNumberToObject(o, "epoch", a->rs.epoch);
  if (cJSON_PrintPreallocated(o, data, sizeof(data), 0))
    lwsi_rdzv_app_send(&a->rdzv, "node_check", data);
  cJSON_Delete(o);
}

/* The node check's messages after release; true when ev was one. */
static bool node_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  bool report = strcmp(ev->kind, "node_check") == 0;
  bool verdict = strcmp(ev->kind, "node_verdict") == 0;
  if (!report && !verdict)
    return false;
  cJSON *o = cJSON_Parse(ev->data);
  bool ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok"));
  if (report && a->cfg->rank == 0 && ev->rank > 0) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "failure");
    restart_epoch_seen(a, ev->rank, o);
    node_result(a, (uint32_t)ev->rank, ok,
                cJSON_IsString(f) ? f->valuestring : "a report the leader cannot read");
  } else if (verdict && a->cfg->rank > 0 && !a->node_verdict_ok && !a->done) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "reason");
    if (ok) {
      if (restart_take_epoch(a, o)) {
        a->node_verdict_ok = true;
        start_check(a);
      }
    } else {
      finish(a, LWSI_EXIT_GPU,
             cJSON_IsString(r) ? r->valuestring : "the node check failed on another member");
    }
  }
  cJSON_Delete(o);
  return true;
}

/* After release: the checks before launch, then the engine. */
static void on_released(struct lwsi_agent *a)
{
  a->released_at = (double)time(NULL);
  if (is_leader(a)) {
    /* The leader needs no DNS: it is where its workers reached it. An IP
     * literal as the leader's address is used as given. */
    unsigned char buf[16];
    if (inet_pton(AF_INET, a->cfg->leader, buf) == 1 ||
        inet_pton(AF_INET6, a->cfg->leader, buf) == 1)
      snprintf(a->leader_ip, sizeof(a->leader_ip), "%s", a->cfg->leader);
    else if (a->rdzv.leader_addr[0] != '\0')
      snprintf(a->leader_ip, sizeof(a->leader_ip), "%s", a->rdzv.leader_addr);
    else
      snprintf(a->leader_ip, sizeof(a->leader_ip), "127.0.0.1");
  }
  lwsi_log_info("the group of %u formed in %.3f s; launching with leader %s", a->cfg->size,
                (double)(uv_now(&a->loop) - a->started_ms) / 1000.0, a->leader_ip);
  node_exchange(a);
}

static void on_member_lost(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  char why[400];
  if (ordered_member_lost(a, ev))
    return;
  a->peer_losses++;
  if (ev->rank == 0)
    snprintf(why, sizeof(why), "the leader (rank 0) was lost: %s", ev->reason);
  else if (ev->rank > 0)
    snprintf(why, sizeof(why), "rank %lld was lost: %s", (long long)ev->rank, ev->reason);
  else
    snprintf(why, sizeof(why), "a member was lost: %s", ev->reason);
  if (restart_member_lost(a, ev, why))
    return;
  if (a->cfg->on_peer_loss == LWSI_PEER_LOSS_STAY) {
    snprintf(a->group_broken, sizeof(a->group_broken), "%s", why);
    lwsi_log_warn("%s; the group is unready (--on-peer-loss stay)", why);
    return;
  }
  leave_group(a, "the group lost a member");
  stop_for_group(a, LWSI_EXIT_PEER, why);
}

/* Leader, --launch-check warn: a member's launch command differs from
 * ours. One warning per member (the first few; a large group with a
 * per-pod value in every command would otherwise fill the log), and a row
 * for /status and /metrics. */
#define LWSI_LAUNCH_WARNED 8

static void on_launch_diff(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  uint32_t i = a->launch_ranks++;
  a->launch_differences += ev->count;
  if (i < LWSI_STATUS_LAUNCH_LISTED) {
    struct lwsi_status_launch_diff *d = &a->launch_listed[i];
    d->rank = (uint32_t)ev->rank;
    d->count = ev->count;
    lwsi_text_copy(d->detail, sizeof(d->detail), ev->reason);
  }
  if (i < LWSI_LAUNCH_WARNED)
    lwsi_log_warn("the launch command differs from the leader's: rank %lld: %s (--launch-check "
                  "warn: the group forms anyway; 'strict' refuses it)",
                  (long long)ev->rank, ev->reason);
  else
    lwsi_log_debug("the launch command differs from the leader's: rank %lld: %s",
                   (long long)ev->rank, ev->reason);
}

/* Worker: the leader refused us (or whoever answers on its address did)
 * without proving it with the token. Not final (contract, "Membership"),
 * but almost always a token that differs: the first one is a warning that
 * says what to check, at once, instead of a timeout many minutes later. */
static void on_unverified_refusal(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  a->unverified_count++;
  lwsi_text_copy(a->unverified_reason, sizeof(a->unverified_reason), ev->reason);
  if (a->unverified_count == 1)
    lwsi_log_warn("the leader refused this member but could not prove it with the token (%s): "
                  "check that every member has the same --token-file / LWSINIT_TOKEN; retrying "
                  "until --rdzv-timeout (%.3g s)",
                  ev->reason, (double)a->cfg->rdzv_timeout_ms / 1000.0);
}

static void on_rdzv(struct lwsi_rdzv *r, const struct lwsi_rdzv_event *ev)
{
  struct lwsi_agent *a = r->data;
  char why[1024];
  switch (ev->type) {
  case LWSI_RDZV_EV_RETRYING:
    /* Progress, not every try: the 1st, 2nd, 4th, 8th ... attempt. */
    if ((r->attempts & (r->attempts - 1)) == 0)
      lwsi_log_info("waiting for the leader's rendezvous at %s:%u (attempt %u: %s)", a->leader_ip,
                    a->cfg->rdzv_port, r->attempts, ev->reason);
    return;
  case LWSI_RDZV_EV_JOINED:
    if (r->leader)
      lwsi_log_info("%s, from %s%s%s", ev->reason, ev->addr, ev->pod[0] ? ", pod " : "",
                    ev->pod);
    else
      lwsi_log_info("joined the leader at %s:%u as rank %u", a->leader_ip, a->cfg->rdzv_port,
                    a->cfg->rank);
    if (r->leader && r->state == LWSI_RDZV_RELEASED)
      restart_member_joined(a, ev);
    return;
  case LWSI_RDZV_EV_WAITING:
    lwsi_log_debug("the leader is %s", ev->reason);
    return;
  case LWSI_RDZV_EV_REFUSED:
    if (r->leader) {
      lwsi_log_warn("refused rank %lld from %s: %s", (long long)ev->rank, ev->addr, ev->reason);
      return;
    }
    snprintf(why, sizeof(why), "the leader at %s:%u refused rank %u: %s", a->leader_ip,
             a->cfg->rdzv_port, a->cfg->rank, ev->reason);
    finish(a, LWSI_EXIT_RDZV, why);
    return;
  case LWSI_RDZV_EV_DROPPED:
    lwsi_log_debug("dropped a rendezvous connection from %s: %s", ev->addr, ev->reason);
    return;
  case LWSI_RDZV_EV_DEPARTED:
    if (r->leader)
      lwsi_log_info("rank %lld left before the group formed: %s", (long long)ev->rank,
                    ev->reason);
    else
      lwsi_log_info("lost the leader before the group formed (%s); reconnecting", ev->reason);
    return;
  case LWSI_RDZV_EV_RELEASED:
    if (restart_rejoined(a))
      return;
    a->launch_compared = r->leader && a->cfg->launch_check != LWSI_LAUNCHCK_OFF;
    on_released(a);
    return;
  case LWSI_RDZV_EV_FAILED:
    snprintf(why, sizeof(why), "the group did not form: %s", ev->reason);
    finish(a, LWSI_EXIT_RDZV, why);
    return;
  case LWSI_RDZV_EV_TIMEOUT:
    snprintf(why, sizeof(why), "the group did not form within %.3g s (--rdzv-timeout): %s",
             (double)a->cfg->rdzv_timeout_ms / 1000.0, ev->reason);
    finish(a, LWSI_EXIT_RDZV, why);
    return;
  case LWSI_RDZV_EV_LOST:
    if (a->rsh_on && ev->rank > 0)
      lwsi_rsh_member_lost(&a->rsh, (uint32_t)ev->rank);
    on_member_lost(a, ev);
    return;
  case LWSI_RDZV_EV_APP:
    if (a->rsh_on && lwsi_rsh_message(&a->rsh, ev))
      return;
    if (!node_message(a, ev) && !phases_message(a, ev) && !restart_message(a, ev)) {
      on_check_message(a, ev);
      on_group_message(a, ev);
    }
    return;
  case LWSI_RDZV_EV_LAUNCH_DIFF:
    on_launch_diff(a, ev);
    return;
  case LWSI_RDZV_EV_UNVERIFIED:
    on_unverified_refusal(a, ev);
    return;
  }
}

static void on_rdzv_local(struct lwsi_rdzv *r, struct lwsi_rdzv_local *out)
{
  local_health(r->data, out);
}

static void start_rdzv(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  struct lwsi_rdzv_config rc = {
    .size = cfg->size,
    .rank = cfg->rank,
    .revision = cfg->revision,
    .token = cfg->token_len > 0 ? (const uint8_t *)cfg->token : NULL,
    .token_len = cfg->token_len,
    .gpus = cfg->gpus,
    .pod = getenv("HOSTNAME"),
    .host = cfg->rank == 0 ? "::" : a->leader_ip,
    .port = cfg->rdzv_port,
    .rdzv_timeout_ms = cfg->rdzv_timeout_ms,
    .heartbeat_ms = cfg->heartbeat_ms,
    .peer_timeout_ms = cfg->peer_timeout_ms,
    .admit_replacements = cfg->on_failure == LWSI_ON_FAILURE_RESTART,
  };
  char why[400];
  struct lwsi_launchck_cmd cmd;
  int err = lwsi_cmdline_launch_check(cfg, &cmd);
  if (err < 0) {
    /* The one failure an operator can act on gets its remedy. */
    if (err == -ELIBACC)
      snprintf(why, sizeof(why),
               "cannot digest the launch command: libcrypto.so.3 cannot be loaded (a member of a "
               "group needs OpenSSL 3's libcrypto in the image, e.g. Debian's libssl3)");
    else
      snprintf(why, sizeof(why), "cannot digest the launch command: %s", strerror(-err));
    finish(a, 1, why);
    return;
  }
  uint16_t dist_port = 0;
  rc.preset = lwsi_engine_get(cfg->preset)->name;
  rc.dist_port = lwsi_config_dist_port(cfg, &dist_port) ? dist_port : 0;
  rc.cmd = &cmd;
  rc.launch_check = cfg->launch_check;
  set_phase(a, LWSI_PHASE_JOINING);
  a->member_rows = calloc(cfg->size, sizeof(*a->member_rows));
  a->health_rows = calloc(cfg->size, sizeof(*a->health_rows));
  if (a->member_rows == NULL || a->health_rows == NULL) {
    finish(a, 1, "cannot allocate the member table: out of memory");
    return;
  }
  a->rdzv.data = a;
  a->rdzv_on = true;
  err = lwsi_rdzv_start(&a->rdzv, &a->loop, &rc, on_rdzv, on_rdzv_local);
  lwsi_launchck_free(&cmd); /* the rendezvous keeps its own copy */
  if (err < 0) {
    snprintf(why, sizeof(why), "cannot %s the rendezvous on port %u (--rdzv-port): %s",
             cfg->rank == 0 ? "listen for" : "start", cfg->rdzv_port, strerror(-err));
    finish(a, LWSI_EXIT_RDZV, why);
    return;
  }
  if (cfg->rank == 0) {
    lwsi_log_info("holding the rendezvous for a group of %u on port %u", cfg->size,
                  lwsi_rdzv_port(&a->rdzv));
    if (a->rdzv.open)
      lwsi_log_info("no token: any agent that reaches port %u can join (see --token-file)",
                    cfg->rdzv_port);
  }
}

/* While the group forms, the leader's name is looked up again every 2 s:
 * a leader pod recreated before the release may come back at a new IP,
 * which workers that resolved the old one would never reach. */
#define LWSI_RERESOLVE_MS 2000

static void on_reresolved(struct lwsi_resolver *res, int status)
{
  struct lwsi_agent *a = res->data;
  if (status < 0 || a->rdzv.state != LWSI_RDZV_JOINING || strcmp(res->ip, a->leader_ip) == 0)
    return;
  lwsi_log_info("the leader '%s' now resolves to %s (was %s); connecting there", a->cfg->leader,
                res->ip, a->leader_ip);
  snprintf(a->leader_ip, sizeof(a->leader_ip), "%s", res->ip);
  int rc = lwsi_rdzv_set_leader(&a->rdzv, a->leader_ip);
  if (rc < 0)
    lwsi_log_debug("cannot move to the new leader address: %s", strerror(-rc));
}

static void on_reresolve_tick(uv_timer_t *t)
{
  struct lwsi_agent *a = t->data;
  struct lwsi_resolver *res = &a->reresolver;
  if (!a->rdzv_on || a->rdzv.state != LWSI_RDZV_JOINING) {
    uv_timer_stop(t);
    return;
  }
  if (res->state == LWSI_RESOLVER_DONE) {
    lwsi_resolver_close(res); /* closes on this loop turn; start on the next tick */
    return;
  }
  if (res->state != LWSI_RESOLVER_IDLE && res->state != LWSI_RESOLVER_CLOSED)
    return;
  const struct lwsi_config *cfg = a->cfg;
  struct lwsi_resolver_opts opts = {
    .dns_server = cfg->has_dns_server ? cfg->dns_server.host : NULL,
    .dns_port = cfg->has_dns_server ? cfg->dns_server.port : 0,
    .timeout_ms = LWSI_RERESOLVE_MS - 500,
  };
  res->data = a;
  a->reresolver_on = true;
  if (lwsi_resolver_start(res, &a->loop, cfg->leader, &opts, on_reresolved, NULL) < 0)
    uv_timer_stop(t);
}

static void start_reresolving(struct lwsi_agent *a)
{
  uv_timer_init(&a->loop, &a->reresolve_timer);
  a->reresolve_timer.data = a;
  a->reresolve_timer_on = true;
  uv_timer_start(&a->reresolve_timer, on_reresolve_tick, LWSI_RERESOLVE_MS, LWSI_RERESOLVE_MS);
}

static void on_resolved(struct lwsi_resolver *res, int status)
{
  struct lwsi_agent *a = res->data;
  char why[1024];
  if (status < 0) {
    snprintf(why, sizeof(why),
             "the leader's name '%s' did not resolve within %.3g s (--dns-timeout) using %s: %s; "
             "check LWS_LEADER_ADDRESS and the cluster DNS",
             a->cfg->leader, (double)a->cfg->dns_timeout_ms / 1000.0, res->server_desc,
             res->last_error[0] ? res->last_error : strerror(-status));
    finish(a, LWSI_EXIT_DNS, why);
    return;
  }
  snprintf(a->leader_ip, sizeof(a->leader_ip), "%s", res->ip);
  if (res->literal)
    lwsi_log_info("the leader is %s", a->leader_ip);
  else
    lwsi_log_info("the leader '%s' is %s (after %u %s)", a->cfg->leader, a->leader_ip,
                  res->attempts, res->attempts == 1 ? "try" : "tries");
  start_rdzv(a);
  if (!res->literal && !a->done)
    start_reresolving(a);
}

static void on_resolve_progress(struct lwsi_resolver *res)
{
  struct lwsi_agent *a = res->data;
  lwsi_log_info("resolving the leader '%s' (try %u, using %s): %s", a->cfg->leader,
                res->attempts, res->server_desc, res->last_error);
}

static void start_resolving(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  struct lwsi_resolver_opts opts = {
    .dns_server = cfg->has_dns_server ? cfg->dns_server.host : NULL,
    .dns_port = cfg->has_dns_server ? cfg->dns_server.port : 0,
    .timeout_ms = cfg->dns_timeout_ms,
  };
  set_phase(a, LWSI_PHASE_RESOLVING);
  a->resolver.data = a;
  a->resolver_on = true;
  int rc = lwsi_resolver_start(&a->resolver, &a->loop, cfg->leader, &opts, on_resolved,
                               on_resolve_progress);
  if (rc < 0) {
    char why[400];
    snprintf(why, sizeof(why), "cannot resolve the leader's name '%s': %s", cfg->leader,
             strerror(-rc));
    finish(a, LWSI_EXIT_DNS, why);
  }
}

/* ---- restart in place (contract, "Membership": --on-failure restart) -- */

/* The group restarts under the next epoch instead of exiting. The leader
 * decides; its messages after release (docs/protocol.md, "Epochs"):
 *   restart        leader -> workers: stop the engine, the group restarts
 *                  under {"epoch":E}; a replacement of a lost member gets
 *                  it again when it joins;
 *   restart_ready  a worker -> the leader: its engine of the old epoch is
 *                  gone and its GPUs are free, {"epoch":E};
 *   relaunch       leader -> workers: every member is ready and the backoff
 *                  has passed: launch under {"epoch":E}.
 * A message of an older epoch is ignored, and no member launches twice in
 * one epoch (rs.launched). The failure that exceeds --max-restarts within
 * --restart-window ends the group as --on-failure exit does:
 * engine_failed with "final":true. */
#define MSG_RESTART "restart"
#define MSG_RESTART_READY "restart_ready"
#define MSG_RELAUNCH "relaunch"
#define MSG_RESTART_FAILED "restart_failed" /* a worker -> the leader: it cannot restart */
#define RESTART_BACKOFF_MS 1000u
#define RESTART_BACKOFF_MAX_MS 60000u

static bool restart_policy(const struct lwsi_agent *a)
{
  return a->cfg->on_failure == LWSI_ON_FAILURE_RESTART && !a->done && !a->ordered_stop &&
         a->stop_exit_code == 0 && !a->fail_delay_on;
}

/* Whether this agent decides for the group: the leader, or an agent alone. */
static bool restart_decides(const struct lwsi_agent *a)
{
  return a->cfg->rank == 0;
}

static void restart_relaunch(struct lwsi_agent *a);

static void restart_epoch_data(char *buf, size_t len, uint32_t epoch, int64_t rank,
                               const char *reason)
{
  char r[600];
  lwsi_text_copy(r, sizeof(r), reason != NULL ? reason : "");
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "epoch", epoch);
  if (rank >= 0)
    cJSON_AddNumberToObject(o, "rank", (double)rank);
  if (reason != NULL)
    cJSON_AddStringToObject(o, "reason", r);
  if (!cJSON_PrintPreallocated(o, buf, (int)len, 0))
    snprintf(buf, len, "{\"epoch\":%u}", epoch);
  cJSON_Delete(o);
}

/* Leader: every member is ready for the epoch and the backoff is over. */
static void restart_maybe_relaunch(struct lwsi_agent *a)
{
  if (!a->rs.active || !a->rs.backoff_over || a->rs.ready == NULL || a->done)
    return;
  for (uint32_t r = 0; r < a->cfg->size; r++)
    if (!a->rs.ready[r])
      return;
  if (a->rs.rejoin_on)
    uv_timer_stop(&a->rs.rejoin_timer);
  if (group_released(a)) {
    char data[64];
    restart_epoch_data(data, sizeof(data), a->rs.epoch, -1, NULL);
    if (lwsi_rdzv_app_broadcast(&a->rdzv, MSG_RELAUNCH, data) < 0)
      lwsi_log_debug("cannot tell the group to relaunch");
  }
  lwsi_log_info("the group re-formed under epoch %u; relaunching", a->rs.epoch);
  restart_relaunch(a);
}

/* This member's engine of the old epoch is gone and its GPUs are free:
 * ready for the epoch, once the leader has named it. */
static void restart_maybe_ready(struct lwsi_agent *a)
{
  if (!a->rs.active || !a->rs.gone || (int64_t)a->rs.epoch <= a->rs.launched || a->done)
    return;
  if (restart_decides(a)) {
    if (a->rs.ready != NULL)
      a->rs.ready[0] = 1;
    restart_maybe_relaunch(a);
    return;
  }
  if (a->rs.ready_sent == (int64_t)a->rs.epoch)
    return;
  char data[64];
  restart_epoch_data(data, sizeof(data), a->rs.epoch, -1, NULL);
  if (lwsi_rdzv_app_send(&a->rdzv, MSG_RESTART_READY, data) == 0)
    a->rs.ready_sent = a->rs.epoch;
  lwsi_log_info("ready for epoch %u: the old engine is gone", a->rs.epoch);
}

static void restart_rejoin_go(struct lwsi_agent *a);

static int64_t restart_msg_epoch(const cJSON *o);

static void restart_gone(struct lwsi_agent *a)
{
  a->rs.gone = true;
  if (a->rs.leader_lost) {
    restart_rejoin_go(a); /* no leader to tell: the new one forms the group */
    return;
  }
  restart_maybe_ready(a);
}

static void restart_exit(struct lwsi_agent *a, int code, const char *why);
static void restart_cannot(struct lwsi_agent *a, const char *why);

/* Acts once the wait's process is gone (GONE, its last event). */
static void on_gpu_free(struct lwsi_gpurun *r, enum lwsi_gpurun_ev ev)
{
  struct lwsi_agent *a = r->data;
  if (a->done || ev != LWSI_GPURUN_GONE || r != &a->rs.gpu_free[a->rs.gf])
    return;
  if (r->have_result && r->ok) {
    lwsi_log_info("the GPUs hold no process of the old engine (%.0f ms)", r->time_ms);
    restart_gone(a);
    return;
  }
  /* Without a good result the GPUs may still hold the old engine's
   * memory; a new engine beside it could not allocate its own. */
  {
    char why[800];
    snprintf(why, sizeof(why),
             "the GPUs did not become free of the old engine within %.3g s (--gpu-free-timeout): "
             "%s",
             (double)a->cfg->gpu_free_timeout_ms / 1000.0,
             r->error[0] ? r->error : "the check ended without a result");
    restart_cannot(a, why);
  }
}

/* The old engine exited: wait until its GPUs hold none of its processes
 * (NVML's list, in the separate check program), then report ready. With
 * no --gpus there is nothing to wait for. */
static void restart_engine_gone(struct lwsi_agent *a)
{
  if (a->cfg->gpus == 0 || a->rs.old_engine <= 0) {
    restart_gone(a);
    return;
  }
  if (a->rs.gpu_free_on[a->rs.gf] && !a->rs.gpu_free[a->rs.gf].gone_sent)
    return; /* the wait is under way */
  /* The other of the two was closed a restart ago, at the latest. */
  a->rs.gf ^= 1;
  struct lwsi_gpurun *gf = &a->rs.gpu_free[a->rs.gf];
  if (a->rs.gpu_free_on[a->rs.gf])
    lwsi_gpurun_close(gf);
  if (a->rs.gpu_free_on[a->rs.gf ^ 1])
    lwsi_gpurun_close(&a->rs.gpu_free[a->rs.gf ^ 1]);
  char prog[4200], pids[24], tmo[24], gpus[16];
  check_program(prog, sizeof(prog));
  snprintf(pids, sizeof(pids), "%d", (int)a->rs.old_engine);
  snprintf(tmo, sizeof(tmo), "%llu", (unsigned long long)a->cfg->gpu_free_timeout_ms);
  snprintf(gpus, sizeof(gpus), "%u", a->cfg->gpus);
  char *argv[] = {prog, "gpu-free", "--proto", "--pgid", pids, "--gpus", gpus, "--timeout-ms",
                  tmo, NULL};
  memset(gf, 0, sizeof(*gf));
  gf->data = a;
  int rc = lwsi_gpurun_start(gf, &a->loop, argv, a->envp, &a->sup.child_mask, on_gpu_free);
  a->rs.gpu_free_on[a->rs.gf] = true;
  if (rc < 0) {
    char why[4400];
    snprintf(why, sizeof(why), "cannot run %s to wait for the GPUs: %s", prog, strerror(-rc));
    restart_cannot(a, why);
    return;
  }
  lwsi_log_info("waiting up to %.3g s for the GPUs to be free of the old engine (pgid %d)",
                (double)a->cfg->gpu_free_timeout_ms / 1000.0, (int)a->rs.old_engine);
}

/* The GPU check of the last launch is over (or, when the group failed
 * while it ran, ends now): its handles close here, so that they are closed
 * long before check_again reuses them (the relaunch waits for the backoff,
 * at least RESTART_BACKOFF_MS, and a worker's relaunch follows its own
 * restart_ready), and its deadline no longer counts. */
static void check_end_for_restart(struct lwsi_agent *a)
{
  if (a->gpu_timer_on)
    uv_timer_stop(&a->gpu_deadline);
  if (a->gpu_on) {
    lwsi_gpurun_close(&a->gpu);
    a->gpu_on = false;
  }
}

/* Before a relaunch the GPU check runs again, as before the first launch
 * (contract, "Checks before launch"): a restart often follows a GPU fault
 * (an Xid, a falling-off-the-bus), and an engine launched on a GPU that
 * no longer works would fail again after its long load instead of the
 * check naming the GPU within --gpu-check-timeout. Every member runs it;
 * the leader, which starts its own right after its relaunch message,
 * gathers the results again from nothing. */
static void check_reset(struct lwsi_agent *a);

static void check_again(struct lwsi_agent *a)
{
  check_reset(a);
  lwsi_log_info("running the GPU check again before the relaunch under epoch %u", a->rs.epoch);
  start_check(a);
}

/* Forgets the last run of the check: the next start_check runs it anew. */
static void check_reset(struct lwsi_agent *a)
{
  memset(&a->gpu, 0, sizeof(a->gpu));
  a->gpu_verdict_ok = false;
  a->gpu_gone = false;
  a->gpu_passed = 0;
  a->gpu_model[0] = '\0';
  a->gpu_model_rank = 0;
  if (a->gpu_seen != NULL)
    memset(a->gpu_seen, 0, a->cfg->size);
}

/* Enters `restarting`: the engine stops (SIGTERM, --grace, SIGKILL of its
 * process group), its health stops being polled. */
static void restart_enter(struct lwsi_agent *a)
{
  if (!a->rs.active) {
    a->rs.active = true;
    a->rs.gone = false;
    set_phase(a, LWSI_PHASE_RESTARTING);
    if (a->group_timers_on)
      uv_timer_stop(&a->hang_timer);
    lwsi_upstream_close(&a->upstream);
    a->upstream_on = false;
    a->rs.old_engine = a->sup.child;
    check_end_for_restart(a);
  }
  if (a->sup.child_running) {
    if (!a->sup.stopping) {
      lwsi_log_info("stopping the engine for the restart (grace %llu ms)",
                    (unsigned long long)a->cfg->grace_ms);
      lwsi_supervisor_stop(&a->sup, SIGTERM, false);
    }
    return; /* restart_child_exited goes on */
  }
  if (!a->rs.gone)
    restart_engine_gone(a);
}

/* Ends the agent for good: the restart cannot go on. */
static void restart_exit(struct lwsi_agent *a, int code, const char *why)
{
  if (a->done)
    return;
  if (a->rs.gpu_free_on[a->rs.gf] && !a->rs.gpu_free[a->rs.gf].exited)
    lwsi_gpurun_kill(&a->rs.gpu_free[a->rs.gf]);
  leave_group(a, "the group cannot restart");
  stop_for_group(a, code, why);
}

static void on_restart_backoff(uv_timer_t *t)
{
  struct lwsi_agent *a = t->data;
  a->rs.backoff_over = true;
  restart_maybe_relaunch(a);
}

static void on_rejoin_timeout(uv_timer_t *t);

static int restart_timers(struct lwsi_agent *a)
{
  if (a->rs.timers_on)
    return 0;
  a->rs.ready = calloc(a->cfg->size, 1);
  a->rs.history = calloc(a->cfg->max_restarts + 1, sizeof(*a->rs.history));
  if (a->rs.ready == NULL || a->rs.history == NULL)
    return -ENOMEM;
  uv_timer_init(&a->loop, &a->rs.backoff_timer);
  uv_timer_init(&a->loop, &a->rs.rejoin_timer);
  a->rs.backoff_timer.data = a;
  a->rs.rejoin_timer.data = a;
  a->rs.timers_on = true;
  return 0;
}

/* Leader: the group gives up (the budget is spent, or a lost member was
 * not replaced in time): the others learn which rank and why, as with
 * --on-failure exit, and exit 6; a member whose own engine failed exits
 * with its status. */
static void restart_give_up(struct lwsi_agent *a, int64_t rank, const char *why)
{
  if (group_released(a)) {
    char data[1200];
    restart_epoch_data(data, sizeof(data), a->rs.epoch, rank, why);
    /* "final": a worker under --on-failure restart exits on it. */
    size_t n = strlen(data);
    if (n > 0 && n + 16 < sizeof(data) && data[n - 1] == '}')
      snprintf(data + n - 1, sizeof(data) - n + 1, ",\"final\":true}");
    if (lwsi_rdzv_app_broadcast(&a->rdzv, MSG_ENGINE_FAILED, data) < 0)
      lwsi_log_debug("cannot tell the group that it stops");
  }
  restart_exit(a, a->rs.own_failed && rank == 0 ? a->rs.own_code : LWSI_EXIT_PEER, why);
}

/* This member cannot take part in the restart (its GPUs stay busy): the
 * leader ends the group, naming it; this member exits with its engine's
 * status when its engine failed, else 6. */
static void restart_cannot(struct lwsi_agent *a, const char *why)
{
  if (restart_decides(a)) {
    restart_give_up(a, 0, why);
    return;
  }
  if (group_released(a)) {
    char data[1200];
    restart_epoch_data(data, sizeof(data), a->rs.epoch, a->cfg->rank, why);
    if (lwsi_rdzv_app_send(&a->rdzv, MSG_RESTART_FAILED, data) < 0)
      lwsi_log_debug("cannot tell the leader that the restart failed here");
  }
  restart_exit(a, a->rs.own_failed ? a->rs.own_code : LWSI_EXIT_PEER, why);
}

static void on_rejoin_timeout(uv_timer_t *t)
{
  struct lwsi_agent *a = t->data;
  char why[300];
  int64_t lost = -1;
  for (uint32_t r = 1; r < a->cfg->size && lost < 0; r++) {
    struct lwsi_rdzv_member m;
    if (a->rs.ready != NULL && !a->rs.ready[r] && lwsi_rdzv_member(&a->rdzv, r, &m) == 0 &&
        !m.alive)
      lost = r;
  }
  snprintf(why, sizeof(why),
           "rank %lld was lost and no replacement joined within %.3g s (--rejoin-timeout)",
           (long long)lost, (double)a->cfg->rejoin_timeout_ms / 1000.0);
  restart_give_up(a, lost, why);
}

/* Leader: counts the restarts that began within --restart-window. */
static uint32_t restart_recent(struct lwsi_agent *a, uint64_t now)
{
  uint32_t kept = 0;
  for (uint32_t i = 0; i < a->rs.nhistory; i++)
    if (now - a->rs.history[i] < a->cfg->restart_window_ms)
      a->rs.history[kept++] = a->rs.history[i];
  a->rs.nhistory = kept;
  return kept;
}

/* The line of a restart beyond the budget: why, and the count. */
static void restart_spent(const struct lwsi_agent *a, char *buf, size_t len, const char *why,
                          uint32_t recent)
{
  snprintf(buf, len,
           "%s; the group has restarted %u time%s within %.3g s (--max-restarts %u, "
           "--restart-window): giving up",
           why, recent, recent == 1 ? "" : "s", (double)a->cfg->restart_window_ms / 1000.0,
           a->cfg->max_restarts);
}

/* Leader: the group restarts because of rank's failure in epoch, or gives
 * up. lost: rank's agent is gone, and its replacement must join. */
static void restart_failure(struct lwsi_agent *a, int64_t rank, uint32_t epoch, bool lost,
                            const char *why)
{
  if (a->done)
    return;
  if (restart_timers(a) < 0) {
    restart_exit(a, a->rs.own_failed ? a->rs.own_code : LWSI_EXIT_PEER,
                 "cannot restart the group: out of memory");
    return;
  }
  if (lost && rank > 0 && (uint32_t)rank < a->cfg->size) {
    a->rs.ready[rank] = 0;
    if (!uv_is_active((uv_handle_t *)&a->rs.rejoin_timer)) {
      uv_timer_start(&a->rs.rejoin_timer, on_rejoin_timeout, a->cfg->rejoin_timeout_ms, 0);
      a->rs.rejoin_on = true;
    }
  }
  if (epoch < a->rs.epoch || (a->rs.active && (int64_t)a->rs.epoch > a->rs.launched)) {
    /* A failure of an older epoch, or one while the group restarts already:
     * the restart under way covers it (a lost member waits for its
     * replacement above). */
    lwsi_log_info("rank %lld failed (%s) while the group restarts under epoch %u", (long long)rank,
                  why, a->rs.epoch);
    return;
  }
  uint64_t now = uv_now(&a->loop);
  uint32_t recent = restart_recent(a, now);
  if (recent >= a->cfg->max_restarts) {
    char full[1600];
    restart_spent(a, full, sizeof(full), why, recent);
    restart_give_up(a, rank, full);
    return;
  }
  a->rs.history[a->rs.nhistory++] = now;
  uint64_t backoff = RESTART_BACKOFF_MS;
  for (uint32_t i = 0; i < recent && backoff < RESTART_BACKOFF_MAX_MS; i++)
    backoff *= 2;
  if (backoff > RESTART_BACKOFF_MAX_MS)
    backoff = RESTART_BACKOFF_MAX_MS;
  a->rs.epoch++;
  a->rs.restarts++;
  a->rs.backoff_over = false;
  for (uint32_t r = 0; r < a->cfg->size; r++) {
    struct lwsi_rdzv_member m;
    if (r > 0 && a->rdzv_on && lwsi_rdzv_member(&a->rdzv, r, &m) == 0 && !m.alive &&
        !a->rs.rejoin_on) {
      uv_timer_start(&a->rs.rejoin_timer, on_rejoin_timeout, a->cfg->rejoin_timeout_ms, 0);
      a->rs.rejoin_on = true;
    }
    a->rs.ready[r] = 0;
  }
  lwsi_log_warn("%s; restarting the group in place under epoch %u (restart %u of at most %u "
                "within %.3g s; backoff %llu ms)",
                why, a->rs.epoch, recent + 1, a->cfg->max_restarts,
                (double)a->cfg->restart_window_ms / 1000.0, (unsigned long long)backoff);
  uv_timer_start(&a->rs.backoff_timer, on_restart_backoff, backoff, 0);
  if (group_released(a)) {
    char data[1200];
    restart_epoch_data(data, sizeof(data), a->rs.epoch, rank, why);
    if (lwsi_rdzv_app_broadcast(&a->rdzv, MSG_RESTART, data) < 0)
      lwsi_log_debug("cannot tell the group to restart");
  }
  restart_enter(a);
  restart_maybe_ready(a);
}

/* This member's engine failed (exited on its own: code; or hung: 7).
 * Returns false when the group does not restart. */
static bool restart_own_failure(struct lwsi_agent *a, int code, const char *why)
{
  if (!restart_policy(a) || (!group_released(a) && a->cfg->size > 1))
    return false;
  if (a->rs.active)
    return false; /* handled by restart_child_exited */
  a->rs.own_failed = true;
  a->rs.own_code = code;
  uint32_t epoch = a->rs.epoch;
  restart_enter(a);
  if (restart_decides(a))
    restart_failure(a, 0, epoch, false, why);
  else
    engine_failed_tell(a, why);
  return true;
}

/* The engine exited. Returns true when the restart takes it. */
static bool restart_child_exited(struct lwsi_agent *a, int code, const char *what)
{
  if (a->cfg->on_failure != LWSI_ON_FAILURE_RESTART || a->done)
    return false;
  if (a->rs.active) {
    lwsi_log_info("the engine of epoch %lld is gone", (long long)a->rs.launched);
    restart_engine_gone(a);
    return true;
  }
  return restart_own_failure(a, code, what);
}

/* The engine hung. Returns true when the restart takes it. */
static bool restart_engine_hung(struct lwsi_agent *a, const char *why)
{
  if (!restart_own_failure(a, LWSI_EXIT_HANG, why))
    return false;
  lwsi_log_error("%s", why);
  return true;
}

/* A stop signal while restarting: nothing is left to drain; the agent
 * exits as the signal would have ended it once the engine is gone. */
static bool restart_stop_signal(struct lwsi_agent *a, int sig, const char *name)
{
  if (!a->rs.active || a->done || a->stop_exit_code != 0)
    return false;
  lwsi_log_info("received %s while restarting; exiting %d", name, 128 + sig);
  if (a->rs.gpu_free_on[a->rs.gf] && !a->rs.gpu_free[a->rs.gf].exited)
    lwsi_gpurun_kill(&a->rs.gpu_free[a->rs.gf]);
  leave_group(a, name);
  if (a->sup.child_running) {
    a->stop_exit_code = 128 + sig;
    set_phase(a, LWSI_PHASE_STOPPING);
    return false; /* the stop already under way goes on; a second signal hurries it */
  }
  set_phase(a, LWSI_PHASE_STOPPING);
  finish(a, 128 + sig, NULL);
  return true;
}

/* ---- a lost leader (worker; contract, "Membership") ----
 *
 * The leader's agent is lost after release: no one decides for the group
 * any more, but a new leader agent (the kubelet's restarted container, a
 * recreated pod at a new IP) can form it again. This member stops its
 * engine as for any restart, goes back to joining (lwsi_rdzv_rejoin; the
 * leader's name is resolved again every 2 s), and once its old engine is
 * gone and the new group is released, reports its node check with the
 * epoch it ran under; the new leader, which knows nothing of the old
 * group, goes on under the largest such epoch + 1 and names it in its
 * verdict (docs/protocol.md, "Epochs"). No new group within
 * --rejoin-timeout ends this member as `exit` would (6). The restart
 * counts against this member's own --max-restarts budget: the new leader
 * starts its own count. */

/* Worker: a restart of the group began now (the leader's `restart`, or
 * the leader's loss): kept for the budget a lost leader is checked
 * against. */
static void restart_note(struct lwsi_agent *a)
{
  if (restart_timers(a) < 0)
    return;
  uint64_t now = uv_now(&a->loop);
  restart_recent(a, now);
  if (a->rs.nhistory > a->cfg->max_restarts) {
    memmove(a->rs.history, a->rs.history + 1, (a->rs.nhistory - 1) * sizeof(*a->rs.history));
    a->rs.nhistory--;
  }
  a->rs.history[a->rs.nhistory++] = now;
}

static void on_leader_rejoin_timeout(uv_timer_t *t)
{
  struct lwsi_agent *a = t->data;
  char why[600];
  snprintf(why, sizeof(why),
           "the leader (rank 0) was lost and no new leader at '%s' formed the group within "
           "%.3g s (--rejoin-timeout)",
           a->cfg->leader, (double)a->cfg->rejoin_timeout_ms / 1000.0);
  a->rs.rejoin_on = false;
  restart_exit(a, a->rs.own_failed ? a->rs.own_code : LWSI_EXIT_PEER, why);
}

static void restart_leader_lost(struct lwsi_agent *a, const char *why)
{
  int code = a->rs.own_failed ? a->rs.own_code : LWSI_EXIT_PEER;
  /* The launch in phases (a service on the leader that the workers'
   * services join) and preset mpi (the leader's COMMAND is the job) have
   * no engine of their own on a worker to relaunch alone. */
  if (launch_service(a) != NULL || a->cfg->preset == LWSI_PRESET_MPI) {
    restart_exit(a, code, why);
    return;
  }
  if (restart_timers(a) < 0) {
    restart_exit(a, code, "cannot restart the group: out of memory");
    return;
  }
  uint32_t recent = restart_recent(a, uv_now(&a->loop));
  if (recent >= a->cfg->max_restarts) {
    char full[1600];
    restart_spent(a, full, sizeof(full), why, recent);
    restart_exit(a, code, full);
    return;
  }
  int rc = lwsi_rdzv_rejoin(&a->rdzv);
  if (rc < 0) {
    lwsi_log_debug("cannot join again: %s", strerror(-rc));
    restart_exit(a, code, why);
    return;
  }
  restart_note(a);
  a->rs.restarts++;
  a->rs.leader_lost = true;
  a->rs.rejoined = false;
  uv_timer_start(&a->rs.rejoin_timer, on_leader_rejoin_timeout, a->cfg->rejoin_timeout_ms, 0);
  a->rs.rejoin_on = true;
  if (a->reresolve_timer_on) {
    /* The leader's name again, soon: a new pod has a new IP. */
    if (a->reresolver_on && a->reresolver.state == LWSI_RESOLVER_DONE)
      lwsi_resolver_close(&a->reresolver);
    uv_timer_start(&a->reresolve_timer, on_reresolve_tick, 100, LWSI_RERESOLVE_MS);
  }
  lwsi_log_warn("%s; waiting up to %.3g s (--rejoin-timeout) for a new leader at '%s' "
                "(--on-failure restart)",
                why, (double)a->cfg->rejoin_timeout_ms / 1000.0, a->cfg->leader);
  restart_enter(a);
}

/* Worker: the new group was released. Returns false when this release is
 * a first one. */
static bool restart_rejoined(struct lwsi_agent *a)
{
  if (a->cfg->rank == 0 || !a->rs.leader_lost)
    return false;
  if (a->rs.rejoin_on) {
    uv_timer_stop(&a->rs.rejoin_timer);
    a->rs.rejoin_on = false;
  }
  a->rs.rejoined = true;
  lwsi_log_info("joined a new leader at %s; the group formed again", a->leader_ip);
  restart_rejoin_go(a);
  return true;
}

/* Worker: the old engine is gone and the new group released: the checks
 * before launch, as after a first release; the verdict names the epoch. */
static void restart_rejoin_go(struct lwsi_agent *a)
{
  if (!a->rs.leader_lost || !a->rs.rejoined || !a->rs.gone || a->done)
    return;
  a->rs.leader_lost = false;
  a->rs.rejoined = false;
  a->rs.active = false;
  a->rs.gone = false;
  a->rs.own_failed = false;
  lwsi_supervisor_rearm(&a->sup);
  check_reset(a);
  a->node_verdict_ok = false;
  a->launch_compared = false;
  on_released(a);
}

/* Leader: a member reported its node check with the epoch it ran under
 * (it lost its old leader): before this group launches, its epoch goes
 * above every such one, so that no member launches twice in one epoch. */
static void restart_epoch_seen(struct lwsi_agent *a, int64_t rank, const cJSON *o)
{
  int64_t e = restart_msg_epoch(o);
  if (e < 0 || e >= UINT32_MAX || a->rs.launched >= 0 || a->node_verdict_ok ||
      (int64_t)a->rs.epoch > e)
    return;
  a->rs.epoch = (uint32_t)e + 1;
  lwsi_log_info("rank %lld ran under epoch %lld with a leader before this one: the group goes "
                "on under epoch %u",
                (long long)rank, (long long)e, a->rs.epoch);
}

/* Worker: the leader's verdict names the epoch to launch under. Returns
 * false when this member cannot launch under it (it ran it already). */
static bool restart_take_epoch(struct lwsi_agent *a, const cJSON *o)
{
  int64_t e = restart_msg_epoch(o);
  if (e < 0)
    return true;
  if (a->rs.launched >= 0 && e <= a->rs.launched) {
    char why[300];
    snprintf(why, sizeof(why),
             "the leader names epoch %lld, under which this member ran already (no member "
             "launches twice in one epoch)",
             (long long)e);
    restart_exit(a, LWSI_EXIT_PEER, why);
    return false;
  }
  if (e > (int64_t)a->rs.epoch) {
    if (a->rs.launched >= 0)
      lwsi_log_warn("the group goes on under epoch %lld", (long long)e);
    a->rs.epoch = (uint32_t)e;
  }
  return true;
}

/* A member was lost after release. Returns true when the restart takes
 * it (it wins over --on-peer-loss). */
static bool restart_member_lost(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev,
                                const char *why)
{
  if (!restart_policy(a))
    return false;
  if (ev->rank == 0 && !restart_decides(a)) {
    restart_leader_lost(a, why);
    return true;
  }
  if (!restart_decides(a)) {
    lwsi_log_warn("%s; the leader restarts the group (--on-failure restart)", why);
    return true;
  }
  restart_failure(a, ev->rank, a->rs.epoch, true, why);
  return true;
}

/* Leader: a member joined after release, in the place of a lost one: it
 * learns the current epoch (a restart is under way). */
static void restart_member_joined(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  if (!restart_policy(a) || !a->rs.active || !group_released(a))
    return;
  lwsi_log_info("rank %lld rejoined (a replacement); it restarts under epoch %u",
                (long long)ev->rank, a->rs.epoch);
  char data[1200];
  restart_epoch_data(data, sizeof(data), a->rs.epoch, ev->rank, "a replacement joined");
  if (lwsi_rdzv_app_broadcast(&a->rdzv, MSG_RESTART, data) < 0)
    lwsi_log_debug("cannot tell the replacement the epoch");
}

static int64_t restart_msg_epoch(const cJSON *o)
{
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "epoch");
  /* An epoch counts restarts (a uint32_t): anything larger is no epoch,
   * and converting it would be undefined (C11 6.3.1.4). */
  return cJSON_IsNumber(e) && e->valuedouble >= 0 && e->valuedouble <= UINT32_MAX
             ? (int64_t)e->valuedouble
             : -1;
}

/* engine_failed under --on-failure restart. Returns true when taken. */
static bool restart_engine_failed_msg(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  if (a->cfg->on_failure != LWSI_ON_FAILURE_RESTART || a->done)
    return false;
  cJSON *o = cJSON_Parse(ev->data);
  int64_t epoch = restart_msg_epoch(o);
  const cJSON *reason = cJSON_GetObjectItemCaseSensitive(o, "reason");
  int64_t r = msg_rank(ev, o);
  bool final = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "final"));
  char why[1400];
  snprintf(why, sizeof(why), "the engine failed on rank %lld: %s", (long long)r,
           cJSON_IsString(reason) ? reason->valuestring : "no reason given");
  bool taken = true;
  if (restart_decides(a)) {
    if (epoch < 0)
      epoch = a->rs.epoch;
    restart_failure(a, r, (uint32_t)epoch, false, why);
  } else if (final || epoch < 0) {
    /* The leader gave up: as with --on-failure exit. */
    if (r == a->cfg->rank && a->rs.own_failed)
      restart_exit(a, a->rs.own_code, why);
    else
      taken = false;
  }
  cJSON_Delete(o);
  return taken;
}

/* The restart's own messages; true when ev was one. */
static bool restart_message(struct lwsi_agent *a, const struct lwsi_rdzv_event *ev)
{
  bool restart = strcmp(ev->kind, MSG_RESTART) == 0;
  bool ready = strcmp(ev->kind, MSG_RESTART_READY) == 0;
  bool relaunch = strcmp(ev->kind, MSG_RELAUNCH) == 0;
  bool failed = strcmp(ev->kind, MSG_RESTART_FAILED) == 0;
  if (!restart && !ready && !relaunch && !failed)
    return false;
  if (a->cfg->on_failure != LWSI_ON_FAILURE_RESTART || a->done)
    return true;
  cJSON *o = cJSON_Parse(ev->data);
  int64_t epoch = restart_msg_epoch(o);
  if (failed && restart_decides(a) && ev->rank > 0 && epoch == (int64_t)a->rs.epoch) {
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(o, "reason");
    char why[1400];
    snprintf(why, sizeof(why), "rank %lld cannot restart: %s", (long long)ev->rank,
             cJSON_IsString(reason) ? reason->valuestring : "no reason given");
    cJSON_Delete(o);
    restart_give_up(a, ev->rank, why);
    return true;
  }
  cJSON_Delete(o);
  if (epoch < 0)
    return true;
  if (ready && restart_decides(a) && ev->rank > 0 && (uint32_t)ev->rank < a->cfg->size) {
    if (epoch == (int64_t)a->rs.epoch && a->rs.ready != NULL && a->rs.active) {
      a->rs.ready[ev->rank] = 1;
      restart_maybe_relaunch(a);
    }
  } else if (restart && !restart_decides(a) && ev->rank == 0) {
    if (epoch > (int64_t)a->rs.epoch) {
      lwsi_log_warn("the group restarts under epoch %lld", (long long)epoch);
      a->rs.epoch = (uint32_t)epoch;
      a->rs.restarts++;
      restart_note(a);
      restart_enter(a);
      restart_maybe_ready(a);
    } else if (epoch == (int64_t)a->rs.epoch && a->rs.active) {
      restart_maybe_ready(a); /* said again, for a replacement: harmless */
    }
  } else if (relaunch && !restart_decides(a) && ev->rank == 0) {
    if (epoch == (int64_t)a->rs.epoch && a->rs.active && a->rs.gone)
      restart_relaunch(a);
  }
  return true;
}

/* Launches the engine again under the current epoch, at most once. */
static void restart_relaunch(struct lwsi_agent *a)
{
  if ((int64_t)a->rs.epoch <= a->rs.launched || a->done)
    return;
  a->rs.active = false;
  a->rs.gone = false;
  a->rs.own_failed = false;
  lwsi_supervisor_rearm(&a->sup);
  if (a->cfg->gpu_check != LWSI_GPU_CHECK_NONE) {
    check_again(a);
    return;
  }
  set_phase(a, LWSI_PHASE_CHECKING);
  launch(a);
}

/* A worker that joined a group already running is a replacement: it
 * launches only on the leader's restart and relaunch. */
static void restart_close(struct lwsi_agent *a)
{
  for (unsigned i = 0; i < 2; i++)
    if (a->rs.gpu_free_on[i])
      lwsi_gpurun_close(&a->rs.gpu_free[i]);
  if (a->rs.timers_on) {
    uv_close((uv_handle_t *)&a->rs.backoff_timer, NULL);
    uv_close((uv_handle_t *)&a->rs.rejoin_timer, NULL);
  }
  free(a->rs.ready);
  free(a->rs.history);
}

/* ---- probes and status --------------------------------------------- */

static uint32_t members_alive(struct lwsi_agent *a)
{
  if (!a->rdzv_on)
    return a->cfg->size;
  uint32_t alive = 0;
  for (uint32_t i = 0; i < a->cfg->size; i++) {
    struct lwsi_rdzv_member m;
    if (lwsi_rdzv_member(&a->rdzv, i, &m) == 0 && m.alive)
      alive++;
  }
  return alive;
}

/* The leader's rows of its workers' engines, for /readyz (serving): what
 * their heartbeats said, in the rows the agent owns (member_rows). */
static void member_health_rows(struct lwsi_agent *a, struct lwsi_health_input *in)
{
  if (!is_leader(a) || a->member_rows == NULL || a->health_rows == NULL ||
      a->rdzv.state != LWSI_RDZV_RELEASED)
    return;
  size_t n = 0;
  for (uint32_t i = 1; i < a->cfg->size; i++) {
    struct lwsi_rdzv_member *m = &a->member_rows[n];
    if (lwsi_rdzv_member(&a->rdzv, i, m) < 0 || !m->alive)
      continue; /* a dead member is the alive count's business */
    a->health_rows[n++] = (struct lwsi_health_member){
      .rank = m->rank,
      .has_state = m->has_state,
      .child = m->child,
      .has_health = m->has_health,
      .upstream_on = m->upstream_on,
      .upstream_ok = m->upstream,
      .upstream_age_ms = m->upstream_age_ms,
      .upstream_error = m->upstream_error,
      .stopping = m->stopping,
    };
  }
  in->members = a->health_rows;
  in->nmembers = n;
}

static void health_input(struct lwsi_agent *a, struct lwsi_health_input *in)
{
  const struct lwsi_config *cfg = a->cfg;
  memset(in, 0, sizeof(*in));
  /* A standalone agent is the leader of a group of one. */
  in->is_leader = cfg->rank == 0;
  in->standalone = cfg->standalone;
  in->readiness = cfg->readiness;
  in->phase = phase_names[a->phase];
  in->launched = a->sup.child != 0 || mpi_worker_serving(a);
  in->child_running = a->sup.child_running || mpi_worker_serving(a);
  in->stopping = a->sup.stopping || a->phase >= LWSI_PHASE_STOPPING;
  in->size = cfg->size;
  in->joined = cfg->standalone ? 1 : (a->rdzv_on ? lwsi_rdzv_joined(&a->rdzv) : 0);
  in->alive = cfg->standalone ? 1 : members_alive(a);
  in->lost_reason = a->group_broken[0] ? a->group_broken : NULL;
  in->rdzv_listening = in->is_leader && a->rdzv_on &&
                       (a->rdzv.state == LWSI_RDZV_JOINING || a->rdzv.state == LWSI_RDZV_RELEASED);
  if (!cfg->standalone && cfg->rank > 0 && a->rdzv_on) {
    struct lwsi_rdzv_member m;
    in->leader_heard = a->rdzv.state == LWSI_RDZV_RELEASED && a->group_broken[0] == '\0' &&
                       lwsi_rdzv_member(&a->rdzv, 0, &m) == 0 && m.alive;
    in->leader_reason = a->group_broken[0] ? a->group_broken : "the leader is not heard from";
  }
  in->upstream_enabled = a->upstream_on;
  in->upstream_ok = a->upstream_on && a->upstream.known && a->upstream.ok;
  in->upstream_error = !a->upstream_on ? NULL
                       : a->upstream_err[0] ? a->upstream_err
                       : !a->upstream.known ? "no answer yet"
                                            : a->upstream.last_error;
  member_health_rows(a, in);
}

static void probe_checks(void *data, enum lwsi_health_kind kind, struct lwsi_health_list *out)
{
  struct lwsi_health_input in;
  health_input(data, &in);
  if (kind == LWSI_HEALTH_LIVE)
    lwsi_health_live(&in, out);
  else
    lwsi_health_ready(&in, out);
}

bool lwsi_agent_ready(struct lwsi_agent *a)
{
  struct lwsi_health_input in;
  struct lwsi_health_list l;
  health_input(a, &in);
  lwsi_health_ready(&in, &l);
  return lwsi_health_passed(&l);
}

static enum lwsi_status_gpu gpu_state(const struct lwsi_agent *a)
{
  if (a->gpu.have_result)
    return a->gpu.ok ? LWSI_STATUS_GPU_PASSED : LWSI_STATUS_GPU_FAILED;
  if (a->gpu_on)
    return a->gpu_gone ? LWSI_STATUS_GPU_FAILED : LWSI_STATUS_GPU_RUNNING;
  return LWSI_STATUS_GPU_NOT_STARTED;
}

_Static_assert(LWSI_PHASE_COUNT <= LWSI_STATUS_MAX_PHASES, "a phase the snapshot cannot hold");
_Static_assert(LWSI_UPSTREAM_OUTCOME_COUNT - 1 <= LWSI_STATUS_MAX_OUTCOMES,
               "an upstream outcome the snapshot cannot hold");

_Static_assert(LWSI_NODECHECK_MAX <= LWSI_STATUS_MAX_NODE_CHECKS, "a check the snapshot cannot hold");
_Static_assert(LWSI_NETENV_VARS <= LWSI_STATUS_MAX_NETENV, "a variable the snapshot cannot hold");

/* The node check's and the network environment's part of the snapshot. */
static void status_node(const struct lwsi_agent *a, struct lwsi_status_snapshot *s)
{
  s->node.mode = lwsi_config_node_check_name(a->cfg->node_check);
  s->node.ran = a->node_ran;
  s->node.warnings = a->node.warnings;
  s->node.failures = a->node.failures;
  for (size_t i = 0; i < a->node.n; i++) {
    const struct lwsi_nodecheck_item *it = &a->node.items[i];
    s->node.items[s->node.nitems++] = (struct lwsi_status_node_item){
      .name = it->name, .state = lwsi_nodecheck_state_name(it->state), .found = it->found,
      .fix = it->fix};
  }
  s->netenv.mode = lwsi_config_network_env_name(a->cfg->network_env);
  s->netenv.computed = a->netenv.computed;
  for (size_t i = 0; i < a->netenv.n; i++) {
    const struct lwsi_netenv_var *v = &a->netenv.vars[i];
    s->netenv.vars[s->netenv.nvars++] = (struct lwsi_status_netenv_var){
      .name = v->name, .value = v->set || v->kept ? v->value : NULL, .reason = v->reason,
      .kept = v->kept};
  }
}

/* The launch check (leader) and the unverified refusals (worker). */
static void status_launch_check(struct lwsi_agent *a, struct lwsi_status_snapshot *s)
{
  s->has_launch_check = a->rdzv_on && a->cfg->rank == 0;
  s->launch_check.mode = lwsi_launchck_mode_name(a->cfg->launch_check);
  s->launch_check.compared = a->launch_compared;
  s->launch_check.ranks = a->launch_ranks;
  s->launch_check.differences = a->launch_differences;
  s->launch_check.listed = a->launch_listed;
  s->launch_check.nlisted =
      a->launch_ranks < LWSI_STATUS_LAUNCH_LISTED ? a->launch_ranks : LWSI_STATUS_LAUNCH_LISTED;
  s->unverified_refusal.count = a->unverified_count;
  s->unverified_refusal.reason = a->unverified_reason;
}

/* A member's engine health for its status row: from its heartbeats, or
 * for our own row, our own state. */
static void status_member_health(struct lwsi_agent *a, const struct lwsi_rdzv_member *m,
                                 struct lwsi_status_member *row)
{
  if (m->rank == a->cfg->rank) {
    struct lwsi_rdzv_local l;
    memset(&l, 0, sizeof(l));
    local_health(a, &l);
    row->upstream = l.upstream;
    row->has_health = true;
    row->upstream_on = l.upstream_on;
    row->upstream_age_ms = (int64_t)l.upstream_age_ms;
    lwsi_text_copy(row->upstream_error, sizeof(row->upstream_error), l.upstream_error);
    row->stopping = l.stopping;
    return;
  }
  row->has_health = m->has_health;
  row->upstream_on = m->upstream_on;
  row->upstream_age_ms = m->upstream_age_ms;
  lwsi_text_copy(row->upstream_error, sizeof(row->upstream_error), m->upstream_error);
  row->stopping = m->stopping;
}

/* Fills the snapshot that status.c renders. members has room for a row per
 * rank when there is a group (status_rows). The member rows and the count
 * of live members both come from the rendezvous, once each. */
static void status_snapshot(struct lwsi_agent *a, struct lwsi_status_snapshot *s,
                            struct lwsi_status_member *members)
{
  const struct lwsi_config *cfg = a->cfg;
  uint64_t now = uv_now(&a->loop);
  memset(s, 0, sizeof(*s));
  s->rank = cfg->rank;
  s->size = cfg->size;
  s->standalone = cfg->standalone;
  s->ready = lwsi_agent_ready(a);
  s->leader = cfg->leader;
  s->leader_ip = a->leader_ip;
  for (int p = 0; p < LWSI_PHASE_COUNT; p++) {
    s->phases[p].name = phase_names[p];
    s->phases[p].ms = a->phase_ms[p] + (p == (int)a->phase ? now - a->phase_since_ms : 0);
  }
  s->nphases = LWSI_PHASE_COUNT;
  s->phase = a->phase;
  s->total_ms = now - a->started_ms;

  s->child.state = child_state(a);
  s->child.pid = (int)a->sup.child;
  s->child.exit_code = lwsi_supervisor_exit_code(a->sup.child_status);
  s->child.orphans_reaped = a->sup.reaped_others;

  const struct lwsi_upstream *u = &a->upstream;
  s->upstream.enabled = a->upstream_on;
  s->upstream.url = a->upstream_url;
  s->upstream.known = u->known;
  s->upstream.ok = u->ok;
  s->upstream.outcome = lwsi_upstream_outcome_name(u->outcome);
  s->upstream.http_status = u->http_status;
  s->upstream.latency_s = u->last_latency_s;
  s->upstream.polls = u->polls;
  s->upstream.failures = u->failures;
  s->upstream.error = a->upstream_err[0] ? a->upstream_err : u->last_error;
  for (int o = LWSI_UPSTREAM_OK; o < LWSI_UPSTREAM_OUTCOME_COUNT; o++) {
    struct lwsi_status_outcome *out = &s->upstream.by_outcome[s->upstream.noutcomes++];
    out->name = lwsi_upstream_outcome_name((enum lwsi_upstream_outcome)o);
    out->polls = u->by_outcome[o];
  }

  s->has_group = a->rdzv_on;
  s->joined = 1;
  s->alive = 1;
  s->group.rendezvous = lwsi_rdzv_state_name(a->rdzv.state);
  s->group.incarnation = a->rdzv.nonce_hex;
  s->group.missing = a->rdzv_on ? lwsi_rdzv_missing(&a->rdzv) : "";
  s->group.broken = a->group_broken;
  s->peer_losses = a->peer_losses;
  s->released_at = a->released_at;
  s->epoch = a->rs.epoch;
  s->restarts = a->rs.restarts;
  if (a->rdzv_on) {
    s->joined = lwsi_rdzv_joined(&a->rdzv);
    s->alive = members_alive(a);
  }
  if (a->rdzv_on && members != NULL) {
    for (uint32_t i = 0; i < cfg->size; i++) {
      struct lwsi_rdzv_member m;
      if (lwsi_rdzv_member(&a->rdzv, i, &m) < 0)
        continue;
      struct lwsi_status_member *row = &members[s->nmembers++];
      row->rank = m.rank;
      lwsi_text_copy(row->addr, sizeof(row->addr), m.addr);
      lwsi_text_copy(row->pod, sizeof(row->pod), m.pod);
      row->joined = m.joined;
      row->alive = m.alive;
      row->hb_age_ms = m.hb_age_ms;
      row->rtt_us = m.rtt_us;
      row->has_state = m.has_state;
      lwsi_text_copy(row->child, sizeof(row->child), m.child);
      row->upstream = m.upstream;
      status_member_health(a, &m, row);
      if (a->phases_on)
        lwsi_text_copy(row->launch_phase, sizeof(row->launch_phase),
                       lwsi_phases_step_name(lwsi_phases_group_get(&a->phases.group, m.rank)));
    }
    s->members = members;
  }

  s->has_gpu_check = cfg->gpu_check != LWSI_GPU_CHECK_NONE;
  s->gpu.mode = lwsi_config_gpu_check_name(cfg->gpu_check);
  s->gpu.state = gpu_state(a);
  s->gpu.group_passed = a->gpu_verdict_ok;
  s->gpu.have_result = a->gpu.have_result;
  s->gpu.devices = a->gpu.ndevices;
  s->gpu.model = a->gpu.model;
  s->gpu.time_ms = a->gpu.time_ms;
  s->gpu.busbw_gbps = a->gpu.busbw_gbps;
  s->gpu.error = a->gpu.error;
  status_node(a, s);
  s->last_error = a->last_error;
  s->launch_phase = a->phases_on ? lwsi_phases_step_name(a->phases.step) : NULL;
  status_launch_check(a, s);
}

/* Room for the snapshot's member rows, one per rank; NULL without a group
 * (and on allocation failure, which the callers tell apart by rdzv_on). */
static struct lwsi_status_member *status_rows(struct lwsi_agent *a)
{
  return a->rdzv_on ? calloc(a->cfg->size, sizeof(struct lwsi_status_member)) : NULL;
}

static char *render_status(void *data)
{
  struct lwsi_agent *a = data;
  struct lwsi_status_snapshot s;
  struct lwsi_status_member *rows = status_rows(a);
  if (a->rdzv_on && rows == NULL)
    return NULL;
  status_snapshot(a, &s, rows);
  char *doc = lwsi_status_render(&s);
  free(rows);
  return doc;
}

static int probe_status(void *data, struct lwsi_buf *out)
{
  char *doc = render_status(data);
  if (doc == NULL)
    return -ENOMEM;
  lwsi_buf_puts(out, doc);
  free(doc);
  return out->err;
}

static int probe_metrics(void *data, struct lwsi_buf *out)
{
  struct lwsi_agent *a = data;
  struct lwsi_status_snapshot s;
  struct lwsi_status_member *rows = status_rows(a);
  if (a->rdzv_on && rows == NULL)
    return -ENOMEM;
  status_snapshot(a, &s, rows);
  int rc = lwsi_status_metrics(&s, out);
  free(rows);
  if (rc == 0)
    rc = lwsi_http_metrics(&a->http, out);
  return rc;
}

static int start_probes(struct lwsi_agent *a)
{
  a->probes = (struct lwsi_http_probes){
    .checks = probe_checks, .status = probe_status, .metrics = probe_metrics, .data = a,
  };
  int rc = lwsi_http_init(&a->http, &a->loop, NULL, lwsi_http_route_probes, &a->probes);
  if (rc == 0)
    rc = lwsi_http_listen(&a->http, a->cfg->probe_addr.host, a->cfg->probe_addr.port);
  return rc;
}

/* ---- start and stop ------------------------------------------------ */

/* Starts what every agent has (signals, status socket, probes), then the
 * first phase. Whatever fails here ends the run through finish(). */
static void start(struct lwsi_agent *a, const sigset_t *orig_mask)
{
  const struct lwsi_config *cfg = a->cfg;
  char why[400];
  int rc = lwsi_supervisor_init(&a->sup, &a->loop, orig_mask, cfg->drain_delay_ms,
                                cfg->grace_ms, on_supervisor);
  a->sup.data = a;
  if (rc < 0) {
    snprintf(why, sizeof(why), "cannot set up signal handling: %s", strerror(-rc));
    finish(a, 1, why);
    return;
  }
  uv_timer_init(&a->loop, &a->hang_timer);
  uv_timer_init(&a->loop, &a->fail_timer);
  a->hang_timer.data = a;
  a->fail_timer.data = a;
  a->group_timers_on = true;
  rc = lwsi_status_sock_start(&a->status_sock, &a->loop, cfg->status_socket, render_status, a);
  if (rc < 0) {
    /* People lose a view, the group loses nothing: keep going. */
    lwsi_log_warn("status socket %s not available: %s", cfg->status_socket, strerror(-rc));
  }
  start_rsh(a);
  rc = start_probes(a);
  if (rc < 0) {
    snprintf(why, sizeof(why), "cannot serve probes on %s:%u (--probe-addr): %s",
             cfg->probe_addr.host, cfg->probe_addr.port, strerror(-rc));
    finish(a, 1, why);
    return;
  }
  if (!node_check(a))
    return;
  if (cfg->standalone) {
    snprintf(a->leader_ip, sizeof(a->leader_ip), "127.0.0.1");
    start_check(a);
  } else if (cfg->rank == 0) {
    start_rdzv(a);
  } else {
    start_resolving(a);
  }
}

static void on_close_walk(uv_handle_t *h, void *arg)
{
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int lwsi_agent_run(struct lwsi_agent *a, const struct lwsi_config *cfg, char **envp,
                   const sigset_t *orig_mask)
{
  memset(a, 0, sizeof(*a));
  a->cfg = cfg;
  a->envp = envp;
  a->exit_code = 1;
  a->rs.launched = -1;
  a->rs.ready_sent = -1;
  int rc = uv_loop_init(&a->loop);
  if (rc < 0) {
    lwsi_log_error("cannot start the event loop: %s", strerror(-rc));
    return 1;
  }
  a->started_ms = uv_now(&a->loop);
  a->phase_since_ms = a->started_ms;
  start(a, orig_mask);
  if (!a->done || a->fail_delay_on)
    uv_run(&a->loop, UV_RUN_DEFAULT);

  /* Close every handle and let the loop finish closing them, so that the
   * loop closes cleanly and valgrind sees nothing left behind. */
  if (a->rdzv_on)
    lwsi_rdzv_close(&a->rdzv);
  if (a->resolver_on)
    lwsi_resolver_close(&a->resolver);
  if (a->reresolver_on)
    lwsi_resolver_close(&a->reresolver);
  if (a->reresolve_timer_on)
    uv_close((uv_handle_t *)&a->reresolve_timer, NULL);
  lwsi_upstream_close(&a->upstream);
  if (a->rsh_on)
    lwsi_rsh_close(&a->rsh);
  if (a->gpu_on)
    lwsi_gpurun_close(&a->gpu);
  if (a->phases_on)
    lwsi_phases_close(&a->phases);
  if (a->gpu_timer_on)
    uv_close((uv_handle_t *)&a->gpu_deadline, NULL);
  free(a->gpu_seen);
  free(a->node_seen);
  for (uint32_t r = 0; a->node_failures != NULL && r < cfg->size; r++)
    free(a->node_failures[r]);
  free(a->node_failures);
  free(a->member_rows);
  free(a->health_rows);
  restart_close(a);
  if (a->group_timers_on) {
    uv_close((uv_handle_t *)&a->hang_timer, NULL);
    uv_close((uv_handle_t *)&a->fail_timer, NULL);
  }
  lwsi_http_close(&a->http);
  lwsi_status_sock_close(&a->status_sock);
  lwsi_supervisor_close(&a->sup);
  uv_walk(&a->loop, on_close_walk, NULL);
  uv_run(&a->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&a->loop) < 0)
    lwsi_log_debug("event loop closed with handles still open");
  return a->exit_code;
}
