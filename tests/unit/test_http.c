/* The probe server, its routes, the metrics writer and the probe client.
 * Everything runs in this process on one uv loop: the servers and the test
 * clients (libuv TCP, responses parsed with http-parser). The blocking
 * probe client runs in a forked child while the loop serves it. Every wait
 * has a deadline. */
#include "lwsinit/health.h"
#include "lwsinit/http.h"
#include "lwsinit/metrics.h"
#include "lwsinit/probe_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static uv_loop_t loop;
static uv_timer_t deadline_timer, tick_timer;
static bool deadline_fired;

/* ---- Waiting with a deadline ---- */

static void on_deadline(uv_timer_t *t) { deadline_fired = true; }
static void on_tick(uv_timer_t *t) {}

/* Runs the loop until pred(arg) or ms pass. A tick keeps the loop turning
 * for predicates that are not loop events (a child's exit). */
static bool wait_for(bool (*pred)(void *), void *arg, uint64_t ms)
{
  deadline_fired = false;
  uv_timer_start(&deadline_timer, on_deadline, ms, 0);
  uv_timer_start(&tick_timer, on_tick, 5, 5);
  while (!pred(arg) && !deadline_fired)
    uv_run(&loop, UV_RUN_ONCE);
  uv_timer_stop(&deadline_timer);
  uv_timer_stop(&tick_timer);
  return pred(arg);
}

static bool never(void *arg) { return false; }

static void sleep_loop(uint64_t ms) { wait_for(never, NULL, ms); }

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- The servers under test ---- */

static struct lwsi_health_input state;
static bool status_fails;

static void checks_cb(void *data, enum lwsi_health_kind kind, struct lwsi_health_list *out)
{
  if (kind == LWSI_HEALTH_LIVE)
    lwsi_health_live(&state, out);
  else
    lwsi_health_ready(&state, out);
}

static int status_cb(void *data, struct lwsi_buf *out)
{
  if (status_fails)
    return -EIO;
  return lwsi_buf_puts(out, "{\"rank\":0,\"phase\":\"running\"}");
}

static struct lwsi_http_server srv_a, srv_b, srv_c; /* defaults; tight timeout; 8 connections */

static int metrics_cb(void *data, struct lwsi_buf *out)
{
  lwsi_metrics_gauge(out, "lwsinit_up", "The agent answers.", 1);
  return lwsi_http_metrics(&srv_a, out);
}

static struct lwsi_http_probes probes = {
  .checks = checks_cb,
  .status = status_cb,
  .metrics = metrics_cb,
};

/* The probe routes, plus two test paths: /big (64 KiB, for the output
 * bound) and /echo (what the server decoded). */
static void handler(void *data, const struct lwsi_http_request *req,
                    struct lwsi_http_response *resp)
{
  if (strcmp(req->path, "/big") == 0) {
    static char big[64 * 1024];
    memset(big, 'x', sizeof(big));
    lwsi_buf_append(resp->body, big, sizeof(big));
    return;
  }
  if (strcmp(req->path, "/echo") == 0 || strncmp(req->path, "/echo/", 6) == 0) {
    lwsi_buf_printf(resp->body, "%s|%s|%s", req->method_name, req->path,
                         req->query ? req->query : "(none)");
    return;
  }
  lwsi_http_route_probes(&probes, req, resp);
}

static void state_healthy_worker(void)
{
  state = (struct lwsi_health_input){
    .phase = "running",
    .launched = true,
    .child_running = true,
    .size = 2,
    .leader_heard = true,
    .upstream_enabled = true,
    .upstream_ok = true,
  };
}

/* ---- A test client on the loop ---- */

#define MAX_RESP 8

struct tresp {
  int status;
  char ctype[256];
  char allow[256];
  char connection[256];
  long clen; /* -1: none */
  char body[8192];
  size_t body_len;
};

struct tclient {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_timer_t drip;
  int handles;
  http_parser p;
  const char *segs[4]; /* segs[i] is sent once i answers have arrived */
  size_t seglen[4];
  int nsegs, next_seg;
  int drip_ms; /* > 0: segs[0] goes one byte per drip_ms */
  size_t drip_off;
  bool heads[MAX_RESP]; /* answer i is to a HEAD */
  bool no_read;
  int want;
  struct tresp resp[MAX_RESP];
  int nresp;
  char hf[64], hv[256];
  size_t hflen, hvlen;
  bool in_value;
  bool connected, eof, reset, err, write_err, parse_error;
  uint64_t t_start, t_first, t_eof;
  char rbuf[65536];
};

static void on_client_closed(uv_handle_t *h)
{
  struct tclient *c = h->data;
  c->handles--;
}

static void commit_header(struct tclient *c)
{
  if (c->hflen == 0 || c->nresp >= MAX_RESP)
    return;
  struct tresp *r = &c->resp[c->nresp];
  c->hf[c->hflen] = '\0';
  c->hv[c->hvlen] = '\0';
  if (strcasecmp(c->hf, "content-type") == 0)
    snprintf(r->ctype, sizeof(r->ctype), "%s", c->hv);
  else if (strcasecmp(c->hf, "allow") == 0)
    snprintf(r->allow, sizeof(r->allow), "%s", c->hv);
  else if (strcasecmp(c->hf, "connection") == 0)
    snprintf(r->connection, sizeof(r->connection), "%s", c->hv);
  else if (strcasecmp(c->hf, "content-length") == 0)
    r->clen = strtol(c->hv, NULL, 10);
  c->hflen = c->hvlen = 0;
  c->in_value = false;
}

static int c_on_begin(http_parser *p)
{
  struct tclient *c = p->data;
  if (c->nresp < MAX_RESP) {
    memset(&c->resp[c->nresp], 0, sizeof(c->resp[0]));
    c->resp[c->nresp].clen = -1;
  }
  return 0;
}

static int c_on_field(http_parser *p, const char *at, size_t len)
{
  struct tclient *c = p->data;
  if (c->in_value)
    commit_header(c);
  size_t n = len < sizeof(c->hf) - 1 - c->hflen ? len : sizeof(c->hf) - 1 - c->hflen;
  memcpy(c->hf + c->hflen, at, n);
  c->hflen += n;
  return 0;
}

static int c_on_value(http_parser *p, const char *at, size_t len)
{
  struct tclient *c = p->data;
  c->in_value = true;
  size_t n = len < sizeof(c->hv) - 1 - c->hvlen ? len : sizeof(c->hv) - 1 - c->hvlen;
  memcpy(c->hv + c->hvlen, at, n);
  c->hvlen += n;
  return 0;
}

static int c_on_headers_complete(http_parser *p)
{
  struct tclient *c = p->data;
  commit_header(c);
  if (c->nresp < MAX_RESP)
    c->resp[c->nresp].status = (int)p->status_code;
  /* An answer to HEAD has no body whatever its Content-Length says. */
  return c->nresp < MAX_RESP && c->heads[c->nresp] ? 1 : 0;
}

static int c_on_body(http_parser *p, const char *at, size_t len)
{
  struct tclient *c = p->data;
  if (c->nresp >= MAX_RESP)
    return 0;
  struct tresp *r = &c->resp[c->nresp];
  size_t n = len < sizeof(r->body) - 1 - r->body_len ? len : sizeof(r->body) - 1 - r->body_len;
  memcpy(r->body + r->body_len, at, n);
  r->body_len += n;
  r->body[r->body_len] = '\0';
  return 0;
}

static void client_write(struct tclient *c, const char *data, size_t len);

static int c_on_complete(http_parser *p)
{
  struct tclient *c = p->data;
  if (c->nresp == 0)
    c->t_first = now_ms();
  c->nresp++;
  if (c->next_seg < c->nsegs && c->next_seg == c->nresp) {
    client_write(c, c->segs[c->next_seg], c->seglen[c->next_seg]);
    c->next_seg++;
  }
  return 0;
}

static const http_parser_settings client_settings = {
  .on_message_begin = c_on_begin,
  .on_header_field = c_on_field,
  .on_header_value = c_on_value,
  .on_headers_complete = c_on_headers_complete,
  .on_body = c_on_body,
  .on_message_complete = c_on_complete,
};

static void on_cwrite(uv_write_t *w, int status)
{
  struct tclient *c = w->data;
  if (status < 0)
    c->write_err = true;
  free(w);
}

static void client_write(struct tclient *c, const char *data, size_t len)
{
  if (c->eof || c->err || uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  uv_write_t *w = malloc(sizeof(*w));
  w->data = c;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_cwrite) < 0) {
    free(w);
    c->write_err = true;
  }
}

static void on_drip(uv_timer_t *t)
{
  struct tclient *c = t->data;
  if (c->eof || c->err || c->write_err || c->drip_off >= c->seglen[0]) {
    uv_timer_stop(t);
    return;
  }
  client_write(c, c->segs[0] + c->drip_off, 1);
  c->drip_off++;
}

static void c_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
  struct tclient *c = h->data;
  *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void c_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct tclient *c = s->data;
  if (nread > 0) {
    size_t n = http_parser_execute(&c->p, &client_settings, buf->base, (size_t)nread);
    if (n != (size_t)nread || HTTP_PARSER_ERRNO(&c->p) != HPE_OK)
      c->parse_error = true;
    return;
  }
  if (nread < 0) {
    c->eof = true;
    c->reset = nread != UV_EOF;
    c->t_eof = now_ms();
    uv_read_stop(s);
  }
}

static void on_connect(uv_connect_t *req, int status)
{
  struct tclient *c = req->data;
  if (status < 0) {
    c->err = true;
    return;
  }
  c->connected = true;
  if (!c->no_read)
    uv_read_start((uv_stream_t *)&c->tcp, c_alloc, c_on_read);
  if (c->nsegs == 0)
    return;
  if (c->drip_ms > 0) {
    uv_timer_start(&c->drip, on_drip, 0, (uint64_t)c->drip_ms);
  } else {
    client_write(c, c->segs[0], c->seglen[0]);
  }
  c->next_seg = 1;
}

/* A client for port with up to four segments (NULL-terminated varargs are
 * overkill: pass NULL for the ones not needed). */
static struct tclient *client_new(uint16_t port, const char *seg0, const char *seg1)
{
  struct tclient *c = calloc(1, sizeof(*c));
  c->t_start = now_ms();
  http_parser_init(&c->p, HTTP_RESPONSE);
  c->p.data = c;
  if (seg0) {
    c->segs[c->nsegs] = seg0;
    c->seglen[c->nsegs++] = strlen(seg0);
  }
  if (seg1) {
    c->segs[c->nsegs] = seg1;
    c->seglen[c->nsegs++] = strlen(seg1);
  }
  c->want = 1;
  uv_tcp_init(&loop, &c->tcp);
  uv_timer_init(&loop, &c->drip);
  c->tcp.data = c->drip.data = c->creq.data = c;
  c->handles = 2;
  return c;
}

static void client_connect(struct tclient *c, uint16_t port)
{
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", port, &sa);
  if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, on_connect) < 0)
    c->err = true;
}

static bool client_settled(void *arg)
{
  struct tclient *c = arg;
  return c->nresp >= c->want || c->eof || c->err;
}

static bool client_gone(void *arg)
{
  struct tclient *c = arg;
  return c->eof || c->err;
}

static bool client_closed(void *arg)
{
  struct tclient *c = arg;
  return c->handles == 0;
}

static void client_free(struct tclient *c)
{
  if (c == NULL)
    return;
  uv_close((uv_handle_t *)&c->tcp, on_client_closed);
  uv_close((uv_handle_t *)&c->drip, on_client_closed);
  wait_for(client_closed, c, 2000);
  free(c);
}

/* One exchange: connect, send, wait for want answers (or the end). */
static struct tclient *exchange(uint16_t port, const char *seg0, const char *seg1, int want)
{
  struct tclient *c = client_new(port, seg0, seg1);
  c->want = want;
  client_connect(c, port);
  wait_for(client_settled, c, 5000);
  return c;
}

/* ---- Server tests ---- */

static uint16_t port_a, port_b, port_c;

static void test_basic(void)
{
  state_healthy_worker();
  struct tclient *c = exchange(port_a, "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n", NULL, 1);
  TAP_OK(c->nresp == 1 && c->resp[0].status == 200, "GET /livez answers 200");
  TAP_STR_EQ(c->resp[0].body, "ok", "the body is 'ok' (the API server's)");
  TAP_STR_EQ(c->resp[0].ctype, "text/plain; charset=utf-8", "plain text");
  TAP_OK(c->resp[0].clen == 2, "with Content-Length");
  TAP_OK(!c->eof, "HTTP/1.1 keeps the connection open");
  client_free(c);

  c = exchange(port_a, "GET /livez?verbose HTTP/1.1\r\nHost: t\r\n\r\n", NULL, 1);
  TAP_STR_EQ(c->resp[0].body, "[+]loop ok\n[+]child ok\nlivez check passed\n", "/livez?verbose");
  client_free(c);

  c = exchange(port_a, "GET /readyz?verbose HTTP/1.1\r\nHost: t\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 200, "a healthy worker is ready");
  TAP_STR_EQ(c->resp[0].body,
             "[+]not-stopping ok\n[+]child ok\n[+]leader ok\n[+]upstream ok\nreadyz check passed\n",
             "/readyz?verbose, passing");
  client_free(c);

  state.leader_heard = false;
  state.upstream_ok = false;
  state.upstream_error = "HTTP 500";
  c = exchange(port_a, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 503, "an unready worker answers 503");
  TAP_STR_EQ(c->resp[0].body,
             "readyz check failed: leader: no recent heartbeat from the leader; upstream: the "
             "engine's health URL: HTTP 500\n",
             "the short failure line names each failed check and why");
  client_free(c);

  c = exchange(port_a, "GET /readyz?verbose=1 HTTP/1.1\r\nHost: t\r\n\r\n", NULL, 1);
  TAP_STR_EQ(c->resp[0].body,
             "[+]not-stopping ok\n[+]child ok\n[-]leader failed: no recent heartbeat from the "
             "leader\n[-]upstream failed: the engine's health URL: HTTP 500\nreadyz check failed\n",
             "/readyz?verbose, failing: [-]name failed: reason");
  client_free(c);

  c = exchange(port_a,
               "GET /readyz?exclude=leader&verbose&exclude=upstream&exclude=gpu HTTP/1.1\r\n\r\n",
               NULL, 1);
  TAP_OK(c->resp[0].status == 200, "?exclude skips checks, as on the API server");
  TAP_STR_EQ(c->resp[0].body,
             "[+]not-stopping ok\n[+]child ok\n[+]leader excluded: ok\n[+]upstream excluded: ok\n"
             "warn: some health checks cannot be excluded: no matches for \"gpu\"\n"
             "readyz check passed\n",
             "excluded checks and unknown names are listed");
  client_free(c);

  state_healthy_worker();
  state.stopping = true;
  state.phase = "stopping";
  c = exchange(port_a, "GET /readyz HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 503, "stopping: 503");
  TAP_STR_EQ(c->resp[0].body, "readyz check failed: not-stopping: the agent is stopping (phase "
                              "stopping)\n", "stopping: the reason");
  client_free(c);
  c = exchange(port_a, "GET /livez HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 200, "stopping: still live while the engine runs");
  client_free(c);
  state_healthy_worker();

  c = exchange(port_a, "GET /status HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 200, "/status answers 200");
  TAP_STR_EQ(c->resp[0].ctype, "application/json", "/status is JSON");
  TAP_STR_EQ(c->resp[0].body, "{\"rank\":0,\"phase\":\"running\"}", "/status body from the agent");
  client_free(c);

  status_fails = true;
  c = exchange(port_a, "GET /status HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 500, "a failing status callback answers 500");
  client_free(c);
  status_fails = false;

  c = exchange(port_a, "GET /metrics HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 200, "/metrics answers 200");
  TAP_STR_EQ(c->resp[0].ctype, "text/plain; version=0.0.4; charset=utf-8",
             "/metrics has the exposition format's content type");
  TAP_OK(strncmp(c->resp[0].body, "# HELP lwsinit_up The agent answers.\n# TYPE lwsinit_up gauge\n"
                                  "lwsinit_up 1\n", 61) == 0,
         "/metrics body from the agent");
  TAP_OK(strstr(c->resp[0].body, "\nlwsinit_http_requests_total ") != NULL,
         "/metrics includes the server's own counters");
  client_free(c);
}

static void test_errors(void)
{
  struct tclient *c = exchange(port_a, "GET /nope HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 404, "unknown path: 404");
  TAP_OK(!c->eof, "a 404 keeps the connection");
  client_free(c);

  c = exchange(port_a, "GET /livez/ HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 404, "a trailing slash is another path: 404");
  client_free(c);

  c = exchange(port_a, "POST /readyz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /livez "
                       "HTTP/1.1\r\n\r\n", NULL, 2);
  TAP_OK(c->nresp == 2 && c->resp[0].status == 405, "POST on a known path: 405");
  TAP_STR_EQ(c->resp[0].allow, "GET, HEAD", "405 says Allow: GET, HEAD");
  TAP_OK(c->resp[1].status == 200, "a small body is skipped and the next request answered");
  client_free(c);

  c = exchange(port_a, "DELETE /metrics HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 405, "DELETE /metrics: 405");
  client_free(c);

  c = exchange(port_a, "PUT /nope HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 404, "other method on an unknown path: 404");
  client_free(c);

  c = exchange(port_a, "POST /livez HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 413, "a large body: 413");
  TAP_STR_EQ(c->resp[0].connection, "close", "413 says Connection: close");
  wait_for(client_gone, c, 3000);
  TAP_OK(c->eof, "and closes");
  client_free(c);

  static char chunked[4096];
  memset(chunked, 'b', sizeof(chunked));
  int n = snprintf(chunked, sizeof(chunked),
                   "POST /livez HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n");
  chunked[n] = 'b'; /* snprintf's NUL */
  memcpy(chunked + n + 2048, "\r\n0\r\n\r\n", 8);
  c = exchange(port_a, chunked, NULL, 1);
  TAP_OK(c->resp[0].status == 413, "a large chunked body: 413");
  client_free(c);

  static char longurl[4096];
  n = snprintf(longurl, sizeof(longurl), "GET /");
  memset(longurl + n, 'u', 3000);
  snprintf(longurl + n + 3000, sizeof(longurl) - (size_t)n - 3000, " HTTP/1.1\r\n\r\n");
  c = exchange(port_a, longurl, NULL, 1);
  TAP_OK(c->resp[0].status == 414, "a 3000-byte URL: 414");
  client_free(c);

  static char bighead[20000];
  n = snprintf(bighead, sizeof(bighead), "GET /livez HTTP/1.1\r\nX-Big: ");
  memset(bighead + n, 'h', 16384);
  snprintf(bighead + n + 16384, sizeof(bighead) - (size_t)n - 16384, "\r\n\r\n");
  c = exchange(port_a, bighead, NULL, 1);
  TAP_OK(c->nresp == 1 && c->resp[0].status == 431, "a 16 KiB header: 431");
  TAP_STR_EQ(c->resp[0].connection, "close", "431 says Connection: close");
  wait_for(client_gone, c, 3000);
  TAP_OK(c->eof && !c->reset, "and closes cleanly (FIN, no reset)");
  client_free(c);

  /* Many small headers add up as one big one. */
  static char manyhead[20000];
  n = snprintf(manyhead, sizeof(manyhead), "GET /livez HTTP/1.1\r\n");
  while (n < 12000)
    n += snprintf(manyhead + n, sizeof(manyhead) - (size_t)n, "a:\r\n");
  snprintf(manyhead + n, sizeof(manyhead) - (size_t)n, "\r\n");
  c = exchange(port_a, manyhead, NULL, 1);
  TAP_OK(c->resp[0].status == 431, "3000 tiny headers: 431");
  client_free(c);

  c = exchange(port_a, "\x16\x03\x01\x02\x00garbage\r\n\r\n", NULL, 1);
  TAP_OK(c->nresp == 1 && c->resp[0].status == 400, "garbage: 400");
  wait_for(client_gone, c, 3000);
  TAP_OK(c->eof, "garbage: closed");
  client_free(c);

  c = exchange(port_a, "GET /li%zz HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 400, "a bad percent escape: 400");
  client_free(c);
  c = exchange(port_a, "GET /livez%00 HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 400, "an escaped NUL: 400");
  client_free(c);
}

static void test_http_features(void)
{
  state_healthy_worker();
  /* HEAD: the GET's headers, Content-Length included, and no body. The
   * next pipelined answer parses only if no body bytes were sent. */
  struct tclient *c = client_new(port_a,
                                 "HEAD /readyz?verbose HTTP/1.1\r\n\r\n"
                                 "GET /readyz?verbose HTTP/1.1\r\n\r\n", NULL);
  c->heads[0] = true;
  c->want = 2;
  client_connect(c, port_a);
  wait_for(client_settled, c, 5000);
  TAP_OK(c->nresp == 2 && c->resp[0].status == 200, "HEAD answers 200");
  TAP_OK(c->resp[0].clen > 0 && c->resp[0].clen == (long)c->resp[1].body_len,
         "HEAD's Content-Length is the GET body's length (%ld)", c->resp[0].clen);
  TAP_OK(c->resp[0].body_len == 0 && !c->parse_error, "HEAD carries no body");
  client_free(c);

  /* Keep-alive: the second request goes on the same connection after the
   * first answer. */
  uint64_t accepted = srv_a.stats.accepted;
  c = exchange(port_a, "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n",
               "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", 2);
  TAP_OK(c->nresp == 2 && c->resp[0].status == 200 && c->resp[1].status == 200,
         "keep-alive: two requests, two answers");
  TAP_OK(srv_a.stats.accepted == accepted + 1, "keep-alive: on one connection");
  client_free(c);

  /* Pipelining: four requests in one write, answered in order. */
  state.upstream_ok = false;
  c = client_new(port_a,
                 "GET /livez HTTP/1.1\r\n\r\n"
                 "HEAD /readyz HTTP/1.1\r\n\r\n"
                 "GET /nope HTTP/1.1\r\n\r\n"
                 "GET /echo/a%20b?x=1 HTTP/1.1\r\n\r\n", NULL);
  c->heads[1] = true;
  c->want = 4;
  client_connect(c, port_a);
  wait_for(client_settled, c, 5000);
  TAP_OK(c->nresp == 4, "pipelined: four answers");
  TAP_OK(c->resp[0].status == 200 && c->resp[1].status == 503 && c->resp[2].status == 404 &&
             c->resp[3].status == 200,
         "pipelined: in order (200, 503, 404, 200)");
  TAP_STR_EQ(c->resp[3].body, "GET|/echo/a b|x=1", "the path is decoded, the query is raw");
  client_free(c);
  state_healthy_worker();

  /* A request split across many reads. */
  c = client_new(port_a, "GET /echo?verbose HTTP/1.1\r\nHost: split\r\n\r\n", NULL);
  c->drip_ms = 1;
  client_connect(c, port_a);
  wait_for(client_settled, c, 5000);
  TAP_STR_EQ(c->resp[0].body, "GET|/echo|verbose", "a request sent byte by byte is parsed");
  client_free(c);

  c = exchange(port_a, "GET http://probe:7471/livez?verbose HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 200 && strstr(c->resp[0].body, "livez check passed"),
         "an absolute-form URL is routed by its path");
  client_free(c);

  /* HTTP/1.0 closes after the answer unless asked to keep alive. */
  c = exchange(port_a, "GET /livez HTTP/1.0\r\n\r\n", NULL, 1);
  TAP_OK(c->resp[0].status == 200, "HTTP/1.0 is answered");
  TAP_STR_EQ(c->resp[0].connection, "close", "HTTP/1.0: Connection: close");
  wait_for(client_gone, c, 3000);
  TAP_OK(c->eof && !c->reset, "HTTP/1.0: closed after the answer");
  client_free(c);

  c = exchange(port_a, "GET /livez HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
               "GET /livez HTTP/1.0\r\n\r\n", 2);
  TAP_STR_EQ(c->resp[0].connection, "keep-alive", "HTTP/1.0 keep-alive is honoured");
  TAP_OK(c->nresp == 2, "HTTP/1.0 keep-alive: two answers on one connection");
  client_free(c);

  c = exchange(port_a, "GET /livez HTTP/1.1\r\nConnection: close\r\n\r\nGET /livez HTTP/1.1\r\n\r\n",
               NULL, 2);
  TAP_OK(c->nresp == 1 && c->eof, "Connection: close: one answer, then closed");
  TAP_STR_EQ(c->resp[0].connection, "close", "Connection: close is echoed");
  client_free(c);

  c = exchange(port_a, "GET /livez HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
               NULL, 1);
  TAP_OK(c->resp[0].status == 200 && strcmp(c->resp[0].connection, "close") == 0,
         "an Upgrade request is answered plainly, then closed");
  client_free(c);
}

static bool slow_done(void *arg)
{
  struct tclient **cs = arg;
  return client_gone(cs[0]) && client_settled(cs[1]);
}

static void test_slowloris(void)
{
  state_healthy_worker();
  /* One byte per 100 ms: the request never completes within the 300 ms
   * timeout of server B however steadily bytes arrive. */
  struct tclient *slow = client_new(port_b,
                                    "GET /livez HTTP/1.1\r\nHost: slowloris.example\r\n"
                                    "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", NULL);
  slow->drip_ms = 100;
  uint64_t t0 = now_ms();
  client_connect(slow, port_b);
  sleep_loop(150);

  uint64_t t1 = now_ms();
  struct tclient *fast = exchange(port_b, "GET /livez HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(fast->nresp == 1 && fast->resp[0].status == 200,
         "a probe is answered while a slowloris client trickles");
  TAP_OK(fast->t_first - t1 < 1000, "and at once (%llu ms)",
         (unsigned long long)(fast->t_first - t1));

  struct tclient *both[2] = {slow, fast};
  wait_for(slow_done, both, 5000);
  uint64_t took = slow->t_eof - t0;
  TAP_OK(slow->eof && slow->nresp == 0, "the slowloris connection is closed without an answer");
  TAP_OK(took >= 250 && took < 2500, "by the 300 ms timeout (%llu ms)", (unsigned long long)took);
  TAP_OK(slow->drip_off < slow->seglen[0], "before its request was complete");
  TAP_OK(srv_b.stats.timed_out >= 1, "counted as timed out");
  client_free(slow);
  client_free(fast);

  /* A connection that never sends anything is closed too. */
  struct tclient *idle = client_new(port_b, NULL, NULL);
  client_connect(idle, port_b);
  wait_for(client_gone, idle, 3000);
  TAP_OK(idle->eof, "an idle connection is closed by the timeout");
  client_free(idle);
}

static bool accepted_20(void *arg)
{
  return srv_c.stats.accepted >= 20;
}

static void test_eviction(void)
{
  state_healthy_worker();
  struct tclient *idle[20];
  for (int i = 0; i < 20; i++) {
    idle[i] = client_new(port_c, NULL, NULL);
    client_connect(idle[i], port_c);
  }
  wait_for(accepted_20, NULL, 5000);
  TAP_OK(srv_c.stats.accepted == 20, "20 idle connections accepted");
  TAP_OK(lwsi_http_connections(&srv_c) == 8, "at most 8 stay open (%u)",
         lwsi_http_connections(&srv_c));
  TAP_OK(srv_c.stats.evicted == 12, "the 12 oldest were evicted (%llu)",
         (unsigned long long)srv_c.stats.evicted);
  for (int i = 0; i < 12; i++)
    wait_for(client_gone, idle[i], 2000);
  bool oldest_gone = true;
  for (int i = 0; i < 12; i++)
    oldest_gone = oldest_gone && idle[i]->eof;
  bool newest_open = true;
  for (int i = 12; i < 20; i++)
    newest_open = newest_open && !idle[i]->eof;
  TAP_OK(oldest_gone && newest_open, "oldest first: the first 12 closed, the last 8 open");

  struct tclient *probe = exchange(port_c, "GET /livez HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(probe->nresp == 1 && probe->resp[0].status == 200,
         "a probe is answered with the server full of idle connections");
  client_free(probe);
  for (int i = 0; i < 20; i++)
    client_free(idle[i]);
}

static bool throttled(void *arg)
{
  return srv_b.stats.throttled > 0;
}

static bool b_empty(void *arg)
{
  return lwsi_http_connections(&srv_b) == 0;
}

static void test_output_bound(void)
{
  /* 2000 pipelined requests for 64 KiB each (125 MiB of answers) from a
   * client that never reads: the server stops parsing once its queue for
   * the connection is full, and the timeout ends the connection. */
  static char reqs[2000 * 32 + 1];
  size_t off = 0;
  for (int i = 0; i < 2000; i++)
    off += (size_t)snprintf(reqs + off, sizeof(reqs) - off, "GET /big HTTP/1.1\r\nHost: b\r\n\r\n");
  uint64_t req0 = srv_b.stats.requests;
  uint64_t to0 = srv_b.stats.timed_out;
  struct tclient *c = client_new(port_b, reqs, NULL);
  c->no_read = true;
  client_connect(c, port_b);
  wait_for(throttled, NULL, 5000);
  TAP_OK(srv_b.stats.throttled > 0, "a client that does not read is throttled");
  sleep_loop(50);
  uint64_t done = srv_b.stats.requests - req0;
  TAP_OK(done < 2000, "only %llu of 2000 pipelined requests were answered",
         (unsigned long long)done);

  struct tclient *probe = exchange(port_b, "GET /livez HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(probe->nresp == 1 && probe->resp[0].status == 200, "meanwhile probes are answered");
  client_free(probe);

  wait_for(b_empty, NULL, 5000);
  TAP_OK(lwsi_http_connections(&srv_b) == 0 && srv_b.stats.timed_out > to0,
         "the stuck connection is closed by the timeout");
  client_free(c);
}

/* ---- The probe client, in a forked child ---- */

struct child {
  pid_t pid;
  int status;
  bool done;
};

static bool child_exited(void *arg)
{
  struct child *ch = arg;
  if (!ch->done && waitpid(ch->pid, &ch->status, WNOHANG) == ch->pid)
    ch->done = true;
  return ch->done;
}

/* Runs `lwsinit probe` in a child while the loop serves it. Returns its
 * exit code; rc and the result come back through a pipe. */
static int run_probe(const char *host, uint16_t port, bool ready, int *rc,
                     struct lwsi_probe_result *res)
{
  int fds[2];
  if (pipe(fds) < 0)
    return -1;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    struct lwsi_probe_result r;
    int got = lwsi_probe_client_get(host, port, lwsi_probe_client_path(ready),
                                    LWSI_PROBE_CLIENT_TIMEOUT_MS, &r);
    if (write(fds[1], &got, sizeof(got)) < 0 || write(fds[1], &r, sizeof(r)) < 0)
      _exit(99);
    _exit(lwsi_probe_client_exit_code(got, &r));
  }
  close(fds[1]);
  struct child ch = {.pid = pid};
  if (!wait_for(child_exited, &ch, 8000)) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    return -1;
  }
  if (read(fds[0], rc, sizeof(*rc)) != sizeof(*rc) || read(fds[0], res, sizeof(*res)) != sizeof(*res))
    *rc = -9999;
  close(fds[0]);
  return WIFEXITED(ch.status) ? WEXITSTATUS(ch.status) : -1;
}

static void test_probe_client(void)
{
  struct lwsi_probe_result res;
  int rc = 0;
  state_healthy_worker();
  int code = run_probe("127.0.0.1", port_a, false, &rc, &res);
  TAP_OK(code == 0 && rc == 0 && res.status == 200, "probe live: exit 0 on 200");
  TAP_STR_EQ(res.body, "ok", "probe live: the body comes back");

  state.leader_heard = false;
  code = run_probe("127.0.0.1", port_a, true, &rc, &res);
  TAP_OK(code == 1 && rc == 0 && res.status == 503, "probe ready: exit 1 on 503");
  TAP_STR_EQ(res.body, "readyz check failed: leader: no recent heartbeat from the leader\n",
             "probe ready: the reason comes back");
  state_healthy_worker();

  /* Without a server: refused at once. Nothing needs the loop here. */
  static struct lwsi_http_server tmp; /* its handles close on the loop after return */
  lwsi_http_init(&tmp, &loop, NULL, handler, NULL);
  lwsi_http_listen(&tmp, "127.0.0.1", 0);
  uint16_t closed_port = lwsi_http_port(&tmp);
  lwsi_http_close(&tmp);
  sleep_loop(10);
  rc = lwsi_probe_client_get("127.0.0.1", closed_port, "/livez", 2000, &res);
  TAP_OK(rc == -ECONNREFUSED && lwsi_probe_client_exit_code(rc, &res) == 1,
         "nothing listening: -ECONNREFUSED, exit 1");

  /* A listener that never answers: the deadline holds. */
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t salen = sizeof(sa);
  bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
  listen(lfd, 4);
  getsockname(lfd, (struct sockaddr *)&sa, &salen);
  uint64_t t0 = now_ms();
  rc = lwsi_probe_client_get("127.0.0.1", ntohs(sa.sin_port), "/livez", 300, &res);
  uint64_t took = now_ms() - t0;
  TAP_OK(rc == -ETIMEDOUT && res.status == 0, "a silent server: -ETIMEDOUT");
  TAP_OK(took >= 290 && took < 1500, "within the deadline (%llu ms)", (unsigned long long)took);
  close(lfd);

  TAP_OK(lwsi_probe_client_get("localhost", 80, "/livez", 100, &res) == -EINVAL,
         "a host that is not an IP literal: -EINVAL");
  TAP_STR_EQ(lwsi_probe_client_path(true), "/readyz", "ready probes /readyz");
  TAP_STR_EQ(lwsi_probe_client_path(false), "/livez", "live probes /livez");
}

static void test_ipv6(void)
{
  static struct lwsi_http_server s6;
  lwsi_http_init(&s6, &loop, NULL, handler, NULL);
  int rc = lwsi_http_listen(&s6, "[::1]", 0);
  if (rc < 0) {
    TAP_SKIP("IPv6: no ::1 here (%s)", uv_strerror(rc));
    lwsi_http_close(&s6);
    return;
  }
  TAP_OK(lwsi_http_port(&s6) != 0, "listens on [::1]");
  struct lwsi_probe_result res;
  int prc = 0;
  int code = run_probe("::1", lwsi_http_port(&s6), false, &prc, &res);
  TAP_OK(code == 0 && res.status == 200, "probe over IPv6");
  lwsi_http_close(&s6);
}

static void test_listen_errors(void)
{
  static struct lwsi_http_server s;
  lwsi_http_init(&s, &loop, NULL, handler, NULL);
  TAP_OK(lwsi_http_listen(&s, "localhost", 0) == -EINVAL, "a name is not an IP literal: -EINVAL");
  TAP_OK(lwsi_http_listen(&s, "127.0.0.1", port_a) == UV_EADDRINUSE, "a port in use: -EADDRINUSE");
  lwsi_http_close(&s);
  lwsi_http_close(&s);
  struct lwsi_http_server z;
  memset(&z, 0, sizeof(z));
  lwsi_http_close(&z);
  TAP_OK(1, "close twice, and close of a zeroed server, are safe");
}

/* ---- Query strings, buffers, metrics ---- */

static void test_query(void)
{
  TAP_OK(lwsi_http_query_has("verbose", "verbose"), "?verbose");
  TAP_OK(lwsi_http_query_has("a=1&verbose=", "verbose"), "?a=1&verbose=");
  TAP_OK(lwsi_http_query_has("ver%62ose", "verbose"), "a percent-encoded name");
  TAP_OK(!lwsi_http_query_has("verbosex=1&xverbose", "verbose"), "no partial matches");
  TAP_OK(!lwsi_http_query_has(NULL, "verbose"), "no query");
  TAP_OK(!lwsi_http_query_has("", "verbose"), "an empty query");
  const char *pos = "exclude=a+b&&x=%41&=v&exclude";
  char n[16], v[16];
  TAP_OK(lwsi_http_query_next(&pos, n, sizeof(n), v, sizeof(v)) && !strcmp(n, "exclude") &&
             !strcmp(v, "a b"), "'+' is a space in values");
  TAP_OK(lwsi_http_query_next(&pos, n, sizeof(n), v, sizeof(v)) && !strcmp(n, "x") &&
             !strcmp(v, "A"), "empty parameters are skipped, %%41 is A");
  TAP_OK(lwsi_http_query_next(&pos, n, sizeof(n), v, sizeof(v)) && !strcmp(n, "") &&
             !strcmp(v, "v"), "an empty name");
  TAP_OK(lwsi_http_query_next(&pos, n, sizeof(n), v, sizeof(v)) && !strcmp(n, "exclude") &&
             !strcmp(v, ""), "a name without a value");
  TAP_OK(!lwsi_http_query_next(&pos, n, sizeof(n), v, sizeof(v)), "the end");
  pos = "verboseverboseverbose=1";
  TAP_OK(lwsi_http_query_next(&pos, n, 8, v, sizeof(v)) && n[0] == '\0',
         "a name too long for its buffer comes back empty");
}

static void test_buf(void)
{
  struct lwsi_buf b = {0};
  lwsi_buf_puts(&b, "a");
  lwsi_buf_printf(&b, "%d-%s", 42, "x");
  TAP_STR_EQ(b.data, "a42-x", "append and printf");
  char big[1000];
  memset(big, 'z', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  lwsi_buf_printf(&b, "[%s]", big);
  TAP_OK(b.len == 5 + 1001 && b.data[5] == '[' && b.data[b.len - 1] == ']' && b.err == 0,
         "printf longer than the stack copy");
  TAP_OK(lwsi_buf_append(&b, "", (size_t)LWSI_BUF_MAX + 1) == -EMSGSIZE,
         "past the maximum: -EMSGSIZE");
  TAP_OK(lwsi_buf_puts(&b, "more") == -EMSGSIZE && b.len == 1006, "the error is sticky");
  lwsi_buf_reset(&b);
  TAP_OK(b.err == 0 && b.len == 0 && lwsi_buf_puts(&b, "ok") == 0, "reset clears it");
  lwsi_buf_free(&b);
  TAP_OK(b.data == NULL && b.len == 0, "free");
}

static const char *fmt_value(double v)
{
  static char buf[40];
  if (lwsi_metrics_format_value(buf, sizeof(buf), v) < 0)
    return "(error)";
  return buf;
}

static void test_metrics(void)
{
  TAP_STR_EQ(fmt_value(0), "0", "0");
  TAP_STR_EQ(fmt_value(3), "3", "an integer");
  TAP_STR_EQ(fmt_value(0.1), "0.1", "0.1, not 0.10000000000000001");
  TAP_STR_EQ(fmt_value(-2.5), "-2.5", "a negative");
  TAP_STR_EQ(fmt_value(1.0 / 3), "0.3333333333333333", "16 digits when they suffice");
  TAP_STR_EQ(fmt_value(0.1 + 0.2), "0.30000000000000004", "17 digits when needed");
  TAP_STR_EQ(fmt_value(1e21), "1e+21", "an exponent");
  TAP_STR_EQ(fmt_value(123456789012.0), "123456789012", "a large integer");
  TAP_STR_EQ(fmt_value(INFINITY), "+Inf", "+Inf");
  TAP_STR_EQ(fmt_value(-INFINITY), "-Inf", "-Inf");
  TAP_STR_EQ(fmt_value(NAN), "NaN", "NaN");
  char tiny[3];
  TAP_OK(lwsi_metrics_format_value(tiny, sizeof(tiny), 1234) == -ENOSPC, "too small: -ENOSPC");
  const double vals[] = {0.1, 1.0 / 3, 1e-300, 6.02214076e23, 2.2250738585072014e-308,
                         1.7976931348623157e308};
  bool exact = true;
  for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
    exact = exact && strtod(fmt_value(vals[i]), NULL) == vals[i];
  TAP_OK(exact, "every value reads back exactly");

  /* An example set, as the agent would write it. */
  struct lwsi_buf b = {0};
  lwsi_metrics_gauge(&b, "lwsinit_up", "Whether the agent answers.", 1);
  lwsi_metrics_family(&b, "lwsinit_phase", LWSI_METRICS_GAUGE,
                      "The current phase (1 for the current one).");
  lwsi_metrics_sample(&b, "lwsinit_phase", (const struct lwsi_metrics_label[]){{"phase", "joining"}},
                      1, 0);
  lwsi_metrics_sample(&b, "lwsinit_phase", (const struct lwsi_metrics_label[]){{"phase", "running"}},
                      1, 1);
  lwsi_metrics_family(&b, "lwsinit_member_heartbeat_age_seconds", LWSI_METRICS_GAUGE,
                      "Seconds since each member's last heartbeat.");
  lwsi_metrics_sample(&b, "lwsinit_member_heartbeat_age_seconds",
                      (const struct lwsi_metrics_label[]){{"rank", "1"}, {"host", "sglang-0-1"}}, 2,
                      0.25);
  lwsi_metrics_sample(&b, "lwsinit_member_heartbeat_age_seconds",
                      (const struct lwsi_metrics_label[]){{"rank", "2"}, {"host", NULL}}, 2,
                      INFINITY);
  lwsi_metrics_counter(&b, "lwsinit_signals_forwarded_total", "Signals forwarded to the engine.",
                       UINT64_MAX);
  lwsi_metrics_family(&b, "lwsinit_upstream_last_error", LWSI_METRICS_GAUGE,
                      "Help with a \\ backslash\nand a newline.");
  lwsi_metrics_sample(&b, "lwsinit_upstream_last_error",
                      (const struct lwsi_metrics_label[]){{"error", "say \"hi\"\\\n"}}, 1, NAN);
  TAP_OK(b.err == 0, "the example set was written");
  TAP_STR_EQ(b.data,
             "# HELP lwsinit_up Whether the agent answers.\n"
             "# TYPE lwsinit_up gauge\n"
             "lwsinit_up 1\n"
             "# HELP lwsinit_phase The current phase (1 for the current one).\n"
             "# TYPE lwsinit_phase gauge\n"
             "lwsinit_phase{phase=\"joining\"} 0\n"
             "lwsinit_phase{phase=\"running\"} 1\n"
             "# HELP lwsinit_member_heartbeat_age_seconds Seconds since each member's last "
             "heartbeat.\n"
             "# TYPE lwsinit_member_heartbeat_age_seconds gauge\n"
             "lwsinit_member_heartbeat_age_seconds{rank=\"1\",host=\"sglang-0-1\"} 0.25\n"
             "lwsinit_member_heartbeat_age_seconds{rank=\"2\",host=\"\"} +Inf\n"
             "# HELP lwsinit_signals_forwarded_total Signals forwarded to the engine.\n"
             "# TYPE lwsinit_signals_forwarded_total counter\n"
             "lwsinit_signals_forwarded_total 18446744073709551615\n"
             "# HELP lwsinit_upstream_last_error Help with a \\\\ backslash\\nand a newline.\n"
             "# TYPE lwsinit_upstream_last_error gauge\n"
             "lwsinit_upstream_last_error{error=\"say \\\"hi\\\"\\\\\\n\"} NaN\n",
             "the example set in the exposition format, escapes included");

  size_t len = b.len;
  TAP_OK(lwsi_metrics_family(&b, "0bad", LWSI_METRICS_GAUGE, NULL) == -EINVAL, "bad metric name");
  TAP_OK(lwsi_metrics_sample(&b, "a-b", NULL, 0, 1) == -EINVAL, "'-' is not allowed");
  TAP_OK(lwsi_metrics_sample(&b, "ok", (const struct lwsi_metrics_label[]){{"__x", "v"}}, 1, 1) ==
             -EINVAL, "label names starting with __ are reserved");
  TAP_OK(lwsi_metrics_sample(&b, "ok", (const struct lwsi_metrics_label[]){{"a:b", "v"}}, 1, 1) ==
             -EINVAL, "no ':' in label names");
  TAP_OK(b.len == len, "nothing is written for a bad name");
  lwsi_buf_reset(&b);
  TAP_OK(lwsi_metrics_family(&b, "ns:sub_total", LWSI_METRICS_UNTYPED, NULL) == 0,
         "':' in metric names, no HELP");
  TAP_STR_EQ(b.data, "# TYPE ns:sub_total untyped\n", "untyped without HELP");

  lwsi_buf_reset(&b);
  struct lwsi_http_server s;
  memset(&s, 0, sizeof(s));
  s.stats.accepted = 5;
  s.stats.evicted = 1;
  s.nconns = 2;
  TAP_OK(lwsi_http_metrics(&s, &b) == 0, "server metrics");
  TAP_OK(strstr(b.data, "\nlwsinit_http_connections 2\n") &&
             strstr(b.data, "\nlwsinit_http_connections_accepted_total 5\n") &&
             strstr(b.data, "\nlwsinit_http_connections_closed_total{reason=\"evicted\"} 1\n"),
         "server metrics values");
  lwsi_buf_free(&b);
}

int main(void)
{
  /* The test clients write to sockets the server closes; the agent's own
   * SIGPIPE handling is the supervisor's business. */
  signal(SIGPIPE, SIG_IGN);

  test_query();
  test_buf();
  test_metrics();

  uv_loop_init(&loop);
  uv_timer_init(&loop, &deadline_timer);
  uv_timer_init(&loop, &tick_timer);

  int rc = lwsi_http_init(&srv_a, &loop, NULL, handler, NULL);
  if (rc == 0)
    rc = lwsi_http_listen(&srv_a, "127.0.0.1", 0);
  TAP_OK(rc == 0, "server A listens (%s)", rc ? uv_strerror(rc) : "ok");
  port_a = lwsi_http_port(&srv_a);
  TAP_OK(port_a != 0, "port 0 binds a real port (%u)", port_a);

  struct lwsi_http_opts ob = {.timeout_ms = 300};
  rc = lwsi_http_init(&srv_b, &loop, &ob, handler, NULL);
  if (rc == 0)
    rc = lwsi_http_listen(&srv_b, "127.0.0.1", 0);
  port_b = lwsi_http_port(&srv_b);
  struct lwsi_http_opts oc = {.max_conns = 8};
  if (rc == 0)
    rc = lwsi_http_init(&srv_c, &loop, &oc, handler, NULL);
  if (rc == 0)
    rc = lwsi_http_listen(&srv_c, "127.0.0.1", 0);
  port_c = lwsi_http_port(&srv_c);
  TAP_OK(rc == 0, "servers B (300 ms timeout) and C (8 connections) listen");

  if (rc == 0) {
    test_basic();
    test_errors();
    test_http_features();
    test_slowloris();
    test_eviction();
    test_output_bound();
    test_probe_client();
    test_ipv6();
    test_listen_errors();
  }

  /* Close with a connection still open: the close must take it down. */
  struct tclient *open = exchange(port_a, "GET /livez HTTP/1.1\r\n\r\n", NULL, 1);
  TAP_OK(open->nresp == 1 && lwsi_http_connections(&srv_a) == 1, "a keep-alive connection is open");
  lwsi_http_close(&srv_a);
  lwsi_http_close(&srv_b);
  lwsi_http_close(&srv_c);
  TAP_OK(lwsi_http_connections(&srv_a) == 0, "close drops every connection");
  wait_for(client_gone, open, 2000);
  TAP_OK(open->eof, "the client sees the close");
  client_free(open);
  uv_close((uv_handle_t *)&deadline_timer, NULL);
  uv_close((uv_handle_t *)&tick_timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  TAP_OK(uv_loop_close(&loop) == 0, "the loop closes cleanly");
  return tap_done();
}
