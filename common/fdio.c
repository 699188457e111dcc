/* Owns the blocking file-descriptor helpers (include/lwsinit/fdio.h). */
#include "lwsinit/fdio.h"

#include <errno.h>
#include <unistd.h>

int lwsi_fdio_write_all(int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}
