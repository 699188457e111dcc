/* `lwsinit status` (agent/status_sock.c, agent/status.c): the client reads
 * whatever the status socket answers, which is any bytes at all if
 * something else listens at the path, and prints it for a person. The
 * agent's side of the socket reads nothing from its peers (it answers
 * every accepted connection of the same uid with the document and
 * closes), so these bytes are the only outside input on that path.
 *
 * Each input is what a server writes on one connection before it closes:
 * a thread in this process listens on a Unix socket in a private folder,
 * and lwsi_status_sock_fetch, as `lwsinit status` calls it, must return
 * exactly those bytes (or -ECONNRESET for none). Then lwsi_status_print
 * reads the document, printed to /dev/null: it returns 0 exactly when the
 * text (up to a NUL byte) is a JSON object in cJSON's reading, else
 * -EINVAL, and never crashes. */
#include "lwsinit/status.h"
#include "lwsinit/status_sock.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"

static FILE *devnull;
static char dir[64];
static char path[128];
static int listen_fd = -1;

/* What the server thread writes on its next connection; set before the
 * client connects, and the thread posts `served` once it has closed. */
static const uint8_t *serve_data;
static size_t serve_size;
static sem_t served;

static void *server_main(void *arg)
{
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      fprintf(stderr, "fuzz_status: accept: %s\n", strerror(errno));
      abort();
    }
    size_t off = 0;
    while (off < serve_size) {
      ssize_t n = send(fd, serve_data + off, serve_size - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        break; /* the client gave up (its size bound): fine */
      off += (size_t)n;
    }
    close(fd);
    sem_post(&served);
  }
  return NULL;
}

static void cleanup(void)
{
  unlink(path);
  rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  devnull = fopen("/dev/null", "w");
  CHECK(devnull != NULL);
  snprintf(dir, sizeof(dir), "/tmp/lwsi-fuzz-status-XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof(path), "%s/status.sock", dir);
  atexit(cleanup);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
  listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(listen_fd >= 0);
  CHECK(bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
  CHECK(listen(listen_fd, 4) == 0);
  CHECK(sem_init(&served, 0, 0) == 0);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, server_main, NULL) == 0);
  CHECK(pthread_detach(t) == 0);

  /* A document past the client's bound (4 MiB), which libFuzzer's inputs
   * never reach: refused with -EMSGSIZE, nothing kept. */
  size_t n = (5u << 20);
  uint8_t *big = malloc(n);
  CHECK(big != NULL);
  memset(big, ' ', n);
  serve_data = big;
  serve_size = n;
  char *doc = NULL;
  CHECK(lwsi_status_sock_fetch(path, 10000, &doc) == -EMSGSIZE && doc == NULL);
  while (sem_wait(&served) < 0)
    CHECK(errno == EINTR);
  free(big);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  serve_data = data;
  serve_size = size;
  char *doc = NULL;
  int rc = lwsi_status_sock_fetch(path, 10000, &doc);
  /* Anything else would mean the server thread never got the connection,
   * and waiting for it would hang. */
  CHECK(rc == 0 || rc == -ECONNRESET);
  while (sem_wait(&served) < 0)
    CHECK(errno == EINTR);
  if (size == 0) {
    CHECK(rc == -ECONNRESET && doc == NULL);
  } else {
    CHECK(rc == 0 && doc != NULL);
    CHECK(memcmp(doc, data, size) == 0 && doc[size] == '\0');
    free(doc);
  }

  /* The document is printed from a copy of its exact size (the client's
   * buffer has room to spare), so that ASan sees any read past its end;
   * an empty one is printed all the same. */
  doc = fuzz_cstr(data, size);
  rc = lwsi_status_print(devnull, doc);
  CHECK(rc == 0 || rc == -EINVAL);
  cJSON *j = cJSON_Parse(doc);
  CHECK((rc == 0) == (j != NULL && cJSON_IsObject(j)));
  cJSON_Delete(j);
  free(doc);
  return 0;
}
