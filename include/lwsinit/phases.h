/* The launch in phases (presets vllm-ray and sglang-ray; docs/design.md,
 * "Launch phases"): each member's step, the leader's table of every
 * member's step and the condition over the group, the service process a
 * member runs before (or instead of) the engine, the probe that says when
 * that service is up, and each step's deadline.
 *
 * Never logs: what happens is reported through the callback, and the
 * agent decides what it means. The agent carries the steps between the
 * members over the rendezvous (app messages "launch_phase" and
 * "launch_failed", docs/protocol.md). */
#ifndef LWSINIT_PHASES_H
#define LWSINIT_PHASES_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "lwsinit/engine.h"

/* A member's step, in the order a member goes through them. */
enum lwsi_phases_step {
  LWSI_PHASES_NONE,        /* "": no launch in phases, or not begun */
  LWSI_PHASES_WAIT_LEADER, /* worker: waits for the leader's service to be up */
  LWSI_PHASES_SERVICE,     /* its service started, not up yet */
  LWSI_PHASES_WAIT_GROUP,  /* leader: its service is up; waits for every worker's */
  LWSI_PHASES_SERVICE_UP,  /* worker: its service is up (all a worker runs) */
  LWSI_PHASES_ENGINE,      /* leader: the engine started */
  LWSI_PHASES_COUNT
};

/* "", "wait-leader", "service", "wait-group", "service-up", "engine". */
const char *lwsi_phases_step_name(enum lwsi_phases_step s);

/* The step named name, or -EINVAL. */
int lwsi_phases_step_parse(const char *name);

/* Whether step s has a deadline (--phase-timeout): the steps that wait. */
bool lwsi_phases_step_timed(enum lwsi_phases_step s);

/* The service's argv for this member (leader or worker), its
 * placeholders expanded: leader_ip as resolved (an IPv6 address is
 * bracketed before ":PORT"), dist_port, and the row's node_port. Free
 * with lwsi_expand_free. Returns 0, -EINVAL (an engine without a
 * service), -ENOMEM. */
int lwsi_phases_service_argv(const struct lwsi_engine *e, bool leader, const char *leader_ip,
                             uint16_t dist_port, char ***out);

/* The port that says a member's service is up: dist_port on the leader,
 * the row's node_port on a worker. */
uint16_t lwsi_phases_up_port(const struct lwsi_engine *e, bool leader, uint16_t dist_port);

/* The steps of the whole group, as the leader knows them (a worker knows
 * its own and the leader's). */
struct lwsi_phases_group {
  uint32_t size;
  uint8_t *step; /* size entries, by rank */
};

int lwsi_phases_group_init(struct lwsi_phases_group *g, uint32_t size);
void lwsi_phases_group_free(struct lwsi_phases_group *g);

/* Records rank's step; a step never goes back (a late or repeated
 * message changes nothing). Returns 0, -ERANGE (no such rank) or
 * -EALREADY (not later than the step known). */
int lwsi_phases_group_set(struct lwsi_phases_group *g, uint32_t rank, enum lwsi_phases_step s);

enum lwsi_phases_step lwsi_phases_group_get(const struct lwsi_phases_group *g, uint32_t rank);

/* The condition over the group: the leader's service is up and every
 * worker's is. */
bool lwsi_phases_group_ready(const struct lwsi_phases_group *g);

/* The members that hold the group back, for the deadline's line: "rank 2
 * in step 'service', rank 3 in step 'wait-leader'" (at most a few, then
 * "and N more"); "" when none. pod_of, when not NULL, names a rank's pod
 * ("" when unknown). */
void lwsi_phases_group_behind(const struct lwsi_phases_group *g,
                              const char *(*pod_of)(void *data, uint32_t rank), void *data,
                              char *buf, size_t len);

/* ---- on the loop ---------------------------------------------------- */

enum lwsi_phases_ev {
  LWSI_PHASES_EV_UP,       /* the probed port accepted a connection */
  LWSI_PHASES_EV_DEADLINE, /* the current step did not finish in time */
  LWSI_PHASES_EV_EXITED,   /* the service process exited: service_status */
};

struct lwsi_phases;
typedef void (*lwsi_phases_cb)(struct lwsi_phases *p, enum lwsi_phases_ev ev);

struct lwsi_phases {
  void *data;
  /* Read-only for the caller. */
  enum lwsi_phases_step step;
  pid_t service; /* the service started here (also its process group); 0: none */
  bool service_running;
  int service_status; /* its wait status, once EXITED */
  bool up;            /* the probe succeeded */
  struct lwsi_phases_group group;

  /* Private. */
  uv_loop_t *loop;
  lwsi_phases_cb cb;
  uint64_t deadline_ms;
  uint16_t probe_port;
  uv_timer_t deadline;
  uv_timer_t probe_timer;
  uv_timer_t kill_timer;
  uv_timer_t exited; /* runs EXITED on the loop, outside the reap path */
  uv_tcp_t conn;
  uv_connect_t connect_req;
  bool handles_open, conn_open, probing;
};

/* Sets up the timers; deadline_ms is each timed step's deadline. Returns
 * 0 or a negative errno (-ENOMEM for the group's table). */
int lwsi_phases_init(struct lwsi_phases *p, uv_loop_t *loop, uint32_t size, uint64_t deadline_ms,
                     lwsi_phases_cb cb);

/* Moves this member (rank) to step s: records it in the group's table and
 * starts the step's deadline when it has one (stops the last one's). */
void lwsi_phases_enter(struct lwsi_phases *p, uint32_t rank, enum lwsi_phases_step s);

/* Starts the service process in a process group of its own (as
 * lwsi_launcher_spawn; -ENOENT etc. when its exec failed, with service
 * set: that process is reaped like any other). */
int lwsi_phases_spawn(struct lwsi_phases *p, char *const *argv, char *const *envp,
                      const sigset_t *child_mask);

/* Probes 127.0.0.1:port every few hundred milliseconds until it accepts a
 * connection, then reports UP once. */
int lwsi_phases_probe(struct lwsi_phases *p, uint16_t port);

/* The reap path (LWSI_SUP_REAPED): true when pid was the service; EXITED
 * follows on the loop. Allocates nothing. */
bool lwsi_phases_reaped(struct lwsi_phases *p, pid_t pid, int status);

/* Stops the service: SIGTERM to its process group, SIGKILL after
 * grace_ms. Harmless when none runs. */
void lwsi_phases_stop(struct lwsi_phases *p, uint64_t grace_ms);

/* Closes the handles (run the loop afterwards). A service still running
 * gets SIGKILL: the agent is going. */
void lwsi_phases_close(struct lwsi_phases *p);

#endif
