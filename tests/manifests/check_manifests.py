#!/usr/bin/python3
"""Checks the LeaderWorkerSet manifests in container/lws/ (TAP).

Every overlay in container/lws/overlays/ is rendered as `kubectl apply -k`
would (kustomize_render.py: resources, JSON 6902 patches, images, and
nothing else), and its documents are checked.

For every LeaderWorkerSet document:
  - it validates against the openAPIV3Schema of the LWS CRD
    (../shared/data/leaderworkerset.x-k8s.io_leaderworkersets.yaml), strictly:
    a field the schema does not know is an error, as `kubectl apply` (strict
    field validation) would say;
  - the lwsinit container of the leader and of the worker template: every flag
    and LWSINIT_* variable exists in `$LWSINIT --help`, its value fits the
    metavar (choices, numbers), and the real lwsinit accepts the whole command
    line (run as rank 0 and as rank 1 of the group with the manifest's flags,
    args and env: a configuration error exits 2 at once, an accepted one waits
    for its group and is stopped with SIGTERM, 143);
  - probes: startup, readiness (/readyz) and liveness (/livez) as httpGet on
    the port of --probe-addr; the startup probe's window (initialDelaySeconds
    + periodSeconds x failureThreshold) >= --dns-timeout (workers) +
    --rdzv-timeout + --gpu-check-timeout (with a GPU check) + --fail-delay +
    the model's load time (the LWS annotation lwsinit/model-load-seconds),
    each from the manifest's flags or LWSINIT_* values, else lwsinit --help's
    default;
  - terminationGracePeriodSeconds >= --drain-delay + 2 x --grace + a margin
    (GRACE_MARGIN s): a worker's ordered stop holds its engine up to
    --drain-delay + --grace, then gives it --grace before SIGKILL;
  - the revision from the downward API, the token from a Secret mounted as a
    file (--token-file; LWSINIT_TOKEN is refused), no ServiceAccount token
    (automountServiceAccountToken: false: lwsinit needs no RBAC), /dev/shm
    from a memory emptyDir, GPUs in resources, ports declared, restartPolicy
    RecreateGroupOnPodRestart or RecreateGroupAfterStart, an image with a
    pinned tag (not :latest, not the base's placeholder), command and args
    all strings, the same COMMAND and preset on leader and worker (the
    leader refuses a group whose commands differ);
  - with an RDMA resource (rdma/*): IPC_LOCK, --gpu-check nccl and a
    --gpu-min-busbw floor.
Services: their targetPort exists in the templates they select.
NetworkPolicies: exactly one per LeaderWorkerSet, selecting every group by
leaderworkerset.sigs.k8s.io/name (no group-index), all ports from the pods
of the same LWS, the rendezvous port from nowhere else, the probe port and
every Service's targetPort admitted.

Runs with Debian's /usr/bin/python3 (python3-yaml, python3-jsonschema).
Environment: LWSINIT (the binary; run checks skip without it), LWSI_REPO (the
repository root; default: two levels up from this file), LWSI_CRD (the CRD file),
CI (when set, a missing CRD fails instead of skipping).

Usage: check_manifests.py [crd|rest|all]. `crd` validates the documents against
the CRD only, and skips as a whole (TAP "1..0 # SKIP", which meson reports as
SKIP, not as a pass) where the CRD is not on this machine, except under CI,
where that is a failure; `rest` runs every other check; `all` (default) both.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("1..0 # SKIP python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(0)
try:
    import jsonschema
except ImportError:
    jsonschema = None

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "acceptance"))
from lwsitest import free_port  # noqa: E402  (a port outside the ephemeral range)
from kustomize_render import RenderError, render  # noqa: E402

REPO = os.environ.get("LWSI_REPO") or os.path.dirname(os.path.dirname(HERE))
CRD = os.environ.get("LWSI_CRD") or os.path.join(
    REPO, "..", "shared", "data", "leaderworkerset.x-k8s.io_leaderworkersets.yaml")
LWS_DIR = os.path.join(REPO, "container", "lws")
OVERLAYS = os.path.join(LWS_DIR, "overlays")
REVISION_LABEL = "leaderworkerset.sigs.k8s.io/template-revision-hash"
NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
GROUP_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
# The LWS annotation that states the model's load time in seconds, for the
# startup probe's window.
LOAD_ANNOTATION = "lwsinit/model-load-seconds"
# The base's placeholder image, which every overlay must replace (images:).
PLACEHOLDER_IMAGE = "engine-lwsinit"
# Read by lwsinit's configuration (agent/config.c) but not an option, so not
# in --help: the token itself, instead of --token-file. The manifests must
# not use it (the token stays out of the pod spec and the environment).
EXTRA_ENV = {"LWSINIT_TOKEN"}

n_tests = 0
n_failed = 0
PART = sys.argv[1] if len(sys.argv) > 1 else "all"
if PART not in ("crd", "rest", "all"):
    sys.exit(f"usage: {sys.argv[0]} [crd|rest|all]")


def tap(ok, desc, diag=None, skip=None):
    global n_tests, n_failed
    n_tests += 1
    if skip is not None:
        print(f"ok {n_tests} - {desc} # SKIP {skip}")
        return
    print(f"{'ok' if ok else 'not ok'} {n_tests} - {desc}")
    if not ok:
        n_failed += 1
        for line in (diag or "").splitlines():
            print(f"#   {line}")
    sys.stdout.flush()


# --- lwsinit --help ----------------------------------------------------------

class Options:
    """Flags, metavars, variables and defaults, as `lwsinit --help` prints them."""

    def __init__(self, text):
        self.meta = {}      # "--grace" -> "SEC"
        self.env = {}       # "LWSINIT_GRACE" -> "--grace"
        self.default = {}   # "--grace" -> "30"
        last = None
        for line in text.splitlines():
            # A flag and its help on one line, or (a flag wider than the
            # column) the flag alone, its help on the next line.
            m = re.match(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)(?: (\S+))?(?:\s{2,}\S|$)", line)
            if m:
                last = m.group(1)
                self.meta[last] = m.group(2)
                continue
            m = re.match(r"^\s+env (LWSINIT_[A-Z0-9_]+)(?:, [A-Z_]+)?; default: (.*)$", line)
            if m and last:
                self.env[m.group(1)] = last
                d = m.group(2).strip()
                self.default[last] = None if d == "unset" else d

    def check_value(self, flag, value):
        """None when VALUE fits FLAG's metavar, else why not."""
        meta = self.meta.get(flag)
        if meta is None:
            return None
        if "|" in meta and not re.search(r"[A-Z]", meta):
            choices = meta.split("|")
            return None if value in choices else f"not one of {', '.join(choices)}"
        if meta in ("N", "I", "SEC", "MS"):
            return None if re.fullmatch(r"[0-9]+", value) else "not a whole number"
        if meta == "PORT":
            ok = re.fullmatch(r"[0-9]+", value) and 1 <= int(value) <= 65535
            return None if ok else "not a port (1..65535)"
        if meta == "GBPS":
            return None if re.fullmatch(r"[0-9]+(\.[0-9]+)?", value) else "not a number"
        if meta == "HOST:PORT":
            m = re.fullmatch(r"(.*):([0-9]+)", value)
            return None if m and 1 <= int(m.group(2)) <= 65535 else "not HOST:PORT"
        if value == "":
            return "empty"
        return None


def lwsinit_options(exe):
    try:
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=20)
    except OSError as e:
        return None, str(e)
    if r.returncode != 0:
        return None, f"exit {r.returncode}: {r.stderr.strip()}"
    return Options(r.stdout), None


# --- the schema ----------------------------------------------------------------

def strict(schema):
    """The structural schema as the API server applies it: unknown fields are
    errors (kubectl's strict field validation) unless the schema keeps them."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def load_crd():
    if not os.path.exists(CRD):
        return None, f"{os.path.normpath(CRD)} is missing"
    if jsonschema is None:
        return None, "python3-jsonschema is not installed (apt-get install python3-jsonschema)"
    with open(CRD) as f:
        crd = yaml.safe_load(f)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    versions = {}
    for v in crd["spec"]["versions"]:
        schema = strict(v["schema"]["openAPIV3Schema"])
        versions[f"{group}/{v['name']}"] = jsonschema.Draft7Validator(schema)
    return (kind, versions), None


# --- the lwsinit container -------------------------------------------------------

class Agent:
    """The lwsinit container of one template, and its effective options."""

    def __init__(self, opts, lws_size, pod_spec, container):
        self.pod = pod_spec
        self.c = container
        self.size = lws_size
        cmd = list(container.get("command") or [])
        self.flags = {}     # "--grace" -> "60" (as written)
        self.errors = []
        if not cmd or os.path.basename(cmd[0]) != "lwsinit":
            self.errors.append(f"command[0] is {cmd[:1]}, not lwsinit")
            return
        if cmd[-1] != "--":
            self.errors.append('command does not end with "--" (args are the engine command)')
        i = 1
        words = cmd[1:-1] if cmd[-1] == "--" else cmd[1:]
        i = 0
        while i < len(words):
            w = words[i]
            if not w.startswith("--"):
                self.errors.append(f"{w!r}: not an option")
                i += 1
                continue
            if "=" in w:
                flag, value = w.split("=", 1)
            else:
                flag = w
                value = words[i + 1] if i + 1 < len(words) else None
                i += 1
            i += 1
            if flag not in opts.meta:
                self.errors.append(f"{flag}: no such option in lwsinit --help")
                continue
            if value is None:
                self.errors.append(f"{flag}: no value")
                continue
            why = opts.check_value(flag, value)
            if why:
                self.errors.append(f"{flag} {value!r}: {why} ({opts.meta[flag]})")
            self.flags[flag] = value
        self.env = {}
        for e in container.get("env") or []:
            name = e.get("name", "")
            self.env[name] = e
            if name.startswith("LWSINIT_") and name not in opts.env and name not in EXTRA_ENV:
                self.errors.append(f"{name}: no such variable in lwsinit --help")
            elif name in opts.env and "value" in e:
                why = opts.check_value(opts.env[name], str(e["value"]))
                if why:
                    self.errors.append(f"{name}={e['value']!r}: {why}")
        self.opts = opts

    def get(self, flag):
        """The effective value: flag, then LWSINIT_* (a literal value), then default."""
        if flag in self.flags:
            return self.flags[flag]
        for name, f in self.opts.env.items():
            if f == flag and name in self.env and "value" in self.env[name]:
                return str(self.env[name]["value"])
        return self.opts.default.get(flag)

    def num(self, flag):
        v = self.get(flag)
        return int(v) if v is not None and re.fullmatch(r"[0-9]+", v) else 0

    def probe_port(self):
        v = self.get("--probe-addr") or "0.0.0.0:7471"
        return int(v.rsplit(":", 1)[1])

    def port_by_name(self, name):
        for p in self.c.get("ports") or []:
            if p.get("name") == name:
                return p.get("containerPort")
        return None


def find_agent(opts, size, template, where):
    spec = (template or {}).get("spec") or {}
    cs = [c for c in spec.get("containers") or []
          if c.get("command") and os.path.basename(str(c["command"][0])) == "lwsinit"]
    if len(cs) != 1:
        return None, f"{where}: {len(cs)} containers run lwsinit (want exactly 1)"
    return Agent(opts, size, spec, cs[0]), None


# --- checks on one agent -----------------------------------------------------------

def check_probes(a):
    port = a.probe_port()
    errs = []
    want = {"readinessProbe": ["/readyz"], "livenessProbe": ["/livez"],
            "startupProbe": ["/readyz", "/livez"]}
    for kind, paths in want.items():
        p = a.c.get(kind)
        if not p:
            errs.append(f"no {kind}")
            continue
        g = p.get("httpGet")
        if not g:
            errs.append(f"{kind} is not httpGet")
            continue
        pp = g.get("port")
        if isinstance(pp, str) and not pp.isdigit():
            pp = a.port_by_name(pp)
        if pp is None or int(pp) != port:
            errs.append(f"{kind} port {g.get('port')!r} is not --probe-addr's {port}")
        path = (g.get("path") or "/").split("?")[0]
        if path not in paths:
            errs.append(f"{kind} path {g.get('path')!r} is not {' or '.join(paths)}")
    return errs


def probe_budget(p):
    p = p or {}
    return (p.get("initialDelaySeconds", 0)
            + p.get("periodSeconds", 10) * p.get("failureThreshold", 3))


def startup_need(a, leader, lws):
    """The seconds a pod may legitimately take to become ready, and how they
    add up: lwsinit's own deadlines (a worker resolves the leader first; the
    leader's rendezvous starts at once), the failed pod's --fail-delay, and
    the model's load time that the LWS states."""
    parts = []
    if not leader:
        parts.append(("--dns-timeout", a.num("--dns-timeout")))
    parts.append(("--rdzv-timeout", a.num("--rdzv-timeout")))
    if (a.get("--gpu-check") or "none") != "none":
        parts.append(("--gpu-check-timeout", a.num("--gpu-check-timeout")))
    parts.append(("--fail-delay", a.num("--fail-delay")))
    load = ((lws.get("metadata") or {}).get("annotations") or {}).get(LOAD_ANNOTATION)
    if load is not None and re.fullmatch(r"[0-9]+", str(load)):
        parts.append((LOAD_ANNOTATION, int(load)))
    return sum(v for _, v in parts), parts, load


def check_startup(a, leader, lws):
    """The startup probe must not kill a pod that lwsinit's own deadlines
    would still let wait (they fail with a reason, the probe blindly), nor a
    model that loads within its stated time (killed and reloaded forever)."""
    need, parts, load = startup_need(a, leader, lws)
    errs = []
    if load is None or not re.fullmatch(r"[0-9]+", str(load)):
        errs.append(f"the LeaderWorkerSet has no annotation {LOAD_ANNOTATION} (whole seconds, "
                    f"the model's load time): got {load!r}")
    have = probe_budget(a.c.get("startupProbe"))
    if have < need:
        errs.append(f"startupProbe allows {have} s, less than "
                    + " + ".join(f"{n} {v}" for n, v in parts) + f" = {need} s")
    return errs


# Seconds the kubelet's grace period must leave beyond lwsinit's own stop, for
# the agent's exit and the kubelet's own latency.
GRACE_MARGIN = 5


def check_grace(a):
    tgps = a.pod.get("terminationGracePeriodSeconds", 30)
    grace, drain = a.num("--grace"), a.num("--drain-delay")
    need = drain + 2 * grace + GRACE_MARGIN
    if not tgps >= need:
        return [f"terminationGracePeriodSeconds {tgps} is below --drain-delay {drain} + "
                f"2 x --grace {grace} + a margin of {GRACE_MARGIN} = {need}: the kubelet "
                f"would SIGKILL lwsinit while a worker's engine still waits for the "
                f"leader's or stops"]
    return []


def check_revision_token(a):
    errs = []
    rev = a.env.get("LWSINIT_REVISION")
    want = f"metadata.labels['{REVISION_LABEL}']"
    path = (((rev or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
    if "--revision" not in a.flags and path != want:
        errs.append(f"LWSINIT_REVISION is not from the downward API fieldRef {want}")
    tf = a.get("--token-file")
    if "LWSINIT_TOKEN" in a.env:
        errs.append("LWSINIT_TOKEN: the token in the environment (visible in the pod spec and "
                    "/proc/1/environ); mount the Secret and pass --token-file")
    if tf:
        vols = {v.get("name"): v for v in a.pod.get("volumes") or []}
        ok = False
        for m in a.c.get("volumeMounts") or []:
            mp = m.get("mountPath", "").rstrip("/") + "/"
            if tf.startswith(mp) and "secret" in vols.get(m.get("name"), {}):
                ok = m.get("readOnly") is True
        if not ok:
            errs.append(f"--token-file {tf} is not in a Secret volume mounted readOnly")
    else:
        errs.append("no token: no --token-file (a Secret mounted as a file)")
    return errs


def check_pod(a, leader, lws):
    errs = []
    vols = {v.get("name"): v for v in a.pod.get("volumes") or []}
    shm = [m for m in a.c.get("volumeMounts") or [] if m.get("mountPath") == "/dev/shm"]
    if not shm or ((vols.get(shm[0].get("name")) or {}).get("emptyDir") or {}).get("medium") != "Memory":
        errs.append("/dev/shm is not a memory-backed emptyDir")
    res = a.c.get("resources") or {}
    gpus = (res.get("limits") or {}).get("nvidia.com/gpu")
    if gpus is None:
        errs.append("no nvidia.com/gpu in resources.limits")
    elif "--gpus" in a.flags and str(gpus) != a.flags["--gpus"] and a.flags["--gpus"] != "0":
        errs.append(f"--gpus {a.flags['--gpus']} but nvidia.com/gpu {gpus}")
    ports = {}
    for p in a.c.get("ports") or []:
        name = p.get("name")
        if name is not None and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", name):
            errs.append(f"port name {name!r} is not an IANA service name (<= 15 chars)")
        ports[p.get("containerPort")] = name
    if a.probe_port() not in ports:
        errs.append(f"the probe port {a.probe_port()} is not declared")
    if leader and a.num("--rdzv-port") not in ports:
        errs.append(f"the rendezvous port {a.num('--rdzv-port')} is not declared on the leader")
    rp = ((lws.get("spec") or {}).get("leaderWorkerTemplate") or {}).get("restartPolicy")
    if rp not in RECREATE and (a.get("--on-failure") or "exit") == "exit":
        errs.append(f"restartPolicy is {rp!r}: with --on-failure exit a failed member's "
                    f"group must be recreated ({' or '.join(RECREATE)}; docs/operations.md 1.8)")
    if a.pod.get("automountServiceAccountToken") is not False:
        errs.append("automountServiceAccountToken is not false (lwsinit needs no API access)")
    img = str(a.c.get("image") or "")
    name, _, tag = img.rpartition(":") if ":" in img.rsplit("/", 1)[-1] else (img, "", "")
    if "@sha256:" in img:
        pass
    elif not tag or tag == "latest":
        errs.append(f"image {img!r} is not pinned to a tag")
    if name.rsplit("/", 1)[-1] == PLACEHOLDER_IMAGE or img.startswith(PLACEHOLDER_IMAGE):
        errs.append(f"image {img!r} is the base's placeholder: set it with images: in the overlay")
    for key in ("command", "args"):
        bad = [x for x in a.c.get(key) or [] if not isinstance(x, str)]
        if bad:
            errs.append(f"{key}: {bad!r} not strings (quote them: the API refuses numbers "
                        "and YAML 1.1 reads yes/no/on/off as booleans)")
    return errs


RECREATE = ("RecreateGroupOnPodRestart", "RecreateGroupAfterStart")


def check_rdma(a):
    """A pod given RDMA devices must be able to pin memory, and the group
    must fail when NCCL falls back to sockets anyway."""
    res = a.c.get("resources") or {}
    rdma = [k for k in (res.get("limits") or {}) if str(k).startswith("rdma/")]
    if not rdma:
        return None
    errs = []
    caps = ((a.c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
    if "IPC_LOCK" not in caps and "CAP_IPC_LOCK" not in caps:
        errs.append(f"{rdma[0]} without capabilities.add IPC_LOCK (RDMA registration is "
                    "bounded by RLIMIT_MEMLOCK otherwise)")
    if a.get("--gpu-check") != "nccl":
        errs.append(f"{rdma[0]} without --gpu-check nccl (nothing measures the fabric)")
    try:
        floor = float(a.get("--gpu-min-busbw") or 0)
    except ValueError:
        floor = 0
    if floor <= 0:
        errs.append(f"{rdma[0]} without a --gpu-min-busbw floor (a fallback to TCP sockets "
                    "would pass the check)")
    return errs


def run_agent(exe, a, rank, tmp):
    """Runs the manifest's command as RANK of the group, with the ports and
    paths moved to free ones. None when lwsinit accepted it, else why not."""
    rdzv = str(free_port())
    probe = f"127.0.0.1:{free_port()}"
    sock = os.path.join(tmp, f"status-{rank}.sock")
    tlog = os.path.join(tmp, f"termlog-{rank}")
    token = os.path.join(tmp, "token")
    with open(token, "w") as f:
        f.write("manifest-check-token\n")
    moved = {"--rdzv-port": rdzv, "--probe-addr": probe, "--status-socket": sock,
             "--termination-log": tlog, "--token-file": token}
    cmd = [exe]
    words = list(a.c["command"][1:])
    i = 0
    while i < len(words):
        w = words[i]
        if w == "--":
            cmd += words[i:]
            break
        flag = w.split("=", 1)[0]
        if flag in moved:
            cmd += [flag, moved[flag]]
            i += 1 if "=" in w else 2
            continue
        cmd.append(w)
        i += 1
    cmd += [str(x) for x in a.c.get("args") or []]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for name, e in a.env.items():
        if "value" in e:
            env[name] = str(e["value"])
        elif "secretKeyRef" in (e.get("valueFrom") or {}):
            env[name] = "manifest-check-token"
        elif "fieldRef" in (e.get("valueFrom") or {}):
            env[name] = "rev-manifest-check"
        else:
            env[name] = "x"
    env.update({
        "LWS_LEADER_ADDRESS": "127.0.0.1", "LWS_GROUP_SIZE": str(a.size),
        "LWS_WORKER_INDEX": str(rank),
        "LWSINIT_RDZV_PORT": rdzv, "LWSINIT_PROBE_ADDR": probe,
        "LWSINIT_STATUS_SOCKET": sock, "LWSINIT_TERMINATION_LOG": tlog,
    })
    if "LWSINIT_TOKEN_FILE" in env:
        env["LWSINIT_TOKEN_FILE"] = token
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=1.5)
        return f"exited {p.returncode} at once (2: configuration error): {err.strip()}"
    except subprocess.TimeoutExpired:
        pass
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return "did not stop within 10 s of SIGTERM"
    if p.returncode != 143:
        return f"accepted, but exited {p.returncode} on SIGTERM before launch (want 143): {err.strip()}"
    return None


# --- one manifest -------------------------------------------------------------------

def check_lws(name, doc, crd, opts, exe):
    where = f"{name}: LeaderWorkerSet {doc.get('metadata', {}).get('name')}"
    if PART == "rest":
        pass
    elif crd is None:
        tap(True, f"{where}: validates against the LWS CRD", skip=crd_skip)
    else:
        kind, versions = crd
        v = versions.get(doc.get("apiVersion"))
        if v is None or doc.get("kind") != kind:
            tap(False, f"{where}: validates against the LWS CRD",
                f"apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}: want one of "
                f"{', '.join(versions)} / {kind}")
        else:
            errs = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
            tap(not errs, f"{where}: validates against the LWS CRD",
                "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errs[:20]))

    if PART == "crd":
        return
    lwt = (doc.get("spec") or {}).get("leaderWorkerTemplate") or {}
    size = lwt.get("size", 1)
    tap(isinstance(size, int) and size >= 2, f"{where}: a group of 2 or more pods",
        f"size {size!r}")
    if opts is None:
        tap(True, f"{where}: lwsinit containers", skip=opts_skip)
        return
    agents = {}
    for role, tkey in (("leader", "leaderTemplate"), ("worker", "workerTemplate")):
        tmpl = lwt.get(tkey) or (lwt.get("workerTemplate") if role == "leader" else None)
        a, err = find_agent(opts, size, tmpl, f"{where} {role}")
        if a is None:
            tap(False, f"{where} {role}: runs lwsinit", err)
            continue
        agents[role] = a
        w = f"{where} {role}"
        leader = role == "leader"
        tap(not a.errors, f"{w}: lwsinit flags and LWSINIT_* variables exist, values fit",
            "\n".join(a.errors))
        tap(not check_probes(a), f"{w}: startup/readiness/liveness probes on --probe-addr's port",
            "\n".join(check_probes(a)))
        need = startup_need(a, leader, doc)
        tap(not check_startup(a, leader, doc),
            f"{w}: startup probe window >= {' + '.join(n for n, _ in need[1])} ({need[0]} s)",
            "\n".join(check_startup(a, leader, doc)))
        tap(not check_grace(a),
            f"{w}: terminationGracePeriodSeconds >= --drain-delay + 2 x --grace + margin",
            "\n".join(check_grace(a)))
        tap(not check_revision_token(a),
            f"{w}: revision from the downward API, token from a Secret mounted as a file",
            "\n".join(check_revision_token(a)))
        tap(not check_pod(a, leader, doc),
            f"{w}: /dev/shm, GPUs, ports, restartPolicy, no ServiceAccount token, pinned image",
            "\n".join(check_pod(a, leader, doc)))
        rd = check_rdma(a)
        if rd is not None:
            tap(not rd, f"{w}: RDMA: IPC_LOCK, --gpu-check nccl, a --gpu-min-busbw floor",
                "\n".join(rd))
        rank = 0 if leader else 1
        if exe is None:
            tap(True, f"{w}: lwsinit accepts the command line as rank {rank}", skip="LWSINIT is not set")
        else:
            with tempfile.TemporaryDirectory(prefix="lwsi-manifest-") as tmp:
                why = run_agent(exe, a, rank, tmp)
            tap(why is None, f"{w}: lwsinit accepts the command line as rank {rank}", why)
    if len(agents) == 2:
        l, wk = agents["leader"], agents["worker"]
        diffs = []
        if [str(x) for x in l.c.get("args") or []] != [str(x) for x in wk.c.get("args") or []]:
            diffs.append("args (the engine COMMAND) differ")
        for f in ("--preset", "--dist-port", "--dp-local", "--gpus", "--rdzv-port"):
            if l.get(f) != wk.get(f):
                diffs.append(f"{f}: leader {l.get(f)!r}, worker {wk.get(f)!r}")
        tap(not diffs, f"{where}: leader and worker run the same COMMAND and preset",
            "\n".join(diffs))
    return agents


def check_service(name, doc, lws_docs):
    """A Service's targetPort must exist in the pods it selects."""
    where = f"{name}: Service {doc.get('metadata', {}).get('name')}"
    sel = (doc.get("spec") or {}).get("selector") or {}
    target = sel.get("leaderworkerset.sigs.k8s.io/name")
    errs = []
    lws = [d for d in lws_docs if d.get("metadata", {}).get("name") == target]
    if not lws:
        tap(False, f"{where}: selects a LeaderWorkerSet of the overlay", f"selector {sel}")
        return
    lwt = lws[0]["spec"]["leaderWorkerTemplate"]
    templates = []
    for key in ("leaderTemplate", "workerTemplate"):
        t = lwt.get(key)
        if t is None:
            continue
        labels = (t.get("metadata") or {}).get("labels") or {}
        extra = {k: v for k, v in sel.items() if not k.startswith("leaderworkerset.sigs.k8s.io/")}
        if all(labels.get(k) == v for k, v in extra.items()):
            templates.append((key, t))
    if not templates:
        errs.append(f"selector {sel} matches no template")
    # LWS names its headless Service (the one behind LWS_LEADER_ADDRESS)
    # after the LeaderWorkerSet and skips creating it when a Service of
    # that name exists: ours would leave the workers without a leader.
    svc = doc.get("metadata", {}).get("name")
    for d in lws_docs:
        if d.get("metadata", {}).get("name") == svc:
            errs.append(f"the Service is named like LeaderWorkerSet {svc!r}, whose headless "
                        "Service LWS creates under that name")
    for p in (doc.get("spec") or {}).get("ports") or []:
        tp = p.get("targetPort", p.get("port"))
        for key, t in templates:
            found = False
            for c in t["spec"].get("containers") or []:
                for cp in c.get("ports") or []:
                    if cp.get("name") == tp or cp.get("containerPort") == tp:
                        found = True
            if not found:
                errs.append(f"targetPort {tp!r} is not declared in the {key}")
    tap(not errs, f"{where}: its name is not the LWS's, its targetPorts exist in the pods it selects", "\n".join(errs))


def lws_ports(lws):
    """{port name: containerPort} over every container of both templates."""
    out = {}
    lwt = (lws.get("spec") or {}).get("leaderWorkerTemplate") or {}
    for key in ("leaderTemplate", "workerTemplate"):
        for c in (((lwt.get(key) or {}).get("spec") or {}).get("containers") or []):
            for p in c.get("ports") or []:
                if p.get("name"):
                    out[p["name"]] = p.get("containerPort")
    return out


def check_networkpolicy(name, docs, lws, agents):
    """One policy for every group of LWS: the group's own traffic from the
    LWS's pods only, the probe port and the Services' ports from outside."""
    lname = lws["metadata"]["name"]
    where = f"{name}: NetworkPolicy for LeaderWorkerSet {lname}"
    nps = [d for d in docs if d.get("kind") == "NetworkPolicy"
           and NAME_LABEL in str(((d.get("spec") or {}).get("podSelector") or {}))]
    mine = [d for d in nps if ((d["spec"].get("podSelector") or {}).get("matchLabels") or {})
            .get(NAME_LABEL) == lname]
    if len(mine) != 1:
        tap(False, f"{where}: exactly one", f"{len(mine)} NetworkPolicies select its pods by {NAME_LABEL}")
        return
    np = mine[0]
    spec = np["spec"]
    errs = []
    ports = lws_ports(lws)
    rdzv = {a.num("--rdzv-port") for a in agents.values()} or {7470}
    probe = {a.probe_port() for a in agents.values()} or {7471}
    sel = spec.get("podSelector") or {}
    if sel.get("matchLabels") != {NAME_LABEL: lname} or sel.get("matchExpressions"):
        errs.append(f"podSelector {sel}: want exactly {{{NAME_LABEL}: {lname}}}, every group "
                    f"(one object per {GROUP_LABEL} must be re-made at every scale-up)")
    if "Ingress" not in (spec.get("policyTypes") or []):
        errs.append("policyTypes lacks Ingress")
    same = [{"podSelector": {"matchLabels": {NAME_LABEL: lname}}}]

    def resolve(pe):
        """The port numbers a NetworkPolicyPort admits (None: every port)."""
        if "port" not in pe:
            return None
        p = pe["port"]
        if isinstance(p, str) and not p.isdigit():
            if p not in ports:
                errs.append(f"port name {p!r} is no containerPort name of the LWS's pods")
                return set()
            p = ports[p]
        p = int(p)
        return set(range(p, int(pe.get("endPort", p)) + 1))

    group_rule = False
    admitted = set()
    for i, rule in enumerate(spec.get("ingress") or []):
        if rule.get("from") == same and "ports" not in rule:
            group_rule = True
            continue
        if "ports" not in rule:
            errs.append(f"ingress[{i}] admits every port from {rule.get('from', 'anywhere')}")
            continue
        for pe in rule["ports"]:
            got = resolve(pe)
            if got is None:
                errs.append(f"ingress[{i}] admits every port from {rule.get('from', 'anywhere')}")
                continue
            if got & rdzv:
                errs.append(f"ingress[{i}] admits the rendezvous port {sorted(got & rdzv)} from "
                            f"{rule.get('from', 'anywhere')}: only the LWS's own pods may reach it")
            admitted |= got
    if not group_rule:
        errs.append(f"no rule admitting every port from {same} (the rendezvous, the engine's "
                    "init port and NCCL's ports, which NCCL picks at run time)")
    if not probe <= admitted:
        errs.append(f"the probe port {sorted(probe)} is not admitted from outside the LWS "
                    "(Prometheus scrapes /metrics there)")
    for svc in docs:
        if svc.get("kind") != "Service":
            continue
        if ((svc.get("spec") or {}).get("selector") or {}).get(NAME_LABEL) != lname:
            continue
        for sp in svc["spec"].get("ports") or []:
            tp = sp.get("targetPort", sp.get("port"))
            num = ports.get(tp, tp) if isinstance(tp, str) else tp
            if num not in admitted:
                errs.append(f"Service {svc['metadata']['name']}'s targetPort {tp!r} is not admitted")
    tap(not errs, f"{where}: one policy for every group; all ports from the LWS's pods, the "
        f"rendezvous from nowhere else; probes and the Service's port admitted", "\n".join(errs))


def overlay_dirs():
    if not os.path.isdir(OVERLAYS):
        return []
    return sorted(d for d in os.listdir(OVERLAYS)
                  if os.path.exists(os.path.join(OVERLAYS, d, "kustomization.yaml")))


def main():
    global crd_skip, opts_skip
    crd, crd_skip = load_crd() if PART != "rest" else (None, None)
    if PART == "crd" and crd is None:
        if os.environ.get("CI"):
            tap(False, "the LWS CRD is there to validate the manifests against", crd_skip)
            print(f"1..{n_tests}")
            return 1
        print(f"1..0 # SKIP {crd_skip}")
        return 0
    exe = os.environ.get("LWSINIT") if PART != "crd" else None
    opts = None
    opts_skip = "LWSINIT is not set"
    if exe:
        opts, why = lwsinit_options(exe)
        if opts is None:
            tap(False, f"{exe} --help", why)
            opts_skip = "lwsinit --help failed"
        else:
            tap(len(opts.meta) > 10 and "--probe-addr" in opts.meta,
                f"lwsinit --help lists the options ({len(opts.meta)})", "too few options parsed")
    flat = sorted(f for f in os.listdir(LWS_DIR) if f.endswith((".yaml", ".yml")))
    tap(not flat, f"no flat manifests beside the overlays in {os.path.relpath(LWS_DIR, REPO)}",
        f"{', '.join(flat)}: move them into an overlay (overlays/*/)")
    overlays = overlay_dirs()
    tap(bool(overlays), f"overlays found in {os.path.relpath(OVERLAYS, REPO)}: {', '.join(overlays)}")
    for ov in overlays:
        f = f"overlays/{ov}"
        try:
            docs = render(os.path.join(OVERLAYS, ov))
        except RenderError as e:
            tap(False, f"{f}: renders (resources, JSON 6902 patches, images)", str(e))
            continue
        tap(True, f"{f}: renders (resources, JSON 6902 patches, images): "
            + ", ".join(f"{d.get('kind')} {d.get('metadata', {}).get('name')}" for d in docs))
        lws_docs = [d for d in docs if d.get("kind") == "LeaderWorkerSet"]
        tap(bool(lws_docs), f"{f}: holds a LeaderWorkerSet")
        for d in docs:
            if d.get("kind") == "LeaderWorkerSet":
                agents = check_lws(f, d, crd, opts, exe if opts else None)
                if PART != "crd":
                    check_networkpolicy(f, docs, d, agents or {})
            elif d.get("kind") == "Service" and PART != "crd":
                check_service(f, d, lws_docs)
            elif d.get("kind") == "NetworkPolicy":
                pass  # checked with its LeaderWorkerSet
            elif PART != "crd":
                tap(True, f"{f}: {d.get('kind')} {d.get('metadata', {}).get('name')}",
                    skip="only LeaderWorkerSets, Services and NetworkPolicies are checked")
    print(f"1..{n_tests}")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
