#include "lwsinit/wire.h"

#include "lwsinit/crypto.h"
#include "lwsinit/text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[LWSI_MSG_TYPE_COUNT] = {
    [LWSI_MSG_NONE] = "?",          [LWSI_MSG_HELLO] = "hello",   [LWSI_MSG_JOIN] = "join",
    [LWSI_MSG_WELCOME] = "welcome", [LWSI_MSG_REFUSE] = "refuse", [LWSI_MSG_WAITING] = "waiting",
    [LWSI_MSG_RELEASE] = "release", [LWSI_MSG_FAIL] = "fail",     [LWSI_MSG_HB] = "hb",
    [LWSI_MSG_LOST] = "lost",       [LWSI_MSG_BYE] = "bye",       [LWSI_MSG_APP] = "app",
};

const char *lwsi_wire_type_name(enum lwsi_msg_type type)
{
  if ((unsigned)type >= LWSI_MSG_TYPE_COUNT)
    return "?";
  return type_names[type];
}

/* JSON numbers are doubles, and cJSON prints them with 15 significant
 * digits when that reads back "close enough": only integers below 10^15
 * survive exactly. That bounds every counter and timestamp we send
 * (microseconds of uptime: 31 years). */
#define MAX_EXACT 999999999999999ull

/* ---- text rules, shared by encoder and decoder ---- */

/* Text that reaches a log line must be one line of valid UTF-8: no control
 * characters, so that a peer cannot forge or break the agent's log. */
bool lwsi_wire_text_ok(const char *s)
{
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned c = *p;
    if (c < 0x20 || c == 0x7f)
      return false;
    if (c < 0x80) {
      p++;
      continue;
    }
    size_t n;
    unsigned min;
    unsigned cp;
    if ((c & 0xe0) == 0xc0) {
      n = 1, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, min = 0x10000, cp = c & 0x07;
    } else {
      return false;
    }
    for (size_t i = 1; i <= n; i++) {
      if ((p[i] & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* Overlong forms, surrogates and code points past Unicode. */
    if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
      return false;
    /* C1 controls are control characters too. */
    if (cp >= 0x80 && cp < 0xa0)
      return false;
    p += n + 1;
  }
  return true;
}

static bool text_fits(const char *s, size_t size)
{
  return strnlen(s, size) < size && lwsi_wire_text_ok(s);
}

bool lwsi_wire_kind_ok(const char *s)
{
  if (s == NULL || s[0] == '\0')
    return false;
  size_t n = 0;
  for (; s[n] != '\0'; n++) {
    char c = s[n];
    bool token = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (n + 1 >= LWSI_WIRE_KIND_MAX || !token)
      return false;
  }
  return true;
}

bool lwsi_wire_data_ok(const char *s) { return s != NULL && text_fits(s, LWSI_WIRE_DATA_MAX); }

/* ---- encoding ---- */

static const char hexdigits[] = "0123456789abcdef";

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hexdigits[in[i] >> 4];
    out[2 * i + 1] = hexdigits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

/* Builders that remember the first failure, so that encode checks once. */
struct builder {
  cJSON *obj;
  int err;
};

static void add_num(struct builder *b, cJSON *obj, const char *key, uint64_t v)
{
  if (b->err)
    return;
  if (v > MAX_EXACT)
    b->err = -EINVAL;
  else if (cJSON_AddNumberToObject(obj, key, (double)v) == NULL)
    b->err = -ENOMEM;
}

static void add_str(struct builder *b, cJSON *obj, const char *key, const char *s, size_t size)
{
  if (b->err)
    return;
  if (!text_fits(s, size))
    b->err = -EINVAL;
  else if (cJSON_AddStringToObject(obj, key, s) == NULL)
    b->err = -ENOMEM;
}

static void add_bool(struct builder *b, cJSON *obj, const char *key, bool v)
{
  if (!b->err && cJSON_AddBoolToObject(obj, key, v) == NULL)
    b->err = -ENOMEM;
}

static void add_hex(struct builder *b, cJSON *obj, const char *key, const uint8_t *v, size_t n)
{
  char buf[2 * 64 + 1];
  if (b->err)
    return;
  hex_encode(v, n, buf);
  if (cJSON_AddStringToObject(obj, key, buf) == NULL)
    b->err = -ENOMEM;
}

static void add_rank_list(struct builder *b, cJSON *obj, const char *key, const uint32_t *v,
                          uint32_t n)
{
  if (b->err)
    return;
  cJSON *arr = cJSON_AddArrayToObject(obj, key);
  if (arr == NULL) {
    b->err = -ENOMEM;
    return;
  }
  for (uint32_t i = 0; i < n && !b->err; i++) {
    cJSON *num = cJSON_CreateNumber((double)v[i]);
    if (num == NULL || !cJSON_AddItemToArray(arr, num)) {
      cJSON_Delete(num);
      b->err = -ENOMEM;
    }
  }
}

/* Whether a join's launch command keeps to the bounds and the text rule. */
static bool cmd_ok(const struct lwsi_msg_join *j)
{
  if (j->ncmd > LWSI_WIRE_CMD_MAX_ARGS || j->ncmd > j->cmd_total ||
      j->cmd_total > LWSI_WIRE_CMD_MAX_TOTAL || (j->ncmd > 0 && j->cmd == NULL))
    return false;
  size_t text = 0;
  for (uint32_t i = 0; i < j->ncmd; i++) {
    if (j->cmd[i] == NULL || !lwsi_wire_text_ok(j->cmd[i]))
      return false;
    text += strlen(j->cmd[i]);
    if (text > LWSI_WIRE_CMD_MAX_TEXT)
      return false;
  }
  return true;
}

static void add_cmd(struct builder *b, cJSON *obj, const struct lwsi_msg_join *j)
{
  if (b->err)
    return;
  if (!cmd_ok(j)) {
    b->err = -EINVAL;
    return;
  }
  add_num(b, obj, "cmd_total", j->cmd_total);
  cJSON *arr = b->err ? NULL : cJSON_AddArrayToObject(obj, "cmd");
  if (arr == NULL) {
    b->err = b->err ? b->err : -ENOMEM;
    return;
  }
  for (uint32_t i = 0; i < j->ncmd; i++) {
    cJSON *s = cJSON_CreateString(j->cmd[i]);
    if (s == NULL || !cJSON_AddItemToArray(arr, s)) {
      cJSON_Delete(s);
      b->err = -ENOMEM;
      return;
    }
  }
}

static void encode_body(struct builder *b, const struct lwsi_msg *m)
{
  cJSON *o = b->obj;
  switch (m->type) {
  case LWSI_MSG_HELLO:
    add_hex(b, o, "nonce", m->hello.nonce, LWSI_WIRE_NONCE_LEN);
    add_hex(b, o, "challenge", m->hello.challenge, LWSI_WIRE_CHALLENGE_LEN);
    add_bool(b, o, "auth", m->hello.auth);
    return;
  case LWSI_MSG_JOIN: {
    const struct lwsi_msg_join *j = &m->join;
    if (j->size == 0 || j->size > LWSI_WIRE_MAX_SIZE || j->rank >= LWSI_WIRE_MAX_SIZE) {
      b->err = -EINVAL;
      return;
    }
    add_num(b, o, "rank", j->rank);
    add_num(b, o, "size", j->size);
    add_num(b, o, "gpus", j->gpus);
    add_str(b, o, "revision", j->revision, sizeof(j->revision));
    add_str(b, o, "pod", j->pod, sizeof(j->pod));
    add_hex(b, o, "nonce", j->nonce, LWSI_WIRE_NONCE_LEN);
    add_hex(b, o, "challenge", j->challenge, LWSI_WIRE_CHALLENGE_LEN);
    add_str(b, o, "preset", j->preset, sizeof(j->preset));
    add_num(b, o, "dist_port", j->dist_port);
    add_cmd(b, o, j);
    add_hex(b, o, "digest", j->digest, LWSI_WIRE_DIGEST_LEN);
    add_bool(b, o, "auth", j->auth);
    if (j->auth)
      add_hex(b, o, "mac", j->mac, LWSI_WIRE_MAC_LEN);
    return;
  }
  case LWSI_MSG_WELCOME:
    add_num(b, o, "rank", m->welcome.rank);
    add_bool(b, o, "auth", m->welcome.auth);
    if (m->welcome.auth)
      add_hex(b, o, "proof", m->welcome.proof, LWSI_WIRE_MAC_LEN);
    return;
  case LWSI_MSG_REFUSE:
    add_str(b, o, "code", m->refuse.code, sizeof(m->refuse.code));
    add_str(b, o, "reason", m->refuse.reason, sizeof(m->refuse.reason));
    if (m->refuse.auth)
      add_hex(b, o, "mac", m->refuse.mac, LWSI_WIRE_MAC_LEN);
    return;
  case LWSI_MSG_WAITING: {
    const struct lwsi_msg_waiting *w = &m->waiting;
    if (w->nlisted > LWSI_WIRE_MAX_LISTED || w->nlisted > w->nmissing ||
        w->nmissing > LWSI_WIRE_MAX_SIZE || (w->nlisted > 0 && w->missing == NULL)) {
      b->err = -EINVAL;
      return;
    }
    add_num(b, o, "joined", w->joined);
    add_num(b, o, "nmissing", w->nmissing);
    add_rank_list(b, o, "missing", w->missing, w->nlisted);
    return;
  }
  case LWSI_MSG_RELEASE: {
    const struct lwsi_msg_release *rl = &m->release;
    if (rl->size == 0 || rl->size > LWSI_WIRE_MAX_SIZE || rl->nmembers != rl->size ||
        rl->members == NULL) {
      b->err = -EINVAL;
      return;
    }
    add_num(b, o, "size", rl->size);
    if (b->err)
      return;
    cJSON *arr = cJSON_AddArrayToObject(o, "members");
    if (arr == NULL) {
      b->err = -ENOMEM;
      return;
    }
    for (uint32_t i = 0; i < rl->nmembers && !b->err; i++) {
      const struct lwsi_wire_member *mb = &rl->members[i];
      if (mb->rank != i) {
        b->err = -EINVAL;
        return;
      }
      cJSON *item = cJSON_CreateObject();
      if (item == NULL || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        b->err = -ENOMEM;
        return;
      }
      add_num(b, item, "rank", mb->rank);
      add_str(b, item, "addr", mb->addr, sizeof(mb->addr));
      add_str(b, item, "pod", mb->pod, sizeof(mb->pod));
    }
    return;
  }
  case LWSI_MSG_FAIL:
    add_str(b, o, "reason", m->fail.reason, sizeof(m->fail.reason));
    return;
  case LWSI_MSG_HB:
    add_num(b, o, "seq", m->hb.seq);
    add_num(b, o, "ts", m->hb.ts);
    if (m->hb.has_echo) {
      add_num(b, o, "echo", m->hb.echo);
      add_num(b, o, "held", m->hb.held);
    }
    add_str(b, o, "child", m->hb.child, sizeof(m->hb.child));
    add_bool(b, o, "upstream", m->hb.upstream);
    if (m->hb.has_health) {
      add_bool(b, o, "upstream_on", m->hb.upstream_on);
      add_num(b, o, "upstream_age", m->hb.upstream_age);
      add_str(b, o, "upstream_error", m->hb.upstream_error, sizeof(m->hb.upstream_error));
      add_bool(b, o, "stopping", m->hb.stopping);
    }
    return;
  case LWSI_MSG_LOST:
    add_num(b, o, "rank", m->lost.rank);
    add_str(b, o, "reason", m->lost.reason, sizeof(m->lost.reason));
    return;
  case LWSI_MSG_BYE:
    add_str(b, o, "reason", m->bye.reason, sizeof(m->bye.reason));
    return;
  case LWSI_MSG_APP:
    if (strnlen(m->app.kind, sizeof(m->app.kind)) >= sizeof(m->app.kind) ||
        !lwsi_wire_kind_ok(m->app.kind) || !lwsi_wire_data_ok(m->app.data)) {
      b->err = -EINVAL;
      return;
    }
    add_str(b, o, "kind", m->app.kind, sizeof(m->app.kind));
    add_str(b, o, "data", m->app.data, LWSI_WIRE_DATA_MAX);
    return;
  case LWSI_MSG_NONE:
  case LWSI_MSG_TYPE_COUNT:
    break;
  }
  b->err = -EINVAL;
}

int lwsi_wire_encode(const struct lwsi_msg *m, uint8_t **frame, size_t *len)
{
  *frame = NULL;
  *len = 0;
  if ((unsigned)m->type == LWSI_MSG_NONE || (unsigned)m->type >= LWSI_MSG_TYPE_COUNT)
    return -EINVAL;
  struct builder b = {cJSON_CreateObject(), 0};
  if (b.obj == NULL)
    return -ENOMEM;
  /* The version always goes with the message (not once per connection), so
   * that any single frame can be decoded, logged or fuzzed on its own. */
  add_num(&b, b.obj, "v", LWSI_WIRE_VERSION);
  if (!b.err && cJSON_AddStringToObject(b.obj, "type", type_names[m->type]) == NULL)
    b.err = -ENOMEM;
  encode_body(&b, m);
  char *text = NULL;
  if (!b.err) {
    text = cJSON_PrintUnformatted(b.obj);
    if (text == NULL)
      b.err = -ENOMEM;
  }
  cJSON_Delete(b.obj);
  if (b.err)
    return b.err;
  size_t n = strlen(text);
  size_t max = m->type == LWSI_MSG_RELEASE ? LWSI_WIRE_RELEASE_MAX(LWSI_WIRE_MAX_SIZE)
                                           : LWSI_WIRE_MAX_PAYLOAD;
  if (n > max) {
    cJSON_free(text);
    return -EMSGSIZE;
  }
  uint8_t *out = malloc(LWSI_WIRE_HDR_LEN + n);
  if (out == NULL) {
    cJSON_free(text);
    return -ENOMEM;
  }
  out[0] = (uint8_t)(n >> 24);
  out[1] = (uint8_t)(n >> 16);
  out[2] = (uint8_t)(n >> 8);
  out[3] = (uint8_t)n;
  memcpy(out + LWSI_WIRE_HDR_LEN, text, n);
  cJSON_free(text);
  *frame = out;
  *len = LWSI_WIRE_HDR_LEN + n;
  return 0;
}

/* ---- decoding ---- */

static int get_hex(const cJSON *o, const char *key, uint8_t *out, size_t n)
{
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsString(it) || it->valuestring == NULL || strlen(it->valuestring) != 2 * n)
    return -EBADMSG;
  const char *s = it->valuestring;
  for (size_t i = 0; i < n; i++) {
    int hi = lwsi_text_hexval(s[2 * i]), lo = lwsi_text_hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -EBADMSG;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

static bool num_in_range(const cJSON *it, uint64_t max, uint64_t *out)
{
  if (!cJSON_IsNumber(it))
    return false;
  double d = it->valuedouble;
  /* In range first, so that the cast is defined; then integral. */
  if (!isfinite(d) || d < 0 || d > (double)max)
    return false;
  uint64_t v = (uint64_t)d;
  if ((double)v != d)
    return false;
  *out = v;
  return true;
}

static int get_u64(const cJSON *o, const char *key, uint64_t max, uint64_t *out)
{
  return num_in_range(cJSON_GetObjectItemCaseSensitive(o, key), max, out) ? 0 : -EBADMSG;
}

static int get_u32(const cJSON *o, const char *key, uint32_t max, uint32_t *out)
{
  uint64_t v;
  int rc = get_u64(o, key, max, &v);
  if (rc == 0)
    *out = (uint32_t)v;
  return rc;
}

static int get_str(const cJSON *o, const char *key, char *out, size_t size)
{
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsString(it) || it->valuestring == NULL || !text_fits(it->valuestring, size))
    return -EBADMSG;
  memcpy(out, it->valuestring, strlen(it->valuestring) + 1);
  return 0;
}

static int get_bool(const cJSON *o, const char *key, bool *out)
{
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsBool(it))
    return -EBADMSG;
  *out = cJSON_IsTrue(it);
  return 0;
}

/* First error wins; lets each decoder read as a list of fields. */
#define TRY(expr)                                                                                  \
  do {                                                                                             \
    int try_rc_ = (expr);                                                                          \
    if (try_rc_ < 0)                                                                               \
      return try_rc_;                                                                              \
  } while (0)

/* The launch command: an array of at most LWSI_WIRE_CMD_MAX_ARGS text
 * arguments, LWSI_WIRE_CMD_MAX_TEXT bytes in all, no more than cmd_total.
 * One allocation: the pointers, then the texts. */
static int get_cmd(const cJSON *o, struct lwsi_msg_join *j)
{
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "cmd");
  if (!cJSON_IsArray(arr))
    return -EBADMSG;
  int count = cJSON_GetArraySize(arr);
  if (count < 0 || (uint32_t)count > LWSI_WIRE_CMD_MAX_ARGS || (uint32_t)count > j->cmd_total)
    return -EBADMSG;
  size_t text = 0;
  const cJSON *it;
  cJSON_ArrayForEach(it, arr)
  {
    if (!cJSON_IsString(it) || it->valuestring == NULL || !lwsi_wire_text_ok(it->valuestring))
      return -EBADMSG;
    text += strlen(it->valuestring);
    if (text > LWSI_WIRE_CMD_MAX_TEXT)
      return -EBADMSG;
  }
  size_t head = ((size_t)count + 1) * sizeof(char *);
  char **v = malloc(head + text + (size_t)count + 1);
  if (v == NULL)
    return -ENOMEM;
  char *t = (char *)v + head;
  uint32_t i = 0;
  cJSON_ArrayForEach(it, arr)
  {
    size_t n = strlen(it->valuestring) + 1;
    memcpy(t, it->valuestring, n);
    v[i++] = t;
    t += n;
  }
  v[i] = NULL;
  j->cmd = v;
  j->ncmd = i;
  return 0;
}

static int decode_join(const cJSON *o, struct lwsi_msg_join *j)
{
  TRY(get_u32(o, "rank", LWSI_WIRE_MAX_SIZE - 1, &j->rank));
  TRY(get_u32(o, "size", LWSI_WIRE_MAX_SIZE, &j->size));
  TRY(get_u32(o, "gpus", UINT32_MAX, &j->gpus));
  TRY(get_str(o, "revision", j->revision, sizeof(j->revision)));
  TRY(get_str(o, "pod", j->pod, sizeof(j->pod)));
  TRY(get_hex(o, "nonce", j->nonce, sizeof(j->nonce)));
  TRY(get_hex(o, "challenge", j->challenge, sizeof(j->challenge)));
  TRY(get_str(o, "preset", j->preset, sizeof(j->preset)));
  TRY(get_u32(o, "dist_port", 65535, &j->dist_port));
  TRY(get_u32(o, "cmd_total", LWSI_WIRE_CMD_MAX_TOTAL, &j->cmd_total));
  TRY(get_cmd(o, j));
  TRY(get_hex(o, "digest", j->digest, sizeof(j->digest)));
  TRY(get_bool(o, "auth", &j->auth));
  if (j->auth)
    TRY(get_hex(o, "mac", j->mac, sizeof(j->mac)));
  if (j->size == 0)
    return -EBADMSG;
  return 0;
}

/* Reads an array of ranks: each an integer below LWSI_WIRE_MAX_SIZE. */
static int get_rank_list(const cJSON *o, const char *key, uint32_t maxn, uint32_t **out,
                         uint32_t *n)
{
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsArray(arr))
    return -EBADMSG;
  int count = cJSON_GetArraySize(arr);
  if (count < 0 || (uint32_t)count > maxn)
    return -EBADMSG;
  if (count == 0)
    return 0;
  uint32_t *v = calloc((size_t)count, sizeof(*v));
  if (v == NULL)
    return -ENOMEM;
  uint32_t i = 0;
  const cJSON *it;
  cJSON_ArrayForEach(it, arr)
  {
    uint64_t x;
    if (!num_in_range(it, LWSI_WIRE_MAX_SIZE - 1, &x)) {
      free(v);
      return -EBADMSG;
    }
    v[i++] = (uint32_t)x;
  }
  *out = v;
  *n = i;
  return 0;
}

static int decode_waiting(const cJSON *o, struct lwsi_msg_waiting *w)
{
  TRY(get_u32(o, "joined", LWSI_WIRE_MAX_SIZE, &w->joined));
  TRY(get_u32(o, "nmissing", LWSI_WIRE_MAX_SIZE, &w->nmissing));
  TRY(get_rank_list(o, "missing", LWSI_WIRE_MAX_LISTED, &w->missing, &w->nlisted));
  if (w->nlisted > w->nmissing)
    return -EBADMSG;
  return 0;
}

static int decode_release(const cJSON *o, struct lwsi_msg_release *rl)
{
  TRY(get_u32(o, "size", LWSI_WIRE_MAX_SIZE, &rl->size));
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "members");
  if (rl->size == 0 || !cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != (int)rl->size)
    return -EBADMSG;
  rl->members = calloc(rl->size, sizeof(*rl->members));
  if (rl->members == NULL)
    return -ENOMEM;
  rl->nmembers = rl->size;
  uint32_t i = 0;
  const cJSON *it;
  cJSON_ArrayForEach(it, arr)
  {
    struct lwsi_wire_member *mb = &rl->members[i];
    if (!cJSON_IsObject(it))
      return -EBADMSG;
    TRY(get_u32(it, "rank", LWSI_WIRE_MAX_SIZE - 1, &mb->rank));
    TRY(get_str(it, "addr", mb->addr, sizeof(mb->addr)));
    TRY(get_str(it, "pod", mb->pod, sizeof(mb->pod)));
    /* The table is by rank, so that rank i is always members[i]. */
    if (mb->rank != i)
      return -EBADMSG;
    i++;
  }
  return 0;
}

static int decode_app(const cJSON *o, struct lwsi_msg_app *a)
{
  TRY(get_str(o, "kind", a->kind, sizeof(a->kind)));
  if (!lwsi_wire_kind_ok(a->kind))
    return -EBADMSG;
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, "data");
  if (!cJSON_IsString(it) || it->valuestring == NULL || !lwsi_wire_data_ok(it->valuestring))
    return -EBADMSG;
  size_t n = strlen(it->valuestring);
  a->data = malloc(n + 1);
  if (a->data == NULL)
    return -ENOMEM;
  memcpy(a->data, it->valuestring, n + 1);
  return 0;
}

/* The heartbeat's health fields came later: an agent that has none sends
 * none of them, and one that has them sends all four. Part of them is a
 * broken sender, not an older one. */
static int decode_hb_health(const cJSON *o, struct lwsi_msg_hb *h)
{
  static const char *const keys[] = {"upstream_on", "upstream_age", "upstream_error", "stopping"};
  size_t present = 0;
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
    present += cJSON_GetObjectItemCaseSensitive(o, keys[i]) != NULL;
  if (present == 0)
    return 0;
  if (present != sizeof(keys) / sizeof(keys[0]))
    return -EBADMSG;
  TRY(get_bool(o, "upstream_on", &h->upstream_on));
  TRY(get_u64(o, "upstream_age", MAX_EXACT, &h->upstream_age));
  TRY(get_str(o, "upstream_error", h->upstream_error, sizeof(h->upstream_error)));
  TRY(get_bool(o, "stopping", &h->stopping));
  h->has_health = true;
  return 0;
}

static int decode_body(const cJSON *o, struct lwsi_msg *m)
{
  switch (m->type) {
  case LWSI_MSG_HELLO:
    TRY(get_hex(o, "nonce", m->hello.nonce, sizeof(m->hello.nonce)));
    TRY(get_hex(o, "challenge", m->hello.challenge, sizeof(m->hello.challenge)));
    return get_bool(o, "auth", &m->hello.auth);
  case LWSI_MSG_JOIN:
    return decode_join(o, &m->join);
  case LWSI_MSG_WELCOME:
    TRY(get_u32(o, "rank", LWSI_WIRE_MAX_SIZE - 1, &m->welcome.rank));
    TRY(get_bool(o, "auth", &m->welcome.auth));
    if (m->welcome.auth)
      TRY(get_hex(o, "proof", m->welcome.proof, sizeof(m->welcome.proof)));
    return 0;
  case LWSI_MSG_REFUSE:
    TRY(get_str(o, "code", m->refuse.code, sizeof(m->refuse.code)));
    TRY(get_str(o, "reason", m->refuse.reason, sizeof(m->refuse.reason)));
    /* The proof is there only when the leader could make one. */
    if (cJSON_GetObjectItemCaseSensitive(o, "mac") != NULL) {
      TRY(get_hex(o, "mac", m->refuse.mac, sizeof(m->refuse.mac)));
      m->refuse.auth = true;
    }
    return 0;
  case LWSI_MSG_WAITING:
    return decode_waiting(o, &m->waiting);
  case LWSI_MSG_RELEASE:
    return decode_release(o, &m->release);
  case LWSI_MSG_FAIL:
    return get_str(o, "reason", m->fail.reason, sizeof(m->fail.reason));
  case LWSI_MSG_HB: {
    struct lwsi_msg_hb *h = &m->hb;
    TRY(get_u64(o, "seq", MAX_EXACT, &h->seq));
    TRY(get_u64(o, "ts", MAX_EXACT, &h->ts));
    /* echo and held come together or not at all. */
    const cJSON *echo = cJSON_GetObjectItemCaseSensitive(o, "echo");
    if (echo != NULL) {
      TRY(get_u64(o, "echo", MAX_EXACT, &h->echo));
      TRY(get_u64(o, "held", MAX_EXACT, &h->held));
      h->has_echo = true;
    }
    TRY(get_str(o, "child", h->child, sizeof(h->child)));
    TRY(get_bool(o, "upstream", &h->upstream));
    return decode_hb_health(o, h);
  }
  case LWSI_MSG_LOST:
    TRY(get_u32(o, "rank", LWSI_WIRE_MAX_SIZE - 1, &m->lost.rank));
    return get_str(o, "reason", m->lost.reason, sizeof(m->lost.reason));
  case LWSI_MSG_BYE:
    return get_str(o, "reason", m->bye.reason, sizeof(m->bye.reason));
  case LWSI_MSG_APP:
    return decode_app(o, &m->app);
  case LWSI_MSG_NONE:
  case LWSI_MSG_TYPE_COUNT:
    break;
  }
  return -ENOMSG;
}

int lwsi_wire_decode(const uint8_t *buf, size_t len, struct lwsi_msg *out)
{
  memset(out, 0, sizeof(*out));
  /* The reader bounds each stream's frames (a leader reads no release);
   * this is the bound of any frame at all. */
  if (buf == NULL || len == 0 || len > LWSI_WIRE_RELEASE_MAX(LWSI_WIRE_MAX_SIZE))
    return -EBADMSG;
  const char *end = NULL;
  cJSON *o = cJSON_ParseWithLengthOpts((const char *)buf, len, &end, false);
  if (o == NULL)
    return -EBADMSG; /* cJSON does not tell ENOMEM apart; either way, not a message */
  int rc = -EBADMSG;
  /* Trailing bytes after the object mean the frame is not what it claims;
   * whitespace is harmless (cJSON leaves it to us when not NUL-terminated). */
  while (end != NULL && end < (const char *)buf + len &&
         (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
    end++;
  if (!cJSON_IsObject(o) || end != (const char *)buf + len)
    goto out;
  uint64_t v;
  if (get_u64(o, "v", UINT32_MAX, &v) < 0)
    goto out;
  out->v = (uint32_t)v;
  if (v != LWSI_WIRE_VERSION) {
    rc = -EPROTONOSUPPORT;
    goto out;
  }
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
  if (!cJSON_IsString(t) || t->valuestring == NULL)
    goto out;
  rc = -ENOMSG;
  for (int i = LWSI_MSG_NONE + 1; i < LWSI_MSG_TYPE_COUNT; i++) {
    if (strcmp(t->valuestring, type_names[i]) == 0) {
      out->type = (enum lwsi_msg_type)i;
      rc = decode_body(o, out);
      break;
    }
  }
out:
  cJSON_Delete(o);
  if (rc < 0) {
    uint32_t ver = out->v;
    lwsi_wire_msg_free(out);
    out->v = ver;
  }
  return rc;
}

void lwsi_wire_msg_free(struct lwsi_msg *m)
{
  if (m->type == LWSI_MSG_WAITING)
    free(m->waiting.missing);
  else if (m->type == LWSI_MSG_RELEASE)
    free(m->release.members);
  else if (m->type == LWSI_MSG_APP)
    free(m->app.data);
  else if (m->type == LWSI_MSG_JOIN)
    free(m->join.cmd);
  memset(m, 0, sizeof(*m));
}

/* ---- frames ---- */

void lwsi_wire_reader_init(struct lwsi_wire_reader *r)
{
  memset(r, 0, sizeof(*r));
  r->max = LWSI_WIRE_MAX_PAYLOAD;
}

void lwsi_wire_reader_set_max(struct lwsi_wire_reader *r, uint32_t max) { r->max = max; }

void lwsi_wire_reader_free(struct lwsi_wire_reader *r)
{
  free(r->body);
  memset(r, 0, sizeof(*r));
}

static uint32_t be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int check_len(struct lwsi_wire_reader *r, uint32_t n)
{
  if (n == 0)
    r->err = -EBADMSG;
  else if (n > (r->max != 0 ? r->max : LWSI_WIRE_MAX_PAYLOAD))
    r->err = -EMSGSIZE;
  return r->err;
}

int lwsi_wire_split(struct lwsi_wire_reader *r, const uint8_t **data, size_t *len,
                    const uint8_t **frame, size_t *flen)
{
  if (r->err)
    return r->err;
  if (r->delivered) {
    r->delivered = false;
    r->hdr_have = 0;
    r->body_have = 0;
    r->need = 0;
  }
  if (r->hdr_have < LWSI_WIRE_HDR_LEN) {
    /* The common case: a whole frame in the caller's buffer, no copy. */
    if (r->hdr_have == 0 && *len >= LWSI_WIRE_HDR_LEN) {
      uint32_t n = be32(*data);
      if (check_len(r, n) < 0)
        return r->err;
      if (*len - LWSI_WIRE_HDR_LEN >= n) {
        *frame = *data + LWSI_WIRE_HDR_LEN;
        *flen = n;
        *data += LWSI_WIRE_HDR_LEN + n;
        *len -= LWSI_WIRE_HDR_LEN + n;
        r->delivered = true;
        return 1;
      }
    }
    size_t take = LWSI_WIRE_HDR_LEN - r->hdr_have;
    if (take > *len)
      take = *len;
    memcpy(r->hdr + r->hdr_have, *data, take);
    r->hdr_have += take;
    *data += take;
    *len -= take;
    if (r->hdr_have < LWSI_WIRE_HDR_LEN)
      return 0;
    uint32_t n = be32(r->hdr);
    if (check_len(r, n) < 0)
      return r->err;
    if (r->body_cap < n) {
      uint8_t *b = realloc(r->body, n);
      if (b == NULL) {
        r->err = -ENOMEM;
        return r->err;
      }
      r->body = b;
      r->body_cap = n;
    }
    r->need = n;
    r->body_have = 0;
  }
  size_t take = r->need - r->body_have;
  if (take > *len)
    take = *len;
  memcpy(r->body + r->body_have, *data, take);
  r->body_have += take;
  *data += take;
  *len -= take;
  if (r->body_have < r->need)
    return 0;
  *frame = r->body;
  *flen = r->need;
  r->delivered = true;
  return 1;
}

/* ---- proofs ---- */

/* The MAC input: a label, then fixed-size fields and length-prefixed text,
 * so that no two different messages give the same bytes. */
struct macbuf {
  uint8_t b[64 + 2 * LWSI_WIRE_CHALLENGE_LEN + 2 * LWSI_WIRE_NONCE_LEN + LWSI_WIRE_DIGEST_LEN +
            LWSI_WIRE_REVISION_MAX + LWSI_WIRE_POD_MAX + LWSI_WIRE_CODE_MAX +
            LWSI_WIRE_REASON_MAX + 64];
  size_t n;
  bool over;
};

static void mb_put(struct macbuf *m, const void *p, size_t n)
{
  if (m->over || n > sizeof(m->b) - m->n) {
    m->over = true;
    return;
  }
  memcpy(m->b + m->n, p, n);
  m->n += n;
}

static void mb_u32(struct macbuf *m, uint32_t v)
{
  uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  mb_put(m, b, 4);
}

static void mb_text(struct macbuf *m, const char *s, size_t size)
{
  size_t n = strnlen(s, size);
  mb_u32(m, (uint32_t)n);
  mb_put(m, s, n);
}

static int mac_of(const uint8_t *token, size_t token_len, struct macbuf *m, uint8_t *out)
{
  if (token == NULL || token_len == 0 || token_len > INT_MAX)
    return -EINVAL;
  if (m->over)
    return -EINVAL;
  int rc = lwsi_crypto_hmac_sha256(token, token_len, m->b, m->n, out);
  if (rc < 0)
    explicit_bzero(out, LWSI_WIRE_MAC_LEN);
  return rc;
}

/* The join's launch command for its MAC: SHA-256 over each argument,
 * length-prefixed, so that the MAC input stays small whatever it holds. */
static int cmd_hash(const struct lwsi_msg_join *j, uint8_t out[LWSI_SHA256_LEN])
{
  if (!cmd_ok(j))
    return -EINVAL;
  size_t cap = 1;
  for (uint32_t i = 0; i < j->ncmd; i++)
    cap += strlen(j->cmd[i]) + 4;
  uint8_t *buf = malloc(cap);
  if (buf == NULL)
    return -ENOMEM;
  size_t n = 0;
  for (uint32_t i = 0; i < j->ncmd; i++) {
    size_t l = strlen(j->cmd[i]);
    buf[n++] = (uint8_t)(l >> 24);
    buf[n++] = (uint8_t)(l >> 16);
    buf[n++] = (uint8_t)(l >> 8);
    buf[n++] = (uint8_t)l;
    memcpy(buf + n, j->cmd[i], l);
    n += l;
  }
  int rc = lwsi_crypto_sha256(buf, n, out);
  free(buf);
  return rc;
}

int lwsi_wire_join_mac(const uint8_t *token, size_t token_len, const struct lwsi_msg_hello *hello,
                       const struct lwsi_msg_join *j, uint8_t mac[LWSI_WIRE_MAC_LEN])
{
  static const char label[] = "lwsinit/1 join";
  struct macbuf m = {.n = 0};
  mb_put(&m, label, sizeof(label)); /* with its NUL: the label ends unambiguously */
  mb_put(&m, hello->challenge, sizeof(hello->challenge));
  mb_put(&m, hello->nonce, sizeof(hello->nonce));
  mb_u32(&m, j->rank);
  mb_u32(&m, j->size);
  mb_u32(&m, j->gpus);
  mb_put(&m, j->nonce, sizeof(j->nonce));
  mb_put(&m, j->challenge, sizeof(j->challenge));
  mb_put(&m, j->digest, sizeof(j->digest));
  mb_text(&m, j->revision, sizeof(j->revision));
  mb_text(&m, j->pod, sizeof(j->pod));
  mb_text(&m, j->preset, sizeof(j->preset));
  mb_u32(&m, j->dist_port);
  mb_u32(&m, j->cmd_total);
  mb_u32(&m, j->ncmd);
  uint8_t cmd[LWSI_SHA256_LEN];
  int rc = cmd_hash(j, cmd);
  if (rc < 0)
    return rc;
  mb_put(&m, cmd, sizeof(cmd));
  return mac_of(token, token_len, &m, mac);
}

/* What every leader proof starts with: its label (with the NUL, so that
 * it ends unambiguously), the worker's challenge and nonce first (the
 * proof answers them), then the leader's, then the rank. */
static void mb_leader(struct macbuf *m, const char *label, const struct lwsi_msg_hello *hello,
                      const struct lwsi_msg_join *j)
{
  mb_put(m, label, strlen(label) + 1);
  mb_put(m, j->challenge, sizeof(j->challenge));
  mb_put(m, j->nonce, sizeof(j->nonce));
  mb_put(m, hello->challenge, sizeof(hello->challenge));
  mb_put(m, hello->nonce, sizeof(hello->nonce));
  mb_u32(m, j->rank);
}

int lwsi_wire_welcome_mac(const uint8_t *token, size_t token_len,
                          const struct lwsi_msg_hello *hello, const struct lwsi_msg_join *j,
                          uint8_t mac[LWSI_WIRE_MAC_LEN])
{
  struct macbuf m = {.n = 0};
  mb_leader(&m, "lwsinit/1 welcome", hello, j);
  return mac_of(token, token_len, &m, mac);
}

int lwsi_wire_refuse_mac(const uint8_t *token, size_t token_len, const struct lwsi_msg_hello *hello,
                         const struct lwsi_msg_join *j, const struct lwsi_msg_refuse *rf,
                         uint8_t mac[LWSI_WIRE_MAC_LEN])
{
  struct macbuf m = {.n = 0};
  mb_leader(&m, "lwsinit/1 refuse", hello, j);
  mb_text(&m, rf->code, sizeof(rf->code));
  mb_text(&m, rf->reason, sizeof(rf->reason));
  return mac_of(token, token_len, &m, mac);
}

bool lwsi_wire_mac_equal(const uint8_t a[LWSI_WIRE_MAC_LEN], const uint8_t b[LWSI_WIRE_MAC_LEN])
{
  return lwsi_crypto_equal(a, b, LWSI_WIRE_MAC_LEN);
}
