"""The node check (--node-check) and the engine's network environment
(--network-env), on nodes made with the kernel's own mechanisms: a private
mount namespace (unshare -m) gives the agent its own /dev (a small tmpfs on
/dev/shm, files named /dev/nvidiaN and /dev/infiniband/uverbs0) and its own
/sys/class (a prepared RDMA tree); prlimit and setpriv give it a
locked-memory limit without CAP_IPC_LOCK; network namespaces with veth
pairs give it interfaces other than eth0. The real /dev and /sys are never
touched: every mount is made inside the namespace, whose mounts are private
(unshare(1)'s default propagation)."""
import json
import os
import shutil
import subprocess

import lwsitest as lt
import netfix
from test_group import Group

SETPRIV = shutil.which("setpriv")
PRLIMIT = shutil.which("prlimit")

# Builds the node inside the new mount namespace, then execs the rest:
# $0 the prepared folder (dev/ files to create, sys/ the /sys/class tree),
# $1 the size of /dev/shm.
NODE_SH = r'''
set -e
D=$0; SHM=$1; shift
mkdir -p "$D/newdev"
mount -t tmpfs -o mode=755 lwsit-dev "$D/newdev"
for n in null zero full random urandom tty; do
  [ -e "/dev/$n" ] || continue
  : > "$D/newdev/$n"; mount --bind "/dev/$n" "$D/newdev/$n"
done
ln -s /proc/self/fd "$D/newdev/fd"
mkdir "$D/newdev/shm"
mount -t tmpfs -o "size=$SHM" lwsit-shm "$D/newdev/shm"
for f in $(cat "$D/devices"); do
  mkdir -p "$(dirname "$D/newdev/$f")"; : > "$D/newdev/$f"
done
mount --rbind "$D/newdev" /dev
mount --bind "$D/sys" /sys/class
exec "$@"
'''

GID_V2_OF = "0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def node(t, name, shm="1g", devices=(), ports=(), memlock=None, no_ipc_lock=False):
    """The wrapper argv for an agent on a node of its own: /dev/shm of size
    shm, the device files devices (relative to /dev), RDMA ports (dev,
    port, state text, link layer, [(gid, type)]), and optionally a
    memlock limit in bytes without CAP_IPC_LOCK."""
    d = t.path(name)
    os.makedirs(d + "/sys/infiniband", exist_ok=True)
    write(d + "/devices", "\n".join(devices) + "\n")
    for dev, port, state, layer, gids in ports:
        p = "%s/sys/infiniband/%s/ports/%d/" % (d, dev, port)
        write(p + "state", state + "\n")
        write(p + "link_layer", layer + "\n")
        write(p + "rate", "200 Gb/sec (4X HDR)\n")
        for i, (gid, typ) in enumerate(gids):
            write(p + "gids/%d" % i, gid + "\n")
            write(p + "gid_attrs/types/%d" % i, typ + "\n")
    w = [lt.UNSHARE, "-m", "sh", "-c", NODE_SH, d, shm]
    if no_ipc_lock:
        w += [SETPRIV, "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock"]
    if memlock is not None:
        w += [PRLIMIT, "--memlock=%d:%d" % (memlock, memlock)]
    return w


# The engine: writes its whole environment (whole: a rename), then waits
# for signals. One script for every rank of a group (the launch digest
# compares it); $1 is the folder, the rank comes from LWSINIT_RANK.
ENGINE = ('env > "$1/env-$2-$LWSINIT_RANK.tmp" && mv "$1/env-$2-$LWSINIT_RANK.tmp" '
          '"$1/env-$2-$LWSINIT_RANK" && exec "$0" signals "$1/sig-$2-$LWSINIT_RANK"')


def engine(t, tag):
    return ["sh", "-c", ENGINE, lt.TESTCHILD, t.tmp, tag]


def engine_env(t, tag, rank=0, timeout=10):
    """The engine's environment as "env.NAME" keys, once it started."""
    path = t.path("env-%s-%d" % (tag, rank))
    lt.wait_for(lambda: os.path.exists(path), timeout, "the engine (%s) to start" % tag)
    out = {}
    with open(path) as f:
        for line in f.read().splitlines():
            k, _, v = line.partition("=")
            out["env." + k] = v
    return out


def status_of(a, timeout=5):
    port = int(a_env(a)["LWSINIT_PROBE_ADDR"].rsplit(":", 1)[1])
    code, body = lt.wait_for(
        lambda: (lambda r: r if r[0] == 200 else None)(lt.http_status("127.0.0.1", port, "/status",
                                                                      body=True)),
        timeout, "/status")
    return json.loads(body)


def metrics_of(a):
    port = int(a_env(a)["LWSINIT_PROBE_ADDR"].rsplit(":", 1)[1])
    return lt.http_status("127.0.0.1", port, "/metrics", body=True)[1]


def a_env(a):
    return a.env


def start(t, command, opts=(), wrapper=(), extra_env=None):
    env = t.base_env()
    env["LWSINIT_STATUS_SOCKET"] = t.path("status-%d.sock" % len(t.agents))
    if extra_env:
        env.update(extra_env)
    a = t.agent(command, opts=list(opts), env=env, testchild=False, wrapper=wrapper)
    a.env = env
    return a


def checks(doc):
    return {c["name"]: c for c in doc["node_check"]["checks"]}


ACTIVE_ROCE = ("mlx5_0", 1, "4: ACTIVE", "Ethernet",
               [("fe80:0000:0000:0000:0202:c9ff:fe00:0001", "IB/RoCE v1"),
                ("fe80:0000:0000:0000:0202:c9ff:fe00:0001", "RoCE v2")])


def t_all_pass(t):
    """A node with what NCCL needs: every check ok, the active RDMA port
    becomes NCCL_IB_HCA; standalone, no interface is chosen."""
    w = node(t, "n", shm="1g", devices=["nvidia0", "nvidia1", "infiniband/uverbs0"],
             ports=[ACTIVE_ROCE, ("mlx5_1", 1, "1: DOWN", "Ethernet", [])])
    a = start(t, engine(t, "e"), opts=["--gpus", "2"], wrapper=w)
    env = engine_env(t, "e")
    doc = status_of(a)
    nc = doc["node_check"]
    t.eq((nc["mode"], nc["passed"], nc["warnings"], nc["failures"]), ("fail", True, 0, 0),
         "node_check: mode fail, passed, no warning")
    c = checks(doc)
    t.eq(sorted(c), ["gpu-devices", "memlock", "rdma-ports", "shm"], "the four checks")
    t.ok(all(x["state"] == "ok" and x["fix"] is None for x in c.values()), "all ok, no fix")
    t.ok("1 of 2 port(s) active: mlx5_0:1" in c["rdma-ports"]["found"],
         "rdma-ports names the active port: %s" % c["rdma-ports"]["found"])
    t.ok("1024 MiB" in c["shm"]["found"], "shm found 1024 MiB: %s" % c["shm"]["found"])
    t.eq(env.get("env.NCCL_IB_HCA"), "=mlx5_0:1", "the engine got NCCL_IB_HCA")
    t.ok("env.NCCL_SOCKET_IFNAME" not in env, "standalone: no NCCL_SOCKET_IFNAME")
    v = doc["network_env"]["variables"]
    t.eq(v["NCCL_IB_HCA"]["value"], "=mlx5_0:1", "network_env shows NCCL_IB_HCA")
    t.ok(v["NCCL_SOCKET_IFNAME"]["value"] is None and "standalone" in
         v["NCCL_SOCKET_IFNAME"]["reason"], "and why NCCL_SOCKET_IFNAME is not set")
    m = metrics_of(a)
    t.ok("lwsinit_node_check_passed 1" in m and "lwsinit_node_check_warnings 0" in m,
         "metrics: passed 1, warnings 0")
    r = subprocess.run([lt.LWSINIT, "status", "--socket", a.env["LWSINIT_STATUS_SOCKET"]],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10)
    t.ok("node     check fail: passed" in r.stdout and "netenv   auto: NCCL_IB_HCA==mlx5_0:1"
         in r.stdout, "lwsinit status has the node and netenv lines:\n" + r.stdout)


def t_risks_warn(t):
    """/dev/shm of 64 MiB for 8 GPUs and a 64 KiB memlock limit without
    CAP_IPC_LOCK with RDMA given: two warnings, each with its fix; the
    engine starts."""
    if SETPRIV is None or PRLIMIT is None:
        raise lt.Skip("setpriv or prlimit missing")
    w = node(t, "n", shm="64m", devices=["nvidia%d" % i for i in range(8)] + ["infiniband/uverbs0"],
             ports=[ACTIVE_ROCE], memlock=65536, no_ipc_lock=True)
    a = start(t, engine(t, "e"), opts=["--gpus", "8"], wrapper=w)
    engine_env(t, "e")
    doc = status_of(a)
    c = checks(doc)
    t.eq((c["shm"]["state"], c["memlock"]["state"], c["gpu-devices"]["state"]),
         ("warn", "warn", "ok"), "shm and memlock warn, the GPUs pass")
    t.ok("64 MiB" in c["shm"]["found"] and "294 MiB" in c["shm"]["found"],
         "shm: found and needed: %s" % c["shm"]["found"])
    t.ok("medium: Memory" in c["shm"]["fix"], "shm's fix: a memory-backed emptyDir")
    t.ok("64 KiB" in c["memlock"]["found"] and "IPC_LOCK" in c["memlock"]["fix"],
         "memlock: the limit and the IPC_LOCK fix")
    t.eq((doc["node_check"]["passed"], doc["node_check"]["warnings"]), (True, 2),
         "passed with 2 warnings")
    err = a.stderr()
    t.ok(err.count("warn: node check shm") == 1 and err.count("warn: node check memlock") == 1,
         "one log line per warning")
    t.ok("lwsinit_node_check_warnings 2" in metrics_of(a), "metrics: 2 warnings")


def t_gpu_devices_fail(t):
    """Fewer GPU device nodes than --gpus: exit 5 with one line naming the
    check, what was found and the fix; under warn the engine starts; under
    off nothing is checked."""
    w = node(t, "n", devices=["nvidia0"])
    a = start(t, engine(t, "e"), opts=["--gpus", "2"], wrapper=w)
    t.agent_rc(a, 5)
    errs = [ln for ln in a.stderr().splitlines() if " error: " in ln]
    t.eq(len(errs), 1, "one error line")
    t.ok("the node check failed: gpu-devices: 1 GPU device node(s) /dev/nvidiaN, fewer than "
         "--gpus 2" in errs[0] and "nvidia.com/gpu: 2" in errs[0],
         "it names the check, what was found and the fix: %s" % errs[0])
    t.ok(not os.path.exists(t.path("env-e-0")), "the engine never started")

    w = node(t, "n2", devices=["nvidia0"])
    a = start(t, engine(t, "w"), opts=["--gpus", "2", "--node-check", "warn"], wrapper=w)
    engine_env(t, "w")
    c = checks(status_of(a))
    t.eq(c["gpu-devices"]["state"], "warn", "--node-check warn: a warning")
    t.ok("warn: node check gpu-devices" in a.stderr(), "logged as a warning")

    w = node(t, "n3", devices=["nvidia0"])
    a = start(t, engine(t, "o"), opts=["--gpus", "2"], wrapper=w,
              extra_env={"LWSINIT_NODE_CHECK": "off"})
    engine_env(t, "o")
    nc = status_of(a)["node_check"]
    t.eq((nc["mode"], nc["passed"], nc["checks"]), ("off", None, []),
         "LWSINIT_NODE_CHECK=off: nothing checked")
    t.ok("node check" not in a.stderr(), "nothing logged")


def t_rdma_ports_down(t):
    """RDMA devices given to the container but no port active: exit 5
    naming rdma-ports."""
    w = node(t, "n", devices=["infiniband/uverbs0", "infiniband/uverbs1"],
             ports=[("mlx5_0", 1, "1: DOWN", "InfiniBand", []),
                    ("mlx5_1", 1, "2: INIT", "InfiniBand", [])])
    a = start(t, engine(t, "e"), wrapper=w)
    t.agent_rc(a, 5)
    t.ok("rdma-ports: 2 RDMA device(s) given (/dev/infiniband/uverbs*) but none of their 2 "
         "port(s) is active" in a.stderr(), "the line names rdma-ports")


def t_no_rdma(t):
    """A node without RDMA (this machine as it is): no RDMA variable set,
    nothing warned about RDMA or memlock."""
    if os.path.exists("/dev/infiniband"):
        raise lt.Skip("this machine has RDMA devices")
    a = start(t, engine(t, "e"))
    env = engine_env(t, "e")
    t.ok(not any(k.startswith("env.NCCL_") or k.startswith("env.GLOO_") for k in env),
         "no NCCL or Gloo variable in the engine's environment")
    doc = status_of(a)
    c = checks(doc)
    t.eq((c["rdma-ports"]["state"], c["memlock"]["state"]), ("ok", "ok"),
         "rdma-ports and memlock ok")
    t.ok("node check rdma" not in a.stderr() and "node check memlock" not in a.stderr(),
         "nothing logged about RDMA")
    v = doc["network_env"]["variables"]
    t.eq(v["NCCL_IB_HCA"]["reason"], "no RDMA device given to the container",
         "network_env says why NCCL_IB_HCA is not set")


def t_group_member_fails(t):
    """In a group of 4 with --gpus 1, ranks 2 and 3 have no GPU device
    node: they still join, and every member exits 5 with the leader's one
    line naming both and their check. No engine starts."""
    g = Group(t, 4)
    for r in range(4):
        w = node(t, "n%d" % r, devices=["nvidia0"] if r < 2 else [])
        g.start(r, leader="127.0.0.1", env={"LWSINIT_GPUS": "1"}, wrapper=tuple(w),
                engine=engine(t, "g"))
    for r in range(4):
        t.agent_rc(g.agents[r], 5, timeout=20)
    line = [ln for ln in g.agents[0].stderr().splitlines() if " error: " in ln]
    t.eq(len(line), 1, "the leader's one error line")
    t.ok("the node check failed on 2 of 4 members: rank 2 (pod pod-2): gpu-devices: 0 GPU "
         "device node(s)" in line[0] and "rank 3 (pod pod-3): gpu-devices" in line[0],
         "it names each failed member and check: %s" % line[0])
    for r in (1, 2, 3):
        t.ok("rank 2 (pod pod-2)" in g.agents[r].stderr(), "rank %d says it too" % r)
    t.ok(not any(os.path.exists(t.path("env-g-%d" % r)) for r in range(4)), "no engine started")


def t_group_interfaces(t):
    """A worker in a network namespace reaches the leader over a veth pair:
    its engine gets the veth as GLOO_SOCKET_IFNAME, keeps the user's own
    NCCL_SOCKET_IFNAME, and on RoCE the GID index of its address; the
    leader's engine gets the interface its worker reached."""
    if not netfix.netns_available():
        raise lt.Skip("no network namespaces here (ip netns)")
    with netfix.Netns() as ns:
        g = Group(t, 2)
        g.start(0, leader=ns.host_ip, engine=engine(t, "g"))
        o = [int(x) for x in ns.ns_ip.split(".")]
        w = node(t, "n", devices=["infiniband/uverbs0"],
                 ports=[("mlx5_0", 1, "4: ACTIVE", "Ethernet",
                         [("fe80:0000:0000:0000:0202:c9ff:fe00:0001", "IB/RoCE v1"),
                          (GID_V2_OF % tuple(o), "IB/RoCE v1"),
                          (GID_V2_OF % tuple(o), "RoCE v2")])])
        g.start(1, leader=ns.host_ip, env={"NCCL_SOCKET_IFNAME": "usersif"},
                wrapper=tuple([netfix.IP, "netns", "exec", ns.name] + w), engine=engine(t, "g"))
        s0, s1 = engine_env(t, "g", 0, timeout=20), engine_env(t, "g", 1, timeout=20)
        t.eq(s0.get("env.NCCL_SOCKET_IFNAME"), "=" + ns.host_if,
             "the leader: the interface its worker reached")
        t.eq(s0.get("env.GLOO_SOCKET_IFNAME"), ns.host_if, "and for Gloo")
        t.eq(s1.get("env.NCCL_SOCKET_IFNAME"), "usersif", "the worker: the user's own kept")
        t.eq(s1.get("env.GLOO_SOCKET_IFNAME"), ns.ns_if, "Gloo: the veth to the leader")
        t.eq(s1.get("env.NCCL_IB_HCA"), "=mlx5_0:1", "NCCL_IB_HCA: the active port")
        t.eq(s1.get("env.NCCL_IB_GID_INDEX"), "2", "the RoCE v2 GID of the worker's address")
        t.ok("network: NCCL_SOCKET_IFNAME=usersif kept: set by the user" in
             g.agents[1].stderr(), "the worker logs what it kept")
        code, body = g.get(0, "/status")
        v = json.loads(body)["network_env"]["variables"]
        t.ok(v["NCCL_SOCKET_IFNAME"]["value"] == "=" + ns.host_if and "the workers reached" in
             v["NCCL_SOCKET_IFNAME"]["reason"], "the leader's status says why: %s" % v)


if __name__ == "__main__":
    lt.main([
        ("a node with all NCCL needs passes every check", t_all_pass),
        ("small /dev/shm and a memlock limit with RDMA warn", t_risks_warn),
        ("fewer GPU device nodes than --gpus: exit 5; warn and off", t_gpu_devices_fail),
        ("RDMA given with no active port: exit 5", t_rdma_ports_down),
        ("a node without RDMA: nothing set, nothing warned", t_no_rdma),
        ("a group names every member whose node check failed", t_group_member_fails),
        ("interfaces, the user's own variable and the RoCE GID in a group",
         t_group_interfaces),
    ])
