"""What the benchmarks of this folder share: /proc readers, a free port, and
the writer of a script's own section of docs/benchmarks.md.

free_port is the acceptance tests' (tests/acceptance/lwsitest.py): a port
outside the kernel's ephemeral range, so that the outgoing connections of
the benchmark (or of anything running beside it) cannot take it before the
agent told to listen on it does.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "acceptance"))
from lwsitest import free_port  # noqa: E402

__all__ = ["build_c", "children_of", "cpu_jiffies", "free_port", "stat_fields", "write_section"]


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


def write_section(doc, begin, end, section):
    """Replaces the part of doc between the markers begin and end with
    section (appending the block when the markers are missing, creating the
    file when it is). A read-modify-write of that block only, done at the
    very end of a run and quickly: other scripts own other sections of the
    same file. The rename makes the new file appear whole."""
    block = "%s\n%s%s\n" % (begin, section, end)
    if os.path.exists(doc):
        with open(doc) as f:
            txt = f.read()
        if begin in txt and end in txt:
            head, rest = txt.split(begin, 1)
            _, tail = rest.split(end, 1)
            tail = tail.lstrip("\n")
            txt = head + block + ("\n" + tail if tail.strip() else "")
        else:
            txt = txt.rstrip("\n") + "\n\n" + block
    else:
        os.makedirs(os.path.dirname(doc), exist_ok=True)
        txt = ("# Benchmarks\n\n"
               "Measurements of lwsinit. Each section is written by the script it names\n"
               "between its own marker comments; rerun the script to refresh a section,\n"
               "and add new sections with their own markers.\n\n" + block)
    tmp = "%s.%d.tmp" % (doc, os.getpid())
    with open(tmp, "w") as f:
        f.write(txt)
    os.replace(tmp, doc)


def build_c(root, name, source):
    """Compiles a helper program from its source text into root/name:
    static where the machine has a static libc (its start then costs no
    dynamic loading, which would blur what the benchmarks measure), else
    dynamic. Returns the executable's path."""
    src = os.path.join(root, name + ".c")
    exe = os.path.join(root, name)
    with open(src, "w") as f:
        f.write(source)
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-O2", "-static", "-o", exe, src], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run([cc, "-O2", "-o", exe, src], check=True)
    return exe
