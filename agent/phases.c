/* The launch in phases (include/lwsinit/phases.h): the steps and the
 * group's condition, the service process, its probe and the deadlines. */
#include "lwsinit/phases.h"

#include "lwsinit/expand.h"
#include "lwsinit/launcher.h"
#include "lwsinit/text.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often a service that is not up yet is probed: Ray starts a node in
 * seconds, and a connection to the loopback costs nothing. */
#define PROBE_MS 200

static const char *const step_names[LWSI_PHASES_COUNT] = {
  "", "wait-leader", "service", "wait-group", "service-up", "engine",
};

const char *lwsi_phases_step_name(enum lwsi_phases_step s)
{
  return (unsigned)s < LWSI_PHASES_COUNT ? step_names[s] : "";
}

int lwsi_phases_step_parse(const char *name)
{
  for (int i = 1; i < LWSI_PHASES_COUNT; i++)
    if (strcmp(step_names[i], name) == 0)
      return i;
  return -EINVAL;
}

bool lwsi_phases_step_timed(enum lwsi_phases_step s)
{
  return s == LWSI_PHASES_WAIT_LEADER || s == LWSI_PHASES_SERVICE || s == LWSI_PHASES_WAIT_GROUP;
}

int lwsi_phases_service_argv(const struct lwsi_engine *e, bool leader, const char *leader_ip,
                             uint16_t dist_port, char ***out)
{
  if (e == NULL || e->service == NULL)
    return -EINVAL;
  char dport[8], nport[8], bracketed[72];
  snprintf(dport, sizeof(dport), "%u", dist_port);
  snprintf(nport, sizeof(nport), "%u", e->service->node_port);
  /* As in COMMAND (cmdline.c): an IPv6 address before ":PORT" in brackets. */
  const char *host = leader_ip;
  if (host != NULL && strchr(host, ':') != NULL && host[0] != '[') {
    snprintf(bracketed, sizeof(bracketed), "[%s]", host);
    host = bracketed;
  }
  const struct lwsi_expand_var vars[] = {
    {"leader_ip", leader_ip}, {"leader_ip:", host}, {"dist_port", dport}, {"node_port", nport},
  };
  char bad[32];
  const char *const *tmpl = leader ? e->service->leader_argv : e->service->worker_argv;
  int rc = lwsi_expand_argv((char *const *)tmpl, vars, sizeof(vars) / sizeof(vars[0]), out, bad,
                            sizeof(bad));
  /* The table's own placeholders are all known: only memory can fail. */
  return rc == 0 ? 0 : (rc == -ENOMEM ? -ENOMEM : -EINVAL);
}

uint16_t lwsi_phases_up_port(const struct lwsi_engine *e, bool leader, uint16_t dist_port)
{
  if (e == NULL || e->service == NULL)
    return 0;
  return leader ? dist_port : e->service->node_port;
}

/* ---- the group's steps ----------------------------------------------- */

int lwsi_phases_group_init(struct lwsi_phases_group *g, uint32_t size)
{
  g->size = size;
  g->step = calloc(size > 0 ? size : 1, 1);
  return g->step != NULL ? 0 : -ENOMEM;
}

void lwsi_phases_group_free(struct lwsi_phases_group *g)
{
  free(g->step);
  g->step = NULL;
  g->size = 0;
}

int lwsi_phases_group_set(struct lwsi_phases_group *g, uint32_t rank, enum lwsi_phases_step s)
{
  if (g->step == NULL || rank >= g->size || (unsigned)s >= LWSI_PHASES_COUNT)
    return -ERANGE;
  if (g->step[rank] >= (uint8_t)s)
    return -EALREADY;
  g->step[rank] = (uint8_t)s;
  return 0;
}

enum lwsi_phases_step lwsi_phases_group_get(const struct lwsi_phases_group *g, uint32_t rank)
{
  if (g->step == NULL || rank >= g->size)
    return LWSI_PHASES_NONE;
  return (enum lwsi_phases_step)g->step[rank];
}

bool lwsi_phases_group_ready(const struct lwsi_phases_group *g)
{
  if (g->step == NULL || g->size == 0 || g->step[0] < LWSI_PHASES_WAIT_GROUP)
    return false;
  for (uint32_t r = 1; r < g->size; r++)
    if (g->step[r] < LWSI_PHASES_SERVICE_UP)
      return false;
  return true;
}

#define BEHIND_LISTED 4

void lwsi_phases_group_behind(const struct lwsi_phases_group *g,
                              const char *(*pod_of)(void *data, uint32_t rank), void *data,
                              char *buf, size_t len)
{
  size_t o = 0;
  uint32_t n = 0;
  if (len > 0)
    buf[0] = '\0';
  for (uint32_t r = 0; g->step != NULL && r < g->size; r++) {
    uint8_t want = r == 0 ? LWSI_PHASES_WAIT_GROUP : LWSI_PHASES_SERVICE_UP;
    if (g->step[r] >= want)
      continue;
    if (n++ >= BEHIND_LISTED || o >= len)
      continue;
    const char *pod = pod_of != NULL ? pod_of(data, r) : "";
    char podtxt[300] = "";
    if (pod != NULL && pod[0] != '\0')
      lwsi_text_printf(podtxt, sizeof(podtxt), " (pod %s)", pod);
    const char *name = g->step[r] == LWSI_PHASES_NONE ? "not begun" : step_names[g->step[r]];
    lwsi_text_printf(buf + o, len - o, "%srank %u%s in step '%s'", o > 0 ? ", " : "", r, podtxt,
                     name);
    o += strlen(buf + o);
  }
  if (n > BEHIND_LISTED && o < len)
    lwsi_text_printf(buf + o, len - o, " and %u more", n - BEHIND_LISTED);
}

/* ---- on the loop ------------------------------------------------------ */

int lwsi_phases_init(struct lwsi_phases *p, uv_loop_t *loop, uint32_t size, uint64_t deadline_ms,
                     lwsi_phases_cb cb)
{
  void *data = p->data;
  memset(p, 0, sizeof(*p));
  p->data = data;
  p->loop = loop;
  p->cb = cb;
  p->deadline_ms = deadline_ms;
  int rc = lwsi_phases_group_init(&p->group, size);
  if (rc < 0)
    return rc;
  uv_timer_init(loop, &p->deadline);
  uv_timer_init(loop, &p->probe_timer);
  uv_timer_init(loop, &p->kill_timer);
  uv_timer_init(loop, &p->exited);
  p->deadline.data = p->probe_timer.data = p->kill_timer.data = p->exited.data = p;
  p->handles_open = true;
  return 0;
}

static void on_deadline(uv_timer_t *t)
{
  struct lwsi_phases *p = t->data;
  p->cb(p, LWSI_PHASES_EV_DEADLINE);
}

void lwsi_phases_enter(struct lwsi_phases *p, uint32_t rank, enum lwsi_phases_step s)
{
  p->step = s;
  lwsi_phases_group_set(&p->group, rank, s);
  if (!p->handles_open)
    return;
  uv_timer_stop(&p->deadline);
  if (lwsi_phases_step_timed(s) && p->deadline_ms > 0)
    uv_timer_start(&p->deadline, on_deadline, p->deadline_ms, 0);
}

int lwsi_phases_spawn(struct lwsi_phases *p, char *const *argv, char *const *envp,
                      const sigset_t *child_mask)
{
  pid_t pid = 0;
  int rc = lwsi_launcher_spawn(argv, envp, child_mask, &pid);
  if (pid > 0) {
    p->service = pid;
    /* A failed exec still leaves a process to reap, but nothing runs. */
    p->service_running = rc == 0;
  }
  return rc;
}

static void on_probe_timer(uv_timer_t *t);

static void on_conn_closed(uv_handle_t *h)
{
  struct lwsi_phases *p = h->data;
  p->conn_open = false;
  if (p->probing && !p->up)
    uv_timer_start(&p->probe_timer, on_probe_timer, PROBE_MS, 0);
}

static void on_connected(uv_connect_t *req, int status)
{
  struct lwsi_phases *p = req->data;
  if (status == 0 && p->probing && !p->up) {
    p->up = true;
    p->probing = false;
    uv_close((uv_handle_t *)&p->conn, on_conn_closed);
    p->cb(p, LWSI_PHASES_EV_UP);
    return;
  }
  /* ECONNREFUSED until the service listens; UV_ECANCELED on close. */
  uv_close((uv_handle_t *)&p->conn, on_conn_closed);
}

static void probe_once(struct lwsi_phases *p)
{
  struct sockaddr_in sa;
  if (!p->probing || p->up || p->conn_open)
    return;
  uv_ip4_addr("127.0.0.1", p->probe_port, &sa);
  if (uv_tcp_init(p->loop, &p->conn) < 0) {
    uv_timer_start(&p->probe_timer, on_probe_timer, PROBE_MS, 0);
    return;
  }
  p->conn.data = p;
  p->conn_open = true;
  p->connect_req.data = p;
  if (uv_tcp_connect(&p->connect_req, &p->conn, (const struct sockaddr *)&sa, on_connected) < 0)
    uv_close((uv_handle_t *)&p->conn, on_conn_closed);
}

static void on_probe_timer(uv_timer_t *t)
{
  probe_once(t->data);
}

int lwsi_phases_probe(struct lwsi_phases *p, uint16_t port)
{
  if (!p->handles_open || port == 0)
    return -EINVAL;
  p->probe_port = port;
  p->probing = true;
  p->up = false;
  probe_once(p);
  return 0;
}

static void on_exited(uv_timer_t *t)
{
  struct lwsi_phases *p = t->data;
  p->cb(p, LWSI_PHASES_EV_EXITED);
}

bool lwsi_phases_reaped(struct lwsi_phases *p, pid_t pid, int status)
{
  if (p->service == 0 || pid != p->service)
    return false;
  bool was_running = p->service_running;
  p->service_running = false;
  p->service_status = status;
  p->probing = false;
  /* Whatever it left in its process group goes with it. */
  (void)kill(-pid, SIGKILL);
  if (p->handles_open) {
    uv_timer_stop(&p->kill_timer);
    if (was_running)
      uv_timer_start(&p->exited, on_exited, 0, 0);
  }
  return true;
}

static void on_kill(uv_timer_t *t)
{
  struct lwsi_phases *p = t->data;
  if (p->service_running)
    (void)kill(-p->service, SIGKILL);
}

void lwsi_phases_stop(struct lwsi_phases *p, uint64_t grace_ms)
{
  p->probing = false;
  if (p->handles_open)
    uv_timer_stop(&p->deadline);
  if (!p->service_running)
    return;
  /* The result is not looked at: ESRCH means it is gone already, which
   * is what we want (kill(2)). */
  (void)kill(-p->service, SIGTERM);
  if (p->handles_open && !uv_is_active((uv_handle_t *)&p->kill_timer))
    uv_timer_start(&p->kill_timer, on_kill, grace_ms, 0);
}

void lwsi_phases_close(struct lwsi_phases *p)
{
  if (p->service_running)
    (void)kill(-p->service, SIGKILL);
  p->probing = false;
  if (p->handles_open) {
    uv_close((uv_handle_t *)&p->deadline, NULL);
    uv_close((uv_handle_t *)&p->probe_timer, NULL);
    uv_close((uv_handle_t *)&p->kill_timer, NULL);
    uv_close((uv_handle_t *)&p->exited, NULL);
    p->handles_open = false;
  }
  if (p->conn_open && !uv_is_closing((uv_handle_t *)&p->conn))
    uv_close((uv_handle_t *)&p->conn, NULL);
  lwsi_phases_group_free(&p->group);
}
