"""Preset mpi with a real MPI (Debian's Open MPI): three members, each
agent in a network namespace of its own on one bridge, so that mpirun
cannot take the hosts for local ones and must start its daemons through
`lwsinit rsh`; and `lwsinit rsh` itself: output, exit status, signals,
refusals, and a worker lost during a job."""
import os
import shutil
import signal
import subprocess

import lwsitest as lt
import netfix

MPICC = shutil.which("mpicc")
MPIRUN = shutil.which("mpirun")
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
# Open MPI refuses root without these (the tests run as root).
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
SUBNET = "198.19.77."


class Hosts:
    """Three network namespaces on a bridge in a fourth, addresses
    198.19.77.1-3/24: hosts that reach each other and nothing else."""

    def __init__(self, n=3):
        tag = "lwm%d" % os.getpid()
        self.sw = tag + "s"
        self.ns = ["%s%d" % (tag, i) for i in range(n)]
        self.ips = [SUBNET + str(i + 1) for i in range(n)]
        self.tag = tag

    def __enter__(self):
        sh = netfix.sh
        try:
            sh(netfix.IP, "netns", "add", self.sw)
            sh(netfix.IP, "-n", self.sw, "link", "add", "br0", "type", "bridge")
            sh(netfix.IP, "-n", self.sw, "link", "set", "br0", "up")
            for i, ns in enumerate(self.ns):
                a, b = "%sa%d" % (self.tag, i), "%sb%d" % (self.tag, i)
                sh(netfix.IP, "netns", "add", ns)
                sh(netfix.IP, "link", "add", a, "type", "veth", "peer", "name", b)
                sh(netfix.IP, "link", "set", a, "netns", self.sw)
                sh(netfix.IP, "link", "set", b, "netns", ns)
                sh(netfix.IP, "-n", self.sw, "link", "set", a, "master", "br0", "up")
                sh(netfix.IP, "-n", ns, "addr", "add", self.ips[i] + "/24", "dev", b)
                sh(netfix.IP, "-n", ns, "link", "set", b, "up")
                sh(netfix.IP, "-n", ns, "link", "set", "lo", "up")
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ns in self.ns + [self.sw]:
            netfix.sh(netfix.IP, "netns", "del", ns, check=False)

    def wrap(self, i):
        return [NSENTER, "--net=/var/run/netns/" + self.ns[i]]


def build_prog(t):
    if MPICC is None or MPIRUN is None:
        raise lt.Skip("no Open MPI here (apt-get install openmpi-bin libopenmpi-dev)")
    if not netfix.netns_available():
        raise lt.Skip("no network namespaces here (ip netns)")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mpi", "allreduce.c")
    out = t.path("allreduce")
    subprocess.run([MPICC, "-o", out, src], check=True)
    return out


def group(t, hosts, command, leader_env=None, worker_command=()):
    """The leader (rank 0) and two workers, each PID 1 of its own PID
    namespace in its own network namespace."""
    common = ["--leader", hosts.ips[0], "--size", "3", "--preset", "mpi",
              "--node-check", "off", "--rdzv-timeout", "60"]
    def env(r):
        # Each host its own temporary folder: the hosts share one
        # filesystem and hostname here, and Open MPI names its session
        # folders by hostname and (namespace-local, equal) pids.
        e = t.base_env()
        e.update(MPI_ENV)
        tmp = t.path("tmp%d" % r)
        os.makedirs(tmp, exist_ok=True)
        e["TMPDIR"] = tmp
        e["OMPI_MCA_btl"] = "self,tcp"
        if r == 0:
            e.update(leader_env or {})
        return e

    leader = t.agent(command, opts=common + ["--rank", "0"], testchild=False, pid1=True,
                     wrapper=hosts.wrap(0), env=env(0))
    workers = [t.agent(list(worker_command), opts=common + ["--rank", str(r)], testchild=False,
                       pid1=True, wrapper=hosts.wrap(r), env=env(r)) for r in (1, 2)]
    return leader, workers


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def sock_of(t, n):
    return t.path("status%d.sock" % n)


def rsh(t, hosts, host, words, sock_n=0, ns=0, timeout=30, **kw):
    env = dict(os.environ)
    env["LWSINIT_STATUS_SOCKET"] = sock_of(t, sock_n)
    return subprocess.run(hosts.wrap(ns) + [lt.LWSINIT, "rsh", host] + list(words), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout * lt.SCALE, **kw)


def stop(t, leader, workers):
    """A SIGTERM to the leader ends the group in order: its COMMAND ends
    with 143, and every worker exits with that status (a leader's stop is no
    loss, and preset mpi's workers end with the leader's COMMAND)."""
    leader.kill(signal.SIGTERM)
    t.eq(leader.wait(30), 128 + signal.SIGTERM, "the leader ends on SIGTERM")
    for w in workers:
        t.eq(w.wait(30), 128 + signal.SIGTERM, "a worker ends with the leader's COMMAND's status")


def wait_running(t, agents):
    for n, a in enumerate(agents):
        lt.wait_for(lambda: "serving the leader's MPI launcher" in a.stderr() or
                    "started the engine" in a.stderr(), 30, "agent %d launched" % n)


def t_allreduce(t):
    prog = build_prog(t)
    with Hosts() as hosts:
        leader, workers = group(t, hosts, [MPIRUN, "--hostfile", "{hostfile}", "-np", "3", prog])
        t.eq(leader.wait(60), 0, "the leader's exit status (mpirun's)")
        for w in workers:
            t.eq(w.wait(30), 0, "a worker ends with the leader's COMMAND's status")
        out = leader.stderr()
        for r in range(3):
            t.ok("rank %d of 3 on" % r in out and out.count(": sum 6") == 3,
                 "rank %d printed the sum 6 (1+2+3)" % r)
        started = sum(w.stderr().count("rsh request") for w in workers)
        t.ok(started >= 2, "each worker ran the daemon that mpirun sent through lwsinit rsh")
        with open(os.path.join(os.path.dirname(sock_of(t, 0)), "mpi-hostfile")) as f:
            t.eq(f.read(), "".join("%s slots=1\n" % ip for ip in hosts.ips),
                 "the hostfile: the leader first, one line per member")


def t_without_rsh_agent_fails(t):
    """The same job with Open MPI's rsh agent replaced by false(1): it
    fails, so the run above really went through lwsinit rsh."""
    prog = build_prog(t)
    with Hosts() as hosts:
        leader, workers = group(t, hosts, [MPIRUN, "--hostfile", "{hostfile}", "-np", "3", prog],
                                leader_env={"OMPI_MCA_plm_rsh_agent": "false"})
        rc = leader.wait(60)
        t.ok(rc != 0, "mpirun without lwsinit rsh fails (exit %s)" % rc)
        t.ok(": sum 6" not in leader.stderr(), "no rank ran")
        for w in workers:
            t.eq(w.wait(30), rc, "the workers end with the leader's status")


def t_rsh_plain(t):
    with Hosts() as hosts:
        leader, workers = group(t, hosts, ["sleep", "600"])
        wait_running(t, [leader] + workers)
        r = rsh(t, hosts, hosts.ips[1], ["echo out;", "echo err >&2;", "exit 3"])
        t.eq((r.stdout, r.stderr, r.returncode), ("out\n", "err\n", 3),
             "stdout, stderr and exit status of the remote command")
        r = rsh(t, hosts, hosts.ips[2], ["kill -9 $$"])
        t.eq(r.returncode, 128 + 9, "a remote command killed by SIGKILL: 128+9")
        r = subprocess.run(hosts.wrap(0) + [lt.LWSINIT, "rsh", "-l", "root", hosts.ips[0],
                                            "cat; echo leader-local"],
                           env=dict(os.environ, LWSINIT_STATUS_SOCKET=sock_of(t, 0)),
                           stdout=subprocess.PIPE, text=True, timeout=30 * lt.SCALE)
        t.eq((r.stdout, r.returncode), ("leader-local\n", 0),
             "-l is ignored; the leader's own address runs locally; stdin is closed")
        # 8 MiB through the relay: flow control and chunking keep it intact.
        r = subprocess.run(hosts.wrap(0) + [lt.LWSINIT, "rsh", hosts.ips[1],
                                            "head -c 8388608 /dev/zero | tr '\\0' x"],
                           env=dict(os.environ, LWSINIT_STATUS_SOCKET=sock_of(t, 0)),
                           stdout=subprocess.PIPE, timeout=60 * lt.SCALE)
        t.eq((len(r.stdout), set(r.stdout), r.returncode), (8 << 20, {ord("x")}, 0),
             "8 MiB of output arrive whole")
        # Refusals: exit 255 and one line that says why.
        r = rsh(t, hosts, "198.19.77.99", ["true"])
        t.ok(r.returncode == 255 and "not a member's address" in r.stderr,
             "an address that is not a member's is refused: %r" % r.stderr)
        r = rsh(t, hosts, hosts.ips[0], ["true"], sock_n=1, ns=1)
        t.ok(r.returncode == 255 and "not the group's leader" in r.stderr,
             "a worker's agent refuses: %r" % r.stderr)
        stop(t, leader, workers)


def t_rsh_no_preset(t):
    env = t.base_env()
    a = t.agent(["sleep", "600"], testchild=False, env=env)
    lt.wait_for(lambda: "started the engine" in a.stderr(), 30, "the agent launched")
    r = subprocess.run([lt.LWSINIT, "rsh", "127.0.0.1", "true"],
                       env=dict(os.environ, LWSINIT_STATUS_SOCKET=sock_of(t, 0)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=30 * lt.SCALE)
    t.ok(r.returncode == 255 and "--preset is not mpi" in r.stderr,
         "an agent without preset mpi refuses: %r" % r.stderr)
    a.kill(signal.SIGTERM)
    t.eq(a.wait(30), 128 + signal.SIGTERM, "the agent ends on SIGTERM")


def t_rsh_signal(t):
    with Hosts() as hosts:
        leader, workers = group(t, hosts, ["sleep", "600"])
        wait_running(t, [leader] + workers)
        mark = t.path("got-term")
        env = dict(os.environ, LWSINIT_STATUS_SOCKET=sock_of(t, 0))
        p = subprocess.Popen(hosts.wrap(0) + [lt.LWSINIT, "rsh", hosts.ips[2],
                                              "trap 'echo TERM > %s; exit 7' TERM;" % mark,
                                              "echo ready; while :; do sleep 0.05; done"],
                             env=env, stdout=subprocess.PIPE, text=True)
        t.procs.append(p)
        t.eq(p.stdout.readline(), "ready\n", "the remote command runs")
        p.send_signal(signal.SIGTERM)
        t.eq(p.wait(30 * lt.SCALE), 7, "the remote trap's exit status comes back")
        lt.wait_for(lambda: os.path.exists(mark), 10, "the remote shell got SIGTERM")
        # A client that goes away takes its remote command with it.
        p = subprocess.Popen(hosts.wrap(0) + [lt.LWSINIT, "rsh", hosts.ips[1],
                                              "echo $$; exec sleep 599"],
                             env=env, stdout=subprocess.PIPE, text=True)
        t.procs.append(p)
        pid_in_ns = p.stdout.readline().strip()
        t.ok(pid_in_ns.isdigit(), "the remote command started")
        # The shell prints its pid, then execs sleep: wait for the exec.
        lt.wait_for(lambda: [q for q in lt.all_pids() if cmdline(q) == ["sleep", "599"]], 10,
                    "the remote sleep runs")
        before = [q for q in lt.all_pids() if cmdline(q) == ["sleep", "599"]]
        t.eq(len(before), 1, "one remote sleep runs")
        p.kill()
        p.wait()
        lt.wait_for(lambda: not [q for q in before if lt.alive(q)], 10,
                    "the remote sleep ends with its client")
        stop(t, leader, workers)


def t_worker_killed(t):
    prog = build_prog(t)
    with Hosts() as hosts:
        leader, workers = group(t, hosts,
                                [MPIRUN, "--hostfile", "{hostfile}", "-np", "3", prog, "hang"])
        lt.wait_for(lambda: leader.stderr().count(": sum 6") == 3, 60, "every rank summed")
        ranks = [q for q in lt.all_pids() if lt.exe_of(q) == prog]
        t.eq(len(ranks), 3, "three MPI ranks run")
        workers[1].kill(signal.SIGKILL)
        t.eq(leader.wait(60), 6, "the leader exits 6: a member was lost")
        t.eq(workers[0].wait(60), 6, "the other worker exits 6")
        lt.wait_for(lambda: not [q for q in ranks if lt.alive(q)], 30,
                    "no MPI rank is left running")
        lt.wait_for(lambda: not [q for q in lt.all_pids() if (lt.exe_of(q) or "").endswith("orted")],
                    30, "no Open MPI daemon is left running")


if __name__ == "__main__":
    lt.main([
        ("an MPI_Allreduce over three members sums right on every rank", t_allreduce),
        ("the same job without lwsinit rsh as the rsh agent fails", t_without_rsh_agent_fails),
        ("lwsinit rsh: output, exit status, -l, 8 MiB, refusals", t_rsh_plain),
        ("lwsinit rsh to an agent without preset mpi is refused", t_rsh_no_preset),
        ("lwsinit rsh: a signal reaches the remote group; a lost client ends it",
         t_rsh_signal),
        ("a worker killed during the job ends the group and leaves nothing", t_worker_killed),
    ])
