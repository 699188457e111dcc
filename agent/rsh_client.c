/* `lwsinit rsh` (include/lwsinit/rsh.h, lwsi_rsh_client): the client that
 * Open MPI's launcher runs as its rsh agent. It asks the local agent,
 * through the status socket, to run the words on a member, copies the
 * remote stdout and stderr to its own, forwards the signals that end it,
 * and exits with the remote exit status, as ssh(1) does. A plain blocking
 * program: it runs outside the agent's loop. */
#include "lwsinit/rsh.h"

#include "lwsinit/fdio.h"
#include "lwsinit/status_sock.h"
#include "lwsinit/text.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static int send_frame(int fd, uint8_t type, const void *data, size_t n)
{
  uint8_t hdr[LWSI_RSH_HDR] = {type, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                               (uint8_t)n};
  int rc = lwsi_fdio_write_all(fd, hdr, sizeof(hdr));
  if (rc == 0 && n > 0)
    rc = lwsi_fdio_write_all(fd, data, n);
  return rc;
}

/* The words joined with single spaces, as ssh(1) joins its command. */
static char *join(char *const *words, int n)
{
  size_t len = 1;
  for (int i = 0; i < n; i++)
    len += strlen(words[i]) + 1;
  char *s = malloc(len);
  if (s == NULL)
    return NULL;
  size_t o = 0;
  for (int i = 0; i < n; i++) {
    size_t k = strlen(words[i]);
    if (i > 0)
      s[o++] = ' ';
    memcpy(s + o, words[i], k);
    o += k;
  }
  s[o] = '\0';
  return s;
}

/* The agent's frames: output, then an exit status or a failure. Returns
 * 0 to go on, 1 when the exit status came (in *code), -1 for a failure
 * (the line in why). */
static int take_frame(uint8_t type, const uint8_t *p, size_t n, int *code, bool *out_ok,
                      char *why, size_t whylen)
{
  switch (type) {
  case LWSI_RSH_F_STDOUT:
  case LWSI_RSH_F_STDERR:
    /* A reader that went away (EPIPE) costs the output, not the command:
     * ssh does the same. */
    if (*out_ok && lwsi_fdio_write_all(type == LWSI_RSH_F_STDOUT ? 1 : 2, p, n) < 0 &&
        type == LWSI_RSH_F_STDOUT)
      *out_ok = false;
    return 0;
  case LWSI_RSH_F_EXIT:
    if (n != 4)
      break;
    *code = (int)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    return 1;
  case LWSI_RSH_F_FAIL:
    lwsi_text_printf(why, whylen, "%.*s", (int)(n < 1024 ? n : 1024), (const char *)p);
    return -1;
  }
  lwsi_text_printf(why, whylen, "the agent answered with something other than lwsinit rsh's "
                                "frames (an lwsinit without rsh, or not an agent's socket)");
  return -1;
}

static int session(int fd, int sfd, char *why, size_t whylen)
{
  uint8_t hdr[LWSI_RSH_HDR];
  size_t hlen = 0, plen = 0, have = 0;
  uint8_t *body = NULL;
  uint8_t buf[65536];
  int code = 255;
  bool out_ok = true;
  for (;;) {
    struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    int k = poll(pfd, sfd >= 0 ? 2 : 1, -1);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0) {
      lwsi_text_printf(why, whylen, "poll: %s", strerror(errno));
      break;
    }
    if (sfd >= 0 && (pfd[1].revents & POLLIN)) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        uint8_t sig = (uint8_t)si.ssi_signo;
        (void)send_frame(fd, LWSI_RSH_F_SIGNAL, &sig, 1);
      }
    }
    if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      lwsi_text_printf(why, whylen, "the agent closed the connection without an exit status%s%s",
                       n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
      break;
    }
    for (size_t i = 0; i < (size_t)n;) {
      if (hlen < LWSI_RSH_HDR) {
        hdr[hlen++] = buf[i++];
        if (hlen < LWSI_RSH_HDR)
          continue;
        plen = (size_t)hdr[1] << 24 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 8 | hdr[4];
        if (plen > (1u << 20) || (body = malloc(plen + 1)) == NULL) {
          take_frame(0, NULL, 0, &code, &out_ok, why, whylen);
          free(body);
          return 255;
        }
        have = 0;
      }
      size_t take = plen - have < (size_t)n - i ? plen - have : (size_t)n - i;
      memcpy(body + have, buf + i, take);
      have += take;
      i += take;
      if (have < plen)
        continue;
      int rc = take_frame(hdr[0], body, plen, &code, &out_ok, why, whylen);
      free(body);
      body = NULL;
      hlen = 0;
      if (rc != 0)
        return rc > 0 ? code & 0xff : 255;
    }
  }
  free(body);
  return 255;
}

int lwsi_rsh_client(const char *socket, const char *host, char *const *words, int n, char *why,
                    size_t whylen)
{
  why[0] = '\0';
  char *cmd = join(words, n);
  if (cmd == NULL) {
    lwsi_text_printf(why, whylen, "out of memory");
    return 255;
  }
  int fd = lwsi_status_sock_connect_bound(socket);
  if (fd < 0) {
    lwsi_text_printf(why, whylen,
                     "cannot reach the agent at %s: %s (run it in the leader's container; "
                     "LWSINIT_STATUS_SOCKET must name the agent's --status-socket)",
                     socket, strerror(-fd));
    free(cmd);
    return 255;
  }
  size_t hl = strlen(host), cl = strlen(cmd);
  char *req = malloc(hl + 1 + cl);
  int rc = req == NULL ? -ENOMEM : 0;
  if (rc == 0) {
    memcpy(req, host, hl + 1);
    memcpy(req + hl + 1, cmd, cl);
    rc = send_frame(fd, LWSI_RSH_F_REQUEST, req, hl + 1 + cl);
  }
  free(req);
  free(cmd);
  if (rc < 0) {
    lwsi_text_printf(why, whylen, "cannot send the request to the agent at %s: %s", socket,
                     strerror(-rc));
    close(fd);
    return 255;
  }
  /* The caller keeps these blocked: they arrive here, and go to the
   * remote process group, as ssh forwards them (for Open MPI's mpirun,
   * which signals its rsh agents to end the remote daemons). */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  int code = session(fd, sfd, why, whylen);
  if (sfd >= 0)
    close(sfd);
  close(fd);
  return code;
}
