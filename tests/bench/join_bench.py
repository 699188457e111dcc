#!/usr/bin/env python3
"""Join latency: how fast a group of N forms and launches, against a C floor.

On loopback, at N = 64 by default, in one run and alternating repetition by
repetition, four variants:

  lwsinit, leader last   ranks 1..N-1 (real lwsinit agents, each with its own
            127.0.x.y probe address, as tests/bench/rdzv_bench.py starts
            them) start first and retry while nobody listens; after --wait
            seconds (long enough for any backoff to reach its steady state)
            and once the machine is idle, rank 0 (the leader) starts. From the
            leader's exec (a static wrapper stamps CLOCK_MONOTONIC and execs
            lwsinit) to the main() of the LAST engine of the group. This is
            LeaderWorkerSet's common case: the pods are created together, and
            the leader's agent is often the last to listen.

  lwsinit, leader first  rank 0 starts and listens; once the machine is idle,
            ranks 1..N-1 start in one burst. From the LAST agent's exec to the
            main() of the last engine.

  C floor, both orders   the same with tests/bench/cfloor.c: a minimal epoll
            barrier (rank 0 listens and releases once N-1 ranks are connected;
            the others retry a refused connect every millisecond), each rank
            fork+exec'ing the same engine after the release. No handshake, no
            checks, no logging, no dynamic loading: what a join of N processes
            that launch N engines costs on this machine at the least.

The engine is the static stamp of rdzv_bench.py: it stamps CLOCK_MONOTONIC in
main(), then waits. Reported: median and max over the repetitions, and
lwsinit / C floor per order; the target is at most 2x the C floor's median in
both orders. Diagnostics per lwsinit repetition, from the leader's JSON log
(1 ms resolution, CLOCK_REALTIME mapped onto the stamps): when it listened
("holding the rendezvous"), when the last worker joined ("(N of N)") and when
it logged the release ("formed in"), and the first engine's start.

It rewrites only its own section of docs/benchmarks.md, between
<!-- join-bench:begin --> and <!-- join-bench:end -->.  Not a test, not CI.

Usage (as root, from the repository root; about a minute):
  python3 tests/bench/join_bench.py                  # builds build-rdzvbench/ if needed
  python3 tests/bench/join_bench.py --reps 3 --no-write
  python3 tests/bench/join_bench.py --lwsinit OTHER/agent/lwsinit --no-write   # another build
Needs: a C compiler (the stamp and cfloor, built in a temporary folder), meson
and ninja to build lwsinit.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, write_section
from rdzv_bench import (LwsGroup, build_lwsinit, build_stamp, count_files, exec_cost_ms,
                        kill_groups, log_ts_ns, make_subreaper, med, read_stamp, reap_all,
                        run_context, settle_cpu, spawn, wait_for)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN = "<!-- join-bench:begin -->"
END = "<!-- join-bench:end -->"
SECTION_TITLE = "## Join latency: lwsinit against a C floor, leader last and first"
CFLOOR_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cfloor.c")

TARGET_RATIO = 2.0      # lwsinit at most twice the C floor, both orders
ORDERS = ("last", "first")


def listening(port):
    """Whether something listens on TCP port (any address), from /proc."""
    want = ":%04X" % port
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    w = line.split()
                    if w[1].endswith(want) and w[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def build_cfloor(root):
    exe = os.path.join(root, "cfloor")
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wall", "-o", exe, CFLOOR_C], check=True)
    return exe


def refused_cost_us(cfloor, count=100000):
    """CPU time of one refused connect attempt on loopback (both ends), us:
    what the workers' retries cost while the leader is not listening."""
    out = subprocess.run([cfloor, "-c", str(free_port()), str(count)], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


class JoinGroup(LwsGroup):
    """One repetition of an lwsinit group, the leader started last or first."""

    def log_time(self, rank, text, start_r):
        """ms from start_r (CLOCK_REALTIME ns) to rank's first log line
        containing text, or None."""
        for line in self.log(rank).splitlines():
            if text in line:
                t = log_ts_ns(line)
                return None if t is None else (t - start_r) / 1e6
        return None

    def join(self, order, wait):
        n = self.n
        workers = range(1, n)
        if order == "last":
            for r in workers:
                self.start(r)

            def all_retrying():
                self.check_alive()
                return all("waiting for the leader's rendezvous" in self.log(r) for r in workers)
            wait_for(all_retrying, 30 + n * 0.2, "%d workers to retry" % (n - 1), 0.05)
            t_wait = time.monotonic()
            time.sleep(wait)
            settle_cpu()
            waited = time.monotonic() - t_wait
            self.start(0)
            first = [0]
        else:
            self.start(0)

            def leader_listens():
                self.check_alive()
                return listening(self.rdzv_port)
            wait_for(leader_listens, 30, "the leader to listen", 0.01)
            time.sleep(0.2)
            settle_cpu()
            for r in workers:
                self.start(r)
            first = list(workers)

        def all_launched():
            if count_files(self.d, "eng-") >= n:
                return True
            self.check_alive()
            return False
        wait_for(all_launched, 60, "%d engines to start" % n, 0.005)
        starts = {r: read_stamp(os.path.join(self.d, "agent-%d" % r)) for r in first}
        t0r = max(starts.values())
        start_m, start_r = t0r
        eng = [read_stamp(os.path.join(self.d, "eng-%d" % r))[0] for r in range(n)]
        res = {"ms": (max(eng) - start_m) / 1e6, "first_ms": (min(eng) - start_m) / 1e6}
        listen = self.log_time(0, "holding the rendezvous", start_r)
        formed = self.log_time(0, "formed in", start_r)
        joined = self.log_time(0, "(%d of %d)" % (n, n), start_r)
        if joined is not None:
            res["joined_ms"] = joined
        if listen is not None:
            res["listen_ms"] = listen
        if formed is not None:
            res["release_ms"] = formed
        if order == "last":
            res["waited_s"] = waited
        return res


def cfloor_join(cfloor, stamp, n, root, order, wait):
    """One repetition of the C floor; the same clock origins as JoinGroup."""
    d = tempfile.mkdtemp(prefix="cfloor-%d-" % n, dir=root)
    port = free_port()
    pids = []

    def start(rank):
        argv = [stamp, "-x", os.path.join(d, "agent-%d" % rank), cfloor, str(port), str(n),
                str(rank), stamp, "-e", os.path.join(d, "eng-%d" % rank)]
        pids.append(spawn(argv, {}, pgroup=True))

    try:
        if order == "last":
            for r in range(1, n):
                start(r)
            wait_for(lambda: count_files(d, "agent-") >= n - 1, 30, "cfloor workers", 0.01)
            time.sleep(wait)
            settle_cpu()     # never idle: the workers knock every millisecond
            start(0)
            first = [0]
        else:
            start(0)
            wait_for(lambda: listening(port), 30, "the cfloor leader to listen", 0.005)
            time.sleep(0.2)
            settle_cpu()
            for r in range(1, n):
                start(r)
            first = list(range(1, n))
        wait_for(lambda: count_files(d, "eng-") >= n, 60, "%d cfloor engines" % n, 0.005)
        start_m = max(read_stamp(os.path.join(d, "agent-%d" % r)) for r in first)[0]
        ends = [read_stamp(os.path.join(d, "eng-%d" % r))[0] for r in range(n)]
        return {"ms": (max(ends) - start_m) / 1e6, "first_ms": (min(ends) - start_m) / 1e6}
    finally:
        kill_groups(pids, d)


def render(ctx):
    L = []
    a = L.append
    m = ctx["machine"]
    n = ctx["n"]
    a(SECTION_TITLE)
    a("")
    a("Written by `tests/bench/join_bench.py`. A group of %d on loopback, every member" % n)
    a("on this machine's %s CPUs, from the start of the member that completes the" % m["nproc"])
    a("group to the main() of the last of the %d engines (a static program that" % n)
    a("stamps the clock):")
    a("")
    a("- **leader last**: ranks 1..%d start first and retry while nobody listens;" % (n - 1))
    a("  %.0f s later, with the machine idle, the leader starts. From the leader's" % ctx["wait"])
    a("  exec. LeaderWorkerSet creates the pods together, and the leader's agent is")
    a("  often the last to listen: this is the common case.")
    a("- **leader first**: the leader listens; then ranks 1..%d start in one burst." % (n - 1))
    a("  From the last agent's exec.")
    a("- **C floor** (`tests/bench/cfloor.c`): the same orders with a minimal epoll")
    a("  barrier whose ranks retry a refused connect every millisecond and")
    a("  fork+exec the engine after the release: no handshake, checks, logging or")
    a("  dynamic loading.")
    a("")
    a("- date: %s" % ctx["date"])
    a("- machine: %s CPUs, %s, Linux %s; one spawn+exec of a static binary costs "
      "%.1f ms here" % (m["nproc"], m["cpu"], m["kernel"], ctx["exec_ms"]))
    a("- one refused connect attempt (socket, SYN, reset, close; both ends on loopback) "
      "costs %.1f us of CPU here (`cfloor -c`; docs/protocol.md, \"Retries\")" % ctx["syn_us"])
    a("- load average at the start: %s" % ctx["loadavg"])
    a("- lwsinit: %s, `%s`, git %s" % (ctx["lws_version"], ctx["lwsinit_rel"], ctx["git"]))
    a("- %d repetitions, the four variants alternating; median / max" % ctx["reps"])
    a("- reproduce: `%s`" % ctx["command"])
    a("")
    a("| order | lwsinit median ms | max ms | C floor median ms | max ms "
      "| lwsinit / C floor | leader listening ms | last joined ms | first engine ms "
      "| C floor first engine ms |")
    a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for o in ctx["orders"]:
        lw, cf = ctx["lws"][o], ctx["cf"][o]
        a("| leader %s | %.1f | %.1f | %.1f | %.1f | %.2f | %s | %.0f | %.1f | %.1f |" % (
            o, med(lw, "ms"), max(r["ms"] for r in lw), med(cf, "ms"),
            max(r["ms"] for r in cf), med(lw, "ms") / med(cf, "ms"),
            "%.0f" % med(lw, "listen_ms") if o == "last" else "-",
            med(lw, "joined_ms"), med(lw, "first_ms"), med(cf, "first_ms")))
    if ctx.get("base"):
        for o in ctx["orders"]:
            b, cf = ctx["base"][o], ctx["cf"][o]
            a("| leader %s, %s | %.1f | %.1f | | | %.2f | %s | %.0f | %.1f | |" % (
                o, ctx["base_name"], med(b, "ms"), max(r["ms"] for r in b),
                med(b, "ms") / med(cf, "ms"),
                "%.0f" % med(b, "listen_ms") if o == "last" else "-",
                med(b, "joined_ms"), med(b, "first_ms")))
    a("")
    a("Where lwsinit's time goes (medians, from the same origin): *leader listening*,")
    a("the leader's log line that it holds the rendezvous; *last joined*, its log line")
    a("that the last worker joined (JSON logs, 1 ms resolution); *first engine*, the")
    a("main() of the first engine, that is the release plus one launch. The rest, to")
    a("the last engine, is the release reaching %d agents and %d fork+execs, all on" % (n, n))
    a("the same %s CPUs." % m["nproc"])
    if ctx.get("base"):
        a("The rows *%s* are another lwsinit build (`--baseline`) in the same run, the"
          % ctx["base_name"])
        a("variants alternating, with the C floor of the same repetitions.")
    if ctx.get("waited") is not None:
        a("The workers retried for %.1f s (median) before the leader started." % ctx["waited"])
    a("")
    a("Target: lwsinit at most %.0fx the C floor in both orders: **%s**." % (
        TARGET_RATIO, ctx["verdict"]))
    if ctx.get("notes"):
        a("")
        a("Notes:")
        a("")
        for x in ctx["notes"]:
            a("- " + x)
    return "\n".join(L).rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="the group size (2..500)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each variant")
    ap.add_argument("--wait", type=float, default=3.0,
                    help="seconds the workers retry before the leader starts (leader last)")
    ap.add_argument("--lwsinit", help="use this binary instead of building build-rdzvbench/")
    ap.add_argument("--baseline", metavar="LWSINIT",
                    help="also run this other lwsinit build (e.g. of an older revision) in the "
                         "same run, as a row of its own")
    ap.add_argument("--baseline-name", default="baseline",
                    help="what the section calls the --baseline build")
    ap.add_argument("--log-level", default="info", help="the agents' --log-level")
    ap.add_argument("--opt", action="append", default=[],
                    help="an extra lwsinit option (repeat)")
    ap.add_argument("--orders", default="last,first", help="which orders (last,first)")
    ap.add_argument("--keep", action="store_true", help="keep the agents' logs and stamps")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave the doc")
    args = ap.parse_args()
    n = args.n
    if n < 2 or n > 500:
        sys.exit("--n must be 2..500 (one 127.0.x.y probe address per agent)")
    orders = [o for o in args.orders.split(",") if o]
    if any(o not in ORDERS for o in orders):
        sys.exit("--orders: last and/or first")
    lwsinit = os.path.abspath(args.lwsinit) if args.lwsinit else build_lwsinit()
    lws_version = subprocess.run([lwsinit, "--version"], capture_output=True,
                                 text=True).stdout.strip()
    make_subreaper()
    loadavg = " ".join(open("/proc/loadavg").read().split()[:3])
    root = tempfile.mkdtemp(prefix="join-bench-")
    stamp = build_stamp(root)
    cfloor = build_cfloor(root)
    exec_ms = exec_cost_ms(stamp)
    syn_us = refused_cost_us(cfloor)
    t_begin = time.monotonic()
    lws = {o: [] for o in ORDERS}
    cf = {o: [] for o in ORDERS}
    base = {o: [] for o in ORDERS}
    baseline = os.path.abspath(args.baseline) if args.baseline else None
    try:
        for rep in range(args.reps):
            for o in orders:
                g = JoinGroup(lwsinit, stamp, n, root, args.log_level, args.opt)
                try:
                    res = g.join(o, args.wait)
                finally:
                    g.stop()
                if not args.keep:
                    shutil.rmtree(g.d, ignore_errors=True)
                lws[o].append(res)
                if baseline:
                    g = JoinGroup(baseline, stamp, n, root, args.log_level, args.opt)
                    try:
                        b = g.join(o, args.wait)
                    finally:
                        g.stop()
                    shutil.rmtree(g.d, ignore_errors=True)
                    base[o].append(b)
                    print("rep %d leader %-5s %s %7.1f ms" % (rep + 1, o, args.baseline_name,
                                                              b["ms"]), flush=True)
                c = cfloor_join(cfloor, stamp, n, root, o, args.wait)
                cf[o].append(c)
                print("rep %d leader %-5s lwsinit %7.1f ms (first engine %6.1f, listening %s, "
                      "last joined %s, released %s)   C floor %6.1f ms (first %5.1f)" % (
                          rep + 1, o, res["ms"], res["first_ms"],
                          "%.0f" % res["listen_ms"] if "listen_ms" in res else "?",
                          "%.0f" % res["joined_ms"] if "joined_ms" in res else "?",
                          "%.0f" % res["release_ms"] if "release_ms" in res else "?",
                          c["ms"], c["first_ms"]), flush=True)
    finally:
        reap_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("kept:", root)
    elapsed = time.monotonic() - t_begin

    parts, ok = [], True
    for o in orders:
        ratio = med(lws[o], "ms") / med(cf[o], "ms")
        ok = ok and ratio <= TARGET_RATIO
        parts.append("leader %s %.2fx" % (o, ratio))
    verdict = ("met" if ok and len(orders) == 2 else "NOT met" if not ok
               else "not judged (one order only)") + " (" + ", ".join(parts) + ")"
    ctx = run_context("join_bench.py", lwsinit, lws_version, loadavg, exec_ms)
    ctx.update({
        "reps": args.reps, "n": n, "wait": args.wait, "syn_us": syn_us,
        "lws": {o: lws[o] for o in orders}, "cf": {o: cf[o] for o in orders},
        "orders": orders, "verdict": verdict,
        "base": {o: base[o] for o in orders} if baseline else None,
        "base_name": args.baseline_name, "notes": ["the whole run took %.0f s" % elapsed],
    })
    if "last" in orders:
        ctx["waited"] = med(lws["last"], "waited_s")
    section = render(ctx)
    print()
    print(section)
    if not args.no_write:
        write_section(DOC, BEGIN, END, section)
        print("wrote %s" % os.path.relpath(DOC, REPO))


if __name__ == "__main__":
    main()
