/* Owns the node check (include/lwsinit/nodecheck.h): reading /dev/shm, the
 * GPU device nodes, the RDMA devices and the locked-memory limit, and
 * judging each as ok, a risk (warn) or certain breakage (fail). */
#include "lwsinit/nodecheck.h"

#include "lwsinit/text.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)

const char *lwsi_nodecheck_state_name(enum lwsi_nodecheck_state s)
{
  switch (s) {
  case LWSI_NODECHECK_WARN:
    return "warn";
  case LWSI_NODECHECK_FAIL:
    return "fail";
  case LWSI_NODECHECK_OK:
    break;
  }
  return "ok";
}

int lwsi_nodecheck_read_file(const char *path, char *buf, size_t len)
{
  int fd;
  do
    fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return -errno;
  ssize_t n;
  do
    n = read(fd, buf, len - 1);
  while (n < 0 && errno == EINTR);
  int e = errno;
  close(fd);
  if (n < 0)
    return -e;
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
    buf[--n] = '\0';
  return (int)n;
}

int lwsi_nodecheck_port_state(const char *text)
{
  /* sysfs's state file reads "4: ACTIVE" (drivers/infiniband/core/sysfs.c,
   * state_show: the number of enum ib_port_state, then its name). */
  if (text == NULL || !isdigit((unsigned char)text[0]))
    return -EINVAL;
  char *end;
  long v = strtol(text, &end, 10);
  if (*end != ':' || v < 0 || v > 7)
    return -EINVAL;
  return (int)v;
}

/* The buffers of NCCL's shared-memory transport (src/transport/shm.cc),
 * which carries traffic between the GPUs of one node when they cannot
 * reach each other directly (P2P off, as in many containers): each
 * connection holds one buffer per protocol, sized as src/init.cc's
 * defaults say: SIMPLE NCCL_BUFFSIZE, 4 MiB; LL128
 * NCCL_LL128_ELEMS_PER_THREAD x NCCL_LL128_MAX_NTHREADS x NCCL_STEPS x 8
 * bytes = 120 x 640 x 8 x 8 = 4.6875 MiB; LL NCCL_LL_LINES_PER_THREAD x
 * NCCL_LL_MAX_NTHREADS x NCCL_STEPS x 16 bytes = 8 x 512 x 8 x 16 = 512
 * KiB (src/include/device.h). NCCL opens at least two channels, and each
 * GPU receives on a ring and a tree connection in each: four connections
 * per GPU. This is the least NCCL maps; more channels map more. */
#define NCCL_CONN_BYTES ((4ull << 20) + 120ull * 640 * 8 * 8 + 8ull * 512 * 8 * 16)
#define NCCL_CONNS_PER_GPU 4

uint64_t lwsi_nodecheck_shm_need(unsigned gpus)
{
  return (uint64_t)(gpus > 0 ? gpus : 1) * NCCL_CONNS_PER_GPU * NCCL_CONN_BYTES;
}

static bool is_gpu_node(const char *name)
{
  if (strncmp(name, "nvidia", 6) != 0 || name[6] == '\0')
    return false;
  for (const char *p = name + 6; *p != '\0'; p++)
    if (!isdigit((unsigned char)*p))
      return false;
  return true;
}

unsigned lwsi_nodecheck_gpu_nodes(const char *root)
{
  char path[512];
  lwsi_text_printf(path, sizeof(path), "%s/dev", root);
  DIR *d = opendir(path);
  if (d == NULL)
    return 0;
  unsigned n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (is_gpu_node(e->d_name))
      n++;
  closedir(d);
  return n;
}

static void scan_ports(const char *root, const char *dev, struct lwsi_nodecheck_rdma *out)
{
  char path[512];
  lwsi_text_printf(path, sizeof(path), "%s/sys/class/infiniband/%s/ports", root, dev);
  DIR *d = opendir(path);
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && out->nports < LWSI_NODECHECK_PORTS) {
    if (!isdigit((unsigned char)e->d_name[0]))
      continue;
    struct lwsi_nodecheck_port *p = &out->ports[out->nports];
    memset(p, 0, sizeof(*p));
    lwsi_text_copy(p->dev, sizeof(p->dev), dev);
    p->port = (unsigned)strtoul(e->d_name, NULL, 10);
    char file[600], text[128];
    lwsi_text_printf(file, sizeof(file), "%s/%s/state", path, e->d_name);
    p->state = lwsi_nodecheck_read_file(file, text, sizeof(text)) > 0 ? lwsi_nodecheck_port_state(text) : -1;
    lwsi_text_printf(file, sizeof(file), "%s/%s/link_layer", path, e->d_name);
    p->ethernet = lwsi_nodecheck_read_file(file, text, sizeof(text)) > 0 && strcmp(text, "Ethernet") == 0;
    lwsi_text_printf(file, sizeof(file), "%s/%s/rate", path, e->d_name);
    if (lwsi_nodecheck_read_file(file, text, sizeof(text)) > 0)
      lwsi_text_copy(p->rate, sizeof(p->rate), text);
    if (p->state == LWSI_NODECHECK_PORT_ACTIVE)
      out->active++;
    out->nports++;
  }
  closedir(d);
}

static int by_dev_port(const void *x, const void *y)
{
  const struct lwsi_nodecheck_port *a = x, *b = y;
  int c = strcmp(a->dev, b->dev);
  return c != 0 ? c : (a->port > b->port) - (a->port < b->port);
}

int lwsi_nodecheck_rdma_scan(const char *root, struct lwsi_nodecheck_rdma *out)
{
  memset(out, 0, sizeof(*out));
  char path[512];
  lwsi_text_printf(path, sizeof(path), "%s/dev/infiniband", root);
  DIR *d = opendir(path);
  if (d != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
      if (strncmp(e->d_name, "uverbs", 6) == 0)
        out->uverbs++;
    closedir(d);
  }
  lwsi_text_printf(path, sizeof(path), "%s/sys/class/infiniband", root);
  d = opendir(path);
  if (d == NULL)
    return errno == ENOENT ? 0 : -errno;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      scan_ports(root, e->d_name, out);
  closedir(d);
  /* readdir's order is the filesystem's; NCCL_IB_HCA and the status list
   * them by name. */
  qsort(out->ports, out->nports, sizeof(out->ports[0]), by_dev_port);
  return 0;
}

static void ok(struct lwsi_nodecheck_item *it, const char *name)
{
  memset(it, 0, sizeof(*it));
  it->name = name;
}

void lwsi_nodecheck_judge_shm(struct lwsi_nodecheck_item *it, int shm_err, uint64_t shm_bytes,
                              unsigned gpus)
{
  ok(it, "shm");
  uint64_t need = lwsi_nodecheck_shm_need(gpus);
  /* The fix asks for at least 1 GiB, NCCL's own advice for containers
   * (NCCL's troubleshooting guide, "Docker": --shm-size=1g). */
  uint64_t ask_gib = (need + (1ull << 30) - 1) >> 30;
  if (shm_err != 0) {
    it->state = LWSI_NODECHECK_WARN;
    lwsi_text_printf(it->found, sizeof(it->found), "/dev/shm cannot be read: %s",
                     strerror(-shm_err));
  } else if (shm_bytes < need) {
    it->state = LWSI_NODECHECK_WARN;
    lwsi_text_printf(it->found, sizeof(it->found),
                     "/dev/shm is %.0f MiB; NCCL's shared-memory transport needs at least %.0f "
                     "MiB for %u GPU(s)",
                     (double)shm_bytes / MIB, (double)need / MIB, gpus > 0 ? gpus : 1);
  } else {
    lwsi_text_printf(it->found, sizeof(it->found), "/dev/shm is %.0f MiB (%.0f MiB needed)",
                     (double)shm_bytes / MIB, (double)need / MIB);
    return;
  }
  lwsi_text_printf(it->fix, sizeof(it->fix),
                   "mount a memory-backed emptyDir on /dev/shm: volumes: [{name: dshm, emptyDir: "
                   "{medium: Memory, sizeLimit: %lluGi}}] and volumeMounts: [{name: dshm, "
                   "mountPath: /dev/shm}]",
                   (unsigned long long)ask_gib);
}

void lwsi_nodecheck_judge_gpus(struct lwsi_nodecheck_item *it, unsigned nodes, unsigned gpus,
                               bool strict)
{
  ok(it, "gpu-devices");
  if (gpus == 0 || nodes >= gpus) {
    lwsi_text_printf(it->found, sizeof(it->found), "%u GPU device node(s) /dev/nvidiaN%s", nodes,
                     gpus == 0 ? " (--gpus 0: not compared)" : "");
    return;
  }
  it->state = strict ? LWSI_NODECHECK_FAIL : LWSI_NODECHECK_WARN;
  lwsi_text_printf(it->found, sizeof(it->found),
                   "%u GPU device node(s) /dev/nvidiaN, fewer than --gpus %u", nodes, gpus);
  lwsi_text_printf(it->fix, sizeof(it->fix),
                   "request the GPUs in the container: resources: {limits: {nvidia.com/gpu: %u}} "
                   "(and leave NVIDIA_VISIBLE_DEVICES to the device plugin), or set --gpus to "
                   "what the node has",
                   gpus);
}

void lwsi_nodecheck_judge_rdma(struct lwsi_nodecheck_item *it,
                               const struct lwsi_nodecheck_rdma *rdma, bool strict)
{
  ok(it, "rdma-ports");
  if (rdma->uverbs == 0) {
    lwsi_text_printf(it->found, sizeof(it->found),
                     "no RDMA device given to the container (%zu port(s) in sysfs)", rdma->nports);
    return;
  }
  if (rdma->active > 0) {
    char list[200] = "";
    size_t o = 0;
    for (size_t i = 0; i < rdma->nports && o < sizeof(list); i++) {
      const struct lwsi_nodecheck_port *p = &rdma->ports[i];
      if (p->state != LWSI_NODECHECK_PORT_ACTIVE)
        continue;
      int w = snprintf(list + o, sizeof(list) - o, "%s%s:%u%s%s%s", o ? ", " : "", p->dev, p->port,
                       p->rate[0] ? " (" : "", p->rate, p->rate[0] ? ")" : "");
      if (w < 0)
        break;
      o += (size_t)w;
    }
    lwsi_text_printf(it->found, sizeof(it->found), "%u of %zu port(s) active: %s", rdma->active,
                     rdma->nports, list);
    return;
  }
  it->state = strict ? LWSI_NODECHECK_FAIL : LWSI_NODECHECK_WARN;
  lwsi_text_printf(it->found, sizeof(it->found),
                   "%u RDMA device(s) given (/dev/infiniband/uverbs*) but none of their %zu "
                   "port(s) is active",
                   rdma->uverbs, rdma->nports);
  lwsi_text_printf(it->fix, sizeof(it->fix),
                   "check the ports on the node (ibstat, ibv_devinfo: cable, switch, subnet "
                   "manager), or schedule on a node whose RDMA resource is healthy "
                   "(resources: {limits: {rdma/<resource>: 1}} of the RDMA device plugin)");
}

void lwsi_nodecheck_judge_memlock(struct lwsi_nodecheck_item *it,
                                  const struct lwsi_nodecheck_rdma *rdma, uint64_t limit,
                                  bool unlimited, bool ipc_lock)
{
  ok(it, "memlock");
  if (rdma->uverbs == 0) {
    lwsi_text_printf(it->found, sizeof(it->found), "not needed: no RDMA device given");
    return;
  }
  /* RDMA memory registration pins pages against RLIMIT_MEMLOCK unless the
   * process holds CAP_IPC_LOCK (drivers/infiniband/core/umem.c,
   * ib_umem_get; mlock(2)). */
  if (unlimited || ipc_lock) {
    lwsi_text_printf(it->found, sizeof(it->found), "%s",
                     unlimited ? "locked memory unlimited" : "CAP_IPC_LOCK held");
    return;
  }
  it->state = LWSI_NODECHECK_WARN;
  lwsi_text_printf(it->found, sizeof(it->found),
                   "locked memory limited to %llu KiB without CAP_IPC_LOCK: RDMA memory "
                   "registration will fail",
                   (unsigned long long)(limit / 1024));
  lwsi_text_printf(it->fix, sizeof(it->fix),
                   "add the capability: securityContext: {capabilities: {add: [IPC_LOCK]}}, or "
                   "raise the container runtime's limit (LimitMEMLOCK=infinity for containerd)");
}

/* Whether CAP_IPC_LOCK (14, linux/capability.h) is in our effective set,
 * as /proc/self/status's CapEff shows it. */
static bool has_ipc_lock(void)
{
  FILE *f = fopen("/proc/self/status", "re");
  if (f == NULL)
    return false;
  char line[256];
  bool held = false;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, "CapEff:", 7) == 0) {
      unsigned long long caps = strtoull(line + 7, NULL, 16);
      held = (caps >> 14) & 1;
      break;
    }
  }
  fclose(f);
  return held;
}

static void add(struct lwsi_nodecheck *nc, const struct lwsi_nodecheck_item *it)
{
  if (nc->n >= LWSI_NODECHECK_MAX)
    return;
  nc->items[nc->n++] = *it;
  if (it->state == LWSI_NODECHECK_WARN)
    nc->warnings++;
  else if (it->state == LWSI_NODECHECK_FAIL)
    nc->failures++;
}

void lwsi_nodecheck_run(struct lwsi_nodecheck *out, const char *root, unsigned gpus,
                        const struct lwsi_nodecheck_rdma *rdma, bool strict)
{
  memset(out, 0, sizeof(*out));
  struct lwsi_nodecheck_item it;
  unsigned nodes = lwsi_nodecheck_gpu_nodes(root);

  char path[512];
  lwsi_text_printf(path, sizeof(path), "%s/dev/shm", root);
  struct statvfs sv;
  int shm_err = statvfs(path, &sv) < 0 ? -errno : 0;
  lwsi_nodecheck_judge_shm(&it, shm_err, shm_err ? 0 : (uint64_t)sv.f_blocks * sv.f_frsize,
                           gpus > 0 ? gpus : nodes);
  add(out, &it);

  lwsi_nodecheck_judge_gpus(&it, nodes, gpus, strict);
  add(out, &it);

  lwsi_nodecheck_judge_rdma(&it, rdma, strict);
  add(out, &it);

  struct rlimit rl = {0, 0};
  if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0)
    rl.rlim_cur = 0;
  lwsi_nodecheck_judge_memlock(&it, rdma, (uint64_t)rl.rlim_cur, rl.rlim_cur == RLIM_INFINITY,
                               rdma->uverbs > 0 && has_ipc_lock());
  add(out, &it);
}

const struct lwsi_nodecheck_item *lwsi_nodecheck_worst(const struct lwsi_nodecheck *nc)
{
  const struct lwsi_nodecheck_item *warn = NULL;
  for (size_t i = 0; i < nc->n; i++) {
    if (nc->items[i].state == LWSI_NODECHECK_FAIL)
      return &nc->items[i];
    if (nc->items[i].state == LWSI_NODECHECK_WARN && warn == NULL)
      warn = &nc->items[i];
  }
  return warn;
}

void lwsi_nodecheck_failures(const struct lwsi_nodecheck *nc, char *buf, size_t len)
{
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < nc->n && o + 1 < len; i++) {
    const struct lwsi_nodecheck_item *it = &nc->items[i];
    if (it->state != LWSI_NODECHECK_FAIL)
      continue;
    int w = snprintf(buf + o, len - o, "%s%s: %s; fix: %s", o ? "; " : "", it->name, it->found,
                     it->fix);
    if (w < 0)
      break;
    o += (size_t)w;
  }
}
