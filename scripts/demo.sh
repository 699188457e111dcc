#!/usr/bin/env bash
# Installs what is needed, builds, and runs the embedded default: lwsinit as
# a real PID 1 (a new PID namespace) supervising a stand-in engine, then a
# SIGTERM that stops it within the grace period.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build >/dev/null
bin=$PWD/build/agent/lwsinit

echo "== lwsinit $($bin --version | cut -d' ' -f2): standalone, as PID 1, with a stand-in engine"
unshare -fp --mount-proc "$bin" --grace 2 -- \
  sh -c 'echo "engine: rank $LWSINIT_RANK of $LWSINIT_SIZE, leader $LWSINIT_LEADER_IP, pid $$"; exit 3' || \
  echo "== exit status $? (the engine's own)"

echo "== an engine that ignores SIGTERM: stopped with SIGKILL after --grace 1"
unshare -fp --mount-proc "$bin" --grace 1 -- sh -c 'trap "" TERM; echo "engine: ignoring SIGTERM"; sleep 60 & wait; while :; do sleep 1; done' &
pid=$!
for _ in $(seq 50); do pgrep -P "$pid" >/dev/null && break; sleep 0.1; done
sleep 0.5
kill -TERM "$(pgrep -P "$pid" | head -1)"
wait "$pid" && echo "== exit status 0" || echo "== exit status $? (128+9: killed after the grace period)"
