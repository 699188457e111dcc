/* The launch check (contract, "Launch check"): each member's launch
 * command in the form it travels in the join (escaped, bounded, the rest
 * summed up by a digest), and the leader's argument-by-argument comparison
 * of a member's command with its own. Pure: no I/O, no loop, no logging;
 * libcrypto only for the digest of what is past the bound. */
#ifndef LWSINIT_LAUNCHCK_H
#define LWSINIT_LAUNCHCK_H

#include <stddef.h>
#include <stdint.h>

#include "lwsinit/wire.h"

/* How the leader treats a difference (--launch-check). */
enum lwsi_launchck_mode {
  LWSI_LAUNCHCK_WARN,   /* report it; the group forms */
  LWSI_LAUNCHCK_STRICT, /* refuse the group */
  LWSI_LAUNCHCK_OFF,    /* do not compare */
};

/* The differences listed for one member; the rest are counted. */
#define LWSI_LAUNCHCK_LISTED 3
/* A value longer than this is shown cut, with "...". */
#define LWSI_LAUNCHCK_SHOWN 48

/* A launch command as it travels: the first n of its total arguments, each
 * escaped (lwsi_launchck_escape), within LWSI_WIRE_CMD_MAX_ARGS arguments
 * and LWSI_WIRE_CMD_MAX_TEXT bytes of text; digest covers the others. */
struct lwsi_launchck_cmd {
  uint32_t total;
  uint32_t n;
  char **args; /* n entries, in one allocation with their text */
  uint8_t digest[LWSI_WIRE_DIGEST_LEN];
};

/* Writes s as wire text into out (size len, NUL included): a backslash
 * becomes "\\", a control character or a byte that is not valid UTF-8
 * "\xNN", everything else is kept. One-to-one, so that comparing escaped
 * arguments is comparing the arguments. Returns the escaped length (what
 * it would be, as snprintf does, when it does not fit). */
size_t lwsi_launchck_escape(const char *s, char *out, size_t len);

/* The digest of arguments [from, argc) of argv, escaped and each
 * length-prefixed, and of argc. Returns 0 or a negative errno (-ELIBACC:
 * no libcrypto). */
int lwsi_launchck_digest(const char *const *argv, uint32_t argc, uint32_t from,
                         uint8_t out[LWSI_WIRE_DIGEST_LEN]);

/* Builds the travelling form of argv (argc arguments): as many leading
 * arguments as fit the bounds, and the digest of the rest. Returns 0,
 * -E2BIG (more than LWSI_WIRE_CMD_MAX_TOTAL arguments: beyond ARG_MAX),
 * -ENOMEM or the digest's error. Free with lwsi_launchck_free. */
int lwsi_launchck_build(const char *const *argv, uint32_t argc, struct lwsi_launchck_cmd *out);

/* A deep copy of what a join carried (args already escaped). Returns 0 or
 * -ENOMEM. */
int lwsi_launchck_copy(struct lwsi_launchck_cmd *dst, uint32_t total, uint32_t n,
                       char *const *args, const uint8_t digest[LWSI_WIRE_DIGEST_LEN]);

void lwsi_launchck_free(struct lwsi_launchck_cmd *c);

/* Compares a member's command (its rank mine_rank) with the leader's
 * (leader_rank, normally 0), argument by argument. Equal: the same text,
 * or each side's own rank in decimal (the whole argument, or after the
 * same "name=" on both sides), as `$(LWS_WORKER_INDEX)` expands to.
 * Returns the number of differences; detail gets the first
 * LWSI_LAUNCHCK_LISTED of them ("argument 7 is '8', the leader's is
 * '16'"), then "and N more". Past the bound, a difference shows as "the
 * arguments after argument K differ". */
uint32_t lwsi_launchck_compare(const struct lwsi_launchck_cmd *leader, uint32_t leader_rank,
                               const struct lwsi_launchck_cmd *mine, uint32_t mine_rank,
                               char *detail, size_t len);

/* "warn", "strict", "off". */
const char *lwsi_launchck_mode_name(enum lwsi_launchck_mode mode);

#endif
