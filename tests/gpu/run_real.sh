#!/usr/bin/env bash
# The GPU check on a real GPU machine: what tests/gpu/test_gpucheck.py does
# with the fake library, here with the real CUDA runtime and NCCL.
#
# Self-contained: builds lwsinit-gpucheck with cc alone (no meson, no CUDA
# toolkit needed to build), then runs, each step under a hard timeout:
#   libs      which libcudart and libnccl the check finds
#   abi       include/lwsinit/gpu_abi.h against the installed headers (if any)
#   cuda      every GPU alone (CUDA_VISIBLE_DEVICES=i), then all together
#   nccl      a group of one node over all GPUs, by hand and with --proto
#   2 nodes   (2+ GPUs) the GPUs split in two processes, the NCCL id carried
#             from node 0's stdout to node 1's stdin as the agents will
#   failures  --gpus one too many; an allocation too big; a leader whose
#             peer never comes (real ncclCommAbort at the deadline)
# and prints a table of results and timings. Exit 0 when every step gave
# what it should.
#
# Environment: CC (cc), BYTES (268435456), ITERS (5), OUT (a new temp dir),
# LWSINIT_CUDART / LWSINIT_NCCL (library paths, else the check searches).
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$(mktemp -d /tmp/gpucheck.XXXXXX)}
mkdir -p "$out"
CC=${CC:-cc}
BYTES=${BYTES:-268435456}
ITERS=${ITERS:-5}
bin="$out/lwsinit-gpucheck"

# The toolkit's libraries, where the dynamic linker's cache lacks them.
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/*/lib; do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH

ms() { echo $(( $(date +%s%N) / 1000000 )); }

results=()
failures=0
# record NAME EXPECTED_RC GOT_RC WALL_MS
record() {
  local verdict=PASS
  [ "$2" = "$3" ] || { verdict=FAIL; failures=$((failures + 1)); }
  results+=("$(printf '%-34s expect %-3s got %-3s %8s ms  %s' "$1" "$2" "$3" "$4" "$verdict")")
}

# step NAME EXPECTED_RC TIMEOUT_S COMMAND...: runs it, output to the
# terminal and to $out/NAME.log.
step() {
  local name=$1 expect=$2 limit=$3
  shift 3
  echo
  echo "=== $name: $*"
  local t0 rc
  t0=$(ms)
  timeout -k 5 "$limit" "$@" > >(tee "$out/$name.log") 2>&1
  rc=$?
  sleep 0.1 # let tee finish
  record "$name" "$expect" "$rc" $(( $(ms) - t0 ))
}

echo "=== build: $CC -> $bin"
t0=$(ms)
if ! "$CC" -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes \
    -Wmissing-prototypes -D_GNU_SOURCE -I"$root/include" "$root/gpucheck/gpucheck.c" \
    "$root/gpucheck/parse.c" "$root/common/fdio.c" "$root/common/text.c" -ldl -o "$bin"; then
  echo "build failed"
  exit 1
fi
record build 0 0 $(( $(ms) - t0 ))

command -v nvidia-smi >/dev/null && nvidia-smi -L

step libs 0 60 "$bin" libs
[ -n "$(sed -n 's/^nccl: \(.*\) (version.*/\1/p' "$out/libs.log")" ] ||
  echo "(no NCCL found: the nccl steps will exit 3; set LWSINIT_NCCL)"

for inc in /usr/local/cuda/include /usr/include; do
  if [ -f "$inc/cuda_runtime_api.h" ] && [ -f "$inc/nccl.h" ]; then
    t0=$(ms)
    if "$CC" -std=gnu11 -Wall -Wextra -Werror -isystem "$inc" -I"$root/include" \
        "$here/test_gpu_abi.c" -o "$out/test_gpu_abi" && "$out/test_gpu_abi"; then
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
timeout -k 5 120 "$bin" cuda --bytes 4096 --proto >"$out/count.log" 2>&1
ngpu=$(sed -n 's/.*"event":"result".*"gpus_visible":\([0-9]*\).*/\1/p' "$out/count.log")
ngpu=${ngpu:-0}
tail -n 1 "$out/count.log"
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
    python3 - "$out/nccl 1 node --proto.log" <<'EOF' || record "proto lines are JSON" 0 1 0
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
    fifo="$out/id.fifo"
    rm -f "$fifo" && mkfifo "$fifo"
    echo
    echo "=== nccl 2 nodes: GPUs $a | $b"
    t0=$(ms)
    CUDA_VISIBLE_DEVICES=$a timeout -k 5 300 "$bin" nccl --proto --nodes 2 --node-rank 0 \
      --gpus "$half" --bytes "$BYTES" --iters "$ITERS" </dev/null >"$out/node0.jsonl" \
      2>"$out/node0.err" &
    p0=$!
    CUDA_VISIBLE_DEVICES=$b timeout -k 5 300 "$bin" nccl --proto --nodes 2 --node-rank 1 \
      --gpus "$half" --bytes "$BYTES" --iters "$ITERS" <"$fifo" >"$out/node1.jsonl" \
      2>"$out/node1.err" &
    p1=$!
    exec 3>"$fifo"
    id=""
    for ((k = 0; k < 1200 && ${#id} != 256; k++)); do
      id=$(sed -n 's/.*"event":"nccl_id","id":"\([0-9a-f]*\)".*/\1/p' "$out/node0.jsonl")
      [ ${#id} = 256 ] || sleep 0.1
    done
    printf '{"nccl_id":"%s"}\n' "$id" >&3
    exec 3>&-
    wait "$p0"; rc0=$?
    wait "$p1"; rc1=$?
    tail -n 1 "$out/node0.jsonl"; tail -n 1 "$out/node1.jsonl"
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

echo
echo "=== results (logs in $out)"
printf '%s\n' "${results[@]}"
if [ "$failures" -gt 0 ]; then
  echo "$failures step(s) FAILED"
  exit 1
fi
echo "all steps passed"
