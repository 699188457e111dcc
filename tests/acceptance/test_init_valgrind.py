#!/usr/bin/env python3
"""The init under valgrind: whole standalone runs of the agent (launch,
forwarded signals, the stop, a failed exec) without a memory error or a
definite or indirect leak. Skipped where valgrind is missing and in
sanitizer builds (valgrind cannot run an ASan binary)."""
import signal

import lwsitest as lt

VALGRIND_ARGS = ["--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                 "--error-exitcode=99", "--track-fds=no", "-q"]


def valgrind():
    if lt.SANITIZED:
        raise lt.Skip("valgrind cannot run a sanitizer build (%s)" % lt.SANITIZE)
    if not lt.VALGRIND:
        raise lt.Skip("valgrind is not installed")
    return [lt.VALGRIND] + VALGRIND_ARGS


def checked(t, a, want, timeout=60):
    rc = a.wait(timeout)
    t.ok(rc != 99, "valgrind found errors:\n%s" % a.stderr())
    t.eq(rc, want, "the agent's exit status under valgrind")
    t.ok("Invalid " not in a.stderr() and "uninitialised" not in a.stderr(),
         "no memory error reported:\n%s" % a.stderr())


def run_with_signals(t, pid1):
    ev = t.path("events-%d" % pid1)
    a = t.agent(["signals", ev, "--exit-code", "3"], ["--grace", "30"], pid1=pid1,
                wrapper=valgrind())
    # valgrind starts slowly: the agent needs a few seconds to get going.
    lt.wait_for(lambda: (a.check_running("ready") or True) and "ready" in
                [w for w, _ in lt.read_events(ev)], 30, "the child to be ready")
    for sig, word in ((signal.SIGUSR1, "USR1"), (signal.SIGHUP, "HUP")):
        a.kill(sig)
        lt.wait_for(lambda: (a.check_running(word) or True) and word in
                    [w for w, _ in lt.read_events(ev)], 30, "the child to get " + word)
    a.kill(signal.SIGTERM)
    checked(t, a, 3)
    t.eq([w for w, _ in lt.read_events(ev)], ["ready", "USR1", "HUP", "TERM", "exiting"],
         "the child's events")


def t_signals_stop_subreaper(t):
    run_with_signals(t, False)


def t_signals_stop_pid1(t):
    run_with_signals(t, True)


def t_exec_failure(t):
    a = t.agent(["no-such-engine"], ["--termination-log", t.path("log")], testchild=False,
                wrapper=valgrind())
    checked(t, a, 127)


def t_orphans(t):
    a = t.agent(["orphans", "20", t.path("orphans"), "--exit", "4"], wrapper=valgrind())
    checked(t, a, 4)


lt.main([
    ("valgrind: signals and the stop, as subreaper", t_signals_stop_subreaper),
    ("valgrind: signals and the stop, as PID 1", t_signals_stop_pid1),
    ("valgrind: a failed exec", t_exec_failure),
    ("valgrind: reaping orphans", t_orphans),
])
