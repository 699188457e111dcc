#include "lwsinit/http.h"

#include "lwsinit/metrics.h"
#include "lwsinit/text.h"

#include <errno.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Connections ----
 *
 * A connection moves through these states:
 *   OPEN      reading and answering requests;
 *   DRAINING  its last answer is queued (Connection: close, or an error):
 *             no more input is parsed; once written, the write side is shut;
 *   LINGER    FIN sent: input is read and thrown away until the peer
 *             closes or a short deadline passes. Closing a socket with
 *             unread input makes the kernel send RST, which can destroy the
 *             answer before the client reads it (the "lingering close" of
 *             RFC 9112 section 9.6);
 *   CLOSING   uv_close called; freed in its close callback.
 */
enum conn_state { ST_OPEN, ST_DRAINING, ST_LINGER, ST_CLOSING };

/* Why the parser was paused: http-parser runs callbacks in the middle of
 * its input, so the work is done after http_parser_execute returns. */
enum pause_why { PAUSE_NONE, PAUSE_HEADERS, PAUSE_MESSAGE, PAUSE_ERROR };

struct lwsi_http_conn {
  uv_tcp_t tcp;
  uv_shutdown_t shutdown_req;
  struct lwsi_http_server *srv;
  struct lwsi_http_conn *prev, *next; /* the server's LRU list */
  uint64_t deadline;                  /* loop time by which it must progress */
  http_parser parser;
  enum conn_state state;
  enum pause_why pause;
  bool reading;
  bool in_head;  /* between requests or inside a request's head */
  bool throttled; /* too much output queued: not parsing */
  bool eof;       /* the peer shut its write side */
  int error_status; /* an error found while parsing: answered, then closed */
  size_t head_bytes;
  uint64_t body_bytes;
  size_t out_pending; /* bytes handed to uv_write, not yet written */
  unsigned writes;    /* write requests in flight */
  size_t url_len;
  size_t rlen, roff; /* unparsed input is rbuf[roff, rlen) */
  char url[LWSI_HTTP_URL_MAX + 1];
  char rbuf[LWSI_HTTP_READ_BUF];
};

/* One answer on its way: the uv_write_t and the bytes in one allocation. */
struct out_req {
  uv_write_t req;
  struct lwsi_http_conn *conn;
  size_t len;
  char data[];
};

/* How long a closing connection waits for the peer's FIN at most. */
#define LINGER_MS 1000

static void conn_process(struct lwsi_http_conn *c);

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static void lru_unlink(struct lwsi_http_server *srv, struct lwsi_http_conn *c)
{
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->lru_head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    srv->lru_tail = c->prev;
  c->prev = c->next = NULL;
}

static void lru_push(struct lwsi_http_server *srv, struct lwsi_http_conn *c)
{
  c->prev = srv->lru_tail;
  c->next = NULL;
  if (srv->lru_tail)
    srv->lru_tail->next = c;
  else
    srv->lru_head = c;
  srv->lru_tail = c;
}

static void on_timer(uv_timer_t *t);

/* Makes sure the server's one timer fires by due. */
static void timer_arm(struct lwsi_http_server *srv, uint64_t due)
{
  if (srv->closing)
    return;
  if (uv_is_active((uv_handle_t *)&srv->timer) && srv->timer_due <= due)
    return;
  uint64_t now = uv_now(srv->loop);
  srv->timer_due = due;
  uv_timer_start(&srv->timer, on_timer, due > now ? due - now : 0, 0);
}

/* The connection made progress: it moves to the young end of the LRU list
 * and gets a new deadline. Only whole requests (and the start of a
 * lingering close) count, never single bytes: a client that trickles a
 * request byte by byte is closed after timeout_ms all the same. */
static void conn_touch(struct lwsi_http_conn *c, uint64_t ms)
{
  struct lwsi_http_server *srv = c->srv;
  lru_unlink(srv, c);
  lru_push(srv, c);
  c->deadline = uv_now(srv->loop) + ms;
  timer_arm(srv, c->deadline);
}

static void on_conn_closed(uv_handle_t *h)
{
  free(h->data);
}

static void conn_close(struct lwsi_http_conn *c)
{
  if (c->state == ST_CLOSING)
    return;
  c->state = ST_CLOSING;
  lru_unlink(c->srv, c);
  c->srv->nconns--;
  /* Writes still queued are cancelled (their callbacks run with
   * UV_ECANCELED) before on_conn_closed frees the connection. */
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_timer(uv_timer_t *t)
{
  struct lwsi_http_server *srv = t->data;
  uint64_t now = uv_now(srv->loop);
  uint64_t next = UINT64_MAX;
  /* A scan of at most max_conns entries per expiry: cheaper than a timer
   * per connection, and the list is short. */
  for (struct lwsi_http_conn *c = srv->lru_head, *n; c != NULL; c = n) {
    n = c->next;
    if (c->deadline <= now) {
      if (c->state == ST_OPEN || c->state == ST_DRAINING)
        srv->stats.timed_out++;
      conn_close(c);
    } else if (c->deadline < next) {
      next = c->deadline;
    }
  }
  if (next != UINT64_MAX)
    timer_arm(srv, next);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
  struct lwsi_http_conn *c = h->data;
  (void)hint;
  /* The read buffer lives in the connection: no allocation per read. While
   * lingering, input is discarded, so the whole buffer is reused. */
  if (c->state != ST_OPEN) {
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
    return;
  }
  *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(sizeof(c->rbuf) - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void read_start(struct lwsi_http_conn *c)
{
  if (c->reading || c->eof)
    return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
    conn_close(c);
    return;
  }
  c->reading = true;
}

static void read_stop(struct lwsi_http_conn *c)
{
  if (!c->reading)
    return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = false;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
  struct lwsi_http_conn *c = req->data;
  if (c->state == ST_CLOSING)
    return;
  if (status < 0 || c->eof) {
    conn_close(c);
    return;
  }
  c->state = ST_LINGER;
  conn_touch(c, min_u64(c->srv->opts.timeout_ms, LINGER_MS));
  read_start(c);
}

/* The last answer is written: shut the write side, then linger. */
static void conn_finish(struct lwsi_http_conn *c)
{
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
    conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
  struct out_req *o = (struct out_req *)req;
  struct lwsi_http_conn *c = o->conn;
  c->out_pending -= o->len;
  c->writes--;
  free(o);
  if (c->state == ST_CLOSING)
    return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->state == ST_DRAINING) {
    if (c->writes == 0)
      conn_finish(c);
    return;
  }
  /* Resume parsing once half of the output bound has drained. */
  if (c->throttled && c->out_pending <= c->srv->opts.max_output / 2) {
    c->throttled = false;
    conn_process(c);
  }
  if (c->state != ST_OPEN || c->throttled)
    return;
  if (!c->eof)
    read_start(c);
  else if (c->writes == 0)
    conn_close(c); /* the peer is done sending and has every answer */
}

static const char *status_text(int status)
{
  const char *s = http_status_str((enum http_status)status);
  return s != NULL && s[0] != '<' ? s : "Unknown"; /* http-parser says "<unknown>" */
}

/* Queues one answer. Every answer has a Content-Length (also HEAD's, of
 * the body it does not carry) and says "Connection: close" when the
 * connection ends after it. */
static void conn_send(struct lwsi_http_conn *c, int status, const char *ctype, const char *allow,
                      const char *body, size_t blen, bool head_only, bool close)
{
  struct lwsi_http_server *srv = c->srv;
  char head[512];
  bool http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;
  int hlen = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\n"
                      "Content-Type: %s\r\n"
                      "Content-Length: %zu\r\n"
                      "X-Content-Type-Options: nosniff\r\n"
                      "Cache-Control: no-store\r\n"
                      "%s%s%s"
                      "%s"
                      "\r\n",
                      status, status_text(status), ctype, blen, allow ? "Allow: " : "",
                      allow ? allow : "", allow ? "\r\n" : "",
                      close ? "Connection: close\r\n"
                            : (http10 ? "Connection: keep-alive\r\n" : ""));
  if (hlen < 0 || (size_t)hlen >= sizeof(head)) {
    conn_close(c);
    return;
  }
  size_t total = (size_t)hlen + (head_only ? 0 : blen);
  /* With nothing queued, write now: a probe's answer almost always fits in
   * the socket buffer, and then no write request is allocated and libuv
   * does not re-arm the descriptor for POLLOUT and back (one epoll_ctl per
   * answer, ~10% of a probe's cost measured in docs/benchmarks.md). Behind a
   * queued answer, never: answers leave in request order. */
  size_t done = 0;
  if (c->writes == 0) {
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)hlen),
                        uv_buf_init((char *)body, (unsigned)(head_only ? 0 : blen))};
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, bufs[1].len > 0 ? 2 : 1);
    if (n < 0 && n != UV_EAGAIN) {
      conn_close(c);
      return;
    }
    done = n > 0 ? (size_t)n : 0;
  }
  if (done < total) {
    size_t rest = total - done;
    struct out_req *o = malloc(sizeof(*o) + rest);
    if (o == NULL) {
      conn_close(c);
      return;
    }
    o->conn = c;
    o->len = rest;
    /* The part of head + body not written yet. */
    size_t skip = done;
    size_t hpart = skip < (size_t)hlen ? (size_t)hlen - skip : 0;
    memcpy(o->data, head + (size_t)hlen - hpart, hpart);
    skip = skip > (size_t)hlen ? skip - (size_t)hlen : 0;
    if (rest > hpart)
      memcpy(o->data + hpart, body + skip, rest - hpart);
    uv_buf_t b = uv_buf_init(o->data, (unsigned)rest);
    if (uv_write(&o->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
      free(o);
      conn_close(c);
      return;
    }
    c->out_pending += rest;
    c->writes++;
  }
  if (close) {
    /* Anything after this request is ignored: stop parsing and reading. */
    c->state = ST_DRAINING;
    read_stop(c);
    /* Written already: on_write will not run to finish it. */
    if (c->writes == 0)
      conn_finish(c);
  } else if (c->out_pending >= srv->opts.max_output) {
    /* Pipelined requests from a client that does not read its answers:
     * stop parsing (and reading) until the answers drain, so the queue per
     * connection stays bounded. */
    c->throttled = true;
    srv->stats.throttled++;
    read_stop(c);
  }
}

static void conn_reject(struct lwsi_http_conn *c, int status)
{
  char body[128];
  int n = snprintf(body, sizeof(body), "%d %s\n", status, status_text(status));
  c->srv->stats.rejected++;
  conn_send(c, status, LWSI_HTTP_CONTENT_TYPE_TEXT, NULL, body, (size_t)n,
            c->parser.method == HTTP_HEAD && status != 400, true);
}

/* Percent-decodes s[0..n) into out (may be s itself: it only shrinks).
 * plus: '+' is a space (query strings). Returns the length, or -1 for a
 * bad escape or a NUL byte. */
static long pct_decode(const char *s, size_t n, char *out, bool plus)
{
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '%') {
      int hi = i + 2 < n ? lwsi_text_hexval(s[i + 1]) : -1;
      int lo = hi >= 0 ? lwsi_text_hexval(s[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
    } else if (plus && ch == '+') {
      ch = ' ';
    }
    if (ch == '\0')
      return -1;
    out[o++] = ch;
  }
  return (long)o;
}

/* Hands one whole request to the handler and queues its answer. */
static void conn_dispatch(struct lwsi_http_conn *c)
{
  struct lwsi_http_server *srv = c->srv;
  http_parser *p = &c->parser;
  bool keep = http_should_keep_alive(p) && !p->upgrade;
  bool head = p->method == HTTP_HEAD;

  /* The decoded path and the query, NUL-terminated in place in url[]. */
  struct http_parser_url u;
  http_parser_url_init(&u);
  c->url[c->url_len] = '\0';
  if (c->url_len == 0 || http_parser_parse_url(c->url, c->url_len, 0, &u) != 0) {
    conn_reject(c, 400);
    return;
  }
  const char *path = "/";
  const char *query = NULL;
  if (u.field_set & (1u << UF_QUERY)) {
    char *q = c->url + u.field_data[UF_QUERY].off;
    q[u.field_data[UF_QUERY].len] = '\0';
    query = q;
  }
  if (u.field_set & (1u << UF_PATH)) {
    char *ps = c->url + u.field_data[UF_PATH].off;
    long n = pct_decode(ps, u.field_data[UF_PATH].len, ps, false);
    if (n < 0) {
      conn_reject(c, 400);
      return;
    }
    ps[n] = '\0';
    path = ps;
  }

  struct lwsi_http_request req = {
    .method = p->method == HTTP_GET ? LWSI_HTTP_GET : head ? LWSI_HTTP_HEAD : LWSI_HTTP_OTHER,
    .method_name = http_method_str((enum http_method)p->method),
    .path = path,
    .query = query,
  };
  lwsi_buf_reset(&srv->body);
  struct lwsi_http_response resp = {
    .status = 200,
    .content_type = LWSI_HTTP_CONTENT_TYPE_TEXT,
    .body = &srv->body,
  };
  srv->stats.requests++;
  srv->handler(srv->data, &req, &resp);

  const char *body = srv->body.data ? srv->body.data : "";
  size_t blen = srv->body.len;
  if (srv->body.err < 0 || resp.status < 100 || resp.status > 599) {
    resp.status = 500;
    resp.content_type = LWSI_HTTP_CONTENT_TYPE_TEXT;
    resp.allow = NULL;
    body = "500 Internal Server Error\n";
    blen = strlen(body);
  }
  conn_touch(c, srv->opts.timeout_ms);
  conn_send(c, resp.status, resp.content_type ? resp.content_type : LWSI_HTTP_CONTENT_TYPE_TEXT,
            resp.allow, body, blen, head, !keep || resp.close);
  /* Keep the scratch body from holding on to a rare huge answer. */
  if (srv->body.cap > (1u << 20))
    lwsi_buf_free(&srv->body);
}

/* ---- http-parser callbacks: note, pause, and let conn_process act ---- */

static int on_message_begin(http_parser *p)
{
  struct lwsi_http_conn *c = p->data;
  c->url_len = 0;
  c->body_bytes = 0;
  c->error_status = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
  struct lwsi_http_conn *c = p->data;
  if (c->error_status != 0)
    return 0;
  if (len > LWSI_HTTP_URL_MAX - c->url_len) {
    c->error_status = 414;
    return 0;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  return 0;
}

static int on_headers_complete(http_parser *p)
{
  struct lwsi_http_conn *c = p->data;
  c->in_head = false;
  /* Probes carry no body; a small one is read and ignored, a large one is
   * refused before it is read. */
  if (c->error_status == 0 && (p->flags & F_CONTENTLENGTH) && p->content_length > LWSI_HTTP_BODY_MAX)
    c->error_status = 413;
  c->pause = PAUSE_HEADERS;
  http_parser_pause(p, 1);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
  struct lwsi_http_conn *c = p->data;
  (void)at;
  c->body_bytes += len;
  if (c->body_bytes > LWSI_HTTP_BODY_MAX) { /* chunked */
    c->error_status = 413;
    c->pause = PAUSE_ERROR;
    http_parser_pause(p, 1);
  }
  return 0;
}

static int on_message_complete(http_parser *p)
{
  struct lwsi_http_conn *c = p->data;
  c->in_head = true;
  c->head_bytes = 0;
  c->pause = PAUSE_MESSAGE;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings parser_settings = {
  .on_message_begin = on_message_begin,
  .on_url = on_url,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

/* Parses what is buffered, one step (head, or whole request) at a time,
 * so that every request's head is measured on its own and answers go out
 * in request order. Stops when the input is used up, the connection stops
 * being OPEN, or its output queue is full. */
static void conn_process(struct lwsi_http_conn *c)
{
  struct lwsi_http_server *srv = c->srv;
  while (c->state == ST_OPEN && !c->throttled && c->roff < c->rlen) {
    bool was_head = c->in_head;
    c->pause = PAUSE_NONE;
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->rbuf + c->roff,
                                   c->rlen - c->roff);
    c->roff += n;
    /* Pausing at the end of the head means one call never spans a head
     * and anything after it: every byte of this call counts. */
    if (was_head)
      c->head_bytes += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->parser, 0);
    } else if (e != HPE_OK) {
      conn_reject(c, 400);
      break;
    }
    if (was_head && c->head_bytes > srv->opts.max_head) {
      conn_reject(c, 431);
      break;
    }
    if (c->error_status != 0) {
      conn_reject(c, c->error_status);
      break;
    }
    if (c->pause == PAUSE_MESSAGE)
      conn_dispatch(c);
  }
  if (c->roff == c->rlen)
    c->roff = c->rlen = 0;
  else if (c->roff > 0 && c->state == ST_OPEN) {
    memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
    c->rlen -= c->roff;
    c->roff = 0;
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct lwsi_http_conn *c = s->data;
  (void)buf;
  if (c->state == ST_CLOSING)
    return;
  if (nread < 0) {
    /* EOF: the peer sent all it will. Answers already queued still go
     * out; then the connection closes. Any other error: close now. */
    read_stop(c);
    if (nread != UV_EOF || c->state == ST_LINGER) {
      conn_close(c);
      return;
    }
    c->eof = true;
    if (c->state == ST_OPEN && !c->throttled && c->writes == 0)
      conn_close(c);
    return;
  }
  if (nread == 0 || c->state != ST_OPEN)
    return; /* lingering: discard */
  c->rlen += (size_t)nread;
  conn_process(c);
}

/* ---- The server ---- */

static void on_connection(uv_stream_t *server, int status);

static void on_reject_closed(uv_handle_t *h)
{
  struct lwsi_http_server *srv = h->data;
  srv->reject_busy = false;
  if (srv->accept_pending && !srv->closing) {
    srv->accept_pending = false;
    on_connection((uv_stream_t *)&srv->tcp, 0);
  }
}

/* No memory for a connection: accept it into the spare handle and close
 * it, so the listener keeps going (libuv stops watching a listener whose
 * connection was not accepted). */
static void reject_connection(struct lwsi_http_server *srv)
{
  srv->stats.accept_errors++;
  if (srv->reject_busy) {
    srv->accept_pending = true;
    return;
  }
  if (uv_tcp_init(srv->loop, &srv->reject) < 0)
    return;
  srv->reject.data = srv;
  srv->reject_busy = true;
  uv_accept((uv_stream_t *)&srv->tcp, (uv_stream_t *)&srv->reject);
  uv_close((uv_handle_t *)&srv->reject, on_reject_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
  struct lwsi_http_server *srv = server->data;
  if (status < 0 || srv->closing) {
    srv->stats.accept_errors++;
    return;
  }
  struct lwsi_http_conn *c = malloc(sizeof(*c));
  if (c == NULL) {
    reject_connection(srv);
    return;
  }
  memset(c, 0, offsetof(struct lwsi_http_conn, url));
  c->url[0] = '\0';
  c->srv = srv;
  if (uv_tcp_init(srv->loop, &c->tcp) < 0) {
    free(c);
    reject_connection(srv);
    return;
  }
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    srv->stats.accept_errors++;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    return;
  }
  srv->stats.accepted++;
  /* Full: the connection that made progress the longest ago goes, so that
   * idle connections can never lock out kubelet's next probe. */
  while (srv->nconns >= srv->opts.max_conns && srv->lru_head != NULL) {
    srv->stats.evicted++;
    conn_close(srv->lru_head);
  }
  srv->nconns++;
  lru_push(srv, c);
  c->state = ST_OPEN;
  c->in_head = true;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  /* Each answer is one write; without Nagle, pipelined answers are not held
   * back waiting for the client's delayed ACK. */
  uv_tcp_nodelay(&c->tcp, 1);
  conn_touch(c, srv->opts.timeout_ms);
  read_start(c);
}

int lwsi_http_init(struct lwsi_http_server *srv, uv_loop_t *loop, const struct lwsi_http_opts *opts,
                   lwsi_http_handler handler, void *data)
{
  memset(srv, 0, sizeof(*srv));
  srv->loop = loop;
  srv->handler = handler;
  srv->data = data;
  if (opts != NULL)
    srv->opts = *opts;
  if (srv->opts.max_conns == 0)
    srv->opts.max_conns = LWSI_HTTP_DEFAULT_MAX_CONNS;
  if (srv->opts.timeout_ms == 0)
    srv->opts.timeout_ms = LWSI_HTTP_DEFAULT_TIMEOUT_MS;
  if (srv->opts.max_head == 0)
    srv->opts.max_head = LWSI_HTTP_DEFAULT_MAX_HEAD;
  if (srv->opts.max_output == 0)
    srv->opts.max_output = LWSI_HTTP_DEFAULT_MAX_OUTPUT;
  if (handler == NULL)
    return -EINVAL;
  int rc = uv_tcp_init(loop, &srv->tcp);
  if (rc < 0)
    return rc;
  srv->tcp.data = srv;
  uv_timer_init(loop, &srv->timer);
  srv->timer.data = srv;
  srv->inited = true;
  return 0;
}

int lwsi_http_listen(struct lwsi_http_server *srv, const char *host, uint16_t port)
{
  char h[64];
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    host++;
    n -= 2;
  }
  if (!srv->inited || srv->closing || n >= sizeof(h))
    return -EINVAL;
  memcpy(h, host, n);
  h[n] = '\0';
  struct sockaddr_storage ss;
  if (uv_ip4_addr(h, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(h, port, (struct sockaddr_in6 *)&ss) != 0)
    return -EINVAL;
  int rc = uv_tcp_bind(&srv->tcp, (const struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->tcp, 511, on_connection);
  if (rc < 0)
    return rc;
  int len = sizeof(ss);
  rc = uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&ss, &len);
  if (rc < 0)
    return rc;
  srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
  return 0;
}

uint16_t lwsi_http_port(const struct lwsi_http_server *srv) { return srv->port; }

unsigned lwsi_http_connections(const struct lwsi_http_server *srv) { return srv->nconns; }

void lwsi_http_close(struct lwsi_http_server *srv)
{
  if (!srv->inited || srv->closing)
    return;
  srv->closing = true;
  while (srv->lru_head != NULL)
    conn_close(srv->lru_head);
  uv_close((uv_handle_t *)&srv->tcp, NULL);
  uv_close((uv_handle_t *)&srv->timer, NULL);
  lwsi_buf_free(&srv->body);
}

int lwsi_http_metrics(const struct lwsi_http_server *srv, struct lwsi_buf *out)
{
  const struct lwsi_http_stats *s = &srv->stats;
  lwsi_metrics_gauge(out, "lwsinit_http_connections", "Open connections to the probe server.",
                     (double)srv->nconns);
  lwsi_metrics_counter(out, "lwsinit_http_connections_accepted_total",
                       "Connections accepted by the probe server.", s->accepted);
  lwsi_metrics_family(out, "lwsinit_http_connections_closed_total", LWSI_METRICS_COUNTER,
                      "Connections the probe server closed early, by reason.");
  lwsi_metrics_sample_u64(out, "lwsinit_http_connections_closed_total",
                          (const struct lwsi_metrics_label[]){{"reason", "evicted"}}, 1,
                          s->evicted);
  lwsi_metrics_sample_u64(out, "lwsinit_http_connections_closed_total",
                          (const struct lwsi_metrics_label[]){{"reason", "timeout"}}, 1,
                          s->timed_out);
  lwsi_metrics_sample_u64(out, "lwsinit_http_connections_closed_total",
                          (const struct lwsi_metrics_label[]){{"reason", "bad_request"}}, 1,
                          s->rejected);
  lwsi_metrics_counter(out, "lwsinit_http_requests_total",
                       "Requests answered by the probe server.", s->requests);
  return out->err;
}

/* ---- Query strings ---- */

static void decode_into(const char *s, size_t n, char *out, size_t outlen)
{
  if (outlen == 0)
    return;
  char tmp[LWSI_HTTP_URL_MAX];
  long len = n <= sizeof(tmp) ? pct_decode(s, n, tmp, true) : -1;
  if (len < 0 || (size_t)len >= outlen) {
    out[0] = '\0';
    return;
  }
  memcpy(out, tmp, (size_t)len);
  out[len] = '\0';
}

bool lwsi_http_query_next(const char **pos, char *name, size_t namelen, char *value,
                          size_t valuelen)
{
  const char *p = *pos;
  if (p == NULL)
    return false;
  while (*p == '&')
    p++;
  if (*p == '\0') {
    *pos = p;
    return false;
  }
  const char *end = strchr(p, '&');
  if (end == NULL)
    end = p + strlen(p);
  const char *eq = memchr(p, '=', (size_t)(end - p));
  const char *nend = eq ? eq : end;
  decode_into(p, (size_t)(nend - p), name, namelen);
  if (eq)
    decode_into(eq + 1, (size_t)(end - eq - 1), value, valuelen);
  else if (valuelen > 0)
    value[0] = '\0';
  *pos = end;
  return true;
}

bool lwsi_http_query_has(const char *query, const char *name)
{
  char n[64], v[1];
  const char *pos = query;
  while (lwsi_http_query_next(&pos, n, sizeof(n), v, sizeof(v)))
    if (strcmp(n, name) == 0)
      return true;
  return false;
}

/* ---- The probe routes ---- */

/* The health body in the Kubernetes API server's format
 * (k8s.io/apiserver/pkg/server/healthz): with ?verbose one line per check,
 * "[+]name ok", "[+]name excluded: ok" or "[-]name failed: reason", then
 * "<endpoint> check passed" or "<endpoint> check failed". Unlike the API
 * server, failure reasons are shown: they are the group's state, not
 * secrets, and they are what a person running curl wants. Without
 * ?verbose: "ok", or one line naming the failed checks and why. */
static void render_health(const struct lwsi_http_probes *pr, enum lwsi_health_kind kind,
                          const struct lwsi_http_request *req, struct lwsi_http_response *resp)
{
  const char *endpoint = kind == LWSI_HEALTH_LIVE ? "livez" : "readyz";
  struct lwsi_health_list list;
  memset(&list, 0, sizeof(list));
  pr->checks(pr->data, kind, &list);
  if (list.n > LWSI_HEALTH_MAX_CHECKS)
    list.n = LWSI_HEALTH_MAX_CHECKS;

  /* ?exclude=name skips a check, as on the API server. */
  bool excluded[LWSI_HEALTH_MAX_CHECKS] = {false};
  char unknown[256] = "";
  size_t ulen = 0;
  bool verbose = false;
  char name[64], value[LWSI_HEALTH_NAME_MAX + 32];
  const char *pos = req->query;
  while (lwsi_http_query_next(&pos, name, sizeof(name), value, sizeof(value))) {
    if (strcmp(name, "verbose") == 0) {
      verbose = true;
    } else if (strcmp(name, "exclude") == 0) {
      size_t i;
      for (i = 0; i < list.n; i++)
        if (strcmp(list.checks[i].name, value) == 0)
          break;
      if (i < list.n) {
        excluded[i] = true;
      } else if (ulen < sizeof(unknown)) {
        int w = snprintf(unknown + ulen, sizeof(unknown) - ulen, "%s%c%s%c", ulen ? "," : "",
                         '"', value, '"');
        ulen = w < 0 ? sizeof(unknown) : ulen + (size_t)w;
      }
    }
  }

  bool ok = true;
  for (size_t i = 0; i < list.n; i++)
    if (!excluded[i] && !list.checks[i].ok)
      ok = false;
  struct lwsi_buf *b = resp->body;
  resp->status = ok ? 200 : 503;
  if (verbose) {
    for (size_t i = 0; i < list.n; i++) {
      const struct lwsi_health_check *c = &list.checks[i];
      if (excluded[i])
        lwsi_buf_printf(b, "[+]%s excluded: ok\n", c->name);
      else if (c->ok)
        lwsi_buf_printf(b, "[+]%s ok\n", c->name);
      else
        lwsi_buf_printf(b, "[-]%s failed: %s\n", c->name, c->reason);
    }
    if (ulen > 0)
      lwsi_buf_printf(b, "warn: some health checks cannot be excluded: no matches for %s\n",
                           unknown);
    lwsi_buf_printf(b, "%s check %s\n", endpoint, ok ? "passed" : "failed");
    return;
  }
  if (ok) {
    lwsi_buf_puts(b, "ok"); /* exactly the API server's body */
    return;
  }
  lwsi_buf_printf(b, "%s check failed:", endpoint);
  bool first = true;
  for (size_t i = 0; i < list.n; i++) {
    const struct lwsi_health_check *c = &list.checks[i];
    if (excluded[i] || c->ok)
      continue;
    lwsi_buf_printf(b, "%s %s: %s", first ? "" : ";", c->name, c->reason);
    first = false;
  }
  lwsi_buf_puts(b, "\n");
}

static void render_doc(int (*fn)(void *, struct lwsi_buf *), void *data,
                       struct lwsi_http_response *resp)
{
  if (fn(data, resp->body) < 0 || resp->body->err < 0) {
    resp->status = 500;
    lwsi_buf_reset(resp->body);
    lwsi_buf_puts(resp->body, "500 Internal Server Error\n");
    resp->content_type = LWSI_HTTP_CONTENT_TYPE_TEXT;
  }
}

/* The metrics writer has its own buffer (metrics.h); its text becomes the
 * body. */
static void render_metrics(const struct lwsi_http_probes *pr, struct lwsi_http_response *resp)
{
  int rc = pr->metrics(pr->data, resp->body);
  if (rc < 0 || resp->body->err < 0) {
    resp->status = 500;
    lwsi_buf_reset(resp->body);
    lwsi_buf_puts(resp->body, "500 Internal Server Error\n");
    resp->content_type = LWSI_HTTP_CONTENT_TYPE_TEXT;
  }
}

void lwsi_http_route_probes(void *probes, const struct lwsi_http_request *req,
                            struct lwsi_http_response *resp)
{
  const struct lwsi_http_probes *pr = probes;
  enum { R_NONE, R_LIVE, R_READY, R_STATUS, R_METRICS } r = R_NONE;
  if (strcmp(req->path, "/livez") == 0 && pr->checks != NULL)
    r = R_LIVE;
  else if (strcmp(req->path, "/readyz") == 0 && pr->checks != NULL)
    r = R_READY;
  else if (strcmp(req->path, "/status") == 0 && pr->status != NULL)
    r = R_STATUS;
  else if (strcmp(req->path, "/metrics") == 0 && pr->metrics != NULL)
    r = R_METRICS;

  if (r == R_NONE) {
    resp->status = 404;
    lwsi_buf_puts(resp->body, "404 page not found\n");
    return;
  }
  if (req->method == LWSI_HTTP_OTHER) {
    /* RFC 9110 section 15.5.6: a 405 lists the allowed methods. */
    resp->status = 405;
    resp->allow = "GET, HEAD";
    lwsi_buf_puts(resp->body, "405 method not allowed\n");
    return;
  }
  switch (r) {
  case R_LIVE:
    render_health(pr, LWSI_HEALTH_LIVE, req, resp);
    return;
  case R_READY:
    render_health(pr, LWSI_HEALTH_READY, req, resp);
    return;
  case R_STATUS:
    resp->content_type = LWSI_HTTP_CONTENT_TYPE_JSON;
    render_doc(pr->status, pr->data, resp);
    return;
  case R_METRICS:
    resp->content_type = LWSI_HTTP_CONTENT_TYPE_METRICS;
    render_metrics(pr, resp);
    return;
  case R_NONE:
    return;
  }
}
