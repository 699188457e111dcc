"""What the benchmarks of this folder share: /proc readers, and a free port.

free_port is the acceptance tests' (tests/acceptance/lwsitest.py): a port
outside the kernel's ephemeral range, so that the outgoing connections of
the benchmark (or of anything running beside it) cannot take it before the
agent told to listen on it does.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "acceptance"))
from lwsitest import free_port  # noqa: E402

__all__ = ["children_of", "cpu_jiffies", "free_port", "stat_fields"]


def stat_fields(pid):
    """The fields of /proc/PID/stat after the command name: [0] is the
    state (field 3 of proc(5)), [1] the ppid, [11] and [12] utime and
    stime. OSError when the process is gone."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return s[s.rfind(")") + 2:].split()


def children_of(pid):
    """The children of pid (of its main thread), [] when it is gone."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_jiffies():
    """The machine's CPU time by kind (the "cpu" line of /proc/stat, in
    clock ticks): user, nice, system, idle, iowait, irq, softirq, steal,
    then guest and guest_nice (already counted in user and nice)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]
