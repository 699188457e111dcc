#!/usr/bin/env python3
"""A real group on one machine: each agent a real lwsinit process, the
leader's name served by a real dnsmasq and found through a resolv.conf
search list (bind-mounted over /etc/resolv.conf in the worker's own mount
namespace, as a pod has it), the engine a stand-in that records its argv
and the signals it gets.

Covers the group's formation (DNS, refusals, launch with the right rank)
and the parts of its health that need no network namespace (loss by kill,
stop and bye; readiness; coordinated stop).
"""
import json
import os
import random
import signal
import socket
import time

import dnsfix
import lwsitest as lt
import netfix

LEADER_NAME = "sglang-0.sglang.default"  # an LWS leader address: not an FQDN

# The engine: one script for every rank (the launch digest compares it),
# rank-dependent parts only through placeholders and LWSINIT_RANK. It
# records its argv and environment, then waits for signals.
ENGINE = ('T=$0; D=$1; shift; "$T" state "$D/state-$LWSINIT_RANK" "$@" && '
          'exec "$T" signals "$D/sig-$LWSINIT_RANK"')


def loopback_base():
    """A /24 of 127/8 for this test alone, so tests that run at the same
    time never share an address."""
    return "127.%d.%d" % (random.randint(1, 250), random.randint(1, 250))


class Group:
    """Agents of one group: leader rank 0 and workers, each on its own
    loopback address, with its own probe port and status socket."""

    def __init__(self, t, size, dns=None, opts=(), port=None, resolv=True):
        self.t = t
        self.size = size
        self.dns = dns
        self.base = loopback_base()
        self.port = port or lt.free_port()
        self.opts = list(opts)
        self.agents = {}
        self.probe = {}
        self.resolv = dns.resolv_conf() if (dns and resolv) else None

    def ip(self, rank):
        return "%s.%d" % (self.base, rank + 10)

    def start(self, rank, opts=(), env=None, leader=LEADER_NAME, size=None, pid1=False,
              engine=None, wrapper=None):
        t = self.t
        e = t.base_env()
        probe_port = lt.free_port(self.ip(rank))
        e["LWSINIT_PROBE_ADDR"] = "%s:%d" % (self.ip(rank), probe_port)
        e["LWSINIT_STATUS_SOCKET"] = t.path("status-%d-%d.sock" % (rank, len(t.agents)))
        e["HOSTNAME"] = "pod-%d" % rank
        e.update({"LWS_LEADER_ADDRESS": leader, "LWS_GROUP_SIZE": str(size or self.size),
                  "LWS_WORKER_INDEX": str(rank)})
        if env:
            e.update(env)
        args = ["--rdzv-port", str(self.port), "--log-level", "debug"] + self.opts + list(opts)
        if self.dns is not None:
            args += ["--dns-server", "127.0.0.1:%d" % self.dns.port]
        if wrapper is None:
            wrapper = ()
        if self.resolv and rank > 0:
            # The worker's own /etc/resolv.conf, as its pod would have it.
            wrapper = tuple(wrapper) + (lt.UNSHARE, "-m", "sh", "-c",
                                        'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                                        self.resolv)
        cmd = engine or ["sh", "-c", ENGINE, lt.TESTCHILD, t.tmp, "--node", "{rank}",
                         "--of", "{size}", "--leader", "{leader_ip}"]
        a = t.agent(cmd, opts=args, env=e, testchild=False, wrapper=wrapper, pid1=pid1)
        a.rank = rank
        self.agents[rank] = a
        self.probe[rank] = (self.ip(rank), probe_port)
        return a

    def start_all(self, order=None, **kw):
        for r in (order if order is not None else range(self.size)):
            self.start(r, **kw)

    def state(self, rank, timeout=10):
        path = self.t.path("state-%d" % rank)
        # testchild writes the state file whole (a rename), so it exists
        # only once complete.
        lt.wait_for(lambda: os.path.exists(path), timeout, "rank %d's engine to start" % rank)
        return lt.read_state(path)

    def wait_engines(self, ranks=None, timeout=15):
        """Waits until each engine handles signals (testchild wrote ready)."""
        for r in (ranks if ranks is not None else range(self.size)):
            path = self.t.path("sig-%d" % r)
            lt.wait_for(lambda: os.path.exists(path) and "ready" in open(path).read(),
                        timeout, "rank %d's engine to be up" % r)

    def engine_started(self, rank):
        return os.path.exists(self.t.path("sig-%d" % rank))

    def get(self, rank, path, timeout=2):
        """(status, body) of rank's probe endpoint path; (None, why) when
        nothing answered."""
        host, port = self.probe[rank]
        return lt.http_status(host, port, path, timeout, body=True)

    def ready(self, rank):
        return self.get(rank, "/readyz")[0] == 200

    def wait_ready(self, timeout=15):
        for r in range(self.size):
            lt.wait_for(lambda r=r: self.ready(r), timeout, "rank %d to be ready" % r)


def argv_of(state):
    return " ".join(state["argv%d" % i] for i in range(int(state.get("argc", "0"))))


def t_group_of_4_leader_last(t):
    """Workers first, leader last: the group forms, each engine starts with
    its own rank, and none before the last member joined."""
    with dnsfix.Dns() as dns:
        g = Group(t, 4, dns=dns)
        for r in (1, 2, 3):
            g.start(r)
        # Workers resolve nothing yet: the leader's Service appears with it.
        time.sleep(0.3 * lt.SCALE)
        for r in (1, 2, 3):
            t.ok(not g.engine_started(r), "rank %d waits for the group" % r)
        dns.add(LEADER_NAME, g.ip(0))
        t_leader = lt.now()
        g.start(0)
        for r in range(4):
            st = g.state(r)
            t.ok(("--node %d --of 4 --leader %s" % (r, g.ip(0))) in argv_of(st),
                 "rank %d's engine got its rank and the leader: %s" % (r, argv_of(st)))
            t.eq(st.get("env.LWSINIT_RANK"), str(r), "rank %d's LWSINIT_RANK" % r)
            t.eq(st.get("env.LWSINIT_SIZE"), "4", "rank %d's LWSINIT_SIZE" % r)
        g.wait_ready()
        took = lt.now() - t_leader
        t.le(0, took, 10 * lt.SCALE, "the group formed %.3fs after the leader started" % took)
        st = lt.read_state(t.path("state-1"))
        t.eq(st.get("env.LWSINIT_LEADER_IP"), g.ip(0),
             "workers got the leader's resolved IP")
        # The leader stops: the whole group stops in order, every agent
        # with its engine's status (a stopping leader is not a lost member;
        # contract, "The init").
        g.agents[0].kill(signal.SIGTERM)
        t.agent_rc(g.agents[0], 0, timeout=10)
        for r in (1, 2, 3):
            t.agent_rc(g.agents[r], 0, timeout=10)
            sigs = open(t.path("sig-%d" % r)).read()
            t.ok("TERM" in sigs, "rank %d's engine got SIGTERM: %r" % (r, sigs))
        t.ok("the leader is stopping" in g.agents[1].stderr(),
             "a worker says the leader is stopping")


def t_leader_first_record_late(t):
    """The leader starts first; the workers start before its DNS record
    exists (LWS issue 746) and find it within a second of it appearing."""
    with dnsfix.Dns() as dns:
        g = Group(t, 3, dns=dns)
        g.start(0)
        g.start(1)
        g.start(2)
        time.sleep(0.8 * lt.SCALE)
        dns.add(LEADER_NAME, g.ip(0))
        t0 = lt.now()
        g.wait_ready(timeout=10)
        took = lt.now() - t0
        t.le(0, took, 1.5 * lt.SCALE, "ready %.3fs after the record appeared" % took)
        t.ok("after" in g.agents[1].stderr() and "tries" in g.agents[1].stderr(),
             "the worker logged its resolving tries")


def t_dns_never(t):
    with dnsfix.Dns() as dns:
        g = Group(t, 2, dns=dns, opts=["--dns-timeout", "1.5"])
        a = g.start(1)
        t.agent_rc(a, 3, timeout=8)
        err = a.stderr()
        t.ok(LEADER_NAME in err and "--dns-timeout" in err, "the line names the name: %s"
             % err.strip().splitlines()[-1])
        t.le(1.4, a.runtime, 4 * lt.SCALE, "gave up after --dns-timeout (%.2fs)" % a.runtime)


def t_wrong_revision(t):
    g = Group(t, 2)
    leader = g.start(0, opts=["--revision", "abc123"], leader="127.0.0.1")
    w = g.start(1, opts=["--revision", "def456"], leader="127.0.0.1")
    t.agent_rc(w, 4, timeout=10)
    t.ok("revision" in w.stderr(), "the worker says why: " + w.stderr().strip().splitlines()[-1])
    t.ok(leader.running(), "the leader keeps waiting")


def t_token(t):
    tok = t.path("token")
    with open(tok, "w") as f:
        f.write("s3cret\n")
    bad = t.path("bad")
    with open(bad, "w") as f:
        f.write("guess\n")
    g = Group(t, 3)
    leader = g.start(0, opts=["--token-file", tok], leader="127.0.0.1")
    # The leader's refusal of a wrong token cannot carry a proof this worker
    # can check, and anyone could have sent it: the worker keeps trying
    # until its deadline, and then says what it heard (docs/security.md 3.4).
    w1 = g.start(1, opts=["--token-file", bad, "--rdzv-timeout", "2"], leader="127.0.0.1")
    t.agent_rc(w1, 4, timeout=10)
    last = w1.stderr().strip().splitlines()[-1]
    t.ok("wrong token" in last and "without proof of the token" in last,
         "the wrong token's worker names the unproven refusal at its deadline: " + last)
    w2 = g.start(2, leader="127.0.0.1")
    t.agent_rc(w2, 4, timeout=10)
    t.ok(leader.running(), "the leader keeps waiting after refusing both")
    t.ok("s3cret" not in w1.stderr() + leader.stderr(), "the secret is never logged")
    # The right token joins (trailing whitespace is not part of it).
    with open(t.path("token2"), "w") as f:
        f.write("s3cret   \n\n")
    g.start(1, opts=["--token-file", t.path("token2")], leader="127.0.0.1")
    g.start(2, opts=["--token-file", tok], leader="127.0.0.1")
    for r in range(3):
        g.state(r)
    t.ok(True, "a group with the token formed")


def t_duplicate_rank(t):
    g = Group(t, 3)
    g.start(0, leader="127.0.0.1")
    first = g.start(1, leader="127.0.0.1")
    lt.wait_for(lambda: "joined the leader" in first.stderr(), 10, "rank 1 to join")
    dup = g.start(1, leader="127.0.0.1")
    t.agent_rc(dup, 4, timeout=10)
    t.ok("already" in dup.stderr(), "the newcomer is told the rank is held: "
         + dup.stderr().strip().splitlines()[-1])
    t.ok(first.running(), "the live member keeps its rank")


def t_rdzv_timeout(t):
    g = Group(t, 4, opts=["--rdzv-timeout", "1.5"])
    leader = g.start(0, leader="127.0.0.1")
    w = g.start(1, leader="127.0.0.1")
    t.agent_rc(leader, 4, timeout=10)
    t.agent_rc(w, 4, timeout=10)
    t.ok("2" in leader.stderr().splitlines()[-1] and "3" in leader.stderr().splitlines()[-1],
         "the leader names the ranks that never arrived: "
         + leader.stderr().strip().splitlines()[-1])


def t_mismatched_command(t):
    g = Group(t, 2)
    leader = g.start(0, leader="127.0.0.1")
    w = g.start(1, leader="127.0.0.1", opts=["--preset", "sglang"])
    t.agent_rc(leader, 4, timeout=10)
    t.agent_rc(w, 4, timeout=10)
    t.ok("1" in leader.stderr().strip().splitlines()[-1], "the line names rank 1: "
         + leader.stderr().strip().splitlines()[-1])
    t.ok(not g.engine_started(0) and not g.engine_started(1), "no engine started")


def t_garbage_and_half_open(t):
    """Garbage and a connection that never speaks do not stop the group."""
    g = Group(t, 2)
    leader = g.start(0, leader="127.0.0.1")
    lt.wait_for(lambda: "holding the rendezvous" in leader.stderr(), 10, "the leader to listen")
    junk = socket.create_connection(("127.0.0.1", g.port), timeout=2)
    junk.sendall(b"\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n" * 4)
    silent = socket.create_connection(("127.0.0.1", g.port), timeout=2)
    g.start(1, leader="127.0.0.1")
    g.wait_ready(timeout=10)
    t.ok(leader.running(), "the leader survived garbage")
    junk.close()
    silent.close()


def t_kill_worker(t):
    """kill -9 of a worker after launch: every other agent stops its engine
    and exits 6, naming the lost rank."""
    g = Group(t, 4, opts=["--heartbeat", "100", "--peer-timeout", "1000", "--grace", "2"])
    for r in range(4):
        g.start(r, leader="127.0.0.1", opts=["--termination-log", t.path("term-%d" % r)])
    g.wait_ready()
    g.wait_engines()
    t0 = lt.now()
    g.agents[2].kill(signal.SIGKILL)
    for r in (0, 1, 3):
        t.agent_rc(g.agents[r], 6, timeout=10)
    took = lt.now() - t0
    t.le(0, took, 3 * lt.SCALE, "the group stopped %.3fs after the kill" % took)
    t.ok("rank 2" in g.agents[0].stderr(), "the leader names rank 2")
    term = open(t.path("term-0")).read()
    t.ok("rank 2" in term and term.count("\n") == 1,
         "the termination log holds the reason: %r" % term)
    for r in (0, 1, 3):
        t.ok("TERM" in open(t.path("sig-%d" % r)).read(), "rank %d's engine was stopped" % r)


def t_stop_worker(t):
    """A SIGSTOP'd worker is as lost as a dead one, after --peer-timeout."""
    g = Group(t, 3, opts=["--heartbeat", "100", "--peer-timeout", "800", "--grace", "2"])
    for r in range(3):
        g.start(r, leader="127.0.0.1")
    g.wait_ready()
    t0 = lt.now()
    g.agents[1].kill(signal.SIGSTOP)
    t.agent_rc(g.agents[0], 6, timeout=10)
    took = lt.now() - t0
    t.le(0.7, took, 0.8 * 1.2 + 0.5 * lt.SCALE, "lost after %.3fs (peer-timeout 0.8s)" % took)
    t.agent_rc(g.agents[2], 6, timeout=10)
    t.ok("silent" in g.agents[0].stderr(), "the reason is silence")
    g.agents[1].kill(signal.SIGCONT)


def t_stay_policy(t):
    g = Group(t, 3, opts=["--heartbeat", "100", "--peer-timeout", "800",
                          "--on-peer-loss", "stay"])
    for r in range(3):
        g.start(r, leader="127.0.0.1")
    g.wait_ready()
    g.agents[2].kill(signal.SIGKILL)
    lt.wait_for(lambda: not g.ready(0), 5, "the leader to report unready")
    code, body = g.get(0, "/readyz?verbose")
    t.eq(code, 503, "leader /readyz")
    t.ok("[-]members" in body, "the failing check is members: " + body)
    t.ok(g.agents[0].running() and g.agents[1].running(), "the agents keep running")


def t_readiness_and_status(t):
    g = Group(t, 3, opts=["--readiness", "serving", "--drain-delay", "3",
                          "--on-peer-loss", "stay"])
    g.start(0, leader="127.0.0.1")
    lt.wait_for(lambda: g.get(0, "/livez")[0] == 200, 10, "the leader's /livez")
    t.eq(g.get(0, "/readyz")[0], 503, "leader unready while waiting")
    g.start(1, leader="127.0.0.1")
    g.start(2, leader="127.0.0.1")
    g.wait_ready()
    code, body = g.get(0, "/status")
    doc = json.loads(body)
    for k in ("rank", "size", "phase", "ready", "leader", "child", "upstream", "timings",
              "members"):
        t.ok(k in doc, "/status has %s" % k)
    t.eq(len(doc["members"]), 3, "three members")
    t.ok(all(m["alive"] for m in doc["members"]), "all alive")
    code, text = g.get(0, "/metrics")
    t.ok("lwsinit_members_alive 3" in text, "metrics count the members")
    # Stopping: unready at once, while the drain runs (the engine still
    # runs), and the leader learns from the bye, not from silence.
    g.wait_engines()
    g.agents[1].kill(signal.SIGTERM)
    lt.wait_for(lambda: g.get(1, "/readyz")[0] == 503, 2, "the worker to be unready")
    t.ok("TERM" not in open(t.path("sig-1")).read(), "the engine is not signalled yet")
    lt.wait_for(lambda: g.get(0, "/readyz")[0] == 503, 2, "the leader to notice the bye")
    code, body = g.get(0, "/readyz?verbose")
    t.ok("[-]members" in body, "the leader names the members check: " + body)


def status_doc(g, rank):
    """rank's /status document, or None while it does not answer."""
    code, body = g.get(rank, "/status")
    return json.loads(body) if code == 200 else None


def t_child_word_before_launch(t):
    """Before the launch a worker's row on the leader (from its heartbeat)
    and the worker's own child.state say the same word: the status
    document's, not-started."""
    g = Group(t, 3, opts=["--heartbeat", "100", "--peer-timeout", "1000"])
    g.start(0, leader="127.0.0.1")
    g.start(1, leader="127.0.0.1")

    def row():
        doc = status_doc(g, 0)
        if doc is None:
            return None
        r = [m for m in doc.get("members", []) if m["rank"] == 1 and "child" in m]
        return r[0] if r else None
    r = lt.wait_for(row, 10, "the leader to hear rank 1's heartbeat")
    own = lt.wait_for(lambda: status_doc(g, 1), 10, "rank 1's /status")
    t.eq(own["child"]["state"], "not-started", "rank 1's own child.state before launch")
    t.eq(r["child"], own["child"]["state"], "rank 1's row on the leader")
    me = [m for m in status_doc(g, 0)["members"] if m["rank"] == 0][0]
    t.eq(me["child"], "not-started", "the leader's own row")
    t.ok(not g.engine_started(1), "no engine started: the group is not whole")


def t_leader_restarts_before_release(t):
    """A leader killed before the group formed: the waiting worker keeps
    trying and joins the restarted leader (a new incarnation)."""
    g = Group(t, 3)
    first = g.start(0, leader="127.0.0.1")
    w1 = g.start(1, leader="127.0.0.1")
    lt.wait_for(lambda: "joined the leader" in w1.stderr(), 10, "rank 1 to join")
    first.kill(signal.SIGKILL)
    t.agent_rc(first, 137 if first.pid1 else -9, timeout=5)
    g.start(0, leader="127.0.0.1")
    g.start(2, leader="127.0.0.1")
    g.wait_ready(timeout=15)
    t.ok(w1.running(), "rank 1 is part of the new group")
    t.eq(g.state(1).get("env.LWSINIT_RANK"), "1", "rank 1's engine ran")


def t_leader_moves_before_release(t):
    """The leader's record changes while the group forms (a recreated
    leader pod at a new IP): waiting workers look the name up again and
    connect to the new address."""
    if not netfix.netns_available():
        raise lt.Skip("no network namespaces here (ip netns)")
    with dnsfix.Dns() as dns, netfix.Netns() as ns:
        g = Group(t, 2, dns=dns)
        # The old pod's address: a host of the test's own, where nothing
        # listens (connections are refused), unlike any 127/8 address,
        # which would reach the new leader listening on all addresses.
        dns.add(LEADER_NAME, ns.ns_ip)
        w = g.start(1)
        lt.wait_for(lambda: "is %s" % ns.ns_ip in w.stderr(), 10,
                    "the worker to resolve the old IP")
        dns.add(LEADER_NAME, g.ip(0))
        g.start(0)
        lt.wait_for(lambda: "now resolves to %s" % g.ip(0) in w.stderr(), 10,
                    "the worker to find the new address")
        g.wait_ready(timeout=15)
        t.eq(g.state(1).get("env.LWSINIT_LEADER_IP"), g.ip(0), "the engine got the new leader IP")


def t_group_of_16(t):
    g = Group(t, 16)
    for r in range(16):
        g.start(r, leader="127.0.0.1")
    for r in range(16):
        st = g.state(r, timeout=20)
        t.eq(st.get("env.LWSINIT_RANK"), str(r), "rank %d" % r)


if __name__ == "__main__":
  lt.main([
      ("a group of 4 forms with the leader last; ranks right; SIGTERM stops all",
       t_group_of_4_leader_last),
      ("a late DNS record is found within a second", t_leader_first_record_late),
      ("a name that never appears exits 3", t_dns_never),
      ("a wrong revision is refused", t_wrong_revision),
      ("wrong and missing tokens are refused", t_token),
      ("a duplicate rank is refused, the holder keeps it", t_duplicate_rank),
      ("the rendezvous deadline names the missing ranks", t_rdzv_timeout),
      ("a mismatched launch command fails the group", t_mismatched_command),
      ("garbage and half-open connections do not stop the group", t_garbage_and_half_open),
      ("a killed worker stops the group with 6", t_kill_worker),
      ("a stopped worker is lost after --peer-timeout", t_stop_worker),
      ("--on-peer-loss stay marks the group unready", t_stay_policy),
      ("readiness, status and metrics of a group", t_readiness_and_status),
      ("a worker's child state before launch is one word on both sides",
       t_child_word_before_launch),
      ("a leader restarted before release is joined again", t_leader_restarts_before_release),
      ("a leader that moves before release is found at its new IP",
       t_leader_moves_before_release),
      ("a group of 16 forms", t_group_of_16),
  ])
