/* The status document (contract, "Status"): one JSON object served by
 * GET /status and the status socket, its summary for a person (`lwsinit
 * status`), and the agent's metrics. Each is rendered from a plain snapshot
 * of the agent's state (struct lwsi_status_snapshot), which the agent fills
 * when a request arrives: no I/O, no clock, no agent internals here, so the
 * rendering is tested from snapshots written by hand. */
#ifndef LWSINIT_STATUS_H
#define LWSINIT_STATUS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LWSI_STATUS_MAX_PHASES 8
#define LWSI_STATUS_MAX_OUTCOMES 8
#define LWSI_STATUS_MAX_NODE_CHECKS 8
#define LWSI_STATUS_MAX_NETENV 8

/* The engine's state. Its name is the one word the document, the text and
 * the heartbeats use (lwsi_status_child_name). */
enum lwsi_status_child {
  LWSI_STATUS_CHILD_NOT_STARTED,
  LWSI_STATUS_CHILD_RUNNING,
  LWSI_STATUS_CHILD_EXITED,
};

/* "not-started", "running", "exited". */
const char *lwsi_status_child_name(enum lwsi_status_child state);

/* The GPU check's state on this node. */
enum lwsi_status_gpu {
  LWSI_STATUS_GPU_NOT_STARTED,
  LWSI_STATUS_GPU_RUNNING,
  LWSI_STATUS_GPU_PASSED,
  LWSI_STATUS_GPU_FAILED,
};

/* "not-started", "running", "passed", "failed". */
const char *lwsi_status_gpu_name(enum lwsi_status_gpu state);

/* One member as the rendezvous reports it (the agent copies each row). */
struct lwsi_status_member {
  uint32_t rank;
  char addr[64]; /* as the leader sees it */
  char pod[256];
  bool joined;
  bool alive;
  int64_t hb_age_ms; /* since its last frame; -1: not watched here */
  int64_t rtt_us;    /* -1: not measured yet */
  bool has_state;    /* child and upstream come from its heartbeat */
  char child[32];
  bool upstream;
  /* From a heartbeat that carries them (newer agents), or our own state. */
  bool has_health;
  bool upstream_on;        /* the member polls a health URL */
  int64_t upstream_age_ms; /* since its upstream state last changed */
  char upstream_error[128];
  bool stopping;
  /* Its step of a launch in phases (include/lwsinit/phases.h), "" when
   * none or unknown here. */
  char launch_phase[16];
};

/* The launch check (contract, "Launch check"): one member whose launch
 * command differs from the leader's. */
#define LWSI_STATUS_LAUNCH_LISTED 16 /* members listed; the rest are counted */
struct lwsi_status_launch_diff {
  uint32_t rank;
  uint32_t count;   /* differences */
  char detail[512]; /* the first of them, as the leader logged them */
};

/* Time spent in one phase so far, the current one included. */
struct lwsi_status_phase {
  const char *name;
  uint64_t ms;
};

/* Polls of the engine's health URL that ended one way. */
struct lwsi_status_outcome {
  const char *name;
  uint64_t polls;
};

/* One check of the node check: state is "ok", "warn" or "fail"; fix is ""
 * when there is nothing to fix. */
struct lwsi_status_node_item {
  const char *name;
  const char *state;
  const char *found;
  const char *fix;
};

/* One variable of the engine's network environment: value NULL when
 * neither the agent nor the user set it. */
struct lwsi_status_netenv_var {
  const char *name;
  const char *value;
  const char *reason;
  bool kept; /* the user's own value */
};

/* Everything the document, the text and the metrics show. Strings are never
 * NULL unless noted; they must outlive the rendering call. */
struct lwsi_status_snapshot {
  uint32_t rank;
  uint32_t size;
  bool standalone; /* a group of one: role "standalone" */
  bool ready;      /* /readyz would answer 200 */
  const char *leader;    /* the leader's address, as given */
  const char *leader_ip; /* "" while unresolved */

  /* Phases, in order; phase is the index of the current one. */
  struct lwsi_status_phase phases[LWSI_STATUS_MAX_PHASES];
  size_t nphases;
  size_t phase;
  uint64_t total_ms; /* since the agent started */

  struct {
    enum lwsi_status_child state;
    int pid;       /* 0 before launch */
    int exit_code; /* once exited */
    uint64_t orphans_reaped;
  } child;

  struct {
    bool enabled;
    const char *url;
    bool known; /* a poll has finished */
    bool ok;
    const char *outcome;
    long http_status;
    double latency_s;
    uint64_t polls;
    uint64_t failures;
    const char *error; /* "" when none */
    /* Every outcome but "none", in the order the metrics list them. */
    struct lwsi_status_outcome by_outcome[LWSI_STATUS_MAX_OUTCOMES];
    size_t noutcomes;
  } upstream;

  /* The rendezvous; absent (false) before it starts and when standalone. */
  bool has_group;
  struct {
    const char *rendezvous; /* its state's name */
    const char *incarnation;
    const char *missing;
    const char *broken; /* "" while whole */
  } group;
  /* Members joined and alive, this agent included: 1 and 1 without a
   * group. */
  uint32_t joined;
  uint32_t alive;
  uint64_t peer_losses; /* members lost after the release */
  double released_at;   /* Unix time of the release, 0 before */
  /* --on-failure restart: the group's epoch (0, then +1 at each restart)
   * and how many restarts this agent has seen. */
  uint32_t epoch;
  uint64_t restarts;

  /* The members the rendezvous reports, by rank (none without a group). */
  const struct lwsi_status_member *members;
  size_t nmembers;

  bool has_gpu_check; /* --gpu-check is not none */
  struct {
    const char *mode;
    enum lwsi_status_gpu state;
    bool group_passed;
    bool have_result;
    unsigned devices;
    const char *model;
    double time_ms;
    double busbw_gbps; /* < 0: not measured */
    const char *error; /* "" when none */
  } gpu;

  /* The node check (--node-check); ran is false with "off". */
  struct {
    const char *mode;
    bool ran;
    unsigned warnings, failures;
    struct lwsi_status_node_item items[LWSI_STATUS_MAX_NODE_CHECKS];
    size_t nitems;
  } node;

  /* The engine's network environment (--network-env); computed is false
   * before launch and with "off". */
  struct {
    const char *mode;
    bool computed;
    struct lwsi_status_netenv_var vars[LWSI_STATUS_MAX_NETENV];
    size_t nvars;
  } netenv;

  const char *last_error; /* "" when none */

  /* This member's step of a launch in phases; NULL without one. */
  const char *launch_phase;

  /* The launch check, on the leader of a group (has_launch_check): the
   * mode, whether the commands were compared (at the release), and the
   * members that differ (the first LWSI_STATUS_LAUNCH_LISTED of them). */
  bool has_launch_check;
  struct {
    const char *mode;
    bool compared;
    uint32_t ranks;       /* members that differ */
    uint64_t differences; /* in all */
    const struct lwsi_status_launch_diff *listed;
    size_t nlisted;
  } launch_check;

  /* A worker's refusals it could not verify with the token (contract,
   * "Membership"): how many, and the latest; count 0 when none. */
  struct {
    uint64_t count;
    const char *reason; /* "" when none */
  } unverified_refusal;
};

/* Builds the document. NULL on allocation failure. */
cJSON *lwsi_status_doc(const struct lwsi_status_snapshot *s);

/* The document as compact JSON text with a trailing newline (malloc'd), or
 * NULL on allocation failure. */
char *lwsi_status_render(const struct lwsi_status_snapshot *s);

/* Writes the agent's metrics in the Prometheus text format. Returns 0 or
 * the buffer's error. */
struct lwsi_buf;
int lwsi_status_metrics(const struct lwsi_status_snapshot *s, struct lwsi_buf *out);

/* Prints the summary of a document for a person. Returns 0 or -EINVAL when
 * the text is not a status document. */
int lwsi_status_print(FILE *out, const char *json);

#endif
