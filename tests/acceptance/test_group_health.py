#!/usr/bin/env python3
"""Group-wide engine health: the leader's /readyz judging every member's
engine from its heartbeats, a hung engine (--hang-timeout) ending the
group with 7 and 6, the ordered stop of a group (the leader alone, and
the whole group at once), and --fail-delay.

Each rank's engine health URL is a small HTTP server of this test (one
per rank, on loopback), whose answer the test switches between 200, 503
and no answer at all (it accepts and never replies, like a hung engine
whose socket the kernel still accepts on). The engine itself is testchild
recording its signals with CLOCK_MONOTONIC timestamps, the clock the test
reads too.
"""
import json
import signal
import time

import lwsitest as lt
from test_group import Group

Health = lt.HealthServer

HB = 100  # ms: heartbeats and upstream polls, so that timings stay short
FAST = ["--heartbeat", str(HB), "--peer-timeout", str(int(3000 * lt.SCALE)),
        "--upstream-interval", str(HB), "--upstream-timeout", "300", "--grace", "5"]
# The engine: as test_group's, exiting 143 (as a real server killed by its
# SIGTERM handler would report) 300 ms after SIGTERM, so that the leader's
# engine is visibly still running while the workers wait for it.
ENGINE = ('T=$0; D=$1; shift; exec "$T" signals "$D/sig-$LWSINIT_RANK" --exit-code 143 '
          '--delay-ms 300')


def group(t, size, opts=(), healths=None):
    """A group of size on loopback, each rank's engine health URL one of
    healths (or none)."""
    g = Group(t, size, opts=FAST + list(opts))
    for r in range(size):
        up = ["--upstream", healths[r].url()] if healths else ["--upstream", "none"]
        g.start(r, leader="127.0.0.1", opts=up, engine=["sh", "-c", ENGINE, lt.TESTCHILD, t.tmp],
                env={"LWSINIT_TERMINATION_LOG": t.path("termlog-%d" % r)})
    return g


def events(t, rank):
    return lt.read_events(t.path("sig-%d" % rank))


def first(evs, word):
    for w, at in evs:
        if w == word:
            return at
    return None


def t_readyz_names_worker(t):
    """A worker's engine health URL failing turns the leader's /readyz 503
    within one heartbeat and one poll (plus slack); ?verbose names the
    member and the check; /status and /metrics show it; it recovers."""
    hs = [Health(), Health()]
    try:
        g = group(t, 2, healths=hs)
        g.wait_ready(timeout=20)
        hs[1].mode = "fail"
        t0 = lt.now()
        lt.wait_for(lambda: not g.ready(0), 5, "the leader to turn unready")
        took = lt.now() - t0
        t.le(0, took, (2 * HB / 1000 + 0.5) * lt.SCALE,
             "the leader's /readyz is 503 %.0f ms after the worker's upstream failed" %
             (took * 1e3))
        code, body = g.get(0, "/readyz?verbose")
        t.eq(code, 503, "readyz?verbose")
        t.ok("[-]members failed: rank 1's upstream is failing (HTTP 503" in body and
             ") since " in body,
             "?verbose names the member and the check: %r" % body)
        code, doc = g.get(0, "/status")
        row = json.loads(doc)["members"][1]
        t.ok(row["upstream"] is False and row["upstream_polled"] is True and
             "503" in row["upstream_error"], "/status shows rank 1's upstream: %r" % row)
        code, metrics = g.get(0, "/metrics")
        t.ok('lwsinit_member_upstream_healthy{rank="1"} 0' in metrics, "/metrics per member")
        hs[1].mode = "ok"
        lt.wait_for(lambda: g.ready(0), 5, "the leader to be ready again")
        t.ok(g.agents[0].running() and g.agents[1].running(), "nobody exited")
    finally:
        for h in hs:
            h.close()


def t_hang_exits_7_and_6(t):
    """A worker's engine that answered healthy, then stops answering for
    --hang-timeout: that worker stops its engine and exits 7, its line in
    the termination log; the leader exits 6 naming the rank."""
    hs = [Health(), Health()]
    try:
        g = group(t, 2, opts=["--hang-timeout", "1"], healths=hs)
        g.wait_ready(timeout=20)
        hs[1].mode = "hang"
        t0 = lt.now()
        t.agent_rc(g.agents[1], 7, timeout=15)
        took = lt.now() - t0
        t.le(1.0, took, 1.0 + 0.3 + 2.0 * lt.SCALE, "the worker exited 7 after %.2f s" % took)
        t.agent_rc(g.agents[0], 6, timeout=15)
        log = open(t.path("termlog-1")).read()
        t.ok(log.startswith("the engine hung: its health URL " + hs[1].url()) and
             "has failed every poll for" in log, "the termination log says so: %r" % log)
        t.ok("TERM" in [w for w, _ in events(t, 1)], "the hung engine got SIGTERM")
        err = g.agents[0].stderr()
        t.ok("the engine failed on rank 1: the engine hung" in err,
             "the leader's line names the rank: %r" % err.strip().splitlines()[-1])
    finally:
        for h in hs:
            h.close()


def t_never_healthy_is_not_a_hang(t):
    """An engine that never answered healthy is a slow start, not a hang:
    nobody exits, the leader stays unready naming the member."""
    hs = [Health(), Health()]
    hs[1].mode = "fail"
    try:
        g = group(t, 2, opts=["--hang-timeout", "1"], healths=hs)
        g.wait_engines(timeout=20)
        lt.sleep_until(lt.now() + 2.5)
        t.ok(g.agents[0].running() and g.agents[1].running(), "both agents run after 2.5 s")
        code, body = g.get(0, "/readyz?verbose")
        t.ok(code == 503 and "rank 1's upstream is failing" in body,
             "the leader is unready and says why: %r" % body)
    finally:
        for h in hs:
            h.close()


def check_ordered(t, g, drain):
    """Every worker's engine got SIGTERM only after the leader's had
    exited; the leader's only after its drain."""
    ev0 = events(t, 0)
    left = first(ev0, "exiting")
    t.ok(left is not None, "the leader's engine exited: %r" % ev0)
    for r in range(1, g.size):
        term = first(events(t, r), "TERM")
        t.ok(term is not None and term >= left,
             "rank %d's engine got SIGTERM %.0f ms after the leader's engine exited" %
             (r, ((term or 0) - left) * 1e3))


def t_leader_sigterm_ordered(t):
    """The leader alone gets SIGTERM (an eviction): the workers turn
    unready at once, keep their engines until the leader's has exited, and
    exit with their engines' statuses, not 6."""
    g = group(t, 3, opts=["--drain-delay", "2"])
    g.wait_ready(timeout=20)
    g.wait_engines()
    t0 = time.monotonic()
    g.agents[0].kill(signal.SIGTERM)
    lt.wait_for(lambda: not g.ready(1) and not g.ready(2), 2, "the workers to turn unready")
    t.le(0, time.monotonic() - t0, 1.0 * lt.SCALE, "the workers are unready at once")
    for r in range(3):
        t.agent_rc(g.agents[r], 143, timeout=20)
    lead_term = first(events(t, 0), "TERM")
    t.ok(lead_term is not None and lead_term - t0 >= 1.95,
         "the leader's engine got SIGTERM after the drain (%.2f s)" % ((lead_term or 0) - t0))
    check_ordered(t, g, 2)
    for r in (1, 2):
        t.ok("was lost" not in g.agents[r].stderr(), "rank %d saw no loss" % r)


def t_group_sigterm_all(t):
    """The whole group gets SIGTERM at once (a group deletion): every agent
    exits with its engine's status, the workers' engines after the
    leader's."""
    g = group(t, 3, opts=["--drain-delay", "1"])
    g.wait_ready(timeout=20)
    g.wait_engines()
    for r in (1, 2, 0):
        g.agents[r].kill(signal.SIGTERM)
    for r in range(3):
        t.agent_rc(g.agents[r], 143, timeout=20)
    check_ordered(t, g, 1)
    for r in range(3):
        t.ok("was lost" not in g.agents[r].stderr(), "rank %d saw no loss" % r)


def fail_delayed_worker(t, delay):
    """A worker whose leader's name never resolves: exit 3 after --fail-delay."""
    port = lt.free_port()
    probe = lt.free_port()
    a = t.agent(["exit", "0"], ["--leader", "no-such-leader.invalid", "--size", "2", "--rank", "1",
                                "--dns-server", "127.0.0.1:%d" % port, "--dns-timeout", "0.5",
                                "--fail-delay", str(delay), "--probe-addr",
                                "127.0.0.1:%d" % probe])
    return a, probe


def t_fail_delay(t):
    """--fail-delay: a member whose leader never resolves stays up, unready,
    with phase failed and the reason in /status, then exits 3; a SIGTERM
    during the delay exits 3 at once."""
    a, probe = fail_delayed_worker(t, 3)
    t0 = lt.now()

    def failed():
        code, doc = lt.http_status("127.0.0.1", probe, "/status", body=True)
        return code == 200 and json.loads(doc)["phase"] == "failed"
    lt.wait_for(failed, 5 * lt.SCALE, "the status to say failed")
    doc = json.loads(lt.http_status("127.0.0.1", probe, "/status", body=True)[1])
    t.ok("did not resolve" in (doc["last_error"] or ""), "last_error: %r" % doc["last_error"])
    t.eq(lt.http_status("127.0.0.1", probe, "/readyz"), 503, "unready during the delay")
    t.agent_rc(a, 3, timeout=10)
    t.le(3.0, lt.now() - t0, 6.0 * lt.SCALE, "exited 3 after the delay")

    a, probe = fail_delayed_worker(t, 30)
    lt.wait_for(failed, 5 * lt.SCALE, "the status to say failed")
    t1 = lt.now()
    a.kill(signal.SIGTERM)
    t.agent_rc(a, 3, timeout=5)
    t.le(0, lt.now() - t1, 1.0 * lt.SCALE, "SIGTERM during the delay exits 3 at once")


lt.main([
    ("the leader's readyz names a worker's failing upstream", t_readyz_names_worker),
    ("a hung engine: that member exits 7, the others 6", t_hang_exits_7_and_6),
    ("a never-healthy engine is not a hang", t_never_healthy_is_not_a_hang),
    ("the leader's SIGTERM stops the group in order", t_leader_sigterm_ordered),
    ("the whole group's SIGTERM: every agent exits with its engine's status",
     t_group_sigterm_all),
    ("--fail-delay keeps a failed member up, unready, then exits", t_fail_delay),
])
