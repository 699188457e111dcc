#!/usr/bin/env bash
# Builds the shipped binaries into OUT/stage/usr/local/bin:
#
#   lwsinit           libuv, c-ares and cJSON linked statically; needs libc only
#                     (plus, at run time via dlopen, libcrypto.so.3 for groups
#                     and libcurl.so.4 for upstream polling)
#   lwsinit-gpucheck  libc only (CUDA and NCCL are dlopen'd from the engine image)
#
# The same script is the Dockerfile's builder stage and what
# tests/manifests/rootfs_group.sh runs, so the recipe that ships is the recipe
# that is tested. Needs Debian bookworm with the build packages of
# container/Dockerfile, plus dpkg-dev for `apt-get source cjson`.
#
#   container/build.sh OUT
#
# Debian ships libuv and c-ares as static archives (libuv_a.a, libcares.a)
# but not cJSON: its source package is fetched with apt-get (deb-src of the
# mirror apt already uses, a private apt state under OUT, nothing on the
# system is changed) and its one file compiled into libcjson.a. Meson finds
# the three archives through .pc files under OUT/deps/pkgconfig, which win
# over the system's because they come first in PKG_CONFIG_PATH.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: container/build.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
deps=$out/deps
multiarch=$(gcc -print-multiarch)
libdir=/usr/lib/$multiarch
mkdir -p "$deps/pkgconfig" "$deps/lib"

# --- cJSON from Debian's source package (with Debian's patches) -----------
if [ ! -f "$deps/lib/libcjson.a" ]; then
  apt_dir=$deps/apt
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/src"
  # The mirrors apt is configured with, as deb-src.
  mirrors=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                /etc/apt/sources.list.d/*.sources 2>/dev/null |
            grep -E '^(deb |URIs:)' | grep -oE 'https?://[^ ]*debian(-security)?/?' | sort -u || true)
  main_mirror=$(grep -v -- -security <<<"$mirrors" | head -n1 || true)
  sec_mirror=$(grep -- -security <<<"$mirrors" | head -n1 || true)
  if [ -z "$main_mirror" ]; then
    echo "error: no Debian mirror in /etc/apt/sources.list{,.d}: cannot fetch cJSON's source" >&2
    exit 1
  fi
  kr='[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]'
  {
    echo "deb-src $kr $main_mirror bookworm main"
    [ -z "$sec_mirror" ] || echo "deb-src $kr $sec_mirror bookworm-security main"
  } > "$apt_dir/sources.list"
  apt_opts=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Etc::SourceList=$apt_dir/sources.list"
            -o "Dir::Etc::SourceParts=/nonexistent" -o "Dir::Cache=$apt_dir/cache"
            -o "APT::Sandbox::User=root" -q)
  apt-get "${apt_opts[@]}" update >/dev/null
  # The same version as the installed headers (libcjson-dev), when known.
  ver=$(dpkg-query -W -f='${Version}' libcjson-dev 2>/dev/null || true)
  (cd "$apt_dir/src" && rm -rf cjson-* && \
     { apt-get "${apt_opts[@]}" source "cjson${ver:+=$ver}" >/dev/null 2>&1 ||
       apt-get "${apt_opts[@]}" source cjson >/dev/null; })
  cj=$(ls -d "$apt_dir"/src/cjson-*/ | head -n1)
  gcc -std=c89 -O2 -fPIC -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
      -fvisibility=hidden -c "$cj/cJSON.c" -o "$deps/cJSON.o"
  ar rcs "$deps/lib/libcjson.a" "$deps/cJSON.o"
fi

# --- .pc files that point at the static archives --------------------------
pcver() { pkg-config --modversion "$1"; }
cat > "$deps/pkgconfig/libuv.pc" <<EOF
Name: libuv
Description: libuv, static (Debian's libuv_a.a)
Version: $(pcver libuv)
Libs: $libdir/libuv_a.a -lpthread -ldl -lrt
Cflags:
EOF
cat > "$deps/pkgconfig/libcares.pc" <<EOF
Name: c-ares
Description: c-ares, static (Debian's libcares.a)
Version: $(pcver libcares)
Libs: $libdir/libcares.a
Cflags: -DCARES_STATICLIB
EOF
cat > "$deps/pkgconfig/libcjson.pc" <<EOF
Name: libcjson
Description: cJSON, static (built from Debian's source package)
Version: $(pcver libcjson)
Libs: $deps/lib/libcjson.a
Cflags: -I/usr/include/cjson
EOF

# --- the binaries ----------------------------------------------------------
export PKG_CONFIG_PATH=$deps/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
if [ -f "$out/build/build.ninja" ]; then
  meson setup --reconfigure "$out/build" "$src" --buildtype=release -Db_ndebug=false >/dev/null
else
  meson setup "$out/build" "$src" --buildtype=release -Db_ndebug=false >/dev/null
fi
ninja -C "$out/build" agent/lwsinit gpucheck/lwsinit-gpucheck >/dev/null

stage=$out/stage/usr/local/bin
mkdir -p "$stage"
install -m 0755 -s "$out/build/agent/lwsinit" "$stage/lwsinit"
install -m 0755 -s "$out/build/gpucheck/lwsinit-gpucheck" "$stage/lwsinit-gpucheck"

# --- what the binaries need: libc only, glibc 2.34 or older symbols -------
status=0
for b in "$stage/lwsinit" "$stage/lwsinit-gpucheck"; do
  needed=$(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  glibc=$(objdump -T "$b" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -n1)
  echo "$(basename "$b"): NEEDED: $needed; newest symbol: $glibc; $(stat -c %s "$b") bytes"
  for n in $needed; do
    case $n in libc.so.6|ld-linux-*.so.*) ;; *) echo "error: $b needs $n" >&2; status=1 ;; esac
  done
  if [ "$(printf '%s\n%s\n' "$glibc" GLIBC_2.34 | sort -V | tail -n1)" != GLIBC_2.34 ]; then
    echo "error: $b needs $glibc (> GLIBC_2.34: Ubuntu 22.04 has 2.35)" >&2
    status=1
  fi
done
exit $status
