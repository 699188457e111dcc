/* Starting the child: vfork and exec directly (no shell) in a process group
 * of its own, with the caller's signal mask restored. */
#ifndef LWSINIT_LAUNCHER_H
#define LWSINIT_LAUNCHER_H

#include <signal.h>
#include <sys/types.h>

/* Starts argv[0] (searched in PATH) with envp. On success stores the pid
 * (also the process group id) and returns 0. When exec fails, the child
 * has already exited (127 or 126; the caller reaps it), *pid is set, and
 * the exec errno is returned negated. Other failures return a negative
 * errno with *pid == 0. */
int lwsi_launcher_spawn(char *const *argv, char *const *envp, const sigset_t *child_mask,
                        pid_t *pid);

/* As lwsi_launcher_spawn, with in_fd and out_fd (when >= 0) as the child's
 * stdin and stdout. */
int lwsi_launcher_spawn_io(char *const *argv, char *const *envp, const sigset_t *child_mask,
                           int in_fd, int out_fd, pid_t *pid);

/* As lwsi_launcher_spawn_io, with err_fd (when >= 0) as the child's
 * stderr too. */
int lwsi_launcher_spawn_io3(char *const *argv, char *const *envp, const sigset_t *child_mask,
                            int in_fd, int out_fd, int err_fd, pid_t *pid);

/* The exit code the contract gives a failed exec: 127 not found, else 126. */
int lwsi_launcher_exec_code(int err);

/* Raises our soft RLIMIT_NOFILE to the hard limit (a leader holds a
 * connection per member, and probes and idle clients besides), and makes
 * every later spawn give the child the limit we started with. Returns 0 or
 * a negative errno; the limit is unchanged on error. */
int lwsi_launcher_raise_nofile(void);

/* The environment for the child: envp without any earlier LWSINIT_LEADER_IP,
 * LWSINIT_RANK, LWSINIT_SIZE, plus those three. Free with
 * lwsi_launcher_env_free. Returns 0 or -ENOMEM. */
int lwsi_launcher_env(char *const *envp, const char *leader_ip, unsigned rank, unsigned size,
                      char ***out);
void lwsi_launcher_env_free(char **env);

/* env with kv ("NAME=value") in place of any NAME= it held: a new array of
 * the same strings (free() the array only; kv stays the caller's).
 * Returns 0 or -ENOMEM. */
int lwsi_launcher_env_add(char *const *env, char *kv, char ***out);

#endif
