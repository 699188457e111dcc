/* Owns running the GPU check as the agent's child (include/lwsinit/gpurun.h). */
#include "lwsinit/gpurun.h"

#include "lwsinit/launcher.h"
#include "lwsinit/text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void maybe_gone(struct lwsi_gpurun *r)
{
  if (r->out_eof && r->exited && !r->gone_sent) {
    r->gone_sent = true;
    if (r->timer_open)
      uv_timer_stop(&r->kill_timer);
    r->cb(r, LWSI_GPURUN_GONE);
  }
}

static void take_result(struct lwsi_gpurun *r, cJSON *ev, const char *line)
{
  r->have_result = true;
  r->ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev, "ok"));
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(ev, "error");
  lwsi_text_copy(r->error, sizeof(r->error), cJSON_IsString(err) ? err->valuestring : "");
  const cJSON *devs = cJSON_GetObjectItemCaseSensitive(ev, "devices");
  r->ndevices = cJSON_IsArray(devs) ? (unsigned)cJSON_GetArraySize(devs) : 0;
  const cJSON *d0 = cJSON_IsArray(devs) ? cJSON_GetArrayItem(devs, 0) : NULL;
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(d0, "name");
  lwsi_text_copy(r->model, sizeof(r->model), cJSON_IsString(name) ? name->valuestring : "");
  const cJSON *bw = cJSON_GetObjectItemCaseSensitive(ev, "busbw_gbps");
  r->busbw_gbps = cJSON_IsNumber(bw) ? bw->valuedouble : -1;
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(ev, "time_ms");
  r->time_ms = cJSON_IsNumber(t) ? t->valuedouble : 0;
  free(r->result_json);
  r->result_json = strdup(line);
  r->cb(r, LWSI_GPURUN_RESULT);
}

/* One JSON line from the check; unknown events are ignored (the protocol
 * grows by adding them). */
static void on_line(struct lwsi_gpurun *r, const char *line)
{
  cJSON *ev = cJSON_Parse(line);
  if (ev == NULL)
    return;
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "event");
  if (cJSON_IsString(type) && strcmp(type->valuestring, "nccl_id") == 0) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ev, "id");
    if (cJSON_IsString(id) && strlen(id->valuestring) < sizeof(r->id)) {
      lwsi_text_copy(r->id, sizeof(r->id), id->valuestring);
      r->cb(r, LWSI_GPURUN_ID);
    }
  } else if (cJSON_IsString(type) && strcmp(type->valuestring, "result") == 0 &&
             !r->have_result) {
    take_result(r, ev, line);
  }
  cJSON_Delete(ev);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct lwsi_gpurun *r = h->data;
  if (r->len >= sizeof(r->buf) - 1)
    r->len = 0; /* A line longer than any the check writes: drop it. */
  *buf = uv_buf_init(r->buf + r->len, (unsigned)(sizeof(r->buf) - 1 - r->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct lwsi_gpurun *r = s->data;
  if (n < 0) {
    uv_read_stop(s);
    r->out_eof = true;
    maybe_gone(r);
    return;
  }
  r->len += (size_t)n;
  r->buf[r->len] = '\0';
  char *start = r->buf;
  char *nl;
  while ((nl = memchr(start, '\n', r->len - (size_t)(start - r->buf))) != NULL) {
    *nl = '\0';
    on_line(r, start);
    start = nl + 1;
  }
  size_t rest = r->len - (size_t)(start - r->buf);
  memmove(r->buf, start, rest);
  r->len = rest;
}

int lwsi_gpurun_start(struct lwsi_gpurun *r, uv_loop_t *loop, char *const *argv,
                      char *const *envp, const sigset_t *mask, lwsi_gpurun_cb cb)
{
  void *data = r->data;
  memset(r, 0, sizeof(*r));
  r->data = data;
  r->loop = loop;
  r->cb = cb;
  r->in_fd = -1;
  r->busbw_gbps = -1;
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) < 0)
    return -errno;
  if (pipe2(out, O_CLOEXEC) < 0) {
    int e = errno;
    close(in[0]);
    close(in[1]);
    return -e;
  }
  int rc = lwsi_launcher_spawn_io(argv, envp, mask, in[0], out[1], &r->pid);
  close(in[0]);
  close(out[1]);
  if (rc < 0) {
    close(in[1]);
    close(out[0]);
    if (r->pid > 0)
      kill(-r->pid, SIGKILL); /* exec failed: it is exiting; the agent reaps it */
    r->pid = 0;
    return rc;
  }
  r->in_fd = in[1];
  /* A write to the id pipe must never block the loop. */
  fcntl(r->in_fd, F_SETFL, O_NONBLOCK);
  uv_pipe_init(loop, &r->out, 0);
  r->out.data = r;
  r->out_open = true;
  uv_timer_init(loop, &r->kill_timer);
  r->kill_timer.data = r;
  uv_timer_init(loop, &r->defer);
  r->defer.data = r;
  r->timer_open = true;
  rc = uv_pipe_open(&r->out, out[0]);
  if (rc < 0) {
    /* Refused: the handle did not take the descriptor, so it is ours. */
    close(out[0]);
    lwsi_gpurun_kill(r);
    return rc;
  }
  /* From here the handle owns out[0] and uv_close closes it
   * (lwsi_gpurun_close): closing it here as well would close a number
   * that may by then belong to someone else. */
  rc = uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
  if (rc < 0) {
    lwsi_gpurun_kill(r);
    return rc;
  }
  return 0;
}

int lwsi_gpurun_give_id(struct lwsi_gpurun *r, const char *hex)
{
  if (r->in_fd < 0)
    return -EPIPE;
  char line[320];
  int n = snprintf(line, sizeof(line), "{\"nccl_id\":\"%s\"}\n", hex);
  if (n < 0 || (size_t)n >= sizeof(line))
    return -EINVAL;
  ssize_t w;
  do
    w = write(r->in_fd, line, (size_t)n);
  while (w < 0 && errno == EINTR);
  int rc = w == n ? 0 : (w < 0 ? -errno : -EIO);
  close(r->in_fd);
  r->in_fd = -1;
  return rc;
}

static void on_kill_timer(uv_timer_t *t)
{
  struct lwsi_gpurun *r = t->data;
  if (r->pid > 0 && !r->exited)
    kill(-r->pid, SIGKILL);
}

void lwsi_gpurun_kill(struct lwsi_gpurun *r)
{
  if (r->pid <= 0 || r->exited)
    return;
  /* The check aborts NCCL on SIGTERM (docs/gpucheck.md); a driver call that
   * hangs cannot be interrupted, so SIGKILL follows. */
  kill(-r->pid, SIGTERM);
  if (r->timer_open && !uv_is_active((uv_handle_t *)&r->kill_timer))
    uv_timer_start(&r->kill_timer, on_kill_timer, 1000, 0);
}

static void on_defer(uv_timer_t *t)
{
  maybe_gone(t->data);
}

void lwsi_gpurun_reaped(struct lwsi_gpurun *r, int status)
{
  r->exited = true;
  r->status = status;
  /* Called from the reap path: what follows (the engine's launch) runs on
   * the next loop turn instead. */
  if (r->timer_open)
    uv_timer_start(&r->defer, on_defer, 0, 0);
}

void lwsi_gpurun_close(struct lwsi_gpurun *r)
{
  if (r->pid > 0 && !r->exited)
    kill(-r->pid, SIGKILL);
  if (r->in_fd >= 0) {
    close(r->in_fd);
    r->in_fd = -1;
  }
  if (r->out_open) {
    r->out_open = false;
    uv_close((uv_handle_t *)&r->out, NULL);
  }
  if (r->timer_open) {
    r->timer_open = false;
    uv_close((uv_handle_t *)&r->kill_timer, NULL);
    uv_close((uv_handle_t *)&r->defer, NULL);
  }
  free(r->result_json);
  r->result_json = NULL;
}
