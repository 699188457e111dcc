/* Configuration: strict parsing, precedence, the group variables. Each bad
 * input must fail with one line that names the option or variable as the
 * user wrote it, and the value. */
#include "lwsinit/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"

#define MAXARGS 16

struct bad_case {
  const char *args[MAXARGS]; /* after argv[0]; NULL-terminated */
  const char *env[4];        /* NULL-terminated */
  const char *want[3];       /* substrings of the error */
};

static const struct bad_case bad_cases[] = {
  {{"--size", "8x", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size", "'8x'"}},
  {{"--size", "-1", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size", "'-1'"}},
  {{"--size", "1e3", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size", "'1e3'"}},
  {{"--size", "", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size", "''"}},
  {{"--size", "0", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size", "'0'"}},
  {{"--size", " 4", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size", "' 4'"}},
  {{"--size", "0x10", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size", "0x10"}},
  {{"--size", "99999999999999999999999", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_WORKER_INDEX=0"}, {"--size"}},
  {{"true"}, {"LWS_LEADER_ADDRESS=l", "LWS_GROUP_SIZE=4x", "LWS_WORKER_INDEX=0"}, {"LWS_GROUP_SIZE", "'4x'"}},
  {{"true"}, {"LWS_LEADER_ADDRESS=l", "LWS_GROUP_SIZE=4", "LWS_WORKER_INDEX=4"}, {"LWS_WORKER_INDEX", "'4'", "0 to 3"}},
  {{"--rank", "7", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_GROUP_SIZE=4", "LWS_WORKER_INDEX=0"}, {"--rank", "'7'"}},
  {{"true"}, {"LWS_LEADER_ADDRESS=l", "LWSINIT_SIZE=+2", "LWS_WORKER_INDEX=0"}, {"LWSINIT_SIZE", "'+2'"}},
  {{"true"}, {"LWS_GROUP_SIZE=4"}, {"partly", "LWS_LEADER_ADDRESS", "LWS_WORKER_INDEX"}},
  {{"--rank", "1", "true"}, {NULL}, {"partly", "LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE"}},
  {{"--leader", "", "--size", "2", "--rank", "0", "true"}, {NULL}, {"--leader", "empty"}},
  {{"--rdzv-port", "0", "true"}, {NULL}, {"--rdzv-port", "'0'", "1 to 65535"}},
  {{"--rdzv-port", "65536", "true"}, {NULL}, {"--rdzv-port", "'65536'"}},
  {{"true"}, {"LWSINIT_RDZV_PORT=70x0"}, {"LWSINIT_RDZV_PORT", "'70x0'"}},
  {{"--probe-addr", "7471", "true"}, {NULL}, {"--probe-addr", "'7471'"}},
  {{"--probe-addr", "0.0.0.0:0", "true"}, {NULL}, {"--probe-addr", "'0.0.0.0:0'"}},
  {{"--probe-addr", "localhost:7471", "true"}, {NULL}, {"--probe-addr", "localhost"}},
  {{"--dns-server", "10.0.0.1:99999", "true"}, {NULL}, {"--dns-server", "99999"}},
  {{"--dns-timeout", "-5", "true"}, {NULL}, {"--dns-timeout", "'-5'"}},
  {{"--dns-timeout", "0", "true"}, {NULL}, {"--dns-timeout", "'0'"}},
  {{"--rdzv-timeout", "1.2345", "true"}, {NULL}, {"--rdzv-timeout", "'1.2345'"}},
  {{"--grace", "30s", "true"}, {NULL}, {"--grace", "'30s'"}},
  {{"--grace", "1.", "true"}, {NULL}, {"--grace", "'1.'"}},
  {{"--drain-delay", ".5", "true"}, {NULL}, {"--drain-delay", "'.5'"}},
  {{"--heartbeat", "5", "true"}, {NULL}, {"--heartbeat", "'5'"}},
  {{"--heartbeat", "2000", "--peer-timeout", "1000", "true"}, {NULL}, {"--peer-timeout", "'1000'"}},
  {{"--on-peer-loss", "restart", "true"}, {NULL}, {"--on-peer-loss", "'restart'", "exit, stay"}},
  {{"--preset", "trtllm", "true"}, {NULL}, {"--preset", "'trtllm'", "none, sglang, vllm, vllm-dp"}},
  {{"--readiness", "ready", "true"}, {NULL}, {"--readiness", "'ready'"}},
  {{"--gpu-check", "yes", "true"}, {NULL}, {"--gpu-check", "'yes'"}},
  {{"--gpus", "-8", "true"}, {NULL}, {"--gpus", "'-8'"}},
  {{"--gpu-check-bytes", "1GB", "true"}, {NULL}, {"--gpu-check-bytes", "'1GB'"}},
  {{"--gpu-min-busbw", "fast", "true"}, {NULL}, {"--gpu-min-busbw", "'fast'"}},
  {{"--log-format", "xml", "true"}, {NULL}, {"--log-format", "'xml'"}},
  {{"--hang-timeout", "2m", "true"}, {NULL}, {"--hang-timeout", "'2m'"}},
  {{"--hang-timeout", "-1", "true"}, {NULL}, {"--hang-timeout", "'-1'"}},
  {{"true"}, {"LWSINIT_HANG_TIMEOUT=1e3"}, {"LWSINIT_HANG_TIMEOUT", "'1e3'"}},
  {{"--fail-delay", "", "true"}, {NULL}, {"--fail-delay", "''"}},
  {{"--fail-delay", "30x", "true"}, {NULL}, {"--fail-delay", "'30x'"}},
  {{"--on-failure", "stay", "true"}, {NULL}, {"--on-failure", "'stay'", "exit, restart"}},
  {{"--max-restarts", "-1", "true"}, {NULL}, {"--max-restarts", "'-1'"}},
  {{"true"}, {"LWSINIT_REJOIN_TIMEOUT=0"}, {"LWSINIT_REJOIN_TIMEOUT", "'0'"}},
  {{"true"}, {"LWSINIT_LOG_LEVEL=verbose"}, {"LWSINIT_LOG_LEVEL", "'verbose'"}},
  {{"--upstream", "localhost:8000/health", "true"}, {NULL}, {"--upstream", "http://"}},
  {{"--dp-local", "2", "true"}, {NULL}, {"--dp-local", "vllm-dp"}},
  {{"--token-file", "/nonexistent/token", "true"}, {NULL}, {"--token-file", "/nonexistent/token"}},
  {{"true"}, {"LWSINIT_TOKEN_FILE=/nonexistent/t2"}, {"LWSINIT_TOKEN_FILE", "/nonexistent/t2"}},
  {{"true"}, {"LWSINIT_TOKEN=   "}, {"LWSINIT_TOKEN", "empty"}},
  {{"--bogus", "1", "true"}, {NULL}, {"--bogus"}},
  {{"-x", "true"}, {NULL}, {"'-x'"}},
  {{"--size"}, {NULL}, {"--size", "value"}},
  {{NULL}, {NULL}, {"no COMMAND"}},
  {{"--"}, {NULL}, {"no COMMAND"}},
  {{"echo", "{rnak}"}, {NULL}, {"{rnak}", "{{rnak}}"}},
  {{"echo", "{dist_port}"}, {NULL}, {"{dist_port}", "--dist-port"}},
  {{"--status-socket", "", "true"}, {NULL}, {"--status-socket", "empty"}},
  {{"--preset", "vllm-dp", "vllm", "serve"}, {NULL}, {"vllm-dp", "--dp-local"}},
  {{"--gpu-check", "nccl", "true"}, {"LWS_LEADER_ADDRESS=l", "LWS_GROUP_SIZE=2", "LWS_WORKER_INDEX=0"}, {"--gpu-check", "--gpus"}},
  /* A COMMAND that contradicts its preset: one line naming the preset and
   * the argument as written. */
  {{"--preset", "vllm", "vllm", "serve", "m", "--distributed-executor-backend", "ray"}, {NULL}, {"--preset vllm", "argument 3 ('--distributed-executor-backend')", "Ray"}},
  {{"--preset", "vllm", "vllm", "serve", "--distributed-executor-backend=ray"}, {NULL}, {"--preset vllm", "'--distributed-executor-backend=ray'"}},
  {{"--preset", "vllm", "vllm", "serve", "--data-parallel-hybrid-lb"}, {"LWS_LEADER_ADDRESS=l", "LWS_GROUP_SIZE=2", "LWS_WORKER_INDEX=0"}, {"--preset vllm", "'--data-parallel-hybrid-lb'", "--headless"}},
  {{"--preset", "vllm", "vllm", "serve", "-dph"}, {"LWS_LEADER_ADDRESS=l", "LWS_GROUP_SIZE=2", "LWS_WORKER_INDEX=1"}, {"--preset vllm", "'-dph'"}},
  {{"--preset", "sglang", "python3", "--node-rank", "1"}, {NULL}, {"--preset sglang", "'--node-rank'", "appends it"}},
  {{"--preset", "sglang", "python3", "--dist-init-addr=a:1"}, {NULL}, {"--preset sglang", "'--dist-init-addr=a:1'"}},
  {{"--preset", "vllm", "vllm", "serve", "--nnodes", "2"}, {NULL}, {"--preset vllm", "'--nnodes'"}},
  {{"--preset", "vllm", "vllm", "serve", "--node_rank=1"}, {NULL}, {"--preset vllm", "'--node_rank=1'"}},
  {{"--preset", "vllm-dp", "vllm", "serve", "-dpl", "2", "--headless"}, {NULL}, {"--preset vllm-dp", "'--headless'"}},
  {{"--preset", "vllm-dp", "--dp-local", "2", "vllm", "--data-parallel-rpc-port", "1"}, {NULL}, {"--preset vllm-dp", "'--data-parallel-rpc-port'"}},
};

static int parse(const char *const *args, const char *const *env, struct lwsi_config *cfg,
                 char *err, size_t errlen)
{
  /* Static: the parsed config keeps pointers into argv. */
  static char *argv[MAXARGS + 2];
  int argc = 0;
  argv[argc++] = "lwsinit";
  for (int i = 0; i < MAXARGS && args[i] != NULL; i++)
    argv[argc++] = (char *)args[i];
  argv[argc] = NULL;
  char *envp[8];
  int n = 0;
  for (int i = 0; i < 4 && env[i] != NULL; i++)
    envp[n++] = (char *)env[i];
  envp[n] = NULL;
  return lwsi_config_parse(cfg, argc, argv, envp, err, errlen);
}

static void test_bad(void)
{
  static struct lwsi_config cfg;
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
    const struct bad_case *c = &bad_cases[i];
    char err[LWSI_CONFIG_ERR_MAX];
    int rc = parse(c->args, c->env, &cfg, err, sizeof(err));
    bool all = rc == -EINVAL && strchr(err, '\n') == NULL && strncmp(err, "lwsinit: ", 9) == 0;
    for (int k = 0; k < 3 && c->want[k] != NULL; k++)
      all = all && strstr(err, c->want[k]) != NULL;
    TAP_OK(all, "bad input %zu (%s %s) is refused: %s", i, c->args[0] ? c->args[0] : "",
           c->env[0] ? c->env[0] : "", err);
  }
}

static void test_standalone(void)
{
  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  const char *args[] = {"sleep", "1", NULL};
  const char *env[] = {"LWSINIT_UNKNOWN_THING=1", NULL};
  int rc = parse(args, env, &cfg, err, sizeof(err));
  TAP_OK(rc == 0, "standalone parses (%s)", err);
  TAP_OK(cfg.standalone && cfg.size == 1 && cfg.rank == 0, "standalone is a group of one");
  TAP_OK(cfg.rdzv_port == 7470 && cfg.probe_addr.port == 7471, "default ports");
  TAP_STR_EQ(cfg.probe_addr.host, "0.0.0.0", "default probe host");
  TAP_STR_EQ(cfg.status_socket, "/run/lwsinit/status.sock", "default status socket");
  TAP_OK(cfg.grace_ms == 30000 && cfg.drain_delay_ms == 0, "default grace and drain");
  TAP_OK(cfg.heartbeat_ms == 1000 && cfg.peer_timeout_ms == 10000, "default heartbeat");
  TAP_OK(cfg.hang_timeout_ms == 0 && cfg.fail_delay_ms == 0 &&
             cfg.on_failure == LWSI_ON_FAILURE_EXIT,
         "default: no hang detection, no fail delay, on-failure exit");
  TAP_OK(cfg.max_restarts == 3 && cfg.restart_window_ms == 600000 &&
             cfg.rejoin_timeout_ms == 120000 && cfg.gpu_free_timeout_ms == 60000,
         "default restart budget, window, rejoin and GPU-free timeouts");
  TAP_OK(cfg.argc == 2 && strcmp(cfg.argv[0], "sleep") == 0, "COMMAND found");
}

static void test_precedence(void)
{
  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  const char *args[] = {"--size", "8", "--grace=2.5", "--", "--not-an-option", NULL};
  const char *env[] = {"LWS_LEADER_ADDRESS=sglang-0.sglang.default", "LWS_GROUP_SIZE=bad",
                       "LWSINIT_SIZE=also-bad", "LWS_WORKER_INDEX=3"};
  int rc = parse(args, env, &cfg, err, sizeof(err));
  TAP_OK(rc == 0, "a flag hides bad variables behind it (%s)", err);
  TAP_OK(cfg.size == 8 && cfg.rank == 3 && !cfg.standalone, "group from flag and LWS_*");
  TAP_STR_EQ(cfg.leader, "sglang-0.sglang.default", "leader from LWS_LEADER_ADDRESS");
  TAP_OK(cfg.grace_ms == 2500, "--grace=2.5 is 2500 ms");
  TAP_OK(cfg.argc == 1 && strcmp(cfg.argv[0], "--not-an-option") == 0, "-- ends the options");

  const char *args2[] = {"true", NULL};
  const char *env2[] = {"LWS_LEADER_ADDRESS=a", "LWS_GROUP_SIZE=2", "LWSINIT_SIZE=4",
                        "LWS_WORKER_INDEX=3"};
  rc = parse(args2, env2, &cfg, err, sizeof(err));
  TAP_OK(rc == 0 && cfg.size == 4, "LWSINIT_SIZE wins over LWS_GROUP_SIZE (%s)", err);

  const char *args3[] = {"--hang-timeout", "120", "--fail-delay=30", "--on-failure", "exit",
                         "true", NULL};
  const char *env3[] = {"LWSINIT_HANG_TIMEOUT=5", "LWSINIT_FAIL_DELAY=bad", NULL};
  rc = parse(args3, env3, &cfg, err, sizeof(err));
  TAP_OK(rc == 0 && cfg.hang_timeout_ms == 120000 && cfg.fail_delay_ms == 30000 &&
             cfg.on_failure == LWSI_ON_FAILURE_EXIT,
         "--hang-timeout, --fail-delay and --on-failure parse, flags over variables (%s)", err);

  const char *args4[] = {"--on-failure", "restart", "--max-restarts", "0", "--restart-window",
                         "30", "--rejoin-timeout=2.5", "true", NULL};
  const char *env4[] = {"LWSINIT_GPU_FREE_TIMEOUT=7", NULL};
  rc = parse(args4, env4, &cfg, err, sizeof(err));
  TAP_OK(rc == 0 && cfg.on_failure == LWSI_ON_FAILURE_RESTART && cfg.max_restarts == 0 &&
             cfg.restart_window_ms == 30000 && cfg.rejoin_timeout_ms == 2500 &&
             cfg.gpu_free_timeout_ms == 7000,
         "--on-failure restart and its budget and timeouts parse (%s)", err);
}

static void test_values(void)
{
  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  const char *args[] = {"--dns-server", "127.0.0.1:5353", "--probe-addr", "[::1]:9000",
                        "--preset", "sglang", "--gpu-min-busbw", "12.5", "--log-format", "json",
                        "echo", "{dist_port}", NULL};
  const char *env[] = {NULL};
  int rc = parse(args, env, &cfg, err, sizeof(err));
  TAP_OK(rc == 0, "values parse (%s)", err);
  TAP_OK(cfg.has_dns_server && cfg.dns_server.port == 5353, "dns server port");
  TAP_STR_EQ(cfg.probe_addr.host, "::1", "IPv6 probe address");
  TAP_OK(cfg.preset == LWSI_PRESET_SGLANG && cfg.log_format == LWSI_LOG_JSON, "enums");
  TAP_OK(cfg.gpu_min_busbw > 12.49 && cfg.gpu_min_busbw < 12.51, "decimal GB/s");
  uint16_t port = 0;
  TAP_OK(lwsi_config_dist_port(&cfg, &port) && port == 20000, "sglang's default dist port");

  const char *args3[] = {"--dns-server", "10.96.0.10", "true", NULL};
  rc = parse(args3, env, &cfg, err, sizeof(err));
  TAP_OK(rc == 0 && cfg.dns_server.port == 53, "dns server without a port is port 53");
}

static void test_token(void)
{
  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  char path[] = "/tmp/lwsi-token-XXXXXX";
  int fd = mkstemp(path);
  TAP_OK(fd >= 0, "temp token file");
  if (fd < 0)
    return;
  TAP_OK(write(fd, "s3cret \n\n", 9) == 9, "write token");
  close(fd);
  const char *args[] = {"--token-file", path, "true", NULL};
  const char *env[] = {"LWSINIT_TOKEN=ignored-when-file-given", NULL};
  int rc = parse(args, env, &cfg, err, sizeof(err));
  TAP_OK(rc == 0 && cfg.token_len == 6 && strcmp(cfg.token, "s3cret") == 0,
         "token file read, trailing whitespace stripped (%s)", err);
  const char *args2[] = {"true", NULL};
  const char *env2[] = {"LWSINIT_TOKEN=abc\n", NULL};
  rc = parse(args2, env2, &cfg, err, sizeof(err));
  TAP_OK(rc == 0 && strcmp(cfg.token, "abc") == 0, "LWSINIT_TOKEN is the secret itself");
  unlink(path);
}

static void test_modes(void)
{
  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  const char *env[] = {NULL};
  const char *h[] = {"--help", NULL};
  TAP_OK(parse(h, env, &cfg, err, sizeof(err)) == 0 && cfg.mode == LWSI_MODE_HELP, "--help");
  const char *v[] = {"--version", NULL};
  TAP_OK(parse(v, env, &cfg, err, sizeof(err)) == 0 && cfg.mode == LWSI_MODE_VERSION, "--version");
  const char *s[] = {"status", "--json", "--socket", "/tmp/x.sock", NULL};
  TAP_OK(parse(s, env, &cfg, err, sizeof(err)) == 0 && cfg.mode == LWSI_MODE_STATUS &&
             cfg.status_json && strcmp(cfg.status_socket, "/tmp/x.sock") == 0,
         "status --json --socket");
  const char *p[] = {"probe", "ready", "--addr", "127.0.0.9:8000", NULL};
  TAP_OK(parse(p, env, &cfg, err, sizeof(err)) == 0 && cfg.mode == LWSI_MODE_PROBE &&
             cfg.probe_ready && cfg.probe_addr.port == 8000,
         "probe ready --addr");
  const char *p2[] = {"probe", "live", NULL};
  TAP_OK(parse(p2, env, &cfg, err, sizeof(err)) == 0 && !cfg.probe_ready &&
             strcmp(cfg.probe_addr.host, "127.0.0.1") == 0 && cfg.probe_addr.port == 7471,
         "probe live defaults to loopback:7471");
  const char *p3[] = {"probe", "sideways", NULL};
  TAP_OK(parse(p3, env, &cfg, err, sizeof(err)) == -EINVAL, "probe with a bad kind");
}

/* The --gpu-check names come from the parse table: each name parses to the
 * mode whose name it is, so the agent and the status say what the user
 * wrote. */
static void test_gpu_check_name(void)
{
  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  const char *env[] = {NULL};
  static const char *const names[] = {"none", "cuda", "nccl"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    const char *args[] = {"--gpu-check", names[i], "true", NULL};
    int rc = parse(args, env, &cfg, err, sizeof(err));
    TAP_OK(rc == 0, "--gpu-check %s parses (%s)", names[i], err);
    TAP_STR_EQ(lwsi_config_gpu_check_name(cfg.gpu_check), names[i],
               "the name of --gpu-check %s", names[i]);
  }
  TAP_STR_EQ(lwsi_config_gpu_check_name(LWSI_GPU_CHECK_NCCL), "nccl", "nccl by its enum");
  TAP_STR_EQ(lwsi_config_gpu_check_name((enum lwsi_gpu_check)3), "?",
             "a value past the last mode is '?'");
  TAP_STR_EQ(lwsi_config_gpu_check_name((enum lwsi_gpu_check)-1), "?",
             "a negative value is '?'");
}

/* --preset takes the engine table's names, and its defaults follow. */
static void test_presets(void)
{
  static struct lwsi_config cfg;
  char err[LWSI_CONFIG_ERR_MAX];
  const char *env[] = {NULL};
  for (int i = 0; i < LWSI_PRESET_COUNT; i++) {
    const struct lwsi_engine *e = lwsi_engine_get((enum lwsi_preset)i);
    const char *args[] = {"--preset", e->name, "--dp-local", "2", "true", NULL};
    if (e->dp_local_flag == NULL) { /* --dp-local is refused without the rule */
      args[2] = "true";
      args[3] = NULL;
    }
    int rc = parse(args, env, &cfg, err, sizeof(err));
    uint16_t port = 0;
    bool has = rc == 0 && lwsi_config_dist_port(&cfg, &port);
    TAP_OK(rc == 0 && cfg.preset == e->id && has == (e->dist_port != 0) &&
               (!has || port == e->dist_port),
           "--preset %s: its row, {dist_port} %u (%s)", e->name, port, err);
  }
  char buf[8192] = "";
  FILE *f = tmpfile();
  if (f != NULL) {
    lwsi_config_usage(fileno(f));
    rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
  }
  TAP_OK(strstr(buf, "--preset none|sglang|vllm|vllm-dp|vllm-ray|sglang-ray|mpi\n") != NULL,
         "--help lists the presets");
  /* What the presets leave to COMMAND. */
  const char *ok1[] = {"--preset", "vllm", "vllm", "serve", "--data-parallel-hybrid-lb", NULL};
  TAP_OK(parse(ok1, env, &cfg, err, sizeof(err)) == 0,
         "vllm standalone: --data-parallel-hybrid-lb (no worker gets --headless) (%s)", err);
  const char *ok2[] = {"--preset", "vllm", "vllm", "serve", "--distributed-executor-backend",
                       "mp", NULL};
  TAP_OK(parse(ok2, env, &cfg, err, sizeof(err)) == 0, "vllm: the mp executor (%s)", err);
  const char *ok3[] = {"--preset", "vllm-dp", "vllm", "serve", "-dpl", "4", NULL};
  TAP_OK(parse(ok3, env, &cfg, err, sizeof(err)) == 0 && lwsi_engine_dp_local(
             lwsi_engine_get(cfg.preset), cfg.dp_local, cfg.argv) == 4,
         "vllm-dp: -dpl 4 gives the size per node (%s)", err);
}

int main(void)
{
  test_bad();
  test_standalone();
  test_precedence();
  test_values();
  test_token();
  test_modes();
  test_gpu_check_name();
  test_presets();
  return tap_done();
}
