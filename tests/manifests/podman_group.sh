#!/usr/bin/env bash
# The shipped images in a real container runtime (TAP): Debian's podman with
# runc builds container/Dockerfile and container/Dockerfile.sglang with no
# registry reachable, then runs groups of two containers with lwsinit as
# their ENTRYPOINT, as a runtime runs PID 1:
#
#   1. images: the debootstrap roots of rootfs_lib.sh are imported as local
#      base images (the builder stage's root, with its build packages, for
#      debian:bookworm; the root with the engine RUN line for the engine
#      image), and both Dockerfiles are built with --pull=never and
#      --network none: the recipe that ships, built by a real builder;
#   2. --network host: a standalone container exits with its engine's status;
#   3. a group of two on a private podman network (198.18.90.0/24, no DNS:
#      the leader's address is an IP literal): both engines start, each
#      container's health check (`lwsinit probe ready`) passes, `podman exec
#      ... lwsinit status` reaches the status socket, lwsinit is PID 1, and
#      `podman stop` of the leader (SIGTERM) stops the group in order:
#      leader 143, worker 143 (each its engine's status);
#   4. `podman stop -t 2` of a worker whose engine ignores SIGTERM, with
#      lwsinit's --grace longer than podman's timeout: podman's SIGKILL ends
#      it (137) and the leader exits 6;
#   5. `podman kill` (SIGKILL) of a leader: 137, and the worker exits 6;
#   6. nothing is left: no container, no network.
#
# podman is called as `podman --runtime runc --cgroup-manager cgroupfs` with
# explicit --ulimit values: crun refuses a hybrid cgroup layout, and the
# default rlimits are refused on such machines. Slow the first time (the
# rootfs stages, the imports: a few minutes), cached afterwards (the rootfs
# stages under LWSI_ROOTFS_CACHE, the images in podman's own storage).
#
# Environment: LWSI_REPO (repository root), LWSI_ROOTFS_CACHE (cache dir).
set -uo pipefail

# shellcheck source=tests/manifests/rootfs_lib.sh
. "$(cd "$(dirname "$0")" && pwd)/rootfs_lib.sh"

command -v podman >/dev/null || skip_all "podman is not installed (apt-get install podman runc)"
command -v runc >/dev/null || skip_all "runc is not installed (apt-get install runc)"
P=(podman --runtime runc --cgroup-manager cgroupfs)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
tag=$$
net=lwsi-test-$tag
subnet=198.18.90
names=()

# The images built here are this run's; the imported bases stay (cached).
remove_images() { "${P[@]}" rmi -f "${engine_img:-}" "${lwsinit_img:-}" >/dev/null 2>&1; }
cleanup() {
  for c in "${names[@]}"; do "${P[@]}" rm -f -t 0 "$c" >/dev/null 2>&1; done
  "${P[@]}" network rm -f "$net" >/dev/null 2>&1
  remove_images
  rm -rf "${work:-}"
}
trap cleanup EXIT
work=$(mktemp -d /tmp/lwsi-podman.XXXXXX)

# --- 1. images ------------------------------------------------------------------------
lwsi_image_stage

# A root directory as a local image, once per content key (the cache dir's
# name holds the key of the RUN line that made it).
import_root() { # DIR IMAGE [TAR-EXCLUDE...]
  local dir=$1 img=$2 t0
  shift 2
  if "${P[@]}" image exists "$img"; then
    ok "podman import $img (cached)"
    return 0
  fi
  t0=$(date +%s)
  if tar -C "$dir" --exclude=./.lwsi-complete "$@" -cf - . |
       "${P[@]}" import - "$img" >"$work/import.log" 2>&1; then
    ok "podman import $img ($(( $(date +%s) - t0 )) s)"
  else
    not_ok "podman import $img" "$(tail -n 20 "$work/import.log")"
    finish
  fi
}
builder_img=localhost/lwsi-builder:$(basename "$builder")
engine_base_img=localhost/lwsi-engine-base:$(basename "$image")
# The builder keeps container/build.sh's cJSON archive (out/deps: fetched
# once from Debian's source package) but not its build or its result.
import_root "$builder" "$builder_img" --exclude=./src --exclude=./out/build --exclude=./out/stage
import_root "$image" "$engine_base_img" --exclude=./usr/local/bin/lwsinit \
  --exclude=./usr/local/bin/lwsinit-gpucheck

build_image() { # LABEL LOG podman-build-args...
  local label=$1 log=$2 t0
  shift 2
  t0=$(date +%s)
  if "${P[@]}" build --pull=never --network none "${LIMITS[@]}" "$@" >"$log" 2>&1; then
    ok "$label ($(( $(date +%s) - t0 )) s)"
  else
    not_ok "$label" "$(tail -n 25 "$log")"
    finish
  fi
}
lwsinit_img=localhost/lwsinit:0.1.0-test$tag
engine_img=localhost/lwsi-sglang:test$tag
build_image "podman build container/Dockerfile, no registry: $lwsinit_img" "$work/build-lwsinit.log" \
  -f "$repo/container/Dockerfile" --ignorefile "$repo/container/Dockerfile.dockerignore" \
  --build-arg "DEBIAN_IMAGE=$builder_img" -t "$lwsinit_img" "$repo"
grep -E '^lwsinit' "$work/build-lwsinit.log" | diag
build_image "podman build container/Dockerfile.sglang on it: $engine_img" "$work/build-engine.log" \
  -f "$repo/container/Dockerfile.sglang" --build-arg "ENGINE_IMAGE=$engine_base_img" \
  --build-arg "LWSINIT_IMAGE=$lwsinit_img" -t "$engine_img" "$repo/container"

# --- 2. --network host: standalone ------------------------------------------------------
port() { echo $(( 20000 + RANDOM % 30000 )); }
out=$("${P[@]}" run --rm --network host --dns none "${LIMITS[@]}" "$engine_img" \
        --probe-addr "127.0.0.1:$(port)" -- sh -c 'echo "standalone pid $$"; exit 7' 2>&1)
rc=$?
if [ "$rc" -eq 7 ] && grep -q 'standalone pid' <<<"$out"; then
  ok "--network host: a standalone container exits with its engine's 7"
else
  not_ok "--network host: a standalone container exits with its engine's 7" "rc=$rc" "$out"
fi

# --- a group of two on a private network ----------------------------------------------
if ! "${P[@]}" network create --subnet "$subnet.0/24" --disable-dns "$net" >"$work/net.log" 2>&1; then
  not_ok "podman network create $net ($subnet.0/24)" "$(cat "$work/net.log")"
  finish
fi
ok "podman network create $net ($subnet.0/24)"
echo "podman-test-token-$RANDOM$RANDOM" >"$work/token"
chmod 0400 "$work/token"

# start NAME RANK IP LEADER-IP GRACE ENGINE-SCRIPT: a container of the group.
start() {
  local name=$1 rank=$2 ip=$3 lip=$4 grace=$5 script=$6
  names+=("$name")
  "${P[@]}" run -d --name "$name" --network "$net" --ip "$ip" --dns none "${LIMITS[@]}" \
    -v "$work/token:/etc/lwsinit/token:ro" \
    -e LWS_LEADER_ADDRESS="$lip" -e LWS_GROUP_SIZE=2 -e LWS_WORKER_INDEX="$rank" \
    --health-cmd 'lwsinit probe ready' --health-interval disable \
    "$engine_img" \
    --token-file /etc/lwsinit/token --revision podman-test \
    --heartbeat 200 --peer-timeout 2000 --grace "$grace" --rdzv-timeout 60 \
    -- sh -c "$script" >"$work/$name.id" 2>&1
}
engine='echo "engine {rank} of {size} started, leader {leader_ip}"; exec sleep 600'
# Every member must run the same COMMAND: rank 1's engine ignores SIGTERM
# (an ignored signal stays ignored across exec, so its sleeps do too).
stubborn='[ {rank} = 1 ] && trap "" TERM; echo "engine {rank} of {size} started"; while :; do sleep 1; done'

wait_logs() { # NAME TEXT: within 20 s
  for _ in $(seq 1 100); do
    "${P[@]}" logs "$1" 2>&1 | grep -q "$2" && return 0
    sleep 0.2
  done
  return 1
}
# exited NAME SECONDS: the container's exit code once it has exited, or "running".
exited() {
  local s
  for _ in $(seq 1 $(( $2 * 10 ))); do
    s=$("${P[@]}" inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$1" 2>/dev/null)
    case $s in exited*|stopped*) echo "${s#* }"; return 0 ;; esac
    sleep 0.1
  done
  echo running
}
group() { # L W LEADER-GRACE WORKER-GRACE LEADER-ENGINE WORKER-ENGINE; both started, or finish
  start "$1" 0 "$subnet.10" "$subnet.10" "$3" "$5" &&
    start "$2" 1 "$subnet.11" "$subnet.10" "$4" "$6"
  if wait_logs "$1" 'engine 0 of 2 started' && wait_logs "$2" 'engine 1 of 2 started'; then
    ok "a group of two containers forms, both engines start"
  else
    not_ok "a group of two containers forms, both engines start" "$(cat "$work/$1.id" "$work/$2.id")" \
      "leader:" "$("${P[@]}" logs "$1" 2>&1 | tail -n 5)" "worker:" "$("${P[@]}" logs "$2" 2>&1 | tail -n 5)"
    finish
  fi
}

# --- 3. health check, exec, PID 1, podman stop --------------------------------------------
L=lwsi-l1-$tag W=lwsi-w1-$tag
group "$L" "$W" 5 5 "$engine" "$engine"
healthy=1
for c in "$L" "$W"; do
  for _ in $(seq 1 50); do
    "${P[@]}" healthcheck run "$c" >/dev/null 2>&1 && continue 2
    sleep 0.2
  done
  healthy=0
done
if [ "$healthy" -eq 1 ]; then
  ok "podman healthcheck run (lwsinit probe ready): healthy on the leader and the worker"
else
  not_ok "podman healthcheck run (lwsinit probe ready) on both" \
    "$("${P[@]}" exec "$L" lwsinit status 2>&1 | head -n 20)"
fi
st=$("${P[@]}" exec "$L" lwsinit status 2>&1)
if grep -q 'phase' <<<"$st" && grep -qi 'running' <<<"$st"; then
  ok "podman exec ... lwsinit status reaches the leader's status socket: running"
  head -n 12 <<<"$st" | diag
else
  not_ok "podman exec ... lwsinit status reaches the leader's status socket" "$st"
fi
pid1=$("${P[@]}" exec "$W" cat /proc/1/cmdline 2>&1 | tr '\0' ' ')
if [[ $pid1 == /usr/local/bin/lwsinit* ]]; then
  ok "lwsinit is PID 1 of the worker container"
else
  not_ok "lwsinit is PID 1 of the worker container" "PID 1: $pid1"
fi
t0=$(date +%s%N)
"${P[@]}" stop -t 20 "$L" >/dev/null 2>&1 &
lrc=$(exited "$L" 30)
wrc=$(exited "$W" 30)
wait
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if [ "$lrc" = 143 ] && [ "$wrc" = 143 ]; then
  ok "podman stop of the leader stops the group in order in $ms ms: leader 143, worker 143"
else
  not_ok "podman stop of the leader, in order: leader 143, worker 143" "leader: $lrc, worker: $wrc" \
    "$("${P[@]}" logs "$W" 2>&1 | tail -n 3)"
fi
"${P[@]}" rm -f -t 0 "$L" "$W" >/dev/null 2>&1

# --- 4. podman stop past its timeout -------------------------------------------------------
L=lwsi-l2-$tag W=lwsi-w2-$tag
group "$L" "$W" 30 30 "$stubborn" "$stubborn"
t0=$(date +%s%N)
"${P[@]}" stop -t 2 "$W" >/dev/null 2>&1 &
wrc=$(exited "$W" 30)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
lrc=$(exited "$L" 30)
wait
if [ "$wrc" = 137 ] && [ "$ms" -ge 1800 ] && [ "$lrc" = 6 ]; then
  ok "podman stop -t 2 with --grace 30 and an engine that ignores SIGTERM: SIGKILL after $ms ms, 137; leader 6"
else
  not_ok "podman stop -t 2 past the engine's SIGTERM: worker 137 after 2 s, leader 6" \
    "worker: $wrc after $ms ms, leader: $lrc" "$("${P[@]}" logs "$L" 2>&1 | tail -n 3)"
fi
"${P[@]}" rm -f -t 0 "$L" "$W" >/dev/null 2>&1

# --- 5. podman kill ------------------------------------------------------------------------------
L=lwsi-l3-$tag W=lwsi-w3-$tag
group "$L" "$W" 5 5 "$engine" "$engine"
"${P[@]}" kill "$L" >/dev/null 2>&1
lrc=$(exited "$L" 30)
wrc=$(exited "$W" 30)
if [ "$lrc" = 137 ] && [ "$wrc" = 6 ]; then
  ok "podman kill of the leader: 137; the worker exits 6"
  "${P[@]}" logs "$W" 2>&1 | tail -n 1 | diag
else
  not_ok "podman kill of the leader: 137; the worker exits 6" "leader: $lrc, worker: $wrc" \
    "$("${P[@]}" logs "$W" 2>&1 | tail -n 3)"
fi

# --- 6. nothing left --------------------------------------------------------------------------------
for c in "${names[@]}"; do "${P[@]}" rm -f -t 0 "$c" >/dev/null 2>&1; done
names=()
"${P[@]}" network rm -f "$net" >/dev/null 2>&1
remove_images
left=$("${P[@]}" ps -a --format '{{.Names}}' | grep -- "-$tag\$")
if [ -z "$left" ] && ! "${P[@]}" network exists "$net"; then
  ok "nothing is left: no container, no network"
else
  not_ok "nothing is left: no container, no network" "$left"
fi
finish
