#!/usr/bin/python3
"""Tests of kustomize_render.py and of check_manifests.py's new rules (TAP):
each rule must catch the mistake it is there for, on a rendered overlay
with one thing broken, so that a passing `manifests` test means something.

Environment: LWSI_REPO (the repository root), LWSINIT (for --help's
defaults; the rule tests skip without it).
"""

import copy
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.argv[1:] = ["rest"]  # check_manifests reads its part from argv at import

try:
    import yaml  # noqa: F401
except ImportError:
    print("1..0 # SKIP python3-yaml is not installed")
    sys.exit(0)

import check_manifests as cm  # noqa: E402
from kustomize_render import RenderError, apply_patch, render  # noqa: E402

n = 0
failed = 0


def tap(ok, desc, diag=""):
    global n, failed
    n += 1
    print(f"{'ok' if ok else 'not ok'} {n} - {desc}")
    if not ok:
        failed += 1
        for line in str(diag).splitlines():
            print(f"#   {line}")


def raises(fn):
    try:
        fn()
    except RenderError as e:
        return str(e)
    return None


# --- RFC 6902 ---------------------------------------------------------------
doc = {"a": {"b/c": 1, "l": [1, 2]}, "m~n": 0}
got = apply_patch(doc, [
    {"op": "add", "path": "/a/l/0", "value": 0},
    {"op": "add", "path": "/a/l/-", "value": 3},
    {"op": "replace", "path": "/a/b~1c", "value": 2},
    {"op": "remove", "path": "/m~0n"},
    {"op": "add", "path": "/a/new", "value": {"x": [1]}},
], "t")
tap(got == {"a": {"b/c": 2, "l": [0, 1, 2, 3], "new": {"x": [1]}}} and doc["a"]["l"] == [1, 2],
    "add (index, -, new key), replace and remove with ~0/~1 escapes; the input is untouched", got)
for desc, op in (("replace of a missing key", {"op": "replace", "path": "/a/zz", "value": 1}),
                 ("remove past the end", {"op": "remove", "path": "/a/l/2"}),
                 ("add past the end", {"op": "add", "path": "/a/l/3", "value": 1}),
                 ("add under a missing parent", {"op": "add", "path": "/x/y", "value": 1}),
                 ("a leading zero index", {"op": "replace", "path": "/a/l/01", "value": 1}),
                 ("op move (not in the subset)", {"op": "move", "from": "/a", "path": "/b"}),
                 ("add without a value", {"op": "add", "path": "/a/q"})):
    tap(raises(lambda: apply_patch(doc, [op], "t")) is not None, f"refused: {desc}")

# --- kustomizations -----------------------------------------------------------
with tempfile.TemporaryDirectory() as tmp:
    def kust(d, text, files=None):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
        with open(os.path.join(tmp, d, "kustomization.yaml"), "w") as f:
            f.write(text)
        for name, body in (files or {}).items():
            with open(os.path.join(tmp, d, name), "w") as f:
                f.write(body)
        return os.path.join(tmp, d)

    kust("base", "resources: [pod.yaml]\n", {"pod.yaml": (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "    - {name: a, image: 'eng:1'}\n    - {name: b, image: 'other/eng:1'}\n"
        "  initContainers: [{name: i, image: 'eng@sha256:abc'}]\n")})
    ov = kust("ov", "resources: [../base]\npatches:\n  - path: p.yaml\n    target: {kind: Pod, name: p}\n"
              "  - path: q.yaml\n    target: {kind: Pod, name: p}\n"
              "images:\n  - {name: eng, newName: reg.example/eng, newTag: '2.0'}\n",
              {"p.yaml": "- {op: replace, path: /metadata/name, value: q}\n",
               "q.yaml": "- {op: add, path: /metadata/labels, value: {x: y}}\n"})
    docs = render(ov)
    cs = docs[0]["spec"]["containers"]
    tap(docs[0]["metadata"] == {"name": "q", "labels": {"x": "y"}}
        and [c["image"] for c in cs] == ["reg.example/eng:2.0", "other/eng:1"]
        and docs[0]["spec"]["initContainers"][0]["image"] == "reg.example/eng:2.0",
        "an overlay: patches in order (the second selects by the original name), images by exact "
        "name, a new tag replaces a digest", docs)
    for desc, d, text, files in (
            ("a field outside the subset (namePrefix)", "f1", "resources: [../base]\nnamePrefix: x-\n", {}),
            ("a strategic merge patch", "f2", "resources: [../base]\npatches:\n  - path: s.yaml\n"
             "    target: {kind: Pod}\n", {"s.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"}),
            ("a target that selects nothing", "f3", "resources: [../base]\npatches:\n  - path: p.yaml\n"
             "    target: {kind: Pod, name: nope}\n", {"p.yaml": "- {op: remove, path: /spec}\n"}),
            ("a target name that is a regular expression", "f4", "resources: [../base]\npatches:\n"
             "  - path: p.yaml\n    target: {kind: Pod, name: 'p.*'}\n", {"p.yaml": "- {op: remove, path: /spec}\n"}),
            ("an image entry that rewrites nothing", "f5", "resources: [../base]\nimages: [{name: nope, newTag: '1'}]\n", {}),
            ("an image digest (not in the subset)", "f6", "resources: [../base]\nimages: [{name: eng, digest: 'sha256:1'}]\n", {}),
            ("the same resource twice", "f7", "resources: [../base, ../base/pod.yaml]\n", {}),
            ("a remote resource", "f8", "resources: ['https://example.com/x']\n", {})):
        kust(d, text, files)
        why = raises(lambda: render(os.path.join(tmp, d)))
        tap(why is not None, f"refused: {desc}", "rendered without an error")

# --- the checks, on a rendered overlay with one thing broken --------------------
exe = os.environ.get("LWSINIT")
if not exe:
    n += 1
    print(f"ok {n} - the checks on broken manifests # SKIP LWSINIT is not set")
else:
    opts, why = cm.lwsinit_options(exe)
    docs = render(os.path.join(cm.OVERLAYS, "sglang"))
    lws = [d for d in docs if d["kind"] == "LeaderWorkerSet"][0]

    def worker(l):
        return cm.Agent(opts, 2, l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"],
                        l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0])

    def broken(fn):
        l = copy.deepcopy(lws)
        fn(l)
        return l

    w = worker(lws)
    tap(not cm.check_startup(w, False, lws) and not cm.check_revision_token(w)
        and not cm.check_pod(w, False, lws), "the shipped sglang worker passes", "")
    l = broken(lambda l: l["metadata"]["annotations"].update({cm.LOAD_ANNOTATION: "2000"}))
    errs = cm.check_startup(worker(l), False, l)
    tap(errs and "3650" in errs[0], "a longer model load than the probe's window fails, with the sum", errs)
    l = broken(lambda l: l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
               ["command"].insert(1, "--rdzv-timeout=1800"))
    tap(cm.check_startup(worker(l), False, l), "a longer --rdzv-timeout than the window fails")
    l = broken(lambda l: l["metadata"].pop("annotations"))
    tap(cm.check_startup(worker(l), False, l), "no model load annotation fails")
    l = broken(lambda l: l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
               ["env"].append({"name": "LWSINIT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}))
    tap(cm.check_revision_token(worker(l)), "LWSINIT_TOKEN from a secretKeyRef fails")
    l = broken(lambda l: l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
               .pop("automountServiceAccountToken"))
    tap(cm.check_pod(worker(l), False, l), "a mounted ServiceAccount token fails")
    for img in ("registry.example.com/sglang-lwsinit:latest", "registry.example.com/sglang-lwsinit",
                "engine-lwsinit:0.1.0"):
        l = broken(lambda l: l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
                   .update({"image": img}))
        tap(cm.check_pod(worker(l), False, l), f"image {img} fails")
    l = broken(lambda l: l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
               ["args"].append(16))
    tap(cm.check_pod(worker(l), False, l), "a number in args fails")
    l = broken(lambda l: l["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
               ["resources"]["limits"].update({"rdma/hca": "1"}))
    tap(cm.check_rdma(worker(l)), "an RDMA resource without IPC_LOCK and a floor fails")

    def np_errors(mutate):
        d2 = copy.deepcopy(docs)
        mutate([d for d in d2 if d["kind"] == "NetworkPolicy"][0])
        lines = []
        saved = cm.tap
        cm.tap = lambda ok, desc, diag=None, skip=None: lines.append((ok, diag))
        try:
            cm.check_networkpolicy("t", d2, [d for d in d2 if d["kind"] == "LeaderWorkerSet"][0], {"w": w})
        finally:
            cm.tap = saved
        return [x for x in lines if not x[0]]
    tap(not np_errors(lambda p: None), "the shipped NetworkPolicy passes")
    tap(np_errors(lambda p: p["spec"]["podSelector"]["matchLabels"].update({cm.GROUP_LABEL: "0"})),
        "a per-group NetworkPolicy fails")
    tap(np_errors(lambda p: p["spec"]["ingress"][2]["ports"].append({"protocol": "TCP", "port": 7470})),
        "the rendezvous port from anywhere fails")
    tap(np_errors(lambda p: p["spec"]["ingress"].pop(1)), "no rule for the probe port fails")
    tap(np_errors(lambda p: p["spec"]["ingress"].pop(2)), "the Service's port not admitted fails")
    tap(np_errors(lambda p: p["spec"]["ingress"].pop(0)), "no rule for the group's own traffic fails")

# --- the command line renderer -------------------------------------------------
r = subprocess.run([sys.executable, os.path.join(HERE, "kustomize_render.py"),
                    os.path.join(cm.OVERLAYS, "vllm")], capture_output=True, text=True, timeout=30)
out = list(yaml.safe_load_all(r.stdout)) if r.returncode == 0 else []
tap(r.returncode == 0 and [d["kind"] for d in out] == ["LeaderWorkerSet", "Service", "NetworkPolicy"],
    "kustomize_render.py DIR prints the rendered documents", r.stderr)
print(f"1..{n}")
sys.exit(1 if failed else 0)
