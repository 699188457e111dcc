/* The rendezvous wire format (docs/protocol.md): length-prefixed frames
 * that carry versioned JSON messages, and the HMACs of the handshake.
 *
 * A pure module: buffers in, structs out; no I/O, no loop, no global state,
 * so a fuzzer can drive the frame splitter and the decoder directly. */
#ifndef LWSINIT_WIRE_H
#define LWSINIT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LWSI_WIRE_VERSION 1

/* A frame is a 4-byte big-endian payload length, then the payload (one JSON
 * object). The bound keeps a peer from making us buffer without limit. */
#define LWSI_WIRE_HDR_LEN 4
#define LWSI_WIRE_MAX_PAYLOAD 65536
/* The one frame that grows with the group: the leader's release carries the
 * member table (rank, address, pod name: at most ~330 bytes a member), so
 * a worker accepts a frame of up to LWSI_WIRE_RELEASE_MAX(size) from its
 * leader, and the leader encodes a release of up to the largest of those.
 * Every other frame, and every frame a leader reads, stays within
 * LWSI_WIRE_MAX_PAYLOAD. */
#define LWSI_WIRE_MEMBER_MAX 400
#define LWSI_WIRE_RELEASE_MAX(size) (LWSI_WIRE_MAX_PAYLOAD + (uint32_t)(size) * LWSI_WIRE_MEMBER_MAX)

#define LWSI_WIRE_NONCE_LEN 16     /* an agent's incarnation, 128 random bits */
#define LWSI_WIRE_CHALLENGE_LEN 32 /* a per-connection random challenge */
#define LWSI_WIRE_DIGEST_LEN 32    /* the digest of the launch command's rest */
#define LWSI_WIRE_MAC_LEN 32       /* HMAC-SHA256 */

/* Text fields, sizes including the NUL. Longer text is a decode error, not
 * a truncation, so that what is compared is what was sent. */
#define LWSI_WIRE_REVISION_MAX 256
#define LWSI_WIRE_POD_MAX 256 /* a DNS subdomain name is at most 253 */
#define LWSI_WIRE_ADDR_MAX 46 /* INET6_ADDRSTRLEN */
#define LWSI_WIRE_REASON_MAX 512
#define LWSI_WIRE_CHILD_MAX 32
#define LWSI_WIRE_CODE_MAX 32
#define LWSI_WIRE_HEALTH_ERR_MAX 128 /* a heartbeat's upstream error ("HTTP 503") */
/* An application message (type "app"): kind is a token of 1..32 characters
 * in [a-z0-9_]; data is text (valid UTF-8, no control characters, so one
 * line of compact JSON fits) of at most 8 KiB. */
#define LWSI_WIRE_KIND_MAX 33          /* 32 characters and the NUL */
#define LWSI_WIRE_DATA_MAX (8192 + 1)  /* 8 KiB and the NUL */

/* The launch command in the join (docs/protocol.md, "join"): at most the
 * first 512 arguments and 16 KiB of their text (escaped, NULs not
 * counted); what is past that bound travels as a digest. Even with JSON's
 * escapes (a backslash doubles) that keeps a join under 40 KiB. */
#define LWSI_WIRE_CMD_MAX_ARGS 512
#define LWSI_WIRE_CMD_MAX_TEXT 16384
#define LWSI_WIRE_CMD_MAX_TOTAL 1048576 /* arguments in all: more than ARG_MAX allows */
#define LWSI_WIRE_PRESET_MAX 32

/* Ranks are 0 .. size-1; the config allows groups of up to 65536. */
#define LWSI_WIRE_MAX_SIZE 65536
/* A "waiting" message lists at most this many missing ranks (and says how
 * many there are in all), so that it always fits in one frame. */
#define LWSI_WIRE_MAX_LISTED 1024

enum lwsi_msg_type {
  LWSI_MSG_NONE = 0,
  LWSI_MSG_HELLO,   /* leader -> worker, first: incarnation and challenge */
  LWSI_MSG_JOIN,    /* worker -> leader: who I am, and the proof of the token */
  LWSI_MSG_WELCOME, /* leader -> worker: joined; the leader's own proof */
  LWSI_MSG_REFUSE,  /* leader -> worker: not joined, and why */
  LWSI_MSG_WAITING, /* leader -> workers: the ranks still missing */
  LWSI_MSG_RELEASE, /* leader -> workers: the group formed; the member table */
  LWSI_MSG_FAIL,    /* leader -> workers: the group failed before launch */
  LWSI_MSG_HB,      /* both ways: heartbeat with the sender's state */
  LWSI_MSG_LOST,    /* leader -> workers: a member was lost after release */
  LWSI_MSG_BYE,     /* both ways: the sender is stopping */
  LWSI_MSG_APP,     /* after release: leader -> workers, worker -> leader; the agent's own */
  LWSI_MSG_TYPE_COUNT
};

struct lwsi_msg_hello {
  uint8_t nonce[LWSI_WIRE_NONCE_LEN];
  uint8_t challenge[LWSI_WIRE_CHALLENGE_LEN];
  bool auth; /* the leader has a token */
};

struct lwsi_msg_join {
  uint32_t rank;
  uint32_t size;
  uint32_t gpus;
  char revision[LWSI_WIRE_REVISION_MAX];
  char pod[LWSI_WIRE_POD_MAX];
  uint8_t nonce[LWSI_WIRE_NONCE_LEN];
  uint8_t challenge[LWSI_WIRE_CHALLENGE_LEN]; /* for the leader's proof */
  /* What every member must share: the preset and {dist_port} (0: none). */
  char preset[LWSI_WIRE_PRESET_MAX];
  uint32_t dist_port;
  /* The launch command (include/lwsinit/launchck.h): cmd_total arguments,
   * the first ncmd of them in cmd (escaped text; encode: the caller's;
   * decode: malloc'd, freed by lwsi_wire_msg_free), and the digest of the
   * others. */
  uint32_t cmd_total;
  uint32_t ncmd;
  char **cmd;
  uint8_t digest[LWSI_WIRE_DIGEST_LEN];
  bool auth; /* the worker has a token; mac is set */
  uint8_t mac[LWSI_WIRE_MAC_LEN];
};

struct lwsi_msg_welcome {
  uint32_t rank;
  bool auth; /* proof is set */
  uint8_t proof[LWSI_WIRE_MAC_LEN];
};

struct lwsi_msg_refuse {
  char code[LWSI_WIRE_CODE_MAX]; /* a short word: "revision", "token", "duplicate", ... */
  char reason[LWSI_WIRE_REASON_MAX];
  bool auth; /* mac is set: the leader has a token and the worker's join */
  uint8_t mac[LWSI_WIRE_MAC_LEN];
};

struct lwsi_msg_waiting {
  uint32_t joined;   /* members joined, the leader included */
  uint32_t nmissing; /* ranks missing in all */
  uint32_t *missing; /* the first nlisted of them, ascending (malloc'd) */
  uint32_t nlisted;
};

struct lwsi_wire_member {
  uint32_t rank;
  char addr[LWSI_WIRE_ADDR_MAX]; /* as the leader sees it; "" when unknown */
  char pod[LWSI_WIRE_POD_MAX];
};

struct lwsi_msg_release {
  uint32_t size;
  struct lwsi_wire_member *members; /* size entries, by rank (malloc'd) */
  uint32_t nmembers;
};

struct lwsi_msg_fail {
  char reason[LWSI_WIRE_REASON_MAX];
};

struct lwsi_msg_hb {
  uint64_t seq;
  uint64_t ts;   /* the sender's monotonic clock, microseconds */
  bool has_echo; /* echo and held are set */
  uint64_t echo; /* the ts of the last heartbeat the sender received */
  uint64_t held; /* microseconds between that receipt and this send */
  char child[LWSI_WIRE_CHILD_MAX];
  bool upstream;
  /* Optional, together or not at all (agents before them send none): the
   * engine's health in detail, for the leader's /readyz and /status. */
  bool has_health;
  bool upstream_on;      /* the sender polls a health URL */
  uint64_t upstream_age; /* ms since its upstream state last changed */
  char upstream_error[LWSI_WIRE_HEALTH_ERR_MAX]; /* why not healthy; "" when it is */
  bool stopping;         /* the sender's stop has begun */
};

struct lwsi_msg_lost {
  uint32_t rank;
  char reason[LWSI_WIRE_REASON_MAX];
};

struct lwsi_msg_bye {
  char reason[LWSI_WIRE_REASON_MAX];
};

/* What the rendezvous carries for the agent (e.g. the GPU check's NCCL id,
 * results and verdict): it only checks the form. */
struct lwsi_msg_app {
  char kind[LWSI_WIRE_KIND_MAX];
  char *data; /* encode: the caller's text; decode: malloc'd (lwsi_wire_msg_free) */
};

struct lwsi_msg {
  enum lwsi_msg_type type;
  uint32_t v;
  union {
    struct lwsi_msg_hello hello;
    struct lwsi_msg_join join;
    struct lwsi_msg_welcome welcome;
    struct lwsi_msg_refuse refuse;
    struct lwsi_msg_waiting waiting;
    struct lwsi_msg_release release;
    struct lwsi_msg_fail fail;
    struct lwsi_msg_hb hb;
    struct lwsi_msg_lost lost;
    struct lwsi_msg_bye bye;
    struct lwsi_msg_app app;
  };
};

/* Whether text may go on the wire: valid UTF-8 without control characters
 * (the rule the decoder enforces on every text field). */
bool lwsi_wire_text_ok(const char *s);

/* Whether s is an app message kind: 1..32 characters of [a-z0-9_]. */
bool lwsi_wire_kind_ok(const char *s);

/* Whether s may be an app message's data: at most 8 KiB of text that
 * passes lwsi_wire_text_ok. */
bool lwsi_wire_data_ok(const char *s);

/* "hello", "join", ...; "?" for anything else. */
const char *lwsi_wire_type_name(enum lwsi_msg_type type);

/* Encodes m as one complete frame (header included) into a malloc'd buffer.
 * Returns 0, -EINVAL for a message that breaks the rules the decoder
 * enforces, -EMSGSIZE when the payload would exceed LWSI_WIRE_MAX_PAYLOAD,
 * or -ENOMEM. */
int lwsi_wire_encode(const struct lwsi_msg *m, uint8_t **frame, size_t *len);

/* Decodes one frame's payload. Returns 0 with *out filled (free it with
 * lwsi_wire_msg_free); or -EBADMSG for anything malformed (not JSON, not an
 * object, a field missing, of the wrong type or out of range, text too
 * long or with control characters or invalid UTF-8), -EPROTONOSUPPORT for
 * another protocol version (out->v is set), -ENOMSG for an unknown type,
 * -ENOMEM. On error *out holds nothing to free. Unknown fields are ignored,
 * so that a later version can add fields within the same "v". */
int lwsi_wire_decode(const uint8_t *buf, size_t len, struct lwsi_msg *out);

/* Frees what decode allocated (the lists, an app message's data), and zeroes m. */
void lwsi_wire_msg_free(struct lwsi_msg *m);

/* Splits a byte stream into frames, whatever the pieces it arrives in. */
struct lwsi_wire_reader {
  uint8_t hdr[LWSI_WIRE_HDR_LEN];
  size_t hdr_have;
  uint32_t need; /* the current frame's payload length, once hdr is in */
  uint8_t *body; /* a frame that arrived in pieces (malloc'd) */
  size_t body_cap;
  size_t body_have;
  bool delivered; /* the last call returned a frame */
  int err;        /* sticky: a stream with one bad frame is not resynced */
  uint32_t max;   /* the largest payload accepted (LWSI_WIRE_MAX_PAYLOAD) */
};

/* A reader that accepts payloads of up to LWSI_WIRE_MAX_PAYLOAD; a worker
 * raises that for its leader's connection with lwsi_wire_reader_set_max. */
void lwsi_wire_reader_init(struct lwsi_wire_reader *r);
void lwsi_wire_reader_set_max(struct lwsi_wire_reader *r, uint32_t max);
void lwsi_wire_reader_free(struct lwsi_wire_reader *r);

/* Consumes bytes from *data (advancing it and *len) until a frame is
 * complete. Returns 1 with *frame and *flen set to its payload (valid until
 * the next call or free; it may point into the caller's buffer); 0 when all
 * of *data was consumed without completing a frame; or -EBADMSG (a
 * zero-length frame), -EMSGSIZE (a length over the reader's max) or
 * -ENOMEM, after which every call returns the same error. */
int lwsi_wire_split(struct lwsi_wire_reader *r, const uint8_t **data, size_t *len,
                    const uint8_t **frame, size_t *flen);

/* The worker's proof of the token: HMAC-SHA256(token, "lwsinit/1 join" ||
 * the leader's challenge and nonce || every field of the join but the mac;
 * the launch command's arguments by their SHA-256). Also -EINVAL for a
 * launch command over the bounds.
 * Returns 0, or -EINVAL (no token) / -EIO (libcrypto failed). */
int lwsi_wire_join_mac(const uint8_t *token, size_t token_len, const struct lwsi_msg_hello *hello,
                       const struct lwsi_msg_join *join, uint8_t mac[LWSI_WIRE_MAC_LEN]);

/* The leader's proof: HMAC-SHA256(token, "lwsinit/1 welcome" || the worker's
 * challenge and nonce || the leader's challenge and nonce || rank). A
 * different label than the join's, so that neither proof can be replayed
 * as the other. */
int lwsi_wire_welcome_mac(const uint8_t *token, size_t token_len,
                          const struct lwsi_msg_hello *hello, const struct lwsi_msg_join *join,
                          uint8_t mac[LWSI_WIRE_MAC_LEN]);

/* The leader's proof on a refusal: HMAC-SHA256(token, "lwsinit/1 refuse"
 * || the worker's challenge and nonce || the leader's challenge and nonce
 * || rank || the code || the reason). A worker that holds a token takes a
 * refusal as final only with this proof; anyone who answers on the
 * leader's address could send one without it (docs/security.md 3.4). */
int lwsi_wire_refuse_mac(const uint8_t *token, size_t token_len, const struct lwsi_msg_hello *hello,
                         const struct lwsi_msg_join *j, const struct lwsi_msg_refuse *rf,
                         uint8_t mac[LWSI_WIRE_MAC_LEN]);

/* Compares two MACs in constant time (CRYPTO_memcmp). */
bool lwsi_wire_mac_equal(const uint8_t a[LWSI_WIRE_MAC_LEN], const uint8_t b[LWSI_WIRE_MAC_LEN]);

#endif
