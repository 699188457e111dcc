/* Tests agent/supervisor.c without a whole agent: the test process blocks
 * its signals and becomes the child subreaper (lwsi_supervisor_init does,
 * when not PID 1), then starts real children through the supervisor and
 * checks the events: a child's exit and its status, an orphan left in the
 * child's group killed and reaped, signals from another process forwarded
 * to the group or dropped with no child, SIGTERM reported as a stop, and
 * the stop sequence (drain, forward, grace, SIGKILL). Every case runs the
 * loop to a deadline; the loop is closed at the end. */
#include "lwsinit/supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

extern char **environ;

static uv_loop_t loop;
static uv_timer_t deadline_timer;
static struct lwsi_supervisor sup;
static bool timed_out;

#define MAX_EV 32
static struct {
  enum lwsi_sup_event ev;
  int arg;
  uint64_t at_ms;
} evs[MAX_EV];
static int nev;
/* The event that ends a case's loop. */
static enum lwsi_sup_event stop_on;
static bool stop_on_stop_signal;

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_sup(struct lwsi_supervisor *s, enum lwsi_sup_event ev, int arg)
{
  if (nev < MAX_EV) {
    evs[nev].ev = ev;
    evs[nev].arg = arg;
    evs[nev].at_ms = now_ms();
    nev++;
  }
  if (ev == LWSI_SUP_STOP_SIGNAL && stop_on_stop_signal)
    lwsi_supervisor_stop(s, arg, false);
  if (ev == stop_on)
    uv_stop(&loop);
}

static void on_deadline(uv_timer_t *t)
{
  timed_out = true;
  uv_stop(&loop);
}

/* Runs the loop until the event stop_on or 10 s. */
static void run_until(enum lwsi_sup_event ev)
{
  stop_on = ev;
  timed_out = false;
  uv_timer_start(&deadline_timer, on_deadline, 10000, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_timer_stop(&deadline_timer);
}

/* The index of the first event ev at or after from, or -1. */
static int find(enum lwsi_sup_event ev, int from)
{
  for (int i = from; i < nev; i++)
    if (evs[i].ev == ev)
      return i;
  return -1;
}

/* Runs the loop until ev has happened in this case (it may already have:
 * one read of the signalfd can bring several events). */
static void wait_for(enum lwsi_sup_event ev)
{
  timed_out = false;
  if (find(ev, 0) < 0)
    run_until(ev);
}

/* Waits up to 5 s for the child to create path (it does once its traps
 * are set). Signals meanwhile wait in the signalfd. */
static bool wait_ready(const char *path)
{
  uint64_t end = now_ms() + 5000;
  while (access(path, F_OK) != 0) {
    if (now_ms() >= end)
      return false;
    usleep(2000);
  }
  unlink(path);
  return true;
}

/* A fresh case: the child of the last one is gone. */
static void reset(uint64_t drain_ms, uint64_t grace_ms)
{
  nev = 0;
  stop_on_stop_signal = false;
  sup.child = 0;
  sup.child_running = false;
  sup.stopping = sup.draining = sup.held = false;
  sup.drain_ms = drain_ms;
  sup.grace_ms = grace_ms;
}

/* Sends sig to us from another process: the supervisor ignores what this
 * process raises on itself. The sender is reaped as an orphan or child. */
static void signal_from_elsewhere(int sig)
{
  pid_t me = getpid();
  pid_t p = fork();
  if (p == 0) {
    kill(me, sig);
    _exit(0);
  }
}

static void test_exit_and_orphan(void)
{
  reset(0, 1000);
  /* The shell leaves a sleeper in its group and exits 3. */
  char *argv[] = {"sh", "-c", "sleep 30 & exit 3", NULL};
  TAP_OK(lwsi_supervisor_spawn(&sup, argv, environ) == 0 && sup.child > 0 && sup.child_running,
         "spawn: the child runs");
  wait_for(LWSI_SUP_CHILD_EXITED);
  int i = find(LWSI_SUP_CHILD_EXITED, 0);
  TAP_OK(!timed_out && i >= 0 && WIFEXITED(evs[i].arg) && WEXITSTATUS(evs[i].arg) == 3,
         "CHILD_EXITED with its status (3)");
  TAP_OK(lwsi_supervisor_exit_code(sup.child_status) == 3 && !sup.child_running,
         "exit code 3, no longer running");
  /* The sleeper, re-parented to us (the subreaper), dies with the group. */
  wait_for(LWSI_SUP_REAPED);
  i = find(LWSI_SUP_REAPED, 0);
  TAP_OK(!timed_out && i >= 0 && WIFSIGNALED(evs[i].arg) && WTERMSIG(evs[i].arg) == SIGKILL,
         "the orphan left in the group is killed and reaped");
  TAP_OK(sup.reaped_others >= 1 && sup.reaped_pid > 0 && sup.reaped_pid != sup.child,
         "counted as another process (pid %d)", (int)sup.reaped_pid);
}

static void test_exec_fails(void)
{
  reset(0, 1000);
  char *argv[] = {"/nonexistent/engine", NULL};
  int rc = lwsi_supervisor_spawn(&sup, argv, environ);
  TAP_OK(rc == -ENOENT && sup.child > 0 && !sup.child_running,
         "a missing program: -ENOENT, a child that is not running");
  wait_for(LWSI_SUP_REAPED);
  int i = find(LWSI_SUP_REAPED, 0);
  TAP_OK(!timed_out && i >= 0 && WIFEXITED(evs[i].arg) && WEXITSTATUS(evs[i].arg) == 127,
         "reaped as another process, status 127");
  TAP_OK(find(LWSI_SUP_CHILD_EXITED, 0) < 0, "no CHILD_EXITED: its status is not the agent's");
}

static void test_forward_and_drop(void)
{
  reset(0, 1000);
  signal_from_elsewhere(SIGUSR1);
  wait_for(LWSI_SUP_DROPPED);
  int i = find(LWSI_SUP_DROPPED, 0);
  TAP_OK(!timed_out && i >= 0 && evs[i].arg == SIGUSR1, "no child: SIGUSR1 dropped");

  reset(0, 1000);
  /* The shell exits 42 on SIGUSR1; ready once its trap is set. */
  char ready[64];
  snprintf(ready, sizeof(ready), "/tmp/lwsi-test-sup-%d-usr1", (int)getpid());
  char *argv[] = {"sh", "-c", "trap 'exit 42' USR1; : > \"$1\"; while :; do sleep 0.01; done",
                  "sh", ready, NULL};
  TAP_OK(lwsi_supervisor_spawn(&sup, argv, environ) == 0, "spawn a trapping child");
  TAP_OK(wait_ready(ready), "the child is ready");
  signal_from_elsewhere(SIGUSR1);
  wait_for(LWSI_SUP_CHILD_EXITED);
  i = find(LWSI_SUP_FORWARDED, 0);
  TAP_OK(i >= 0 && evs[i].arg == SIGUSR1, "SIGUSR1 forwarded to the child's group");
  i = find(LWSI_SUP_CHILD_EXITED, 0);
  TAP_OK(!timed_out && i >= 0 && WIFEXITED(evs[i].arg) && WEXITSTATUS(evs[i].arg) == 42,
         "the child got it (exit 42)");
}

static void test_grace_then_kill(void)
{
  reset(0, 200);
  stop_on_stop_signal = true;
  /* SIGTERM is ignored by the shell and, across exec, by its sleeps. */
  char ready[64];
  snprintf(ready, sizeof(ready), "/tmp/lwsi-test-sup-%d-term", (int)getpid());
  char *argv[] = {"sh", "-c", "trap '' TERM; : > \"$1\"; while :; do sleep 0.01; done", "sh",
                  ready, NULL};
  TAP_OK(lwsi_supervisor_spawn(&sup, argv, environ) == 0, "spawn a child that ignores SIGTERM");
  TAP_OK(wait_ready(ready), "the child is ready");
  signal_from_elsewhere(SIGTERM);
  wait_for(LWSI_SUP_CHILD_EXITED);
  int s = find(LWSI_SUP_STOP_SIGNAL, 0);
  int f = find(LWSI_SUP_FORWARDED, 0);
  int k = find(LWSI_SUP_KILLED, 0);
  int e = find(LWSI_SUP_CHILD_EXITED, 0);
  TAP_OK(s >= 0 && evs[s].arg == SIGTERM, "SIGTERM is a stop signal, not forwarded as such");
  TAP_OK(f > s && evs[f].arg == SIGTERM, "the stop forwards it");
  TAP_OK(k > f && evs[k].at_ms - evs[f].at_ms >= 190, "SIGKILL after the grace (%d ms)",
         k > f ? (int)(evs[k].at_ms - evs[f].at_ms) : -1);
  TAP_OK(!timed_out && e > k && WIFSIGNALED(evs[e].arg) && WTERMSIG(evs[e].arg) == SIGKILL &&
             lwsi_supervisor_exit_code(evs[e].arg) == 137,
         "the child exits by SIGKILL (137)");
}

static void test_drain(void)
{
  reset(300, 5000);
  char *argv[] = {"sh", "-c", "exec sleep 30", NULL};
  TAP_OK(lwsi_supervisor_spawn(&sup, argv, environ) == 0, "spawn");
  uint64_t t0 = now_ms();
  lwsi_supervisor_stop(&sup, SIGTERM, true);
  TAP_OK(sup.draining && find(LWSI_SUP_FORWARDED, 0) < 0, "draining: nothing forwarded yet");
  wait_for(LWSI_SUP_CHILD_EXITED);
  int f = find(LWSI_SUP_FORWARDED, 0);
  int e = find(LWSI_SUP_CHILD_EXITED, 0);
  TAP_OK(f >= 0 && evs[f].arg == SIGTERM && evs[f].at_ms - t0 >= 290,
         "SIGTERM forwarded after the drain (%d ms)", f >= 0 ? (int)(evs[f].at_ms - t0) : -1);
  TAP_OK(!timed_out && e > f && WIFSIGNALED(evs[e].arg) && WTERMSIG(evs[e].arg) == SIGTERM,
         "the child ends by SIGTERM");
  TAP_OK(find(LWSI_SUP_KILLED, 0) < 0, "no SIGKILL: it ended within the grace");
}

static uv_timer_t release_timer;

static void on_release(uv_timer_t *t)
{
  lwsi_supervisor_release(&sup);
}

/* One held stop: drain_ms of drain, held up to max_ms, released at
 * release_ms (0: never). Returns when the forward went out, in ms after
 * the stop began, or -1. */
static int held_stop(uint64_t drain_ms, uint64_t max_ms, uint64_t release_ms)
{
  reset(drain_ms, 5000);
  char *argv[] = {"sh", "-c", "exec sleep 30", NULL};
  if (lwsi_supervisor_spawn(&sup, argv, environ) != 0)
    return -1;
  /* The loop's clock stands where its last iteration left it, before the
   * spawn: the hold's and the release's timers must count from now, as
   * t0 does (uv_update_time(3)), or a slow spawn makes them fire early. */
  uv_update_time(&loop);
  uint64_t t0 = now_ms();
  lwsi_supervisor_hold(&sup, max_ms);
  lwsi_supervisor_stop(&sup, SIGTERM, true);
  if (release_ms > 0)
    uv_timer_start(&release_timer, on_release, release_ms, 0);
  bool none_yet = find(LWSI_SUP_FORWARDED, 0) < 0;
  wait_for(LWSI_SUP_CHILD_EXITED);
  uv_timer_stop(&release_timer);
  int f = find(LWSI_SUP_FORWARDED, 0);
  if (!none_yet || timed_out || f < 0 || evs[f].arg != SIGTERM)
    return -1;
  return (int)(evs[f].at_ms - t0);
}

static void test_hold(void)
{
  uv_timer_init(&loop, &release_timer);
  int at = held_stop(100, 5000, 400);
  TAP_OK(at >= 390 && at < 2000, "held: forwarded at the release, after the drain (%d ms)", at);
  at = held_stop(400, 5000, 50);
  TAP_OK(at >= 390 && at < 2000, "released early: forwarded when the drain ends (%d ms)", at);
  at = held_stop(100, 300, 0);
  TAP_OK(at >= 290 && at < 2000, "never released: forwarded at the hold's deadline (%d ms)", at);
  at = held_stop(0, 300, 100);
  TAP_OK(at >= 90 && at < 290, "held without a drain: forwarded at the release (%d ms)", at);

  /* A second SIGTERM while held hurries the stop, as while draining. */
  reset(0, 5000);
  char *argv[] = {"sh", "-c", "exec sleep 30", NULL};
  TAP_OK(lwsi_supervisor_spawn(&sup, argv, environ) == 0, "spawn");
  lwsi_supervisor_hold(&sup, 5000);
  lwsi_supervisor_stop(&sup, SIGTERM, true);
  TAP_OK(sup.draining && find(LWSI_SUP_FORWARDED, 0) < 0, "held: nothing forwarded yet");
  lwsi_supervisor_stop(&sup, SIGTERM, true);
  wait_for(LWSI_SUP_CHILD_EXITED);
  int f = find(LWSI_SUP_FORWARDED, 0);
  TAP_OK(!timed_out && f >= 0 && !sup.held, "a second stop signal forwards at once");
  uv_close((uv_handle_t *)&release_timer, NULL);
}

int main(void)
{
  sigset_t orig;
  if (lwsi_supervisor_block_signals(&orig) < 0 || uv_loop_init(&loop) < 0 ||
      uv_timer_init(&loop, &deadline_timer) < 0) {
    printf("Bail out! cannot block signals or start a loop\n");
    return 1;
  }
  int rc = lwsi_supervisor_init(&sup, &loop, &orig, 0, 1000, on_sup);
  TAP_OK(rc == 0, "init: signalfd, child subreaper (%d)", rc);
  if (rc != 0)
    return tap_done();
  test_exit_and_orphan();
  test_exec_fails();
  test_forward_and_drop();
  test_grace_then_kill();
  test_drain();
  test_hold();
  lwsi_supervisor_close(&sup);
  uv_close((uv_handle_t *)&deadline_timer, NULL);
  for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; i++)
    ;
  rc = uv_loop_close(&loop);
  TAP_OK(rc == 0, "the loop closes cleanly (%s)", rc == 0 ? "ok" : uv_strerror(rc));
  /* Anything still ours is reaped (bounded: each was killed or ends). */
  uint64_t end = now_ms() + 5000;
  while (waitpid(-1, NULL, WNOHANG) >= 0 && now_ms() < end)
    usleep(2000);
  return tap_done();
}
