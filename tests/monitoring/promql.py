"""What container/monitoring/ asks of lwsinit's /metrics: the metric names,
and the label values of lwsinit's own labels, that the alert rules and the
dashboard's queries select, parsed out of their PromQL; and a parser of
the Prometheus text format that a running agent serves. Shared by
check_files.py and test_live.py."""
import json
import os
import re

import yaml

REPO = os.environ.get("LWSI_REPO") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MON = os.path.join(REPO, "container", "monitoring")
RULES = os.path.join(MON, "rules.yaml")
PROMRULE = os.path.join(MON, "prometheusrule.yaml")
PODMON = os.path.join(MON, "podmonitor.yaml")
DASHBOARD = os.path.join(MON, "lwsinit-dashboard.json")

# Labels that the scrape adds (Prometheus itself, or podmonitor.yaml's
# relabelings), not lwsinit: their values are not in /metrics.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "endpoint",
                 "lws", "group", "worker"}

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2"}

_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(' + _STRING + ')')


def expressions():
    """[(where, PromQL)] of every expression container/monitoring holds:
    each rule of rules.yaml and of the PrometheusRule, each target of the
    dashboard, and its variables' label_values() queries."""
    out = []
    with open(RULES) as f:
        for g in yaml.safe_load(f)["groups"]:
            for r in g["rules"]:
                out.append(("rules.yaml %s" % (r.get("alert") or r.get("record")), r["expr"]))
    with open(PROMRULE) as f:
        for g in yaml.safe_load(f)["spec"]["groups"]:
            for r in g["rules"]:
                out.append(("prometheusrule.yaml %s" % r.get("alert"), r["expr"]))
    with open(DASHBOARD) as f:
        dash = json.load(f)
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append(("dashboard panel '%s' %s" % (p["title"], t["refId"]), t["expr"]))
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)\s*", q)
            if m is None:
                raise ValueError("dashboard variable %s: not label_values(): %s" % (v["name"], q))
            out.append(("dashboard variable %s" % v["name"], m.group(1)))
    return out


def metric_names(expr):
    """The metric names a PromQL expression selects: every identifier that
    is not a function (followed by a parenthesis), a keyword, a label in a
    matcher or a grouping clause, a number or a duration. Grafana's
    variables ($x, ${x}) are dropped first."""
    s = re.sub(_STRING, '""', expr)
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", " ", s)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+\S+", " ", s)
    s = re.sub(r"(?<![A-Za-z0-9_:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        if word in KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def selectors(expr):
    """[(metric, label, op, value)] of each matcher on a named metric, with
    Grafana's variables left in the values."""
    out = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{((?:" + _STRING + r"|[^}\"'])*)\}", expr):
        for lm in _MATCHER.finditer(m.group(2)):
            value = lm.group(3)[1:-1].encode().decode("unicode_escape")
            out.append((m.group(1), lm.group(1), lm.group(2), value))
    return out


def parse_text(text):
    """{metric name: [labels dict, ...]} of the samples of a /metrics body
    (text format 0.0.4)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+\S+", line)
        if m is None:
            raise ValueError("not a sample line: %r" % line)
        labels = {k: v for k, v in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                               m.group(3) or "")}
        out.setdefault(m.group(1), []).append(labels)
    return out
