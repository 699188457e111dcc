#!/usr/bin/env bash
# Installs what is needed, builds, and runs the embedded demo: a group of 4
# agents on loopback with a real dnsmasq and a stand-in engine
# (scripts/demo.py says what it shows).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build >/dev/null
exec python3 scripts/demo.py
