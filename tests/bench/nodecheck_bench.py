#!/usr/bin/env python3
"""What the node check and the network environment add to the agent's
start: a standalone `lwsinit -- true`, 50 runs each with --node-check off
--network-env off and with --node-check fail --network-env auto,
interleaved so that the machine's load falls on both alike; prints each
median and p90 and the difference of the medians (docs/benchmarks.md,
"Node check cost").

    python3 tests/bench/nodecheck_bench.py build/agent/lwsinit [RUNS]
"""
import os
import statistics
import subprocess
import sys
import time


def run(lwsinit, mode, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LWS_", "LWSINIT_"))}
    env["LWSINIT_PROBE_ADDR"] = "127.0.0.1:%d" % port
    env["LWSINIT_STATUS_SOCKET"] = "/tmp/lwsi-nodecheck-bench-%d.sock" % os.getpid()
    env["LWSINIT_NODE_CHECK"] = mode
    env["LWSINIT_NETWORK_ENV"] = "off" if mode == "off" else "auto"
    env["LWSINIT_LOG_LEVEL"] = "error"
    t = time.perf_counter()
    subprocess.run([lwsinit, "--", "true"], env=env, check=True)
    return (time.perf_counter() - t) * 1e3


def main():
    lwsinit = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    port = 20000 + os.getpid() % 20000
    res = {"off": [], "fail": []}
    for _ in range(runs):
        for mode in res:
            res[mode].append(run(lwsinit, mode, port))
    for mode, v in res.items():
        v.sort()
        print("--node-check %-4s median %.2f ms  p90 %.2f ms" %
              (mode, statistics.median(v), v[int(len(v) * 0.9) - 1]))
    print("difference of the medians: %.2f ms" %
          (statistics.median(res["fail"]) - statistics.median(res["off"])))


if __name__ == "__main__":
    main()
