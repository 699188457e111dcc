#!/usr/bin/env python3
"""Benchmark of `lwsinit rsh` (preset mpi), against ssh.

- Round trip of `true`: `lwsinit rsh WORKER true` from the leader's
  network namespace to a worker in another (a group of two agents,
  preset mpi, on a bridge of their own), against `ssh -p PORT
  root@127.0.0.1 true` to an sshd (Debian openssh-server) that this script
  starts on a loopback port with a throwaway host key and key pair, and
  stops after.
- Throughput: 1 GiB of output from the remote process (`head -c 1G
  /dev/zero`), read to /dev/null, both ways.

Not a CI test: run as root, `python3 tests/bench/rsh_bench.py BUILD/agent/lwsinit`.
It rewrites only its own section of docs/benchmarks.md, between
<!-- rsh-bench:begin --> and <!-- rsh-bench:end -->.
"""
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN = "<!-- rsh-bench:begin -->"
END = "<!-- rsh-bench:end -->"
IP = shutil.which("ip") or "/usr/sbin/ip"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
RUNS = 50
GIB = 1 << 30


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


class Net:
    def __init__(self):
        t = "lwb%d" % os.getpid()
        self.t, self.sw, self.ns = t, t + "s", [t + "0", t + "1"]
        self.ips = ["198.19.78.1", "198.19.78.2"]

    def __enter__(self):
        sh(IP, "netns", "add", self.sw)
        sh(IP, "-n", self.sw, "link", "add", "br0", "type", "bridge")
        sh(IP, "-n", self.sw, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns):
            a, b = "%sa%d" % (self.t, i), "%sb%d" % (self.t, i)
            sh(IP, "netns", "add", ns)
            sh(IP, "link", "add", a, "type", "veth", "peer", "name", b)
            sh(IP, "link", "set", a, "netns", self.sw)
            sh(IP, "link", "set", b, "netns", ns)
            sh(IP, "-n", self.sw, "link", "set", a, "master", "br0", "up")
            sh(IP, "-n", ns, "addr", "add", self.ips[i] + "/24", "dev", b)
            sh(IP, "-n", ns, "link", "set", b, "up")
            sh(IP, "-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc):
        for ns in self.ns + [self.sw]:
            sh(IP, "netns", "del", ns, check=False)

    def wrap(self, i):
        return [NSENTER, "--net=/var/run/netns/" + self.ns[i]]


def timed(argv, env=None, stdout=subprocess.DEVNULL):
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (argv, r.returncode, r.stderr[-500:]))
    return dt


def round_trips(argv, env=None):
    timed(argv, env)  # warm
    return [timed(argv, env) for _ in range(RUNS)]


def summary(xs):
    xs = sorted(xs)
    return statistics.median(xs) * 1e3, xs[int(len(xs) * 0.9)] * 1e3


def start_sshd(tmp):
    key = os.path.join(tmp, "id")
    hostkey = os.path.join(tmp, "hostkey")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey)
    auth = os.path.join(tmp, "authorized_keys")
    shutil.copy(key + ".pub", auth)
    os.chmod(auth, 0o600)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = os.path.join(tmp, "sshd_config")
    with open(conf, "w") as f:
        f.write("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\n"
                "PermitRootLogin prohibit-password\nUsePAM no\nPidFile %s/sshd.pid\n"
                "StrictModes no\nLogLevel ERROR\n" % (port, hostkey, auth, tmp))
    os.makedirs("/run/sshd", exist_ok=True)
    p = subprocess.Popen([SSHD, "-D", "-e", "-f", conf], stderr=subprocess.DEVNULL)
    ssh = ["ssh", "-q", "-i", key, "-p", str(port), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "root@127.0.0.1"]
    deadline = time.monotonic() + 10
    while subprocess.run(ssh + ["true"], stderr=subprocess.DEVNULL).returncode != 0:
        if time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("sshd did not answer")
        time.sleep(0.1)
    return p, ssh


def main():
    lwsinit = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                              os.path.join(REPO, "build", "agent", "lwsinit"))
    tmp = tempfile.mkdtemp(prefix="rsh-bench-")
    procs = []
    res = {}
    try:
        with Net() as net:
            common = ["--leader", net.ips[0], "--size", "2", "--preset", "mpi",
                      "--node-check", "off", "--log-level", "warn"]
            for r in (0, 1):
                cmd = ["sleep", "3600"] if r == 0 else []
                argv = net.wrap(r) + [lwsinit] + common + [
                    "--rank", str(r), "--status-socket", os.path.join(tmp, "s%d/status.sock" % r),
                    "--"] + cmd
                procs.append(subprocess.Popen(argv, stderr=open(os.path.join(tmp, "a%d" % r), "w")))
            env = dict(os.environ, LWSINIT_STATUS_SOCKET=os.path.join(tmp, "s0/status.sock"))
            rsh = net.wrap(0) + [lwsinit, "rsh", net.ips[1]]
            deadline = time.monotonic() + 30
            while subprocess.run(rsh + ["true"], env=env, stderr=subprocess.DEVNULL).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError("the group did not form")
                time.sleep(0.1)
            res["rsh_true"] = summary(round_trips(rsh + ["true"], env))
            res["rsh_gib"] = min(timed(rsh + ["head -c 1G /dev/zero"], env) for _ in range(2))
            sshd, ssh = start_sshd(tmp)
            try:
                res["ssh_true"] = summary(round_trips(ssh + ["true"]))
                res["ssh_gib"] = min(timed(ssh + ["head -c 1G /dev/zero"]) for _ in range(2))
            finally:
                sshd.terminate()
                sshd.wait()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    L = []
    a = L.append
    a("## lwsinit rsh against ssh (tests/bench/rsh_bench.py)")
    a("")
    a("%s, %d CPUs, kernel %s, %s; %d runs of each round trip after one warm-up." % (
        time.strftime("%Y-%m-%d"), os.cpu_count(), platform.release(),
        sh("ssh", "-V", check=False).stderr.strip(), RUNS))
    a("`lwsinit rsh` goes from the leader's network namespace to a worker's (veth,")
    a("bridge) through the leader's agent; ssh goes to an sshd on loopback.")
    a("")
    a("| | lwsinit rsh | ssh |")
    a("| --- | --- | --- |")
    a("| `true`, median | %.1f ms | %.1f ms |" % (res["rsh_true"][0], res["ssh_true"][0]))
    a("| `true`, p90 | %.1f ms | %.1f ms |" % (res["rsh_true"][1], res["ssh_true"][1]))
    a("| 1 GiB of stdout, best of 2 | %.1f s (%.0f MiB/s) | %.1f s (%.0f MiB/s) |" % (
        res["rsh_gib"], 1024 / res["rsh_gib"], res["ssh_gib"], 1024 / res["ssh_gib"]))
    a("")
    a("The relay's throughput is bounded by its encoding: 6000-byte chunks, base64")
    a("in JSON app messages, one acknowledgement per chunk, at most 256 KiB in")
    a("flight. Open MPI sends its daemons' start-up and little else through the")
    a("rsh agent (the job's own traffic goes over its own TCP connections), so")
    a("the round trip is what a launch pays, once per host.")
    section = "\n".join(L) + "\n"
    print(section)
    block = "%s\n%s%s\n" % (BEGIN, section, END)
    txt = open(DOC).read() if os.path.exists(DOC) else "# Benchmarks\n"
    if BEGIN in txt and END in txt:
        head, rest = txt.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        txt = head + block + tail
    else:
        txt = txt.rstrip("\n") + "\n\n" + block
    tmpdoc = DOC + ".rsh-bench.tmp"
    with open(tmpdoc, "w") as f:
        f.write(txt)
    os.replace(tmpdoc, DOC)


if __name__ == "__main__":
    main()
