#!/usr/bin/env python3
"""Group health beyond loopback: a network partition of one worker
in its own network namespace, probes that stay fast with the engine hung,
the exec probe, and the status socket's owner check."""
import os
import signal
import subprocess
import time
import urllib.request

import lwsitest as lt
from netfix import IP, Netns, netns_available
from test_group import Group

def t_partition(t):
    """A partitioned worker is lost after --peer-timeout: every agent,
    the partitioned one too, stops its engine and exits 6."""
    if not netns_available():
        raise lt.Skip("no network namespaces here (ip netns)")
    with Netns() as ns:
        g = Group(t, 3, opts=["--heartbeat", "100", "--peer-timeout", "1000", "--grace", "1"])
        g.start(0, leader=ns.host_ip)
        g.start(2, leader=ns.host_ip)
        # Rank 1 lives in the namespace: its probe port is its own loopback.
        g.ip = (lambda base: lambda r: "127.0.0.1" if r == 1 else base(r))(g.ip)
        w = g.start(1, leader=ns.host_ip, env={"LWSINIT_PROBE_ADDR": "127.0.0.1:7471"},
                    wrapper=(IP, "netns", "exec", ns.name))
        for r in (0, 2):
            lt.wait_for(lambda r=r: g.ready(r), 15, "rank %d to be ready" % r)
        g.wait_engines()
        t0 = lt.now()
        ns.partition()
        for r in (0, 2, 1):
            t.agent_rc(g.agents[r], 6, timeout=10)
        took = lt.now() - t0
        t.le(0.9, took, 1.0 * 1.2 + 1.0 * lt.SCALE + 1.0,
             "every agent exited %.3fs after the partition (peer-timeout 1s, grace 1s)" % took)
        t.ok("silent" in g.agents[0].stderr(), "the leader says the member went silent")
        t.ok("silent" in w.stderr(), "the partitioned worker says the leader went silent")
        for r in range(3):
            t.ok("TERM" in open(t.path("sig-%d" % r)).read(), "rank %d's engine stopped" % r)


def t_probes_fast_with_engine_hung(t):
    """Probes answer from the agent's state: a stopped engine never makes
    them slow."""
    port = lt.free_port()
    a = t.agent(["signals", t.path("sig")], opts=["--probe-addr", "127.0.0.1:%d" % port])
    child = a.child()
    lt.wait_for(lambda: os.path.exists(t.path("sig")), 5, "the engine to be up")
    os.kill(child, signal.SIGSTOP)
    worst = 0.0
    for _ in range(200):
        t0 = time.monotonic()
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=2) as r:
            r.read()
            t.eq(r.status, 200, "readyz")
        worst = max(worst, time.monotonic() - t0)
    # Under valgrind (SCALE 6) the agent runs ~20x slower than native.
    bound = 0.05 * lt.SCALE * (2 if lt.VALGRIND_ALL else 1)
    t.le(0, worst, bound, "the slowest of 200 probes took %.1f ms" % (worst * 1e3))
    os.kill(child, signal.SIGCONT)


def t_exec_probe(t):
    port = lt.free_port()
    a = t.agent(["signals", t.path("sig")],
                opts=["--probe-addr", "127.0.0.1:%d" % port, "--upstream",
                      "http://127.0.0.1:%d/health" % lt.free_port(), "--upstream-interval", "50"])
    a.child()
    addr = "127.0.0.1:%d" % port
    live = subprocess.run([lt.LWSINIT, "probe", "live", "--addr", addr], capture_output=True)
    t.eq(live.returncode, 0, "probe live")
    ready = subprocess.run([lt.LWSINIT, "probe", "ready", "--addr", addr], capture_output=True,
                           text=True)
    t.eq(ready.returncode, 1, "probe ready fails: the engine's health URL does not answer")
    t.ok("upstream" in ready.stderr, "and says why: " + ready.stderr.strip())
    gone = subprocess.run([lt.LWSINIT, "probe", "live", "--addr", "127.0.0.1:%d" % lt.free_port()],
                          capture_output=True)
    t.eq(gone.returncode, 1, "probe of nothing fails")


def t_status_socket_owner(t):
    """The status socket is 0600 and answers only its uid or root
    (SO_PEERCRED), even if someone loosens its mode."""
    a = t.agent(["signals", t.path("sig")])
    a.child()
    sock = t.path("status0.sock")
    lt.wait_for(lambda: os.path.exists(sock), 5, "the status socket")
    t.eq(os.stat(sock).st_mode & 0o777, 0o600, "mode 0600")
    out = subprocess.run([lt.LWSINIT, "status", "--socket", sock], capture_output=True, text=True)
    t.eq(out.returncode, 0, "root reads the status")
    t.ok("rank 0 of 1" in out.stdout, "a summary for a person: " + out.stdout.splitlines()[0])
    js = subprocess.run([lt.LWSINIT, "status", "--json", "--socket", sock], capture_output=True,
                        text=True)
    t.ok(js.stdout.startswith("{") and '"phase":"running"' in js.stdout, "--json")
    os.chmod(sock, 0o666)
    os.chmod(t.tmp, 0o755)
    nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             lt.LWSINIT, "status", "--socket", sock], capture_output=True,
                            text=True)
    t.eq(nobody.returncode, 1, "another uid gets nothing: " + nobody.stderr.strip())


lt.main([
    ("a partitioned worker stops the group with 6", t_partition),
    ("probes stay fast with the engine stopped", t_probes_fast_with_engine_hung),
    ("lwsinit probe live|ready", t_exec_probe),
    ("the status socket answers only its owner", t_status_socket_owner),
])
