/* The leader's address (contract, "The group": LWS_LEADER_ADDRESS): its
 * name resolved with c-ares on the agent's libuv loop, retried until the
 * name exists or the deadline passes.
 *
 * Resolution follows what libc would do in the pod: the nameservers, the
 * `search` list and `ndots` of resolv.conf (LWS gives a name such as
 * `sglang-0.sglang.default` that only resolves through the search list),
 * the LOCALDOMAIN and RES_OPTIONS variables as resolv.conf(5) describes
 * them, and the hosts file first, then DNS ("files dns" in nsswitch.conf,
 * c-ares lookups "fb"). c-ares 1.18 reads the hosts file on every lookup,
 * so a late /etc/hosts entry is seen too.
 *
 * The name often does not exist yet when a worker starts: LWS creates the
 * group's headless Service after the leader pod (LWS issue 746), and DNS
 * learns it later still. So every failed attempt (NXDOMAIN, no data,
 * SERVFAIL, REFUSED, a timeout, an unreachable server) is retried with a
 * capped exponential backoff plus jitter, which keeps the time between the
 * record appearing and the answer below one second, until the deadline.
 * Each attempt's own c-ares timeout is short, so a dead server costs one
 * short timeout per attempt and never stalls the retries.
 *
 * Never logs: progress and the result are reported through callbacks, with
 * the text the caller needs for its one-line message. Callbacks never run
 * inside lwsi_resolver_start, nor inside a c-ares call, so either may call
 * lwsi_resolver_close. */
#ifndef LWSINIT_RESOLVER_H
#define LWSINIT_RESOLVER_H

#include <ares.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Defaults for the knobs the contract does not expose. */
#define LWSI_RESOLVER_QUERY_TIMEOUT_MS 750 /* one c-ares try on one server */
#define LWSI_RESOLVER_QUERY_TRIES 2        /* per server: 750 + 1500 ms; then ours */
#define LWSI_RESOLVER_RETRY_MIN_MS 50      /* first pause after a failure; doubles ... */
#define LWSI_RESOLVER_RETRY_MAX_MS 500     /* ... up to this, each +-20 % jitter */
#define LWSI_RESOLVER_PROGRESS_MS 5000     /* progress at least this often while failing */

#define LWSI_RESOLVER_IP_MAX 46 /* INET6_ADDRSTRLEN */
#define LWSI_RESOLVER_NAME_MAX 256
#define LWSI_RESOLVER_ERROR_MAX 128
#define LWSI_RESOLVER_DESC_MAX 256

struct lwsi_resolver_opts {
  /* Ask this server instead of resolv.conf's (--dns-server): an IPv4 or
   * IPv6 literal, brackets optional; NULL or "": resolv.conf's. The search
   * list and ndots still come from resolv.conf. */
  const char *dns_server;
  uint16_t dns_port; /* 0: 53 */
  /* Give up after this long (--dns-timeout); 0: never. */
  uint64_t timeout_ms;
  /* NULL: /etc/resolv.conf. A path given here must be readable (c-ares
   * would silently fall back to 127.0.0.1 without a search list). Note
   * that c-ares 1.18 skips a `nameserver 127.0.0.1:5353` line (no port
   * syntax in resolv.conf, as in libc): give the port with dns_server. */
  const char *resolv_conf;
  /* Take the hosts file from $CARES_HOSTS when set (ARES_AI_ENVHOSTS):
   * for tests. false: /etc/hosts, as libc. */
  bool hosts_env;
  /* 0: the LWSI_RESOLVER_* defaults above. */
  uint64_t query_timeout_ms;
  uint32_t query_tries;
  uint64_t retry_min_ms;
  uint64_t retry_max_ms;
};

enum lwsi_resolver_state {
  LWSI_RESOLVER_IDLE,      /* not started, or start failed */
  LWSI_RESOLVER_RESOLVING, /* a query is in flight */
  LWSI_RESOLVER_WAITING,   /* pausing before the next attempt */
  LWSI_RESOLVER_DONE,      /* done was called: final */
  LWSI_RESOLVER_CLOSING,
  LWSI_RESOLVER_CLOSED,
};

struct lwsi_resolver;
struct lwsi_resolver_sock;

/* The result, once per start (never after lwsi_resolver_close): status 0
 * and r->ip / r->family hold the address; -ETIMEDOUT: the deadline passed
 * (r->last_error says why the last attempt failed); -EINVAL: c-ares calls
 * the name malformed; -ENOMEM; -EIO: another error c-ares will not get
 * over by retrying. */
typedef void (*lwsi_resolver_cb)(struct lwsi_resolver *r, int status);
/* After failed attempts 1, 2, 4, 8, ... and at least every
 * LWSI_RESOLVER_PROGRESS_MS while failing, so the caller can log
 * "still waiting" without a line per try: r->attempts, r->last_error,
 * r->server_desc and r->elapsed_ms say where it stands. */
typedef void (*lwsi_resolver_progress_cb)(struct lwsi_resolver *r);

struct lwsi_resolver {
  void *data; /* the caller's; kept by lwsi_resolver_start */

  /* Read-only for the caller. */
  enum lwsi_resolver_state state;
  char name[LWSI_RESOLVER_NAME_MAX]; /* as given */
  char ip[LWSI_RESOLVER_IP_MAX];     /* the answer (status 0); IPv4 preferred */
  int family;                        /* AF_INET or AF_INET6 (status 0) */
  bool literal;                      /* name was an IP literal: no DNS */
  uint32_t attempts;                 /* DNS attempts finished */
  int last_ares;                     /* ARES_* status of the last failure, 0: none */
  /* ares_strerror of it, "" while none. c-ares 1.18 reports a REFUSED or
   * SERVFAIL answer (after the search list's NXDOMAINs) like an
   * unreachable server, ARES_ECONNREFUSED, so that text says so. */
  char last_error[LWSI_RESOLVER_ERROR_MAX];
  /* Where the answers come from, for messages: "nameservers from
   * /etc/resolv.conf (10.96.0.10)", "--dns-server 127.0.0.1:5353",
   * "none (IP literal)". */
  char server_desc[LWSI_RESOLVER_DESC_MAX];
  /* How names are expanded: "search a.svc b.svc; ndots 5" (or "no search
   * list; ndots 1"); "" for an IP literal. */
  char search_desc[LWSI_RESOLVER_DESC_MAX];
  uint64_t elapsed_ms; /* from start to done; while failing, to the last attempt */

  /* Private. */
  uv_loop_t *loop;
  lwsi_resolver_cb done;
  lwsi_resolver_progress_cb progress;
  ares_channel channel;
  uv_timer_t ares_timer; /* c-ares' own timeouts (ares_timeout) */
  uv_timer_t retry;      /* the next attempt; the IP literal's answer */
  uv_timer_t deadline;   /* timeout_ms */
  bool timers_open;
  struct lwsi_resolver_sock *socks; /* one uv_poll_t per c-ares socket */
  uint32_t closing;                 /* handles libuv has not finished closing */
  uint64_t started;                 /* uv_now at start */
  uint64_t last_progress;           /* uv_now of the last progress report */
  uint64_t retry_min, retry_max, retry_delay;
  uint64_t rng; /* jitter only */
  int ai_flags;
  bool have_result; /* set by the c-ares callback, acted on after c-ares returns */
  int result_ares;
};

/* Makes c-ares ready for the process (ares_library_init). Idempotent; on
 * Linux it allocates nothing, so there is no cleanup. lwsi_resolver_start
 * calls it. Returns 0 or a negative errno. */
int lwsi_resolver_library_init(void);

/* Starts resolving name (an IP literal, v4 or v6, is answered on the next
 * loop turn without DNS). r must be zeroed, or closed with the loop run
 * since. The first DNS attempt starts on the next loop turn. Returns 0, -EINVAL (empty
 * name, bad dns_server, NULL loop or done), -ENAMETOOLONG, -EBUSY (r was
 * started and not closed, or is still closing: run the loop first),
 * -ENOENT/-EACCES (resolv_conf), or another negative errno; on failure
 * nothing is left open (lwsi_resolver_close is then harmless). */
int lwsi_resolver_start(struct lwsi_resolver *r, uv_loop_t *loop, const char *name,
                        const struct lwsi_resolver_opts *opts, lwsi_resolver_cb done,
                        lwsi_resolver_progress_cb progress);

/* Stops any query (done is not called afterwards), destroys the c-ares
 * channel and closes every handle; run the loop afterwards so that
 * uv_loop_close returns 0 (r->state becomes LWSI_RESOLVER_CLOSED once
 * libuv has closed them all; r may then be freed or started again). Safe
 * in any state, more than once, and from inside done or progress. */
void lwsi_resolver_close(struct lwsi_resolver *r);

const char *lwsi_resolver_state_name(enum lwsi_resolver_state state);

#endif
