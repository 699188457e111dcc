/* The node check (contract, "Node check and network environment"): what
 * the node under the engine gives it, read from the kernel's own files
 * before the agent joins its group, so that a node that would break NCCL
 * late and cryptically is named at once: /dev/shm's size, the GPU device
 * nodes, the RDMA devices given to the container and their ports, and the
 * locked-memory limit RDMA needs. No logging here: the agent words it.
 *
 * Every path is read under root ("" on a real node); the unit tests give a
 * prepared tree, the acceptance tests a private mount namespace. */
#ifndef LWSINIT_NODECHECK_H
#define LWSINIT_NODECHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LWSI_NODECHECK_MAX 6
#define LWSI_NODECHECK_PORTS 32

enum lwsi_nodecheck_state { LWSI_NODECHECK_OK, LWSI_NODECHECK_WARN, LWSI_NODECHECK_FAIL };

/* "ok", "warn", "fail". */
const char *lwsi_nodecheck_state_name(enum lwsi_nodecheck_state s);

struct lwsi_nodecheck_item {
  const char *name; /* "shm", "gpu-devices", "rdma-ports", "memlock" */
  enum lwsi_nodecheck_state state;
  char found[256];
  char fix[512]; /* "" when ok */
};

/* One port of an RDMA device as sysfs shows it
 * (/sys/class/infiniband/DEV/ports/N/). */
struct lwsi_nodecheck_port {
  char dev[64];
  unsigned port;
  int state;           /* the number before the colon of "4: ACTIVE"; -1 unreadable */
  bool ethernet;       /* link_layer "Ethernet": RoCE */
  char rate[48];       /* "400 Gb/sec (4X NDR)", "" unreadable */
};

/* What the node has for RDMA: the uverbs devices given to the container
 * (/dev/infiniband/uverbs*) and the ports sysfs lists. sysfs shows the
 * host's devices whether or not any was given, so only uverbs says that
 * the engine can use them. */
struct lwsi_nodecheck_rdma {
  unsigned uverbs;
  struct lwsi_nodecheck_port ports[LWSI_NODECHECK_PORTS];
  size_t nports;
  unsigned active;
};

struct lwsi_nodecheck {
  struct lwsi_nodecheck_item items[LWSI_NODECHECK_MAX];
  size_t n;
  unsigned warnings, failures;
};

/* Reads a small sysfs file (one read) into buf of len bytes, without its
 * trailing newline and spaces. Returns the length or a negative errno. */
int lwsi_nodecheck_read_file(const char *path, char *buf, size_t len);

/* The port state number of sysfs's "4: ACTIVE" text (ib_port_state: 4 is
 * IB_PORT_ACTIVE), or -EINVAL. */
#define LWSI_NODECHECK_PORT_ACTIVE 4
int lwsi_nodecheck_port_state(const char *text);

/* The /dev/shm size NCCL needs for gpus GPUs on one node, in bytes (see
 * nodecheck.c for the figure and its source). */
uint64_t lwsi_nodecheck_shm_need(unsigned gpus);

/* Counts the GPU device nodes /dev/nvidiaN under root. */
unsigned lwsi_nodecheck_gpu_nodes(const char *root);

/* Reads the RDMA devices under root. Returns 0 or a negative errno (none
 * is an error: a node without RDMA has empty lists). */
int lwsi_nodecheck_rdma_scan(const char *root, struct lwsi_nodecheck_rdma *out);

/* Runs every check under root for gpus GPUs (0: as many as have device
 * nodes). With strict, what certainly breaks the engine is a failure;
 * otherwise every finding is a warning. */
void lwsi_nodecheck_run(struct lwsi_nodecheck *out, const char *root, unsigned gpus,
                        const struct lwsi_nodecheck_rdma *rdma, bool strict);

/* The judgement of one check on given facts, for the unit tests and run:
 * /dev/shm of shm_bytes for gpus GPUs (shm_err: statvfs's error, 0 when
 * read); the memlock limit (RLIM_INFINITY: unlimited) with ipc_lock held
 * or not. */
void lwsi_nodecheck_judge_shm(struct lwsi_nodecheck_item *it, int shm_err, uint64_t shm_bytes,
                              unsigned gpus);
void lwsi_nodecheck_judge_memlock(struct lwsi_nodecheck_item *it, const struct
                                  lwsi_nodecheck_rdma *rdma, uint64_t limit, bool unlimited,
                                  bool ipc_lock);
void lwsi_nodecheck_judge_gpus(struct lwsi_nodecheck_item *it, unsigned nodes, unsigned gpus,
                               bool strict);
void lwsi_nodecheck_judge_rdma(struct lwsi_nodecheck_item *it,
                               const struct lwsi_nodecheck_rdma *rdma, bool strict);

/* The first failure's (else warning's) item, NULL when all passed. */
const struct lwsi_nodecheck_item *lwsi_nodecheck_worst(const struct lwsi_nodecheck *nc);

/* One line naming every failed check: "gpu-devices: found ...; fix: ...". */
void lwsi_nodecheck_failures(const struct lwsi_nodecheck *nc, char *buf, size_t len);

#endif
