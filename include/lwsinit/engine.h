/* The engines that --preset names: one row per engine with everything the
 * agent knows about it (contract, "Launching" and "--upstream"): the flags
 * appended to COMMAND, the port {dist_port} stands for, the data-parallel
 * rule, the health URL, and the flags in COMMAND that contradict the
 * preset. Adding an engine is one row in agent/engine.c.
 *
 * Also the one scanner of COMMAND's argv for an engine's own flags, with
 * the engines' argparse semantics. A pure module: no I/O, no global state
 * but the constant table, and it knows nothing of the configuration. */
#ifndef LWSINIT_ENGINE_H
#define LWSINIT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The --preset values, in the order the table lists them. */
enum lwsi_preset {
  LWSI_PRESET_NONE,
  LWSI_PRESET_SGLANG,
  LWSI_PRESET_VLLM,
  LWSI_PRESET_VLLM_DP,
  LWSI_PRESET_VLLM_RAY,
  LWSI_PRESET_SGLANG_RAY,
  LWSI_PRESET_MPI,
  LWSI_PRESET_COUNT
};

/* A flag in COMMAND that contradicts a preset: a configuration error
 * (contract, "Launching"). */
struct lwsi_engine_refusal {
  const char *flag;  /* its spellings, '|' between them: "--nnodes|-n" */
  const char *value; /* refused with this value only; NULL: with any */
  bool with_workers; /* only in a group with workers (size > 1) */
  const char *why;   /* one clause, for the error line */
};

/* A launch in phases (include/lwsinit/phases.h): a service that every
 * member runs before the engine, a condition over the whole group, then
 * the engine on the leader alone. The leader runs leader_argv beside its
 * engine; a worker runs worker_argv instead of COMMAND, and that is all it
 * runs. Both argvs are NULL-terminated; their placeholders are expanded
 * from {leader_ip}, {dist_port} and {node_port}. A member's service is up
 * when a TCP connection to 127.0.0.1 at its port is accepted: {dist_port}
 * on the leader, node_port on a worker. */
struct lwsi_engine_service {
  const char *name;                /* for lines: "the Ray head", "Ray node" */
  const char *leader_what;         /* "the Ray head" */
  const char *worker_what;         /* "the Ray node" */
  const char *const *leader_argv;
  const char *const *worker_argv;
  uint16_t node_port;              /* {node_port}: the port a worker's service opens once up */
  /* The remedy when the service's program is not installed (exit 127). */
  const char *missing;
};

/* One engine. Every list is NULL-terminated and never NULL itself (an
 * empty list is { NULL }). Flags are written in the engine's own spelling;
 * their {name} placeholders are expanded like COMMAND's, plus {dp_size},
 * {dp_local} and {dp_start} for an engine with a data-parallel rule. */
struct lwsi_engine {
  enum lwsi_preset id;
  const char *name;                /* as --preset takes it */
  uint16_t dist_port;              /* what {dist_port} defaults to; 0: no default */
  const char *const *flags;        /* appended on every rank */
  const char *const *worker_flags; /* appended after them on ranks > 0 only */
  /* The data-parallel rule: when not NULL, the engine's flag for the
   * data-parallel ranks on each node. That number must be known (from
   * --dp-local or this flag in COMMAND); the appended pair that spells this
   * flag is left out when COMMAND has it already. */
  const char *dp_local_flag;
  const char *health_path;      /* the health URL's path; NULL: nothing to poll */
  uint16_t health_port;         /* the engine's default HTTP port */
  const char *health_port_flag; /* the engine's flag that moves that port */
  bool health_on_workers;       /* ranks > 0 serve the health URL too */
  /* The engine's parser takes '_' for '-' in a long flag's name
   * (vLLM's FlexibleArgumentParser: --data_parallel_size_local). */
  bool underscores;
  /* The flags in COMMAND that contradict the preset, ended by a row
   * whose flag is NULL. */
  const struct lwsi_engine_refusal *refused;
  /* NULL: COMMAND runs at once on every rank. Else the launch runs in
   * phases, and flags are appended on the leader only (workers run the
   * service instead of COMMAND). */
  const struct lwsi_engine_service *service;
};

/* The row of a preset, or NULL for a value outside the enum. */
const struct lwsi_engine *lwsi_engine_get(enum lwsi_preset id);

/* The row named name (as --preset takes it), or NULL. */
const struct lwsi_engine *lwsi_engine_find(const char *name);

/* Finds a flag in an engine's NULL-terminated argv as argparse reads it:
 * among argv[1..], before a "--" (after it everything is positional), as
 * "NAME VALUE" or "NAME=VALUE", the last one winning. spec holds the
 * flag's spellings with '|' between them ("--data-parallel-size-local|-dpl");
 * with e->underscores, a long flag written with '_' for '-' is the same
 * flag (e may be NULL: exact spellings only). "NAME VALUE" takes the next
 * argument whatever it is. Returns the index of that argument and sets
 * *value to its value, or to NULL when NAME ends argv without one;
 * -ENOENT when the flag is not there. argv may be NULL; value may be NULL. */
int lwsi_engine_argv_find(const struct lwsi_engine *e, char *const *argv, const char *spec,
                          const char **value);

/* Whether name is one of spec's spellings ('|' between them), exactly. */
bool lwsi_engine_spelling(const char *spec, const char *name);

/* The data-parallel ranks on each node: given when not 0, else the value of
 * the engine's dp_local_flag in argv (1 to 4096). 0 when the engine has no
 * data-parallel rule or the number is not known. */
unsigned lwsi_engine_dp_local(const struct lwsi_engine *e, unsigned given, char *const *argv);

/* The first argument of argv that one of the engine's refusals refuses in
 * a group of size members (as lwsi_engine_argv_find finds the flag, with
 * the refusal's value if it has one): returns its index and sets *row to
 * that refusal; -ENOENT when argv contradicts nothing. */
int lwsi_engine_refused(const struct lwsi_engine *e, unsigned size, char *const *argv,
                        const struct lwsi_engine_refusal **row);

/* The engine's health URL on this pod: http://127.0.0.1:PORT/PATH, PORT the
 * value of health_port_flag in the engine's expanded argv when it is a
 * port (1 to 65535), else health_port. leader: rank 0. Writes it to buf and
 * returns 0; -ENOENT when this rank polls nothing (no path, or a worker of
 * an engine whose workers serve no HTTP), -ENOSPC when buf is too short. */
int lwsi_engine_health_url(const struct lwsi_engine *e, bool leader, char *const *argv, char *buf,
                           size_t buflen);

#endif
