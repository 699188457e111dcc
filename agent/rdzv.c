/* The rendezvous's public face (include/lwsinit/rdzv.h): starting and
 * closing it, leaving the group, the getters /status reads, the app
 * messages, and the names of events and states. It checks what the caller
 * asks and hands the work to the role picked at start (agent/rdzv_int.h);
 * the machinery is in rdzv_conn.c, the roles in rdzv_leader.c and
 * rdzv_worker.c. */
#include "rdzv_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MAX 4096

static const char *const ev_names[] = {
    [LWSI_RDZV_EV_RETRYING] = "retrying", [LWSI_RDZV_EV_JOINED] = "joined",
    [LWSI_RDZV_EV_WAITING] = "waiting",   [LWSI_RDZV_EV_REFUSED] = "refused",
    [LWSI_RDZV_EV_DROPPED] = "dropped",   [LWSI_RDZV_EV_DEPARTED] = "departed",
    [LWSI_RDZV_EV_RELEASED] = "released", [LWSI_RDZV_EV_FAILED] = "failed",
    [LWSI_RDZV_EV_TIMEOUT] = "timeout",   [LWSI_RDZV_EV_LOST] = "lost",
    [LWSI_RDZV_EV_APP] = "app",           [LWSI_RDZV_EV_LAUNCH_DIFF] = "launch_diff",
    [LWSI_RDZV_EV_UNVERIFIED] = "unverified",
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

/* ---- start and close ---- */

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
  /* The role, once: close must find it even when start fails. */
  r->ops = cfg->rank == 0 ? &lwsi__rdzv_leader_ops : &lwsi__rdzv_worker_ops;
  r->cfg = *cfg;
  r->cfg.revision = r->revision;
  r->cfg.pod = r->pod;
  r->cfg.host = r->host;
  r->cfg.source = r->source;
  r->cfg.token = NULL;
  r->cfg.preset = r->preset;
  r->cfg.cmd = &r->cmd;
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
  if (c->refused_retry_ms == 0 && c->size > 0) {
    /* Every delay is at least 3/4 of the step, so (size - 1) workers make
     * at most (size - 1) x 4000 / (3 x step) attempts a second in all. */
    uint64_t fair = ((uint64_t)(c->size - 1) * 4000 + 3 * LWSI_RDZV_REFUSED_RATE - 1) /
                    (3 * LWSI_RDZV_REFUSED_RATE);
    c->refused_retry_ms = fair > LWSI_RDZV_REFUSED_MIN_MS ? fair : LWSI_RDZV_REFUSED_MIN_MS;
  }
  if (c->refused_retry_ms > c->retry_max_ms)
    c->refused_retry_ms = c->retry_max_ms;
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
      (rc = check_text(r->source, sizeof(r->source), cfg->source)) < 0 ||
      (rc = check_text(r->preset, sizeof(r->preset), cfg->preset)) < 0)
    return rc;
  /* What goes in the join must pass the peer's decoder; better to say so
   * now than to have every join fail later. */
  if (!lwsi_wire_text_ok(r->revision) || !lwsi_wire_text_ok(r->pod) ||
      !lwsi_wire_text_ok(r->preset) || cfg->dist_port > 65535)
    return -EINVAL;
  if (cfg->cmd != NULL) {
    const struct lwsi_launchck_cmd *k = cfg->cmd;
    if (k->n > LWSI_WIRE_CMD_MAX_ARGS || k->n > k->total || k->total > LWSI_WIRE_CMD_MAX_TOTAL)
      return -EINVAL;
    size_t text = 0;
    for (uint32_t i = 0; i < k->n; i++) {
      if (k->args[i] == NULL || !lwsi_wire_text_ok(k->args[i]))
        return -EINVAL;
      text += strlen(k->args[i]);
    }
    if (text > LWSI_WIRE_CMD_MAX_TEXT)
      return -EINVAL;
    if ((rc = lwsi_launchck_copy(&r->cmd, k->total, k->n, k->args, k->digest)) < 0)
      return rc;
  } else if ((rc = lwsi_launchck_copy(&r->cmd, 0, 0, NULL, r->cmd.digest)) < 0) {
    return rc;
  }
  r->leader = c->rank == 0;
  r->open = cfg->token_len == 0;
  if (!r->open) {
    r->token = malloc(cfg->token_len);
    if (r->token == NULL)
      return -ENOMEM;
    memcpy(r->token, cfg->token, cfg->token_len);
  }
  /* The incarnation: a restarted agent is a different member, always. */
  if ((rc = lwsi__rdzv_random(r->nonce, sizeof(r->nonce))) < 0)
    return rc;
  for (size_t i = 0; i < sizeof(r->nonce); i++)
    lwsi_text_printf(r->nonce_hex + 2 * i, 3, "%02x", r->nonce[i]);
  r->slots = calloc(c->size, sizeof(*r->slots));
  r->rbuf = malloc(LWSI_WIRE_HDR_LEN + LWSI_WIRE_MAX_PAYLOAD);
  if (r->slots == NULL || r->rbuf == NULL)
    return -ENOMEM;
  for (uint32_t i = 0; i < c->size; i++)
    lwsi__rdzv_slot_reset(&r->slots[i]);
  struct lwsi_rdzv_slot *self = &r->slots[c->rank];
  self->joined = true;
  self->alive = true;
  lwsi_text_copy(self->pod, sizeof(self->pod), r->pod);
  if ((rc = lwsi__rdzv_timers_open(r)) < 0 || (rc = r->ops->open(r)) < 0 ||
      (rc = lwsi__rdzv_timers_start(r)) < 0)
    return rc;
  r->ops->begin(r);
  return 0;
}

void lwsi_rdzv_close(struct lwsi_rdzv *r)
{
  if (r->loop == NULL || r->state == LWSI_RDZV_CLOSED)
    return;
  r->state = LWSI_RDZV_CLOSED;
  r->ops->close(r);
  lwsi__rdzv_timers_close(r);
  for (uint32_t i = 0; r->slots != NULL && i < r->cfg.size; i++)
    lwsi_launchck_free(&r->slots[i].cmd);
  lwsi_launchck_free(&r->cmd);
  free(r->slots);
  r->slots = NULL;
  free(r->rbuf);
  r->rbuf = NULL;
  if (r->token != NULL) {
    explicit_bzero(r->token, r->cfg.token_len);
    free(r->token);
    r->token = NULL;
  }
}

int lwsi_rdzv_leave(struct lwsi_rdzv *r, const char *reason)
{
  if (r->state == LWSI_RDZV_IDLE)
    return -EINVAL;
  if (lwsi__rdzv_quiet(r))
    return -EALREADY;
  if (reason == NULL || reason[0] == '\0')
    reason = "stopping";
  r->ops->leave(r, reason);
  r->state = LWSI_RDZV_LEFT;
  lwsi__rdzv_timers_stop(r);
  return 0;
}

/* ---- the leader's address ---- */

uint16_t lwsi_rdzv_port(const struct lwsi_rdzv *r)
{
  if (!r->leader || !r->as_leader.listener_open)
    return 0;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (uv_tcp_getsockname(&r->as_leader.listener, (struct sockaddr *)&ss, &len) < 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}

void lwsi_rdzv_beat_soon(struct lwsi_rdzv *r)
{
  if (r->state != LWSI_RDZV_RELEASED)
    return;
  uint64_t now = uv_now(r->loop);
  if (r->next_hb > now)
    r->next_hb = now;
  uint64_t earliest = r->last_tick + r->tick_gap;
  lwsi__rdzv_tick_arm(r, earliest > now ? earliest : now);
}

int lwsi_rdzv_set_leader(struct lwsi_rdzv *r, const char *ip)
{
  if (r->leader || r->state == LWSI_RDZV_IDLE || ip == NULL)
    return -EINVAL;
  if (r->state != LWSI_RDZV_JOINING)
    return -EALREADY;
  struct sockaddr_storage ss;
  if (strlen(ip) >= sizeof(r->host) || lwsi__rdzv_parse_ip(ip, r->cfg.port, &ss) < 0)
    return -EINVAL;
  if (strcmp(ip, r->host) != 0)
    lwsi__rdzv_worker_set_leader(r, ip, &ss);
  return 0;
}

int lwsi_rdzv_rejoin(struct lwsi_rdzv *r)
{
  if (r->leader || r->state == LWSI_RDZV_IDLE)
    return -EINVAL;
  if (r->state != LWSI_RDZV_RELEASED || r->slots[0].alive)
    return -EALREADY;
  lwsi__rdzv_worker_rejoin(r);
  return 0;
}

/* ---- app messages ---- */

int lwsi_rdzv_app_broadcast(struct lwsi_rdzv *r, const char *kind, const char *data)
{
  if (!lwsi_wire_kind_ok(kind) || !lwsi_wire_data_ok(data))
    return -EINVAL;
  if (!r->leader || r->state != LWSI_RDZV_RELEASED)
    return -EPERM;
  return lwsi__rdzv_leader_app(r, kind, data);
}

int lwsi_rdzv_app_send(struct lwsi_rdzv *r, const char *kind, const char *data)
{
  if (!lwsi_wire_kind_ok(kind) || !lwsi_wire_data_ok(data))
    return -EINVAL;
  if (r->leader || r->state != LWSI_RDZV_RELEASED)
    return -EPERM;
  return lwsi__rdzv_worker_app(r, kind, data);
}

int lwsi_rdzv_app_send_to(struct lwsi_rdzv *r, uint32_t rank, const char *kind, const char *data)
{
  if (!lwsi_wire_kind_ok(kind) || !lwsi_wire_data_ok(data) || rank == 0 || rank >= r->cfg.size)
    return -EINVAL;
  if (!r->leader || r->state != LWSI_RDZV_RELEASED)
    return -EPERM;
  return lwsi__rdzv_leader_app_to(r, rank, kind, data);
}

/* ---- getters ---- */

uint32_t lwsi_rdzv_size(const struct lwsi_rdzv *r) { return r->cfg.size; }

uint32_t lwsi_rdzv_joined(const struct lwsi_rdzv *r)
{
  if (r->state == LWSI_RDZV_RELEASED)
    return r->cfg.size;
  if (r->leader)
    return r->as_leader.njoined + 1;
  return r->as_worker.heard_missing ? r->as_worker.njoined + 1 : 0;
}

int lwsi_rdzv_member(const struct lwsi_rdzv *r, uint32_t rank, struct lwsi_rdzv_member *out)
{
  memset(out, 0, sizeof(*out));
  if (r->slots == NULL || rank >= r->cfg.size)
    return -ENOENT;
  const struct lwsi_rdzv_slot *s = &r->slots[rank];
  uint64_t now = uv_now(r->loop);
  out->rank = rank;
  lwsi_text_copy(out->addr, sizeof(out->addr), rank == 0 && r->leader ? r->leader_addr : s->addr);
  lwsi_text_copy(out->pod, sizeof(out->pod), s->pod);
  out->joined = s->joined;
  out->alive = s->alive;
  out->hb_age_ms = s->watched && s->joined ? (int64_t)(now - s->last_rx) : -1;
  out->rtt_us = s->rtt_us;
  out->has_state = s->has_state;
  lwsi_text_copy(out->child, sizeof(out->child), s->child);
  out->upstream = s->upstream;
  out->has_health = s->has_health;
  out->upstream_on = s->upstream_on;
  out->upstream_age_ms =
      s->has_health ? (int64_t)(s->upstream_age_ms + (now - s->health_at)) : -1;
  lwsi_text_copy(out->upstream_error, sizeof(out->upstream_error), s->upstream_error);
  out->stopping = s->stopping;
  return 0;
}

const char *lwsi_rdzv_missing(const struct lwsi_rdzv *r) { return r->missing; }
