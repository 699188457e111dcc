#!/usr/bin/env python3
"""Load: a group of 64 forms on loopback while 1000 idle TCP
connections are held open to the leader's probe port and 1000 to its
rendezvous port. The group still forms, the leader's probes still answer
within 10 ms, and the leader's memory and descriptors stay bounded; once
the idle connections go, the agent is as it was.

What happens to the idle connections is the agent's own business, decided
by its limits: the probe server keeps at most 256 connections and closes
the least recently active one to make room (probes/http.c), and any that
makes no progress for 5 s; the rendezvous keeps at most max(64, 2 x size)
connections that have not joined, drops the oldest to make room, and drops
any that has not joined 5 s after its accept (agent/rdzv.c). Half the
rendezvous ones arrive before the workers start, half in one burst while
they join, racing real members for those slots. The test holds its end of
every connection open until after formation, then closes them all, and
counts how many the agent had closed.

The leader runs with RLIMIT_NOFILE 1024 (prlimit), the usual default, to
show that its limits, not the descriptor limit, keep it going; the test
raises its own limit to hold 2000 sockets.

The probe latency is measured from a separate process (so that this
process starting 63 agents does not stall the measurement), one new
connection per probe as kubelet makes them, alternating /readyz and /livez,
from connect() to the last byte of the answer. The same measurement
without the idle connections is the baseline; each case notes its figures
(formation time, probe p50/p99/max, the leader's VmRSS/VmHWM and open
descriptors), which docs/benchmarks.md ("Load") records.
"""
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time

import dnsfix
import lwsitest as lt
from test_group import LEADER_NAME, Group

SIZE = 64
IDLE = 1000  # per port
RDZV_PARTIAL = b"\x00\x00\x00\x64{\"v"

# The agent's limits (include/lwsinit/http.h, include/lwsinit/rdzv.h): the
# rendezvous keeps room for every worker to be mid-handshake at once, at
# least LWSI_RDZV_MAX_PENDING (lwsi_rdzv_start's default).
HTTP_MAX_CONNS = 256
RDZV_MAX_PENDING = max(64, 2 * SIZE)
# Everything else the leader holds open: stdio, the loop's epoll and
# eventfd, signalfd, timers, listeners, the status socket, the child's
# pipes, c-ares; with slack.
FD_OTHER = 48
FD_BOUND = HTTP_MAX_CONNS + RDZV_MAX_PENDING + (SIZE - 1) + FD_OTHER
LEADER_NOFILE = 1024

# The bound on the probes, in the normal build; a sanitized agent
# is several times slower at everything, so only a looser bound holds.
PROBE_P99_MS = 50.0 if lt.SANITIZED else 10.0
# Memory: what the idle load may add to the leader's peak RSS over the same
# group without it, and the peak itself. ASan's shadow memory and its
# quarantine of freed blocks (every closed connection's buffers) make its
# figures much larger, and not a measure of the agent.
RSS_EXTRA_KIB = 65536 if lt.SANITIZED else 8192
HWM_MAX_KIB = 262144 if lt.SANITIZED else 16384

# The leader and the prober run at this real-time priority: they stand for
# the leader's own node and kubelet there. Here the 63 workers, their
# engines and this test share two CPUs with them (and with other tests): at
# nice 0 the leader waited ten times longer for a CPU than it ran while the
# group formed, and the probes measured the machine's run queue, not the
# agent. (Round-robin, not a nice value: at nice -15 the leader still
# waited 1.8 s for a CPU over the formation.) The leader's engine inherits
# the policy: it must, since the agent waits for its child's exec
# (agent/launcher.c), and a child at a lower priority than its waiting
# parent waits for a CPU with the parent's loop held (~1 s here with
# --reset-on-fork).
PRIO = ("chrt", "--rr", "10")


def prio_works():
    """Whether chrt may set a real-time policy here (it needs
    CAP_SYS_NICE and an RT budget in the cgroup). Without it the probes
    measure the machine, and only a loose bound is checked."""
    try:
        return subprocess.run(list(PRIO) + ["true"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False

# The prober: a separate process that probes until its stdin closes, then
# prints one JSON line per probe: [t_end, path, status, ms, error,
# connect ms, first byte ms].
PROBER = r"""
import json, socket, sys, time, select
host, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
paths = ["/readyz", "/livez"]
out = []
i = 0
while True:
    r, _, _ = select.select([sys.stdin], [], [], interval)
    if r and not sys.stdin.buffer.read1(4096):
        break
    path = paths[i % 2]
    i += 1
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: kube-probe/1.30\r\n"
           "Accept: */*\r\nConnection: close\r\n\r\n" % (path, host, port)).encode()
    t0 = time.perf_counter()
    status, err, tc, tf = None, None, None, None
    try:
        s = socket.create_connection((host, port), timeout=5)
        tc = time.perf_counter()
        try:
            s.sendall(req)
            buf = b""
            need = None
            while need is None or len(buf) < need:
                chunk = s.recv(65536)
                if not chunk:
                    break
                if tf is None:
                    tf = time.perf_counter()
                buf += chunk
                if need is None and b"\r\n\r\n" in buf:
                    head, _, body = buf.partition(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    n = 0
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            n = int(v)
                    need = len(head) + 4 + n
            if need is None or len(buf) < need:
                err = "short answer (%d bytes)" % len(buf)
        finally:
            s.close()
    except OSError as e:
        err = str(e)
    ms = (time.perf_counter() - t0) * 1000.0
    # connect and first byte, ms after the start (None: did not happen)
    tc = None if tc is None else (tc - t0) * 1000.0
    tf = None if tf is None else (tf - t0) * 1000.0
    out.append([time.monotonic(), path, status, ms, err, tc, tf])
for row in out:
    print(json.dumps(row))
"""


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise lt.Skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def proc_mem(pid):
    """VmRSS and VmHWM of pid, KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def schedstat(pid):
    """(ms on a CPU, ms waiting on a run queue) of pid so far."""
    with open("/proc/%d/schedstat" % pid) as f:
        a = f.read().split()
    return int(a[0]) / 1e6, int(a[1]) / 1e6


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fd_breakdown(pid, pport, rport):
    """The leader's descriptors by kind: TCP sockets on the probe port, on
    the rendezvous port, other sockets, and the rest; for the messages."""
    ports = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    a = line.split()
                    ports[a[9]] = int(a[1].rsplit(":", 1)[1], 16)
        except OSError:
            pass
    out = {"probe": 0, "rdzv": 0, "other sockets": 0, "other": 0}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            port = ports.get(target[8:-1])
            out["probe" if port == pport else "rdzv" if port == rport else "other sockets"] += 1
        else:
            out["other"] += 1
    return out


def pct(xs, p):
    """Nearest-rank percentile of a sorted list."""
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
    return xs[k]


class Idle:
    """n idle client connections to (host, port), from source address src,
    held open until close(). Half of them send nothing at all; the other
    half send the start of a message and stop (a partial HTTP head, or a
    frame header that promises bytes that never come)."""

    def __init__(self, src, host, port, n, partial, deadline):
        self.socks = []
        pending = {}
        poller = select.poll()
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.bind((src, 0))
            rc = s.connect_ex((host, port))
            if rc not in (0, 115):  # EINPROGRESS
                s.close()
                self.close()
                raise lt.Fail("idle connection %d to %s:%d: %s" % (i, host, port, os.strerror(rc)))
            self.socks.append(s)
            pending[s.fileno()] = (s, partial if i % 2 else b"")
            poller.register(s, select.POLLOUT)
        end = lt.now() + deadline * lt.SCALE
        while pending:
            left = end - lt.now()
            if left <= 0:
                self.close()
                raise lt.Fail("%d of %d idle connections to %s:%d not established after %.0f s"
                              % (len(pending), n, host, port, deadline * lt.SCALE))
            for fd, ev in poller.poll(left * 1000):
                s, data = pending.pop(fd)
                poller.unregister(fd)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.close()
                    raise lt.Fail("idle connection to %s:%d: %s" % (host, port, os.strerror(err)))
                if data:
                    try:
                        s.send(data)
                    except OSError:
                        pass  # already closed by the agent: counted later
        self.closed_by_peer = 0

    def count_closed(self):
        """How many the agent has closed (EOF or reset seen), reading and
        dropping whatever it sent (the rendezvous' hello)."""
        n = 0
        for s in self.socks:
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        n += 1
                        break
            except BlockingIOError:
                pass
            except OSError:
                n += 1
        self.closed_by_peer = n
        return n

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


class Prober:
    def __init__(self, t, host, port, interval=0.01):
        self.p = t.popen(list(PRIO) + [sys.executable, "-c", PROBER, host, str(port),
                                        str(interval)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, fast=True)

    def stop(self, timeout=30):
        out, _ = self.p.communicate(timeout=timeout * lt.SCALE)
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def summarize(rows, since=None, until=None):
    sel = [r for r in rows if (since is None or r[0] >= since) and (until is None or r[0] <= until)]
    ms = sorted(r[3] for r in sel)
    return {"n": len(sel), "p50": pct(ms, 50), "p99": pct(ms, 99),
            "max": ms[-1] if ms else float("nan"),
            "errors": [r for r in sel if r[4] is not None or r[2] not in (200, 503)],
            "live_bad": [r for r in sel if r[1] == "/livez" and r[2] != 200]}


def fmt_probe(s):
    return "n=%d p50=%.2f p99=%.2f max=%.2f ms" % (s["n"], s["p50"], s["p99"], s["max"])


def form_group(t, with_idle):
    """One group of SIZE on loopback with the leader's name in dnsmasq;
    with_idle: the idle connections are opened after the leader listens
    and before the workers start. Returns the figures."""
    global PRIO, PROBE_P99_MS
    raise_nofile(2 * IDLE + 1024)
    if PRIO and not prio_works():
        t.note("chrt --rr is refused here: the leader and the prober run at the normal "
               "priority, and probe p99 is only checked against 100 ms")
        PRIO, PROBE_P99_MS = (), 100.0
    fig = {}
    with dnsfix.Dns() as dns:
        g = Group(t, SIZE, dns=dns)
        dns.add(LEADER_NAME, g.ip(0))
        leader = g.start(0, wrapper=PRIO + ("prlimit",
                                     "--nofile=%d:%d" % (LEADER_NOFILE, LEADER_NOFILE)))
        lt.wait_for(lambda: "holding the rendezvous" in leader.stderr(), 10, "the leader to listen")
        lt.wait_for(lambda: g.get(0, "/livez")[0] == 200, 10, "the leader's /livez")
        pid = leader.pid
        with open("/proc/%d/limits" % pid) as f:
            lim = [line for line in f if line.startswith("Max open files")][0].split()
        t.eq(int(lim[3]), LEADER_NOFILE, "the leader's RLIMIT_NOFILE")
        fig["mem_start"] = proc_mem(pid)
        fig["fds_start"] = nfds(pid)
        host, pport = g.probe[0]
        src = "%s.250" % g.base  # the idle clients' own address
        idle = []
        if with_idle:
            t0 = lt.now()
            idle.append(Idle(src, host, pport, IDLE, b"GET /readyz HTTP/1.1\r\nHost: x\r\n", 30))
            # A frame header that announces 100 bytes, and 3 of them. Half
            # now; the other half arrive in one burst while the workers
            # join, racing real members for the slots of connections that
            # have not joined yet.
            idle.append(Idle(src, g.ip(0), g.port, IDLE // 2, RDZV_PARTIAL, 30))
            fig["idle_open_s"] = lt.now() - t0
            # The agent works through its accept queues and applies its
            # caps; then it holds no more than they allow.
            lt.wait_for(lambda: nfds(pid) <= FD_BOUND, 10,
                        "the leader to hold at most %d descriptors (has %d)"
                        % (FD_BOUND, nfds(pid)))
            fig["fds_idle"] = nfds(pid)
            fig["mem_idle"] = proc_mem(pid)
        prober = Prober(t, host, pport)
        time.sleep(0.3)  # the prober's own start (Python), before the window
        t_workers = lt.now()
        sched0 = schedstat(pid)
        max_fds = 0
        max_kinds = None

        def sample():
            nonlocal max_fds, max_kinds
            n = nfds(pid)
            if n > max_fds:
                max_fds = n
                max_kinds = fd_breakdown(pid, pport, g.port)
        for r in range(1, SIZE):
            g.start(r)
            if r % 8 == 0:
                sample()
            if with_idle and r == SIZE // 2:
                fig["t_burst"] = lt.now() - t_workers
                idle.append(Idle(src, g.ip(0), g.port, IDLE - IDLE // 2, RDZV_PARTIAL, 30))
        t_last = lt.now()
        fig["start_workers_s"] = t_last - t_workers

        def missing():
            return [r for r in range(SIZE) if not os.path.exists(t.path("state-%d" % r))]

        def launched():
            for r, a in g.agents.items():
                if not a.running():
                    raise lt.Fail("rank %d's agent exited %d before the group formed; its "
                                  "stderr ends:\n%s" % (r, a.rc, "\n".join(
                                      a.stderr().splitlines()[-15:])))
            sample()
            return not missing()
        try:
            lt.wait_for(launched, 60, "all %d engines to start" % SIZE, interval=0.02)
        except lt.Fail as e:
            # Say which members are missing and what they last said: the
            # last 3 agents' stderr that lwsitest prints may not be theirs.
            lines = [str(e)]
            for r in missing()[:3]:
                lines.append("rank %d, no engine; its stderr ends:\n%s" % (r, "\n".join(
                    g.agents[r].stderr().splitlines()[-15:])))
            lines.append("the leader's stderr ends:\n" + "\n".join(
                leader.stderr().splitlines()[-15:]))
            raise lt.Fail("\n".join(lines))
        t_launched = lt.now()
        lt.wait_for(lambda: g.ready(0), 30, "the leader to be ready")
        t_ready = lt.now()
        sched1 = schedstat(pid)
        fig["leader_cpu_ms"] = sched1[0] - sched0[0]
        fig["leader_runq_ms"] = sched1[1] - sched0[1]
        fig["launched_s"] = t_launched - t_workers
        fig["after_last_s"] = t_launched - t_last
        fig["ready_s"] = t_ready - t_workers
        fig["fds_max"] = max(max_fds, nfds(pid))
        fig["fds_max_kinds"] = max_kinds
        fig["members_dropped"] = []
        for line in leader.stderr().splitlines():
            if "formed in" in line:
                fig["leader_formed"] = line.split("formed in", 1)[1].split()[0]
            # Connections of real members that the leader dropped (the
            # idle clients all come from src); a member whose connection
            # goes tries again, so this costs time, not the group.
            if "dropped a rendezvous connection from" in line and " from %s:" % src not in line:
                fig["members_dropped"].append(line)
        # Probes go on a little past formation: the load is still held.
        time.sleep(0.5)
        fig["mem_formed"] = proc_mem(pid)
        code, body = g.get(0, "/status")
        doc = json.loads(body) if code == 200 else {}
        members = doc.get("members", [])
        t.eq(len(members), SIZE, "members in the leader's /status")
        t.ok(all(m.get("alive") for m in members), "every member alive after formation")
        if with_idle:
            closed = [i.count_closed() for i in idle]
            fig["closed_by_agent"] = [closed[0], sum(closed[1:])]
            for i in idle:
                i.close()
            # Without the idle load it holds its members and little else.
            lt.wait_for(lambda: nfds(pid) <= fig["fds_start"] + (SIZE - 1) + 8, 10,
                        "the leader to let go of the idle connections (has %d descriptors)"
                        % nfds(pid))
            fig["fds_after"] = nfds(pid)
            t.eq(g.get(0, "/livez")[0], 200, "/livez after the idle connections went")
            t.eq(g.get(0, "/readyz")[0], 200, "/readyz after the idle connections went")
            code, body = g.get(0, "/status")
            doc = json.loads(body) if code == 200 else {}
            t.ok(doc.get("phase") == "running" and
                 sum(1 for m in doc.get("members", []) if m.get("alive")) == SIZE,
                 "the group still runs, every member alive: phase %s" % doc.get("phase"))
            # A connection still works after the churn: one more round of
            # probes below, and the agents still talk (heartbeats) for a
            # second and a half.
            time.sleep(1.5)
            t.ok(all(a.running() for a in g.agents.values()), "every agent still runs")
            fig["mem_after"] = proc_mem(pid)
        t_end = lt.now()
        rows = prober.stop()
        fig["probe_forming"] = summarize(rows, since=t_workers, until=t_ready)
        fig["probe_all"] = summarize(rows, since=t_workers, until=t_end)
        fig["slow"] = [(r[0] - t_workers, r[3]) for r in rows
                       if r[0] >= t_workers and r[3] > 5]
        if os.environ.get("LWSITEST_LOAD_DUMP"):
            with open(os.environ["LWSITEST_LOAD_DUMP"] + ("-idle" if with_idle else "-base"),
                      "w") as f:
                json.dump({"rows": rows, "t_workers": t_workers, "t_ready": t_ready,
                           "t_end": t_end, "fig": {k: v for k, v in fig.items()
                                                   if not k.startswith("probe")}}, f)
        # The stop: the leader's SIGTERM stops the whole group in order. A
        # leader's stop is no loss: every agent exits with its engine's
        # status (these engines exit 0 on SIGTERM).
        leader.kill(signal.SIGTERM)
        t.agent_rc(leader, 0, timeout=30)
        for r in range(1, SIZE):
            t.agent_rc(g.agents[r], 0, timeout=30)
    return fig


def check_and_note(t, fig, with_idle):
    pf, pa = fig["probe_forming"], fig["probe_all"]
    t.note("group of %d formed (every engine started) %.2f s after the first worker's start, "
           "%.2f s after the last's (workers started over %.2f s); leader /readyz 200 at "
           "%.2f s; leader says formed in %s s; member connections dropped by the leader: %d"
           % (SIZE, fig["launched_s"], fig["after_last_s"], fig["start_workers_s"],
              fig["ready_s"], fig.get("leader_formed", "?"), len(fig["members_dropped"])))
    for line in fig["members_dropped"][:5]:
        t.note("  " + line)
    t.note("the leader while forming: %.0f ms on a CPU, %.0f ms waiting for one"
           % (fig["leader_cpu_ms"], fig["leader_runq_ms"]))
    t.note("probes while forming: %s; over the whole run: %s" % (fmt_probe(pf), fmt_probe(pa)))
    t.note("leader memory KiB: start VmRSS %d; formed VmRSS %d VmHWM %d%s" % (
        fig["mem_start"]["VmRSS"], fig["mem_formed"]["VmRSS"], fig["mem_formed"]["VmHWM"],
        "; idle held VmRSS %d; after they went VmRSS %d VmHWM %d" % (
            fig["mem_idle"]["VmRSS"], fig["mem_after"]["VmRSS"], fig["mem_after"]["VmHWM"])
        if with_idle else ""))
    t.note("leader descriptors: start %d, most while forming %d (%s)%s (bound %d)" % (
        fig["fds_start"], fig["fds_max"], fig["fds_max_kinds"],
        ", idle held %d, after they went %d" % (fig["fds_idle"], fig["fds_after"])
        if with_idle else "", FD_BOUND))
    slow = sorted(fig["slow"], key=lambda r: -r[1])[:5]
    t.note("slowest probes (end s after the first worker's start, ms): %s"
           % ", ".join("%.2f: %.1f" % (a, b) for a, b in slow))
    if with_idle:
        t.note("the second burst of idle rendezvous connections at %.2f s" % fig["t_burst"])
        t.note("idle connections opened in %.2f s; closed by the agent by formation: "
               "probe port %d of %d, rendezvous port %d of %d"
               % (fig["idle_open_s"], fig["closed_by_agent"][0], IDLE,
                  fig["closed_by_agent"][1], IDLE))
    t.ok(pa["n"] >= 50, "enough probes measured (%d)" % pa["n"])
    t.ok(not pa["errors"], "every probe answered 200 or 503: %s" % pa["errors"][:5])
    t.ok(not pa["live_bad"], "/livez always 200: %s" % pa["live_bad"][:5])
    t.ok(pa["p99"] <= PROBE_P99_MS, "probe p99 %.2f ms <= %.0f ms (%s)"
         % (pa["p99"], PROBE_P99_MS, fmt_probe(pa)))
    t.ok(fig["fds_max"] <= FD_BOUND, "the leader held at most %d descriptors (%d: %s)"
         % (FD_BOUND, fig["fds_max"], fig["fds_max_kinds"]))
    hwm = fig["mem_after" if with_idle else "mem_formed"]["VmHWM"]
    t.ok(hwm <= HWM_MAX_KIB, "leader VmHWM %d KiB <= %d KiB" % (hwm, HWM_MAX_KIB))


_baseline = {}


def t_baseline(t):
    """The same group, the same probes, no idle connections."""
    fig = form_group(t, with_idle=False)
    check_and_note(t, fig, False)
    _baseline.update(fig)


def t_idle_load(t):
    fig = form_group(t, with_idle=True)
    check_and_note(t, fig, True)
    t.ok(fig["closed_by_agent"][0] >= IDLE - HTTP_MAX_CONNS,
         "the probe server kept at most %d idle connections (closed %d of %d)"
         % (HTTP_MAX_CONNS, fig["closed_by_agent"][0], IDLE))
    t.ok(fig["closed_by_agent"][1] >= IDLE - RDZV_MAX_PENDING,
         "the rendezvous kept at most %d connections that never joined (closed %d of %d)"
         % (RDZV_MAX_PENDING, fig["closed_by_agent"][1], IDLE))
    if _baseline:
        base = _baseline["mem_formed"]["VmHWM"]
        extra = fig["mem_after"]["VmHWM"] - base
        t.note("the idle load added %d KiB to the leader's peak RSS (VmHWM %d against %d "
               "without it); formation %.2f s against %.2f s without it"
               % (extra, fig["mem_after"]["VmHWM"], base, fig["launched_s"],
                  _baseline["launched_s"]))
        t.ok(extra <= RSS_EXTRA_KIB, "the idle load adds at most %d KiB to the peak RSS (%d)"
             % (RSS_EXTRA_KIB, extra))


if __name__ == "__main__":
    lt.main([
        ("a group of %d forms; probes and memory without idle connections (baseline)" % SIZE,
         t_baseline),
        ("a group of %d forms with %d idle connections held to each of the leader's ports; "
         "probes answer, memory and descriptors stay bounded" % (SIZE, IDLE), t_idle_load),
    ])
