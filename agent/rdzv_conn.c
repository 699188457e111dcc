/* The rendezvous machinery both roles share (agent/rdzv_int.h): a
 * connection's life, frames in (reading, splitting, handing each to the
 * role) and out (the write queue and its limit), heartbeat frames, the
 * events, and the timers: the tick and when it is due next, the rendezvous
 * deadline, the defer timer, and the check and idle handles that run what
 * they found due after the loop has read what arrived. Whatever a role
 * decides goes through r->ops. */
#include "rdzv_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* A peer that does not read its socket must not make us queue without
 * limit: past this many bytes waiting to be written it counts as gone. */
#define MAX_QUEUED (1u << 20)

struct wreq {
  uv_write_t req;
  struct lwsi_rdzv_conn *c;
  uint8_t *frame;
};

/* ---- small helpers ---- */

int lwsi__rdzv_random(void *buf, size_t len)
{
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static uint64_t now_us(void) { return uv_hrtime() / 1000; }

int lwsi__rdzv_parse_ip(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
  memset(ss, 0, sizeof(*ss));
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return -EINVAL;
}

void lwsi__rdzv_format_ranks(char *buf, size_t len, const uint32_t *ranks, uint32_t n,
                             uint32_t total)
{
  size_t o = 0;
  buf[0] = '\0';
  if (total == 0)
    return;
  lwsi_text_printf(buf, len, "%s", total == 1 ? "rank " : "ranks ");
  o = strlen(buf);
  uint32_t shown = 0;
  for (uint32_t i = 0; i < n; i++) {
    char one[16];
    lwsi_text_printf(one, sizeof(one), "%s%u", i ? ", " : "", ranks[i]);
    /* Keep room for the ", ... (N in all)" tail. */
    if (o + strlen(one) + 32 >= len)
      break;
    memcpy(buf + o, one, strlen(one) + 1);
    o += strlen(one);
    shown++;
  }
  if (shown < total)
    lwsi_text_printf(buf + o, len - o, ", ... (%u in all)", total);
}

const char *lwsi__rdzv_decode_error(int rc)
{
  switch (rc) {
  case -EPROTONOSUPPORT:
    return "another protocol version";
  case -ENOMSG:
    return "an unknown message type";
  case -EMSGSIZE:
    return "a frame over the size limit";
  case -ENOMEM:
    return "out of memory";
  default:
    return "a malformed message";
  }
}

/* ---- events ---- */

static bool deliver(struct lwsi_rdzv *r, const struct lwsi_rdzv_event *ev)
{
  if (r->cb != NULL)
    r->cb(r, ev);
  return !lwsi__rdzv_quiet(r);
}

/* An event with every text field set ("" when none). */
static struct lwsi_rdzv_event event_of(enum lwsi_rdzv_ev type, int64_t rank, const char *addr,
                                       const char *pod, int err, const char *reason)
{
  struct lwsi_rdzv_event ev = {
      .type = type,
      .rank = rank,
      .addr = addr != NULL ? addr : "",
      .pod = pod != NULL ? pod : "",
      .err = err,
      .reason = reason,
      .kind = "",
      .data = "",
  };
  return ev;
}

bool lwsi__rdzv_emit(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, int64_t rank, const char *addr,
                     const char *pod, int err, const char *fmt, ...)
{
  if (lwsi__rdzv_quiet(r))
    return false;
  char reason[LWSI_WIRE_REASON_MAX + 256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);
  if (n < 0)
    reason[0] = '\0';
  struct lwsi_rdzv_event ev = event_of(type, rank, addr, pod, err, reason);
  return deliver(r, &ev);
}

bool lwsi__rdzv_emit_app(struct lwsi_rdzv *r, uint32_t rank, const char *addr, const char *pod,
                         const struct lwsi_msg_app *m)
{
  if (lwsi__rdzv_quiet(r))
    return false;
  char reason[128];
  lwsi_text_printf(reason, sizeof(reason), "'%s' from rank %u (%zu bytes)", m->kind, rank,
                   strlen(m->data));
  struct lwsi_rdzv_event ev = {
      .type = LWSI_RDZV_EV_APP,
      .rank = rank,
      .addr = addr != NULL ? addr : "",
      .pod = pod != NULL ? pod : "",
      .err = 0,
      .reason = reason,
      .kind = m->kind,
      .data = m->data,
  };
  return deliver(r, &ev);
}

bool lwsi__rdzv_emit_count(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, uint32_t rank,
                           const char *addr, const char *pod, uint32_t count, const char *reason)
{
  if (lwsi__rdzv_quiet(r))
    return false;
  struct lwsi_rdzv_event ev = event_of(type, rank, addr, pod, 0, reason);
  ev.count = count;
  return deliver(r, &ev);
}

/* ---- connections ---- */

static void on_conn_closed(uv_handle_t *h)
{
  struct lwsi_rdzv_conn *c = h->data;
  lwsi_wire_reader_free(&c->rd);
  explicit_bzero(&c->hello, sizeof(c->hello));
  explicit_bzero(&c->join, sizeof(c->join));
  free(c);
}

void lwsi__rdzv_conn_close(struct lwsi_rdzv_conn *c)
{
  struct lwsi_rdzv *r = c->r;
  if (c->state == C_CLOSING)
    return;
  c->state = C_CLOSING;
  r->ops->detach(r, c);
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

struct lwsi_rdzv_conn *lwsi__rdzv_conn_new(struct lwsi_rdzv *r)
{
  struct lwsi_rdzv_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->r = r;
  c->rank = UINT32_MAX;
  lwsi_wire_reader_init(&c->rd);
  int rc = uv_tcp_init(r->loop, &c->tcp);
  if (rc < 0) {
    free(c);
    return NULL;
  }
  c->tcp.data = c;
  c->connect_req.data = c;
  c->shutdown_req.data = c;
  return c;
}

/* We are possibly in the middle of a broadcast, so the loss is handled on
 * the defer timer rather than here, where it could recurse into another
 * broadcast. */
void lwsi__rdzv_mark_broken(struct lwsi_rdzv_conn *c, int err, const char *why)
{
  if (c->broken || c->state == C_CLOSING)
    return;
  c->broken = true;
  c->broken_err = err;
  lwsi_text_copy(c->broken_why, sizeof(c->broken_why), why);
  lwsi__rdzv_schedule_defer(c->r);
}

/* A write error as the reason for the loss. */
static void mark_write_error(struct lwsi_rdzv_conn *c, int err)
{
  char why[128];
  lwsi_text_printf(why, sizeof(why), "connection error: %s", uv_strerror(err));
  lwsi__rdzv_mark_broken(c, err, why);
}

static void on_write(uv_write_t *req, int status)
{
  struct wreq *w = (struct wreq *)req;
  struct lwsi_rdzv_conn *c = w->c;
  free(w->frame);
  free(w);
  if (status < 0 && status != UV_ECANCELED)
    mark_write_error(c, status);
}

int lwsi__rdzv_send_frame(struct lwsi_rdzv_conn *c, uint8_t *frame, size_t len)
{
  if (c->state == C_CLOSING || c->broken) {
    free(frame);
    return -EPIPE;
  }
  struct wreq *w = malloc(sizeof(*w));
  if (w == NULL) {
    free(frame);
    lwsi__rdzv_mark_broken(c, -ENOMEM, "out of memory");
    return -ENOMEM;
  }
  w->c = c;
  w->frame = frame;
  uv_buf_t buf = uv_buf_init((char *)frame, (unsigned)len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
  if (rc < 0) {
    free(frame);
    free(w);
    mark_write_error(c, rc);
    return rc;
  }
  /* Beyond the frame just queued: a release for a large group is itself
   * more than MAX_QUEUED, and a peer that reads is not at fault for it. */
  size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  if (queued > MAX_QUEUED + len) {
    char why[128];
    lwsi_text_printf(why, sizeof(why), "not reading (%zu bytes waiting to be sent)", queued);
    lwsi__rdzv_mark_broken(c, -ENOBUFS, why);
  }
  return 0;
}

int lwsi__rdzv_send_copy(struct lwsi_rdzv_conn *c, const uint8_t *frame, size_t len)
{
  uint8_t *copy = malloc(len);
  if (copy == NULL) {
    lwsi__rdzv_mark_broken(c, -ENOMEM, "out of memory");
    return -ENOMEM;
  }
  memcpy(copy, frame, len);
  return lwsi__rdzv_send_frame(c, copy, len);
}

int lwsi__rdzv_send_msg(struct lwsi_rdzv_conn *c, const struct lwsi_msg *m)
{
  uint8_t *frame;
  size_t len;
  int rc = lwsi_wire_encode(m, &frame, &len);
  if (rc < 0)
    return rc;
  return lwsi__rdzv_send_frame(c, frame, len);
}

int lwsi__rdzv_send_text(struct lwsi_rdzv_conn *c, enum lwsi_msg_type type, const char *reason)
{
  struct lwsi_msg m = {.type = type};
  char *dst = type == LWSI_MSG_FAIL ? m.fail.reason : m.bye.reason;
  lwsi_text_copy(dst, LWSI_WIRE_REASON_MAX, reason);
  return lwsi__rdzv_send_msg(c, &m);
}

int lwsi__rdzv_app_encode(const char *kind, const char *data, uint8_t **frame, size_t *len)
{
  if (!lwsi_wire_kind_ok(kind) || !lwsi_wire_data_ok(data))
    return -EINVAL;
  struct lwsi_msg m = {.type = LWSI_MSG_APP};
  lwsi_text_copy(m.app.kind, sizeof(m.app.kind), kind);
  m.app.data = (char *)data;
  int rc = lwsi_wire_encode(&m, frame, len);
  /* 8 KiB of data, even all escaped, fits a frame many times over. */
  return rc == -EMSGSIZE ? -EINVAL : rc;
}

int lwsi__rdzv_send_app(struct lwsi_rdzv_conn *c, const char *kind, const char *data)
{
  uint8_t *frame;
  size_t len;
  int rc = lwsi__rdzv_app_encode(kind, data, &frame, &len);
  if (rc < 0)
    return rc;
  rc = lwsi__rdzv_send_frame(c, frame, len);
  if (rc == -ENOMEM)
    return rc;
  /* Any other failure broke the connection: the loss is reported. */
  return rc < 0 ? -ENOTCONN : 0;
}

/* ---- heartbeats ---- */

bool lwsi__rdzv_hb_take_turn(struct lwsi_rdzv *r, uint64_t now)
{
  if (now < r->next_hb || r->mute_heartbeats)
    return false;
  r->next_hb = now + r->cfg.heartbeat_ms;
  return true;
}

void lwsi__rdzv_local_state(struct lwsi_rdzv *r, struct lwsi_rdzv_local *l)
{
  memset(l, 0, sizeof(*l));
  if (r->local_cb != NULL)
    r->local_cb(r, l);
  /* The caller's text goes on the wire; keep it to what the decoder takes. */
  l->child[sizeof(l->child) - 1] = '\0';
  for (char *p = l->child; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
      *p = '?';
  /* An engine's error text may hold anything; the decoder takes printable
   * ASCII-safe text only, so anything else becomes '?' here. */
  l->upstream_error[sizeof(l->upstream_error) - 1] = '\0';
  for (char *p = l->upstream_error; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
      *p = '?';
}

void lwsi__rdzv_send_hb(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                        const struct lwsi_rdzv_local *l)
{
  struct lwsi_msg m;
  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_HB;
  m.hb.seq = ++r->hb_seq;
  uint64_t us = now_us();
  m.hb.ts = us;
  if (c->have_peer_ts) {
    m.hb.has_echo = true;
    m.hb.echo = c->peer_ts;
    m.hb.held = us - c->peer_ts_at;
  }
  lwsi_text_copy(m.hb.child, sizeof(m.hb.child), l->child);
  m.hb.upstream = l->upstream;
  m.hb.has_health = l->has_health;
  m.hb.upstream_on = l->upstream_on;
  m.hb.upstream_age = l->upstream_age_ms;
  lwsi_text_copy(m.hb.upstream_error, sizeof(m.hb.upstream_error), l->upstream_error);
  m.hb.stopping = l->stopping;
  lwsi__rdzv_send_msg(c, &m);
}

void lwsi__rdzv_take_hb(struct lwsi_rdzv_conn *c, struct lwsi_rdzv_slot *s,
                        const struct lwsi_msg_hb *hb)
{
  uint64_t us = now_us();
  c->have_peer_ts = true;
  c->peer_ts = hb->ts;
  c->peer_ts_at = us;
  s->has_state = true;
  lwsi_text_copy(s->child, sizeof(s->child), hb->child);
  s->upstream = hb->upstream;
  s->has_health = hb->has_health;
  s->upstream_on = hb->upstream_on;
  s->upstream_age_ms = hb->upstream_age;
  s->health_at = uv_now(c->r->loop);
  lwsi_text_copy(s->upstream_error, sizeof(s->upstream_error), hb->upstream_error);
  s->stopping = hb->stopping;
  /* The echo is our own clock coming back; held is the time it sat at the
   * peer, so the difference is the network's round trip only. */
  if (hb->has_echo && hb->echo <= us && hb->held <= us - hb->echo)
    s->rtt_us = (int64_t)(us - hb->echo - hb->held);
}

/* ---- reading ---- */

/* rbuf is shared, since every read is handled at once. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct lwsi_rdzv_conn *c = h->data;
  struct lwsi_rdzv *r = c->r;
  if (r->rbuf == NULL) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init((char *)r->rbuf, LWSI_WIRE_HDR_LEN + LWSI_WIRE_MAX_PAYLOAD);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct lwsi_rdzv_conn *c = s->data;
  struct lwsi_rdzv *r = c->r;
  if (c->state == C_CLOSING || lwsi__rdzv_quiet(r))
    return;
  if (nread == 0)
    return; /* EAGAIN */
  if (nread < 0) {
    r->ops->eof(r, c, nread);
    return;
  }
  const uint8_t *data = (const uint8_t *)buf->base;
  size_t len = (size_t)nread;
  for (;;) {
    const uint8_t *frame;
    size_t flen;
    int rc = lwsi_wire_split(&c->rd, &data, &len, &frame, &flen);
    if (rc == 0)
      return;
    if (rc < 0) {
      r->ops->garbage(r, c, rc);
      return;
    }
    r->ops->frame(r, c, frame, flen);
    /* The handler may have closed the connection or the whole module (from
     * the caller's callback); buf is then no longer ours to read. */
    if (c->state == C_CLOSING || lwsi__rdzv_quiet(r))
      return;
  }
}

int lwsi__rdzv_conn_read(struct lwsi_rdzv_conn *c)
{
  /* The frames are small and latency is what we measure: no Nagle. */
  int rc = uv_tcp_nodelay(&c->tcp, 1);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  return rc;
}

/* ---- timers ---- */

/* The tick runs when something is due (a handshake or connect deadline,
 * a member's silence limit, the next heartbeat), not on a fixed period: a
 * waiting agent then wakes about once a heartbeat instead of ten times,
 * which on a node that holds many members (a benchmark, a test) is CPU the
 * members' launches need. Never more often than tick_gap, so that members
 * whose limits fall apart do not wake the leader once each; never later
 * than a heartbeat, so that a deadline set where nobody armed the tick is
 * still seen. Every place that sets an earlier deadline calls
 * lwsi__rdzv_tick_arm. */
static void on_timer(uv_timer_t *t);

void lwsi__rdzv_tick_arm(struct lwsi_rdzv *r, uint64_t due)
{
  if (!r->tick_open || lwsi__rdzv_quiet(r))
    return;
  if (uv_is_active((uv_handle_t *)&r->tick) && r->tick_at <= due)
    return;
  uint64_t now = uv_now(r->loop);
  r->tick_at = due > now ? due : now;
  uv_timer_start(&r->tick, on_timer, r->tick_at - now, 0);
}

/* When the tick has work next: a heartbeat at the latest, or the role's
 * earlier deadline, but not before tick_gap has passed. */
static uint64_t tick_next(struct lwsi_rdzv *r)
{
  uint64_t due = r->ops->next_due(r, uv_now(r->loop) + r->cfg.heartbeat_ms);
  uint64_t earliest = r->last_tick + r->tick_gap;
  return due > earliest ? due : earliest;
}

/* Deadlines are judged after the loop has read what already arrived.
 * libuv runs timers before it polls: after a long iteration (a starved
 * CPU, a burst of joins) a timer would otherwise see a join or heartbeat
 * as missing while it sits unread in the socket buffer. So the timers only
 * mark the work due, and this check handle, which runs right after the
 * poll phase of the same iteration, does it. The idle handle, active
 * meanwhile, makes that poll collect what is ready without waiting. */
static void on_check(uv_check_t *h);
static void on_idle(uv_idle_t *h) {}

void lwsi__rdzv_mark_due(struct lwsi_rdzv *r)
{
  uv_idle_start(&r->idle, on_idle);
  uv_check_start(&r->check, on_check);
}

static void on_check(uv_check_t *h)
{
  struct lwsi_rdzv *r = h->data;
  uv_check_stop(h);
  uv_idle_stop(&r->idle);
  if (lwsi__rdzv_quiet(r))
    return;
  /* The role's first: a group that completed in the same iteration as the
   * deadline fired did form in time. */
  if (r->ops->settle != NULL) {
    r->ops->settle(r);
    if (lwsi__rdzv_quiet(r))
      return;
  }
  if (r->deadline_due) {
    r->deadline_due = false;
    r->ops->deadline(r);
    if (lwsi__rdzv_quiet(r))
      return;
  }
  if (r->tick_due) {
    r->tick_due = false;
    r->last_tick = uv_now(r->loop);
    r->ticks++;
    r->ops->tick(r);
    if (lwsi__rdzv_quiet(r))
      return;
    lwsi__rdzv_tick_arm(r, tick_next(r));
  }
}

/* The tick and the deadline timer: each marks its work due. */
static void on_timer(uv_timer_t *t)
{
  struct lwsi_rdzv *r = t->data;
  if (lwsi__rdzv_quiet(r))
    return;
  if (t == &r->tick)
    r->tick_due = true;
  else
    r->deadline_due = true;
  lwsi__rdzv_mark_due(r);
}

static void on_defer(uv_timer_t *t)
{
  struct lwsi_rdzv *r = t->data;
  if (lwsi__rdzv_quiet(r))
    return;
  r->ops->defer(r);
}

void lwsi__rdzv_schedule_defer(struct lwsi_rdzv *r)
{
  if (r->defer_open && !lwsi__rdzv_quiet(r))
    uv_timer_start(&r->defer, on_defer, 0, 0);
}

void lwsi__rdzv_schedule_defer_in(struct lwsi_rdzv *r, uint64_t delay)
{
  if (r->defer_open && !lwsi__rdzv_quiet(r) && !uv_is_active((uv_handle_t *)&r->defer))
    uv_timer_start(&r->defer, on_defer, delay, 0);
}

/* ---- handles ---- */

int lwsi__rdzv_timer_open(struct lwsi_rdzv *r, uv_timer_t *t, bool *open)
{
  int rc = uv_timer_init(r->loop, t);
  if (rc < 0)
    return rc;
  t->data = r;
  *open = true;
  return 0;
}

int lwsi__rdzv_timers_open(struct lwsi_rdzv *r)
{
  int rc;
  if ((rc = lwsi__rdzv_timer_open(r, &r->tick, &r->tick_open)) < 0 ||
      (rc = lwsi__rdzv_timer_open(r, &r->deadline, &r->deadline_open)) < 0 ||
      (rc = lwsi__rdzv_timer_open(r, &r->defer, &r->defer_open)) < 0)
    return rc;
  if ((rc = uv_check_init(r->loop, &r->check)) < 0)
    return rc;
  r->check.data = r;
  r->check_open = true;
  if ((rc = uv_idle_init(r->loop, &r->idle)) < 0)
    return rc;
  r->idle.data = r;
  r->idle_open = true;
  return 0;
}

int lwsi__rdzv_timers_start(struct lwsi_rdzv *r)
{
  const struct lwsi_rdzv_config *c = &r->cfg;
  /* Ticks may come this close together (lwsi__rdzv_tick_arm): fine-grained
   * enough for the handshake deadlines and for "lost within peer-timeout
   * plus one heartbeat". */
  uint64_t gap = c->heartbeat_ms < 100 ? c->heartbeat_ms : 100;
  if (c->handshake_timeout_ms / 4 < gap)
    gap = c->handshake_timeout_ms / 4;
  if (gap < 5)
    gap = 5;
  r->tick_gap = gap;
  r->state = LWSI_RDZV_JOINING;
  r->next_hb = uv_now(r->loop);
  r->last_tick = r->next_hb;
  r->tick_at = r->next_hb + gap;
  int rc;
  if ((rc = uv_timer_start(&r->tick, on_timer, gap, 0)) < 0)
    return rc;
  if (c->rdzv_timeout_ms > 0 &&
      (rc = uv_timer_start(&r->deadline, on_timer, c->rdzv_timeout_ms, 0)) < 0)
    return rc;
  return 0;
}

void lwsi__rdzv_timers_stop(struct lwsi_rdzv *r)
{
  if (r->tick_open)
    uv_timer_stop(&r->tick);
  if (r->check_open)
    uv_check_stop(&r->check);
  if (r->idle_open)
    uv_idle_stop(&r->idle);
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
}

static void on_handle_closed(uv_handle_t *h)
{
  struct lwsi_rdzv *r = h->data;
  r->closing--;
}

void lwsi__rdzv_close_handle(struct lwsi_rdzv *r, uv_handle_t *h, bool open)
{
  if (open && !uv_is_closing(h)) {
    r->closing++;
    uv_close(h, on_handle_closed);
  }
}

void lwsi__rdzv_timers_close(struct lwsi_rdzv *r)
{
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->tick, r->tick_open);
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->deadline, r->deadline_open);
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->defer, r->defer_open);
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->check, r->check_open);
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->idle, r->idle_open);
}
