#include "lwsinit/rdzv.h"

#include "lwsinit/crypto.h"

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
/* After a refusal the leader waits this long for the worker to read the
 * reason and close, so that the reason is not lost to a reset. */
#define DRAIN_MS 1000
/* A whole group may connect at once; listen(2) caps this at somaxconn. */
#define LISTEN_BACKLOG 4096
#define TOKEN_MAX 4096

enum conn_state {
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
  enum conn_state state;
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
  uint8_t digest[LWSI_WIRE_DIGEST_LEN];
  uint32_t gpus;
  uint64_t last_rx;
  bool watched; /* last_rx is meaningful here */
  int64_t rtt_us;
  bool has_state;
  char child[LWSI_WIRE_CHILD_MAX];
  bool upstream;
};

/* The leader's latest app broadcast of one kind, as sent. */
struct lwsi_rdzv_kept {
  char kind[LWSI_WIRE_KIND_MAX]; /* "" for a free entry */
  uint8_t *frame;
  size_t len;
};

struct wreq {
  uv_write_t req;
  struct lwsi_rdzv_conn *c;
  uint8_t *frame;
};

static const char *const ev_names[] = {
    [LWSI_RDZV_EV_RETRYING] = "retrying", [LWSI_RDZV_EV_JOINED] = "joined",
    [LWSI_RDZV_EV_WAITING] = "waiting",   [LWSI_RDZV_EV_REFUSED] = "refused",
    [LWSI_RDZV_EV_DROPPED] = "dropped",   [LWSI_RDZV_EV_DEPARTED] = "departed",
    [LWSI_RDZV_EV_RELEASED] = "released", [LWSI_RDZV_EV_FAILED] = "failed",
    [LWSI_RDZV_EV_TIMEOUT] = "timeout",   [LWSI_RDZV_EV_LOST] = "lost",
    [LWSI_RDZV_EV_APP] = "app",
};

static const char *const state_names[] = {
    [LWSI_RDZV_IDLE] = "idle",         [LWSI_RDZV_JOINING] = "joining",
    [LWSI_RDZV_RELEASED] = "released", [LWSI_RDZV_FAILED] = "failed",
    [LWSI_RDZV_LEFT] = "left",         [LWSI_RDZV_CLOSED] = "closed",
};

const char *lwsi_rdzv_event_name(enum lwsi_rdzv_ev type)
{
  return (unsigned)type < sizeof(ev_names) / sizeof(ev_names[0]) ? ev_names[type] : "?";
}

const char *lwsi_rdzv_state_name(enum lwsi_rdzv_state state)
{
  return (unsigned)state < sizeof(state_names) / sizeof(state_names[0]) ? state_names[state] : "?";
}

/* ---- small helpers ---- */

static void close_handle(struct lwsi_rdzv *r, uv_handle_t *h, bool open);
static void mark_due(struct lwsi_rdzv *r);

/* snprintf through a wrapper: every text here is a bounded, best-effort
 * line, and truncation is the intended behaviour, not a bug to warn on. */
static void textf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void textf(char *buf, size_t len, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, len, fmt, ap);
  va_end(ap);
  if (n < 0 && len > 0)
    buf[0] = '\0';
}

/* "900 s", or "600 ms" for what is not whole seconds (tests, mostly). */
static void duration(char *buf, size_t len, uint64_t ms)
{
  if (ms % 1000 == 0)
    textf(buf, len, "%llu s", (unsigned long long)(ms / 1000));
  else
    textf(buf, len, "%llu ms", (unsigned long long)ms);
}

static void copy_text(char *dst, size_t size, const char *src)
{
  textf(dst, size, "%s", src != NULL ? src : "");
}

static int random_bytes(void *buf, size_t len)
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

/* xorshift64*: only for jitter, so that workers restarted together do not
 * knock on the leader's door in lockstep. */
static uint64_t rng_next(struct lwsi_rdzv *r)
{
  r->rng ^= r->rng >> 12;
  r->rng ^= r->rng << 25;
  r->rng ^= r->rng >> 27;
  return r->rng * 2685821657736338717ull;
}

static void sa_ip(const struct sockaddr_storage *ss, char *out, size_t len)
{
  char buf[LWSI_WIRE_ADDR_MAX] = "";
  if (uv_ip_name((const struct sockaddr *)ss, buf, sizeof(buf)) < 0)
    copy_text(buf, sizeof(buf), "?");
  /* A v4 peer of a dual-stack listener shows as ::ffff:a.b.c.d. */
  const char *p = buf;
  if (strncmp(p, "::ffff:", 7) == 0 && strchr(p + 7, '.') != NULL)
    p += 7;
  copy_text(out, len, p);
}

static int parse_ip(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
  memset(ss, 0, sizeof(*ss));
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return -EINVAL;
}

/* "rank 2", "ranks 2, 3", "ranks 2, 3, ... (40 in all)". */
static void format_ranks(char *buf, size_t len, const uint32_t *ranks, uint32_t n, uint32_t total)
{
  size_t o = 0;
  buf[0] = '\0';
  if (total == 0)
    return;
  textf(buf, len, "%s", total == 1 ? "rank " : "ranks ");
  o = strlen(buf);
  uint32_t shown = 0;
  for (uint32_t i = 0; i < n; i++) {
    char one[16];
    textf(one, sizeof(one), "%s%u", i ? ", " : "", ranks[i]);
    /* Keep room for the ", ... (N in all)" tail. */
    if (o + strlen(one) + 32 >= len)
      break;
    memcpy(buf + o, one, strlen(one) + 1);
    o += strlen(one);
    shown++;
  }
  if (shown < total)
    textf(buf + o, len - o, ", ... (%u in all)", total);
}

/* ---- events ---- */

static bool quiet(const struct lwsi_rdzv *r)
{
  return r->state == LWSI_RDZV_CLOSED || r->state == LWSI_RDZV_LEFT;
}

/* Reports an event. Returns false when the callback closed or left the
 * rendezvous: the caller must then stop touching it. */
static bool emit(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, int64_t rank, const char *addr,
                 const char *pod, int err, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static bool emit(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, int64_t rank, const char *addr,
                 const char *pod, int err, const char *fmt, ...)
{
  if (quiet(r))
    return false;
  char reason[LWSI_WIRE_REASON_MAX + 256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);
  if (n < 0)
    reason[0] = '\0';
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
  if (r->cb != NULL)
    r->cb(r, &ev);
  return !quiet(r);
}

/* Reports an application message from rank (0: the leader). */
static bool emit_app(struct lwsi_rdzv *r, uint32_t rank, const char *addr, const char *pod,
                     const struct lwsi_msg_app *m)
{
  if (quiet(r))
    return false;
  char reason[128];
  textf(reason, sizeof(reason), "'%s' from rank %u (%zu bytes)", m->kind, rank, strlen(m->data));
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
  if (r->cb != NULL)
    r->cb(r, &ev);
  return !quiet(r);
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

static void pending_remove(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  if (!c->in_pending)
    return;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    r->pending = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->in_pending = false;
  r->npending--;
}

static void pending_add(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  c->prev = NULL;
  c->next = r->pending;
  if (r->pending != NULL)
    r->pending->prev = c;
  r->pending = c;
  c->in_pending = true;
  r->npending++;
}

/* Detaches c from everything that points at it and closes it; the memory
 * goes in the close callback, so c stays readable until we return to the
 * loop. Pending writes are cancelled (their callbacks free the frames). */
static void conn_close(struct lwsi_rdzv_conn *c)
{
  struct lwsi_rdzv *r = c->r;
  if (c->state == C_CLOSING)
    return;
  c->state = C_CLOSING;
  pending_remove(r, c);
  if (r->slots != NULL && c->rank < r->cfg.size && r->slots[c->rank].conn == c)
    r->slots[c->rank].conn = NULL;
  if (r->conn == c)
    r->conn = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static struct lwsi_rdzv_conn *conn_new(struct lwsi_rdzv *r)
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

static void on_defer(uv_timer_t *t);

static void schedule_defer(struct lwsi_rdzv *r)
{
  if (r->defer_open && !quiet(r))
    uv_timer_start(&r->defer, on_defer, 0, 0);
}

/* A write failed or the peer stopped reading. We are possibly in the
 * middle of a broadcast, so the loss is handled on the defer timer rather
 * than here, where it could recurse into another broadcast. */
static void mark_broken(struct lwsi_rdzv_conn *c, int err, const char *why)
{
  if (c->broken || c->state == C_CLOSING)
    return;
  c->broken = true;
  c->broken_err = err;
  copy_text(c->broken_why, sizeof(c->broken_why), why);
  schedule_defer(c->r);
}

static void on_write(uv_write_t *req, int status)
{
  struct wreq *w = (struct wreq *)req;
  struct lwsi_rdzv_conn *c = w->c;
  free(w->frame);
  free(w);
  if (status < 0 && status != UV_ECANCELED) {
    char why[128];
    textf(why, sizeof(why), "connection error: %s", uv_strerror(status));
    mark_broken(c, status, why);
  }
}

/* The tick runs when something is due (a handshake or connect deadline,
 * a member's silence limit, the next heartbeat), not on a fixed period: a
 * waiting agent then wakes about once a heartbeat instead of ten times,
 * which on a node that holds many members (a benchmark, a test) is CPU the
 * members' launches need (issue 3). Never more often than tick_gap, so
 * that members whose limits fall apart do not wake the leader once each;
 * never later than a heartbeat, so that a deadline set where nobody armed
 * the tick is still seen. Every place that sets an earlier deadline calls
 * tick_arm. */
static void on_tick(uv_timer_t *t);

static void tick_arm(struct lwsi_rdzv *r, uint64_t due)
{
  if (!r->tick_open || quiet(r))
    return;
  if (uv_is_active((uv_handle_t *)&r->tick) && r->tick_at <= due)
    return;
  uint64_t now = uv_now(r->loop);
  r->tick_at = due > now ? due : now;
  uv_timer_start(&r->tick, on_tick, r->tick_at - now, 0);
}

static uint64_t min_due(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* When the tick has work next, from the deadlines leader_tick and
 * worker_tick check. */
static uint64_t tick_next(struct lwsi_rdzv *r)
{
  uint64_t now = uv_now(r->loop);
  uint64_t due = now + r->cfg.heartbeat_ms;
  uint64_t silence = r->cfg.peer_timeout_ms + 1;
  /* Heartbeats go out only where leader_tick and worker_tick send them. */
  bool beats = r->leader ? (r->state == LWSI_RDZV_JOINING || r->state == LWSI_RDZV_RELEASED)
                         : (r->conn != NULL && r->conn->state == C_MEMBER);
  if (beats && !r->mute_heartbeats)
    due = min_due(due, r->next_hb);
  if (r->leader) {
    if (r->accept_stuck)
      due = min_due(due, now + r->tick_gap);
    for (struct lwsi_rdzv_conn *c = r->pending; c != NULL; c = c->next)
      due = min_due(due, c->deadline);
    for (uint32_t i = 1; beats && i < r->cfg.size; i++) {
      struct lwsi_rdzv_conn *c = r->slots[i].conn;
      if (c != NULL && c->state == C_MEMBER)
        due = min_due(due, c->last_rx + silence);
    }
  } else if (r->conn != NULL && r->conn->state != C_CLOSING) {
    struct lwsi_rdzv_conn *c = r->conn;
    due = min_due(due, c->state == C_MEMBER ? c->last_rx + silence : c->deadline);
  }
  uint64_t earliest = r->last_tick + r->tick_gap;
  return due > earliest ? due : earliest;
}

/* Queues one frame (taking ownership of it). */
static int send_frame(struct lwsi_rdzv_conn *c, uint8_t *frame, size_t len)
{
  if (c->state == C_CLOSING || c->broken) {
    free(frame);
    return -EPIPE;
  }
  struct wreq *w = malloc(sizeof(*w));
  if (w == NULL) {
    free(frame);
    mark_broken(c, -ENOMEM, "out of memory");
    return -ENOMEM;
  }
  w->c = c;
  w->frame = frame;
  uv_buf_t buf = uv_buf_init((char *)frame, (unsigned)len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
  if (rc < 0) {
    free(frame);
    free(w);
    char why[128];
    textf(why, sizeof(why), "connection error: %s", uv_strerror(rc));
    mark_broken(c, rc, why);
    return rc;
  }
  /* Beyond the frame just queued: a release for a large group is itself
   * more than MAX_QUEUED, and a peer that reads is not at fault for it. */
  size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  if (queued > MAX_QUEUED + len) {
    char why[128];
    textf(why, sizeof(why), "not reading (%zu bytes waiting to be sent)", queued);
    mark_broken(c, -ENOBUFS, why);
  }
  return 0;
}

static int send_msg(struct lwsi_rdzv_conn *c, const struct lwsi_msg *m)
{
  uint8_t *frame;
  size_t len;
  int rc = lwsi_wire_encode(m, &frame, &len);
  if (rc < 0)
    return rc;
  return send_frame(c, frame, len);
}

static int send_text(struct lwsi_rdzv_conn *c, enum lwsi_msg_type type, const char *reason)
{
  struct lwsi_msg m = {.type = type};
  char *dst = type == LWSI_MSG_FAIL ? m.fail.reason : m.bye.reason;
  copy_text(dst, LWSI_WIRE_REASON_MAX, reason);
  return send_msg(c, &m);
}

static void fill_hb(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const struct lwsi_rdzv_local *l,
                    struct lwsi_msg *m)
{
  memset(m, 0, sizeof(*m));
  m->type = LWSI_MSG_HB;
  m->hb.seq = ++r->hb_seq;
  uint64_t us = now_us();
  m->hb.ts = us;
  if (c->have_peer_ts) {
    m->hb.has_echo = true;
    m->hb.echo = c->peer_ts;
    m->hb.held = us - c->peer_ts_at;
  }
  copy_text(m->hb.child, sizeof(m->hb.child), l->child);
  m->hb.upstream = l->upstream;
}

static void local_state(struct lwsi_rdzv *r, struct lwsi_rdzv_local *l)
{
  memset(l, 0, sizeof(*l));
  if (r->local_cb != NULL)
    r->local_cb(r, l);
  /* The caller's text goes on the wire; keep it to what the decoder takes. */
  l->child[sizeof(l->child) - 1] = '\0';
  for (char *p = l->child; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
      *p = '?';
}

/* A heartbeat from the peer: liveness, its state, and our RTT from its echo. */
static void take_hb(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, struct lwsi_rdzv_slot *s,
                    const struct lwsi_msg_hb *hb)
{
  uint64_t us = now_us();
  c->have_peer_ts = true;
  c->peer_ts = hb->ts;
  c->peer_ts_at = us;
  s->has_state = true;
  copy_text(s->child, sizeof(s->child), hb->child);
  s->upstream = hb->upstream;
  /* The echo is our own clock coming back; held is the time it sat at the
   * peer, so the difference is the network's round trip only. */
  if (hb->has_echo && hb->echo <= us && hb->held <= us - hb->echo)
    s->rtt_us = (int64_t)(us - hb->echo - hb->held);
}

/* Starts reading; rbuf is shared, since every read is handled at once. */
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

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static int conn_start_reading(struct lwsi_rdzv_conn *c)
{
  /* The frames are small and latency is what we measure: no Nagle. */
  int rc = uv_tcp_nodelay(&c->tcp, 1);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  return rc;
}

/* ---- the member table ---- */

static void slot_reset(struct lwsi_rdzv_slot *s)
{
  memset(s, 0, sizeof(*s));
  s->rtt_us = -1;
}

static uint32_t collect_missing(struct lwsi_rdzv *r, uint32_t *out, uint32_t max)
{
  uint32_t n = 0, total = 0;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    if (r->slots[i].joined)
      continue;
    if (n < max)
      out[n++] = i;
    total++;
  }
  return total;
}

/* Refreshes the leader's own "ranks 2, 3" text from the table. */
static void update_missing(struct lwsi_rdzv *r)
{
  uint32_t list[64];
  uint32_t total = collect_missing(r, list, 64);
  format_ranks(r->missing, sizeof(r->missing), list, total < 64 ? total : 64, total);
  r->nmissing = total;
}

/* ---- the leader ---- */

static void leader_send_all(struct lwsi_rdzv *r, const struct lwsi_msg *m)
{
  uint8_t *frame;
  size_t len;
  if (lwsi_wire_encode(m, &frame, &len) < 0)
    return;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    struct lwsi_rdzv_conn *c = r->slots[i].conn;
    if (c == NULL || c->state != C_MEMBER)
      continue;
    uint8_t *copy = malloc(len);
    if (copy == NULL) {
      mark_broken(c, -ENOMEM, "out of memory");
      continue;
    }
    memcpy(copy, frame, len);
    send_frame(c, copy, len);
  }
  free(frame);
}

/* The waiting list goes to every joined worker, so one per join would be
 * O(size^2) frames while a large group forms (docs/design.md, scaling):
 * it goes out at most every LWSI_RDZV_WAITING_MS, with the latest list. It
 * only informs (workers show it), so its lag costs nothing. */
#define LWSI_RDZV_WAITING_MS 200

static void leader_broadcast_waiting(struct lwsi_rdzv *r)
{
  if (r->state != LWSI_RDZV_JOINING) {
    r->notify_waiting = false;
    return;
  }
  uint64_t now = uv_now(r->loop);
  if (r->waiting_sent && now - r->waiting_at < LWSI_RDZV_WAITING_MS) {
    /* Still due: the defer timer brings us back when the interval ends
     * (an earlier schedule_defer only makes us check sooner). */
    if (r->defer_open && !quiet(r) && !uv_is_active((uv_handle_t *)&r->defer))
      uv_timer_start(&r->defer, on_defer, LWSI_RDZV_WAITING_MS - (now - r->waiting_at), 0);
    return;
  }
  r->notify_waiting = false;
  r->waiting_sent = true;
  r->waiting_at = now;
  uint32_t list[LWSI_WIRE_MAX_LISTED];
  struct lwsi_msg m = {.type = LWSI_MSG_WAITING};
  m.waiting.nmissing = collect_missing(r, list, LWSI_WIRE_MAX_LISTED);
  m.waiting.nlisted =
      m.waiting.nmissing < LWSI_WIRE_MAX_LISTED ? m.waiting.nmissing : LWSI_WIRE_MAX_LISTED;
  m.waiting.missing = list;
  m.waiting.joined = r->njoined + 1;
  leader_send_all(r, &m);
}

/* Ends the rendezvous before release: every joined worker hears why
 * (sent); our own caller gets local, or the same text when NULL. */
static void leader_fail(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, const char *sent,
                        const char *local)
{
  r->state = LWSI_RDZV_FAILED;
  copy_text(r->last_error, sizeof(r->last_error), sent);
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  struct lwsi_msg m = {.type = LWSI_MSG_FAIL};
  copy_text(m.fail.reason, sizeof(m.fail.reason), sent);
  leader_send_all(r, &m);
  emit(r, type, -1, "", "", 0, "%s", local != NULL ? local : sent);
}

/* The checks that need the whole group: every member must launch the same
 * command on the same number of GPUs as the leader, or the engines would
 * fail later in a way that is much harder to read. */
static bool leader_check_group(struct lwsi_rdzv *r, char *why, size_t len)
{
  uint32_t cmd[64], gpu[64], ncmd = 0, ngpu = 0;
  char gpus_text[256] = "";
  size_t go = 0;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    const struct lwsi_rdzv_slot *s = &r->slots[i];
    if (!lwsi_crypto_equal(s->digest, r->cfg.cmd_digest, LWSI_WIRE_DIGEST_LEN)) {
      if (ncmd < 64)
        cmd[ncmd] = i;
      ncmd++;
    }
    if (s->gpus != r->cfg.gpus) {
      if (ngpu < 64)
        gpu[ngpu] = i;
      if (ngpu < 8 && go + 24 < sizeof(gpus_text)) {
        textf(gpus_text + go, sizeof(gpus_text) - go, "%srank %u has %u", ngpu ? ", " : "", i,
              s->gpus);
        go = strlen(gpus_text);
      }
      ngpu++;
    }
  }
  if (ncmd == 0 && ngpu == 0)
    return true;
  char a[200] = "", b[200] = "";
  if (ncmd > 0)
    format_ranks(a, sizeof(a), cmd, ncmd < 64 ? ncmd : 64, ncmd);
  if (ngpu > 0)
    format_ranks(b, sizeof(b), gpu, ngpu < 64 ? ngpu : 64, ngpu);
  if (ncmd > 0 && ngpu > 0)
    textf(why, len,
          "the launch command differs from the leader's on %s, and the GPU count differs "
          "from the leader's %u on %s (%s%s)",
          a, r->cfg.gpus, b, gpus_text, ngpu > 8 ? ", ..." : "");
  else if (ncmd > 0)
    textf(why, len,
          "the launch command differs from the leader's on %s; every member "
          "must run the same COMMAND and options",
          a);
  else
    textf(why, len, "the GPU count differs from the leader's %u on %s (%s%s)", r->cfg.gpus, b,
          gpus_text, ngpu > 8 ? ", ..." : "");
  return false;
}

/* The release frame: the member table as it stands, by rank. */
static int leader_release_frame(struct lwsi_rdzv *r, uint8_t **frame, size_t *len)
{
  uint32_t n = r->cfg.size;
  struct lwsi_wire_member *mb = calloc(n, sizeof(*mb));
  if (mb == NULL)
    return -ENOMEM;
  for (uint32_t i = 0; i < n; i++) {
    mb[i].rank = i;
    copy_text(mb[i].addr, sizeof(mb[i].addr), i == 0 ? r->leader_addr : r->slots[i].addr);
    copy_text(mb[i].pod, sizeof(mb[i].pod), i == 0 ? r->pod : r->slots[i].pod);
  }
  struct lwsi_msg m = {.type = LWSI_MSG_RELEASE};
  m.release.size = n;
  m.release.members = mb;
  m.release.nmembers = n;
  int rc = lwsi_wire_encode(&m, frame, len);
  free(mb);
  return rc;
}

static void leader_release(struct lwsi_rdzv *r)
{
  uint32_t n = r->cfg.size;
  char why[LWSI_WIRE_REASON_MAX];
  if (!leader_check_group(r, why, sizeof(why))) {
    leader_fail(r, LWSI_RDZV_EV_FAILED, why, NULL);
    return;
  }
  uint8_t *frame = NULL;
  size_t len = 0;
  int rc = n > 1 ? leader_release_frame(r, &frame, &len) : 0;
  if (rc < 0) {
    char e[LWSI_WIRE_REASON_MAX];
    textf(e, sizeof(e), "cannot send the member table of %u members: %s", n,
          rc == -EMSGSIZE ? "it does not fit in one frame" : strerror(-rc));
    leader_fail(r, LWSI_RDZV_EV_FAILED, e, NULL);
    return;
  }
  r->state = LWSI_RDZV_RELEASED;
  r->missing[0] = '\0';
  r->nmissing = 0;
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  /* One frame for all, written back to back: everyone is released at once. */
  for (uint32_t i = 1; i < n; i++) {
    struct lwsi_rdzv_conn *c = r->slots[i].conn;
    if (c == NULL)
      continue;
    uint8_t *copy = malloc(len);
    if (copy == NULL) {
      mark_broken(c, -ENOMEM, "out of memory");
      continue;
    }
    memcpy(copy, frame, len);
    send_frame(c, copy, len);
  }
  free(frame);
  emit(r, LWSI_RDZV_EV_RELEASED, -1, "", "", 0, "all %u members joined; the group is released", n);
}

static void leader_maybe_release(struct lwsi_rdzv *r)
{
  if (r->state == LWSI_RDZV_JOINING && r->njoined == r->cfg.size - 1)
    leader_release(r);
}

/* A joined worker's connection ended (closed, silent, bye, protocol error).
 * Before release its rank is free again; after, it is a lost member. */
static void leader_member_gone(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *why)
{
  uint32_t rank = c->rank;
  struct lwsi_rdzv_slot *s = &r->slots[rank];
  char addr[LWSI_WIRE_ADDR_MAX];
  copy_text(addr, sizeof(addr), c->addr);
  conn_close(c);
  if (r->state == LWSI_RDZV_JOINING) {
    slot_reset(s);
    r->njoined--;
    update_missing(r);
    r->notify_waiting = true;
    schedule_defer(r);
    emit(r, LWSI_RDZV_EV_DEPARTED, rank, addr, "", 0, "%s", why);
  } else if (r->state == LWSI_RDZV_RELEASED) {
    if (!s->alive)
      return;
    s->alive = false;
    struct lwsi_msg m = {.type = LWSI_MSG_LOST};
    m.lost.rank = rank;
    copy_text(m.lost.reason, sizeof(m.lost.reason), why);
    leader_send_all(r, &m);
    emit(r, LWSI_RDZV_EV_LOST, rank, addr, "", 0, "%s", why);
  }
}

/* Refuses a join: the worker gets the reason, we wait for it to close. */
/* j: the worker's join, when the refusal answers one. With it and a token
 * the refusal carries the leader's proof, without which a worker that
 * holds a token does not believe it (worker_unproven). */
static bool leader_refuse(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                          const struct lwsi_msg_join *j, int64_t rank, const char *code,
                          const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static bool leader_refuse(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                          const struct lwsi_msg_join *j, int64_t rank, const char *code,
                          const char *fmt, ...)
{
  struct lwsi_msg m = {.type = LWSI_MSG_REFUSE};
  copy_text(m.refuse.code, sizeof(m.refuse.code), code);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(m.refuse.reason, sizeof(m.refuse.reason), fmt, ap);
  va_end(ap);
  if (n < 0)
    m.refuse.reason[0] = '\0';
  /* Signed only for a join whose own proof held (the callers pass NULL
   * before that): a refusal signed for an unproven join would let a relay
   * on the leader's address strip a real worker's proof and have us sign
   * the worker's end. A worker with another token, or none, cannot check a
   * signature anyway; it keeps trying, since it cannot tell us from an
   * impostor either. */
  if (r->token != NULL && j != NULL)
    m.refuse.auth = lwsi_wire_refuse_mac(r->token, r->cfg.token_len, &c->hello, j, &m.refuse,
                                         m.refuse.mac) == 0;
  send_msg(c, &m);
  c->state = C_DRAINING;
  c->deadline = uv_now(r->loop) + DRAIN_MS;
  tick_arm(r, c->deadline);
  /* FIN after the refusal, so the worker reads the reason before the end. */
  if (!c->broken && uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, NULL) < 0)
    conn_close(c);
  return emit(r, LWSI_RDZV_EV_REFUSED, rank, c->addr, "", 0, "%s", m.refuse.reason);
}

static void leader_send_welcome(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                                const struct lwsi_msg_join *j)
{
  struct lwsi_msg m = {.type = LWSI_MSG_WELCOME};
  m.welcome.rank = j->rank;
  if (r->token != NULL) {
    m.welcome.auth = true;
    if (lwsi_wire_welcome_mac(r->token, r->cfg.token_len, &c->hello, j, m.welcome.proof) < 0)
      mark_broken(c, -EIO, "cannot compute the leader's proof");
  }
  send_msg(c, &m);
  explicit_bzero(&m, sizeof(m));
}

/* Makes c the connection of the member in slot j->rank. */
static void leader_seat(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                        const struct lwsi_msg_join *j)
{
  struct lwsi_rdzv_slot *s = &r->slots[j->rank];
  pending_remove(r, c);
  c->state = C_MEMBER;
  c->rank = j->rank;
  c->last_rx = uv_now(r->loop);
  s->conn = c;
  s->last_rx = c->last_rx;
  s->watched = true;
  tick_arm(r, c->last_rx + r->cfg.peer_timeout_ms + 1);
  copy_text(s->addr, sizeof(s->addr), c->addr);
}

/* After release, the same incarnation joins again: it gave up on its
 * connection (a handshake timeout on a starved node) just as we released
 * the group with it, so it never saw the release and launched nothing. It
 * is the member we released: it gets its connection back, and the release.
 * Anyone else, or a member already reported lost, is refused. */
static void leader_rejoin(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                          const struct lwsi_msg_join *j)
{
  struct lwsi_rdzv_slot *s = &r->slots[j->rank];
  conn_close(s->conn); /* quietly: the member is not lost, it moved */
  leader_seat(r, c, j);
  s->has_state = false;
  s->rtt_us = -1;
  leader_send_welcome(r, c, j);
  uint8_t *frame;
  size_t len;
  int rc = leader_release_frame(r, &frame, &len);
  if (rc < 0)
    mark_broken(c, rc, "cannot send the member table again");
  else
    send_frame(c, frame, len);
  /* It missed what was broadcast on its old connection: the latest of each
   * kind again, after the release, in the order they were sent. */
  for (uint32_t i = 0; r->kept != NULL && i < LWSI_RDZV_APP_KEPT && !c->broken; i++) {
    const struct lwsi_rdzv_kept *k = &r->kept[i];
    if (k->kind[0] == '\0')
      break;
    uint8_t *copy = malloc(k->len);
    if (copy == NULL) {
      mark_broken(c, -ENOMEM, "out of memory");
      break;
    }
    memcpy(copy, k->frame, k->len);
    send_frame(c, copy, k->len);
  }
  emit(r, LWSI_RDZV_EV_JOINED, j->rank, c->addr, j->pod, 0,
       "rank %u reconnected before it heard the release; released it again", j->rank);
}

static void leader_join(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                        const struct lwsi_msg_join *j)
{
  const struct lwsi_rdzv_config *cfg = &r->cfg;
  int64_t rank = j->rank;
  /* Authentication first: without the proof, the peer learns nothing more
   * about this group than that it needs a token. */
  if (r->token != NULL && !j->auth) {
    leader_refuse(r, c, NULL, rank, "token",
                  "the leader requires a token and this worker has none (check --token-file "
                  "on both)");
    return;
  }
  if (r->token == NULL && j->auth) {
    leader_refuse(r, c, NULL, rank, "token",
                  "this worker has a token but the leader has none (check --token-file on "
                  "both)");
    return;
  }
  if (r->token != NULL) {
    uint8_t mac[LWSI_WIRE_MAC_LEN];
    int rc = lwsi_wire_join_mac(r->token, cfg->token_len, &c->hello, j, mac);
    bool ok = rc == 0 && lwsi_wire_mac_equal(mac, j->mac);
    explicit_bzero(mac, sizeof(mac));
    if (!ok) {
      leader_refuse(r, c, NULL, rank, "token",
                    "wrong token: the worker's proof does not match the "
                    "leader's token");
      return;
    }
  }
  if (j->size != cfg->size) {
    leader_refuse(r, c, j, rank, "size", "wrong size: this worker has %u, the leader %u", j->size,
                  cfg->size);
    return;
  }
  if (j->rank == 0 || j->rank >= cfg->size) {
    leader_refuse(r, c, j, rank, "rank", "rank %u is not a worker rank of a group of %u (1..%u)",
                  j->rank, cfg->size, cfg->size - 1);
    return;
  }
  if (strcmp(j->revision, r->revision) != 0) {
    leader_refuse(r, c, j, rank, "revision", "wrong revision: this worker has '%s', the leader '%s'",
                  j->revision, r->revision);
    return;
  }
  if (r->state == LWSI_RDZV_RELEASED) {
    const struct lwsi_rdzv_slot *held = &r->slots[j->rank];
    if (held->alive && held->conn != NULL &&
        memcmp(held->nonce, j->nonce, sizeof(held->nonce)) == 0) {
      leader_rejoin(r, c, j);
      return;
    }
    leader_refuse(r, c, j, rank, "released",
                  "the group is already released and running; rank %u cannot rejoin it", j->rank);
    return;
  }
  if (r->state != LWSI_RDZV_JOINING) {
    leader_refuse(r, c, j, rank, "failed", "the group has failed: %s", r->last_error);
    return;
  }
  struct lwsi_rdzv_slot *s = &r->slots[j->rank];
  if (s->conn != NULL) {
    /* The same incarnation coming back knows its old connection is dead
     * (it reconnected after an error we have not seen yet): replace it. A
     * different incarnation is refused while the holder is alive. */
    if (memcmp(s->nonce, j->nonce, sizeof(s->nonce)) != 0) {
      leader_refuse(r, c, j, rank, "duplicate", "rank %u is already held by %s", j->rank, s->addr);
      return;
    }
    leader_member_gone(r, s->conn, "reconnected (replaced by a new connection)");
    if (quiet(r) || c->state == C_CLOSING)
      return;
  }
  /* Joined. */
  slot_reset(s);
  leader_seat(r, c, j);
  s->joined = true;
  s->alive = true;
  copy_text(s->pod, sizeof(s->pod), j->pod);
  memcpy(s->nonce, j->nonce, sizeof(s->nonce));
  memcpy(s->digest, j->digest, sizeof(s->digest));
  s->gpus = j->gpus;
  r->njoined++;
  if (r->leader_addr[0] == '\0') {
    /* The leader learns its own address from the way workers reach it. */
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
      sa_ip(&ss, r->leader_addr, sizeof(r->leader_addr));
  }
  leader_send_welcome(r, c, j);
  update_missing(r);
  if (!emit(r, LWSI_RDZV_EV_JOINED, j->rank, c->addr, j->pod, 0, "rank %u joined (%u of %u)",
            j->rank, r->njoined + 1, cfg->size))
    return;
  if (r->njoined == cfg->size - 1) {
    /* Decided after this poll phase: a member whose close arrived in the
     * same batch as this join is seen gone before we release with it. */
    r->release_due = true;
    mark_due(r);
  } else {
    r->notify_waiting = true;
    schedule_defer(r);
  }
}

static void leader_drop(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err, const char *why)
{
  char addr[LWSI_WIRE_ADDR_MAX];
  copy_text(addr, sizeof(addr), c->addr);
  conn_close(c);
  emit(r, LWSI_RDZV_EV_DROPPED, -1, addr, "", err, "%s", why);
}

static const char *decode_error(int rc)
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

/* One frame from a leader's connection. */
static void leader_frame(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const uint8_t *f, size_t n)
{
  struct lwsi_msg m;
  int rc = lwsi_wire_decode(f, n, &m);
  char why[LWSI_WIRE_REASON_MAX + 64];
  if (c->state == C_DRAINING)
    goto out; /* refused: whatever it says now does not matter */
  if (c->state == C_HELLO) {
    if (rc == -EPROTONOSUPPORT) {
      leader_refuse(r, c, NULL, -1, "version",
                    "protocol version %u is not supported (the leader "
                    "speaks %u)",
                    m.v, LWSI_WIRE_VERSION);
    } else if (rc < 0) {
      textf(why, sizeof(why), "sent %s instead of a join", decode_error(rc));
      leader_drop(r, c, rc, why);
    } else if (m.type != LWSI_MSG_JOIN) {
      textf(why, sizeof(why), "sent a '%s' message instead of a join", lwsi_wire_type_name(m.type));
      leader_drop(r, c, -EPROTO, why);
    } else {
      leader_join(r, c, &m.join);
    }
    goto out;
  }
  /* A member. */
  c->last_rx = uv_now(r->loop);
  struct lwsi_rdzv_slot *s = &r->slots[c->rank];
  s->last_rx = c->last_rx;
  if (rc < 0) {
    textf(why, sizeof(why), "protocol error: sent %s", decode_error(rc));
    leader_member_gone(r, c, why);
  } else if (m.type == LWSI_MSG_HB) {
    take_hb(r, c, s, &m.hb);
  } else if (m.type == LWSI_MSG_BYE) {
    textf(why, sizeof(why), "left: %s", m.bye.reason);
    leader_member_gone(r, c, why);
  } else if (m.type == LWSI_MSG_APP && r->state == LWSI_RDZV_RELEASED) {
    emit_app(r, c->rank, c->addr, s->pod, &m.app);
  } else if (m.type == LWSI_MSG_APP) {
    /* Only a released worker has anything to say to the agent. */
    textf(why, sizeof(why), "protocol error: sent an 'app' message before the release");
    leader_member_gone(r, c, why);
  } else {
    textf(why, sizeof(why), "protocol error: sent an unexpected '%s' message",
          lwsi_wire_type_name(m.type));
    leader_member_gone(r, c, why);
  }
out:
  lwsi_msg_free(&m);
}

static void leader_eof(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, ssize_t err)
{
  char why[128];
  if (err == UV_EOF)
    textf(why, sizeof(why), "closed the connection");
  else
    textf(why, sizeof(why), "connection error: %s", uv_strerror((int)err));
  if (c->state == C_MEMBER)
    leader_member_gone(r, c, why);
  else if (c->state == C_DRAINING)
    conn_close(c);
  else
    leader_drop(r, c, (int)err, err == UV_EOF ? "closed the connection before joining" : why);
}

static void leader_send_hello(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  struct lwsi_msg m = {.type = LWSI_MSG_HELLO};
  memcpy(m.hello.nonce, r->nonce, sizeof(r->nonce));
  int rc = random_bytes(m.hello.challenge, sizeof(m.hello.challenge));
  m.hello.auth = r->token != NULL;
  if (rc < 0) {
    leader_drop(r, c, rc, "cannot draw a random challenge");
    return;
  }
  c->hello = m.hello;
  send_msg(c, &m);
}

/* Takes the next connection off the listener. */
static void leader_accept(struct lwsi_rdzv *r)
{
  char why[128];
  struct lwsi_rdzv_conn *c = conn_new(r);
  if (c == NULL) {
    /* libuv keeps the accepted fd and stops listening until uv_accept: the
     * tick tries again, so one failed allocation does not deafen us. */
    r->accept_stuck = true;
    tick_arm(r, uv_now(r->loop) + r->tick_gap);
    emit(r, LWSI_RDZV_EV_DROPPED, -1, "", "", -ENOMEM,
         "cannot accept a connection: out of memory (will try again)");
    return;
  }
  int rc = uv_accept((uv_stream_t *)&r->listener, (uv_stream_t *)&c->tcp);
  if (rc < 0) {
    textf(why, sizeof(why), "cannot accept a connection: %s", uv_strerror(rc));
    leader_drop(r, c, rc, why);
    return;
  }
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
    sa_ip(&ss, c->addr, sizeof(c->addr));
  else
    copy_text(c->addr, sizeof(c->addr), "?");
  /* A bound on connections that have not joined: a flood of them costs a
   * fixed amount of memory, and members that have joined are not affected.
   * The oldest goes, not the newest: a real worker answers the hello within
   * one round trip, so idle connections cannot keep it out. */
  if (r->npending >= r->cfg.max_pending) {
    struct lwsi_rdzv_conn *old = r->pending;
    while (old != NULL && old->next != NULL)
      old = old->next; /* new ones are added at the head */
    if (old != NULL) {
      textf(why, sizeof(why), "dropped to make room: too many connections waiting to join (%u)",
            r->cfg.max_pending);
      leader_drop(r, old, -EBUSY, why);
      if (quiet(r)) {
        conn_close(c);
        return;
      }
    }
  }
  pending_add(r, c);
  c->state = C_HELLO;
  c->deadline = uv_now(r->loop) + r->cfg.handshake_timeout_ms;
  tick_arm(r, c->deadline);
  rc = conn_start_reading(c);
  if (rc < 0) {
    textf(why, sizeof(why), "cannot read from the connection: %s", uv_strerror(rc));
    leader_drop(r, c, rc, why);
    return;
  }
  leader_send_hello(r, c);
}

static void on_connection(uv_stream_t *server, int status)
{
  struct lwsi_rdzv *r = server->data;
  if (quiet(r))
    return;
  if (status < 0) {
    emit(r, LWSI_RDZV_EV_DROPPED, -1, "", "", status, "cannot accept a connection: %s",
         uv_strerror(status));
    return;
  }
  leader_accept(r);
}

static void leader_tick(struct lwsi_rdzv *r)
{
  uint64_t now = uv_now(r->loop);
  char why[128];
  struct lwsi_rdzv_conn *c, *next;
  if (r->accept_stuck && r->listener_open && !uv_is_closing((uv_handle_t *)&r->listener)) {
    r->accept_stuck = false;
    leader_accept(r);
    if (quiet(r))
      return;
  }
  for (c = r->pending; c != NULL; c = next) {
    next = c->next; /* c may close; the list no longer holds it then */
    if (now < c->deadline)
      continue;
    if (c->state == C_DRAINING) {
      conn_close(c);
      continue;
    }
    textf(why, sizeof(why), "did not join within %llu ms",
          (unsigned long long)r->cfg.handshake_timeout_ms);
    leader_drop(r, c, -ETIMEDOUT, why);
    if (quiet(r))
      return;
    next = r->pending; /* the callback may have changed the list: rescan */
  }
  if (r->state != LWSI_RDZV_JOINING && r->state != LWSI_RDZV_RELEASED)
    return;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    c = r->slots[i].conn;
    if (c == NULL || c->state != C_MEMBER || now - c->last_rx <= r->cfg.peer_timeout_ms)
      continue;
    textf(why, sizeof(why), "silent for %llu ms", (unsigned long long)(now - c->last_rx));
    leader_member_gone(r, c, why);
    if (quiet(r))
      return;
  }
  if (now < r->next_hb || r->mute_heartbeats)
    return;
  r->next_hb = now + r->cfg.heartbeat_ms;
  struct lwsi_rdzv_local l;
  local_state(r, &l);
  if (quiet(r))
    return;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    c = r->slots[i].conn;
    if (c == NULL || c->state != C_MEMBER)
      continue;
    struct lwsi_msg m;
    fill_hb(r, c, &l, &m);
    send_msg(c, &m);
  }
}

static void leader_deadline(struct lwsi_rdzv *r)
{
  if (r->state != LWSI_RDZV_JOINING)
    return;
  char why[LWSI_WIRE_REASON_MAX], d[32];
  update_missing(r);
  duration(d, sizeof(d), r->cfg.rdzv_timeout_ms);
  /* The workers hear the context; our own caller knows its deadline. */
  textf(why, sizeof(why), "the leader's rendezvous deadline (%s) passed: %s never arrived", d,
        r->missing);
  char bare[LWSI_WIRE_REASON_MAX];
  textf(bare, sizeof(bare), "%s never arrived", r->missing);
  leader_fail(r, LWSI_RDZV_EV_TIMEOUT, why, bare);
}

/* ---- the worker ---- */

static void worker_attempt(uv_timer_t *t);

static void worker_schedule_retry(struct lwsi_rdzv *r, uint64_t delay)
{
  if (r->retry_open && !quiet(r))
    uv_timer_start(&r->retry, worker_attempt, delay, 0);
}

/* Full jitter in the upper half of the step: never longer than the cap,
 * so a leader that comes up late is found within the cap. */
static uint64_t worker_next_delay(struct lwsi_rdzv *r)
{
  uint64_t d = r->retry_delay;
  uint64_t half = d / 2;
  uint64_t j = half + (half ? rng_next(r) % (d - half + 1) : 0);
  r->retry_delay = d * 2 > r->cfg.retry_max_ms ? r->cfg.retry_max_ms : d * 2;
  return j;
}

/* A connection attempt or handshake failed: try again after a backoff. */
static void worker_retry(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err, const char *why)
{
  if (c != NULL)
    conn_close(c);
  copy_text(r->last_error, sizeof(r->last_error), why);
  uint64_t delay = worker_next_delay(r);
  worker_schedule_retry(r, delay);
  emit(r, LWSI_RDZV_EV_RETRYING, 0, r->host, "", err, "%s; retrying in %llu ms", why,
       (unsigned long long)delay);
}

/* Final: refused, failed or timed out. */
static void worker_end(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, enum lwsi_rdzv_ev type,
                       const char *why)
{
  r->state = LWSI_RDZV_FAILED;
  copy_text(r->last_error, sizeof(r->last_error), why);
  if (c != NULL)
    conn_close(c);
  if (r->retry_open)
    uv_timer_stop(&r->retry);
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  emit(r, type, 0, r->host, "", 0, "%s", why);
}

/* The leader went: before release we wait for it to come back (it may be
 * restarting); after release a worker never joins another incarnation. */
static void worker_leader_gone(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *why)
{
  conn_close(c);
  struct lwsi_rdzv_slot *s = &r->slots[0];
  if (r->state == LWSI_RDZV_RELEASED) {
    if (!s->alive)
      return;
    s->alive = false;
    emit(r, LWSI_RDZV_EV_LOST, 0, r->host, s->pod, 0, "%s", why);
    return;
  }
  if (r->state != LWSI_RDZV_JOINING)
    return;
  s->alive = false;
  s->joined = false;
  r->heard_missing = false;
  r->missing[0] = '\0';
  textf(r->last_error, sizeof(r->last_error), "lost the leader at %s before release: %s", r->host,
        why);
  r->retry_delay = r->cfg.retry_min_ms;
  worker_schedule_retry(r, worker_next_delay(r));
  emit(r, LWSI_RDZV_EV_DEPARTED, 0, r->host, "", 0, "%s", why);
}

static void worker_send_join(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  struct lwsi_msg m = {.type = LWSI_MSG_JOIN};
  struct lwsi_msg_join *j = &m.join;
  j->rank = r->cfg.rank;
  j->size = r->cfg.size;
  j->gpus = r->cfg.gpus;
  copy_text(j->revision, sizeof(j->revision), r->revision);
  copy_text(j->pod, sizeof(j->pod), r->pod);
  memcpy(j->nonce, r->nonce, sizeof(j->nonce));
  memcpy(j->digest, r->cfg.cmd_digest, sizeof(j->digest));
  int rc = random_bytes(j->challenge, sizeof(j->challenge));
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
  tick_arm(r, c->deadline);
  rc = send_msg(c, &m);
  explicit_bzero(&m, sizeof(m));
  if (rc == -EINVAL || rc == -EMSGSIZE)
    worker_end(r, c, LWSI_RDZV_EV_FAILED,
               "cannot encode the join (its text breaks the wire rules)");
}

static void worker_unproven(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *reason);

static void worker_welcome(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                           const struct lwsi_msg_welcome *w)
{
  char why[LWSI_WIRE_REASON_MAX];
  if (w->rank != r->cfg.rank) {
    textf(why, sizeof(why), "the leader welcomed rank %u instead of %u", w->rank, r->cfg.rank);
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
  r->retry_delay = r->cfg.retry_min_ms;
  r->attempts = 0;
  struct lwsi_rdzv_slot *s = &r->slots[0];
  slot_reset(s);
  s->joined = true;
  s->alive = true;
  s->watched = true;
  s->last_rx = now;
  copy_text(s->addr, sizeof(s->addr), r->host);
  r->next_hb = now; /* the leader hears from us at once */
  tick_arm(r, now);
  emit(r, LWSI_RDZV_EV_JOINED, 0, r->host, "", 0, "joined the leader at %s:%u as rank %u of %u",
       r->host, r->cfg.port, r->cfg.rank, r->cfg.size);
}

static void worker_waiting(struct lwsi_rdzv *r, const struct lwsi_msg_waiting *w)
{
  char text[LWSI_WIRE_REASON_MAX];
  format_ranks(text, sizeof(text), w->missing, w->nlisted, w->nmissing);
  r->nmissing = w->nmissing;
  r->njoined = w->joined > 0 ? w->joined - 1 : 0;
  bool changed = !r->heard_missing || strcmp(text, r->missing) != 0;
  r->heard_missing = true;
  copy_text(r->missing, sizeof(r->missing), text);
  if (changed)
    emit(r, LWSI_RDZV_EV_WAITING, -1, r->host, "", 0, "waiting for %s (%u of %u joined)",
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
      slot_reset(s);
    s->joined = true;
    s->alive = true;
    copy_text(s->addr, sizeof(s->addr), rl->members[i].addr);
    copy_text(s->pod, sizeof(s->pod), rl->members[i].pod);
  }
  /* Keep what we measured of the leader ourselves. */
  r->slots[0].last_rx = leader.last_rx;
  r->slots[0].rtt_us = leader.rtt_us;
  r->slots[0].watched = true;
  r->slots[0].has_state = leader.has_state;
  copy_text(r->slots[0].child, sizeof(r->slots[0].child), leader.child);
  r->slots[0].upstream = leader.upstream;
  r->state = LWSI_RDZV_RELEASED;
  r->njoined = r->cfg.size - 1;
  r->missing[0] = '\0';
  r->nmissing = 0;
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  emit(r, LWSI_RDZV_EV_RELEASED, -1, r->host, "", 0, "released by the leader with %u members",
       rl->size);
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

/* An end we cannot believe: say it, and keep trying until the rendezvous
 * deadline, whose failure then names it (worker_deadline). A leader with
 * another token, or none, ends up here too: from this side it cannot be
 * told from an impostor. */
static void worker_unproven(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *reason)
{
  char why[LWSI_WIRE_REASON_MAX];
  textf(why, sizeof(why),
        "%s:%u said '%s' without proof of the token (a leader with another token or none, "
        "or not our leader)",
        r->host, r->cfg.port, reason);
  /* At the slow end of the backoff: whoever said it answers at once, and
   * would otherwise be asked again every few tens of milliseconds. */
  r->retry_delay = r->cfg.retry_max_ms;
  worker_retry(r, c, -EACCES, why);
}

static void worker_frame(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const uint8_t *f, size_t n)
{
  struct lwsi_msg m;
  int rc = lwsi_wire_decode(f, n, &m);
  char why[LWSI_WIRE_REASON_MAX + 128];
  if (c->state == C_HELLO) {
    if (rc == -EPROTONOSUPPORT) {
      textf(why, sizeof(why), "the leader speaks protocol version %u, this worker %u", m.v,
            LWSI_WIRE_VERSION);
      if (r->token != NULL)
        worker_unproven(r, c, why); /* a hello proves nothing */
      else
        worker_end(r, c, LWSI_RDZV_EV_REFUSED, why);
    } else if (rc < 0 || m.type != LWSI_MSG_HELLO) {
      /* Maybe not our leader at all (another service on the port). */
      textf(why, sizeof(why), "%s:%u answered with %s, not a leader's hello", r->host, r->cfg.port,
            rc < 0 ? decode_error(rc) : lwsi_wire_type_name(m.type));
      worker_retry(r, c, rc < 0 ? rc : -EPROTO, why);
    } else {
      c->hello = m.hello;
      c->last_rx = uv_now(r->loop);
      r->retry_delay = r->cfg.retry_min_ms; /* a live leader: retry fast again */
      worker_send_join(r, c);
    }
    goto out;
  }
  c->last_rx = uv_now(r->loop);
  r->slots[0].last_rx = c->last_rx;
  if (rc < 0) {
    textf(why, sizeof(why), "sent %s", decode_error(rc));
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
      textf(why, sizeof(why), "the leader sent '%s' instead of an answer to the join",
            lwsi_wire_type_name(m.type));
      worker_retry(r, c, -EPROTO, why);
    }
    goto out;
  }
  /* A member. */
  switch (m.type) {
  case LWSI_MSG_HB:
    take_hb(r, c, &r->slots[0], &m.hb);
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
      r->slots[m.lost.rank].alive = false;
      emit(r, LWSI_RDZV_EV_LOST, m.lost.rank, r->slots[m.lost.rank].addr, r->slots[m.lost.rank].pod,
           0, "%s", m.lost.reason);
    }
    break;
  case LWSI_MSG_BYE:
    textf(why, sizeof(why), "left: %s", m.bye.reason);
    worker_leader_gone(r, c, why);
    break;
  case LWSI_MSG_APP:
    /* The leader sends them after the release frame, on this connection. */
    if (r->state == LWSI_RDZV_RELEASED)
      emit_app(r, 0, r->host, r->slots[0].pod, &m.app);
    else
      worker_leader_gone(r, c, "sent an 'app' message before the release");
    break;
  default:
    textf(why, sizeof(why), "sent an unexpected '%s' message", lwsi_wire_type_name(m.type));
    worker_leader_gone(r, c, why);
    break;
  }
out:
  lwsi_msg_free(&m);
}

static void worker_eof(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, ssize_t err)
{
  char why[LWSI_WIRE_REASON_MAX];
  const char *what = err == UV_EOF ? "closed the connection" : uv_strerror((int)err);
  if (c->state == C_MEMBER) {
    textf(why, sizeof(why), "%s%s", err == UV_EOF ? "" : "connection error: ", what);
    worker_leader_gone(r, c, why);
  } else {
    textf(why, sizeof(why), "the leader at %s:%u %s%s during the handshake", r->host, r->cfg.port,
          err == UV_EOF ? "" : "failed: ", what);
    worker_retry(r, c, (int)err, why);
  }
}

static void on_connect(uv_connect_t *req, int status)
{
  struct lwsi_rdzv_conn *c = req->data;
  struct lwsi_rdzv *r = c->r;
  if (c->state == C_CLOSING || quiet(r))
    return; /* cancelled: closed on a timeout, or the whole module closed */
  char why[LWSI_WIRE_REASON_MAX];
  if (status < 0) {
    textf(why, sizeof(why), "cannot connect to the leader at %s:%u: %s", r->host, r->cfg.port,
          uv_strerror(status));
    worker_retry(r, c, status, why);
    return;
  }
  int rc = conn_start_reading(c);
  if (rc < 0) {
    textf(why, sizeof(why), "cannot read from the leader at %s:%u: %s", r->host, r->cfg.port,
          uv_strerror(rc));
    worker_retry(r, c, rc, why);
    return;
  }
  c->state = C_HELLO;
  c->deadline = uv_now(r->loop) + r->cfg.handshake_timeout_ms;
  tick_arm(r, c->deadline);
}

static void worker_attempt(uv_timer_t *t)
{
  struct lwsi_rdzv *r = t->data;
  if (r->state != LWSI_RDZV_JOINING || r->conn != NULL)
    return;
  char why[LWSI_WIRE_REASON_MAX];
  r->attempts++;
  struct lwsi_rdzv_conn *c = conn_new(r);
  if (c == NULL) {
    worker_retry(r, NULL, -ENOMEM, "cannot open a socket: out of memory");
    return;
  }
  r->conn = c;
  /* The leader's release carries the whole member table (wire.h). */
  lwsi_wire_reader_set_max(&c->rd, LWSI_WIRE_RELEASE_MAX(r->cfg.size));
  c->state = C_CONNECTING;
  c->deadline = uv_now(r->loop) + r->cfg.connect_timeout_ms;
  tick_arm(r, c->deadline);
  copy_text(c->addr, sizeof(c->addr), r->host);
  int rc = 0;
  if (r->source[0] != '\0') {
    struct sockaddr_storage src;
    rc = parse_ip(r->source, 0, &src);
    if (rc == 0)
      rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
  }
  if (rc == 0)
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&r->peer_sa, on_connect);
  if (rc < 0) {
    textf(why, sizeof(why), "cannot connect to the leader at %s:%u: %s", r->host, r->cfg.port,
          uv_strerror(rc));
    worker_retry(r, c, rc, why);
  }
}

static void worker_tick(struct lwsi_rdzv *r)
{
  struct lwsi_rdzv_conn *c = r->conn;
  if (c == NULL || c->state == C_CLOSING)
    return;
  uint64_t now = uv_now(r->loop);
  char why[LWSI_WIRE_REASON_MAX];
  if (c->state != C_MEMBER) {
    if (now < c->deadline)
      return;
    if (c->state == C_CONNECTING)
      textf(why, sizeof(why), "cannot connect to the leader at %s:%u: timed out after %llu ms",
            r->host, r->cfg.port, (unsigned long long)r->cfg.connect_timeout_ms);
    else
      textf(why, sizeof(why), "the leader at %s:%u did not answer the handshake within %llu ms",
            r->host, r->cfg.port, (unsigned long long)r->cfg.handshake_timeout_ms);
    worker_retry(r, c, -ETIMEDOUT, why);
    return;
  }
  if (now - c->last_rx > r->cfg.peer_timeout_ms) {
    textf(why, sizeof(why), "silent for %llu ms", (unsigned long long)(now - c->last_rx));
    worker_leader_gone(r, c, why);
    return;
  }
  if (now < r->next_hb || r->mute_heartbeats)
    return;
  r->next_hb = now + r->cfg.heartbeat_ms;
  struct lwsi_rdzv_local l;
  local_state(r, &l);
  if (quiet(r) || r->conn != c)
    return;
  struct lwsi_msg m;
  fill_hb(r, c, &l, &m);
  send_msg(c, &m);
}

static void worker_deadline(struct lwsi_rdzv *r)
{
  if (r->state != LWSI_RDZV_JOINING)
    return;
  /* The best we know, without the "did not form within" the caller adds. */
  char why[LWSI_WIRE_REASON_MAX + 128];
  struct lwsi_rdzv_conn *c = r->conn;
  bool member = c != NULL && c->state == C_MEMBER;
  if (member && r->heard_missing && r->nmissing > 0)
    textf(why, sizeof(why), "the leader was still waiting for %s", r->missing);
  else if (member)
    textf(why, sizeof(why), "joined the leader at %s, but it did not release the group", r->host);
  else
    textf(why, sizeof(why), "%s",
          r->last_error[0] ? r->last_error : "the leader was never reached");
  if (member)
    send_text(c, LWSI_MSG_BYE, "gave up: its rendezvous deadline passed");
  worker_end(r, c, LWSI_RDZV_EV_TIMEOUT, why);
}

/* ---- shared loop callbacks ---- */

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct lwsi_rdzv_conn *c = s->data;
  struct lwsi_rdzv *r = c->r;
  if (c->state == C_CLOSING || quiet(r))
    return;
  if (nread == 0)
    return; /* EAGAIN */
  if (nread < 0) {
    if (r->leader)
      leader_eof(r, c, nread);
    else
      worker_eof(r, c, nread);
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
      char why[128];
      textf(why, sizeof(why), "%s", decode_error(rc));
      if (r->leader) {
        if (c->state == C_MEMBER) {
          textf(why, sizeof(why), "protocol error: sent %s", decode_error(rc));
          leader_member_gone(r, c, why);
        } else if (c->state == C_DRAINING) {
          conn_close(c);
        } else {
          textf(why, sizeof(why), "sent garbage (%s)", decode_error(rc));
          leader_drop(r, c, rc, why);
        }
      } else if (c->state == C_MEMBER) {
        textf(why, sizeof(why), "sent %s", decode_error(rc));
        worker_leader_gone(r, c, why);
      } else {
        textf(why, sizeof(why), "%s:%u sent garbage (%s)", r->host, r->cfg.port, decode_error(rc));
        worker_retry(r, c, rc, why);
      }
      return;
    }
    if (r->leader)
      leader_frame(r, c, frame, flen);
    else
      worker_frame(r, c, frame, flen);
    /* The handler may have closed the connection or the whole module (from
     * the caller's callback); buf is then no longer ours to read. */
    if (c->state == C_CLOSING || quiet(r))
      return;
  }
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

static void mark_due(struct lwsi_rdzv *r)
{
  uv_idle_start(&r->idle, on_idle);
  uv_check_start(&r->check, on_check);
}

static void on_check(uv_check_t *h)
{
  struct lwsi_rdzv *r = h->data;
  uv_check_stop(h);
  uv_idle_stop(&r->idle);
  if (quiet(r))
    return;
  /* The release first: a group that completed in the same iteration as the
   * deadline fired did form in time. */
  if (r->release_due) {
    r->release_due = false;
    leader_maybe_release(r);
    if (quiet(r))
      return;
  }
  if (r->deadline_due) {
    r->deadline_due = false;
    if (r->leader)
      leader_deadline(r);
    else
      worker_deadline(r);
    if (quiet(r))
      return;
  }
  if (r->tick_due) {
    r->tick_due = false;
    r->last_tick = uv_now(r->loop);
    r->ticks++;
    if (r->leader)
      leader_tick(r);
    else
      worker_tick(r);
    if (quiet(r))
      return;
    tick_arm(r, tick_next(r));
  }
}

static void on_tick(uv_timer_t *t)
{
  struct lwsi_rdzv *r = t->data;
  if (quiet(r))
    return;
  r->tick_due = true;
  mark_due(r);
}

static void on_deadline(uv_timer_t *t)
{
  struct lwsi_rdzv *r = t->data;
  if (quiet(r))
    return;
  r->deadline_due = true;
  mark_due(r);
}

static void on_defer(uv_timer_t *t)
{
  struct lwsi_rdzv *r = t->data;
  if (quiet(r))
    return;
  if (r->released_pending) {
    /* A group of one: released on the loop, never inside start. */
    r->released_pending = false;
    leader_maybe_release(r);
    if (quiet(r))
      return;
  }
  if (r->leader) {
    struct lwsi_rdzv_conn *c, *next;
    for (c = r->pending; c != NULL; c = next) {
      next = c->next;
      if (c->broken) {
        leader_drop(r, c, c->broken_err, c->broken_why);
        if (quiet(r))
          return;
        next = r->pending;
      }
    }
    /* A loss may break another member's write: loop until none is left. */
    for (bool again = true; again;) {
      again = false;
      for (uint32_t i = 1; i < r->cfg.size; i++) {
        c = r->slots[i].conn;
        if (c != NULL && c->broken) {
          leader_member_gone(r, c, c->broken_why);
          if (quiet(r))
            return;
          again = true;
        }
      }
    }
    if (r->notify_waiting)
      leader_broadcast_waiting(r);
  } else if (r->conn != NULL && r->conn->broken) {
    struct lwsi_rdzv_conn *c = r->conn;
    if (c->state == C_MEMBER)
      worker_leader_gone(r, c, c->broken_why);
    else
      worker_retry(r, c, c->broken_err, c->broken_why);
  }
}

/* ---- the API ---- */

static int timer_open(struct lwsi_rdzv *r, uv_timer_t *t, bool *open)
{
  int rc = uv_timer_init(r->loop, t);
  if (rc < 0)
    return rc;
  t->data = r;
  *open = true;
  return 0;
}

static int check_text(char *dst, size_t size, const char *src)
{
  if (src == NULL)
    src = "";
  if (strlen(src) >= size)
    return -ENAMETOOLONG;
  memcpy(dst, src, strlen(src) + 1);
  return 0;
}

int lwsi_rdzv_start(struct lwsi_rdzv *r, uv_loop_t *loop, const struct lwsi_rdzv_config *cfg,
                    lwsi_rdzv_cb cb, lwsi_rdzv_local_cb local_cb)
{
  /* Our handles live in r: starting over them while libuv still holds
   * them on its closing list would corrupt the loop. */
  if (r->closing > 0)
    return -EBUSY;
  void *data = r->data;
  memset(r, 0, sizeof(*r));
  r->data = data;
  r->loop = loop;
  r->cb = cb;
  r->local_cb = local_cb;
  r->state = LWSI_RDZV_IDLE;
  r->cfg = *cfg;
  r->cfg.revision = r->revision;
  r->cfg.pod = r->pod;
  r->cfg.host = r->host;
  r->cfg.source = r->source;
  r->cfg.token = NULL;
  struct lwsi_rdzv_config *c = &r->cfg;
  if (c->heartbeat_ms == 0)
    c->heartbeat_ms = 1000;
  if (c->peer_timeout_ms == 0)
    c->peer_timeout_ms = 10000;
  if (c->handshake_timeout_ms == 0)
    c->handshake_timeout_ms = LWSI_RDZV_HANDSHAKE_MS;
  if (c->connect_timeout_ms == 0)
    c->connect_timeout_ms = LWSI_RDZV_CONNECT_MS;
  if (c->retry_min_ms == 0)
    c->retry_min_ms = LWSI_RDZV_RETRY_MIN_MS;
  if (c->retry_max_ms == 0)
    c->retry_max_ms = LWSI_RDZV_RETRY_MAX_MS;
  if (c->retry_max_ms < c->retry_min_ms)
    c->retry_max_ms = c->retry_min_ms;
  /* Room for every worker of the group to be mid-handshake at once (a
   * whole group starting together), and never less than the default. */
  if (c->max_pending == 0)
    c->max_pending = c->size > LWSI_RDZV_MAX_PENDING / 2 ? 2 * c->size : LWSI_RDZV_MAX_PENDING;
  if (c->size == 0 || c->size > LWSI_WIRE_MAX_SIZE || c->rank >= c->size)
    return -EINVAL;
  if (cfg->token_len > TOKEN_MAX || (cfg->token_len > 0 && cfg->token == NULL))
    return -EINVAL;
  int rc;
  if ((rc = check_text(r->revision, sizeof(r->revision), cfg->revision)) < 0 ||
      (rc = check_text(r->pod, sizeof(r->pod), cfg->pod)) < 0 ||
      (rc = check_text(r->host, sizeof(r->host), cfg->host)) < 0 ||
      (rc = check_text(r->source, sizeof(r->source), cfg->source)) < 0)
    return rc;
  /* What goes in the join must pass the peer's decoder; better to say so
   * now than to have every join fail later. */
  if (!lwsi_wire_text_ok(r->revision) || !lwsi_wire_text_ok(r->pod))
    return -EINVAL;
  r->leader = c->rank == 0;
  r->open = cfg->token_len == 0;
  if (!r->open) {
    r->token = malloc(cfg->token_len);
    if (r->token == NULL)
      return -ENOMEM;
    memcpy(r->token, cfg->token, cfg->token_len);
  }
  /* The incarnation: a restarted agent is a different member, always. */
  if ((rc = random_bytes(r->nonce, sizeof(r->nonce))) < 0 ||
      (rc = random_bytes(&r->rng, sizeof(r->rng))) < 0)
    return rc;
  r->rng |= 1;
  for (size_t i = 0; i < sizeof(r->nonce); i++)
    textf(r->nonce_hex + 2 * i, 3, "%02x", r->nonce[i]);
  r->slots = calloc(c->size, sizeof(*r->slots));
  r->rbuf = malloc(LWSI_WIRE_HDR_LEN + LWSI_WIRE_MAX_PAYLOAD);
  if (r->slots == NULL || r->rbuf == NULL)
    return -ENOMEM;
  for (uint32_t i = 0; i < c->size; i++)
    slot_reset(&r->slots[i]);
  struct lwsi_rdzv_slot *self = &r->slots[c->rank];
  self->joined = true;
  self->alive = true;
  copy_text(self->pod, sizeof(self->pod), r->pod);
  r->retry_delay = c->retry_min_ms;

  if ((rc = timer_open(r, &r->tick, &r->tick_open)) < 0 ||
      (rc = timer_open(r, &r->deadline, &r->deadline_open)) < 0 ||
      (rc = timer_open(r, &r->defer, &r->defer_open)) < 0 ||
      (rc = timer_open(r, &r->retry, &r->retry_open)) < 0)
    return rc;
  if ((rc = uv_check_init(loop, &r->check)) < 0)
    return rc;
  r->check.data = r;
  r->check_open = true;
  if ((rc = uv_idle_init(loop, &r->idle)) < 0)
    return rc;
  r->idle.data = r;
  r->idle_open = true;

  if (r->leader) {
    struct sockaddr_storage ss;
    if ((rc = parse_ip(r->host[0] ? r->host : "0.0.0.0", c->port, &ss)) < 0)
      return rc;
    if ((rc = uv_tcp_init(loop, &r->listener)) < 0)
      return rc;
    r->listener.data = r;
    r->listener_open = true;
    rc = uv_tcp_bind(&r->listener, (const struct sockaddr *)&ss, 0);
    if (rc == UV_EAFNOSUPPORT && strcmp(r->host, "::") == 0) {
      /* A node without IPv6 (ipv6.disable=1): every IPv4 address instead.
       * The failed bind made no socket, so the same handle can bind again. */
      copy_text(r->host, sizeof(r->host), "0.0.0.0");
      if ((rc = parse_ip(r->host, c->port, &ss)) == 0)
        rc = uv_tcp_bind(&r->listener, (const struct sockaddr *)&ss, 0);
    }
    if (rc < 0 || (rc = uv_listen((uv_stream_t *)&r->listener, LISTEN_BACKLOG, on_connection)) < 0)
      return rc;
    copy_text(self->addr, sizeof(self->addr), "");
  } else {
    if ((rc = parse_ip(r->host, c->port, &r->peer_sa)) < 0)
      return rc;
    copy_text(self->addr, sizeof(self->addr), r->source);
    copy_text(r->slots[0].addr, sizeof(r->slots[0].addr), r->host);
    copy_text(r->last_error, sizeof(r->last_error), "no connection attempt finished yet");
  }
  /* Ticks may come this close together (tick_arm): fine-grained enough for
   * the handshake deadlines and for "lost within peer-timeout plus one
   * heartbeat". */
  uint64_t gap = c->heartbeat_ms < 100 ? c->heartbeat_ms : 100;
  if (c->handshake_timeout_ms / 4 < gap)
    gap = c->handshake_timeout_ms / 4;
  if (gap < 5)
    gap = 5;
  r->tick_gap = gap;
  r->state = LWSI_RDZV_JOINING;
  r->next_hb = uv_now(loop);
  r->last_tick = r->next_hb;
  r->tick_at = r->next_hb + gap;
  if ((rc = uv_timer_start(&r->tick, on_tick, gap, 0)) < 0)
    return rc;
  if (c->rdzv_timeout_ms > 0 &&
      (rc = uv_timer_start(&r->deadline, on_deadline, c->rdzv_timeout_ms, 0)) < 0)
    return rc;
  if (r->leader) {
    update_missing(r);
    if (c->size == 1) {
      r->released_pending = true;
      schedule_defer(r);
    }
  } else {
    worker_schedule_retry(r, 0); /* the first attempt, on the loop */
  }
  return 0;
}

uint16_t lwsi_rdzv_port(const struct lwsi_rdzv *r)
{
  if (!r->leader || !r->listener_open)
    return 0;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (uv_tcp_getsockname(&r->listener, (struct sockaddr *)&ss, &len) < 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}

int lwsi_rdzv_set_leader(struct lwsi_rdzv *r, const char *ip)
{
  if (r->leader || r->state == LWSI_RDZV_IDLE || ip == NULL)
    return -EINVAL;
  if (r->state != LWSI_RDZV_JOINING)
    return -EALREADY;
  struct sockaddr_storage ss;
  if (strlen(ip) >= sizeof(r->host) || parse_ip(ip, r->cfg.port, &ss) < 0)
    return -EINVAL;
  if (strcmp(ip, r->host) == 0)
    return 0;
  /* The connection in hand (if any) goes on: a joined worker stays with the
   * leader it has; the new address is for the next attempt. */
  r->peer_sa = ss;
  copy_text(r->host, sizeof(r->host), ip);
  if (r->conn == NULL || r->conn->state != C_MEMBER)
    copy_text(r->slots[0].addr, sizeof(r->slots[0].addr), ip);
  return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
  struct lwsi_rdzv *r = h->data;
  r->closing--;
}

static void close_handle(struct lwsi_rdzv *r, uv_handle_t *h, bool open)
{
  if (open && !uv_is_closing(h)) {
    r->closing++;
    uv_close(h, on_handle_closed);
  }
}

int lwsi_rdzv_leave(struct lwsi_rdzv *r, const char *reason)
{
  if (r->state == LWSI_RDZV_IDLE)
    return -EINVAL;
  if (quiet(r))
    return -EALREADY;
  if (reason == NULL || reason[0] == '\0')
    reason = "stopping";
  if (r->leader) {
    for (uint32_t i = 1; i < r->cfg.size; i++)
      if (r->slots[i].conn != NULL && r->slots[i].conn->state == C_MEMBER)
        send_text(r->slots[i].conn, LWSI_MSG_BYE, reason);
    while (r->pending != NULL)
      conn_close(r->pending);
    /* New joins now find the port closed and retry elsewhere in time. */
    close_handle(r, (uv_handle_t *)&r->listener, r->listener_open);
  } else if (r->conn != NULL) {
    if (r->conn->state == C_MEMBER)
      send_text(r->conn, LWSI_MSG_BYE, reason);
    else
      conn_close(r->conn);
  }
  r->state = LWSI_RDZV_LEFT;
  if (r->tick_open)
    uv_timer_stop(&r->tick);
  if (r->check_open)
    uv_check_stop(&r->check);
  if (r->idle_open)
    uv_idle_stop(&r->idle);
  if (r->retry_open)
    uv_timer_stop(&r->retry);
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  return 0;
}

void lwsi_rdzv_close(struct lwsi_rdzv *r)
{
  if (r->loop == NULL || r->state == LWSI_RDZV_CLOSED)
    return;
  r->state = LWSI_RDZV_CLOSED;
  while (r->pending != NULL)
    conn_close(r->pending);
  if (r->conn != NULL)
    conn_close(r->conn);
  if (r->slots != NULL)
    for (uint32_t i = 0; i < r->cfg.size; i++)
      if (r->slots[i].conn != NULL)
        conn_close(r->slots[i].conn);
  close_handle(r, (uv_handle_t *)&r->listener, r->listener_open);
  close_handle(r, (uv_handle_t *)&r->tick, r->tick_open);
  close_handle(r, (uv_handle_t *)&r->deadline, r->deadline_open);
  close_handle(r, (uv_handle_t *)&r->defer, r->defer_open);
  close_handle(r, (uv_handle_t *)&r->retry, r->retry_open);
  close_handle(r, (uv_handle_t *)&r->check, r->check_open);
  close_handle(r, (uv_handle_t *)&r->idle, r->idle_open);
  free(r->slots);
  r->slots = NULL;
  free(r->rbuf);
  r->rbuf = NULL;
  if (r->kept != NULL) {
    for (uint32_t i = 0; i < LWSI_RDZV_APP_KEPT; i++)
      free(r->kept[i].frame);
    free(r->kept);
    r->kept = NULL;
  }
  if (r->token != NULL) {
    explicit_bzero(r->token, r->cfg.token_len);
    free(r->token);
    r->token = NULL;
  }
}

static int app_encode(const char *kind, const char *data, uint8_t **frame, size_t *len)
{
  if (!lwsi_wire_kind_ok(kind) || !lwsi_wire_data_ok(data))
    return -EINVAL;
  struct lwsi_msg m = {.type = LWSI_MSG_APP};
  copy_text(m.app.kind, sizeof(m.app.kind), kind);
  m.app.data = (char *)data;
  int rc = lwsi_wire_encode(&m, frame, len);
  /* 8 KiB of data, even all escaped, fits a frame many times over. */
  return rc == -EMSGSIZE ? -EINVAL : rc;
}

/* Keeps the frame as the latest broadcast of its kind (a copy). The list
 * stays in the order of the latest sends, so that a replay is the same
 * stream with the superseded messages left out. */
static int leader_keep(struct lwsi_rdzv *r, const char *kind, const uint8_t *frame, size_t len)
{
  if (r->kept == NULL) {
    r->kept = calloc(LWSI_RDZV_APP_KEPT, sizeof(*r->kept));
    if (r->kept == NULL)
      return -ENOMEM;
  }
  uint32_t n = 0, same = LWSI_RDZV_APP_KEPT;
  for (; n < LWSI_RDZV_APP_KEPT && r->kept[n].kind[0] != '\0'; n++)
    if (strcmp(r->kept[n].kind, kind) == 0)
      same = n;
  if (same == LWSI_RDZV_APP_KEPT && n == LWSI_RDZV_APP_KEPT)
    return 0; /* more kinds than we keep: documented */
  uint8_t *copy = malloc(len);
  if (copy == NULL)
    return -ENOMEM;
  memcpy(copy, frame, len);
  if (same < LWSI_RDZV_APP_KEPT) {
    free(r->kept[same].frame);
    memmove(&r->kept[same], &r->kept[same + 1], (n - same - 1) * sizeof(*r->kept));
    n--;
  }
  struct lwsi_rdzv_kept *k = &r->kept[n];
  copy_text(k->kind, sizeof(k->kind), kind);
  k->frame = copy;
  k->len = len;
  if (n + 1 < LWSI_RDZV_APP_KEPT)
    r->kept[n + 1].kind[0] = '\0';
  return 0;
}

int lwsi_rdzv_app_broadcast(struct lwsi_rdzv *r, const char *kind, const char *data)
{
  if (!lwsi_wire_kind_ok(kind) || !lwsi_wire_data_ok(data))
    return -EINVAL;
  if (!r->leader || r->state != LWSI_RDZV_RELEASED)
    return -EPERM;
  uint8_t *frame;
  size_t len;
  int rc = app_encode(kind, data, &frame, &len);
  if (rc < 0)
    return rc;
  /* Kept first: on ENOMEM nothing has gone out, and the caller may retry. */
  rc = leader_keep(r, kind, frame, len);
  if (rc < 0) {
    free(frame);
    return rc;
  }
  /* Queued behind the release frame on every connection (libuv writes a
   * stream's requests in order), so it never overtakes the release. */
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    struct lwsi_rdzv_conn *c = r->slots[i].conn;
    if (c == NULL || c->state != C_MEMBER || !r->slots[i].alive)
      continue;
    uint8_t *copy = malloc(len);
    if (copy == NULL) {
      mark_broken(c, -ENOMEM, "out of memory");
      continue;
    }
    memcpy(copy, frame, len);
    send_frame(c, copy, len);
  }
  free(frame);
  return 0;
}

int lwsi_rdzv_app_send(struct lwsi_rdzv *r, const char *kind, const char *data)
{
  if (!lwsi_wire_kind_ok(kind) || !lwsi_wire_data_ok(data))
    return -EINVAL;
  if (r->leader || r->state != LWSI_RDZV_RELEASED)
    return -EPERM;
  struct lwsi_rdzv_conn *c = r->conn;
  if (c == NULL || c->state != C_MEMBER || c->broken)
    return -ENOTCONN;
  uint8_t *frame;
  size_t len;
  int rc = app_encode(kind, data, &frame, &len);
  if (rc < 0)
    return rc;
  rc = send_frame(c, frame, len);
  if (rc == -ENOMEM)
    return rc;
  /* Any other failure broke the connection: the loss is reported. */
  return rc < 0 ? -ENOTCONN : 0;
}

uint32_t lwsi_rdzv_size(const struct lwsi_rdzv *r) { return r->cfg.size; }

uint32_t lwsi_rdzv_joined(const struct lwsi_rdzv *r)
{
  if (r->state == LWSI_RDZV_RELEASED)
    return r->cfg.size;
  if (r->leader)
    return r->njoined + 1;
  return r->heard_missing ? r->njoined + 1 : 0;
}

int lwsi_rdzv_member(const struct lwsi_rdzv *r, uint32_t rank, struct lwsi_rdzv_member *out)
{
  memset(out, 0, sizeof(*out));
  if (r->slots == NULL || rank >= r->cfg.size)
    return -ENOENT;
  const struct lwsi_rdzv_slot *s = &r->slots[rank];
  uint64_t now = uv_now(r->loop);
  out->rank = rank;
  copy_text(out->addr, sizeof(out->addr), rank == 0 && r->leader ? r->leader_addr : s->addr);
  copy_text(out->pod, sizeof(out->pod), s->pod);
  out->joined = s->joined;
  out->alive = s->alive;
  out->hb_age_ms = s->watched && s->joined ? (int64_t)(now - s->last_rx) : -1;
  out->rtt_us = s->rtt_us;
  out->has_state = s->has_state;
  copy_text(out->child, sizeof(out->child), s->child);
  out->upstream = s->upstream;
  return 0;
}

const char *lwsi_rdzv_missing(const struct lwsi_rdzv *r) { return r->missing; }
