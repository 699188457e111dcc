/* The GPU check program's side of its pipe protocol (agent/gpucheck.c),
 * for fuzz_gpurun: gpucheck.c is a program of its own, not in the agent's
 * library, and its stdin reader is static. It is compiled here as it is,
 * with main renamed, and this file lends the harness what it needs. */
#define main lwsi_gpucheck_main
#include "agent/gpucheck.c"
#undef main

#include "gpucheck_shim.h"

/* Reads the NCCL id from fd as the check reads its stdin (read_id), then
 * writes the nccl_id event the leader's check would print for that id
 * (emit_id) to out_fd. Returns whether an id was read; hex gets it. */
bool fuzz_gpucheck_read_id(int fd, int out_fd, char hex[2 * LWSI_NCCL_UNIQUE_ID_BYTES + 1])
{
  int saved = dup(STDIN_FILENO);
  dup2(fd, STDIN_FILENO);
  memset(&fail, 0, sizeof(fail));
  memset(&opt.id, 0, sizeof(opt.id));
  got_signal = 0;
  start_ns = now_ns();
  deadline_ns = start_ns + 3600ull * 1000000000ull;
  bool ok = read_id();
  dup2(saved, STDIN_FILENO);
  close(saved);
  if (!ok) {
    /* The reason is one line, for the result event. */
    if (!(fail.failed && strcmp(fail.stage, "nccl_id") == 0)) {
      fprintf(stderr, "gpucheck read_id failed without a nccl_id failure\n");
      abort();
    }
    return false;
  }
  id_to_hex(&opt.id, hex);
  opt.proto = true;
  proto_fd = out_fd;
  emit_id();
  proto_fd = -1;
  return true;
}

bool fuzz_gpucheck_parse_line(const char *line, char hex[2 * LWSI_NCCL_UNIQUE_ID_BYTES + 1])
{
  lwsi_nccl_unique_id id;
  memset(&id, 0, sizeof(id));
  if (!parse_id_line(line, &id))
    return false;
  id_to_hex(&id, hex);
  return true;
}
