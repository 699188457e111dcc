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
 * -EINVAL, and never crashes.
 *
 * The same bytes then fill the strings of a status snapshot (the leader's
 * address, a member's pod and child word, the errors: anything a peer or
 * the engine's health URL could put there) and its numbers: the document
 * rendered from it must be a JSON object that `lwsinit status` prints,
 * and its metrics must be written without an error. */
#include "lwsinit/metrics.h"
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

/* A number from the input's bytes at i (0 past the end). */
static uint64_t byte_num(const uint8_t *data, size_t size, size_t i)
{
  uint64_t v = 0;
  for (size_t k = 0; k < 8 && i + k < size; k++)
    v = (v << 8) | data[i + k];
  return v;
}

static void render_from(const char *text, const uint8_t *data, size_t size)
{
  static const char *const phases[] = {"resolving", "joining", "checking",
                                       "running",   "stopping", "failed"};
  struct lwsi_status_member rows[3];
  struct lwsi_status_snapshot s;
  memset(&s, 0, sizeof(s));
  memset(rows, 0, sizeof(rows));
  uint64_t n = byte_num(data, size, 0);
  s.rank = (uint32_t)(n & 1 ? 0 : n % 3);
  s.size = 3;
  s.standalone = (n & 2) != 0;
  s.ready = (n & 4) != 0;
  s.leader = text;
  s.leader_ip = text;
  for (size_t p = 0; p < 6; p++)
    s.phases[p] = (struct lwsi_status_phase){phases[p], byte_num(data, size, p)};
  s.nphases = 6;
  s.phase = (size_t)(n % 6);
  s.total_ms = byte_num(data, size, 3);
  s.child.state = (enum lwsi_status_child)(n % 3);
  s.child.pid = (int)(n % 100000);
  s.child.exit_code = (int)(n % 256);
  s.upstream.enabled = (n & 8) != 0;
  s.upstream.url = text;
  s.upstream.known = (n & 16) != 0;
  s.upstream.outcome = text;
  s.upstream.latency_s = (double)byte_num(data, size, 5) / 1e6;
  s.upstream.error = text;
  s.upstream.by_outcome[0] = (struct lwsi_status_outcome){text, n};
  s.upstream.noutcomes = 1;
  s.has_group = (n & 32) != 0;
  s.group.rendezvous = text;
  s.group.incarnation = text;
  s.group.missing = text;
  s.group.broken = text;
  s.joined = (uint32_t)n;
  s.alive = (uint32_t)(n >> 8);
  for (uint32_t r = 0; r < 3; r++) {
    rows[r].rank = r;
    snprintf(rows[r].addr, sizeof(rows[r].addr), "%s", text);
    snprintf(rows[r].pod, sizeof(rows[r].pod), "%s", text);
    snprintf(rows[r].child, sizeof(rows[r].child), "%s", text);
    rows[r].has_state = (n >> r) & 1;
    rows[r].hb_age_ms = (int64_t)(byte_num(data, size, r + 1) >> 1) - 1;
    rows[r].rtt_us = (int64_t)(byte_num(data, size, r + 2) >> 1) - 1;
  }
  s.members = rows;
  s.nmembers = s.has_group ? 3 : 0;
  s.has_gpu_check = (n & 64) != 0;
  s.gpu.mode = text;
  s.gpu.state = (enum lwsi_status_gpu)(n % 4);
  s.gpu.have_result = (n & 128) != 0;
  s.gpu.model = text;
  s.gpu.busbw_gbps = (double)(int64_t)byte_num(data, size, 6) / 1e3;
  s.gpu.error = text;
  s.last_error = text;

  char *out = lwsi_status_render(&s);
  CHECK(out != NULL);
  size_t len = strlen(out);
  CHECK(len > 0 && out[len - 1] == '\n');
  cJSON *j = cJSON_Parse(out);
  CHECK(j != NULL && cJSON_IsObject(j));
  cJSON_Delete(j);
  CHECK(lwsi_status_print(devnull, out) == 0);
  free(out);
  struct lwsi_buf m = {0};
  CHECK(lwsi_status_metrics(&s, &m) == 0 && m.err == 0);
  lwsi_buf_free(&m);
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

  render_from(doc, data, size);
  free(doc);
  return 0;
}
