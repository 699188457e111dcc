#!/usr/bin/env python3
"""The fault matrix, part 2: the engine, the init and the
agent's own resources (docs/reliability.md lists every row and the test
that holds it; rows already held by test_init*.py are not repeated here).

The engine exiting 0 or crashing, ignoring SIGTERM, or leaving a daemon
behind, in a group; descriptors exhausted (ulimit -n 64) under a flood of
connections; a termination log that cannot be written; the agent itself
stopped and continued; and the wall clock jumping by years while every
deadline still holds (an LD_PRELOAD shim, built here, moves
CLOCK_REALTIME, gettimeofday and time; the log's timestamps, the one thing
that reads that clock, show that it took effect).
"""
import datetime
import os
import re
import signal
import socket
import subprocess
import time

import lwsitest as lt
from test_group import Group

# Loss after 1 s of silence (3 s under sanitizers, whose agents a busy
# machine can starve for a second), heartbeats every 100 ms.
PEER_TIMEOUT = round(1.0 * lt.SCALE, 3)
PT_MS = str(int(PEER_TIMEOUT * 1000))
FAST = ["--heartbeat", "100", "--peer-timeout", PT_MS, "--grace", "2"]
SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def last_line(a):
    lines = a.stderr().strip().splitlines()
    return lines[-1] if lines else ""


def events(t, rank):
    try:
        with open(t.path("sig-%d" % rank)) as f:
            return [line.split()[0] for line in f.read().splitlines() if line.split()]
    except FileNotFoundError:
        return []


def engine_pid(g, rank):
    """The pid of rank's engine (testchild, after the shell exec'd it)."""
    return g.agents[rank].child(timeout=10)


# ---- the engine in a group --------------------------------------------------

def t_engine_exit0(t):
    """An engine that exits 0 on its own (its work done, or a launcher that
    returns): its agent exits 0 and tells the group, whose other agents
    stop their engines and exit 6 at once (the bye), not a peer-timeout
    later."""
    g = Group(t, 3, opts=["--heartbeat", "100", "--peer-timeout", str(int(5000 * lt.SCALE)),
                          "--grace", "2"])
    for r in range(3):
        g.start(r, leader="127.0.0.1")
    g.wait_engines(timeout=20)
    t0 = lt.now()
    pid = engine_pid(g, 1)
    os.kill(pid, signal.SIGTERM)  # testchild exits 0 on SIGTERM
    t.agent_rc(g.agents[1], 0)
    for r in (0, 2):
        t.agent_rc(g.agents[r], 6)
        t.ok("the engine failed on rank 1: the engine (pid %d) exited with status 0" % pid
             in g.agents[r].stderr(), "rank %d says why" % r)
        t.ok("TERM" in events(t, r), "rank %d's engine was stopped" % r)
    took = lt.now() - t0
    t.le(0, took, 1 + 2 * lt.SCALE, "the group stopped %.3fs after the exit (peer-timeout 5 s)"
         % took)


def t_engine_crash(t):
    """An engine that crashes (SIGSEGV): its agent exits 139 (128+11), the
    others stop their engines and exit 6."""
    engine = ['sh', '-c', 'if [ "$LWSINIT_RANK" = "$CRASH_RANK" ]; then exec "$0" sleep 1000; '
              'fi; exec "$0" signals "$1/sig-$LWSINIT_RANK"', lt.TESTCHILD, t.tmp]
    g = Group(t, 3, opts=FAST)
    for r in range(3):
        g.start(r, leader="127.0.0.1", engine=engine, env={"CRASH_RANK": "2"})
    g.wait_engines(ranks=(0, 1), timeout=20)
    crash = engine_pid(g, 2)
    os.kill(crash, signal.SIGSEGV)
    t.agent_rc(g.agents[2], 128 + signal.SIGSEGV)
    for r in (0, 1):
        t.agent_rc(g.agents[r], 6)
        t.ok("the engine failed on rank 2: the engine (pid %d) was killed by SIGSEGV (%d)"
             % (crash, 128 + signal.SIGSEGV) in g.agents[r].stderr(), "rank %d says why" % r)
        t.ok("TERM" in events(t, r), "rank %d's engine was stopped" % r)


def t_engine_ignores_term(t):
    """Engines that ignore SIGTERM, stopped for the group (a member lost):
    SIGKILL after --grace, and the exit status is still 6, the group's
    reason, not the engine's 137."""
    engine = ['sh', '-c', 'exec "$0" signals "$1/sig-$LWSINIT_RANK" --ignore-term',
              lt.TESTCHILD, t.tmp]
    g = Group(t, 3, opts=["--heartbeat", "100", "--peer-timeout", PT_MS, "--grace", "1"])
    for r in range(3):
        g.start(r, leader="127.0.0.1", engine=engine)
    g.wait_engines(timeout=20)
    t0 = lt.now()
    g.agents[2].kill(signal.SIGKILL)
    for r in (0, 1):
        t.agent_rc(g.agents[r], 6, timeout=15)
        took = g.agents[r].ended - t0
        t.le(0.95, took, 1.0 + 1.0 + 2 * lt.SCALE,
             "rank %d exited %.3fs after the loss (grace 1 s)" % (r, took))
        t.eq(events(t, r), ["ready", "TERM"], "rank %d's engine got SIGTERM once, then SIGKILL"
             % r)
        t.ok("did not stop within the grace period" in g.agents[r].stderr(),
             "rank %d says it used SIGKILL" % r)


def daemon_of(a):
    """A process below the agent that leads its own session (setsid): the
    engine's daemon."""
    for p in lt.descendants(a.pid):
        try:
            if os.getsid(p) == p and lt.exe_of(p) == os.path.realpath(lt.TESTCHILD):
                return p
        except OSError:
            pass
    a.check_running("the engine's daemon to start")
    return None


def t_engine_daemon(t):
    """An engine that leaves a daemon behind (own session, so outside the
    engine's process group) and exits: the agent exits with the engine's
    status at once, without waiting for the daemon. As PID 1 its end takes
    the daemon with it (the kernel kills the namespace); as a subreaper
    (shareProcessNamespace) the container runtime's kill of the cgroup
    does."""
    for pid1 in (True, False):
        ev = t.path("ev-%d" % pid1)
        a = t.agent(["sh", "-c", 'setsid "$0" sleep 1000 & exec "$0" signals "$1"',
                     lt.TESTCHILD, ev], testchild=False, pid1=pid1)
        daemon = lt.wait_for(lambda: daemon_of(a), 10, "the daemon to start")
        lt.wait_for(lambda: os.path.exists(ev) and "ready" in open(ev).read(), 10,
                    "the engine to be up")
        engine = a.child()
        t0 = lt.now()
        os.kill(engine, signal.SIGTERM)  # the engine's own exit, status 0
        t.agent_rc(a, 0)
        t.le(0, a.ended - t0, 2 * lt.SCALE, "the agent exited %.3fs after its engine (pid1=%s)"
             % (a.ended - t0, pid1))
        if pid1:
            lt.wait_for(lambda: not lt.alive(daemon), 5, "the daemon to die with the namespace")
            t.ok(True, "the daemon is gone with PID 1")
        else:
            os.kill(daemon, signal.SIGKILL)


# ---- resources ---------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def t_fd_exhausted(t):
    """The leader under ulimit -n 64, flooded with 200 idle connections on
    the rendezvous port and 200 on the probe port, more than it has
    descriptors for: it never exceeds them, keeps running, and once the
    flood is gone it answers probes, seats its worker, launches, and both
    end with the right exit status."""
    g = Group(t, 2, opts=FAST)
    ulimit = ("sh", "-c", 'ulimit -n 64 && exec "$@"', "sh")
    leader = g.start(0, leader="127.0.0.1", wrapper=ulimit)
    lt.wait_for(lambda: "holding the rendezvous" in leader.stderr(), 10, "the leader to listen")
    with open("/proc/%d/limits" % leader.pid) as f:
        t.ok(re.search(r"Max open files\s+64\s+64", f.read()), "the leader runs with 64 fds")
    host, port = g.probe[0]
    lt.wait_for(lambda: lt.http_status(host, port, "/livez") == 200, 10, "the leader's /livez")
    flood = []
    for i in range(200):
        for p in (g.port, port):
            try:
                flood.append(socket.create_connection((host if p == port else "127.0.0.1", p),
                                                      timeout=2))
            except OSError:
                pass  # the backlog is full: that is the flood too
    # Let the agent take what it can: it must stay under its limit.
    deadline = lt.now() + 1.0 * lt.SCALE
    worst = 0
    while lt.now() < deadline:
        leader.check_running("the flood")
        worst = max(worst, fd_count(leader.pid))
        time.sleep(0.05)
    t.ok(worst <= 64, "the leader never held more than 64 fds (%d)" % worst)
    t.ok(worst >= 60, "the flood did exhaust them (%d of 64 at most)" % worst)
    t.note("the leader held up to %d fds during the flood of %d connections"
           % (worst, len(flood)))
    t.ok(leader.running(), "the leader survived the flood (%d connections)" % len(flood))
    for s in flood:
        s.close()
    t0 = lt.now()
    lt.wait_for(lambda: lt.http_status(host, port, "/livez") == 200, 10, "/livez after the flood")
    took = lt.now() - t0
    t.le(0, took, 2 * lt.SCALE, "/livez answered %.3fs after the flood ended" % took)
    w = g.start(1, leader="127.0.0.1")
    g.wait_engines(timeout=20)
    lt.wait_for(lambda: lt.http_status(host, port, "/readyz") == 200, 10, "the leader's /readyz")
    t.ok(True, "the group formed and is ready")
    # The leader's stop is the group's ordered stop: the worker ends with
    # its engine's status (testchild exits 0 on SIGTERM), not 6.
    leader.kill(signal.SIGTERM)
    t.agent_rc(leader, 0)
    t.agent_rc(w, 0)


def t_termlog_unwritable(t):
    """A termination log that cannot be written (no such folder, a
    folder, a full disk, a FIFO nobody reads): the agent warns once and still exits with the
    failure's own status, the reason on stderr."""
    os.mkdir(t.path("dir"))
    os.mkfifo(t.path("fifo"))  # no reader: an open that would block for ever
    for path in (t.path("missing/termination-log"), t.path("dir"), "/dev/full",
                 t.path("fifo")):
        a = t.agent(["no-such-engine"], ["--termination-log", path], testchild=False)
        t.agent_rc(a, 127)
        err = a.stderr()
        t.ok("no-such-engine" in err, "the failure is on stderr (%s)" % path)
        t.ok("cannot write the termination log" in err and path in err,
             "a warning names the log %s: %s" % (path, last_line(a)))
    # A group failure too: the leader's name never resolves, exit 3.
    port = lt.free_port()
    a = t.agent(["exit", "0"], ["--termination-log", t.path("missing/log"), "--leader",
                                "no-such-leader.invalid", "--size", "2", "--rank", "1",
                                "--dns-server", "127.0.0.1:%d" % port, "--dns-timeout", "0.5"])
    t.agent_rc(a, 3)
    t.ok("cannot write the termination log" in a.stderr(), "the warning, for exit 3 too")


# ---- the agent itself stopped -----------------------------------------------

def t_agent_stopped_standalone(t):
    """The agent (PID 1) stopped and continued: while stopped its probes
    do not answer (kubelet counts failures) but the engine runs on; once
    continued it answers at once, forwards the SIGCONT, and still stops
    the engine and exits with its status."""
    port = lt.free_port()
    ev = t.path("sig")
    a = t.agent(["signals", ev], opts=["--probe-addr", "127.0.0.1:%d" % port], pid1=True)
    child = a.child()
    lt.wait_for(lambda: lt.http_status("127.0.0.1", port, "/livez") == 200, 10, "/livez")
    a.kill(signal.SIGSTOP)
    lt.wait_for(lambda: (lt.proc_stat(a.pid) or {}).get("state") == "T", 5, "the agent to stop")
    t.eq(lt.http_status("127.0.0.1", port, "/livez", timeout=0.5), None,
         "no answer while stopped")
    t.ok(lt.alive(child), "the engine runs on")
    a.kill(signal.SIGCONT)
    t0 = lt.now()
    lt.wait_for(lambda: lt.http_status("127.0.0.1", port, "/livez") == 200, 5,
                "/livez after SIGCONT")
    t.le(0, lt.now() - t0, 2 * lt.SCALE, "answered %.3fs after SIGCONT" % (lt.now() - t0))
    lt.wait_for(lambda: "CONT" in open(ev).read(), 5, "the engine to get SIGCONT")
    a.kill(signal.SIGTERM)
    t.agent_rc(a, 0)
    t.eq([line.split()[0] for line in open(ev).read().splitlines()],
         ["ready", "CONT", "TERM", "exiting"], "the engine's signals")


def t_agent_stopped_group(t):
    """The leader's agent stopped for less than --peer-timeout and
    continued: nobody is lost (what arrived meanwhile is read before any
    deadline is judged), the group stays ready, no engine is stopped."""
    pt = 2.0 * lt.SCALE
    g = Group(t, 3, opts=["--heartbeat", "100", "--peer-timeout", str(int(pt * 1000)),
                          "--grace", "2"])
    for r in range(3):
        g.start(r, leader="127.0.0.1")
    g.wait_ready(timeout=20)
    g.agents[0].kill(signal.SIGSTOP)
    time.sleep(0.8)  # stopped for 0.8 s: the fault itself
    g.agents[0].kill(signal.SIGCONT)
    # Past the stop by more than a peer-timeout: any false loss would show.
    lt.sleep_until(lt.now() + pt + 0.5)
    for r in range(3):
        t.ok(g.agents[r].running(), "rank %d runs" % r)
        t.ok("lost" not in g.agents[r].stderr(), "rank %d lost nobody" % r)
        t.ok("TERM" not in open(t.path("sig-%d" % r)).read(), "rank %d's engine runs" % r)
    g.wait_ready(timeout=5)


# ---- the wall clock -----------------------------------------------------------

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/time.h>
#include <time.h>

/* The wall clock, jumping: every reading is off by 400 to 2000 days,
   forward and back in turn. CLOCK_MONOTONIC and CLOCK_BOOTTIME pass. */
static atomic_long calls;

static long jump(void)
{
  long k = atomic_fetch_add(&calls, 1);
  return (k % 2 ? 1 : -1) * (k % 5 + 1) * 400L * 86400L;
}

int clock_gettime(clockid_t c, struct timespec *ts)
{
  static int (*real)(clockid_t, struct timespec *);
  if (real == NULL)
    real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
  int rc = real(c, ts);
  if (rc == 0 && (c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE || c == CLOCK_TAI))
    ts->tv_sec += jump();
  return rc;
}

int gettimeofday(struct timeval *tv, void *tz)
{
  struct timespec ts;
  (void)tz;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (tv != NULL) {
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
  }
  return 0;
}

time_t time(time_t *out)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (out != NULL)
    *out = ts.tv_sec;
  return ts.tv_sec;
}
"""


def clock_shim(t):
    """Builds the shim; returns the environment that preloads it."""
    src, lib = t.path("clockjump.c"), t.path("clockjump.so")
    with open(src, "w") as f:
        f.write(SHIM)
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", lib, src, "-ldl"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise lt.Skip("cannot build the clock shim: " + r.stderr.strip()[:200])
    env = {"LD_PRELOAD": lib}
    if lt.SANITIZED:
        # ASan wants its runtime first among the preloads; the shim only
        # wraps the clock, so the order does not matter here.
        env["ASAN_OPTIONS"] = lt.with_option(os.environ.get("ASAN_OPTIONS", "detect_leaks=1"),
                                             "verify_asan_link_order=0")
    return env


def check_jumped(t, a):
    """The agent's log timestamps (CLOCK_REALTIME) are years off, in both
    directions: the shim was in force in the agent."""
    years = {int(m) for m in re.findall(r"^(\d{4})-\d\d-\d\dT", a.stderr(), re.M)}
    this = datetime.datetime.now(datetime.timezone.utc).year
    t.ok(years and this not in years and min(years) < this < max(years),
         "the agent's wall clock jumped both ways (log years %s, now %d)"
         % (sorted(years), this))


def t_wall_clock_jumps(t):
    """Every deadline runs on the monotonic clock: with the wall clock
    jumping by years between readings, --dns-timeout, --rdzv-timeout,
    --peer-timeout and --grace each still end at their time, and a
    healthy group with heartbeats loses nobody."""
    env = clock_shim(t)
    # --dns-timeout 1.5: exit 3 at 1.5 s.
    port = lt.free_port()
    a = t.agent(["exit", "0"], ["--leader", "leader.invalid", "--size", "2", "--rank", "1",
                                "--dns-server", "127.0.0.1:%d" % port, "--dns-timeout", "1.5",
                                "--log-level", "debug"], extra_env=env)
    t.agent_rc(a, 3, timeout=15)
    t.le(1.4, a.runtime, 1.5 + 2 * lt.SCALE, "--dns-timeout 1.5 ended at %.3fs" % a.runtime)
    check_jumped(t, a)
    # --rdzv-timeout 1.5: the leader of a group that never forms exits 4.
    g = Group(t, 2, opts=FAST + ["--rdzv-timeout", "1.5"])
    a = g.start(0, leader="127.0.0.1", env=env)
    t.agent_rc(a, 4, timeout=15)
    t.le(1.4, a.runtime, 1.5 + 2 * lt.SCALE, "--rdzv-timeout 1.5 ended at %.3fs" % a.runtime)
    # A group with heartbeats every 100 ms: 2 s with no false loss, then a
    # real one noticed within --peer-timeout.
    g = Group(t, 3, opts=FAST)
    for r in range(3):
        g.start(r, leader="127.0.0.1", env=env)
    g.wait_ready(timeout=20)
    lt.sleep_until(lt.now() + 2.0)
    for r in range(3):
        t.ok(g.agents[r].running() and "lost" not in g.agents[r].stderr(),
             "rank %d lost nobody in 2 s of jumping wall clock" % r)
    t0 = lt.now()
    g.agents[2].kill(signal.SIGSTOP)
    t.agent_rc(g.agents[0], 6, timeout=15)
    took = g.agents[0].ended - t0
    # Silence counts from the last heartbeat heard, up to 100 ms before
    # the stop: the loss may come that much short of --peer-timeout.
    t.le(PEER_TIMEOUT - 0.2, took, PEER_TIMEOUT * 1.2 + 2 * lt.SCALE,
         "the stopped rank was lost after %.3fs (--peer-timeout %.1f s)" % (took, PEER_TIMEOUT))
    g.agents[2].kill(signal.SIGCONT)
    check_jumped(t, g.agents[0])
    # --grace 1 with an engine that ignores SIGTERM: SIGKILL at 1 s.
    ev = t.path("ev")
    a = t.agent(["signals", ev, "--ignore-term"], ["--grace", "1"], extra_env=env)
    lt.wait_for(lambda: os.path.exists(ev) and "ready" in open(ev).read(), 10, "the engine")
    t0 = lt.now()
    a.kill(signal.SIGTERM)
    t.agent_rc(a, 137)
    t.le(0.95, a.ended - t0, 1.0 + 2 * lt.SCALE, "--grace 1 ended at %.3fs" % (a.ended - t0))


def t_no_wall_clock_in_deadlines(t):
    """The code-level half of the clock row: the wall clock is read in two
    places only, the log's timestamps and the status document's release
    time, and never feeds a deadline; every timer is uv_now or
    CLOCK_MONOTONIC."""
    if not os.path.isdir(os.path.join(SRC, "agent")):
        raise lt.Skip("the sources are not at %s" % SRC)
    pat = re.compile(r"CLOCK_REALTIME|CLOCK_TAI|gettimeofday|\btime\s*\(|\bftime\s*\(")
    uses = []
    for d in ("agent", "probes"):
        for name in sorted(os.listdir(os.path.join(SRC, d))):
            if not name.endswith(".c"):
                continue
            with open(os.path.join(SRC, d, name)) as f:
                for n, line in enumerate(f, 1):
                    code = line.split("//")[0]
                    if pat.search(code) and not code.lstrip().startswith(("*", "/*")):
                        uses.append("%s/%s:%d: %s" % (d, name, n, line.strip()))
    allowed = [u for u in uses if u.startswith(("agent/log.c:", "agent/agent.c:"))
               and ("CLOCK_REALTIME, &ts" in u or "released_at = (double)time(NULL)" in u)]
    t.eq(sorted(set(uses) - set(allowed)), [], "wall-clock reads outside the log and status")
    t.eq(len(allowed), 2, "the two known wall-clock reads: %s" % allowed)


if __name__ == "__main__":
    lt.main([
        ("an engine exiting 0 ends its agent with 0 and the group with 6", t_engine_exit0),
        ("a crashing engine: 139 on its node, 6 on the others", t_engine_crash),
        ("engines ignoring SIGTERM are killed after --grace; exit 6 stays", t_engine_ignores_term),
        ("an engine's daemon does not hold the agent", t_engine_daemon),
        ("ulimit -n 64 under a connection flood", t_fd_exhausted),
        ("an unwritable termination log changes no exit status", t_termlog_unwritable),
        ("the agent stopped and continued (standalone, PID 1)", t_agent_stopped_standalone),
        ("the leader's agent stopped briefly: nobody is lost", t_agent_stopped_group),
        ("the wall clock jumping by years: every deadline holds", t_wall_clock_jumps),
        ("the wall clock feeds no deadline (code check)", t_no_wall_clock_in_deadlines),
    ])
