/* The node check's and the network environment's parsing and judgement
 * (nodecheck.c, netenv.c): sysfs's port state and GID texts, the /dev/shm
 * rule, each check's verdict, and a prepared sysfs tree read as a node's. */
#include "lwsinit/netenv.h"
#include "lwsinit/nodecheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

static char root[256];

static void put(const char *rel, const char *text)
{
  char path[600], dir[600];
  snprintf(path, sizeof(path), "%s/%s", root, rel);
  /* mkdir -p of the file's folder */
  snprintf(dir, sizeof(dir), "%s", path);
  for (char *p = dir + strlen(root) + 1; *p != '\0'; p++) {
    if (*p == '/') {
      *p = '\0';
      mkdir(dir, 0755);
      *p = '/';
    }
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (write(fd, text, strlen(text)) < 0)
      perror("write");
    close(fd);
  }
}

static void test_port_state(void)
{
  TAP_OK(lwsi_nodecheck_port_state("4: ACTIVE") == 4, "'4: ACTIVE' is 4");
  TAP_OK(lwsi_nodecheck_port_state("1: DOWN") == 1, "'1: DOWN' is 1");
  TAP_OK(lwsi_nodecheck_port_state("ACTIVE") == -EINVAL, "no number: EINVAL");
  TAP_OK(lwsi_nodecheck_port_state("4 ACTIVE") == -EINVAL, "no colon: EINVAL");
  TAP_OK(lwsi_nodecheck_port_state("") == -EINVAL, "empty: EINVAL");
}

static void test_gid(void)
{
  uint8_t gid[16];
  struct in_addr a;
  inet_pton(AF_INET, "198.18.0.1", &a);
  TAP_OK(lwsi_netenv_parse_gid("0000:0000:0000:0000:0000:ffff:c612:0001", gid) == 0,
         "an IPv4-mapped GID parses");
  TAP_OK(lwsi_netenv_gid_is_ipv4(gid, a), "and is 198.18.0.1's");
  inet_pton(AF_INET, "198.18.0.2", &a);
  TAP_OK(!lwsi_netenv_gid_is_ipv4(gid, a), "and not 198.18.0.2's");
  TAP_OK(lwsi_netenv_parse_gid("fe80:0000:0000:0000:0202:c9ff:fe00:0001\n", gid) == 0,
         "a link-local GID parses (with sysfs's newline)");
  TAP_OK(!lwsi_netenv_gid_is_ipv4(gid, a), "and carries no IPv4 address");
  TAP_OK(lwsi_netenv_parse_gid("0000:0000", gid) == -EINVAL, "a short GID: EINVAL");
  TAP_OK(lwsi_netenv_parse_gid("0000:0000:0000:0000:0000:ffff:c612:00zz", gid) == -EINVAL,
         "not hex: EINVAL");
  TAP_OK(lwsi_netenv_parse_gid("0000:0000:0000:0000:0000:ffff:c612:0001:0000", gid) == -EINVAL,
         "a long GID: EINVAL");
}

static void test_shm_rule(void)
{
  /* 4 MiB + 4.6875 MiB + 512 KiB per connection, four per GPU. */
  uint64_t per_gpu = 4ull * ((4ull << 20) + 4915200ull + 524288ull);
  TAP_OK(lwsi_nodecheck_shm_need(1) == per_gpu, "one GPU needs %llu bytes (36.75 MiB)",
         (unsigned long long)per_gpu);
  TAP_OK(lwsi_nodecheck_shm_need(0) == per_gpu, "no GPU count sizes for one");
  TAP_OK(lwsi_nodecheck_shm_need(8) == 8 * per_gpu, "eight GPUs need eight times as much");

  struct lwsi_nodecheck_item it;
  lwsi_nodecheck_judge_shm(&it, 0, 64ull << 20, 8);
  TAP_OK(it.state == LWSI_NODECHECK_WARN, "64 MiB for 8 GPUs warns");
  TAP_OK(strstr(it.found, "64 MiB") != NULL && strstr(it.found, "294 MiB") != NULL,
         "found names the size and the need: %s", it.found);
  TAP_OK(strstr(it.fix, "medium: Memory") != NULL && strstr(it.fix, "sizeLimit: 1Gi") != NULL,
         "the fix is a memory-backed emptyDir of 1Gi");
  lwsi_nodecheck_judge_shm(&it, 0, 64ull << 20, 1);
  TAP_OK(it.state == LWSI_NODECHECK_OK && it.fix[0] == '\0', "64 MiB for one GPU passes");
  lwsi_nodecheck_judge_shm(&it, 0, 16ull << 30, 8);
  TAP_OK(it.state == LWSI_NODECHECK_OK, "16 GiB for 8 GPUs passes");
  lwsi_nodecheck_judge_shm(&it, -ENOENT, 0, 8);
  TAP_OK(it.state == LWSI_NODECHECK_WARN && strstr(it.found, "cannot be read") != NULL,
         "no /dev/shm warns");
  lwsi_nodecheck_judge_shm(&it, 0, 64ull << 20, 64);
  TAP_OK(strstr(it.fix, "sizeLimit: 3Gi") != NULL, "64 GPUs ask for 3Gi: %s", it.fix);
}

static void test_judges(void)
{
  struct lwsi_nodecheck_item it;
  lwsi_nodecheck_judge_gpus(&it, 2, 4, true);
  TAP_OK(it.state == LWSI_NODECHECK_FAIL && strstr(it.fix, "nvidia.com/gpu: 4") != NULL,
         "2 device nodes for --gpus 4 fail, the fix asks for 4");
  lwsi_nodecheck_judge_gpus(&it, 2, 4, false);
  TAP_OK(it.state == LWSI_NODECHECK_WARN, "and only warn under warn");
  lwsi_nodecheck_judge_gpus(&it, 0, 0, true);
  TAP_OK(it.state == LWSI_NODECHECK_OK, "--gpus 0 compares nothing");
  lwsi_nodecheck_judge_gpus(&it, 8, 8, true);
  TAP_OK(it.state == LWSI_NODECHECK_OK, "8 for 8 passes");

  struct lwsi_nodecheck_rdma r;
  memset(&r, 0, sizeof(r));
  r.nports = 2; /* the host's, in sysfs, none given */
  lwsi_nodecheck_judge_rdma(&it, &r, true);
  TAP_OK(it.state == LWSI_NODECHECK_OK, "ports in sysfs without uverbs: not the container's");
  lwsi_nodecheck_judge_memlock(&it, &r, 65536, false, false);
  TAP_OK(it.state == LWSI_NODECHECK_OK, "memlock does not matter without RDMA");
  r.uverbs = 1;
  snprintf(r.ports[0].dev, sizeof(r.ports[0].dev), "mlx5_0");
  r.ports[0].port = 1;
  r.ports[0].state = 1;
  lwsi_nodecheck_judge_rdma(&it, &r, true);
  TAP_OK(it.state == LWSI_NODECHECK_FAIL && strstr(it.found, "none of their") != NULL,
         "uverbs given, no port active: fail");
  r.ports[1] = r.ports[0];
  r.ports[1].state = 4;
  snprintf(r.ports[1].rate, sizeof(r.ports[1].rate), "400 Gb/sec (4X NDR)");
  r.active = 1;
  lwsi_nodecheck_judge_rdma(&it, &r, true);
  TAP_OK(it.state == LWSI_NODECHECK_OK && strstr(it.found, "400 Gb/sec") != NULL,
         "one active port passes, with its rate: %s", it.found);
  lwsi_nodecheck_judge_memlock(&it, &r, 65536, false, false);
  TAP_OK(it.state == LWSI_NODECHECK_WARN && strstr(it.fix, "IPC_LOCK") != NULL,
         "64 KiB memlock with RDMA warns, the fix adds IPC_LOCK");
  lwsi_nodecheck_judge_memlock(&it, &r, 65536, false, true);
  TAP_OK(it.state == LWSI_NODECHECK_OK, "CAP_IPC_LOCK lifts the limit");
  lwsi_nodecheck_judge_memlock(&it, &r, 0, true, false);
  TAP_OK(it.state == LWSI_NODECHECK_OK, "unlimited passes");
}

static void test_tree(void)
{
  snprintf(root, sizeof(root), "/tmp/lwsi_nodecheck_%d", (int)getpid());
  mkdir(root, 0755);
  put("dev/nvidia0", "");
  put("dev/nvidia1", "");
  put("dev/nvidiactl", "");
  put("dev/shm/.keep", "");
  put("dev/infiniband/uverbs0", "");
  put("sys/class/infiniband/mlx5_1/ports/1/state", "1: DOWN\n");
  put("sys/class/infiniband/mlx5_1/ports/1/link_layer", "Ethernet\n");
  put("sys/class/infiniband/mlx5_0/ports/1/state", "4: ACTIVE\n");
  put("sys/class/infiniband/mlx5_0/ports/1/link_layer", "Ethernet\n");
  put("sys/class/infiniband/mlx5_0/ports/1/rate", "200 Gb/sec (4X HDR)\n");
  const char *g = "sys/class/infiniband/mlx5_0/ports/1/";
  char rel[200];
  const char *gids[] = {"fe80:0000:0000:0000:0202:c9ff:fe00:0001",
                        "fe80:0000:0000:0000:0202:c9ff:fe00:0001",
                        "0000:0000:0000:0000:0000:ffff:c612:0001",
                        "0000:0000:0000:0000:0000:ffff:c612:0001"};
  const char *types[] = {"IB/RoCE v1", "RoCE v2", "IB/RoCE v1", "RoCE v2"};
  for (int i = 0; i < 4; i++) {
    snprintf(rel, sizeof(rel), "%sgids/%d", g, i);
    put(rel, gids[i]);
    snprintf(rel, sizeof(rel), "%sgid_attrs/types/%d", g, i);
    put(rel, types[i]);
  }
  TAP_OK(lwsi_nodecheck_gpu_nodes(root) == 2, "nvidia0 and nvidia1 count, nvidiactl does not");
  struct lwsi_nodecheck_rdma r;
  TAP_OK(lwsi_nodecheck_rdma_scan(root, &r) == 0, "the tree scans");
  TAP_OK(r.uverbs == 1 && r.nports == 2 && r.active == 1, "1 uverbs, 2 ports, 1 active");
  TAP_STR_EQ(r.ports[0].dev, "mlx5_0", "ports sorted by device");
  TAP_OK(r.ports[0].ethernet && strcmp(r.ports[0].rate, "200 Gb/sec (4X HDR)") == 0,
         "link layer and rate read");

  struct in_addr a;
  inet_pton(AF_INET, "198.18.0.1", &a);
  TAP_OK(lwsi_netenv_gid_index(root, "mlx5_0", 1, a) == 3,
         "the RoCE v2 GID of 198.18.0.1 is index 3 (2 is v1)");
  inet_pton(AF_INET, "198.18.0.9", &a);
  TAP_OK(lwsi_netenv_gid_index(root, "mlx5_0", 1, a) == -ENOENT, "no GID for another address");

  struct lwsi_nodecheck nc;
  lwsi_nodecheck_run(&nc, root, 4, &r, true);
  TAP_OK(nc.n == 4, "four checks ran");
  const struct lwsi_nodecheck_item *w = lwsi_nodecheck_worst(&nc);
  TAP_OK(w != NULL && strcmp(w->name, "gpu-devices") == 0 && w->state == LWSI_NODECHECK_FAIL,
         "2 device nodes for --gpus 4: the worst is gpu-devices");
  char line[1024];
  lwsi_nodecheck_failures(&nc, line, sizeof(line));
  TAP_OK(strncmp(line, "gpu-devices: 2 GPU device node(s)", 33) == 0 &&
             strstr(line, "fix: request the GPUs") != NULL,
         "the failure line names the check, what was found and the fix: %s", line);

  /* The environment: a standalone agent sets no interface; the active port
   * becomes NCCL_IB_HCA; the user's own value is kept. */
  char *envp[] = {"PATH=/bin", "NCCL_IB_HCA=mlx5_9", NULL};
  struct lwsi_netenv ne;
  struct lwsi_netenv_input in = {.root = root, .envp = envp, .standalone = true, .rdma = &r};
  lwsi_netenv_compute(&ne, &in);
  TAP_OK(ne.n == 4 && !ne.vars[0].set && strstr(ne.vars[0].reason, "standalone") != NULL,
         "standalone: NCCL_SOCKET_IFNAME not set");
  TAP_OK(ne.vars[2].kept && strcmp(ne.vars[2].value, "mlx5_9") == 0 &&
             strcmp(ne.vars[2].reason, "kept: set by the user") == 0,
         "the user's NCCL_IB_HCA is kept");
  char *envp2[] = {"PATH=/bin", NULL};
  in.envp = envp2;
  lwsi_netenv_compute(&ne, &in);
  TAP_STR_EQ(ne.vars[2].value, "=mlx5_0:1", "NCCL_IB_HCA lists the active port exactly");
  TAP_OK(!ne.vars[3].set, "no GID index without an address that routes to the leader");
  char **full;
  TAP_OK(lwsi_netenv_env(envp2, &ne, &full) == 0, "the environment builds");
  TAP_STR_EQ(full[0], "PATH=/bin", "the user's variables first");
  TAP_STR_EQ(full[1], "NCCL_IB_HCA==mlx5_0:1", "then what the agent set");
  TAP_OK(full[2] == NULL, "and nothing else");
  free(full);

  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
  TAP_OK(system(cmd) == 0, "the tree is removed");
}

static void test_route(void)
{
  char src[64], ifname[32];
  bool lo = false;
  TAP_OK(lwsi_netenv_route_src("127.0.0.1", src, sizeof(src)) == 0 && strcmp(src, "127.0.0.1") == 0,
         "the route to 127.0.0.1 leaves from 127.0.0.1");
  TAP_OK(lwsi_netenv_iface_of("127.0.0.1", ifname, sizeof(ifname), &lo) == 0 && lo,
         "127.0.0.1 is on the loopback interface %s", ifname);
  TAP_OK(lwsi_netenv_iface_of("::ffff:127.0.0.1", ifname, sizeof(ifname), &lo) == 0 && lo,
         "an IPv4-mapped address is taken as its IPv4 address");
  TAP_OK(lwsi_netenv_iface_of("not an address", ifname, sizeof(ifname), &lo) == -EINVAL,
         "not an address: EINVAL");
  TAP_OK(lwsi_netenv_route_src("nonsense", src, sizeof(src)) == -EINVAL, "route to nonsense: EINVAL");
}

int main(void)
{
  test_port_state();
  test_gid();
  test_shm_rule();
  test_judges();
  test_tree();
  test_route();
  return tap_done();
}
