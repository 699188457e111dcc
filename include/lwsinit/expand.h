/* Placeholder expansion in COMMAND's arguments (contract, "Launching").
 * A pure module: no I/O, no global state. */
#ifndef LWSINIT_EXPAND_H
#define LWSINIT_EXPAND_H

#include <stddef.h>

/* A placeholder followed at once by ':' is a host before its port: a
 * variable named like it with ':' appended ("leader_ip:"), when there is
 * one, gives its value there (an IPv6 address in brackets). */
struct lwsi_expand_var {
  const char *name;
  const char *value; /* NULL: known name, but no value in this setup */
};

/* Checks every placeholder of arg against vars without expanding it.
 * Returns 0; -ENOENT when a name is unknown, with the name copied to bad;
 * -ENODATA when a known name has no value. */
int lwsi_expand_check(const char *arg, const struct lwsi_expand_var *vars,
                      size_t nvars, char *bad, size_t badlen);

/* Expands arg into a new string (malloc'd) in *out. Returns 0, -ENOENT or
 * -ENODATA as lwsi_expand_check, or -ENOMEM. */
int lwsi_expand_arg(const char *arg, const struct lwsi_expand_var *vars,
                    size_t nvars, char **out, char *bad, size_t badlen);

/* Expands a whole NULL-terminated argv. On success *out is a malloc'd argv
 * to free with lwsi_expand_free. */
int lwsi_expand_argv(char *const *argv, const struct lwsi_expand_var *vars,
                     size_t nvars, char ***out, char *bad, size_t badlen);
void lwsi_expand_free(char **argv);

#endif
