/* The rendezvous's private header: the structures its four files share
 * (a connection, a member's slot, a kept broadcast, the role's callbacks)
 * and the functions they call across files, all named lwsi__rdzv_*.
 *
 *   rdzv.c         the public face: start, close, leave, the getters, app
 *   rdzv_conn.c    what both roles share: frames in and out, the write
 *                  queue, reading, the timers (tick, deadline, defer,
 *                  check, idle) and the events
 *   rdzv_leader.c  the leader's server (everything leader_*)
 *   rdzv_worker.c  the worker's client (everything worker_*)
 *
 * A role's state lives in its own sub-struct of struct lwsi_rdzv
 * (as_leader, as_worker); its behaviour is one struct lwsi_rdzv_ops,
 * picked once in lwsi_rdzv_start, so that the shared code never asks which
 * role it serves. */
#ifndef LWSINIT_AGENT_RDZV_INT_H
#define LWSINIT_AGENT_RDZV_INT_H

#include "lwsinit/rdzv.h"
#include "lwsinit/text.h"
#include "lwsinit/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <uv.h>

enum lwsi_rdzv_conn_state {
  C_CONNECTING, /* worker: the TCP connect is in flight */
  C_HELLO,      /* leader: hello sent, waiting for a join; worker: waiting for hello */
  C_JOINING,    /* worker: join sent, waiting for welcome or refuse */
  C_MEMBER,     /* joined: heartbeats flow */
  C_DRAINING,   /* leader: refused; waiting for the worker to close */
  C_CLOSING,
};

struct lwsi_rdzv_conn {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  struct lwsi_rdzv *r;
  struct lwsi_rdzv_conn *prev, *next; /* the leader's pending list */
  bool in_pending;
  enum lwsi_rdzv_conn_state state;
  struct lwsi_wire_reader rd;
  char addr[LWSI_WIRE_ADDR_MAX];
  uint32_t rank;
  uint64_t deadline;           /* uv_now: the current state's limit */
  uint64_t last_rx;            /* uv_now of the last frame received */
  struct lwsi_msg_hello hello; /* the leader's hello (sent or received) */
  struct lwsi_msg_join join;   /* the worker's join (sent or received) */
  /* For the echo in our next heartbeat, so the peer can measure the RTT. */
  bool have_peer_ts;
  uint64_t peer_ts;
  uint64_t peer_ts_at; /* our clock (us) when it arrived */
  bool broken;         /* a write failed; handled on the defer timer */
  int broken_err;
  char broken_why[128];
};

struct lwsi_rdzv_slot {
  struct lwsi_rdzv_conn *conn; /* the live connection, or NULL */
  bool joined;
  bool alive;
  char addr[LWSI_WIRE_ADDR_MAX];
  char pod[LWSI_WIRE_POD_MAX];
  uint8_t nonce[LWSI_WIRE_NONCE_LEN];
  char preset[LWSI_WIRE_PRESET_MAX];
  uint32_t dist_port;
  struct lwsi_launchck_cmd cmd; /* the launch command its join carried (owned) */
  uint32_t gpus;
  uint64_t last_rx;
  bool watched; /* last_rx is meaningful here */
  int64_t rtt_us;
  bool has_state;
  char child[LWSI_WIRE_CHILD_MAX];
  bool upstream;
  bool has_health;
  bool upstream_on;
  uint64_t upstream_age_ms; /* as reported ... */
  uint64_t health_at;       /* ... at this uv_now */
  char upstream_error[LWSI_WIRE_HEALTH_ERR_MAX];
  bool stopping;
};

/* The leader's latest app broadcast of one kind, as sent. */
struct lwsi_rdzv_kept {
  char kind[LWSI_WIRE_KIND_MAX]; /* "" for a free entry */
  uint8_t *frame;
  size_t len;
};

/* What a role does where the shared machinery hands over to it. Every
 * entry is set, but settle, which may be NULL. */
struct lwsi_rdzv_ops {
  /* lwsi_rdzv_start, once the shared handles are open: the role's own
   * handles and addresses. A negative errno fails the start. */
  int (*open)(struct lwsi_rdzv *r);
  /* lwsi_rdzv_start, last: the role's first work, queued on the loop. */
  void (*begin)(struct lwsi_rdzv *r);
  /* One whole frame arrived on c. */
  void (*frame)(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const uint8_t *f, size_t n);
  /* c ended: err is UV_EOF or a uv read error. */
  void (*eof)(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, ssize_t err);
  /* c sent bytes that are not a frame (lwsi_wire_split's rc). */
  void (*garbage)(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err);
  /* c is closing: drop every pointer of the role's to it. */
  void (*detach)(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c);
  /* The check phase, before the deadline and the tick (NULL: nothing). */
  void (*settle)(struct lwsi_rdzv *r);
  /* The rendezvous deadline passed (judged in the check phase). */
  void (*deadline)(struct lwsi_rdzv *r);
  /* The tick: handshake and silence limits, heartbeats. */
  void (*tick)(struct lwsi_rdzv *r);
  /* The earlier of due and the role's next deadline the tick must see. */
  uint64_t (*next_due)(struct lwsi_rdzv *r, uint64_t due);
  /* The defer timer: broken connections, work kept out of a write. */
  void (*defer)(struct lwsi_rdzv *r);
  /* lwsi_rdzv_leave: the byes, and the role's connections and handles. */
  void (*leave)(struct lwsi_rdzv *r, const char *reason);
  /* lwsi_rdzv_close: the role's connections and handles. */
  void (*close)(struct lwsi_rdzv *r);
};

extern const struct lwsi_rdzv_ops lwsi__rdzv_leader_ops;
extern const struct lwsi_rdzv_ops lwsi__rdzv_worker_ops;

/* Closed or left: nothing more is reported, and nothing more is started. */
static inline bool lwsi__rdzv_quiet(const struct lwsi_rdzv *r)
{
  return r->state == LWSI_RDZV_CLOSED || r->state == LWSI_RDZV_LEFT;
}

static inline void lwsi__rdzv_slot_reset(struct lwsi_rdzv_slot *s)
{
  lwsi_launchck_free(&s->cmd);
  memset(s, 0, sizeof(*s));
  s->rtt_us = -1;
}

static inline uint64_t lwsi__rdzv_min(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* The next heartbeat, for next_due: only where the role sends them now. */
static inline uint64_t lwsi__rdzv_hb_due(const struct lwsi_rdzv *r, bool beats, uint64_t due)
{
  return beats && !r->mute_heartbeats ? lwsi__rdzv_min(due, r->next_hb) : due;
}

/* ---- rdzv_conn.c: events ---- */

/* Reports an event. Returns false when the callback closed or left the
 * rendezvous: the caller must then stop touching it. */
bool lwsi__rdzv_emit(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, int64_t rank, const char *addr,
                     const char *pod, int err, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Reports an application message from rank (0: the leader). */
/* Reports an event with a count (LAUNCH_DIFF) and a reason as given.
 * Returns false when the callback left us quiet. */
bool lwsi__rdzv_emit_count(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, uint32_t rank,
                           const char *addr, const char *pod, uint32_t count, const char *reason);
bool lwsi__rdzv_emit_app(struct lwsi_rdzv *r, uint32_t rank, const char *addr, const char *pod,
                         const struct lwsi_msg_app *m);

/* ---- rdzv_conn.c: connections ---- */

struct lwsi_rdzv_conn *lwsi__rdzv_conn_new(struct lwsi_rdzv *r);
/* Detaches c from everything that points at it and closes it; the memory
 * goes in the close callback, so c stays readable until we return to the
 * loop. Pending writes are cancelled (their callbacks free the frames). */
void lwsi__rdzv_conn_close(struct lwsi_rdzv_conn *c);
/* Starts reading c (every frame goes to the role's ops). */
int lwsi__rdzv_conn_read(struct lwsi_rdzv_conn *c);
/* A write failed or the peer stopped reading: handled on the defer timer. */
void lwsi__rdzv_mark_broken(struct lwsi_rdzv_conn *c, int err, const char *why);

/* Queues one frame (taking ownership of it). */
int lwsi__rdzv_send_frame(struct lwsi_rdzv_conn *c, uint8_t *frame, size_t len);
/* Queues a copy of a frame that goes to more than one connection, or more
 * than once; the caller keeps frame. */
int lwsi__rdzv_send_copy(struct lwsi_rdzv_conn *c, const uint8_t *frame, size_t len);
int lwsi__rdzv_send_msg(struct lwsi_rdzv_conn *c, const struct lwsi_msg *m);
/* A fail or a bye with its reason. */
int lwsi__rdzv_send_text(struct lwsi_rdzv_conn *c, enum lwsi_msg_type type, const char *reason);
/* Encodes an application message (kind and data already checked). */
int lwsi__rdzv_app_encode(const char *kind, const char *data, uint8_t **frame, size_t *len);

/* Sends one app message on c: 0, -EINVAL, -ENOMEM, or -ENOTCONN (the
 * connection broke; its loss is reported). */
int lwsi__rdzv_send_app(struct lwsi_rdzv_conn *c, const char *kind, const char *data);

/* ---- rdzv_conn.c: heartbeats ---- */

/* Whether a heartbeat is due at now; if so, the next one is scheduled. */
bool lwsi__rdzv_hb_take_turn(struct lwsi_rdzv *r, uint64_t now);
/* The caller's state for our heartbeats, made safe for the wire. */
void lwsi__rdzv_local_state(struct lwsi_rdzv *r, struct lwsi_rdzv_local *l);
void lwsi__rdzv_send_hb(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                        const struct lwsi_rdzv_local *l);
/* A heartbeat from the peer: liveness, its state, and our RTT from its echo. */
void lwsi__rdzv_take_hb(struct lwsi_rdzv_conn *c, struct lwsi_rdzv_slot *s,
                        const struct lwsi_msg_hb *hb);

/* ---- rdzv_conn.c: timers and handles ---- */

/* Opens the shared timers and the check and idle handles. */
int lwsi__rdzv_timers_open(struct lwsi_rdzv *r);
/* The rendezvous begins: the tick, and the deadline if any. */
int lwsi__rdzv_timers_start(struct lwsi_rdzv *r);
void lwsi__rdzv_timers_stop(struct lwsi_rdzv *r);
void lwsi__rdzv_timers_close(struct lwsi_rdzv *r);
void lwsi__rdzv_close_handle(struct lwsi_rdzv *r, uv_handle_t *h, bool open);
int lwsi__rdzv_timer_open(struct lwsi_rdzv *r, uv_timer_t *t, bool *open);
/* Arms the tick for due, unless it is armed for earlier already. */
void lwsi__rdzv_tick_arm(struct lwsi_rdzv *r, uint64_t due);
/* Runs the defer work on the next loop iteration. */
void lwsi__rdzv_schedule_defer(struct lwsi_rdzv *r);
/* Runs it in delay ms, unless it is scheduled already. */
void lwsi__rdzv_schedule_defer_in(struct lwsi_rdzv *r, uint64_t delay);
/* Makes the check phase of this iteration run the work now due. */
void lwsi__rdzv_mark_due(struct lwsi_rdzv *r);

/* ---- rdzv_conn.c: small helpers ---- */

int lwsi__rdzv_random(void *buf, size_t len);
int lwsi__rdzv_parse_ip(const char *host, uint16_t port, struct sockaddr_storage *ss);
/* "rank 2", "ranks 2, 3", "ranks 2, 3, ... (40 in all)". */
void lwsi__rdzv_format_ranks(char *buf, size_t len, const uint32_t *ranks, uint32_t n,
                             uint32_t total);
/* What a decode or split error says about the peer's bytes. */
const char *lwsi__rdzv_decode_error(int rc);

/* ---- rdzv_leader.c, rdzv_worker.c: the public face's role work ---- */

/* lwsi_rdzv_app_broadcast, checked: keeps and sends the frame. */
int lwsi__rdzv_leader_app(struct lwsi_rdzv *r, const char *kind, const char *data);
/* lwsi_rdzv_app_send_to, checked: to that member alone, not kept. */
int lwsi__rdzv_leader_app_to(struct lwsi_rdzv *r, uint32_t rank, const char *kind,
                             const char *data);
/* lwsi_rdzv_app_send, checked. */
int lwsi__rdzv_worker_app(struct lwsi_rdzv *r, const char *kind, const char *data);
/* lwsi_rdzv_set_leader, checked: ss is ip's address on the leader's port. */
/* Worker: released, its leader lost: back to JOINING (lwsi_rdzv_rejoin). */
void lwsi__rdzv_worker_rejoin(struct lwsi_rdzv *r);
void lwsi__rdzv_worker_set_leader(struct lwsi_rdzv *r, const char *ip,
                                  const struct sockaddr_storage *ss);

#endif
