#include "lwsinit/cmdline.h"

#include "lwsinit/crypto.h"
#include "lwsinit/expand.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each preset's flags, in the engines' own spelling. {name} placeholders
 * are expanded like COMMAND's; DP_* entries are computed below. */
static const char *const sglang_flags[] = {
  "--dist-init-addr", "{leader_ip}:{dist_port}", "--nnodes", "{size}", "--node-rank", "{rank}",
  NULL};
static const char *const vllm_flags[] = {
  "--nnodes", "{size}", "--node-rank", "{rank}", "--master-addr", "{leader_ip}",
  "--master-port", "{dist_port}", NULL};
static const char *const vllm_dp_flags[] = {
  "--data-parallel-size", "{dp_size}", "--data-parallel-size-local", "{dp_local}",
  "--data-parallel-start-rank", "{dp_start}", "--data-parallel-address", "{leader_ip}",
  "--data-parallel-rpc-port", "{dist_port}", "--data-parallel-hybrid-lb", NULL};

static const char *const *preset_flags(enum lwsi_preset p)
{
  switch (p) {
  case LWSI_PRESET_SGLANG:
    return sglang_flags;
  case LWSI_PRESET_VLLM:
    return vllm_flags;
  case LWSI_PRESET_VLLM_DP:
    return vllm_dp_flags;
  case LWSI_PRESET_NONE:
    break;
  }
  return NULL;
}

/* Finds "--flag N" or "--flag=N" in COMMAND. */
static const char *find_flag_value(const struct lwsi_config *cfg, const char *flag)
{
  size_t fl = strlen(flag);
  for (int i = 0; i < cfg->argc; i++) {
    const char *a = cfg->argv[i];
    if (strcmp(a, flag) == 0 && i + 1 < cfg->argc)
      return cfg->argv[i + 1];
    if (strncmp(a, flag, fl) == 0 && a[fl] == '=')
      return a + fl + 1;
  }
  return NULL;
}

unsigned lwsi_cmdline_dp_local(const struct lwsi_config *cfg)
{
  if (cfg->dp_local > 0)
    return cfg->dp_local;
  const char *v = find_flag_value(cfg, "--data-parallel-size-local");
  if (v == NULL || *v == '\0')
    return 0;
  char *end;
  unsigned long n = strtoul(v, &end, 10);
  return (*end == '\0' && n > 0 && n <= 4096) ? (unsigned)n : 0;
}

int lwsi_cmdline_build(const struct lwsi_config *cfg, const struct lwsi_cmdline_values *v,
                       char ***out, char *bad, size_t badlen)
{
  char size[16], rank[16], dport[8], dp_size[24], dp_local[16], dp_start[24];
  uint16_t dp;
  bool has_dp = lwsi_config_dist_port(cfg, &dp);
  unsigned local = lwsi_cmdline_dp_local(cfg);
  snprintf(size, sizeof(size), "%u", v->size);
  snprintf(rank, sizeof(rank), "%u", v->rank);
  snprintf(dport, sizeof(dport), "%u", has_dp ? dp : 0);
  snprintf(dp_size, sizeof(dp_size), "%llu", (unsigned long long)local * v->size);
  snprintf(dp_local, sizeof(dp_local), "%u", local);
  snprintf(dp_start, sizeof(dp_start), "%llu", (unsigned long long)local * v->rank);
  const struct lwsi_expand_var user_vars[] = {
    {"leader", v->leader}, {"leader_ip", v->leader_ip}, {"size", size},
    {"rank", rank}, {"dist_port", has_dp ? dport : NULL},
  };
  const struct lwsi_expand_var preset_vars[] = {
    {"leader", v->leader}, {"leader_ip", v->leader_ip}, {"size", size}, {"rank", rank},
    {"dist_port", dport}, {"dp_size", dp_size}, {"dp_local", dp_local}, {"dp_start", dp_start},
  };

  const char *const *extra = preset_flags(cfg->preset);
  size_t nextra = 0;
  while (extra != NULL && extra[nextra] != NULL)
    nextra++;
  char **argv = calloc((size_t)cfg->argc + nextra + 2, sizeof(*argv));
  if (argv == NULL)
    return -ENOMEM;
  size_t o = 0;
  int rc = 0;
  for (int i = 0; i < cfg->argc && rc == 0; i++)
    rc = lwsi_expand_arg(cfg->argv[i], user_vars, sizeof(user_vars) / sizeof(user_vars[0]),
                         &argv[o++], bad, badlen);
  bool have_local = find_flag_value(cfg, "--data-parallel-size-local") != NULL;
  for (size_t i = 0; i < nextra && rc == 0; i++) {
    /* A --data-parallel-size-local already in COMMAND is the user's; do not
     * say it twice. */
    if (have_local && strcmp(extra[i], "--data-parallel-size-local") == 0) {
      i++;
      continue;
    }
    rc = lwsi_expand_arg(extra[i], preset_vars, sizeof(preset_vars) / sizeof(preset_vars[0]),
                         &argv[o++], bad, badlen);
  }
  /* vLLM's workers run without an API server (vLLM docs, multi-node
   * serving: `--headless` on every node but the first). */
  if (rc == 0 && cfg->preset == LWSI_PRESET_VLLM && v->rank > 0) {
    argv[o] = strdup("--headless");
    rc = argv[o++] == NULL ? -ENOMEM : 0;
  }
  if (rc < 0) {
    lwsi_expand_free(argv);
    return rc;
  }
  *out = argv;
  return 0;
}

/* An argument that could spell a rank, alone or after '=': a number from 0
 * to size-1. Kubernetes expands $(LWS_WORKER_INDEX) into such arguments,
 * different on every rank; leaving out every such number (not only this
 * pod's own rank) keeps the digest the same on all ranks for the same
 * template. */
static bool is_rank_arg(const char *a, unsigned size)
{
  const char *eq = strrchr(a, '=');
  const char *v = eq != NULL ? eq + 1 : a;
  if (*v == '\0' || strlen(v) > 6 || (v[0] == '0' && v[1] != '\0'))
    return false;
  for (const char *p = v; *p != '\0'; p++)
    if (*p < '0' || *p > '9')
      return false;
  return (unsigned)atoi(v) < size;
}

int lwsi_cmdline_digest(const struct lwsi_config *cfg, uint8_t out[32])
{
  uint16_t dp = 0;
  bool has_dp = lwsi_config_dist_port(cfg, &dp);
  /* The input in one buffer, each argument length-prefixed so that
   * ["ab","c"] and ["a","bc"] differ. */
  size_t cap = 64;
  for (int i = 0; i < cfg->argc; i++)
    cap += strlen(cfg->argv[i]) + 24;
  char *buf = malloc(cap);
  if (buf == NULL)
    return -ENOMEM;
  size_t n = (size_t)snprintf(buf, cap, "lwsinit-cmd-v1\n%s\n%u\n",
                              lwsi_config_preset_name(cfg->preset), has_dp ? dp : 0);
  for (int i = 0; i < cfg->argc; i++) {
    const char *a = is_rank_arg(cfg->argv[i], cfg->size) ? "{rank}" : cfg->argv[i];
    n += (size_t)snprintf(buf + n, cap - n, "%zu:%s", strlen(a), a);
  }
  int rc = lwsi_crypto_sha256(buf, n, out);
  free(buf);
  return rc;
}
