/* The status socket (contract, "Status"): a Unix stream socket, mode 0600,
 * that answers every accepted connection of the same uid (or root) with the
 * status document and closes it.
 *
 * A client that bound its own socket to an address before connecting (an
 * autobound abstract name, unix(7)) asks for something else: an `lwsinit
 * rsh` request (docs/protocol.md, "lwsinit rsh"). Such a connection goes,
 * only from a peer of the agent's own uid, to the rsh callback; an unbound
 * client (lwsinit status, socat, curl --unix-socket) gets the document as
 * always, with nothing to send first. */
#ifndef LWSINIT_STATUS_SOCK_H
#define LWSINIT_STATUS_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Renders the document; returns malloc'd text or NULL. */
typedef char *(*lwsi_status_render_cb)(void *data);

/* An rsh client connected: fd is its accepted socket, now the callee's
 * (close-on-exec, blocking). */
typedef void (*lwsi_status_rsh_cb)(void *data, int fd);

struct lwsi_status_sock {
  uv_pipe_t listener;
  uv_loop_t *loop;
  char path[108];
  lwsi_status_render_cb render;
  void *data;
  uint64_t refused; /* connections of another uid */
  lwsi_status_rsh_cb rsh; /* NULL: rsh clients are closed at once */
  void *rsh_data;
  unsigned open_conns;
  int listening;
};

/* Creates the socket's folder (0700) if missing, replaces a stale socket,
 * binds with mode 0600 and listens. Returns 0 or a negative errno. */
int lwsi_status_sock_start(struct lwsi_status_sock *s, uv_loop_t *loop, const char *path,
                           lwsi_status_render_cb render, void *data);

/* Hands rsh clients' connections to cb from now on. */
void lwsi_status_sock_set_rsh(struct lwsi_status_sock *s, lwsi_status_rsh_cb cb, void *data);

/* Client side (`lwsinit rsh`): a socket bound to an autobound abstract
 * name, connected to path. Returns the descriptor (close-on-exec) or a
 * negative errno. */
int lwsi_status_sock_connect_bound(const char *path);

/* Closes the listener and removes the socket file. */
void lwsi_status_sock_close(struct lwsi_status_sock *s);

/* Client side (`lwsinit status`): connects, reads the whole document into
 * a malloc'd string within timeout_ms. Returns 0 or a negative errno. */
int lwsi_status_sock_fetch(const char *path, uint64_t timeout_ms, char **out);

#endif
