#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang, ASan
# and UBSan, then runs each one for a bounded time and reports executions,
# coverage and crashes. Meson is not involved: the agent's, the probes',
# the shared helpers' and the GPU check's protocol sources are read from
# agent/meson.build, probes/meson.build, common/meson.build and
# gpucheck/meson.build and compiled here with -fsanitize=fuzzer-no-link,
# into build-fuzz/.
#
#   tests/fuzz/run.sh [--seconds N] [--jobs N] [--only a,b] [--build-only]
#                     [--no-build] [--build-dir D] [--write-seeds] [--coverage]
#
#   --seconds N   fuzzing time per harness (default 60)
#   --jobs N      harnesses run at once (default: the number of CPUs, at most 2)
#   --only LIST   harnesses to run, by name: wire,config,expand,http,status,gpurun
#   --build-only  build, replay the seeds and known crashes once, do not fuzz
#   --no-build    use the harnesses already built in the build dir as they are
#   --build-dir D (default build-fuzz)
#   --write-seeds regenerate tests/fuzz/corpus/ with gen_seeds.c, then stop
#   --coverage    line coverage of each harness's target files over its
#                 corpora (llvm-cov), then stop; no fuzzing
#
# Each harness first replays tests/fuzz/crashes/<name>-* (known crashes:
# while one still crashes, the run fails), then fuzzes starting from the
# committed seeds (tests/fuzz/corpus/<name>/) and its working corpus
# (build-fuzz/corpus/<name>/, kept between runs). A crash, leak, timeout
# or out-of-memory leaves its input in build-fuzz/artifacts/<name>/ and
# makes the script exit 1. Reproduce one with:
#   build-fuzz/fuzz_<name> build-fuzz/artifacts/<name>/crash-...
set -euo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS

SECONDS_EACH=60
JOBS=
ONLY=
BUILD_ONLY=0
NO_BUILD=0
WRITE_SEEDS=0
COVERAGE=0
B=build-fuzz
while [ $# -gt 0 ]; do
  case "$1" in
  --seconds) SECONDS_EACH=$2; shift 2 ;;
  --seconds=*) SECONDS_EACH=${1#*=}; shift ;;
  --jobs) JOBS=$2; shift 2 ;;
  --jobs=*) JOBS=${1#*=}; shift ;;
  --only) ONLY=$2; shift 2 ;;
  --only=*) ONLY=${1#*=}; shift ;;
  --build-only) BUILD_ONLY=1; shift ;;
  --no-build) NO_BUILD=1; shift ;;
  --write-seeds) WRITE_SEEDS=1; shift ;;
  --coverage) COVERAGE=1; shift ;;
  --build-dir) B=$2; shift 2 ;;
  --build-dir=*) B=${1#*=}; shift ;;
  -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$SECONDS_EACH" in ''|*[!0-9]*) echo "run.sh: --seconds needs a number" >&2; exit 2 ;; esac
if [ -z "$JOBS" ]; then
  JOBS=$(nproc 2>/dev/null || echo 1)
  [ "$JOBS" -gt 2 ] && JOBS=2
fi

ALL="wire config expand http status gpurun"
NAMES=${ONLY//,/ }
NAMES=${NAMES:-$ALL}
for n in $NAMES; do
  case " $ALL " in *" $n "*) ;; *) echo "run.sh: no harness '$n' (have: $ALL)" >&2; exit 2 ;; esac
done

# ---- build ----
CC=${CC:-clang}
if ! "$CC" --version 2>/dev/null | grep -qi clang; then
  echo "run.sh: libFuzzer needs clang (CC=$CC is not)" >&2
  exit 2
fi

# The file lists, as meson has them: the quoted names inside files(...).
sources_of() { # meson.build variable
  sed -n "/^$2 *= *files(/,/)/p" "$1" | grep -o "'[^']*\.c'" | tr -d "'"
}
SRCS=()
for f in $(sources_of agent/meson.build agent_sources); do SRCS+=("agent/$f"); done
for f in $(sources_of probes/meson.build probes_sources); do SRCS+=("probes/$f"); done
# The GPU check's NCCL-id text, the part of that program fuzz_gpurun drives.
for f in $(sources_of gpucheck/meson.build gpucheck_parse_sources); do SRCS+=("gpucheck/$f"); done
# common/meson.build names its files inside the library's own call.
for f in $(sed -n "s/.*files(\([^)]*\)).*/\1/p" common/meson.build | grep -o "'[^']*\.c'" | tr -d "'"); do
  SRCS+=("common/$f")
done
[ ${#SRCS[@]} -gt 10 ] || { echo "run.sh: cannot read the source lists from meson.build" >&2; exit 2; }
for need in gpucheck/parse.c common/text.c common/fdio.c; do
  case " ${SRCS[*]} " in *" $need "*) ;; *)
    echo "run.sh: $need is not in the source lists read from meson.build" >&2; exit 2 ;;
  esac
done

mkdir -p "$B/obj" "$B/logs"
VERSION=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" meson.build | head -n1)
printf '#define LWSI_VERSION "%s"\n' "$VERSION" > "$B/lwsinit_build.h.new"
cmp -s "$B/lwsinit_build.h.new" "$B/lwsinit_build.h" 2>/dev/null || mv "$B/lwsinit_build.h.new" "$B/lwsinit_build.h"
rm -f "$B/lwsinit_build.h.new"

PKG_CFLAGS=$(pkg-config --cflags libuv libcares libcjson libcrypto libcurl)
PKG_LIBS=$(pkg-config --libs libuv libcares libcjson)
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer $SAN -Iinclude -I$B -I. $PKG_CFLAGS"
LIBS="$PKG_LIBS -l:libhttp_parser.a -ldl -lm -lpthread"

compile() { # src obj extra-flags...
  local src=$1 obj=$2
  shift 2
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$0" -nt "$obj" ] ||
     [ -n "$(find include tests/fuzz/fuzz.h "$B/lwsinit_build.h" -newer "$obj" -name '*.h' 2>/dev/null | head -n1)" ]; then
    # shellcheck disable=SC2086
    "$CC" $CFLAGS "$@" -c "$src" -o "$obj"
  fi
}

if [ "$NO_BUILD" = 1 ]; then
  for n in $NAMES; do
    [ -x "$B/fuzz_$n" ] || { echo "run.sh: --no-build, but $B/fuzz_$n is missing" >&2; exit 2; }
  done
  echo "run.sh: not building; using the harnesses in $B"
else
echo "run.sh: building in $B with $("$CC" --version | head -n1)"
OBJS=()
PIDS=()
for s in "${SRCS[@]}"; do
  o="$B/obj/$(echo "$s" | tr / _).o"
  compile "$s" "$o" -fsanitize=fuzzer-no-link -Wall -Wno-unused-parameter &
  PIDS+=($!)
  OBJS+=("$o")
done
build_failed=0
for p in "${PIDS[@]}"; do wait "$p" || build_failed=1; done
for o in "${OBJS[@]}"; do [ -f "$o" ] || build_failed=1; done
[ "$build_failed" = 0 ] || { echo "run.sh: build failed" >&2; exit 1; }
rm -f "$B/liblwsi-fuzz.a"
ar rcs "$B/liblwsi-fuzz.a" "${OBJS[@]}"

HFLAGS="-fsanitize=fuzzer -Wall -Wextra -Wno-unused-parameter -Werror"
for n in $ALL; do
  # shellcheck disable=SC2086
  "$CC" $CFLAGS $HFLAGS "tests/fuzz/fuzz_$n.c" "$B/liblwsi-fuzz.a" $LIBS -o "$B/fuzz_$n"
done
echo "run.sh: built $(for n in $ALL; do printf '%s ' "$B/fuzz_$n"; done)"
fi

if [ "$WRITE_SEEDS" = 1 ]; then
  # shellcheck disable=SC2086
  "$CC" -std=gnu11 -D_GNU_SOURCE -g -O1 -Iinclude -I"$B" $PKG_CFLAGS -Wall -Wextra -Werror \
    tests/fuzz/gen_seeds.c agent/wire.c agent/crypto.c common/text.c -lcjson -ldl -o "$B/gen_seeds"
  rm -rf tests/fuzz/corpus
  "$B/gen_seeds" tests/fuzz/corpus
  echo "run.sh: wrote $(find tests/fuzz/corpus -type f | wc -l) seeds into tests/fuzz/corpus/"
  exit 0
fi

if [ "$COVERAGE" = 1 ]; then
  # Line coverage of each harness's targets over its corpora (the working
  # one and the seeds), from a build with clang's source-based coverage
  # and no sanitizers, replayed once (-runs=0).
  mkdir -p "$B/cov/obj"
  CFLAGS_COV="-std=gnu11 -D_GNU_SOURCE -g -O0 -fprofile-instr-generate -fcoverage-mapping -Iinclude -I$B -I. $PKG_CFLAGS"
  COBJS=()
  for s in "${SRCS[@]}"; do
    o="$B/cov/obj/$(echo "$s" | tr / _).o"
    # shellcheck disable=SC2086
    "$CC" $CFLAGS_COV -fsanitize=fuzzer-no-link -w -c "$s" -o "$o" &
    COBJS+=("$o")
  done
  wait
  rm -f "$B/cov/liblwsi-cov.a"
  ar rcs "$B/cov/liblwsi-cov.a" "${COBJS[@]}"
  printf '%-8s %-22s %s\n' harness file "lines covered"
  for n in $NAMES; do
    # shellcheck disable=SC2086
    "$CC" $CFLAGS_COV -fsanitize=fuzzer -w "tests/fuzz/fuzz_$n.c" \
      "$B/cov/liblwsi-cov.a" $LIBS -o "$B/cov/fuzz_$n"
    mkdir -p "$B/corpus/$n"
    rm -f "$B/cov/$n.profraw"
    LLVM_PROFILE_FILE="$B/cov/$n.profraw" "$B/cov/fuzz_$n" -runs=0 "$B/corpus/$n" \
      "tests/fuzz/corpus/$n" > "$B/logs/cov-$n.log" 2>&1 || true
    llvm-profdata merge -sparse "$B/cov/$n.profraw" -o "$B/cov/$n.profdata"
    case $n in
    wire) files="agent/wire.c" ;;
    config) files="agent/config.c agent/cmdline.c agent/expand.c" ;;
    expand) files="agent/expand.c" ;;
    http) files="probes/http.c probes/health.c" ;;
    status) files="agent/status_sock.c agent/status.c" ;;
    gpurun) files="agent/gpurun.c gpucheck/parse.c" ;;
    esac
    for f in $files; do
      # The file's row of the report: the lines column is the 3rd-from-last
      # group (covered% after "Lines Missed").
      line=$(llvm-cov report "$B/cov/fuzz_$n" -instr-profile="$B/cov/$n.profdata" "$f" 2>/dev/null |
             grep -E "^(TOTAL|[^ ]*$(basename "$f")) " | head -n1)
      # shellcheck disable=SC2086
      set -- $line
      printf '%-8s %-22s %s of %s lines (%s missed), %s of functions\n' "$n" "$f" "${10}" "$8" \
        "$9" "${7}"
    done
    # The parsing functions themselves, where the file holds more.
    case $n in
    status) funcs='(lwsi_status_sock_fetch|lwsi_status_print)' ;;
    gpurun) funcs='(on_read|on_line|take_result|lwsi_gpurun_give_id|lwsi_gpucheck_[a-z_]*)' ;;
    *) funcs= ;;
    esac
    if [ -n "$funcs" ]; then
      # shellcheck disable=SC2086
      llvm-cov report "$B/cov/fuzz_$n" -instr-profile="$B/cov/$n.profdata" -show-functions \
        $files 2>/dev/null | grep -E "^([^ ]*:)?$funcs " |
        awk -v n="$n" '{sub(/^[^ ]*:/, "", $1); printf "%-8s   %-20s %s of %s lines\n", n, $1 "()", $7, $5}'
    fi
  done
  echo "run.sh: per-line detail: llvm-cov show $B/cov/fuzz_NAME -instr-profile=$B/cov/NAME.profdata FILE"
  exit 0
fi

# ---- run ----
# Options from the environment are kept, but leak detection and stopping
# at the first report are not negotiable: the later setting wins.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:abort_on_error=1:symbolize=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

# Known crashes first: each must no longer crash.
replay_failed=0
for n in $NAMES; do
  for f in tests/fuzz/crashes/"$n"-*; do
    [ -f "$f" ] || continue
    if "$B/fuzz_$n" -runs=1 "$f" > "$B/logs/replay-$(basename "$f").log" 2>&1; then
      echo "run.sh: $f: fixed (no crash any more)"
    else
      echo "run.sh: $f: STILL CRASHES (log: $B/logs/replay-$(basename "$f").log)"
      replay_failed=1
    fi
  done
done

fuzz_one() { # name seconds
  local n=$1 secs=$2
  mkdir -p "$B/corpus/$n" "$B/artifacts/$n"
  local dict=()
  [ -f "tests/fuzz/$n.dict" ] && dict=(-dict="tests/fuzz/$n.dict")
  local runs=()
  [ "$secs" -eq 0 ] && runs=(-runs=0)
  "$B/fuzz_$n" -max_total_time="$secs" "${runs[@]}" -timeout=25 -rss_limit_mb=2560 \
    -print_final_stats=1 -artifact_prefix="$B/artifacts/$n/" "${dict[@]}" \
    "$B/corpus/$n" "tests/fuzz/corpus/$n" > "$B/logs/$n.log" 2>&1
}

[ "$BUILD_ONLY" = 1 ] && SECONDS_EACH=0
echo "run.sh: fuzzing $NAMES for ${SECONDS_EACH}s each, $JOBS at a time (logs in $B/logs/)"
status_of() { cat "$B/logs/$1.rc" 2>/dev/null || echo 1; }
for n in $NAMES; do
  rm -f "$B/logs/$n.rc"
  touch "$B/logs/$n.start"
  ( set +e; fuzz_one "$n" "$SECONDS_EACH"; echo $? > "$B/logs/$n.rc" ) &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
done
wait

# ---- report ----
failed=$replay_failed
printf '%-8s %12s %8s %8s %8s %8s %8s  %s\n' harness executions exec/s cov ft corpus crashes result
for n in $NAMES; do
  log="$B/logs/$n.log"
  rc=$(status_of "$n")
  # A harness that crashed early has no stats or coverage lines; the
  # report must still be printed (set -e and pipefail would stop here).
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -n1 || true)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" 2>/dev/null | tail -n1 || true)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" 2>/dev/null | tail -n1 || true)
  cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
  corp=$(find "$B/corpus/$n" -type f | wc -l)
  # Crashes, leaks, timeouts and out-of-memory inputs saved by this run
  # (libFuzzer stops at the first, so this is 0 or 1).
  crashes=$(find "$B/artifacts/$n" -type f -newer "$B/logs/$n.start" 2>/dev/null | wc -l)
  art=$(find "$B/artifacts/$n" -type f -newer "$B/logs/$n.start" 2>/dev/null | head -n1)
  result=ok
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    result="FAILED (exit $rc; ${art:-no input saved}; log $log)"
    failed=1
  fi
  printf '%-8s %12s %8s %8s %8s %8s %8s  %s\n' "$n" "${execs:-?}" "${eps:-?}" "${cov:-?}" \
    "${ft:-?}" "$corp" "$crashes" "$result"
done
if [ "$failed" = 0 ]; then
  echo "run.sh: no crashes, leaks or sanitizer reports ($((SECONDS - T0)) s in all)"
else
  echo "run.sh: FAILED: see the lines above; reproduce with $B/fuzz_NAME INPUT" >&2
fi
exit $failed
