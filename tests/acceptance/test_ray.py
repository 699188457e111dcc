#!/usr/bin/env python3
"""The launch in phases of presets vllm-ray and sglang-ray: the Ray head on
the leader, every worker's Ray node, then the leader's engine; deadlines,
a missing `ray`, a service that dies, and the stop (engine first, then the
service).

Ray itself is not run: tests/helpers/ray is a stand-in that follows what
`ray start --head/--address ... --block` does on the network (it opens
the GCS port, or connects to it and then opens its node-manager port) and
logs its events with CLOCK_MONOTONIC times. A group's members each have a
network namespace of their own, as pods do, so that every worker's node
port is the same fixed port, as the preset gives it.
"""
import json
import os
import signal

import lwsitest as lt
import netfix
from test_group import Group, argv_of

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers")
NODE_PORT = 6380  # the preset's --node-manager-port (agent/engine.c)


def ray_env(t, extra=None):
    """PATH with the stand-in `ray` first, and its event log."""
    b = t.path("bin")
    if not os.path.isdir(b):
        os.mkdir(b)
        os.symlink(os.path.join(HELPERS, "ray"), os.path.join(b, "ray"))
    env = {"PATH": b + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
           "FAKERAY_LOG": t.path("ray.log")}
    env.update(extra or {})
    return env


def ray_events(t):
    """[(event, role, pid, monotonic seconds)] from the stand-ins' log."""
    out = []
    try:
        with open(t.path("ray.log")) as f:
            for line in f.read().splitlines():
                ev, role, pid, ns = line.split()
                out.append((ev, role, int(pid), int(ns) / 1e9))
    except FileNotFoundError:
        pass
    return out


class Hosts:
    """Network namespaces for the workers, each joined to this machine by a
    veth pair with its own /30 of 198.19.128.0/17 and a default route to
    it: a worker reaches the leader's address on this machine from its
    own network stack, as a pod does."""

    def __init__(self, n):
        self.ns = []
        pid = os.getpid()
        for i in range(n):
            x = netfix.Netns()
            base = 32768 + (pid % 4000) * 8 + i * 4
            x.name = "lwray%d_%d" % (pid, i)
            x.host_if = "lwrh%d%d" % (pid, i)
            x.ns_if = "lwrn%d%d" % (pid, i)
            x.host_ip = "198.19.%d.%d" % (base // 256, base % 256 + 1)
            x.ns_ip = "198.19.%d.%d" % (base // 256, base % 256 + 2)
            self.ns.append(x)

    def __enter__(self):
        try:
            for x in self.ns:
                x.__enter__()
                netfix.sh(netfix.IP, "-n", x.name, "route", "add", "default", "via", x.host_ip)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for x in self.ns:
            x.__exit__()

    def wrapper(self, rank):
        return (netfix.IP, "netns", "exec", self.ns[rank - 1].name)


def need_netns():
    if not netfix.netns_available():
        raise lt.Skip("network namespaces are not available")


def start_group(t, hosts, size, opts=(), env_by_rank=None):
    """A group of size with preset vllm-ray: the leader here, at the address
    its workers reach, each worker in its own namespace."""
    leader = hosts.ns[0].host_ip
    dist_port = lt.free_port("0.0.0.0")
    g = Group(t, size, opts=["--preset", "vllm-ray", "--dist-port", str(dist_port),
                             "--node-check", "off", "--grace", "5"] + list(opts),
              resolv=False)
    for r in range(size):
        env = ray_env(t, (env_by_rank or {}).get(r))
        g.start(r, leader=leader, env=env, wrapper=hosts.wrapper(r) if r > 0 else None)
    return g, dist_port


def t_group_of_3_engine_after_every_node(t):
    """Head, then every worker's node, then the leader's engine with
    --distributed-executor-backend ray; /status shows each member's launch
    phase; a SIGTERM to the leader stops the engine, then the services,
    and nothing is left running."""
    need_netns()
    with Hosts(2) as hosts:
        g, dist_port = start_group(t, hosts, 3)
        g.wait_engines([0], timeout=30)
        engine_at = [ts for w, ts in lt.read_events(t.path("sig-0")) if w == "ready"]
        t.ok(bool(engine_at), "the leader's engine started")
        ready_ts = engine_at[0]
        ev = ray_events(t)
        ups = [(role, pid, ts) for e, role, pid, ts in ev if e == "up"]
        heads = [u for u in ups if u[0] == "head"]
        workers = [u for u in ups if u[0] == "worker"]
        t.eq(len(heads), 1, "one Ray head came up")
        t.eq(len(workers), 2, "both workers' Ray nodes came up")
        starts = {pid: ts for e, role, pid, ts in ev if e == "start" and role == "worker"}
        for role, pid, ts in workers:
            t.ok(starts[pid] > heads[0][2],
                 "a worker's ray started after the head was up (%.3f s later)"
                 % (starts[pid] - heads[0][2]))
            t.ok(ts < ready_ts, "the engine started %.3f s after worker node %d was up"
                 % (ready_ts - ts, pid))
        argv = argv_of(g.state(0))
        t.ok(argv.endswith("--distributed-executor-backend ray"),
             "the preset's flag is appended: %s" % argv)
        t.ok(not g.engine_started(1) and not g.engine_started(2),
             "workers run ray instead of COMMAND")
        st, body = g.get(0, "/status")
        doc = json.loads(body)
        phases = {m["rank"]: m.get("launch_phase") for m in doc["members"]}
        t.eq(phases, {0: "engine", 1: "service-up", 2: "service-up"},
             "the leader's /status shows each member's launch phase")
        t.eq(doc.get("launch_phase"), "engine", "and its own")
        # The group's stop: the leader's engine first, then the services.
        g.agents[0].kill(signal.SIGTERM)
        for r in range(3):
            rc = g.agents[r].wait(30)
            t.ok(rc is not None, "rank %d exited (%s)" % (r, rc))
        term_engine = [ts for w, ts in lt.read_events(t.path("sig-0"))
                       if w in ("TERM", "SIGTERM")]
        ev = ray_events(t)
        terms = [(role, ts) for e, role, pid, ts in ev if e == "term"]
        t.eq(len(terms), 3, "every ray got SIGTERM: %s" % terms)
        t.ok(bool(term_engine), "the leader's engine got SIGTERM")
        if term_engine:
            for role, ts in terms:
                t.ok(ts > term_engine[0], "%s's ray stopped after the engine got SIGTERM" % role)
        for e, role, pid, ts in ev:
            if e == "start":
                t.ok(not lt.alive(pid), "%s's ray (pid %d) is gone" % (role, pid))


def t_worker_never_up_fails_at_deadline(t):
    """A worker whose Ray node never opens its port fails the group at
    --phase-timeout, with a line naming the member and the phase; the
    engine never starts."""
    need_netns()
    with Hosts(2) as hosts:
        g, _ = start_group(t, hosts, 3, opts=["--phase-timeout", "3"],
                           env_by_rank={2: {"FAKERAY_NEVER_UP": "1"}})
        rc = g.agents[0].wait(30)
        t.eq(rc, 4, "the leader exits 4")
        err = g.agents[0].stderr()
        line = [x for x in err.splitlines() if "phase" in x and "did not finish" in x]
        t.ok(line and "rank 2" in line[-1] and "'service'" in line[-1],
             "the line names rank 2 and the phase 'service': %s" % (line[-1:] or err[-800:]))
        for r in (1, 2):
            t.eq(g.agents[r].wait(15), 4, "rank %d exits 4" % r)
        t.ok(not g.engine_started(0), "the leader's engine never started")
        for e, role, pid, ts in ray_events(t):
            if e == "start":
                t.ok(not lt.alive(pid), "%s's ray (pid %d) is gone" % (role, pid))


def standalone(t, extra_env=None, opts=()):
    dist_port = lt.free_port("0.0.0.0")
    env = t.base_env()
    env.update(ray_env(t, extra_env))
    # The preset appends its flag to COMMAND: the shell drops it.
    return t.agent(["sh", "-c", 'exec "$0" signals "$1"', lt.TESTCHILD, t.path("sig")],
                   testchild=False, opts=["--preset", "vllm-ray", "--dist-port", str(dist_port),
                         "--node-check", "off", "--grace", "5", "--log-level", "debug"]
                   + list(opts), env=env)


def t_ray_missing_exits_127(t):
    """No `ray` in the image: exit 127 with one line that says so and
    names the preset that needs no Ray."""
    env = t.base_env()
    env["PATH"] = "/usr/bin:/bin"
    a = t.agent(["signals", t.path("sig")], opts=["--preset", "sglang-ray", "--node-check", "off"],
                env=env)
    t.eq(a.wait(10), 127, "exit 127")
    err = a.stderr()
    t.ok("Ray is not installed" in err and "--preset vllm" in err and "0.12" in err,
         "the line says Ray is missing and names --preset vllm: %s" % err[-600:])
    t.ok(not os.path.exists(t.path("sig")), "the engine never started")


def t_service_dying_fails_the_member(t):
    """The Ray head killed under a running engine: the member fails (the
    engine is stopped, the exit status is the service's)."""
    a = standalone(t)
    lt.wait_for(lambda: os.path.exists(t.path("sig")) and "ready" in open(t.path("sig")).read(),
                15, "the engine to be up")
    head = [pid for e, role, pid, ts in ray_events(t) if e == "start" and role == "head"][0]
    os.kill(head, signal.SIGKILL)
    rc = a.wait(15)
    t.eq(rc, 128 + signal.SIGKILL, "exit with the service's status")
    err = a.stderr()
    t.ok("the Ray head" in err and "killed by signal 9" in err,
         "the line names the Ray head: %s" % err[-600:])
    words = [w for w, ts in lt.read_events(t.path("sig"))]
    t.ok(any(w in ("TERM", "SIGTERM") for w in words), "the engine was stopped: %s" % words)


def t_stop_engine_then_service(t):
    """SIGTERM: the engine gets it and exits first, then the Ray head gets
    SIGTERM; nothing is left running."""
    a = standalone(t)
    lt.wait_for(lambda: os.path.exists(t.path("sig")) and "ready" in open(t.path("sig")).read(),
                15, "the engine to be up")
    engine = a.child()
    a.kill(signal.SIGTERM)
    t.eq(a.wait(15), 0, "exit with the engine's status (testchild exits 0 on SIGTERM)")
    sig = lt.read_events(t.path("sig"))
    eng_term = [ts for w, ts in sig if w in ("TERM", "SIGTERM")]
    ev = ray_events(t)
    head_term = [ts for e, role, pid, ts in ev if e == "term" and role == "head"]
    t.ok(eng_term and head_term, "both got SIGTERM: engine %s, head %s" % (sig, head_term))
    t.ok(head_term[0] > eng_term[0], "the head stopped %.3f s after the engine's SIGTERM"
         % (head_term[0] - eng_term[0]))
    for e, role, pid, ts in ev:
        if e == "start":
            t.ok(not lt.alive(pid), "the ray (pid %d) is gone" % pid)
    t.ok(not lt.alive(engine), "the engine (pid %d) is gone" % engine)


lt.main([
    ("ray_missing_exits_127", t_ray_missing_exits_127),
    ("stop_engine_then_service", t_stop_engine_then_service),
    ("service_dying_fails_the_member", t_service_dying_fails_the_member),
    ("group_of_3_engine_after_every_node", t_group_of_3_engine_after_every_node),
    ("worker_never_up_fails_at_deadline", t_worker_never_up_fails_at_deadline),
])
