#!/usr/bin/env python3
"""Group health benchmark: how fast the leader's /readyz turns 503 when a
worker's engine health URL starts failing.

A group of 4 real lwsinit agents on loopback (leader rank 0, workers 1..3,
COMMAND `sleep 1000`), --heartbeat 100 and --upstream-interval 100. Each
rank's --upstream is an HTTP server of this script that answers 200 or 503
as told. Per trial one worker (rotating over 1..3) is switched to 503 and
the leader's /readyz is polled every ~2 ms over fresh connections until it
answers non-200; then the worker is switched back and the leader must be
ready again before the next trial. The bound: one heartbeat + one upstream
interval + 50 ms (the worker's next poll sees the failure, its next
heartbeat carries it).

It rewrites only its own section of docs/benchmarks.md, between
<!-- group-health-bench:begin --> and <!-- group-health-bench:end -->.
Not a test, not CI.

Usage (from the repository root):
    python3 tests/bench/group_health_bench.py [--trials 20] [--build-dir build]
        [--no-write]
"""
import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from benchlib import free_port, write_section
from lwsitest import HealthServer

HB_MS = 100
INTERVAL_MS = 100
SIZE = 4
BEGIN = "<!-- group-health-bench:begin -->"
END = "<!-- group-health-bench:end -->"


def readyz(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.002)
    raise SystemExit("timed out waiting for " + what)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    lwsinit = os.path.abspath(os.path.join(args.build_dir, "agent", "lwsinit"))
    if not os.access(lwsinit, os.X_OK):
        lwsinit = shutil.which("lwsinit") or sys.exit("no lwsinit in %s" % args.build_dir)
    tmp = tempfile.mkdtemp(prefix="lwsi-ghb-")
    healths = [HealthServer() for _ in range(SIZE)]
    rdzv = free_port()
    probes = [free_port() for _ in range(SIZE)]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LWS_") and not k.startswith("LWSINIT_")}
    procs = []
    try:
        for r in range(SIZE):
            argv = [lwsinit, "--leader", "127.0.0.1", "--size", str(SIZE), "--rank", str(r),
                    "--rdzv-port", str(rdzv), "--probe-addr", "127.0.0.1:%d" % probes[r],
                    "--status-socket", os.path.join(tmp, "s%d.sock" % r),
                    "--heartbeat", str(HB_MS), "--upstream", healths[r].url(),
                    "--upstream-interval", str(INTERVAL_MS), "--upstream-timeout", "500",
                    "--termination-log", os.path.join(tmp, "t%d" % r),
                    "--", "sleep", "1000"]
            procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                          stderr=open(os.path.join(tmp, "e%d" % r), "w")))
        wait(lambda: readyz(probes[0]) == 200, 20, "the group to be ready")
        took = []
        for i in range(args.trials):
            victim = 1 + i % (SIZE - 1)
            time.sleep(0.15)  # a random phase against the poll and heartbeat ticks
            t0 = time.monotonic()
            healths[victim].mode = "fail"
            wait(lambda: readyz(probes[0]) != 200, 5, "the leader to turn unready")
            took.append((time.monotonic() - t0) * 1e3)
            healths[victim].mode = "ok"
            wait(lambda: readyz(probes[0]) == 200, 5, "the leader to be ready again")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    bound = HB_MS + INTERVAL_MS + 50
    p50, p99, worst = pct(took, 50), pct(took, 99), max(took)
    verdict = "within" if p99 <= bound else "OVER"
    text = "\n".join([
        "### The leader's /readyz after a worker's upstream fails",
        "",
        "`tests/bench/group_health_bench.py`, %s, %s, %d CPUs: a group of %d on "
        "loopback, `--heartbeat %d`, `--upstream-interval %d`, %d trials (the failing "
        "worker rotates over ranks 1..3). Time from the worker's health URL answering 503 "
        "to the leader's `/readyz` answering 503, polled every ~2 ms."
        % (datetime.date.today().isoformat(), platform.node(), os.cpu_count(), SIZE, HB_MS,
           INTERVAL_MS, len(took)),
        "",
        "| p50 | p99 | max | bound (heartbeat + interval + 50 ms) |",
        "| --- | --- | --- | --- |",
        "| %.0f ms | %.0f ms | %.0f ms | %d ms: p99 %s |" % (p50, p99, worst, bound, verdict),
    ]) + "\n"
    print(text)
    if args.no_write:
        return
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                        "benchmarks.md")
    write_section(path, BEGIN, END, text)

if __name__ == "__main__":
    main()
