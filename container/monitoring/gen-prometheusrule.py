#!/usr/bin/env python3
"""Writes prometheusrule.yaml (a PrometheusRule for the Prometheus Operator)
from rules.yaml (a plain Prometheus rules file), so that the alert rules
have one source. With --check it writes nothing and exits 1 when
prometheusrule.yaml differs from what it would write (tests/monitoring runs
it so). Needs python3-yaml."""
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "rules.yaml")
TARGET = os.path.join(HERE, "prometheusrule.yaml")

HEADER = """\
# Generated from rules.yaml by gen-prometheusrule.py: edit rules.yaml and run
# `python3 container/monitoring/gen-prometheusrule.py`. The alert rules for
# lwsinit as a PrometheusRule (monitoring.coreos.com/v1); README.md says what
# each alert means. A Prometheus Operator picks it up when the rule's labels
# match its ruleSelector (kube-prometheus-stack: release: <its release name>).
"""


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s):
    # Multi-line expressions stay readable as block scalars.
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


Dumper.add_representer(str, _str)


def render():
    with open(SOURCE) as f:
        rules = yaml.safe_load(f)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "lwsinit", "labels": {"app.kubernetes.io/name": "lwsinit"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=1000)


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        try:
            with open(TARGET) as f:
                old = f.read()
        except FileNotFoundError:
            old = None
        if old != text:
            print("%s is not what rules.yaml gives: run %s" % (TARGET, sys.argv[0]))
            return 1
        return 0
    if sys.argv[1:]:
        print("usage: gen-prometheusrule.py [--check]", file=sys.stderr)
        return 2
    with open(TARGET, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
