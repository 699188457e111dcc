/* The agent's lines about an engine that did not start (agent/agent.c):
 * the placeholder that lwsi_cmdline_build names, and what really failed
 * when no process could be created, apart from exec's own errors. */
#include "lwsinit/agent.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"

static char why[512];

static void test_cmdline(void)
{
  lwsi_agent_cmdline_error(why, sizeof(why), -ENOENT, "rnak");
  TAP_STR_EQ(why, "cannot prepare the engine's command line: unknown placeholder {rnak}",
             "an unknown placeholder is named");
  lwsi_agent_cmdline_error(why, sizeof(why), -ENODATA, "dist_port");
  TAP_STR_EQ(why,
             "cannot prepare the engine's command line: the placeholder {dist_port} has no "
             "value here",
             "a placeholder without a value is named");
  lwsi_agent_cmdline_error(why, sizeof(why), -ENOMEM, "");
  TAP_OK(strstr(why, strerror(ENOMEM)) != NULL && strchr(why, '{') == NULL,
         "no placeholder: the error's text: %s", why);
  lwsi_agent_cmdline_error(why, sizeof(why), -ENOMEM, NULL);
  TAP_OK(strstr(why, strerror(ENOMEM)) != NULL, "bad may be NULL");
}

static void test_spawn(void)
{
  int code = lwsi_agent_spawn_error(why, sizeof(why), "vllm", -EAGAIN, false);
  TAP_OK(code == 1, "no process: exit 1");
  TAP_OK(strstr(why, "cannot start the engine 'vllm'") == why &&
             strstr(why, "vfork") != NULL && strstr(why, strerror(EAGAIN)) != NULL &&
             strstr(why, "permission") == NULL,
         "no process: says what failed, not permissions: %s", why);

  code = lwsi_agent_spawn_error(why, sizeof(why), "vllm", -ENOENT, true);
  TAP_OK(code == 127, "not found: 127");
  char want[256];
  snprintf(want, sizeof(want), "cannot run the engine 'vllm': %s (exit 127); check COMMAND and "
           "the PATH", strerror(ENOENT));
  TAP_STR_EQ(why, want, "not found: the PATH");

  code = lwsi_agent_spawn_error(why, sizeof(why), "/engine.sh", -EACCES, true);
  TAP_OK(code == 126, "EACCES: 126");
  snprintf(want, sizeof(want), "cannot run the engine '/engine.sh': %s (exit 126); check "
           "COMMAND and the file's execute permission", strerror(EACCES));
  TAP_STR_EQ(why, want, "EACCES: the execute permission");

  code = lwsi_agent_spawn_error(why, sizeof(why), "/engine", -ENOEXEC, true);
  TAP_OK(code == 126, "ENOEXEC: 126");
  TAP_OK(strstr(why, strerror(ENOEXEC)) != NULL && strstr(why, "permission") == NULL,
         "ENOEXEC: no word of permissions: %s", why);
}

int main(void)
{
  test_cmdline();
  test_spawn();
  return tap_done();
}
