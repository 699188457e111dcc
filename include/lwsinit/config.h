/* Configuration: the contract's options, their LWSINIT_* twins and the
 * LWS_* group variables, parsed strictly into one plain struct. */
#ifndef LWSINIT_CONFIG_H
#define LWSINIT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lwsinit/engine.h"
#include "lwsinit/health.h"
#include "lwsinit/launchck.h"

#define LWSI_CONFIG_ERR_MAX 512
#define LWSI_TOKEN_MAX 4096

enum lwsi_peer_loss { LWSI_PEER_LOSS_EXIT, LWSI_PEER_LOSS_STAY };
enum lwsi_gpu_check { LWSI_GPU_CHECK_NONE, LWSI_GPU_CHECK_CUDA, LWSI_GPU_CHECK_NCCL };
/* The order of each list is its parse table's (config.c). */
enum lwsi_node_check { LWSI_NODE_CHECK_OFF, LWSI_NODE_CHECK_WARN, LWSI_NODE_CHECK_FAIL };
enum lwsi_network_env { LWSI_NETWORK_ENV_AUTO, LWSI_NETWORK_ENV_OFF };
enum lwsi_log_format { LWSI_LOG_TEXT, LWSI_LOG_JSON };
enum lwsi_log_level { LWSI_LOG_DEBUG, LWSI_LOG_INFO, LWSI_LOG_WARN, LWSI_LOG_ERROR };
/* --on-failure: only exit is acted on; restart is refused by the parser
 * until the group can form again in place. */
enum lwsi_on_failure { LWSI_ON_FAILURE_EXIT, LWSI_ON_FAILURE_RESTART };
enum lwsi_mode { LWSI_MODE_RUN, LWSI_MODE_HELP, LWSI_MODE_VERSION, LWSI_MODE_STATUS, LWSI_MODE_PROBE };

/* A HOST:PORT pair as the user wrote it; host is an IP literal or a name. */
struct lwsi_hostport {
  char host[256];
  uint16_t port;
};

struct lwsi_config {
  enum lwsi_mode mode;

  /* The group. standalone is true when no group variable or flag was given. */
  bool standalone;
  char leader[256];
  uint32_t size;
  uint32_t rank;

  uint16_t rdzv_port;
  struct lwsi_hostport probe_addr;
  char status_socket[108];
  bool has_dns_server;
  struct lwsi_hostport dns_server;
  uint64_t dns_timeout_ms;
  uint64_t rdzv_timeout_ms;
  uint64_t heartbeat_ms;
  uint64_t peer_timeout_ms;
  enum lwsi_peer_loss on_peer_loss;
  enum lwsi_preset preset; /* a row of the engine table (engine.h) */
  bool has_dist_port;
  uint16_t dist_port;
  uint32_t dp_local;
  char upstream[1024]; /* empty: from the preset; "none": no polling */
  uint64_t upstream_interval_ms;
  uint64_t upstream_timeout_ms;
  enum lwsi_readiness readiness;
  uint64_t grace_ms;
  uint64_t drain_delay_ms;
  enum lwsi_gpu_check gpu_check;
  uint32_t gpus;
  uint64_t gpu_check_timeout_ms;
  uint64_t gpu_check_bytes;
  double gpu_min_busbw;
  enum lwsi_node_check node_check;
  enum lwsi_network_env network_env;
  char token_file[4096];
  /* The shared secret, read from --token-file or LWSINIT_TOKEN, with
   * trailing whitespace stripped (contract, "Membership"). */
  char token[LWSI_TOKEN_MAX];
  size_t token_len;
  char revision[256];
  char termination_log[4096];
  bool termination_log_given;
  enum lwsi_log_format log_format;
  enum lwsi_log_level log_level;
  enum lwsi_launchck_mode launch_check; /* --launch-check */
  uint64_t hang_timeout_ms; /* --hang-timeout; 0: never */
  enum lwsi_on_failure on_failure;
  uint64_t fail_delay_ms; /* --fail-delay */
  uint64_t phase_timeout_ms; /* --phase-timeout: each launch phase's deadline */
  /* --on-failure restart (contract, "Membership"). */
  uint32_t max_restarts;        /* --max-restarts */
  uint64_t restart_window_ms;   /* --restart-window */
  uint64_t rejoin_timeout_ms;   /* --rejoin-timeout */
  uint64_t gpu_free_timeout_ms; /* --gpu-free-timeout */

  /* Subcommands: status and probe. */
  bool status_json;
  bool probe_ready; /* probe ready (true) or live (false) */

  /* COMMAND and its arguments, pointing into the caller's argv. */
  char **argv;
  int argc;
};

/* Fills cfg from argv and envp. Returns 0, or -EINVAL with one line in err
 * (no newline) that names the option or variable as the user wrote it. */
int lwsi_config_parse(struct lwsi_config *cfg, int argc, char **argv,
                      char **envp, char *err, size_t errlen);

/* Writes --help to fd. */
void lwsi_config_usage(int fd);

/* The --gpu-check mode as the user writes it ("none", "cuda", "nccl"), the
 * word the check program takes as its mode and the status reports; "?" for
 * a value outside the enum. */
const char *lwsi_config_gpu_check_name(enum lwsi_gpu_check mode);

/* --node-check and --network-env as the user writes them; "?" outside the
 * enum. */
const char *lwsi_config_node_check_name(enum lwsi_node_check mode);
const char *lwsi_config_network_env_name(enum lwsi_network_env mode);

/* The engine's own port that {dist_port} stands for: --dist-port, or the
 * preset's default from the engine table. Returns false when there is
 * none. */
bool lwsi_config_dist_port(const struct lwsi_config *cfg, uint16_t *port);

#endif
