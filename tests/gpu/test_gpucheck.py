#!/usr/bin/env python3
"""lwsinit-gpucheck against libfakegpu (TAP, Python 3 standard library only).

LWSI_GPUCHECK is the program, LWSI_FAKEGPU the fake CUDA runtime + NCCL
(tests/gpu/meson.build sets both). Groups of "nodes" are several processes
of the program on this machine, wired as the agents will wire them: the
leader's check prints {"event":"nccl_id",...} with --proto, and the test
writes {"nccl_id":...} to the other checks' stdin. Every wait has a deadline;
a process still running at its deadline is killed and the test fails.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time

GPUCHECK = os.environ.get("LWSI_GPUCHECK", "")
FAKE = os.environ.get("LWSI_FAKEGPU", "")
SMALL = "1048576"  # bytes per GPU: enough to be real, small enough to be quick

_n = 0
_failed = 0


def ok(cond, desc, diag=None):
    global _n, _failed
    _n += 1
    if not cond:
        _failed += 1
    print(("ok" if cond else "not ok") + " %d - %s" % (_n, desc))
    if not cond and diag:
        for line in str(diag).splitlines()[-40:]:
            print("#   " + line)
    sys.stdout.flush()
    return cond


def skip(desc, why):
    global _n
    _n += 1
    print("ok %d - %s # SKIP %s" % (_n, desc, why))
    sys.stdout.flush()


def make_env(**kw):
    """The test's environment: no FAKEGPU_/LWSINIT_ leaking in from outside,
    the fake library as both CUDA runtime and NCCL unless overridden."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAKEGPU_", "LWSINIT_", "NCCL_", "CUDA_"))}
    env["LWSINIT_CUDART"] = FAKE
    env["LWSINIT_NCCL"] = FAKE
    for k, v in kw.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def parse_events(out):
    """Every stdout line of --proto must be one JSON object with "event"."""
    events, bad = [], []
    for line in out.splitlines():
        try:
            ev = json.loads(line)
            if not isinstance(ev, dict) or "event" not in ev:
                bad.append(line)
            else:
                events.append(ev)
        except ValueError:
            bad.append(line)
    return events, bad


def result_of(events):
    res = [e for e in events if e.get("event") == "result"]
    return res[-1] if res else None


class Run:
    def __init__(self, rc, out, err, wall):
        self.rc, self.out, self.err, self.wall = rc, out, err, wall
        self.events, self.bad = parse_events(out)
        self.result = result_of(self.events) or {}

    def diag(self):
        return "rc=%s wall=%.2fs\nstdout:\n%s\nstderr:\n%s" % (
            self.rc, self.wall, self.out, self.err)


def run(args, env, timeout=15, stdin_open=False):
    """Runs the check to its end. stdin: empty (EOF at once), or, with
    stdin_open, a pipe that stays open and silent until the check exits."""
    t0 = time.monotonic()
    rfd = wfd = None
    if stdin_open:
        rfd, wfd = os.pipe()
    p = subprocess.Popen([GPUCHECK] + args, env=env,
                         stdin=rfd if stdin_open else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if rfd is not None:
        os.close(rfd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += "\n[killed by the test after %ss]" % timeout
    if wfd is not None:
        os.close(wfd)
    return Run(p.returncode, out, err, time.monotonic() - t0)


class Group:
    """N checks in nccl mode with --proto, as N nodes of one group."""

    def __init__(self, nodes, gpus, args, env_for, timeout=15):
        self.nodes, self.timeout = nodes, timeout
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout
        self.procs = []
        for r in range(nodes):
            argv = [GPUCHECK, "nccl", "--proto", "--nodes", str(nodes), "--node-rank", str(r),
                    "--gpus", str(gpus)] + args
            self.procs.append(subprocess.Popen(
                argv, env=env_for(r), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE))
        self.leader_buf = b""

    def leader_id(self):
        """Reads the leader's stdout until its nccl_id event (or the deadline).
        What was read is kept, and parsed with the rest at the end."""
        fd = self.procs[0].stdout.fileno()
        while time.monotonic() < self.deadline:
            for line in self.leader_buf.split(b"\n")[:-1]:
                if b'"nccl_id"' in line:
                    return json.loads(line)["id"]
            r, _, _ = select.select([fd], [], [], max(0.0, self.deadline - time.monotonic()))
            if not r:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.leader_buf += chunk
        return None

    def give_id(self, hexid, ranks=None):
        for r in ranks if ranks is not None else range(1, self.nodes):
            p = self.procs[r]
            try:
                p.stdin.write((json.dumps({"nccl_id": hexid}) + "\n").encode())
                p.stdin.flush()
            except BrokenPipeError:
                pass

    def finish(self):
        runs = []
        for p in self.procs:
            # Closed as an agent would once the id is given; communicate()
            # must not touch it again.
            if p.stdin is not None:
                try:
                    p.stdin.close()
                except BrokenPipeError:
                    pass
                p.stdin = None
        for r, p in enumerate(self.procs):
            left = max(0.1, self.deadline - time.monotonic())
            try:
                out, err = p.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err += b"\n[killed by the test at its deadline]"
            if r == 0:
                out = self.leader_buf + out
            runs.append(Run(p.returncode, out.decode(errors="replace"),
                            err.decode(errors="replace"), time.monotonic() - self.t0))
        return runs


def group_diag(runs):
    return "\n".join("--- node %d ---\n%s" % (i, r.diag()) for i, r in enumerate(runs))


def run_group(nodes, gpus, args, env_for, timeout=15, withhold=()):
    g = Group(nodes, gpus, args, env_for, timeout)
    hexid = g.leader_id()
    if hexid is not None:
        g.give_id(hexid, [r for r in range(1, nodes) if r not in withhold])
    return hexid, g.finish()


# ---------------------------------------------------------------------------


def test_cuda():
    name = 'NVIDIA H200 "fake"\\'
    for ndev in (2, 4):
        r = run(["cuda", "--proto", "--bytes", SMALL],
                make_env(FAKEGPU_DEVICES=ndev, FAKEGPU_NAME=name))
        res = r.result
        devs = res.get("devices", [])
        ok(r.rc == 0 and res.get("ok") is True and len(devs) == ndev and not r.bad,
           "cuda mode with %d fake devices passes" % ndev, r.diag())
        ok([d.get("index") for d in devs] == list(range(ndev))
           and all(d.get("name") == name and d.get("pci", "").startswith("00000000:")
                   and d.get("total_bytes") == 80 << 30 and d.get("ok") is True for d in devs),
           "... and lists each device with its name, PCI bus id and memory", r.diag())
        dev_events = [e for e in r.events if e["event"] == "device"]
        lib = [e for e in r.events if e["event"] == "library"]
        ok(len(dev_events) == ndev and len(lib) == 1
           and lib[0].get("path") in (FAKE, os.path.realpath(FAKE)),
           "... with a device event per GPU and the library's path", r.diag())

    r = run(["cuda", "--bytes", SMALL], make_env(FAKEGPU_DEVICES=3))
    ok(r.rc == 0 and all(("GPU %d: Fake GPU" % i) in r.out for i in range(3))
       and "OK: cuda check passed on 3 GPUs" in r.out and "cuda runtime: " in r.out,
       "without --proto: one readable line per GPU and an OK line", r.diag())

    r = run(["cuda", "--proto", "--gpus", "2", "--bytes", SMALL], make_env(FAKEGPU_DEVICES=4))
    ok(r.rc == 0 and len(r.result.get("devices", [])) == 2 and r.result.get("gpus_visible") == 4,
       "--gpus 2 with 4 visible checks the first 2", r.diag())


def test_cuda_failures():
    r = run(["cuda", "--proto", "--gpus", "4", "--bytes", SMALL], make_env(FAKEGPU_DEVICES=2))
    err = r.result.get("error") or ""
    ok(r.rc == 1 and r.result.get("ok") is False and "found 2 GPUs, expected 4" in err,
       "--gpus 4 with 2 devices fails naming the expected and actual count", r.diag())

    r = run(["cuda", "--gpus", "4", "--bytes", SMALL], make_env(FAKEGPU_DEVICES=2))
    ok(r.rc == 1 and "found 2 GPUs, expected 4" in r.err and len(r.err.strip().splitlines()) == 1,
       "... and by hand, one line on stderr", r.diag())

    r = run(["cuda", "--proto", "--bytes", SMALL],
            make_env(FAKEGPU_DEVICES=4, FAKEGPU_FAIL="alloc", FAKEGPU_FAIL_DEVICE=1))
    err = r.result.get("error") or ""
    ok(r.rc == 1 and err.startswith("GPU 1 ") and "cudaMalloc" in err and "out of memory" in err
       and r.result.get("stage") == "devices",
       "an allocation failure fails naming the device and the CUDA error", r.diag())
    devs = r.result.get("devices", [])
    ok([d.get("ok") for d in devs] == [True, False],
       "... device 0 passed, device 1 failed, devices 2-3 not reached", r.diag())

    r = run(["cuda", "--proto", "--bytes", SMALL],
            make_env(FAKEGPU_DEVICES=3, FAKEGPU_FAIL="bad-memory", FAKEGPU_FAIL_DEVICE=2))
    err = r.result.get("error") or ""
    ok(r.rc == 1 and err.startswith("GPU 2 ") and "differs from what was written at byte 4097"
       in err and [d.get("ok") for d in r.result.get("devices", [])] == [True, True, False],
       "a flipped bit in device memory fails naming the device and the byte", r.diag())

    r = run(["cuda", "--proto"], make_env(FAKEGPU_FAIL="missing-device"))
    ok(r.rc == 1 and "no CUDA-capable device is detected" in (r.result.get("error") or ""),
       "no device visible fails with the CUDA error text", r.diag())


def test_libraries():
    r = run(["cuda"], make_env(LWSINIT_CUDART="/nonexistent/libcudart.so.12"))
    ok(r.rc == 3 and "LWSINIT_CUDART" in r.err and "/nonexistent/libcudart.so.12" in r.err
       and len(r.err.strip().splitlines()) == 1,
       "CUDA runtime not loadable: exit 3 and one clear line", r.diag())

    r = run(["nccl", "--proto"], make_env(LWSINIT_NCCL="/nonexistent/libnccl.so.2"))
    ok(r.rc == 3 and r.result.get("exit") == 3 and r.result.get("stage") == "load"
       and "libnccl.so.2" in (r.result.get("error") or ""),
       "NCCL not loadable: exit 3, the result line says why", r.diag())

    r = run(["cuda"], make_env(LWSINIT_CUDART="/bin/true"))
    ok(r.rc == 3, "a file that is not a library: exit 3", r.diag())

    r = run(["libs", "--proto"], make_env())
    libs = [e for e in r.events if e["event"] == "library"]
    ok(r.rc == 0 and [e["kind"] for e in libs] == ["cudart", "nccl"]
       and libs[1].get("version") == "2.28.9",
       "libs mode reports both libraries and their versions", r.diag())

    # The real libraries, where this machine has them (it has no GPU).
    env = make_env(LWSINIT_CUDART=None, LWSINIT_NCCL=None)
    r = run(["libs", "--proto"], env)
    if r.rc == 3:
        skip("real CUDA runtime: cuda mode fails cleanly without a GPU", "no libcudart here")
    else:
        r2 = run(["cuda", "--proto", "--bytes", SMALL], env, timeout=30)
        err = r2.result.get("error") or ""
        ok(r2.rc == 0 or (r2.rc == 1 and "cudaGetDeviceCount failed:" in err),
           "real CUDA runtime (%s): passes, or fails naming the CUDA error"
           % ((r.result.get("cudart") or {}).get("path")), r2.diag())


def test_usage():
    for args, what in ((["cuda", "--bytes", "8x"], "--bytes"),
                       (["cuda", "--gpus", "-1"], "--gpus"),
                       (["gpu"], "unknown mode"),
                       (["nccl", "--nodes", "2", "--node-rank", "1"], "needs --gpus"),
                       (["nccl", "--nodes", "2", "--node-rank", "2", "--gpus", "1"], "--node-rank"),
                       (["cuda", "--nccl-id", "abc"], "--nccl-id")):
        r = run(args, make_env())
        ok(r.rc == 2 and what in r.err and len(r.err.strip().splitlines()) == 1,
           "usage error %s: exit 2, one line naming it" % " ".join(args), r.diag())


def fake_env(**extra):
    def env_for(r):
        e = make_env(FAKEGPU_DEVICES=2)
        for k, v in extra.items():
            e[k] = str(v)
        return e
    return env_for


def test_nccl_group():
    hexid, runs = run_group(4, 2, ["--bytes", SMALL, "--iters", "2", "--timeout-ms", "10000"],
                            fake_env(FAKEGPU_NOISE=1))
    ok(hexid is not None and len(hexid) == 256, "the leader prints the 128-byte NCCL id in hex",
       group_diag(runs))
    res = [r.result for r in runs]
    ok(all(r.rc == 0 for r in runs) and all(x.get("ok") is True for x in res),
       "nccl: 4 nodes x 2 fake GPUs form one communicator and the all-reduce sums verify",
       group_diag(runs))
    ok(all(x.get("nranks") == 8 and x.get("rank_base") == 2 * i
           and [d.get("rank") for d in x.get("devices", [])] == [2 * i, 2 * i + 1]
           for i, x in enumerate(res)),
       "... 8 ranks, node R holds ranks 2R and 2R+1", group_diag(runs))
    ok(all((x.get("busbw_gbps") or 0) > 0 and (x.get("allreduce_ms") or 0) > 0
           and x.get("init_ms") is not None for x in res),
       "... and reports init time, all-reduce time and bus bandwidth", group_diag(runs))
    ok(all(not r.bad for r in runs) and all("noise" in r.err for r in runs),
       "library output on stdout goes to stderr: stdout stays JSON lines", group_diag(runs))
    phases = [e["phase"] for e in runs[1].events if e["event"] == "phase"]
    ok(phases[:3] == ["devices", "nccl_id", "nccl_prepare"] and "cleanup" in phases,
       "a worker reports its phases, waiting for the id after its devices", group_diag(runs))

    # A group of one node: no id is printed, one rank per GPU, no bus.
    r = run(["nccl", "--proto", "--bytes", SMALL, "--min-busbw", "1000"],
            make_env(FAKEGPU_DEVICES=1))
    ok(r.rc == 0 and r.result.get("nranks") == 1 and r.result.get("busbw_gbps") == 0
       and not any(e["event"] == "nccl_id" for e in r.events),
       "nccl with one node and one GPU: passes, busbw 0, no floor applies", r.diag())
    r = run(["nccl", "--bytes", SMALL, "--gpus", "0"], make_env(FAKEGPU_DEVICES=3))
    ok(r.rc == 0 and "3 ranks" in r.out and "sums verified" in r.out,
       "nccl by hand on one node with 3 GPUs", r.diag())


def test_nccl_failures():
    common = ["--bytes", SMALL, "--iters", "2"]

    hexid, runs = run_group(4, 2, common + ["--timeout-ms", "10000"],
                            fake_env(FAKEGPU_FAIL="wrong-sum", FAKEGPU_FAIL_RANK=5))
    ok(all(r.rc == 1 for r in runs)
       and all("wrong all-reduce sum" in (r.result.get("error") or "") for r in runs)
       and all(r.result.get("stage") == "verify" for r in runs),
       "wrong-sum from rank 5: every node fails the check, naming the wrong sum",
       group_diag(runs))

    t0 = time.monotonic()
    hexid, runs = run_group(4, 2, common + ["--timeout-ms", "2000"],
                            fake_env(FAKEGPU_FAIL="init-hang", FAKEGPU_FAIL_RANK=3), timeout=10)
    wall = time.monotonic() - t0
    lead = runs[0].result
    ok(all(r.rc == 1 for r in runs) and wall < 5,
       "init-hang on rank 3: every node fails within the 2 s deadline (%.1fs)" % wall,
       group_diag(runs))
    ok(lead.get("timeout") is True and lead.get("stage") == "nccl_init"
       and "timeout" in (lead.get("error") or ""),
       "... the leader reports a timeout in NCCL init", group_diag(runs))
    ok(runs[1].result.get("stage") == "nccl_init",
       "... the hanging node too, in NCCL init", group_diag(runs))

    hexid, runs = run_group(2, 2, common + ["--timeout-ms", "10000", "--min-busbw", "0.05"],
                            fake_env(FAKEGPU_FAIL="slow-allreduce", FAKEGPU_SLOW_MS=300))
    ok(all(r.rc == 1 for r in runs)
       and all(r.result.get("stage") == "bandwidth" for r in runs)
       and all("below --min-busbw 0.050" in (r.result.get("error") or "") for r in runs)
       and all((r.result.get("busbw_gbps") or 1) < 0.05 for r in runs),
       "slow all-reduce with --min-busbw 0.05: fails on bandwidth", group_diag(runs))

    hexid, runs = run_group(2, 1, common + ["--timeout-ms", "3000"], fake_env(), withhold=[1])
    ok(runs[1].rc == 1 and "stdin closed before the NCCL id"
       in (runs[1].result.get("error") or "") and runs[1].result.get("time_ms", 1e9) < 2000,
       "a worker whose stdin closes without an id fails at once", group_diag(runs))

    r = run(["nccl", "--proto", "--nodes", "2", "--node-rank", "1", "--gpus", "1",
             "--timeout-ms", "700", "--bytes", SMALL], make_env(), timeout=10,
            stdin_open=True)
    ok(r.rc == 1 and r.result.get("timeout") is True and r.result.get("stage") == "nccl_id",
       "a worker that gets no id times out waiting for it", r.diag())

    # SIGTERM while waiting: the agent's deadline. The check cleans up and
    # still prints its result.
    # stdin stays open and silent: only the signal can end the wait.
    rfd, wfd = os.pipe()
    p = subprocess.Popen([GPUCHECK, "nccl", "--proto", "--nodes", "2", "--node-rank", "1",
                          "--gpus", "1", "--bytes", SMALL], env=make_env(),
                         stdin=rfd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(rfd)
    fd = p.stdout.fileno()
    buf, t_end = b"", time.monotonic() + 5
    while b'"phase":"nccl_id"' not in buf and time.monotonic() < t_end:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    os.close(wfd)
    r = Run(p.returncode, (buf + out).decode(), err.decode(), 0)
    ok(r.rc == 1 and "terminated by signal 15" in (r.result.get("error") or ""),
       "SIGTERM while waiting for the id: exit 1 with a result line", r.diag())


def main():
    if not GPUCHECK or not os.access(GPUCHECK, os.X_OK) or not FAKE or not os.path.exists(FAKE):
        print("1..0 # SKIP LWSI_GPUCHECK and LWSI_FAKEGPU must name the built program and library")
        return 0
    t0 = time.monotonic()
    test_cuda()
    test_cuda_failures()
    test_libraries()
    test_usage()
    test_nccl_group()
    test_nccl_failures()
    print("# %.1f s" % (time.monotonic() - t0))
    print("1..%d" % _n)
    return 1 if _failed else 0


if __name__ == "__main__":
    sys.exit(main())
