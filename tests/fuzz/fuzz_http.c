/* The probe server's request path (probes/http.c): http-parser and its
 * callbacks, the head/URL/body limits, percent-decoding of the path, the
 * query helpers and the routes, reached the only way they are reached in
 * the agent: bytes on a TCP connection to a real lwsi_http_server on a
 * libuv loop. Server and client share one loop in this process.
 *
 * Each input is what one client sends on one connection, then it shuts
 * its write side (FIN) and reads until the server is done. The last byte
 * of the input also picks how the bytes are cut into writes (all at once,
 * or pieces of 1, 7, 64 or 1000 bytes with a loop turn between), so that
 * requests arrive split anywhere. Checks:
 *  - the server closes the connection within a few seconds (a request
 *    that leaves it waiting after the client's FIN is a finding);
 *  - every answer is an HTTP/1.1 response that parses, with a status in
 *    100..599 and a Content-Length;
 *  - no connection is left open and nothing leaks between inputs.
 * The server has the agent's limits but a smaller output bound (2 KiB),
 * so that pipelined requests reach the throttle.
 * The query helpers are also run on the input directly, with every small
 * buffer size. */
#include "lwsinit/health.h"
#include "lwsinit/http.h"
#include "lwsinit/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <string.h>

#include "fuzz.h"

static uv_loop_t loop;
static struct lwsi_http_server srv;
static struct sockaddr_in srv_addr;
static struct lwsi_health_input state;
static uint32_t next_src; /* source addresses rotate through 127.1.0.0/16 and up */

/* ---- the routes' callbacks: the agent's shape, fixed state ---- */

static void checks_cb(void *data, enum lwsi_health_kind kind, struct lwsi_health_list *out)
{
  if (kind == LWSI_HEALTH_LIVE)
    lwsi_health_live(&state, out);
  else
    lwsi_health_ready(&state, out);
}

static int status_cb(void *data, struct lwsi_buf *out)
{
  return lwsi_buf_puts(out, "{\"rank\":0,\"phase\":\"running\",\"ready\":false}\n");
}

static int metrics_cb(void *data, struct lwsi_buf *out)
{
  lwsi_metrics_gauge(out, "lwsinit_ready", "1 when /readyz answers 200.", 0);
  return lwsi_http_metrics(&srv, out);
}

static struct lwsi_http_probes probes = {checks_cb, status_cb, metrics_cb, NULL};

/* ---- the client ---- */

struct client {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  const uint8_t *data;
  size_t size, sent, piece;
  bool connected, shut, eof, closed, failed;
  /* Responses, parsed as they come. */
  http_parser parser;
  size_t responses;
  bool bad_response;
  size_t got;
  char first[16];
};

static struct client cl;

static void on_client_closed(uv_handle_t *h) { cl.closed = true; }

static void on_connect(uv_connect_t *req, int status)
{
  if (status < 0) {
    fprintf(stderr, "fuzz_http: connect: %s\n", uv_strerror(status));
    cl.failed = true;
    return;
  }
  cl.connected = true;
}

static void on_shutdown(uv_shutdown_t *req, int status) { (void)status; }

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
  static char rbuf[65536];
  *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static int resp_headers_complete(http_parser *p)
{
  if (p->status_code < 100 || p->status_code > 599 || p->http_major != 1 || p->http_minor != 1)
    cl.bad_response = true;
  /* Every answer carries Content-Length (HEAD's too, with no body after
   * it): the client cannot tell a HEAD answer's length from the bytes, so
   * skip its body by the length given and tolerate the mismatch below. */
  if (!(p->flags & F_CONTENTLENGTH))
    cl.bad_response = true;
  return 0;
}

static int resp_message_complete(http_parser *p)
{
  cl.responses++;
  return 0;
}

static const http_parser_settings resp_settings = {
  .on_headers_complete = resp_headers_complete,
  .on_message_complete = resp_message_complete,
};

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  if (n < 0) {
    cl.eof = true;
    uv_read_stop(s);
    return;
  }
  if (n == 0)
    return;
  if (cl.got < sizeof(cl.first) - 1) {
    size_t k = (size_t)n < sizeof(cl.first) - 1 - cl.got ? (size_t)n : sizeof(cl.first) - 1 - cl.got;
    memcpy(cl.first + cl.got, buf->base, k);
  }
  cl.got += (size_t)n;
  /* HEAD answers have a Content-Length and no body: a response parser
   * that does not know the request would read the next answer as body.
   * So only the first answer is parsed in full; the stream as a whole is
   * checked to start like a response. */
  if (cl.responses == 0 && !cl.bad_response) {
    http_parser_execute(&cl.parser, &resp_settings, buf->base, (size_t)n);
    enum http_errno e = HTTP_PARSER_ERRNO(&cl.parser);
    if (e != HPE_OK && e != HPE_PAUSED && cl.responses == 0)
      cl.bad_response = true;
  }
}

/* ---- one connection per input ---- */

static void run_once(bool block)
{
  uv_run(&loop, block ? UV_RUN_ONCE : UV_RUN_NOWAIT);
}

static void send_input(void)
{
  while (cl.sent < cl.size) {
    size_t n = cl.size - cl.sent;
    if (cl.piece != 0 && n > cl.piece)
      n = cl.piece;
    uv_buf_t b = uv_buf_init((char *)cl.data + cl.sent, (unsigned)n);
    int w = uv_try_write((uv_stream_t *)&cl.tcp, &b, 1);
    if (w == UV_EAGAIN) {
      run_once(true); /* the server is behind: let it read (or answer) */
      continue;
    }
    if (w < 0) {
      /* The server closed first (it rejected the request and stopped
       * reading): what is left cannot be sent, which is fine. */
      cl.sent = cl.size;
      break;
    }
    cl.sent += (size_t)w;
    if (cl.piece != 0)
      run_once(false); /* let the server see this piece alone */
  }
}

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

static void one_connection(const uint8_t *data, size_t size)
{
  memset(&cl, 0, sizeof(cl));
  cl.data = data;
  cl.size = size;
  static const size_t pieces[] = {0, 1, 7, 64, 1000};
  cl.piece = size > 0 ? pieces[data[size - 1] % 5] : 0;
  http_parser_init(&cl.parser, HTTP_RESPONSE);
  http_parser_pause(&cl.parser, 0);

  CHECK(uv_tcp_init(&loop, &cl.tcp) == 0);
  /* A different source address per connection, so that TIME_WAIT never
   * runs out the ports of one address. */
  struct sockaddr_in src;
  uint32_t k = next_src++ % (250u * 256 * 256);
  char ip[32];
  snprintf(ip, sizeof(ip), "127.%u.%u.%u", 1 + k / 65536, (k / 256) % 256, k % 256);
  CHECK(uv_ip4_addr(ip, 0, &src) == 0);
  CHECK(uv_tcp_bind(&cl.tcp, (const struct sockaddr *)&src, 0) == 0);
  CHECK(uv_tcp_connect(&cl.connect_req, &cl.tcp, (const struct sockaddr *)&srv_addr,
                       on_connect) == 0);
  uint64_t deadline = now_ms() + 8000;
  while (!cl.connected && !cl.failed) {
    run_once(true);
    CHECK(now_ms() < deadline);
  }
  CHECK(!cl.failed);
  CHECK(uv_read_start((uv_stream_t *)&cl.tcp, client_alloc, client_read) == 0);
  send_input();
  /* FIN, also after the server's own: a server that shut its write side
   * lingers, reading, until the client's FIN (or a second). */
  uv_shutdown(&cl.shutdown_req, (uv_stream_t *)&cl.tcp, on_shutdown);
  /* The server must finish: answer what it parsed, see the FIN, close. */
  while (!cl.eof || lwsi_http_connections(&srv) > 0) {
    run_once(true);
    if (now_ms() >= deadline) {
      fprintf(stderr, "fuzz_http: the server did not close the connection within 8 s "
                      "(client eof %d, server connections %u)\n",
              cl.eof, lwsi_http_connections(&srv));
      abort();
    }
  }
  uv_close((uv_handle_t *)&cl.tcp, on_client_closed);
  while (!cl.closed)
    run_once(false);
  run_once(false); /* the server's close callbacks */

  if (cl.got > 0) {
    cl.first[cl.got < sizeof(cl.first) - 1 ? cl.got : sizeof(cl.first) - 1] = '\0';
    CHECK(strncmp(cl.first, "HTTP/1.1 ", cl.got < 9 ? cl.got : 9) == 0);
    CHECK(!cl.bad_response);
  }
}

/* ---- the query helpers on their own ---- */

static void query_helpers(const uint8_t *data, size_t size)
{
  char *q = fuzz_cstr(data, size > 4096 ? 4096 : size);
  static const size_t lens[] = {0, 1, 2, 8, 64};
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    size_t nl = lens[i], vl = lens[(i + 2) % 5];
    char *name = malloc(nl ? nl : 1), *value = malloc(vl ? vl : 1);
    const char *pos = q;
    size_t steps = 0;
    while (lwsi_http_query_next(&pos, name, nl, value, vl)) {
      CHECK(pos >= q && pos <= q + strlen(q));
      if (nl > 0)
        CHECK(strnlen(name, nl) < nl);
      if (vl > 0)
        CHECK(strnlen(value, vl) < vl);
      CHECK(++steps <= size + 1);
    }
    CHECK(*pos == '\0');
    free(name);
    free(value);
  }
  (void)lwsi_http_query_has(q, "verbose");
  (void)lwsi_http_query_has(NULL, "verbose");
  free(q);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  signal(SIGPIPE, SIG_IGN);
  CHECK(uv_loop_init(&loop) == 0);
  /* The agent's state while the engine starts: live, not ready, with
   * reasons, so both 200 and 503 bodies are rendered. */
  state.is_leader = true;
  state.phase = "running";
  state.launched = true;
  state.child_running = true;
  state.size = 2;
  state.joined = 2;
  state.alive = 1;
  state.lost_reason = "rank 1: silent for 10 s";
  state.upstream_enabled = true;
  state.upstream_error = "HTTP 503\nsecond line";
  probes.data = NULL;
  /* The agent's limits, but for the output bound: at 64 KiB pipelined
   * answers never pile up that far within one read of 4 KiB, so the
   * throttle (stop parsing, resume when half has drained) would go
   * untested. At 2 KiB a dozen pipelined requests reach it. */
  struct lwsi_http_opts opts = {.max_output = 2048};
  CHECK(lwsi_http_init(&srv, &loop, &opts, lwsi_http_route_probes, &probes) == 0);
  CHECK(lwsi_http_listen(&srv, "127.0.0.1", 0) == 0);
  CHECK(uv_ip4_addr("127.0.0.1", lwsi_http_port(&srv), &srv_addr) == 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  one_connection(data, size);
  query_helpers(data, size);
  return 0;
}
