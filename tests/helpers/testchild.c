/* testchild: the COMMAND that the acceptance tests give lwsinit. One small
 * program with a mode per behaviour under test, so that a test observes
 * what the child saw (signals, mask, descriptors, parent) instead of
 * guessing it from the agent's log.
 *
 *   testchild exit N
 *       exits with status N (0..255).
 *   testchild kill SIG
 *       dies by signal SIG (a number or a name such as SEGV), no core file.
 *   testchild sleep SEC
 *       sleeps SEC seconds (fractions allowed), exits 0.
 *   testchild signals FILE [--exit-on SIGS] [--ignore-term] [--exit-code N]
 *                          [--delay-ms MS]
 *       handles every catchable signal and appends "NAME MONO_NS\n" to FILE,
 *       one write(2) per signal (MONO_NS: CLOCK_MONOTONIC in ns, the clock
 *       the test measures with). Writes "ready MONO_NS" first, once every
 *       handler is installed. On a signal of SIGS (comma list of names or
 *       "none"; default TERM) it waits MS milliseconds, appends
 *       "exiting MONO_NS" and exits N (default 0). --ignore-term is
 *       --exit-on none.
 *   testchild orphans N FILE [--exit N] [--hold]
 *       makes N grandchildren that are orphaned (double fork): each waits
 *       until its parent is gone, appends "orphan PID PPID" (PPID: its new
 *       parent, the reaper) and exits. The child then waits (deadline 20 s)
 *       until none of them is left in /proc, i.e. someone reaped them, and
 *       appends "reaped N" (or "unreaped PID..." and exits 3). Then it exits
 *       with --exit (default 0), or with --hold waits for SIGTERM first.
 *   testchild state FILE [ARG...]
 *       writes key=value lines: argv, the LWSINIT_* variables, the blocked
 *       mask, the ignored signals, pid/ppid/pgid/sid, the terminal's
 *       foreground group, the cwd and the open descriptors; exits 0.
 *   testchild serve PORT [ARGVFILE] [--bind IP]
 *       a stand-in engine: records its whole argv to ARGVFILE ("arg=..."
 *       lines), answers HTTP GET (or HEAD) /health with 200, other paths
 *       404, other methods 405, on IP:PORT (default 127.0.0.1); exits 0 on
 *       SIGTERM or SIGINT.
 *
 * Everything it cannot do is an error on stderr and exit status 100+, so a
 * broken helper is never mistaken for the agent's behaviour. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 100
#define EXIT_SYS 101

extern char **environ;

static __attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...);

static void die(const char *fmt, ...)
{
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  dprintf(STDERR_FILENO, "testchild: %s\n", buf);
  _exit(EXIT_SYS);
}

static __attribute__((noreturn)) void usage(const char *why)
{
  dprintf(STDERR_FILENO, "testchild: %s (see the comment at the top of testchild.c)\n", why);
  _exit(EXIT_USAGE);
}

static long parse_long(const char *s, long lo, long hi, const char *what)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
    dprintf(STDERR_FILENO, "testchild: bad %s '%s'\n", what, s);
    _exit(EXIT_USAGE);
  }
  return v;
}

/* ---- async-signal-safe output ------------------------------------------- */

/* Appends one line with a single write(2): O_APPEND makes it atomic with
 * respect to other writers (the grandchildren share the file). */
static int open_append(const char *path)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    die("open %s: %s", path, strerror(errno));
  return fd;
}

static size_t put_str(char *buf, size_t off, size_t cap, const char *s)
{
  while (*s != '\0' && off + 1 < cap)
    buf[off++] = *s++;
  return off;
}

static size_t put_u64(char *buf, size_t off, size_t cap, uint64_t v)
{
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0 && off + 1 < cap)
    buf[off++] = tmp[--n];
  return off;
}

static uint64_t mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe (signal-safety(7)) */
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Writes "WORD MONO_NS\n" in one write; safe in a signal handler. A short or
 * failed write is fatal: a lost line would read as a lost signal. */
static void put_event(int fd, const char *word)
{
  char line[96];
  size_t o = put_str(line, 0, sizeof(line), word);
  o = put_str(line, o, sizeof(line), " ");
  o = put_u64(line, o, sizeof(line), mono_ns());
  o = put_str(line, o, sizeof(line), "\n");
  ssize_t n;
  do
    n = write(fd, line, o);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)o) {
    static const char msg[] = "testchild: cannot write an event line\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(EXIT_SYS);
  }
}

/* ---- signal names ------------------------------------------------------- */

/* "TERM", "RTMIN+3"; written into buf (no allocation, handler-safe). */
static const char *sig_name(int sig, char *buf, size_t cap)
{
  if (sig >= SIGRTMIN && sig <= SIGRTMAX) {
    size_t o = put_str(buf, 0, cap, "RTMIN+");
    o = put_u64(buf, o, cap, (uint64_t)(sig - SIGRTMIN));
    buf[o] = '\0';
    return buf;
  }
  const char *abbrev = sigabbrev_np(sig);
  size_t o = put_str(buf, 0, cap, abbrev != NULL ? abbrev : "UNKNOWN");
  buf[o] = '\0';
  return buf;
}

/* A number, a name with or without "SIG", or RTMIN+K. */
static int sig_parse(const char *s)
{
  if (s[0] >= '0' && s[0] <= '9')
    return (int)parse_long(s, 1, SIGRTMAX, "signal");
  if (strncmp(s, "SIG", 3) == 0)
    s += 3;
  if (strncmp(s, "RTMIN+", 6) == 0)
    return SIGRTMIN + (int)parse_long(s + 6, 0, SIGRTMAX - SIGRTMIN, "signal");
  for (int sig = 1; sig < SIGRTMIN; sig++) {
    const char *a = sigabbrev_np(sig);
    if (a != NULL && strcmp(a, s) == 0)
      return sig;
  }
  dprintf(STDERR_FILENO, "testchild: unknown signal '%s'\n", s);
  _exit(EXIT_USAGE);
}

static bool catchable(int sig) { return sig != SIGKILL && sig != SIGSTOP; }

/* ---- exit, kill, sleep -------------------------------------------------- */

static int mode_exit(int argc, char **argv)
{
  if (argc != 1)
    usage("exit N");
  return (int)parse_long(argv[0], 0, 255, "exit status");
}

static int mode_kill(int argc, char **argv)
{
  if (argc != 1)
    usage("kill SIG");
  int sig = sig_parse(argv[0]);
  /* No core file: core_pattern may be a plain "core" in the cwd. */
  struct rlimit no_core = {0, 0};
  if (setrlimit(RLIMIT_CORE, &no_core) < 0)
    die("setrlimit: %s", strerror(errno));
  if (catchable(sig) && signal(sig, SIG_DFL) == SIG_ERR)
    die("signal: %s", strerror(errno));
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  if (sigprocmask(SIG_UNBLOCK, &one, NULL) < 0)
    die("sigprocmask: %s", strerror(errno));
  if (kill(getpid(), sig) < 0)
    die("kill: %s", strerror(errno));
  /* Signals whose default is to ignore (CHLD, URG, WINCH) or stop do not
   * end us; say so rather than exit with a code that looks right. */
  dprintf(STDERR_FILENO, "testchild: still alive after signal %d\n", sig);
  return EXIT_SYS;
}

static void sleep_ns(uint64_t ns)
{
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) < 0)
    if (errno != EINTR)
      die("nanosleep: %s", strerror(errno));
}

static int mode_sleep(int argc, char **argv)
{
  if (argc != 1)
    usage("sleep SEC");
  char *end;
  errno = 0;
  double sec = strtod(argv[0], &end);
  if (errno != 0 || end == argv[0] || *end != '\0' || sec < 0 || sec > 86400)
    usage("sleep SEC");
  sleep_ns((uint64_t)(sec * 1e9));
  return 0;
}

/* ---- signals ------------------------------------------------------------ */

static int sig_fd = -1;
static sigset_t exit_on;
static volatile sig_atomic_t exit_requested;

static void on_signal(int sig)
{
  int saved = errno;
  char name[32];
  put_event(sig_fd, sig_name(sig, name, sizeof(name)));
  if (sigismember(&exit_on, sig) == 1)
    exit_requested = 1;
  errno = saved;
}

static void parse_sig_list(const char *list, sigset_t *set)
{
  sigemptyset(set);
  if (strcmp(list, "none") == 0)
    return;
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", list);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
    sigaddset(set, sig_parse(tok));
}

static int mode_signals(int argc, char **argv)
{
  if (argc < 1)
    usage("signals FILE [options]");
  const char *file = argv[0];
  long code = 0, delay_ms = 0;
  sigemptyset(&exit_on);
  sigaddset(&exit_on, SIGTERM);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--ignore-term") == 0)
      sigemptyset(&exit_on);
    else if (strcmp(argv[i], "--exit-on") == 0 && i + 1 < argc)
      parse_sig_list(argv[++i], &exit_on);
    else if (strcmp(argv[i], "--exit-code") == 0 && i + 1 < argc)
      code = parse_long(argv[++i], 0, 255, "exit code");
    else if (strcmp(argv[i], "--delay-ms") == 0 && i + 1 < argc)
      delay_ms = parse_long(argv[++i], 0, 600000, "delay");
    else
      usage("signals: unknown option");
  }
  sig_fd = open_append(file);

  /* Handlers run with every signal blocked, so they never nest: the lines
   * come out in the order the kernel delivered the signals. */
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigfillset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig = 1; sig <= SIGRTMAX; sig++) {
    if (!catchable(sig))
      continue;
    if (sig > SIGSYS && sig < SIGRTMIN)
      continue; /* 32, 33: glibc's own, not settable */
    if (sigaction(sig, &sa, NULL) < 0)
      die("sigaction %d: %s", sig, strerror(errno));
  }
  /* Whatever mask we inherited, take every signal now. */
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  if (sigprocmask(SIG_BLOCK, &all, NULL) < 0)
    die("sigprocmask: %s", strerror(errno));
  put_event(sig_fd, "ready");
  /* sigsuspend atomically unblocks and waits, so an exit request that
   * arrives between the check and the wait is not slept through. */
  while (!exit_requested)
    sigsuspend(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
    die("sigprocmask: %s", strerror(errno));
  if (delay_ms > 0)
    sleep_ns((uint64_t)delay_ms * 1000000u);
  put_event(sig_fd, "exiting");
  return (int)code;
}

/* ---- orphans ------------------------------------------------------------ */

static bool pid_exists(pid_t pid)
{
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d", (int)pid);
  return access(path, F_OK) == 0;
}

static void grandchild(int fd, pid_t parent)
{
  /* Orphaned only once the middle process has exited and was reaped by
   * us; until then getppid() is still the middle one. */
  uint64_t end = mono_ns() + 20000000000u;
  while (getppid() == parent) {
    if (mono_ns() > end)
      _exit(EXIT_SYS);
    usleep(1000);
  }
  char line[96];
  size_t o = put_str(line, 0, sizeof(line), "orphan ");
  o = put_u64(line, o, sizeof(line), (uint64_t)getpid());
  o = put_str(line, o, sizeof(line), " ");
  o = put_u64(line, o, sizeof(line), (uint64_t)getppid());
  o = put_str(line, o, sizeof(line), "\n");
  if (write(fd, line, o) != (ssize_t)o)
    _exit(EXIT_SYS);
  _exit(0);
}

static int mode_orphans(int argc, char **argv)
{
  if (argc < 2)
    usage("orphans N FILE [--exit N] [--hold]");
  long n = parse_long(argv[0], 1, 10000, "count");
  const char *file = argv[1];
  long code = 0;
  bool hold = false;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--exit") == 0 && i + 1 < argc)
      code = parse_long(argv[++i], 0, 255, "exit code");
    else if (strcmp(argv[i], "--hold") == 0)
      hold = true;
    else
      usage("orphans: unknown option");
  }
  int fd = open_append(file);
  /* The grandchildren's pids come back through a pipe, so that the child
   * knows which ones to wait for without parsing the file. */
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    die("pipe2: %s", strerror(errno));
  pid_t *pids = calloc((size_t)n, sizeof(*pids));
  if (pids == NULL)
    die("calloc");
  for (long i = 0; i < n; i++) {
    pid_t mid = fork();
    if (mid < 0)
      die("fork: %s", strerror(errno));
    if (mid == 0) {
      close(p[0]);
      pid_t me = getpid();
      pid_t g = fork();
      if (g < 0)
        _exit(EXIT_SYS);
      if (g == 0) {
        close(p[1]);
        grandchild(fd, me);
      }
      if (write(p[1], &g, sizeof(g)) != (ssize_t)sizeof(g))
        _exit(EXIT_SYS);
      _exit(0);
    }
    int st;
    if (waitpid(mid, &st, 0) < 0)
      die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      die("middle process failed (status %d)", st);
    if (read(p[0], &pids[i], sizeof(pids[i])) != (ssize_t)sizeof(pids[i]))
      die("read grandchild pid: %s", strerror(errno));
  }
  close(p[0]);
  close(p[1]);

  /* Reaped means gone from /proc: a zombie still has its /proc entry. */
  uint64_t end = mono_ns() + 20000000000u;
  for (;;) {
    long left = 0;
    for (long i = 0; i < n; i++)
      if (pids[i] != 0 && pid_exists(pids[i]))
        left++;
      else
        pids[i] = 0;
    if (left == 0)
      break;
    if (mono_ns() > end) {
      char line[64];
      for (long i = 0; i < n; i++)
        if (pids[i] != 0) {
          int len = snprintf(line, sizeof(line), "unreaped %d\n", (int)pids[i]);
          (void)!write(fd, line, (size_t)len);
        }
      free(pids);
      return 3;
    }
    usleep(2000);
  }
  dprintf(fd, "reaped %ld\n", n);
  free(pids);
  if (hold) {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &term, NULL) < 0)
      die("sigprocmask: %s", strerror(errno));
    int sig;
    if (sigwait(&term, &sig) != 0)
      die("sigwait");
  }
  return (int)code;
}

/* ---- state -------------------------------------------------------------- */

/* Escapes backslash and newline so that one value stays on one line. */
static void put_value(FILE *f, const char *key, const char *v)
{
  fprintf(f, "%s=", key);
  for (; *v != '\0'; v++) {
    if (*v == '\\')
      fputs("\\\\", f);
    else if (*v == '\n')
      fputs("\\n", f);
    else
      fputc(*v, f);
  }
  fputc('\n', f);
}

static void put_sigs(FILE *f, const char *key, bool (*test)(int))
{
  fprintf(f, "%s=", key);
  const char *sep = "";
  for (int sig = 1; sig <= SIGRTMAX; sig++)
    if (test(sig)) {
      fprintf(f, "%s%d", sep, sig);
      sep = ",";
    }
  fputc('\n', f);
}

static sigset_t blocked_now;
static bool is_blocked(int sig) { return sigismember(&blocked_now, sig) == 1; }

static bool is_ignored(int sig)
{
  struct sigaction sa;
  if (!catchable(sig) || sigaction(sig, NULL, &sa) < 0)
    return false;
  return sa.sa_handler == SIG_IGN;
}

static int cmp_int(const void *a, const void *b)
{
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static int mode_state(int argc, char **argv, char **full_argv, int full_argc)
{
  if (argc < 1)
    usage("state FILE [ARG...]");
  /* Before opening anything: the descriptors as exec left them. */
  int fds[1024], nfds = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    die("opendir /proc/self/fd: %s", strerror(errno));
  int self_fd = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL && nfds < 1024) {
    if (e->d_name[0] == '.')
      continue;
    int fd = atoi(e->d_name);
    if (fd != self_fd)
      fds[nfds++] = fd;
  }
  closedir(d);
  qsort(fds, (size_t)nfds, sizeof(fds[0]), cmp_int);
  if (sigprocmask(SIG_BLOCK, NULL, &blocked_now) < 0)
    die("sigprocmask: %s", strerror(errno));

  /* Write a temporary file and rename it, so that the test never reads a
   * half-written state. */
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", argv[0]);
  FILE *f = fopen(tmp, "we");
  if (f == NULL)
    die("fopen %s: %s", tmp, strerror(errno));
  fprintf(f, "argc=%d\n", full_argc);
  for (int i = 0; i < full_argc; i++) {
    char key[32];
    snprintf(key, sizeof(key), "argv%d", i);
    put_value(f, key, full_argv[i]);
  }
  for (char **env = environ; *env != NULL; env++)
    if (strncmp(*env, "LWSINIT_", 8) == 0 || strncmp(*env, "TESTCHILD_", 10) == 0) {
      const char *eq = strchr(*env, '=');
      if (eq == NULL)
        continue;
      char key[256];
      snprintf(key, sizeof(key), "env.%.*s", (int)(eq - *env), *env);
      put_value(f, key, eq + 1);
    }
  put_sigs(f, "blocked", is_blocked);
  put_sigs(f, "ignored", is_ignored);
  fprintf(f, "pid=%d\nppid=%d\npgid=%d\nsid=%d\n", (int)getpid(), (int)getppid(),
          (int)getpgrp(), (int)getsid(0));
  fprintf(f, "tpgid=%d\n", isatty(STDIN_FILENO) ? (int)tcgetpgrp(STDIN_FILENO) : -1);
  char cwd[4096];
  put_value(f, "cwd", getcwd(cwd, sizeof(cwd)) != NULL ? cwd : "?");
  fprintf(f, "fds=");
  for (int i = 0; i < nfds; i++)
    fprintf(f, "%s%d", i ? "," : "", fds[i]);
  fprintf(f, "\n");
  for (int i = 0; i < nfds; i++) {
    char link[64], target[512];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fds[i]);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    target[n > 0 ? n : 0] = '\0';
    char key[32];
    snprintf(key, sizeof(key), "fd%d", fds[i]);
    put_value(f, key, target);
  }
  fprintf(f, "end=1\n");
  if (fclose(f) != 0)
    die("write %s: %s", tmp, strerror(errno));
  if (rename(tmp, argv[0]) < 0)
    die("rename %s: %s", tmp, strerror(errno));
  return 0;
}

/* ---- serve -------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;
static void on_stop(int sig) { stop_requested = sig; }

struct conn {
  int fd;
  char buf[2048];
  size_t len;
};

static void reply(int fd, int code, const char *reason, const char *body, bool head)
{
  char out[512];
  int n = snprintf(out, sizeof(out),
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n%s",
                   code, reason, strlen(body), head ? "" : body);
  /* A short reply to a peer that went away is the peer's loss. */
  (void)!send(fd, out, (size_t)n, MSG_NOSIGNAL);
}

/* Answers once the request line and headers are in; false: keep reading. */
static bool handle(struct conn *c)
{
  c->buf[c->len] = '\0';
  if (strstr(c->buf, "\r\n\r\n") == NULL && c->len < sizeof(c->buf) - 1)
    return false;
  bool head = strncmp(c->buf, "HEAD ", 5) == 0;
  const char *path = head ? c->buf + 5 : strncmp(c->buf, "GET ", 4) == 0 ? c->buf + 4 : NULL;
  if (path == NULL)
    reply(c->fd, 405, "Method Not Allowed", "method not allowed\n", false);
  else if (strncmp(path, "/health ", 8) == 0 || strncmp(path, "/health?", 8) == 0)
    reply(c->fd, 200, "OK", "ok\n", head);
  else
    reply(c->fd, 404, "Not Found", "not found\n", head);
  return true;
}

static int mode_serve(int argc, char **argv)
{
  if (argc < 1)
    usage("serve PORT [ARGVFILE] [--bind IP]");
  long port = parse_long(argv[0], 1, 65535, "port");
  const char *argvfile = NULL, *bind_ip = "127.0.0.1";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc)
      bind_ip = argv[++i];
    else if (argvfile == NULL && argv[i][0] != '-')
      argvfile = argv[i];
    else
      usage("serve: unknown option");
  }
  if (argvfile != NULL) {
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", argvfile);
    FILE *f = fopen(tmp, "we");
    if (f == NULL)
      die("fopen %s: %s", tmp, strerror(errno));
    /* argv[-2] is the program, argv[-1] the mode: the whole command line. */
    for (int i = -2; i < argc; i++)
      put_value(f, "arg", argv[i]);
    if (fclose(f) != 0 || rename(tmp, argvfile) < 0)
      die("write %s: %s", argvfile, strerror(errno));
  }

  /* SIGTERM/SIGINT stay blocked except inside ppoll, so a stop request is
   * never lost between a check and the wait. */
  sigset_t stop, wait_mask;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (sigprocmask(SIG_BLOCK, &stop, &wait_mask) < 0)
    die("sigprocmask: %s", strerror(errno));
  sigdelset(&wait_mask, SIGTERM);
  sigdelset(&wait_mask, SIGINT);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop;
  sigfillset(&sa.sa_mask);
  if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
    die("sigaction: %s", strerror(errno));

  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (ls < 0)
    die("socket: %s", strerror(errno));
  int one = 1;
  if (setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
    die("setsockopt: %s", strerror(errno));
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, bind_ip, &sin.sin_addr) != 1)
    usage("serve: --bind needs an IPv4 address");
  if (bind(ls, (struct sockaddr *)&sin, sizeof(sin)) < 0)
    die("bind %s:%ld: %s", bind_ip, port, strerror(errno));
  if (listen(ls, 64) < 0)
    die("listen: %s", strerror(errno));

  enum { MAXC = 32 };
  struct conn conns[MAXC];
  for (int i = 0; i < MAXC; i++)
    conns[i].fd = -1;
  for (;;) {
    struct pollfd pfd[MAXC + 1];
    int map[MAXC + 1];
    nfds_t n = 0;
    pfd[n] = (struct pollfd){.fd = ls, .events = POLLIN};
    map[n++] = -1;
    for (int i = 0; i < MAXC; i++)
      if (conns[i].fd >= 0) {
        pfd[n] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        map[n++] = i;
      }
    int r = ppoll(pfd, n, NULL, &wait_mask);
    if (stop_requested)
      return 0;
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      die("ppoll: %s", strerror(errno));
    for (nfds_t k = 0; k < n; k++) {
      if (pfd[k].revents == 0)
        continue;
      if (map[k] < 0) {
        int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0)
          continue; /* EAGAIN, or a peer that left */
        int slot = -1;
        for (int i = 0; i < MAXC && slot < 0; i++)
          if (conns[i].fd < 0)
            slot = i;
        if (slot < 0) {
          close(c);
          continue;
        }
        conns[slot].fd = c;
        conns[slot].len = 0;
        continue;
      }
      struct conn *c = &conns[map[k]];
      ssize_t got = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
      if (got < 0 && (errno == EAGAIN || errno == EINTR))
        continue;
      if (got > 0)
        c->len += (size_t)got;
      if (got <= 0 || handle(c)) {
        close(c->fd);
        c->fd = -1;
      }
    }
  }
}

/* ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
  if (argc < 2)
    usage("a mode is needed");
  const char *mode = argv[1];
  int n = argc - 2;
  char **rest = argv + 2;
  if (strcmp(mode, "exit") == 0)
    return mode_exit(n, rest);
  if (strcmp(mode, "kill") == 0)
    return mode_kill(n, rest);
  if (strcmp(mode, "sleep") == 0)
    return mode_sleep(n, rest);
  if (strcmp(mode, "signals") == 0)
    return mode_signals(n, rest);
  if (strcmp(mode, "orphans") == 0)
    return mode_orphans(n, rest);
  if (strcmp(mode, "state") == 0)
    return mode_state(n, rest, argv, argc);
  if (strcmp(mode, "serve") == 0)
    return mode_serve(n, rest);
  usage("unknown mode");
}
