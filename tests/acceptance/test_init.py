#!/usr/bin/env python3
"""The init, part 1: exit status, failed exec, and what the child is given
(contract: "Exit status", "Launching", "The init"). The real lwsinit runs
testchild as COMMAND, as PID 1 of a new PID namespace where it matters and
plainly (as child subreaper) where being PID 1 changes nothing."""
import errno
import os
import shutil
import signal
import subprocess

import lwsitest as lt
from lwsitest import TESTCHILD


# Agents in flight at once in the 256-status loop: start-up is mostly
# dynamic loading (and, under ASan, mapping shadow memory), which overlaps.
PARALLEL = 16 if lt.SANITIZED else 8


def t_exit_codes_all(t):
    # All 256 statuses, plainly (PID 1 adds nothing to the status path and
    # costs an unshare each), PARALLEL agents at a time.
    pending = list(range(256))
    if lt.VALGRIND_ALL:
        # Under valgrind each agent costs seconds: every 17th status and the
        # edges still cross the whole status path.
        pending = sorted(set(range(0, 256, 17)) | {1, 2, 126, 127, 128, 129, 254, 255})
    running = []
    wrong = []
    while pending or running:
        while pending and len(running) < PARALLEL:
            code = pending.pop(0)
            extra = None
            if lt.SANITIZED and code % 16:
                # LeakSanitizer's scan at exit doubles an ASan agent's cost,
                # and the exit path is the same for every status: check
                # leaks on every 16th run (and in every other test).
                extra = {"ASAN_OPTIONS": lt.with_option(
                    os.environ.get("ASAN_OPTIONS", ""), "detect_leaks=0")}
            running.append((code, t.agent(["exit", str(code)], fast=True, extra_env=extra)))
        code, a = running.pop(0)
        rc = a.wait(20)
        if rc != code:
            wrong.append((code, rc))
            if len(wrong) == 1:
                t.note("agent stderr for exit %d:\n%s" % (code, a.stderr()))
    t.eq(wrong, [], "exit statuses that did not pass through (want, got)")


def t_exit_codes_pid1(t):
    for code in (0, 1, 2, 42, 126, 127, 128, 143, 255):
        a = t.agent(["exit", str(code)], pid1=True)
        t.agent_rc(a, code)


def t_killed_by_signal(t):
    # 128+N, for a few of each kind: terminate, core dump, real-time.
    sigs = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT, signal.SIGKILL,
            signal.SIGUSR1, signal.SIGSEGV, signal.SIGPIPE, signal.SIGTERM, signal.SIGRTMIN + 3]
    for sig in sigs:
        a = t.agent(["kill", str(int(sig))])
        t.agent_rc(a, 128 + int(sig))


def t_killed_by_signal_pid1(t):
    for sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM):
        a = t.agent(["kill", str(int(sig))], pid1=True)
        t.agent_rc(a, 128 + int(sig))


def t_signal_names(t):
    """Every line that names a signal names it, real-time ones too (as
    kill -l spells them), on stderr and in the termination log."""
    rtmin1 = int(signal.SIGRTMIN) + 1
    log = t.path("termination-log")
    a = t.agent(["bash", "-c", "kill -s RTMIN+1 $$"], ["--termination-log", log],
                testchild=False)
    t.agent_rc(a, 128 + rtmin1)
    want = "killed by SIGRTMIN+1 (%d)" % (128 + rtmin1)
    t.ok(want in a.stderr(), "stderr says %r: %r" % (want, a.stderr()))
    with open(log) as f:
        term = f.read()
    t.ok(want in term and "(null)" not in term, "the termination log says %r: %r" % (want, term))
    # A forwarded real-time signal, and the highest one, by name.
    ev = t.path("events")
    a = t.agent(["signals", ev], ["--log-level", "debug"])
    lt.wait_for(lambda: "ready" in open(ev).read() if os.path.exists(ev) else False, 10,
                "the child to be up")
    a.kill(int(signal.SIGRTMIN) + 2)
    a.kill(int(signal.SIGRTMAX))
    lt.wait_for(lambda: "forwarded SIGRTMAX " in a.stderr(), 10, "the forwarded SIGRTMAX")
    t.ok("forwarded SIGRTMIN+2 " in a.stderr(), "SIGRTMIN+2 by name: %r" % a.stderr())
    t.ok("(null)" not in a.stderr(), "no (null) on stderr")
    a.kill(signal.SIGTERM)
    t.agent_rc(a, 0)  # testchild exits 0 on SIGTERM


def t_not_found(t):
    for pid1 in (False, True):
        name = "no-such-engine-%d" % pid1
        a = t.agent([name], testchild=False, pid1=pid1)
        t.agent_rc(a, 127)
        t.ok(name in a.stderr(), "stderr names the command %r: %r" % (name, a.stderr()))
    # A path that does not exist is "not found" too.
    a = t.agent([t.path("missing/engine")], testchild=False)
    t.agent_rc(a, 127)
    t.ok(t.path("missing/engine") in a.stderr(), "stderr names the path")


def t_not_executable(t):
    f = t.path("engine.sh")
    with open(f, "w") as fh:
        fh.write("#!/bin/sh\nexit 0\n")
    os.chmod(f, 0o644)
    for pid1 in (False, True):
        a = t.agent([f], testchild=False, pid1=pid1)
        t.agent_rc(a, 126)
        t.ok(f in a.stderr(), "stderr names %s: %r" % (f, a.stderr()))
    # A directory is there but cannot run either.
    a = t.agent([t.tmp], testchild=False)
    t.agent_rc(a, 126)
    t.ok(t.tmp in a.stderr(), "stderr names the directory")


def t_process_not_created(t):
    """A failure before exec (no process could be created: vfork under
    RLIMIT_NPROC) says what failed, exits 1, and does not talk about the
    file's execute permission, which only exec's EACCES is about."""
    setpriv, prlimit = shutil.which("setpriv"), shutil.which("prlimit")
    if setpriv is None or prlimit is None:
        raise lt.Skip("setpriv(1) or prlimit(1) is not installed")
    # RLIMIT_NPROC binds an unprivileged user only (root is exempt): the
    # agent runs as nobody, limited to the one process it is, so its vfork
    # fails with EAGAIN (fork(2)). The limit is set after the uid change:
    # a set*uid over the limit would make the next execve fail (execve(2)).
    os.chmod(t.tmp, 0o777)
    log = t.path("termination-log")
    wrapper = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", prlimit,
               "--nproc=1"]
    # LeakSanitizer's check at exit needs a thread of its own, which the
    # same limit refuses.
    extra = {"ASAN_OPTIONS": lt.with_option(os.environ.get("ASAN_OPTIONS", ""),
                                            "detect_leaks=0")}
    a = t.agent(["true"], ["--termination-log", log], testchild=False, wrapper=wrapper,
                extra_env=extra)
    t.agent_rc(a, 1)
    err = a.stderr()
    t.ok("cannot start the engine 'true'" in err and os.strerror(errno.EAGAIN) in err,
         "stderr says the process could not be created: %r" % err)
    t.ok("permission" not in err, "and says nothing of permissions: %r" % err)
    with open(log) as f:
        term = f.read()
    t.ok(os.strerror(errno.EAGAIN) in term, "the termination log says it too: %r" % term)


def t_no_command(t):
    # dumb-init's and tini's "no arguments": a usage error, one line, 2.
    for argv in ([lt.LWSINIT], [lt.LWSINIT, "--"]):
        err = t.path("stderr")
        with open(err, "w") as f:
            p = t.popen(argv, env=t.base_env(), stdout=f, stderr=f)
            try:
                rc = p.wait(timeout=10 * lt.SCALE)
            except subprocess.TimeoutExpired:
                raise lt.Fail("%s did not exit" % argv)
        with open(err) as f:
            lines = f.read().splitlines()
        t.eq(rc, 2, "exit status of %s" % argv)
        t.eq(len(lines), 1, "lines on stderr: %r" % lines)
        t.ok("COMMAND" in lines[0], "the line says COMMAND is missing: %r" % lines[0])


def t_termination_log(t):
    log = t.path("termination-log")
    a = t.agent(["no-such-engine"], ["--termination-log", log], testchild=False, pid1=True)
    t.agent_rc(a, 127)
    with open(log) as f:
        lines = f.read().splitlines()
    t.eq(len(lines), 1, "lines in the termination log: %r" % lines)
    t.ok("no-such-engine" in lines[0], "the line names the command: %r" % lines[0])
    # The variable works as the flag does (contract, "Command line").
    log2 = t.path("termination-log-2")
    f = t.path("noexec")
    open(f, "w").close()
    os.chmod(f, 0o644)
    a = t.agent([f], testchild=False, extra_env={"LWSINIT_TERMINATION_LOG": log2})
    t.agent_rc(a, 126)
    with open(log2) as fh:
        lines = fh.read().splitlines()
    t.eq(len(lines), 1, "lines in the termination log given by variable: %r" % lines)
    t.ok(f in lines[0], "the line names the file: %r" % lines[0])
    # A configuration error is a failure too: exit 2, its line in the log.
    log3 = t.path("termination-log-3")
    a = t.agent(["true"], ["--termination-log", log3, "--heartbeat", "8x"], testchild=False)
    t.agent_rc(a, 2)
    with open(log3) as fh:
        lines = fh.read().splitlines()
    t.eq(len(lines), 1, "lines in the termination log after a configuration error: %r" % lines)
    t.ok("--heartbeat" in lines[0] and "8x" in lines[0],
         "the line names the option: %r" % lines[0])
    # An engine that fails on its own is the pod's failure: its line too.
    log4 = t.path("termination-log-4")
    a = t.agent(["sh", "-c", "exit 3"], ["--termination-log", log4], testchild=False)
    t.agent_rc(a, 3)
    with open(log4) as fh:
        lines = fh.read().splitlines()
    t.ok(len(lines) == 1 and "exited with status 3" in lines[0],
         "an engine's own failure is logged there: %r" % lines)
    # One we stopped is not (SIGTERM: the engine's 143 is the stop's).
    log5 = t.path("termination-log-5")
    ev = t.path("events5")
    a = t.agent(["signals", ev], ["--termination-log", log5])
    lt.wait_for(lambda: os.path.exists(ev), 10, "the child to be up")
    a.kill(signal.SIGTERM)
    a.wait(10)
    t.ok(not os.path.exists(log5) or open(log5).read() == "",
         "a stop we asked for writes nothing there")


def state_of(t, a, path):
    t.agent_rc(a, 0)
    return lt.read_state(path)


def t_mask_and_dispositions(t):
    # tini and dumb-init restore the mask they were started with; so must
    # we, though the agent itself blocks every signal (signalfd).
    SIGUSR1, SIGUSR2 = int(signal.SIGUSR1), int(signal.SIGUSR2)
    for pid1 in (True, False):
        st = t.path("state-%d" % pid1)
        a = t.agent(["state", st], pid1=pid1, sigmask={SIGUSR1}, ignore={SIGUSR2})
        s = state_of(t, a, st)
        t.eq(lt.sig_list(s["blocked"]), {SIGUSR1}, "blocked in the child (pid1=%s)" % pid1)
        t.eq(lt.sig_list(s["ignored"]), {SIGUSR2}, "ignored in the child (pid1=%s)" % pid1)
    # And from a clean start the child gets a clean mask: nothing of the
    # agent's own blocking leaks.
    st = t.path("state-clean")
    a = t.agent(["state", st], pid1=True)
    s = state_of(t, a, st)
    t.eq(s["blocked"], "", "blocked in the child from a clean start")
    t.eq(s["ignored"], "", "ignored in the child from a clean start")


def t_descriptors(t):
    # The child gets the descriptors the agent was given (here 0, 1, 2 and
    # 5) and none of the agent's own (signalfd, epoll, sockets, pipes).
    r, w = os.pipe()
    try:
        ino = os.fstat(w).st_ino
        for pid1 in (True, False):
            st = t.path("state-%d" % pid1)
            a = t.agent(["state", st], pid1=pid1, fds={5: w})
            s = state_of(t, a, st)
            fds = s["fds"]
            if lt.VALGRIND_ALL:
                # valgrind's own log descriptor and its pipes reach the
                # child (it opens them without O_CLOEXEC); the agent's are
                # checked in the plain run.
                fds = ",".join(x for x in fds.split(",") if int(x) <= 2 or int(x) == 5)
            t.eq(fds, "0,1,2,5", "the child's open descriptors (pid1=%s)" % pid1)
            t.eq(s["fd5"], "pipe:[%d]" % ino, "fd 5 is the pipe we passed")
    finally:
        os.close(r)
        os.close(w)


def t_process_group(t):
    # Its own group (so a group signal reaches all it starts), the agent as
    # its parent, and the agent's session (no setsid: the terminal stays).
    # The agent runs only as long as the child, so what we know of it comes
    # from how we started it: plainly it has our session and group, under
    # unshare it is PID 1.
    for pid1 in (True, False):
        st = t.path("state-%d" % pid1)
        a = t.agent(["state", st], pid1=pid1)
        s = state_of(t, a, st)
        t.eq(int(s["pgid"]), int(s["pid"]), "the child's pgid is its pid (pid1=%s)" % pid1)
        if pid1:
            t.eq(int(s["ppid"]), 1, "the child's parent is the agent, PID 1")
        else:
            t.eq(int(s["ppid"]), a.proc.pid, "the child's parent is the agent")
            t.ok(int(s["pgid"]) != os.getpgrp(), "the child is not in the agent's group")
            t.eq(int(s["sid"]), os.getsid(0), "the child stays in the agent's session")


def t_placeholders_standalone(t):
    st = t.path("state")
    args = ["state", st, "{leader}", "{leader_ip}", "{size}", "{rank}",
            "--addr={leader_ip}:80", "{{rank}}", "{}", "{ rank }", "{Rank}", "{"]
    a = t.agent(args, pid1=True, extra_env={"LWSINIT_LEADER_IP": "10.9.9.9",
                                           "LWSINIT_TOKEN": "not-for-the-engine",
                                           "TESTCHILD_KEEP": "yes"})
    s = state_of(t, a, st)
    got = [s["argv%d" % i] for i in range(3, int(s["argc"]))]
    want = ["127.0.0.1", "127.0.0.1", "1", "0", "--addr=127.0.0.1:80", "{rank}", "{}",
            "{ rank }", "{Rank}", "{"]
    t.eq(got, want, "expanded arguments")
    t.eq(s.get("env.LWSINIT_LEADER_IP"), "127.0.0.1", "LWSINIT_LEADER_IP (a stale one replaced)")
    t.eq(s.get("env.LWSINIT_RANK"), "0", "LWSINIT_RANK")
    t.eq(s.get("env.LWSINIT_SIZE"), "1", "LWSINIT_SIZE")
    t.eq(s.get("env.TESTCHILD_KEEP"), "yes", "the rest of the environment is inherited")
    t.eq(s.get("env.LWSINIT_TOKEN"), None, "the token is not passed on to the engine")


def t_json_argument(t):
    st = t.path("state")
    j = '{"method": "eagle", "num_speculative_tokens": 3, "x": {"y": [1, {}, {"z": null}]}}'
    a = t.agent(["state", st, "--speculative-config", j, '{"rank"}', "}{", "{{}}",
                 '{"r": "{rank}"}'])
    s = state_of(t, a, st)
    t.eq(s["argv4"], j, "the JSON argument")
    t.eq([s["argv5"], s["argv6"], s["argv7"]], ['{"rank"}', "}{", "{{}}"], "other braces")
    # A placeholder inside JSON is still a placeholder (contract: "in each
    # argument"); only the braces around it pass through.
    t.eq(s["argv8"], '{"r": "0"}', "a placeholder inside JSON")


def t_argv0_expanded(t):
    # argv[0] is expanded too and then searched in PATH, as exec does.
    bindir = t.path("bin")
    os.mkdir(bindir)
    os.symlink(TESTCHILD, os.path.join(bindir, "engine-1-0"))
    env = t.base_env()
    env["PATH"] = bindir + ":" + env.get("PATH", "/usr/bin:/bin")
    st = t.path("state")
    a = t.agent(["engine-{size}-{rank}", "state", st], testchild=False, env=env)
    s = state_of(t, a, st)
    t.eq(s["argv0"], "engine-1-0", "argv[0] after expansion")


def t_unknown_placeholder(t):
    # A typo guard: exit 2 with one line naming it, and nothing started.
    st = t.path("state")
    a = t.agent(["state", st, "{rnak}"], pid1=True)
    t.agent_rc(a, 2)
    lines = a.stderr().splitlines()
    t.eq(len(lines), 1, "stderr lines: %r" % lines)
    t.ok("rnak" in lines[0], "the line names the placeholder: %r" % lines[0])
    t.ok(not os.path.exists(st), "the child did not run")


def t_cwd_inherited(t):
    st = t.path("state")
    a = t.agent(["state", st], cwd=t.tmp)
    s = state_of(t, a, st)
    t.eq(s["cwd"], os.path.realpath(t.tmp), "the child's working directory")


def t_terminal_foreground(t):
    # With a terminal on stdin the child's group becomes the foreground
    # one, so it can read the terminal (dumb-init's and tini's tty tests).
    import pty
    master, slave = pty.openpty()
    try:
        st = t.path("state")
        a = t.agent(["state", st], stdin=slave, ctty=True)
        s = state_of(t, a, st)
        t.eq(int(s["tpgid"]), int(s["pgid"]), "the terminal's foreground group")
    finally:
        os.close(master)
        os.close(slave)


def soft_nofile(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise lt.Fail("no 'Max open files' in /proc/%d/limits" % pid)


def t_nofile_raised(t):
    # The agent raises its soft descriptor limit to the hard one (a leader
    # holds a connection per member) and gives the child the limit it was
    # started with.
    ev = t.path("events")
    a = t.agent(["signals", ev], wrapper=["prlimit", "--nofile=256:4096", "--"])
    child = a.child()
    lt.wait_for(lambda: os.path.exists(ev), 10, "the child to be up")
    t.eq(soft_nofile(a.pid), 4096, "the agent's soft RLIMIT_NOFILE")
    t.eq(soft_nofile(child), 256, "the child's soft RLIMIT_NOFILE")
    a.kill(signal.SIGTERM)
    t.agent_rc(a, 0)


lt.main([
    ("exit statuses 0..255 pass through", t_exit_codes_all),
    ("exit statuses pass through as PID 1", t_exit_codes_pid1),
    ("a child killed by signal N gives 128+N", t_killed_by_signal),
    ("a child killed by signal N gives 128+N as PID 1", t_killed_by_signal_pid1),
    ("signals are named on stderr and in the termination log, real-time ones too",
     t_signal_names),
    ("COMMAND not found: 127, named on stderr", t_not_found),
    ("COMMAND not executable: 126, named on stderr", t_not_executable),
    ("no process for COMMAND: 1, and says what failed", t_process_not_created),
    ("no COMMAND is a usage error: 2 and one line", t_no_command),
    ("the termination log gets one line on a failed exec or a configuration error",
     t_termination_log),
    ("the child gets the caller's signal mask and ignored signals", t_mask_and_dispositions),
    ("the child inherits the passed descriptors and none of the agent's", t_descriptors),
    ("the child leads its own process group, the agent its parent", t_process_group),
    ("placeholders and LWSINIT_* in standalone mode", t_placeholders_standalone),
    ("a JSON argument passes untouched", t_json_argument),
    ("argv[0] is expanded and searched in PATH", t_argv0_expanded),
    ("an unknown placeholder is exit 2 before launch", t_unknown_placeholder),
    ("the child inherits the working directory", t_cwd_inherited),
    ("with a terminal, the child's group is in the foreground", t_terminal_foreground),
    ("the agent raises its descriptor limit, the child keeps the original", t_nofile_raised),
])
