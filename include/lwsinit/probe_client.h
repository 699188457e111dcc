/* The client behind `lwsinit probe live|ready [--addr HOST:PORT]`
 * (contract, "Command line"): exit 0 on HTTP 200, else 1. It runs as its
 * own short-lived process (a Kubernetes exec probe), so it blocks, but
 * with one deadline over connect, request and response, kept with poll(2):
 * a probe that cannot finish in time is a failed probe, never a hung one. */
#ifndef LWSINIT_PROBE_CLIENT_H
#define LWSINIT_PROBE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Under kubelet's default exec probe timeout of 1 s would be tight for a
 * loaded node; 2.5 s keeps well under the usual timeoutSeconds of 3+. */
#define LWSI_PROBE_CLIENT_TIMEOUT_MS 2500

struct lwsi_probe_result {
  int status;      /* the HTTP status, 0 when none arrived */
  char body[512];  /* the start of the body, NUL-terminated; control characters but
                   * newlines become spaces */
  bool truncated;  /* the body was longer */
};

/* Sends "GET path" to host:port (an IPv4 or IPv6 literal, brackets
 * allowed) and reads the answer, all within timeout_ms. Returns 0 when an
 * answer was read (res->status set), or a negative errno: -EINVAL (host is
 * not an IP literal), -ETIMEDOUT, -ECONNREFUSED and other socket errors,
 * -EPROTO (not HTTP). */
int lwsi_probe_client_get(const char *host, uint16_t port, const char *path,
                          uint64_t timeout_ms, struct lwsi_probe_result *res);

/* "/readyz" or "/livez". */
const char *lwsi_probe_client_path(bool ready);

/* The exit code of `lwsinit probe` for a get's return value and result:
 * 0 on HTTP 200, else 1. */
int lwsi_probe_client_exit_code(int rc, const struct lwsi_probe_result *res);

#endif
