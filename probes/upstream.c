/* The upstream health poller (include/lwsinit/upstream.h): libcurl loaded
 * with dlopen and driven by the agent's loop. It polls whatever URL it is
 * given; which URL an engine serves is the engine table's (engine.h). */
#include "lwsinit/upstream.h"

/* Headers only: every curl_* function is reached through the table below,
 * filled by dlsym. Nothing here may call libcurl directly, and the build
 * proves it: the binary is not linked with -lcurl, so a direct call would
 * not link. Deprecation warnings are off because CURLOPT_PROTOCOLS, the
 * fallback for libcurl < 7.85, is deprecated in newer headers. */
#define CURL_DISABLE_DEPRECATION 1
#include <curl/curl.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

_Static_assert(sizeof(void *) == sizeof(void (*)(void)),
               "dlsym results are stored into function pointers");
_Static_assert(CURL_ERROR_SIZE <= sizeof(((struct lwsi_upstream *)0)->curl_err),
               "curl_err holds CURLOPT_ERRORBUFFER");

/* The functions used, with the prototypes of the headers (__typeof__), so
 * that every call is type-checked as a direct call would be. */
struct curl_api {
  __typeof__(curl_global_init) *global_init;
  __typeof__(curl_version) *version;
  __typeof__(curl_easy_init) *easy_init;
  __typeof__(curl_easy_setopt) *easy_setopt;
  __typeof__(curl_easy_getinfo) *easy_getinfo;
  __typeof__(curl_easy_strerror) *easy_strerror;
  __typeof__(curl_easy_cleanup) *easy_cleanup;
  __typeof__(curl_multi_init) *multi_init;
  __typeof__(curl_multi_setopt) *multi_setopt;
  __typeof__(curl_multi_add_handle) *multi_add_handle;
  __typeof__(curl_multi_remove_handle) *multi_remove_handle;
  __typeof__(curl_multi_socket_action) *multi_socket_action;
  __typeof__(curl_multi_info_read) *multi_info_read;
  __typeof__(curl_multi_assign) *multi_assign;
  __typeof__(curl_multi_strerror) *multi_strerror;
  __typeof__(curl_multi_cleanup) *multi_cleanup;
};

#define SYM(field) {"curl_" #field, offsetof(struct curl_api, field)}
static const struct {
  const char *name;
  size_t off;
} curl_syms[] = {
  SYM(global_init),      SYM(version),
  SYM(easy_init),        SYM(easy_setopt),
  SYM(easy_getinfo),     SYM(easy_strerror),
  SYM(easy_cleanup),     SYM(multi_init),
  SYM(multi_setopt),     SYM(multi_add_handle),
  SYM(multi_remove_handle), SYM(multi_socket_action),
  SYM(multi_info_read),  SYM(multi_assign),
  SYM(multi_strerror),   SYM(multi_cleanup),
};
#undef SYM

/* Process-wide, like the library itself: loaded once, never unloaded. The
 * agent is single-threaded, so no lock. */
static struct curl_api api;
static bool api_loaded;
static const char *api_version;

/* A poll aborts its body after this much: a health answer is small, and a
 * server streaming without end must not hold the poll until its timeout.
 * The status line has arrived by then, so the poll still counts. */
#define BODY_CAP (64 * 1024)

/* Loopback connects succeed or are refused at once; waiting longer only
 * helps a remote upstream, which --upstream-timeout still bounds. */
#define CONNECT_TIMEOUT_MS 1000

/* One uv_poll for each socket curl asks us to watch (CURLMOPT_SOCKETFUNCTION),
 * listed in the owner so that close can account for all of them. */
struct lwsi_upstream_sock {
  uv_poll_t poll;
  curl_socket_t fd;
  int events;   /* what curl last asked for */
  bool removed; /* uv_close'd; freed by the close callback */
  struct lwsi_upstream *u;
  struct lwsi_upstream_sock *next;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int try_load(const char *name, char *err, size_t errlen)
{
  /* RTLD_LOCAL: curl's symbols and its dependencies' stay out of the
   * global scope, where they could satisfy libraries loaded later.
   * RTLD_NOW: a broken library fails here, not in the middle of a poll. */
  void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *why = dlerror();
    set_err(err, errlen, "cannot load %s: %s", name, why ? why : "unknown error");
    return -ELIBACC;
  }
  struct curl_api tmp;
  memset(&tmp, 0, sizeof(tmp));
  for (size_t i = 0; i < sizeof(curl_syms) / sizeof(curl_syms[0]); i++) {
    void *p = dlsym(h, curl_syms[i].name);
    if (p == NULL) {
      set_err(err, errlen, "%s has no %s (too old a libcurl?)", name, curl_syms[i].name);
      /* Not dlclose'd either: the constructors of it and of what it pulled
       * in have run, and may have registered atexit handlers. A mapping
       * kept is cheaper than a crash at exit. */
      return -ELIBBAD;
    }
    memcpy((char *)&tmp + curl_syms[i].off, &p, sizeof(p));
  }
  /* CURL_GLOBAL_DEFAULT initialises the TLS backend once, now, rather than
   * implicitly and lazily inside the first easy handle. */
  CURLcode rc = tmp.global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    set_err(err, errlen, "%s: curl_global_init failed: %s", name, tmp.easy_strerror(rc));
    /* Not dlclose'd: its initialisation may have half-run. */
    return -ELIBBAD;
  }
  api = tmp;
  api_loaded = true;
  api_version = api.version();
  return 0;
}

int lwsi_upstream_load(const char *name, char *err, size_t errlen)
{
  static const char *const defaults[] = {"libcurl.so.4", "libcurl-gnutls.so.4"};
  if (api_loaded)
    return 0;
  if (name != NULL)
    return try_load(name, err, errlen);
  /* The reason kept is the first candidate's: it is the usual library, so
   * its dlerror text is the one that helps. */
  int first = 0;
  for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
    int rc = try_load(defaults[i], i == 0 ? err : NULL, i == 0 ? errlen : 0);
    if (rc == 0)
      return 0;
    if (i == 0)
      first = rc;
  }
  return first;
}

const char *lwsi_upstream_curl_version(void)
{
  return api_loaded ? api_version : NULL;
}

static const char *const outcome_names[LWSI_UPSTREAM_OUTCOME_COUNT] = {
  "none", "ok", "http", "timeout", "connect", "error",
};

uint64_t lwsi_upstream_hang_left(const struct lwsi_upstream *u, uint64_t now_ms,
                                 uint64_t hang_ms)
{
  if (hang_ms == 0 || !u->known || u->ok || !u->ever_ok || !u->failing)
    return UINT64_MAX;
  uint64_t failed_for = now_ms > u->failing_since_ms ? now_ms - u->failing_since_ms : 0;
  return failed_for >= hang_ms ? 0 : hang_ms - failed_for;
}

const char *lwsi_upstream_outcome_name(enum lwsi_upstream_outcome o)
{
  if ((unsigned)o >= LWSI_UPSTREAM_OUTCOME_COUNT)
    return "none";
  return outcome_names[o];
}

/* ---- results ---------------------------------------------------------- */

/* The reason is formatted straight into last_error; a long URL or curl
 * message is cut at its size, which is fine for a reason text. */
static void record(struct lwsi_upstream *u, enum lwsi_upstream_outcome outcome, long status,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void record(struct lwsi_upstream *u, enum lwsi_upstream_outcome outcome, long status,
                   const char *fmt, ...)
{
  bool ok = outcome == LWSI_UPSTREAM_OK;
  bool notify = !u->known || u->ok != ok;
  u->in_flight = false;
  u->last_latency_s = (double)(uv_hrtime() - u->poll_start_ns) / 1e9;
  u->outcome = outcome;
  u->http_status = status;
  u->polls++;
  u->by_outcome[outcome]++;
  if (ok) {
    u->consecutive_failures = 0;
    u->last_error[0] = '\0';
    u->ever_ok = true;
    u->failing = false;
  } else {
    if (!u->failing) {
      /* The run of failures counts from the start of its first poll: a
       * poll that timed out was already failing when it began. */
      u->failing = true;
      u->failing_since_ms = u->poll_start_ms;
    }
    u->failures++;
    u->consecutive_failures++;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->last_error, sizeof(u->last_error), fmt, ap);
    va_end(ap);
  }
  if (notify)
    u->changed_ms = uv_now(u->loop);
  u->known = true;
  u->ok = ok;
  /* Last: the callback may close u. */
  if (notify && u->on_change != NULL && !u->closing)
    u->on_change(u);
}

static void finish_transfer(struct lwsi_upstream *u, CURLcode code)
{
  long status = 0, os_errno = 0;
  curl_off_t connect_us = 0;
  api.easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &status);
  api.easy_getinfo(u->easy, CURLINFO_OS_ERRNO, &os_errno);
  api.easy_getinfo(u->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  /* Removing the handle ends the transfer and, with CURLOPT_FORBID_REUSE,
   * closes its socket (CURL_POLL_REMOVE reaches sock_cb). The easy handle
   * keeps its options for the next poll. */
  api.multi_remove_handle(u->multi, u->easy);

  /* curl's error buffer says the most (what, where, after how long); its
   * generic text is the fallback. */
  const char *detail = u->curl_err[0] != '\0' ? u->curl_err : api.easy_strerror(code);

  if (code == CURLE_OK || (code == CURLE_WRITE_ERROR && u->body_capped)) {
    if (status >= 200 && status <= 299)
      record(u, LWSI_UPSTREAM_OK, status, "%s", "");
    else
      record(u, LWSI_UPSTREAM_HTTP, status, "HTTP %ld from %s", status, u->url);
    return;
  }
  switch (code) {
  case CURLE_OPERATION_TIMEDOUT:
    /* Whether the connection was made tells "not listening yet / stuck
     * accept queue" from "accepted but not answering". */
    record(u, LWSI_UPSTREAM_TIMEOUT, status, "timed out after %llu ms %s",
           (unsigned long long)u->timeout_ms,
           connect_us > 0 ? "waiting for the answer" : "connecting");
    return;
  case CURLE_COULDNT_CONNECT:
    /* curl's text says "Couldn't connect to server"; the errno says why
     * (most often: Connection refused, nothing listens yet). */
    if (os_errno != 0)
      record(u, LWSI_UPSTREAM_CONNECT, status, "cannot connect to %s: %s", u->url,
             strerror((int)os_errno));
    else
      record(u, LWSI_UPSTREAM_CONNECT, status, "cannot connect: %s", detail);
    return;
  case CURLE_COULDNT_RESOLVE_HOST:
    record(u, LWSI_UPSTREAM_CONNECT, status, "cannot connect: %s", detail);
    return;
  default:
    record(u, LWSI_UPSTREAM_ERROR, status, "%s", detail);
    return;
  }
}

/* Collects finished transfers. Called after each curl_multi_socket_action,
 * never from inside a curl callback, so that on_change may close u. */
static void check_done(struct lwsi_upstream *u)
{
  CURLMsg *msg;
  int left;
  while (!u->closing && u->multi != NULL &&
         (msg = api.multi_info_read(u->multi, &left)) != NULL) {
    if (msg->msg == CURLMSG_DONE && msg->easy_handle == u->easy)
      finish_transfer(u, msg->data.result);
  }
}

/* ---- libuv <-> curl multi -------------------------------------------- */

static void on_sock_closed(uv_handle_t *h)
{
  free(h->data);
}

static void sock_unlink(struct lwsi_upstream *u, struct lwsi_upstream_sock *c)
{
  for (struct lwsi_upstream_sock **pp = &u->socks; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  c->removed = true;
  /* uv_close stops the poll and takes the fd out of epoll at once
   * (uv__platform_invalidate_fd), so curl may reuse the fd number for a
   * new socket before this handle's close callback has run. */
  uv_close((uv_handle_t *)&c->poll, on_sock_closed);
}

static void on_sock(uv_poll_t *h, int status, int events)
{
  struct lwsi_upstream_sock *c = h->data;
  struct lwsi_upstream *u = c->u;
  int flags = 0;
  if (status < 0) {
    /* POLLERR (a reset, say); libuv has stopped the handle. Rather than
     * CURL_CSELECT_ERR, whose text is only "select/poll returned error",
     * let curl read and write: the syscall then fails with the real
     * reason ("Connection reset by peer"). */
    flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  } else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  int running;
  /* c may be closed (CURL_POLL_REMOVE) inside this call; its memory lives
   * until the close callback. */
  api.multi_socket_action(u->multi, c->fd, flags, &running);
  /* A socket curl still wants, whose handle libuv stopped on the error,
   * is watched again, or the transfer would wait for its timeout. */
  if (!c->removed && !u->closing && !uv_is_active((uv_handle_t *)&c->poll))
    uv_poll_start(&c->poll, c->events, on_sock);
  check_done(u);
}

static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
  struct lwsi_upstream *u = userp;
  struct lwsi_upstream_sock *c = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (c != NULL) {
      sock_unlink(u, c);
      /* Not while curl_multi_cleanup runs: its socket hash is going away. */
      if (!u->closing)
        api.multi_assign(u->multi, fd, NULL);
    }
    return 0;
  }
  if (c == NULL) {
    c = calloc(1, sizeof(*c));
    if (c == NULL)
      return -1; /* curl fails the transfer (CURLM_ABORTED_BY_CALLBACK). */
    if (uv_poll_init_socket(u->loop, &c->poll, fd) < 0) {
      free(c);
      return -1;
    }
    c->fd = fd;
    c->u = u;
    c->poll.data = c;
    c->next = u->socks;
    u->socks = c;
    api.multi_assign(u->multi, fd, c);
  }
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  c->events = events;
  if (uv_poll_start(&c->poll, events, on_sock) < 0)
    return -1;
  return 0;
}

static void on_curl_timer(uv_timer_t *t)
{
  struct lwsi_upstream *u = t->data;
  int running;
  api.multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(u);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
  struct lwsi_upstream *u = userp;
  if (timeout_ms < 0) {
    uv_timer_stop(&u->curl_timer);
    return 0;
  }
  /* Also for 0: curl must not be re-entered from its own callback, so
   * "now" means the next loop iteration. */
  if (!u->closing)
    uv_timer_start(&u->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  struct lwsi_upstream *u = userdata;
  size_t n = size * nmemb;
  u->body_bytes += n;
  if (u->body_bytes > BODY_CAP) {
    u->body_capped = true;
    return 0; /* CURLE_WRITE_ERROR: aborts the transfer. */
  }
  return n;
}

static void on_tick(uv_timer_t *t)
{
  struct lwsi_upstream *u = t->data;
  if (u->in_flight) {
    u->skipped++;
    return;
  }
  u->in_flight = true;
  u->curl_err[0] = '\0';
  u->body_bytes = 0;
  u->body_capped = false;
  u->poll_start_ns = uv_hrtime();
  u->poll_start_ms = uv_now(u->loop);
  /* Adding the handle makes curl ask for a 0 ms timeout (timer_cb); the
   * transfer starts on the next loop iteration. */
  CURLMcode mc = api.multi_add_handle(u->multi, u->easy);
  if (mc != CURLM_OK) {
    record(u, LWSI_UPSTREAM_ERROR, 0, "cannot start a poll: %s", api.multi_strerror(mc));
  }
}

/* ---- start / close ---------------------------------------------------- */

#define EASY_OPT(opt, val)                                                                   \
  do {                                                                                       \
    CURLcode rc_ = api.easy_setopt(u->easy, opt, val);                                       \
    if (rc_ != CURLE_OK) {                                                                   \
      set_err(err, errlen, "curl option %s: %s", #opt, api.easy_strerror(rc_));              \
      return -EINVAL;                                                                        \
    }                                                                                        \
  } while (0)

static int setup_easy(struct lwsi_upstream *u, char *err, size_t errlen)
{
  uint64_t connect_ms = u->timeout_ms < CONNECT_TIMEOUT_MS ? u->timeout_ms : CONNECT_TIMEOUT_MS;

  EASY_OPT(CURLOPT_URL, u->url);
  /* Only HTTP(S), now and for anything the URL could lead to. The string
   * form is 7.85+; older libraries take the bit mask. */
  if (api.easy_setopt(u->easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK)
    EASY_OPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  /* A redirect is an answer, and not a 2xx one. */
  EASY_OPT(CURLOPT_FOLLOWLOCATION, 0L);
  /* No proxy: http_proxy from the pod's environment must not route a
   * loopback health check elsewhere. */
  EASY_OPT(CURLOPT_NOPROXY, "*");
  EASY_OPT(CURLOPT_PROXY, "");
  /* PID 1 owns the signals: no SIGALRM for timeouts, no SIGPIPE handler
   * swaps (curl sends with MSG_NOSIGNAL). */
  EASY_OPT(CURLOPT_NOSIGNAL, 1L);
  EASY_OPT(CURLOPT_TIMEOUT_MS, (long)u->timeout_ms);
  EASY_OPT(CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
  /* A fresh connection each poll: a server that stopped accepting is
   * caught, and PID 1 holds no socket to the engine between polls. */
  EASY_OPT(CURLOPT_FORBID_REUSE, 1L);
  EASY_OPT(CURLOPT_HTTPGET, 1L);
  EASY_OPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  /* Like the kubelet's HTTPS probe: it checks that the server answers,
   * not who it is, and carries no secret. A local engine's certificate is
   * not issued for 127.0.0.1. */
  EASY_OPT(CURLOPT_SSL_VERIFYPEER, 0L);
  EASY_OPT(CURLOPT_SSL_VERIFYHOST, 0L);
  EASY_OPT(CURLOPT_USERAGENT, "lwsinit-upstream");
  EASY_OPT(CURLOPT_WRITEFUNCTION, on_body);
  EASY_OPT(CURLOPT_WRITEDATA, (void *)u);
  EASY_OPT(CURLOPT_ERRORBUFFER, u->curl_err);
  EASY_OPT(CURLOPT_PRIVATE, (void *)u);
  return 0;
}

static int setup_multi(struct lwsi_upstream *u, char *err, size_t errlen)
{
  CURLMcode mc;
  if ((mc = api.multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, sock_cb)) != CURLM_OK ||
      (mc = api.multi_setopt(u->multi, CURLMOPT_SOCKETDATA, (void *)u)) != CURLM_OK ||
      (mc = api.multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb)) != CURLM_OK ||
      (mc = api.multi_setopt(u->multi, CURLMOPT_TIMERDATA, (void *)u)) != CURLM_OK) {
    set_err(err, errlen, "curl multi option: %s", api.multi_strerror(mc));
    return -EINVAL;
  }
  return 0;
}

static bool http_url(const char *url)
{
  return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

static void free_curl(struct lwsi_upstream *u)
{
  if (u->easy != NULL) {
    /* Removing a handle that is not in the multi is harmless. */
    if (u->multi != NULL)
      api.multi_remove_handle(u->multi, u->easy);
    api.easy_cleanup(u->easy);
    u->easy = NULL;
  }
  if (u->multi != NULL) {
    api.multi_cleanup(u->multi);
    u->multi = NULL;
  }
}

int lwsi_upstream_start(struct lwsi_upstream *u, uv_loop_t *loop, const char *url,
                        uint64_t interval_ms, uint64_t timeout_ms, lwsi_upstream_cb on_change,
                        char *err, size_t errlen)
{
  void *data = u->data;
  memset(u, 0, sizeof(*u));
  u->data = data;

  if (url == NULL || !http_url(url)) {
    set_err(err, errlen, "upstream URL %s is not http:// or https://", url ? url : "(null)");
    return -EINVAL;
  }
  if (strlen(url) >= sizeof(u->url)) {
    set_err(err, errlen, "upstream URL is longer than %zu bytes", sizeof(u->url) - 1);
    return -ENAMETOOLONG;
  }
  /* curl takes a long of milliseconds; a day is beyond any sane probe. */
  if (interval_ms == 0 || timeout_ms == 0 || timeout_ms > 86400000 || interval_ms > 86400000) {
    set_err(err, errlen, "upstream interval and timeout must be 1 ms .. 1 day");
    return -EINVAL;
  }
  int rc = lwsi_upstream_load(NULL, err, errlen);
  if (rc < 0)
    return rc;

  snprintf(u->url, sizeof(u->url), "%s", url);
  u->interval_ms = interval_ms;
  u->timeout_ms = timeout_ms;
  u->on_change = on_change;

  u->multi = api.multi_init();
  u->easy = api.easy_init();
  if (u->multi == NULL || u->easy == NULL) {
    free_curl(u);
    set_err(err, errlen, "cannot create curl handles");
    return -ENOMEM;
  }
  if ((rc = setup_multi(u, err, errlen)) < 0 || (rc = setup_easy(u, err, errlen)) < 0) {
    free_curl(u);
    return rc;
  }

  /* The uv handles come last: until here a failure needs no loop turn. */
  u->loop = loop;
  uv_timer_init(loop, &u->tick);
  uv_timer_init(loop, &u->curl_timer);
  u->tick.data = u;
  u->curl_timer.data = u;
  rc = uv_timer_start(&u->tick, on_tick, 0, interval_ms);
  if (rc < 0) {
    set_err(err, errlen, "cannot start the poll timer: %s", uv_strerror(rc));
    lwsi_upstream_close(u);
    return rc;
  }
  return 0;
}

void lwsi_upstream_close(struct lwsi_upstream *u)
{
  if (u->loop == NULL || u->closing)
    return;
  u->closing = true;
  u->in_flight = false;
  /* Removing the easy handle closes its socket: sock_cb gets
   * CURL_POLL_REMOVE and closes that uv_poll. */
  free_curl(u);
  /* Whatever curl did not report removed (it always should) goes too. */
  while (u->socks != NULL)
    sock_unlink(u, u->socks);
  uv_close((uv_handle_t *)&u->tick, NULL);
  uv_close((uv_handle_t *)&u->curl_timer, NULL);
}
