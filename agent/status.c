#include "lwsinit/status.h"

#include "lwsinit/agent.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lwsinit_build.h"

static double ms_to_s(uint64_t ms) { return (double)ms / 1000.0; }

static const char *child_state(const struct lwsi_agent *a)
{
  if (a->sup.child_running)
    return "running";
  if (a->sup.child > 0)
    return "exited";
  return "not-started";
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
  lwsi_agent_status_upstream(a, doc);
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
  lwsi_agent_status_members(a, doc);
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
