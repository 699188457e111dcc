/* lwsinit-gpucheck gpu-free: NVML's list of compute processes, polled
 * until none of an old engine's processes holds a GPU of this node.
 *
 * NVML (libnvidia-ml.so.1, which the NVIDIA container toolkit mounts with
 * the driver) is loaded with dlopen, as CUDA and NCCL are by the check, so
 * the agent's image needs none of it. A process NVML lists holds the old
 * engine's memory when it is one of --pids, when it is in the process
 * group --pgid, or when no such pid exists in this PID namespace: NVML
 * reports the host's pids (NVIDIA/nvidia-docker#179, nvidia-smi shows no
 * or foreign pids in a container), and in a pod the GPUs are the pod's
 * alone, so a process this namespace cannot see is the old engine's
 * context still being torn down by the driver. A live process of this
 * namespace outside the old group does not block.
 *
 * Output as the check's: with --proto, one JSON result line on stdout
 * ({"event":"result","ok":...,"mode":"gpu-free","error":...}); else one
 * line for a person. */
#include "gpufree.h"

#include "lwsinit/fdio.h"
#include "lwsinit/gpu_abi.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS 64
#define MAX_PROCS 1024

static struct {
  bool proto;
  long pgid;
  long pids[MAX_PIDS];
  size_t npids;
  uint64_t timeout_ms;
  uint64_t interval_ms;
} opt = {.timeout_ms = 60000, .interval_ms = 100};

static struct {
  lwsi_nvml_init_fn *init;
  lwsi_nvml_shutdown_fn *shutdown;
  lwsi_nvml_device_get_count_fn *count;
  lwsi_nvml_device_get_handle_by_index_fn *handle;
  lwsi_nvml_device_get_compute_running_processes_fn *procs;
} nv;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
  (void)sig;
  stop = 1;
}

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One JSON string: the error texts here are ours, without quotes or
 * control characters, but a library's may have any. */
static void json_str(char *buf, size_t len, const char *s)
{
  size_t o = 0;
  if (len < 3)
    return;
  buf[o++] = '"';
  for (; *s != '\0' && o + 3 < len; s++)
    if (*s != '"' && *s != '\\' && (unsigned char)*s >= 0x20)
      buf[o++] = *s;
  buf[o++] = '"';
  buf[o] = '\0';
}

static int result(bool ok, const char *error, uint64_t t0)
{
  if (opt.proto) {
    char line[1400], err[1100];
    json_str(err, sizeof(err), error ? error : "");
    int n = snprintf(line, sizeof(line),
                     "{\"event\":\"result\",\"ok\":%s,\"mode\":\"gpu-free\",\"exit\":%d,"
                     "\"error\":%s,\"devices\":[],\"time_ms\":%llu}\n",
                     ok ? "true" : "false", ok ? 0 : 1, error ? err : "null",
                     (unsigned long long)(now_ms() - t0));
    if (n > 0 && (size_t)n < sizeof(line))
      (void)lwsi_fdio_write_all(STDOUT_FILENO, line, (size_t)n);
  } else if (ok) {
    printf("OK: the GPUs hold no process of the old engine%s%s\n", error ? ": " : "",
           error ? error : "");
  } else {
    fprintf(stderr, "lwsinit-gpucheck gpu-free: FAILED: %s\n", error);
  }
  return ok ? 0 : 1;
}

static int usage(const char *why)
{
  fprintf(stderr,
          "lwsinit-gpucheck gpu-free: %s\n"
          "usage: lwsinit-gpucheck gpu-free [--proto] [--pgid PGID] [--pids PID,PID...]\n"
          "                                 [--timeout-ms N] [--interval-ms N]\n",
          why);
  return 2;
}

static bool parse_num(const char *s, long min, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min)
    return false;
  *out = v;
  return true;
}

static int parse(int argc, char **argv)
{
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--proto") == 0) {
      opt.proto = true;
      continue;
    }
    if (strcmp(a, "--gpus") == 0 && i + 1 < argc) {
      i++; /* NVML sees the container's GPUs, all of them the pod's */
      continue;
    }
    if (i + 1 >= argc)
      return usage("an option without its value");
    const char *v = argv[++i];
    long n;
    if (strcmp(a, "--pgid") == 0 && parse_num(v, 1, &n)) {
      opt.pgid = n;
    } else if (strcmp(a, "--timeout-ms") == 0 && parse_num(v, 1, &n)) {
      opt.timeout_ms = (uint64_t)n;
    } else if (strcmp(a, "--interval-ms") == 0 && parse_num(v, 1, &n)) {
      opt.interval_ms = (uint64_t)n;
    } else if (strcmp(a, "--pids") == 0) {
      char copy[1024];
      snprintf(copy, sizeof(copy), "%s", v);
      char *save = NULL;
      for (char *p = strtok_r(copy, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
        if (opt.npids == MAX_PIDS || !parse_num(p, 1, &n))
          return usage("--pids: expected up to 64 pids, comma-separated");
        opt.pids[opt.npids++] = n;
      }
    } else {
      return usage("an unknown option or a bad value");
    }
  }
  return 0;
}

/* The process group of pid in this namespace; -1 when there is no such
 * process here. */
static long pgid_of(unsigned pid)
{
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%u/stat", pid);
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return -1;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* pid (comm) state ppid pgrp: comm may hold spaces and parentheses. */
  char *p = strrchr(buf, ')');
  char state;
  long ppid, pgrp;
  if (p == NULL || sscanf(p + 1, " %c %ld %ld", &state, &ppid, &pgrp) != 3)
    return -1;
  return state == 'Z' ? -1 : pgrp;
}

static bool old_engine(unsigned pid)
{
  for (size_t i = 0; i < opt.npids; i++)
    if ((long)pid == opt.pids[i])
      return true;
  long g = pgid_of(pid);
  return g < 0 || (opt.pgid > 0 && g == opt.pgid);
}

/* Looks once: 1 when some GPU holds a process of the old engine (what in
 * why), 0 when none does, -1 when NVML fails (why). */
static int look(char *why, size_t len)
{
  unsigned count = 0;
  int rc = nv.count(&count);
  if (rc != LWSI_NVML_SUCCESS) {
    snprintf(why, len, "nvmlDeviceGetCount_v2 failed (%d)", rc);
    return -1;
  }
  static struct lwsi_nvml_process_info infos[MAX_PROCS];
  for (unsigned d = 0; d < count; d++) {
    lwsi_nvml_device dev;
    if ((rc = nv.handle(d, &dev)) != LWSI_NVML_SUCCESS) {
      snprintf(why, len, "nvmlDeviceGetHandleByIndex_v2(%u) failed (%d)", d, rc);
      return -1;
    }
    unsigned n = MAX_PROCS;
    rc = nv.procs(dev, &n, infos);
    if (rc != LWSI_NVML_SUCCESS && rc != LWSI_NVML_ERROR_INSUFFICIENT_SIZE) {
      snprintf(why, len, "nvmlDeviceGetComputeRunningProcesses(%u) failed (%d)", d, rc);
      return -1;
    }
    if (rc == LWSI_NVML_ERROR_INSUFFICIENT_SIZE) {
      snprintf(why, len, "GPU %u lists more than %d processes", d, MAX_PROCS);
      return 1;
    }
    for (unsigned i = 0; i < n; i++)
      if (old_engine(infos[i].pid)) {
        snprintf(why, len, "GPU %u still holds pid %u of the old engine (%.1f GiB)", d,
                 infos[i].pid, (double)infos[i].used_gpu_memory / (double)(1ull << 30));
        return 1;
      }
  }
  return 0;
}

static bool load(char *why, size_t len)
{
  const char *env = getenv("LWSINIT_NVML");
  const char *names[] = {env, "libnvidia-ml.so.1", "libnvidia-ml.so"};
  void *h = NULL;
  for (size_t i = 0; i < 3 && h == NULL; i++)
    if (names[i] != NULL && names[i][0] != '\0') {
      h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
      if (h == NULL && i == 0) {
        snprintf(why, len, "cannot load the NVML given by LWSINIT_NVML: %s", dlerror());
        return false;
      }
    }
  if (h == NULL) {
    snprintf(why, len, "no NVML (libnvidia-ml.so.1) found; set LWSINIT_NVML to its path");
    return false;
  }
  *(void **)&nv.init = dlsym(h, "nvmlInit_v2");
  *(void **)&nv.shutdown = dlsym(h, "nvmlShutdown");
  *(void **)&nv.count = dlsym(h, "nvmlDeviceGetCount_v2");
  *(void **)&nv.handle = dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
  /* _v3 since driver 510, _v2 before: the same nvmlProcessInfo_t. */
  *(void **)&nv.procs = dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v3");
  if (nv.procs == NULL)
    *(void **)&nv.procs = dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v2");
  if (nv.init == NULL || nv.shutdown == NULL || nv.count == NULL || nv.handle == NULL ||
      nv.procs == NULL) {
    snprintf(why, len, "the NVML found lacks a function it needs (too old a driver?)");
    return false;
  }
  int rc = nv.init();
  if (rc != LWSI_NVML_SUCCESS) {
    snprintf(why, len, "nvmlInit_v2 failed (%d)", rc);
    return false;
  }
  return true;
}

int lwsi_gpufree_main(int argc, char **argv)
{
  uint64_t t0 = now_ms();
  int rc = parse(argc, argv);
  if (rc != 0)
    return rc;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  char why[512] = "";
  if (!load(why, sizeof(why)))
    return result(false, why, t0);
  for (;;) {
    int held = look(why, sizeof(why));
    if (held == 0) {
      nv.shutdown();
      return result(true, NULL, t0);
    }
    if (held < 0 || stop || now_ms() - t0 >= opt.timeout_ms) {
      char full[700];
      snprintf(full, sizeof(full), "%s%s", why,
               held < 0 ? "" : stop ? " (stopped)" : " when the time ran out");
      nv.shutdown();
      return result(false, full, t0);
    }
    struct timespec ts = {.tv_sec = (time_t)(opt.interval_ms / 1000),
                          .tv_nsec = (long)(opt.interval_ms % 1000) * 1000000};
    nanosleep(&ts, NULL); /* EINTR: a stop signal, seen above */
  }
}
