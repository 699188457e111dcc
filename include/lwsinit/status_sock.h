/* The status socket (contract, "Status"): a Unix stream socket, mode 0600,
 * that answers every accepted connection of the same uid (or root) with the
 * status document and closes it. */
#ifndef LWSINIT_STATUS_SOCK_H
#define LWSINIT_STATUS_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Renders the document; returns malloc'd text or NULL. */
typedef char *(*lwsi_status_render_cb)(void *data);

struct lwsi_status_sock {
  uv_pipe_t listener;
  uv_loop_t *loop;
  char path[108];
  lwsi_status_render_cb render;
  void *data;
  uint64_t refused; /* connections of another uid */
  unsigned open_conns;
  int listening;
};

/* Creates the socket's folder (0700) if missing, replaces a stale socket,
 * binds with mode 0600 and listens. Returns 0 or a negative errno. */
int lwsi_status_sock_start(struct lwsi_status_sock *s, uv_loop_t *loop, const char *path,
                           lwsi_status_render_cb render, void *data);

/* Closes the listener and removes the socket file. */
void lwsi_status_sock_close(struct lwsi_status_sock *s);

/* Client side (`lwsinit status`): connects, reads the whole document into
 * a malloc'd string within timeout_ms. Returns 0 or a negative errno. */
int lwsi_status_sock_fetch(const char *path, uint64_t timeout_ms, char **out);

#endif
