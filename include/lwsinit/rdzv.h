/* The group rendezvous on the loop (docs/protocol.md): the leader's server
 * and the worker's client, the barrier that releases everyone at once,
 * then heartbeats, loss and bye for the life of the group.
 *
 * Never logs: everything worth a line is reported through the event
 * callback, with the text for it. Callbacks never run inside
 * lwsi_rdzv_start; the callback may call lwsi_rdzv_leave or
 * lwsi_rdzv_close.
 *
 * The process must ignore (or block and not act on) SIGPIPE: a write to a
 * peer that reset raises it, and it must surface as EPIPE here instead. */
#ifndef LWSINIT_RDZV_H
#define LWSINIT_RDZV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "lwsinit/launchck.h"
#include "lwsinit/wire.h"

/* Defaults for the knobs the contract does not expose. */
#define LWSI_RDZV_HANDSHAKE_MS 5000 /* a connection that has not joined by then is dropped */
#define LWSI_RDZV_CONNECT_MS 1000   /* one connection attempt (a SYN to nowhere waits minutes) */
#define LWSI_RDZV_RETRY_MIN_MS 25   /* worker's first retry delay; doubles ... */
#define LWSI_RDZV_RETRY_MAX_MS 1000 /* ... up to this, with jitter */
/* A refused connect (the leader's host answered, nobody listens yet: one
 * SYN and one RST, no state kept on either side) is retried after a step
 * that does not grow, each delay drawn in [3/4 step, step], so that a
 * group whose leader starts last joins within a step of its listen
 * (docs/protocol.md, "Retries"). The step is the larger of
 * LWSI_RDZV_REFUSED_MIN_MS and what keeps the whole group's refused
 * attempts under LWSI_RDZV_REFUSED_RATE a second at the leader's node,
 * (size - 1) x 4000 / (3 x LWSI_RDZV_REFUSED_RATE) ms; never above
 * retry_max_ms. */
#define LWSI_RDZV_REFUSED_MIN_MS 20
#define LWSI_RDZV_REFUSED_RATE 4000 /* refused attempts per second, whole group, at most */
#define LWSI_RDZV_MAX_PENDING 64    /* connections accepted but not joined, at least; 2 x size */
#define LWSI_RDZV_APP_KEPT 8        /* leader: app kinds kept for a rejoining member */

struct lwsi_rdzv_config {
  uint32_t size;        /* the group, leader included: 1 or more */
  uint32_t rank;        /* 0: this agent is the leader and serves; else a worker */
  const char *revision; /* NULL or "": none; must match the leader's */
  const uint8_t *token; /* the shared secret (trailing whitespace already
                         * stripped), or NULL/0: an open group */
  size_t token_len;
  uint32_t gpus;                            /* this node's GPU count (expected) */
  const char *pod;                          /* this member's pod name, or NULL */
  /* What every member must share (a difference fails the group), and the
   * launch command the leader compares (contract, "Launch check"). */
  const char *preset;                     /* the preset's name; NULL: "" */
  uint32_t dist_port;                     /* {dist_port}, 0 when none */
  const struct lwsi_launchck_cmd *cmd;    /* copied by start; NULL: empty */
  enum lwsi_launchck_mode launch_check;   /* the leader's: warn, strict or off */

  /* Leader: where to listen ("0.0.0.0" or "::" for all addresses; port 0
   * picks a free one, see lwsi_rdzv_port). Worker: the leader's resolved IP
   * and port, and optionally the local address to connect from. */
  const char *host;
  uint16_t port;
  const char *source; /* worker only; NULL: any */

  uint64_t rdzv_timeout_ms;      /* the whole group must form by then; 0: never */
  uint64_t heartbeat_ms;         /* 0: 1000 */
  uint64_t peer_timeout_ms;      /* 0: 10000 */
  uint64_t handshake_timeout_ms; /* 0: LWSI_RDZV_HANDSHAKE_MS */
  uint64_t connect_timeout_ms;   /* 0: LWSI_RDZV_CONNECT_MS */
  uint64_t retry_min_ms;         /* 0: LWSI_RDZV_RETRY_MIN_MS */
  uint64_t retry_max_ms;         /* 0: LWSI_RDZV_RETRY_MAX_MS */
  uint64_t refused_retry_ms;     /* 0: from size (LWSI_RDZV_REFUSED_*) */
  uint32_t max_pending;          /* 0: the larger of LWSI_RDZV_MAX_PENDING and 2 x size */
  /* Leader: after release, a new incarnation may take the seat of a member
   * reported lost (JOINED says "in the place of a lost member"); else it is
   * refused as "released". */
  bool admit_replacements;
};

enum lwsi_rdzv_state {
  LWSI_RDZV_IDLE,     /* not started, or start failed */
  LWSI_RDZV_JOINING,  /* before release */
  LWSI_RDZV_RELEASED, /* the group formed; heartbeats run */
  LWSI_RDZV_FAILED,   /* refused, failed or timed out before release: final */
  LWSI_RDZV_LEFT,     /* lwsi_rdzv_leave was called: final, and quiet */
  LWSI_RDZV_CLOSED,
};

enum lwsi_rdzv_ev {
  /* Worker: a connection attempt failed or the connection dropped before
   * the handshake; it retries. err: the uv error, if any. (debug) */
  LWSI_RDZV_EV_RETRYING,
  /* Leader: a worker joined (rank, addr, pod). Worker: joined the leader. */
  LWSI_RDZV_EV_JOINED,
  /* Worker: the leader's latest list of missing ranks (reason: "waiting
   * for ranks 2, 3"). */
  LWSI_RDZV_EV_WAITING,
  /* Leader: refused a joining worker (rank as claimed, addr, reason); the
   * group goes on. Worker: this member was refused: final. */
  LWSI_RDZV_EV_REFUSED,
  /* Leader: dropped a connection that never joined (garbage, no join in
   * time, too many pending, accept failed); addr, reason. */
  LWSI_RDZV_EV_DROPPED,
  /* Before release. Leader: a joined worker went (closed, silent, bye); its
   * rank is free again. Worker: lost the leader; retrying. */
  LWSI_RDZV_EV_DEPARTED,
  /* Both: every member joined and the checks passed. */
  LWSI_RDZV_EV_RELEASED,
  /* Both: the group failed before launch (the members' launch commands or
   * GPU counts differ, the leader's deadline, ...): final. */
  LWSI_RDZV_EV_FAILED,
  /* Both: this agent's own rendezvous deadline passed: final. */
  LWSI_RDZV_EV_TIMEOUT,
  /* After release: a member was lost (rank; 0 is the leader), or left
   * with a bye. Leader: seen itself. Worker: relayed by the leader, or the
   * leader itself. The caller applies --on-peer-loss. */
  LWSI_RDZV_EV_LOST,
  /* After release: an application message (lwsi_rdzv_app_broadcast,
   * lwsi_rdzv_app_send) arrived. rank: the sender (0 is the leader), addr
   * and pod: the sender's, kind and data: the message. Leader: from a
   * worker; worker: from its leader, in the order sent, never before
   * RELEASED. */
  LWSI_RDZV_EV_APP,
  /* Leader, just before RELEASED with --launch-check warn: member rank's
   * launch command differs from the leader's; count: the differences,
   * reason: the first of them ("argument 7 is '8', the leader's is
   * '16'"). One event per such member. */
  LWSI_RDZV_EV_LAUNCH_DIFF,
  /* Worker: the leader (or whoever answers on its address) ended the join
   * without proof of the token (a refusal, a fail, a welcome without
   * proof): the worker retries until its deadline, as RETRYING also says.
   * reason: what it said. Reported at every such answer. */
  LWSI_RDZV_EV_UNVERIFIED,
};

struct lwsi_rdzv_event {
  enum lwsi_rdzv_ev type;
  int64_t rank;       /* the member concerned, -1 when none */
  const char *addr;   /* the peer's IP, "" when none */
  const char *pod;    /* JOINED (leader): the member's pod; else "" */
  int err;            /* a negative errno or uv error, 0 when none */
  const char *reason; /* one line, no newline, never NULL */
  /* APP: the message's kind ([a-z0-9_], 1..32) and data (at most 8 KiB of
   * UTF-8 without control characters); "" for every other event. Valid
   * only during the callback. */
  const char *kind;
  const char *data;
  uint32_t count; /* LAUNCH_DIFF: the number of differences; else 0 */
};

/* The state each member reports in its heartbeats. */
struct lwsi_rdzv_local {
  char child[LWSI_WIRE_CHILD_MAX]; /* e.g. "not-started", "running", "exited" */
  bool upstream;                   /* the local engine's health */
  /* The health in detail (sent when has_health): whether a health URL is
   * polled at all, how long its state has held, why it fails, and whether
   * this agent's stop has begun. Control characters in upstream_error are
   * replaced before sending. */
  bool has_health;
  bool upstream_on;
  uint64_t upstream_age_ms;
  char upstream_error[LWSI_WIRE_HEALTH_ERR_MAX];
  bool stopping;
};

/* What /status shows of one member. */
struct lwsi_rdzv_member {
  uint32_t rank;
  char addr[LWSI_WIRE_ADDR_MAX]; /* as the leader sees it */
  char pod[LWSI_WIRE_POD_MAX];
  bool joined;
  bool alive;
  int64_t hb_age_ms; /* since the last frame from it; -1: not watched here */
  int64_t rtt_us;    /* -1: not measured yet */
  bool has_state;    /* child and upstream are from its heartbeat */
  char child[LWSI_WIRE_CHILD_MAX];
  bool upstream;
  bool has_health;   /* the fields below are from its heartbeat (newer agents) */
  bool upstream_on;
  int64_t upstream_age_ms; /* as reported, plus the time since that heartbeat */
  char upstream_error[LWSI_WIRE_HEALTH_ERR_MAX];
  bool stopping;
};

struct lwsi_rdzv;
struct lwsi_rdzv_conn;
struct lwsi_rdzv_slot;
struct lwsi_rdzv_kept;
struct lwsi_rdzv_ops;

typedef void (*lwsi_rdzv_cb)(struct lwsi_rdzv *r, const struct lwsi_rdzv_event *ev);
/* Called before every heartbeat this agent sends; fills *out. */
typedef void (*lwsi_rdzv_local_cb)(struct lwsi_rdzv *r, struct lwsi_rdzv_local *out);

struct lwsi_rdzv {
  void *data; /* the caller's; kept by lwsi_rdzv_start */

  /* Read-only for the caller. */
  bool leader;
  bool open; /* no token: anyone who reaches the port may join */
  enum lwsi_rdzv_state state;
  uint8_t nonce[LWSI_WIRE_NONCE_LEN]; /* this incarnation */
  char nonce_hex[2 * LWSI_WIRE_NONCE_LEN + 1];
  char leader_addr[LWSI_WIRE_ADDR_MAX]; /* leader: its own address, as workers reach it */
  uint32_t attempts;                    /* worker: connection attempts since the last join */
  uint64_t ticks;                       /* ticks run (tests: how often an idle agent wakes) */

  /* Test hook: while true, this agent sends no heartbeats. */
  bool mute_heartbeats;

  /* Private (agent/rdzv_int.h): what both roles use. */
  uv_loop_t *loop;
  const struct lwsi_rdzv_ops *ops; /* the role's callbacks, picked at start */
  lwsi_rdzv_cb cb;
  lwsi_rdzv_local_cb local_cb;
  struct lwsi_rdzv_config cfg; /* strings below are owned copies */
  char revision[LWSI_WIRE_REVISION_MAX];
  char pod[LWSI_WIRE_POD_MAX];
  char host[LWSI_WIRE_ADDR_MAX];
  char source[LWSI_WIRE_ADDR_MAX];
  uint8_t *token;
  uv_timer_t tick;     /* heartbeats, silence, handshake deadlines: armed
                          for the next of them (lwsi__rdzv_tick_arm) */
  uv_timer_t deadline; /* rdzv_timeout_ms */
  uv_timer_t defer;    /* work that must not run inside a write */
  uv_check_t check;    /* runs what tick and deadline found due, after I/O */
  uv_idle_t idle;      /* makes that poll not wait: see on_check */
  bool tick_open, deadline_open, defer_open, check_open, idle_open;
  bool tick_due, deadline_due;
  uint32_t closing;             /* handles of ours that libuv has not finished closing */
  struct lwsi_rdzv_slot *slots; /* size entries, by rank */
  uint64_t next_hb;             /* uv_now of the next heartbeat */
  uint64_t tick_gap;            /* the shortest time between two ticks */
  uint64_t tick_at;             /* uv_now the tick timer is armed for */
  uint64_t last_tick;           /* uv_now of the last tick that ran */
  uint64_t hb_seq;
  char missing[LWSI_WIRE_REASON_MAX]; /* the latest "ranks 2, 3" */
  uint32_t nmissing;
  uint8_t *rbuf; /* read buffer, one for all connections */
  char preset[LWSI_WIRE_PRESET_MAX];
  struct lwsi_launchck_cmd cmd; /* this member's launch command (owned copy) */

  /* Private: the leader's alone (agent/rdzv_leader.c). */
  struct {
    uv_tcp_t listener;
    bool listener_open;
    struct lwsi_rdzv_conn *pending; /* connections not joined yet */
    uint32_t npending;
    uint32_t njoined;      /* workers joined */
    bool release_due;      /* every worker joined: release in the check phase */
    bool released_pending; /* a group of one: release on the loop */
    bool notify_waiting;   /* the missing list changed */
    bool waiting_sent;     /* a waiting list went out ... */
    uint64_t waiting_at;   /* ... at this uv_now */
    bool accept_stuck;     /* an accept waits for memory */
    char fail_reason[LWSI_WIRE_REASON_MAX]; /* why the group failed */
    struct lwsi_rdzv_kept *kept;            /* the latest app broadcast of each kind */
  } as_leader;

  /* Private: the worker's alone (agent/rdzv_worker.c). */
  struct {
    struct lwsi_rdzv_conn *conn;     /* the connection to the leader */
    struct sockaddr_storage peer_sa; /* the leader */
    uv_timer_t retry;                /* the next connection attempt */
    bool retry_open;
    uint64_t retry_delay;                  /* the current backoff step (not refusals) */
    uint64_t rng;                          /* jitter only; seeded from getrandom */
    char last_error[LWSI_WIRE_REASON_MAX]; /* why the last attempt failed */
    uint32_t njoined;                      /* workers joined, as the leader last said */
    bool heard_missing;                    /* the leader told us */
  } as_worker;
};

/* Starts the leader (cfg->rank == 0: binds and listens; EADDRINUSE and the
 * like come back at once; host "::" falls back to "0.0.0.0" where the
 * node has no IPv6) or a worker (connects in the background). r must be
 * zeroed, or closed with the loop run since. Returns 0, -EINVAL (a bad
 * size, rank, address, or text that cannot go on the wire), -ENAMETOOLONG,
 * -EBUSY (r is still closing: run the loop first), or another negative
 * errno. On failure, still call lwsi_rdzv_close and run the loop. */
int lwsi_rdzv_start(struct lwsi_rdzv *r, uv_loop_t *loop, const struct lwsi_rdzv_config *cfg,
                    lwsi_rdzv_cb cb, lwsi_rdzv_local_cb local_cb);

/* Leader: the port it listens on (the one the kernel chose for port 0). */
uint16_t lwsi_rdzv_port(const struct lwsi_rdzv *r);

/* Worker, before release: connect to this leader IP from the next attempt
 * on (the caller re-resolved the leader's name, e.g. after a DEPARTED or a
 * run of RETRYING: a recreated leader pod may have a new IP). Returns 0,
 * -EINVAL (not an IP literal, or this is the leader) or -EALREADY (released
 * or final: a released worker joins another leader only through
 * lwsi_rdzv_rejoin). */
int lwsi_rdzv_set_leader(struct lwsi_rdzv *r, const char *ip);

/* Worker, released, once its leader was lost (LOST for rank 0): goes back
 * to JOINING, so that a new leader agent (a new incarnation, knowing
 * nothing of the old group) can form the group again (protocol.md,
 * "Rejoin"). The member table is forgotten, connection attempts start at
 * once (lwsi_rdzv_set_leader moves them), and the events are those of a
 * first join: JOINED, WAITING, RELEASED (or REFUSED, FAILED). The join
 * carries the same nonce: this agent is the same incarnation. The
 * rendezvous deadline is not armed again: the caller bounds the wait
 * (--rejoin-timeout). Returns 0, -EINVAL (this is the leader, or not
 * started) or -EALREADY (not released, or the leader is not lost). */
int lwsi_rdzv_rejoin(struct lwsi_rdzv *r);

/* After release: this agent's own state changed (its engine started or
 * ended, its health flipped), so the next heartbeat goes out at the next
 * tick, a tick gap (at most 100 ms) away, instead of after the rest of its
 * period: the leader's readiness follows the members' engines that much
 * sooner, and heartbeats still never come closer than the tick gap. A
 * no-op before release or once left or closed. */
void lwsi_rdzv_beat_soon(struct lwsi_rdzv *r);

/* Says goodbye: sends a bye with reason (e.g. "SIGTERM") to every peer so
 * that they learn at once, stops heartbeats and retries, closes the
 * listener; no event is reported afterwards. Returns 0, or -EALREADY. */
int lwsi_rdzv_leave(struct lwsi_rdzv *r, const char *reason);

/* Application messages, after release (docs/protocol.md, "app"): the
 * rendezvous carries them, the agent gives them meaning. kind is a token of
 * 1..32 characters in [a-z0-9_]; data is at most 8 KiB of valid UTF-8
 * without control characters (compact JSON, e.g. cJSON_PrintUnformatted).
 * Messages on one connection arrive in the order sent, and after the
 * release frame, even when sent from inside the RELEASED callback. Each
 * arrives as LWSI_RDZV_EV_APP.
 *
 * Leader: to every live worker. A worker whose write fails is reported
 * LOST, as for any frame. The leader keeps the latest broadcast of each
 * kind (up to LWSI_RDZV_APP_KEPT kinds) and sends them again, after the
 * release, to a member that rejoins with the same incarnation (protocol.md,
 * Losses), so that it misses none of the latest. Returns 0, -EINVAL (a bad
 * kind or data; checked first), -EPERM (this is a worker, or the group is
 * not released: before release, failed, left, closed) or -ENOMEM (nothing
 * was sent). */
int lwsi_rdzv_app_broadcast(struct lwsi_rdzv *r, const char *kind, const char *data);

/* Worker: to the leader. Returns 0, -EINVAL, -EPERM (this is the leader,
 * or not released), -ENOTCONN (the leader is lost; LOST says so), or
 * -ENOMEM. */
int lwsi_rdzv_app_send(struct lwsi_rdzv *r, const char *kind, const char *data);

/* Leader: to member rank alone (1..size-1), not kept for a rejoining
 * member (the MPI relay's requests and acknowledgements, agent/rsh.c:
 * they mean nothing to another incarnation). A write that fails is
 * reported LOST, as for any frame. Returns 0, -EINVAL (a bad kind, data or
 * rank), -EPERM (this is a worker, or not released), -ENOTCONN (that
 * member is not connected now), or -ENOMEM. */
int lwsi_rdzv_app_send_to(struct lwsi_rdzv *r, uint32_t rank, const char *kind, const char *data);

/* Closes every handle and connection; run the loop afterwards so that
 * uv_loop_close returns 0. Safe in any state, more than once. */
void lwsi_rdzv_close(struct lwsi_rdzv *r);

/* The group size, for iterating lwsi_rdzv_member. */
uint32_t lwsi_rdzv_size(const struct lwsi_rdzv *r);

/* Workers joined so far, the leader included (leader: live count; worker:
 * the leader's last word, or size after release). */
uint32_t lwsi_rdzv_joined(const struct lwsi_rdzv *r);

/* What this agent knows of member rank. Leader: every member (rank 0 is
 * itself, with hb_age_ms and rtt_us -1). Worker: before release only rank
 * 0 (the leader) and itself; after release the whole table, alive as far
 * as the leader said, with heartbeat details for rank 0 only. Returns 0 or
 * -ENOENT. */
int lwsi_rdzv_member(const struct lwsi_rdzv *r, uint32_t rank, struct lwsi_rdzv_member *out);

/* The latest list of ranks missing ("ranks 2, 3"; "" when none or unknown). */
const char *lwsi_rdzv_missing(const struct lwsi_rdzv *r);

const char *lwsi_rdzv_event_name(enum lwsi_rdzv_ev type);
const char *lwsi_rdzv_state_name(enum lwsi_rdzv_state state);

#endif
