/* The upstream health poller: polls the local engine's health URL (contract,
 * "--upstream") on the agent's loop and keeps the last result for /readyz,
 * /status and /metrics.
 *
 * libcurl is not linked: PID 1 stays lean until the engine is launched. The
 * first lwsi_upstream_start (or lwsi_upstream_load) loads it with dlopen(3)
 * and resolves the few curl_* functions used; it is never unloaded (see
 * lwsi_upstream_load). Transfers run on libcurl's multi interface driven by
 * the libuv loop (uv_poll for curl's sockets, a uv_timer for curl's
 * timeouts, curl_multi_socket_action): nothing here blocks the loop, apart
 * from the one-off dlopen itself.
 *
 * Each poll is one GET, HTTP/HTTPS only, no redirects, no proxy, no signals
 * (PID 1 owns them), no connection reuse (every poll proves the server still
 * accepts, as the kubelet's httpGet probe does), with its own deadline; the
 * body is counted and discarded. 2xx is healthy, anything else is not. At
 * most one poll is in flight: a tick that finds the previous poll still
 * running is skipped (and counted).
 *
 * Like every module it never logs: the top layer reads the fields below
 * and the reason texts, and logs. */
#ifndef LWSINIT_UPSTREAM_H
#define LWSINIT_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* What the last poll ended with, for metrics labels and policy. */
enum lwsi_upstream_outcome {
  LWSI_UPSTREAM_NONE,    /* no poll has finished yet */
  LWSI_UPSTREAM_OK,      /* a 2xx answer */
  LWSI_UPSTREAM_HTTP,    /* an answer with another status (http_status) */
  LWSI_UPSTREAM_TIMEOUT, /* no complete answer within the timeout */
  LWSI_UPSTREAM_CONNECT, /* the connection was refused or failed */
  LWSI_UPSTREAM_ERROR,   /* anything else: empty reply, bad HTTP, TLS, ... */
  LWSI_UPSTREAM_OUTCOME_COUNT
};

struct lwsi_upstream;
struct lwsi_upstream_sock; /* private: one per socket curl watches */

/* Called after the first result, and after every result that flips ok.
 * Read the fields of u. It may call lwsi_upstream_close(u). */
typedef void (*lwsi_upstream_cb)(struct lwsi_upstream *u);

struct lwsi_upstream {
  /* The last result; read-only for callers. Valid from start on. */
  bool known;                 /* at least one poll has finished */
  bool ok;                    /* the last poll got a 2xx answer */
  enum lwsi_upstream_outcome outcome;
  long http_status;           /* the last poll's status; 0 when there was no answer */
  double last_latency_s;      /* how long the last poll took, answered or not */
  uint64_t changed_ms;        /* uv_now() of the first result or last flip of ok */
  uint64_t polls;             /* polls finished */
  uint64_t failures;          /* polls finished that were not ok */
  uint64_t consecutive_failures;
  bool ever_ok;               /* some poll got a 2xx answer */
  bool failing;               /* the polls fail since failing_since_ms */
  uint64_t failing_since_ms;  /* uv_now() at the start of the first failed poll in the
                               * current run of failures */
  uint64_t by_outcome[LWSI_UPSTREAM_OUTCOME_COUNT]; /* polls finished, by outcome */
  uint64_t skipped;           /* ticks skipped: the previous poll was still running */
  bool in_flight;             /* a poll is running now */
  char last_error[256];       /* why the last poll was not ok; "" when ok */
  void *data;                 /* the caller's; kept by start */

  /* Private. */
  uv_loop_t *loop;
  uv_timer_t tick;       /* one poll per interval */
  uv_timer_t curl_timer; /* curl's own timeout (CURLMOPT_TIMERFUNCTION) */
  void *multi;           /* CURLM * */
  void *easy;            /* CURL *, reused for every poll */
  struct lwsi_upstream_sock *socks; /* uv_polls of curl's sockets, a list */
  lwsi_upstream_cb on_change;
  uint64_t interval_ms;
  uint64_t timeout_ms;
  uint64_t poll_start_ns;
  uint64_t poll_start_ms; /* uv_now() when the poll in flight began */
  size_t body_bytes;
  bool body_capped;
  bool closing;
  char url[1024];
  char curl_err[256]; /* CURLOPT_ERRORBUFFER (CURL_ERROR_SIZE) */
};

/* Loads libcurl once for the process: dlopen of name, or when name is
 * NULL of "libcurl.so.4" then "libcurl-gnutls.so.4" (Debian's GnuTLS
 * flavour, present in images that have git but not curl); resolves the
 * functions and calls curl_global_init. Returns 0 (also when already
 * loaded), -ELIBACC when no library could be opened, -ELIBBAD when one
 * lacks a function or fails to initialise; err then says which and why.
 * A failure is not remembered: a later call tries again.
 *
 * The library is never dlclose'd: libcurl and the TLS library it pulls in
 * (OpenSSL 3 registers an atexit handler, GnuTLS global state) are not
 * safe to unload, and the agent polls until it exits anyway. */
int lwsi_upstream_load(const char *name, char *err, size_t errlen);

/* The loaded libcurl's version text (curl_version(), e.g. "libcurl/7.88.1
 * OpenSSL/3.0.x ..."), or NULL before a successful load. */
const char *lwsi_upstream_curl_version(void);

/* Starts polling url (http:// or https://; --upstream, or the preset's from
 * lwsi_engine_health_url) every interval_ms, each poll
 * limited to timeout_ms, the first poll at once. Loads libcurl if needed.
 * u is zeroed first (u->data is kept). Returns 0, or a negative errno with
 * one line in err: -EINVAL (not an http(s) URL, or an interval or timeout
 * outside 1 ms .. 1 day),
 * -ENAMETOOLONG, -ELIBACC / -ELIBBAD (libcurl, see lwsi_upstream_load),
 * -ENOMEM, or a libuv error. On failure nothing is left running or open;
 * lwsi_upstream_close is still allowed. A timeout longer than the interval
 * is allowed: ticks that fall inside a running poll are skipped. u must not
 * be running: to start again, close and let the loop finish closing. */
int lwsi_upstream_start(struct lwsi_upstream *u, uv_loop_t *loop, const char *url,
                        uint64_t interval_ms, uint64_t timeout_ms, lwsi_upstream_cb on_change,
                        char *err, size_t errlen);

/* Stops polling, aborts a poll in flight, frees curl's handles and closes
 * every uv handle; run the loop afterwards to finish closing (then
 * uv_loop_close returns 0). u must stay valid until then. The last result
 * stays readable. Idempotent; a no-op on a zeroed struct that was never
 * started. on_change is not called again. */
void lwsi_upstream_close(struct lwsi_upstream *u);

/* Hang detection (--hang-timeout, contract "Membership"): an engine whose
 * health URL answered healthy once, and whose every poll has failed since
 * the first failed one, for hang_ms, has hung; a poll unanswered within the
 * poll timeout is a failed poll. One that never answered healthy is a slow
 * start, not a hang. Returns the ms left at now_ms until u counts as hung
 * (0: it has hung), or UINT64_MAX when it cannot hang as things stand
 * (hang_ms 0, no result yet, healthy now, or never healthy). A pure
 * function of u's fields: the caller arms its own timer for the result
 * and asks again when it fires. */
uint64_t lwsi_upstream_hang_left(const struct lwsi_upstream *u, uint64_t now_ms,
                                 uint64_t hang_ms);

/* "ok", "http", "timeout", "connect", "error"; "none" before any result. */
const char *lwsi_upstream_outcome_name(enum lwsi_upstream_outcome o);

#endif
