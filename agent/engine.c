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

/* The flags in COMMAND that contradict a preset. Each engine's own
 * parser was read for its spellings: SGLang python/sglang/srt/server_args.py
 * (plain argparse; --nccl-init-addr is an old name of --dist-init-addr),
 * vLLM vllm/engine/arg_utils.py (-n, -r, -dp, -dpl, -dpr, -dpa, -dpp, -dph,
 * -dpe, -dpn, -dpm) and vllm/utils/argparse_utils.py (FlexibleArgumentParser
 * turns '_' into '-' in every "--" name), as of their main branches in
 * 2026. A flag the preset appends is refused when COMMAND has it too
 * (argparse would take the preset's, the last one, and the user's would
 * be silently lost), except the data-parallel size per node, which
 * vllm-dp reads from COMMAND. */
static const char appended[] = "the preset appends it";
static const struct lwsi_engine_refusal no_refusals[] = {{NULL, NULL, false, NULL}};
static const struct lwsi_engine_refusal sglang_refused[] = {
  {"--dist-init-addr|--nccl-init-addr", NULL, false, appended},
  {"--nnodes", NULL, false, appended},
  {"--node-rank", NULL, false, appended},
  {NULL, NULL, false, NULL}};
static const struct lwsi_engine_refusal vllm_refused[] = {
  {"--nnodes|-n", NULL, false, appended},
  {"--node-rank|-r", NULL, false, appended},
  {"--master-addr", NULL, false, appended},
  {"--master-port", NULL, false, appended},
  {"--headless", NULL, true, "the preset appends it on workers, and the leader serves the API"},
  /* The preset runs vLLM's multiprocessing executor on every node (vLLM
   * PR #23691); Ray's executor runs the whole model from the leader over
   * a Ray cluster that nothing here starts. */
  {"--distributed-executor-backend", "ray", false,
   "the preset runs vLLM's multiprocessing executor on every node, not Ray's"},
  /* vllm/entrypoints/cli/serve.py, run_headless: "data_parallel_hybrid_lb
   * is not applicable in headless mode" (ValueError), and every worker of
   * this preset runs --headless. */
  {"--data-parallel-hybrid-lb|-dph", NULL, true,
   "vLLM refuses it with the --headless the preset gives workers"},
  {NULL, NULL, false, NULL}};
static const struct lwsi_engine_refusal vllm_dp_refused[] = {
  {"--data-parallel-size|-dp", NULL, false, appended},
  {"--data-parallel-start-rank|-dpr", NULL, false, appended},
  {"--data-parallel-address|-dpa", NULL, false, appended},
  {"--data-parallel-rpc-port|-dpp", NULL, false, appended},
  {"--data-parallel-hybrid-lb|-dph", NULL, false, appended},
  /* serve.py: hybrid load balancing is not applicable in headless mode,
   * and only one load-balancing mode may be chosen. */
  {"--headless", NULL, false, "vLLM refuses it with the preset's --data-parallel-hybrid-lb"},
  {"--data-parallel-external-lb|-dpe", NULL, false,
   "vLLM takes one load-balancing mode, and the preset's is --data-parallel-hybrid-lb"},
  {"--data-parallel-rank|-dpn", NULL, false,
   "vLLM takes one load-balancing mode, and the preset's is --data-parallel-hybrid-lb"},
  {"--data-parallel-multi-port-external-lb|-dpm", NULL, false,
   "vLLM takes one load-balancing mode, and the preset's is --data-parallel-hybrid-lb"},
  {NULL, NULL, false, NULL}};

/* The Ray presets (contract, "Launching"): Ray's own CLI starts the
 * cluster, as LWS's vLLM example (multi-node-serving.sh), KServe's
 * multinode runtime and AIBrix do with shell loops around `ray status`.
 * ray-project/ray python/ray/scripts/scripts.py, start(): --head starts
 * the GCS on --port (default 6379); a worker joins with --address
 * HOST:PORT; --node-manager-port fixes the raylet's port (default: a
 * random one); --block keeps `ray start` in the foreground, watching the
 * processes it started: when one exits unexpectedly it kills the rest and
 * exits 1, so the agent supervises one process per node. The raylet's
 * gRPC server listens on every address (src/ray/rpc/grpc_server.cc,
 * GrpcServer::Run: 0.0.0.0 unless the server is local-only), and it runs
 * only once the raylet has fetched the cluster's configuration from the
 * GCS it was given, so a connection accepted on 127.0.0.1 at the fixed
 * node-manager port says that this node is up and joined, without Python
 * and without `ray status`. 6380 is next to the GCS's 6379 and is no
 * other Ray default. */
static const char *const ray_head_argv[] = {"ray", "start", "--head", "--port", "{dist_port}",
                                            "--block", NULL};
static const char *const ray_worker_argv[] = {
  "ray", "start", "--address", "{leader_ip}:{dist_port}", "--node-manager-port", "{node_port}",
  "--block", NULL};
static const struct lwsi_engine_service ray_service = {
  "Ray", "the Ray head", "the Ray node", ray_head_argv, ray_worker_argv, 6380,
  "Ray is not installed in this image ('ray' was not found on PATH); install Ray, or, with vLLM "
  ">= 0.12, use --preset vllm, which runs multi-node without Ray",
};
/* vLLM runs the whole model from the leader over the Ray cluster with
 * --distributed-executor-backend ray (vllm/engine/arg_utils.py); SGLang
 * with --use-ray (python/sglang/srt/server_args.py, ServerArgs.use_ray:
 * "Use Ray actors for scheduler process management"). */
static const char *const vllm_ray_flags[] = {"--distributed-executor-backend", "ray", NULL};
static const char *const sglang_ray_flags[] = {"--use-ray", NULL};
static const struct lwsi_engine_refusal vllm_ray_refused[] = {
  {"--distributed-executor-backend", NULL, false, appended},
  /* The multiprocessing executor's multi-node flags: with Ray, only the
   * leader runs vLLM, and Ray places its workers. */
  {"--nnodes|-n", NULL, false, "only the leader runs vLLM with Ray, which places the workers"},
  {"--node-rank|-r", NULL, false, "only the leader runs vLLM with Ray, which places the workers"},
  {"--headless", NULL, false, "only the leader runs vLLM with Ray, and it serves the API"},
  {NULL, NULL, false, NULL}};
static const struct lwsi_engine_refusal sglang_ray_refused[] = {
  {"--use-ray", NULL, false, appended},
  {"--node-rank", NULL, false, "only the leader runs SGLang with Ray, which places the workers"},
  {NULL, NULL, false, NULL}};

/* The default ports: SGLang's LWS example uses 20000 for --dist-init-addr;
 * vLLM's --master-port defaults to 29501 and its --data-parallel-rpc-port
 * to 29550 (vllm/config/parallel.py, ParallelConfig.master_port and
 * data_parallel_rpc_port; 13345 is only the port of vLLM's examples).
 * Health: python/sglang/srt/server_args.py has port = 30000 and
 * http_server.py serves GET /health (503 while starting, 200 once a
 * one-token generation gets through, about a second); ranks >= 1 run
 * launch_dummy_health_check_server on the same port, reachable in every
 * setup only since SGLang PR #12297 (older workers may never answer:
 * docs/operations.md).
 * vllm/entrypoints/openai/cli_args.py has port = 8000 and GET /health is
 * 200 while the engine lives; the workers of a plain multi-node vllm run
 * --headless, with no API server, while hybrid load balancing (vllm-dp)
 * runs one API server on every node. */
static const struct lwsi_engine engines[LWSI_PRESET_COUNT] = {
  [LWSI_PRESET_NONE] = {LWSI_PRESET_NONE, "none", 0, no_flags, no_flags, NULL, NULL, 0, NULL,
                        false, false, no_refusals},
  [LWSI_PRESET_SGLANG] = {LWSI_PRESET_SGLANG, "sglang", 20000, sglang_flags, no_flags, NULL,
                          "/health", 30000, "--port", true, false, sglang_refused},
  [LWSI_PRESET_VLLM] = {LWSI_PRESET_VLLM, "vllm", 29501, vllm_flags, vllm_worker_flags, NULL,
                        "/health", 8000, "--port", false, true, vllm_refused},
  [LWSI_PRESET_VLLM_DP] = {LWSI_PRESET_VLLM_DP, "vllm-dp", 29550, vllm_dp_flags, no_flags,
                           "--data-parallel-size-local|-dpl", "/health", 8000, "--port", true,
                           true, vllm_dp_refused},
  [LWSI_PRESET_VLLM_RAY] = {LWSI_PRESET_VLLM_RAY, "vllm-ray", 6379, vllm_ray_flags, no_flags, NULL,
                            "/health", 8000, "--port", false, true, vllm_ray_refused,
                            &ray_service},
  [LWSI_PRESET_SGLANG_RAY] = {LWSI_PRESET_SGLANG_RAY, "sglang-ray", 6379, sglang_ray_flags,
                              no_flags, NULL, "/health", 30000, "--port", false, false,
                              sglang_ray_refused, &ray_service},
  /* An MPI launcher on the leader (mpirun, trtllm-llmapi-launch): nothing
   * is appended, COMMAND names the hostfile with {hostfile}, and the
   * workers run what the launcher asks through `lwsinit rsh` (agent/rsh.c).
   * No health URL: what the job serves, if anything, is the user's
   * --upstream. */
  [LWSI_PRESET_MPI] = {LWSI_PRESET_MPI, "mpi", 0, no_flags, no_flags, NULL, NULL, 0, NULL, false,
                       false, no_refusals, NULL},
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

/* Whether the argument's flag part a[0..len) is the spelling sp[0..splen):
 * exactly, or with '_' for '-' in a long flag's name when the engine's
 * parser allows it. */
static bool same_flag(const char *a, size_t len, const char *sp, size_t splen, bool underscores)
{
  if (len != splen)
    return false;
  if (memcmp(a, sp, len) == 0)
    return true;
  if (!underscores || len < 3 || sp[0] != '-' || sp[1] != '-' || a[0] != '-' || a[1] != '-')
    return false;
  for (size_t i = 2; i < len; i++)
    if (a[i] != sp[i] && !(a[i] == '_' && sp[i] == '-'))
      return false;
  return true;
}

/* Whether a, up to its '=' if it has one, is one of spec's spellings. */
static bool arg_is(const char *spec, const char *a, size_t alen, bool underscores)
{
  for (const char *p = spec; *p != '\0';) {
    const char *bar = strchr(p, '|');
    size_t n = bar != NULL ? (size_t)(bar - p) : strlen(p);
    if (same_flag(a, alen, p, n, underscores))
      return true;
    p += n + (bar != NULL);
  }
  return false;
}

bool lwsi_engine_spelling(const char *spec, const char *name)
{
  return arg_is(spec, name, strlen(name), false);
}

int lwsi_engine_argv_find(const struct lwsi_engine *e, char *const *argv, const char *spec,
                          const char **value)
{
  bool underscores = e != NULL && e->underscores;
  int found = -ENOENT;
  const char *v = NULL;
  for (size_t i = 1; argv != NULL && argv[0] != NULL && argv[i] != NULL; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0)
      break;
    if (a[0] != '-')
      continue;
    const char *eq = strchr(a, '=');
    if (eq != NULL && arg_is(spec, a, (size_t)(eq - a), underscores)) {
      found = (int)i;
      v = eq + 1;
    } else if (eq == NULL && arg_is(spec, a, strlen(a), underscores)) {
      found = (int)i;
      v = argv[i + 1];
      if (v != NULL)
        i++;
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
  if (lwsi_engine_argv_find(e, argv, e->dp_local_flag, &v) < 0 || v == NULL || *v == '\0')
    return 0;
  char *end;
  unsigned long n = strtoul(v, &end, 10);
  return (*end == '\0' && n > 0 && n <= 4096) ? (unsigned)n : 0;
}

int lwsi_engine_refused(const struct lwsi_engine *e, unsigned size, char *const *argv,
                        const struct lwsi_engine_refusal **row)
{
  for (const struct lwsi_engine_refusal *r = e->refused; r->flag != NULL; r++) {
    if (r->with_workers && size < 2)
      continue;
    const char *v;
    int i = lwsi_engine_argv_find(e, argv, r->flag, &v);
    if (i < 0 || (r->value != NULL && (v == NULL || strcmp(v, r->value) != 0)))
      continue;
    *row = r;
    return i;
  }
  return -ENOENT;
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
  if (e->health_port_flag != NULL && lwsi_engine_argv_find(e, argv, e->health_port_flag, &v) >= 0 &&
      parse_port(v) != 0)
    port = parse_port(v);
  int n = snprintf(buf, buflen, "http://127.0.0.1:%u%s", port, e->health_path);
  if (n < 0 || (size_t)n >= buflen)
    return -ENOSPC;
  return 0;
}
