#include "lwsinit/launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <sys/resource.h>
#include <unistd.h>

int lwsi_launcher_exec_code(int err)
{
  /* As a shell does: a command that is not there is 127, one that is there
   * but cannot run is 126 (POSIX, "Command Search and Execution"). */
  return (err == ENOENT || err == ENOTDIR) ? 127 : 126;
}

static ssize_t read_full(int fd, void *buf, size_t len)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, (char *)buf + got, len - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/* The descriptor limit the agent was started with, given back to the
 * child when lwsi_launcher_raise_nofile raised ours. */
static struct rlimit child_nofile;
static bool child_nofile_set;

int lwsi_launcher_raise_nofile(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return -errno;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= rl.rlim_max)
    return 0;
  struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
  if (setrlimit(RLIMIT_NOFILE, &raised) < 0)
    return -errno;
  child_nofile = rl;
  child_nofile_set = true;
  return 0;
}

/* Runs in the child between vfork and exec, on our memory and stack: only
 * async-signal-safe calls, no allocation, never a return. */
static __attribute__((noreturn)) void child_exec(char *const *argv, char *const *envp,
                                                 const sigset_t *mask, int errfd, int in_fd,
                                                 int out_fd, int err_fd)
{
  setpgid(0, 0);
  /* dup2(2) leaves the new descriptor without close-on-exec. */
  if ((in_fd >= 0 && dup2(in_fd, STDIN_FILENO) < 0) ||
      (out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0) ||
      (err_fd >= 0 && dup2(err_fd, STDERR_FILENO) < 0)) {
    int e = errno;
    ssize_t n;
    do
      n = write(errfd, &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    _exit(126);
  }
  /* With a terminal on stdin the child's group becomes the foreground one,
   * so that it can read the terminal (tini does the same). SIGTTOU is still
   * blocked here, so tcsetpgrp(3) cannot stop us. */
  if (isatty(STDIN_FILENO))
    tcsetpgrp(STDIN_FILENO, getpgrp());
  /* The engine gets the limit we were given, not the one we raised: a
   * program may size tables by it, or still use select(2). */
  if (child_nofile_set)
    setrlimit(RLIMIT_NOFILE, &child_nofile);
  sigprocmask(SIG_SETMASK, mask, NULL);
  execvpe(argv[0], argv, envp);
  int e = errno;
  ssize_t n;
  do
    n = write(errfd, &e, sizeof(e));
  while (n < 0 && errno == EINTR);
  _exit(lwsi_launcher_exec_code(e));
}

int lwsi_launcher_spawn(char *const *argv, char *const *envp, const sigset_t *child_mask,
                        pid_t *pid)
{
  return lwsi_launcher_spawn_io(argv, envp, child_mask, -1, -1, pid);
}

/* vfork(2) and not fork(2): the child borrows our memory until it execs,
 * so no page table is copied, no page of ours turns copy-on-write (every
 * later write of ours would fault once), and the exec has no copied
 * address space to tear down. On a node that starts a group of many
 * members, or in a VM where page-table work is slow, fork was most of the
 * cost of a launch (docs/benchmarks.md). What the child may do
 * before exec is what child_exec does: system calls on its own arguments,
 * nothing that allocates or returns from this frame. No signal handler can
 * run in it: the agent catches none (every signal is blocked and read from
 * a signalfd, supervisor.c) and the child unblocks only just before exec.
 * The parent is suspended until the child execs or exits (vfork(2)); the
 * errno pipe still tells which, and keeps this correct where vfork is a
 * plain fork (valgrind runs it so). Kept apart from the caller so that
 * nothing the compiler holds in registers lives across the second return
 * (-Wclobbered). */
static __attribute__((noinline)) pid_t start_child(char *const *argv, char *const *envp,
                                                   const sigset_t *mask, int errfd, int in_fd,
                                                   int out_fd, int err_fd)
{
  pid_t child = vfork();
  if (child == 0)
    child_exec(argv, envp, mask, errfd, in_fd, out_fd, err_fd);
  return child;
}

int lwsi_launcher_spawn_io(char *const *argv, char *const *envp, const sigset_t *child_mask,
                           int in_fd, int out_fd, pid_t *pid)
{
  return lwsi_launcher_spawn_io3(argv, envp, child_mask, in_fd, out_fd, -1, pid);
}

int lwsi_launcher_spawn_io3(char *const *argv, char *const *envp, const sigset_t *child_mask,
                            int in_fd, int out_fd, int err_fd, pid_t *pid)
{
  *pid = 0;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return -errno;
  pid_t child = start_child(argv, envp, child_mask, p[1], in_fd, out_fd, err_fd);
  if (child < 0) {
    int e = errno;
    close(p[0]);
    close(p[1]);
    return -e;
  }
  close(p[1]);
  /* Set the group from both sides so that neither order of events leaves a
   * window where a signal to -pid misses the child (setpgid(2)). A failure
   * here changes nothing: EACCES means the child has already exec'd, after
   * its own setpgid; ESRCH that it has already exited; either way the
   * child's own call decided. */
  (void)setpgid(child, child);
  *pid = child;
  /* The pipe closes on a successful exec (O_CLOEXEC) or carries errno. By
   * now the child has done one or the other (vfork), so this read does not
   * wait; where vfork is a fork, it waits only for the exec itself. */
  int e = 0;
  ssize_t n = read_full(p[0], &e, sizeof(e));
  close(p[0]);
  if (n == (ssize_t)sizeof(e))
    return -e;
  return 0;
}

/* The variables the agent sets for its child (replacing stale ones), and
 * LWSINIT_TOKEN, which it removes: the group's secret is the agent's, and
 * an engine's environment is readable by anything that can read its
 * /proc/PID/environ or dumps it in a crash report (docs/security.md). */
static bool is_ours(const char *kv)
{
  static const char *const names[] = {"LWSINIT_LEADER_IP=", "LWSINIT_RANK=", "LWSINIT_SIZE=",
                                      "LWSINIT_TOKEN=", "LWSINIT_EPOCH="};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strncmp(kv, names[i], strlen(names[i])) == 0)
      return true;
  return false;
}

void lwsi_launcher_env_free(char **env)
{
  if (env == NULL)
    return;
  /* Only the last three strings are ours; the rest belong to the caller. */
  size_t n = 0;
  while (env[n] != NULL)
    n++;
  for (size_t i = n >= 3 ? n - 3 : 0; i < n; i++)
    free(env[i]);
  free(env);
}

int lwsi_launcher_env(char *const *envp, const char *leader_ip, unsigned rank, unsigned size,
                      char ***out)
{
  size_t n = 0;
  while (envp != NULL && envp[n] != NULL)
    n++;
  char **env = calloc(n + 4, sizeof(*env));
  if (env == NULL)
    return -ENOMEM;
  size_t o = 0;
  for (size_t i = 0; i < n; i++)
    if (!is_ours(envp[i]))
      env[o++] = envp[i];
  if (asprintf(&env[o], "LWSINIT_LEADER_IP=%s", leader_ip) < 0)
    env[o] = NULL;
  if (env[o] == NULL || asprintf(&env[o + 1], "LWSINIT_RANK=%u", rank) < 0)
    env[o + 1] = NULL;
  if (env[o + 1] == NULL || asprintf(&env[o + 2], "LWSINIT_SIZE=%u", size) < 0) {
    free(env[o]);
    free(env[o + 1]);
    free(env);
    return -ENOMEM;
  }
  env[o + 3] = NULL;
  *out = env;
  return 0;
}

int lwsi_launcher_env_add(char *const *env, char *kv, char ***out)
{
  size_t n = 0;
  while (env != NULL && env[n] != NULL)
    n++;
  char **full = calloc(n + 2, sizeof(*full));
  if (full == NULL)
    return -ENOMEM;
  size_t name = strcspn(kv, "=") + 1;
  size_t o = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(env[i], kv, name) != 0)
      full[o++] = env[i];
  full[o] = kv;
  *out = full;
  return 0;
}
