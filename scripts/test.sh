#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test: once in a normal
# build (build/) and once under ASan+UBSan (build-asan/).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit 1

rc=0
scripts/build.sh build || exit 1
meson test -C build --print-errorlogs || rc=1

scripts/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false || exit 1
# halt_on_error makes UBSan findings fail the test instead of scrolling by.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  meson test -C build-asan --print-errorlogs || rc=1
exit $rc
