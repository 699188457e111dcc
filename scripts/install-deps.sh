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
  # test_mpi.py (a real MPI) and tests/bench/rsh_bench.py (ssh to compare)
  openmpi-bin libopenmpi-dev openssh-server openssh-client
  prometheus
  # test_torch.py: a real PyTorch gloo group under --on-failure restart
  python3-torch
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
  # Of prometheus only promtool is used (tests/monitoring). The package's
  # postinst starts the server (port 9090) through invoke-rc.d or
  # deb-systemd-invoke, which ask /usr/sbin/policy-rc.d first; where none
  # exists (Docker's images have one, other containers and hosts not) a policy that
  # refuses every start, for this install only, keeps it stopped
  # (invoke-rc.d(8), "policy-rc.d"), and update-rc.d keeps it from starting
  # at boot.
  if [[ " ${missing[*]} " == *" prometheus "* && ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    update-rc.d prometheus disable >/dev/null
  fi
fi
