/* The engine's command line: presets, and the launch command each member
 * sends the leader with the leader's comparison (launchck). */
#include "lwsinit/cmdline.h"

#include "lwsinit/config.h"
#include "lwsinit/expand.h"
#include "lwsinit/launchck.h"
#include "lwsinit/wire.h"

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
  struct lwsi_cmdline_values v = {"sglang-0.sglang.default", leader_ip, 4, rank, NULL, 0};
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

/* A launch command from a list, as a member would send it. */
static void cmd_of(struct lwsi_launchck_cmd *c, const char *const *argv, uint32_t argc)
{
  if (lwsi_launchck_build(argv, argc, c) < 0)
    TAP_OK(0, "lwsi_launchck_build");
}

/* The number of differences between the leader's (rank 0) and a member's
 * command, and the detail in d. */
static uint32_t differ(const char *const *l, uint32_t ln, const char *const *m, uint32_t mn,
                       uint32_t rank, char *d, size_t dlen)
{
  struct lwsi_launchck_cmd a, b;
  cmd_of(&a, l, ln);
  cmd_of(&b, m, mn);
  uint32_t n = lwsi_launchck_compare(&a, 0, &b, rank, d, dlen);
  lwsi_launchck_free(&a);
  lwsi_launchck_free(&b);
  return n;
}

static void launch_check_tests(void)
{
  /* What a member sends: COMMAND as written, then the preset's flags on
   * every rank, placeholders unexpanded. */
  char *a1[] = {"engine", "--node-rank", "2", "--tp", "8"};
  setup(a1, 5, "sglang");
  struct lwsi_launchck_cmd c;
  TAP_OK(lwsi_cmdline_launch_check(&cfg, &c) == 0, "the launch command builds");
  TAP_OK(c.total == 11 && c.n == 11, "COMMAND and the preset's 6 flags (%u of %u)", c.n, c.total);
  TAP_OK(strcmp(c.args[2], "2") == 0 && strcmp(c.args[5], "--dist-init-addr") == 0 &&
             strcmp(c.args[6], "{leader_ip}:{dist_port}") == 0,
         "placeholders stay unexpanded: '%s'", c.args[6]);
  lwsi_launchck_free(&c);
  setup(a1, 5, "vllm");
  TAP_OK(lwsi_cmdline_launch_check(&cfg, &c) == 0 && c.total == 13,
         "vllm: its workers' --headless is not part of it (%u)", c.total);
  lwsi_launchck_free(&c);

  char d[1024];
  /* Small-number skew, which the old digest left out. */
  const char *l16[] = {"engine", "--tp", "16"}, *w8[] = {"engine", "--tp", "8"};
  TAP_OK(differ(l16, 3, w8, 3, 2, d, sizeof(d)) == 1, "--tp 8 vs 16: one difference");
  TAP_STR_EQ(d, "argument 2 is '8', the leader's is '16'", "the detail names position and values");
  const char *l2[] = {"engine", "--tp", "2"}, *w1[] = {"engine", "--tp", "1"};
  TAP_OK(differ(l2, 3, w1, 3, 1, d, sizeof(d)) == 1,
         "--tp 1 on rank 1 vs the leader's --tp 2 is a difference: %s", d);
  const char *le[] = {"engine", "--tensor-parallel-size=2"};
  const char *we[] = {"engine", "--tensor-parallel-size=4"};
  TAP_OK(differ(le, 2, we, 2, 1, d, sizeof(d)) == 1, "the '=' form differs");
  TAP_STR_EQ(d, "argument 1 is '--tensor-parallel-size=4', the leader's is "
                "'--tensor-parallel-size=2'", "named with the whole argument");

  /* Each side's own rank is equal: alone, or after the same name=. */
  const char *lr[] = {"engine", "--node-rank", "0", "--rank=0", "--tp", "2"};
  const char *wr[] = {"engine", "--node-rank", "2", "--rank=2", "--tp", "2"};
  TAP_OK(differ(lr, 6, wr, 6, 2, d, sizeof(d)) == 0, "own ranks are equal (%s)", d);
  TAP_OK(differ(lr, 6, wr, 6, 3, d, sizeof(d)) == 2,
         "another rank's number is not this member's rank: %s", d);
  const char *wx[] = {"engine", "--node-rank", "2", "--size=2", "--tp", "2"};
  TAP_OK(differ(lr, 6, wx, 6, 2, d, sizeof(d)) == 1, "the rank after another name differs");

  /* Per-pod values: reported, with both values. */
  const char *lh[] = {"engine", "--host", "10.0.0.5"}, *wh[] = {"engine", "--host", "10.0.0.6"};
  TAP_OK(differ(lh, 3, wh, 3, 1, d, sizeof(d)) == 1, "a per-pod value is a difference");
  TAP_STR_EQ(d, "argument 2 is '10.0.0.6', the leader's is '10.0.0.5'", "both values");

  /* Lengths, and the count past the first three. */
  const char *ls[] = {"e", "a"}, *wl[] = {"e", "a", "b"};
  TAP_OK(differ(ls, 2, wl, 3, 1, d, sizeof(d)) == 1, "an extra argument");
  TAP_STR_EQ(d, "argument 2 is 'b', the leader has none", "named as extra");
  TAP_OK(differ(wl, 3, ls, 2, 1, d, sizeof(d)) == 1, "a missing argument");
  TAP_STR_EQ(d, "argument 2 is missing, the leader's is 'b'", "named as missing");
  const char *m5[] = {"e", "1", "2", "3", "4", "5"}, *n5[] = {"e", "6", "7", "8", "9", "10"};
  TAP_OK(differ(m5, 6, n5, 6, 3, d, sizeof(d)) == 5, "five differences");
  TAP_OK(strstr(d, "; and 2 more") != NULL && strstr(d, "argument 4") == NULL,
         "three listed, then a count: %s", d);

  /* A long value is shown cut; the comparison is on the whole. */
  char long1[200], long2[200];
  memset(long1, 'x', 199);
  long1[199] = '\0';
  memcpy(long2, long1, 200);
  long2[198] = 'y';
  const char *g1[] = {"e", long1}, *g2[] = {"e", long2};
  TAP_OK(differ(g1, 2, g2, 2, 1, d, sizeof(d)) == 1 && strstr(d, "...'") != NULL &&
             strlen(d) < 200,
         "a difference at the end of a long value, shown cut (%zu bytes)", strlen(d));

  /* Escaping: one-to-one, and wire text. */
  char e[64];
  TAP_OK(lwsi_launchck_escape("a\nb\\c\xff\xc3\xa9", e, sizeof(e)) == 15, "escaped length");
  TAP_STR_EQ(e, "a\\x0ab\\\\c\\xff\xc3\xa9", "control, backslash, invalid UTF-8; UTF-8 kept");
  TAP_OK(lwsi_wire_text_ok(e), "the escaped text is wire text");
  TAP_OK(lwsi_launchck_escape("abc\\def", e, 5) == 8 && strcmp(e, "abc") == 0,
         "cut on a whole piece: '%s'", e);
  const char *b1[] = {"e", "a\nb"}, *b2[] = {"e", "a\\x0ab"};
  TAP_OK(differ(b1, 2, b2, 2, 1, d, sizeof(d)) == 1, "an escape and its text differ");

  /* The bound: 512 arguments or 16 KiB; the rest by its digest. */
  static const char *big1[600], *big2[600];
  for (int i = 0; i < 600; i++)
    big1[i] = big2[i] = "--x";
  struct lwsi_launchck_cmd k;
  cmd_of(&k, big1, 600);
  TAP_OK(k.n == LWSI_WIRE_CMD_MAX_ARGS && k.total == 600, "600 arguments: 512 sent (%u)", k.n);
  lwsi_launchck_free(&k);
  TAP_OK(differ(big1, 600, big2, 600, 1, d, sizeof(d)) == 0, "the same past the bound");
  big2[550] = "--y";
  TAP_OK(differ(big1, 600, big2, 600, 1, d, sizeof(d)) == 1 &&
             strstr(d, "from argument 512 on differ") != NULL,
         "a difference past the bound: %s", d);
  TAP_OK(differ(big1, 600, big2, 599, 1, d, sizeof(d)) == 1, "a shorter tail differs");
  big2[550] = "--x";
  big2[3] = "--y";
  TAP_OK(differ(big1, 600, big2, 600, 1, d, sizeof(d)) == 1 &&
             strstr(d, "argument 3 is '--y'") != NULL,
         "within the bound, by argument");
  static char text[LWSI_WIRE_CMD_MAX_TEXT];
  memset(text, 'z', sizeof(text) - 1);
  const char *t1[] = {"e", "f", text, "g"};
  cmd_of(&k, t1, 4);
  TAP_OK(k.n == 2 && k.total == 4, "16 KiB of text: the arguments before it (%u)", k.n);
  lwsi_launchck_free(&k);
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
  {
    char *ep[] = {"engine", "--epoch={epoch}", "{{epoch}}"};
    TAP_OK(setup(ep, 3, NULL) == 0, "config with {epoch}");
    struct lwsi_cmdline_values v = {"l", "10.0.0.7", 4, 1, NULL, 3};
    char **out = NULL;
    char bad[32];
    TAP_OK(lwsi_cmdline_build(&cfg, &v, &out, bad, sizeof(bad)) == 0, "build with {epoch}");
    if (out != NULL)
      TAP_STR_EQ(join(out), "engine --epoch=3 {epoch}", "{epoch} is the group's epoch");
    lwsi_expand_free(out);
  }

  launch_check_tests();
  return tap_done();
}
