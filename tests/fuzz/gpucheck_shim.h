/* What gpucheck_shim.c lends fuzz_gpurun.c. */
#ifndef LWSINIT_FUZZ_GPUCHECK_SHIM_H
#define LWSINIT_FUZZ_GPUCHECK_SHIM_H

#include <stdbool.h>

#include "lwsinit/gpu_abi.h"

bool fuzz_gpucheck_read_id(int fd, int out_fd, char hex[2 * LWSI_NCCL_UNIQUE_ID_BYTES + 1]);
bool fuzz_gpucheck_parse_line(const char *line, char hex[2 * LWSI_NCCL_UNIQUE_ID_BYTES + 1]);

#endif
