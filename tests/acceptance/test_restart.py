#!/usr/bin/env python3
"""--on-failure restart: a group restarted in place under the next epoch.

Each rank's engine is a shell that records, for every launch, the epoch it
got in LWSINIT_EPOCH and in its argv ({epoch}), its pid and a
CLOCK_MONOTONIC timestamp, in launch-RANK (one line a launch), then execs
sleep, so that the test can kill it (a crash) by pid. The agents stay up
across a restart; a restart that cannot go on ends in a clean exit with the
code of --on-failure exit and no engine left running.
"""
import json
import os
import signal
import time

import lwsitest as lt
from test_group import Group
from test_group_health import Health

HB = 100
FAST = ["--heartbeat", str(HB), "--peer-timeout", str(int(2000 * lt.SCALE)),
        "--upstream-interval", str(HB), "--upstream-timeout", "300", "--grace", "2",
        "--on-failure", "restart", "--node-check", "off"]
# $0: the folder; $1: {epoch} as the agent expanded it.
ENGINE = ('D=$0; echo "$LWSINIT_EPOCH $1 $$ $(cut -d" " -f1 /proc/uptime)" '
          '>> "$D/launch-$LWSINIT_RANK"; exec sleep 600')


def engine(t):
    return ["sh", "-c", ENGINE, t.tmp, "{epoch}"]


def launches(t, rank):
    """[(env epoch, argv epoch, pid)] of rank's launches so far."""
    try:
        with open(t.path("launch-%d" % rank)) as f:
            return [tuple(int(x) for x in line.split()[:3]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def group(t, size, opts=(), healths=None):
    g = Group(t, size, opts=FAST + list(opts))
    for r in range(size):
        start(t, g, r, healths)
    return g


def start(t, g, r, healths=None):
    up = ["--upstream", healths[r].url()] if healths else ["--upstream", "none"]
    return g.start(r, leader="127.0.0.1", opts=up, engine=engine(t),
                   env={"LWSINIT_TERMINATION_LOG": t.path("termlog-%d" % r)})


def wait_epoch(t, g, ranks, epoch, timeout=20):
    """Waits until each of ranks has launched under epoch."""
    for r in ranks:
        lt.wait_for(lambda r=r: any(e == epoch for e, _, _ in launches(t, r)), timeout,
                    "rank %d's engine to launch under epoch %d" % (r, epoch))


def status(g, rank):
    code, body = g.get(rank, "/status")
    return json.loads(body) if code == 200 else {}


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def crash(t, rank):
    """Kills rank's latest engine with SIGKILL (a crash, the OOM killer)."""
    pid = launches(t, rank)[-1][2]
    os.kill(pid, signal.SIGKILL)
    return pid


def check_once_per_epoch(t, size):
    """No member launched twice in one epoch, and argv and env agree."""
    for r in range(size):
        ls = launches(t, r)
        epochs = [e for e, _, _ in ls]
        t.eq(len(epochs), len(set(epochs)), "rank %d launched once per epoch: %r" % (r, ls))
        t.ok(all(e == a for e, a, _ in ls), "rank %d: LWSINIT_EPOCH is {epoch}: %r" % (r, ls))


def nothing_left(t, size):
    for r in range(size):
        for _, _, pid in launches(t, r):
            lt.wait_for(lambda pid=pid: not alive(pid), 10, "engine pid %d to be gone" % pid)
    t.ok(True, "no engine left running")


def t_worker_crash_restarts(t):
    """A worker's engine crashes: every member's engine is relaunched under
    epoch 1 ({epoch} and LWSINIT_EPOCH), the agents stay up, /status says
    epoch 1 and 1 restart, /metrics too."""
    g = group(t, 3)
    wait_epoch(t, g, range(3), 0)
    old = [launches(t, r)[-1][2] for r in range(3)]
    t0 = lt.now()
    crash(t, 1)
    wait_epoch(t, g, range(3), 1, timeout=20)
    took = lt.now() - t0
    t.le(1.0, took, 1.0 + 3.0 * lt.SCALE, "the group relaunched %.2f s after the crash "
         "(1 s backoff)" % took)
    for r in range(3):
        t.ok(not alive(old[r]), "rank %d's old engine is gone" % r)
        t.ok(g.agents[r].running(), "rank %d's agent stays up" % r)
    for r in range(3):
        lt.wait_for(lambda r=r: status(g, r).get("phase") == "running", 5,
                    "rank %d to be running" % r)
        s = status(g, r)
        t.ok(s["epoch"] == 1 and s["restarts"] == 1, "rank %d's /status: epoch %r, restarts %r"
             % (r, s.get("epoch"), s.get("restarts")))
    code, metrics = g.get(0, "/metrics")
    t.ok("lwsinit_epoch 1\n" in metrics and "lwsinit_restarts_total 1\n" in metrics,
         "/metrics: lwsinit_epoch 1, lwsinit_restarts_total 1")
    check_once_per_epoch(t, 3)


def t_leader_crash_restarts(t):
    """The leader's own engine crashes: the same restart."""
    g = group(t, 2)
    wait_epoch(t, g, range(2), 0)
    crash(t, 0)
    wait_epoch(t, g, range(2), 1)
    t.ok(g.agents[0].running() and g.agents[1].running(), "both agents stay up")
    check_once_per_epoch(t, 2)


def t_hang_restarts(t):
    """A worker's engine hangs (--hang-timeout): the group restarts."""
    hs = [Health(), Health()]
    try:
        g = group(t, 2, opts=["--hang-timeout", "1"], healths=hs)
        wait_epoch(t, g, range(2), 0)
        g.wait_ready(timeout=20)
        hs[1].mode = "hang"
        lt.wait_for(lambda: status(g, 1).get("phase") == "restarting", 15,
                    "rank 1 to be restarting")
        hs[1].mode = "ok"
        wait_epoch(t, g, range(2), 1)
        t.ok(g.agents[0].running() and g.agents[1].running(), "both agents stay up")
        lt.wait_for(lambda: g.ready(0), 15, "the leader to be ready again")
        check_once_per_epoch(t, 2)
    finally:
        for h in hs:
            h.close()


def t_budget(t):
    """--max-restarts 1: the second crash ends the group as --on-failure
    exit would: the crashed worker exits with its engine's status (137),
    the leader 6, nothing left running."""
    g = group(t, 2, opts=["--max-restarts", "1"])
    wait_epoch(t, g, range(2), 0)
    crash(t, 1)
    wait_epoch(t, g, range(2), 1)
    crash(t, 1)
    t.agent_rc(g.agents[1], 137, timeout=15)
    t.agent_rc(g.agents[0], 6, timeout=15)
    err = g.agents[0].stderr()
    t.ok("--max-restarts 1" in err and "giving up" in err, "the leader says why")
    check_once_per_epoch(t, 2)
    nothing_left(t, 2)


def t_leader_killed_while_restarting(t):
    """The leader's engine crashes and its agent is killed during
    `restarting` (the backoff): the worker exits 6, its engine stopped,
    nothing left running."""
    g = group(t, 2)
    wait_epoch(t, g, range(2), 0)
    crash(t, 0)
    lt.wait_for(lambda: status(g, 0).get("phase") == "restarting", 5, "the leader to restart")
    g.agents[0].kill(signal.SIGKILL)
    for _, _, pid in launches(t, 0):
        try:
            os.kill(pid, signal.SIGKILL)  # the pod's other processes go with it
        except ProcessLookupError:
            pass
    t.agent_rc(g.agents[1], 6, timeout=15)
    t.eq(len(launches(t, 1)), 1, "the worker launched nothing more")
    nothing_left(t, 2)


def t_lost_member_not_replaced(t):
    """A worker's agent is killed during `restarting` and no replacement
    comes within --rejoin-timeout: the group exits 6 (the member whose
    crash began the restart too: the loss, not its crash, ended the
    group)."""
    g = group(t, 3, opts=["--rejoin-timeout", "2"])
    wait_epoch(t, g, range(3), 0)
    crash(t, 1)
    lt.wait_for(lambda: status(g, 2).get("phase") == "restarting", 5, "rank 2 to restart")
    g.agents[2].kill(signal.SIGKILL)
    t0 = lt.now()
    t.agent_rc(g.agents[0], 6, timeout=15)
    t.agent_rc(g.agents[1], 6, timeout=15)
    t.le(1.5, lt.now() - t0, 2.0 + 3.0 * lt.SCALE, "the leader gave up after --rejoin-timeout")
    t.ok("no replacement joined" in g.agents[0].stderr(), "the leader says why")
    nothing_left(t, 2)


def t_worker_replaced(t):
    """A worker's agent is killed (its pod's processes with it) and a new
    agent starts at its rank within --rejoin-timeout: it joins, and the
    whole group restarts under epoch 1; the replacement learns the epoch."""
    g = group(t, 3)
    wait_epoch(t, g, range(3), 0)
    old = g.agents[2]
    old.kill(signal.SIGKILL)
    os.kill(launches(t, 2)[-1][2], signal.SIGKILL)
    lt.wait_for(lambda: status(g, 0).get("phase") == "restarting", 10, "the leader to restart")
    start(t, g, 2)
    wait_epoch(t, g, range(3), 1, timeout=20)
    for r in range(3):
        t.ok(g.agents[r].running(), "rank %d's agent is up" % r)
    lt.wait_for(lambda: status(g, 2).get("epoch") == 1, 5, "the replacement's epoch")
    check_once_per_epoch(t, 3)


lt.main([
    ("a worker's engine crash: the group relaunches under epoch 1", t_worker_crash_restarts),
    ("the leader's engine crash: the same", t_leader_crash_restarts),
    ("a hung engine (--hang-timeout): the group restarts", t_hang_restarts),
    ("--max-restarts 1 and two crashes: exit as with exit", t_budget),
    ("the leader killed while restarting: the worker exits 6", t_leader_killed_while_restarting),
    ("a lost member not replaced in --rejoin-timeout: exit 6", t_lost_member_not_replaced),
    ("a killed worker agent replaced at its rank: the group restarts", t_worker_replaced),
])
