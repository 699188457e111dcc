#!/usr/bin/env python3
"""Rendezvous latency: lwsinit's group barrier against a PyTorch TCPStore barrier.

For each group size N, on loopback, in one run:

  lwsinit   N real lwsinit processes (rank 0 the leader, ranks 1..N-1 workers,
            each with its own 127.0.x.y probe address and status socket, one
            identical COMMAND).  N-1 of them start first (the leader and ranks
            1..N-2); once the leader's /status says group.joined == N-1 and the
            machine is idle again, rank N-1 starts.  Measured: from the last
            agent's exec (a tiny static wrapper stamps CLOCK_MONOTONIC and
            execs lwsinit) to the main() of the LAST engine of the group (the
            engine is the same static program: it stamps CLOCK_MONOTONIC, then
            waits for a signal).  lwsinit's figure includes its own process
            start: exec, dynamic loading, configuration, connect, handshake,
            the leader's checks, the release to every member, and N
            fork+execs of the engine, all on this machine's CPUs.

  TCPStore  N processes, each creating a torch.distributed.TCPStore (rank 0 the
            master), add()ing a counter and wait()ing on a key that the last
            arriver sets.  The ranks are forked from one parent that has
            already imported torch (a fresh `python3 -c "import torch"` costs
            seconds, which would drown the barrier), so the clock starts in the
            last rank right after its fork, with Python and torch loaded:
            TCPStore's figure does NOT include a process start, nor launching
            anything.  The same protocol: N-1 first, all waiting, idle, then
            the last (a fresh process every repetition).  The N-1 first ranks
            are forked once per N and do one barrier round per repetition
            (keys count-K, done-K), since forking a torch process costs ~0.1 s
            here; each round's last rank is a new process with a new store.

  floor     What no init can beat on this machine: N processes blocked on one
            pipe are released by closing it (an ideal barrier, zero cost); each
            vfork()s and execs the same engine (as posix_spawn does).  From
            the close to the last engine's main().  lwsinit's figure minus
            this is what the rendezvous itself costs.

  TCPStore+spawn  the TCPStore barrier followed by what lwsinit does after it:
            every rank, once released, posix_spawn()s the same engine; to the
            last engine's main().  The same work as lwsinit's figure, less
            lwsinit's own process start.

The three alternate repetition by repetition, so that drift hits all alike.
Reported: median and max over the repetitions, per N.  Two figures for
lwsinit: the *barrier*, from the last agent's exec to the last agent's log
line that it has the release (the rendezvous itself, 1 ms resolution), and
*to engine*, as above.  The target is judged on the barrier: at
most half of TCPStore's median and under 60 ms at N = 256.  TCPStore+spawn
also gives its barrier alone (to the last return from wait()), where, as
for lwsinit, the ranks released first are already launching engines.

Diagnostics printed per lwsinit repetition (not in the doc table unless noted):
the release as each agent logged it ("the group ... formed", ms resolution,
CLOCK_REALTIME mapped onto the stamps), the leader's own CPU time and run-queue
wait during the window (/proc/PID/schedstat), and the machine's busy CPU time
during the window (/proc/stat), which shows whether the window is CPU-bound.

It rewrites only its own section of docs/benchmarks.md, between
<!-- rdzv-bench:begin --> and <!-- rdzv-bench:end -->.  Not a test, not CI.

Usage (as root, from the repository root; about 3 minutes):
  python3 tests/bench/rdzv_bench.py                   # builds build-rdzvbench/ if needed
  python3 tests/bench/rdzv_bench.py --sizes 2,16 --reps 3 --no-write
  python3 tests/bench/rdzv_bench.py --lwsinit build-rb/agent/lwsinit --no-torch
  python3 tests/bench/rdzv_bench.py --sizes 256 --reps 1 --perf /tmp/rdzv.perf --no-write
Needs: a C compiler (the stamp helper), Debian's python3-torch for
/usr/bin/python3 (`apt-get install --no-install-recommends python3-torch`;
--no-torch skips that side), meson and ninja to build lwsinit; perf for --perf.
"""

import argparse
import ctypes
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import build_c, children_of, cpu_jiffies, free_port, write_section

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN = "<!-- rdzv-bench:begin -->"
END = "<!-- rdzv-bench:end -->"
SECTION_TITLE = "## Rendezvous latency: lwsinit against a PyTorch TCPStore barrier"

TARGET_N = 256
TARGET_MS = 60.0        # lwsinit at N = 256: under 60 ms ...
TARGET_RATIO = 0.5      # ... and at most half of TCPStore's time

# The stamp: writes "CLOCK_MONOTONIC CLOCK_REALTIME" (ns) whole (a rename) to
# FILE.  Static, so that its own start is as short as it gets.
#   stamp -x FILE PROG ARG...   stamp, then exec PROG (an agent's start)
#   stamp -e FILE               stamp in main(), then wait for a signal (the engine)
#   stamp -f FD PROG ARG...     the floor: block reading FD until EOF, then
#                               vfork; the child execs PROG, the parent waits
STAMP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static int put(const char *path)
{
  struct timespec m, r;
  clock_gettime(CLOCK_MONOTONIC, &m);
  clock_gettime(CLOCK_REALTIME, &r);
  char buf[96], tmp[4096];
  int n = snprintf(buf, sizeof(buf), "%lld %lld\n",
                   (long long)m.tv_sec * 1000000000LL + m.tv_nsec,
                   (long long)r.tv_sec * 1000000000LL + r.tv_nsec);
  if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
    return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, buf, (size_t)n) != n || close(fd) < 0)
    return -1;
  return rename(tmp, path);
}
int main(int argc, char **argv)
{
  if (argc >= 4 && strcmp(argv[1], "-x") == 0) {
    if (put(argv[2]) < 0)
      return 125;
    execv(argv[3], argv + 3);
    return 127;
  }
  if (argc == 3 && strcmp(argv[1], "-e") == 0) {
    if (put(argv[2]) < 0)
      return 125;
    for (;;)
      pause();
  }
  if (argc >= 4 && strcmp(argv[1], "-f") == 0) {
    int fd = atoi(argv[2]);
    char c;
    while (read(fd, &c, 1) > 0)
      ;
    close(fd);
    pid_t p = vfork(); /* what posix_spawn does: no page tables to copy */
    if (p == 0) {
      execv(argv[3], argv + 3);
      _exit(127);
    }
    for (;;)
      pause();
  }
  return 2;
}
"""

# The TCPStore side runs in Debian's Python (where python3-torch lives), as a
# server driven over stdin/stdout, one JSON line out per command line in:
#   setup N PORT     fork ranks 0..N-2; each creates its store and starts round 0
#   round K SETTLE   (K > 0: wake the N-1 ranks for round K) wait until they all
#                    wait, settle, fork the last rank; wait until all N are released
#   teardown         kill and reap every rank
# Ranks report through a shared anonymous mapping, not files or pipes, so that
# reporting costs nothing inside the measured window.
TORCH_SERVER = r"""
import datetime, json, mmap, os, signal, struct, sys, time
import torch
import torch.distributed as dist

SLOT = struct.Struct("qqqqq")      # waiting round+1, t0, t1, released round+1, engine pid

class Side:
    def __init__(self):
        self.ranks = []
        self.last = []

    # The mapping: one header word (the round whose ranks spawn an engine,
    # plus one; 0: none), then one SLOT per rank.  Persistent ranks were
    # forked before the round was decided, so they learn it from here.
    HDR = 8

    def slot_put(self, rank, **kw):
        off = self.HDR + rank * SLOT.size
        v = list(SLOT.unpack_from(self.mm, off))
        for i, k in enumerate(("wait", "t0", "t1", "rel", "eng")):
            if k in kw:
                v[i] = kw[k]
        SLOT.pack_into(self.mm, off, *v)

    def slot(self, rank):
        return SLOT.unpack_from(self.mm, self.HDR + rank * SLOT.size)

    def spawn_round(self):
        return struct.unpack_from("q", self.mm, 0)[0] - 1

    def rank_main(self, rank, k, last):
        t0 = time.monotonic_ns()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        st = dist.TCPStore("127.0.0.1", self.port, self.n, rank == 0,
                           datetime.timedelta(seconds=120), wait_for_workers=False)
        while True:
            if st.add("count-%d" % k, 1) == self.n:
                st.set("done-%d" % k, "1")
            else:
                self.slot_put(rank, wait=k + 1)
            st.wait(["done-%d" % k])
            t1 = time.monotonic_ns()
            eng = 0
            if self.spawn_round() == k:
                eng = os.posix_spawn(self.stamp, [self.stamp, "-e", os.path.join(
                    self.dir, "eng-%d-%d" % (k, rank))], {})
            self.slot_put(rank, t0=t0, t1=t1, rel=k + 1, eng=eng)
            if last:
                while True:
                    signal.pause()
            signal.sigwait({signal.SIGUSR1})
            k += 1
            t0 = 0

    def fork_rank(self, rank, k, last):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self.rank_main(rank, k, last)
            except BaseException as e:
                sys.stderr.write("TCPStore rank %d: %r\n" % (rank, e))
                code = 1
            finally:
                os._exit(code)
        return pid

    def wait_slots(self, ranks, field, want, timeout):
        i = ("wait", "t0", "t1", "rel", "eng").index(field)
        end = time.monotonic() + timeout
        while True:
            got = sum(1 for r in ranks if self.slot(r)[i] >= want)
            if got == len(ranks):
                return True
            if time.monotonic() > end:
                return "%d of %d ranks" % (got, len(ranks))
            time.sleep(0.02)

    def setup(self, n, port, stamp, d):
        self.n, self.port, self.stamp, self.dir = n, port, stamp, d
        self.mm = mmap.mmap(-1, self.HDR + n * SLOT.size)
        self.ranks = [self.fork_rank(r, 0, False) for r in range(n - 1)]
        return {"ok": True}

    def round(self, k, settle, spawn=False):
        n = self.n
        struct.pack_into("q", self.mm, 0, k + 1 if spawn else 0)
        first = list(range(n - 1))
        if k > 0:
            for p in self.ranks:
                os.kill(p, signal.SIGUSR1)
        w = self.wait_slots(first, "wait", k + 1, 60 + n)
        if w is not True:
            return {"error": "round %d: only %s waiting" % (k, w)}
        time.sleep(settle)
        idle()
        self.last.append(self.fork_rank(n - 1, k, True))
        w = self.wait_slots(range(n), "rel", k + 1, 60)
        if w is not True:
            return {"error": "round %d: only %s released" % (k, w)}
        s = [self.slot(r) for r in range(n)]
        start = s[n - 1][1]
        ends = [x[2] for x in s]
        if spawn:
            names = ["eng-%d-%d" % (k, r) for r in range(n)]
            end = time.monotonic() + 60
            while not all(os.path.exists(os.path.join(self.dir, f)) for f in names):
                if time.monotonic() > end:
                    return {"error": "round %d: engines missing" % k}
                time.sleep(0.01)
            ends = []
            for f in names:
                with open(os.path.join(self.dir, f)) as fh:
                    ends.append(int(fh.read().split()[0]))
            for x in s:
                if x[4] <= 0:
                    continue
                try:
                    os.kill(x[4], signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        res = {"ms": (max(ends) - start) / 1e6, "first_ms": (min(ends) - start) / 1e6,
               # the barrier alone: to the last return from wait()
               "rel_ms": (max(x[2] for x in s) - start) / 1e6}
        p = self.last.pop()
        os.kill(p, signal.SIGKILL)
        os.waitpid(p, 0)
        return res

    def teardown(self):
        for p in self.ranks + self.last:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.ranks + self.last:
            os.waitpid(p, 0)
        self.ranks, self.last = [], []
        self.mm.close()
        return {"ok": True}

def idle(max_wait=1.0, frac=0.9, window=0.1):
    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    end = time.monotonic() + max_wait
    while time.monotonic() < end:
        t0, i0 = busy()
        time.sleep(window)
        t1, i1 = busy()
        if t1 > t0 and (i1 - i0) / (t1 - t0) >= frac:
            return

side = Side()
print(json.dumps({"ready": True, "torch": torch.__version__,
                  "python": sys.version.split()[0]}), flush=True)
for line in sys.stdin:
    w = line.split()
    if not w:
        continue
    try:
        if w[0] == "setup":
            out = side.setup(int(w[1]), int(w[2]), w[3], w[4])
        elif w[0] == "round":
            out = side.round(int(w[1]), float(w[2]), len(w) > 3 and w[3] == "spawn")
        elif w[0] == "teardown":
            out = side.teardown()
        else:
            out = {"error": "unknown command " + w[0]}
    except Exception as e:
        out = {"error": repr(e)}
    print(json.dumps(out), flush=True)
if side.ranks or side.last:      # the driver went away mid-run
    side.teardown()
"""


def probe_ip(rank):
    """127.0.0.2 .. 127.0.0.251, then 127.0.1.2 ...: one address per agent."""
    return "127.0.%d.%d" % (rank // 250, rank % 250 + 2)


def wait_for(cond, timeout, what, poll=0.02):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(poll)


def cpu_times():
    v = cpu_jiffies()
    return sum(v), v[3] + v[4]


def settle_cpu(max_wait=1.0, idle_frac=0.9, window=0.1):
    """Waits (up to max_wait s) until the machine is mostly idle over a short
    window: whatever started before is done starting."""
    end = time.monotonic() + max_wait
    while time.monotonic() < end:
        t0, i0 = cpu_times()
        time.sleep(window)
        t1, i1 = cpu_times()
        if t1 > t0 and (i1 - i0) / (t1 - t0) >= idle_frac:
            return True
    return False


def busy_ms(before, after):
    """Busy CPU time (all CPUs) between two cpu_times() samples, in ms."""
    ticks = os.sysconf("SC_CLK_TCK")
    return ((after[0] - before[0]) - (after[1] - before[1])) * 1000.0 / ticks


def schedstat(pid):
    """(ns on CPU, ns waiting on a run queue) of a process."""
    try:
        a = open("/proc/%d/schedstat" % pid).read().split()
        return int(a[0]), int(a[1])
    except (OSError, ValueError, IndexError):
        return 0, 0


def read_stamp(path):
    m, r = open(path).read().split()
    return int(m), int(r)


def count_files(d, prefix):
    return sum(1 for f in os.listdir(d) if f.startswith(prefix) and not f.endswith(".tmp"))


def make_subreaper():
    """Orphaned engines (the floor's) come back to us to be reaped."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def spawn(argv, env, log=None, pgroup=False):
    """posix_spawn (vfork+exec): cheap for the bench, whatever its size."""
    acts = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    if log:
        acts += [(os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                 (os.POSIX_SPAWN_DUP2, 1, 2)]
    kw = {"setpgroup": 0} if pgroup else {}
    return os.posix_spawn(argv[0], argv, env, file_actions=acts, **kw)


def wait_pids(pids, timeout):
    """Waits for the given children; True when all have exited."""
    left = set(pids)
    end = time.monotonic() + timeout
    while left:
        for p in list(left):
            try:
                q, _ = os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                q = p
            if q == p:
                left.discard(p)
        if not left or time.monotonic() > end:
            break
        time.sleep(0.02)
    return not left


def log_ts_ns(line):
    """The CLOCK_REALTIME of a JSON log line, in ns (ms resolution)."""
    try:
        ts = json.loads(line)["ts"]
    except (ValueError, KeyError):
        return None
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    return int(d.timestamp() * 1000) * 1000000


class LwsGroup:
    """One repetition of an lwsinit group of n on loopback."""

    leader_nice = None

    def __init__(self, lwsinit, stamp, n, root, log_level, extra_opts):
        self.lwsinit, self.stamp, self.n = lwsinit, stamp, n
        self.d = tempfile.mkdtemp(prefix="lws-%d-" % n, dir=root)
        self.rdzv_port = free_port()
        self.probe_port = free_port()
        self.log_level = log_level
        self.extra = list(extra_opts)
        self.pids = {}
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root",
                    "LWS_LEADER_ADDRESS": "127.0.0.1", "LWS_GROUP_SIZE": str(n)}

    def start(self, rank):
        e = dict(self.env, LWS_WORKER_INDEX=str(rank), HOSTNAME="bench-0-%d" % rank)
        argv = [self.stamp, "-x", os.path.join(self.d, "agent-%d" % rank), self.lwsinit,
                "--rdzv-port", str(self.rdzv_port),
                "--probe-addr", "%s:%d" % (probe_ip(rank), self.probe_port),
                "--status-socket", os.path.join(self.d, "status-%d.sock" % rank),
                "--log-format", "json", "--log-level", self.log_level] + self.extra + [
                "--", self.stamp, "-e", os.path.join(self.d, "eng-{rank}")]
        self.pids[rank] = spawn(argv, e, log=os.path.join(self.d, "log-%d" % rank))
        if rank == 0 and self.leader_nice is not None:
            os.setpriority(os.PRIO_PROCESS, self.pids[0], self.leader_nice)

    def leader_joined(self):
        try:
            with urllib.request.urlopen("http://%s:%d/status" % (probe_ip(0), self.probe_port),
                                        timeout=2) as r:
                return json.loads(r.read())["group"]["joined"]
        except (OSError, ValueError, KeyError):
            return 0

    def check_alive(self):
        for r, p in self.pids.items():
            try:
                q, st = os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                q, st = p, 0
            if q == p:
                self.pids[r] = None
                raise RuntimeError("lwsinit rank %d exited early (status %d); log:\n%s"
                                   % (r, st, self.log(r)[-2000:]))

    def engine_pids(self):
        out = []
        for p in self.pids.values():
            out += children_of(p)
        return out

    def log(self, rank):
        try:
            return open(os.path.join(self.d, "log-%d" % rank), errors="replace").read()
        except OSError:
            return ""

    def run(self, settle, perf=None):
        n = self.n
        t_setup = time.monotonic()
        self.start(0)
        for r in range(1, n - 1):
            self.start(r)

        def all_waiting():
            self.check_alive()
            return self.leader_joined() >= n - 1
        wait_for(all_waiting, 60 + n * 0.5, "%d of %d lwsinit agents to join" % (n - 1, n), 0.05)
        setup_s = time.monotonic() - t_setup
        time.sleep(settle)
        settle_cpu()
        perf_proc = None
        if perf:
            perf_proc = subprocess.Popen(["perf", "record", "-a", "-g", "-q", "-o", perf],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        leader0 = schedstat(self.pids[0])
        agents0 = sum(schedstat(p)[0] for r, p in self.pids.items())
        perf_leader = None
        if perf:
            perf_leader = subprocess.Popen(["perf", "record", "-g", "-q", "-p",
                                            str(self.pids[0]), "-o", perf + ".leader"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu0 = cpu_times()
        self.start(n - 1)

        def all_released():
            if count_files(self.d, "eng-") >= n:
                return True
            self.check_alive()
            return False
        wait_for(all_released, 60, "%d engines to start" % n, 0.01)
        cpu1 = cpu_times()
        leader1 = schedstat(self.pids[0])
        agents1 = sum(schedstat(p)[0] for p in self.pids.values())
        engines = sum(schedstat(p)[0] for p in self.engine_pids())
        for pp in (perf_proc, perf_leader):
            if pp:
                pp.send_signal(signal.SIGINT)
                pp.wait()
        start_m, start_r = read_stamp(os.path.join(self.d, "agent-%d" % (n - 1)))
        eng = [read_stamp(os.path.join(self.d, "eng-%d" % r))[0] for r in range(n)]
        res = {"ms": (max(eng) - start_m) / 1e6, "first_ms": (min(eng) - start_m) / 1e6,
               "own_ms": (eng[n - 1] - start_m) / 1e6, "setup_s": setup_s,
               "leader_cpu_ms": (leader1[0] - leader0[0]) / 1e6,
               "leader_runq_ms": (leader1[1] - leader0[1]) / 1e6,
               "busy_ms": busy_ms(cpu0, cpu1),
               # ns on CPU during the window: the agents (the last one whole),
               # and the engines whole (from the fork in lwsinit to now)
               "agents_cpu_ms": (agents1 - agents0) / 1e6, "engines_cpu_ms": engines / 1e6}
        # The release as each agent logged it (ms resolution, CLOCK_REALTIME).
        rel = []
        for r in range(n):
            for line in self.log(r).splitlines():
                if "formed in" in line:
                    t = log_ts_ns(line)
                    if t is not None:
                        rel.append((t - start_r) / 1e6)
                    break
        if len(rel) == n:
            res["released_last_ms"] = max(rel)
            res["released_first_ms"] = min(rel)
        for line in self.log(0).splitlines():
            if "formed in" in line:
                t = log_ts_ns(line)
                if t is not None:     # the leader logs it once every frame is queued
                    res["leader_sent_ms"] = (t - start_r) / 1e6
        return res

    def stop(self):
        pids = [p for p in self.pids.values() if p]
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not wait_pids(pids, 30):
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_pids(pids, 10)
        reap_all()


def kill_groups(pids, d):
    """Kills the process groups led by pids (each started with pgroup=True:
    the members and the engines they launched), reaps them and their
    orphans, and removes their folder d."""
    for p in pids:
        try:
            os.killpg(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_pids(pids, 10)
    time.sleep(0.05)
    reap_all()
    shutil.rmtree(d, ignore_errors=True)


def floor_run(stamp, n, root, settle):
    """N processes blocked on one pipe, released by closing it; each forks
    and execs the engine.  From the close to the last engine's main()."""
    d = tempfile.mkdtemp(prefix="floor-%d-" % n, dir=root)
    r, w = os.pipe()
    os.set_inheritable(r, True)
    pids = []
    try:
        for i in range(n):
            pids.append(spawn([stamp, "-f", str(r), stamp, "-e", os.path.join(d, "eng-%d" % i)],
                              {}, pgroup=True))
        os.close(r)
        r = -1
        time.sleep(settle)
        settle_cpu()
        before = {p: schedstat(p)[0] for p in pids}
        t0 = time.monotonic_ns()
        os.close(w)
        w = -1
        wait_for(lambda: count_files(d, "eng-") >= n, 60, "%d floor engines" % n, 0.01)
        ends = [read_stamp(os.path.join(d, "eng-%d" % i))[0] for i in range(n)]
        cpu = 0
        for p in pids:
            cpu += schedstat(p)[0] - before[p]
            cpu += sum(schedstat(k)[0] for k in children_of(p))
        return {"ms": (max(ends) - t0) / 1e6, "first_ms": (min(ends) - t0) / 1e6,
                "cpu_ms": cpu / 1e6}
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
        kill_groups(pids, d)


class TorchSide:
    def __init__(self, python):
        self.p = subprocess.Popen([python, "-c", TORCH_SERVER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        hello = self.p.stdout.readline()
        if not hello:
            raise RuntimeError("%s cannot import torch (apt-get install python3-torch)" % python)
        self.info = json.loads(hello)

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        res = json.loads(self.p.stdout.readline())
        if "error" in res:
            raise RuntimeError("TCPStore: %s: %s" % (line, res["error"]))
        return res

    def close(self):
        self.p.stdin.close()      # the server tears down what is left, then exits
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def build_stamp(root):
    return build_c(root, "stamp", STAMP_C)


def build_lwsinit():
    bdir = os.path.join(REPO, "build-rdzvbench")
    if not os.path.exists(os.path.join(bdir, "build.ninja")):
        subprocess.run(["meson", "setup", bdir, "--buildtype=release"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", bdir, "agent/lwsinit"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(bdir, "agent", "lwsinit")


def exec_cost_ms(stamp, runs=50):
    """The median wall time of one posix_spawn+exec of the static stamp, to
    its main(): what one engine launch costs on this machine."""
    d = tempfile.mkdtemp(prefix="exec-")
    xs = []
    try:
        for i in range(runs):
            f = os.path.join(d, "e%d" % i)
            t0 = time.monotonic_ns()
            p = spawn([stamp, "-e", f], {})
            wait_for(lambda: os.path.exists(f), 5, "the stamp", 0.0005)
            xs.append((read_stamp(f)[0] - t0) / 1e6)
            os.kill(p, signal.SIGKILL)
            os.waitpid(p, 0)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return statistics.median(xs)


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release()}


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def run_context(script, lwsinit, lws_version, loadavg, exec_ms):
    """What every section says of its run: the date, the machine, the build,
    and the command that reproduces it (this one's arguments, less those
    that only keep files or skip the write)."""
    cmd = "python3 tests/bench/" + script
    extra = [a for a in sys.argv[1:] if a not in ("--no-write", "--keep")]
    if extra:
        cmd += " " + shlex.join(extra)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "lws_version": lws_version, "loadavg": loadavg,
        "lwsinit_rel": os.path.relpath(lwsinit, REPO), "git": git_rev(), "exec_ms": exec_ms,
        "command": cmd,
    }


def med(rows, key):
    xs = [r[key] for r in rows if key in r]
    return statistics.median(xs) if xs else float("nan")


def render(ctx):
    L = []
    a = L.append
    m = ctx["machine"]
    a(SECTION_TITLE)
    a("")
    a("Written by `tests/bench/rdzv_bench.py`. Time from the LAST member's")
    a("start to the LAST member's release, on loopback: N-1 members start first and")
    a("wait, the machine settles, then the last one starts. All N members of every")
    a("variant share this machine's %s CPUs." % m["nproc"])
    a("")
    a("- **lwsinit**: from the last agent's exec (a static wrapper stamps")
    a("  CLOCK_MONOTONIC and execs lwsinit) to the main() of the last engine of the")
    a("  group: lwsinit's own start, connect, handshake, the leader's checks, the")
    a("  release to every member and N fork+execs of the engine (a tiny static")
    a("  program that stamps the clock).")
    a("- **TCPStore**: N processes create a `torch.distributed.TCPStore` (rank 0 the")
    a("  master), `add` a counter and `wait` on a key that the last arriver sets; from")
    a("  the last rank's arrival to the last return from `wait`. Ranks are forked from")
    a("  a parent that has already imported torch, so neither a process start nor a")
    a("  launch is included on this side; the last rank is a new process each time.")
    a("- **TCPStore+spawn**: the same barrier, then every rank `posix_spawn`s the same")
    a("  engine; to the last engine's main(). The same work as lwsinit's figure, less")
    a("  lwsinit's own process start.")
    a("- **floor**: an ideal barrier of zero cost (N processes blocked on one pipe,")
    a("  released by closing it), each vfork+exec'ing the same engine: no init that")
    a("  launches N engines on this machine can beat it, since lwsinit's figure ends")
    a("  at the last engine's exec.")
    a("")
    a("- date: %s" % ctx["date"])
    a("- machine: %s CPUs, %s, Linux %s; one spawn+exec of a static binary costs "
      "%.1f ms here (median, spawn to its main())" % (m["nproc"], m["cpu"], m["kernel"],
                                                      ctx["exec_ms"]))
    a("- load average at the start: %s (the machine was shared with other jobs; see the"
      " \"others\" column below)" % ctx["loadavg"])
    a("- lwsinit: %s, `%s`, git %s" % (ctx["lws_version"], ctx["lwsinit_rel"], ctx["git"]))
    if ctx.get("torch"):
        a("- torch: %s (Debian python3-torch %s), Python %s" % (
            ctx["torch"]["torch"], ctx.get("torch_deb", "?"), ctx["torch"]["python"]))
    a("- %d repetitions per N, the variants alternating; median / max" % ctx["reps"])
    a("- reproduce: `%s`" % ctx["command"])
    a("")
    a("Two figures for lwsinit. *barrier*: from the last agent's exec to the last")
    a("agent's log line saying it has the release (JSON log, 1 ms resolution): the")
    a("rendezvous itself, lwsinit's own start included, but with the engines of the")
    a("members released first already starting on the same CPUs; compared with")
    a("TCPStore's barrier alone, and with TCPStore+spawn's to its last return from")
    a("`wait` (its first ranks spawning engines meanwhile, the same contention).")
    a("*to engine*: on to the main() of the last engine: the barrier plus N engine")
    a("launches; compared with TCPStore+spawn to its last engine and the floor.")
    a("")
    a("| N | lwsinit barrier median ms | max ms | TCPStore median ms | max ms "
      "| barrier / TCPStore | TCPStore+spawn barrier median ms | barrier / it "
      "| lwsinit to engine median ms | max ms | TCPStore+spawn to engine median ms "
      "| floor median ms |")
    a("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in ctx["sizes"]:
        lw = ctx["lws"][n]
        lmed, lmax = med(lw, "ms"), max(r["ms"] for r in lw)
        rel = [r["released_last_ms"] for r in lw if "released_last_ms" in r]
        bmed = statistics.median(rel) if rel else float("nan")
        bmax = max(rel) if rel else float("nan")
        if ctx["tcp"].get(n):
            tmed = med(ctx["tcp"][n], "ms")
            tcol = "%.1f | %.1f | %.2f" % (tmed, max(r["ms"] for r in ctx["tcp"][n]),
                                            bmed / tmed)
        else:
            tcol = "- | - | -"
        fcol = "%.1f" % med(ctx["floor"][n], "ms") if ctx["floor"].get(n) else "-"
        if ctx["tsp"].get(n):
            smed = med(ctx["tsp"][n], "rel_ms")
            scol = "%.1f | %.2f" % (smed, bmed / smed)
            ecol = "%.1f" % med(ctx["tsp"][n], "ms")
        else:
            scol, ecol = "- | -", "-"
        a("| %d | %.0f | %.0f | %s | %s | %.1f | %.1f | %s | %s |" % (
            n, bmed, bmax, tcol, scol, lmed, lmax, ecol, fcol))
    a("")
    a("Target (N = %d): lwsinit's barrier at most %.0f%% of TCPStore's median and under "
      "%.0f ms: **%s**." % (TARGET_N, TARGET_RATIO * 100, TARGET_MS, ctx["verdict"]))
    a("")
    a("Where lwsinit's time goes (medians). *release queued*: when the leader had")
    a("written the release to every member; *last released*: when the last agent")
    a("logged that it has the release (both from the JSON logs, 1 ms resolution,")
    a("from the same origin). CPU during the window, from /proc: the leader's own")
    a("and its run-queue wait, the N agents' (per member), the N engines' from their")
    a("fork on (per member), and everything else on the machine (*others*):")
    a("")
    a("| N | release queued ms | last released ms | leader CPU ms | leader run-queue ms "
      "| agents CPU ms/member | engines CPU ms/member | floor CPU ms/member | others CPU ms |")
    a("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in ctx["sizes"]:
        lw = ctx["lws"][n]
        others = [r["busy_ms"] - r["agents_cpu_ms"] - r["engines_cpu_ms"] for r in lw]
        fl = ctx["floor"].get(n)
        a("| %d | %.0f | %.0f | %.1f | %.1f | %.2f | %.2f | %s | %.0f |" % (
            n, med(lw, "leader_sent_ms"), med(lw, "released_last_ms"),
            med(lw, "leader_cpu_ms"), med(lw, "leader_runq_ms"),
            med(lw, "agents_cpu_ms") / n, med(lw, "engines_cpu_ms") / n,
            "%.2f" % (med(fl, "cpu_ms") / n) if fl else "-",
            statistics.median(others)))
    if ctx.get("notes"):
        a("")
        a("Notes:")
        a("")
        for x in ctx["notes"]:
            a("- " + x)
    return "\n".join(L).rstrip() + "\n"


def write_doc(section):
    write_section(DOC, BEGIN, END, section)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2,16,64,256", help="group sizes, comma-separated")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per size and side")
    ap.add_argument("--lwsinit", help="use this binary instead of building build-rdzvbench/")
    ap.add_argument("--torch-python", default="/usr/bin/python3",
                    help="the Python that has torch (Debian's python3-torch)")
    ap.add_argument("--no-torch", action="store_true", help="skip the TCPStore side")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor")
    ap.add_argument("--no-spawn", action="store_true",
                    help="skip the TCPStore+spawn variant")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds between 'all N-1 waiting' and starting the last member")
    ap.add_argument("--log-level", default="info", help="the agents' --log-level")
    ap.add_argument("--opt", action="append", default=[],
                    help="an extra lwsinit option (repeat), e.g. --opt=--heartbeat=1000")
    ap.add_argument("--leader-nice", type=int, metavar="NICE",
                    help="diagnosis: run the leader at this nice value (negative: favoured)")
    ap.add_argument("--perf", metavar="FILE",
                    help="perf record -a -g the last lwsinit window of the largest N")
    ap.add_argument("--keep", action="store_true", help="keep the agents' logs and stamps")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave the doc")
    args = ap.parse_args()

    sizes = [int(x) for x in args.sizes.split(",")]
    if any(n < 2 or n > 500 for n in sizes):
        sys.exit("sizes must be 2..500 (one 127.0.x.y probe address per agent)")
    lwsinit = os.path.abspath(args.lwsinit) if args.lwsinit else build_lwsinit()
    lws_version = subprocess.run([lwsinit, "--version"], capture_output=True,
                                 text=True).stdout.strip()
    make_subreaper()
    LwsGroup.leader_nice = args.leader_nice
    loadavg = " ".join(open("/proc/loadavg").read().split()[:3])
    root = tempfile.mkdtemp(prefix="rdzv-bench-")
    stamp = build_stamp(root)
    exec_ms = exec_cost_ms(stamp)
    torch_side = None
    torch_deb = "?"
    if not args.no_torch:
        torch_side = TorchSide(args.torch_python)
        torch_deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"],
                                   capture_output=True, text=True).stdout.strip() or "?"
    t_begin = time.monotonic()
    lws = {n: [] for n in sizes}
    tcp = {n: [] for n in sizes}
    flo = {n: [] for n in sizes}
    tsp = {n: [] for n in sizes}
    try:
        for n in sizes:
            if torch_side:
                tdir = tempfile.mkdtemp(prefix="tcpstore-%d-" % n, dir=root)
                torch_side.cmd("setup %d %d %s %s" % (n, free_port(), stamp, tdir))
                k = 0
            for rep in range(args.reps):
                perf = args.perf if (args.perf and n == max(sizes) and rep == args.reps - 1) \
                    else None
                g = LwsGroup(lwsinit, stamp, n, root, args.log_level, args.opt)
                try:
                    res = g.run(args.settle, perf)
                finally:
                    g.stop()
                lws[n].append(res)
                if not args.keep:
                    shutil.rmtree(g.d, ignore_errors=True)
                line = ("N=%-4d rep %d  lwsinit %7.1f ms (first engine %6.1f, own %6.1f, "
                        "leader queued release %s, last release logged %s; leader cpu %.1f "
                        "runq %.1f; busy %.0f ms; agents cpu %.0f ms, engines cpu %.0f ms; "
                        "setup %.1f s)" % (
                            n, rep + 1, res["ms"], res["first_ms"], res["own_ms"],
                            "%.0f" % res["leader_sent_ms"] if "leader_sent_ms" in res else "?",
                            "%.0f" % res["released_last_ms"] if "released_last_ms" in res
                            else "?", res["leader_cpu_ms"], res["leader_runq_ms"],
                            res["busy_ms"], res["agents_cpu_ms"], res["engines_cpu_ms"],
                            res["setup_s"]))
                if torch_side:
                    settle_cpu()
                    t = torch_side.cmd("round %d %f" % (k, args.settle))
                    k += 1
                    tcp[n].append(t)
                    line += "\n          TCPStore %7.1f ms (first %6.1f)" % (t["ms"],
                                                                           t["first_ms"])
                    if not args.no_spawn:
                        settle_cpu()
                        t = torch_side.cmd("round %d %f spawn" % (k, args.settle))
                        k += 1
                        tsp[n].append(t)
                        line += "   TCPStore+spawn %7.1f ms (barrier %6.1f)" % (
                            t["ms"], t["rel_ms"])
                if not args.no_floor:
                    f = floor_run(stamp, n, root, args.settle)
                    flo[n].append(f)
                    line += "   floor %7.1f ms (first %6.1f, cpu %.0f ms)" % (
                        f["ms"], f["first_ms"], f["cpu_ms"])
                print(line, flush=True)
            if torch_side:
                torch_side.cmd("teardown")
    finally:
        if torch_side:
            torch_side.close()
        reap_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("kept:", root)
    elapsed = time.monotonic() - t_begin

    verdict = "not measured (N = %d not in --sizes)" % TARGET_N
    if TARGET_N in sizes:
        rel = [r["released_last_ms"] for r in lws[TARGET_N] if "released_last_ms" in r]
        bmed = statistics.median(rel) if rel else float("nan")
        lmed = med(lws[TARGET_N], "ms")
        if tcp[TARGET_N]:
            tmed = med(tcp[TARGET_N], "ms")
            ok = bmed <= TARGET_RATIO * tmed and bmed < TARGET_MS
            verdict = "%s (barrier %.0f ms = %.2f x TCPStore's %.1f ms)" % (
                "met" if ok else "NOT met", bmed, bmed / tmed, tmed)
        else:
            verdict = "%s for the 60 ms part (barrier %.0f ms); TCPStore not measured" % (
                "met" if bmed < TARGET_MS else "NOT met", bmed)
        if tsp[TARGET_N]:
            verdict += "; against TCPStore+spawn's barrier (%.1f ms): %.2f x" % (
                med(tsp[TARGET_N], "rel_ms"), bmed / med(tsp[TARGET_N], "rel_ms"))
        verdict += "; to the last engine %.1f ms" % lmed
        if tsp[TARGET_N]:
            verdict += " against TCPStore+spawn's %.1f ms" % med(tsp[TARGET_N], "ms")
        if flo[TARGET_N]:
            fmed = med(flo[TARGET_N], "ms")
            verdict += ", and the floor (N engine execs after a free barrier) %.1f ms" % fmed
    ctx = run_context("rdzv_bench.py", lwsinit, lws_version, loadavg, exec_ms)
    ctx.update({
        "torch": torch_side.info if torch_side else None, "torch_deb": torch_deb,
        "reps": args.reps, "sizes": sizes, "lws": lws, "tcp": tcp,
        "floor": flo, "tsp": tsp, "verdict": verdict,
        "notes": ["the whole run took %.0f s" % elapsed],
    })
    section = render(ctx)
    print()
    print(section)
    if not args.no_write:
        write_doc(section)
        print("wrote %s" % os.path.relpath(DOC, REPO))


if __name__ == "__main__":
    main()
