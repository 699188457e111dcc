/* The shared bounded-text and fd helpers (common/). */
#include "lwsinit/fdio.h"
#include "lwsinit/text.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static void test_printf(void)
{
  char buf[8];
  lwsi_text_printf(buf, sizeof buf, "%s-%d", "abc", 42);
  TAP_STR_EQ(buf, "abc-42", "printf formats");
  lwsi_text_printf(buf, sizeof buf, "%s", "a line longer than the buffer");
  TAP_STR_EQ(buf, "a line ", "printf truncates to the buffer, terminated");
  lwsi_text_copy(buf, sizeof buf, NULL);
  TAP_STR_EQ(buf, "", "copy of NULL is empty");
  lwsi_text_copy(buf, 4, "abcdef");
  TAP_STR_EQ(buf, "abc", "copy truncates");
}

static void test_hexval(void)
{
  TAP_OK(lwsi_text_hexval('0') == 0 && lwsi_text_hexval('9') == 9, "hex digits");
  TAP_OK(lwsi_text_hexval('a') == 10 && lwsi_text_hexval('F') == 15, "hex letters, both cases");
  TAP_OK(lwsi_text_hexval('g') == -1 && lwsi_text_hexval('\0') == -1 && lwsi_text_hexval('/') == -1,
         "not hex: -1");
}

static void test_write_all(void)
{
  int fds[2];
  TAP_OK(pipe2(fds, O_CLOEXEC) == 0, "pipe");
  static char big[100000];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)i;
  /* Larger than a pipe's default 64 KiB: a writer that did not loop on
   * short writes would stop at the pipe's capacity. Read it from a child. */
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[1]);
    size_t got = 0;
    char b[4096];
    ssize_t n;
    while ((n = read(fds[0], b, sizeof b)) > 0)
      got += (size_t)n;
    _exit(got == sizeof big ? 0 : 1);
  }
  close(fds[0]);
  TAP_OK(lwsi_fdio_write_all(fds[1], big, sizeof big) == 0, "write_all writes 100000 bytes to a pipe");
  close(fds[1]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  TAP_OK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader got every byte");

  TAP_OK(pipe2(fds, O_CLOEXEC) == 0, "pipe");
  close(fds[0]);
  signal(SIGPIPE, SIG_IGN);
  TAP_OK(lwsi_fdio_write_all(fds[1], "x", 1) == -EPIPE, "a closed reader: -EPIPE");
  close(fds[1]);
  TAP_OK(lwsi_fdio_write_all(-1, "x", 1) == -EBADF, "a bad fd: -EBADF");
}

int main(void)
{
  test_printf();
  test_hexval();
  test_write_all();
  return tap_done();
}
