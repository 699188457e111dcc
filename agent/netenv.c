/* Owns the engine's fast-network environment (include/lwsinit/netenv.h):
 * the interface that routes to the leader, the active RDMA ports, the RoCE
 * v2 GID of the node's address, and the variables that name them. */
#include "lwsinit/netenv.h"

#include "lwsinit/text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int lwsi_netenv_parse_gid(const char *text, uint8_t gid[16])
{
  /* sysfs's gids/N: eight groups of four hex digits joined by colons
   * (drivers/infiniband/core/sysfs.c, show_port_gid: "%pI6"). */
  size_t o = 0;
  const char *p = text;
  for (int g = 0; g < 8; g++) {
    int v = 0;
    for (int d = 0; d < 4; d++) {
      int x = lwsi_text_hexval(*p++);
      if (x < 0)
        return -EINVAL;
      v = v * 16 + x;
    }
    gid[o++] = (uint8_t)(v >> 8);
    gid[o++] = (uint8_t)v;
    if (g < 7 && *p++ != ':')
      return -EINVAL;
  }
  return (*p == '\0' || *p == '\n') ? 0 : -EINVAL;
}

bool lwsi_netenv_gid_is_ipv4(const uint8_t gid[16], struct in_addr addr)
{
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(gid, prefix, 12) == 0 && memcmp(gid + 12, &addr.s_addr, 4) == 0;
}

/* The GID tables are at most a few hundred entries (the port's
 * gid_tbl_len); unused entries read as all zeros, or fail with EINVAL
 * (their type file). */
#define GID_TABLE_MAX 256

int lwsi_netenv_gid_index(const char *root, const char *dev, unsigned port, struct in_addr addr)
{
  char path[600], text[128];
  for (int i = 0; i < GID_TABLE_MAX; i++) {
    lwsi_text_printf(path, sizeof(path), "%s/sys/class/infiniband/%s/ports/%u/gids/%d", root, dev,
                     port, i);
    int n = lwsi_nodecheck_read_file(path, text, sizeof(text));
    if (n == -ENOENT)
      break;
    uint8_t gid[16];
    if (n <= 0 || lwsi_netenv_parse_gid(text, gid) < 0 || !lwsi_netenv_gid_is_ipv4(gid, addr))
      continue;
    lwsi_text_printf(path, sizeof(path),
                     "%s/sys/class/infiniband/%s/ports/%u/gid_attrs/types/%d", root, dev, port, i);
    /* "RoCE v2" is the type of a GID usable over UDP/IP; "IB/RoCE v1"
     * is link-local Ethernet, which NCCL cannot route between subnets. */
    if (lwsi_nodecheck_read_file(path, text, sizeof(text)) > 0 && strcmp(text, "RoCE v2") == 0)
      return i;
  }
  return -ENOENT;
}

int lwsi_netenv_route_src(const char *ip, char *src, size_t len)
{
  struct sockaddr_storage ss;
  socklen_t sl;
  memset(&ss, 0, sizeof(ss));
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(9);
    sl = sizeof(*s4);
  } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(9);
    sl = sizeof(*s6);
  } else {
    return -EINVAL;
  }
  /* connect(2) on a UDP socket only picks the route and the source
   * address (ip(7), udp(7)); nothing goes on the wire. */
  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int rc;
  do
    rc = connect(fd, (struct sockaddr *)&ss, sl);
  while (rc < 0 && errno == EINTR);
  struct sockaddr_storage me;
  socklen_t ml = sizeof(me);
  if (rc == 0)
    rc = getsockname(fd, (struct sockaddr *)&me, &ml);
  int e = errno;
  close(fd);
  if (rc < 0)
    return -e;
  const void *a = me.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&me)->sin_addr
                                          : (const void *)&((struct sockaddr_in6 *)&me)->sin6_addr;
  if (inet_ntop(me.ss_family, a, src, (socklen_t)len) == NULL)
    return -errno;
  return 0;
}

int lwsi_netenv_iface_of(const char *ip, char *name, size_t len, bool *loopback)
{
  struct in_addr v4;
  struct in6_addr v6;
  int family;
  if (strncmp(ip, "::ffff:", 7) == 0 && inet_pton(AF_INET, ip + 7, &v4) == 1)
    family = AF_INET;
  else if (inet_pton(AF_INET, ip, &v4) == 1)
    family = AF_INET;
  else if (inet_pton(AF_INET6, ip, &v6) == 1)
    family = AF_INET6;
  else
    return -EINVAL;
  struct ifaddrs *list;
  if (getifaddrs(&list) < 0)
    return -errno;
  int rc = -ENOENT;
  for (struct ifaddrs *i = list; i != NULL; i = i->ifa_next) {
    if (i->ifa_addr == NULL || i->ifa_addr->sa_family != family)
      continue;
    bool same = family == AF_INET
                    ? ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr == v4.s_addr
                    : memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, &v6, 16) == 0;
    if (same) {
      lwsi_text_copy(name, len, i->ifa_name);
      *loopback = (i->ifa_flags & IFF_LOOPBACK) != 0;
      rc = 0;
      break;
    }
  }
  freeifaddrs(list);
  return rc;
}

static const char *user_value(char *const *envp, const char *name)
{
  size_t n = strlen(name);
  for (size_t i = 0; envp != NULL && envp[i] != NULL; i++)
    if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
      return envp[i] + n + 1;
  return NULL;
}

static struct lwsi_netenv_var *var(struct lwsi_netenv *ne, const char *name, char *const *envp)
{
  struct lwsi_netenv_var *v = &ne->vars[ne->n++];
  memset(v, 0, sizeof(*v));
  v->name = name;
  const char *user = user_value(envp, name);
  if (user != NULL) {
    v->kept = true;
    lwsi_text_copy(v->value, sizeof(v->value), user);
    lwsi_text_copy(v->reason, sizeof(v->reason), "kept: set by the user");
  }
  return v;
}

static void set(struct lwsi_netenv_var *v, const char *value, const char *reason)
{
  if (v->kept)
    return;
  v->set = true;
  lwsi_text_copy(v->value, sizeof(v->value), value);
  lwsi_text_copy(v->reason, sizeof(v->reason), reason);
  lwsi_text_printf(v->kv, sizeof(v->kv), "%s=%s", v->name, value);
}

static void unset(struct lwsi_netenv_var *v, const char *reason)
{
  if (!v->kept)
    lwsi_text_copy(v->reason, sizeof(v->reason), reason);
}

/* The interface, and this node's address on it, that NCCL's bootstrap
 * and socket transport should use: the one the kernel routes to the
 * leader by, or on the leader the one its workers reached. */
static void choose_iface(struct lwsi_netenv *ne, const struct lwsi_netenv_input *in,
                         struct lwsi_netenv_var *nccl, struct lwsi_netenv_var *gloo,
                         char *addr, size_t addrlen)
{
  char why[256], ifname[IF_NAMESIZE + 1] = "";
  bool lo = false;
  addr[0] = '\0';
  (void)ne;
  if (in->standalone) {
    unset(nccl, "standalone: no leader to route to");
    unset(gloo, "standalone: no leader to route to");
    return;
  }
  int rc;
  if (in->is_leader) {
    if (in->leader_addr == NULL || in->leader_addr[0] == '\0') {
      unset(nccl, "no worker has reached the leader yet");
      unset(gloo, "no worker has reached the leader yet");
      return;
    }
    lwsi_text_copy(addr, addrlen,
                   strncmp(in->leader_addr, "::ffff:", 7) == 0 ? in->leader_addr + 7
                                                                : in->leader_addr);
    rc = lwsi_netenv_iface_of(addr, ifname, sizeof(ifname), &lo);
    lwsi_text_printf(why, sizeof(why), "holds %s, the address the workers reached", addr);
  } else {
    rc = lwsi_netenv_route_src(in->leader_ip, addr, addrlen);
    if (rc == 0)
      rc = lwsi_netenv_iface_of(addr, ifname, sizeof(ifname), &lo);
    lwsi_text_printf(why, sizeof(why), "routes to the leader %s (from %s)", in->leader_ip, addr);
  }
  if (rc < 0) {
    lwsi_text_printf(why, sizeof(why), "no interface found for the route to the leader: %s",
                     strerror(-rc));
    unset(nccl, why);
    unset(gloo, why);
    addr[0] = '\0';
    return;
  }
  if (lo) {
    /* A leader reached over loopback is on this host: NCCL's own choice
     * (which skips lo) is the right one for the GPUs of other hosts. */
    unset(nccl, "the leader is on this host (loopback): NCCL's own choice kept");
    unset(gloo, "the leader is on this host (loopback): Gloo's own choice kept");
    return;
  }
  /* NCCL takes NCCL_SOCKET_IFNAME as a list of prefixes ("eth1" would also
   * match eth10); a leading '=' asks for the exact name (NCCL's
   * documentation, "Environment Variables"). Gloo takes exact names. */
  char value[IF_NAMESIZE + 2];
  lwsi_text_printf(value, sizeof(value), "=%s", ifname);
  set(nccl, value, why);
  set(gloo, ifname, why);
}

static void choose_rdma(const struct lwsi_netenv_input *in, struct lwsi_netenv_var *hca,
                        struct lwsi_netenv_var *gid, const char *addr)
{
  const struct lwsi_nodecheck_rdma *r = in->rdma;
  if (r == NULL || r->uverbs == 0) {
    unset(hca, "no RDMA device given to the container");
    unset(gid, "no RDMA device given to the container");
    return;
  }
  if (r->active == 0) {
    unset(hca, "no RDMA port is active");
    unset(gid, "no RDMA port is active");
    return;
  }
  /* "=mlx5_0:1,mlx5_1:1": the exact devices and ports (NCCL_IB_HCA, with
   * '=' for exact names as for NCCL_SOCKET_IFNAME). */
  char list[256] = "=";
  size_t o = 1;
  bool roce = false;
  for (size_t i = 0; i < r->nports; i++) {
    const struct lwsi_nodecheck_port *p = &r->ports[i];
    if (p->state != LWSI_NODECHECK_PORT_ACTIVE)
      continue;
    int w = snprintf(list + o, sizeof(list) - o, "%s%s:%u", o > 1 ? "," : "", p->dev, p->port);
    if (w < 0 || (size_t)w >= sizeof(list) - o)
      break;
    o += (size_t)w;
    roce = roce || p->ethernet;
  }
  char why[256];
  lwsi_text_printf(why, sizeof(why), "the active RDMA port(s) of the %u device(s) given",
                   r->uverbs);
  set(hca, list, why);
  if (!roce) {
    unset(gid, "InfiniBand: no GID index to choose");
    return;
  }
  struct in_addr a;
  if (addr[0] == '\0' || inet_pton(AF_INET, addr, &a) != 1) {
    unset(gid, "RoCE, but no IPv4 address of this node routes to the leader");
    return;
  }
  for (size_t i = 0; i < r->nports; i++) {
    const struct lwsi_nodecheck_port *p = &r->ports[i];
    if (p->state != LWSI_NODECHECK_PORT_ACTIVE || !p->ethernet)
      continue;
    int idx = lwsi_netenv_gid_index(in->root, p->dev, p->port, a);
    if (idx < 0)
      continue;
    char value[16];
    lwsi_text_printf(value, sizeof(value), "%d", idx);
    lwsi_text_printf(why, sizeof(why), "the RoCE v2 GID of %s on %s:%u", addr, p->dev, p->port);
    set(gid, value, why);
    return;
  }
  lwsi_text_printf(why, sizeof(why), "RoCE, but no active port has a RoCE v2 GID for %s", addr);
  unset(gid, why);
}

int lwsi_netenv_compute(struct lwsi_netenv *ne, const struct lwsi_netenv_input *in)
{
  memset(ne, 0, sizeof(*ne));
  struct lwsi_netenv_var *nccl = var(ne, "NCCL_SOCKET_IFNAME", in->envp);
  struct lwsi_netenv_var *gloo = var(ne, "GLOO_SOCKET_IFNAME", in->envp);
  struct lwsi_netenv_var *hca = var(ne, "NCCL_IB_HCA", in->envp);
  struct lwsi_netenv_var *gid = var(ne, "NCCL_IB_GID_INDEX", in->envp);
  char addr[64];
  choose_iface(ne, in, nccl, gloo, addr, sizeof(addr));
  choose_rdma(in, hca, gid, addr);
  ne->computed = true;
  return 0;
}

int lwsi_netenv_env(char *const *env, const struct lwsi_netenv *ne, char ***out)
{
  size_t n = 0;
  while (env != NULL && env[n] != NULL)
    n++;
  char **e = calloc(n + LWSI_NETENV_VARS + 1, sizeof(*e));
  if (e == NULL)
    return -ENOMEM;
  memcpy(e, env, n * sizeof(*e));
  for (size_t i = 0; i < ne->n; i++)
    if (ne->vars[i].set)
      e[n++] = (char *)ne->vars[i].kv;
  e[n] = NULL;
  *out = e;
  return 0;
}
