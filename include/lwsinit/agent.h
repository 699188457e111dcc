/* The agent: the top layer that owns the loop, the phases and the exit
 * code, and the only layer besides main that logs. */
#ifndef LWSINIT_AGENT_H
#define LWSINIT_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "lwsinit/config.h"
#include "lwsinit/gpurun.h"
#include "lwsinit/health.h"
#include "lwsinit/http.h"
#include "lwsinit/netenv.h"
#include "lwsinit/nodecheck.h"
#include "lwsinit/phases.h"
#include "lwsinit/rdzv.h"
#include "lwsinit/status.h"
#include "lwsinit/resolver.h"
#include "lwsinit/rsh.h"
#include "lwsinit/status_sock.h"
#include "lwsinit/supervisor.h"
#include "lwsinit/upstream.h"

/* Phases, in order (contract, "Status"). */
enum lwsi_phase {
  LWSI_PHASE_RESOLVING,
  LWSI_PHASE_JOINING,
  LWSI_PHASE_CHECKING,
  LWSI_PHASE_RUNNING,
  LWSI_PHASE_RESTARTING, /* --on-failure restart: from a failure until the group re-formed */
  LWSI_PHASE_STOPPING,
  LWSI_PHASE_FAILED,
  LWSI_PHASE_COUNT
};

/* Exit codes of the contract ("Exit status"). */
enum {
  LWSI_EXIT_USAGE = 2,
  LWSI_EXIT_DNS = 3,
  LWSI_EXIT_RDZV = 4,
  LWSI_EXIT_GPU = 5,
  LWSI_EXIT_PEER = 6,
  LWSI_EXIT_HANG = 7,
};

struct lwsi_agent {
  const struct lwsi_config *cfg;
  char **envp;
  uv_loop_t loop;
  struct lwsi_supervisor sup;
  struct lwsi_status_sock status_sock;
  struct lwsi_http_server http;
  struct lwsi_http_probes probes;
  struct lwsi_resolver resolver;
  struct lwsi_resolver reresolver; /* the leader's name again, while joining */
  uv_timer_t reresolve_timer;
  bool reresolver_on, reresolve_timer_on;
  struct lwsi_rdzv rdzv;
  struct lwsi_upstream upstream;
  struct lwsi_gpurun gpu;
  uv_timer_t gpu_deadline;
  bool resolver_on, rdzv_on, upstream_on, gpu_on, gpu_timer_on;
  bool gpu_verdict_ok, gpu_gone;
  uint8_t *gpu_seen; /* leader: which ranks reported */
  uint32_t gpu_passed;
  char gpu_model[128];
  uint32_t gpu_model_rank;
  char upstream_url[1024];
  char upstream_err[256];

  /* The node check and the engine's network environment (nodecheck.h,
   * netenv.h). node_fail: this node's failed checks under --node-check
   * fail, reported to the leader after release. */
  struct lwsi_nodecheck_rdma rdma;
  struct lwsi_nodecheck node;
  bool node_ran, node_verdict_ok;
  char node_fail[1024];
  uint8_t *node_seen;      /* leader: which ranks reported */
  char **node_failures;    /* leader: each failed rank's checks, by rank */
  uint32_t node_reports;   /* leader: how many */
  uint32_t node_failed;    /* leader: how many failed */
  struct lwsi_netenv netenv;

  /* Preset mpi (rsh.h): the leader's relay and each member's runner;
   * hostfile: {hostfile}, written by the leader at launch. */
  struct lwsi_rsh rsh;
  bool rsh_on;
  char hostfile[4096];

  enum lwsi_phase phase;
  uint64_t started_ms;                 /* monotonic */
  uint64_t phase_since_ms;             /* monotonic start of the current phase */
  uint64_t phase_ms[LWSI_PHASE_COUNT]; /* time spent in each finished phase */
  double released_at;                  /* wall clock of the release, 0 before */
  char leader_ip[256];
  uint64_t peer_losses;
  char group_broken[512]; /* --on-peer-loss stay: why the group is unready */
  int stop_exit_code;     /* when non-zero, the exit code once the child is gone */
  int exit_code;
  bool done; /* the exit code is decided */
  char last_error[1024];
  /* The launch check (leader) and unverified refusals (worker): what
   * /status and /metrics show of them. */
  bool launch_compared;
  uint32_t launch_ranks;
  uint64_t launch_differences;
  struct lwsi_status_launch_diff launch_listed[LWSI_STATUS_LAUNCH_LISTED];
  uint64_t unverified_count;
  char unverified_reason[512];

  /* Group health and the ordered stop (agent.c, "group health"). */
  struct lwsi_rdzv_member *member_rows;   /* size rows, for the leader's /readyz */
  struct lwsi_health_member *health_rows; /* size rows, pointing into member_rows */
  uv_timer_t hang_timer;  /* --hang-timeout: when the engine would count as hung */
  uv_timer_t fail_timer;  /* --fail-delay */
  bool group_timers_on;   /* hang_timer and fail_timer were initialised */
  bool fail_delay_on;     /* staying up, failed, before exiting */
  bool ordered_stop;      /* this agent's stop is the group's orderly stop */
  bool stop_by_signal;    /* a stop signal of our own arrived (vs. the leader's word) */
  bool leader_engine_exited; /* worker: the leader said its engine has exited */

  /* The launch in phases (presets with a service: agent.c, "the launch in
   * phases"). phases_holding: the exit (phases_exit) waits for the
   * leader's service to stop. */
  struct lwsi_phases phases;
  bool phases_on, phases_holding;
  int phases_exit;
  /* --on-failure restart (agent.c, "restart in place"). */
  struct {
    uint32_t epoch;         /* the group's epoch: 0, then +1 at each restart */
    uint64_t restarts;      /* restarts this agent took part in */
    int64_t launched;       /* the epoch of the last launch; -1 before the first */
    bool active;            /* between a failure and the relaunch */
    bool gone;              /* this member's old engine is gone and its GPUs are free */
    int64_t ready_sent;     /* worker: the epoch it last reported ready for; -1: none */
    bool own_failed;        /* this member's engine failed (exited, or hung) ... */
    int own_code;           /* ... with this status (7 for a hang) */
    uint8_t *ready;         /* leader: by rank, ready for the current epoch */
    uint64_t *history;      /* leader: when each restart in the window began (uv_now) */
    uint32_t nhistory;
    bool backoff_over;      /* leader: the backoff before this epoch's launch has passed */
    uv_timer_t backoff_timer, rejoin_timer;
    bool timers_on, rejoin_on;
    /* The wait for the GPUs (lwsinit-gpucheck gpu-free): two, used in
     * turn, so that one closed in its own callback is never reused before
     * libuv has finished closing it. */
    struct lwsi_gpurun gpu_free[2];
    bool gpu_free_on[2];
    unsigned gf;            /* the one in use */
    pid_t old_engine;       /* the old engine's process group, for the GPU wait */
    /* Worker: the leader was lost after release and this member joins a
     * new leader agent (agent.c, "a lost leader"); rejoined: the new
     * group was released. */
    bool leader_lost, rejoined;
  } rs;
};

const char *lwsi_agent_phase_name(enum lwsi_phase p);

/* Whether /readyz would answer 200 now. */
bool lwsi_agent_ready(struct lwsi_agent *agent);

/* The line that says why the engine's command line could not be made from
 * lwsi_cmdline_build's (or lwsi_launcher_env's) error err: the placeholder
 * it names in bad (NULL or "" when none), else the error's text. */
void lwsi_agent_cmdline_error(char *buf, size_t len, int err, const char *bad);

/* The line that says why the engine prog could not be started, from the
 * launcher's error err, and the exit code that goes with it (contract,
 * "Exit status"): exec_failed (a process was created and its exec failed)
 * gives 127 or 126 and the remedy for that error; otherwise no process
 * could be created, which gives 1. */
int lwsi_agent_spawn_error(char *buf, size_t len, const char *prog, int err, bool exec_failed);

/* Runs the agent until it must exit; returns the process exit code. */
int lwsi_agent_run(struct lwsi_agent *agent, const struct lwsi_config *cfg, char **envp,
                   const sigset_t *orig_mask);

#endif
