#!/usr/bin/env python3
"""The fault matrix, part 1: the group, the network, DNS and the
rendezvous and probe ports (docs/reliability.md lists every row and the
test that holds it; rows already held by test_group.py, test_health.py
and the GPU tests are not repeated here).

Faults by phase: a group of 3 (leader rank 0, workers 1 and 2) with fast
heartbeats, one member (the leader, or worker 1) killed (SIGKILL), stopped
(SIGSTOP) or partitioned (run in its own network namespace whose veth link
goes down) while the group resolves, joins, checks its GPUs (the fake
CUDA/NCCL library of tests/gpu, with a hung NCCL init holding every node in
the checking phase) or runs. Before launch the group heals: the others wait
and the group forms once the member is back; after the release a lost
member is final and every agent exits 6.
"""
import json
import os
import select
import signal
import socket
import struct
import threading
import time

import dnsfix
import lwsitest as lt
import netfix
from test_group import LEADER_NAME, Group

# Loss after 1 s of silence (3 s under sanitizers: a starved ASan agent
# on a busy machine can miss 1 s of heartbeats, and a false loss would
# fail the group), heartbeats every 100 ms, a short grace.
PEER_TIMEOUT = round(1.0 * lt.SCALE, 3)
FAST = ["--heartbeat", "100", "--peer-timeout", str(int(PEER_TIMEOUT * 1000)), "--grace", "2"]

FAKEGPU = os.environ.get("LWSI_FAKEGPU") or os.path.normpath(os.path.join(
    os.path.dirname(os.path.realpath(lt.LWSINIT or ".")), "..", "tests", "gpu",
    "libfakegpu.so"))

# The check program as built (gpucheck/ in the build folder): the agent
# finds it beside itself only where an image installs both in one folder,
# so the tests name it (LWSINIT_GPUCHECK).
GPUCHECK = os.environ.get("LWSI_GPUCHECK") or os.path.normpath(os.path.join(
    os.path.dirname(os.path.realpath(lt.LWSINIT or ".")), "..", "gpucheck", "lwsinit-gpucheck"))

# The probe port of an agent inside a network namespace: its own loopback.
NS_PROBE = "127.0.0.1:7471"


# ---- helpers ----------------------------------------------------------------

def need_netns():
    if not netfix.netns_available():
        raise lt.Skip("no network namespaces here (ip netns)")


def heal(ns):
    """Brings the partitioned link back up (netfix.Netns.partition's undo)."""
    netfix.sh(netfix.IP, "link", "set", ns.host_if, "up")


def last_line(a):
    lines = a.stderr().strip().splitlines()
    return lines[-1] if lines else ""


def logged(a, text):
    """A condition for wait_for: text is in a's stderr, and a still runs
    (an exit fails the wait at once, with the agent's stderr)."""
    def cond():
        if text in a.stderr():
            return True
        a.check_running("%r in its log" % text)
        return False
    return cond


class Layout:
    """Where each member of a faulted group runs: the target (the member
    the fault hits) in a network namespace of its own for a partition,
    everyone else on this machine. The leader's address is the one every
    worker can reach: the namespace's for a leader inside it, else the
    host end of the veth (a local address here, reachable from inside)."""

    def __init__(self, t, ns, target, opts=(), env=None):
        self.t = t
        self.ns = ns
        self.target = target
        self.env = dict(env or {})
        self.g = Group(t, 3, opts=list(FAST) + list(opts))
        if ns is None:
            self.leader = "127.0.0.1"
        else:
            self.leader = ns.ns_ip if target == 0 else ns.host_ip

    def start(self, rank, opts=()):
        env = dict(self.env)
        kw = {}
        if self.ns is not None and rank == self.target:
            env["LWSINIT_PROBE_ADDR"] = NS_PROBE
            kw["wrapper"] = (netfix.IP, "netns", "exec", self.ns.name)
        return self.g.start(rank, leader=self.leader, env=env, opts=opts, **kw)

    def fault(self, kind):
        a = self.g.agents[self.target]
        if kind == "kill":
            a.kill(signal.SIGKILL)
        elif kind == "stop":
            a.kill(signal.SIGSTOP)
        else:
            self.ns.partition()

    def undo(self, kind):
        if kind == "stop":
            self.g.agents[self.target].kill(signal.SIGCONT)
        elif kind == "partition":
            heal(self.ns)


class maybe_ns:
    """A network namespace for a partition, nothing for the other faults."""

    def __init__(self, kind):
        self.kind = kind
        self.ns = None

    def __enter__(self):
        if self.kind == "partition":
            need_netns()
            self.ns = netfix.Netns().__enter__()
        return self.ns

    def __exit__(self, *exc):
        if self.ns is not None:
            self.ns.__exit__(*exc)


ROLE_RANK = {"leader": 0, "worker": 1}


# ---- faults while the group forms (joining) ---------------------------------

def joining(t, role, kind):
    """Leader and worker 1 of a group of 3 have met, worker 2 is not there
    yet (the group waits); then the fault hits one of the two."""
    target = ROLE_RANK[role]
    rdzv = "3" if (role, kind) == ("leader", "kill") else "60"
    with maybe_ns(kind) as ns:
        lay = Layout(t, ns, target, opts=["--rdzv-timeout", rdzv])
        g = lay.g
        leader = lay.start(0)
        w1 = lay.start(1)
        lt.wait_for(logged(w1, "joined the leader"), 15, "rank 1 to join")
        lay.fault(kind)
        if (role, kind) == ("leader", "kill"):
            # Nobody comes back: the worker keeps knocking until its own
            # rendezvous deadline, then exits 4 saying what it saw.
            t.agent_rc(w1, 4, timeout=15)
            line = last_line(w1)
            t.ok("--rdzv-timeout" in line and "connect" in line,
                 "the worker says it could not reach the leader: " + line)
            t.le(2.9, w1.runtime, 3 + 3 * lt.SCALE, "exit at the rendezvous deadline (3 s)")
            return
        if role == "worker":
            # The leader frees the rank: at once for a closed connection,
            # after --peer-timeout for a silent one.
            lt.wait_for(logged(leader, "rank 1 left before the group formed"), 10,
                        "the leader to free rank 1")
            how = ("closed", "reset") if kind == "kill" else ("silent",)
            line = [l for l in leader.stderr().splitlines() if "left before" in l][0]
            t.ok(any(w in line for w in how), "the leader says how rank 1 went: " + line)
        else:
            lt.wait_for(logged(w1, "lost the leader before the group formed"), 10,
                        "the worker to notice the leader's silence")
            t.ok("silent" in w1.stderr(), "the worker says the leader went silent")
        if kind == "kill":
            # A new incarnation takes the freed rank (no duplicate refusal).
            lay.start(1)
        else:
            lay.undo(kind)
        lay.start(2)
        for r in range(3):
            st = g.state(r, timeout=20)
            t.eq(st.get("env.LWSINIT_RANK"), str(r), "rank %d's engine ran in the group" % r)
        g.wait_engines(timeout=10)
        for r in range(3):
            t.ok(g.agents[r].running(), "rank %d's agent runs the healed group" % r)


# ---- faults while the GPUs are checked (checking) ----------------------------

def checking(t, role, kind):
    """Every node's GPU check hangs in NCCL init (fake library): the whole
    group sits in the checking phase, released but not launched, when the
    fault hits. A member lost after the release is final: every other
    agent ends its check and exits 6; no engine ever starts."""
    if not os.path.exists(FAKEGPU):
        raise lt.Skip("the fake GPU library is not built (%s)" % FAKEGPU)
    target = ROLE_RANK[role]
    env = {"LWSINIT_CUDART": FAKEGPU, "LWSINIT_NCCL": FAKEGPU, "FAKEGPU_DEVICES": "2",
           "FAKEGPU_FAIL": "init-hang", "LWSINIT_GPUCHECK": GPUCHECK,
           # The fake GPUs have no device nodes: the node check would fail
           # --gpus 2 before the group forms.
           "LWSINIT_NODE_CHECK": "warn"}
    with maybe_ns(kind) as ns:
        lay = Layout(t, ns, target, env=env,
                     opts=["--gpu-check", "nccl", "--gpus", "2", "--gpu-check-bytes", "65536",
                           "--gpu-check-timeout", "120"])
        g = lay.g
        for r in range(3):
            lay.start(r)
        gpucheck = os.path.realpath(GPUCHECK)

        def checks_of(a):
            return [p for p in lt.descendants(a.pid) if lt.exe_of(p) == gpucheck]
        checks = {}
        for r in range(3):
            a = g.agents[r]
            lt.wait_for(logged(a, "checking the GPUs"), 20, "rank %d to check its GPUs" % r)
            checks[r] = lt.wait_for(lambda a=a: checks_of(a), 10, "rank %d's check process" % r)
        t0 = lt.now()
        lay.fault(kind)
        others = [r for r in range(3) if r != target]
        for r in others:
            t.agent_rc(g.agents[r], 6, timeout=15)
        took = lt.now() - t0
        limit = (0 if kind == "kill" else PEER_TIMEOUT * 1.2) + 2 * lt.SCALE
        t.le(0, took, limit, "the others exited %.3fs after the fault" % took)
        who = "rank 0" if target == 0 else "rank 1"
        for r in others:
            t.ok(who in last_line(g.agents[r]), "rank %d names %s: %s"
                 % (r, who, last_line(g.agents[r])))
        if kind != "kill":
            # The stopped or cut-off member learns it too, once it can.
            if kind == "stop":
                lay.undo(kind)
            t.agent_rc(g.agents[target], 6, timeout=15)
            others.append(target)
        for r in others:
            lt.wait_for(lambda r=r: not any(lt.alive(p) for p in checks[r]), 5,
                        "rank %d's GPU check process to be gone" % r)
        t.ok(True, "every exited agent's GPU check process is gone")
        for r in range(3):
            t.ok(not g.engine_started(r), "rank %d's engine never started" % r)


# ---- faults of the leader after launch (running) ----------------------------

def running(t, role, kind):
    """The workers' faults after launch are test_group's and test_health's;
    these are the leader's: every worker stops its engine and exits 6."""
    assert role == "leader", "only the leader's faults after launch are here"
    with maybe_ns(kind) as ns:
        lay = Layout(t, ns, 0)
        g = lay.g
        for r in range(3):
            lay.start(r)
        g.wait_engines(timeout=20)
        t0 = lt.now()
        lay.fault(kind)
        for r in (1, 2):
            t.agent_rc(g.agents[r], 6, timeout=15)
        took = lt.now() - t0
        limit = (0 if kind == "kill" else PEER_TIMEOUT * 1.2) + 2 + 2 * lt.SCALE
        t.le(0, took, limit, "the workers exited %.3fs after the fault" % took)
        for r in (1, 2):
            t.ok("leader (rank 0) was lost" in g.agents[r].stderr(),
                 "rank %d names the leader: %s" % (r, last_line(g.agents[r])))
            t.ok("TERM" in open(t.path("sig-%d" % r)).read(), "rank %d's engine was stopped" % r)
        if kind == "stop":
            lay.undo(kind)
        if kind != "kill":
            t.agent_rc(g.agents[0], 6, timeout=15)
            t.ok("TERM" in open(t.path("sig-0")).read(), "the leader's engine was stopped")


# ---- the cases of the three phases above ------------------------------------

# One row per case: its phase (the function above that runs it), the member
# the fault hits, the fault, and the name it prints (TAP). The case is the
# function t_<phase>_<role>_<fault> made here, the name docs/reliability.md
# gives it (faults::t_joining_leader_kill and so on).
PHASE_FAULTS = [
    ("joining", "leader", "kill",
     "joining: leader killed, the worker gives up at its deadline with 4"),
    ("joining", "leader", "stop", "joining: leader stopped, the group forms once it continues"),
    ("joining", "leader", "partition",
     "joining: leader partitioned, the group forms once the link is back"),
    ("joining", "worker", "kill",
     "joining: worker killed, its rank is free at once for a new one"),
    ("joining", "worker", "stop",
     "joining: worker stopped, freed after --peer-timeout, rejoins on SIGCONT"),
    ("joining", "worker", "partition",
     "joining: worker partitioned, rejoins once the link is back"),
    ("checking", "leader", "kill", "checking: leader killed, every worker exits 6"),
    ("checking", "leader", "stop", "checking: leader stopped, every agent exits 6"),
    ("checking", "leader", "partition", "checking: leader partitioned, every agent exits 6"),
    ("checking", "worker", "kill", "checking: worker killed, every other agent exits 6"),
    ("checking", "worker", "stop", "checking: worker stopped, every agent exits 6"),
    ("checking", "worker", "partition", "checking: worker partitioned, every agent exits 6"),
    ("running", "leader", "kill", "running: leader killed, every worker exits 6"),
    ("running", "leader", "stop", "running: leader stopped, every agent exits 6"),
    ("running", "leader", "partition", "running: leader partitioned, every agent exits 6"),
]
PHASES = {"joining": joining, "checking": checking, "running": running}


def phase_case(phase, role, kind):
    def case(t):
        PHASES[phase](t, role, kind)
    case.__name__ = case.__qualname__ = "t_%s_%s_%s" % (phase, role, kind)
    return case


PHASE_CASES = [(name, phase_case(phase, role, kind)) for phase, role, kind, name in PHASE_FAULTS]
globals().update((fn.__name__, fn) for _, fn in PHASE_CASES)


# ---- faults of a worker while it resolves the leader (resolving) ------------

def t_resolving_worker_kill(t):
    """A worker killed while its leader's record is not there yet: the
    leader never heard of it and keeps waiting; its replacement resolves
    and joins."""
    with dnsfix.Dns() as dns:
        g = Group(t, 2, dns=dns, opts=FAST)
        leader = g.start(0)
        w = g.start(1)
        lt.wait_for(logged(w, "resolving the leader"), 10, "the worker to be resolving")
        w.kill(signal.SIGKILL)
        t.eq(w.wait(5), -signal.SIGKILL, "the worker died")
        t.ok(leader.running() and "rank 1" not in leader.stderr(),
             "the leader never heard of it and keeps waiting")
        dns.add(LEADER_NAME, g.ip(0))
        g.start(1)
        for r in range(2):
            t.eq(g.state(r, timeout=15).get("env.LWSINIT_RANK"), str(r), "rank %d ran" % r)


def t_resolving_worker_stop(t):
    """A worker stopped while it resolves, the record appearing meanwhile:
    continued, it resolves on its next try and joins."""
    with dnsfix.Dns() as dns:
        g = Group(t, 2, dns=dns, opts=FAST + ["--dns-timeout", "60"])
        g.start(0)
        w = g.start(1)
        lt.wait_for(logged(w, "resolving the leader"), 10, "the worker to be resolving")
        w.kill(signal.SIGSTOP)
        dns.add(LEADER_NAME, g.ip(0))
        time.sleep(0.5)  # stopped for a while: the point of the fault
        t.ok(not g.engine_started(1), "nothing happens while the worker is stopped")
        t0 = lt.now()
        w.kill(signal.SIGCONT)
        for r in range(2):
            g.state(r, timeout=15)
        took = lt.now() - t0
        t.le(0, took, 1.5 + 2 * lt.SCALE, "the group formed %.3fs after SIGCONT" % took)


def t_resolving_worker_partition(t):
    """A worker cut off from the cluster DNS while it resolves: its tries
    time out (nothing answers), and the first one after the link is back
    finds the record."""
    need_netns()
    with netfix.Netns() as ns, dnsfix.Dns(listen=ns.host_ip) as dns:
        name = dns.fqdn(LEADER_NAME)
        g = Group(t, 2, opts=FAST + ["--dns-timeout", "60", "--dns-server",
                                     "%s:%d" % (ns.host_ip, dns.port)])
        g.start(0, leader=name)
        w = g.start(1, leader=name, env={"LWSINIT_PROBE_ADDR": NS_PROBE},
                    wrapper=(netfix.IP, "netns", "exec", ns.name))
        lt.wait_for(logged(w, "resolving the leader"), 10, "the worker to be resolving")
        ns.partition()
        # The leader's Service is published (at an address the worker
        # reaches), but the worker cannot ask for it: two of its tries
        # (750 ms each) time out unanswered. The wait is the fault.
        dns.add(LEADER_NAME, ns.host_ip)
        time.sleep(1.6)
        t.ok(not g.engine_started(1) and w.running(), "no answer while partitioned")
        heal(ns)
        t0 = lt.now()
        for r in range(2):
            g.state(r, timeout=15)
        took = lt.now() - t0
        t.le(0, took, 1.5 + 2 * lt.SCALE, "the group formed %.3fs after the link came back"
             % took)


# ---- DNS faults --------------------------------------------------------------

class FakeDns:
    """A DNS server of the test's own on 127.0.0.1 (UDP), for faults that
    dnsmasq does not make: answers LEADER_NAME's A query with ip after
    delay seconds, or SERVFAIL, or nothing at all (mode "silent"); AAAA
    and other questions get an empty NOERROR. mode may change while it
    runs."""

    def __init__(self, ip, mode="ok", delay=0.0, port=0):
        self.ip = ip
        self.mode = mode
        self.delay = delay
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.stop_r, self.stop_w = os.pipe()
        self.timers = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            r, _, _ = select.select([self.sock, self.stop_r], [], [])
            if self.stop_r in r:
                return
            try:
                q, peer = self.sock.recvfrom(512)
            except OSError:
                continue
            self.queries += 1
            reply = self._answer(q)
            if reply is None:
                continue
            if self.delay > 0:
                tm = threading.Timer(self.delay, self._send, (reply, peer))
                tm.daemon = True
                self.timers.append(tm)
                tm.start()
            else:
                self._send(reply, peer)

    def _send(self, reply, peer):
        try:
            self.sock.sendto(reply, peer)
        except OSError:
            pass

    def _answer(self, q):
        if len(q) < 12 or self.mode == "silent":
            return None
        # The question: labels up to a zero byte, then type and class.
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            labels.append(q[i + 1:i + 1 + q[i]].decode(errors="replace"))
            i += 1 + q[i]
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0] if i + 3 <= len(q) else 0
        question = q[12:i + 5]
        if self.mode == "servfail":
            return q[:2] + struct.pack("!HHHHH", 0x8182, 1, 0, 0, 0) + question
        name = ".".join(labels)
        if qtype == 1 and name.startswith(LEADER_NAME):
            answer = (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton(self.ip))
            return q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + answer
        rcode = 0 if name.startswith(LEADER_NAME) else 3  # NOERROR, no data / NXDOMAIN
        return q[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, 0, 0, 0) + question

    def close(self):
        os.write(self.stop_w, b"x")
        self.thread.join(5)
        for tm in self.timers:
            tm.cancel()
        self.sock.close()
        os.close(self.stop_r)
        os.close(self.stop_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dns_worker(t, port, opts=()):
    """Worker 1 of a group of 2 whose leader's name is asked of 127.0.0.1:port
    (a plain FQDN-like name: no search list needed)."""
    g = Group(t, 2, opts=FAST + ["--dns-server", "127.0.0.1:%d" % port] + list(opts))
    return g, g.start(1, leader=LEADER_NAME)


def t_dns_down(t):
    """No DNS server at all (the port is closed: every query is refused at
    once): the worker retries until --dns-timeout and exits 3 naming the
    server; a server that comes up before the deadline is used at once."""
    port = dnsfix._free_udp_port("127.0.0.1")
    g, w = dns_worker(t, port, ["--dns-timeout", "1.5"])
    t.agent_rc(w, 3, timeout=10)
    line = last_line(w)
    t.ok("--dns-timeout" in line and "127.0.0.1:%d" % port in line,
         "the line names the deadline and the server: " + line)
    t.le(1.4, w.runtime, 1.5 + 2 * lt.SCALE, "exit 3 at the deadline (%.2fs)" % w.runtime)
    # Down, then up.
    port = dnsfix._free_udp_port("127.0.0.1")
    g, w = dns_worker(t, port, ["--dns-timeout", "60"])
    g.start(0, leader=LEADER_NAME)
    lt.wait_for(logged(w, "resolving the leader"), 10, "the worker to fail a try")
    with FakeDns(g.ip(0), port=port):
        t0 = lt.now()
        for r in range(2):
            g.state(r, timeout=15)
        took = lt.now() - t0
    t.le(0, took, 1.0 + 2 * lt.SCALE, "the group formed %.3fs after the server came up" % took)


def t_dns_silent(t):
    """A DNS server that never answers (down behind a dead link, or
    dropping packets): every try times out, exit 3 at --dns-timeout."""
    with FakeDns("127.0.0.1", mode="silent") as dns:
        g, w = dns_worker(t, dns.port, ["--dns-timeout", "2"])
        t.agent_rc(w, 3, timeout=12)
        t.ok("Timeout" in last_line(w), "the reason is a timeout: " + last_line(w))
        t.le(1.9, w.runtime, 2 + 2 * lt.SCALE, "exit 3 at the deadline (%.2fs)" % w.runtime)
        t.ok(dns.queries >= 2, "the worker kept asking (%d queries)" % dns.queries)


def t_dns_servfail(t):
    """SERVFAIL on every query: retried until --dns-timeout, exit 3 with the
    reason; SERVFAIL that stops (a DNS that recovers) resolves."""
    with FakeDns("127.0.0.1", mode="servfail") as dns:
        g, w = dns_worker(t, dns.port, ["--dns-timeout", "1.5"])
        t.agent_rc(w, 3, timeout=10)
        line = last_line(w)
        t.ok("failed the query" in line or "SERVFAIL" in line.upper(),
             "the line says the server failed the query: " + line)
        t.ok(dns.queries >= 3, "the worker kept asking (%d queries)" % dns.queries)
    g = Group(t, 2, opts=FAST)
    with FakeDns(g.ip(0), mode="servfail") as dns:
        g.opts += ["--dns-server", "127.0.0.1:%d" % dns.port, "--dns-timeout", "60"]
        g.start(0, leader=LEADER_NAME)
        w = g.start(1, leader=LEADER_NAME)
        lt.wait_for(lambda: dns.queries >= 3, 10, "three SERVFAILs")
        t.ok(not g.engine_started(1), "no launch on SERVFAIL")
        dns.mode = "ok"
        for r in range(2):
            g.state(r, timeout=15)
        t.eq(g.state(1).get("env.LWSINIT_LEADER_IP"), g.ip(0), "the worker found the leader")


def t_dns_slow(t):
    """A slow DNS server: answers 0.4 s late are waited for; answers later
    than one try's 750 ms are late for that try, but c-ares' own retry of
    the same query (same id) takes them, so a server 1.2 s slow still
    resolves."""
    for delay in (0.4, 1.2):
        g = Group(t, 2, opts=FAST)
        with FakeDns(g.ip(0), delay=delay) as dns:
            g.opts += ["--dns-server", "127.0.0.1:%d" % dns.port, "--dns-timeout", "30"]
            g.start(0, leader=LEADER_NAME)
            t0 = lt.now()
            w = g.start(1, leader=LEADER_NAME)
            lt.wait_for(logged(w, "the leader '%s' is" % LEADER_NAME), 10 + 3 * delay,
                        "the worker to resolve through a server %.1f s slow" % delay)
            took = lt.now() - t0
            t.ok(took >= delay, "it waited for the slow answer (%.2fs)" % took)
            for r in range(2):
                g.state(r, timeout=15)


# ---- membership ---------------------------------------------------------------

def t_other_size(t):
    """A member of a group of another size (another LWS generation) is
    refused at once with 4; the leader keeps waiting for its own."""
    g = Group(t, 3, opts=FAST)
    leader = g.start(0, leader="127.0.0.1")
    w = g.start(1, leader="127.0.0.1", size=4)
    t.agent_rc(w, 4, timeout=10)
    t.ok("wrong size" in last_line(w) and "4" in last_line(w) and "3" in last_line(w),
         "the worker says why: " + last_line(w))
    t.ok(leader.running(), "the leader keeps waiting")
    g.start(1, leader="127.0.0.1")
    g.start(2, leader="127.0.0.1")
    for r in range(3):
        g.state(r, timeout=15)
    t.ok(True, "the right members still form the group")


# ---- the rendezvous port -------------------------------------------------------

def read_frame(s, timeout):
    """One frame (length, payload) from s, or None at EOF."""
    s.settimeout(timeout)
    buf = b""
    while len(buf) < 4:
        d = s.recv(4 - len(buf))
        if not d:
            return None
        buf += d
    n = struct.unpack("!I", buf)[0]
    body = b""
    while len(body) < n:
        d = s.recv(n - len(body))
        if not d:
            return None
        body += d
    return json.loads(body)


def closed_by_peer(s, timeout):
    """Seconds until the peer closed s (EOF or reset), reading and
    discarding what comes; None if it did not within timeout."""
    t0 = lt.now()
    s.settimeout(0.1)
    while lt.now() - t0 < timeout:
        try:
            if not s.recv(65536):
                return lt.now() - t0
        except socket.timeout:
            continue
        except ConnectionResetError:
            return lt.now() - t0
    return None


def leader_listening(t, g, opts=()):
    leader = g.start(0, leader="127.0.0.1", opts=opts)
    lt.wait_for(logged(leader, "holding the rendezvous"), 10, "the leader to listen")
    return leader


def t_rdzv_oversized(t):
    """Frames announcing more than 64 KiB (or zero bytes) end their
    connection at once, before any of it is buffered; the group forms."""
    g = Group(t, 2, opts=FAST)
    leader = leader_listening(t, g)
    for n in (65537, 1 << 31, 0):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        hello = read_frame(s, 5 * lt.SCALE)
        t.ok(hello and hello.get("type") == "hello", "a hello first")
        s.sendall(struct.pack("!I", n) + b"{" * 1024)
        took = closed_by_peer(s, 3 * lt.SCALE)
        t.ok(took is not None and took < 1 * lt.SCALE,
             "a frame of %d bytes is dropped at once (%s)" % (n, took))
        s.close()
    g.start(1, leader="127.0.0.1")
    for r in range(2):
        g.state(r, timeout=15)
    t.ok(leader.running() and "dropped a rendezvous connection" in leader.stderr(),
         "the leader dropped them and lives")


def t_fake_leader(t):
    """Something that answers on the leader's address without the token (a
    stale pod, a squatter) cannot end a worker that holds one: an unproven
    refusal, a 'fail' before any welcome and a hello of another protocol
    version are each answered by trying again later; at its deadline the
    worker exits 4 naming what it heard. The real leader, once it holds the
    port, forms the group with that same worker."""
    tok = t.path("token")
    with open(tok, "w") as f:
        f.write("s3cret\n")
    g = Group(t, 2, opts=FAST + ["--token-file", tok])
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", g.port))
    lsock.listen(16)
    answers = [
        ("refuse", {"type": "refuse", "code": "token", "reason": "go away"}),
        ("fail", {"type": "fail", "reason": "the group has failed: boom"}),
        ("version", None),
        ("welcome", {"type": "welcome", "rank": 1, "auth": False}),
    ]
    seen = []
    stop = threading.Event()

    def send(c, msg):
        body = json.dumps(msg).encode()
        c.sendall(struct.pack("!I", len(body)) + body)

    def serve():
        lsock.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
            except socket.timeout:
                continue
            kind, msg = answers[len(seen) % len(answers)]
            seen.append(kind)
            try:
                hello = {"v": 1, "type": "hello", "nonce": "11" * 16, "challenge": "22" * 32,
                         "auth": True}
                if msg is None:
                    hello["v"] = 2
                    send(c, hello)
                else:
                    send(c, hello)
                    read_frame(c, 2)
                    send(c, dict(msg, v=1))
            except OSError:
                pass
            c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        w = g.start(1, leader="127.0.0.1", opts=["--rdzv-timeout", "5"])
        lt.wait_for(lambda: len(seen) >= 4, 12 * lt.SCALE, "four answers from the fake leader")
        t.ok(w.running(), "the worker is still running after %s" % ", ".join(seen))
        t.agent_rc(w, 4, timeout=15)
        err = w.stderr()
        t.ok("without proof of the token" in err and "go away" in err and "boom" in err,
             "it logged what it did not believe: " + last_line(w))
    finally:
        stop.set()
        th.join(5)
        lsock.close()
    # The real leader on the same port. It signs no refusal of a join whose
    # own proof failed or is missing: a relay could otherwise strip a real
    # worker's proof and pass it the leader's genuinely signed refusal.
    g.start(0, leader="127.0.0.1")
    lt.wait_for(lambda: can_connect("127.0.0.1", g.port), 10 * lt.SCALE, "the leader to listen")
    for auth, mac in ((False, None), (True, "33" * 32)):
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as c:
            hello = read_frame(c, 5 * lt.SCALE)
            join = {"v": 1, "type": "join", "rank": 1, "size": 2, "gpus": 0, "revision": "",
                    "pod": "relay", "nonce": "44" * 16, "challenge": "55" * 32,
                    "preset": "none", "dist_port": 0, "cmd_total": 1, "cmd": ["engine"],
                    "digest": "66" * 32, "auth": auth}
            if mac:
                join["mac"] = mac
            send(c, join)
            ans = read_frame(c, 5 * lt.SCALE)
        t.ok(hello and ans and ans.get("type") == "refuse" and ans.get("code") == "token"
             and "mac" not in ans,
             "a %s join gets an unsigned refusal: %r" % ("badly proven" if auth else "unproven",
                                                        ans))
    g.start(1, leader="127.0.0.1")
    for r in range(2):
        t.eq(g.state(r, timeout=15).get("env.LWSINIT_RANK"), str(r),
             "the real leader forms the group: rank %d's engine runs" % r)


def can_connect(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def t_rdzv_slow_and_flood(t):
    """Connections that never speak, or drip a join one byte at a time,
    are dropped at the handshake deadline (5 s), not kept alive by the
    dripping; 150 idle connections (more than the 64 waiting slots) do
    not keep a real worker out."""
    g = Group(t, 2, opts=FAST)
    leader = leader_listening(t, g)
    silent = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    drip = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    t0 = lt.now()
    join = json.dumps({"v": 1, "type": "join", "rank": 1, "size": 2}).encode()
    payload = struct.pack("!I", len(join)) + join
    drip.setblocking(False)
    dripped, closed_at = 0, None
    while closed_at is None and lt.now() - t0 < 10 * lt.SCALE:
        try:
            drip.send(payload[dripped % len(payload):dripped % len(payload) + 1])
            dripped += 1
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            closed_at = lt.now() - t0
            break
        try:
            r = drip.recv(65536)
            if r == b"":
                closed_at = lt.now() - t0
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed_at = lt.now() - t0
        time.sleep(0.2)
    t.ok(closed_at is not None, "the dripping connection was dropped (%d bytes sent)" % dripped)
    t.le(4.5, closed_at, 5 + 1.5 * lt.SCALE, "dropped at the handshake deadline (%.2fs)"
         % closed_at)
    took = closed_by_peer(silent, 2 * lt.SCALE)
    t.ok(took is not None, "the silent connection was dropped by then too")
    # The flood: 150 connections that say nothing, then a real worker.
    flood = [socket.create_connection(("127.0.0.1", g.port), timeout=5) for _ in range(150)]
    t1 = lt.now()
    g.start(1, leader="127.0.0.1")
    for r in range(2):
        g.state(r, timeout=15)
    took = lt.now() - t1
    t.le(0, took, 2 + 3 * lt.SCALE, "the worker joined through the flood in %.2fs" % took)
    t.ok(leader.running(), "the leader lives")
    for s in flood + [silent, drip]:
        s.close()


# ---- the probe port ------------------------------------------------------------

def standalone(t):
    port = lt.free_port()
    a = t.agent(["signals", t.path("sig")], opts=["--probe-addr", "127.0.0.1:%d" % port])
    a.child()
    lt.wait_for(lambda: lt.http_status("127.0.0.1", port, "/livez") == 200, 10, "/livez to answer")
    return a, port


def t_probe_slowloris(t):
    """300 connections trickling request headers (more than the 256 the
    probe server keeps): probes on fresh connections stay fast, and every
    trickling connection is closed within the 5 s request deadline."""
    a, port = standalone(t)
    slow = []
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    t0 = lt.now()
    worst, n, open_ = 0.0, 0, list(slow)
    while open_ and lt.now() - t0 < 5 + 4 * lt.SCALE:
        for s in list(open_):
            try:
                s.sendall(b"X-%d: y\r\n" % n)
            except OSError:
                open_.remove(s)
        q0 = lt.now()
        t.eq(lt.http_status("127.0.0.1", port, "/livez"), 200, "a probe during the slowloris")
        worst = max(worst, lt.now() - q0)
        n += 1
        # Closed ones show EOF or a reset to a read.
        r, _, _ = select.select(open_, [], [], 0.2)
        for s in r:
            try:
                if s.recv(4096) == b"":
                    open_.remove(s)
            except OSError:
                open_.remove(s)
    t.eq(len(open_), 0, "trickling connections still open after %.1fs" % (lt.now() - t0))
    t.le(0, worst, 0.5 * lt.SCALE, "the slowest probe took %.1f ms" % (worst * 1e3))
    t.note("%d probes during the slowloris, the slowest %.1f ms" % (n, worst * 1e3))
    t.ok(a.running(), "the agent lives")
    for s in slow:
        s.close()


def raw_request(port, data, timeout=5.0):
    """Sends data on a fresh connection; returns the answer's status code
    (None when closed without one)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # closed while we sent: the answer may still be there
        buf = b""
        while b"\r\n" not in buf:
            try:
                d = s.recv(4096)
            except OSError:
                break
            if not d:
                break
            buf += d
        parts = buf.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    finally:
        s.close()


def t_probe_oversized(t):
    """Oversized requests get their 4xx and a close, and cost nothing
    after: a 64 KiB header (431), a 16 KiB URL (414), a 10 MB body (413),
    1 MiB without a newline (400 or 431)."""
    a, port = standalone(t)
    cases = [
        (b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n", (431,)),
        (b"GET /" + b"a" * 16384 + b" HTTP/1.1\r\n\r\n", (414, 431)),
        (b"POST /livez HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 65536, (413,)),
        (b"G" * (1 << 20), (400, 431)),
    ]
    for data, want in cases:
        code = raw_request(port, data)
        t.ok(code in want, "%r...: expected %s, got %s" % (data[:24], want, code))
        t.eq(lt.http_status("127.0.0.1", port, "/livez"), 200, "/livez right after")
    t.ok(a.running(), "the agent lives")


if __name__ == "__main__":
    lt.main(PHASE_CASES + [
        ("resolving: worker killed, its replacement joins", t_resolving_worker_kill),
        ("resolving: worker stopped, resolves and joins on SIGCONT", t_resolving_worker_stop),
        ("resolving: worker cut off from DNS, resolves once the link is back",
         t_resolving_worker_partition),
        ("DNS server down: exit 3 at --dns-timeout; used once it is up", t_dns_down),
        ("DNS server silent: exit 3 at --dns-timeout", t_dns_silent),
        ("DNS SERVFAIL: exit 3 at --dns-timeout; resolves once it stops", t_dns_servfail),
        ("DNS server slow (0.4 s, 1.2 s): resolves", t_dns_slow),
        ("a member of another group size is refused with 4", t_other_size),
        ("oversized and zero-length frames end their connection at once", t_rdzv_oversized),
        ("a fake leader without the token cannot end a worker that holds it", t_fake_leader),
        ("silent, dripping and flooding rendezvous connections", t_rdzv_slow_and_flood),
        ("slowloris on the probe port", t_probe_slowloris),
        ("oversized requests on the probe port", t_probe_oversized),
    ])
