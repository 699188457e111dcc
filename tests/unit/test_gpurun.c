/* Tests agent/gpurun.c with real children (sh printing protocol lines):
 * the events read from the check's stdout, the NCCL id given on its stdin,
 * the kill (SIGTERM, then SIGKILL a second later), an exec failure, and a
 * start whose uv_read_start fails. The test reaps its children itself, on
 * a timer, as the agent's supervisor would. Every case has a deadline and
 * the loop is closed at the end (uv_loop_close must return 0). */
#include "lwsinit/gpurun.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

extern char **environ;

/* uv_read_start fails only on a handle that is closing or not readable,
 * which the read end of a fresh pipe never is, so the test stands in for
 * libuv's at link time: this definition wins over the shared library's
 * for the calls from gpurun.c, and passes through to it unless a case asks
 * for the failure. Nothing in the agent changes for the test. */
static bool fail_read_start;

int uv_read_start(uv_stream_t *stream, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
  typedef int read_start_fn(uv_stream_t *, uv_alloc_cb, uv_read_cb);
  static read_start_fn *real;
  if (fail_read_start)
    return UV_ENOTCONN;
  if (real == NULL)
    real = (read_start_fn *)dlsym(RTLD_NEXT, "uv_read_start");
  if (real == NULL)
    return UV_ENOSYS;
  return real(stream, alloc_cb, read_cb);
}

static uv_loop_t loop;
static uv_timer_t reap_timer, deadline_timer;
static struct lwsi_gpurun run;
static sigset_t child_mask;
static bool timed_out, got_id, got_result, got_gone;
static int nevents;
static bool kill_on_id;
static uint64_t id_at_ms, gone_at_ms;

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_event(struct lwsi_gpurun *r, enum lwsi_gpurun_ev ev)
{
  nevents++;
  switch (ev) {
  case LWSI_GPURUN_ID:
    got_id = true;
    id_at_ms = now_ms();
    if (kill_on_id)
      lwsi_gpurun_kill(r);
    break;
  case LWSI_GPURUN_RESULT:
    got_result = true;
    break;
  case LWSI_GPURUN_GONE:
    got_gone = true;
    gone_at_ms = now_ms();
    uv_stop(&loop);
    break;
  }
}

/* The supervisor's part: reap the check and report it. */
static void on_reap_tick(uv_timer_t *t)
{
  if (run.pid <= 0 || run.exited)
    return;
  int status;
  pid_t p = waitpid(run.pid, &status, WNOHANG);
  if (p == run.pid)
    lwsi_gpurun_reaped(&run, status);
}

static void on_deadline(uv_timer_t *t)
{
  timed_out = true;
  uv_stop(&loop);
}

static int start(char *const *argv)
{
  timed_out = got_id = got_result = got_gone = kill_on_id = false;
  nevents = 0;
  return lwsi_gpurun_start(&run, &loop, argv, environ, &child_mask, on_event);
}

/* Runs the loop until GONE or the deadline. */
static void run_until_gone(uint64_t ms)
{
  uv_timer_start(&deadline_timer, on_deadline, ms, 0);
  uv_timer_start(&reap_timer, on_reap_tick, 5, 5);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_timer_stop(&deadline_timer);
  uv_timer_stop(&reap_timer);
}

/* Reaps every child left (a failed start leaves one exiting), polling up
 * to a deadline; returns the last wait status, or -1. */
static int reap_all(uint64_t ms)
{
  uint64_t end = now_ms() + ms;
  int last = -1;
  for (;;) {
    int status;
    pid_t p = waitpid(-1, &status, WNOHANG);
    if (p > 0) {
      last = status;
      continue;
    }
    if (p < 0 && errno == ECHILD)
      return last;
    if (now_ms() >= end) {
      printf("# children still running after %llu ms\n", (unsigned long long)ms);
      return -1;
    }
    usleep(2000);
  }
}

/* Closes the run, kills and reaps what is left, and lets the closes
 * finish. */
static void finish(void)
{
  lwsi_gpurun_close(&run);
  reap_all(5000);
  for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; i++)
    ;
}

/* sh printing each argument as a line, then exiting with code. */
#define PRINTER(code) "/bin/sh", "-c", "for l in \"$@\"; do printf '%s\\n' \"$l\"; done; exit " code, "sh"

static const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                          "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                          "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                          "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static void test_result(void)
{
  static const char result[] = "{\"event\":\"result\",\"ok\":true,\"devices\":[{\"name\":\"H200\"},"
                               "{\"name\":\"H200\"}],\"busbw_gbps\":123.5,\"time_ms\":42}";
  char *argv[] = {PRINTER("0"), "not json", "{\"event\":\"phase\",\"phase\":\"cuda\"}", (char *)result,
                  "{\"event\":\"result\",\"ok\":false}", NULL};
  TAP_OK(start(argv) == 0 && run.pid > 0, "start: a real child");
  TAP_OK(getpgid(run.pid) == run.pid || run.exited, "the check leads a process group of its own");
  run_until_gone(10000);
  TAP_OK(!timed_out && got_gone, "stdout closed and the child reaped: GONE");
  TAP_OK(got_result && !got_id && nevents == 2, "one result (the first only) and nothing else");
  TAP_OK(run.ok && run.ndevices == 2 && run.busbw_gbps == 123.5 && run.time_ms == 42,
         "the result's fields");
  TAP_STR_EQ(run.model, "H200", "the first device's name");
  TAP_STR_EQ(run.result_json, result, "the result line as written");
  TAP_OK(run.exited && WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0, "exit status 0");
  finish();
}

static void test_failure_and_id(void)
{
  char id_line[400];
  snprintf(id_line, sizeof(id_line), "{\"event\":\"nccl_id\",\"id\":\"%s\"}", hex);
  char *argv[] = {PRINTER("1"), id_line, "{\"event\":\"result\",\"ok\":false,\"error\":\"boom\"}",
                  NULL};
  TAP_OK(start(argv) == 0, "start: a check that fails");
  run_until_gone(10000);
  TAP_OK(!timed_out && got_gone && got_id && got_result, "ID, RESULT and GONE");
  TAP_STR_EQ(run.id, hex, "the leader's NCCL id");
  TAP_OK(!run.ok && run.busbw_gbps == -1 && run.ndevices == 0, "failed, nothing measured");
  TAP_STR_EQ(run.error, "boom", "the check's reason");
  TAP_OK(WIFEXITED(run.status) && WEXITSTATUS(run.status) == 1, "exit status 1");
  finish();
}

static void test_give_id(void)
{
  /* The check's answer carries the line it read, as JSON. */
  char *argv[] = {"/bin/sh", "-c",
                  "read line; printf '{\"event\":\"result\",\"ok\":true,\"got\":%s}\\n' \"$line\"",
                  NULL};
  TAP_OK(start(argv) == 0, "start: a worker's check that waits for the id");
  TAP_OK(lwsi_gpurun_give_id(&run, hex) == 0 && run.in_fd < 0, "give_id writes and closes stdin");
  TAP_OK(lwsi_gpurun_give_id(&run, hex) == -EPIPE, "a second give_id: -EPIPE");
  run_until_gone(10000);
  char want[400];
  snprintf(want, sizeof(want), "{\"event\":\"result\",\"ok\":true,\"got\":{\"nccl_id\":\"%s\"}}", hex);
  TAP_OK(!timed_out && got_result && run.ok, "the check answered");
  TAP_STR_EQ(run.result_json, want, "it read {\"nccl_id\":\"<hex>\"} on its stdin");
  finish();
}

static void test_kill(void)
{
  char id_line[400];
  snprintf(id_line, sizeof(id_line), "{\"event\":\"nccl_id\",\"id\":\"%s\"}", hex);
  /* SIGTERM ends this one: its id line says it is ready. */
  char *obeys[] = {"/bin/sh", "-c", "printf '%s\\n' \"$1\"; exec sleep 30", "sh", id_line, NULL};
  TAP_OK(start(obeys) == 0, "start: a check that hangs");
  kill_on_id = true;
  run_until_gone(10000);
  TAP_OK(!timed_out && got_gone && WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGTERM,
         "kill: SIGTERM ends a check that obeys it");
  finish();

  /* This one ignores SIGTERM (so do its children: an ignored signal stays
   * ignored across exec), and the SIGKILL a second later ends it. */
  char *deaf[] = {"/bin/sh", "-c", "trap '' TERM; printf '%s\\n' \"$1\"; exec sleep 30", "sh",
                  id_line, NULL};
  TAP_OK(start(deaf) == 0, "start: a check that ignores SIGTERM");
  kill_on_id = true;
  run_until_gone(10000);
  TAP_OK(!timed_out && got_gone && WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL,
         "kill: SIGKILL follows");
  TAP_OK(gone_at_ms - id_at_ms >= 900, "a second after SIGTERM (%llu ms)",
         (unsigned long long)(gone_at_ms - id_at_ms));
  finish();
}

static void test_exec_fails(void)
{
  char *argv[] = {"/nonexistent/lwsinit-gpucheck", NULL};
  TAP_OK(start(argv) == -ENOENT && run.pid == 0, "a missing program: -ENOENT, nothing to track");
  int status = reap_all(5000);
  TAP_OK(status != -1 && ((WIFEXITED(status) && WEXITSTATUS(status) == 127) ||
                          (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)),
         "its child exited (127) and was reaped");
  lwsi_gpurun_close(&run);
  TAP_OK(run.in_fd < 0, "close after a failed start is allowed");
  finish();
}

/* Before the fix, a failing uv_read_start closed the pipe's descriptor in
 * lwsi_gpurun_start although the handle owned it since uv_pipe_open, and
 * lwsi_gpurun_close closed it again: by then the number could be another
 * descriptor's (the lowest free one is reused at once). */
static void test_read_start_fails(void)
{
  char *argv[] = {"/bin/sh", "-c", "exec sleep 30", NULL};
  fail_read_start = true;
  int rc = start(argv);
  fail_read_start = false;
  TAP_OK(rc == UV_ENOTCONN, "uv_read_start's error is returned (%d)", rc);
  uv_os_fd_t fd = -1;
  TAP_OK(uv_fileno((uv_handle_t *)&run.out, &fd) == 0 && fd >= 0, "the handle holds the pipe");
  TAP_OK(fcntl(fd, F_GETFD) >= 0, "the pipe stays open until the handle is closed");
  /* A descriptor of someone else's, opened now, must survive the close. */
  int spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
  TAP_OK(spare >= 0, "another descriptor opened");
  lwsi_gpurun_close(&run);
  for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; i++)
    ;
  TAP_OK(fcntl(spare, F_GETFD) >= 0, "closing the run closes only its own descriptors");
  TAP_OK(fd == spare || fcntl(fd, F_GETFD) < 0, "the pipe is closed once the handle is");
  if (spare >= 0)
    close(spare);
  int status = reap_all(5000);
  TAP_OK(status != -1 && WIFSIGNALED(status), "the check was killed and reaped");
  if (status != -1)
    lwsi_gpurun_reaped(&run, status);
  finish();
}

int main(void)
{
  /* As the agent does, the signals the check gets are the original mask;
   * SIGPIPE is blocked here so that a write to a check that has gone is an
   * EPIPE, not the end of the test. */
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigprocmask(SIG_BLOCK, &pipe_set, &child_mask);
  if (uv_loop_init(&loop) < 0 || uv_timer_init(&loop, &reap_timer) < 0 ||
      uv_timer_init(&loop, &deadline_timer) < 0) {
    printf("Bail out! cannot start a loop\n");
    return 1;
  }
  test_result();
  test_failure_and_id();
  test_give_id();
  test_kill();
  test_exec_fails();
  test_read_start_fails();
  uv_close((uv_handle_t *)&reap_timer, NULL);
  uv_close((uv_handle_t *)&deadline_timer, NULL);
  for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; i++)
    ;
  int rc = uv_loop_close(&loop);
  TAP_OK(rc == 0, "the loop closes cleanly (%s)", rc == 0 ? "ok" : uv_strerror(rc));
  return tap_done();
}
