/* The engine's command line: presets and the group digest. */
#include "lwsinit/cmdline.h"

#include "lwsinit/config.h"
#include "lwsinit/expand.h"

#include <stdlib.h>
#include <string.h>

#include "tap.h"

static struct lwsi_config cfg;

static int setup(char **argv, int argc, const char *preset)
{
  char *args[32];
  int n = 0;
  static char *keep[32];
  args[n++] = "lwsinit";
  if (preset != NULL) {
    args[n++] = "--preset";
    args[n++] = (char *)preset;
  }
  args[n++] = "--";
  for (int i = 0; i < argc; i++)
    args[n++] = argv[i];
  args[n] = NULL;
  memcpy(keep, args, sizeof(args));
  char *envp[] = {"LWS_LEADER_ADDRESS=sglang-0.sglang.default", "LWS_GROUP_SIZE=4",
                  "LWS_WORKER_INDEX=2", NULL};
  char err[LWSI_CONFIG_ERR_MAX];
  int rc = lwsi_config_parse(&cfg, n, keep, envp, err, sizeof(err));
  if (rc < 0)
    printf("# %s\n", err);
  return rc;
}

static char *join(char **argv)
{
  static char buf[1024];
  size_t o = 0;
  buf[0] = '\0';
  for (char **p = argv; *p != NULL; p++)
    o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? " " : "", *p);
  return buf;
}

static void expect_cmd_at(const char *preset, char **argv, int argc, unsigned rank,
                          const char *leader_ip, const char *want)
{
  TAP_OK(setup(argv, argc, preset) == 0, "config for preset %s", preset ? preset : "none");
  struct lwsi_cmdline_values v = {"sglang-0.sglang.default", leader_ip, 4, rank};
  char **out = NULL;
  char bad[32];
  int rc = lwsi_cmdline_build(&cfg, &v, &out, bad, sizeof(bad));
  TAP_OK(rc == 0, "build for preset %s rank %u", preset ? preset : "none", rank);
  if (rc == 0)
    TAP_STR_EQ(join(out), want, "command for preset %s rank %u", preset ? preset : "none", rank);
  lwsi_expand_free(out);
}

static void expect_cmd(const char *preset, char **argv, int argc, unsigned rank,
                       const char *want)
{
  expect_cmd_at(preset, argv, argc, rank, "10.0.0.7", want);
}

int main(void)
{
  char *sg[] = {"python3", "-m", "sglang.launch_server", "--tp", "16"};
  expect_cmd("sglang", sg, 5, 2,
             "python3 -m sglang.launch_server --tp 16 --dist-init-addr 10.0.0.7:20000 "
             "--nnodes 4 --node-rank 2");
  char *vl[] = {"vllm", "serve", "m"};
  expect_cmd("vllm", vl, 3, 0,
             "vllm serve m --nnodes 4 --node-rank 0 --master-addr 10.0.0.7 --master-port 29501");
  expect_cmd("vllm", vl, 3, 3,
             "vllm serve m --nnodes 4 --node-rank 3 --master-addr 10.0.0.7 --master-port 29501 "
             "--headless");
  char *dp[] = {"vllm", "serve", "m", "--data-parallel-size-local", "8"};
  expect_cmd("vllm-dp", dp, 5, 2,
             "vllm serve m --data-parallel-size-local 8 --data-parallel-size 32 "
             "--data-parallel-start-rank 16 --data-parallel-address 10.0.0.7 "
             "--data-parallel-rpc-port 29550 --data-parallel-hybrid-lb");
  /* vLLM reads the last --data-parallel-size-local (argparse): the group's
   * data-parallel size and this node's first rank follow that one, not an
   * earlier one the template left in. */
  char *dp2[] = {"vllm", "serve", "m", "--data-parallel-size-local", "2",
                 "--data-parallel-size-local=8"};
  expect_cmd("vllm-dp", dp2, 6, 2,
             "vllm serve m --data-parallel-size-local 2 --data-parallel-size-local=8 "
             "--data-parallel-size 32 --data-parallel-start-rank 16 "
             "--data-parallel-address 10.0.0.7 --data-parallel-rpc-port 29550 "
             "--data-parallel-hybrid-lb");
  char *dpl[] = {"vllm", "serve", "m"};
  TAP_OK(setup(dpl, 3, "vllm-dp") < 0, "vllm-dp without a size per node is refused");
  /* vLLM's other spellings of the size per node: -dpl, and underscores
   * (FlexibleArgumentParser), with a space or '='. */
  char *dps[] = {"vllm", "serve", "m", "-dpl", "8"};
  expect_cmd("vllm-dp", dps, 5, 1,
             "vllm serve m -dpl 8 --data-parallel-size 32 --data-parallel-start-rank 8 "
             "--data-parallel-address 10.0.0.7 --data-parallel-rpc-port 29550 "
             "--data-parallel-hybrid-lb");
  char *dpu[] = {"vllm", "serve", "m", "--data_parallel_size_local=2"};
  expect_cmd("vllm-dp", dpu, 4, 3,
             "vllm serve m --data_parallel_size_local=2 --data-parallel-size 8 "
             "--data-parallel-start-rank 6 --data-parallel-address 10.0.0.7 "
             "--data-parallel-rpc-port 29550 --data-parallel-hybrid-lb");

  /* IPv6: in brackets before ":port" (SGLang's --dist-init-addr and a
   * user's own {leader_ip}:{dist_port}), bare alone (vLLM's addresses). */
  expect_cmd_at("sglang", sg, 5, 1, "fd00::5",
                "python3 -m sglang.launch_server --tp 16 --dist-init-addr [fd00::5]:20000 "
                "--nnodes 4 --node-rank 1");
  expect_cmd_at("vllm", vl, 3, 1, "fd00::5",
                "vllm serve m --nnodes 4 --node-rank 1 --master-addr fd00::5 --master-port 29501 "
                "--headless");
  char *own[] = {"engine", "--addr={leader_ip}:{dist_port}", "--host", "{leader_ip}",
                 "tcp://{leader_ip}:9", "{leader_ip}.x"};
  expect_cmd_at("vllm", own, 6, 0, "::1",
                "engine --addr=[::1]:29501 --host ::1 tcp://[::1]:9 ::1.x --nnodes 4 "
                "--node-rank 0 --master-addr ::1 --master-port 29501");
  expect_cmd_at("vllm", own, 6, 0, "10.0.0.7",
                "engine --addr=10.0.0.7:29501 --host 10.0.0.7 tcp://10.0.0.7:9 10.0.0.7.x "
                "--nnodes 4 --node-rank 0 --master-addr 10.0.0.7 --master-port 29501");
  char *plain[] = {"engine", "--rank={rank}", "{leader}", "{\"k\": 1}"};
  expect_cmd(NULL, plain, 4, 2, "engine --rank=2 sglang-0.sglang.default {\"k\": 1}");

  /* The digest ignores this pod's rank as Kubernetes spelled it, and
   * nothing else. */
  uint8_t d1[32], d2[32], d3[32];
  char *a1[] = {"engine", "--base-gpu-id", "2", "--tp", "8"};
  setup(a1, 5, "sglang");
  TAP_OK(lwsi_cmdline_digest(&cfg, d1) == 0, "digest");
  char *a2[] = {"engine", "--base-gpu-id", "{rank}", "--tp", "8"};
  setup(a2, 5, "sglang");
  lwsi_cmdline_digest(&cfg, d2);
  TAP_OK(memcmp(d1, d2, 32) == 0, "an argument spelling the rank is left out");
  char *a3[] = {"engine", "--base-gpu-id", "2", "--tp", "16"};
  setup(a3, 5, "sglang");
  lwsi_cmdline_digest(&cfg, d3);
  TAP_OK(memcmp(d1, d3, 32) != 0, "a different --tp changes the digest");
  setup(a1, 5, "vllm");
  lwsi_cmdline_digest(&cfg, d3);
  TAP_OK(memcmp(d1, d3, 32) != 0, "a different preset changes the digest");
  /* The same template on the leader (rank 0) and a worker: a literal 0
   * (a seed) must not read as the leader's rank on one side only. */
  char *s0[] = {"engine", "--seed", "0", "--node-rank", "2"};
  char *s1[] = {"engine", "--seed", "0", "--node-rank", "1"};
  setup(s0, 5, NULL);
  lwsi_cmdline_digest(&cfg, d1);
  setup(s1, 5, NULL);
  lwsi_cmdline_digest(&cfg, d2);
  TAP_OK(memcmp(d1, d2, 32) == 0, "numbers below the group size are left out on every rank");
  return tap_done();
}
