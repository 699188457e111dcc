/* lwsinit-gpucheck: the GPU check before launch (contract, "Checks before
 * launch"), as a program of its own.
 *
 * It is a separate process, not code inside the agent, for three reasons:
 * CUDA and NCCL start threads, pin memory and install their own state in
 * whatever process loads them, and PID 1 must stay small and single-threaded
 * for the engine's whole life; a wedged driver call cannot be interrupted,
 * only its process can be killed, so the agent's deadline stays enforceable;
 * and the same binary is what an operator runs by hand on a node that
 * misbehaves.
 *
 * It needs only libc and libdl. The CUDA runtime and NCCL are found at run
 * time (dlopen) in the engine's image, so the agent's image carries none of
 * them and the types come from include/lwsinit/gpu_abi.h, not from the CUDA
 * toolkit. The process interface (arguments, JSON lines on stdout and stdin,
 * exit status) is described in docs/gpucheck.md; the agent speaks it with
 * --proto. The NCCL id's text (hex, the lines on stdin, the nccl_id event)
 * is in parse.c, which the fuzzer links without the rest of this program. */
#include "lwsinit/gpu_abi.h"
#include "lwsinit/fdio.h"
#include "lwsinit/gpucheck_parse.h"
#include "gpufree.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <link.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(void *) == sizeof(void (*)(void)),
               "dlsym results are stored into function pointers");
_Static_assert(sizeof(lwsi_nccl_unique_id) == LWSI_NCCL_UNIQUE_ID_BYTES,
               "ncclUniqueId is 128 bytes, passed by value");
_Static_assert(sizeof(struct lwsi_nccl_config) == 24, "no tail padding in the config head");

#define PROG "lwsinit-gpucheck"

/* Exit status (docs/gpucheck.md): the agent maps 1 and 3 to its own 5. */
enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_NOLIB = 3 };

/* Host memory is used in chunks of at most this much, so --bytes can be
 * far larger than what the agent's container may allocate on the host. */
#define HOST_CHUNK ((size_t)64 << 20)

/* The all-reduce completion is busy-polled for this long before the loop
 * starts to sleep: a nap of even 1 ms would dominate the time of a 64 MiB
 * all-reduce over NVLink (well under 1 ms) and understate the bandwidth. */
#define SPIN_NS (200ull * 1000 * 1000)

/* ---- options ----------------------------------------------------------- */

enum mode { MODE_NONE, MODE_CUDA, MODE_NCCL, MODE_LIBS };

static struct {
  enum mode mode;
  uint64_t gpus;        /* 0: all visible */
  uint64_t bytes;
  uint64_t timeout_ms;
  double min_busbw;     /* GB/s; 0: no floor */
  uint64_t nodes;
  uint64_t node_rank;
  int64_t nranks;       /* -1: nodes * local GPUs */
  int64_t rank_base;    /* -1: node_rank * local GPUs */
  uint64_t iters;
  bool proto;
  bool have_id;
  lwsi_nccl_unique_id id;
} opt = {
  .bytes = 64ull << 20,
  .timeout_ms = 120000,
  .nodes = 1,
  .nranks = -1,
  .rank_base = -1,
  .iters = 5,
};

/* ---- time, signals ----------------------------------------------------- */

static uint64_t start_ns, deadline_ns;
static volatile sig_atomic_t got_signal;

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double ms_since(uint64_t t0)
{
  return (double)(now_ns() - t0) / 1e6;
}

static void on_signal(int sig)
{
  got_signal = sig;
}

/* Sleeps a little longer each time, up to 2 ms: short enough that a
 * deadline or a signal is noticed at once, long enough not to burn a core
 * while NCCL connects over the network for seconds. */
static void nap(unsigned *us)
{
  if (*us < 50)
    *us = 50;
  struct timespec ts = {0, (long)*us * 1000};
  nanosleep(&ts, NULL); /* EINTR: the caller looks at got_signal */
  if (*us < 2000)
    *us *= 2;
}

/* ---- failure state ----------------------------------------------------- */

/* The first failure is the one reported: later ones are usually its
 * consequences (an abort after a timeout, a free after a failed copy). */
static struct {
  bool failed;
  bool timeout;
  const char *stage;
  char error[640];
} fail;

static void failf(const char *stage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(const char *stage, const char *fmt, ...)
{
  if (fail.failed)
    return;
  fail.failed = true;
  fail.stage = stage;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(fail.error, sizeof(fail.error), fmt, ap);
  va_end(ap);
}

/* True when the deadline has passed or a signal arrived; records why. */
static bool must_stop(const char *stage, const char *what)
{
  if (got_signal) {
    failf(stage, "terminated by signal %d during %s", (int)got_signal, what);
    return true;
  }
  if (now_ns() >= deadline_ns) {
    if (!fail.failed)
      fail.timeout = true;
    failf(stage, "timeout: %s did not finish within --timeout-ms %" PRIu64, what, opt.timeout_ms);
    return true;
  }
  return false;
}

/* ---- output ------------------------------------------------------------ */

/* With --proto, protocol lines go to a private duplicate of the original
 * stdout and fd 1 is pointed at stderr: NCCL_DEBUG and CUDA print to
 * stdout, and a stray line must not be taken for an event. */
static int proto_fd = -1;

/* A growing text buffer for one JSON line. Out of memory makes it "bad",
 * and a bad line is not written: a truncated event would be worse. */
struct jb {
  char *p;
  size_t len, cap;
  bool bad;
};

static void jb_printf(struct jb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_printf(struct jb *b, const char *fmt, ...)
{
  if (b->bad)
    return;
  for (;;) {
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->bad = true;
      return;
    }
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap - b->len <= (size_t)n)
      cap *= 2;
    char *np = realloc(b->p, cap);
    if (np == NULL) {
      b->bad = true;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
}

/* A JSON string (RFC 8259): quotes, backslash and control characters are
 * escaped; other bytes pass as they are (device names are ASCII). NULL is
 * written as null. */
static void jb_str(struct jb *b, const char *s)
{
  if (s == NULL) {
    jb_printf(b, "null");
    return;
  }
  jb_printf(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      jb_printf(b, "\\%c", c);
    else if (c == '\n')
      jb_printf(b, "\\n");
    else if (c < 0x20 || c == 0x7f)
      jb_printf(b, "\\u%04x", c);
    else
      jb_printf(b, "%c", c);
  }
  jb_printf(b, "\"");
}

/* A number, or null when there is none to give. */
static void jb_num(struct jb *b, double v, bool have)
{
  if (have)
    jb_printf(b, "%.3f", v);
  else
    jb_printf(b, "null");
}

static void jb_emit(struct jb *b)
{
  jb_printf(b, "\n");
  /* EPIPE (the agent went away) is not an error of the check: the exit
   * status still tells whoever waits. SIGPIPE is ignored in main. */
  if (!b->bad && proto_fd >= 0)
    (void)lwsi_fdio_write_all(proto_fd, b->p, b->len);
  free(b->p);
  memset(b, 0, sizeof(*b));
}

static void human(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void human(const char *fmt, ...)
{
  if (opt.proto)
    return;
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

static void emit_phase(const char *phase)
{
  if (!opt.proto)
    return;
  struct jb b = {0};
  jb_printf(&b, "{\"event\":\"phase\",\"phase\":");
  jb_str(&b, phase);
  jb_printf(&b, ",\"elapsed_ms\":%.3f}", ms_since(start_ns));
  jb_emit(&b);
}

static void fmt_bytes(char *buf, size_t len, uint64_t n)
{
  static const char *const unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  unsigned u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " bytes", n);
  else if (v == (double)(uint64_t)v)
    snprintf(buf, len, "%.0f %s", v, unit[u]);
  else
    snprintf(buf, len, "%.1f %s", v, unit[u]);
}

/* ---- the libraries ----------------------------------------------------- */

struct cuda_api {
  lwsi_cuda_runtime_get_version_fn *runtime_get_version;
  lwsi_cuda_driver_get_version_fn *driver_get_version;
  lwsi_cuda_get_device_count_fn *get_device_count;
  lwsi_cuda_set_device_fn *set_device;
  lwsi_cuda_get_device_properties_fn *get_device_properties;
  lwsi_cuda_device_get_pci_bus_id_fn *device_get_pci_bus_id;
  lwsi_cuda_mem_get_info_fn *mem_get_info;
  lwsi_cuda_malloc_fn *malloc_;
  lwsi_cuda_free_fn *free_;
  lwsi_cuda_memcpy_fn *memcpy_;
  lwsi_cuda_memset_fn *memset_;
  lwsi_cuda_device_synchronize_fn *device_synchronize;
  lwsi_cuda_stream_create_fn *stream_create;
  lwsi_cuda_stream_query_fn *stream_query;
  lwsi_cuda_stream_destroy_fn *stream_destroy;
  lwsi_cuda_get_error_string_fn *get_error_string;
};

struct nccl_api {
  lwsi_nccl_get_version_fn *get_version;
  lwsi_nccl_get_unique_id_fn *get_unique_id;
  lwsi_nccl_comm_init_rank_config_fn *comm_init_rank_config;
  lwsi_nccl_comm_get_async_error_fn *comm_get_async_error;
  lwsi_nccl_comm_finalize_fn *comm_finalize;
  lwsi_nccl_comm_destroy_fn *comm_destroy;
  lwsi_nccl_comm_abort_fn *comm_abort;
  lwsi_nccl_group_start_fn *group_start;
  lwsi_nccl_group_end_fn *group_end;
  lwsi_nccl_all_reduce_fn *all_reduce;
  lwsi_nccl_get_error_string_fn *get_error_string;
  lwsi_nccl_get_last_error_fn *get_last_error;
};

struct sym {
  const char *name;
  const char *alt; /* tried when name is absent */
  size_t off;
  bool optional;
};

#define CSYM(f, n, a, o) {n, a, offsetof(struct cuda_api, f), o}
static const struct sym cuda_syms[] = {
  CSYM(runtime_get_version, "cudaRuntimeGetVersion", NULL, false),
  CSYM(driver_get_version, "cudaDriverGetVersion", NULL, true),
  CSYM(get_device_count, "cudaGetDeviceCount", NULL, false),
  CSYM(set_device, "cudaSetDevice", NULL, false),
  /* CUDA 12 exports the CUDA 11 layout under the plain name and its own as
   * _v2; CUDA 13 only the plain one. The name is first in all of them. */
  CSYM(get_device_properties, "cudaGetDeviceProperties_v2", "cudaGetDeviceProperties", true),
  CSYM(device_get_pci_bus_id, "cudaDeviceGetPCIBusId", NULL, false),
  CSYM(mem_get_info, "cudaMemGetInfo", NULL, false),
  CSYM(malloc_, "cudaMalloc", NULL, false),
  CSYM(free_, "cudaFree", NULL, false),
  CSYM(memcpy_, "cudaMemcpy", NULL, false),
  CSYM(memset_, "cudaMemset", NULL, false),
  CSYM(device_synchronize, "cudaDeviceSynchronize", NULL, false),
  CSYM(stream_create, "cudaStreamCreate", NULL, false),
  CSYM(stream_query, "cudaStreamQuery", NULL, false),
  CSYM(stream_destroy, "cudaStreamDestroy", NULL, false),
  CSYM(get_error_string, "cudaGetErrorString", NULL, false),
};
#undef CSYM

#define NSYM(f, n, o) {n, NULL, offsetof(struct nccl_api, f), o}
static const struct sym nccl_syms[] = {
  NSYM(get_version, "ncclGetVersion", false),
  NSYM(get_unique_id, "ncclGetUniqueId", false),
  NSYM(comm_init_rank_config, "ncclCommInitRankConfig", false),
  NSYM(comm_get_async_error, "ncclCommGetAsyncError", false),
  NSYM(comm_finalize, "ncclCommFinalize", false),
  NSYM(comm_destroy, "ncclCommDestroy", false),
  NSYM(comm_abort, "ncclCommAbort", false),
  NSYM(group_start, "ncclGroupStart", false),
  NSYM(group_end, "ncclGroupEnd", false),
  NSYM(all_reduce, "ncclAllReduce", false),
  NSYM(get_error_string, "ncclGetErrorString", false),
  NSYM(get_last_error, "ncclGetLastError", true),
};
#undef NSYM

static struct cuda_api cu;
static struct nccl_api nc;

struct lib {
  bool loaded;
  char path[PATH_MAX];
  int version; /* as the library reports it */
  int driver;  /* CUDA only: cudaDriverGetVersion, 0 if unknown */
};
static struct lib cudart_lib, nccl_lib;

/* Where pip puts the libraries (the wheels nvidia-cuda-runtime-cu12,
 * nvidia-cuda-runtime (CUDA 13: nvidia/cu13), nvidia-nccl-cu12/13) under the
 * interpreters that engine images use: Debian's python3 (dist-packages),
 * python.org builds and conda (site-packages). */
static const char *const py_roots[] = {
  "/usr/local/lib/python3*/dist-packages",
  "/usr/local/lib/python3*/site-packages",
  "/usr/lib/python3/dist-packages",
  "/usr/lib/python3*/site-packages",
  "/usr/local/lib64/python3*/site-packages",
  "/usr/lib64/python3*/site-packages",
  "/opt/conda/lib/python3*/site-packages",
};

/* CUDA 11's soname is libcudart.so.11.0. Newest first: an image with two
 * runtimes runs its engine on the newer one. */
static const char *const cudart_names[] = {
  "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.11", "libcudart.so",
  NULL,
};
static const char *const cudart_py[] = {
  "nvidia/cu13/lib/libcudart.so.*", "nvidia/cuda_runtime/lib/libcudart.so.*", NULL,
};
static const char *const nccl_names[] = {"libnccl.so.2", "libnccl.so", NULL};
static const char *const nccl_py[] = {"nvidia/nccl/lib/libnccl.so.*", "nvidia/cu13/lib/libnccl.so.*",
                                      NULL};

/* dlopen, keeping the first failure's text. RTLD_NOW: a library that lacks
 * what it needs fails here, with a message, not in the middle of the check;
 * RTLD_LOCAL: nothing of it satisfies the symbols of libraries loaded later. */
static void *try_open(const char *name, char *first_err, size_t errlen)
{
  void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL && first_err[0] == '\0') {
    const char *why = dlerror();
    snprintf(first_err, errlen, "%s", why ? why : name);
  }
  return h;
}

/* Tries one glob pattern under every Python root (and $VIRTUAL_ENV and
 * $CONDA_PREFIX), newest match first. */
static void *try_python(const char *sub, char *first_err, size_t errlen)
{
  char pat[PATH_MAX];
  const char *envs[] = {"VIRTUAL_ENV", "CONDA_PREFIX"};
  size_t nroots = sizeof(py_roots) / sizeof(py_roots[0]);
  for (size_t i = 0; i < nroots + 2; i++) {
    if (i < nroots) {
      snprintf(pat, sizeof(pat), "%s/%s", py_roots[i], sub);
    } else {
      const char *e = getenv(envs[i - nroots]);
      if (e == NULL || e[0] != '/')
        continue;
      snprintf(pat, sizeof(pat), "%s/lib/python3*/site-packages/%s", e, sub);
    }
    glob_t g;
    if (glob(pat, 0, NULL, &g) != 0)
      continue;
    void *h = NULL;
    for (size_t k = g.gl_pathc; k-- > 0 && h == NULL;)
      h = try_open(g.gl_pathv[k], first_err, errlen);
    globfree(&g);
    if (h != NULL)
      return h;
  }
  return NULL;
}

/* Loads one library: the path in env_name when set (and then only that),
 * else the sonames through the dynamic linker's search (LD_LIBRARY_PATH,
 * ld.so.cache), else the Python packages. Resolves syms into api. Returns 0,
 * or -ELIBACC (not found, err says what was tried) or -ELIBBAD (a function
 * is missing). The library is never dlclose'd: CUDA and NCCL register
 * atexit handlers and threads that outlive any unload. */
static int load_lib(const char *what, const char *env_name, const char *const *names,
                    const char *const *py, const struct sym *syms, size_t nsyms, void *api,
                    struct lib *lib, char *err, size_t errlen)
{
  char first_err[512] = "";
  void *h = NULL;
  const char *env = getenv(env_name);
  if (env != NULL && env[0] != '\0') {
    h = try_open(env, first_err, sizeof(first_err));
    if (h == NULL) {
      snprintf(err, errlen, "cannot load the %s given by %s: %s", what, env_name, first_err);
      return -ELIBACC;
    }
  } else {
    for (size_t i = 0; names[i] != NULL && h == NULL; i++)
      h = try_open(names[i], first_err, sizeof(first_err));
    for (size_t i = 0; py[i] != NULL && h == NULL; i++)
      h = try_python(py[i], first_err, sizeof(first_err));
    if (h == NULL) {
      snprintf(err, errlen,
               "no %s found (tried %s and the nvidia Python packages; first error: %s); "
               "set %s to its path",
               what, names[0], first_err, env_name);
      return -ELIBACC;
    }
  }
  struct link_map *lm = NULL;
  if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm != NULL && lm->l_name && lm->l_name[0])
    snprintf(lib->path, sizeof(lib->path), "%s", lm->l_name);
  else
    snprintf(lib->path, sizeof(lib->path), "%s", env ? env : "?");
  for (size_t i = 0; i < nsyms; i++) {
    void *p = dlsym(h, syms[i].name);
    if (p == NULL && syms[i].alt != NULL)
      p = dlsym(h, syms[i].alt);
    if (p == NULL && !syms[i].optional) {
      snprintf(err, errlen, "%.700s has no %s (too old a %s?)", lib->path, syms[i].name, what);
      return -ELIBBAD;
    }
    memcpy((char *)api + syms[i].off, &p, sizeof(p));
  }
  lib->loaded = true;
  return 0;
}

static const char *cuda_str(lwsi_cuda_err e)
{
  const char *s = cu.get_error_string ? cu.get_error_string(e) : NULL;
  return s ? s : "unknown CUDA error";
}

static const char *nccl_str(lwsi_nccl_result r)
{
  const char *s = nc.get_error_string ? nc.get_error_string(r) : NULL;
  return s ? s : "unknown NCCL error";
}

/* NCCL's last error text for this thread, as " (text)", or "". */
static const char *nccl_detail(lwsi_nccl_comm comm, char *buf, size_t len)
{
  const char *s = nc.get_last_error ? nc.get_last_error(comm) : NULL;
  if (s == NULL || s[0] == '\0')
    return "";
  snprintf(buf, len, " (%s)", s);
  return buf;
}

/* 12040 -> "12.4" (CUDA); 22809 -> "2.28.9", 2708 -> "2.7.8" (NCCL). */
static void cuda_version_text(int v, char *buf, size_t len)
{
  if (v <= 0)
    snprintf(buf, len, "unknown");
  else
    snprintf(buf, len, "%d.%d", v / 1000, (v % 1000) / 10);
}

static void nccl_version_text(int v, char *buf, size_t len)
{
  if (v >= 10000)
    snprintf(buf, len, "%d.%d.%d", v / 10000, (v % 10000) / 100, v % 100);
  else
    snprintf(buf, len, "%d.%d.%d", v / 1000, (v % 1000) / 100, v % 100);
}

static void emit_library(const char *kind, const struct lib *lib)
{
  char ver[32], drv[32];
  if (strcmp(kind, "nccl") == 0)
    nccl_version_text(lib->version, ver, sizeof(ver));
  else
    cuda_version_text(lib->version, ver, sizeof(ver));
  cuda_version_text(lib->driver, drv, sizeof(drv));
  if (opt.proto) {
    struct jb b = {0};
    jb_printf(&b, "{\"event\":\"library\",\"kind\":");
    jb_str(&b, kind);
    jb_printf(&b, ",\"path\":");
    jb_str(&b, lib->path);
    jb_printf(&b, ",\"version\":");
    jb_str(&b, ver);
    if (strcmp(kind, "cudart") == 0) {
      jb_printf(&b, ",\"driver\":");
      jb_str(&b, lib->driver > 0 ? drv : NULL);
    }
    jb_printf(&b, "}");
    jb_emit(&b);
  } else if (strcmp(kind, "cudart") == 0) {
    human("cuda runtime: %s (runtime %s, driver %s)\n", lib->path, ver,
          lib->driver > 0 ? drv : "unknown");
  } else {
    human("nccl: %s (version %s)\n", lib->path, ver);
  }
}

/* ---- devices ----------------------------------------------------------- */

struct dev {
  int index;
  char name[LWSI_CUDA_NAME_BYTES];
  char pci[64];
  size_t total, free_;
  bool checked, ok;
  double time_ms, h2d_gbps, d2h_gbps;
  /* NCCL */
  int rank;
  lwsi_cuda_stream stream;
  void *send, *recv;
  lwsi_nccl_comm comm;
};

static struct dev *devs;
static int ndev;          /* devices checked (the first --gpus, or all) */
static int visible = -1;  /* what cudaGetDeviceCount said */
static unsigned char *host_a, *host_b;
static size_t host_len;

/* The copy check's content: 64-bit words of a mixing function of the
 * device and the word's offset, so that a stuck bit, a shifted copy or a
 * page read from the wrong place (or from another device) all show. off is
 * a multiple of 8 (chunks are). */
static uint64_t mix64(uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static void fill_pattern(unsigned char *buf, uint64_t off, size_t len, uint64_t seed)
{
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w = mix64((seed << 48) ^ ((off + i) >> 3));
    memcpy(buf + i, &w, 8);
  }
  if (i < len) {
    uint64_t w = mix64((seed << 48) ^ ((off + i) >> 3));
    memcpy(buf + i, &w, len - i);
  }
}

static bool cuda_ok(lwsi_cuda_err e, const char *stage, int dev, const char *what)
{
  if (e == LWSI_CUDA_SUCCESS)
    return true;
  if (dev >= 0)
    failf(stage, "GPU %d%s%s%s: %s failed: %s (cudaError %u)", dev,
          devs && devs[dev].pci[0] ? " (" : "", devs && devs[dev].pci[0] ? devs[dev].pci : "",
          devs && devs[dev].pci[0] ? ")" : "", what, cuda_str(e), e);
  else
    failf(stage, "%s failed: %s (cudaError %u)", what, cuda_str(e), e);
  return false;
}

static void emit_device(const struct dev *d)
{
  char size[32], fr[32];
  fmt_bytes(size, sizeof(size), d->total);
  fmt_bytes(fr, sizeof(fr), d->free_);
  if (opt.proto) {
    struct jb b = {0};
    jb_printf(&b, "{\"event\":\"device\",\"index\":%d,\"name\":", d->index);
    jb_str(&b, d->name);
    jb_printf(&b, ",\"pci\":");
    jb_str(&b, d->pci);
    jb_printf(&b, ",\"total_bytes\":%zu,\"free_bytes\":%zu,\"ok\":%s,\"time_ms\":%.3f", d->total,
              d->free_, d->ok ? "true" : "false", d->time_ms);
    jb_printf(&b, ",\"h2d_gbps\":");
    jb_num(&b, d->h2d_gbps, d->ok);
    jb_printf(&b, ",\"d2h_gbps\":");
    jb_num(&b, d->d2h_gbps, d->ok);
    jb_printf(&b, "}");
    jb_emit(&b);
  } else if (d->ok) {
    char nb[32];
    fmt_bytes(nb, sizeof(nb), opt.bytes);
    human("GPU %d: %s, %s, %s (%s free): %s written and read back in %.1f ms "
          "(h2d %.1f GB/s, d2h %.1f GB/s)\n",
          d->index, d->name[0] ? d->name : "?", d->pci, size, fr, nb, d->time_ms, d->h2d_gbps,
          d->d2h_gbps);
  }
}

/* Set the device, read what it is, allocate opt.bytes, write the pattern,
 * read it back and compare, free. Fills d; false (with the failure
 * recorded) when anything went wrong. */
static bool check_device(struct dev *d)
{
  int i = d->index;
  uint64_t t0 = now_ns();
  d->checked = true;
  if (!cuda_ok(cu.set_device(i), "devices", i, "cudaSetDevice"))
    return false;
  if (cu.get_device_properties != NULL) {
    /* 16 KiB, aligned like any struct: see LWSI_CUDA_PROP_BYTES. */
    static _Alignas(64) unsigned char prop[LWSI_CUDA_PROP_BYTES];
    memset(prop, 0, sizeof(prop));
    if (!cuda_ok(cu.get_device_properties(prop, i), "devices", i, "cudaGetDeviceProperties"))
      return false;
    memcpy(d->name, prop, sizeof(d->name) - 1);
    d->name[sizeof(d->name) - 1] = '\0';
  }
  char bus[64] = "";
  if (!cuda_ok(cu.device_get_pci_bus_id(bus, (int)sizeof(bus), i), "devices", i,
               "cudaDeviceGetPCIBusId"))
    return false;
  bus[sizeof(bus) - 1] = '\0';
  snprintf(d->pci, sizeof(d->pci), "%s", bus);
  if (!cuda_ok(cu.mem_get_info(&d->free_, &d->total), "devices", i, "cudaMemGetInfo"))
    return false;

  char nb[32];
  fmt_bytes(nb, sizeof(nb), opt.bytes);
  char what[96];
  snprintf(what, sizeof(what), "cudaMalloc of %s", nb);
  void *p = NULL;
  if (!cuda_ok(cu.malloc_(&p, (size_t)opt.bytes), "devices", i, what))
    return false;

  bool ok = true;
  uint64_t h2d_ns = 0, d2h_ns = 0;
  for (uint64_t off = 0; ok && off < opt.bytes; off += host_len) {
    size_t len = (size_t)(opt.bytes - off < host_len ? opt.bytes - off : host_len);
    fill_pattern(host_a, off, len, (uint64_t)i + 1);
    uint64_t t = now_ns();
    ok = cuda_ok(cu.memcpy_((char *)p + off, host_a, len, LWSI_CUDA_MEMCPY_HOST_TO_DEVICE),
                 "devices", i, "cudaMemcpy host to device");
    h2d_ns += now_ns() - t;
    ok = ok && !must_stop("devices", "the device copy check");
  }
  if (ok) {
    /* A copy from pageable memory may return before the DMA is done. */
    uint64_t t = now_ns();
    ok = cuda_ok(cu.device_synchronize(), "devices", i, "cudaDeviceSynchronize");
    h2d_ns += now_ns() - t;
  }
  for (uint64_t off = 0; ok && off < opt.bytes; off += host_len) {
    size_t len = (size_t)(opt.bytes - off < host_len ? opt.bytes - off : host_len);
    uint64_t t = now_ns();
    ok = cuda_ok(cu.memcpy_(host_b, (char *)p + off, len, LWSI_CUDA_MEMCPY_DEVICE_TO_HOST),
                 "devices", i, "cudaMemcpy device to host");
    d2h_ns += now_ns() - t;
    if (!ok)
      break;
    fill_pattern(host_a, off, len, (uint64_t)i + 1);
    if (memcmp(host_a, host_b, len) != 0) {
      size_t k = 0;
      while (host_a[k] == host_b[k])
        k++;
      failf("devices",
            "GPU %d (%s): the data read back differs from what was written at byte %" PRIu64
            " (wrote 0x%02x, read 0x%02x): bad device memory or copy engine",
            i, d->pci, off + k, host_a[k], host_b[k]);
      ok = false;
    }
    ok = ok && !must_stop("devices", "the device copy check");
  }
  /* Freed on every path: the engine needs this memory next. */
  bool freed = cuda_ok(cu.free_(p), "devices", i, "cudaFree");
  d->ok = ok && freed;
  d->time_ms = ms_since(t0);
  if (h2d_ns > 0)
    d->h2d_gbps = (double)opt.bytes / (double)h2d_ns;
  if (d2h_ns > 0)
    d->d2h_gbps = (double)opt.bytes / (double)d2h_ns;
  return d->ok;
}

/* ---- the NCCL id ------------------------------------------------------- */

/* The text of the id (hex, the stdin lines, the event) is parse.c's; what
 * is here is the waiting. */

/* Reads stdin line by line until a line carries the id, the deadline, a
 * signal, or EOF. */
static bool read_id(void)
{
  struct lwsi_gpucheck_lines lines = {0};
  for (;;) {
    if (must_stop("nccl_id", "waiting for the NCCL id on stdin"))
      return false;
    uint64_t left_ms = (deadline_ns - now_ns()) / 1000000 + 1;
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    int n = poll(&pfd, 1, (int)(left_ms > 1000 ? 1000 : left_ms));
    if (n < 0 && errno != EINTR) {
      failf("nccl_id", "poll on stdin: %s", strerror(errno));
      return false;
    }
    if (n <= 0)
      continue;
    size_t room;
    char *space = lwsi_gpucheck_lines_space(&lines, &room);
    ssize_t r = read(STDIN_FILENO, space, room);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      failf("nccl_id", "reading stdin: %s", strerror(errno));
      return false;
    }
    if (r == 0) {
      if (lwsi_gpucheck_lines_end(&lines, &opt.id) == 0)
        return true;
      failf("nccl_id", "stdin closed before the NCCL id arrived (a line {\"nccl_id\":\"<hex>\"})");
      return false;
    }
    if (lwsi_gpucheck_lines_add(&lines, (size_t)r, &opt.id) == 0)
      return true;
  }
}

static void emit_id(void)
{
  if (opt.proto) {
    char line[LWSI_GPUCHECK_ID_EVENT_MAX];
    lwsi_gpucheck_id_event(&opt.id, line);
    struct jb b = {0};
    jb_printf(&b, "%s", line);
    jb_emit(&b);
  } else {
    char hex[LWSI_GPUCHECK_HEX_LEN + 1];
    lwsi_gpucheck_id_to_hex(&opt.id, hex);
    human("nccl id: %s\n", hex);
    human("  on node R of %" PRIu64 ": " PROG " nccl --nodes %" PRIu64
          " --node-rank R --gpus N --nccl-id <the id>\n",
          opt.nodes, opt.nodes);
  }
}

/* ---- NCCL -------------------------------------------------------------- */

static int64_t nranks_total, rank_base;
static double init_ms = -1, allreduce_ms = -1, algbw = -1, busbw = -1;

/* ranks+1 .. values 1..8 in a cycle over the elements, shifted by rank:
 * element k of global rank r holds (r + k) % 8 + 1. Every partial sum is an
 * integer far below 2^24, so the float sum is exact whatever order NCCL
 * adds in, and a dropped rank, a doubled rank or a shifted buffer all give
 * a different value. */
static void fill_floats(float *f, uint64_t first, size_t n, int64_t rank)
{
  for (size_t k = 0; k < n; k++)
    f[k] = (float)((uint64_t)(rank + (int64_t)((first + k) % 8)) % 8 + 1);
}

static void expected_sums(float exp[8])
{
  for (int k = 0; k < 8; k++) {
    uint64_t s = 0;
    for (int64_t r = 0; r < nranks_total; r++)
      s += (uint64_t)(r + k) % 8 + 1;
    exp[k] = (float)s;
  }
}

/* Waits until no communicator is in progress. Failures and the deadline
 * are recorded; returns whether all are ready. spin: poll without sleeping
 * for SPIN_NS first (inside the timed all-reduce loop, where a nap would
 * count as all-reduce time). */
static bool wait_comms(const char *stage, const char *what, bool spin)
{
  unsigned us = 0;
  uint64_t t0 = now_ns();
  for (;;) {
    bool pending = false;
    for (int i = 0; i < ndev; i++) {
      struct dev *d = &devs[i];
      if (d->comm == NULL)
        continue;
      lwsi_nccl_result st = LWSI_NCCL_SUCCESS;
      lwsi_nccl_result r = nc.comm_get_async_error(d->comm, &st);
      if (r != LWSI_NCCL_SUCCESS)
        st = r;
      if (st == LWSI_NCCL_IN_PROGRESS) {
        pending = true;
      } else if (st != LWSI_NCCL_SUCCESS) {
        char det[320];
        failf(stage, "GPU %d (rank %d): %s failed: %s%s", i, d->rank, what, nccl_str(st),
              nccl_detail(d->comm, det, sizeof(det)));
        return false;
      }
    }
    if (!pending)
      return true;
    if (must_stop(stage, what))
      return false;
    if (!spin || now_ns() - t0 > SPIN_NS)
      nap(&us);
  }
}

/* One all-reduce on every local GPU, in one group: NCCL requires the group
 * when one thread drives several devices of the same communicator. */
static bool launch_allreduce(size_t count)
{
  lwsi_nccl_result r = nc.group_start();
  if (r != LWSI_NCCL_SUCCESS) {
    failf("allreduce", "ncclGroupStart failed: %s", nccl_str(r));
    return false;
  }
  bool ok = true;
  for (int i = 0; i < ndev && ok; i++) {
    struct dev *d = &devs[i];
    r = nc.all_reduce(d->send, d->recv, count, LWSI_NCCL_FLOAT32, LWSI_NCCL_SUM, d->comm,
                      d->stream);
    if (r != LWSI_NCCL_SUCCESS && r != LWSI_NCCL_IN_PROGRESS) {
      char det[320];
      failf("allreduce", "GPU %d (rank %d): ncclAllReduce failed: %s%s", i, d->rank, nccl_str(r),
            nccl_detail(d->comm, det, sizeof(det)));
      ok = false;
    }
  }
  /* Closed even after a failure: an open group would swallow the aborts. */
  r = nc.group_end();
  if (ok && r != LWSI_NCCL_SUCCESS && r != LWSI_NCCL_IN_PROGRESS) {
    failf("allreduce", "ncclGroupEnd (all-reduce) failed: %s", nccl_str(r));
    ok = false;
  }
  return ok && wait_comms("allreduce", "enqueueing the all-reduce", true);
}

/* Waits until every local stream has run its all-reduces, watching the
 * communicators too: a peer's failure shows there, not on the stream. */
static bool wait_streams(void)
{
  uint64_t t0 = now_ns();
  unsigned us = 0;
  bool *done = calloc((size_t)ndev, sizeof(bool));
  if (done == NULL) {
    failf("allreduce", "out of memory");
    return false;
  }
  bool ok = true;
  for (;;) {
    bool pending = false;
    for (int i = 0; i < ndev && ok; i++) {
      struct dev *d = &devs[i];
      if (done[i])
        continue;
      lwsi_cuda_err e = cu.stream_query(d->stream);
      if (e == LWSI_CUDA_SUCCESS)
        done[i] = true;
      else if (e == LWSI_CUDA_ERR_NOT_READY)
        pending = true;
      else
        ok = cuda_ok(e, "allreduce", i, "the all-reduce (cudaStreamQuery)");
      lwsi_nccl_result st = LWSI_NCCL_SUCCESS;
      if (ok && nc.comm_get_async_error(d->comm, &st) == LWSI_NCCL_SUCCESS &&
          st != LWSI_NCCL_SUCCESS && st != LWSI_NCCL_IN_PROGRESS) {
        char det[320];
        failf("allreduce", "GPU %d (rank %d): the all-reduce failed: %s%s", i, d->rank,
              nccl_str(st), nccl_detail(d->comm, det, sizeof(det)));
        ok = false;
      }
    }
    if (!ok || !pending)
      break;
    if (must_stop("allreduce", "the all-reduce")) {
      ok = false;
      break;
    }
    if (now_ns() - t0 > SPIN_NS)
      nap(&us);
  }
  free(done);
  return ok;
}

static bool verify_sums(size_t count)
{
  float exp[8];
  expected_sums(exp);
  float *f = (float *)(void *)host_b;
  size_t per = host_len / sizeof(float);
  for (int i = 0; i < ndev; i++) {
    struct dev *d = &devs[i];
    if (!cuda_ok(cu.set_device(i), "verify", i, "cudaSetDevice"))
      return false;
    for (size_t first = 0; first < count; first += per) {
      size_t n = count - first < per ? count - first : per;
      if (!cuda_ok(cu.memcpy_(f, (float *)d->recv + first, n * sizeof(float),
                              LWSI_CUDA_MEMCPY_DEVICE_TO_HOST),
                   "verify", i, "cudaMemcpy of the all-reduce result"))
        return false;
      for (size_t k = 0; k < n; k++) {
        float want = exp[(first + k) % 8];
        if (f[k] != want) {
          failf("verify",
                "GPU %d (rank %d): wrong all-reduce sum at element %zu: got %g, expected %g "
                "(sum over %" PRId64 " ranks)",
                i, d->rank, first + k, (double)f[k], (double)want, nranks_total);
          return false;
        }
      }
    }
  }
  return true;
}

/* Streams and buffers: send holds this rank's values, recv is set to all
 * ones (a NaN in float) so that a result never written cannot pass. */
static bool nccl_prepare(size_t count)
{
  size_t bytes = count * sizeof(float);
  float *f = (float *)(void *)host_a;
  size_t per = host_len / sizeof(float);
  for (int i = 0; i < ndev; i++) {
    struct dev *d = &devs[i];
    d->rank = (int)(rank_base + i);
    if (!cuda_ok(cu.set_device(i), "nccl_prepare", i, "cudaSetDevice") ||
        !cuda_ok(cu.stream_create(&d->stream), "nccl_prepare", i, "cudaStreamCreate") ||
        !cuda_ok(cu.malloc_(&d->send, bytes), "nccl_prepare", i, "cudaMalloc (all-reduce send)") ||
        !cuda_ok(cu.malloc_(&d->recv, bytes), "nccl_prepare", i, "cudaMalloc (all-reduce recv)"))
      return false;
    for (size_t first = 0; first < count; first += per) {
      size_t n = count - first < per ? count - first : per;
      fill_floats(f, first, n, d->rank);
      if (!cuda_ok(cu.memcpy_((float *)d->send + first, f, n * sizeof(float),
                              LWSI_CUDA_MEMCPY_HOST_TO_DEVICE),
                   "nccl_prepare", i, "cudaMemcpy host to device"))
        return false;
    }
    if (!cuda_ok(cu.memset_(d->recv, 0xff, bytes), "nccl_prepare", i, "cudaMemset") ||
        !cuda_ok(cu.device_synchronize(), "nccl_prepare", i, "cudaDeviceSynchronize"))
      return false;
  }
  return true;
}

static bool nccl_init(void)
{
  lwsi_nccl_result r = nc.group_start();
  if (r != LWSI_NCCL_SUCCESS) {
    failf("nccl_init", "ncclGroupStart failed: %s", nccl_str(r));
    return false;
  }
  bool ok = true;
  for (int i = 0; i < ndev && ok; i++) {
    struct dev *d = &devs[i];
    /* Non-blocking (config.blocking = 0): the calls return at once and the
     * deadline is ours to keep while NCCL connects to the other nodes. */
    struct lwsi_nccl_config cfg = {
      .size = sizeof(cfg),
      .magic = LWSI_NCCL_CONFIG_MAGIC,
      .version = LWSI_NCCL_CONFIG_VERSION,
      .blocking = 0,
      .cga_cluster_size = LWSI_NCCL_CONFIG_UNDEF_INT,
    };
    if (!cuda_ok(cu.set_device(i), "nccl_init", i, "cudaSetDevice")) {
      ok = false;
      break;
    }
    r = nc.comm_init_rank_config(&d->comm, (int)nranks_total, opt.id, d->rank, &cfg);
    if (r != LWSI_NCCL_SUCCESS && r != LWSI_NCCL_IN_PROGRESS) {
      char det[320];
      failf("nccl_init", "GPU %d (rank %d): ncclCommInitRankConfig failed: %s%s", i, d->rank,
            nccl_str(r), nccl_detail(d->comm, det, sizeof(det)));
      ok = false;
    }
  }
  r = nc.group_end();
  if (ok && r != LWSI_NCCL_SUCCESS && r != LWSI_NCCL_IN_PROGRESS) {
    failf("nccl_init", "ncclGroupEnd (communicator init) failed: %s", nccl_str(r));
    ok = false;
  }
  char what[160];
  snprintf(what, sizeof(what),
           "NCCL communicator init (%" PRId64 " ranks; are all nodes' checks running and "
           "reachable?)",
           nranks_total);
  return ok && wait_comms("nccl_init", what, false);
}

/* Communicators first, then memory: NCCL may still use the buffers until
 * its communicator is finalized or aborted. After a timeout nothing that
 * could block is called once the communicators are aborted: process exit
 * releases the device memory anyway, and a hung kernel would make cudaFree
 * hang too. */
static void nccl_cleanup(bool clean)
{
  if (clean) {
    for (int i = 0; i < ndev; i++) {
      lwsi_nccl_result r = devs[i].comm ? nc.comm_finalize(devs[i].comm) : LWSI_NCCL_SUCCESS;
      if (r != LWSI_NCCL_SUCCESS && r != LWSI_NCCL_IN_PROGRESS) {
        failf("cleanup", "GPU %d: ncclCommFinalize failed: %s", i, nccl_str(r));
        clean = false;
      }
    }
    if (clean)
      clean = wait_comms("cleanup", "NCCL communicator finalize", false);
  }
  for (int i = 0; i < ndev; i++) {
    struct dev *d = &devs[i];
    if (d->comm == NULL)
      continue;
    lwsi_nccl_result r = clean ? nc.comm_destroy(d->comm) : nc.comm_abort(d->comm);
    if (r != LWSI_NCCL_SUCCESS)
      failf("cleanup", "GPU %d: %s failed: %s", i, clean ? "ncclCommDestroy" : "ncclCommAbort",
            nccl_str(r));
    d->comm = NULL;
  }
  if (fail.timeout || got_signal)
    return;
  for (int i = 0; i < ndev; i++) {
    struct dev *d = &devs[i];
    if (d->send == NULL && d->recv == NULL && d->stream == NULL)
      continue;
    if (!cuda_ok(cu.set_device(i), "cleanup", i, "cudaSetDevice"))
      continue;
    if (d->send)
      cuda_ok(cu.free_(d->send), "cleanup", i, "cudaFree");
    if (d->recv)
      cuda_ok(cu.free_(d->recv), "cleanup", i, "cudaFree");
    if (d->stream)
      cuda_ok(cu.stream_destroy(d->stream), "cleanup", i, "cudaStreamDestroy");
    d->send = d->recv = NULL;
    d->stream = NULL;
  }
}

static void run_nccl(void)
{
  /* The rank layout: ranks of node R follow those of nodes 0..R-1. */
  if (opt.nranks >= 0) {
    nranks_total = opt.nranks;
    rank_base = opt.rank_base;
  } else {
    nranks_total = (int64_t)opt.nodes * ndev;
    rank_base = (int64_t)opt.node_rank * ndev;
  }
  if (rank_base + ndev > nranks_total || nranks_total > INT_MAX) {
    failf("nccl_init",
          "this node's %d GPUs from rank %" PRId64 " do not fit in %" PRId64 " ranks",
          ndev, rank_base, nranks_total);
    return;
  }
  size_t count = (size_t)(opt.bytes / sizeof(float));
  if (opt.node_rank > 0 && !opt.have_id) {
    emit_phase("nccl_id");
    if (!read_id())
      return;
    opt.have_id = true;
  }
  emit_phase("nccl_prepare");
  bool ok = nccl_prepare(count);
  if (ok) {
    emit_phase("nccl_init");
    uint64_t t0 = now_ns();
    ok = nccl_init();
    init_ms = ms_since(t0);
    if (ok)
      human("nccl: %" PRId64 " ranks, this node ranks %" PRId64 "..%" PRId64
            ", communicator ready in %.1f ms\n",
            nranks_total, rank_base, rank_base + ndev - 1, init_ms);
  }
  if (ok) {
    emit_phase("allreduce");
    /* One untimed all-reduce first: NCCL connects peers lazily, on the
     * first collective that needs them. */
    ok = launch_allreduce(count) && wait_streams();
  }
  if (ok) {
    uint64_t t0 = now_ns();
    for (uint64_t k = 0; k < opt.iters && ok; k++)
      ok = launch_allreduce(count);
    ok = ok && wait_streams();
    if (ok) {
      /* nccl-tests' convention (doc/PERFORMANCE.md): algbw = bytes / time,
       * busbw = algbw * 2 (n - 1) / n for all-reduce. */
      double sec = (double)(now_ns() - t0) / 1e9 / (double)opt.iters;
      double bytes = (double)(count * sizeof(float));
      allreduce_ms = sec * 1e3;
      algbw = bytes / sec / 1e9;
      busbw = algbw * 2.0 * (double)(nranks_total - 1) / (double)nranks_total;
    }
  }
  if (ok) {
    emit_phase("verify");
    ok = verify_sums(count);
  }
  if (ok) {
    char nb[32];
    fmt_bytes(nb, sizeof(nb), count * sizeof(float));
    human("nccl: all-reduce of %s: %.3f ms, algbw %.2f GB/s, busbw %.2f GB/s (mean of %" PRIu64
          "), sums verified\n",
          nb, allreduce_ms, algbw, busbw, opt.iters);
    /* One rank has no bus: nccl-tests reports 0, and no floor applies. */
    if (opt.min_busbw > 0 && nranks_total > 1 && busbw < opt.min_busbw) {
      failf("bandwidth",
            "all-reduce bus bandwidth %.3f GB/s is below --min-busbw %.3f GB/s (%" PRId64
            " ranks, %s in %.3f ms)",
            busbw, opt.min_busbw, nranks_total, nb, allreduce_ms);
      ok = false;
    }
  }
  emit_phase("cleanup");
  nccl_cleanup(ok && !fail.failed);
}

/* ---- the result -------------------------------------------------------- */

static const char *mode_name(void)
{
  switch (opt.mode) {
  case MODE_CUDA: return "cuda";
  case MODE_NCCL: return "nccl";
  case MODE_LIBS: return "libs";
  default: return "none";
  }
}

static int finish(int code)
{
  double total_ms = ms_since(start_ns);
  bool ok = code == EXIT_OK && !fail.failed;
  if (code == EXIT_OK && fail.failed)
    code = EXIT_FAILED;
  if (opt.proto) {
    char ver[32];
    struct jb b = {0};
    jb_printf(&b, "{\"event\":\"result\",\"ok\":%s,\"mode\":\"%s\",\"exit\":%d,\"error\":",
              ok ? "true" : "false", mode_name(), code);
    jb_str(&b, ok ? NULL : fail.error);
    jb_printf(&b, ",\"stage\":");
    jb_str(&b, ok ? NULL : fail.stage);
    jb_printf(&b, ",\"timeout\":%s,\"node_rank\":%" PRIu64 ",\"nodes\":%" PRIu64,
              fail.timeout ? "true" : "false", opt.node_rank, opt.nodes);
    jb_printf(&b, ",\"cudart\":");
    if (cudart_lib.loaded) {
      cuda_version_text(cudart_lib.version, ver, sizeof(ver));
      jb_printf(&b, "{\"path\":");
      jb_str(&b, cudart_lib.path);
      jb_printf(&b, ",\"version\":");
      jb_str(&b, ver);
      jb_printf(&b, "}");
    } else {
      jb_printf(&b, "null");
    }
    jb_printf(&b, ",\"nccl\":");
    if (nccl_lib.loaded) {
      nccl_version_text(nccl_lib.version, ver, sizeof(ver));
      jb_printf(&b, "{\"path\":");
      jb_str(&b, nccl_lib.path);
      jb_printf(&b, ",\"version\":");
      jb_str(&b, ver);
      jb_printf(&b, "}");
    } else {
      jb_printf(&b, "null");
    }
    jb_printf(&b, ",\"gpus_visible\":");
    if (visible >= 0)
      jb_printf(&b, "%d", visible);
    else
      jb_printf(&b, "null");
    jb_printf(&b, ",\"devices\":[");
    bool first = true;
    for (int i = 0; devs != NULL && i < ndev; i++) {
      const struct dev *d = &devs[i];
      if (!d->checked)
        continue;
      jb_printf(&b, "%s{\"index\":%d,\"name\":", first ? "" : ",", d->index);
      jb_str(&b, d->name);
      jb_printf(&b, ",\"pci\":");
      jb_str(&b, d->pci);
      jb_printf(&b, ",\"total_bytes\":%zu,\"ok\":%s,\"time_ms\":%.3f", d->total,
                d->ok ? "true" : "false", d->time_ms);
      if (opt.mode == MODE_NCCL && nranks_total > 0)
        jb_printf(&b, ",\"rank\":%d", (int)(rank_base + i));
      jb_printf(&b, "}");
      first = false;
    }
    jb_printf(&b, "],\"bytes\":%" PRIu64, opt.bytes);
    jb_printf(&b, ",\"nranks\":");
    if (opt.mode == MODE_NCCL && nranks_total > 0)
      jb_printf(&b, "%" PRId64 ",\"rank_base\":%" PRId64, nranks_total, rank_base);
    else
      jb_printf(&b, "null,\"rank_base\":null");
    jb_printf(&b, ",\"init_ms\":");
    jb_num(&b, init_ms, init_ms >= 0);
    jb_printf(&b, ",\"allreduce_ms\":");
    jb_num(&b, allreduce_ms, allreduce_ms >= 0);
    jb_printf(&b, ",\"algbw_gbps\":");
    jb_num(&b, algbw, algbw >= 0);
    jb_printf(&b, ",\"busbw_gbps\":");
    jb_num(&b, busbw, busbw >= 0);
    jb_printf(&b, ",\"time_ms\":%.3f}", total_ms);
    jb_emit(&b);
  } else if (ok && opt.mode == MODE_LIBS) {
    human("OK: libraries loaded in %.1f ms\n", total_ms);
  } else if (ok) {
    human("OK: %s check passed on %d GPU%s in %.1f ms\n", mode_name(), ndev, ndev == 1 ? "" : "s",
          total_ms);
  } else {
    fflush(stdout);
    fprintf(stderr, PROG ": FAILED (%s): %s\n", fail.stage ? fail.stage : "?", fail.error);
  }
  return code;
}

/* ---- command line ------------------------------------------------------ */

static void usage(FILE *f)
{
  fprintf(f,
          "usage: " PROG " cuda|nccl|libs [OPTIONS]\n"
          "\n"
          "Checks this node's GPUs before an engine starts (lwsinit --gpu-check).\n"
          "  cuda   every GPU: allocate, write a pattern, read it back, compare\n"
          "  nccl   cuda, then one NCCL communicator over all GPUs of all nodes,\n"
          "         an all-reduce whose sums are verified, and its bus bandwidth\n"
          "  libs   only load the CUDA runtime and NCCL and print what was found\n"
          "\n"
          "  --gpus N            GPUs this node must have; the first N are checked (0: all, at least 1)\n"
          "  --bytes N           bytes per GPU to copy and to all-reduce (default 67108864)\n"
          "  --timeout-ms MS     the whole check's deadline (default 120000)\n"
          "  --min-busbw GBPS    fail below this all-reduce bus bandwidth (default 0: none)\n"
          "  --iters N           timed all-reduces, after one untimed (default 5)\n"
          "  --nodes N           nodes in the group (default 1)\n"
          "  --node-rank R       this node's rank; 0 creates the NCCL id (default 0)\n"
          "  --nranks T --rank-base B   the rank layout, when nodes differ in GPU count\n"
          "  --nccl-id HEX       the id printed by node 0 (else read from stdin)\n"
          "  --proto             JSON lines on stdout, the id as {\"nccl_id\":\"HEX\"} on stdin\n"
          "\n"
          "Libraries: LWSINIT_CUDART and LWSINIT_NCCL (paths), else libcudart.so.13/12/11,\n"
          "libnccl.so.2 and the nvidia Python packages.\n"
          "Exit: 0 passed, 1 check failed, 2 usage, 3 CUDA runtime or NCCL not loadable.\n");
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs(PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs(" (see " PROG " --help)\n", stderr);
  va_end(ap);
  exit(EXIT_USAGE);
}

/* Strict: digits only, no sign, no suffix, within [min, max]. */
static uint64_t parse_u64(const char *name, const char *s, uint64_t min, uint64_t max)
{
  uint64_t v = 0;
  bool ok = s[0] != '\0';
  for (const char *p = s; ok && *p; p++) {
    if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
      ok = false;
    else
      v = v * 10 + (uint64_t)(*p - '0');
  }
  if (!ok || v < min || v > max)
    usage_error("%s: invalid value '%s' (an integer from %" PRIu64 " to %" PRIu64 ")", name, s,
                min, max);
  return v;
}

/* Digits with an optional fraction: "12", "0.5"; no sign, no exponent. */
static double parse_gbps(const char *name, const char *s)
{
  double v = 0, scale = 1;
  bool ok = s[0] != '\0' && s[0] != '.', frac = false;
  for (const char *p = s; ok && *p; p++) {
    if (*p == '.' && !frac && p[1] != '\0') {
      frac = true;
    } else if (*p >= '0' && *p <= '9') {
      if (frac) {
        scale /= 10;
        v += (*p - '0') * scale;
      } else {
        v = v * 10 + (*p - '0');
      }
    } else {
      ok = false;
    }
  }
  if (!ok || v > 1e6)
    usage_error("%s: invalid value '%s' (GB/s, e.g. 40 or 12.5)", name, s);
  return v;
}

static void parse_args(int argc, char **argv)
{
  bool have_nranks = false, have_base = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    if (strcmp(a, "--proto") == 0) {
      opt.proto = true;
      continue;
    }
    if (a[0] != '-' || a[1] != '-') {
      if (opt.mode != MODE_NONE)
        usage_error("unexpected argument '%s'", a);
      if (strcmp(a, "cuda") == 0)
        opt.mode = MODE_CUDA;
      else if (strcmp(a, "nccl") == 0)
        opt.mode = MODE_NCCL;
      else if (strcmp(a, "libs") == 0)
        opt.mode = MODE_LIBS;
      else
        usage_error("unknown mode '%s' (cuda, nccl or libs)", a);
      continue;
    }
    /* --name VALUE or --name=VALUE */
    char name[32];
    const char *val;
    const char *eq = strchr(a, '=');
    if (eq != NULL) {
      size_t n = (size_t)(eq - a);
      if (n >= sizeof(name))
        usage_error("unknown option '%s'", a);
      memcpy(name, a, n);
      name[n] = '\0';
      val = eq + 1;
    } else {
      if (strlen(a) >= sizeof(name))
        usage_error("unknown option '%s'", a);
      strcpy(name, a);
      if (i + 1 >= argc)
        usage_error("%s needs a value", a);
      val = argv[++i];
    }
    if (strcmp(name, "--gpus") == 0)
      opt.gpus = parse_u64(name, val, 0, 1024);
    else if (strcmp(name, "--bytes") == 0)
      opt.bytes = parse_u64(name, val, 4, 1ull << 40);
    else if (strcmp(name, "--timeout-ms") == 0)
      opt.timeout_ms = parse_u64(name, val, 1, 86400000);
    else if (strcmp(name, "--min-busbw") == 0)
      opt.min_busbw = parse_gbps(name, val);
    else if (strcmp(name, "--iters") == 0)
      opt.iters = parse_u64(name, val, 1, 1000);
    else if (strcmp(name, "--nodes") == 0)
      opt.nodes = parse_u64(name, val, 1, 65536);
    else if (strcmp(name, "--node-rank") == 0)
      opt.node_rank = parse_u64(name, val, 0, 65535);
    else if (strcmp(name, "--nranks") == 0) {
      opt.nranks = (int64_t)parse_u64(name, val, 1, INT_MAX);
      have_nranks = true;
    } else if (strcmp(name, "--rank-base") == 0) {
      opt.rank_base = (int64_t)parse_u64(name, val, 0, INT_MAX - 1);
      have_base = true;
    } else if (strcmp(name, "--nccl-id") == 0) {
      const char *end;
      if (lwsi_gpucheck_hex_to_id(val, &end, &opt.id) < 0 || *end != '\0')
        usage_error("--nccl-id: expected %d hex digits", 2 * LWSI_NCCL_UNIQUE_ID_BYTES);
      opt.have_id = true;
    } else {
      usage_error("unknown option '%s'", name);
    }
  }
  if (opt.mode == MODE_NONE)
    usage_error("no mode given (cuda, nccl or libs)");
  if (opt.node_rank >= opt.nodes)
    usage_error("--node-rank: %" PRIu64 " is not below --nodes %" PRIu64, opt.node_rank,
                opt.nodes);
  if (have_nranks != have_base)
    usage_error("--nranks and --rank-base go together");
  if (opt.mode == MODE_NCCL && opt.nodes > 1 && opt.gpus == 0 && !have_nranks)
    usage_error("nccl over %" PRIu64 " nodes needs --gpus N (or --nranks and --rank-base) "
                "to lay out the ranks",
                opt.nodes);
  if (opt.mode == MODE_NCCL && opt.bytes % sizeof(float) != 0)
    opt.bytes -= opt.bytes % sizeof(float); /* the all-reduce is over floats */
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv)
{
  if (argc > 1 && strcmp(argv[1], "gpu-free") == 0)
    return lwsi_gpufree_main(argc, argv);
  start_ns = now_ns();
  parse_args(argc, argv);
  deadline_ns = start_ns + opt.timeout_ms * 1000000ull;

  /* No SA_RESTART: a signal interrupts a wait, and every wait looks at
   * got_signal. The agent sends SIGTERM at its deadline, then SIGKILL. */
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction ign = sa;
  ign.sa_handler = SIG_IGN;
  if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
      sigaction(SIGHUP, &sa, NULL) < 0 || sigaction(SIGPIPE, &ign, NULL) < 0) {
    fprintf(stderr, PROG ": sigaction: %s\n", strerror(errno));
    return EXIT_FAILED;
  }
  /* The agent starts us with its signals blocked unless it restores its
   * mask first; a blocked SIGTERM would only be seen at the deadline. */
  sigset_t unblock;
  sigemptyset(&unblock);
  sigaddset(&unblock, SIGTERM);
  sigaddset(&unblock, SIGINT);
  sigaddset(&unblock, SIGHUP);
  if (sigprocmask(SIG_UNBLOCK, &unblock, NULL) < 0) {
    fprintf(stderr, PROG ": sigprocmask: %s\n", strerror(errno));
    return EXIT_FAILED;
  }

  if (opt.proto) {
    proto_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (proto_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
      fprintf(stderr, PROG ": cannot set up the protocol output: %s\n", strerror(errno));
      return EXIT_FAILED;
    }
    struct jb b = {0};
    jb_printf(&b, "{\"event\":\"start\",\"mode\":\"%s\",\"pid\":%ld,\"node_rank\":%" PRIu64
              ",\"nodes\":%" PRIu64 ",\"gpus\":%" PRIu64 ",\"bytes\":%" PRIu64
              ",\"timeout_ms\":%" PRIu64 "}",
              mode_name(), (long)getpid(), opt.node_rank, opt.nodes, opt.gpus, opt.bytes,
              opt.timeout_ms);
    jb_emit(&b);
  }

  char err[1024];
  if (load_lib("CUDA runtime", "LWSINIT_CUDART", cudart_names, cudart_py, cuda_syms,
               sizeof(cuda_syms) / sizeof(cuda_syms[0]), &cu, &cudart_lib, err,
               sizeof(err)) < 0) {
    failf("load", "%s", err);
    return finish(EXIT_NOLIB);
  }
  lwsi_cuda_err ce = cu.runtime_get_version(&cudart_lib.version);
  if (ce != LWSI_CUDA_SUCCESS)
    cudart_lib.version = 0;
  if (cu.driver_get_version == NULL || cu.driver_get_version(&cudart_lib.driver) != 0)
    cudart_lib.driver = 0;
  emit_library("cudart", &cudart_lib);

  if (opt.mode == MODE_NCCL || opt.mode == MODE_LIBS) {
    if (load_lib("NCCL", "LWSINIT_NCCL", nccl_names, nccl_py, nccl_syms,
                 sizeof(nccl_syms) / sizeof(nccl_syms[0]), &nc, &nccl_lib, err,
                 sizeof(err)) < 0) {
      failf("load", "%s", err);
      return finish(EXIT_NOLIB);
    }
    lwsi_nccl_result r = nc.get_version(&nccl_lib.version);
    if (r != LWSI_NCCL_SUCCESS)
      nccl_lib.version = 0;
    emit_library("nccl", &nccl_lib);
  }
  if (opt.mode == MODE_LIBS)
    return finish(EXIT_OK);

  /* The leader's id first, before the device checks: the agents carry it
   * to the other nodes while every node checks its devices. */
  if (opt.mode == MODE_NCCL && opt.node_rank == 0 && !opt.have_id) {
    lwsi_nccl_result r = nc.get_unique_id(&opt.id);
    if (r != LWSI_NCCL_SUCCESS) {
      char det[320];
      failf("nccl_id", "ncclGetUniqueId failed: %s%s", nccl_str(r),
            nccl_detail(NULL, det, sizeof(det)));
      return finish(EXIT_FAILED);
    }
    opt.have_id = true;
    if (opt.nodes > 1)
      emit_id();
  }

  emit_phase("devices");
  int count = 0;
  ce = cu.get_device_count(&count);
  if (!cuda_ok(ce, "devices", -1, "cudaGetDeviceCount"))
    return finish(EXIT_FAILED);
  visible = count;
  if (count < 1) {
    failf("devices", "no GPU visible (cudaGetDeviceCount says 0)");
    return finish(EXIT_FAILED);
  }
  if (opt.gpus > 0 && (uint64_t)count < opt.gpus) {
    failf("devices", "found %d GPU%s, expected %" PRIu64 " (--gpus %" PRIu64 ")", count,
          count == 1 ? "" : "s", opt.gpus, opt.gpus);
    return finish(EXIT_FAILED);
  }
  ndev = opt.gpus > 0 ? (int)opt.gpus : count;
  devs = calloc((size_t)ndev, sizeof(*devs));
  host_len = (size_t)(opt.bytes < HOST_CHUNK ? opt.bytes : HOST_CHUNK);
  host_a = malloc(host_len);
  host_b = malloc(host_len);
  if (devs == NULL || host_a == NULL || host_b == NULL) {
    failf("devices", "out of host memory for %zu-byte copy buffers", host_len);
    return finish(EXIT_FAILED);
  }
  if (count > ndev)
    human("%d GPUs visible, checking the first %d\n", count, ndev);
  for (int i = 0; i < ndev; i++) {
    devs[i].index = i;
    bool ok = check_device(&devs[i]);
    emit_device(&devs[i]);
    if (!ok)
      return finish(EXIT_FAILED);
  }
  if (opt.mode == MODE_NCCL)
    run_nccl();
  int code = finish(fail.failed ? EXIT_FAILED : EXIT_OK);
  free(host_a);
  free(host_b);
  free(devs);
  return code;
}
