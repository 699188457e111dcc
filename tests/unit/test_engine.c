/* The engine table: every row complete, the names unique, the argv scanner
 * as argparse reads the engines' flags, the data-parallel rule, the refused
 * flags, and the health URL each preset gives. A pure module: no loop. */
#include "lwsinit/engine.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"

static bool list_has(const char *const *list, const char *s)
{
  for (; *list != NULL; list++)
    if (strcmp(*list, s) == 0)
      return true;
  return false;
}

static void test_rows(void)
{
  for (int i = 0; i < LWSI_PRESET_COUNT; i++) {
    const struct lwsi_engine *e = lwsi_engine_get((enum lwsi_preset)i);
    TAP_OK(e != NULL && e->id == (enum lwsi_preset)i && e->name != NULL && e->name[0] != '\0',
           "row %d: its own id and a name (%s)", i, e != NULL ? e->name : "?");
    if (e == NULL)
      continue;
    TAP_OK(e->flags != NULL && e->worker_flags != NULL && e->refused != NULL,
           "%s: every list is there, empty or not", e->name);
    bool none = e->id == LWSI_PRESET_NONE;
    TAP_OK(none ? (e->flags[0] == NULL && e->worker_flags[0] == NULL && e->dist_port == 0)
                : (e->flags[0] != NULL && strncmp(e->flags[0], "--", 2) == 0 &&
                   e->dist_port != 0),
           "%s: flags and a {dist_port} default, or none of them for none", e->name);
    TAP_OK(e->health_path == NULL
               ? e->health_port == 0 && e->health_port_flag == NULL && !e->health_on_workers
               : e->health_path[0] == '/' && e->health_port != 0 &&
                     e->health_port_flag != NULL && strncmp(e->health_port_flag, "--", 2) == 0,
           "%s: a health path with its port and port flag, or nothing to poll", e->name);
    TAP_OK(e->dp_local_flag == NULL || list_has(e->flags, e->dp_local_flag),
           "%s: a data-parallel flag is one the preset appends", e->name);
    for (int j = 0; j < i; j++)
      TAP_OK(strcmp(lwsi_engine_get((enum lwsi_preset)j)->name, e->name) != 0,
             "%s: not the name of row %d", e->name, j);
    TAP_OK(lwsi_engine_find(e->name) == e, "%s: found by its name", e->name);
  }
  TAP_OK(lwsi_engine_get(LWSI_PRESET_COUNT) == NULL, "no row past the table");
  TAP_OK(lwsi_engine_find("trtllm") == NULL && lwsi_engine_find("") == NULL,
         "an unknown name finds nothing");
  TAP_OK(lwsi_engine_get(LWSI_PRESET_VLLM)->dist_port == 29501 &&
             lwsi_engine_get(LWSI_PRESET_SGLANG)->dist_port == 20000 &&
             lwsi_engine_get(LWSI_PRESET_VLLM_DP)->dist_port == 13345,
         "the engines' own {dist_port} defaults");
  TAP_OK(list_has(lwsi_engine_get(LWSI_PRESET_VLLM)->worker_flags, "--headless") &&
             lwsi_engine_get(LWSI_PRESET_VLLM_DP)->worker_flags[0] == NULL,
         "vllm workers run --headless, vllm-dp workers serve");
}

static void test_argv_find(void)
{
  const char *v = "unset";
  char *sp[] = {"e", "--port", "9", NULL};
  TAP_OK(lwsi_engine_argv_find(sp, "--port", &v) == 1 && v != NULL && strcmp(v, "9") == 0,
         "--flag v");
  char *eq[] = {"e", "--tp", "2", "--port=9", NULL};
  TAP_OK(lwsi_engine_argv_find(eq, "--port", &v) == 3 && v != NULL && strcmp(v, "9") == 0,
         "--flag=v");
  char *empty[] = {"e", "--port=", NULL};
  TAP_OK(lwsi_engine_argv_find(empty, "--port", &v) == 1 && v != NULL && v[0] == '\0',
         "--flag= gives an empty value");
  char *end[] = {"e", "--tp", "2", "--port", NULL};
  TAP_OK(lwsi_engine_argv_find(end, "--port", &v) == 3 && v == NULL,
         "a flag at the end: found, without a value");
  char *prefix[] = {"e", "--portx", "9", "--portx=8", "--por", "7", NULL};
  v = "unset";
  TAP_OK(lwsi_engine_argv_find(prefix, "--port", &v) == -ENOENT && v == NULL,
         "--portx and --por are not --port");
  char *last[] = {"e", "--port=1", "--port", "2", "--tp", "3", NULL};
  TAP_OK(lwsi_engine_argv_find(last, "--port", &v) == 2 && v != NULL && strcmp(v, "2") == 0,
         "the last one wins, as in argparse");
  char *dashes[] = {"e", "--port", "1", "--", "--port", "2", NULL};
  TAP_OK(lwsi_engine_argv_find(dashes, "--port", &v) == 1 && strcmp(v, "1") == 0,
         "nothing after -- is a flag");
  char *zero[] = {"--port", "1", NULL};
  TAP_OK(lwsi_engine_argv_find(zero, "--port", NULL) == -ENOENT, "argv[0] is the program");
  char *value[] = {"e", "--served-model-name", "--port", NULL};
  TAP_OK(lwsi_engine_argv_find(value, "--served-model-name", &v) == 1 && v != NULL &&
             strcmp(v, "--port") == 0,
         "--flag takes the next argument whatever it is");
  TAP_OK(lwsi_engine_argv_find(NULL, "--port", &v) == -ENOENT && v == NULL, "no argv");
}

static void test_dp_local(void)
{
  const struct lwsi_engine *dp = lwsi_engine_get(LWSI_PRESET_VLLM_DP);
  const struct lwsi_engine *vl = lwsi_engine_get(LWSI_PRESET_VLLM);
  char *sp[] = {"vllm", "serve", "m", "--data-parallel-size-local", "8", NULL};
  char *eq[] = {"vllm", "serve", "m", "--data-parallel-size-local=4", NULL};
  char *twice[] = {"vllm", "--data-parallel-size-local", "2", "--data-parallel-size-local", "8",
                   NULL};
  char *bad[] = {"vllm", "--data-parallel-size-local", "0", NULL};
  char *none[] = {"vllm", "serve", "m", NULL};
  TAP_OK(lwsi_engine_dp_local(dp, 0, sp) == 8 && lwsi_engine_dp_local(dp, 0, eq) == 4,
         "vllm-dp: the size per node from COMMAND");
  TAP_OK(lwsi_engine_dp_local(dp, 0, twice) == 8, "the last one, as vLLM reads it");
  TAP_OK(lwsi_engine_dp_local(dp, 2, sp) == 2, "--dp-local wins");
  TAP_OK(lwsi_engine_dp_local(dp, 0, bad) == 0 && lwsi_engine_dp_local(dp, 0, none) == 0,
         "0, or none at all: not known");
  TAP_OK(lwsi_engine_dp_local(vl, 0, sp) == 0, "vllm: no data-parallel rule");
}

static void test_refused(void)
{
  char *argv[] = {"vllm", "serve", "m", "--distributed-executor-backend=ray", "--headless",
                  NULL};
  for (int i = 0; i < LWSI_PRESET_COUNT; i++) {
    const struct lwsi_engine *e = lwsi_engine_get((enum lwsi_preset)i);
    TAP_OK(lwsi_engine_refused(e, argv) == NULL, "%s refuses nothing yet", e->name);
  }
  /* A row as one with a refused flag would be: the column works. */
  static const char *const refused[] = {"--headless", "--distributed-executor-backend", NULL};
  struct lwsi_engine e = *lwsi_engine_get(LWSI_PRESET_VLLM);
  e.refused = refused;
  TAP_STR_EQ(lwsi_engine_refused(&e, argv), "--headless", "a refused flag alone");
  char *other[] = {"vllm", "serve", "m", "--distributed-executor-backend", "ray", NULL};
  TAP_STR_EQ(lwsi_engine_refused(&e, other), "--distributed-executor-backend",
             "a refused flag with its value");
  char *after[] = {"vllm", "serve", "--", "--headless", NULL};
  TAP_OK(lwsi_engine_refused(&e, after) == NULL, "nothing after --");
}

static void expect_url(enum lwsi_preset p, bool leader, char *const *argv, const char *want,
                       const char *what)
{
  char buf[128] = "";
  int rc = lwsi_engine_health_url(lwsi_engine_get(p), leader, argv, buf, sizeof(buf));
  if (want == NULL)
    TAP_OK(rc == -ENOENT, "%s: no polling (%d)", what, rc);
  else
    TAP_OK(rc == 0 && strcmp(buf, want) == 0, "%s: %s (%s)", what, want, buf);
}

static void test_urls(void)
{
  expect_url(LWSI_PRESET_SGLANG, true, NULL, "http://127.0.0.1:30000/health",
             "sglang leader: port 30000, /health");
  expect_url(LWSI_PRESET_SGLANG, false, NULL, "http://127.0.0.1:30000/health",
             "sglang worker: its health-only server");
  expect_url(LWSI_PRESET_VLLM, true, NULL, "http://127.0.0.1:8000/health",
             "vllm leader: port 8000, /health");
  expect_url(LWSI_PRESET_VLLM, false, NULL, NULL, "vllm worker (--headless)");
  expect_url(LWSI_PRESET_VLLM_DP, false, NULL, "http://127.0.0.1:8000/health",
             "vllm-dp worker: its own API server");
  expect_url(LWSI_PRESET_NONE, true, NULL, NULL, "preset none");

  char *sg[] = {"python3", "-m", "sglang.launch_server", "--port", "31000", NULL};
  expect_url(LWSI_PRESET_SGLANG, true, sg, "http://127.0.0.1:31000/health",
             "the engine's --port N wins over the default");
  char *vl[] = {"vllm", "serve", "m", "--port=8001", "--port", "8002", NULL};
  expect_url(LWSI_PRESET_VLLM_DP, false, vl, "http://127.0.0.1:8002/health",
             "the last --port wins, --port=N too");
  char *bad[] = {"vllm", "serve", "--port", "80x", "--", "--port", "9", NULL};
  expect_url(LWSI_PRESET_VLLM, true, bad, "http://127.0.0.1:8000/health",
             "a bad port or one after -- leaves the default");
  char *big[] = {"vllm", "serve", "--port=65536", NULL};
  expect_url(LWSI_PRESET_VLLM, true, big, "http://127.0.0.1:8000/health",
             "a port past 65535 leaves the default");
  expect_url(LWSI_PRESET_VLLM, false, vl, NULL, "vllm worker with a --port");
  char buf[10];
  TAP_OK(lwsi_engine_health_url(lwsi_engine_get(LWSI_PRESET_SGLANG), true, NULL, buf,
                                sizeof(buf)) == -ENOSPC,
         "a short buffer: -ENOSPC");
}

int main(void)
{
  test_rows();
  test_argv_find();
  test_dp_local();
  test_refused();
  test_urls();
  return tap_done();
}
