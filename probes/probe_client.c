#include "lwsinit/probe_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline. Returns 0, -ETIMEDOUT, or a
 * poll error. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
  for (;;) {
    uint64_t now = now_ms();
    if (now >= deadline)
      return -ETIMEDOUT;
    uint64_t left = deadline - now;
    struct pollfd pfd = {.fd = fd, .events = events};
    int n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n > 0)
      return 0;
  }
}

struct reader {
  struct lwsi_probe_result *res;
  size_t body_len;
  bool complete;
};

static int on_body(http_parser *p, const char *at, size_t len)
{
  struct reader *r = p->data;
  size_t room = sizeof(r->res->body) - 1 - r->body_len;
  if (len > room) {
    r->res->truncated = true;
    len = room;
  }
  memcpy(r->res->body + r->body_len, at, len);
  r->body_len += len;
  r->res->body[r->body_len] = '\0';
  return 0;
}

static int on_message_complete(http_parser *p)
{
  struct reader *r = p->data;
  r->complete = true;
  r->res->status = (int)p->status_code;
  /* One answer is all we came for: stop here. */
  http_parser_pause(p, 1);
  return 0;
}

static int parse_host(const char *host, uint16_t port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
  char h[64];
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    host++;
    n -= 2;
  }
  if (n >= sizeof(h))
    return -EINVAL;
  memcpy(h, host, n);
  h[n] = '\0';
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, h, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(*v4);
    return 0;
  }
  if (inet_pton(AF_INET6, h, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(*v6);
    return 0;
  }
  return -EINVAL;
}

static int do_get(int fd, const struct sockaddr_storage *ss, socklen_t sslen, const char *host,
                  uint16_t port, const char *path, uint64_t deadline,
                  struct lwsi_probe_result *res)
{
  /* Non-blocking connect, so the deadline also bounds the handshake (a
   * blocking connect to a silent address waits minutes). */
  if (connect(fd, (const struct sockaddr *)ss, sslen) < 0) {
    if (errno != EINPROGRESS)
      return -errno;
    int rc = wait_fd(fd, POLLOUT, deadline);
    if (rc < 0)
      return rc;
    int err = 0;
    socklen_t elen = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
      return -errno;
    if (err != 0)
      return -err;
  }

  char req[512];
  bool v6 = ss->ss_family == AF_INET6 && host[0] != '[';
  int n = snprintf(req, sizeof(req),
                   "GET %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: lwsinit-probe\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n",
                   path, v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
  if (n < 0 || (size_t)n >= sizeof(req))
    return -EINVAL;
  for (size_t off = 0; off < (size_t)n;) {
    ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int rc = wait_fd(fd, POLLOUT, deadline);
      if (rc < 0)
        return rc;
      continue;
    }
    if (w < 0)
      return -errno;
    off += (size_t)w;
  }

  /* The answer is parsed by http-parser, as the server parses requests. */
  struct reader r = {.res = res};
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &r;
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  char buf[4096];
  while (!r.complete) {
    int rc = wait_fd(fd, POLLIN, deadline);
    if (rc < 0)
      return rc;
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
      continue;
    if (got < 0)
      return -errno;
    /* got == 0 is the end of the stream, which ends an answer without a
     * Content-Length; http-parser is told with a zero-length call. */
    size_t used = http_parser_execute(&parser, &settings, buf, (size_t)got);
    enum http_errno e = HTTP_PARSER_ERRNO(&parser);
    if (r.complete)
      break;
    if (e != HPE_OK || used != (size_t)got || got == 0)
      return -EPROTO;
  }
  return 0;
}

int lwsi_probe_client_get(const char *host, uint16_t port, const char *path,
                          uint64_t timeout_ms, struct lwsi_probe_result *res)
{
  memset(res, 0, sizeof(*res));
  uint64_t deadline = now_ms() + timeout_ms;
  struct sockaddr_storage ss;
  socklen_t sslen;
  int rc = parse_host(host, port, &ss, &sslen);
  if (rc < 0)
    return rc;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  rc = do_get(fd, &ss, sslen, host, port, path, deadline, res);
  close(fd);
  if (rc < 0)
    res->status = 0;
  for (char *p = res->body; *p != '\0'; p++)
    if ((unsigned char)*p < 0x20 && *p != '\n')
      *p = ' ';
  return rc;
}

const char *lwsi_probe_client_path(bool ready) { return ready ? "/readyz" : "/livez"; }

int lwsi_probe_client_exit_code(int rc, const struct lwsi_probe_result *res)
{
  return rc == 0 && res->status == 200 ? 0 : 1;
}
