/* Running the GPU check (docs/gpucheck.md) as a child of the agent: its
 * stdout read on the loop as JSON lines, its stdin for the NCCL id, and a
 * kill that always ends it. The agent reaps it (the supervisor reaps every
 * child) and reports the exit with lwsi_gpurun_reaped. */
#ifndef LWSINIT_GPURUN_H
#define LWSINIT_GPURUN_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

#define LWSI_GPURUN_LINE_MAX 65536

enum lwsi_gpurun_ev {
  LWSI_GPURUN_ID,     /* the leader's check made the NCCL id: r->id */
  LWSI_GPURUN_RESULT, /* the result line: r->ok, r->error, r->result_json */
  LWSI_GPURUN_GONE,   /* stdout closed and the process reaped */
};

struct lwsi_gpurun;
typedef void (*lwsi_gpurun_cb)(struct lwsi_gpurun *r, enum lwsi_gpurun_ev ev);

struct lwsi_gpurun {
  void *data;
  /* Read-only for the caller. */
  pid_t pid; /* also its process group */
  bool have_result;
  bool ok;
  bool exited;
  int status;              /* wait status, once exited */
  char id[260];            /* LWSI_GPURUN_ID */
  char error[512];         /* why it failed */
  char model[128];         /* the first GPU's name */
  unsigned ndevices;
  double busbw_gbps;       /* -1: not measured */
  double time_ms;
  char *result_json;       /* the compact result line (malloc'd) */

  /* Private. */
  uv_loop_t *loop;
  lwsi_gpurun_cb cb;
  uv_pipe_t out;
  uv_timer_t kill_timer;
  uv_timer_t defer;
  int in_fd;
  bool out_open, out_eof, timer_open, gone_sent;
  size_t len;
  char buf[LWSI_GPURUN_LINE_MAX];
};

/* Starts argv (argv[0]: the program's path) with envp and the agent's
 * original signal mask. Returns 0 or a negative errno; on failure nothing
 * is left running and lwsi_gpurun_close is still allowed. */
int lwsi_gpurun_start(struct lwsi_gpurun *r, uv_loop_t *loop, char *const *argv,
                      char *const *envp, const sigset_t *mask, lwsi_gpurun_cb cb);

/* Gives a worker's check the leader's NCCL id (one line on its stdin, then
 * EOF). Returns 0 or a negative errno. */
int lwsi_gpurun_give_id(struct lwsi_gpurun *r, const char *hex);

/* Ends the check: SIGTERM to its group now, SIGKILL a second later. */
void lwsi_gpurun_kill(struct lwsi_gpurun *r);

/* The agent reaped pid r->pid with this wait status. */
void lwsi_gpurun_reaped(struct lwsi_gpurun *r, int status);

/* Closes the handles (run the loop afterwards); kills a check still
 * running. */
void lwsi_gpurun_close(struct lwsi_gpurun *r);

#endif
