/* The upstream poller against a real HTTP server on loopback: a forked
 * child written here, driven through a control socket so that each test
 * decides how it answers (200, 503, redirect, endless body, hang, close,
 * not listening). All in one uv loop; every wait has a deadline. */
#include "lwsinit/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

#define INTERVAL_MS 100
#define TIMEOUT_MS 700
#define PACE_MS 10

/* ---- the server child -------------------------------------------------- */

static int listen_on(uint16_t port)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  /* Rebinding the same port after mode 'x' must not trip on TIME_WAIT. */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static uint16_t port_of(int fd)
{
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
    return 0;
  return ntohs(sa.sin_port);
}

static void send_all(int fd, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n <= 0)
      return;
    buf += n;
    len -= (size_t)n;
  }
}

/* Reads the request head (up to a second); returns whether it asked for
 * /elsewhere, the redirect target. */
static bool read_request(int fd)
{
  char buf[4096];
  size_t got = 0;
  while (got < sizeof(buf) - 1) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0)
      break;
    ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
    if (n <= 0)
      break;
    got += (size_t)n;
    buf[got] = '\0';
    if (strstr(buf, "\r\n\r\n") != NULL)
      break;
  }
  buf[got] = '\0';
  return strncmp(buf, "GET /elsewhere", 14) == 0;
}

static void answer(int fd, char mode)
{
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
  static const char unavailable[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  static const char redirect[] = "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n"
                                 "Content-Length: 0\r\nConnection: close\r\n\r\n";
  static const char endless[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
  bool elsewhere = read_request(fd);
  if (elsewhere) {
    /* Were the redirect followed, the poll would be healthy. */
    send_all(fd, ok, sizeof(ok) - 1);
  } else if (mode == '5') {
    send_all(fd, unavailable, sizeof(unavailable) - 1);
  } else if (mode == 'r') {
    send_all(fd, redirect, sizeof(redirect) - 1);
  } else if (mode == 'b') {
    /* No length, no end: 64 MiB unless the client gives up first. */
    static char chunk[16384];
    memset(chunk, 'x', sizeof(chunk));
    send_all(fd, endless, sizeof(endless) - 1);
    for (int i = 0; i < 4096; i++) {
      if (send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL) <= 0)
        break;
    }
  } else {
    send_all(fd, ok, sizeof(ok) - 1);
  }
  close(fd);
}

/* Modes: '2' 200, '5' 503, 'r' 302, 'b' endless body, 'h' accept and never
 * answer, 'c' accept and close, 'x' stop listening, 'q' quit. Each mode
 * byte is acknowledged once in effect, so the parent knows that every
 * connection made afterwards sees it. */
static void serve(int lfd, int ctl, uint16_t port)
{
  char mode = '2';
  int hung[64];
  size_t nhung = 0;
  for (;;) {
    struct pollfd p[2] = {{ctl, POLLIN, 0}, {lfd, POLLIN, 0}};
    if (poll(p, lfd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR)
        continue;
      _exit(1);
    }
    if (p[0].revents != 0) {
      char c;
      if (read(ctl, &c, 1) != 1 || c == 'q')
        _exit(0);
      for (size_t i = 0; i < nhung; i++)
        close(hung[i]);
      nhung = 0;
      mode = c;
      if (c == 'x' && lfd >= 0) {
        close(lfd);
        lfd = -1;
      } else if (c != 'x' && lfd < 0) {
        lfd = listen_on(port);
        if (lfd < 0)
          _exit(1);
      }
      if (write(ctl, "k", 1) != 1)
        _exit(1);
      continue;
    }
    if (lfd < 0 || (p[1].revents & POLLIN) == 0)
      continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    if (mode == 'h') {
      if (nhung == sizeof(hung) / sizeof(hung[0]))
        close(hung[--nhung]);
      hung[nhung++] = fd;
    } else if (mode == 'c') {
      close(fd);
    } else {
      answer(fd, mode);
    }
  }
}

static pid_t srv_pid;
static int srv_ctl = -1;
static uint16_t srv_port;

static int srv_start(void)
{
  int lfd = listen_on(0);
  int sv[2];
  if (lfd < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return -1;
  srv_port = port_of(lfd);
  srv_pid = fork();
  if (srv_pid < 0)
    return -1;
  if (srv_pid == 0) {
    /* Never outlive a test that crashed. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(sv[0]);
    serve(lfd, sv[1], srv_port);
    _exit(0);
  }
  close(lfd);
  close(sv[1]);
  srv_ctl = sv[0];
  return 0;
}

static bool srv_acked;

static bool srv_ack(void)
{
  struct pollfd p = {srv_ctl, POLLIN, 0};
  char k;
  if (!srv_acked && poll(&p, 1, 0) == 1 && read(srv_ctl, &k, 1) == 1 && k == 'k')
    srv_acked = true;
  return srv_acked;
}

static bool wait_until(bool (*pred)(void), uint64_t deadline_ms);

/* The loop keeps running while the child takes the new mode: the child may
 * be waiting for the request of a poll in flight, which only the loop can
 * send. */
static bool srv_mode(char c)
{
  if (write(srv_ctl, &c, 1) != 1)
    return false;
  if (c == 'q')
    return true;
  srv_acked = false;
  return wait_until(srv_ack, 3000);
}

/* ---- the loop ------------------------------------------------------------ */

static uv_loop_t loop;
static uv_timer_t pace;
static uint64_t pace_last_ns, max_late_ns;

/* A timer at a steady pace: how late it fires shows whether anything
 * blocked the loop. */
static void on_pace(uv_timer_t *t)
{
  uint64_t now = uv_hrtime();
  uint64_t want = pace_last_ns + (uint64_t)PACE_MS * 1000000;
  if (pace_last_ns != 0 && now > want && now - want > max_late_ns)
    max_late_ns = now - want;
  pace_last_ns = now;
}

static void pace_reset(void)
{
  pace_last_ns = 0;
  max_late_ns = 0;
}

static uint64_t ms_since(uint64_t t0_ns)
{
  return (uv_hrtime() - t0_ns) / 1000000;
}

typedef bool (*pred_fn)(void);

static bool wait_until(pred_fn pred, uint64_t deadline_ms)
{
  uint64_t t0 = uv_hrtime();
  while (!pred()) {
    if (ms_since(t0) > deadline_ms)
      return false;
    uv_run(&loop, UV_RUN_ONCE);
  }
  return true;
}

static struct lwsi_upstream up;
static int changes;
static uint64_t want_polls;
static enum lwsi_upstream_outcome want_outcome;

static void on_change(struct lwsi_upstream *u)
{
  changes++;
  if (u->data != &changes)
    changes += 1000; /* u->data was not kept */
}

static bool up_ok(void) { return up.known && up.ok; }
static bool up_down(void) { return up.known && !up.ok; }
static bool up_in_flight(void) { return up.in_flight; }

/* A poll that finished after a given point, with a given outcome. */
static bool up_outcome(void)
{
  return up.polls >= want_polls && up.outcome == want_outcome;
}

/* Waits for a poll that started after the mode switch: the one in flight
 * at the switch may still finish the old way, the one after cannot. */
static bool wait_outcome(enum lwsi_upstream_outcome o, uint64_t deadline_ms)
{
  want_polls = up.polls + 2;
  want_outcome = o;
  return wait_until(up_outcome, deadline_ms);
}

/* A second poller that closes itself from its own callback. */
static struct lwsi_upstream self_closing;
static int self_closing_calls;

static void close_from_cb(struct lwsi_upstream *u)
{
  self_closing_calls++;
  lwsi_upstream_close(u);
}

static bool self_closing_done(void) { return self_closing.known; }

/* ---- helpers ------------------------------------------------------------- */

static long rss_kib(void)
{
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, resident = 0;
  if (f == NULL)
    return -1;
  if (fscanf(f, "%ld %ld", &size, &resident) != 2)
    resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Anonymous and written pages: what the dlopen really costs the pod,
 * beyond shared library text that the page cache holds anyway. */
static long private_dirty_kib(void)
{
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  long kib = -1;
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "Private_Dirty: %ld kB", &kib) == 1)
      break;
  fclose(f);
  return kib;
}

static bool mapped(const char *needle)
{
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  bool found = false;
  if (f == NULL)
    return false;
  while (!found && fgets(line, sizeof(line), f) != NULL)
    found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static uint16_t unused_port(void)
{
  int fd = listen_on(0);
  uint16_t port = port_of(fd);
  close(fd);
  return port;
}

static void count_handle(uv_handle_t *h, void *arg)
{
  (*(int *)arg)++;
}

/* ---- the tests ----------------------------------------------------------- */

/* Which URL each preset polls is the engine table's (test_engine). */
static void test_outcome_names(void)
{
  TAP_STR_EQ(lwsi_upstream_outcome_name(LWSI_UPSTREAM_TIMEOUT), "timeout", "outcome names");
  TAP_STR_EQ(lwsi_upstream_outcome_name(LWSI_UPSTREAM_NONE), "none", "no result yet: none");
}

/* The hang rule on plain structs: no network, no clock. */
static void test_hang_rule(void)
{
  struct lwsi_upstream u;
  memset(&u, 0, sizeof(u));
  TAP_OK(lwsi_upstream_hang_left(&u, 100000, 30000) == UINT64_MAX, "no result: no hang");
  u.known = true;
  u.failing = true;
  u.failing_since_ms = 1000;
  TAP_OK(lwsi_upstream_hang_left(&u, 100000, 30000) == UINT64_MAX,
         "never healthy: a slow start, not a hang");
  u.ever_ok = true;
  TAP_OK(lwsi_upstream_hang_left(&u, 1000, 30000) == 30000, "the run just began: 30 s left");
  TAP_OK(lwsi_upstream_hang_left(&u, 21000, 30000) == 10000, "20 s in: 10 s left");
  TAP_OK(lwsi_upstream_hang_left(&u, 31000, 30000) == 0, "30 s in: hung");
  TAP_OK(lwsi_upstream_hang_left(&u, 500, 30000) == 30000, "a clock before the run is no time");
  TAP_OK(lwsi_upstream_hang_left(&u, 31000, 0) == UINT64_MAX, "--hang-timeout 0: never");
  u.failing = false;
  u.ok = true;
  TAP_OK(lwsi_upstream_hang_left(&u, 31000, 30000) == UINT64_MAX, "healthy now: no hang");
}

static void test_bad_start(void)
{
  char err[256] = "";
  struct lwsi_upstream u;
  memset(&u, 0, sizeof(u));
  TAP_OK(lwsi_upstream_start(&u, &loop, "ftp://127.0.0.1/x", 100, 100, NULL, err,
                             sizeof(err)) == -EINVAL && strstr(err, "ftp://") != NULL,
         "an ftp:// URL is refused (%s)", err);
  TAP_OK(lwsi_upstream_start(&u, &loop, "file:///etc/passwd", 100, 100, NULL, err,
                             sizeof(err)) == -EINVAL,
         "a file:// URL is refused");
  TAP_OK(lwsi_upstream_start(&u, &loop, "http://127.0.0.1:1/", 0, 100, NULL, err,
                             sizeof(err)) == -EINVAL,
         "a zero interval is refused");
  static char longurl[2048];
  memset(longurl, 'a', sizeof(longurl) - 1);
  memcpy(longurl, "http://", 7);
  TAP_OK(lwsi_upstream_start(&u, &loop, longurl, 100, 100, NULL, err, sizeof(err)) ==
             -ENAMETOOLONG,
         "an overlong URL is refused");
  lwsi_upstream_close(&u); /* allowed after a failed start */
  int n = 0;
  uv_walk(&loop, count_handle, &n);
  TAP_OK(n == 1, "a failed start leaves no handle behind (%d, the test's own timer)", n);
}

static void test_load_failures(void)
{
  char err[256] = "";
  TAP_OK(!mapped("libcurl"), "libcurl is not mapped before polling starts (not linked)");
  int rc = lwsi_upstream_load("libdoes-not-exist.so.9", err, sizeof(err));
  TAP_OK(rc == -ELIBACC && strstr(err, "libdoes-not-exist.so.9") != NULL,
         "a missing library: -ELIBACC with the reason (%s)", err);
  rc = lwsi_upstream_load("libc.so.6", err, sizeof(err));
  TAP_OK(rc == -ELIBBAD && strstr(err, "curl_") != NULL,
         "a library without curl's functions: -ELIBBAD (%s)", err);
  TAP_OK(lwsi_upstream_curl_version() == NULL, "no version before a load");
}

static void test_load_cost(void)
{
  char err[256] = "";
  long rss0 = rss_kib(), dirty0 = private_dirty_kib();
  uint64_t t0 = uv_hrtime();
  int rc = lwsi_upstream_load(NULL, err, sizeof(err));
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  long rss1 = rss_kib(), dirty1 = private_dirty_kib();
  TAP_OK(rc == 0, "libcurl loads at run time (%s)", rc == 0 ? "ok" : err);
  TAP_OK(mapped("libcurl"), "and is mapped now");
  printf("# first dlopen of libcurl + curl_global_init: %.1f ms, RSS +%ld KiB (%ld -> %ld "
         "KiB), of which private dirty +%ld KiB\n# %s\n",
         ms, rss1 - rss0, rss0, rss1, dirty1 - dirty0,
         lwsi_upstream_curl_version() ? lwsi_upstream_curl_version() : "?");
  t0 = uv_hrtime();
  rc = lwsi_upstream_load(NULL, err, sizeof(err));
  TAP_OK(rc == 0 && ms_since(t0) < 50, "a second load is a no-op");
}

static void test_polling(void)
{
  char err[256] = "";
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%u/health", srv_port);

  /* Healthy. */
  up.data = &changes;
  uint64_t t0 = uv_hrtime();
  int rc = lwsi_upstream_start(&up, &loop, url, INTERVAL_MS, TIMEOUT_MS, on_change, err,
                               sizeof(err));
  TAP_OK(rc == 0, "start polls %s (%s)", url, rc == 0 ? "ok" : err);
  if (rc < 0)
    return;
  TAP_OK(up.data == &changes, "start keeps u->data");
  bool ok = wait_until(up_ok, 3000);
  uint64_t took = ms_since(t0);
  TAP_OK(ok && took <= INTERVAL_MS + 1000, "healthy: ok after %llu ms (first poll at once)",
         (unsigned long long)took);
  TAP_OK(up.http_status == 200 && up.outcome == LWSI_UPSTREAM_OK && up.last_error[0] == '\0',
         "status 200, outcome ok, no error");
  TAP_OK(up.last_latency_s > 0 && up.last_latency_s < 1, "latency %.2f ms",
         up.last_latency_s * 1e3);
  TAP_OK(changes == 1, "on_change once for the first result (%d)", changes);

  /* 503. */
  TAP_OK(srv_mode('5'), "server now answers 503");
  ok = wait_until(up_down, 3000);
  TAP_OK(ok && up.http_status == 503 && up.outcome == LWSI_UPSTREAM_HTTP &&
             strstr(up.last_error, "503") != NULL,
         "503: not ok, reason \"%s\"", up.last_error);
  TAP_OK(changes == 2, "on_change for the flip (%d)", changes);
  TAP_OK(up.ever_ok && up.failing && up.failing_since_ms <= uv_now(&loop) &&
             uv_now(&loop) - up.failing_since_ms < 3000,
         "the failing run is dated from its first poll");
  TAP_OK(lwsi_upstream_hang_left(&up, up.failing_since_ms + 100, 1000) == 900 &&
             lwsi_upstream_hang_left(&up, up.failing_since_ms + 1000, 1000) == 0,
         "a live run of failures after a healthy answer counts toward a hang");

  /* Recovery. */
  TAP_OK(srv_mode('2'), "server answers 200 again");
  TAP_OK(wait_until(up_ok, 3000) && changes == 3, "recovers: ok again");

  /* A redirect to a healthy path is not followed. */
  TAP_OK(srv_mode('r'), "server answers 302 to a path that would answer 200");
  ok = wait_until(up_down, 3000);
  TAP_OK(ok && up.http_status == 302 && up.outcome == LWSI_UPSTREAM_HTTP,
         "redirect not followed: not ok, HTTP 302 (%s)", up.last_error);
  TAP_OK(srv_mode('2') && wait_until(up_ok, 3000), "ok again");

  /* A body without end: the cap ends the poll, the 200 counts. */
  TAP_OK(srv_mode('b'), "server streams an endless 200 body");
  ok = wait_outcome(LWSI_UPSTREAM_OK, 3000);
  TAP_OK(ok && up.ok && up.http_status == 200 && up.last_latency_s * 1e3 < TIMEOUT_MS,
         "endless body: capped, ok in %.1f ms, not a timeout", up.last_latency_s * 1e3);
  uint64_t failures_before = up.failures;
  TAP_OK(failures_before >= 2, "failures counted (%llu)", (unsigned long long)failures_before);

  /* Hanging: a timeout, and the loop keeps its pace meanwhile. */
  TAP_OK(srv_mode('h'), "server accepts and never answers");
  uint64_t skipped0 = up.skipped;
  pace_reset();
  t0 = uv_hrtime();
  bool seen_in_flight = wait_until(up_in_flight, 1000);
  ok = wait_until(up_down, TIMEOUT_MS + 3000);
  took = ms_since(t0);
  TAP_OK(seen_in_flight, "a poll is in flight while the server hangs");
  TAP_OK(ok && up.outcome == LWSI_UPSTREAM_TIMEOUT && strstr(up.last_error, "timed out"),
         "hang: not ok with a timeout reason \"%s\"", up.last_error);
  TAP_OK(took >= TIMEOUT_MS - 20 && took <= TIMEOUT_MS + INTERVAL_MS + 1000,
         "after the timeout: %llu ms (timeout %d ms)", (unsigned long long)took, TIMEOUT_MS);
  TAP_OK(up.last_latency_s * 1e3 >= TIMEOUT_MS - 20, "latency of a timed-out poll %.0f ms",
         up.last_latency_s * 1e3);
  TAP_OK(max_late_ns < 150 * 1000000ull,
         "the loop was never blocked: a %d ms timer was at most %.1f ms late", PACE_MS,
         (double)max_late_ns / 1e6);
  TAP_OK(up.skipped - skipped0 >= 3, "ticks during the hanging poll were skipped (%llu)",
         (unsigned long long)(up.skipped - skipped0));

  /* Accept and close at once. */
  TAP_OK(srv_mode('c'), "server closes every connection at once");
  ok = wait_outcome(LWSI_UPSTREAM_ERROR, 3000);
  TAP_OK(ok && !up.ok && up.last_error[0] != '\0' && strstr(up.last_error, "timed out") == NULL,
         "closed at once: not ok, \"%s\"", up.last_error);

  /* Not listening. */
  TAP_OK(srv_mode('x'), "server stops listening");
  ok = wait_outcome(LWSI_UPSTREAM_CONNECT, 3000);
  TAP_OK(ok && !up.ok && up.http_status == 0 && strstr(up.last_error, "refused") != NULL,
         "refused: not ok, \"%s\"", up.last_error);

  /* Back. */
  int before = changes;
  TAP_OK(srv_mode('2'), "server listens and answers 200 again");
  TAP_OK(wait_until(up_ok, 3000) && changes == before + 1 && up.consecutive_failures == 0,
         "recovery flips back to ok (%llu polls, %llu failures)", (unsigned long long)up.polls,
         (unsigned long long)up.failures);
  uint64_t sum = 0;
  for (int i = 0; i < LWSI_UPSTREAM_OUTCOME_COUNT; i++)
    sum += up.by_outcome[i];
  TAP_OK(sum == up.polls && up.by_outcome[LWSI_UPSTREAM_OK] == up.polls - up.failures &&
             up.by_outcome[LWSI_UPSTREAM_TIMEOUT] >= 1 && up.by_outcome[LWSI_UPSTREAM_HTTP] >= 2 &&
             up.by_outcome[LWSI_UPSTREAM_CONNECT] >= 1 && up.by_outcome[LWSI_UPSTREAM_ERROR] >= 1,
         "polls counted by outcome (ok %llu, http %llu, timeout %llu, connect %llu, error %llu)",
         (unsigned long long)up.by_outcome[LWSI_UPSTREAM_OK],
         (unsigned long long)up.by_outcome[LWSI_UPSTREAM_HTTP],
         (unsigned long long)up.by_outcome[LWSI_UPSTREAM_TIMEOUT],
         (unsigned long long)up.by_outcome[LWSI_UPSTREAM_CONNECT],
         (unsigned long long)up.by_outcome[LWSI_UPSTREAM_ERROR]);

  /* A poller that closes itself from its callback. */
  char url2[64];
  snprintf(url2, sizeof(url2), "http://127.0.0.1:%u/health", unused_port());
  rc = lwsi_upstream_start(&self_closing, &loop, url2, INTERVAL_MS, TIMEOUT_MS, close_from_cb,
                           err, sizeof(err));
  TAP_OK(rc == 0 && wait_until(self_closing_done, 3000) && self_closing_calls == 1 &&
             !self_closing.ok && self_closing.outcome == LWSI_UPSTREAM_CONNECT,
         "closing from the callback is safe (%s)", self_closing.last_error);

  /* Close while a poll is in flight. */
  TAP_OK(srv_mode('h'), "server hangs again");
  ok = wait_until(up_in_flight, 2000);
  TAP_OK(ok, "a poll is in flight");
  lwsi_upstream_close(&up);
  lwsi_upstream_close(&up); /* idempotent */
  TAP_OK(!up.in_flight && up.known, "closed mid-poll; the last result stays readable");
}

int main(void)
{
  /* As in PID 1: SIGPIPE stays blocked, so any raised shows up pending. */
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigprocmask(SIG_BLOCK, &pipe_set, NULL);

  /* Fork before the loop exists: the child gets no copy of its fds. */
  if (srv_start() < 0) {
    TAP_OK(0, "cannot start the test server: %s", strerror(errno));
    return tap_done();
  }
  uv_loop_init(&loop);
  uv_timer_init(&loop, &pace);
  uv_timer_start(&pace, on_pace, PACE_MS, PACE_MS);

  test_outcome_names();
  test_hang_rule();
  test_bad_start();
  test_load_failures();
  test_load_cost();
  test_polling();

  uv_close((uv_handle_t *)&pace, NULL);
  uint64_t t0 = uv_hrtime();
  uv_run(&loop, UV_RUN_DEFAULT);
  TAP_OK(ms_since(t0) < 1000, "the loop ends once everything is closed");
  TAP_OK(uv_loop_close(&loop) == 0, "uv_loop_close returns 0: no handle left");

  sigset_t pending;
  sigpending(&pending);
  TAP_OK(!sigismember(&pending, SIGPIPE), "no SIGPIPE was raised");

  srv_mode('q');
  int status = 0;
  TAP_OK(waitpid(srv_pid, &status, 0) == srv_pid && WIFEXITED(status),
         "the test server exited");
  close(srv_ctl);
  return tap_done();
}
