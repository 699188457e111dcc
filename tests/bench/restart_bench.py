#!/usr/bin/env python3
"""Restart in place (--on-failure restart): what a restart costs, on loopback.

Two measurements, in one run:

  overhead  A group of N real lwsinit processes (N = 4, then 64), each
            engine a small static program (STAMP_C) that stamps
            CLOCK_MONOTONIC in main() and blocks; on SIGTERM it stamps again
            and exits (its last instruction: the old engine's exit). Each
            trial SIGKILLs the engine of the last rank (a crash; the test
            stamps the kill) and waits until every rank's engine of the next
            epoch has stamped its main(). Reported, less the backoff (1 s at
            the first restart; --restart-window 0.5 keeps every trial a
            first restart):
              exit->exec  from the last old engine's exit (its SIGTERM stamp,
                          or the kill for the crashed one) to the last new
                          engine's main(); the target: p99 <= 100 ms at
                          N = 4, <= 500 ms at N = 64;
              kill->exec  from the kill to the last new engine's main(): the
                          crash's report to the leader, the broadcast, the
                          stops and the relaunch, all of it.
            The backoff runs from the leader's decision, while the engines
            stop, so exit->exec is the relaunch's own cost (the broadcast of
            `relaunch` and N fork+execs) plus what the stop took past it.

  e2e       A group of 4 whose stand-in engine reads a 1 GiB file from the
            page cache at start (`cat FILE > /dev/null`, the file made once
            under /tmp), then stamps: from the kill to the last engine's
            stamp of the next generation, in place (--on-failure restart)
            against "every agent exits and is started again" (--on-failure
            exit, each agent started again by this script the moment it
            exits, as a kubelet restarting the containers would, without
            the kubelet's own delays): the nearest thing to a pod
            recreation on one machine. The two alternate trial by trial.

It rewrites only its own section of docs/benchmarks.md, between
<!-- restart-bench:begin --> and <!-- restart-bench:end -->. Not a test, not
CI. Run as root from the repository root:

  python3 tests/bench/restart_bench.py                 # builds build-rdzvbench/ (release)
  python3 tests/bench/restart_bench.py --trials 5 --e2e-trials 2 --no-write   # a quick look
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import build_c, children_of, free_port, write_section  # noqa: E402
from rdzv_bench import (LwsGroup, build_lwsinit, probe_ip, run_context, spawn,  # noqa: E402
                        wait_for)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN = "<!-- restart-bench:begin -->"
END = "<!-- restart-bench:end -->"
BACKOFF_MS = 1000.0
TARGETS = {4: 100.0, 64: 500.0}
BIG = "/tmp/lwsi-restart-bench-1g"

# stamp -e FILE: writes "MONOTONIC_NS\n" to FILE in main(), then blocks; on
# SIGTERM writes FILE.exit the same way and exits (only async-signal-safe
# calls in the handler: signal-safety(7)). Static, so that its start is
# as short as it gets.
STAMP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static char path[4096], tmp[4200];
static void put(const char *suffix)
{
  struct timespec m;
  clock_gettime(CLOCK_MONOTONIC, &m);
  unsigned long long v = (unsigned long long)m.tv_sec * 1000000000ULL + m.tv_nsec;
  char buf[32];
  int i = sizeof(buf);
  buf[--i] = '\n';
  do {
    buf[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  size_t n = strlen(path), s = strlen(suffix);
  memcpy(tmp, path, n);
  memcpy(tmp + n, suffix, s);
  memcpy(tmp + n + s, ".tmp", 5);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return;
  (void)!write(fd, buf + i, sizeof(buf) - (size_t)i);
  close(fd);
  char dst[4200];
  memcpy(dst, tmp, n + s);
  dst[n + s] = '\0';
  rename(tmp, dst);
}
static void on_term(int sig)
{
  (void)sig;
  put(".exit");
  _exit(0);
}
int main(int argc, char **argv)
{
  if (argc != 3 || strcmp(argv[1], "-e") != 0 || strlen(argv[2]) >= 4000)
    return 2;
  strcpy(path, argv[2]);
  signal(SIGTERM, on_term);
  put("");
  for (;;)
    pause();
}
"""


def build_stamp(root):
    return build_c(root, "rstamp", STAMP_C)


def stamp_of(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class Group(LwsGroup):
    """N agents on loopback (rank r at probe_ip(r)), started and, in the
    exit mode, started again by this script; stopped as rdzv_bench's."""

    def __init__(self, lwsinit, n, root, engine, opts):
        self.lwsinit, self.n, self.engine, self.opts = lwsinit, n, engine, list(opts)
        self.d = tempfile.mkdtemp(prefix="restart-%d-" % n, dir=root)
        self.rdzv_port = free_port()
        self.probe_port = free_port()
        self.pids = {}
        self.gen = {}
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root",
                    "LWS_LEADER_ADDRESS": "127.0.0.1", "LWS_GROUP_SIZE": str(n)}

    def start(self, rank, gen=0):
        e = dict(self.env, LWS_WORKER_INDEX=str(rank), HOSTNAME="bench-0-%d" % rank,
                 BENCH_GEN=str(gen))
        argv = [self.lwsinit, "--rdzv-port", str(self.rdzv_port),
                "--probe-addr", "%s:%d" % (probe_ip(rank), self.probe_port),
                "--status-socket", os.path.join(self.d, "status-%d.sock" % rank),
                "--log-format", "json", "--log-level", "info"] + self.opts + ["--"] + self.engine
        self.pids[rank] = spawn(argv, e, log=os.path.join(self.d, "log-%d-%d" % (rank, gen)))
        self.gen[rank] = gen

    def path(self, name):
        return os.path.join(self.d, name)

    def engine_pid(self, rank):
        kids = children_of(self.pids[rank])
        return kids[0] if kids else None

    def exited(self, rank):
        try:
            q, _ = os.waitpid(self.pids[rank], os.WNOHANG)
        except ChildProcessError:
            return True
        return q == self.pids[rank]

    def log(self, rank):
        try:
            with open(self.path("log-%d-%d" % (rank, self.gen[rank])), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        LwsGroup.stop(self)
        shutil.rmtree(self.d, ignore_errors=True)


def pct(xs, p):
    """The p-th percentile, nearest rank (p99 of 20 is the largest)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def overhead(lwsinit, stamp, n, trials, root):
    """Trials of restart in place in a group of n; per trial the two
    figures (ms, less the backoff)."""
    g = Group(lwsinit, n, root, [stamp, "-e", "{placeholder}"], [])
    g.engine = [stamp, "-e", os.path.join(g.d, "eng-{rank}-{epoch}")]
    g.opts = ["--on-failure", "restart", "--max-restarts", "1000000", "--restart-window", "0.5",
              "--upstream", "none", "--node-check", "off", "--grace", "5"]
    rows = []
    try:
        for r in range(n):
            g.start(r)
        wait_for(lambda: all(os.path.exists(g.path("eng-%d-0" % r)) for r in range(n)),
                 60 + n, "the %d engines of epoch 0" % n, 0.02)
        for epoch in range(trials):
            time.sleep(0.3)  # the window of --restart-window passes; the machine settles
            victim = g.engine_pid(n - 1)
            t_kill = time.monotonic_ns()
            os.kill(victim, signal.SIGKILL)
            nxt = epoch + 1
            wait_for(lambda: all(os.path.exists(g.path("eng-%d-%d" % (r, nxt)))
                                 for r in range(n)),
                     30 + n * 0.2, "the %d engines of epoch %d" % (n, nxt), 0.005)
            exits = [t_kill] + [stamp_of(g.path("eng-%d-%d.exit" % (r, epoch)))
                                for r in range(n - 1)]
            if None in exits:
                raise RuntimeError("an engine of epoch %d left no exit stamp" % epoch)
            new = [stamp_of(g.path("eng-%d-%d" % (r, nxt))) for r in range(n)]
            row = {"exit_exec": (max(new) - max(exits)) / 1e6 - BACKOFF_MS,
                   "kill_exec": (max(new) - t_kill) / 1e6 - BACKOFF_MS,
                   "stop": (max(exits) - t_kill) / 1e6,
                   "spread": (max(new) - min(new)) / 1e6}
            rows.append(row)
            print("  N=%d epoch %d: exit->exec %.1f ms, kill->exec %.1f ms (less 1 s), "
                  "stop %.1f ms, launch spread %.1f ms"
                  % (n, nxt, row["exit_exec"], row["kill_exec"], row["stop"], row["spread"]),
                  flush=True)
    finally:
        g.stop()
    return rows


def make_big():
    if not os.path.exists(BIG) or os.path.getsize(BIG) != 1 << 30:
        with open(BIG + ".tmp", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(1024):
                f.write(chunk)
        os.replace(BIG + ".tmp", BIG)
    subprocess.run(["cat", BIG], stdout=subprocess.DEVNULL, check=True)  # into the page cache


def e2e(lwsinit, stamp, trials, root, n=4):
    """Alternating trials, in place against exit-and-start-again; ms from
    the kill to the last engine of the next generation past its read."""
    eng_sh = 'cat "$0" > /dev/null && exec "$1" -e "$2-$BENCH_GEN"'
    out = {"restart": [], "exit": []}
    groups = {}
    for mode in ("restart", "exit"):
        g = Group(lwsinit, n, root, [], [])
        g.engine = ["sh", "-c", eng_sh, BIG, stamp, os.path.join(g.d, "ready-{rank}-{epoch}")]
        g.opts = ["--on-failure", mode, "--upstream", "none", "--node-check", "off",
                  "--grace", "5"]
        if mode == "restart":
            g.opts += ["--max-restarts", "1000000", "--restart-window", "0.5"]
        groups[mode] = g
    try:
        for g in groups.values():
            for r in range(n):
                g.start(r)
        for mode, g in groups.items():
            wait_for(lambda g=g: all(os.path.exists(g.path("ready-%d-0-0" % r))
                                     for r in range(n)), 60, "the %s group" % mode, 0.02)
        epoch = 0
        gen = 0
        for i in range(trials):
            # in place: the next epoch, generation 0
            g = groups["restart"]
            time.sleep(0.5)
            t_kill = time.monotonic_ns()
            os.kill(g.engine_pid(n - 1), signal.SIGKILL)
            epoch += 1
            wait_for(lambda: all(os.path.exists(g.path("ready-%d-%d-0" % (r, epoch)))
                                 for r in range(n)), 60, "the relaunch", 0.005)
            ms = (max(stamp_of(g.path("ready-%d-%d-0" % (r, epoch))) for r in range(n))
                  - t_kill) / 1e6
            out["restart"].append(ms)
            # every agent exits and is started again: epoch 0, the next generation
            g = groups["exit"]
            time.sleep(0.5)
            t_kill = time.monotonic_ns()
            os.kill(g.engine_pid(n - 1), signal.SIGKILL)
            gen += 1
            left = set(range(n))
            end = time.monotonic() + 60
            while left:
                for r in list(left):
                    if g.exited(r):
                        g.start(r, gen)
                        left.discard(r)
                if time.monotonic() > end:
                    raise RuntimeError("the exit group's agents did not all exit")
                time.sleep(0.002)
            wait_for(lambda: all(os.path.exists(g.path("ready-%d-0-%d" % (r, gen)))
                                 for r in range(n)), 60, "the exit group to form again", 0.005)
            ms2 = (max(stamp_of(g.path("ready-%d-0-%d" % (r, gen))) for r in range(n))
                   - t_kill) / 1e6
            out["exit"].append(ms2)
            print("  e2e trial %d: in place %.0f ms, exit and start again %.0f ms"
                  % (i + 1, ms, ms2), flush=True)
    finally:
        for g in groups.values():
            g.stop()
    return out


def read_time_ms(stamp, runs=5):
    """What one engine's read of the 1 GiB file from the page cache costs
    alone (median)."""
    xs = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(["cat", BIG], stdout=subprocess.DEVNULL, check=True)
        xs.append((time.monotonic() - t0) * 1000)
    return statistics.median(xs)


def render(ctx, res, e2e_res, read_ms, trials):
    m = ctx["machine"]
    L = ["## Restart in place (`--on-failure restart`)", "",
         "Measured %s on %d CPUs (%s), kernel %s; lwsinit `%s` at %s, load average %s "
         "at the start." % (ctx["date"], m["nproc"], m["cpu"], m["kernel"], ctx["lwsinit_rel"],
                            ctx["git"], ctx["loadavg"]),
         "Reproduce (as root, from the repository root): `%s`." % ctx["command"], "",
         "**Overhead.** A group of N agents on loopback, each engine a static program that "
         "stamps CLOCK_MONOTONIC in `main()` and blocks (and stamps again on SIGTERM, just "
         "before it exits); each trial SIGKILLs the last rank's engine. *exit->exec*: from "
         "the last old engine's exit (the crashed one: the kill) to the last new engine's "
         "`main()`; *kill->exec*: from the kill; both less the 1 s backoff (every trial a "
         "first restart: `--restart-window 0.5`). The backoff runs from the leader's "
         "decision, while the engines stop, so exit->exec is what the relaunch itself costs "
         "(the `relaunch` broadcast and N fork+execs on 2 CPUs).", "",
         "| N | trials | exit->exec p50 | exit->exec p99 | kill->exec p50 | kill->exec p99 "
         "| stop (kill to last exit) p50 | target (exit->exec p99) | |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, rows in res.items():
        ee = [r["exit_exec"] for r in rows]
        ke = [r["kill_exec"] for r in rows]
        st = [r["stop"] for r in rows]
        tgt = TARGETS.get(n)
        L.append("| %d | %d | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | <= %.0f ms | %s |"
                 % (n, len(rows), statistics.median(ee), pct(ee, 99), statistics.median(ke),
                    pct(ke, 99), statistics.median(st), tgt or 0,
                    "met" if tgt is not None and pct(ee, 99) <= tgt else "**missed**"))
    L += ["", "p99 is by nearest rank: over 20 trials or fewer, the largest of them.", ""]
    if e2e_res:
        r, x = e2e_res["restart"], e2e_res["exit"]
        L += ["**End to end, a group of 4** whose stand-in engine reads a 1 GiB file from the "
              "page cache at start (`cat` to `/dev/null`: %.0f ms alone, median) and then "
              "stamps; from the kill of one engine to the last engine's stamp of the next "
              "generation, %d trials each, alternating. *Every agent exits and is started "
              "again*: `--on-failure exit`, and this script starts each agent again the moment "
              "it exits (a kubelet restarting the containers, without its own delays): the "
              "agents' start, the rendezvous again, then the engines." % (read_ms, len(r)), "",
              "| | median | max |", "| --- | --- | --- |",
              "| restart in place (1 s backoff included) | %.0f ms | %.0f ms |"
              % (statistics.median(r), max(r)),
              "| every agent exits and is started again | %.0f ms | %.0f ms |"
              % (statistics.median(x), max(x)), ""]
    if e2e_res:
        r, x = e2e_res["restart"], e2e_res["exit"]
        L += ["Less its 1 s backoff, restart in place took %.0f ms (median; %.0f ms at best) "
              "against %.0f ms (%.0f ms at best) for every agent exiting and starting again. "
              "On one machine, with the image, the agents' binaries and the \"weights\" all in "
              "memory, a start again costs little more than an agent's start and a rendezvous, "
              "and both are mostly the four engines' reads sharing 2 CPUs; the backoff (which "
              "keeps a group whose engines crash at once from restarting in a hot loop) is the "
              "difference. What restart in place saves is what this machine cannot show."
              % (statistics.median(r) - BACKOFF_MS, min(r) - BACKOFF_MS, statistics.median(x),
                 min(x)), ""]
    L += ["A real pod recreation (LWS's `RecreateGroupOnPodRestart` recreates every pod of "
          "the group, the workers once the new leader has started: kubernetes-sigs/lws, "
          "[docs/examples/sample/README.md]"
          "(https://github.com/kubernetes-sigs/lws/blob/main/docs/examples/sample/README.md), "
          "\"Restart Policy\") adds, and the group waits for the slowest pod:",
          "",
          "- **termination**: each old pod gets SIGTERM and up to its "
          "`terminationGracePeriodSeconds` (30 s by default) before SIGKILL "
          "([Pod Lifecycle, \"Termination of Pods\"]"
          "(https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination));",
          "- **scheduling**: a pod is scheduled once; its replacement is a new pod, not "
          "guaranteed the same node "
          "([Pod Lifecycle](https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/)), "
          "and a group of GPU pods needs a free node for each at once;",
          "- **image pull**: with `imagePullPolicy: IfNotPresent` a node that holds the image "
          "skips it; a new node pulls the whole image again, tens of GB for a vLLM or SGLang "
          "image with CUDA ([Images, \"Image pull policy\"]"
          "(https://kubernetes.io/docs/concepts/containers/images/#image-pull-policy));",
          "- **weights**: read again, from the page cache only on a node that held them (as "
          "here, where 1 GiB costs %.0f ms), else from a volume, the network or the hub, "
          "minutes for hundreds of GB (SGLang [server arguments]"
          "(https://docs.sglang.io/advanced_features/server_arguments.html), `--load-format`; "
          "vLLM's engine arguments, `--load-format`);" % read_ms,
          "- **engine warm-up**: CUDA graph capture for every batch size again (vLLM "
          "[CUDA Graphs](https://docs.vllm.ai/en/latest/design/cuda_graphs.html), "
          "`--enforce-eager` to skip it; SGLang `--disable-cuda-graph`, `--cuda-graph-max-bs`); "
          "one published vLLM measurement: capture 43 s, the API ready about 132 s after "
          "start ([nvidia/Nemotron-3-Embed-1B-NVFP4, discussion 4]"
          "(https://huggingface.co/nvidia/Nemotron-3-Embed-1B-NVFP4/discussions/4));",
          "- **container restarts** (LWS's `None` policy with `--on-failure exit`, the pods "
          "kept): the kubelet waits 10 s before the second restart of a container, doubling "
          "to 5 min ([Pod Lifecycle, \"Container restarts\"]"
          "(https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy); "
          "[KEP-4603](https://github.com/kubernetes/enhancements/tree/master/keps/sig-node/"
          "4603-tune-crashloopbackoff)).",
          "",
          "Restart in place keeps the pods, the agents and their connections, the image and "
          "the page cache; it still pays the engine's own start (weights from the page cache, "
          "CUDA graph capture), which no restart avoids.", ""]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="4,64")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--trials-64", type=int, default=None,
                    help="trials for N = 64 (default: --trials)")
    ap.add_argument("--e2e-trials", type=int, default=5)
    ap.add_argument("--lwsinit", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("restart_bench.py: run as root")
    lwsinit = args.lwsinit or build_lwsinit()
    root = tempfile.mkdtemp(prefix="restart-bench-")
    loadavg = open("/proc/loadavg").read().split()[0]
    try:
        stamp = build_stamp(root)
        res = {}
        for n in [int(x) for x in args.sizes.split(",")]:
            k = args.trials_64 if (n == 64 and args.trials_64) else args.trials
            print("overhead, a group of %d, %d trials" % (n, k), flush=True)
            res[n] = overhead(lwsinit, stamp, n, k, root)
        e2e_res, read_ms = None, 0.0
        if args.e2e_trials > 0:
            make_big()
            read_ms = read_time_ms(stamp)
            print("end to end, a group of 4, %d trials each (1 GiB read: %.0f ms)"
                  % (args.e2e_trials, read_ms), flush=True)
            e2e_res = e2e(lwsinit, stamp, args.e2e_trials, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ctx = run_context("restart_bench.py", lwsinit, "", loadavg, 0.0)
    section = render(ctx, res, e2e_res, read_ms, args.trials)
    print(section)
    if not args.no_write:
        write_section(DOC, BEGIN, END, section)
        print("wrote %s" % os.path.relpath(DOC, REPO))


if __name__ == "__main__":
    main()
