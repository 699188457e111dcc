#!/usr/bin/env python3
"""A real client no one here wrote: a PyTorch process group (gloo backend,
Debian's python3-torch) under --on-failure restart, and the same group
without lwsinit.

Each rank's engine is one Python script (ENGINE_PY): it joins the group
with torch.distributed.init_process_group("gloo", init_method=
tcp://LWSINIT_LEADER_IP:{dist_port}), all-reduces one tensor in which each
rank puts rank+1 + 100*LWSINIT_EPOCH, writes the sum to sum-RANK-EPOCH,
and then blocks, serving. Under lwsinit a SIGKILL of one rank's python
process relaunches every rank under epoch 1, and the all-reduce gives
6 + 300 = 306 on every rank.

Without lwsinit nothing brings the group back. Measured here (torch 1.13,
gloo over loopback), a rank killed with SIGKILL does not leave the others
hung: the kernel closes its sockets, and gloo's pending all-reduce fails
at once with "Connection closed by peer"; each survivor raises and exits.
A rank that is alive but answers nothing (stopped with SIGSTOP, as a hung
process or a partitioned node looks from outside) does leave them hung:
they block in the collective until gloo's timeout (60 s here). Both cases
are checked, with bounded waits; everything started is killed at the end.
The stopped rank under lwsinit, its engine's health URL served by a thread
of the script and --hang-timeout 2, restarts the group instead.
"""
import os
import signal
import subprocess
import sys

import lwsitest as lt
from test_group import Group

SIZE = 3
ENGINE_PY = r'''
import datetime, os, signal, sys
out, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rank = int(os.environ["LWSINIT_RANK"])
size = int(os.environ["LWSINIT_SIZE"])
epoch = int(os.environ.get("LWSINIT_EPOCH", "0"))
leader = os.environ["LWSINIT_LEADER_IP"]


def put(name, text):
    p = os.path.join(out, name)
    with open(p + ".tmp", "w") as f:
        f.write(text)
    os.rename(p + ".tmp", p)


put("pid-%d-%d" % (rank, epoch), "%d\n" % os.getpid())
if os.environ.get("HEALTH_PORT"):
    # A health URL for the agent's --upstream, served by a thread: a
    # process stopped as a whole (SIGSTOP) stops answering it.
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["HEALTH_PORT"])),
                                          Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
import torch
import torch.distributed as dist
dist.init_process_group("gloo", init_method="tcp://%s:%d" % (leader, port), rank=rank,
                        world_size=size, timeout=datetime.timedelta(seconds=60))
t = torch.tensor([rank + 1 + 100 * epoch], dtype=torch.int64)
dist.all_reduce(t)
put("sum-%d-%d" % (rank, epoch), "%d\n" % t.item())
if mode == "second":
    # Every rank but the last enters a second all-reduce, which the last
    # rank never joins: the test stops or kills it meanwhile.
    if rank != size - 1:
        put("second-%d" % rank, "entered\n")
        dist.all_reduce(t)
        put("second-done-%d" % rank, "%d\n" % t.item())
    else:
        put("second-%d" % rank, "stays out\n")
while True:
    signal.pause()
'''


def torch_python():
    """An interpreter that imports torch and its gloo backend: ours, or
    Debian's (python3-torch installs into /usr/lib/python3/dist-packages,
    which another python3 on PATH, a pyenv one, does not see). Returns
    (path, seconds the import took)."""
    tried = []
    for py in (sys.executable, "/usr/bin/python3"):
        if not py or not os.access(py, os.X_OK) or py in tried:
            continue
        tried.append(py)
        t0 = lt.now()
        try:
            r = subprocess.run([py, "-c", "import torch.distributed as d; "
                                "assert d.is_gloo_available()"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if r.returncode == 0:
            return py, lt.now() - t0
    why = "torch with gloo is not importable by %s (apt-get install python3-torch)" % tried
    if os.environ.get("CI") == "true":
        raise lt.Fail(why)
    raise lt.Skip(why)


def script(t):
    p = t.path("engine.py")
    with open(p, "w") as f:
        f.write(ENGINE_PY)
    return p


def read_int(t, name):
    try:
        with open(t.path(name)) as f:
            return int(f.read())
    except (FileNotFoundError, ValueError):
        return None


def wait_sums(t, epoch, want, timeout):
    for r in range(SIZE):
        lt.wait_for(lambda r=r: read_int(t, "sum-%d-%d" % (r, epoch)) is not None, timeout,
                    "rank %d's all-reduce of epoch %d" % (r, epoch))
    got = [read_int(t, "sum-%d-%d" % (r, epoch)) for r in range(SIZE)]
    t.eq(got, [want] * SIZE, "the all-reduce of epoch %d on every rank" % epoch)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own child not reaped yet) is gone for this purpose.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def t_restart(t):
    """Three ranks of a gloo group under lwsinit --on-failure restart: the
    all-reduce gives 6 in epoch 0; rank 1's python is killed (SIGKILL);
    every rank is relaunched under epoch 1 ({dist_port} the same port, the
    leader's new TCPStore on it) and the all-reduce gives 306 on every
    rank; each rank launched once per epoch, the old processes gone."""
    py, took = torch_python()
    t.note("importing torch took %.2f s here" % took)
    eng = script(t)
    dist_port = lt.free_port()
    opts = ["--heartbeat", "100", "--peer-timeout", str(int(3000 * lt.SCALE)),
            "--upstream", "none", "--grace", "3", "--on-failure", "restart",
            "--node-check", "off", "--dist-port", str(dist_port)]
    g = Group(t, SIZE, opts=opts)
    env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    for r in range(SIZE):
        g.start(r, leader="127.0.0.1", env=env,
                engine=[py, eng, t.tmp, "{dist_port}", "serve"])
    wait_sums(t, 0, 6, timeout=60)
    old = [read_int(t, "pid-%d-0" % r) for r in range(SIZE)]
    os.kill(old[1], signal.SIGKILL)
    wait_sums(t, 1, 306, timeout=60)
    new = [read_int(t, "pid-%d-1" % r) for r in range(SIZE)]
    for r in range(SIZE):
        t.ok(not alive(old[r]), "rank %d's engine of epoch 0 (pid %d) is gone" % (r, old[r]))
        t.ok(alive(new[r]), "rank %d's engine of epoch 1 (pid %d) serves" % (r, new[r]))
        t.ok(g.agents[r].running(), "rank %d's agent stays up" % r)
        t.ok(not os.path.exists(t.path("pid-%d-2" % r)), "rank %d: no epoch 2" % r)


def t_restart_stopped(t):
    """The case torch alone stays hung in (below): rank 2 stopped (SIGSTOP)
    while ranks 0 and 1 wait in a second all-reduce. Under lwsinit with
    --hang-timeout 2, rank 2's health URL (a thread of the engine) stops
    answering, its agent declares the engine hung, and the group restarts:
    every rank's all-reduce of epoch 1 gives 306."""
    py, _ = torch_python()
    eng = script(t)
    dist_port = lt.free_port()
    opts = ["--heartbeat", "100", "--peer-timeout", str(int(3000 * lt.SCALE)),
            "--upstream-interval", "100", "--upstream-timeout", "300", "--hang-timeout", "2",
            "--grace", "1", "--on-failure", "restart", "--node-check", "off",
            "--dist-port", str(dist_port)]
    g = Group(t, SIZE, opts=opts)
    for r in range(SIZE):
        port = lt.free_port()
        env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HEALTH_PORT": str(port)}
        g.start(r, leader="127.0.0.1", env=env,
                opts=["--upstream", "http://127.0.0.1:%d/health" % port],
                engine=[py, eng, t.tmp, "{dist_port}", "second"])
    wait_sums(t, 0, 6, timeout=60)
    for r in range(SIZE):
        lt.wait_for(lambda r=r: os.path.exists(t.path("second-%d" % r)), 20,
                    "rank %d at its second all-reduce" % r)
    # The agent's poll has seen the health URL answer (the hang timer
    # counts only after one healthy answer).
    lt.wait_for(lambda: g.ready(0), 20, "the leader to be ready")
    stopped = read_int(t, "pid-2-0")
    t0 = lt.now()
    os.kill(stopped, signal.SIGSTOP)
    wait_sums(t, 1, 306, timeout=60)
    took = lt.now() - t0
    t.le(2.0, took, 2.0 + 20.0 * lt.SCALE, "epoch 1's all-reduce %.1f s after the stop "
         "(--hang-timeout 2)" % took)
    t.note("epoch 1's all-reduce came %.1f s after the stop" % took)
    t.ok("hung" in g.agents[2].stderr(), "rank 2's agent says its engine hung")
    for r in range(SIZE):
        t.ok(not alive(read_int(t, "pid-%d-0" % r)), "rank %d's engine of epoch 0 is gone" % r)
        t.ok(g.agents[r].running(), "rank %d's agent stays up" % r)


def plain_group(t, mode):
    """The same script, three plain processes on loopback, no lwsinit."""
    py, _ = torch_python()
    eng = script(t)
    port = lt.free_port()
    procs = []
    for r in range(SIZE):
        env = dict(os.environ, LWSINIT_RANK=str(r), LWSINIT_SIZE=str(SIZE),
                   LWSINIT_LEADER_IP="127.0.0.1", LWSINIT_EPOCH="0", GLOO_SOCKET_IFNAME="lo",
                   OMP_NUM_THREADS="1")
        log = open(t.path("plain-%d.log" % r), "w")
        procs.append(t.popen([py, eng, t.tmp, str(port), mode], env=env, stdout=log,
                             stderr=log))
        log.close()
    wait_sums(t, 0, 6, timeout=60)
    for r in range(SIZE):
        lt.wait_for(lambda r=r: os.path.exists(t.path("second-%d" % r)), 20,
                    "rank %d at its second all-reduce" % r)
    return procs


def end_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def t_plain_killed(t):
    """Without lwsinit, rank 2 killed (SIGKILL) while ranks 0 and 1 wait in
    a second all-reduce: gloo sees the closed connection, the survivors
    raise and exit with an error within seconds, the second all-reduce
    never completes, and nothing relaunches anyone (no epoch 1)."""
    procs = plain_group(t, "second")
    try:
        os.kill(procs[2].pid, signal.SIGKILL)
        for r in (0, 1):
            rc = lt.wait_for(lambda r=r: procs[r].poll(), 20,
                             "rank %d to end after its peer's kill" % r)
            t.ok(rc not in (0, None), "rank %d exited with an error (%r)" % (r, rc))
            with open(t.path("plain-%d.log" % r)) as f:
                log = f.read()
            t.ok("Connection closed by peer" in log or "Connection reset" in log,
                 "rank %d: gloo reported the lost peer: %r" % (r, log.strip()[-200:]))
            t.ok(not os.path.exists(t.path("second-done-%d" % r)),
                 "rank %d's second all-reduce never completed" % r)
        t.ok(not any(os.path.exists(t.path("pid-%d-1" % r)) for r in range(SIZE)),
             "nothing relaunched the group")
    finally:
        end_all(procs)


def t_plain_stopped(t):
    """Without lwsinit, rank 2 stopped (SIGSTOP: alive, its sockets open,
    answering nothing) while ranks 0 and 1 wait in a second all-reduce with
    gloo's timeout at 60 s: 5 s later both survivors have neither finished
    nor exited; they stay hung. Then everything is killed."""
    procs = plain_group(t, "second")
    try:
        os.kill(procs[2].pid, signal.SIGSTOP)
        lt.sleep_until(lt.now() + 5.0)
        for r in (0, 1):
            t.ok(procs[r].poll() is None and alive(procs[r].pid),
                 "rank %d is still running 5 s after its peer stopped" % r)
            t.ok(not os.path.exists(t.path("second-done-%d" % r)),
                 "rank %d's second all-reduce has not completed: it hangs" % r)
    finally:
        end_all(procs)
    for r in range(SIZE):
        t.ok(not alive(procs[r].pid), "rank %d's process is gone after the cleanup" % r)


lt.main([
    ("torch gloo group, rank 1 killed: all ranks relaunched under epoch 1, "
     "all-reduce right", t_restart),
    ("torch gloo group, rank 2 stopped during an all-reduce: --hang-timeout restarts it",
     t_restart_stopped),
    ("torch alone, a rank killed during an all-reduce: survivors fail, "
     "no relaunch", t_plain_killed),
    ("torch alone, a rank stopped during an all-reduce: survivors hang", t_plain_stopped),
])
