/* The launch check (include/lwsinit/launchck.h): the launch command in the
 * form it travels in the join, and the leader's comparison of a member's
 * command with its own. */
#include "lwsinit/launchck.h"

#include "lwsinit/crypto.h"
#include "lwsinit/text.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[] = {"warn", "strict", "off"};

const char *lwsi_launchck_mode_name(enum lwsi_launchck_mode mode)
{
  return (unsigned)mode < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[mode] : "?";
}

/* The length of the valid UTF-8 sequence at p that is not a control
 * character (C1 included), or 0: the wire's text rule (lwsi_wire_text_ok)
 * for one character. */
static size_t utf8_len(const unsigned char *p)
{
  unsigned c = p[0];
  size_t n;
  unsigned min, cp;
  if ((c & 0xe0) == 0xc0)
    n = 1, min = 0x80, cp = c & 0x1f;
  else if ((c & 0xf0) == 0xe0)
    n = 2, min = 0x800, cp = c & 0x0f;
  else if ((c & 0xf8) == 0xf0)
    n = 3, min = 0x10000, cp = c & 0x07;
  else
    return 0;
  for (size_t i = 1; i <= n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || (cp >= 0x80 && cp < 0xa0))
    return 0;
  return n + 1;
}

size_t lwsi_launchck_escape(const char *s, char *out, size_t len)
{
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t o = 0, w = 0; /* the escaped length, and what of it was written */
  while (*p != '\0') {
    char tmp[4];
    const char *piece = tmp;
    size_t n;
    if (*p == '\\') {
      tmp[0] = tmp[1] = '\\';
      n = 2;
      p++;
    } else if (*p >= 0x20 && *p < 0x7f) {
      piece = (const char *)p;
      n = 1;
      p++;
    } else if (*p >= 0x80 && (n = utf8_len(p)) > 0) {
      piece = (const char *)p;
      p += n;
    } else {
      tmp[0] = '\\';
      tmp[1] = 'x';
      tmp[2] = hex[*p >> 4];
      tmp[3] = hex[*p & 15];
      n = 4;
      p++;
    }
    /* Whole pieces only, so that a cut never splits an escape. */
    if (w == o && o + n < len) {
      memcpy(out + o, piece, n);
      w += n;
    }
    o += n;
  }
  if (len > 0)
    out[w] = '\0';
  return o;
}

int lwsi_launchck_digest(const char *const *argv, uint32_t argc, uint32_t from,
                         uint8_t out[LWSI_WIRE_DIGEST_LEN])
{
  /* The input in one buffer: the count, then each escaped argument with
   * its length, so that ["ab","c"] and ["a","bc"] differ. */
  size_t cap = 32;
  for (uint32_t i = from; i < argc; i++)
    cap += lwsi_launchck_escape(argv[i], NULL, 0) + 16;
  char *buf = malloc(cap);
  if (buf == NULL)
    return -ENOMEM;
  size_t n = (size_t)snprintf(buf, cap, "lwsinit-cmd-v2\n%u\n", argc);
  for (uint32_t i = from; i < argc; i++) {
    size_t e = lwsi_launchck_escape(argv[i], NULL, 0);
    n += (size_t)snprintf(buf + n, cap - n, "%zu:", e);
    lwsi_launchck_escape(argv[i], buf + n, cap - n);
    n += e;
  }
  int rc = lwsi_crypto_sha256(buf, n, out);
  free(buf);
  return rc;
}

/* One block: the pointer array, then the texts. */
static int alloc_args(struct lwsi_launchck_cmd *c, uint32_t n, size_t text)
{
  size_t head = ((size_t)n + 1) * sizeof(char *);
  char **a = malloc(head + text + 1);
  if (a == NULL)
    return -ENOMEM;
  a[n] = NULL;
  c->args = a;
  c->n = n;
  return 0;
}

int lwsi_launchck_build(const char *const *argv, uint32_t argc, struct lwsi_launchck_cmd *out)
{
  memset(out, 0, sizeof(*out));
  if (argc > LWSI_WIRE_CMD_MAX_TOTAL)
    return -E2BIG;
  /* The leading arguments that fit both bounds. */
  uint32_t n = 0;
  size_t text = 0;
  while (n < argc && n < LWSI_WIRE_CMD_MAX_ARGS) {
    size_t e = lwsi_launchck_escape(argv[n], NULL, 0);
    if (text + e > LWSI_WIRE_CMD_MAX_TEXT)
      break;
    text += e;
    n++;
  }
  int rc = lwsi_launchck_digest(argv, argc, n, out->digest);
  if (rc < 0)
    return rc;
  if ((rc = alloc_args(out, n, text + n)) < 0)
    return rc;
  out->total = argc;
  char *t = (char *)(out->args + n + 1);
  for (uint32_t i = 0; i < n; i++) {
    size_t e = lwsi_launchck_escape(argv[i], NULL, 0);
    lwsi_launchck_escape(argv[i], t, e + 1);
    out->args[i] = t;
    t += e + 1;
  }
  return 0;
}

int lwsi_launchck_copy(struct lwsi_launchck_cmd *dst, uint32_t total, uint32_t n,
                       char *const *args, const uint8_t digest[LWSI_WIRE_DIGEST_LEN])
{
  memset(dst, 0, sizeof(*dst));
  size_t text = 0;
  for (uint32_t i = 0; i < n; i++)
    text += strlen(args[i]) + 1;
  int rc = alloc_args(dst, n, text);
  if (rc < 0)
    return rc;
  dst->total = total;
  memcpy(dst->digest, digest, sizeof(dst->digest));
  char *t = (char *)(dst->args + n + 1);
  for (uint32_t i = 0; i < n; i++) {
    size_t l = strlen(args[i]) + 1;
    memcpy(t, args[i], l);
    dst->args[i] = t;
    t += l;
  }
  return 0;
}

void lwsi_launchck_free(struct lwsi_launchck_cmd *c)
{
  free(c->args);
  memset(c, 0, sizeof(*c));
}

/* Whether s spells rank in decimal, as the shell and Kubernetes write it. */
static bool is_rank(const char *s, uint32_t rank)
{
  char buf[16];
  snprintf(buf, sizeof(buf), "%u", rank);
  return strcmp(s, buf) == 0;
}

/* Equal by the contract: the same text, or each side's own rank, alone or
 * after the same "name=". */
static bool arg_equal(const char *l, uint32_t lrank, const char *m, uint32_t mrank)
{
  if (strcmp(l, m) == 0)
    return true;
  if (lrank == mrank)
    return false;
  if (is_rank(l, lrank) && is_rank(m, mrank))
    return true;
  const char *le = strrchr(l, '='), *me = strrchr(m, '=');
  return le != NULL && me != NULL && le - l == me - m && memcmp(l, m, (size_t)(le - l)) == 0 &&
         is_rank(le + 1, lrank) && is_rank(me + 1, mrank);
}

/* A value as shown: quoted, cut at LWSI_LAUNCHCK_SHOWN bytes on a
 * character boundary. */
static void show(char *buf, size_t len, const char *v)
{
  size_t n = strlen(v);
  if (n <= LWSI_LAUNCHCK_SHOWN) {
    lwsi_text_printf(buf, len, "'%s'", v);
    return;
  }
  n = LWSI_LAUNCHCK_SHOWN;
  while (n > 0 && ((unsigned char)v[n] & 0xc0) == 0x80)
    n--;
  lwsi_text_printf(buf, len, "'%.*s...'", (int)n, v);
}

struct listing {
  char *buf;
  size_t len;
  size_t used;
  uint32_t count;
};

/* Counts one difference and lists it among the first few. */
static void add_diff(struct listing *l, const char *one)
{
  l->count++;
  if (l->count > LWSI_LAUNCHCK_LISTED || l->len == 0)
    return;
  lwsi_text_printf(l->buf + l->used, l->len - l->used, "%s%s", l->count > 1 ? "; " : "", one);
  l->used += strlen(l->buf + l->used);
}

uint32_t lwsi_launchck_compare(const struct lwsi_launchck_cmd *leader, uint32_t leader_rank,
                               const struct lwsi_launchck_cmd *mine, uint32_t mine_rank,
                               char *detail, size_t len)
{
  struct listing l = {detail, len, 0, 0};
  if (len > 0)
    detail[0] = '\0';
  char a[LWSI_LAUNCHCK_SHOWN + 8], b[LWSI_LAUNCHCK_SHOWN + 8], one[2 * LWSI_LAUNCHCK_SHOWN + 160];
  uint32_t k = leader->n < mine->n ? leader->n : mine->n;
  for (uint32_t i = 0; i < k; i++) {
    if (arg_equal(leader->args[i], leader_rank, mine->args[i], mine_rank))
      continue;
    show(a, sizeof(a), mine->args[i]);
    show(b, sizeof(b), leader->args[i]);
    lwsi_text_printf(one, sizeof(one), "argument %u is %s, the leader's is %s", i, a, b);
    add_diff(&l, one);
  }
  bool whole = leader->n == leader->total && mine->n == mine->total;
  if (whole) {
    /* Both complete: what one has past the other's end. */
    for (uint32_t i = k; i < mine->n; i++) {
      show(a, sizeof(a), mine->args[i]);
      lwsi_text_printf(one, sizeof(one), "argument %u is %s, the leader has none", i, a);
      add_diff(&l, one);
    }
    for (uint32_t i = k; i < leader->n; i++) {
      show(b, sizeof(b), leader->args[i]);
      lwsi_text_printf(one, sizeof(one), "argument %u is missing, the leader's is %s", i, b);
      add_diff(&l, one);
    }
  } else if (leader->n != mine->n || leader->total != mine->total ||
             memcmp(leader->digest, mine->digest, sizeof(leader->digest)) != 0) {
    /* Past the bound only the digest of the rest travels: where the two
     * differ is unknown. */
    lwsi_text_printf(one, sizeof(one), "the arguments from argument %u on differ (past %u "
                     "arguments or %u bytes only a digest of the rest is compared)",
                     k, LWSI_WIRE_CMD_MAX_ARGS, LWSI_WIRE_CMD_MAX_TEXT);
    add_diff(&l, one);
  }
  if (l.count > LWSI_LAUNCHCK_LISTED && len > l.used)
    lwsi_text_printf(detail + l.used, len - l.used, "; and %u more",
                     l.count - LWSI_LAUNCHCK_LISTED);
  return l.count;
}
