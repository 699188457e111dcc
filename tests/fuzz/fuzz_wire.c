/* The rendezvous wire format (agent/wire.c), everything a peer's bytes
 * reach before the state machine: lwsi_wire_split on the stream and
 * lwsi_wire_decode on each frame.
 *
 * The input is a byte stream as it would arrive on a rendezvous
 * connection. It is split twice, in one piece and in small uneven pieces:
 * both must give the same frames and the same error. Every frame, and the
 * whole input taken as one payload, is decoded; a message that decodes
 * must re-encode (lwsi_wire_encode), decode again to the same message and
 * encode again to the same bytes; a refused one must leave nothing behind.
 * Decoded joins also go through the proofs (HMAC over every field).
 *
 * The splitter's bound is the reader's own (a worker raises it for its
 * leader's connection, lwsi_wire_reader_set_max): the input's length picks
 * the default, the largest a worker sets, or a small bound of 1..4096
 * bytes from its first bytes, so that -EMSGSIZE is reached at any point. */
#include "lwsinit/wire.h"

#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "tests/helpers/wire_msg.h"

static uint32_t be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void check_text(const char *s, size_t size)
{
  CHECK(strnlen(s, size) < size);
  CHECK(lwsi_wire_text_ok(s));
}

/* Everything the decoder promises about a message it accepted. */
static void check_decoded(const struct lwsi_msg *m)
{
  CHECK(m->v == LWSI_WIRE_VERSION);
  CHECK(m->type > LWSI_MSG_NONE && m->type < LWSI_MSG_TYPE_COUNT);
  CHECK(strcmp(lwsi_wire_type_name(m->type), "?") != 0);
  switch (m->type) {
  case LWSI_MSG_JOIN:
    CHECK(m->join.size >= 1 && m->join.size <= LWSI_WIRE_MAX_SIZE);
    CHECK(m->join.rank < LWSI_WIRE_MAX_SIZE);
    check_text(m->join.revision, sizeof(m->join.revision));
    check_text(m->join.pod, sizeof(m->join.pod));
    check_text(m->join.preset, sizeof(m->join.preset));
    /* The launch command keeps its bounds, each argument wire text. */
    CHECK(m->join.ncmd <= LWSI_WIRE_CMD_MAX_ARGS && m->join.ncmd <= m->join.cmd_total);
    CHECK(m->join.cmd_total <= LWSI_WIRE_CMD_MAX_TOTAL && m->join.dist_port <= 65535);
    CHECK(m->join.ncmd == 0 || m->join.cmd[m->join.ncmd] == NULL);
    {
      size_t text = 0;
      for (uint32_t i = 0; i < m->join.ncmd; i++) {
        CHECK(lwsi_wire_text_ok(m->join.cmd[i]));
        text += strlen(m->join.cmd[i]);
      }
      CHECK(text <= LWSI_WIRE_CMD_MAX_TEXT);
    }
    break;
  case LWSI_MSG_WELCOME:
    CHECK(m->welcome.rank < LWSI_WIRE_MAX_SIZE);
    break;
  case LWSI_MSG_REFUSE:
    check_text(m->refuse.code, sizeof(m->refuse.code));
    check_text(m->refuse.reason, sizeof(m->refuse.reason));
    break;
  case LWSI_MSG_WAITING:
    CHECK(m->waiting.nlisted <= LWSI_WIRE_MAX_LISTED);
    CHECK(m->waiting.nlisted <= m->waiting.nmissing);
    CHECK(m->waiting.nmissing <= LWSI_WIRE_MAX_SIZE);
    CHECK(m->waiting.joined <= LWSI_WIRE_MAX_SIZE);
    CHECK((m->waiting.nlisted == 0) == (m->waiting.missing == NULL));
    for (uint32_t i = 0; i < m->waiting.nlisted; i++)
      CHECK(m->waiting.missing[i] < LWSI_WIRE_MAX_SIZE);
    break;
  case LWSI_MSG_RELEASE:
    CHECK(m->release.size >= 1 && m->release.size <= LWSI_WIRE_MAX_SIZE);
    CHECK(m->release.nmembers == m->release.size && m->release.members != NULL);
    for (uint32_t i = 0; i < m->release.nmembers; i++) {
      CHECK(m->release.members[i].rank == i);
      check_text(m->release.members[i].addr, sizeof(m->release.members[i].addr));
      check_text(m->release.members[i].pod, sizeof(m->release.members[i].pod));
    }
    break;
  case LWSI_MSG_FAIL:
    check_text(m->fail.reason, sizeof(m->fail.reason));
    break;
  case LWSI_MSG_HB:
    check_text(m->hb.child, sizeof(m->hb.child));
    check_text(m->hb.upstream_error, sizeof(m->hb.upstream_error));
    break;
  case LWSI_MSG_LOST:
    CHECK(m->lost.rank < LWSI_WIRE_MAX_SIZE);
    check_text(m->lost.reason, sizeof(m->lost.reason));
    break;
  case LWSI_MSG_BYE:
    check_text(m->bye.reason, sizeof(m->bye.reason));
    break;
  case LWSI_MSG_APP:
    CHECK(lwsi_wire_kind_ok(m->app.kind));
    CHECK(m->app.data != NULL && lwsi_wire_data_ok(m->app.data));
    break;
  default:
    break;
  }
}

/* A refused message leaves the struct zeroed but for v. */
static void check_empty(const struct lwsi_msg *m)
{
  struct lwsi_msg z;
  memset(&z, 0, sizeof(z));
  z.v = m->v;
  CHECK(memcmp(&z, m, sizeof(z)) == 0);
}

static void check_proofs(const struct lwsi_msg *m, const struct lwsi_msg *again)
{
  static const uint8_t token[] = "fuzz-token";
  struct lwsi_msg_hello hello;
  memset(&hello, 0, sizeof(hello));
  memset(hello.nonce, 0x5a, sizeof(hello.nonce));
  memset(hello.challenge, 0xa5, sizeof(hello.challenge));
  uint8_t mac1[LWSI_WIRE_MAC_LEN], mac2[LWSI_WIRE_MAC_LEN];
  CHECK(lwsi_wire_join_mac(token, sizeof(token) - 1, &hello, &m->join, mac1) == 0);
  CHECK(lwsi_wire_join_mac(token, sizeof(token) - 1, &hello, &again->join, mac2) == 0);
  CHECK(lwsi_wire_mac_equal(mac1, mac2));
  CHECK(lwsi_wire_welcome_mac(token, sizeof(token) - 1, &hello, &m->join, mac2) == 0);
  CHECK(!lwsi_wire_mac_equal(mac1, mac2)); /* different labels */
  CHECK(lwsi_wire_join_mac(NULL, 0, &hello, &m->join, mac1) == -EINVAL);
}

static void check_payload(const uint8_t *p, size_t n)
{
  struct lwsi_msg m;
  int rc = lwsi_wire_decode(p, n, &m);
  if (rc < 0) {
    CHECK(rc == -EBADMSG || rc == -EPROTONOSUPPORT || rc == -ENOMSG || rc == -ENOMEM);
    if (rc == -EPROTONOSUPPORT)
      CHECK(m.v != LWSI_WIRE_VERSION);
    check_empty(&m);
    return;
  }
  check_decoded(&m);

  uint8_t *frame = NULL;
  size_t flen = 0;
  rc = lwsi_wire_encode(&m, &frame, &flen);
  /* Re-encoding drops unknown fields and whitespace and shortens escapes;
   * only numbers written as 1e4 grow, by at most a few KiB in all. */
  CHECK(rc == 0 || (rc == -EMSGSIZE && n > 60000));
  /* Only the leader's release may exceed the bound of every other frame. */
  size_t max = m.type == LWSI_MSG_RELEASE ? LWSI_WIRE_RELEASE_MAX(LWSI_WIRE_MAX_SIZE)
                                          : LWSI_WIRE_MAX_PAYLOAD;
  if (rc == 0) {
    CHECK(flen > LWSI_WIRE_HDR_LEN && flen <= LWSI_WIRE_HDR_LEN + max);
    CHECK(be32(frame) == flen - LWSI_WIRE_HDR_LEN);

    /* The re-encoded frame is exactly one frame to a fresh splitter with
     * the bound its receiver would have. */
    struct lwsi_wire_reader r;
    lwsi_wire_reader_init(&r);
    if (max > LWSI_WIRE_MAX_PAYLOAD)
      lwsi_wire_reader_set_max(&r, (uint32_t)max);
    const uint8_t *d = frame, *f = NULL;
    size_t len = flen, fl = 0;
    CHECK(lwsi_wire_split(&r, &d, &len, &f, &fl) == 1);
    CHECK(len == 0 && f == frame + LWSI_WIRE_HDR_LEN && fl == flen - LWSI_WIRE_HDR_LEN);
    lwsi_wire_reader_free(&r);

    struct lwsi_msg again;
    CHECK(lwsi_wire_decode(frame + LWSI_WIRE_HDR_LEN, flen - LWSI_WIRE_HDR_LEN, &again) == 0);
    CHECK(wire_msg_equal(&m, &again));
    uint8_t *frame2 = NULL;
    size_t flen2 = 0;
    CHECK(lwsi_wire_encode(&again, &frame2, &flen2) == 0);
    CHECK(flen2 == flen && memcmp(frame, frame2, flen) == 0);
    if (m.type == LWSI_MSG_JOIN)
      check_proofs(&m, &again);
    free(frame2);
    lwsi_wire_msg_free(&again);
    free(frame);
  }
  lwsi_wire_msg_free(&m);
  check_empty(&m);
}

struct split_result {
  size_t frames;
  uint64_t hash; /* FNV-1a over every frame's length and bytes */
  int err;
};

static void hash_bytes(uint64_t *h, const void *p, size_t n)
{
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    *h = (*h ^ b[i]) * 1099511628211ull;
}

/* Splits data into frames, handing the splitter pieces of the given sizes
 * (chunked: the fuzz_chunks cycle; else everything at once). */
static struct split_result split(const uint8_t *data, size_t size, uint32_t max, bool chunked,
                                  bool decode)
{
  struct split_result res = {0, 14695981039346656037ull, 0};
  struct lwsi_wire_reader r;
  lwsi_wire_reader_init(&r);
  if (max != 0)
    lwsi_wire_reader_set_max(&r, max);
  uint32_t bound = max != 0 ? max : LWSI_WIRE_MAX_PAYLOAD;
  size_t pos = 0, ci = 0;
  while (pos < size && res.err == 0) {
    size_t piece = chunked ? fuzz_chunks[ci++ % FUZZ_NCHUNKS] : size - pos;
    if (piece > size - pos)
      piece = size - pos;
    const uint8_t *p = data + pos;
    size_t len = piece;
    for (;;) {
      const uint8_t *f = NULL;
      size_t fl = 0;
      int rc = lwsi_wire_split(&r, &p, &len, &f, &fl);
      if (rc == 1) {
        CHECK(f != NULL && fl >= 1 && fl <= bound);
        res.frames++;
        hash_bytes(&res.hash, &fl, sizeof(fl));
        hash_bytes(&res.hash, f, fl);
        if (decode)
          check_payload(f, fl);
        continue;
      }
      if (rc == 0) {
        CHECK(len == 0);
        break;
      }
      CHECK(rc == -EBADMSG || rc == -EMSGSIZE);
      res.err = rc;
      /* Sticky: the stream is not resynced. */
      CHECK(lwsi_wire_split(&r, &p, &len, &f, &fl) == rc);
      break;
    }
    pos += piece;
  }
  lwsi_wire_reader_free(&r);
  return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* The reader's bound: 0 leaves the default. */
  uint32_t max = 0;
  if (size % 4 == 1)
    max = LWSI_WIRE_RELEASE_MAX(LWSI_WIRE_MAX_SIZE);
  else if (size % 4 == 2 && size >= 2)
    max = 1 + ((uint32_t)data[0] << 4 | data[1] >> 4) % 4096;
  struct split_result whole = split(data, size, max, false, true);
  struct split_result pieces = split(data, size, max, true, false);
  CHECK(whole.frames == pieces.frames);
  CHECK(whole.hash == pieces.hash);
  CHECK(whole.err == pieces.err);

  /* The input as one payload, without the frame header. */
  if (size > 0 && size <= LWSI_WIRE_RELEASE_MAX(LWSI_WIRE_MAX_SIZE))
    check_payload(data, size);
  else {
    struct lwsi_msg m;
    CHECK(lwsi_wire_decode(data, size, &m) == -EBADMSG);
    check_empty(&m);
  }
  return 0;
}
