/* The HTTP server of the probe endpoints (contract, "Endpoints"): a small
 * HTTP/1.1 server on the agent's loop, built so that a slow or hostile
 * client can never keep kubelet's probe from being answered. Requests are
 * parsed by http-parser; the handler answers synchronously from the
 * agent's own state, so a probe never waits for anything but the loop.
 *
 * Limits (all per server):
 *  - at most max_conns connections; one more evicts the connection that
 *    made progress the longest ago, so a flood of idle connections never
 *    locks out a new probe;
 *  - a request must arrive whole within timeout_ms of the connection's last
 *    progress (accept, or the previous request): a slowloris client is
 *    closed however often it sends a byte;
 *  - a request head (request line and headers) over max_head bytes answers
 *    431, a URL over LWSI_HTTP_URL_MAX answers 414, a body over
 *    LWSI_HTTP_BODY_MAX answers 413, anything unparsable 400; each then
 *    closes the connection;
 *  - no more requests of a connection are parsed while more than max_output
 *    bytes of its answers wait to be written (pipelining with no reading).
 *
 * Modules never log: the server counts what happened in its stats. */
#ifndef LWSINIT_HTTP_H
#define LWSINIT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "lwsinit/buf.h"
#include "lwsinit/health.h"

#define LWSI_HTTP_DEFAULT_MAX_CONNS 256
#define LWSI_HTTP_DEFAULT_TIMEOUT_MS 5000
#define LWSI_HTTP_DEFAULT_MAX_HEAD 8192
#define LWSI_HTTP_DEFAULT_MAX_OUTPUT (64 * 1024)
#define LWSI_HTTP_URL_MAX 2048
#define LWSI_HTTP_BODY_MAX 1024      /* request bodies up to this are read and ignored */
#define LWSI_HTTP_READ_BUF 4096      /* embedded in each connection */

enum lwsi_http_method { LWSI_HTTP_GET, LWSI_HTTP_HEAD, LWSI_HTTP_OTHER };

struct lwsi_http_request {
  enum lwsi_http_method method;
  const char *method_name; /* as sent, e.g. "POST" */
  const char *path;        /* percent-decoded, never empty */
  const char *query;       /* raw, without the '?'; NULL when the URL has none */
};

struct lwsi_http_response {
  int status;               /* 200 on entry */
  const char *content_type; /* "text/plain; charset=utf-8" on entry; must outlive the call */
  const char *allow;        /* an Allow header (405), or NULL */
  bool close;               /* close the connection after this answer */
  struct lwsi_buf *body; /* empty on entry; the server owns it */
};

/* Answers one request. Called on the loop; must not block and must not
 * close the server. For HEAD the server drops the body but keeps its
 * Content-Length. When body->err is set afterwards, the server answers 500. */
typedef void (*lwsi_http_handler)(void *data, const struct lwsi_http_request *req,
                                  struct lwsi_http_response *resp);

/* Limits; a zero field takes its default. */
struct lwsi_http_opts {
  unsigned max_conns;  /* LWSI_HTTP_DEFAULT_MAX_CONNS */
  uint64_t timeout_ms; /* LWSI_HTTP_DEFAULT_TIMEOUT_MS */
  size_t max_head;     /* LWSI_HTTP_DEFAULT_MAX_HEAD */
  size_t max_output;   /* LWSI_HTTP_DEFAULT_MAX_OUTPUT */
};

/* What the server did, for the agent's metrics and for tests. */
struct lwsi_http_stats {
  uint64_t accepted;   /* connections accepted */
  uint64_t evicted;    /* closed to make room for a new one (max_conns) */
  uint64_t timed_out;  /* closed for making no progress within timeout_ms */
  uint64_t rejected;   /* answered 400, 413, 414 or 431 and closed */
  uint64_t requests;   /* requests handed to the handler */
  uint64_t throttled;  /* times parsing paused because max_output was reached */
  uint64_t accept_errors; /* failed accepts (EMFILE, ENOMEM) */
};

struct lwsi_http_conn; /* private to http.c */

struct lwsi_http_server {
  uv_loop_t *loop;
  uv_tcp_t tcp;
  uv_timer_t timer; /* one timer for every connection's deadline */
  uint64_t timer_due;
  uv_tcp_t reject;  /* accepts and closes a connection when memory is short */
  bool reject_busy;
  bool accept_pending;
  bool inited;
  bool closing;
  struct lwsi_http_opts opts;
  lwsi_http_handler handler;
  void *data;
  /* Connections by last progress, oldest first: the head is evicted. */
  struct lwsi_http_conn *lru_head, *lru_tail;
  unsigned nconns;
  struct lwsi_buf body; /* the handler's body, reused */
  uint16_t port;
  struct lwsi_http_stats stats;
};

/* Initialises the server's handles on loop. opts may be NULL. */
int lwsi_http_init(struct lwsi_http_server *srv, uv_loop_t *loop, const struct lwsi_http_opts *opts,
                   lwsi_http_handler handler, void *data);

/* Binds host (an IPv4 or IPv6 literal, brackets allowed) and port (0: any)
 * and starts listening. Returns 0, -EINVAL for a host that is not an IP
 * literal, or the bind/listen error (-EADDRINUSE, ...). */
int lwsi_http_listen(struct lwsi_http_server *srv, const char *host, uint16_t port);

/* The port actually bound (useful after port 0). */
uint16_t lwsi_http_port(const struct lwsi_http_server *srv);

/* Number of open connections. */
unsigned lwsi_http_connections(const struct lwsi_http_server *srv);

/* Closes every connection and the server's handles; run the loop
 * afterwards to finish closing. Safe after a failed init or listen, on a
 * zeroed struct, and twice. */
void lwsi_http_close(struct lwsi_http_server *srv);

/* Writes the server's stats as Prometheus text (lwsinit_http_*). */
struct lwsi_buf;
int lwsi_http_metrics(const struct lwsi_http_server *srv, struct lwsi_buf *out);

/* Steps through a query string's parameters (name[=value], separated by
 * '&'), decoding %XX and '+'. *pos starts at the query (NULL is an empty
 * query). Returns false at the end. A name or value that does not fit its
 * buffer comes back as "" (so it never matches a shorter one). */
bool lwsi_http_query_next(const char **pos, char *name, size_t namelen, char *value,
                          size_t valuelen);

/* True when the query has the parameter name (with or without a value):
 * the Kubernetes API server's test for ?verbose. */
bool lwsi_http_query_has(const char *query, const char *name);

/* ---- The probe routes ----
 * lwsi_http_route_probes is a handler; pass a struct lwsi_http_probes as
 * its data. It answers /livez, /readyz (with ?verbose and ?exclude=NAME as
 * the Kubernetes API server does), /status and /metrics from callbacks;
 * other paths 404, other methods than GET and HEAD 405 with
 * "Allow: GET, HEAD". */
struct lwsi_http_probes {
  /* Fills out with the checks of /livez (LWSI_HEALTH_LIVE) or /readyz
   * (LWSI_HEALTH_READY); out is zeroed on entry. Required. */
  void (*checks)(void *data, enum lwsi_health_kind kind, struct lwsi_health_list *out);
  /* Appends the status document (JSON) to out. Returns 0 or a negative
   * errno (answered 500). NULL: /status answers 404. */
  int (*status)(void *data, struct lwsi_buf *out);
  /* Writes Prometheus text to out (see metrics.h), which the route copies
   * into the answer. Same conventions. */
  int (*metrics)(void *data, struct lwsi_buf *out);
  void *data;
};

#define LWSI_HTTP_CONTENT_TYPE_TEXT "text/plain; charset=utf-8"
#define LWSI_HTTP_CONTENT_TYPE_JSON "application/json"
/* The Prometheus text exposition format, version 0.0.4. */
#define LWSI_HTTP_CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"

void lwsi_http_route_probes(void *probes, const struct lwsi_http_request *req,
                            struct lwsi_http_response *resp);

#endif
