#!/usr/bin/env python3
"""A real group of two agents on loopback, each with a stand-in engine
whose health URL it polls and a GPU check on the fake GPU library, so that
every metric the agents can export is there; their /metrics, leader's and
worker's, must pass `promtool check metrics` (the text-format linter) and
hold every metric name, and every value of lwsinit's own labels, that the
alert rules (rules.yaml, prometheusrule.yaml) and the dashboard select.

Built on tests/acceptance/lwsitest.py (TAP, root, cleanup of everything
started) and its Group helper (an address of 127/8 per rank, probe ports
of their own).
"""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "acceptance"))

import lwsitest as lt  # noqa: E402
import promql  # noqa: E402
from test_group import Group  # noqa: E402

PROMTOOL = os.environ.get("PROMTOOL") or shutil.which("promtool")
FAKEGPU = os.environ.get("LWSI_FAKEGPU", "")
GPUCHECK = os.environ.get("LWSI_GPUCHECK", "")

# The engine: testchild serving /health on this rank's own address, one
# argv for every rank (the launch check compares them).
ENGINE = 'exec "$0" serve "$1" --bind "$2.$((LWSINIT_RANK + 10))"'


def scrape(g, rank):
    code, body = g.get(rank, "/metrics")
    if code != 200:
        raise lt.Fail("rank %d's /metrics: %r %s" % (rank, code, body))
    return body


def lint(t, text, who):
    """promtool check metrics: problems go to its output, and it exits 1
    (a parse error) or 3 (lint findings)."""
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    t.eq((p.returncode, p.stdout.strip()), (0, ""), "promtool check metrics on %s's /metrics"
         % who)


def label_ok(samples, label, op, value):
    """Whether some sample has label matching op value (PromQL matchers are
    anchored regular expressions)."""
    for s in samples:
        if label not in s:
            continue
        if op == "=" and s[label] == value:
            return True
        if op == "=~" and re.fullmatch(value, s[label]):
            return True
        if op in ("!=", "!~"):
            return True
    return False


def t_metrics_of_a_group(t):
    if not PROMTOOL:
        if os.environ.get("CI"):
            raise lt.Fail("promtool is not installed (scripts/install-deps.sh: prometheus)")
        raise lt.Skip("promtool is not installed (apt-get install prometheus)")
    for path, what in ((FAKEGPU, "LWSI_FAKEGPU"), (GPUCHECK, "LWSI_GPUCHECK")):
        if not path or not os.path.exists(path):
            raise lt.Skip("%s is not built (%r)" % (what, path))
    g = Group(t, 2, opts=["--gpu-check", "nccl", "--gpus", "2", "--gpu-check-bytes", "65536",
                          "--gpu-check-timeout", str(int(60 * lt.SCALE)),
                          "--upstream-interval", "100"])
    port = lt.free_port(g.ip(0))
    # The fake GPUs have no /dev/nvidiaN: the node check only warns, and
    # its metrics are there to be checked too.
    env = {"LWSINIT_CUDART": FAKEGPU, "LWSINIT_NCCL": FAKEGPU, "FAKEGPU_DEVICES": "2",
           "LWSINIT_GPUCHECK": GPUCHECK, "LWSINIT_NODE_CHECK": "warn"}
    engine = ["sh", "-c", ENGINE, lt.TESTCHILD, str(port), g.base]
    def start(r):
        g.start(r, leader=g.ip(0), env=env, engine=engine,
                opts=["--upstream", "http://%s:%d/health" % (g.ip(r), port)])

    # The leader alone first: its output while it waits (no heartbeats, no
    # GPU check, no upstream yet) is linted too.
    start(0)
    lt.wait_for(lambda: g.get(0, "/livez")[0] == 200, 10, "the leader's /livez")
    waiting = scrape(g, 0)
    lint(t, waiting, "the waiting leader")
    t.ok("lwsinit_phase{phase=\"joining\"} 1" in waiting, "the waiting leader is joining")
    start(1)
    g.wait_ready(timeout=30)

    scraped = {}
    for r, who in ((0, "the leader"), (1, "the worker")):
        # Polled until the heartbeat gauges are there too (after the first
        # heartbeat each way), so that a slow machine does not fail it.
        text = lt.wait_for(lambda r=r: (lambda x: x if "lwsinit_heartbeat_rtt_seconds{" in x
                                        else None)(scrape(g, r)),
                           10, "%s's heartbeat metrics" % who, interval=0.05)
        lint(t, text, who)
        scraped[r] = promql.parse_text(text)
        t.eq(scraped[r]["lwsinit_info"][0].get("role"), "leader" if r == 0 else "worker",
             "%s's lwsinit_info role" % who)
        t.eq(scraped[r]["lwsinit_gpu_check_passed"], [{}], "%s's GPU check result" % who)
        t.eq(scraped[r]["lwsinit_upstream_up"], [{}], "%s's upstream gauge" % who)

    union = {}
    for s in scraped.values():
        for name, samples in s.items():
            union.setdefault(name, []).extend(samples)
    exprs = promql.expressions()
    t.ok(len(exprs) > 20, "found the queries of the rules and the dashboard (%d)" % len(exprs))
    used = set()
    missing = []
    for where, expr in exprs:
        for name in promql.metric_names(expr):
            used.add(name)
            if name not in union:
                missing.append("%s: %s" % (where, name))
        for name, label, op, value in promql.selectors(expr):
            if label in promql.TARGET_LABELS or name not in union:
                continue
            if not label_ok(union[name], label, op, value):
                missing.append('%s: %s{%s%s"%s"}' % (where, name, label, op, value))
    t.eq(missing, [], "metric names and label values that a rule or the dashboard selects, "
         "absent from the agents' /metrics")
    # And the other way round, as a note: what the agents export that no
    # panel or rule shows.
    unused = sorted(set(union) - used)
    t.note("%d metric names used, all exported; exported but unused: %s"
           % (len(used), ", ".join(unused) or "none"))


lt.main([("a group's /metrics passes promtool and holds every name the monitoring uses",
          t_metrics_of_a_group)])
