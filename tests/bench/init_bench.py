#!/usr/bin/env python3
"""Init overhead and memory: lwsinit side by side with tini and catatonit.

Measures, in one run and on the same machine:

  1. start cost: `INIT -- CHILD` against `CHILD` alone, spawned round-robin
     (the order rotates every round, so drift hits every variant alike),
     plain and as real PID 1 (`unshare -fp --mount-proc`, whose own cost is
     taken out by the `unshare ... CHILD` baseline).  CHILD is a tiny static
     program that writes CLOCK_MONOTONIC when its main() starts, which gives
     spawn -> child main ("exec latency") as well as the whole wall time
     (spawn -> init reaped, i.e. including the init's teardown).
  2. memory of the init while its child (`sleep`) runs: RSS, Pss,
     Private_Dirty from /proc/PID/smaps_rollup, shared objects from maps,
     plain and as PID 1.
  3. the dynamic loader (LD_DEBUG=statistics), syscall counts (strace -c),
     and for lwsinit: each linked library's dlopen cost and its share of the
     init's memory.

It rewrites only its own section of docs/benchmarks.md, between
<!-- init-bench:begin --> and <!-- init-bench:end -->.  Not a test, not CI.

Usage: python3 tests/bench/init_bench.py [--runs 300] [--quick] [--no-write]
Needs root (unshare -p), a C compiler for the helper programs (without one
only wall times are measured), tini and catatonit.
"""

import argparse
import datetime
import gc
import hashlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, stat_fields, write_section

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN = "<!-- init-bench:begin -->"
END = "<!-- init-bench:end -->"
SECTION_TITLE = "## Init overhead and memory"

TARGET_PRIV_DIRTY_KIB = 2048      # lwsinit Private_Dirty <= 2 MiB
TARGET_VS_TINI_MS = 5.0           # lwsinit start overhead within 5 ms of tini's

STAMP_C = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* Writes CLOCK_MONOTONIC (ns) to stdout as soon as main() runs; with
 * "wait" it then waits for a signal. */
int main(int argc, char **argv)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char buf[48];
  int n = snprintf(buf, sizeof(buf), "%lld\n",
                   (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
  if (write(1, buf, (size_t)n) != n)
    return 1;
  if (argc > 1 && strcmp(argv[1], "wait") == 0)
    pause();
  return 0;
}
"""

DLCOST_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#endif
static long long now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
/* dlcost tsc: the TSC frequency in kHz (0 where there is no TSC).
 * dlcost LIB: ns spent in dlopen(LIB, RTLD_NOW) in a fresh process. */
int main(int argc, char **argv)
{
  if (argc < 2)
    return 2;
  if (strcmp(argv[1], "tsc") == 0) {
#ifdef HAVE_TSC
    long long t0 = now_ns();
    unsigned long long c0 = __rdtsc();
    while (now_ns() - t0 < 100000000LL)
      ;
    unsigned long long c1 = __rdtsc();
    long long t1 = now_ns();
    printf("%lld\n", (long long)((c1 - c0) * 1000000ULL / (unsigned long long)(t1 - t0)));
#else
    printf("0\n");
#endif
    return 0;
  }
  long long t0 = now_ns();
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  long long t1 = now_ns();
  if (h == NULL) {
    fprintf(stderr, "%s\n", dlerror());
    return 1;
  }
  printf("%lld\n", t1 - t0);
  return 0;
}
"""


# ---------------------------------------------------------------- helpers

def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def first_line(cmd):
    try:
        r = sh(cmd, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0].strip() if out else "unavailable"


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


_T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def build_helpers(tmp):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, None
    stamp_src = os.path.join(tmp, "stamp.c")
    dl_src = os.path.join(tmp, "dlcost.c")
    with open(stamp_src, "w") as f:
        f.write(STAMP_C)
    with open(dl_src, "w") as f:
        f.write(DLCOST_C)
    stamp = os.path.join(tmp, "stamp")
    if sh([cc, "-O2", "-static", "-o", stamp, stamp_src]).returncode != 0:
        if sh([cc, "-O2", "-o", stamp, stamp_src]).returncode != 0:
            stamp = None
    dlcost = os.path.join(tmp, "dlcost")
    if sh([cc, "-O2", "-o", dlcost, dl_src, "-ldl"]).returncode != 0:
        dlcost = None
    return stamp, dlcost


def prepare_lwsinit(args, tmp):
    """Returns (path, provenance string)."""
    git = shutil.which("git")
    if args.lwsinit:
        return os.path.abspath(args.lwsinit), "given binary"
    if args.rev:
        src = os.path.join(tmp, "src")
        os.mkdir(src)
        arch = subprocess.run([git, "-C", REPO, "archive", args.rev], capture_output=True,
                              check=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=arch, check=True)
        sha = sh([git, "-C", REPO, "rev-parse", "--short", args.rev]).stdout.strip()
        bdir = os.path.join(src, "build-bench")
        rev = args.rev if sha.startswith(args.rev) else f"{args.rev} ({sha})"
        prov = f"clean snapshot of {rev}, built --buildtype=release"
    else:
        bdir = os.path.join(REPO, "build-bench")
        sha, dirty = "unknown", ""
        if git:
            sha = sh([git, "-C", REPO, "rev-parse", "--short", "HEAD"]).stdout.strip()
            if sh([git, "-C", REPO, "status", "--porcelain", "--untracked-files=no"]).stdout.strip():
                dirty = " plus uncommitted changes"
        prov = f"working tree at {sha}{dirty}, build-bench/ (--buildtype=release)"
    if not os.path.isdir(os.path.join(bdir, "meson-private")):
        subprocess.run(["meson", "setup", bdir, "--buildtype=release"],
                       cwd=os.path.dirname(bdir), check=True, stdout=subprocess.DEVNULL)
    r = subprocess.run(["ninja", "-C", bdir, "agent/lwsinit"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("init_bench: building lwsinit failed (try --rev HEAD or --lwsinit PATH):\n"
                 + r.stdout[-3000:] + r.stderr[-2000:])
    return os.path.join(bdir, "agent", "lwsinit"), prov


def find_catatonit():
    p = shutil.which("catatonit")
    if p:
        return p
    r = sh(["dpkg", "-L", "catatonit"])
    for line in r.stdout.splitlines():
        if line.endswith("/catatonit") and os.access(line, os.X_OK) and os.path.isfile(line):
            return line
    return None


def clean_env(tmp):
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C", "LC_ALL": "C",
           # Keep lwsinit off the default /run/lwsinit socket, which another
           # lwsinit on this machine may own; the other inits ignore it.
           "LWSINIT_STATUS_SOCKET": os.path.join(tmp, "status.sock"),
           # Likewise its probe endpoints: a free port instead of 0.0.0.0:7471,
           # which a test running next to the benchmark may hold.
           "LWSINIT_PROBE_ADDR": f"127.0.0.1:{free_port()}"}
    return env


# ---------------------------------------------------------------- timing

def spawn_once(argv, env, devnull):
    """One run: (exit code, spawn -> child main ns or None, wall ns, CPU ns).
    CPU is user + system time of the spawned process and every descendant
    it reaped (wait4's rusage)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 0),
               (os.POSIX_SPAWN_DUP2, w, 1),
               (os.POSIX_SPAWN_DUP2, devnull, 2)]
    t0 = time.monotonic_ns()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status, ru = os.wait4(pid, 0)
    t1 = time.monotonic_ns()
    os.close(w)
    os.set_blocking(r, False)
    try:
        data = os.read(r, 256)
    except BlockingIOError:
        data = b""
    os.close(r)
    rc = os.waitstatus_to_exitcode(status)
    stamp = None
    if data.strip():
        try:
            stamp = int(data.split()[0])
        except ValueError:
            pass
    cpu = int((ru.ru_utime + ru.ru_stime) * 1e9)
    return rc, (stamp - t0 if stamp else None), t1 - t0, cpu, ru.ru_minflt


def time_variants(variants, runs, warmup, label):
    """variants: list of (name, argv, env). Round-robin, the start rotating
    every round so that no variant always runs first or after another."""
    devnull = os.open(os.devnull, os.O_RDWR)
    res = {v[0]: {"exec": [], "wall": [], "cpu": [], "minflt": []} for v in variants}
    k = len(variants)
    gc.disable()
    try:
        for i in range(warmup + runs):
            order = variants[i % k:] + variants[:i % k]
            for name, argv, env in order:
                rc, ex, wall, cpu, minflt = spawn_once(argv, env, devnull)
                if rc != 0:
                    sys.exit(f"init_bench: {label} {name}: {' '.join(argv)} exited {rc}")
                if i >= warmup:
                    if ex is not None:
                        res[name]["exec"].append(ex / 1e6)
                    res[name]["wall"].append(wall / 1e6)
                    res[name]["cpu"].append(cpu / 1e6)
                    res[name]["minflt"].append(minflt)
    finally:
        gc.enable()
        os.close(devnull)
    return res


# ---------------------------------------------------------------- memory

def children_of(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = stat_fields(int(d))
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(d))
    return kids


def read_kv(path):
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def smaps_by_object(pid):
    """{pathname-or-[anon]: {'Rss':.., 'Pss':.., 'Private_Dirty':..}}"""
    out = {}
    cur = None
    hdr = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = hdr.match(line)
            if m:
                name = m.group(1).strip() or "[anon]"
                cur = out.setdefault(name, {"Rss": 0, "Pss": 0, "Private_Dirty": 0})
                continue
            m = re.match(r"^(Rss|Pss|Private_Dirty):\s+(\d+) kB", line)
            if m and cur is not None:
                cur[m.group(1)] += int(m.group(2))
    return out


def shared_objects(pid):
    exe = os.path.realpath(f"/proc/{pid}/exe")
    objs = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6:
                p = parts[5].strip()
                if p.startswith("/") and os.path.realpath(p) != exe and ".so" in p:
                    objs.add(p)
    return sorted(objs)


def measure_memory(init_argv, pid1, env, sleep_bin, settle):
    """Starts INIT -- sleep 60, reads the init's memory, stops it."""
    argv = list(init_argv) + ["--", sleep_bin, "60"]
    if pid1:
        argv = [shutil.which("unshare"), "-fp", "--mount-proc"] + argv
    devnull = os.open(os.devnull, os.O_RDWR)
    pid = os.posix_spawn(argv[0], argv, env,
                         file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                       (os.POSIX_SPAWN_DUP2, devnull, 1),
                                       (os.POSIX_SPAWN_DUP2, devnull, 2)])
    os.close(devnull)
    init_pid = pid
    sleep_real = os.path.realpath(sleep_bin)
    deadline = time.monotonic() + 10
    try:
        # Wait until the chain is init -> sleep (exec done).
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(argv)}: child never appeared")
            if pid1:
                kids = children_of(pid)
                if not kids:
                    time.sleep(0.005)
                    continue
                init_pid = kids[0]
            ok = False
            for c in children_of(init_pid):
                try:
                    if os.path.realpath(f"/proc/{c}/exe") == sleep_real:
                        ok = True
                except OSError:
                    pass
            if ok:
                break
            time.sleep(0.005)
        time.sleep(settle)
        roll = read_kv(f"/proc/{init_pid}/smaps_rollup")
        status = read_kv(f"/proc/{init_pid}/status")
        objs = shared_objects(init_pid)
        by_obj = smaps_by_object(init_pid)
    finally:
        try:
            os.kill(init_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.monotonic() + 5
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > end:
                for p in (init_pid, pid):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    return {"Rss": roll.get("Rss", 0), "Pss": roll.get("Pss", 0),
            "Private_Dirty": roll.get("Private_Dirty", 0),
            "Private_Clean": roll.get("Private_Clean", 0),
            "Shared_Clean": roll.get("Shared_Clean", 0),
            "VmHWM": status.get("VmHWM", 0),
            "objs": objs, "by_obj": by_obj}


def median_mem(samples):
    out = {}
    for key in ("Rss", "Pss", "Private_Dirty", "Private_Clean", "Shared_Clean", "VmHWM"):
        out[key] = int(statistics.median(s[key] for s in samples))
    out["objs"] = samples[-1]["objs"]
    out["by_obj"] = samples[-1]["by_obj"]
    return out


# ---------------------------------------------------------------- loader, syscalls, libs

def ld_statistics(init_argv, child, env, tmp, reps):
    """Median LD_DEBUG=statistics figures of the init process itself."""
    cycles, relocs, rel_relocs = [], [], []
    for i in range(reps):
        d = tempfile.mkdtemp(prefix="ld-", dir=tmp)
        e = dict(env, LD_DEBUG="statistics", LD_DEBUG_OUTPUT=os.path.join(d, "ld"))
        p = subprocess.Popen(list(init_argv) + ["--", child], env=e,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        p.wait()
        f = os.path.join(d, f"ld.{p.pid}")
        if not os.path.exists(f):
            return None     # static: no dynamic loader
        txt = open(f).read()
        m = re.search(r"total startup time in dynamic loader: (\d+) cycles", txt)
        if m:
            cycles.append(int(m.group(1)))
        m = re.search(r"\bnumber of relocations: (\d+)", txt)
        if m:
            relocs.append(int(m.group(1)))
        m = re.search(r"number of relative relocations: (\d+)", txt)
        if m:
            rel_relocs.append(int(m.group(1)))
    if not cycles:
        return None
    return {"cycles": statistics.median(cycles),
            "relocs": int(statistics.median(relocs)) if relocs else 0,
            "rel_relocs": int(statistics.median(rel_relocs)) if rel_relocs else 0}


def syscall_count(init_argv, child, env, tmp):
    strace = shutil.which("strace")
    if strace is None:
        return None
    out = os.path.join(tmp, "strace.txt")
    subprocess.run([strace, "-qq", "-c", "-o", out] + list(init_argv) + ["--", child], env=env,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        txt = open(out).read()
    except OSError:
        return None
    m = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)\s+(\d+)?\s*total", txt, re.M)
    if not m:
        m = re.search(r"^.*\s(\d+)\s+(?:\d+\s+)?total\s*$", txt, re.M)
    return int(m.group(1)) if m else None


def ldd_libs(binary):
    libs = []
    r = sh(["ldd", binary])
    for line in r.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^(\S+) => (\S+) \(", line)
        if m:
            libs.append((m.group(1), m.group(2)))
        elif line.startswith("/"):
            libs.append((os.path.basename(line.split()[0]), line.split()[0]))
        elif line.startswith("linux-vdso"):
            libs.append(("linux-vdso.so.1", None))
    return libs


def dlopen_cost(dlcost, lib, reps, env):
    xs = []
    for _ in range(reps):
        r = subprocess.run([dlcost, lib], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            return None
        xs.append(int(r.stdout.strip()) / 1e3)
    return statistics.median(xs)


# ---------------------------------------------------------------- report

def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = read_kv("/proc/meminfo").get("MemTotal", 0)
    distro = "unknown"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "model": model, "kernel": platform.release(),
            "mem_gib": mem / 1048576, "distro": distro,
            "glibc": platform.libc_ver()[1] or "unknown"}


def fmt(x, nd=2):
    if x is None or x != x:
        return "n/a"
    return f"{x:.{nd}f}"


def timing_table(a, res, base_name, base_label, names, ratio_to):
    a("| Variant | exec median | exec p90 | exec overhead | wall median | wall p90 "
      "| wall overhead | CPU median | CPU overhead |" + (" overhead / tini's |" if ratio_to else ""))
    a("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if ratio_to else ""))
    med = statistics.median
    base = res[base_name]
    bex = med(base["exec"]) if base["exec"] else None
    bwall, bcpu = med(base["wall"]), med(base["cpu"])

    def ov_of(r):
        return (med(r["exec"]) - bex) if (r["exec"] and bex is not None) \
            else med(r["wall"]) - bwall
    ref_ov = ov_of(res[ratio_to]) if ratio_to and ratio_to in res else None
    for name in names:
        if name not in res:
            continue
        r = res[name]
        ex_med = med(r["exec"]) if r["exec"] else None
        ex_p90 = pct(r["exec"], 90) if r["exec"] else None
        w_med, w_p90, c_med = med(r["wall"]), pct(r["wall"], 90), med(r["cpu"])
        if name == base_name:
            cells = ["—", "—", "—"]
            ratio = "—"
        else:
            ex_ov = ex_med - bex if ex_med is not None else None
            cells = ["n/a" if ex_ov is None else f"{ex_ov:+.3f}", f"{w_med - bwall:+.3f}",
                     f"{c_med - bcpu:+.3f}"]
            ov = ov_of(r)
            ratio = f"{ov / ref_ov:.2f}×" if ref_ov and ref_ov > 0 else "n/a"
        label = base_label if name == base_name else name
        row = (f"| {label} | {fmt(ex_med, 3)} | {fmt(ex_p90, 3)} | {cells[0]} | {fmt(w_med, 3)} | "
               f"{fmt(w_p90, 3)} | {cells[1]} | {fmt(c_med, 3)} | {cells[2]} |")
        if ratio_to:
            row += f" {ratio} |"
        a(row)
    a("")


def build_section(ctx):
    L = []
    a = L.append
    m = ctx["machine"]
    a(SECTION_TITLE)
    a("")
    a("What an init costs a container: the time between exec of the init and")
    a("exec of its child, and the memory the init holds while the child runs.")
    a("lwsinit is measured in standalone mode (no LWS_* variables; only its status")
    a("socket and probe address are moved, to a temporary path and a free loopback")
    a("port, so that the runs cannot collide with another lwsinit), side by side")
    a("with tini and catatonit in the same run. Figures below are written by the")
    a("script; do not edit them by hand.")
    a("")
    a("Reproduce (as root, from the repository root):")
    a("")
    a("```sh")
    a(ctx["command"])
    a("```")
    a("")
    a(f"- Date: {ctx['date']}")
    a(f"- Machine: {m['nproc']} CPUs, {m['model']}, {m['mem_gib']:.1f} GiB RAM; "
      f"kernel {m['kernel']}; {m['distro']}, glibc {m['glibc']}")
    a(f"- Versions: `{ctx['versions']['lwsinit']}` ({ctx['lwsinit_prov']}; "
      f"sha256 {ctx['lwsinit_sha'][:12]}), `{ctx['versions']['tini']}` ({ctx['paths']['tini']}), "
      f"`{ctx['versions']['catatonit']}` ({ctx['paths']['catatonit']}"
      + ("; catatonit reports itself as a tini version" if "tini" in ctx["versions"]["catatonit"]
         else "") + ")")
    a(f"- Runs: {ctx['runs']} per variant and mode after {ctx['warmup']} warm-up runs, "
      f"round-robin with the order rotating each round; memory is the median of "
      f"{ctx['mem_reps']} starts, read {ctx['settle']:.1f} s after the child is up.")
    a(f"- Load average (1 min) at start / end: {ctx['load'][0]} / {ctx['load'][1]}; the run "
      f"took {ctx['elapsed']:.0f} s. Other load on the machine widens the p90s; the "
      "round-robin order spreads it over all variants alike.")
    a("")

    # Targets
    a("### Targets")
    a("")
    a("| Target | Measured | Result |")
    a("|---|---|---|")
    for t in ctx["targets"]:
        a(f"| {t[0]} | {t[1]} | **{'pass' if t[2] else 'FAIL'}** |")
    a("")

    # Timing
    child_desc = ("a static helper that writes CLOCK_MONOTONIC at the top of main()"
                  if ctx["have_stamp"] else "`/bin/true`")
    a("### Start overhead")
    a("")
    a(f"`INIT -- CHILD` against `CHILD` alone (the baseline); CHILD is {child_desc}.")
    a("*Exec latency* is spawn of the init -> child's main(); *wall* is spawn ->")
    a("the init reaped, so it adds the init's wait, reap and teardown; *CPU* is")
    a("user + system time of everything that ran (wait4 rusage), the figure least")
    a("moved by other load on the machine. *Overhead* is the median minus the")
    a("baseline's median; the ratio compares exec overheads. Times in ms.")
    a("")
    for mode, title in (("plain", "Plain (the init is not PID 1)"),
                        ("pid1", "As PID 1: `unshare -fp --mount-proc INIT -- CHILD`; "
                                 "the baseline is `unshare -fp --mount-proc CHILD`")):
        res = ctx["timing"].get(mode)
        if not res:
            continue
        a(f"{title}:")
        a("")
        timing_table(a, res, "baseline", "none (baseline)", ("baseline", "lwsinit", "tini",
                                                              "catatonit"), "tini")
    att = ctx.get("attribution")
    if att:
        a("What lwsinit's libraries add to a start, measured on tini (plain): `tini -- CHILD`")
        a("with each library in `LD_PRELOAD`, so that it is mapped and relocated as a")
        a("`DT_NEEDED` entry would be (its constructors run too; nothing calls it). The")
        a("overhead columns here are against plain tini, in the same round-robin "
          f"({ctx['att_runs']} runs each).")
        a("")
        timing_table(a, att, "tini", "tini", list(att.keys()), None)
    # Memory
    a("### Memory while the child runs")
    a("")
    a("`INIT -- sleep 60`; the init's own figures from `/proc/PID/smaps_rollup` and")
    a("`/proc/PID/status` (VmHWM: peak RSS). Shared objects: distinct `.so` files")
    a("in `/proc/PID/maps` (ld.so included, the vDSO not). KiB.")
    a("")
    a("| Init | mode | RSS | Pss | Private_Dirty | Private_Clean | Shared_Clean | VmHWM "
      "| shared objects | Private_Dirty / tini's |")
    a("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in ("plain", "pid1"):
        mem = ctx["memory"].get(mode, {})
        tini_pd = mem.get("tini", {}).get("Private_Dirty")
        for name in ("lwsinit", "tini", "catatonit"):
            if name not in mem:
                continue
            r = mem[name]
            ratio = f"{r['Private_Dirty'] / tini_pd:.1f}×" if tini_pd else "n/a"
            objs = ", ".join(os.path.basename(o) for o in r["objs"]) or "none (static)"
            a(f"| {name} | {'PID 1' if mode == 'pid1' else 'plain'} | {r['Rss']} | {r['Pss']} | "
              f"{r['Private_Dirty']} | {r['Private_Clean']} | {r['Shared_Clean']} | "
              f"{r['VmHWM']} | {len(r['objs'])} ({objs}) | {ratio} |")
    a("")

    # Loader and syscalls
    a("### Dynamic loader and system calls")
    a("")
    a("`LD_DEBUG=statistics INIT -- CHILD` (median of "
      f"{ctx['ld_reps']}, the init's own loader only); cycles are TSC ticks"
      + (f", ~{ctx['tsc_mhz']:.0f} MHz here" if ctx["tsc_mhz"] else "") + ".")
    a("System calls: `strace -c INIT -- CHILD`, the init process only (not the child).")
    a("Page faults: minor faults of `INIT -- CHILD` (wait4 rusage, init and child) less")
    a("the baseline's, median of the plain timing runs; each costs a few µs.")
    a("")
    a("| Init | binary size KiB | loader time (cycles) | loader time (µs) | relocations "
      "| relative relocations | system calls | page faults |")
    a("|---|---:|---:|---:|---:|---:|---:|---:|")
    plain = ctx["timing"]["plain"]
    base_flt = statistics.median(plain["baseline"]["minflt"])
    for name in ("lwsinit", "tini", "catatonit"):
        ld = ctx["ld"].get(name)
        sc = ctx["syscalls"].get(name)
        flt = int(statistics.median(plain[name]["minflt"]) - base_flt)
        size = ctx["sizes"].get(name, 0) // 1024
        if ld is None:
            a(f"| {name} | {size} | static: no loader | — | — | — | {sc if sc else 'n/a'} | "
              f"+{flt} |")
        else:
            us = ld["cycles"] / ctx["tsc_mhz"] if ctx["tsc_mhz"] else None
            a(f"| {name} | {size} | {int(ld['cycles'])} | {fmt(us, 0)} | {ld['relocs']} | "
              f"{ld['rel_relocs']} | {sc if sc else 'n/a'} | +{flt} |")
    a("")

    # lwsinit libraries
    a("### lwsinit's libraries")
    a("")
    a("`ldd` of the binary. *dlopen* is the median time of `dlopen(LIB, RTLD_NOW)` in a")
    a("fresh process that already has libc (load, relocate, run constructors): a")
    a("cheap estimate of what each library adds to every start. RSS and")
    a("Private_Dirty are that object's mappings in the running init (PID 1 run).")
    a("")
    a("| Library | path | file KiB | dlopen µs | RSS KiB | Private_Dirty KiB |")
    a("|---|---|---:|---:|---:|---:|")
    for lib in ctx["libs"]:
        a(f"| {lib['name']} | {lib['path'] or '—'} | {lib['size'] if lib['size'] else '—'} | "
          f"{lib['dlopen']} | {lib['rss']} | {lib['pd']} |")
    a("")
    a("Where lwsinit's Private_Dirty goes (PID 1 run; mappings of at least 4 KiB):")
    a("")
    a("| Mapping | Private_Dirty KiB | RSS KiB |")
    a("|---|---:|---:|")
    for name, v in ctx["lwsinit_breakdown"]:
        a(f"| {name} | {v['Private_Dirty']} | {v['Rss']} |")
    a("")
    if ctx.get("notes"):
        a("Notes:")
        a("")
        for n in ctx["notes"]:
            a(f"- {n}")
        a("")
    return "\n".join(L).rstrip() + "\n"


def write_doc(section):
    write_section(DOC, BEGIN, END, section)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300, help="timed runs per variant and mode")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="50 runs, 1 memory start, fewer reps")
    ap.add_argument("--no-pid1", action="store_true", help="skip the unshare (PID 1) runs")
    ap.add_argument("--lwsinit", help="use this lwsinit binary instead of building build-bench/")
    ap.add_argument("--rev", help="build a clean snapshot of this git revision (git archive)")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave the doc")
    ap.add_argument("--wait-idle", type=int, default=0, metavar="SEC",
                    help="first wait up to SEC seconds for the 1-minute load average to "
                         "drop below half the CPU count")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.warmup = min(args.runs, 50), min(args.warmup, 5)
    mem_reps = 1 if args.quick else 3
    ld_reps = 5 if args.quick else 11
    dl_reps = 5 if args.quick else 11
    settle = 0.3
    t_start = time.monotonic()

    if os.geteuid() != 0 and not args.no_pid1:
        sys.exit("init_bench: the PID 1 runs need root (unshare -p); use --no-pid1")

    tmp = tempfile.mkdtemp(prefix="init-bench-")
    try:
        lwsinit, prov = prepare_lwsinit(args, tmp)
        # A binary written moments ago sits in dirty page-cache pages, which
        # smaps counts as Private_Dirty of whoever maps them: write it back.
        fd = os.open(lwsinit, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tini = shutil.which("tini")
        catatonit = find_catatonit()
        if not tini or not catatonit:
            sys.exit("init_bench: tini and catatonit must be installed")
        stamp, dlcost = build_helpers(tmp)
        child = stamp or "/bin/true"
        env = clean_env(tmp)
        inits = {"lwsinit": [lwsinit], "tini": [tini], "catatonit": [catatonit]}
        notes = []
        if not stamp:
            notes.append("No C compiler: the child is /bin/true and only wall times exist.")

        versions = {"lwsinit": first_line([lwsinit, "--version"]),
                    "tini": first_line([tini, "--version"]),
                    "catatonit": first_line([catatonit, "--version"])}
        with open(lwsinit, "rb") as f:
            lw_sha = hashlib.sha256(f.read()).hexdigest()

        idle = (os.cpu_count() or 1) / 2.0
        if args.wait_idle and os.getloadavg()[0] >= idle:
            log(f"waiting up to {args.wait_idle} s for the load average to drop below {idle:g}")
            end = time.monotonic() + args.wait_idle
            while os.getloadavg()[0] >= idle and time.monotonic() < end:
                time.sleep(2)
        load_start = os.getloadavg()[0]
        if load_start >= idle:
            log(f"warning: load average {load_start:.2f} on {os.cpu_count()} CPUs: "
                "the machine is busy, times will be high and noisy")
            notes.append(f"The machine was busy (1-minute load average {load_start:.2f} on "
                         f"{os.cpu_count()} CPUs at the start): absolute times are pessimistic "
                         "and the p90s wide; the ratios to tini hold up better.")

        # 1. timing
        timing = {}
        unshare = shutil.which("unshare")
        modes = [("plain", [])]
        if not args.no_pid1:
            modes.append(("pid1", [unshare, "-fp", "--mount-proc"]))
        for mode, prefix in modes:
            variants = [("baseline", prefix + [child], env)]
            for name, argv in inits.items():
                variants.append((name, prefix + argv + ["--", child], env))
            log(f"timing {mode}: {args.runs} runs x {len(variants)} variants")
            timing[mode] = time_variants(variants, args.runs, args.warmup, mode)

        # 1b. what lwsinit's libraries add to a start: tini, the smallest
        # dynamic init here, with each of them preloaded (LD_PRELOAD maps
        # and relocates the library just as a DT_NEEDED entry would).
        extra_libs = [(n, p) for n, p in ldd_libs(lwsinit)
                      if p and not n.startswith(("libc.so", "ld-linux"))]
        attribution = None
        if extra_libs:
            variants = [("tini", [tini, "--", child], env)]
            for n, p in extra_libs:
                variants.append((f"tini + {n}", [tini, "--", child], dict(env, LD_PRELOAD=p)))
            if len(extra_libs) > 1:
                variants.append(("tini + all of them", [tini, "--", child],
                                 dict(env, LD_PRELOAD=":".join(p for _, p in extra_libs))))
            att_runs = max(50, args.runs // 2)
            log(f"timing preloads: {att_runs} runs x {len(variants)} variants")
            attribution = time_variants(variants, att_runs, args.warmup, "preload")

        # 2. memory
        sleep_bin = shutil.which("sleep")
        memory = {}
        for mode, _ in modes:
            memory[mode] = {}
            for name, argv in inits.items():
                log(f"memory {mode}: {name}")
                samples = [measure_memory(argv, mode == "pid1", env, sleep_bin, settle)
                           for _ in range(mem_reps)]
                memory[mode][name] = median_mem(samples)

        # 3. loader, syscalls, libraries
        log("loader statistics, system calls, libraries")
        tsc_khz = 0
        if dlcost:
            r = sh([dlcost, "tsc"])
            tsc_khz = int(r.stdout.strip() or 0) if r.returncode == 0 else 0
        ld = {name: ld_statistics(argv, child, env, tmp, ld_reps) for name, argv in inits.items()}
        sc = {name: syscall_count(argv, child, env, tmp) for name, argv in inits.items()}
        sizes = {name: os.path.getsize(argv[0]) for name, argv in inits.items()}

        memmode = "pid1" if "pid1" in memory else "plain"
        by_obj = memory[memmode]["lwsinit"]["by_obj"]
        libs = []
        for name, path in ldd_libs(lwsinit):
            real = os.path.realpath(path) if path else None
            rss = pd = 0
            for obj, v in by_obj.items():
                if (real and os.path.realpath(obj) == real) or (name == "linux-vdso.so.1"
                                                               and obj == "[vdso]"):
                    rss += v["Rss"]
                    pd += v["Private_Dirty"]
            cost = "—"
            if dlcost and path and not name.startswith(("libc.so", "ld-linux")):
                c = dlopen_cost(dlcost, path, dl_reps, env)
                cost = fmt(c, 0) if c is not None else "n/a"
            elif name.startswith(("libc.so", "ld-linux")):
                cost = "(every init)"
            libs.append({"name": name, "path": path,
                         "size": os.path.getsize(real) // 1024 if real else 0,
                         "dlopen": cost, "rss": rss, "pd": pd})
        exe_real = os.path.realpath(lwsinit)
        breakdown = []
        for obj, v in by_obj.items():
            label = obj
            if obj.startswith("/") and os.path.realpath(obj) == exe_real:
                label = "lwsinit (binary)"
            elif obj.startswith("/"):
                label = os.path.basename(obj)
            if v["Private_Dirty"] >= 4:
                breakdown.append((label, v))
        breakdown.sort(key=lambda kv: -kv[1]["Private_Dirty"])

        # Findings that follow from the figures, so that they stay true on a rerun.
        pd_total = memory[memmode]["lwsinit"]["Private_Dirty"]
        if breakdown:
            top, v = breakdown[0]
            notes.append(f"Largest share of lwsinit's Private_Dirty ({pd_total} KiB, "
                         f"{'PID 1' if memmode == 'pid1' else 'plain'}): {top}, "
                         f"{v['Private_Dirty']} KiB ({100.0 * v['Private_Dirty'] / pd_total:.0f}%).")
        if attribution:
            key = "exec" if attribution["tini"]["exec"] else "wall"
            med = statistics.median
            base = med(attribution["tini"][key])
            costs = sorted(((n, med(r[key]) - base) for n, r in attribution.items()
                            if n.startswith("tini + ") and n != "tini + all of them"),
                           key=lambda kv: -kv[1])
            gap = med(timing["plain"]["lwsinit"][key]) - med(timing["plain"]["tini"][key])
            if costs:
                notes.append(f"Largest start cost among lwsinit's libraries: {costs[0][0][7:]}, "
                             f"{costs[0][1]:+.2f} ms ({key}, preloaded into tini), against "
                             f"lwsinit's {gap:+.2f} ms over tini (plain).")

        # targets
        targets = []
        for mode in memory:
            pdv = memory[mode]["lwsinit"]["Private_Dirty"]
            targets.append((f"lwsinit Private_Dirty ≤ {TARGET_PRIV_DIRTY_KIB} KiB "
                            f"({'PID 1' if mode == 'pid1' else 'plain'})",
                            f"{pdv} KiB", pdv <= TARGET_PRIV_DIRTY_KIB))
        for mode in timing:
            res = timing[mode]
            key = "exec" if res["lwsinit"]["exec"] else "wall"
            med = statistics.median
            diff = med(res["lwsinit"][key]) - med(res["tini"][key])
            cdiff = med(res["lwsinit"]["cpu"]) - med(res["tini"]["cpu"])
            targets.append((f"lwsinit start overhead within {TARGET_VS_TINI_MS:g} ms of tini's "
                            f"({'PID 1' if mode == 'pid1' else 'plain'}, median {key})",
                            f"{diff:+.3f} ms (CPU time: {cdiff:+.3f} ms)",
                            diff <= TARGET_VS_TINI_MS))

        cmd_args = " ".join(sys.argv[1:])
        command = "python3 tests/bench/init_bench.py" + (f" {cmd_args}" if cmd_args else "")
        ctx = {
            "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info(), "versions": versions, "lwsinit_prov": prov,
            "lwsinit_sha": lw_sha, "paths": {"tini": tini, "catatonit": catatonit},
            "runs": args.runs, "warmup": args.warmup, "mem_reps": mem_reps, "settle": settle,
            "ld_reps": ld_reps, "have_stamp": bool(stamp), "targets": targets,
            "timing": timing, "attribution": attribution,
            "att_runs": max(50, args.runs // 2), "memory": memory, "ld": ld, "syscalls": sc, "sizes": sizes,
            "tsc_mhz": tsc_khz / 1000.0 if tsc_khz else 0, "libs": libs,
            "lwsinit_breakdown": breakdown, "notes": notes,
            "load": (f"{load_start:.2f}", f"{os.getloadavg()[0]:.2f}"),
            "elapsed": time.monotonic() - t_start,
        }
        section = build_section(ctx)
        if args.no_write:
            print(section)
        else:
            write_doc(section)
            log(f"wrote {os.path.relpath(DOC, os.getcwd())}")
        log(f"done in {time.monotonic() - t_start:.1f} s")
        for t in targets:
            log(f"  {'pass' if t[2] else 'FAIL'}: {t[0]}: {t[1]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
