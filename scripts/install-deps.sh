#!/usr/bin/env bash
# Installs the Debian bookworm packages that building and testing need.
# Runs `apt-get update` once, and only when something is missing.
set -euo pipefail

pkgs=(
  gcc meson ninja-build pkg-config
  libuv1-dev libc-ares-dev libcjson-dev libssl-dev libcurl4-openssl-dev libhttp-parser-dev
  python3 dnsmasq-base iproute2 util-linux procps valgrind scdoc
  python3-yaml python3-jsonschema debootstrap binutils dpkg-dev
  clang libclang-rt-14-dev llvm
  podman runc
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
