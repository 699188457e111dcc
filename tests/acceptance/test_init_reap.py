#!/usr/bin/env python3
"""The init, part 3: reaping (contract, "The init"). Orphaned grandchildren
are re-parented to the agent, as PID 1 of its namespace or, when it is not
PID 1, as the child subreaper, and it reaps them without mistaking any of
them for its child: the exit status stays the child's.

testchild "orphans N FILE" double-forks N grandchildren; each records its
new parent once orphaned and exits; the child then waits until all have
left /proc (a zombie stays in /proc until reaped) and writes "reaped N"."""
import signal

import lwsitest as lt

N = 100


def orphan_lines(path):
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


def zombies_below(pid):
    return [d for d in lt.descendants(pid) if (lt.proc_stat(d) or {}).get("state") == "Z"]


def reaped(t, pid1):
    log = t.path("orphans")
    a = t.agent(["orphans", str(N), log, "--exit", "42", "--hold"], pid1=pid1)
    child = a.child()

    def done():
        a.check_running("the orphans to be reaped")
        try:
            return any(w[0] in ("reaped", "unreaped") for w in orphan_lines(log))
        except FileNotFoundError:
            return False
    lt.wait_for(done, 20, "the child to see its %d orphans reaped" % N)
    lines = orphan_lines(log)
    orphans = [w for w in lines if w[0] == "orphan"]
    t.eq([w for w in lines if w[0] != "orphan"], [["reaped", str(N)]],
         "the child's verdict (unreaped ones are listed)")
    t.eq(len(orphans), N, "orphans recorded")
    # Each orphan's new parent was the agent: PID 1 inside the namespace,
    # else the agent's own pid (subreaper), never the host's init.
    want = "1" if pid1 else str(a.pid)
    t.eq(sorted({w[2] for w in orphans}), [want], "the orphans' new parent")
    # Nothing is left below the agent but the child, and no zombie at all.
    t.eq(lt.descendants(a.pid), [child], "processes below the agent")
    t.eq(zombies_below(a.pid), [], "zombies below the agent")
    # The status is the child's, not some orphan's (they all exited 0).
    a.kill(signal.SIGTERM)
    t.agent_rc(a, 42)


def t_reaped_pid1(t):
    reaped(t, True)


def t_reaped_subreaper(t):
    reaped(t, False)


def t_reaped_without_hold(t):
    # The child exits right after its orphans are gone; the agent still
    # reports the child's status and nothing else is left over.
    for pid1 in (True, False):
        log = t.path("orphans-%d" % pid1)
        a = t.agent(["orphans", "20", log, "--exit", "9"], pid1=pid1)
        t.agent_rc(a, 9)
        lines = orphan_lines(log)
        t.eq([w for w in lines if w[0] != "orphan"], [["reaped", "20"]],
             "the child's verdict (pid1=%s)" % pid1)


lt.main([
    ("%d orphaned grandchildren are reaped by the agent as PID 1" % N, t_reaped_pid1),
    ("%d orphaned grandchildren are reaped by the agent as subreaper" % N, t_reaped_subreaper),
    ("the child's status survives the reaping of its orphans", t_reaped_without_hold),
])
