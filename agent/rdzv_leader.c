/* The leader's side of the rendezvous (docs/protocol.md): the listener,
 * the connections that have not joined yet, the checks of each join and of
 * the whole group, the release, and after it the members' liveness, their
 * losses and the app broadcasts kept for a member that rejoins. Owns
 * r->as_leader; the shared machinery calls in through
 * lwsi__rdzv_leader_ops. */
#include "rdzv_int.h"

#include "lwsinit/crypto.h"
#include "lwsinit/launchck.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* After a refusal the leader waits this long for the worker to read the
 * reason and close, so that the reason is not lost to a reset. */
#define DRAIN_MS 1000
/* A whole group may connect at once; listen(2) caps this at somaxconn. */
#define LISTEN_BACKLOG 4096

/* The waiting list goes to every joined worker, so one per join would be
 * O(size^2) frames while a large group forms (docs/design.md, scaling):
 * it goes out at most every LWSI_RDZV_WAITING_MS, with the latest list.
 * It only informs (workers show it), so its lag costs nothing. */
#define LWSI_RDZV_WAITING_MS 200

/* ---- small helpers ---- */

/* "900 s", or "600 ms" for what is not whole seconds (tests, mostly). */
static void duration(char *buf, size_t len, uint64_t ms)
{
  if (ms % 1000 == 0)
    lwsi_text_printf(buf, len, "%llu s", (unsigned long long)(ms / 1000));
  else
    lwsi_text_printf(buf, len, "%llu ms", (unsigned long long)ms);
}

static void sa_ip(const struct sockaddr_storage *ss, char *out, size_t len)
{
  char buf[LWSI_WIRE_ADDR_MAX] = "";
  if (uv_ip_name((const struct sockaddr *)ss, buf, sizeof(buf)) < 0)
    lwsi_text_copy(buf, sizeof(buf), "?");
  /* A v4 peer of a dual-stack listener shows as ::ffff:a.b.c.d. */
  const char *p = buf;
  if (strncmp(p, "::ffff:", 7) == 0 && strchr(p + 7, '.') != NULL)
    p += 7;
  lwsi_text_copy(out, len, p);
}

/* ---- the pending list and the member table ---- */

static void pending_remove(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  if (!c->in_pending)
    return;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    r->as_leader.pending = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->in_pending = false;
  r->as_leader.npending--;
}

static void pending_add(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  c->prev = NULL;
  c->next = r->as_leader.pending;
  if (r->as_leader.pending != NULL)
    r->as_leader.pending->prev = c;
  r->as_leader.pending = c;
  c->in_pending = true;
  r->as_leader.npending++;
}

static void leader_detach(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  pending_remove(r, c);
  if (r->slots != NULL && c->rank < r->cfg.size && r->slots[c->rank].conn == c)
    r->slots[c->rank].conn = NULL;
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
  lwsi__rdzv_format_ranks(r->missing, sizeof(r->missing), list, total < 64 ? total : 64, total);
  r->nmissing = total;
}

/* ---- sending to the members ---- */

/* One frame to every live member, in rank order, written back to back. */
static void leader_send_members(struct lwsi_rdzv *r, const uint8_t *frame, size_t len)
{
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    struct lwsi_rdzv_conn *c = r->slots[i].conn;
    if (c == NULL || c->state != C_MEMBER || !r->slots[i].alive)
      continue;
    lwsi__rdzv_send_copy(c, frame, len);
  }
}

static void leader_send_all(struct lwsi_rdzv *r, const struct lwsi_msg *m)
{
  uint8_t *frame;
  size_t len;
  if (lwsi_wire_encode(m, &frame, &len) < 0)
    return;
  leader_send_members(r, frame, len);
  free(frame);
}

static void leader_broadcast_waiting(struct lwsi_rdzv *r)
{
  if (r->state != LWSI_RDZV_JOINING) {
    r->as_leader.notify_waiting = false;
    return;
  }
  uint64_t now = uv_now(r->loop);
  if (r->as_leader.waiting_sent && now - r->as_leader.waiting_at < LWSI_RDZV_WAITING_MS) {
    /* Still due: the defer timer brings us back when the interval ends
     * (an earlier schedule_defer only makes us check sooner). */
    lwsi__rdzv_schedule_defer_in(r, LWSI_RDZV_WAITING_MS - (now - r->as_leader.waiting_at));
    return;
  }
  r->as_leader.notify_waiting = false;
  r->as_leader.waiting_sent = true;
  r->as_leader.waiting_at = now;
  uint32_t list[LWSI_WIRE_MAX_LISTED];
  struct lwsi_msg m = {.type = LWSI_MSG_WAITING};
  m.waiting.nmissing = collect_missing(r, list, LWSI_WIRE_MAX_LISTED);
  m.waiting.nlisted =
      m.waiting.nmissing < LWSI_WIRE_MAX_LISTED ? m.waiting.nmissing : LWSI_WIRE_MAX_LISTED;
  m.waiting.missing = list;
  m.waiting.joined = r->as_leader.njoined + 1;
  leader_send_all(r, &m);
}

/* ---- failure and release ---- */

/* Ends the rendezvous before release: every joined worker hears why
 * (sent); our own caller gets local, or the same text when NULL. */
static void leader_fail(struct lwsi_rdzv *r, enum lwsi_rdzv_ev type, const char *sent,
                        const char *local)
{
  r->state = LWSI_RDZV_FAILED;
  lwsi_text_copy(r->as_leader.fail_reason, sizeof(r->as_leader.fail_reason), sent);
  if (r->deadline_open)
    uv_timer_stop(&r->deadline);
  struct lwsi_msg m = {.type = LWSI_MSG_FAIL};
  lwsi_text_copy(m.fail.reason, sizeof(m.fail.reason), sent);
  leader_send_all(r, &m);
  lwsi__rdzv_emit(r, type, -1, "", "", 0, "%s", local != NULL ? local : sent);
}

/* Ranks that differ from the leader in one respect, for one line. */
struct mismatch {
  uint32_t ranks[64];
  uint32_t n;
  char shown[256]; /* "rank 3 has 4, rank 5 has 2" for the first 8 */
  size_t used;
};

static void mismatch_add(struct mismatch *m, uint32_t rank, const char *value)
{
  if (m->n < 64)
    m->ranks[m->n] = rank;
  if (m->n < 8 && m->used + 24 + strlen(value) < sizeof(m->shown)) {
    lwsi_text_printf(m->shown + m->used, sizeof(m->shown) - m->used, "%srank %u has %s",
                     m->n ? ", " : "", rank, value);
    m->used += strlen(m->shown + m->used);
  }
  m->n++;
}

/* "the GPU count differs from the leader's 8 on rank 3 (rank 3 has 4)",
 * appended to why after "; " when why is not empty. */
static void mismatch_say(const struct mismatch *m, const char *what, const char *leaders,
                         char *why, size_t len)
{
  if (m->n == 0)
    return;
  char ranks[200];
  lwsi__rdzv_format_ranks(ranks, sizeof(ranks), m->ranks, m->n < 64 ? m->n : 64, m->n);
  size_t o = strlen(why);
  lwsi_text_printf(why + o, len - o, "%s%s differs from the leader's %s on %s (%s%s)",
                   o ? "; " : "", what, leaders, ranks, m->shown, m->n > 8 ? ", ..." : "");
}

/* Cuts text to at most max bytes on a character boundary, ending it with
 * "..." when it was longer: a reason must stay valid UTF-8 to go on the
 * wire. */
static void cut_text(char *text, size_t max)
{
  size_t n = strlen(text);
  if (n <= max)
    return;
  n = max - 3;
  while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
    n--;
  memcpy(text + n, "...", 4);
}

/* What every member must share with the leader, whatever --launch-check
 * says: the preset, {dist_port} and the GPU count. A difference would make
 * the engines fail later in a way much harder to read. */
static bool leader_check_shared(struct lwsi_rdzv *r, char *why, size_t len)
{
  struct mismatch preset = {.n = 0}, port = {.n = 0}, gpu = {.n = 0};
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    const struct lwsi_rdzv_slot *s = &r->slots[i];
    char v[LWSI_WIRE_PRESET_MAX + 2];
    if (strcmp(s->preset, r->preset) != 0) {
      lwsi_text_printf(v, sizeof(v), "'%s'", s->preset);
      mismatch_add(&preset, i, v);
    }
    if (s->dist_port != r->cfg.dist_port) {
      lwsi_text_printf(v, sizeof(v), "%u", s->dist_port);
      mismatch_add(&port, i, v);
    }
    if (s->gpus != r->cfg.gpus) {
      lwsi_text_printf(v, sizeof(v), "%u", s->gpus);
      mismatch_add(&gpu, i, v);
    }
  }
  if (preset.n == 0 && port.n == 0 && gpu.n == 0)
    return true;
  char big[1024] = "", l[LWSI_WIRE_PRESET_MAX + 2];
  lwsi_text_printf(l, sizeof(l), "'%s'", r->preset);
  mismatch_say(&preset, "the preset", l, big, sizeof(big));
  lwsi_text_printf(l, sizeof(l), "%u", r->cfg.dist_port);
  mismatch_say(&port, "{dist_port}", l, big, sizeof(big));
  lwsi_text_printf(l, sizeof(l), "%u", r->cfg.gpus);
  mismatch_say(&gpu, "the GPU count", l, big, sizeof(big));
  cut_text(big, len - 1);
  lwsi_text_copy(why, len, big);
  return false;
}

/* --launch-check strict: every member's launch command must be the
 * leader's, argument by argument (include/lwsinit/launchck.h). */
static bool leader_check_strict(struct lwsi_rdzv *r, char *why, size_t len)
{
  static const char head[] = "the launch command differs from the leader's: ";
  static const char tail[] =
      " (--launch-check strict: every member must run the same COMMAND and options)";
  char list[4096] = "", detail[1024];
  size_t o = 0;
  uint32_t differ = 0;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    if (lwsi_launchck_compare(&r->cmd, 0, &r->slots[i].cmd, i, detail, sizeof(detail)) == 0)
      continue;
    if (differ++ < 4 && o + 32 < sizeof(list)) {
      lwsi_text_printf(list + o, sizeof(list) - o, "%srank %u: %s", o ? "; " : "", i, detail);
      o += strlen(list + o);
    }
  }
  if (differ == 0)
    return true;
  if (differ > 4 && o + 48 < sizeof(list))
    lwsi_text_printf(list + o, sizeof(list) - o, "; %u ranks differ in all", differ);
  cut_text(list, len - 1 - (sizeof(head) - 1) - (sizeof(tail) - 1));
  lwsi_text_printf(why, len, "%s%s%s", head, list, tail);
  return false;
}

/* --launch-check warn: each member whose command differs is reported, and
 * the group forms. Returns false when the caller went quiet meanwhile. */
static bool leader_report_launch(struct lwsi_rdzv *r)
{
  char detail[1024];
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    uint32_t n = lwsi_launchck_compare(&r->cmd, 0, &r->slots[i].cmd, i, detail, sizeof(detail));
    if (n == 0)
      continue;
    if (!lwsi__rdzv_emit_count(r, LWSI_RDZV_EV_LAUNCH_DIFF, i, r->slots[i].addr,
                               r->slots[i].pod, n, detail))
      return false;
  }
  return true;
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
    lwsi_text_copy(mb[i].addr, sizeof(mb[i].addr), i == 0 ? r->leader_addr : r->slots[i].addr);
    lwsi_text_copy(mb[i].pod, sizeof(mb[i].pod), i == 0 ? r->pod : r->slots[i].pod);
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
  if (!leader_check_shared(r, why, sizeof(why)) ||
      (r->cfg.launch_check == LWSI_LAUNCHCK_STRICT && !leader_check_strict(r, why, sizeof(why)))) {
    leader_fail(r, LWSI_RDZV_EV_FAILED, why, NULL);
    return;
  }
  if (r->cfg.launch_check == LWSI_LAUNCHCK_WARN && !leader_report_launch(r))
    return;
  uint8_t *frame = NULL;
  size_t len = 0;
  int rc = n > 1 ? leader_release_frame(r, &frame, &len) : 0;
  if (rc < 0) {
    char e[LWSI_WIRE_REASON_MAX];
    lwsi_text_printf(e, sizeof(e), "cannot send the member table of %u members: %s", n,
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
  leader_send_members(r, frame, len);
  free(frame);
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_RELEASED, -1, "", "", 0,
                  "all %u members joined; the group is released", n);
}

static void leader_maybe_release(struct lwsi_rdzv *r)
{
  if (r->state == LWSI_RDZV_JOINING && r->as_leader.njoined == r->cfg.size - 1)
    leader_release(r);
}

/* ---- members and joins ---- */

/* A joined worker's connection ended (closed, silent, bye, protocol error).
 * Before release its rank is free again; after, it is a lost member. */
static void leader_member_gone(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *why)
{
  uint32_t rank = c->rank;
  struct lwsi_rdzv_slot *s = &r->slots[rank];
  char addr[LWSI_WIRE_ADDR_MAX];
  lwsi_text_copy(addr, sizeof(addr), c->addr);
  lwsi__rdzv_conn_close(c);
  if (r->state == LWSI_RDZV_JOINING) {
    lwsi__rdzv_slot_reset(s);
    r->as_leader.njoined--;
    update_missing(r);
    r->as_leader.notify_waiting = true;
    lwsi__rdzv_schedule_defer(r);
    lwsi__rdzv_emit(r, LWSI_RDZV_EV_DEPARTED, rank, addr, "", 0, "%s", why);
  } else if (r->state == LWSI_RDZV_RELEASED) {
    if (!s->alive)
      return;
    s->alive = false;
    struct lwsi_msg m = {.type = LWSI_MSG_LOST};
    m.lost.rank = rank;
    lwsi_text_copy(m.lost.reason, sizeof(m.lost.reason), why);
    leader_send_all(r, &m);
    lwsi__rdzv_emit(r, LWSI_RDZV_EV_LOST, rank, addr, "", 0, "%s", why);
  }
}

/* Refuses a join: the worker gets the reason, we wait for it to close.
 * j: the worker's join, when the refusal answers one. With it and a token
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
  lwsi_text_copy(m.refuse.code, sizeof(m.refuse.code), code);
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
  lwsi__rdzv_send_msg(c, &m);
  c->state = C_DRAINING;
  c->deadline = uv_now(r->loop) + DRAIN_MS;
  lwsi__rdzv_tick_arm(r, c->deadline);
  /* FIN after the refusal, so the worker reads the reason before the end. */
  if (!c->broken && uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, NULL) < 0)
    lwsi__rdzv_conn_close(c);
  return lwsi__rdzv_emit(r, LWSI_RDZV_EV_REFUSED, rank, c->addr, "", 0, "%s", m.refuse.reason);
}

static void leader_send_welcome(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                                const struct lwsi_msg_join *j)
{
  struct lwsi_msg m = {.type = LWSI_MSG_WELCOME};
  m.welcome.rank = j->rank;
  if (r->token != NULL) {
    m.welcome.auth = true;
    if (lwsi_wire_welcome_mac(r->token, r->cfg.token_len, &c->hello, j, m.welcome.proof) < 0)
      lwsi__rdzv_mark_broken(c, -EIO, "cannot compute the leader's proof");
  }
  lwsi__rdzv_send_msg(c, &m);
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
  lwsi__rdzv_tick_arm(r, c->last_rx + r->cfg.peer_timeout_ms + 1);
  lwsi_text_copy(s->addr, sizeof(s->addr), c->addr);
}

/* Sends c the member table, as every member got it at the release; a
 * table that cannot be made breaks c (why), which reports its loss. */
static void leader_send_release(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, const char *why)
{
  uint8_t *frame;
  size_t len;
  int rc = leader_release_frame(r, &frame, &len);
  if (rc < 0)
    lwsi__rdzv_mark_broken(c, rc, why);
  else
    lwsi__rdzv_send_frame(c, frame, len);
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
  lwsi__rdzv_conn_close(s->conn); /* quietly: the member is not lost, it moved */
  leader_seat(r, c, j);
  s->has_state = false;
  s->rtt_us = -1;
  leader_send_welcome(r, c, j);
  leader_send_release(r, c, "cannot send the member table again");
  /* It missed what was broadcast on its old connection: the latest of each
   * kind again, after the release, in the order they were sent. */
  for (uint32_t i = 0; r->as_leader.kept != NULL && i < LWSI_RDZV_APP_KEPT && !c->broken; i++) {
    const struct lwsi_rdzv_kept *k = &r->as_leader.kept[i];
    if (k->kind[0] == '\0' || lwsi__rdzv_send_copy(c, k->frame, k->len) == -ENOMEM)
      break;
  }
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_JOINED, j->rank, c->addr, j->pod, 0,
                  "rank %u reconnected before it heard the release; released it again", j->rank);
}

/* Seats a joined member in its rank's slot: what it said of itself in its
 * join, for the group checks, the launch check and the member table. */
static void leader_take_slot(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                             const struct lwsi_msg_join *j)
{
  struct lwsi_rdzv_slot *s = &r->slots[j->rank];
  lwsi__rdzv_slot_reset(s);
  leader_seat(r, c, j);
  s->joined = true;
  s->alive = true;
  lwsi_text_copy(s->pod, sizeof(s->pod), j->pod);
  memcpy(s->nonce, j->nonce, sizeof(s->nonce));
  lwsi_text_copy(s->preset, sizeof(s->preset), j->preset);
  s->dist_port = j->dist_port;
  s->gpus = j->gpus;
  if (lwsi_launchck_copy(&s->cmd, j->cmd_total, j->ncmd, j->cmd, j->digest) < 0) {
    /* Compared as an empty command: reported, never silently passed. */
    s->cmd.total = j->cmd_total;
  }
}

/* After release, with replacements admitted (the agent's --on-failure
 * restart), a new incarnation takes the seat of a member already reported
 * lost: a container restarted by the kubelet, or a pod recreated alone. It
 * gets the member table as any member does at release; the app broadcasts
 * kept from before are not sent again (they belong to the group's earlier
 * life: the agent tells the newcomer what it needs). */
static void leader_replace(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c,
                           const struct lwsi_msg_join *j)
{
  struct lwsi_rdzv_slot *s = &r->slots[j->rank];
  if (s->conn != NULL)
    lwsi__rdzv_conn_close(s->conn);
  leader_take_slot(r, c, j);
  leader_send_welcome(r, c, j);
  leader_send_release(r, c, "cannot send the member table");
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_JOINED, j->rank, c->addr, j->pod, 0,
                  "rank %u joined in the place of a lost member", j->rank);
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
    if (r->cfg.admit_replacements && !held->alive) {
      leader_replace(r, c, j);
      return;
    }
    leader_refuse(r, c, j, rank, "released",
                  "the group is already released and running; rank %u cannot rejoin it", j->rank);
    return;
  }
  if (r->state != LWSI_RDZV_JOINING) {
    leader_refuse(r, c, j, rank, "failed", "the group has failed: %s", r->as_leader.fail_reason);
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
    if (lwsi__rdzv_quiet(r) || c->state == C_CLOSING)
      return;
  }
  /* Joined. */
  leader_take_slot(r, c, j);
  r->as_leader.njoined++;
  if (r->leader_addr[0] == '\0') {
    /* The leader learns its own address from the way workers reach it. */
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
      sa_ip(&ss, r->leader_addr, sizeof(r->leader_addr));
  }
  leader_send_welcome(r, c, j);
  update_missing(r);
  if (!lwsi__rdzv_emit(r, LWSI_RDZV_EV_JOINED, j->rank, c->addr, j->pod, 0,
                       "rank %u joined (%u of %u)", j->rank, r->as_leader.njoined + 1, cfg->size))
    return;
  if (r->as_leader.njoined == cfg->size - 1) {
    /* Decided after this poll phase: a member whose close arrived in the
     * same batch as this join is seen gone before we release with it. */
    r->as_leader.release_due = true;
    lwsi__rdzv_mark_due(r);
  } else {
    r->as_leader.notify_waiting = true;
    lwsi__rdzv_schedule_defer(r);
  }
}

static void leader_drop(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err, const char *why)
{
  char addr[LWSI_WIRE_ADDR_MAX];
  lwsi_text_copy(addr, sizeof(addr), c->addr);
  lwsi__rdzv_conn_close(c);
  lwsi__rdzv_emit(r, LWSI_RDZV_EV_DROPPED, -1, addr, "", err, "%s", why);
}

/* ---- reading (lwsi__rdzv_leader_ops) ---- */

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
      lwsi_text_printf(why, sizeof(why), "sent %s instead of a join", lwsi__rdzv_decode_error(rc));
      leader_drop(r, c, rc, why);
    } else if (m.type != LWSI_MSG_JOIN) {
      lwsi_text_printf(why, sizeof(why), "sent a '%s' message instead of a join",
                       lwsi_wire_type_name(m.type));
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
    lwsi_text_printf(why, sizeof(why), "protocol error: sent %s", lwsi__rdzv_decode_error(rc));
    leader_member_gone(r, c, why);
  } else if (m.type == LWSI_MSG_HB) {
    lwsi__rdzv_take_hb(c, s, &m.hb);
  } else if (m.type == LWSI_MSG_BYE) {
    lwsi_text_printf(why, sizeof(why), "left: %s", m.bye.reason);
    leader_member_gone(r, c, why);
  } else if (m.type == LWSI_MSG_APP && r->state == LWSI_RDZV_RELEASED) {
    lwsi__rdzv_emit_app(r, c->rank, c->addr, s->pod, &m.app);
  } else if (m.type == LWSI_MSG_APP) {
    /* Only a released worker has anything to say to the agent. */
    leader_member_gone(r, c, "protocol error: sent an 'app' message before the release");
  } else {
    lwsi_text_printf(why, sizeof(why), "protocol error: sent an unexpected '%s' message",
                     lwsi_wire_type_name(m.type));
    leader_member_gone(r, c, why);
  }
out:
  lwsi_wire_msg_free(&m);
}

static void leader_eof(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, ssize_t err)
{
  char why[128];
  if (err == UV_EOF)
    lwsi_text_printf(why, sizeof(why), "closed the connection");
  else
    lwsi_text_printf(why, sizeof(why), "connection error: %s", uv_strerror((int)err));
  if (c->state == C_MEMBER)
    leader_member_gone(r, c, why);
  else if (c->state == C_DRAINING)
    lwsi__rdzv_conn_close(c);
  else
    leader_drop(r, c, (int)err, err == UV_EOF ? "closed the connection before joining" : why);
}

static void leader_garbage(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c, int err)
{
  char why[128];
  if (c->state == C_MEMBER) {
    lwsi_text_printf(why, sizeof(why), "protocol error: sent %s", lwsi__rdzv_decode_error(err));
    leader_member_gone(r, c, why);
  } else if (c->state == C_DRAINING) {
    lwsi__rdzv_conn_close(c);
  } else {
    lwsi_text_printf(why, sizeof(why), "sent garbage (%s)", lwsi__rdzv_decode_error(err));
    leader_drop(r, c, err, why);
  }
}

/* ---- accepting ---- */

static void leader_send_hello(struct lwsi_rdzv *r, struct lwsi_rdzv_conn *c)
{
  struct lwsi_msg m = {.type = LWSI_MSG_HELLO};
  memcpy(m.hello.nonce, r->nonce, sizeof(r->nonce));
  int rc = lwsi__rdzv_random(m.hello.challenge, sizeof(m.hello.challenge));
  m.hello.auth = r->token != NULL;
  if (rc < 0) {
    leader_drop(r, c, rc, "cannot draw a random challenge");
    return;
  }
  c->hello = m.hello;
  lwsi__rdzv_send_msg(c, &m);
}

/* Takes the next connection off the listener. */
static void leader_accept(struct lwsi_rdzv *r)
{
  char why[128];
  struct lwsi_rdzv_conn *c = lwsi__rdzv_conn_new(r);
  if (c == NULL) {
    /* libuv keeps the accepted fd and stops listening until uv_accept: the
     * tick tries again, so one failed allocation does not deafen us. */
    r->as_leader.accept_stuck = true;
    lwsi__rdzv_tick_arm(r, uv_now(r->loop) + r->tick_gap);
    lwsi__rdzv_emit(r, LWSI_RDZV_EV_DROPPED, -1, "", "", -ENOMEM,
                    "cannot accept a connection: out of memory (will try again)");
    return;
  }
  int rc = uv_accept((uv_stream_t *)&r->as_leader.listener, (uv_stream_t *)&c->tcp);
  if (rc < 0) {
    lwsi_text_printf(why, sizeof(why), "cannot accept a connection: %s", uv_strerror(rc));
    leader_drop(r, c, rc, why);
    return;
  }
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
    sa_ip(&ss, c->addr, sizeof(c->addr));
  else
    lwsi_text_copy(c->addr, sizeof(c->addr), "?");
  /* A bound on connections that have not joined: a flood of them costs a
   * fixed amount of memory, and members that have joined are not affected.
   * The oldest goes, not the newest: a real worker answers the hello within
   * one round trip, so idle connections cannot keep it out. */
  if (r->as_leader.npending >= r->cfg.max_pending) {
    struct lwsi_rdzv_conn *old = r->as_leader.pending;
    while (old != NULL && old->next != NULL)
      old = old->next; /* new ones are added at the head */
    if (old != NULL) {
      lwsi_text_printf(why, sizeof(why),
                       "dropped to make room: too many connections waiting to join (%u)",
                       r->cfg.max_pending);
      leader_drop(r, old, -EBUSY, why);
      if (lwsi__rdzv_quiet(r)) {
        lwsi__rdzv_conn_close(c);
        return;
      }
    }
  }
  pending_add(r, c);
  c->state = C_HELLO;
  c->deadline = uv_now(r->loop) + r->cfg.handshake_timeout_ms;
  lwsi__rdzv_tick_arm(r, c->deadline);
  rc = lwsi__rdzv_conn_read(c);
  if (rc < 0) {
    lwsi_text_printf(why, sizeof(why), "cannot read from the connection: %s", uv_strerror(rc));
    leader_drop(r, c, rc, why);
    return;
  }
  leader_send_hello(r, c);
}

static void on_connection(uv_stream_t *server, int status)
{
  struct lwsi_rdzv *r = server->data;
  if (lwsi__rdzv_quiet(r))
    return;
  if (status < 0) {
    lwsi__rdzv_emit(r, LWSI_RDZV_EV_DROPPED, -1, "", "", status, "cannot accept a connection: %s",
                    uv_strerror(status));
    return;
  }
  leader_accept(r);
}

/* ---- timers (lwsi__rdzv_leader_ops) ---- */

static bool leader_beats(const struct lwsi_rdzv *r)
{
  return r->state == LWSI_RDZV_JOINING || r->state == LWSI_RDZV_RELEASED;
}

static uint64_t leader_next_due(struct lwsi_rdzv *r, uint64_t due)
{
  bool beats = leader_beats(r);
  uint64_t silence = r->cfg.peer_timeout_ms + 1;
  due = lwsi__rdzv_hb_due(r, beats, due);
  if (r->as_leader.accept_stuck)
    due = lwsi__rdzv_min(due, uv_now(r->loop) + r->tick_gap);
  for (struct lwsi_rdzv_conn *c = r->as_leader.pending; c != NULL; c = c->next)
    due = lwsi__rdzv_min(due, c->deadline);
  for (uint32_t i = 1; beats && i < r->cfg.size; i++) {
    struct lwsi_rdzv_conn *c = r->slots[i].conn;
    if (c != NULL && c->state == C_MEMBER)
      due = lwsi__rdzv_min(due, c->last_rx + silence);
  }
  return due;
}

static void leader_tick(struct lwsi_rdzv *r)
{
  uint64_t now = uv_now(r->loop);
  char why[128];
  struct lwsi_rdzv_conn *c, *next;
  if (r->as_leader.accept_stuck && r->as_leader.listener_open &&
      !uv_is_closing((uv_handle_t *)&r->as_leader.listener)) {
    r->as_leader.accept_stuck = false;
    leader_accept(r);
    if (lwsi__rdzv_quiet(r))
      return;
  }
  for (c = r->as_leader.pending; c != NULL; c = next) {
    next = c->next; /* c may close; the list no longer holds it then */
    if (now < c->deadline)
      continue;
    if (c->state == C_DRAINING) {
      lwsi__rdzv_conn_close(c);
      continue;
    }
    lwsi_text_printf(why, sizeof(why), "did not join within %llu ms",
                     (unsigned long long)r->cfg.handshake_timeout_ms);
    leader_drop(r, c, -ETIMEDOUT, why);
    if (lwsi__rdzv_quiet(r))
      return;
    next = r->as_leader.pending; /* the callback may have changed the list: rescan */
  }
  if (!leader_beats(r))
    return;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    c = r->slots[i].conn;
    if (c == NULL || c->state != C_MEMBER || now - c->last_rx <= r->cfg.peer_timeout_ms)
      continue;
    lwsi_text_printf(why, sizeof(why), "silent for %llu ms",
                     (unsigned long long)(now - c->last_rx));
    leader_member_gone(r, c, why);
    if (lwsi__rdzv_quiet(r))
      return;
  }
  if (!lwsi__rdzv_hb_take_turn(r, now))
    return;
  struct lwsi_rdzv_local l;
  lwsi__rdzv_local_state(r, &l);
  if (lwsi__rdzv_quiet(r))
    return;
  for (uint32_t i = 1; i < r->cfg.size; i++) {
    c = r->slots[i].conn;
    if (c != NULL && c->state == C_MEMBER)
      lwsi__rdzv_send_hb(r, c, &l);
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
  lwsi_text_printf(why, sizeof(why),
                   "the leader's rendezvous deadline (%s) passed: %s never arrived", d,
                   r->missing);
  char bare[LWSI_WIRE_REASON_MAX];
  lwsi_text_printf(bare, sizeof(bare), "%s never arrived", r->missing);
  leader_fail(r, LWSI_RDZV_EV_TIMEOUT, why, bare);
}

/* The check phase: the release, when the last join made it due. */
static void leader_settle(struct lwsi_rdzv *r)
{
  if (r->as_leader.release_due) {
    r->as_leader.release_due = false;
    leader_maybe_release(r);
  }
}

static void leader_defer(struct lwsi_rdzv *r)
{
  if (r->as_leader.released_pending) {
    /* A group of one: released on the loop, never inside start. */
    r->as_leader.released_pending = false;
    leader_maybe_release(r);
    if (lwsi__rdzv_quiet(r))
      return;
  }
  struct lwsi_rdzv_conn *c, *next;
  for (c = r->as_leader.pending; c != NULL; c = next) {
    next = c->next;
    if (c->broken) {
      leader_drop(r, c, c->broken_err, c->broken_why);
      if (lwsi__rdzv_quiet(r))
        return;
      next = r->as_leader.pending;
    }
  }
  /* A loss may break another member's write: loop until none is left. */
  for (bool again = true; again;) {
    again = false;
    for (uint32_t i = 1; i < r->cfg.size; i++) {
      c = r->slots[i].conn;
      if (c != NULL && c->broken) {
        leader_member_gone(r, c, c->broken_why);
        if (lwsi__rdzv_quiet(r))
          return;
        again = true;
      }
    }
  }
  if (r->as_leader.notify_waiting)
    leader_broadcast_waiting(r);
}

/* ---- start, leave, close (lwsi__rdzv_leader_ops) ---- */

static int leader_open(struct lwsi_rdzv *r)
{
  struct sockaddr_storage ss;
  int rc;
  if ((rc = lwsi__rdzv_parse_ip(r->host[0] ? r->host : "0.0.0.0", r->cfg.port, &ss)) < 0)
    return rc;
  if ((rc = uv_tcp_init(r->loop, &r->as_leader.listener)) < 0)
    return rc;
  r->as_leader.listener.data = r;
  r->as_leader.listener_open = true;
  rc = uv_tcp_bind(&r->as_leader.listener, (const struct sockaddr *)&ss, 0);
  if (rc == UV_EAFNOSUPPORT && strcmp(r->host, "::") == 0) {
    /* A node without IPv6 (ipv6.disable=1): every IPv4 address instead.
     * The failed bind made no socket, so the same handle can bind again. */
    lwsi_text_copy(r->host, sizeof(r->host), "0.0.0.0");
    if ((rc = lwsi__rdzv_parse_ip(r->host, r->cfg.port, &ss)) == 0)
      rc = uv_tcp_bind(&r->as_leader.listener, (const struct sockaddr *)&ss, 0);
  }
  if (rc < 0 ||
      (rc = uv_listen((uv_stream_t *)&r->as_leader.listener, LISTEN_BACKLOG, on_connection)) < 0)
    return rc;
  r->slots[0].addr[0] = '\0';
  return 0;
}

static void leader_begin(struct lwsi_rdzv *r)
{
  update_missing(r);
  if (r->cfg.size == 1) {
    r->as_leader.released_pending = true;
    lwsi__rdzv_schedule_defer(r);
  }
}

static void leader_leave(struct lwsi_rdzv *r, const char *reason)
{
  for (uint32_t i = 1; i < r->cfg.size; i++)
    if (r->slots[i].conn != NULL && r->slots[i].conn->state == C_MEMBER)
      lwsi__rdzv_send_text(r->slots[i].conn, LWSI_MSG_BYE, reason);
  while (r->as_leader.pending != NULL)
    lwsi__rdzv_conn_close(r->as_leader.pending);
  /* New joins now find the port closed and retry elsewhere in time. */
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->as_leader.listener, r->as_leader.listener_open);
}

static void leader_close(struct lwsi_rdzv *r)
{
  while (r->as_leader.pending != NULL)
    lwsi__rdzv_conn_close(r->as_leader.pending);
  if (r->slots != NULL)
    for (uint32_t i = 0; i < r->cfg.size; i++)
      if (r->slots[i].conn != NULL)
        lwsi__rdzv_conn_close(r->slots[i].conn);
  lwsi__rdzv_close_handle(r, (uv_handle_t *)&r->as_leader.listener, r->as_leader.listener_open);
  if (r->as_leader.kept != NULL) {
    for (uint32_t i = 0; i < LWSI_RDZV_APP_KEPT; i++)
      free(r->as_leader.kept[i].frame);
    free(r->as_leader.kept);
    r->as_leader.kept = NULL;
  }
}

const struct lwsi_rdzv_ops lwsi__rdzv_leader_ops = {
    .open = leader_open,
    .begin = leader_begin,
    .frame = leader_frame,
    .eof = leader_eof,
    .garbage = leader_garbage,
    .detach = leader_detach,
    .settle = leader_settle,
    .deadline = leader_deadline,
    .tick = leader_tick,
    .next_due = leader_next_due,
    .defer = leader_defer,
    .leave = leader_leave,
    .close = leader_close,
};

/* ---- app broadcasts ---- */

/* Keeps the frame as the latest broadcast of its kind (a copy). The list
 * stays in the order of the latest sends, so that a replay is the same
 * stream with the superseded messages left out. */
static int leader_keep(struct lwsi_rdzv *r, const char *kind, const uint8_t *frame, size_t len)
{
  if (r->as_leader.kept == NULL) {
    r->as_leader.kept = calloc(LWSI_RDZV_APP_KEPT, sizeof(*r->as_leader.kept));
    if (r->as_leader.kept == NULL)
      return -ENOMEM;
  }
  struct lwsi_rdzv_kept *kept = r->as_leader.kept;
  uint32_t n = 0, same = LWSI_RDZV_APP_KEPT;
  for (; n < LWSI_RDZV_APP_KEPT && kept[n].kind[0] != '\0'; n++)
    if (strcmp(kept[n].kind, kind) == 0)
      same = n;
  if (same == LWSI_RDZV_APP_KEPT && n == LWSI_RDZV_APP_KEPT)
    return 0; /* more kinds than we keep: documented */
  uint8_t *copy = malloc(len);
  if (copy == NULL)
    return -ENOMEM;
  memcpy(copy, frame, len);
  if (same < LWSI_RDZV_APP_KEPT) {
    free(kept[same].frame);
    memmove(&kept[same], &kept[same + 1], (n - same - 1) * sizeof(*kept));
    n--;
  }
  struct lwsi_rdzv_kept *k = &kept[n];
  lwsi_text_copy(k->kind, sizeof(k->kind), kind);
  k->frame = copy;
  k->len = len;
  if (n + 1 < LWSI_RDZV_APP_KEPT)
    kept[n + 1].kind[0] = '\0';
  return 0;
}

int lwsi__rdzv_leader_app(struct lwsi_rdzv *r, const char *kind, const char *data)
{
  uint8_t *frame;
  size_t len;
  int rc = lwsi__rdzv_app_encode(kind, data, &frame, &len);
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
  leader_send_members(r, frame, len);
  free(frame);
  return 0;
}

int lwsi__rdzv_leader_app_to(struct lwsi_rdzv *r, uint32_t rank, const char *kind,
                             const char *data)
{
  struct lwsi_rdzv_conn *c = r->slots[rank].conn;
  if (c == NULL || c->state != C_MEMBER || !r->slots[rank].alive || c->broken)
    return -ENOTCONN;
  return lwsi__rdzv_send_app(c, kind, data);
}
