#!/usr/bin/env python3
"""The GPU check end to end: real agents in a local group of 4,
each running lwsinit-gpucheck against the fake CUDA/NCCL library, whose
all-reduce really sums across the 4 processes. A failure on one node fails
the whole group with exit 5 before any engine starts."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "acceptance"))
import lwsitest as lt  # noqa: E402
from test_group import Group  # noqa: E402

FAKE = os.environ.get("LWSI_FAKEGPU", "")
# The check program as built: the agent looks for it beside itself (as an
# image installs them), but the build puts it in a folder of its own.
GPUCHECK = os.environ.get("LWSI_GPUCHECK", "")


def fake_env(**extra):
    env = {"LWSINIT_CUDART": FAKE, "LWSINIT_NCCL": FAKE, "FAKEGPU_DEVICES": "2",
           "LWSINIT_GPUCHECK": GPUCHECK,
           # The fake GPUs have no device nodes (/dev/nvidiaN): the node
           # check would fail every agent of --gpus 2 before it joins.
           "LWSINIT_NODE_CHECK": "warn"}
    env.update(extra)
    return env


def run_group(t, mode, size=4, opts=(), env_for=lambda r: {}):
    g = Group(t, size, opts=["--gpu-check", mode, "--gpus", "2", "--gpu-check-bytes", "65536",
                             "--gpu-check-timeout", "8"] + list(opts))
    for r in range(size):
        g.start(r, leader="127.0.0.1", env=fake_env(**env_for(r)))
    return g


def t_nccl_passes(t):
    g = run_group(t, "nccl")
    for r in range(4):
        g.state(r, timeout=20)
    t.ok("passed on all 4 nodes" in g.agents[0].stderr(), "the leader says the check passed")
    code, body = g.get(0, "/status")
    t.eq(code, 200, "status")
    # The results reach /status, /metrics and lwsinit status, where an
    # operator looks for why a group did not start.
    for r in (0, 3):
        code, body = g.get(r, "/status")
        gc = json.loads(body).get("gpu_check", {})
        t.eq((gc.get("mode"), gc.get("state"), gc.get("group_passed"), gc.get("devices")),
             ("nccl", "passed", True, 2), "rank %d: /status gpu_check %s" % (r, gc))
        t.ok(isinstance(gc.get("busbw_gbps"), (int, float)) and gc["busbw_gbps"] >= 0,
             "rank %d: a bus bandwidth in /status (%s)" % (r, gc.get("busbw_gbps")))
        code, text = g.get(r, "/metrics")
        t.ok("lwsinit_gpu_check_passed 1" in text and "lwsinit_gpu_check_devices 2" in text
             and "lwsinit_gpu_check_busbw_bytes_per_second" in text,
             "rank %d: the check's metrics" % r)


def t_nccl_wrong_sum(t):
    g = run_group(t, "nccl", env_for=lambda r: {"FAKEGPU_FAIL": "wrong-sum",
                                                 "FAKEGPU_FAIL_RANK": "5"})
    for r in range(4):
        t.agent_rc(g.agents[r], 5, timeout=20)
        t.ok(not g.engine_started(r), "rank %d's engine never started" % r)
    errors = [l for l in g.agents[0].stderr().splitlines() if " error: " in l]
    t.eq(len(errors), 1, "the leader reports one failure line")
    t.ok("GPU check failed on rank" in errors[0], "it names the node: " + errors[0])


def t_cuda_missing_gpu(t):
    g = run_group(t, "cuda", env_for=lambda r: {"FAKEGPU_DEVICES": "1"} if r == 2 else {})
    for r in range(4):
        t.agent_rc(g.agents[r], 5, timeout=20)
    t.ok("rank 2" in g.agents[1].stderr(), "a worker names rank 2: "
         + g.agents[1].stderr().strip().splitlines()[-1])


def t_init_hang(t):
    g = run_group(t, "nccl", opts=["--gpu-check-timeout", "3"],
                  env_for=lambda r: {"FAKEGPU_FAIL": "init-hang"})
    t0 = lt.now()
    for r in range(4):
        t.agent_rc(g.agents[r], 5, timeout=20)
    took = lt.now() - t0
    t.le(0, took, 3 + 3 * lt.SCALE, "the whole group failed %.2fs after start (deadline 3s)" % took)


def t_models_differ(t):
    g = run_group(t, "cuda", size=2, env_for=lambda r: {"FAKEGPU_NAME": "GPU-%d" % r})
    for r in range(2):
        t.agent_rc(g.agents[r], 5, timeout=20)
    t.ok("models differ" in g.agents[0].stderr(), "the leader says the models differ")


def t_check_without_token(t):
    # The check program runs the engine's CUDA and NCCL, whose crash reports
    # and debug dumps may include the environment: like the engine, it must
    # not be handed the group's secret.
    d = t.path("check-env")
    os.makedirs(d)
    wrapper = os.path.join(d, "gpucheck-wrapper")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nenv > "%s/env.$$"\nexec "%s" "$@"\n' % (d, GPUCHECK))
    os.chmod(wrapper, 0o755)
    g = run_group(t, "cuda", size=2,
                  env_for=lambda r: {"LWSINIT_TOKEN": "gpu-check-secret",
                                     "LWSINIT_GPUCHECK": wrapper})
    for r in range(2):
        g.state(r, timeout=20)
    dumps = [os.path.join(d, n) for n in os.listdir(d) if n.startswith("env.")]
    t.eq(len(dumps), 2, "the check ran once on each node")
    for p in dumps:
        with open(p) as f:
            env = f.read()
        t.ok("gpu-check-secret" not in env and "LWSINIT_TOKEN=" not in env,
             "the check's environment holds no token (%s)" % os.path.basename(p))
        t.ok("LWSINIT_CUDART=" in env, "it holds the agent's other variables")


if not FAKE or not os.path.exists(FAKE):
    print("1..0 # SKIP LWSI_FAKEGPU is not set (run through meson test)")
    sys.exit(0)
lt.main([
    ("nccl check on a group of 4 x 2 fake GPUs passes, then the engines start", t_nccl_passes),
    ("a wrong all-reduce sum on one node fails every node with 5", t_nccl_wrong_sum),
    ("a node with too few GPUs fails the group with 5", t_cuda_missing_gpu),
    ("a hung NCCL init is ended at --gpu-check-timeout", t_init_hang),
    ("different GPU models fail the group", t_models_differ),
    ("the check program is not handed the group's token", t_check_without_token),
])
