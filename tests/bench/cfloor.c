/* The C floor of a join (tests/bench/join_bench.py): the least a rendezvous
 * of N processes on loopback can cost, so that lwsinit's join has a
 * reproducible yardstick. One process per rank:
 *
 *   cfloor PORT N RANK ENGINE ARG...
 *
 * Rank 0 listens on 127.0.0.1:PORT, accepts with epoll until N-1 ranks are
 * connected, writes one byte to each (the release), then fork+execs ENGINE.
 * Every other rank connects, retrying a refused connect every millisecond,
 * blocks reading the release byte, then fork+execs ENGINE. No handshake, no
 * authentication, no checks, no logging: only the SYNs, the accepts, the
 * release and the launches. Each rank then waits for its engine (the bench
 * kills the process group). Exit 1 on any error, with one line on stderr.
 *
 *   cfloor -c PORT COUNT
 *
 * The cost of one refused connect: COUNT times a socket, a connect to
 * 127.0.0.1:PORT where nothing listens (a SYN answered by a reset) and a
 * close; prints the process's CPU time per attempt in microseconds, which
 * on loopback holds both ends' kernel work (docs/protocol.md, "Retries"). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
  fprintf(stderr, "cfloor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void launch(char **argv)
{
  pid_t p = fork();
  if (p < 0)
    die("fork");
  if (p == 0) {
    execv(argv[0], argv);
    _exit(127);
  }
  for (;;)
    if (waitpid(p, NULL, 0) == p || errno != EINTR)
      exit(0);
}

static void leader(struct sockaddr_in *sa, int n, char **engine)
{
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
    die("socket");
  if (bind(ls, (struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(ls, 4096) < 0)
    die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) < 0)
    die("epoll");
  int *fds = calloc((size_t)n, sizeof(int));
  int got = 0;
  if (fds == NULL)
    die("calloc");
  while (got < n - 1) {
    if (epoll_wait(ep, &ev, 1, -1) < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_wait");
    }
    for (;;) {
      int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EAGAIN || errno == EINTR)
          break;
        die("accept");
      }
      fds[got++] = c;
      if (got == n - 1)
        break;
    }
  }
  for (int i = 0; i < got; i++)
    if (write(fds[i], "R", 1) != 1)
      die("release");
  launch(engine);
}

static void worker(struct sockaddr_in *sa, char **engine)
{
  for (;;) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
      die("socket");
    if (connect(s, (struct sockaddr *)sa, sizeof(*sa)) == 0) {
      char c;
      ssize_t r;
      while ((r = read(s, &c, 1)) < 0 && errno == EINTR)
        ;
      if (r != 1)
        die("read the release");
      launch(engine);
    }
    if (errno != ECONNREFUSED && errno != EINTR)
      die("connect");
    close(s);
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
}

static double cpu_us(void)
{
  struct rusage u;
  if (getrusage(RUSAGE_SELF, &u) < 0)
    die("getrusage");
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
         (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static int refused_cost(struct sockaddr_in *sa, long count)
{
  double t0 = cpu_us();
  for (long i = 0; i < count; i++) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
      die("socket");
    if (connect(s, (struct sockaddr *)sa, sizeof(*sa)) == 0 || errno != ECONNREFUSED) {
      fprintf(stderr, "cfloor: the connect was not refused: something listens there\n");
      return 1;
    }
    close(s);
  }
  printf("%.2f\n", (cpu_us() - t0) / (double)count);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc == 4 && strcmp(argv[1], "-c") == 0) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return refused_cost(&sa, atol(argv[3]));
  }
  if (argc < 5) {
    fprintf(stderr, "usage: cfloor PORT N RANK ENGINE ARG... | cfloor -c PORT COUNT\n");
    return 2;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int n = atoi(argv[2]);
  int rank = atoi(argv[3]);
  if (n < 2 || rank < 0 || rank >= n) {
    fprintf(stderr, "cfloor: bad N or RANK\n");
    return 2;
  }
  if (rank == 0)
    leader(&sa, n, argv + 4);
  else
    worker(&sa, argv + 4);
  return 1;
}
