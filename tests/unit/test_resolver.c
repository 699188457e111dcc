/* The resolver against a real dnsmasq on 127.0.0.1 (never anything else):
 * the search list, IP literals, the hosts file, a record that appears
 * late, a name that never does, dead and silent servers, and closing.
 * Every wait has a deadline; every case opens and closes its own loop and
 * checks that uv_loop_close returns 0. */
#include "lwsinit/resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

#define DNSMASQ "/usr/sbin/dnsmasq"
#define DOMAIN "svc.example"

/* ---- the DNS server ---- */

struct dns {
  pid_t pid;
  uint16_t port;
  char dir[64];
  char hosts[96];       /* --hostsdir: dnsmasq re-reads it on inotify events */
  char resolv_conf[96]; /* search list and ndots for the resolver */
};

static struct dns dns;

static void sleep_ms(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static int bind_lo(int type, uint16_t port, uint16_t *got)
{
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    close(fd);
    return -1;
  }
  if (got != NULL)
    *got = ntohs(sa.sin_port);
  return fd;
}

/* A port free on 127.0.0.1 for both UDP and TCP (dnsmasq binds both). */
static uint16_t free_port(void)
{
  for (int i = 0; i < 50; i++) {
    uint16_t port = 0;
    int u = bind_lo(SOCK_DGRAM, 0, &port);
    if (u < 0)
      continue;
    int t = bind_lo(SOCK_STREAM, port, NULL);
    close(u);
    if (t >= 0) {
      close(t);
      return port;
    }
  }
  return 0;
}

static int write_file(const char *path, const char *text)
{
  char tmp[160];
  snprintf(tmp, sizeof(tmp), "%s/tmp-file", dns.dir);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  int ok = fputs(text, f) >= 0;
  ok = (fclose(f) == 0) && ok;
  /* rename: dnsmasq sees the file whole (IN_MOVED_TO), never half written. */
  return ok && rename(tmp, path) == 0 ? 0 : -1;
}

/* Adds "ip fqdn" lines as one file of the hosts folder. */
static int dns_add(const char *file, const char *lines)
{
  char path[160];
  snprintf(path, sizeof(path), "%s/%s", dns.hosts, file);
  return write_file(path, lines);
}

static int dns_start(void)
{
  if (access(DNSMASQ, X_OK) < 0)
    return -1;
  snprintf(dns.dir, sizeof(dns.dir), "/tmp/lwsi-resolver-XXXXXX");
  if (mkdtemp(dns.dir) == NULL)
    return -1;
  snprintf(dns.hosts, sizeof(dns.hosts), "%s/hosts.d", dns.dir);
  snprintf(dns.resolv_conf, sizeof(dns.resolv_conf), "%s/resolv.conf", dns.dir);
  if (mkdir(dns.hosts, 0700) < 0)
    return -1;
  /* As a pod's: the LWS name has 2 dots, fewer than ndots, so the search
   * list is tried first. No nameserver line: --dns-server gives the port. */
  if (write_file(dns.resolv_conf, "search " DOMAIN " default." DOMAIN "\noptions ndots:5\n") < 0)
    return -1;
  if ((dns.port = free_port()) == 0)
    return -1;

  char a_port[32], a_hosts[128], a_pid[128], a_log[128];
  snprintf(a_port, sizeof(a_port), "--port=%u", dns.port);
  snprintf(a_hosts, sizeof(a_hosts), "--hostsdir=%s", dns.hosts);
  snprintf(a_pid, sizeof(a_pid), "--pid-file=%s/pid", dns.dir);
  snprintf(a_log, sizeof(a_log), "--log-facility=%s/log", dns.dir);
  char *argv[] = {DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                  "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces", a_port,
                  a_hosts, "--local-ttl=0", 
                  /* NXDOMAIN for every other name too, as a cluster DNS
                   * answers for `sglang-0.sglang.default` as is (dnsmasq
                   * REFUSEs names it has no server for). */
                  "--local=/" DOMAIN "/", "--local=/#/", "--no-negcache",
                  "--user=root", "--log-queries", a_pid, a_log, NULL};
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    /* Gone with the test, even if the test dies on its alarm. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
    }
    execv(DNSMASQ, argv);
    _exit(127);
  }
  dns.pid = pid;
  /* Up when its port is taken. */
  for (int i = 0; i < 500; i++) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      dns.pid = 0;
      return -1;
    }
    int fd = bind_lo(SOCK_DGRAM, dns.port, NULL);
    if (fd < 0 && errno == EADDRINUSE)
      return 0;
    if (fd >= 0)
      close(fd);
    sleep_ms(10);
  }
  return -1;
}

static void rm_dir(const char *dir)
{
  char cmd[200];
  /* Only our own mkdtemp folder. */
  if (strncmp(dir, "/tmp/lwsi-resolver-", 19) != 0)
    return;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    printf("# could not remove %s\n", dir);
}

static void dns_stop(void)
{
  if (dns.pid > 0) {
    kill(dns.pid, SIGTERM);
    int st;
    int i = 0;
    while (waitpid(dns.pid, &st, WNOHANG) == 0 && i++ < 300)
      sleep_ms(10);
    if (i > 300) {
      kill(dns.pid, SIGKILL);
      waitpid(dns.pid, &st, 0);
    }
    dns.pid = 0;
  }
  if (dns.dir[0] != '\0' && getenv("RESOLVER_KEEP") == NULL)
    rm_dir(dns.dir);
}

/* ---- one case: a loop, a resolver, and a deadline on every wait ---- */

struct run {
  struct lwsi_resolver r;
  int done_calls;
  int status;
  uint64_t done_ns;
  int progress_calls;
  uint32_t progress_attempts[16];
  bool close_in_done;
};

static uv_loop_t loop;
static uv_timer_t wake;

static uint64_t now_ms(void)
{
  uv_update_time(&loop);
  return uv_now(&loop);
}

static void on_wake(uv_timer_t *t) {}

/* Runs the loop until cond holds or ms pass; evaluates to cond. */
#define WAIT_UNTIL(cond, ms)                                                                       \
  ({                                                                                               \
    uint64_t end_ = now_ms() + (ms);                                                               \
    bool ok_;                                                                                      \
    uv_timer_start(&wake, on_wake, (ms), 0);                                                       \
    while (!(ok_ = (cond)) && now_ms() < end_)                                                     \
      uv_run(&loop, UV_RUN_ONCE);                                                                  \
    uv_timer_stop(&wake);                                                                          \
    ok_;                                                                                           \
  })

static void on_done(struct lwsi_resolver *r, int status)
{
  struct run *x = r->data;
  x->done_calls++;
  x->status = status;
  x->done_ns = uv_hrtime();
  if (x->close_in_done)
    lwsi_resolver_close(r);
}

static void on_progress(struct lwsi_resolver *r)
{
  struct run *x = r->data;
  if (x->progress_calls < 16)
    x->progress_attempts[x->progress_calls] = r->attempts;
  x->progress_calls++;
  if (getenv("RESOLVER_TRACE"))
    printf("# progress: try %u after %llu ms: %s\n", r->attempts,
           (unsigned long long)r->elapsed_ms, r->last_error);
}

static void case_open(struct run *x)
{
  memset(x, 0, sizeof(*x));
  x->r.data = x;
  x->status = 1;
  if (uv_loop_init(&loop) < 0 || uv_timer_init(&loop, &wake) < 0) {
    printf("Bail out! cannot start a loop\n");
    exit(1);
  }
}

/* Closes the resolver and the loop; evaluates to uv_loop_close's result. */
static int case_close(struct run *x)
{
  lwsi_resolver_close(&x->r);
  uv_close((uv_handle_t *)&wake, NULL);
  /* Closing handles finish within a turn or two; the bound guards a bug. */
  for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; i++)
    sleep_ms(1);
  int rc = uv_loop_close(&loop);
  if (rc != 0)
    printf("# uv_loop_close: %s\n", uv_strerror(rc));
  return rc;
}

static void opts_dns(struct lwsi_resolver_opts *o, uint64_t timeout_ms)
{
  memset(o, 0, sizeof(*o));
  o->dns_server = "127.0.0.1";
  o->dns_port = dns.port;
  o->timeout_ms = timeout_ms;
  o->resolv_conf = dns.resolv_conf;
}

/* Resolves name and waits up to wait_ms for done. */
static int resolve(struct run *x, const char *name, const struct lwsi_resolver_opts *o,
                   uint64_t wait_ms)
{
  int rc = lwsi_resolver_start(&x->r, &loop, name, o, on_done, on_progress);
  if (rc < 0)
    return rc;
  TAP_OK(x->done_calls == 0, "%s: done is not called inside start", name);
  if (!WAIT_UNTIL(x->done_calls > 0, wait_ms))
    return -EINPROGRESS;
  return 0;
}

/* ---- the cases ---- */

static void test_literals(void)
{
  static const struct {
    const char *name, *ip;
    int family;
  } cases[] = {
    {"10.1.2.3", "10.1.2.3", AF_INET},
    {"fd00::1", "fd00::1", AF_INET6},
    {"[fd00:0::2]", "fd00::2", AF_INET6},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct run x;
    case_open(&x);
    /* No server at all: a literal never touches DNS. */
    struct lwsi_resolver_opts o = {.timeout_ms = 1000};
    int rc = resolve(&x, cases[i].name, &o, 1000);
    TAP_OK(rc == 0 && x.done_calls == 1 && x.status == 0, "literal %s: answered (%d, %d)",
           cases[i].name, rc, x.status);
    TAP_STR_EQ(x.r.ip, cases[i].ip, "literal %s: ip", cases[i].name);
    TAP_OK(x.r.family == cases[i].family && x.r.literal && x.r.attempts == 0,
           "literal %s: family, no DNS attempt", cases[i].name);
    TAP_STR_EQ(x.r.server_desc, "none (IP literal)", "literal %s: server_desc", cases[i].name);
    TAP_OK(case_close(&x) == 0, "literal %s: loop closes cleanly", cases[i].name);
  }
}

static void test_bad_input(void)
{
  struct run x;
  case_open(&x);
  struct lwsi_resolver_opts o = {.timeout_ms = 1000};
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "", &o, on_done, NULL) == -EINVAL, "empty name: -EINVAL");
  o.dns_server = "dns.example";
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "a.b", &o, on_done, NULL) == -EINVAL,
         "--dns-server not an IP: -EINVAL");
  o.dns_server = NULL;
  o.resolv_conf = "/nonexistent/resolv.conf";
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "a.b", &o, on_done, NULL) == -ENOENT,
         "missing resolv_conf: -ENOENT");
  char longname[300];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  TAP_OK(lwsi_resolver_start(&x.r, &loop, longname, NULL, on_done, NULL) == -ENAMETOOLONG,
         "300-character name: -ENAMETOOLONG");
  TAP_OK(x.done_calls == 0 && x.r.state == LWSI_RESOLVER_IDLE, "failed starts leave nothing");
  /* A running resolver cannot be started again. */
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "10.0.0.1", NULL, on_done, NULL) == 0, "start");
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "10.0.0.2", NULL, on_done, NULL) == -EBUSY,
         "second start while running: -EBUSY");
  lwsi_resolver_close(&x.r);
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "10.0.0.2", NULL, on_done, NULL) == -EBUSY,
         "start while closing: -EBUSY");
  TAP_OK(WAIT_UNTIL(x.r.state == LWSI_RESOLVER_CLOSED, 1000), "closed after a loop turn");
  TAP_OK(x.done_calls == 0, "done not called after close");
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "10.0.0.2", NULL, on_done, NULL) == 0 &&
             WAIT_UNTIL(x.done_calls == 1, 1000) && x.status == 0 &&
             strcmp(x.r.ip, "10.0.0.2") == 0,
         "started again after closing");
  TAP_OK(case_close(&x) == 0, "bad input: loop closes cleanly");
}

/* /etc/hosts before DNS, as "hosts: files dns"; with hosts_env, c-ares
 * 1.18 reads the file CARES_HOSTS names instead of /etc/hosts. The resolv.conf server is never
 * asked, so it can be one where nothing listens. */
static void test_hosts_file(void)
{
  char hosts[160], rc_path[160];
  snprintf(hosts, sizeof(hosts), "%s/etc-hosts", dns.dir);
  snprintf(rc_path, sizeof(rc_path), "%s/resolv-hosts.conf", dns.dir);
  if (write_file(hosts, "127.0.0.1 localhost\n10.9.8.7 pinned.example pinned\nfd00::99 pinned.example\n") < 0 ||
      write_file(rc_path, "nameserver 127.0.0.9\nsearch " DOMAIN "\noptions ndots:5\n") < 0) {
    TAP_OK(0, "hosts file: setup");
    return;
  }
  setenv("CARES_HOSTS", hosts, 1);
  struct run x;
  case_open(&x);
  struct lwsi_resolver_opts o = {.timeout_ms = 2000, .resolv_conf = rc_path, .hosts_env = true};
  int rc = resolve(&x, "pinned.example", &o, 2000);
  TAP_OK(rc == 0 && x.status == 0, "hosts file: answered (%d, %d)", rc, x.status);
  TAP_STR_EQ(x.r.ip, "10.9.8.7", "hosts file: the IPv4 entry is preferred");
  TAP_OK(x.r.attempts == 1, "hosts file: one attempt (%u)", x.r.attempts);
  char want[256];
  snprintf(want, sizeof(want), "nameservers from %s (127.0.0.9)", rc_path);
  TAP_STR_EQ(x.r.server_desc, want, "hosts file: server_desc names resolv.conf's servers");
  TAP_STR_EQ(x.r.search_desc, "search " DOMAIN "; ndots 5", "hosts file: search_desc");
  TAP_OK(case_close(&x) == 0, "hosts file: loop closes cleanly");
  unsetenv("CARES_HOSTS");
}

static void test_found(const char *name, const char *ip, int family, const char *what)
{
  struct run x;
  case_open(&x);
  x.close_in_done = true; /* closing from inside done is allowed */
  struct lwsi_resolver_opts o;
  opts_dns(&o, 3000);
  int rc = resolve(&x, name, &o, 3000);
  TAP_OK(rc == 0 && x.status == 0, "%s: %s resolves (%d, %d; %s)", what, name, rc, x.status,
         x.r.last_error);
  TAP_STR_EQ(x.r.ip, ip, "%s: address", what);
  TAP_OK(x.r.family == family && x.r.attempts == 1, "%s: family %d, %u attempt(s)", what,
         x.r.family, x.r.attempts);
  char want[64];
  snprintf(want, sizeof(want), "--dns-server 127.0.0.1:%u", dns.port);
  TAP_STR_EQ(x.r.server_desc, want, "%s: server_desc", what);
  TAP_STR_EQ(x.r.search_desc, "search " DOMAIN " default." DOMAIN "; ndots 5",
             "%s: the search list still applies with --dns-server", what);
  TAP_OK(case_close(&x) == 0, "%s: loop closes cleanly", what);
}

static uint64_t added_ns;
static void on_add_late(uv_timer_t *t)
{
  if (dns_add("late", "10.0.0.42 late-0.sglang.default." DOMAIN "\n") == 0)
    added_ns = uv_hrtime();
  uv_close((uv_handle_t *)t, NULL);
}

static void test_late(void)
{
  struct run x;
  case_open(&x);
  uv_timer_t add;
  uv_timer_init(&loop, &add);
  uv_timer_start(&add, on_add_late, 700, 0);
  struct lwsi_resolver_opts o;
  opts_dns(&o, 5000);
  uint64_t t0 = uv_hrtime();
  int rc = resolve(&x, "late-0.sglang.default", &o, 5000);
  TAP_OK(rc == 0 && x.status == 0, "late record: resolves (%d, %d)", rc, x.status);
  TAP_STR_EQ(x.r.ip, "10.0.0.42", "late record: address");
  TAP_OK(added_ns != 0, "late record: added");
  double lag = added_ns != 0 && x.done_ns > added_ns ? (double)(x.done_ns - added_ns) / 1e6 : -1;
  printf("# late record: added after %.0f ms, found %.1f ms later, after %u attempts\n",
         added_ns ? (double)(added_ns - t0) / 1e6 : -1.0, lag, x.r.attempts);
  TAP_OK(lag >= 0 && lag < 1000, "late record: found within 1 s of appearing (%.1f ms)", lag);
  TAP_OK(x.r.attempts >= 3, "late record: retried (%u attempts)", x.r.attempts);
  TAP_OK(x.progress_calls >= 2 && x.progress_attempts[0] == 1 && x.progress_attempts[1] == 2,
         "late record: progress on attempts 1, 2, ... (%d calls)", x.progress_calls);
  bool pow2 = true;
  for (int i = 0; i < x.progress_calls && i < 16; i++)
    pow2 = pow2 && (x.progress_attempts[i] & (x.progress_attempts[i] - 1)) == 0;
  TAP_OK(pow2 && x.progress_calls < (int)x.r.attempts,
         "late record: progress not on every attempt (%d of %u)", x.progress_calls,
         x.r.attempts);
  TAP_OK(case_close(&x) == 0, "late record: loop closes cleanly");
}

/* Ends with -ETIMEDOUT at the deadline, not much later, with a reason. */
static void test_timeout(const char *what, const char *name, const char *server, uint16_t port,
                         uint64_t timeout_ms, const char *want_error)
{
  struct run x;
  case_open(&x);
  struct lwsi_resolver_opts o;
  opts_dns(&o, timeout_ms);
  o.dns_server = server;
  o.dns_port = port;
  uint64_t t0 = uv_hrtime();
  int rc = resolve(&x, name, &o, timeout_ms + 3000);
  double took = (double)(uv_hrtime() - t0) / 1e6;
  printf("# %s: %.0f ms, %u attempts, last error '%s'\n", what, took, x.r.attempts,
         x.r.last_error);
  TAP_OK(rc == 0 && x.status == -ETIMEDOUT, "%s: -ETIMEDOUT (%d, %d)", what, rc, x.status);
  TAP_OK(took >= (double)timeout_ms - 5 && took < (double)timeout_ms + 500,
         "%s: at the deadline of %llu ms (%.0f ms)", what, (unsigned long long)timeout_ms, took);
  TAP_OK(x.r.elapsed_ms + 5 >= timeout_ms && x.r.elapsed_ms < timeout_ms + 500,
         "%s: elapsed_ms %llu", what, (unsigned long long)x.r.elapsed_ms);
  TAP_OK(x.r.last_error[0] != '\0' && x.r.last_ares != 0, "%s: last error kept: %s", what,
         x.r.last_error);
  if (want_error != NULL)
    TAP_STR_EQ(x.r.last_error, want_error, "%s: the last error says why", what);
  TAP_OK(x.done_calls == 1, "%s: done called once", what);
  TAP_OK(case_close(&x) == 0, "%s: loop closes cleanly", what);
}

/* A server that takes queries and never answers (no ICMP, unlike a closed
 * port): only the per-query timeout ends each attempt. */
static void test_silent_server(void)
{
  uint16_t port = 0;
  int fd = bind_lo(SOCK_DGRAM, 0, &port);
  if (fd < 0) {
    TAP_OK(0, "silent server: bind");
    return;
  }
  test_timeout("silent server", "sglang-0.sglang.default", "127.0.0.1", port, 1800,
               "Timeout while contacting DNS servers");

  /* Closing while a query is in flight: no done, and a clean loop. */
  struct run x;
  case_open(&x);
  struct lwsi_resolver_opts o;
  opts_dns(&o, 5000);
  o.dns_port = port;
  TAP_OK(lwsi_resolver_start(&x.r, &loop, "sglang-0.sglang.default", &o, on_done, NULL) == 0,
         "in flight: started");
  (void)WAIT_UNTIL(false, 200);
  TAP_OK(x.r.state == LWSI_RESOLVER_RESOLVING, "in flight: resolving (%s)",
         lwsi_resolver_state_name(x.r.state));
  lwsi_resolver_close(&x.r);
  (void)WAIT_UNTIL(x.r.state == LWSI_RESOLVER_CLOSED, 1000);
  TAP_OK(x.r.state == LWSI_RESOLVER_CLOSED && x.done_calls == 0,
         "in flight: closed without done");
  TAP_OK(case_close(&x) == 0, "in flight: loop closes cleanly");
  close(fd);
}

int main(void)
{
  /* A backstop for the whole file; every wait below has its own deadline. */
  alarm(60);
  signal(SIGPIPE, SIG_IGN);

  test_literals();
  test_bad_input();

  if (dns_start() < 0) {
    TAP_SKIP("dnsmasq (%s) not available", DNSMASQ);
    dns_stop();
    return tap_done();
  }
  printf("# dnsmasq on 127.0.0.1:%u, folder %s\n", dns.port, dns.dir);
  int rc = dns_add("group",
                   "10.0.0.7 sglang-0.sglang.default." DOMAIN "\n"
                   "fd00::7 sglang-0.sglang.default." DOMAIN "\n"
                   "10.0.0.8 w-1.sglang.default.default." DOMAIN "\n"
                   "fd00::9 v6.sglang.default." DOMAIN "\n");
  TAP_OK(rc == 0, "records written");
  /* dnsmasq picks the file up through inotify; give it a moment. */
  sleep_ms(200);

  test_hosts_file();
  test_found("sglang-0.sglang.default", "10.0.0.7", AF_INET, "search list, both families");
  test_found("w-1.sglang.default", "10.0.0.8", AF_INET, "second search domain");
  test_found("v6.sglang.default", "fd00::9", AF_INET6, "IPv6 only");
  test_late();
  test_timeout("never appears", "nobody-0.sglang.default", "127.0.0.1", dns.port, 1500,
               "Domain name not found");
  uint16_t dead = free_port();
  test_timeout("dead server", "sglang-0.sglang.default", "127.0.0.1", dead, 1000, NULL);
  test_silent_server();

  dns_stop();
  return tap_done();
}
