/* Preset mpi's remote execution (contract, "Launching"; docs/protocol.md,
 * "lwsinit rsh"): the leader's relay, which takes `lwsinit rsh` requests
 * from its status socket and carries them to the member named by HOST
 * over the group's authenticated connections, and each member's runner,
 * which runs them as `sh -c WORDS` in a process group of their own and
 * streams their stdout, stderr and exit status back. Also the hostfile and
 * the environment that point an MPI launcher (Open MPI's mpirun) at
 * `lwsinit rsh`, and the client's wire format.
 *
 * Never logs: what is worth a line is reported through the callback. */
#ifndef LWSINIT_RSH_H
#define LWSINIT_RSH_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "lwsinit/rdzv.h"

/* Remote output read from the commands' pipes and not yet acknowledged by
 * the leader (the leader acknowledges a chunk once its client's socket
 * took it), per agent: above it the runner stops reading every pipe until
 * acknowledgements bring it below half. It keeps a command that writes
 * faster than its client reads from growing anyone's memory, and keeps the
 * rendezvous connection's send queue (1 MiB, rdzv_conn.c) from filling. */
#define LWSI_RSH_INFLIGHT_MAX (256u * 1024)
/* Bytes of output per app message: base64 of 6000 bytes is 8000
 * characters, which leaves room in 8 KiB of app data for the JSON around. */
#define LWSI_RSH_CHUNK 6000
/* Requests served at once by the leader. */
#define LWSI_RSH_MAX_REQUESTS 256

/* The client's frames on the status socket: a type byte, a 4-byte
 * big-endian length, the payload. */
enum {
  LWSI_RSH_F_REQUEST = 'R', /* client: HOST, a NUL, COMMAND */
  LWSI_RSH_F_SIGNAL = 'S',  /* client: one byte, the signal number */
  LWSI_RSH_F_STDOUT = 'O',  /* agent: bytes of the remote stdout */
  LWSI_RSH_F_STDERR = 'E',  /* agent: bytes of the remote stderr */
  LWSI_RSH_F_EXIT = 'X',    /* agent: 4 bytes, the exit status (128+N for signal N) */
  LWSI_RSH_F_FAIL = 'F',    /* agent: one line, why there is no exit status */
};
#define LWSI_RSH_HDR 5
#define LWSI_RSH_REQUEST_MAX 65536

enum lwsi_rsh_ev {
  LWSI_RSH_EV_REFUSED,    /* leader: a request refused; text: why */
  LWSI_RSH_EV_STARTED,    /* a command started here; id, pid, text: the command */
  LWSI_RSH_EV_ENDED,      /* a command of ours ended; id, code */
  LWSI_RSH_EV_GROUP_EXIT, /* worker: the leader's COMMAND ended with code */
  LWSI_RSH_EV_ERROR,      /* something failed; text */
};

struct lwsi_rsh_event {
  enum lwsi_rsh_ev type;
  uint32_t id;
  pid_t pid;
  int code;
  const char *text; /* never NULL */
};

struct lwsi_rsh;
struct lwsi_rsh_proc;
struct lwsi_rsh_req;
typedef void (*lwsi_rsh_cb)(struct lwsi_rsh *s, const struct lwsi_rsh_event *ev);

struct lwsi_rsh {
  void *data; /* the caller's */
  /* Read-only for the caller. */
  bool enabled; /* preset mpi */
  bool leader;
  bool serving;    /* the group formed: requests are taken */
  size_t inflight; /* output read and not acknowledged */
  uint64_t served, refused;
  /* Private. */
  uv_loop_t *loop;
  struct lwsi_rdzv *rdzv;
  lwsi_rsh_cb cb;
  const sigset_t *mask;
  char *const *envp;
  bool paused;
  uint32_t next_id;
  uint32_t nreqs;
  struct lwsi_rsh_proc *procs;
  struct lwsi_rsh_req *reqs;
  uv_timer_t defer;
  bool defer_open;
};

/* Sets s up: enabled with preset mpi, leader on rank 0 (or standalone).
 * rdzv: the group's rendezvous (NULL when standalone); envp and mask: what
 * commands run with. Returns 0 or a negative errno. */
int lwsi_rsh_init(struct lwsi_rsh *s, uv_loop_t *loop, bool enabled, bool leader,
                  struct lwsi_rdzv *rdzv, char *const *envp, const sigset_t *mask,
                  lwsi_rsh_cb cb);

/* The group formed: from now on requests are served. */
void lwsi_rsh_serve(struct lwsi_rsh *s);

/* The status socket's callback (lwsi_status_sock_set_rsh): data is s. */
void lwsi_rsh_accept(void *data, int fd);

/* An app message; true when it was one of ours (and is handled). */
bool lwsi_rsh_message(struct lwsi_rsh *s, const struct lwsi_rdzv_event *ev);

/* The supervisor reaped pid; true when it ran one of our commands. No
 * allocation: the rest is done on the loop. */
bool lwsi_rsh_reaped(struct lwsi_rsh *s, pid_t pid, int status);

/* Leader: member rank was lost; its requests fail. */
void lwsi_rsh_member_lost(struct lwsi_rsh *s, uint32_t rank);

/* Leader: tells every worker that the group's COMMAND ended with code. */
int lwsi_rsh_group_exit(struct lwsi_rsh *s, int code);

/* Writes the hostfile to path (mode 0644, replaced atomically): one line
 * per member, "ADDRESS slots=G", the leader (self) first, then the
 * members' addresses as the leader sees them. Returns 0 or a negative
 * errno. */
int lwsi_rsh_hostfile(const struct lwsi_rsh *s, const char *path, const char *self,
                      unsigned slots);

/* The hostfile's path for a status socket at sock: "mpi-hostfile" in the
 * same folder. Returns 0 or -ENAMETOOLONG. */
int lwsi_rsh_hostfile_path(const char *sock, char *buf, size_t len);

/* env plus what points Open MPI's launcher at `exe rsh` (each only where
 * env does not set it already): OMPI_MCA_plm_rsh_agent and its PRRTE
 * spelling, and no tree spawn (every daemon is started from the leader,
 * where the relay is); and LWSINIT_STATUS_SOCKET=sock always. *out is a new array (free() it) whose added
 * strings are in *added (free() it too). Returns 0 or -ENOMEM. */
int lwsi_rsh_env(char *const *env, const char *exe, const char *sock, char ***out,
                 char **added);

/* Kills every command still running here (SIGKILL to its group) and
 * closes every handle; run the loop afterwards. */
void lwsi_rsh_close(struct lwsi_rsh *s);

/* Client (`lwsinit rsh`): runs words[0..n) on host through the agent at
 * socket, copying the remote output to fds 1 and 2 and forwarding
 * SIGTERM, SIGINT and SIGHUP (which the caller keeps blocked). Returns the
 * exit status; 255 with a line in why when there is none. */
int lwsi_rsh_client(const char *socket, const char *host, char *const *words, int n, char *why,
                    size_t whylen);

#endif
