#include "lwsinit/status.h"

#include "lwsinit/agent.h"
#include "lwsinit/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwsinit_build.h"

static double ms_to_s(uint64_t ms) { return (double)ms / 1000.0; }

static void add_upstream(struct lwsi_agent *a, cJSON *doc)
{
  if (!a->upstream_on) {
    cJSON_AddNullToObject(doc, "upstream");
    return;
  }
  const struct lwsi_upstream *u = &a->upstream;
  cJSON *up = cJSON_AddObjectToObject(doc, "upstream");
  if (up == NULL)
    return;
  cJSON_AddBoolToObject(up, "enabled", 1);
  cJSON_AddStringToObject(up, "url", a->upstream_url);
  if (u->known)
    cJSON_AddBoolToObject(up, "ok", u->ok);
  else
    cJSON_AddNullToObject(up, "ok");
  cJSON_AddStringToObject(up, "outcome", lwsi_upstream_outcome_name(u->outcome));
  cJSON_AddNumberToObject(up, "http_status", (double)u->http_status);
  cJSON_AddNumberToObject(up, "latency_s", u->last_latency_s);
  cJSON_AddNumberToObject(up, "polls", (double)u->polls);
  cJSON_AddNumberToObject(up, "failures", (double)u->failures);
  const char *err = a->upstream_err[0] ? a->upstream_err : u->last_error;
  if (err[0] != '\0')
    cJSON_AddStringToObject(up, "error", err);
  else
    cJSON_AddNullToObject(up, "error");
}

static const char *child_state(const struct lwsi_agent *a);

static void add_members(struct lwsi_agent *a, cJSON *doc)
{
  if (!a->rdzv_on)
    return;
  cJSON *arr = cJSON_AddArrayToObject(doc, "members");
  if (arr == NULL)
    return;
  for (uint32_t i = 0; i < a->cfg->size; i++) {
    struct lwsi_rdzv_member m;
    if (lwsi_rdzv_member(&a->rdzv, i, &m) < 0)
      continue;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
      cJSON_Delete(o);
      return;
    }
    cJSON_AddNumberToObject(o, "rank", m.rank);
    cJSON_AddStringToObject(o, "address", m.addr);
    cJSON_AddStringToObject(o, "pod", m.pod);
    cJSON_AddBoolToObject(o, "joined", m.joined);
    cJSON_AddBoolToObject(o, "alive", m.alive);
    if (m.hb_age_ms >= 0)
      cJSON_AddNumberToObject(o, "heartbeat_age_s", (double)m.hb_age_ms / 1000.0);
    else
      cJSON_AddNullToObject(o, "heartbeat_age_s");
    if (m.rtt_us >= 0)
      cJSON_AddNumberToObject(o, "rtt_s", (double)m.rtt_us / 1e6);
    else
      cJSON_AddNullToObject(o, "rtt_s");
    if (m.has_state) {
      cJSON_AddStringToObject(o, "child", m.child);
      cJSON_AddBoolToObject(o, "upstream", m.upstream);
    } else if (m.rank == a->cfg->rank) {
      /* Our own row: the state we would put in a heartbeat. */
      cJSON_AddStringToObject(o, "child", child_state(a));
    }
  }
}

static const char *child_state(const struct lwsi_agent *a)
{
  if (a->sup.child_running)
    return "running";
  if (a->sup.child > 0)
    return "exited";
  return "not-started";
}

/* The GPU check (issue 5): this node's result and, for the group, the
 * verdict. "state": not-started, running, passed, failed. */
static void add_gpu_check(struct lwsi_agent *a, cJSON *doc)
{
  const struct lwsi_config *cfg = a->cfg;
  if (cfg->gpu_check == LWSI_GPU_CHECK_NONE)
    return;
  cJSON *g = cJSON_AddObjectToObject(doc, "gpu_check");
  if (g == NULL)
    return;
  const struct lwsi_gpurun *r = &a->gpu;
  const char *state = "not-started";
  if (r->have_result)
    state = r->ok ? "passed" : "failed";
  else if (a->gpu_on && !a->gpu_gone)
    state = "running";
  else if (a->gpu_on)
    state = "failed";
  cJSON_AddStringToObject(g, "mode", lwsi_config_gpu_check_name(cfg->gpu_check));
  cJSON_AddStringToObject(g, "state", state);
  cJSON_AddBoolToObject(g, "group_passed", a->gpu_verdict_ok);
  if (r->have_result) {
    cJSON_AddNumberToObject(g, "devices", r->ndevices);
    cJSON_AddStringToObject(g, "model", r->model);
    cJSON_AddNumberToObject(g, "time_s", r->time_ms / 1000.0);
    if (r->busbw_gbps >= 0)
      cJSON_AddNumberToObject(g, "busbw_gbps", r->busbw_gbps);
    else
      cJSON_AddNullToObject(g, "busbw_gbps");
  }
  if (r->error[0] != '\0')
    cJSON_AddStringToObject(g, "error", r->error);
}

cJSON *lwsi_status_doc(struct lwsi_agent *a)
{
  const struct lwsi_config *cfg = a->cfg;
  uint64_t now = uv_now(&a->loop);
  cJSON *doc = cJSON_CreateObject();
  if (doc == NULL)
    return NULL;
  cJSON_AddStringToObject(doc, "version", LWSI_VERSION);
  cJSON_AddNumberToObject(doc, "rank", cfg->rank);
  cJSON_AddNumberToObject(doc, "size", cfg->size);
  cJSON_AddStringToObject(doc, "role",
                          cfg->standalone ? "standalone" : (cfg->rank == 0 ? "leader" : "worker"));
  cJSON_AddStringToObject(doc, "phase", lwsi_agent_phase_name(a->phase));
  cJSON_AddBoolToObject(doc, "ready", lwsi_agent_ready(a));
  cJSON *leader = cJSON_AddObjectToObject(doc, "leader");
  if (leader != NULL) {
    cJSON_AddStringToObject(leader, "address", cfg->leader);
    cJSON_AddStringToObject(leader, "ip", a->leader_ip);
  }
  cJSON *child = cJSON_AddObjectToObject(doc, "child");
  if (child != NULL) {
    cJSON_AddStringToObject(child, "state", child_state(a));
    if (a->sup.child > 0)
      cJSON_AddNumberToObject(child, "pid", a->sup.child);
    else
      cJSON_AddNullToObject(child, "pid");
    if (a->sup.child > 0 && !a->sup.child_running)
      cJSON_AddNumberToObject(child, "exit_code", lwsi_supervisor_exit_code(a->sup.child_status));
    cJSON_AddNumberToObject(child, "orphans_reaped", (double)a->sup.reaped_others);
  }
  add_upstream(a, doc);
  cJSON *t = cJSON_AddObjectToObject(doc, "timings");
  if (t != NULL) {
    for (int p = 0; p < LWSI_PHASE_COUNT; p++) {
      uint64_t ms = a->phase_ms[p] + (p == (int)a->phase ? now - a->phase_since_ms : 0);
      char key[32];
      snprintf(key, sizeof(key), "%s_s", lwsi_agent_phase_name((enum lwsi_phase)p));
      cJSON_AddNumberToObject(t, key, ms_to_s(ms));
    }
    cJSON_AddNumberToObject(t, "total_s", ms_to_s(now - a->started_ms));
  }
  if (a->rdzv_on) {
    cJSON *g = cJSON_AddObjectToObject(doc, "group");
    if (g != NULL) {
      cJSON_AddStringToObject(g, "rendezvous", lwsi_rdzv_state_name(a->rdzv.state));
      cJSON_AddStringToObject(g, "incarnation", a->rdzv.nonce_hex);
      cJSON_AddNumberToObject(g, "joined", lwsi_rdzv_joined(&a->rdzv));
      cJSON_AddStringToObject(g, "missing", lwsi_rdzv_missing(&a->rdzv));
      cJSON_AddNumberToObject(g, "peer_losses", (double)a->peer_losses);
      if (a->group_broken[0])
        cJSON_AddStringToObject(g, "broken", a->group_broken);
    }
  }
  add_gpu_check(a, doc);
  if (a->cfg->rank == 0)
    add_members(a, doc);
  if (a->last_error[0] != '\0')
    cJSON_AddStringToObject(doc, "last_error", a->last_error);
  else
    cJSON_AddNullToObject(doc, "last_error");
  return doc;
}

char *lwsi_status_render(void *agent)
{
  cJSON *doc = lwsi_status_doc(agent);
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
  const cJSON *members = cJSON_GetObjectItemCaseSensitive(doc, "members");
  if (cJSON_IsArray(members)) {
    fprintf(out, "members  %-5s %-22s %-8s %-10s %-10s %s\n", "rank", "address", "alive",
            "heartbeat", "child", "pod");
    const cJSON *m;
    cJSON_ArrayForEach(m, members)
    {
      const cJSON *alive = cJSON_GetObjectItemCaseSensitive(m, "alive");
      char age[32] = "-";
      double a = num_of(m, "heartbeat_age_s", -1);
      if (a >= 0)
        snprintf(age, sizeof(age), "%.1fs ago", a);
      fprintf(out, "         %-5.0f %-22s %-8s %-10s %-10s %s\n", num_of(m, "rank", -1),
              str_of(m, "address", "-"), cJSON_IsTrue(alive) ? "yes" : "no", age,
              str_of(m, "child", "-"), str_of(m, "pod", "-"));
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

/* Metrics (issue 4): names follow the Prometheus conventions, with the
 * lwsinit_ prefix, base units and _total for counters. */
int lwsi_status_metrics(struct lwsi_agent *a, struct lwsi_http_buf *b)
{
  const struct lwsi_config *cfg = a->cfg;
  uint64_t now = uv_now(&a->loop);
  char rank[16];
  snprintf(rank, sizeof(rank), "%u", cfg->rank);
  const char *role = cfg->standalone ? "standalone" : (cfg->rank == 0 ? "leader" : "worker");
  const struct lwsi_metrics_label info[] = {
    {"version", LWSI_VERSION}, {"role", role}, {"rank", rank}};
  lwsi_metrics_family(b, "lwsinit_info", LWSI_METRICS_GAUGE, "The agent's version and role.");
  lwsi_metrics_sample(b, "lwsinit_info", info, 3, 1);

  lwsi_metrics_family(b, "lwsinit_phase", LWSI_METRICS_GAUGE,
                      "1 for the agent's current phase, 0 for the others.");
  for (int p = 0; p < LWSI_PHASE_COUNT; p++) {
    const struct lwsi_metrics_label l[] = {{"phase", lwsi_agent_phase_name((enum lwsi_phase)p)}};
    lwsi_metrics_sample(b, "lwsinit_phase", l, 1, p == (int)a->phase ? 1 : 0);
  }
  lwsi_metrics_family(b, "lwsinit_phase_duration_seconds", LWSI_METRICS_GAUGE,
                      "Time spent in each phase so far.");
  for (int p = 0; p < LWSI_PHASE_COUNT; p++) {
    const struct lwsi_metrics_label l[] = {{"phase", lwsi_agent_phase_name((enum lwsi_phase)p)}};
    uint64_t ms = a->phase_ms[p] + (p == (int)a->phase ? now - a->phase_since_ms : 0);
    lwsi_metrics_sample(b, "lwsinit_phase_duration_seconds", l, 1, ms_to_s(ms));
  }
  lwsi_metrics_gauge(b, "lwsinit_ready", "1 when /readyz answers 200.", lwsi_agent_ready(a));
  lwsi_metrics_gauge(b, "lwsinit_group_size", "Members of the group, leader included.",
                     cfg->size);
  uint32_t joined = 1, alive = 1;
  if (a->rdzv_on) {
    joined = lwsi_rdzv_joined(&a->rdzv);
    alive = 0;
    for (uint32_t i = 0; i < cfg->size; i++) {
      struct lwsi_rdzv_member m;
      if (lwsi_rdzv_member(&a->rdzv, i, &m) == 0 && m.alive)
        alive++;
    }
  }
  lwsi_metrics_gauge(b, "lwsinit_members_joined", "Members that have joined the rendezvous.",
                     joined);
  lwsi_metrics_gauge(b, "lwsinit_members_alive", "Members heard from within --peer-timeout.",
                     alive);
  lwsi_metrics_gauge(b, "lwsinit_release_timestamp_seconds",
                     "When the group was released (Unix time), 0 before.", a->released_at);
  lwsi_metrics_counter(b, "lwsinit_peer_losses_total", "Members lost after the release.",
                       a->peer_losses);
  lwsi_metrics_gauge(b, "lwsinit_child_running", "1 while the engine runs.",
                     a->sup.child_running);
  lwsi_metrics_counter(b, "lwsinit_orphans_reaped_total",
                       "Processes other than the engine reaped by the agent.",
                       a->sup.reaped_others);
  if (cfg->gpu_check != LWSI_GPU_CHECK_NONE && a->gpu.have_result) {
    const struct lwsi_gpurun *r = &a->gpu;
    lwsi_metrics_gauge(b, "lwsinit_gpu_check_passed",
                       "1 when this node's GPU check passed, 0 when it failed.", r->ok);
    lwsi_metrics_gauge(b, "lwsinit_gpu_check_devices", "GPUs the check used on this node.",
                       r->ndevices);
    lwsi_metrics_gauge(b, "lwsinit_gpu_check_duration_seconds", "How long the GPU check took.",
                       r->time_ms / 1000.0);
    if (r->busbw_gbps >= 0)
      lwsi_metrics_gauge(b, "lwsinit_gpu_check_busbw_bytes_per_second",
                         "NCCL all-reduce bus bandwidth measured by the check.",
                         r->busbw_gbps * 1e9);
  }
  if (a->upstream_on) {
    const struct lwsi_upstream *u = &a->upstream;
    if (u->known) {
      lwsi_metrics_gauge(b, "lwsinit_upstream_up", "1 when the engine's health URL answers 2xx.",
                         u->ok);
      lwsi_metrics_gauge(b, "lwsinit_upstream_latency_seconds",
                         "How long the last health poll took.", u->last_latency_s);
    }
    lwsi_metrics_family(b, "lwsinit_upstream_polls_total", LWSI_METRICS_COUNTER,
                        "Health polls of the engine, by outcome.");
    for (int o = LWSI_UPSTREAM_OK; o < LWSI_UPSTREAM_OUTCOME_COUNT; o++) {
      const struct lwsi_metrics_label l[] = {
        {"outcome", lwsi_upstream_outcome_name((enum lwsi_upstream_outcome)o)}};
      lwsi_metrics_sample_u64(b, "lwsinit_upstream_polls_total", l, 1, u->by_outcome[o]);
    }
  }
  if (a->rdzv_on) {
    bool fam_rtt = false, fam_age = false;
    for (int pass = 0; pass < 2; pass++) {
      for (uint32_t i = 0; i < cfg->size; i++) {
        struct lwsi_rdzv_member m;
        if (lwsi_rdzv_member(&a->rdzv, i, &m) < 0)
          continue;
        char r[16];
        snprintf(r, sizeof(r), "%u", m.rank);
        const struct lwsi_metrics_label l[] = {{"rank", r}};
        if (pass == 0 && m.rtt_us >= 0) {
          if (!fam_rtt)
            lwsi_metrics_family(b, "lwsinit_heartbeat_rtt_seconds", LWSI_METRICS_GAUGE,
                                "Round trip of the last heartbeat, by member.");
          fam_rtt = true;
          lwsi_metrics_sample(b, "lwsinit_heartbeat_rtt_seconds", l, 1, (double)m.rtt_us / 1e6);
        } else if (pass == 1 && m.hb_age_ms >= 0) {
          if (!fam_age)
            lwsi_metrics_family(b, "lwsinit_heartbeat_age_seconds", LWSI_METRICS_GAUGE,
                                "Time since the member was last heard from.");
          fam_age = true;
          lwsi_metrics_sample(b, "lwsinit_heartbeat_age_seconds", l, 1,
                              (double)m.hb_age_ms / 1000.0);
        }
      }
    }
  }
  return b->err;
}
