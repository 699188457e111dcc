#!/usr/bin/env bash
# The GPU check and the GPU-free wait on a real GPU machine: what
# tests/gpu/test_gpucheck.py, test_gpu_group.py and the restart tests do with
# the fake library, here with the real CUDA runtime, NCCL and NVML.
#
#   tests/gpu/run_real.sh             run every step (on the GPU machine)
#   tests/gpu/run_real.sh --prepare   build lwsinit here, for a GPU machine
#                                     without libuv, c-ares and cJSON
#
# Self-contained: builds lwsinit-gpucheck and gpuhold (a process that holds
# GPU memory, tests/gpu/gpuhold.c) with cc alone (libc and libdl: no CUDA
# toolkit needed to build; the CUDA runtime, NCCL and NVML are dlopen'd).
# lwsinit itself needs libuv, c-ares and cJSON: it is taken from $LWSINIT,
# else from build-gpureal/stage/usr/local/bin/lwsinit (what --prepare builds
# with container/build.sh: the shipped binary, libc only), else its steps
# are skipped (SKIP, never PASS). Each step runs under a hard timeout, and
# the whole run within TOTAL_S:
#   libs       which libcudart and libnccl the check finds
#   abi        include/lwsinit/gpu_abi.h against the installed headers (if any)
#   cuda       every GPU alone (CUDA_VISIBLE_DEVICES=i), then all together
#   nccl       a group of one node over all GPUs, by hand and with --proto
#   2 nodes    (2+ GPUs) the GPUs split in two processes, the NCCL id carried
#              from node 0's stdout to node 1's stdin as the agents will
#   failures   --gpus one too many; an allocation too big; a leader whose
#              peer never comes (real ncclCommAbort at the deadline)
#   gpu-free   NVML's process list against a real process holding GPU
#              memory: free before it starts; busy while it holds memory
#              (by --pgid and by --pids, naming its pid); not blocked by a
#              process of another group; free within a bound after SIGKILL;
#              free only after a holder that takes 2 s to exit after SIGTERM
#   lwsinit    standalone agents: --gpu-check cuda and nccl (one rank) with
#              --node-check fail --gpus 1, the engine reading the agent's
#              status; the node check failing for one GPU too many (exit 5);
#              a restart in place (--on-failure restart --gpus 1) whose old
#              engine fails leaving a GPU-holding process in its group: the
#              agent kills the group and waits until NVML no longer lists it
#              before the relaunch (epoch 1)
# It prints a table of results and timings and leaves under $OUT:
# summary.txt (the table), results.json (one object per step), run.log (all
# output) and logs.tar.gz (every step's log, the agents' status documents).
# Exit 0 when every step that ran gave what it should.
#
# Environment: CC (cc), BYTES (268435456: the check's size), HOLD_BYTES
# (1073741824: what gpuhold holds), ITERS (5), TOTAL_S (480), OUT (a new temp
# dir), LWSINIT (the lwsinit binary), NODE_CHECK (fail; warn where the
# machine has no /dev/nvidiaN, as with the fake library), PROBE_PORT (27471),
# LWSINIT_CUDART / LWSINIT_NCCL / LWSINIT_NVML (library paths, else searched).
# FAKEGPU_NVML_PIDS: set when LWSINIT_NVML is tests/gpu/libfakegpu.so, whose
# NVML lists the pids in that file; the script then keeps it as the driver
# would (the pids of the live gpuhold processes), so that every step runs
# without a GPU. That is how this script was tried; see docs/gpucheck.md.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "${1:-}" = "--prepare" ]; then
  # The shipped build (libuv, c-ares and cJSON static; glibc 2.34), into a
  # folder the repository ignores (/build*/), small enough to carry.
  "$root/container/build.sh" "$root/build-gpureal" || exit 1
  echo "prepared: $root/build-gpureal/stage/usr/local/bin/lwsinit"
  echo "carry build-gpureal/stage to the GPU machine; run_real.sh finds it there"
  exit 0
fi
if [ $# -gt 0 ]; then
  echo "usage: $0 [--prepare]" >&2
  exit 2
fi

out=${OUT:-$(mktemp -d /tmp/gpucheck.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/gpureal.XXXXXX)
logs=$work/logs
mkdir -p "$logs" "$work/run"
exec > >(tee "$out/run.log") 2>&1
tee_pid=$!

CC=${CC:-cc}
BYTES=${BYTES:-268435456}
HOLD_BYTES=${HOLD_BYTES:-1073741824}
ITERS=${ITERS:-5}
TOTAL_S=${TOTAL_S:-480}
PROBE_PORT=${PROBE_PORT:-27471}
bin="$work/lwsinit-gpucheck"
hold="$work/gpuhold"
lwsinit=${LWSINIT:-$root/build-gpureal/stage/usr/local/bin/lwsinit}
ndev=$(find /dev -maxdepth 1 -name 'nvidia[0-9]*' 2>/dev/null | wc -l)
if [ -z "${NODE_CHECK:-}" ]; then
  NODE_CHECK=fail
  [ "$ndev" -gt 0 ] || NODE_CHECK=warn
fi

# The toolkit's libraries, where the dynamic linker's cache lacks them.
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/*/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
# A python3 in a virtual environment (the machine's PyTorch, with NCCL and
# the CUDA runtime as wheels) counts as activated, as in an engine's image:
# the check searches $VIRTUAL_ENV's site-packages.
if [ -z "${VIRTUAL_ENV:-}" ] && command -v python3 >/dev/null; then
  venv=$(python3 -c 'import sys; print(sys.prefix if sys.prefix != sys.base_prefix else "")' \
    2>/dev/null)
  [ -z "$venv" ] || export VIRTUAL_ENV=$venv
fi

ms() { echo $(( $(date +%s%N) / 1000000 )); }
t_start=$(ms)
left_s() { echo $(( TOTAL_S - ($(ms) - t_start) / 1000 )); }

bg_pids=()
emulator=""
cleanup() {
  local p
  for p in "${bg_pids[@]}" $emulator; do
    kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  bg_pids=()
  emulator=""
  return 0
}
# At exit: what is left in the background, then run.log complete (tee
# writes until its input closes).
finish() {
  cleanup
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null
}
trap finish EXIT

results=()
json=()
failures=0
skips=0
# record NAME EXPECTED GOT WALL_MS [NOTE]
record() {
  local verdict=PASS note=${5:-}
  [ "$2" = "$3" ] || { verdict=FAIL; failures=$((failures + 1)); }
  results+=("$(printf '%-44s expect %-3s got %-3s %8s ms  %s%s' "$1" "$2" "$3" "$4" "$verdict" \
    "${note:+  ($note)}")")
  json+=("$(printf '{"step":"%s","expect":"%s","got":"%s","ms":%s,"verdict":"%s","note":"%s"}' \
    "$1" "$2" "$3" "$4" "$verdict" "${note//[\"\\]/}")")
}
# skip NAME WHY
skip() {
  skips=$((skips + 1))
  results+=("$(printf '%-44s %-27s %8s     SKIP  (%s)' "$1" "" "-" "$2")")
  json+=("$(printf '{"step":"%s","verdict":"SKIP","note":"%s"}' "$1" "${2//[\"\\]/}")")
  echo "SKIP $1: $2"
}
# verify NAME CONDITION_RC NOTE: a check of what a step printed or wrote.
verify() {
  if [ "$2" = 0 ]; then record "$1" yes yes 0 "$3"; else record "$1" yes no 0 "$3"; fi
}
# The log file of a step: its name made a file name.
logof() { echo "$logs/$(echo "$1" | tr -c 'A-Za-z0-9._\n-' '_').log"; }

# step NAME EXPECTED_RC TIMEOUT_S COMMAND...: runs it, output to the
# terminal and to its log; skipped when the run's time is nearly spent.
step() {
  local name=$1 expect=$2 limit=$3 left
  shift 3
  left=$(left_s)
  if [ "$left" -lt 15 ]; then
    skip "$name" "TOTAL_S=$TOTAL_S nearly spent"
    return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo
  echo "=== $name: $*"
  local t0 rc log
  log=$(logof "$name")
  t0=$(ms)
  timeout -k 5 "$limit" "$@" > >(tee "$log") 2>&1
  rc=$?
  sleep 0.1 # let tee finish
  record "$name" "$expect" "$rc" $(( $(ms) - t0 ))
}

# The pids of the live processes a file *.pid under $work names.
live_holders() {
  local f p st
  for f in "$work"/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null) || continue
    st=$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$p/stat" 2>/dev/null)
    if [ -n "$st" ] && [ "$st" != Z ]; then echo "$p"; fi
  done
  return 0
}

# The fake NVML's list, kept as the driver keeps its own: the processes
# holding memory, and nothing once they are gone.
if [ -n "${FAKEGPU_NVML_PIDS:-}" ]; then
  echo "FAKEGPU_NVML_PIDS=$FAKEGPU_NVML_PIDS: emulating the driver's process list (no real GPU)"
  (
    while :; do
      live_holders > "$FAKEGPU_NVML_PIDS.tmp" && mv -f "$FAKEGPU_NVML_PIDS.tmp" "$FAKEGPU_NVML_PIDS"
      sleep 0.05
    done
  ) &
  emulator=$!
fi

build() {
  "$CC" -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes \
    -Wmissing-prototypes -D_GNU_SOURCE -I"$root/include" "$@" -ldl
}
echo "=== build: $CC -> $bin, $hold"
t0=$(ms)
if ! build "$root/gpucheck/gpucheck.c" "$root/gpucheck/gpufree.c" "$root/gpucheck/parse.c" \
    "$root/common/fdio.c" "$root/common/text.c" -o "$bin" ||
   ! build "$here/gpuhold.c" -o "$hold"; then
  echo "build failed"
  exit 1
fi
record build 0 0 $(( $(ms) - t0 ))

command -v nvidia-smi >/dev/null && nvidia-smi -L
echo "device nodes: $ndev /dev/nvidiaN; node check: $NODE_CHECK; VIRTUAL_ENV=${VIRTUAL_ENV:-}"
echo "lwsinit: $lwsinit"

step libs 0 60 "$bin" libs
cudart=$(sed -n 's/^cuda runtime: \(.*\) (runtime.*/\1/p' "$(logof libs)")
[ -n "$(sed -n 's/^nccl: \(.*\) (version.*/\1/p' "$(logof libs)")" ] ||
  echo "(no NCCL found: the nccl steps will exit 3; set LWSINIT_NCCL)"

for inc in /usr/local/cuda/include /usr/include; do
  if [ -f "$inc/cuda_runtime_api.h" ] && [ -f "$inc/nccl.h" ]; then
    t0=$(ms)
    if "$CC" -std=gnu11 -Wall -Wextra -Werror -isystem "$inc" -I"$root/include" \
        "$here/test_gpu_abi.c" -o "$work/test_gpu_abi" && "$work/test_gpu_abi"; then
      record "abi ($inc)" 0 0 $(( $(ms) - t0 ))
    else
      record "abi ($inc)" 0 1 $(( $(ms) - t0 ))
    fi
    break
  fi
done

# How many GPUs: from the check itself, the one source that counts.
echo
echo "=== count: $bin cuda --bytes 4096 --proto"
timeout -k 5 120 "$bin" cuda --bytes 4096 --proto >"$logs/count.log" 2>&1
ngpu=$(sed -n 's/.*"event":"result".*"gpus_visible":\([0-9]*\).*/\1/p' "$logs/count.log")
ngpu=${ngpu:-0}
tail -n 1 "$logs/count.log"
echo "GPUs visible: $ngpu"
if [ "$ngpu" -lt 1 ]; then
  echo "no GPU: stopping after the library steps"
  record "GPUs visible" ">0" 0 0
fi

if [ "$ngpu" -ge 1 ]; then
  for ((i = 0; i < ngpu; i++)); do
    step "cuda gpu$i" 0 120 env CUDA_VISIBLE_DEVICES=$i "$bin" cuda --gpus 1 --bytes "$BYTES"
  done
  step "cuda all" 0 300 "$bin" cuda --gpus "$ngpu" --bytes "$BYTES"
  step "nccl 1 node" 0 300 "$bin" nccl --gpus "$ngpu" --bytes "$BYTES" --iters "$ITERS"
  step "nccl 1 node --proto" 0 300 "$bin" nccl --proto --gpus "$ngpu" --bytes "$BYTES" \
    --iters "$ITERS"
  if command -v python3 >/dev/null; then
    python3 - "$(logof "nccl 1 node --proto")" <<'EOF' || record "proto lines are JSON" 0 1 0
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
evs = [json.loads(l) for l in lines]
res = [e for e in evs if e.get("event") == "result"][-1]
print("result: ok=%s busbw=%s GB/s allreduce=%s ms init=%s ms total=%s ms" % (
    res["ok"], res["busbw_gbps"], res["allreduce_ms"], res["init_ms"], res["time_ms"]))
sys.exit(0 if res["ok"] else 1)
EOF
  fi

  if [ "$ngpu" -ge 2 ]; then
    # Two "nodes" on this machine, the id carried as the agents will.
    half=$((ngpu / 2))
    a=$(seq -s, 0 $((half - 1)))
    b=$(seq -s, "$half" $((2 * half - 1)))
    fifo="$work/id.fifo"
    rm -f "$fifo" && mkfifo "$fifo"
    echo
    echo "=== nccl 2 nodes: GPUs $a | $b"
    t0=$(ms)
    CUDA_VISIBLE_DEVICES=$a timeout -k 5 300 "$bin" nccl --proto --nodes 2 --node-rank 0 \
      --gpus "$half" --bytes "$BYTES" --iters "$ITERS" </dev/null >"$logs/node0.jsonl" \
      2>"$logs/node0.err" &
    p0=$!
    CUDA_VISIBLE_DEVICES=$b timeout -k 5 300 "$bin" nccl --proto --nodes 2 --node-rank 1 \
      --gpus "$half" --bytes "$BYTES" --iters "$ITERS" <"$fifo" >"$logs/node1.jsonl" \
      2>"$logs/node1.err" &
    p1=$!
    exec 3>"$fifo"
    id=""
    for ((k = 0; k < 1200 && ${#id} != 256; k++)); do
      id=$(sed -n 's/.*"event":"nccl_id","id":"\([0-9a-f]*\)".*/\1/p' "$logs/node0.jsonl")
      [ ${#id} = 256 ] || sleep 0.1
    done
    printf '{"nccl_id":"%s"}\n' "$id" >&3
    exec 3>&-
    wait "$p0"; rc0=$?
    wait "$p1"; rc1=$?
    tail -n 1 "$logs/node0.jsonl"; tail -n 1 "$logs/node1.jsonl"
    wall=$(( $(ms) - t0 ))
    record "nccl 2 nodes: node 0" 0 "$rc0" "$wall"
    record "nccl 2 nodes: node 1" 0 "$rc1" "$wall"
  fi

  step "fail: --gpus $((ngpu + 1))" 1 120 "$bin" cuda --gpus $((ngpu + 1)) --bytes 4096
  step "fail: 1 TiB allocation" 1 120 env CUDA_VISIBLE_DEVICES=0 "$bin" cuda --gpus 1 \
    --bytes 1099511627776
  # A leader whose other node never comes: NCCL init must be aborted at
  # the 5 s deadline, and the abort must not hang.
  step "fail: peer never joins (5 s)" 1 60 env CUDA_VISIBLE_DEVICES=0 "$bin" nccl --proto \
    --nodes 2 --node-rank 0 --gpus 1 --bytes 4096 --timeout-ms 5000
fi

# --- gpu-free: NVML's list against a real process holding GPU memory -------

holder_pid=""
holder_pgid=""
# hold_start NAME TERM_DELAY_MS: a gpuhold in a process group of its own
# (setsid execs it: a background job of this script leads no group), up
# once it holds its memory. Returns 1 when it did not within 60 s.
hold_start() {
  local pidfile="$work/$1.pid" k
  rm -f "$pidfile"
  setsid "$hold" "$cudart" "$HOLD_BYTES" "$pidfile" "$2" >"$logs/$1.out" 2>&1 &
  bg_pids+=($!)
  disown # its end, a kill, is the point: no job report
  holder_pid=""
  for ((k = 0; k < 600; k++)); do
    if [ -s "$pidfile" ]; then
      holder_pid=$(cat "$pidfile")
      break
    fi
    kill -0 "${bg_pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$holder_pid" ]; then
    cat "$logs/$1.out"
    return 1
  fi
  holder_pgid=$(sed -n 's/.*) . [0-9]* \([0-9]*\) .*/\1/p' "/proc/$holder_pid/stat")
  # NVML lists a process once its context exists; cudaMalloc and the
  # synchronize made it, before the pid file was written.
  echo "gpuhold: pid $holder_pid (process group $holder_pgid) holds $HOLD_BYTES bytes"
}

# gpu_free_bg NAME ARGS...: gpu-free in the background; $gf_pid, $gf_log.
gpu_free_bg() {
  gf_log=$(logof "$1")
  shift
  "$bin" gpu-free --proto --interval-ms 50 "$@" >"$gf_log" 2>&1 &
  gf_pid=$!
}

if [ "$ngpu" -lt 1 ] || [ -z "$cudart" ]; then
  skip "gpu-free" "no GPU or no CUDA runtime"
else
  step "gpu-free: free before any holder" 0 30 "$bin" gpu-free --timeout-ms 5000
  if ! hold_start hold-a 0; then
    record "gpuhold A holds GPU memory" 0 1 0
  else
    step "gpu-free: busy by --pgid (3 s)" 1 30 "$bin" gpu-free --pgid "$holder_pgid" \
      --timeout-ms 3000
    grep -q "still holds pid $holder_pid of the old engine" "$(logof "gpu-free: busy by --pgid (3 s)")"
    verify "gpu-free: names the holder's pid" $? "pid $holder_pid"
    step "gpu-free: busy by --pids (--proto)" 1 30 "$bin" gpu-free --proto --pids "$holder_pid" \
      --timeout-ms 2000
    grep -q '"event":"result","ok":false,"mode":"gpu-free"' \
      "$(logof "gpu-free: busy by --pids (--proto)")"
    verify "gpu-free: the result line says ok false" $? ""
    # A live process of this PID namespace outside the old group does not
    # block (gpucheck/gpufree.c): this script's own group is not the holder's.
    step "gpu-free: another group's holder does not block" 0 30 "$bin" gpu-free \
      --pgid "$(sed -n 's/.*) . [0-9]* \([0-9]*\) .*/\1/p' /proc/$$/stat)" --timeout-ms 5000
    # Free within a bound after SIGKILL: the driver tears the context down
    # as the process exits.
    gpu_free_bg "gpu-free: free after SIGKILL" --pgid "$holder_pgid" --timeout-ms 30000
    sleep 0.5
    kill -0 "$gf_pid" 2>/dev/null
    verify "gpu-free: still waiting while the holder lives" $? "0.5 s after its start"
    t0=$(ms)
    kill -KILL -- "-$holder_pgid"
    wait "$gf_pid"
    rc=$?
    record "gpu-free: free after SIGKILL" 0 "$rc" $(( $(ms) - t0 )) "ms from the SIGKILL to free"
    cat "$gf_log"
  fi
  if ! hold_start hold-b 2000; then
    record "gpuhold B holds GPU memory" 0 1 0
  else
    # A holder that takes 2 s to exit after SIGTERM, as an engine tearing
    # down: free only once it is gone.
    gpu_free_bg "gpu-free: outlasts a 2 s teardown" --pgid "$holder_pgid" --timeout-ms 30000
    sleep 0.3
    t0=$(ms)
    kill -TERM -- "-$holder_pgid"
    wait "$gf_pid"
    rc=$?
    waited=$(( $(ms) - t0 ))
    record "gpu-free: outlasts a 2 s teardown" 0 "$rc" "$waited" "ms from the SIGTERM to free"
    [ "$waited" -ge 1900 ]
    verify "gpu-free: waited for the teardown" $? "$waited ms >= 1900"
    cat "$gf_log"
  fi
fi

# --- lwsinit, standalone ------------------------------------------------------

# agent NAME EXPECTED_RC TIMEOUT_S OPTION... -- COMMAND...: a standalone
# agent (no group variables) with its socket and termination log in $work.
agent() {
  local name=$1 expect=$2 limit=$3
  shift 3
  step "$name" "$expect" "$limit" env -u LWS_LEADER_ADDRESS -u LWS_GROUP_SIZE \
    -u LWS_WORKER_INDEX -u LWSINIT_LEADER -u LWSINIT_SIZE -u LWSINIT_RANK \
    LWSINIT_GPUCHECK="$bin" GPUHOLD="$hold" CUDART="$cudart" HOLD_BYTES="$HOLD_BYTES" \
    HOLD_PIDFILE="$work/restart-hold.pid" \
    "$lwsinit" --probe-addr "127.0.0.1:$PROBE_PORT" --status-socket "$work/run/status.sock" \
    --termination-log "$logs/termination-log" --node-check "$NODE_CHECK" --grace 10 "$@"
}
# status_ok NAME JSON PYTHON_CONDITION: a check of the status document the
# engine read from its agent (d: the document).
status_ok() {
  if ! command -v python3 >/dev/null; then
    skip "$1" "no python3"
    return
  fi
  python3 - "$2" "$3" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    print("no status document: %s" % e)
    sys.exit(1)
print("gpu_check: %s" % json.dumps(d.get("gpu_check")))
print("node_check: %s" % json.dumps(d.get("node_check")))
print("epoch %s, restarts %s" % (d.get("epoch"), d.get("restarts")))
sys.exit(0 if eval(sys.argv[2], {"d": d}) else 1)
EOF
  verify "$1" $? "$3"
}
# The engine: at epoch 0 of a restart test, starts a holder in its own
# process group (the engine's: what the agent stops) and fails once the
# holder has its memory; else
# checks that no holder of an earlier epoch lives and saves the agent's
# status document.
cat >"$work/engine.sh" <<'EOF'
#!/bin/sh
# engine.sh LWSINIT SOCKET STATUS_JSON [restart]
if [ "${4:-}" = restart ] && [ "${LWSINIT_EPOCH:-0}" = 0 ]; then
  pidfile=$HOLD_PIDFILE
  "$GPUHOLD" "$CUDART" "$HOLD_BYTES" "$pidfile" 2000 &
  i=0
  while [ ! -s "$pidfile" ]; do
    i=$((i + 1))
    [ "$i" -lt 600 ] && kill -0 $! 2>/dev/null || { echo "engine: gpuhold did not start"; exit 9; }
    sleep 0.1
  done
  echo "engine (epoch 0): gpuhold $(cat "$pidfile") holds GPU memory; failing"
  exit 1
fi
if [ "${4:-}" = restart ]; then
  old=$(cat "$HOLD_PIDFILE")
  if kill -0 "$old" 2>/dev/null; then
    echo "engine (epoch $LWSINIT_EPOCH): the old engine's gpuhold $old still lives"
    exit 9
  fi
  echo "engine (epoch $LWSINIT_EPOCH): the old engine's gpuhold $old is gone"
fi
exec "$1" status --socket "$2" --json >"$3"
EOF
chmod +x "$work/engine.sh"

if [ ! -x "$lwsinit" ]; then
  skip "lwsinit steps" "no lwsinit at $lwsinit: set LWSINIT, or run --prepare where it builds"
elif [ "$ngpu" -lt 1 ]; then
  skip "lwsinit steps" "no GPU"
else
  sock=$work/run/status.sock
  agent "lwsinit --gpu-check cuda --gpus 1" 0 120 --gpu-check cuda --gpus 1 \
    --gpu-check-bytes "$BYTES" -- "$work/engine.sh" "$lwsinit" "$sock" "$logs/status-cuda.json"
  status_ok "lwsinit cuda: status" "$logs/status-cuda.json" \
    "d['gpu_check']['state'] == 'passed' and d['gpu_check']['devices'] == 1 and d['node_check']['failures'] == 0 and any(c['name'] == 'gpu-devices' and c['state'] == ('ok' if d['node_check']['mode'] == 'fail' else c['state']) for c in d['node_check']['checks'])"
  agent "lwsinit --gpu-check nccl --gpus 1" 0 180 --gpu-check nccl --gpus 1 \
    --gpu-check-bytes "$BYTES" -- "$work/engine.sh" "$lwsinit" "$sock" "$logs/status-nccl.json"
  status_ok "lwsinit nccl: status" "$logs/status-nccl.json" \
    "d['gpu_check']['state'] == 'passed' and d['gpu_check']['mode'] == 'nccl' and d['gpu_check'].get('busbw_gbps') is not None"
  if [ "$NODE_CHECK" = fail ]; then
    agent "lwsinit node check: --gpus $((ndev + 1))" 5 60 --gpus $((ndev + 1)) -- true
    grep -q "gpu-devices" "$(logof "lwsinit node check: --gpus $((ndev + 1))")"
    verify "lwsinit node check: names gpu-devices" $? ""
  else
    skip "lwsinit node check: --gpus $((ndev + 1))" "NODE_CHECK=$NODE_CHECK (no /dev/nvidiaN here)"
  fi
  agent "lwsinit restart in place --gpus 1" 0 180 --on-failure restart --max-restarts 1 \
    --gpus 1 --gpu-free-timeout 60 -- "$work/engine.sh" "$lwsinit" "$sock" \
    "$logs/status-restart.json" restart
  grep -q "waiting up to .* for the GPUs to be free of the old engine" \
    "$(logof "lwsinit restart in place --gpus 1")"
  verify "lwsinit restart: waited for the GPUs" $? ""
  grep -q "the old engine's gpuhold .* is gone" "$(logof "lwsinit restart in place --gpus 1")"
  verify "lwsinit restart: old holder gone at relaunch" $? ""
  freed=$(sed -n 's/.*the GPUs hold no process of the old engine (\(.*\))$/\1/p' \
    "$(logof "lwsinit restart in place --gpus 1")" | head -n 1)
  [ -n "$freed" ]
  verify "lwsinit restart: the GPUs were free" $? "after ${freed:-?}"
  status_ok "lwsinit restart: status" "$logs/status-restart.json" \
    "d['epoch'] == 1 and d['restarts'] == 1"
fi

cleanup
echo
echo "=== results (logs in $work/logs; results under $out)"
{
  printf '%s\n' "${results[@]}"
  echo "$(( ${#results[@]} - skips )) checked, $failures failed, $skips skipped in $(( ($(ms) - t_start) / 1000 )) s"
} | tee "$out/summary.txt"
{
  echo "["
  n=${#json[@]}
  for ((i = 0; i < n; i++)); do
    printf '  %s%s\n' "${json[$i]}" "$([ $((i + 1)) -lt "$n" ] && echo ,)"
  done
  echo "]"
} >"$out/results.json"
cp "$out/summary.txt" "$logs/" 2>/dev/null
tar -czf "$out/logs.tar.gz" -C "$work" logs 2>/dev/null
if [ "$failures" -gt 0 ]; then
  echo "$failures step(s) FAILED"
  exit 1
fi
echo "all steps that ran passed"
