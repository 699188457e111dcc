#!/usr/bin/env python3
"""The embedded demo: a LeaderWorkerSet group of 4 on this machine.

Each "pod" is an lwsinit agent on its own loopback address. The leader's
name, sglang-0.sglang.default, is served by a real dnsmasq and found through
a resolv.conf search list that each worker sees as its /etc/resolv.conf (a
mount namespace of its own), as in a pod. The engine is a stand-in that
serves /health. The demo shows the group forming, each rank's status, the
leader's readiness and metrics, then kills one worker and shows the group
stopping as one. It leaves nothing running.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "acceptance"))
import dnsfix  # noqa: E402

BUILD = os.environ.get("LWSI_BUILD", os.path.join(ROOT, "build"))
LWSINIT = os.path.join(BUILD, "agent", "lwsinit")
ENGINE = os.path.join(BUILD, "tests", "helpers", "testchild")
SIZE = 4
NET = "127.0.100"
LEADER = "sglang-0.sglang.default"
RDZV_PORT = 17470


def ip(rank):
    return "%s.%d" % (NET, 10 + rank)


def say(text):
    print("\n\033[1m== %s\033[0m" % text, flush=True)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise SystemExit("demo: timed out waiting for %s" % what)


def kill_engine(pid):
    """Ends an engine whose agent was killed, with its process group. In a
    pod the agent is PID 1, and its end ends every process of the container
    (pid_namespaces(7)); here the agents share this machine's PID namespace,
    so the demo does what the container's end would. Only a process that is
    still the stand-in engine is signalled (its pid may have been reused)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if os.path.basename(ENGINE).encode() not in f.read():
                return
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def main():
    tmp = tempfile.mkdtemp(prefix="lwsinit-demo-")
    procs = {}
    engines = {}
    dns = dnsfix.Dns()
    try:
        dns.start()
        resolv = dns.resolv_conf()
        say("dnsmasq on 127.0.0.1:%d; each worker's /etc/resolv.conf:" % dns.port)
        print(open(resolv).read(), end="")

        def start(rank):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LWS", "LWSINIT"))}
            env.update({"LWS_LEADER_ADDRESS": LEADER, "LWS_GROUP_SIZE": str(SIZE),
                        "LWS_WORKER_INDEX": str(rank), "HOSTNAME": "sglang-0-%d" % rank})
            args = [LWSINIT, "--rdzv-port", str(RDZV_PORT),
                    "--probe-addr", "%s:7471" % ip(rank),
                    "--status-socket", os.path.join(tmp, "rank%d.sock" % rank),
                    "--dns-server", "127.0.0.1:%d" % dns.port,
                    "--upstream", "http://%s:8000/health" % ip(rank),
                    "--upstream-interval", "200", "--heartbeat", "200",
                    "--peer-timeout", "2000", "--grace", "2", "--",
                    # One command for every rank (members compare it): the
                    # engine binds its own pod's address.
                    "sh", "-c", 'exec "$0" serve 8000 --bind 127.0.100.$((10 + LWSINIT_RANK))',
                    ENGINE, "--node-rank", "{rank}", "--nnodes", "{size}",
                    "--dist-init-addr", "{leader_ip}:20000"]
            if rank > 0:
                args = ["unshare", "-m", "sh", "-c",
                        'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv] + args
            log = open(os.path.join(tmp, "rank%d.log" % rank), "w")
            procs[rank] = (subprocess.Popen(args, env=env, stdout=log, stderr=log), log)

        say("starting workers 1-3: the leader's name does not exist yet")
        for r in (1, 2, 3):
            start(r)
        time.sleep(1.0)
        print(open(os.path.join(tmp, "rank1.log")).read(), end="")

        say("the leader pod starts and its DNS record appears")
        dns.add(LEADER, ip(0))
        t0 = time.monotonic()
        start(0)
        wait_for(lambda: all(get("http://%s:7471/readyz" % ip(r))[0] == 200
                             for r in range(SIZE)), 20, "the group to be ready")
        print("every rank ready %.2f s after the leader started" % (time.monotonic() - t0))

        say("leader's log")
        print(open(os.path.join(tmp, "rank0.log")).read(), end="")
        for r in range(SIZE):
            say("lwsinit status (rank %d)" % r)
            sock = os.path.join(tmp, "rank%d.sock" % r)
            subprocess.run([LWSINIT, "status", "--socket", sock])
            doc = subprocess.run([LWSINIT, "status", "--socket", sock, "--json"],
                                 capture_output=True, text=True).stdout
            engines[r] = json.loads(doc)["child"]["pid"]
        say("curl http://%s:7471/readyz?verbose (leader)" % ip(0))
        print(get("http://%s:7471/readyz?verbose" % ip(0))[1], end="")
        say("a few metrics of the leader")
        text = get("http://%s:7471/metrics" % ip(0))[1]
        for line in text.splitlines():
            if line.startswith(("lwsinit_ready", "lwsinit_members_", "lwsinit_upstream_up",
                                "lwsinit_heartbeat_rtt", 'lwsinit_phase_duration_seconds{phase="joining"')):
                print(line)

        say("kill -9 of rank 2's agent: the group notices and stops as one")
        t1 = time.monotonic()
        procs[2][0].send_signal(signal.SIGKILL)
        procs[2][0].wait()
        kill_engine(engines[2])
        for r in (0, 1, 3):
            procs[r][0].wait(timeout=15)
        print("all stopped %.0f ms after the kill" % ((time.monotonic() - t1) * 1000))
        for r in (0, 1, 3):
            lines = open(os.path.join(tmp, "rank%d.log" % r)).read().splitlines()
            print("rank %d exited %d: %s" % (r, procs[r][0].returncode,
                                             next((l for l in lines if "error" in l), "")))
    finally:
        if 2 in engines:
            kill_engine(engines[2])
        for p, log in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
            log.close()
        dns.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    say("done: nothing left running")


if __name__ == "__main__":
    main()
