/* The engine's command line: COMMAND with its placeholders replaced and the
 * preset's multi-node flags appended (contract, "Launching"), and the
 * launch command that the leader compares with each member's before
 * launch, so that members whose engines would disagree are named. */
#ifndef LWSINIT_CMDLINE_H
#define LWSINIT_CMDLINE_H

#include <stddef.h>
#include <stdint.h>

struct lwsi_config;
struct lwsi_launchck_cmd;

struct lwsi_cmdline_values {
  const char *leader;    /* as given */
  const char *leader_ip; /* resolved */
  unsigned size;
  unsigned rank;
  const char *hostfile; /* {hostfile}: preset mpi's, on the leader; else NULL */
  unsigned epoch; /* {epoch}: 0, then +1 at each group restart */
};

/* Builds the argv to exec (malloc'd; free with lwsi_expand_free): COMMAND
 * expanded, then the preset's flags (include/lwsinit/engine.h) on every
 * rank, then its workers' flags on ranks > 0. Returns 0, or a negative
 * errno with the offending placeholder name in bad. */
int lwsi_cmdline_build(const struct lwsi_config *cfg, const struct lwsi_cmdline_values *v,
                       char ***out, char *bad, size_t badlen);

/* The launch command this member sends the leader (contract, "Launch
 * check"): COMMAND as written, placeholders unexpanded, then the flags the
 * preset appends on every rank; in the form it travels
 * (lwsi_launchck_build). With preset mpi the command is empty on every
 * member: only the leader runs COMMAND, and the workers' may be empty or
 * anything. Returns 0 or a negative errno (-ELIBACC: no
 * libcrypto for the digest). Free with lwsi_launchck_free. */
int lwsi_cmdline_launch_check(const struct lwsi_config *cfg, struct lwsi_launchck_cmd *out);

#endif
