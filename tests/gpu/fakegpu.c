/* libfakegpu: a stand-in for the CUDA runtime and NCCL, so that
 * lwsinit-gpucheck can be tested where there is no GPU. The check loads it
 * by path (LWSINIT_CUDART and LWSINIT_NCCL both point here) and cannot tell
 * it from the real libraries: every export has the prototype of
 * include/lwsinit/gpu_abi.h, which test_gpu_abi.c holds to the real headers.
 *
 * Devices are host memory. The all-reduce is real: the process that calls
 * ncclGetUniqueId starts a hub thread listening on an abstract Unix socket
 * whose name is written into the 128-byte id (as real NCCL's root listens
 * on the address in its id); every communicator, in this process or in
 * another, connects to it; the hub releases init when all nranks have
 * joined, sums each round's buffers in rank order and sends the sum back.
 * Collectives run on a per-process worker thread, so streams really are
 * asynchronous (cudaStreamQuery says "not ready" until the sum is back) and
 * non-blocking communicators really are in progress until the hub answers.
 *
 * Environment:
 *   FAKEGPU_DEVICES      devices (0..64, default 2)
 *   FAKEGPU_NAME         device name (default "Fake GPU")
 *   FAKEGPU_MEM_GIB      memory per device reported (default 80)
 *   FAKEGPU_FAIL         missing-device  cudaGetDeviceCount: no device
 *                        alloc           cudaMalloc fails (FAKEGPU_FAIL_DEVICE, else all)
 *                        bad-memory      device memory reads byte 4097 with a bit flipped
 *                                        (FAKEGPU_FAIL_DEVICE, else all)
 *                        wrong-sum       the rank's contribution is off by one in one element
 *                        init-hang       the rank never joins: init stays in progress
 *                        slow-allreduce  each all-reduce batch sleeps FAKEGPU_SLOW_MS (500)
 *   FAKEGPU_FAIL_RANK    the NCCL rank the NCCL failures apply to (default: all)
 *   FAKEGPU_FAIL_DEVICE  the device alloc and bad-memory apply to (default: all)
 *   FAKEGPU_NOISE        if set, print a line on stdout (as NCCL_DEBUG=INFO does)
 *   FAKEGPU_NVML_PIDS    NVML's face: a file of "PID" or "DEVICE PID" lines, the
 *                        compute processes nvmlDeviceGetComputeRunningProcesses
 *                        lists (read at every call, so a test can change it;
 *                        none when unset or absent)
 *
 * Deliberately strict where the real libraries are, to catch check bugs:
 * buffers must lie in allocations of the communicator's device, the stream
 * must belong to it, a communicator must be ready before a collective, and
 * ncclConfig_t must carry NCCL's magic. */
#include "lwsinit/gpu_abi.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* The exports, declared with gpu_abi.h's types so the compiler checks
 * every definition below against them. */
EXPORT lwsi_cuda_runtime_get_version_fn cudaRuntimeGetVersion;
EXPORT lwsi_cuda_driver_get_version_fn cudaDriverGetVersion;
EXPORT lwsi_cuda_get_device_count_fn cudaGetDeviceCount;
EXPORT lwsi_cuda_set_device_fn cudaSetDevice;
EXPORT lwsi_cuda_get_device_properties_fn cudaGetDeviceProperties;
EXPORT lwsi_cuda_device_get_pci_bus_id_fn cudaDeviceGetPCIBusId;
EXPORT lwsi_cuda_mem_get_info_fn cudaMemGetInfo;
EXPORT lwsi_cuda_malloc_fn cudaMalloc;
EXPORT lwsi_cuda_free_fn cudaFree;
EXPORT lwsi_cuda_memcpy_fn cudaMemcpy;
EXPORT lwsi_cuda_memset_fn cudaMemset;
EXPORT lwsi_cuda_device_synchronize_fn cudaDeviceSynchronize;
EXPORT lwsi_cuda_stream_create_fn cudaStreamCreate;
EXPORT lwsi_cuda_stream_query_fn cudaStreamQuery;
EXPORT lwsi_cuda_stream_synchronize_fn cudaStreamSynchronize;
EXPORT lwsi_cuda_stream_destroy_fn cudaStreamDestroy;
EXPORT lwsi_cuda_get_error_string_fn cudaGetErrorString;
EXPORT lwsi_nccl_get_version_fn ncclGetVersion;
EXPORT lwsi_nccl_get_unique_id_fn ncclGetUniqueId;
EXPORT lwsi_nccl_comm_init_rank_config_fn ncclCommInitRankConfig;
EXPORT lwsi_nccl_comm_get_async_error_fn ncclCommGetAsyncError;
EXPORT lwsi_nccl_comm_finalize_fn ncclCommFinalize;
EXPORT lwsi_nccl_comm_destroy_fn ncclCommDestroy;
EXPORT lwsi_nccl_comm_abort_fn ncclCommAbort;
EXPORT lwsi_nccl_group_start_fn ncclGroupStart;
EXPORT lwsi_nccl_group_end_fn ncclGroupEnd;
EXPORT lwsi_nccl_all_reduce_fn ncclAllReduce;
EXPORT lwsi_nccl_get_error_string_fn ncclGetErrorString;
EXPORT lwsi_nccl_get_last_error_fn ncclGetLastError;
EXPORT lwsi_nvml_init_fn nvmlInit_v2;
EXPORT lwsi_nvml_shutdown_fn nvmlShutdown;
EXPORT lwsi_nvml_device_get_count_fn nvmlDeviceGetCount_v2;
EXPORT lwsi_nvml_device_get_handle_by_index_fn nvmlDeviceGetHandleByIndex_v2;
EXPORT lwsi_nvml_device_get_compute_running_processes_fn nvmlDeviceGetComputeRunningProcesses_v3;
EXPORT lwsi_nvml_error_string_fn nvmlErrorString;

/* ---- configuration ----------------------------------------------------- */

#define MAX_DEV 64

enum fail_mode { F_NONE, F_MISSING_DEVICE, F_ALLOC, F_BAD_MEMORY, F_WRONG_SUM, F_INIT_HANG, F_SLOW };

static struct {
  int ndev;
  char name[LWSI_CUDA_NAME_BYTES];
  size_t mem;
  enum fail_mode fail;
  int fail_rank;   /* -1: all */
  int fail_device; /* -1: all */
  unsigned slow_ms;
} cfg;

static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;

static long env_long(const char *name, long def, long min, long max)
{
  const char *s = getenv(name);
  if (s == NULL || s[0] == '\0')
    return def;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "fakegpu: ignoring %s=%s\n", name, s);
    return def;
  }
  return v;
}

static void load_cfg(void)
{
  cfg.ndev = (int)env_long("FAKEGPU_DEVICES", 2, 0, MAX_DEV);
  const char *n = getenv("FAKEGPU_NAME");
  snprintf(cfg.name, sizeof(cfg.name), "%s", n && n[0] ? n : "Fake GPU");
  cfg.mem = (size_t)env_long("FAKEGPU_MEM_GIB", 80, 1, 1 << 20) << 30;
  cfg.fail_rank = (int)env_long("FAKEGPU_FAIL_RANK", -1, -1, 1 << 30);
  cfg.fail_device = (int)env_long("FAKEGPU_FAIL_DEVICE", -1, -1, MAX_DEV);
  cfg.slow_ms = (unsigned)env_long("FAKEGPU_SLOW_MS", 500, 0, 600000);
  const char *f = getenv("FAKEGPU_FAIL");
  static const struct {
    const char *name;
    enum fail_mode mode;
  } modes[] = {{"missing-device", F_MISSING_DEVICE}, {"alloc", F_ALLOC},
               {"bad-memory", F_BAD_MEMORY},
               {"wrong-sum", F_WRONG_SUM},           {"init-hang", F_INIT_HANG},
               {"slow-allreduce", F_SLOW}};
  for (size_t i = 0; f && i < sizeof(modes) / sizeof(modes[0]); i++)
    if (strcmp(f, modes[i].name) == 0)
      cfg.fail = modes[i].mode;
  if (f && f[0] && cfg.fail == F_NONE)
    fprintf(stderr, "fakegpu: unknown FAKEGPU_FAIL=%s\n", f);
  /* As NCCL_DEBUG=INFO does: text on stdout, which --proto must keep out
   * of its protocol lines. */
  if (getenv("FAKEGPU_NOISE") != NULL) {
    printf("fakegpu: noise on stdout, as NCCL_DEBUG prints\n");
    fflush(stdout);
  }
}

static void init(void)
{
  pthread_once(&cfg_once, load_cfg);
}

static bool fails_rank(enum fail_mode m, int rank)
{
  return cfg.fail == m && (cfg.fail_rank < 0 || cfg.fail_rank == rank);
}

/* One lock for all shared state (allocations, streams, communicators,
 * the worker's queue), one condition for every change of it. A test
 * double does not need more. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* The current device is per thread, as in CUDA. */
static __thread int cur_dev;

/* ---- CUDA: devices and memory ------------------------------------------ */

struct alloc {
  struct alloc *next;
  int dev;
  char *base;
  size_t size;
};
static struct alloc *allocs;
static size_t used[MAX_DEV];

/* The allocation holding [p, p + len), or NULL. Call with mu held. */
static struct alloc *find_alloc(const void *p, size_t len)
{
  const char *c = p;
  for (struct alloc *a = allocs; a; a = a->next)
    if (c >= a->base && c <= a->base + a->size && len <= (size_t)(a->base + a->size - c))
      return a;
  return NULL;
}

lwsi_cuda_err cudaRuntimeGetVersion(int *version)
{
  *version = 12080;
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaDriverGetVersion(int *version)
{
  *version = 12080;
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaGetDeviceCount(int *count)
{
  init();
  if (cfg.fail == F_MISSING_DEVICE || cfg.ndev == 0) {
    *count = 0;
    return LWSI_CUDA_ERR_NO_DEVICE;
  }
  *count = cfg.ndev;
  return LWSI_CUDA_SUCCESS;
}

static bool valid_dev(int d)
{
  init();
  return cfg.fail != F_MISSING_DEVICE && d >= 0 && d < cfg.ndev;
}

lwsi_cuda_err cudaSetDevice(int device)
{
  if (!valid_dev(device))
    return LWSI_CUDA_ERR_INVALID_DEVICE;
  cur_dev = device;
  return LWSI_CUDA_SUCCESS;
}

/* Only the name, the first member of struct cudaDeviceProp. Exported under
 * the CUDA 13 name only, so the check's fallback from _v2 is exercised. */
lwsi_cuda_err cudaGetDeviceProperties(void *prop, int device)
{
  if (!valid_dev(device))
    return LWSI_CUDA_ERR_INVALID_DEVICE;
  snprintf(prop, LWSI_CUDA_NAME_BYTES, "%s", cfg.name);
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaDeviceGetPCIBusId(char *bus_id, int len, int device)
{
  if (!valid_dev(device))
    return LWSI_CUDA_ERR_INVALID_DEVICE;
  if (len < 13)
    return LWSI_CUDA_ERR_INVALID_VALUE;
  snprintf(bus_id, (size_t)len, "00000000:%02X:00.0", 0x18 + device);
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
  if (!valid_dev(cur_dev))
    return LWSI_CUDA_ERR_INVALID_DEVICE;
  pthread_mutex_lock(&mu);
  *total_bytes = cfg.mem;
  *free_bytes = cfg.mem - used[cur_dev];
  pthread_mutex_unlock(&mu);
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaMalloc(void **dev_ptr, size_t size)
{
  if (!valid_dev(cur_dev))
    return LWSI_CUDA_ERR_INVALID_DEVICE;
  if (cfg.fail == F_ALLOC && (cfg.fail_device < 0 || cfg.fail_device == cur_dev))
    return LWSI_CUDA_ERR_MEMORY_ALLOCATION;
  struct alloc *a = calloc(1, sizeof(*a));
  char *p = malloc(size ? size : 1);
  if (a == NULL || p == NULL || size > cfg.mem - used[cur_dev]) {
    free(a);
    free(p);
    return LWSI_CUDA_ERR_MEMORY_ALLOCATION;
  }
  a->dev = cur_dev;
  a->base = p;
  a->size = size;
  pthread_mutex_lock(&mu);
  a->next = allocs;
  allocs = a;
  used[cur_dev] += size;
  pthread_mutex_unlock(&mu);
  *dev_ptr = p;
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaFree(void *dev_ptr)
{
  if (dev_ptr == NULL)
    return LWSI_CUDA_SUCCESS;
  pthread_mutex_lock(&mu);
  for (struct alloc **pp = &allocs; *pp; pp = &(*pp)->next) {
    struct alloc *a = *pp;
    if (a->base == dev_ptr) {
      *pp = a->next;
      used[a->dev] -= a->size;
      pthread_mutex_unlock(&mu);
      free(a->base);
      free(a);
      return LWSI_CUDA_SUCCESS;
    }
  }
  pthread_mutex_unlock(&mu);
  return LWSI_CUDA_ERR_INVALID_VALUE;
}

lwsi_cuda_err cudaMemcpy(void *dst, const void *src, size_t count, unsigned int kind)
{
  pthread_mutex_lock(&mu);
  struct alloc *a = kind == LWSI_CUDA_MEMCPY_HOST_TO_DEVICE   ? find_alloc(dst, count)
                    : kind == LWSI_CUDA_MEMCPY_DEVICE_TO_HOST ? find_alloc(src, count)
                                                              : NULL;
  pthread_mutex_unlock(&mu);
  if (a == NULL)
    return LWSI_CUDA_ERR_INVALID_VALUE;
  memcpy(dst, src, count);
  /* Bad memory: byte 4097 of the allocation reads with bit 2 flipped. */
  size_t off = (size_t)((const char *)src - a->base); /* of the copy in the allocation */
  if (kind == LWSI_CUDA_MEMCPY_DEVICE_TO_HOST && cfg.fail == F_BAD_MEMORY &&
      (cfg.fail_device < 0 || cfg.fail_device == a->dev) && off <= 4097 && 4097 - off < count)
    ((char *)dst)[4097 - off] ^= 4;
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaMemset(void *dev_ptr, int value, size_t count)
{
  pthread_mutex_lock(&mu);
  bool ok = find_alloc(dev_ptr, count) != NULL;
  pthread_mutex_unlock(&mu);
  if (!ok)
    return LWSI_CUDA_ERR_INVALID_VALUE;
  memset(dev_ptr, value, count);
  return LWSI_CUDA_SUCCESS;
}

/* ---- CUDA: streams ----------------------------------------------------- */

struct lwsi_cuda_stream_st {
  int dev;
  int pending; /* collectives enqueued and not finished */
};

static int dev_pending[MAX_DEV];

lwsi_cuda_err cudaStreamCreate(lwsi_cuda_stream *stream)
{
  if (!valid_dev(cur_dev))
    return LWSI_CUDA_ERR_INVALID_DEVICE;
  struct lwsi_cuda_stream_st *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return LWSI_CUDA_ERR_MEMORY_ALLOCATION;
  s->dev = cur_dev;
  *stream = s;
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaStreamQuery(lwsi_cuda_stream s)
{
  if (s == NULL)
    return LWSI_CUDA_ERR_INVALID_VALUE;
  pthread_mutex_lock(&mu);
  int p = s->pending;
  pthread_mutex_unlock(&mu);
  return p > 0 ? LWSI_CUDA_ERR_NOT_READY : LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaStreamSynchronize(lwsi_cuda_stream s)
{
  if (s == NULL)
    return LWSI_CUDA_ERR_INVALID_VALUE;
  pthread_mutex_lock(&mu);
  while (s->pending > 0)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaStreamDestroy(lwsi_cuda_stream s)
{
  if (s == NULL)
    return LWSI_CUDA_ERR_INVALID_VALUE;
  /* CUDA lets the work finish before the stream goes; so do we. */
  cudaStreamSynchronize(s);
  free(s);
  return LWSI_CUDA_SUCCESS;
}

lwsi_cuda_err cudaDeviceSynchronize(void)
{
  if (!valid_dev(cur_dev))
    return LWSI_CUDA_ERR_INVALID_DEVICE;
  pthread_mutex_lock(&mu);
  while (dev_pending[cur_dev] > 0)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return LWSI_CUDA_SUCCESS;
}

/* The real runtime's texts, so that messages read as they will on a node. */
const char *cudaGetErrorString(lwsi_cuda_err error)
{
  switch (error) {
  case LWSI_CUDA_SUCCESS: return "no error";
  case LWSI_CUDA_ERR_INVALID_VALUE: return "invalid argument";
  case LWSI_CUDA_ERR_MEMORY_ALLOCATION: return "out of memory";
  case LWSI_CUDA_ERR_INSUFFICIENT_DRIVER:
    return "CUDA driver version is insufficient for CUDA runtime version";
  case LWSI_CUDA_ERR_NO_DEVICE: return "no CUDA-capable device is detected";
  case LWSI_CUDA_ERR_INVALID_DEVICE: return "invalid device ordinal";
  case LWSI_CUDA_ERR_NOT_READY: return "device not ready";
  default: return "unrecognized error code";
  }
}

/* ---- NCCL: wire between communicators and the hub ---------------------- */

#define ID_MAGIC "FAKENCCL"
#define HELLO_MAGIC 0x66676831u /* "fgh1" */

struct fake_id {
  char magic[8];
  char name[100]; /* abstract socket name, without the leading NUL */
};
_Static_assert(sizeof(struct fake_id) <= LWSI_NCCL_UNIQUE_ID_BYTES, "fits in ncclUniqueId");

struct hello {
  uint32_t magic;
  int32_t rank, nranks, pid;
};

/* One message from a rank to the hub: 'A' + count floats, or 'F'
 * (finalize: no data). Answers: the count floats of the sum; 'R' when all
 * joined; 'D' when all finalized. */
struct msg {
  uint32_t type;
  uint32_t pad;
  uint64_t count;
};

static bool write_full(int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

static bool read_full(int fd, void *buf, size_t len)
{
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

/* name: at most 99 characters (struct fake_id), NUL-terminated. */
static socklen_t abstract_addr(struct sockaddr_un *sa, const char name[100])
{
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  size_t n = strnlen(name, 99);
  memcpy(sa->sun_path + 1, name, n);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* ---- NCCL: the hub ----------------------------------------------------- */

struct hub {
  struct hub *next;
  char name[100];
  int lfd;
  int stop[2]; /* written by an abort here: the hub closes everything */
};
static struct hub *hubs;

struct hubconn {
  int fd;
  int pid;
  struct msg hdr;
  size_t hdr_got;
  float *buf;
  size_t cap, want, got;
  bool complete;
};

/* Answers go to other processes first, then to this one: a process's
 * worker reads its ranks in ascending order, and this process must not
 * see its answer (and perhaps exit, killing this thread) before the
 * others' answers are in their sockets. */
static bool send_ordered(struct hubconn *c, int n, const void *buf, size_t len)
{
  int me = (int)getpid();
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n; i++)
      if ((c[i].pid == me) == (pass == 1) && !write_full(c[i].fd, buf, len))
        return false;
  return true;
}

static void *hub_main(void *arg)
{
  struct hub *h = arg;
  struct hubconn *c = NULL;
  struct pollfd *pf = NULL;
  float *sum = NULL;
  int nranks = -1, joined = 0;

  /* Join: every rank connects and says who it is. */
  while (nranks < 0 || joined < nranks) {
    struct pollfd p[2] = {{.fd = h->lfd, .events = POLLIN}, {.fd = h->stop[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      goto out;
    }
    if (p[1].revents)
      goto out;
    if (!(p[0].revents & POLLIN))
      continue;
    int fd = accept4(h->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    struct hello he;
    if (!read_full(fd, &he, sizeof(he)) || he.magic != HELLO_MAGIC || he.nranks < 1 ||
        (nranks >= 0 && he.nranks != nranks) || he.rank < 0 || he.rank >= he.nranks) {
      close(fd);
      continue;
    }
    if (nranks < 0) {
      nranks = he.nranks;
      c = calloc((size_t)nranks, sizeof(*c));
      pf = calloc((size_t)nranks + 1, sizeof(*pf));
      if (c == NULL || pf == NULL) {
        close(fd);
        goto out;
      }
      for (int i = 0; i < nranks; i++)
        c[i].fd = -1;
    }
    if (c[he.rank].fd >= 0) { /* a duplicate rank: refused */
      close(fd);
      continue;
    }
    c[he.rank].fd = fd;
    c[he.rank].pid = he.pid;
    joined++;
  }
  if (!send_ordered(c, nranks, "R", 1))
    goto out;

  /* Rounds: each rank sends one message; when all have, answer all. */
  for (;;) {
    int complete = 0;
    uint32_t type = 0;
    uint64_t count = 0;
    for (int i = 0; i < nranks; i++) {
      c[i].hdr_got = c[i].got = c[i].want = 0;
      c[i].complete = false;
    }
    while (complete < nranks) {
      int np = 0;
      pf[np++] = (struct pollfd){.fd = h->stop[0], .events = POLLIN};
      for (int i = 0; i < nranks; i++)
        pf[np++] = (struct pollfd){.fd = c[i].complete ? -1 : c[i].fd, .events = POLLIN};
      if (poll(pf, (nfds_t)np, -1) < 0) {
        if (errno == EINTR)
          continue;
        goto out;
      }
      if (pf[0].revents)
        goto out;
      for (int i = 0; i < nranks; i++) {
        struct hubconn *k = &c[i];
        if (k->complete || !(pf[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
          continue;
        ssize_t n;
        if (k->hdr_got < sizeof(k->hdr))
          n = recv(k->fd, (char *)&k->hdr + k->hdr_got, sizeof(k->hdr) - k->hdr_got, MSG_DONTWAIT);
        else
          n = recv(k->fd, (char *)k->buf + k->got, k->want - k->got, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
          continue;
        if (n <= 0)
          goto out; /* a rank left mid-round: everyone's collective fails */
        if (k->hdr_got < sizeof(k->hdr)) {
          k->hdr_got += (size_t)n;
          if (k->hdr_got < sizeof(k->hdr))
            continue;
          if (complete == 0 && type == 0) {
            type = k->hdr.type;
            count = k->hdr.count;
          }
          if (k->hdr.type != type || k->hdr.count != count || (type != 'A' && type != 'F') ||
              count > ((size_t)1 << 36))
            goto out; /* ranks disagree on the collective: fail it */
          k->want = type == 'A' ? count * sizeof(float) : 0;
          if (k->want > k->cap) {
            float *nb = realloc(k->buf, k->want);
            if (nb == NULL)
              goto out;
            k->buf = nb;
            k->cap = k->want;
          }
        } else {
          k->got += (size_t)n;
        }
        if (k->hdr_got == sizeof(k->hdr) && k->got == k->want) {
          k->complete = true;
          complete++;
        }
      }
    }
    if (type == 'F') {
      if (!send_ordered(c, nranks, "D", 1))
        goto out;
      /* Stay until every rank has closed (ncclCommDestroy). */
      for (int open = nranks; open > 0;) {
        int np = 0;
        pf[np++] = (struct pollfd){.fd = h->stop[0], .events = POLLIN};
        for (int i = 0; i < nranks; i++)
          pf[np++] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
        if (poll(pf, (nfds_t)np, -1) < 0 && errno != EINTR)
          goto out;
        if (pf[0].revents)
          goto out;
        for (int i = 0; i < nranks; i++) {
          if (c[i].fd < 0 || !(pf[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
          char b;
          ssize_t n = recv(c[i].fd, &b, 1, MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            close(c[i].fd);
            c[i].fd = -1;
            open--;
          }
        }
      }
      goto out;
    }
    float *ns = realloc(sum, count * sizeof(float) + 1);
    if (ns == NULL)
      goto out;
    sum = ns;
    memset(sum, 0, count * sizeof(float));
    for (int i = 0; i < nranks; i++)
      for (uint64_t k = 0; k < count; k++)
        sum[k] += c[i].buf[k];
    if (!send_ordered(c, nranks, sum, count * sizeof(float)))
      goto out;
  }
out:
  for (int i = 0; c != NULL && i < nranks; i++) {
    if (c[i].fd >= 0)
      close(c[i].fd);
    free(c[i].buf);
  }
  free(c);
  free(pf);
  free(sum);
  close(h->lfd);
  return NULL;
}

/* ---- NCCL: communicators and the worker -------------------------------- */

enum comm_state { C_INIT, C_READY, C_FINALIZING, C_FINALIZED, C_ERROR };

struct lwsi_nccl_comm_st {
  int rank, nranks, dev;
  bool blocking;
  bool hang;             /* init-hang: never joined */
  int fd;
  enum comm_state state;
  lwsi_nccl_result err;
  bool enqueue_pending;  /* a non-blocking group just ended: one "in progress" */
  int pending_ops;       /* queued to the worker and not finished */
  struct hub *hub;       /* the hub, when it runs in this process */
};

struct op {
  struct lwsi_nccl_comm_st *comm;
  struct lwsi_cuda_stream_st *stream;
  const float *send;
  float *recv;
  size_t count;
  char type; /* 'A' or 'F' */
};

struct batch {
  struct batch *next;
  int n;
  struct op ops[];
};

static struct batch *queue_head, *queue_tail;
static bool worker_started;
static __thread char last_error[256];

/* The group the calling thread is in: ncclGroupStart nests. */
static __thread int group_depth;
static __thread struct op *group_ops;
static __thread int group_n, group_cap;
static __thread bool group_nonblocking;
static __thread struct lwsi_nccl_comm_st *group_blocking_inits[MAX_DEV];
static __thread int group_nblocking;

static void set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_last_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof(last_error), fmt, ap);
  va_end(ap);
}

/* Finishes one op: its stream and communicator no longer wait on it.
 * Done op by op, not per batch, so that aborting one communicator (which
 * waits for its ops) never waits behind another's blocked read. */
static void op_done(struct op *o, lwsi_nccl_result err)
{
  pthread_mutex_lock(&mu);
  if (err != LWSI_NCCL_SUCCESS && o->comm->state != C_ERROR) {
    o->comm->state = C_ERROR;
    o->comm->err = err;
  }
  if (o->stream) {
    o->stream->pending--;
    dev_pending[o->stream->dev]--;
  }
  o->comm->pending_ops--;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static int op_cmp(const void *a, const void *b)
{
  const struct op *x = a, *y = b;
  return (x->comm->rank > y->comm->rank) - (x->comm->rank < y->comm->rank);
}

static void run_batch(struct batch *b)
{
  qsort(b->ops, (size_t)b->n, sizeof(b->ops[0]), op_cmp);
  bool *sent = calloc((size_t)b->n, sizeof(bool));
  bool slow = false;
  for (int i = 0; i < b->n; i++)
    slow |= b->ops[i].type == 'A' && fails_rank(F_SLOW, b->ops[i].comm->rank);
  if (slow) {
    struct timespec ts = {cfg.slow_ms / 1000, (long)(cfg.slow_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  /* Every contribution first, then every answer: the hub answers only
   * when all ranks, this process's included, have sent. */
  for (int i = 0; i < b->n; i++) {
    struct op *o = &b->ops[i];
    pthread_mutex_lock(&mu);
    bool dead = o->comm->state == C_ERROR;
    pthread_mutex_unlock(&mu);
    struct msg m = {.type = (uint32_t)o->type, .count = o->type == 'A' ? o->count : 0};
    bool ok = !dead && sent != NULL && write_full(o->comm->fd, &m, sizeof(m));
    if (ok && o->type == 'A') {
      if (fails_rank(F_WRONG_SUM, o->comm->rank) && o->count > 0) {
        /* This rank's data arrives with one element off by one. */
        size_t k = o->count / 2;
        float bad = o->send[k] + 1.0f;
        ok = write_full(o->comm->fd, o->send, k * sizeof(float)) &&
             write_full(o->comm->fd, &bad, sizeof(float)) &&
             write_full(o->comm->fd, o->send + k + 1, (o->count - k - 1) * sizeof(float));
      } else {
        ok = write_full(o->comm->fd, o->send, o->count * sizeof(float));
      }
    }
    if (ok && o->type == 'A')
      sent[i] = true;
    else
      op_done(o, ok ? LWSI_NCCL_SUCCESS : (dead ? o->comm->err : LWSI_NCCL_REMOTE_ERROR));
  }
  for (int i = 0; i < b->n; i++) {
    struct op *o = &b->ops[i];
    if (sent == NULL || !sent[i])
      continue;
    bool ok = read_full(o->comm->fd, o->recv, o->count * sizeof(float));
    if (!ok)
      set_last_error("fakegpu: rank %d lost its connection to the hub", o->comm->rank);
    op_done(o, ok ? LWSI_NCCL_SUCCESS : LWSI_NCCL_REMOTE_ERROR);
  }
  free(sent);
}

static void *worker_main(void *arg)
{
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&mu);
    while (queue_head == NULL)
      pthread_cond_wait(&cv, &mu);
    struct batch *b = queue_head;
    queue_head = b->next;
    if (queue_head == NULL)
      queue_tail = NULL;
    pthread_mutex_unlock(&mu);
    run_batch(b);
    free(b);
  }
  return NULL;
}

/* Queues ops (already counted as pending by the caller) for the worker. */
static lwsi_nccl_result submit(const struct op *ops, int n)
{
  struct batch *b = malloc(sizeof(*b) + (size_t)n * sizeof(struct op));
  if (b == NULL)
    return LWSI_NCCL_SYSTEM_ERROR;
  b->next = NULL;
  b->n = n;
  memcpy(b->ops, ops, (size_t)n * sizeof(struct op));
  pthread_mutex_lock(&mu);
  if (!worker_started) {
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, worker_main, NULL) != 0) {
      pthread_attr_destroy(&at);
      pthread_mutex_unlock(&mu);
      free(b);
      return LWSI_NCCL_SYSTEM_ERROR;
    }
    pthread_attr_destroy(&at);
    worker_started = true;
  }
  if (queue_tail)
    queue_tail->next = b;
  else
    queue_head = b;
  queue_tail = b;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  return LWSI_NCCL_SUCCESS;
}

lwsi_nccl_result ncclGetVersion(int *version)
{
  *version = 22809;
  return LWSI_NCCL_SUCCESS;
}

lwsi_nccl_result ncclGetUniqueId(lwsi_nccl_unique_id *unique_id)
{
  init();
  static int seq;
  struct hub *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return LWSI_NCCL_SYSTEM_ERROR;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  pthread_mutex_lock(&mu);
  int n = ++seq;
  pthread_mutex_unlock(&mu);
  snprintf(h->name, sizeof(h->name), "fakegpu-nccl-%d-%d-%ld", (int)getpid(), n, (long)ts.tv_nsec);
  struct sockaddr_un sa;
  socklen_t len = abstract_addr(&sa, h->name);
  h->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (h->lfd < 0 || bind(h->lfd, (struct sockaddr *)&sa, len) < 0 || listen(h->lfd, 1024) < 0 ||
      pipe2(h->stop, O_CLOEXEC) < 0) {
    set_last_error("fakegpu: cannot listen on @%s: %s", h->name, strerror(errno));
    if (h->lfd >= 0)
      close(h->lfd);
    free(h);
    return LWSI_NCCL_SYSTEM_ERROR;
  }
  pthread_t t;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &at, hub_main, h);
  pthread_attr_destroy(&at);
  if (rc != 0) {
    close(h->lfd);
    free(h);
    return LWSI_NCCL_SYSTEM_ERROR;
  }
  pthread_mutex_lock(&mu);
  h->next = hubs;
  hubs = h;
  pthread_mutex_unlock(&mu);
  struct fake_id id;
  memset(&id, 0, sizeof(id));
  memcpy(id.magic, ID_MAGIC, 8);
  snprintf(id.name, sizeof(id.name), "%s", h->name);
  memset(unique_id, 0, sizeof(*unique_id));
  memcpy(unique_id->internal, &id, sizeof(id));
  return LWSI_NCCL_SUCCESS;
}

/* Blocks until c has left C_INIT (blocking communicators only). */
static lwsi_nccl_result wait_ready(struct lwsi_nccl_comm_st *c)
{
  lwsi_nccl_result st;
  while (ncclCommGetAsyncError(c, &st) == LWSI_NCCL_SUCCESS && st == LWSI_NCCL_IN_PROGRESS) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    poll(&p, 1, c->hang ? 100 : -1);
  }
  return st;
}

lwsi_nccl_result ncclCommInitRankConfig(lwsi_nccl_comm *comm, int nranks,
                                        lwsi_nccl_unique_id comm_id, int rank,
                                        struct lwsi_nccl_config *config)
{
  init();
  *comm = NULL;
  bool blocking = true;
  if (config != NULL) {
    if (config->magic != LWSI_NCCL_CONFIG_MAGIC) {
      set_last_error("ncclConfig_t argument not initialized via NCCL_CONFIG_INITIALIZER");
      return LWSI_NCCL_INVALID_ARGUMENT;
    }
    if (config->size >= offsetof(struct lwsi_nccl_config, blocking) + sizeof(int) &&
        config->version >= 21400 && config->blocking != LWSI_NCCL_CONFIG_UNDEF_INT) {
      if (config->blocking != 0 && config->blocking != 1) {
        set_last_error("Invalid config blocking attribute value %d", config->blocking);
        return LWSI_NCCL_INVALID_ARGUMENT;
      }
      blocking = config->blocking == 1;
    }
  }
  struct fake_id id;
  memcpy(&id, comm_id.internal, sizeof(id));
  if (memcmp(id.magic, ID_MAGIC, 8) != 0 || memchr(id.name, '\0', sizeof(id.name)) == NULL) {
    set_last_error("fakegpu: not an id from this library's ncclGetUniqueId");
    return LWSI_NCCL_INVALID_ARGUMENT;
  }
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    set_last_error("Invalid rank requested : %d/%d", rank, nranks);
    return LWSI_NCCL_INVALID_ARGUMENT;
  }
  if (!valid_dev(cur_dev))
    return LWSI_NCCL_UNHANDLED_CUDA_ERROR;
  struct lwsi_nccl_comm_st *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return LWSI_NCCL_SYSTEM_ERROR;
  c->rank = rank;
  c->nranks = nranks;
  c->dev = cur_dev;
  c->blocking = blocking;
  c->fd = -1;
  c->state = C_INIT;
  c->hang = fails_rank(F_INIT_HANG, rank);
  pthread_mutex_lock(&mu);
  for (struct hub *h = hubs; h; h = h->next)
    if (strcmp(h->name, id.name) == 0)
      c->hub = h;
  pthread_mutex_unlock(&mu);
  if (!c->hang) {
    struct sockaddr_un sa;
    socklen_t len = abstract_addr(&sa, id.name);
    struct hello he = {HELLO_MAGIC, rank, nranks, (int32_t)getpid()};
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, len) < 0 ||
        !write_full(c->fd, &he, sizeof(he))) {
      set_last_error("fakegpu: rank %d cannot reach the root @%s: %s", rank, id.name,
                     strerror(errno));
      if (c->fd >= 0)
        close(c->fd);
      free(c);
      return LWSI_NCCL_SYSTEM_ERROR;
    }
  }
  *comm = c;
  if (group_depth > 0) {
    if (blocking && group_nblocking < MAX_DEV)
      group_blocking_inits[group_nblocking++] = c;
    if (!blocking)
      group_nonblocking = true;
    return LWSI_NCCL_SUCCESS;
  }
  if (blocking)
    return wait_ready(c);
  return LWSI_NCCL_IN_PROGRESS;
}

lwsi_nccl_result ncclCommGetAsyncError(lwsi_nccl_comm c, lwsi_nccl_result *async_error)
{
  if (c == NULL)
    return LWSI_NCCL_INVALID_ARGUMENT;
  pthread_mutex_lock(&mu);
  lwsi_nccl_result st = LWSI_NCCL_SUCCESS;
  char b = 0;
  ssize_t n;
  switch (c->state) {
  case C_INIT:
    st = LWSI_NCCL_IN_PROGRESS;
    if (c->hang)
      break;
    n = recv(c->fd, &b, 1, MSG_DONTWAIT);
    if (n == 1 && b == 'R') {
      c->state = C_READY;
      st = LWSI_NCCL_SUCCESS;
    } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || n == 1) {
      c->state = C_ERROR;
      c->err = st = LWSI_NCCL_REMOTE_ERROR;
      set_last_error("fakegpu: the root closed the connection during init");
    }
    break;
  case C_READY:
    if (c->enqueue_pending) {
      c->enqueue_pending = false;
      st = LWSI_NCCL_IN_PROGRESS;
    }
    break;
  case C_FINALIZING:
    st = LWSI_NCCL_IN_PROGRESS;
    if (c->pending_ops > 0)
      break;
    n = recv(c->fd, &b, 1, MSG_DONTWAIT);
    if (n == 1 && b == 'D') {
      c->state = C_FINALIZED;
      st = LWSI_NCCL_SUCCESS;
    } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || n == 1) {
      c->state = C_ERROR;
      c->err = st = LWSI_NCCL_REMOTE_ERROR;
    }
    break;
  case C_FINALIZED:
    break;
  case C_ERROR:
    st = c->err;
    break;
  }
  pthread_mutex_unlock(&mu);
  *async_error = st;
  return LWSI_NCCL_SUCCESS;
}

lwsi_nccl_result ncclGroupStart(void)
{
  group_depth++;
  return LWSI_NCCL_SUCCESS;
}

lwsi_nccl_result ncclGroupEnd(void)
{
  if (group_depth == 0)
    return LWSI_NCCL_INVALID_USAGE;
  if (--group_depth > 0)
    return LWSI_NCCL_SUCCESS;
  lwsi_nccl_result r = LWSI_NCCL_SUCCESS;
  if (group_n > 0)
    r = submit(group_ops, group_n);
  bool nonblocking = group_nonblocking;
  group_n = 0;
  group_nonblocking = false;
  for (int i = 0; i < group_nblocking && r == LWSI_NCCL_SUCCESS; i++)
    r = wait_ready(group_blocking_inits[i]);
  group_nblocking = 0;
  if (r != LWSI_NCCL_SUCCESS)
    return r;
  return nonblocking ? LWSI_NCCL_IN_PROGRESS : LWSI_NCCL_SUCCESS;
}

lwsi_nccl_result ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                               unsigned int datatype, unsigned int op, lwsi_nccl_comm c,
                               lwsi_cuda_stream stream)
{
  if (c == NULL || stream == NULL) {
    set_last_error("fakegpu: NULL communicator or stream");
    return LWSI_NCCL_INVALID_ARGUMENT;
  }
  if (datatype != LWSI_NCCL_FLOAT32 || op != LWSI_NCCL_SUM) {
    set_last_error("fakegpu: only float32 sum is simulated");
    return LWSI_NCCL_INVALID_ARGUMENT;
  }
  pthread_mutex_lock(&mu);
  lwsi_nccl_result r = LWSI_NCCL_SUCCESS;
  struct alloc *as = find_alloc(sendbuff, count * sizeof(float));
  struct alloc *ar = find_alloc(recvbuff, count * sizeof(float));
  if (c->state != C_READY) {
    set_last_error("fakegpu: rank %d: communicator not ready (state %d)", c->rank, c->state);
    r = c->state == C_ERROR ? c->err : LWSI_NCCL_INVALID_USAGE;
  } else if (as == NULL || ar == NULL || as->dev != c->dev || ar->dev != c->dev) {
    set_last_error("fakegpu: rank %d: buffers are not %zu floats on device %d", c->rank, count,
                   c->dev);
    r = LWSI_NCCL_INVALID_ARGUMENT;
  } else if (stream->dev != c->dev) {
    set_last_error("fakegpu: rank %d: stream of device %d, communicator of device %d", c->rank,
                   stream->dev, c->dev);
    r = LWSI_NCCL_INVALID_ARGUMENT;
  } else {
    stream->pending++;
    dev_pending[stream->dev]++;
    c->pending_ops++;
    if (!c->blocking)
      c->enqueue_pending = true;
  }
  pthread_mutex_unlock(&mu);
  if (r != LWSI_NCCL_SUCCESS)
    return r;
  struct op o = {c, stream, sendbuff, recvbuff, count, 'A'};
  if (group_depth > 0) {
    if (group_n == group_cap) {
      int cap = group_cap ? group_cap * 2 : 16;
      struct op *n = realloc(group_ops, (size_t)cap * sizeof(*n));
      if (n == NULL) {
        op_done(&o, LWSI_NCCL_SUCCESS);
        return LWSI_NCCL_SYSTEM_ERROR;
      }
      group_ops = n;
      group_cap = cap;
    }
    group_ops[group_n++] = o;
    if (!c->blocking)
      group_nonblocking = true;
    return LWSI_NCCL_SUCCESS;
  }
  r = submit(&o, 1);
  if (r != LWSI_NCCL_SUCCESS) {
    op_done(&o, r);
    return r;
  }
  return c->blocking ? LWSI_NCCL_SUCCESS : LWSI_NCCL_IN_PROGRESS;
}

lwsi_nccl_result ncclCommFinalize(lwsi_nccl_comm c)
{
  if (c == NULL)
    return LWSI_NCCL_INVALID_ARGUMENT;
  pthread_mutex_lock(&mu);
  if (c->state != C_READY) {
    lwsi_nccl_result r = c->state == C_ERROR ? c->err : LWSI_NCCL_INVALID_USAGE;
    pthread_mutex_unlock(&mu);
    return r;
  }
  c->state = C_FINALIZING;
  c->pending_ops++;
  pthread_mutex_unlock(&mu);
  /* Behind this rank's collectives, through the same worker. */
  struct op o = {c, NULL, NULL, NULL, 0, 'F'};
  lwsi_nccl_result r = submit(&o, 1);
  if (r != LWSI_NCCL_SUCCESS) {
    op_done(&o, r);
    return r;
  }
  if (c->blocking) {
    lwsi_nccl_result st;
    while (ncclCommGetAsyncError(c, &st) == LWSI_NCCL_SUCCESS && st == LWSI_NCCL_IN_PROGRESS) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    return st;
  }
  return LWSI_NCCL_IN_PROGRESS;
}

static void comm_free(struct lwsi_nccl_comm_st *c, bool abort)
{
  pthread_mutex_lock(&mu);
  if (abort) {
    if (c->state != C_ERROR) {
      c->state = C_ERROR;
      c->err = LWSI_NCCL_INVALID_USAGE;
    }
    if (c->fd >= 0)
      shutdown(c->fd, SHUT_RDWR); /* unblocks the worker on this rank */
  }
  while (c->pending_ops > 0)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  if (c->fd >= 0)
    close(c->fd);
  /* An abort here stops the hub: the other ranks see their connections
   * close, as they would see the root's process go away. */
  if (abort && c->hub != NULL && write(c->hub->stop[1], "x", 1) < 0)
    set_last_error("fakegpu: cannot stop the hub: %s", strerror(errno));
  free(c);
}

lwsi_nccl_result ncclCommDestroy(lwsi_nccl_comm c)
{
  if (c == NULL)
    return LWSI_NCCL_SUCCESS;
  comm_free(c, false);
  return LWSI_NCCL_SUCCESS;
}

lwsi_nccl_result ncclCommAbort(lwsi_nccl_comm c)
{
  if (c == NULL)
    return LWSI_NCCL_SUCCESS;
  comm_free(c, true);
  return LWSI_NCCL_SUCCESS;
}

/* NCCL's own texts (src/misc/utils.cc ncclGetErrorString). */
const char *ncclGetErrorString(lwsi_nccl_result result)
{
  switch (result) {
  case LWSI_NCCL_SUCCESS: return "no error";
  case LWSI_NCCL_UNHANDLED_CUDA_ERROR: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
  case LWSI_NCCL_SYSTEM_ERROR: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
  case LWSI_NCCL_INTERNAL_ERROR: return "internal error - please report this issue to the NCCL developers";
  case LWSI_NCCL_INVALID_ARGUMENT: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
  case LWSI_NCCL_INVALID_USAGE: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
  case LWSI_NCCL_REMOTE_ERROR: return "remote process exited or there was a network error";
  case LWSI_NCCL_IN_PROGRESS: return "NCCL operation in progress";
  default: return "unknown result code";
  }
}

const char *ncclGetLastError(lwsi_nccl_comm comm)
{
  (void)comm;
  return last_error;
}

/* ---- NVML: the running processes a test lists ------------------------- */

lwsi_nvml_return nvmlInit_v2(void)
{
  init();
  return LWSI_NVML_SUCCESS;
}

lwsi_nvml_return nvmlShutdown(void)
{
  return LWSI_NVML_SUCCESS;
}

lwsi_nvml_return nvmlDeviceGetCount_v2(unsigned int *count)
{
  init();
  *count = cfg.fail == F_MISSING_DEVICE ? 0 : (unsigned)cfg.ndev;
  return LWSI_NVML_SUCCESS;
}

lwsi_nvml_return nvmlDeviceGetHandleByIndex_v2(unsigned int index, lwsi_nvml_device *device)
{
  init();
  if (index >= (unsigned)cfg.ndev)
    return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  *device = (lwsi_nvml_device)(uintptr_t)(index + 1);
  return LWSI_NVML_SUCCESS;
}

lwsi_nvml_return nvmlDeviceGetComputeRunningProcesses_v3(lwsi_nvml_device device,
                                                         unsigned int *count,
                                                         struct lwsi_nvml_process_info *infos)
{
  int dev = (int)(uintptr_t)device - 1;
  unsigned n = 0;
  const char *path = getenv("FAKEGPU_NVML_PIDS");
  FILE *f = path != NULL && path[0] != '\0' ? fopen(path, "re") : NULL;
  char line[128];
  while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
    long a = -1, b = -1;
    int k = sscanf(line, "%ld %ld", &a, &b);
    long pid = k == 2 ? b : a;
    if (k < 1 || pid <= 0 || (k == 2 && a != dev))
      continue;
    if (n < *count && infos != NULL)
      infos[n] = (struct lwsi_nvml_process_info){.pid = (unsigned)pid,
                                                 .used_gpu_memory = 1ull << 30};
    n++;
  }
  if (f != NULL)
    fclose(f);
  bool fits = n <= *count;
  *count = n;
  return fits ? LWSI_NVML_SUCCESS : LWSI_NVML_ERROR_INSUFFICIENT_SIZE;
}

const char *nvmlErrorString(lwsi_nvml_return r)
{
  return r == LWSI_NVML_SUCCESS ? "Success" : "Fake NVML error";
}
