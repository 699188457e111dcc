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
import re
import signal

import dnsfix
import lwsitest as lt
from test_group import LEADER_NAME, Group
from test_group_health import Health

HB = 100
FAST = ["--heartbeat", str(HB), "--peer-timeout", str(int(2000 * lt.SCALE)),
        "--upstream-interval", str(HB), "--upstream-timeout", "300", "--grace", "2",
        "--on-failure", "restart", "--node-check", "off"]
# $0: the folder; $1: {epoch} as the agent expanded it. A SIGTERM that
# comes while the launch is being recorded (a group that restarts at once)
# waits for the record, then ends the engine as it would have: every launch
# is counted.
ENGINE = ('D=$0; trap "T=1" TERM; echo "$LWSINIT_EPOCH $1 $$ $(cut -d" " -f1 /proc/uptime)" '
          '>> "$D/launch-$LWSINIT_RANK"; trap - TERM; [ -z "$T" ] || kill -TERM $$; '
          'exec sleep 600')


def engine(t):
    return ["sh", "-c", ENGINE, t.tmp, "{epoch}"]


def launches(t, rank):
    """[(env epoch, argv epoch, pid)] of rank's launches so far."""
    try:
        with open(t.path("launch-%d" % rank)) as f:
            return [tuple(int(x) for x in line.split()[:3]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


GPUCHECK = os.environ.get("LWSI_GPUCHECK", "")
FAKEGPU = os.environ.get("LWSI_FAKEGPU") or os.path.normpath(os.path.join(
    os.path.dirname(GPUCHECK), "..", "tests", "gpu", "libfakegpu.so"))


def group(t, size, opts=(), healths=None, gpus=False):
    g = Group(t, size, opts=FAST + list(opts) + (["--gpus", "2"] if gpus else []))
    for r in range(size):
        start(t, g, r, healths, gpus)
    return g


def gpu_env(t, r):
    """Fake NVML for rank r: its process list is the file nvml-R."""
    if not os.path.exists(FAKEGPU) or not os.access(GPUCHECK, os.X_OK):
        raise lt.Skip("the fake GPU library or the check is not built (%s)" % FAKEGPU)
    open(t.path("nvml-%d" % r), "a").close()
    return {"LWSINIT_GPUCHECK": GPUCHECK, "LWSINIT_NVML": FAKEGPU, "FAKEGPU_DEVICES": "2",
            "FAKEGPU_NVML_PIDS": t.path("nvml-%d" % r)}


def start(t, g, r, healths=None, gpus=False):
    up = ["--upstream", healths[r].url()] if healths else ["--upstream", "none"]
    env = {"LWSINIT_TERMINATION_LOG": t.path("termlog-%d" % r)}
    if gpus:
        env.update(gpu_env(t, r))
    return g.start(r, leader="127.0.0.1", opts=up, engine=engine(t), env=env)


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


def agent_launches(g, rank):
    """The epochs rank's agent says it started an engine under."""
    return [int(m) for m in re.findall(r"started the engine '[^']*' as pid \d+ "
                                       r"\(rank \d+ of \d+, epoch (\d+)\)",
                                       g.agents[rank].stderr())]


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


def kill_leader(t, g):
    """SIGKILL to the leader's agent, and its engines with it (the pod's
    other processes go with its container)."""
    g.agents[0].kill(signal.SIGKILL)
    for _, _, pid in launches(t, 0):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def t_leader_killed_while_restarting(t):
    """The leader's engine crashes and its agent is killed during
    `restarting` (the backoff), and no new leader comes within
    --rejoin-timeout: the worker exits 6, its engine stopped, nothing left
    running."""
    g = group(t, 2, opts=["--rejoin-timeout", "2"])
    wait_epoch(t, g, range(2), 0)
    crash(t, 0)
    lt.wait_for(lambda: status(g, 0).get("phase") == "restarting", 5, "the leader to restart")
    kill_leader(t, g)
    t.agent_rc(g.agents[1], 6, timeout=15)
    t.eq(len(launches(t, 1)), 1, "the worker launched nothing more")
    nothing_left(t, 2)


def t_leader_replaced(t):
    """The leader's agent is killed (SIGKILL, its engine with it) and a new
    leader agent starts at rank 0 within --rejoin-timeout: every worker
    stops its engine, joins the new leader, and the whole group relaunches
    under epoch 1, which the new leader took from the workers (it knows
    nothing of epoch 0); no engine twice in one epoch; then a worker's
    crash restarts the new group under epoch 2 as usual."""
    g = group(t, 3, opts=["--rejoin-timeout", "20"])
    wait_epoch(t, g, range(3), 0)
    old = [launches(t, r)[-1][2] for r in (1, 2)]
    kill_leader(t, g)
    for r in (1, 2):
        lt.wait_for(lambda r=r: status(g, r).get("phase") == "restarting", 10,
                    "rank %d to be restarting" % r)
    for pid in old:
        lt.wait_for(lambda pid=pid: not alive(pid), 10, "the workers' engines to stop")
    t0 = lt.now()
    start(t, g, 0)
    wait_epoch(t, g, range(3), 1, timeout=20)
    t.note("relaunched %.2f s after the new leader started" % (lt.now() - t0))
    for r in range(3):
        t.ok(g.agents[r].running(), "rank %d's agent is up" % r)
        lt.wait_for(lambda r=r: status(g, r).get("phase") == "running", 5,
                    "rank %d to be running" % r)
        t.eq(status(g, r).get("epoch"), 1, "rank %d's /status epoch" % r)
    t.ok("goes on under epoch 1" in g.agents[0].stderr(), "the new leader says where the "
         "epoch comes from")
    for r in (1, 2):
        t.ok("waiting up to 20 s (--rejoin-timeout) for a new leader" in g.agents[r].stderr(),
             "rank %d says it waits for a new leader" % r)
    check_once_per_epoch(t, 3)
    crash(t, 2)
    wait_epoch(t, g, range(3), 2, timeout=20)
    check_once_per_epoch(t, 3)


def t_leader_not_replaced(t):
    """The leader's agent is killed and no new leader comes within
    --rejoin-timeout 2: the workers stop their engines and exit 6 after
    it, saying why; nothing left running."""
    g = group(t, 3, opts=["--rejoin-timeout", "2"])
    wait_epoch(t, g, range(3), 0)
    kill_leader(t, g)
    t0 = lt.now()
    for r in (1, 2):
        t.agent_rc(g.agents[r], 6, timeout=15)
    took = lt.now() - t0
    t.le(1.5, took, 2.0 + 4.0 * lt.SCALE, "the workers gave up %.2f s after the loss "
         "(--rejoin-timeout 2)" % took)
    for r in (1, 2):
        t.ok("no new leader" in g.agents[r].stderr() and "--rejoin-timeout" in
             g.agents[r].stderr(), "rank %d says why" % r)
        t.eq(len(launches(t, r)), 1, "rank %d launched nothing more" % r)
    # The killed leader's engine is the test's to reap (its agent is gone).
    for r in (1, 2):
        pid = launches(t, r)[0][2]
        lt.wait_for(lambda pid=pid: not alive(pid), 10, "rank %d's engine to be gone" % r)


def t_leader_lost_budget(t):
    """--max-restarts 1: a worker's crash spends the budget, so the
    leader's loss after it ends the group at once: the worker exits 6
    without waiting for a new leader, saying why."""
    g = group(t, 2, opts=["--max-restarts", "1", "--rejoin-timeout", "20"])
    wait_epoch(t, g, range(2), 0)
    crash(t, 1)
    wait_epoch(t, g, range(2), 1)
    kill_leader(t, g)
    t0 = lt.now()
    t.agent_rc(g.agents[1], 6, timeout=10)
    t.le(0, lt.now() - t0, 3.0 * lt.SCALE, "the worker gave up at once, not after "
         "--rejoin-timeout")
    err = g.agents[1].stderr()
    t.ok("--max-restarts 1" in err and "giving up" in err, "the worker says why")
    pid = launches(t, 1)[-1][2]
    lt.wait_for(lambda: not alive(pid), 10, "rank 1's engine to be gone")


def t_leader_moved(t):
    """The leader's pod is recreated at a new IP: its DNS record moves, a
    new leader agent starts, and the workers, resolving the name again,
    join it there; the group relaunches under epoch 1."""
    with dnsfix.Dns() as dns:
        g = Group(t, 2, dns=dns, opts=FAST + ["--rejoin-timeout", "20"])
        dns.add(LEADER_NAME, g.ip(0))
        for r in range(2):
            g.start(r, opts=["--upstream", "none"], engine=engine(t),
                    env={"LWSINIT_TERMINATION_LOG": t.path("termlog-%d" % r)})
        wait_epoch(t, g, range(2), 0)
        kill_leader(t, g)
        lt.wait_for(lambda: status(g, 1).get("phase") == "restarting", 10,
                    "rank 1 to be restarting")
        moved = g.ip(5)
        dns.add(LEADER_NAME, moved)
        # The new leader listens on every address, the old one too: it
        # starts once the worker has moved, so that the join proves where
        # the worker went.
        lt.wait_for(lambda: "now resolves to %s" % moved in g.agents[1].stderr(), 10,
                    "the worker to resolve the leader's name again")
        g.start(0, opts=["--upstream", "none"], engine=engine(t),
                env={"LWSINIT_TERMINATION_LOG": t.path("termlog-0")})
        wait_epoch(t, g, range(2), 1, timeout=20)
        t.ok("joined the leader at %s:" % moved in g.agents[1].stderr(),
             "the worker joined the new leader at %s" % moved)
        check_once_per_epoch(t, 2)


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


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def t_gpu_wait(t):
    """--gpus: a member waits until NVML lists no process of its old
    engine (the fake NVML lists the crashed engine's pid until the test
    clears it); only then does the group relaunch."""
    g = group(t, 2, gpus=True)
    wait_epoch(t, g, range(2), 0)
    pid = launches(t, 1)[-1][2]
    with open(t.path("nvml-1"), "w") as f:
        f.write("1 %d\n" % pid)
    crash(t, 1)
    lt.sleep_until(lt.now() + 2.0)
    t.eq([e for e, _, _ in launches(t, 0)], [0], "nobody relaunched while the GPU is held")
    t.ok("waiting up to 60 s for the GPUs" in g.agents[1].stderr(), "rank 1 waits for its GPUs")
    freed = uptime()
    open(t.path("nvml-1"), "w").close()
    wait_epoch(t, g, range(2), 1)
    with open(t.path("launch-0")) as f:
        at = float(f.read().splitlines()[-1].split()[3])
    t.ok(at >= freed - 0.02, "the relaunch came after the GPU was free (%.2f >= %.2f)"
         % (at, freed))
    check_once_per_epoch(t, 2)


def gpu_check_group(t, size, opts=()):
    """A group with --gpu-check cuda on the fake GPUs, its check program
    behind a wrapper that appends "RANK MODE UPTIME" to checks for every
    run (the GPU wait, gpu-free, runs the same program)."""
    wrapper = t.path("gpucheck-wrapper")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\necho "$LWSINIT_T_RANK $1 $(cut -d" " -f1 /proc/uptime)" >> "%s"\n'
                'exec "%s" "$@"\n' % (t.path("checks"), GPUCHECK))
    os.chmod(wrapper, 0o755)
    g = Group(t, size, opts=FAST + ["--gpus", "2", "--gpu-check", "cuda", "--gpu-check-bytes",
                                    "65536", "--gpu-check-timeout", "8"] + list(opts))
    for r in range(size):
        gpu_check_start(t, g, r)
    return g


def gpu_check_start(t, g, r):
    env = gpu_env(t, r)
    env.update({"LWSINIT_TERMINATION_LOG": t.path("termlog-%d" % r),
                "LWSINIT_GPUCHECK": t.path("gpucheck-wrapper"), "LWSINIT_CUDART": FAKEGPU,
                "LWSINIT_NCCL": FAKEGPU, "LWSINIT_NODE_CHECK": "warn",
                "LWSINIT_T_RANK": str(r)})
    return g.start(r, leader="127.0.0.1", opts=["--upstream", "none"], engine=engine(t),
                   env=env)


def checks(t, rank):
    """The uptimes of rank's GPU check runs (not its GPU waits)."""
    try:
        with open(t.path("checks")) as f:
            rows = [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [float(u) for r, mode, u in rows if r == str(rank) and mode == "cuda"]


def launch_times(t, rank):
    with open(t.path("launch-%d" % rank)) as f:
        return [float(line.split()[3]) for line in f if line.strip()]


def t_gpu_check_again(t):
    """--gpu-check cuda: the check runs once on each member before the
    first launch, and again on each member after a crash, after the crash
    and before that member's relaunch under epoch 1; one check a launch."""
    g = gpu_check_group(t, 2)
    wait_epoch(t, g, range(2), 0)
    for r in range(2):
        t.eq(len(checks(t, r)), 1, "rank %d checked its GPUs once before the first launch" % r)
    crashed = uptime()
    crash(t, 1)
    wait_epoch(t, g, range(2), 1)
    for r in range(2):
        cs, ls = checks(t, r), launch_times(t, r)
        t.eq(len(cs), 2, "rank %d checked its GPUs again for the relaunch" % r)
        t.ok(cs[1] >= crashed - 0.02 and cs[1] <= ls[1],
             "rank %d: the second check (%.2f) came after the crash (%.2f) and before the "
             "relaunch (%.2f)" % (r, cs[1], crashed, ls[1]))
        lt.wait_for(lambda r=r: status(g, r).get("phase") == "running", 5,
                    "rank %d to be running" % r)
    t.ok("running the GPU check again" in g.agents[0].stderr(), "the leader says so")
    check_once_per_epoch(t, 2)


def t_gpu_check_new_leader(t):
    """--gpu-check cuda and the leader's agent replaced: the group formed
    around the new leader checks its GPUs again (the workers a second
    time, the new leader its first) before it launches under epoch 1."""
    g = gpu_check_group(t, 2, opts=["--rejoin-timeout", "20"])
    wait_epoch(t, g, range(2), 0)
    g.agents[0].kill(signal.SIGKILL)
    os.kill(launches(t, 0)[-1][2], signal.SIGKILL)
    lt.wait_for(lambda: status(g, 1).get("phase") == "restarting", 10, "rank 1 to restart")
    gpu_check_start(t, g, 0)
    wait_epoch(t, g, range(2), 1)
    t.eq(len(checks(t, 0)), 2, "rank 0 (both leaders) checked its GPUs twice in all")
    cs, ls = checks(t, 1), launch_times(t, 1)
    t.ok(len(cs) == 2 and ls[0] <= cs[1] <= ls[1], "rank 1 checked again before its relaunch "
         "(%r, launches %r)" % (cs, ls))
    check_once_per_epoch(t, 2)


def t_gpu_check_again_fails(t):
    """The check run again fails on a member (the fake library loses a
    GPU: FAKEGPU_DEVICES=1 from the relaunch on): the group ends as a
    failed check ends it before the first launch (exit 5 on both), nobody
    launches under epoch 1, nothing left running."""
    g = gpu_check_group(t, 2)
    wait_epoch(t, g, range(2), 0)
    # Rank 1's check sees one GPU of its two from now on.
    wrapper = t.path("gpucheck-wrapper")
    with open(wrapper + ".new", "w") as f:
        f.write('#!/bin/sh\necho "$LWSINIT_T_RANK $1 $(cut -d" " -f1 /proc/uptime)" >> "%s"\n'
                '[ "$LWSINIT_T_RANK" = 1 ] && [ "$1" = cuda ] && export FAKEGPU_DEVICES=1\n'
                'exec "%s" "$@"\n' % (t.path("checks"), GPUCHECK))
    os.chmod(wrapper + ".new", 0o755)
    os.rename(wrapper + ".new", wrapper)
    crash(t, 0)
    t.agent_rc(g.agents[1], 5, timeout=30)
    t.agent_rc(g.agents[0], 5, timeout=30)
    t.ok("GPU check failed on rank 1" in g.agents[0].stderr(), "the leader names rank 1")
    for r in range(2):
        t.eq([e for e, _, _ in launches(t, r)], [0], "rank %d launched nothing more" % r)
    nothing_left(t, 2)


def t_gpu_never_free(t):
    """A member whose GPUs never free up (--gpu-free-timeout 1): the group
    ends as with exit: that member exits with its engine's status, the
    leader 6 naming it; nothing left running."""
    g = group(t, 2, gpus=True, opts=["--gpu-free-timeout", "1"])
    wait_epoch(t, g, range(2), 0)
    with open(t.path("nvml-1"), "w") as f:
        f.write("%d\n" % launches(t, 1)[-1][2])
    crash(t, 1)
    t.agent_rc(g.agents[1], 137, timeout=15)
    t.agent_rc(g.agents[0], 6, timeout=15)
    err = g.agents[0].stderr()
    t.ok("rank 1 cannot restart: the GPUs did not become free" in err,
         "the leader names the member: %r" % err.strip().splitlines()[-1])
    nothing_left(t, 2)


# The same engine, but one that ignores SIGTERM where the agent's
# environment says so (the disposition survives exec, signal(7)), so that
# its stop for a restart takes --grace and the test can crash it meanwhile.
# Where LWSI_T_CRASH_FROM says so, it exits 3 at once from that epoch on
# (an engine that cannot start any more: a crash loop).
ENGINE_STUBBORN = ('D=$0; trap "T=1" TERM; '
                   'echo "$LWSINIT_EPOCH $1 $$ $(cut -d" " -f1 /proc/uptime)" '
                   '>> "$D/launch-$LWSINIT_RANK"; trap - TERM; [ -z "$T" ] || kill -TERM $$; '
                   '[ -n "$LWSI_T_CRASH_FROM" ] && [ "$LWSINIT_EPOCH" -ge "$LWSI_T_CRASH_FROM" ] '
                   '&& exit 3; '
                   '[ -n "$LWSI_T_IGNORE_TERM" ] && trap "" TERM; exec sleep 600')


def crash_while_restarting(t, victim):
    """A member's engine crashes again during `restarting`, before the
    relaunch: victim's engine ignores SIGTERM (--grace 6), and while the
    restart begun by rank 1's crash waits for it, the test kills it
    (SIGKILL). The restart under way covers that crash: the group
    relaunches once, under epoch 1, with --max-restarts 1 not spent twice,
    every agent up, no engine twice in one epoch. A crash after that
    relaunch spends the budget: the group gives up as with exit (rank 1
    137, the others 6), nothing left running."""
    g = Group(t, 3, opts=FAST + ["--grace", "6", "--max-restarts", "1"])
    for r in range(3):
        env = {"LWSINIT_TERMINATION_LOG": t.path("termlog-%d" % r)}
        if r == victim:
            env["LWSI_T_IGNORE_TERM"] = "1"
        g.start(r, leader="127.0.0.1", opts=["--upstream", "none"], env=env,
                engine=["sh", "-c", ENGINE_STUBBORN, t.tmp, "{epoch}"])
    wait_epoch(t, g, range(3), 0)
    stubborn = launches(t, victim)[-1][2]
    crash(t, 1)
    lt.wait_for(lambda: status(g, victim).get("phase") == "restarting", 5,
                "rank %d to restart" % victim)
    # Past the 1 s backoff: only the victim's engine, still in its grace,
    # holds the relaunch back.
    lt.sleep_until(lt.now() + 1.5)
    t.ok(alive(stubborn), "rank %d's engine still runs in its grace" % victim)
    t.eq([e for e, _, _ in launches(t, 0)], [0], "nobody relaunched before rank %d was ready"
         % victim)
    os.kill(stubborn, signal.SIGKILL)
    wait_epoch(t, g, range(3), 1)
    lt.sleep_until(lt.now() + 2.5)  # a second restart would have come by now (2 s backoff)
    for r in range(3):
        t.ok(g.agents[r].running(), "rank %d's agent stays up" % r)
        t.eq([e for e, _, _ in launches(t, r)], [0, 1], "rank %d's launches" % r)
        s = status(g, r)
        t.ok(s.get("epoch") == 1 and s.get("restarts") == 1,
             "rank %d's /status: epoch %r, restarts %r" % (r, s.get("epoch"), s.get("restarts")))
    check_once_per_epoch(t, 3)
    crash(t, 1)
    t.agent_rc(g.agents[1], 137, timeout=15)
    t.agent_rc(g.agents[0], 6, timeout=15)
    t.agent_rc(g.agents[2], 6, timeout=15)
    t.ok("giving up" in g.agents[0].stderr(), "the leader says why")
    check_once_per_epoch(t, 3)
    nothing_left(t, 3)


def t_crash_loop(t):
    """Rank 1's engine crashes (the test kills it), then its relaunched
    engines exit 3 at once, while the others are just launched: with
    --max-restarts 2 the group restarts once more (epoch 2, after a 2 s
    backoff), then gives up: rank 1 exits 3, the others 6; every rank
    launched once in each of epochs 0, 1 and 2; nothing left running."""
    g = Group(t, 3, opts=FAST + ["--max-restarts", "2"])
    for r in range(3):
        env = {"LWSINIT_TERMINATION_LOG": t.path("termlog-%d" % r)}
        if r == 1:
            env["LWSI_T_CRASH_FROM"] = "1"
        g.start(r, leader="127.0.0.1", opts=["--upstream", "none"], env=env,
                engine=["sh", "-c", ENGINE_STUBBORN, t.tmp, "{epoch}"])
    wait_epoch(t, g, range(3), 0)
    t0 = lt.now()
    crash(t, 1)
    t.agent_rc(g.agents[1], 3, timeout=20)
    took = lt.now() - t0
    t.agent_rc(g.agents[0], 6, timeout=15)
    t.agent_rc(g.agents[2], 6, timeout=15)
    t.note("gave up %.2f s after the first crash" % took)
    t.le(3.0, took, 3.0 + 5.0 * lt.SCALE, "gave up %.1f s after the first crash (1 s, then "
         "2 s of backoff)" % took)
    for r in range(3):
        # The agent's own word: an engine stopped for the next restart
        # before its shell wrote a line (the crash comes at once, and a
        # busy machine may not have run the shell yet) was still launched.
        t.eq(agent_launches(g, r), [0, 1, 2], "rank %d's launches" % r)
        t.ok(set(e for e, _, _ in launches(t, r)) <= {0, 1, 2} and
             launches(t, r)[0][0] == 0 and launches(t, r)[-1][0] == 2,
             "rank %d's engines recorded epochs %r" % (r, launches(t, r)))
    err = g.agents[0].stderr()
    t.ok("--max-restarts 2" in err and "giving up" in err, "the leader says why")
    check_once_per_epoch(t, 3)
    nothing_left(t, 3)


def t_crash_while_restarting(t):
    """A worker's engine (rank 2) crashes while the group restarts."""
    crash_while_restarting(t, 2)


def t_leader_crash_while_restarting(t):
    """The leader's engine crashes while the group restarts."""
    crash_while_restarting(t, 0)


lt.main([
    ("--gpus: the restart waits for the GPUs to be free", t_gpu_wait),
    ("GPUs never free (--gpu-free-timeout): exit as with exit", t_gpu_never_free),
    ("--gpu-check: the check runs again before the relaunch", t_gpu_check_again),
    ("--gpu-check: a check that fails before the relaunch ends the group",
     t_gpu_check_again_fails),
    ("--gpu-check: the group formed around a new leader checks again", t_gpu_check_new_leader),
    ("a worker's engine crash: the group relaunches under epoch 1", t_worker_crash_restarts),
    ("the leader's engine crash: the same", t_leader_crash_restarts),
    ("a hung engine (--hang-timeout): the group restarts", t_hang_restarts),
    ("--max-restarts 1 and two crashes: exit as with exit", t_budget),
    ("the leader killed while restarting, not replaced: the worker exits 6",
     t_leader_killed_while_restarting),
    ("a lost member not replaced in --rejoin-timeout: exit 6", t_lost_member_not_replaced),
    ("a killed worker agent replaced at its rank: the group restarts", t_worker_replaced),
    ("the leader's agent replaced at rank 0: the group relaunches under epoch 1",
     t_leader_replaced),
    ("no new leader within --rejoin-timeout: the workers exit 6", t_leader_not_replaced),
    ("the leader's record moves to a new IP: the workers join it there", t_leader_moved),
    ("the budget spent, then the leader lost: the worker exits 6 at once",
     t_leader_lost_budget),
    ("a worker's engine crashing while restarting: one restart, then the budget",
     t_crash_while_restarting),
    ("the leader's engine crashing while restarting: the same",
     t_leader_crash_while_restarting),
    ("a relaunched engine that crashes at once: restarts once more, then gives up",
     t_crash_loop),
])
