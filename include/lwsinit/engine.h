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
  LWSI_PRESET_COUNT
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
  const char *const *refused;   /* flags in COMMAND that contradict the preset */
};

/* The row of a preset, or NULL for a value outside the enum. */
const struct lwsi_engine *lwsi_engine_get(enum lwsi_preset id);

/* The row named name (as --preset takes it), or NULL. */
const struct lwsi_engine *lwsi_engine_find(const char *name);

/* Finds the flag name in an engine's NULL-terminated argv as argparse
 * reads it: among argv[1..], before a "--" (after it everything is
 * positional), as "NAME VALUE" or "NAME=VALUE", the last one winning.
 * "NAME VALUE" takes the next argument whatever it is. Returns the index of
 * that argument and sets *value to its value, or to NULL when NAME ends
 * argv without one; -ENOENT when name is not there. argv may be NULL;
 * value may be NULL. */
int lwsi_engine_argv_find(char *const *argv, const char *name, const char **value);

/* The data-parallel ranks on each node: given when not 0, else the value of
 * the engine's dp_local_flag in argv (1 to 4096). 0 when the engine has no
 * data-parallel rule or the number is not known. */
unsigned lwsi_engine_dp_local(const struct lwsi_engine *e, unsigned given, char *const *argv);

/* The first of the engine's refused flags that argv holds (as
 * lwsi_engine_argv_find finds it), or NULL. */
const char *lwsi_engine_refused(const struct lwsi_engine *e, char *const *argv);

/* The engine's health URL on this pod: http://127.0.0.1:PORT/PATH, PORT the
 * value of health_port_flag in the engine's expanded argv when it is a
 * port (1 to 65535), else health_port. leader: rank 0. Writes it to buf and
 * returns 0; -ENOENT when this rank polls nothing (no path, or a worker of
 * an engine whose workers serve no HTTP), -ENOSPC when buf is too short. */
int lwsi_engine_health_url(const struct lwsi_engine *e, bool leader, char *const *argv, char *buf,
                           size_t buflen);

#endif
