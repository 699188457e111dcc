/* The rendezvous, in process: a leader and its workers on one loop, on
 * 127.0.0.x. Every wait has a deadline; every test opens and closes its own
 * loop, and checks that it closes cleanly. */
#include "lwsinit/rdzv.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tap.h"

#define EVN (LWSI_RDZV_EV_UNVERIFIED + 1)

struct agent {
  struct lwsi_rdzv r;
  bool started;
  char name[16];
  char pod[32];
  int count[EVN];
  char last[EVN][800];
  int64_t last_rank[EVN];
  uint64_t at[EVN]; /* uv_now of the last event of each type */
  uint64_t seq[EVN];
  int too_many;    /* DROPPED: over the pending bound */
  int hs_timeouts; /* DROPPED: no join in time */
  /* APP events: what arrived, in order. */
  int napp;
  char app_kind[8][40];
  char *app_data[8]; /* malloc'd copies */
  int64_t app_rank[8];
  uint64_t app_seq[8];
  /* The test's hook, run after the event is recorded. */
  void (*hook)(struct agent *a, const struct lwsi_rdzv_event *ev);
  bool upstream_down; /* what on_local reports */
};

static uv_loop_t loop;
static uv_timer_t wake;
static uint64_t evseq;
static struct agent *the_leader;
static bool released_early; /* a release seen before the leader's last join */
static int bad_app_fields;  /* an event with kind or data NULL, or set outside APP */

static uint64_t now_ms(void)
{
  uv_update_time(&loop);
  return uv_now(&loop);
}

static void on_wake(uv_timer_t *t) {}

/* Runs the loop until cond holds or ms pass; evaluates to cond. */
#define WAIT_UNTIL(cond, ms)                                                                       \
  ({                                                                                               \
    uint64_t end_ = now_ms() + (ms);                                                               \
    bool ok_;                                                                                      \
    uv_timer_start(&wake, on_wake, (ms), 0);                                                       \
    while (!(ok_ = (cond)) && now_ms() < end_)                                                     \
      uv_run(&loop, UV_RUN_ONCE);                                                                  \
    uv_timer_stop(&wake);                                                                          \
    ok_;                                                                                           \
  })

static void pause_ms(uint64_t ms) { (void)WAIT_UNTIL(false, ms); }

static void on_event(struct lwsi_rdzv *r, const struct lwsi_rdzv_event *ev)
{
  struct agent *a = r->data;
  a->count[ev->type]++;
  snprintf(a->last[ev->type], sizeof(a->last[ev->type]), "%s", ev->reason);
  a->last_rank[ev->type] = ev->rank;
  a->at[ev->type] = uv_now(&loop);
  a->seq[ev->type] = ++evseq;
  if (ev->kind == NULL || ev->data == NULL ||
      (ev->type != LWSI_RDZV_EV_APP && (ev->kind[0] != '\0' || ev->data[0] != '\0')))
    bad_app_fields++;
  if (ev->type == LWSI_RDZV_EV_APP && ev->kind != NULL && ev->data != NULL && a->napp < 8) {
    snprintf(a->app_kind[a->napp], sizeof(a->app_kind[0]), "%s", ev->kind);
    a->app_data[a->napp] = strdup(ev->data);
    a->app_rank[a->napp] = ev->rank;
    a->app_seq[a->napp] = evseq;
    a->napp++;
  }
  if (ev->type == LWSI_RDZV_EV_DROPPED && strstr(ev->reason, "too many connections") != NULL)
    a->too_many++;
  if (ev->type == LWSI_RDZV_EV_DROPPED && strstr(ev->reason, "did not join within") != NULL)
    a->hs_timeouts++;
  if (getenv("RDZV_TRACE"))
    printf("# %6llu %-8s %-9s rank %lld addr %s: %s\n", (unsigned long long)uv_now(&loop), a->name,
           lwsi_rdzv_event_name(ev->type), (long long)ev->rank, ev->addr, ev->reason);
  if (ev->type == LWSI_RDZV_EV_RELEASED) {
    struct agent *l = the_leader;
    /* Nobody is released before the leader counted every worker in. */
    if (l == NULL || l->count[LWSI_RDZV_EV_RELEASED] != 1 ||
        lwsi_rdzv_joined(&l->r) != lwsi_rdzv_size(&l->r))
      released_early = true;
  }
  if (a->hook != NULL)
    a->hook(a, ev);
}

static void on_local(struct lwsi_rdzv *r, struct lwsi_rdzv_local *out)
{
  const struct agent *a = r->data;
  snprintf(out->child, sizeof(out->child), "running");
  out->upstream = a == NULL || !a->upstream_down;
}

static void setup(void)
{
  if (uv_loop_init(&loop) != 0 || uv_timer_init(&loop, &wake) != 0)
    abort();
  evseq = 0;
  the_leader = NULL;
  released_early = false;
  bad_app_fields = 0;
}

static void teardown(struct agent *agents, size_t n, const char *what)
{
  for (size_t i = 0; i < n; i++) {
    if (!agents[i].started)
      continue;
    lwsi_rdzv_close(&agents[i].r);
    for (int k = 0; k < agents[i].napp; k++)
      free(agents[i].app_data[k]);
    agents[i].napp = 0;
  }
  TAP_OK(bad_app_fields == 0, "%s: every event has kind and data, \"\" outside APP", what);
  uv_close((uv_handle_t *)&wake, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  TAP_OK(uv_loop_close(&loop) == 0, "%s: the loop closes cleanly", what);
}

/* Launch commands as a member sends them (launchck.h): the leader's, and
 * one with another --tp. */
static char *args_a[] = {"engine", "--tp", "16", NULL};
static char *args_b[] = {"engine", "--tp", "8", NULL};
static const struct lwsi_launchck_cmd cmd_a = {3, 3, args_a, {0}};
static const struct lwsi_launchck_cmd cmd_b = {3, 3, args_b, {0}};

static void config(struct lwsi_rdzv_config *c, uint32_t size, uint32_t rank, uint16_t port)
{
  memset(c, 0, sizeof(*c));
  c->size = size;
  c->rank = rank;
  c->revision = "rev-1";
  c->preset = "sglang";
  c->dist_port = 5000;
  c->cmd = &cmd_a;
  c->gpus = 8;
  c->host = "127.0.0.1";
  c->port = port;
  c->rdzv_timeout_ms = 20000;
  c->heartbeat_ms = 50;
  c->peer_timeout_ms = 400;
  c->handshake_timeout_ms = 400;
  c->retry_min_ms = 10;
  c->retry_max_ms = 100;
}

static int start(struct agent *a, const struct lwsi_rdzv_config *c0)
{
  struct lwsi_rdzv_config c = *c0;
  memset(a, 0, sizeof(*a));
  snprintf(a->name, sizeof(a->name), c.rank ? "worker%u" : "leader", c.rank);
  snprintf(a->pod, sizeof(a->pod), "lws-0%s%.0u", c.rank ? "-" : "", c.rank);
  c.pod = a->pod;
  a->r.data = a;
  a->started = true;
  if (c.rank == 0)
    the_leader = a;
  return lwsi_rdzv_start(&a->r, &loop, &c, on_event, on_local);
}

static bool all_count(struct agent *a, size_t n, enum lwsi_rdzv_ev ev, int want)
{
  for (size_t i = 0; i < n; i++)
    if (a[i].count[ev] != want)
      return false;
  return true;
}

static bool member_ok(struct lwsi_rdzv *r, uint32_t rank, const char *pod)
{
  struct lwsi_rdzv_member m;
  return lwsi_rdzv_member(r, rank, &m) == 0 && m.joined && m.alive && strcmp(m.pod, pod) == 0;
}

/* Every member has the other side's state and an RTT, both ways, and was
 * heard from within two seconds. */
static bool heartbeats_seen(struct agent *a, uint32_t size)
{
  struct lwsi_rdzv_member m, l;
  for (uint32_t i = 1; i < size; i++) {
    if (lwsi_rdzv_member(&a[0].r, i, &m) < 0 || !m.has_state || strcmp(m.child, "running") ||
        !m.upstream || m.rtt_us < 0 || m.hb_age_ms < 0 || m.hb_age_ms > 2000 ||
        strcmp(m.addr, "127.0.0.1") != 0)
      return false;
    if (lwsi_rdzv_member(&a[i].r, 0, &l) < 0 || !l.has_state || l.rtt_us < 0 || l.hb_age_ms < 0 ||
        l.hb_age_ms > 2000)
      return false;
  }
  return true;
}

/* N workers and a leader form a group: everyone is released once, and only
 * after the last worker joined; heartbeats carry state and measure RTT. */
static void test_group(uint32_t size, bool token)
{
  char what[64];
  snprintf(what, sizeof(what), "group of %u%s", size, token ? " with a token" : "");
  setup();
  struct agent *a = calloc(size, sizeof(*a));
  struct lwsi_rdzv_config c;
  config(&c, size, 0, 0);
  /* This test is not about timeouts: leave room for a slow machine (all 64
   * agents share one loop here, under valgrind maybe). */
  c.handshake_timeout_ms = 5000;
  c.peer_timeout_ms = 5000;
  if (size > 100) {
    /* 1500 agents on one loop: heartbeats at the default 1 s (at the
     * tests' 50 ms they alone would be 60000 frames a second here). */
    c.heartbeat_ms = 1000;
    c.peer_timeout_ms = 30000;
    c.handshake_timeout_ms = 20000;
    c.rdzv_timeout_ms = 120000;
  }
  if (token) {
    c.token = (const uint8_t *)"correct horse battery staple";
    c.token_len = strlen((const char *)c.token);
  }
  int rc = start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  TAP_OK(rc == 0 && port != 0, "%s: the leader listens on an ephemeral port (%u)", what, port);
  TAP_OK(a[0].r.open == !token, "%s: the open flag says whether a token is needed", what);
  uint64_t t0 = now_ms();
  for (uint32_t i = 1; i < size && rc == 0; i++) {
    c.rank = i;
    c.port = port;
    rc = start(&a[i], &c);
  }
  TAP_OK(rc == 0, "%s: %u workers start", what, size - 1);
  int events = 0;
  for (uint32_t i = 0; i < size; i++)
    for (int e = 0; e < EVN; e++)
      events += a[i].count[e];
  TAP_OK(events == 0, "%s: no callback runs inside start", what);
  bool ok = WAIT_UNTIL(all_count(a, size, LWSI_RDZV_EV_RELEASED, 1), 20000 + 40 * size);
  TAP_OK(ok, "%s: everyone is released (%llu ms)", what, (unsigned long long)(now_ms() - t0));
  TAP_OK(a[0].count[LWSI_RDZV_EV_JOINED] == (int)size - 1, "%s: the leader saw %u joins", what,
         size - 1);
  TAP_OK(!released_early, "%s: nobody was released before the last worker joined", what);
  uint64_t last_join = a[0].seq[LWSI_RDZV_EV_JOINED];
  bool after = true;
  for (uint32_t i = 0; i < size; i++)
    if (a[i].seq[LWSI_RDZV_EV_RELEASED] < last_join)
      after = false;
  TAP_OK(after, "%s: every release comes after the last join", what);
  int refused = 0, failed = 0;
  for (uint32_t i = 0; i < size; i++) {
    refused += a[i].count[LWSI_RDZV_EV_REFUSED];
    failed += a[i].count[LWSI_RDZV_EV_FAILED] + a[i].count[LWSI_RDZV_EV_TIMEOUT];
  }
  TAP_OK(refused == 0 && failed == 0, "%s: no refusal, no failure", what);
  for (uint32_t i = 0; i < size && (refused || failed); i++)
    for (int e = LWSI_RDZV_EV_REFUSED; e <= LWSI_RDZV_EV_TIMEOUT; e++)
      if (a[i].count[e] && e != LWSI_RDZV_EV_RELEASED && e != LWSI_RDZV_EV_DROPPED &&
          e != LWSI_RDZV_EV_DEPARTED)
        printf("#   %s %s: %s\n", a[i].name, lwsi_rdzv_event_name((enum lwsi_rdzv_ev)e),
               a[i].last[e]);

  /* The member table: every worker knows every pod; the leader knows every
   * address. */
  bool table = true;
  for (uint32_t w = 1; w < size; w++)
    for (uint32_t i = 0; i < size; i++)
      if (!member_ok(&a[w].r, i, a[i].pod))
        table = false;
  TAP_OK(table, "%s: every worker has the whole member table", what);
  struct lwsi_rdzv_member m;
  TAP_OK(lwsi_rdzv_member(&a[0].r, 0, &m) == 0 && strcmp(m.addr, "127.0.0.1") == 0 &&
             m.hb_age_ms == -1,
         "%s: the leader learned its own address (%s)", what, m.addr);
  TAP_OK(lwsi_rdzv_member(&a[1].r, 0, &m) == 0 && strcmp(m.addr, "127.0.0.1") == 0,
         "%s: workers see the leader's address", what);

  /* A few heartbeats later: state and RTT on both sides. */
  bool hb = WAIT_UNTIL(heartbeats_seen(a, size), 5000);
  lwsi_rdzv_member(&a[0].r, 1, &m);
  TAP_OK(hb, "%s: heartbeats carry state and RTT both ways (rank 1: rtt %lld us, age %lld ms)",
         what, (long long)m.rtt_us, (long long)m.hb_age_ms);
  TAP_OK(lwsi_rdzv_member(&a[0].r, size, &m) == -ENOENT, "%s: no member past size", what);
  int lost = 0;
  for (uint32_t i = 0; i < size; i++)
    lost += a[i].count[LWSI_RDZV_EV_LOST];
  TAP_OK(lost == 0, "%s: nobody is lost while heartbeats flow", what);
  teardown(a, size, what);
  free(a);
}

static void test_group_of_one(void)
{
  setup();
  struct agent a[1];
  struct lwsi_rdzv_config c;
  config(&c, 1, 0, 0);
  TAP_OK(start(&a[0], &c) == 0 && a[0].count[LWSI_RDZV_EV_RELEASED] == 0,
         "group of 1: starts, not released inside start");
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_RELEASED] == 1, 1000),
         "group of 1: released on the loop");
  teardown(a, 1, "group of 1");
}

/* A worker that is refused: the reason reaches both sides. */
static void refused_case(const char *what, struct lwsi_rdzv_config *lc, struct lwsi_rdzv_config *wc,
                         const char *want)
{
  setup();
  struct agent a[2];
  start(&a[0], lc);
  wc->port = lwsi_rdzv_port(&a[0].r);
  start(&a[1], wc);
  bool ok = WAIT_UNTIL(
      a[1].count[LWSI_RDZV_EV_REFUSED] == 1 && a[0].count[LWSI_RDZV_EV_REFUSED] == 1, 3000);
  TAP_OK(ok && strstr(a[1].last[LWSI_RDZV_EV_REFUSED], want) != NULL,
         "%s: the worker is refused: '%s'", what, a[1].last[LWSI_RDZV_EV_REFUSED]);
  TAP_OK(strstr(a[0].last[LWSI_RDZV_EV_REFUSED], want) != NULL &&
             a[0].last_rank[LWSI_RDZV_EV_REFUSED] == wc->rank,
         "%s: the leader reports the refusal of rank %u", what, wc->rank);
  TAP_OK(a[0].count[LWSI_RDZV_EV_JOINED] == 0 && a[1].count[LWSI_RDZV_EV_JOINED] == 0,
         "%s: nobody joined", what);
  TAP_OK(a[1].r.state == LWSI_RDZV_FAILED, "%s: a refusal is final for the worker", what);
  pause_ms(150);
  TAP_OK(a[1].count[LWSI_RDZV_EV_RETRYING] == 0 && a[1].count[LWSI_RDZV_EV_REFUSED] == 1,
         "%s: the worker does not try again", what);
  teardown(a, 2, what);
}

/* A worker that holds a token and is refused without proof of it (by a
 * leader with another token, or none): not final. It says why and keeps
 * trying at the slow end of its backoff until its deadline, which then
 * names the refusal (docs/security.md 3.4). */
static void unproven_case(const char *what, struct lwsi_rdzv_config *lc,
                          struct lwsi_rdzv_config *wc, const char *want)
{
  setup();
  struct agent a[2];
  start(&a[0], lc);
  wc->port = lwsi_rdzv_port(&a[0].r);
  wc->rdzv_timeout_ms = 700;
  start(&a[1], wc);
  bool ok = WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_TIMEOUT] == 1, 3000);
  TAP_OK(ok && a[1].count[LWSI_RDZV_EV_REFUSED] == 0 && a[1].count[LWSI_RDZV_EV_FAILED] == 0,
         "%s: the unproven refusal is not final for the worker", what);
  TAP_OK(a[1].count[LWSI_RDZV_EV_RETRYING] >= 1 &&
             strstr(a[1].last[LWSI_RDZV_EV_RETRYING], want) != NULL &&
             strstr(a[1].last[LWSI_RDZV_EV_RETRYING], "without proof of the token") != NULL,
         "%s: it says what it heard: '%s'", what, a[1].last[LWSI_RDZV_EV_RETRYING]);
  /* Slow end of the backoff (retry_max_ms 100 here): a handful of tries
   * in 700 ms, not one every few milliseconds. */
  TAP_OK(a[0].count[LWSI_RDZV_EV_REFUSED] >= 1 && a[0].count[LWSI_RDZV_EV_REFUSED] <= 12,
         "%s: the leader refused it %d times in 700 ms", what, a[0].count[LWSI_RDZV_EV_REFUSED]);
  TAP_OK(strstr(a[1].last[LWSI_RDZV_EV_TIMEOUT], want) != NULL,
         "%s: the deadline names it: '%s'", what, a[1].last[LWSI_RDZV_EV_TIMEOUT]);
  TAP_OK(a[1].count[LWSI_RDZV_EV_UNVERIFIED] >= 1 &&
             a[1].count[LWSI_RDZV_EV_UNVERIFIED] <= a[1].count[LWSI_RDZV_EV_RETRYING] &&
             strstr(a[1].last[LWSI_RDZV_EV_UNVERIFIED], want) != NULL,
         "%s: each unproven answer is an UNVERIFIED event (%d): '%s'", what,
         a[1].count[LWSI_RDZV_EV_UNVERIFIED], a[1].last[LWSI_RDZV_EV_UNVERIFIED]);
  TAP_OK(a[0].count[LWSI_RDZV_EV_JOINED] == 0 && a[1].count[LWSI_RDZV_EV_JOINED] == 0,
         "%s: nobody joined", what);
  teardown(a, 2, what);
}

static void test_refusals(void)
{
  struct lwsi_rdzv_config l, w;
  config(&l, 3, 0, 0);
  config(&w, 3, 1, 0);
  w.revision = "rev-2";
  refused_case("wrong revision", &l, &w,
               "wrong revision: this worker has 'rev-2', the leader 'rev-1'");

  config(&w, 3, 1, 0);
  w.revision = "";
  refused_case("empty revision against one", &l, &w, "wrong revision");

  const uint8_t *tok = (const uint8_t *)"tok-A";
  config(&l, 3, 0, 0);
  l.token = tok;
  l.token_len = 5;
  config(&w, 3, 2, 0);
  w.token = (const uint8_t *)"tok-B";
  w.token_len = 5;
  unproven_case("wrong token", &l, &w, "wrong token");

  config(&w, 3, 2, 0);
  refused_case("token on the leader only", &l, &w,
               "the leader requires a token and this worker has none");

  config(&l, 3, 0, 0);
  config(&w, 3, 2, 0);
  w.token = tok;
  w.token_len = 5;
  unproven_case("token on the worker only", &l, &w,
                "this worker has a token but the leader has none");

  /* With the same token on both sides the refusal carries the leader's
   * proof, and is final as in an open group. */
  config(&l, 3, 0, 0);
  l.token = tok;
  l.token_len = 5;
  config(&w, 3, 1, 0);
  w.token = tok;
  w.token_len = 5;
  w.revision = "rev-2";
  refused_case("wrong revision, both with the token", &l, &w,
               "wrong revision: this worker has 'rev-2', the leader 'rev-1'");

  config(&l, 3, 0, 0);
  config(&w, 4, 3, 0);
  refused_case("wrong size", &l, &w, "wrong size: this worker has 4, the leader 3");
}

/* A rank already held by a live member is refused; after the holder
 * closes, the rank is free again. */
static void test_duplicate(void)
{
  const char *what = "duplicate rank";
  setup();
  struct agent a[5];
  struct lwsi_rdzv_config c;
  config(&c, 3, 0, 0);
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  config(&c, 3, 1, port);
  c.source = "127.0.0.2";
  start(&a[1], &c);
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_JOINED] == 1, 3000), "%s: rank 1 joins from 127.0.0.2",
         what);
  c.source = "127.0.0.3";
  start(&a[2], &c);
  TAP_OK(WAIT_UNTIL(a[2].count[LWSI_RDZV_EV_REFUSED] == 1, 3000) &&
             strcmp(a[2].last[LWSI_RDZV_EV_REFUSED], "rank 1 is already held by 127.0.0.2") == 0,
         "%s: a second rank 1 is refused: '%s'", what, a[2].last[LWSI_RDZV_EV_REFUSED]);
  TAP_OK(a[0].count[LWSI_RDZV_EV_REFUSED] == 1 && a[0].last_rank[LWSI_RDZV_EV_REFUSED] == 1,
         "%s: the leader reports it", what);
  TAP_OK(a[1].count[LWSI_RDZV_EV_DEPARTED] == 0 && a[0].count[LWSI_RDZV_EV_DEPARTED] == 0,
         "%s: the holder keeps its rank", what);
  lwsi_rdzv_close(&a[1].r);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_DEPARTED] == 1, 3000) &&
             a[0].last_rank[LWSI_RDZV_EV_DEPARTED] == 1,
         "%s: the holder's close frees rank 1 at once", what);
  c.source = "127.0.0.4";
  start(&a[3], &c);
  TAP_OK(WAIT_UNTIL(a[3].count[LWSI_RDZV_EV_JOINED] == 1, 3000), "%s: a new rank 1 joins", what);
  config(&c, 3, 2, port);
  start(&a[4], &c);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_RELEASED] == 1 &&
                        a[3].count[LWSI_RDZV_EV_RELEASED] == 1 &&
                        a[4].count[LWSI_RDZV_EV_RELEASED] == 1,
                    3000),
         "%s: the group forms with the new rank 1", what);
  struct lwsi_rdzv_member m;
  TAP_OK(lwsi_rdzv_member(&a[4].r, 1, &m) == 0 && strcmp(m.addr, "127.0.0.4") == 0,
         "%s: the member table has the new holder's address (%s)", what, m.addr);
  teardown(a, 5, what);
}

/* A raw TCP client that sends what it is told and notes when it is cut. */
struct raw {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_timer_t drip;
  const char *send;
  size_t len, sent;
  bool connected, cut, drip_on;
  uint64_t cut_at;
  char buf[4096];
};

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
  struct raw *x = h->data;
  *b = uv_buf_init(x->buf, sizeof(x->buf));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
  struct raw *x = s->data;
  if (n < 0 && !x->cut) {
    x->cut = true;
    x->cut_at = uv_now(&loop);
    uv_read_stop(s);
  }
}

static void raw_written(uv_write_t *w, int status) {}

static void raw_drip(uv_timer_t *t)
{
  struct raw *x = t->data;
  if (x->cut || x->sent >= x->len) {
    uv_timer_stop(t);
    return;
  }
  uv_buf_t b = uv_buf_init((char *)x->send + x->sent, 1);
  if (uv_try_write((uv_stream_t *)&x->tcp, &b, 1) == 1)
    x->sent++;
}

static void raw_connected(uv_connect_t *req, int status)
{
  struct raw *x = req->data;
  if (status < 0) {
    x->cut = true;
    return;
  }
  x->connected = true;
  uv_read_start((uv_stream_t *)&x->tcp, raw_alloc, raw_read);
  if (x->drip_on) {
    uv_timer_start(&x->drip, raw_drip, 20, 20);
  } else if (x->len > 0) {
    uv_buf_t b = uv_buf_init((char *)x->send, (unsigned)x->len);
    uv_write(&x->wreq, (uv_stream_t *)&x->tcp, &b, 1, raw_written);
  }
}

static void raw_open(struct raw *x, uint16_t port, const char *send, size_t len, bool drip)
{
  memset(x, 0, sizeof(*x));
  x->send = send;
  x->len = len;
  x->drip_on = drip;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", port, &sa);
  uv_tcp_init(&loop, &x->tcp);
  uv_timer_init(&loop, &x->drip);
  x->tcp.data = x->creq.data = x->drip.data = x;
  uv_tcp_connect(&x->creq, &x->tcp, (struct sockaddr *)&sa, raw_connected);
}

static void raw_close(struct raw *x)
{
  uv_close((uv_handle_t *)&x->tcp, NULL);
  uv_close((uv_handle_t *)&x->drip, NULL);
}

/* Garbage, half-open, slow and flooding connections: the group forms
 * anyway, and each of them is dropped. */
static void test_hostile(void)
{
  const char *what = "hostile connections";
  setup();
  struct agent a[3];
  struct lwsi_rdzv_config c;
  config(&c, 3, 0, 0);
  c.max_pending = 6;
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  static const char junk[] = "\x00\x00\x00\x05hello";
  /* A valid-looking header for a 300-byte frame, then a byte every 20 ms. */
  static const char slow[] = "\x00\x00\x01\x2c{\"v\":1,\"type\":\"join\"";
  struct raw raws[10];
  raw_open(&raws[0], port, http, sizeof(http) - 1, false);
  raw_open(&raws[1], port, junk, sizeof(junk) - 1, false);
  raw_open(&raws[2], port, NULL, 0, false); /* half-open: connects, says nothing */
  raw_open(&raws[3], port, slow, sizeof(slow) - 1, true);
  TAP_OK(WAIT_UNTIL(raws[0].cut && raws[1].cut, 2000), "%s: garbage is dropped at once", what);
  TAP_OK(a[0].count[LWSI_RDZV_EV_DROPPED] == 2, "%s: the leader reports both: '%s'", what,
         a[0].last[LWSI_RDZV_EV_DROPPED]);
  /* More half-open connections than the pending bound. */
  for (int i = 4; i < 10; i++)
    raw_open(&raws[i], port, NULL, 0, false);
  uint64_t t0 = now_ms();
  for (uint32_t i = 1; i < 3; i++) {
    config(&c, 3, i, port);
    start(&a[i], &c);
  }
  bool formed = WAIT_UNTIL(all_count(a, 3, LWSI_RDZV_EV_RELEASED, 1), 5000);
  TAP_OK(formed && now_ms() - t0 < 300,
         "%s: the group forms anyway, without waiting for the "
         "idle ones to time out (%llu ms)",
         what, (unsigned long long)(now_ms() - t0));
  TAP_OK(a[0].too_many >= 2, "%s: the oldest connections over the pending bound are dropped (%d)",
         what, a[0].too_many);
  bool all_cut = true;
  for (int i = 2; i < 10; i++)
    all_cut = WAIT_UNTIL(raws[i].cut, 3000) && all_cut;
  TAP_OK(all_cut, "%s: half-open and slow connections are dropped", what);
  uint64_t held = raws[2].cut_at - t0;
  TAP_OK(raws[2].cut_at >= t0 && held <= 1000, "%s: the half-open one after the handshake timeout",
         what);
  TAP_OK(a[0].hs_timeouts >= 2 && a[0].count[LWSI_RDZV_EV_DROPPED] >= 2 + 8,
         "%s: every hostile connection was reported (%d, %d without a join in time)", what,
         a[0].count[LWSI_RDZV_EV_DROPPED], a[0].hs_timeouts);
  for (int i = 0; i < 10; i++)
    raw_close(&raws[i]);
  teardown(a, 3, what);
}

/* A worker driven by hand over the wire module: it answers the hello with
 * a join of our choosing and records what the leader says. */
struct fake {
  uv_tcp_t tcp;
  uv_connect_t creq;
  struct lwsi_wire_reader rd;
  uint8_t nonce[LWSI_WIRE_NONCE_LEN];
  uint32_t rank;
  bool v2;     /* speak another protocol version */
  bool joined; /* got a welcome */
  bool released;
  bool refused;
  bool cut;
  char reason[LWSI_WIRE_REASON_MAX];
  uint32_t size; /* the group size it claims: 2 unless set */
  int napp;      /* app messages received, as "kind=data" */
  char app[4][80];
  bool app_before_release;
  char buf[65536 + 4];
};

static void fake_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
  struct fake *f = h->data;
  *b = uv_buf_init(f->buf, sizeof(f->buf));
}

static void fake_written(uv_write_t *w, int status)
{
  free(w->data);
  free(w);
}

static void fake_send(struct fake *f, const uint8_t *frame, size_t len)
{
  uv_write_t *w = malloc(sizeof(*w));
  w->data = malloc(len);
  memcpy(w->data, frame, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  uv_write(w, (uv_stream_t *)&f->tcp, &b, 1, fake_written);
}

static void fake_hello(struct fake *f, const struct lwsi_msg_hello *h)
{
  struct lwsi_msg m = {.type = LWSI_MSG_JOIN};
  m.join.rank = f->rank;
  m.join.size = f->size;
  m.join.gpus = 8;
  strcpy(m.join.revision, "rev-1");
  strcpy(m.join.pod, "fake");
  memcpy(m.join.nonce, f->nonce, sizeof(f->nonce));
  strcpy(m.join.preset, "sglang");
  m.join.dist_port = 5000;
  m.join.cmd_total = 3;
  m.join.ncmd = 3;
  m.join.cmd = args_a;
  uint8_t *frame;
  size_t len;
  if (lwsi_wire_encode(&m, &frame, &len) < 0)
    return;
  if (f->v2) {
    /* Same join, another version: {"v":2,... */
    char *v = memmem(frame + 4, len - 4, "\"v\":1", 5);
    if (v != NULL)
      v[4] = '2';
  }
  fake_send(f, frame, len);
  free(frame);
}

static void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
  struct fake *f = s->data;
  if (n < 0) {
    f->cut = true;
    uv_read_stop(s);
    return;
  }
  const uint8_t *d = (const uint8_t *)b->base;
  size_t len = (size_t)n;
  const uint8_t *fr;
  size_t fl;
  while (lwsi_wire_split(&f->rd, &d, &len, &fr, &fl) == 1) {
    struct lwsi_msg m;
    if (lwsi_wire_decode(fr, fl, &m) < 0)
      continue;
    if (m.type == LWSI_MSG_HELLO)
      fake_hello(f, &m.hello);
    else if (m.type == LWSI_MSG_WELCOME)
      f->joined = true;
    else if (m.type == LWSI_MSG_RELEASE)
      f->released = true;
    else if (m.type == LWSI_MSG_REFUSE) {
      f->refused = true;
      snprintf(f->reason, sizeof(f->reason), "%s", m.refuse.reason);
    } else if (m.type == LWSI_MSG_APP) {
      if (!f->released)
        f->app_before_release = true;
      if (f->napp < 4)
        snprintf(f->app[f->napp++], sizeof(f->app[0]), "%s=%s", m.app.kind, m.app.data);
    }
    lwsi_wire_msg_free(&m);
  }
}

static void fake_connected(uv_connect_t *req, int status)
{
  struct fake *f = req->data;
  if (status == 0)
    uv_read_start((uv_stream_t *)&f->tcp, fake_alloc, fake_read);
  else
    f->cut = true;
}

static void fake_open(struct fake *f, uint16_t port, uint32_t rank, uint8_t nonce_byte)
{
  memset(f, 0, sizeof(*f));
  f->rank = rank;
  f->size = 2;
  memset(f->nonce, nonce_byte, sizeof(f->nonce));
  lwsi_wire_reader_init(&f->rd);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", port, &sa);
  uv_tcp_init(&loop, &f->tcp);
  f->tcp.data = f->creq.data = f;
  uv_tcp_connect(&f->creq, &f->tcp, (struct sockaddr *)&sa, fake_connected);
}

static void fake_close(struct fake *f)
{
  lwsi_wire_reader_free(&f->rd);
  uv_close((uv_handle_t *)&f->tcp, NULL);
}

/* A worker that gave up on its connection just as the leader released the
 * group with it comes back with the same incarnation: it gets the release
 * on its new connection, and nobody is reported lost. Anyone else is
 * refused once the group is released. */
static void test_rejoin_after_release(void)
{
  const char *what = "same incarnation after release";
  setup();
  struct agent a[1];
  struct lwsi_rdzv_config c;
  config(&c, 2, 0, 0);
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  static struct fake f[4];
  fake_open(&f[0], port, 1, 0x11);
  TAP_OK(WAIT_UNTIL(f[0].released && a[0].count[LWSI_RDZV_EV_RELEASED] == 1, 2000),
         "%s: rank 1 joins and the group is released", what);
  /* App broadcasts on the old connection: the latest of each kind is sent
   * again to the new one, after its release. */
  TAP_OK(lwsi_rdzv_app_broadcast(&a[0].r, "gpu_id", "aa") == 0 &&
             lwsi_rdzv_app_broadcast(&a[0].r, "gpu_verdict", "{}") == 0 &&
             lwsi_rdzv_app_broadcast(&a[0].r, "gpu_id", "bb") == 0,
         "%s: the leader broadcasts three app messages", what);
  TAP_OK(WAIT_UNTIL(f[0].napp == 3, 2000) && strcmp(f[0].app[0], "gpu_id=aa") == 0 &&
             strcmp(f[0].app[2], "gpu_id=bb") == 0 && !f[0].app_before_release,
         "%s: the first connection gets them in order", what);
  fake_open(&f[1], port, 1, 0x11); /* the same incarnation, a new connection */
  TAP_OK(WAIT_UNTIL(f[1].released && f[0].cut, 2000),
         "%s: the new connection gets the release, the old one is closed", what);
  TAP_OK(WAIT_UNTIL(f[1].napp == 2, 2000) && !f[1].app_before_release &&
             strcmp(f[1].app[0], "gpu_verdict={}") == 0 && strcmp(f[1].app[1], "gpu_id=bb") == 0,
         "%s: and after it the latest of each kind (%d: %s, %s)", what, f[1].napp, f[1].app[0],
         f[1].app[1]);
  TAP_OK(a[0].count[LWSI_RDZV_EV_JOINED] == 2 && a[0].count[LWSI_RDZV_EV_LOST] == 0 &&
             strstr(a[0].last[LWSI_RDZV_EV_JOINED], "released it again") != NULL,
         "%s: reported as a rejoin, not a loss: '%s'", what, a[0].last[LWSI_RDZV_EV_JOINED]);
  fake_open(&f[2], port, 1, 0x22); /* a restarted worker: another incarnation */
  TAP_OK(WAIT_UNTIL(f[2].refused, 2000) && strstr(f[2].reason, "already released") != NULL,
         "%s: another incarnation is refused: '%s'", what, f[2].reason);
  fake_open(&f[3], port, 1, 0x33);
  f[3].v2 = true;
  TAP_OK(WAIT_UNTIL(f[3].refused, 2000) && strstr(f[3].reason, "protocol version 2") != NULL,
         "%s: another protocol version is refused: '%s'", what, f[3].reason);
  fake_close(&f[1]);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_LOST] == 1, 2000), "%s: closing it now is a loss",
         what);
  for (int i = 0; i < 4; i++)
    if (i != 1)
      fake_close(&f[i]);
  teardown(a, 1, what);
}

/* The leader and three workers, rank 2 with cmd_b (or as set by tweak);
 * the leader's --launch-check is mode. */
static void mismatch_group(struct agent *a, enum lwsi_launchck_mode mode,
                           void (*tweak)(struct lwsi_rdzv_config *c))
{
  setup();
  struct lwsi_rdzv_config c;
  config(&c, 4, 0, 0);
  c.launch_check = mode;
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  for (uint32_t i = 1; i < 4; i++) {
    config(&c, 4, i, port);
    if (i == 2)
      tweak(&c);
    start(&a[i], &c);
  }
}

static void tweak_cmd(struct lwsi_rdzv_config *c) { c->cmd = &cmd_b; }
static void tweak_preset(struct lwsi_rdzv_config *c)
{
  c->preset = "vllm";
  c->dist_port = 5001;
}

/* Members whose launch command differs from the leader's: with warn the
 * group forms and the leader hears which; with strict it fails, naming
 * the rank, the position and both values; with off nothing is compared.
 * The preset, {dist_port} and the GPU count fail the group in every mode. */
static void test_mismatch(void)
{
  const char *what = "launch check warn";
  struct agent a[4];
  mismatch_group(a, LWSI_LAUNCHCK_WARN, tweak_cmd);
  TAP_OK(WAIT_UNTIL(all_count(a, 4, LWSI_RDZV_EV_RELEASED, 1), 3000),
         "%s: the group forms", what);
  TAP_OK(a[0].count[LWSI_RDZV_EV_LAUNCH_DIFF] == 1 && a[0].last_rank[LWSI_RDZV_EV_LAUNCH_DIFF] == 2,
         "%s: the leader hears of rank 2 once (%d)", what, a[0].count[LWSI_RDZV_EV_LAUNCH_DIFF]);
  TAP_STR_EQ(a[0].last[LWSI_RDZV_EV_LAUNCH_DIFF], "argument 2 is '8', the leader's is '16'",
             "%s: the position and both values", what);
  TAP_OK(a[0].seq[LWSI_RDZV_EV_LAUNCH_DIFF] < a[0].seq[LWSI_RDZV_EV_RELEASED],
         "%s: before RELEASED", what);
  teardown(a, 4, what);

  what = "launch check strict";
  mismatch_group(a, LWSI_LAUNCHCK_STRICT, tweak_cmd);
  TAP_OK(WAIT_UNTIL(all_count(a, 4, LWSI_RDZV_EV_FAILED, 1), 3000),
         "%s: the leader and every worker report the failure", what);
  TAP_STR_EQ(a[0].last[LWSI_RDZV_EV_FAILED],
             "the launch command differs from the leader's: rank 2: argument 2 is '8', the "
             "leader's is '16' (--launch-check strict: every member must run the same COMMAND "
             "and options)",
             "%s: names the rank, the position and both values", what);
  TAP_OK(strcmp(a[3].last[LWSI_RDZV_EV_FAILED], a[0].last[LWSI_RDZV_EV_FAILED]) == 0,
         "%s: the workers get the leader's reason", what);
  TAP_OK(all_count(a, 4, LWSI_RDZV_EV_RELEASED, 0), "%s: nobody is released", what);
  teardown(a, 4, what);

  what = "launch check off";
  mismatch_group(a, LWSI_LAUNCHCK_OFF, tweak_cmd);
  TAP_OK(WAIT_UNTIL(all_count(a, 4, LWSI_RDZV_EV_RELEASED, 1), 3000) &&
             a[0].count[LWSI_RDZV_EV_LAUNCH_DIFF] == 0,
         "%s: the group forms without comparing", what);
  teardown(a, 4, what);

  what = "preset mismatch";
  mismatch_group(a, LWSI_LAUNCHCK_OFF, tweak_preset);
  TAP_OK(WAIT_UNTIL(all_count(a, 4, LWSI_RDZV_EV_FAILED, 1), 3000),
         "%s: fails the group even with --launch-check off", what);
  TAP_STR_EQ(a[0].last[LWSI_RDZV_EV_FAILED],
             "the preset differs from the leader's 'sglang' on rank 2 (rank 2 has 'vllm'); "
             "{dist_port} differs from the leader's 5000 on rank 2 (rank 2 has 5001)",
             "%s: names both", what);
  teardown(a, 4, what);

  struct lwsi_rdzv_config c;
  uint16_t port;
  what = "GPU count mismatch";
  setup();
  config(&c, 3, 0, 0);
  start(&a[0], &c);
  port = lwsi_rdzv_port(&a[0].r);
  for (uint32_t i = 1; i < 3; i++) {
    config(&c, 3, i, port);
    c.gpus = i == 1 ? 4 : 8;
    start(&a[i], &c);
  }
  TAP_OK(WAIT_UNTIL(all_count(a, 3, LWSI_RDZV_EV_FAILED, 1), 3000) &&
             strstr(a[2].last[LWSI_RDZV_EV_FAILED],
                    "GPU count differs from the leader's 8 on rank 1 (rank 1 has 4)") != NULL,
         "%s: '%s'", what, a[2].last[LWSI_RDZV_EV_FAILED]);
  teardown(a, 3, what);
}

static uint16_t free_port(void)
{
  uv_tcp_t t;
  struct sockaddr_in sa;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(&loop, &t);
  uv_tcp_bind(&t, (struct sockaddr *)&sa, 0);
  uv_listen((uv_stream_t *)&t, 1, NULL);
  uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Workers that start first keep knocking at the refused step (20 ms for a
 * group of 4) and join a late leader within about a step of its start. */
static void test_late_leader(void)
{
  const char *what = "late leader";
  setup();
  struct agent a[4];
  uint16_t port = free_port();
  struct lwsi_rdzv_config c;
  for (uint32_t i = 1; i < 4; i++) {
    config(&c, 4, i, port);
    c.retry_min_ms = 0; /* the defaults, as the agent uses them */
    c.retry_max_ms = 0;
    start(&a[i], &c);
  }
  pause_ms(1500);
  TAP_OK(a[1].count[LWSI_RDZV_EV_RETRYING] >= 3 &&
             strstr(a[1].last[LWSI_RDZV_EV_RETRYING], "connection refused") != NULL,
         "%s: workers retry while nobody listens (%d tries: '%s')", what,
         a[1].count[LWSI_RDZV_EV_RETRYING], a[1].last[LWSI_RDZV_EV_RETRYING]);
  config(&c, 4, 0, port);
  uint64_t t0 = now_ms();
  TAP_OK(start(&a[0], &c) == 0, "%s: the leader starts on the same port", what);
  bool ok = WAIT_UNTIL(all_count(a, 4, LWSI_RDZV_EV_RELEASED, 1), 3000);
  uint64_t took = now_ms() - t0;
  /* One refused step (20 ms) and the handshakes; the slack is for a loaded
   * machine and the sanitizers. The old backoff took up to 1 s here. */
  TAP_OK(ok && took <= 300, "%s: the group forms %llu ms after the leader starts listening", what,
         (unsigned long long)took);
  teardown(a, 4, what);
}

/* The delay a RETRYING reason announces ("...; retrying in 17 ms"), or -1. */
static long retry_in(const char *reason)
{
  const char *p = strstr(reason, "retrying in ");
  return p != NULL ? strtol(p + 12, NULL, 10) : -1;
}

static void free_handle(uv_handle_t *h) { free(h); }

/* Accepts and closes at once: a handshake that fails (not a refusal). */
static void on_conn_dropper(uv_stream_t *server, int status)
{
  if (status < 0)
    return;
  uv_tcp_t *t = malloc(sizeof(*t));
  if (t == NULL || uv_tcp_init(&loop, t) != 0) {
    free(t);
    return;
  }
  (void)uv_accept(server, (uv_stream_t *)t);
  uv_close((uv_handle_t *)t, free_handle);
}

/* The retry policy (docs/protocol.md, "Retries"). A refused connect is
 * retried at the refused step, whose delays lie in [3/4 step, step]: 20 ms
 * for a small group, so each worker makes 50 to 67 attempts a second; for
 * a group of 1000, 333 ms, so that the group's 999 workers make at most
 * LWSI_RDZV_REFUSED_RATE (4000) attempts a second at the leader's node.
 * Every other failure (here: a handshake the peer closes) keeps the
 * doubling backoff. */
static void test_retry_policy(void)
{
  const char *what = "retry policy";
  setup();
  struct agent a[5]; /* 0-2: a group of 4, 3: a group of 1000, 4: dropped handshakes */
  uint16_t closed = free_port(), closed2 = free_port();
  uv_tcp_t dropper;
  struct sockaddr_in sa;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  TAP_OK(uv_tcp_init(&loop, &dropper) == 0 &&
             uv_tcp_bind(&dropper, (struct sockaddr *)&sa, 0) == 0 &&
             uv_listen((uv_stream_t *)&dropper, 16, on_conn_dropper) == 0 &&
             uv_tcp_getsockname(&dropper, (struct sockaddr *)&ss, &len) == 0,
         "%s: a listener that drops every connection", what);
  uint16_t drop_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  struct lwsi_rdzv_config c;
  for (uint32_t i = 0; i < 5; i++) {
    uint32_t size = i == 3 ? 1000 : 4;
    config(&c, size, i < 3 ? i + 1 : 1, i == 3 ? closed2 : i == 4 ? drop_port : closed);
    c.retry_min_ms = 0; /* the defaults, as the agent uses them */
    c.retry_max_ms = 0;
    c.handshake_timeout_ms = 0;
    start(&a[i], &c);
  }
  uint64_t t0 = now_ms();
  pause_ms(1200);
  double secs = (double)(now_ms() - t0) / 1000.0;
  for (int i = 0; i < 3; i++) {
    long d = retry_in(a[i].last[LWSI_RDZV_EV_RETRYING]);
    double rate = (double)(a[i].r.attempts - 1) / secs;
    /* At most 1 + 1200/15 attempts; at least a fifth of the slowest pace
     * (one per 20 ms), as a loaded machine may run timers late. */
    TAP_OK(a[i].r.attempts <= 1 + (uint32_t)(secs * 1000 / 15) && a[i].r.attempts >= 12 &&
               d >= 15 && d <= 20 &&
               strstr(a[i].last[LWSI_RDZV_EV_RETRYING], "connection refused") != NULL,
           "%s: a refused worker of a group of 4 tries %.0f times a second (bound 67; "
           "%u attempts, last delay %ld ms)",
           what, rate, a[i].r.attempts, d);
  }
  long d = retry_in(a[3].last[LWSI_RDZV_EV_RETRYING]);
  double group = (double)(a[3].r.attempts - 1) / secs * 999;
  TAP_OK(a[3].r.attempts >= 2 && a[3].r.attempts <= 1 + (uint32_t)(secs * 1000 / 250) &&
             d >= 250 && d <= 333,
         "%s: in a group of 1000 the step is 333 ms: %u attempts, last delay %ld ms, "
         "about %.0f a second for the whole group (bound %d)",
         what, a[3].r.attempts, d, group, LWSI_RDZV_REFUSED_RATE);
  /* 0, then >= 13, 25, 50, 100, 200, 400 ms (the doubling from 25 ms,
   * each in the upper half of its step): at most 8 attempts in 1.2 s. */
  TAP_OK(a[4].r.attempts >= 2 && a[4].r.attempts <= 8 &&
             strstr(a[4].last[LWSI_RDZV_EV_RETRYING], "during the handshake") != NULL,
         "%s: a handshake the peer closes keeps the doubling backoff: %u attempts ('%s')", what,
         a[4].r.attempts, a[4].last[LWSI_RDZV_EV_RETRYING]);
  uv_close((uv_handle_t *)&dropper, NULL);
  teardown(a, 5, what);
}

/* The leader restarts before release: workers reconnect to the new one. */
static void test_leader_restart(void)
{
  const char *what = "leader restart before release";
  setup();
  struct agent a[4]; /* 0: first leader, 3: second leader */
  struct lwsi_rdzv_config c;
  config(&c, 3, 0, 0);
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  config(&c, 3, 1, port);
  start(&a[1], &c);
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_JOINED] == 1 && a[1].count[LWSI_RDZV_EV_WAITING] >= 1,
                    3000) &&
             strcmp(lwsi_rdzv_missing(&a[1].r), "rank 2") == 0,
         "%s: rank 1 joins and hears that rank 2 is missing ('%s')", what,
         lwsi_rdzv_missing(&a[1].r));
  char first[40];
  snprintf(first, sizeof(first), "%s", a[0].r.nonce_hex);
  lwsi_rdzv_close(&a[0].r);
  a[0].started = false;
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_DEPARTED] == 1, 2000), "%s: the worker notices: '%s'",
         what, a[1].last[LWSI_RDZV_EV_DEPARTED]);
  pause_ms(100);
  config(&c, 3, 0, port);
  TAP_OK(start(&a[3], &c) == 0 && strcmp(first, a[3].r.nonce_hex) != 0,
         "%s: a new leader incarnation starts on the same port", what);
  config(&c, 3, 2, port);
  start(&a[2], &c);
  TAP_OK(WAIT_UNTIL(a[3].count[LWSI_RDZV_EV_RELEASED] == 1 &&
                        a[1].count[LWSI_RDZV_EV_RELEASED] == 1 &&
                        a[2].count[LWSI_RDZV_EV_RELEASED] == 1,
                    3000),
         "%s: the group forms around the new leader", what);
  TAP_OK(a[1].count[LWSI_RDZV_EV_JOINED] == 2, "%s: rank 1 joined twice, once each", what);
  teardown(a, 4, what);
}

/* A released group loses its leader; the workers, asked to rejoin, join a
 * new leader agent (a new incarnation, on another address the caller moves
 * them to) and the group forms again around it, with app messages flowing
 * in the new group. Before the loss, a rejoin is refused. */
static void test_rejoin_new_leader(void)
{
  const char *what = "rejoin a new leader after release";
  setup();
  struct agent a[4]; /* 0: the first leader, 3: the new one */
  struct lwsi_rdzv_config c;
  config(&c, 3, 0, 0);
  c.host = "127.0.0.5";
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  for (uint32_t i = 1; i < 3; i++) {
    config(&c, 3, i, port);
    c.host = "127.0.0.5";
    start(&a[i], &c);
  }
  TAP_OK(WAIT_UNTIL(all_count(a, 3, LWSI_RDZV_EV_RELEASED, 1), 3000), "%s: the group forms",
         what);
  TAP_OK(lwsi_rdzv_rejoin(&a[1].r) == -EALREADY && lwsi_rdzv_rejoin(&a[0].r) == -EINVAL,
         "%s: no rejoin while the leader lives, none on the leader", what);
  char worker_nonce[40];
  snprintf(worker_nonce, sizeof(worker_nonce), "%s", a[1].r.nonce_hex);
  lwsi_rdzv_close(&a[0].r);
  a[0].started = false;
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_LOST] == 1 && a[2].count[LWSI_RDZV_EV_LOST] == 1, 2000) &&
             a[1].last_rank[LWSI_RDZV_EV_LOST] == 0,
         "%s: both workers lose the leader: '%s'", what, a[1].last[LWSI_RDZV_EV_LOST]);
  TAP_OK(lwsi_rdzv_set_leader(&a[1].r, "127.0.0.6") == -EALREADY,
         "%s: a released worker does not move by itself", what);
  for (uint32_t i = 1; i < 3; i++)
    TAP_OK(lwsi_rdzv_rejoin(&a[i].r) == 0 && a[i].r.state == LWSI_RDZV_JOINING,
           "%s: rank %u goes back to joining", what, i);
  struct lwsi_rdzv_member m;
  TAP_OK(lwsi_rdzv_member(&a[1].r, 2, &m) == 0 && !m.joined && !m.alive,
         "%s: the old member table is forgotten", what);
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_RETRYING] >= 1, 2000),
         "%s: it knocks at the old address: '%s'", what, a[1].last[LWSI_RDZV_EV_RETRYING]);
  TAP_OK(lwsi_rdzv_rejoin(&a[1].r) == -EALREADY, "%s: a second rejoin is refused", what);
  /* The new leader pod: another address, the same port. */
  config(&c, 3, 0, port);
  c.host = "127.0.0.6";
  TAP_OK(start(&a[3], &c) == 0, "%s: a new leader agent starts at a new address", what);
  for (uint32_t i = 1; i < 3; i++)
    TAP_OK(lwsi_rdzv_set_leader(&a[i].r, "127.0.0.6") == 0, "%s: rank %u moves there", what,
           i);
  TAP_OK(WAIT_UNTIL(a[3].count[LWSI_RDZV_EV_RELEASED] == 1 &&
                        a[1].count[LWSI_RDZV_EV_RELEASED] == 2 &&
                        a[2].count[LWSI_RDZV_EV_RELEASED] == 2,
                    3000),
         "%s: the group forms again around the new leader", what);
  TAP_OK(a[1].count[LWSI_RDZV_EV_JOINED] == 2 && strcmp(worker_nonce, a[1].r.nonce_hex) == 0,
         "%s: rank 1 joined twice, as the same incarnation", what);
  TAP_OK(lwsi_rdzv_member(&a[1].r, 0, &m) == 0 && m.alive && strcmp(m.addr, "127.0.0.6") == 0 &&
             lwsi_rdzv_member(&a[1].r, 2, &m) == 0 && m.alive,
         "%s: the worker's table is the new group's (the leader at 127.0.0.6)", what);
  TAP_OK(lwsi_rdzv_app_send(&a[2].r, "probe", "{\"epoch\":3}") == 0 &&
             WAIT_UNTIL(a[3].napp == 1, 2000) && strcmp(a[3].app_kind[0], "probe") == 0 &&
             a[3].app_rank[0] == 2,
         "%s: the new leader hears rank 2's app message", what);
  TAP_OK(lwsi_rdzv_app_broadcast(&a[3].r, "verdict", "{}") == 0 &&
             WAIT_UNTIL(a[1].napp == 1 && a[2].napp == 1, 2000),
         "%s: and the workers hear its broadcast", what);
  pause_ms(200); /* several heartbeat periods: nobody is lost in the new group */
  TAP_OK(a[1].count[LWSI_RDZV_EV_LOST] == 1 && a[3].count[LWSI_RDZV_EV_LOST] == 0,
         "%s: the new group holds", what);
  teardown(a, 4, what);
}

/* The caller re-resolved the leader: the next attempt goes to the new IP. */
static void test_set_leader(void)
{
  const char *what = "new leader address";
  setup();
  struct agent a[2];
  struct lwsi_rdzv_config c;
  config(&c, 2, 0, 0);
  c.host = "127.0.0.5";
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  config(&c, 2, 1, port);
  c.host = "127.0.0.6"; /* the old address: nobody listens there */
  start(&a[1], &c);
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_RETRYING] >= 2, 2000),
         "%s: the worker knocks at the old "
         "address: '%s'",
         what, a[1].last[LWSI_RDZV_EV_RETRYING]);
  TAP_OK(lwsi_rdzv_set_leader(&a[1].r, "leader-0") == -EINVAL &&
             lwsi_rdzv_set_leader(&a[0].r, "127.0.0.5") == -EINVAL,
         "%s: only an IP, only on a worker", what);
  TAP_OK(lwsi_rdzv_set_leader(&a[1].r, "127.0.0.5") == 0, "%s: set", what);
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_RELEASED] == 1, 2000), "%s: joined at the new address",
         what);
  TAP_OK(lwsi_rdzv_set_leader(&a[1].r, "127.0.0.7") == -EALREADY,
         "%s: a released worker keeps its leader", what);
  teardown(a, 2, what);
}

static void test_deadlines(void)
{
  const char *what = "leader deadline";
  setup();
  struct agent a[3];
  struct lwsi_rdzv_config c;
  config(&c, 4, 0, 0);
  c.rdzv_timeout_ms = 600;
  start(&a[0], &c);
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  config(&c, 4, 1, port);
  start(&a[1], &c);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_TIMEOUT] == 1 && a[1].count[LWSI_RDZV_EV_FAILED] == 1,
                    3000),
         "%s: the leader times out and tells the worker", what);
  TAP_OK(strcmp(a[0].last[LWSI_RDZV_EV_TIMEOUT], "ranks 2, 3 never arrived") == 0,
         "%s: the leader: '%s'", what, a[0].last[LWSI_RDZV_EV_TIMEOUT]);
  TAP_OK(strcmp(a[1].last[LWSI_RDZV_EV_FAILED],
                "the leader's rendezvous deadline (600 ms) passed: ranks 2, 3 never arrived") == 0,
         "%s: the worker: '%s'", what, a[1].last[LWSI_RDZV_EV_FAILED]);
  teardown(a, 2, what);

  what = "worker deadline, no leader";
  setup();
  config(&c, 2, 1, free_port());
  c.rdzv_timeout_ms = 300;
  start(&a[0], &c);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_TIMEOUT] == 1, 2000) &&
             strstr(a[0].last[LWSI_RDZV_EV_TIMEOUT], "connection refused") != NULL,
         "%s: '%s'", what, a[0].last[LWSI_RDZV_EV_TIMEOUT]);
  pause_ms(100);
  TAP_OK(a[0].r.state == LWSI_RDZV_FAILED && a[0].count[LWSI_RDZV_EV_RETRYING] > 0,
         "%s: final after the deadline", what);
  teardown(a, 1, what);

  what = "worker deadline, joined";
  setup();
  config(&c, 4, 0, 0);
  start(&a[0], &c);
  port = lwsi_rdzv_port(&a[0].r);
  config(&c, 4, 1, port);
  c.rdzv_timeout_ms = 500;
  start(&a[1], &c);
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_TIMEOUT] == 1, 2000) &&
             strcmp(a[1].last[LWSI_RDZV_EV_TIMEOUT],
                    "the leader was still waiting for ranks 2, 3") == 0,
         "%s: the worker reports the latest missing ranks: '%s'", what,
         a[1].last[LWSI_RDZV_EV_TIMEOUT]);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_DEPARTED] == 1, 1000) &&
             strstr(a[0].last[LWSI_RDZV_EV_DEPARTED], "left: gave up") != NULL,
         "%s: its bye frees the rank on the leader: '%s'", what, a[0].last[LWSI_RDZV_EV_DEPARTED]);
  teardown(a, 2, what);
}

/* Forms a group of size with the test configuration, changed by tweak
 * (when given) on every member. */
static struct agent *form_with(struct agent *a, uint32_t size, const char *what,
                               void (*tweak)(struct lwsi_rdzv_config *c))
{
  setup();
  struct lwsi_rdzv_config c;
  uint16_t port = 0;
  for (uint32_t i = 0; i < size; i++) {
    config(&c, size, i, port);
    if (tweak != NULL)
      tweak(&c);
    start(&a[i], &c);
    if (i == 0)
      port = lwsi_rdzv_port(&a[0].r);
  }
  TAP_OK(WAIT_UNTIL(all_count(a, size, LWSI_RDZV_EV_RELEASED, 1), 3000), "%s: the group forms",
         what);
  return a;
}

static struct agent *form(struct agent *a, uint32_t size, const char *what)
{
  return form_with(a, size, what, NULL);
}

static void slow_heartbeat(struct lwsi_rdzv_config *c)
{
  c->heartbeat_ms = 1000;
  c->peer_timeout_ms = 5000;
}

/* The tick is armed for the next deadline, not run on a fixed period: a
 * formed group with a 1 s heartbeat wakes each agent about once a second
 * for it, not every tick gap (100 ms here: handshake 400 ms / 4). */
static void test_idle_ticks(void)
{
  const char *what = "idle ticks";
  struct agent a[2];
  form_with(a, 2, what, slow_heartbeat);
  uint64_t l0 = a[0].r.ticks, w0 = a[1].r.ticks;
  pause_ms(2000);
  uint64_t l = a[0].r.ticks - l0, w = a[1].r.ticks - w0;
  /* About 2 each (one per heartbeat); a periodic tick would give 20. */
  TAP_OK(l >= 1 && l <= 5 && w >= 1 && w <= 5,
         "%s: in 2 s the leader ticked %llu times, the worker %llu", what, (unsigned long long)l,
         (unsigned long long)w);
  TAP_OK(a[0].count[LWSI_RDZV_EV_LOST] == 0 && a[1].count[LWSI_RDZV_EV_LOST] == 0,
         "%s: and nobody is lost", what);
  teardown(a, 2, what);
}

/* A member whose own state changed beats at the next tick: the leader
 * sees the change well within the 1 s heartbeat period. */
static void test_beat_soon(void)
{
  const char *what = "beat soon";
  struct agent a[2];
  form_with(a, 2, what, slow_heartbeat);
  struct lwsi_rdzv_member m;
  bool ok = WAIT_UNTIL(lwsi_rdzv_member(&a[0].r, 1, &m) == 0 && m.has_state && m.upstream, 3000);
  TAP_OK(ok, "%s: the leader has the worker's state from its heartbeats", what);
  pause_ms(150); /* well inside the worker's 1 s heartbeat period */
  uint64_t t0 = now_ms();
  a[1].upstream_down = true;
  lwsi_rdzv_beat_soon(&a[1].r);
  ok = WAIT_UNTIL(lwsi_rdzv_member(&a[0].r, 1, &m) == 0 && !m.upstream, 3000);
  uint64_t took = now_ms() - t0;
  TAP_OK(ok && took < 400, "%s: the leader sees the change in %llu ms (heartbeat 1000 ms)", what,
         (unsigned long long)took);
  lwsi_rdzv_beat_soon(&a[1].r);
  lwsi_rdzv_beat_soon(&a[1].r);
  uint64_t w0 = a[1].r.ticks;
  pause_ms(300);
  TAP_OK(a[1].r.ticks - w0 <= 4, "%s: calls in a row still tick at most once a tick gap (%llu)",
         what, (unsigned long long)(a[1].r.ticks - w0));
  teardown(a, 2, what);
}

/* After release, a closed worker is reported to the leader and to the
 * others at once. */
static void test_loss_closed(void)
{
  const char *what = "loss by close";
  struct agent a[4];
  form(a, 4, what);
  uint64_t t0 = now_ms();
  lwsi_rdzv_close(&a[2].r);
  a[2].started = false;
  bool ok = WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_LOST] == 1 && a[1].count[LWSI_RDZV_EV_LOST] == 1 &&
                           a[3].count[LWSI_RDZV_EV_LOST] == 1,
                       2000);
  uint64_t took = now_ms() - t0;
  TAP_OK(ok && took < 200, "%s: everyone hears within %llu ms", what, (unsigned long long)took);
  TAP_OK(a[0].last_rank[LWSI_RDZV_EV_LOST] == 2 &&
             strcmp(a[0].last[LWSI_RDZV_EV_LOST], "closed the connection") == 0,
         "%s: the leader: rank %lld '%s'", what, (long long)a[0].last_rank[LWSI_RDZV_EV_LOST],
         a[0].last[LWSI_RDZV_EV_LOST]);
  TAP_OK(a[1].last_rank[LWSI_RDZV_EV_LOST] == 2 &&
             strcmp(a[1].last[LWSI_RDZV_EV_LOST], "closed the connection") == 0,
         "%s: the others: rank %lld '%s'", what, (long long)a[1].last_rank[LWSI_RDZV_EV_LOST],
         a[1].last[LWSI_RDZV_EV_LOST]);
  struct lwsi_rdzv_member m;
  TAP_OK(lwsi_rdzv_member(&a[0].r, 2, &m) == 0 && m.joined && !m.alive &&
             lwsi_rdzv_member(&a[3].r, 2, &m) == 0 && !m.alive,
         "%s: rank 2 shows as not alive", what);
  pause_ms(100);
  TAP_OK(a[0].count[LWSI_RDZV_EV_LOST] == 1 && a[1].count[LWSI_RDZV_EV_LOST] == 1,
         "%s: reported once", what);
  teardown(a, 4, what);
}

/* A worker that stops sending heartbeats is lost after peer_timeout. */
static void test_loss_silent(void)
{
  const char *what = "loss by silence";
  struct agent a[3];
  form(a, 3, what);
  uint64_t t0 = now_ms();
  a[2].r.mute_heartbeats = true;
  bool ok =
      WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_LOST] == 1 && a[1].count[LWSI_RDZV_EV_LOST] == 1, 3000);
  uint64_t took = now_ms() - t0;
  /* peer_timeout 400 ms, heartbeat 50 ms. */
  /* peer_timeout 400 ms, heartbeat 50 ms. Silence counts from the last
   * heartbeat received, a little before the mute. */
  TAP_OK(ok && took >= 400 - 50 && took <= 400 + 50 + 150, "%s: reported after %llu ms", what,
         (unsigned long long)took);
  TAP_OK(atoi(a[0].last[LWSI_RDZV_EV_LOST] + 11) > 400, "%s: never before peer_timeout", what);
  TAP_OK(a[0].last_rank[LWSI_RDZV_EV_LOST] == 2 &&
             strncmp(a[0].last[LWSI_RDZV_EV_LOST], "silent for ", 11) == 0,
         "%s: the leader: '%s'", what, a[0].last[LWSI_RDZV_EV_LOST]);
  TAP_OK(a[1].last_rank[LWSI_RDZV_EV_LOST] == 2 &&
             strncmp(a[1].last[LWSI_RDZV_EV_LOST], "silent for ", 11) == 0,
         "%s: the other worker: '%s'", what, a[1].last[LWSI_RDZV_EV_LOST]);
  TAP_OK(WAIT_UNTIL(a[2].count[LWSI_RDZV_EV_LOST] == 1, 1000) &&
             a[2].last_rank[LWSI_RDZV_EV_LOST] == 0,
         "%s: the silent one loses the leader: '%s'", what, a[2].last[LWSI_RDZV_EV_LOST]);
  TAP_OK(strcmp(a[2].last[LWSI_RDZV_EV_LOST], "closed the connection") == 0,
         "%s: in the same words as for any member", what);
  teardown(a, 3, what);

  what = "silent leader";
  form(a, 3, what);
  t0 = now_ms();
  a[0].r.mute_heartbeats = true;
  ok = WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_LOST] == 1 && a[2].count[LWSI_RDZV_EV_LOST] == 1, 3000);
  took = now_ms() - t0;
  TAP_OK(ok && took >= 400 - 50 && took <= 600 && a[1].last_rank[LWSI_RDZV_EV_LOST] == 0 &&
             strncmp(a[1].last[LWSI_RDZV_EV_LOST], "silent for ", 11) == 0,
         "%s: workers report the leader lost after %llu ms: '%s'", what, (unsigned long long)took,
         a[1].last[LWSI_RDZV_EV_LOST]);
  pause_ms(300);
  TAP_OK(a[1].count[LWSI_RDZV_EV_RETRYING] == 0 && a[1].count[LWSI_RDZV_EV_JOINED] == 1,
         "%s: a released worker never reconnects", what);
  teardown(a, 3, what);
}

/* A member that stops says bye, and the others learn at once. */
static void test_bye(void)
{
  const char *what = "bye";
  struct agent a[3];
  form(a, 3, what);
  uint64_t t0 = now_ms();
  TAP_OK(lwsi_rdzv_leave(&a[1].r, "SIGTERM") == 0, "%s: worker 1 leaves", what);
  TAP_OK(lwsi_rdzv_leave(&a[1].r, "again") == -EALREADY, "%s: leaving twice is -EALREADY", what);
  bool ok =
      WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_LOST] == 1 && a[2].count[LWSI_RDZV_EV_LOST] == 1, 2000);
  TAP_OK(ok && now_ms() - t0 < 200 && strcmp(a[0].last[LWSI_RDZV_EV_LOST], "left: SIGTERM") == 0 &&
             strcmp(a[2].last[LWSI_RDZV_EV_LOST], "left: SIGTERM") == 0,
         "%s: leader and worker 2 hear '%s' at once", what, a[2].last[LWSI_RDZV_EV_LOST]);
  t0 = now_ms();
  TAP_OK(lwsi_rdzv_leave(&a[0].r, "SIGTERM") == 0, "%s: the leader leaves", what);
  ok = WAIT_UNTIL(a[2].count[LWSI_RDZV_EV_LOST] == 2, 2000);
  TAP_OK(ok && now_ms() - t0 < 200 && a[2].last_rank[LWSI_RDZV_EV_LOST] == 0 &&
             strcmp(a[2].last[LWSI_RDZV_EV_LOST], "left: SIGTERM") == 0,
         "%s: worker 2 hears '%s'", what, a[2].last[LWSI_RDZV_EV_LOST]);
  pause_ms(100);
  int after = a[0].count[LWSI_RDZV_EV_LOST] + a[1].count[LWSI_RDZV_EV_LOST];
  TAP_OK(after == 0 + 1, "%s: no event after leaving", what);
  teardown(a, 3, what);
}

/* ---- application messages ---- */

static char gpu_id[257];
static int early_calls, early_eperm; /* sends tried before release, and refused */
static int on_release_rc;             /* the leader's broadcast inside its RELEASED */

static void app_hook(struct agent *a, const struct lwsi_rdzv_event *ev)
{
  if (ev->type == LWSI_RDZV_EV_JOINED) {
    /* Before release neither side may send. */
    int rc = a->r.leader ? lwsi_rdzv_app_broadcast(&a->r, "gpu_id", gpu_id)
                         : lwsi_rdzv_app_send(&a->r, "gpu_result", "{\"ok\":true}");
    early_calls++;
    early_eperm += rc == -EPERM;
  }
  /* Right after release: it must not overtake the release frame. */
  if (ev->type == LWSI_RDZV_EV_RELEASED && a->r.leader)
    on_release_rc = lwsi_rdzv_app_broadcast(&a->r, "gpu_id", gpu_id);
}

static bool all_napp(struct agent *a, uint32_t from, uint32_t to, int want)
{
  for (uint32_t i = from; i < to; i++)
    if (a[i].napp < want)
      return false;
  return true;
}

/* After release the leader's message reaches every worker, each worker's
 * reaches the leader, in order and behind the release; before release, in
 * the wrong direction, or out of form, nothing is sent. */
static void test_app(void)
{
  const char *what = "app messages";
  for (int i = 0; i < 256; i++)
    gpu_id[i] = "0123456789abcdef"[(i * 5 + i / 16) % 16];
  gpu_id[256] = '\0';
  early_calls = early_eperm = 0;
  on_release_rc = 1;
  setup();
  struct agent a[4];
  struct lwsi_rdzv_config c;
  config(&c, 4, 0, 0);
  c.peer_timeout_ms = 5000; /* not about losses: room for valgrind */
  c.handshake_timeout_ms = 5000;
  start(&a[0], &c);
  a[0].hook = app_hook;
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  TAP_OK(lwsi_rdzv_app_broadcast(&a[0].r, "gpu_id", gpu_id) == -EPERM,
         "%s: the leader cannot broadcast before release", what);
  for (uint32_t i = 1; i < 4; i++) {
    config(&c, 4, i, port);
    c.peer_timeout_ms = 5000;
    c.handshake_timeout_ms = 5000;
    start(&a[i], &c);
    a[i].hook = app_hook;
    if (lwsi_rdzv_app_send(&a[i].r, "gpu_result", "{}") != -EPERM)
      early_calls = -100;
  }
  TAP_OK(WAIT_UNTIL(all_count(a, 4, LWSI_RDZV_EV_RELEASED, 1), 5000), "%s: the group forms", what);
  TAP_OK(early_calls == 6 && early_eperm == 6,
         "%s: sends before release are -EPERM on both sides (%d of %d)", what, early_eperm,
         early_calls);
  TAP_OK(on_release_rc == 0, "%s: the leader broadcasts from its RELEASED callback", what);

  /* The id, to every worker, after its release. */
  bool ok = WAIT_UNTIL(all_napp(a, 1, 4, 1), 3000);
  bool right = ok;
  for (uint32_t i = 1; i < 4 && ok; i++)
    if (a[i].napp != 1 || strcmp(a[i].app_kind[0], "gpu_id") != 0 ||
        strcmp(a[i].app_data[0], gpu_id) != 0 || a[i].app_rank[0] != 0 ||
        a[i].app_seq[0] < a[i].seq[LWSI_RDZV_EV_RELEASED] || a[i].count[LWSI_RDZV_EV_APP] != 1)
      right = false;
  TAP_OK(right, "%s: every worker gets 'gpu_id' with the 256 hex digits from rank 0, after its "
                "RELEASED", what);
  TAP_OK(a[0].napp == 0, "%s: the leader hears nothing of its own broadcast", what);

  /* Wrong direction, wrong form. */
  TAP_OK(lwsi_rdzv_app_send(&a[0].r, "gpu_result", "{}") == -EPERM,
         "%s: the leader cannot app_send", what);
  TAP_OK(lwsi_rdzv_app_broadcast(&a[1].r, "gpu_id", gpu_id) == -EPERM,
         "%s: a worker cannot broadcast", what);
  char *big = malloc(8194);
  memset(big, 'x', 8193);
  big[8193] = '\0';
  TAP_OK(lwsi_rdzv_app_broadcast(&a[0].r, "gpu_id", big) == -EINVAL &&
             lwsi_rdzv_app_send(&a[1].r, "gpu_result", big) == -EINVAL,
         "%s: data over 8 KiB is -EINVAL on both sides", what);
  TAP_OK(lwsi_rdzv_app_broadcast(&a[0].r, "GPU", "{}") == -EINVAL &&
             lwsi_rdzv_app_send(&a[1].r, "gpu-result", "{}") == -EINVAL &&
             lwsi_rdzv_app_send(&a[1].r, "", "{}") == -EINVAL &&
             lwsi_rdzv_app_send(&a[1].r, NULL, "{}") == -EINVAL &&
             lwsi_rdzv_app_send(&a[1].r, "k", NULL) == -EINVAL &&
             lwsi_rdzv_app_send(&a[1].r, "k", "{\n}") == -EINVAL &&
             lwsi_rdzv_app_broadcast(&a[0].r, "k", "\x1b[31m") == -EINVAL,
         "%s: a bad kind, NULL, or control characters are -EINVAL", what);

  /* Each worker's result, to the leader. */
  int sent = 0;
  for (uint32_t i = 1; i < 4; i++)
    sent += lwsi_rdzv_app_send(&a[i].r, "gpu_result", "{\"ok\":true}") == 0;
  TAP_OK(sent == 3, "%s: every worker sends its result", what);
  ok = WAIT_UNTIL(a[0].napp == 3, 3000);
  int ranks = 0;
  for (int k = 0; k < a[0].napp; k++)
    if (strcmp(a[0].app_kind[k], "gpu_result") == 0 &&
        strcmp(a[0].app_data[k], "{\"ok\":true}") == 0 && a[0].app_rank[k] >= 1 &&
        a[0].app_rank[k] <= 3)
      ranks |= 1 << a[0].app_rank[k];
  TAP_OK(ok && ranks == 0xe && a[0].count[LWSI_RDZV_EV_APP] == 3,
         "%s: the leader gets 3 results, from ranks 1, 2 and 3", what);
  TAP_OK(strcmp(a[0].last[LWSI_RDZV_EV_APP], "") != 0 && a[0].last_rank[LWSI_RDZV_EV_APP] > 0,
         "%s: with a reason for a debug line: '%s'", what, a[0].last[LWSI_RDZV_EV_APP]);
  for (uint32_t i = 1; i < 4; i++)
    if (a[i].napp != 1)
      ok = false;
  TAP_OK(ok, "%s: workers hear nothing of each other's results", what);

  /* The largest data, both ways, and the verdict after the id. */
  memset(big, '"', 8192);
  big[8192] = '\0';
  TAP_OK(lwsi_rdzv_app_send(&a[2].r, "big", big) == 0 &&
             lwsi_rdzv_app_broadcast(&a[0].r, "gpu_verdict", "{\"ok\":true}") == 0 &&
             lwsi_rdzv_app_broadcast(&a[0].r, "big", big) == 0,
         "%s: 8 KiB of data goes both ways", what);
  ok = WAIT_UNTIL(a[0].napp == 4 && all_napp(a, 1, 4, 3), 3000);
  right = ok && strcmp(a[0].app_data[3], big) == 0 && a[0].app_rank[3] == 2;
  for (uint32_t i = 1; i < 4 && ok; i++)
    if (strcmp(a[i].app_kind[1], "gpu_verdict") != 0 ||
        strcmp(a[i].app_data[1], "{\"ok\":true}") != 0 || strcmp(a[i].app_data[2], big) != 0)
      right = false;
  TAP_OK(right, "%s: it arrives intact, and in the order sent", what);
  free(big);

  /* A loss: the others still hear; a worker without its leader cannot send. */
  lwsi_rdzv_close(&a[3].r);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_LOST] == 1, 2000), "%s: rank 3 is lost", what);
  TAP_OK(lwsi_rdzv_app_broadcast(&a[0].r, "gpu_verdict", "{\"ok\":false}") == 0 &&
             WAIT_UNTIL(all_napp(a, 1, 3, 4), 2000),
         "%s: a broadcast after a loss reaches those left", what);
  TAP_OK(lwsi_rdzv_leave(&a[0].r, "SIGTERM") == 0 &&
             lwsi_rdzv_app_broadcast(&a[0].r, "gpu_id", gpu_id) == -EPERM,
         "%s: after leave the leader cannot broadcast", what);
  TAP_OK(WAIT_UNTIL(a[1].count[LWSI_RDZV_EV_LOST] == 2, 2000) &&
             lwsi_rdzv_app_send(&a[1].r, "gpu_result", "{}") == -ENOTCONN,
         "%s: a worker that lost its leader gets -ENOTCONN", what);
  teardown(a, 4, what);
}

/* A worker that speaks before its release breaks the protocol: its rank is
 * free again, as for any bad frame. */
static void test_app_before_release(void)
{
  const char *what = "app before release";
  setup();
  struct agent a[1];
  struct lwsi_rdzv_config c;
  config(&c, 3, 0, 0);
  start(&a[0], &c);
  static struct fake f;
  fake_open(&f, lwsi_rdzv_port(&a[0].r), 1, 0x44);
  f.size = 3;
  TAP_OK(WAIT_UNTIL(f.joined && a[0].count[LWSI_RDZV_EV_JOINED] == 1, 2000), "%s: rank 1 joins",
         what);
  struct lwsi_msg m = {.type = LWSI_MSG_APP};
  strcpy(m.app.kind, "gpu_result");
  m.app.data = (char *)"{\"ok\":true}";
  uint8_t *frame;
  size_t len;
  if (lwsi_wire_encode(&m, &frame, &len) == 0) {
    fake_send(&f, frame, len);
    free(frame);
  }
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_DEPARTED] == 1 && f.cut, 2000) &&
             a[0].last_rank[LWSI_RDZV_EV_DEPARTED] == 1 &&
             strstr(a[0].last[LWSI_RDZV_EV_DEPARTED], "'app' message before the release") != NULL,
         "%s: the leader drops it: '%s'", what, a[0].last[LWSI_RDZV_EV_DEPARTED]);
  TAP_OK(a[0].count[LWSI_RDZV_EV_APP] == 0, "%s: and reports no APP", what);
  fake_close(&f);
  teardown(a, 1, what);
}

/* A leader driven by hand: it welcomes whoever joins and sends an app
 * message before any release. */
struct fake_leader {
  uv_tcp_t srv;
  uv_tcp_t conn[4];
  struct lwsi_wire_reader rd[4];
  int nconn;
  char buf[65536 + 4];
};

static void fl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
  struct fake_leader *fl = h->loop->data;
  *b = uv_buf_init(fl->buf, sizeof(fl->buf));
}

static void fl_send(uv_tcp_t *t, const struct lwsi_msg *m)
{
  uint8_t *frame;
  size_t len;
  if (lwsi_wire_encode(m, &frame, &len) < 0)
    return;
  uv_write_t *w = malloc(sizeof(*w));
  w->data = frame;
  uv_buf_t b = uv_buf_init((char *)frame, (unsigned)len);
  uv_write(w, (uv_stream_t *)t, &b, 1, fake_written);
}

static void fl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
  struct fake_leader *fl = s->loop->data;
  int i = (int)((uv_tcp_t *)s - fl->conn);
  if (n < 0) {
    uv_read_stop(s);
    return;
  }
  const uint8_t *d = (const uint8_t *)b->base, *fr;
  size_t len = (size_t)n, fln;
  while (lwsi_wire_split(&fl->rd[i], &d, &len, &fr, &fln) == 1) {
    struct lwsi_msg m, out;
    if (lwsi_wire_decode(fr, fln, &m) < 0)
      continue;
    if (m.type == LWSI_MSG_JOIN) {
      memset(&out, 0, sizeof(out));
      out.type = LWSI_MSG_WELCOME;
      out.welcome.rank = m.join.rank;
      fl_send((uv_tcp_t *)s, &out);
      memset(&out, 0, sizeof(out));
      out.type = LWSI_MSG_APP;
      strcpy(out.app.kind, "gpu_id");
      out.app.data = gpu_id;
      fl_send((uv_tcp_t *)s, &out);
    }
    lwsi_wire_msg_free(&m);
  }
}

static void fl_connection(uv_stream_t *srv, int status)
{
  struct fake_leader *fl = srv->loop->data;
  if (status < 0 || fl->nconn == 4)
    return;
  uv_tcp_t *t = &fl->conn[fl->nconn];
  lwsi_wire_reader_init(&fl->rd[fl->nconn]);
  fl->nconn++;
  uv_tcp_init(srv->loop, t);
  if (uv_accept(srv, (uv_stream_t *)t) < 0)
    return;
  uv_read_start((uv_stream_t *)t, fl_alloc, fl_read);
  struct lwsi_msg m = {.type = LWSI_MSG_HELLO};
  memset(m.hello.nonce, 0x55, sizeof(m.hello.nonce));
  memset(m.hello.challenge, 0x66, sizeof(m.hello.challenge));
  fl_send(t, &m);
}

/* A worker that gets an app message before its release: the leader broke
 * the protocol, handled as any bad frame (DEPARTED, reconnect). */
static void test_app_before_release_worker(void)
{
  const char *what = "app to a worker before release";
  setup();
  static struct fake_leader fl;
  memset(&fl, 0, sizeof(fl));
  loop.data = &fl;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(&loop, &fl.srv);
  uv_tcp_bind(&fl.srv, (struct sockaddr *)&sa, 0);
  uv_listen((uv_stream_t *)&fl.srv, 8, fl_connection);
  int sl = sizeof(sa);
  uv_tcp_getsockname(&fl.srv, (struct sockaddr *)&sa, &sl);
  struct agent a[1];
  struct lwsi_rdzv_config c;
  config(&c, 3, 1, ntohs(sa.sin_port));
  start(&a[0], &c);
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_DEPARTED] >= 1, 2000) &&
             a[0].count[LWSI_RDZV_EV_JOINED] >= 1 &&
             strstr(a[0].last[LWSI_RDZV_EV_DEPARTED], "'app' message before the release") != NULL,
         "%s: the worker drops the leader: '%s'", what, a[0].last[LWSI_RDZV_EV_DEPARTED]);
  TAP_OK(a[0].count[LWSI_RDZV_EV_APP] == 0 && a[0].r.state == LWSI_RDZV_JOINING,
         "%s: reports no APP and keeps trying", what);
  lwsi_rdzv_close(&a[0].r);
  for (int i = 0; i < fl.nconn; i++) {
    lwsi_wire_reader_free(&fl.rd[i]);
    uv_close((uv_handle_t *)&fl.conn[i], NULL);
  }
  uv_close((uv_handle_t *)&fl.srv, NULL);
  teardown(a, 1, what);
  loop.data = NULL;
}

/* Closing the module from inside its own callback is allowed. */
static void close_on_release(struct lwsi_rdzv *r, const struct lwsi_rdzv_event *ev)
{
  on_event(r, ev);
  if (ev->type == LWSI_RDZV_EV_RELEASED || ev->type == LWSI_RDZV_EV_JOINED)
    lwsi_rdzv_close(r);
}

static void test_close_in_callback(void)
{
  const char *what = "close inside the callback";
  setup();
  struct agent a[3];
  struct lwsi_rdzv_config c;
  config(&c, 3, 0, 0);
  start(&a[0], &c);
  a[0].r.cb = close_on_release; /* the leader closes on its first join */
  uint16_t port = lwsi_rdzv_port(&a[0].r);
  for (uint32_t i = 1; i < 3; i++) {
    config(&c, 3, i, port);
    start(&a[i], &c);
    a[i].r.cb = close_on_release;
  }
  TAP_OK(WAIT_UNTIL(a[0].count[LWSI_RDZV_EV_JOINED] == 1, 2000) && a[0].r.state == LWSI_RDZV_CLOSED,
         "%s: the leader closed itself from its callback", what);
  pause_ms(100);
  teardown(a, 3, what);
}

/* Closes r and runs the loop until its handles are closed, so that the
 * struct may be used again (the start helper zeroes it). */
static void close_now(struct lwsi_rdzv *r)
{
  lwsi_rdzv_close(r);
  while (r->closing > 0)
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_bad_config(void)
{
  setup();
  struct agent a[1];
  struct lwsi_rdzv_config c;
  config(&c, 3, 3, 1);
  TAP_OK(start(&a[0], &c) == -EINVAL, "a rank outside the group is -EINVAL");
  close_now(&a[0].r);
  config(&c, 3, 1, 1);
  c.host = "leader.example";
  TAP_OK(start(&a[0], &c) == -EINVAL, "a worker needs the leader's IP, not a name");
  close_now(&a[0].r);
  config(&c, 3, 1, 1);
  c.revision = "rev\n1";
  TAP_OK(start(&a[0], &c) == -EINVAL, "a revision that cannot go on the wire is -EINVAL");
  close_now(&a[0].r);
  config(&c, 3, 1, 1);
  c.pod = "pod\x01";
  TAP_OK(lwsi_rdzv_start(&a[0].r, &loop, &c, on_event, on_local) == -EINVAL,
         "a pod name that cannot go on the wire is -EINVAL");
  close_now(&a[0].r);
  /* Starting again over handles that are still closing is refused. */
  config(&c, 3, 1, 1);
  TAP_OK(start(&a[0], &c) == 0, "a worker starts");
  lwsi_rdzv_close(&a[0].r);
  TAP_OK(lwsi_rdzv_start(&a[0].r, &loop, &c, on_event, on_local) == -EBUSY,
         "start again before the loop ran is -EBUSY");
  while (a[0].r.closing > 0)
    uv_run(&loop, UV_RUN_NOWAIT);
  TAP_OK(lwsi_rdzv_start(&a[0].r, &loop, &c, on_event, on_local) == 0,
         "after the loop ran, the same struct starts again");
  close_now(&a[0].r);
  struct agent b[2];
  config(&c, 2, 0, 0);
  start(&b[0], &c);
  c.port = lwsi_rdzv_port(&b[0].r);
  TAP_OK(start(&b[1], &c) == UV_EADDRINUSE, "a second leader on the same port is EADDRINUSE");
  teardown(b, 2, "bad config");
}

int main(void)
{
  /* A write to a peer that reset must fail with EPIPE, not kill us (the
   * agent arranges the same). */
  signal(SIGPIPE, SIG_IGN);
  uint64_t t0 = uv_hrtime();
  test_group(3, false);
  test_group(64, true); /* a leader and 63 workers */
  /* A group whose release (the member table) is bigger than any other
   * frame, and whose joins would cost O(size^2) waiting frames if each
   * were broadcast: both ends of 1499 connections need ~3000 descriptors. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max >= 3200) {
    if (rl.rlim_cur < 3200) {
      rl.rlim_cur = 3200;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    test_group(1500, false);
  } else {
    TAP_SKIP("group of 1500: RLIMIT_NOFILE hard limit below 3200");
  }
  test_group_of_one();
  test_refusals();
  test_duplicate();
  test_hostile();
  test_mismatch();
  test_rejoin_after_release();
  test_late_leader();
  test_retry_policy();
  test_leader_restart();
  test_set_leader();
  test_rejoin_new_leader();
  test_deadlines();
  test_idle_ticks();
  test_beat_soon();
  test_loss_closed();
  test_loss_silent();
  test_bye();
  test_close_in_callback();
  test_app();
  test_app_before_release();
  test_app_before_release_worker();
  test_bad_config();
  printf("# total %.1f s\n", (double)(uv_hrtime() - t0) / 1e9);
  return tap_done();
}
