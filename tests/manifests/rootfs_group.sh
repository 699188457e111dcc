#!/usr/bin/env bash
# The drop-in claim of container/README.md, without a container engine (TAP):
#
#   1. a bare Debian bookworm root filesystem (debootstrap --variant=minbase,
#      from the mirror apt uses here) stands in for debian:bookworm and for
#      the engine image's base;
#   2. the shipped binaries are built as container/Dockerfile's builder stage
#      does: its RUN line (the build packages) in a copy of that root, then
#      container/build.sh on a copy of the source;
#   3. the binaries are copied in (the Dockerfiles' COPY --from) and the RUN
#      line of container/Dockerfile.sglang, verbatim, runs in it (chroot);
#   4. a group of two agents runs in that root, each as PID 1 of its own PID
#      namespace (unshare -fp --mount-proc + chroot), with the token and the
#      revision, on loopback, with `sh` as the engine: both engines start,
#      the leader answers /readyz 200, and SIGTERM to the leader stops the
#      group: the leader exits 143 (its engine's SIGTERM), the worker 6
#      (a member left), and nothing is left running.
#
# Also: in the bare root without the RUN line (libc only), lwsinit runs
# standalone and exits with its child's status.
#
# Slow the first time (debootstrap, apt: 2-4 minutes), cached afterwards under
# LWSI_ROOTFS_CACHE (default: build-rootfs/ in the repository). Needs root,
# debootstrap, chroot, unshare; without them, or without the mirror, it skips.
#
# Environment: LWSI_REPO (repository root), LWSI_ROOTFS_CACHE (cache dir).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=${LWSI_REPO:-$(cd "$here/../.." && pwd)}
cache=${LWSI_ROOTFS_CACHE:-$repo/build-rootfs}
suite=bookworm

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"
  shift
  for l in "$@"; do printf '%s\n' "$l" | sed 's/^/#   /'; done
}
skip_all() { echo "1..0 # SKIP $1"; exit 0; }
diag() { sed 's/^/# /'; }
finish() { echo "1..$n"; [ "$failed" -eq 0 ]; exit $?; }

[ "$(id -u)" -eq 0 ] || skip_all "needs root (debootstrap, chroot, unshare)"
for t in debootstrap chroot unshare python3; do
  command -v "$t" >/dev/null || skip_all "$t is not installed (apt-get install debootstrap)"
done
[ -d /usr/share/keyrings ] || skip_all "no /usr/share/keyrings (debian-archive-keyring)"

# The mirror apt is configured with here.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
             /etc/apt/sources.list.d/*.sources 2>/dev/null |
         grep -E '^(deb |URIs:)' | grep -oE 'https?://[^ ]*debian/?' | grep -v security | head -n1)
[ -n "$mirror" ] || skip_all "apt has no Debian mirror configured (debootstrap needs one)"
fetch() { # URL: prints the body
  python3 - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(f"HTTP {e.code}\n{e.read().decode()}")
    sys.exit(1)
PY
}
if ! fetch "${mirror%/}/dists/$suite/Release" >/dev/null 2>&1; then
  skip_all "the Debian mirror $mirror is not reachable (debootstrap needs it)"
fi
echo "# mirror: $mirror; cache: $cache"
mkdir -p "$cache"

# A cached stage: DIR is made once, by `MAKE [ARG...] DIR.tmp` (its output in
# LOG), marked complete (DIR.tmp/.lwsi-complete) and only then renamed to DIR;
# a later run finds the marker and reuses DIR, and a stage left incomplete is
# made again from scratch. One that fails ends the run with LOG's last lines.
cached_stage() { # DIR LOG LABEL MAKE [ARG...]
  local dir=$1 log=$2 label=$3 t0
  shift 3
  if [ -f "$dir/.lwsi-complete" ]; then
    ok "$label (cached)"
    return 0
  fi
  rm -rf "$dir" "$dir.tmp"
  t0=$(date +%s)
  if "$@" "$dir.tmp" >"$log" 2>&1; then
    touch "$dir.tmp/.lwsi-complete"
    mv "$dir.tmp" "$dir"
    ok "$label ($(( $(date +%s) - t0 )) s)"
  else
    not_ok "$label" "$(tail -n 20 "$log")"
    rm -rf "$dir.tmp"
    finish
  fi
}

# In a private mount namespace with /proc: what a container's RUN line sees.
in_root() { # DIR CMD...
  local dir=$1; shift
  unshare --mount --fork sh -c 'mount -t proc proc "$1/proc" && shift && exec chroot "$@"' \
    sh "$dir" "$dir" "$@"
}

# --- 1. a bare bookworm root ---------------------------------------------------
base=$cache/base-$suite
# shellcheck disable=SC2317  # called by cached_stage
debootstrap_into() { debootstrap --variant=minbase "$suite" "$1" "$mirror"; }
cached_stage "$base" "$cache/debootstrap.log" "debootstrap --variant=minbase $suite" \
  debootstrap_into

# A copy of the bare root (without its mark) with a Dockerfile's RUN line run
# in it, as `docker build` does.
# shellcheck disable=SC2317  # called by cached_stage
run_in_copy() { # RUN-LINE DIR
  cp -a "$base" "$2"
  rm -f "$2/.lwsi-complete"
  cp -L /etc/resolv.conf "$2/etc/resolv.conf"
  in_root "$2" sh -c "$1"
}

# --- 2. the shipped binaries, built as container/Dockerfile's builder stage -----
# The stage's RUN line (its build packages), verbatim, in a copy of the bare
# root; then container/build.sh on a copy of the source, as `COPY . .` and
# `RUN container/build.sh /out` do.
run_after() { # FILE REGEX: the first RUN instruction after a line matching REGEX
  awk -v re="$2" '$0 ~ re {on=1; next}
       on && /^RUN / {sub(/^RUN /, ""); grab=1}
       grab {line = line $0 "\n"; if ($0 !~ /\\$/) {print line; exit}}' "$1"
}
run_builder=$(run_after "$repo/container/Dockerfile" '^FROM .* AS builder')
key=$(printf '%s' "$run_builder" | sha256sum | cut -c1-16)
builder=$cache/builder-$suite-$key
cached_stage "$builder" "$cache/builder.log" \
  "the Dockerfile's builder stage: its RUN line, in the bare root" run_in_copy "$run_builder"
rm -rf "$builder/src"
mkdir -p "$builder/src"
(cd "$repo" && tar --exclude='./build*' --exclude='./.git' -cf - .) | tar -xf - -C "$builder/src"
cp -L /etc/resolv.conf "$builder/etc/resolv.conf"
log=$cache/build.log
if in_root "$builder" sh -c 'cd /src && container/build.sh /out' >"$log" 2>&1; then
  ok "container/build.sh in the builder root: libc only, glibc <= 2.34"
  grep -E '^lwsinit' "$log" | diag
else
  not_ok "container/build.sh in the builder root: libc only, glibc <= 2.34" "$(tail -n 20 "$log")"
  finish
fi
bin=$builder/out/stage/usr/local/bin

# The binaries alone, in the bare root (no RUN line): libc only.
install -m 0755 "$bin/lwsinit" "$bin/lwsinit-gpucheck" "$base/usr/local/bin/"
out=$(in_root "$base" /usr/local/bin/lwsinit --probe-addr 127.0.0.1:17479 \
        --status-socket /tmp/s.sock -- sh -c 'echo standalone engine; exit 7' 2>&1)
rc=$?
if [ "$rc" -eq 7 ] && grep -q 'standalone engine' <<<"$out"; then
  ok "bare minbase root: lwsinit runs standalone, exits with its child's 7"
else
  not_ok "bare minbase root: lwsinit runs standalone, exits with its child's 7" "rc=$rc" "$out"
fi
out=$(in_root "$base" /usr/local/bin/lwsinit-gpucheck libs 2>&1)
rc=$?
# No CUDA in the root: it must say so, not fail to start (127 would be a loader error).
if [ "$rc" -ne 127 ] && [ "$rc" -ne 126 ] && [ -n "$out" ]; then
  ok "bare minbase root: lwsinit-gpucheck starts (exit $rc without CUDA)"
else
  not_ok "bare minbase root: lwsinit-gpucheck starts" "rc=$rc" "$out"
fi

# --- 3. the Dockerfiles' RUN line -------------------------------------------------
# The RUN instruction after the marker, with its continuation lines.
run_sglang=$(run_after "$repo/container/Dockerfile.sglang" '^# lwsinit-run-line')
run_vllm=$(run_after "$repo/container/Dockerfile.vllm" '^# lwsinit-run-line')
if [ -n "$run_sglang" ] && [ "$run_sglang" = "$run_vllm" ]; then
  ok "Dockerfile.sglang and Dockerfile.vllm have the same RUN line"
else
  not_ok "Dockerfile.sglang and Dockerfile.vllm have the same RUN line" "$run_sglang" "---" "$run_vllm"
fi
key=$(printf '%s' "$run_sglang" | sha256sum | cut -c1-16)
image=$cache/image-$suite-$key
cached_stage "$image" "$cache/run-line.log" "the RUN line, in the bare root" \
  run_in_copy "$run_sglang"
grep -E '^(Setting up|Note, selecting)' "$cache/run-line.log" 2>/dev/null | diag
install -m 0755 "$bin/lwsinit" "$bin/lwsinit-gpucheck" "$image/usr/local/bin/"
in_root "$image" sh -c "ldconfig -p | grep -E 'libcrypto\.so\.3 |libcurl\.so\.4 '" | diag

# --- 4. a group of two ----------------------------------------------------------------
work=$(mktemp -d /tmp/lwsi-rootfs.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

port() { echo $(( 20000 + RANDOM % 30000 )); }
rdzv=$(port); probe0=$(port); probe1=$(port)
mkdir -p "$image/etc/lwsinit"
echo "rootfs-test-token-$RANDOM$RANDOM" > "$image/etc/lwsinit/token"
chmod 0400 "$image/etc/lwsinit/token"

agent() { # RANK PROBE-PORT; the background job's pid is unshare's
  exec unshare --fork --pid --mount-proc="$image/proc" \
    chroot "$image" /usr/local/bin/lwsinit \
      --leader 127.0.0.1 --size 2 --rank "$1" --rdzv-port "$rdzv" \
      --probe-addr "127.0.0.1:$2" --status-socket "/run/lwsinit-$1.sock" \
      --token-file /etc/lwsinit/token --revision rootfs-test \
      --heartbeat 200 --peer-timeout 2000 --grace 10 --rdzv-timeout 60 \
      --termination-log "/tmp/termlog-$1" \
      -- sh -c 'echo "engine {rank} of {size} started, leader {leader_ip}, pid $$"; exec sleep 600'
}
agent 1 "$probe1" >"$work/w.out" 2>"$work/w.err" &
pids+=($!)
wpid=$!
sleep 0.3
agent 0 "$probe0" >"$work/l.out" 2>"$work/l.err" &
pids+=($!)
lpid=$!

started=0
for _ in $(seq 1 150); do
  if grep -q 'engine 0 of 2 started' "$work/l.out" && grep -q 'engine 1 of 2 started' "$work/w.out"; then
    started=1
    break
  fi
  sleep 0.2
done
if [ "$started" -eq 1 ]; then
  ok "both engines start: $(head -n1 "$work/l.out"); $(head -n1 "$work/w.out")"
else
  not_ok "both engines start" "leader:" "$(cat "$work/l.out" "$work/l.err")" "worker:" \
    "$(cat "$work/w.out" "$work/w.err")"
  finish
fi

ready=0
for _ in $(seq 1 50); do
  if "$bin/lwsinit" probe ready --addr "127.0.0.1:$probe0" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ "$ready" -eq 1 ]; then
  ok "the leader's /readyz answers 200"
else
  not_ok "the leader's /readyz answers 200" "$(fetch "http://127.0.0.1:$probe0/readyz?verbose" 2>&1)"
fi
st=$(in_root "$image" /usr/local/bin/lwsinit status --socket /run/lwsinit-0.sock 2>&1)
if grep -qi running <<<"$st"; then
  ok "lwsinit status on the leader: running"
  head -n 12 <<<"$st" | diag
else
  not_ok "lwsinit status on the leader: running" "$st"
fi
# lwsinit is PID 1 of its namespace: the child of unshare's fork.
lw=$(ps -o pid= --ppid "$lpid" | tr -d ' ' | head -n1)
if [ -n "$lw" ] && [ "$(awk '/^NSpid:/ {print $NF}' "/proc/$lw/status")" = 1 ]; then
  ok "the leader's lwsinit is PID 1 of its PID namespace"
else
  not_ok "the leader's lwsinit is PID 1 of its PID namespace" "unshare $lpid, child '$lw'"
fi

# Stop: SIGTERM to the leader, as the kubelet would.
[ -n "$lw" ] && kill -TERM "$lw"
t0=$(date +%s%N)
for _ in $(seq 1 300); do   # 30 s: --grace is 10
  kill -0 "$lpid" 2>/dev/null || kill -0 "$wpid" 2>/dev/null || break
  sleep 0.1
done
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && echo "# pid $p still running after 30 s: SIGKILL"; done
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
wait "$lpid"; lrc=$?
wait "$wpid"; wrc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
pids=()
if [ "$lrc" -eq 143 ] && [ "$wrc" -eq 6 ]; then
  ok "SIGTERM to the leader stops the group in $ms ms: leader 143, worker 6"
else
  not_ok "SIGTERM to the leader stops the group: leader 143, worker 6" \
    "leader rc=$lrc worker rc=$wrc" "leader:" "$(tail -n 5 "$work/l.err")" "worker:" "$(tail -n 5 "$work/w.err")"
fi
tail -n 2 "$work/w.err" | diag
# Every process whose root is the image (the chroot) must be gone.
left=$(for r in /proc/[0-9]*/root; do
         [ "$(readlink "$r" 2>/dev/null)" = "$image" ] && echo "${r%/root}: $(tr '\0' ' ' <"${r%/root}/cmdline")"
       done)
if [ -z "$left" ]; then
  ok "nothing is left running"
else
  not_ok "nothing is left running" "$left"
fi
finish
