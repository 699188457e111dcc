/* The launch in phases: the step names, the group's condition and the
 * line's list of members behind, the services' argvs from the table, and
 * on a real loop the probe of a real port, the deadline, and a real
 * service process reaped and stopped. */
#include "lwsinit/phases.h"

#include "lwsinit/expand.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static void test_names(void)
{
  for (int i = 1; i < LWSI_PHASES_COUNT; i++)
    TAP_OK(lwsi_phases_step_parse(lwsi_phases_step_name((enum lwsi_phases_step)i)) == i,
           "step %d: its name (%s) parses back", i,
           lwsi_phases_step_name((enum lwsi_phases_step)i));
  TAP_OK(lwsi_phases_step_parse("") == -EINVAL && lwsi_phases_step_parse("nope") == -EINVAL,
         "other names are refused");
  TAP_OK(lwsi_phases_step_timed(LWSI_PHASES_SERVICE) && lwsi_phases_step_timed(LWSI_PHASES_WAIT_GROUP) &&
             lwsi_phases_step_timed(LWSI_PHASES_WAIT_LEADER) &&
             !lwsi_phases_step_timed(LWSI_PHASES_ENGINE) &&
             !lwsi_phases_step_timed(LWSI_PHASES_SERVICE_UP),
         "the steps that wait have a deadline; running ones do not");
}

static const char *pod_of(void *data, uint32_t rank)
{
  (void)data;
  return rank == 2 ? "pod-2" : "";
}

static void test_group(void)
{
  struct lwsi_phases_group g;
  TAP_OK(lwsi_phases_group_init(&g, 3) == 0, "a group of 3");
  TAP_OK(!lwsi_phases_group_ready(&g), "nothing is up at first");
  lwsi_phases_group_set(&g, 0, LWSI_PHASES_WAIT_GROUP);
  lwsi_phases_group_set(&g, 1, LWSI_PHASES_SERVICE_UP);
  lwsi_phases_group_set(&g, 2, LWSI_PHASES_SERVICE);
  TAP_OK(!lwsi_phases_group_ready(&g), "not ready while rank 2's service is not up");
  char buf[256];
  lwsi_phases_group_behind(&g, pod_of, NULL, buf, sizeof(buf));
  TAP_STR_EQ(buf, "rank 2 (pod pod-2) in step 'service'", "the line names the member and step");
  TAP_OK(lwsi_phases_group_set(&g, 2, LWSI_PHASES_WAIT_LEADER) == -EALREADY &&
             lwsi_phases_group_get(&g, 2) == LWSI_PHASES_SERVICE,
         "a step never goes back (a late message)");
  TAP_OK(lwsi_phases_group_set(&g, 3, LWSI_PHASES_SERVICE) == -ERANGE, "no rank 3");
  lwsi_phases_group_set(&g, 2, LWSI_PHASES_SERVICE_UP);
  TAP_OK(lwsi_phases_group_ready(&g), "ready once every worker's service is up");
  lwsi_phases_group_behind(&g, NULL, NULL, buf, sizeof(buf));
  TAP_STR_EQ(buf, "", "nobody behind");
  lwsi_phases_group_free(&g);

  TAP_OK(lwsi_phases_group_init(&g, 1) == 0, "a group of 1");
  lwsi_phases_group_set(&g, 0, LWSI_PHASES_SERVICE);
  TAP_OK(!lwsi_phases_group_ready(&g), "alone: not before its own service is up");
  lwsi_phases_group_set(&g, 0, LWSI_PHASES_WAIT_GROUP);
  TAP_OK(lwsi_phases_group_ready(&g), "alone: ready once its own service is up");
  lwsi_phases_group_free(&g);

  TAP_OK(lwsi_phases_group_init(&g, 10) == 0, "a group of 10");
  lwsi_phases_group_behind(&g, NULL, NULL, buf, sizeof(buf));
  TAP_OK(strstr(buf, "rank 0 in step 'not begun'") == buf && strstr(buf, "and 6 more") != NULL,
         "a long list is cut: %s", buf);
  lwsi_phases_group_free(&g);
}

static void test_argv(void)
{
  const struct lwsi_engine *e = lwsi_engine_find("vllm-ray");
  char **argv = NULL;
  TAP_OK(lwsi_phases_service_argv(e, true, "10.0.0.1", 6379, &argv) == 0, "the leader's argv");
  if (argv != NULL) {
    char line[256] = "";
    for (char **a = argv; *a != NULL; a++)
      snprintf(line + strlen(line), sizeof(line) - strlen(line), "%s%s", a == argv ? "" : " ", *a);
    TAP_STR_EQ(line, "ray start --head --port 6379 --block", "the head's command");
  }
  lwsi_expand_free(argv);
  argv = NULL;
  TAP_OK(lwsi_phases_service_argv(e, false, "fd00::1", 7000, &argv) == 0, "a worker's argv");
  if (argv != NULL) {
    char line[256] = "";
    for (char **a = argv; *a != NULL; a++)
      snprintf(line + strlen(line), sizeof(line) - strlen(line), "%s%s", a == argv ? "" : " ", *a);
    TAP_STR_EQ(line, "ray start --address [fd00::1]:7000 --node-manager-port 6380 --block",
               "a worker's command, an IPv6 leader in brackets");
  }
  lwsi_expand_free(argv);
  TAP_OK(lwsi_phases_up_port(e, true, 7000) == 7000 && lwsi_phases_up_port(e, false, 7000) == 6380,
         "up: the GCS port on the leader, the node port on a worker");
  TAP_OK(lwsi_phases_service_argv(lwsi_engine_find("vllm"), true, "10.0.0.1", 1, &argv) == -EINVAL,
         "no service, no argv");
}

/* ---- on a real loop -------------------------------------------------- */

struct seen {
  int up, deadline, exited;
  uv_loop_t *loop;
};

static void on_ev(struct lwsi_phases *p, enum lwsi_phases_ev ev)
{
  struct seen *s = p->data;
  if (ev == LWSI_PHASES_EV_UP)
    s->up++;
  else if (ev == LWSI_PHASES_EV_DEADLINE)
    s->deadline++;
  else
    s->exited++;
  uv_stop(s->loop);
}

static void on_guard(uv_timer_t *t) { uv_stop(t->loop); }

/* Runs the loop until an event or ms. */
static void run_for(uv_loop_t *loop, uint64_t ms)
{
  uv_timer_t guard;
  uv_timer_init(loop, &guard);
  uv_timer_start(&guard, on_guard, ms, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static void test_loop(void)
{
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct seen s = {0, 0, 0, &loop};
  struct lwsi_phases p;
  memset(&p, 0, sizeof(p));
  p.data = &s;
  TAP_OK(lwsi_phases_init(&p, &loop, 2, 300, on_ev) == 0, "init");

  /* A port nobody listens on yet: the probe waits, then the deadline. */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  getsockname(fd, (struct sockaddr *)&sa, &len);
  uint16_t port = ntohs(sa.sin_port);
  lwsi_phases_enter(&p, 1, LWSI_PHASES_SERVICE);
  lwsi_phases_probe(&p, port);
  run_for(&loop, 2000);
  TAP_OK(s.deadline == 1 && s.up == 0, "a port that never opens: the deadline, no up");
  TAP_OK(lwsi_phases_group_get(&p.group, 1) == LWSI_PHASES_SERVICE, "the step is recorded");

  /* It opens: up, once. */
  listen(fd, 4);
  run_for(&loop, 2000);
  TAP_OK(s.up == 1 && p.up, "the port opens: up");
  lwsi_phases_enter(&p, 1, LWSI_PHASES_SERVICE_UP);
  run_for(&loop, 400);
  TAP_OK(s.deadline == 1 && s.up == 1, "a step that runs has no deadline; up only once");
  close(fd);

  /* A service process: reaped, then EXITED on the loop. */
  sigset_t mask;
  sigemptyset(&mask);
  char *argv[] = {"sleep", "30", NULL};
  char *envp[] = {"PATH=/usr/bin:/bin", NULL};
  TAP_OK(lwsi_phases_spawn(&p, argv, envp, &mask) == 0 && p.service_running, "the service runs");
  lwsi_phases_stop(&p, 5000);
  int status = 0;
  pid_t got;
  do
    got = waitpid(p.service, &status, 0);
  while (got < 0 && errno == EINTR);
  TAP_OK(got == p.service && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
         "stop: SIGTERM to its process group");
  TAP_OK(lwsi_phases_reaped(&p, got, status) && !p.service_running, "reaped: it was the service");
  TAP_OK(!lwsi_phases_reaped(&p, got + 100000, 0), "another pid is not the service");
  run_for(&loop, 2000);
  TAP_OK(s.exited == 1 && p.service_status == status, "EXITED on the loop, with its status");

  char *missing[] = {"lwsi-no-such-program", NULL};
  int rc = lwsi_phases_spawn(&p, missing, envp, &mask);
  TAP_OK(rc == -ENOENT && !p.service_running, "a missing program: -ENOENT, nothing runs");
  if (p.service > 0)
    waitpid(p.service, &status, 0);

  lwsi_phases_close(&p);
  uv_run(&loop, UV_RUN_DEFAULT);
  TAP_OK(uv_loop_close(&loop) == 0, "the loop closes cleanly");
}

int main(void)
{
  test_names();
  test_group();
  test_argv();
  test_loop();
  return tap_done();
}
