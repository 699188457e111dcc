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
#      group in order: the leader exits 143 (its engine's SIGTERM), the
#      worker 143 (its engine's, once the leader's has exited), and
#      nothing is left running.
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

# The stages shared with podman_group.sh (1: the bare root, 2: the builder
# stage and the binaries, 3: the RUN-line root).
# shellcheck source=tests/manifests/rootfs_lib.sh
. "$(cd "$(dirname "$0")" && pwd)/rootfs_lib.sh"

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
lwsi_image_stage
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
# The ordered stop: the leader's stop is no loss, and each agent exits with
# its engine's status (sh's sleep, killed by SIGTERM: 143).
if [ "$lrc" -eq 143 ] && [ "$wrc" -eq 143 ]; then
  ok "SIGTERM to the leader stops the group in order in $ms ms: leader 143, worker 143"
else
  not_ok "SIGTERM to the leader stops the group in order: leader 143, worker 143" \
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
