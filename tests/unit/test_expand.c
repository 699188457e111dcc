/* Placeholder expansion: the contract's rules, one case a line. */
#include "lwsinit/expand.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

static const struct lwsi_expand_var vars[] = {
  {"leader", "sglang-0.sglang.default"},
  {"leader_ip", "10.0.0.7"},
  {"size", "4"},
  {"rank", "2"},
  {"dist_port", "20000"},
};
#define NV (sizeof(vars) / sizeof(vars[0]))

static void expect(const char *in, const char *want)
{
  char *out = NULL;
  char bad[32];
  int rc = lwsi_expand_arg(in, vars, NV, &out, bad, sizeof(bad));
  TAP_OK(rc == 0, "expand '%s' succeeds", in);
  TAP_STR_EQ(out, want, "expand '%s'", in);
  free(out);
}

static void expect_err(const char *in, int err, const char *name)
{
  char *out = NULL;
  char bad[32] = "";
  int rc = lwsi_expand_arg(in, vars, NV, &out, bad, sizeof(bad));
  TAP_OK(rc == err && out == NULL, "expand '%s' fails with %d (got %d)", in, err, rc);
  TAP_STR_EQ(bad, name, "expand '%s' names the placeholder", in);
}

int main(void)
{
  expect("{leader}", "sglang-0.sglang.default");
  expect("--dist-init-addr={leader_ip}:{dist_port}", "--dist-init-addr=10.0.0.7:20000");
  expect("{rank}{size}", "24");
  expect("plain", "plain");
  expect("", "");
  expect("{{rank}}", "{rank}");
  expect("{{leader_ip}}:{rank}", "{leader_ip}:2");
  expect("{{nope}}", "{nope}");
  expect("{\"method\": \"eagle\", \"num_steps\": 3}", "{\"method\": \"eagle\", \"num_steps\": 3}");
  expect("{}", "{}");
  expect("{ rank }", "{ rank }");
  expect("{Rank}", "{Rank}");
  expect("{rank1}", "{rank1}");
  expect("{rank", "{rank");
  expect("rank}", "rank}");
  expect("{{rank}", "{2");
  expect("{rank}}", "2}");
  expect("{{{rank}}}", "{{rank}}");
  expect("{\"a\":{rank}}", "{\"a\":2}");
  expect("${HOME}", "${HOME}");
  /* The host form: a placeholder followed at once by ':' takes the value
   * of the name with ':' appended, when the caller gives one. */
  static const struct lwsi_expand_var v6[] = {{"leader_ip", "fd00::5"}, {"leader_ip:", "[fd00::5]"},
                                              {"dist_port", "20000"}};
  const char *v6_in[] = {"{leader_ip}:{dist_port}", "{leader_ip}", "{leader_ip}.x:1",
                         "{{leader_ip}}:1", "a{leader_ip}:"};
  const char *v6_want[] = {"[fd00::5]:20000", "fd00::5", "fd00::5.x:1", "{leader_ip}:1",
                           "a[fd00::5]:"};
  for (size_t i = 0; i < sizeof(v6_in) / sizeof(v6_in[0]); i++) {
    char *out = NULL;
    TAP_OK(lwsi_expand_arg(v6_in[i], v6, 3, &out, NULL, 0) == 0 && out != NULL &&
               strcmp(out, v6_want[i]) == 0,
           "host form: '%s' is '%s' (%s)", v6_in[i], v6_want[i], out ? out : "?");
    free(out);
  }
  expect("{dist_port}:{leader_ip}:", "20000:10.0.0.7:");
  expect_err("{foo}", -ENOENT, "foo");
  expect_err("x{leader}{nodes_total}", -ENOENT, "nodes_total");
  expect_err("{_}", -ENOENT, "_");

  static const struct lwsi_expand_var novalue[] = {{"dist_port", NULL}};
  char bad[32];
  TAP_OK(lwsi_expand_check("{dist_port}", novalue, 1, bad, sizeof(bad)) == -ENODATA,
         "a known name without a value is -ENODATA");
  TAP_OK(lwsi_expand_check("{{dist_port}}", novalue, 1, bad, sizeof(bad)) == 0,
         "an escaped name needs no value");

  char *argv[] = {"engine-{rank}", "--nnodes", "{size}", "{\"k\": 1}", NULL};
  char **out = NULL;
  int rc = lwsi_expand_argv(argv, vars, NV, &out, bad, sizeof(bad));
  TAP_OK(rc == 0 && out != NULL, "expand a whole argv");
  if (out != NULL) {
    TAP_STR_EQ(out[0], "engine-2", "argv[0] is expanded too");
    TAP_STR_EQ(out[2], "4", "argv[2]");
    TAP_STR_EQ(out[3], "{\"k\": 1}", "JSON argument untouched");
    TAP_OK(out[4] == NULL, "argv stays NULL-terminated");
  }
  lwsi_expand_free(out);
  char *bad_argv[] = {"ok", "{typo}", NULL};
  out = NULL;
  TAP_OK(lwsi_expand_argv(bad_argv, vars, NV, &out, bad, sizeof(bad)) == -ENOENT && out == NULL,
         "an unknown name in any argument fails the whole argv");
  return tap_done();
}
