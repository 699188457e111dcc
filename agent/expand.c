/* Placeholder expansion (contract, "Launching"): a placeholder is a brace,
 * a name of lowercase letters and underscores, a brace; "{{name}}" stands
 * for a literal "{name}"; every other brace passes through untouched, so
 * that JSON arguments survive. A placeholder followed at once by ':' is a
 * host before its port, and takes the value of the variable named with ':'
 * appended when there is one (an IPv6 address in brackets). */
#include "lwsinit/expand.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool is_name_char(char c) { return (c >= 'a' && c <= 'z') || c == '_'; }

/* Length of the name that starts at s and ends before a '}', or 0. */
static size_t name_len(const char *s)
{
  size_t n = 0;
  while (is_name_char(s[n]))
    n++;
  return (n > 0 && s[n] == '}') ? n : 0;
}

static const struct lwsi_expand_var *find_var(const char *name, size_t len,
                                              const struct lwsi_expand_var *vars,
                                              size_t nvars)
{
  for (size_t i = 0; i < nvars; i++)
    if (strlen(vars[i].name) == len && memcmp(vars[i].name, name, len) == 0)
      return &vars[i];
  return NULL;
}

/* The host form of the name: the variable named like it with ':'
 * appended, or NULL. */
static const struct lwsi_expand_var *find_host_var(const char *name, size_t len,
                                                   const struct lwsi_expand_var *vars,
                                                   size_t nvars)
{
  for (size_t i = 0; i < nvars; i++)
    if (strlen(vars[i].name) == len + 1 && memcmp(vars[i].name, name, len) == 0 &&
        vars[i].name[len] == ':')
      return &vars[i];
  return NULL;
}

static void copy_bad(char *bad, size_t badlen, const char *name, size_t len)
{
  if (bad == NULL || badlen == 0)
    return;
  if (len >= badlen)
    len = badlen - 1;
  memcpy(bad, name, len);
  bad[len] = '\0';
}

/* One pass over arg. With out == NULL it only measures and checks; else it
 * writes the expansion into out, which has room for *outlen bytes. */
static int expand_pass(const char *arg, const struct lwsi_expand_var *vars, size_t nvars,
                       char *out, size_t *outlen, char *bad, size_t badlen)
{
  size_t o = 0;
  for (size_t i = 0; arg[i] != '\0';) {
    const char *lit = NULL;
    size_t litlen = 0;
    if (arg[i] == '{' && arg[i + 1] == '{') {
      size_t n = name_len(arg + i + 2);
      if (n > 0 && arg[i + 2 + n + 1] == '}') {
        /* "{{name}}" is the literal "{name}". */
        lit = arg + i + 1;
        litlen = n + 2;
        i += n + 4;
      }
    }
    if (lit == NULL && arg[i] == '{') {
      size_t n = name_len(arg + i + 1);
      if (n > 0) {
        const struct lwsi_expand_var *v = find_var(arg + i + 1, n, vars, nvars);
        if (v == NULL) {
          copy_bad(bad, badlen, arg + i + 1, n);
          return -ENOENT;
        }
        if (v->value == NULL) {
          copy_bad(bad, badlen, arg + i + 1, n);
          return -ENODATA;
        }
        lit = v->value;
        if (arg[i + n + 2] == ':') {
          const struct lwsi_expand_var *h = find_host_var(arg + i + 1, n, vars, nvars);
          if (h != NULL && h->value != NULL)
            lit = h->value;
        }
        litlen = strlen(lit);
        i += n + 2;
      }
    }
    if (lit == NULL) {
      lit = arg + i;
      litlen = 1;
      i++;
    }
    if (out != NULL)
      memcpy(out + o, lit, litlen);
    o += litlen;
  }
  if (out != NULL)
    out[o] = '\0';
  *outlen = o + 1;
  return 0;
}

int lwsi_expand_check(const char *arg, const struct lwsi_expand_var *vars, size_t nvars,
                      char *bad, size_t badlen)
{
  size_t len;
  return expand_pass(arg, vars, nvars, NULL, &len, bad, badlen);
}

int lwsi_expand_arg(const char *arg, const struct lwsi_expand_var *vars, size_t nvars,
                    char **out, char *bad, size_t badlen)
{
  size_t len;
  int rc = expand_pass(arg, vars, nvars, NULL, &len, bad, badlen);
  if (rc < 0)
    return rc;
  char *s = malloc(len);
  if (s == NULL)
    return -ENOMEM;
  expand_pass(arg, vars, nvars, s, &len, NULL, 0);
  *out = s;
  return 0;
}

void lwsi_expand_free(char **argv)
{
  if (argv == NULL)
    return;
  for (char **p = argv; *p != NULL; p++)
    free(*p);
  free(argv);
}

int lwsi_expand_argv(char *const *argv, const struct lwsi_expand_var *vars, size_t nvars,
                     char ***out, char *bad, size_t badlen)
{
  size_t n = 0;
  while (argv[n] != NULL)
    n++;
  char **res = calloc(n + 1, sizeof(*res));
  if (res == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    int rc = lwsi_expand_arg(argv[i], vars, nvars, &res[i], bad, badlen);
    if (rc < 0) {
      lwsi_expand_free(res);
      return rc;
    }
  }
  *out = res;
  return 0;
}
