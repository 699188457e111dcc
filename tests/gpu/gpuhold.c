/* gpuhold: a stand-in for an engine that holds GPU memory, for
 * tests/gpu/run_real.sh (what `lwsinit-gpucheck gpu-free` and a restart in
 * place wait for). Not built by meson: run_real.sh compiles it with cc.
 *
 *   gpuhold CUDART BYTES PIDFILE [TERM_DELAY_MS]
 *
 * Loads the CUDA runtime CUDART with dlopen (the library the check found,
 * or tests/gpu/libfakegpu.so), allocates BYTES on device 0 and writes them
 * (cudaMemset and cudaDeviceSynchronize, so the memory is really resident),
 * then writes its pid to PIDFILE (through a temporary file and rename, so a
 * reader never sees half of it) and waits. The driver lists it among the
 * GPU's compute processes from the allocation until the process is gone.
 * SIGTERM ends it after TERM_DELAY_MS (default 0): an engine whose teardown
 * takes a while, which the GPU-free wait has to outlast. It never frees the
 * memory itself: the driver releases it at exit, as for a killed engine.
 * Exit 0 after SIGTERM, 1 on a CUDA error (one line on stderr). */
#include "lwsinit/gpu_abi.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t term;

static void on_term(int sig)
{
  (void)sig;
  term = 1;
}

static int fail(const char *what, const char *detail)
{
  fprintf(stderr, "gpuhold: %s: %s\n", what, detail);
  return 1;
}

int main(int argc, char **argv)
{
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: gpuhold CUDART BYTES PIDFILE [TERM_DELAY_MS]\n");
    return 2;
  }
  char *end;
  errno = 0;
  unsigned long long bytes = strtoull(argv[2], &end, 10);
  if (errno != 0 || *end != '\0' || bytes == 0)
    return fail("bad BYTES", argv[2]);
  long delay_ms = argc == 5 ? strtol(argv[4], &end, 10) : 0;
  if (argc == 5 && (*end != '\0' || delay_ms < 0))
    return fail("bad TERM_DELAY_MS", argv[4]);

  /* SIGTERM is blocked from here to sigsuspend, so one that comes while
   * CUDA starts is kept and honoured once the memory is held, and none is
   * lost between the flag's test and the wait. */
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &block, &old) != 0)
    return fail("sigprocmask", strerror(errno));
  sigdelset(&old, SIGTERM);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGTERM, &sa, NULL) != 0)
    return fail("sigaction", strerror(errno));

  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (h == NULL)
    return fail("dlopen", dlerror());
  lwsi_cuda_set_device_fn *set_device;
  lwsi_cuda_malloc_fn *cmalloc;
  lwsi_cuda_memset_fn *cmemset;
  lwsi_cuda_device_synchronize_fn *sync;
  lwsi_cuda_get_error_string_fn *errstr;
  *(void **)&set_device = dlsym(h, "cudaSetDevice");
  *(void **)&cmalloc = dlsym(h, "cudaMalloc");
  *(void **)&cmemset = dlsym(h, "cudaMemset");
  *(void **)&sync = dlsym(h, "cudaDeviceSynchronize");
  *(void **)&errstr = dlsym(h, "cudaGetErrorString");
  if (set_device == NULL || cmalloc == NULL || cmemset == NULL || sync == NULL || errstr == NULL)
    return fail("dlsym", "the CUDA runtime lacks a function");

  void *p = NULL;
  lwsi_cuda_err e;
  if ((e = set_device(0)) != LWSI_CUDA_SUCCESS)
    return fail("cudaSetDevice(0)", errstr(e));
  if ((e = cmalloc(&p, (size_t)bytes)) != LWSI_CUDA_SUCCESS)
    return fail("cudaMalloc", errstr(e));
  if ((e = cmemset(p, 0x5a, (size_t)bytes)) != LWSI_CUDA_SUCCESS)
    return fail("cudaMemset", errstr(e));
  if ((e = sync()) != LWSI_CUDA_SUCCESS)
    return fail("cudaDeviceSynchronize", errstr(e));

  char tmp[4200];
  snprintf(tmp, sizeof(tmp), "%s.tmp", argv[3]);
  FILE *f = fopen(tmp, "we");
  if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 ||
      rename(tmp, argv[3]) != 0)
    return fail(argv[3], strerror(errno));
  printf("gpuhold: pid %ld holds %llu bytes on GPU 0\n", (long)getpid(), bytes);
  fflush(stdout);

  while (!term)
    sigsuspend(&old); /* returns after a handler ran */
  struct timespec ts = {.tv_sec = delay_ms / 1000, .tv_nsec = (delay_ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  printf("gpuhold: pid %ld exits after SIGTERM (%ld ms later)\n", (long)getpid(), delay_ms);
  return 0;
}
