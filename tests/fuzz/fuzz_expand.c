/* Placeholder expansion (agent/expand.c) on COMMAND's arguments, which
 * come from the pod spec. The input is NUL-separated: the argument, then
 * the values of leader, leader_ip, size, rank, dist_port, dp_size,
 * dp_local, dp_start (a name whose value is missing is known but has no
 * value, as {dist_port} without a port).
 *
 * Checks: lwsi_expand_check and lwsi_expand_arg agree (result and the
 * name reported), the name fits any buffer size given, the expansion
 * equals a reference written from the contract's rule, and
 * lwsi_expand_argv over all the pieces agrees with expanding each. */
#include "lwsinit/expand.h"

#include <errno.h>
#include <string.h>

#include "fuzz.h"

static const char *const names[] = {"leader",    "leader_ip", "size",     "rank",
                                    "dist_port", "dp_size",   "dp_local", "dp_start"};
#define NNAMES (sizeof(names) / sizeof(names[0]))
#define MAXPIECES 16

/* The rule, from the contract: "{name}" (lowercase letters and '_') is
 * replaced; "{{name}}" is the literal "{name}"; any other brace is kept. */
struct ref {
  char *out;
  size_t len;
  int rc;
  char bad[4096];
};

static size_t ref_name(const char *s)
{
  size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyz_");
  return n > 0 && s[n] == '}' ? n : 0;
}

static void ref_expand(const char *arg, const struct lwsi_expand_var *vars, size_t nvars,
                       struct ref *r)
{
  size_t cap = strlen(arg) + 1;
  for (size_t i = 0; i < nvars; i++)
    if (vars[i].value)
      cap += strlen(vars[i].value) * (strlen(arg) / 3 + 1);
  r->out = malloc(cap);
  CHECK(r->out != NULL);
  r->len = 0;
  r->rc = 0;
  r->bad[0] = '\0';
  const char *p = arg;
  while (*p) {
    size_t n;
    if (p[0] == '{' && p[1] == '{' && (n = ref_name(p + 2)) > 0 && p[n + 3] == '}') {
      memcpy(r->out + r->len, p + 1, n + 2); /* "{name}" */
      r->len += n + 2;
      p += n + 4;
    } else if (p[0] == '{' && (n = ref_name(p + 1)) > 0) {
      const struct lwsi_expand_var *v = NULL;
      for (size_t i = 0; i < nvars && v == NULL; i++)
        if (strlen(vars[i].name) == n && strncmp(vars[i].name, p + 1, n) == 0)
          v = &vars[i];
      if (v == NULL || v->value == NULL) {
        r->rc = v == NULL ? -ENOENT : -ENODATA;
        memcpy(r->bad, p + 1, n);
        r->bad[n] = '\0';
        return;
      }
      size_t vl = strlen(v->value);
      CHECK(r->len + vl < cap);
      memcpy(r->out + r->len, v->value, vl);
      r->len += vl;
      p += n + 2;
    } else {
      r->out[r->len++] = *p++;
    }
    CHECK(r->len < cap);
  }
  r->out[r->len] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size > 4000)
    return -1; /* a name reported in bad[] must fit the reference's buffer */
  char *buf = fuzz_cstr(data, size);
  char *pieces[MAXPIECES + 1];
  size_t np = 0;
  /* A NUL ends a piece; one at the very end adds no empty piece. */
  for (char *p = buf; np < MAXPIECES;) {
    pieces[np++] = p;
    char *end = p + strlen(p);
    if (end + 1 >= buf + size)
      break;
    p = end + 1;
  }
  pieces[np] = NULL;

  struct lwsi_expand_var vars[NNAMES];
  for (size_t i = 0; i < NNAMES; i++) {
    vars[i].name = names[i];
    vars[i].value = i + 1 < np ? pieces[i + 1] : NULL;
  }
  /* Fewer names than the agent has, sometimes: a name can be unknown. */
  size_t nvars = size % 3 == 0 ? 5 : NNAMES;

  const char *arg = pieces[0];
  struct ref ref;
  ref_expand(arg, vars, nvars, &ref);

  /* The name reported, into buffers of every small size. */
  size_t badlen = 1 + size % 12;
  char *bad = malloc(badlen);
  int rc_check = lwsi_expand_check(arg, vars, nvars, bad, badlen);
  CHECK(rc_check == ref.rc);
  if (rc_check < 0) {
    CHECK(strnlen(bad, badlen) < badlen);
    CHECK(strncmp(bad, ref.bad, badlen - 1) == 0);
  }
  CHECK(lwsi_expand_check(arg, vars, nvars, NULL, 0) == ref.rc);

  char *out = NULL;
  char bad2[64];
  int rc_arg = lwsi_expand_arg(arg, vars, nvars, &out, bad2, sizeof(bad2));
  CHECK(rc_arg == ref.rc);
  if (rc_arg == 0) {
    CHECK(strlen(out) == ref.len && memcmp(out, ref.out, ref.len) == 0);
    free(out);
  } else {
    CHECK(strncmp(bad2, ref.bad, sizeof(bad2) - 1) == 0);
  }

  /* The whole argv: fails as its first failing argument does. */
  char **argv = NULL;
  int rc_argv = lwsi_expand_argv(pieces, vars, nvars, &argv, NULL, 0);
  int want = 0;
  for (size_t i = 0; i < np && want == 0; i++)
    want = lwsi_expand_check(pieces[i], vars, nvars, NULL, 0);
  CHECK(rc_argv == want);
  if (rc_argv == 0) {
    for (size_t i = 0; i < np; i++) {
      char *one = NULL;
      CHECK(lwsi_expand_arg(pieces[i], vars, nvars, &one, NULL, 0) == 0);
      CHECK(argv[i] != NULL && strcmp(argv[i], one) == 0);
      free(one);
    }
    CHECK(argv[np] == NULL);
    lwsi_expand_free(argv);
  }

  free(bad);
  free(ref.out);
  free(buf);
  return 0;
}
