/* Strict, table-driven configuration (contract, "Command line").
 *
 * Every option has one row below. For each option the winning source is
 * found first (flag, then its LWSINIT_* twin, then an LWS_* variable, then
 * the default), and only that text is parsed: a value that is overridden is
 * never looked at, so a stale LWS_* variable cannot fail a run that sets the
 * flag. Errors name the source as the user wrote it. */
#include "lwsinit/config.h"

#include "lwsinit/engine.h"
#include "lwsinit/expand.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lwsinit_build.h"

enum opt_type {
  T_PORT,     /* 1..65535 */
  T_UINT,     /* integer in [min, max] */
  T_MS,       /* integer milliseconds in [min, max] */
  T_SEC,      /* seconds with up to 3 decimals, stored as ms, in [min, max] ms */
  T_GBPS,     /* non-negative decimal */
  T_ENUM,
  T_PRESET,   /* a name of the engine table (engine.h) */
  T_STR,      /* free text up to the field's size */
  T_HOSTPORT, /* IP:PORT or [IPv6]:PORT */
  T_DNSSERVER /* IP[:PORT] or [IPv6][:PORT] */
};

struct opt {
  const char *name; /* the flag without "--" */
  const char *meta; /* NULL: T_PRESET, the engine names */
  enum opt_type type;
  size_t off;
  size_t size; /* T_STR: the field's size */
  uint64_t min, max;
  const char *const *choices;
  const char *def; /* NULL: no default (unset) */
  const char *lws_env;
  const char *help;
};

#define F(field) offsetof(struct lwsi_config, field), sizeof(((struct lwsi_config *)0)->field)

static const char *const peer_loss_choices[] = {"exit", "stay", NULL};
static const char *const readiness_choices[] = {"serving", "group", "listening", NULL};
static const char *const gpu_check_choices[] = {"none", "cuda", "nccl", NULL};
static const char *const log_format_choices[] = {"text", "json", NULL};
static const char *const node_check_choices[] = {"off", "warn", "fail", NULL};
static const char *const network_env_choices[] = {"auto", "off", NULL};
static const char *const log_level_choices[] = {"debug", "info", "warn", "error", NULL};
/* In the order of enum lwsi_launchck_mode. */
static const char *const launch_check_choices[] = {"warn", "strict", "off", NULL};
static const char *const on_failure_choices[] = {"exit", "restart", NULL};

enum {
  O_LEADER, O_SIZE, O_RANK, O_RDZV_PORT, O_PROBE_ADDR, O_STATUS_SOCKET, O_DNS_SERVER,
  O_DNS_TIMEOUT, O_RDZV_TIMEOUT, O_HEARTBEAT, O_PEER_TIMEOUT, O_ON_PEER_LOSS, O_PRESET,
  O_DIST_PORT, O_DP_LOCAL, O_UPSTREAM, O_UPSTREAM_INTERVAL, O_UPSTREAM_TIMEOUT, O_READINESS,
  O_GRACE, O_DRAIN_DELAY, O_GPU_CHECK, O_GPUS, O_GPU_CHECK_TIMEOUT, O_GPU_CHECK_BYTES,
  O_GPU_MIN_BUSBW, O_NODE_CHECK, O_NETWORK_ENV, O_TOKEN_FILE, O_REVISION, O_TERMINATION_LOG,
  O_LOG_FORMAT, O_LOG_LEVEL, O_LAUNCH_CHECK, O_HANG_TIMEOUT, O_ON_FAILURE, O_FAIL_DELAY,
  O_PHASE_TIMEOUT, O_MAX_RESTARTS, O_RESTART_WINDOW, O_REJOIN_TIMEOUT, O_GPU_FREE_TIMEOUT,
  O_COUNT
};

#define MAX_SIZE 65536
#define DAY_MS (86400ull * 1000)

static const struct opt opts[O_COUNT] = {
  [O_LEADER] = {"leader", "ADDR", T_STR, F(leader), 0, 0, NULL, NULL, "LWS_LEADER_ADDRESS",
                "the leader's address (DNS name or IP literal)"},
  [O_SIZE] = {"size", "N", T_UINT, F(size), 1, MAX_SIZE, NULL, NULL, "LWS_GROUP_SIZE",
              "pods in the group, leader included"},
  [O_RANK] = {"rank", "I", T_UINT, F(rank), 0, MAX_SIZE - 1, NULL, NULL, "LWS_WORKER_INDEX",
              "this pod's index: 0 for the leader"},
  [O_RDZV_PORT] = {"rdzv-port", "PORT", T_PORT, F(rdzv_port), 1, 65535, NULL, "7470", NULL,
                   "the agents' rendezvous port on the leader"},
  [O_PROBE_ADDR] = {"probe-addr", "HOST:PORT", T_HOSTPORT, F(probe_addr), 0, 0, NULL,
                    "0.0.0.0:7471", NULL, "where the HTTP endpoints listen"},
  [O_STATUS_SOCKET] = {"status-socket", "PATH", T_STR, F(status_socket), 0, 0, NULL,
                       "/run/lwsinit/status.sock", NULL, "Unix socket for 'lwsinit status'"},
  [O_DNS_SERVER] = {"dns-server", "HOST[:PORT]", T_DNSSERVER, F(dns_server), 0, 0, NULL, NULL,
                    NULL, "ask this server instead of resolv.conf's"},
  [O_DNS_TIMEOUT] = {"dns-timeout", "SEC", T_SEC, F(dns_timeout_ms), 1, DAY_MS, NULL, "600",
                     NULL, "give up resolving the leader after this long"},
  [O_RDZV_TIMEOUT] = {"rdzv-timeout", "SEC", T_SEC, F(rdzv_timeout_ms), 1, DAY_MS, NULL, "900",
                      NULL, "give up waiting for the whole group after this long"},
  [O_HEARTBEAT] = {"heartbeat", "MS", T_MS, F(heartbeat_ms), 10, 60000, NULL, "1000", NULL,
                   "heartbeat period"},
  [O_PEER_TIMEOUT] = {"peer-timeout", "MS", T_MS, F(peer_timeout_ms), 20, 3600000, NULL,
                      "10000", NULL, "silence after which a member counts as lost"},
  [O_ON_PEER_LOSS] = {"on-peer-loss", "exit|stay", T_ENUM, F(on_peer_loss), 0, 0,
                      peer_loss_choices, "exit", NULL, "what a lost member does to the group"},
  [O_PRESET] = {"preset", NULL, T_PRESET, F(preset), 0, 0, NULL, "none", NULL,
                "append the engine's multi-node flags to COMMAND"},
  [O_DIST_PORT] = {"dist-port", "PORT", T_PORT, F(dist_port), 1, 65535, NULL, NULL, NULL,
                   "the engine's init port on the leader (default: the preset's)"},
  [O_DP_LOCAL] = {"dp-local", "N", T_UINT, F(dp_local), 1, 4096, NULL, NULL, NULL,
                  "vllm-dp: data-parallel ranks on each node"},
  [O_UPSTREAM] = {"upstream", "URL|none", T_STR, F(upstream), 0, 0, NULL, NULL, NULL,
                  "the local server's health URL (default: the preset's)"},
  [O_UPSTREAM_INTERVAL] = {"upstream-interval", "MS", T_MS, F(upstream_interval_ms), 10,
                           3600000, NULL, "2000", NULL, "how often the upstream is polled"},
  [O_UPSTREAM_TIMEOUT] = {"upstream-timeout", "MS", T_MS, F(upstream_timeout_ms), 10, 3600000,
                          NULL, "5000", NULL, "how long one poll may take"},
  [O_READINESS] = {"readiness", "serving|group|listening", T_ENUM, F(readiness), 0, 0,
                   readiness_choices, "serving", NULL, "what the leader's /readyz waits for"},
  [O_GRACE] = {"grace", "SEC", T_SEC, F(grace_ms), 0, DAY_MS, NULL, "30", NULL,
               "after forwarding SIGTERM, how long before SIGKILL"},
  [O_DRAIN_DELAY] = {"drain-delay", "SEC", T_SEC, F(drain_delay_ms), 0, DAY_MS, NULL, "0", NULL,
                     "on SIGTERM, report unready this long first"},
  [O_GPU_CHECK] = {"gpu-check", "none|cuda|nccl", T_ENUM, F(gpu_check), 0, 0, gpu_check_choices,
                   "none", NULL, "check GPUs (and NCCL) before launch"},
  [O_GPUS] = {"gpus", "N", T_UINT, F(gpus), 0, 1024, NULL, "0", NULL,
              "GPUs expected on each node (0: all visible)"},
  [O_GPU_CHECK_TIMEOUT] = {"gpu-check-timeout", "SEC", T_SEC, F(gpu_check_timeout_ms), 1,
                           DAY_MS, NULL, "120", NULL, "the check's deadline"},
  [O_GPU_CHECK_BYTES] = {"gpu-check-bytes", "N", T_UINT, F(gpu_check_bytes), 4,
                         1ull << 40, NULL, "67108864", NULL, "all-reduce size in bytes"},
  [O_GPU_MIN_BUSBW] = {"gpu-min-busbw", "GBPS", T_GBPS, F(gpu_min_busbw), 0, 0, NULL, "0", NULL,
                       "fail below this all-reduce bus bandwidth (0: no floor)"},
  [O_NODE_CHECK] = {"node-check", "off|warn|fail", T_ENUM, F(node_check), 0, 0,
                    node_check_choices, "fail", NULL,
                    "check /dev/shm, GPU and RDMA devices, memlock before joining"},
  [O_NETWORK_ENV] = {"network-env", "auto|off", T_ENUM, F(network_env), 0, 0,
                     network_env_choices, "auto", NULL,
                     "set NCCL's interface and RDMA variables the user left unset"},
  [O_TOKEN_FILE] = {"token-file", "PATH", T_STR, F(token_file), 0, 0, NULL, NULL, NULL,
                    "shared secret; members without it cannot join"},
  [O_REVISION] = {"revision", "STR", T_STR, F(revision), 0, 0, NULL, NULL, NULL,
                  "the template revision; other revisions cannot join"},
  [O_TERMINATION_LOG] = {"termination-log", "PATH", T_STR, F(termination_log), 0, 0, NULL,
                         "/dev/termination-log", NULL,
                         "where a failure's reason is written (if it exists, or is given)"},
  [O_LOG_FORMAT] = {"log-format", "text|json", T_ENUM, F(log_format), 0, 0, log_format_choices,
                    "text", NULL, "log format on stderr"},
  [O_LOG_LEVEL] = {"log-level", "debug|info|warn|error", T_ENUM, F(log_level), 0, 0,
                   log_level_choices, "info", NULL, "lowest level logged"},
  [O_LAUNCH_CHECK] = {"launch-check", "warn|strict|off", T_ENUM, F(launch_check), 0, 0,
                      launch_check_choices, "warn", NULL,
                      "launch commands that differ: warn, refuse the group, ignore"},
  [O_HANG_TIMEOUT] = {"hang-timeout", "SEC", T_SEC, F(hang_timeout_ms), 0, DAY_MS, NULL, "0",
                      NULL, "an engine healthy once, then failing every poll this long, hung "
                      "(0: never)"},
  [O_ON_FAILURE] = {"on-failure", "exit|restart", T_ENUM, F(on_failure), 0, 0,
                    on_failure_choices, "exit", NULL, "what an engine failure does to the group"},
  [O_FAIL_DELAY] = {"fail-delay", "SEC", T_SEC, F(fail_delay_ms), 0, DAY_MS, NULL, "0", NULL,
                    "before exiting 3, 4, 5 or 7, stay up unready this long"},
  [O_PHASE_TIMEOUT] = {"phase-timeout", "SEC", T_SEC, F(phase_timeout_ms), 1, DAY_MS, NULL,
                       "300", NULL,
                       "vllm-ray, sglang-ray: how long each launch phase may take (exit 4)"},
  [O_MAX_RESTARTS] = {"max-restarts", "N", T_UINT, F(max_restarts), 0, 1000000, NULL, "3", NULL,
                      "restart: at most N group restarts within --restart-window"},
  [O_RESTART_WINDOW] = {"restart-window", "SEC", T_SEC, F(restart_window_ms), 1, DAY_MS, NULL,
                        "600", NULL, "restart: the window --max-restarts counts in"},
  [O_REJOIN_TIMEOUT] = {"rejoin-timeout", "SEC", T_SEC, F(rejoin_timeout_ms), 1, DAY_MS, NULL,
                        "120", NULL, "restart: how long to wait for a lost member's replacement"},
  [O_GPU_FREE_TIMEOUT] = {"gpu-free-timeout", "SEC", T_SEC, F(gpu_free_timeout_ms), 1, DAY_MS,
                          NULL, "60", NULL,
                          "restart: how long to wait for the GPUs to be free of the old engine"},
};

/* Where an option's winning text came from. */
struct source {
  const char *text;
  char label[64]; /* "--size", "LWSINIT_SIZE" or "LWS_GROUP_SIZE" */
  bool set;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(err, errlen, "lwsinit: ");
  if (n > 0 && (size_t)n < errlen)
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
  va_end(ap);
  /* The message is one line whatever the user's value held. */
  for (char *p = err; *p != '\0'; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  return -EINVAL;
}

static void env_name(const char *opt, char *buf, size_t len)
{
  size_t o = (size_t)snprintf(buf, len, "LWSINIT_");
  for (; *opt != '\0' && o + 1 < len; opt++)
    buf[o++] = (*opt == '-') ? '_' : (char)toupper((unsigned char)*opt);
  buf[o] = '\0';
}

static const char *env_get(char **envp, const char *name)
{
  size_t len = strlen(name);
  for (char **e = envp; e != NULL && *e != NULL; e++)
    if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
      return *e + len + 1;
  return NULL;
}

/* Parses a decimal integer made of digits only: no sign, no spaces, no
 * exponent, no base prefix. */
static int parse_digits(const char *s, uint64_t *out)
{
  if (*s == '\0')
    return -EINVAL;
  uint64_t v = 0;
  for (; *s != '\0'; s++) {
    if (*s < '0' || *s > '9')
      return -EINVAL;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -ERANGE;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* Parses "N" or "N.fff" (at most `scale` decimals) into N * 10^scale. */
static int parse_fixed(const char *s, unsigned scale, uint64_t *out)
{
  char ipart[32];
  const char *dot = strchr(s, '.');
  size_t ilen = dot ? (size_t)(dot - s) : strlen(s);
  if (ilen == 0 || ilen >= sizeof(ipart))
    return ilen == 0 ? -EINVAL : -ERANGE;
  memcpy(ipart, s, ilen);
  ipart[ilen] = '\0';
  uint64_t v;
  int rc = parse_digits(ipart, &v);
  if (rc < 0)
    return rc;
  uint64_t frac = 0;
  unsigned fdigits = 0;
  if (dot != NULL) {
    const char *f = dot + 1;
    if (*f == '\0')
      return -EINVAL;
    for (; *f != '\0'; f++) {
      if (*f < '0' || *f > '9' || fdigits == scale)
        return -EINVAL;
      frac = frac * 10 + (uint64_t)(*f - '0');
      fdigits++;
    }
  }
  for (; fdigits < scale; fdigits++)
    frac *= 10;
  uint64_t mul = 1;
  for (unsigned i = 0; i < scale; i++)
    mul *= 10;
  if (v > (UINT64_MAX - frac) / mul)
    return -ERANGE;
  *out = v * mul + frac;
  return 0;
}

static int parse_ip_port(const char *s, bool port_optional, uint16_t def_port,
                         struct lwsi_hostport *hp)
{
  char host[256];
  const char *port = NULL;
  if (s[0] == '[') {
    const char *end = strchr(s, ']');
    if (end == NULL || (size_t)(end - s - 1) >= sizeof(host))
      return -EINVAL;
    memcpy(host, s + 1, (size_t)(end - s - 1));
    host[end - s - 1] = '\0';
    if (end[1] == ':')
      port = end + 2;
    else if (end[1] != '\0')
      return -EINVAL;
    unsigned char buf[16];
    if (inet_pton(AF_INET6, host, buf) != 1)
      return -EINVAL;
  } else {
    const char *colon = strrchr(s, ':');
    size_t hlen = colon ? (size_t)(colon - s) : strlen(s);
    if (hlen >= sizeof(host))
      return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (colon != NULL)
      port = colon + 1;
    unsigned char buf[16];
    if (inet_pton(AF_INET, host, buf) != 1)
      return -EINVAL;
  }
  uint64_t p = def_port;
  if (port == NULL) {
    if (!port_optional)
      return -EINVAL;
  } else if (parse_digits(port, &p) < 0 || p < 1 || p > 65535) {
    return -EINVAL;
  }
  snprintf(hp->host, sizeof(hp->host), "%s", host);
  hp->port = (uint16_t)p;
  return 0;
}

static void choices_text(const char *const *choices, char *buf, size_t len)
{
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; choices[i] != NULL && o < len; i++)
    o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", choices[i]);
}

/* The engine names, in table order, joined by sep; only those with a
 * data-parallel rule when dp_only. */
static void preset_names(const char *sep, bool dp_only, char *buf, size_t len)
{
  size_t o = 0;
  buf[0] = '\0';
  for (int i = 0; i < LWSI_PRESET_COUNT && o < len; i++) {
    const struct lwsi_engine *e = lwsi_engine_get((enum lwsi_preset)i);
    if (!dp_only || e->dp_local_flag != NULL)
      o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? sep : "", e->name);
  }
}

static int apply_opt(struct lwsi_config *cfg, const struct opt *o, const struct source *src,
                     char *err, size_t errlen)
{
  char *field = (char *)cfg + o->off;
  const char *v = src->text;
  const char *who = src->label;
  uint64_t n;
  int rc;

  switch (o->type) {
  case T_PORT:
  case T_UINT:
  case T_MS:
    rc = parse_digits(v, &n);
    if (rc < 0 || n < o->min || n > o->max) {
      const char *what = o->type == T_MS ? " (milliseconds)" : "";
      return fail(err, errlen, "%s: '%s' is not valid: expected an integer from %llu to %llu%s",
                  who, v, (unsigned long long)o->min, (unsigned long long)o->max, what);
    }
    if (o->size == sizeof(uint16_t))
      *(uint16_t *)(void *)field = (uint16_t)n;
    else if (o->size == sizeof(uint32_t))
      *(uint32_t *)(void *)field = (uint32_t)n;
    else
      *(uint64_t *)(void *)field = n;
    return 0;
  case T_SEC:
    rc = parse_fixed(v, 3, &n);
    if (rc < 0 || n < o->min || n > o->max)
      return fail(err, errlen,
                  "%s: '%s' is not valid: expected seconds from %g to %llu (at most 3 decimals)",
                  who, v, (double)o->min / 1000.0, (unsigned long long)(o->max / 1000));
    *(uint64_t *)(void *)field = n;
    return 0;
  case T_GBPS:
    rc = parse_fixed(v, 3, &n);
    if (rc < 0 || n > 100000000ull)
      return fail(err, errlen,
                  "%s: '%s' is not valid: expected a non-negative decimal number of GB/s", who, v);
    *(double *)(void *)field = (double)n / 1000.0;
    return 0;
  case T_ENUM:
    for (size_t i = 0; o->choices[i] != NULL; i++) {
      if (strcmp(o->choices[i], v) == 0) {
        *(int *)(void *)field = (int)i;
        return 0;
      }
    }
    {
      char list[128];
      choices_text(o->choices, list, sizeof(list));
      return fail(err, errlen, "%s: '%s' is not valid: expected one of %s", who, v, list);
    }
  case T_PRESET: {
    const struct lwsi_engine *e = lwsi_engine_find(v);
    if (e != NULL) {
      *(enum lwsi_preset *)(void *)field = e->id;
      return 0;
    }
    char list[128];
    preset_names(", ", false, list, sizeof(list));
    return fail(err, errlen, "%s: '%s' is not valid: expected one of %s", who, v, list);
  }
  case T_STR:
    if (v[0] == '\0')
      return fail(err, errlen, "%s: the value is empty", who);
    if (strlen(v) >= o->size)
      return fail(err, errlen, "%s: the value is too long (at most %zu characters)", who,
                  o->size - 1);
    memcpy(field, v, strlen(v) + 1);
    return 0;
  case T_HOSTPORT:
  case T_DNSSERVER: {
    /* A DNS server's port is optional: 53, the DNS port. */
    bool dns = o->type == T_DNSSERVER;
    if (parse_ip_port(v, dns, dns ? 53 : 0, (struct lwsi_hostport *)(void *)field) < 0)
      return fail(err, errlen, "%s: '%s' is not valid: expected %s", who, v,
                  dns ? "IP[:PORT], e.g. 10.96.0.10 or 127.0.0.1:5353"
                      : "IP:PORT, e.g. 0.0.0.0:7471 or [::]:7471");
    return 0;
  }
  }
  return -EINVAL;
}

static int read_token(struct lwsi_config *cfg, const char *label, char *err, size_t errlen)
{
  int fd;
  do
    fd = open(cfg->token_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return fail(err, errlen, "%s: cannot open '%s': %s", label, cfg->token_file,
                strerror(errno));
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, cfg->token + len, sizeof(cfg->token) - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return fail(err, errlen, "%s: cannot read '%s': %s", label, cfg->token_file, strerror(e));
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len == sizeof(cfg->token)) {
      close(fd);
      return fail(err, errlen, "%s: '%s' is larger than %d bytes", label, cfg->token_file,
                  LWSI_TOKEN_MAX - 1);
    }
  }
  close(fd);
  cfg->token_len = len;
  return 0;
}

/* Trailing whitespace (a newline left by an editor or `echo`) is not part of
 * the secret (contract, "Membership"). */
static int strip_token(struct lwsi_config *cfg, const char *label, char *err, size_t errlen)
{
  while (cfg->token_len > 0 && isspace((unsigned char)cfg->token[cfg->token_len - 1]))
    cfg->token_len--;
  cfg->token[cfg->token_len] = '\0';
  if (cfg->token_len == 0)
    return fail(err, errlen, "%s: the token is empty", label);
  return 0;
}

const char *lwsi_config_gpu_check_name(enum lwsi_gpu_check mode)
{
  /* The parse table is the one list of the names, so that what --gpu-check
   * accepts and what the agent and the status report say cannot drift
   * apart; its last entry is the NULL that ends it. */
  size_t n = sizeof(gpu_check_choices) / sizeof(gpu_check_choices[0]) - 1;
  if ((size_t)mode >= n)
    return "?";
  return gpu_check_choices[mode];
}

const char *lwsi_config_node_check_name(enum lwsi_node_check mode)
{
  size_t n = sizeof(node_check_choices) / sizeof(node_check_choices[0]) - 1;
  return (size_t)mode < n ? node_check_choices[mode] : "?";
}

const char *lwsi_config_network_env_name(enum lwsi_network_env mode)
{
  size_t n = sizeof(network_env_choices) / sizeof(network_env_choices[0]) - 1;
  return (size_t)mode < n ? network_env_choices[mode] : "?";
}

bool lwsi_config_dist_port(const struct lwsi_config *cfg, uint16_t *port)
{
  if (cfg->has_dist_port) {
    *port = cfg->dist_port;
    return true;
  }
  const struct lwsi_engine *e = lwsi_engine_get(cfg->preset);
  if (e == NULL || e->dist_port == 0)
    return false;
  *port = e->dist_port;
  return true;
}

void lwsi_config_usage(int fd)
{
  dprintf(fd,
          "Usage: lwsinit [OPTIONS] [--] COMMAND [ARG...]\n"
          "       lwsinit status [--socket PATH] [--json]\n"
          "       lwsinit probe live|ready [--addr HOST:PORT]\n"
          "       lwsinit rsh [-l USER] HOST COMMAND [ARG...]   (--preset mpi: run on a member)\n"
          "       lwsinit --help | --version\n\n"
          "Init and group agent for LeaderWorkerSet pods. Every option also reads\n"
          "LWSINIT_<OPTION> from the environment; a flag wins over its variable.\n\n"
          "Options:\n");
  for (size_t i = 0; i < O_COUNT; i++) {
    const struct opt *o = &opts[i];
    char flag[80], env[64], names[64];
    if (o->meta == NULL)
      preset_names("|", false, names, sizeof(names));
    snprintf(flag, sizeof(flag), "--%s %s", o->name, o->meta != NULL ? o->meta : names);
    env_name(o->name, env, sizeof(env));
    /* A flag wider than its column gets its help on a line of its own, as
     * argparse does, so that the columns stay apart for readers and tools. */
    if (strlen(flag) > 36)
      dprintf(fd, "  %s\n  %-36s %s\n", flag, "", o->help);
    else
      dprintf(fd, "  %-36s %s\n", flag, o->help);
    dprintf(fd, "  %-36s env %s%s%s; default: %s\n", "", env, o->lws_env ? ", " : "",
            o->lws_env ? o->lws_env : "", o->def ? o->def : "unset");
  }
  dprintf(fd, "  %-36s %s\n", "-h, --help", "print this help and exit");
  dprintf(fd, "  %-36s %s\n", "--version", "print the version and exit");
  dprintf(fd,
          "\nPlaceholders in COMMAND: {leader} {leader_ip} {size} {rank} {dist_port} {epoch};\n"
          "{{name}} is a literal {name}. Exit codes: the child's; 2 usage; 3 DNS;\n"
          "4 rendezvous; 5 GPU check; 6 member lost or engine failed elsewhere;\n"
          "7 engine hung; 126/127 COMMAND not runnable.\n");
}

static int parse_subcommand_status(struct lwsi_config *cfg, int argc, char **argv, char *err,
                                   size_t errlen)
{
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--json") == 0) {
      cfg->status_json = true;
    } else if (strcmp(a, "--socket") == 0 || strncmp(a, "--socket=", 9) == 0) {
      const char *v = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
      if (v == NULL)
        return fail(err, errlen, "--socket: a value is needed");
      if (v[0] == '\0' || strlen(v) >= sizeof(cfg->status_socket))
        return fail(err, errlen, "--socket: '%s' is not a valid socket path", v);
      snprintf(cfg->status_socket, sizeof(cfg->status_socket), "%s", v);
    } else {
      return fail(err, errlen, "status: unknown argument '%s' (expected --socket PATH, --json)", a);
    }
  }
  return 0;
}

static int parse_subcommand_probe(struct lwsi_config *cfg, int argc, char **argv, char *err,
                                  size_t errlen)
{
  bool have_kind = false;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "live") == 0 || strcmp(a, "ready") == 0) {
      if (have_kind)
        return fail(err, errlen, "probe: '%s': live or ready was already given", a);
      have_kind = true;
      cfg->probe_ready = a[0] == 'r';
    } else if (strcmp(a, "--addr") == 0 || strncmp(a, "--addr=", 7) == 0) {
      const char *v = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
      if (v == NULL)
        return fail(err, errlen, "--addr: a value is needed");
      if (parse_ip_port(v, false, 0, &cfg->probe_addr) < 0)
        return fail(err, errlen, "--addr: '%s' is not valid: expected IP:PORT", v);
    } else {
      return fail(err, errlen, "probe: unknown argument '%s' (expected live|ready [--addr HOST:PORT])", a);
    }
  }
  if (!have_kind)
    return fail(err, errlen, "probe: expected 'live' or 'ready'");
  /* The listener's wildcard address is reached through loopback. */
  if (strcmp(cfg->probe_addr.host, "0.0.0.0") == 0)
    snprintf(cfg->probe_addr.host, sizeof(cfg->probe_addr.host), "127.0.0.1");
  else if (strcmp(cfg->probe_addr.host, "::") == 0)
    snprintf(cfg->probe_addr.host, sizeof(cfg->probe_addr.host), "::1");
  return 0;
}

/* Finds the source of every option: default, LWS_*, LWSINIT_*, flag.
 * Returns the index of COMMAND in argv, or a negative errno. */
static int collect_sources(struct source *src, int argc, char **argv, char **envp, int first,
                           enum lwsi_mode *mode, char *err, size_t errlen)
{
  for (size_t i = 0; i < O_COUNT; i++) {
    const struct opt *o = &opts[i];
    char env[64];
    const char *v;
    src[i].set = false;
    if (o->def != NULL) {
      src[i].text = o->def;
      snprintf(src[i].label, sizeof(src[i].label), "--%s (default)", o->name);
    }
    if (o->lws_env != NULL && (v = env_get(envp, o->lws_env)) != NULL) {
      src[i].text = v;
      src[i].set = true;
      snprintf(src[i].label, sizeof(src[i].label), "%s", o->lws_env);
    }
    env_name(o->name, env, sizeof(env));
    if ((v = env_get(envp, env)) != NULL) {
      src[i].text = v;
      src[i].set = true;
      snprintf(src[i].label, sizeof(src[i].label), "%s", env);
    }
  }

  int i = first;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0)
      return i + 1;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      *mode = LWSI_MODE_HELP;
      return i;
    }
    if (strcmp(a, "--version") == 0) {
      *mode = LWSI_MODE_VERSION;
      return i;
    }
    if (a[0] != '-' || a[1] == '\0')
      return i;
    if (a[1] != '-')
      return fail(err, errlen, "unknown option '%s' (see --help)", a);
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    size_t k;
    for (k = 0; k < O_COUNT; k++)
      if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0)
        break;
    if (k == O_COUNT)
      return fail(err, errlen, "unknown option '%.*s' (see --help)", (int)(nlen + 2), a);
    const char *v;
    if (eq != NULL) {
      v = eq + 1;
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      return fail(err, errlen, "--%s: a value is needed (%s)", opts[k].name, opts[k].meta);
    }
    src[k].text = v;
    src[k].set = true;
    snprintf(src[k].label, sizeof(src[k].label), "--%s", opts[k].name);
  }
  return i;
}

static int check_group(struct lwsi_config *cfg, const struct source *src, char *err,
                       size_t errlen)
{
  const int g[3] = {O_LEADER, O_SIZE, O_RANK};
  int nset = 0;
  for (int i = 0; i < 3; i++)
    nset += src[g[i]].set;
  if (nset == 0) {
    cfg->standalone = true;
    cfg->size = 1;
    cfg->rank = 0;
    snprintf(cfg->leader, sizeof(cfg->leader), "127.0.0.1");
    return 0;
  }
  if (nset < 3) {
    char missing[160] = "";
    size_t o = 0;
    for (int i = 0; i < 3; i++)
      if (!src[g[i]].set)
        o += (size_t)snprintf(missing + o, sizeof(missing) - o, "%s%s (or --%s)",
                              o ? " and " : "", opts[g[i]].lws_env, opts[g[i]].name);
    return fail(err, errlen, "the group is only partly configured: %s not set", missing);
  }
  cfg->standalone = false;
  if (cfg->rank >= cfg->size)
    return fail(err, errlen, "%s: '%s' is out of range: expected 0 to %u for a group of %u",
                src[O_RANK].label, src[O_RANK].text, cfg->size - 1, cfg->size);
  return 0;
}

static int check_command(struct lwsi_config *cfg, char *err, size_t errlen)
{
  bool mpi = cfg->preset == LWSI_PRESET_MPI;
  /* A worker of preset mpi runs no COMMAND of its own: what runs there is
   * what the leader's MPI launcher asks for through `lwsinit rsh`. */
  if (mpi && cfg->rank > 0)
    return 0;
  if (cfg->argc == 0)
    return fail(err, errlen, "no COMMAND given (usage: lwsinit [OPTIONS] [--] COMMAND [ARG...])");
  uint16_t dport;
  bool has_dport = lwsi_config_dist_port(cfg, &dport);
  const struct lwsi_expand_var vars[] = {
    {"leader", ""}, {"leader_ip", ""}, {"size", ""}, {"rank", ""},
    {"dist_port", has_dport ? "" : NULL}, {"hostfile", mpi ? "" : NULL}, {"epoch", ""},
  };
  const struct lwsi_engine *e = lwsi_engine_get(cfg->preset);
  if (e->dp_local_flag != NULL && lwsi_engine_dp_local(e, cfg->dp_local, cfg->argv) == 0)
    return fail(err, errlen, "--preset %s: the data-parallel ranks on each node are not "
                "known: give --dp-local N or %s N in COMMAND", e->name, e->dp_local_flag);
  /* Every member runs the same COMMAND (the launch digest), so a flag
   * refused only where the preset gives workers their own flags is
   * refused on the leader of that group too: the whole group fails here,
   * before anything starts, and not its workers alone. */
  const struct lwsi_engine_refusal *r;
  int at = lwsi_engine_refused(e, cfg->size, cfg->argv, &r);
  if (at >= 0)
    return fail(err, errlen, "--preset %s: COMMAND argument %d ('%s') contradicts the preset: "
                "%s; remove it, or use --preset none", e->name, at, cfg->argv[at], r->why);
  for (int i = 0; i < cfg->argc; i++) {
    char bad[64];
    int rc = lwsi_expand_check(cfg->argv[i], vars, sizeof(vars) / sizeof(vars[0]), bad,
                               sizeof(bad));
    if (rc == -ENOENT)
      return fail(err, errlen,
                  "COMMAND argument %d ('%s'): unknown placeholder {%s}: expected {leader}, "
                  "{leader_ip}, {size}, {rank}, {dist_port}, {epoch} or {hostfile}; write {{%s}} "
                  "for a literal", i, cfg->argv[i], bad, bad);
    if (rc == -ENODATA && strcmp(bad, "hostfile") == 0)
      return fail(err, errlen, "COMMAND argument %d ('%s'): {hostfile} needs --preset mpi", i,
                  cfg->argv[i]);
    if (rc == -ENODATA)
      return fail(err, errlen, "COMMAND argument %d ('%s'): {%s} needs --dist-port or a --preset",
                  i, cfg->argv[i], bad);
  }
  return 0;
}

static int check_cross(struct lwsi_config *cfg, const struct source *src, char *err,
                       size_t errlen)
{
  if (cfg->peer_timeout_ms <= cfg->heartbeat_ms)
    return fail(err, errlen, "%s: '%s' must be longer than the heartbeat period (%llu ms)",
                src[O_PEER_TIMEOUT].label, src[O_PEER_TIMEOUT].text,
                (unsigned long long)cfg->heartbeat_ms);
  if (src[O_UPSTREAM].set && strcmp(cfg->upstream, "none") != 0 &&
      strncmp(cfg->upstream, "http://", 7) != 0 && strncmp(cfg->upstream, "https://", 8) != 0)
    return fail(err, errlen, "%s: '%s' is not valid: expected an http:// URL or 'none'",
                src[O_UPSTREAM].label, src[O_UPSTREAM].text);
  /* One NCCL communicator over every GPU of the group needs each node's
   * count to lay out the ranks (docs/gpucheck.md, "Ranks"). */
  if (cfg->gpu_check == LWSI_GPU_CHECK_NCCL && cfg->gpus == 0 && cfg->size > 1)
    return fail(err, errlen, "%s: 'nccl' in a group needs --gpus N (the GPUs on each node)",
                src[O_GPU_CHECK].label);
  if (src[O_DP_LOCAL].set && lwsi_engine_get(cfg->preset)->dp_local_flag == NULL) {
    char names[64];
    preset_names(" or ", true, names, sizeof(names));
    return fail(err, errlen, "%s: '%s' is only used with --preset %s", src[O_DP_LOCAL].label,
                src[O_DP_LOCAL].text, names);
  }
  return 0;
}

int lwsi_config_parse(struct lwsi_config *cfg, int argc, char **argv, char **envp, char *err,
                      size_t errlen)
{
  memset(cfg, 0, sizeof(*cfg));
  cfg->mode = LWSI_MODE_RUN;
  err[0] = '\0';

  struct source src[O_COUNT];
  memset(src, 0, sizeof(src));
  int first = 1;
  if (argc > 1 && strcmp(argv[1], "status") == 0)
    cfg->mode = LWSI_MODE_STATUS;
  else if (argc > 1 && strcmp(argv[1], "probe") == 0)
    cfg->mode = LWSI_MODE_PROBE;

  enum lwsi_mode mode = cfg->mode;
  int cmd = collect_sources(src, cfg->mode == LWSI_MODE_RUN ? argc : 1, argv, envp, first, &mode,
                            err, errlen);
  /* The termination log before anything can fail: a configuration error
   * is a failure like any other, reported there too (contract, "Exit
   * status"). As far as the sources were read; else the default. */
  if (cfg->mode == LWSI_MODE_RUN) {
    char ignored[LWSI_CONFIG_ERR_MAX];
    const struct source *t = &src[O_TERMINATION_LOG];
    bool given = t->set && t->text != NULL &&
                 apply_opt(cfg, &opts[O_TERMINATION_LOG], t, ignored, sizeof(ignored)) == 0;
    /* A value we could not take is not "given": the default is then
     * written only if it exists, as always. */
    if (!given)
      snprintf(cfg->termination_log, sizeof(cfg->termination_log), "%s",
               opts[O_TERMINATION_LOG].def);
    cfg->termination_log_given = given;
  }
  if (cmd < 0)
    return cmd;
  cfg->mode = mode;
  if (mode == LWSI_MODE_HELP || mode == LWSI_MODE_VERSION)
    return 0;

  if (mode == LWSI_MODE_STATUS || mode == LWSI_MODE_PROBE) {
    /* Only the options the subcommand uses are read from the environment. */
    const int used = mode == LWSI_MODE_STATUS ? O_STATUS_SOCKET : O_PROBE_ADDR;
    int rc = apply_opt(cfg, &opts[used], &src[used], err, errlen);
    if (rc < 0)
      return rc;
    return mode == LWSI_MODE_STATUS ? parse_subcommand_status(cfg, argc, argv, err, errlen)
                                    : parse_subcommand_probe(cfg, argc, argv, err, errlen);
  }

  for (size_t i = 0; i < O_COUNT; i++) {
    if (src[i].text == NULL)
      continue;
    int rc = apply_opt(cfg, &opts[i], &src[i], err, errlen);
    if (rc < 0)
      return rc;
  }
  cfg->has_dns_server = src[O_DNS_SERVER].set;
  cfg->has_dist_port = src[O_DIST_PORT].set;

  int rc = check_group(cfg, src, err, errlen);
  if (rc < 0)
    return rc;
  rc = check_cross(cfg, src, err, errlen);
  if (rc < 0)
    return rc;

  if (src[O_TOKEN_FILE].set) {
    rc = read_token(cfg, src[O_TOKEN_FILE].label, err, errlen);
    if (rc == 0)
      rc = strip_token(cfg, src[O_TOKEN_FILE].label, err, errlen);
  } else {
    const char *t = env_get(envp, "LWSINIT_TOKEN");
    if (t != NULL) {
      if (strlen(t) >= sizeof(cfg->token))
        return fail(err, errlen, "LWSINIT_TOKEN: the token is longer than %d bytes",
                    LWSI_TOKEN_MAX - 1);
      cfg->token_len = strlen(t);
      memcpy(cfg->token, t, cfg->token_len + 1);
      rc = strip_token(cfg, "LWSINIT_TOKEN", err, errlen);
    }
  }
  if (rc < 0)
    return rc;

  cfg->argv = argv + cmd;
  cfg->argc = argc - cmd;
  return check_command(cfg, err, errlen);
}
