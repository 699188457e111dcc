/* Writes the seed corpora of the harnesses into tests/fuzz/corpus/<name>/:
 * rendezvous frames made by lwsi_wire_encode, command lines and
 * environments as the contract and the presets spell them, the requests
 * kubelet, Prometheus and curl send, status documents as lwsinit 0.1.0
 * served them, and the GPU check's protocol lines. Run by
 * `tests/fuzz/run.sh --write-seeds`; the output is committed. */
#include "lwsinit/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *root = "tests/fuzz/corpus";

static void put(const char *dir, const char *name, const void *p, size_t n)
{
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", root, dir);
  mkdir(path, 0755);
  snprintf(path, sizeof(path), "%s/%s/%s", root, dir, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

static void puts_(const char *dir, const char *name, const char *s) { put(dir, name, s, strlen(s)); }

/* Text with "\0" separators: the harnesses' argv/env and piece formats.
 * The literal ends with one NUL of its own, which is not part of it. */
#define PUTZ(dir, name, lit) put(dir, name, lit, sizeof(lit) - 1)

#define HEX256                                                                                     \
  "0200b3c1ac140002000000000000000000000000000000000000000000000000" \
  "0000000000000000000000000000000000000000000000000000000000000000" \
  "0000000000000000000000000000000000000000000000000000000000000000" \
  "0000000000000000000000000000000000000000000000000000000000000000"

/* ---- wire ---- */

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(seed * 31 + i * 7);
}

static uint8_t stream[1 << 16];
static size_t stream_len;

static void frame(const char *name, const struct lwsi_msg *m, int add_to_stream)
{
  uint8_t *f;
  size_t n;
  int rc = lwsi_wire_encode(m, &f, &n);
  if (rc < 0) {
    fprintf(stderr, "gen_seeds: encode %s: %s\n", name, strerror(-rc));
    exit(1);
  }
  put("wire", name, f, n);
  if (add_to_stream && stream_len + n <= sizeof(stream)) {
    memcpy(stream + stream_len, f, n);
    stream_len += n;
  }
  free(f);
}

static void wire(void)
{
  struct lwsi_msg m;
  uint32_t missing[] = {1, 2, 5, 7};
  struct lwsi_wire_member members[4] = {{0, "10.244.1.17", "sglang-0"},
                                        {1, "10.244.2.9", "sglang-0-1"},
                                        {2, "fd00:10:244::1c", "sglang-0-2"},
                                        {3, "", ""}};

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_HELLO;
  fill(m.hello.nonce, sizeof(m.hello.nonce), 1);
  fill(m.hello.challenge, sizeof(m.hello.challenge), 2);
  m.hello.auth = true;
  frame("hello", &m, 1);
  m.hello.auth = false;
  frame("hello-noauth", &m, 0);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_JOIN;
  m.join.rank = 1;
  m.join.size = 4;
  m.join.gpus = 8;
  strcpy(m.join.revision, "sglang-5f6c9d7b8");
  strcpy(m.join.pod, "sglang-0-1");
  fill(m.join.nonce, sizeof(m.join.nonce), 3);
  fill(m.join.challenge, sizeof(m.join.challenge), 4);
  fill(m.join.digest, sizeof(m.join.digest), 5);
  strcpy(m.join.preset, "sglang");
  m.join.dist_port = 5000;
  char *cmd[] = {"python3", "-m", "sglang.launch_server", "--tp", "8", "--host", "10.0.0.5",
                 "--dist-init-addr", "{leader_ip}:{dist_port}", NULL};
  m.join.cmd_total = 10;
  m.join.ncmd = 9;
  m.join.cmd = cmd;
  m.join.auth = true;
  fill(m.join.mac, sizeof(m.join.mac), 6);
  frame("join", &m, 1);
  m.join.auth = false;
  m.join.revision[0] = '\0';
  frame("join-noauth", &m, 0);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_WELCOME;
  m.welcome.rank = 1;
  m.welcome.auth = true;
  fill(m.welcome.proof, sizeof(m.welcome.proof), 7);
  frame("welcome", &m, 1);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_WAITING;
  m.waiting.joined = 4;
  m.waiting.nmissing = 4;
  m.waiting.missing = missing;
  m.waiting.nlisted = 4;
  frame("waiting", &m, 1);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_RELEASE;
  m.release.size = 4;
  m.release.nmembers = 4;
  m.release.members = members;
  frame("release", &m, 1);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_HB;
  m.hb.seq = 42;
  m.hb.ts = 999999999999999ull;
  m.hb.has_echo = true;
  m.hb.echo = 123456789;
  m.hb.held = 250;
  strcpy(m.hb.child, "running");
  m.hb.upstream = true;
  frame("hb-echo", &m, 1);
  m.hb.has_echo = false;
  strcpy(m.hb.child, "not-started");
  frame("hb", &m, 0);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_APP;
  strcpy(m.app.kind, "gpu_result");
  m.app.data = (char *)"{\"ok\":false,\"error\":\"GPU 1 \\\"H200\\\": wrong sum \u00fc\",\"model\":\"NVIDIA H200\"}";
  frame("app", &m, 1);
  strcpy(m.app.kind, "gpu_id");
  m.app.data = (char *)HEX256;
  frame("app-gpu-id", &m, 0);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_LOST;
  m.lost.rank = 2;
  strcpy(m.lost.reason, "silent for 10001 ms");
  frame("lost", &m, 1);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_REFUSE;
  strcpy(m.refuse.code, "revision");
  strcpy(m.refuse.reason, "wrong revision: this worker has 'a', the leader 'b' \u2014 \u00fcn\u00efcode");
  frame("refuse", &m, 0);
  m.refuse.auth = true;
  memset(m.refuse.mac, 0x5a, sizeof(m.refuse.mac));
  frame("refuse-mac", &m, 0);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_FAIL;
  strcpy(m.fail.reason, "ranks 2, 3 never arrived");
  frame("fail", &m, 0);

  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_BYE;
  strcpy(m.bye.reason, "SIGTERM");
  frame("bye", &m, 1);

  /* A whole conversation as one stream, the way the splitter sees it. */
  put("wire", "stream", stream, stream_len);

  /* Frames the decoder must refuse, built by hand. */
  static const char other_v[] = "{\"v\":2,\"type\":\"hello\"}";
  static const char unknown[] = "{\"v\":1,\"type\":\"gpu_id\",\"id\":\"00\"}";
  uint8_t buf[256];
  for (int i = 0; i < 2; i++) {
    const char *s = i ? unknown : other_v;
    size_t n = strlen(s);
    buf[0] = buf[1] = 0;
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    memcpy(buf + 4, s, n);
    put("wire", i ? "unknown-type" : "other-version", buf, n + 4);
  }
  /* Well-formed JSON that breaks a rule: a member that is not an object,
   * more ranks listed than missing, an app kind out of [a-z0-9_]. */
  static const char *const bad[] = {
      ("{\"v\":1,\"type\":\"release\",\"size\":2,\"members\":[{\"rank\":0,\"addr\":\"\","
       "\"pod\":\"\"},7]}"),
      "{\"v\":1,\"type\":\"waiting\",\"joined\":1,\"nmissing\":1,\"missing\":[1,2]}",
      "{\"v\":1,\"type\":\"app\",\"kind\":\"Gpu-id\",\"data\":\"x\"}",
  };
  static const char *const bad_names[] = {"release-bad-member", "waiting-overlisted", "app-bad-kind"};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(bad[i]);
    buf[0] = buf[1] = 0;
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    memcpy(buf + 4, bad[i], n);
    put("wire", bad_names[i], buf, n + 4);
  }
  static const uint8_t zero_len[] = {0, 0, 0, 0};
  put("wire", "zero-length", zero_len, sizeof(zero_len));
  static const uint8_t too_long[] = {0, 1, 0, 1, '{'};
  put("wire", "too-long", too_long, sizeof(too_long));
}

/* ---- config: argv items and (with '@') environment entries, NUL-separated ---- */

static void config(void)
{
  PUTZ("config", "sglang-worker",
       "--preset\0sglang\0--token-file\0ok\0--\0python3\0-m\0sglang.launch_server\0"
       "--model-path\0/models/DeepSeek-R1\0--tp\0" "8\0"
       "@LWS_LEADER_ADDRESS=sglang-0.sglang.default\0@LWS_GROUP_SIZE=2\0"
       "@LWS_WORKER_INDEX=1\0@HOME=/root\0");
  PUTZ("config", "vllm-leader",
       "--preset=vllm\0--readiness=serving\0--gpu-check\0nccl\0--gpus\0" "8\0"
       "--gpu-min-busbw\0" "120.5\0vllm\0serve\0meta-llama/Llama-3.1-405B\0"
       "--tensor-parallel-size\0" "8\0--pipeline-parallel-size\0" "2\0"
       "@LWS_LEADER_ADDRESS=vllm-0.vllm\0@LWS_GROUP_SIZE=2\0@LWS_WORKER_INDEX=0\0");
  PUTZ("config", "vllm-dp",
       "--preset\0vllm-dp\0--dp-local\0" "4\0--leader\0vllm-0.vllm\0--size\0" "4\0--rank\0" "3\0"
       "vllm\0serve\0model\0--data-parallel-size-local\0" "4\0");
  PUTZ("config", "placeholders",
       "--dist-port\0" "20000\0--leader\0[fd00::1]\0--size\0" "2\0--rank\0" "1\0--\0sh\0-c\0"
       "echo {leader} {leader_ip}:{dist_port} {size} {rank} {{rank}} {\"json\":{\"a\":1}}\0");
  PUTZ("config", "all-options",
       "--rdzv-port\0" "7470\0--probe-addr\0[::]:7471\0--status-socket\0/run/lwsinit/status.sock\0"
       "--dns-server\0" "10.96.0.10:53\0--dns-timeout\0" "600\0--rdzv-timeout\0" "900.5\0"
       "--heartbeat\0" "1000\0--peer-timeout\0" "10000\0--on-peer-loss\0stay\0"
       "--upstream\0http://127.0.0.1:30000/health\0--upstream-interval\0" "2000\0"
       "--upstream-timeout\0" "5000\0--grace\0" "30\0--drain-delay\0" "0.250\0"
       "--gpu-check\0cuda\0--gpu-check-timeout\0" "120\0--gpu-check-bytes\0" "67108864\0"
       "--revision\0abc123\0--termination-log\0/dev/termination-log\0"
       "--log-format\0json\0--log-level\0debug\0sleep\0infinity\0");
  PUTZ("config", "env-twins",
       "@LWSINIT_LEADER=10.0.0.1\0@LWSINIT_SIZE=3\0@LWSINIT_RANK=2\0@LWSINIT_PRESET=sglang\0"
       "@LWSINIT_TOKEN=s3cret\n\0@LWSINIT_HEARTBEAT=250\0@LWSINIT_PEER_TIMEOUT=2000\0"
       "@LWSINIT_DNS_SERVER=[fd00::a]:5353\0@LWSINIT_UPSTREAM=none\0python\0serve.py\0");
  PUTZ("config", "token-env-file", "@LWSINIT_TOKEN_FILE=ws\0@LWSINIT_TOKEN=x\0true\0");
  PUTZ("config", "token-big", "--token-file\0big\0true\0");
  PUTZ("config", "token-dir", "--token-file=/etc/dir\0true\0");
  PUTZ("config", "status", "status\0--socket\0/run/lwsinit/status.sock\0--json\0");
  PUTZ("config", "status-env", "status\0@LWSINIT_STATUS_SOCKET=/tmp/s.sock\0");
  PUTZ("config", "probe", "probe\0ready\0--addr=[::]:7471\0");
  PUTZ("config", "probe-live", "probe\0live\0@LWSINIT_PROBE_ADDR=0.0.0.0:7471\0");
  PUTZ("config", "help", "--help\0");
  PUTZ("config", "version", "--version\0");
  PUTZ("config", "bad-size", "--size\0" "0x10\0--rank\0" "0\0--leader\0a\0true\0");
  PUTZ("config", "bad-partial", "@LWS_GROUP_SIZE=2\0true\0");
  PUTZ("config", "bad-value-newline", "--log-level\0info\nwarn\0true\0");
}

/* ---- expand: the argument, then the values of leader, leader_ip, size,
 * rank, dist_port, dp_size, dp_local, dp_start (missing ones have none) ---- */

static void expand(void)
{
  PUTZ("expand", "sglang", "--dist-init-addr={leader_ip}:{dist_port}\0sglang-0.sglang\0"
                           "10.244.1.17\0" "4\0" "1\0" "20000\0");
  PUTZ("expand", "literal", "{{rank}} is {rank}; {{{rank}}} {{x}\0a\0b\0c\0" "7\0");
  PUTZ("expand", "json", "{\"tp\":{size},\"k\":{},\"{leader}\":\"{nope\"}\0l\0i\0s\0r\0");
  PUTZ("expand", "unknown", "--x={leaderip}\0l\0i\0");
  PUTZ("expand", "nodata", "{dist_port}\0l\0i\0s\0r\0");
  PUTZ("expand", "dp", "{dp_size}/{dp_local}/{dp_start}\0l\0i\0s\0r\0p\0" "16\0" "4\0" "12\0");
  PUTZ("expand", "braces", "{{{{}}}}{{}{_}{a_b}}\0");
}

/* ---- http: bytes as a client sends them ---- */

static void http(void)
{
  puts_("http", "kubelet-livez",
        "GET /livez HTTP/1.1\r\nHost: 10.244.1.17:7471\r\nUser-Agent: kube-probe/1.30\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n");
  puts_("http", "kubelet-readyz",
        "GET /readyz HTTP/1.1\r\nHost: 10.244.1.17:7471\r\nUser-Agent: kube-probe/1.30\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n");
  puts_("http", "readyz-verbose",
        "GET /readyz?verbose&exclude=upstream&exclude=nope HTTP/1.1\r\nHost: localhost\r\n\r\n");
  puts_("http", "readyz-encoded",
        "GET /ready%7a?exclude=%6demb%65rs&verbose=1&x=a+b%20c HTTP/1.1\r\nHost: x\r\n\r\n");
  puts_("http", "prometheus",
        "GET /metrics HTTP/1.1\r\nHost: 10.244.1.17:7471\r\nUser-Agent: Prometheus/2.53.0\r\n"
        "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;"
        "q=0.3,*/*;q=0.1\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n");
  puts_("http", "curl-status",
        "GET /status HTTP/1.1\r\nHost: localhost:7471\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n");
  puts_("http", "head", "HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n");
  puts_("http", "http10", "GET /readyz HTTP/1.0\r\n\r\n");
  puts_("http", "http10-keepalive", "GET /livez HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                    "GET /status HTTP/1.0\r\n\r\n");
  puts_("http", "pipelined",
        "GET /livez HTTP/1.1\r\nHost: a\r\n\r\nHEAD /readyz?verbose HTTP/1.1\r\nHost: a\r\n\r\n"
        "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
  puts_("http", "post-body",
        "POST /livez HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /livez HTTP/1.1\r\n\r\n");
  puts_("http", "chunked",
        "POST /readyz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\nGET /livez HTTP/1.1\r\n\r\n");
  puts_("http", "big-length", "PUT /x HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n");
  puts_("http", "absolute-uri", "GET http://10.0.0.1:7471/readyz?verbose HTTP/1.1\r\n\r\n");
  puts_("http", "upgrade", "GET /livez HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  {
    /* Twenty pipelined probes in one write: past the output bound. */
    static char many[20 * 64];
    size_t o = 0;
    for (int i = 0; i < 20; i++)
      o += (size_t)snprintf(many + o, sizeof(many) - o, "GET /readyz?verbose HTTP/1.1\r\nHost: a\r\n\r\n");
    put("http", "pipelined-20", many, o);
  }
  puts_("http", "bad-escape", "GET /live%zz HTTP/1.1\r\n\r\nGET /%00 HTTP/1.1\r\n\r\n");
  puts_("http", "garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");

  /* Past the limits: a head over 8 KiB (431, and inputs this long let
   * libFuzzer grow others to that size), a URL over 2 KiB (414). */
  static char big[10000];
  int n = snprintf(big, sizeof(big), "GET /readyz HTTP/1.1\r\nHost: a\r\nCookie: ");
  memset(big + n, 'c', 9000);
  memcpy(big + n + 9000, "\r\n\r\n", 4);
  put("http", "big-head", big, (size_t)n + 9004);
  n = snprintf(big, sizeof(big), "GET /livez?");
  memset(big + n, 'q', 2100);
  static const char tail[] = " HTTP/1.1\r\n\r\n";
  memcpy(big + n + 2100, tail, sizeof(tail) - 1);
  put("http", "long-url", big, (size_t)n + 2100 + sizeof(tail) - 1);
  /* A chunked body past the 1 KiB bound (LWSI_HTTP_BODY_MAX): only the
   * chunks' sizes tell, so the server counts as it reads. */
  n = snprintf(big, sizeof(big),
               "POST /readyz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               "400\r\n");
  memset(big + n, 'b', 1024);
  n += 1024;
  n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n");
  put("http", "chunked-big", big, (size_t)n);
}

/* ---- status: documents as lwsinit 0.1.0 served them (`lwsinit status --json`) ---- */

static void status(void)
{
  puts_("status", "standalone",
        "{\"version\":\"0.1.0\",\"rank\":0,\"size\":1,\"role\":\"standalone\",\"phase\":\"running\","
        "\"ready\":false,\"leader\":{\"address\":\"127.0.0.1\",\"ip\":\"127.0.0.1\"},\"child\":"
        "{\"state\":\"running\",\"pid\":12051,\"orphans_reaped\":0},\"upstream\":{\"enabled\":true,"
        "\"url\":\"http://127.0.0.1:9/health\",\"ok\":false,\"outcome\":\"connect\",\"http_status\":0,"
        "\"latency_s\":0.000389718,\"polls\":1,\"failures\":1,\"error\":\"cannot connect to "
        "http://127.0.0.1:9/health: Connection refused\"},\"timings\":{\"resolving_s\":0,"
        "\"joining_s\":0,\"checking_s\":0,\"running_s\":1.525,\"stopping_s\":0,\"failed_s\":0,"
        "\"total_s\":1.525},\"last_error\":null}\n");
  puts_("status", "leader-joining",
        "{\"version\":\"0.1.0\",\"rank\":0,\"size\":3,\"role\":\"leader\",\"phase\":\"joining\","
        "\"ready\":false,\"leader\":{\"address\":\"127.0.0.1\",\"ip\":\"\"},\"child\":{\"state\":"
        "\"not-started\",\"pid\":null,\"orphans_reaped\":0},\"upstream\":null,\"timings\":"
        "{\"resolving_s\":0,\"joining_s\":1.534,\"checking_s\":0,\"running_s\":0,\"stopping_s\":0,"
        "\"failed_s\":0,\"total_s\":1.534},\"group\":{\"rendezvous\":\"joining\",\"incarnation\":"
        "\"11b5dfe5d25a4ac4968b1ec43307db5f\",\"joined\":1,\"missing\":\"ranks 1, 2\","
        "\"peer_losses\":0},\"members\":[{\"rank\":0,\"address\":\"\",\"pod\":\"\",\"joined\":true,"
        "\"alive\":true,\"heartbeat_age_s\":null,\"rtt_s\":null},{\"rank\":1,\"address\":\"\","
        "\"pod\":\"\",\"joined\":false,\"alive\":false,\"heartbeat_age_s\":null,\"rtt_s\":null},"
        "{\"rank\":2,\"address\":\"\",\"pod\":\"\",\"joined\":false,\"alive\":false,"
        "\"heartbeat_age_s\":null,\"rtt_s\":null}],\"last_error\":null}\n");
  puts_("status", "leader-running",
        "{\"version\":\"0.1.0\",\"rank\":0,\"size\":2,\"role\":\"leader\",\"phase\":\"running\","
        "\"ready\":true,\"leader\":{\"address\":\"127.0.0.1\",\"ip\":\"127.0.0.1\"},\"child\":"
        "{\"state\":\"running\",\"pid\":12154,\"orphans_reaped\":0},\"upstream\":null,\"timings\":"
        "{\"resolving_s\":0,\"joining_s\":0.038,\"checking_s\":0,\"running_s\":0.279,"
        "\"stopping_s\":0,\"failed_s\":0,\"total_s\":0.317},\"group\":{\"rendezvous\":\"released\","
        "\"incarnation\":\"0917fd21e3bb3651dca1a3366b902215\",\"joined\":2,\"missing\":\"\","
        "\"peer_losses\":0},\"members\":[{\"rank\":0,\"address\":\"127.0.0.1\",\"pod\":\"\","
        "\"joined\":true,\"alive\":true,\"heartbeat_age_s\":null,\"rtt_s\":null},{\"rank\":1,"
        "\"address\":\"127.0.0.1\",\"pod\":\"\",\"joined\":true,\"alive\":true,"
        "\"heartbeat_age_s\":0.218,\"rtt_s\":null,\"child\":\"running\",\"upstream\":false}],"
        "\"last_error\":null}\n");
  puts_("status", "worker-running",
        "{\"version\":\"0.1.0\",\"rank\":1,\"size\":2,\"role\":\"worker\",\"phase\":\"running\","
        "\"ready\":true,\"leader\":{\"address\":\"127.0.0.1\",\"ip\":\"127.0.0.1\"},\"child\":"
        "{\"state\":\"running\",\"pid\":12155,\"orphans_reaped\":0},\"upstream\":null,\"timings\":"
        "{\"resolving_s\":0,\"joining_s\":0.043,\"checking_s\":0,\"running_s\":0.29,\"stopping_s\":0,"
        "\"failed_s\":0,\"total_s\":0.333},\"group\":{\"rendezvous\":\"released\",\"incarnation\":"
        "\"abaa599ae1aa48b39617b66cf5e6f9c9\",\"joined\":2,\"missing\":\"\",\"peer_losses\":0},"
        "\"last_error\":null}\n");
  /* The same shape with what a failed run adds (exit code, errors, an
   * upstream that answered), written by hand. */
  puts_("status", "failed",
        "{\"version\":\"0.1.0\",\"rank\":0,\"size\":2,\"role\":\"leader\",\"phase\":\"failed\","
        "\"ready\":false,\"leader\":{\"address\":\"sglang-0.sglang\",\"ip\":\"10.244.1.17\"},"
        "\"child\":{\"state\":\"exited\",\"pid\":7,\"exit_code\":137,\"orphans_reaped\":3},"
        "\"upstream\":{\"enabled\":true,\"url\":\"http://127.0.0.1:30000/health\",\"ok\":true,"
        "\"outcome\":\"ok\",\"http_status\":200,\"latency_s\":0.0012,\"polls\":99,\"failures\":0,"
        "\"error\":null},\"timings\":{\"resolving_s\":0.002,\"joining_s\":4.5,\"checking_s\":12.25,"
        "\"running_s\":3600,\"stopping_s\":30,\"failed_s\":0.1,\"total_s\":3646.852},\"group\":"
        "{\"rendezvous\":\"released\",\"incarnation\":\"0917fd21e3bb3651dca1a3366b902215\","
        "\"joined\":2,\"missing\":\"\",\"peer_losses\":1,\"broken\":\"rank 1 lost\"},\"members\":"
        "[{\"rank\":0,\"address\":\"10.244.1.17\",\"pod\":\"sglang-0\",\"joined\":true,\"alive\":true,"
        "\"heartbeat_age_s\":null,\"rtt_s\":null},{\"rank\":1,\"address\":\"10.244.2.9\",\"pod\":"
        "\"sglang-0-1\",\"joined\":true,\"alive\":false,\"heartbeat_age_s\":10.2,\"rtt_s\":0.00031,"
        "\"child\":\"exited\",\"upstream\":false}],\"last_error\":\"rank 1 (sglang-0-1) lost: "
        "silent for 10001 ms\"}\n");
  /* A worker whose GPU check (--gpu-check nccl) has its result and waits
   * for the group's verdict, as lwsi_status_doc writes "gpu_check". */
  puts_("status", "gpu-check",
        "{\"version\":\"0.1.0\",\"rank\":1,\"size\":2,\"role\":\"worker\",\"phase\":\"checking\","
        "\"ready\":false,\"leader\":{\"address\":\"vllm-0.vllm\",\"ip\":\"10.244.1.17\"},\"child\":"
        "{\"state\":\"not-started\",\"orphans_reaped\":0},\"upstream\":null,\"gpu_check\":"
        "{\"mode\":\"nccl\",\"state\":\"passed\",\"group_passed\":false,\"devices\":8,"
        "\"model\":\"NVIDIA H200\",\"time_s\":41.5,\"busbw_gbps\":371.2,\"error\":\"\"},"
        "\"last_error\":null}\n");
}

/* ---- gpurun: the check's stdout lines (docs/gpucheck.md), and its stdin ---- */

static void gpurun(void)
{
  _Static_assert(sizeof(HEX256) == 257, "256 hex digits");
  puts_("gpurun", "leader-nccl",
        "{\"event\":\"start\",\"mode\":\"nccl\",\"pid\":41,\"node_rank\":0,\"nodes\":2,\"gpus\":8,"
        "\"bytes\":67108864,\"timeout_ms\":115000}\n"
        "{\"event\":\"library\",\"kind\":\"cudart\",\"path\":\"/usr/local/lib/python3.12/"
        "dist-packages/nvidia/cuda_runtime/lib/libcudart.so.12\",\"version\":\"12.8\","
        "\"driver\":\"12.8\"}\n"
        "{\"event\":\"library\",\"kind\":\"nccl\",\"path\":\"/usr/lib/x86_64-linux-gnu/"
        "libnccl.so.2\",\"version\":\"2.26.2\"}\n"
        "{\"event\":\"nccl_id\",\"id\":\"" HEX256 "\"}\n"
        "{\"event\":\"phase\",\"phase\":\"devices\",\"elapsed_ms\":3.125}\n"
        "{\"event\":\"device\",\"index\":0,\"name\":\"NVIDIA H200\",\"pci\":\"00000000:18:00.0\","
        "\"total_bytes\":150754820096,\"free_bytes\":150000000000,\"ok\":true,\"time_ms\":212.4,"
        "\"h2d_gbps\":21.4,\"d2h_gbps\":22.0}\n"
        "{\"event\":\"phase\",\"phase\":\"nccl_init\",\"elapsed_ms\":250.5}\n"
        "{\"event\":\"result\",\"ok\":true,\"mode\":\"nccl\",\"exit\":0,\"error\":null,"
        "\"stage\":null,\"timeout\":false,\"node_rank\":0,\"nodes\":2,\"gpus_visible\":8,"
        "\"devices\":[{\"index\":0,\"name\":\"NVIDIA H200\",\"pci\":\"00000000:18:00.0\","
        "\"total_bytes\":150754820096,\"ok\":true,\"time_ms\":212.4,\"rank\":0}],"
        "\"bytes\":67108864,\"nranks\":16,\"rank_base\":0,\"init_ms\":1834.2,"
        "\"allreduce_ms\":0.912,\"algbw_gbps\":73.6,\"busbw_gbps\":128.8,\"time_ms\":2410.7}\n");
  puts_("gpurun", "worker-failed",
        "{\"event\":\"start\",\"mode\":\"nccl\",\"pid\":9,\"node_rank\":2,\"nodes\":4}\n"
        "{\"event\":\"phase\",\"phase\":\"nccl_id\",\"elapsed_ms\":1.5}\n"
        "{\"event\":\"result\",\"ok\":false,\"mode\":\"nccl\",\"exit\":1,\"error\":\"GPU 1 "
        "(rank 5): wrong all-reduce sum at element 262144: got 37, expected 36 (sum over 8 "
        "ranks)\",\"stage\":\"verify\",\"timeout\":false,\"devices\":[{\"index\":0,\"name\":"
        "\"NVIDIA H200\",\"ok\":true},{\"index\":1,\"name\":\"NVIDIA H200\",\"ok\":true}],"
        "\"busbw_gbps\":null,\"time_ms\":2410.7}\n");
  puts_("gpurun", "cuda-nolib",
        "{\"event\":\"result\",\"ok\":false,\"mode\":\"cuda\",\"exit\":3,\"error\":\"cannot load "
        "the CUDA runtime: libcudart.so.12: cannot open shared object file\",\"stage\":\"load\","
        "\"timeout\":false,\"devices\":[],\"time_ms\":0.8}\n");
  /* What the agent writes to a worker's check, and what a person types. */
  puts_("gpurun", "stdin-id", "{\"nccl_id\":\"" HEX256 "\"}\n");
  puts_("gpurun", "stdin-bare", "  " HEX256 " \r\n");
  puts_("gpurun", "stdin-other", "{\"hello\":1}\n{\"nccl_id\" : \"" HEX256 "\",\"x\":2}\n");
}

int main(int argc, char **argv)
{
  if (argc > 1)
    root = argv[1];
  mkdir(root, 0755);
  wire();
  config();
  expand();
  http();
  status();
  gpurun();
  return 0;
}
