#include "lwsinit/resolver.h"

#include "lwsinit/text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_RESOLV_CONF "/etc/resolv.conf"
#define JITTER_PCT 20

/* One socket c-ares asked us to watch (ARES_OPT_SOCK_STATE_CB). */
struct lwsi_resolver_sock {
  uv_poll_t poll;
  ares_socket_t fd;
  struct lwsi_resolver *r;
  struct lwsi_resolver_sock *next;
};

static const char *const state_names[] = {
  [LWSI_RESOLVER_IDLE] = "idle",       [LWSI_RESOLVER_RESOLVING] = "resolving",
  [LWSI_RESOLVER_WAITING] = "waiting", [LWSI_RESOLVER_DONE] = "done",
  [LWSI_RESOLVER_CLOSING] = "closing", [LWSI_RESOLVER_CLOSED] = "closed",
};

const char *lwsi_resolver_state_name(enum lwsi_resolver_state state)
{
  return (unsigned)state < sizeof(state_names) / sizeof(state_names[0]) ? state_names[state]
                                                                         : "?";
}

/* ---- small helpers ---- */

/* Appends to a NUL-terminated buffer, truncating. */
static void appendf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t len, const char *fmt, ...)
{
  size_t used = strnlen(buf, len);
  if (used + 1 >= len)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + used, len - used, fmt, ap);
  va_end(ap);
  if (n < 0)
    buf[used] = '\0';
}

/* xorshift64*: jitter only, so that the workers of a group started at the
 * same moment do not query in lockstep; nothing here needs to be secret. */
static uint64_t rng_next(struct lwsi_resolver *r)
{
  uint64_t x = r->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static void rng_seed(struct lwsi_resolver *r)
{
  uint64_t seed = 0;
  /* GRND_NONBLOCK: early in boot the pool may not be ready, and jitter is
   * not worth waiting for (getrandom(2)). */
  if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
    seed = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
  r->rng = seed != 0 ? seed : 0x9E3779B97F4A7C15ULL;
}

/* delay +- JITTER_PCT %. */
static uint64_t jittered(struct lwsi_resolver *r, uint64_t delay)
{
  uint64_t span = delay * JITTER_PCT / 100;
  if (span == 0)
    return delay;
  return delay - span + rng_next(r) % (2 * span + 1);
}

/* Text of an IP literal, brackets allowed around IPv6 ("[fd00::1]").
 * Returns the family, or 0 when text is not one. */
static int parse_literal(const char *text, char *out, size_t outlen)
{
  char buf[LWSI_RESOLVER_IP_MAX + 2];
  size_t n = strlen(text);
  if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
    if (n - 2 >= sizeof(buf))
      return 0;
    memcpy(buf, text + 1, n - 2);
    buf[n - 2] = '\0';
  } else {
    if (n >= sizeof(buf))
      return 0;
    memcpy(buf, text, n + 1);
  }
  unsigned char addr[sizeof(struct in6_addr)];
  int family = 0;
  if (text[0] != '[' && inet_pton(AF_INET, buf, addr) == 1)
    family = AF_INET;
  else if (inet_pton(AF_INET6, buf, addr) == 1)
    family = AF_INET6;
  else
    return 0;
  if (out != NULL && inet_ntop(family, addr, out, (socklen_t)outlen) == NULL)
    return 0;
  return family;
}

/* ---- handles ---- */

static void maybe_closed(struct lwsi_resolver *r)
{
  if (r->state != LWSI_RESOLVER_CLOSING || r->closing > 0)
    return;
  r->state = LWSI_RESOLVER_CLOSED;
}

static void on_timer_closed(uv_handle_t *h)
{
  struct lwsi_resolver *r = h->data;
  r->closing--;
  maybe_closed(r);
}

static void on_sock_closed(uv_handle_t *h)
{
  struct lwsi_resolver_sock *s = h->data;
  struct lwsi_resolver *r = s->r;
  free(s);
  r->closing--;
  maybe_closed(r);
}

static void close_sock(struct lwsi_resolver *r, struct lwsi_resolver_sock *s)
{
  /* Unlinked now: c-ares may reuse the fd number for its next socket
   * before libuv calls us back. uv_close stops the poll at once, before
   * c-ares closes the fd (libuv: never close an fd that is being polled). */
  struct lwsi_resolver_sock **pp = &r->socks;
  while (*pp != NULL && *pp != s)
    pp = &(*pp)->next;
  if (*pp == s)
    *pp = s->next;
  r->closing++;
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void after_ares(struct lwsi_resolver *r);

static void on_poll(uv_poll_t *h, int status, int events)
{
  struct lwsi_resolver_sock *s = h->data;
  struct lwsi_resolver *r = s->r;
  ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
  if (status < 0) {
    /* An error on the socket (e.g. ICMP port unreachable): let c-ares read
     * it and fail or move the query on itself. */
    rfd = s->fd;
    wfd = s->fd;
  } else {
    if (events & UV_READABLE)
      rfd = s->fd;
    if (events & UV_WRITABLE)
      wfd = s->fd;
  }
  if (r->channel == NULL)
    return;
  ares_process_fd(r->channel, rfd, wfd); /* s may be closing after this */
  after_ares(r);
}

/* ARES_OPT_SOCK_STATE_CB (ares_init_options(3)): c-ares tells us which of
 * its sockets to watch, and for what; (0, 0) before it closes one. Runs
 * inside c-ares calls, so it only touches handles. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
  struct lwsi_resolver *r = data;
  struct lwsi_resolver_sock *s = r->socks;
  while (s != NULL && s->fd != fd)
    s = s->next;
  if (!readable && !writable) {
    if (s != NULL)
      close_sock(r, s);
    return;
  }
  if (s == NULL) {
    /* On failure the socket goes unwatched and its query ends on the
     * c-ares timeout (ares_process_fd with no fd still runs timeouts),
     * which the retry loop absorbs. */
    s = calloc(1, sizeof(*s));
    if (s == NULL)
      return;
    if (uv_poll_init_socket(r->loop, &s->poll, fd) < 0) {
      free(s);
      return;
    }
    s->fd = fd;
    s->r = r;
    s->poll.data = s;
    s->next = r->socks;
    r->socks = s;
  }
  int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  if (uv_poll_start(&s->poll, events, on_poll) < 0)
    close_sock(r, s);
}

/* ---- the c-ares timer ---- */

static void on_ares_timer(uv_timer_t *t)
{
  struct lwsi_resolver *r = t->data;
  if (r->channel == NULL)
    return;
  /* No fd: c-ares only handles its timeouts (ares_process_fd(3)). */
  ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  after_ares(r);
}

/* Re-arms the timer to c-ares' next timeout (ares_timeout(3)), or stops it
 * when nothing is pending. */
static void update_ares_timer(struct lwsi_resolver *r)
{
  struct timeval tv;
  if (r->channel == NULL || ares_timeout(r->channel, NULL, &tv) == NULL) {
    (void)uv_timer_stop(&r->ares_timer);
    return;
  }
  uint64_t ms = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
  /* uv_timer_start fails only for a closing handle or a NULL callback,
   * neither of which happens here. */
  (void)uv_timer_start(&r->ares_timer, on_ares_timer, ms, 0);
}

/* ---- attempts ---- */

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
  struct lwsi_resolver *r = arg;
  (void)timeouts;
  if (r->state != LWSI_RESOLVER_RESOLVING) {
    /* ECANCELLED (deadline) or EDESTRUCTION (close): already decided. */
    if (res != NULL)
      ares_freeaddrinfo(res);
    return;
  }
  if (status == ARES_SUCCESS) {
    /* Prefer IPv4 when both families answer: pod networks are IPv4 or
     * dual-stack, and an engine's --dist-init-addr wants an address every
     * peer can reach and format without brackets. */
    const struct ares_addrinfo_node *pick = NULL;
    for (const struct ares_addrinfo_node *n = res != NULL ? res->nodes : NULL; n; n = n->ai_next) {
      if (n->ai_family == AF_INET) {
        pick = n;
        break;
      }
      if (n->ai_family == AF_INET6 && pick == NULL)
        pick = n;
    }
    const void *addr = NULL;
    if (pick != NULL && pick->ai_family == AF_INET)
      addr = &((const struct sockaddr_in *)(const void *)pick->ai_addr)->sin_addr;
    else if (pick != NULL)
      addr = &((const struct sockaddr_in6 *)(const void *)pick->ai_addr)->sin6_addr;
    if (addr != NULL && inet_ntop(pick->ai_family, addr, r->ip, sizeof(r->ip)) != NULL)
      r->family = pick->ai_family;
    else
      status = ARES_ENODATA;
  }
  if (res != NULL)
    ares_freeaddrinfo(res);
  r->have_result = true;
  r->result_ares = status;
}

static void finish(struct lwsi_resolver *r, int status)
{
  uv_update_time(r->loop);
  r->elapsed_ms = uv_now(r->loop) - r->started;
  r->state = LWSI_RESOLVER_DONE;
  (void)uv_timer_stop(&r->retry);
  (void)uv_timer_stop(&r->deadline);
  update_ares_timer(r);
  r->done(r, status); /* may close or free r */
}

static int map_fatal(int ares_status)
{
  switch (ares_status) {
  case ARES_EBADNAME:
    return -EINVAL;
  case ARES_ENOMEM:
    return -ENOMEM;
  default:
    return -EIO;
  }
}

/* Whether another attempt may get a different answer. NXDOMAIN, no data,
 * SERVFAIL, REFUSED, timeouts and unreachable servers are all what a name
 * that is not published yet, or a DNS that is not up yet, looks like. */
static bool retryable(int ares_status)
{
  switch (ares_status) {
  case ARES_EBADNAME:
  case ARES_EBADFLAGS:
  case ARES_EBADFAMILY:
  case ARES_ENOMEM:
  case ARES_ENOTINITIALIZED:
  case ARES_ENOTIMP:
    return false;
  default:
    return true;
  }
}

static void on_retry(uv_timer_t *t);

static void attempt(struct lwsi_resolver *r)
{
  struct ares_addrinfo_hints hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  /* NOSORT: the RFC 6724 sort connect()s a UDP socket per answer, and we
   * pick the family ourselves. */
  hints.ai_flags = ARES_AI_NOSORT | r->ai_flags;
  r->state = LWSI_RESOLVER_RESOLVING;
  r->have_result = false;
  /* May answer before returning (hosts file, bad name): after_ares acts on
   * it outside the c-ares call. */
  ares_getaddrinfo(r->channel, r->name, NULL, &hints, on_addrinfo, r);
  after_ares(r);
}

static void attempt_failed(struct lwsi_resolver *r, int status)
{
  r->last_ares = status;
  if (status == ARES_ECONNREFUSED)
    /* What c-ares 1.18 also ends with when every server answered REFUSED
     * or SERVFAIL (ares_process.c, skip_server): say both. */
    lwsi_text_printf(r->last_error, sizeof(r->last_error),
                     "%s (or the server refused or failed the query)", ares_strerror(status));
  else
    lwsi_text_printf(r->last_error, sizeof(r->last_error), "%s", ares_strerror(status));
  if (!retryable(status)) {
    finish(r, map_fatal(status));
    return;
  }
  uint64_t now = uv_now(r->loop);
  uint64_t delay = jittered(r, r->retry_delay);
  r->retry_delay = r->retry_delay * 2 > r->retry_max ? r->retry_max : r->retry_delay * 2;
  r->state = LWSI_RESOLVER_WAITING;
  (void)uv_timer_start(&r->retry, on_retry, delay, 0);

  uint32_t n = r->attempts;
  if (r->progress != NULL &&
      ((n & (n - 1)) == 0 || now - r->last_progress >= LWSI_RESOLVER_PROGRESS_MS)) {
    r->last_progress = now;
    r->progress(r); /* may close r */
  }
}

/* Runs after every call into c-ares: re-arms the timeout timer, and acts
 * on a result the c-ares callback left, now that c-ares is not on the
 * stack any more (ares_destroy from inside a callback is not allowed). */
static void after_ares(struct lwsi_resolver *r)
{
  if (r->state != LWSI_RESOLVER_RESOLVING)
    return;
  update_ares_timer(r);
  if (!r->have_result)
    return;
  r->have_result = false;
  r->attempts++;
  uv_update_time(r->loop);
  r->elapsed_ms = uv_now(r->loop) - r->started;
  if (r->result_ares == ARES_SUCCESS)
    finish(r, 0);
  else
    attempt_failed(r, r->result_ares);
}

static void on_retry(uv_timer_t *t)
{
  struct lwsi_resolver *r = t->data;
  if (r->literal) {
    if (r->state == LWSI_RESOLVER_WAITING)
      finish(r, 0);
    return;
  }
  if (r->state == LWSI_RESOLVER_WAITING)
    attempt(r);
}

static void on_deadline(uv_timer_t *t)
{
  struct lwsi_resolver *r = t->data;
  if (r->state != LWSI_RESOLVER_RESOLVING && r->state != LWSI_RESOLVER_WAITING)
    return;
  if (r->state == LWSI_RESOLVER_RESOLVING) {
    /* Leave RESOLVING first so that on_addrinfo ignores the ECANCELLED
     * that ares_cancel(3) delivers from inside this call. */
    r->state = LWSI_RESOLVER_WAITING;
    ares_cancel(r->channel);
    if (r->last_error[0] == '\0') {
      /* The first attempt never came back: no other error to report. */
      r->last_ares = ARES_ETIMEOUT;
      lwsi_text_printf(r->last_error, sizeof(r->last_error), "%s", ares_strerror(ARES_ETIMEOUT));
    }
  }
  finish(r, -ETIMEDOUT);
}

/* ---- start ---- */

int lwsi_resolver_library_init(void)
{
  static bool done;
  if (done)
    return 0;
  int rc = ares_library_init(ARES_LIB_INIT_ALL);
  if (rc != ARES_SUCCESS)
    return rc == ARES_ENOMEM ? -ENOMEM : -EIO;
  done = true;
  return 0;
}

static void describe_servers(struct lwsi_resolver *r, const char *dns_server_text,
                             const char *resolv_conf)
{
  if (dns_server_text != NULL) {
    lwsi_text_printf(r->server_desc, sizeof(r->server_desc), "--dns-server %s", dns_server_text);
  } else {
    lwsi_text_printf(r->server_desc, sizeof(r->server_desc), "nameservers from %s (", resolv_conf);
    struct ares_addr_port_node *servers = NULL;
    if (ares_get_servers_ports(r->channel, &servers) == ARES_SUCCESS) {
      for (struct ares_addr_port_node *s = servers; s != NULL; s = s->next) {
        char ip[LWSI_RESOLVER_IP_MAX];
        if (inet_ntop(s->family, &s->addr, ip, sizeof(ip)) == NULL)
          continue;
        const char *sep = s == servers ? "" : ", ";
        if (s->udp_port != 0 && s->udp_port != 53)
          appendf(r->server_desc, sizeof(r->server_desc),
                  s->family == AF_INET6 ? "%s[%s]:%d" : "%s%s:%d", sep, ip, s->udp_port);
        else
          appendf(r->server_desc, sizeof(r->server_desc), "%s%s", sep, ip);
      }
      ares_free_data(servers);
    }
    appendf(r->server_desc, sizeof(r->server_desc), ")");
  }

  struct ares_options o;
  int mask = 0;
  if (ares_save_options(r->channel, &o, &mask) != ARES_SUCCESS)
    return;
  if (o.ndomains > 0) {
    lwsi_text_printf(r->search_desc, sizeof(r->search_desc), "search");
    for (int i = 0; i < o.ndomains; i++)
      appendf(r->search_desc, sizeof(r->search_desc), " %s", o.domains[i]);
  } else {
    lwsi_text_printf(r->search_desc, sizeof(r->search_desc), "no search list");
  }
  appendf(r->search_desc, sizeof(r->search_desc), "; ndots %d", o.ndots);
  ares_destroy_options(&o);
}

static int ares_errno(int rc)
{
  return rc == ARES_ENOMEM ? -ENOMEM : rc == ARES_EFILE ? -ENOENT : -EIO;
}

int lwsi_resolver_start(struct lwsi_resolver *r, uv_loop_t *loop, const char *name,
                        const struct lwsi_resolver_opts *opts, lwsi_resolver_cb done,
                        lwsi_resolver_progress_cb progress)
{
  static const struct lwsi_resolver_opts no_opts;
  if (r == NULL || loop == NULL || name == NULL || done == NULL)
    return -EINVAL;
  /* Handles still open (not closed, or the loop not run since) would be
   * initialized twice and corrupt the loop. */
  if (r->closing > 0 || (r->state != LWSI_RESOLVER_IDLE && r->state != LWSI_RESOLVER_CLOSED))
    return -EBUSY;
  if (opts == NULL)
    opts = &no_opts;
  if (name[0] == '\0')
    return -EINVAL;
  if (strlen(name) >= sizeof(r->name))
    return -ENAMETOOLONG;

  void *data = r->data;
  memset(r, 0, sizeof(*r));
  r->data = data;
  r->loop = loop;
  r->done = done;
  r->progress = progress;
  lwsi_text_copy(r->name, sizeof(r->name), name);
  rng_seed(r);
  r->retry_min = opts->retry_min_ms ? opts->retry_min_ms : LWSI_RESOLVER_RETRY_MIN_MS;
  r->retry_max = opts->retry_max_ms ? opts->retry_max_ms : LWSI_RESOLVER_RETRY_MAX_MS;
  if (r->retry_max < r->retry_min)
    r->retry_max = r->retry_min;
  r->retry_delay = r->retry_min;

  int family = parse_literal(name, r->ip, sizeof(r->ip));
  if (family != 0) {
    r->literal = true;
    r->family = family;
    lwsi_text_printf(r->server_desc, sizeof(r->server_desc), "none (IP literal)");
  } else {
    r->ip[0] = '\0';
    int rc = lwsi_resolver_library_init();
    if (rc < 0)
      return rc;

    /* The server override, checked before anything is allocated. */
    char server_csv[LWSI_RESOLVER_IP_MAX + 16];
    char server_ip[LWSI_RESOLVER_IP_MAX];
    const char *server_text = NULL;
    if (opts->dns_server != NULL && opts->dns_server[0] != '\0') {
      int sf = parse_literal(opts->dns_server, server_ip, sizeof(server_ip));
      if (sf == 0)
        return -EINVAL;
      unsigned port = opts->dns_port ? opts->dns_port : 53;
      /* ares_set_servers_ports_csv(3): "host:port", IPv6 as "[host]:port". */
      lwsi_text_printf(server_csv, sizeof(server_csv), sf == AF_INET6 ? "[%s]:%u" : "%s:%u",
                       server_ip, port);
      server_text = server_csv;
    }

    /* c-ares falls back to 127.0.0.1 and no search list when the file is
     * missing, as libc does for /etc/resolv.conf; a path the caller named
     * on purpose must exist. */
    const char *resolv_conf = opts->resolv_conf ? opts->resolv_conf : DEFAULT_RESOLV_CONF;
    if (opts->resolv_conf != NULL && access(opts->resolv_conf, R_OK) < 0)
      return -errno;

    struct ares_options o;
    memset(&o, 0, sizeof(o));
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = r;
    /* Short per-query timeouts: c-ares' default (5 s, 4 tries, doubling)
     * would hold a dead server's attempt for a minute; our own retries
     * repeat the query anyway. But each of our attempts is a new query
     * with a new id, so an answer later than one try is dropped, and a
     * server that always answers in 1 s would never be heard: the second
     * try (same id, twice the timeout) still takes the first one's answer
     * up to 2.25 s late, so that a slow server is still heard. With n
     * servers an attempt sends up to n * tries queries
     * (ares_init_options(3), ARES_OPT_TRIES). */
    o.timeout = (int)(opts->query_timeout_ms ? opts->query_timeout_ms
                                             : LWSI_RESOLVER_QUERY_TIMEOUT_MS);
    o.tries = (int)(opts->query_tries ? opts->query_tries : LWSI_RESOLVER_QUERY_TRIES);
    /* Hosts file, then DNS: "hosts: files dns", as in every pod image. */
    o.lookups = (char *)"fb";
    if (opts->hosts_env)
      r->ai_flags |= ARES_AI_ENVHOSTS;
    if (opts->resolv_conf != NULL) {
      /* ARES_OPT_RESOLVCONF (c-ares 1.15+): the search list and ndots of
       * another file, for tests. */
      o.resolvconf_path = (char *)opts->resolv_conf;
      mask |= ARES_OPT_RESOLVCONF;
    }
    rc = ares_init_options(&r->channel, &o, mask);
    if (rc != ARES_SUCCESS) {
      r->channel = NULL;
      return ares_errno(rc);
    }
    if (server_text != NULL) {
      /* Only the servers change; domains and ndots stay resolv.conf's. */
      rc = ares_set_servers_ports_csv(r->channel, server_text);
      if (rc != ARES_SUCCESS) {
        ares_destroy(r->channel);
        r->channel = NULL;
        return rc == ARES_ENOMEM ? -ENOMEM : -EINVAL;
      }
    }
    describe_servers(r, server_text, resolv_conf);
  }

  /* Nothing below fails (uv_timer_init and uv_timer_start cannot here), so
   * a failed start never leaves a handle to close. */
  (void)uv_timer_init(loop, &r->ares_timer);
  (void)uv_timer_init(loop, &r->retry);
  (void)uv_timer_init(loop, &r->deadline);
  r->ares_timer.data = r;
  r->retry.data = r;
  r->deadline.data = r;
  r->timers_open = true;
  uv_update_time(loop);
  r->started = uv_now(loop);
  r->last_progress = r->started;

  if (r->literal) {
    /* Answered on the next loop turn, like every other result. */
    r->state = LWSI_RESOLVER_WAITING;
    (void)uv_timer_start(&r->retry, on_retry, 0, 0);
    return 0;
  }
  if (opts->timeout_ms > 0)
    (void)uv_timer_start(&r->deadline, on_deadline, opts->timeout_ms, 0);
  /* The first attempt, on the loop too, so that done never runs inside
   * lwsi_resolver_start even when the hosts file answers at once. */
  r->state = LWSI_RESOLVER_WAITING;
  (void)uv_timer_start(&r->retry, on_retry, 0, 0);
  return 0;
}

/* ---- close ---- */

void lwsi_resolver_close(struct lwsi_resolver *r)
{
  if (r == NULL || r->state == LWSI_RESOLVER_CLOSING || r->state == LWSI_RESOLVER_CLOSED)
    return;
  if (r->state == LWSI_RESOLVER_IDLE) {
    r->state = LWSI_RESOLVER_CLOSED; /* never started, or start failed: nothing open */
    return;
  }
  r->state = LWSI_RESOLVER_CLOSING;
  if (r->channel != NULL) {
    /* Ends pending queries with ARES_EDESTRUCTION (ignored: CLOSING) and
     * reports every socket closed through on_sock_state, which closes its
     * poll handle before c-ares closes the fd. */
    ares_channel ch = r->channel;
    r->channel = NULL;
    ares_destroy(ch);
  }
  while (r->socks != NULL)
    close_sock(r, r->socks);
  if (r->timers_open) {
    r->timers_open = false;
    uv_handle_t *timers[] = {(uv_handle_t *)&r->ares_timer, (uv_handle_t *)&r->retry,
                             (uv_handle_t *)&r->deadline};
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
      r->closing++;
      uv_close(timers[i], on_timer_closed);
    }
  }
}
