/* The GPU check's pipe protocol, both ends:
 *
 *  - the agent reading the check's stdout (agent/gpurun.c): JSON lines,
 *    cut into reads of any size, a line over 64 KiB dropped, "nccl_id" and
 *    "result" events taken. Its reader (on_alloc/on_read/on_line) is
 *    static and only reachable through a real child process; this file
 *    includes gpurun.c and calls the libuv callbacks as libuv would, with
 *    the input as the bytes read;
 *  - the check reading its stdin (gpucheck/parse.c: the line reader
 *    lwsi_gpucheck_lines_*, fed as the check's read loop feeds it, and
 *    lwsi_gpucheck_parse_id_line);
 *  - the id's round trip: what lwsi_gpurun_give_id writes for the first
 *    line of the input, read back by the check; and an id the check read,
 *    printed as its nccl_id event, read back by the agent.
 *
 * Checks: the agent's events are the same whatever the reads' sizes (all
 * at once, or small uneven pieces); every field it fills is terminated;
 * the check accepts an id exactly when the line carries 256 hex digits
 * where the protocol puts them, and the id it reads is the one the agent
 * gets back from its event. */
#include "agent/gpurun.c"

#include <stddef.h>

#include "fuzz.h"
#include "lwsinit/gpucheck_parse.h"

#define HEXLEN (2 * LWSI_NCCL_UNIQUE_ID_BYTES)

static struct lwsi_gpurun *run;
static size_t nevents, nids, nresults;
static uint64_t ev_hash;
static char last_id[sizeof(run->id)];

static void hash_bytes(const void *p, size_t n)
{
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    ev_hash = (ev_hash ^ b[i]) * 1099511628211ull;
}

static void on_event(struct lwsi_gpurun *r, enum lwsi_gpurun_ev ev)
{
  CHECK(r == run);
  nevents++;
  hash_bytes(&ev, sizeof(ev));
  if (ev == LWSI_GPURUN_ID) {
    CHECK(strnlen(r->id, sizeof(r->id)) < sizeof(r->id));
    hash_bytes(r->id, strlen(r->id) + 1);
    memcpy(last_id, r->id, sizeof(last_id));
    nids++;
    return;
  }
  CHECK(ev == LWSI_GPURUN_RESULT);
  CHECK(r->have_result && nresults == 0); /* the first result only */
  nresults++;
  CHECK(strnlen(r->error, sizeof(r->error)) < sizeof(r->error));
  CHECK(strnlen(r->model, sizeof(r->model)) < sizeof(r->model));
  CHECK(r->result_json != NULL && strlen(r->result_json) < LWSI_GPURUN_LINE_MAX);
  hash_bytes(&r->ok, sizeof(r->ok));
  hash_bytes(r->error, strlen(r->error) + 1);
  hash_bytes(r->model, strlen(r->model) + 1);
  hash_bytes(&r->ndevices, sizeof(r->ndevices));
  hash_bytes(&r->busbw_gbps, sizeof(r->busbw_gbps));
  hash_bytes(&r->time_ms, sizeof(r->time_ms));
  hash_bytes(r->result_json, strlen(r->result_json) + 1);
}

/* What lwsi_gpurun_start leaves for the reader, without a child. */
static void reset_run(void)
{
  memset(run, 0, offsetof(struct lwsi_gpurun, buf));
  run->cb = on_event;
  run->in_fd = -1;
  run->busbw_gbps = -1;
  run->out.data = run;
  nevents = nids = nresults = 0;
  ev_hash = 14695981039346656037ull;
}

/* Feeds bytes to the agent's reader as libuv would: ask on_alloc for a
 * buffer, fill part of it, call on_read with the count. */
static uint64_t feed(const uint8_t *data, size_t size, bool chunked)
{
  reset_run();
  size_t pos = 0, ci = 0;
  while (pos < size) {
    uv_buf_t b;
    on_alloc((uv_handle_t *)&run->out, 65536, &b);
    CHECK(b.len >= 1 && b.base >= run->buf && b.base + b.len < run->buf + sizeof(run->buf));
    size_t n = size - pos;
    if (chunked && n > fuzz_chunks[ci % FUZZ_NCHUNKS])
      n = fuzz_chunks[ci % FUZZ_NCHUNKS];
    ci++;
    if (n > b.len)
      n = b.len;
    memcpy(b.base, data + pos, n);
    on_read((uv_stream_t *)&run->out, (ssize_t)n, &b);
    CHECK(run->len < sizeof(run->buf));
    pos += n;
  }
  free(run->result_json);
  run->result_json = NULL;
  return ev_hash ^ nevents;
}

static bool is_hex(char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static char lower(char c) { return (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c; }

/* Whether the 256 digits hex occur in data, in any case. */
static bool has_hex(const uint8_t *data, size_t size, const char *hex)
{
  for (size_t i = 0; i + HEXLEN <= size; i++) {
    size_t k = 0;
    while (k < HEXLEN && lower((char)data[i + k]) == hex[k])
      k++;
    if (k == HEXLEN)
      return true;
  }
  return false;
}

/* The check reads the input as its stdin: read_id in gpucheck.c reads
 * into the space the line reader offers, as much as is there (a pipe or a
 * file gives what it has, up to the room), until the id or EOF. */
static bool read_id(const uint8_t *data, size_t size, lwsi_nccl_unique_id *id)
{
  struct lwsi_gpucheck_lines *lines = calloc(1, sizeof(*lines));
  CHECK(lines != NULL);
  size_t pos = 0;
  bool got = false;
  while (!got && pos < size) {
    size_t room;
    char *space = lwsi_gpucheck_lines_space(lines, &room);
    CHECK(room >= 1 && space >= lines->buf && space + room < lines->buf + sizeof(lines->buf));
    size_t n = size - pos < room ? size - pos : room;
    memcpy(space, data + pos, n);
    pos += n;
    int rc = lwsi_gpucheck_lines_add(lines, n, id);
    CHECK(rc == 0 || rc == -EAGAIN);
    CHECK(lines->have < sizeof(lines->buf));
    got = rc == 0;
  }
  if (!got) {
    int rc = lwsi_gpucheck_lines_end(lines, id);
    CHECK(rc == 0 || rc == -ENODATA);
    got = rc == 0;
  }
  free(lines);
  return got;
}

/* An id the check finds goes back to the agent as the leader's check
 * would print it (its nccl_id event). */
static bool check_side(const uint8_t *data, size_t size)
{
  lwsi_nccl_unique_id id;
  memset(&id, 0, sizeof(id));
  bool got = read_id(data, size, &id);
  if (got) {
    char hex[HEXLEN + 1];
    lwsi_gpucheck_id_to_hex(&id, hex);
    CHECK(strlen(hex) == HEXLEN);
    CHECK(has_hex(data, size, hex));
    char line[LWSI_GPUCHECK_ID_EVENT_MAX + 1];
    lwsi_gpucheck_id_event(&id, line);
    size_t n = strlen(line);
    CHECK(n > 0 && n < LWSI_GPUCHECK_ID_EVENT_MAX);
    line[n++] = '\n';
    feed((const uint8_t *)line, n, false);
    CHECK(nids == 1 && strcmp(last_id, hex) == 0);
  }
  return got;
}

/* The first line of the input as the id a worker's agent passes on. */
static void give_id_side(const uint8_t *data, size_t size)
{
  size_t n = 0;
  while (n < size && n < 400 && data[n] != '\n' && data[n] != '\0')
    n++;
  if (n == 400)
    return;
  char *id = fuzz_cstr(data, n);
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC) == 0);
  reset_run();
  run->in_fd = p[1];
  fcntl(p[1], F_SETFL, O_NONBLOCK);
  int rc = lwsi_gpurun_give_id(run, id);
  /* An id too long for the line is refused before anything is written,
   * and stdin is left open then. */
  CHECK(run->in_fd == (rc == -EINVAL ? p[1] : -1));
  if (run->in_fd >= 0)
    close(run->in_fd);
  char want[512];
  int wl = snprintf(want, sizeof(want), "{\"nccl_id\":\"%s\"}\n", id);
  if (rc < 0) {
    CHECK(rc == -EINVAL && wl >= 320);
  } else {
    char got[512];
    ssize_t k = read(p[0], got, sizeof(got));
    CHECK(k == wl && memcmp(got, want, (size_t)wl) == 0);
    got[k - 1] = '\0';
    char hex[HEXLEN + 1];
    lwsi_nccl_unique_id pid;
    bool ok = lwsi_gpucheck_parse_id_line(got, &pid) == 0;
    if (ok)
      lwsi_gpucheck_id_to_hex(&pid, hex);
    bool want_ok = n >= HEXLEN && (n == HEXLEN || id[HEXLEN] == '"');
    for (size_t i = 0; want_ok && i < HEXLEN; i++)
      want_ok = is_hex(id[i]);
    CHECK(ok == want_ok);
    for (size_t i = 0; ok && i < HEXLEN; i++)
      CHECK(hex[i] == lower(id[i]));
  }
  close(p[0]);
  free(id);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  run = malloc(sizeof(*run));
  CHECK(run != NULL);

  /* Lines longer than the reader's buffer, which inputs of libFuzzer's
   * usual sizes never reach: 70000 bytes without a newline are dropped,
   * and the line after them is still read. */
  static const char result[] = "\n{\"event\":\"result\",\"ok\":true,\"devices\":[{\"name\":\"H200\"}]}\n";
  size_t n = 70000 + sizeof(result) - 1;
  uint8_t *big = malloc(n);
  CHECK(big != NULL);
  memset(big, '{', 70000);
  memcpy(big + 70000, result, sizeof(result) - 1);
  uint64_t h1 = feed(big, n, false);
  CHECK(nresults == 1 && nevents == 1);
  uint64_t h2 = feed(big, n, true);
  CHECK(h1 == h2);
  free(big);

  /* And the check's stdin: a line of 9000 bytes (its buffer holds 8 KiB,
   * LWSI_GPUCHECK_LINE_MAX)
   * is dropped, and the id line after it is still read. */
  static const char id_line[] = "\n{\"nccl_id\":\""
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                "\"}\n";
  n = 9000 + sizeof(id_line) - 1;
  big = malloc(n);
  CHECK(big != NULL);
  memset(big, 'x', 9000);
  memcpy(big + 9000, id_line, sizeof(id_line) - 1);
  CHECK(check_side(big, n));
  free(big);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  uint64_t whole = feed(data, size, false);
  size_t ev_whole = nevents;
  uint64_t pieces = feed(data, size, true);
  CHECK(ev_whole == nevents);
  CHECK(whole == pieces);
  check_side(data, size);
  give_id_side(data, size);
  return 0;
}
