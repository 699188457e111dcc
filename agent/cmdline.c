/* The engine's command line (include/lwsinit/cmdline.h): COMMAND expanded,
 * the engine row's flags appended, and the launch command every member
 * sends the leader. */
#include "lwsinit/cmdline.h"

#include "lwsinit/config.h"
#include "lwsinit/engine.h"
#include "lwsinit/expand.h"
#include "lwsinit/launchck.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lwsi_cmdline_build(const struct lwsi_config *cfg, const struct lwsi_cmdline_values *v,
                       char ***out, char *bad, size_t badlen)
{
  const struct lwsi_engine *e = lwsi_engine_get(cfg->preset);
  if (e == NULL)
    return -EINVAL;
  char size[16], rank[16], epoch[16], dport[8], dp_size[24], dp_local[16], dp_start[24];
  uint16_t dp;
  bool has_dp = lwsi_config_dist_port(cfg, &dp);
  unsigned local = lwsi_engine_dp_local(e, cfg->dp_local, cfg->argv);
  snprintf(size, sizeof(size), "%u", v->size);
  snprintf(rank, sizeof(rank), "%u", v->rank);
  snprintf(epoch, sizeof(epoch), "%u", v->epoch);
  snprintf(dport, sizeof(dport), "%u", has_dp ? dp : 0);
  snprintf(dp_size, sizeof(dp_size), "%llu", (unsigned long long)local * v->size);
  snprintf(dp_local, sizeof(dp_local), "%u", local);
  snprintf(dp_start, sizeof(dp_start), "%llu", (unsigned long long)local * v->rank);
  /* An IPv6 address before ":PORT" is written in brackets, as every
   * engine's host:port parser needs it (SGLang's --dist-init-addr refuses
   * "Bare IPv6 address without brackets is ambiguous"); alone, as vLLM's
   * --master-addr and --data-parallel-address take it (vLLM brackets it
   * itself, vllm/utils/network_utils.py get_tcp_uri), it stays bare. The
   * same rule holds in COMMAND, so that a user's "{leader_ip}:{dist_port}"
   * means what the preset's does. */
  char bracketed[64];
  const char *host = v->leader_ip;
  if (host != NULL && strchr(host, ':') != NULL && host[0] != '[') {
    snprintf(bracketed, sizeof(bracketed), "[%s]", host);
    host = bracketed;
  }
  const struct lwsi_expand_var user_vars[] = {
    {"leader", v->leader}, {"leader_ip", v->leader_ip}, {"leader_ip:", host},
    {"size", size}, {"rank", rank}, {"dist_port", has_dp ? dport : NULL},
    {"hostfile", v->hostfile}, {"epoch", epoch},
  };
  const struct lwsi_expand_var preset_vars[] = {
    {"leader", v->leader}, {"leader_ip", v->leader_ip}, {"leader_ip:", host},
    {"size", size}, {"rank", rank}, {"dist_port", dport}, {"dp_size", dp_size},
    {"dp_local", dp_local}, {"dp_start", dp_start}, {"epoch", epoch},
  };

  /* The engine's flags on every rank, then its workers' own. */
  const char *const *lists[2] = {e->flags, v->rank > 0 ? e->worker_flags : NULL};
  size_t nextra = 0;
  for (size_t l = 0; l < 2; l++)
    for (size_t i = 0; lists[l] != NULL && lists[l][i] != NULL; i++)
      nextra++;
  char **argv = calloc((size_t)cfg->argc + nextra + 1, sizeof(*argv));
  if (argv == NULL)
    return -ENOMEM;
  size_t o = 0;
  int rc = 0;
  for (int i = 0; i < cfg->argc && rc == 0; i++)
    rc = lwsi_expand_arg(cfg->argv[i], user_vars, sizeof(user_vars) / sizeof(user_vars[0]),
                         &argv[o++], bad, badlen);
  /* A data-parallel size per node already in COMMAND is the user's: the
   * engine must not be told twice. */
  const char *given = NULL;
  if (e->dp_local_flag != NULL)
    lwsi_engine_argv_find(e, cfg->argv, e->dp_local_flag, &given);
  for (size_t l = 0; l < 2; l++) {
    for (size_t i = 0; lists[l] != NULL && lists[l][i] != NULL && rc == 0; i++) {
      if (given != NULL && lwsi_engine_spelling(e->dp_local_flag, lists[l][i])) {
        if (lists[l][i + 1] != NULL)
          i++; /* and its value */
        continue;
      }
      rc = lwsi_expand_arg(lists[l][i], preset_vars, sizeof(preset_vars) / sizeof(preset_vars[0]),
                           &argv[o++], bad, badlen);
    }
  }
  if (rc < 0) {
    lwsi_expand_free(argv);
    return rc;
  }
  *out = argv;
  return 0;
}

int lwsi_cmdline_launch_check(const struct lwsi_config *cfg, struct lwsi_launchck_cmd *out)
{
  memset(out, 0, sizeof(*out));
  const struct lwsi_engine *e = lwsi_engine_get(cfg->preset);
  if (e == NULL)
    return -EINVAL;
  /* COMMAND as written, then the flags the preset appends on every rank
   * (its workers' own flags differ from the leader's by design). */
  size_t n = 0;
  while (e->flags != NULL && e->flags[n] != NULL)
    n++;
  const char **argv = calloc((size_t)cfg->argc + n + 1, sizeof(*argv));
  if (argv == NULL)
    return -ENOMEM;
  size_t o = 0;
  int argc = e->id == LWSI_PRESET_MPI ? 0 : cfg->argc;
  for (int i = 0; i < argc; i++)
    argv[o++] = cfg->argv[i];
  for (size_t i = 0; i < n; i++)
    argv[o++] = e->flags[i];
  int rc = o > LWSI_WIRE_CMD_MAX_TOTAL ? -E2BIG : lwsi_launchck_build(argv, (uint32_t)o, out);
  free(argv);
  return rc;
}
