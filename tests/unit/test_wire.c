/* The wire format: every message round-trips, the splitter takes any
 * slicing of the stream, bad input is refused without a crash, and the
 * proofs depend on the token and on every field they cover. */
#include "lwsinit/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "tests/helpers/wire_msg.h"

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(seed + i * 7);
}

/* One sample of every message type, with every optional part present and
 * the version set, as decode gives a message back. */
static uint32_t sample_missing[] = {2, 3, 9};
static char *sample_cmd[] = {"python3", "-m", "sglang.launch_server", NULL};
static struct lwsi_wire_member sample_members[3] = {
    {0, "10.0.0.1", "lws-0"}, {1, "10.0.0.2", "lws-0-1"}, {2, "fd00::3", "lws-0-2"}};

static void sample(enum lwsi_msg_type t, struct lwsi_msg *m)
{
  memset(m, 0, sizeof(*m));
  m->v = LWSI_WIRE_VERSION;
  m->type = t;
  switch (t) {
  case LWSI_MSG_HELLO:
    fill(m->hello.nonce, sizeof(m->hello.nonce), 1);
    fill(m->hello.challenge, sizeof(m->hello.challenge), 2);
    m->hello.auth = true;
    break;
  case LWSI_MSG_JOIN:
    m->join.rank = 3;
    m->join.size = 4;
    m->join.gpus = 8;
    strcpy(m->join.revision, "5f6c9d7b8");
    strcpy(m->join.pod, "sglang-0-3");
    fill(m->join.nonce, sizeof(m->join.nonce), 3);
    fill(m->join.challenge, sizeof(m->join.challenge), 4);
    fill(m->join.digest, sizeof(m->join.digest), 5);
    strcpy(m->join.preset, "sglang");
    m->join.dist_port = 5000;
    m->join.cmd_total = 4;
    m->join.ncmd = 3;
    m->join.cmd = sample_cmd;
    m->join.auth = true;
    fill(m->join.mac, sizeof(m->join.mac), 6);
    break;
  case LWSI_MSG_WELCOME:
    m->welcome.rank = 3;
    m->welcome.auth = true;
    fill(m->welcome.proof, sizeof(m->welcome.proof), 7);
    break;
  case LWSI_MSG_REFUSE:
    strcpy(m->refuse.code, "revision");
    strcpy(m->refuse.reason, "wrong revision: this worker has 'a', the leader 'b' — ünïcode ok");
    m->refuse.auth = true;
    memset(m->refuse.mac, 0x5a, sizeof(m->refuse.mac));
    break;
  case LWSI_MSG_WAITING:
    m->waiting.joined = 7;
    m->waiting.nmissing = 5;
    m->waiting.missing = sample_missing;
    m->waiting.nlisted = 3;
    break;
  case LWSI_MSG_RELEASE:
    m->release.size = 3;
    m->release.members = sample_members;
    m->release.nmembers = 3;
    break;
  case LWSI_MSG_FAIL:
    strcpy(m->fail.reason, "ranks 2, 3 never arrived");
    break;
  case LWSI_MSG_HB:
    m->hb.seq = 42;
    m->hb.ts = 999999999999999ull; /* the largest that JSON carries exactly here */
    m->hb.has_echo = true;
    m->hb.echo = 123456789;
    m->hb.held = 250;
    strcpy(m->hb.child, "running");
    m->hb.upstream = true;
    m->hb.has_health = true;
    m->hb.upstream_on = true;
    m->hb.upstream_age = 4000;
    strcpy(m->hb.upstream_error, "HTTP 503");
    m->hb.stopping = true;
    break;
  case LWSI_MSG_LOST:
    m->lost.rank = 2;
    strcpy(m->lost.reason, "silent for 10001 ms");
    break;
  case LWSI_MSG_BYE:
    strcpy(m->bye.reason, "SIGTERM");
    break;
  case LWSI_MSG_APP:
    strcpy(m->app.kind, "gpu_result_2");
    m->app.data = (char *)"{\"ok\":false,\"error\":\"GPU 1 \\\"H200\\\" \\\\ \u00fcn\u00efcode\"}";
    break;
  default:
    break;
  }
}

static void test_round_trips(void)
{
  for (int t = LWSI_MSG_HELLO; t < LWSI_MSG_TYPE_COUNT; t++) {
    struct lwsi_msg in, out;
    sample((enum lwsi_msg_type)t, &in);
    uint8_t *frame = NULL;
    size_t len = 0;
    int rc = lwsi_wire_encode(&in, &frame, &len);
    const char *name = lwsi_wire_type_name((enum lwsi_msg_type)t);
    TAP_OK(rc == 0 && frame != NULL && len > LWSI_WIRE_HDR_LEN, "encode %s", name);
    if (rc != 0)
      continue;
    uint32_t n = (uint32_t)frame[0] << 24 | frame[1] << 16 | frame[2] << 8 | frame[3];
    TAP_OK(n == len - LWSI_WIRE_HDR_LEN, "%s: the header holds the payload length", name);
    rc = lwsi_wire_decode(frame + LWSI_WIRE_HDR_LEN, len - LWSI_WIRE_HDR_LEN, &out);
    TAP_OK(rc == 0 && out.v == LWSI_WIRE_VERSION, "decode %s (rc %d)", name, rc);
    TAP_OK(rc == 0 && wire_msg_equal(&in, &out), "%s round-trips", name);
    lwsi_wire_msg_free(&out);
    free(frame);
  }

  /* The optional parts, absent. */
  struct lwsi_msg in, out;
  uint8_t *frame;
  size_t len;
  sample(LWSI_MSG_JOIN, &in);
  in.join.auth = false;
  in.join.revision[0] = '\0';
  in.join.pod[0] = '\0';
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == 0, "encode an open join");
  TAP_OK(lwsi_wire_decode(frame + 4, len - 4, &out) == 0 && wire_msg_equal(&in, &out) &&
             !out.join.auth,
         "an open join with empty revision and pod round-trips");
  TAP_OK(memmem(frame + 4, len - 4, "\"mac\"", 5) == NULL, "an open join carries no mac");
  lwsi_wire_msg_free(&out);
  free(frame);
  sample(LWSI_MSG_HB, &in);
  in.hb.has_echo = false;
  in.hb.echo = in.hb.held = 0;
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == 0, "encode a first heartbeat");
  TAP_OK(lwsi_wire_decode(frame + 4, len - 4, &out) == 0 && wire_msg_equal(&in, &out),
         "a heartbeat without echo round-trips");
  lwsi_wire_msg_free(&out);
  free(frame);
  sample(LWSI_MSG_HB, &in);
  in.hb.has_health = false;
  in.hb.upstream_on = in.hb.stopping = false;
  in.hb.upstream_age = 0;
  in.hb.upstream_error[0] = '\0';
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == 0, "encode a heartbeat without health");
  TAP_OK(memmem(frame + 4, len - 4, "\"stopping\"", 10) == NULL &&
             lwsi_wire_decode(frame + 4, len - 4, &out) == 0 && wire_msg_equal(&in, &out) &&
             !out.hb.has_health,
         "a heartbeat without health (an older agent's) round-trips without the fields");
  lwsi_wire_msg_free(&out);
  free(frame);
  sample(LWSI_MSG_WAITING, &in);
  in.waiting.nmissing = in.waiting.nlisted = 0;
  in.waiting.missing = NULL;
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == 0 &&
             lwsi_wire_decode(frame + 4, len - 4, &out) == 0 && wire_msg_equal(&in, &out),
         "an empty waiting list round-trips");
  lwsi_wire_msg_free(&out);
  free(frame);
}

static void test_encode_refuses(void)
{
  struct lwsi_msg m;
  uint8_t *frame = (uint8_t *)"x";
  size_t len = 1;
  sample(LWSI_MSG_FAIL, &m);
  strcpy(m.fail.reason, "two\nlines");
  TAP_OK(lwsi_wire_encode(&m, &frame, &len) == -EINVAL && frame == NULL && len == 0,
         "encode refuses a newline in text");
  sample(LWSI_MSG_BYE, &m);
  memcpy(m.bye.reason, "\xc3\x28", 3);
  TAP_OK(lwsi_wire_encode(&m, &frame, &len) == -EINVAL, "encode refuses invalid UTF-8");
  memset(&m, 0, sizeof(m));
  TAP_OK(lwsi_wire_encode(&m, &frame, &len) == -EINVAL, "encode refuses type none");
  m.type = LWSI_MSG_TYPE_COUNT;
  TAP_OK(lwsi_wire_encode(&m, &frame, &len) == -EINVAL, "encode refuses an unknown type");
  sample(LWSI_MSG_HB, &m);
  m.hb.seq = 1000000000000000ull;
  TAP_OK(lwsi_wire_encode(&m, &frame, &len) == -EINVAL,
         "encode refuses a number JSON cannot carry");
  sample(LWSI_MSG_JOIN, &m);
  m.join.size = 0;
  TAP_OK(lwsi_wire_encode(&m, &frame, &len) == -EINVAL, "encode refuses size 0");

  /* A member table too big for one frame. */
  uint32_t n = 1000;
  struct lwsi_wire_member *mb = calloc(n, sizeof(*mb));
  for (uint32_t i = 0; i < n; i++) {
    mb[i].rank = i;
    strcpy(mb[i].addr, "fd00:1234:5678:9abc:def0:1234:5678:9abc");
    memset(mb[i].pod, 'p', 200);
  }
  memset(&m, 0, sizeof(m));
  m.type = LWSI_MSG_RELEASE;
  m.release.size = m.release.nmembers = n;
  m.release.members = mb;
  /* A release grows with the group: 1000 members with long names is about
   * 280 KB, which a worker of a group of 1000 reads and nobody else does. */
  int erc = lwsi_wire_encode(&m, &frame, &len);
  TAP_OK(erc == 0 && len > LWSI_WIRE_MAX_PAYLOAD && len <= LWSI_WIRE_RELEASE_MAX(n),
         "a release of 1000 long-named members encodes (%zu bytes)", erc == 0 ? len : 0);
  if (erc == 0) {
    struct lwsi_wire_reader rd;
    const uint8_t *d, *f;
    size_t dl, fl;
    lwsi_wire_reader_init(&rd);
    d = frame;
    dl = len;
    TAP_OK(lwsi_wire_split(&rd, &d, &dl, &f, &fl) == -EMSGSIZE,
           "a reader with the default bound refuses it");
    lwsi_wire_reader_free(&rd);
    lwsi_wire_reader_init(&rd);
    lwsi_wire_reader_set_max(&rd, LWSI_WIRE_RELEASE_MAX(n));
    d = frame;
    dl = 3000;
    int src = lwsi_wire_split(&rd, &d, &dl, &f, &fl);
    dl = len - 3000;
    src = src == 0 ? lwsi_wire_split(&rd, &d, &dl, &f, &fl) : -1;
    struct lwsi_msg back;
    TAP_OK(src == 1 && lwsi_wire_decode(f, fl, &back) == 0 && back.type == LWSI_MSG_RELEASE &&
               back.release.nmembers == n && back.release.members[999].rank == 999 &&
               strcmp(back.release.members[999].pod, mb[999].pod) == 0,
           "a worker's reader for a group of 1000 takes it in pieces and it decodes");
    if (src == 1)
      lwsi_wire_msg_free(&back);
    lwsi_wire_reader_free(&rd);
    free(frame);
  }
  mb[5].rank = 6;
  m.release.size = m.release.nmembers = 10;
  TAP_OK(lwsi_wire_encode(&m, &frame, &len) == -EINVAL,
         "a member table out of rank order is refused");
  free(mb);
}

static int decode_str(const char *json)
{
  struct lwsi_msg m;
  int rc = lwsi_wire_decode((const uint8_t *)json, strlen(json), &m);
  if (rc == 0)
    lwsi_wire_msg_free(&m);
  return rc;
}

#define HB_OK "\"seq\":1,\"ts\":2,\"child\":\"running\",\"upstream\":true"

static void test_decode_refuses(void)
{
  struct lwsi_msg m;
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK "}") == 0, "a minimal heartbeat decodes");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK ",\"future\":[1,{}]}") == 0,
         "unknown fields are ignored");
  TAP_OK(decode_str(" {\"v\":1,\"type\":\"bye\",\"reason\":\"x\"}\n") == 0,
         "whitespace around the object is fine");
  TAP_OK(lwsi_wire_decode(NULL, 0, &m) == -EBADMSG, "an empty payload is refused");
  TAP_OK(decode_str("GET / HTTP/1.1\r\n\r\n") == -EBADMSG, "HTTP is not a message");
  TAP_OK(decode_str("[1,2,3]") == -EBADMSG, "an array is not a message");
  TAP_OK(decode_str("\"hb\"") == -EBADMSG, "a string is not a message");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"x\"}{}") == -EBADMSG,
         "trailing bytes are refused");
  TAP_OK(decode_str("{\"type\":\"bye\",\"reason\":\"x\"}") == -EBADMSG, "no version is refused");
  TAP_OK(decode_str("{\"v\":\"1\",\"type\":\"bye\",\"reason\":\"x\"}") == -EBADMSG,
         "a version as text is refused");
  const char *v2 = "{\"v\":2,\"type\":\"hello\"}";
  int rc = lwsi_wire_decode((const uint8_t *)v2, strlen(v2), &m);
  TAP_OK(rc == -EPROTONOSUPPORT && m.v == 2, "version 2 is -EPROTONOSUPPORT with v set");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"shout\"}") == -ENOMSG, "an unknown type is -ENOMSG");
  TAP_OK(decode_str("{\"v\":1,\"type\":7}") == -EBADMSG, "a numeric type is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\",\"seq\":1,\"ts\":2,\"child\":\"r\"}") == -EBADMSG,
         "a missing field is refused");
  TAP_OK(decode_str(
             "{\"v\":1,\"type\":\"hb\",\"seq\":1.5,\"ts\":2,\"child\":\"r\",\"upstream\":true}") ==
             -EBADMSG,
         "a fraction where an integer belongs is refused");
  TAP_OK(decode_str(
             "{\"v\":1,\"type\":\"hb\",\"seq\":-1,\"ts\":2,\"child\":\"r\",\"upstream\":true}") ==
             -EBADMSG,
         "a negative number is refused");
  TAP_OK(
      decode_str(
          "{\"v\":1,\"type\":\"hb\",\"seq\":1e300,\"ts\":2,\"child\":\"r\",\"upstream\":true}") ==
          -EBADMSG,
      "a huge number is refused");
  TAP_OK(
      decode_str("{\"v\":1,\"type\":\"hb\",\"seq\":1,\"ts\":2,\"child\":\"r\",\"upstream\":1}") ==
          -EBADMSG,
      "a number where a bool belongs is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK ",\"echo\":5}") == -EBADMSG,
         "echo without held is refused");
#define HB_HEALTH "\"upstream_on\":true,\"upstream_age\":5,\"upstream_error\":\"HTTP 503\""
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK "," HB_HEALTH ",\"stopping\":false}") ==
             0,
         "a heartbeat with its health fields decodes");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK "," HB_HEALTH "}") == -EBADMSG,
         "part of the health fields is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK ",\"stopping\":true}") == -EBADMSG,
         "stopping alone is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK "," HB_HEALTH ",\"stopping\":1}") ==
             -EBADMSG,
         "a health field of the wrong type is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hb\"," HB_OK ",\"upstream_on\":true,"
                    "\"upstream_age\":-5,\"upstream_error\":\"\",\"stopping\":false}") ==
             -EBADMSG,
         "a negative upstream age is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"a\\nb\"}") == -EBADMSG,
         "a newline in text is refused (log injection)");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"a\\u001bb\"}") == -EBADMSG,
         "an escape character in text is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"a\\u0085b\"}") == -EBADMSG,
         "a C1 control in text is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"\xc0\xaf\"}") == -EBADMSG,
         "an overlong UTF-8 form is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"\xed\xa0\x80\"}") == -EBADMSG,
         "a UTF-8 surrogate is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"\xff\"}") == -EBADMSG,
         "a stray byte is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"bye\",\"reason\":\"h\xc3\xa9\"}") == 0,
         "valid UTF-8 is fine");

  char big[1200];
  snprintf(big, sizeof(big), "{\"v\":1,\"type\":\"bye\",\"reason\":\"%0600d\"}", 0);
  TAP_OK(decode_str(big) == -EBADMSG, "text over its limit is refused, not truncated");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"hello\",\"nonce\":\"00\",\"challenge\":\"00\","
                    "\"auth\":false}") == -EBADMSG,
         "a short nonce is refused");
  TAP_OK(decode_str(
             "{\"v\":1,\"type\":\"hello\",\"nonce\":\"zz112233445566778899aabbccddeeff\","
             "\"challenge\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\","
             "\"auth\":false}") == -EBADMSG,
         "a nonce that is not hex is refused");
  TAP_OK(decode_str(
             "{\"v\":1,\"type\":\"hello\",\"nonce\":\"00112233445566778899AABBCCDDEEFF\","
             "\"challenge\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\","
             "\"auth\":false}") == 0,
         "upper-case hex is fine");
  TAP_OK(
      decode_str("{\"v\":1,\"type\":\"waiting\",\"joined\":1,\"nmissing\":1,\"missing\":[2,3]}") ==
          -EBADMSG,
      "more ranks listed than missing is refused");
  TAP_OK(decode_str(
             "{\"v\":1,\"type\":\"waiting\",\"joined\":1,\"nmissing\":2,\"missing\":[2,\"3\"]}") ==
             -EBADMSG,
         "a rank as text is refused");
  TAP_OK(decode_str(
             "{\"v\":1,\"type\":\"waiting\",\"joined\":1,\"nmissing\":2,\"missing\":[2,70000]}") ==
             -EBADMSG,
         "a rank out of range is refused");
  TAP_OK(
      decode_str("{\"v\":1,\"type\":\"release\",\"size\":2,\"members\":[{\"rank\":1,\"addr\":\"\","
                 "\"pod\":\"\"},{\"rank\":0,\"addr\":\"\",\"pod\":\"\"}]}") == -EBADMSG,
      "a member table out of rank order is refused");
  TAP_OK(
      decode_str("{\"v\":1,\"type\":\"release\",\"size\":3,\"members\":[{\"rank\":0,\"addr\":\"\","
                 "\"pod\":\"\"}]}") == -EBADMSG,
      "a member table shorter than the size is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"release\",\"size\":1,\"members\":[7]}") == -EBADMSG,
         "a member that is not an object is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"join\",\"rank\":1,\"size\":0}") == -EBADMSG,
         "a join with size 0 is refused");

  /* Deep nesting must not blow the stack. */
  size_t depth = 20000;
  char *deep = malloc(2 * depth + 1);
  memset(deep, '[', depth);
  memset(deep + depth, ']', depth);
  deep[2 * depth] = '\0';
  TAP_OK(lwsi_wire_decode((uint8_t *)deep, 2 * depth, &m) == -EBADMSG, "deep nesting is refused");
  free(deep);
}

/* Every prefix and every single-byte change of a valid payload decodes or
 * fails cleanly (ASan and valgrind watch the rest). */
static void test_truncated_and_mutated(void)
{
  int crashes = 0, accepted_prefix = 0;
  for (int t = LWSI_MSG_HELLO; t < LWSI_MSG_TYPE_COUNT; t++) {
    struct lwsi_msg in, out;
    sample((enum lwsi_msg_type)t, &in);
    uint8_t *frame;
    size_t len;
    if (lwsi_wire_encode(&in, &frame, &len) < 0) {
      crashes++;
      continue;
    }
    const uint8_t *p = frame + 4;
    size_t n = len - 4;
    for (size_t cut = 0; cut < n; cut++) {
      int rc = lwsi_wire_decode(p, cut, &out);
      if (rc == 0) {
        accepted_prefix++;
        lwsi_wire_msg_free(&out);
      }
    }
    uint8_t *copy = malloc(n);
    unsigned seed = 1234u + (unsigned)t;
    for (int i = 0; i < 2000; i++) {
      memcpy(copy, p, n);
      seed = seed * 1103515245u + 12345u;
      copy[(seed >> 8) % n] = (uint8_t)(seed >> 20);
      if (lwsi_wire_decode(copy, n, &out) == 0)
        lwsi_wire_msg_free(&out);
    }
    free(copy);
    free(frame);
  }
  TAP_OK(crashes == 0, "every sample encodes");
  TAP_OK(accepted_prefix == 0, "no truncated payload decodes");
  TAP_OK(1, "2000 mutations of each message decode or fail cleanly");
}

static void test_splitter(void)
{
  /* A stream of every message, fed one byte at a time. */
  uint8_t *stream = NULL;
  size_t slen = 0;
  int nframes = 0;
  for (int t = LWSI_MSG_HELLO; t < LWSI_MSG_TYPE_COUNT; t++) {
    struct lwsi_msg in;
    sample((enum lwsi_msg_type)t, &in);
    uint8_t *frame;
    size_t len;
    if (lwsi_wire_encode(&in, &frame, &len) < 0)
      continue;
    stream = realloc(stream, slen + len);
    memcpy(stream + slen, frame, len);
    slen += len;
    nframes++;
    free(frame);
  }
  for (size_t step = 1; step <= 7; step += 3) {
    struct lwsi_wire_reader rd;
    lwsi_wire_reader_init(&rd);
    int got = 0, good = 0, err = 0;
    for (size_t off = 0; off < slen; off += step) {
      const uint8_t *d = stream + off;
      size_t n = off + step <= slen ? step : slen - off;
      for (;;) {
        const uint8_t *f;
        size_t fl;
        int rc = lwsi_wire_split(&rd, &d, &n, &f, &fl);
        if (rc < 0)
          err++;
        if (rc <= 0)
          break;
        got++;
        struct lwsi_msg out, in;
        if (lwsi_wire_decode(f, fl, &out) == 0) {
          sample(out.type, &in);
          if (wire_msg_equal(&in, &out) &&
              out.type == (enum lwsi_msg_type)(LWSI_MSG_HELLO + got - 1))
            good++;
          lwsi_wire_msg_free(&out);
        }
      }
    }
    TAP_OK(err == 0 && got == nframes && good == nframes,
           "fed %zu byte(s) at a time: %d of %d frames, in order and intact", step, good, nframes);
    lwsi_wire_reader_free(&rd);
  }
  /* The whole stream at once: frames come straight from the caller's buffer. */
  struct lwsi_wire_reader rd;
  lwsi_wire_reader_init(&rd);
  const uint8_t *d = stream;
  size_t n = slen;
  const uint8_t *f;
  size_t fl;
  int got = 0, inplace = 0;
  while (lwsi_wire_split(&rd, &d, &n, &f, &fl) == 1) {
    got++;
    if (f >= stream && f < stream + slen)
      inplace++;
  }
  TAP_OK(got == nframes && inplace == nframes && n == 0, "the whole stream at once, no copies");
  TAP_OK(rd.body == NULL, "no buffer was allocated for whole frames");
  lwsi_wire_reader_free(&rd);
  free(stream);

  /* Oversized and zero-length frames are refused at the header. */
  uint8_t over[8] = {0x00, 0x01, 0x00, 0x01, '{', '}', 0, 0};
  lwsi_wire_reader_init(&rd);
  d = over;
  n = 8;
  TAP_OK(lwsi_wire_split(&rd, &d, &n, &f, &fl) == -EMSGSIZE, "a 65537-byte frame is -EMSGSIZE");
  d = over;
  n = 8;
  TAP_OK(lwsi_wire_split(&rd, &d, &n, &f, &fl) == -EMSGSIZE, "the error is sticky");
  lwsi_wire_reader_free(&rd);
  uint8_t http[] = "GET / HTTP/1.1\r\n";
  lwsi_wire_reader_init(&rd);
  d = http;
  n = 1;
  int rc = 0;
  for (size_t i = 0; i < 4 && rc == 0; i++, n = 1)
    rc = lwsi_wire_split(&rd, &d, &n, &f, &fl);
  TAP_OK(rc == -EMSGSIZE && rd.body == NULL,
         "HTTP sent byte by byte is refused at its 4th byte, before any allocation");
  lwsi_wire_reader_free(&rd);
  uint8_t zero[4] = {0, 0, 0, 0};
  lwsi_wire_reader_init(&rd);
  d = zero;
  n = 4;
  TAP_OK(lwsi_wire_split(&rd, &d, &n, &f, &fl) == -EBADMSG, "a zero-length frame is refused");
  lwsi_wire_reader_free(&rd);
  /* The largest frame is fine, in pieces. */
  uint8_t *maxf = calloc(1, 4 + LWSI_WIRE_MAX_PAYLOAD);
  maxf[1] = 0x01; /* 65536 */
  lwsi_wire_reader_init(&rd);
  d = maxf;
  n = 1000;
  rc = lwsi_wire_split(&rd, &d, &n, &f, &fl);
  size_t left = 4 + LWSI_WIRE_MAX_PAYLOAD - 1000;
  n = left;
  rc = rc == 0 ? lwsi_wire_split(&rd, &d, &n, &f, &fl) : -1;
  TAP_OK(rc == 1 && fl == LWSI_WIRE_MAX_PAYLOAD && n == 0, "a 64 KiB frame in two pieces");
  lwsi_wire_reader_free(&rd);
  free(maxf);
}

static void test_proofs(void)
{
  const uint8_t tok[] = "s3cret";
  const uint8_t bad[] = "s3cres";
  struct lwsi_msg h, j;
  sample(LWSI_MSG_HELLO, &h);
  sample(LWSI_MSG_JOIN, &j);
  uint8_t mac[32], mac2[32], wmac[32];
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j.join, mac) == 0, "join mac computes");
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j.join, mac2) == 0 && lwsi_wire_mac_equal(mac, mac2),
         "the right token verifies");
  TAP_OK(lwsi_wire_join_mac(bad, 6, &h.hello, &j.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "a wrong token does not verify");
  TAP_OK(lwsi_wire_join_mac(tok, 5, &h.hello, &j.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "a prefix of the token does not verify");
  struct lwsi_msg j2 = j;
  j2.join.rank = 2;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the rank");
  j2 = j;
  strcpy(j2.join.revision, "other");
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the revision");
  j2 = j;
  j2.join.digest[31] ^= 1;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the command digest");
  j2 = j;
  char *other_cmd[] = {"python3", "-m", "sglang.launch_server --tp", NULL};
  j2.join.cmd = other_cmd;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the launch command's arguments");
  char *shifted[] = {"python3", "-msglang.launch_server", "", NULL};
  j2.join.cmd = shifted;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "... with their boundaries");
  j2 = j;
  j2.join.ncmd = 2;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "... and their number");
  j2 = j;
  j2.join.cmd_total = 5;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "... and the total");
  j2 = j;
  strcpy(j2.join.preset, "vllm");
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the preset");
  j2 = j;
  j2.join.dist_port = 5001;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers {dist_port}");
  j2 = j;
  j2.join.nonce[0] ^= 1;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the worker's nonce");
  /* Moving a byte from the revision to the pod changes the mac: the text
   * fields are length-prefixed. */
  j2 = j;
  strcpy(j2.join.revision, "ab");
  strcpy(j2.join.pod, "c");
  struct lwsi_msg j3 = j;
  strcpy(j3.join.revision, "a");
  strcpy(j3.join.pod, "bc");
  uint8_t mac3[32];
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             lwsi_wire_join_mac(tok, 6, &h.hello, &j3.join, mac3) == 0 &&
             !lwsi_wire_mac_equal(mac2, mac3),
         "text fields cannot be shifted into each other");
  struct lwsi_msg h2 = h;
  h2.hello.challenge[0] ^= 1;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h2.hello, &j.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the leader's challenge (no replay)");
  h2 = h;
  h2.hello.nonce[0] ^= 1;
  TAP_OK(lwsi_wire_join_mac(tok, 6, &h2.hello, &j.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(mac, mac2),
         "the mac covers the leader's incarnation");
  TAP_OK(lwsi_wire_welcome_mac(tok, 6, &h.hello, &j.join, wmac) == 0 &&
             !lwsi_wire_mac_equal(mac, wmac),
         "the leader's proof differs from the worker's");
  TAP_OK(lwsi_wire_welcome_mac(bad, 6, &h.hello, &j.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(wmac, mac2),
         "the leader's proof depends on the token");
  j2 = j;
  j2.join.challenge[3] ^= 1;
  TAP_OK(lwsi_wire_welcome_mac(tok, 6, &h.hello, &j2.join, mac2) == 0 &&
             !lwsi_wire_mac_equal(wmac, mac2),
         "the leader's proof covers the worker's challenge");
  /* The refusal's proof: its own label, bound to both challenges, and to
   * the code and reason it carries. */
  struct lwsi_msg_refuse rf = {.code = "revision", .reason = "wrong revision"};
  uint8_t rmac[32];
  TAP_OK(lwsi_wire_refuse_mac(tok, 6, &h.hello, &j.join, &rf, rmac) == 0 &&
             !lwsi_wire_mac_equal(rmac, wmac) && !lwsi_wire_mac_equal(rmac, mac),
         "the refusal's proof differs from the welcome's and the join's");
  struct lwsi_msg_refuse rf2 = rf;
  strcpy(rf2.reason, "wrong revisioN");
  TAP_OK(lwsi_wire_refuse_mac(tok, 6, &h.hello, &j.join, &rf2, mac2) == 0 &&
             !lwsi_wire_mac_equal(rmac, mac2),
         "the refusal's proof covers its reason");
  rf2 = rf;
  strcpy(rf2.code, "token");
  TAP_OK(lwsi_wire_refuse_mac(tok, 6, &h.hello, &j.join, &rf2, mac2) == 0 &&
             !lwsi_wire_mac_equal(rmac, mac2),
         "the refusal's proof covers its code");
  TAP_OK(lwsi_wire_refuse_mac(tok, 6, &h.hello, &j2.join, &rf, mac2) == 0 &&
             !lwsi_wire_mac_equal(rmac, mac2),
         "the refusal's proof covers the worker's challenge (no replay)");
  TAP_OK(lwsi_wire_refuse_mac(bad, 6, &h.hello, &j.join, &rf, mac2) == 0 &&
             !lwsi_wire_mac_equal(rmac, mac2),
         "the refusal's proof depends on the token");
  TAP_OK(lwsi_wire_join_mac(NULL, 0, &h.hello, &j.join, mac2) == -EINVAL, "no token: no mac");
  TAP_OK(lwsi_wire_mac_equal(mac, mac) && !lwsi_wire_mac_equal(mac, wmac), "mac_equal");
}

#define APP_JSON "{\"v\":1,\"type\":\"app\",\"kind\":\"k\",\"data\":\"%s\"}"

/* The application message: a kind token and up to 8 KiB of text, both
 * checked on the way out and on the way in. */
/* The join's launch command: what decodes, and its bounds. */
#define JOIN_HEAD                                                                                  \
  "{\"v\":1,\"type\":\"join\",\"rank\":1,\"size\":2,\"gpus\":0,\"revision\":\"\",\"pod\":\"p\","   \
  "\"nonce\":\"00000000000000000000000000000000\",\"challenge\":"                                  \
  "\"0000000000000000000000000000000000000000000000000000000000000000\",\"preset\":\"none\","      \
  "\"dist_port\":0,\"digest\":"                                                                    \
  "\"0000000000000000000000000000000000000000000000000000000000000000\",\"auth\":false,"

static int join_with(const char *tail)
{
  char *json = NULL;
  if (asprintf(&json, "%s%s}", JOIN_HEAD, tail) < 0)
    return -ENOMEM;
  int rc = decode_str(json);
  free(json);
  return rc;
}

static void test_join_cmd(void)
{
  struct lwsi_msg m;
  const char *ok = JOIN_HEAD "\"cmd_total\":3,\"cmd\":[\"engine\",\"--tp\",\"8\"]}";
  TAP_OK(lwsi_wire_decode((const uint8_t *)ok, strlen(ok), &m) == 0 && m.join.ncmd == 3 &&
             m.join.cmd_total == 3 && strcmp(m.join.cmd[2], "8") == 0 && m.join.cmd[3] == NULL &&
             strcmp(m.join.preset, "none") == 0,
         "a join's launch command decodes");
  lwsi_wire_msg_free(&m);
  TAP_OK(join_with("\"cmd_total\":0,\"cmd\":[]") == 0, "an empty command decodes");
  TAP_OK(join_with("\"cmd_total\":9,\"cmd\":[\"a\"]") == 0, "fewer sent than in all");
  TAP_OK(join_with("\"cmd_total\":1,\"cmd\":[\"a\",\"b\"]") == -EBADMSG,
         "more sent than in all is refused");
  TAP_OK(join_with("\"cmd_total\":1") == -EBADMSG, "no cmd is refused");
  TAP_OK(join_with("\"cmd\":[\"a\"]") == -EBADMSG, "no cmd_total is refused");
  TAP_OK(join_with("\"cmd_total\":1,\"cmd\":\"a\"") == -EBADMSG, "cmd as text is refused");
  TAP_OK(join_with("\"cmd_total\":1,\"cmd\":[1]") == -EBADMSG, "a number as argument is refused");
  TAP_OK(join_with("\"cmd_total\":1,\"cmd\":[\"a\\nb\"]") == -EBADMSG,
         "a control character is refused");
  TAP_OK(join_with("\"cmd_total\":2000000,\"cmd\":[]") == -EBADMSG, "a huge total is refused");
  /* 513 arguments, and 16 KiB + 1 of text. */
  size_t cap = 64 + 513 * 4 + LWSI_WIRE_CMD_MAX_TEXT + 8;
  char *t = malloc(cap);
  size_t o = (size_t)snprintf(t, cap, "\"cmd_total\":600,\"cmd\":[");
  for (int i = 0; i < 513; i++)
    o += (size_t)snprintf(t + o, cap - o, "%s\"a\"", i ? "," : "");
  snprintf(t + o, cap - o, "]");
  TAP_OK(join_with(t) == -EBADMSG, "513 arguments are refused");
  o = (size_t)snprintf(t, cap, "\"cmd_total\":2,\"cmd\":[\"");
  memset(t + o, 'x', LWSI_WIRE_CMD_MAX_TEXT);
  o += LWSI_WIRE_CMD_MAX_TEXT;
  snprintf(t + o, cap - o, "\",\"y\"]");
  TAP_OK(join_with(t) == -EBADMSG, "16 KiB and 1 byte of text is refused");
  snprintf(t + o, cap - o, "\"]");
  TAP_OK(join_with(t) == 0, "16 KiB of text decodes");
  free(t);
  /* The encoder keeps the same rules. */
  struct lwsi_msg j;
  sample(LWSI_MSG_JOIN, &j);
  uint8_t *frame;
  size_t len;
  char *bad[] = {"a\tb", NULL};
  j.join.cmd = bad;
  j.join.ncmd = 1;
  TAP_OK(lwsi_wire_encode(&j, &frame, &len) == -EINVAL, "the encoder refuses a control character");
  sample(LWSI_MSG_JOIN, &j);
  j.join.cmd_total = 2;
  TAP_OK(lwsi_wire_encode(&j, &frame, &len) == -EINVAL, "... and more sent than in all");
  /* The largest join fits a frame, backslashes doubled by JSON. */
  static char big[LWSI_WIRE_CMD_MAX_TEXT + 1];
  memset(big, '\\', LWSI_WIRE_CMD_MAX_TEXT);
  char *bigv[] = {big, NULL};
  sample(LWSI_MSG_JOIN, &j);
  j.join.cmd = bigv;
  j.join.ncmd = 1;
  j.join.cmd_total = 1;
  TAP_OK(lwsi_wire_encode(&j, &frame, &len) == 0 && len < LWSI_WIRE_MAX_PAYLOAD,
         "the largest join fits one frame (%zu bytes)", len);
  struct lwsi_msg back;
  TAP_OK(lwsi_wire_decode(frame + 4, len - 4, &back) == 0 &&
             strcmp(back.join.cmd[0], big) == 0,
         "and decodes to the same text");
  lwsi_wire_msg_free(&back);
  free(frame);
}

static void test_app(void)
{
  struct lwsi_msg in, out;
  uint8_t *frame;
  size_t len;
  char id[257];
  for (int i = 0; i < 256; i++)
    id[i] = "0123456789abcdef"[(i * 7) % 16];
  id[256] = '\0';
  memset(&in, 0, sizeof(in));
  in.type = LWSI_MSG_APP;
  strcpy(in.app.kind, "gpu_id");
  in.app.data = id;
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == 0, "app: encode an NCCL id (256 hex)");
  int rc = lwsi_wire_decode(frame + 4, len - 4, &out);
  TAP_OK(rc == 0 && out.type == LWSI_MSG_APP && strcmp(out.app.kind, "gpu_id") == 0 &&
             strcmp(out.app.data, id) == 0 && out.app.data != id,
         "app: the id round-trips into a buffer of its own");
  lwsi_wire_msg_free(&out);
  free(frame);

  /* The largest data, made of the characters JSON escapes: twice its size on
   * the wire, well within a frame. */
  char *big = malloc(LWSI_WIRE_DATA_MAX + 1);
  memset(big, '"', LWSI_WIRE_DATA_MAX - 1);
  big[LWSI_WIRE_DATA_MAX - 1] = '\0';
  in.app.data = big;
  TAP_OK(strlen(big) == 8192 && lwsi_wire_encode(&in, &frame, &len) == 0 && len > 2 * 8192,
         "app: 8 KiB of quotes encodes (%zu bytes)", len);
  rc = lwsi_wire_decode(frame + 4, len - 4, &out);
  TAP_OK(rc == 0 && strcmp(out.app.data, big) == 0, "app: 8 KiB of data round-trips");
  lwsi_wire_msg_free(&out);
  free(frame);
  big[LWSI_WIRE_DATA_MAX - 1] = '"';
  big[LWSI_WIRE_DATA_MAX] = '\0';
  frame = (uint8_t *)"x";
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == -EINVAL && frame == NULL,
         "app: encode refuses data over 8 KiB");
  TAP_OK(!lwsi_wire_data_ok(big) && lwsi_wire_data_ok("") && !lwsi_wire_data_ok(NULL),
         "app: data_ok says the same (over 8 KiB, empty, NULL)");
  in.app.data = (char *)"{\n}";
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == -EINVAL, "app: encode refuses a newline in data");
  in.app.data = (char *)"\xc3\x28";
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == -EINVAL, "app: encode refuses invalid UTF-8");
  in.app.data = NULL;
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == -EINVAL, "app: encode refuses NULL data");
  in.app.data = (char *)"";
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == 0 &&
             lwsi_wire_decode(frame + 4, len - 4, &out) == 0 && out.app.data[0] == '\0',
         "app: empty data round-trips");
  lwsi_wire_msg_free(&out);
  free(frame);

  static const char *bad_kinds[] = {"", "GPU_ID", "gpu-id", "gpu id", "gpu.id", "gpu\xc3\xa9"};
  int refused = 0;
  for (size_t i = 0; i < sizeof(bad_kinds) / sizeof(bad_kinds[0]); i++) {
    strcpy(in.app.kind, bad_kinds[i]);
    if (!lwsi_wire_kind_ok(bad_kinds[i]) && lwsi_wire_encode(&in, &frame, &len) == -EINVAL)
      refused++;
  }
  TAP_OK(refused == (int)(sizeof(bad_kinds) / sizeof(bad_kinds[0])),
         "app: kinds that are empty or outside [a-z0-9_] are refused");
  memset(in.app.kind, 'a', sizeof(in.app.kind)); /* no NUL: 33 characters and more */
  TAP_OK(lwsi_wire_encode(&in, &frame, &len) == -EINVAL &&
             !lwsi_wire_kind_ok("abcdefghijklmnopqrstuvwxyz0123456"),
         "app: a kind over 32 characters is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":\"abcdefghijklmnopqrstuvwxyz0123456\","
                    "\"data\":\"\"}") == -EBADMSG,
         "app: the decoder refuses a kind over 32 characters");
  TAP_OK(lwsi_wire_kind_ok("abcdefghijklmnopqrstuvwxyz012345") &&
             lwsi_wire_kind_ok("gpu_verdict") &&
             lwsi_wire_kind_ok("_9") && !lwsi_wire_kind_ok(NULL),
         "app: a kind of 32 characters is fine");

  /* The decoder, from text. */
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":\"k\",\"data\":\"{}\",\"x\":1}") == 0,
         "app: a minimal message decodes (unknown fields ignored)");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":\"k\"}") == -EBADMSG,
         "app: no data is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"data\":\"x\"}") == -EBADMSG,
         "app: no kind is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":\"k\",\"data\":{\"ok\":true}}") ==
             -EBADMSG,
         "app: data as an object, not text, is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":\"Gpu\",\"data\":\"\"}") == -EBADMSG,
         "app: an upper-case kind is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":7,\"data\":\"\"}") == -EBADMSG,
         "app: a numeric kind is refused");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":\"k\",\"data\":\"a\\nb\"}") ==
             -EBADMSG,
         "app: a newline in data is refused (log injection)");
  TAP_OK(decode_str("{\"v\":1,\"type\":\"app\",\"kind\":\"k\",\"data\":\"\xff\"}") == -EBADMSG,
         "app: invalid UTF-8 in data is refused");
  char *json = malloc(LWSI_WIRE_DATA_MAX + 100);
  memset(big, 'x', LWSI_WIRE_DATA_MAX);
  big[LWSI_WIRE_DATA_MAX] = '\0';
  snprintf(json, LWSI_WIRE_DATA_MAX + 100, APP_JSON, big);
  TAP_OK(decode_str(json) == -EBADMSG, "app: data over 8 KiB is refused, not truncated");
  big[LWSI_WIRE_DATA_MAX - 1] = '\0';
  snprintf(json, LWSI_WIRE_DATA_MAX + 100, APP_JSON, big);
  TAP_OK(decode_str(json) == 0, "app: data of exactly 8 KiB decodes");
  free(json);
  free(big);
}

int main(void)
{
  test_round_trips();
  test_app();
  test_join_cmd();
  test_encode_refuses();
  test_decode_refuses();
  test_truncated_and_mutated();
  test_splitter();
  test_proofs();
  for (int t = 0; t <= LWSI_MSG_TYPE_COUNT; t++)
    if (lwsi_wire_type_name((enum lwsi_msg_type)t) == NULL)
      TAP_OK(0, "type %d has a name", t);
  TAP_STR_EQ(lwsi_wire_type_name(LWSI_MSG_TYPE_COUNT), "?", "unknown type name");
  return tap_done();
}
