/* The engine's fast-network environment (contract, "Node check and network
 * environment"): the NCCL and Gloo variables that pick the interface and
 * the RDMA ports, worked out from the kernel (the route to the leader, the
 * addresses of the interfaces, sysfs's RDMA ports and GID tables) for the
 * variables the user left unset. The agent adds them to the engine's
 * environment only; nothing here logs. */
#ifndef LWSINIT_NETENV_H
#define LWSINIT_NETENV_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lwsinit/nodecheck.h"

#define LWSI_NETENV_VARS 4

struct lwsi_netenv_var {
  const char *name;  /* NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, NCCL_IB_HCA, NCCL_IB_GID_INDEX */
  bool set;          /* the agent sets it (value) */
  bool kept;         /* the user set it: left as it is */
  char value[256];   /* what the agent sets, or the user's value when kept */
  char reason[256];  /* why set, or why not */
  char kv[300];      /* "NAME=value" for the environment, when set */
};

struct lwsi_netenv {
  struct lwsi_netenv_var vars[LWSI_NETENV_VARS];
  size_t n;
  bool computed;
};

/* The facts the choice is made from. */
struct lwsi_netenv_input {
  const char *root;             /* "" on a real node */
  char *const *envp;            /* the agent's environment: what the user set */
  bool standalone;
  bool is_leader;
  const char *leader_ip;        /* worker: where the leader is */
  const char *leader_addr;      /* leader: its address as its workers reached it */
  const struct lwsi_nodecheck_rdma *rdma;
};

/* Parses a GID as sysfs writes it ("0000:0000:0000:0000:0000:ffff:c612:0001")
 * into 16 bytes. Returns 0 or -EINVAL. */
int lwsi_netenv_parse_gid(const char *text, uint8_t gid[16]);

/* Whether gid is the IPv4-mapped GID ::ffff:a.b.c.d of addr (network
 * order), as RoCE v2 GIDs of IPv4 addresses are. */
bool lwsi_netenv_gid_is_ipv4(const uint8_t gid[16], struct in_addr addr);

/* The index of the port's RoCE v2 GID that carries addr, read from
 * root/sys/class/infiniband/DEV/ports/PORT/gids/N and gid_attrs/types/N,
 * as rdma-core's show_gids reads them. Returns the index or -ENOENT. */
int lwsi_netenv_gid_index(const char *root, const char *dev, unsigned port, struct in_addr addr);

/* The local address the kernel would use to reach ip (a connected UDP
 * socket's getsockname; no packet is sent). Returns 0 or a negative
 * errno. */
int lwsi_netenv_route_src(const char *ip, char *src, size_t len);

/* The name of the interface holding address ip (getifaddrs). An
 * IPv4-mapped IPv6 text is taken as its IPv4 address. Returns 0,
 * -ENOENT or a negative errno. */
int lwsi_netenv_iface_of(const char *ip, char *name, size_t len, bool *loopback);

/* Works the variables out. Returns 0 (each variable says what happened). */
int lwsi_netenv_compute(struct lwsi_netenv *ne, const struct lwsi_netenv_input *in);

/* The engine's environment: env's strings (not copied) and the variables
 * set, in a new NULL-terminated array (free() it; the strings stay
 * ne's). Returns 0 or -ENOMEM. */
int lwsi_netenv_env(char *const *env, const struct lwsi_netenv *ne, char ***out);

#endif
