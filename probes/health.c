#include "lwsinit/health.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lwsi_health_add(struct lwsi_health_list *l, const char *name, bool ok, const char *fmt, ...)
{
  if (l->n >= LWSI_HEALTH_MAX_CHECKS)
    return -ENOSPC;
  struct lwsi_health_check *c = &l->checks[l->n++];
  snprintf(c->name, sizeof(c->name), "%s", name);
  c->ok = ok;
  c->reason[0] = '\0';
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof(c->reason), fmt, ap);
    va_end(ap);
  }
  /* Each check is one line of the verbose body ("[-]name failed: reason"),
   * and reasons come from outside (an engine's error text): no control
   * character may break the line structure. */
  for (char *p = c->reason; *p != '\0'; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      *p = ' ';
  if (!ok && c->reason[0] == '\0')
    snprintf(c->reason, sizeof(c->reason), "failed");
  return 0;
}

bool lwsi_health_passed(const struct lwsi_health_list *l)
{
  for (size_t i = 0; i < l->n; i++)
    if (!l->checks[i].ok)
      return false;
  return true;
}

const struct lwsi_health_check *lwsi_health_find(const struct lwsi_health_list *l,
                                                 const char *name)
{
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->checks[i].name, name) == 0)
      return &l->checks[i];
  return NULL;
}

static const char *or_empty(const char *s) { return s != NULL ? s : ""; }

/* "the engine has not started yet (phase joining)" */
static void add_child(struct lwsi_health_list *out, const struct lwsi_health_input *in)
{
  if (in->child_running)
    lwsi_health_add(out, "child", true, NULL);
  else if (!in->launched)
    lwsi_health_add(out, "child", false, "the engine has not started yet%s%s%s",
                    in->phase ? " (phase " : "", or_empty(in->phase), in->phase ? ")" : "");
  else
    lwsi_health_add(out, "child", false, "the engine is not running");
}

static void add_upstream(struct lwsi_health_list *out, const struct lwsi_health_input *in)
{
  if (!in->upstream_enabled)
    return;
  if (in->upstream_ok)
    lwsi_health_add(out, "upstream", true, NULL);
  else if (in->upstream_error != NULL && in->upstream_error[0] != '\0')
    lwsi_health_add(out, "upstream", false, "the engine's health URL: %s", in->upstream_error);
  else
    lwsi_health_add(out, "upstream", false, "the engine's health URL has not answered healthy yet");
}

/* Why member m keeps the group from serving, into buf; false when it does
 * not. Only what its heartbeats reported is judged: an older agent that
 * sends no health details is judged on its child alone. */
static bool member_unready(const struct lwsi_health_member *m, char *buf, size_t len)
{
  if (!m->has_state) {
    snprintf(buf, len, "rank %u has not reported its engine yet", m->rank);
    return true;
  }
  if (m->has_health && m->stopping) {
    snprintf(buf, len, "rank %u is stopping", m->rank);
    return true;
  }
  if (m->child == NULL || strcmp(m->child, "running") != 0) {
    snprintf(buf, len, "rank %u's engine is not running (%s)", m->rank, or_empty(m->child));
    return true;
  }
  if (m->has_health && m->upstream_on && !m->upstream_ok) {
    const char *why = or_empty(m->upstream_error);
    if (m->upstream_age_ms >= 0)
      snprintf(buf, len, "rank %u's upstream is failing (%s) since %lld s", m->rank,
               why[0] ? why : "not healthy", (long long)(m->upstream_age_ms / 1000));
    else
      snprintf(buf, len, "rank %u's upstream is failing (%s)", m->rank,
               why[0] ? why : "not healthy");
    return true;
  }
  return false;
}

/* Members counts include the leader itself. need_joined: the "group" mode
 * states "every member has joined and is alive"; in "serving" mode alive
 * alone is asked for, which implies joined. */
static void add_members(struct lwsi_health_list *out, const struct lwsi_health_input *in,
                        bool need_joined)
{
  if (need_joined && in->joined < in->size) {
    lwsi_health_add(out, "members", false, "%u of %u members joined", in->joined, in->size);
    return;
  }
  if (in->alive < in->size) {
    const char *why = or_empty(in->lost_reason);
    lwsi_health_add(out, "members", false, "%u of %u members alive%s%s", in->alive, in->size,
                    why[0] ? "; " : "", why);
    return;
  }
  /* In serving mode, every worker's engine must serve too: its child runs
   * and its upstream is healthy. The first such member is named, with a
   * count of the others. */
  char first[LWSI_HEALTH_REASON_MAX] = "", one[LWSI_HEALTH_REASON_MAX];
  size_t bad = 0;
  for (size_t i = 0; !need_joined && i < in->nmembers; i++) {
    if (!member_unready(&in->members[i], one, sizeof(one)))
      continue;
    if (bad++ == 0)
      snprintf(first, sizeof(first), "%s", one);
  }
  if (bad == 1)
    lwsi_health_add(out, "members", false, "%s", first);
  else if (bad > 1)
    lwsi_health_add(out, "members", false, "%s (and %zu more)", first, bad - 1);
  else
    lwsi_health_add(out, "members", true, NULL);
}

void lwsi_health_live(const struct lwsi_health_input *in, struct lwsi_health_list *out)
{
  out->n = 0;
  /* If this runs, the loop turned and answered: the check exists so that
   * the verbose list shows what liveness means (contract, "Endpoints"). */
  lwsi_health_add(out, "loop", true, NULL);
  /* Before launch, waiting (for DNS, the group, the GPU check) is healthy:
   * a restart would not make the group form any faster. */
  if (!in->launched || in->child_running)
    lwsi_health_add(out, "child", true, NULL);
  else
    lwsi_health_add(out, "child", false, "the engine is not running");
}

void lwsi_health_ready(const struct lwsi_health_input *in, struct lwsi_health_list *out)
{
  out->n = 0;
  /* While stopping (drain included: --drain-delay reports unready before
   * the child is signalled), every agent answers 503. */
  if (in->stopping)
    lwsi_health_add(out, "not-stopping", false, "the agent is stopping%s%s%s",
                    in->phase ? " (phase " : "", or_empty(in->phase), in->phase ? ")" : "");
  else
    lwsi_health_add(out, "not-stopping", true, NULL);

  if (!in->is_leader) {
    /* A worker: its engine runs, the leader is heard from, and its own
     * upstream (if any) is healthy. */
    add_child(out, in);
    if (in->leader_heard)
      lwsi_health_add(out, "leader", true, NULL);
    else if (in->leader_reason != NULL && in->leader_reason[0] != '\0')
      lwsi_health_add(out, "leader", false, "%s", in->leader_reason);
    else
      lwsi_health_add(out, "leader", false, "no recent heartbeat from the leader");
    add_upstream(out, in);
    return;
  }

  switch (in->readiness) {
  case LWSI_READY_SERVING:
    add_child(out, in);
    add_members(out, in, false);
    add_upstream(out, in);
    return;
  case LWSI_READY_GROUP:
    add_members(out, in, true);
    return;
  case LWSI_READY_LISTENING:
    /* For LWS startupPolicy LeaderReady: workers are created only once the
     * leader is ready, so it must be ready while they cannot exist yet. A
     * standalone agent has no rendezvous to wait for. */
    if (in->standalone || in->rdzv_listening)
      lwsi_health_add(out, "rendezvous", true, NULL);
    else
      lwsi_health_add(out, "rendezvous", false, "the rendezvous is not listening yet%s%s%s",
                      in->phase ? " (phase " : "", or_empty(in->phase), in->phase ? ")" : "");
    return;
  }
  lwsi_health_add(out, "readiness", false, "unknown readiness mode %d", (int)in->readiness);
}
