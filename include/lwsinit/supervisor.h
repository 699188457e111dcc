/* The container init's work (contract, "The init"): signals, reaping, the
 * child's process group, and the stop sequence drain -> forward -> grace ->
 * SIGKILL. Signals arrive through a signalfd(2) watched by the loop: all
 * catchable asynchronous signals stay blocked, so none is lost between
 * start-up and the loop, and none is ignored by the kernel because we are
 * PID 1 (a blocked signal is never discarded, kernel/signal.c sig_ignored). */
#ifndef LWSINIT_SUPERVISOR_H
#define LWSINIT_SUPERVISOR_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

enum lwsi_sup_event {
  LWSI_SUP_STOP_SIGNAL,  /* SIGTERM or SIGINT arrived; arg: the signal */
  LWSI_SUP_FORWARDED,    /* a signal went to the child's group; arg: the signal */
  LWSI_SUP_DROPPED,      /* a signal was not forwarded (no child yet); arg: the signal */
  LWSI_SUP_KILLED,       /* the grace period ran out and SIGKILL was sent */
  LWSI_SUP_CHILD_EXITED, /* the child exited; arg: its wait status */
  LWSI_SUP_REAPED,       /* another process was reaped (sup->reaped_pid); arg: wait status.
                          * Called from the reap path: do nothing heavy. */
};

struct lwsi_supervisor;
typedef void (*lwsi_sup_cb)(struct lwsi_supervisor *sup, enum lwsi_sup_event ev, int arg);

struct lwsi_supervisor {
  uv_loop_t *loop;
  uv_poll_t sig_poll;
  uv_timer_t drain_timer;
  uv_timer_t grace_timer;
  uv_timer_t hold_timer;
  int sfd;
  pid_t self;
  sigset_t child_mask; /* the mask the agent was started with */
  pid_t child;         /* also the child's process group; 0 before launch */
  bool child_running;
  int child_status;
  bool stopping;
  bool draining; /* the stop has begun; its signal is not forwarded yet */
  bool held;     /* the forward waits for lwsi_supervisor_release too */
  uint64_t hold_max_ms;
  int stop_sig;
  uint64_t drain_ms;
  uint64_t grace_ms;
  uint64_t reaped_others; /* orphans reaped; counted, never allocated */
  pid_t reaped_pid;       /* the last of them */
  lwsi_sup_cb cb;
  void *data;
};

/* Blocks every catchable asynchronous signal and saves the previous mask.
 * Call first in main, before any other thread or handle exists. */
int lwsi_supervisor_block_signals(sigset_t *orig);

/* Opens the signalfd, starts watching it and, when not PID 1, makes this
 * process the child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER). */
int lwsi_supervisor_init(struct lwsi_supervisor *sup, uv_loop_t *loop, const sigset_t *orig,
                         uint64_t drain_ms, uint64_t grace_ms, lwsi_sup_cb cb);

/* Starts the child; see lwsi_launcher_spawn for the return values. */
int lwsi_supervisor_spawn(struct lwsi_supervisor *sup, char *const *argv, char *const *envp);

/* Begins (or hurries) the stop: drain (when asked: a SIGTERM from
 * Kubernetes drains, a lost member does not), forward sig, grace, SIGKILL. */
void lwsi_supervisor_stop(struct lwsi_supervisor *sup, int sig, bool drain);

/* The ordered stop of a group (contract, "The init"): call before
 * lwsi_supervisor_stop. The stop then forwards its signal only once both
 * the drain has passed and lwsi_supervisor_release was called, or at the
 * latest max_ms after the stop began, whichever comes first. A second stop
 * signal still cuts the wait short. */
void lwsi_supervisor_hold(struct lwsi_supervisor *sup, uint64_t max_ms);

/* Lets a held stop forward once its drain has passed (at once if it has).
 * Harmless when nothing is held. */
void lwsi_supervisor_release(struct lwsi_supervisor *sup);

/* The exit code for a wait status: the code, or 128+N for signal N. */
int lwsi_supervisor_exit_code(int status);

/* After the child has exited, makes the supervisor ready to start another
 * (a group restart in place): no child, no stop under way. A no-op while
 * the child runs. */
void lwsi_supervisor_rearm(struct lwsi_supervisor *sup);

/* Closes the handles; run the loop afterwards to finish closing. */
void lwsi_supervisor_close(struct lwsi_supervisor *sup);

#endif
