"""Shared pieces of the acceptance tests: the real lwsinit binary, run as a
real PID 1 (unshare -fp --mount-proc) or plainly, observed from outside.

A test file is a TAP program (meson runs it with protocol: 'tap'):

    import lwsitest as lt

    def t_something(t):          # t: a Case, one per test
        a = t.agent(["exit", "3"], pid1=True)
        t.eq(a.wait(), 3, "exit status")

    lt.main([("the child's status is ours", t_something)])

Rules the helpers enforce, so that the tests do not have to remember them:
- every wait has a deadline and polls its condition (wait_for); timing
  assertions measure with CLOCK_MONOTONIC, the clock testchild writes;
- each Case has its own temporary folder and, at its end, kills and reaps
  every process it started, its descendants and any orphan: this process is
  a child subreaper (prctl(2)), so nothing a test starts can escape it;
- a failing check raises Fail; the Case prints "not ok" with the reason and
  the agent's stderr, and the next Case runs.

Environment (set by tests/acceptance/meson.build): LWSINIT, TESTCHILD (the
built binaries), LWSI_SANITIZE (the build's b_sanitize). LWSITEST_KEEP=1
keeps the temporary folders; LWSITEST_SCALE multiplies every deadline.
"""
import ctypes
import http.server
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

LWSINIT = os.environ.get("LWSINIT", "")
TESTCHILD = os.environ.get("TESTCHILD", "")
SANITIZE = os.environ.get("LWSI_SANITIZE", "none")
SANITIZED = SANITIZE not in ("", "none")
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
VALGRIND = shutil.which("valgrind")

# Deadlines (never lower bounds) stretch under sanitizers: ASan makes the
# agent several times slower to start, and the tests share two CPUs.
# LWSITEST_VALGRIND=1 (scripts/valgrind-acceptance.sh) runs every agent a
# test starts under valgrind's memcheck; a memory error or a definite or
# indirect leak in any of them fails the test that started it.
VALGRIND_ALL = (os.environ.get("LWSITEST_VALGRIND") == "1" and not SANITIZED
                and VALGRIND is not None)
SCALE = float(os.environ.get("LWSITEST_SCALE",
                             "3" if SANITIZED else ("6" if VALGRIND_ALL else "1")))

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


class Fail(AssertionError):
    """A check failed; the message says what was expected and what was seen."""


class Skip(Exception):
    """The test cannot run here (a missing tool); reported as TAP SKIP."""


def now():
    """CLOCK_MONOTONIC in seconds, the clock testchild's event lines use."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def wait_for(cond, timeout, what, interval=0.005):
    """Polls cond() until it returns something true and returns that; Fail
    after timeout seconds (scaled). The short sleep is the poll interval,
    not a guess at how long the condition takes."""
    end = now() + timeout * SCALE
    while True:
        v = cond()
        if v:
            return v
        if now() > end:
            raise Fail("timed out after %.1fs waiting for %s" % (timeout * SCALE, what))
        time.sleep(interval)


def sleep_until(t):
    """Sleeps until monotonic time t: for "still alive at 0.8 s" checks,
    where the point in time is the assertion, not a condition."""
    d = t - now()
    if d > 0:
        time.sleep(d)


# ---- /proc ------------------------------------------------------------------

def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name, as a dict, or
    None when the process is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = s[s.rindex(")") + 2:].split()
    # proc(5): field 3 is state; rest[0] is field 3.
    return {"state": rest[0], "ppid": int(rest[1]), "pgrp": int(rest[2]),
            "session": int(rest[3]), "starttime": int(rest[19]),
            "comm": s[s.index("(") + 1:s.rindex(")")]}


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children(pid):
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st is not None and st["ppid"] == pid:
            out.append(p)
    return out


def descendants(pid):
    """Every process below pid, from one snapshot of /proc."""
    by_parent = {}
    for p in all_pids():
        st = proc_stat(p)
        if st is not None:
            by_parent.setdefault(st["ppid"], []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in by_parent.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid, starttime=None):
    """True while pid runs (a zombie is dead) and, given starttime, is still
    the same process (pids are reused)."""
    st = proc_stat(pid)
    if st is None or st["state"] in ("Z", "X"):
        return False
    return starttime is None or st["starttime"] == starttime


def _is_agent_exe(exe):
    """lwsinit itself, or valgrind's tool running it."""
    if exe is None:
        return False
    return exe == os.path.realpath(LWSINIT) or (
        "/valgrind/" in exe and os.path.basename(exe).split("-")[0] in
        ("memcheck", "helgrind", "drd", "massif", "none"))


def exe_of(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def ns_pid(pid):
    """pid as the innermost PID namespace of that process sees it."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return pid


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_rng = random.Random(os.getpid() ^ int(time.time() * 1e6))


_handed_out = set()


def free_port(host="127.0.0.1"):
    """A TCP port free right now on host, outside the kernel's ephemeral
    range: the kernel's own choice (bind to port 0) comes from that range,
    where the outgoing connections of the tests that run at the same time
    (thousands, in test_load) take ports too, and an agent told to listen
    on it later could find it taken."""
    lo, hi = _EPHEMERAL
    candidates = [(1024, lo - 1), (hi + 1, 65535)]
    candidates = [(a, b) for a, b in candidates if b - a >= 1000]
    for _ in range(200):
        if not candidates:
            break
        a, b = _rng.choice(candidates)
        port = _rng.randint(a, b)
        # Never the same port twice to one test: a test that starts a few
        # hundred agents at once would otherwise hand two of them the same
        # free port (the birthday paradox) before either has bound it.
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_status(host, port, path, timeout=2.0, body=False):
    """GET http://host:port/path on a fresh connection: the status code (an
    error status such as 503 too), or None when nothing answered (refused,
    reset, timed out). body=True: (status, the body as text), with the
    error's text in place of the body for None."""
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path),
                                    timeout=timeout) as r:
            return (r.status, r.read().decode()) if body else r.status
    except urllib.error.HTTPError as e:
        return (e.code, e.read().decode()) if body else e.code
    except OSError as e:
        return (None, str(e)) if body else None


def read_events(path):
    """testchild signals FILE: [(word, monotonic seconds)], in file order."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out.append((parts[0], int(parts[1]) / 1e9))
        elif parts:
            out.append((parts[0], None))
    return out


def read_state(path):
    """testchild state FILE: a dict of its key=value lines."""
    out = {}
    with open(path) as f:
        for line in f.read().splitlines():
            k, _, v = line.partition("=")
            out[k] = v.replace("\\n", "\n").replace("\\\\", "\\")
    return out


def sig_list(text):
    """"10,12" -> {10, 12}"""
    return {int(x) for x in text.split(",") if x}


# ---- the agent --------------------------------------------------------------

class Agent:
    """One lwsinit run. pid is the agent's pid as seen from here (under
    unshare it is PID 1 only inside its namespace)."""

    def __init__(self, case, proc, pid1, stderr_path, started, wrapped=False):
        self.case = case
        self.proc = proc
        self.pid1 = pid1
        self.stderr_path = stderr_path
        self.started = started
        self.rc = None
        self.ended = None
        # Started directly, the process is lwsinit from the start (Popen
        # returns after the exec); else pid finds it.
        self._pid = proc.pid if not (pid1 or wrapped) else None

    @property
    def pid(self):
        """The agent's own pid, once it runs lwsinit: under unshare it is
        unshare's child, else the process we started; either may first be
        unshare or a wrapper (a shell, valgrind's launcher) that execs the
        agent in the same process. Before that exec a signal would reach
        the wrong program, so this waits for it."""
        if self._pid is None:
            def find():
                if self.proc.poll() is not None:
                    raise Fail("the agent's process exited %s before lwsinit started: %s"
                               % (self.proc.returncode, self.stderr()))
                pids = children(self.proc.pid) if self.pid1 else [self.proc.pid]
                for c in pids:
                    if _is_agent_exe(exe_of(c)):
                        return c
                return None
            self._pid = wait_for(find, 10, "lwsinit to start")
        return self._pid

    def signals_blocked(self, timeout=10):
        """Waits until the agent has blocked its signals (the first thing
        it does): from then on a signal to it waits in its signalfd and is
        never lost or fatal. Tests that wait for the child first need not."""
        def blocked():
            self.check_running("lwsinit to block its signals")
            try:
                with open("/proc/%d/status" % self.pid) as f:
                    for line in f:
                        if line.startswith("SigBlk:"):
                            return int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1))
            except FileNotFoundError:
                return False
            return False
        wait_for(blocked, timeout, "lwsinit to block its signals")

    def kill(self, sig):
        """Sends sig to the agent itself (not to unshare, which would not
        pass it on)."""
        os.kill(self.pid, sig)

    def child(self, timeout=5, exe=None):
        """The pid (seen from here) of the agent's child once it has exec'd
        exe (default: testchild)."""
        target = os.path.realpath(exe or TESTCHILD)

        def find():
            for c in children(self.pid):
                if exe_of(c) == target:
                    return c
            self.check_running("its child to start")
            return None
        return wait_for(find, timeout, "the agent's child to exec %s" % target)

    def check_running(self, what):
        if self.proc.poll() is not None:
            self._ended()
            raise Fail("the agent exited %d while waiting for %s; stderr:\n%s"
                       % (self.rc, what, self.stderr()))

    def running(self):
        if self.proc.poll() is None:
            return True
        self._ended()
        return False

    def _ended(self):
        """Notes the exit status and when we saw it (polls are 2 ms apart
        in wait, so that is when it ended, give or take)."""
        if self.rc is None:
            self.ended = now()
            self.rc = self.proc.returncode

    def wait(self, timeout=10):
        """The agent's exit status; Fail if it runs past timeout (scaled)."""
        def done():
            return self.proc.poll() is not None
        wait_for(done, timeout, "the agent (pid %d) to exit" % self.proc.pid, interval=0.002)
        self._ended()
        return self.rc

    @property
    def runtime(self):
        """Seconds from start to exit (after wait)."""
        return self.ended - self.started

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class Case:
    """One test: a temporary folder, the processes it started, and checks."""

    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="lwsit-")
        self.procs = []
        self.agents = []
        self.notes = []
        self.checks = 0

    def path(self, name):
        return os.path.join(self.tmp, name)

    def note(self, text):
        """A line of TAP diagnostics printed after the result."""
        self.notes.append(text)

    # -- checks. Each counts, so that a test that checked nothing fails.
    def ok(self, cond, what):
        self.checks += 1
        if not cond:
            raise Fail(what)

    def eq(self, got, want, what):
        self.checks += 1
        if got != want:
            raise Fail("%s: expected %r, got %r" % (what, want, got))

    def le(self, lo, got, hi, what):
        self.checks += 1
        if not lo <= got <= hi:
            raise Fail("%s: expected within [%.3f, %.3f], got %.3f" % (what, lo, hi, got))

    def agent_rc(self, a, want, timeout=10):
        """Waits for the agent and checks its exit status, showing its
        stderr on a mismatch."""
        rc = a.wait(timeout)
        self.checks += 1
        if rc != want:
            raise Fail("agent exit status: expected %d, got %d; stderr:\n%s"
                       % (want, rc, a.stderr()))
        return rc

    # -- starting processes
    def popen(self, argv, env=None, fds=None, sigmask=None, ignore=(), stdin=None,
              stdout=None, stderr=None, setsid=False, ctty=False, cwd=None, fast=False):
        """Starts argv with exactly the descriptors 0, 1, 2 and fds (a dict
        target fd -> our fd), the blocked signals sigmask and the ignored
        signals ignore; every other disposition is the default. The child
        gets SIGKILL if this process dies (PR_SET_PDEATHSIG), so a killed
        test leaves nothing behind.

        fast: none of that, for runs by the hundred: subprocess's own
        fork+exec path (several times quicker than one with preexec_fn),
        descriptors closed, signals as Python restores them (SIGPIPE and
        SIGXFSZ back to default)."""
        if stdin is None:
            stdin = subprocess.DEVNULL
        if fast:
            assert not (fds or sigmask or ignore or setsid or ctty)
            p = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                                 close_fds=True, restore_signals=True, cwd=cwd)
            self.procs.append(p)
            return p
        fds = dict(fds or {})
        mask = set(sigmask or ())
        ign = set(ignore)

        def pre():
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if setsid or ctty:
                os.setsid()
            if ctty:
                import fcntl
                import termios
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            # Move the passed descriptors to their numbers; all others get
            # close-on-exec (not closed: subprocess's own error pipe is
            # among them and reports a failed exec).
            for target, src in fds.items():
                if target != src:
                    os.dup2(src, target, inheritable=True)
                else:
                    os.set_inheritable(target, True)
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                if fd > 2 and fd not in fds:
                    try:
                        os.set_inheritable(fd, False)
                    except OSError:
                        pass  # the listing's own descriptor, closed by now
            for sig in range(1, signal.SIGRTMAX + 1):
                if sig in (signal.SIGKILL, signal.SIGSTOP):
                    continue
                try:
                    signal.signal(sig, signal.SIG_IGN if sig in ign else signal.SIG_DFL)
                except (OSError, ValueError):
                    pass  # 32, 33: the C library's own
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

        p = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                             close_fds=False, preexec_fn=pre, restore_signals=False,
                             cwd=cwd)
        self.procs.append(p)
        return p

    def base_env(self):
        """The environment the agent gets: ours without any LWS_* or
        LWSINIT_* variable (they would change the mode), plus a probe port
        of its own (agent() adds a status socket of its own), so that
        agents of tests that run at the same time never meet."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LWS_") and not k.startswith("LWSINIT_")}
        env["LWSINIT_PROBE_ADDR"] = "127.0.0.1:%d" % free_port()
        if SANITIZED:
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        return env

    def agent(self, command, opts=(), pid1=False, env=None, extra_env=None,
              testchild=True, wrapper=(), **kw):
        """Starts lwsinit [opts] -- COMMAND and returns an Agent.

        command: a testchild mode and its arguments, or with
        testchild=False any argv. pid1: as PID 1 of a new PID namespace
        with its own /proc (unshare -fp --mount-proc); else plainly, as
        our child (it then makes itself the child subreaper). env: the
        whole environment (default base_env()); extra_env: added to it.
        wrapper: argv put before lwsinit that ends by exec'ing it
        (valgrind, a mount namespace). Other keywords go to popen(): fds,
        sigmask, ignore, stdin, setsid, ctty, cwd, fast. The agent's
        stdout and stderr go to a file (Agent.stderr())."""
        env = dict(env) if env is not None else self.base_env()
        n = len(self.agents)
        env.setdefault("LWSINIT_STATUS_SOCKET", self.path("status%d.sock" % n))
        if extra_env:
            env.update(extra_env)
        if pid1 and SANITIZED and not _lsan_works_as_pid1():
            env["ASAN_OPTIONS"] = with_option(env.get("ASAN_OPTIONS", ""), "detect_leaks=0")
        cmd = ([TESTCHILD] + list(command)) if testchild else list(command)
        if VALGRIND_ALL and not wrapper:
            # No --error-exitcode: the agent's own exit status is what the
            # tests check; the findings are read from the log at the end.
            wrapper = [VALGRIND, "-q", "--leak-check=full",
                       "--errors-for-leak-kinds=definite,indirect",
                       "--show-leak-kinds=definite,indirect", "--track-fds=no", "--vgdb=no",
                       "--log-file=" + self.path("valgrind-%d.%%p.log" % n)]
        argv = list(wrapper) + [LWSINIT] + list(opts) + ["--"] + cmd
        if pid1:
            # --kill-child: if unshare goes, its child (our PID 1) goes, and
            # with it the whole namespace.
            argv = [UNSHARE, "-fp", "--mount-proc", "--kill-child"] + argv
        err = self.path("agent%d.stderr" % n)
        with open(err, "w") as f:
            started = now()
            p = self.popen(argv, env=env, stderr=f, stdout=kw.pop("stdout", f), **kw)
        a = Agent(self, p, pid1, err, started, wrapped=bool(wrapper))
        self.agents.append(a)
        return a

    # -- the end of a test
    def _valgrind_logs(self):
        """What valgrind (-q: errors and leaks only) wrote for this test's
        agents; empty when it found nothing."""
        out = []
        try:
            names = sorted(os.listdir(self.tmp))
        except FileNotFoundError:
            return ""
        for name in names:
            if name.startswith("valgrind-") and name.endswith(".log"):
                with open(os.path.join(self.tmp, name), errors="replace") as f:
                    text = f.read().strip()
                if text:
                    out.append("%s:\n%s" % (name, text))
        return "\n".join(out)

    def cleanup(self):
        """Kills and reaps everything this test left: first the processes
        it started (under unshare, killing PID 1 ends the namespace), then
        any descendant or adopted orphan. Returns how many were still
        running."""
        left = 0
        for p in self.procs:
            if p.poll() is None:
                left += 1
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        end = now() + 10
        while True:
            for p in self.procs:
                try:
                    p.wait(timeout=max(0.0, end - now()))
                except subprocess.TimeoutExpired:
                    pass
            rest = [d for d in descendants(os.getpid()) if d not in {p.pid for p in self.procs}]
            if not rest or now() > end:
                break
            for d in rest:
                if alive(d):
                    left += 1
                try:
                    os.kill(d, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for d in rest:
                if proc_stat(d) and proc_stat(d)["ppid"] == os.getpid():
                    try:
                        os.waitpid(d, 0)
                    except ChildProcessError:
                        pass
            time.sleep(0.01)
        self.valgrind_findings = self._valgrind_logs()
        if os.environ.get("LWSITEST_KEEP"):
            self.note("kept " + self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return left


_lsan_state = None


def with_option(opts, kv):
    """ASAN_OPTIONS-style "a=1:b=2" with kv set (replacing the same key)."""
    key = kv.split("=")[0]
    parts = [o for o in opts.split(":") if o and not o.startswith(key + "=")]
    return ":".join(parts + [kv])


def _lsan_works_as_pid1():
    """LeakSanitizer stops the world with ptrace; where that is refused
    (some containers, PID namespaces under seccomp) it dies with "fatal
    error" instead of reporting. Asked once per file: lwsinit --version as
    PID 1 with leak detection on."""
    global _lsan_state
    if _lsan_state is None:
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = with_option(env.get("ASAN_OPTIONS", ""), "detect_leaks=1")
        r = subprocess.run([UNSHARE, "-fp", "--mount-proc", LWSINIT, "--version"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        _lsan_state = b"LeakSanitizer has encountered a fatal error" not in r.stderr
        if not _lsan_state:
            print("# LeakSanitizer cannot run as PID 1 here; detect_leaks=0 under unshare")
    return _lsan_state


# ---- TAP --------------------------------------------------------------------

def _diag(text):
    for line in str(text).rstrip("\n").splitlines():
        print("# " + line)


def _on_term(sig, frame):
    # meson's timeout: end through the normal path so that the Case's
    # cleanup kills what it started.
    raise KeyboardInterrupt("signal %d" % sig)


def main(tests):
    """Runs [(name, function(case))] as one TAP program and exits. Called
    from a module that is only imported (one test file reusing another's
    helpers), it does nothing: only the file being run is a TAP program."""
    if sys._getframe(1).f_globals.get("__name__") != "__main__":
        return
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root (unshare -p, PID 1 in a new namespace)")
        sys.exit(0)
    for path, what in ((LWSINIT, "LWSINIT"), (TESTCHILD, "TESTCHILD")):
        if not path or not os.access(path, os.X_OK):
            print("1..0 # SKIP %s is not set to an executable (run through meson test)" % what)
            sys.exit(0)
    if not os.access(UNSHARE, os.X_OK):
        print("1..0 # SKIP unshare(1) is not installed")
        sys.exit(0)
    # Orphans of anything we start come back to us, not to the host's init,
    # so that cleanup finds them.
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("Bail out! prctl(PR_SET_CHILD_SUBREAPER): %s" % os.strerror(ctypes.get_errno()))
        sys.exit(1)
    signal.signal(signal.SIGTERM, _on_term)
    sys.stdout.reconfigure(line_buffering=True)

    only = os.environ.get("LWSITEST_ONLY")
    failed = 0
    n = 0
    t_all = now()
    for name, fn in tests:
        if only and only not in name:
            continue
        n += 1
        case = Case(name)
        t0 = now()
        status, why = "ok", None
        try:
            fn(case)
            if case.checks == 0:
                status, why = "not ok", "the test checked nothing"
        except Skip as e:
            status, why = "skip", str(e)
        except Fail as e:
            status, why = "not ok", str(e)
        except KeyboardInterrupt as e:
            status, why = "not ok", "interrupted (%s)" % e
        except Exception:
            status, why = "not ok", traceback.format_exc()
        finally:
            # The agents' stderr, read before cleanup removes the folder.
            errs = [a.stderr() for a in case.agents] if status == "not ok" else []
            try:
                left = case.cleanup()
            except Exception:
                left = 0
                case.note("cleanup failed: " + traceback.format_exc())
        took = now() - t0
        if status == "ok" and getattr(case, "valgrind_findings", ""):
            status, why = "not ok", "valgrind:\n" + case.valgrind_findings
        if status == "ok":
            print("ok %d - %s" % (n, name))
        elif status == "skip":
            print("ok %d - %s # SKIP %s" % (n, name, why))
        else:
            failed += 1
            print("not ok %d - %s" % (n, name))
            _diag(why)
            if len(errs) > 3:
                _diag("(stderr of the last 3 of %d agents)" % len(errs))
            for err in errs[-3:]:
                if err:
                    _diag("agent stderr (last 40 lines):\n" + "\n".join(err.splitlines()[-40:]))
        if left:
            case.note("cleanup killed %d process(es) still running" % left)
        for line in case.notes:
            _diag(line)
        _diag("%.2fs" % took)
        if status == "not ok" and why and why.startswith("interrupted"):
            break
    print("1..%d" % n)
    _diag("%d test(s), %d failed, %.1fs" % (n, failed, now() - t_all))
    sys.exit(1 if failed else 0)


class HealthServer:
    """An engine's health URL under the test's control: mode "ok" (200),
    "fail" (503) or "hang" (accepts, never answers)."""

    def __init__(self):
        self.mode = "ok"
        self.released = threading.Event()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if outer.mode == "hang":
                    outer.released.wait(30)
                    return
                self.send_response(200 if outer.mode == "ok" else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.request_queue_size = 64
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def url(self):
        return "http://127.0.0.1:%d/health" % self.port

    def close(self):
        self.released.set()
        self.srv.shutdown()
        self.srv.server_close()
