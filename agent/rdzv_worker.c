/* The worker's side of the rendezvous (docs/protocol.md): connection
 * attempts (a refused connect retried at a short step that does not grow,
 * every other failure with a doubling backoff, both jittered), the
 * handshake and the proofs that make a leader's answer believable, the
 * waiting list and the release, and after it the leader's liveness and
 * the losses it relays. Owns r->as_worker; the shared machinery calls in
 * through lwsi__rdzv_worker_ops. */
#include "rdzv_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- retries ---- */

/* xorshift64*: only for jitter, so that workers restarted together do not
 * knock on the leader's door in lockstep. */
static uint64_t rng_next(struct lwsi_rdzv *r)
{
  uint64_t *x = &r->as_worker.rng;
  *x ^= *x >> 12;
  *x ^= *x << 25;
  *x ^= *x >> 27;
  return *x * 2685821657736338717ull;
}

static void worker_attempt(uv_timer_t *t);

static void worker_schedule_retry(struct lwsi_rdzv *r, uint64_t delay)
{
  if (r->as_worker.retry_open && !lwsi__rdzv_quiet(r))
    uv_timer_start(&r->as_worker.retry, worker_attempt, delay, 0);
}

/* A delay drawn uniformly in [d - d / part, d]: never longer than d, so
 * the step bounds the gap between attempts, and never shorter than
 * d - d / part, so it bounds their rate too. */
static uint64_t worker_jitter(struct lwsi_rdzv *r, uint64_t d, uint64_t part)
{
  uint64_t spread = d / part;
  return d - (spread ? rng_next(r) % (spread + 1) : 0);
}

/* The backoff for every failure but a refused connect: doubling up to the
 * cap, so a leader that comes up late is found within the cap. */
static uint64_t worker_next_delay(struct lwsi_rdzv *r)
{
  uint64_t d = r->as_worker.retry_delay;
  r->as_worker.retry_delay = d * 2 > r->cfg.retry_max_ms ? r->cfg.retry_max_ms : d * 2;
  return worker_jitter(r, d, 2); /* the upper half: [d/2, d] */
}

/* Tries again after delay ms: the connection (if any) is closed first. */
static void worker_retry_in(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err,
                            const char *why, uint64_t delay)
{
  if (c != NULL)
    lwsi__rdzv_conn_close(c);
  lwsi_text_copy(r->as_worker.last_error, sizeof(r->as_worker.last_error), why);
  worker_schedule_retry(r, delay);
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_RETRYING, 0, r->host, "", err, "%s; retrying in %llu ms", why,
                  (unsigned long long)delay);
}

/* A connection attempt or handshake failed: try again after a backoff. */
static void worker_retry(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err, const char *why)
{
  worker_retry_in(r, c, err, why, worker_next_delay(r));
}

/* Final: refused, failed or timed out. */
static void worker_end(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, enum lwsi_rdzv_ev type,
                       const char *why)
{
  r->state = LWSI_RDZV_FAILED;
  lwsi_text_copy(r->as_worker.last_error, sizeof(r->as_worker.last_error), why);
  if (c != NULL)
    lwsi__rdzv_conn_close(c);
  if (r->as_worker.retry_open)
    uv_timer_stop(&r->as_worker.retry);
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  lwsi__rdzv_emit(r, type, 0, r->host, "", 0, "%s", why);
}

/* The leader went: before release we wait for it to come back (it may be
 * restarting); after release it is lost, and a worker joins another
 * incarnation only when its caller asks (lwsi_rdzv_rejoin). */
static void worker_leader_gone(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *why)
{
  lwsi__rdzv_conn_close(c);
  struct lwsi_rdzv_slot *s = &r->slots[0];
  if (r->state == LWSI_RDZV_RELEASED) {
    if (!s->alive)
      return;
    s->alive = false;
    lwsi__rdzv_emit(r, LWSI_RDZV_EV_LOST, 0, r->host, s->pod, 0, "%s", why);
    return;
  }
  if (r->state != LWSI_RDZV_JOINING)
    return;
  s->alive = false;
  s->joined = false;
  r->as_worker.heard_missing = false;
  r->missing[0] = '\0';
  lwsi_text_printf(r->as_worker.last_error, sizeof(r->as_worker.last_error),
                   "lost the leader at %s before release: %s", r->host, why);
  r->as_worker.retry_delay = r->cfg.retry_min_ms;
  worker_schedule_retry(r, worker_next_delay(r));
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_DEPARTED, 0, r->host, "", 0, "%s", why);
}

/* ---- the handshake ---- */

static void worker_send_join(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  struct lwsi_msg m = {.type = LWSI_MSG_JOIN};
  struct lwsi_msg_join *j = &m.join;
  j->rank = r->cfg.rank;
  j->size = r->cfg.size;
  j->gpus = r->cfg.gpus;
  lwsi_text_copy(j->revision, sizeof(j->revision), r->revision);
  lwsi_text_copy(j->pod, sizeof(j->pod), r->pod);
  memcpy(j->nonce, r->nonce, sizeof(j->nonce));
  lwsi_text_copy(j->preset, sizeof(j->preset), r->preset);
  j->dist_port = r->cfg.dist_port;
  j->cmd_total = r->cmd.total;
  j->ncmd = r->cmd.n;
  j->cmd = r->cmd.args; /* ours: the join only points at it */
  memcpy(j->digest, r->cmd.digest, sizeof(j->digest));
  int rc = lwsi__rdzv_random(j->challenge, sizeof(j->challenge));
  if (rc == 0 && r->token != NULL) {
    j->auth = true;
    rc = lwsi_wire_join_mac(r->token, r->cfg.token_len, &c->hello, j, j->mac);
  }
  if (rc < 0) {
    worker_end(r, c, LWSI_RDZV_EV_FAILED, "cannot compute the join proof");
    return;
  }
  c->join = *j;
  c->state = C_JOINING;
  c->deadline = uv_now(r->loop) + r->cfg.handshake_timeout_ms;
  lwsi__rdzv_tick_arm(r, c->deadline);
  rc = lwsi__rdzv_send_msg(c, &m);
  explicit_bzero(&m, sizeof(m));
  if (rc == -EINVAL || rc == -EMSGSIZE)
    worker_end(r, c, LWSI_RDZV_EV_FAILED,
               "cannot encode the join (its text breaks the wire rules)");
}

/* An end we cannot believe: say it, and keep trying until the rendezvous
 * deadline, whose failure then names it (worker_deadline). A leader with
 * another token, or none, ends up here too: from this side it cannot be
 * told from an impostor. */
static void worker_unproven(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *reason)
{
  char why[LWSI_WIRE_REASON_MAX];
  lwsi_text_printf(why, sizeof(why),
                   "%s:%u said '%s' without proof of the token (a leader with another token or "
                   "none, or not our leader)",
                   r->host, r->cfg.port, reason);
  /* At the slow end of the backoff: whoever said it answers at once, and
   * would otherwise be asked again every few tens of milliseconds. */
  r->as_worker.retry_delay = r->cfg.retry_max_ms;
  worker_retry(r, c, -EACCES, why);
  /* After the retry is set up, so that a callback that closes us finds
   * nothing half done (emit reports nothing once we are quiet). */
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_UNVERIFIED, 0, r->host, "", -EACCES, "%s", why);
}

static void worker_welcome(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                           const struct lwsi_msg_welcome *w)
{
  char why[LWSI_WIRE_REASON_MAX];
  if (w->rank != r->cfg.rank) {
    lwsi_text_printf(why, sizeof(why), "the leader welcomed rank %u instead of %u", w->rank,
                     r->cfg.rank);
    worker_retry(r, c, -EPROTO, why);
    return;
  }
  /* Mutual proof: a worker with a token joins only a leader that has it. */
  if (r->token != NULL) {
    uint8_t mac[LWSI_WIRE_MAC_LEN];
    bool ok = w->auth &&
              lwsi_wire_welcome_mac(r->token, r->cfg.token_len, &c->hello, &c->join, mac) == 0 &&
              lwsi_wire_mac_equal(mac, w->proof);
    explicit_bzero(mac, sizeof(mac));
    if (!ok) {
      /* Anyone who answers on the leader's address can send a welcome:
       * without the proof it ends nothing (docs/security.md 3.4). */
      worker_unproven(r, c, "welcome");
      return;
    }
  }
  uint64_t now = uv_now(r->loop);
  c->state = C_MEMBER;
  c->last_rx = now;
  r->as_worker.retry_delay = r->cfg.retry_min_ms;
  r->attempts = 0;
  struct lwsi_rdzv_slot *s = &r->slots[0];
  lwsi__rdzv_slot_reset(s);
  s->joined = true;
  s->alive = true;
  s->watched = true;
  s->last_rx = now;
  lwsi_text_copy(s->addr, sizeof(s->addr), r->host);
  r->next_hb = now; /* the leader hears from us at once */
  lwsi__rdzv_tick_arm(r, now);
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_JOINED, 0, r->host, "", 0,
                  "joined the leader at %s:%u as rank %u of %u", r->host, r->cfg.port, r->cfg.rank,
                  r->cfg.size);
}

static void worker_waiting(struct lwsi_rdzv *r, const struct lwsi_msg_waiting *w)
{
  char text[LWSI_WIRE_REASON_MAX];
  lwsi__rdzv_format_ranks(text, sizeof(text), w->missing, w->nlisted, w->nmissing);
  r->nmissing = w->nmissing;
  r->as_worker.njoined = w->joined > 0 ? w->joined - 1 : 0;
  bool changed = !r->as_worker.heard_missing || strcmp(text, r->missing) != 0;
  r->as_worker.heard_missing = true;
  lwsi_text_copy(r->missing, sizeof(r->missing), text);
  if (changed)
    lwsi__rdzv_emit(r, LWSI_RDZV_EV_WAITING, -1, r->host, "", 0, "waiting for %s (%u of %u joined)",
                    w->nmissing ? r->missing : "no one", w->joined, r->cfg.size);
}

static void worker_release(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                           const struct lwsi_msg_release *rl)
{
  if (rl->size != r->cfg.size) {
    worker_leader_gone(r, c, "sent a member table of the wrong size");
    return;
  }
  struct lwsi_rdzv_slot leader = r->slots[0];
  for (uint32_t i = 0; i < rl->size; i++) {
    struct lwsi_rdzv_slot *s = &r->slots[i];
    if (i != 0)
      lwsi__rdzv_slot_reset(s);
    s->joined = true;
    s->alive = true;
    lwsi_text_copy(s->addr, sizeof(s->addr), rl->members[i].addr);
    lwsi_text_copy(s->pod, sizeof(s->pod), rl->members[i].pod);
  }
  /* Keep what we measured of the leader ourselves. */
  r->slots[0].last_rx = leader.last_rx;
  r->slots[0].rtt_us = leader.rtt_us;
  r->slots[0].watched = true;
  r->slots[0].has_state = leader.has_state;
  lwsi_text_copy(r->slots[0].child, sizeof(r->slots[0].child), leader.child);
  r->slots[0].upstream = leader.upstream;
  r->slots[0].has_health = leader.has_health;
  r->slots[0].upstream_on = leader.upstream_on;
  r->slots[0].upstream_age_ms = leader.upstream_age_ms;
  r->slots[0].health_at = leader.health_at;
  lwsi_text_copy(r->slots[0].upstream_error, sizeof(r->slots[0].upstream_error),
                 leader.upstream_error);
  r->slots[0].stopping = leader.stopping;
  r->state = LWSI_RDZV_RELEASED;
  r->as_worker.njoined = r->cfg.size - 1;
  r->missing[0] = '\0';
  r->nmissing = 0;
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_RELEASED, -1, r->host, "", 0,
                  "released by the leader with %u members", rl->size);
}

/* Whether a refusal is final. Without a token anything goes (an open group
 * trusts whoever answers on the leader's address). With one, only a
 * refusal that proves the leader holds the same token: otherwise anyone who
 * can answer there could end every worker (docs/security.md 3.4). */
static bool worker_refusal_proven(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                                  const struct lwsi_msg_refuse *rf)
{
  if (r->token == NULL)
    return true;
  if (!rf->auth)
    return false;
  uint8_t mac[LWSI_WIRE_MAC_LEN];
  bool ok = lwsi_wire_refuse_mac(r->token, r->cfg.token_len, &c->hello, &c->join, rf, mac) == 0 &&
            lwsi_wire_mac_equal(mac, rf->mac);
  explicit_bzero(mac, sizeof(mac));
  return ok;
}

/* ---- reading (lwsi__rdzv_worker_ops) ---- */

static void worker_frame(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const uint8_t *f, size_t n)
{
  struct lwsi_msg m;
  int rc = lwsi_wire_decode(f, n, &m);
  char why[LWSI_WIRE_REASON_MAX + 128];
  if (c->state == C_HELLO) {
    if (rc == -EPROTONOSUPPORT) {
      lwsi_text_printf(why, sizeof(why), "the leader speaks protocol version %u, this worker %u",
                       m.v, LWSI_WIRE_VERSION);
      if (r->token != NULL)
        worker_unproven(r, c, why); /* a hello proves nothing */
      else
        worker_end(r, c, LWSI_RDZV_EV_REFUSED, why);
    } else if (rc < 0 || m.type != LWSI_MSG_HELLO) {
      /* Maybe not our leader at all (another service on the port). */
      lwsi_text_printf(why, sizeof(why), "%s:%u answered with %s, not a leader's hello", r->host,
                       r->cfg.port,
                       rc < 0 ? lwsi__rdzv_decode_error(rc) : lwsi_wire_type_name(m.type));
      worker_retry(r, c, rc < 0 ? rc : -EPROTO, why);
    } else {
      c->hello = m.hello;
      c->last_rx = uv_now(r->loop);
      r->as_worker.retry_delay = r->cfg.retry_min_ms; /* a live leader: retry fast again */
      worker_send_join(r, c);
    }
    goto out;
  }
  c->last_rx = uv_now(r->loop);
  r->slots[0].last_rx = c->last_rx;
  if (rc < 0) {
    lwsi_text_printf(why, sizeof(why), "sent %s", lwsi__rdzv_decode_error(rc));
    if (c->state == C_JOINING)
      worker_retry(r, c, rc, why);
    else
      worker_leader_gone(r, c, why);
    goto out;
  }
  if (m.type == LWSI_MSG_FAIL) {
    /* A real leader fails only members, after their welcome (leader_fail):
     * before it, a 'fail' is nobody's word. */
    if (c->state == C_JOINING && r->token != NULL)
      worker_unproven(r, c, m.fail.reason);
    else
      worker_end(r, c, LWSI_RDZV_EV_FAILED, m.fail.reason);
    goto out;
  }
  if (c->state == C_JOINING) {
    if (m.type == LWSI_MSG_WELCOME) {
      worker_welcome(r, c, &m.welcome);
    } else if (m.type == LWSI_MSG_REFUSE) {
      if (worker_refusal_proven(r, c, &m.refuse))
        worker_end(r, c, LWSI_RDZV_EV_REFUSED, m.refuse.reason);
      else
        worker_unproven(r, c, m.refuse.reason);
    } else {
      lwsi_text_printf(why, sizeof(why), "the leader sent '%s' instead of an answer to the join",
                       lwsi_wire_type_name(m.type));
      worker_retry(r, c, -EPROTO, why);
    }
    goto out;
  }
  /* A member. */
  switch (m.type) {
  case LWSI_MSG_HB:
    lwsi__rdzv_take_hb(c, &r->slots[0], &m.hb);
    break;
  case LWSI_MSG_WAITING:
    if (r->state == LWSI_RDZV_JOINING)
      worker_waiting(r, &m.waiting);
    break;
  case LWSI_MSG_RELEASE:
    if (r->state == LWSI_RDZV_JOINING)
      worker_release(r, c, &m.release);
    break;
  case LWSI_MSG_LOST:
    if (r->state == LWSI_RDZV_RELEASED && m.lost.rank > 0 && m.lost.rank < r->cfg.size &&
        r->slots[m.lost.rank].alive) {
      struct lwsi_rdzv_slot *s = &r->slots[m.lost.rank];
      s->alive = false;
      lwsi__rdzv_emit(r, LWSI_RDZV_EV_LOST, m.lost.rank, s->addr, s->pod, 0, "%s", m.lost.reason);
    }
    break;
  case LWSI_MSG_BYE:
    lwsi_text_printf(why, sizeof(why), "left: %s", m.bye.reason);
    worker_leader_gone(r, c, why);
    break;
  case LWSI_MSG_APP:
    /* The leader sends them after the release frame, on this connection. */
    if (r->state == LWSI_RDZV_RELEASED)
      lwsi__rdzv_emit_app(r, 0, r->host, r->slots[0].pod, &m.app);
    else
      worker_leader_gone(r, c, "sent an 'app' message before the release");
    break;
  default:
    lwsi_text_printf(why, sizeof(why), "sent an unexpected '%s' message",
                     lwsi_wire_type_name(m.type));
    worker_leader_gone(r, c, why);
    break;
  }
out:
  lwsi_wire_msg_free(&m);
}

static void worker_eof(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, ssize_t err)
{
  char why[LWSI_WIRE_REASON_MAX];
  const char *what = err == UV_EOF ? "closed the connection" : uv_strerror((int)err);
  if (c->state == C_MEMBER) {
    lwsi_text_printf(why, sizeof(why), "%s%s", err == UV_EOF ? "" : "connection error: ", what);
    worker_leader_gone(r, c, why);
  } else {
    lwsi_text_printf(why, sizeof(why), "the leader at %s:%u %s%s during the handshake", r->host,
                     r->cfg.port, err == UV_EOF ? "" : "failed: ", what);
    worker_retry(r, c, (int)err, why);
  }
}

static void worker_garbage(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err)
{
  char why[128];
  if (c->state == C_MEMBER) {
    lwsi_text_printf(why, sizeof(why), "sent %s", lwsi__rdzv_decode_error(err));
    worker_leader_gone(r, c, why);
  } else {
    lwsi_text_printf(why, sizeof(why), "%s:%u sent garbage (%s)", r->host, r->cfg.port,
                     lwsi__rdzv_decode_error(err));
    worker_retry(r, c, err, why);
  }
}

static void worker_detach(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  if (r->as_worker.conn == c)
    r->as_worker.conn = NULL;
}

/* ---- connecting ---- */

/* A failed connect, with the step that failed ("connect to", "read from"). */
static void worker_connect_failed(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *step,
                                  int err)
{
  char why[LWSI_WIRE_REASON_MAX];
  lwsi_text_printf(why, sizeof(why), "cannot %s the leader at %s:%u: %s", step, r->host,
                   r->cfg.port, uv_strerror(err));
  if (err == UV_ECONNREFUSED) {
    /* The leader's host answered the SYN with an RST: it is up and nobody
     * listens on the port yet, the usual state of a group whose leader's
     * agent starts last. Such a try costs the leader's node one SYN in and
     * one RST out and no state (RFC 9293 3.10.7.1: a segment for a CLOSED
     * port is answered with a reset; Linux's tcp_v4_send_reset builds it
     * from the segment alone), so it is retried at the refused step, which
     * does not grow and whose size bounds the group's rate
     * (LWSI_RDZV_REFUSED_*): a late leader is joined within one step. A
     * quarter of jitter is enough: refusals keep no state, so workers in
     * lockstep cost the leader nothing more. The backoff for every other
     * failure is left where it was. */
    worker_retry_in(r, c, err, why, worker_jitter(r, r->cfg.refused_retry_ms, 4));
    return;
  }
  worker_retry(r, c, err, why);
}

static void on_connect(uv_connect_t *req, int status)
{
  struct lwsi_rdzv_conn *c = req->data;
  struct lwsi_rdzv *r = c->r;
  if (c->state == C_CLOSING || lwsi__rdzv_quiet(r))
    return; /* cancelled: closed on a timeout, or the whole module closed */
  if (status < 0) {
    worker_connect_failed(r, c, "connect to", status);
    return;
  }
  int rc = lwsi__rdzv_conn_read(c);
  if (rc < 0) {
    worker_connect_failed(r, c, "read from", rc);
    return;
  }
  c->state = C_HELLO;
  c->deadline = uv_now(r->loop) + r->cfg.handshake_timeout_ms;
  lwsi__rdzv_tick_arm(r, c->deadline);
}

static void worker_attempt(uv_timer_t *t)
{
  struct lwsi_rdzv *r = t->data;
  if (r->state != LWSI_RDZV_JOINING || r->as_worker.conn != NULL)
    return;
  r->attempts++;
  struct lwsi_rdzv_conn *c = lwsi__rdzv_conn_new(r);
  if (c == NULL) {
    worker_retry(r, NULL, -ENOMEM, "cannot open a socket: out of memory");
    return;
  }
  r->as_worker.conn = c;
  /* The leader's release carries the whole member table (wire.h). */
  lwsi_wire_reader_set_max(&c->rd, LWSI_WIRE_RELEASE_MAX(r->cfg.size));
  c->state = C_CONNECTING;
  c->deadline = uv_now(r->loop) + r->cfg.connect_timeout_ms;
  lwsi__rdzv_tick_arm(r, c->deadline);
  lwsi_text_copy(c->addr, sizeof(c->addr), r->host);
  int rc = 0;
  if (r->source[0] != '\0') {
    struct sockaddr_storage src;
    rc = lwsi__rdzv_parse_ip(r->source, 0, &src);
    if (rc == 0)
      rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
  }
  if (rc == 0)
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&r->as_worker.peer_sa,
                        on_connect);
  if (rc < 0)
    worker_connect_failed(r, c, "connect to", rc);
}

/* ---- timers (lwsi__rdzv_worker_ops) ---- */

static uint64_t worker_next_due(struct lwsi_rdzv *r, uint64_t due)
{
  struct lwsi_rdzv_conn *c = r->as_worker.conn;
  due = lwsi__rdzv_hb_due(r, c != NULL && c->state == C_MEMBER, due);
  if (c == NULL || c->state == C_CLOSING)
    return due;
  uint64_t limit = c->state == C_MEMBER ? c->last_rx + r->cfg.peer_timeout_ms + 1 : c->deadline;
  return lwsi__rdzv_min(due, limit);
}

static void worker_tick(struct lwsi_rdzv *r)
{
  struct lwsi_rdzv_conn *c = r->as_worker.conn;
  if (c == NULL || c->state == C_CLOSING)
    return;
  uint64_t now = uv_now(r->loop);
  char why[LWSI_WIRE_REASON_MAX];
  if (c->state != C_MEMBER) {
    if (now < c->deadline)
      return;
    if (c->state == C_CONNECTING)
      lwsi_text_printf(why, sizeof(why),
                       "cannot connect to the leader at %s:%u: timed out after %llu ms", r->host,
                       r->cfg.port, (unsigned long long)r->cfg.connect_timeout_ms);
    else
      lwsi_text_printf(why, sizeof(why),
                       "the leader at %s:%u did not answer the handshake within %llu ms", r->host,
                       r->cfg.port, (unsigned long long)r->cfg.handshake_timeout_ms);
    worker_retry(r, c, -ETIMEDOUT, why);
    return;
  }
  if (now - c->last_rx > r->cfg.peer_timeout_ms) {
    lwsi_text_printf(why, sizeof(why), "silent for %llu ms",
                     (unsigned long long)(now - c->last_rx));
    worker_leader_gone(r, c, why);
    return;
  }
  if (!lwsi__rdzv_hb_take_turn(r, now))
    return;
  struct lwsi_rdzv_local l;
  lwsi__rdzv_local_state(r, &l);
  if (lwsi__rdzv_quiet(r) || r->as_worker.conn != c)
    return;
  lwsi__rdzv_send_hb(r, c, &l);
}

static void worker_deadline(struct lwsi_rdzv *r)
{
  if (r->state != LWSI_RDZV_JOINING)
    return;
  /* The best we know, without the "did not form within" the caller adds. */
  char why[LWSI_WIRE_REASON_MAX + 128];
  struct lwsi_rdzv_conn *c = r->as_worker.conn;
  bool member = c != NULL && c->state == C_MEMBER;
  if (member && r->as_worker.heard_missing && r->nmissing > 0)
    lwsi_text_printf(why, sizeof(why), "the leader was still waiting for %s", r->missing);
  else if (member)
    lwsi_text_printf(why, sizeof(why), "joined the leader at %s, but it did not release the group",
                     r->host);
  else
    lwsi_text_printf(why, sizeof(why), "%s",
                     r->as_worker.last_error[0] ? r->as_worker.last_error
                                                : "the leader was never reached");
  if (member)
    lwsi__rdzv_send_text(c, LWSI_MSG_BYE, "gave up: its rendezvous deadline passed");
  worker_end(r, c, LWSI_RDZV_EV_TIMEOUT, why);
}

static void worker_defer(struct lwsi_rdzv *r)
{
  struct lwsi_rdzv_conn *c = r->as_worker.conn;
  if (c == NULL || !c->broken)
    return;
  if (c->state == C_MEMBER)
    worker_leader_gone(r, c, c->broken_why);
  else
    worker_retry(r, c, c->broken_err, c->broken_why);
}

/* ---- start, leave, close (lwsi__rdzv_worker_ops) ---- */

static int worker_open(struct lwsi_rdzv *r)
{
  int rc;
  if ((rc = lwsi__rdzv_random(&r->as_worker.rng, sizeof(r->as_worker.rng))) < 0)
    return rc;
  r->as_worker.rng |= 1;
  r->as_worker.retry_delay = r->cfg.retry_min_ms;
  if ((rc = lwsi__rdzv_timer_open(r, &r->as_worker.retry, &r->as_worker.retry_open)) < 0)
    return rc;
  if ((rc = lwsi__rdzv_parse_ip(r->host, r->cfg.port, &r->as_worker.peer_sa)) < 0)
    return rc;
  lwsi_text_copy(r->slots[r->cfg.rank].addr, sizeof(r->slots[r->cfg.rank].addr), r->source);
  lwsi_text_copy(r->slots[0].addr, sizeof(r->slots[0].addr), r->host);
  lwsi_text_copy(r->as_worker.last_error, sizeof(r->as_worker.last_error),
                 "no connection attempt finished yet");
  return 0;
}

static void worker_begin(struct lwsi_rdzv *r)
{
  worker_schedule_retry(r, 0); /* the first attempt, on the loop */
}

static void worker_stop(struct lwsi_rdzv *r)
{
  if (r->as_worker.retry_open)
    uv_timer_stop(&r->as_worker.retry);
}

static void worker_leave(struct lwsi_rdzv *r, const char *reason)
{
  struct lwsi_rdzv_conn *c = r->as_worker.conn;
  if (c != NULL) {
    if (c->state == C_MEMBER)
      lwsi__rdzv_send_text(c, LWSI_MSG_BYE, reason);
    else
      lwsi__rdzv_conn_close(c);
  }
  worker_stop(r);
}

static void worker_close(struct lwsi_rdzv *r)
{
  if (r->as_worker.conn != NULL)
    lwsi__rdzv_conn_close(r->as_worker.conn);
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->as_worker.retry, r->as_worker.retry_open);
}

const struct lwsi_rdzv_ops lwsi__rdzv_worker_ops = {
    .open = worker_open,
    .begin = worker_begin,
    .frame = worker_frame,
    .eof = worker_eof,
    .garbage = worker_garbage,
    .detach = worker_detach,
    .settle = NULL,
    .deadline = worker_deadline,
    .tick = worker_tick,
    .next_due = worker_next_due,
    .defer = worker_defer,
    .leave = worker_leave,
    .close = worker_close,
};

/* ---- the public face's worker calls ---- */

void lwsi__rdzv_worker_set_leader(struct lwsi_rdzv *r, const char *ip,
                                  const struct sockaddr_storage *ss)
{
  /* The connection in hand (if any) goes on: a joined worker stays with the
   * leader it has; the new address is for the next attempt. */
  r->as_worker.peer_sa = *ss;
  lwsi_text_copy(r->host, sizeof(r->host), ip);
  if (r->as_worker.conn == NULL || r->as_worker.conn->state != C_MEMBER)
    lwsi_text_copy(r->slots[0].addr, sizeof(r->slots[0].addr), ip);
}

void lwsi__rdzv_worker_rejoin(struct lwsi_rdzv *r)
{
  /* The old leader's connection went with its loss (worker_leader_gone);
   * one still here would be a leader this worker no longer believes. */
  if (r->as_worker.conn != NULL)
    lwsi__rdzv_conn_close(r->as_worker.conn);
  /* The table is the old group's: the new leader's release sends its own.
   * This member's own row keeps its address. */
  for (uint32_t i = 0; i < r->cfg.size; i++)
    if (i != r->cfg.rank)
      lwsi__rdzv_slot_reset(&r->slots[i]);
  lwsi_text_copy(r->slots[0].addr, sizeof(r->slots[0].addr), r->host);
  r->state = LWSI_RDZV_JOINING;
  r->as_worker.njoined = 0;
  r->as_worker.heard_missing = false;
  r->missing[0] = '\0';
  r->nmissing = 0;
  r->attempts = 0;
  r->as_worker.retry_delay = r->cfg.retry_min_ms;
  lwsi_text_printf(r->as_worker.last_error, sizeof(r->as_worker.last_error),
                   "lost the leader at %s after release; joining again", r->host);
  worker_schedule_retry(r, 0);
}

int lwsi__rdzv_worker_app(struct lwsi_rdzv *r, const char *kind, const char *data)
{
  struct lwsi_rdzv_conn *c = r->as_worker.conn;
  if (c == NULL || c->state != C_MEMBER || c->broken)
    return -ENOTCONN;
  return lwsi__rdzv_send_app(c, kind, data);
}
