/* Owns the status document, its summary for a person and the agent's
 * metrics (include/lwsinit/status.h), all rendered from a snapshot. */
#include "lwsinit/status.h"

#include "lwsinit/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwsinit_build.h"

static double ms_to_s(uint64_t ms) { return (double)ms / 1000.0; }

/* key: the text where present, else null: the document keeps its keys
 * whether or not there is a value, so that readers need no second case. */
static void add_text_or_null(cJSON *o, const char *key, const char *text, bool present)
{
  if (present)
    cJSON_AddStringToObject(o, key, text);
  else
    cJSON_AddNullToObject(o, key);
}

static void add_number_or_null(cJSON *o, const char *key, double value, bool present)
{
  if (present)
    cJSON_AddNumberToObject(o, key, value);
  else
    cJSON_AddNullToObject(o, key);
}

/* A new object at the end of arr, or NULL when memory ran out. */
static cJSON *add_row(cJSON *arr)
{
  cJSON *o = cJSON_CreateObject();
  if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

const char *lwsi_status_child_name(enum lwsi_status_child state)
{
  switch (state) {
  case LWSI_STATUS_CHILD_RUNNING:
    return "running";
  case LWSI_STATUS_CHILD_EXITED:
    return "exited";
  case LWSI_STATUS_CHILD_NOT_STARTED:
    break;
  }
  return "not-started";
}

const char *lwsi_status_gpu_name(enum lwsi_status_gpu state)
{
  switch (state) {
  case LWSI_STATUS_GPU_RUNNING:
    return "running";
  case LWSI_STATUS_GPU_PASSED:
    return "passed";
  case LWSI_STATUS_GPU_FAILED:
    return "failed";
  case LWSI_STATUS_GPU_NOT_STARTED:
    break;
  }
  return "not-started";
}

static const char *role_of(const struct lwsi_status_snapshot *s)
{
  return s->standalone ? "standalone" : (s->rank == 0 ? "leader" : "worker");
}

static void add_upstream(const struct lwsi_status_snapshot *s, cJSON *doc)
{
  if (!s->upstream.enabled) {
    cJSON_AddNullToObject(doc, "upstream");
    return;
  }
  cJSON *up = cJSON_AddObjectToObject(doc, "upstream");
  if (up == NULL)
    return;
  cJSON_AddBoolToObject(up, "enabled", 1);
  cJSON_AddStringToObject(up, "url", s->upstream.url);
  if (s->upstream.known)
    cJSON_AddBoolToObject(up, "ok", s->upstream.ok);
  else
    cJSON_AddNullToObject(up, "ok");
  cJSON_AddStringToObject(up, "outcome", s->upstream.outcome);
  cJSON_AddNumberToObject(up, "http_status", (double)s->upstream.http_status);
  cJSON_AddNumberToObject(up, "latency_s", s->upstream.latency_s);
  cJSON_AddNumberToObject(up, "polls", (double)s->upstream.polls);
  cJSON_AddNumberToObject(up, "failures", (double)s->upstream.failures);
  add_text_or_null(up, "error", s->upstream.error, s->upstream.error[0] != '\0');
}

/* A member's engine health as its heartbeats report it: whether it polls
 * a health URL, since when the answer holds, why it fails, and whether the
 * member's stop has begun. */
static void add_member_health(const struct lwsi_status_member *m, cJSON *o)
{
  cJSON_AddBoolToObject(o, "upstream_polled", m->upstream_on);
  add_number_or_null(o, "upstream_since_s", (double)m->upstream_age_ms / 1000.0,
                     m->upstream_on && m->upstream_age_ms >= 0);
  add_text_or_null(o, "upstream_error", m->upstream_error,
                   m->upstream_on && !m->upstream && m->upstream_error[0] != '\0');
  cJSON_AddBoolToObject(o, "stopping", m->stopping);
  if (m->launch_phase[0] != '\0')
    cJSON_AddStringToObject(o, "launch_phase", m->launch_phase);
}

/* The leader's view of every member, itself included. */
static void add_members(const struct lwsi_status_snapshot *s, cJSON *doc)
{
  cJSON *arr = cJSON_AddArrayToObject(doc, "members");
  if (arr == NULL)
    return;
  for (size_t i = 0; i < s->nmembers; i++) {
    const struct lwsi_status_member *m = &s->members[i];
    cJSON *o = add_row(arr);
    if (o == NULL)
      return;
    cJSON_AddNumberToObject(o, "rank", m->rank);
    cJSON_AddStringToObject(o, "address", m->addr);
    cJSON_AddStringToObject(o, "pod", m->pod);
    cJSON_AddBoolToObject(o, "joined", m->joined);
    cJSON_AddBoolToObject(o, "alive", m->alive);
    add_number_or_null(o, "heartbeat_age_s", (double)m->hb_age_ms / 1000.0, m->hb_age_ms >= 0);
    add_number_or_null(o, "rtt_s", (double)m->rtt_us / 1e6, m->rtt_us >= 0);
    if (m->has_state) {
      cJSON_AddStringToObject(o, "child", m->child);
      cJSON_AddBoolToObject(o, "upstream", m->upstream);
    } else if (m->rank == s->rank) {
      /* Our own row: the state we would put in a heartbeat. */
      cJSON_AddStringToObject(o, "child", lwsi_status_child_name(s->child.state));
      if (m->has_health)
        cJSON_AddBoolToObject(o, "upstream", m->upstream);
    }
    if (m->has_health)
      add_member_health(m, o);
  }
}

/* The GPU check: this node's result and, for the group, the verdict, which
 * the leader gathers from every node before any engine starts. */
static void add_gpu_check(const struct lwsi_status_snapshot *s, cJSON *doc)
{
  if (!s->has_gpu_check)
    return;
  cJSON *g = cJSON_AddObjectToObject(doc, "gpu_check");
  if (g == NULL)
    return;
  cJSON_AddStringToObject(g, "mode", s->gpu.mode);
  cJSON_AddStringToObject(g, "state", lwsi_status_gpu_name(s->gpu.state));
  cJSON_AddBoolToObject(g, "group_passed", s->gpu.group_passed);
  if (s->gpu.have_result) {
    cJSON_AddNumberToObject(g, "devices", s->gpu.devices);
    cJSON_AddStringToObject(g, "model", s->gpu.model);
    cJSON_AddNumberToObject(g, "time_s", s->gpu.time_ms / 1000.0);
    add_number_or_null(g, "busbw_gbps", s->gpu.busbw_gbps, s->gpu.busbw_gbps >= 0);
  }
  if (s->gpu.error[0] != '\0')
    cJSON_AddStringToObject(g, "error", s->gpu.error);
}

/* The node check: every check with what it found and, when not ok, the
 * fix. */
static void add_node_check(const struct lwsi_status_snapshot *s, cJSON *doc)
{
  if (s->node.mode == NULL)
    return;
  cJSON *n = cJSON_AddObjectToObject(doc, "node_check");
  if (n == NULL)
    return;
  cJSON_AddStringToObject(n, "mode", s->node.mode);
  if (s->node.ran)
    cJSON_AddBoolToObject(n, "passed", s->node.failures == 0);
  else
    cJSON_AddNullToObject(n, "passed");
  cJSON_AddNumberToObject(n, "warnings", s->node.warnings);
  cJSON_AddNumberToObject(n, "failures", s->node.failures);
  cJSON *arr = cJSON_AddArrayToObject(n, "checks");
  for (size_t i = 0; arr != NULL && i < s->node.nitems; i++) {
    const struct lwsi_status_node_item *it = &s->node.items[i];
    cJSON *o = add_row(arr);
    if (o == NULL)
      return;
    cJSON_AddStringToObject(o, "name", it->name);
    cJSON_AddStringToObject(o, "state", it->state);
    cJSON_AddStringToObject(o, "found", it->found);
    add_text_or_null(o, "fix", it->fix, it->fix[0] != '\0');
  }
}

/* The engine's network environment: each variable, its value (null: not
 * set) and why. */
static void add_netenv(const struct lwsi_status_snapshot *s, cJSON *doc)
{
  if (s->netenv.mode == NULL)
    return;
  cJSON *n = cJSON_AddObjectToObject(doc, "network_env");
  if (n == NULL)
    return;
  cJSON_AddStringToObject(n, "mode", s->netenv.mode);
  cJSON_AddBoolToObject(n, "computed", s->netenv.computed);
  cJSON *vars = cJSON_AddObjectToObject(n, "variables");
  for (size_t i = 0; vars != NULL && i < s->netenv.nvars; i++) {
    const struct lwsi_status_netenv_var *v = &s->netenv.vars[i];
    cJSON *o = cJSON_AddObjectToObject(vars, v->name);
    if (o == NULL)
      return;
    add_text_or_null(o, "value", v->value, v->value != NULL);
    cJSON_AddStringToObject(o, "reason", v->reason);
  }
}

/* group.unverified_refusal: refusals this worker could not verify with
 * the token (a token that differs, most likely); absent when none. */
static void add_unverified_refusal(const struct lwsi_status_snapshot *s, cJSON *g)
{
  if (s->unverified_refusal.count == 0)
    return;
  cJSON *u = cJSON_AddObjectToObject(g, "unverified_refusal");
  if (u == NULL)
    return;
  cJSON_AddNumberToObject(u, "count", (double)s->unverified_refusal.count);
  cJSON_AddStringToObject(u, "reason", s->unverified_refusal.reason);
  cJSON_AddStringToObject(u, "check",
                          "every member must have the same --token-file / LWSINIT_TOKEN");
}

/* launch_check (leader): the mode, whether the commands were compared,
 * and the members whose launch command differs from the leader's. */
static void add_launch_check(const struct lwsi_status_snapshot *s, cJSON *doc)
{
  if (!s->has_launch_check)
    return;
  cJSON *lc = cJSON_AddObjectToObject(doc, "launch_check");
  if (lc == NULL)
    return;
  cJSON_AddStringToObject(lc, "mode", s->launch_check.mode);
  cJSON_AddBoolToObject(lc, "compared", s->launch_check.compared);
  cJSON_AddNumberToObject(lc, "ranks_differing", s->launch_check.ranks);
  cJSON_AddNumberToObject(lc, "differences", (double)s->launch_check.differences);
  cJSON *arr = cJSON_AddArrayToObject(lc, "ranks");
  for (size_t i = 0; arr != NULL && i < s->launch_check.nlisted; i++) {
    const struct lwsi_status_launch_diff *d = &s->launch_check.listed[i];
    cJSON *o = add_row(arr);
    if (o == NULL)
      return;
    cJSON_AddNumberToObject(o, "rank", d->rank);
    cJSON_AddNumberToObject(o, "differences", d->count);
    cJSON_AddStringToObject(o, "detail", d->detail);
  }
}

/* The launch check's and the unverified refusals' metrics. */
static void launch_check_metrics(const struct lwsi_status_snapshot *s, struct lwsi_buf *b)
{
  if (s->has_launch_check && s->launch_check.compared) {
    lwsi_metrics_gauge(b, "lwsinit_launch_check_ranks_differing",
                       "Members whose launch command differs from the leader's.",
                       s->launch_check.ranks);
    lwsi_metrics_family(b, "lwsinit_launch_check_differences", LWSI_METRICS_GAUGE,
                        "Arguments of a member's launch command that differ from the leader's "
                        "(the first 16 members that differ).");
    for (size_t i = 0; i < s->launch_check.nlisted; i++) {
      char rank[16];
      snprintf(rank, sizeof(rank), "%u", s->launch_check.listed[i].rank);
      const struct lwsi_metrics_label l[] = {{"rank", rank}};
      lwsi_metrics_sample(b, "lwsinit_launch_check_differences", l, 1,
                          s->launch_check.listed[i].count);
    }
  }
  if (s->has_group && s->rank != 0)
    lwsi_metrics_counter(b, "lwsinit_rdzv_unverified_refusals_total",
                         "Refusals of this member the leader could not prove with the token.",
                         s->unverified_refusal.count);
}

cJSON *lwsi_status_doc(const struct lwsi_status_snapshot *s)
{
  cJSON *doc = cJSON_CreateObject();
  if (doc == NULL)
    return NULL;
  cJSON_AddStringToObject(doc, "version", LWSI_VERSION);
  cJSON_AddNumberToObject(doc, "rank", s->rank);
  cJSON_AddNumberToObject(doc, "size", s->size);
  cJSON_AddStringToObject(doc, "role", role_of(s));
  cJSON_AddStringToObject(doc, "phase", s->phase < s->nphases ? s->phases[s->phase].name : "");
  cJSON_AddBoolToObject(doc, "ready", s->ready);
  cJSON_AddNumberToObject(doc, "epoch", s->epoch);
  cJSON_AddNumberToObject(doc, "restarts", (double)s->restarts);
  cJSON *leader = cJSON_AddObjectToObject(doc, "leader");
  if (leader != NULL) {
    cJSON_AddStringToObject(leader, "address", s->leader);
    cJSON_AddStringToObject(leader, "ip", s->leader_ip);
  }
  cJSON *child = cJSON_AddObjectToObject(doc, "child");
  if (child != NULL) {
    cJSON_AddStringToObject(child, "state", lwsi_status_child_name(s->child.state));
    add_number_or_null(child, "pid", s->child.pid, s->child.pid > 0);
    if (s->child.state == LWSI_STATUS_CHILD_EXITED)
      cJSON_AddNumberToObject(child, "exit_code", s->child.exit_code);
    cJSON_AddNumberToObject(child, "orphans_reaped", (double)s->child.orphans_reaped);
  }
  add_upstream(s, doc);
  cJSON *t = cJSON_AddObjectToObject(doc, "timings");
  if (t != NULL) {
    for (size_t p = 0; p < s->nphases; p++) {
      char key[48];
      snprintf(key, sizeof(key), "%s_s", s->phases[p].name);
      cJSON_AddNumberToObject(t, key, ms_to_s(s->phases[p].ms));
    }
    cJSON_AddNumberToObject(t, "total_s", ms_to_s(s->total_ms));
  }
  if (s->has_group) {
    cJSON *g = cJSON_AddObjectToObject(doc, "group");
    if (g != NULL) {
      cJSON_AddStringToObject(g, "rendezvous", s->group.rendezvous);
      cJSON_AddStringToObject(g, "incarnation", s->group.incarnation);
      cJSON_AddNumberToObject(g, "joined", s->joined);
      cJSON_AddStringToObject(g, "missing", s->group.missing);
      cJSON_AddNumberToObject(g, "peer_losses", (double)s->peer_losses);
      if (s->group.broken[0] != '\0')
        cJSON_AddStringToObject(g, "broken", s->group.broken);
      add_unverified_refusal(s, g);
    }
  }
  add_gpu_check(s, doc);
  add_node_check(s, doc);
  add_netenv(s, doc);
  add_launch_check(s, doc);
  if (s->rank == 0 && s->has_group)
    add_members(s, doc);
  if (s->launch_phase != NULL)
    cJSON_AddStringToObject(doc, "launch_phase", s->launch_phase);
  add_text_or_null(doc, "last_error", s->last_error, s->last_error[0] != '\0');
  return doc;
}

char *lwsi_status_render(const struct lwsi_status_snapshot *s)
{
  cJSON *doc = lwsi_status_doc(s);
  if (doc == NULL)
    return NULL;
  char *text = cJSON_PrintUnformatted(doc);
  cJSON_Delete(doc);
  if (text == NULL)
    return NULL;
  size_t n = strlen(text);
  char *out = realloc(text, n + 2);
  if (out == NULL) {
    free(text);
    return NULL;
  }
  out[n] = '\n';
  out[n + 1] = '\0';
  return out;
}

static const char *str_of(const cJSON *o, const char *key, const char *def)
{
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : def;
}

static double num_of(const cJSON *o, const char *key, double def)
{
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* The "node" line (the node check: its verdict and each check not ok) and
 * the "netenv" line (what the agent set, what the user kept). */
static void print_node(FILE *out, const cJSON *doc)
{
  const cJSON *nc = cJSON_GetObjectItemCaseSensitive(doc, "node_check");
  if (cJSON_IsObject(nc)) {
    const cJSON *passed = cJSON_GetObjectItemCaseSensitive(nc, "passed");
    fprintf(out, "node     check %s: %s", str_of(nc, "mode", "?"),
            cJSON_IsNull(passed) ? "not run" : (cJSON_IsTrue(passed) ? "passed" : "failed"));
    double w = num_of(nc, "warnings", 0);
    if (w > 0)
      fprintf(out, ", %.0f warning%s", w, w == 1 ? "" : "s");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(nc, "checks"))
    {
      if (strcmp(str_of(c, "state", "ok"), "ok") != 0)
        fprintf(out, "; %s %s: %s", str_of(c, "name", "?"), str_of(c, "state", "?"),
                str_of(c, "found", ""));
    }
    fprintf(out, "\n");
  }
  const cJSON *ne = cJSON_GetObjectItemCaseSensitive(doc, "network_env");
  if (cJSON_IsObject(ne)) {
    fprintf(out, "netenv   %s", str_of(ne, "mode", "?"));
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ne, "computed"))) {
      fprintf(out, ", nothing set yet\n");
      return;
    }
    int shown = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(ne, "variables"))
    {
      const char *value = str_of(v, "value", NULL);
      if (value == NULL)
        continue;
      bool kept = strcmp(str_of(v, "reason", ""), "kept: set by the user") == 0;
      fprintf(out, "%s %s=%s%s", shown++ ? "," : ":", v->string, value, kept ? " (user's)" : "");
    }
    fprintf(out, "%s\n", shown ? "" : ", nothing set");
  }
}

int lwsi_status_print(FILE *out, const char *json)
{
  cJSON *doc = cJSON_Parse(json);
  if (doc == NULL || !cJSON_IsObject(doc)) {
    cJSON_Delete(doc);
    return -EINVAL;
  }
  const cJSON *ready = cJSON_GetObjectItemCaseSensitive(doc, "ready");
  fprintf(out, "rank %.0f of %.0f (%s), phase %s, %s\n", num_of(doc, "rank", -1),
          num_of(doc, "size", 0), str_of(doc, "role", "?"), str_of(doc, "phase", "?"),
          cJSON_IsTrue(ready) ? "ready" : "not ready");
  const char *lphase = str_of(doc, "launch_phase", NULL);
  if (lphase != NULL)
    fprintf(out, "launch   phase %s\n", lphase);
  fprintf(out, "epoch    %.0f, %.0f restart%s\n", num_of(doc, "epoch", 0),
          num_of(doc, "restarts", 0), num_of(doc, "restarts", 0) == 1 ? "" : "s");
  const cJSON *leader = cJSON_GetObjectItemCaseSensitive(doc, "leader");
  fprintf(out, "leader   %s (%s)\n", str_of(leader, "address", "?"),
          str_of(leader, "ip", "") [0] ? str_of(leader, "ip", "") : "unresolved");
  const cJSON *child = cJSON_GetObjectItemCaseSensitive(doc, "child");
  fprintf(out, "child    %s", str_of(child, "state", "?"));
  if (num_of(child, "pid", 0) > 0)
    fprintf(out, ", pid %.0f", num_of(child, "pid", 0));
  if (cJSON_GetObjectItemCaseSensitive(child, "exit_code") != NULL)
    fprintf(out, ", exit code %.0f", num_of(child, "exit_code", 0));
  fprintf(out, "\n");
  const cJSON *up = cJSON_GetObjectItemCaseSensitive(doc, "upstream");
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(up, "enabled"))) {
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(up, "ok");
    fprintf(out, "upstream %s: %s", str_of(up, "url", "?"),
            cJSON_IsTrue(ok) ? "healthy" : (cJSON_IsNull(ok) ? "not polled yet" : "unhealthy"));
    if (str_of(up, "error", NULL) != NULL)
      fprintf(out, " (%s)", str_of(up, "error", ""));
    fprintf(out, "\n");
  } else {
    fprintf(out, "upstream none\n");
  }
  const cJSON *gc = cJSON_GetObjectItemCaseSensitive(doc, "gpu_check");
  if (cJSON_IsObject(gc)) {
    fprintf(out, "gpus     %s check %s", str_of(gc, "mode", "?"), str_of(gc, "state", "?"));
    if (cJSON_GetObjectItemCaseSensitive(gc, "devices") != NULL)
      fprintf(out, ": %.0f x %s in %.2fs", num_of(gc, "devices", 0), str_of(gc, "model", "?"),
              num_of(gc, "time_s", 0));
    if (num_of(gc, "busbw_gbps", -1) >= 0)
      fprintf(out, ", busbw %.1f GB/s", num_of(gc, "busbw_gbps", 0));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(gc, "group_passed")))
      fprintf(out, "; the group passed");
    if (str_of(gc, "error", NULL) != NULL)
      fprintf(out, " (%s)", str_of(gc, "error", ""));
    fprintf(out, "\n");
  }
  print_node(out, doc);
  const cJSON *members = cJSON_GetObjectItemCaseSensitive(doc, "members");
  if (cJSON_IsArray(members)) {
    fprintf(out, "members  %-5s %-22s %-8s %-10s %-10s %-9s %s\n", "rank", "address", "alive",
            "heartbeat", "child", "upstream", "pod");
    const cJSON *m;
    cJSON_ArrayForEach(m, members)
    {
      const cJSON *alive = cJSON_GetObjectItemCaseSensitive(m, "alive");
      char age[32] = "-";
      double a = num_of(m, "heartbeat_age_s", -1);
      if (a >= 0)
        snprintf(age, sizeof(age), "%.1fs ago", a);
      /* "ok", "failing", "-" (none polled, or an older agent's row). */
      const cJSON *polled = cJSON_GetObjectItemCaseSensitive(m, "upstream_polled");
      const cJSON *healthy = cJSON_GetObjectItemCaseSensitive(m, "upstream");
      const char *upstream = !cJSON_IsTrue(polled) ? "-" : cJSON_IsTrue(healthy) ? "ok" : "failing";
      const char *stop = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "stopping"))
                             ? " (stopping)"
                             : "";
      fprintf(out, "         %-5.0f %-22s %-8s %-10s %-10s %-9s %s%s\n", num_of(m, "rank", -1),
              str_of(m, "address", "-"), cJSON_IsTrue(alive) ? "yes" : "no", age,
              str_of(m, "child", "-"), upstream, str_of(m, "pod", "-"), stop);
      const char *mphase = str_of(m, "launch_phase", NULL);
      if (mphase != NULL)
        fprintf(out, "               launch phase %s\n", mphase);
      const char *uerr = str_of(m, "upstream_error", NULL);
      if (uerr != NULL)
        fprintf(out, "               upstream failing for %.0fs: %s\n",
                num_of(m, "upstream_since_s", 0), uerr);
    }
  }
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "timings");
  if (cJSON_IsObject(t)) {
    fprintf(out, "timings ");
    const cJSON *e;
    cJSON_ArrayForEach(e, t)
    {
      if (cJSON_IsNumber(e))
        fprintf(out, " %.*s %.3fs", (int)(strlen(e->string) - 2), e->string, e->valuedouble);
    }
    fprintf(out, "\n");
  }
  const char *err = str_of(doc, "last_error", NULL);
  if (err != NULL)
    fprintf(out, "error    %s\n", err);
  cJSON_Delete(doc);
  return 0;
}

/* Metrics: names follow the Prometheus conventions (the lwsinit_ prefix,
 * base units, _total for counters), so that dashboards need no renaming.
 *
 * Each member's engine, as its heartbeats report it: child running, and
 * upstream healthy where the member polls one. */
static void member_health_metrics(const struct lwsi_status_snapshot *s,
                                  struct lwsi_buf *b)
{
  bool fam_child = false, fam_up = false;
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < s->nmembers; i++) {
      const struct lwsi_status_member *m = &s->members[i];
      char r[16];
      snprintf(r, sizeof(r), "%u", m->rank);
      const struct lwsi_metrics_label l[] = {{"rank", r}};
      if (pass == 0 && m->has_state) {
        if (!fam_child)
          lwsi_metrics_family(b, "lwsinit_member_child_running", LWSI_METRICS_GAUGE,
                              "1 when the member's engine runs, by member (from heartbeats).");
        fam_child = true;
        lwsi_metrics_sample(b, "lwsinit_member_child_running", l, 1,
                            strcmp(m->child, "running") == 0 ? 1 : 0);
      } else if (pass == 1 && m->has_health && m->upstream_on) {
        if (!fam_up)
          lwsi_metrics_family(b, "lwsinit_member_upstream_healthy", LWSI_METRICS_GAUGE,
                              "1 when the member's engine health URL answers healthy, by "
                              "member (from heartbeats).");
        fam_up = true;
        lwsi_metrics_sample(b, "lwsinit_member_upstream_healthy", l, 1, m->upstream ? 1 : 0);
      }
    }
  }
}

static void member_metrics(const struct lwsi_status_snapshot *s, struct lwsi_buf *b)
{
  bool fam_rtt = false, fam_age = false;
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < s->nmembers; i++) {
      const struct lwsi_status_member *m = &s->members[i];
      char r[16];
      snprintf(r, sizeof(r), "%u", m->rank);
      const struct lwsi_metrics_label l[] = {{"rank", r}};
      if (pass == 0 && m->rtt_us >= 0) {
        if (!fam_rtt)
          lwsi_metrics_family(b, "lwsinit_heartbeat_rtt_seconds", LWSI_METRICS_GAUGE,
                              "Round trip of the last heartbeat, by member.");
        fam_rtt = true;
        lwsi_metrics_sample(b, "lwsinit_heartbeat_rtt_seconds", l, 1, (double)m->rtt_us / 1e6);
      } else if (pass == 1 && m->hb_age_ms >= 0) {
        if (!fam_age)
          lwsi_metrics_family(b, "lwsinit_heartbeat_age_seconds", LWSI_METRICS_GAUGE,
                              "Time since the member was last heard from.");
        fam_age = true;
        lwsi_metrics_sample(b, "lwsinit_heartbeat_age_seconds", l, 1,
                            (double)m->hb_age_ms / 1000.0);
      }
    }
  }
}

int lwsi_status_metrics(const struct lwsi_status_snapshot *s, struct lwsi_buf *b)
{
  char rank[16];
  snprintf(rank, sizeof(rank), "%u", s->rank);
  const struct lwsi_metrics_label info[] = {
    {"version", LWSI_VERSION}, {"role", role_of(s)}, {"rank", rank}};
  lwsi_metrics_family(b, "lwsinit_info", LWSI_METRICS_GAUGE, "The agent's version and role.");
  lwsi_metrics_sample(b, "lwsinit_info", info, 3, 1);

  lwsi_metrics_family(b, "lwsinit_phase", LWSI_METRICS_GAUGE,
                      "1 for the agent's current phase, 0 for the others.");
  for (size_t p = 0; p < s->nphases; p++) {
    const struct lwsi_metrics_label l[] = {{"phase", s->phases[p].name}};
    lwsi_metrics_sample(b, "lwsinit_phase", l, 1, p == s->phase ? 1 : 0);
  }
  lwsi_metrics_family(b, "lwsinit_phase_duration_seconds", LWSI_METRICS_GAUGE,
                      "Time spent in each phase so far.");
  for (size_t p = 0; p < s->nphases; p++) {
    const struct lwsi_metrics_label l[] = {{"phase", s->phases[p].name}};
    lwsi_metrics_sample(b, "lwsinit_phase_duration_seconds", l, 1, ms_to_s(s->phases[p].ms));
  }
  lwsi_metrics_gauge(b, "lwsinit_ready", "1 when /readyz answers 200.", s->ready);
  lwsi_metrics_gauge(b, "lwsinit_group_size", "Members of the group, leader included.",
                     s->size);
  lwsi_metrics_gauge(b, "lwsinit_members_joined", "Members that have joined the rendezvous.",
                     s->joined);
  lwsi_metrics_gauge(b, "lwsinit_members_alive", "Members heard from within --peer-timeout.",
                     s->alive);
  lwsi_metrics_gauge(b, "lwsinit_release_timestamp_seconds",
                     "When the group was released (Unix time), 0 before.", s->released_at);
  lwsi_metrics_counter(b, "lwsinit_peer_losses_total", "Members lost after the release.",
                       s->peer_losses);
  lwsi_metrics_gauge(b, "lwsinit_epoch", "The group's epoch: 0, then +1 at each restart.",
                     s->epoch);
  lwsi_metrics_counter(b, "lwsinit_restarts_total",
                       "Group restarts in place (--on-failure restart) this agent took part in.",
                       s->restarts);
  lwsi_metrics_gauge(b, "lwsinit_child_running", "1 while the engine runs.",
                     s->child.state == LWSI_STATUS_CHILD_RUNNING);
  lwsi_metrics_counter(b, "lwsinit_orphans_reaped_total",
                       "Processes other than the engine reaped by the agent.",
                       s->child.orphans_reaped);
  if (s->has_gpu_check && s->gpu.have_result) {
    lwsi_metrics_gauge(b, "lwsinit_gpu_check_passed",
                       "1 when this node's GPU check passed, 0 when it failed.",
                       s->gpu.state == LWSI_STATUS_GPU_PASSED);
    lwsi_metrics_gauge(b, "lwsinit_gpu_check_devices", "GPUs the check used on this node.",
                       s->gpu.devices);
    lwsi_metrics_gauge(b, "lwsinit_gpu_check_duration_seconds", "How long the GPU check took.",
                       s->gpu.time_ms / 1000.0);
    if (s->gpu.busbw_gbps >= 0)
      lwsi_metrics_gauge(b, "lwsinit_gpu_check_busbw_bytes_per_second",
                         "NCCL all-reduce bus bandwidth measured by the check.",
                         s->gpu.busbw_gbps * 1e9);
  }
  if (s->node.ran) {
    lwsi_metrics_gauge(b, "lwsinit_node_check_passed",
                       "1 when no check of the node check failed, 0 otherwise.",
                       s->node.failures == 0);
    lwsi_metrics_gauge(b, "lwsinit_node_check_warnings", "Checks of the node check that warned.",
                       s->node.warnings);
    lwsi_metrics_gauge(b, "lwsinit_node_check_failures", "Checks of the node check that failed.",
                       s->node.failures);
  }
  if (s->netenv.computed) {
    unsigned set = 0;
    for (size_t i = 0; i < s->netenv.nvars; i++)
      set += s->netenv.vars[i].value != NULL && !s->netenv.vars[i].kept;
    lwsi_metrics_gauge(b, "lwsinit_network_env_set",
                       "Network variables the agent set for the engine.", set);
  }
  if (s->upstream.enabled) {
    if (s->upstream.known) {
      lwsi_metrics_gauge(b, "lwsinit_upstream_up", "1 when the engine's health URL answers 2xx.",
                         s->upstream.ok);
      lwsi_metrics_gauge(b, "lwsinit_upstream_latency_seconds",
                         "How long the last health poll took.", s->upstream.latency_s);
    }
    lwsi_metrics_family(b, "lwsinit_upstream_polls_total", LWSI_METRICS_COUNTER,
                        "Health polls of the engine, by outcome.");
    for (size_t o = 0; o < s->upstream.noutcomes; o++) {
      const struct lwsi_metrics_label l[] = {{"outcome", s->upstream.by_outcome[o].name}};
      lwsi_metrics_sample_u64(b, "lwsinit_upstream_polls_total", l, 1,
                              s->upstream.by_outcome[o].polls);
    }
  }
  if (s->has_group) {
    member_metrics(s, b);
    member_health_metrics(s, b);
  }
  launch_check_metrics(s, b);
  return b->err;
}
