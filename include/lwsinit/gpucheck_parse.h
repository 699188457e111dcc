/* The GPU check program's text protocol for the NCCL id (docs/gpucheck.md):
 * the id as 256 hex digits, the lines the agent writes to the check's stdin
 * ({"nccl_id":"<hex>"}, or the bare hex by hand), and the nccl_id event the
 * leader's check prints. libc only: the check program links it, and so
 * does the fuzzer (tests/fuzz/fuzz_gpurun.c), without the program's CUDA
 * and NCCL code. */
#ifndef LWSINIT_GPUCHECK_PARSE_H
#define LWSINIT_GPUCHECK_PARSE_H

#include <stddef.h>

#include "lwsinit/gpu_abi.h"

#define LWSI_GPUCHECK_HEX_LEN (2 * LWSI_NCCL_UNIQUE_ID_BYTES)

/* The stdin line buffer: a line longer than this (no id line is) is
 * dropped, and the line after it is still read. */
#define LWSI_GPUCHECK_LINE_MAX 8192

/* {"event":"nccl_id","id":"<256 hex>"} and its terminating NUL. */
#define LWSI_GPUCHECK_ID_EVENT_MAX (LWSI_GPUCHECK_HEX_LEN + 32)

/* The id as lower-case hex, NUL-terminated. */
void lwsi_gpucheck_id_to_hex(const lwsi_nccl_unique_id *id, char hex[LWSI_GPUCHECK_HEX_LEN + 1]);

/* Exactly 256 hex digits (either case) at s, not followed by another hex
 * digit. Returns 0 and sets *end past them, or -EINVAL (*id may then be
 * partly written). */
int lwsi_gpucheck_hex_to_id(const char *s, const char **end, lwsi_nccl_unique_id *id);

/* One line from the agent, without its newline: {"nccl_id":"<hex>"} (other
 * keys allowed and ignored), or the bare hex with blanks around it.
 * Returns 0 when the line carries an id, -EINVAL when not. */
int lwsi_gpucheck_parse_id_line(const char *line, lwsi_nccl_unique_id *id);

/* The nccl_id event line, without a newline. */
void lwsi_gpucheck_id_event(const lwsi_nccl_unique_id *id, char buf[LWSI_GPUCHECK_ID_EVENT_MAX]);

/* Cuts the bytes read from stdin into lines and looks for the id in each.
 * Zero-initialise it; the reader fills lwsi_gpucheck_lines_space, then
 * reports the count with lwsi_gpucheck_lines_add. */
struct lwsi_gpucheck_lines {
  size_t have;
  char buf[LWSI_GPUCHECK_LINE_MAX];
};

/* Where the next read goes; *room (at least 1) is how much it may read. */
char *lwsi_gpucheck_lines_space(struct lwsi_gpucheck_lines *l, size_t *room);

/* n bytes were read into the space. Returns 0 when a complete line
 * carried the id (*id), -EAGAIN when none has yet. */
int lwsi_gpucheck_lines_add(struct lwsi_gpucheck_lines *l, size_t n, lwsi_nccl_unique_id *id);

/* End of input: the last line may lack its newline. Returns 0 when it
 * carries the id, -ENODATA when the input ended without one. */
int lwsi_gpucheck_lines_end(struct lwsi_gpucheck_lines *l, lwsi_nccl_unique_id *id);

#endif
