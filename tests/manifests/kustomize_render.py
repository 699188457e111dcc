#!/usr/bin/python3
"""Renders a kustomization the way `kustomize build` does, for exactly the
features container/lws/ uses, so that CI can check what `kubectl apply -k`
would send without kustomize or kubectl (Debian bookworm packages neither).

Supported, and nothing else (any other field of a kustomization fails):
  - `resources:` files (one or more YAML documents) and directories holding
    a kustomization.yaml, rendered first, in order;
  - `patches:` entries with `path:` (a file of RFC 6902 operations: `add`,
    `replace`, `remove`) and `target:` (`group`, `version`, `kind`, `name`),
    applied in order; a target matches a resource by its original name (as
    first loaded) or its current one, as kustomize's resWrangler.Select does;
  - `images:` entries with `name`, `newName`, `newTag`, applied after the
    patches (kustomize runs its PatchTransformer before its
    ImageTagTransformer) to the `image` of every element of any `containers`
    or `initContainers` list anywhere in a resource (kustomize's
    imagetag.LegacyFilter, which is what reaches a LeaderWorkerSet's pod
    templates).

Stricter than kustomize where kustomize is silent about a mistake: a patch
whose target selects nothing, an `images:` entry that rewrites nothing, and
target names that are regular expressions are errors here. The output holds
the same objects as `kustomize build`; kustomize sorts them by kind, this
keeps the order of `resources:`.

Usage: kustomize_render.py DIR  (prints the rendered YAML documents)
"""

import copy
import os
import re
import sys

import yaml

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "patches", "images"}
PATCH_FIELDS = {"path", "target"}
TARGET_FIELDS = {"group", "version", "kind", "name"}
IMAGE_FIELDS = {"name", "newName", "newTag"}
OPS = {"add", "replace", "remove"}
# kustomize's image.IsImageMatched: the name, then an optional tag and digest.
TAG_RE = r"(:[a-zA-Z0-9_.{}-]*)?(@sha256:[a-zA-Z0-9_.{}-]*)?"


class RenderError(Exception):
    pass


class Resource:
    def __init__(self, doc, where):
        for k in ("apiVersion", "kind"):
            if not isinstance(doc.get(k), str):
                raise RenderError(f"{where}: a resource without {k}")
        name = (doc.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise RenderError(f"{where}: a {doc['kind']} without metadata.name")
        self.doc = doc
        self.orig_name = name
        self.where = where

    def gvk(self):
        gv = self.doc["apiVersion"]
        group, version = gv.split("/", 1) if "/" in gv else ("", gv)
        return group, version, self.doc["kind"]

    def name(self):
        return (self.doc.get("metadata") or {}).get("name")

    def ident(self):
        g, _, k = self.gvk()
        ns = (self.doc.get("metadata") or {}).get("namespace", "")
        return (g, k, ns, self.name())


# --- RFC 6902 on the ops the layout uses -----------------------------------

def pointer(path):
    """RFC 6901: "/a/b~1c" -> ["a", "b/c"]."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise RenderError(f"path {path!r} is not a JSON pointer (it must start with /)")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def index(container, token, path, allow_end=False):
    if token == "-" and allow_end:
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise RenderError(f"{path}: {token!r} is not an array index")
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise RenderError(f"{path}: index {i} is out of bounds (length {len(container)})")
    return i


def parent_of(doc, tokens, path):
    node = doc
    for t in tokens[:-1]:
        if isinstance(node, dict):
            if t not in node:
                raise RenderError(f"{path}: {t!r} does not exist")
            node = node[t]
        elif isinstance(node, list):
            node = node[index(node, t, path)]
        else:
            raise RenderError(f"{path}: {t!r} is below a scalar")
    return node


def apply_op(doc, op, where):
    if not isinstance(op, dict) or not set(op) <= {"op", "path", "value"}:
        raise RenderError(f"{where}: {op!r}: an operation has only op, path and value")
    name, path = op.get("op"), op.get("path")
    if name not in OPS:
        raise RenderError(f"{where}: op {name!r} is not one of {', '.join(sorted(OPS))}")
    if (name == "remove") == ("value" in op):
        raise RenderError(f"{where}: {name} {path}: " +
                          ("remove takes no value" if name == "remove" else "no value"))
    tokens = pointer(path)
    if tokens == [""]:
        raise RenderError(f"{where}: {name} {path}: the whole document cannot be patched")
    parent = parent_of(doc, tokens, path)
    last = tokens[-1]
    value = copy.deepcopy(op.get("value"))
    if isinstance(parent, dict):
        if name != "add" and last not in parent:
            raise RenderError(f"{where}: {name} {path}: {last!r} does not exist")
        if name == "remove":
            del parent[last]
        else:
            parent[last] = value
    elif isinstance(parent, list):
        i = index(parent, last, path, allow_end=(name == "add"))
        if name == "add":
            parent.insert(i, value)
        elif name == "replace":
            parent[i] = value
        else:
            del parent[i]
    else:
        raise RenderError(f"{where}: {name} {path}: the parent is a scalar")


def apply_patch(doc, ops, where):
    """All the operations, or none: a patch that fails leaves DOC as it was."""
    work = copy.deepcopy(doc)
    for op in ops:
        apply_op(work, op, where)
    return work


# --- images ----------------------------------------------------------------

def set_image(value, img):
    if not isinstance(value, str) or not re.fullmatch(re.escape(img["name"]) + TAG_RE, value):
        return value
    rest = value[len(img["name"]):]
    digest = ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        digest = "@" + digest
    name = img.get("newName") or img["name"]
    tag = rest
    if img.get("newTag"):
        tag, digest = ":" + str(img["newTag"]), ""
    return name + tag + digest


def walk_images(node, img):
    changed = 0
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                for c in v:
                    if isinstance(c, dict) and "image" in c:
                        new = set_image(c["image"], img)
                        changed += new != c["image"]
                        c["image"] = new
            changed += walk_images(v, img)
    elif isinstance(node, list):
        for v in node:
            changed += walk_images(v, img)
    return changed


# --- the kustomization -------------------------------------------------------

def load_yaml_docs(path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{path}: {e}")


def selects(target, res):
    g, v, k = res.gvk()
    if "group" in target and target["group"] != g:
        return False
    if "version" in target and target["version"] != v:
        return False
    if "kind" in target and target["kind"] != k:
        return False
    if "name" in target and target["name"] not in (res.orig_name, res.name()):
        return False
    return True


def render_dir(d):
    kfile = os.path.join(d, "kustomization.yaml")
    for other in ("kustomization.yml", "Kustomization"):
        if os.path.exists(os.path.join(d, other)):
            raise RenderError(f"{d}: name the file kustomization.yaml, not {other}")
    docs = load_yaml_docs(kfile)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{kfile}: not one mapping")
    k = docs[0]
    extra = set(k) - KUSTOMIZATION_FIELDS
    if extra:
        raise RenderError(f"{kfile}: {', '.join(sorted(extra))}: not supported by this layout "
                          f"(only {', '.join(sorted(KUSTOMIZATION_FIELDS))})")
    if k.get("apiVersion", "kustomize.config.k8s.io/v1beta1") != "kustomize.config.k8s.io/v1beta1":
        raise RenderError(f"{kfile}: apiVersion {k['apiVersion']!r}")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{kfile}: kind {k['kind']!r}")

    out = []
    for r in k.get("resources") or []:
        if not isinstance(r, str) or "://" in r or r.startswith(("github.com/", "git@")):
            raise RenderError(f"{kfile}: resource {r!r}: only local files and directories")
        p = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(p):
            out += render_dir(p)
        elif os.path.isfile(p):
            for i, doc in enumerate(load_yaml_docs(p)):
                if not isinstance(doc, dict):
                    raise RenderError(f"{p}: document {i + 1} is not a mapping")
                out.append(Resource(doc, f"{p} document {i + 1}"))
        else:
            raise RenderError(f"{kfile}: resource {r!r} does not exist")
    seen = {}
    for res in out:
        if res.ident() in seen:
            raise RenderError(f"{kfile}: {res.ident()} is defined twice "
                              f"({seen[res.ident()]}, {res.where})")
        seen[res.ident()] = res.where

    for n, p in enumerate(k.get("patches") or []):
        where = f"{kfile} patches[{n}]"
        if not isinstance(p, dict) or not set(p) <= PATCH_FIELDS or "path" not in p or "target" not in p:
            raise RenderError(f"{where}: needs path and target, and nothing else "
                              "(only JSON 6902 patch files are supported)")
        t = p["target"]
        if not isinstance(t, dict) or not t or not set(t) <= TARGET_FIELDS:
            raise RenderError(f"{where}: target: only {', '.join(sorted(TARGET_FIELDS))}")
        if "name" in t and not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", str(t["name"])):
            raise RenderError(f"{where}: target name {t['name']!r}: a plain name "
                              "(kustomize would read it as a regular expression)")
        ppath = os.path.normpath(os.path.join(d, p["path"]))
        ops = load_yaml_docs(ppath)
        if len(ops) != 1 or not isinstance(ops[0], list):
            raise RenderError(f"{ppath}: not a list of JSON 6902 operations "
                              "(strategic merge patches are not supported)")
        hits = [res for res in out if selects(t, res)]
        if not hits:
            raise RenderError(f"{where}: target {t} selects nothing")
        for res in hits:
            res.doc = apply_patch(res.doc, ops[0], ppath)

    for n, img in enumerate(k.get("images") or []):
        where = f"{kfile} images[{n}]"
        if not isinstance(img, dict) or not set(img) <= IMAGE_FIELDS or "name" not in img:
            raise RenderError(f"{where}: only {', '.join(sorted(IMAGE_FIELDS))}, with name")
        # Every resource, not the first that matches (kustomize skips CRDs).
        changed = sum([walk_images(res.doc, img) for res in out
                       if res.doc["kind"] != "CustomResourceDefinition"])
        if not changed:
            raise RenderError(f"{where}: no container image is named {img['name']!r}")
    return out


def render(d):
    """The documents `kustomize build D` would print, as Python objects."""
    return [r.doc for r in render_dir(d)]


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    try:
        docs = render(sys.argv[1])
    except RenderError as e:
        sys.exit(f"{sys.argv[0]}: {e}")
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False, default_flow_style=False)


if __name__ == "__main__":
    main()
