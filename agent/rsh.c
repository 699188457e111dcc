/* Preset mpi's remote execution (include/lwsinit/rsh.h): the leader's
 * relay between `lwsinit rsh` clients on its status socket and the
 * members, each member's runner of the commands, the hostfile and the
 * launcher's environment. The app messages are in docs/protocol.md,
 * "lwsinit rsh"; who may ask what is in docs/security.md. */
#include "lwsinit/rsh.h"

#include "lwsinit/launcher.h"
#include "lwsinit/text.h"
#include "lwsinit/wire.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One command running on this agent: a member's, for the leader; or the
 * leader's own, for a request whose HOST is the leader. */
struct lwsi_rsh_proc {
  struct lwsi_rsh_proc *next;
  struct lwsi_rsh *s;
  uint32_t id;
  struct lwsi_rsh_req *req; /* leader: the client it runs for; NULL on a member */
  pid_t pid;                /* also its process group */
  uv_pipe_t pipes[2];       /* its stdout and stderr */
  bool open[2];
  bool exited, killed, done;
  int status;
  unsigned closing;
  char buf[LWSI_RSH_CHUNK];
};

/* Leader: one `lwsinit rsh` client. */
struct lwsi_rsh_req {
  struct lwsi_rsh_req *next;
  struct lwsi_rsh *s;
  uv_pipe_t pipe;
  uv_shutdown_t shut;
  uint32_t id;
  uint32_t rank;              /* where the command runs */
  struct lwsi_rsh_proc *proc; /* rank 0: the leader's own */
  bool started, ending, closing;
  size_t len;
  uint8_t hdr[LWSI_RSH_HDR];
  uint8_t *body; /* the frame being read */
  uint8_t rbuf[4096];
};

/* A frame to a client; for output from a member, the acknowledgement to
 * send once the client's socket took it. */
struct rsh_write {
  uv_write_t req;
  struct lwsi_rsh *s;
  uint32_t rank, id;
  size_t ack; /* output bytes this frame carries */
  uint8_t frame[];
};

static void emit(struct lwsi_rsh *s, enum lwsi_rsh_ev type, uint32_t id, pid_t pid, int code,
                 const char *text)
{
  struct lwsi_rsh_event ev = {type, id, pid, code, text != NULL ? text : ""};
  if (s->cb != NULL)
    s->cb(s, &ev);
}

/* ---- base64 (RFC 4648), for output in app messages ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n)
      v |= in[i + 2];
    out[o++] = b64[v >> 18 & 63];
    out[o++] = b64[v >> 12 & 63];
    out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? b64[v & 63] : '=';
  }
  out[o] = '\0';
  return o;
}

static int b64_val(char c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes into out (room for 3/4 of n); returns the length or -EINVAL. */
static ssize_t b64_decode(const char *in, size_t n, uint8_t *out)
{
  if (n % 4 != 0)
    return -EINVAL;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int v[4];
    for (int k = 0; k < 4; k++) {
      v[k] = in[i + k] == '=' && i + 4 == n && k >= 2 ? 0 : b64_val(in[i + k]);
      if (v[k] < 0)
        return -EINVAL;
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
    out[o++] = (uint8_t)(w >> 16);
    if (in[i + 2] != '=')
      out[o++] = (uint8_t)(w >> 8);
    if (in[i + 3] != '=')
      out[o++] = (uint8_t)w;
  }
  return (ssize_t)o;
}

/* ---- small JSON messages ---- */

/* Sends {"id":id,"<key>":<num>} (key NULL: {"id":id}) as kind: to rank
 * from the leader, to the leader from a worker. */
static int send_num(struct lwsi_rsh *s, uint32_t rank, const char *kind, uint32_t id,
                    const char *key, long long num, const char *text_key, const char *text)
{
  cJSON *o = cJSON_CreateObject();
  if (o == NULL)
    return -ENOMEM;
  cJSON_AddNumberToObject(o, "id", id);
  if (key != NULL)
    cJSON_AddNumberToObject(o, key, (double)num);
  if (text_key != NULL)
    cJSON_AddStringToObject(o, text_key, text);
  char *data = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (data == NULL)
    return -ENOMEM;
  int rc = s->leader ? lwsi_rdzv_app_send_to(s->rdzv, rank, kind, data)
                     : lwsi_rdzv_app_send(s->rdzv, kind, data);
  free(data);
  return rc;
}

static bool get_u32(const cJSON *o, const char *key, uint32_t *out)
{
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 4294967295.0)
    return false;
  *out = (uint32_t)v->valuedouble;
  return true;
}

/* ---- flow control ---- */

static void read_start(struct lwsi_rsh_proc *p);

static void pause_all(struct lwsi_rsh *s)
{
  s->paused = true;
  for (struct lwsi_rsh_proc *p = s->procs; p != NULL; p = p->next)
    for (int i = 0; i < 2; i++)
      if (p->open[i])
        uv_read_stop((uv_stream_t *)&p->pipes[i]);
}

static void acked(struct lwsi_rsh *s, size_t n)
{
  s->inflight = n > s->inflight ? 0 : s->inflight - n;
  if (!s->paused || s->inflight > LWSI_RSH_INFLIGHT_MAX / 2)
    return;
  s->paused = false;
  for (struct lwsi_rsh_proc *p = s->procs; p != NULL; p = p->next)
    read_start(p);
}

/* ---- the leader's clients ---- */

static void req_closed(uv_handle_t *h)
{
  struct lwsi_rsh_req *q = h->data;
  free(q->body);
  free(q);
}

static void req_unlink(struct lwsi_rsh_req *q)
{
  struct lwsi_rsh *s = q->s;
  for (struct lwsi_rsh_req **pp = &s->reqs; *pp != NULL; pp = &(*pp)->next)
    if (*pp == q) {
      *pp = q->next;
      s->nreqs--;
      break;
    }
}

/* Closes the client's socket at once (pending writes are cancelled, and
 * their callbacks still acknowledge the output they carried). */
static void req_close(struct lwsi_rsh_req *q)
{
  if (q->closing)
    return;
  q->closing = true;
  req_unlink(q);
  if (q->proc != NULL)
    q->proc->req = NULL;
  uv_close((uv_handle_t *)&q->pipe, req_closed);
}

static void on_write(uv_write_t *w, int status)
{
  (void)status;
  struct rsh_write *r = (struct rsh_write *)w;
  if (r->ack > 0) {
    if (r->rank == 0)
      acked(r->s, r->ack);
    else
      (void)send_num(r->s, r->rank, "rsh_ack", r->id, "n", (long long)r->ack, NULL, NULL);
  }
  free(r);
}

/* Queues one frame to the client; ack: output bytes it carries, from rank. */
static int req_write(struct lwsi_rsh_req *q, uint8_t type, const void *data, size_t n,
                     uint32_t rank, uint32_t id, size_t ack)
{
  struct rsh_write *w = malloc(sizeof(*w) + LWSI_RSH_HDR + n);
  if (w == NULL)
    return -ENOMEM;
  w->s = q->s;
  w->rank = rank;
  w->id = id;
  w->ack = ack;
  w->frame[0] = type;
  w->frame[1] = (uint8_t)(n >> 24);
  w->frame[2] = (uint8_t)(n >> 16);
  w->frame[3] = (uint8_t)(n >> 8);
  w->frame[4] = (uint8_t)n;
  if (n > 0)
    memcpy(w->frame + LWSI_RSH_HDR, data, n);
  uv_buf_t buf = uv_buf_init((char *)w->frame, (unsigned)(LWSI_RSH_HDR + n));
  int rc = uv_write(&w->req, (uv_stream_t *)&q->pipe, &buf, 1, on_write);
  if (rc < 0) {
    on_write(&w->req, rc);
    return rc;
  }
  return 0;
}

static void on_shutdown(uv_shutdown_t *sh, int status)
{
  (void)status;
  req_close(sh->data);
}

/* The last frame went out: close once it is written. */
static void req_end(struct lwsi_rsh_req *q)
{
  if (q->ending || q->closing)
    return;
  q->ending = true;
  q->shut.data = q;
  if (uv_shutdown(&q->shut, (uv_stream_t *)&q->pipe, on_shutdown) < 0)
    req_close(q);
}

static void req_fail(struct lwsi_rsh_req *q, const char *why)
{
  req_write(q, LWSI_RSH_F_FAIL, why, strlen(why), 0, 0, 0);
  req_end(q);
}

static void req_refuse(struct lwsi_rsh_req *q, const char *why)
{
  q->s->refused++;
  emit(q->s, LWSI_RSH_EV_REFUSED, q->id, 0, 0, why);
  req_fail(q, why);
}

static struct lwsi_rsh_req *req_find(struct lwsi_rsh *s, uint32_t id)
{
  for (struct lwsi_rsh_req *q = s->reqs; q != NULL; q = q->next)
    if (q->id == id)
      return q;
  return NULL;
}

/* ---- commands run here ---- */

static void proc_closed(uv_handle_t *h)
{
  struct lwsi_rsh_proc *p = h->data;
  /* Freed by the last close once it is off the list (proc_finish). */
  if (--p->closing == 0 && p->done)
    free(p);
}

static void proc_unlink(struct lwsi_rsh_proc *p)
{
  struct lwsi_rsh *s = p->s;
  for (struct lwsi_rsh_proc **pp = &s->procs; *pp != NULL; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
}

static void pipe_close(struct lwsi_rsh_proc *p, int i)
{
  if (!p->open[i])
    return;
  p->open[i] = false;
  p->closing++;
  uv_close((uv_handle_t *)&p->pipes[i], proc_closed);
}

static void on_defer(uv_timer_t *t);

/* The rest of an end (a reap, the last pipe closed) runs on the loop. */
static void schedule(struct lwsi_rsh *s)
{
  if (s->defer_open)
    (void)uv_timer_start(&s->defer, on_defer, 0, 0);
}

/* Output of p's fd (1 or 2) for the leader or the local client. */
static void proc_output(struct lwsi_rsh_proc *p, int fd, const uint8_t *data, size_t n)
{
  struct lwsi_rsh *s = p->s;
  if (p->killed)
    return;
  if (s->leader) {
    if (p->req == NULL)
      return;
    if (req_write(p->req, fd == 1 ? LWSI_RSH_F_STDOUT : LWSI_RSH_F_STDERR, data, n, 0, p->id, n) ==
        0)
      s->inflight += n;
    return;
  }
  char msg[64 + LWSI_RSH_CHUNK / 3 * 4 + 8];
  int o = snprintf(msg, sizeof(msg), "{\"id\":%u,\"fd\":%d,\"b\":\"", p->id, fd);
  o += (int)b64_encode(data, n, msg + o);
  memcpy(msg + o, "\"}", 3);
  if (lwsi_rdzv_app_send(s->rdzv, "rsh_out", msg) == 0)
    s->inflight += n;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
  (void)hint;
  struct lwsi_rsh_proc *p = h->data;
  *buf = uv_buf_init(p->buf, sizeof(p->buf));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
  struct lwsi_rsh_proc *p = st->data;
  int i = st == (uv_stream_t *)&p->pipes[0] ? 0 : 1;
  if (n > 0) {
    proc_output(p, i + 1, (const uint8_t *)buf->base, (size_t)n);
    if (p->s->inflight > LWSI_RSH_INFLIGHT_MAX)
      pause_all(p->s);
    return;
  }
  if (n == 0)
    return;
  pipe_close(p, i);
  schedule(p->s);
}

static void read_start(struct lwsi_rsh_proc *p)
{
  for (int i = 0; i < 2; i++)
    if (p->open[i])
      uv_read_start((uv_stream_t *)&p->pipes[i], on_alloc, on_read);
}

static int open_pipe(uv_loop_t *loop, uv_pipe_t *pp, int fd, struct lwsi_rsh_proc *p)
{
  int rc = uv_pipe_init(loop, pp, 0);
  if (rc < 0)
    return rc;
  pp->data = p;
  rc = uv_pipe_open(pp, fd);
  if (rc < 0)
    uv_close((uv_handle_t *)pp, NULL);
  return rc;
}

/* Starts `sh -c cmd` with stdin from /dev/null, in a process group of its
 * own (the launcher's), its stdout and stderr read on the loop. */
static int proc_start(struct lwsi_rsh *s, uint32_t id, const char *cmd, struct lwsi_rsh_proc **out)
{
  struct lwsi_rsh_proc *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  p->s = s;
  p->id = id;
  int fo[2] = {-1, -1}, fe[2] = {-1, -1};
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int rc = 0;
  if (devnull < 0 || pipe2(fo, O_CLOEXEC) < 0 || pipe2(fe, O_CLOEXEC) < 0)
    rc = -errno;
  if (rc == 0) {
    char *const argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    rc = lwsi_launcher_spawn_io3(argv, s->envp, s->mask, devnull, fo[1], fe[1], &p->pid);
  }
  if (devnull >= 0)
    close(devnull);
  if (fo[1] >= 0)
    close(fo[1]);
  if (fe[1] >= 0)
    close(fe[1]);
  /* An exec that failed left a process that exits 127 or 126: it is
   * reaped and reported like any other. */
  if (rc < 0 && p->pid <= 0) {
    if (fo[0] >= 0)
      close(fo[0]);
    if (fe[0] >= 0)
      close(fe[0]);
    free(p);
    return rc;
  }
  p->next = s->procs;
  s->procs = p;
  int fds[2] = {fo[0], fe[0]};
  for (int i = 0; i < 2; i++) {
    if (open_pipe(s->loop, &p->pipes[i], fds[i], p) == 0)
      p->open[i] = true;
    else
      close(fds[i]);
  }
  if (!s->paused)
    read_start(p);
  emit(s, LWSI_RSH_EV_STARTED, id, p->pid, 0, cmd);
  *out = p;
  return 0;
}

/* Every pipe closed and the process reaped: the exit status goes out. */
static void proc_finish(struct lwsi_rsh_proc *p)
{
  struct lwsi_rsh *s = p->s;
  p->done = true;
  int code = WIFSIGNALED(p->status) ? 128 + WTERMSIG(p->status) : WEXITSTATUS(p->status);
  emit(s, LWSI_RSH_EV_ENDED, p->id, p->pid, code, "");
  if (!p->killed) {
    if (s->leader && p->req != NULL) {
      uint8_t c[4] = {(uint8_t)(code >> 24), (uint8_t)(code >> 16), (uint8_t)(code >> 8),
                      (uint8_t)code};
      req_write(p->req, LWSI_RSH_F_EXIT, c, 4, 0, 0, 0);
      req_end(p->req);
    } else if (!s->leader) {
      (void)send_num(s, 0, "rsh_exit", p->id, "code", code, NULL, NULL);
    }
  }
  if (p->req != NULL)
    p->req->proc = NULL;
  proc_unlink(p);
  for (int i = 0; i < 2; i++)
    pipe_close(p, i);
  if (p->closing == 0)
    free(p);
}

static void on_defer(uv_timer_t *t)
{
  struct lwsi_rsh *s = t->data;
  for (struct lwsi_rsh_proc *p = s->procs, *next; p != NULL; p = next) {
    next = p->next;
    if (p->exited && !p->open[0] && !p->open[1] && !p->done)
      proc_finish(p);
  }
}

static void proc_kill(struct lwsi_rsh_proc *p, int sig)
{
  if (p->pid > 0 && !p->exited)
    (void)kill(-p->pid, sig);
}

static struct lwsi_rsh_proc *proc_find(struct lwsi_rsh *s, uint32_t id)
{
  for (struct lwsi_rsh_proc *p = s->procs; p != NULL; p = p->next)
    if (p->id == id)
      return p;
  return NULL;
}

bool lwsi_rsh_reaped(struct lwsi_rsh *s, pid_t pid, int status)
{
  for (struct lwsi_rsh_proc *p = s->procs; p != NULL; p = p->next) {
    if (p->pid == pid && !p->exited) {
      p->exited = true;
      p->status = status;
      schedule(s);
      return true;
    }
  }
  return false;
}

/* ---- the leader's relay ---- */

/* The rank whose address is host, 0 for the leader itself; -1: none. */
static int64_t member_of(struct lwsi_rsh *s, const char *host)
{
  if (s->rdzv == NULL)
    return strcmp(host, "127.0.0.1") == 0 || strcmp(host, "localhost") == 0 ? 0 : -1;
  uint32_t n = lwsi_rdzv_size(s->rdzv);
  for (uint32_t i = 0; i < n; i++) {
    struct lwsi_rdzv_member m;
    if (lwsi_rdzv_member(s->rdzv, i, &m) == 0 && strcmp(m.addr, host) == 0)
      return i;
  }
  return -1;
}

static void member_list(struct lwsi_rsh *s, char *buf, size_t len)
{
  size_t o = 0;
  buf[0] = '\0';
  uint32_t n = s->rdzv != NULL ? lwsi_rdzv_size(s->rdzv) : 0;
  for (uint32_t i = 0; i < n && o + 1 < len; i++) {
    struct lwsi_rdzv_member m;
    if (lwsi_rdzv_member(s->rdzv, i, &m) == 0) {
      int k = snprintf(buf + o, len - o, "%s%s", i ? ", " : "", m.addr);
      if (k < 0)
        break;
      o += (size_t)k;
    }
  }
}

static void req_request(struct lwsi_rsh_req *q, const uint8_t *body, size_t n)
{
  struct lwsi_rsh *s = q->s;
  char why[512];
  const uint8_t *nul = memchr(body, '\0', n);
  if (nul == NULL || memchr(nul + 1, '\0', n - (size_t)(nul - body) - 1) != NULL) {
    req_refuse(q, "refused: a malformed request");
    return;
  }
  const char *host = (const char *)body;
  char *cmd = strndup((const char *)nul + 1, n - (size_t)(nul - body) - 1);
  if (cmd == NULL) {
    req_fail(q, "the leader's agent is out of memory");
    return;
  }
  int64_t rank = -1;
  if (!s->enabled)
    lwsi_text_printf(why, sizeof(why), "refused: this agent's --preset is not mpi");
  else if (!s->leader)
    lwsi_text_printf(why, sizeof(why),
                     "refused: this agent is not the group's leader (only the leader's agent "
                     "relays lwsinit rsh)");
  else if (!s->serving)
    lwsi_text_printf(why, sizeof(why), "refused: the group has not formed yet");
  else if ((rank = member_of(s, host)) < 0) {
    char list[256];
    member_list(s, list, sizeof(list));
    lwsi_text_printf(why, sizeof(why), "refused: %s is not a member's address (members: %s)",
                     host, list);
  } else
    why[0] = '\0';
  if (why[0] != '\0') {
    free(cmd);
    req_refuse(q, why);
    return;
  }
  q->rank = (uint32_t)rank;
  q->started = true;
  s->served++;
  int rc;
  if (rank == 0) {
    rc = proc_start(s, q->id, cmd, &q->proc);
    if (rc == 0)
      q->proc->req = q;
  } else {
    cJSON *o = cJSON_CreateObject();
    char *data = NULL;
    if (o != NULL) {
      cJSON_AddNumberToObject(o, "id", q->id);
      cJSON_AddStringToObject(o, "cmd", cmd);
      data = cJSON_PrintUnformatted(o);
      cJSON_Delete(o);
    }
    rc = data == NULL ? -ENOMEM : lwsi_rdzv_app_send_to(s->rdzv, (uint32_t)rank, "rsh_run", data);
    free(data);
  }
  free(cmd);
  if (rc == -EINVAL)
    req_refuse(q, "refused: the command is too long for the relay (at most about 7 KiB of "
                  "UTF-8 text)");
  else if (rc < 0) {
    lwsi_text_printf(why, sizeof(why), "cannot run the command on %s: %s", host, strerror(-rc));
    req_fail(q, why);
  }
}

static void req_signal(struct lwsi_rsh_req *q, int sig)
{
  if (!q->started || sig <= 0 || sig >= 65)
    return;
  if (q->rank == 0) {
    if (q->proc != NULL)
      proc_kill(q->proc, sig);
  } else {
    (void)send_num(q->s, q->rank, "rsh_sig", q->id, "sig", sig, NULL, NULL);
  }
}

/* The client went away before the end: what it ran goes too. */
static void req_gone(struct lwsi_rsh_req *q)
{
  if (q->started && !q->ending) {
    if (q->rank == 0 && q->proc != NULL) {
      q->proc->killed = true;
      proc_kill(q->proc, SIGKILL);
    } else if (q->rank > 0) {
      (void)send_num(q->s, q->rank, "rsh_kill", q->id, NULL, 0, NULL, NULL);
    }
  }
  req_close(q);
}

static void req_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
  (void)hint;
  struct lwsi_rsh_req *q = h->data;
  *buf = uv_buf_init((char *)q->rbuf, sizeof(q->rbuf));
}

static void req_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
  struct lwsi_rsh_req *q = st->data;
  if (n < 0) {
    req_gone(q);
    return;
  }
  const uint8_t *in = (const uint8_t *)buf->base;
  size_t left = (size_t)n;
  while (left > 0 && !q->closing) {
    if (q->len < LWSI_RSH_HDR) {
      q->hdr[q->len++] = *in++;
      left--;
      if (q->len < LWSI_RSH_HDR)
        continue;
    }
    size_t plen = (size_t)q->hdr[1] << 24 | (size_t)q->hdr[2] << 16 | (size_t)q->hdr[3] << 8 |
                  q->hdr[4];
    if (plen > LWSI_RSH_REQUEST_MAX || (q->hdr[0] != LWSI_RSH_F_REQUEST &&
                                        q->hdr[0] != LWSI_RSH_F_SIGNAL) ||
        (q->hdr[0] == LWSI_RSH_F_REQUEST && q->started)) {
      req_gone(q);
      return;
    }
    if (q->body == NULL && (q->body = malloc(plen + 1)) == NULL) {
      req_gone(q);
      return;
    }
    size_t have = q->len - LWSI_RSH_HDR;
    size_t take = plen - have < left ? plen - have : left;
    memcpy(q->body + have, in, take);
    in += take;
    left -= take;
    q->len += take;
    if (q->len - LWSI_RSH_HDR < plen)
      continue;
    uint8_t type = q->hdr[0];
    uint8_t *body = q->body;
    q->body = NULL;
    q->len = 0;
    if (type == LWSI_RSH_F_REQUEST)
      req_request(q, body, plen);
    else if (plen == 1)
      req_signal(q, body[0]);
    free(body);
  }
}

void lwsi_rsh_accept(void *data, int fd)
{
  struct lwsi_rsh *s = data;
  struct lwsi_rsh_req *q = calloc(1, sizeof(*q));
  if (q == NULL) {
    close(fd);
    return;
  }
  q->s = s;
  q->id = ++s->next_id;
  if (uv_pipe_init(s->loop, &q->pipe, 0) < 0) {
    free(q);
    close(fd);
    return;
  }
  q->pipe.data = q;
  q->next = s->reqs;
  s->reqs = q;
  s->nreqs++;
  if (uv_pipe_open(&q->pipe, fd) < 0) {
    close(fd);
    req_close(q);
    return;
  }
  if (s->nreqs > LWSI_RSH_MAX_REQUESTS) {
    req_refuse(q, "refused: too many lwsinit rsh requests at once");
    return;
  }
  if (uv_read_start((uv_stream_t *)&q->pipe, req_alloc, req_read) < 0)
    req_close(q);
}

void lwsi_rsh_member_lost(struct lwsi_rsh *s, uint32_t rank)
{
  char why[128];
  for (struct lwsi_rsh_req *q = s->reqs, *next; q != NULL; q = next) {
    next = q->next;
    if (q->started && q->rank == rank && !q->ending) {
      lwsi_text_printf(why, sizeof(why), "lost the member (rank %u) that ran the command", rank);
      req_fail(q, why);
    }
  }
}

int lwsi_rsh_group_exit(struct lwsi_rsh *s, int code)
{
  if (!s->enabled || !s->leader || s->rdzv == NULL)
    return 0;
  char data[32];
  lwsi_text_printf(data, sizeof(data), "{\"code\":%d}", code);
  return lwsi_rdzv_app_broadcast(s->rdzv, "mpi_exit", data);
}

/* ---- app messages ---- */

/* Leader: a member's output, exit status or failure for request id. */
static void leader_message(struct lwsi_rsh *s, uint32_t rank, const char *kind, const cJSON *o)
{
  uint32_t id;
  if (!get_u32(o, "id", &id))
    return;
  struct lwsi_rsh_req *q = req_find(s, id);
  if (q != NULL && (q->rank != rank || q->closing))
    q = NULL;
  if (strcmp(kind, "rsh_out") == 0) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "b");
    uint32_t fd;
    if (!cJSON_IsString(b) || !get_u32(o, "fd", &fd))
      return;
    size_t n = strlen(b->valuestring);
    uint8_t bytes[LWSI_RSH_CHUNK + 4];
    ssize_t len = n / 4 * 3 <= sizeof(bytes) ? b64_decode(b->valuestring, n, bytes) : -EINVAL;
    if (len < 0)
      return;
    /* Output for a client that is gone is acknowledged at once: the
     * member counts it in flight until we do. */
    if (q == NULL || q->ending ||
        req_write(q, fd == 2 ? LWSI_RSH_F_STDERR : LWSI_RSH_F_STDOUT, bytes, (size_t)len, rank, id,
                  (size_t)len) < 0)
      (void)send_num(s, rank, "rsh_ack", id, "n", len, NULL, NULL);
  } else if (strcmp(kind, "rsh_exit") == 0 && q != NULL) {
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(o, "error");
    uint32_t code = 255;
    if (cJSON_IsString(err)) {
      req_fail(q, err->valuestring);
      return;
    }
    get_u32(o, "code", &code);
    uint8_t c[4] = {(uint8_t)(code >> 24), (uint8_t)(code >> 16), (uint8_t)(code >> 8),
                    (uint8_t)code};
    req_write(q, LWSI_RSH_F_EXIT, c, 4, 0, 0, 0);
    req_end(q);
  }
}

/* Worker: the leader's requests. */
static void worker_message(struct lwsi_rsh *s, const char *kind, const cJSON *o)
{
  if (strcmp(kind, "mpi_exit") == 0) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "code");
    emit(s, LWSI_RSH_EV_GROUP_EXIT, 0, 0, cJSON_IsNumber(c) ? c->valueint : 1, "");
    return;
  }
  uint32_t id;
  if (!get_u32(o, "id", &id))
    return;
  struct lwsi_rsh_proc *p = proc_find(s, id);
  if (strcmp(kind, "rsh_run") == 0) {
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(o, "cmd");
    if (p != NULL || !cJSON_IsString(cmd))
      return;
    char why[256];
    int rc = s->enabled && s->serving ? proc_start(s, id, cmd->valuestring, &p) : -EPERM;
    if (rc < 0) {
      lwsi_text_printf(why, sizeof(why), "cannot start /bin/sh on the member: %s",
                       rc == -EPERM ? "this member's --preset is not mpi" : strerror(-rc));
      emit(s, LWSI_RSH_EV_ERROR, id, 0, 0, why);
      (void)send_num(s, 0, "rsh_exit", id, NULL, 0, "error", why);
    }
  } else if (strcmp(kind, "rsh_ack") == 0) {
    uint32_t n;
    if (get_u32(o, "n", &n))
      acked(s, n);
  } else if (strcmp(kind, "rsh_sig") == 0 && p != NULL) {
    uint32_t sig;
    if (get_u32(o, "sig", &sig) && sig > 0 && sig < 65)
      proc_kill(p, (int)sig);
  } else if (strcmp(kind, "rsh_kill") == 0 && p != NULL) {
    p->killed = true;
    proc_kill(p, SIGKILL);
  }
}

bool lwsi_rsh_message(struct lwsi_rsh *s, const struct lwsi_rdzv_event *ev)
{
  if (strncmp(ev->kind, "rsh_", 4) != 0 && strcmp(ev->kind, "mpi_exit") != 0)
    return false;
  cJSON *o = cJSON_Parse(ev->data);
  if (o == NULL)
    return true;
  if (s->leader && ev->rank > 0)
    leader_message(s, (uint32_t)ev->rank, ev->kind, o);
  else if (!s->leader && ev->rank == 0)
    worker_message(s, ev->kind, o);
  cJSON_Delete(o);
  return true;
}

/* ---- set-up, hostfile, environment, close ---- */

int lwsi_rsh_init(struct lwsi_rsh *s, uv_loop_t *loop, bool enabled, bool leader,
                  struct lwsi_rdzv *rdzv, char *const *envp, const sigset_t *mask,
                  lwsi_rsh_cb cb)
{
  void *data = s->data;
  memset(s, 0, sizeof(*s));
  s->data = data;
  s->loop = loop;
  s->enabled = enabled;
  s->leader = leader;
  s->rdzv = rdzv;
  s->envp = envp;
  s->mask = mask;
  s->cb = cb;
  int rc = uv_timer_init(loop, &s->defer);
  if (rc < 0)
    return rc;
  s->defer.data = s;
  s->defer_open = true;
  return 0;
}

void lwsi_rsh_serve(struct lwsi_rsh *s) { s->serving = true; }

int lwsi_rsh_hostfile_path(const char *sock, char *buf, size_t len)
{
  const char *slash = strrchr(sock, '/');
  size_t dir = slash != NULL ? (size_t)(slash - sock) : 0;
  int n = snprintf(buf, len, "%.*s%smpi-hostfile", (int)dir, sock, slash != NULL ? "/" : "");
  return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int lwsi_rsh_hostfile(const struct lwsi_rsh *s, const char *path, const char *self,
                      unsigned slots)
{
  char tmp[4096];
  if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
    return -ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return -errno;
  if (slots == 0)
    slots = 1;
  int rc = dprintf(fd, "%s slots=%u\n", self, slots) < 0 ? -EIO : 0;
  uint32_t n = s->rdzv != NULL ? lwsi_rdzv_size(s->rdzv) : 1;
  for (uint32_t i = 1; i < n && rc == 0; i++) {
    struct lwsi_rdzv_member m;
    if (lwsi_rdzv_member(s->rdzv, i, &m) == 0 && dprintf(fd, "%s slots=%u\n", m.addr, slots) < 0)
      rc = -EIO;
  }
  if (rc == 0 && fchmod(fd, 0644) < 0)
    rc = -errno;
  if (close(fd) < 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) < 0)
    rc = -errno;
  if (rc < 0)
    unlink(tmp);
  return rc;
}

static bool env_has(char *const *env, const char *name)
{
  size_t n = strlen(name);
  for (size_t i = 0; env[i] != NULL; i++)
    if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
      return true;
  return false;
}

int lwsi_rsh_env(char *const *env, const char *exe, const char *sock, char ***out, char **added)
{
  /* Open MPI 4.1 splits plm_rsh_agent on spaces and runs the first word
   * with the rest as its arguments (orte/mca/plm/rsh/plm_rsh_module.c,
   * rsh_init: opal_argv_split(agent, ' ')); Open MPI 5 reads the same
   * from PRRTE's name. Tree spawn would have a member's daemon start
   * others through `lwsinit rsh` on that member, which only the leader
   * relays. */
  static const char *const names[] = {"OMPI_MCA_plm_rsh_agent", "PRTE_MCA_plm_rsh_agent",
                                      "OMPI_MCA_plm_rsh_no_tree_spawn",
                                      "PRTE_MCA_plm_rsh_no_tree_spawn"};
  static const char sock_var[] = "LWSINIT_STATUS_SOCKET";
  size_t n = 0;
  while (env[n] != NULL)
    n++;
  size_t need = strlen(sock_var) + strlen(sock) + 2;
  for (size_t i = 0; i < 4; i++)
    need += strlen(names[i]) + strlen(exe) + 8;
  char **res = calloc(n + 6, sizeof(*res));
  char *buf = malloc(need);
  if (res == NULL || buf == NULL) {
    free(res);
    free(buf);
    return -ENOMEM;
  }
  /* `lwsinit rsh` finds this agent by LWSINIT_STATUS_SOCKET: the agent's
   * own socket, whatever the variable said (--status-socket wins over
   * it). */
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(env[i], sock_var, sizeof(sock_var) - 1) != 0 || env[i][sizeof(sock_var) - 1] != '=')
      res[m++] = env[i];
  size_t o = 0;
  res[m++] = buf;
  o += (size_t)sprintf(buf, "%s=%s", sock_var, sock) + 1;
  for (size_t i = 0; i < 4; i++) {
    if (env_has(env, names[i]))
      continue;
    int k = i < 2 ? sprintf(buf + o, "%s=%s rsh", names[i], exe) : sprintf(buf + o, "%s=1", names[i]);
    res[m++] = buf + o;
    o += (size_t)k + 1;
  }
  res[m] = NULL;
  *out = res;
  *added = buf;
  return 0;
}

void lwsi_rsh_close(struct lwsi_rsh *s)
{
  s->cb = NULL; /* nothing more to report */
  while (s->reqs != NULL)
    req_close(s->reqs);
  for (struct lwsi_rsh_proc *p = s->procs, *next; p != NULL; p = next) {
    next = p->next;
    proc_kill(p, SIGKILL);
    p->exited = true;
    p->killed = true;
    proc_finish(p);
  }
  if (s->defer_open) {
    s->defer_open = false;
    uv_close((uv_handle_t *)&s->defer, NULL);
  }
}
