/* Tests agent/launcher.c with real children: the exit code of a command
 * that runs, exec failures (ENOENT 127, EACCES 126, a bad stdio
 * descriptor), the process group, the signal mask and the descriptor limit
 * the child gets, stdio redirection, and the child's environment. No event
 * loop: the launcher has none. Every wait has a deadline. */
#include "lwsinit/launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

extern char **environ;

static sigset_t orig_mask;

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for pid up to 10 s, polling; kills it at the deadline. Returns the
 * wait status, or -1. */
static int wait_child(pid_t pid)
{
  uint64_t end = now_ms() + 10000;
  for (;;) {
    int status;
    pid_t p = waitpid(pid, &status, WNOHANG);
    if (p == pid)
      return status;
    if (p < 0) {
      printf("# waitpid %d: %s\n", (int)pid, strerror(errno));
      return -1;
    }
    if (now_ms() >= end) {
      printf("# child %d still running at the deadline\n", (int)pid);
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(2000);
  }
}

static bool exited_with(int status, int code)
{
  return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

/* Runs argv with stdout into a pipe; returns what it printed (up to len-1
 * bytes, NUL-terminated) and its wait status in *status. */
static int run_output(char *const *argv, char *const *envp, const sigset_t *mask, char *out,
                      size_t len, int *status)
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return -errno;
  pid_t pid;
  int rc = lwsi_launcher_spawn_io(argv, envp, mask, -1, p[1], &pid);
  close(p[1]);
  size_t got = 0;
  if (rc == 0) {
    /* The child's exit closes the pipe: read to EOF (bounded by the
     * child's own short life and wait_child's deadline after). */
    for (;;) {
      ssize_t n = read(p[0], out + got, len - 1 - got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0 || got + (size_t)n >= len - 1) {
        if (n > 0)
          got += (size_t)n;
        break;
      }
      got += (size_t)n;
    }
  }
  out[got] = '\0';
  close(p[0]);
  *status = pid > 0 ? wait_child(pid) : -1;
  return rc;
}

static void test_exit_codes(void)
{
  TAP_OK(lwsi_launcher_exec_code(ENOENT) == 127 && lwsi_launcher_exec_code(ENOTDIR) == 127,
         "not found: 127");
  TAP_OK(lwsi_launcher_exec_code(EACCES) == 126 && lwsi_launcher_exec_code(ENOEXEC) == 126,
         "found but cannot run: 126");

  char *ok[] = {"sh", "-c", "exit 7", NULL};
  pid_t pid = -1;
  TAP_OK(lwsi_launcher_spawn(ok, environ, &orig_mask, &pid) == 0 && pid > 0,
         "a command found in PATH starts");
  TAP_OK(exited_with(wait_child(pid), 7), "its exit code is its own (7)");

  char *missing[] = {"/nonexistent/program", NULL};
  int rc = lwsi_launcher_spawn(missing, environ, &orig_mask, &pid);
  TAP_OK(rc == -ENOENT && pid > 0, "a missing program: -ENOENT, and a child to reap (%d)", rc);
  TAP_OK(exited_with(wait_child(pid), 127), "which exits 127");

  char *unknown[] = {"lwsinit-test-no-such-command", NULL};
  rc = lwsi_launcher_spawn(unknown, environ, &orig_mask, &pid);
  TAP_OK(rc == -ENOENT && pid > 0 && exited_with(wait_child(pid), 127),
         "a name not in PATH: -ENOENT, 127");

  /* Not executable: even root cannot exec a file without any execute bit
   * (execve(2), EACCES). */
  char path[] = "/tmp/lwsi-test-launcher-XXXXXX";
  int fd = mkstemp(path);
  TAP_OK(fd >= 0 && write(fd, "#!/bin/sh\nexit 0\n", 17) == 17 && fchmod(fd, 0644) == 0,
         "a script without execute permission");
  if (fd >= 0)
    close(fd);
  char *noexec[] = {path, NULL};
  rc = lwsi_launcher_spawn(noexec, environ, &orig_mask, &pid);
  TAP_OK(rc == -EACCES && pid > 0, "not executable: -EACCES (%d)", rc);
  TAP_OK(exited_with(wait_child(pid), 126), "which exits 126");
  unlink(path);

  /* A stdin that cannot be installed fails before exec, like an exec. */
  char *cat[] = {"cat", NULL};
  rc = lwsi_launcher_spawn_io(cat, environ, &orig_mask, 1000, -1, &pid);
  TAP_OK(rc == -EBADF && pid > 0 && exited_with(wait_child(pid), 126),
         "a bad stdin descriptor: -EBADF, 126 (%d)", rc);
}

static void test_group_and_stdio(void)
{
  /* The child waits for its stdin to close, so that its group can be
   * looked at while it runs. */
  int in[2], out[2];
  TAP_OK(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0, "pipes");
  char *argv[] = {"sh", "-c", "read line; echo \"got $line\"", NULL};
  pid_t pid = -1;
  int rc = lwsi_launcher_spawn_io(argv, environ, &orig_mask, in[0], out[1], &pid);
  close(in[0]);
  close(out[1]);
  TAP_OK(rc == 0 && pid > 0, "started with stdin and stdout redirected");
  TAP_OK(getpgid(pid) == pid, "the child leads a process group of its own");
  TAP_OK(getpgid(0) != pid, "which is not ours");
  TAP_OK(write(in[1], "hello\n", 6) == 6, "a line to its stdin");
  close(in[1]);
  int status = wait_child(pid);
  char buf[64] = "";
  ssize_t n = read(out[0], buf, sizeof(buf) - 1);
  buf[n > 0 ? n : 0] = '\0';
  close(out[0]);
  TAP_STR_EQ(buf, "got hello\n", "its stdout carries the answer");
  TAP_OK(exited_with(status, 0), "exit 0");

  /* A signal to the group reaches every process in it. */
  char *tree[] = {"sh", "-c", "sleep 30 & sleep 30; exit 0", NULL};
  rc = lwsi_launcher_spawn(tree, environ, &orig_mask, &pid);
  TAP_OK(rc == 0, "a child with a child of its own");
  usleep(20000);
  TAP_OK(kill(-pid, SIGKILL) == 0, "SIGKILL to its group");
  status = wait_child(pid);
  TAP_OK(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
         "the child is killed through its group");
}

/* The child's signal mask (SigBlk in its /proc/self/status) is the one
 * given: SIGUSR2 only. */
static void test_mask(void)
{
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR2);
  /* Ours blocks SIGUSR1 and SIGTERM meanwhile: the child must get mask,
   * not what we block. */
  sigset_t ours, before;
  sigemptyset(&ours);
  sigaddset(&ours, SIGUSR1);
  sigaddset(&ours, SIGTERM);
  sigprocmask(SIG_BLOCK, &ours, &before);
  /* grep itself, not a shell: dash empties its own mask as it starts. */
  char *argv[] = {"grep", "^SigBlk", "/proc/self/status", NULL};
  char out[256];
  int status;
  int rc = run_output(argv, environ, &mask, out, sizeof(out), &status);
  sigprocmask(SIG_SETMASK, &before, NULL);
  out[strcspn(out, "\n")] = '\0'; /* one TAP line */
  unsigned long long blk = 0;
  const char *hexs = strchr(out, ':');
  if (hexs != NULL)
    blk = strtoull(hexs + 1, NULL, 16);
  TAP_OK(rc == 0 && exited_with(status, 0), "the child printed its mask");
  TAP_OK(blk == 1ull << (SIGUSR2 - 1), "its mask is the one given, not ours (%s)", out);
}

static void test_nofile(void)
{
  struct rlimit rl;
  TAP_OK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max <= 256) {
    TAP_SKIP("the hard descriptor limit (%llu) leaves no room to raise",
             (unsigned long long)rl.rlim_max);
    return;
  }
  /* Start lower than the hard limit, as a container runtime may. */
  struct rlimit low = {.rlim_cur = 256, .rlim_max = rl.rlim_max};
  TAP_OK(setrlimit(RLIMIT_NOFILE, &low) == 0, "soft limit lowered to 256");
  TAP_OK(lwsi_launcher_raise_nofile() == 0, "raise_nofile");
  struct rlimit now;
  TAP_OK(getrlimit(RLIMIT_NOFILE, &now) == 0 && now.rlim_cur == rl.rlim_max,
         "ours is raised to the hard limit");
  char *argv[] = {"sh", "-c", "ulimit -n", NULL};
  char out[64];
  int status;
  int rc = run_output(argv, environ, &orig_mask, out, sizeof(out), &status);
  TAP_OK(rc == 0 && exited_with(status, 0), "the child printed its limit");
  TAP_STR_EQ(out, "256\n", "the child gets the limit we started with");
}

static void test_env(void)
{
  char *envp[] = {"PATH=/usr/bin:/bin", "LWSINIT_RANK=9", "LWSINIT_TOKEN=secret", "KEEP=1",
                  "LWSINIT_SIZE=99", NULL};
  char **env = NULL;
  TAP_OK(lwsi_launcher_env(envp, "10.0.0.1", 2, 4, &env) == 0 && env != NULL, "env built");
  char *argv[] = {"sh", "-c", "echo \"$LWSINIT_LEADER_IP $LWSINIT_RANK $LWSINIT_SIZE $KEEP "
                              "${LWSINIT_TOKEN-unset}\"",
                  NULL};
  char out[128];
  int status;
  int rc = run_output(argv, env, &orig_mask, out, sizeof(out), &status);
  TAP_OK(rc == 0 && exited_with(status, 0), "the child ran with it");
  TAP_STR_EQ(out, "10.0.0.1 2 4 1 unset\n",
             "ours replace stale ones, the token is removed, the rest is kept");
  size_t n = 0;
  while (env[n] != NULL)
    n++;
  TAP_OK(n == 5, "PATH, KEEP and our three (%zu)", n);
  lwsi_launcher_env_free(env);
}

int main(void)
{
  sigprocmask(SIG_SETMASK, NULL, &orig_mask);
  test_exit_codes();
  test_group_and_stdio();
  test_mask();
  test_nofile();
  test_env();
  return tap_done();
}
