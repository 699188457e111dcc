/* Blocking file-descriptor helpers for the few places that write outside
 * the loop (the termination log, the GPU check program's output). libc
 * only. */
#ifndef LWSINIT_FDIO_H
#define LWSINIT_FDIO_H

#include <stddef.h>

/* Writes all len bytes, retrying EINTR and short writes. Returns 0 or a
 * negative errno (EAGAIN on a non-blocking fd that is full). */
int lwsi_fdio_write_all(int fd, const void *buf, size_t len);

#endif
