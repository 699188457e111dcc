#!/usr/bin/env python3
"""The launch check with real groups (contract, "Launch check" and
"Membership"): each member sends the leader its launch command, the leader
compares it argument by argument. Per-pod values pass by default (warn:
one warning per member naming the rank, the position and both values, and
/status and /metrics show it); each side's own rank counts as equal;
small numbers and the name=value form are compared; strict refuses the
group, off compares nothing; the preset is compared in every mode. And a
token that differs is a warning on the worker at once, in /status, then
exit 4 at --rdzv-timeout.
"""
import re

import lwsitest as lt
from test_group import ENGINE, Group, argv_of, status_doc


def engine(t, extra):
    """The group's engine (test_group.ENGINE: records its argv) with extra
    arguments: in argv, 'sh' is argument 0 and extra begins at 7."""
    return ["sh", "-c", ENGINE, lt.TESTCHILD, t.tmp, "--node", "{rank}"] + list(extra)


def start(g, t, rank, extra, opts=()):
    return g.start(rank, leader="127.0.0.1", engine=engine(t, extra), opts=opts)


def warnings(a):
    return [l for l in a.stderr().splitlines()
            if "the launch command differs from the leader's" in l]


def t_per_pod_values_warn(t):
    """--host <pod IP> differs on every member, --node-rank is each one's
    own rank (as $(LWS_WORKER_INDEX) expands): the group forms, the leader
    warns once per member naming the position and both values, and says
    nothing of the rank."""
    g = Group(t, 3)
    for r in range(3):
        start(g, t, r, ["--host", g.ip(r), "--node-rank", str(r), "--rank=%d" % r])
    for r in range(3):
        st = g.state(r, timeout=15)
        t.ok(("--host %s" % g.ip(r)) in argv_of(st), "rank %d's engine runs: %s"
             % (r, argv_of(st)))
    leader = g.agents[0]
    w = warnings(leader)
    t.eq(len(w), 2, "one warning per member that differs: %r" % w)
    t.note(w[0])
    for r in (1, 2):
        want = "rank %d: argument 8 is '%s', the leader's is '%s'" % (r, g.ip(r), g.ip(0))
        line = [l for l in w if ("rank %d:" % r) in l]
        t.ok(line and want in line[0], "rank %d's warning names the position and both values: %r"
             % (r, line))
        t.ok(line and "argument 10" not in line[0] and "argument 11" not in line[0],
             "rank %d's own rank is not a difference" % r)
    t.ok(all("warn" in l.lower() for l in w), "they are warnings: %r" % w[:1])
    doc = lt.wait_for(lambda: status_doc(g, 0), 5, "the leader's /status")
    lc = doc.get("launch_check") or {}
    t.eq(lc.get("mode"), "warn", "/status launch_check.mode")
    t.eq(lc.get("compared"), True, "/status launch_check.compared")
    t.eq(lc.get("ranks_differing"), 2, "/status launch_check.ranks_differing")
    t.eq(lc.get("differences"), 2, "/status launch_check.differences")
    rows = {row["rank"]: row for row in lc.get("ranks", [])}
    t.ok(rows.get(1, {}).get("differences") == 1 and g.ip(1) in rows[1].get("detail", ""),
         "/status names rank 1's difference: %r" % rows.get(1))
    code, body = g.get(0, "/metrics")
    t.ok(code == 200 and re.search(r'lwsinit_launch_check_differences\{rank="2"\} 1\b', body),
         "/metrics counts rank 2's difference")


def t_small_numbers_and_equals(t):
    """Numbers below the group size are compared (the old digest left them
    out), and name=value is named whole. Warn: the group still forms."""
    g = Group(t, 3)
    start(g, t, 0, ["--tp", "2", "--tensor-parallel-size=2"])
    start(g, t, 1, ["--tp", "1", "--tensor-parallel-size=4"])
    start(g, t, 2, ["--tp", "2", "--tensor-parallel-size=2"])
    for r in range(3):
        g.state(r, timeout=15)
    w = warnings(g.agents[0])
    t.eq(len(w), 1, "only rank 1 differs: %r" % w)
    t.ok(w and "rank 1: argument 8 is '1', the leader's is '2'" in w[0],
         "--tp 1 vs 2 in a group of 3 is named: %r" % w)
    t.ok(w and "argument 9 is '--tensor-parallel-size=4', the leader's is "
         "'--tensor-parallel-size=2'" in w[0], "the = form is named whole")


def t_strict_refuses(t):
    """--launch-check strict: the group is refused, every member exits 4,
    and the line names the rank, the position and both values."""
    g = Group(t, 3, opts=["--launch-check", "strict"])
    start(g, t, 0, ["--tp", "8"])
    start(g, t, 1, ["--tp", "8"])
    start(g, t, 2, ["--tp", "4"])
    for r in range(3):
        t.agent_rc(g.agents[r], 4, timeout=10)
    last = g.agents[0].stderr().strip().splitlines()[-1]
    t.ok("rank 2: argument 8 is '4', the leader's is '8'" in last and "strict" in last,
         "the leader's line names it: " + last)
    wl = g.agents[2].stderr().strip().splitlines()[-1]
    t.ok("argument 8 is '4'" in wl, "the worker's line says it too: " + wl)
    t.ok(not any(g.engine_started(r) for r in range(3)), "no engine started")


def t_off_and_preset(t):
    """off: a group whose commands differ forms without a word; the preset
    is compared anyway, and refuses the group."""
    g = Group(t, 2, opts=["--launch-check", "off"])
    start(g, t, 0, ["--tp", "8"])
    start(g, t, 1, ["--tp", "4"])
    for r in range(2):
        g.state(r, timeout=15)
    t.eq(warnings(g.agents[0]), [], "nothing compared, nothing said")
    doc = lt.wait_for(lambda: status_doc(g, 0), 5, "the leader's /status")
    t.eq((doc.get("launch_check") or {}).get("compared"), False, "/status: not compared")

    g2 = Group(t, 2, opts=["--launch-check", "off"])
    a0 = start(g2, t, 0, ["--tp", "8"])
    a1 = start(g2, t, 1, ["--tp", "8"], opts=["--preset", "sglang", "--dist-port", "5000"])
    t.agent_rc(a0, 4, timeout=10)
    t.agent_rc(a1, 4, timeout=10)
    last = a0.stderr().strip().splitlines()[-1]
    t.ok("the preset differs from the leader's 'none' on rank 1 (rank 1 has 'sglang')" in last,
         "a preset difference refuses the group even with off: " + last)


def t_token_mismatch(t):
    """A worker whose token differs: one warning at once that says what to
    check, /status shows it, and exit 4 at --rdzv-timeout."""
    good, bad = t.path("token"), t.path("bad")
    with open(good, "w") as f:
        f.write("s3cret\n")
    with open(bad, "w") as f:
        f.write("guess\n")
    g = Group(t, 2)
    leader = g.start(0, opts=["--token-file", good], leader="127.0.0.1")
    lt.wait_for(lambda: "holding the rendezvous" in leader.stderr(), 10, "the leader to listen")
    t0 = lt.now()
    w = g.start(1, opts=["--token-file", bad, "--rdzv-timeout", "4"], leader="127.0.0.1")
    lt.wait_for(lambda: "could not prove it with the token" in w.stderr(), 5,
                "the worker's warning")
    took = lt.now() - t0
    t.le(0, took, 1.0 * lt.SCALE, "the warning came %.3fs after the worker started" % took)
    line = [l for l in w.stderr().splitlines() if "could not prove it with the token" in l][0]
    t.ok("--token-file / LWSINIT_TOKEN" in line and "wrong token" in line,
         "it says what to check and what the leader said: " + line)
    doc = lt.wait_for(lambda: status_doc(g, 1), 5, "the worker's /status")
    u = (doc.get("group") or {}).get("unverified_refusal") or {}
    t.ok(u.get("count", 0) >= 1 and "wrong token" in u.get("reason", ""),
         "/status group.unverified_refusal: %r" % u)
    t.agent_rc(w, 4, timeout=10)
    t.eq(w.stderr().count("could not prove it with the token"), 1,
         "one warning, not one per try")
    t.ok(w.runtime >= 3.5, "it kept trying until --rdzv-timeout (%.2fs)" % w.runtime)
    t.ok("s3cret" not in w.stderr() + leader.stderr(), "the secret is never logged")


if __name__ == "__main__":
    lt.main([
        ("per-pod values warn; own ranks are equal; /status and /metrics show it",
         t_per_pod_values_warn),
        ("small numbers and name=value are compared", t_small_numbers_and_equals),
        ("--launch-check strict refuses the group with exit 4", t_strict_refuses),
        ("--launch-check off compares nothing; the preset is compared anyway", t_off_and_preset),
        ("a token mismatch is a warning at once, in /status, then exit 4", t_token_mismatch),
    ])
