#!/usr/bin/env python3
"""Presets as the engines take them: a real group whose leader is an IPv6
address gets SGLang's --dist-init-addr in brackets, and a COMMAND that
contradicts its preset stops the agent before anything starts, with one
line and exit 2. The engine is testchild, recording its argv (test_group's
Group)."""
import socket

import lwsitest as lt
from test_group import Group, argv_of


def has_ipv6_loopback():
    """Whether ::1 can be bound here (IPv6 may be off in the kernel or the
    namespace)."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def t_ipv6_leader_in_brackets(t):
    """A group of 2 whose leader is ::1, preset sglang: each engine gets
    --dist-init-addr [::1]:PORT (SGLang refuses a bare IPv6 address before
    a port), and LWSINIT_LEADER_IP stays bare."""
    if not has_ipv6_loopback():
        raise lt.Skip("::1 cannot be bound here")
    g = Group(t, 2, opts=["--preset", "sglang", "--dist-port", "20123", "--upstream", "none"])
    g.start_all(leader="::1")
    for r in (0, 1):
        st = g.state(r, timeout=15)
        argv = argv_of(st)
        t.ok(" --dist-init-addr [::1]:20123 --nnodes 2 --node-rank %d" % r in argv,
             "rank %d's engine got the address in brackets: %s" % (r, argv))
        t.ok("--leader ::1 " in argv + " ",
             "rank %d's {leader_ip} alone stays bare: %s" % (r, argv))
        t.eq(st.get("env.LWSINIT_LEADER_IP"), "::1", "rank %d's LWSINIT_LEADER_IP" % r)


def t_contradiction_exit_2(t):
    """--distributed-executor-backend ray with preset vllm: exit 2 and one
    line naming the preset and the argument, before any engine starts."""
    g = Group(t, 2)
    a = g.start(0, leader="127.0.0.1", opts=["--preset", "vllm"],
                engine=[lt.TESTCHILD, "--distributed-executor-backend=ray"])
    t.agent_rc(a, 2, timeout=10)
    lines = a.stderr().strip().splitlines()
    t.eq(len(lines), 1, "one line on stderr: %r" % lines)
    t.ok("--preset vllm" in lines[-1] and "'--distributed-executor-backend=ray'" in lines[-1],
         "the line names the preset and the argument: " + lines[-1])
    t.ok(not g.engine_started(0), "no engine started")


if __name__ == "__main__":
    lt.main([
        ("an IPv6 leader reaches SGLang in brackets", t_ipv6_leader_in_brackets),
        ("a COMMAND that contradicts its preset exits 2 with one line", t_contradiction_exit_2),
    ])
