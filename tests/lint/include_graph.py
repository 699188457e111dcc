#!/usr/bin/env python3
"""The project's module graph has no cycle, and each folder depends only on
what is below it (TAP).

A module is a header include/lwsinit/NAME.h with the sources that implement
it (FOLDER/NAME.c, or FOLDER/NAME_*.c and a private FOLDER/NAME_int.h for a
module split over several files, as agent/rdzv_*.c). Module A depends on B
when any file of A includes "lwsinit/B.h". Checked:

  - no cycle among modules (A -> B -> ... -> A), which is what made the
    agent and its status view, and the configuration and the command line,
    hard to change apart;
  - the folders are layered: common/ (libc-only helpers) includes nothing
    of the project but common/; probes/ (the HTTP endpoints and the upstream
    poller) includes common/ and probes/ only; gpucheck/ (a separate
    program) common/ and gpucheck/ only; agent/ may include anything.

Run by meson (suite lint); by hand: python3 tests/lint/include_graph.py [REPO].
"""
import os
import re
import sys

REPO = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FOLDERS = ["common", "probes", "gpucheck", "agent"]
# What each folder may include, besides itself.
ALLOWED = {"common": set(), "probes": {"common"}, "gpucheck": {"common"},
           "agent": {"common", "probes", "gpucheck"}}
INCLUDE = re.compile(r'^\s*#\s*include\s+"lwsinit/([a-z0-9_]+)\.h"', re.M)

n = 0
failed = 0


def tap(ok, desc, diag=""):
    global n, failed
    n += 1
    print(("ok" if ok else "not ok") + " %d - %s" % (n, desc))
    if not ok:
        failed += 1
        for line in diag.splitlines():
            print("#   " + line)


def module_of(folder, fname):
    base = fname.rsplit(".", 1)[0]
    if base.endswith("_int"):
        base = base[:-4]
    # A module split over several files: NAME_PART.c belongs to NAME when
    # include/lwsinit/NAME.h exists and NAME_PART.h does not.
    if not os.path.exists(os.path.join(REPO, "include", "lwsinit", base + ".h")) and "_" in base:
        head = base.split("_")[0]
        if os.path.exists(os.path.join(REPO, "include", "lwsinit", head + ".h")):
            return head
    return base


# Where each module lives: the folder of its sources (a header without
# sources, e.g. gpu_abi.h, belongs to no folder and may be included by any).
home = {}
files = {}  # module -> [paths]
for folder in FOLDERS:
    d = os.path.join(REPO, folder)
    for fname in sorted(os.listdir(d)):
        if not fname.endswith((".c", ".h")):
            continue
        m = module_of(folder, fname)
        home.setdefault(m, folder)
        files.setdefault(m, []).append(os.path.join(folder, fname))
hdr_dir = os.path.join(REPO, "include", "lwsinit")
for fname in sorted(os.listdir(hdr_dir)):
    if fname.endswith(".h"):
        files.setdefault(fname[:-2], []).append(os.path.join("include", "lwsinit", fname))

deps = {m: set() for m in files}
where = {}
for m, paths in files.items():
    for p in paths:
        with open(os.path.join(REPO, p)) as f:
            for dep in INCLUDE.findall(f.read()):
                if dep != m:
                    deps[m].add(dep)
                    where.setdefault((m, dep), p)

tap(len(files) > 15 and all(f in home.values() for f in FOLDERS),
    "found %d modules in %s" % (len(files), ", ".join(FOLDERS)))

# Cycles: a depth-first search that reports each back edge's loop once.
cycles = []
state = {}


def visit(m, stack):
    state[m] = 1
    stack.append(m)
    for d in sorted(deps.get(m, ())):
        if d not in deps:
            continue
        if state.get(d) == 1:
            cycles.append(stack[stack.index(d):] + [d])
        elif d not in state:
            visit(d, stack)
    stack.pop()
    state[m] = 2


for m in sorted(deps):
    if m not in state:
        visit(m, [])
tap(not cycles, "no include cycle between modules",
    "\n".join(" -> ".join(c) + "   (" + ", ".join(where[(a, b)] for a, b in zip(c, c[1:])) + ")"
              for c in cycles))

for folder in FOLDERS:
    bad = []
    for m, ds in sorted(deps.items()):
        if home.get(m) != folder:
            continue
        for d in sorted(ds):
            dh = home.get(d)
            if dh is not None and dh != folder and dh not in ALLOWED[folder]:
                bad.append("%s includes lwsinit/%s.h (%s/)" % (where[(m, d)], d, dh))
    tap(not bad, "%s/ includes only %s" % (folder, ", ".join(sorted(ALLOWED[folder] | {folder}))),
        "\n".join(bad))

print("1..%d" % n)
sys.exit(1 if failed else 0)
