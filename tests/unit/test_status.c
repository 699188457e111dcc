/* The status document, its summary for a person and the agent's metrics
 * (agent/status.c), rendered from snapshots written by hand: a leader with
 * its member rows, a worker without them, a standalone agent, a GPU check
 * result, and the one word for the engine's state. */
#include "lwsinit/metrics.h"
#include "lwsinit/status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwsinit_build.h"
#include "tap.h"

static const char *const phase_names[] = {
  "resolving", "joining", "checking", "running", "stopping", "failed",
};

/* A standalone agent, running, with nothing optional: the base of every
 * case, which each changes where it differs. */
static void base(struct lwsi_status_snapshot *s)
{
  memset(s, 0, sizeof(*s));
  s->rank = 0;
  s->size = 1;
  s->standalone = true;
  s->ready = true;
  s->leader = "127.0.0.1";
  s->leader_ip = "127.0.0.1";
  for (size_t p = 0; p < 6; p++)
    s->phases[p].name = phase_names[p];
  s->nphases = 6;
  s->phases[2].ms = 5;
  s->phases[3].ms = 1500;
  s->phase = 3;
  s->total_ms = 1505;
  s->child.state = LWSI_STATUS_CHILD_RUNNING;
  s->child.pid = 42;
  s->upstream.url = "";
  s->upstream.outcome = "none";
  s->upstream.error = "";
  s->group.rendezvous = "";
  s->group.incarnation = "";
  s->group.missing = "";
  s->group.broken = "";
  s->joined = 1;
  s->alive = 1;
  s->gpu.mode = "none";
  s->gpu.model = "";
  s->gpu.error = "";
  s->gpu.busbw_gbps = -1;
  s->last_error = "";
}

/* The rendered document (static), without its trailing newline checked
 * apart. */
static char *doc_text(const struct lwsi_status_snapshot *s, bool *newline)
{
  static char *last;
  free(last);
  last = lwsi_status_render(s);
  if (last == NULL)
    return NULL;
  size_t n = strlen(last);
  *newline = n > 0 && last[n - 1] == '\n';
  if (*newline)
    last[n - 1] = '\0';
  return last;
}

/* What `lwsinit status` prints for the rendered document (static). */
static const char *text_of(const struct lwsi_status_snapshot *s)
{
  static char *buf;
  size_t len = 0;
  char *json = lwsi_status_render(s);
  free(buf);
  buf = NULL;
  FILE *f = open_memstream(&buf, &len);
  if (f == NULL || json == NULL) {
    free(json);
    if (f != NULL)
      fclose(f);
    return NULL;
  }
  int rc = lwsi_status_print(f, json);
  fclose(f);
  free(json);
  return rc == 0 ? buf : NULL;
}

/* The metrics text (static); NULL on an error. */
static const char *metrics_of(const struct lwsi_status_snapshot *s)
{
  static struct lwsi_buf b;
  lwsi_buf_reset(&b);
  if (lwsi_status_metrics(s, &b) < 0)
    return NULL;
  return b.data;
}

static void test_words(void)
{
  TAP_STR_EQ(lwsi_status_child_name(LWSI_STATUS_CHILD_NOT_STARTED), "not-started",
             "an engine not started yet is not-started");
  TAP_STR_EQ(lwsi_status_child_name(LWSI_STATUS_CHILD_RUNNING), "running", "running");
  TAP_STR_EQ(lwsi_status_child_name(LWSI_STATUS_CHILD_EXITED), "exited", "exited");
  TAP_STR_EQ(lwsi_status_gpu_name(LWSI_STATUS_GPU_NOT_STARTED), "not-started",
             "gpu check not started");
  TAP_STR_EQ(lwsi_status_gpu_name(LWSI_STATUS_GPU_RUNNING), "running", "gpu check running");
  TAP_STR_EQ(lwsi_status_gpu_name(LWSI_STATUS_GPU_PASSED), "passed", "gpu check passed");
  TAP_STR_EQ(lwsi_status_gpu_name(LWSI_STATUS_GPU_FAILED), "failed", "gpu check failed");
}

static void test_standalone(void)
{
  struct lwsi_status_snapshot s;
  base(&s);
  bool nl = false;
  TAP_STR_EQ(doc_text(&s, &nl),
             "{\"version\":\"" LWSI_VERSION "\",\"rank\":0,\"size\":1,\"role\":\"standalone\","
             "\"phase\":\"running\",\"ready\":true,\"epoch\":0,\"restarts\":0,"
             "\"leader\":{\"address\":\"127.0.0.1\",\"ip\":\"127.0.0.1\"},"
             "\"child\":{\"state\":\"running\",\"pid\":42,\"orphans_reaped\":0},"
             "\"upstream\":null,"
             "\"timings\":{\"resolving_s\":0,\"joining_s\":0,\"checking_s\":0.005,"
             "\"running_s\":1.5,\"stopping_s\":0,\"failed_s\":0,\"total_s\":1.505},"
             "\"last_error\":null}",
             "a standalone agent's document: no group, no members, no gpu_check");
  TAP_OK(nl, "the document ends with a newline");
  TAP_STR_EQ(text_of(&s),
             "rank 0 of 1 (standalone), phase running, ready\n"
             "epoch    0, 0 restarts\n"
             "leader   127.0.0.1 (127.0.0.1)\n"
             "child    running, pid 42\n"
             "upstream none\n"
             "timings  resolving 0.000s joining 0.000s checking 0.005s running 1.500s "
             "stopping 0.000s failed 0.000s total 1.505s\n",
             "a standalone agent's text");
  TAP_STR_EQ(metrics_of(&s),
             "# HELP lwsinit_info The agent's version and role.\n"
             "# TYPE lwsinit_info gauge\n"
             "lwsinit_info{version=\"" LWSI_VERSION "\",role=\"standalone\",rank=\"0\"} 1\n"
             "# HELP lwsinit_phase 1 for the agent's current phase, 0 for the others.\n"
             "# TYPE lwsinit_phase gauge\n"
             "lwsinit_phase{phase=\"resolving\"} 0\n"
             "lwsinit_phase{phase=\"joining\"} 0\n"
             "lwsinit_phase{phase=\"checking\"} 0\n"
             "lwsinit_phase{phase=\"running\"} 1\n"
             "lwsinit_phase{phase=\"stopping\"} 0\n"
             "lwsinit_phase{phase=\"failed\"} 0\n"
             "# HELP lwsinit_phase_duration_seconds Time spent in each phase so far.\n"
             "# TYPE lwsinit_phase_duration_seconds gauge\n"
             "lwsinit_phase_duration_seconds{phase=\"resolving\"} 0\n"
             "lwsinit_phase_duration_seconds{phase=\"joining\"} 0\n"
             "lwsinit_phase_duration_seconds{phase=\"checking\"} 0.005\n"
             "lwsinit_phase_duration_seconds{phase=\"running\"} 1.5\n"
             "lwsinit_phase_duration_seconds{phase=\"stopping\"} 0\n"
             "lwsinit_phase_duration_seconds{phase=\"failed\"} 0\n"
             "# HELP lwsinit_ready 1 when /readyz answers 200.\n"
             "# TYPE lwsinit_ready gauge\n"
             "lwsinit_ready 1\n"
             "# HELP lwsinit_group_size Members of the group, leader included.\n"
             "# TYPE lwsinit_group_size gauge\n"
             "lwsinit_group_size 1\n"
             "# HELP lwsinit_members_joined Members that have joined the rendezvous.\n"
             "# TYPE lwsinit_members_joined gauge\n"
             "lwsinit_members_joined 1\n"
             "# HELP lwsinit_members_alive Members heard from within --peer-timeout.\n"
             "# TYPE lwsinit_members_alive gauge\n"
             "lwsinit_members_alive 1\n"
             "# HELP lwsinit_release_timestamp_seconds When the group was released (Unix "
             "time), 0 before.\n"
             "# TYPE lwsinit_release_timestamp_seconds gauge\n"
             "lwsinit_release_timestamp_seconds 0\n"
             "# HELP lwsinit_peer_losses_total Members lost after the release.\n"
             "# TYPE lwsinit_peer_losses_total counter\n"
             "lwsinit_peer_losses_total 0\n"
             "# HELP lwsinit_epoch The group's epoch: 0, then +1 at each restart.\n"
             "# TYPE lwsinit_epoch gauge\n"
             "lwsinit_epoch 0\n"
             "# HELP lwsinit_restarts_total Group restarts in place (--on-failure restart) this "
             "agent took part in.\n"
             "# TYPE lwsinit_restarts_total counter\n"
             "lwsinit_restarts_total 0\n"
             "# HELP lwsinit_child_running 1 while the engine runs.\n"
             "# TYPE lwsinit_child_running gauge\n"
             "lwsinit_child_running 1\n"
             "# HELP lwsinit_orphans_reaped_total Processes other than the engine reaped by "
             "the agent.\n"
             "# TYPE lwsinit_orphans_reaped_total counter\n"
             "lwsinit_orphans_reaped_total 0\n",
             "a standalone agent's metrics");

  /* Exited, with an error, an upstream that failed. */
  s.child.state = LWSI_STATUS_CHILD_EXITED;
  s.child.exit_code = 137;
  s.child.orphans_reaped = 3;
  s.ready = false;
  s.last_error = "the engine (pid 42) was killed by SIGKILL (137)";
  s.upstream.enabled = true;
  s.upstream.url = "http://127.0.0.1:8000/health";
  s.upstream.known = true;
  s.upstream.ok = false;
  s.upstream.outcome = "connect";
  s.upstream.latency_s = 0.25;
  s.upstream.polls = 4;
  s.upstream.failures = 1;
  s.upstream.error = "connection refused";
  const char *outcomes[] = {"ok", "http", "timeout", "connect", "error"};
  for (size_t o = 0; o < 5; o++)
    s.upstream.by_outcome[o] = (struct lwsi_status_outcome){outcomes[o], o == 0 ? 3 : o == 3};
  s.upstream.noutcomes = 5;
  const char *doc = doc_text(&s, &nl);
  TAP_OK(doc != NULL &&
             strstr(doc, "\"child\":{\"state\":\"exited\",\"pid\":42,\"exit_code\":137,"
                         "\"orphans_reaped\":3}") != NULL,
         "an exited engine: its pid and exit code: %s", doc ? doc : "(null)");
  TAP_OK(doc != NULL &&
             strstr(doc, "\"upstream\":{\"enabled\":true,\"url\":\"http://127.0.0.1:8000/health\","
                         "\"ok\":false,\"outcome\":\"connect\",\"http_status\":0,"
                         "\"latency_s\":0.25,\"polls\":4,\"failures\":1,"
                         "\"error\":\"connection refused\"}") != NULL,
         "the upstream object");
  TAP_OK(doc != NULL &&
             strstr(doc, "\"last_error\":\"the engine (pid 42) was killed by SIGKILL (137)\"}"),
         "last_error");
  const char *text = text_of(&s);
  TAP_OK(text != NULL && strstr(text, "child    exited, pid 42, exit code 137\n") &&
             strstr(text, "upstream http://127.0.0.1:8000/health: unhealthy (connection "
                          "refused)\n") &&
             strstr(text, "error    the engine (pid 42) was killed by SIGKILL (137)\n") &&
             strstr(text, "phase running, not ready\n"),
         "the text of an exited engine with a failing upstream");
  const char *m = metrics_of(&s);
  TAP_OK(m != NULL && strstr(m, "\nlwsinit_child_running 0\n") &&
             strstr(m, "\nlwsinit_orphans_reaped_total 3\n") &&
             strstr(m, "\nlwsinit_upstream_up 0\n") &&
             strstr(m, "\nlwsinit_upstream_latency_seconds 0.25\n") &&
             strstr(m, "\nlwsinit_upstream_polls_total{outcome=\"ok\"} 3\n"
                       "lwsinit_upstream_polls_total{outcome=\"http\"} 0\n"
                       "lwsinit_upstream_polls_total{outcome=\"timeout\"} 0\n"
                       "lwsinit_upstream_polls_total{outcome=\"connect\"} 1\n"
                       "lwsinit_upstream_polls_total{outcome=\"error\"} 0\n"),
         "the metrics of an exited engine and its upstream");
  s.upstream.known = false;
  doc = doc_text(&s, &nl);
  TAP_OK(doc != NULL && strstr(doc, "\"ok\":null,") != NULL, "an upstream not polled yet: ok null");
  m = metrics_of(&s);
  TAP_OK(m != NULL && strstr(m, "lwsinit_upstream_up") == NULL &&
             strstr(m, "lwsinit_upstream_polls_total{outcome=\"ok\"} 3\n") != NULL,
         "not polled yet: no up gauge, the counts all the same");
}

/* A leader of 3 while the group forms: rank 1 joined and sent a heartbeat
 * before the launch, rank 2 is missing. */
static void leader_joining(struct lwsi_status_snapshot *s, struct lwsi_status_member rows[3])
{
  base(s);
  s->standalone = false;
  s->size = 3;
  s->ready = false;
  s->leader = "sglang-0.sglang";
  s->leader_ip = "";
  memset(s->phases, 0, sizeof(s->phases));
  for (size_t p = 0; p < 6; p++)
    s->phases[p].name = phase_names[p];
  s->phases[1].ms = 1534;
  s->phase = 1;
  s->total_ms = 1534;
  s->child.state = LWSI_STATUS_CHILD_NOT_STARTED;
  s->child.pid = 0;
  s->has_group = true;
  s->group.rendezvous = "joining";
  s->group.incarnation = "11b5dfe5d25a4ac4968b1ec43307db5f";
  s->group.missing = "rank 2";
  s->joined = 2;
  s->alive = 2;
  memset(rows, 0, 3 * sizeof(rows[0]));
  for (uint32_t r = 0; r < 3; r++) {
    rows[r].rank = r;
    rows[r].hb_age_ms = -1;
    rows[r].rtt_us = -1;
  }
  strcpy(rows[0].addr, "10.0.0.10");
  strcpy(rows[0].pod, "sglang-0");
  rows[0].joined = rows[0].alive = true;
  strcpy(rows[1].addr, "10.0.0.11");
  strcpy(rows[1].pod, "sglang-0-1");
  rows[1].joined = rows[1].alive = true;
  rows[1].hb_age_ms = 250;
  rows[1].rtt_us = 1500;
  rows[1].has_state = true;
  strcpy(rows[1].child, lwsi_status_child_name(LWSI_STATUS_CHILD_NOT_STARTED));
  rows[1].upstream = false;
  s->members = rows;
  s->nmembers = 3;
}

static void test_leader(void)
{
  struct lwsi_status_snapshot s;
  struct lwsi_status_member rows[3];
  leader_joining(&s, rows);
  bool nl = false;
  TAP_STR_EQ(doc_text(&s, &nl),
             "{\"version\":\"" LWSI_VERSION "\",\"rank\":0,\"size\":3,\"role\":\"leader\","
             "\"phase\":\"joining\",\"ready\":false,\"epoch\":0,\"restarts\":0,"
             "\"leader\":{\"address\":\"sglang-0.sglang\",\"ip\":\"\"},"
             "\"child\":{\"state\":\"not-started\",\"pid\":null,\"orphans_reaped\":0},"
             "\"upstream\":null,"
             "\"timings\":{\"resolving_s\":0,\"joining_s\":1.534,\"checking_s\":0,"
             "\"running_s\":0,\"stopping_s\":0,\"failed_s\":0,\"total_s\":1.534},"
             "\"group\":{\"rendezvous\":\"joining\",\"incarnation\":"
             "\"11b5dfe5d25a4ac4968b1ec43307db5f\",\"joined\":2,\"missing\":\"rank 2\","
             "\"peer_losses\":0},"
             "\"members\":["
             "{\"rank\":0,\"address\":\"10.0.0.10\",\"pod\":\"sglang-0\",\"joined\":true,"
             "\"alive\":true,\"heartbeat_age_s\":null,\"rtt_s\":null,\"child\":\"not-started\"},"
             "{\"rank\":1,\"address\":\"10.0.0.11\",\"pod\":\"sglang-0-1\",\"joined\":true,"
             "\"alive\":true,\"heartbeat_age_s\":0.25,\"rtt_s\":0.0015,"
             "\"child\":\"not-started\",\"upstream\":false},"
             "{\"rank\":2,\"address\":\"\",\"pod\":\"\",\"joined\":false,\"alive\":false,"
             "\"heartbeat_age_s\":null,\"rtt_s\":null}],"
             "\"last_error\":null}",
             "the leader's document: the group and a row per member");
  TAP_STR_EQ(text_of(&s),
             "rank 0 of 3 (leader), phase joining, not ready\n"
             "epoch    0, 0 restarts\n"
             "leader   sglang-0.sglang (unresolved)\n"
             "child    not-started\n"
             "upstream none\n"
             "members  rank  address                alive    heartbeat  child      upstream  pod\n"
             "         0     10.0.0.10              yes      -          not-started -         "
             "sglang-0\n"
             "         1     10.0.0.11              yes      0.2s ago   not-started -         "
             "sglang-0-1\n"
             "         2                            no       -          -          -         \n"
             "timings  resolving 0.000s joining 1.534s checking 0.000s running 0.000s "
             "stopping 0.000s failed 0.000s total 1.534s\n",
             "the leader's text, a line per member");
  const char *m = metrics_of(&s);
  TAP_OK(m != NULL &&
             strstr(m, "\nlwsinit_members_joined 2\n") && strstr(m, "\nlwsinit_members_alive 2\n") &&
             strstr(m, "\n# HELP lwsinit_heartbeat_rtt_seconds Round trip of the last heartbeat, "
                       "by member.\n"
                       "# TYPE lwsinit_heartbeat_rtt_seconds gauge\n"
                       "lwsinit_heartbeat_rtt_seconds{rank=\"1\"} 0.0015\n"
                       "# HELP lwsinit_heartbeat_age_seconds Time since the member was last "
                       "heard from.\n"
                       "# TYPE lwsinit_heartbeat_age_seconds gauge\n"
                       "lwsinit_heartbeat_age_seconds{rank=\"1\"} 0.25\n") &&
             strstr(m, "lwsinit_heartbeat_age_seconds{rank=\"1\"} 0.25\n"
                       "# HELP lwsinit_member_child_running ") != NULL &&
             strcmp(strstr(m, "lwsinit_member_child_running{rank=\"1\"} 0\n"),
                    "lwsinit_member_child_running{rank=\"1\"} 0\n") == 0,
         "the leader's metrics: the counts, rtt and age of the member heard from, then its "
         "engine, last");

  /* The row of a worker before launch and the worker's own child.state
   * are one word: the heartbeat carries lwsi_status_child_name. */
  struct lwsi_status_snapshot w;
  base(&w);
  w.standalone = false;
  w.rank = 1;
  w.size = 3;
  w.child.state = LWSI_STATUS_CHILD_NOT_STARTED;
  w.child.pid = 0;
  const char *wdoc = doc_text(&w, &nl);
  TAP_OK(wdoc != NULL && strstr(wdoc, "\"child\":{\"state\":\"not-started\"") != NULL &&
             strcmp(rows[1].child, "not-started") == 0,
         "a worker's child.state before launch is the word its row on the leader shows");

  /* The leader's own row shows its own engine's health, as a heartbeat
   * would carry it: a healthy leader's row reads ok, not failing. */
  rows[0].has_health = true;
  rows[0].upstream_on = true;
  rows[0].upstream = true;
  const char *own = text_of(&s);
  TAP_OK(own != NULL && strstr(own, "         0     10.0.0.10              yes      -          "
                                    "not-started ok        sglang-0\n") != NULL,
         "the leader's own row: its upstream, healthy, reads ok");
  rows[0].has_health = false;
  rows[0].upstream_on = false;
  rows[0].upstream = false;

  /* Every member's row in the text, a broken group in the document. */
  s.group.broken = "rank 2 was lost: silent for 12 s";
  s.peer_losses = 1;
  const char *doc = doc_text(&s, &nl);
  TAP_OK(doc != NULL && strstr(doc, "\"peer_losses\":1,\"broken\":\"rank 2 was lost: silent "
                                    "for 12 s\"}") != NULL,
         "a broken group says why");
}

static void test_worker(void)
{
  struct lwsi_status_snapshot s;
  struct lwsi_status_member row;
  base(&s);
  s.standalone = false;
  s.rank = 2;
  s.size = 3;
  s.leader = "sglang-0.sglang";
  s.leader_ip = "10.0.0.10";
  s.has_group = true;
  s.group.rendezvous = "released";
  s.group.incarnation = "ab";
  s.joined = 3;
  s.alive = 1;
  s.released_at = 1700000000.5;
  memset(&row, 0, sizeof(row));
  row.rank = 0;
  strcpy(row.addr, "10.0.0.10");
  row.joined = row.alive = true;
  row.hb_age_ms = 100;
  row.rtt_us = 800;
  s.members = &row;
  s.nmembers = 1;
  bool nl = false;
  const char *doc = doc_text(&s, &nl);
  TAP_OK(doc != NULL && strstr(doc, "\"members\"") == NULL &&
             strstr(doc, "\"role\":\"worker\"") != NULL &&
             strstr(doc, "\"group\":{\"rendezvous\":\"released\",\"incarnation\":\"ab\","
                         "\"joined\":3,\"missing\":\"\",\"peer_losses\":0},") != NULL,
         "a worker's document: its group, no members: %s", doc ? doc : "(null)");
  const char *text = text_of(&s);
  TAP_OK(text != NULL && strstr(text, "members") == NULL &&
             strstr(text, "rank 2 of 3 (worker), phase running, ready\n") == text &&
             strstr(text, "leader   sglang-0.sglang (10.0.0.10)\n") != NULL,
         "a worker's text: no member lines");
  const char *m = metrics_of(&s);
  TAP_OK(m != NULL && strstr(m, "lwsinit_info{version=\"" LWSI_VERSION "\",role=\"worker\","
                                "rank=\"2\"} 1\n") &&
             strstr(m, "\nlwsinit_members_joined 3\n") &&
             strstr(m, "\nlwsinit_members_alive 1\n") &&
             strstr(m, "\nlwsinit_release_timestamp_seconds 1700000000.5\n") &&
             strstr(m, "\nlwsinit_heartbeat_rtt_seconds{rank=\"0\"} 0.0008\n") &&
             strstr(m, "\nlwsinit_heartbeat_age_seconds{rank=\"0\"} 0.1\n"),
         "a worker's metrics: the leader's heartbeat");
}

static void test_gpu_check(void)
{
  struct lwsi_status_snapshot s;
  base(&s);
  s.has_gpu_check = true;
  s.gpu.mode = "nccl";
  s.gpu.state = LWSI_STATUS_GPU_RUNNING;
  bool nl = false;
  const char *doc = doc_text(&s, &nl);
  TAP_OK(doc != NULL && strstr(doc, "\"gpu_check\":{\"mode\":\"nccl\",\"state\":\"running\","
                                    "\"group_passed\":false},\"last_error\"") != NULL,
         "a GPU check in progress: no result yet");
  const char *m = metrics_of(&s);
  TAP_OK(m != NULL && strstr(m, "lwsinit_gpu_check") == NULL, "no GPU metrics before a result");

  s.gpu.state = LWSI_STATUS_GPU_PASSED;
  s.gpu.group_passed = true;
  s.gpu.have_result = true;
  s.gpu.devices = 8;
  s.gpu.model = "NVIDIA H200";
  s.gpu.time_ms = 41500;
  s.gpu.busbw_gbps = 371.25;
  doc = doc_text(&s, &nl);
  TAP_OK(doc != NULL &&
             strstr(doc, "\"gpu_check\":{\"mode\":\"nccl\",\"state\":\"passed\","
                         "\"group_passed\":true,\"devices\":8,\"model\":\"NVIDIA H200\","
                         "\"time_s\":41.5,\"busbw_gbps\":371.25},") != NULL,
         "a passed GPU check: %s", doc ? doc : "(null)");
  const char *text = text_of(&s);
  TAP_OK(text != NULL &&
             strstr(text, "\ngpus     nccl check passed: 8 x NVIDIA H200 in 41.50s, busbw 371.2 "
                          "GB/s; the group passed\n") != NULL,
         "a passed GPU check's line");
  m = metrics_of(&s);
  TAP_OK(m != NULL && strstr(m, "\nlwsinit_gpu_check_passed 1\n") &&
             strstr(m, "\nlwsinit_gpu_check_devices 8\n") &&
             strstr(m, "\nlwsinit_gpu_check_duration_seconds 41.5\n") &&
             strstr(m, "\nlwsinit_gpu_check_busbw_bytes_per_second 371250000000\n"),
         "a passed GPU check's metrics");

  s.gpu.state = LWSI_STATUS_GPU_FAILED;
  s.gpu.group_passed = false;
  s.gpu.busbw_gbps = -1;
  s.gpu.error = "cudaMalloc: out of memory";
  doc = doc_text(&s, &nl);
  TAP_OK(doc != NULL && strstr(doc, "\"busbw_gbps\":null,\"error\":\"cudaMalloc: out of "
                                    "memory\"}") != NULL,
         "a failed GPU check: no bandwidth, the error");
  m = metrics_of(&s);
  TAP_OK(m != NULL && strstr(m, "\nlwsinit_gpu_check_passed 0\n") &&
             strstr(m, "busbw") == NULL,
         "a failed GPU check's metrics: passed 0, no bandwidth");
}

static void test_print_rejects(void)
{
  FILE *f = fopen("/dev/null", "w");
  TAP_OK(f != NULL && lwsi_status_print(f, "[1,2]") == -EINVAL &&
             lwsi_status_print(f, "not json") == -EINVAL && lwsi_status_print(f, "{}") == 0,
         "print takes a JSON object only");
  if (f != NULL)
    fclose(f);
}

int main(void)
{
  test_words();
  test_standalone();
  test_leader();
  test_worker();
  test_gpu_check();
  test_print_rejects();
  return tap_done();
}
