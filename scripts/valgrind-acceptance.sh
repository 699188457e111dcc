#!/usr/bin/env bash
# The whole acceptance layer (and the GPU group tests) with every agent
# under valgrind's memcheck: a memory error or a definite or indirect leak
# in any agent a test starts fails that test (tests/acceptance/lwsitest.py,
# LWSITEST_VALGRIND). Deadlines stretch 6x (LWSITEST_SCALE). Not part of CI
# (slow on two CPUs), but a memory check has to be repeatable by anyone,
# with one command:
#
#   scripts/valgrind-acceptance.sh [meson test arguments, e.g. a test name]
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit 1
scripts/build.sh build || exit 1
if [ $# -eq 0 ]; then
  set -- --suite acceptance --suite gpu
fi
LWSITEST_VALGRIND=1 meson test -C build --timeout-multiplier 4 --print-errorlogs "$@"
