#include "lwsinit/termlog.h"

#include "lwsinit/fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int lwsi_termlog_write(const char *path, const char *msg, bool keep_existing)
{
  if (path == NULL || path[0] == '\0')
    return 0;
  /* O_NONBLOCK: a FIFO at path with no reader would block open(2) for
   * ever, in PID 1, with every signal blocked, so nothing could end the
   * wait but SIGKILL (fifo(7), open(2)); it fails with ENXIO instead. On a regular file the flag changes nothing. */
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  int fd;
  do
    fd = open(path, flags, 0644);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return -errno;
  struct stat st;
  if (keep_existing && fstat(fd, &st) == 0 && st.st_size > 0) {
    close(fd);
    return 0;
  }
  int rc = 0;
  if (ftruncate(fd, 0) < 0 && errno != EINVAL)
    rc = -errno;
  if (rc == 0)
    rc = lwsi_fdio_write_all(fd, msg, strlen(msg));
  if (rc == 0)
    rc = lwsi_fdio_write_all(fd, "\n", 1);
  if (close(fd) < 0 && rc == 0 && errno != EINTR)
    rc = -errno;
  return rc;
}

int lwsi_termlog_report(const char *path, bool given, const char *msg)
{
  if (path == NULL || path[0] == '\0' || (!given && access(path, F_OK) != 0))
    return 0;
  return lwsi_termlog_write(path, msg, false);
}
