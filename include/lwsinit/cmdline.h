/* The engine's command line: COMMAND with its placeholders replaced and the
 * preset's multi-node flags appended (contract, "Launching"), and the
 * digest that members compare before launch, so that a member started
 * from another template cannot join a group whose engines would then
 * disagree about their ranks or ports. */
#ifndef LWSINIT_CMDLINE_H
#define LWSINIT_CMDLINE_H

#include <stddef.h>
#include <stdint.h>

struct lwsi_config;

struct lwsi_cmdline_values {
  const char *leader;    /* as given */
  const char *leader_ip; /* resolved */
  unsigned size;
  unsigned rank;
};

/* Builds the argv to exec (malloc'd; free with lwsi_expand_free): COMMAND
 * expanded, then the preset's flags (include/lwsinit/engine.h) on every
 * rank, then its workers' flags on ranks > 0. Returns 0, or a negative
 * errno with the offending placeholder name in bad. */
int lwsi_cmdline_build(const struct lwsi_config *cfg, const struct lwsi_cmdline_values *v,
                       char ***out, char *bad, size_t badlen);

/* SHA-256 over what must be the same on every rank: the preset, the engine
 * port, and COMMAND as written, with placeholders unexpanded and arguments
 * that could spell a rank (a number below the group size, alone or after
 * '=', as `$(LWS_WORKER_INDEX)` expands to) left out on every rank alike.
 * Returns 0 or a negative errno. */
int lwsi_cmdline_digest(const struct lwsi_config *cfg, uint8_t out[32]);

#endif
