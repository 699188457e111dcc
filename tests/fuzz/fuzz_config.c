/* The command line and the environment (agent/config.c), which come from
 * the pod spec and Kubernetes. The input is NUL-separated items: an item
 * that starts with '@' is an environment entry (without the '@'), any
 * other is the next argv element after "lwsinit"; a NUL at the very end
 * adds no empty item. Every item is its own allocation of its exact size.
 *
 * lwsi_config_parse must return 0, or -EINVAL with one line in err that
 * starts with "lwsinit: ". What it accepts must hold up: a group has
 * rank < size, the heartbeat fits the peer timeout, every string field is
 * terminated, and the engine's command line builds (lwsi_cmdline_build,
 * lwsi_cmdline_launch_check) without an error: a placeholder the parser let
 * through must expand.
 *
 * --token-file is opened by the parser: every path the input gives it is
 * redirected into a private directory (files "ok", "ws", "empty", "big",
 * "nul" and a directory "dir"), so that nothing outside is read and
 * nothing can block. */
#include "lwsinit/cmdline.h"
#include "lwsinit/config.h"
#include "lwsinit/engine.h"
#include "lwsinit/expand.h"
#include "lwsinit/launchck.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#define MAXITEMS 256

static char tokdir[64];

static void write_file(const char *name, const char *data, size_t n)
{
  char path[128];
  snprintf(path, sizeof(path), "%s/%s", tokdir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  CHECK(write(fd, data, n) == (ssize_t)n);
  close(fd);
}

static const char *const tokfiles[] = {"ok", "ws", "empty", "nul", "big", "max"};

/* The private directory goes when libFuzzer exits normally (a crash
 * leaves it, with the input that crashed). */
static void cleanup(void)
{
  char path[128];
  for (size_t i = 0; i < sizeof(tokfiles) / sizeof(tokfiles[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", tokdir, tokfiles[i]);
    unlink(path);
  }
  snprintf(path, sizeof(path), "%s/dir", tokdir);
  rmdir(path);
  rmdir(tokdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  snprintf(tokdir, sizeof(tokdir), "/tmp/lwsi-fuzz-config-XXXXXX");
  CHECK(mkdtemp(tokdir) != NULL);
  atexit(cleanup);
  write_file("ok", "s3cret\n", 7);
  write_file("ws", " \t\r\n", 4);
  write_file("empty", "", 0);
  write_file("nul", "a\0b\n", 4);
  static char big[LWSI_TOKEN_MAX + 10];
  memset(big, 'k', sizeof(big));
  write_file("big", big, sizeof(big));
  write_file("max", big, LWSI_TOKEN_MAX - 1);
  char dir[128];
  snprintf(dir, sizeof(dir), "%s/dir", tokdir);
  mkdir(dir, 0700);
  /* /dev/stdin and /proc/self/fd/0 must not block either. */
  int fd = open("/dev/null", O_RDONLY);
  if (fd >= 0 && fd != 0) {
    dup2(fd, 0);
    close(fd);
  }
  return 0;
}

/* A token file path from the input, moved into tokdir: its last '/'-free
 * part, so "ok" and "/x/ok" both name tokdir/ok. Empty stays empty, and a
 * value too long for the field stays as it is (refused before any open). */
static char *token_path(const char *v)
{
  size_t n = strlen(v);
  if (n == 0 || n >= 4096)
    return strdup(v);
  const char *base = strrchr(v, '/');
  base = base ? base + 1 : v;
  size_t len = strlen(tokdir) + 1 + strlen(base) + 1;
  char *p = malloc(len);
  CHECK(p != NULL);
  snprintf(p, len, "%s/%s", tokdir, base);
  return p;
}

/* *item is prefix followed by a path: the same prefix, the path redirected
 * (token_path). */
static void redirect(char **item, const char *prefix)
{
  size_t n = strlen(prefix);
  char *p = token_path(*item + n);
  char *out = malloc(n + strlen(p) + 1);
  CHECK(out != NULL);
  memcpy(out, prefix, n);
  strcpy(out + n, p);
  free(p);
  free(*item);
  *item = out;
}

static char *dup_exact(const char *s)
{
  char *p = strdup(s);
  CHECK(p != NULL);
  return p;
}

static void check_str(const char *s, size_t size) { CHECK(strnlen(s, size) < size); }

static void check_accepted(const struct lwsi_config *cfg, int argc, char **argv)
{
  check_str(cfg->leader, sizeof(cfg->leader));
  check_str(cfg->status_socket, sizeof(cfg->status_socket));
  check_str(cfg->probe_addr.host, sizeof(cfg->probe_addr.host));
  check_str(cfg->dns_server.host, sizeof(cfg->dns_server.host));
  check_str(cfg->upstream, sizeof(cfg->upstream));
  check_str(cfg->token_file, sizeof(cfg->token_file));
  check_str(cfg->revision, sizeof(cfg->revision));
  check_str(cfg->termination_log, sizeof(cfg->termination_log));
  CHECK(cfg->token_len < LWSI_TOKEN_MAX && cfg->token[cfg->token_len] == '\0');
  if (cfg->mode != LWSI_MODE_RUN)
    return;

  CHECK(cfg->size >= 1 && cfg->size <= 65536);
  CHECK(cfg->rank < cfg->size);
  if (cfg->standalone)
    CHECK(cfg->size == 1 && cfg->rank == 0);
  CHECK(cfg->peer_timeout_ms > cfg->heartbeat_ms);
  CHECK(cfg->rdzv_port >= 1);
  CHECK(cfg->argc >= 1 && cfg->argv == argv + (argc - cfg->argc));
  CHECK(cfg->argv[cfg->argc] == NULL);
  CHECK(lwsi_engine_get(cfg->preset) != NULL);
  uint16_t port = 0;
  if (lwsi_config_dist_port(cfg, &port))
    CHECK(port >= 1);

  /* What the agent does with it at launch. */
  struct lwsi_cmdline_values v = {
      .leader = cfg->leader, .leader_ip = "10.244.1.17", .size = cfg->size, .rank = cfg->rank};
  char **out = NULL;
  char bad[64] = "";
  int rc = lwsi_cmdline_build(cfg, &v, &out, bad, sizeof(bad));
  if (rc != 0)
    fprintf(stderr, "fuzz_config: accepted, but lwsi_cmdline_build: %s ({%s})\n", strerror(-rc),
            bad);
  CHECK(rc == 0);
  size_t n = 0;
  while (out[n] != NULL)
    n++;
  CHECK(n >= (size_t)cfg->argc);
  lwsi_expand_free(out);
  struct lwsi_launchck_cmd lc;
  CHECK(lwsi_cmdline_launch_check(cfg, &lc) == 0);
  lwsi_launchck_free(&lc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *buf = fuzz_cstr(data, size);
  char *argv[MAXITEMS + 2];
  char *envp[MAXITEMS + 1];
  int argc = 0, envc = 0;
  argv[argc++] = dup_exact("lwsinit");
  /* Items: a NUL ends one; one at the very end adds no empty item. */
  for (char *p = buf; size > 0 && argc <= MAXITEMS && envc < MAXITEMS;) {
    char *end = p + strlen(p);
    if (p[0] == '@')
      envp[envc++] = dup_exact(p + 1);
    else
      argv[argc++] = dup_exact(p);
    if (end + 1 >= buf + size)
      break;
    p = end + 1;
  }
  argv[argc] = NULL;
  envp[envc] = NULL;

  /* Every way a token file path can be given, moved into tokdir. */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc) {
      char *p = token_path(argv[i + 1]);
      free(argv[i + 1]);
      argv[i + 1] = p;
    } else if (strncmp(argv[i], "--token-file=", 13) == 0) {
      redirect(&argv[i], "--token-file=");
    }
  }
  for (int i = 0; i < envc; i++)
    if (strncmp(envp[i], "LWSINIT_TOKEN_FILE=", 19) == 0)
      redirect(&envp[i], "LWSINIT_TOKEN_FILE=");

  struct lwsi_config *cfg = malloc(sizeof(*cfg));
  char *err = malloc(LWSI_CONFIG_ERR_MAX);
  CHECK(cfg != NULL && err != NULL);
  memset(err, 'x', LWSI_CONFIG_ERR_MAX);
  int rc = lwsi_config_parse(cfg, argc, argv, envp, err, LWSI_CONFIG_ERR_MAX);
  CHECK(rc == 0 || rc == -EINVAL);
  size_t el = strnlen(err, LWSI_CONFIG_ERR_MAX);
  CHECK(el < LWSI_CONFIG_ERR_MAX);
  if (rc < 0) {
    CHECK(strncmp(err, "lwsinit: ", 9) == 0);
    CHECK(el > 9);
    CHECK(strchr(err, '\n') == NULL && strchr(err, '\r') == NULL);
  } else {
    CHECK(el == 0);
    check_accepted(cfg, argc, argv);
  }

  free(err);
  free(cfg);
  for (int i = 0; i < argc; i++)
    free(argv[i]);
  for (int i = 0; i < envc; i++)
    free(envp[i]);
  free(buf);
  return 0;
}
