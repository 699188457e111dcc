#include "lwsinit/status_sock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A status document is small; a bound keeps a broken server from making the
 * client allocate without end. */
#define STATUS_MAX (1u << 22)

/* Answers in flight at once; more are accepted and closed at once, so that
 * a client that never reads cannot make the agent hold documents without
 * bound (only root and our own uid can connect, but a stuck script can). */
#define STATUS_MAX_CONNS 16

struct status_conn {
  uv_pipe_t pipe;
  uv_write_t req;
  char *doc;
  struct lwsi_status_sock *owner;
};

static void conn_closed(uv_handle_t *h)
{
  struct status_conn *c = h->data;
  c->owner->open_conns--;
  free(c->doc);
  free(c);
}

static void conn_written(uv_write_t *req, int status)
{
  struct status_conn *c = req->data;
  uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

/* Only the same user, or root, may read the group's state: the document
 * names the group's pods and addresses, which other users of the node have
 * no need to see. */
static int peer_allowed(uv_pipe_t *p)
{
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)p, &fd) < 0)
    return 0;
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return 0;
  return cred.uid == 0 || cred.uid == geteuid();
}

/* Whether the peer bound its socket to an address: an rsh client does
 * (lwsi_status_sock_connect_bound), nothing else needs to. */
static int peer_bound(uv_pipe_t *p)
{
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)p, &fd) < 0)
    return 0;
  struct sockaddr_un sa;
  socklen_t len = sizeof(sa);
  if (getpeername(fd, (struct sockaddr *)&sa, &len) < 0)
    return 0;
  return len > sizeof(sa_family_t);
}

/* An rsh request runs a command in the group: only the agent's own user
 * may ask, not root when the agent is not root (docs/security.md). The
 * connection leaves this module as a descriptor of its own. */
static void hand_rsh(struct lwsi_status_sock *s, struct status_conn *c)
{
  uv_os_fd_t fd;
  struct ucred cred;
  socklen_t len = sizeof(cred);
  int dup = -1;
  if (s->rsh != NULL && uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == geteuid())
    dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  else
    s->refused++;
  uv_close((uv_handle_t *)&c->pipe, conn_closed);
  if (dup >= 0) {
    /* libuv made the accepted socket non-blocking; the callee opens it
     * as it needs. */
    int fl = fcntl(dup, F_GETFL);
    if (fl >= 0)
      (void)fcntl(dup, F_SETFL, fl & ~O_NONBLOCK);
    s->rsh(s->rsh_data, dup);
  }
}

void lwsi_status_sock_set_rsh(struct lwsi_status_sock *s, lwsi_status_rsh_cb cb, void *data)
{
  s->rsh = cb;
  s->rsh_data = data;
}

int lwsi_status_sock_connect_bound(const char *path)
{
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path))
    return -ENAMETOOLONG;
  memcpy(addr.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* An address of sizeof(sa_family_t) asks the kernel for a unique
   * abstract name (unix(7), "Autobind feature"). */
  struct sockaddr_un self = {.sun_family = AF_UNIX};
  int rc = bind(fd, (struct sockaddr *)&self, sizeof(sa_family_t));
  if (rc == 0) {
    do
      rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    while (rc < 0 && errno == EINTR);
  }
  if (rc < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  return fd;
}

static void on_connection(uv_stream_t *server, int status)
{
  struct lwsi_status_sock *s = server->data;
  if (status < 0)
    return;
  struct status_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->owner = s;
  if (uv_pipe_init(s->loop, &c->pipe, 0) < 0) {
    free(c);
    return;
  }
  c->pipe.data = c;
  c->req.data = c;
  s->open_conns++;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
    uv_close((uv_handle_t *)&c->pipe, conn_closed);
    return;
  }
  if (s->open_conns > STATUS_MAX_CONNS) {
    uv_close((uv_handle_t *)&c->pipe, conn_closed);
    return;
  }
  if (peer_bound(&c->pipe)) {
    hand_rsh(s, c);
    return;
  }
  if (!peer_allowed(&c->pipe)) {
    s->refused++;
    uv_close((uv_handle_t *)&c->pipe, conn_closed);
    return;
  }
  c->doc = s->render(s->data);
  if (c->doc == NULL) {
    uv_close((uv_handle_t *)&c->pipe, conn_closed);
    return;
  }
  uv_buf_t buf = uv_buf_init(c->doc, (unsigned)strlen(c->doc));
  if (uv_write(&c->req, (uv_stream_t *)&c->pipe, &buf, 1, conn_written) < 0)
    uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

static int make_parent_dir(const char *path)
{
  char dir[sizeof(((struct lwsi_status_sock *)0)->path)];
  snprintf(dir, sizeof(dir), "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == NULL || slash == dir)
    return 0;
  *slash = '\0';
  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* Removes a socket left by an earlier run of the agent, never anything
 * else that happens to be at the path. */
static int remove_stale(const char *path)
{
  struct stat st;
  if (lstat(path, &st) < 0)
    return errno == ENOENT ? 0 : -errno;
  if (!S_ISSOCK(st.st_mode))
    return -EEXIST;
  if (unlink(path) < 0 && errno != ENOENT)
    return -errno;
  return 0;
}

int lwsi_status_sock_start(struct lwsi_status_sock *s, uv_loop_t *loop, const char *path,
                           lwsi_status_render_cb render, void *data)
{
  memset(s, 0, sizeof(*s));
  s->loop = loop;
  s->render = render;
  s->data = data;
  if (strlen(path) >= sizeof(s->path))
    return -ENAMETOOLONG;
  snprintf(s->path, sizeof(s->path), "%s", path);
  int rc = make_parent_dir(path);
  if (rc == 0)
    rc = remove_stale(path);
  if (rc < 0)
    return rc;
  rc = uv_pipe_init(loop, &s->listener, 0);
  if (rc < 0)
    return rc;
  s->listener.data = s;
  s->listening = 1;
  /* bind(2) creates the file with the umask applied: 0177 leaves 0600, so
   * that there is no moment at which others can connect. We are single
   * threaded and restore the mask at once, before any child starts. */
  mode_t old = umask(0177);
  rc = uv_pipe_bind(&s->listener, path);
  umask(old);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, 16, on_connection);
  return rc;
}

void lwsi_status_sock_close(struct lwsi_status_sock *s)
{
  if (!s->listening)
    return;
  s->listening = 0;
  uv_close((uv_handle_t *)&s->listener, NULL);
  unlink(s->path);
}

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int lwsi_status_sock_fetch(const char *path, uint64_t timeout_ms, char **out)
{
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path))
    return -ENAMETOOLONG;
  memcpy(addr.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int rc;
  do
    rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  size_t len = 0, cap = 4096;
  char *buf = malloc(cap);
  if (buf == NULL) {
    close(fd);
    return -ENOMEM;
  }
  uint64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    uint64_t now = now_ms();
    if (now >= deadline) {
      rc = -ETIMEDOUT;
      break;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n = poll(&pfd, 1, (int)(deadline - now));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      break;
    }
    if (n == 0)
      continue;
    if (len + 1 >= cap) {
      if (cap >= STATUS_MAX) {
        rc = -EMSGSIZE;
        break;
      }
      char *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        rc = -ENOMEM;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -errno;
      break;
    }
    if (r == 0) {
      rc = len > 0 ? 0 : -ECONNRESET;
      break;
    }
    len += (size_t)r;
  }
  close(fd);
  if (rc < 0) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  *out = buf;
  return 0;
}
