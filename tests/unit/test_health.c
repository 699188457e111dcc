/* The checks behind /livez and /readyz (contract, "Endpoints"): every role,
 * readiness mode, before launch, stopping, and the reason of each failed
 * check. */
#include "lwsinit/health.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"

/* The names of the failed checks, comma-separated: "" when all pass. */
static const char *failed(const struct lwsi_health_list *l)
{
  static char buf[256];
  buf[0] = '\0';
  for (size_t i = 0; i < l->n; i++)
    if (!l->checks[i].ok)
      snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", buf[0] ? "," : "",
               l->checks[i].name);
  return buf;
}

/* The names of all checks, in order. */
static const char *names(const struct lwsi_health_list *l)
{
  static char buf[256];
  buf[0] = '\0';
  for (size_t i = 0; i < l->n; i++)
    snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? "," : "",
             l->checks[i].name);
  return buf;
}

static const char *reason(const struct lwsi_health_list *l, const char *name)
{
  const struct lwsi_health_check *c = lwsi_health_find(l, name);
  return c ? c->reason : NULL;
}

/* A healthy serving leader of a group of 4. */
static struct lwsi_health_input leader(void)
{
  return (struct lwsi_health_input){
    .is_leader = true,
    .readiness = LWSI_READY_SERVING,
    .phase = "running",
    .launched = true,
    .child_running = true,
    .rdzv_listening = true,
    .size = 4,
    .joined = 4,
    .alive = 4,
    .upstream_enabled = true,
    .upstream_ok = true,
  };
}

static struct lwsi_health_input worker(void)
{
  return (struct lwsi_health_input){
    .is_leader = false,
    .phase = "running",
    .launched = true,
    .child_running = true,
    .size = 4,
    .leader_heard = true,
    .upstream_enabled = true,
    .upstream_ok = true,
  };
}

static void test_live(void)
{
  struct lwsi_health_list l;
  struct lwsi_health_input in = leader();

  lwsi_health_live(&in, &l);
  TAP_STR_EQ(names(&l), "loop,child", "livez checks are loop, child");
  TAP_OK(lwsi_health_passed(&l), "livez passes while the engine runs");

  /* Before launch, waiting is healthy, whatever the phase. */
  in = worker();
  in.launched = false;
  in.child_running = false;
  in.phase = "joining";
  in.leader_heard = false;
  lwsi_health_live(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "livez passes before launch (waiting is healthy)");

  in.launched = true;
  lwsi_health_live(&in, &l);
  TAP_STR_EQ(failed(&l), "child", "livez fails once the launched engine is gone");
  TAP_STR_EQ(reason(&l, "child"), "the engine is not running", "child's reason");

  /* Liveness is about this pod only: a lost member or a silent leader
   * never restarts it (that is the group's business, via exit 6). */
  in = leader();
  in.alive = 2;
  in.upstream_ok = false;
  in.stopping = true;
  lwsi_health_live(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "livez ignores members, upstream and stopping");
}

static void test_ready_worker(void)
{
  struct lwsi_health_list l;
  struct lwsi_health_input in = worker();

  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(names(&l), "not-stopping,child,leader,upstream", "worker readyz checks");
  TAP_OK(lwsi_health_passed(&l), "worker ready: child runs, leader heard, upstream ok");

  in.upstream_enabled = false;
  in.upstream_ok = false;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(names(&l), "not-stopping,child,leader", "no upstream check without an upstream");
  TAP_OK(lwsi_health_passed(&l), "worker ready without an upstream");

  in = worker();
  in.leader_heard = false;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "leader", "worker unready when the leader is silent");
  TAP_STR_EQ(reason(&l, "leader"), "no recent heartbeat from the leader", "leader default reason");
  in.leader_reason = "no heartbeat from the leader for 12 s";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "leader"), "no heartbeat from the leader for 12 s",
             "leader reason from the agent");

  in = worker();
  in.upstream_ok = false;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "upstream", "worker unready when its upstream is not healthy");
  TAP_STR_EQ(reason(&l, "upstream"), "the engine's health URL has not answered healthy yet",
             "upstream default reason");
  in.upstream_error = "HTTP 503";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "upstream"), "the engine's health URL: HTTP 503", "upstream reason");

  in = worker();
  in.launched = false;
  in.child_running = false;
  in.phase = "checking";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "child", "worker unready before launch");
  TAP_STR_EQ(reason(&l, "child"), "the engine has not started yet (phase checking)",
             "child reason before launch names the phase");
  in.phase = NULL;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "child"), "the engine has not started yet", "without a phase name");

  in = worker();
  in.child_running = false;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "child"), "the engine is not running", "child reason after exit");
}

static void test_ready_serving(void)
{
  struct lwsi_health_list l;
  struct lwsi_health_input in = leader();

  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(names(&l), "not-stopping,child,members,upstream", "serving leader readyz checks");
  TAP_OK(lwsi_health_passed(&l), "serving: all alive, upstream healthy, child runs");

  in.alive = 3;
  in.lost_reason = "rank 2: no heartbeat for 10 s";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "members", "serving: a lost member makes the leader unready");
  TAP_STR_EQ(reason(&l, "members"), "3 of 4 members alive; rank 2: no heartbeat for 10 s",
             "members reason counts and says why");
  in.lost_reason = NULL;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "members"), "3 of 4 members alive", "members reason without detail");

  in = leader();
  in.upstream_ok = false;
  in.upstream_error = "connection refused";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "upstream", "serving: the leader's upstream must be healthy");

  in = leader();
  in.launched = false;
  in.child_running = false;
  in.joined = in.alive = 2;
  in.upstream_ok = false;
  in.phase = "joining";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "child,members,upstream", "serving before launch: every check says why");
  TAP_STR_EQ(reason(&l, "members"), "2 of 4 members alive", "members while joining");

  /* A standalone agent is a leader of a group of one. */
  in = leader();
  in.standalone = true;
  in.size = in.joined = in.alive = 1;
  in.rdzv_listening = false;
  in.upstream_enabled = false;
  lwsi_health_ready(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "standalone serving: ready when the engine runs");
}

static void test_ready_group(void)
{
  struct lwsi_health_list l;
  struct lwsi_health_input in = leader();
  in.readiness = LWSI_READY_GROUP;
  in.launched = in.child_running = false;
  in.upstream_ok = false;
  in.phase = "checking";

  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(names(&l), "not-stopping,members", "group leader readyz checks");
  TAP_OK(lwsi_health_passed(&l), "group: ready once all joined and alive, engine or not");

  in.joined = 3;
  in.alive = 3;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "members", "group: unready until everyone joined");
  TAP_STR_EQ(reason(&l, "members"), "3 of 4 members joined", "joined reason");

  in.joined = 4;
  in.alive = 3;
  in.lost_reason = "rank 3 left";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "members"), "3 of 4 members alive; rank 3 left", "alive reason");
}

static void test_ready_listening(void)
{
  struct lwsi_health_list l;
  struct lwsi_health_input in = leader();
  in.readiness = LWSI_READY_LISTENING;
  in.launched = in.child_running = false;
  in.joined = in.alive = 1;
  in.upstream_ok = false;
  in.phase = "joining";

  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(names(&l), "not-stopping,rendezvous", "listening leader readyz checks");
  TAP_OK(lwsi_health_passed(&l), "listening: ready once the rendezvous is open, alone");

  in.rdzv_listening = false;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "rendezvous", "listening: unready before the listener is open");
  TAP_STR_EQ(reason(&l, "rendezvous"), "the rendezvous is not listening yet (phase joining)",
             "rendezvous reason");

  in.standalone = true;
  lwsi_health_ready(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "listening standalone: no rendezvous to wait for");

  /* Workers ignore --readiness: it is the leader's. */
  in = worker();
  in.readiness = LWSI_READY_LISTENING;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(names(&l), "not-stopping,child,leader,upstream", "workers ignore --readiness");
}

static void test_stopping(void)
{
  struct lwsi_health_list l;
  const enum lwsi_readiness modes[] = {LWSI_READY_SERVING, LWSI_READY_GROUP,
                                       LWSI_READY_LISTENING};
  for (size_t i = 0; i < 3; i++) {
    struct lwsi_health_input in = leader();
    in.readiness = modes[i];
    in.stopping = true;
    in.phase = "stopping";
    lwsi_health_ready(&in, &l);
    TAP_STR_EQ(failed(&l), "not-stopping", "stopping leader (mode %zu) is unready", i);
  }
  struct lwsi_health_input in = worker();
  in.stopping = true;
  in.phase = "stopping";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "not-stopping", "stopping worker is unready");
  TAP_STR_EQ(reason(&l, "not-stopping"), "the agent is stopping (phase stopping)",
             "not-stopping reason");
  TAP_STR_EQ(l.checks[0].name, "not-stopping", "not-stopping comes first");
}

static void test_list(void)
{
  struct lwsi_health_list l = {0};
  TAP_OK(lwsi_health_passed(&l), "an empty list passes");
  TAP_OK(lwsi_health_add(&l, "gpu", false, "line one\nline\ttwo\r") == 0, "add a check");
  TAP_STR_EQ(l.checks[0].reason, "line one line two ", "control characters become spaces");
  TAP_OK(lwsi_health_add(&l, "x", false, NULL) == 0, "add without a reason");
  TAP_STR_EQ(l.checks[1].reason, "failed", "a failed check always has a reason");
  TAP_OK(lwsi_health_add(&l, "y", true, "%s", "") == 0 && l.checks[2].reason[0] == '\0',
         "an ok check has an empty reason");
  while (l.n < LWSI_HEALTH_MAX_CHECKS)
    lwsi_health_add(&l, "fill", true, NULL);
  TAP_OK(lwsi_health_add(&l, "over", true, NULL) == -ENOSPC, "a full list says -ENOSPC");
  TAP_OK(lwsi_health_find(&l, "nope") == NULL, "find an absent check");

  char longname[100];
  memset(longname, 'n', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  struct lwsi_health_list m = {0};
  lwsi_health_add(&m, longname, true, NULL);
  TAP_OK(strlen(m.checks[0].name) == LWSI_HEALTH_NAME_MAX - 1, "long names are cut, not overrun");
}

/* Three workers of a serving group, healthy, as their heartbeats say. */
static struct lwsi_health_member rows[3];

static void healthy_rows(void)
{
  for (uint32_t i = 0; i < 3; i++)
    rows[i] = (struct lwsi_health_member){
      .rank = i + 1, .has_state = true, .child = "running", .has_health = true,
      .upstream_on = true, .upstream_ok = true, .upstream_age_ms = 60000,
    };
}

static void test_ready_members_engines(void)
{
  struct lwsi_health_list l;
  struct lwsi_health_input in = leader();
  healthy_rows();
  in.members = rows;
  in.nmembers = 3;
  lwsi_health_ready(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "serving: every worker's engine runs and answers healthy");

  rows[0].upstream_ok = false;
  rows[0].upstream_error = "HTTP 503";
  rows[0].upstream_age_ms = 4200;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(failed(&l), "members", "a worker's failing upstream makes the leader unready");
  TAP_STR_EQ(reason(&l, "members"), "rank 1's upstream is failing (HTTP 503) since 4 s",
             "the reason names the member, the check and since when");

  rows[2].child = "exited";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "members"),
             "rank 1's upstream is failing (HTTP 503) since 4 s (and 1 more)",
             "the first failing member is named, the others counted");

  healthy_rows();
  rows[1].child = "exited";
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "members"), "rank 2's engine is not running (exited)",
             "a worker's engine that exited");
  healthy_rows();
  rows[1].stopping = true;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "members"), "rank 2 is stopping", "a worker that stops");
  healthy_rows();
  rows[2].has_state = false;
  lwsi_health_ready(&in, &l);
  TAP_STR_EQ(reason(&l, "members"), "rank 3 has not reported its engine yet",
             "a worker not heard from yet");

  healthy_rows();
  rows[0].upstream_on = false;
  rows[0].upstream_ok = false;
  lwsi_health_ready(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "a worker without a health URL is judged on its child only");
  healthy_rows();
  rows[0].has_health = false;
  rows[0].upstream_ok = false;
  lwsi_health_ready(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "an older worker without health details: its child only");

  healthy_rows();
  rows[0].upstream_ok = false;
  in.readiness = LWSI_READY_GROUP;
  lwsi_health_ready(&in, &l);
  TAP_OK(lwsi_health_passed(&l), "group readiness does not look at the engines");
}

int main(void)
{
  test_live();
  test_ready_members_engines();
  test_ready_worker();
  test_ready_serving();
  test_ready_group();
  test_ready_listening();
  test_stopping();
  test_list();
  return tap_done();
}
