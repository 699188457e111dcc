/* The checks behind /livez and /readyz (contract, "Endpoints"), computed by
 * pure functions from a plain snapshot of the agent's state: no I/O, no
 * clock, no global state. The agent fills struct lwsi_health_input when a
 * probe arrives; the HTTP router renders the list.
 *
 * Check names are short and stable, since people and alerts key on them:
 *   loop, child, members, leader, upstream, rendezvous, not-stopping.
 * Every failed check carries a one-line reason. */
#ifndef LWSINIT_HEALTH_H
#define LWSINIT_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LWSI_HEALTH_MAX_CHECKS 12
#define LWSI_HEALTH_NAME_MAX 32
#define LWSI_HEALTH_REASON_MAX 200

enum lwsi_health_kind { LWSI_HEALTH_LIVE, LWSI_HEALTH_READY };

/* What the leader's /readyz waits for (--readiness). */
enum lwsi_readiness { LWSI_READY_SERVING, LWSI_READY_GROUP, LWSI_READY_LISTENING };

struct lwsi_health_check {
  char name[LWSI_HEALTH_NAME_MAX];
  bool ok;
  char reason[LWSI_HEALTH_REASON_MAX]; /* "" when ok; one line, no control characters */
};

struct lwsi_health_list {
  size_t n;
  struct lwsi_health_check checks[LWSI_HEALTH_MAX_CHECKS];
};

/* The leader's view of one worker's engine, from its heartbeats. */
struct lwsi_health_member {
  uint32_t rank;
  bool has_state;        /* a heartbeat reported its engine */
  const char *child;     /* "running", "not-started", "exited" */
  bool has_health;       /* the fields below were reported (newer agents) */
  bool upstream_on;      /* it polls a health URL */
  bool upstream_ok;      /* which answers healthy */
  int64_t upstream_age_ms; /* since that answer holds; -1: unknown */
  const char *upstream_error; /* why it fails ("HTTP 503") */
  bool stopping;         /* its stop has begun */
};

/* A snapshot of what the checks look at. Strings may be NULL. */
struct lwsi_health_input {
  bool is_leader;       /* rank 0 (a standalone agent is a leader) */
  bool standalone;      /* a group of one: no rendezvous, no heartbeats */
  enum lwsi_readiness readiness; /* --readiness; used on the leader only */
  const char *phase;    /* the phase's name, for reasons ("joining") */
  bool launched;        /* the engine was started (it may have exited since) */
  bool child_running;   /* the engine is running now */
  bool stopping;        /* phase stopping (drain included) or failed */
  bool rdzv_listening;  /* leader: the rendezvous listener is open */
  uint32_t size;        /* members in the group, the leader included */
  uint32_t joined;      /* leader: members that joined, itself included */
  uint32_t alive;       /* leader: members alive now, itself included */
  const char *lost_reason;   /* leader: why some member is not alive ("rank 2: ...") */
  bool leader_heard;         /* worker: the leader's heartbeat is fresh */
  const char *leader_reason; /* worker: why it is not ("no heartbeat for 12 s") */
  bool upstream_enabled;     /* an upstream health URL is polled */
  bool upstream_ok;          /* its last poll was healthy */
  const char *upstream_error; /* why not ("HTTP 503", "connection refused") */
  /* Leader, --readiness serving: each worker's engine (ranks > 0). */
  const struct lwsi_health_member *members;
  size_t nmembers;
};

/* /livez: the loop answers (it does, or nobody would ask), and either the
 * engine has not been launched yet (waiting is healthy) or it is running.
 * Checks: loop, child. */
void lwsi_health_live(const struct lwsi_health_input *in, struct lwsi_health_list *out);

/* /readyz. Checks, in order:
 *  every agent:  not-stopping (while stopping, every agent answers 503);
 *  a worker:     child, leader, upstream (when enabled);
 *  the leader:   serving:   child, members (all alive; each worker's engine
 *                           running, not stopping, its upstream healthy where
 *                           it polls one), upstream (when enabled);
 *                group:     members (all joined and alive);
 *                listening: rendezvous (open; always ok standalone, which has none). */
void lwsi_health_ready(const struct lwsi_health_input *in, struct lwsi_health_list *out);

/* Appends a check; reason is a printf format (NULL or "" when ok). Control
 * characters in the reason become spaces so each check stays one line.
 * Returns 0, or -ENOSPC when the list is full. The agent may add its own. */
int lwsi_health_add(struct lwsi_health_list *l, const char *name, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* True when every check passed (an empty list passes). */
bool lwsi_health_passed(const struct lwsi_health_list *l);

/* The check named name, or NULL. */
const struct lwsi_health_check *lwsi_health_find(const struct lwsi_health_list *l,
                                                 const char *name);

#endif
