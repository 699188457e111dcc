/* The engine table: one row per --preset, everything the agent knows about
 * each engine (include/lwsinit/engine.h), and the one scanner of the
 * engine's argv. */
#include "lwsinit/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const no_flags[] = {NULL};

static const char *const sglang_flags[] = {
  "--dist-init-addr", "{leader_ip}:{dist_port}", "--nnodes", "{size}", "--node-rank", "{rank}",
  NULL};
static const char *const vllm_flags[] = {
  "--nnodes", "{size}", "--node-rank", "{rank}", "--master-addr", "{leader_ip}",
  "--master-port", "{dist_port}", NULL};
/* vLLM's workers run without an API server (vLLM docs, multi-node serving:
 * `--headless` on every node but the first). */
static const char *const vllm_worker_flags[] = {"--headless", NULL};
static const char *const vllm_dp_flags[] = {
  "--data-parallel-size", "{dp_size}", "--data-parallel-size-local", "{dp_local}",
  "--data-parallel-start-rank", "{dp_start}", "--data-parallel-address", "{leader_ip}",
  "--data-parallel-rpc-port", "{dist_port}", "--data-parallel-hybrid-lb", NULL};

/* The default ports: SGLang's LWS example uses 20000 for --dist-init-addr;
 * vLLM's --master-port defaults to 29501 and its --data-parallel-rpc-port
 * to 13345. Health: python/sglang/srt/server_args.py has port = 30000 and
 * http_server.py serves GET /health (503 while starting, 200 once a
 * one-token generation gets through, about a second); ranks >= 1 run
 * launch_dummy_health_check_server on the same port.
 * vllm/entrypoints/openai/cli_args.py has port = 8000 and GET /health is
 * 200 while the engine lives; the workers of a plain multi-node vllm run
 * --headless, with no API server, while hybrid load balancing (vllm-dp)
 * runs one API server on every node. No flag in COMMAND is refused yet:
 * the agent has never refused one. */
static const struct lwsi_engine engines[LWSI_PRESET_COUNT] = {
  [LWSI_PRESET_NONE] = {LWSI_PRESET_NONE, "none", 0, no_flags, no_flags, NULL, NULL, 0, NULL,
                        false, no_flags},
  [LWSI_PRESET_SGLANG] = {LWSI_PRESET_SGLANG, "sglang", 20000, sglang_flags, no_flags, NULL,
                          "/health", 30000, "--port", true, no_flags},
  [LWSI_PRESET_VLLM] = {LWSI_PRESET_VLLM, "vllm", 29501, vllm_flags, vllm_worker_flags, NULL,
                        "/health", 8000, "--port", false, no_flags},
  [LWSI_PRESET_VLLM_DP] = {LWSI_PRESET_VLLM_DP, "vllm-dp", 13345, vllm_dp_flags, no_flags,
                           "--data-parallel-size-local", "/health", 8000, "--port", true,
                           no_flags},
};

const struct lwsi_engine *lwsi_engine_get(enum lwsi_preset id)
{
  if ((unsigned)id >= LWSI_PRESET_COUNT)
    return NULL;
  return &engines[id];
}

const struct lwsi_engine *lwsi_engine_find(const char *name)
{
  for (size_t i = 0; i < LWSI_PRESET_COUNT; i++)
    if (strcmp(engines[i].name, name) == 0)
      return &engines[i];
  return NULL;
}

int lwsi_engine_argv_find(char *const *argv, const char *name, const char **value)
{
  size_t len = strlen(name);
  int found = -ENOENT;
  const char *v = NULL;
  for (size_t i = 1; argv != NULL && argv[0] != NULL && argv[i] != NULL; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0)
      break;
    if (strcmp(a, name) == 0) {
      found = (int)i;
      v = argv[i + 1];
      if (v != NULL)
        i++;
    } else if (strncmp(a, name, len) == 0 && a[len] == '=') {
      found = (int)i;
      v = a + len + 1;
    }
  }
  if (value != NULL)
    *value = found >= 0 ? v : NULL;
  return found;
}

unsigned lwsi_engine_dp_local(const struct lwsi_engine *e, unsigned given, char *const *argv)
{
  if (e->dp_local_flag == NULL)
    return 0;
  if (given > 0)
    return given;
  const char *v;
  if (lwsi_engine_argv_find(argv, e->dp_local_flag, &v) < 0 || v == NULL || *v == '\0')
    return 0;
  char *end;
  unsigned long n = strtoul(v, &end, 10);
  return (*end == '\0' && n > 0 && n <= 4096) ? (unsigned)n : 0;
}

const char *lwsi_engine_refused(const struct lwsi_engine *e, char *const *argv)
{
  for (const char *const *f = e->refused; *f != NULL; f++)
    if (lwsi_engine_argv_find(argv, *f, NULL) >= 0)
      return *f;
  return NULL;
}

/* A port as argparse would take it for an int option; 0 when it is not
 * one. */
static unsigned parse_port(const char *s)
{
  unsigned v = 0;
  if (s == NULL || *s == '\0')
    return 0;
  for (; *s != '\0'; s++) {
    if (*s < '0' || *s > '9')
      return 0;
    v = v * 10 + (unsigned)(*s - '0');
    if (v > 65535)
      return 0;
  }
  return v;
}

int lwsi_engine_health_url(const struct lwsi_engine *e, bool leader, char *const *argv, char *buf,
                           size_t buflen)
{
  if (e->health_path == NULL || (!leader && !e->health_on_workers))
    return -ENOENT;
  unsigned port = e->health_port;
  const char *v;
  if (e->health_port_flag != NULL && lwsi_engine_argv_find(argv, e->health_port_flag, &v) >= 0 &&
      parse_port(v) != 0)
    port = parse_port(v);
  int n = snprintf(buf, buflen, "http://127.0.0.1:%u%s", port, e->health_path);
  if (n < 0 || (size_t)n >= buflen)
    return -ENOSPC;
  return 0;
}
