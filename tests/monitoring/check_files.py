#!/usr/bin/env python3
"""Checks container/monitoring/ as files (TAP; no agent runs here, see
test_live.py for that): the rules file passes `promtool check rules`, the
PrometheusRule is what gen-prometheusrule.py makes of rules.yaml, the
PodMonitor scrapes a port that every lwsinit container of container/lws/overlays/
names, every metric used is documented, the dashboard is a well-formed Grafana dashboard whose every panel
queries something, the kustomization lists files that exist, and the
PromQL parser the other checks rely on finds what it should.

Environment: PROMTOOL (default: promtool on PATH), LWSI_REPO. Where
promtool is missing its checks SKIP, except under CI (CI set), where they
fail."""
import json
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:
    print("1..0 # SKIP python3-yaml is not installed")
    sys.exit(0)

import promql

PROMTOOL = os.environ.get("PROMTOOL") or shutil.which("promtool")
n = 0
failed = 0


def result(ok, name, why=None, skip=None):
    global n, failed
    n += 1
    if skip:
        print("ok %d - %s # SKIP %s" % (n, name, skip))
        return
    print("%s %d - %s" % ("ok" if ok else "not ok", n, name))
    if not ok:
        failed += 1
        for line in str(why).splitlines():
            print("# " + line)


def need_promtool(name):
    if PROMTOOL:
        return True
    if os.environ.get("CI"):
        result(False, name, "promtool is not installed (scripts/install-deps.sh: prometheus)")
    else:
        result(True, name, skip="promtool is not installed (apt-get install prometheus)")
    return False


def run(argv, cwd=None):
    p = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    return p.returncode, p.stdout


def t_promtool_check_rules():
    name = "promtool check rules container/monitoring/rules.yaml"
    if need_promtool(name):
        rc, out = run([PROMTOOL, "check", "rules", promql.RULES])
        result(rc == 0, name, out)


def t_promtool_test_rules():
    name = "promtool test rules tests/monitoring/rules_test.yaml (each alert fires and stays quiet)"
    if need_promtool(name):
        here = os.path.dirname(os.path.abspath(__file__))
        rc, out = run([PROMTOOL, "test", "rules", "rules_test.yaml"], cwd=here)
        result(rc == 0 and "SUCCESS" in out, name, out)


def t_prometheusrule_agrees():
    rc, out = run([sys.executable, os.path.join(promql.MON, "gen-prometheusrule.py"), "--check"])
    with open(promql.RULES) as f:
        rules = yaml.safe_load(f)
    with open(promql.PROMRULE) as f:
        pr = yaml.safe_load(f)
    same = (pr.get("apiVersion") == "monitoring.coreos.com/v1" and pr.get("kind") == "PrometheusRule"
            and pr["spec"]["groups"] == rules["groups"])
    result(rc == 0 and same, "prometheusrule.yaml holds rules.yaml's groups, as generated", out)


def lwsinit_containers():
    """[(overlay, template, container)] of every container that runs lwsinit
    in the overlays of container/lws/, rendered as `kubectl apply -k` would."""
    sys.path.insert(0, os.path.join(promql.REPO, "tests", "manifests"))
    from kustomize_render import render
    lws_dir = os.path.join(promql.REPO, "container", "lws", "overlays")
    out = []
    for name in sorted(os.listdir(lws_dir)):
        if not os.path.exists(os.path.join(lws_dir, name, "kustomization.yaml")):
            continue
        for doc in render(os.path.join(lws_dir, name)):
            if not doc or doc.get("kind") != "LeaderWorkerSet":
                continue
            tmpl = doc["spec"]["leaderWorkerTemplate"]
            for which in ("leaderTemplate", "workerTemplate"):
                for c in tmpl.get(which, {}).get("spec", {}).get("containers", []):
                    if "lwsinit" in " ".join(c.get("command", [])):
                        out.append((name, which, c))
    return out


def t_podmonitor():
    with open(promql.PODMON) as f:
        pm = yaml.safe_load(f)
    why = []
    if (pm.get("apiVersion"), pm.get("kind")) != ("monitoring.coreos.com/v1", "PodMonitor"):
        why.append("not a monitoring.coreos.com/v1 PodMonitor")
    exprs = pm["spec"]["selector"].get("matchExpressions", [])
    if {"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"} not in exprs:
        why.append("does not select pods by the label leaderworkerset.sigs.k8s.io/name")
    eps = pm["spec"]["podMetricsEndpoints"]
    if len(eps) != 1 or eps[0].get("path") != "/metrics":
        why.append("expected one endpoint with path /metrics: %r" % eps)
    port = eps[0].get("port")
    conts = lwsinit_containers()
    if len(conts) < 6:
        why.append("found only %d lwsinit containers in container/lws/overlays/" % len(conts))
    for fname, which, c in conts:
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        if port not in ports:
            why.append("%s %s: no container port named %s" % (fname, which, port))
        elif ports[port] != 7471:
            # The agent listens on --probe-addr, 0.0.0.0:7471 by default.
            why.append("%s %s: port %s is %s, the probe port is 7471" % (fname, which, port,
                                                                          ports[port]))
    # The relabelings read LWS's own pod labels, as Kubernetes service
    # discovery spells them (every character outside [a-zA-Z0-9_] an _).
    want = {"lws": "leaderworkerset.sigs.k8s.io/name",
            "group": "leaderworkerset.sigs.k8s.io/group-index",
            "worker": "leaderworkerset.sigs.k8s.io/worker-index"}
    got = {r["targetLabel"]: r["sourceLabels"] for r in eps[0].get("relabelings", [])}
    for target, label in want.items():
        meta = "__meta_kubernetes_pod_label_" + "".join(
            ch if ch.isalnum() or ch == "_" else "_" for ch in label)
        if got.get(target) != [meta]:
            why.append("relabeling to %s: expected %s, got %r" % (target, meta, got.get(target)))
    result(not why, "the PodMonitor selects LWS pods and scrapes the lwsinit-probe port of "
           "each of the %d lwsinit containers in container/lws/overlays/" % len(conts), "\n".join(why))


def t_dashboard():
    with open(promql.DASHBOARD) as f:
        d = json.load(f)
    why = []
    for k in ("title", "uid", "panels", "templating", "schemaVersion"):
        if k not in d:
            why.append("no %s" % k)
    ids = [p["id"] for p in d.get("panels", [])]
    if len(ids) != len(set(ids)):
        why.append("panel ids repeat: %r" % ids)
    names = {v["name"] for v in d["templating"]["list"]}
    if not {"datasource", "namespace", "lws", "group"} <= names:
        why.append("variables: %r" % sorted(names))
    n_targets = 0
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        ts = p.get("targets", [])
        if not ts or not all(t.get("expr") for t in ts):
            why.append("panel '%s' has a target without a query" % p["title"])
        if p.get("datasource", {}).get("uid") != "${datasource}":
            why.append("panel '%s' does not use the datasource variable" % p["title"])
        g = p["gridPos"]
        if g["x"] + g["w"] > 24:
            why.append("panel '%s' is wider than the grid" % p["title"])
        n_targets += len(ts)
    result(not why and n_targets > 0, "the dashboard is well formed (%d queries)" % n_targets,
           "\n".join(why))


def t_kustomization():
    with open(os.path.join(promql.MON, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    files = list(k.get("resources", []))
    for g in k.get("configMapGenerator", []):
        files += g.get("files", [])
    missing = [f for f in files if not os.path.exists(os.path.join(promql.MON, f))]
    result(files and not missing, "the kustomization lists %d files, all present" % len(files),
           "missing: %r" % missing)


def t_documented():
    """Every metric the rules and the dashboard use is in the metrics table
    of docs/operations.md, which operators read to understand an alert."""
    with open(os.path.join(promql.REPO, "docs", "operations.md")) as f:
        doc = f.read()
    table = set()
    for line in doc.splitlines():
        m = re.match(r"\| `(lwsinit_[a-z0-9_]+)` \|", line)
        if m:
            table.add(m.group(1))
    used = set()
    for _, expr in promql.expressions():
        used |= promql.metric_names(expr)
    result(used and used <= table, "the %d metrics used are in docs/operations.md's table"
           % len(used), "not documented: %s" % ", ".join(sorted(used - table)))


def t_parser():
    """The parser that test_live.py trusts: names, not functions, labels,
    keywords, numbers, durations or Grafana variables."""
    cases = [
        ('sum by (pod, outcome) (rate(a_total{x="y", z=~"$v"}[$__rate_interval])) > 1e9',
         {"a_total"}),
        ('b == 0 and on (job, instance) c{role=~"leader|standalone"} offset 5m', {"b", "c"}),
        ('count(last_over_time(d{n="}"}[1h])) - 1 unless ignoring(x) e', {"d", "e"}),
        ('max_over_time(f[15m:1m]) * 1000 > bool 0', {"f"}),
    ]
    bad = [(e, promql.metric_names(e), want) for e, want in cases
           if promql.metric_names(e) != want]
    sel = promql.selectors('c{role=~"leader|standalone", phase="running"}')
    if sel != [("c", "role", "=~", "leader|standalone"), ("c", "phase", "=", "running")]:
        bad.append(("selectors", sel, None))
    result(not bad, "the PromQL parser finds the metric names and matchers",
           "\n".join("%s: got %r, want %r" % b for b in bad))


def main():
    tests = [t_promtool_check_rules, t_promtool_test_rules, t_prometheusrule_agrees,
             t_podmonitor, t_dashboard, t_kustomization, t_documented, t_parser]
    print("1..%d" % len(tests))
    for t in tests:
        try:
            t()
        except Exception as e:  # a broken file is a failure, not a crash
            result(False, t.__name__, "%s: %s" % (type(e).__name__, e))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
